// tcp_plain_cycle: the reference for connmgr's TCP connect + disconnect
// cycles: plain sockets, no library, no event loop beyond epoll. Each cycle
// is socket(), a non-blocking connect() to the listener, wait until it is
// writable (connected), close(). The kernel's own cost, which connmgr's
// cycles through the RPC are compared against.
//
//   tcp_plain_cycle IP PORT[,PORT...] CYCLES IN_FLIGHT
//
// Cycles go to the ports in turn: a closed connection's port stays in
// TIME_WAIT, reusable only after a second, so one destination allows some
// 28,000 cycles a second (the ephemeral range); several lift that bound.
// Prints "cycles=N seconds=S rate=R failures=F".
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

double now_s() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s IP PORT CYCLES IN_FLIGHT\n", argv[0]);
    return 2;
  }
  std::vector<sockaddr_in> targets;
  for (const char* p = argv[2]; *p;) {
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<uint16_t>(strtol(p, const_cast<char**>(&p), 10)));
    if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) {
      fprintf(stderr, "tcp_plain_cycle: not an IPv4 address: %s\n", argv[1]);
      return 2;
    }
    targets.push_back(to);
    if (*p == ',') ++p;
  }
  const long cycles = atol(argv[3]);
  const int in_flight = atoi(argv[4]) > 0 ? atoi(argv[4]) : 1;

  const int ep = epoll_create1(EPOLL_CLOEXEC);
  long started = 0, done = 0, failures = 0;
  auto start_one = [&]() -> bool {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    const sockaddr_in& to = targets[static_cast<size_t>(started) % targets.size()];
    ++started;
    if (connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0) {
      close(fd);
      ++done;
      return true;
    }
    if (errno != EINPROGRESS) {
      close(fd);
      ++done;
      ++failures;
      return true;
    }
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.fd = fd;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    return true;
  };

  const double begin = now_s();
  const double give_up_at = begin + 600;
  for (int i = 0; i < in_flight && started < cycles; ++i) start_one();
  epoll_event events[256];
  while (done < cycles && now_s() < give_up_at) {
    const int n = epoll_wait(ep, events, 256, 1000);
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) ++failures;
      // close() also takes it out of the epoll set.
      close(fd);
      ++done;
    }
    while (started - done < in_flight && started < cycles) {
      if (!start_one()) break;
    }
  }
  const double elapsed = now_s() - begin;
  printf("cycles=%ld seconds=%.3f rate=%.0f failures=%ld\n", done, elapsed,
         static_cast<double>(done) / elapsed, failures);
  return failures == 0 && done >= cycles ? 0 : 1;
}
