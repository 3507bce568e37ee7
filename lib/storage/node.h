// A node of the network as stored in the `nodes` table (schema.cc).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "storage/endpoint.h"

namespace connmgr {

struct Node {
  std::string id;
  std::optional<std::string> name;
  int64_t created_at = 0;  // unix ms
};

// What `nodes.add` takes: a node and, optionally, its first endpoints.
struct NodeSpec {
  std::string id;
  std::optional<std::string> name;
  std::vector<EndpointSpec> endpoints;
};

// A node with its endpoints, ranked best first.
struct NodeWithEndpoints {
  Node node;
  std::vector<Endpoint> endpoints;
};

// One page of `nodes.list`, ordered by id; `next` is the cursor for the
// following page, or empty on the last page.
struct NodePage {
  std::vector<Node> nodes;
  std::optional<std::string> next;
};

}  // namespace connmgr
