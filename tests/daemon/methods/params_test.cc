#include "methods/params.h"

#include <catch2/catch.hpp>

using connmgr::methods::ParamReader;
using connmgr::rpc::json;

TEST_CASE("known params are read and the rest is refused by name") {
  auto params = json::parse(R"({"node_id":"n1","bogus":1})");
  ParamReader p(params);
  CHECK(p.req_string("node_id") == "n1");
  CHECK_FALSE(p.finish());
  CHECK(p.error().code == -32602);
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
    CHECK(p.error().code == -32602);
    CHECK(p.error().data["param"] == "endpoint_id");
  }
  auto ok = json::parse(R"({"endpoint_id":9.0e18})");
  ParamReader p(ok);
  CHECK(p.req_int("endpoint_id", 1, INT64_MAX) == 9000000000000000000);
  CHECK(p.finish());
}
