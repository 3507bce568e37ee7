#include "core/connection_manager.h"

#include <algorithm>
#include <random>
#include <utility>

#include "net/failure_reason.h"
#include "util/clock.h"

namespace connmgr {

namespace {

// A uv_timer_t whose memory outlives its owner until libuv's close callback:
// the handle is freed there and nowhere else.
struct RetryTimer {
  uv_timer_t handle{};
  ConnectionManager* manager = nullptr;
  std::string node_id;
  uint64_t generation = 0;
};

void close_retry_timer(RetryTimer* t) {
  uv_timer_stop(&t->handle);
  t->manager = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&t->handle),
           [](uv_handle_t* h) { delete static_cast<RetryTimer*>(h->data); });
}

Error connect_failed_error(const std::string& message, const std::string& reason) {
  return Error(ErrorCode::kConnectFailed, message, reason);
}

}  // namespace

// One node's link: the attempt under way, the retry timer, or the established
// connection, and the callers waiting for it. Exactly one of `dial`
// (kConnecting), `timer` (kWaitingRetry) and `connection` (kActive) is live.
struct ConnectionManager::Link {
  std::string node_id;
  LinkState state = LinkState::kConnecting;
  // Bumped whenever a dial, timer or connection is replaced, so that a late
  // callback of the old one is recognised and ignored.
  uint64_t generation = 0;

  // What to dial: a fixed endpoint, or the node's best (of `protocol`).
  std::optional<int64_t> fixed_endpoint;
  std::optional<std::string> protocol;
  std::chrono::milliseconds timeout{10000};
  RetryOptions retry;
  bool reconnect = false;

  int attempts = 0;  // attempts made towards the current link
  // Endpoints that failed in the current series: a node connect tries each
  // of the others before one of these again (see start_attempt).
  std::vector<int64_t> failed_endpoints;
  int64_t since = 0;
  std::optional<int64_t> next_attempt_at;
  // The endpoint dialled last, or connected: what connections.list and the
  // events show of it. Not the whole Endpoint record: a held link carries
  // only this (a manager may hold 50,000 of them).
  struct Target {
    int64_t id = 0;
    std::string protocol;
    std::string address;
    int port = 0;
  } endpoint;

  DialHandle dial;
  bool dialing = false;  // holds one of the manager's dial slots
  RetryTimer* timer = nullptr;
  std::unique_ptr<Connection> connection;
  std::vector<Waiter> waiters;
};

struct ConnectionManager::Deferred {
  uv_timer_t* timer = nullptr;  // freed in its close callback
  std::vector<std::function<void()>> queue;
};

std::string_view link_state_name(LinkState state) {
  switch (state) {
    case LinkState::kConnecting:
      return "connecting";
    case LinkState::kWaitingRetry:
      return "waiting_retry";
    case LinkState::kActive:
      return "active";
  }
  return "connecting";
}

ConnectionManager::ConnectionManager(uv_loop_t* loop, Store& store, ConnectorFactory& connectors,
                                     EventBus& events, ConnectionConfig config)
    : loop_(loop),
      store_(store),
      connectors_(connectors),
      events_(events),
      config_(config),
      deferred_(std::make_unique<Deferred>()) {
  deferred_->timer = new uv_timer_t;
  uv_timer_init(loop_, deferred_->timer);
  deferred_->timer->data = this;
  // The deferred-call timer must not keep the loop alive on its own.
  uv_unref(reinterpret_cast<uv_handle_t*>(deferred_->timer));
}

ConnectionManager::~ConnectionManager() {
  shutdown();
  // Calls posted by shutdown() itself (cancelled answers) run now: the loop
  // will not see this manager again.
  while (!deferred_->queue.empty()) {
    auto queue = std::move(deferred_->queue);
    deferred_->queue.clear();
    for (auto& fn : queue) fn();
  }
  uv_timer_stop(deferred_->timer);
  uv_close(reinterpret_cast<uv_handle_t*>(deferred_->timer),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}

void ConnectionManager::post(std::function<void()> fn) {
  deferred_->queue.push_back(std::move(fn));
  if (deferred_->queue.size() == 1) {
    uv_timer_start(
        deferred_->timer,
        [](uv_timer_t* t) {
          auto* self = static_cast<ConnectionManager*>(t->data);
          // Calls may post more calls; those run on the next turn.
          auto queue = std::move(self->deferred_->queue);
          self->deferred_->queue.clear();
          for (auto& fn : queue) fn();
        },
        0, 0);
  }
}

void ConnectionManager::publish(Event event) {
  if (event.at == 0) event.at = unix_now_ms();
  events_.publish(event);
}

// --- reads ------------------------------------------------------------------

Result<NodePage> ConnectionManager::get_all_nodes(int limit, const std::optional<std::string>& after) {
  return store_.list_nodes(limit, after);
}

Result<Node> ConnectionManager::get_node_by_id(const std::string& node_id) {
  return store_.get_node(node_id);
}

Result<std::vector<Endpoint>> ConnectionManager::get_endpoints_for_node(
    const std::string& node_id, const std::optional<std::string>& protocol) {
  return store_.endpoints_of(node_id, protocol);
}

// --- connect ----------------------------------------------------------------

void ConnectionManager::connect_to_endpoint(int64_t endpoint_id, std::optional<RetryOptions> retry,
                                            ConnectDone done) {
  ConnectRequest r;
  r.endpoint_id = endpoint_id;
  r.retry = std::move(retry);
  connect(r, std::move(done));
}

void ConnectionManager::connect_to_node(const std::string& node_id,
                                        const std::optional<std::string>& protocol,
                                        std::optional<RetryOptions> retry, ConnectDone done) {
  ConnectRequest r;
  r.node_id = node_id;
  r.protocol = protocol;
  r.retry = std::move(retry);
  connect(r, std::move(done));
}

void ConnectionManager::retry_connection(int64_t endpoint_id, int max_attempts, ConnectDone done) {
  ConnectRequest r;
  r.endpoint_id = endpoint_id;
  RetryOptions retry = RetryOptions::from_config(config_);
  retry.max_attempts = max_attempts < 1 ? 1 : max_attempts;
  r.retry = retry;
  r.wait = true;
  connect(r, std::move(done));
}

void ConnectionManager::connect(const ConnectRequest& request, ConnectDone done) {
  auto answer_error = [this, &done](Error e) {
    post([done = std::move(done), e = std::move(e)] { done(e, nullptr); });
  };
  if (shut_down_) {
    answer_error(Error(ErrorCode::kCancelled, "the connection manager is shutting down",
                       reason::kShutdown));
    return;
  }
  if (request.endpoint_id.has_value() == request.node_id.has_value()) {
    answer_error(Error(ErrorCode::kInvalidParams, "give exactly one of endpoint_id and node_id"));
    return;
  }
  ConnectRequest resolved = request;
  if (request.endpoint_id) {
    auto ep = store_.get_endpoint(*request.endpoint_id);
    if (!ep) {
      answer_error(ep.error());
      return;
    }
    resolved.node_id = ep->node_id;
    resolved.protocol.reset();
  } else {
    if (request.protocol && !connectors_.find(*request.protocol)) {
      answer_error(Error(ErrorCode::kUnsupportedProtocol,
                         "unsupported protocol '" + *request.protocol + "': no connector for it",
                         *request.protocol));
      return;
    }
    // The node and its ranked endpoints in one read: the first attempt
    // uses them rather than reading again (each read transaction takes two
    // fcntl locks of the WAL index).
    auto found = store_.node_with_endpoints(*request.node_id, request.protocol);
    if (!found) {
      answer_error(found.error());
      return;
    }
    join_or_start(resolved, std::move(done), &found->endpoints);
    return;
  }
  join_or_start(resolved, std::move(done), nullptr);
}

void ConnectionManager::configure(Link& link, const ConnectRequest& request) {
  link.fixed_endpoint = request.endpoint_id;
  link.protocol = request.protocol;
  link.timeout = request.timeout.value_or(config_.connection_timeout);
  if (request.retry) {
    link.retry = *request.retry;
  } else {
    // No `retry`: one attempt; a supervised link still needs a schedule for
    // when it drops, which is the configuration's.
    link.retry = RetryOptions::from_config(config_);
    if (!request.reconnect) link.retry.max_attempts = 1;
  }
  if (link.retry.max_attempts < 1) link.retry.max_attempts = 1;
  link.reconnect = link.reconnect || request.reconnect;
  link.attempts = 0;
  link.failed_endpoints.clear();
  link.since = unix_now_ms();
}

void ConnectionManager::join_or_start(const ConnectRequest& request, ConnectDone done,
                                      const std::vector<Endpoint>* ranked) {
  const std::string& node_id = *request.node_id;
  auto it = links_.find(node_id);
  if (it != links_.end()) {
    Link& link = *it->second;
    // A joiner asking for supervision makes the link supervised.
    link.reconnect = link.reconnect || request.reconnect;
    switch (link.state) {
      case LinkState::kActive: {
        // API.md §4.1: an active link is reused.
        LinkInfo info = info_of(link);
        post([done = std::move(done), info] { done(ConnectOutcome{info, true}, nullptr); });
        return;
      }
      case LinkState::kConnecting:
        // One dial per node: join it.
        link.waiters.push_back(Waiter{std::move(done), request.wait});
        return;
      case LinkState::kWaitingRetry:
        // A scheduled retry is replaced by an attempt now, with this request's options.
        stop_timer(link);
        configure(link, request);
        link.waiters.push_back(Waiter{std::move(done), request.wait});
        start_attempt(link, ranked);
        return;
    }
  }
  auto link = std::make_unique<Link>();
  link->node_id = node_id;
  configure(*link, request);
  link->waiters.push_back(Waiter{std::move(done), request.wait});
  Link& ref = *link;
  links_.emplace(node_id, std::move(link));
  start_attempt(ref, ranked);
}

void ConnectionManager::set_state(Link& link, LinkState state) {
  if (link.state == LinkState::kActive) --active_;
  link.state = state;
  if (state == LinkState::kActive) ++active_;
}

void ConnectionManager::erase_link(std::map<std::string, std::unique_ptr<Link>>::iterator it) {
  if (it->second->state == LinkState::kActive) --active_;
  links_.erase(it);
}

void ConnectionManager::start_attempt(Link& link, const std::vector<Endpoint>* ranked) {
  link.generation = next_generation_++;
  set_state(link, LinkState::kConnecting);
  link.next_attempt_at.reset();

  // Endpoint choice (API.md §4.2), ranked afresh before every attempt.
  Endpoint chosen;
  if (link.fixed_endpoint) {
    auto ep = store_.get_endpoint(*link.fixed_endpoint);
    if (!ep) {
      fail_link(link, ep.error());
      return;
    }
    chosen = std::move(ep.value());
  } else {
    // `ranked`: what connect() just read for this node (and link.protocol).
    std::vector<Endpoint> fetched;
    const std::vector<Endpoint>* eps = ranked;
    if (!eps) {
      auto r = store_.endpoints_of(link.node_id, link.protocol);
      if (!r) {
        fail_link(link, r.error());
        return;
      }
      fetched = std::move(r).value();
      eps = &fetched;
    }
    // The store ranks by the record (API.md §4.2). Refinement: an endpoint
    // that already failed in this series gives way to one not yet tried,
    // whatever its record, so one series tries every endpoint before
    // repeating one; once all have failed, the ranking alone decides again.
    const Endpoint* best = nullptr;
    const Endpoint* best_untried = nullptr;
    for (const auto& ep : *eps) {
      if (!connectors_.find(ep.protocol)) continue;
      if (!best) best = &ep;
      if (std::find(link.failed_endpoints.begin(), link.failed_endpoints.end(), ep.id) ==
          link.failed_endpoints.end()) {
        best_untried = &ep;
        break;
      }
    }
    if (best_untried) {
      best = best_untried;
    } else {
      link.failed_endpoints.clear();
    }
    if (!best) {
      if (!eps->empty()) {
        fail_link(link, Error(ErrorCode::kUnsupportedProtocol,
                              "node '" + link.node_id + "' has no endpoint of a supported protocol",
                              eps->front().protocol));
      } else if (link.protocol) {
        fail_link(link, Error(ErrorCode::kNoUsableEndpoint,
                              "node '" + link.node_id + "' has no " + *link.protocol + " endpoint"));
      } else {
        fail_link(link, Error(ErrorCode::kNoUsableEndpoint,
                              "node '" + link.node_id + "' has no endpoints"));
      }
      return;
    }
    chosen = *best;
  }
  if (!connectors_.find(chosen.protocol)) {
    fail_link(link, Error(ErrorCode::kUnsupportedProtocol,
                          "unsupported protocol '" + chosen.protocol + "': no connector for it",
                          chosen.protocol));
    return;
  }
  link.endpoint = Link::Target{chosen.id, chosen.protocol, chosen.address, chosen.port};
  link.attempts += 1;

  Event ev;
  ev.type = EventType::kConnecting;
  ev.node_id = link.node_id;
  ev.endpoint_id = chosen.id;
  ev.protocol = chosen.protocol;
  ev.attempt = link.attempts;
  publish(ev);

  DialRequest req;
  req.node_id = link.node_id;
  req.endpoint_id = chosen.id;
  req.protocol = chosen.protocol;
  req.address = chosen.address;
  req.port = chosen.port;
  req.server_name = chosen.server_name;
  req.alpn = chosen.alpn;
  req.pin_sha256 = chosen.pin_sha256;
  req.timeout = link.timeout;
  if (dialing_ < dial_slots() && dial_queue_.empty()) {
    begin_dial(link, req);
    return;
  }
  // No slot free: the attempt waits its turn (state connecting); its dial
  // timeout counts from when the dial begins.
  dial_queue_.push_back(QueuedDial{link.generation, std::move(req)});
}

size_t ConnectionManager::dial_slots() const {
  return static_cast<size_t>(std::max(1, config_.max_concurrent_dials));
}

void ConnectionManager::begin_dial(Link& link, const DialRequest& req) {
  Connector* connector = connectors_.find(req.protocol);
  link.dialing = true;
  ++dialing_;
  const uint64_t generation = link.generation;
  link.dial = connector->connect(
      req, [this, node_id = link.node_id, generation](Result<std::unique_ptr<Connection>> r) {
        on_dial_done(node_id, generation, std::move(r));
      });
}

void ConnectionManager::end_dial(Link& link) {
  if (!link.dialing) return;
  link.dialing = false;
  --dialing_;
  if (!shut_down_) start_waiting_dials();
}

void ConnectionManager::start_waiting_dials() {
  // Oldest first; entries whose link has moved on (ended, or a new attempt
  // since) are passed over.
  while (dialing_ < dial_slots() && !dial_queue_.empty()) {
    QueuedDial next = std::move(dial_queue_.front());
    dial_queue_.pop_front();
    auto it = links_.find(next.request.node_id);
    if (it == links_.end()) continue;
    Link& waiting = *it->second;
    if (waiting.generation != next.generation || waiting.state != LinkState::kConnecting ||
        waiting.dialing)
      continue;
    begin_dial(waiting, next.request);
  }
}

void ConnectionManager::set_config(const ConnectionConfig& config) {
  config_ = config;
  start_waiting_dials();  // max_concurrent_dials may have grown
}

size_t ConnectionManager::dials_waiting() const {
  size_t n = 0;
  for (const auto& q : dial_queue_) {
    auto it = links_.find(q.request.node_id);
    n += it != links_.end() && it->second->generation == q.generation && !it->second->dialing;
  }
  return n;
}

void ConnectionManager::on_dial_done(const std::string& node_id, uint64_t generation,
                                     Result<std::unique_ptr<Connection>> result) {
  auto it = links_.find(node_id);
  if (it == links_.end() || it->second->generation != generation ||
      it->second->state != LinkState::kConnecting) {
    // A dial that was replaced: its link is not wanted (the connection, if
    // any, closes as it is destroyed here).
    return;
  }
  Link& link = *it->second;
  link.dial = DialHandle();
  end_dial(link);  // the slot goes to the next attempt waiting, if any
  const int64_t now = unix_now_ms();

  if (result.ok()) {
    store_.record_success(link.endpoint.id, now);
    link.connection = std::move(result).value();
    std::vector<int64_t>().swap(link.failed_endpoints);
    set_state(link, LinkState::kActive);
    link.since = now;
    link.generation = next_generation_++;
    // The connection is the link's: its drop callback can only fire while
    // the link holds it, so a pointer to the link is safe, and two pointers
    // fit in std::function without a heap block per held link.
    Link* held = &link;
    link.connection->set_drop_callback([this, held](const std::string& reason) {
      // The connection is inside its own I/O callback: handle the drop on a
      // later turn, where destroying it is safe.
      post([this, node_id = held->node_id, gen = held->generation, reason] {
        on_drop(node_id, gen, reason);
      });
    });
    Event ev;
    ev.type = EventType::kConnected;
    ev.node_id = node_id;
    ev.endpoint_id = link.endpoint.id;
    ev.protocol = link.endpoint.protocol;
    ev.attempt = link.attempts;
    publish(ev);
    answer_success(link, false);  // last: `link` may be gone after it
    return;
  }

  const Error& err = result.error();
  const std::string reason = err.reason().empty() ? std::string("EIO") : err.reason();
  store_.record_failure(link.endpoint.id, reason, now);
  link.failed_endpoints.push_back(link.endpoint.id);
  Event ev;
  ev.type = EventType::kConnectFailed;
  ev.node_id = node_id;
  ev.endpoint_id = link.endpoint.id;
  ev.protocol = link.endpoint.protocol;
  ev.reason = reason;
  ev.attempt = link.attempts;
  publish(ev);

  const bool attempts_remain = link.attempts < link.retry.max_attempts;
  if (attempts_remain || link.reconnect) {
    // A supervised link never gives up until disconnect; max_attempts bounds
    // only how long a `wait` caller waits.
    schedule_retry(link, link.attempts);
  }
  const bool retry_scheduled = link.state == LinkState::kWaitingRetry;

  ConnectFailure failure;
  failure.endpoint_id = link.endpoint.id;
  failure.attempts = link.attempts;
  failure.reason = reason;
  failure.retry_scheduled = retry_scheduled;
  failure.next_attempt_at = link.next_attempt_at;
  Error answer = connect_failed_error(err.message(), reason);

  // Callers without `wait` are answered after this attempt; `wait` callers
  // once the attempts are spent.
  std::vector<Waiter> keep;
  for (auto& w : link.waiters) {
    if (w.wait && attempts_remain) {
      keep.push_back(std::move(w));
    } else {
      post([done = std::move(w.done), answer, failure] { done(answer, &failure); });
    }
  }
  link.waiters = std::move(keep);
  if (!retry_scheduled) erase_link(it);
}

void ConnectionManager::answer_success(Link& link, bool reused) {
  // Called from the dial's own libuv callback, never from inside connect(),
  // so the callers are answered at once rather than a loop turn later. The
  // waiters leave the link first (swapped out: a held link keeps no
  // capacity for them): a caller may disconnect the node, which frees the
  // link, from inside its callback.
  const LinkInfo info = info_of(link);
  std::vector<Waiter> waiters;
  waiters.swap(link.waiters);
  for (auto& w : waiters) w.done(ConnectOutcome{info, reused}, nullptr);
}

void ConnectionManager::fail_link(Link& link, const Error& error) {
  // Errors before a dial (no such endpoint, no usable one): answer everyone.
  // A supervised link keeps trying on its schedule, since endpoints may be
  // added by another process meanwhile.
  for (auto& w : link.waiters)
    post([done = std::move(w.done), error] { done(error, nullptr); });
  link.waiters.clear();
  if (link.reconnect && !shut_down_) {
    link.attempts += 1;
    schedule_retry(link, link.attempts);
    return;
  }
  erase_link(links_.find(link.node_id));  // `link` dies here
}

void ConnectionManager::schedule_retry(Link& link, int failed_attempts) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  const auto delay = backoff_delay_jittered(link.retry, failed_attempts,
                                            std::uniform_real_distribution<double>(0, 1)(rng));
  link.generation = next_generation_++;
  set_state(link, LinkState::kWaitingRetry);
  link.next_attempt_at = unix_now_ms() + delay.count();

  auto* t = new RetryTimer;
  t->handle.data = t;
  t->manager = this;
  t->node_id = link.node_id;
  t->generation = link.generation;
  uv_timer_init(loop_, &t->handle);
  uv_timer_start(
      &t->handle,
      [](uv_timer_t* h) {
        auto* t = static_cast<RetryTimer*>(h->data);
        if (t->manager) t->manager->on_retry_timer(t->node_id, t->generation);
      },
      static_cast<uint64_t>(delay.count()), 0);
  link.timer = t;

  Event ev;
  ev.type = EventType::kRetryScheduled;
  ev.node_id = link.node_id;
  if (link.endpoint.id) ev.endpoint_id = link.endpoint.id;
  ev.attempt = failed_attempts + 1;
  ev.delay_ms = delay.count();
  ev.next_attempt_at = link.next_attempt_at;
  publish(ev);
}

void ConnectionManager::stop_timer(Link& link) {
  if (link.timer) {
    close_retry_timer(link.timer);
    link.timer = nullptr;
  }
}

void ConnectionManager::on_retry_timer(const std::string& node_id, uint64_t generation) {
  auto it = links_.find(node_id);
  if (it == links_.end() || it->second->generation != generation) return;
  Link& link = *it->second;
  stop_timer(link);
  start_attempt(link);
}

void ConnectionManager::on_drop(const std::string& node_id, uint64_t generation,
                                const std::string& reason) {
  auto it = links_.find(node_id);
  if (it == links_.end() || it->second->generation != generation ||
      it->second->state != LinkState::kActive)
    return;
  Link& link = *it->second;
  Event ev;
  ev.type = EventType::kDisconnected;
  ev.node_id = node_id;
  ev.endpoint_id = link.endpoint.id;
  ev.protocol = link.endpoint.protocol;
  ev.reason = reason;
  publish(ev);
  link.connection.reset();
  if (!link.reconnect || shut_down_) {
    erase_link(it);
    return;
  }
  // Supervised: re-establish on the backoff schedule, counting afresh.
  link.attempts = 0;
  link.since = unix_now_ms();
  schedule_retry(link, 1);
}

// --- disconnect and shutdown -------------------------------------------------

void ConnectionManager::end_link(std::string node_id, const char* reason,
                                 bool answer_cancelled, DisconnectOutcome* outcome) {
  auto it = links_.find(node_id);
  if (it == links_.end()) return;
  std::unique_ptr<Link> link = std::move(it->second);
  if (link->state == LinkState::kActive) --active_;
  links_.erase(it);

  const bool was_connected = link->state == LinkState::kActive;
  if (outcome) {
    outcome->was_connected = was_connected;
    outcome->cancelled_attempts = !was_connected;
  }
  link->dial.cancel();
  end_dial(*link);
  stop_timer(*link);
  if (link->connection) {
    link->connection->set_drop_callback(nullptr);
    link->connection->close();
    link->connection.reset();
  }
  if (was_connected) {
    Event ev;
    ev.type = EventType::kDisconnected;
    ev.node_id = node_id;
    ev.endpoint_id = link->endpoint.id;
    ev.protocol = link->endpoint.protocol;
    ev.reason = reason;
    publish(ev);
  }
  if (answer_cancelled) {
    Error e(ErrorCode::kCancelled,
            std::string("connect to node '") + node_id + "' cancelled (" + reason + ")", reason);
    for (auto& w : link->waiters) post([done = std::move(w.done), e] { done(e, nullptr); });
  }
}

DisconnectOutcome ConnectionManager::disconnect_node(const std::string& node_id) {
  DisconnectOutcome outcome;
  end_link(node_id, reason::kRequested, true, &outcome);
  return outcome;
}

void ConnectionManager::shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  while (!links_.empty()) end_link(links_.begin()->first, reason::kShutdown, true, nullptr);
  dial_queue_.clear();
}

// --- listing -----------------------------------------------------------------

LinkInfo ConnectionManager::info_of(const Link& link) const {
  LinkInfo info;
  info.node_id = link.node_id;
  info.endpoint_id = link.endpoint.id;
  info.protocol = link.endpoint.protocol;
  info.address = link.endpoint.address;
  info.port = link.endpoint.port;
  info.state = link.state;
  info.since = link.since;
  info.attempts = link.attempts;
  info.reconnect = link.reconnect;
  if (link.connection) {
    info.local_address = link.connection->local_address();
    info.rtt_ms = link.connection->rtt_ms();
  }
  if (link.state == LinkState::kWaitingRetry) info.next_attempt_at = link.next_attempt_at;
  return info;
}

std::vector<LinkInfo> ConnectionManager::get_active_connections(bool include_pending) const {
  std::vector<LinkInfo> out;
  out.reserve(links_.size());
  for (const auto& [id, link] : links_) {
    if (link->state == LinkState::kActive || include_pending) out.push_back(info_of(*link));
  }
  return out;
}

std::optional<LinkInfo> ConnectionManager::link_of(const std::string& node_id) const {
  auto it = links_.find(node_id);
  if (it == links_.end()) return std::nullopt;
  return info_of(*it->second);
}

size_t ConnectionManager::active_count() const { return active_; }

size_t ConnectionManager::pending_count() const { return links_.size() - active_; }

bool ConnectionManager::has_link(const std::string& node_id) const {
  return links_.count(node_id) != 0;
}

}  // namespace connmgr
