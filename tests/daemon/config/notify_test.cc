// sd_notify messages and the watchdog timer, received on a Unix datagram
// socket that the test binds and names in NOTIFY_SOCKET, as systemd does.
#include "systemd/notify.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <vector>

#include "test_support.h"
#include "util/uv_handle.h"

using namespace connmgr::daemon;

namespace {

// A bound datagram socket standing in for systemd's notify socket; sets
// NOTIFY_SOCKET for the test's duration.
class NotifyListener {
 public:
  NotifyListener() : path_(dir_.file("notify")) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    REQUIRE(path_.size() < sizeof a.sun_path);
    strcpy(a.sun_path, path_.c_str());
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    timeval tv{5, 0};  // a generous bound: a message that is sent arrives at once
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  }
  ~NotifyListener() {
    unsetenv("NOTIFY_SOCKET");
    close(fd_);
  }
  int fd() const { return fd_; }

  // The next datagram, or "" after the bound.
  std::string next() {
    char buf[4096];
    const ssize_t n = recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  }
  // The next datagram if one is waiting now.
  std::string pending() {
    char buf[4096];
    const ssize_t n = recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  }

 private:
  connmgr::test::TempDir dir_;
  std::string path_;
  int fd_ = -1;
};

struct WatchdogEnv {
  WatchdogEnv(const std::string& usec, const std::string& pid) {
    setenv("WATCHDOG_USEC", usec.c_str(), 1);
    setenv("WATCHDOG_PID", pid.c_str(), 1);
  }
  ~WatchdogEnv() {
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
  }
};

}  // namespace

TEST_CASE("READY=1 comes with the status line") {
  NotifyListener systemd;
  notify_ready("0 active links, 0 pending, 0 clients");
  CHECK(systemd.next() == "READY=1\nSTATUS=0 active links, 0 pending, 0 clients");
}

TEST_CASE("STATUS= is sent alone") {
  NotifyListener systemd;
  notify_status("3 active links, 2 clients");
  CHECK(systemd.next() == "STATUS=3 active links, 2 clients");
}

TEST_CASE("STOPPING=1 announces the shutdown") {
  NotifyListener systemd;
  notify_stopping();
  const std::string m = systemd.next();
  CHECK(m.rfind("STOPPING=1\n", 0) == 0);
}

TEST_CASE("RELOADING=1 carries the monotonic clock in microseconds") {
  NotifyListener systemd;
  timespec before{};
  clock_gettime(CLOCK_MONOTONIC, &before);
  notify_reloading();
  timespec after{};
  clock_gettime(CLOCK_MONOTONIC, &after);
  const std::string m = systemd.next();
  const std::string prefix = "RELOADING=1\nMONOTONIC_USEC=";
  REQUIRE(m.rfind(prefix, 0) == 0);
  const uint64_t usec = std::stoull(m.substr(prefix.size()));
  auto to_usec = [](const timespec& t) {
    return static_cast<uint64_t>(t.tv_sec) * 1000000u + static_cast<uint64_t>(t.tv_nsec) / 1000u;
  };
  CHECK(usec >= to_usec(before));
  CHECK(usec <= to_usec(after));
}

TEST_CASE("without NOTIFY_SOCKET the notifications do nothing") {
  unsetenv("NOTIFY_SOCKET");
  notify_ready("x");
  notify_status("x");
  notify_reloading();
  notify_stopping();
  SUCCEED("no crash, no error without systemd");
}

TEST_CASE("the watchdog sends WATCHDOG=1 at half of WATCHDOG_USEC from the loop") {
  NotifyListener systemd;
  WatchdogEnv env("200000", std::to_string(getpid()));
  uv_loop_t loop;
  uv_loop_init(&loop);
  Watchdog watchdog;
  REQUIRE(watchdog.start(&loop));
  CHECK(watchdog.running());
  CHECK(watchdog.interval_ms() == 100);

  // Read the notify socket from the same loop, as the pings are sent.
  struct State {
    NotifyListener* systemd;
    std::vector<uint64_t> pings_at_ms;
  } state{&systemd, {}};
  connmgr::UvHandle<uv_poll_t> poll;
  REQUIRE(poll.init(&loop, &state, uv_poll_init, systemd.fd()) == 0);
  uv_poll_start(poll.get(), UV_READABLE, [](uv_poll_t* p, int, int) {
    auto* s = connmgr::UvHandle<uv_poll_t>::owner<State>(p);
    if (!s) return;
    for (std::string m; !(m = s->systemd->pending()).empty();)
      if (m == "WATCHDOG=1") s->pings_at_ms.push_back(uv_now(p->loop));
  });
  const uint64_t started = uv_now(&loop);
  CHECK(connmgr::test::run_until(&loop, [&] { return state.pings_at_ms.size() >= 3; },
                                 std::chrono::seconds(5)));
  REQUIRE(state.pings_at_ms.size() >= 3);
  // The first at once, then one per interval: three within the 200 ms
  // deadline of the second one's, allowing for a slow machine.
  CHECK(state.pings_at_ms[0] - started < 1000);
  CHECK(state.pings_at_ms[2] - state.pings_at_ms[0] >= 150);

  watchdog.stop();
  CHECK_FALSE(watchdog.running());
  poll.close();
  connmgr::test::drain_loop(&loop);
  CHECK(uv_loop_close(&loop) == 0);
  // Stopped means silent: nothing more after two intervals.
  while (!systemd.pending().empty()) {
  }
  usleep(250 * 1000);
  CHECK(systemd.pending().empty());
}

TEST_CASE("the watchdog's timer does not keep the loop alive") {
  NotifyListener systemd;
  WatchdogEnv env("10000000", std::to_string(getpid()));
  uv_loop_t loop;
  uv_loop_init(&loop);
  Watchdog watchdog;
  REQUIRE(watchdog.start(&loop));
  // Only the (unreferenced) watchdog timer is open: uv_run returns at once.
  CHECK(uv_run(&loop, UV_RUN_DEFAULT) == 0);
  watchdog.stop();
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("the watchdog stays off when systemd did not ask for it, or asked another process") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    Watchdog watchdog;
    CHECK_FALSE(watchdog.start(&loop));
    CHECK(watchdog.interval_ms() == 0);
  }
  {
    WatchdogEnv env("200000", std::to_string(getppid()));
    Watchdog watchdog;
    CHECK_FALSE(watchdog.start(&loop));
  }
  CHECK(uv_loop_close(&loop) == 0);
}
