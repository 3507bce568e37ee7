// Fuzz target: the params of every method, against the real Api on a real
// temporary SQLite database, a real ConnectionManager and the TCP connector.
// Byte 0 picks the method; the rest is the params text, spliced into a
// request line and dispatched as a root caller would (state-changing methods
// run). Dials go wherever the params say: with a 200 ms connection timeout
// and no network beyond loopback here, they end quickly on their own.
#include <uv.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "core/connection_manager.h"
#include "core/events.h"
#include "methods/api.h"
#include "net/connector_factory.h"
#include "net/tcp_connector.h"
#include "rpc/dispatcher.h"
#include "rpc/json_text.h"
#include "storage/store.h"

namespace {

using namespace connmgr;

const char* const kMethods[] = {
    "nodes.list", "nodes.get",        "nodes.add",          "nodes.remove", "endpoints.list",
    "endpoints.add", "endpoints.remove", "connect",          "disconnect",   "connections.list",
    "events.subscribe", "events.unsubscribe", "status",     "no.such.method",
};

// A caller with root's credentials that stays connected.
class RootSession final : public rpc::Session {
 public:
  RootSession() {
    creds_.uid = 0;
    creds_.gid = 0;
    creds_.pid = getpid();
  }
  uint64_t id() const override { return 1; }
  const rpc::PeerCredentials& credentials() const override { return creds_; }
  void notify(const rpc::json& n) override {
    std::string line;
    rpc::append_json(line, n);  // as ClientSession writes notifications
  }
  bool closed() const override { return false; }
  CloseHookId on_close(std::function<void()>) override { return 1; }
  void forget_close_hook(CloseHookId) override {}

 private:
  rpc::PeerCredentials creds_;
};

struct World {
  uv_loop_t loop{};
  std::unique_ptr<Store> store;
  ConnectorFactory connectors;
  EventBus events;
  std::unique_ptr<ConnectionManager> manager;
  std::unique_ptr<methods::Api> api;
  std::unique_ptr<rpc::Dispatcher> dispatcher;
  std::shared_ptr<RootSession> session = std::make_shared<RootSession>();

  World() {
    uv_loop_init(&loop);
    char dir[] = "/tmp/connmgr-fuzz-methods-XXXXXX";
    if (!mkdtemp(dir)) abort();
    StoreOptions so;
    so.path = std::string(dir) + "/connmgr.db";
    auto s = Store::open(&loop, so);
    if (!s) abort();
    store = std::move(s).value();
    connectors.add(std::make_unique<TcpConnector>(&loop, TcpOptions{}));
    ConnectionConfig cc;
    cc.connection_timeout = std::chrono::milliseconds(200);
    cc.base_retry_interval = std::chrono::milliseconds(10);
    cc.max_retry_interval = std::chrono::milliseconds(50);
    manager = std::make_unique<ConnectionManager>(&loop, *store, connectors, events, cc);
    methods::ApiContext ctx;
    ctx.loop = &loop;
    ctx.store = store.get();
    ctx.manager = manager.get();
    ctx.events = &events;
    ctx.connectors = &connectors;
    ctx.write_lock_limit = std::chrono::milliseconds(100);
    ctx.version = "fuzz";
    ctx.client_count = [] { return size_t{1}; };
    ctx.config_json = [] { return rpc::json::object(); };
    api = std::make_unique<methods::Api>(ctx);
    dispatcher = std::make_unique<rpc::Dispatcher>([](const rpc::PeerCredentials& c) { return c.uid == 0; });
    for (auto& m : api->methods()) dispatcher->add(std::move(m));
  }
};

World& world() {
  static World* w = new World;  // lives for the process
  return *w;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  World& w = world();
  const char* method = kMethods[data[0] % (sizeof kMethods / sizeof kMethods[0])];
  const std::string params(reinterpret_cast<const char*>(data + 1), size - 1);
  const std::string line =
      std::string(R"({"jsonrpc":"2.0","id":7,"method":")") + method + R"(","params":)" + params + "}";
  // A waiting connect may answer long after this input (its timeout_ms is the
  // input's to choose): the flag is shared so that a late answer is safe.
  auto answered = std::make_shared<bool>(false);
  w.dispatcher->handle_line(line, w.session, [answered](std::optional<std::string> answer) {
    *answered = true;
    if (answer) (void)answer->size();
  });
  for (int turn = 0; turn < 50 && !*answered; ++turn) uv_run(&w.loop, UV_RUN_NOWAIT);
  return 0;
}
