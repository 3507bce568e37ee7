// Schema version 2 (the statistics columns) against real SQLite files:
// databases of version 0 and 1 are adopted and migrated by adding columns,
// a database at version 2 opens unchanged, and the columns the Store demands
// follow the version.
#include "storage_fixture.h"

using namespace connmgr;
using namespace connmgr::storage_test;

namespace {

// What connmgrd of schema version 1 left in a file: the documented tables,
// its local_node table and index, user_version 1.
const std::string kVersion1File = std::string(kApiSchema) + R"sql(
CREATE TABLE local_node (
  id         INTEGER PRIMARY KEY CHECK (id = 1),
  node_id    TEXT NOT NULL,
  created_at INTEGER NOT NULL DEFAULT (CAST(strftime('%s','now') AS INTEGER) * 1000)
);
CREATE INDEX endpoints_node_id ON endpoints(node_id);
INSERT INTO local_node (id, node_id) VALUES (1, '0123456789abcdef0123456789abcdef');
INSERT INTO nodes (id, name) VALUES ('old', 'from version 1');
INSERT INTO endpoints (node_id, protocol, address, port, success_count, failure_count,
                       last_success_at, last_failure_at, last_error)
  VALUES ('old', 'tcp', '192.0.2.1', 443, 7, 2, 5000, 4000, 'timeout'),
         ('old', 'quic', '192.0.2.1', 4433, 1, 0, 3000, NULL, NULL);
PRAGMA user_version = 1;
)sql";

const char* kStatsColumns[] = {"rtt_ms", "consecutive_failures", "uncharged_failure_count"};

// The endpoints table's column names, in order, as another process sees them.
std::string endpoint_columns(const std::string& path) {
  Other o(path);
  return o.text("SELECT group_concat(name, ',') FROM pragma_table_info('endpoints')");
}

std::string schema_text(const std::string& path) {
  Other o(path);
  return o.text("SELECT group_concat(type || ':' || name || ':' || coalesce(sql, ''), '|') FROM "
                "(SELECT * FROM sqlite_schema ORDER BY name)");
}

// A plain connection for calling schema:: directly.
struct Raw {
  explicit Raw(const std::string& path) { REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK); }
  ~Raw() { sqlite3_close(db); }
  sqlite3* db = nullptr;
};

}  // namespace

TEST_CASE_METHOD(Fixture, "a new database is created at version 2 with the statistics columns") {
  open();
  Other o(db_path());
  CHECK(schema::kCurrentVersion == 2);
  CHECK(o.scalar("PRAGMA user_version") == 2);
  const std::string cols = endpoint_columns(db_path());
  for (const char* c : kStatsColumns) CHECK(cols.find(c) != std::string::npos);
  add("n", {ep("tcp", 1)});
  const auto e = (*store->endpoints_of("n", std::nullopt))[0];
  CHECK_FALSE(e.rtt_ms.has_value());
  CHECK(e.consecutive_failures == 0);
  CHECK(e.uncharged_failure_count == 0);
  CHECK(o.scalar("SELECT rtt_ms IS NULL FROM endpoints") == 1);
}

TEST_CASE_METHOD(Fixture, "a version-1 database is migrated by adding the columns, every row kept") {
  {
    Other o(db_path());
    REQUIRE(o.exec(kVersion1File) == SQLITE_OK);
  }
  open();
  CHECK(store->local_node_id() == "0123456789abcdef0123456789abcdef");
  auto eps = store->endpoints_of("old", std::nullopt);
  REQUIRE(eps.ok());
  REQUIRE(eps->size() == 2);
  const Endpoint& e = (*eps)[0];
  CHECK(e.port == 443);
  CHECK(e.success_count == 7);
  CHECK(e.failure_count == 2);
  CHECK(e.last_success_at == 5000);
  CHECK(e.last_error == "timeout");
  CHECK_FALSE(e.rtt_ms.has_value());
  CHECK(e.consecutive_failures == 0);
  CHECK(e.uncharged_failure_count == 0);
  Other o(db_path());
  CHECK(o.scalar("PRAGMA user_version") == 2);
  // Added at the end, the documented columns as they were.
  CHECK(endpoint_columns(db_path()) ==
        "id,node_id,protocol,address,port,server_name,alpn,pin_sha256,success_count,failure_count,"
        "last_success_at,last_failure_at,last_error,rtt_ms,consecutive_failures,uncharged_failure_count");
  CHECK(o.scalar("SELECT count(*) FROM endpoints WHERE rtt_ms IS NULL AND consecutive_failures = 0 "
                 "AND uncharged_failure_count = 0") == 2);
  CHECK(o.scalar("PRAGMA foreign_key_check") == -1);  // no rows: no violations
  CHECK(o.text("PRAGMA integrity_check") == "ok");
  // Statistics land in the new columns.
  store->record_failure(e.id, "local_network", 6000, /*charged=*/false);
  REQUIRE(store->flush().ok());
  CHECK(o.scalar("SELECT uncharged_failure_count FROM endpoints WHERE port = 443") == 1);
  CHECK(o.scalar("SELECT failure_count FROM endpoints WHERE port = 443") == 2);
}

TEST_CASE_METHOD(Fixture, "a bare version-0 database made with plain SQL gets versions 1 and 2") {
  {
    Other o(db_path());
    REQUIRE(o.exec(std::string(kApiSchema) +
                   "INSERT INTO nodes (id) VALUES ('n');"
                   "INSERT INTO endpoints (node_id, protocol, address, port, failure_count) "
                   "VALUES ('n', 'tcp', '192.0.2.9', 80, 4);") == SQLITE_OK);
    REQUIRE(o.scalar("PRAGMA user_version") == 0);
  }
  open();
  Other o(db_path());
  CHECK(o.scalar("PRAGMA user_version") == 2);
  CHECK(o.scalar("SELECT count(*) FROM local_node") == 1);
  CHECK(o.scalar("SELECT count(*) FROM sqlite_schema WHERE type='index' AND name='endpoints_node_id'") == 1);
  const std::string cols = endpoint_columns(db_path());
  for (const char* c : kStatsColumns) CHECK(cols.find(c) != std::string::npos);
  auto e = (*store->endpoints_of("n", std::nullopt))[0];
  CHECK(e.failure_count == 4);
  CHECK(e.consecutive_failures == 0);
  // Another program keeps inserting with the documented columns only.
  REQUIRE(o.exec("INSERT INTO endpoints (node_id, protocol, address, port) VALUES ('n', 'tcp', 'h', 81)") ==
          SQLITE_OK);
  CHECK(store->endpoints_of("n", std::nullopt)->size() == 2);
}

TEST_CASE_METHOD(Fixture, "columns a database already has are kept, the missing ones added") {
  {
    Other o(db_path());
    // The owner added rtt_ms by hand, with a value, before any connmgrd did.
    REQUIRE(o.exec(std::string(kApiSchema) +
                   "ALTER TABLE endpoints ADD COLUMN rtt_ms REAL;"
                   "INSERT INTO nodes (id) VALUES ('n');"
                   "INSERT INTO endpoints (node_id, protocol, address, port, rtt_ms) "
                   "VALUES ('n', 'tcp', '192.0.2.9', 80, 12.5);") == SQLITE_OK);
  }
  open();
  auto e = (*store->endpoints_of("n", std::nullopt))[0];
  REQUIRE(e.rtt_ms.has_value());
  CHECK(*e.rtt_ms == 12.5);
  Other o(db_path());
  CHECK(o.scalar("SELECT count(*) FROM pragma_table_info('endpoints') WHERE name = 'rtt_ms'") == 1);
  CHECK(o.scalar("SELECT count(*) FROM pragma_table_info('endpoints') WHERE name = 'consecutive_failures'") == 1);
}

TEST_CASE_METHOD(Fixture, "opening a version-2 database again changes nothing, not even one commit") {
  {
    Other o(db_path());
    REQUIRE(o.exec(kVersion1File) == SQLITE_OK);
  }
  open();
  store->close();
  store.reset();
  connmgr::test::drain_loop(&loop);
  const std::string after_first = schema_text(db_path());
  Other o(db_path());
  const int64_t version = o.scalar("PRAGMA data_version");
  open();
  reopen();
  // data_version moves when another connection commits: none did.
  CHECK(o.scalar("PRAGMA data_version") == version);
  CHECK(schema_text(db_path()) == after_first);
  CHECK(o.scalar("PRAGMA user_version") == 2);
  CHECK(store->endpoints_of("old", std::nullopt)->size() == 2);
}

TEST_CASE_METHOD(Fixture, "a version-2 table made anew from the documented columns gets its columns back") {
  open();
  add("n", {ep("tcp", 1)});
  store->close();
  store.reset();
  connmgr::test::drain_loop(&loop);
  {
    // Another program replaces the table with the documented one.
    Other o(db_path());
    const std::string create = std::string(kApiSchema).substr(std::string(kApiSchema).find("CREATE TABLE endpoints"));
    REQUIRE(o.exec("PRAGMA foreign_keys = OFF; DROP TABLE endpoints; " + create +
                   "INSERT INTO endpoints (node_id, protocol, address, port) VALUES ('n', 'tcp', 'h', 2);") ==
            SQLITE_OK);
    REQUIRE(o.scalar("PRAGMA user_version") == 2);
  }
  open();
  auto eps = store->endpoints_of("n", std::nullopt);
  REQUIRE(eps.ok());
  REQUIRE(eps->size() == 1);
  store->record_failure((*eps)[0].id, "refused", 10);
  REQUIRE(store->flush().ok());
  Other o(db_path());
  CHECK(o.scalar("SELECT consecutive_failures FROM endpoints") == 1);
}

TEST_CASE_METHOD(Fixture, "a database of version 3 is refused, not rewritten") {
  {
    Other o(db_path());
    REQUIRE(o.exec(kVersion1File + "PRAGMA user_version = 3;") == SQLITE_OK);
  }
  const std::string before = schema_text(db_path());
  auto s = open_store();
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().reason() == "schema");
  CHECK(s.error().message().find("version 3") != std::string::npos);
  Other o(db_path());
  CHECK(o.scalar("PRAGMA user_version") == 3);
  CHECK(schema_text(db_path()) == before);
}

TEST_CASE_METHOD(Fixture, "check_tables demands the documented columns before version 2, the new ones from 2") {
  {
    Other o(db_path());
    REQUIRE(o.exec(kApiSchema) == SQLITE_OK);
  }
  Raw raw(db_path());
  CHECK(schema::check_tables(raw.db, db_path()).ok());
  CHECK(schema::check_tables(raw.db, db_path(), 1).ok());
  Status v2 = schema::check_tables(raw.db, db_path(), 2);
  CHECK(v2.reason() == "schema");
  CHECK(v2.message().find("lacks column rtt_ms") != std::string::npos);
  REQUIRE(schema::migrate(raw.db, db_path()).ok());
  CHECK(schema::check_tables(raw.db, db_path(), 2).ok());
  // Idempotent: a second migration adds nothing and succeeds.
  REQUIRE(schema::migrate(raw.db, db_path()).ok());
  Other o(db_path());
  CHECK(o.scalar("SELECT count(*) FROM pragma_table_info('endpoints')") == 16);
}

TEST_CASE_METHOD(Fixture, "a table lacking a documented column is refused before any column is added") {
  {
    Other o(db_path());
    REQUIRE(o.exec("CREATE TABLE nodes (id TEXT PRIMARY KEY, name TEXT, created_at INTEGER);"
                   "CREATE TABLE endpoints (id INTEGER PRIMARY KEY, node_id TEXT, protocol TEXT, "
                   "address TEXT, port INTEGER);") == SQLITE_OK);
  }
  const std::string before = schema_text(db_path());
  auto s = open_store();
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().reason() == "schema");
  CHECK(s.error().message().find("lacks column server_name") != std::string::npos);
  CHECK(schema_text(db_path()) == before);
  Other o(db_path());
  CHECK(o.scalar("PRAGMA user_version") == 0);
}

TEST_CASE_METHOD(Fixture, "a read-only version-1 database is read, the new columns at their initial values") {
  {
    Other o(db_path());
    REQUIRE(o.exec(kVersion1File) == SQLITE_OK);
  }
  auto s = open_store(/*read_only=*/true);
  REQUIRE(s.ok());
  store = std::move(s).value();
  const auto check_read = [](const Endpoint& e) {
    CHECK_FALSE(e.rtt_ms.has_value());
    CHECK(e.consecutive_failures == 0);
    CHECK(e.uncharged_failure_count == 0);
  };
  auto eps = store->endpoints_of("old", std::nullopt);
  REQUIRE(eps.ok());
  REQUIRE(eps->size() == 2);
  CHECK((*eps)[0].success_count == 7);
  for (const auto& e : *eps) check_read(e);
  auto one = store->node_with_endpoints("old", std::string("quic"));
  REQUIRE(one.ok());
  REQUIRE(one->endpoints.size() == 1);
  check_read(one->endpoints[0]);
  auto many = store->endpoints_of_nodes({"old"});
  REQUIRE(many.ok());
  CHECK(many->size() == 2);
  check_read(*store->get_endpoint((*eps)[0].id));
  // Statistics stay queued (reads show them) and the flush says why.
  store->record_failure((*eps)[0].id, "refused", 9000);
  CHECK(store->get_endpoint((*eps)[0].id)->consecutive_failures == 1);
  CHECK(store->flush().reason() == "read_only");
  CHECK(store->pending_stats() == 1);
  store->close();
  store.reset();
  Other o(db_path());
  CHECK(o.scalar("PRAGMA user_version") == 1);
  CHECK(o.scalar("SELECT count(*) FROM pragma_table_info('endpoints')") == 13);
}
