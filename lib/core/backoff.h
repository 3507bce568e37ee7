// RetryOptions and the backoff schedule of a connect's retries (docs/guide.md,
// "Retries and backoff"). Pure functions: no loop, no clock.
#pragma once

#include <chrono>
#include <cstdint>

#include "core/connection_config.h"

namespace connmgr {

struct RetryOptions {
  int max_attempts = 1;  // every attempt counts, the first included
  bool exponential = true;
  std::chrono::milliseconds initial_delay{1000};
  std::chrono::milliseconds max_delay{60000};
  double jitter = 0.0;  // 0..1; see ConnectionConfig::retry_jitter

  // The configuration's defaults: max_attempts = max_retry_count + 1.
  static RetryOptions from_config(const ConnectionConfig& config);
};

// Delay before attempt n+1 after n >= 1 failed attempts:
// initial * 2^(n-1) capped at max_delay when exponential, else initial.
// Never overflows, whatever n is. Without jitter.
std::chrono::milliseconds backoff_delay(const RetryOptions& options, int failed_attempts);

// backoff_delay() less a random part of at most options.jitter of it;
// `unit_random` is a number in [0, 1).
std::chrono::milliseconds backoff_delay_jittered(const RetryOptions& options,
                                                 int failed_attempts, double unit_random);

}  // namespace connmgr
