#include "rpc/dispatcher.h"

#include <vector>

#include "rpc/raw_id.h"

namespace connmgr::rpc {

namespace {

// nlohmann's own DOM builder behind a depth gate: nesting past the limit
// stops the parse before the document is built (a line of 1 MiB of '['
// would otherwise be built, then walked, recursively, by later code).
class DepthLimitedSax {
 public:
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  DepthLimitedSax(json& out, size_t max_depth) : dom_(out, false), max_depth_(max_depth) {}

  bool null() { return dom_.null(); }
  bool boolean(bool v) { return dom_.boolean(v); }
  bool number_integer(number_integer_t v) { return dom_.number_integer(v); }
  bool number_unsigned(number_unsigned_t v) { return dom_.number_unsigned(v); }
  bool number_float(number_float_t v, const string_t& s) { return dom_.number_float(v, s); }
  bool string(string_t& v) { return dom_.string(v); }
  bool binary(binary_t& v) { return dom_.binary(v); }
  bool start_object(std::size_t n) { return enter() && dom_.start_object(n); }
  bool end_object() { return --depth_, dom_.end_object(); }
  bool start_array(std::size_t n) { return enter() && dom_.start_array(n); }
  bool end_array() { return --depth_, dom_.end_array(); }
  bool key(string_t& k) { return dom_.key(k); }
  template <class Exception>
  bool parse_error(std::size_t pos, const std::string& token, const Exception& ex) {
    return dom_.parse_error(pos, token, ex);
  }

  bool too_deep = false;

 private:
  bool enter() {
    if (++depth_ > max_depth_) {
      too_deep = true;
      return false;
    }
    return true;
  }

  nlohmann::detail::json_sax_dom_parser<json> dom_;
  size_t max_depth_;
  size_t depth_ = 0;
};

bool is_envelope_member(const std::string& key) {
  return key == "jsonrpc" || key == "method" || key == "params" || key == "id";
}

}  // namespace

Dispatcher::Dispatcher(AccessPolicy policy, size_t max_depth)
    : policy_(policy), max_depth_(max_depth) {}

Dispatcher::Dispatcher(PrivilegeCheck privileged, size_t max_depth)
    : privileged_(std::move(privileged)), max_depth_(max_depth) {}

void Dispatcher::add(Method method) {
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
  json doc;
  DepthLimitedSax sax(doc, max_depth_);
  const bool parsed =
      json::sax_parse(line.begin(), line.end(), &sax, json::input_format_t::json, true);
  if (sax.too_deep) {
    done(error_answer("null", kInvalidRequest,
                      "invalid request: JSON nested deeper than " + std::to_string(max_depth_) +
                          " levels"));
    return;
  }
  if (!parsed) {
    done(error_answer("null", kParseError, "parse error: the line is not valid JSON (UTF-8)"));
    return;
  }

  if (!doc.is_array()) {
    handle_one(doc, doc.is_object() ? raw_id_of_object(line) : std::string_view{}, session,
               std::move(done));
    return;
  }
  if (doc.empty()) {
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
  batch->answers.resize(doc.size());
  batch->remaining = doc.size();
  batch->done = std::move(done);
  for (size_t i = 0; i < doc.size(); ++i) {
    const std::string_view raw_id = i < raw_ids.size() ? raw_ids[i] : std::string_view{};
    handle_one(doc[i], raw_id, session, [batch, i](std::optional<std::string> answer) {
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
    });
  }
}

void Dispatcher::handle_one(const json& req, std::string_view raw_id,
                            const std::shared_ptr<Session>& session, Done done) {
  if (!req.is_object()) {
    done(error_answer("null", kInvalidRequest, "invalid request: not an object"));
    return;
  }
  const auto id_it = req.find("id");
  const bool is_notification = id_it == req.end();
  std::string id_text = "null";
  if (!is_notification) {
    if (!(id_it->is_string() || id_it->is_number() || id_it->is_null())) {
      done(error_answer("null", kInvalidRequest,
                        "invalid request: id must be a string, a number or null"));
      return;
    }
    if (raw_id.empty())
      id_text = id_it->dump();  // not expected: the scanner finds every id
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

  const auto jv = req.find("jsonrpc");
  if (jv == req.end() || !jv->is_string() || jv->get_ref<const std::string&>() != "2.0")
    return fail(kInvalidRequest, "invalid request: \"jsonrpc\" must be \"2.0\"");
  const auto m = req.find("method");
  if (m == req.end() || !m->is_string())
    return fail(kInvalidRequest, "invalid request: \"method\" must be a string");
  const auto p = req.find("params");
  if (p != req.end() && !p->is_object() && !p->is_array())
    return fail(kInvalidRequest, "invalid request: \"params\" must be an object or an array");
  // jsonrpc and method are there; anything beyond params and id is unknown.
  const size_t known = 2 + (p != req.end()) + (is_notification ? 0 : 1);
  if (req.size() > known) {
    for (const auto& [key, value] : req.items())
      if (!is_envelope_member(key))
        return fail(kInvalidRequest, "invalid request: unknown member \"" + key + "\"");
  }

  const std::string& name = m->get_ref<const std::string&>();
  const Method* method = find(name);
  if (!method) return fail(kMethodNotFound, "method not found: " + name, json{{"method", name}});
  if (p != req.end() && p->is_array())
    return fail(kInvalidParams, "invalid params: params must be an object (named params)");
  if (method->changes_state) {
    static const PeerCredentials kUnknown;
    const PeerCredentials& creds = session ? session->credentials() : kUnknown;
    if (!allowed_to_change_state(creds)) {
      json data{{"method", name}, {"uid", creds.uid}, {"gid", creds.gid}};
      std::string message;
      if (policy_) {
        message = permission_denied_message(name, creds, *policy_);
        if (policy_->admin_gid) data["admin_group"] = *policy_->admin_gid;
      } else {
        message = "permission denied: " + name + " changes state; uid " +
                  std::to_string(creds.uid) +
                  " is not root, the daemon's user, or in the admin group";
      }
      return fail(kPermissionDenied, message, data);
    }
  }

  Reply reply([done = std::move(done), id_text = std::move(id_text), is_notification](
                  bool is_error, json payload) {
    if (is_notification) return done(std::nullopt);
    done(answer_line(id_text, is_error, payload));
  });
  static const json kNoParams = json::object();
  CallContext ctx{session};
  try {
    method->handler(p == req.end() ? kNoParams : *p, ctx, reply);
  } catch (const std::exception& e) {
    reply.error(RpcError{kInternalError, std::string("internal error: ") + e.what(), nullptr});
  } catch (...) {
    reply.error(RpcError{kInternalError, "internal error: unknown exception", nullptr});
  }
}

}  // namespace connmgr::rpc
