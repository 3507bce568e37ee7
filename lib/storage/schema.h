// The database schema (the tables of schema.cc, which other programs use
// too) and its migrations, applied at open.
//
// Version 0 is "no schema yet, or exactly the documented tables made by
// hand" (e.g. with the sqlite3 shell); each migration moves one version up,
// only ever adding tables, indexes and columns, and is safe to run on a
// database that already has them (CREATE ... IF NOT EXISTS; a column is added
// only when the table lacks it).
//   1: the local_node table, an index on endpoints(node_id).
//   2: endpoints gain rtt_ms REAL (NULL until a success with an RTT),
//      consecutive_failures and uncharged_failure_count (INTEGER NOT NULL
//      DEFAULT 0).
#pragma once

#include <sqlite3.h>

#include <string>

#include "util/error.h"

namespace connmgr::schema {

// The version this build writes into PRAGMA user_version.
inline constexpr int kCurrentVersion = 2;

// Brings the database to kCurrentVersion inside one IMMEDIATE transaction.
// A database of a newer version is refused (kStorage, reason "schema"), as is
// one whose tables lack a documented column. A database already at
// kCurrentVersion with every column is left unchanged. `path` is for messages.
Status migrate(sqlite3* db, const std::string& path);

// Checks that the tables have the columns of schema `version`: the documented
// ones for 0 and 1 (what a database made by hand has, before migrating, or a
// read-only one that cannot be migrated), those plus version 2's statistics
// columns for 2. Errors: kStorage, reason "schema", naming the column.
Status check_tables(sqlite3* db, const std::string& path, int version = 0);

// The postgres inventory's bookkeeping table, inventory_mirror (one row:
// inventory_id, revision, synced_at), made on first use rather than by a
// migration: a file that never mirrors a server keeps its version, and an
// older connmgrd still opens one that did. Idempotent.
Status ensure_mirror_table(sqlite3* db, const std::string& path);

// Maps an SQLite result code to the project's Error: kStorage with reason
// "locked", "read_only", "corrupt", "full", "cantopen", "io" or "sqlite", and a
// message naming the file.
Error sqlite_error(int rc, sqlite3* db, const std::string& path, const std::string& what);

}  // namespace connmgr::schema
