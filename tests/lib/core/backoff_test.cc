#include "core/backoff.h"

#include <catch2/catch.hpp>

using namespace connmgr;
using std::chrono::milliseconds;

namespace {
RetryOptions opts(int64_t initial, int64_t max, bool exponential = true) {
  RetryOptions o;
  o.max_attempts = 10;
  o.exponential = exponential;
  o.initial_delay = milliseconds(initial);
  o.max_delay = milliseconds(max);
  return o;
}
}  // namespace

TEST_CASE("the delay before attempt n+1 is initial * 2^(n-1)") {
  auto o = opts(100, 1000000);
  CHECK(backoff_delay(o, 1) == milliseconds(100));
  CHECK(backoff_delay(o, 2) == milliseconds(200));
  CHECK(backoff_delay(o, 3) == milliseconds(400));
  CHECK(backoff_delay(o, 4) == milliseconds(800));
  CHECK(backoff_delay(o, 11) == milliseconds(102400));
}

TEST_CASE("the delay is capped at max_delay") {
  auto o = opts(1000, 60000);
  CHECK(backoff_delay(o, 6) == milliseconds(32000));
  CHECK(backoff_delay(o, 7) == milliseconds(60000));
  CHECK(backoff_delay(o, 8) == milliseconds(60000));
}

TEST_CASE("huge attempt counts neither overflow nor pass the cap") {
  auto o = opts(1000, 60000);
  CHECK(backoff_delay(o, 64) == milliseconds(60000));
  CHECK(backoff_delay(o, 1000000) == milliseconds(60000));
  auto big = opts(INT64_MAX / 4, INT64_MAX);
  CHECK(backoff_delay(big, 100).count() == INT64_MAX);
}

TEST_CASE("without exponential the delay is constant") {
  auto o = opts(250, 60000, false);
  for (int n = 1; n < 20; ++n) CHECK(backoff_delay(o, n) == milliseconds(250));
}

TEST_CASE("an initial delay above the cap is cut to the cap") {
  auto o = opts(5000, 1000);
  CHECK(backoff_delay(o, 1) == milliseconds(1000));
  CHECK(backoff_delay(o, 3) == milliseconds(1000));
}

TEST_CASE("defaults come from the configuration, max_attempts = max_retry_count + 1") {
  ConnectionConfig c;
  c.base_retry_interval = milliseconds(1500);
  c.max_retry_interval = milliseconds(9000);
  c.max_retry_count = 5;
  auto o = RetryOptions::from_config(c);
  CHECK(o.max_attempts == 6);
  CHECK(o.exponential);
  CHECK(o.initial_delay == milliseconds(1500));
  CHECK(o.max_delay == milliseconds(9000));
  CHECK(o.jitter == 0.0);
}

TEST_CASE("jitter is off by default, so the formula holds exactly") {
  auto o = opts(100, 10000);
  CHECK(backoff_delay_jittered(o, 3, 0.99) == milliseconds(400));
}

TEST_CASE("jitter takes at most its fraction off the delay") {
  auto o = opts(1000, 100000);
  o.jitter = 0.5;
  CHECK(backoff_delay_jittered(o, 1, 0.0) == milliseconds(1000));
  CHECK(backoff_delay_jittered(o, 1, 1.0) == milliseconds(500));
  CHECK(backoff_delay_jittered(o, 2, 0.5) == milliseconds(1500));
}
