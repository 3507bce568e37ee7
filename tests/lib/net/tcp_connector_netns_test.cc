// TcpConnector where the host's network cannot show it: a name with several
// addresses (this host's /etc/hosts gives "localhost" one) and a network
// with no route. The cases tagged [.isolated] run in a child of this test
// binary with its own mount and network namespaces: a private /etc/hosts
// bind-mounted over the real one, and only a loopback interface, so that any
// non-loopback address has no route (isolated_namespace.h). Nothing of the
// host is changed.
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>

#include "net/socket_address.h"
#include "net/tcp_connector.h"
#include "isolated_namespace.h"
#include "test_support.h"

using namespace connmgr;
using namespace std::chrono_literals;
using connmgr::test::run_until;
using connmgr::test::TcpListener;
using connmgr::test::isolated;
using connmgr::test::kCannotIsolate;
using connmgr::test::run_isolated_cases;

namespace {

// A listening socket of its own on `ip`:`port` (0: any port), IPv6 only for
// an IPv6 address. With `blackholed`, its accept queue (backlog 0) is filled
// by a connection nobody accepts, so that the SYNs of any further connect
// are dropped: a dial there neither connects nor fails until its timeout.
// Otherwise the kernel completes connects without anyone accepting.
class RawListener {
 public:
  RawListener(const std::string& ip, int port, bool blackholed) {
    sockaddr_storage ss{};
    REQUIRE(connmgr::parse_ip_literal(ip, port, &ss));
    const socklen_t len = ss.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    fd_ = socket(ss.ss_family, SOCK_STREAM, 0);
    const int on = 1;
    if (ss.ss_family == AF_INET6) setsockopt(fd_, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&ss), len) == 0);
    REQUIRE(listen(fd_, blackholed ? 0 : 16) == 0);
    socklen_t got = sizeof ss;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &got);
    port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6&>(ss).sin6_port
                                           : reinterpret_cast<sockaddr_in&>(ss).sin_port);
    if (!blackholed) return;
    // A backlog of 0 admits one connection; a second one makes sure.
    for (int i = 0; i < 2; ++i) {
      const int c = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
      connect(c, reinterpret_cast<sockaddr*>(&ss), len);
      fillers_.push_back(c);
    }
    usleep(50 * 1000);  // the fillers' handshakes complete
  }
  ~RawListener() {
    for (int c : fillers_) close(c);
    close(fd_);
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::vector<int> fillers_;
};

double ms_since(uint64_t t0) { return static_cast<double>(uv_hrtime() - t0) / 1e6; }

struct Outcome {
  bool done = false;
  bool inside_connect = false;
  std::unique_ptr<Connection> conn;
  Error error;
};

class Fixture {
 public:
  Fixture() { uv_loop_init(&loop); }
  ~Fixture() {
    connector.reset();
    connmgr::test::drain_loop(&loop);
    uv_loop_close(&loop);
  }

  std::shared_ptr<Outcome> dial(const std::string& address, int port) {
    DialRequest r;
    r.node_id = "n1";
    r.endpoint_id = 1;
    r.protocol = "tcp";
    r.address = address;
    r.port = port;
    r.timeout = 5s;
    return dial(r);
  }

  std::shared_ptr<Outcome> dial(const DialRequest& r) {
    auto o = std::make_shared<Outcome>();
    bool in_connect = true;
    connector->connect(r, [o, &in_connect](Result<std::unique_ptr<Connection>> res) {
      o->done = true;
      o->inside_connect = in_connect;
      if (res.ok())
        o->conn = std::move(res).value();
      else
        o->error = res.error();
    });
    in_connect = false;
    REQUIRE(run_until(&loop, [&] { return o->done; }, 10s));
    CHECK_FALSE(o->inside_connect);
    return o;
  }

  uv_loop_t loop{};
  std::unique_ptr<TcpConnector> connector = std::make_unique<TcpConnector>(&loop, TcpOptions{});
};

}  // namespace

TEST_CASE("dials behave in a network of their own: several addresses, no route") {
  connmgr::test::TempDir dir;
  const std::string hosts = dir.file("hosts");
  {
    std::ofstream out(hosts);
    out << "127.0.0.1 localhost\n"
           "::1 twohost\n127.0.0.1 twohost\n"
           "192.0.2.1 noroute\n"
           "2001:db8::1 norouteboth\n192.0.2.1 norouteboth\n"
           "2001:db8::1 halfroute\n127.0.0.1 halfroute\n";
  }
  const int rc = run_isolated_cases(hosts);
  if (rc == kCannotIsolate) {
    WARN("skipped: no permission for private mount and network namespaces (run as root)");
    return;
  }
  CHECK(rc == 0);  // the child's own report is in this test's output above
}

TEST_CASE("a name with an IPv6 and an IPv4 address connects to the one that listens", "[.isolated]") {
  if (!isolated()) return;
  Fixture f;
  for (const char* ip : {"127.0.0.1", "::1"}) {
    INFO("listening on " << ip);
    // The other family's address has nothing on that port: refused, then the next.
    TcpListener peer(&f.loop, ip);
    auto o = f.dial("twohost", peer.port());
    REQUIRE(o->conn);
    CHECK(o->conn->remote_address() == ip);
    CHECK(run_until(&f.loop, [&] { return peer.accepted() == 1; }));
  }
}

TEST_CASE("when every address of a name fails, the message names them all", "[.isolated]") {
  if (!isolated()) return;
  Fixture f;
  auto o = f.dial("twohost", connmgr::test::closed_port());
  REQUIRE_FALSE(o->conn);
  CHECK(o->error.reason() == "refused");
  const std::string& m = o->error.message();
  CHECK(m.rfind("connect to twohost:", 0) == 0);
  CHECK(m.find("failed: connection refused (ECONNREFUSED) (tried ") != std::string::npos);
  CHECK(m.find("::1") != std::string::npos);
  CHECK(m.find("127.0.0.1") != std::string::npos);
}

TEST_CASE("an address without a route fails at once as local_network, after connect() returns",
          "[.isolated]") {
  if (!isolated()) return;
  Fixture f;
  const uint64_t t0 = uv_hrtime();
  auto o = f.dial("192.0.2.1", 80);
  const double ms = static_cast<double>(uv_hrtime() - t0) / 1e6;
  REQUIRE_FALSE(o->conn);
  CHECK(o->error.reason() == "local_network");
  // The errno behind the class reaches the log through the message.
  CHECK(o->error.message() == "connect to 192.0.2.1:80 failed: network is unreachable (ENETUNREACH)");
  CHECK(ms < 2000);  // no waiting for the 5 s timeout
  auto by_name = f.dial("noroute", 80);
  CHECK(by_name->error.reason() == "local_network");
  CHECK(by_name->error.message() ==
        "connect to noroute:80 failed: network is unreachable (ENETUNREACH) (tried 192.0.2.1)");
}

TEST_CASE("an IPv6 address without a route fails as local_network too", "[.isolated]") {
  if (!isolated()) return;
  Fixture f;
  auto o = f.dial("2001:db8::1", 80);
  REQUIRE_FALSE(o->conn);
  CHECK(o->error.reason() == "local_network");
  CHECK(o->error.message().find("(ENETUNREACH)") != std::string::npos);
}

TEST_CASE("a name whose IPv6 address blackholes connects over IPv4 after the attempt delay, not the timeout",
          "[.isolated]") {
  if (!isolated()) return;
  Fixture f;
  RawListener silent("::1", 0, true);
  RawListener live("127.0.0.1", silent.port(), false);
  DialRequest r;
  r.node_id = "n1";
  r.endpoint_id = 1;
  r.protocol = "tcp";
  r.address = "twohost";
  r.port = silent.port();
  r.timeout = 5s;
  r.attempt_delay = 300ms;
  std::vector<int> families;
  r.on_address = [&](int family) { families.push_back(family); };
  const uint64_t t0 = uv_hrtime();
  auto o = f.dial(r);
  const double ms = ms_since(t0);
  REQUIRE(o->conn);
  CHECK(o->conn->remote_address() == "127.0.0.1");
  CHECK(families == std::vector<int>{AF_INET6, AF_INET});
  CHECK(ms >= 290);   // IPv6 first: IPv4 only after the delay
  CHECK(ms < 2500);   // about the delay (a loaded machine may add some), far from the 5 s timeout
  // The IPv6 attempt was closed with the race: its socket is gone.
  connmgr::test::run_for(&f.loop, 20ms);
}

TEST_CASE("a name whose IPv6 address refuses connects over IPv4 at once, not after the delay", "[.isolated]") {
  if (!isolated()) return;
  Fixture f;
  // ::1 refuses (nothing listens there on that port); 127.0.0.1 accepts.
  RawListener live("127.0.0.1", 0, false);
  DialRequest r;
  r.protocol = "tcp";
  r.address = "twohost";
  r.port = live.port();
  r.timeout = 5s;
  r.attempt_delay = 3s;
  std::vector<int> families;
  r.on_address = [&](int family) { families.push_back(family); };
  const uint64_t t0 = uv_hrtime();
  auto o = f.dial(r);
  REQUIRE(o->conn);
  CHECK(ms_since(t0) < 1500);  // not the 3 s attempt delay
  CHECK(families == std::vector<int>{AF_INET6, AF_INET});
}

TEST_CASE("a name whose addresses all blackhole times out once, naming them", "[.isolated]") {
  if (!isolated()) return;
  Fixture f;
  RawListener silent6("::1", 0, true);
  RawListener silent4("127.0.0.1", silent6.port(), true);
  DialRequest r;
  r.protocol = "tcp";
  r.address = "twohost";
  r.port = silent6.port();
  r.timeout = 700ms;
  r.attempt_delay = 100ms;
  const uint64_t t0 = uv_hrtime();
  auto o = f.dial(r);
  const double ms = ms_since(t0);
  REQUIRE_FALSE(o->conn);
  CHECK(o->error.reason() == "timeout");
  CHECK(o->error.message() ==
        "connect to twohost:" + std::to_string(r.port) + " timed out after 700 ms (tried ::1, 127.0.0.1)");
  CHECK(ms >= 690);
  CHECK(ms < 2500);
}

TEST_CASE("a name none of whose addresses has a route fails as local_network", "[.isolated]") {
  if (!isolated()) return;
  Fixture f;
  DialRequest r;
  r.protocol = "tcp";
  r.address = "norouteboth";
  r.port = 80;
  r.timeout = 5s;
  std::vector<int> families;
  r.on_address = [&](int family) { families.push_back(family); };
  auto o = f.dial(r);
  REQUIRE_FALSE(o->conn);
  CHECK(o->error.reason() == "local_network");
  CHECK(o->error.message() ==
        "connect to norouteboth:80 failed: network is unreachable (ENETUNREACH) (tried 2001:db8::1, 192.0.2.1)");
  CHECK(families == std::vector<int>{AF_INET6, AF_INET});
}

TEST_CASE("a name with one address out of route and one refusing fails as refused: the endpoint's own answer",
          "[.isolated]") {
  if (!isolated()) return;
  Fixture f;
  DialRequest r;
  r.protocol = "tcp";
  r.address = "halfroute";
  r.port = connmgr::test::closed_port();
  r.timeout = 5s;
  auto o = f.dial(r);
  REQUIRE_FALSE(o->conn);
  CHECK(o->error.reason() == "refused");
  CHECK(o->error.message().find("(tried 2001:db8::1, 127.0.0.1)") != std::string::npos);
}
