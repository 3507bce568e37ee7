#include "systemd/notify.h"

#include <systemd/sd-daemon.h>
#include <time.h>

namespace connmgr::daemon {

void notify_ready(const std::string& status) { sd_notify(0, ("READY=1\nSTATUS=" + status).c_str()); }

void notify_status(const std::string& status) { sd_notify(0, ("STATUS=" + status).c_str()); }

void notify_reloading() {
  // CLOCK_MONOTONIC in µs: systemd compares it with its own clock to tell
  // this reload from an older one.
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const uint64_t usec = static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
  sd_notify(0, ("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec)).c_str());
}

void notify_stopping() { sd_notify(0, "STOPPING=1\nSTATUS=stopping"); }

bool Watchdog::start(uv_loop_t* loop) {
  if (timer_.initialized()) return true;
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return false;
  // Half the deadline, as sd_watchdog_enabled(3) advises: a late turn of the
  // loop or a slow first write still lands in time.
  interval_ms_ = usec / 2000;
  if (interval_ms_ == 0) interval_ms_ = 1;
  if (timer_.init(loop) != 0) {
    interval_ms_ = 0;
    return false;
  }
  timer_.start(0, [] { sd_notify(0, "WATCHDOG=1"); }, interval_ms_);
  timer_.unref();
  return true;
}

void Watchdog::stop() {
  timer_.close();
  interval_ms_ = 0;
}

}  // namespace connmgr::daemon
