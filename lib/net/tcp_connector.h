// TcpConnector: dials TCP endpoints on the libuv loop.
//
// Host names are resolved with Resolution (uv_getaddrinfo) and their
// addresses raced inside the one dial (net/address_race.h): IPv6 first,
// families interleaved, the next address dialled when the one before has
// neither connected nor failed after the request's attempt_delay, or at once
// when it failed; the first to connect wins and the other sockets close. All
// within the request's one timeout (one timer for resolution and every
// address). request.on_address hears the family of each address as its
// connect starts.
// Failures: Error{kConnectFailed, "connect to 127.0.0.1:9 failed: connection
// refused (ECONNREFUSED)", reason}; reason "refused", "timeout",
// "unreachable", "local_network" (this host's network cannot carry the dial:
// ENETUNREACH, ENETDOWN, EADDRNOTAVAIL, EAFNOSUPPORT; the message names the
// errno), "dns", or an errno name ("EMFILE"). With several addresses the
// message lists the addresses tried and the reason is the most telling
// failure: the last one that is not "local_network", "local_network" only
// when every address failed for it; "timeout" when the timeout passes first.
//
// An established link has TCP_NODELAY and, when options.keepalive is not
// zero, TCP keepalive; it is read all the time (bytes counted and dropped) so
// that the peer's FIN ("closed") or RST ("reset") is reported when it
// arrives. remote_address() is the IP literal that answered, local_address()
// "ip:port" / "[ip]:port", rtt_ms() the kernel's smoothed RTT (TCP_INFO).
//
// Streams: a link's open_stream() dials a new TCP connection to the IP
// that answered for the link and its port (no resolution), within the
// stream's timeout and with the same socket options, and hands it over as a
// TcpStream (net/tcp_stream.h); a failure is the dial's Error{kConnectFailed}.
//
// Callbacks: as Connector says: exactly once, never inside connect(), never
// after the handle's cancel(). Ownership: owned by a ConnectorFactory.
// Destroying the connector cancels the dials still under way (their
// callbacks never run); links it already handed over stay valid on their own.
// Memory of cancelled dials and closed links is freed by libuv close
// callbacks: keep running the loop until it is empty before uv_loop_close.
#pragma once

#include <chrono>
#include <memory>

#include <uv.h>

#include "net/connector.h"

namespace connmgr {

struct TcpOptions {
  // Idle time before keepalive probes; zero turns keepalive off.
  std::chrono::seconds keepalive{30};
};

class TcpConnector final : public Connector {
 public:
  TcpConnector(uv_loop_t* loop, TcpOptions options);
  ~TcpConnector() override;

  std::string_view name() const override { return "tcp"; }
  DialHandle connect(const DialRequest& request, ConnectCallback done) override;

  struct Dials;  // the dials under way, which the connector owns (tcp_connector.cc)

 private:
  std::shared_ptr<Dials> dials_;  // shared with the links, which dial their streams
};

}  // namespace connmgr
