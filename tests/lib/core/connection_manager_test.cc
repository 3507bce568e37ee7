// ConnectionManager against real parts: a real SQLite file, the real
// TcpConnector, listeners on 127.0.0.1 driven by the same loop.
#include "core/connection_manager.h"

#include <catch2/catch.hpp>

#include "manager_fixture.h"

using namespace connmgr;
using namespace std::chrono_literals;
using connmgr::test::closed_port;
using connmgr::test::run_for;
using connmgr::test::run_until;
using connmgr::test::TcpListener;
using connmgr::test::TempDir;
using connmgr::test::Answer;
using connmgr::test::Fixture;
using connmgr::test::retry;

TEST_CASE_METHOD(Fixture, "a node connect establishes a link and records the success") {
  TcpListener peer(&loop);
  auto ids = add_node("n1", {tcp(peer.port())});
  auto a = connect(to_node("n1"));
  REQUIRE(a->result.ok());
  const LinkInfo& link = a->result->link;
  CHECK(link.node_id == "n1");
  CHECK(link.endpoint_id == ids[0]);
  CHECK(link.state == LinkState::kActive);
  CHECK(link.protocol == "tcp");
  CHECK(link.port == peer.port());
  CHECK(link.attempts == 1);
  CHECK_FALSE(link.local_address.empty());
  CHECK_FALSE(a->result->reused);
  CHECK(run_until(&loop, [&] { return peer.accepted() == 1; }));
  CHECK(manager->active_count() == 1);
  auto s = stats(ids[0]);
  CHECK(s.success == 1);
  CHECK(s.failure == 0);
  REQUIRE(count(EventType::kConnecting) == 1);
  REQUIRE(count(EventType::kConnected) == 1);
  CHECK(seen[0].type == EventType::kConnecting);
  CHECK(seen[1].type == EventType::kConnected);
  CHECK(seen[1].endpoint_id == ids[0]);
}

TEST_CASE_METHOD(Fixture, "an active link is reused, not dialled again") {
  TcpListener peer(&loop);
  add_node("n1", {tcp(peer.port())});
  REQUIRE(connect(to_node("n1"))->result.ok());
  auto again = connect(to_node("n1"));
  REQUIRE(again->result.ok());
  CHECK(again->result->reused);
  run_for(&loop, 50ms);
  CHECK(peer.accepted() == 1);
  CHECK(count(EventType::kConnecting) == 1);
}

TEST_CASE_METHOD(Fixture, "concurrent connects to one node make one dial") {
  TcpListener peer(&loop);
  add_node("n1", {tcp(peer.port())});
  std::vector<std::shared_ptr<Answer>> answers;
  for (int i = 0; i < 10; ++i) answers.push_back(start(to_node("n1")));
  REQUIRE(run_until(&loop, [&] {
    for (auto& a : answers)
      if (!a->done) return false;
    return true;
  }));
  for (auto& a : answers) REQUIRE(a->result.ok());
  run_for(&loop, 50ms);
  CHECK(peer.accepted() == 1);
  CHECK(count(EventType::kConnecting) == 1);
}

TEST_CASE_METHOD(Fixture, "a refused port fails with reason refused and is recorded") {
  auto ids = add_node("n1", {tcp(closed_port())});
  auto a = connect(to_node("n1"));
  REQUIRE_FALSE(a->result.ok());
  CHECK(a->result.error().code() == ErrorCode::kConnectFailed);
  CHECK(a->result.error().reason() == "refused");
  REQUIRE(a->failure);
  CHECK(a->failure->reason == "refused");
  CHECK(a->failure->attempts == 1);
  CHECK_FALSE(a->failure->retry_scheduled);
  CHECK(a->failure->endpoint_id == ids[0]);
  CHECK_FALSE(manager->has_link("n1"));
  auto s = stats(ids[0]);
  CHECK(s.failure == 1);
  CHECK(s.success == 0);
  CHECK(s.last_error == "refused");
  auto failed = of_type(EventType::kConnectFailed);
  REQUIRE(failed.size() == 1);
  CHECK(failed[0].reason == "refused");
  CHECK(failed[0].attempt == 1);
}

TEST_CASE_METHOD(Fixture, "without wait the answer comes after the first attempt and retries go on") {
  TcpListener peer(&loop);
  const int port = peer.port();
  peer.stop();  // refuses now
  run_for(&loop, 10ms);
  add_node("n1", {tcp(port)});
  ConnectRequest r = to_node("n1");
  r.retry = retry(3, 50, 200);
  auto a = connect(r);
  REQUIRE_FALSE(a->result.ok());
  REQUIRE(a->failure);
  CHECK(a->failure->retry_scheduled);
  CHECK(a->failure->attempts == 1);
  REQUIRE(a->failure->next_attempt_at);
  auto link = manager->link_of("n1");
  REQUIRE(link);
  CHECK(link->state == LinkState::kWaitingRetry);
  CHECK(manager->get_active_connections(false).empty());
  CHECK(manager->get_active_connections(true).size() == 1);
  // The background attempts run and are spent.
  CHECK(run_until(&loop, [&] { return !manager->has_link("n1"); }, 5s));
  CHECK(count(EventType::kConnectFailed) == 3);
  CHECK(count(EventType::kRetryScheduled) == 2);
}

TEST_CASE_METHOD(Fixture, "max_attempts counts every attempt and the schedule follows the formula") {
  auto ids = add_node("n1", {tcp(closed_port())});
  ConnectRequest r = to_node("n1");
  r.retry = retry(4, 40, 100);
  r.wait = true;
  auto a = connect(r);
  REQUIRE_FALSE(a->result.ok());
  REQUIRE(a->failure);
  CHECK(a->failure->attempts == 4);
  CHECK_FALSE(a->failure->retry_scheduled);
  CHECK(count(EventType::kConnecting) == 4);
  CHECK(count(EventType::kConnectFailed) == 4);
  auto scheduled = of_type(EventType::kRetryScheduled);
  REQUIRE(scheduled.size() == 3);
  CHECK(scheduled[0].delay_ms == 40);
  CHECK(scheduled[1].delay_ms == 80);
  CHECK(scheduled[2].delay_ms == 100);  // capped
  CHECK(scheduled[0].attempt == 2);
  // The gaps between attempts are at least the delays (upper bounds generous).
  auto starts = of_type(EventType::kConnecting);
  for (size_t i = 1; i < starts.size(); ++i) {
    const int64_t gap = starts[i].at - starts[i - 1].at;
    CHECK(gap >= *scheduled[i - 1].delay_ms - 2);  // wall clock ms granularity
    CHECK(gap < *scheduled[i - 1].delay_ms + 2000);
  }
  // One charged failure between two successes of the class (none here).
  auto s = stats(ids[0]);
  CHECK(s.failure == 1);
  CHECK(s.uncharged == 3);
  CHECK(s.consecutive == 4);
}

TEST_CASE_METHOD(Fixture, "wait answers when the link comes up during retries") {
  TcpListener first(&loop);
  const int port = first.port();
  first.stop();
  run_for(&loop, 10ms);
  add_node("n1", {tcp(port)});
  ConnectRequest r = to_node("n1");
  r.retry = retry(10, 100, 100);
  r.wait = true;
  auto a = start(r);
  REQUIRE(run_until(&loop, [&] { return count(EventType::kConnectFailed) >= 1; }));
  CHECK_FALSE(a->done);
  // Open a listener on the same port now.
  uv_tcp_t srv;
  uv_tcp_init(&loop, &srv);
  sockaddr_in addr{};
  uv_ip4_addr("127.0.0.1", port, &addr);
  REQUIRE(uv_tcp_bind(&srv, reinterpret_cast<sockaddr*>(&addr), 0) == 0);
  int accepted = 0;
  srv.data = &accepted;
  REQUIRE(uv_listen(reinterpret_cast<uv_stream_t*>(&srv), 8, [](uv_stream_t* s, int) {
            auto* c = new uv_tcp_t;
            uv_tcp_init(s->loop, c);
            uv_accept(s, reinterpret_cast<uv_stream_t*>(c));
            (*static_cast<int*>(s->data))++;
            uv_close(reinterpret_cast<uv_handle_t*>(c),
                     [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
          }) == 0);
  REQUIRE(run_until(&loop, [&] { return a->done; }));
  REQUIRE(a->result.ok());
  CHECK(a->result->link.attempts >= 2);
  uv_close(reinterpret_cast<uv_handle_t*>(&srv), nullptr);
  manager->disconnect_node("n1");
  run_for(&loop, 20ms);
}

TEST_CASE_METHOD(Fixture, "without racing a failing endpoint gives way to the next on the following attempt") {
  ConnectionConfig cfg = manager->config();
  cfg.race = false;
  manager->set_config(cfg);
  TcpListener good(&loop);
  const int bad_port = closed_port();
  auto ids = add_node("n1", {tcp(bad_port), tcp(good.port())});
  // Equal records: the lower id (the bad one) ranks first.
  ConnectRequest r = to_node("n1");
  r.retry = retry(3, 20, 20);
  r.wait = true;
  auto a = connect(r);
  REQUIRE(a->result.ok());
  CHECK(a->result->link.endpoint_id == ids[1]);
  CHECK(a->result->link.attempts == 2);
  auto s_bad = stats(ids[0]);
  auto s_good = stats(ids[1]);
  CHECK(s_bad.failure == 1);
  CHECK(s_good.success == 1);
  // The next connect ranks the good endpoint first by its record.
  manager->disconnect_node("n1");
  auto b = connect(to_node("n1"));
  REQUIRE(b->result.ok());
  CHECK(b->result->link.endpoint_id == ids[1]);
  CHECK(b->result->link.attempts == 1);
}

TEST_CASE_METHOD(Fixture, "an endpoint with a better record is chosen first") {
  TcpListener a_peer(&loop);
  TcpListener b_peer(&loop);
  auto ids = add_node("n1", {tcp(a_peer.port()), tcp(b_peer.port())});
  // Give the second endpoint a success on record.
  store->record_success(ids[1], 1000);
  REQUIRE(store->flush().ok());
  auto a = connect(to_node("n1"));
  REQUIRE(a->result.ok());
  CHECK(a->result->link.endpoint_id == ids[1]);
}

TEST_CASE_METHOD(Fixture, "a preferred protocol picks that protocol's endpoint") {
  TcpListener peer(&loop);
  EndpointSpec q;
  q.protocol = "sctp";
  q.address = "127.0.0.1";
  q.port = 9;
  auto ids = add_node("n1", {q, tcp(peer.port())});
  // sctp ranks first by id, but tcp is asked for.
  ConnectRequest r = to_node("n1");
  r.protocol = "tcp";
  auto a = connect(r);
  REQUIRE(a->result.ok());
  CHECK(a->result->link.protocol == "tcp");
  CHECK(a->result->link.endpoint_id == ids[1]);
}

TEST_CASE_METHOD(Fixture, "a node without endpoints has no usable endpoint") {
  add_node("empty", {});
  auto a = connect(to_node("empty"));
  REQUIRE_FALSE(a->result.ok());
  CHECK(a->result.error().code() == ErrorCode::kNoUsableEndpoint);
  CHECK_FALSE(manager->has_link("empty"));
}

TEST_CASE_METHOD(Fixture, "a protocol the node has no endpoint of is no usable endpoint") {
  EndpointSpec s;
  s.protocol = "sctp";
  s.address = "127.0.0.1";
  s.port = 9;
  add_node("n1", {s});
  ConnectRequest r = to_node("n1");
  r.protocol = "tcp";
  auto a = connect(r);
  REQUIRE_FALSE(a->result.ok());
  CHECK(a->result.error().code() == ErrorCode::kNoUsableEndpoint);
  // A protocol no connector serves is unsupported, whatever the node has.
  ConnectRequest q = to_node("n1");
  q.protocol = "carrier-pigeon";
  auto b = connect(q);
  REQUIRE_FALSE(b->result.ok());
  CHECK(b->result.error().code() == ErrorCode::kUnsupportedProtocol);
}

TEST_CASE_METHOD(Fixture, "an endpoint of an unsupported protocol is refused, naming the protocol") {
  EndpointSpec s;
  s.protocol = "sctp";
  s.address = "127.0.0.1";
  s.port = 9;
  auto ids = add_node("n1", {s});
  ConnectRequest r;
  r.endpoint_id = ids[0];
  auto a = connect(r);
  REQUIRE_FALSE(a->result.ok());
  CHECK(a->result.error().code() == ErrorCode::kUnsupportedProtocol);
  // The daemon answers the protocol as the error's data from the reason.
  CHECK(a->result.error().reason() == "sctp");
  // By node too: its only endpoint has no connector.
  auto b = connect(to_node("n1"));
  REQUIRE_FALSE(b->result.ok());
  CHECK(b->result.error().code() == ErrorCode::kUnsupportedProtocol);
  CHECK(b->result.error().reason() == "sctp");
}

TEST_CASE_METHOD(Fixture, "unknown nodes and endpoints are not found") {
  auto a = connect(to_node("ghost"));
  REQUIRE_FALSE(a->result.ok());
  CHECK(a->result.error().code() == ErrorCode::kNodeNotFound);
  ConnectRequest r;
  r.endpoint_id = 424242;
  auto b = connect(r);
  REQUIRE_FALSE(b->result.ok());
  CHECK(b->result.error().code() == ErrorCode::kEndpointNotFound);
}

TEST_CASE_METHOD(Fixture, "the answer never comes from inside connect()") {
  bool called = false;
  manager->connect(to_node("ghost"), [&](Result<ConnectOutcome>, const ConnectFailure*) {
    called = true;
  });
  CHECK_FALSE(called);
  CHECK(run_until(&loop, [&] { return called; }));
}

TEST_CASE_METHOD(Fixture, "a peer close is detected and the link removed") {
  TcpListener peer(&loop);
  add_node("n1", {tcp(peer.port())});
  REQUIRE(connect(to_node("n1"))->result.ok());
  REQUIRE(run_until(&loop, [&] { return peer.accepted() == 1; }));
  peer.close_all();
  REQUIRE(run_until(&loop, [&] { return count(EventType::kDisconnected) == 1; }));
  CHECK(of_type(EventType::kDisconnected)[0].reason == "closed");
  CHECK_FALSE(manager->has_link("n1"));
}

TEST_CASE_METHOD(Fixture, "a peer reset is detected with reason reset") {
  TcpListener peer(&loop);
  add_node("n1", {tcp(peer.port())});
  REQUIRE(connect(to_node("n1"))->result.ok());
  REQUIRE(run_until(&loop, [&] { return peer.accepted() == 1; }));
  peer.reset_all();
  REQUIRE(run_until(&loop, [&] { return count(EventType::kDisconnected) == 1; }));
  CHECK(of_type(EventType::kDisconnected)[0].reason == "reset");
}

TEST_CASE_METHOD(Fixture, "a supervised link comes back after the peer drops it") {
  TcpListener peer(&loop);
  add_node("n1", {tcp(peer.port())});
  ConnectRequest r = to_node("n1");
  r.reconnect = true;
  REQUIRE(connect(r)->result.ok());
  REQUIRE(run_until(&loop, [&] { return peer.accepted() == 1; }));
  peer.close_all();
  REQUIRE(run_until(&loop, [&] { return count(EventType::kConnected) == 2; }, 5s));
  CHECK(peer.accepted() == 2);
  CHECK(count(EventType::kRetryScheduled) == 1);
  auto link = manager->link_of("n1");
  REQUIRE(link);
  CHECK(link->state == LinkState::kActive);
  CHECK(link->reconnect);
}

TEST_CASE_METHOD(Fixture, "the active and pending counts follow a link through drop, retry and disconnect") {
  // `status` reads these counters on every call, so they are kept, not
  // counted: every transition must move them.
  TcpListener peer(&loop);
  add_node("sup", {tcp(peer.port())});
  add_node("plain", {tcp(peer.port())});
  ConnectRequest r = to_node("sup");
  r.reconnect = true;
  r.retry = retry(3, 200, 200);
  REQUIRE(connect(r)->result.ok());
  REQUIRE(connect(to_node("plain"))->result.ok());
  CHECK(manager->active_count() == 2);
  CHECK(manager->pending_count() == 0);
  REQUIRE(run_until(&loop, [&] { return peer.accepted() == 2; }));
  peer.close_all();
  // "plain" is gone, "sup" waits for its retry.
  REQUIRE(run_until(&loop, [&] { return count(EventType::kRetryScheduled) == 1; }));
  REQUIRE(run_until(&loop, [&] { return !manager->has_link("plain"); }));
  CHECK(manager->active_count() == 0);
  CHECK(manager->pending_count() == 1);
  REQUIRE(run_until(&loop, [&] { return count(EventType::kConnected) == 3; }, 5s));
  CHECK(manager->active_count() == 1);
  CHECK(manager->pending_count() == 0);
  manager->disconnect_node("sup");
  CHECK(manager->active_count() == 0);
  CHECK(manager->pending_count() == 0);
}

TEST_CASE_METHOD(Fixture, "a supervised link keeps retrying past max_attempts until disconnect") {
  TcpListener peer(&loop);
  const int port = peer.port();
  add_node("n1", {tcp(port)});
  ConnectRequest r = to_node("n1");
  r.reconnect = true;
  r.retry = retry(2, 20, 40);
  REQUIRE(connect(r)->result.ok());
  REQUIRE(run_until(&loop, [&] { return peer.accepted() == 1; }));
  peer.stop();
  peer.close_all();
  REQUIRE(run_until(&loop, [&] { return count(EventType::kConnectFailed) >= 4; }, 5s));
  CHECK(manager->has_link("n1"));
  auto out = manager->disconnect_node("n1");
  CHECK_FALSE(out.was_connected);
  CHECK(out.cancelled_attempts);
  const int failed = count(EventType::kConnectFailed);
  run_for(&loop, 150ms);
  CHECK(count(EventType::kConnectFailed) == failed);
}

TEST_CASE_METHOD(Fixture, "a scheduled retry is replaced by an attempt now") {
  add_node("n1", {tcp(closed_port())});
  ConnectRequest r = to_node("n1");
  r.retry = retry(3, 60000, 60000);  // the next attempt would be a minute away
  auto a = connect(r);
  REQUIRE(a->failure);
  CHECK(a->failure->retry_scheduled);
  ConnectRequest now = to_node("n1");
  auto b = connect(now, 3s);
  REQUIRE_FALSE(b->result.ok());
  CHECK(count(EventType::kConnecting) == 2);
  // This request had no retry: its single attempt spent, nothing is scheduled.
  CHECK_FALSE(manager->has_link("n1"));
}

TEST_CASE_METHOD(Fixture, "disconnect during retries cancels the waiter and the timer") {
  add_node("n1", {tcp(closed_port())});
  ConnectRequest r = to_node("n1");
  r.retry = retry(5, 100, 100);
  r.wait = true;
  auto a = start(r);
  REQUIRE(run_until(&loop, [&] { return count(EventType::kRetryScheduled) == 1; }));
  auto out = manager->disconnect_node("n1");
  CHECK_FALSE(out.was_connected);
  CHECK(out.cancelled_attempts);
  REQUIRE(run_until(&loop, [&] { return a->done; }));
  REQUIRE_FALSE(a->result.ok());
  CHECK(a->result.error().code() == ErrorCode::kCancelled);
  run_for(&loop, 250ms);
  CHECK(count(EventType::kConnecting) == 1);
  // Idempotent.
  auto again = manager->disconnect_node("n1");
  CHECK_FALSE(again.was_connected);
  CHECK_FALSE(again.cancelled_attempts);
}

TEST_CASE_METHOD(Fixture, "disconnect closes an active link and the peer sees EOF") {
  TcpListener peer(&loop);
  add_node("n1", {tcp(peer.port())});
  REQUIRE(connect(to_node("n1"))->result.ok());
  REQUIRE(run_until(&loop, [&] { return peer.accepted() == 1; }));
  auto out = manager->disconnect_node("n1");
  CHECK(out.was_connected);
  CHECK_FALSE(out.cancelled_attempts);
  REQUIRE(run_until(&loop, [&] { return peer.eofs_seen() == 1; }));
  auto d = of_type(EventType::kDisconnected);
  REQUIRE(d.size() == 1);
  CHECK(d[0].reason == "requested");
  CHECK(manager->active_count() == 0);
}

TEST_CASE_METHOD(Fixture, "shutdown closes every link, cancels attempts, and peers see EOF") {
  TcpListener peer(&loop);
  for (int i = 0; i < 5; ++i) add_node("n" + std::to_string(i), {tcp(peer.port())});
  for (int i = 0; i < 5; ++i) REQUIRE(connect(to_node("n" + std::to_string(i)))->result.ok());
  add_node("retrying", {tcp(closed_port())});
  ConnectRequest r = to_node("retrying");
  r.retry = retry(10, 1000, 1000);
  r.wait = true;
  auto waiting = start(r);
  REQUIRE(run_until(&loop, [&] { return count(EventType::kRetryScheduled) == 1; }));
  manager->shutdown();
  REQUIRE(run_until(&loop, [&] { return peer.eofs_seen() == 5 && waiting->done; }));
  CHECK(waiting->result.error().code() == ErrorCode::kCancelled);
  auto d = of_type(EventType::kDisconnected);
  REQUIRE(d.size() == 5);
  for (const auto& e : d) CHECK(e.reason == "shutdown");
  // After shutdown, connect answers cancelled.
  auto late = connect(to_node("n0"));
  CHECK(late->result.error().code() == ErrorCode::kCancelled);
}

TEST_CASE_METHOD(Fixture, "a blackholed dial times out within the connect timeout") {
  connmgr::test::BlackholedTcpPort hole;
  const int port = hole.port();
  auto ids = add_node("n1", {tcp(port)});
  ConnectRequest r = to_node("n1");
  r.timeout = 300ms;
  const uint64_t t0 = uv_hrtime();
  auto ans = connect(r, 5s);
  const double took_ms = static_cast<double>(uv_hrtime() - t0) / 1e6;
  REQUIRE_FALSE(ans->result.ok());
  CHECK(ans->result.error().reason() == "timeout");
  CHECK(took_ms >= 250);
  CHECK(took_ms < 3000);
  CHECK(stats(ids[0]).last_error == "timeout");
}

TEST_CASE_METHOD(Fixture, "a connect by endpoint dials that endpoint, not the best one") {
  TcpListener best(&loop);
  TcpListener other(&loop);
  auto ids = add_node("n1", {tcp(best.port()), tcp(other.port())});
  store->record_success(ids[0], 1000);
  REQUIRE(store->flush().ok());
  ConnectRequest r;
  r.endpoint_id = ids[1];
  auto a = connect(r);
  REQUIRE(a->result.ok());
  CHECK(a->result->link.endpoint_id == ids[1]);
  CHECK(run_until(&loop, [&] { return other.accepted() == 1; }));
  CHECK(best.accepted() == 0);
}

TEST_CASE_METHOD(Fixture, "connections list shows active links and, on request, pending ones") {
  TcpListener peer(&loop);
  add_node("up", {tcp(peer.port())});
  add_node("down", {tcp(closed_port())});
  REQUIRE(connect(to_node("up"))->result.ok());
  ConnectRequest r = to_node("down");
  r.retry = retry(3, 60000, 60000);
  connect(r);
  auto active = manager->get_active_connections(false);
  REQUIRE(active.size() == 1);
  CHECK(active[0].node_id == "up");
  CHECK(active[0].rtt_ms.has_value());
  auto all = manager->get_active_connections(true);
  REQUIRE(all.size() == 2);
  CHECK(manager->pending_count() == 1);
  for (const auto& l : all) {
    if (l.node_id == "down") {
      CHECK(l.state == LinkState::kWaitingRetry);
      CHECK(l.next_attempt_at.has_value());
    }
  }
}

TEST_CASE_METHOD(Fixture, "connects beyond max_concurrent_dials wait for a slot, in order") {
  // Two slots; six nodes behind a port that never answers (each dial runs
  // out its 300 ms), and one reachable node asked for last.
  ConnectionConfig cfg = manager->config();
  cfg.max_concurrent_dials = 2;
  manager->set_config(cfg);
  connmgr::test::BlackholedTcpPort hole;
  TcpListener peer(&loop);
  std::vector<std::shared_ptr<Answer>> waiting;
  for (int i = 0; i < 6; ++i) {
    add_node("h" + std::to_string(i), {tcp(hole.port())});
    ConnectRequest r = to_node("h" + std::to_string(i));
    r.timeout = 300ms;
    waiting.push_back(start(r));
  }
  add_node("up", {tcp(peer.port())});
  auto up = start(to_node("up"));
  CHECK(manager->dials_under_way() == 2);
  CHECK(manager->dials_waiting() == 5);
  // Every link is "connecting", queued or not.
  CHECK(manager->pending_count() == 7);
  const uint64_t t0 = uv_hrtime();
  REQUIRE(run_until(&loop, [&] { return up->done; }, 5s));
  const double took_ms = static_cast<double>(uv_hrtime() - t0) / 1e6;
  REQUIRE(up->result.ok());
  // Three pairs of 300 ms timeouts went first: the queue keeps its order.
  CHECK(took_ms >= 850);
  // The last pair's dials may have begun a loop turn apart: "up" takes the
  // first slot freed and can be answered before the other one times out.
  auto all_answered = [&] {
    return std::all_of(waiting.begin(), waiting.end(), [](const auto& w) { return w->done; });
  };
  REQUIRE(run_until(&loop, all_answered, 2s));
  for (const auto& w : waiting) CHECK(w->result.error().reason() == "timeout");
  CHECK(manager->dials_under_way() == 0);
  CHECK(manager->dials_waiting() == 0);
}

TEST_CASE_METHOD(Fixture, "a queued connect that is disconnected frees nothing twice and starts no dial") {
  ConnectionConfig cfg = manager->config();
  cfg.max_concurrent_dials = 1;
  manager->set_config(cfg);
  TcpListener peer(&loop);
  add_node("a", {tcp(peer.port())});
  add_node("b", {tcp(peer.port())});
  add_node("c", {tcp(peer.port())});
  auto a = start(to_node("a"));
  auto b = start(to_node("b"));
  auto c = start(to_node("c"));
  CHECK(manager->dials_waiting() == 2);
  auto out = manager->disconnect_node("b");
  CHECK(out.cancelled_attempts);
  REQUIRE(run_until(&loop, [&] { return a->done && b->done && c->done; }, 5s));
  CHECK(a->result.ok());
  CHECK(b->result.error().code() == ErrorCode::kCancelled);
  CHECK(c->result.ok());
  CHECK(peer.accepted() == 2);
  CHECK(manager->dials_under_way() == 0);
  CHECK(manager->active_count() == 2);
}

TEST_CASE_METHOD(Fixture, "destroying the manager with a retry timer and answers pending calls back nothing later") {
  // A link waiting a minute for its retry, with a `wait` caller on it.
  add_node("down", {tcp(closed_port())});
  ConnectRequest r = to_node("down");
  r.retry = retry(5, 60000, 60000);
  r.wait = true;
  auto waiting = start(r);
  REQUIRE(run_until(&loop, [&] { return count(EventType::kRetryScheduled) == 1; }));
  // An active link, and answers posted for a later loop turn: a reuse and an
  // unknown node.
  TcpListener peer(&loop);
  add_node("up", {tcp(peer.port())});
  REQUIRE(connect(to_node("up"))->result.ok());
  auto reused = start(to_node("up"));
  auto ghost = start(to_node("ghost"));
  REQUIRE_FALSE(reused->done);
  REQUIRE_FALSE(ghost->done);

  manager.reset();
  // Every caller is answered by the destructor, once.
  CHECK(waiting->calls == 1);
  CHECK(waiting->result.error().code() == ErrorCode::kCancelled);
  CHECK(reused->calls == 1);
  REQUIRE(reused->result.ok());
  CHECK(reused->result->reused);
  CHECK(ghost->calls == 1);
  CHECK(ghost->result.error().code() == ErrorCode::kNodeNotFound);
  // Nothing the manager owned calls back afterwards (ASan and LSan check the
  // memory: the timers' handles are freed by their close callbacks).
  const size_t events = seen.size();
  REQUIRE(run_until(&loop, [&] { return peer.eofs_seen() == 1; }));
  run_for(&loop, 100ms);
  CHECK(seen.size() == events);
  CHECK(waiting->calls == 1);
  CHECK(reused->calls == 1);
  CHECK(ghost->calls == 1);
}

TEST_CASE_METHOD(Fixture, "disconnecting a node with its retry timer and answer pending ends both cleanly") {
  // Retries 100 ms apart: a timer that survived the disconnect would dial again.
  add_node("down", {tcp(closed_port())});
  ConnectRequest r = to_node("down");
  r.retry = retry(5, 100, 100);
  r.wait = true;
  auto waiting = start(r);
  REQUIRE(run_until(&loop, [&] { return count(EventType::kRetryScheduled) == 1; }));
  auto out = manager->disconnect_node("down");
  CHECK(out.cancelled_attempts);
  // The cancelled answer is posted, not given from inside disconnect_node().
  CHECK_FALSE(waiting->done);
  // A new link for the node, on a long schedule: an old timer or dial
  // calling back would show up as a second attempt right away.
  ConnectRequest again = to_node("down");
  again.retry = retry(5, 60000, 60000);
  auto second = connect(again);
  REQUIRE(second->failure);
  CHECK(second->failure->retry_scheduled);
  run_for(&loop, 250ms);
  CHECK(waiting->calls == 1);
  CHECK(waiting->result.error().code() == ErrorCode::kCancelled);
  CHECK(count(EventType::kConnecting) == 2);
  // Then the manager goes with the second link's timer pending.
  manager.reset();
  CHECK(second->calls == 1);
  run_for(&loop, 50ms);
  CHECK(count(EventType::kConnecting) == 2);
}

TEST_CASE_METHOD(Fixture, "a supervised link disconnected after a drop, its retry pending, stays gone") {
  TcpListener peer(&loop);
  add_node("n1", {tcp(peer.port())});
  ConnectRequest r = to_node("n1");
  r.reconnect = true;
  r.retry = retry(3, 150, 150);
  REQUIRE(connect(r)->result.ok());
  REQUIRE(run_until(&loop, [&] { return peer.accepted() == 1; }));
  peer.close_all();
  // The drop is handled on a later turn by the link's timer, which then
  // waits for the retry: the disconnect takes it away with the link.
  REQUIRE(run_until(&loop, [&] { return count(EventType::kDisconnected) == 1; }));
  manager->disconnect_node("n1");
  run_for(&loop, 300ms);
  CHECK(peer.accepted() == 1);
  CHECK(count(EventType::kConnecting) == 1);
  CHECK_FALSE(manager->has_link("n1"));
}
