#include "rpc/envelope.h"

#include <cstring>

namespace connmgr::rpc {

namespace {

using Type = Envelope::Type;

enum class Member { kJsonrpc, kMethod, kParams, kId, kUnknown };

Member member_of(const std::string& key) {
  if (key == "jsonrpc") return Member::kJsonrpc;
  if (key == "method") return Member::kMethod;
  if (key == "params") return Member::kParams;
  if (key == "id") return Member::kId;
  return Member::kUnknown;
}

// nlohmann SAX events to envelopes. The request objects sit at depth 1 (a
// single request) or 2 (the elements of a batch). Inside a request, `params`
// is handed to nlohmann's own DOM builder; the values of other members are
// taken by type (and text, for jsonrpc and method), their insides skipped.
// Every container counts towards the depth limit, whatever is done with it.
class EnvelopeSax {
 public:
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  EnvelopeSax(ParsedLine& out, size_t max_depth) : out_(out), max_depth_(max_depth) {}

  bool null() {
    if (mode_ == Mode::kCapture) return dom_->null();
    return scalar(Type::kNull, [] { return json(nullptr); });
  }
  bool boolean(bool v) {
    if (mode_ == Mode::kCapture) return dom_->boolean(v);
    return scalar(Type::kBool, [v] { return json(v); });
  }
  bool number_integer(number_integer_t v) {
    if (mode_ == Mode::kCapture) return dom_->number_integer(v);
    return scalar(Type::kNumber, [v] { return json(v); });
  }
  bool number_unsigned(number_unsigned_t v) {
    if (mode_ == Mode::kCapture) return dom_->number_unsigned(v);
    return scalar(Type::kNumber, [v] { return json(v); });
  }
  bool number_float(number_float_t v, const string_t& s) {
    if (mode_ == Mode::kCapture) return dom_->number_float(v, s);
    return scalar(Type::kNumber, [v] { return json(v); });
  }
  bool string(string_t& v) {
    if (mode_ == Mode::kCapture) return dom_->string(v);
    if (mode_ == Mode::kStructure && started_ && at_member()) {
      // jsonrpc and method keep their text (moved: no copy of the lexer's).
      Envelope& e = out_.requests.back();
      if (member_ == Member::kJsonrpc) {
        e.jsonrpc = Type::kString;
        e.jsonrpc_text = std::move(v);
        return true;
      }
      if (member_ == Member::kMethod) {
        e.method = Type::kString;
        e.method_name = std::move(v);
        return true;
      }
    }
    return scalar(Type::kString, [&v] { return json(std::move(v)); });
  }
  bool binary(binary_t& v) {
    if (mode_ == Mode::kCapture) return dom_->binary(v);
    return true;  // not produced by JSON text
  }
  bool start_object(std::size_t n) { return start(Type::kObject, n); }
  bool start_array(std::size_t n) { return start(Type::kArray, n); }
  bool end_object() { return end(Type::kObject); }
  bool end_array() { return end(Type::kArray); }
  bool key(string_t& k) {
    if (mode_ == Mode::kCapture) return dom_->key(k);
    if (mode_ == Mode::kSkip || depth_ != request_depth_) return true;
    member_ = member_of(k);
    if (member_ == Member::kUnknown) {
      auto& unknown = out_.requests.back().unknown_member;
      if (!unknown || k < *unknown) unknown = k;
    }
    return true;
  }
  template <class Exception>
  bool parse_error(std::size_t, const std::string&, const Exception&) {
    return false;
  }

  bool too_deep = false;

 private:
  enum class Mode { kStructure, kSkip, kCapture };

  // Where a value that begins now sits: a request of its own, or the value
  // of a request's member.
  bool at_request() const { return started_ && depth_ + 1 == request_depth_; }
  bool at_member() const { return depth_ == request_depth_; }

  void decide_shape(Type first) {
    if (started_) return;
    started_ = true;
    out_.is_batch = first == Type::kArray;
    request_depth_ = out_.is_batch ? 2 : 1;
  }

  // A scalar outside params; `make` gives its value where it is kept.
  template <class MakeJson>
  bool scalar(Type t, MakeJson make) {
    if (mode_ == Mode::kSkip) return true;
    decide_shape(t);
    if (at_request()) {
      out_.requests.emplace_back();  // not an object
      return true;
    }
    if (!at_member()) return true;
    Envelope& e = out_.requests.back();
    note_member_type(e, t);
    if (member_ == Member::kId) e.id_value = t == Type::kBool ? json() : make();
    if (member_ == Member::kParams) e.params_value = make();
    return true;
  }

  // The type of the member whose value begins now (the envelope's checks
  // need only that for jsonrpc and method).
  void note_member_type(Envelope& e, Type t) const {
    switch (member_) {
      case Member::kId:
        e.id = t;
        break;
      case Member::kJsonrpc:
        e.jsonrpc = t;
        break;
      case Member::kMethod:
        e.method = t;
        break;
      case Member::kParams:
        e.params = t;
        break;
      case Member::kUnknown:
        break;
    }
  }

  bool start(Type t, std::size_t n) {
    if (++depth_ > max_depth_) {
      too_deep = true;
      return false;
    }
    if (mode_ == Mode::kCapture)
      return t == Type::kObject ? dom_->start_object(n) : dom_->start_array(n);
    if (mode_ == Mode::kSkip) return true;
    const bool first = !started_;
    decide_shape(t);
    if (first && out_.is_batch) return true;  // the batch's own array
    --depth_;  // where the container begins
    const bool request = at_request();
    const bool member = at_member();
    ++depth_;
    if (request) {
      out_.requests.emplace_back();
      if (t == Type::kObject) {
        out_.requests.back().is_object = true;
        return true;
      }
      return skip();  // an array where a request should be
    }
    if (!member) return skip();
    Envelope& e = out_.requests.back();
    note_member_type(e, t);
    if (member_ == Member::kParams) {
      e.params_value = json();
      dom_.emplace(e.params_value, false);
      mode_ = Mode::kCapture;
      return t == Type::kObject ? dom_->start_object(n) : dom_->start_array(n);
    }
    if (member_ == Member::kId) e.id_value = json();
    return skip();
  }

  // Ignores everything up to the end of the container just begun.
  bool skip() {
    mode_ = Mode::kSkip;
    skip_until_ = depth_ - 1;
    return true;
  }

  bool end(Type t) {
    --depth_;
    if (mode_ == Mode::kCapture) {
      const bool ok = t == Type::kObject ? dom_->end_object() : dom_->end_array();
      if (depth_ == request_depth_) {
        mode_ = Mode::kStructure;
        dom_.reset();
      }
      return ok;
    }
    if (mode_ == Mode::kSkip && depth_ == skip_until_) mode_ = Mode::kStructure;
    return true;
  }

  ParsedLine& out_;
  size_t max_depth_;
  size_t depth_ = 0;
  size_t request_depth_ = 1;
  size_t skip_until_ = 0;
  bool started_ = false;
  Mode mode_ = Mode::kStructure;
  Member member_ = Member::kUnknown;
  std::optional<nlohmann::detail::json_sax_dom_parser<json>> dom_;
};

}  // namespace

void parse_line(std::string_view line, size_t max_depth, ParsedLine& out) {
  out.requests.clear();
  out.is_batch = false;
  // nlohmann's lexer takes a NUL byte outside a string for the end of the
  // input (as the end of a C string), whatever the iterators say: the line
  // `123\0` would parse as 123, and a request followed by `\0garbage` would
  // be served. A raw NUL is never valid JSON (inside a string too, control
  // characters must be escaped), so such a line is invalid as a whole.
  if (memchr(line.data(), '\0', line.size()) != nullptr) {
    out.outcome = ParsedLine::Outcome::kInvalidJson;
    return;
  }
  EnvelopeSax sax(out, max_depth);
  const bool parsed =
      json::sax_parse(line.begin(), line.end(), &sax, json::input_format_t::json, true);
  out.outcome = sax.too_deep ? ParsedLine::Outcome::kTooDeep
                : parsed     ? ParsedLine::Outcome::kOk
                             : ParsedLine::Outcome::kInvalidJson;
}

}  // namespace connmgr::rpc
