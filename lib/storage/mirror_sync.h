// MirrorSync: brings the postgres Inventory's local mirror (the Store) to the
// server's last revision (storage/postgres_inventory.h says what it promises;
// storage/pg_schema.h the server side).
//
// sync() reads the log after the mirror's revision in pages of kPageRows and
// applies one change per local transaction, spread over loop turns; or, when
// the log cannot tell (first start, another inventory, the log pruned past the
// mirror's revision, a server behind it), a full resync: the nodes read by id
// in pages (the next page asked for while one is applied), applied in slices
// of kSliceNodes, one local transaction and one loop turn each (the slice's
// nodes, exactly their endpoints, and the mirror's nodes in the slice's id
// range that the server lacks removed); then the mirror's nodes after the
// server's last id removed, and the log read after the revision taken before
// the first page, which replays what changed while the pages were read (every
// change applies idempotently).
//
// A full resync mixes rows: until it ends a read of the mirror may see some
// nodes as they are on the server and others as they were. A node present
// before and after is never missing in between: each slice upserts, and only
// removes what the server lacks.
//
// Ownership and threads: owned by the PostgresInventory, the loop thread only;
// borrows the Store and the connection. Work for later loop turns is asked for
// through hooks.wake (the owner's idle handle then calls step() while busy()).
// hooks.failed (a server error other than a lost connection, or the mirror
// refusing a write) means: drop the connection and call reset(); nothing of
// this object is touched after it.
#pragma once

#include <uv.h>

#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "storage/inventory.h"
#include "storage/pg_connection.h"
#include "storage/store.h"

namespace connmgr {

class MirrorSync {
 public:
  struct Hooks {
    std::function<void(const InventoryChange&)> heard;  // after each change committed
    std::function<void()> advanced;                     // revision() moved
    std::function<void(const std::string& why)> failed;
    std::function<void()> wake;
  };

  MirrorSync(uv_loop_t* loop, Store& store, PgConnection& conn, Hooks hooks)
      : loop_(loop), store_(store), conn_(conn), hooks_(std::move(hooks)) {}

  // Reads the mirror's state from the Store (its error, if any).
  Status load();
  // Starts a sync, or marks one to follow the one under way. Connected only.
  void sync();
  // The connection is gone: the work under way is dropped.
  void reset();
  // A revision the server told of (NOTIFY, a write's answer).
  void saw(int64_t revision) { latest_seen_ = std::max(latest_seen_, revision); }
  bool busy() const {
    return !log_queue_.empty() || (full_ && (!full_->nodes.empty() || full_->server_done));
  }
  void step();

  int64_t revision() const { return revision_; }
  int64_t latest_seen() const { return latest_seen_; }
  bool syncing() const { return syncing_; }
  std::optional<int64_t> synced_at() const { return synced_at_; }

 private:
  struct LogRow {  // one row of the change log (pg_schema::kLogPage)
    int64_t revision = 0;
    std::string kind;
    std::string node_id;
    std::optional<int64_t> endpoint_id;
    std::optional<std::string> name;
    int64_t created_at = 0;
    Endpoint endpoint;
  };
  struct FullResync {
    // User-provided: clang cannot default-construct a nested class with
    // member initializers inside its enclosing class (std::optional::emplace).
    FullResync() {}
    int64_t base = 0;  // the log's last revision before the first page
    std::string inventory_id;
    std::string requested_after;  // the last node id asked of the server
    std::string applied_after;    // the last node id applied to the mirror
    bool page_in_flight = false;
    bool server_done = false;  // the server's last page arrived
    // Received, not yet applied: nodes by id, their endpoints by node id.
    std::deque<Node> nodes;
    std::deque<Endpoint> endpoints;
  };

  bool check(const PgReply& r, const char* what);
  void on_log_state(const PgReply& r);
  void read_log();
  void on_log_page(const PgReply& r);
  void apply_some();
  bool apply_change(const LogRow& row);
  // Writes `w` with the mirror's state at `revision` in one local transaction.
  bool apply(const MirrorWrite& w, int64_t revision);
  void sync_done();
  void read_nodes_page();
  void on_nodes_page(const PgReply& r);
  void on_endpoints_page(const PgReply& r, std::vector<Node> nodes, bool last);
  void resync_step();
  bool apply_slice();
  bool remove_rest();
  void finish_full_resync();
  MirrorState state_row(int64_t revision) const { return MirrorState{inventory_id_, revision, synced_at_}; }

  uv_loop_t* loop_;
  Store& store_;
  PgConnection& conn_;
  Hooks hooks_;

  // The mirror: its inventory, last revision applied, when last known current.
  std::string inventory_id_;
  int64_t revision_ = 0;
  std::optional<int64_t> synced_at_;
  int64_t latest_seen_ = 0;  // the highest revision the server told of

  bool syncing_ = false;
  bool sync_again_ = false;
  bool last_page_full_ = false;
  std::deque<LogRow> log_queue_;
  std::optional<FullResync> full_;
};

}  // namespace connmgr
