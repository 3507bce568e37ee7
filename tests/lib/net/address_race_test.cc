// AddressRace and order_for_racing: the order of a name's addresses, the
// staggering, and which failure is reported, with attempts played by timers.
#include "net/address_race.h"

#include <catch2/catch.hpp>
#include <memory>

#include "net/socket_address.h"
#include "test_support.h"

using namespace connmgr;
using namespace std::chrono_literals;
using connmgr::test::run_until;

namespace {

sockaddr_storage ip(const std::string& text) {
  sockaddr_storage ss{};
  parse_ip_literal(text, 80, &ss);
  return ss;
}

std::vector<std::string> texts(const std::vector<sockaddr_storage>& addresses) {
  std::vector<std::string> out;
  for (const auto& a : addresses) out.push_back(format_host(reinterpret_cast<const sockaddr*>(&a)));
  return out;
}

// What an address does when dialled: answer after `after`, with `reason`
// ("" = connects), or never.
struct Script {
  std::chrono::milliseconds after;
  std::string reason;
  bool never = false;
};

class Fixture {
 public:
  Fixture() { uv_loop_init(&loop); }
  ~Fixture() {
    race.reset();
    connmgr::test::drain_loop(&loop);
    uv_loop_close(&loop);
  }

  // Races the scripted addresses; returns when the race answered.
  void run(const std::vector<std::pair<std::string, Script>>& scripted, std::chrono::milliseconds delay) {
    std::vector<sockaddr_storage> addresses;
    for (const auto& [text, script] : scripted) addresses.push_back(ip(text));
    race = std::make_unique<AddressRace<std::string>>();
    uv_update_time(&loop);
    t0 = uv_now(&loop);
    race->start(
        &loop, addresses, delay, t0 + 10000, [this](int family) { families.push_back(family); },
        [this, scripted](const sockaddr_storage& a, std::chrono::milliseconds, AddressRace<std::string>::AttemptDone done) {
          const std::string text = format_host(reinterpret_cast<const sockaddr*>(&a));
          uv_update_time(&loop);
          started.emplace_back(text, uv_now(&loop) - t0);
          Script script{};
          for (const auto& [t, s] : scripted)
            if (t == text) script = s;
          auto timer = std::make_shared<Timer>(&loop);
          if (!script.never) {
            timer->start(static_cast<uint64_t>(script.after.count()), [text, script, done] {
              if (script.reason.empty())
                done(text);
              else
                done(Error::connect_failed(text + " failed", script.reason));
            });
          }
          return DialHandle([this, text, timer] {
            cancelled.push_back(text);
            timer->close();
          });
        },
        [this](Result<std::string> r) {
          answered = true;
          if (r.ok())
            winner = r.value();
          else
            error = r.error();
        });
    REQUIRE(run_until(&loop, [&] { return answered; }, 5s));
  }

  uv_loop_t loop{};
  std::unique_ptr<AddressRace<std::string>> race;
  uint64_t t0 = 0;
  std::vector<int> families;
  std::vector<std::pair<std::string, uint64_t>> started;  // address, ms after the start
  std::vector<std::string> cancelled;
  bool answered = false;
  std::string winner;
  Error error;
};

}  // namespace

TEST_CASE("a name's addresses are raced IPv6 first, families interleaved, each family in its order") {
  const auto ordered = order_for_racing(
      {ip("192.0.2.1"), ip("192.0.2.2"), ip("2001:db8::1"), ip("192.0.2.3"), ip("2001:db8::2")});
  CHECK(texts(ordered) == std::vector<std::string>{"2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2",
                                                   "192.0.2.3"});
  CHECK(texts(order_for_racing({ip("192.0.2.1"), ip("192.0.2.2")})) ==
        std::vector<std::string>{"192.0.2.1", "192.0.2.2"});
  CHECK(order_for_racing({}).empty());
}

TEST_CASE_METHOD(Fixture, "an address that neither answers nor fails lets the next start after the delay") {
  run({{"192.0.2.1", {0ms, "", true}}, {"2001:db8::1", {0ms, "", true}}, {"192.0.2.2", {10ms, ""}}}, 100ms);
  CHECK(winner == "192.0.2.2");
  REQUIRE(started.size() == 3);
  CHECK(started[0].first == "2001:db8::1");
  CHECK(started[1].first == "192.0.2.1");
  CHECK(started[1].second >= 95);
  CHECK(started[2].second >= 195);
  CHECK(families == std::vector<int>{AF_INET6, AF_INET, AF_INET});
  // The losers still under way are cancelled (their sockets would close).
  CHECK(cancelled == std::vector<std::string>{"2001:db8::1", "192.0.2.1"});
  CHECK(race->tried() == std::vector<std::string>{"2001:db8::1", "192.0.2.1", "192.0.2.2"});
}

TEST_CASE_METHOD(Fixture, "a failure starts the next address at once") {
  run({{"2001:db8::1", {5ms, "refused"}}, {"192.0.2.1", {5ms, ""}}}, 2000ms);
  CHECK(winner == "192.0.2.1");
  REQUIRE(started.size() == 2);
  CHECK(started[1].second < 1000);
  CHECK(cancelled.empty());
}

TEST_CASE_METHOD(Fixture, "the first success wins, even from an address started earlier") {
  run({{"2001:db8::1", {150ms, ""}}, {"192.0.2.1", {1000ms, ""}}}, 50ms);
  CHECK(winner == "2001:db8::1");
  CHECK(cancelled == std::vector<std::string>{"192.0.2.1"});
}

TEST_CASE_METHOD(Fixture, "when every address fails, the last failure not local_network is reported") {
  run({{"2001:db8::1", {5ms, "refused"}}, {"192.0.2.1", {5ms, "local_network"}}}, 50ms);
  REQUIRE(winner.empty());
  CHECK(error.reason() == "refused");
  CHECK(error.message() == "2001:db8::1 failed");
}

TEST_CASE_METHOD(Fixture, "local_network is reported only when every address failed for it") {
  run({{"2001:db8::1", {5ms, "local_network"}}, {"192.0.2.1", {5ms, "local_network"}}}, 50ms);
  CHECK(error.reason() == "local_network");
  CHECK(error.message() == "192.0.2.1 failed");
}

TEST_CASE_METHOD(Fixture, "a race cancelled or destroyed never answers and cancels its attempts") {
  std::vector<sockaddr_storage> addresses{ip("::1"), ip("127.0.0.1")};
  int attempts = 0;
  bool called = false;
  {
    AddressRace<std::string> r;
    r.start(
        &loop, addresses, 10ms, uv_now(&loop) + 1000, nullptr,
        [&](const sockaddr_storage&, std::chrono::milliseconds, AddressRace<std::string>::AttemptDone) {
          ++attempts;
          return DialHandle([this] { cancelled.push_back("x"); });
        },
        [&](Result<std::string>) { called = true; });
    connmgr::test::run_for(&loop, 50ms);
  }
  connmgr::test::run_for(&loop, 50ms);
  CHECK(attempts == 2);
  CHECK(cancelled.size() == 2);
  CHECK_FALSE(called);
}
