// The postgres Inventory: a state machine over one PgConnection; the mirror's
// sync is MirrorSync's (storage/mirror_sync.h).
//
//   connecting ─ connected, session set, schema checked (made), LISTEN ─▶ connected
//        ▲                                                       │ lost / failed
//        └──── retry timer (100 ms doubling to retry_max) ◀─ unavailable
#include "storage/postgres_inventory.h"

#include <algorithm>
#include <cstring>
#include <cstdlib>
#include <deque>
#include <map>

#include "storage/mirror_sync.h"
#include "storage/pg_connection.h"
#include "storage/pg_schema.h"
#include "util/clock.h"
#include "util/uv_handle.h"

namespace connmgr {

namespace {

constexpr auto kInitialRetry = std::chrono::milliseconds(100);

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
                    }),
        sync_(loop, store, conn_,
              MirrorSync::Hooks{
                  [this](const InventoryChange& change) { notify(change); },
                  [this] { release_waiters(); },
                  [this](const std::string& why) { fail(why); },
                  [this] { wake(); },
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

  void on_notify(const std::string& payload);
  void sync() {
    if (state_ == InventoryState::kConnected) sync_.sync();
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
  MirrorSync sync_;

  InventoryState state_ = InventoryState::kConnecting;
  std::optional<std::string> last_error_;
  std::chrono::milliseconds backoff_ = kInitialRetry;

  std::multimap<int64_t, Waiter> waiters_;
};

// --- connection ----------------------------------------------------------------

void PostgresInventory::start() {
  // A full resync commits ~1,500 slices: SQLite's checkpoints go to a thread.
  store_.checkpoint_in_background();
  if (Status loaded = sync_.load(); !loaded.ok()) last_error_ = loaded.message();
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
// without CREATE works); a missing one is made under the advisory lock.
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
  sync_.reset();
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
  sync_.saw(std::strtoll(payload.c_str(), nullptr, 10));
  if (sync_.latest_seen() > sync_.revision()) sync();
}

// --- the loop's idle turns -------------------------------------------------------

void PostgresInventory::idle_cb(uv_idle_t* handle) {
  if (auto* self = UvHandle<uv_idle_t>::owner<PostgresInventory>(handle)) self->on_idle();
}

void PostgresInventory::on_idle() {
  if (sync_.busy()) sync_.step();
  std::function<void()> fn;
  if (!deferred_.empty()) {
    fn = std::move(deferred_.front());
    deferred_.pop_front();
  }
  if (!sync_.busy() && deferred_.empty()) uv_idle_stop(idle_.get());
  if (fn) fn();  // last: it may destroy this
}

void PostgresInventory::defer(std::function<void()> fn) {
  deferred_.push_back(std::move(fn));
  wake();
}

// --- writes ----------------------------------------------------------------------

void PostgresInventory::wait_for(int64_t revision, Waiter waiter) {
  sync_.saw(revision);
  waiters_.emplace(revision, std::move(waiter));
  if (revision <= sync_.revision()) release_waiters();
  else sync();  // not waiting for the NOTIFY
}

void PostgresInventory::release_waiters() {
  while (!waiters_.empty() && waiters_.begin()->first <= sync_.revision()) {
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
  s.revision = sync_.revision();
  s.dsn = dsn_display_;
  s.last_error = last_error_;
  const auto synced_at = sync_.synced_at();
  const bool current =
      state_ == InventoryState::kConnected && !sync_.syncing() && sync_.revision() >= sync_.latest_seen();
  if (current && synced_at) s.lag_s = 0.0;
  else if (synced_at) s.lag_s = static_cast<double>(std::max<int64_t>(unix_now_ms() - *synced_at, 0)) / 1000.0;
  return s;
}

}  // namespace

std::unique_ptr<Inventory> make_postgres_inventory(uv_loop_t* loop, Store& store,
                                                   PostgresInventoryOptions options) {
  return std::make_unique<PostgresInventory>(loop, store, std::move(options));
}

}  // namespace connmgr
