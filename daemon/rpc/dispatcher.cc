#include "rpc/dispatcher.h"

#include <utility>
#include <vector>

#include "rpc/envelope.h"
#include "rpc/raw_id.h"

namespace connmgr::rpc {

Dispatcher::Dispatcher(AccessPolicy policy, size_t max_depth)
    : policy_(policy),
      max_depth_(max_depth),
      unknown_counts_(&counts_["unknown"]),
      invalid_counts_(&counts_["invalid"]) {}

Dispatcher::Dispatcher(PrivilegeCheck privileged, size_t max_depth)
    : privileged_(std::move(privileged)),
      max_depth_(max_depth),
      unknown_counts_(&counts_["unknown"]),
      invalid_counts_(&counts_["invalid"]) {}

void Dispatcher::add(Method method) {
  counts_.try_emplace(method.name);
  std::string name = method.name;
  methods_.insert_or_assign(std::move(name), std::move(method));
}

const Method* Dispatcher::find(std::string_view name) const {
  auto it = methods_.find(name);
  return it == methods_.end() ? nullptr : &it->second;
}

bool Dispatcher::allowed_to_change_state(const PeerCredentials& creds) const {
  if (policy_) return may_change_state(creds, *policy_);
  return privileged_ && privileged_(creds);
}

std::string Dispatcher::error_line(int code, const std::string& message) {
  return error_answer("null", code, message);
}

void Dispatcher::handle_line(std::string_view line, const std::shared_ptr<Session>& session,
                             Done done) {
  ParsedLine parsed;
  parse_line(line, max_depth_, parsed);
  if (parsed.outcome != ParsedLine::Outcome::kOk) ++invalid_counts_->error;
  if (parsed.outcome == ParsedLine::Outcome::kTooDeep) {
    done(error_answer("null", kInvalidRequest,
                      "invalid request: JSON nested deeper than " + std::to_string(max_depth_) +
                          " levels"));
    return;
  }
  if (parsed.outcome != ParsedLine::Outcome::kOk) {
    done(error_answer("null", kParseError, "parse error: the line is not valid JSON (UTF-8)"));
    return;
  }

  if (!parsed.is_batch) {
    const Envelope& req = parsed.requests.front();
    handle_one(req, req.is_object ? raw_id_of_object(line) : std::string_view{}, session,
               std::move(done));
    return;
  }
  handle_batch(line, parsed.requests, session, std::move(done));
}

void Dispatcher::handle_batch(std::string_view line, const std::vector<Envelope>& requests,
                              const std::shared_ptr<Session>& session, Done done) {
  if (requests.empty()) {
    ++invalid_counts_->error;
    done(error_answer("null", kInvalidRequest, "invalid request: empty batch"));
    return;
  }
  std::vector<std::string_view> raw_ids;
  raw_ids_of_batch(line, raw_ids);

  // One array line once every member has answered (members may be async);
  // no line at all when every member was a notification.
  struct Batch {
    std::vector<std::optional<std::string>> answers;
    size_t remaining;
    Done done;
  };
  auto batch = std::make_shared<Batch>();
  batch->answers.resize(requests.size());
  batch->remaining = requests.size();
  batch->done = std::move(done);
  for (size_t i = 0; i < requests.size(); ++i) {
    const std::string_view raw_id = i < raw_ids.size() ? raw_ids[i] : std::string_view{};
    handle_one(requests[i], raw_id, session, [batch, i](std::optional<std::string> answer) {
      batch->answers[i] = std::move(answer);
      if (--batch->remaining != 0) return;
      std::string out;
      for (auto& a : batch->answers) {
        if (!a) continue;
        out += out.empty() ? '[' : ',';
        out += *a;
      }
      if (out.empty()) return batch->done(std::nullopt);
      out += ']';
      batch->done(std::move(out));
    }, true);
  }
}

void Dispatcher::handle_one(const Envelope& req, std::string_view raw_id,
                            const std::shared_ptr<Session>& session, Done done, bool in_batch) {
  using Type = Envelope::Type;
  if (!req.is_object) {
    ++invalid_counts_->error;
    done(error_answer("null", kInvalidRequest, "invalid request: not an object"));
    return;
  }
  const bool is_notification = !req.has_id();
  std::string id_text = "null";
  if (!is_notification) {
    if (req.id != Type::kString && req.id != Type::kNumber && req.id != Type::kNull) {
      ++invalid_counts_->error;
      done(error_answer("null", kInvalidRequest,
                        "invalid request: id must be a string, a number or null"));
      return;
    }
    if (raw_id.empty())
      id_text = req.id_value.dump();  // not expected: the scanner finds every id
    else
      id_text.assign(raw_id);
  }
  auto fail = [&](int code, std::string_view message, const json& data = nullptr) {
    // An invalid request is answered even without an id: the client cannot
    // have meant it to pass in silence (the specification's own example
    // answers {"jsonrpc":"2.0","method":1,"params":"bar"}). Other errors of
    // a notification are not answered.
    if (is_notification && code != kInvalidRequest) return done(std::nullopt);
    done(error_answer(id_text, code, message, data));
  };

  if (auto invalid = envelope_error(req)) {
    ++invalid_counts_->error;
    return fail(kInvalidRequest, *invalid);
  }
  const std::string& name = req.method_name;
  const Method* method = find(name);
  if (!method) {
    ++unknown_counts_->error;
    return fail(kMethodNotFound, "method not found: " + name, json{{"method", name}});
  }
  RequestCounts& counts = counts_.find(name)->second;
  if (req.params == Type::kArray) {
    ++counts.error;
    return fail(kInvalidParams, "invalid params: params must be an object (named params)");
  }
  if (method->changes_state) {
    static const PeerCredentials kUnknown;
    if (auto denied = permission_error(*method, session ? session->credentials() : kUnknown)) {
      ++counts.error;
      return fail(denied->code, denied->message, denied->data);
    }
  }
  Reply reply(std::move(id_text), is_notification, std::move(done));
  reply.count_into(&counts);
  if (is_notification && session)
    run_notification(*method, req, CallContext{session, in_batch}, std::move(reply));
  else
    run_method(*method, req, CallContext{session, in_batch}, std::move(reply));
}

void Dispatcher::run_notification(const Method& method, const Envelope& req, const CallContext& ctx,
                                  Reply reply) {
  Session& session = *ctx.session;
  session.running_notification_ = true;
  session.raw_refused_ = false;
  run_method(method, req, ctx, std::move(reply));
  session.running_notification_ = false;
  if (!std::exchange(session.raw_refused_, false) || !warn_) return;
  warn_(method.name + " sent as a notification (no id) ignored: it opens a raw stream after its "
        "answer line, and a notification gets no answer",
        session.credentials());
}

std::optional<std::string> Dispatcher::envelope_error(const Envelope& req) {
  using Type = Envelope::Type;
  if (req.jsonrpc != Type::kString || req.jsonrpc_text != "2.0")
    return "invalid request: \"jsonrpc\" must be \"2.0\"";
  if (req.method != Type::kString) return "invalid request: \"method\" must be a string";
  if (req.params != Type::kAbsent && req.params != Type::kObject && req.params != Type::kArray)
    return "invalid request: \"params\" must be an object or an array";
  if (req.unknown_member) return "invalid request: unknown member \"" + *req.unknown_member + "\"";
  return std::nullopt;
}

std::optional<RpcError> Dispatcher::permission_error(const Method& method,
                                                     const PeerCredentials& creds) const {
  if (allowed_to_change_state(creds)) return std::nullopt;
  const std::string& name = method.name;
  RpcError e{kPermissionDenied, {}, json{{"method", name}, {"uid", creds.uid}, {"gid", creds.gid}}};
  if (policy_) {
    e.message = permission_denied_message(name, creds, *policy_);
    if (policy_->admin_gid) e.data["admin_group"] = *policy_->admin_gid;
  } else {
    e.message = "permission denied: " + name + " changes state; uid " + std::to_string(creds.uid) +
                " is not root, the daemon's user, or in the admin group";
  }
  return e;
}

void Dispatcher::run_method(const Method& method, const Envelope& req, const CallContext& ctx,
                            Reply reply) {
  static const json kNoParams = json::object();
  try {
    method.handler(req.params != Envelope::Type::kAbsent ? req.params_value : kNoParams, ctx, reply);
  } catch (const std::exception& e) {
    reply.error(RpcError{kInternalError, std::string("internal error: ") + e.what(), nullptr});
  } catch (...) {
    reply.error(RpcError{kInternalError, "internal error: unknown exception", nullptr});
  }
}

}  // namespace connmgr::rpc
