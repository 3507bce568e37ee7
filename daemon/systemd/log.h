// Logger: one structured record per event, with the event's facts as fields.
//
// Under systemd (JOURNAL_STREAM names the stream our stderr is still
// connected to) a record goes to the journal with sd_journal_send fields:
// MESSAGE=, PRIORITY=, CODE_FILE/CODE_LINE/CODE_FUNC=, and one field per
// entry in Fields, the well-known ones under stable names (node -> NODE_ID=,
// endpoint -> ENDPOINT_ID=, protocol -> PROTOCOL=, reason -> REASON=),
// others upper-cased (attempt -> ATTEMPT=). So
//   journalctl -u connmgrd NODE_ID=n1
// selects one node's history. Otherwise, and when journald refuses a record
// (sd_journal_sendv fails), it is one logfmt line on stderr, written with a
// single write(2):
//   level=info msg="link up" node=n1 endpoint=3 protocol=tcp
//
// Records below the level set with set_level() are dropped. Every record
// kept passes a cap on records per second (kLogLinesPerSecond, burst
// kLogLinesBurst); those over it are counted, and one warning record
//   level=warning msg="log lines suppressed" count=N
// says how many, before the next record that passes, at most once a second
// (and from report_suppressed(), which the daemon's EventLog calls every
// second).
// Single-threaded (the loop's thread); no callbacks.
#pragma once

#include <source_location>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.h"
#include "systemd/log_throttle.h"

namespace connmgr::daemon {

using config::LogLevel;

// A record's fields, in order: key (lower case, as in the stderr line) and
// value.
using Fields = std::vector<std::pair<std::string, std::string>>;

// The field keys with a fixed journal name; use these for those facts.
namespace field {
inline constexpr const char kNode[] = "node";
inline constexpr const char kEndpoint[] = "endpoint";
inline constexpr const char kProtocol[] = "protocol";
inline constexpr const char kReason[] = "reason";
}  // namespace field

// The cap stays well under journald's default rate limit (10,000 records per
// 30 s per service, RateLimitBurst= and RateLimitIntervalSec=): at most
// 1,000 + 30 x 100 = 4,000 of ours in any 30 s, so journald never drops
// records silently, and we say how many we dropped. The burst lets the
// lines of a start or a reload with many links through; 100 a second is
// more than an operator reads, and a storm's repeats are summed up per node
// (FailureSummary) before they get here.
inline constexpr double kLogLinesPerSecond = 100;
inline constexpr double kLogLinesBurst = 1000;

class Logger {
 public:
  // Picks the destination from JOURNAL_STREAM and stderr, once.
  Logger();

  void set_level(LogLevel level) { level_ = level; }
  LogLevel level() const { return level_; }
  bool enabled(LogLevel level) const { return level >= level_; }
  bool to_journal() const { return journal_; }
  // Writes the "log lines suppressed" record if the cap dropped records and
  // none was written for a second.
  void report_suppressed();

  void log(LogLevel level, std::string_view message, const Fields& fields = {},
           std::source_location where = std::source_location::current());
  void debug(std::string_view m, const Fields& f = {}, std::source_location w = std::source_location::current()) {
    log(LogLevel::kDebug, m, f, w);
  }
  void info(std::string_view m, const Fields& f = {}, std::source_location w = std::source_location::current()) {
    log(LogLevel::kInfo, m, f, w);
  }
  void warning(std::string_view m, const Fields& f = {}, std::source_location w = std::source_location::current()) {
    log(LogLevel::kWarning, m, f, w);
  }
  void error(std::string_view m, const Fields& f = {}, std::source_location w = std::source_location::current()) {
    log(LogLevel::kError, m, f, w);
  }

 private:
  bool send_to_journal(LogLevel level, std::string_view message, const Fields& fields,
                       const std::source_location& where);
  void write_line(LogLevel level, std::string_view message, const Fields& fields);

  void emit(LogLevel level, std::string_view message, const Fields& fields,
            const std::source_location& where);

  LogLevel level_ = LogLevel::kInfo;
  bool journal_ = false;
  LineLimiter limiter_{kLogLinesPerSecond, kLogLinesBurst};
};

// The journal field name for a Fields key ("node" -> "NODE_ID").
std::string journal_field_name(std::string_view key);

}  // namespace connmgr::daemon
