// An endpoint of a node as stored in the `endpoints` table (schema.cc): where
// and how to dial it, and its record of successes and failures.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace connmgr {

struct Endpoint {
  int64_t id = 0;
  std::string node_id;
  std::string protocol;  // "tcp", "quic": a connector's name
  std::string address;   // IPv4/IPv6 literal or host name
  int port = 0;
  std::optional<std::string> server_name;
  std::optional<std::string> alpn;
  std::optional<std::string> pin_sha256;
  int64_t success_count = 0;
  int64_t failure_count = 0;
  std::optional<int64_t> last_success_at;  // unix ms
  std::optional<int64_t> last_failure_at;  // unix ms
  std::optional<std::string> last_error;
  // Smoothed handshake RTT (as TCP's SRTT, alpha = 1/8) over successful dials.
  std::optional<double> rtt_ms;
  // Failed dials since the last success (charged or not); 0 after a success.
  int64_t consecutive_failures = 0;
  // Failures not charged to failure_count: local_network ones, and those
  // beyond the first between two successes of the endpoint's address class.
  int64_t uncharged_failure_count = 0;
};

// The fields a caller gives when adding an endpoint.
struct EndpointSpec {
  std::string protocol;
  std::string address;
  int port = 0;
  std::optional<std::string> server_name;
  std::optional<std::string> alpn;
  std::optional<std::string> pin_sha256;
};

}  // namespace connmgr
