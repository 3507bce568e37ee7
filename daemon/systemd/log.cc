#include "systemd/log.h"

#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
// Without this, sd-journal.h's macros add CODE_* of the call in this file,
// beside the caller's own that the Logger sends.
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace connmgr::daemon {

namespace {

int syslog_priority(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return LOG_DEBUG;
    case LogLevel::kInfo: return LOG_INFO;
    case LogLevel::kWarning: return LOG_WARNING;
    case LogLevel::kError: return LOG_ERR;
  }
  return LOG_INFO;
}

// JOURNAL_STREAM is "DEV:INODE" of the stream systemd connected to our
// stdout/stderr. It only counts while stderr is still that stream: a child
// whose stderr was redirected inherits the variable but not the stream.
bool stderr_is_journal() {
  const char* js = getenv("JOURNAL_STREAM");
  if (!js) return false;
  unsigned long long dev = 0, ino = 0;
  if (sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st {};
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  return static_cast<unsigned long long>(st.st_dev) == dev && static_cast<unsigned long long>(st.st_ino) == ino;
}

// logfmt quoting: bare when the value has no blank, quote, '=' or control
// character; otherwise in double quotes with \" \\ \n \t escaped.
void append_value(std::string& out, std::string_view v) {
  bool bare = !v.empty();
  for (char c : v)
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20) bare = false;
  if (bare) {
    out += v;
    return;
  }
  out += '"';
  for (char c : v) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(static_cast<unsigned char>(c)));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

struct WellKnown {
  const char* key;
  const char* journal;
};
const WellKnown kWellKnown[] = {
    {field::kNode, "NODE_ID"},
    {field::kEndpoint, "ENDPOINT_ID"},
    {field::kProtocol, "PROTOCOL"},
    {field::kReason, "REASON"},
};

}  // namespace

std::string journal_field_name(std::string_view key) {
  for (const auto& w : kWellKnown)
    if (key == w.key) return w.journal;
  // Journal field names are [A-Z0-9_], must not start with '_' (trusted
  // fields) or a digit.
  std::string out;
  for (char c : key) {
    if (c >= 'a' && c <= 'z') out += static_cast<char>(c - 'a' + 'A');
    else if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) out += c;
    else out += '_';
  }
  if (out.empty() || out[0] == '_' || (out[0] >= '0' && out[0] <= '9')) out = "F_" + out;
  return out;
}

Logger::Logger() : journal_(stderr_is_journal()) {}

namespace {

int64_t monotonic_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void Logger::log(LogLevel level, std::string_view message, const Fields& fields, std::source_location where) {
  if (!enabled(level)) return;
  const int64_t now = monotonic_ms();
  // A record over the cap costs a clock read and a count: no allocation.
  if (!limiter_.admit(now)) return;
  if (const uint64_t n = limiter_.take_report(now))
    emit(LogLevel::kWarning, "log lines suppressed", {{"count", std::to_string(n)}}, where);
  emit(level, message, fields, where);
}

void Logger::report_suppressed() {
  if (const uint64_t n = limiter_.take_report(monotonic_ms()))
    emit(LogLevel::kWarning, "log lines suppressed", {{"count", std::to_string(n)}},
         std::source_location::current());
}

void Logger::emit(LogLevel level, std::string_view message, const Fields& fields,
                  const std::source_location& where) {
  if (journal_ && send_to_journal(level, message, fields, where)) return;
  write_line(level, message, fields);
}

bool Logger::send_to_journal(LogLevel level, std::string_view message, const Fields& fields,
                             const std::source_location& where) {
  std::vector<std::string> parts;
  parts.reserve(fields.size() + 6);
  parts.push_back("MESSAGE=" + std::string(message));
  parts.push_back("PRIORITY=" + std::to_string(syslog_priority(level)));
  parts.push_back("SYSLOG_IDENTIFIER=connmgrd");
  parts.push_back(std::string("CODE_FILE=") + where.file_name());
  parts.push_back("CODE_LINE=" + std::to_string(where.line()));
  parts.push_back(std::string("CODE_FUNC=") + where.function_name());
  for (const auto& [k, v] : fields) parts.push_back(journal_field_name(k) + "=" + v);
  std::vector<iovec> iov;
  iov.reserve(parts.size());
  for (auto& p : parts) iov.push_back(iovec{p.data(), p.size()});
  // Fails when journald refuses the record (stopped, socket left behind);
  // the caller then writes the line to stderr. (With no socket at all,
  // libsystemd drops the record and reports success.)
  return sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) >= 0;
}

void Logger::write_line(LogLevel level, std::string_view message, const Fields& fields) {
  std::string line = "level=" + config::log_level_name(level) + " msg=";
  append_value(line, message);
  for (const auto& [k, v] : fields) {
    line += ' ';
    line += k;
    line += '=';
    append_value(line, v);
  }
  line += '\n';
  // One write per record, so that records never interleave in a pipe.
  // A full or closed stderr must not stop the daemon: the record is lost.
  ssize_t rc = ::write(STDERR_FILENO, line.data(), line.size());
  (void)rc;
}

}  // namespace connmgr::daemon
