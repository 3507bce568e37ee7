// Wall-clock time for records and events (unix milliseconds), kept apart from
// the loop's monotonic time used for timers.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace connmgr {

inline int64_t unix_now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// RFC 3339 UTC with milliseconds: 2026-11-24T09:30:00.123Z (docs/api.md,
// "Time").
std::string format_rfc3339_ms(int64_t unix_ms);

}  // namespace connmgr
