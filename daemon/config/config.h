// DaemonConfig: connmgrd's settings (connmgrd.conf(5), docs/operations.md),
// from built-in defaults, a `key = value` file and command-line flags, in
// that order of precedence.
//
// Every key is spelled once, in the table in config.cc, with its type,
// default, help text and whether SIGHUP can change it live. Parsing is pure:
// the arguments, the environment and the uid are passed in (Environment), so
// tests need no process state. Errors name the key, and FILE:LINE when the
// value came from the file ("connection_timeout: invalid duration 'fast' ...
// (/etc/connmgr/connmgrd.conf:3)"); main exits with status 2 on them.
//
// The file: one `key = value` per line; blank lines, whole-line comments
// (`#` or `;` first) and trailing comments (` #` after a value) are ignored;
// `[section]` headers may group keys and are otherwise ignored; a value in
// double quotes is taken as is (it may then hold ` #`). Keys may use `-` for
// `_` in the file as on the command line.
//
// Plain values, no callbacks, no shared state.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
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
  size_t max_concurrent_dials = 32;
  size_t max_request_bytes = 1048576;
  size_t max_output_bytes = 16 * 1024 * 1024;
  std::chrono::milliseconds partial_request_timeout{60000};
  size_t stream_buffer = 256 * 1024;  // bytes each way per stream
  size_t max_streams = 4096;
  std::chrono::milliseconds lock_timeout{5000};
  // Where the nodes and endpoints come from (docs/operations.md, "Running a
  // fleet"): "local" (the database file) or "postgres" (a fleet's shared
  // inventory, mirrored in the database file). Restart-only, all of them.
  std::string inventory = "local";
  std::optional<std::string> inventory_dsn;  // required with postgres; never a password
  std::chrono::milliseconds inventory_resync_interval{30000};
  std::chrono::milliseconds inventory_connect_timeout{5000};
  std::chrono::milliseconds inventory_retry_max{30000};
  // Racing a node's endpoints (docs/guide.md) and flap damping.
  bool race = true;
  std::optional<std::chrono::milliseconds> race_delay;  // none: derived from the RTT
  std::chrono::milliseconds race_delay_min{50};
  std::chrono::milliseconds race_delay_max{2000};
  std::chrono::milliseconds stable_link{60000};
  LogLevel log_level = LogLevel::kInfo;
  // Metrics (docs/operations.md, "Metrics"): an HTTP listener, a textfile.
  std::optional<std::string> metrics_listen;    // "IP:port"; none: off
  std::optional<std::string> metrics_textfile;  // none: off
  std::chrono::milliseconds metrics_interval{15000};
  std::string quic_alpn = "connmgr";
  std::optional<std::string> quic_ca_file;
  std::chrono::milliseconds quic_idle_timeout{30000};
  std::chrono::milliseconds quic_keepalive{10000};
  std::chrono::milliseconds tcp_keepalive{30000};

  // key -> running value as canonical text ("10s", "0660", "" for none):
  // what `status` shows and what reloads compare.
  std::map<std::string, std::string> effective;
};

// What parsing may look at: injected so tests need no real process state.
struct Environment {
  uid_t uid = 0;
  std::function<std::optional<std::string>(const std::string& name)> getenv;
  // Reads a whole file; nullopt (with strerror-style text in *why) when it cannot.
  std::function<std::optional<std::string>(const std::string& path, std::string* why)> read_file;
};

// The real process: geteuid(), ::getenv, the file system.
Environment process_environment();

struct Invocation {
  DaemonConfig config;
  bool help = false;     // --help or -h: print help_text(), exit 0
  bool version = false;  // --version: print the version, exit 0
  std::optional<std::string> config_file;  // --config FILE, kept for reloads
};

// Parses argv without argv[0]: `--config FILE`, `--KEY=VALUE`, `--KEY VALUE`,
// `--help`/`-h`, `--version`. Errors: ErrorCode::kInvalidParams with a message
// naming the key; the caller prints it and exits with status 2.
Result<Invocation> parse(const std::vector<std::string>& args, const Environment& env);

// The same, for when only the settings matter (SIGHUP re-reads with the
// original argv; --help/--version are ignored there).
Result<DaemonConfig> parse_config(const std::vector<std::string>& args, const Environment& env);

// `--help`: usage and every key with its default as it applies to this user.
// database and socket: $STATE_DIRECTORY/connmgr.db and
// $RUNTIME_DIRECTORY/connmgrd.sock when systemd sets them (the unit's
// StateDirectory=/RuntimeDirectory=); else the system paths for root; else
// $XDG_STATE_HOME/connmgr/connmgr.db (~/.local/state/...) and
// $XDG_RUNTIME_DIR/connmgr/connmgrd.sock (/tmp/connmgr-UID/...).
std::string help_text(const Environment& env);

// A configuration file listing every key, commented out, with its built-in
// default for root and its help: the file installed as an example.
std::string sample_file_text();

std::string log_level_name(LogLevel level);

// `status`'s "config": every key with its running value as text, null for
// none (proto/: additionalProperties string|null).
nlohmann::json config_to_json(const DaemonConfig& config);

// Keys that differ between `running` and `next` but cannot change while the
// daemon runs (database, socket, socket_mode, socket_group, node_id, and the
// connectors' settings), in table order. SIGHUP reports them.
std::vector<std::string> reload_diff(const DaemonConfig& running, const DaemonConfig& next);

// `next` with the running values of every key that cannot change live: what
// SIGHUP applies.
DaemonConfig merge_reload(const DaemonConfig& running, const DaemonConfig& next);

// Old spellings, kept until daemon/daemon.cc uses the names above.
inline nlohmann::json to_json(const DaemonConfig& c) { return config_to_json(c); }
inline std::vector<std::string> keys_needing_restart(const DaemonConfig& a, const DaemonConfig& b) {
  return reload_diff(a, b);
}

}  // namespace connmgr::config
