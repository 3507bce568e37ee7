// The ConnectionManager tests' fixture: a real SQLite file, the real
// TcpConnector, listeners on 127.0.0.1 driven by the same loop.
#pragma once

#include <sqlite3.h>

#include <catch2/catch.hpp>

#include "core/connection_manager.h"
#include "net/tcp_connector.h"
#include "test_support.h"

namespace connmgr::test {

using namespace std::chrono_literals;


struct Answer {
  bool done = false;
  int calls = 0;  // a ConnectDone is called exactly once
  Result<ConnectOutcome> result = Error::internal("no answer");
  std::optional<ConnectFailure> failure;
};

// Reads one endpoint's statistics straight from the file, as another process would.
struct StoredStats {
  int64_t success = -1;
  int64_t failure = -1;
  std::string last_error;
  int64_t uncharged = -1;
  int64_t consecutive = -1;
  std::optional<double> rtt_ms;
};

class Fixture {
 public:
  Fixture() {
    uv_loop_init(&loop);
    StoreOptions so;
    so.path = dir.file("connmgr.db");
    so.flush_interval = 20ms;
    auto s = Store::open(&loop, so);
    REQUIRE(s.ok());
    store = std::move(s).value();
    connectors.add(std::make_unique<TcpConnector>(&loop, TcpOptions{}));
    events.subscribe([this](const Event& e) { seen.push_back(e); });
    ConnectionConfig cfg;
    cfg.connection_timeout = 2000ms;
    cfg.base_retry_interval = 30ms;
    cfg.max_retry_interval = 200ms;
    cfg.max_retry_count = 2;
    manager = std::make_unique<ConnectionManager>(&loop, *store, connectors, events, cfg);
  }

  ~Fixture() {
    manager.reset();
    store->close();
    store.reset();
    connmgr::test::drain_loop(&loop);
    uv_loop_close(&loop);
  }

  std::vector<int64_t> add_node(const std::string& id, std::vector<EndpointSpec> eps) {
    NodeSpec spec;
    spec.id = id;
    spec.endpoints = std::move(eps);
    auto r = store->add_node(spec);
    REQUIRE(r.ok());
    std::vector<int64_t> ids;
    // add_node returns endpoints ranked; map back by port to keep the spec's order.
    for (const auto& want : spec.endpoints)
      for (const auto& got : r->endpoints)
        if (got.port == want.port && got.protocol == want.protocol) ids.push_back(got.id);
    return ids;
  }

  static EndpointSpec tcp(int port, const std::string& address = "127.0.0.1") {
    EndpointSpec e;
    e.protocol = "tcp";
    e.address = address;
    e.port = port;
    return e;
  }

  std::shared_ptr<Answer> start(const ConnectRequest& req) {
    auto a = std::make_shared<Answer>();
    manager->connect(req, [a](Result<ConnectOutcome> r, const ConnectFailure* f) {
      a->done = true;
      a->calls += 1;
      a->result = std::move(r);
      if (f) a->failure = *f;
    });
    return a;
  }

  std::shared_ptr<Answer> connect(const ConnectRequest& req, std::chrono::milliseconds limit = 10s) {
    auto a = start(req);
    REQUIRE(run_until(&loop, [&] { return a->done; }, limit));
    return a;
  }

  static ConnectRequest to_node(const std::string& id) {
    ConnectRequest r;
    r.node_id = id;
    return r;
  }

  StoredStats stats(int64_t endpoint_id) {
    REQUIRE(store->flush().ok());
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(dir.file("connmgr.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
            SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db,
                       "SELECT success_count, failure_count, coalesce(last_error,''), "
                       "uncharged_failure_count, consecutive_failures, rtt_ms "
                       "FROM endpoints WHERE id = ?",
                       -1, &st, nullptr);
    sqlite3_bind_int64(st, 1, endpoint_id);
    StoredStats out;
    if (sqlite3_step(st) == SQLITE_ROW) {
      out.success = sqlite3_column_int64(st, 0);
      out.failure = sqlite3_column_int64(st, 1);
      out.last_error = reinterpret_cast<const char*>(sqlite3_column_text(st, 2));
      out.uncharged = sqlite3_column_int64(st, 3);
      out.consecutive = sqlite3_column_int64(st, 4);
      if (sqlite3_column_type(st, 5) != SQLITE_NULL) out.rtt_ms = sqlite3_column_double(st, 5);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
  }

  int count(EventType type) const {
    int n = 0;
    for (const auto& e : seen) n += e.type == type;
    return n;
  }

  std::vector<Event> of_type(EventType type) const {
    std::vector<Event> out;
    for (const auto& e : seen)
      if (e.type == type) out.push_back(e);
    return out;
  }

  uv_loop_t loop{};
  TempDir dir;
  std::unique_ptr<Store> store;
  ConnectorFactory connectors;
  EventBus events;
  std::vector<Event> seen;
  std::unique_ptr<ConnectionManager> manager;
};

inline RetryOptions retry(int max_attempts, int64_t initial_ms = 30, int64_t max_ms = 200) {
  RetryOptions r;
  r.max_attempts = max_attempts;
  r.initial_delay = std::chrono::milliseconds(initial_ms);
  r.max_delay = std::chrono::milliseconds(max_ms);
  return r;
}


}  // namespace connmgr::test
