// DaemonConfig: connmgrd's settings (API.md §5), from built-in defaults, a
// `key = value` file and command-line flags, in that order of precedence.
//
// Every key is spelled once, in the table in config.cc, with its type,
// default, help and whether SIGHUP can change it live. Parsing is pure: the
// arguments, environment and uid are passed in, so tests need no process
// state. Errors name the key (and FILE:LINE when it came from the file).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "util/error.h"

namespace connmgr::config {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

struct DaemonConfig {
  std::string database;
  std::string socket;
  mode_t socket_mode = 0660;
  std::optional<std::string> socket_group;
  std::optional<std::string> admin_group;
  std::optional<std::string> node_id;
  std::chrono::milliseconds connection_timeout{10000};
  std::chrono::milliseconds base_retry_interval{1000};
  std::chrono::milliseconds max_retry_interval{60000};
  int max_retry_count = 5;
  double retry_jitter = 0.0;
  size_t max_clients = 1024;
  size_t max_request_bytes = 1048576;
  size_t max_output_bytes = 16 * 1024 * 1024;
  std::chrono::milliseconds partial_request_timeout{60000};
  std::chrono::milliseconds lock_timeout{5000};
  LogLevel log_level = LogLevel::kInfo;
  std::string quic_alpn = "connmgr";
  std::optional<std::string> quic_ca_file;
  std::chrono::milliseconds quic_idle_timeout{30000};
  std::chrono::milliseconds quic_keepalive{10000};
  std::chrono::milliseconds tcp_keepalive{30000};

  // key -> effective value as text, for `status` and reload comparisons.
  std::map<std::string, std::string> effective;
};

struct Environment {
  uid_t uid = 0;
  std::function<std::optional<std::string>(const std::string&)> getenv;
  // Reads a whole file; nullopt (with errno-style text in *why) when it cannot.
  std::function<std::optional<std::string>(const std::string& path, std::string* why)> read_file;
};

// The real process environment.
Environment process_environment();

struct Invocation {
  DaemonConfig config;
  std::optional<std::string> config_file;
  bool help = false;
  bool version = false;
};

// Parses argv (without argv[0]). Errors: ErrorCode::kInvalidParams with a
// message naming the key; the caller exits with status 2.
Result<Invocation> parse(const std::vector<std::string>& args, const Environment& env);

// `--help`: usage and every key with its default as it applies to this user.
std::string help_text(const Environment& env);

std::string log_level_name(LogLevel level);
nlohmann::json to_json(const DaemonConfig& config);

// Keys whose value differs between `before` and `after` and that cannot
// change while the daemon runs (database, socket, ...): SIGHUP reports them
// and keeps the old values.
std::vector<std::string> keys_needing_restart(const DaemonConfig& before, const DaemonConfig& after);

}  // namespace connmgr::config
