#include "event_log.h"

#include "net/failure_reason.h"

namespace connmgr::daemon {

namespace {

// How often the Logger may say how many lines its cap suppressed.
constexpr uint64_t kReportIntervalMs = 1000;

// The event types log_event writes a line for at `level` (it decides on each
// event again): with the bus told, a publisher can skip building the events
// nobody logs or watches.
EventTypeMask logged_event_types(config::LogLevel level) {
  switch (level) {
    case config::LogLevel::kDebug:
      return kAllEventTypes;
    case config::LogLevel::kInfo:
      return kAllEventTypes & ~event_type_bit(EventType::kConnecting) &
             ~event_type_bit(EventType::kRetryScheduled) & ~event_type_bit(EventType::kInventoryChanged);
    case config::LogLevel::kWarning:
      // connected and node_removed end a node's series of failures
      // (EventLog::summarized), though their lines are info.
      return event_type_bit(EventType::kConnectFailed) | event_type_bit(EventType::kDisconnected) |
             event_type_bit(EventType::kConnected) | event_type_bit(EventType::kNodeRemoved) |
             event_type_bit(EventType::kGaveUp);
    case config::LogLevel::kError:
      return 0;
  }
  return kAllEventTypes;
}

}  // namespace

EventLog::EventLog(uv_loop_t* loop, Logger& log, EventBus& events, const ConnectionManager& manager,
                   uint64_t period_s)
    : log_(log), events_(events), manager_(manager), period_s_(period_s > 0 ? period_s : kLogSummaryPeriodS),
      summary_timer_(loop), report_timer_(loop) {
  summary_timer_.start(period_s_ * 1000, [this] { flush_summary(); }, period_s_ * 1000);
  report_timer_.start(kReportIntervalMs, [this] { log_.report_suppressed(); }, kReportIntervalMs);
}

EventLog::~EventLog() {
  if (subscription_) events_.unsubscribe(*subscription_);
}

void EventLog::set_level(config::LogLevel level) {
  const EventTypeMask types = logged_event_types(level);
  if (subscription_ && types == types_) return;  // a reload that kept the level
  if (subscription_) events_.unsubscribe(*subscription_);
  subscription_.reset();
  types_ = types;
  if (types != 0) subscription_ = events_.subscribe([this](const Event& e) { log_event(e); }, types);
}

void EventLog::stop() {
  flush_summary();
  log_.report_suppressed();
  summary_timer_.close();
  report_timer_.close();
}

void EventLog::log_event(const Event& e) {
  // The daemon writes network_changed's line itself, with the generation.
  if (e.type == EventType::kNetworkChanged) return;
  if (e.type == EventType::kGaveUp) return gave_up(e);
  if (summarized(e)) return;
  // A failure, or a link the peer or the network ended, is worth an
  // operator's eye; a disconnect that was asked for (or the shutdown) is not.
  const bool cancelled = e.type == EventType::kConnectFailed && e.reason && *e.reason == reason::kCancelled;
  const bool asked = e.reason && (*e.reason == reason::kRequested || *e.reason == reason::kShutdown);
  const bool bad = (e.type == EventType::kConnectFailed && !cancelled) ||
                   (e.type == EventType::kDisconnected && !asked);
  // A fleet's inventory changes by the thousand in a bulk load: one line
  // each at debug only (status.inventory and the metrics say where it is).
  const bool quiet = e.type == EventType::kConnecting || e.type == EventType::kRetryScheduled ||
                     e.type == EventType::kInventoryChanged || cancelled;
  const auto level = quiet ? config::LogLevel::kDebug
                     : bad ? config::LogLevel::kWarning
                           : config::LogLevel::kInfo;
  // Every link's every step passes here: build the fields only when kept.
  if (!log_.enabled(level)) return;
  Fields f{{"event", std::string(event_type_name(e.type))}, {"node", e.node_id}};
  if (e.endpoint_id) f.emplace_back("endpoint", std::to_string(*e.endpoint_id));
  if (e.protocol) f.emplace_back("protocol", *e.protocol);
  if (e.reason) f.emplace_back("reason", *e.reason);
  if (e.attempt) f.emplace_back("attempt", std::to_string(*e.attempt));
  if (e.delay_ms) f.emplace_back("delay_ms", std::to_string(*e.delay_ms));
  if (e.stream_id) add_stream_fields(e, f);
  log_.log(level, std::string(event_type_name(e.type)), f);
}

// Whether the event is a repeat of its node's series of failures: counted,
// no line (and no allocation but the first of a reason). A race's losers
// ("cancelled") are no failure: logged at debug, they end nothing.
bool EventLog::summarized(const Event& e) {
  switch (e.type) {
    case EventType::kConnectFailed:
      if (e.reason && *e.reason == reason::kCancelled) return false;
      return !failures_.on_failure(e.node_id, e.reason ? *e.reason : std::string_view("unknown"));
    case EventType::kConnected:
    case EventType::kDisconnected:
    case EventType::kNodeRemoved:
      failures_.end_series(e.node_id);
      return false;
    default:
      return false;
  }
}

// A connect whose attempts are spent (a supervised link never gives up): a
// state change, logged, and the end of the node's series.
void EventLog::gave_up(const Event& e) {
  failures_.end_series(e.node_id);
  Fields f{{"node", e.node_id}, {"attempts", std::to_string(e.attempt.value_or(0))}};
  if (e.reason) f.emplace_back("reason", *e.reason);
  log_.warning("gave up", f);
}

void EventLog::flush_summary() {
  const std::string period = std::to_string(period_s_);
  failures_.flush([&](const FailureSummary::Repeats& r) {
    log_.warning("dials failed", {{"node", r.node},
                                  {"count", std::to_string(r.count)},
                                  {"period_s", period},
                                  {"reasons", r.reasons}});
  });
}

// A stream's line: its id, the client's uid and pid, and at its end the
// bytes it carried.
void EventLog::add_stream_fields(const Event& e, Fields& f) {
  const uint64_t id = *e.stream_id;
  f.emplace_back("stream", std::to_string(id));
  std::optional<StreamClient> client;
  if (e.type == EventType::kStreamOpened) {
    for (const auto& s : manager_.list_streams())
      if (s.stream_id == id) client = s.client;
    if (client) stream_clients_[id] = *client;
  } else if (auto it = stream_clients_.find(id); it != stream_clients_.end()) {
    client = it->second;
    stream_clients_.erase(it);
  }
  if (client) {
    f.emplace_back("uid", std::to_string(client->uid));
    f.emplace_back("pid", std::to_string(client->pid));
  }
  if (e.bytes_in) f.emplace_back("bytes_in", std::to_string(*e.bytes_in));
  if (e.bytes_out) f.emplace_back("bytes_out", std::to_string(*e.bytes_out));
}

}  // namespace connmgr::daemon
