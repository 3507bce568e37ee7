// SocketServer: the RPC socket (API.md §2). A libuv pipe server whose clients
// send one JSON text per line and get one answer line per request, in the
// order the answers become ready.
//
// Framing: '\n' ends a request ("\r\n" too); a last line ended by EOF is
// served; after the client shuts its writing side, every answer owed is
// still sent, then the socket is closed. Limits: a line over
// max_request_bytes gets -32600 and the connection is closed; a partial line
// left stalled for partial_request_timeout is cut; at most max_clients at
// once (the next one gets an error line and is closed); a client that does
// not read is cut once max_output_bytes are queued for it.
//
// Ownership: the server owns its listener and client sessions; sessions are
// shared_ptrs so that a method's late answer can find out its client is gone.
// The Dispatcher must outlive the server. Threads: the loop's.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "rpc/dispatcher.h"
#include "util/error.h"

namespace connmgr::server {

struct ServerLimits {
  size_t max_request_bytes = 1024 * 1024;
  size_t max_clients = 1024;
  size_t max_output_bytes = 16 * 1024 * 1024;
  std::chrono::milliseconds partial_request_timeout{60000};
};

class ClientSession;

class SocketServer {
 public:
  SocketServer(uv_loop_t* loop, rpc::Dispatcher& dispatcher, ServerLimits limits);
  ~SocketServer();
  SocketServer(const SocketServer&) = delete;
  SocketServer& operator=(const SocketServer&) = delete;

  // Binds and listens on `path`: refuses a path longer than sun_path holds,
  // replaces a stale socket file (nobody answers on it), refuses to start when
  // another process serves it. Sets the file's mode and, if given, group.
  Status listen_path(const std::string& path, mode_t mode, std::optional<gid_t> group);
  // Serves an already-listening socket (systemd socket activation).
  Status listen_fd(int fd);

  void set_limits(const ServerLimits& limits) { limits_ = limits; }
  size_t client_count() const { return clients_.size(); }

  // Stops accepting (and removes the socket file it created).
  void stop_listening();
  // Closes every client: answers already written are flushed first.
  void close_clients();

  // For sessions.
  void on_session_closed(uint64_t id);
  rpc::Dispatcher& dispatcher() { return dispatcher_; }
  const ServerLimits& limits() const { return limits_; }
  uv_loop_t* loop() const { return loop_; }

 private:
  void on_connection(int status);

  uv_loop_t* loop_;
  rpc::Dispatcher& dispatcher_;
  ServerLimits limits_;
  uv_pipe_t* listener_ = nullptr;  // freed in its close callback
  std::string path_;               // set when we created the file
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, std::shared_ptr<ClientSession>> clients_;
};

}  // namespace connmgr::server
