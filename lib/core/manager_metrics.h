// ManagerMetrics: what the ConnectionManager counts as things happen, for the
// daemon's metrics (docs/operations.md, "Metrics"). Kept up to date at each
// dial, link change and stream byte, so that reading them costs the same with
// 20 links or 20,000: a scrape never walks the links.
//
// Labels are small closed sets: protocols (a connector's name), results,
// failure reasons (docs/api.md "Errors", local_network, or an errno name),
// disconnect reasons, link states. No node ids.
//
// Plain data, loop thread only; the manager owns one and hands it out read-only.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "util/histogram.h"

namespace connmgr {

// Bucket bounds, in seconds. Dials: from a loopback handshake (~0.1 ms)
// through a slow TLS handshake to connection_timeout's range (10 s default).
inline constexpr std::array<double, 13> kDialDurationBounds{
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10};
// Links: a flapping peer's (under a second) to a link held for days.
inline constexpr std::array<double, 11> kLinkDurationBounds{
    1, 10, 60, 300, 900, 3600, 3 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400};

enum class DialResult : uint8_t { kSuccess = 0, kFailure, kCancelled };
inline constexpr std::array<std::string_view, 3> kDialResultNames{"success", "failure", "cancelled"};

// A raced attempt's end: its first-ranked candidate won ("first"), a later
// one did ("fallback"), or every candidate failed ("failed").
enum class RaceOutcome : uint8_t { kFirst = 0, kFallback, kFailed };
inline constexpr std::array<std::string_view, 3> kRaceOutcomeNames{"first", "fallback", "failed"};

// Why a failure was not charged to its endpoint's failure_count: our own
// network failed (local_network), or the endpoint's class has had no success
// since the endpoint's last charged failure (an outage: one failure counts).
enum class UnchargedWhy : uint8_t { kLocalNetwork = 0, kOutage };
inline constexpr std::array<std::string_view, 2> kUnchargedWhyNames{"local_network", "outage"};

// Link states, as link_state_name() spells them (connecting, waiting_retry, active).
inline constexpr size_t kLinkStates = 3;

struct ProtocolMetrics {
  explicit ProtocolMetrics(std::string name)
      : protocol(std::move(name)), dial_duration(kDialDurationBounds) {}
  std::string protocol;  // "tcp", "quic"; "none" for links before any dial
  std::array<uint64_t, 3> dials{};  // by DialResult
  std::map<std::string, uint64_t, std::less<>> failures;  // by reason
  Histogram dial_duration;  // successful dials, from the dial's start
  std::array<int64_t, kLinkStates> links{};  // by LinkState
  int64_t streams = 0;  // open now
  uint64_t stream_bytes_in = 0;   // from the node
  uint64_t stream_bytes_out = 0;  // to the node
};

struct ManagerMetrics {
  ManagerMetrics() : link_duration(kLinkDurationBounds) {}

  // The entry of a protocol, made on first use; its index never changes.
  uint8_t protocol_index(std::string_view protocol) {
    for (size_t i = 0; i < protocols.size(); ++i)
      if (protocols[i].protocol == protocol) return static_cast<uint8_t>(i);
    protocols.emplace_back(std::string(protocol));
    return static_cast<uint8_t>(protocols.size() - 1);
  }

  std::vector<ProtocolMetrics> protocols;
  Histogram link_duration;  // active links that ended, from up to down
  std::map<std::string, uint64_t, std::less<>> disconnects;  // by reason
  std::array<uint64_t, 2> uncharged{};  // by UnchargedWhy
  std::array<uint64_t, 3> races{};      // by RaceOutcome
  uint64_t network_changes = 0;
};

}  // namespace connmgr
