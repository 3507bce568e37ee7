// DialRequest: everything a connector needs to dial one endpoint. Built by the
// ConnectionManager from a stored Endpoint, so that connectors know nothing of
// storage or statistics.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace connmgr {

struct DialRequest {
  std::string node_id;
  int64_t endpoint_id = 0;
  std::string protocol;
  std::string address;  // IPv4/IPv6 literal or host name
  int port = 0;
  std::optional<std::string> server_name;  // QUIC: SNI and verification name
  std::optional<std::string> alpn;         // QUIC: ALPN; connector default when empty
  std::optional<std::string> pin_sha256;   // QUIC: base64 SHA-256 of the peer's SPKI
  // The whole dial (resolution, every address, handshake) must end within it.
  std::chrono::milliseconds timeout{10000};
};

}  // namespace connmgr
