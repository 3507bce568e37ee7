// Resolution: names and literals to socket addresses on the test's loop.
#include "net/resolver.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <catch2/catch.hpp>

#include "net/socket_address.h"
#include "test_support.h"
#include "thread_pool_blocker.h"

using namespace connmgr;
using namespace std::chrono_literals;
using connmgr::test::run_for;
using connmgr::test::run_until;

namespace {

struct Answer {
  int calls = 0;
  std::vector<std::string> addresses;  // "ip:port"
  Error error;
};

class Fixture {
 public:
  Fixture() { uv_loop_init(&loop); }
  ~Fixture() {
    kept.clear();
    connmgr::test::drain_loop(&loop);
    uv_loop_close(&loop);
  }

  // The resolution is `into`, else one the fixture keeps.
  std::shared_ptr<Answer> start(const std::string& host, int port, Resolution* into = nullptr,
                                std::chrono::milliseconds timeout = 0ms) {
    auto a = std::make_shared<Answer>();
    if (!into) into = kept.emplace_back(std::make_unique<Resolution>()).get();
    into->start(&loop, host, port, timeout, [a](Result<std::vector<sockaddr_storage>> r) {
      a->calls++;
      if (!r.ok()) {
        a->error = r.error();
        return;
      }
      for (const auto& ss : *r) a->addresses.push_back(format_host_port(reinterpret_cast<const sockaddr*>(&ss)));
    });
    return a;
  }

  std::shared_ptr<Answer> resolve_now(const std::string& host, int port,
                                      std::chrono::milliseconds timeout = 0ms) {
    auto a = start(host, port, nullptr, timeout);
    REQUIRE(run_until(&loop, [&] { return a->calls > 0; }));
    run_for(&loop, 10ms);  // a second call would show here
    CHECK(a->calls == 1);
    return a;
  }

  uv_loop_t loop{};
  std::vector<std::unique_ptr<Resolution>> kept;
};

}  // namespace

TEST_CASE_METHOD(Fixture, "an IPv4 literal is answered on the next loop turn, with its port") {
  auto a = start("192.0.2.7", 8443);
  CHECK(a->calls == 0);  // never inside start()
  REQUIRE(run_until(&loop, [&] { return a->calls == 1; }));
  CHECK(a->addresses == std::vector<std::string>{"192.0.2.7:8443"});
}

TEST_CASE_METHOD(Fixture, "an IPv6 literal is answered without brackets in, with them out") {
  auto a = resolve_now("::1", 443);
  CHECK(a->addresses == std::vector<std::string>{"[::1]:443"});
}

TEST_CASE_METHOD(Fixture, "localhost resolves through /etc/hosts to loopback addresses") {
  auto a = start("localhost", 80);
  CHECK(a->calls == 0);
  REQUIRE(run_until(&loop, [&] { return a->calls == 1; }));
  REQUIRE_FALSE(a->addresses.empty());
  for (const auto& s : a->addresses) CHECK((s == "127.0.0.1:80" || s == "[::1]:80"));
}

TEST_CASE_METHOD(Fixture, "a name that does not exist is a dns error naming it") {
  auto a = resolve_now("no-such-host.invalid", 80);
  CHECK(a->addresses.empty());
  CHECK(a->error.code() == ErrorCode::kConnectFailed);
  CHECK(a->error.reason() == "dns");
  CHECK(a->error.message().rfind("cannot resolve no-such-host.invalid: ", 0) == 0);
}

TEST_CASE_METHOD(Fixture, "an empty host is a dns error, answered later") {
  auto a = start("", 80);
  CHECK(a->calls == 0);
  REQUIRE(run_until(&loop, [&] { return a->calls == 1; }));
  CHECK(a->error.reason() == "dns");
  CHECK(a->error.message() == "cannot resolve an empty host name");
}

TEST_CASE_METHOD(Fixture, "a cancelled resolution never answers") {
  Resolution literal, name;
  auto a = start("127.0.0.1", 80, &literal);
  auto b = start("localhost", 80, &name);
  literal.cancel();
  name.cancel();
  name.cancel();  // idempotent
  CHECK_FALSE(name.pending());
  run_for(&loop, 200ms);
  CHECK(a->calls == 0);
  CHECK(b->calls == 0);
}

TEST_CASE_METHOD(Fixture, "a resolution destroyed mid-resolution never answers and leaks nothing") {
  // The pool is kept busy so that the getaddrinfo is surely still queued
  // (cancelled) or running (its answer discarded) when the owner goes.
  connmgr::test::ThreadPoolBlocker blocker(&loop, 200ms);
  auto literal = std::make_unique<Resolution>();
  auto name = std::make_unique<Resolution>();
  auto timed = std::make_unique<Resolution>();
  auto a = start("::1", 80, literal.get());
  auto b = start("localhost", 80, name.get());
  auto c = start("localhost", 80, timed.get(), 50ms);
  literal.reset();
  name.reset();
  run_for(&loop, 10ms);
  timed.reset();  // its timeout timer armed
  REQUIRE(blocker.wait_done());
  run_for(&loop, 100ms);
  CHECK(a->calls == 0);
  CHECK(b->calls == 0);
  CHECK(c->calls == 0);
  // Under ASan/LSan a callback into a freed Resolution, or a request never
  // freed, fails the test.
}

TEST_CASE_METHOD(Fixture, "a resolution may be destroyed from its own callback") {
  auto owned = std::make_unique<Resolution>();
  int calls = 0;
  owned->start(&loop, "localhost", 80, 1000ms, [&](Result<std::vector<sockaddr_storage>>) {
    ++calls;
    owned.reset();
  });
  REQUIRE(run_until(&loop, [&] { return calls == 1; }));
  run_for(&loop, 10ms);
  CHECK(calls == 1);
}

TEST_CASE_METHOD(Fixture, "cancelling inside the callback or after it is harmless") {
  Resolution h;
  int calls = 0;
  h.start(&loop, "localhost", 80, 0ms, [&](Result<std::vector<sockaddr_storage>>) {
    ++calls;
    h.cancel();
  });
  REQUIRE(run_until(&loop, [&] { return calls == 1; }));
  h.cancel();
  run_for(&loop, 10ms);
  CHECK(calls == 1);
}

TEST_CASE_METHOD(Fixture, "a resolution that takes longer than its timeout ends with reason timeout") {
  connmgr::test::ThreadPoolBlocker blocker(&loop, 1000ms);
  const uint64_t t0 = uv_hrtime();
  auto a = resolve_now("localhost", 80, 150ms);
  const double ms = static_cast<double>(uv_hrtime() - t0) / 1e6;
  CHECK(a->error.reason() == "timeout");
  CHECK(a->error.message() == "resolving localhost timed out after 150 ms");
  CHECK(ms >= 140);
  CHECK(ms < 900);
  // The queued getaddrinfo is cancelled and freed; ASan shows a leak otherwise.
  REQUIRE(blocker.wait_done());
}
