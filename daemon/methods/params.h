// ParamReader: checks a method's params object (API.md §3 -32602: unknown
// params, wrong types, values out of range; the message names the param).
//
// Read every param the method knows, then call finish(), which reports any
// param that was not read as unknown. The first problem wins; later reads
// after a failure return empty values. A param given as JSON null counts as
// absent, so that a script can pass back a `next: null` cursor.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "rpc/method.h"

namespace connmgr::methods {

class ParamReader {
 public:
  // `prefix` names a nested object in messages ("retry.").
  explicit ParamReader(const rpc::json& params, std::string prefix = {});

  std::optional<std::string> opt_string(std::string_view name, size_t max_len = 1024);
  std::string req_string(std::string_view name, size_t max_len = 1024);
  std::optional<int64_t> opt_int(std::string_view name, int64_t min, int64_t max);
  int64_t req_int(std::string_view name, int64_t min, int64_t max);
  std::optional<bool> opt_bool(std::string_view name);
  // Present and an object / array, else nullptr (failing on a wrong type).
  const rpc::json* opt_object(std::string_view name);
  const rpc::json* opt_array(std::string_view name);

  // Reports the first param that was never read. Returns ok().
  bool finish();
  // Records a problem found by the method itself (e.g. two params that
  // exclude each other).
  void fail(std::string message);

  bool ok() const { return !failed_; }
  rpc::RpcError error() const;

 private:
  const rpc::json* find(std::string_view name);
  void fail_type(std::string_view name, const char* what);

  const rpc::json& params_;
  std::string prefix_;
  std::set<std::string, std::less<>> seen_;
  bool failed_ = false;
  std::string message_;
  std::string param_;
};

}  // namespace connmgr::methods
