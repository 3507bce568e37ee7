#include "storage/pg_connection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace connmgr {

namespace {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t comma = s.find(',', start);
    out.push_back(s.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::string join_list(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? "," : "") + items[i];
  return out;
}

// A host entry libpq reaches without a name lookup: a socket directory (or
// an abstract socket), the default socket (empty), or an address literal.
bool needs_resolving(const std::string& host) {
  if (host.empty() || host[0] == '/' || host[0] == '@') return false;
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) != 1 && inet_pton(AF_INET6, host.c_str(), buf) != 1;
}

bool is_address(const std::string& host) { return !host.empty() && host[0] != '/' && host[0] != '@' && !needs_resolving(host); }

}  // namespace

std::string pg_message(const char* message) {
  std::string m = message ? message : "";
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  // libpq's messages may span lines (a hint, a second address tried): one line.
  std::replace(m.begin(), m.end(), '\n', ' ');
  return m.empty() ? "unknown error" : m;
}

int64_t PgReply::int64(int row, int col) const {
  if (!result_ || is_null(row, col)) return 0;
  return std::strtoll(PQgetvalue(result_.get(), row, col), nullptr, 10);
}

PgConnection::PgConnection(uv_loop_t* loop, Handlers handlers) : loop_(loop), handlers_(std::move(handlers)) {
  connect_timer_.init(loop_);
  query_timer_.init(loop_);
  defer_timer_.init(loop_);
}

PgConnection::~PgConnection() { close(); }

void PgConnection::close() {
  state_ = State::kIdle;
  connect_timer_.stop();
  query_timer_.stop();
  defer_timer_.stop();
  resolver_.cancel();
  // The poll handle first: libuv must stop watching the fd before libpq closes it.
  poll_.close();
  poll_fd_ = -1;
  if (conn_) PQfinish(conn_);
  conn_ = nullptr;
  ops_.clear();
  want_write_ = false;
  pending_hosts_.clear();
  targets_.clear();
  keywords_.clear();
}

void PgConnection::connect(const std::string& dsn, std::chrono::milliseconds timeout) {
  close();
  state_ = State::kResolving;
  connect_timer_.start(static_cast<uint64_t>(timeout.count()), [this, timeout] {
    fail_connect("no connection within " + std::to_string(timeout.count()) + " ms");
  });
  char* err = nullptr;
  PQconninfoOption* options = PQconninfoParse(dsn.c_str(), &err);
  if (!options) {
    const std::string why = "invalid DSN: " + pg_message(err ? err : "out of memory");
    PQfreemem(err);
    defer_timer_.start(0, [this, why] { fail_connect(why); });
    return;
  }
  std::string host, hostaddr, port;
  for (PQconninfoOption* o = options; o->keyword; ++o) {
    if (!o->val || !*o->val) continue;
    const std::string key = o->keyword;
    if (key == "host") host = o->val;
    else if (key == "hostaddr") hostaddr = o->val;
    else if (key == "port") port = o->val;
    else keywords_.emplace_back(key, o->val);
  }
  PQconninfoFree(options);
  // libpq would read these from the environment itself, and resolve PGHOST.
  if (host.empty() && getenv("PGHOST")) host = getenv("PGHOST");
  if (hostaddr.empty() && getenv("PGHOSTADDR")) hostaddr = getenv("PGHOSTADDR");
  if (port.empty() && getenv("PGPORT")) port = getenv("PGPORT");
  const auto has = [this](const char* k) {
    return std::any_of(keywords_.begin(), keywords_.end(), [k](const auto& kv) { return kv.first == k; });
  };
  if (!has("fallback_application_name")) keywords_.emplace_back("fallback_application_name", "connmgrd");
  if (!has("client_encoding")) keywords_.emplace_back("client_encoding", "UTF8");
  // A server that vanished without a FIN (host down, cable cut) is noticed
  // by TCP keepalives within ~25 s even while LISTEN waits, unless the DSN
  // says otherwise (the kernel's default is 2 hours).
  if (!has("keepalives_idle")) keywords_.emplace_back("keepalives_idle", "10");
  if (!has("keepalives_interval")) keywords_.emplace_back("keepalives_interval", "5");
  if (!has("keepalives_count")) keywords_.emplace_back("keepalives_count", "3");

  const auto hosts = split_list(host);
  const auto addrs = split_list(hostaddr);
  const auto ports = split_list(port);
  for (size_t i = 0; i < hosts.size(); ++i) {
    Target t;
    t.host = hosts[i];
    t.port = ports.size() == hosts.size() ? ports[i] : ports[0];
    // A hostaddr given by the user is used as it is: nothing to resolve.
    if (!hostaddr.empty()) t.hostaddr = addrs.size() == hosts.size() ? addrs[i] : addrs[0];
    else if (is_address(t.host)) t.hostaddr = t.host;
    pending_hosts_.push_back(std::move(t));
  }
  // Always on a later turn: on_connected is never called from inside connect().
  defer_timer_.start(0, [this] { resolve_next(); });
}

void PgConnection::resolve_next() {
  while (!pending_hosts_.empty()) {
    Target t = pending_hosts_.front();
    if (!t.hostaddr.empty() || !needs_resolving(t.host)) {
      targets_.push_back(std::move(t));
      pending_hosts_.erase(pending_hosts_.begin());
      continue;
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    const int rc = resolver_.start(loop_, t.host.c_str(), nullptr, &hints, [this](int status, addrinfo* res) {
      Target base = pending_hosts_.front();
      pending_hosts_.erase(pending_hosts_.begin());
      if (status != 0) resolve_error_ = "could not resolve host \"" + base.host + "\": " + uv_strerror(status);
      std::vector<std::string> seen;
      for (addrinfo* a = res; a; a = a->ai_next) {
        char buf[INET6_ADDRSTRLEN] = {};
        const void* src = a->ai_family == AF_INET
                              ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr)
                              : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr);
        if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) || !inet_ntop(a->ai_family, src, buf, sizeof buf))
          continue;
        if (std::find(seen.begin(), seen.end(), buf) != seen.end()) continue;
        seen.push_back(buf);
        Target t2 = base;
        t2.hostaddr = buf;
        targets_.push_back(std::move(t2));
      }
      resolve_next();
    });
    if (rc != 0) {
      fail_connect("could not resolve host \"" + t.host + "\": " + uv_strerror(rc));
    }
    return;
  }
  start_libpq();
}

void PgConnection::start_libpq() {
  if (targets_.empty()) {
    fail_connect(resolve_error_.empty() ? "no host to connect to" : resolve_error_);
    return;
  }
  std::vector<std::string> hosts, addrs, ports;
  bool any_addr = false, any_port = false;
  for (const Target& t : targets_) {
    hosts.push_back(t.host);
    addrs.push_back(t.hostaddr);
    ports.push_back(t.port);
    any_addr = any_addr || !t.hostaddr.empty();
    any_port = any_port || !t.port.empty();
  }
  auto kv = keywords_;
  const std::string host_list = join_list(hosts);
  if (!host_list.empty() && host_list.find_first_not_of(',') != std::string::npos) kv.emplace_back("host", host_list);
  if (any_addr) kv.emplace_back("hostaddr", join_list(addrs));
  if (any_port) kv.emplace_back("port", join_list(ports));
  std::vector<const char*> keys, values;
  for (const auto& [k, v] : kv) {
    keys.push_back(k.c_str());
    values.push_back(v.c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  conn_ = PQconnectStartParams(keys.data(), values.data(), 0);
  if (!conn_) {
    fail_connect("out of memory");
    return;
  }
  if (PQstatus(conn_) == CONNECTION_BAD) {
    fail_connect(pg_message(PQerrorMessage(conn_)));
    return;
  }
  // libpq prints the server's notices on stderr by default ("schema connmgr
  // already exists, skipping" when two daemons create it together): nothing
  // in them needs the operator.
  PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);
  state_ = State::kConnecting;
  // libpq's rule: start as if PQconnectPoll had answered PGRES_POLLING_WRITING.
  watch(UV_WRITABLE);
}

void PgConnection::watch(int events) {
  const int fd = PQsocket(conn_);
  if (fd < 0) {
    fail_connect("no socket: " + pg_message(PQerrorMessage(conn_)));
    return;
  }
  // While connecting, libpq may close its socket and open another for the
  // next address or attempt, possibly under the same number: the poll handle
  // is made anew each step. Once connected the socket stays.
  if (state_ == State::kConnecting || fd != poll_fd_ || !poll_) {
    poll_.close();
    if (int rc = poll_.init(loop_, this, uv_poll_init, fd); rc != 0) {
      poll_fd_ = -1;
      const std::string why = std::string("cannot watch the socket: ") + uv_strerror(rc);
      if (state_ == State::kConnected) lose(why);
      else fail_connect(why);
      return;
    }
    poll_fd_ = fd;
    poll_events_ = 0;
  }
  if (events != poll_events_) {
    uv_poll_start(poll_.get(), events, &PgConnection::poll_cb);
    poll_events_ = events;
  }
}

void PgConnection::poll_cb(uv_poll_t* handle, int status, int events) {
  auto* self = UvHandle<uv_poll_t>::owner<PgConnection>(handle);
  if (self) self->on_poll(status, events);
}

void PgConnection::on_poll(int status, int events) {
  if (state_ == State::kConnecting) {
    connect_step();
    return;
  }
  if (state_ != State::kConnected) return;
  if (status < 0) {
    lose(std::string("socket error: ") + uv_strerror(status));
    return;
  }
  if (events & UV_READABLE) on_connected_readable();
  else if (events & UV_WRITABLE) flush();
}

void PgConnection::connect_step() {
  switch (PQconnectPoll(conn_)) {
    case PGRES_POLLING_OK:
      connect_timer_.stop();
      if (PQsetnonblocking(conn_, 1) != 0) {
        fail_connect("cannot make the connection nonblocking: " + pg_message(PQerrorMessage(conn_)));
        return;
      }
      state_ = State::kConnected;
      watch(UV_READABLE);
      if (state_ == State::kConnected) deliver_connected(ok_status());
      return;
    case PGRES_POLLING_READING:
      watch(UV_READABLE);
      return;
    case PGRES_POLLING_WRITING:
      watch(UV_WRITABLE);
      return;
    default:
      fail_connect(pg_message(PQerrorMessage(conn_)));
      return;
  }
}

void PgConnection::fail_connect(const std::string& why) {
  if (state_ == State::kIdle || state_ == State::kConnected) return;
  close();
  deliver_connected(Error::storage(why, "unavailable"));
}

void PgConnection::deliver_connected(Status s) {
  if (handlers_.on_connected) handlers_.on_connected(std::move(s));
}

bool PgConnection::query(std::string sql, Params params, QueryDone done) {
  if (state_ != State::kConnected) return false;
  Op op;
  op.sql = std::move(sql);
  op.params = std::move(params);
  op.done = std::move(done);
  ops_.push_back(std::move(op));
  if (ops_.size() == 1) send_next();
  return true;
}

void PgConnection::send_next() {
  if (!conn_ || ops_.empty() || ops_.front().sent) return;
  Op& op = ops_.front();
  int sent;
  if (op.params.empty()) {
    // The simple protocol: a script of several statements is allowed.
    sent = PQsendQuery(conn_, op.sql.c_str());
  } else {
    std::vector<const char*> values;
    for (const auto& p : op.params) values.push_back(p ? p->c_str() : nullptr);
    sent = PQsendQueryParams(conn_, op.sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(),
                             nullptr, nullptr, 0);
  }
  if (!sent) {
    lose(pg_message(PQerrorMessage(conn_)));
    return;
  }
  op.sent = true;
  query_timer_.start(static_cast<uint64_t>(query_timeout_.count()), [this] {
    lose("no answer within " + std::to_string(query_timeout_.count()) + " ms");
  });
  flush();
}

void PgConnection::flush() {
  if (!conn_) return;
  const int rc = PQflush(conn_);
  if (rc < 0) {
    lose(pg_message(PQerrorMessage(conn_)));
    return;
  }
  want_write_ = rc == 1;
  watch(want_write_ ? UV_READABLE | UV_WRITABLE : UV_READABLE);
}

void PgConnection::on_connected_readable() {
  if (!PQconsumeInput(conn_)) {
    lose(pg_message(PQerrorMessage(conn_)));
    return;
  }
  if (!deliver_notifies()) return;
  if (want_write_) flush();
  if (!conn_) return;
  read_results();
  // A NOTIFY read in the same input as a result is parsed only once that
  // result is taken (libpq stops parsing at a ready result): without this
  // second look it would wait for the next input.
  if (conn_ && !deliver_notifies()) return;
  if (conn_ && PQstatus(conn_) == CONNECTION_BAD) lose(pg_message(PQerrorMessage(conn_)));
}

bool PgConnection::deliver_notifies() {
  while (PGnotify* n = PQnotifies(conn_)) {
    const std::string channel = n->relname ? n->relname : "";
    const std::string payload = n->extra ? n->extra : "";
    PQfreemem(n);
    if (handlers_.on_notify) handlers_.on_notify(channel, payload);
    if (!conn_) return false;
  }
  return true;
}

void PgConnection::read_results() {
  while (conn_ && !ops_.empty() && ops_.front().sent) {
    if (PQisBusy(conn_)) return;
    if (PGresult* r = PQgetResult(conn_)) {
      PgReply& reply = ops_.front().reply;
      const ExecStatusType st = PQresultStatus(r);
      if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE || st == PGRES_NONFATAL_ERROR) {
        // The first error is the answer; a script stops at it anyway.
        if (reply.ok()) {
          const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
          reply = PgReply::failure(pg_message(PQresultErrorMessage(r)), state ? state : "", false);
        }
        PQclear(r);
      } else if (reply.ok()) {
        reply.set_result(r);
      } else {
        PQclear(r);
      }
      continue;
    }
    // No more results: the query is answered.
    Op op = std::move(ops_.front());
    ops_.pop_front();
    query_timer_.stop();
    if (PQstatus(conn_) == CONNECTION_BAD) {
      // Answered by the loss below, with the others.
      ops_.push_front(std::move(op));
      lose(pg_message(PQerrorMessage(conn_)));
      return;
    }
    send_next();
    op.done(std::move(op.reply));
  }
}

void PgConnection::lose(const std::string& why) {
  if (state_ != State::kConnected) return;
  auto ops = std::move(ops_);
  ops_.clear();
  close();
  for (auto& op : ops) op.done(PgReply::failure("connection to the inventory server lost: " + why, "08006", true));
  if (handlers_.on_lost) handlers_.on_lost(why);
}

}  // namespace connmgr
