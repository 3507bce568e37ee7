// TcpConnector against real listeners on the loopback, driven by the test's loop.
#include "net/tcp_connector.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>

#include "net/socket_address.h"
#include "test_support.h"
#include "thread_pool_blocker.h"

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

TEST_CASE_METHOD(Fixture, "the caller hears the family of the address dialled") {
  for (const char* literal : {"127.0.0.1", "::1"}) {
    INFO(literal);
    TcpListener peer(&loop, literal);
    auto r = request(literal, peer.port());
    std::vector<int> families;
    r.on_address = [&](int family) { families.push_back(family); };
    auto o = dial(r);
    REQUIRE(o->conn);
    CHECK(families == std::vector<int>{strchr(literal, ':') ? AF_INET6 : AF_INET});
  }
  // A refused dial has started on its address too: the caller knows its class.
  auto r = request("127.0.0.1", closed_port());
  int family = 0;
  r.on_address = [&](int f) { family = f; };
  auto o = dial(r);
  CHECK(o->error.reason() == "refused");
  CHECK(family == AF_INET);
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

TEST_CASE_METHOD(Fixture, "a closed port is refused, in words a person reads") {
  const int port = closed_port();
  auto o = dial(request("127.0.0.1", port));
  REQUIRE_FALSE(o->conn);
  CHECK(o->error.code() == ErrorCode::kConnectFailed);
  CHECK(o->error.reason() == "refused");
  CHECK(o->error.message() ==
        "connect to 127.0.0.1:" + std::to_string(port) + " failed: connection refused (ECONNREFUSED)");
}

TEST_CASE_METHOD(Fixture, "an IPv6 address is bracketed in messages") {
  TcpListener peer(&loop, "::1");
  const int port = peer.port();
  peer.stop();
  run_for(&loop, 10ms);
  auto o = dial(request("::1", port));
  REQUIRE_FALSE(o->conn);
  CHECK(o->error.reason() == "refused");
  CHECK(o->error.message() == "connect to [::1]:" + std::to_string(port) + " failed: connection refused (ECONNREFUSED)");
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
  const uint64_t t0 = uv_hrtime();
  auto o = dial(request("no-such-host.invalid", 80, 5s), 10s);
  const double ms = static_cast<double>(uv_hrtime() - t0) / 1e6;
  REQUIRE_FALSE(o->conn);
  CHECK(o->error.reason() == "dns");
  CHECK(o->error.message().rfind("cannot resolve no-such-host.invalid: ", 0) == 0);
  // .invalid never exists (RFC 6761): the answer must not wait for the dial's timeout.
  CHECK(ms < 4000);
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

TEST_CASE_METHOD(Fixture, "a dial cancelled with its connect pending leaves nothing behind") {
  connmgr::test::BlackholedTcpPort hole;
  DialHandle h;
  auto o = start(request("127.0.0.1", hole.port(), 2s), &h);
  run_for(&loop, 20ms);  // resolved (a literal): the connect is pending
  REQUIRE(uv_loop_alive(&loop) != 0);
  h.cancel();  // the socket closes; libuv calls the connect back with UV_ECANCELED
  run_for(&loop, 20ms);
  CHECK_FALSE(o->done);
  // Timer, socket and connect request are gone (LSan checks the memory).
  CHECK(uv_loop_alive(&loop) == 0);
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

TEST_CASE_METHOD(Fixture, "a dial cancelled from inside another dial's callback never calls back") {
  connmgr::test::BlackholedTcpPort hole;
  DialHandle slow;
  auto o_slow = start(request("127.0.0.1", hole.port(), 300ms), &slow);
  bool fast_done = false;
  connector->connect(request("127.0.0.1", closed_port()), [&](Result<std::unique_ptr<Connection>>) {
    fast_done = true;
    slow.cancel();
  });
  REQUIRE(run_until(&loop, [&] { return fast_done; }));
  run_for(&loop, 500ms);  // past the slow dial's timeout
  CHECK_FALSE(o_slow->done);
}

TEST_CASE_METHOD(Fixture, "cancelling a dial from inside its own callback is harmless") {
  TcpListener peer(&loop);
  DialHandle h;
  std::unique_ptr<Connection> conn;
  int calls = 0;
  h = connector->connect(request("127.0.0.1", peer.port()), [&](Result<std::unique_ptr<Connection>> r) {
    ++calls;
    h.cancel();
    if (r.ok()) conn = std::move(r).value();
  });
  REQUIRE(run_until(&loop, [&] { return calls == 1; }));
  run_for(&loop, 20ms);
  CHECK(calls == 1);
  REQUIRE(conn);
  CHECK(conn->is_active());
}

TEST_CASE_METHOD(Fixture, "destroying the connector cancels the dials under way") {
  connmgr::test::BlackholedTcpPort hole;
  auto connecting = start(request("127.0.0.1", hole.port(), 300ms));
  auto resolving = start(request("localhost", closed_port(), 300ms));
  connector.reset();
  run_for(&loop, 500ms);  // past both timeouts
  CHECK_FALSE(connecting->done);
  CHECK_FALSE(resolving->done);
}

TEST_CASE_METHOD(Fixture, "a connection may be destroyed from inside its drop callback") {
  TcpListener peer(&loop);
  auto o = dial(request("127.0.0.1", peer.port()));
  REQUIRE(o->conn);
  REQUIRE(run_until(&loop, [&] { return peer.accepted() == 1; }));
  std::string why;
  Outcome* raw = o.get();
  o->conn->set_drop_callback([&why, raw](const std::string& reason) {
    why = reason;
    raw->conn.reset();  // what a manager does with a dropped link
  });
  peer.close_all();
  REQUIRE(run_until(&loop, [&] { return !why.empty(); }));
  CHECK(why == "closed");
  CHECK_FALSE(o->conn);
}

TEST_CASE_METHOD(Fixture, "bytes from the peer are read and dropped, the link stays up") {
  // A plain socket listener, so that the test can write to the link.
  int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(lfd, 1) == 0);
  socklen_t len = sizeof a;
  getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  auto o2 = dial(request("127.0.0.1", ntohs(a.sin_port)));
  REQUIRE(o2->conn);
  int afd = ::accept(lfd, nullptr, nullptr);
  REQUIRE(afd >= 0);
  std::string junk(100000, 'x');
  size_t sent = 0;
  REQUIRE(run_until(&loop, [&] {
    ssize_t n = ::send(afd, junk.data() + sent, junk.size() - sent, MSG_DONTWAIT);
    if (n > 0) sent += static_cast<size_t>(n);
    return sent == junk.size();
  }));
  run_for(&loop, 50ms);
  CHECK(o2->conn->is_active());
  CHECK(o2->dropped.empty());
  ::close(afd);  // FIN after the bytes: still reported as closed
  REQUIRE(run_until(&loop, [&] { return !o2->dropped.empty(); }));
  CHECK(o2->dropped == "closed");
  ::close(lfd);
}

TEST_CASE_METHOD(Fixture, "a dial still resolving when its timeout passes says so") {
  // Every thread of libuv's pool busy: getaddrinfo waits in the queue.
  connmgr::test::ThreadPoolBlocker blocker(&loop, 1500ms);
  auto o = dial(request("localhost", 80, 200ms), 5s);
  REQUIRE_FALSE(o->conn);
  CHECK(o->error.reason() == "timeout");
  CHECK(o->error.message() == "connect to localhost:80 timed out after 200 ms while resolving the name");
  REQUIRE(blocker.wait_done());
}
