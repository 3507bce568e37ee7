// stream_load: the client side of the stream benchmarks (docs/PERFORMANCE.md,
// "Streams"). Plain blocking sockets and poll(), built on none of connmgr's
// libraries, so that the same code talks to the daemon and, as the
// reference, straight to the peer.
//
//   stream_load TARGET download BYTES         one byte out ("g"), then read until the
//                                             end; BYTES expected
//   stream_load TARGET rr COUNT SIZE          SIZE bytes out, SIZE back, COUNT times
//   stream_load TARGET push BYTES             write until BYTES are out or nothing
//                                             moves for 2 s; then wait for stdin's end
//   stream_load unix:SOCK idle COUNT PREFIX NODES
//                                             COUNT streams at once, stream i on node
//                                             PREFIX(i % NODES); then wait for stdin's end
//   stream_load source BYTES                  a TCP node for the bulk rows: listens on
//                                             127.0.0.1, prints "port=P", and on each
//                                             connection sends BYTES once its first
//                                             byte has come, then closes; a connection
//                                             that sends nothing (connmgrd's link) is
//                                             left alone. Until stdin's end.
// (connmgr-test-peer's send:N cannot be the TCP node: it sends on the link
// too, and its end ends the link and the streams on it.)
// TARGET: tcp:HOST:PORT (straight to the peer) or unix:SOCK:NODE (through
// connmgrd: a streams.open line, its answer line, then the raw stream).
// Prints one line of key=value fields ("push" and "idle" print theirs before
// waiting, so the caller can measure the daemon while they hold). Exit 1 on
// any failure, with the reason on stderr.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

double now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

[[noreturn]] void die(const std::string& why) {
  fprintf(stderr, "stream_load: %s\n", why.c_str());
  exit(1);
}

bool write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

int connect_unix(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (fd < 0 || path.size() >= sizeof a.sun_path) die("unix socket: " + std::string(strerror(errno)));
  memcpy(a.sun_path, path.c_str(), path.size() + 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("connect " + path + ": " + strerror(errno));
  return fd;
}

// Sends the streams.open line (nothing after it).
void send_open(int fd, const std::string& node) {
  const std::string line =
      R"({"jsonrpc":"2.0","id":1,"method":"streams.open","params":{"node_id":")" + node + "\"}}\n";
  if (!write_all(fd, line.data(), line.size())) die("sending streams.open: " + std::string(strerror(errno)));
}

// Reads the answer line byte by byte, so that no byte of the stream is taken.
void read_answer(int fd) {
  std::string line;
  char c;
  for (;;) {
    ssize_t r = read(fd, &c, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) die("the daemon closed before answering streams.open");
    if (c == '\n') break;
    line += c;
  }
  if (line.find("\"result\"") == std::string::npos) die("streams.open: " + line);
}

int open_target(const std::string& target) {
  const auto colon = target.rfind(':');
  if (target.rfind("tcp:", 0) == 0 && colon > 4) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(atoi(target.c_str() + colon + 1)));
    if (inet_pton(AF_INET, target.substr(4, colon - 4).c_str(), &a.sin_addr) != 1) die("bad address " + target);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("connect " + target + ": " + strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
  }
  if (target.rfind("unix:", 0) == 0 && colon > 5) {
    int fd = connect_unix(target.substr(5, colon - 5));
    send_open(fd, target.substr(colon + 1));
    read_answer(fd);
    return fd;
  }
  die("TARGET is tcp:HOST:PORT or unix:SOCK:NODE, not " + target);
}

void wait_stdin_end() {
  char b[256];
  while (read(0, b, sizeof b) > 0) {
  }
}

void download(int fd, uint64_t expected) {
  if (!write_all(fd, "g", 1)) die("write: " + std::string(strerror(errno)));
  std::vector<char> buf(1 << 20);
  uint64_t got = 0;
  const double t0 = now();
  for (;;) {
    ssize_t r = read(fd, buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) die("read: " + std::string(strerror(errno)));
    if (r == 0) break;
    got += static_cast<uint64_t>(r);
  }
  const double s = now() - t0;
  if (got != expected) die("got " + std::to_string(got) + " bytes, not " + std::to_string(expected));
  printf("bytes=%llu seconds=%.3f mib_s=%.1f\n", static_cast<unsigned long long>(got), s,
         static_cast<double>(got) / (1 << 20) / s);
}

void round_trips(int fd, long count, size_t size) {
  std::string out(size, 'x');
  std::vector<char> in(size);
  const double t0 = now();
  for (long i = 0; i < count; ++i) {
    if (!write_all(fd, out.data(), size)) die("write: " + std::string(strerror(errno)));
    size_t got = 0;
    while (got < size) {
      ssize_t r = read(fd, in.data() + got, size - got);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) die("the echo ended after " + std::to_string(i) + " round trips");
      got += static_cast<size_t>(r);
    }
  }
  const double s = now() - t0;
  printf("count=%ld seconds=%.3f rate=%.1f\n", count, s, static_cast<double>(count) / s);
}

// Writes toward a peer that never reads, until BYTES are out or nothing has
// moved for two seconds.
void push(int fd, uint64_t bytes) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  std::string chunk(64 * 1024, 'p');
  uint64_t out = 0;
  double last_move = now();
  while (out < bytes && now() - last_move < 2.0) {
    pollfd p{fd, POLLOUT, 0};
    if (poll(&p, 1, 100) < 0 && errno != EINTR) die("poll: " + std::string(strerror(errno)));
    if (p.revents & (POLLERR | POLLHUP)) die("the stream ended after " + std::to_string(out) + " bytes");
    if (!(p.revents & POLLOUT)) continue;
    ssize_t w = write(fd, chunk.data(), static_cast<size_t>(std::min<uint64_t>(chunk.size(), bytes - out)));
    if (w > 0) {
      out += static_cast<uint64_t>(w);
      last_move = now();
    } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
      die("write: " + std::string(strerror(errno)));
    }
  }
  printf("pushed=%llu wanted=%llu\n", static_cast<unsigned long long>(out), static_cast<unsigned long long>(bytes));
  fflush(stdout);
  wait_stdin_end();
}

// COUNT streams at once; the requests go out in batches (one line each on
// its own connection), then the answers are read.
void idle(const std::string& sock, long count, const std::string& prefix, long nodes) {
  rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  std::vector<int> fds;
  fds.reserve(static_cast<size_t>(count));
  const double t0 = now();
  constexpr long kBatch = 64;
  for (long i = 0; i < count; i += kBatch) {
    const long end = std::min(count, i + kBatch);
    for (long k = i; k < end; ++k) {
      fds.push_back(connect_unix(sock));
      send_open(fds.back(), prefix + std::to_string(k % nodes));
    }
    for (long k = i; k < end; ++k) read_answer(fds[static_cast<size_t>(k)]);
  }
  printf("opened=%ld seconds=%.3f\n", count, now() - t0);
  fflush(stdout);
  wait_stdin_end();
  for (int fd : fds) close(fd);
}

void serve_one(int fd, uint64_t bytes) {
  char c;
  if (read(fd, &c, 1) == 1) {
    std::string chunk(1 << 20, 's');
    while (bytes > 0) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(bytes, chunk.size()));
      if (!write_all(fd, chunk.data(), n)) break;
      bytes -= n;
    }
  }
  close(fd);
}

void source(uint64_t bytes) {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (ls < 0 || bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(ls, 64) != 0 ||
      getsockname(ls, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    die("listen: " + std::string(strerror(errno)));
  printf("port=%d\n", ntohs(a.sin_port));
  fflush(stdout);
  std::thread([ls, bytes] {
    for (;;) {
      int fd = accept(ls, nullptr, nullptr);
      if (fd >= 0) std::thread(serve_one, fd, bytes).detach();
    }
  }).detach();
  wait_stdin_end();
  _exit(0);  // the connection threads go with the process
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> a(argv + 1, argv + argc);
  if (a.size() == 3 && a[1] == "download") {
    download(open_target(a[0]), strtoull(a[2].c_str(), nullptr, 10));
  } else if (a.size() == 4 && a[1] == "rr") {
    round_trips(open_target(a[0]), atol(a[2].c_str()), static_cast<size_t>(atol(a[3].c_str())));
  } else if (a.size() == 3 && a[1] == "push") {
    push(open_target(a[0]), strtoull(a[2].c_str(), nullptr, 10));
  } else if (a.size() == 2 && a[0] == "source") {
    source(strtoull(a[1].c_str(), nullptr, 10));
  } else if (a.size() == 5 && a[1] == "idle" && a[0].rfind("unix:", 0) == 0) {
    idle(a[0].substr(5), atol(a[2].c_str()), a[3], atol(a[4].c_str()));
  } else {
    fprintf(stderr,
            "usage: stream_load TARGET download BYTES | TARGET rr COUNT SIZE | TARGET push BYTES |\n"
            "       unix:SOCK idle COUNT PREFIX NODES | source BYTES\n"
            "TARGET: tcp:HOST:PORT or unix:SOCK:NODE\n");
    return 2;
  }
  return 0;
}
