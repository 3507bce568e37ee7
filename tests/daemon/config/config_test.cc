// Configuration parsing (connmgrd.conf(5)): precedence, flag forms, durations,
// errors that name their key, the file's syntax, XDG defaults, help, status
// JSON and reload rules. Parsing is pure: the environment is a fake here.
#include "config/config.h"

#include <catch2/catch.hpp>
#include <map>
#include <sstream>

using namespace connmgr::config;
using std::chrono::milliseconds;

namespace {

struct FakeEnv {
  std::map<std::string, std::string> vars;
  std::map<std::string, std::string> files;
  uid_t uid = 1000;

  Environment env() const {
    Environment e;
    e.uid = uid;
    e.getenv = [this](const std::string& n) -> std::optional<std::string> {
      auto it = vars.find(n);
      return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
    };
    e.read_file = [this](const std::string& p, std::string* why) -> std::optional<std::string> {
      auto it = files.find(p);
      if (it == files.end()) {
        *why = "No such file or directory";
        return std::nullopt;
      }
      return it->second;
    };
    return e;
  }
};

connmgr::Result<DaemonConfig> parse_args(const FakeEnv& f, std::vector<std::string> args) {
  return parse_config(args, f.env());
}

// The error message of a parse that must fail.
std::string error_of(const FakeEnv& f, std::vector<std::string> args) {
  auto r = parse(args, f.env());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == connmgr::ErrorCode::kInvalidParams);
  return r.error().message();
}

const char* const kApiKeys[] = {
    "database",           "socket",          "socket_mode",         "socket_group",       "admin_group",
    "node_id",            "connection_timeout", "base_retry_interval", "max_retry_interval", "max_retry_count",
    "max_clients",        "max_request_bytes", "log_level",          "quic_alpn",          "quic_ca_file",
    "quic_idle_timeout",  "quic_keepalive",  "tcp_keepalive",       "max_output_bytes",   "partial_request_timeout",
    "retry_jitter",       "max_concurrent_dials", "stream_buffer", "max_streams",
    "race",               "race_delay",      "race_delay_min",      "race_delay_max",     "stable_link",
    "metrics_listen",     "metrics_textfile", "metrics_interval"};

}  // namespace

TEST_CASE("root with no configuration gets the built-in defaults connmgrd.conf(5) lists") {
  FakeEnv f;
  f.uid = 0;
  f.vars = {{"XDG_RUNTIME_DIR", "/run/user/0"}, {"HOME", "/root"}};
  auto r = parse_args(f, {});
  REQUIRE(r.ok());
  const auto& c = *r;
  CHECK(c.database == "/var/lib/connmgr/connmgr.db");
  CHECK(c.socket == "/run/connmgr/connmgrd.sock");
  CHECK(c.socket_mode == 0660);
  CHECK_FALSE(c.socket_group);
  CHECK_FALSE(c.admin_group);
  CHECK_FALSE(c.node_id);
  CHECK(c.connection_timeout == std::chrono::seconds(10));
  CHECK(c.base_retry_interval == std::chrono::seconds(1));
  CHECK(c.max_retry_interval == std::chrono::seconds(60));
  CHECK(c.max_retry_count == 5);
  CHECK(c.max_clients == 1024);
  CHECK(c.max_request_bytes == 1048576);
  CHECK(c.max_output_bytes == 16u * 1024 * 1024);
  CHECK(c.partial_request_timeout == std::chrono::seconds(60));
  CHECK(c.retry_jitter == 0.0);
  CHECK(c.log_level == LogLevel::kInfo);
  CHECK(c.quic_alpn == "connmgr");
  CHECK_FALSE(c.quic_ca_file);
  CHECK(c.quic_idle_timeout == std::chrono::seconds(30));
  CHECK(c.quic_keepalive == std::chrono::seconds(10));
  CHECK(c.tcp_keepalive == std::chrono::seconds(30));
}

TEST_CASE("a user who is not root gets paths under XDG_STATE_HOME and XDG_RUNTIME_DIR") {
  FakeEnv f;
  f.vars = {{"XDG_RUNTIME_DIR", "/run/user/1000"}, {"XDG_STATE_HOME", "/home/u/.state"}, {"HOME", "/home/u"}};
  auto r = parse_args(f, {});
  REQUIRE(r.ok());
  CHECK(r->database == "/home/u/.state/connmgr/connmgr.db");
  CHECK(r->socket == "/run/user/1000/connmgr/connmgrd.sock");
}

TEST_CASE("without XDG variables a user falls back to ~/.local/state and /tmp/connmgr-UID") {
  FakeEnv f;
  f.uid = 1234;
  f.vars = {{"HOME", "/home/u"}, {"XDG_STATE_HOME", ""}};
  auto r = parse_args(f, {});
  REQUIRE(r.ok());
  CHECK(r->database == "/home/u/.local/state/connmgr/connmgr.db");
  CHECK(r->socket == "/tmp/connmgr-1234/connmgrd.sock");
  f.vars.clear();
  auto bare = parse_args(f, {});
  REQUIRE(bare.ok());
  CHECK(bare->database == "/tmp/connmgr-1234/connmgr.db");
}

TEST_CASE("under systemd the unit's StateDirectory and RuntimeDirectory hold database and socket") {
  FakeEnv f;
  f.uid = 999;  // User=connmgr
  f.vars = {{"STATE_DIRECTORY", "/var/lib/connmgr"}, {"RUNTIME_DIRECTORY", "/run/connmgr:/run/other"},
            {"HOME", "/var/lib/connmgr"}};
  auto r = parse_args(f, {});
  REQUIRE(r.ok());
  CHECK(r->database == "/var/lib/connmgr/connmgr.db");
  CHECK(r->socket == "/run/connmgr/connmgrd.sock");
  CHECK(help_text(f.env()).find("[/var/lib/connmgr/connmgr.db]") != std::string::npos);
  f.files["/c"] = "database = /srv/connmgr.db\n";
  auto from_file = parse_args(f, {"--config=/c"});
  REQUIRE(from_file.ok());
  CHECK(from_file->database == "/srv/connmgr.db");  // the file still wins
}

TEST_CASE("flags win over the file, which wins over the defaults") {
  FakeEnv f;
  f.files["/c"] = "connection_timeout = 3s\nmax_retry_count = 7\n";
  auto r = parse_args(f, {"--config", "/c", "--max-retry-count=9"});
  REQUIRE(r.ok());
  CHECK(r->connection_timeout == std::chrono::seconds(3));  // file over default
  CHECK(r->max_retry_count == 9);                             // flag over file
  CHECK(r->max_clients == 1024);                              // default
  CHECK(r->effective.at("max_retry_count") == "9");
}

TEST_CASE("a flag before --config still wins over the file") {
  FakeEnv f;
  f.files["/c"] = "log_level = error\n";
  auto r = parse_args(f, {"--log-level=debug", "--config=/c"});
  REQUIRE(r.ok());
  CHECK(r->log_level == LogLevel::kDebug);
}

TEST_CASE("both flag forms and both spellings of a key are accepted") {
  FakeEnv f;
  auto r = parse_args(f, {"--connection-timeout", "2s", "--max_retry_count=3", "--log-level=debug",
                          "--quic_alpn", "x"});
  REQUIRE(r.ok());
  CHECK(r->connection_timeout == std::chrono::seconds(2));
  CHECK(r->max_retry_count == 3);
  CHECK(r->log_level == LogLevel::kDebug);
  CHECK(r->quic_alpn == "x");
}

TEST_CASE("durations take ms, s, m, h and a bare number is seconds") {
  FakeEnv f;
  auto d = [&](const std::string& v) -> int64_t {
    auto r = parse_args(f, {"--connection-timeout=" + v});
    return r.ok() ? r->connection_timeout.count() : -1;
  };
  CHECK(d("500ms") == 500);
  CHECK(d("2s") == 2000);
  CHECK(d("1m") == 60000);
  CHECK(d("1h") == 3600000);
  CHECK(d("3") == 3000);
  CHECK(d("1.5s") == 1500);
  CHECK(d("0.25") == 250);
}

TEST_CASE("malformed durations are refused") {
  FakeEnv f;
  for (const char* bad : {"fast", "5 s", " 5s", "-1s", "+1s", "1e3", "0x10", "inf", "1.2.3s", ".", "10d", "",
                          "0", "0ms", "9000h"}) {
    INFO(bad);
    auto r = parse_args(f, {std::string("--connection-timeout=") + bad});
    CHECK_FALSE(r.ok());
  }
}

TEST_CASE("sizes are bytes or take KiB, MiB, GiB; stream_buffer and max_streams reload") {
  FakeEnv f;
  auto b = [&](const std::string& v) -> int64_t {
    auto r = parse_args(f, {"--stream-buffer=" + v});
    return r.ok() ? static_cast<int64_t>(r->stream_buffer) : -1;
  };
  CHECK(b("262144") == 262144);
  CHECK(b("256KiB") == 262144);
  CHECK(b("1MiB") == 1048576);
  CHECK(b("1GiB") == 1073741824);
  CHECK(b("4096B") == 4096);
  for (const char* bad : {"", "1 MiB", "1mb", "1KB", "-1", "1.5MiB", "0", "4095", "2GiB", "0x1000", "MiB",
                          "99999999999999999999"}) {
    INFO(bad);
    CHECK(b(bad) == -1);
  }
  auto def = parse_args(f, {});
  REQUIRE(def.ok());
  CHECK(def->stream_buffer == 256u * 1024);
  CHECK(def->max_streams == 4096u);
  CHECK(def->effective.at("stream_buffer") == "256KiB");
  auto r = parse_args(f, {"--stream-buffer=1048576", "--max-streams=10"});
  REQUIRE(r.ok());
  CHECK(r->effective.at("stream_buffer") == "1MiB");
  CHECK(r->max_streams == 10u);
  CHECK(error_of(f, {"--max-streams=0"}).rfind("max_streams: ", 0) == 0);
  CHECK(error_of(f, {"--stream-buffer=lots"}).rfind("stream_buffer: must be a size", 0) == 0);
  // Both change on reload (for streams opened afterwards).
  CHECK(reload_diff(*def, *r).empty());
}

TEST_CASE("racing keys: race is a boolean, race_delay a duration or none, min <= max; all reload") {
  FakeEnv f;
  auto def = parse_args(f, {});
  REQUIRE(def.ok());
  CHECK(def->race);
  CHECK_FALSE(def->race_delay);
  CHECK(def->race_delay_min == milliseconds(50));
  CHECK(def->race_delay_max == milliseconds(2000));
  CHECK(def->stable_link == milliseconds(60000));
  CHECK(def->effective.at("race") == "true");
  CHECK(def->effective.at("race_delay").empty());
  CHECK(config_to_json(*def)["race_delay"].is_null());
  CHECK(config_to_json(*def)["race_delay_min"] == "50ms");
  CHECK(config_to_json(*def)["stable_link"] == "1m");
  for (const char* off : {"false", "no", "off", "0"}) {
    INFO(off);
    auto r = parse_args(f, {std::string("--race=") + off});
    REQUIRE(r.ok());
    CHECK_FALSE(r->race);
    CHECK(r->effective.at("race") == "false");
  }
  for (const char* on : {"true", "yes", "on", "1"}) {
    auto r = parse_args(f, {std::string("--race=") + on});
    REQUIRE(r.ok());
    CHECK(r->race);
  }
  CHECK(error_of(f, {"--race=maybe"}).rfind("race: must be true or false, got 'maybe'", 0) == 0);
  CHECK(error_of(f, {"--race="}).rfind("race: must be true or false", 0) == 0);
  auto r = parse_args(f, {"--race-delay=300ms", "--race-delay-min=10ms", "--race-delay-max=1.5s",
                          "--stable-link=5m", "--race=false"});
  REQUIRE(r.ok());
  CHECK(r->race_delay == milliseconds(300));
  CHECK(r->race_delay_min == milliseconds(10));
  CHECK(r->race_delay_max == milliseconds(1500));
  CHECK(r->stable_link == milliseconds(300000));
  CHECK(config_to_json(*r)["race_delay"] == "300ms");
  CHECK(error_of(f, {"--race-delay=soon"}).rfind("race_delay: invalid duration 'soon'", 0) == 0);
  CHECK(error_of(f, {"--race-delay=0"}).rfind("race_delay: must be longer than zero", 0) == 0);
  CHECK(error_of(f, {"--stable-link=0"}).rfind("stable_link: must be longer than zero", 0) == 0);
  CHECK(error_of(f, {"--race-delay-min=0"}).rfind("race_delay_min: must be longer than zero", 0) == 0);
  // min > max is refused, named by the key that was set.
  CHECK(error_of(f, {"--race-delay-min=3s"}) == "race_delay_min: is longer than race_delay_max (3s > 2s) (--race-delay-min)");
  CHECK(error_of(f, {"--race-delay-max=10ms"}) ==
        "race_delay_max: is shorter than race_delay_min (10ms < 50ms) (--race-delay-max)");
  CHECK(error_of(f, {"--race-delay-min=1s", "--race-delay-max=500ms"}).rfind("race_delay_min: is longer", 0) == 0);
  CHECK(parse_args(f, {"--race-delay-min=1s", "--race-delay-max=1s"}).ok());  // equal: a fixed clamp
  f.files["/c"] = "race_delay_min = 5s\n";
  CHECK(error_of(f, {"--config=/c"}) == "race_delay_min: is longer than race_delay_max (5s > 2s) (/c:1)");
  // In a file, an empty race_delay is its default (none).
  f.files["/e"] = "race_delay =\nrace = off\n";
  auto e = parse_args(f, {"--config=/e"});
  REQUIRE(e.ok());
  CHECK_FALSE(e->race_delay);
  CHECK_FALSE(e->race);
  // All change on reload, and a reload can unset race_delay.
  CHECK(reload_diff(*def, *r).empty());
  const DaemonConfig m = merge_reload(*def, *r);
  CHECK(m.race_delay == milliseconds(300));
  CHECK_FALSE(m.race);
  CHECK(m.stable_link == milliseconds(300000));
  const DaemonConfig back = merge_reload(m, *def);
  CHECK_FALSE(back.race_delay);
  CHECK(back.race);
}

TEST_CASE("metrics keys: the listener takes IP:port only; both are off by default and restart-only") {
  FakeEnv f;
  auto def = parse_args(f, {});
  REQUIRE(def.ok());
  CHECK_FALSE(def->metrics_listen);
  CHECK_FALSE(def->metrics_textfile);
  CHECK(def->metrics_interval == std::chrono::seconds(15));
  auto r = parse_args(f, {"--metrics-listen=127.0.0.1:9469", "--metrics-textfile=/var/lib/m/connmgr.prom",
                          "--metrics-interval=30s"});
  REQUIRE(r.ok());
  CHECK(r->metrics_listen == "127.0.0.1:9469");
  CHECK(r->metrics_textfile == "/var/lib/m/connmgr.prom");
  CHECK(r->metrics_interval == std::chrono::seconds(30));
  CHECK(parse_args(f, {"--metrics-listen=[::1]:9469"}).ok());
  for (const char* bad : {"localhost:9469", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "::1:9469",
                          "[::1]", "[127.0.0.1]:1", ":9469"}) {
    INFO(bad);
    CHECK(error_of(f, {std::string("--metrics-listen=") + bad}).rfind("metrics_listen: '", 0) == 0);
  }
  CHECK(error_of(f, {"--metrics-interval=0"}).rfind("metrics_interval: ", 0) == 0);
  CHECK(reload_diff(*def, *r) ==
        std::vector<std::string>{"metrics_listen", "metrics_textfile", "metrics_interval"});
}

TEST_CASE("tcp_keepalive takes 0 to turn keepalives off") {
  FakeEnv f;
  auto r = parse_args(f, {"--tcp-keepalive=0"});
  REQUIRE(r.ok());
  CHECK(r->tcp_keepalive.count() == 0);
  CHECK(r->effective.at("tcp_keepalive") == "0s");
}

TEST_CASE("a malformed value's error names the key and the value") {
  FakeEnv f;
  CHECK(error_of(f, {"--connection-timeout=fast"}).rfind("connection_timeout: invalid duration 'fast'", 0) == 0);
  CHECK(error_of(f, {"--max-clients=0"}).rfind("max_clients: ", 0) == 0);
  CHECK(error_of(f, {"--max-clients=many"}).rfind("max_clients: ", 0) == 0);
  CHECK(error_of(f, {"--max-retry-count=-1"}).rfind("max_retry_count: ", 0) == 0);
  CHECK(error_of(f, {"--max-request-bytes=99999999999"}).rfind("max_request_bytes: ", 0) == 0);
  CHECK(error_of(f, {"--socket-mode=0999"}).rfind("socket_mode: must be an octal mode", 0) == 0);
  CHECK(error_of(f, {"--socket-mode=rw"}).rfind("socket_mode: ", 0) == 0);
  CHECK(error_of(f, {"--log-level=loud"}).rfind("log_level: ", 0) == 0);
  CHECK(error_of(f, {"--retry-jitter=2"}).rfind("retry_jitter: ", 0) == 0);
  CHECK(error_of(f, {"--quic-alpn="}).rfind("quic_alpn: must not be empty", 0) == 0);
  CHECK(error_of(f, {"--database="}).rfind("database: must not be empty", 0) == 0);
}

TEST_CASE("unknown keys, stray arguments and missing values are refused by name") {
  FakeEnv f;
  CHECK(error_of(f, {"--nonsense=1"}) == "nonsense: unknown option --nonsense");
  CHECK(error_of(f, {"positional"}).find("unexpected argument 'positional'") != std::string::npos);
  CHECK(error_of(f, {"--"}).find("unexpected argument") != std::string::npos);
  CHECK(error_of(f, {"--database"}) == "database: needs a value (--database)");
  CHECK(error_of(f, {"--config"}).rfind("config: needs a value", 0) == 0);
}

TEST_CASE("impossible combinations are refused, naming the key to change") {
  FakeEnv f;
  CHECK(error_of(f, {"--base-retry-interval=2m", "--max-retry-interval=1m"})
            .rfind("base_retry_interval: is longer than max_retry_interval (2m > 1m)", 0) == 0);
  CHECK(error_of(f, {"--quic-keepalive=30s"}).rfind("quic_keepalive: must be shorter than quic_idle_timeout", 0) ==
        0);
  CHECK(error_of(f, {"--quic-keepalive=5s", "--quic-idle-timeout=5s"}).rfind("quic_keepalive: ", 0) == 0);
  CHECK(error_of(f, {"--socket=/x", "--database=/x"}).rfind("socket: must differ from database", 0) == 0);
  // Equal intervals are fine: a constant delay.
  CHECK(parse_args(f, {"--base-retry-interval=5s", "--max-retry-interval=5s"}).ok());
}

TEST_CASE("errors from the file carry FILE:LINE") {
  FakeEnv f;
  f.files["/etc/c.conf"] = "# header\n\n[connections]\nconnection_timeout = fast\n";
  CHECK(error_of(f, {"--config=/etc/c.conf"}) ==
        "connection_timeout: invalid duration 'fast', expected e.g. 500ms, 10s, 5m or 1h (a bare number is "
        "seconds) (/etc/c.conf:4)");
  f.files["/unknown"] = "\n\nfrobnicate = yes\n";
  CHECK(error_of(f, {"--config=/unknown"}) == "frobnicate: unknown key (/unknown:3)");
  f.files["/noeq"] = "max_clients = 10\nno equals sign\n";
  CHECK(error_of(f, {"--config=/noeq"}).find("(/noeq:2)") != std::string::npos);
  f.files["/section"] = "[broken\n";
  CHECK(error_of(f, {"--config=/section"}).find("(/section:1)") != std::string::npos);
  f.files["/combo"] = "base_retry_interval = 2m\nmax_retry_interval = 1m\n";
  CHECK(error_of(f, {"--config=/combo"}).rfind("base_retry_interval: ", 0) == 0);
  CHECK(error_of(f, {"--config=/combo"}).find("(/combo:1)") != std::string::npos);
}

TEST_CASE("a configuration file that cannot be read is an error naming it") {
  FakeEnv f;
  const std::string m = error_of(f, {"--config=/missing.conf"});
  CHECK(m.find("/missing.conf") != std::string::npos);
  CHECK(m.find("No such file or directory") != std::string::npos);
}

TEST_CASE("the file's comments, blank lines, sections, quotes and dashes are understood") {
  FakeEnv f;
  f.files["/c"] =
      "# a comment\n"
      "; another\n"
      "   # indented comment\n"
      "\n"
      "[connections]\n"
      "connection_timeout = 4s # trailing comment\n"
      "max-retry-count=2\t# tab before the comment\n"
      "[quic]\n"
      "quic_alpn = \"my alpn # not a comment\"  # but this is\n"
      "quic_ca_file = /etc/ssl/ca#1.pem\n";
  auto r = parse_args(f, {"--config=/c"});
  REQUIRE(r.ok());
  CHECK(r->connection_timeout == std::chrono::seconds(4));
  CHECK(r->max_retry_count == 2);
  CHECK(r->quic_alpn == "my alpn # not a comment");
  CHECK(r->quic_ca_file == "/etc/ssl/ca#1.pem");  // '#' inside a word is part of it
}

TEST_CASE("help lists every key with the default that applies to this user") {
  FakeEnv f;
  f.vars = {{"XDG_RUNTIME_DIR", "/run/user/1000"}, {"XDG_STATE_HOME", "/s"}};
  const std::string h = help_text(f.env());
  for (const char* k : kApiKeys) {
    INFO(k);
    CHECK(h.find("  " + std::string(k)) != std::string::npos);
  }
  CHECK(h.find("[/s/connmgr/connmgr.db]") != std::string::npos);
  CHECK(h.find("[/run/user/1000/connmgr/connmgrd.sock]") != std::string::npos);
  for (const char* d : {"[0660]", "[10s]", "[1s]", "[60s]", "[5]", "[1024]", "[1048576]", "[info]", "[connmgr]",
                        "[30s]", "[16777216]", "[the system trust store]", "[none]"}) {
    INFO(d);
    CHECK(h.find(d) != std::string::npos);
  }
  FakeEnv root;
  root.uid = 0;
  const std::string rh = help_text(root.env());
  CHECK(rh.find("[/var/lib/connmgr/connmgr.db]") != std::string::npos);
  CHECK(rh.find("[/run/connmgr/connmgrd.sock]") != std::string::npos);
}

TEST_CASE("--help and --version are reported, not run") {
  FakeEnv f;
  auto h = parse({"--help"}, f.env());
  REQUIRE(h.ok());
  CHECK(h->help);
  auto v = parse({"--version"}, f.env());
  REQUIRE(v.ok());
  CHECK(v->version);
  CHECK_FALSE(v->help);
}

TEST_CASE("the sample file parses to the root defaults and names every key") {
  FakeEnv f;
  f.uid = 0;
  f.files["/sample"] = sample_file_text();
  auto from_sample = parse_args(f, {"--config=/sample"});
  auto plain = parse_args(f, {});
  REQUIRE(from_sample.ok());
  REQUIRE(plain.ok());
  CHECK(from_sample->effective == plain->effective);
  for (const char* k : kApiKeys) {
    INFO(k);
    CHECK(f.files["/sample"].find("\n#" + std::string(k) + " =") != std::string::npos);
  }
  // Uncommenting every line gives the same configuration.
  std::string uncommented;
  std::istringstream in(f.files["/sample"]);
  for (std::string line; std::getline(in, line);) {
    if (line.size() > 1 && line[0] == '#' && line[1] != ' ') line = line.substr(1);
    uncommented += line + "\n";
  }
  f.files["/uncommented"] = uncommented;
  auto u = parse_args(f, {"--config=/uncommented"});
  REQUIRE(u.ok());
  CHECK(u->effective == plain->effective);
}

TEST_CASE("status shows every key's running value as text, null for none") {
  FakeEnv f;
  auto r = parse_args(f, {"--admin-group=wheel", "--connection-timeout=90", "--socket-mode=640"});
  REQUIRE(r.ok());
  auto j = config_to_json(*r);
  for (const char* k : kApiKeys) {
    INFO(k);
    REQUIRE(j.contains(k));
    CHECK((j[k].is_string() || j[k].is_null()));
  }
  CHECK(j["admin_group"] == "wheel");
  CHECK(j["connection_timeout"] == "90s");  // canonical spelling
  CHECK(j["socket_mode"] == "0640");
  CHECK(j["base_retry_interval"] == "1s");
  CHECK(j["max_retry_interval"] == "1m");
  CHECK(j["max_clients"] == "1024");
  CHECK(j["retry_jitter"] == "0");
  CHECK(j["quic_ca_file"].is_null());
  CHECK(j["node_id"].is_null());
}

TEST_CASE("reload_diff lists keys that cannot change live, and only those") {
  FakeEnv f;
  auto a = parse_args(f, {});
  auto b = parse_args(f, {"--connection-timeout=1s", "--database=/other.db", "--socket-mode=0600",
                          "--node-id=n9", "--admin-group=wheel", "--socket-group=connmgr", "--socket=/s"});
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(reload_diff(*a, *b) == std::vector<std::string>{"database", "socket", "socket_mode", "socket_group",
                                                        "node_id"});
  CHECK(reload_diff(*a, *a).empty());
  // The same value spelled differently is no change.
  auto c = parse_args(f, {"--quic-idle-timeout=30000ms", "--socket-mode=660"});
  REQUIRE(c.ok());
  CHECK(reload_diff(*a, *c).empty());
}

TEST_CASE("merge_reload takes the live keys from the new configuration and keeps the rest") {
  FakeEnv f;
  auto a = parse_args(f, {});
  auto b = parse_args(f, {"--connection-timeout=1s", "--database=/other.db", "--quic-alpn=x",
                          "--log-level=debug", "--max-clients=5"});
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  const DaemonConfig m = merge_reload(*a, *b);
  CHECK(m.connection_timeout == std::chrono::seconds(1));
  CHECK(m.log_level == LogLevel::kDebug);
  CHECK(m.max_clients == 5);
  CHECK(m.database == a->database);
  CHECK(m.quic_alpn == "connmgr");
  CHECK(reload_diff(*a, m).empty());
  CHECK(m.effective.at("connection_timeout") == "1s");
  CHECK(m.effective.at("database") == a->effective.at("database"));
}

TEST_CASE("inventory keys: local by default; postgres needs inventory_dsn; all need a restart") {
  FakeEnv f;
  auto def = parse_args(f, {});
  REQUIRE(def.ok());
  CHECK(def->inventory == "local");
  CHECK_FALSE(def->inventory_dsn);
  CHECK(def->inventory_resync_interval == milliseconds(30000));
  CHECK(def->inventory_connect_timeout == milliseconds(5000));
  CHECK(def->inventory_retry_max == milliseconds(30000));
  CHECK(config_to_json(*def)["inventory"] == "local");
  CHECK(config_to_json(*def)["inventory_dsn"].is_null());

  auto pg = parse_args(f, {"--inventory=postgres", "--inventory-dsn=host=db.example dbname=fleet",
                           "--inventory-resync-interval=5s", "--inventory-connect-timeout=2s",
                           "--inventory-retry-max=1m"});
  REQUIRE(pg.ok());
  CHECK(pg->inventory == "postgres");
  CHECK(*pg->inventory_dsn == "host=db.example dbname=fleet");
  CHECK(pg->inventory_resync_interval == milliseconds(5000));
  CHECK(pg->inventory_connect_timeout == milliseconds(2000));
  CHECK(pg->inventory_retry_max == milliseconds(60000));
  CHECK(reload_diff(*def, *pg) == std::vector<std::string>{"inventory", "inventory_dsn", "inventory_resync_interval",
                                                           "inventory_connect_timeout", "inventory_retry_max"});
  CHECK(merge_reload(*def, *pg).inventory == "local");

  CHECK(error_of(f, {"--inventory=etcd"}) == "inventory: must be local or postgres, got 'etcd' (--inventory)");
  CHECK(error_of(f, {"--inventory=postgres"}).rfind("inventory_dsn: is required with inventory = postgres", 0) == 0);
  f.files["/c.conf"] = "inventory = postgres\n";
  CHECK(error_of(f, {"--config", "/c.conf"}).find("inventory_dsn") == 0);
  CHECK(error_of(f, {"--inventory-resync-interval=0"}).rfind("inventory_resync_interval:", 0) == 0);
}
