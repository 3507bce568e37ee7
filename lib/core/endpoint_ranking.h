// Ranking a node's endpoints for one attempt, and the race's attempt delay:
// the one function that both a node connect and nodes.explain call, so that
// explain can only say what connect does (docs/guide.md, "Statistics and
// how an endpoint is chosen" and "Racing a node's endpoints").
//
// Pure: no loop, no Store, no clock.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/connection_config.h"
#include "net/connector_factory.h"
#include "storage/endpoint.h"

namespace connmgr {

struct Candidate {
  Endpoint endpoint;
  std::optional<int> rank;  // 0 = dialled first; none when not eligible
  bool eligible = false;
  std::vector<std::string> why;  // short reasons ("consecutive_failures 3", "protocol quic not asked")
  std::optional<int64_t> race_offset_ms;  // when a race would dial it, from the race's start
};

// What ranks a node's endpoints besides their records.
struct RankingRules {
  const std::optional<std::string>* protocol = nullptr;  // only this protocol's, when set
  const std::vector<int64_t>* failed_in_series = nullptr;  // failed in the link's current series
  const ConnectorFactory* connectors = nullptr;  // endpoints without a connector are not eligible
  const ConnectionConfig* config = nullptr;  // race, race delays
  bool with_reasons = false;  // fill Candidate::why (explain); connect skips the strings
};

struct Ranking {
  // The eligible candidates in rank order, then the others in the Store's order.
  std::vector<Candidate> candidates;
  size_t eligible = 0;
  // Every eligible endpoint failed in the series: the ranking alone decided,
  // and the series starts over.
  bool series_exhausted = false;
  // The eligible ones are raced (config.race and more than one).
  bool race = false;
};

// `endpoints`: the node's, in the Store's order (its ranking by record:
// consecutive failures behind, then success_count, failure_count, last
// success, id). Eligible: of the asked protocol, with a connector. Among
// the eligible, those not failed in the series come first (each keeping its
// Store order), unless all failed.
Ranking rank_candidates(std::vector<Endpoint> endpoints, const RankingRules& rules);

// How long a race waits after dialling an endpoint with smoothed RTT
// `rtt_ms` before dialling the next: config.race_delay when set, else
// 1.5 x rtt_ms clamped to [race_delay_min, race_delay_max], 250 ms when the
// RTT is unknown.
std::chrono::milliseconds race_delay(const ConnectionConfig& config, std::optional<double> rtt_ms);

}  // namespace connmgr
