// What keeps a storm of failing dials from flooding the log: a cap on lines
// per second (LineLimiter) and a per-node summary of repeated failures
// (FailureSummary). Both are plain state with the time passed in, so that
// tests drive them with a clock of their own; the Logger and the daemon's
// loop own one each. Single-threaded (the loop's thread); no callbacks kept.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace connmgr::daemon {

// A token bucket over log lines: `rate` lines a second on average, up to
// `burst` at once. A line refused is only counted (no allocation); the count
// is handed out at most once a second, for one line saying how many lines
// were suppressed.
class LineLimiter {
 public:
  LineLimiter(double rate_per_s, double burst);

  // Whether a line may be written at `now_ms` (a monotonic clock); a refused
  // one is counted as suppressed.
  bool admit(int64_t now_ms);
  // The lines suppressed since the last report, when there are some and the
  // last report is at least a second old; else 0. Resets the count it returns.
  uint64_t take_report(int64_t now_ms);
  uint64_t suppressed() const { return suppressed_; }

 private:
  void refill(int64_t now_ms);

  double rate_per_ms_;
  double burst_;
  double tokens_;
  int64_t last_refill_ms_ = -1;
  int64_t last_report_ms_ = INT64_MIN / 2;
  uint64_t suppressed_ = 0;
};

// A node's failed dials as series: the first failure of a series is worth a
// line, its repeats are counted and summed up once per period. A series
// ends with a success or a state change of the node's link (end_series), or
// with a whole period without a failure; its repeats counted so far are still
// summed up at the period's end. The state held is the nodes that failed
// within the last period: flush() forgets the rest.
class FailureSummary {
 public:
  struct Repeats {
    const std::string& node;
    uint64_t count;
    std::string reasons;  // "refused:2130,timeout:2": each reason and its count
  };

  // A failed dial of `node`: true when it opens a series (log it), false
  // when it is a repeat (counted).
  bool on_failure(const std::string& node, std::string_view reason);
  // A success, or the link's state changed: the next failure opens a series
  // (the repeats so far are still in the period's summary).
  void end_series(const std::string& node);
  // The period's end: `emit` once per node with repeats in it; then the
  // repeats are forgotten, and so are the series without a failure in it.
  void flush(const std::function<void(const Repeats&)>& emit);
  bool in_series(const std::string& node) const {
    auto it = series_.find(node);
    return it != series_.end() && it->second.open;
  }
  size_t tracked_nodes() const { return series_.size(); }

 private:
  struct Series {
    bool open = true;  // false: ended, kept only for its repeats' summary
    bool failed_in_period = true;
    uint64_t repeats = 0;
    std::vector<std::pair<std::string, uint64_t>> reasons;  // of the repeats, first seen first
  };
  std::unordered_map<std::string, Series> series_;
};

}  // namespace connmgr::daemon
