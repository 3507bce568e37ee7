// The closed set of short, stable failure reasons (docs/api.md,
// "FailureReason" and "DisconnectReason"), produced in
// this one place: `refused`, `timeout`, `unreachable`, `local_network`,
// `reset`, `dns`, `tls`, `pin_mismatch`, `handshake`, `closed`,
// `idle_timeout`, `cancelled`, or an errno name ("EMFILE") for anything else.
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
// "refused", UV_ETIMEDOUT → "timeout", UV_EHOSTUNREACH → "unreachable" (the
// network answered: that host cannot be reached), UV_ENETUNREACH,
// UV_ENETDOWN, UV_EADDRNOTAVAIL, UV_EAFNOSUPPORT → "local_network" (this
// host has no route to that network, its interface is down, it has no
// source address of the family, or the family is not configured here),
// UV_ECONNRESET/UV_EPIPE/UV_ECONNABORTED → "reset", UV_EAI_* → "dns",
// UV_EOF → "closed", UV_ECANCELED → "cancelled", anything else → its errno
// name ("EMFILE").
std::string from_uv(int uv_error);

// A libuv error in words for a message, with its errno name so that the
// exact cause reaches the log even when the reason is a class:
// "network is unreachable (ENETUNREACH)".
std::string describe_uv(int uv_error);

}  // namespace connmgr::reason
