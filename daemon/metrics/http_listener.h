// The metrics HTTP listener: `GET /metrics` for Prometheus, served by
// libmicrohttpd on the daemon's libuv loop (no thread of its own).
//
// libmicrohttpd runs in its "external polling" epoll mode: its epoll
// descriptor is watched by a uv_poll, MHD_run() does the work when it is
// readable, and a timer re-armed after every run from MHD_get_timeout() calls
// MHD_run() again for what epoll does not announce (connections idle past the
// timeout, data already read and waiting to be processed).
//
// What a client gets:
// - GET or HEAD /metrics (any query string ignored): 200, the body Render
//   gives for the format the Accept header asks for (OpenMetrics 1.0 or text
//   0.0.4), with that format's Content-Type.
// - Any other path: 404. Another method on /metrics: 405, `Allow: GET, HEAD`.
// - A request with a body (Content-Length above 0, or Transfer-Encoding):
//   413, since the largest body this listener takes is none; the body is not
//   read and the connection is closed after the answer.
// - A request line + headers over max_request_bytes (libmicrohttpd's
//   per-connection memory pool): 431 (414 when the request line alone is
//   too long) and a close. The pool also holds the answer's head, so a head
//   a few hundred bytes short of the limit may get a close without an
//   answer (measured with 0.9.75 and 8192: served up to ~7,850 bytes).
// - Beyond max_clients connections at once: libmicrohttpd stops accepting
//   (new connections wait in the listen backlog until one ends); those it
//   has accepted are served as usual.
// - A connection idle for `timeout` is closed.
//
// Threads: the loop's thread only. Render runs on it, inside a loop callback;
// it must not destroy the listener.
#pragma once

#include <sys/socket.h>
#include <uv.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "metrics/exposition.h"
#include "util/error.h"
#include "util/uv_handle.h"

struct MHD_Daemon;
struct MHD_Connection;

namespace connmgr::metrics {

struct HttpListenerOptions {
  std::string address;                // "127.0.0.1:9469", "[::1]:9469"; port 0: any free port
  unsigned max_clients = 16;          // connections at once; more wait to be accepted
  size_t max_request_bytes = 8192;    // the request line and headers (a memory limit)
  std::chrono::seconds timeout{10};   // an idle connection is closed after it
};

// Parses "IPv4:port" or "[IPv6]:port", numeric only: a host name is refused
// (the listener binds one address, and a name may have several). Used for
// the configuration's validation too.
Result<sockaddr_storage> parse_listen_address(std::string_view text);

class MetricsHttpListener {
 public:
  using Render = std::function<std::string(Format)>;

  // Binds and listens on options.address. Fails with a message naming the
  // address (a bad address, EADDRINUSE, EACCES, ...).
  static Result<std::unique_ptr<MetricsHttpListener>> start(uv_loop_t* loop,
                                                            const HttpListenerOptions& options,
                                                            Render render);
  // Stops listening and closes every client connection; safe at any time
  // outside Render (the libuv handles close through the loop).
  ~MetricsHttpListener();
  MetricsHttpListener(const MetricsHttpListener&) = delete;
  MetricsHttpListener& operator=(const MetricsHttpListener&) = delete;

  // The port bound (the one chosen when the address asked for port 0).
  uint16_t port() const { return port_; }

 private:
  explicit MetricsHttpListener(Render render) : render_(std::move(render)) {}

  void on_readable();
  // MHD_run(), then the timer set from MHD_get_timeout().
  void run();
  // Queues the answer to a request; libmicrohttpd's MHD_Result as an int.
  int answer(MHD_Connection* connection, std::string_view url, std::string_view method);
  friend class HttpTrampolines;  // libmicrohttpd's and libuv's callbacks (the .cc)

  Render render_;
  MHD_Daemon* daemon_ = nullptr;
  UvHandle<uv_poll_t> poll_;
  Timer timer_;
  uint16_t port_ = 0;
};

}  // namespace connmgr::metrics
