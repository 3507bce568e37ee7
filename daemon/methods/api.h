// Api: the API's methods (docs/api.md, generated from proto/) as rpc::Method
// entries, binding JSON params to the ConnectionManager, the Store (reads),
// the Inventory (writes) and the EventBus.
//
// Ownership: borrows everything in ApiContext, which must outlive it. Keeps
// one event subscription per subscribed client session, dropped when the
// session closes, on events.unsubscribe, or with the Api. Writes under way
// when the Api goes answer later through the Inventory; their callbacks use
// only the manager and the event bus, never the Api.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <uv.h>

#include "core/connection_manager.h"
#include "core/events.h"
#include "methods/params.h"
#include "methods/status_text.h"
#include "net/connector_factory.h"
#include "rpc/method.h"
#include "storage/inventory.h"
#include "storage/store.h"

namespace connmgr::methods {

struct ApiContext {
  uv_loop_t* loop = nullptr;
  Store* store = nullptr;
  ConnectionManager* manager = nullptr;
  EventBus* events = nullptr;
  ConnectorFactory* connectors = nullptr;
  // Where nodes.add, nodes.remove, endpoints.add and endpoints.remove go
  // (storage/inventory.h). Unset: the Api keeps a LocalInventory over
  // `store` with write_lock_limit (tests, fuzz targets).
  Inventory* inventory = nullptr;
  // The local backend's: how long a write waits for another process's lock
  // before it fails with a storage error (ErrorCode::kStorage), reason
  // "locked".
  std::chrono::milliseconds write_lock_limit{5000};
  // What `status` shows of the daemon around the API.
  std::string version;
  std::string socket_path;
  std::function<size_t()> client_count;
  std::function<rpc::json()> config_json;
  // Changes whenever config_json's value may have (a reload): `status`
  // serializes the configuration once per generation. Unset: never changes.
  std::function<uint64_t()> config_generation;
  uint64_t started_at_ms = 0;  // uv_now-independent: unix ms
  // The `metrics` method's text (text format 0.0.4).
  std::function<std::string()> metrics_text;
};

class Api {
 public:
  explicit Api(ApiContext context);
  ~Api();
  Api(const Api&) = delete;
  Api& operator=(const Api&) = delete;

  // Every method of the API, each named once here.
  std::vector<rpc::Method> methods();

  // Subscribed sessions (for status and tests).
  size_t subscriber_count() const { return subscriptions_.size(); }

 private:
  using Params = rpc::json;
  using Ctx = rpc::CallContext;
  using Reply = rpc::Reply;

  void nodes_list(const Params&, const Ctx&, Reply);
  void nodes_get(const Params&, const Ctx&, Reply);
  void nodes_explain(const Params&, const Ctx&, Reply);
  void nodes_add(const Params&, const Ctx&, Reply);
  void nodes_remove(const Params&, const Ctx&, Reply);
  void endpoints_list(const Params&, const Ctx&, Reply);
  void endpoints_add(const Params&, const Ctx&, Reply);
  void endpoints_remove(const Params&, const Ctx&, Reply);
  void connect(const Params&, const Ctx&, Reply);
  void disconnect(const Params&, const Ctx&, Reply);
  void connections_list(const Params&, const Ctx&, Reply);
  void streams_open(const Params&, const Ctx&, Reply);
  void streams_list(const Params&, const Ctx&, Reply);
  void events_subscribe(const Params&, const Ctx&, Reply);
  void events_unsubscribe(const Params&, const Ctx&, Reply);
  void status(const Params&, const Ctx&, Reply);
  void metrics(const Params&, const Ctx&, Reply);

  std::optional<rpc::RpcError> read_connect_request(ParamReader& p, ConnectRequest& req);
  static void check_target(ParamReader& p, const ConnectRequest& req);
  static rpc::RpcError open_stream_error(const Error& error, const ConnectFailure* failure,
                                         const std::optional<std::string>& node_id,
                                         const std::optional<int64_t>& endpoint_id);

  void unsubscribe(uint64_t session_id);
  bool connected(const std::string& node_id) const;

  ApiContext ctx_;
  // Per subscribed session: its bus subscription and the close hook that
  // ends it (forgotten when the subscription or the Api ends first).
  struct Subscription {
    EventBus::SubscriptionId events{};
    std::weak_ptr<rpc::Session> session;
    rpc::Session::CloseHookId close_hook = 0;
  };
  std::map<uint64_t, Subscription> subscriptions_;
  // The writes' backend: ctx_.inventory, or own_inventory_ when unset (its
  // writes still running when the Api goes are cancelled with it).
  std::unique_ptr<Inventory> own_inventory_;
  Inventory* inventory_ = nullptr;
  std::string inventory_scratch_;  // status.inventory's text, kept for its capacity
  // `status` as text: what does not change per call is kept serialized.
  StatusText status_;
  std::string status_scratch_;  // the last result written, kept for its capacity
  std::string network_scratch_;  // status.network's text, likewise
  uint64_t config_generation_ = 0;
  bool config_cached_ = false;
};

}  // namespace connmgr::methods
