// Dispatcher: JSON-RPC 2.0 (https://www.jsonrpc.org/specification) over one
// line of text. It parses the line, checks the envelope, answers batches,
// checks permission for methods that change state, runs the method and
// builds the answer line.
//
// Rules it keeps:
// - "jsonrpc":"2.0" is required; members other than jsonrpc, method, params
//   and id make an Invalid Request; params must be an object or an array, and
//   arrays (positional params) are refused with invalid params.
// - Ids are echoed byte for byte (raw_id.h). An id of the wrong type is an
//   invalid request answered with a null id. Notifications (no id member) run
//   and get no answer; an invalid request is answered even without an id
//   (with id null, as the specification's "Response object" says).
// - Batches: one array line with every answer; an empty batch is one Invalid
//   Request (not an array); a batch of only notifications gets no line.
// - Nesting deeper than max_depth is an invalid request, refused while
//   parsing, before the document is built. Invalid JSON (invalid UTF-8 and
//   NUL bytes included) is a parse error.
// - A handler that throws std::exception gets an internal error with the
//   what() text.
// - Methods with changes_state run only for callers the access policy allows
//   (access.h); others get permission denied naming the method, uid and
//   admin group.
// - A notification cannot open a raw stream (Session::claim_raw): the pipe
//   starts after the answer line, and a notification gets none. Such a call
//   is ignored (its refusal is not answered either) and reported to the
//   warning hook (on_warning) with the caller's credentials.
//
// Threads: the loop's. The Dispatcher must outlive every call it started;
// `done` may be called after handle_line() returns (async methods), once.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "rpc/access.h"
#include "rpc/envelope.h"
#include "rpc/json_text.h"
#include "rpc/method.h"

namespace connmgr::rpc {

inline constexpr size_t kDefaultMaxDepth = 64;

class Dispatcher {
 public:
  // A decision of one's own on who may change state.
  using PrivilegeCheck = std::function<bool(const PeerCredentials&)>;
  // Called exactly once per line: with the answer line (no '\n'), or with
  // nullopt when nothing is to be sent (notifications).
  using Done = Reply::Done;

  // The standard rule: root, policy.daemon_uid, or members of policy.admin_gid.
  explicit Dispatcher(AccessPolicy policy, size_t max_depth = kDefaultMaxDepth);
  explicit Dispatcher(PrivilegeCheck privileged, size_t max_depth = kDefaultMaxDepth);

  // Registers a method; a later one of the same name replaces it.
  void add(Method method);
  const Method* find(std::string_view name) const;
  size_t method_count() const { return methods_.size(); }

  void set_max_depth(size_t depth) { max_depth_ = depth; }
  size_t max_depth() const { return max_depth_; }

  // One line of input, without its '\n' (and without a '\r' before it).
  void handle_line(std::string_view line, const std::shared_ptr<Session>& session, Done done);

  // Where warnings about a client's calls go (the daemon's log); none: dropped.
  using Warn = std::function<void(const std::string& message, const PeerCredentials& caller)>;
  void on_warning(Warn warn) { warn_ = std::move(warn); }

  // Calls answered since the start, by method name (registered methods;
  // "unknown" for names that are not, "invalid" for lines and requests that
  // could not be read as one), each with its success and error answers.
  // Notifications count too. Read by the daemon's metrics.
  const std::map<std::string, RequestCounts, std::less<>>& request_counts() const {
    return counts_;
  }

  // Whether `creds` may call methods that change state.
  bool allowed_to_change_state(const PeerCredentials& creds) const;

  // An error answer with a null id, for the transport's own refusals
  // (over-long line, too many clients).
  static std::string error_line(int code, const std::string& message);

 private:
  void handle_batch(std::string_view line, const std::vector<Envelope>& requests,
                    const std::shared_ptr<Session>& session, Done done);
  void handle_one(const Envelope& request, std::string_view raw_id,
                  const std::shared_ptr<Session>& session, Done done, bool in_batch = false);
  // The envelope's own rules (jsonrpc, method, params, members): an error
  // message for an invalid request, or nullopt.
  static std::optional<std::string> envelope_error(const Envelope& request);
  // Why `creds` may not call `method` (message and data), or nullopt.
  std::optional<RpcError> permission_error(const Method& method, const PeerCredentials& creds) const;
  static void run_method(const Method& method, const Envelope& request, const CallContext& ctx,
                         Reply reply);
  // run_method for a notification: a claim of the raw pipe is refused, the
  // call ignored and a warning given.
  void run_notification(const Method& method, const Envelope& request, const CallContext& ctx,
                        Reply reply);

  std::optional<AccessPolicy> policy_;  // unset: privileged_ decides
  PrivilegeCheck privileged_;
  Warn warn_;
  size_t max_depth_;
  std::map<std::string, Method, std::less<>> methods_;
  // By method name; a method's entry is made when it is added (its address
  // is kept by Replies until they answer), "unknown" and "invalid" at start.
  std::map<std::string, RequestCounts, std::less<>> counts_;
  RequestCounts* unknown_counts_;
  RequestCounts* invalid_counts_;
};

}  // namespace connmgr::rpc
