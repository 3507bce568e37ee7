// Quick figure: `status` requests per second over connmgrd's socket from one
// client that waits for each answer, and from N such clients in threads.
// Not a test; run by hand: status_rate_bench SOCKET [SECONDS] [CLIENTS]
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

namespace {

long run_client(const char* path, double seconds) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  strncpy(a.sun_path, path, sizeof a.sun_path - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    perror("connect");
    exit(1);
  }
  const std::string req = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"}\n";
  char buf[65536];
  long n = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) break;
    // Read until the answer's newline.
    for (;;) {
      ssize_t r = read(fd, buf, sizeof buf);
      if (r <= 0) return n;
      if (memchr(buf, '\n', static_cast<size_t>(r))) break;
    }
    ++n;
  }
  close(fd);
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s SOCKET [SECONDS] [CLIENTS]\n", argv[0]);
    return 2;
  }
  const double seconds = argc > 2 ? atof(argv[2]) : 3.0;
  const int clients = argc > 3 ? atoi(argv[3]) : 1;
  std::atomic<long> total{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i)
    threads.emplace_back([&] { total += run_client(argv[1], seconds); });
  for (auto& t : threads) t.join();
  printf("status: %d client(s), %.0f requests/s\n", clients, static_cast<double>(total) / seconds);
  return 0;
}
