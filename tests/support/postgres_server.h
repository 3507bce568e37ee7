// A real PostgreSQL 15 server for tests (Debian's postgresql-15 binaries):
// initdb'd into a fresh mkdtemp directory under the system's /tmp, run as
// this test's own child on 127.0.0.1 (a free port) and on a Unix socket in
// that directory, light settings (fsync=off, shared_buffers=16MB), trust
// authentication for the `postgres` role.
//
// PostgreSQL refuses to run as root: when euid is 0 (here and in CI),
// initdb and postgres run as the `postgres` system user through
// `setpriv --reuid=postgres --regid=postgres --init-groups --reset-env`,
// and the directory is chowned to that user (the build directory may sit
// under a 0700 home that user cannot enter, hence /tmp). As another user
// they run as that user.
//
// stop() sends SIGINT (fast shutdown) to the server's pid and waits
// (bounded; SIGKILL after); start() starts it again on the same port and
// data. The destructor stops it and removes the directory. Every wait is
// bounded; failures throw std::runtime_error. Blocking libpq calls are fine
// here: the test's thread is not a connmgr loop.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace connmgr::test {

class PostgresServer {
 public:
  PostgresServer();
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // One server for a whole test program (started on first use, stopped at
  // exit). A test that stops it starts it again before it ends.
  static PostgresServer& shared();

  void start();
  void stop();
  bool running() const { return pid_ > 0; }
  int port() const { return port_; }

  // A fresh database (CREATE DATABASE) and the DSN that reaches it over TCP.
  std::string create_database();
  // The DSN of database `db` (default: postgres) over TCP on 127.0.0.1.
  std::string dsn(const std::string& db = "postgres") const;

  // Runs `sql` (one or more statements) on `dsn`, blocking; the last
  // result's rows as text (NULL as ""). Throws on error.
  static std::vector<std::vector<std::string>> query(const std::string& dsn, const std::string& sql);
  // The first column of the first row.
  static std::string scalar(const std::string& dsn, const std::string& sql);

 private:
  pid_t spawn(const std::vector<std::string>& args, bool wait);

  std::string dir_;   // owned by the server's user
  std::string data_;  // dir_/data
  std::string log_;   // dir_/server.log
  int port_ = 0;
  pid_t pid_ = -1;
  bool as_postgres_ = false;
  int databases_ = 0;
};

}  // namespace connmgr::test
