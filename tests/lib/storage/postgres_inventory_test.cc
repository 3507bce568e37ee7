// The postgres Inventory against a real PostgreSQL 15 (tests/support/
// postgres_server.h): one server for the program, a fresh database per case;
// the cases that stop the server have one of their own.
#include "storage/postgres_inventory.h"

#include <uv.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>

#include "postgres_server.h"
#include "test_support.h"
#include "util/uv_handle.h"

namespace connmgr {
namespace {

using namespace std::chrono_literals;
using test::PostgresServer;
using test::run_until;
using test::TempDir;

// One host: its own SQLite mirror and its postgres Inventory on `loop`.
struct Host {
  Host(uv_loop_t* loop, const std::string& dsn, std::chrono::milliseconds resync = 30s) : loop(loop) {
    StoreOptions so;
    so.path = dir.file("connmgr.db");
    auto s = Store::open(loop, so);
    REQUIRE(s.ok());
    store = std::move(s).value();
    PostgresInventoryOptions po;
    po.dsn = dsn;
    po.resync_interval = resync;
    po.connect_timeout = 3s;
    po.retry_max = 400ms;
    inventory = make_postgres_inventory(loop, *store, po);
    inventory->set_listener([this](const InventoryChange& c) { heard.push_back(c); });
  }
  ~Host() {
    inventory.reset();
    store.reset();
  }
  void start() { inventory->start(); }
  bool connected() const { return inventory->status().state == InventoryState::kConnected; }
  bool caught_up() const {
    const auto s = inventory->status();
    return s.state == InventoryState::kConnected && s.lag_s && *s.lag_s == 0.0;
  }
  bool has_node(const std::string& id) const { return store->get_node(id).ok(); }
  // For failure messages.
  std::string describe() const {
    const auto s = inventory->status();
    return std::string(inventory_state_name(s.state)) + " revision " + std::to_string(s.revision) + " lag " +
           (s.lag_s ? std::to_string(*s.lag_s) : "-") + " error " + s.last_error.value_or("-") + " heard " +
           std::to_string(heard.size());
  }

  Result<NodeWithEndpoints> add_node(const NodeSpec& spec) {
    std::optional<Result<NodeWithEndpoints>> out;
    inventory->add_node(spec, [&](Result<NodeWithEndpoints> r) { out = std::move(r); });
    REQUIRE(run_until(loop, [&] { return out.has_value(); }, 10s));
    return std::move(*out);
  }
  Status remove_node(const std::string& id) {
    std::optional<Status> out;
    inventory->remove_node(id, [&](Status s) { out = std::move(s); });
    REQUIRE(run_until(loop, [&] { return out.has_value(); }, 10s));
    return *out;
  }
  Result<Endpoint> add_endpoint(const std::string& node, const EndpointSpec& spec) {
    std::optional<Result<Endpoint>> out;
    inventory->add_endpoint(node, spec, [&](Result<Endpoint> r) { out = std::move(r); });
    REQUIRE(run_until(loop, [&] { return out.has_value(); }, 10s));
    return std::move(*out);
  }
  Status remove_endpoint(int64_t id) {
    std::optional<Status> out;
    inventory->remove_endpoint(id, [&](Status s) { out = std::move(s); });
    REQUIRE(run_until(loop, [&] { return out.has_value(); }, 10s));
    return *out;
  }

  uv_loop_t* loop;
  TempDir dir;
  std::unique_ptr<Store> store;
  std::unique_ptr<Inventory> inventory;
  std::vector<InventoryChange> heard;
};

struct Loop {
  Loop() { uv_loop_init(&loop); }
  ~Loop() {
    test::drain_loop(&loop);
    uv_loop_close(&loop);
  }
  uv_loop_t loop{};
};

NodeSpec node_spec(const std::string& id, int endpoints = 1) {
  NodeSpec spec;
  spec.id = id;
  spec.name = "name of " + id;
  for (int i = 0; i < endpoints; ++i) spec.endpoints.push_back(EndpointSpec{"tcp", "10.0.0." + std::to_string(i + 1), 4000 + i, {}, {}, {}});
  return spec;
}

TEST_CASE("a DSN's password is found, as a keyword or in a URI's user info") {
  CHECK(*dsn_has_password("host=db user=connmgr password=secret") == true);
  CHECK(*dsn_has_password("postgresql://connmgr:secret@db/inventory") == true);
  CHECK(*dsn_has_password("postgresql://connmgr@db/inventory") == false);
  CHECK(*dsn_has_password("host=db user=connmgr dbname=inventory") == false);
  const auto bad = dsn_has_password("host='db");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code() == ErrorCode::kInvalidParams);
}

TEST_CASE("the DSN shown never holds a password") {
  CHECK(dsn_for_display("host=db user=connmgr password=secret dbname=inv") == "user=connmgr dbname=inv host=db");
  const std::string uri = dsn_for_display("postgresql://connmgr:secret@db:5433/inv");
  CHECK(uri.find("secret") == std::string::npos);
  CHECK(uri.find("port=5433") != std::string::npos);
  CHECK(dsn_for_display("host='db") == "(invalid DSN)");
}

TEST_CASE("the server schema is made once: a second backend finds it and changes nothing") {
  auto& server = PostgresServer::shared();
  const std::string dsn = server.create_database();
  Loop l;
  Host a(&l.loop, dsn);
  a.start();
  REQUIRE(run_until(&l.loop, [&] { return a.caught_up(); }, 15s));
  const std::string before = PostgresServer::scalar(
      dsn, "SELECT string_agg(value || ':' || xmin::text, ',' ORDER BY key) FROM connmgr.meta");
  const std::string objects = PostgresServer::scalar(
      dsn, "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = 'connmgr'");
  Host b(&l.loop, dsn);
  b.start();
  REQUIRE(run_until(&l.loop, [&] { return b.caught_up(); }, 15s));
  CHECK(PostgresServer::scalar(
            dsn, "SELECT string_agg(value || ':' || xmin::text, ',' ORDER BY key) FROM connmgr.meta") == before);
  CHECK(PostgresServer::scalar(dsn, "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                    "WHERE nspname = 'connmgr'") == objects);
  CHECK(PostgresServer::scalar(dsn, "SELECT value FROM connmgr.meta WHERE key = 'schema_version'") == "1");
}

TEST_CASE("two daemons starting together make the schema once") {
  auto& server = PostgresServer::shared();
  const std::string dsn = server.create_database();
  Loop l;
  Host a(&l.loop, dsn);
  Host b(&l.loop, dsn);
  a.start();
  b.start();
  REQUIRE(run_until(&l.loop, [&] { return a.caught_up() && b.caught_up(); }, 15s));
  CHECK(PostgresServer::scalar(dsn, "SELECT count(*) FROM connmgr.meta") == "2");
}

TEST_CASE("two hosts see each other's writes, both ways, by NOTIFY") {
  auto& server = PostgresServer::shared();
  const std::string dsn = server.create_database();
  Loop l;
  // A resync interval far away: only NOTIFY can bring the changes.
  Host a(&l.loop, dsn, 600s);
  Host b(&l.loop, dsn, 600s);
  a.start();
  b.start();
  REQUIRE(run_until(&l.loop, [&] { return a.caught_up() && b.caught_up(); }, 15s));

  auto added = a.add_node(node_spec("n1", 2));
  REQUIRE(added.ok());
  CHECK(added->node.name == std::optional<std::string>("name of n1"));
  REQUIRE(added->endpoints.size() == 2);
  // The answer came from a's mirror: the node is there already.
  CHECK(a.has_node("n1"));
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(run_until(&l.loop, [&] { return b.has_node("n1") && b.store->endpoints_of("n1", {})->size() == 2; }, 5s));
  const auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("propagation a -> b after the write's answer: %.1f ms\n", ms);
  // Ids are the server's: the same on both hosts.
  auto on_b = b.store->node_with_endpoints("n1", {});
  REQUIRE(on_b.ok());
  std::vector<int64_t> ids_a, ids_b;
  for (auto& e : added->endpoints) ids_a.push_back(e.id);
  for (auto& e : on_b->endpoints) ids_b.push_back(e.id);
  std::sort(ids_a.begin(), ids_a.end());
  std::sort(ids_b.begin(), ids_b.end());
  CHECK(ids_a == ids_b);

  auto ep = b.add_endpoint("n1", EndpointSpec{"quic", "192.0.2.7", 443, std::string("peer.example"), std::string("h3"), {}});
  REQUIRE(ep.ok());
  CHECK(ep->server_name == std::optional<std::string>("peer.example"));
  REQUIRE(run_until(&l.loop, [&] { return a.store->get_endpoint(ep->id).ok(); }, 5s));
  CHECK(a.store->get_endpoint(ep->id)->alpn == std::optional<std::string>("h3"));

  REQUIRE(b.remove_endpoint(ep->id).ok());
  REQUIRE(run_until(&l.loop, [&] { return !a.store->get_endpoint(ep->id).ok(); }, 5s));

  // Every host hears every change, in revision order, the writer included.
  REQUIRE(run_until(&l.loop, [&] { return a.heard.size() == b.heard.size() && a.heard.size() >= 5; }, 5s));
  for (size_t i = 0; i < a.heard.size(); ++i) {
    CHECK(a.heard[i].revision == b.heard[i].revision);
    if (i > 0) CHECK(a.heard[i].revision > a.heard[i - 1].revision);
  }
  CHECK(a.inventory->status().revision == b.inventory->status().revision);
}

TEST_CASE("a removal reaches every host, and its listener hears node_removed") {
  auto& server = PostgresServer::shared();
  const std::string dsn = server.create_database();
  Loop l;
  Host a(&l.loop, dsn, 600s);
  Host b(&l.loop, dsn, 600s);
  a.start();
  b.start();
  REQUIRE(run_until(&l.loop, [&] { return a.caught_up() && b.caught_up(); }, 15s));
  REQUIRE(a.add_node(node_spec("gone", 1)).ok());
  REQUIRE(run_until(&l.loop, [&] { return b.has_node("gone"); }, 5s));
  b.heard.clear();
  REQUIRE(a.remove_node("gone").ok());
  CHECK_FALSE(a.has_node("gone"));
  const bool gone = run_until(&l.loop, [&] { return !b.has_node("gone"); }, 5s);
  INFO("a: " << a.describe() << "; b: " << b.describe());
  REQUIRE(gone);
  REQUIRE(run_until(&l.loop, [&] {
    return std::any_of(b.heard.begin(), b.heard.end(), [](const InventoryChange& c) {
      return c.kind == InventoryChange::Kind::kNodeRemoved && c.node_id == "gone";
    });
  }, 5s));
}

TEST_CASE("the server's answers map to the store's errors") {
  auto& server = PostgresServer::shared();
  const std::string dsn = server.create_database();
  Loop l;
  Host a(&l.loop, dsn);
  a.start();
  REQUIRE(run_until(&l.loop, [&] { return a.caught_up(); }, 15s));
  REQUIRE(a.add_node(node_spec("x", 1)).ok());
  CHECK(a.add_node(node_spec("x", 0)).error().code() == ErrorCode::kAlreadyExists);
  CHECK(a.add_endpoint("x", node_spec("x", 1).endpoints[0]).error().code() == ErrorCode::kAlreadyExists);
  CHECK(a.add_endpoint("nobody", node_spec("x", 1).endpoints[0]).error().code() == ErrorCode::kNodeNotFound);
  CHECK(a.remove_node("nobody").code() == ErrorCode::kNodeNotFound);
  CHECK(a.remove_endpoint(987654).code() == ErrorCode::kEndpointNotFound);
  // A node whose endpoints clash is not written at all.
  auto twice = node_spec("y", 1);
  twice.endpoints.push_back(twice.endpoints[0]);
  CHECK(a.add_node(twice).error().code() == ErrorCode::kAlreadyExists);
  CHECK_FALSE(a.has_node("y"));
  CHECK(PostgresServer::scalar(dsn, "SELECT count(*) FROM connmgr.nodes WHERE id = 'y'") == "0");
  // Names and addresses with quotes, commas and braces reach the server as given.
  NodeSpec odd;
  odd.id = "odd\"node, {1}";
  odd.endpoints.push_back(EndpointSpec{"tcp", "host\\name,\"x\"", 1, std::string("NULL"), {}, {}});
  auto r = a.add_node(odd);
  REQUIRE(r.ok());
  CHECK(r->endpoints.at(0).address == "host\\name,\"x\"");
  CHECK(r->endpoints.at(0).server_name == std::optional<std::string>("NULL"));
}

TEST_CASE("statistics stay on their host, and survive a full resync") {
  auto& server = PostgresServer::shared();
  const std::string dsn = server.create_database();
  Loop l;
  Host a(&l.loop, dsn, 600s);
  Host b(&l.loop, dsn, 600s);
  a.start();
  b.start();
  REQUIRE(run_until(&l.loop, [&] { return a.caught_up() && b.caught_up(); }, 15s));
  auto added = a.add_node(node_spec("s", 1));
  REQUIRE(added.ok());
  const int64_t id = added->endpoints.at(0).id;
  REQUIRE(run_until(&l.loop, [&] { return b.store->get_endpoint(id).ok(); }, 5s));
  a.store->record_success(id, 1000, 12.5);
  REQUIRE(a.store->flush().ok());
  CHECK(a.store->get_endpoint(id)->success_count == 1);
  CHECK(b.store->get_endpoint(id)->success_count == 0);
  // The server never holds statistics.
  CHECK(PostgresServer::scalar(dsn, "SELECT count(*) FROM information_schema.columns WHERE table_schema = "
                                    "'connmgr' AND column_name = 'success_count'") == "0");

  // Another inventory under a's mirror (re-created schema): a full resync,
  // which keeps the endpoint's statistics when it survives.
  PostgresServer::query(dsn, "UPDATE connmgr.meta SET value = 'another' WHERE key = 'inventory_id'");
  a.heard.clear();
  PostgresServer::query(dsn, "INSERT INTO connmgr.nodes (id) VALUES ('t')");
  const bool resynced = run_until(&l.loop, [&] {
    return std::any_of(a.heard.begin(), a.heard.end(),
                       [](const InventoryChange& c) { return c.kind == InventoryChange::Kind::kResync; });
  }, 10s);
  INFO("a: " << a.describe());
  REQUIRE(resynced);
  REQUIRE(run_until(&l.loop, [&] { return a.has_node("t"); }, 5s));
  CHECK(a.store->get_endpoint(id)->success_count == 1);
  CHECK(a.store->get_endpoint(id)->rtt_ms == std::optional<double>(12.5));
}

TEST_CASE("a pruned log past the mirror's revision brings a full resync") {
  auto& server = PostgresServer::shared();
  const std::string dsn = server.create_database();
  Loop l;
  Host a(&l.loop, dsn);
  a.start();
  REQUIRE(run_until(&l.loop, [&] { return a.caught_up(); }, 15s));
  REQUIRE(a.add_node(node_spec("keep", 1)).ok());
  REQUIRE(a.add_node(node_spec("drop", 1)).ok());
  a.inventory.reset();  // a's host is off while others work

  PostgresServer::query(dsn, "DELETE FROM connmgr.nodes WHERE id = 'drop'; "
                             "INSERT INTO connmgr.nodes (id, name) VALUES ('new', 'n'); "
                             "SELECT connmgr.prune_changes(clock_timestamp() + interval '1 hour')");
  CHECK(PostgresServer::scalar(dsn, "SELECT count(*) FROM connmgr.changes") == "1");

  PostgresInventoryOptions po;
  po.dsn = dsn;
  a.inventory = make_postgres_inventory(&l.loop, *a.store, po);
  a.heard.clear();
  a.inventory->set_listener([&](const InventoryChange& c) { a.heard.push_back(c); });
  a.inventory->start();
  REQUIRE(run_until(&l.loop, [&] { return a.caught_up(); }, 15s));
  CHECK(a.has_node("keep"));
  CHECK(a.has_node("new"));
  CHECK_FALSE(a.has_node("drop"));
  REQUIRE(a.heard.size() >= 2);
  CHECK(a.heard[0].kind == InventoryChange::Kind::kNodeRemoved);
  CHECK(a.heard[0].node_id == "drop");
  CHECK(a.heard[1].kind == InventoryChange::Kind::kResync);
  CHECK(a.heard[1].revision == a.inventory->status().revision);
}

TEST_CASE("with the server stopped, writes fail at once and reads go on; restarted, the mirror catches up") {
  PostgresServer server;  // its own: this case stops it
  const std::string dsn = server.create_database();
  Loop l;
  Host a(&l.loop, dsn, 600s);
  Host b(&l.loop, dsn, 600s);
  a.start();
  b.start();
  REQUIRE(run_until(&l.loop, [&] { return a.caught_up() && b.caught_up(); }, 15s));
  REQUIRE(a.add_node(node_spec("before", 1)).ok());
  REQUIRE(run_until(&l.loop, [&] { return b.has_node("before"); }, 5s));

  server.stop();
  REQUIRE(run_until(&l.loop, [&] { return !a.connected() && !b.connected(); }, 5s));
  const auto t0 = std::chrono::steady_clock::now();
  auto r = a.add_node(node_spec("during", 0));
  const auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == ErrorCode::kStorage);
  CHECK(r.error().reason() == "unavailable");
  CHECK(r.error().message().rfind("inventory server unavailable: ", 0) == 0);
  CHECK(ms < 100);
  CHECK(a.remove_node("before").reason() == "unavailable");
  // Reads are the mirror's.
  CHECK(a.has_node("before"));
  CHECK(a.store->endpoints_of("before", {})->size() == 1);
  const auto st = a.inventory->status();
  CHECK(st.state != InventoryState::kConnected);
  REQUIRE(st.last_error.has_value());
  CHECK(st.dsn == dsn_for_display(dsn));

  server.start();
  // Changes made while a and b were away reach them on reconnection.
  PostgresServer::query(dsn, "INSERT INTO connmgr.nodes (id) VALUES ('while_away')");
  REQUIRE(run_until(&l.loop, [&] { return a.caught_up() && b.caught_up(); }, 10s));
  CHECK(a.has_node("while_away"));
  CHECK(b.has_node("while_away"));
  REQUIRE(a.add_node(node_spec("after", 0)).ok());
  REQUIRE(run_until(&l.loop, [&] { return b.has_node("after"); }, 5s));
}

TEST_CASE("a server that is not there leaves the backend unavailable, retrying") {
  const int port = test::closed_port();
  Loop l;
  Host a(&l.loop, "host=127.0.0.1 port=" + std::to_string(port) + " user=postgres dbname=none");
  a.start();
  REQUIRE(run_until(&l.loop, [&] { return a.inventory->status().state == InventoryState::kUnavailable; }, 5s));
  const auto st = a.inventory->status();
  REQUIRE(st.last_error.has_value());
  CHECK(st.last_error->find("refused") != std::string::npos);
  CHECK(a.add_node(node_spec("n", 0)).error().reason() == "unavailable");
}

TEST_CASE("a DSN that holds a password is never used") {
  Loop l;
  Host a(&l.loop, "host=127.0.0.1 port=1 user=postgres password=secret");
  a.start();
  const auto st = a.inventory->status();
  CHECK(st.state == InventoryState::kUnavailable);
  REQUIRE(st.last_error.has_value());
  CHECK(st.last_error->find("pgpass") != std::string::npos);
  CHECK(st.dsn->find("secret") == std::string::npos);
  auto r = a.add_node(node_spec("n", 0));
  CHECK(r.error().reason() == "unavailable");
  CHECK(r.error().message().find("secret") == std::string::npos);
}

TEST_CASE("a host name in the DSN is resolved on the loop's resolver") {
  auto& server = PostgresServer::shared();
  const std::string dsn = server.create_database();
  const std::string by_name = "host=localhost port=" + std::to_string(server.port()) + " user=postgres dbname=" +
                              dsn.substr(dsn.rfind('=') + 1);
  Loop l;
  // A 1 ms timer: the loop keeps turning while the name is resolved.
  int ticks = 0;
  connmgr::Timer ticker(&l.loop);
  ticker.start(1, [&] { ++ticks; }, 1);
  Host a(&l.loop, by_name);
  a.start();
  REQUIRE(run_until(&l.loop, [&] { return a.caught_up(); }, 15s));
  CHECK(ticks > 0);
  REQUIRE(a.add_node(node_spec("by_name", 0)).ok());
  CHECK(a.inventory->status().dsn->find("host=localhost") != std::string::npos);
}

TEST_CASE("a full resync of 100,000 nodes keeps the loop turning") {
  auto& server = PostgresServer::shared();
  const std::string dsn = server.create_database();
  constexpr int kNodes = 100000;
  Loop l;
  {
    // The schema, then the nodes straight into the server.
    Host maker(&l.loop, dsn);
    maker.start();
    REQUIRE(run_until(&l.loop, [&] { return maker.caught_up(); }, 15s));
  }
  PostgresServer::query(dsn, "INSERT INTO connmgr.nodes (id, name) SELECT 'node-' || lpad(i::text, 6, '0'), "
                             "'n' || i FROM generate_series(1, " + std::to_string(kNodes) + ") i; "
                             "INSERT INTO connmgr.endpoints (node_id, protocol, address, port) "
                             "SELECT id, 'tcp', '10.1.0.1', 7000 FROM connmgr.nodes");
  Host a(&l.loop, dsn, 600s);
  uint64_t last = 0, worst = 0;
  connmgr::Timer ticker(&l.loop);
  ticker.start(1, [&] {
    const uint64_t now = uv_hrtime();
    if (last) worst = std::max(worst, now - last);
    last = now;
  }, 1);
  const auto t0 = std::chrono::steady_clock::now();
  a.start();
  REQUIRE(run_until(&l.loop, [&] { return a.caught_up(); }, 120s));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ticker.stop();
  std::printf("full resync: %d nodes (+%d endpoints) in %.2f s = %.0f nodes/s; worst loop gap %.1f ms\n", kNodes,
              kNodes, s, kNodes / s, static_cast<double>(worst) / 1e6);
  CHECK(a.store->counts()->nodes == kNodes);
  CHECK(a.store->counts()->endpoints == kNodes);
  CHECK(worst < 50'000'000ull);
}

}  // namespace
}  // namespace connmgr
