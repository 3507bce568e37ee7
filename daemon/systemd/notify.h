// systemd service notifications (sd_notify, Type=notify) and the watchdog.
//
// Each call is a no-op without systemd: sd_notify() returns 0 when
// NOTIFY_SOCKET is unset, and Watchdog::start() declines when WATCHDOG_USEC
// is unset or meant for another process. Messages go out with one
// datagram each; a send error is ignored, because the daemon must keep
// serving whether or not its supervisor listens.
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>

#include "util/uv_handle.h"

// Until daemon.cc includes it itself: activated_socket() moved there.
#include "systemd/listen_fds.h"

namespace connmgr::daemon {

// READY=1 with a STATUS= line: the socket is served (also after a reload).
void notify_ready(const std::string& status);
// STATUS=, e.g. "3 active links, 0 pending, 2 clients".
void notify_status(const std::string& status);
// RELOADING=1 with MONOTONIC_USEC= (the form systemd 253's Type=notify-reload
// requires; older systemd reads RELOADING=1 alone). READY=1 ends the reload.
void notify_reloading();
// STOPPING=1: shutdown has begun.
void notify_stopping();

// Sends WATCHDOG=1 every half of WATCHDOG_USEC from a loop timer, so that a
// loop stuck for longer than WatchdogSec= gets the service restarted.
// Owns its timer (a Timer: stop() or the destructor closes it, and libuv
// frees it on the loop's next turn). The timer is unreferenced: it never
// keeps the loop alive on its own.
class Watchdog {
 public:
  Watchdog() = default;
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  ~Watchdog() = default;

  // Starts and returns true when systemd asked this process for a watchdog
  // (WATCHDOG_USEC, and WATCHDOG_PID if set, names us); false otherwise.
  bool start(uv_loop_t* loop);
  void stop();
  bool running() const { return timer_.initialized(); }
  // Milliseconds between two WATCHDOG=1; 0 when not running.
  uint64_t interval_ms() const { return interval_ms_; }

 private:
  Timer timer_;
  uint64_t interval_ms_ = 0;
};

}  // namespace connmgr::daemon
