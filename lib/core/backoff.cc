#include "core/backoff.h"

#include <algorithm>

namespace connmgr {

RetryOptions RetryOptions::from_config(const ConnectionConfig& config) {
  RetryOptions o;
  o.max_attempts = std::max(1, config.max_retry_count + 1);
  o.exponential = true;
  o.initial_delay = config.base_retry_interval;
  o.max_delay = config.max_retry_interval;
  o.jitter = config.retry_jitter;
  return o;
}

std::chrono::milliseconds backoff_delay(const RetryOptions& options, int failed_attempts) {
  using std::chrono::milliseconds;
  const int64_t initial = std::max<int64_t>(0, options.initial_delay.count());
  const int64_t cap = std::max<int64_t>(0, options.max_delay.count());
  if (!options.exponential || failed_attempts <= 1) return milliseconds(std::min(initial, cap));
  // Double step by step and stop at the cap: 2^(n-1) overflows int64 long
  // before n reaches the values a long-lived supervised link can see.
  int64_t delay = initial;
  for (int i = 1; i < failed_attempts && delay < cap; ++i) {
    if (delay > cap / 2) {
      delay = cap;
      break;
    }
    delay *= 2;
  }
  return milliseconds(std::min(delay, cap));
}

std::chrono::milliseconds backoff_delay_jittered(const RetryOptions& options,
                                                 int failed_attempts, double unit_random) {
  auto delay = backoff_delay(options, failed_attempts);
  const double jitter = std::clamp(options.jitter, 0.0, 1.0);
  if (jitter == 0.0) return delay;
  const double r = std::clamp(unit_random, 0.0, 1.0);
  const auto cut = static_cast<int64_t>(static_cast<double>(delay.count()) * jitter * r);
  return std::chrono::milliseconds(delay.count() - cut);
}

}  // namespace connmgr
