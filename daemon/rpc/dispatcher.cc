#include "rpc/dispatcher.h"

#include <vector>

namespace connmgr::rpc {

namespace {

constexpr int kParseError = -32700;
constexpr int kInvalidRequest = -32600;
constexpr int kMethodNotFound = -32601;
constexpr int kInvalidParams = -32602;
constexpr int kInternalError = -32603;
constexpr int kPermissionDenied = -32030;

// Builds the DOM through nlohmann's own SAX DOM builder, and on the way
// (a) refuses nesting deeper than the limit before it is built and
// (b) keeps the raw text of number ids: of the request's "id", or of each
// batch member's "id", which nlohmann would otherwise round through double.
class RequestSax : public nlohmann::json_sax<json> {
 public:
  RequestSax(json& out, size_t max_depth) : dom_(out, false), max_depth_(max_depth) {}

  bool null() override { return value(), dom_.null(); }
  bool boolean(bool v) override { return value(), dom_.boolean(v); }
  bool number_integer(number_integer_t v) override { return value(), dom_.number_integer(v); }
  bool number_unsigned(number_unsigned_t v) override { return value(), dom_.number_unsigned(v); }
  bool number_float(number_float_t v, const string_t& s) override {
    if (at_id_) raw_ids[element_] = s;
    return value(), dom_.number_float(v, s);
  }
  bool string(string_t& v) override { return value(), dom_.string(v); }
  bool binary(binary_t& v) override { return value(), dom_.binary(v); }
  bool start_object(std::size_t n) override { return open() && dom_.start_object(n); }
  bool end_object() override { return close(), dom_.end_object(); }
  bool start_array(std::size_t n) override {
    if (depth_ == 0) root_array_ = true;
    return open() && dom_.start_array(n);
  }
  bool end_array() override { return close(), dom_.end_array(); }
  bool key(string_t& k) override {
    at_id_ = k == "id" && ((depth_ == 1 && !root_array_) || (depth_ == 2 && root_array_));
    return dom_.key(k);
  }
  bool parse_error(std::size_t pos, const std::string& tok,
                   const nlohmann::detail::exception& ex) override {
    parse_failed = true;
    return dom_.parse_error(pos, tok, ex);
  }

  std::map<int, std::string> raw_ids;  // batch member index (-1: single) -> text
  bool too_deep = false;
  bool parse_failed = false;

 private:
  // A value begins: count batch members.
  void value() {
    if (root_array_ && depth_ == 1) ++element_;
    at_id_ = false;
  }
  bool open() {
    value();
    if (++depth_ > max_depth_) {
      too_deep = true;
      return false;  // stops the parse
    }
    return true;
  }
  void close() { --depth_; }

  nlohmann::detail::json_sax_dom_parser<json> dom_;
  size_t max_depth_;
  size_t depth_ = 0;
  bool root_array_ = false;
  bool at_id_ = false;
  int element_ = -1;
};

std::string answer_line(const std::string& id_text, bool is_error, const json& payload) {
  std::string out;
  out.reserve(64);
  out += R"({"jsonrpc":"2.0","id":)";
  out += id_text;
  out += is_error ? R"(,"error":)" : R"(,"result":)";
  out += payload.dump(-1, ' ', false, json::error_handler_t::replace);
  out += '}';
  return out;
}

std::string error_answer(const std::string& id_text, int code, const std::string& message,
                         json data = nullptr) {
  json e{{"code", code}, {"message", message}};
  if (!data.is_null()) e["data"] = std::move(data);
  return answer_line(id_text, true, e);
}

}  // namespace

Dispatcher::Dispatcher(PrivilegeCheck privileged, size_t max_depth)
    : privileged_(std::move(privileged)), max_depth_(max_depth) {}

void Dispatcher::add(Method method) {
  std::string name = method.name;
  methods_[std::move(name)] = std::move(method);
}

std::string Dispatcher::error_line(int code, const std::string& message) {
  return error_answer("null", code, message);
}

void Dispatcher::handle_line(std::string_view line, const std::shared_ptr<Session>& session,
                             Done done) {
  json doc;
  RequestSax sax(doc, max_depth_);
  const bool parsed = json::sax_parse(line.begin(), line.end(), &sax, json::input_format_t::json, true);
  if (sax.too_deep) {
    done(error_answer("null", kInvalidRequest,
                      "invalid request: JSON nested deeper than " + std::to_string(max_depth_) + " levels"));
    return;
  }
  if (!parsed || sax.parse_failed) {
    done(error_answer("null", kParseError, "parse error: the line is not valid JSON (UTF-8)"));
    return;
  }
  CallContext ctx{session};

  if (!doc.is_array()) {
    auto it = sax.raw_ids.find(-1);
    handle_one(doc, it == sax.raw_ids.end() ? nullptr : &it->second, ctx, std::move(done));
    return;
  }
  if (doc.empty()) {
    done(error_answer("null", kInvalidRequest, "invalid request: empty batch"));
    return;
  }
  // A batch: one array line once every member has answered; no line at all
  // when every member was a notification.
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
    auto it = sax.raw_ids.find(static_cast<int>(i));
    handle_one(doc[i], it == sax.raw_ids.end() ? nullptr : &it->second, ctx,
               [batch, i](std::optional<std::string> answer) {
                 batch->answers[i] = std::move(answer);
                 if (--batch->remaining != 0) return;
                 std::string out;
                 for (auto& a : batch->answers) {
                   if (!a) continue;
                   out += out.empty() ? "[" : ",";
                   out += *a;
                 }
                 if (out.empty()) return batch->done(std::nullopt);
                 out += "]";
                 batch->done(std::move(out));
               });
  }
}

void Dispatcher::handle_one(const json& req, const std::string* raw_id, const CallContext& ctx,
                            std::function<void(std::optional<std::string>)> done) {
  if (!req.is_object()) {
    done(error_answer("null", kInvalidRequest, "invalid request: not an object"));
    return;
  }
  // The id, as text to splice into the answer.
  const auto id_it = req.find("id");
  const bool is_notification = id_it == req.end();
  std::string id_text = "null";
  if (!is_notification) {
    if (!(id_it->is_string() || id_it->is_number() || id_it->is_null())) {
      done(error_answer("null", kInvalidRequest, "invalid request: id must be a string, number or null"));
      return;
    }
    id_text = raw_id ? *raw_id : id_it->dump();
  }
  auto fail = [&](int code, const std::string& message, json data = nullptr) {
    // Envelope errors are answered even for notifications: the client could
    // not have meant a malformed request to pass in silence (JSON-RPC 2.0 §5
    // answers Invalid Request with a null id).
    if (is_notification && code != kInvalidRequest) return done(std::nullopt);
    done(error_answer(id_text, code, message, std::move(data)));
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
  for (const auto& [key, value] : req.items()) {
    if (key != "jsonrpc" && key != "method" && key != "params" && key != "id")
      return fail(kInvalidRequest, "invalid request: unknown member \"" + key + "\"");
  }

  const std::string& name = m->get_ref<const std::string&>();
  auto method = methods_.find(name);
  if (method == methods_.end())
    return fail(kMethodNotFound, "method not found: " + name, json{{"method", name}});
  if (p != req.end() && p->is_array())
    return fail(kInvalidParams, "invalid params: params must be an object (named params)");
  if (method->second.changes_state) {
    const PeerCredentials creds = ctx.session ? ctx.session->credentials() : PeerCredentials{};
    if (!privileged_ || !privileged_(creds))
      return fail(kPermissionDenied,
                  "permission denied: " + name + " changes state; uid " + std::to_string(creds.uid) +
                      " is not root, the daemon's user, or in its admin group",
                  json{{"method", name}, {"uid", creds.uid}});
  }

  Reply reply([done, id_text, is_notification](bool is_error, json payload) {
    if (is_notification) return done(std::nullopt);
    done(answer_line(id_text, is_error, payload));
  });
  static const json kNoParams = json::object();
  try {
    method->second.handler(p == req.end() ? kNoParams : *p, ctx, reply);
  } catch (const std::exception& e) {
    reply.error(RpcError{kInternalError, std::string("internal error: ") + e.what(), nullptr});
  }
}

}  // namespace connmgr::rpc
