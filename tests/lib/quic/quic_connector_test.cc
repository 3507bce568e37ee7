// QuicConnector against gtlsserver (Debian's ngtcp2-server: ngtcp2's own
// example server on GnuTLS, HTTP/3, ALPN h3), a QUIC stack nobody here
// wrote, with a certificate made for the test by the openssl CLI.
#include "quic/quic_connector.h"

#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <array>
#include <cstdio>
#include <fstream>

#include "../net/isolated_namespace.h"
#include "net/socket_address.h"
#include "test_support.h"

extern char** environ;

using namespace connmgr;
using namespace std::chrono_literals;
using connmgr::test::run_for;
using connmgr::test::run_until;
using connmgr::test::TempDir;

namespace {

constexpr const char* kGtlsserver = "/usr/sbin/gtlsserver";

std::string shell(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  std::array<char, 256> buf{};
  while (fgets(buf.data(), buf.size(), p)) out += buf.data();
  pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

int free_udp_port() {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// A certificate for localhost / 127.0.0.1 and its SPKI pin, made by openssl.
struct Certificate {
  explicit Certificate(const TempDir& dir, const std::string& name = "peer") {
    key = dir.file(name + "-key.pem");
    cert = dir.file(name + "-cert.pem");
    const std::string cmd =
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout '" + key +
        "' -out '" + cert + "' -days 2 -subj /CN=localhost "
        "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null";
    REQUIRE(std::system(cmd.c_str()) == 0);
    pin = shell("openssl x509 -in '" + cert + "' -pubkey -noout | openssl pkey -pubin -outform der "
                "| openssl dgst -sha256 -binary | openssl enc -base64");
    REQUIRE(pin.size() == 44);
  }
  std::string key, cert, pin;
};

// gtlsserver on 127.0.0.1, ended by its pid.
struct Gtlsserver {
  Gtlsserver(const Certificate& c, int port_) : port(port_) {
    const std::string p = std::to_string(port);
    std::vector<std::string> args = {kGtlsserver, "-q", "127.0.0.1", p, c.key, c.cert};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    REQUIRE(posix_spawn(&pid, kGtlsserver, &fa, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
  }
  ~Gtlsserver() { kill_now(); }
  void kill_now() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      pid = -1;
    }
  }
  pid_t pid = -1;
  int port;
};

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
    connectors.clear();
    connmgr::test::drain_loop(&loop);
    uv_loop_close(&loop);
  }

  QuicConnector& connector(QuicOptions o = {}) {
    auto c = QuicConnector::create(&loop, std::move(o));
    REQUIRE(c.ok());
    connectors.push_back(std::move(c).value());
    return *connectors.back();
  }

  DialRequest request(int port, std::optional<std::string> pin = std::nullopt,
                      std::chrono::milliseconds timeout = 3s) {
    DialRequest r;
    r.node_id = "q1";
    r.endpoint_id = 11;
    r.protocol = "quic";
    r.address = "127.0.0.1";
    r.port = port;
    r.alpn = "h3";
    r.pin_sha256 = std::move(pin);
    r.timeout = timeout;
    return r;
  }

  std::shared_ptr<Outcome> start(QuicConnector& c, const DialRequest& r, DialHandle* h = nullptr) {
    auto o = std::make_shared<Outcome>();
    DialHandle handle = c.connect(r, [o](Result<std::unique_ptr<Connection>> res) {
      o->done = true;
      if (res.ok()) {
        o->conn = std::move(res).value();
        Outcome* raw = o.get();
        o->conn->set_drop_callback([raw](const std::string& why) { raw->dropped = why; });
      } else {
        o->error = res.error();
      }
    });
    if (h) *h = std::move(handle);
    return o;
  }

  std::shared_ptr<Outcome> dial(QuicConnector& c, const DialRequest& r) {
    auto o = start(c, r);
    REQUIRE(run_until(&loop, [&] { return o->done; }, 15s));
    return o;
  }

  // gtlsserver needs a moment to bind: dial with the right pin until it answers.
  void wait_until_up(QuicConnector& c, int port, const std::string& pin) {
    for (int i = 0; i < 50; ++i) {
      auto o = dial(c, request(port, pin, 1s));
      if (o->conn) return;
      run_for(&loop, 50ms);
    }
    FAIL("gtlsserver did not answer on port " << port);
  }

  uv_loop_t loop{};
  TempDir dir;
  std::vector<std::unique_ptr<QuicConnector>> connectors;
};

}  // namespace

TEST_CASE_METHOD(Fixture, "a pinned dial to gtlsserver completes the handshake") {
  Certificate cert(dir);
  Gtlsserver server(cert, free_udp_port());
  auto& c = connector();
  wait_until_up(c, server.port, cert.pin);
  auto r = request(server.port, cert.pin);
  std::vector<int> families;
  r.on_address = [&](int family) { families.push_back(family); };
  auto o = dial(c, r);
  REQUIRE(o->conn);
  CHECK(families == std::vector<int>{AF_INET});  // the caller hears the address class
  CHECK(o->conn->is_active());
  CHECK(o->conn->protocol() == "quic");
  CHECK(o->conn->remote_address() == "127.0.0.1");
  CHECK(o->conn->local_address().rfind("127.0.0.1:", 0) == 0);
  REQUIRE(o->conn->rtt_ms().has_value());
  CHECK(*o->conn->rtt_ms() > 0.0);
  o->conn->close();
  CHECK_FALSE(o->conn->is_active());
}

TEST_CASE_METHOD(Fixture, "a wrong pin fails with pin_mismatch") {
  Certificate cert(dir);
  Gtlsserver server(cert, free_udp_port());
  auto& c = connector();
  wait_until_up(c, server.port, cert.pin);
  auto o = dial(c, request(server.port, std::string("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")));
  REQUIRE_FALSE(o->conn);
  CHECK(o->error.code() == ErrorCode::kConnectFailed);
  CHECK(o->error.reason() == "pin_mismatch");
  CHECK(o->error.message().find(cert.pin) != std::string::npos);
}

TEST_CASE_METHOD(Fixture, "an untrusted certificate without a pin fails with tls") {
  Certificate cert(dir);
  Gtlsserver server(cert, free_udp_port());
  auto& c = connector();  // the system trust store does not know this certificate
  wait_until_up(c, server.port, cert.pin);
  auto o = dial(c, request(server.port));
  REQUIRE_FALSE(o->conn);
  CHECK(o->error.reason() == "tls");
}

TEST_CASE_METHOD(Fixture, "a certificate trusted through quic_ca_file with the right name is accepted") {
  Certificate cert(dir);
  Gtlsserver server(cert, free_udp_port());
  QuicOptions opts;
  opts.ca_file = cert.cert;
  auto& c = connector(opts);
  wait_until_up(c, server.port, cert.pin);
  auto r = request(server.port);
  r.server_name = "localhost";
  auto o = dial(c, r);
  REQUIRE(o->conn);
  CHECK(o->conn->is_active());
  // The same trust with a name the certificate does not carry is refused.
  r.server_name = "elsewhere.example";
  auto wrong = dial(c, r);
  REQUIRE_FALSE(wrong->conn);
  CHECK(wrong->error.reason() == "tls");
  // And by address, the IP in the certificate's names.
  auto by_ip = dial(c, request(server.port));
  CHECK(by_ip->conn);
}

TEST_CASE_METHOD(Fixture, "an ALPN the server does not speak fails the handshake") {
  Certificate cert(dir);
  Gtlsserver server(cert, free_udp_port());
  auto& c = connector();
  wait_until_up(c, server.port, cert.pin);
  auto r = request(server.port, cert.pin);
  r.alpn = "connmgr";
  auto o = dial(c, r);
  REQUIRE_FALSE(o->conn);
  CHECK((o->error.reason() == "handshake" || o->error.reason() == "tls"));
}

TEST_CASE_METHOD(Fixture, "killing gtlsserver ends the link within the idle timeout") {
  Certificate cert(dir);
  Gtlsserver server(cert, free_udp_port());
  QuicOptions opts;
  opts.idle_timeout = 1000ms;
  opts.keepalive = 300ms;
  auto& c = connector(opts);
  wait_until_up(c, server.port, cert.pin);
  auto o = dial(c, request(server.port, cert.pin));
  REQUIRE(o->conn);
  run_for(&loop, 500ms);
  CHECK(o->dropped.empty());  // keepalives hold it
  server.kill_now();
  const uint64_t t0 = uv_hrtime();
  REQUIRE(run_until(&loop, [&] { return !o->dropped.empty(); }, 10s));
  const double ms = static_cast<double>(uv_hrtime() - t0) / 1e6;
  // The kernel may answer our keepalive with port-unreachable first.
  CHECK((o->dropped == "idle_timeout" || o->dropped == "closed"));
  CHECK(ms < 5000);
  CHECK_FALSE(o->conn->is_active());
}

TEST_CASE_METHOD(Fixture, "a port where nothing answers times out") {
  connmgr::test::SilentUdpPort silent;
  auto& c = connector();
  const uint64_t t0 = uv_hrtime();
  auto o = dial(c, request(silent.port(), std::nullopt, 400ms));
  const double ms = static_cast<double>(uv_hrtime() - t0) / 1e6;
  REQUIRE_FALSE(o->conn);
  CHECK(o->error.reason() == "timeout");
  CHECK(ms >= 350);
  CHECK(ms < 5000);
}

TEST_CASE_METHOD(Fixture, "a closed UDP port is refused or times out, never hangs") {
  auto& c = connector();
  auto o = dial(c, request(free_udp_port(), std::nullopt, 1s));
  REQUIRE_FALSE(o->conn);
  CHECK((o->error.reason() == "refused" || o->error.reason() == "timeout"));
}

TEST_CASE_METHOD(Fixture, "a cancelled QUIC dial never calls back") {
  connmgr::test::SilentUdpPort silent;
  auto& c = connector();
  DialHandle h;
  auto o = start(c, request(silent.port(), std::nullopt, 300ms), &h);
  run_for(&loop, 30ms);
  h.cancel();
  run_for(&loop, 500ms);
  CHECK_FALSE(o->done);
  DialHandle h2;
  auto o2 = start(c, request(silent.port()), &h2);
  h2.cancel();  // before the socket even opened
  run_for(&loop, 50ms);
  CHECK_FALSE(o2->done);
  // Socket, timers and QUIC state are gone (LSan checks the memory).
  CHECK(uv_loop_alive(&loop) == 0);
}

TEST_CASE_METHOD(Fixture, "a QUIC dial destroyed with its connector mid-handshake or mid-resolution never calls back") {
  connmgr::test::SilentUdpPort silent;
  connector();
  auto handshaking = start(*connectors.back(), request(silent.port(), std::nullopt, 300ms));
  auto r = request(silent.port(), std::nullopt, 300ms);
  r.address = "localhost";
  auto resolving = start(*connectors.back(), r);
  run_for(&loop, 30ms);  // the first is waiting for the peer's Initial
  connectors.clear();
  run_for(&loop, 500ms);  // past the timeouts
  CHECK_FALSE(handshaking->done);
  CHECK_FALSE(resolving->done);
  CHECK(uv_loop_alive(&loop) == 0);
}

TEST_CASE_METHOD(Fixture, "a QUIC connection may be destroyed from inside its drop callback") {
  Certificate cert(dir);
  Gtlsserver server(cert, free_udp_port());
  QuicOptions opts;
  opts.idle_timeout = 500ms;
  opts.keepalive = 200ms;
  auto& c = connector(opts);
  wait_until_up(c, server.port, cert.pin);
  auto o = dial(c, request(server.port, cert.pin));
  REQUIRE(o->conn);
  std::string why;
  o->conn->set_drop_callback([&](const std::string& reason) {
    why = reason;
    o->conn.reset();
  });
  server.kill_now();
  REQUIRE(run_until(&loop, [&] { return !why.empty(); }, 10s));
  CHECK_FALSE(o->conn);
  run_for(&loop, 50ms);
}

TEST_CASE_METHOD(Fixture, "host names are resolved for QUIC too") {
  Certificate cert(dir);
  Gtlsserver server(cert, free_udp_port());
  auto& c = connector();
  wait_until_up(c, server.port, cert.pin);
  auto r = request(server.port, cert.pin);
  r.address = "localhost";
  auto o = dial(c, r);
  REQUIRE(o->conn);
  CHECK(o->conn->remote_address() == "127.0.0.1");
  r.address = "no-such-host.invalid";
  auto bad = dial(c, r);
  REQUIRE_FALSE(bad->conn);
  CHECK(bad->error.reason() == "dns");
}

TEST_CASE_METHOD(Fixture, "twenty links are held at once") {
  Certificate cert(dir);
  Gtlsserver server(cert, free_udp_port());
  auto& c = connector();
  wait_until_up(c, server.port, cert.pin);
  std::vector<std::shared_ptr<Outcome>> all;
  for (int i = 0; i < 20; ++i) all.push_back(start(c, request(server.port, cert.pin)));
  REQUIRE(run_until(&loop, [&] {
    for (auto& o : all)
      if (!o->done) return false;
    return true;
  }, 20s));
  int up = 0;
  for (auto& o : all) up += o->conn && o->conn->is_active();
  CHECK(up == 20);
}

TEST_CASE("a missing CA file is refused when the connector is made") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  QuicOptions o;
  o.ca_file = "/nonexistent/ca.pem";
  auto c = QuicConnector::create(&loop, o);
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().message().find("quic_ca_file") != std::string::npos);
  uv_loop_close(&loop);
}

// --- in a network of their own (tests/lib/net/isolated_namespace.h) ----------------

namespace {

// A UDP socket on `ip`:`port` that reads nothing and answers nothing: a QUIC
// handshake to it neither succeeds nor fails (no port-unreachable either).
struct SilentUdp {
  SilentUdp(const std::string& ip, int port) {
    sockaddr_storage ss{};
    REQUIRE(parse_ip_literal(ip, port, &ss));
    fd = socket(ss.ss_family, SOCK_DGRAM, 0);
    const int on = 1;
    if (ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&ss),
                 ss.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in)) == 0);
  }
  ~SilentUdp() { close(fd); }
  int fd = -1;
};

double ms_since(uint64_t t0) { return static_cast<double>(uv_hrtime() - t0) / 1e6; }

}  // namespace

TEST_CASE("QUIC dials behave in a network of their own: several addresses, no route") {
  TempDir dir;
  const std::string hosts = dir.file("hosts");
  {
    std::ofstream out(hosts);
    out << "127.0.0.1 localhost\n::1 twohost\n127.0.0.1 twohost\n";
  }
  const int rc = connmgr::test::run_isolated_cases(hosts);
  if (rc == connmgr::test::kCannotIsolate) {
    WARN("skipped: no permission for private mount and network namespaces (run as root)");
    return;
  }
  CHECK(rc == 0);  // the child's own report is in this test's output above
}

TEST_CASE_METHOD(Fixture, "a QUIC name whose IPv6 address is silent connects over IPv4 after the attempt delay",
                 "[.isolated]") {
  if (!connmgr::test::isolated()) return;
  Certificate cert(dir);
  Gtlsserver server(cert, free_udp_port());
  SilentUdp silent("::1", server.port);
  auto& c = connector();
  wait_until_up(c, server.port, cert.pin);
  auto r = request(server.port, cert.pin, 5s);
  r.address = "twohost";
  r.attempt_delay = 300ms;
  std::vector<int> families;
  r.on_address = [&](int family) { families.push_back(family); };
  const uint64_t t0 = uv_hrtime();
  auto o = dial(c, r);
  const double ms = ms_since(t0);
  REQUIRE(o->conn);
  CHECK(o->conn->remote_address() == "127.0.0.1");
  CHECK(families == std::vector<int>{AF_INET6, AF_INET});
  CHECK(ms >= 290);  // IPv6 first
  CHECK(ms < 2500);  // about the delay, far from the 5 s timeout
  REQUIRE(o->conn->rtt_ms().has_value());
  CHECK(*o->conn->rtt_ms() > 0.0);
}

TEST_CASE_METHOD(Fixture, "a QUIC name whose addresses are all silent times out once, naming them", "[.isolated]") {
  if (!connmgr::test::isolated()) return;
  const int port = free_udp_port();
  SilentUdp silent4("127.0.0.1", port);
  SilentUdp silent6("::1", port);
  auto& c = connector();
  auto r = request(port, std::nullopt, 700ms);
  r.address = "twohost";
  r.attempt_delay = 100ms;
  const uint64_t t0 = uv_hrtime();
  auto o = dial(c, r);
  const double ms = ms_since(t0);
  REQUIRE_FALSE(o->conn);
  CHECK(o->error.reason() == "timeout");
  CHECK(o->error.message().find("(twohost: tried ::1, 127.0.0.1)") != std::string::npos);
  CHECK(ms >= 650);
  CHECK(ms < 2500);
}

TEST_CASE_METHOD(Fixture, "a QUIC dial to an address without a route fails at once as local_network",
                 "[.isolated]") {
  if (!connmgr::test::isolated()) return;
  auto& c = connector();
  for (const char* ip : {"192.0.2.1", "2001:db8::1"}) {
    INFO(ip);
    auto r = request(4433, std::nullopt, 5s);
    r.address = ip;
    const uint64_t t0 = uv_hrtime();
    auto o = dial(c, r);
    REQUIRE_FALSE(o->conn);
    CHECK(o->error.reason() == "local_network");
    CHECK(o->error.message().find("(ENETUNREACH)") != std::string::npos);
    CHECK(ms_since(t0) < 2000);
  }
}

TEST_CASE_METHOD(Fixture, "a QUIC handshake whose route goes away fails as local_network, not at the timeout",
                 "[.isolated]") {
  if (!connmgr::test::isolated()) return;
  // A route to 10.77.0.0/24 on lo, where nothing has 10.77.0.2: the
  // handshake's packets go out and nothing answers them. Then the route
  // goes, and the next retransmission's sendmsg is refused (ENETUNREACH).
  REQUIRE(std::system("ip route add 10.77.0.0/24 dev lo") == 0);
  auto& c = connector();
  auto r = request(4433, std::nullopt, 8s);
  r.address = "10.77.0.2";
  const uint64_t t0 = uv_hrtime();
  auto o = start(c, r);
  run_for(&loop, 50ms);
  INFO(o->error.message());
  REQUIRE_FALSE(o->done);
  REQUIRE(std::system("ip route del 10.77.0.0/24 dev lo") == 0);
  REQUIRE(run_until(&loop, [&] { return o->done; }, 10s));
  REQUIRE_FALSE(o->conn);
  CHECK(o->error.reason() == "local_network");
  CHECK(o->error.message().find("cannot send: network is unreachable (ENETUNREACH)") != std::string::npos);
  CHECK(ms_since(t0) < 4000);
}
