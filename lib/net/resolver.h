// resolve(): turns a host (a name or an IP literal) and a port into socket
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
// inside resolve() itself (a literal is answered on the next loop turn),
// unless the returned handle is cancelled first; after cancel() returns it is
// never called. cancel() is idempotent and safe at any time: after `done`,
// from inside `done` or any other callback.
//
// Ownership: a resolution owns itself and frees itself after its last libuv
// callback; the returned handle does not keep it alive and may be dropped. A
// getaddrinfo already running on the thread pool cannot be interrupted:
// cancel() (or the timeout) discards its answer, and the memory is freed when
// that answer arrives, so the loop must keep running until then (uv_run until
// it has no more active requests, as a clean shutdown does anyway).
#pragma once

#include <sys/socket.h>
#include <uv.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "net/dial_handle.h"
#include "util/error.h"

namespace connmgr {

using ResolveCallback = std::function<void(Result<std::vector<sockaddr_storage>>)>;

// `timeout` zero: no limit of its own (a caller with an overall deadline,
// like a dial, keeps its own timer and cancels the resolution when it fires).
DialHandle resolve(uv_loop_t* loop, const std::string& host, int port,
                   std::chrono::milliseconds timeout, ResolveCallback done);

}  // namespace connmgr
