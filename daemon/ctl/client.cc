#include "daemon/ctl/client.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <utility>
#include <vector>

#include "daemon/ctl/table.h"
#include "daemon/ctl/verbs.h"

namespace connmgr::ctl {

using json = nlohmann::json;

std::string default_socket() {
  constexpr const char* kSystem = "/run/connmgr/connmgrd.sock";
  if (const char* s = getenv("CONNMGR_SOCKET"); s && *s) return s;
  if (geteuid() == 0) return kSystem;
  std::string own;
  if (const char* r = getenv("XDG_RUNTIME_DIR"); r && *r) own = std::string(r) + "/connmgr/connmgrd.sock";
  else own = "/tmp/connmgr-" + std::to_string(geteuid()) + "/connmgrd.sock";
  // A user's own daemon first; else the system's (an admin_group member
  // talking to the service needs no flag).
  if (access(own.c_str(), F_OK) != 0 && access(kSystem, F_OK) == 0) return kSystem;
  return own;
}

Connection::Connection(const std::string& path, double timeout_s) {
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) usage_error("socket path too long: " + path);
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    fprintf(stderr, "connmgrctl: cannot connect to %s: %s (is connmgrd running?)\n", path.c_str(), strerror(errno));
    exit(kExitUnreachable);
  }
  if (timeout_s > 0) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout_s);
    tv.tv_usec = static_cast<suseconds_t>((timeout_s - static_cast<double>(tv.tv_sec)) * 1e6);
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
}

Connection::~Connection() {
  if (fd_ >= 0) ::close(fd_);
}

void Connection::send(const json& request) {
  const std::string line = request.dump() + "\n";
  size_t off = 0;
  while (off < line.size()) {
    const ssize_t n = ::send(fd_, line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n <= 0) {
      fprintf(stderr, "connmgrctl: the daemon closed the connection\n");
      exit(kExitUnreachable);
    }
    off += static_cast<size_t>(n);
  }
}

std::optional<json> Connection::receive() {
  for (;;) {
    if (auto nl = buf_.find('\n'); nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      return json::parse(line, nullptr, false);
    }
    char chunk[65536];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    timed_out_ = false;
    if (n <= 0) {
      timed_out_ = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
      return std::nullopt;
    }
    buf_.append(chunk, static_cast<size_t>(n));
  }
}

std::optional<json> Connection::receive_exact() {
  std::string line;
  for (;;) {
    char chunk[4096];
    ssize_t n = ::recv(fd_, chunk, sizeof chunk, MSG_PEEK);
    if (n < 0 && errno == EINTR) continue;
    timed_out_ = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    if (n <= 0) return std::nullopt;
    const char* nl = static_cast<const char*>(memchr(chunk, '\n', static_cast<size_t>(n)));
    const size_t take = nl ? static_cast<size_t>(nl - chunk) + 1 : static_cast<size_t>(n);
    n = ::recv(fd_, chunk, take, 0);  // what the peek saw is there: no short read
    if (n != static_cast<ssize_t>(take)) return std::nullopt;
    line.append(chunk, take);
    if (nl) return json::parse(line, nullptr, false);
  }
}

int Connection::release() {
  const timeval none{};
  setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
  return std::exchange(fd_, -1);
}

std::string describe_error(const json& e) {
  std::string msg = e.value("message", std::string("error"));
  const json data = e.contains("data") && e["data"].is_object() ? e["data"] : json::object();
  std::vector<std::string> notes;
  if (data.contains("reason") && data["reason"].is_string()) notes.push_back(data["reason"].get<std::string>());
  if (data.contains("attempts") && data["attempts"].is_number_integer()) {
    const long long n = data["attempts"].get<long long>();
    notes.push_back(std::to_string(n) + (n == 1 ? " attempt" : " attempts"));
  }
  if (data.contains("next_attempt_at")) notes.push_back("next attempt " + human_time(data["next_attempt_at"]));
  if (!notes.empty()) {
    msg += " (";
    for (size_t i = 0; i < notes.size(); ++i) msg += (i ? "; " : "") + notes[i];
    msg += ")";
  }
  return msg + " [" + std::to_string(e.value("code", 0)) + "]";
}

namespace {

// No answer to a request: why, on stderr, and exit 3.
[[noreturn]] void no_answer(const Options& o, const Connection& c, const std::optional<json>& answer) {
  if (!answer && c.timed_out())
    fprintf(stderr, "connmgrctl: no answer from connmgrd within %gs (see --timeout)\n",
            o.timeout_s.value_or(kDefaultTimeoutS));
  else if (!answer)
    fprintf(stderr, "connmgrctl: connmgrd closed the connection without an answer\n");
  else
    fprintf(stderr, "connmgrctl: connmgrd answered a line that is not JSON\n");
  exit(kExitUnreachable);
}

// An error answer: its description on stderr (with --json, the answer on
// stdout too) and exit 1.
void exit_on_error(const Options& o, const json& answer) {
  if (!answer.contains("error")) return;
  fprintf(stderr, "connmgrctl: %s\n", describe_error(answer["error"]).c_str());
  if (o.json_output) fprintf(stdout, "%s\n", answer.dump().c_str());
  exit(kExitError);
}

json request(int id, const std::string& method, const json& params) {
  return json{{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", params}};
}

}  // namespace

json call(const Options& o, const std::string& method, const json& params, const json* subscribe,
          const EventSink& on_event) {
  Connection c(o.socket, o.timeout_s.value_or(kDefaultTimeoutS));
  if (subscribe) c.send(request(0, "events.subscribe", *subscribe));
  c.send(request(1, method, params));
  for (;;) {
    auto answer = c.receive();
    if (!answer || answer->is_discarded()) no_answer(o, c, answer);
    if (!answer->contains("id")) {  // a notification
      if (on_event && answer->value("method", "") == "event" && answer->contains("params"))
        on_event((*answer)["params"]);
      continue;
    }
    if ((*answer)["id"] == 0) continue;  // the subscription's own answer
    exit_on_error(o, *answer);
    return (*answer)["result"];
  }
}

int open_stream(const Options& o, const json& params) {
  Connection c(o.socket, o.timeout_s.value_or(0));
  c.send(request(1, "streams.open", params));
  auto answer = c.receive_exact();
  if (!answer || answer->is_discarded()) no_answer(o, c, answer);
  exit_on_error(o, *answer);
  return c.release();
}

}  // namespace connmgr::ctl
