// ClientSession: one connected RPC client: its pipe, its input cut into
// lines, the answers it is owed and its output queue.
//
// Input: '\n' ends a request ("\r\n" too), blank lines are skipped, a last
// line ended by EOF is served. A session dispatches at most a few requests
// per loop turn; with more pipelined, reading pauses and the rest follow on
// the next turns, so that one busy client cannot hold the others (or the
// dials' completions) back. Requests are dispatched in the order read;
// answers are written in the order they become ready. Output is corked while
// a chunk of input is being dispatched, so that the answers to pipelined
// requests leave in one write.
//
// States (State, changed only by set_state, which does each state's entry
// work):
//   reading     serving the lines read; the partial-request timer runs while
//               a line is unfinished.
//   backlogged  whole lines wait for the next loop turn: reading paused,
//               resume() on the next turn dispatches the next few, then
//               back to reading.
//   draining    the client shut its writing side (EOF): every answer owed is
//               written, then closed.
//   finishing   refused (over-long line, stalled partial line, too many
//               clients) or the server stops: what is queued is written,
//               then closed; nothing more is read.
//   stream_pending  a streams.open alone on the connection was accepted
//               (claim_raw): no more lines are read, the bytes after its line
//               are kept in in_ as the stream's first bytes. Its success
//               answer (after attach_stream) leads to streaming once the
//               answer is in hand; an error answer goes back to the state it
//               came from, the kept bytes read as lines.
//   streaming   the pipe, the answer line not yet written and the kept bytes
//               are handed to a StreamSplice (stream_splice.h); the session
//               only waits for it to end, then closes.
//   closed      handles closed, the server has forgotten the session, later
//               answers are dropped.
// A client that leaves its answers unread is cut (closed) once
// max_output_bytes are queued.
//
// Lifetime: created and held by the SocketServer until it closes; methods
// hold shared_ptrs or weak_ptrs (CallContext) and may answer after it has
// closed: the answer is dropped. Its libuv handles are UvHandles: the session
// may be destroyed at any time, and no handle callback reaches it once it
// has closed. Each libuv callback holds a reference for its own duration,
// since closing makes the server drop its one. Threads: the loop's.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "rpc/method.h"
#include "util/uv_handle.h"

namespace connmgr::server {

class SocketServer;
class StreamSplice;

class ClientSession final : public rpc::Session,
                            public std::enable_shared_from_this<ClientSession> {
 public:
  ClientSession(SocketServer* server, uint64_t id);
  ~ClientSession() override;
  ClientSession(const ClientSession&) = delete;
  ClientSession& operator=(const ClientSession&) = delete;

  // Takes the accepted socket `fd` (closed here on failure) and starts
  // reading. False if libuv would not take it.
  bool open(uv_loop_t* loop, int fd);
  // Sends one line, then closes (refusals such as "too many clients").
  void refuse(const std::string& line);
  // Stops reading, flushes what is queued, then closes; answers still owed
  // are dropped (graceful stop of the server).
  void close_after_flush();
  // Closes now; queued output is dropped.
  void close();
  void detach_server() { server_ = nullptr; }

  size_t owed() const { return owed_; }
  size_t queued_bytes() const;

  // rpc::Session
  uint64_t id() const override { return id_; }
  const rpc::PeerCredentials& credentials() const override { return creds_; }
  void notify(const rpc::json& notification) override;
  bool closed() const override { return state_ == State::kClosed; }
  CloseHookId on_close(std::function<void()> hook) override {
    close_hooks_.emplace_back(++last_close_hook_, std::move(hook));
    return last_close_hook_;
  }
  void forget_close_hook(CloseHookId id) override {
    std::erase_if(close_hooks_, [id](const auto& entry) { return entry.first == id; });
  }
  void attach_stream(std::unique_ptr<rpc::RawStream> stream, size_t buffer) override;
  bool streaming() const { return state_ == State::kStreaming; }

 protected:
  bool claim_raw_alone() override;

 private:
  enum class State { kReading, kBacklogged, kDraining, kFinishing, kStreamPending, kStreaming, kClosed };
  // What take_lines did with the bytes it was given.
  struct Cut {
    size_t consumed = 0;      // bytes of whole lines taken
    bool lines_left = false;  // stopped at kLinesPerTurn with whole lines left
    bool stopped = false;     // the session stopped reading (refused, closed)
  };
  struct Write;

  void set_state(State next);
  void start_reading();
  void stop_reading();
  void release_handles();
  void read_credentials(int fd);

  // Input.
  static void alloc_chunk(uv_handle_t*, size_t, uv_buf_t* buf);
  static void on_read_cb(uv_stream_t* stream, ssize_t n, const uv_buf_t* buf);
  void on_read(ssize_t n, const uv_buf_t* buf);
  Cut take_chunk(std::string_view chunk);
  void after_cut(const Cut& cut);
  void on_eof();
  // Cuts whole lines from `data` (the read chunk, or in_), from scan_from on.
  Cut take_lines(std::string_view data, size_t scan_from);
  void resume();
  void arm_partial_timer();
  void on_partial_timeout();
  void refuse_over_long();
  void dispatch(std::string_view line);
  // Raw streams: the hand-over once the answer is in hand and no write of
  // the session is under way; the way back to lines after an error answer.
  void maybe_hand_over();
  void give_back();

  // Output.
  void on_answer(std::optional<std::string> answer);
  bool queue_over_limit() const;
  void queue_line(std::string_view line);
  void after_queue();
  void start_write();
  static void on_write_cb(uv_write_t* req, int status);
  void on_write_done(int status);
  void maybe_finish();

  SocketServer* server_;
  uint64_t id_;
  rpc::PeerCredentials creds_;
  State state_ = State::kReading;
  UvHandle<uv_pipe_t> pipe_;
  Timer partial_timer_;              // cuts a client that stalls mid-line
  UvHandle<uv_idle_t> resume_idle_;  // the next turn's share of a backlog
  // The uv_write under way (writing_) or the idle block kept for the next.
  std::unique_ptr<Write> write_;
  bool writing_ = false;

  std::string in_;          // the start of a line not yet ended, after any
                            // whole lines left for a later turn (backlogged)
  size_t scanned_ = 0;      // in_[0, scanned_) holds no '\n'
  std::string out_;         // lines waiting for the next write
  bool corked_ = false;     // dispatching a read chunk: hold writes
  size_t owed_ = 0;         // requests read but not yet answered
  std::vector<std::pair<CloseHookId, std::function<void()>>> close_hooks_;
  CloseHookId last_close_hook_ = 0;

  // streams.open (stream_pending, streaming).
  State claimed_from_ = State::kReading;  // where an error answer goes back to
  bool in_take_ = false;                  // inside take_lines: hand over afterwards
  bool answered_stream_ = false;          // the success answer is queued in out_
  std::unique_ptr<rpc::RawStream> stream_;  // attached, not yet handed over
  size_t stream_buffer_ = 0;
  std::unique_ptr<StreamSplice> splice_;
};

}  // namespace connmgr::server
