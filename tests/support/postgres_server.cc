#include "postgres_server.h"

#include <fcntl.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include "test_support.h"

namespace connmgr::test {

namespace {

constexpr const char* kBin = "/usr/lib/postgresql/15/bin/";

// Waits for `pid` up to `limit`; true when it exited.
bool wait_exit(pid_t pid, std::chrono::milliseconds limit, int* status = nullptr) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int st = 0;
  for (;;) {
    const pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid || r < 0) {
      if (status) *status = st;
      return true;
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string read_file(const std::string& path) {
  std::string out;
  if (FILE* f = fopen(path.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    fclose(f);
  }
  return out.size() > 4000 ? out.substr(out.size() - 4000) : out;
}

}  // namespace

PostgresServer& PostgresServer::shared() {
  static PostgresServer server;
  return server;
}

PostgresServer::PostgresServer() {
  as_postgres_ = geteuid() == 0;
  std::string tmpl = TempDir::system_root() + "/connmgr-pg-XXXXXX";
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  data_ = dir_ + "/data";
  log_ = dir_ + "/server.log";
  if (as_postgres_) {
    const passwd* pw = getpwnam("postgres");
    if (!pw) throw std::runtime_error("no `postgres` user (install postgresql-15)");
    if (chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) throw std::runtime_error("chown failed");
  }
  spawn({std::string(kBin) + "initdb", "-D", data_, "-A", "trust", "-U", "postgres", "-E", "UTF8",
         "--locale=C", "--no-sync", "--no-instructions"},
        true);
  port_ = closed_port();
  start();
}

PostgresServer::~PostgresServer() {
  try {
    stop();
  } catch (...) {
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

pid_t PostgresServer::spawn(const std::vector<std::string>& args, bool wait) {
  std::vector<std::string> argv;
  if (as_postgres_)
    argv = {"/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--reset-env",
            "--pdeathsig=INT"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const int log = open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    // The server must not share our process group's signals (Ctrl-C of the
    // test runner reaches it through us, by pid).
    setpgid(0, 0);
    // A test that dies leaves no server behind (setpriv sets it again after
    // changing users, which clears it).
    prctl(PR_SET_PDEATHSIG, SIGINT);
    if (log >= 0) {
      dup2(log, 1);
      dup2(log, 2);
    }
    const int null_in = open("/dev/null", O_RDONLY);
    if (null_in >= 0) dup2(null_in, 0);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  if (log >= 0) close(log);
  if (!wait) return pid;
  int status = 0;
  if (!wait_exit(pid, std::chrono::seconds(60), &status)) {
    kill(pid, SIGKILL);
    wait_exit(pid, std::chrono::seconds(5));
    throw std::runtime_error(args[0] + " did not finish: " + read_file(log_));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error(args[0] + " failed: " + read_file(log_));
  return -1;
}

void PostgresServer::start() {
  if (pid_ > 0) return;
  pid_ = spawn({std::string(kBin) + "postgres", "-D", data_, "-k", dir_, "-p", std::to_string(port_), "-c",
                "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c",
                "full_page_writes=off", "-c", "shared_buffers=16MB", "-c", "max_connections=40", "-c",
                "max_wal_size=256MB", "-c", "autovacuum=off", "-c", "log_min_messages=warning"},
               false);
  const std::string conninfo = dsn() + " connect_timeout=2";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (PQping(conninfo.c_str()) != PQPING_OK) {
    int status = 0;
    if (wait_exit(pid_, std::chrono::milliseconds(0), &status)) {
      pid_ = -1;
      throw std::runtime_error("postgres exited at start: " + read_file(log_));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      stop();
      throw std::runtime_error("postgres not ready within 60 s: " + read_file(log_));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void PostgresServer::stop() {
  if (pid_ <= 0) return;
  // SIGINT: fast shutdown (clients are disconnected, no waiting for them).
  kill(pid_, SIGINT);
  if (!wait_exit(pid_, std::chrono::seconds(30))) {
    kill(pid_, SIGKILL);
    wait_exit(pid_, std::chrono::seconds(5));
  }
  pid_ = -1;
}

std::string PostgresServer::dsn(const std::string& db) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " user=postgres dbname=" + db;
}

std::string PostgresServer::create_database() {
  const std::string name = "connmgr_test_" + std::to_string(++databases_);
  query(dsn(), "CREATE DATABASE " + name);
  return dsn(name);
}

std::vector<std::vector<std::string>> PostgresServer::query(const std::string& dsn, const std::string& sql) {
  PGconn* conn = PQconnectdb((dsn + " connect_timeout=10").c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string why = PQerrorMessage(conn);
    PQfinish(conn);
    throw std::runtime_error("cannot connect to " + dsn + ": " + why);
  }
  PGresult* res = PQexec(conn, sql.c_str());
  const ExecStatusType st = PQresultStatus(res);
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    std::string why = PQresultErrorMessage(res);
    PQclear(res);
    PQfinish(conn);
    throw std::runtime_error("query failed: " + sql.substr(0, 200) + ": " + why);
  }
  std::vector<std::vector<std::string>> rows;
  for (int r = 0; r < PQntuples(res); ++r) {
    std::vector<std::string> row;
    for (int c = 0; c < PQnfields(res); ++c) row.emplace_back(PQgetvalue(res, r, c));
    rows.push_back(std::move(row));
  }
  PQclear(res);
  PQfinish(conn);
  return rows;
}

std::string PostgresServer::scalar(const std::string& dsn, const std::string& sql) {
  auto rows = query(dsn, sql);
  return rows.empty() || rows[0].empty() ? std::string() : rows[0][0];
}

}  // namespace connmgr::test
