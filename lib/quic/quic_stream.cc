#include "quic/quic_stream.h"

#include <algorithm>
#include <utility>

namespace connmgr::quic {

namespace {

// Small writes are gathered into one chunk up to this size while ngtcp2 has
// not looked at it yet; bigger ones keep their own chunk.
constexpr size_t kChunk = 64 * 1024;

}  // namespace

// --- SendQueue ---------------------------------------------------------------------

void SendQueue::append(std::string_view bytes) {
  if (bytes.empty()) return;
  // The last chunk may grow (and move in memory) only while no byte of it
  // was handed to ngtcp2, which reads the bytes in place until acknowledged.
  if (!chunks_.empty() && end_ - chunks_.back().size() >= sent_ && chunks_.back().size() + bytes.size() <= kChunk)
    chunks_.back().append(bytes);
  else
    chunks_.emplace_back(bytes);
  end_ += bytes.size();
}

size_t SendQueue::unsent(ngtcp2_vec* vecs, size_t max) const {
  size_t count = 0;
  uint64_t offset = base_;
  for (const std::string& chunk : chunks_) {
    if (count == max) break;
    const uint64_t chunk_end = offset + chunk.size();
    if (chunk_end > sent_) {
      const size_t skip = sent_ > offset ? static_cast<size_t>(sent_ - offset) : 0;
      vecs[count].base = reinterpret_cast<uint8_t*>(const_cast<char*>(chunk.data())) + skip;
      vecs[count].len = chunk.size() - skip;
      ++count;
    }
    offset = chunk_end;
  }
  return count;
}

void SendQueue::acked_to(uint64_t offset) {
  while (!chunks_.empty() && base_ + chunks_.front().size() <= offset) {
    base_ += chunks_.front().size();
    chunks_.pop_front();
  }
}

// --- QuicStream ----------------------------------------------------------------------

QuicStream::QuicStream(uv_loop_t* loop, QuicStreamHost* host, int64_t id, StreamLimits limits)
    : loop_(loop), host_(host), id_(id), limit_(std::max<size_t>(limits.buffer, 1)) {}

// An unended stream goes with RESET_STREAM + STOP_SENDING: the node must not
// take a truncated stream for a complete one.
QuicStream::~QuicStream() {
  if (host_) host_->release(this);
}

void QuicStream::start(Callbacks callbacks) {
  callbacks_ = std::move(callbacks);
  if (started_ || ended_) return;
  started_ = true;
  schedule();  // whatever arrived before start()
}

void QuicStream::write(std::string_view bytes) {
  if (!host_ || ended_ || end_reason_ || fin_wanted_ || bytes.empty()) return;
  sendq_.append(bytes);
  if (buffered() > limit_) above_limit_ = true;
  host_->send_soon();
}

void QuicStream::shutdown_write() {
  if (!host_ || ended_ || end_reason_ || fin_wanted_) return;
  fin_wanted_ = true;
  host_->send_soon();
}

void QuicStream::consume(size_t n) {
  const uint64_t k = std::min<uint64_t>(n, unconsumed_);
  unconsumed_ -= k;
  to_return_ += k;
  return_pending_credit(false);
}

// Credit goes back in batches of an eighth of the window, so that a reader
// taking a few bytes at a time does not cost a MAX_STREAM_DATA frame each.
// No stall: a peer out of credit means the whole window is unconsumed or
// waiting here, and once the user consumed it all, the batch is full.
void QuicStream::return_pending_credit(bool all) {
  if (!host_ || to_return_ == 0) return;
  if (!all && to_return_ < std::max<uint64_t>(limit_ / 8, 1)) return;
  const uint64_t n = std::exchange(to_return_, 0);
  returned_ += n;
  host_->return_credit(id_, n);
  host_->send_soon();
}

void QuicStream::reset() {
  if (ended_) return;
  ended_ = true;
  callbacks_ = {};
  later_.close();
  if (QuicStreamHost* host = std::exchange(host_, nullptr)) host->release(this);
}

// --- from the session ------------------------------------------------------------------

void QuicStream::on_sent(uint64_t n, bool fin) {
  sendq_.mark_sent(n);
  if (fin) fin_sent_ = true;
}

void QuicStream::on_data(const uint8_t* data, size_t n, bool fin) {
  inbox_.append(reinterpret_cast<const char*>(data), n);
  received_ += n;
  if (fin) fin_received_ = true;
  schedule();
}

void QuicStream::on_acked(uint64_t offset) {
  sendq_.acked_to(offset);
  if (above_limit_ && buffered() <= limit_ / 2) schedule();
}

void QuicStream::on_peer_reset() {
  if (!end_reason_) end_reason_ = "reset";
  schedule();
}

void QuicStream::on_closed(bool reset) {
  host_ = nullptr;
  if (!end_reason_) end_reason_ = reset ? "reset" : "eof";
  schedule();
}

void QuicStream::on_link_lost() {
  host_ = nullptr;
  if (!end_reason_) end_reason_ = "link_lost";
  schedule();
}

// --- delivery ----------------------------------------------------------------------------

void QuicStream::schedule() {
  if (!started_ || ended_) return;
  if (!later_.initialized() && later_.init(loop_) != 0) return;
  if (!later_.active()) later_.start(0, [this] { deliver(); });
}

// One callback per turn, the callback last: it may destroy the stream.
void QuicStream::deliver() {
  if (ended_) return;
  if (!inbox_.empty()) {
    std::string bytes = std::move(inbox_);
    inbox_.clear();
    unconsumed_ += bytes.size();
    schedule();  // what else is due comes next turn
    if (callbacks_.on_data) callbacks_.on_data(bytes);
    return;
  }
  if (fin_received_ && !eof_delivered_) {
    eof_delivered_ = true;
    schedule();
    if (callbacks_.on_eof) callbacks_.on_eof();
    return;
  }
  if (above_limit_ && buffered() <= limit_ / 2 && !end_reason_) {
    above_limit_ = false;
    schedule();
    if (callbacks_.on_writable) callbacks_.on_writable();
    return;
  }
  if (end_reason_) end_with(end_reason_);
}

void QuicStream::end_with(const char* reason) {
  ended_ = true;
  auto on_end = std::move(callbacks_.on_end);
  callbacks_ = {};
  later_.close();
  if (QuicStreamHost* host = std::exchange(host_, nullptr)) host->release(this);
  if (on_end) on_end(reason);  // last: may destroy this
}

}  // namespace connmgr::quic
