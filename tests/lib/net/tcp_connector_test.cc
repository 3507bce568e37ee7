// TcpConnector against real listeners on the loopback, driven by the test's loop.
#include "net/tcp_connector.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "net/failure_reason.h"
#include "net/socket_address.h"
#include "test_support.h"

using namespace connmgr;
using namespace std::chrono_literals;
using connmgr::test::closed_port;
using connmgr::test::run_for;
using connmgr::test::run_until;
using connmgr::test::TcpListener;

namespace {

struct Outcome {
  bool done = false;
  std::unique_ptr<Connection> conn;
  Error error;
  std::string dropped;  // drop reason, once dropped
};

class Fixture {
 public:
  Fixture() { uv_loop_init(&loop); }
  ~Fixture() {
    connector.reset();
    connmgr::test::drain_loop(&loop);
    uv_loop_close(&loop);
  }

  DialRequest request(const std::string& address, int port, std::chrono::milliseconds timeout = 2s) {
    DialRequest r;
    r.node_id = "n1";
    r.endpoint_id = 7;
    r.protocol = "tcp";
    r.address = address;
    r.port = port;
    r.timeout = timeout;
    return r;
  }

  std::shared_ptr<Outcome> start(const DialRequest& r, DialHandle* handle = nullptr) {
    auto o = std::make_shared<Outcome>();
    DialHandle h = connector->connect(r, [o](Result<std::unique_ptr<Connection>> res) {
      o->done = true;
      if (res.ok()) {
        o->conn = std::move(res).value();
        Outcome* raw = o.get();
        o->conn->set_drop_callback([raw](const std::string& why) { raw->dropped = why; });
      } else {
        o->error = res.error();
      }
    });
    if (handle) *handle = std::move(h);
    return o;
  }

  std::shared_ptr<Outcome> dial(const DialRequest& r, std::chrono::milliseconds limit = 10s) {
    auto o = start(r);
    REQUIRE(run_until(&loop, [&] { return o->done; }, limit));
    return o;
  }

  uv_loop_t loop{};
  std::unique_ptr<TcpConnector> connector = std::make_unique<TcpConnector>(&loop, TcpOptions{});
};

}  // namespace

TEST_CASE_METHOD(Fixture, "a dial to a listener gives an active connection with its addresses") {
  TcpListener peer(&loop);
  auto o = dial(request("127.0.0.1", peer.port()));
  REQUIRE(o->conn);
  CHECK(o->conn->is_active());
  CHECK(o->conn->node_id() == "n1");
  CHECK(o->conn->endpoint_id() == 7);
  CHECK(o->conn->protocol() == "tcp");
  CHECK(o->conn->remote_address() == "127.0.0.1");
  CHECK(o->conn->remote_port() == peer.port());
  CHECK(o->conn->local_address().rfind("127.0.0.1:", 0) == 0);
  REQUIRE(o->conn->rtt_ms().has_value());
  CHECK(*o->conn->rtt_ms() >= 0.0);
  CHECK(run_until(&loop, [&] { return peer.accepted() == 1; }));
}

TEST_CASE_METHOD(Fixture, "the callback never runs inside connect()") {
  bool called = false;
  connector->connect(request("127.0.0.1", closed_port()),
                     [&](Result<std::unique_ptr<Connection>>) { called = true; });
  CHECK_FALSE(called);
  // An address that cannot even be parsed or resolved still answers later.
  bool called2 = false;
  connector->connect(request("", 1), [&](Result<std::unique_ptr<Connection>>) { called2 = true; });
  CHECK_FALSE(called2);
  CHECK(run_until(&loop, [&] { return called && called2; }));
}

TEST_CASE_METHOD(Fixture, "a closed port is refused") {
  auto o = dial(request("127.0.0.1", closed_port()));
  REQUIRE_FALSE(o->conn);
  CHECK(o->error.code() == ErrorCode::kConnectFailed);
  CHECK(o->error.reason() == "refused");
  CHECK(o->error.message().find("127.0.0.1") != std::string::npos);
}

TEST_CASE_METHOD(Fixture, "IPv6 literals are dialled") {
  TcpListener peer(&loop, "::1");
  auto o = dial(request("::1", peer.port()));
  REQUIRE(o->conn);
  CHECK(o->conn->remote_address() == "::1");
  CHECK(o->conn->local_address().rfind("[::1]:", 0) == 0);
}

TEST_CASE_METHOD(Fixture, "host names are resolved") {
  TcpListener peer(&loop);
  auto o = dial(request("localhost", peer.port()));
  REQUIRE(o->conn);
  CHECK(o->conn->remote_address() == "127.0.0.1");
}

TEST_CASE_METHOD(Fixture, "a name that does not resolve fails with reason dns") {
  auto o = dial(request("no-such-host.invalid", 80, 5s), 10s);
  REQUIRE_FALSE(o->conn);
  CHECK(o->error.reason() == "dns");
  CHECK(o->error.message().find("no-such-host.invalid") != std::string::npos);
}

TEST_CASE_METHOD(Fixture, "a blackholed dial times out within its timeout") {
  connmgr::test::BlackholedTcpPort hole;
  const uint64_t t0 = uv_hrtime();
  auto o = dial(request("127.0.0.1", hole.port(), 300ms), 5s);
  const double ms = static_cast<double>(uv_hrtime() - t0) / 1e6;
  REQUIRE_FALSE(o->conn);
  CHECK(o->error.reason() == "timeout");
  CHECK(ms >= 250);
  CHECK(ms < 3000);
}

TEST_CASE_METHOD(Fixture, "a peer close is reported once as closed") {
  TcpListener peer(&loop);
  auto o = dial(request("127.0.0.1", peer.port()));
  REQUIRE(o->conn);
  REQUIRE(run_until(&loop, [&] { return peer.accepted() == 1; }));
  peer.close_all();
  REQUIRE(run_until(&loop, [&] { return !o->dropped.empty(); }));
  CHECK(o->dropped == "closed");
  CHECK_FALSE(o->conn->is_active());
}

TEST_CASE_METHOD(Fixture, "a peer reset is reported as reset") {
  TcpListener peer(&loop);
  auto o = dial(request("127.0.0.1", peer.port()));
  REQUIRE(o->conn);
  REQUIRE(run_until(&loop, [&] { return peer.accepted() == 1; }));
  peer.reset_all();
  REQUIRE(run_until(&loop, [&] { return !o->dropped.empty(); }));
  CHECK(o->dropped == "reset");
}

TEST_CASE_METHOD(Fixture, "our close sends EOF to the peer and reports no drop") {
  TcpListener peer(&loop);
  auto o = dial(request("127.0.0.1", peer.port()));
  REQUIRE(o->conn);
  REQUIRE(run_until(&loop, [&] { return peer.accepted() == 1; }));
  o->conn->close();
  CHECK_FALSE(o->conn->is_active());
  REQUIRE(run_until(&loop, [&] { return peer.eofs_seen() == 1; }));
  run_for(&loop, 20ms);
  CHECK(o->dropped.empty());
  o->conn->close();  // idempotent
}

TEST_CASE_METHOD(Fixture, "destroying a connection closes it") {
  TcpListener peer(&loop);
  auto o = dial(request("127.0.0.1", peer.port()));
  REQUIRE(o->conn);
  REQUIRE(run_until(&loop, [&] { return peer.accepted() == 1; }));
  o->conn.reset();
  REQUIRE(run_until(&loop, [&] { return peer.eofs_seen() == 1; }));
}

TEST_CASE_METHOD(Fixture, "a cancelled dial never calls back") {
  connmgr::test::BlackholedTcpPort hole;
  DialHandle h;
  auto o = start(request("127.0.0.1", hole.port(), 200ms), &h);
  run_for(&loop, 20ms);
  h.cancel();
  h.cancel();  // idempotent
  run_for(&loop, 400ms);  // past the timeout
  CHECK_FALSE(o->done);
  // A name being resolved can be cancelled too.
  DialHandle h2;
  auto o2 = start(request("localhost", 1), &h2);
  h2.cancel();
  run_for(&loop, 100ms);
  CHECK_FALSE(o2->done);
}

TEST_CASE_METHOD(Fixture, "cancelling after completion is harmless") {
  TcpListener peer(&loop);
  DialHandle h;
  auto o = start(request("127.0.0.1", peer.port()), &h);
  REQUIRE(run_until(&loop, [&] { return o->done; }));
  h.cancel();
  REQUIRE(o->conn);
  CHECK(o->conn->is_active());
}

TEST_CASE_METHOD(Fixture, "a hundred dials at once all connect") {
  TcpListener peer(&loop);
  std::vector<std::shared_ptr<Outcome>> all;
  for (int i = 0; i < 100; ++i) all.push_back(start(request("127.0.0.1", peer.port())));
  REQUIRE(run_until(&loop, [&] {
    for (auto& o : all)
      if (!o->done) return false;
    return true;
  }));
  for (auto& o : all) CHECK(o->conn);
  CHECK(run_until(&loop, [&] { return peer.accepted() == 100; }));
}

TEST_CASE_METHOD(Fixture, "the connector may go away after its links") {
  TcpListener peer(&loop);
  auto o = dial(request("127.0.0.1", peer.port()));
  REQUIRE(o->conn);
  o->conn.reset();
  connector.reset();
  run_for(&loop, 20ms);
  SUCCEED();
}

TEST_CASE("libuv errors map to API.md's reasons") {
  CHECK(reason::from_uv(UV_ECONNREFUSED) == "refused");
  CHECK(reason::from_uv(UV_ETIMEDOUT) == "timeout");
  CHECK(reason::from_uv(UV_ENETUNREACH) == "unreachable");
  CHECK(reason::from_uv(UV_EHOSTUNREACH) == "unreachable");
  CHECK(reason::from_uv(UV_ECONNRESET) == "reset");
  CHECK(reason::from_uv(UV_EPIPE) == "reset");
  CHECK(reason::from_uv(UV_EOF) == "closed");
  CHECK(reason::from_uv(UV_EAI_NONAME) == "dns");
  CHECK(reason::from_uv(UV_EAI_AGAIN) == "dns");
  CHECK(reason::from_uv(UV_EMFILE) == "EMFILE");
  CHECK(reason::from_uv(UV_EACCES) == "EACCES");
}

TEST_CASE("socket addresses format for people and parse from literals") {
  sockaddr_storage ss{};
  REQUIRE(parse_ip_literal("::1", 443, &ss));
  CHECK(format_host_port(reinterpret_cast<sockaddr*>(&ss)) == "[::1]:443");
  REQUIRE(parse_ip_literal("192.0.2.7", 80, &ss));
  CHECK(format_host_port(reinterpret_cast<sockaddr*>(&ss)) == "192.0.2.7:80");
  CHECK(format_host(reinterpret_cast<sockaddr*>(&ss)) == "192.0.2.7");
  CHECK_FALSE(parse_ip_literal("example.org", 80, &ss));
  CHECK_FALSE(parse_ip_literal("[::1]", 80, &ss));
}
