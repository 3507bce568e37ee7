// The postgres Inventory: a state machine over one PgConnection.
//
//   connecting ─ connected, session set, schema checked (made), LISTEN ─▶ connected
//        ▲                                                       │ lost / failed
//        └──── retry timer (100 ms doubling to retry_max) ◀─ unavailable
//
// While connected, sync() brings the mirror to the server's last revision:
// the log after the mirror's revision, read in pages and applied one change
// per local transaction across loop turns; or, when the log cannot tell
// (first start, another inventory, the log pruned past the mirror's
// revision, a server behind it), a full resync: the nodes read by id in pages
// of kPageRows (the next page asked for while one is applied) and applied in
// slices of kSliceNodes, one local transaction and one loop turn each (the
// slice's nodes, exactly their endpoints, and the mirror's nodes in the
// slice's id range that the server lacks removed); then the mirror's nodes
// after the server's last id removed, and the log read after the revision
// taken before the first page, which replays what changed while the pages
// were read (every change applies idempotently).
//
// A full resync mixes rows: until it ends a read of the mirror may see some
// nodes as they are on the server and others as they were. A node present
// before and after is never missing in between: each page upserts, and only
// removes what the server lacks.
#include "storage/postgres_inventory.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <unordered_set>

#include "storage/pg_connection.h"
#include "storage/pg_schema.h"
#include "util/clock.h"
#include "util/uv_handle.h"

namespace connmgr {

namespace {

// Rows per page of the log or of the nodes: one page of nodes is applied in
// one local transaction (~5 ms for 1,000 nodes with an endpoint each).
constexpr int kPageRows = 1000;
// Changes of the log applied per loop turn, each its own local transaction;
// and the time a turn may take doing so.
constexpr int kChangesPerTurn = 256;
constexpr uint64_t kTurnBudgetMs = 4;
// Nodes (with their endpoints) of a full resync applied per loop turn, in one
// local transaction: ~5 ms (~35 us a node with one endpoint; ~3x that under
// ASan).
constexpr size_t kSliceNodes = 64;

constexpr auto kInitialRetry = std::chrono::milliseconds(100);

// One row of the change log (pg_schema::kLogPage).
struct LogRow {
  int64_t revision = 0;
  std::string kind;
  std::string node_id;
  std::optional<int64_t> endpoint_id;
  std::optional<std::string> name;
  int64_t created_at = 0;
  Endpoint endpoint;
};

// A text[] literal: every element double-quoted (backslash before " and \),
// NULL bare.
std::string array_literal(const std::vector<std::optional<std::string>>& items) {
  std::string out = "{";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += ',';
    if (!items[i]) {
      out += "NULL";
      continue;
    }
    out += '"';
    for (char c : *items[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

std::optional<std::string> num(int64_t v) { return std::to_string(v); }

}  // namespace

Result<bool> dsn_has_password(const std::string& dsn) {
  char* err = nullptr;
  PQconninfoOption* options = PQconninfoParse(dsn.c_str(), &err);
  if (!options) {
    Error e = Error::invalid_params("invalid DSN: " + pg_message(err ? err : "out of memory"));
    PQfreemem(err);
    return e;
  }
  bool has = false;
  for (PQconninfoOption* o = options; o->keyword; ++o)
    if (std::strcmp(o->keyword, "password") == 0 && o->val && *o->val) has = true;
  PQconninfoFree(options);
  return has;
}

std::string dsn_for_display(const std::string& dsn) {
  PQconninfoOption* options = PQconninfoParse(dsn.c_str(), nullptr);
  if (!options) return "(invalid DSN)";
  std::string out;
  for (PQconninfoOption* o = options; o->keyword; ++o) {
    if (!o->val || !*o->val) continue;
    if (std::strcmp(o->keyword, "password") == 0 || std::strcmp(o->keyword, "sslpassword") == 0) continue;
    std::string value = o->val;
    const bool quote = value.find_first_of(" '\\") != std::string::npos;
    if (quote) {
      std::string q = "'";
      for (char c : value) {
        if (c == '\'' || c == '\\') q += '\\';
        q += c;
      }
      value = q + "'";
    }
    if (!out.empty()) out += ' ';
    out += std::string(o->keyword) + "=" + value;
  }
  PQconninfoFree(options);
  return out;
}

namespace {

class PostgresInventory final : public Inventory {
 public:
  PostgresInventory(uv_loop_t* loop, Store& store, PostgresInventoryOptions options)
      : loop_(loop),
        store_(store),
        options_(std::move(options)),
        dsn_display_(dsn_for_display(options_.dsn)),
        conn_(loop, PgConnection::Handlers{
                        [this](Status s) { on_connected(std::move(s)); },
                        [this](const std::string& why) { on_lost(why); },
                        [this](const std::string&, const std::string& payload) { on_notify(payload); },
                    }) {
    retry_timer_.init(loop_);
    resync_timer_.init(loop_);
    idle_.init(loop_, this, uv_idle_init);
    conn_.set_query_timeout(options_.connect_timeout + std::chrono::milliseconds(10000));
  }
  ~PostgresInventory() override { conn_.close(); }

  void start() override;
  void add_node(const NodeSpec& spec, NodeDone done) override;
  void remove_node(const std::string& node_id, Done done) override;
  void add_endpoint(const std::string& node_id, const EndpointSpec& spec, EndpointDone done) override;
  void remove_endpoint(int64_t endpoint_id, Done done) override;
  InventoryStatus status() const override;

 private:
  using Waiter = std::function<void(std::optional<Error>)>;
  struct FullResync {
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

  // --- connection ---
  void connect();
  void on_connected(Status s);
  void check_schema(PgReply r);
  void listen();
  void on_lost(const std::string& why);
  void fail(const std::string& why);
  void become_unavailable();
  // A reply that failed during set-up or sync: false when it did.
  bool check(const PgReply& r, const char* what);

  // --- sync ---
  void on_notify(const std::string& payload);
  void sync();
  void on_log_state(const PgReply& r);
  void read_log();
  void on_log_page(const PgReply& r);
  void apply_some();
  bool apply_change(const LogRow& row);
  void sync_done();
  void read_nodes_page();
  void on_nodes_page(const PgReply& r);
  void on_endpoints_page(const PgReply& r, std::vector<Node> nodes, bool last);
  void resync_step();
  bool apply_slice();
  bool remove_rest();
  void finish_full_resync();
  bool busy() const {
    return !log_queue_.empty() || (full_ && (!full_->nodes.empty() || full_->server_done));
  }
  bool apply(const MirrorWrite& w, int64_t revision);
  MirrorState state_row(int64_t revision) const {
    return MirrorState{inventory_id_, revision, synced_at_};
  }

  // --- writes ---
  Error unavailable(const std::string& why) const {
    return Error::storage("inventory server unavailable: " + why, "unavailable");
  }
  Error write_error(const PgReply& r, const std::string& node_id, const std::string& exists) const;
  void wait_for(int64_t revision, Waiter waiter);
  void release_waiters();
  void defer(std::function<void()> fn);
  void wake() { uv_idle_start(idle_.get(), &PostgresInventory::idle_cb); }
  static void idle_cb(uv_idle_t* handle);
  void on_idle();

  uv_loop_t* loop_;
  Store& store_;
  PostgresInventoryOptions options_;
  std::string dsn_display_;
  PgConnection conn_;
  Timer retry_timer_;
  Timer resync_timer_;
  // Work spread over loop turns (changes to apply, a resync's last
  // removals) and callbacks to the caller, one a turn, each the last thing
  // its turn does (a callback may destroy the Inventory).
  UvHandle<uv_idle_t> idle_;
  std::deque<std::function<void()>> deferred_;

  InventoryState state_ = InventoryState::kConnecting;
  std::optional<std::string> last_error_;
  std::chrono::milliseconds backoff_ = kInitialRetry;

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
  std::multimap<int64_t, Waiter> waiters_;
};

// --- connection ----------------------------------------------------------------

void PostgresInventory::start() {
  // A full resync commits ~1,500 slices: SQLite's checkpoints go to a thread.
  store_.checkpoint_in_background();
  auto mirror = store_.mirror_state();
  if (!mirror) {
    last_error_ = mirror.error().message();
  } else if (*mirror) {
    inventory_id_ = (*mirror)->inventory_id;
    revision_ = (*mirror)->revision;
    synced_at_ = (*mirror)->synced_at;
  }
  const auto every = static_cast<uint64_t>(std::max<int64_t>(options_.resync_interval.count(), 1));
  resync_timer_.start(every, [this] { sync(); }, every);
  connect();
}

void PostgresInventory::connect() {
  // Passwords come from a pgpass file: a DSN that holds one (or cannot be
  // parsed) is never used, and never shown.
  auto has_password = dsn_has_password(options_.dsn);
  if (!has_password || *has_password) {
    last_error_ = !has_password ? has_password.error().message()
                                : "the DSN holds a password: give it in a pgpass file instead";
    state_ = InventoryState::kUnavailable;
    return;
  }
  state_ = InventoryState::kConnecting;
  conn_.connect(options_.dsn, options_.connect_timeout);
}

void PostgresInventory::on_connected(Status s) {
  if (!s.ok()) {
    fail(s.message());
    return;
  }
  conn_.query(pg_schema::kSessionSetup, {}, [this](PgReply r) {
    if (!check(r, "session set-up")) return;
    conn_.query(pg_schema::kHasMeta, {}, [this](PgReply r2) { check_schema(std::move(r2)); });
  });
}

// A schema already at our version is left alone (no lock, no DDL: a role
// without CREATE works); none is made under the advisory lock.
void PostgresInventory::check_schema(PgReply r) {
  if (!check(r, "schema check")) return;
  auto create = [this] {
    conn_.query(pg_schema::kCreateSchema, {}, [this](PgReply r3) {
      if (check(r3, "schema creation")) listen();
    });
  };
  if (r.text(0, 0) != "t") {
    create();
    return;
  }
  conn_.query(pg_schema::kSchemaVersion, {}, [this, create](PgReply r2) {
    if (!check(r2, "schema check")) return;
    if (r2.rows() == 0) {
      create();
      return;
    }
    const int64_t version = r2.int64(0, 0);
    if (version > pg_schema::kServerSchemaVersion) {
      fail("the server's connmgr schema is version " + std::to_string(version) + ", newer than this connmgrd's (" +
           std::to_string(pg_schema::kServerSchemaVersion) + ")");
      return;
    }
    listen();
  });
}

void PostgresInventory::listen() {
  conn_.query(pg_schema::kListen, {}, [this](PgReply r) {
    if (!check(r, "LISTEN")) return;
    state_ = InventoryState::kConnected;
    last_error_.reset();
    backoff_ = kInitialRetry;
    sync();
  });
}

bool PostgresInventory::check(const PgReply& r, const char* what) {
  if (r.ok()) return true;
  // A lost connection is handled by on_lost, which follows.
  if (!r.lost()) fail(std::string(what) + ": " + r.error());
  return false;
}

void PostgresInventory::on_lost(const std::string& why) {
  last_error_ = "connection lost: " + why;
  become_unavailable();
}

void PostgresInventory::fail(const std::string& why) {
  last_error_ = why;
  conn_.close();
  become_unavailable();
}

void PostgresInventory::become_unavailable() {
  state_ = InventoryState::kUnavailable;
  syncing_ = sync_again_ = false;
  log_queue_.clear();
  full_.reset();
  // Writes that reached the server but not yet the mirror are not known done.
  auto waiters = std::move(waiters_);
  waiters_.clear();
  for (auto& [rev, waiter] : waiters)
    defer([w = std::move(waiter), e = unavailable(*last_error_)] { w(e); });
  retry_timer_.start(static_cast<uint64_t>(backoff_.count()), [this] { connect(); });
  backoff_ = std::min(backoff_ * 2, std::max(options_.retry_max, kInitialRetry));
}

// --- sync ----------------------------------------------------------------------

void PostgresInventory::on_notify(const std::string& payload) {
  latest_seen_ = std::max<int64_t>(latest_seen_, std::strtoll(payload.c_str(), nullptr, 10));
  if (latest_seen_ > revision_) sync();
}

void PostgresInventory::sync() {
  if (state_ != InventoryState::kConnected) return;
  if (syncing_) {
    sync_again_ = true;
    return;
  }
  syncing_ = true;
  sync_again_ = false;
  conn_.query(pg_schema::kLogState, {num(revision_)}, [this](PgReply r) { on_log_state(r); });
}

void PostgresInventory::on_log_state(const PgReply& r) {
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

void PostgresInventory::read_log() {
  conn_.query(pg_schema::kLogPage, {num(revision_), num(kPageRows)}, [this](PgReply r) { on_log_page(r); });
}

void PostgresInventory::on_log_page(const PgReply& r) {
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
  else wake();
}

void PostgresInventory::apply_some() {
  uv_update_time(loop_);
  const uint64_t deadline = uv_now(loop_) + kTurnBudgetMs;
  for (int n = 0; n < kChangesPerTurn && !log_queue_.empty(); ++n) {
    LogRow row = std::move(log_queue_.front());
    log_queue_.pop_front();
    if (row.revision <= revision_) continue;  // a full resync's replay
    if (!apply_change(row)) {
      // The mirror refused (disk full, ...): try again at the next sync.
      log_queue_.clear();
      syncing_ = false;
      return;
    }
    if ((n & 15) == 15) {
      uv_update_time(loop_);
      if (uv_now(loop_) >= deadline) break;
    }
  }
  if (!log_queue_.empty()) return;
  if (last_page_full_) read_log();
  else sync_done();
}

bool PostgresInventory::apply_change(const LogRow& row) {
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
  notify(change);
  release_waiters();
  return true;
}

// Writes `w` with the mirror's state at `revision` in one local transaction.
bool PostgresInventory::apply(const MirrorWrite& w, int64_t revision) {
  MirrorWrite with_state = w;
  with_state.state = state_row(revision);
  auto removed = store_.apply_mirror(with_state);
  if (!removed) {
    last_error_ = "mirror: " + removed.error().message();
    return false;
  }
  revision_ = revision;
  return true;
}

void PostgresInventory::sync_done() {
  syncing_ = false;
  if (revision_ >= latest_seen_) {
    synced_at_ = unix_now_ms();
    MirrorWrite w;
    apply(w, revision_);  // keeps synced_at for a start without the server
  }
  if (sync_again_) sync();
}

void PostgresInventory::read_nodes_page() {
  full_->page_in_flight = true;
  conn_.query(pg_schema::kNodesPage, {full_->requested_after, num(kPageRows)},
              [this](PgReply r) { on_nodes_page(r); });
}

void PostgresInventory::on_nodes_page(const PgReply& r) {
  if (!check(r, "reading the nodes")) return;
  std::vector<Node> nodes;
  for (int i = 0; i < r.rows(); ++i) nodes.push_back(Node{r.text(i, 0), r.opt_text(i, 1), r.int64(i, 2)});
  const bool last = r.rows() < kPageRows;
  if (nodes.empty()) {
    full_->page_in_flight = false;
    full_->server_done = true;
    wake();
    return;
  }
  const std::string after = full_->requested_after;
  full_->requested_after = nodes.back().id;
  conn_.query(pg_schema::kEndpointsPage, {after, full_->requested_after},
              [this, nodes = std::move(nodes), last](PgReply r2) mutable {
                on_endpoints_page(r2, std::move(nodes), last);
              });
}

void PostgresInventory::on_endpoints_page(const PgReply& r, std::vector<Node> nodes, bool last) {
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
  wake();
}

// One loop turn of a full resync: a slice of the pages received, or a page
// of the mirror's nodes after the server's last one; and the next page asked
// for while at most one is waiting.
void PostgresInventory::resync_step() {
  const bool ok = !full_->nodes.empty() ? apply_slice() : remove_rest();
  if (!ok || !full_) return;
  if (!full_->server_done && !full_->page_in_flight && full_->nodes.size() < static_cast<size_t>(kPageRows))
    read_nodes_page();
}

// kSliceNodes nodes with their endpoints in one local transaction, with the
// mirror's nodes in their id range that the server lacks removed.
bool PostgresInventory::apply_slice() {
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
    fail("mirror: " + removed.error().message());
    return false;
  }
  const int64_t base = full_->base;
  for (const auto& id : *removed) notify(InventoryChange{InventoryChange::Kind::kNodeRemoved, base, id, {}});
  return true;
}

// The mirror's nodes after the server's last one, kSliceNodes a turn.
bool PostgresInventory::remove_rest() {
  if (!full_->server_done) return true;
  auto ids = store_.node_ids_between(full_->applied_after, std::nullopt, static_cast<int>(kSliceNodes));
  if (!ids) {
    fail("mirror: " + ids.error().message());
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
    fail("mirror: " + removed.error().message());
    return false;
  }
  const int64_t base = full_->base;
  for (const auto& id : *removed) notify(InventoryChange{InventoryChange::Kind::kNodeRemoved, base, id, {}});
  return true;
}

void PostgresInventory::finish_full_resync() {
  FullResync done = std::move(*full_);
  full_.reset();
  inventory_id_ = done.inventory_id;
  if (!apply(MirrorWrite{}, done.base)) {
    syncing_ = false;
    return;
  }
  notify(InventoryChange{InventoryChange::Kind::kResync, done.base, {}, {}});
  release_waiters();
  // What changed while the pages were read.
  read_log();
}

// --- the loop's idle turns -------------------------------------------------------

void PostgresInventory::idle_cb(uv_idle_t* handle) {
  if (auto* self = UvHandle<uv_idle_t>::owner<PostgresInventory>(handle)) self->on_idle();
}

void PostgresInventory::on_idle() {
  if (!log_queue_.empty()) apply_some();
  else if (full_ && (!full_->nodes.empty() || full_->server_done)) resync_step();
  std::function<void()> fn;
  if (!deferred_.empty()) {
    fn = std::move(deferred_.front());
    deferred_.pop_front();
  }
  if (!busy() && deferred_.empty()) uv_idle_stop(idle_.get());
  if (fn) fn();  // last: it may destroy this
}

void PostgresInventory::defer(std::function<void()> fn) {
  deferred_.push_back(std::move(fn));
  wake();
}

// --- writes ----------------------------------------------------------------------

void PostgresInventory::wait_for(int64_t revision, Waiter waiter) {
  latest_seen_ = std::max(latest_seen_, revision);
  waiters_.emplace(revision, std::move(waiter));
  if (revision <= revision_) release_waiters();
  else sync();  // not waiting for the NOTIFY
}

void PostgresInventory::release_waiters() {
  while (!waiters_.empty() && waiters_.begin()->first <= revision_) {
    defer([w = std::move(waiters_.begin()->second)] { w(std::nullopt); });
    waiters_.erase(waiters_.begin());
  }
}

Error PostgresInventory::write_error(const PgReply& r, const std::string& node_id,
                                     const std::string& exists) const {
  const std::string& state = r.sqlstate();
  if (r.lost() || state.rfind("08", 0) == 0 || state.rfind("57P", 0) == 0 || state == "57014")
    return unavailable(r.error());
  if (state == "23505") return Error::already_exists(exists);
  if (state == "23503") return Error::node_not_found(node_id);
  if (state.rfind("22", 0) == 0 || state == "23514")
    return Error::invalid_params("refused by the inventory server: " + r.error());
  return Error::storage("the inventory server refused the write: " + r.error(), "postgres");
}

void PostgresInventory::add_node(const NodeSpec& spec, NodeDone done) {
  if (state_ != InventoryState::kConnected) {
    defer([done, e = unavailable(last_error_.value_or("not connected yet"))] { done(e); });
    return;
  }
  std::vector<std::optional<std::string>> protocols, addresses, ports, names, alpns, pins;
  for (const EndpointSpec& e : spec.endpoints) {
    protocols.push_back(e.protocol);
    addresses.push_back(e.address);
    ports.push_back(std::to_string(e.port));
    names.push_back(e.server_name);
    alpns.push_back(e.alpn);
    pins.push_back(e.pin_sha256);
  }
  PgConnection::Params params{spec.id,
                              spec.name,
                              array_literal(protocols),
                              array_literal(addresses),
                              array_literal(ports),
                              array_literal(names),
                              array_literal(alpns),
                              array_literal(pins)};
  conn_.query(pg_schema::kAddNode, std::move(params), [this, id = spec.id, done](PgReply r) {
    if (!r.ok()) {
      const bool node = r.error().find("nodes_pkey") != std::string::npos;
      Error e = write_error(r, id,
                            node ? "node '" + id + "' already exists"
                                 : "node '" + id + "' lists the same endpoint (protocol, address, port) twice");
      defer([done, e] { done(e); });
      return;
    }
    wait_for(r.int64(0, 0), [this, id, done](std::optional<Error> e) {
      if (e) done(*e);
      else done(store_.node_with_endpoints(id, std::nullopt));
    });
  });
}

void PostgresInventory::remove_node(const std::string& node_id, Done done) {
  if (state_ != InventoryState::kConnected) {
    defer([done, e = unavailable(last_error_.value_or("not connected yet"))] { done(e); });
    return;
  }
  conn_.query(pg_schema::kRemoveNode, {node_id}, [this, node_id, done](PgReply r) {
    if (!r.ok() || r.is_null(0, 0)) {
      Error e = r.ok() ? Error::node_not_found(node_id) : write_error(r, node_id, "");
      defer([done, e] { done(e); });
      return;
    }
    wait_for(r.int64(0, 0), [done](std::optional<Error> e) { done(e ? *e : ok_status()); });
  });
}

void PostgresInventory::add_endpoint(const std::string& node_id, const EndpointSpec& spec, EndpointDone done) {
  if (state_ != InventoryState::kConnected) {
    defer([done, e = unavailable(last_error_.value_or("not connected yet"))] { done(e); });
    return;
  }
  PgConnection::Params params{node_id,     spec.protocol, spec.address,   std::to_string(spec.port),
                              spec.server_name, spec.alpn, spec.pin_sha256};
  const std::string exists = "node '" + node_id + "' already has endpoint " + spec.protocol + " " + spec.address +
                             " port " + std::to_string(spec.port);
  conn_.query(pg_schema::kAddEndpoint, std::move(params), [this, node_id, exists, done](PgReply r) {
    if (!r.ok()) {
      Error e = write_error(r, node_id, exists);
      defer([done, e] { done(e); });
      return;
    }
    const int64_t endpoint_id = r.int64(0, 0);
    wait_for(r.int64(0, 1), [this, endpoint_id, done](std::optional<Error> e) {
      if (e) done(*e);
      else done(store_.get_endpoint(endpoint_id));
    });
  });
}

void PostgresInventory::remove_endpoint(int64_t endpoint_id, Done done) {
  if (state_ != InventoryState::kConnected) {
    defer([done, e = unavailable(last_error_.value_or("not connected yet"))] { done(e); });
    return;
  }
  conn_.query(pg_schema::kRemoveEndpoint, {std::to_string(endpoint_id)}, [this, endpoint_id, done](PgReply r) {
    if (!r.ok() || r.is_null(0, 0)) {
      Error e = r.ok() ? Error::endpoint_not_found(endpoint_id) : write_error(r, "", "");
      defer([done, e] { done(e); });
      return;
    }
    wait_for(r.int64(0, 0), [done](std::optional<Error> e) { done(e ? *e : ok_status()); });
  });
}

InventoryStatus PostgresInventory::status() const {
  InventoryStatus s;
  s.backend = "postgres";
  s.state = state_;
  s.revision = revision_;
  s.dsn = dsn_display_;
  s.last_error = last_error_;
  const bool current = state_ == InventoryState::kConnected && !syncing_ && revision_ >= latest_seen_;
  if (current && synced_at_) s.lag_s = 0.0;
  else if (synced_at_) s.lag_s = static_cast<double>(std::max<int64_t>(unix_now_ms() - *synced_at_, 0)) / 1000.0;
  return s;
}

}  // namespace

std::unique_ptr<Inventory> make_postgres_inventory(uv_loop_t* loop, Store& store,
                                                   PostgresInventoryOptions options) {
  return std::make_unique<PostgresInventory>(loop, store, std::move(options));
}

}  // namespace connmgr
