// QuicConnector: dials QUIC endpoints (protocol "quic") with ngtcp2 0.12.1 and
// GnuTLS over uv_udp, on the libuv loop.
//
// Addresses: a host name is resolved (Resolution) and its addresses raced
// inside the one dial (net/address_race.h: IPv6 first, families
// interleaved, the next address when the handshake before has neither
// completed nor failed after the request's attempt_delay, or at once when it
// failed; the first handshake to complete wins and the others' sockets
// close), each handshake with the name for SNI and verification, all within
// the request's one timeout. A failure then names the addresses tried and
// its reason is the most telling one ("local_network" only when every
// address failed for it). request.on_address hears each address's family
// as its socket opens.
//
// Identity: SNI and verification name = the request's server_name, else its
// address; ALPN = the request's alpn, else options.default_alpn; the peer's
// certificate is verified against the system trust store or options.ca_file,
// unless the request carries pin_sha256, in which case the peer is accepted
// if and only if the SHA-256 of its SubjectPublicKeyInfo (base64) matches.
// Failures: "tls", "pin_mismatch", "handshake", "timeout", "refused", "dns",
// "unreachable", "local_network" (the UDP socket's bind, connect or sendmsg
// refused by this host's network: no route, interface down, no source
// address, family not configured; the message names the errno), or an errno
// name.
// A held link sends keepalives every options.keepalive and ends after
// options.idle_timeout of silence (drop reason "idle_timeout"); a peer
// CONNECTION_CLOSE or stateless reset ends it with "closed" / "reset".
// Streams: a link's open_stream() opens a client-initiated bidirectional
// stream on it (quic/quic_stream.h), once the handshake is confirmed and the
// peer's stream limit allows; it waits for both until its timeout, then
// fails with Error::stream_refused(..., "stream_limit"), or "link_lost" when
// the link ends first. Streams share the link; each has its own receive
// window (StreamLimits::buffer, granted on the stream and the connection),
// refilled only as its user consumes. The peer may open no bidirectional
// stream; unidirectional ones (an HTTP/3 server's control streams) are
// refused with STOP_SENDING and counted (refused_peer_streams()). When the
// link ends, open streams end with "link_lost" and pending opens are
// refused; after the Connection's destruction pending opens never answer.
// Owned by a ConnectorFactory; must outlive its links. Destroying it
// cancels the dials still under way (their callbacks never run). Memory of
// closed sockets and timers is freed by libuv close callbacks: keep running
// the loop until it is empty before uv_loop_close.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <uv.h>

#include "net/connector.h"
#include "util/error.h"

namespace connmgr {

struct QuicOptions {
  std::string default_alpn = "connmgr";
  std::string ca_file;  // empty: the system trust store
  std::chrono::milliseconds idle_timeout{30000};
  std::chrono::milliseconds keepalive{10000};
};

class QuicConnector final : public Connector {
 public:
  // Fails (kInternal) when GnuTLS credentials or the CA file cannot be loaded.
  static Result<std::unique_ptr<QuicConnector>> create(uv_loop_t* loop, QuicOptions options);
  ~QuicConnector() override;

  std::string_view name() const override { return "quic"; }
  DialHandle connect(const DialRequest& request, ConnectCallback done) override;

  struct Impl;

 private:
  explicit QuicConnector(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace connmgr
