// Quick figure: requests per second through the RPC server for a trivial
// method ("ping" -> "pong"), the server on this process's loop, clients in
// threads that each keep `depth` requests in flight (1: wait for every answer).
// Not a test; run by hand: rpc_rate_bench [SECONDS] [CLIENTS] [DEPTH]
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "rpc/dispatcher.h"
#include "server/socket_server.h"

namespace {

long run_client(const std::string& path, double seconds, int depth) {
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    perror("connect");
    exit(1);
  }
  std::string burst;
  for (int i = 0; i < depth; ++i) burst += R"({"jsonrpc":"2.0","id":1,"method":"ping"})" "\n";
  char buf[65536];
  long n = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (write(fd, burst.data(), burst.size()) != static_cast<ssize_t>(burst.size())) break;
    int lines = 0;
    while (lines < depth) {
      const ssize_t r = read(fd, buf, sizeof buf);
      if (r <= 0) return n;
      for (ssize_t i = 0; i < r; ++i) lines += buf[i] == '\n';
    }
    n += depth;
  }
  close(fd);
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? atof(argv[1]) : 3.0;
  const int clients = argc > 2 ? atoi(argv[2]) : 1;
  const int depth = argc > 3 ? atoi(argv[3]) : 1;
  char dir[] = "/tmp/rpc-bench-XXXXXX";
  if (!mkdtemp(dir)) return 1;
  const std::string path = std::string(dir) + "/b.sock";

  uv_loop_t loop;
  uv_loop_init(&loop);
  connmgr::rpc::Dispatcher d(connmgr::rpc::process_access_policy(std::nullopt));
  d.add({"ping", false,
         [](const connmgr::rpc::json&, const connmgr::rpc::CallContext&, connmgr::rpc::Reply r) {
           r.result("pong");
         }});
  auto server = std::make_unique<connmgr::server::SocketServer>(&loop, d);
  if (auto s = server->listen_path(path, 0600, std::nullopt); !s.ok()) {
    fprintf(stderr, "%s\n", s.message().c_str());
    return 1;
  }
  std::atomic<long> total{0};
  std::atomic<int> running{clients};
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i)
    threads.emplace_back([&] {
      total += run_client(path, seconds, depth);
      --running;
    });
  connmgr::Timer tick(&loop);
  tick.start(10, [&] {
    if (running.load() == 0) uv_stop(&loop);
  }, 10);
  uv_run(&loop, UV_RUN_DEFAULT);
  for (auto& t : threads) t.join();
  printf("ping: %d client(s), depth %d: %.0f requests/s\n", clients, depth,
         static_cast<double>(total) / seconds);
  server.reset();
  tick.close();
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  rmdir(dir);
  return 0;
}
