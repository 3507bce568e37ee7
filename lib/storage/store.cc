#include "storage/store.h"

#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "storage/schema.h"
#include "storage/wal_checkpointer.h"
#include "util/clock.h"
#include "util/uv_handle.h"

namespace connmgr {

namespace {

// Busy timeout on the loop: long enough to ride out a checkpoint's brief
// lock, short enough that the loop never waits on another writer.
constexpr int kBusyTimeoutMs = 2;

// A prepared statement kept for the Store's life; Use resets it on scope exit.
class Stmt {
 public:
  Stmt() = default;
  ~Stmt() { finalize(); }
  void finalize() {
    sqlite3_finalize(st_);
    st_ = nullptr;
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  int prepare(sqlite3* db, const char* sql) {
    return sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st_, nullptr);
  }
  sqlite3_stmt* get() const { return st_; }

 private:
  sqlite3_stmt* st_ = nullptr;
};

class Use {
 public:
  explicit Use(const Stmt& s) : st_(s.get()) {}
  ~Use() {
    sqlite3_reset(st_);
    sqlite3_clear_bindings(st_);
  }
  sqlite3_stmt* operator*() const { return st_; }

  void bind(int i, const std::string& v) { sqlite3_bind_text(st_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT); }
  void bind(int i, const std::optional<std::string>& v) {
    if (v) bind(i, *v);
    else sqlite3_bind_null(st_, i);
  }
  void bind(int i, int64_t v) { sqlite3_bind_int64(st_, i, v); }
  void bind(int i, const std::optional<int64_t>& v) {
    if (v) bind(i, *v);
    else sqlite3_bind_null(st_, i);
  }
  void bind(int i, double v) { sqlite3_bind_double(st_, i, v); }
  int step() { return sqlite3_step(st_); }

 private:
  sqlite3_stmt* st_;
};

std::optional<std::string> opt_text(sqlite3_stmt* st, int col) {
  if (sqlite3_column_type(st, col) == SQLITE_NULL) return std::nullopt;
  return std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, col)),
                     static_cast<size_t>(sqlite3_column_bytes(st, col)));
}
std::optional<int64_t> opt_int(sqlite3_stmt* st, int col) {
  if (sqlite3_column_type(st, col) == SQLITE_NULL) return std::nullopt;
  return sqlite3_column_int64(st, col);
}
std::optional<double> opt_double(sqlite3_stmt* st, int col) {
  if (sqlite3_column_type(st, col) == SQLITE_NULL) return std::nullopt;
  return sqlite3_column_double(st, col);
}

// The columns read_endpoint reads, in its order. The statistics columns of
// schema version 2 come last, each with the value it has before any
// statistics: what a read-only database that could not be migrated (made by
// hand, or by an older connmgrd) reads as instead of the missing column.
struct EndpointCol {
  const char* name;
  const char* before_version2;  // nullptr: a documented column, always there
};
constexpr EndpointCol kEndpointCols[] = {
    {"id", nullptr},          {"node_id", nullptr},         {"protocol", nullptr},
    {"address", nullptr},     {"port", nullptr},            {"server_name", nullptr},
    {"alpn", nullptr},        {"pin_sha256", nullptr},      {"success_count", nullptr},
    {"failure_count", nullptr}, {"last_success_at", nullptr}, {"last_failure_at", nullptr},
    {"last_error", nullptr},  {"rtt_ms", "NULL"},           {"consecutive_failures", "0"},
    {"uncharged_failure_count", "0"},
};

// The select list of kEndpointCols, each column qualified by `alias` when
// given ("e.id, e.node_id, ..."); `version2`: the table has the statistics
// columns (else their values before any statistics stand in).
std::string endpoint_cols(bool version2, const char* alias = nullptr) {
  std::string out;
  for (const EndpointCol& c : kEndpointCols) {
    if (!out.empty()) out += ", ";
    if (c.before_version2 && !version2) {
      out += c.before_version2;
      continue;
    }
    if (alias) out += std::string(alias) + '.';
    out += c.name;
  }
  return out;
}

// A range scan over the page's node ids gives up (and the remaining ids are
// read one query each) once it has stepped over this many rows of nodes not
// asked for, so that ids scattered across a large table cost no more than
// the per-node queries would.
constexpr size_t kMaxForeignRows = 256;

// kEndpointCols starting at column `c`.
Endpoint read_endpoint(sqlite3_stmt* st, int c = 0) {
  Endpoint e;
  e.id = sqlite3_column_int64(st, c + 0);
  e.node_id = opt_text(st, c + 1).value_or("");
  e.protocol = opt_text(st, c + 2).value_or("");
  e.address = opt_text(st, c + 3).value_or("");
  e.port = sqlite3_column_int(st, c + 4);
  e.server_name = opt_text(st, c + 5);
  e.alpn = opt_text(st, c + 6);
  e.pin_sha256 = opt_text(st, c + 7);
  e.success_count = sqlite3_column_int64(st, c + 8);
  e.failure_count = sqlite3_column_int64(st, c + 9);
  e.last_success_at = opt_int(st, c + 10);
  e.last_failure_at = opt_int(st, c + 11);
  e.last_error = opt_text(st, c + 12);
  e.rtt_ms = opt_double(st, c + 13);
  e.consecutive_failures = sqlite3_column_int64(st, c + 14);
  e.uncharged_failure_count = sqlite3_column_int64(st, c + 15);
  return e;
}

Node read_node(sqlite3_stmt* st) {
  Node n;
  n.id = opt_text(st, 0).value_or("");
  n.name = opt_text(st, 1);
  n.created_at = sqlite3_column_int64(st, 2);
  return n;
}

}  // namespace

// The selection order (docs/guide.md, "Statistics and how an endpoint is
// chosen"): an endpoint failing now (consecutive_failures > 0) after every
// endpoint that is not; then highest success_count, then lowest
// failure_count, then most recent success (never-succeeded last), then
// lowest id.
bool Store::ranks_before(const Endpoint& a, const Endpoint& b) {
  const bool a_failing = a.consecutive_failures > 0;
  const bool b_failing = b.consecutive_failures > 0;
  if (a_failing != b_failing) return b_failing;
  if (a.success_count != b.success_count) return a.success_count > b.success_count;
  if (a.failure_count != b.failure_count) return a.failure_count < b.failure_count;
  const int64_t as = a.last_success_at.value_or(INT64_MIN);
  const int64_t bs = b.last_success_at.value_or(INT64_MIN);
  if (as != bs) return as > bs;
  return a.id < b.id;
}

namespace {

std::string random_node_id() {
  unsigned char bytes[16];
  size_t got = 0;
  while (got < sizeof bytes) {
    ssize_t n = getrandom(bytes + got, sizeof bytes - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  std::string hex;
  char buf[3];
  for (unsigned char b : bytes) {
    snprintf(buf, sizeof buf, "%02x", b);
    hex += buf;
  }
  return hex;
}

// Queued statistics of one endpoint, merged until the next flush. The
// counts add up in any order; consecutive_failures and rtt_ms depend on the
// order of the outcomes, so the delta keeps what the whole sequence does to
// the stored value, and applying it equals applying each outcome in turn.
struct StatDelta {
  int64_t successes = 0;
  int64_t charged_failures = 0;
  int64_t uncharged_failures = 0;
  std::optional<int64_t> last_success_at;
  std::optional<int64_t> last_failure_at;
  std::optional<std::string> last_error;
  // consecutive_failures: set to 0 by a queued success (reset), then plus
  // the failures queued after the last success (failures_since).
  bool reset = false;
  int64_t failures_since = 0;
  // rtt_ms after the queued samples: from a stored value r (not NULL),
  // r * rtt_scale + rtt_offset (each sample s maps r to r + (s - r) / 8, so
  // the scale is (7/8)^n and the offset the same recurrence from 0); from
  // NULL (the first sample sets it), rtt_from_null.
  int64_t rtt_samples = 0;
  double rtt_scale = 1;
  double rtt_offset = 0;
  double rtt_from_null = 0;

  void success(std::optional<double> rtt) {
    ++successes;
    reset = true;
    failures_since = 0;
    if (!rtt) return;
    rtt_from_null = rtt_samples == 0 ? *rtt : smooth(rtt_from_null, *rtt);
    rtt_scale *= 1 - kRttGain;
    rtt_offset = smooth(rtt_offset, *rtt);
    ++rtt_samples;
  }
  void failure(bool charged) {
    ++(charged ? charged_failures : uncharged_failures);
    ++failures_since;
  }
  int64_t consecutive_failures(int64_t stored) const { return (reset ? 0 : stored) + failures_since; }
  std::optional<double> rtt_ms(std::optional<double> stored) const {
    if (rtt_samples == 0) return stored;
    if (!stored) return rtt_from_null;
    return *stored * rtt_scale + rtt_offset;
  }

  // TCP's SRTT gain (RFC 6298): alpha = 1/8.
  static constexpr double kRttGain = 1.0 / 8;
  static double smooth(double srtt, double sample) { return srtt + (sample - srtt) * kRttGain; }
};

class SqliteStore final : public Store {
 public:
  SqliteStore(uv_loop_t* loop, StoreOptions options) : loop_(loop), options_(std::move(options)) {}
  ~SqliteStore() override { close(); }

  Status open();

  Result<NodePage> list_nodes(int limit, const std::optional<std::string>& after) override;
  Result<Node> get_node(const std::string& node_id) override;
  Result<std::vector<Endpoint>> endpoints_of_nodes(const std::vector<std::string>& ids) override;
  Result<std::vector<Endpoint>> endpoints_of(const std::string& node_id,
                                             const std::optional<std::string>& protocol) override;
  Result<NodeWithEndpoints> node_with_endpoints(const std::string& node_id,
                                                const std::optional<std::string>& protocol) override;
  Result<Endpoint> get_endpoint(int64_t endpoint_id) override;
  Result<StoreCounts> counts(std::chrono::milliseconds max_age) override;
  Result<NodeWithEndpoints> add_node(const NodeSpec& spec) override;
  Status remove_node(const std::string& node_id) override;
  Result<Endpoint> add_endpoint(const std::string& node_id, const EndpointSpec& spec) override;
  Status remove_endpoint(int64_t endpoint_id) override;
  void record_success(int64_t endpoint_id, int64_t at, std::optional<double> rtt_ms) override;
  void record_failure(int64_t endpoint_id, const std::string& reason, int64_t at, bool charged) override;
  Result<std::optional<MirrorState>> mirror_state() override;
  Result<std::vector<std::string>> apply_mirror(const MirrorWrite& write) override;
  Result<std::vector<std::string>> node_ids_between(const std::string& after,
                                                    const std::optional<std::string>& upto,
                                                    int limit) override;
  void checkpoint_in_background() override;
  Status flush() override;
  size_t pending_stats() const override { return pending_.size(); }
  const std::string& local_node_id() const override { return local_node_id_; }
  Status set_local_node_id(const std::string& node_id) override;
  const std::string& path() const override { return options_.path; }
  Status close() override;

 private:
  Error closed_error() const {
    return Error::internal("database used after close(): " + options_.path);
  }
  Error err(int rc, const std::string& what) const {
    Error e = schema::sqlite_error(rc, db_, options_.path, what);
    if (snapshot_ && e.reason() == "read_only")
      return Error::storage(e.message() + " (opened read-only: " + options_.path + "-shm cannot be created)",
                            e.reason());
    return e;
  }
  Status open_connection(const std::string& name, int flags);
  Status exec(const char* sql, const char* what);
  Status begin() { return exec("BEGIN IMMEDIATE", "begin transaction"); }
  void rollback() { sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr); }
  Status prepare_all();
  Status load_local_node_id();
  Result<std::vector<Endpoint>> query_endpoints(const std::string& node_id,
                                                const std::optional<std::string>& protocol);
  void overlay(Endpoint& e) const;
  Result<size_t> scan_endpoint_range(const std::vector<std::string_view>& sorted,
                                     std::vector<std::vector<Endpoint>>& groups);
  void arm_timer(uint64_t delay_ms);
  void on_flush_timer();
  // Writes up to max_rows queued statistics in one transaction, lowest ids first.
  Status flush_rows(size_t max_rows);
  // One endpoint's queued statistics (update_stats_): SQLITE_DONE or the error.
  int write_delta(int64_t id, const StatDelta& d);
  Result<Endpoint> insert_endpoint(const std::string& node_id, const EndpointSpec& spec);
  // The mirror's table and statements, made on the first mirror call.
  Status prepare_mirror();
  Status apply_mirror_rows(const MirrorWrite& write, std::vector<std::string>& removed);
  Status upsert_mirror_endpoint(const Endpoint& e, bool clash_possible);
  Status apply_exact_range(const MirrorWrite& write, std::vector<std::string>& removed);

  uv_loop_t* loop_;
  StoreOptions options_;
  sqlite3* db_ = nullptr;
  bool closed_ = false;
  bool snapshot_ = false;  // opened immutable: see open()
  // The endpoints table has schema version 2's statistics columns (always,
  // unless read-only and never migrated).
  bool version2_ = true;
  std::string local_node_id_;
  // Flushes queued statistics; closed with the Store, its callback never
  // runs after that (a Store destroyed with a flush pending is fine).
  Timer flush_timer_;
  std::unordered_map<int64_t, StatDelta> pending_;
  // count(*) scans a whole index (~30 ms at 2M endpoints), too long for every
  // `status`; the counts are kept until PRAGMA data_version says another
  // process committed, or this Store adds or removes rows.
  std::optional<StoreCounts> counts_cache_;
  int64_t counts_version_ = -1;
  uint64_t counts_checked_at_ = 0;  // loop time of the last data_version check

  Stmt list_first_, list_after_, get_node_, endpoints_of_, endpoints_of_proto_, get_endpoint_,
      data_version_, count_nodes_, count_endpoints_, insert_node_, insert_endpoint_, delete_node_,
      delete_endpoint_, node_exists_, update_stats_, node_endpoints_, node_endpoints_proto_,
      endpoints_in_range_;
  bool mirror_prepared_ = false;
  std::unique_ptr<WalCheckpointer> checkpointer_;
  Stmt mirror_get_, mirror_set_, upsert_node_, clash_endpoint_, upsert_endpoint_, endpoint_ids_in_,
      node_ids_after_, node_ids_upto_;
};

Status SqliteStore::exec(const char* sql, const char* what) {
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
  return rc == SQLITE_OK ? ok_status() : err(rc, what);
}

// SQLite URI for `path` (needed for the immutable parameter): characters
// that mean something in a URI are percent-encoded.
std::string file_uri(const std::string& path, const char* params) {
  static const char* kHex = "0123456789ABCDEF";
  std::string uri = "file:";
  for (unsigned char c : path) {
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       c == '/' || c == '.' || c == '-' || c == '_' || c == '~';
    if (plain) {
      uri += static_cast<char>(c);
    } else {
      uri += '%';
      uri += kHex[c >> 4];
      uri += kHex[c & 15];
    }
  }
  if (*params) uri += std::string("?") + params;
  return uri;
}

// True when `path` exists without a -shm file and without WAL content.
bool only_main_file(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  if (stat((path + "-shm").c_str(), &st) == 0) return false;
  return stat((path + "-wal").c_str(), &st) != 0 || st.st_size == 0;
}

Status SqliteStore::open_connection(const std::string& name, int flags) {
  if (db_) sqlite3_close_v2(db_);
  db_ = nullptr;
  int rc = sqlite3_open_v2(name.c_str(), &db_, flags | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI,
                           nullptr);
  if (rc != SQLITE_OK) return err(rc, "open");
  sqlite3_extended_result_codes(db_, 1);
  // Opening happens at start-up, before the loop serves anyone: waiting a
  // bounded time for another process's lock (a migration, the switch to WAL)
  // beats refusing to start. On the loop the timeout drops to near zero.
  sqlite3_busy_timeout(db_, static_cast<int>(options_.open_lock_limit.count()));
  // The first read of the file: one that is not a database fails here, before
  // anything could be written to it.
  rc = sqlite3_exec(db_, "SELECT count(*) FROM sqlite_schema", nullptr, nullptr, nullptr);
  return rc == SQLITE_OK ? ok_status() : err(rc, "read schema");
}

Status SqliteStore::open() {
  const std::string uri = file_uri(options_.path, "");
  // READWRITE falls back to read-only by itself when the OS refuses writes.
  Status s = open_connection(uri, options_.read_only ? SQLITE_OPEN_READONLY
                                                     : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (!s.ok() && (s.reason() == "read_only" || s.reason() == "cantopen") &&
      only_main_file(options_.path)) {
    // A WAL database needs its -shm file to be read; when that is absent and
    // the directory (or the mount) is not writable, SQLite cannot read at all
    // (SQLITE_READONLY_DIRECTORY, or SQLITE_CANTOPEN on a read-only mount).
    // No -shm and no WAL content means no process has the database open and
    // the file alone holds every commit: read it as immutable, which needs no
    // -shm. The price (documented in store.h): rows that a process writes
    // later are not seen until the Store is opened again. If this open fails
    // too, its error is the one reported.
    s = open_connection(file_uri(options_.path, "mode=ro&immutable=1"), SQLITE_OPEN_READONLY);
    snapshot_ = s.ok();
  }
  if (!s.ok()) return s;

  const bool read_only = sqlite3_db_readonly(db_, "main") == 1;
  if (!read_only) {
    // WAL lets readers (this loop among them) work while another process
    // writes, and makes each commit one append.
    sqlite3_stmt* st = nullptr;
    int rc = sqlite3_prepare_v2(db_, "PRAGMA journal_mode = WAL", -1, &st, nullptr);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return err(rc, "enable WAL");
  }
  // synchronous=NORMAL in WAL: a commit is durable once the WAL is synced at
  // checkpoint; a power cut may lose the last statistics, never corrupt.
  if (Status p = exec("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL", "pragmas"); !p.ok())
    return p;

  if (!read_only) {
    if (Status m = schema::migrate(db_, options_.path); !m.ok()) return m;
  } else if (Status c = schema::check_tables(db_, options_.path); !c.ok()) {
    // A read-only file that never got connmgr's tables cannot be used.
    return Error::storage("database is read-only and lacks connmgr's tables: " + options_.path +
                              " [" + c.message() + "]",
                          "read_only");
  }
  // Migrated, or read-only at version 2 already; else (read-only, made by
  // hand or by an older connmgrd) the statistics columns read as their
  // values before any statistics.
  version2_ = !read_only || schema::check_tables(db_, options_.path, schema::kCurrentVersion).ok();
  if (Status p = prepare_all(); !p.ok()) return p;
  if (Status l = load_local_node_id(); !l.ok()) return l;
  sqlite3_busy_timeout(db_, kBusyTimeoutMs);

  if (int rc = flush_timer_.init(loop_); rc != 0)
    return Error::storage(std::string("cannot start the statistics timer: ") + uv_strerror(rc), "io");
  return ok_status();
}

Status SqliteStore::prepare_all() {
  const std::string ep = endpoint_cols(version2_);
  const std::string qualified_ep = endpoint_cols(version2_, "e");
  struct {
    Stmt* stmt;
    std::string sql;
  } all[] = {
      {&list_first_, "SELECT id, name, created_at FROM nodes ORDER BY id LIMIT ?1"},
      {&list_after_, "SELECT id, name, created_at FROM nodes WHERE id > ?1 ORDER BY id LIMIT ?2"},
      {&get_node_, "SELECT id, name, created_at FROM nodes WHERE id = ?1"},
      {&node_exists_, "SELECT 1 FROM nodes WHERE id = ?1"},
      {&endpoints_of_, "SELECT " + ep + " FROM endpoints WHERE node_id = ?1"},
      {&endpoints_of_proto_, "SELECT " + ep + " FROM endpoints WHERE node_id = ?1 AND protocol = ?2"},
      // The node's existence and its endpoints in one statement, hence one
      // read transaction (each costs two fcntl locks of the WAL index): no
      // row means no node, one row of NULLs a node without endpoints.
      // Columns: the node's (as get_node_), then the endpoint's.
      {&node_endpoints_, "SELECT n.id, n.name, n.created_at, " + qualified_ep +
                             " FROM nodes n LEFT JOIN endpoints e ON e.node_id = n.id WHERE n.id = ?1"},
      {&node_endpoints_proto_,
       "SELECT n.id, n.name, n.created_at, " + qualified_ep +
           " FROM nodes n LEFT JOIN endpoints e ON e.node_id = n.id AND e.protocol = ?2 WHERE n.id = ?1"},
      // A page of nodes is a range of ids: one scan of the node_id index.
      {&endpoints_in_range_,
       "SELECT " + ep + " FROM endpoints WHERE node_id BETWEEN ?1 AND ?2 ORDER BY node_id"},
      {&get_endpoint_, "SELECT " + ep + " FROM endpoints WHERE id = ?1"},
      {&data_version_, "PRAGMA data_version"},
      {&count_nodes_, "SELECT count(*) FROM nodes"},
      {&count_endpoints_, "SELECT count(*) FROM endpoints"},
      {&insert_node_, "INSERT INTO nodes (id, name, created_at) VALUES (?1, ?2, ?3)"},
      {&insert_endpoint_,
       "INSERT INTO endpoints (node_id, protocol, address, port, server_name, alpn, pin_sha256) "
       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"},
      {&delete_node_, "DELETE FROM nodes WHERE id = ?1"},
      {&delete_endpoint_, "DELETE FROM endpoints WHERE id = ?1"},
      // Prepared only with the statistics columns there (see version2_).
      {&update_stats_, !version2_ ? std::string() :
       "UPDATE endpoints SET success_count = success_count + ?2, "
       "failure_count = failure_count + ?3, "
       "last_success_at = CASE WHEN ?4 IS NULL THEN last_success_at "
       "  ELSE max(coalesce(last_success_at, ?4), ?4) END, "
       "last_failure_at = CASE WHEN ?5 IS NULL THEN last_failure_at "
       "  ELSE max(coalesce(last_failure_at, ?5), ?5) END, "
       // The error goes with the latest failure: a queued failure older
       // than the stored one (clocks, another writer) keeps the stored text.
       // SET expressions read the row as it was before this UPDATE.
       "last_error = CASE WHEN ?5 IS NOT NULL AND "
       "  (last_failure_at IS NULL OR ?5 >= last_failure_at) THEN ?6 ELSE last_error END, "
       "uncharged_failure_count = uncharged_failure_count + ?7, "
       // The queued outcomes in order (StatDelta): a success resets the
       // run of failures, the failures after the last success add to it.
       "consecutive_failures = CASE WHEN ?8 THEN 0 ELSE consecutive_failures END + ?9, "
       "rtt_ms = CASE WHEN ?10 IS NULL THEN rtt_ms WHEN rtt_ms IS NULL THEN ?10 "
       "  ELSE rtt_ms * ?11 + ?12 END "
       "WHERE id = ?1"},
  };
  for (auto& s : all) {
    if (s.sql.empty()) continue;
    int rc = s.stmt->prepare(db_, s.sql.c_str());
    if (rc != SQLITE_OK) return err(rc, "prepare");
  }
  return ok_status();
}

Status SqliteStore::load_local_node_id() {
  sqlite3_stmt* st = nullptr;
  // A read-only database made by hand (version 0) has no local_node table.
  int rc = sqlite3_prepare_v2(db_,
                              "SELECT node_id FROM local_node WHERE id = 1", -1, &st, nullptr);
  if (rc == SQLITE_ERROR && sqlite3_db_readonly(db_, "main") == 1) {
    local_node_id_ = random_node_id();
    return ok_status();
  }
  if (rc != SQLITE_OK) return err(rc, "read local node id");
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) local_node_id_ = opt_text(st, 0).value_or("");
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return err(rc, "read local node id");
  if (!local_node_id_.empty()) return ok_status();
  if (sqlite3_db_readonly(db_, "main") == 1) {
    // Nothing can be kept: use an id for this run only.
    local_node_id_ = random_node_id();
    return ok_status();
  }
  return set_local_node_id(random_node_id());
}

Status SqliteStore::set_local_node_id(const std::string& node_id) {
  if (!db_) return closed_error();
  sqlite3_stmt* st = nullptr;
  int rc = sqlite3_prepare_v2(
      db_, "INSERT INTO local_node (id, node_id) VALUES (1, ?1) "
           "ON CONFLICT (id) DO UPDATE SET node_id = excluded.node_id",
      -1, &st, nullptr);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(st, 1, node_id.c_str(), -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) return err(rc, "store local node id");
  local_node_id_ = node_id;
  return ok_status();
}

// --- reads --------------------------------------------------------------------

Result<NodePage> SqliteStore::list_nodes(int limit, const std::optional<std::string>& after) {
  if (!db_) return closed_error();
  if (limit < 1) limit = 1;
  NodePage page;
  // One more row than asked tells whether a next page exists.
  Use q(after ? list_after_ : list_first_);
  if (after) {
    q.bind(1, *after);
    q.bind(2, static_cast<int64_t>(limit) + 1);
  } else {
    q.bind(1, static_cast<int64_t>(limit) + 1);
  }
  int rc;
  while ((rc = q.step()) == SQLITE_ROW) page.nodes.push_back(read_node(*q));
  if (rc != SQLITE_DONE) return err(rc, "list nodes");
  if (page.nodes.size() > static_cast<size_t>(limit)) {
    page.nodes.pop_back();
    page.next = page.nodes.back().id;
  }
  return page;
}

Result<Node> SqliteStore::get_node(const std::string& node_id) {
  if (!db_) return closed_error();
  Use q(get_node_);
  q.bind(1, node_id);
  int rc = q.step();
  if (rc == SQLITE_ROW) return read_node(*q);
  if (rc == SQLITE_DONE)
    return Error::node_not_found(node_id);
  return err(rc, "get node");
}

void SqliteStore::overlay(Endpoint& e) const {
  // Reads include what was recorded but not yet flushed, so that ranking
  // reflects every acknowledged outcome.
  auto it = pending_.find(e.id);
  if (it == pending_.end()) return;
  const StatDelta& d = it->second;
  e.success_count += d.successes;
  e.failure_count += d.charged_failures;
  e.uncharged_failure_count += d.uncharged_failures;
  e.consecutive_failures = d.consecutive_failures(e.consecutive_failures);
  e.rtt_ms = d.rtt_ms(e.rtt_ms);
  if (d.last_success_at) e.last_success_at = std::max(e.last_success_at.value_or(INT64_MIN), *d.last_success_at);
  if (d.last_failure_at && *d.last_failure_at >= e.last_failure_at.value_or(INT64_MIN)) {
    e.last_failure_at = d.last_failure_at;
    e.last_error = d.last_error;
  }
}

Result<std::vector<Endpoint>> SqliteStore::query_endpoints(const std::string& node_id,
                                                           const std::optional<std::string>& protocol) {
  std::vector<Endpoint> out;
  Use q(protocol ? endpoints_of_proto_ : endpoints_of_);
  q.bind(1, node_id);
  if (protocol) q.bind(2, *protocol);
  int rc;
  while ((rc = q.step()) == SQLITE_ROW) {
    out.push_back(read_endpoint(*q));
    overlay(out.back());
  }
  if (rc != SQLITE_DONE) return err(rc, "list endpoints");
  std::sort(out.begin(), out.end(), ranks_before);
  return out;
}

Result<NodeWithEndpoints> SqliteStore::node_with_endpoints(
    const std::string& node_id, const std::optional<std::string>& protocol) {
  if (!db_) return closed_error();
  constexpr int kFirstEndpointCol = 3;
  NodeWithEndpoints out;
  Use q(protocol ? node_endpoints_proto_ : node_endpoints_);
  q.bind(1, node_id);
  if (protocol) q.bind(2, *protocol);
  bool node_found = false;
  int rc;
  while ((rc = q.step()) == SQLITE_ROW) {
    if (!node_found) out.node = read_node(*q);
    node_found = true;
    // A LEFT JOIN's row of NULLs: the node has no (such) endpoint.
    if (sqlite3_column_type(*q, kFirstEndpointCol) == SQLITE_NULL) continue;
    out.endpoints.push_back(read_endpoint(*q, kFirstEndpointCol));
    overlay(out.endpoints.back());
  }
  if (rc != SQLITE_DONE) return err(rc, "list endpoints");
  if (!node_found) return Error::node_not_found(node_id);
  std::sort(out.endpoints.begin(), out.endpoints.end(), ranks_before);
  return out;
}

Result<std::vector<Endpoint>> SqliteStore::endpoints_of(const std::string& node_id,
                                                        const std::optional<std::string>& protocol) {
  auto r = node_with_endpoints(node_id, protocol);
  if (!r) return r.error();
  return std::move(r->endpoints);
}

Result<std::vector<Endpoint>> SqliteStore::endpoints_of_nodes(const std::vector<std::string>& ids) {
  if (!db_) return closed_error();
  std::vector<Endpoint> out;
  if (ids.empty()) return out;
  // The distinct ids in index order; groups[i] collects sorted[i]'s endpoints.
  std::vector<std::string_view> sorted(ids.begin(), ids.end());
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  std::vector<std::vector<Endpoint>> groups(sorted.size());
  auto complete = scan_endpoint_range(sorted, groups);
  if (!complete) return complete.error();
  for (size_t i = 0; i < sorted.size(); ++i) {
    if (i >= *complete) {
      auto eps = query_endpoints(std::string(sorted[i]), std::nullopt);
      if (!eps) return eps.error();
      groups[i] = std::move(eps).value();
    } else {
      std::sort(groups[i].begin(), groups[i].end(), ranks_before);
    }
  }
  // In the order asked for, each node's endpoints ranked (a group is moved
  // out unless its id was asked for more than once).
  const bool distinct = sorted.size() == ids.size();
  for (const auto& id : ids) {
    const size_t i = static_cast<size_t>(
        std::lower_bound(sorted.begin(), sorted.end(), std::string_view(id)) - sorted.begin());
    if (distinct)
      std::move(groups[i].begin(), groups[i].end(), std::back_inserter(out));
    else
      out.insert(out.end(), groups[i].begin(), groups[i].end());
  }
  return out;
}

// One scan of [first, last], rows in node_id order, merged with the sorted
// ids. Rows of nodes not asked for (ids not contiguous, or a node another
// process added since the page was read) are stepped over; after too many
// of them the scan stops. Returns k: sorted[0, k) are complete (every row
// of theirs has passed); the rest are to be read one by one.
Result<size_t> SqliteStore::scan_endpoint_range(const std::vector<std::string_view>& sorted,
                                                std::vector<std::vector<Endpoint>>& groups) {
  size_t k = 0;
  Use q(endpoints_in_range_);
  q.bind(1, std::string(sorted.front()));
  q.bind(2, std::string(sorted.back()));
  size_t foreign = 0;
  int rc;
  while ((rc = q.step()) == SQLITE_ROW) {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(*q, 1));
    const std::string_view node(text ? text : "", static_cast<size_t>(sqlite3_column_bytes(*q, 1)));
    while (k < sorted.size() && sorted[k] < node) ++k;
    if (k == sorted.size()) break;
    if (sorted[k] != node) {
      // sorted[k] > node: no row of sorted[k] has been seen yet, so the
      // ids from k on can still be read one by one.
      if (++foreign > kMaxForeignRows) break;
      continue;
    }
    groups[k].push_back(read_endpoint(*q));
    overlay(groups[k].back());
  }
  if (rc == SQLITE_DONE) return sorted.size();
  if (rc != SQLITE_ROW) return err(rc, "list endpoints");
  return k;
}

Result<Endpoint> SqliteStore::get_endpoint(int64_t endpoint_id) {
  if (!db_) return closed_error();
  Use q(get_endpoint_);
  q.bind(1, endpoint_id);
  int rc = q.step();
  if (rc == SQLITE_ROW) {
    Endpoint e = read_endpoint(*q);
    overlay(e);
    return e;
  }
  if (rc == SQLITE_DONE)
    return Error::endpoint_not_found(endpoint_id);
  return err(rc, "get endpoint");
}

Result<StoreCounts> SqliteStore::counts(std::chrono::milliseconds max_age) {
  if (!db_) return closed_error();
  const uint64_t now = uv_now(loop_);
  if (counts_cache_ && now - counts_checked_at_ < static_cast<uint64_t>(max_age.count())) return *counts_cache_;
  counts_checked_at_ = now;
  int64_t version;
  {
    Use q(data_version_);
    int rc = q.step();
    if (rc != SQLITE_ROW) return err(rc, "read data_version");
    version = sqlite3_column_int64(*q, 0);
  }
  if (counts_cache_ && version == counts_version_) return *counts_cache_;
  StoreCounts c;
  {
    Use q(count_nodes_);
    int rc = q.step();
    if (rc != SQLITE_ROW) return err(rc, "count nodes");
    c.nodes = sqlite3_column_int64(*q, 0);
  }
  {
    Use q(count_endpoints_);
    int rc = q.step();
    if (rc != SQLITE_ROW) return err(rc, "count endpoints");
    c.endpoints = sqlite3_column_int64(*q, 0);
  }
  // A commit by another process between the version and the counts only
  // makes the next call count again.
  counts_cache_ = c;
  counts_version_ = version;
  return c;
}

// --- writes -------------------------------------------------------------------

Result<Endpoint> SqliteStore::insert_endpoint(const std::string& node_id, const EndpointSpec& spec) {
  Use q(insert_endpoint_);
  q.bind(1, node_id);
  q.bind(2, spec.protocol);
  q.bind(3, spec.address);
  q.bind(4, static_cast<int64_t>(spec.port));
  q.bind(5, spec.server_name);
  q.bind(6, spec.alpn);
  q.bind(7, spec.pin_sha256);
  int rc = q.step();
  if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
    return Error::already_exists(
                 "node '" + node_id + "' already has endpoint " + spec.protocol + " " + spec.address +
                     " port " + std::to_string(spec.port));
  if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
    return Error::node_not_found(node_id);
  if ((rc & 0xff) == SQLITE_CONSTRAINT)
    return Error::invalid_params("endpoint refused by the database: " +
                                 std::string(sqlite3_errmsg(db_)));
  if (rc != SQLITE_DONE) return err(rc, "add endpoint");
  Endpoint e;
  e.id = sqlite3_last_insert_rowid(db_);
  e.node_id = node_id;
  e.protocol = spec.protocol;
  e.address = spec.address;
  e.port = spec.port;
  e.server_name = spec.server_name;
  e.alpn = spec.alpn;
  e.pin_sha256 = spec.pin_sha256;
  return e;
}

Result<NodeWithEndpoints> SqliteStore::add_node(const NodeSpec& spec) {
  if (!db_) return closed_error();
  counts_cache_.reset();
  if (Status s = begin(); !s.ok()) return s;
  NodeWithEndpoints out;
  out.node.id = spec.id;
  out.node.name = spec.name;
  out.node.created_at = unix_now_ms();
  {
    Use q(insert_node_);
    q.bind(1, spec.id);
    q.bind(2, spec.name);
    q.bind(3, out.node.created_at);
    int rc = q.step();
    if (rc != SQLITE_DONE) {
      // The error first: ROLLBACK resets sqlite3_errmsg.
      Error e = rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE
                    ? Error::already_exists("node '" + spec.id + "' already exists")
                    : err(rc, "add node");
      rollback();
      return e;
    }
  }
  for (const auto& es : spec.endpoints) {
    auto e = insert_endpoint(spec.id, es);
    if (!e) {
      rollback();
      return e.error();
    }
    out.endpoints.push_back(std::move(e).value());
  }
  if (Status s = exec("COMMIT", "commit"); !s.ok()) {
    rollback();
    return s;
  }
  std::sort(out.endpoints.begin(), out.endpoints.end(), ranks_before);
  return out;
}

Status SqliteStore::remove_node(const std::string& node_id) {
  if (!db_) return closed_error();
  counts_cache_.reset();
  Use q(delete_node_);
  q.bind(1, node_id);
  int rc = q.step();
  if (rc != SQLITE_DONE) return err(rc, "remove node");
  if (sqlite3_changes(db_) == 0) return Error::node_not_found(node_id);
  return ok_status();
}

Result<Endpoint> SqliteStore::add_endpoint(const std::string& node_id, const EndpointSpec& spec) {
  if (!db_) return closed_error();
  // The foreign key names a missing node; say so before the insert.
  {
    Use q(node_exists_);
    q.bind(1, node_id);
    int rc = q.step();
    if (rc == SQLITE_DONE) return Error::node_not_found(node_id);
    if (rc != SQLITE_ROW) return err(rc, "find node");
  }
  counts_cache_.reset();
  return insert_endpoint(node_id, spec);
}

Status SqliteStore::remove_endpoint(int64_t endpoint_id) {
  if (!db_) return closed_error();
  counts_cache_.reset();
  Use q(delete_endpoint_);
  q.bind(1, endpoint_id);
  int rc = q.step();
  if (rc != SQLITE_DONE) return err(rc, "remove endpoint");
  if (sqlite3_changes(db_) == 0)
    return Error::endpoint_not_found(endpoint_id);
  pending_.erase(endpoint_id);
  return ok_status();
}

// --- the inventory mirror -----------------------------------------------------

Status SqliteStore::prepare_mirror() {
  if (mirror_prepared_) return ok_status();
  if (Status s = schema::ensure_mirror_table(db_, options_.path); !s.ok()) return s;
  struct {
    Stmt* stmt;
    const char* sql;
  } all[] = {
      {&mirror_get_, "SELECT inventory_id, revision, synced_at FROM inventory_mirror WHERE id = 1"},
      {&mirror_set_,
       "INSERT INTO inventory_mirror (id, inventory_id, revision, synced_at) VALUES (1, ?1, ?2, ?3) "
       "ON CONFLICT (id) DO UPDATE SET inventory_id = excluded.inventory_id, "
       "revision = excluded.revision, synced_at = excluded.synced_at"},
      // Never INSERT OR REPLACE: replacing a node deletes its endpoints.
      {&upsert_node_,
       "INSERT INTO nodes (id, name, created_at) VALUES (?1, ?2, ?3) "
       "ON CONFLICT (id) DO UPDATE SET name = excluded.name, created_at = excluded.created_at"},
      {&clash_endpoint_,
       "DELETE FROM endpoints WHERE node_id = ?1 AND protocol = ?2 AND address = ?3 AND port = ?4 "
       "AND id <> ?5"},
      // The server's columns only: the statistics stay this host's.
      {&upsert_endpoint_,
       "INSERT INTO endpoints (id, node_id, protocol, address, port, server_name, alpn, pin_sha256) "
       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (id) DO UPDATE SET "
       "node_id = excluded.node_id, protocol = excluded.protocol, address = excluded.address, "
       "port = excluded.port, server_name = excluded.server_name, alpn = excluded.alpn, "
       "pin_sha256 = excluded.pin_sha256"},
      {&endpoint_ids_in_, "SELECT id FROM endpoints WHERE node_id > ?1 AND node_id <= ?2"},
      {&node_ids_after_, "SELECT id FROM nodes WHERE id > ?1 ORDER BY id LIMIT ?2"},
      {&node_ids_upto_, "SELECT id FROM nodes WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3"},
  };
  for (auto& s : all)
    if (int rc = s.stmt->prepare(db_, s.sql); rc != SQLITE_OK) return err(rc, "prepare mirror");
  mirror_prepared_ = true;
  return ok_status();
}

void SqliteStore::checkpoint_in_background() {
  if (checkpointer_ || !db_ || snapshot_ || sqlite3_db_readonly(db_, "main") == 1) return;
  checkpointer_ = std::make_unique<WalCheckpointer>(loop_, file_uri(options_.path, ""));
  // Replaces SQLite's automatic checkpoint (itself a WAL hook).
  sqlite3_wal_hook(
      db_,
      [](void* arg, sqlite3*, const char*, int pages) {
        static_cast<WalCheckpointer*>(arg)->wal_grew(pages);
        return SQLITE_OK;
      },
      checkpointer_.get());
}

Result<std::optional<MirrorState>> SqliteStore::mirror_state() {
  if (!db_) return closed_error();
  if (Status s = prepare_mirror(); !s.ok()) return s;
  Use q(mirror_get_);
  const int rc = q.step();
  if (rc == SQLITE_DONE) return std::optional<MirrorState>();
  if (rc != SQLITE_ROW) return err(rc, "read inventory_mirror");
  MirrorState m;
  m.inventory_id = opt_text(*q, 0).value_or("");
  m.revision = sqlite3_column_int64(*q, 1);
  m.synced_at = opt_int(*q, 2);
  return std::optional<MirrorState>(std::move(m));
}

Result<std::vector<std::string>> SqliteStore::node_ids_between(const std::string& after,
                                                               const std::optional<std::string>& upto,
                                                               int limit) {
  if (!db_) return closed_error();
  if (Status s = prepare_mirror(); !s.ok()) return s;
  std::vector<std::string> out;
  Use q(upto ? node_ids_upto_ : node_ids_after_);
  q.bind(1, after);
  if (upto) q.bind(2, *upto);
  q.bind(upto ? 3 : 2, static_cast<int64_t>(limit));
  int rc;
  while ((rc = q.step()) == SQLITE_ROW) out.push_back(opt_text(*q, 0).value_or(""));
  if (rc != SQLITE_DONE) return err(rc, "list node ids");
  return out;
}

Status SqliteStore::upsert_mirror_endpoint(const Endpoint& e, bool clash_possible) {
  if (clash_possible) {
    Use q(clash_endpoint_);
    q.bind(1, e.node_id);
    q.bind(2, e.protocol);
    q.bind(3, e.address);
    q.bind(4, static_cast<int64_t>(e.port));
    q.bind(5, e.id);
    if (int rc = q.step(); rc != SQLITE_DONE) return err(rc, "mirror endpoint");
  }
  Use q(upsert_endpoint_);
  q.bind(1, e.id);
  q.bind(2, e.node_id);
  q.bind(3, e.protocol);
  q.bind(4, e.address);
  q.bind(5, static_cast<int64_t>(e.port));
  q.bind(6, e.server_name);
  q.bind(7, e.alpn);
  q.bind(8, e.pin_sha256);
  const int rc = q.step();
  // Its node is gone: a later change of the log removed it.
  if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) return ok_status();
  return rc == SQLITE_DONE ? ok_status() : err(rc, "mirror endpoint");
}

// The rows in the range that the write does not hold are removed: one scan
// of each table's index over the range (a stale endpoint that shares the
// (node, protocol, address, port) of one upserted has another id: it goes
// too, so the upserts cannot clash).
Status SqliteStore::apply_exact_range(const MirrorWrite& w, std::vector<std::string>& removed) {
  std::unordered_map<std::string_view, bool> nodes;
  for (const Node& n : w.upsert_nodes) nodes[n.id] = true;
  std::unordered_map<int64_t, bool> endpoints;
  for (const Endpoint& e : w.upsert_endpoints) endpoints[e.id] = true;
  std::vector<int64_t> gone_endpoints;
  {
    Use q(endpoint_ids_in_);
    q.bind(1, w.exact->after);
    q.bind(2, w.exact->upto);
    int rc;
    while ((rc = q.step()) == SQLITE_ROW)
      if (!endpoints.count(sqlite3_column_int64(*q, 0))) gone_endpoints.push_back(sqlite3_column_int64(*q, 0));
    if (rc != SQLITE_DONE) return err(rc, "mirror endpoints");
  }
  for (int64_t id : gone_endpoints) {
    Use q(delete_endpoint_);
    q.bind(1, id);
    if (int rc = q.step(); rc != SQLITE_DONE) return err(rc, "mirror endpoint removal");
    pending_.erase(id);
  }
  std::vector<std::string> gone_nodes;
  {
    Use q(node_ids_upto_);
    q.bind(1, w.exact->after);
    q.bind(2, w.exact->upto);
    q.bind(3, static_cast<int64_t>(INT64_MAX));
    int rc;
    while ((rc = q.step()) == SQLITE_ROW) {
      std::string id = opt_text(*q, 0).value_or("");
      if (!nodes.count(id)) gone_nodes.push_back(std::move(id));
    }
    if (rc != SQLITE_DONE) return err(rc, "mirror nodes");
  }
  for (auto& id : gone_nodes) {
    Use q(delete_node_);
    q.bind(1, id);
    if (int rc = q.step(); rc != SQLITE_DONE) return err(rc, "mirror node removal");
    removed.push_back(std::move(id));
  }
  return ok_status();
}

Status SqliteStore::apply_mirror_rows(const MirrorWrite& w, std::vector<std::string>& removed) {
  if (w.exact)
    if (Status s = apply_exact_range(w, removed); !s.ok()) return s;
  for (int64_t id : w.remove_endpoints) {
    Use q(delete_endpoint_);
    q.bind(1, id);
    if (int rc = q.step(); rc != SQLITE_DONE) return err(rc, "mirror endpoint removal");
    pending_.erase(id);
  }
  for (const auto& id : w.remove_nodes) {
    Use q(delete_node_);
    q.bind(1, id);
    if (int rc = q.step(); rc != SQLITE_DONE) return err(rc, "mirror node removal");
    if (sqlite3_changes(db_) > 0) removed.push_back(id);
  }
  for (const Node& n : w.upsert_nodes) {
    Use q(upsert_node_);
    q.bind(1, n.id);
    q.bind(2, n.name);
    q.bind(3, n.created_at);
    if (int rc = q.step(); rc != SQLITE_DONE) return err(rc, "mirror node");
  }
  for (const Endpoint& e : w.upsert_endpoints)
    if (Status s = upsert_mirror_endpoint(e, !w.exact); !s.ok()) return s;
  if (w.state) {
    Use q(mirror_set_);
    q.bind(1, w.state->inventory_id);
    q.bind(2, w.state->revision);
    q.bind(3, w.state->synced_at);
    if (int rc = q.step(); rc != SQLITE_DONE) return err(rc, "write inventory_mirror");
  }
  return ok_status();
}

Result<std::vector<std::string>> SqliteStore::apply_mirror(const MirrorWrite& write) {
  if (!db_) return closed_error();
  if (Status s = prepare_mirror(); !s.ok()) return s;
  counts_cache_.reset();
  if (Status s = begin(); !s.ok()) return s;
  std::vector<std::string> removed;
  if (Status s = apply_mirror_rows(write, removed); !s.ok()) {
    rollback();
    return s;
  }
  if (Status s = exec("COMMIT", "commit mirror"); !s.ok()) {
    rollback();
    return s;
  }
  return removed;
}

// --- statistics ---------------------------------------------------------------

// Rows written by one timer-driven flush. A burst of thousands of connects
// queues thousands of rows, ~7 us each: written in one transaction they held
// the loop for ~20 ms. Flushed in slices of this many, a millisecond apart,
// each holds it ~2 ms; close() and flush() still write everything at once.
constexpr size_t kRowsPerFlush = 256;

void SqliteStore::arm_timer(uint64_t delay_ms) {
  if (!flush_timer_.initialized() || flush_timer_.active()) return;
  // The interval counts from now, not from the loop's cached time, which
  // may be older than the interval (a long open() before the loop ran).
  uv_update_time(loop_);
  flush_timer_.start(delay_ms, [this] { on_flush_timer(); });
}

void SqliteStore::on_flush_timer() {
  // On a lock the queue stays and waits a whole interval; after a slice the
  // rest follows a millisecond later (libuv runs a timer re-armed at 0 ms
  // again in the same pass, before any I/O).
  const bool written = flush_rows(kRowsPerFlush).ok();
  if (!pending_.empty()) arm_timer(written ? 1 : static_cast<uint64_t>(options_.flush_interval.count()));
}

void SqliteStore::record_success(int64_t endpoint_id, int64_t at, std::optional<double> rtt_ms) {
  // A sample that is no duration (negative, NaN, infinite) would poison
  // every later value: it is left out, the success still counts.
  if (rtt_ms && !(std::isfinite(*rtt_ms) && *rtt_ms >= 0)) rtt_ms.reset();
  StatDelta& d = pending_[endpoint_id];
  d.success(rtt_ms);
  d.last_success_at = std::max(d.last_success_at.value_or(INT64_MIN), at);
  arm_timer(static_cast<uint64_t>(options_.flush_interval.count()));
}

void SqliteStore::record_failure(int64_t endpoint_id, const std::string& reason, int64_t at, bool charged) {
  StatDelta& d = pending_[endpoint_id];
  d.failure(charged);
  if (!d.last_failure_at || at >= *d.last_failure_at) {
    d.last_failure_at = at;
    d.last_error = reason;
  }
  arm_timer(static_cast<uint64_t>(options_.flush_interval.count()));
}

Status SqliteStore::flush() { return flush_rows(SIZE_MAX); }

int SqliteStore::write_delta(int64_t id, const StatDelta& d) {
  Use q(update_stats_);
  q.bind(1, id);
  q.bind(2, d.successes);
  q.bind(3, d.charged_failures);
  q.bind(4, d.last_success_at);
  q.bind(5, d.last_failure_at);
  q.bind(6, d.last_error);
  q.bind(7, d.uncharged_failures);
  q.bind(8, static_cast<int64_t>(d.reset));
  q.bind(9, d.failures_since);
  if (d.rtt_samples > 0) {  // else ?10 stays NULL: the RTT is kept
    q.bind(10, d.rtt_from_null);
    q.bind(11, d.rtt_scale);
    q.bind(12, d.rtt_offset);
  }
  return q.step();
}

Status SqliteStore::flush_rows(size_t max_rows) {
  if (pending_.empty() || !db_) return ok_status();
  if (Status s = begin(); !s.ok()) return s;  // locked: the queue stays
  if (!update_stats_.get()) {
    rollback();
    return Error::storage("database is read-only: " + options_.path +
                              " (its endpoints table lacks the statistics columns that opening it "
                              "writable adds)",
                          "read_only");
  }
  // In rowid order: neighbouring endpoints share B-tree pages, so each page
  // is read and dirtied once.
  std::vector<int64_t> ids;
  ids.reserve(pending_.size());
  for (const auto& entry : pending_) ids.push_back(entry.first);
  std::sort(ids.begin(), ids.end());
  if (ids.size() > max_rows) ids.resize(max_rows);
  for (int64_t id : ids) {
    if (int rc = write_delta(id, pending_.at(id)); rc != SQLITE_DONE) {
      Error e = err(rc, "write statistics");
      rollback();
      return e;
    }
  }
  if (Status s = exec("COMMIT", "commit statistics"); !s.ok()) {
    rollback();
    return s;
  }
  for (int64_t id : ids) pending_.erase(id);
  return ok_status();
}

Status SqliteStore::close() {
  if (closed_) return ok_status();
  closed_ = true;
  Status result = ok_status();
  if (db_) {
    // Shutdown only: keep trying a locked flush for a bounded time.
    const auto deadline = std::chrono::steady_clock::now() + options_.close_lock_limit;
    for (;;) {
      result = flush();
      if (result.ok() || result.reason() != "locked" || std::chrono::steady_clock::now() >= deadline)
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  flush_timer_.close();
  if (checkpointer_) {
    sqlite3_wal_hook(db_, nullptr, nullptr);
    checkpointer_->close();
  }
  if (db_) {
    for (Stmt* st : {&list_first_, &list_after_, &get_node_, &endpoints_of_, &endpoints_of_proto_,
                     &get_endpoint_, &data_version_, &count_nodes_, &count_endpoints_, &insert_node_,
                     &insert_endpoint_, &delete_node_, &delete_endpoint_, &node_exists_,
                     &update_stats_, &node_endpoints_, &node_endpoints_proto_, &endpoints_in_range_,
                     &mirror_get_, &mirror_set_, &upsert_node_, &clash_endpoint_, &upsert_endpoint_,
                     &endpoint_ids_in_, &node_ids_after_, &node_ids_upto_})
      st->finalize();
    sqlite3_close_v2(db_);
    db_ = nullptr;
  }
  return result;
}

}  // namespace

Result<std::unique_ptr<Store>> Store::open(uv_loop_t* loop, StoreOptions options) {
  auto store = std::make_unique<SqliteStore>(loop, std::move(options));
  if (Status s = store->open(); !s.ok()) return s;
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace connmgr
