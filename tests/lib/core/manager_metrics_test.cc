// The ConnectionManager's metrics (core/manager_metrics.h) move as the things
// they count happen, against real sockets on 127.0.0.1.
#include <catch2/catch.hpp>

#include "manager_fixture.h"

using namespace connmgr;
using namespace std::chrono_literals;
using connmgr::test::BlackholedTcpPort;
using connmgr::test::closed_port;
using connmgr::test::Fixture;
using connmgr::test::retry;
using connmgr::test::run_until;
using connmgr::test::TcpListener;

namespace {

const ProtocolMetrics* of(const ManagerMetrics& m, std::string_view protocol) {
  for (const auto& p : m.protocols)
    if (p.protocol == protocol) return &p;
  return nullptr;
}

uint64_t dials(const ManagerMetrics& m, DialResult r) {
  const ProtocolMetrics* tcp = of(m, "tcp");
  return tcp ? tcp->dials[static_cast<size_t>(r)] : 0;
}

int64_t links(const ManagerMetrics& m, std::string_view protocol, LinkState state) {
  const ProtocolMetrics* p = of(m, protocol);
  return p ? p->links[static_cast<size_t>(state)] : 0;
}

// Every link is counted once, under some protocol and state.
int64_t all_links(const ManagerMetrics& m) {
  int64_t n = 0;
  for (const auto& p : m.protocols)
    for (int64_t c : p.links) n += c;
  return n;
}

}  // namespace

TEST_CASE_METHOD(Fixture, "a link's dial, life and end are counted") {
  TcpListener live(&loop);
  add_node("n1", {tcp(live.port())});
  const ManagerMetrics& m = manager->metrics();
  auto a = connect(to_node("n1"));
  REQUIRE(a->result.ok());
  CHECK(dials(m, DialResult::kSuccess) == 1);
  CHECK(dials(m, DialResult::kFailure) == 0);
  CHECK(of(m, "tcp")->dial_duration.count() == 1);
  CHECK(of(m, "tcp")->dial_duration.sum() < 2.0);
  CHECK(links(m, "tcp", LinkState::kActive) == 1);
  CHECK(all_links(m) == 1);

  manager->disconnect_node("n1");
  CHECK(all_links(m) == 0);
  CHECK(m.disconnects.at("requested") == 1);
  CHECK(m.link_duration.count() == 1);
}

TEST_CASE_METHOD(Fixture, "failed dials are counted by reason, and uncharged ones by why") {
  add_node("n1", {tcp(closed_port())});
  const ManagerMetrics& m = manager->metrics();
  ConnectRequest r = to_node("n1");
  r.retry = retry(3, 20, 20);
  r.wait = true;
  auto a = connect(r);
  REQUIRE_FALSE(a->result.ok());
  CHECK(dials(m, DialResult::kFailure) == 3);
  CHECK(of(m, "tcp")->failures.at("refused") == 3);
  CHECK(of(m, "tcp")->dial_duration.count() == 0);  // successes only
  // The first failure is charged; the two after it fall in the same outage
  // (no success of the class since).
  CHECK(m.uncharged[static_cast<size_t>(UnchargedWhy::kOutage)] == 2);
  CHECK(m.uncharged[static_cast<size_t>(UnchargedWhy::kLocalNetwork)] == 0);
  CHECK(all_links(m) == 0);  // gave up: no link left
}

TEST_CASE_METHOD(Fixture, "a race's outcome and its cancelled loser are counted") {
  BlackholedTcpPort hole;
  TcpListener live(&loop);
  add_node("n1", {tcp(hole.port()), tcp(live.port())});  // equal records: the hole first
  const ManagerMetrics& m = manager->metrics();
  ConnectRequest r = to_node("n1");
  r.timeout = 3000ms;
  auto a = connect(r);
  REQUIRE(a->result.ok());
  CHECK(m.races[static_cast<size_t>(RaceOutcome::kFallback)] == 1);
  CHECK(m.races[static_cast<size_t>(RaceOutcome::kFirst)] == 0);
  CHECK(dials(m, DialResult::kCancelled) == 1);
  CHECK(dials(m, DialResult::kSuccess) == 1);
  CHECK(links(m, "tcp", LinkState::kActive) == 1);
}

TEST_CASE_METHOD(Fixture, "links waiting for a retry are counted as such, and network changes") {
  add_node("n1", {tcp(closed_port())});
  const ManagerMetrics& m = manager->metrics();
  ConnectRequest r = to_node("n1");
  r.reconnect = true;
  r.retry = retry(1, 5000, 5000);
  auto a = connect(r);
  REQUIRE(run_until(&loop, [&] { return links(m, "tcp", LinkState::kWaitingRetry) == 1; }, 5s));
  CHECK(all_links(m) == 1);
  manager->network_changed();
  CHECK(m.network_changes == 1);
  manager->disconnect_node("n1");
  CHECK(all_links(m) == 0);
  CHECK(m.disconnects.empty());  // it was never up
}
