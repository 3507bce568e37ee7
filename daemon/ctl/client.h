// connmgrctl's side of connmgrd's socket: a blocking connection that sends
// request lines and reads answer lines, and call(), one request and its
// result. What goes wrong ends the process with connmgrctl's exit status: 1
// for an error answer (described on stderr), 3 when the daemon cannot be
// reached, closes the connection or does not answer in time.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace connmgr::ctl {

constexpr int kExitError = 1;
constexpr int kExitUnreachable = 3;
constexpr double kDefaultTimeoutS = 60;

// The global options, given before the command (--json also after it).
struct Options {
  std::string socket;
  bool json_output = false;
  // Seconds to wait for an answer; unset means the default (kDefaultTimeoutS,
  // or no limit for `connect --wait`, whose answer may take many retries).
  std::optional<double> timeout_s;
};

// $CONNMGR_SOCKET, else connmgrd's own default for this user; a user with no
// daemon of their own gets the system's socket when it exists.
std::string default_socket();

// One connection to the daemon's socket; exits 3 when it cannot be made.
// With timeout_s > 0, receive() returns nullopt (timed_out()) after that
// long without a line.
class Connection {
 public:
  Connection(const std::string& path, double timeout_s);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Sends one line; exits 3 when the daemon has closed the connection.
  void send(const nlohmann::json& request);
  // One JSON line (discarded when it is not JSON), or nullopt at EOF / timeout.
  std::optional<nlohmann::json> receive();
  bool timed_out() const { return timed_out_; }
  // Whether a whole line is already buffered (receive() will not block).
  bool has_line() const { return buf_.find('\n') != std::string::npos; }
  // One JSON line read off the socket up to its '\n' and not one byte
  // further (MSG_PEEK first): what follows stays in the socket. Not mixed
  // with receive(), whose buffer it does not see.
  std::optional<nlohmann::json> receive_exact();
  // The socket, blocking, without receive timeout, no longer closed here.
  int release();

 private:
  int fd_ = -1;
  std::string buf_;
  bool timed_out_ = false;
};

// An error object for people: "connect failed: refused (1 attempt; next
// attempt in 2s) [-32010]".
std::string describe_error(const nlohmann::json& error);

// Events seen while a call is under way (see call()'s `subscribe`).
using EventSink = std::function<void(const nlohmann::json& event)>;

// Sends one request and returns its result; prints the error and exits 1 on
// an error answer (with --json, the answer on stdout too), exits 3 without an
// answer. With `subscribe`, the same connection first subscribes to events
// with those params and passes each one to `on_event` until the answer comes
// (connect --wait shows its attempts this way).
nlohmann::json call(const Options& o, const std::string& method, const nlohmann::json& params,
                    const nlohmann::json* subscribe = nullptr, const EventSink& on_event = {});

// streams.open with `params` (pipe, exec): sends the request, reads its
// answer line exactly (the bytes after it are the stream's) and returns the
// socket, from then on a raw byte pipe to the node. Errors as call(): the
// message on stderr and exit 1 on an error answer, exit 3 without an answer.
int open_stream(const Options& o, const nlohmann::json& params);

}  // namespace connmgr::ctl
