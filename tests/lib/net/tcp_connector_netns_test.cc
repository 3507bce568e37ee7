// TcpConnector where the host's network cannot show it: a name with several
// addresses (this host's /etc/hosts gives "localhost" one) and a network
// with no route. The cases tagged [.isolated] run in a child of this test
// binary with its own mount and network namespaces: a private /etc/hosts
// bind-mounted over the real one, and only a loopback interface, so that any
// non-loopback address has no route. Nothing of the host is changed.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/limits.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>

#include "net/tcp_connector.h"
#include "test_support.h"

using namespace connmgr;
using namespace std::chrono_literals;
using connmgr::test::run_until;
using connmgr::test::TcpListener;

extern char** environ;

namespace {

constexpr const char* kIsolatedEnv = "CONNMGR_NET_ISOLATED";
constexpr int kCannotIsolate = 77;

// Runs this binary's [isolated] cases in new namespaces; their exit status,
// kCannotIsolate when namespaces are not allowed (not root), -1 on a hang.
int run_isolated_cases(const std::string& hosts_file) {
  char self[PATH_MAX] = {};
  if (readlink("/proc/self/exe", self, sizeof self - 1) <= 0) return kCannotIsolate;
  // Everything the child needs is prepared before fork(): between fork and
  // exec only async-signal-safe calls are allowed (libuv's pool has threads).
  std::vector<std::string> env_text;
  for (char** e = environ; *e; ++e) env_text.emplace_back(*e);
  env_text.push_back(std::string(kIsolatedEnv) + "=1");
  std::vector<char*> envp;
  for (auto& s : env_text) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string tag = "[isolated]";
  char* argv[] = {self, tag.data(), nullptr};

  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (unshare(CLONE_NEWNS | CLONE_NEWNET) != 0) _exit(kCannotIsolate);
    // Without MS_PRIVATE the bind mount below would propagate to the host.
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) _exit(kCannotIsolate);
    if (mount(hosts_file.c_str(), "/etc/hosts", nullptr, MS_BIND, nullptr) != 0) _exit(kCannotIsolate);
    // A new network namespace has its loopback down.
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    ifreq ifr{};
    memcpy(ifr.ifr_name, "lo", 3);
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) != 0) _exit(kCannotIsolate);
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) _exit(kCannotIsolate);
    close(s);
    execve(self, argv, envp.data());
    _exit(127);
  }
  const uint64_t deadline = uv_hrtime() + 60ull * 1000000000ull;
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (uv_hrtime() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    usleep(10 * 1000);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool isolated() { return getenv(kIsolatedEnv) != nullptr; }

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
           "192.0.2.1 noroute\n";
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
