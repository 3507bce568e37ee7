// Quick figure: TCP connect + disconnect cycles per second through the
// ConnectionManager (real Store file, real TcpConnector, a listener on the
// same loop), one cycle at a time. Not a test; run by hand.
#include <chrono>
#include <cstdio>

#include "core/connection_manager.h"
#include "net/tcp_connector.h"
#include "test_support.h"

using namespace connmgr;

int main(int argc, char** argv) {
  const int cycles = argc > 1 ? atoi(argv[1]) : 5000;
  uv_loop_t loop;
  uv_loop_init(&loop);
  test::TempDir dir;
  StoreOptions so;
  so.path = dir.file("bench.db");
  auto store = Store::open(&loop, so);
  if (!store) return 1;
  ConnectorFactory connectors;
  connectors.add(std::make_unique<TcpConnector>(&loop, TcpOptions{}));
  EventBus events;
  auto* listener = new test::TcpListener(&loop);
  NodeSpec spec;
  spec.id = "bench";
  spec.endpoints.push_back(EndpointSpec{"tcp", "127.0.0.1", listener->port(), {}, {}, {}});
  (*store)->add_node(spec);
  auto manager = std::make_unique<ConnectionManager>(&loop, **store, connectors, events, ConnectionConfig{});
  int done = 0, failed = 0;
  ConnectRequest req;
  req.node_id = "bench";
  std::function<void()> next = [&] {
    manager->connect(req, [&](Result<ConnectOutcome> r, const ConnectFailure*) {
      if (!r.ok()) ++failed;
      manager->disconnect_node("bench");
      if (++done < cycles) next();
    });
  };
  const auto t0 = std::chrono::steady_clock::now();
  next();
  test::run_until(&loop, [&] { return done >= cycles; }, std::chrono::seconds(120));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  printf("manager: %d connect+disconnect cycles in %.2f s: %.0f cycles/s (%d failed)\n", done, s,
         done / s, failed);
  manager.reset();
  delete listener;
  (*store)->close();
  store->reset();
  test::drain_loop(&loop);
  return 0;
}
