#include "util/clock.h"

#include <catch2/catch.hpp>

#include "util/error.h"

using namespace connmgr;

TEST_CASE("times format as RFC 3339 UTC with milliseconds") {
  CHECK(format_rfc3339_ms(0) == "1970-01-01T00:00:00.000Z");
  CHECK(format_rfc3339_ms(1795512600123) == "2026-11-24T09:30:00.123Z");
  CHECK(format_rfc3339_ms(-1) == "1969-12-31T23:59:59.999Z");
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
