// NetWatch against the kernel's real notifications. Changing the network is
// only safe in a network of the test's own: each case tagged [.netns] runs
// in a child of this test binary that has entered a new network namespace
// (only a loopback interface, down), as root. Nothing of the host changes.
#include <dirent.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "isolated_namespace.h"
#include "net/netwatch.h"
#include "test_support.h"

using namespace connmgr;
using namespace std::chrono_literals;
using connmgr::test::run_for;
using connmgr::test::run_until;


namespace {

bool in_namespace() { return connmgr::test::isolated(); }

// Runs this binary's test case `name` in a new network namespace whose
// loopback is down ("-w NoTests": a name that matches no case fails instead
// of passing); its exit status, as run_self_isolated's.
int run_in_new_netns(const std::string& name) {
  return connmgr::test::run_self_isolated({name, "-w", "NoTests"}, connmgr::test::Isolation{"", false});
}

void check_in_new_netns(const std::string& name) {
  const int rc = run_in_new_netns(name);
  if (rc == connmgr::test::kCannotIsolate) {
    WARN("skipped: no permission for a network namespace (run as root)");
    return;
  }
  CHECK(rc == 0);  // the child's own report is in this test's output above
}

// Runs `ip` commands (one a line) in this process's network namespace; the
// loop does not run meanwhile, so their notifications queue on the socket.
void ip(const std::string& commands) {
  connmgr::test::TempDir dir;
  const std::string batch = dir.file("batch");
  std::ofstream(batch) << commands << "\n";
  const std::string line = "/usr/sbin/ip -batch " + batch;
  INFO(commands);
  REQUIRE(std::system(line.c_str()) == 0);
}

struct Watched {
  Watched() { uv_loop_init(&loop); }
  ~Watched() {
    watch.reset();
    connmgr::test::drain_loop(&loop);
    uv_loop_close(&loop);
  }
  void start(std::chrono::milliseconds settle) {
    REQUIRE(watch->start(&loop, [this] { ++calls; }, settle).ok());
  }

  uv_loop_t loop{};
  std::unique_ptr<NetWatch> watch = std::make_unique<NetWatch>();
  int calls = 0;
};

// The NetWatch's rtnetlink socket, found among this process's descriptors.
int netlink_route_socket() {
  std::unique_ptr<DIR, int (*)(DIR*)> dir(opendir("/proc/self/fd"), closedir);
  if (!dir) return -1;
  while (dirent* e = readdir(dir.get())) {
    const int fd = atoi(e->d_name);
    int domain = 0, protocol = -1;
    socklen_t len = sizeof domain;
    if (fd <= 2 || getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) continue;
    len = sizeof protocol;
    if (domain == AF_NETLINK && getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) == 0 &&
        protocol == NETLINK_ROUTE)
      return fd;
  }
  return -1;
}

}  // namespace

TEST_CASE("a NetWatch started on the host's network and destroyed at once calls nothing") {
  Watched w;
  w.start(50ms);
  CHECK(w.watch->messages() == 0);
  w.watch.reset();
  run_for(&w.loop, 20ms);
  CHECK(w.calls == 0);
}

TEST_CASE("a NetWatch never started is inert") {
  NetWatch watch;
  CHECK(watch.messages() == 0);
}

TEST_CASE("NetWatch in a network namespace of its own") {
  for (const char* name : {"netns: a link coming up is one change and an address added another",
                           "netns: a burst of changes is one call",
                           "netns: an address announced again unchanged is no change",
                           "netns: a NetWatch destroyed while a change settles calls nothing",
                           "netns: a NetWatch may be destroyed by its own callback",
                           "netns: an overrun of the socket is a change and watching goes on"}) {
    INFO(name);
    check_in_new_netns(name);
  }
}

TEST_CASE("netns: a link coming up is one change and an address added another", "[.netns]") {
  if (!in_namespace()) return;
  Watched w;
  w.start(50ms);
  ip("link set lo up");
  REQUIRE(run_until(&w.loop, [&] { return w.calls == 1; }, 5s));
  CHECK(w.watch->messages() > 0);
  run_for(&w.loop, 200ms);
  CHECK(w.calls == 1);
  ip("addr add 10.9.9.9/24 dev lo");
  REQUIRE(run_until(&w.loop, [&] { return w.calls == 2; }, 5s));
  run_for(&w.loop, 200ms);
  CHECK(w.calls == 2);
}

TEST_CASE("netns: a burst of changes is one call", "[.netns]") {
  if (!in_namespace()) return;
  Watched w;
  w.start(100ms);
  ip("link set lo up\n"
     "addr add 10.9.9.1/24 dev lo\naddr add 10.9.9.2/24 dev lo\naddr add 10.9.9.3/24 dev lo\n"
     "route add 192.0.2.0/24 dev lo\naddr del 10.9.9.2/24 dev lo");
  REQUIRE(run_until(&w.loop, [&] { return w.calls >= 1; }, 5s));
  run_for(&w.loop, 500ms);
  CHECK(w.calls == 1);
  CHECK(w.watch->messages() >= 6);
}

TEST_CASE("netns: an address announced again unchanged is no change", "[.netns]") {
  if (!in_namespace()) return;
  Watched w;
  w.start(50ms);
  ip("link set lo up\naddr add 10.9.9.9/24 dev lo valid_lft 300 preferred_lft 300");
  REQUIRE(run_until(&w.loop, [&] { return w.calls == 1; }, 5s));
  const uint64_t seen = w.watch->messages();
  // The kernel announces the address again (RTM_NEWADDR), with nothing
  // changed but its lifetimes' count-down: what IPv6 does on every router
  // advertisement that refreshes an address.
  ip("addr change 10.9.9.9/24 dev lo valid_lft 300 preferred_lft 300");
  REQUIRE(run_until(&w.loop, [&] { return w.watch->messages() > seen; }, 5s));
  run_for(&w.loop, 200ms);
  CHECK(w.calls == 1);
  // Its flags changing (no longer dynamic) is news.
  ip("addr change 10.9.9.9/24 dev lo valid_lft forever preferred_lft forever");
  CHECK(run_until(&w.loop, [&] { return w.calls == 2; }, 5s));
}

TEST_CASE("netns: a NetWatch destroyed while a change settles calls nothing", "[.netns]") {
  if (!in_namespace()) return;
  Watched w;
  w.start(10s);
  ip("link set lo up");
  REQUIRE(run_until(&w.loop, [&] { return w.watch->messages() > 0; }, 5s));
  w.watch.reset();  // the settle timer is pending
  run_for(&w.loop, 100ms);
  CHECK(w.calls == 0);
}

TEST_CASE("netns: a NetWatch may be destroyed by its own callback", "[.netns]") {
  if (!in_namespace()) return;
  Watched w;
  REQUIRE(w.watch->start(&w.loop, [&] {
    ++w.calls;
    w.watch.reset();
  }, 20ms).ok());
  ip("link set lo up");
  REQUIRE(run_until(&w.loop, [&] { return w.calls == 1; }, 5s));
  CHECK_FALSE(w.watch);
  ip("addr add 10.9.9.9/24 dev lo");
  run_for(&w.loop, 100ms);
  CHECK(w.calls == 1);
}

TEST_CASE("netns: an overrun of the socket is a change and watching goes on", "[.netns]") {
  if (!in_namespace()) return;
  Watched w;
  w.start(50ms);
  const int fd = netlink_route_socket();
  REQUIRE(fd >= 0);
  // The smallest receive buffer the kernel allows: a few notifications.
  const int tiny = 1;
  REQUIRE(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &tiny, sizeof tiny) == 0);
  std::string many = "link set lo up\n";
  for (int i = 1; i <= 200; ++i) many += "addr add 10.9." + std::to_string(i) + ".1/24 dev lo\n";
  ip(many);
  REQUIRE(run_until(&w.loop, [&] { return w.calls == 1; }, 5s));
  CHECK(w.watch->messages() < 200);  // most were lost: the overrun happened
  run_for(&w.loop, 200ms);
  CHECK(w.calls == 1);
  const uint64_t before = w.watch->messages();
  ip("addr add 10.10.10.10/24 dev lo");
  REQUIRE(run_until(&w.loop, [&] { return w.calls == 2; }, 5s));
  CHECK(w.watch->messages() > before);
}
