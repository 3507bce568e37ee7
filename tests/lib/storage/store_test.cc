// Store against real SQLite files in temporary directories: opening, the
// schema and its migrations, errors, queries and writes.
#include <grp.h>
#include <sched.h>
#include <sys/mount.h>

#include "storage_fixture.h"

using namespace connmgr;
using namespace connmgr::storage_test;

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

TEST_CASE_METHOD(Fixture, "a database made by the sqlite3 shell from the documented schema is adopted as it is") {
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

TEST_CASE_METHOD(Fixture, "migrations add only what is missing: a third open changes nothing") {
  REQUIRE(run_shell(db_path(), std::string(kApiSchema) + "INSERT INTO nodes (id) VALUES ('keep');") == 0);
  open();
  store.reset();
  connmgr::test::drain_loop(&loop);
  const auto schema_text = [&] {
    Other o(db_path());
    return o.text("SELECT group_concat(type || ':' || name || ':' || coalesce(sql, ''), '|') FROM "
                  "(SELECT * FROM sqlite_schema ORDER BY name)");
  };
  const std::string after_first = schema_text();
  CHECK(after_first.find("index:endpoints_node_id") != std::string::npos);
  CHECK(after_first.find("table:local_node") != std::string::npos);
  open();
  reopen();
  CHECK(schema_text() == after_first);
  CHECK(store->get_node("keep").ok());
  Other o(db_path());
  CHECK(o.scalar("PRAGMA user_version") == schema::kCurrentVersion);
  CHECK(o.scalar("PRAGMA foreign_key_check") == -1);  // no rows: no violations
}

TEST_CASE_METHOD(Fixture, "the daemon's queries use indexes, so a million nodes stay fast") {
  open();
  // EXPLAIN QUERY PLAN's rows: (id, parent, notused, detail); read detail.
  const auto details = [&](const std::string& sql) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(db_path().c_str(), &db) == SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, ("EXPLAIN QUERY PLAN " + sql).c_str(), -1, &st, nullptr) == SQLITE_OK);
    std::string out;
    while (sqlite3_step(st) == SQLITE_ROW)
      out += reinterpret_cast<const char*>(sqlite3_column_text(st, 3)) + std::string("; ");
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
  };
  const auto no_scan = [](const std::string& d) { return d.find("SCAN") == std::string::npos; };
  // The same statements Store prepares (store.cc).
  const std::string by_node = details("SELECT * FROM endpoints WHERE node_id = 'x'");
  const std::string by_proto = details("SELECT * FROM endpoints WHERE node_id = 'x' AND protocol = 'tcp'");
  const std::string page = details("SELECT id, name, created_at FROM nodes WHERE id > 'x' ORDER BY id LIMIT 5");
  const std::string node = details("SELECT id, name, created_at FROM nodes WHERE id = 'x'");
  INFO(by_node << " / " << by_proto << " / " << page << " / " << node);
  CHECK(no_scan(by_node));
  CHECK(no_scan(by_proto));
  CHECK(no_scan(page));
  CHECK(page.find("TEMP B-TREE") == std::string::npos);  // ORDER BY from the index
  CHECK(no_scan(node));
  // Cascading deletes find a node's endpoints by index too.
  CHECK(no_scan(details("DELETE FROM endpoints WHERE node_id = 'x'")));
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

TEST_CASE_METHOD(Fixture, "tables lacking a documented column are refused with the column named") {
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
  CHECK(s.error().message().rfind("not a database: " + db_path(), 0) == 0);
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

namespace {

// In a child running as nobody (root writes through file modes): the Store
// opens the database, serves reads, and refuses a write with "read_only".
int open_as_nobody_and_check(const std::string& path) {
  if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) return 10;
  uv_loop_t l;
  uv_loop_init(&l);
  StoreOptions o;
  o.path = path;
  auto s = Store::open(&l, o);
  if (!s.ok()) fprintf(stderr, "child: open: %s\n", s.error().message().c_str());
  CHILD_CHECK(s.ok(), 12);
  CHILD_CHECK((*s)->get_node("n1").ok(), 13);
  auto eps = (*s)->endpoints_of("n1", std::nullopt);
  CHILD_CHECK(eps.ok() && eps->size() == 1, 14);
  CHILD_CHECK((*s)->counts().ok() && (*s)->counts()->nodes == 1, 15);
  CHILD_CHECK((*s)->local_node_id().size() == 32, 16);
  NodeSpec spec;
  spec.id = "n2";
  auto r = (*s)->add_node(spec);
  if (!r.ok()) fprintf(stderr, "child: add_node: %s\n", r.error().message().c_str());
  CHILD_CHECK(!r.ok() && r.error().reason() == "read_only", 17);
  CHILD_CHECK(r.error().message().find(path) != std::string::npos, 18);
  CHILD_CHECK((*s)->remove_node("n1").reason() == "read_only", 19);
  return 0;
}

}  // namespace

// Root ignores file modes, so these run the Store as nobody in a child, on
// files under the system temporary directory (NobodyFixture), which nobody
// can reach wherever the clone is.
TEST_CASE_METHOD(NobodyFixture, "a file nobody may write, in a directory nobody may write, is still read") {
  if (geteuid() != 0) {
    WARN("needs root to switch to nobody; skipped");
    return;
  }
  open();
  add("n1", {ep("tcp", 1)});
  store->close();
  store.reset();
  // A WAL database with no -shm file and no way to create one.
  REQUIRE(access((db_path() + "-shm").c_str(), F_OK) != 0);
  REQUIRE(chmod(dir.path().c_str(), 0755) == 0);
  REQUIRE(chmod(db_path().c_str(), 0644) == 0);
  const std::string before = file_bytes(db_path());
  CHECK(in_child([&] { return open_as_nobody_and_check(db_path()); }) == 0);
  CHECK(file_bytes(db_path()) == before);
}

TEST_CASE_METHOD(NobodyFixture, "a file nobody may write, in a directory anyone may write, is still read") {
  if (geteuid() != 0) {
    WARN("needs root to switch to nobody; skipped");
    return;
  }
  open();
  add("n1", {ep("tcp", 1)});
  store->close();
  store.reset();
  REQUIRE(chmod(dir.path().c_str(), 01777) == 0);
  REQUIRE(chmod(db_path().c_str(), 0644) == 0);
  CHECK(in_child([&] { return open_as_nobody_and_check(db_path()); }) == 0);
  Other o(db_path());
  CHECK(o.scalar("SELECT count(*) FROM nodes") == 1);
}

TEST_CASE_METHOD(NobodyFixture, "a writable file in a directory nobody may write is still read") {
  if (geteuid() != 0) {
    WARN("needs root to switch to nobody; skipped");
    return;
  }
  open();
  add("n1", {ep("tcp", 1)});
  store->close();
  store.reset();
  REQUIRE(chmod(dir.path().c_str(), 0755) == 0);
  REQUIRE(chown(db_path().c_str(), 65534, 65534) == 0);
  // WAL needs the -shm file beside the database: without it SQLite cannot
  // even read, so the Store falls back to reading the file as it is.
  CHECK(in_child([&] { return open_as_nobody_and_check(db_path()); }) == 0);
}

// A read-only mount stops root too: a private mount namespace in a child
// (unshare), a tmpfs over the temporary directory, remounted read-only.
namespace {

constexpr int kNoNamespace = 77;

int with_private_tmpfs(const std::string& dir, const char* options, const std::function<int()>& body) {
  if (unshare(CLONE_NEWNS) != 0) return kNoNamespace;
  if (mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return kNoNamespace;
  if (mount("tmpfs", dir.c_str(), "tmpfs", 0, options) != 0) return kNoNamespace;
  return body();
}

}  // namespace

TEST_CASE_METHOD(Fixture, "a database on a read-only mount serves reads and refuses writes") {
  const std::string path = db_path();
  const int rc = in_child([&] {
    return with_private_tmpfs(dir.path(), "size=4m", [&] {
      uv_loop_t l;
      uv_loop_init(&l);
      StoreOptions o;
      o.path = path;
      {
        auto s = Store::open(&l, o);
        CHILD_CHECK(s.ok(), 20);
        NodeSpec spec;
        spec.id = "n1";
        spec.endpoints = {Fixture::ep("tcp", 1)};
        CHILD_CHECK((*s)->add_node(spec).ok(), 21);
        (*s)->close();
      }
      uv_run(&l, UV_RUN_NOWAIT);
      CHILD_CHECK(mount(nullptr, dir.path().c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr) == 0, 22);
      CHILD_CHECK(access(path.c_str(), W_OK) != 0 && errno == EROFS, 23);
      auto s = Store::open(&l, o);
      if (!s.ok()) fprintf(stderr, "child: open: %s\n", s.error().message().c_str());
      CHILD_CHECK(s.ok(), 24);
      CHILD_CHECK((*s)->get_node("n1").ok(), 25);
      CHILD_CHECK((*s)->endpoints_of("n1", std::string("tcp"))->size() == 1, 26);
      NodeSpec spec;
      spec.id = "n2";
      auto r = (*s)->add_node(spec);
      CHILD_CHECK(!r.ok() && r.error().reason() == "read_only", 27);
      CHILD_CHECK(r.error().message().find(path) != std::string::npos, 28);
      // Statistics cannot land either; they stay queued, and reads show them.
      const int64_t id = (*(*s)->endpoints_of("n1", std::nullopt))[0].id;
      (*s)->record_success(id, 5);
      CHILD_CHECK((*s)->flush().reason() == "read_only", 29);
      CHILD_CHECK((*s)->pending_stats() == 1, 30);
      CHILD_CHECK((*s)->get_endpoint(id)->success_count == 1, 31);
      return 0;
    });
  });
  if (rc == kNoNamespace) {
    WARN("no mount namespace here (needs CAP_SYS_ADMIN); skipped");
    return;
  }
  CHECK(rc == 0);
}

TEST_CASE_METHOD(Fixture, "a database made by the shell on a read-only mount is read as it is") {
  const std::string path = db_path();
  const int rc = in_child([&] {
    return with_private_tmpfs(dir.path(), "size=4m", [&] {
      CHILD_CHECK(run_shell(path, std::string(kApiSchema) +
                                      "INSERT INTO nodes (id) VALUES ('n1');"
                                      "INSERT INTO endpoints (node_id, protocol, address, port) "
                                      "VALUES ('n1', 'quic', '192.0.2.7', 4433);") == 0,
                  40);
      CHILD_CHECK(mount(nullptr, dir.path().c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr) == 0, 41);
      uv_loop_t l;
      uv_loop_init(&l);
      StoreOptions o;
      o.path = path;
      auto s = Store::open(&l, o);
      if (!s.ok()) fprintf(stderr, "child: open: %s\n", s.error().message().c_str());
      CHILD_CHECK(s.ok(), 42);
      // Version 0 and no local_node table: an id for this run only.
      CHILD_CHECK((*s)->local_node_id().size() == 32, 43);
      auto eps = (*s)->endpoints_of("n1", std::nullopt);
      CHILD_CHECK(eps.ok() && eps->size() == 1 && (*eps)[0].port == 4433, 44);
      return 0;
    });
  });
  if (rc == kNoNamespace) {
    WARN("no mount namespace here (needs CAP_SYS_ADMIN); skipped");
    return;
  }
  CHECK(rc == 0);
}

TEST_CASE_METHOD(Fixture, "a full disk is reported as full, naming the file, and reads go on") {
  const std::string path = db_path();
  const int rc = in_child([&] {
    return with_private_tmpfs(dir.path(), "size=256k", [&] {
      uv_loop_t l;
      uv_loop_init(&l);
      StoreOptions o;
      o.path = path;
      auto s = Store::open(&l, o);
      CHILD_CHECK(s.ok(), 50);
      Error last;
      int added = 0;
      const std::string name(2000, 'x');
      for (int i = 0; i < 1000 && last.ok(); ++i) {
        NodeSpec spec;
        spec.id = "node-" + std::to_string(i);
        spec.name = name;
        auto r = (*s)->add_node(spec);
        if (r.ok()) ++added;
        else last = r.error();
      }
      fprintf(stderr, "child: %d nodes added, then: %s\n", added, last.message().c_str());
      CHILD_CHECK(!last.ok() && last.reason() == "full", 51);
      CHILD_CHECK(last.message().find(path) != std::string::npos, 52);
      CHILD_CHECK(added > 10, 53);
      // The failed add left nothing half-written, and reads still work.
      auto c = (*s)->counts();
      CHILD_CHECK(c.ok() && c->nodes == added, 54);
      CHILD_CHECK((*s)->get_node("node-0").ok(), 55);
      return 0;
    });
  });
  if (rc == kNoNamespace) {
    WARN("no mount namespace here (needs CAP_SYS_ADMIN); skipped");
    return;
  }
  CHECK(rc == 0);
}

TEST_CASE_METHOD(Fixture, "opening waits a bounded time for another process's lock, then says locked") {
  open();
  store->close();
  store.reset();
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  const uint64_t t0 = uv_hrtime();
  auto s = open_store();  // open_lock_limit 200 ms
  const double waited_ms = static_cast<double>(uv_hrtime() - t0) / 1e6;
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().reason() == "locked");
  CHECK(s.error().message().find(db_path()) != std::string::npos);
  CHECK(waited_ms >= 150);
  CHECK(waited_ms < 5000);
  REQUIRE(locker.exec("COMMIT") == SQLITE_OK);
  CHECK(open_store().ok());
}

TEST_CASE_METHOD(Fixture, "opening succeeds once another process's short lock ends") {
  open();
  store->close();
  store.reset();
  // A real other process holds the write lock for 300 ms.
  int ready[2];
  REQUIRE(pipe(ready) == 0);
  fflush(nullptr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    sqlite3* db = nullptr;
    if (sqlite3_open(db_path().c_str(), &db) != SQLITE_OK) _exit(1);
    if (sqlite3_exec(db, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) != SQLITE_OK) _exit(2);
    if (write(ready[1], "x", 1) != 1) _exit(3);
    usleep(300 * 1000);
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
    sqlite3_close(db);
    _exit(0);
  }
  close(ready[1]);
  char c;
  REQUIRE(read(ready[0], &c, 1) == 1);
  close(ready[0]);
  StoreOptions o = options();
  o.open_lock_limit = 5s;
  auto s = Store::open(&loop, o);
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  REQUIRE(s.ok());
  store = std::move(s).value();
  CHECK(store->counts().ok());
}

TEST_CASE_METHOD(Fixture, "opening leaves nothing for the loop to do until statistics are queued") {
  open();
  // No timer armed, no handle active: an idle daemon's loop is not woken.
  CHECK(uv_loop_alive(&loop) == 0);
}

TEST_CASE_METHOD(Fixture, "a Store used after close answers with an error, not a crash") {
  open();
  add("n1", {ep("tcp", 1)});
  REQUIRE(store->close().ok());
  CHECK(store->close().ok());  // idempotent
  auto n = store->get_node("n1");
  REQUIRE_FALSE(n.ok());
  CHECK(n.error().code() == ErrorCode::kInternal);
  CHECK_FALSE(store->list_nodes(5, std::nullopt).ok());
  CHECK_FALSE(store->remove_node("n1").ok());
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

TEST_CASE_METHOD(Fixture, "endpoints of scattered ids skip the nodes between them") {
  open();
  // Many nodes between the two asked for: the range scan gives up on them
  // and reads the rest one by one, with the same answer.
  for (int i = 0; i < 400; ++i) add("m" + std::to_string(1000 + i), {ep("tcp", 1), ep("quic", 2)});
  add("a", {ep("tcp", 1)});
  add("z", {ep("tcp", 5), ep("tcp", 6)});
  store->record_success(store->endpoints_of("z", std::nullopt)->back().id, 10);  // unflushed
  auto eps = store->endpoints_of_nodes({"z", "a", "m1200", "z"});
  REQUIRE(eps.ok());
  std::vector<std::string> got;
  for (const auto& e : *eps) got.push_back(e.node_id + ":" + std::to_string(e.port));
  // Asked order, each node ranked (the unflushed success counts), an id
  // asked twice given twice.
  CHECK(got == std::vector<std::string>{"z:6", "z:5", "a:1", "m1200:1", "m1200:2", "z:6", "z:5"});
  CHECK(store->endpoints_of_nodes({})->empty());
}

TEST_CASE_METHOD(Fixture, "a node with its endpoints is one read") {
  open();
  add("n", {ep("tcp", 1), ep("quic", 2)});
  add("bare");
  auto all = store->node_with_endpoints("n", std::nullopt);
  REQUIRE(all.ok());
  CHECK(all->node.id == "n");
  CHECK(all->endpoints.size() == 2);
  auto quic = store->node_with_endpoints("n", std::string("quic"));
  REQUIRE(quic.ok());
  REQUIRE(quic->endpoints.size() == 1);
  CHECK(quic->endpoints[0].port == 2);
  auto none = store->node_with_endpoints("n", std::string("sctp"));
  REQUIRE(none.ok());
  CHECK(none->endpoints.empty());
  auto bare = store->node_with_endpoints("bare", std::nullopt);
  REQUIRE(bare.ok());
  CHECK(bare->node.id == "bare");
  CHECK(bare->endpoints.empty());
  CHECK(store->endpoints_of("bare", std::nullopt)->empty());
  auto ghost = store->node_with_endpoints("ghost", std::nullopt);
  REQUIRE(!ghost.ok());
  CHECK(ghost.error().code() == ErrorCode::kNodeNotFound);
  CHECK(store->endpoints_of("ghost", std::nullopt).error().code() == ErrorCode::kNodeNotFound);
}

TEST_CASE_METHOD(Fixture, "counts with a max age look for other processes' commits once per max age, see ours at once") {
  open();
  CHECK(store->counts(1s)->nodes == 0);
  Other o(db_path());
  REQUIRE(o.exec("INSERT INTO nodes (id) VALUES ('b')") == SQLITE_OK);
  CHECK(store->counts(1s)->nodes == 0);  // within the max age: the cache
  CHECK(store->counts()->nodes == 1);    // no max age: asked now
  add("a", {ep("tcp", 1)});
  CHECK(store->counts(1s)->nodes == 2);  // our own write drops the cache
  REQUIRE(o.exec("INSERT INTO nodes (id) VALUES ('c')") == SQLITE_OK);
  CHECK(store->counts(1s)->nodes == 2);
  connmgr::test::run_for(&loop, 1100ms);
  CHECK(store->counts(1s)->nodes == 3);
}

TEST_CASE_METHOD(Fixture, "counts follow every commit, ours and other processes'") {
  open();
  CHECK(store->counts()->nodes == 0);
  add("a", {ep("tcp", 1), ep("tcp", 2)});
  CHECK(store->counts()->nodes == 1);
  CHECK(store->counts()->endpoints == 2);
  Other o(db_path());
  REQUIRE(o.exec("INSERT INTO nodes (id) VALUES ('b');"
                 "INSERT INTO endpoints (node_id, protocol, address, port) VALUES ('b', 'tcp', 'h', 3)") ==
          SQLITE_OK);
  CHECK(store->counts()->nodes == 2);
  CHECK(store->counts()->endpoints == 3);
  // Our own statistics commit changes no count and keeps it cached; a
  // foreign delete is seen at once.
  store->record_success(store->endpoints_of("a", std::nullopt)->at(0).id, 1);
  REQUIRE(store->flush().ok());
  CHECK(store->counts()->endpoints == 3);
  REQUIRE(o.exec("DELETE FROM endpoints WHERE node_id = 'b'") == SQLITE_OK);
  CHECK(store->counts()->endpoints == 2);
  REQUIRE(store->remove_node("a").ok());
  CHECK(store->counts()->nodes == 1);
  CHECK(store->counts()->endpoints == 0);
}

TEST_CASE_METHOD(Fixture, "a second connection's inserts and deletes are seen while the Store is open") {
  open();
  add("mine", {ep("tcp", 1)});
  Other o(db_path());
  REQUIRE(o.exec("INSERT INTO nodes (id, name) VALUES ('theirs', 'other process')") == SQLITE_OK);
  auto n = store->get_node("theirs");
  REQUIRE(n.ok());
  CHECK(n->name == "other process");
  CHECK(store->list_nodes(10, std::nullopt)->nodes.size() == 2);
  REQUIRE(o.exec("INSERT INTO endpoints (node_id, protocol, address, port, success_count) "
                 "VALUES ('mine', 'tcp', '10.0.0.9', 9, 4)") == SQLITE_OK);
  auto eps = store->endpoints_of("mine", std::nullopt);
  REQUIRE(eps->size() == 2);
  CHECK((*eps)[0].port == 9);  // its record ranks it first
  REQUIRE(o.exec("DELETE FROM nodes WHERE id = 'theirs'") == SQLITE_OK);
  CHECK(store->get_node("theirs").error().code() == ErrorCode::kNodeNotFound);
}

TEST_CASE_METHOD(Fixture, "endpoints of many nodes come grouped by node, each group ranked") {
  open();
  add("a", {ep("tcp", 1), ep("tcp", 2)});
  add("b", {ep("quic", 3), ep("tcp", 4)});
  {
    Other o(db_path());
    REQUIRE(o.exec("UPDATE endpoints SET success_count = 3 WHERE port IN (2, 4)") == SQLITE_OK);
  }
  auto eps = store->endpoints_of_nodes({"b", "a", "ghost"});
  REQUIRE(eps.ok());
  std::vector<int> ports;
  for (const auto& e : *eps) ports.push_back(e.port);
  CHECK(ports == std::vector<int>{4, 3, 2, 1});
}

TEST_CASE_METHOD(Fixture, "a protocol filter keeps the ranking, never-succeeded endpoints last") {
  open();
  add("n", {ep("quic", 1), ep("quic", 2), ep("quic", 3), ep("tcp", 4)});
  {
    Other o(db_path());
    // Equal counts; port 1 never succeeded (NULL), port 3 succeeded last.
    REQUIRE(o.exec("UPDATE endpoints SET success_count = 2, failure_count = 1;"
                   "UPDATE endpoints SET last_success_at = 100 WHERE port = 2;"
                   "UPDATE endpoints SET last_success_at = 300 WHERE port = 3;"
                   "UPDATE endpoints SET last_success_at = 999, success_count = 9 WHERE port = 4;") ==
            SQLITE_OK);
  }
  auto quic = store->endpoints_of("n", std::string("quic"));
  REQUIRE(quic.ok());
  std::vector<int> ports;
  for (const auto& e : *quic) ports.push_back(e.port);
  CHECK(ports == std::vector<int>{3, 2, 1});
  CHECK_FALSE((*quic)[2].last_success_at.has_value());
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

