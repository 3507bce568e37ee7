// SocketServer: the RPC socket, one JSON-RPC 2.0 request or answer per
// '\n'-ended line (docs/api.md). Listens on a Unix stream socket
// (a path it binds, or a listening descriptor passed by systemd), accepts
// clients and gives each a ClientSession that feeds request lines to the
// Dispatcher and writes the answers back.
//
// Limits (ServerLimits, from the configuration): a request line over
// max_request_bytes gets an invalid request error and the connection is closed; a line left
// unfinished for partial_request_timeout is cut the same way; at most
// max_clients at once (the next one is accepted, sent a "too many clients"
// error line and closed); a client that does not read is cut once
// max_output_bytes are queued for it. When accept() fails for want of
// descriptors (EMFILE, ENFILE) the server stops polling the listening socket
// for accept_pause and then resumes, rather than spinning on a socket that
// stays readable; waiting clients stay in the backlog meanwhile.
//
// Writes use libuv (write(2) on the socket): the daemon must ignore SIGPIPE,
// or a client that vanishes mid-answer kills it.
//
// Ownership: the server owns its listening socket and its sessions (shared
// so that a method's late answer finds its client gone); a session leaves the
// server's table as soon as it closes. The Dispatcher must outlive the
// server. On destruction every client is closed at once; the libuv handles
// (UvHandle) are freed by their close callbacks, so run the loop afterwards.
// Threads: the loop's.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "rpc/dispatcher.h"
#include "util/error.h"
#include "util/uv_handle.h"

namespace connmgr::server {

struct ServerLimits {
  size_t max_request_bytes = 1024 * 1024;
  size_t max_clients = 1024;
  size_t max_output_bytes = 16 * 1024 * 1024;
  std::chrono::milliseconds partial_request_timeout{60000};  // 0: no limit
  std::chrono::milliseconds accept_pause{100};  // after EMFILE / ENFILE
};

class ClientSession;

class SocketServer {
 public:
  SocketServer(uv_loop_t* loop, rpc::Dispatcher& dispatcher, ServerLimits limits = {});
  ~SocketServer();
  SocketServer(const SocketServer&) = delete;
  SocketServer& operator=(const SocketServer&) = delete;

  // Binds and listens on `path`. Refuses a path longer than sun_path holds
  // (libuv would truncate it silently); replaces a stale socket file (nobody
  // answers on it); refuses to start when a process answers on it ("another
  // connmgrd is serving PATH") or when the path is not a socket. Sets the
  // file's mode and, if given, its group.
  Status listen_path(const std::string& path, mode_t mode, std::optional<gid_t> group);
  // Serves an already-listening socket (systemd socket activation). The
  // server owns `fd` from here on, also on failure.
  Status listen_fd(int fd);
  bool listening() const { return listen_fd_ >= 0; }

  // Stops accepting; removes the socket file if it is still the one this
  // server created. Connected clients go on being served.
  void stop_listening();
  // Graceful end of the clients: each stops reading, has what is already
  // queued written, then is closed; answers still owed are dropped.
  void close_clients();

  void set_limits(const ServerLimits& limits) { limits_ = limits; }
  const ServerLimits& limits() const { return limits_; }

  // Connected clients (for `status`), refused ones included until closed.
  size_t client_count() const { return clients_.size(); }
  uint64_t accepted_total() const { return accepted_total_; }
  uint64_t requests_total() const { return requests_total_; }
  // How often accepting was paused for want of descriptors.
  uint64_t accept_pauses() const { return accept_pauses_; }

  // For sessions: a session that has closed leaves the table (the caller
  // holds a reference to it for the rest of its callback).
  void on_session_closed(uint64_t id);
  void count_request() { ++requests_total_; }
  rpc::Dispatcher& dispatcher() { return dispatcher_; }
  uv_loop_t* loop() const { return loop_; }

 private:
  Status start_polling(int fd);
  void watch_listener();
  void on_readable();
  void pause_accepting();
  void add_client(int fd);

  uv_loop_t* loop_;
  rpc::Dispatcher& dispatcher_;
  ServerLimits limits_;
  int listen_fd_ = -1;
  UvHandle<uv_poll_t> listen_poll_;  // readable: connections are waiting
  Timer accept_pause_;               // resumes accepting after EMFILE
  std::string path_;              // the socket file this server created
  dev_t path_dev_ = 0;
  ino_t path_ino_ = 0;
  uint64_t next_id_ = 1;
  uint64_t accepted_total_ = 0;
  uint64_t requests_total_ = 0;
  uint64_t accept_pauses_ = 0;
  std::unordered_map<uint64_t, std::shared_ptr<ClientSession>> clients_;
};

}  // namespace connmgr::server
