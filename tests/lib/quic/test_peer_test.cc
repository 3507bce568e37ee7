// QuicConnector against the project's own peer (tests/peer): the life of a
// link after the handshake, driven by the peer's commands.
#include <catch2/catch.hpp>

#include "net/tcp_connector.h"
#include "quic/quic_connector.h"
#include "test_support.h"

using namespace connmgr;
using namespace std::chrono_literals;
using connmgr::test::run_for;
using connmgr::test::run_until;
using connmgr::test::TempDir;

namespace {

// connmgr-test-peer with a fresh certificate: commands on its stdin,
// answers on its stdout, ended by its pid.
using PeerProcess = connmgr::test::TestPeerProcess;

struct Outcome {
  bool done = false;
  std::unique_ptr<Connection> conn;
  Error error;
  std::string dropped;
};

class Fixture {
 public:
  Fixture() { uv_loop_init(&loop); }
  ~Fixture() {
    connector.reset();
    connmgr::test::drain_loop(&loop);
    uv_loop_close(&loop);
  }

  void make(QuicOptions o = {}) {
    auto c = QuicConnector::create(&loop, std::move(o));
    REQUIRE(c.ok());
    connector = std::move(c).value();
  }

  std::shared_ptr<Outcome> dial(const PeerProcess& peer, std::optional<std::string> pin) {
    DialRequest r;
    r.node_id = "p";
    r.protocol = "quic";
    r.address = "127.0.0.1";
    r.port = peer.quic_port;
    r.pin_sha256 = std::move(pin);
    r.timeout = 3s;
    auto o = std::make_shared<Outcome>();
    connector->connect(r, [o](Result<std::unique_ptr<Connection>> res) {
      o->done = true;
      if (res.ok()) {
        o->conn = std::move(res).value();
        Outcome* raw = o.get();
        o->conn->set_drop_callback([raw](const std::string& why) { raw->dropped = why; });
      } else {
        o->error = res.error();
      }
    });
    REQUIRE(run_until(&loop, [&] { return o->done; }, 10s));
    return o;
  }

  uv_loop_t loop{};
  TempDir dir;
  std::unique_ptr<QuicConnector> connector;
};

}  // namespace

TEST_CASE_METHOD(Fixture, "the default ALPN reaches the project's peer and close() sends CONNECTION_CLOSE") {
  PeerProcess peer(dir);
  make();
  auto o = dial(peer, peer.pin);
  REQUIRE(o->conn);
  auto c = peer.count();
  CHECK(c.quic == 1);
  CHECK(c.open_quic == 1);
  o->conn->close();
  run_for(&loop, 100ms);
  c = peer.count();
  CHECK(c.client_closes == 1);
  CHECK(c.open_quic == 0);
  CHECK(o->dropped.empty());
}

TEST_CASE_METHOD(Fixture, "a link held past its handshake keeps rtt, keepalives and CONNECTION_CLOSE") {
  // Long enough for HANDSHAKE_DONE and several keepalives: the connector
  // frees the TLS session once the handshake is confirmed.
  PeerProcess peer(dir);
  QuicOptions opts;
  opts.idle_timeout = 600ms;
  opts.keepalive = 150ms;
  make(opts);
  auto o = dial(peer, peer.pin);
  REQUIRE(o->conn);
  run_for(&loop, 1000ms);
  CHECK(o->dropped.empty());
  CHECK(o->conn->is_active());
  REQUIRE(o->conn->rtt_ms().has_value());
  CHECK(*o->conn->rtt_ms() > 0.0);
  o->conn->close();
  run_for(&loop, 100ms);
  auto c = peer.count();
  CHECK(c.client_closes == 1);
  CHECK(c.open_quic == 0);
}

TEST_CASE_METHOD(Fixture, "a peer's CONNECTION_CLOSE ends the link with reason closed") {
  PeerProcess peer(dir);
  make();
  auto o = dial(peer, peer.pin);
  REQUIRE(o->conn);
  REQUIRE(peer.command("close-all"));
  REQUIRE(run_until(&loop, [&] { return !o->dropped.empty(); }, 5s));
  CHECK(o->dropped == "closed");
  CHECK_FALSE(o->conn->is_active());
}

TEST_CASE_METHOD(Fixture, "a peer that forgets the connection is noticed by the idle timeout") {
  PeerProcess peer(dir);
  QuicOptions opts;
  opts.idle_timeout = 800ms;
  opts.keepalive = 200ms;
  make(opts);
  auto o = dial(peer, peer.pin);
  REQUIRE(o->conn);
  run_for(&loop, 1200ms);
  CHECK(o->dropped.empty());  // keepalives keep an idle link up past the idle timeout
  REQUIRE(peer.command("reset-all"));
  REQUIRE(run_until(&loop, [&] { return !o->dropped.empty(); }, 5s));
  CHECK(o->dropped == "idle_timeout");
}

TEST_CASE_METHOD(Fixture, "a peer that vanishes ends the link") {
  PeerProcess peer(dir);
  QuicOptions opts;
  opts.idle_timeout = 800ms;
  opts.keepalive = 200ms;
  make(opts);
  auto o = dial(peer, peer.pin);
  REQUIRE(o->conn);
  REQUIRE(peer.command("vanish"));
  peer.child().wait_exit();
  REQUIRE(run_until(&loop, [&] { return !o->dropped.empty(); }, 5s));
  // The kernel may answer a keepalive with port unreachable before the timeout.
  CHECK((o->dropped == "idle_timeout" || o->dropped == "closed"));
}

TEST_CASE_METHOD(Fixture, "the peer's TCP side holds, closes and resets links") {
  PeerProcess peer(dir);
  TcpConnector tcp(&loop, TcpOptions{});
  DialRequest r;
  r.protocol = "tcp";
  r.address = "127.0.0.1";
  r.port = peer.tcp_port;
  auto dial_tcp = [&] {
    auto o = std::make_shared<Outcome>();
    tcp.connect(r, [o](Result<std::unique_ptr<Connection>> res) {
      o->done = true;
      if (res.ok()) {
        o->conn = std::move(res).value();
        Outcome* raw = o.get();
        o->conn->set_drop_callback([raw](const std::string& why) { raw->dropped = why; });
      }
    });
    REQUIRE(run_until(&loop, [&] { return o->done; }));
    return o;
  };
  auto a = dial_tcp();
  REQUIRE(a->conn);
  run_for(&loop, 50ms);
  REQUIRE(peer.command("close-all"));
  REQUIRE(run_until(&loop, [&] { return !a->dropped.empty(); }));
  CHECK(a->dropped == "closed");
  auto b = dial_tcp();
  REQUIRE(b->conn);
  run_for(&loop, 50ms);
  REQUIRE(peer.command("reset-all"));
  REQUIRE(run_until(&loop, [&] { return !b->dropped.empty(); }));
  CHECK(b->dropped == "reset");
  CHECK(peer.count().tcp == 2);
}
