// Helpers for the RPC layer's tests: a blocking Unix-socket client with
// bounded waits (used from a thread while the test's loop serves), and a
// fixture that runs a SocketServer with a handful of test methods on the
// test thread's libuv loop.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "rpc/dispatcher.h"
#include "server/socket_server.h"
#include "test_support.h"
#include "util/uv_handle.h"

namespace connmgr::test {

using nlohmann::json;

// A client socket; every read waits at most `timeout` (SO_RCVTIMEO).
class LineClient {
 public:
  explicit LineClient(const std::string& path,
                      std::chrono::milliseconds timeout = std::chrono::seconds(10));
  ~LineClient();
  LineClient(const LineClient&) = delete;
  LineClient& operator=(const LineClient&) = delete;

  bool connected() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  bool send(const std::string& bytes);
  void shut_wr();
  // The next line (without '\n'); nullopt on EOF, error or timeout.
  std::optional<std::string> read_line();
  // Reads until EOF (true), or error/timeout (false); `rest` gets the bytes.
  bool read_to_eof(std::string* rest = nullptr);
  // What ended the last failed read: 0 EOF, else errno (EAGAIN: timeout).
  int last_error() const { return last_error_; }

 private:
  int fd_ = -1;
  std::string buf_;
  int last_error_ = 0;
};

// Runs `client` in a thread while the loop serves, until it returns (at most
// `limit`); false if it did not finish in time (the thread is then left to
// its socket timeouts and joined).
bool run_client(uv_loop_t* loop, const std::function<void()>& client,
                std::chrono::milliseconds limit = std::chrono::seconds(20));

// A fresh directory that every user may enter (mode 0755), made under the
// system's temporary directory (TMPDIR, else /tmp) rather than the build
// directory: the permission tests connect as uid 65534, who cannot reach a
// build directory under a private one such as /root (mode 0700). Removed
// with what it holds on destruction.
class ReachableTempDir {
 public:
  ReachableTempDir();
  ~ReachableTempDir();
  ReachableTempDir(const ReachableTempDir&) = delete;
  ReachableTempDir& operator=(const ReachableTempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A server on a temporary socket with test methods:
//   echo      -> params                       fast      -> "fast"
//   slow      -> {"ms": N} answered after N ms (a timer on the loop)
//   throw     -> throws std::runtime_error("boom")
//   silent    -> drops its Reply unanswered
//   change    -> "changed"; changes_state
//   big       -> a string of params.size bytes
//   notify    -> params.count notifications {"method":"tick","params":{"n":i}}, then "done"
//   missing   -> error node-not-found "node not found" with data {"node_id": params.node_id}
class RpcFixture {
 public:
  explicit RpcFixture(server::ServerLimits limits = {},
                      std::optional<gid_t> admin_gid = std::nullopt);
  ~RpcFixture();

  uv_loop_t* loop() { return &loop_; }
  const std::string& path() const { return path_; }
  const ReachableTempDir& dir() const { return dir_; }
  rpc::Dispatcher& dispatcher() { return dispatcher_; }
  server::SocketServer& server() { return *server_; }
  // Runs `client` in a thread while serving; REQUIREs it to finish.
  void with_client(const std::function<void()>& client,
                   std::chrono::milliseconds limit = std::chrono::seconds(20));
  // One request line, one answer line (a fresh connection).
  std::string call(const std::string& line);
  size_t pending_timers() const { return timers_.size(); }

 private:
  struct SlowTimer;
  uv_loop_t loop_{};
  ReachableTempDir dir_;  // holds the socket, which other users reach
  std::string path_;
  rpc::Dispatcher dispatcher_;
  std::unique_ptr<server::SocketServer> server_;
  std::vector<std::unique_ptr<SlowTimer>> timers_;
};

}  // namespace connmgr::test
