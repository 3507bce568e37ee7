#include "methods/params.h"

#include <cmath>

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

void ParamReader::fail_type(std::string_view name, const char* what) {
  if (failed_) return;
  fail(prefix_ + std::string(name) + " must be " + what);
  param_ = prefix_ + std::string(name);
}

std::optional<std::string> ParamReader::opt_string(std::string_view name, size_t max_len) {
  const auto* v = find(name);
  if (!v) return std::nullopt;
  if (!v->is_string()) {
    fail_type(name, "a string");
    return std::nullopt;
  }
  const auto& s = v->get_ref<const std::string&>();
  if (s.empty() || s.size() > max_len) {
    fail_type(name, ("a non-empty string of at most " + std::to_string(max_len) + " bytes").c_str());
    return std::nullopt;
  }
  return s;
}

std::string ParamReader::req_string(std::string_view name, size_t max_len) {
  auto v = opt_string(name, max_len);
  if (!v && !failed_) {
    fail("missing required param " + prefix_ + std::string(name));
    param_ = prefix_ + std::string(name);
  }
  return v.value_or(std::string());
}

std::optional<int64_t> ParamReader::opt_int(std::string_view name, int64_t min, int64_t max) {
  const auto* v = find(name);
  if (!v) return std::nullopt;
  const std::string range = "an integer from " + std::to_string(min) + " to " + std::to_string(max);
  int64_t n = 0;
  if (v->is_number_integer()) {
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      fail_type(name, range.c_str());
      return std::nullopt;
    }
    n = v->get<int64_t>();
  } else if (v->is_number_float()) {
    // 5.0 is an integer in JSON's eyes; 5.5 is not.
    // The range first: converting a double out of int64_t's range is
    // undefined behaviour (found by fuzz_methods: endpoint_id 9.2e58).
    const double d = v->get<double>();
    if (!(d >= -9.2e18 && d <= 9.2e18) || d != std::trunc(d)) {
      fail_type(name, range.c_str());
      return std::nullopt;
    }
    n = static_cast<int64_t>(d);
  } else {
    fail_type(name, range.c_str());
    return std::nullopt;
  }
  if (n < min || n > max) {
    fail_type(name, range.c_str());
    return std::nullopt;
  }
  return n;
}

int64_t ParamReader::req_int(std::string_view name, int64_t min, int64_t max) {
  auto v = opt_int(name, min, max);
  if (!v && !failed_) {
    fail("missing required param " + prefix_ + std::string(name));
    param_ = prefix_ + std::string(name);
  }
  return v.value_or(0);
}

std::optional<bool> ParamReader::opt_bool(std::string_view name) {
  const auto* v = find(name);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) {
    fail_type(name, "true or false");
    return std::nullopt;
  }
  return v->get<bool>();
}

const rpc::json* ParamReader::opt_object(std::string_view name) {
  const auto* v = find(name);
  if (v && !v->is_object()) {
    fail_type(name, "an object");
    return nullptr;
  }
  return v;
}

const rpc::json* ParamReader::opt_array(std::string_view name) {
  const auto* v = find(name);
  if (v && !v->is_array()) {
    fail_type(name, "an array");
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
  e.code = -32602;
  e.message = message_;
  if (!param_.empty()) e.data = rpc::json{{"param", param_}};
  return e;
}

}  // namespace connmgr::methods
