// rank_candidates and race_delay: the ranking both connect and explain use.
#include "core/endpoint_ranking.h"

#include <catch2/catch.hpp>

#include "net/tcp_connector.h"

using namespace connmgr;
using namespace std::chrono_literals;

namespace {

Endpoint ep(int64_t id, const std::string& protocol = "tcp", std::optional<double> rtt = {}) {
  Endpoint e;
  e.id = id;
  e.protocol = protocol;
  e.address = "127.0.0.1";
  e.port = 1000 + static_cast<int>(id);
  e.rtt_ms = rtt;
  return e;
}

std::vector<int64_t> order(const Ranking& r) {
  std::vector<int64_t> ids;
  for (const auto& c : r.candidates) ids.push_back(c.endpoint.id);
  return ids;
}

struct Rules {
  Rules() {
    uv_loop_init(&loop);
    connectors.add(std::make_unique<TcpConnector>(&loop, TcpOptions{}));
    rules.protocol = &protocol;
    rules.failed_in_series = &failed;
    rules.connectors = &connectors;
    rules.config = &config;
  }
  ~Rules() { uv_loop_close(&loop); }
  uv_loop_t loop{};
  ConnectorFactory connectors;
  ConnectionConfig config;
  std::optional<std::string> protocol;
  std::vector<int64_t> failed;
  RankingRules rules;
};

}  // namespace

TEST_CASE("race_delay follows the rule") {
  ConnectionConfig c;
  CHECK(race_delay(c, std::nullopt) == 250ms);
  CHECK(race_delay(c, 100.0) == 150ms);
  CHECK(race_delay(c, 10.0) == 50ms);     // race_delay_min
  CHECK(race_delay(c, 5000.0) == 2000ms); // race_delay_max
  c.race_delay = 70ms;
  CHECK(race_delay(c, 100.0) == 70ms);
  CHECK(race_delay(c, std::nullopt) == 70ms);
}

TEST_CASE_METHOD(Rules, "the Store's order stands; endpoints failed in the series give way") {
  auto r = rank_candidates({ep(1), ep(2), ep(3)}, rules);
  CHECK(order(r) == std::vector<int64_t>{1, 2, 3});
  CHECK(r.eligible == 3);
  CHECK(r.race);
  CHECK(r.candidates[2].rank == 2);
  failed = {1};
  r = rank_candidates({ep(1), ep(2), ep(3)}, rules);
  CHECK(order(r) == std::vector<int64_t>{2, 3, 1});
  CHECK_FALSE(r.series_exhausted);
  failed = {1, 2, 3};
  r = rank_candidates({ep(1), ep(2), ep(3)}, rules);
  CHECK(order(r) == std::vector<int64_t>{1, 2, 3});
  CHECK(r.series_exhausted);
}

TEST_CASE_METHOD(Rules, "race offsets add each candidate's delay to the one before") {
  auto r = rank_candidates({ep(1, "tcp", 100.0), ep(2), ep(3, "tcp", 10.0)}, rules);
  CHECK(r.candidates[0].race_offset_ms == 0);
  CHECK(r.candidates[1].race_offset_ms == 150);
  CHECK(r.candidates[2].race_offset_ms == 400);
  config.race = false;
  r = rank_candidates({ep(1), ep(2)}, rules);
  CHECK_FALSE(r.race);
  CHECK_FALSE(r.candidates[0].race_offset_ms);
}

TEST_CASE_METHOD(Rules, "other protocols and protocols without a connector are listed last, unranked") {
  rules.with_reasons = true;
  auto r = rank_candidates({ep(1, "quic"), ep(2), ep(3, "carrier-pigeon")}, rules);
  CHECK(order(r) == std::vector<int64_t>{2, 1, 3});
  CHECK(r.eligible == 1);
  CHECK_FALSE(r.race);
  CHECK_FALSE(r.candidates[1].rank);
  CHECK(r.candidates[1].why == std::vector<std::string>{"no connector for protocol quic"});
  protocol = "quic";
  r = rank_candidates({ep(1, "quic"), ep(2)}, rules);
  CHECK(r.eligible == 0);
  CHECK(r.candidates[1].why == std::vector<std::string>{"protocol tcp not asked (quic)"});
}
