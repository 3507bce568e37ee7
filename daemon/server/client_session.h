// ClientSession: one connected RPC client: its pipe, its input buffer cut
// into lines, the answers it is owed and its output queue.
//
// Lifetime: created and registered by the SocketServer; keeps itself alive
// (self_) while its libuv handles are open and releases itself in their last
// close callback. Methods hold weak_ptrs and may answer after it has gone:
// the answer is dropped. Threads: the loop's.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "rpc/method.h"

namespace connmgr::server {

class SocketServer;

class ClientSession final : public rpc::Session, public std::enable_shared_from_this<ClientSession> {
 public:
  ClientSession(SocketServer* server, uint64_t id);
  ~ClientSession() override;

  // Accepts the pending connection from `listener` and starts reading.
  bool accept(uv_stream_t* listener);
  // Sends one line, then closes (refusals such as "too many clients").
  void refuse(const std::string& line);
  // Flushes what is queued, then closes.
  void close_after_flush();
  // Closes now; queued output is dropped.
  void close();
  void detach_server() { server_ = nullptr; }

  // rpc::Session
  uint64_t id() const override { return id_; }
  const rpc::PeerCredentials& credentials() const override { return creds_; }
  void notify(const rpc::json& notification) override;
  bool closed() const override { return closed_; }
  void on_close(std::function<void()> hook) override { close_hooks_.push_back(std::move(hook)); }

 private:
  void on_read(ssize_t n, const uv_buf_t* buf);
  void process_input();
  void dispatch(std::string_view line);
  void on_answer(std::optional<std::string> answer);
  void queue_line(std::string_view line);
  void start_write();
  void on_write_done(int status);
  void maybe_finish();
  void arm_partial_timer();
  void on_handle_closed();

  SocketServer* server_;
  uint64_t id_;
  rpc::PeerCredentials creds_;
  uv_pipe_t pipe_{};
  uv_timer_t partial_timer_{};  // cuts a client that stalls mid-line
  uv_write_t write_req_{};
  int open_handles_ = 0;
  std::shared_ptr<ClientSession> self_;

  std::string in_;          // bytes read, not yet a whole line
  size_t scanned_ = 0;      // in_[0, scanned_) holds no '\n'
  std::string out_;         // lines waiting for the next write
  std::string in_flight_;   // what the current uv_write is sending
  bool writing_ = false;
  size_t owed_ = 0;         // requests read but not yet answered
  bool eof_ = false;        // the client shut its writing side
  bool finishing_ = false;  // close once the output is flushed
  bool closed_ = false;
  std::vector<std::function<void()>> close_hooks_;
};

}  // namespace connmgr::server
