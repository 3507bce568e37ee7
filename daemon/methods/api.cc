#include "methods/api.h"

#include <algorithm>

#include "methods/json_codec.h"
#include "methods/params.h"
#include "storage/local_inventory.h"
#include "util/clock.h"

namespace connmgr::methods {

using rpc::json;

namespace {

constexpr int64_t kMaxPageSize = 10000;
constexpr int64_t kDefaultPageSize = 1000;
constexpr size_t kMaxIdBytes = 256;
constexpr int64_t kMaxTimeoutMs = 3600 * 1000;
constexpr int64_t kMaxDelayMs = 24 * 3600 * 1000;
constexpr int64_t kMaxAttempts = 1000000;

// base64 of a 32-byte digest: 43 alphabet characters and one '='.
bool is_pin(const std::string& s) {
  if (s.size() != 44 || s[43] != '=') return false;
  return std::all_of(s.begin(), s.end() - 1, [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/';
  });
}

// Reads one endpoint's fields (nodes.add's `endpoints[]`, endpoints.add).
EndpointSpec read_endpoint_spec(ParamReader& p) {
  EndpointSpec e;
  e.protocol = p.req_string("protocol", 64);
  e.address = p.req_address("address");
  e.port = static_cast<int>(p.req_int("port", 1, 65535));
  e.server_name = p.opt_string("server_name", 255);
  e.alpn = p.opt_string("alpn", 255);
  e.pin_sha256 = p.opt_string("pin_sha256", 64);
  if (e.pin_sha256 && !is_pin(*e.pin_sha256))
    p.fail_param("pin_sha256", "the base64 SHA-256 of a SubjectPublicKeyInfo (44 characters)");
  return e;
}

// Details for the server errors that name what was looked for.
json details_for(const Error& e, const std::optional<std::string>& node_id,
                 const std::optional<int64_t>& endpoint_id) {
  json d = json::object();
  switch (e.code()) {
    case ErrorCode::kNodeNotFound:
    case ErrorCode::kNoUsableEndpoint:
    case ErrorCode::kCancelled:
    case ErrorCode::kAlreadyExists:
      if (node_id) d["node_id"] = *node_id;
      if (endpoint_id) d["endpoint_id"] = *endpoint_id;
      break;
    case ErrorCode::kEndpointNotFound:
      if (endpoint_id) d["endpoint_id"] = *endpoint_id;
      break;
    case ErrorCode::kUnsupportedProtocol:
      if (!e.reason().empty()) d["protocol"] = e.reason();
      break;
    default:
      break;
  }
  return d;
}

// node_added / node_removed, from the API's own writes. A free function:
// a write's answer may come after the Api has gone (the bus outlives both).
void publish_node_event(EventBus& events, EventType type, const std::string& node_id) {
  Event ev;
  ev.type = type;
  ev.at = unix_now_ms();
  ev.node_id = node_id;
  events.publish(ev);
}

// status.inventory as JSON text, keys in a nlohmann object's (alphabetical)
// order like the rest of the answer: backend, dsn, lag_s, last_error,
// revision, state. lag_s is 0 when the backend tells none (local).
void append_inventory_json(std::string& out, const InventoryStatus& s) {
  out += R"({"backend":)";
  rpc::append_json(out, json(s.backend));
  if (s.dsn) {
    out += R"(,"dsn":)";
    rpc::append_json(out, json(*s.dsn));
  }
  out += R"(,"lag_s":)";
  rpc::append_json(out, json(s.lag_s.value_or(0.0)));
  if (s.last_error) {
    out += R"(,"last_error":)";
    rpc::append_json(out, json(*s.last_error));
  }
  out += R"(,"revision":)";
  out += std::to_string(s.revision);
  out += R"(,"state":")";
  out += inventory_state_name(s.state);  // a fixed word: no escaping
  out += R"("})";
}

// lib/net's Stream as the RPC layer's RawStream (the session's splice
// drives it; daemon/server knows no transport).
class StreamForSession final : public rpc::RawStream {
 public:
  explicit StreamForSession(std::unique_ptr<Stream> stream) : stream_(std::move(stream)) {}
  void start(Callbacks cb) override {
    stream_->start(Stream::Callbacks{std::move(cb.on_data), std::move(cb.on_eof), std::move(cb.on_writable),
                                     std::move(cb.on_end)});
  }
  void write(std::string_view bytes) override { stream_->write(bytes); }
  size_t buffered() const override { return stream_->buffered(); }
  void shutdown_write() override { stream_->shutdown_write(); }
  void consume(size_t n) override { stream_->consume(n); }
  void reset() override { stream_->reset(); }

 private:
  std::unique_ptr<Stream> stream_;
};

}  // namespace

Api::Api(ApiContext context) : ctx_(std::move(context)), inventory_(ctx_.inventory) {
  if (!inventory_) {
    own_inventory_ = std::make_unique<LocalInventory>(ctx_.loop, *ctx_.store, ctx_.write_lock_limit);
    inventory_ = own_inventory_.get();
  }
}

// Writes of an own LocalInventory are cancelled with it (their answers are
// dropped); sessions that outlive the Api forget its close hooks.
Api::~Api() {
  for (const auto& [session_id, sub] : subscriptions_) {
    ctx_.events->unsubscribe(sub.events);
    if (auto session = sub.session.lock()) session->forget_close_hook(sub.close_hook);
  }
}

std::vector<rpc::Method> Api::methods() {
  using Handler = void (Api::*)(const Params&, const Ctx&, Reply);
  struct Entry {
    const char* name;
    bool changes_state;
    Handler handler;
  };
  // The method names, spelled once; changes_state marks what only privileged
  // callers may call (docs/guide.md, "Permissions").
  static constexpr Entry kMethods[] = {
      {"nodes.list", false, &Api::nodes_list},
      {"nodes.get", false, &Api::nodes_get},
      {"nodes.explain", false, &Api::nodes_explain},
      {"nodes.add", true, &Api::nodes_add},
      {"nodes.remove", true, &Api::nodes_remove},
      {"endpoints.list", false, &Api::endpoints_list},
      {"endpoints.add", true, &Api::endpoints_add},
      {"endpoints.remove", true, &Api::endpoints_remove},
      {"connect", true, &Api::connect},
      {"disconnect", true, &Api::disconnect},
      {"connections.list", false, &Api::connections_list},
      {"streams.open", true, &Api::streams_open},
      {"streams.list", false, &Api::streams_list},
      {"events.subscribe", false, &Api::events_subscribe},
      {"events.unsubscribe", false, &Api::events_unsubscribe},
      {"status", false, &Api::status},
      {"metrics", false, &Api::metrics},
  };
  std::vector<rpc::Method> out;
  for (const auto& e : kMethods) {
    Handler h = e.handler;
    out.push_back(rpc::Method{e.name, e.changes_state,
                              [this, h](const Params& p, const Ctx& c, Reply r) {
                                (this->*h)(p, c, std::move(r));
                              }});
  }
  return out;
}

// Whether the node's link is up. has_link() is one map lookup; the LinkInfo
// that tells the state (a getsockname and a TCP_INFO) is built only for a node
// that has a link at all while some link is active.
bool Api::connected(const std::string& node_id) const {
  if (ctx_.manager->active_count() == 0 || !ctx_.manager->has_link(node_id)) return false;
  auto link = ctx_.manager->link_of(node_id);
  return link && link->state == LinkState::kActive;
}

// --- nodes --------------------------------------------------------------------

void Api::nodes_list(const Params& params, const Ctx&, Reply reply) {
  ParamReader p(params);
  const auto limit = p.opt_int("limit", 1, kMaxPageSize).value_or(kDefaultPageSize);
  const auto after = p.opt_string("after", kMaxIdBytes);
  const bool with_endpoints = p.opt_bool("with_endpoints").value_or(false);
  if (!p.finish()) return reply.error(p.error());

  auto page = ctx_.manager->get_all_nodes(static_cast<int>(limit), after);
  if (!page) return reply.error(to_rpc_error(page.error()));
  std::vector<Endpoint> eps;
  if (with_endpoints && !page->nodes.empty()) {
    std::vector<std::string> ids;
    ids.reserve(page->nodes.size());
    for (const auto& n : page->nodes) ids.push_back(n.id);
    auto r = ctx_.store->endpoints_of_nodes(ids);
    if (!r) return reply.error(to_rpc_error(r.error()));
    eps = std::move(r).value();
  }
  json nodes = json::array();
  // endpoints_of_nodes groups them by node, in the page's order.
  size_t next_ep = 0;
  for (const auto& n : page->nodes) {
    json j = to_json(n, connected(n.id));
    if (with_endpoints) {
      json list = json::array();
      for (; next_ep < eps.size() && eps[next_ep].node_id == n.id; ++next_ep)
        list.push_back(to_json(eps[next_ep]));
      j["endpoints"] = std::move(list);
    }
    nodes.push_back(std::move(j));
  }
  reply.result(json{{"nodes", std::move(nodes)},
                    {"next", page->next ? json(*page->next) : json(nullptr)}});
}

void Api::nodes_get(const Params& params, const Ctx&, Reply reply) {
  ParamReader p(params);
  const auto node_id = p.req_string("node_id", kMaxIdBytes);
  if (!p.finish()) return reply.error(p.error());
  // The node and its endpoints in one read (one read transaction).
  auto found = ctx_.store->node_with_endpoints(node_id, std::nullopt);
  if (!found)
    return reply.error(to_rpc_error(found.error(), details_for(found.error(), node_id, {})));
  reply.result(to_json(*found, connected(node_id)));
}

// What connect would do for the node now, and why: the manager's own
// decision code (ConnectionManager::explain), as JSON.
void Api::nodes_explain(const Params& params, const Ctx&, Reply reply) {
  ParamReader p(params);
  const auto node_id = p.req_string("node_id", kMaxIdBytes);
  const auto protocol = p.opt_string("protocol", 64);
  if (!p.finish()) return reply.error(p.error());
  auto explained = ctx_.manager->explain(node_id, protocol);
  if (!explained)
    return reply.error(to_rpc_error(explained.error(), details_for(explained.error(), node_id, {})));
  reply.result(to_json(*explained));
}

void Api::nodes_add(const Params& params, const Ctx&, Reply reply) {
  ParamReader p(params);
  NodeSpec spec;
  spec.id = p.req_string("id", kMaxIdBytes);
  spec.name = p.opt_string("name", 1024);
  if (const json* eps = p.opt_array("endpoints")) {
    for (size_t i = 0; i < eps->size() && p.ok(); ++i) {
      ParamReader ep((*eps)[i], "endpoints[" + std::to_string(i) + "].");
      spec.endpoints.push_back(read_endpoint_spec(ep));
      if (!ep.finish()) return reply.error(ep.error());
    }
  }
  if (!p.finish()) return reply.error(p.error());

  inventory_->add_node(spec, [reply, events = ctx_.events, id = spec.id](Result<NodeWithEndpoints> r) mutable {
    if (!r) return reply.error(to_rpc_error(r.error(), details_for(r.error(), id, {})));
    publish_node_event(*events, EventType::kNodeAdded, id);
    reply.result(to_json(*r, false));
  });
}

void Api::nodes_remove(const Params& params, const Ctx&, Reply reply) {
  ParamReader p(params);
  const auto node_id = p.req_string("node_id", kMaxIdBytes);
  if (!p.finish()) return reply.error(p.error());
  // A removed node has no link left: its links close once it is gone, in
  // the same loop turn (a removal refused, e.g. with the shared inventory's
  // server away, keeps them). The daemon closes them too for removals
  // another host made.
  inventory_->remove_node(
      node_id, [reply, events = ctx_.events, manager = ctx_.manager, node_id](Status st) mutable {
        if (!st.ok()) return reply.error(to_rpc_error(st, details_for(st, node_id, {})));
        manager->remove_node_links(node_id);
        publish_node_event(*events, EventType::kNodeRemoved, node_id);
        reply.result(json{{"node_id", node_id}, {"removed", true}});
      });
}

// --- endpoints ----------------------------------------------------------------

void Api::endpoints_list(const Params& params, const Ctx&, Reply reply) {
  ParamReader p(params);
  const auto node_id = p.req_string("node_id", kMaxIdBytes);
  const auto protocol = p.opt_string("protocol", 64);
  if (!p.finish()) return reply.error(p.error());
  auto eps = ctx_.manager->get_endpoints_for_node(node_id, protocol);
  if (!eps) return reply.error(to_rpc_error(eps.error(), details_for(eps.error(), node_id, {})));
  json list = json::array();
  for (const auto& e : *eps) list.push_back(to_json(e));
  reply.result(json{{"endpoints", std::move(list)}});
}

void Api::endpoints_add(const Params& params, const Ctx&, Reply reply) {
  ParamReader p(params);
  const auto node_id = p.req_string("node_id", kMaxIdBytes);
  const EndpointSpec spec = read_endpoint_spec(p);
  if (!p.finish()) return reply.error(p.error());
  inventory_->add_endpoint(node_id, spec, [reply, node_id](Result<Endpoint> r) mutable {
    if (!r) return reply.error(to_rpc_error(r.error(), details_for(r.error(), node_id, {})));
    reply.result(to_json(*r));
  });
}

void Api::endpoints_remove(const Params& params, const Ctx&, Reply reply) {
  ParamReader p(params);
  const auto endpoint_id = p.req_int("endpoint_id", 1, INT64_MAX);
  if (!p.finish()) return reply.error(p.error());
  inventory_->remove_endpoint(endpoint_id, [reply, endpoint_id](Status st) mutable {
    if (!st.ok()) return reply.error(to_rpc_error(st, details_for(st, {}, endpoint_id)));
    reply.result(json{{"endpoint_id", endpoint_id}, {"removed", true}});
  });
}

// --- links --------------------------------------------------------------------

// connect's and streams.open's params (wait aside), into `req`; problems go
// to `p`, except the nested retry object's, which are returned.
std::optional<rpc::RpcError> Api::read_connect_request(ParamReader& p, ConnectRequest& req) {
  req.endpoint_id = p.opt_int("endpoint_id", 1, INT64_MAX);
  req.node_id = p.opt_string("node_id", kMaxIdBytes);
  req.protocol = p.opt_string("protocol", 64);
  if (auto t = p.opt_int("timeout_ms", 1, kMaxTimeoutMs)) req.timeout = std::chrono::milliseconds(*t);
  if (const json* r = p.opt_object("retry")) {
    ParamReader rp(*r, "retry.");
    RetryOptions retry = RetryOptions::from_config(ctx_.manager->config());
    retry.max_attempts = static_cast<int>(rp.opt_int("max_attempts", 1, kMaxAttempts).value_or(retry.max_attempts));
    retry.exponential = rp.opt_bool("exponential").value_or(retry.exponential);
    retry.initial_delay = std::chrono::milliseconds(
        rp.opt_int("initial_delay_ms", 0, kMaxDelayMs).value_or(retry.initial_delay.count()));
    retry.max_delay = std::chrono::milliseconds(
        rp.opt_int("max_delay_ms", 0, kMaxDelayMs).value_or(retry.max_delay.count()));
    if (!rp.finish()) return rp.error();
    req.retry = retry;
  }
  req.reconnect = p.opt_bool("reconnect").value_or(false);
  return std::nullopt;
}

// Exactly one of endpoint_id and node_id; protocol with node_id only.
void Api::check_target(ParamReader& p, const ConnectRequest& req) {
  if (p.ok() && req.endpoint_id.has_value() == req.node_id.has_value())
    p.fail("give exactly one of endpoint_id and node_id");
  if (p.ok() && req.protocol && req.endpoint_id)
    p.fail("protocol goes with node_id only (an endpoint has its own protocol)");
}

void Api::connect(const Params& params, const Ctx&, Reply reply) {
  ParamReader p(params);
  ConnectRequest req;
  if (auto nested = read_connect_request(p, req)) return reply.error(std::move(*nested));
  req.wait = p.opt_bool("wait").value_or(false);
  check_target(p, req);
  if (!p.finish()) return reply.error(p.error());

  ctx_.manager->connect(req, [reply, node_id = req.node_id, endpoint_id = req.endpoint_id](
                                 Result<ConnectOutcome> r, const ConnectFailure* failure) mutable {
    if (r.ok()) {
      json j = to_json(r->link);
      j["reused"] = r->reused;
      return reply.result(j);
    }
    if (failure) return reply.error(connect_failed_error(r.error(), *failure));
    reply.error(to_rpc_error(r.error(), details_for(r.error(), node_id, endpoint_id)));
  });
}

void Api::disconnect(const Params& params, const Ctx&, Reply reply) {
  ParamReader p(params);
  const auto node_id = p.req_string("node_id", kMaxIdBytes);
  if (!p.finish()) return reply.error(p.error());
  auto out = ctx_.manager->disconnect_node(node_id);
  reply.result(json{{"node_id", node_id},
                    {"was_connected", out.was_connected},
                    {"cancelled_attempts", out.cancelled_attempts}});
}

void Api::connections_list(const Params& params, const Ctx&, Reply reply) {
  ParamReader p(params);
  const bool include_pending = p.opt_bool("include_pending").value_or(false);
  if (!p.finish()) return reply.error(p.error());
  json list = json::array();
  for (const auto& l : ctx_.manager->get_active_connections(include_pending))
    list.push_back(to_json(l));
  reply.result(json{{"connections", std::move(list)}});
}

// --- streams ------------------------------------------------------------------

void Api::streams_open(const Params& params, const Ctx& ctx, Reply reply) {
  ParamReader p(params);
  ConnectRequest req;
  if (auto nested = read_connect_request(p, req)) return reply.error(std::move(*nested));
  req.wait = true;
  check_target(p, req);
  // After the answer the connection carries the stream's bytes: nothing
  // else may be owed on it, and nothing may be sent on it unasked.
  if (p.ok() && ctx.in_batch)
    p.fail("streams.open must be alone on its connection: not inside a batch");
  if (p.ok() && ctx.session && subscriptions_.count(ctx.session->id()) != 0)
    p.fail("streams.open must be alone on its connection: this one is subscribed to events "
           "(use another connection)");
  if (!p.finish()) return reply.error(p.error());
  if (!ctx.session) return reply.error(to_rpc_error(Error::internal("no connection to carry a stream")));
  if (!ctx.session->claim_raw()) {
    ParamReader refused(json::object());
    refused.fail("streams.open must be alone on its connection: other requests of this "
                 "connection are still unanswered");
    return reply.error(refused.error());
  }

  const auto& creds = ctx.session->credentials();
  StreamClient client;
  client.pid = creds.pid;
  client.uid = static_cast<int64_t>(creds.uid);
  std::weak_ptr<rpc::Session> weak = ctx.session;
  // The answer needs nothing of the Api: the manager answers opens still
  // under way (cancelled) when it shuts down, after the Api has gone.
  ctx_.manager->open_stream(
      req, client,
      [reply, weak, buffer = ctx_.manager->config().stream_buffer, node_id = req.node_id,
       endpoint_id = req.endpoint_id](Result<OpenedStream> r, const ConnectFailure* failure) mutable {
        if (!r.ok()) return reply.error(open_stream_error(r.error(), failure, node_id, endpoint_id));
        auto session = weak.lock();
        if (!session || session->closed()) return;  // the Stream resets: client_closed
        OpenedStream& opened = r.value();
        session->attach_stream(std::make_unique<StreamForSession>(std::move(opened.stream)), buffer);
        reply.result(json{{"stream_id", opened.stream_id},
                          {"node_id", opened.link.node_id},
                          {"endpoint_id", opened.link.endpoint_id},
                          {"protocol", opened.link.protocol},
                          {"link_reused", opened.link_reused}});
      });
}

// streams.open's errors: stream refused (ErrorCode::kStreamRefused) with its
// reason (and the dial's for a refused TCP stream), a failed connect's
// details, or the server error.
rpc::RpcError Api::open_stream_error(const Error& error, const ConnectFailure* failure,
                                     const std::optional<std::string>& node_id,
                                     const std::optional<int64_t>& endpoint_id) {
  if (error.code() == ErrorCode::kStreamRefused) {
    json data = json::object();
    if (failure && !failure->reason.empty()) data["dial_reason"] = failure->reason;
    if (failure && failure->endpoint_id != 0) data["endpoint_id"] = failure->endpoint_id;
    return to_rpc_error(error, std::move(data));
  }
  if (failure) return connect_failed_error(error, *failure);
  return to_rpc_error(error, details_for(error, node_id, endpoint_id));
}

void Api::streams_list(const Params& params, const Ctx&, Reply reply) {
  ParamReader p(params);
  if (!p.finish()) return reply.error(p.error());
  json list = json::array();
  for (const auto& s : ctx_.manager->list_streams()) list.push_back(to_json(s));
  reply.result(json{{"streams", std::move(list)}});
}

// --- events -------------------------------------------------------------------

void Api::events_subscribe(const Params& params, const Ctx& ctx, Reply reply) {
  ParamReader p(params);
  uint32_t mask = 0;
  if (const json* types = p.opt_array("types")) {
    for (const auto& t : *types) {
      auto type = t.is_string() ? event_type_from_name(t.get<std::string>()) : std::nullopt;
      if (!type) {
        std::string known;
        for (EventType k : all_event_types()) known += (known.empty() ? "" : ", ") + std::string(event_type_name(k));
        p.fail("types has an unknown event type " + t.dump() + " (known: " + known + ")");
        break;
      }
      mask |= event_type_bit(*type);
    }
  } else {
    mask = ~0u;
  }
  if (!p.finish()) return reply.error(p.error());
  if (!ctx.session) return reply.error(to_rpc_error(Error::internal("no session to deliver events to")));

  const uint64_t sid = ctx.session->id();
  std::weak_ptr<rpc::Session> weak = ctx.session;
  auto [it, first] = subscriptions_.try_emplace(sid);
  Subscription& sub = it->second;
  if (first) {
    sub.session = weak;
    // Forgotten by unsubscribe() and by ~Api: never called on a gone Api.
    sub.close_hook = ctx.session->on_close([this, sid] { unsubscribe(sid); });
  } else {
    ctx_.events->unsubscribe(sub.events);  // the new types replace the old
  }
  // The bus filters by type (and so knows when no one wants an event).
  sub.events = ctx_.events->subscribe(
      [weak](const Event& e) {
        if (auto s = weak.lock()) s->notify(event_notification(e));
      },
      mask);
  reply.result(json{{"subscribed", true}});
}

void Api::events_unsubscribe(const Params& params, const Ctx& ctx, Reply reply) {
  ParamReader p(params);
  if (!p.finish()) return reply.error(p.error());
  if (ctx.session) unsubscribe(ctx.session->id());
  reply.result(json{{"subscribed", false}});
}

void Api::unsubscribe(uint64_t session_id) {
  auto it = subscriptions_.find(session_id);
  if (it == subscriptions_.end()) return;
  ctx_.events->unsubscribe(it->second.events);
  if (auto session = it->second.session.lock()) session->forget_close_hook(it->second.close_hook);
  subscriptions_.erase(it);
}

// --- status -------------------------------------------------------------------

// The metrics in the Prometheus text format 0.0.4 (docs/operations.md,
// "Metrics"), the same text as the HTTP listener's default.
void Api::metrics(const Params& params, const Ctx&, Reply reply) {
  ParamReader p(params);
  if (!p.finish()) return reply.error(p.error());
  if (!ctx_.metrics_text) return reply.error(to_rpc_error(Error::internal("metrics are not available"), {}));
  reply.result(json{{"text", ctx_.metrics_text()}});
}

void Api::status(const Params& params, const Ctx&, Reply reply) {
  ParamReader p(params);
  if (!p.finish()) return reply.error(p.error());
  const uint64_t now = static_cast<uint64_t>(unix_now_ms());
  // The Store keeps the counts until a write (its own or another process's)
  // changes the database: COUNT(*) over a million rows takes tens of ms.
  // Another process's inserts show within a second (docs/guide.md); ours at once.
  auto counts = ctx_.store->counts(std::chrono::seconds(1));
  if (!counts) return reply.error(to_rpc_error(counts.error()));
  // The connectors are all added before the daemon serves; the identity's
  // node id may be set after start; the configuration changes on reload.
  if (!status_.has_connectors()) status_.set_connectors(ctx_.connectors->names());
  const std::string& node_id = ctx_.store->local_node_id();
  if (!status_.identity_is(ctx_.version, ctx_.store->path(), ctx_.socket_path, node_id))
    status_.set_identity(ctx_.version, ctx_.store->path(), ctx_.socket_path, node_id);
  // The configuration is serialized once per generation (a reload bumps it;
  // a context without the hook never reloads).
  const uint64_t generation = ctx_.config_generation ? ctx_.config_generation() : 0;
  if (!config_cached_ || generation != config_generation_) {
    status_.set_config(ctx_.config_json ? ctx_.config_json() : json::object());
    config_generation_ = generation;
    config_cached_ = true;
  }
  StatusText::Live live;
  live.uptime_s = (now - ctx_.started_at_ms) / 1000;
  live.nodes = counts->nodes;
  live.endpoints = counts->endpoints;
  live.active = ctx_.manager->active_count();
  live.pending = ctx_.manager->pending_count();
  live.clients = ctx_.client_count ? ctx_.client_count() : 0;
  live.streams = ctx_.manager->stream_count();
  network_scratch_.clear();
  append_network_json(network_scratch_, ctx_.manager->network_status());
  live.network = network_scratch_;
  inventory_scratch_.clear();
  append_inventory_json(inventory_scratch_, inventory_->status());
  live.inventory = inventory_scratch_;
  status_.write(live, status_scratch_);
  reply.result_text(status_scratch_);
}

}  // namespace connmgr::methods
