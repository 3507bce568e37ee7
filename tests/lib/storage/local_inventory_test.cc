// The local Inventory backend: writes through the Store, answered on a later
// loop turn, retried under another process's lock.
#include "storage/local_inventory.h"

#include "storage_fixture.h"

using namespace connmgr;
using namespace connmgr::storage_test;

namespace {

NodeSpec node_spec(const std::string& id) {
  NodeSpec spec;
  spec.id = id;
  EndpointSpec e;
  e.protocol = "tcp";
  e.address = "127.0.0.1";
  e.port = 7000;
  spec.endpoints.push_back(e);
  return spec;
}

}  // namespace

TEST_CASE_METHOD(Fixture, "local inventory writes reach the Store and answer on a later turn") {
  open();
  LocalInventory inventory(&loop, *store, 1s);
  std::optional<Result<NodeWithEndpoints>> added;
  inventory.add_node(node_spec("n1"), [&](Result<NodeWithEndpoints> r) { added = std::move(r); });
  CHECK_FALSE(added.has_value());  // never inside the call
  REQUIRE(run_until(&loop, [&] { return added.has_value(); }, 2s));
  REQUIRE(added->ok());
  CHECK((*added)->node.id == "n1");
  REQUIRE((*added)->endpoints.size() == 1);

  std::optional<Result<Endpoint>> ep;
  EndpointSpec spec;
  spec.protocol = "quic";
  spec.address = "::1";
  spec.port = 7001;
  inventory.add_endpoint("n1", spec, [&](Result<Endpoint> r) { ep = std::move(r); });
  REQUIRE(run_until(&loop, [&] { return ep.has_value(); }, 2s));
  REQUIRE(ep->ok());
  CHECK(store->endpoints_of("n1", std::nullopt)->size() == 2);

  std::optional<Status> removed;
  inventory.remove_endpoint((*ep)->id, [&](Status s) { removed = s; });
  REQUIRE(run_until(&loop, [&] { return removed.has_value(); }, 2s));
  CHECK(removed->ok());
  removed.reset();
  inventory.remove_node("n1", [&](Status s) { removed = s; });
  REQUIRE(run_until(&loop, [&] { return removed.has_value(); }, 2s));
  CHECK(removed->ok());
  CHECK(store->get_node("n1").error().code() == ErrorCode::kNodeNotFound);

  const InventoryStatus st = inventory.status();
  CHECK(st.backend == "local");
  CHECK(st.state == InventoryState::kConnected);
  CHECK(st.revision == 0);
  CHECK_FALSE(st.dsn.has_value());
}

TEST_CASE_METHOD(Fixture, "local inventory errors are the Store's") {
  open();
  LocalInventory inventory(&loop, *store, 1s);
  std::optional<Result<NodeWithEndpoints>> first, second;
  inventory.add_node(node_spec("dup"), [&](Result<NodeWithEndpoints> r) { first = std::move(r); });
  inventory.add_node(node_spec("dup"), [&](Result<NodeWithEndpoints> r) { second = std::move(r); });
  REQUIRE(run_until(&loop, [&] { return first && second; }, 2s));
  CHECK(first->ok());
  CHECK(second->error().code() == ErrorCode::kAlreadyExists);
  std::optional<Status> removed;
  inventory.remove_node("ghost", [&](Status s) { removed = s; });
  REQUIRE(run_until(&loop, [&] { return removed.has_value(); }, 2s));
  CHECK(removed->code() == ErrorCode::kNodeNotFound);
  std::optional<Result<Endpoint>> ep;
  inventory.add_endpoint("ghost", node_spec("x").endpoints[0], [&](Result<Endpoint> r) { ep = std::move(r); });
  REQUIRE(run_until(&loop, [&] { return ep.has_value(); }, 2s));
  CHECK(ep->error().code() == ErrorCode::kNodeNotFound);
}

TEST_CASE_METHOD(Fixture, "local inventory retries a write under a foreign lock, then says locked") {
  open();
  LocalInventory inventory(&loop, *store, 150ms);
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  std::optional<Result<NodeWithEndpoints>> added;
  inventory.add_node(node_spec("late"), [&](Result<NodeWithEndpoints> r) { added = std::move(r); });
  REQUIRE(run_until(&loop, [&] { return added.has_value(); }, 3s));
  CHECK(added->error().code() == ErrorCode::kStorage);
  CHECK(added->error().reason() == "locked");
  locker.exec("ROLLBACK");
}

TEST_CASE_METHOD(Fixture, "a local inventory destroyed with writes under way never answers them") {
  open();
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  bool answered = false;
  {
    LocalInventory inventory(&loop, *store, 5s);
    inventory.remove_node("x", [&](Status) { answered = true; });
    connmgr::test::run_for(&loop, 30ms);
    CHECK(inventory.writes_running() == 1);
  }
  locker.exec("COMMIT");
  connmgr::test::run_for(&loop, 50ms);
  CHECK_FALSE(answered);
}
