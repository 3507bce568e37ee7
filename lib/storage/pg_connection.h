// PgConnection: one libpq connection driven by the libuv loop, never by a
// blocking call (the postgres Inventory's driver, storage/postgres_inventory.h).
//
// Connecting: the DSN is parsed (PQconninfoParse); each `host` that is a name
// is resolved on the loop's resolver (uv_getaddrinfo) and passed to libpq as
// `hostaddr`, so that PQconnectStartParams never resolves; PQconnectPoll is
// driven by a poll handle on PQsocket(), made anew after every step because
// libpq opens a new socket for each address or attempt (the fd number may even
// be the same one). `timeout` bounds the whole of it, resolution included.
//
// Queries: queued and sent one at a time (PQsendQueryParams, text parameters,
// nonblocking: PQflush until the socket took everything); the results are read
// by PQconsumeInput/PQisBusy/PQgetResult as the socket becomes readable.
// Notifications (LISTEN) are read on the way and handed to on_notify. A query
// unanswered after `query_timeout` (a server that vanished without a FIN)
// counts as a lost connection; the server bounds its own statements with
// statement_timeout, set by the caller.
//
// Ownership and threads: the loop thread only; borrows the loop. Callbacks run
// on the loop thread, never from inside the call that started them, and never
// after close() or destruction. A callback must not destroy the PgConnection
// (its owner defers what may do that). After a loss every queued query is
// answered (`lost`) before on_lost runs; the object may then connect() again.
#pragma once

#include <libpq-fe.h>
#include <uv.h>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "util/error.h"
#include "util/uv_handle.h"

namespace connmgr {

// A query's answer: the last result that carried rows or a command status, or
// the error (SQLSTATE and libpq's message; `lost` when the connection died).
class PgReply {
 public:
  PgReply() = default;
  static PgReply failure(std::string message, std::string sqlstate, bool lost) {
    PgReply r;
    r.error_ = std::move(message);
    r.sqlstate_ = std::move(sqlstate);
    r.lost_ = lost;
    return r;
  }
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  const std::string& sqlstate() const { return sqlstate_; }
  bool lost() const { return lost_; }

  int rows() const { return result_ ? PQntuples(result_.get()) : 0; }
  bool is_null(int row, int col) const { return PQgetisnull(result_.get(), row, col) != 0; }
  std::string text(int row, int col) const {
    return std::string(PQgetvalue(result_.get(), row, col),
                       static_cast<size_t>(PQgetlength(result_.get(), row, col)));
  }
  std::optional<std::string> opt_text(int row, int col) const {
    if (is_null(row, col)) return std::nullopt;
    return text(row, col);
  }
  int64_t int64(int row, int col) const;  // 0 when NULL or not a number
  std::optional<int64_t> opt_int64(int row, int col) const {
    if (is_null(row, col)) return std::nullopt;
    return int64(row, col);
  }

  void set_result(PGresult* result) { result_.reset(result); }

 private:
  struct Clear {
    void operator()(PGresult* r) const { PQclear(r); }
  };
  std::unique_ptr<PGresult, Clear> result_;
  std::string error_;
  std::string sqlstate_;
  bool lost_ = false;
};

class PgConnection {
 public:
  using Params = std::vector<std::optional<std::string>>;
  using QueryDone = std::function<void(PgReply)>;
  struct Handlers {
    // Once per connect(): ok when the connection is up, else why not.
    std::function<void(Status)> on_connected;
    // Once after a successful connect, when the connection dies.
    std::function<void(const std::string& why)> on_lost;
    std::function<void(const std::string& channel, const std::string& payload)> on_notify;
  };

  PgConnection(uv_loop_t* loop, Handlers handlers);
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  // Starts connecting (closing any connection first). Errors in the DSN are
  // reported through on_connected too, on a later loop turn.
  void connect(const std::string& dsn, std::chrono::milliseconds timeout);
  // Queues a query; false (and `done` never called) when not connected.
  bool query(std::string sql, Params params, QueryDone done);
  // Closes the connection; no callback runs after it.
  void close();
  bool connected() const { return state_ == State::kConnected; }
  // Bounds each query's answer (default 15 s).
  void set_query_timeout(std::chrono::milliseconds t) { query_timeout_ = t; }

 private:
  enum class State { kIdle, kResolving, kConnecting, kConnected };
  struct Op {
    std::string sql;
    Params params;
    QueryDone done;
    PgReply reply;
    bool sent = false;
  };
  struct Target {  // one host entry of the DSN, expanded per address
    std::string host, hostaddr, port;
  };

  void resolve_next();
  void start_libpq();
  void connect_step();
  void watch(int events);
  void fail_connect(const std::string& why);
  void on_poll(int status, int events);
  void on_connected_readable();
  bool deliver_notifies();  // false when a handler closed the connection
  void send_next();
  void flush();
  void read_results();
  void lose(const std::string& why);
  void deliver_connected(Status s);
  static void poll_cb(uv_poll_t* handle, int status, int events);

  uv_loop_t* loop_;
  Handlers handlers_;
  State state_ = State::kIdle;
  PGconn* conn_ = nullptr;
  UvHandle<uv_poll_t> poll_;
  int poll_fd_ = -1;
  int poll_events_ = 0;
  Timer connect_timer_;
  Timer query_timer_;
  Timer defer_timer_;  // reports a DSN error on a later turn
  AddrInfoRequest resolver_;
  std::chrono::milliseconds query_timeout_{15000};

  // Connecting: the parsed DSN's other keywords, the host entries left to
  // resolve and the targets made so far.
  std::vector<std::pair<std::string, std::string>> keywords_;
  std::vector<Target> pending_hosts_;
  std::vector<Target> targets_;
  std::string resolve_error_;

  std::deque<Op> ops_;
  bool want_write_ = false;
};

// The first line of a libpq error message, without its trailing newline.
std::string pg_message(const char* message);

}  // namespace connmgr
