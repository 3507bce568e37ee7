// QUIC streams (QuicConnection::open_stream, quic/quic_stream.h) against the
// project's test peer in its stream modes, and against quic-go (an
// independent QUIC stack) when it was built.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <optional>
#include <set>

#include "quic/quic_connector.h"
#include "test_support.h"

using namespace connmgr;
using namespace std::chrono_literals;
using connmgr::test::ChildProcess;
using connmgr::test::run_for;
using connmgr::test::run_until;
using connmgr::test::TempDir;
using connmgr::test::TestPeerProcess;

namespace {

std::string env_or(const char* name, const char* fallback) {
  const char* p = getenv(name);
  return p ? p : fallback;
}

std::string pattern_bytes(uint64_t from, size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((from + i) % 251);
  return s;
}

// connmgr-test-peer serving QUIC streams in `mode`, with a fresh certificate.
struct TestPeer : TestPeerProcess {
  TestPeer(const TempDir& dir, const std::string& mode) : TestPeerProcess(dir, {"--quic-streams", mode}) {}
};

// quic-go's stream server (tests/peer/quicgo), or nothing when not built.
struct QuicGoPeer {
  QuicGoPeer() {
    const std::string path = env_or("QUICGO_PEER", "");
    if (path.empty() || access(path.c_str(), X_OK) != 0) return;
    child.emplace(std::vector<std::string>{path, "server"});
    const std::string line = child->read_line();  // {"pin":"...","port":N}
    const auto p = line.find("\"port\":");
    const auto q = line.find("\"pin\":\"");
    REQUIRE(p != std::string::npos);
    REQUIRE(q != std::string::npos);
    port = std::stoi(line.substr(p + 7));
    pin = line.substr(q + 7, line.find('"', q + 7) - (q + 7));
  }
  std::optional<ChildProcess> child;
  std::string pin;
  int port = 0;
};

struct Seen {
  std::string data;
  size_t bytes = 0;
  bool keep = true;  // keep the bytes, or only count them
  bool eof = false;
  int writable = 0;
  std::string end;
  bool consume_all = true;
};

class Fixture {
 public:
  Fixture() { uv_loop_init(&loop); }
  ~Fixture() {
    streams.clear();
    conn.reset();
    connector.reset();
    connmgr::test::drain_loop(&loop);
    uv_loop_close(&loop);
  }

  void link_to(int port, const std::string& pin, QuicOptions options = {}) {
    auto c = QuicConnector::create(&loop, std::move(options));
    REQUIRE(c.ok());
    connector = std::move(c).value();
    DialRequest r;
    r.node_id = "q1";
    r.endpoint_id = 5;
    r.protocol = "quic";
    r.address = "127.0.0.1";
    r.port = port;
    r.pin_sha256 = pin;
    r.timeout = 5s;
    bool done = false;
    connector->connect(r, [&](Result<std::unique_ptr<Connection>> res) {
      done = true;
      if (!res.ok()) FAIL("dial failed: " << res.error().message());
      conn = std::move(res).value();
      conn->set_drop_callback([this](const std::string& why) { dropped = why; });
    });
    REQUIRE(run_until(&loop, [&] { return done; }, 10s));
    REQUIRE(conn);
  }

  Result<std::unique_ptr<Stream>> open(std::chrono::milliseconds timeout = 3s, StreamLimits limits = {}) {
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

  // Opens a stream and starts it, reporting into `seen`.
  Stream* open_started(Seen* seen, StreamLimits limits = {}) {
    auto r = open(3s, limits);
    if (!r.ok()) FAIL("open_stream failed: " << r.error().message());
    streams.push_back(std::move(r).value());
    Stream* s = streams.back().get();
    s->start({[s, seen](std::string_view b) {
                seen->bytes += b.size();
                if (seen->keep) seen->data.append(b);
                if (seen->consume_all) s->consume(b.size());
              },
              [seen] { seen->eof = true; }, [seen] { ++seen->writable; },
              [seen](const std::string& why) { seen->end = why; }});
    return s;
  }

  // Writes `total` pattern bytes keeping to the limit, then FIN; runs until
  // the stream ends. Returns the seconds it took.
  double echo(Stream* s, Seen* seen, size_t total, std::chrono::seconds limit = 60s) {
    size_t sent = 0;
    const size_t chunk = 32 * 1024;
    auto pump = [&] {
      while (sent < total && s->buffered() <= StreamLimits{}.buffer) {
        const size_t n = std::min(chunk, total - sent);
        s->write(pattern_bytes(sent, n));
        sent += n;
      }
      if (sent == total) s->shutdown_write();
    };
    const uint64_t t0 = uv_hrtime();
    pump();
    REQUIRE(run_until(&loop, [&] {
      pump();
      return !seen->end.empty();
    }, limit));
    return static_cast<double>(uv_hrtime() - t0) / 1e9;
  }

  uv_loop_t loop{};
  TempDir dir;
  std::unique_ptr<QuicConnector> connector;
  std::unique_ptr<Connection> conn;
  std::string dropped;
  std::vector<std::unique_ptr<Stream>> streams;
};

}  // namespace

TEST_CASE_METHOD(Fixture, "a QUIC stream echoes several MiB byte-exact with half-close") {
  TestPeer peer(dir, "echo");
  link_to(peer.quic_port, peer.pin);
  Seen seen;
  Stream* s = open_started(&seen);
  CHECK(s->transport_id() == 0);  // the client's first bidirectional stream
  const size_t total = 4 * 1024 * 1024;
  const double secs = echo(s, &seen, total);
  CHECK(seen.end == "eof");
  CHECK(seen.eof);
  REQUIRE(seen.data.size() == total);
  CHECK(seen.data == pattern_bytes(0, total));
  CHECK(s->buffered() == 0);
  CHECK(conn->is_active());  // a stream's end never ends the link
  CHECK(conn->refused_peer_streams() == 0);
  WARN("QUIC stream echo: " << (2.0 * total / 1048576.0) / secs << " MiB/s both ways combined");
}

TEST_CASE_METHOD(Fixture, "a QUIC stream receives send:N, then ends with eof after our FIN") {
  const size_t n = 2 * 1024 * 1024 + 5;
  TestPeer peer(dir, "send:" + std::to_string(n));
  link_to(peer.quic_port, peer.pin);
  Seen seen;
  Stream* s = open_started(&seen);
  s->write("go");  // the peer learns of the stream
  REQUIRE(run_until(&loop, [&] { return seen.eof; }, 30s));
  CHECK(seen.data == pattern_bytes(0, n));
  run_for(&loop, 50ms);
  CHECK(seen.end.empty());  // our direction is still open
  s->shutdown_write();
  REQUIRE(run_until(&loop, [&] { return !seen.end.empty(); }));
  CHECK(seen.end == "eof");
}

TEST_CASE_METHOD(Fixture, "a QUIC stream reset by the peer ends with reset, the link stays") {
  TestPeer peer(dir, "reset");
  link_to(peer.quic_port, peer.pin);
  Seen seen;
  Stream* s = open_started(&seen);
  s->write("hello");
  REQUIRE(run_until(&loop, [&] { return !seen.end.empty(); }));
  CHECK(seen.end == "reset");
  s->write("ignored");
  s->shutdown_write();
  s->reset();
  run_for(&loop, 50ms);
  CHECK(conn->is_active());
  // The link carries the next stream.
  Seen again;
  Stream* s2 = open_started(&again);
  s2->write("x");
  REQUIRE(run_until(&loop, [&] { return !again.end.empty(); }));
  CHECK(again.end == "reset");
}

TEST_CASE_METHOD(Fixture, "a QUIC peer that never reads holds buffered() near the limit and never makes it writable") {
  TestPeer peer(dir, "hold");
  link_to(peer.quic_port, peer.pin);
  const StreamLimits limits{128 * 1024};
  Seen seen;
  Stream* s = open_started(&seen, limits);
  const std::string chunk(16 * 1024, 'h');
  auto pump = [&] {
    while (s->buffered() <= limits.buffer) s->write(chunk);
  };
  pump();
  int quiet = 0;
  while (quiet < 5) {
    const int before = seen.writable;
    run_for(&loop, 100ms);
    if (seen.writable == before) ++quiet;
    else quiet = 0, pump();
  }
  CHECK(s->buffered() > limits.buffer / 2);
  CHECK(s->buffered() <= limits.buffer + chunk.size());
  const int before = seen.writable;
  run_for(&loop, 500ms);
  CHECK(seen.writable == before);
  CHECK(seen.end.empty());
}

TEST_CASE_METHOD(Fixture, "a QUIC stream whose user never consumes receives at most the limit") {
  TestPeer peer(dir, "send:3000000");
  link_to(peer.quic_port, peer.pin);
  const StreamLimits limits{100 * 1000};
  Seen seen;
  seen.consume_all = false;
  Stream* s = open_started(&seen, limits);
  s->write("go");
  REQUIRE(run_until(&loop, [&] { return seen.bytes >= limits.buffer; }, 10s));
  run_for(&loop, 500ms);
  CHECK(seen.bytes == limits.buffer);  // the window is exactly the limit
  s->consume(limits.buffer);
  REQUIRE(run_until(&loop, [&] { return seen.bytes >= 2 * limits.buffer; }, 10s));
  run_for(&loop, 300ms);
  CHECK(seen.bytes == 2 * limits.buffer);
  CHECK(seen.data == pattern_bytes(0, 2 * limits.buffer));
}

TEST_CASE_METHOD(Fixture, "ten QUIC streams at once share one link, each byte-exact") {
  TestPeer peer(dir, "echo");
  link_to(peer.quic_port, peer.pin);
  constexpr int kStreams = 10;
  const size_t total = 512 * 1024;
  std::vector<Seen> seen(kStreams);
  std::vector<Stream*> s;
  std::vector<size_t> sent(kStreams, 0);
  for (int i = 0; i < kStreams; ++i) s.push_back(open_started(&seen[i]));
  auto pump = [&] {
    for (int i = 0; i < kStreams; ++i) {
      while (sent[i] < total && s[i]->buffered() <= StreamLimits{}.buffer) {
        const size_t n = std::min<size_t>(16 * 1024, total - sent[i]);
        s[i]->write(pattern_bytes(sent[i] + i, n));
        sent[i] += n;
      }
      if (sent[i] == total) s[i]->shutdown_write();
    }
  };
  REQUIRE(run_until(&loop, [&] {
    pump();
    for (auto& x : seen)
      if (x.end.empty()) return false;
    return true;
  }, 60s));
  for (int i = 0; i < kStreams; ++i) {
    CHECK(seen[i].end == "eof");
    CHECK(seen[i].data == pattern_bytes(i, total));
  }
  std::set<int64_t> ids;
  for (auto* x : s) ids.insert(x->transport_id());
  CHECK(ids.size() == kStreams);
}

TEST_CASE_METHOD(Fixture, "at the peer's stream limit an open waits for credit, then fails with stream_limit") {
  // The test peer allows 100 bidirectional streams, and one more each time
  // one of them closes.
  TestPeer peer(dir, "hold");
  link_to(peer.quic_port, peer.pin);
  std::vector<Seen> seen(100);
  for (int i = 0; i < 100; ++i) {
    Stream* s = open_started(&seen[i]);
    s->write("x");
  }
  const uint64_t t0 = uv_hrtime();
  auto r = open(400ms);
  const double ms = static_cast<double>(uv_hrtime() - t0) / 1e6;
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == ErrorCode::kStreamRefused);
  CHECK(r.error().reason() == "stream_limit");
  CHECK(ms >= 350);
  CHECK(ms < 3000);

  // A waiting open gets the credit a closed stream gives back.
  std::optional<Result<std::unique_ptr<Stream>>> waited;
  conn->open_stream(10s, {}, [&](Result<std::unique_ptr<Stream>> res) { waited.emplace(std::move(res)); });
  run_for(&loop, 200ms);
  CHECK_FALSE(waited.has_value());
  streams.front()->reset();  // RESET_STREAM + STOP_SENDING: the peer closes it and allows one more
  REQUIRE(run_until(&loop, [&] { return waited.has_value(); }, 10s));
  REQUIRE(waited->ok());
  CHECK(waited->value()->transport_id() == 4 * 100);
}

TEST_CASE_METHOD(Fixture, "a QUIC peer that dies ends every open stream with link_lost") {
  TestPeer peer(dir, "echo");
  QuicOptions o;
  o.idle_timeout = 2s;
  o.keepalive = 500ms;
  link_to(peer.quic_port, peer.pin, o);
  std::vector<Seen> seen(3);
  for (auto& x : seen) open_started(&x)->write("ping");
  REQUIRE(run_until(&loop, [&] { return seen[2].bytes == 4; }));
  peer.child().kill_now();
  REQUIRE(run_until(&loop, [&] {
    for (auto& x : seen)
      if (x.end.empty()) return false;
    return true;
  }, 10s));
  for (auto& x : seen) CHECK(x.end == "link_lost");
  CHECK_FALSE(dropped.empty());
  // An open on the dead link is refused, later, as link_lost.
  auto r = open();
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().reason() == "link_lost");
  // The streams outlive their connection safely.
  conn.reset();
  for (auto& s : streams) {
    s->write("after");
    s->consume(1);
    s->reset();
  }
  streams.clear();
}

TEST_CASE_METHOD(Fixture, "closing a QUIC link ends its streams with link_lost") {
  TestPeer peer(dir, "echo");
  link_to(peer.quic_port, peer.pin);
  Seen seen;
  open_started(&seen)->write("a");
  conn->close();
  REQUIRE(run_until(&loop, [&] { return !seen.end.empty(); }));
  CHECK(seen.end == "link_lost");
  CHECK(dropped.empty());  // our own close is no drop
}

TEST_CASE_METHOD(Fixture, "destroying a QUIC stream mid-transfer fires nothing and leaves the link usable") {
  TestPeer peer(dir, "echo");
  link_to(peer.quic_port, peer.pin);
  Seen seen;
  Stream* s = open_started(&seen);
  s->write(std::string(200 * 1024, 'd'));
  run_for(&loop, 5ms);
  seen.end = "";
  streams.clear();
  run_for(&loop, 200ms);
  CHECK(seen.end.empty());
  Seen next;
  Stream* s2 = open_started(&next);
  CHECK(s2->transport_id() == 4);
  echo(s2, &next, 100000);
  CHECK(next.end == "eof");
  CHECK(next.data == pattern_bytes(0, 100000));
}

TEST_CASE_METHOD(Fixture, "a cancelled stream open never calls back") {
  TestPeer peer(dir, "echo");
  link_to(peer.quic_port, peer.pin);
  bool called = false;
  DialHandle h = conn->open_stream(2s, {}, [&](Result<std::unique_ptr<Stream>>) { called = true; });
  h.cancel();
  run_for(&loop, 100ms);
  CHECK_FALSE(called);
  // Destroying the connection with an open under way: no callback either.
  conn->open_stream(2s, {}, [&](Result<std::unique_ptr<Stream>>) { called = true; });
  conn.reset();
  run_for(&loop, 100ms);
  CHECK_FALSE(called);
}

TEST_CASE_METHOD(Fixture, "quic-go echoes a QUIC stream byte-exact with half-close and resets on RESET") {
  QuicGoPeer peer;
  if (!peer.child) {
    WARN("quicgo-peer not built: skipped");
    return;
  }
  link_to(peer.port, peer.pin);
  Seen seen;
  Stream* s = open_started(&seen);
  const size_t total = 3 * 1024 * 1024;
  const double secs = echo(s, &seen, total);
  CHECK(seen.end == "eof");
  CHECK(seen.eof);
  CHECK(seen.data == pattern_bytes(0, total));
  WARN("QUIC stream echo with quic-go: " << (2.0 * total / 1048576.0) / secs << " MiB/s both ways combined");

  Seen reset;
  Stream* r = open_started(&reset);
  r->write("RESET\n");
  REQUIRE(run_until(&loop, [&] { return !reset.end.empty(); }));
  CHECK(reset.end == "reset");
  CHECK(conn->is_active());
}
