// ParamReader: checks a method's params object. Unknown params, wrong types
// and values out of range are invalid params (ErrorCode::kInvalidParams,
// -32602 on the wire), whose message and `data.param` name the param
// (docs/api.md, "Errors").
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
  // A string that is_host_address() accepts.
  std::string req_address(std::string_view name);
  std::optional<bool> opt_bool(std::string_view name);
  // Present and an object / array, else nullptr (failing on a wrong type).
  const rpc::json* opt_object(std::string_view name);
  const rpc::json* opt_array(std::string_view name);

  // Reports the first param that was never read. Returns ok().
  bool finish();
  // Records a problem found by the method itself (e.g. two params that
  // exclude each other).
  void fail(std::string message);
  // The same for one param's value: "NAME must be WHAT", naming the param
  // (with the prefix) in the message and in data.param.
  void fail_param(std::string_view name, const std::string& what);

  bool ok() const { return !failed_; }
  rpc::RpcError error() const;

 private:
  const rpc::json* find(std::string_view name);
  void missing(std::string_view name);  // a required param is absent

  const rpc::json& params_;
  std::string prefix_;
  std::set<std::string, std::less<>> seen_;
  bool failed_ = false;
  std::string message_;
  std::string param_;
};

// An endpoint's address: an IPv4 address in dotted-quad form (192.0.2.1),
// an IPv6 address as inet_pton(3) reads it, without brackets or zone
// (2001:db8::1, ::ffff:192.0.2.1), or a host name: labels of 1 to 63
// letters, digits and hyphens, not starting or ending with a hyphen, joined
// by dots, 253 bytes at most, and one trailing dot allowed (a fully qualified
// name). A name whose last label is a number (decimal, or hexadecimal with
// 0x) is refused: resolvers read "127.1" or "0x7f000001" as an IPv4 address
// in another spelling, "1.2.3.256" is a typo. proto/'s address pattern
// states the same rule.
bool is_host_address(std::string_view text);

// How the address rule reads in an error message: "... must be WHAT".
extern const char* const kAddressRule;

}  // namespace connmgr::methods
