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
// States: reading -> (EOF) draining: every answer owed is written, then
// closed; (refusal: over-long line, stalled partial line, too many clients)
// finishing: the error line is written, then closed; closed: handles closing,
// later answers dropped. A client that leaves its answers unread is cut once
// max_output_bytes are queued.
//
// Lifetime: created by the SocketServer; keeps itself alive (self_) while
// its libuv handles are open and releases itself in their last close
// callback. Methods hold shared_ptrs or weak_ptrs (CallContext) and may answer
// after it has closed: the answer is dropped. Threads: the loop's.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "rpc/method.h"

namespace connmgr::server {

class SocketServer;

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
  size_t queued_bytes() const { return out_.size() + in_flight_.size(); }

  // rpc::Session
  uint64_t id() const override { return id_; }
  const rpc::PeerCredentials& credentials() const override { return creds_; }
  void notify(const rpc::json& notification) override;
  bool closed() const override { return closed_; }
  void on_close(std::function<void()> hook) override { close_hooks_.push_back(std::move(hook)); }

 private:
  void read_credentials(int fd);
  void on_read(ssize_t n, const uv_buf_t* buf);
  void on_eof();
  // Cuts whole lines from `data` (the read chunk, or in_); returns how many
  // bytes were consumed, or npos once the session stops reading.
  size_t take_lines(std::string_view data, size_t scan_from);
  // Lines left for a later turn (backlog_): reading paused, resume() on the
  // next turn dispatches the next few.
  void pause_for_backlog();
  void resume();
  static void alloc_chunk(uv_handle_t*, size_t, uv_buf_t* buf);
  void dispatch(std::string_view line);
  void on_answer(std::optional<std::string> answer);
  void queue_line(std::string_view line);
  void after_queue();
  void start_write();
  void on_write_done(int status);
  void maybe_finish();
  void arm_partial_timer();
  void refuse_over_long();
  void on_handle_closed();

  SocketServer* server_;
  uint64_t id_;
  rpc::PeerCredentials creds_;
  uv_pipe_t pipe_{};
  uv_timer_t partial_timer_{};  // cuts a client that stalls mid-line
  uv_idle_t resume_idle_{};     // the next turn's share of a backlog
  uv_write_t write_req_{};
  int open_handles_ = 0;
  std::shared_ptr<ClientSession> self_;

  std::string in_;          // the start of a line not yet ended, after any
                            // whole lines left for a later turn (backlog_)
  size_t scanned_ = 0;      // in_[0, scanned_) holds no '\n'
  std::string out_;         // lines waiting for the next write
  std::string in_flight_;   // what the current uv_write is sending
  bool writing_ = false;
  bool corked_ = false;     // dispatching a read chunk: hold writes
  bool backlog_ = false;    // take_lines stopped with whole lines left
  size_t owed_ = 0;         // requests read but not yet answered
  bool eof_ = false;        // the client shut its writing side
  bool finishing_ = false;  // close once the output is flushed
  bool closed_ = false;
  std::vector<std::function<void()>> close_hooks_;
};

}  // namespace connmgr::server
