#include "systemd/notify.h"

#include <systemd/sd-daemon.h>
#include <time.h>

#include <cstdlib>
#include <cstring>

namespace connmgr::daemon {

void notify_ready(const std::string& status) {
  sd_notify(0, ("READY=1\nSTATUS=" + status).c_str());
}

void notify_status(const std::string& status) { sd_notify(0, ("STATUS=" + status).c_str()); }

void notify_reloading() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const unsigned long long usec =
      static_cast<unsigned long long>(ts.tv_sec) * 1000000ull + static_cast<unsigned long long>(ts.tv_nsec) / 1000ull;
  sd_notify(0, ("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec)).c_str());
}

void notify_stopping() { sd_notify(0, "STOPPING=1\nSTATUS=stopping"); }

bool Watchdog::start(uv_loop_t* loop) {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return false;
  interval_ms_ = usec / 2000;  // half the deadline, in ms
  if (interval_ms_ == 0) interval_ms_ = 1;
  timer_ = new uv_timer_t;
  uv_timer_init(loop, timer_);
  uv_timer_start(timer_, [](uv_timer_t*) { sd_notify(0, "WATCHDOG=1"); }, 0, interval_ms_);
  return true;
}

void Watchdog::stop() {
  if (!timer_) return;
  uv_timer_stop(timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(timer_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  timer_ = nullptr;
}

std::optional<int> activated_socket() {
  char** names = nullptr;
  const int n = sd_listen_fds_with_names(1, &names);
  std::optional<int> fd;
  if (n > 0) {
    fd = SD_LISTEN_FDS_START;
    for (int i = 0; i < n; ++i)
      if (names && names[i] && strcmp(names[i], "rpc") == 0) fd = SD_LISTEN_FDS_START + i;
  }
  if (names) {
    for (int i = 0; i < n; ++i) free(names[i]);
    free(names);
  }
  return fd;
}

}  // namespace connmgr::daemon
