// Connection: an established link to a node, whatever its transport.
//
// Ownership: the ConnectionManager owns each Connection (unique_ptr). The
// transport's libuv handles are released through uv_close after close() or
// destruction; implementations keep that memory alive on their own until the
// close callbacks have run, so destroying a Connection at any time is safe.
//
// Callbacks: the drop callback fires at most once, on the loop thread, when
// the peer or the network ends the link (reason "closed", "reset",
// "idle_timeout", or an errno name). It never fires after close() or
// destruction, and never from inside close().
//
// Streams: open_stream() carries a program's bytes over the link (see
// net/stream.h). A Stream stays safe to use and destroy after its Connection
// is gone (a QUIC stream then ends with "link_lost"; a TCP stream, being a
// connection of its own, goes on), but its owner normally ends the streams
// of a link before closing it. The Connector that made the Connection must
// outlive it (open_stream uses the connector's dial machinery).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>

#include "net/dial_handle.h"
#include "net/stream.h"

namespace connmgr {

class Connection {
 public:
  using DropCallback = std::function<void(const std::string& reason)>;

  virtual ~Connection() = default;

  virtual const std::string& node_id() const = 0;
  virtual int64_t endpoint_id() const = 0;
  virtual const std::string& protocol() const = 0;
  // Remote: the address actually dialled (an IP literal) and port.
  virtual const std::string& remote_address() const = 0;
  virtual int remote_port() const = 0;
  // Local "ip:port" as the kernel bound it; "" once the link has ended.
  // Asked of the kernel when wanted rather than kept: a held link stays small.
  virtual std::string local_address() const = 0;
  virtual bool is_active() const = 0;
  // Smoothed round-trip time when the transport knows it. Read when the dial
  // succeeds, it is the handshake's measure, the sample an endpoint's
  // statistics keep: TCP, the kernel's RTT of the new socket (TCP_INFO,
  // from its SYN and SYN-ACK); QUIC, ngtcp2's smoothed RTT at handshake
  // completion. Later reads follow the link's traffic.
  virtual std::optional<double> rtt_ms() const = 0;
  // Ends the link gracefully (TCP: FIN; QUIC: CONNECTION_CLOSE). Idempotent.
  virtual void close() = 0;

  // Opens a stream to the node over this link. `done` is called exactly
  // once, on the loop thread, never from inside open_stream(), unless the
  // returned handle is cancelled first (then never). `limits` bound the
  // stream's buffers both ways (net/stream.h).
  //
  // QUIC: a new client-initiated bidirectional stream on this connection.
  // When the peer's stream limit is reached it waits for the peer's credit
  // until `timeout`, then fails with Error::stream_refused(..., "stream_limit");
  // a connection that ends (or has ended) first fails with
  // Error::stream_refused(..., "link_lost").
  // TCP: a new TCP connection to remote_address():remote_port() (an IP
  // literal, no name resolution) within `timeout`; a failure is
  // Error::connect_failed(message, reason) with the dial's reason
  // (failure_reason.h: "refused", "timeout", "unreachable", ...).
  virtual DialHandle open_stream(std::chrono::milliseconds timeout, StreamLimits limits,
                                 StreamCallback done) = 0;
  // Streams the peer opened toward us, each refused (QUIC: STOP_SENDING and
  // RESET_STREAM). Always 0 for transports whose peer cannot open any.
  virtual uint64_t refused_peer_streams() const { return 0; }

  void set_drop_callback(DropCallback cb) { on_drop_ = std::move(cb); }

 protected:
  // For implementations: report a drop once, then forget the callback.
  void notify_drop(const std::string& reason) {
    if (on_drop_) {
      auto cb = std::move(on_drop_);
      on_drop_ = nullptr;
      cb(reason);
    }
  }
  void forget_drop_callback() { on_drop_ = nullptr; }

 private:
  DropCallback on_drop_;
};

}  // namespace connmgr
