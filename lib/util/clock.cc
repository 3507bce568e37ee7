#include "util/clock.h"

#include <cinttypes>
#include <cstdio>
#include <ctime>

namespace connmgr {

std::string format_rfc3339_ms(int64_t unix_ms) {
  // Floor division so that times before 1970 still format correctly.
  int64_t secs = unix_ms / 1000;
  int64_t ms = unix_ms % 1000;
  if (ms < 0) {
    ms += 1000;
    secs -= 1;
  }
  time_t t = static_cast<time_t>(secs);
  struct tm tm_utc {};
  gmtime_r(&t, &tm_utc);
  char buf[64];
  snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03" PRId64 "Z",
           tm_utc.tm_year + 1900, tm_utc.tm_mon + 1, tm_utc.tm_mday, tm_utc.tm_hour,
           tm_utc.tm_min, tm_utc.tm_sec, ms);
  return buf;
}

}  // namespace connmgr
