// QuicStream: a Stream (net/stream.h) on one client-initiated bidirectional
// QUIC stream of a QuicConnection. Internal to lib/quic: made by the
// connection's session (quic_connector.cc), which drives ngtcp2 and tells
// the stream what happened; the stream tells the session what it wants
// through QuicStreamHost.
//
// Toward the node: write() appends to a queue of chunks that ngtcp2 reads
// in place (writev_stream) and that are freed only when the peer
// acknowledges them (acked_stream_data_offset): buffered() is the bytes
// written and not yet acknowledged. From the node: ngtcp2's bytes wait in
// an inbox until delivered; the stream's receive window is exactly
// StreamLimits::buffer (the connection advertises no initial stream window
// and grants it when the stream opens), and credit goes back to the peer
// only as the user consume()s, so delivered-but-unconsumed plus undelivered
// bytes never pass the limit.
//
// Callbacks: each fires from the stream's own zero-delay timer, one per
// loop turn, never from inside a call on the stream or from inside ngtcp2;
// order: data, eof, writable, end.
//
// Ownership: the user owns the stream. The session keeps a back-pointer
// while the stream is registered with it; either side may go first: the
// session's end detaches its streams (they end with "link_lost"), and the
// stream's destruction or reset() releases it from the session (RESET_STREAM
// + STOP_SENDING; the session keeps the stream's unacknowledged bytes until
// ngtcp2 closes the stream, since ngtcp2 may still read them).
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <string>
#include <utility>

#include "net/stream.h"
#include "util/uv_handle.h"

#include <ngtcp2/ngtcp2.h>

namespace connmgr::quic {

// Bytes queued toward the peer, kept in place until acknowledged.
class SendQueue {
 public:
  void append(std::string_view bytes);
  // Up to `max` vectors of the bytes not yet handed to ngtcp2.
  size_t unsent(ngtcp2_vec* vecs, size_t max) const;
  uint64_t unsent_bytes() const { return end_ - sent_; }
  void mark_sent(uint64_t n) { sent_ += n; }
  // Everything below `offset` is acknowledged: its chunks are freed.
  void acked_to(uint64_t offset);
  uint64_t held() const { return end_ - base_; }
  bool empty() const { return chunks_.empty(); }

 private:
  std::deque<std::string> chunks_;
  uint64_t base_ = 0;  // stream offset of chunks_.front()[0]
  uint64_t sent_ = 0;  // offset handed to ngtcp2
  uint64_t end_ = 0;   // offset after the last queued byte
};

class QuicStream;

// What a stream asks of the session it runs on.
class QuicStreamHost {
 public:
  virtual ~QuicStreamHost() = default;
  // There is something to send (bytes, a FIN, credit): write packets soon.
  virtual void send_soon() = 0;
  // The user consumed `n` bytes: give the peer that much credit again.
  virtual void return_credit(int64_t id, uint64_t n) = 0;
  // The stream leaves the session (its user is done with it, or it ended):
  // a stream ngtcp2 still has open is reset both ways (RESET_STREAM +
  // STOP_SENDING), and the session keeps its unacknowledged bytes until
  // ngtcp2 closes it.
  virtual void release(QuicStream* stream) = 0;
};

class QuicStream final : public Stream {
 public:
  QuicStream(uv_loop_t* loop, QuicStreamHost* host, int64_t id, StreamLimits limits);
  ~QuicStream() override;

  // --- Stream -------------------------------------------------------------------
  int64_t transport_id() const override { return id_; }
  void start(Callbacks callbacks) override;
  void write(std::string_view bytes) override;
  size_t buffered() const override { return static_cast<size_t>(sendq_.held()); }
  void shutdown_write() override;
  void consume(size_t n) override;
  void reset() override;

  // --- from the session (never from inside the user's calls) --------------------
  uint64_t limit() const { return limit_; }
  // Bytes received whose credit has not gone back to the peer.
  uint64_t outstanding() const { return received_ - returned_; }
  // Something to hand to ngtcp2: bytes, or the FIN once all bytes are handed.
  bool wants_to_send() const { return host_ && (sendq_.unsent_bytes() > 0 || fin_due()); }
  bool fin_due() const { return fin_pending() && sendq_.unsent_bytes() == 0; }
  bool fin_pending() const { return fin_wanted_ && !fin_sent_; }
  SendQueue& send_queue() { return sendq_; }
  // `n` bytes (and the FIN when `fin`) went into a packet.
  void on_sent(uint64_t n, bool fin);
  void on_data(const uint8_t* data, size_t n, bool fin);
  void on_acked(uint64_t offset);
  // The peer reset the stream (RESET_STREAM) or stopped our direction
  // (STOP_SENDING): the stream ends with "reset".
  void on_peer_reset();
  // ngtcp2 closed the stream (both directions finished, or a reset); the
  // session has already let it go.
  void on_closed(bool reset);
  // The session leaves: its link ended (or it was destroyed).
  void on_link_lost();
  // The session takes the bytes ngtcp2 may still read (release()).
  SendQueue take_send_queue() { return std::exchange(sendq_, SendQueue()); }

 private:
  void schedule();
  void deliver();
  void end_with(const char* reason);
  void return_pending_credit(bool all);

  uv_loop_t* loop_;
  QuicStreamHost* host_;  // null once released or detached
  int64_t id_;
  uint64_t limit_;
  Callbacks callbacks_;
  Timer later_;  // delivers the callbacks, one per turn

  SendQueue sendq_;
  std::string inbox_;       // received, not yet delivered
  uint64_t received_ = 0;   // bytes received in all
  uint64_t returned_ = 0;   // credit given back in all
  uint64_t unconsumed_ = 0; // delivered, not yet consume()d
  uint64_t to_return_ = 0;  // consumed, credit not yet given back
  bool started_ = false;
  bool fin_wanted_ = false, fin_sent_ = false;
  bool fin_received_ = false, eof_delivered_ = false;
  bool above_limit_ = false;  // buffered() passed the limit: on_writable is owed
  const char* end_reason_ = nullptr;  // decided, not yet delivered
  bool ended_ = false;
};

}  // namespace connmgr::quic
