// Store against real SQLite files in temporary directories, with a second
// connection (or the sqlite3 shell) playing the other processes that share
// the database.
#include "storage/store.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "storage/schema.h"
#include "storage/write_retry.h"
#include "test_support.h"

using namespace connmgr;
using namespace std::chrono_literals;
using connmgr::test::run_until;
using connmgr::test::TempDir;

namespace {

// API.md §1, as a user would paste it into the sqlite3 shell.
constexpr const char* kApiSchema = R"sql(
CREATE TABLE nodes (
  id          TEXT PRIMARY KEY,
  name        TEXT,
  created_at  INTEGER NOT NULL DEFAULT (CAST(strftime('%s','now') AS INTEGER) * 1000)
);
CREATE TABLE endpoints (
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

// A second connection: what another process on the host does.
class Other {
 public:
  explicit Other(const std::string& path) {
    REQUIRE(sqlite3_open(path.c_str(), &db_) == SQLITE_OK);
    sqlite3_busy_timeout(db_, 2000);
  }
  ~Other() { sqlite3_close(db_); }
  int exec(const std::string& sql) { return sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr); }
  int64_t scalar(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
    int64_t v = -1;
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
  }
  std::string text(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
    std::string v;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
      v = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return v;
  }

 private:
  sqlite3* db_ = nullptr;
};

class Fixture {
 public:
  Fixture() { uv_loop_init(&loop); }
  ~Fixture() {
    if (store) store->close();
    store.reset();
    connmgr::test::drain_loop(&loop);
    uv_loop_close(&loop);
  }

  std::string db_path() const { return dir.file("connmgr.db"); }

  Result<std::unique_ptr<Store>> open_store(bool read_only = false) {
    StoreOptions o;
    o.path = db_path();
    o.flush_interval = 50ms;
    o.close_lock_limit = 200ms;
    o.read_only = read_only;
    return Store::open(&loop, o);
  }

  void open() {
    auto s = open_store();
    REQUIRE(s.ok());
    store = std::move(s).value();
  }

  static EndpointSpec ep(const std::string& protocol, int port, const std::string& address = "10.0.0.1") {
    EndpointSpec e;
    e.protocol = protocol;
    e.address = address;
    e.port = port;
    return e;
  }

  void add(const std::string& id, std::vector<EndpointSpec> eps = {}) {
    NodeSpec spec;
    spec.id = id;
    spec.endpoints = std::move(eps);
    REQUIRE(store->add_node(spec).ok());
  }

  uv_loop_t loop{};
  TempDir dir;
  std::unique_ptr<Store> store;
};

int run_shell(const std::string& db, const std::string& sql) {
  const std::string script = db + ".sql";
  std::ofstream(script) << sql;
  const std::string cmd = "sqlite3 '" + db + "' < '" + script + "'";
  return std::system(cmd.c_str());
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

// --- opening and the schema ------------------------------------------------------

TEST_CASE_METHOD(Fixture, "a missing database is created with the schema, in WAL mode") {
  open();
  Other o(db_path());
  CHECK(o.scalar("SELECT count(*) FROM sqlite_schema WHERE type='table' AND name IN "
                 "('nodes','endpoints','local_node')") == 3);
  CHECK(o.scalar("PRAGMA user_version") == schema::kCurrentVersion);
  CHECK(o.text("PRAGMA journal_mode") == "wal");
  CHECK(o.scalar("SELECT count(*) FROM sqlite_schema WHERE type='index' AND name='endpoints_node_id'") == 1);
}

TEST_CASE_METHOD(Fixture, "a database made by the sqlite3 shell from API.md's schema is adopted as it is") {
  REQUIRE(run_shell(db_path(), std::string(kApiSchema) +
                                   "INSERT INTO nodes (id, name) VALUES ('shell-node', 'from the shell');"
                                   "INSERT INTO endpoints (node_id, protocol, address, port, success_count) "
                                   "VALUES ('shell-node', 'tcp', '192.0.2.1', 443, 7);") == 0);
  open();
  auto n = store->get_node("shell-node");
  REQUIRE(n.ok());
  CHECK(n->name == "from the shell");
  CHECK(n->created_at > 0);
  auto eps = store->endpoints_of("shell-node", std::nullopt);
  REQUIRE(eps.ok());
  REQUIRE(eps->size() == 1);
  CHECK((*eps)[0].success_count == 7);
  Other o(db_path());
  CHECK(o.scalar("PRAGMA user_version") == schema::kCurrentVersion);
}

TEST_CASE_METHOD(Fixture, "opening twice migrates once and keeps everything") {
  open();
  add("n1", {ep("tcp", 1)});
  const std::string id = store->local_node_id();
  store->close();
  store.reset();
  open();
  CHECK(store->get_node("n1").ok());
  CHECK(store->local_node_id() == id);
  Other o(db_path());
  CHECK(o.scalar("PRAGMA user_version") == schema::kCurrentVersion);
  CHECK(o.scalar("SELECT count(*) FROM local_node") == 1);
}

TEST_CASE_METHOD(Fixture, "a database from a newer connmgr is refused, not rewritten") {
  open();
  store->close();
  store.reset();
  {
    Other o(db_path());
    REQUIRE(o.exec("PRAGMA user_version = 99") == SQLITE_OK);
  }
  auto s = open_store();
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().code() == ErrorCode::kStorage);
  CHECK(s.error().reason() == "schema");
  Other o(db_path());
  CHECK(o.scalar("PRAGMA user_version") == 99);
}

TEST_CASE_METHOD(Fixture, "tables lacking API.md's columns are refused with the column named") {
  REQUIRE(run_shell(db_path(), "CREATE TABLE nodes (id TEXT PRIMARY KEY);"
                               "CREATE TABLE endpoints (id INTEGER PRIMARY KEY);") == 0);
  auto s = open_store();
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().reason() == "schema");
  CHECK(s.error().message().find("lacks column") != std::string::npos);
}

TEST_CASE_METHOD(Fixture, "a file that is not a database is reported and left untouched") {
  {
    std::ofstream out(db_path(), std::ios::binary);
    for (int i = 0; i < 4096; ++i) out.put(static_cast<char>((i * 7919) & 0xff));
  }
  const std::string before = file_bytes(db_path());
  auto s = open_store();
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().code() == ErrorCode::kStorage);
  CHECK(s.error().reason() == "corrupt");
  CHECK(s.error().message().find(db_path()) != std::string::npos);
  CHECK(file_bytes(db_path()) == before);
  CHECK(access((db_path() + "-wal").c_str(), F_OK) != 0);
}

TEST_CASE_METHOD(Fixture, "a database in a missing directory cannot be opened, and says where") {
  StoreOptions o;
  o.path = dir.file("no/such/dir/connmgr.db");
  auto s = Store::open(&loop, o);
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().reason() == "cantopen");
  CHECK(s.error().message().find("no/such/dir") != std::string::npos);
}

TEST_CASE_METHOD(Fixture, "a read-only database serves reads and refuses writes clearly") {
  open();
  add("n1", {ep("tcp", 1)});
  store->close();
  store.reset();
  // As root, file modes do not stop writes; opening read-only is what a
  // read-only file or mount gives SQLite, and takes the same paths.
  auto s = open_store(/*read_only=*/true);
  REQUIRE(s.ok());
  store = std::move(s).value();
  CHECK(store->get_node("n1").ok());
  auto page = store->list_nodes(10, std::nullopt);
  REQUIRE(page.ok());
  CHECK(page->nodes.size() == 1);
  NodeSpec spec;
  spec.id = "n2";
  auto r = store->add_node(spec);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == ErrorCode::kStorage);
  CHECK(r.error().reason() == "read_only");
  CHECK(r.error().message().find("read-only") != std::string::npos);
  // Statistics cannot land, and the flush says why; the queue is kept.
  auto eps = store->endpoints_of("n1", std::nullopt);
  store->record_success((*eps)[0].id, 1000);
  auto f = store->flush();
  CHECK(f.reason() == "read_only");
  CHECK(store->pending_stats() == 1);
}

TEST_CASE_METHOD(Fixture, "a read-only file the OS refuses to write is opened read-only") {
  if (geteuid() == 0) {
    // Root writes through file modes; run the check as nobody in a child.
    open();
    add("n1");
    store->close();
    store.reset();
    REQUIRE(chmod(dir.path().c_str(), 0755) == 0);
    REQUIRE(chmod(db_path().c_str(), 0644) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      if (setgid(65534) != 0 || setuid(65534) != 0) _exit(10);
      uv_loop_t l;
      uv_loop_init(&l);
      StoreOptions o;
      o.path = db_path();
      auto s = Store::open(&l, o);
      if (!s.ok()) _exit(s.error().reason() == "read_only" ? 0 : 11);
      if (!(*s)->get_node("n1").ok()) _exit(12);
      NodeSpec spec;
      spec.id = "n2";
      auto r = (*s)->add_node(spec);
      _exit(!r.ok() && r.error().reason() == "read_only" ? 0 : 13);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  } else {
    SUCCEED("covered as root only");
  }
}

// --- reads --------------------------------------------------------------------

TEST_CASE_METHOD(Fixture, "nodes are paged by id with a cursor") {
  open();
  for (const char* id : {"d", "a", "c", "e", "b"}) add(id);
  auto p1 = store->list_nodes(2, std::nullopt);
  REQUIRE(p1.ok());
  REQUIRE(p1->nodes.size() == 2);
  CHECK(p1->nodes[0].id == "a");
  CHECK(p1->nodes[1].id == "b");
  REQUIRE(p1->next);
  CHECK(*p1->next == "b");
  auto p2 = store->list_nodes(2, p1->next);
  REQUIRE(p2->nodes.size() == 2);
  CHECK(p2->nodes[0].id == "c");
  CHECK(p2->nodes[1].id == "d");
  auto p3 = store->list_nodes(2, p2->next);
  REQUIRE(p3->nodes.size() == 1);
  CHECK(p3->nodes[0].id == "e");
  CHECK_FALSE(p3->next);
}

TEST_CASE_METHOD(Fixture, "a page that ends exactly at the last node has no next") {
  open();
  add("a");
  add("b");
  auto p = store->list_nodes(2, std::nullopt);
  CHECK(p->nodes.size() == 2);
  CHECK_FALSE(p->next);
  auto empty = store->list_nodes(5, std::string("b"));
  CHECK(empty->nodes.empty());
  CHECK_FALSE(empty->next);
}

TEST_CASE_METHOD(Fixture, "unknown nodes and endpoints are not found") {
  open();
  CHECK(store->get_node("ghost").error().code() == ErrorCode::kNodeNotFound);
  CHECK(store->endpoints_of("ghost", std::nullopt).error().code() == ErrorCode::kNodeNotFound);
  CHECK(store->get_endpoint(99).error().code() == ErrorCode::kEndpointNotFound);
}

TEST_CASE_METHOD(Fixture, "endpoints are ranked by successes, failures, last success, id") {
  open();
  add("n", {ep("tcp", 1), ep("tcp", 2), ep("tcp", 3), ep("tcp", 4), ep("tcp", 5), ep("quic", 6)});
  {
    Other o(db_path());
    // port 1: 5 ok 1 fail; port 2: 5 ok 0 fail; port 3: 5 ok 0 fail, newer success;
    // port 4: 0 ok 0 fail; port 5: 0 ok 3 fail; quic 6: 9 ok.
    REQUIRE(o.exec("UPDATE endpoints SET success_count=5, failure_count=1, last_success_at=100 WHERE port=1;"
                   "UPDATE endpoints SET success_count=5, last_success_at=100 WHERE port=2;"
                   "UPDATE endpoints SET success_count=5, last_success_at=200 WHERE port=3;"
                   "UPDATE endpoints SET failure_count=3 WHERE port=5;"
                   "UPDATE endpoints SET success_count=9 WHERE port=6;") == SQLITE_OK);
  }
  auto all = store->endpoints_of("n", std::nullopt);
  REQUIRE(all.ok());
  std::vector<int> ports;
  for (const auto& e : *all) ports.push_back(e.port);
  CHECK(ports == std::vector<int>{6, 3, 2, 1, 4, 5});
  auto tcp = store->endpoints_of("n", std::string("tcp"));
  ports.clear();
  for (const auto& e : *tcp) ports.push_back(e.port);
  CHECK(ports == std::vector<int>{3, 2, 1, 4, 5});
  CHECK(store->endpoints_of("n", std::string("sctp"))->empty());
}

TEST_CASE_METHOD(Fixture, "equal records rank by id, and never-succeeded ones after any success") {
  open();
  add("n", {ep("tcp", 1), ep("tcp", 2)});
  auto eps = store->endpoints_of("n", std::nullopt);
  CHECK((*eps)[0].id < (*eps)[1].id);
  {
    Other o(db_path());
    // Same counts, one with a success time: it ranks first.
    REQUIRE(o.exec("UPDATE endpoints SET last_success_at=5 WHERE port=2") == SQLITE_OK);
  }
  eps = store->endpoints_of("n", std::nullopt);
  CHECK((*eps)[0].port == 2);
}

TEST_CASE_METHOD(Fixture, "rows written by another process are visible to the next query") {
  open();
  CHECK(store->list_nodes(10, std::nullopt)->nodes.empty());
  REQUIRE(run_shell(db_path(), "INSERT INTO nodes (id) VALUES ('from-elsewhere');"
                               "INSERT INTO endpoints (node_id, protocol, address, port) "
                               "VALUES ('from-elsewhere', 'tcp', 'example.org', 80);") == 0);
  auto n = store->get_node("from-elsewhere");
  REQUIRE(n.ok());
  auto eps = store->endpoints_of("from-elsewhere", std::nullopt);
  REQUIRE(eps->size() == 1);
  CHECK((*eps)[0].address == "example.org");
  CHECK(store->counts()->nodes == 1);
  CHECK(store->counts()->endpoints == 1);
}

TEST_CASE_METHOD(Fixture, "endpoints of many nodes come back together") {
  open();
  add("a", {ep("tcp", 1), ep("tcp", 2)});
  add("b", {ep("tcp", 3)});
  add("c");
  auto eps = store->endpoints_of_nodes({"a", "b", "c"});
  REQUIRE(eps.ok());
  CHECK(eps->size() == 3);
}

// --- writes -------------------------------------------------------------------

TEST_CASE_METHOD(Fixture, "a node is added with its endpoints in one transaction") {
  open();
  NodeSpec spec;
  spec.id = "n1";
  spec.name = "first";
  EndpointSpec q = ep("quic", 443);
  q.server_name = "node.example";
  q.alpn = "connmgr";
  q.pin_sha256 = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
  spec.endpoints = {ep("tcp", 80), q};
  auto r = store->add_node(spec);
  REQUIRE(r.ok());
  CHECK(r->node.name == "first");
  REQUIRE(r->endpoints.size() == 2);
  auto stored = store->get_endpoint(r->endpoints[1].id);
  REQUIRE(stored.ok());
  const Endpoint& e = stored->protocol == "quic" ? *stored : *store->get_endpoint(r->endpoints[0].id);
  CHECK(e.server_name == "node.example");
  CHECK(e.alpn == "connmgr");
  CHECK(e.pin_sha256 == q.pin_sha256);
}

TEST_CASE_METHOD(Fixture, "a duplicate node is refused and nothing is written") {
  open();
  add("n1", {ep("tcp", 1)});
  NodeSpec spec;
  spec.id = "n1";
  spec.endpoints = {ep("tcp", 2)};
  auto r = store->add_node(spec);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == ErrorCode::kAlreadyExists);
  CHECK(r.error().message().find("n1") != std::string::npos);
  CHECK(store->endpoints_of("n1", std::nullopt)->size() == 1);
}

TEST_CASE_METHOD(Fixture, "a duplicate endpoint rolls the whole add back") {
  open();
  NodeSpec spec;
  spec.id = "n1";
  spec.endpoints = {ep("tcp", 1), ep("tcp", 1)};
  auto r = store->add_node(spec);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == ErrorCode::kAlreadyExists);
  CHECK(store->get_node("n1").error().code() == ErrorCode::kNodeNotFound);
}

TEST_CASE_METHOD(Fixture, "endpoints are added and removed with clear errors") {
  open();
  add("n1");
  auto e = store->add_endpoint("n1", ep("tcp", 1));
  REQUIRE(e.ok());
  CHECK(e->id > 0);
  CHECK(store->add_endpoint("n1", ep("tcp", 1)).error().code() == ErrorCode::kAlreadyExists);
  CHECK(store->add_endpoint("ghost", ep("tcp", 1)).error().code() == ErrorCode::kNodeNotFound);
  CHECK(store->remove_endpoint(e->id).ok());
  CHECK(store->remove_endpoint(e->id).code() == ErrorCode::kEndpointNotFound);
  CHECK(store->endpoints_of("n1", std::nullopt)->empty());
}

TEST_CASE_METHOD(Fixture, "removing a node removes its endpoints") {
  open();
  add("n1", {ep("tcp", 1), ep("quic", 2)});
  CHECK(store->remove_node("n1").ok());
  CHECK(store->remove_node("n1").code() == ErrorCode::kNodeNotFound);
  Other o(db_path());
  CHECK(o.scalar("SELECT count(*) FROM endpoints") == 0);
}

TEST_CASE_METHOD(Fixture, "the database's own checks surface as invalid params") {
  open();
  add("n1");
  auto r = store->add_endpoint("n1", ep("tcp", 70000));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == ErrorCode::kInvalidParams);
}

// --- statistics ---------------------------------------------------------------

TEST_CASE_METHOD(Fixture, "statistics are queued, then written together by the timer") {
  open();
  add("n1", {ep("tcp", 1), ep("tcp", 2)});
  auto eps = *store->endpoints_of("n1", std::nullopt);
  Other o(db_path());
  const int64_t before = o.scalar("PRAGMA data_version");
  store->record_success(eps[0].id, 1000);
  store->record_success(eps[0].id, 2000);
  store->record_failure(eps[1].id, "refused", 1500);
  store->record_failure(eps[1].id, "timeout", 2500);
  CHECK(store->pending_stats() == 2);
  CHECK(o.scalar("SELECT sum(success_count) + sum(failure_count) FROM endpoints") == 0);
  REQUIRE(run_until(&loop, [&] { return store->pending_stats() == 0; }, 2s));
  CHECK(o.scalar("SELECT success_count FROM endpoints WHERE port=1") == 2);
  CHECK(o.scalar("SELECT last_success_at FROM endpoints WHERE port=1") == 2000);
  CHECK(o.scalar("SELECT failure_count FROM endpoints WHERE port=2") == 2);
  CHECK(o.scalar("SELECT last_failure_at FROM endpoints WHERE port=2") == 2500);
  CHECK(o.text("SELECT last_error FROM endpoints WHERE port=2") == "timeout");
  // data_version moves once per commit made by another connection.
  CHECK(o.scalar("PRAGMA data_version") == before + 1);
}

TEST_CASE_METHOD(Fixture, "reads include statistics not yet flushed") {
  open();
  add("n1", {ep("tcp", 1), ep("tcp", 2)});
  auto eps = *store->endpoints_of("n1", std::nullopt);
  REQUIRE(eps[0].port == 1);
  store->record_failure(eps[0].id, "refused", 1000);
  auto again = *store->endpoints_of("n1", std::nullopt);
  CHECK(again[0].port == 2);  // the failure already counts
  CHECK(again[1].failure_count == 1);
  CHECK(again[1].last_error == "refused");
  CHECK(store->get_endpoint(eps[0].id)->failure_count == 1);
}

TEST_CASE_METHOD(Fixture, "statistics wait out another process's write lock and none are lost") {
  open();
  add("n1", {ep("tcp", 1)});
  const int64_t id = (*store->endpoints_of("n1", std::nullopt))[0].id;
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  for (int i = 0; i < 500; ++i) store->record_success(id, 1000 + i);
  // Reads keep working under the foreign write lock (WAL).
  CHECK(store->get_node("n1").ok());
  const auto flushed = store->flush();
  CHECK(flushed.reason() == "locked");
  connmgr::test::run_for(&loop, 300ms);  // several timer ticks meet the lock
  CHECK(store->pending_stats() == 1);
  CHECK(store->get_endpoint(id)->success_count == 500);
  REQUIRE(locker.exec("COMMIT") == SQLITE_OK);
  REQUIRE(run_until(&loop, [&] { return store->pending_stats() == 0; }, 2s));
  Other o(db_path());
  CHECK(o.scalar("SELECT success_count FROM endpoints") == 500);
  CHECK(o.scalar("SELECT last_success_at FROM endpoints") == 1499);
}

TEST_CASE_METHOD(Fixture, "close flushes what is queued") {
  open();
  add("n1", {ep("tcp", 1)});
  const int64_t id = (*store->endpoints_of("n1", std::nullopt))[0].id;
  store->record_failure(id, "reset", 42);
  CHECK(store->close().ok());
  store.reset();
  Other o(db_path());
  CHECK(o.scalar("SELECT failure_count FROM endpoints") == 1);
  CHECK(o.text("SELECT last_error FROM endpoints") == "reset");
}

TEST_CASE_METHOD(Fixture, "statistics of an endpoint removed meanwhile are dropped") {
  open();
  add("n1", {ep("tcp", 1), ep("tcp", 2)});
  auto eps = *store->endpoints_of("n1", std::nullopt);
  store->record_success(eps[0].id, 1);
  store->record_success(eps[1].id, 1);
  {
    Other o(db_path());
    REQUIRE(o.exec("DELETE FROM endpoints WHERE port = 1") == SQLITE_OK);
  }
  CHECK(store->flush().ok());
  CHECK(store->pending_stats() == 0);
  Other o(db_path());
  CHECK(o.scalar("SELECT success_count FROM endpoints WHERE port = 2") == 1);
}

TEST_CASE_METHOD(Fixture, "flushing 10,000 queued updates is one transaction, timed") {
  open();
  NodeSpec spec;
  spec.id = "big";
  for (int p = 1; p <= 10000; ++p) spec.endpoints.push_back(ep("tcp", p));
  REQUIRE(store->add_node(spec).ok());
  auto eps = *store->endpoints_of("big", std::nullopt);
  REQUIRE(eps.size() == 10000);
  for (const auto& e : eps) store->record_success(e.id, 1000);
  const uint64_t t0 = uv_hrtime();
  REQUIRE(store->flush().ok());
  const double ms = static_cast<double>(uv_hrtime() - t0) / 1e6;
  // A figure for the record, not an assertion: these machines are shared.
  WARN("flush of 10,000 queued updates (10,000 endpoints): " << ms << " ms");
  Other o(db_path());
  CHECK(o.scalar("SELECT sum(success_count) FROM endpoints") == 10000);
}

// --- identity -----------------------------------------------------------------

TEST_CASE_METHOD(Fixture, "the local node id is generated once and kept") {
  open();
  const std::string id = store->local_node_id();
  CHECK(id.size() == 32);
  CHECK(id.find_first_not_of("0123456789abcdef") == std::string::npos);
  store->close();
  store.reset();
  open();
  CHECK(store->local_node_id() == id);
  REQUIRE(store->set_local_node_id("configured-id").ok());
  store->close();
  store.reset();
  open();
  CHECK(store->local_node_id() == "configured-id");
}

// --- write retries ------------------------------------------------------------

TEST_CASE_METHOD(Fixture, "a write that meets a lock is retried until the lock is gone") {
  open();
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  int tries = 0;
  std::optional<Status> result;
  retry_when_locked(
      &loop, 5s,
      [&] {
        ++tries;
        NodeSpec spec;
        spec.id = "late";
        auto r = store->add_node(spec);
        return r.ok() ? ok_status() : r.error();
      },
      [&](Status s) { result = s; });
  CHECK(tries == 0);  // never inside the call
  connmgr::test::run_for(&loop, 150ms);
  CHECK_FALSE(result.has_value());
  CHECK(tries > 1);
  REQUIRE(locker.exec("COMMIT") == SQLITE_OK);
  REQUIRE(run_until(&loop, [&] { return result.has_value(); }, 3s));
  CHECK(result->ok());
  CHECK(store->get_node("late").ok());
}

TEST_CASE_METHOD(Fixture, "a write gives up after its limit with reason locked") {
  open();
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  std::optional<Status> result;
  retry_when_locked(
      &loop, 200ms,
      [&] {
        NodeSpec spec;
        spec.id = "never";
        auto r = store->add_node(spec);
        return r.ok() ? ok_status() : r.error();
      },
      [&](Status s) { result = s; });
  REQUIRE(run_until(&loop, [&] { return result.has_value(); }, 3s));
  CHECK(result->code() == ErrorCode::kStorage);
  CHECK(result->reason() == "locked");
  CHECK(result->message().find("gave up") != std::string::npos);
  locker.exec("ROLLBACK");
}

TEST_CASE_METHOD(Fixture, "a cancelled write retry never answers") {
  open();
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  bool answered = false;
  auto h = retry_when_locked(
      &loop, 5s, [&] { return store->remove_node("x"); }, [&](Status) { answered = true; });
  connmgr::test::run_for(&loop, 30ms);
  h.cancel();
  locker.exec("COMMIT");
  connmgr::test::run_for(&loop, 100ms);
  CHECK_FALSE(answered);
}
