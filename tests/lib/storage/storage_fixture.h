// Shared by the storage tests: a Store on a real SQLite file in a temporary
// directory, a second connection (or the sqlite3 shell) playing the other
// processes that share the database, and a runner for checks that need a
// child process (another user, another mount namespace).
#pragma once

#include "storage/store.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>

#include "storage/schema.h"
#include "storage/write_retry.h"
#include "test_support.h"

namespace connmgr::storage_test {

using namespace std::chrono_literals;
using connmgr::test::run_until;
using connmgr::test::TempDir;

// The documented tables (lib/storage/schema.cc), as a user would paste them
// into the sqlite3 shell.
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
  Fixture() : Fixture(false) {}
  // `system_tmp`: the files go under the system's temporary directory, not
  // the build directory, so that a child acting as another user (nobody)
  // reaches them wherever the clone is (under /root, mode 0700, it could
  // not). The directory is made traversable (0711) for that user.
  explicit Fixture(bool system_tmp)
      : dir(system_tmp ? TempDir::system_root() : TempDir::test_root()) {
    if (system_tmp) chmod(dir.path().c_str(), 0711);
    uv_loop_init(&loop);
  }
  ~Fixture() {
    if (store) store->close();
    store.reset();
    connmgr::test::drain_loop(&loop);
    uv_loop_close(&loop);
  }

  std::string db_path() const { return dir.file("connmgr.db"); }

  StoreOptions options(bool read_only = false) const {
    StoreOptions o;
    o.path = db_path();
    o.flush_interval = 50ms;
    o.close_lock_limit = 200ms;
    o.open_lock_limit = 200ms;
    o.read_only = read_only;
    return o;
  }

  Result<std::unique_ptr<Store>> open_store(bool read_only = false) {
    return Store::open(&loop, options(read_only));
  }

  void reopen() {
    store->close();
    store.reset();
    open();
  }

  void open() {
    auto s = open_store();
    if (!s.ok()) FAIL(s.error().message());
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

// For tests whose child acts as nobody: see Fixture(bool).
class NobodyFixture : public Fixture {
 public:
  NobodyFixture() : Fixture(true) {}
};

inline int run_shell(const std::string& db, const std::string& sql) {
  const std::string script = db + ".sql";
  std::ofstream(script) << sql;
  const std::string cmd = "sqlite3 '" + db + "' < '" + script + "'";
  return std::system(cmd.c_str());
}

inline std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs `body` in a forked child and returns its exit code (128 + signal when
// killed). The child never returns into Catch2: it reports by exit code and
// says what failed on stderr (CHILD_CHECK).
inline int in_child(const std::function<int()>& body) {
  fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) _exit(body());
  if (pid < 0) return -1;
  int status = 0;
  // Bounded: the child's own work is bounded (no loop runs without limit).
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

#define CHILD_CHECK(cond, code)                                        \
  do {                                                                 \
    if (!(cond)) {                                                     \
      fprintf(stderr, "child: line %d: %s failed\n", __LINE__, #cond); \
      return (code);                                                   \
    }                                                                  \
  } while (0)

}  // namespace connmgr::storage_test
