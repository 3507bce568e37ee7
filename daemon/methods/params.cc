#include "methods/params.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace connmgr::methods {

ParamReader::ParamReader(const rpc::json& params, std::string prefix)
    : params_(params), prefix_(std::move(prefix)) {
  if (!params_.is_object()) fail(prefix_.empty() ? "params must be an object"
                                                 : prefix_.substr(0, prefix_.size() - 1) +
                                                       " must be an object");
}

const rpc::json* ParamReader::find(std::string_view name) {
  seen_.emplace(name);
  if (failed_) return nullptr;
  auto it = params_.find(name);
  if (it == params_.end() || it->is_null()) return nullptr;
  return &*it;
}

void ParamReader::fail(std::string message) {
  if (failed_) return;
  failed_ = true;
  message_ = "invalid params: " + std::move(message);
}

void ParamReader::fail_param(std::string_view name, const std::string& what) {
  if (failed_) return;
  fail(prefix_ + std::string(name) + " must be " + what);
  param_ = prefix_ + std::string(name);
}

void ParamReader::missing(std::string_view name) {
  if (failed_) return;
  fail("missing required param " + prefix_ + std::string(name));
  param_ = prefix_ + std::string(name);
}

std::optional<std::string> ParamReader::opt_string(std::string_view name, size_t max_len) {
  const auto* v = find(name);
  if (!v) return std::nullopt;
  if (!v->is_string()) {
    fail_param(name, "a string");
    return std::nullopt;
  }
  const auto& s = v->get_ref<const std::string&>();
  if (s.empty() || s.size() > max_len) {
    fail_param(name, "a non-empty string of at most " + std::to_string(max_len) + " bytes");
    return std::nullopt;
  }
  return s;
}

std::string ParamReader::req_string(std::string_view name, size_t max_len) {
  auto v = opt_string(name, max_len);
  if (!v) missing(name);
  return v.value_or(std::string());
}

std::string ParamReader::req_address(std::string_view name) {
  // The longest address is a host name of 253 bytes and its trailing dot.
  std::string v = req_string(name, 254);
  if (ok() && !is_host_address(v)) fail_param(name, kAddressRule);
  return v;
}

std::optional<int64_t> ParamReader::opt_int(std::string_view name, int64_t min, int64_t max) {
  const auto* v = find(name);
  if (!v) return std::nullopt;
  const std::string range = "an integer from " + std::to_string(min) + " to " + std::to_string(max);
  int64_t n = 0;
  if (v->is_number_integer()) {
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      fail_param(name, range);
      return std::nullopt;
    }
    n = v->get<int64_t>();
  } else if (v->is_number_float()) {
    // 5.0 is an integer in JSON's eyes; 5.5 is not.
    // The range first: converting a double out of int64_t's range is
    // undefined behaviour (found by fuzz_methods: endpoint_id 9.2e58).
    const double d = v->get<double>();
    if (!(d >= -9.2e18 && d <= 9.2e18) || d != std::trunc(d)) {
      fail_param(name, range);
      return std::nullopt;
    }
    n = static_cast<int64_t>(d);
  } else {
    fail_param(name, range);
    return std::nullopt;
  }
  if (n < min || n > max) {
    fail_param(name, range);
    return std::nullopt;
  }
  return n;
}

int64_t ParamReader::req_int(std::string_view name, int64_t min, int64_t max) {
  auto v = opt_int(name, min, max);
  if (!v) missing(name);
  return v.value_or(0);
}

std::optional<bool> ParamReader::opt_bool(std::string_view name) {
  const auto* v = find(name);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) {
    fail_param(name, "true or false");
    return std::nullopt;
  }
  return v->get<bool>();
}

const rpc::json* ParamReader::opt_object(std::string_view name) {
  const auto* v = find(name);
  if (v && !v->is_object()) {
    fail_param(name, "an object");
    return nullptr;
  }
  return v;
}

const rpc::json* ParamReader::opt_array(std::string_view name) {
  const auto* v = find(name);
  if (v && !v->is_array()) {
    fail_param(name, "an array");
    return nullptr;
  }
  return v;
}

bool ParamReader::finish() {
  if (failed_ || !params_.is_object()) return !failed_;
  for (const auto& [key, value] : params_.items()) {
    if (!seen_.count(key)) {
      fail("unknown param " + prefix_ + key);
      param_ = prefix_ + key;
      break;
    }
  }
  return !failed_;
}

rpc::RpcError ParamReader::error() const {
  rpc::RpcError e;
  e.code = static_cast<int>(ErrorCode::kInvalidParams);
  e.message = message_;
  if (!param_.empty()) e.data = rpc::json{{"param", param_}};
  return e;
}

// --- addresses ----------------------------------------------------------------

const char* const kAddressRule =
    "an IPv4 address (192.0.2.1), an IPv6 address without brackets (2001:db8::1) or a host name "
    "(labels of letters, digits and hyphens joined by dots, each 1 to 63 bytes and not starting or "
    "ending with a hyphen, the last one not a number; 253 bytes at most, one trailing dot allowed)";

namespace {

bool is_ip_literal(std::string_view text) {
  // The longest IPv6 text, "ffff:...:255.255.255.255", has 45 bytes.
  char buf[INET6_ADDRSTRLEN + 1];
  if (text.size() >= sizeof buf) return false;
  std::copy(text.begin(), text.end(), buf);
  buf[text.size()] = '\0';
  unsigned char out[sizeof(in6_addr)];
  return inet_pton(AF_INET, buf, out) == 1 || inet_pton(AF_INET6, buf, out) == 1;
}

bool is_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

bool is_label(std::string_view label) {
  if (label.empty() || label.size() > 63) return false;
  if (label.front() == '-' || label.back() == '-') return false;
  return std::all_of(label.begin(), label.end(), [](char c) { return is_alnum(c) || c == '-'; });
}

// A label that resolvers would read as a number: decimal, or 0x hexadecimal.
bool is_number(std::string_view label) {
  if (!label.empty() && std::all_of(label.begin(), label.end(), is_digit)) return true;
  return label.size() >= 2 && label[0] == '0' && (label[1] == 'x' || label[1] == 'X') &&
         std::all_of(label.begin() + 2, label.end(), is_hex);
}

bool is_host_name(std::string_view name) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (name.empty() || name.size() > 253) return false;
  std::string_view last;
  for (size_t start = 0;;) {
    const size_t dot = name.find('.', start);
    last = name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (!is_label(last)) return false;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return !is_number(last);
}

}  // namespace

bool is_host_address(std::string_view text) { return is_ip_literal(text) || is_host_name(text); }

}  // namespace connmgr::methods
