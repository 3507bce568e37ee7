#include "storage/mirror_sync.h"

#include <algorithm>
#include <cstdlib>
#include <iterator>

#include "storage/pg_schema.h"
#include "util/clock.h"

namespace connmgr {

namespace {

// Rows per page of the log or of the nodes.
constexpr int kPageRows = 1000;
// Changes of the log applied per loop turn, each its own local transaction;
// and the time a turn may take doing so.
constexpr int kChangesPerTurn = 256;
constexpr uint64_t kTurnBudgetMs = 4;
// Nodes (with their endpoints) of a full resync applied per loop turn, in one
// local transaction: ~2 ms here (~30 us a node with one endpoint; ~3x that
// under ASan).
constexpr size_t kSliceNodes = 64;

std::optional<std::string> num(int64_t v) { return std::to_string(v); }

}  // namespace

Status MirrorSync::load() {
  auto mirror = store_.mirror_state();
  if (!mirror) return mirror.error();
  if (*mirror) {
    inventory_id_ = (*mirror)->inventory_id;
    revision_ = (*mirror)->revision;
    synced_at_ = (*mirror)->synced_at;
  }
  return ok_status();
}

void MirrorSync::reset() {
  syncing_ = sync_again_ = false;
  log_queue_.clear();
  full_.reset();
}

bool MirrorSync::check(const PgReply& r, const char* what) {
  if (r.ok()) return true;
  // A lost connection: the owner hears of it and calls reset().
  if (!r.lost()) hooks_.failed(std::string(what) + ": " + r.error());
  return false;
}

void MirrorSync::step() {
  if (!log_queue_.empty()) apply_some();
  else if (full_ && (!full_->nodes.empty() || full_->server_done)) resync_step();
}

void MirrorSync::sync() {
  if (syncing_) {
    sync_again_ = true;
    return;
  }
  syncing_ = true;
  sync_again_ = false;
  if (!conn_.query(pg_schema::kLogState, {num(revision_)}, [this](PgReply r) { on_log_state(r); }))
    syncing_ = false;
}

// Whether the log after the mirror's revision is whole: else a full resync.
void MirrorSync::on_log_state(const PgReply& r) {
  if (!check(r, "reading the change log")) return;
  const std::string id = r.opt_text(0, 0).value_or("");
  const bool has_revision = r.text(0, 1) == "t";
  const std::optional<int64_t> first = r.opt_int64(0, 2);
  const int64_t last = r.int64(0, 3);
  latest_seen_ = std::max(latest_seen_, last);
  // The log after our revision is whole when it still holds that revision
  // (pruning removes a prefix), or, from 0, when it starts at 1.
  const bool whole = id == inventory_id_ && !id.empty() && last >= revision_ &&
                     (revision_ > 0 ? has_revision : !first || *first <= 1);
  if (whole) {
    read_log();
    return;
  }
  full_.emplace();
  full_->base = last;
  full_->inventory_id = id;
  read_nodes_page();
}

void MirrorSync::read_log() {
  conn_.query(pg_schema::kLogPage, {num(revision_), num(kPageRows)}, [this](PgReply r) { on_log_page(r); });
}

void MirrorSync::on_log_page(const PgReply& r) {
  if (!check(r, "reading the change log")) return;
  for (int i = 0; i < r.rows(); ++i) {
    LogRow row;
    row.revision = r.int64(i, 0);
    row.kind = r.text(i, 1);
    row.node_id = r.text(i, 2);
    row.endpoint_id = r.opt_int64(i, 3);
    row.name = r.opt_text(i, 4);
    row.created_at = r.int64(i, 5);
    Endpoint& e = row.endpoint;
    e.id = row.endpoint_id.value_or(0);
    e.node_id = row.node_id;
    e.protocol = r.opt_text(i, 6).value_or("");
    e.address = r.opt_text(i, 7).value_or("");
    e.port = static_cast<int>(r.int64(i, 8));
    e.server_name = r.opt_text(i, 9);
    e.alpn = r.opt_text(i, 10);
    e.pin_sha256 = r.opt_text(i, 11);
    log_queue_.push_back(std::move(row));
  }
  last_page_full_ = r.rows() == kPageRows;
  if (log_queue_.empty()) sync_done();
  else hooks_.wake();
}

void MirrorSync::apply_some() {
  uv_update_time(loop_);
  const uint64_t deadline = uv_now(loop_) + kTurnBudgetMs;
  for (int n = 0; n < kChangesPerTurn && !log_queue_.empty(); ++n) {
    LogRow row = std::move(log_queue_.front());
    log_queue_.pop_front();
    if (row.revision <= revision_) continue;  // a full resync's replay
    if (!apply_change(row)) return;  // failed: reset() came meanwhile
    if ((n & 15) == 15) {
      uv_update_time(loop_);
      if (uv_now(loop_) >= deadline) break;
    }
  }
  if (!log_queue_.empty()) return;
  if (last_page_full_) read_log();
  else sync_done();
}

bool MirrorSync::apply_change(const LogRow& row) {
  MirrorWrite w;
  InventoryChange change;
  change.revision = row.revision;
  change.node_id = row.node_id;
  if (row.kind == "node_added") {
    change.kind = InventoryChange::Kind::kNodeAdded;
    w.upsert_nodes.push_back(Node{row.node_id, row.name, row.created_at});
  } else if (row.kind == "node_removed") {
    change.kind = InventoryChange::Kind::kNodeRemoved;
    w.remove_nodes.push_back(row.node_id);
  } else if (row.kind == "endpoint_added") {
    change.kind = InventoryChange::Kind::kEndpointAdded;
    change.endpoint_id = row.endpoint_id;
    w.upsert_endpoints.push_back(row.endpoint);
  } else if (row.kind == "endpoint_removed") {
    change.kind = InventoryChange::Kind::kEndpointRemoved;
    change.endpoint_id = row.endpoint_id;
    if (row.endpoint_id) w.remove_endpoints.push_back(*row.endpoint_id);
  } else {
    // A kind this build does not know (a newer schema): its revision passes.
    w.state = state_row(row.revision);
    return apply(w, row.revision);
  }
  if (!apply(w, row.revision)) return false;
  hooks_.heard(change);
  hooks_.advanced();
  return true;
}

bool MirrorSync::apply(const MirrorWrite& w, int64_t revision) {
  MirrorWrite with_state = w;
  with_state.state = state_row(revision);
  auto removed = store_.apply_mirror(with_state);
  if (!removed) {
    // The mirror refused (disk full, ...): the caller drops the connection
    // and tries again later from the mirror's revision.
    hooks_.failed("mirror: " + removed.error().message());
    return false;
  }
  revision_ = revision;
  return true;
}

void MirrorSync::sync_done() {
  syncing_ = false;
  if (revision_ >= latest_seen_) {
    synced_at_ = unix_now_ms();
    MirrorWrite w;
    // Kept in the file: a daemon started with the server away shows its age.
    if (!apply(w, revision_)) return;
  }
  if (sync_again_) sync();
}

void MirrorSync::read_nodes_page() {
  full_->page_in_flight = true;
  conn_.query(pg_schema::kNodesPage, {full_->requested_after, num(kPageRows)},
              [this](PgReply r) { on_nodes_page(r); });
}

void MirrorSync::on_nodes_page(const PgReply& r) {
  if (!check(r, "reading the nodes")) return;
  std::vector<Node> nodes;
  for (int i = 0; i < r.rows(); ++i) nodes.push_back(Node{r.text(i, 0), r.opt_text(i, 1), r.int64(i, 2)});
  const bool last = r.rows() < kPageRows;
  if (nodes.empty()) {
    full_->page_in_flight = false;
    full_->server_done = true;
    hooks_.wake();
    return;
  }
  const std::string after = full_->requested_after;
  full_->requested_after = nodes.back().id;
  conn_.query(pg_schema::kEndpointsPage, {after, full_->requested_after},
              [this, nodes = std::move(nodes), last](PgReply r2) mutable {
                on_endpoints_page(r2, std::move(nodes), last);
              });
}

void MirrorSync::on_endpoints_page(const PgReply& r, std::vector<Node> nodes, bool last) {
  if (!check(r, "reading the endpoints")) return;
  for (int i = 0; i < r.rows(); ++i) {
    Endpoint e;
    e.id = r.int64(i, 0);
    e.node_id = r.text(i, 1);
    e.protocol = r.text(i, 2);
    e.address = r.text(i, 3);
    e.port = static_cast<int>(r.int64(i, 4));
    e.server_name = r.opt_text(i, 5);
    e.alpn = r.opt_text(i, 6);
    e.pin_sha256 = r.opt_text(i, 7);
    full_->endpoints.push_back(std::move(e));
  }
  std::move(nodes.begin(), nodes.end(), std::back_inserter(full_->nodes));
  full_->page_in_flight = false;
  full_->server_done = last;
  // The next page is asked for in resync_step, while this one is applied.
  hooks_.wake();
}

// One loop turn of a full resync: a slice of the pages received, or a page
// of the mirror's nodes after the server's last one; and the next page asked
// for while at most one is waiting.
void MirrorSync::resync_step() {
  const bool ok = !full_->nodes.empty() ? apply_slice() : remove_rest();
  if (!ok || !full_) return;
  if (!full_->server_done && !full_->page_in_flight && full_->nodes.size() < static_cast<size_t>(kPageRows))
    read_nodes_page();
}

// kSliceNodes nodes with exactly their endpoints in one local transaction,
// the mirror's nodes in their id range that the server lacks removed.
bool MirrorSync::apply_slice() {
  MirrorWrite w;
  const size_t n = std::min(full_->nodes.size(), kSliceNodes);
  for (size_t i = 0; i < n; ++i) {
    w.upsert_nodes.push_back(std::move(full_->nodes.front()));
    full_->nodes.pop_front();
  }
  const std::string& upto = w.upsert_nodes.back().id;
  // Endpoints come by node id in the same (byte) order as the nodes.
  while (!full_->endpoints.empty() && full_->endpoints.front().node_id <= upto) {
    w.upsert_endpoints.push_back(std::move(full_->endpoints.front()));
    full_->endpoints.pop_front();
  }
  w.exact = MirrorWrite::Range{full_->applied_after, upto};
  full_->applied_after = upto;
  w.state = state_row(revision_);
  auto removed = store_.apply_mirror(w);
  if (!removed) {
    hooks_.failed("mirror: " + removed.error().message());
    return false;
  }
  const int64_t base = full_->base;
  for (const auto& id : *removed) hooks_.heard(InventoryChange{InventoryChange::Kind::kNodeRemoved, base, id, {}});
  return true;
}

// The mirror's nodes after the server's last one, kSliceNodes a turn.
bool MirrorSync::remove_rest() {
  if (!full_->server_done) return true;
  auto ids = store_.node_ids_between(full_->applied_after, std::nullopt, static_cast<int>(kSliceNodes));
  if (!ids) {
    hooks_.failed("mirror: " + ids.error().message());
    return false;
  }
  if (ids->empty()) {
    finish_full_resync();
    return false;
  }
  MirrorWrite w;
  full_->applied_after = ids->back();
  w.remove_nodes = std::move(*ids);
  w.state = state_row(revision_);
  auto removed = store_.apply_mirror(w);
  if (!removed) {
    hooks_.failed("mirror: " + removed.error().message());
    return false;
  }
  const int64_t base = full_->base;
  for (const auto& id : *removed) hooks_.heard(InventoryChange{InventoryChange::Kind::kNodeRemoved, base, id, {}});
  return true;
}

void MirrorSync::finish_full_resync() {
  FullResync done = std::move(*full_);
  full_.reset();
  const std::string previous = inventory_id_;
  inventory_id_ = done.inventory_id;
  if (!apply(MirrorWrite{}, done.base)) {
    inventory_id_ = previous;  // the file still says so
    return;
  }
  hooks_.heard(InventoryChange{InventoryChange::Kind::kResync, done.base, {}, {}});
  hooks_.advanced();
  // What changed while the pages were read.
  read_log();
}

}  // namespace connmgr
