#include "core/connection_manager.h"

#include <algorithm>
#include <random>
#include <utility>

#include "net/failure_reason.h"
#include "util/clock.h"

namespace connmgr {

// One node's link: the attempt under way, the retry timer, or the established
// connection, and the callers waiting for it. One of `dial` (kConnecting),
// `timer` (kWaitingRetry) and `connection` (kActive) is live; an attempt
// waiting for a dial slot (kConnecting) has its entry in the manager's queue
// instead of a dial, and a dropped connection (still kActive) has the timer
// that hands its drop to a later loop turn.
//
// The callbacks of the dial, the timer and the connection point at this
// link, and none of them can run once it is gone: the destructor cancels the
// dial (a cancelled dial never calls back, net/dial_handle.h), a Timer's
// callback dies with it (util/uv_handle.h), and a Connection's drop callback
// never fires after its destruction (net/connection.h). Nor can an old
// callback reach a newer state of the link: a dial begins only once the
// previous one has called back, and Timer::start() replaces the callback.
struct ConnectionManager::Link {
  Link() = default;
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;
  ~Link() { dial.cancel(); }

  std::string node_id;
  LinkState state = LinkState::kConnecting;
  bool dialing = false;  // holds one of the manager's dial slots
  bool queued = false;   // waits for a slot, at `queue_entry`
  bool reconnect = false;

  // What to dial: a fixed endpoint, or the node's best (of `protocol`).
  std::optional<int64_t> fixed_endpoint;
  std::optional<std::string> protocol;
  std::chrono::milliseconds timeout{10000};
  RetryOptions retry;

  int attempts = 0;  // attempts made towards the current link
  // Endpoints that failed in the current series: a node connect tries each
  // of the others before one of these again (see best_ranked).
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
  // Allocated only while a retry (or the handling of a drop) is pending, so
  // that an active link carries no timer.
  std::unique_ptr<Timer> timer;
  std::unique_ptr<Connection> connection;
  std::list<QueuedDial>::iterator queue_entry;
  std::vector<Waiter> waiters;
};

namespace {

// An event about `link`, with the endpoint it dialled last when there is one.
Event link_event(EventType type, const ConnectionManager::Link& link) {
  Event ev;
  ev.type = type;
  ev.node_id = link.node_id;
  if (link.endpoint.id != 0) {
    ev.endpoint_id = link.endpoint.id;
    ev.protocol = link.endpoint.protocol;
  }
  return ev;
}

}  // namespace

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
    : loop_(loop), store_(store), connectors_(connectors), events_(events), config_(config) {
  posted_timer_.init(loop_);
  posted_timer_.unref();
}

ConnectionManager::~ConnectionManager() {
  shutdown();
  // Calls posted by shutdown() itself (cancelled answers) and any others
  // still pending run now: the loop will not see this manager again.
  while (!posted_.empty()) run_posted();
}

void ConnectionManager::post(std::function<void()> fn) {
  posted_.push_back(std::move(fn));
  if (posted_.size() == 1) posted_timer_.start(0, [this] { run_posted(); });
}

void ConnectionManager::run_posted() {
  // Calls may post more calls; those run on the next turn.
  auto calls = std::move(posted_);
  posted_.clear();
  for (auto& fn : calls) fn();
}

void ConnectionManager::publish(Event event) {
  if (event.at == 0) event.at = unix_now_ms();
  events_.publish(event);
}

// --- reads ------------------------------------------------------------------

Result<NodePage> ConnectionManager::get_all_nodes(int limit, const std::optional<std::string>& after) {
  return store_.list_nodes(limit, after);
}

Result<std::vector<Endpoint>> ConnectionManager::get_endpoints_for_node(
    const std::string& node_id, const std::optional<std::string>& protocol) {
  return store_.endpoints_of(node_id, protocol);
}

// --- connect ----------------------------------------------------------------

void ConnectionManager::connect(const ConnectRequest& request, ConnectDone done) {
  auto answer_error = [this, &done](Error e) {
    post([done = std::move(done), e = std::move(e)] { done(e, nullptr); });
  };
  if (shut_down_) {
    answer_error(Error::cancelled("the connection manager is shutting down", reason::kShutdown));
    return;
  }
  if (request.endpoint_id.has_value() == request.node_id.has_value()) {
    answer_error(Error::invalid_params("give exactly one of endpoint_id and node_id"));
    return;
  }
  if (request.endpoint_id) {
    auto ep = store_.get_endpoint(*request.endpoint_id);
    if (!ep) {
      answer_error(ep.error());
      return;
    }
    ConnectRequest resolved = request;
    resolved.node_id = ep->node_id;
    resolved.protocol.reset();
    join_or_start(resolved, std::move(done), nullptr);
    return;
  }
  if (request.protocol && !connectors_.find(*request.protocol)) {
    answer_error(Error::unsupported_protocol(*request.protocol));
    return;
  }
  // The node and its ranked endpoints in one read: the first attempt uses
  // them rather than reading again (each read transaction takes two fcntl
  // locks of the WAL index).
  auto found = store_.node_with_endpoints(*request.node_id, request.protocol);
  if (!found) {
    answer_error(found.error());
    return;
  }
  join_or_start(request, std::move(done), &found->endpoints);
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
        // A node has one link: an active one is answered, not dialled again.
        LinkInfo info = info_of(link);
        post([done = std::move(done), info] { done(ConnectOutcome{info, true}, nullptr); });
        return;
      }
      case LinkState::kConnecting:
        // One dial per node: join it.
        link.waiters.push_back(Waiter{std::move(done), request.wait});
        return;
      case LinkState::kWaitingRetry:
        // A scheduled retry is replaced by an attempt now, with this
        // request's options (start_attempt drops the timer).
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

std::unique_ptr<ConnectionManager::Link> ConnectionManager::erase_link(Link& link) {
  auto it = links_.find(link.node_id);
  std::unique_ptr<Link> erased = std::move(it->second);
  if (erased->state == LinkState::kActive) --active_;
  links_.erase(it);
  if (erased->queued) {
    dial_queue_.erase(erased->queue_entry);
    erased->queued = false;
  }
  erased->dial.cancel();
  end_dial(*erased);  // the slot goes to the next attempt waiting, if any
  return erased;
}

// --- one attempt ------------------------------------------------------------

void ConnectionManager::start_attempt(Link& link, const std::vector<Endpoint>* ranked) {
  // Called from the retry timer's callback too: the Timer may go while it
  // runs, and an attempt under way carries none.
  link.timer.reset();
  set_state(link, LinkState::kConnecting);
  link.next_attempt_at.reset();

  auto chosen = choose_endpoint(link, ranked);
  if (!chosen) {
    fail_link(link, chosen.error());
    return;
  }
  link.endpoint = Link::Target{chosen->id, chosen->protocol, chosen->address, chosen->port};
  link.attempts += 1;
  Event ev = link_event(EventType::kConnecting, link);
  ev.attempt = link.attempts;
  publish(std::move(ev));

  DialRequest request = dial_request(link, *chosen);
  if (dialing_ < dial_slots() && dial_queue_.empty()) {
    begin_dial(link, request);
    return;
  }
  // No slot free: the attempt waits its turn (state connecting); its dial
  // timeout counts from when the dial begins.
  link.queue_entry = dial_queue_.insert(dial_queue_.end(), QueuedDial{&link, std::move(request)});
  link.queued = true;
}

// The endpoint to dial, ranked afresh before every attempt: the fixed one,
// or the node's best (docs/guide.md, "how an endpoint is chosen").
Result<Endpoint> ConnectionManager::choose_endpoint(Link& link,
                                                   const std::vector<Endpoint>* ranked) {
  if (link.fixed_endpoint) {
    auto ep = store_.get_endpoint(*link.fixed_endpoint);
    if (!ep) return ep.error();
    if (!connectors_.find(ep->protocol)) return Error::unsupported_protocol(ep->protocol);
    return ep;
  }
  if (ranked) return best_ranked(link, *ranked);  // what connect() just read
  auto fetched = store_.endpoints_of(link.node_id, link.protocol);
  if (!fetched) return fetched.error();
  return best_ranked(link, *fetched);
}

// The store ranks by the record. Refinement: an endpoint that already failed
// in this series gives way to one not yet tried, whatever its record, so one
// series tries every endpoint before repeating one; once all have failed,
// the ranking alone decides again. Endpoints without a connector are skipped.
Result<Endpoint> ConnectionManager::best_ranked(Link& link, const std::vector<Endpoint>& ranked) {
  const Endpoint* best = nullptr;
  for (const auto& ep : ranked) {
    if (!connectors_.find(ep.protocol)) continue;
    if (!best) best = &ep;
    if (std::find(link.failed_endpoints.begin(), link.failed_endpoints.end(), ep.id) ==
        link.failed_endpoints.end()) {
      return ep;  // the best not yet tried
    }
  }
  link.failed_endpoints.clear();
  if (best) return *best;
  const std::string node = "node '" + link.node_id + "'";
  if (!ranked.empty()) {
    return Error::unsupported_protocol(ranked.front().protocol,
                                       node + " has no endpoint of a supported protocol");
  }
  if (link.protocol)
    return Error::no_usable_endpoint(node + " has no " + *link.protocol + " endpoint");
  return Error::no_usable_endpoint(node + " has no endpoints");
}

DialRequest ConnectionManager::dial_request(const Link& link, const Endpoint& endpoint) const {
  DialRequest request;
  request.node_id = link.node_id;
  request.endpoint_id = endpoint.id;
  request.protocol = endpoint.protocol;
  request.address = endpoint.address;
  request.port = endpoint.port;
  request.server_name = endpoint.server_name;
  request.alpn = endpoint.alpn;
  request.pin_sha256 = endpoint.pin_sha256;
  request.timeout = link.timeout;
  return request;
}

size_t ConnectionManager::dial_slots() const {
  return static_cast<size_t>(std::max(1, config_.max_concurrent_dials));
}

void ConnectionManager::begin_dial(Link& link, const DialRequest& request) {
  Connector* connector = connectors_.find(request.protocol);
  link.dialing = true;
  ++dialing_;
  // The link cancels its dial when it ends, and a cancelled dial never calls
  // back: whenever this callback runs, `dialing` is alive and dialling. Two
  // pointers fit in std::function without a heap block.
  Link* dialing = &link;
  link.dial = connector->connect(request, [this, dialing](Result<std::unique_ptr<Connection>> r) {
    on_dial_done(*dialing, std::move(r));
  });
}

void ConnectionManager::end_dial(Link& link) {
  if (!link.dialing) return;
  link.dialing = false;
  --dialing_;
  if (!shut_down_) start_waiting_dials();
}

void ConnectionManager::start_waiting_dials() {
  // Oldest first. Every entry is a live link's: erase_link removes a link's
  // entry with the link.
  while (dialing_ < dial_slots() && !dial_queue_.empty()) {
    QueuedDial next = std::move(dial_queue_.front());
    dial_queue_.pop_front();
    next.link->queued = false;
    begin_dial(*next.link, next.request);
  }
}

void ConnectionManager::set_config(const ConnectionConfig& config) {
  config_ = config;
  start_waiting_dials();  // max_concurrent_dials may have grown
}

size_t ConnectionManager::dials_waiting() const { return dial_queue_.size(); }

// --- outcomes ---------------------------------------------------------------

void ConnectionManager::on_dial_done(Link& link, Result<std::unique_ptr<Connection>> result) {
  link.dial = DialHandle();
  end_dial(link);  // the slot goes to the next attempt waiting, if any
  if (result.ok()) {
    on_connected(link, std::move(result).value());
  } else {
    on_dial_failed(link, result.error());
  }
}

void ConnectionManager::on_connected(Link& link, std::unique_ptr<Connection> connection) {
  const int64_t now = unix_now_ms();
  store_.record_success(link.endpoint.id, now);
  link.connection = std::move(connection);
  std::vector<int64_t>().swap(link.failed_endpoints);  // a held link keeps no capacity
  set_state(link, LinkState::kActive);
  link.since = now;
  // The connection is the link's, and its drop callback never fires after
  // its destruction, so a pointer to the link is safe (and two pointers fit
  // in std::function without a heap block per held link).
  Link* held = &link;
  link.connection->set_drop_callback([this, held](const std::string& reason) {
    // The connection is inside its own I/O callback: the drop is handled on
    // a later turn, where destroying it is safe, by a timer of the link's
    // own (a disconnect meanwhile takes it away with the link).
    held->timer = std::make_unique<Timer>(loop_);
    held->timer->start(0, [this, held, reason] { on_drop(*held, reason); });
  });
  Event ev = link_event(EventType::kConnected, link);
  ev.attempt = link.attempts;
  publish(std::move(ev));
  answer_success(link, false);  // last: `link` may be gone after it
}

void ConnectionManager::on_dial_failed(Link& link, const Error& error) {
  const std::string reason = error.reason().empty() ? std::string("EIO") : error.reason();
  store_.record_failure(link.endpoint.id, reason, unix_now_ms());
  link.failed_endpoints.push_back(link.endpoint.id);
  Event ev = link_event(EventType::kConnectFailed, link);
  ev.reason = reason;
  ev.attempt = link.attempts;
  publish(std::move(ev));

  const bool attempts_remain = link.attempts < link.retry.max_attempts;
  if (attempts_remain || link.reconnect) {
    // A supervised link never gives up until disconnect; max_attempts bounds
    // only how long a `wait` caller waits.
    schedule_retry(link, link.attempts);
  }
  answer_failure(link, Error::connect_failed(error.message(), reason), attempts_remain);
  if (link.state != LinkState::kWaitingRetry) erase_link(link);  // `link` dies here
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

// `error`: the kConnectFailed answer of the attempt that just failed.
void ConnectionManager::answer_failure(Link& link, const Error& error, bool attempts_remain) {
  ConnectFailure failure;
  failure.endpoint_id = link.endpoint.id;
  failure.attempts = link.attempts;
  failure.reason = error.reason();
  failure.retry_scheduled = link.state == LinkState::kWaitingRetry;
  failure.next_attempt_at = link.next_attempt_at;
  // Callers without `wait` are answered after this attempt; `wait` callers
  // once the attempts are spent.
  std::vector<Waiter> keep;
  for (auto& w : link.waiters) {
    if (w.wait && attempts_remain) {
      keep.push_back(std::move(w));
    } else {
      post([done = std::move(w.done), error, failure] { done(error, &failure); });
    }
  }
  link.waiters = std::move(keep);
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
  erase_link(link);  // `link` dies here
}

void ConnectionManager::schedule_retry(Link& link, int failed_attempts) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  const auto delay = backoff_delay_jittered(link.retry, failed_attempts,
                                            std::uniform_real_distribution<double>(0, 1)(rng));
  set_state(link, LinkState::kWaitingRetry);
  link.next_attempt_at = unix_now_ms() + delay.count();
  // After a drop this runs inside the link's timer callback: the Timer is
  // restarted, which its callback may do.
  if (!link.timer) link.timer = std::make_unique<Timer>(loop_);
  Link* waiting = &link;
  link.timer->start(static_cast<uint64_t>(delay.count()),
                    [this, waiting] { start_attempt(*waiting); });

  Event ev = link_event(EventType::kRetryScheduled, link);
  ev.protocol.reset();  // a node's next attempt may choose another endpoint
  ev.attempt = failed_attempts + 1;
  ev.delay_ms = delay.count();
  ev.next_attempt_at = link.next_attempt_at;
  publish(std::move(ev));
}

void ConnectionManager::on_drop(Link& link, const std::string& reason) {
  Event ev = link_event(EventType::kDisconnected, link);
  ev.reason = reason;
  publish(std::move(ev));
  link.connection.reset();
  if (!link.reconnect || shut_down_) {
    erase_link(link);  // `link` dies here, and its timer, whose callback this is
    return;
  }
  // Supervised: re-establish on the backoff schedule, counting afresh.
  link.attempts = 0;
  link.since = unix_now_ms();
  schedule_retry(link, 1);
}

// --- disconnect and shutdown -------------------------------------------------

void ConnectionManager::end_link(const std::string& node_id, const char* reason,
                                 DisconnectOutcome* outcome) {
  auto it = links_.find(node_id);
  if (it == links_.end()) return;
  // Out of the map, queue and dial slot; its timer and dial go with it.
  std::unique_ptr<Link> link = erase_link(*it->second);
  const bool was_connected = link->state == LinkState::kActive;
  if (outcome) {
    outcome->was_connected = was_connected;
    outcome->cancelled_attempts = !was_connected;
  }
  if (link->connection) {
    link->connection->set_drop_callback(nullptr);
    link->connection->close();
  }
  if (was_connected) {
    Event ev = link_event(EventType::kDisconnected, *link);
    ev.reason = reason;
    publish(std::move(ev));
  }
  const Error cancelled = Error::cancelled(
      "connect to node '" + link->node_id + "' cancelled (" + reason + ")", reason);
  for (auto& w : link->waiters)
    post([done = std::move(w.done), cancelled] { done(cancelled, nullptr); });
}

DisconnectOutcome ConnectionManager::disconnect_node(const std::string& node_id) {
  DisconnectOutcome outcome;
  end_link(node_id, reason::kRequested, &outcome);
  return outcome;
}

void ConnectionManager::shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  while (!links_.empty()) end_link(links_.begin()->first, reason::kShutdown, nullptr);
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
