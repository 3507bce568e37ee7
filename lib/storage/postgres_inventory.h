// The postgres Inventory backend: a fleet's shared nodes and endpoints in a
// PostgreSQL server (15, libpq's asynchronous API driven by the loop), and
// this host's SQLite file as their mirror (storage/inventory.h;
// docs/operations.md, "Running a fleet").
//
// What it promises (the server side is storage/pg_schema.h):
// - The server: one connection (storage/pg_connection.h), names resolved on
//   the loop's resolver, statement_timeout 5 s. start() makes the connmgr
//   schema when absent; a newer schema version is refused (unavailable,
//   last_error says so). A DSN holding a password is never used.
// - The mirror: LISTEN/NOTIFY while connected; on (re)connection and every
//   resync_interval the log after the mirror's revision, each change one
//   local transaction, spread over loop turns, the listener told after it
//   committed. A full resync (first start, another inventory, the log pruned
//   past the mirror's revision, a server behind it) walks the nodes in slices
//   of 64, one local transaction and loop turn each; the listener hears
//   kNodeRemoved for each node that was in the mirror and is gone, then one
//   kResync with the revision reached. During it reads see some nodes as the
//   server has them and others as they were, but never miss a node that is on
//   both. Statistics are never sent, and stay with every endpoint that
//   survives (same server id). WAL checkpoints move to a worker thread
//   (Store::checkpoint_in_background).
// - Writes: sent to the server at once (never queued while unavailable:
//   kStorage "unavailable" at once, "inventory server unavailable: <why>"),
//   answered once the mirror reached the write's revision, with the values
//   read from the mirror (a write during a full resync waits for its end).
//   Unique violation -> kAlreadyExists; an endpoint for a missing node ->
//   kNodeNotFound; removing what is not there -> kNodeNotFound /
//   kEndpointNotFound; the connection lost before the answer -> unavailable.
// - status(): state connected once the schema is checked and LISTEN is on;
//   unavailable after a failed try (reconnecting after 100 ms, doubling up to
//   retry_max); lag_s 0 while connected and caught up, else the seconds since
//   the mirror was last known current (kept in the file: a daemon started
//   with the server away shows its age), absent before the first sync.
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
