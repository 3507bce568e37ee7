// The database schema (the tables of schema.cc, which other programs use
// too) and its migrations, applied at open.
//
// Version 0 is "no schema yet, or exactly the documented tables made by
// hand" (e.g. with the sqlite3 shell); each migration moves one version up,
// only ever adding tables and indexes, and is safe to run on a database that
// already has them (CREATE ... IF NOT EXISTS).
#pragma once

#include <sqlite3.h>

#include <string>

#include "util/error.h"

namespace connmgr::schema {

// The version this build writes into PRAGMA user_version.
inline constexpr int kCurrentVersion = 1;

// Brings the database to kCurrentVersion inside one IMMEDIATE transaction.
// A database of a newer version is refused (kStorage, reason "schema"), as is
// one whose tables lack a documented column. `path` is for messages.
Status migrate(sqlite3* db, const std::string& path);

// Checks that the documented tables and columns exist (for a read-only database
// that cannot be migrated).
Status check_tables(sqlite3* db, const std::string& path);

// Maps an SQLite result code to the project's Error: kStorage with reason
// "locked", "read_only", "corrupt", "full", "cantopen", "io" or "sqlite", and a
// message naming the file.
Error sqlite_error(int rc, sqlite3* db, const std::string& path, const std::string& what);

}  // namespace connmgr::schema
