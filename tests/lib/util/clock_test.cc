#include "util/clock.h"

#include <catch2/catch.hpp>

#include "util/error.h"

using namespace connmgr;

TEST_CASE("times format as RFC 3339 UTC with milliseconds") {
  CHECK(format_rfc3339_ms(0) == "1970-01-01T00:00:00.000Z");
  CHECK(format_rfc3339_ms(1795512600123) == "2026-11-24T09:30:00.123Z");
  CHECK(format_rfc3339_ms(-1) == "1969-12-31T23:59:59.999Z");
}

TEST_CASE("times on calendar edges format with the right date") {
  CHECK(format_rfc3339_ms(951782400000) == "2000-02-29T00:00:00.000Z");  // leap day
  CHECK(format_rfc3339_ms(1704067199999) == "2023-12-31T23:59:59.999Z");
  CHECK(format_rfc3339_ms(1704067200000) == "2024-01-01T00:00:00.000Z");
  CHECK(format_rfc3339_ms(4102444800007) == "2100-01-01T00:00:00.007Z");
  CHECK(format_rfc3339_ms(-1000) == "1969-12-31T23:59:59.000Z");
  CHECK(format_rfc3339_ms(-1001) == "1969-12-31T23:59:58.999Z");
}

TEST_CASE("the current time formats as now, to the millisecond") {
  const int64_t now = unix_now_ms();
  const std::string s = format_rfc3339_ms(now);
  REQUIRE(s.size() == 24);
  CHECK(s[4] == '-');
  CHECK(s[10] == 'T');
  CHECK(s.back() == 'Z');
  CHECK(std::stoi(s.substr(20, 3)) == now % 1000);
  CHECK(std::stoi(s.substr(0, 4)) >= 2024);
}

TEST_CASE("an Error carries its JSON-RPC code, message and reason") {
  Error e(ErrorCode::kStorage, "database is read-only: /x", "read_only");
  CHECK_FALSE(e.ok());
  CHECK(e.rpc_code() == -32020);
  CHECK(e.reason() == "read_only");
  Result<int> r = e;
  CHECK_FALSE(r.ok());
  CHECK(r.error().message() == "database is read-only: /x");
  Result<int> v = 5;
  CHECK(*v == 5);
  CHECK(ok_status().ok());
}
