// The server side of the postgres Inventory: the `connmgr` schema that
// connmgrd creates in the inventory's database, and the statements it runs
// there (docs/operations.md, "Running a fleet").
//
// The schema (version kServerSchemaVersion, kept in connmgr.meta):
//   connmgr.meta       key/value: schema_version, inventory_id (a UUID made
//                      with the schema: a mirror filled from another
//                      inventory, or from this one re-created, is resynced).
//   connmgr.nodes      id (COLLATE "C": the mirror's byte order), name,
//                      created_at (unix ms).
//   connmgr.endpoints  id from the server's identity sequence (the same on
//                      every host), node_id, protocol, address, port,
//                      server_name, alpn, pin_sha256; no statistics.
//   connmgr.changes    the change log: revision (bigserial), kind
//                      (node_added, node_removed, endpoint_added,
//                      endpoint_removed), node_id, endpoint_id, data (the
//                      row as it was, jsonb), at.
// Triggers on nodes and endpoints append to the log and NOTIFY channel
// kNotifyChannel with the revision. Each appending transaction holds an
// advisory lock until it commits, so revisions become visible in order: a
// reader that saw revision r has seen every revision below r that will
// ever commit (without it a slower transaction could commit a lower
// revision after a reader moved past it). Rows changed by hand with SQL are
// logged the same way; an UPDATE is logged as "added" (the mirror upserts),
// a node whose id changes as removed then added.
//
// Creation is idempotent: under a transaction-level advisory lock (two
// daemons starting together), only when connmgr.meta lacks schema_version.
#pragma once

namespace connmgr::pg_schema {

inline constexpr int kServerSchemaVersion = 1;
inline constexpr const char* kNotifyChannel = "connmgr_inventory";

// Statement timeout of the inventory's session: a statement the server cannot
// finish (a lock held by a bulk load elsewhere) fails instead of hanging.
inline constexpr const char* kSessionSetup = "SET statement_timeout = 5000";

// One row: whether connmgr.meta exists.
inline constexpr const char* kHasMeta = "SELECT to_regclass('connmgr.meta') IS NOT NULL";
// One row (or none): the schema's version.
inline constexpr const char* kSchemaVersion =
    "SELECT value FROM connmgr.meta WHERE key = 'schema_version'";
// The whole schema, as one script (simple protocol).
extern const char* const kCreateSchema;

inline constexpr const char* kListen = "LISTEN connmgr_inventory";

// $1 the mirror's revision. One row: inventory_id, whether the log still
// holds revision $1, the log's lowest revision (NULL when empty), its highest
// (0 when empty).
extern const char* const kLogState;
// $1 after this revision, $2 at most this many rows, in revision order:
// revision, kind, node_id, endpoint_id, name, created_at, protocol, address,
// port, server_name, alpn, pin_sha256 (the row's data, NULL where the kind
// has none).
extern const char* const kLogPage;
// $1 after this node id, $2 at most this many: id, name, created_at.
extern const char* const kNodesPage;
// $1 < node_id <= $2: id, node_id, protocol, address, port, server_name,
// alpn, pin_sha256, by node_id then id.
extern const char* const kEndpointsPage;

// The writes: each one transaction on the server, answering the highest
// revision it logged (NULL: nothing to remove).
// $1 id, $2 name, $3..$8 the endpoints' protocols, addresses, ports,
// server_names, alpns, pin_sha256s as arrays of the same length.
extern const char* const kAddNode;
// $1 node id.
extern const char* const kRemoveNode;
// $1 node id, $2 protocol, $3 address, $4 port, $5 server_name, $6 alpn,
// $7 pin_sha256: endpoint_id, revision.
extern const char* const kAddEndpoint;
// $1 endpoint id.
extern const char* const kRemoveEndpoint;
}  // namespace connmgr::pg_schema
