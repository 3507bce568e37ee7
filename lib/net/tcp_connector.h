// TcpConnector: dials TCP endpoints on the libuv loop.
//
// Host names are resolved with uv_getaddrinfo; every address is tried in turn
// until one answers, all within the request's one timeout. An established
// link is read continuously (bytes are counted and dropped) so that EOF and
// resets are seen at once; TCP keepalive is set from the options; rtt comes
// from TCP_INFO. Owned by a ConnectorFactory; must outlive its dials and links.
#pragma once

#include <chrono>
#include <memory>

#include <uv.h>

#include "net/connector.h"

namespace connmgr {

struct TcpOptions {
  // Idle time before keepalive probes; zero turns keepalive off.
  std::chrono::seconds keepalive{30};
};

class TcpConnector final : public Connector {
 public:
  TcpConnector(uv_loop_t* loop, TcpOptions options);
  ~TcpConnector() override;

  std::string_view name() const override { return "tcp"; }
  DialHandle connect(const DialRequest& request, ConnectCallback done) override;

 private:
  uv_loop_t* loop_;
  TcpOptions options_;
};

}  // namespace connmgr
