// systemd glue: sd_notify messages (READY, STATUS, RELOADING, STOPPING,
// WATCHDOG), the watchdog timer and socket activation. Each is a no-op
// without systemd (no NOTIFY_SOCKET, no passed sockets).
#pragma once

#include <uv.h>

#include <optional>
#include <string>

namespace connmgr::daemon {

void notify_ready(const std::string& status);
void notify_status(const std::string& status);
// RELOADING=1 with MONOTONIC_USEC, as systemd 253+ wants for Type=notify-reload.
void notify_reloading();
void notify_stopping();

// Sends WATCHDOG=1 at half of WATCHDOG_USEC from a loop timer, so a stuck loop
// is noticed. Owns its timer (closed in stop()).
class Watchdog {
 public:
  // Starts when systemd asked for a watchdog; false otherwise.
  bool start(uv_loop_t* loop);
  void stop();
  uint64_t interval_ms() const { return interval_ms_; }

 private:
  uv_timer_t* timer_ = nullptr;
  uint64_t interval_ms_ = 0;
};

// The RPC socket passed by systemd (socket activation), preferring the one
// named "rpc" (FileDescriptorName=), or nullopt.
std::optional<int> activated_socket();

}  // namespace connmgr::daemon
