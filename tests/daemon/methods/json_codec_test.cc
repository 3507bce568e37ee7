// json_codec: how an Error becomes a JSON-RPC error object.
#include "methods/json_codec.h"

#include <catch2/catch.hpp>

using connmgr::Error;
using connmgr::ErrorCode;
using connmgr::methods::to_rpc_error;
using connmgr::rpc::json;

TEST_CASE("a server error always carries a data object") {
  auto e = to_rpc_error(Error::node_not_found("n1"), json{{"node_id", "n1"}});
  CHECK(e.code == static_cast<int>(ErrorCode::kNodeNotFound));
  CHECK(e.message == "node 'n1' not found");
  CHECK(e.data == json{{"node_id", "n1"}});

  auto bare = to_rpc_error(Error::already_exists("node 'n1' already exists"));
  CHECK(bare.data.is_object());
  CHECK(bare.data.empty());
}

TEST_CASE("an error's reason joins its data unless the details name one") {
  auto e = to_rpc_error(Error::storage("database is locked", "locked"));
  CHECK(e.code == static_cast<int>(ErrorCode::kStorage));
  CHECK(e.data == json{{"reason", "locked"}});

  auto given = to_rpc_error(Error::storage("database is locked", "locked"), json{{"reason", "full"}});
  CHECK(given.data["reason"] == "full");
}

TEST_CASE("a standard error carries data only when there is something to say") {
  auto params = to_rpc_error(Error::invalid_params("invalid params: limit must be ..."));
  CHECK(params.code == static_cast<int>(ErrorCode::kInvalidParams));
  CHECK(params.data.is_null());

  auto internal = to_rpc_error(Error::internal("no session to deliver events to"));
  CHECK(internal.code == static_cast<int>(ErrorCode::kInternal));
  CHECK(internal.data.is_null());
}
