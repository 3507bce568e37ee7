// The postgres Inventory backend: a fleet's shared nodes and endpoints in a
// PostgreSQL server (15, libpq's asynchronous API driven by the loop), and
// this host's SQLite file as their mirror (storage/inventory.h;
// docs/operations.md, "Running a fleet").
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <uv.h>

#include "storage/inventory.h"
#include "storage/store.h"
#include "util/error.h"

namespace connmgr {

struct PostgresInventoryOptions {
  std::string dsn;  // a libpq connection string without a password (pgpass)
  // The log is read after the last revision applied at least this often,
  // besides LISTEN/NOTIFY.
  std::chrono::milliseconds resync_interval{30000};
  // A connection (resolution, TCP, TLS, authentication) must be up within this.
  std::chrono::milliseconds connect_timeout{5000};
  // Reconnections back off from 100 ms up to this.
  std::chrono::milliseconds retry_max{30000};
};

// Whether a DSN holds a password (a `password` keyword, or one in a URI's
// user info); an unparsable DSN is an error naming what libpq said.
Result<bool> dsn_has_password(const std::string& dsn);
// The DSN as status shows it: normalized, never with a password.
std::string dsn_for_display(const std::string& dsn);

// Builds the backend; start() connects in the background. The Store must
// outlive it.
std::unique_ptr<Inventory> make_postgres_inventory(uv_loop_t* loop, Store& store,
                                                   PostgresInventoryOptions options);

}  // namespace connmgr
