// GCC 12 with -O2 and the sanitizers warns "may be used uninitialized"
// inside libstdc++'s <regex> (std::function in its automaton's states), a
// false positive that -Werror (CI) turns into a failed build. The warning is
// reported at libstdc++'s own lines, so it is silenced for this whole file.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "methods/params.h"

#include <fstream>
#include <regex>
#include <string>

#include <catch2/catch.hpp>

#include "util/error.h"

using connmgr::ErrorCode;
using connmgr::methods::is_host_address;
using connmgr::methods::ParamReader;
using connmgr::rpc::json;

namespace {

constexpr int kInvalidParams = static_cast<int>(ErrorCode::kInvalidParams);

}  // namespace

TEST_CASE("known params are read and the rest is refused by name") {
  auto params = json::parse(R"({"node_id":"n1","bogus":1})");
  ParamReader p(params);
  CHECK(p.req_string("node_id") == "n1");
  CHECK_FALSE(p.finish());
  CHECK(p.error().code == kInvalidParams);
  CHECK(p.error().message.find("unknown param bogus") != std::string::npos);
  CHECK(p.error().data["param"] == "bogus");
}

TEST_CASE("a missing required param is named") {
  auto params = json::object();
  ParamReader p(params);
  p.req_string("node_id");
  CHECK_FALSE(p.finish());
  CHECK(p.error().message.find("node_id") != std::string::npos);
}

TEST_CASE("wrong types and out-of-range numbers name the param and the rule") {
  auto params = json::parse(R"({"limit": 0})");
  ParamReader p(params);
  p.opt_int("limit", 1, 10000);
  CHECK_FALSE(p.ok());
  CHECK(p.error().message.find("limit must be an integer from 1 to 10000") != std::string::npos);

  auto params2 = json::parse(R"({"limit": "5"})");
  ParamReader q(params2);
  q.opt_int("limit", 1, 10000);
  CHECK_FALSE(q.ok());

  auto params3 = json::parse(R"({"wait": 1})");
  ParamReader r(params3);
  r.opt_bool("wait");
  CHECK(r.error().message.find("wait must be true or false") != std::string::npos);
}

TEST_CASE("integral floats count as integers, fractions do not") {
  auto params = json::parse(R"({"a": 5.0, "b": 5.5, "c": 1e300})");
  ParamReader p(params);
  CHECK(p.opt_int("a", 0, 10) == 5);
  ParamReader q(params);
  CHECK_FALSE(q.opt_int("b", 0, 10).has_value());
  CHECK_FALSE(q.ok());
  ParamReader r(params);
  CHECK_FALSE(r.opt_int("c", 0, INT64_MAX).has_value());
  CHECK_FALSE(r.ok());
}

TEST_CASE("null counts as absent") {
  auto params = json::parse(R"({"after": null, "limit": null})");
  ParamReader p(params);
  CHECK_FALSE(p.opt_string("after").has_value());
  CHECK_FALSE(p.opt_int("limit", 1, 10).has_value());
  CHECK(p.finish());
}

TEST_CASE("nested objects are named with their prefix") {
  auto params = json::parse(R"({"max_attempts": 0, "x": 1})");
  ParamReader p(params, "retry.");
  p.opt_int("max_attempts", 1, 100);
  CHECK(p.error().message.find("retry.max_attempts") != std::string::npos);
  ParamReader q(params, "retry.");
  q.opt_int("max_attempts", 0, 100);
  CHECK_FALSE(q.finish());
  CHECK(q.error().data["param"] == "retry.x");
}

TEST_CASE("params that are not an object are refused") {
  auto params = json::parse("[1,2]");
  ParamReader p(params);
  CHECK_FALSE(p.finish());
  CHECK(p.error().message.find("params must be an object") != std::string::npos);
}

TEST_CASE("empty strings are refused") {
  auto params = json::parse(R"({"node_id": ""})");
  ParamReader p(params);
  p.req_string("node_id");
  CHECK_FALSE(p.ok());
}

TEST_CASE("numbers far beyond int64 are refused, not converted (fuzz_methods regression)") {
  // tests/fuzz/regressions/fuzz_methods/endpoint-id-9e58: the conversion of
  // 9.2e58 to int64_t was made before the range check (undefined behaviour).
  for (const char* text : {R"({"endpoint_id":92233720268888888888888888888888888888888888888888854775807})",
                           R"({"endpoint_id":-1e300})", R"({"endpoint_id":9.3e18})",
                           R"({"endpoint_id":18446744073709551615})"}) {
    auto params = json::parse(text);
    ParamReader p(params);
    p.req_int("endpoint_id", 1, INT64_MAX);
    CHECK_FALSE(p.finish());
    CHECK(p.error().code == kInvalidParams);
    CHECK(p.error().data["param"] == "endpoint_id");
  }
  auto ok = json::parse(R"({"endpoint_id":9.0e18})");
  ParamReader p(ok);
  CHECK(p.req_int("endpoint_id", 1, INT64_MAX) == 9000000000000000000);
  CHECK(p.finish());
}

// --- addresses ----------------------------------------------------------------

namespace {

// Addresses on both sides of every rule of is_host_address().
const char* const kGoodAddresses[] = {
    "127.0.0.1", "0.0.0.0", "255.255.255.255", "192.0.2.1",
    "::1", "::", "2001:db8::1", "1:2:3:4:5:6:7:8", "1::", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8",
    "::ffff:192.0.2.1", "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5::1.2.3.4", "FE80::ABCD",
    "localhost", "h", "example.com", "example.com.", "a-b.c-d", "xn--bcher-kva.example", "9a.example",
    "host1", "1host", "0xg", "a.0xfg", "a.b1"};
const char* const kBadAddresses[] = {
    "", "no such host", "tcp://h", "[::1]", "::1%eth0", "fe80::1%1", "h:80", "h/x", "h_x", "h\n",
    "1.2.3.256", "01.2.3.4", "1.2.3", "127.1", "12345", "a.1", "a.1.", "0x7f000001", "a.0x1F", "0x",
    "1::2::3", "1:::2", "1:2:3:4:5:6:7:8:9", "1::2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8::", "12345::",
    "1:2:3:4:5:6::1.2.3.4", "::ffff:256.1.1.1", "::1.2.3",
    "-a", "a-", "a.-b", "a..b", ".a", ".", "a..", "caf\xc3\xa9.example"};

std::string name_of(size_t bytes) {  // labels of 63 bytes joined by dots
  std::string s;
  while (s.size() < bytes) {
    if (!s.empty()) s += '.';
    s += std::string(std::min<size_t>(63, bytes - s.size()), 'a');
  }
  return s;
}

}  // namespace

TEST_CASE("an address is an IPv4 or IPv6 address or a host name") {
  for (const char* a : kGoodAddresses) {
    INFO(a);
    CHECK(is_host_address(a));
  }
  for (const char* a : kBadAddresses) {
    INFO(a);
    CHECK_FALSE(is_host_address(a));
  }
}

TEST_CASE("a host name's labels take 1 to 63 bytes and the name 253, a trailing dot aside") {
  CHECK(is_host_address(std::string(63, 'a')));
  CHECK_FALSE(is_host_address(std::string(64, 'a')));
  CHECK(name_of(253).size() == 253);
  CHECK(is_host_address(name_of(253)));
  CHECK(is_host_address(name_of(253) + "."));
  CHECK_FALSE(is_host_address(name_of(254)));
  CHECK_FALSE(is_host_address(name_of(253) + ".."));
}

TEST_CASE("an address that is not one is refused, naming the param with its prefix") {
  auto params = json::parse(R"({"address": "no such host"})");
  ParamReader p(params, "endpoints[0].");
  p.req_address("address");
  CHECK_FALSE(p.finish());
  CHECK(p.error().code == kInvalidParams);
  CHECK(p.error().data["param"] == "endpoints[0].address");
  CHECK(p.error().message.find("endpoints[0].address must be an IPv4 address") != std::string::npos);

  auto good = json::parse(R"({"address": "example.com"})");
  ParamReader q(good);
  CHECK(q.req_address("address") == "example.com");
  CHECK(q.finish());

  auto missing = json::object();
  ParamReader r(missing);
  r.req_address("address");
  CHECK_FALSE(r.finish());
  CHECK(r.error().data["param"] == "address");
  CHECK(r.error().message.find("missing required param address") != std::string::npos);

  auto long_name = json{{"address", name_of(254)}};
  ParamReader t(long_name);
  t.req_address("address");
  CHECK_FALSE(t.finish());
  CHECK(t.error().data["param"] == "address");
}

TEST_CASE("proto's address pattern states the same rule as is_host_address") {
  // The daemon and proto/ must agree on which params are invalid (the
  // end-to-end tests check it on every answer): the pattern of the
  // EndpointSpec's address, read with ECMAScript's rules as JSON Schema's
  // are, decides every case above as the daemon does.
  std::ifstream in(CONNMGR_PROTO_PATH);
  REQUIRE(in);
  const json proto = json::parse(in);
  const json& address = proto["components"]["schemas"]["EndpointSpec"]["properties"]["address"];
  const std::regex pattern(address["pattern"].get<std::string>(), std::regex::ECMAScript);
  const auto max_length = address["maxLength"].get<size_t>();
  auto schema_accepts = [&](const std::string& a) {
    return !a.empty() && a.size() <= max_length && std::regex_search(a, pattern);
  };
  std::vector<std::string> cases(std::begin(kGoodAddresses), std::end(kGoodAddresses));
  cases.insert(cases.end(), std::begin(kBadAddresses), std::end(kBadAddresses));
  for (size_t n : {63, 64, 253, 254}) cases.push_back(name_of(n));
  cases.push_back(name_of(253) + ".");
  for (const auto& a : cases) {
    INFO(a);
    CHECK(schema_accepts(a) == is_host_address(a));
  }
}
