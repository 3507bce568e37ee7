// Histogram: counts of observations in fixed buckets, with their sum, kept as
// things happen so that exposing them costs the same however many there were
// (the `metrics` method and the HTTP listener render them, docs/operations.md
// "Metrics").
//
// Buckets are given by their upper bounds, ascending; an observation falls
// in the first bucket whose bound is >= it, or in the implicit +Inf bucket.
// counts() are per bucket (not cumulative); the exposition formats want
// cumulative counts and compute them. Used from one thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

namespace connmgr {

class Histogram {
 public:
  explicit Histogram(std::span<const double> bounds)
      : bounds_(bounds.begin(), bounds.end()), counts_(bounds.size() + 1, 0) {}

  void observe(double value) {
    const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);
    ++counts_[static_cast<size_t>(it - bounds_.begin())];
    sum_ += value;
    ++count_;
  }

  const std::vector<double>& bounds() const { return bounds_; }
  // One count per bound, then the +Inf bucket's.
  const std::vector<uint64_t>& counts() const { return counts_; }
  double sum() const { return sum_; }
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;
  double sum_ = 0;
  uint64_t count_ = 0;
};

}  // namespace connmgr
