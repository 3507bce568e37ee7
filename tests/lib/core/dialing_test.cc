// Choosing and dialing well, against real sockets on 127.0.0.1: racing a
// node's endpoints, the charging rule, flap damping, network changes and
// explain (docs/guide.md, "Racing a node's endpoints", "Statistics", "Flap
// damping").
#include <uv.h>

#include <catch2/catch.hpp>

#include "manager_fixture.h"

using namespace connmgr;
using namespace std::chrono_literals;
using connmgr::test::Answer;
using connmgr::test::BlackholedTcpPort;
using connmgr::test::closed_port;
using connmgr::test::Fixture;
using connmgr::test::retry;
using connmgr::test::run_for;
using connmgr::test::run_until;
using connmgr::test::TcpListener;

namespace {

double ms_since(uint64_t t0) { return static_cast<double>(uv_hrtime() - t0) / 1e6; }

// A TCP listener on 127.0.0.1 that accepts each connection and closes it at
// once: a link that comes up and drops.
class AcceptAndClose {
 public:
  explicit AcceptAndClose(uv_loop_t* loop) {
    server_ = new uv_tcp_t;
    uv_tcp_init(loop, server_);
    sockaddr_in addr{};
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_bind(server_, reinterpret_cast<sockaddr*>(&addr), 0);
    server_->data = &accepted_;
    uv_listen(reinterpret_cast<uv_stream_t*>(server_), 64, [](uv_stream_t* s, int status) {
      if (status != 0) return;
      auto* c = new uv_tcp_t;
      uv_tcp_init(s->loop, c);
      if (uv_accept(s, reinterpret_cast<uv_stream_t*>(c)) == 0) ++*static_cast<int*>(s->data);
      uv_close(reinterpret_cast<uv_handle_t*>(c),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    });
    sockaddr_storage bound{};
    int len = sizeof bound;
    uv_tcp_getsockname(server_, reinterpret_cast<sockaddr*>(&bound), &len);
    port_ = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  }
  ~AcceptAndClose() {
    server_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(server_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  }
  int port() const { return port_; }
  int accepted() const { return accepted_; }

 private:
  uv_tcp_t* server_ = nullptr;
  int port_ = 0;
  int accepted_ = 0;
};

void set_race(ConnectionManager& m, bool race, std::optional<std::chrono::milliseconds> delay = {}) {
  ConnectionConfig cfg = m.config();
  cfg.race = race;
  cfg.race_delay = delay;
  m.set_config(cfg);
}

std::vector<AttemptRecord> recent_of(ConnectionManager& m, const std::string& node) {
  auto ex = m.explain(node, std::nullopt);
  REQUIRE(ex.ok());
  return ex->recent;
}

}  // namespace

// --- racing ---------------------------------------------------------------------

TEST_CASE_METHOD(Fixture, "a race answers in about the race delay when the best endpoint blackholes") {
  BlackholedTcpPort hole;
  TcpListener live(&loop);
  auto ids = add_node("n1", {tcp(hole.port()), tcp(live.port())});  // equal records: the hole first
  ConnectRequest r = to_node("n1");
  r.timeout = 3000ms;
  const uint64_t t0 = uv_hrtime();
  auto a = connect(r, 10s);
  const double took = ms_since(t0);
  REQUIRE(a->result.ok());
  CHECK(a->result->link.endpoint_id == ids[1]);
  CHECK(a->result->link.attempts == 1);
  CHECK(took >= 240);  // no RTT known: 250 ms
  CHECK(took < 1500);  // not the 3 s timeout
  auto starts = of_type(EventType::kConnecting);
  REQUIRE(starts.size() == 2);
  CHECK(starts[0].endpoint_id == ids[0]);
  CHECK(starts[0].race_offset_ms == 0);
  CHECK(starts[1].endpoint_id == ids[1]);
  REQUIRE(starts[1].race_offset_ms);
  CHECK(*starts[1].race_offset_ms >= 245);
  CHECK(*starts[1].race_offset_ms < 1000);
  // The loser is cancelled, with an event, and counts for nothing.
  auto failed = of_type(EventType::kConnectFailed);
  REQUIRE(failed.size() == 1);
  CHECK(failed[0].endpoint_id == ids[0]);
  CHECK(failed[0].reason == "cancelled");
  auto s = stats(ids[0]);
  CHECK(s.success == 0);
  CHECK(s.failure == 0);
  CHECK(stats(ids[1]).success == 1);
  CHECK(manager->dials_under_way() == 0);
  auto recent = recent_of(*manager, "n1");
  REQUIRE(recent.size() == 2);
  CHECK(recent[0].outcome == "success");
  CHECK(recent[0].endpoint_id == ids[1]);
  CHECK(recent[1].outcome == "cancelled");
  CHECK(recent[1].endpoint_id == ids[0]);
  CHECK_FALSE(recent[1].charged);
}

TEST_CASE_METHOD(Fixture, "the race delay after an endpoint is 1.5 x its smoothed RTT") {
  BlackholedTcpPort hole;
  TcpListener live(&loop);
  auto ids = add_node("n1", {tcp(hole.port()), tcp(live.port())});
  store->record_success(ids[0], 1000, 400.0);  // ranks first, RTT 400 ms: 600 ms
  REQUIRE(store->flush().ok());
  ConnectRequest r = to_node("n1");
  r.timeout = 3000ms;
  const uint64_t t0 = uv_hrtime();
  auto a = connect(r, 10s);
  const double took = ms_since(t0);
  REQUIRE(a->result.ok());
  CHECK(a->result->link.endpoint_id == ids[1]);
  CHECK(took >= 590);  // not the 250 ms of an unknown RTT
  CHECK(took < 2500);  // not the 3 s timeout
  auto starts = of_type(EventType::kConnecting);
  REQUIRE(starts.size() == 2);
  REQUIRE(starts[1].race_offset_ms);
  CHECK(*starts[1].race_offset_ms >= 600);
  // The winner's handshake RTT went into its record.
  CHECK(stats(ids[1]).rtt_ms);
}

TEST_CASE_METHOD(Fixture, "a fixed race_delay paces the race") {
  set_race(*manager, true, 80ms);
  BlackholedTcpPort hole;
  TcpListener live(&loop);
  auto ids = add_node("n1", {tcp(hole.port()), tcp(live.port())});
  ConnectRequest r = to_node("n1");
  r.timeout = 3000ms;
  const uint64_t t0 = uv_hrtime();
  auto a = connect(r, 10s);
  const double took = ms_since(t0);
  REQUIRE(a->result.ok());
  CHECK(a->result->link.endpoint_id == ids[1]);
  CHECK(took >= 75);
  CHECK(took < 1000);
}

TEST_CASE_METHOD(Fixture, "without racing a blackholed best endpoint costs its whole timeout") {
  set_race(*manager, false);
  BlackholedTcpPort hole;
  TcpListener live(&loop);
  auto ids = add_node("n1", {tcp(hole.port()), tcp(live.port())});
  ConnectRequest r = to_node("n1");
  r.timeout = 600ms;
  r.retry = retry(2, 10, 10);
  r.wait = true;
  const uint64_t t0 = uv_hrtime();
  auto a = connect(r, 10s);
  const double took = ms_since(t0);
  REQUIRE(a->result.ok());
  CHECK(a->result->link.endpoint_id == ids[1]);
  CHECK(a->result->link.attempts == 2);
  CHECK(took >= 590);
  CHECK(of_type(EventType::kConnectFailed)[0].reason == "timeout");
  for (const auto& e : of_type(EventType::kConnecting)) CHECK_FALSE(e.race_offset_ms);
}

TEST_CASE_METHOD(Fixture, "a failure in a race starts the next candidate at once") {
  set_race(*manager, true, 3000ms);
  TcpListener live(&loop);
  auto ids = add_node("n1", {tcp(closed_port()), tcp(live.port())});
  const uint64_t t0 = uv_hrtime();
  auto a = connect(to_node("n1"));
  REQUIRE(a->result.ok());
  CHECK(ms_since(t0) < 2500);  // not the 3 s race delay
  CHECK(a->result->link.endpoint_id == ids[1]);
  CHECK(a->result->link.attempts == 1);
  auto failed = of_type(EventType::kConnectFailed);
  REQUIRE(failed.size() == 1);
  CHECK(failed[0].reason == "refused");
  CHECK(stats(ids[0]).failure == 1);
}

TEST_CASE_METHOD(Fixture, "a race whose candidates all fail is one attempt, reported as the best-ranked one's") {
  auto ids = add_node("n1", {tcp(closed_port()), tcp(closed_port())});
  ConnectRequest r = to_node("n1");
  r.retry = retry(2, 20, 20);
  r.wait = true;
  auto a = connect(r);
  REQUIRE_FALSE(a->result.ok());
  REQUIRE(a->failure);
  CHECK(a->failure->attempts == 2);
  CHECK(a->failure->endpoint_id == ids[0]);
  CHECK(a->failure->reason == "refused");
  CHECK(count(EventType::kConnectFailed) == 4);
  CHECK(count(EventType::kRetryScheduled) == 1);
}

TEST_CASE_METHOD(Fixture, "each raced dial waits for a dial slot like any dial") {
  ConnectionConfig cfg = manager->config();
  cfg.max_concurrent_dials = 1;
  cfg.race_delay = 50ms;
  manager->set_config(cfg);
  BlackholedTcpPort hole;
  TcpListener live(&loop);
  auto ids = add_node("n1", {tcp(hole.port()), tcp(live.port())});
  ConnectRequest r = to_node("n1");
  r.timeout = 400ms;
  auto a = start(r);
  run_for(&loop, 200ms);
  CHECK_FALSE(a->done);
  CHECK(manager->dials_under_way() == 1);
  CHECK(manager->dials_waiting() == 1);  // the second candidate, after its race delay
  REQUIRE(run_until(&loop, [&] { return a->done; }, 5s));
  REQUIRE(a->result.ok());  // once the hole's dial timed out and freed the slot
  CHECK(a->result->link.endpoint_id == ids[1]);
  CHECK(of_type(EventType::kConnectFailed)[0].reason == "timeout");
}

// --- charging -------------------------------------------------------------------

TEST_CASE_METHOD(Fixture, "a failing endpoint is charged once between two successes of its class") {
  auto down = add_node("down", {tcp(closed_port())});
  TcpListener live(&loop);
  add_node("up", {tcp(live.port())});
  ConnectRequest r = to_node("down");
  r.retry = retry(5, 5, 5);
  r.wait = true;
  REQUIRE_FALSE(connect(r)->result.ok());
  auto s = stats(down[0]);
  CHECK(s.failure == 1);
  CHECK(s.uncharged == 4);
  CHECK(s.consecutive == 5);
  auto recent = recent_of(*manager, "down");
  REQUIRE(recent.size() == 5);
  CHECK(recent[0].charged);  // the first since the start
  for (size_t i = 1; i < recent.size(); ++i) {
    CHECK(recent[i].outcome == "failure");
    CHECK(recent[i].reason == "refused");
    CHECK_FALSE(recent[i].charged);
  }
  CHECK(manager->network_status().classes[static_cast<size_t>(AddressClass::kTcp4)].state ==
        "unknown");  // a refusal says nothing of our own network
  // A success in the class (another node's): the next failure is charged again.
  REQUIRE(connect(to_node("up"))->result.ok());
  const ClassStatus tcp4 = manager->network_status().classes[static_cast<size_t>(AddressClass::kTcp4)];
  CHECK(tcp4.state == "up");
  CHECK(tcp4.last_success_at);
  REQUIRE_FALSE(connect(r)->result.ok());
  recent = recent_of(*manager, "down");
  REQUIRE(recent.size() == 10);
  CHECK(recent[5].charged);
  for (size_t i = 6; i < recent.size(); ++i) CHECK_FALSE(recent[i].charged);
  s = stats(down[0]);
  CHECK(s.failure == 2);
  CHECK(s.uncharged == 8);
  CHECK(s.consecutive == 10);
}

TEST_CASE_METHOD(Fixture, "a node keeps its last 16 attempts") {
  add_node("n1", {tcp(closed_port())});
  ConnectRequest r = to_node("n1");
  r.retry = retry(20, 1, 1);
  r.wait = true;
  REQUIRE_FALSE(connect(r)->result.ok());
  auto recent = recent_of(*manager, "n1");
  CHECK(recent.size() == 16);
  for (size_t i = 1; i < recent.size(); ++i) CHECK(recent[i].at >= recent[i - 1].at);
  manager->remove_node_links("n1");
  CHECK(recent_of(*manager, "n1").empty());
}

// --- flap damping -----------------------------------------------------------------

TEST_CASE_METHOD(Fixture, "a link that drops before stable_link continues its backoff: growing gaps") {
  AcceptAndClose peer(&loop);
  add_node("n1", {tcp(peer.port())});
  ConnectRequest r = to_node("n1");
  r.reconnect = true;
  r.retry = retry(1, 40, 2000);
  REQUIRE(connect(r)->result.ok());
  REQUIRE(run_until(&loop, [&] { return count(EventType::kRetryScheduled) >= 4; }, 10s));
  auto scheduled = of_type(EventType::kRetryScheduled);
  CHECK(scheduled[0].delay_ms == 40);
  CHECK(scheduled[1].delay_ms == 80);
  CHECK(scheduled[2].delay_ms == 160);
  CHECK(scheduled[3].delay_ms == 320);
  // The dials follow: each gap at least the delay before it.
  auto starts = of_type(EventType::kConnecting);
  REQUIRE(starts.size() >= 4);
  for (size_t i = 1; i < 4; ++i) CHECK(starts[i].at - starts[i - 1].at >= *scheduled[i - 1].delay_ms - 2);
  CHECK(count(EventType::kConnected) >= 4);
  manager->disconnect_node("n1");
}

TEST_CASE_METHOD(Fixture, "a link that was up stable_link restarts its schedule when it drops") {
  ConnectionConfig cfg = manager->config();
  cfg.stable_link = 0ms;  // every link counts as stable
  manager->set_config(cfg);
  AcceptAndClose peer(&loop);
  add_node("n1", {tcp(peer.port())});
  ConnectRequest r = to_node("n1");
  r.reconnect = true;
  r.retry = retry(1, 40, 2000);
  REQUIRE(connect(r)->result.ok());
  REQUIRE(run_until(&loop, [&] { return count(EventType::kRetryScheduled) >= 4; }, 10s));
  for (const auto& e : of_type(EventType::kRetryScheduled)) CHECK(e.delay_ms == 40);
  manager->disconnect_node("n1");
}

// --- network changes --------------------------------------------------------------

TEST_CASE_METHOD(Fixture, "a network change redials a waiting supervised link within a second") {
  const int port = closed_port();
  add_node("sup", {tcp(port)});
  add_node("plain", {tcp(closed_port())});
  ConnectRequest sup = to_node("sup");
  sup.reconnect = true;
  sup.retry = retry(1, 30000, 60000);
  ConnectRequest plain = to_node("plain");
  plain.retry = retry(3, 30000, 60000);
  REQUIRE_FALSE(connect(sup)->result.ok());
  REQUIRE_FALSE(connect(plain)->result.ok());
  REQUIRE(manager->link_of("sup")->state == LinkState::kWaitingRetry);
  const auto before = manager->link_of("plain")->next_attempt_at;

  TcpListener back(&loop);  // a listener elsewhere: the node's port stays refused
  seen.clear();
  manager->network_changed();
  CHECK(manager->network_status().generation == 1);
  auto changed = of_type(EventType::kNetworkChanged);
  REQUIRE(changed.size() == 1);
  CHECK(changed[0].generation == 1);
  CHECK(changed[0].node_id.empty());
  auto scheduled = of_type(EventType::kRetryScheduled);
  REQUIRE(scheduled.size() == 1);  // the supervised link only
  CHECK(scheduled[0].node_id == "sup");
  CHECK(*scheduled[0].delay_ms <= 1000);
  CHECK(manager->link_of("plain")->next_attempt_at == before);
  REQUIRE(run_until(&loop, [&] { return count(EventType::kConnecting) >= 1; }, 3s));
  CHECK(of_type(EventType::kConnecting)[0].attempt == 1);  // backoff restarted
  // It failed again: the schedule starts at initial_delay.
  REQUIRE(run_until(&loop, [&] { return count(EventType::kRetryScheduled) >= 2; }, 3s));
  CHECK(of_type(EventType::kRetryScheduled)[1].delay_ms == 30000);
  for (const auto& c : manager->network_status().classes) CHECK(c.state == "unknown");
  manager->disconnect_node("sup");
  manager->disconnect_node("plain");
}

// --- explain ----------------------------------------------------------------------

TEST_CASE_METHOD(Fixture, "explain's rank 0 is what connect dials when the ranking input changes") {
  TcpListener a_peer(&loop);
  TcpListener b_peer(&loop);
  auto ids = add_node("n1", {tcp(a_peer.port()), tcp(b_peer.port())});
  auto ex = manager->explain("n1", std::nullopt);
  REQUIRE(ex.ok());
  CHECK(ex->decision == Decision::kDial);
  REQUIRE(ex->candidates.size() == 2);
  CHECK(ex->candidates[0].endpoint.id == ids[0]);
  CHECK(ex->candidates[0].rank == 0);
  CHECK(ex->candidates[0].race_offset_ms == 0);
  CHECK(ex->candidates[1].race_offset_ms == 250);
  // The second endpoint gains a record: it ranks first, for both.
  store->record_success(ids[1], 1000);
  store->record_success(ids[1], 2000);
  REQUIRE(store->flush().ok());
  ex = manager->explain("n1", std::nullopt);
  REQUIRE(ex.ok());
  CHECK(ex->candidates[0].endpoint.id == ids[1]);
  CHECK_FALSE(ex->candidates[0].why.empty());
  auto a = connect(to_node("n1"));
  REQUIRE(a->result.ok());
  CHECK(of_type(EventType::kConnecting)[0].endpoint_id == ex->candidates[0].endpoint.id);
  ex = manager->explain("n1", std::nullopt);
  REQUIRE(ex.ok());
  CHECK(ex->decision == Decision::kReuse);
  REQUIRE(ex->link);
  CHECK(ex->link->endpoint_id == ids[1]);
  // A failure now puts it behind, whatever its successes: both follow.
  manager->disconnect_node("n1");
  store->record_failure(ids[1], "refused", 3000, true);
  REQUIRE(store->flush().ok());
  ex = manager->explain("n1", std::nullopt);
  REQUIRE(ex.ok());
  CHECK(ex->decision == Decision::kDial);
  CHECK(ex->candidates[0].endpoint.id == ids[0]);
  CHECK(ex->candidates[1].why[0] == "consecutive_failures 1: ranks after endpoints without");
  seen.clear();
  REQUIRE(connect(to_node("n1"))->result.ok());
  CHECK(of_type(EventType::kConnecting)[0].endpoint_id == ids[0]);
}

TEST_CASE_METHOD(Fixture, "explain says join, wait_retry and no_endpoint as connect would do") {
  BlackholedTcpPort hole;
  add_node("slow", {tcp(hole.port())});
  add_node("refused", {tcp(closed_port())});
  add_node("empty", {});
  ConnectRequest slow = to_node("slow");
  slow.timeout = 2000ms;
  auto pending = start(slow);
  run_for(&loop, 20ms);
  auto ex = manager->explain("slow", std::nullopt);
  REQUIRE(ex.ok());
  CHECK(ex->decision == Decision::kJoin);

  ConnectRequest refused = to_node("refused");
  refused.retry = retry(3, 5000, 5000);
  REQUIRE_FALSE(connect(refused)->result.ok());
  ex = manager->explain("refused", std::nullopt);
  REQUIRE(ex.ok());
  CHECK(ex->decision == Decision::kWaitRetry);
  REQUIRE(ex->backoff);
  CHECK(ex->backoff->attempt == 2);
  CHECK(ex->backoff->delay_ms == 5000);
  CHECK(ex->backoff->next_attempt_at == manager->link_of("refused")->next_attempt_at);
  REQUIRE(ex->recent.size() == 1);
  CHECK(ex->recent[0].reason == "refused");

  ex = manager->explain("empty", std::nullopt);
  REQUIRE(ex.ok());
  CHECK(ex->decision == Decision::kNoEndpoint);
  CHECK(ex->candidates.empty());
  CHECK(manager->explain("nobody", std::nullopt).error().code() == ErrorCode::kNodeNotFound);
  manager->disconnect_node("slow");
  manager->disconnect_node("refused");
}

TEST_CASE_METHOD(Fixture, "explain lists ineligible endpoints without a rank, with why") {
  EndpointSpec quic;
  quic.protocol = "quic";
  quic.address = "127.0.0.1";
  quic.port = 4433;
  TcpListener peer(&loop);
  add_node("n1", {tcp(peer.port()), quic});
  auto ex = manager->explain("n1", std::nullopt);  // no QUIC connector here
  REQUIRE(ex.ok());
  REQUIRE(ex->candidates.size() == 2);
  CHECK(ex->candidates[0].endpoint.protocol == "tcp");
  CHECK(ex->candidates[0].eligible);
  CHECK_FALSE(ex->candidates[0].race_offset_ms);  // one eligible: no race
  CHECK_FALSE(ex->candidates[1].eligible);
  CHECK_FALSE(ex->candidates[1].rank);
  REQUIRE_FALSE(ex->candidates[1].why.empty());
  CHECK(ex->candidates[1].why[0] == "no connector for protocol quic");
  ex = manager->explain("n1", std::string("quic"));
  REQUIRE(ex.ok());
  CHECK(ex->decision == Decision::kNoEndpoint);
  CHECK(ex->candidates[0].why[0] == "protocol tcp not asked (quic)");
}

// --- giving up ------------------------------------------------------------------

TEST_CASE_METHOD(Fixture, "a connect whose attempts are spent publishes gave_up once; a supervised link never does") {
  const int port = closed_port();
  const auto ids = add_node("n1", {tcp(port)});
  ConnectRequest r = to_node("n1");
  r.retry = retry(3, 10, 10);
  r.wait = true;
  auto a = connect(r);
  REQUIRE_FALSE(a->result.ok());
  auto gave_up = of_type(EventType::kGaveUp);
  REQUIRE(gave_up.size() == 1);
  CHECK(gave_up[0].node_id == "n1");
  CHECK(gave_up[0].endpoint_id == ids[0]);
  CHECK(gave_up[0].protocol == "tcp");
  CHECK(gave_up[0].reason == "refused");
  CHECK(gave_up[0].attempt == 3);
  CHECK(of_type(EventType::kConnectFailed).size() == 3);

  add_node("n2", {tcp(port)});
  ConnectRequest s = to_node("n2");
  s.retry = retry(2, 10, 10);
  s.reconnect = true;
  start(s);
  REQUIRE(run_until(&loop, [&] { return count(EventType::kConnectFailed) >= 8; }, 5s));
  CHECK(count(EventType::kGaveUp) == 1);  // still n1's only
  manager->disconnect_node("n2");
}
