#include "core/connection_manager.h"

#include <algorithm>
#include <random>
#include <utility>

#include "net/failure_reason.h"
#include "util/clock.h"

namespace connmgr {

// A link's streams: allocated with the link's first stream (a held link
// without streams carries one null pointer), kept until the link ends or
// drops, since its totals count every stream of the link since it came up.
// The link's end takes it from the link and ends what it holds
// (end_streams); its destructor only guards against a path that did not.
struct ConnectionManager::LinkStreams {
  LinkStreams() = default;
  LinkStreams(const LinkStreams&) = delete;
  LinkStreams& operator=(const LinkStreams&) = delete;
  ~LinkStreams();

  // A stream being opened over the link (Connection::open_stream under way).
  struct Opening {
    DialHandle dial;
    StreamDone done;
    StreamClient client;
    bool reused = false;
  };
  std::list<ManagedStream*> open;     // each removes itself when it ends
  std::map<uint64_t, Opening> opening;  // by a number of the link's own
  uint64_t next_opening = 1;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
};

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
  std::unique_ptr<LinkStreams> streams;  // only once a stream was opened
};

// The Stream open_stream() hands out: the transport's, with the bytes
// counted into the link's totals and the stream's StreamInfo, and its end
// published (stream_closed) with its reason. It is in its link's registry
// until it ends; ended, it no longer touches the manager, so it may outlive
// it. Callbacks pass through from the transport's stream, which never calls
// back from inside a call on it; so neither does this.
class ConnectionManager::ManagedStream final : public Stream {
 public:
  ManagedStream(ConnectionManager& manager, LinkStreams& streams, std::unique_ptr<Stream> inner,
                StreamInfo info)
      : manager_(&manager), streams_(&streams), inner_(std::move(inner)), info_(std::move(info)) {
    entry_ = streams.open.insert(streams.open.end(), this);
    ++manager.streams_open_;
  }
  // An unended stream goes as the user's reset (the transport's stream
  // resets itself when destroyed unended).
  ~ManagedStream() override { finish(stream_reason::kClientClosed); }

  int64_t transport_id() const override { return inner_->transport_id(); }
  void start(Callbacks callbacks) override;
  void write(std::string_view bytes) override {
    if (!streams_ || write_shut_) return;  // ignored, as the transport ignores it
    info_.bytes_out += bytes.size();
    streams_->bytes_out += bytes.size();
    inner_->write(bytes);
  }
  size_t buffered() const override { return inner_->buffered(); }
  void shutdown_write() override {
    write_shut_ = true;
    inner_->shutdown_write();
  }
  void consume(size_t n) override { inner_->consume(n); }
  void reset() override {
    inner_->reset();  // fires nothing, and neither does this
    user_ = {};
    finish(stream_reason::kClientClosed);
  }

  // The manager ends the stream (its link ends): reset toward the node, the
  // user told with `reason`.
  void end(const char* reason) {
    inner_->reset();
    ended(reason);
  }
  const StreamInfo& info() const { return info_; }

 private:
  void on_data(std::string_view bytes) {
    info_.bytes_in += bytes.size();
    if (streams_) streams_->bytes_in += bytes.size();
    if (user_.on_data) user_.on_data(bytes);  // last: may destroy this
  }
  // Final: out of the registry, stream_closed published, then on_end.
  void ended(const std::string& reason) {
    auto on_end = std::move(user_.on_end);
    user_ = {};
    finish(reason);
    if (on_end) on_end(reason);  // last: may destroy this
  }
  void finish(const std::string& reason);

  ConnectionManager* manager_;
  LinkStreams* streams_;  // null once ended
  std::list<ManagedStream*>::iterator entry_;
  std::unique_ptr<Stream> inner_;
  StreamInfo info_;
  Callbacks user_;
  bool write_shut_ = false;
};

void ConnectionManager::ManagedStream::start(Callbacks callbacks) {
  user_ = std::move(callbacks);
  Callbacks mine;
  mine.on_data = [this](std::string_view bytes) { on_data(bytes); };
  mine.on_eof = [this] {
    if (user_.on_eof) user_.on_eof();
  };
  mine.on_writable = [this] {
    if (user_.on_writable) user_.on_writable();
  };
  mine.on_end = [this](const std::string& reason) { ended(reason); };
  inner_->start(std::move(mine));
}

void ConnectionManager::ManagedStream::finish(const std::string& reason) {
  if (!streams_) return;
  streams_->open.erase(entry_);
  streams_ = nullptr;
  --manager_->streams_open_;
  manager_->publish_stream(EventType::kStreamClosed, info_, &reason);
}

ConnectionManager::LinkStreams::~LinkStreams() {
  for (auto& [id, o] : opening) o.dial.cancel();
  while (!open.empty()) open.front()->end(stream_reason::kLinkLost);
}

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

// An event about a stream: stream_opened, or stream_closed with its reason
// and bytes.
Event stream_event(EventType type, const StreamInfo& info, const std::string* reason) {
  Event ev;
  ev.type = type;
  ev.node_id = info.node_id;
  ev.endpoint_id = info.endpoint_id;
  ev.protocol = info.protocol;
  ev.stream_id = info.stream_id;
  if (reason) {
    ev.reason = *reason;
    ev.bytes_in = info.bytes_in;
    ev.bytes_out = info.bytes_out;
  }
  return ev;
}

// A failed dial's reason, for the endpoint's record and the answer.
std::string dial_reason(const Error& error) {
  return error.reason().empty() ? std::string("EIO") : error.reason();
}

// TCP has no streams: each of a TCP link's streams is a dial of its own,
// which counts for the endpoint's statistics like any dial.
constexpr std::string_view kTcpProtocol = "tcp";

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
  record_dial(link.endpoint.id, {});
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
  const std::string reason = dial_reason(error);
  record_dial(link.endpoint.id, reason);
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

// `failure_reason`: empty for a success.
void ConnectionManager::record_dial(int64_t endpoint_id, const std::string& failure_reason) {
  if (failure_reason.empty()) {
    store_.record_success(endpoint_id, unix_now_ms());
  } else {
    store_.record_failure(endpoint_id, failure_reason, unix_now_ms());
  }
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
  // The streams and the connection leave the link first: the streams end
  // last (their users, told, may disconnect the node and free `link`), and
  // the connection goes after them.
  std::unique_ptr<LinkStreams> streams = std::move(link.streams);
  std::unique_ptr<Connection> connection = std::move(link.connection);
  Event ev = link_event(EventType::kDisconnected, link);
  ev.reason = reason;
  publish(std::move(ev));
  if (!link.reconnect || shut_down_) {
    erase_link(link);  // `link` dies here, and its timer, whose callback this is
  } else {
    // Supervised: re-establish on the backoff schedule, counting afresh.
    link.attempts = 0;
    link.since = unix_now_ms();
    schedule_retry(link, 1);
  }
  end_streams(std::move(streams), stream_reason::kLinkLost);
}

// --- disconnect and shutdown -------------------------------------------------

void ConnectionManager::end_link(const std::string& node_id, const char* reason,
                                 const char* streams_end, DisconnectOutcome* outcome) {
  auto it = links_.find(node_id);
  if (it == links_.end()) return;
  // Out of the map, queue and dial slot; its timer and dial go with it.
  std::unique_ptr<Link> link = erase_link(*it->second);
  const bool was_connected = link->state == LinkState::kActive;
  if (outcome) {
    outcome->was_connected = was_connected;
    outcome->cancelled_attempts = !was_connected;
  }
  // The streams end before their link (the link is out of the map: their
  // users, told, cannot reach it).
  end_streams(std::move(link->streams), streams_end);
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
  end_link(node_id, reason::kRequested, stream_reason::kDisconnect, &outcome);
  return outcome;
}

DisconnectOutcome ConnectionManager::remove_node_links(const std::string& node_id) {
  DisconnectOutcome outcome;
  end_link(node_id, reason::kRequested, stream_reason::kNodeRemoved, &outcome);
  return outcome;
}

void ConnectionManager::shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  while (!links_.empty())
    end_link(links_.begin()->first, reason::kShutdown, stream_reason::kShutdown, nullptr);
}

// --- streams -------------------------------------------------------------------

void ConnectionManager::open_stream(const ConnectRequest& request, const StreamClient& client,
                                    StreamDone done) {
  ConnectRequest link_request = request;
  link_request.wait = true;
  const Deadline deadline =
      std::chrono::steady_clock::now() + request.timeout.value_or(config_.connection_timeout);
  // connect() answers on a later turn, or from its dial's callback, and
  // before the manager is gone (its destructor runs what is posted).
  connect(link_request, [this, deadline, client, done = std::move(done)](
                            Result<ConnectOutcome> link, const ConnectFailure* failure) mutable {
    on_stream_link(deadline, client, std::move(done), std::move(link), failure);
  });
}

// The link is up (or its errors are the answer): the stream opens over it
// within what remains of the request's timeout.
void ConnectionManager::on_stream_link(Deadline deadline, const StreamClient& client,
                                       StreamDone done, Result<ConnectOutcome> link,
                                       const ConnectFailure* failure) {
  if (!link) return done(link.error(), failure);
  const std::string& node_id = link->link.node_id;
  if (shut_down_) {
    return done(Error::cancelled("the connection manager is shutting down", reason::kShutdown),
                nullptr);
  }
  auto it = links_.find(node_id);
  if (it == links_.end() || !it->second->connection) {
    return done(Error::stream_refused("the link to node '" + node_id + "' was lost",
                                      stream_reason::kLinkLost),
                nullptr);
  }
  if (streams_open_ + streams_opening_ >= config_.max_streams) {
    return done(Error::stream_refused("too many streams: max_streams (" +
                                          std::to_string(config_.max_streams) + ") are open",
                                      "limit"),
                nullptr);
  }
  using std::chrono::milliseconds;
  const auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
  begin_stream(*it->second, std::max(left, milliseconds(1)), client, link->reused, std::move(done));
}

ConnectionManager::LinkStreams& ConnectionManager::streams_of(Link& link) {
  if (!link.streams) link.streams = std::make_unique<LinkStreams>();
  return *link.streams;
}

void ConnectionManager::begin_stream(Link& link, std::chrono::milliseconds timeout,
                                     const StreamClient& client, bool reused, StreamDone done) {
  LinkStreams& streams = streams_of(link);
  const uint64_t id = streams.next_opening++;
  LinkStreams::Opening& opening = streams.opening[id];
  opening.done = std::move(done);
  opening.client = client;
  opening.reused = reused;
  ++streams_opening_;
  // The link cancels the opens under way when it ends (end_streams), and a
  // cancelled open never calls back: whenever this runs, the link is alive.
  Link* held = &link;
  opening.dial = link.connection->open_stream(
      timeout, StreamLimits{config_.stream_buffer},
      [this, held, id](Result<std::unique_ptr<Stream>> r) { on_stream_opened(*held, id, std::move(r)); });
}

void ConnectionManager::on_stream_opened(Link& link, uint64_t opening_id,
                                         Result<std::unique_ptr<Stream>> result) {
  LinkStreams& streams = *link.streams;
  auto node = streams.opening.extract(opening_id);
  LinkStreams::Opening& opening = node.mapped();
  --streams_opening_;
  if (link.endpoint.protocol == kTcpProtocol)
    record_dial(link.endpoint.id, result.ok() ? std::string() : dial_reason(result.error()));
  if (!result) return on_stream_failed(link, std::move(opening.done), result.error());

  StreamInfo info;
  info.stream_id = next_stream_id_++;
  info.node_id = link.node_id;
  info.endpoint_id = link.endpoint.id;
  info.protocol = link.endpoint.protocol;
  info.opened_at = unix_now_ms();
  info.client = opening.client;
  OpenedStream opened;
  opened.stream_id = info.stream_id;
  opened.link_reused = opening.reused;
  opened.stream = std::make_unique<ManagedStream>(*this, streams, std::move(result).value(), info);
  opened.link = info_of(link);
  publish_stream(EventType::kStreamOpened, info);
  opening.done(std::move(opened), nullptr);  // from the transport's callback: last
}

// A TCP stream's dial failed ("refused", with the dial's reason); other
// refusals (QUIC's "stream_limit", "link_lost") pass through.
void ConnectionManager::on_stream_failed(Link& link, StreamDone done, const Error& error) {
  if (error.code() != ErrorCode::kConnectFailed) return done(error, nullptr);
  ConnectFailure failure;
  failure.endpoint_id = link.endpoint.id;
  failure.attempts = 1;
  failure.reason = dial_reason(error);
  done(Error::stream_refused("the stream's dial to node '" + link.node_id + "' failed (" +
                                 failure.reason + "): " + error.message(),
                             "refused"),
       &failure);
}

void ConnectionManager::end_streams(std::unique_ptr<LinkStreams> streams, const char* reason) {
  if (!streams) return;
  // Opens under way: cancelled (they never call back), answered on a later turn.
  const std::string why = reason;
  const Error error = why == stream_reason::kLinkLost
                          ? Error::stream_refused("the link was lost", why)
                          : Error::cancelled("the stream's open was cancelled (" + why + ")", why);
  for (auto& [id, opening] : streams->opening) {
    opening.dial.cancel();
    --streams_opening_;
    post([done = std::move(opening.done), error] { done(error, nullptr); });
  }
  streams->opening.clear();
  // Each ends and leaves the registry; its user, told, may destroy others,
  // which leave it too.
  while (!streams->open.empty()) streams->open.front()->end(reason);
}

void ConnectionManager::publish_stream(EventType type, const StreamInfo& info,
                                       const std::string* reason) {
  if (!events_.wants(type)) return;  // nobody listens: not built
  publish(stream_event(type, info, reason));
}

std::vector<StreamInfo> ConnectionManager::list_streams() const {
  std::vector<StreamInfo> out;
  out.reserve(streams_open_);
  for (const auto& [id, link] : links_) {
    if (!link->streams) continue;
    for (const ManagedStream* s : link->streams->open) out.push_back(s->info());
  }
  return out;
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
  if (link.streams) {
    info.streams = link.streams->open.size();
    info.bytes_in = link.streams->bytes_in;
    info.bytes_out = link.streams->bytes_out;
  }
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

// --- interface stubs (issue 15 work in progress on branch i15) ----------------

std::string_view address_class_name(AddressClass c) {
  static constexpr std::string_view kNames[] = {"tcp4", "tcp6", "udp4", "udp6"};
  return kNames[static_cast<size_t>(c)];
}

std::string_view decision_name(Decision d) {
  static constexpr std::string_view kNames[] = {"reuse", "join", "dial", "wait_retry", "no_endpoint"};
  return kNames[static_cast<size_t>(d)];
}

Result<Explanation> ConnectionManager::explain(const std::string& node_id,
                                               const std::optional<std::string>&) {
  return Error::internal("nodes.explain is not built yet: " + node_id);  // STUB (i15)
}

NetworkStatus ConnectionManager::network_status() const { return NetworkStatus{}; }  // STUB (i15)

void ConnectionManager::network_changed() {}  // STUB (i15)

}  // namespace connmgr
