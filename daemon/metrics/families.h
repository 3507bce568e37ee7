// The daemon's metrics: every family connmgrd exposes, read from the
// counters its parts keep as things happen (ManagerMetrics, the
// Dispatcher's request counts, the Store's flush histogram, the server's
// client count) and written in the format asked for. Rendering reads a few
// dozen numbers: its cost does not grow with links, nodes or streams.
//
// docs/operations.md ("Metrics") lists every family; this file is where
// they are spelled.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "metrics/exposition.h"
#include "storage/inventory.h"

namespace connmgr {
class ConnectionManager;
class Store;
}  // namespace connmgr

namespace connmgr::rpc {
class Dispatcher;
}

namespace connmgr::metrics {

struct Sources {
  std::string version;
  Store* store = nullptr;
  const ConnectionManager* manager = nullptr;
  const rpc::Dispatcher* dispatcher = nullptr;
  // The protocols with a connector: their rows appear from the start (zeros).
  std::vector<std::string> protocols;
  std::function<size_t()> rpc_clients;
  // Writes the process_* families; unset: none (the textfile leaves them to
  // node_exporter, whose own would collide).
  std::function<void(Exposition&)> process;
  // More families a part adds (the inventory's), written last.
  std::function<void(Exposition&)> extra;
};

enum class Scope { kAll, kWithoutProcess };

std::string render(const Sources& sources, Format format, Scope scope = Scope::kAll);

// The inventory's families (storage/inventory.h): its state, the revision
// applied and the lag, for Sources::extra.
void write_inventory_metrics(Exposition& e, const InventoryStatus& status);

}  // namespace connmgr::metrics
