// Connector: dials endpoints of one protocol on the libuv loop.
//
// connect() returns at once. The callback is called exactly once on the loop
// thread, never from inside connect() itself, with either an active
// Connection or an Error{kConnectFailed, message, reason} whose reason is one
// of failure_reason.h's strings, unless the returned handle is cancelled
// first. A Connector must outlive every dial and connection it made.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "net/connection.h"
#include "net/dial_handle.h"
#include "net/dial_request.h"
#include "util/error.h"

namespace connmgr {

using ConnectCallback = std::function<void(Result<std::unique_ptr<Connection>>)>;

class Connector {
 public:
  virtual ~Connector() = default;
  virtual std::string_view name() const = 0;
  virtual bool supports(std::string_view protocol) const { return protocol == name(); }
  virtual DialHandle connect(const DialRequest& request, ConnectCallback done) = 0;
};

}  // namespace connmgr
