// Fuzz target: the socket framing and the JSON-RPC dispatcher, fed a byte
// stream in chunks whose sizes the input chooses. A real SocketServer on a
// Unix socket and a real Dispatcher; the methods are small ones of the
// fuzzer's own (echo, a throwing one, one answering on a later loop turn, one
// that changes state) so that the framing and envelope rules get the
// executions, not dials (fuzz_methods covers the real methods).
//
// Input: byte 0 = number of chunk-size bytes k (mod 8), the next k bytes are
// chunk sizes (1..256, cycled), the rest is what the client writes. After
// the last chunk the client shuts its writing side; the loop runs until the
// server closes the connection or a bound of turns passes.
#include <sys/socket.h>
#include <sys/un.h>
#include <uv.h>
#include <unistd.h>
#include <fcntl.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "rpc/dispatcher.h"
#include "server/socket_server.h"
#include "util/uv_handle.h"

namespace {

using connmgr::rpc::json;

struct World {
  uv_loop_t loop{};
  std::unique_ptr<connmgr::rpc::Dispatcher> dispatcher;
  std::unique_ptr<connmgr::server::SocketServer> server;
  std::string path;
  // Calls of "later", answered on the next loop turn.
  struct Later {
    connmgr::Timer timer;
    connmgr::rpc::Reply reply;
    json params;
  };
  std::vector<std::unique_ptr<Later>> later;

  World() {
    uv_loop_init(&loop);
    dispatcher = std::make_unique<connmgr::rpc::Dispatcher>(
        [](const connmgr::rpc::PeerCredentials& c) { return c.uid == 0; });
    using connmgr::rpc::CallContext;
    using connmgr::rpc::Reply;
    dispatcher->add({"echo", false, [](const json& p, const CallContext&, Reply r) { r.result(p); }});
    dispatcher->add({"boom", false, [](const json&, const CallContext&, Reply) -> void {
                       throw std::runtime_error("boom");
                     }});
    dispatcher->add({"change", true, [](const json&, const CallContext&, Reply r) { r.result(true); }});
    dispatcher->add({"later", false, [this](const json& p, const CallContext&, Reply r) {
                       auto* l = later.emplace_back(std::make_unique<Later>()).get();
                       l->reply = std::move(r);
                       l->params = p;
                       l->timer.init(&loop);
                       l->timer.start(0, [this, l] {
                         l->reply.result(l->params);
                         // Destroys the Timer whose callback this is: allowed.
                         std::erase_if(later, [l](const auto& each) { return each.get() == l; });
                       });
                     }});
    connmgr::server::ServerLimits limits;
    limits.max_request_bytes = 4096;  // small, so that the over-long path is reached
    limits.max_output_bytes = 1 << 16;
    server = std::make_unique<connmgr::server::SocketServer>(&loop, *dispatcher, limits);
    char dir[] = "/tmp/connmgr-fuzz-XXXXXX";
    if (!mkdtemp(dir)) abort();
    path = std::string(dir) + "/s";
    if (!server->listen_path(path, 0600, std::nullopt).ok()) abort();
  }
};

World& world() {
  static World* w = new World;  // lives for the process: libFuzzer never returns
  return *w;
}

int connect_client(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  memcpy(a.sun_path, path.c_str(), path.size() + 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS) abort();
  return fd;
}

// Reads what is there; true at EOF or error (the server closed).
bool drain(int fd) {
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) continue;
    if (n == 0) return true;
    return !(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = world();
  if (size == 0) return 0;
  const size_t k = data[0] % 8;
  if (size < 1 + k) return 0;
  std::vector<size_t> chunks;
  for (size_t i = 0; i < k; ++i) chunks.push_back(static_cast<size_t>(data[1 + i]) + 1);
  if (chunks.empty()) chunks.push_back(256);
  const uint8_t* body = data + 1 + k;
  const size_t body_size = size - 1 - k;

  const int fd = connect_client(w.path);
  bool closed = false;
  size_t off = 0, c = 0;
  while (off < body_size && !closed) {
    const size_t n = std::min(chunks[c++ % chunks.size()], body_size - off);
    ssize_t sent = ::send(fd, body + off, n, MSG_NOSIGNAL);
    if (sent > 0) off += static_cast<size_t>(sent);
    else if (sent < 0 && errno != EAGAIN && errno != EINTR) closed = true;
    uv_run(&w.loop, UV_RUN_NOWAIT);
    closed = closed || drain(fd);
  }
  ::shutdown(fd, SHUT_WR);
  for (int turn = 0; turn < 200 && !closed; ++turn) {
    uv_run(&w.loop, UV_RUN_NOWAIT);
    closed = drain(fd);
  }
  ::close(fd);
  // Let the server see the close and free the session.
  for (int turn = 0; turn < 20 && w.server->client_count() > 0; ++turn) uv_run(&w.loop, UV_RUN_NOWAIT);
  return 0;
}
