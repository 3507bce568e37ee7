// The project's one error type: a code (one of the JSON-RPC error codes that
// docs/api.md lists) and a message a user can act on, plus an optional short
// stable `reason` (the failure reasons of net/failure_reason.h for connect
// failures; "locked", "read_only", "corrupt", ... for storage). Returned
// across lib/'s API, never thrown.
//
// Thread rules: plain values, no shared state.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace connmgr {

// The JSON-RPC 2.0 error codes the daemon answers with (docs/api.md,
// "Errors"), spelled here and nowhere else: -32768..-32000 are JSON-RPC's own
// (-32099..-32000 for the server's), so that the daemon maps an Error to an
// answer without a table of its own.
enum class ErrorCode : int {
  kOk = 0,
  // JSON-RPC 2.0's standard codes.
  kParseError = -32700,
  kInvalidRequest = -32600,
  kMethodNotFound = -32601,
  kInvalidParams = -32602,
  kInternal = -32603,
  // connmgr's server codes.
  kNodeNotFound = -32001,
  kEndpointNotFound = -32002,
  kNoUsableEndpoint = -32003,
  kUnsupportedProtocol = -32004,
  kConnectFailed = -32010,
  kCancelled = -32011,
  kStreamRefused = -32012,
  kStorage = -32020,
  kPermissionDenied = -32030,
  kAlreadyExists = -32040,
};

// The range of server-defined codes, whose answers carry `data`.
inline constexpr int kServerErrorFirst = -32099;
inline constexpr int kServerErrorLast = -32000;

class Error {
 public:
  Error() = default;
  Error(ErrorCode code, std::string message, std::string reason = {})
      : code_(code), message_(std::move(message)), reason_(std::move(reason)) {}

  // Named constructors, one per kind of failure (as LevelDB's Status::NotFound):
  // callers say what went wrong, the code and the wording live here.
  static Error node_not_found(const std::string& node_id) {
    return Error(ErrorCode::kNodeNotFound, "node '" + node_id + "' not found");
  }
  static Error endpoint_not_found(long long endpoint_id) {
    return Error(ErrorCode::kEndpointNotFound, "endpoint " + std::to_string(endpoint_id) + " not found");
  }
  static Error no_usable_endpoint(std::string message) {
    return Error(ErrorCode::kNoUsableEndpoint, std::move(message));
  }
  // `reason` is the protocol, which the daemon's answer names in its data.
  static Error unsupported_protocol(const std::string& protocol, std::string message = {}) {
    if (message.empty()) message = "unsupported protocol '" + protocol + "': no connector for it";
    return Error(ErrorCode::kUnsupportedProtocol, std::move(message), protocol);
  }
  // `reason`: one of the failure reasons of net/failure_reason.h.
  static Error connect_failed(std::string message, std::string reason) {
    return Error(ErrorCode::kConnectFailed, std::move(message), std::move(reason));
  }
  static Error cancelled(std::string message, std::string reason = {}) {
    return Error(ErrorCode::kCancelled, std::move(message), std::move(reason));
  }
  // The link is up but no stream could be opened over it. `reason`: "limit"
  // (max_streams), "stream_limit" (the peer's credit never came), "link_lost",
  // "refused" (the stream's own TCP dial failed).
  static Error stream_refused(std::string message, std::string reason) {
    return Error(ErrorCode::kStreamRefused, std::move(message), std::move(reason));
  }
  // `reason`: "locked", "read_only", "corrupt", ... (storage/store.h).
  static Error storage(std::string message, std::string reason = {}) {
    return Error(ErrorCode::kStorage, std::move(message), std::move(reason));
  }
  static Error already_exists(std::string message) {
    return Error(ErrorCode::kAlreadyExists, std::move(message));
  }
  static Error invalid_params(std::string message) {
    return Error(ErrorCode::kInvalidParams, std::move(message));
  }
  static Error permission_denied(std::string message) {
    return Error(ErrorCode::kPermissionDenied, std::move(message));
  }
  static Error internal(std::string message) { return Error(ErrorCode::kInternal, std::move(message)); }

  ErrorCode code() const { return code_; }
  int rpc_code() const { return static_cast<int>(code_); }
  const std::string& message() const { return message_; }
  // Short stable word for scripts ("refused", "locked", ...); may be empty.
  const std::string& reason() const { return reason_; }
  bool ok() const { return code_ == ErrorCode::kOk; }

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
  std::string reason_;
};

// Status: an Error that may be "ok".
using Status = Error;
inline Status ok_status() { return Status(); }

// Result<T>: a value or an Error.
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {  // NOLINT: implicit by design
    assert(!std::get<Error>(v_).ok());
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return ok(); }

  const T& value() const& { return std::get<T>(v_); }
  T& value() & { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  const T& operator*() const& { return value(); }
  T& operator*() & { return value(); }
  const T* operator->() const { return &value(); }
  T* operator->() { return &value(); }

  // The error; only meaningful when !ok().
  const Error& error() const { return std::get<Error>(v_); }

 private:
  std::variant<T, Error> v_;
};

}  // namespace connmgr
