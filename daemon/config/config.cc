#include "config/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <variant>

namespace connmgr::config {

namespace {

using std::chrono::milliseconds;

// How a key's text is read. kDuration refuses 0; kDurationOrOff takes 0 as
// "off" (tcp_keepalive); kOptDuration is a duration or no value (empty).
// kSize is a byte count: plain bytes or with KiB, MiB, GiB (powers of 1024).
// kBool is true or false (yes/no, on/off, 1/0 are taken too).
enum class Kind {
  kPath, kText, kOptText, kDuration, kDurationOrOff, kOptDuration, kCount, kSize, kMode, kLevel, kFraction, kBool
};

// Where a key's value lands in DaemonConfig.
using Target = std::variant<std::string DaemonConfig::*, std::optional<std::string> DaemonConfig::*,
                            milliseconds DaemonConfig::*, int DaemonConfig::*, size_t DaemonConfig::*,
                            mode_t DaemonConfig::*, LogLevel DaemonConfig::*, double DaemonConfig::*,
                            std::optional<milliseconds> DaemonConfig::*, bool DaemonConfig::*>;

struct Key {
  const char* name;
  Kind kind;
  Target target;
  // Built-in default as text; "" for none. database and socket depend on
  // the user (default_for()).
  const char* fallback;
  bool live;  // SIGHUP may change it
  int64_t min;
  int64_t max;
  const char* help;
  const char* none_means = "";  // shown in help when there is no default value
};

constexpr int64_t kMiB = 1024 * 1024;

// Every configuration key (connmgrd.conf(5), docs/operations.md), spelled once.
const Key kKeys[] = {
    {"database", Kind::kPath, &DaemonConfig::database, "", false, 0, 0,
     "SQLite file; created with the schema when missing"},
    {"socket", Kind::kPath, &DaemonConfig::socket, "", false, 0, 0,
     "RPC socket path (unused under socket activation)"},
    {"socket_mode", Kind::kMode, &DaemonConfig::socket_mode, "0660", false, 0, 0,
     "permissions of the socket file, octal"},
    {"socket_group", Kind::kOptText, &DaemonConfig::socket_group, "", false, 0, 0,
     "group of the socket file, name or number", "the daemon's group"},
    {"admin_group", Kind::kOptText, &DaemonConfig::admin_group, "", true, 0, 0,
     "members may call the methods that change state", "none"},
    {"node_id", Kind::kOptText, &DaemonConfig::node_id, "", false, 0, 0, "this host's node identity",
     "generated once, kept in the database"},
    {"connection_timeout", Kind::kDuration, &DaemonConfig::connection_timeout, "10s", true, 0, 0,
     "timeout of one connect attempt unless the call gives timeout_ms"},
    {"base_retry_interval", Kind::kDuration, &DaemonConfig::base_retry_interval, "1s", true, 0, 0,
     "delay before the first retry (retry.initial_delay_ms)"},
    {"max_retry_interval", Kind::kDuration, &DaemonConfig::max_retry_interval, "60s", true, 0, 0,
     "longest delay between retries (retry.max_delay_ms)"},
    {"max_retry_count", Kind::kCount, &DaemonConfig::max_retry_count, "5", true, 0, 1000000,
     "retries after the first attempt (retry.max_attempts = this + 1)"},
    {"retry_jitter", Kind::kFraction, &DaemonConfig::retry_jitter, "0", true, 0, 0,
     "fraction of each retry delay drawn at random and taken off, 0 to 1"},
    {"max_concurrent_dials", Kind::kCount, &DaemonConfig::max_concurrent_dials, "32", true, 1, 100000,
     "dials under way at once; further connects wait for a free slot, in order"},
    {"max_clients", Kind::kCount, &DaemonConfig::max_clients, "1024", true, 1, 1000000,
     "RPC clients at once; the next is told so and closed"},
    {"max_request_bytes", Kind::kCount, &DaemonConfig::max_request_bytes, "1048576", true, 256, 1024 * kMiB,
     "longest request line"},
    {"max_output_bytes", Kind::kCount, &DaemonConfig::max_output_bytes, "16777216", true, 4096,
     16 * 1024 * kMiB, "answers queued for a client that does not read before it is cut off"},
    {"partial_request_timeout", Kind::kDuration, &DaemonConfig::partial_request_timeout, "60s", true, 0, 0,
     "a client that stops in the middle of a line is cut off after this"},
    {"stream_buffer", Kind::kSize, &DaemonConfig::stream_buffer, "256KiB", true, 4096, 1024 * kMiB,
     "bytes buffered each way per stream; applies to streams opened after a reload"},
    {"max_streams", Kind::kCount, &DaemonConfig::max_streams, "4096", true, 1, 1000000,
     "streams open at once over all links; streams.open beyond it is refused"},
    {"lock_timeout", Kind::kDuration, &DaemonConfig::lock_timeout, "5s", true, 0, 0,
     "how long a write waits for another process's database lock"},
    // The inventory's backend (docs/operations.md, "Running a fleet").
    {"inventory", Kind::kText, &DaemonConfig::inventory, "local", false, 0, 0,
     "where nodes and endpoints come from: local (the database) or postgres (a fleet's)"},
    {"inventory_dsn", Kind::kOptText, &DaemonConfig::inventory_dsn, "", false, 0, 0,
     "libpq connection string of the shared inventory, without a password (pgpass)",
     "none"},
    {"inventory_resync_interval", Kind::kDuration, &DaemonConfig::inventory_resync_interval, "30s", false, 0, 0,
     "the shared inventory's change log is read at least this often"},
    {"inventory_connect_timeout", Kind::kDuration, &DaemonConfig::inventory_connect_timeout, "5s", false, 0, 0,
     "a connection to the shared inventory's server must be up within this"},
    {"inventory_retry_max", Kind::kDuration, &DaemonConfig::inventory_retry_max, "30s", false, 0, 0,
     "longest delay between reconnections to the shared inventory's server"},
    {"race", Kind::kBool, &DaemonConfig::race, "true", true, 0, 0,
     "race a node's endpoints with staggered dials; false: one at a time"},
    {"race_delay", Kind::kOptDuration, &DaemonConfig::race_delay, "", true, 0, 0,
     "fixed delay before a race dials the next endpoint", "derived from the RTT"},
    {"race_delay_min", Kind::kDuration, &DaemonConfig::race_delay_min, "50ms", true, 0, 0,
     "shortest delay a race derives from an endpoint's RTT"},
    {"race_delay_max", Kind::kDuration, &DaemonConfig::race_delay_max, "2s", true, 0, 0,
     "longest delay a race derives from an endpoint's RTT"},
    {"stable_link", Kind::kDuration, &DaemonConfig::stable_link, "60s", true, 0, 0,
     "a supervised link up this long restarts its backoff when it drops"},
    {"log_level", Kind::kLevel, &DaemonConfig::log_level, "info", true, 0, 0, "debug, info, warning or error"},
    {"metrics_listen", Kind::kOptText, &DaemonConfig::metrics_listen, "", false, 0, 0,
     "serve GET /metrics over HTTP on this IP:port (e.g. 127.0.0.1:9469)", "off"},
    {"metrics_textfile", Kind::kOptText, &DaemonConfig::metrics_textfile, "", false, 0, 0,
     "write the metrics to this file every metrics_interval (node_exporter's textfile collector)",
     "off"},
    {"metrics_interval", Kind::kDuration, &DaemonConfig::metrics_interval, "15s", false, 0, 0,
     "how often metrics_textfile is rewritten"},
    {"quic_alpn", Kind::kText, &DaemonConfig::quic_alpn, "connmgr", false, 0, 0,
     "ALPN offered when an endpoint names none"},
    {"quic_ca_file", Kind::kOptText, &DaemonConfig::quic_ca_file, "", false, 0, 0,
     "PEM file of trusted CAs for QUIC peers", "the system trust store"},
    {"quic_idle_timeout", Kind::kDuration, &DaemonConfig::quic_idle_timeout, "30s", false, 0, 0,
     "a QUIC link silent this long is dropped"},
    {"quic_keepalive", Kind::kDuration, &DaemonConfig::quic_keepalive, "10s", false, 0, 0,
     "QUIC keepalive interval; shorter than quic_idle_timeout"},
    {"tcp_keepalive", Kind::kDurationOrOff, &DaemonConfig::tcp_keepalive, "30s", false, 0, 0,
     "TCP keepalive idle time; 0 turns keepalives off"},
};

const Key* find_key(const std::string& name) {
  for (const auto& k : kKeys)
    if (name == k.name) return &k;
  return nullptr;
}

std::string underscores(std::string name) {
  for (auto& c : name)
    if (c == '-') c = '_';
  return name;
}

Error config_error(const std::string& key, const std::string& what, const std::string& where) {
  std::string m = key.empty() ? what : key + ": " + what;
  if (!where.empty()) m += " (" + where + ")";
  return Error::invalid_params(m);
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return {};
  const auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

// "500ms", "2s", "1.5m", "1h"; a bare number is seconds. Up to a year:
// longer is a typo, and keeps every later multiplication in range.
std::optional<milliseconds> parse_duration(const std::string& text) {
  // Digits and one optional point, then the unit: strtod alone would also
  // take "1e3", "0x10", "inf" and leading blanks.
  const size_t number_end = text.find_first_not_of("0123456789.");
  const std::string number_text = text.substr(0, number_end);
  const std::string unit = number_end == std::string::npos ? "" : text.substr(number_end);
  if (number_text.empty() || number_text == "." || number_text.find('.') != number_text.rfind('.'))
    return std::nullopt;
  const double number = std::strtod(number_text.c_str(), nullptr);
  double ms;
  if (unit.empty() || unit == "s") ms = number * 1000;
  else if (unit == "ms") ms = number;
  else if (unit == "m") ms = number * 60000;
  else if (unit == "h") ms = number * 3600000;
  else return std::nullopt;
  if (!std::isfinite(ms) || ms > 365.0 * 24 * 3600000) return std::nullopt;
  return milliseconds(static_cast<int64_t>(std::llround(ms)));
}

// The shortest exact spelling: 90000 ms is "90s", 120000 is "2m".
std::string format_duration(milliseconds d) {
  const int64_t ms = d.count();
  if (ms != 0 && ms % 3600000 == 0) return std::to_string(ms / 3600000) + "h";
  if (ms != 0 && ms % 60000 == 0) return std::to_string(ms / 60000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::optional<int64_t> parse_count(const std::string& text) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos || text.size() > 18)
    return std::nullopt;
  return std::stoll(text);
}

// "262144", "256KiB", "1MiB", "1GiB": bytes, or a whole number of a binary unit.
std::optional<int64_t> parse_size(const std::string& text) {
  const size_t number_end = text.find_first_not_of("0123456789");
  const std::string unit = number_end == std::string::npos ? "" : text.substr(number_end);
  auto n = parse_count(text.substr(0, number_end));
  if (!n) return std::nullopt;
  int64_t scale = 1;
  if (unit == "KiB") scale = 1024;
  else if (unit == "MiB") scale = 1024 * 1024;
  else if (unit == "GiB") scale = 1024 * 1024 * 1024;
  else if (!unit.empty() && unit != "B") return std::nullopt;
  if (*n > INT64_MAX / scale) return std::nullopt;
  return *n * scale;
}

// The shortest exact spelling: 262144 is "256KiB", 1048576 is "1MiB".
std::string format_size(int64_t n) {
  if (n != 0 && n % (1024 * 1024 * 1024) == 0) return std::to_string(n / (1024 * 1024 * 1024)) + "GiB";
  if (n != 0 && n % (1024 * 1024) == 0) return std::to_string(n / (1024 * 1024)) + "MiB";
  if (n != 0 && n % 1024 == 0) return std::to_string(n / 1024) + "KiB";
  return std::to_string(n);
}

std::string format_fraction(double f) {
  char buf[32];
  snprintf(buf, sizeof buf, "%g", f);
  return buf;
}

struct Setting {
  std::string value;
  std::string where;  // "FILE:LINE", "--flag", or "" for a default
};
using Settings = std::map<std::string, Setting>;

std::string default_for(const Key& k, const Environment& env) {
  const std::string name = k.name;
  if (name != "database" && name != "socket") return k.fallback;
  auto get = [&](const char* n) -> std::string {
    auto v = env.getenv ? env.getenv(n) : std::nullopt;
    return v.value_or("");
  };
  // Under systemd, StateDirectory=/RuntimeDirectory= name the unit's own
  // directories (the first of a colon-separated list), whoever it runs as.
  auto systemd_dir = [&](const char* n) {
    std::string v = get(n);
    return v.substr(0, v.find(':'));
  };
  // A user who is not root cannot write /var/lib or /run: the embedded
  // default keeps a try-out run in the user's own directories (XDG base dirs).
  const bool root = env.uid == 0;
  const std::string fallback_dir = "/tmp/connmgr-" + std::to_string(env.uid);
  if (name == "database") {
    if (std::string d = systemd_dir("STATE_DIRECTORY"); !d.empty()) return d + "/connmgr.db";
    if (root) return "/var/lib/connmgr/connmgr.db";
    if (std::string x = get("XDG_STATE_HOME"); !x.empty()) return x + "/connmgr/connmgr.db";
    if (std::string h = get("HOME"); !h.empty()) return h + "/.local/state/connmgr/connmgr.db";
    return fallback_dir + "/connmgr.db";
  }
  if (std::string d = systemd_dir("RUNTIME_DIRECTORY"); !d.empty()) return d + "/connmgrd.sock";
  if (root) return "/run/connmgr/connmgrd.sock";
  if (std::string x = get("XDG_RUNTIME_DIR"); !x.empty()) return x + "/connmgr/connmgrd.sock";
  return fallback_dir + "/connmgrd.sock";
}

Settings default_settings(const Environment& env) {
  Settings s;
  for (const auto& k : kKeys) s[k.name] = Setting{default_for(k, env), ""};
  return s;
}

Status read_file_into(const std::string& path, const Environment& env, Settings& settings) {
  std::string why = "cannot be read";
  auto text = env.read_file ? env.read_file(path, &why) : std::nullopt;
  if (!text) return config_error("config", "cannot read configuration file " + path + ": " + why, "");
  std::istringstream in(*text);
  std::string raw;
  int line_no = 0;
  while (std::getline(in, raw)) {
    ++line_no;
    const std::string where = path + ":" + std::to_string(line_no);
    const std::string line = trim(raw);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[') {
      if (line.back() != ']') return config_error("", "malformed section header '" + line + "'", where);
      continue;  // sections only group keys for the reader
    }
    const auto eq = line.find('=');
    if (eq == std::string::npos) return config_error("", "expected 'key = value', got '" + line + "'", where);
    const std::string key = underscores(trim(line.substr(0, eq)));
    std::string value = trim(line.substr(eq + 1));
    if (!value.empty() && value.front() == '"') {
      const auto close = value.find('"', 1);
      if (close == std::string::npos) return config_error(key, "unterminated quote", where);
      const std::string rest = trim(value.substr(close + 1));
      if (!rest.empty() && rest[0] != '#')
        return config_error(key, "unexpected text after the closing quote", where);
      value = value.substr(1, close - 1);
    } else if (auto hash = value.find(" #"); hash != std::string::npos) {
      value = trim(value.substr(0, hash));
    } else if (auto tab = value.find("\t#"); tab != std::string::npos) {
      value = trim(value.substr(0, tab));
    }
    if (!find_key(key)) return config_error(key, "unknown key", where);
    settings[key] = Setting{value, where};
  }
  return ok_status();
}

// The readers of each Kind: each stores the text in its field of `c` and
// returns the value's canonical text, or an error naming the key (and
// FILE:LINE or the flag it came from).

Error refuse(const Key& k, const Setting& s, const std::string& what) { return config_error(k.name, what, s.where); }

Result<std::string> read_text(const Key& k, const Setting& s, DaemonConfig& c) {
  if (s.value.empty()) return refuse(k, s, "must not be empty");
  c.*std::get<std::string DaemonConfig::*>(k.target) = s.value;
  return s.value;
}

Result<std::string> read_opt_text(const Key& k, const Setting& s, DaemonConfig& c) {
  c.*std::get<std::optional<std::string> DaemonConfig::*>(k.target) =
      s.value.empty() ? std::nullopt : std::optional<std::string>(s.value);
  return s.value;
}

Result<std::string> read_duration(const Key& k, const Setting& s, DaemonConfig& c) {
  const std::string& v = s.value;
  auto d = parse_duration(v);
  if (!d)
    return refuse(k, s, "invalid duration '" + v + "', expected e.g. 500ms, 10s, 5m or 1h (a bare number is seconds)");
  if (k.kind == Kind::kDuration && d->count() == 0) return refuse(k, s, "must be longer than zero, got '" + v + "'");
  c.*std::get<milliseconds DaemonConfig::*>(k.target) = *d;
  return format_duration(*d);
}

// A duration, or no value at all (empty): "" is its canonical text then.
Result<std::string> read_opt_duration(const Key& k, const Setting& s, DaemonConfig& c) {
  auto& field = c.*std::get<std::optional<milliseconds> DaemonConfig::*>(k.target);
  if (s.value.empty()) {
    field.reset();
    return std::string();
  }
  auto d = parse_duration(s.value);
  if (!d)
    return refuse(k, s, "invalid duration '" + s.value +
                            "', expected e.g. 500ms, 10s, 5m or 1h (a bare number is seconds), or no value");
  if (d->count() == 0) return refuse(k, s, "must be longer than zero, got '" + s.value + "'");
  field = *d;
  return format_duration(*d);
}

Result<std::string> read_bool(const Key& k, const Setting& s, DaemonConfig& c) {
  bool value;
  if (s.value == "true" || s.value == "yes" || s.value == "on" || s.value == "1") value = true;
  else if (s.value == "false" || s.value == "no" || s.value == "off" || s.value == "0") value = false;
  else return refuse(k, s, "must be true or false, got '" + s.value + "'");
  c.*std::get<bool DaemonConfig::*>(k.target) = value;
  return std::string(value ? "true" : "false");
}

Result<std::string> read_count(const Key& k, const Setting& s, DaemonConfig& c) {
  auto n = parse_count(s.value);
  if (!n || *n < k.min || *n > k.max)
    return refuse(k, s, "must be a whole number from " + std::to_string(k.min) + " to " + std::to_string(k.max) +
                            ", got '" + s.value + "'");
  if (auto* p = std::get_if<int DaemonConfig::*>(&k.target)) c.*(*p) = static_cast<int>(*n);
  else c.*std::get<size_t DaemonConfig::*>(k.target) = static_cast<size_t>(*n);
  return std::to_string(*n);
}

Result<std::string> read_size(const Key& k, const Setting& s, DaemonConfig& c) {
  auto n = parse_size(s.value);
  if (!n || *n < k.min || *n > k.max)
    return refuse(k, s, "must be a size from " + format_size(k.min) + " to " + format_size(k.max) +
                            " (bytes, or with KiB, MiB, GiB), got '" + s.value + "'");
  c.*std::get<size_t DaemonConfig::*>(k.target) = static_cast<size_t>(*n);
  return format_size(*n);
}

Result<std::string> read_mode(const Key& k, const Setting& s, DaemonConfig& c) {
  const std::string& v = s.value;
  if (v.empty() || v.size() > 4 || v.find_first_not_of("01234567") != std::string::npos)
    return refuse(k, s, "must be an octal mode such as 0660, got '" + v + "'");
  const auto mode = static_cast<mode_t>(std::stoul(v, nullptr, 8));
  c.*std::get<mode_t DaemonConfig::*>(k.target) = mode;
  char buf[8];
  snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode));
  return std::string(buf);
}

Result<std::string> read_level(const Key& k, const Setting& s, DaemonConfig& c) {
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarning, LogLevel::kError}) {
    if (s.value == log_level_name(l)) {
      c.*std::get<LogLevel DaemonConfig::*>(k.target) = l;
      return s.value;
    }
  }
  return refuse(k, s, "must be debug, info, warning or error, got '" + s.value + "'");
}

Result<std::string> read_fraction(const Key& k, const Setting& s, DaemonConfig& c) {
  const std::string& v = s.value;
  char* end = nullptr;
  errno = 0;
  const double f = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || errno != 0 || !(f >= 0.0 && f <= 1.0))
    return refuse(k, s, "must be a number from 0 to 1, got '" + v + "'");
  c.*std::get<double DaemonConfig::*>(k.target) = f;
  return format_fraction(f);
}

Result<std::string> read_value(const Key& k, const Setting& s, DaemonConfig& c) {
  switch (k.kind) {
    case Kind::kPath:
    case Kind::kText: return read_text(k, s, c);
    case Kind::kOptText: return read_opt_text(k, s, c);
    case Kind::kDuration:
    case Kind::kDurationOrOff: return read_duration(k, s, c);
    case Kind::kOptDuration: return read_opt_duration(k, s, c);
    case Kind::kCount: return read_count(k, s, c);
    case Kind::kSize: return read_size(k, s, c);
    case Kind::kMode: return read_mode(k, s, c);
    case Kind::kLevel: return read_level(k, s, c);
    case Kind::kFraction: return read_fraction(k, s, c);
    case Kind::kBool: return read_bool(k, s, c);
  }
  return refuse(k, s, "has no reader");  // unreachable: every Kind is listed
}

// Reads one key's text into `c` and records its canonical text.
Status convert_key(const Key& k, const Setting& s, DaemonConfig& c) {
  auto canonical = read_value(k, s, c);
  if (!canonical) return canonical.error();
  c.effective[k.name] = std::move(canonical).value();
  return ok_status();
}

// "127.0.0.1:9469" or "[::1]:9469": an IP literal (no host name: the
// listener binds before anything could be resolved) and a port.
bool listen_address_ok(const std::string& text) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  std::string host = text.substr(0, colon);
  const auto port = parse_count(text.substr(colon + 1));
  if (!port || *port < 1 || *port > 65535) return false;
  unsigned char buf[sizeof(struct in6_addr)];
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return false;
    return inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), buf) == 1;
  }
  return inet_pton(AF_INET, host.c_str(), buf) == 1;
}

// The inventory keys together: a backend we know, and postgres's DSN.
// (A DSN holding a password is refused at start by the daemon, which can
// parse it with libpq; this parser stays free of it.)
Status check_inventory(const DaemonConfig& c, const Settings& settings) {
  if (c.inventory != "local" && c.inventory != "postgres")
    return config_error("inventory", "must be local or postgres, got '" + c.inventory + "'",
                        settings.at("inventory").where);
  if (c.inventory == "postgres" && !c.inventory_dsn)
    return config_error("inventory_dsn", "is required with inventory = postgres (a libpq connection string)",
                        settings.at("inventory_dsn").where);
  return ok_status();
}

Result<DaemonConfig> convert(const Settings& settings) {
  DaemonConfig c;
  for (const auto& k : kKeys)
    if (Status s = convert_key(k, settings.at(k.name), c); !s.ok()) return s;
  // Combinations that cannot work, named by the key that would have to change.
  if (c.base_retry_interval > c.max_retry_interval)
    return config_error("base_retry_interval",
                        "is longer than max_retry_interval (" + c.effective["base_retry_interval"] + " > " +
                            c.effective["max_retry_interval"] + ")",
                        settings.at("base_retry_interval").where);
  if (c.race_delay_min > c.race_delay_max) {
    // Named by the key the user set: the other may be its default.
    if (settings.at("race_delay_min").where.empty())
      return config_error("race_delay_max",
                          "is shorter than race_delay_min (" + c.effective["race_delay_max"] + " < " +
                              c.effective["race_delay_min"] + ")",
                          settings.at("race_delay_max").where);
    return config_error("race_delay_min",
                        "is longer than race_delay_max (" + c.effective["race_delay_min"] + " > " +
                            c.effective["race_delay_max"] + ")",
                        settings.at("race_delay_min").where);
  }
  if (c.quic_keepalive >= c.quic_idle_timeout)
    return config_error("quic_keepalive",
                        "must be shorter than quic_idle_timeout (" + c.effective["quic_keepalive"] +
                            " >= " + c.effective["quic_idle_timeout"] + ")",
                        settings.at("quic_keepalive").where);
  if (c.database == c.socket)
    return config_error("socket", "must differ from database", settings.at("socket").where);
  if (c.metrics_listen && !listen_address_ok(*c.metrics_listen))
    return config_error("metrics_listen",
                        "'" + *c.metrics_listen +
                            "' is not IP:port (an IPv4 address, or an IPv6 one in brackets, "
                            "and a port from 1 to 65535, e.g. 127.0.0.1:9469 or [::1]:9469)",
                        settings.at("metrics_listen").where);
  if (c.metrics_textfile && c.metrics_textfile->empty())
    return config_error("metrics_textfile", "must be a file path", settings.at("metrics_textfile").where);
  if (Status s = check_inventory(c, settings); !s.ok()) return s;
  return c;
}

}  // namespace

Environment process_environment() {
  Environment env;
  env.uid = geteuid();
  env.getenv = [](const std::string& n) -> std::optional<std::string> {
    const char* v = ::getenv(n.c_str());
    return v ? std::optional<std::string>(v) : std::nullopt;
  };
  env.read_file = [](const std::string& path, std::string* why) -> std::optional<std::string> {
    std::ifstream in(path);
    if (!in) {
      *why = strerror(errno);
      return std::nullopt;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    if (in.bad()) {
      *why = "read error";
      return std::nullopt;
    }
    return ss.str();
  };
  return env;
}

Result<Invocation> parse(const std::vector<std::string>& args, const Environment& env) {
  Invocation inv;
  // Flags go to their own map first: they win over the file, which is read
  // once the whole command line is known (--config may come last).
  Settings flags;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      inv.help = true;
      continue;
    }
    if (a == "--version") {
      inv.version = true;
      continue;
    }
    if (a.rfind("--", 0) != 0 || a.size() == 2)
      return config_error("", "unexpected argument '" + a + "' (see --help)", "");
    std::string name = a.substr(2);
    std::string value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    const std::string flag = "--" + name;
    name = underscores(name);
    if (name != "config" && !find_key(name)) return config_error(name, "unknown option " + flag, "");
    if (!has_value) {
      if (i + 1 >= args.size()) return config_error(name, "needs a value", flag);
      value = args[++i];
    }
    if (name == "config") inv.config_file = value;
    else flags[name] = Setting{value, flag};
  }
  Settings settings = default_settings(env);
  if (inv.config_file) {
    if (Status s = read_file_into(*inv.config_file, env, settings); !s.ok()) return s;
  }
  for (auto& [k, v] : flags) settings[k] = v;
  auto config = convert(settings);
  if (!config) return config.error();
  inv.config = std::move(config).value();
  return inv;
}

Result<DaemonConfig> parse_config(const std::vector<std::string>& args, const Environment& env) {
  auto inv = parse(args, env);
  if (!inv) return inv.error();
  return std::move(inv).value().config;
}

std::string help_text(const Environment& env) {
  std::string out =
      "Usage: connmgrd [--config FILE] [--KEY=VALUE | --KEY VALUE ...]\n"
      "Keeps links to the nodes of a network; answers JSON-RPC 2.0 on a Unix socket.\n"
      "\n"
      "Every key may be set in FILE as 'key = value' (# comments, [sections] ignored)\n"
      "or as a flag, with '-' for '_' (--connection-timeout=2s). Flags win over the\n"
      "file, the file over the defaults below. Durations take a unit: ms, s, m, h\n"
      "(a bare number is seconds); sizes are bytes or take KiB, MiB, GiB;\n"
      "booleans are true or false.\n"
      "SIGHUP re-reads FILE; keys marked * need a restart.\n"
      "\n"
      "Keys [default]:\n";
  auto column = [](std::string line) {
    // A name longer than the column (inventory_resync_interval) keeps one space.
    line.append(line.size() < 27 ? 27 - line.size() : 1, ' ');
    return line;
  };
  for (const auto& k : kKeys) {
    const std::string def = default_for(k, env);
    out += column("  " + std::string(k.name) + (k.live ? " " : "*")) + k.help + " [" +
           (def.empty() ? k.none_means : def) + "]\n";
  }
  out += "\n" + column("  --config FILE") + "read settings from FILE\n" + column("  --help") + "this text\n" +
         column("  --version") + "the version\n" +
         "\n"
         "Exit status: 0 after a clean stop, 1 when the daemon cannot start,\n"
         "2 for a bad command line or configuration.\n";
  return out;
}

std::string sample_file_text() {
  Environment root;  // uid 0, no environment: the system defaults
  std::string out =
      "# connmgrd configuration: `key = value`; flags (--key=value) win over this file.\n"
      "# Every key is listed with its built-in default, commented out.\n"
      "# Durations take a unit: ms, s, m, h (a bare number is seconds).\n"
      "# Sizes are bytes or take a unit: KiB, MiB, GiB. Booleans: true or false.\n"
      "# Keys marked (restart) keep their running value on `systemctl reload connmgrd`.\n";
  for (const auto& k : kKeys) {
    const std::string def = default_for(k, root);
    out += "\n# " + std::string(k.help) + (k.live ? "" : " (restart)");
    if (def.empty()) out += "; default: " + std::string(k.none_means);
    out += "\n#" + std::string(k.name) + (def.empty() ? " =" : " = " + def) + "\n";
  }
  return out;
}

std::string log_level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarning: return "warning";
    case LogLevel::kError: return "error";
  }
  return "info";
}

nlohmann::json config_to_json(const DaemonConfig& config) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& k : kKeys) {
    auto it = config.effective.find(k.name);
    const std::string v = it == config.effective.end() ? "" : it->second;
    j[k.name] = v.empty() ? nlohmann::json(nullptr) : nlohmann::json(v);
  }
  return j;
}

std::vector<std::string> reload_diff(const DaemonConfig& running, const DaemonConfig& next) {
  std::vector<std::string> out;
  for (const auto& k : kKeys) {
    if (k.live) continue;
    auto b = running.effective.find(k.name);
    auto a = next.effective.find(k.name);
    const bool same = b != running.effective.end() && a != next.effective.end() && b->second == a->second;
    if (!same) out.push_back(k.name);
  }
  return out;
}

DaemonConfig merge_reload(const DaemonConfig& running, const DaemonConfig& next) {
  // Rebuilt from canonical texts, so that every field follows the table.
  Settings settings;
  for (const auto& k : kKeys) {
    const auto& from = k.live ? next.effective : running.effective;
    auto it = from.find(k.name);
    settings[k.name] = Setting{it == from.end() ? std::string(k.fallback) : it->second, ""};
  }
  auto merged = convert(settings);
  // Both inputs passed convert(), and the combinations checked there pair
  // keys of the same liveness, so this cannot fail; keep `next` if it does.
  return merged ? std::move(merged).value() : next;
}

}  // namespace connmgr::config
