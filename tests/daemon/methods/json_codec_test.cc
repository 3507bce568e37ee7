// json_codec: how an Error becomes a JSON-RPC error object.
#include "methods/json_codec.h"

#include <catch2/catch.hpp>

using connmgr::Error;
using connmgr::ErrorCode;
using connmgr::methods::to_rpc_error;
using connmgr::rpc::json;

TEST_CASE("a server error always carries a data object") {
  auto e = to_rpc_error(Error::node_not_found("n1"), json{{"node_id", "n1"}});
  CHECK(e.code == static_cast<int>(ErrorCode::kNodeNotFound));
  CHECK(e.message == "node 'n1' not found");
  CHECK(e.data == json{{"node_id", "n1"}});

  auto bare = to_rpc_error(Error::already_exists("node 'n1' already exists"));
  CHECK(bare.data.is_object());
  CHECK(bare.data.empty());
}

TEST_CASE("an error's reason joins its data unless the details name one") {
  auto e = to_rpc_error(Error::storage("database is locked", "locked"));
  CHECK(e.code == static_cast<int>(ErrorCode::kStorage));
  CHECK(e.data == json{{"reason", "locked"}});

  auto given = to_rpc_error(Error::storage("database is locked", "locked"), json{{"reason", "full"}});
  CHECK(given.data["reason"] == "full");
}

TEST_CASE("a standard error carries data only when there is something to say") {
  auto params = to_rpc_error(Error::invalid_params("invalid params: limit must be ..."));
  CHECK(params.code == static_cast<int>(ErrorCode::kInvalidParams));
  CHECK(params.data.is_null());

  auto internal = to_rpc_error(Error::internal("no session to deliver events to"));
  CHECK(internal.code == static_cast<int>(ErrorCode::kInternal));
  CHECK(internal.data.is_null());
}

TEST_CASE("an endpoint shows its RTT (null until known) and its failure counters") {
  connmgr::Endpoint e;
  e.id = 4;
  e.node_id = "n1";
  e.protocol = "tcp";
  e.address = "127.0.0.1";
  e.port = 80;
  json j = connmgr::methods::to_json(e);
  CHECK(j["rtt_ms"].is_null());
  CHECK(j["consecutive_failures"] == 0);
  CHECK(j["uncharged_failure_count"] == 0);
  e.rtt_ms = 1.25;
  e.consecutive_failures = 3;
  e.uncharged_failure_count = 7;
  j = connmgr::methods::to_json(e);
  CHECK(j["rtt_ms"] == 1.25);
  CHECK(j["consecutive_failures"] == 3);
  CHECK(j["uncharged_failure_count"] == 7);
}

TEST_CASE("an event tied to no node has no node_id key; race_offset_ms and generation when set") {
  connmgr::Event net;
  net.type = connmgr::EventType::kNetworkChanged;
  net.at = 1764660000000;
  net.generation = 2;
  json j = connmgr::methods::to_json(net);
  CHECK(j == json{{"type", "network_changed"}, {"at", "2025-12-02T07:20:00.000Z"}, {"generation", 2}});

  connmgr::Event c;
  c.type = connmgr::EventType::kConnecting;
  c.at = 1764660000000;
  c.node_id = "n1";
  c.endpoint_id = 5;
  j = connmgr::methods::to_json(c);
  CHECK(j["node_id"] == "n1");
  CHECK_FALSE(j.contains("race_offset_ms"));
  c.race_offset_ms = 250;
  CHECK(connmgr::methods::to_json(c)["race_offset_ms"] == 250);
}

TEST_CASE("an explanation: candidates with rank or null, classes, backoff, recent attempts") {
  connmgr::Explanation x;
  x.node_id = "n1";
  x.decision = connmgr::Decision::kWaitRetry;
  connmgr::Candidate first;
  first.endpoint.id = 1;
  first.endpoint.node_id = "n1";
  first.endpoint.protocol = "tcp";
  first.rank = 0;
  first.eligible = true;
  first.why = {"success_count 2"};
  first.race_offset_ms = 0;
  connmgr::Candidate other;
  other.endpoint.id = 2;
  other.endpoint.node_id = "n1";
  other.endpoint.protocol = "quic";
  other.why = {"protocol quic not asked"};
  x.candidates = {first, other};
  x.network.classes[1].state = "down";
  x.backoff = connmgr::BackoffInfo{3, 4000, 1764660000000};
  x.recent.push_back(connmgr::AttemptRecord{1764660000000, 1, "failure", std::string("refused"), true});
  x.recent.push_back(connmgr::AttemptRecord{1764660000001, 1, "success", std::nullopt, false});
  const json j = connmgr::methods::to_json(x);
  CHECK(j["node_id"] == "n1");
  CHECK(j["decision"] == "wait_retry");
  CHECK(j["link"].is_null());
  REQUIRE(j["candidates"].size() == 2);
  CHECK(j["candidates"][0]["rank"] == 0);
  CHECK(j["candidates"][0]["eligible"] == true);
  CHECK(j["candidates"][0]["race_offset_ms"] == 0);
  CHECK(j["candidates"][0]["endpoint"]["id"] == 1);
  CHECK(j["candidates"][1]["rank"].is_null());
  CHECK(j["candidates"][1]["eligible"] == false);
  CHECK(j["candidates"][1]["race_offset_ms"].is_null());
  CHECK(j["candidates"][1]["why"] == json::array({"protocol quic not asked"}));
  CHECK(j["classes"]["tcp6"] == json{{"state", "down"}, {"last_success_at", nullptr}});
  CHECK_FALSE(j.contains("network"));
  CHECK(j["backoff"] == json{{"attempt", 3}, {"delay_ms", 4000}, {"next_attempt_at", "2025-12-02T07:20:00.000Z"}});
  CHECK(j["recent"][0] == json{{"at", "2025-12-02T07:20:00.000Z"},
                               {"endpoint_id", 1},
                               {"outcome", "failure"},
                               {"reason", "refused"},
                               {"charged", true}});
  CHECK(j["recent"][1]["reason"].is_null());
  x.backoff.reset();
  CHECK(connmgr::methods::to_json(x)["backoff"].is_null());
}

TEST_CASE("inventory_changed carries its revision and kind, and the node and endpoint when it has them") {
  connmgr::Event e;
  e.type = connmgr::EventType::kInventoryChanged;
  e.at = 1764660000000;
  e.node_id = "n1";
  e.endpoint_id = 9;
  e.revision = 42;
  e.kind = "endpoint_added";
  CHECK(connmgr::methods::to_json(e) == json{{"type", "inventory_changed"},
                                             {"at", "2025-12-02T07:20:00.000Z"},
                                             {"node_id", "n1"},
                                             {"endpoint_id", 9},
                                             {"revision", 42},
                                             {"kind", "endpoint_added"}});
  connmgr::Event resync;
  resync.type = connmgr::EventType::kInventoryChanged;
  resync.at = 1764660000000;
  resync.revision = 7;
  resync.kind = "resync";
  CHECK(connmgr::methods::to_json(resync) ==
        json{{"type", "inventory_changed"}, {"at", "2025-12-02T07:20:00.000Z"}, {"revision", 7}, {"kind", "resync"}});
}
