// SendQueue: the bytes one side of a QUIC stream has to send, for
// connmgr-test-peer. Owned by its stream; the loop's thread only.
#pragma once

#include <ngtcp2/ngtcp2.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <string>

namespace connmgr::test_peer {


// The bytes one side of a QUIC stream has to send. ngtcp2 keeps pointers to
// the bytes it sent until they are acknowledged, so a chunk never moves once
// queued (a std::deque keeps its elements in place on push_back/pop_front).
class SendQueue {
 public:
  void push(std::string bytes) {
    if (bytes.empty()) return;
    end_ += bytes.size();
    chunks_.push_back(std::move(bytes));
  }
  void finish() { fin_ = true; }
  bool finishing() const { return fin_; }
  uint64_t unsent() const { return end_ - sent_; }
  uint64_t held() const { return end_ - acked_; }  // queued, not yet acknowledged
  bool fin_sent() const { return fin_sent_; }
  // Up to `max` pieces of unsent bytes; true when they reach the end.
  size_t peek(ngtcp2_vec* v, size_t max, bool* to_end) const {
    size_t n = 0;
    uint64_t start = base_, covered = sent_;
    for (const auto& c : chunks_) {
      const uint64_t stop = start + c.size();
      if (stop > sent_ && n < max) {
        const size_t skip = sent_ > start ? static_cast<size_t>(sent_ - start) : 0;
        v[n].base = reinterpret_cast<uint8_t*>(const_cast<char*>(c.data())) + skip;
        v[n].len = c.size() - skip;
        covered = stop;
        ++n;
      }
      start = stop;
    }
    *to_end = covered == end_;
    return n;
  }
  void consumed(uint64_t n, bool fin) {
    sent_ += n;
    if (fin && sent_ == end_) fin_sent_ = true;
  }
  void acked(uint64_t upto) {
    acked_ = std::max(acked_, upto);
    while (!chunks_.empty() && base_ + chunks_.front().size() <= acked_) {
      base_ += chunks_.front().size();
      chunks_.pop_front();
    }
  }

 private:
  std::deque<std::string> chunks_;
  uint64_t base_ = 0;  // stream offset of chunks_.front()
  uint64_t acked_ = 0, sent_ = 0, end_ = 0;
  bool fin_ = false, fin_sent_ = false;
};

}  // namespace connmgr::test_peer
