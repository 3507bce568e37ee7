// Fuzz target: the step from JSON-RPC to a raw stream. A client sends one
// streams.open request line followed by the input's bytes, in chunks whose
// sizes the input chooses, to a real SocketServer, Dispatcher and Api on a
// real temporary database and ConnectionManager (TCP connector). The node
// asked for is, by the input's choice: "echo", whose endpoint is an echo
// server of this process on loopback (the open succeeds: the session hands
// its pipe and the bytes after the line over to a splice, the bytes come
// back); "refused", whose endpoint refuses (the error answer gives the
// connection back to JSON-RPC and the bytes after the line are read as
// lines); or a node that does not exist. No network beyond 127.0.0.1.
//
// Input: byte 0 = the node (mod 3); byte 1 = number of chunk-size bytes k
// (mod 8), the next k bytes are chunk sizes (1..256, cycled), the rest is
// what the client writes after the request line. Then the client shuts its
// writing side and the loop runs until the daemon closes the connection or
// a time bound passes.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/connection_manager.h"
#include "core/events.h"
#include "methods/api.h"
#include "net/connector_factory.h"
#include "net/tcp_connector.h"
#include "rpc/dispatcher.h"
#include "server/socket_server.h"
#include "storage/store.h"
#include "util/uv_handle.h"

namespace {

using namespace connmgr;

// The node's side: every accepted connection sends back what it reads and
// closes at EOF. Connections live until the process ends (a fuzz run makes a
// bounded number; each closes itself at the client's end).
struct EchoServer {
  UvHandle<uv_tcp_t> listener;
  int port = 0;

  struct Conn {
    UvHandle<uv_tcp_t> tcp;
  };
  std::vector<std::unique_ptr<Conn>> conns;

  void start(uv_loop_t* loop) {
    listener.init(loop, this, uv_tcp_init);
    sockaddr_in a{};
    uv_ip4_addr("127.0.0.1", 0, &a);
    if (uv_tcp_bind(listener.get(), reinterpret_cast<sockaddr*>(&a), 0) != 0) abort();
    sockaddr_in bound{};
    int len = sizeof bound;
    uv_tcp_getsockname(listener.get(), reinterpret_cast<sockaddr*>(&bound), &len);
    port = ntohs(bound.sin_port);
    uv_listen(listener.as_stream(), 64, [](uv_stream_t* s, int status) {
      auto* self = UvHandle<uv_tcp_t>::owner<EchoServer>(s);
      if (!self || status < 0) return;
      auto conn = std::make_unique<Conn>();
      conn->tcp.init(s->loop, conn.get(), uv_tcp_init);
      if (uv_accept(s, conn->tcp.as_stream()) != 0) return;
      uv_read_start(
          conn->tcp.as_stream(),
          [](uv_handle_t*, size_t, uv_buf_t* buf) {
            static char scratch[65536];
            *buf = uv_buf_init(scratch, sizeof scratch);
          },
          [](uv_stream_t* st, ssize_t n, const uv_buf_t* buf) {
            auto* c = UvHandle<uv_tcp_t>::owner<Conn>(st);
            if (!c) return;
            if (n < 0) {
              c->tcp.close();
              return;
            }
            // Small echoes go out at once; what the kernel does not take is
            // dropped (the fuzz target checks the hand-over, not the echo).
            uv_buf_t b = uv_buf_init(buf->base, static_cast<unsigned>(n));
            uv_try_write(st, &b, 1);
          });
      self->conns.push_back(std::move(conn));
    });
  }
};

struct World {
  uv_loop_t loop{};
  std::unique_ptr<Store> store;
  ConnectorFactory connectors;
  EventBus events;
  std::unique_ptr<ConnectionManager> manager;
  std::unique_ptr<methods::Api> api;
  std::unique_ptr<rpc::Dispatcher> dispatcher;
  std::unique_ptr<server::SocketServer> server;
  EchoServer echo;
  std::string path;

  World() {
    uv_loop_init(&loop);
    char dir[] = "/tmp/connmgr-fuzz-streams-XXXXXX";
    if (!mkdtemp(dir)) abort();
    StoreOptions so;
    so.path = std::string(dir) + "/connmgr.db";
    auto s = Store::open(&loop, so);
    if (!s) abort();
    store = std::move(s).value();
    echo.start(&loop);
    add_node("echo", echo.port);
    add_node("refused", 1);
    connectors.add(std::make_unique<TcpConnector>(&loop, TcpOptions{}));
    ConnectionConfig cc;
    cc.connection_timeout = std::chrono::milliseconds(200);
    cc.stream_buffer = 4096;  // small, so that back-pressure is reached
    manager = std::make_unique<ConnectionManager>(&loop, *store, connectors, events, cc);
    methods::ApiContext ctx;
    ctx.loop = &loop;
    ctx.store = store.get();
    ctx.manager = manager.get();
    ctx.events = &events;
    ctx.connectors = &connectors;
    ctx.write_lock_limit = std::chrono::milliseconds(100);
    ctx.version = "fuzz";
    ctx.client_count = [] { return size_t{1}; };
    ctx.config_json = [] { return rpc::json::object(); };
    api = std::make_unique<methods::Api>(ctx);
    // Every caller may change state: the fuzzer runs as whoever it runs as.
    dispatcher = std::make_unique<rpc::Dispatcher>([](const rpc::PeerCredentials&) { return true; });
    for (auto& m : api->methods()) dispatcher->add(std::move(m));
    server::ServerLimits limits;
    limits.max_request_bytes = 4096;
    limits.max_output_bytes = 1 << 16;
    server = std::make_unique<server::SocketServer>(&loop, *dispatcher, limits);
    path = std::string(dir) + "/s";
    if (!server->listen_path(path, 0600, std::nullopt).ok()) abort();
  }

  void add_node(const std::string& id, int port) {
    NodeSpec spec;
    spec.id = id;
    EndpointSpec e;
    e.protocol = "tcp";
    e.address = "127.0.0.1";
    e.port = port;
    spec.endpoints.push_back(e);
    if (!store->add_node(spec)) abort();
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

// Reads what is there; true at EOF or error (the daemon closed).
bool drain(int fd) {
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) continue;
    if (n == 0) return true;
    return !(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
  }
}

void run_for(uv_loop_t* loop, std::chrono::milliseconds bound, int fd, bool& closed) {
  const auto end = std::chrono::steady_clock::now() + bound;
  while (!closed && std::chrono::steady_clock::now() < end) {
    uv_run(loop, UV_RUN_NOWAIT);
    closed = drain(fd);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = world();
  if (size < 2) return 0;
  static const char* const kNodes[] = {"echo", "refused", "missing"};
  const char* node = kNodes[data[0] % 3];
  const size_t k = data[1] % 8;
  if (size < 2 + k) return 0;
  std::vector<size_t> chunks;
  for (size_t i = 0; i < k; ++i) chunks.push_back(static_cast<size_t>(data[2 + i]) + 1);
  if (chunks.empty()) chunks.push_back(256);
  std::string bytes = std::string(R"({"jsonrpc":"2.0","id":1,"method":"streams.open","params":{"node_id":")") +
                      node + R"(","timeout_ms":300}})" + "\n";
  bytes.append(reinterpret_cast<const char*>(data + 2 + k), size - 2 - k);

  const int fd = connect_client(w.path);
  bool closed = false;
  size_t off = 0, c = 0;
  while (off < bytes.size() && !closed) {
    const size_t n = std::min(chunks[c++ % chunks.size()], bytes.size() - off);
    ssize_t sent = ::send(fd, bytes.data() + off, n, MSG_NOSIGNAL);
    if (sent > 0) off += static_cast<size_t>(sent);
    else if (sent < 0 && errno != EAGAIN && errno != EINTR) closed = true;
    uv_run(&w.loop, UV_RUN_NOWAIT);
    closed = closed || drain(fd);
  }
  ::shutdown(fd, SHUT_WR);
  run_for(&w.loop, std::chrono::milliseconds(500), fd, closed);
  ::close(fd);
  // Let the daemon see the close and free the session and its stream.
  for (int turn = 0; turn < 50 && (w.server->client_count() > 0 || w.manager->stream_count() > 0); ++turn)
    uv_run(&w.loop, UV_RUN_NOWAIT);
  return 0;
}
