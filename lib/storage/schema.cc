#include "storage/schema.h"

#include <set>

namespace connmgr::schema {

namespace {

// The tables, word for word: other programs read and write them with plain
// SQL (docs/operations.md, "The database"), so they are a contract; changes
// only add (migrations).
constexpr const char* kApiTables = R"sql(
CREATE TABLE IF NOT EXISTS nodes (
  id          TEXT PRIMARY KEY,
  name        TEXT,
  created_at  INTEGER NOT NULL DEFAULT (CAST(strftime('%s','now') AS INTEGER) * 1000)
);
CREATE TABLE IF NOT EXISTS endpoints (
  id              INTEGER PRIMARY KEY,
  node_id         TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
  protocol        TEXT NOT NULL,
  address         TEXT NOT NULL,
  port            INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
  server_name     TEXT,
  alpn            TEXT,
  pin_sha256      TEXT,
  success_count   INTEGER NOT NULL DEFAULT 0,
  failure_count   INTEGER NOT NULL DEFAULT 0,
  last_success_at INTEGER,
  last_failure_at INTEGER,
  last_error      TEXT,
  UNIQUE (node_id, protocol, address, port)
);
)sql";

// Version 1: this host's identity. Nodes by id use the primary key's index and
// a node's endpoints use the UNIQUE (node_id, ...) index, whose first column
// is node_id; the explicit index below also serves ON DELETE CASCADE on a
// database adopted from a schema that lacked the UNIQUE constraint's index.
constexpr const char* kVersion1 = R"sql(
CREATE TABLE IF NOT EXISTS local_node (
  id         INTEGER PRIMARY KEY CHECK (id = 1),
  node_id    TEXT NOT NULL,
  created_at INTEGER NOT NULL DEFAULT (CAST(strftime('%s','now') AS INTEGER) * 1000)
);
CREATE INDEX IF NOT EXISTS endpoints_node_id ON endpoints(node_id);
)sql";

// Version 2: statistics that describe the endpoint. ALTER TABLE ADD COLUMN
// (no IF NOT EXISTS in SQLite): each is added only when missing, so a
// database whose owner added them already is adopted as it is.
struct AddedColumn {
  const char* name;
  const char* declaration;
};
constexpr AddedColumn kVersion2Columns[] = {
    // Smoothed handshake RTT in ms (alpha 1/8); NULL until a success with an RTT.
    {"rtt_ms", "REAL"},
    // Failed dials since the last success, charged or not.
    {"consecutive_failures", "INTEGER NOT NULL DEFAULT 0"},
    // Failed dials not counted in failure_count.
    {"uncharged_failure_count", "INTEGER NOT NULL DEFAULT 0"},
};

int user_version(sqlite3* db) {
  sqlite3_stmt* st = nullptr;
  int v = -1;
  if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, nullptr) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return v;
}

std::set<std::string> columns_of(sqlite3* db, const char* table) {
  std::set<std::string> cols;
  sqlite3_stmt* st = nullptr;
  const std::string sql = std::string("PRAGMA table_info(") + table + ")";
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK) {
    while (sqlite3_step(st) == SQLITE_ROW)
      cols.insert(reinterpret_cast<const char*>(sqlite3_column_text(st, 1)));
  }
  sqlite3_finalize(st);
  return cols;
}

}  // namespace

Error sqlite_error(int rc, sqlite3* db, const std::string& path, const std::string& what) {
  const char* detail = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  std::string reason;
  std::string message;
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      reason = "locked";
      message = "database is locked by another process: " + path;
      break;
    case SQLITE_READONLY:
      reason = "read_only";
      message = "database is read-only: " + path;
      if (rc == SQLITE_READONLY_DIRECTORY || rc == SQLITE_READONLY_CANTINIT)
        message += " (its directory is not writable, so " + path + "-shm cannot be created)";
      else
        message += " (check the permissions of the file and its directory, and the mount)";
      break;
    case SQLITE_NOTADB:
      reason = "corrupt";
      message = "not a database: " + path + " (the file is left as it is)";
      break;
    case SQLITE_CORRUPT:
      reason = "corrupt";
      message = "database is corrupt: " + path + " (the file is left as it is)";
      break;
    case SQLITE_FULL:
      reason = "full";
      message = "database or disk is full: " + path;
      break;
    case SQLITE_CANTOPEN:
      reason = "cantopen";
      message = "cannot open database: " + path +
                " (does its directory exist, and may connmgrd create files there?)";
      break;
    case SQLITE_IOERR:
      reason = "io";
      message = "I/O error on database: " + path;
      break;
    default:
      reason = "sqlite";
      message = "database error on " + path;
      break;
  }
  return Error::storage(message + " [" + what + ": " + detail + "]", reason);
}

Status check_tables(sqlite3* db, const std::string& path, int version) {
  static const char* kNodeCols[] = {"id", "name", "created_at"};
  static const char* kEndpointCols[] = {
      "id",          "node_id",       "protocol",      "address",         "port",
      "server_name", "alpn",          "pin_sha256",    "success_count",   "failure_count",
      "last_success_at", "last_failure_at", "last_error"};
  auto nodes = columns_of(db, "nodes");
  auto endpoints = columns_of(db, "endpoints");
  const auto lacks = [&](const char* table, const char* c) {
    return Error::storage("table " + std::string(table) + " lacks column " + c + ": " + path, "schema");
  };
  for (const char* c : kNodeCols)
    if (!nodes.count(c)) return lacks("nodes", c);
  for (const char* c : kEndpointCols)
    if (!endpoints.count(c)) return lacks("endpoints", c);
  if (version >= 2)
    for (const AddedColumn& c : kVersion2Columns)
      if (!endpoints.count(c.name)) return lacks("endpoints", c.name);
  return ok_status();
}

namespace {

// Version 2's step: the statistics columns the table lacks.
int add_version2_columns(sqlite3* db) {
  const auto have = columns_of(db, "endpoints");
  for (const AddedColumn& c : kVersion2Columns) {
    if (have.count(c.name)) continue;
    const std::string sql =
        std::string("ALTER TABLE endpoints ADD COLUMN ") + c.name + " " + c.declaration;
    if (int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr); rc != SQLITE_OK) return rc;
  }
  return SQLITE_OK;
}

}  // namespace

Status ensure_mirror_table(sqlite3* db, const std::string& path) {
  constexpr const char* kMirrorTable = R"sql(
CREATE TABLE IF NOT EXISTS inventory_mirror (
  id           INTEGER PRIMARY KEY CHECK (id = 1),
  inventory_id TEXT NOT NULL,
  revision     INTEGER NOT NULL,
  synced_at    INTEGER
);
)sql";
  int rc = sqlite3_exec(db, kMirrorTable, nullptr, nullptr, nullptr);
  return rc == SQLITE_OK ? ok_status() : sqlite_error(rc, db, path, "create inventory_mirror");
}

Status migrate(sqlite3* db, const std::string& path) {
  int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return sqlite_error(rc, db, path, "begin migration");
  // The error first: ROLLBACK resets sqlite3_errmsg.
  auto fail = [&](int code, const char* what) {
    Error e = sqlite_error(code, db, path, what);
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    return e;
  };
  auto refuse = [&](Status s) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    return s;
  };
  const int version = user_version(db);
  if (version > kCurrentVersion)
    return refuse(Error::storage("database schema version " + std::to_string(version) +
                                     " is newer than this connmgrd understands (" +
                                     std::to_string(kCurrentVersion) + "): " + path,
                                 "schema"));
  if (version < 1 && (rc = sqlite3_exec(db, kApiTables, nullptr, nullptr, nullptr)) != SQLITE_OK)
    return fail(rc, "create tables");
  // The documented columns, before anything is added to them.
  if (Status cols = check_tables(db, path); !cols.ok()) return refuse(cols);
  if (version < 1 && (rc = sqlite3_exec(db, kVersion1, nullptr, nullptr, nullptr)) != SQLITE_OK)
    return fail(rc, "migrate to version 1");
  // Every open, not only below version 2: a version-2 database whose
  // endpoints table another program made anew from the documented columns
  // gets its statistics columns back (nothing is written when they exist).
  if ((rc = add_version2_columns(db)) != SQLITE_OK) return fail(rc, "migrate to version 2");
  if (Status cols = check_tables(db, path, kCurrentVersion); !cols.ok()) return refuse(cols);
  if (version != kCurrentVersion) {
    const std::string set = "PRAGMA user_version = " + std::to_string(kCurrentVersion);
    if ((rc = sqlite3_exec(db, set.c_str(), nullptr, nullptr, nullptr)) != SQLITE_OK)
      return fail(rc, "set user_version");
  }
  if ((rc = sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr)) != SQLITE_OK)
    return fail(rc, "commit migration");
  return ok_status();
}

}  // namespace connmgr::schema
