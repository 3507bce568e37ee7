// DialRequest: everything a connector needs to dial one endpoint. Built by the
// ConnectionManager from a stored Endpoint, so that connectors know nothing of
// storage or statistics.
#pragma once

#include <chrono>
#include <functional>
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
  // A host name that resolves to several addresses: they are raced inside
  // this one dial, IPv6 first and families interleaved (IPv6, IPv4, IPv6,
  // ...), the next address dialled when the one before has neither
  // succeeded nor failed after this delay (a failure starts the next at once).
  std::chrono::milliseconds attempt_delay{250};
  // Called (on the loop, possibly several times) with AF_INET or AF_INET6
  // as the dial starts on an address of that family: the caller learns the
  // address class of a dial that then fails. May be empty.
  std::function<void(int family)> on_address;
};

}  // namespace connmgr
