// ConnectorFactory: protocol name → Connector.
// Owns its connectors; they live as long as the factory.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "net/connector.h"

namespace connmgr {

class ConnectorFactory {
 public:
  void add(std::unique_ptr<Connector> connector) { connectors_.push_back(std::move(connector)); }

  // The connector for `protocol`, or nullptr.
  Connector* find(std::string_view protocol) const {
    for (const auto& c : connectors_)
      if (c->supports(protocol)) return c.get();
    return nullptr;
  }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& c : connectors_) out.emplace_back(c->name());
    return out;
  }

 private:
  std::vector<std::unique_ptr<Connector>> connectors_;
};

}  // namespace connmgr
