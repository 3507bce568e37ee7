// The API's JSON shapes (proto/connmgr.openrpc.json's schemas, docs/api.md):
// the one place where records, links, events and errors become JSON.
// Times become RFC 3339 UTC strings; absent values become null.
#pragma once

#include "core/connection_manager.h"
#include "core/events.h"
#include "rpc/method.h"
#include "storage/endpoint.h"
#include "storage/node.h"
#include "util/error.h"

namespace connmgr::methods {

rpc::json to_json(const Endpoint& endpoint);
// `connected`: whether the node has an active link now.
rpc::json to_json(const Node& node, bool connected);
// The node with an `endpoints` array (nodes.get, nodes.add).
rpc::json to_json(const NodeWithEndpoints& node, bool connected);
rpc::json to_json(const LinkInfo& link);
// A stream as streams.list shows it.
rpc::json to_json(const StreamInfo& stream);
// status.network: {generation, classes: {tcp4|tcp6|udp4|udp6: {state, last_success_at}}}.
rpc::json to_json(const NetworkStatus& network);
// The same written as text onto `out`, byte for byte what dumping to_json()
// writes (status is written as text: StatusText).
void append_network_json(std::string& out, const NetworkStatus& network);
// nodes.explain's result.
rpc::json to_json(const Explanation& explanation);
// The params of an `event` notification (no node_id key when the event is
// tied to no node).
rpc::json to_json(const Event& event);
// A whole notification line's object.
rpc::json event_notification(const Event& event);

// An Error as a JSON-RPC error. Server codes always carry a `data` object:
// `details` (may be null) merged with what the Error itself knows (its reason).
rpc::RpcError to_rpc_error(const Error& error, rpc::json details = nullptr);
// A failed connect's error (ErrorCode::kConnectFailed) with its data: the
// endpoint, the attempts, the reason, whether a retry is scheduled and when.
rpc::RpcError connect_failed_error(const Error& error, const ConnectFailure& failure);

}  // namespace connmgr::methods
