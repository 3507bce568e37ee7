// The closed set of short, stable failure reasons (docs/api.md,
// "FailureReason" and "DisconnectReason"), produced in
// this one place: `refused`, `timeout`, `unreachable`, `reset`, `dns`, `tls`,
// `pin_mismatch`, `handshake`, `closed`, `idle_timeout`, `cancelled`, or an
// errno name ("EMFILE") for anything else.
#pragma once

#include <string>

namespace connmgr::reason {

inline constexpr const char* kRefused = "refused";
inline constexpr const char* kTimeout = "timeout";
inline constexpr const char* kUnreachable = "unreachable";
inline constexpr const char* kReset = "reset";
inline constexpr const char* kDns = "dns";
inline constexpr const char* kTls = "tls";
inline constexpr const char* kPinMismatch = "pin_mismatch";
inline constexpr const char* kHandshake = "handshake";
inline constexpr const char* kClosed = "closed";
inline constexpr const char* kIdleTimeout = "idle_timeout";
inline constexpr const char* kCancelled = "cancelled";
// The dial failed for a reason on this host (no route, network unreachable or
// down, no usable source address, address family not configured): not the
// endpoint's fault, so not charged to its failure_count.
inline constexpr const char* kLocalNetwork = "local_network";
// Reasons a link ends for on our side (events' `disconnected`).
inline constexpr const char* kRequested = "requested";
inline constexpr const char* kShutdown = "shutdown";

// Maps a libuv error (negative UV_E* value) to a reason: UV_ECONNREFUSED →
// "refused", UV_ETIMEDOUT → "timeout", UV_ENETUNREACH/UV_EHOSTUNREACH →
// "unreachable", UV_ECONNRESET/UV_EPIPE → "reset", UV_EAI_* → "dns",
// UV_EOF → "closed", anything else → its errno name ("EMFILE").
std::string from_uv(int uv_error);

}  // namespace connmgr::reason
