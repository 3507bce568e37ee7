// PeerIdentity: how a QUIC peer's certificate is judged (an endpoint's
// server_name and pin_sha256; docs/guide.md, "QUIC and peer identity"). With a pin, the peer is accepted if and only if
// base64(SHA-256(SubjectPublicKeyInfo)) of its leaf certificate equals the
// pin, self-signed or not; without one, the chain must verify against the
// trust store and the certificate must name the expected host (or IP).
#pragma once

#include <gnutls/gnutls.h>

#include <optional>
#include <string>

namespace connmgr::quic {

enum class Verdict { kAccepted, kPinMismatch, kUntrusted };

// Judges the peer of a session whose handshake has received the server's
// certificate. `detail` receives a human explanation on failure.
Verdict judge_peer(gnutls_session_t session, const std::string& expected_name,
                   const std::optional<std::string>& pin_sha256, std::string* detail);

// base64(SHA-256(SPKI DER)) of a DER certificate; empty on failure.
std::string spki_pin_of(const gnutls_datum_t& der_certificate);

}  // namespace connmgr::quic
