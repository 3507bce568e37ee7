// For the listener's tests: a libuv loop of the test's own, and a blocking
// HTTP/1.1 client on real sockets (a thread of the test runs it while the
// loop runs on the test's thread, so Render stays on the loop's thread).
#pragma once

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <future>
#include <string>

#include "test_support.h"

namespace connmgr::test {

// A loop of the test's own, closed (after its handles) at the end.
struct Loop {
  uv_loop_t loop{};
  Loop() { uv_loop_init(&loop); }
  ~Loop() {
    drain_loop(&loop);
    uv_loop_close(&loop);
  }
  uv_loop_t* get() { return &loop; }
};

// A blocking client socket (10 s receive timeout: a stalled server fails
// the test instead of hanging it); -1 when the connection is refused.
inline int connect_to(uint16_t port, bool ipv6 = false) {
  const int fd = socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int rc;
  if (ipv6) {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    a.sin6_addr = in6addr_loopback;
    rc = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  } else {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    rc = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  }
  if (rc != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

inline void send_all(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = send(fd, text.data() + done, text.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

struct Response {
  int status = 0;  // 0: the connection ended (or timed out) before a status line
  std::string head;
  std::string body;
  std::string header(const std::string& name) const {
    const std::string key = "\r\n" + name + ": ";
    const size_t at = head.find(key);
    if (at == std::string::npos) return {};
    const size_t start = at + key.size();
    return head.substr(start, head.find("\r\n", start) - start);
  }
};

// Reads one response: the head, then Content-Length bytes (none for HEAD).
// `pending` keeps what was read past it (the next response on keep-alive).
inline Response read_response(int fd, bool head_only = false) {
  Response r;
  std::string data;
  char buf[4096];
  size_t end;
  while ((end = data.find("\r\n\r\n")) == std::string::npos) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return r;
    data.append(buf, static_cast<size_t>(n));
  }
  r.head = data.substr(0, end + 2);
  r.status = std::atoi(r.head.c_str() + 9);
  data.erase(0, end + 4);
  const std::string length = r.header("Content-Length");
  const size_t want = head_only || length.empty() ? 0 : std::stoul(length);
  while (data.size() < want) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  r.body = data;
  return r;
}

// True when the server closes the connection (EOF or reset) within the
// socket's receive timeout, reading and dropping anything before.
inline bool closed_by_server(int fd) {
  char buf[4096];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
  }
}

inline std::string get_request(const std::string& path = "/metrics", const std::string& extra = {}) {
  return "GET " + path + " HTTP/1.1\r\nHost: localhost\r\n" + extra + "\r\n";
}

// Runs `client` on a thread while the loop runs here, at most 20 s.
template <typename F>
auto while_serving(uv_loop_t* loop, F client) {
  using namespace std::chrono_literals;
  auto done = std::async(std::launch::async, std::move(client));
  const bool finished = run_until(
      loop, [&] { return done.wait_for(0s) == std::future_status::ready; }, 20s);
  REQUIRE(finished);
  return done.get();
}

inline Response fetch(uv_loop_t* loop, uint16_t port, const std::string& request, bool ipv6 = false,
               bool head_only = false) {
  return while_serving(loop, [=] {
    const int fd = connect_to(port, ipv6);
    if (fd < 0) return Response{};
    send_all(fd, request);
    Response r = read_response(fd, head_only);
    close(fd);
    return r;
  });
}

inline size_t open_fd_count() {
  size_t n = 0;
  DIR* dir = opendir("/proc/self/fd");
  while (dirent* e = readdir(dir)) n += e->d_name[0] != '.';
  closedir(dir);
  return n - 1;
}

}  // namespace connmgr::test
