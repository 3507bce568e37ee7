// Resolution: turns a host (a name or an IP literal) and a port into socket
// addresses without blocking the libuv loop, for connectors that dial names.
//
// Names go to uv_getaddrinfo, which runs getaddrinfo(3) on libuv's thread
// pool (so /etc/hosts, nsswitch and /etc/gai.conf apply); IPv4 and IPv6
// literals ("192.0.2.7", "::1", no brackets) are answered without it.
//
// Results: every address getaddrinfo returns, in its order (RFC 6724 as
// ranked by /etc/gai.conf: usually ::1 before 127.0.0.1), duplicates removed,
// each sockaddr_in/sockaddr_in6 carrying `port`. Both families are asked for
// (no AI_ADDRCONFIG: a family the host cannot reach fails fast at connect
// time, and the caller moves on to the next address). Failures are
// Error{kConnectFailed, "cannot resolve NAME: <getaddrinfo's words>", "dns"},
// or reason "timeout" when `timeout` passes first.
//
// Callbacks: `done` is called exactly once, on the loop thread, never from
// inside start() itself (a literal is answered on the next loop turn),
// unless the resolution is cancelled or destroyed first; after either it is
// never called. `done` may destroy the Resolution.
//
// Ownership: a Resolution is an ordinary object owned by whoever starts it
// (a dial keeps one as a member) and may be destroyed at any time. Its timer
// and its getaddrinfo request (util/uv_handle.h) free their memory through
// the loop: a getaddrinfo already running on the thread pool cannot be
// interrupted, its answer is discarded when it arrives, so the loop must
// keep running until then (uv_run until it has no more active requests, as
// a clean shutdown does anyway).
#pragma once

#include <sys/socket.h>
#include <uv.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "util/error.h"
#include "util/uv_handle.h"

namespace connmgr {

using ResolveCallback = std::function<void(Result<std::vector<sockaddr_storage>>)>;

class Resolution {
 public:
  Resolution() = default;
  ~Resolution() = default;  // cancels: the members close and forget their callbacks
  Resolution(const Resolution&) = delete;
  Resolution& operator=(const Resolution&) = delete;

  // `timeout` zero: no limit of its own (a caller with an overall deadline,
  // like a dial, keeps its own timer and cancels the resolution when it
  // fires). A resolution under way is cancelled first.
  void start(uv_loop_t* loop, const std::string& host, int port, std::chrono::milliseconds timeout,
             ResolveCallback done);
  // `done` will not be called. Idempotent; safe from inside `done`.
  void cancel();
  bool pending() const { return static_cast<bool>(done_); }

 private:
  using Answer = Result<std::vector<sockaddr_storage>>;

  void start_lookup(uv_loop_t* loop, std::chrono::milliseconds timeout);
  void answer_later(Answer answer);
  void on_resolved(int status, const addrinfo* result);
  void on_timeout();
  Error dns_error(int uv_error) const;
  void deliver(Answer answer);

  std::string host_;
  int port_ = 0;
  std::chrono::milliseconds timeout_{0};
  ResolveCallback done_;
  // The timeout, or the next-turn delivery of an answer known at start().
  Timer timer_;
  AddrInfoRequest lookup_;
};

}  // namespace connmgr
