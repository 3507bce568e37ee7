// EventLog: the daemon's log lines for the events the manager publishes, so
// that a storm of failing dials cannot flood the log.
//
// A node's failed dials form a series: its first failure is a warning line,
// its repeats are counted (FailureSummary) and written as one "dials failed"
// line per node at the end of each period; a link that comes up or goes
// down, a node removed, or a connect whose attempts are spent ("gave up",
// a line too, from the gave_up event) ends the series. The Logger's own cap
// on lines per second is reported from here every second. Owned by the
// daemon, on its loop; holds a subscription to the bus and two timers, all
// gone with it or stop().
#pragma once

#include <uv.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/connection_manager.h"
#include "core/events.h"
#include "systemd/log.h"
#include "systemd/log_throttle.h"
#include "util/uv_handle.h"

namespace connmgr::daemon {

// A minute: thousands of failed dials a minute become a line per node and
// minute, and an operator still learns within a minute that they go on.
inline constexpr uint64_t kLogSummaryPeriodS = 60;

class EventLog {
 public:
  // `log`, `events` and `manager` outlive this object.
  EventLog(uv_loop_t* loop, Logger& log, EventBus& events, const ConnectionManager& manager,
           uint64_t period_s = kLogSummaryPeriodS);
  ~EventLog();
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Subscribes to the event types that `level` logs (again after a reload).
  void set_level(config::LogLevel level);
  // The daemon stops: the last (shorter) period's summaries and the cap's
  // count are written now, and no timer runs after.
  void stop();

 private:
  void log_event(const Event& e);
  bool summarized(const Event& e);
  void gave_up(const Event& e);
  void flush_summary();
  void add_stream_fields(const Event& e, Fields& f);

  Logger& log_;
  EventBus& events_;
  const ConnectionManager& manager_;
  const uint64_t period_s_;
  std::optional<EventBus::SubscriptionId> subscription_;
  EventTypeMask types_ = 0;
  FailureSummary failures_;
  Timer summary_timer_;  // flush_summary every period_s_
  Timer report_timer_;   // the Logger's "log lines suppressed", every second
  // Who opened each open stream, for its closing line (the event does not
  // say; the manager forgets the stream before it publishes the close).
  std::map<uint64_t, StreamClient> stream_clients_;
};

}  // namespace connmgr::daemon
