// Logger: one structured line per event. Under systemd (JOURNAL_STREAM names
// our stderr) entries go to the journal with fields (NODE_ID=, ENDPOINT_ID=,
// PROTOCOL=, REASON=, ...); otherwise each is one `key=value` line on stderr:
//   level=info msg="link up" node=n1 endpoint=3 protocol=tcp
// Never logs secrets (there are none in connmgr's data: pins are public keys).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "config/config.h"

namespace connmgr::daemon {

using Fields = std::vector<std::pair<std::string, std::string>>;

class Logger {
 public:
  Logger();
  void set_level(config::LogLevel level) { level_ = level; }
  bool to_journal() const { return journal_; }

  void log(config::LogLevel level, const std::string& message, const Fields& fields = {});
  void debug(const std::string& m, const Fields& f = {}) { log(config::LogLevel::kDebug, m, f); }
  void info(const std::string& m, const Fields& f = {}) { log(config::LogLevel::kInfo, m, f); }
  void warning(const std::string& m, const Fields& f = {}) { log(config::LogLevel::kWarning, m, f); }
  void error(const std::string& m, const Fields& f = {}) { log(config::LogLevel::kError, m, f); }

 private:
  config::LogLevel level_ = config::LogLevel::kInfo;
  bool journal_ = false;
};

}  // namespace connmgr::daemon
