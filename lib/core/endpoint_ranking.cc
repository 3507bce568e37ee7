#include "core/endpoint_ranking.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace connmgr {

namespace {

// Why an endpoint cannot be dialled for this connect, or "" when it can.
std::string ineligible_because(const Endpoint& ep, const RankingRules& rules) {
  if (rules.protocol && *rules.protocol && ep.protocol != **rules.protocol)
    return "protocol " + ep.protocol + " not asked (" + **rules.protocol + ")";
  if (!rules.connectors->find(ep.protocol)) return "no connector for protocol " + ep.protocol;
  return {};
}

bool failed_in_series(const Endpoint& ep, const RankingRules& rules) {
  if (!rules.failed_in_series) return false;
  const auto& failed = *rules.failed_in_series;
  return std::find(failed.begin(), failed.end(), ep.id) != failed.end();
}

std::string format_ms(double ms) {
  char buf[32];
  snprintf(buf, sizeof buf, "%.1f", ms);
  return buf;
}

// The record the Store ranked it by, and what moved it.
void explain_eligible(Candidate& c, bool failed, bool exhausted) {
  const Endpoint& ep = c.endpoint;
  if (ep.consecutive_failures > 0)
    c.why.push_back("consecutive_failures " + std::to_string(ep.consecutive_failures) +
                    ": ranks after endpoints without");
  c.why.push_back("success_count " + std::to_string(ep.success_count) + ", failure_count " +
                  std::to_string(ep.failure_count));
  if (!ep.last_success_at) c.why.push_back("never succeeded");
  if (failed && !exhausted) c.why.push_back("failed in this series: gives way to endpoints not yet tried");
  if (exhausted) c.why.push_back("every endpoint failed in this series: record order");
  if (ep.rtt_ms) c.why.push_back("rtt_ms " + format_ms(*ep.rtt_ms));
}

// Race offsets: each eligible candidate's dial starts the attempt delay of
// the one before after it (when neither succeeded nor failed by then).
void set_race_offsets(Ranking& r, const ConnectionConfig& config) {
  int64_t offset = 0;
  for (size_t i = 0; i < r.eligible; ++i) {
    Candidate& c = r.candidates[i];
    c.race_offset_ms = offset;
    offset += race_delay(config, c.endpoint.rtt_ms).count();
  }
}

}  // namespace

Ranking rank_candidates(std::vector<Endpoint> endpoints, const RankingRules& rules) {
  Ranking r;
  std::vector<Candidate> fresh, failed, others;
  for (auto& ep : endpoints) {
    Candidate c;
    std::string no = ineligible_because(ep, rules);
    c.endpoint = std::move(ep);
    if (!no.empty()) {
      if (rules.with_reasons) c.why.push_back(std::move(no));
      others.push_back(std::move(c));
      continue;
    }
    c.eligible = true;
    (failed_in_series(c.endpoint, rules) ? failed : fresh).push_back(std::move(c));
  }
  r.series_exhausted = fresh.empty() && !failed.empty();
  r.eligible = fresh.size() + failed.size();
  r.candidates = std::move(fresh);
  r.candidates.reserve(endpoints.size());
  for (auto& c : failed) r.candidates.push_back(std::move(c));
  for (size_t i = 0; i < r.eligible; ++i) {
    Candidate& c = r.candidates[i];
    c.rank = static_cast<int>(i);
    if (rules.with_reasons) explain_eligible(c, failed_in_series(c.endpoint, rules), r.series_exhausted);
  }
  for (auto& c : others) r.candidates.push_back(std::move(c));
  r.race = rules.config->race && r.eligible > 1;
  if (r.race) set_race_offsets(r, *rules.config);
  return r;
}

std::chrono::milliseconds race_delay(const ConnectionConfig& config, std::optional<double> rtt_ms) {
  using std::chrono::milliseconds;
  if (config.race_delay) return *config.race_delay;
  if (!rtt_ms) return milliseconds(250);
  const auto ms = milliseconds(std::llround(1.5 * *rtt_ms));
  return std::clamp(ms, config.race_delay_min, std::max(config.race_delay_min, config.race_delay_max));
}

}  // namespace connmgr
