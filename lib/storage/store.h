// Store: the SQLite database of nodes and endpoints, whose tables other
// programs may read and write too (docs/operations.md, "The database").
//
// Ownership and threads: one Store per process, used from the libuv loop's
// thread only. The Store owns its sqlite3 connection and one timer that
// flushes queued statistics; close() (or the destructor) flushes what it can
// and closes the timer. Other processes may read and write the same file at
// the same time: every query reads the database, never a cached copy.
//
// The loop never waits on another process's lock: the connection runs with a
// busy timeout near zero. Reads work under a foreign write lock (WAL). A write
// that meets SQLITE_BUSY either fails at once with ErrorCode::kStorage and
// reason "locked" (the add/remove calls: callers may retry them, see
// WriteRetries in storage/write_retry.h), or, for statistics, stays
// queued and is retried from the timer: an acknowledged record_* call is never
// lost while the process lives, and close() keeps trying for a bounded time.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <uv.h>

#include "storage/endpoint.h"
#include "storage/node.h"
#include "util/error.h"

namespace connmgr {

struct StoreOptions {
  std::string path;
  // Queued statistics are written in one transaction at least this often.
  std::chrono::milliseconds flush_interval{100};
  // How long close() keeps retrying a flush that meets a foreign lock.
  std::chrono::milliseconds close_lock_limit{5000};
  // How long open() (start-up, before the loop serves) waits for another
  // process's lock while switching to WAL and migrating.
  std::chrono::milliseconds open_lock_limit{5000};
  // Open the file read-only on purpose (tools, tests). A file that cannot be
  // written although this is false still opens: reads work, writes fail
  // with reason "read_only". One case reads a snapshot: a WAL database whose
  // directory (or mount) is not writable and that no process has open (no
  // -shm file) is opened immutable, so rows another process writes after
  // that are seen only when the Store is opened again.
  bool read_only = false;
};

// The postgres inventory's bookkeeping in the mirror (table
// inventory_mirror, made on first use; storage/postgres_inventory.h).
struct MirrorState {
  std::string inventory_id;  // the server inventory the rows come from
  int64_t revision = 0;      // the last revision applied
  std::optional<int64_t> synced_at;  // unix ms: last known current
};

// Rows of the shared inventory written into the mirror in one transaction,
// in this order: the exact range, endpoints removed, nodes removed, nodes
// upserted, endpoints upserted, the state. Upserts keep an endpoint's
// statistics: only the columns the server holds are written.
struct MirrorWrite {
  // A full resync's slice: the mirror's nodes with ids in (after, upto]
  // (byte order) become exactly upsert_nodes, and their endpoints exactly
  // upsert_endpoints; the others in that range are removed.
  struct Range {
    std::string after;
    std::string upto;
  };
  std::optional<Range> exact;
  std::vector<Node> upsert_nodes;
  // Endpoints by the server's id; their statistics fields are ignored. One
  // whose node is absent is skipped (a later change of the log removed it).
  // Outside an exact range, another row with the same (node, protocol,
  // address, port) but a different id is removed first (the server
  // re-created it).
  std::vector<Endpoint> upsert_endpoints;
  std::vector<std::string> remove_nodes;  // absent ones are no error
  std::vector<int64_t> remove_endpoints;  // absent ones are no error
  std::optional<MirrorState> state;
};

struct StoreCounts {
  int64_t nodes = 0;
  int64_t endpoints = 0;
};

class Store {
 public:
  // Opens or creates the database: WAL, foreign keys, schema migrations
  // (idempotent, never destructive), the local node id. `loop` drives the
  // statistics timer and must outlive the Store. May wait up to
  // open_lock_limit for another process's lock (start-up only). Errors:
  // kStorage with reason "locked", "corrupt" ("not a database: PATH"), "io",
  // "full", "cantopen", "read_only" (a read-only file without connmgr's
  // tables), "schema" (a newer user_version, or a table lacks one of the
  // documented columns);
  // a file that is not a database is never written to.
  static Result<std::unique_ptr<Store>> open(uv_loop_t* loop, StoreOptions options);

  virtual ~Store() = default;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // The ranking of a node's endpoints, best first: an endpoint failing now
  // (consecutive_failures > 0) after every endpoint that is not; then
  // success_count desc, failure_count asc, last_success_at desc
  // (never-succeeded last), id asc. Reads rank with this, and apply the
  // statistics still queued first.
  static bool ranks_before(const Endpoint& a, const Endpoint& b);

  // --- reads -----------------------------------------------------------
  // Every Endpoint read carries the statistics queued but not yet flushed.
  // Nodes ordered by id, at most `limit`, strictly after `after` if given.
  virtual Result<NodePage> list_nodes(int limit, const std::optional<std::string>& after) = 0;
  // kNodeNotFound when absent.
  virtual Result<Node> get_node(const std::string& node_id) = 0;
  // Many nodes' endpoints at once (for nodes.list with_endpoints): grouped by
  // node in the order of `node_ids`, each node's ranked as endpoints_of ranks
  // them; nodes without endpoints (or absent) contribute nothing. A page of
  // consecutive ids is read by one scan of the node_id index.
  virtual Result<std::vector<Endpoint>> endpoints_of_nodes(
      const std::vector<std::string>& node_ids) = 0;
  // A node's endpoints, optionally of one protocol, best first as
  // ranks_before orders them. kNodeNotFound when the node does not exist.
  virtual Result<std::vector<Endpoint>> endpoints_of(
      const std::string& node_id, const std::optional<std::string>& protocol) = 0;
  // The node and its endpoints (of `protocol` if given), ranked as
  // endpoints_of ranks them, read by one statement and so in one read
  // transaction (get_node then endpoints_of take two, each two fcntl locks
  // of the WAL index). kNodeNotFound when the node does not exist.
  virtual Result<NodeWithEndpoints> node_with_endpoints(
      const std::string& node_id, const std::optional<std::string>& protocol) = 0;
  // kEndpointNotFound when absent.
  virtual Result<Endpoint> get_endpoint(int64_t endpoint_id) = 0;
  // Kept between calls until another process commits (PRAGMA data_version)
  // or this Store adds or removes rows: count(*) over 2M rows takes ~30 ms.
  // With `max_age`, another process's commits are looked for at most once
  // per max_age (loop time): asking SQLite costs more than the rest of a
  // `status` call. This Store's own writes are always seen at once.
  virtual Result<StoreCounts> counts(std::chrono::milliseconds max_age = std::chrono::milliseconds(0)) = 0;

  // --- writes (each one transaction) -----------------------------------
  // kAlreadyExists when the node id, or an endpoint's (protocol, address,
  // port) within the spec, already exists; nothing is written then.
  virtual Result<NodeWithEndpoints> add_node(const NodeSpec& spec) = 0;
  // Removes the node and (cascade) its endpoints. kNodeNotFound when absent.
  virtual Status remove_node(const std::string& node_id) = 0;
  // kNodeNotFound, kAlreadyExists (same node, protocol, address, port).
  virtual Result<Endpoint> add_endpoint(const std::string& node_id, const EndpointSpec& spec) = 0;
  // kEndpointNotFound when absent.
  virtual Status remove_endpoint(int64_t endpoint_id) = 0;

  // --- the inventory mirror (postgres backend) ---------------------------
  // The mirror's state, nullopt before any (creates the table on first use).
  virtual Result<std::optional<MirrorState>> mirror_state() = 0;
  // One transaction; returns the nodes that existed and were removed.
  virtual Result<std::vector<std::string>> apply_mirror(const MirrorWrite& write) = 0;
  // Node ids after `after` (and up to `upto` inclusive when given), in id
  // (byte) order, at most `limit`.
  virtual Result<std::vector<std::string>> node_ids_between(const std::string& after,
                                                            const std::optional<std::string>& upto,
                                                            int limit) = 0;
  // WAL checkpoints on a worker thread from now on, instead of SQLite's
  // automatic one inside a commit on the loop (storage/wal_checkpointer.h):
  // for bulk writes that must not hold the loop. No-op when read-only.
  virtual void checkpoint_in_background() = 0;

  // --- statistics ------------------------------------------------------
  // Cheap: each queues a delta in memory (no SQL). Deltas are written in one
  // transaction per flush; a flush that meets a lock keeps the queue and is
  // retried from the timer. Deltas for an endpoint removed meanwhile are
  // dropped at flush. An endpoint's outcomes apply in the order recorded
  // (a success then two failures leave consecutive_failures at 2), however
  // many share a flush; last_success_at and last_failure_at keep the latest
  // time, and last_error goes with the latest failure (a failure recorded
  // later with an older time leaves them).
  // A success: success_count + 1, last_success_at, consecutive_failures = 0,
  // and rtt_ms smoothed with `rtt_ms` when given (the first sample sets it,
  // each later one moves it by (sample - rtt_ms) / 8; a negative or
  // non-finite sample is ignored).
  virtual void record_success(int64_t endpoint_id, int64_t at_unix_ms,
                              std::optional<double> rtt_ms = std::nullopt) = 0;
  // A failure: last_failure_at, last_error = reason, consecutive_failures + 1,
  // and failure_count + 1 when `charged`, else uncharged_failure_count + 1.
  virtual void record_failure(int64_t endpoint_id, const std::string& reason,
                              int64_t at_unix_ms, bool charged = true) = 0;
  // Writes the queue now. On a lock the queue is kept and the error returned.
  virtual Status flush() = 0;
  // Endpoint deltas waiting to be written.
  virtual size_t pending_stats() const = 0;

  // --- identity and shutdown ------------------------------------------
  // Generated once (random, 32 hex chars) and kept in the `local_node` table,
  // unless set_local_node_id() was called with a configured id.
  virtual const std::string& local_node_id() const = 0;
  virtual Status set_local_node_id(const std::string& node_id) = 0;
  virtual const std::string& path() const = 0;

  // Flushes (retrying a locked flush up to close_lock_limit, without running
  // the loop: this is for shutdown), stops the timer and closes SQLite. The
  // timer's memory is released through the loop: run the loop once more
  // after close() before closing the loop. Idempotent. The destructor does
  // the same; a pending flush timer never calls back after it.
  virtual Status close() = 0;

 protected:
  Store() = default;
};

}  // namespace connmgr
