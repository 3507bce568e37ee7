// reason::from_uv: libuv errors to the documented reason strings (docs/api.md,
// "FailureReason").
#include "net/failure_reason.h"

#include <uv.h>

#include <catch2/catch.hpp>

using namespace connmgr;

TEST_CASE("a refused connect is 'refused' and a timeout is 'timeout'") {
  CHECK(reason::from_uv(UV_ECONNREFUSED) == "refused");
  CHECK(reason::from_uv(UV_ETIMEDOUT) == "timeout");
}

TEST_CASE("a host that cannot be reached is 'unreachable'") {
  CHECK(reason::from_uv(UV_EHOSTUNREACH) == "unreachable");
}

TEST_CASE("a dial that this host's own network cannot carry is 'local_network'") {
  CHECK(reason::from_uv(UV_ENETUNREACH) == "local_network");  // no route
  CHECK(reason::from_uv(UV_ENETDOWN) == "local_network");
  // No source address of the family (an IPv6 dial on a host without IPv6).
  CHECK(reason::from_uv(UV_EADDRNOTAVAIL) == "local_network");
  CHECK(reason::from_uv(UV_EAFNOSUPPORT) == "local_network");
}

TEST_CASE("an error in words carries its errno name") {
  CHECK(reason::describe_uv(UV_ENETUNREACH) == "network is unreachable (ENETUNREACH)");
  CHECK(reason::describe_uv(UV_ECONNREFUSED) == "connection refused (ECONNREFUSED)");
}

TEST_CASE("a link ended by the peer is 'reset' or 'closed'") {
  CHECK(reason::from_uv(UV_ECONNRESET) == "reset");
  CHECK(reason::from_uv(UV_EPIPE) == "reset");
  CHECK(reason::from_uv(UV_ECONNABORTED) == "reset");
  CHECK(reason::from_uv(UV_EOF) == "closed");
}

TEST_CASE("every getaddrinfo failure is 'dns'") {
  for (int e : {UV_EAI_ADDRFAMILY, UV_EAI_AGAIN, UV_EAI_BADFLAGS, UV_EAI_BADHINTS, UV_EAI_CANCELED,
                UV_EAI_FAIL, UV_EAI_FAMILY, UV_EAI_MEMORY, UV_EAI_NODATA, UV_EAI_NONAME,
                UV_EAI_OVERFLOW, UV_EAI_PROTOCOL, UV_EAI_SERVICE, UV_EAI_SOCKTYPE}) {
    INFO(uv_err_name(e));
    CHECK(reason::from_uv(e) == "dns");
  }
}

TEST_CASE("any other error is its errno name") {
  CHECK(reason::from_uv(UV_EMFILE) == "EMFILE");
  CHECK(reason::from_uv(UV_EACCES) == "EACCES");
  CHECK(reason::from_uv(UV_EADDRINUSE) == "EADDRINUSE");
}

TEST_CASE("an operation cancelled on our side is 'cancelled'") {
  CHECK(reason::from_uv(UV_ECANCELED) == "cancelled");
}
