// StatusText against the json object `status` used to build: the text must
// be byte for byte what dumping that object writes.
#include "methods/status_text.h"

#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>

#include "methods/json_codec.h"
#include "rpc/json_text.h"

using connmgr::NetworkStatus;
using connmgr::methods::StatusText;
using connmgr::rpc::json;

namespace {

struct Values {
  std::string version = "0.1.0";
  std::string database = "/var/lib/connmgr/connmgr.db";
  std::string socket = "/run/connmgr/connmgrd.sock";
  std::string node_id = "832b4d8da16e4bf8bcbef0511bfbfa6a";
  std::vector<std::string> connectors{"tcp", "quic"};
  json config = json{{"socket", "/run/connmgr/connmgrd.sock"}, {"admin_group", nullptr},
                     {"max_clients", "1024"}};
  StatusText::Live live{1234, 3, 7, 1, 2, 5, 9, {}, {}};
  NetworkStatus network = [] {
    NetworkStatus n;
    n.generation = 3;
    n.classes[0].state = "up";
    n.classes[0].last_success_at = 1764660000123;
    n.classes[3].state = "down";
    return n;
  }();
  std::string network_text;

  // live, with status.network written as text.
  StatusText::Live live_with_network() {
    network_text.clear();
    connmgr::methods::append_network_json(network_text, network);
    StatusText::Live l = live;
    l.network = network_text;
    return l;
  }
};

// The object as Api::status built it before it wrote text.
std::string as_object(const Values& v) {
  // status.network as the codec builds it as an object.
  json connectors = json::array();
  for (const auto& n : v.connectors) connectors.push_back(n);
  json result{
      {"version", v.version},
      {"node_id", v.node_id},
      {"uptime_s", v.live.uptime_s},
      {"database", v.database},
      {"socket", v.socket},
      {"connectors", connectors},
      {"counts",
       {{"nodes", v.live.nodes},
        {"endpoints", v.live.endpoints},
        {"active", v.live.active},
        {"pending", v.live.pending},
        {"clients", v.live.clients},
        {"streams", v.live.streams}}},
      {"config", v.config},
      {"network", connmgr::methods::to_json(v.network)},
  };
  std::string out;
  connmgr::rpc::append_json(out, result);
  return out;
}

std::string as_text(Values& v) {
  StatusText t;
  t.set_config(v.config);
  t.set_connectors(v.connectors);
  t.set_identity(v.version, v.database, v.socket, v.node_id);
  std::string out = "left over";
  t.write(v.live_with_network(), out);
  return out;
}

}  // namespace

TEST_CASE("the status text is what dumping the status object writes") {
  Values v;
  CHECK(as_text(v) == as_object(v));
}

TEST_CASE("status strings are escaped as the serializer escapes them, bad UTF-8 included") {
  Values v;
  v.database = "/tmp/\"quoted\"\\dir/\xff\xfe.db";
  v.socket = "/tmp/s\n\x01\xc3\xa9";
  v.node_id = "";
  v.version = "1.0-\xe2\x82";
  v.connectors = {};
  v.config = json::object();
  CHECK(as_text(v) == as_object(v));
}

TEST_CASE("status counts are written in full, extremes included") {
  Values v;
  v.live = StatusText::Live{std::numeric_limits<uint64_t>::max(),
                            std::numeric_limits<int64_t>::min(),
                            std::numeric_limits<int64_t>::max(), 0, 0, 0,
                            std::numeric_limits<uint64_t>::max(), {}, {}};
  CHECK(as_text(v) == as_object(v));
}

TEST_CASE("status.network's text is what dumping its object writes, at start and with every class set") {
  Values v;
  v.network = NetworkStatus{};
  CHECK(as_text(v) == as_object(v));
  const json fresh = json::parse(as_text(v))["network"];
  CHECK(fresh == json{{"generation", 0},
                      {"classes",
                       {{"tcp4", {{"state", "unknown"}, {"last_success_at", nullptr}}},
                        {"tcp6", {{"state", "unknown"}, {"last_success_at", nullptr}}},
                        {"udp4", {{"state", "unknown"}, {"last_success_at", nullptr}}},
                        {"udp6", {{"state", "unknown"}, {"last_success_at", nullptr}}}}}});
  for (auto& c : v.network.classes) {
    c.state = "up";
    c.last_success_at = 1764660000000;
  }
  v.network.generation = std::numeric_limits<uint64_t>::max();
  CHECK(as_text(v) == as_object(v));
  CHECK(json::parse(as_text(v))["network"]["classes"]["udp6"]["last_success_at"] == "2025-12-02T07:20:00.000Z");
}

TEST_CASE("a part set again replaces what was kept") {
  Values v;
  StatusText t;
  t.set_config(json{{"a", 1}});
  t.set_connectors({"x"});
  t.set_identity("v", "d", "s", "n");
  CHECK(t.identity_is("v", "d", "s", "n"));
  CHECK_FALSE(t.identity_is("v", "d", "s", "other"));
  t.set_config(v.config);
  t.set_connectors(v.connectors);
  t.set_identity(v.version, v.database, v.socket, v.node_id);
  std::string out;
  t.write(v.live_with_network(), out);
  CHECK(out == as_object(v));
}

TEST_CASE("status.inventory's text lands in its alphabetical place") {
  Values v;
  const std::string inventory =
      R"({"backend":"postgres","dsn":"host=db dbname=fleet","lag_s":1.5,"revision":42,"state":"connecting"})";
  StatusText t;
  t.set_config(v.config);
  t.set_connectors(v.connectors);
  t.set_identity(v.version, v.database, v.socket, v.node_id);
  StatusText::Live live = v.live_with_network();
  live.inventory = inventory;
  std::string out;
  t.write(live, out);
  json expected = json::parse(as_object(v));
  expected["inventory"] = json::parse(inventory);
  std::string expected_text;
  connmgr::rpc::append_json(expected_text, expected);
  CHECK(out == expected_text);
}
