#include "storage/local_inventory.h"

#include <optional>
#include <utility>

namespace connmgr {

LocalInventory::LocalInventory(uv_loop_t* loop, Store& store, std::chrono::milliseconds lock_limit)
    : loop_(loop), store_(store), lock_limit_(lock_limit) {}

// A write that returns a value keeps the last attempt's value beside the
// retry (WriteRetry's write returns a Status only); `done` gets it once.
void LocalInventory::add_node(const NodeSpec& spec, NodeDone done) {
  auto added = std::make_shared<std::optional<NodeWithEndpoints>>();
  retries_.start(
      loop_, lock_limit_,
      [this, spec, added]() -> Status {
        auto r = store_.add_node(spec);
        if (!r) return r.error();
        *added = std::move(r).value();
        return ok_status();
      },
      [added, done = std::move(done)](Status st) {
        if (!st.ok()) return done(std::move(st));
        done(std::move(**added));
      });
}

void LocalInventory::remove_node(const std::string& node_id, Done done) {
  retries_.start(loop_, lock_limit_, [this, node_id] { return store_.remove_node(node_id); },
                 std::move(done));
}

void LocalInventory::add_endpoint(const std::string& node_id, const EndpointSpec& spec,
                                  EndpointDone done) {
  auto added = std::make_shared<std::optional<Endpoint>>();
  retries_.start(
      loop_, lock_limit_,
      [this, node_id, spec, added]() -> Status {
        auto r = store_.add_endpoint(node_id, spec);
        if (!r) return r.error();
        *added = std::move(r).value();
        return ok_status();
      },
      [added, done = std::move(done)](Status st) {
        if (!st.ok()) return done(std::move(st));
        done(std::move(**added));
      });
}

void LocalInventory::remove_endpoint(int64_t endpoint_id, Done done) {
  retries_.start(loop_, lock_limit_, [this, endpoint_id] { return store_.remove_endpoint(endpoint_id); },
                 std::move(done));
}

InventoryStatus LocalInventory::status() const {
  InventoryStatus s;
  s.backend = "local";
  s.state = InventoryState::kConnected;
  s.lag_s = 0.0;
  return s;
}

}  // namespace connmgr
