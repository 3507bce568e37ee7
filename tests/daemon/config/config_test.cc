#include "config/config.h"

#include <catch2/catch.hpp>
#include <map>

using namespace connmgr::config;

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

connmgr::Result<Invocation> parse_args(const FakeEnv& f, std::vector<std::string> args) {
  return parse(args, f.env());
}

}  // namespace

TEST_CASE("built-in defaults are API.md's") {
  FakeEnv f;
  f.uid = 0;
  auto r = parse_args(f, {});
  REQUIRE(r.ok());
  const auto& c = r->config;
  CHECK(c.database == "/var/lib/connmgr/connmgr.db");
  CHECK(c.socket == "/run/connmgr/connmgrd.sock");
  CHECK(c.socket_mode == 0660);
  CHECK(c.connection_timeout == std::chrono::seconds(10));
  CHECK(c.base_retry_interval == std::chrono::seconds(1));
  CHECK(c.max_retry_interval == std::chrono::seconds(60));
  CHECK(c.max_retry_count == 5);
  CHECK(c.max_clients == 1024);
  CHECK(c.max_request_bytes == 1048576);
  CHECK(c.log_level == LogLevel::kInfo);
  CHECK(c.quic_alpn == "connmgr");
  CHECK_FALSE(c.quic_ca_file);
  CHECK(c.quic_idle_timeout == std::chrono::seconds(30));
  CHECK(c.quic_keepalive == std::chrono::seconds(10));
  CHECK(c.tcp_keepalive == std::chrono::seconds(30));
  CHECK_FALSE(c.admin_group);
}

TEST_CASE("a user who is not root gets XDG paths") {
  FakeEnv f;
  f.vars = {{"XDG_RUNTIME_DIR", "/run/user/1000"}, {"XDG_STATE_HOME", "/home/u/.state"}, {"HOME", "/home/u"}};
  auto r = parse_args(f, {});
  REQUIRE(r.ok());
  CHECK(r->config.database == "/home/u/.state/connmgr/connmgr.db");
  CHECK(r->config.socket == "/run/user/1000/connmgr/connmgrd.sock");
  f.vars = {{"HOME", "/home/u"}};
  auto r2 = parse_args(f, {});
  CHECK(r2->config.database == "/home/u/.local/state/connmgr/connmgr.db");
  CHECK(r2->config.socket == "/tmp/connmgr-1000/connmgrd.sock");
}

TEST_CASE("flags win over the file, which wins over defaults") {
  FakeEnv f;
  f.files["/c"] = "connection_timeout = 3s\nmax_retry_count = 7\n";
  auto r = parse_args(f, {"--config", "/c", "--max-retry-count=9"});
  REQUIRE(r.ok());
  CHECK(r->config.connection_timeout == std::chrono::seconds(3));
  CHECK(r->config.max_retry_count == 9);
  CHECK(r->config.effective.at("max_retry_count") == "9");
}

TEST_CASE("both flag forms and either spelling of a key are accepted") {
  FakeEnv f;
  auto r = parse_args(f, {"--connection-timeout", "2s", "--max_retry_count=3", "--log-level=debug"});
  REQUIRE(r.ok());
  CHECK(r->config.connection_timeout == std::chrono::seconds(2));
  CHECK(r->config.max_retry_count == 3);
  CHECK(r->config.log_level == LogLevel::kDebug);
}

TEST_CASE("durations take units and a bare number is seconds") {
  FakeEnv f;
  auto d = [&](const std::string& v) {
    auto r = parse_args(f, {"--connection-timeout=" + v});
    return r.ok() ? r->config.connection_timeout.count() : -1;
  };
  CHECK(d("500ms") == 500);
  CHECK(d("2s") == 2000);
  CHECK(d("1m") == 60000);
  CHECK(d("1h") == 3600000);
  CHECK(d("3") == 3000);
  CHECK(d("1.5s") == 1500);
  CHECK(d("fast") == -1);
  CHECK(d("5 s") == -1);
  CHECK(d("-1s") == -1);
  CHECK(d("0") == -1);
}

TEST_CASE("every error names its key") {
  FakeEnv f;
  auto err = [&](std::vector<std::string> args) {
    auto r = parse_args(f, std::move(args));
    REQUIRE_FALSE(r.ok());
    return r.error().message();
  };
  CHECK(err({"--connection-timeout=fast"}).find("connection_timeout") == 0);
  CHECK(err({"--max-clients=0"}).find("max_clients") == 0);
  CHECK(err({"--socket-mode=0999"}).find("socket_mode") == 0);
  CHECK(err({"--log-level=loud"}).find("log_level") == 0);
  CHECK(err({"--retry-jitter=2"}).find("retry_jitter") == 0);
  CHECK(err({"--nonsense=1"}).find("nonsense") == 0);
  CHECK(err({"positional"}).find("unexpected argument") != std::string::npos);
  CHECK(err({"--database"}).find("database") == 0);
}

TEST_CASE("impossible combinations are refused") {
  FakeEnv f;
  auto r = parse_args(f, {"--base-retry-interval=2m", "--max-retry-interval=1m"});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message().find("base_retry_interval") == 0);
  auto q = parse_args(f, {"--quic-keepalive=30s"});
  REQUIRE_FALSE(q.ok());
  CHECK(q.error().message().find("quic_keepalive") == 0);
}

TEST_CASE("the file's comments, sections and quotes are understood, errors carry FILE:LINE") {
  FakeEnv f;
  f.files["/c"] =
      "# a comment\n; another\n\n[connections]\nconnection_timeout = 4s # trailing\n"
      "quic_alpn = \"my alpn # not a comment\"\n";
  auto r = parse_args(f, {"--config=/c"});
  REQUIRE(r.ok());
  CHECK(r->config.connection_timeout == std::chrono::seconds(4));
  CHECK(r->config.quic_alpn == "my alpn # not a comment");
  f.files["/bad"] = "max_clients = 10\nno equals sign\n";
  auto b = parse_args(f, {"--config=/bad"});
  REQUIRE_FALSE(b.ok());
  CHECK(b.error().message().find("/bad:2") != std::string::npos);
  f.files["/unknown"] = "\n\nfrobnicate = yes\n";
  auto u = parse_args(f, {"--config=/unknown"});
  REQUIRE_FALSE(u.ok());
  CHECK(u.error().message().find("frobnicate: unknown key (/unknown:3)") == 0);
  auto missing = parse_args(f, {"--config=/missing"});
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().message().find("/missing") != std::string::npos);
}

TEST_CASE("help lists every key with the default for this user") {
  FakeEnv f;
  f.vars = {{"XDG_RUNTIME_DIR", "/run/user/1000"}, {"XDG_STATE_HOME", "/s"}};
  const std::string h = help_text(f.env());
  for (const char* k : {"database", "socket", "socket_mode", "socket_group", "admin_group", "node_id",
                        "connection_timeout", "base_retry_interval", "max_retry_interval", "max_retry_count",
                        "max_clients", "max_request_bytes", "log_level", "quic_alpn", "quic_ca_file",
                        "quic_idle_timeout", "quic_keepalive", "tcp_keepalive"})
    CHECK(h.find(k) != std::string::npos);
  CHECK(h.find("[/s/connmgr/connmgr.db]") != std::string::npos);
  CHECK(h.find("[/run/user/1000/connmgr/connmgrd.sock]") != std::string::npos);
}

TEST_CASE("reload reports keys that need a restart and nothing else") {
  FakeEnv f;
  auto a = parse_args(f, {});
  auto b = parse_args(f, {"--connection-timeout=1s", "--database=/other.db", "--quic-alpn=x"});
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  auto keys = keys_needing_restart(a->config, b->config);
  CHECK(keys == std::vector<std::string>{"database", "quic_alpn"});
}

TEST_CASE("status shows every key's running value") {
  FakeEnv f;
  auto r = parse_args(f, {"--admin-group=wheel"});
  auto j = to_json(r->config);
  CHECK(j["admin_group"] == "wheel");
  CHECK(j["connection_timeout"] == "10s");
  CHECK(j["quic_ca_file"].is_null());
}
