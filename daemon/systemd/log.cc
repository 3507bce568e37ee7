#include "systemd/log.h"

#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>

namespace connmgr::daemon {

namespace {

int priority(config::LogLevel l) {
  switch (l) {
    case config::LogLevel::kDebug: return LOG_DEBUG;
    case config::LogLevel::kInfo: return LOG_INFO;
    case config::LogLevel::kWarning: return LOG_WARNING;
    case config::LogLevel::kError: return LOG_ERR;
  }
  return LOG_INFO;
}

// JOURNAL_STREAM is "DEV:INODE" of the stream systemd connected to our
// stdout/stderr; it only counts if stderr is still that stream.
bool stderr_is_journal() {
  const char* js = getenv("JOURNAL_STREAM");
  if (!js) return false;
  unsigned long long dev = 0, ino = 0;
  if (sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st {};
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  return st.st_dev == dev && st.st_ino == ino;
}

std::string quote(const std::string& v) {
  bool plain = !v.empty();
  for (char c : v)
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20) plain = false;
  if (plain) return v;
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

std::string journal_field(const std::string& key) {
  std::string out;
  for (char c : key) out += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

Logger::Logger() : journal_(stderr_is_journal()) {}

void Logger::log(config::LogLevel level, const std::string& message, const Fields& fields) {
  if (level < level_) return;
  if (journal_) {
    std::vector<std::string> parts;
    parts.push_back("MESSAGE=" + message);
    parts.push_back("PRIORITY=" + std::to_string(priority(level)));
    parts.push_back("SYSLOG_IDENTIFIER=connmgrd");
    for (const auto& [k, v] : fields) parts.push_back(journal_field(k) + "=" + v);
    std::vector<iovec> iov;
    for (auto& p : parts) iov.push_back(iovec{p.data(), p.size()});
    sd_journal_sendv(iov.data(), static_cast<int>(iov.size()));
    return;
  }
  std::string line = "level=" + config::log_level_name(level) + " msg=" + quote(message);
  for (const auto& [k, v] : fields) line += " " + k + "=" + quote(v);
  line += "\n";
  // One write per line so that lines from a crash or a pipe never interleave.
  ssize_t rc = ::write(STDERR_FILENO, line.data(), line.size());
  (void)rc;
}

}  // namespace connmgr::daemon
