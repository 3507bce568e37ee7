// TCP streams (TcpConnection::open_stream, net/tcp_stream.h) against plain
// loopback sockets served by a thread of the test, so that each case
// decides exactly what the node does and when.
#include "net/tcp_stream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <functional>
#include <thread>

#include "net/tcp_connector.h"
#include "test_support.h"

using namespace connmgr;
using namespace std::chrono_literals;
using connmgr::test::closed_port;
using connmgr::test::run_for;
using connmgr::test::run_until;
using connmgr::test::TcpListener;

namespace {

// Byte k of a test pattern.
char pattern(uint64_t k) { return static_cast<char>(k % 251); }

std::string pattern_bytes(uint64_t from, size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = pattern(from + i);
  return s;
}

// Reads until EOF or error; returns the bytes read.
std::string read_all(int fd) {
  std::string all;
  char buf[65536];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) return all;
    all.append(buf, static_cast<size_t>(n));
  }
}

bool write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// What a stream reported, for the test to look at.
struct Seen {
  std::string data;
  bool eof = false;
  int writable = 0;
  std::string end;  // on_end's reason, once ended
  bool consume_all = true;
};

class Fixture {
 public:
  Fixture() { uv_loop_init(&loop); }
  ~Fixture() {
    stream.reset();
    conn.reset();
    connector.reset();
    connmgr::test::drain_loop(&loop);
    uv_loop_close(&loop);
  }

  // A link to `port` (the listener it needs is the test's).
  void link_to(int port) {
    DialRequest r;
    r.node_id = "n1";
    r.endpoint_id = 3;
    r.protocol = "tcp";
    r.address = "127.0.0.1";
    r.port = port;
    bool done = false;
    connector->connect(r, [&](Result<std::unique_ptr<Connection>> res) {
      done = true;
      REQUIRE(res.ok());
      conn = std::move(res).value();
    });
    REQUIRE(run_until(&loop, [&] { return done; }));
  }

  Result<std::unique_ptr<Stream>> open(std::chrono::milliseconds timeout = 2s, StreamLimits limits = {}) {
    std::optional<Result<std::unique_ptr<Stream>>> out;
    bool inside = true;
    conn->open_stream(timeout, limits, [&](Result<std::unique_ptr<Stream>> r) {
      CHECK_FALSE(inside);
      out.emplace(std::move(r));
    });
    inside = false;
    REQUIRE(run_until(&loop, [&] { return out.has_value(); }, timeout + 5s));
    return std::move(*out);
  }

  void start(Seen* seen) {
    stream->start({[this, seen](std::string_view b) {
                     seen->data.append(b);
                     if (seen->consume_all) stream->consume(b.size());
                   },
                   [seen] { seen->eof = true; }, [seen] { ++seen->writable; },
                   [seen](const std::string& why) { seen->end = why; }});
  }

  uv_loop_t loop{};
  std::unique_ptr<TcpConnector> connector = std::make_unique<TcpConnector>(&loop, TcpOptions{});
  std::unique_ptr<Connection> conn;
  std::unique_ptr<Stream> stream;
};

// The node: a listener on 127.0.0.1 whose first accepted connection is the
// link (held until the test ends) and whose second, the stream's own, is
// served by `serve(fd)` on a thread (blocking sockets), then closed.
class StreamPeer {
 public:
  explicit StreamPeer(std::function<void(int fd)> serve) : serve_(std::move(serve)) {
    listener_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    REQUIRE(listen(listener_, 8) == 0);
    thread_ = std::thread([this] {
      link_fd_ = accept(listener_, nullptr, nullptr);
      if (link_fd_ < 0) return;
      const int fd = accept(listener_, nullptr, nullptr);
      if (fd < 0) return;
      serve_(fd);
      close(fd);
      finished = true;
    });
  }
  ~StreamPeer() {
    shutdown(listener_, SHUT_RDWR);
    thread_.join();
    if (link_fd_ >= 0) close(link_fd_);
    close(listener_);
  }
  int port() const { return port_; }
  std::atomic<bool> finished{false};

 private:
  std::function<void(int)> serve_;
  int listener_ = -1;
  int link_fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

}  // namespace

TEST_CASE_METHOD(Fixture, "a TCP stream echoes several MiB byte-exact with half-close both ways") {
  // The node echoes everything, then answers our FIN with its own.
  StreamPeer peer([](int fd) {
    char buf[65536];
    for (;;) {
      const ssize_t n = read(fd, buf, sizeof buf);
      if (n <= 0) break;
      if (!write_all(fd, buf, static_cast<size_t>(n))) return;
    }
    shutdown(fd, SHUT_WR);
  });
  link_to(peer.port());
  auto r = open();
  REQUIRE(r.ok());
  stream = std::move(r).value();
  CHECK(stream->transport_id() == 0);
  Seen seen;
  start(&seen);

  const size_t total = 6 * 1024 * 1024;
  const size_t chunk = 48 * 1024;
  const size_t limit = StreamLimits{}.buffer;
  size_t sent = 0;
  // Writes while buffered() is within the limit, as a user keeping to it does.
  auto pump = [&] {
    while (sent < total && stream->buffered() <= limit) {
      const size_t n = std::min(chunk, total - sent);
      stream->write(pattern_bytes(sent, n));
      sent += n;
    }
    if (sent == total) stream->shutdown_write();
  };
  const uint64_t t0 = uv_hrtime();
  pump();
  REQUIRE(run_until(&loop, [&] {
    pump();
    return !seen.end.empty();
  }, 30s));
  const double secs = static_cast<double>(uv_hrtime() - t0) / 1e9;
  CHECK(seen.end == "eof");
  CHECK(seen.eof);
  REQUIRE(seen.data.size() == total);
  CHECK(seen.data == pattern_bytes(0, total));
  CHECK(stream->buffered() == 0);
  WARN("TCP stream echo: " << (2.0 * total / 1048576.0) / secs << " MiB/s both ways combined");
}

TEST_CASE_METHOD(Fixture, "a TCP stream's node may end first: on_eof, then eof once we end too") {
  const size_t n = 3 * 1024 * 1024 + 17;
  StreamPeer peer([n](int fd) {
    const std::string bytes = pattern_bytes(0, n);
    write_all(fd, bytes.data(), bytes.size());
    shutdown(fd, SHUT_WR);
    read_all(fd);  // until our FIN
  });
  link_to(peer.port());
  auto r = open();
  REQUIRE(r.ok());
  stream = std::move(r).value();
  Seen seen;
  start(&seen);
  REQUIRE(run_until(&loop, [&] { return seen.eof; }, 20s));
  CHECK(seen.data == pattern_bytes(0, n));
  run_for(&loop, 50ms);
  CHECK(seen.end.empty());  // our direction is still open: we may write
  stream->write("after their FIN");
  stream->shutdown_write();
  REQUIRE(run_until(&loop, [&] { return !seen.end.empty(); }));
  CHECK(seen.end == "eof");
}

TEST_CASE_METHOD(Fixture, "a TCP stream reset by its node ends with reset") {
  StreamPeer peer([](int fd) {
    char buf[16];
    if (read(fd, buf, sizeof buf) <= 0) return;
    linger lg{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  });
  link_to(peer.port());
  auto r = open();
  REQUIRE(r.ok());
  stream = std::move(r).value();
  Seen seen;
  start(&seen);
  stream->write("hello");
  REQUIRE(run_until(&loop, [&] { return !seen.end.empty(); }));
  CHECK(seen.end == "reset");
  // After the end nothing fires and every call is harmless.
  stream->write("more");
  stream->shutdown_write();
  stream->consume(10);
  stream->reset();
  run_for(&loop, 20ms);
  CHECK(seen.end == "reset");
}

TEST_CASE_METHOD(Fixture, "a node that never reads: buffered() reaches the limit and on_writable waits for it to drain") {
  std::atomic<bool> drain{false};
  std::atomic<size_t> drained{0};
  StreamPeer peer([&](int fd) {
    while (!drain) std::this_thread::sleep_for(5ms);
    drained = read_all(fd).size();
  });
  link_to(peer.port());
  const StreamLimits limits{128 * 1024};
  auto r = open(2s, limits);
  REQUIRE(r.ok());
  stream = std::move(r).value();
  Seen seen;
  start(&seen);
  const std::string chunk(16 * 1024, 'x');
  size_t written = 0;
  auto pump = [&] {
    while (stream->buffered() <= limits.buffer) {
      stream->write(chunk);
      written += chunk.size();
    }
  };
  // The kernel's buffers take what they can; then buffered() stays up.
  pump();
  int quiet_turns = 0;
  while (quiet_turns < 5) {
    const int before = seen.writable;
    run_for(&loop, 100ms);
    if (seen.writable == before) ++quiet_turns;
    else quiet_turns = 0, pump();
  }
  // Stuck above half the limit (on_writable is owed) and never past one
  // chunk over it.
  CHECK(stream->buffered() > limits.buffer / 2);
  CHECK(stream->buffered() <= limits.buffer + chunk.size());
  const int writable_before = seen.writable;
  run_for(&loop, 300ms);
  CHECK(seen.writable == writable_before);  // nothing drains: no on_writable
  // The node reads: the queue drains and on_writable fires.
  drain = true;
  REQUIRE(run_until(&loop, [&] { return seen.writable > writable_before; }));
  CHECK(stream->buffered() <= limits.buffer / 2);
  stream->shutdown_write();
  REQUIRE(run_until(&loop, [&] { return peer.finished.load(); }));
  CHECK(drained == written);
}

TEST_CASE_METHOD(Fixture, "a user that never consumes stops the node: at most the limit is delivered") {
  std::atomic<size_t> pushed{0};
  StreamPeer peer([&](int fd) {
    const std::string chunk(8192, 'y');
    // Blocks once our side stops reading and the socket buffers are full;
    // fails when the stream is reset at the end of the test.
    while (write_all(fd, chunk.data(), chunk.size())) pushed += chunk.size();
  });
  link_to(peer.port());
  const StreamLimits limits{100 * 1000};
  auto r = open(2s, limits);
  REQUIRE(r.ok());
  stream = std::move(r).value();
  Seen seen;
  seen.consume_all = false;
  start(&seen);
  REQUIRE(run_until(&loop, [&] { return seen.data.size() >= limits.buffer; }));
  // The node goes on until its buffers are full, then stops.
  size_t last = 0;
  for (int quiet = 0; quiet < 3;) {
    run_for(&loop, 100ms);
    quiet = pushed == last ? quiet + 1 : 0;
    last = pushed;
  }
  CHECK(seen.data.size() == limits.buffer);  // reads are sized to the room left
  CHECK(pushed > seen.data.size());           // the rest waits in the kernel
  // Consuming makes room: reading resumes, still bounded.
  stream->consume(limits.buffer / 2);
  REQUIRE(run_until(&loop, [&] { return seen.data.size() == limits.buffer + limits.buffer / 2; }));
  run_for(&loop, 100ms);
  CHECK(seen.data.size() == limits.buffer + limits.buffer / 2);
  CHECK(seen.end.empty());
  stream.reset();  // RST: the node's write fails and its thread ends
  REQUIRE(run_until(&loop, [&] { return peer.finished.load(); }));
}

TEST_CASE_METHOD(Fixture, "a TCP stream to a port that refuses fails with the dial's reason") {
  TcpListener listener(&loop);
  link_to(listener.port());
  REQUIRE(run_until(&loop, [&] { return listener.accepted() == 1; }));
  listener.stop();
  run_for(&loop, 10ms);
  auto r = open();
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == ErrorCode::kConnectFailed);
  CHECK(r.error().reason() == "refused");
  CHECK(r.error().message() == "connect to 127.0.0.1:" + std::to_string(listener.port()) +
                                   " failed: connection refused (ECONNREFUSED)");
}

TEST_CASE_METHOD(Fixture, "a TCP stream dial that is cancelled never calls back") {
  TcpListener listener(&loop);
  link_to(listener.port());
  bool called = false;
  DialHandle h = conn->open_stream(2s, {}, [&](Result<std::unique_ptr<Stream>>) { called = true; });
  h.cancel();
  run_for(&loop, 100ms);
  CHECK_FALSE(called);
  h.cancel();  // idempotent
}

TEST_CASE_METHOD(Fixture, "a TCP stream may outlive its link and its connector") {
  StreamPeer peer([](int fd) {
    char buf[65536];
    for (;;) {
      const ssize_t n = read(fd, buf, sizeof buf);
      if (n <= 0) break;
      if (!write_all(fd, buf, static_cast<size_t>(n))) return;
    }
    shutdown(fd, SHUT_WR);
  });
  link_to(peer.port());
  auto r = open();
  REQUIRE(r.ok());
  stream = std::move(r).value();
  conn.reset();
  connector.reset();
  Seen seen;
  start(&seen);
  stream->write("ping");
  stream->shutdown_write();
  REQUIRE(run_until(&loop, [&] { return !seen.end.empty(); }));
  CHECK(seen.data == "ping");
  CHECK(seen.end == "eof");
}

TEST_CASE_METHOD(Fixture, "destroying a TCP stream mid-transfer resets it and fires nothing") {
  std::atomic<bool> saw_reset{false};
  StreamPeer peer([&](int fd) {
    char buf[65536];
    for (;;) {
      const ssize_t n = read(fd, buf, sizeof buf);
      if (n < 0) {
        saw_reset = errno == ECONNRESET;
        return;
      }
      if (n == 0) return;
      if (!write_all(fd, buf, static_cast<size_t>(n))) {
        // The reset may meet the echo's send first (ECONNRESET, or EPIPE once
        // the reset has been read by an earlier send).
        saw_reset = errno == ECONNRESET || errno == EPIPE;
        return;
      }
    }
  });
  link_to(peer.port());
  auto r = open();
  REQUIRE(r.ok());
  stream = std::move(r).value();
  bool fired_after = false;
  bool destroyed = false;
  stream->start({[&](std::string_view) { fired_after = destroyed; }, [&] { fired_after = destroyed; },
                 [&] { fired_after = destroyed; }, [&](const std::string&) { fired_after = destroyed; }});
  const std::string big(1024 * 1024, 'z');
  stream->write(big);
  stream->write(big);
  run_for(&loop, 5ms);
  stream.reset();
  destroyed = true;
  REQUIRE(run_until(&loop, [&] { return peer.finished.load(); }));
  run_for(&loop, 50ms);
  CHECK_FALSE(fired_after);
  CHECK(saw_reset);
}

TEST_CASE_METHOD(Fixture, "a TCP stream may be destroyed from inside its callbacks") {
  StreamPeer peer([](int fd) {
    const std::string bytes = pattern_bytes(0, 200000);
    write_all(fd, bytes.data(), bytes.size());
    read_all(fd);
  });
  link_to(peer.port());
  auto r = open();
  REQUIRE(r.ok());
  stream = std::move(r).value();
  size_t got = 0;
  stream->start({[&](std::string_view b) {
                   got += b.size();
                   stream.reset();
                 },
                 nullptr, nullptr, nullptr});
  REQUIRE(run_until(&loop, [&] { return !stream; }));
  CHECK(got > 0);
  REQUIRE(run_until(&loop, [&] { return peer.finished.load(); }));
}
