#include "config/config.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

namespace connmgr::config {

namespace {

enum class Kind { kPath, kText, kOptText, kDuration, kDurationOrZero, kCount, kMode, kLevel, kFraction };

struct Key {
  const char* name;
  Kind kind;
  const char* fallback;  // default; nullptr: none / computed
  bool live;             // SIGHUP may change it
  int64_t min = 0;
  int64_t max = 0;
  const char* help = "";
};

// API.md §5's keys, and the project's own, spelled once.
const Key kKeys[] = {
    {"database", Kind::kPath, nullptr, false, 0, 0, "SQLite file; created with the schema when missing"},
    {"socket", Kind::kPath, nullptr, false, 0, 0, "RPC socket path (unused under socket activation)"},
    {"socket_mode", Kind::kMode, "0660", false, 0, 0, "permissions of the socket file (octal)"},
    {"socket_group", Kind::kOptText, nullptr, false, 0, 0, "group of the socket file [daemon's group]"},
    {"admin_group", Kind::kOptText, nullptr, true, 0, 0, "members may call the methods that change state [none]"},
    {"node_id", Kind::kOptText, nullptr, false, 0, 0, "this host's node identity [generated once, kept in the database]"},
    {"connection_timeout", Kind::kDuration, "10s", true, 0, 0, "default timeout of one connect attempt"},
    {"base_retry_interval", Kind::kDuration, "1s", true, 0, 0, "delay before the first retry"},
    {"max_retry_interval", Kind::kDuration, "60s", true, 0, 0, "longest delay between retries"},
    {"max_retry_count", Kind::kCount, "5", true, 0, 1000000, "retries after the first attempt (retry.max_attempts = this + 1)"},
    {"retry_jitter", Kind::kFraction, "0", true, 0, 0, "fraction of each retry delay drawn at random and taken off (0..1)"},
    {"max_clients", Kind::kCount, "1024", true, 1, 1000000, "RPC clients at once"},
    {"max_request_bytes", Kind::kCount, "1048576", true, 256, 1LL << 30, "longest request line"},
    {"max_output_bytes", Kind::kCount, "16777216", true, 4096, 1LL << 34, "answers queued for a client that does not read before it is cut off"},
    {"partial_request_timeout", Kind::kDuration, "60s", true, 0, 0, "a client that stalls mid-line is cut after this"},
    {"lock_timeout", Kind::kDuration, "5s", true, 0, 0, "how long a write waits for another process's database lock"},
    {"log_level", Kind::kLevel, "info", true, 0, 0, "debug, info, warning or error"},
    {"quic_alpn", Kind::kText, "connmgr", false, 0, 0, "ALPN offered when an endpoint names none"},
    {"quic_ca_file", Kind::kOptText, nullptr, false, 0, 0, "PEM file of trusted CAs for QUIC peers [system trust store]"},
    {"quic_idle_timeout", Kind::kDuration, "30s", false, 0, 0, "a QUIC link silent this long is dropped"},
    {"quic_keepalive", Kind::kDuration, "10s", false, 0, 0, "QUIC keepalive interval"},
    {"tcp_keepalive", Kind::kDurationOrZero, "30s", false, 0, 0, "TCP keepalive idle time; 0 turns it off"},
};

const Key* find_key(const std::string& name) {
  for (const auto& k : kKeys)
    if (name == k.name) return &k;
  return nullptr;
}

Error config_error(const std::string& key, const std::string& what, const std::string& where) {
  std::string m = key.empty() ? what : key + ": " + what;
  if (!where.empty()) m += " (" + where + ")";
  return Error(ErrorCode::kInvalidParams, m);
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return {};
  const auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

std::optional<std::chrono::milliseconds> parse_duration(const std::string& text) {
  if (text.empty()) return std::nullopt;
  size_t pos = 0;
  double number = 0;
  try {
    number = std::stod(text, &pos);
  } catch (...) {
    return std::nullopt;
  }
  if (!std::isfinite(number) || number < 0 || text[0] == '-' || text[0] == '+') return std::nullopt;
  const std::string unit = text.substr(pos);
  double ms;
  if (unit.empty() || unit == "s") ms = number * 1000;
  else if (unit == "ms") ms = number;
  else if (unit == "m") ms = number * 60000;
  else if (unit == "h") ms = number * 3600000;
  else return std::nullopt;
  if (ms > 365.0 * 24 * 3600000) return std::nullopt;
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(ms)));
}

std::optional<int64_t> parse_count(const std::string& text) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos || text.size() > 18)
    return std::nullopt;
  return std::stoll(text);
}

struct Setting {
  std::string value;
  std::string where;  // "FILE:LINE", "--flag" or "" for defaults
};

std::string default_for(const Key& k, const Environment& env) {
  const bool root = env.uid == 0;
  auto get = [&](const char* n) { return env.getenv ? env.getenv(n) : std::nullopt; };
  if (std::string(k.name) == "database") {
    if (root) return "/var/lib/connmgr/connmgr.db";
    if (auto x = get("XDG_STATE_HOME"); x && !x->empty()) return *x + "/connmgr/connmgr.db";
    if (auto h = get("HOME"); h && !h->empty()) return *h + "/.local/state/connmgr/connmgr.db";
    return "/tmp/connmgr-" + std::to_string(env.uid) + "/connmgr.db";
  }
  if (std::string(k.name) == "socket") {
    if (root) return "/run/connmgr/connmgrd.sock";
    if (auto x = get("XDG_RUNTIME_DIR"); x && !x->empty()) return *x + "/connmgr/connmgrd.sock";
    return "/tmp/connmgr-" + std::to_string(env.uid) + "/connmgrd.sock";
  }
  return k.fallback ? k.fallback : "";
}

Status read_file_into(const std::string& path, const Environment& env,
                      std::map<std::string, Setting>& settings) {
  std::string why;
  auto text = env.read_file ? env.read_file(path, &why) : std::nullopt;
  if (!text) return config_error("", "cannot read configuration file " + path + ": " + why, "");
  std::istringstream in(*text);
  std::string raw;
  int line_no = 0;
  while (std::getline(in, raw)) {
    ++line_no;
    const std::string where = path + ":" + std::to_string(line_no);
    std::string line = trim(raw);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[') {
      if (line.back() != ']') return config_error("", "malformed section header '" + line + "'", where);
      continue;  // sections only group keys
    }
    const auto eq = line.find('=');
    if (eq == std::string::npos)
      return config_error("", "expected 'key = value', got '" + line + "'", where);
    std::string key = trim(line.substr(0, eq));
    std::string value = trim(line.substr(eq + 1));
    // " #" starts a trailing comment, unless the value is quoted.
    if (!value.empty() && value.front() == '"') {
      const auto close = value.find('"', 1);
      if (close == std::string::npos) return config_error(key, "unterminated quote", where);
      value = value.substr(1, close - 1);
    } else if (auto hash = value.find(" #"); hash != std::string::npos) {
      value = trim(value.substr(0, hash));
    }
    for (auto& c : key)
      if (c == '-') c = '_';
    if (!find_key(key)) return config_error(key, "unknown key", where);
    settings[key] = Setting{value, where};
  }
  return ok_status();
}

Status convert(const std::map<std::string, Setting>& settings, DaemonConfig& c) {
  for (const auto& k : kKeys) {
    const Setting& s = settings.at(k.name);
    const std::string& v = s.value;
    auto bad = [&](const std::string& what) { return config_error(k.name, what, s.where); };
    const std::string name = k.name;
    switch (k.kind) {
      case Kind::kPath:
        if (v.empty()) return bad("must not be empty");
        if (name == "database") c.database = v;
        else c.socket = v;
        break;
      case Kind::kText:
        if (v.empty()) return bad("must not be empty");
        c.quic_alpn = v;
        break;
      case Kind::kOptText: {
        std::optional<std::string> o = v.empty() ? std::nullopt : std::optional<std::string>(v);
        if (name == "socket_group") c.socket_group = o;
        else if (name == "admin_group") c.admin_group = o;
        else if (name == "node_id") c.node_id = o;
        else if (name == "quic_ca_file") c.quic_ca_file = o;
        break;
      }
      case Kind::kDuration:
      case Kind::kDurationOrZero: {
        auto d = parse_duration(v);
        if (!d) return bad("invalid duration '" + v + "' (use e.g. 500ms, 10s, 5m, 1h; a bare number is seconds)");
        if (k.kind == Kind::kDuration && d->count() == 0) return bad("must be more than zero");
        if (name == "connection_timeout") c.connection_timeout = *d;
        else if (name == "base_retry_interval") c.base_retry_interval = *d;
        else if (name == "max_retry_interval") c.max_retry_interval = *d;
        else if (name == "partial_request_timeout") c.partial_request_timeout = *d;
        else if (name == "lock_timeout") c.lock_timeout = *d;
        else if (name == "quic_idle_timeout") c.quic_idle_timeout = *d;
        else if (name == "quic_keepalive") c.quic_keepalive = *d;
        else if (name == "tcp_keepalive") c.tcp_keepalive = *d;
        break;
      }
      case Kind::kCount: {
        auto n = parse_count(v);
        if (!n || *n < k.min || *n > k.max)
          return bad("must be a whole number from " + std::to_string(k.min) + " to " + std::to_string(k.max) +
                     ", got '" + v + "'");
        if (name == "max_retry_count") c.max_retry_count = static_cast<int>(*n);
        else if (name == "max_clients") c.max_clients = static_cast<size_t>(*n);
        else if (name == "max_request_bytes") c.max_request_bytes = static_cast<size_t>(*n);
        else if (name == "max_output_bytes") c.max_output_bytes = static_cast<size_t>(*n);
        break;
      }
      case Kind::kMode: {
        if (v.empty() || v.size() > 4 || v.find_first_not_of("01234567") != std::string::npos)
          return bad("must be an octal mode such as 0660, got '" + v + "'");
        c.socket_mode = static_cast<mode_t>(std::stoul(v, nullptr, 8));
        break;
      }
      case Kind::kLevel:
        if (v == "debug") c.log_level = LogLevel::kDebug;
        else if (v == "info") c.log_level = LogLevel::kInfo;
        else if (v == "warning") c.log_level = LogLevel::kWarning;
        else if (v == "error") c.log_level = LogLevel::kError;
        else return bad("must be debug, info, warning or error, got '" + v + "'");
        break;
      case Kind::kFraction: {
        char* end = nullptr;
        errno = 0;
        const double f = std::strtod(v.c_str(), &end);
        if (v.empty() || *end != '\0' || errno != 0 || !(f >= 0.0 && f <= 1.0))
          return bad("must be a number from 0 to 1, got '" + v + "'");
        c.retry_jitter = f;
        break;
      }
    }
    c.effective[k.name] = v;
  }
  // Combinations that cannot work.
  if (c.base_retry_interval > c.max_retry_interval)
    return config_error("base_retry_interval", "is longer than max_retry_interval (" +
                                                   c.effective["max_retry_interval"] + ")",
                        settings.at("base_retry_interval").where);
  if (c.quic_keepalive >= c.quic_idle_timeout)
    return config_error("quic_keepalive", "must be shorter than quic_idle_timeout (" +
                                              c.effective["quic_idle_timeout"] + ")",
                        settings.at("quic_keepalive").where);
  if (c.database == c.socket) return config_error("socket", "must differ from database", "");
  return ok_status();
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
    return ss.str();
  };
  return env;
}

Result<Invocation> parse(const std::vector<std::string>& args, const Environment& env) {
  Invocation inv;
  std::map<std::string, Setting> settings;
  for (const auto& k : kKeys) settings[k.name] = Setting{default_for(k, env), ""};

  // Flags first into their own map: they win over the file, which is read
  // once the whole command line is known.
  std::map<std::string, Setting> flags;
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
    if (a.rfind("--", 0) != 0) return config_error("", "unexpected argument '" + a + "' (see --help)", "");
    std::string name = a.substr(2);
    std::string value;
    const std::string flag = "--" + name.substr(0, name.find('='));
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    for (auto& c : name)
      if (c == '-') c = '_';
    if (name != "config" && !find_key(name)) return config_error(name, "unknown option " + flag, "");
    if (!has_value) {
      if (i + 1 >= args.size()) return config_error(name, "needs a value", flag);
      value = args[++i];
    }
    if (name == "config") inv.config_file = value;
    else flags[name] = Setting{value, flag};
  }
  if (inv.config_file) {
    if (Status s = read_file_into(*inv.config_file, env, settings); !s.ok()) return s;
  }
  for (auto& [k, v] : flags) settings[k] = v;
  if (Status s = convert(settings, inv.config); !s.ok()) return s;
  return inv;
}

std::string help_text(const Environment& env) {
  std::string out =
      "Usage: connmgrd [--config FILE] [--KEY=VALUE ...]\n"
      "Keeps links to the nodes of a network; answers JSON-RPC 2.0 on a Unix socket.\n\n"
      "Every key may be set in FILE as 'key = value' or as a flag --key=value / --key value\n"
      "('-' may stand for '_'). Flags win over the file, the file over these defaults.\n"
      "Durations take a unit: ms, s, m, h (a bare number is seconds).\n\nKeys [default]:\n";
  for (const auto& k : kKeys) {
    std::string def = default_for(k, env);
    std::string line = "  " + std::string(k.name);
    if (line.size() < 27) line.append(27 - line.size(), ' ');
    line += k.help;
    if (!def.empty()) line += " [" + def + "]";
    out += line + "\n";
  }
  out += "\n  --config FILE              read settings from FILE\n"
         "  --help, --version\n";
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

nlohmann::json to_json(const DaemonConfig& config) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : config.effective) j[k] = v.empty() ? nlohmann::json(nullptr) : nlohmann::json(v);
  return j;
}

std::vector<std::string> keys_needing_restart(const DaemonConfig& before, const DaemonConfig& after) {
  std::vector<std::string> out;
  for (const auto& k : kKeys) {
    if (k.live) continue;
    auto b = before.effective.find(k.name);
    auto a = after.effective.find(k.name);
    if (b == before.effective.end() || a == after.effective.end() || b->second != a->second)
      out.push_back(k.name);
  }
  return out;
}

}  // namespace connmgr::config
