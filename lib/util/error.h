// The project's one error type: a code that maps to API.md §3 and a message a
// user can act on, plus an optional short stable `reason` (API.md's reason
// strings for connect failures; "locked", "read_only", "corrupt", ... for
// storage). Returned across lib/'s API, never thrown.
//
// Thread rules: plain values, no shared state.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace connmgr {

// Numbers are the JSON-RPC error codes of API.md §3, so that the daemon maps
// an Error to an answer without a table of its own.
enum class ErrorCode : int {
  kOk = 0,
  kInvalidParams = -32602,
  kInternal = -32603,
  kNodeNotFound = -32001,
  kEndpointNotFound = -32002,
  kNoUsableEndpoint = -32003,
  kUnsupportedProtocol = -32004,
  kConnectFailed = -32010,
  kCancelled = -32011,
  kStorage = -32020,
  kPermissionDenied = -32030,
  kAlreadyExists = -32040,
};

class Error {
 public:
  Error() = default;
  Error(ErrorCode code, std::string message, std::string reason = {})
      : code_(code), message_(std::move(message)), reason_(std::move(reason)) {}

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
