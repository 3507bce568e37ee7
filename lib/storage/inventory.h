// Inventory: where the nodes and endpoints come from, and where writes to
// them go (docs/operations.md, "Running a fleet").
//
// Two backends:
//   local     the SQLite file is the inventory (the default): writes go to
//             the Store, retried while another process holds its lock.
//   postgres  a PostgreSQL server holds a fleet's shared inventory and a
//             change log with one revision counter; the SQLite file is this
//             host's mirror of it (plus this host's own statistics, which
//             never leave the host). Writes go to the server and are applied
//             to the mirror before they are answered; changes made through
//             other hosts arrive by LISTEN/NOTIFY and by reading the log.
// Reads never go through the Inventory: every read and every endpoint
// choice reads the local Store, and so works with the server away.
//
// Ownership and threads: used from the loop thread only; borrows the loop and
// the Store, which must outlive it. Callbacks are called on the loop thread,
// exactly once, never from inside the call that started them. Destroying the
// Inventory cancels the writes under way (their callbacks are not called).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "storage/endpoint.h"
#include "storage/node.h"
#include "util/error.h"

namespace connmgr {

enum class InventoryState {
  kConnected,    // local: always; postgres: the server answers
  kConnecting,   // the first connection, or a reconnection, is under way
  kUnavailable,  // the last try failed; the next one is scheduled
};
inline std::string_view inventory_state_name(InventoryState state) {
  switch (state) {
    case InventoryState::kConnected: return "connected";
    case InventoryState::kConnecting: return "connecting";
    case InventoryState::kUnavailable: return "unavailable";
  }
  return "unavailable";
}

// status.inventory.
struct InventoryStatus {
  std::string backend;  // "local" | "postgres"
  InventoryState state = InventoryState::kConnected;
  int64_t revision = 0;  // the last revision applied to the mirror; 0 before any
  // Seconds since the mirror was last known to be current (postgres only:
  // 0 while connected and caught up).
  std::optional<double> lag_s;
  std::optional<std::string> dsn;  // postgres: the DSN, never with a password
  std::optional<std::string> last_error;  // why the last try failed
};

// One revision applied to the local mirror (postgres). Each is one local
// transaction; the listener hears of it after it committed.
struct InventoryChange {
  enum class Kind { kNodeAdded, kNodeRemoved, kEndpointAdded, kEndpointRemoved, kResync };
  Kind kind = Kind::kNodeAdded;
  int64_t revision = 0;
  std::string node_id;  // empty for kResync
  std::optional<int64_t> endpoint_id;  // the endpoint kinds
};
inline std::string_view inventory_change_kind_name(InventoryChange::Kind kind) {
  switch (kind) {
    case InventoryChange::Kind::kNodeAdded: return "node_added";
    case InventoryChange::Kind::kNodeRemoved: return "node_removed";
    case InventoryChange::Kind::kEndpointAdded: return "endpoint_added";
    case InventoryChange::Kind::kEndpointRemoved: return "endpoint_removed";
    case InventoryChange::Kind::kResync: return "resync";
  }
  return "resync";
}

class Inventory {
 public:
  using NodeDone = std::function<void(Result<NodeWithEndpoints>)>;
  using EndpointDone = std::function<void(Result<Endpoint>)>;
  using Done = std::function<void(Status)>;
  using ChangeListener = std::function<void(const InventoryChange&)>;

  virtual ~Inventory() = default;

  // Starts whatever the backend needs (postgres: connecting, in the
  // background). Reads work before it and without it.
  virtual void start() {}

  // Writes, answered once the change is in the local mirror. Errors as the
  // Store's (kAlreadyExists, kNodeNotFound, kEndpointNotFound, kStorage
  // "locked"/...); postgres adds kStorage (-32020) with reason
  // "unavailable", at once, when the server cannot be used now (down,
  // refusing, authentication failed): a write is never queued.
  virtual void add_node(const NodeSpec& spec, NodeDone done) = 0;
  virtual void remove_node(const std::string& node_id, Done done) = 0;
  virtual void add_endpoint(const std::string& node_id, const EndpointSpec& spec,
                            EndpointDone done) = 0;
  virtual void remove_endpoint(int64_t endpoint_id, Done done) = 0;

  virtual InventoryStatus status() const = 0;

  // Hears every change applied to the mirror, the ones this host wrote
  // included, in revision order (the daemon sends inventory_changed events
  // and closes the links of removed nodes). The local backend has none.
  void set_listener(ChangeListener listener) { listener_ = std::move(listener); }

 protected:
  void notify(const InventoryChange& change) {
    if (listener_) listener_(change);
  }

 private:
  ChangeListener listener_;
};

}  // namespace connmgr
