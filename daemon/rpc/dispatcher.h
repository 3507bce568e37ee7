// Dispatcher: JSON-RPC 2.0 (https://www.jsonrpc.org/specification) over one
// line of text: parses it, checks the envelope, runs the method, and builds
// the answer line, batches included.
//
// Ids are echoed byte for byte: numbers that JSON allows but a double cannot
// hold (12345678901234567890123, 1.50) are copied from the request's text.
// Nesting deeper than max_depth is refused before it is built.
//
// Threads: the loop's. The Dispatcher must outlive every call it started;
// `done` may be called after handle_line() returns (async methods).
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "rpc/method.h"

namespace connmgr::rpc {

class Dispatcher {
 public:
  // Whether a caller may run methods that change state.
  using PrivilegeCheck = std::function<bool(const PeerCredentials&)>;
  // Called exactly once per line: with the answer line (no '\n'), or with
  // nullopt when nothing is to be sent (notifications).
  using Done = std::function<void(std::optional<std::string> answer)>;

  explicit Dispatcher(PrivilegeCheck privileged, size_t max_depth = 64);

  void add(Method method);
  void set_max_depth(size_t depth) { max_depth_ = depth; }

  void handle_line(std::string_view line, const std::shared_ptr<Session>& session, Done done);

  // An error answer with a null id, for the transport's own refusals
  // (over-long line, too many clients).
  static std::string error_line(int code, const std::string& message);

 private:
  struct Call;
  void handle_one(const json& request, const std::string* raw_id, const CallContext& ctx,
                  std::function<void(std::optional<std::string>)> done);

  PrivilegeCheck privileged_;
  size_t max_depth_;
  std::map<std::string, Method, std::less<>> methods_;
};

}  // namespace connmgr::rpc
