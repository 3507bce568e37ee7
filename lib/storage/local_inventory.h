// The local Inventory backend (storage/inventory.h): the SQLite file is the
// inventory, as it has always been. Writes go to the Store on the next loop
// turn, retried while another process holds the database's write lock
// (WriteRetries, storage/write_retry.h) until `lock_limit` has passed; then
// kStorage, reason "locked".
//
// It has no change log: status() is always connected at revision 0, and the
// listener hears nothing (the daemon's own API publishes node_added and
// node_removed for its writes; other programs writing the file are seen by
// the next read).
//
// Ownership: borrows the loop and the Store, which must outlive it.
// Destroying it cancels the writes under way (their callbacks are not
// called); run the loop once more afterwards so that their timers close.
#pragma once

#include <chrono>
#include <memory>

#include <uv.h>

#include "storage/inventory.h"
#include "storage/store.h"
#include "storage/write_retry.h"

namespace connmgr {

class LocalInventory final : public Inventory {
 public:
  LocalInventory(uv_loop_t* loop, Store& store, std::chrono::milliseconds lock_limit);

  void add_node(const NodeSpec& spec, NodeDone done) override;
  void remove_node(const std::string& node_id, Done done) override;
  void add_endpoint(const std::string& node_id, const EndpointSpec& spec, EndpointDone done) override;
  void remove_endpoint(int64_t endpoint_id, Done done) override;
  InventoryStatus status() const override;

  // Writes still being retried (tests).
  size_t writes_running() const { return retries_.running(); }

 private:
  uv_loop_t* loop_;
  Store& store_;
  std::chrono::milliseconds lock_limit_;
  WriteRetries retries_;
};

}  // namespace connmgr
