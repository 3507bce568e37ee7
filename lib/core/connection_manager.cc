#include "core/connection_manager.h"

#include <algorithm>
#include <cmath>
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

// One dial of an attempt, from its `connecting` event until it succeeds,
// fails or is cancelled: waiting for a slot (`queued`, its entry in the
// manager's queue) or under way (`dialing`, holding a slot, `handle`).
struct ConnectionManager::Dial {
  Dial() = default;
  Dial(const Dial&) = delete;
  Dial& operator=(const Dial&) = delete;
  ~Dial() { handle.cancel(); }

  Link* link = nullptr;
  size_t index = 0;  // its candidate in the attempt's plan
  DialRequest request;
  DialHandle handle;
  bool dialing = false;
  bool queued = false;
  std::list<Dial*>::iterator queue_entry;
  int family = 0;  // of the address dialled last (DialRequest::on_address); 0 before any
  uint64_t began_ns = 0;  // uv_hrtime() when it got its slot (dial_duration)
};

// One attempt of the retry schedule: its candidates (one endpoint, or a
// race's in rank order) and their dials. Allocated per attempt and freed
// when it ends (end_attempt), so that a held link carries none.
struct ConnectionManager::Attempt {
  std::vector<Endpoint> plan;
  size_t launched = 0;  // plan[0, launched) were started
  std::vector<std::unique_ptr<Dial>> dials;  // started and not ended
  // The failure reported when every candidate failed: the best-ranked one's.
  std::optional<Error> best_failure;
  size_t best_failure_index = SIZE_MAX;
  std::optional<uint64_t> race_start;  // loop ms when the first dial began
  Timer race_timer;  // starts the next candidate; opened only for a race
};

// One node's link: the attempt under way, the retry timer, or the established
// connection, and the callers waiting for it. One of `attempt` (kConnecting),
// `timer` (kWaitingRetry) and `connection` (kActive) is live; an attempt's
// dials wait for a slot in the manager's queue or are under way, and a
// dropped connection (still kActive) has the timer that hands its drop to a
// later loop turn.
//
// The callbacks of the dials, the timers and the connection point at this
// link (or its dials), and none of them can run once it is gone: the
// attempt's end cancels its dials (a cancelled dial never calls back,
// net/dial_handle.h), a Timer's callback dies with it (util/uv_handle.h),
// and a Connection's drop callback never fires after its destruction
// (net/connection.h). Nor can an old callback reach a newer state of the
// link: an attempt begins only once the previous one has ended, and
// Timer::start() replaces the callback.
struct ConnectionManager::Link {
  Link() = default;
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  std::string node_id;
  LinkState state = LinkState::kConnecting;
  bool reconnect = false;
  // Where the link is counted in ManagerMetrics' links gauge (protocol
  // index, state), kept by count_link(); kNotCounted before.
  uint8_t counted_protocol = kNotCounted;
  uint8_t counted_state = 0;
  static constexpr uint8_t kNotCounted = 0xff;

  // What to dial: a fixed endpoint, or the node's best (of `protocol`).
  std::optional<int64_t> fixed_endpoint;
  std::optional<std::string> protocol;
  std::chrono::milliseconds timeout{10000};
  RetryOptions retry;

  // Attempts made towards the current link; after a drop sooner than
  // stable_link it goes on counting (flap damping, see on_drop).
  int attempts = 0;
  // Endpoints that failed in the current series: a node connect tries each
  // of the others before one of these again (see rank_candidates).
  std::vector<int64_t> failed_endpoints;
  int64_t since = 0;
  std::optional<int64_t> next_attempt_at;
  int64_t retry_delay_ms = 0;  // of the retry scheduled (kWaitingRetry)
  // The endpoint dialled last, or connected: what connections.list and the
  // events show of it. Not the whole Endpoint record: a held link carries
  // only this (a manager may hold 50,000 of them).
  struct Target {
    int64_t id = 0;
    std::string protocol;
    std::string address;
    int port = 0;
  } endpoint;

  std::unique_ptr<Attempt> attempt;
  // Allocated only while a retry (or the handling of a drop) is pending, so
  // that an active link carries no timer.
  std::unique_ptr<Timer> timer;
  std::unique_ptr<Connection> connection;
  std::vector<Waiter> waiters;
  std::unique_ptr<LinkStreams> streams;  // only once a stream was opened
  std::vector<RecentAttempt> recent;  // oldest first, at most kRecentAttempts
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
    protocol_ = manager.metrics_.protocol_index(info_.protocol);
    ++metrics().streams;
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
    metrics().stream_bytes_out += bytes.size();
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
    if (streams_) {
      streams_->bytes_in += bytes.size();
      metrics().stream_bytes_in += bytes.size();
    }
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
  // The manager's figures for the stream's protocol (while it is open only:
  // an ended stream may outlive the manager).
  ProtocolMetrics& metrics() { return manager_->metrics_.protocols[protocol_]; }

  ConnectionManager* manager_;
  LinkStreams* streams_;  // null once ended
  std::list<ManagedStream*>::iterator entry_;
  std::unique_ptr<Stream> inner_;
  StreamInfo info_;
  Callbacks user_;
  bool write_shut_ = false;
  uint8_t protocol_ = 0;  // ManagerMetrics::protocols index
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
  --metrics().streams;
  manager_->publish_stream(EventType::kStreamClosed, info_, &reason);
}

ConnectionManager::LinkStreams::~LinkStreams() {
  for (auto& [id, o] : opening) o.dial.cancel();
  while (!open.empty()) open.front()->end(stream_reason::kLinkLost);
}

namespace {

using Target = ConnectionManager::Link::Target;

Target target_of(const Endpoint& ep) { return Target{ep.id, ep.protocol, ep.address, ep.port}; }

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

// An event about one dial of the link's attempt.
Event dial_event(EventType type, const ConnectionManager::Link& link, const Endpoint& ep) {
  Event ev;
  ev.type = type;
  ev.node_id = link.node_id;
  ev.endpoint_id = ep.id;
  ev.protocol = ep.protocol;
  ev.attempt = link.attempts;
  return ev;
}

// The address class of a dial of `ep`: the family of the address the
// connector started last, else the endpoint's literal family, else IPv4 (a
// host name that failed before any address, e.g. in DNS).
AddressClass class_of(const Endpoint& ep, int family) {
  if (family == 0) family = literal_family(ep.address);
  return address_class(ep.protocol, family);
}

double unit_random() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0, 1)(rng);
}

// Attempts kept per node for explain.
constexpr size_t kRecentAttempts = 16;

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

Decision ConnectionManager::decide(const Link* link) {
  if (!link) return Decision::kDial;
  switch (link->state) {
    case LinkState::kActive:
      return Decision::kReuse;
    case LinkState::kConnecting:
      return Decision::kJoin;
    case LinkState::kWaitingRetry:
      return Decision::kWaitRetry;
  }
  return Decision::kDial;
}

void ConnectionManager::join_or_start(const ConnectRequest& request, ConnectDone done,
                                      std::vector<Endpoint>* ranked) {
  const std::string& node_id = *request.node_id;
  auto it = links_.find(node_id);
  Link* link = it == links_.end() ? nullptr : it->second.get();
  // A joiner asking for supervision makes the link supervised.
  if (link) link->reconnect = link->reconnect || request.reconnect;
  switch (decide(link)) {
    case Decision::kReuse: {
      // A node has one link: an active one is answered, not dialled again.
      LinkInfo info = info_of(*link);
      post([done = std::move(done), info] { done(ConnectOutcome{info, true}, nullptr); });
      return;
    }
    case Decision::kJoin:
      // One attempt per node: join it.
      link->waiters.push_back(Waiter{std::move(done), request.wait});
      return;
    case Decision::kWaitRetry:
      // A scheduled retry is replaced by an attempt now, with this
      // request's options (start_attempt drops the timer).
      configure(*link, request);
      link->waiters.push_back(Waiter{std::move(done), request.wait});
      start_attempt(*link, ranked);
      return;
    case Decision::kDial:
    case Decision::kNoEndpoint:
      break;
  }
  Link& fresh = add_link(node_id);
  configure(fresh, request);
  fresh.waiters.push_back(Waiter{std::move(done), request.wait});
  start_attempt(fresh, ranked);
}

ConnectionManager::Link& ConnectionManager::add_link(const std::string& node_id) {
  auto link = std::make_unique<Link>();
  link->node_id = node_id;
  // The node's recent attempts follow it from link to link.
  if (auto kept = recent_.find(node_id); kept != recent_.end()) {
    link->recent = std::move(kept->second);
    recent_.erase(kept);
  }
  return *links_.emplace(node_id, std::move(link)).first->second;
}

void ConnectionManager::set_state(Link& link, LinkState state) {
  if (link.state == LinkState::kActive) --active_;
  link.state = state;
  if (state == LinkState::kActive) ++active_;
  count_link(link);
}

// The links gauge follows the link's (protocol, state): a link is counted
// under the protocol of the endpoint it dials, dialled last or holds; a
// supervised link that never had an endpoint to dial, under "none". (A link
// is without an endpoint in state connecting only inside start_attempt,
// before its first dial: not counted until then.)
void ConnectionManager::count_link(Link& link) {
  if (link.endpoint.protocol.empty() && link.state == LinkState::kConnecting) return;
  const uint8_t protocol =
      metrics_.protocol_index(link.endpoint.protocol.empty() ? "none" : link.endpoint.protocol);
  const auto state = static_cast<uint8_t>(link.state);
  if (link.counted_protocol == protocol && link.counted_state == state) return;
  uncount_link(link);
  ++metrics_.protocols[protocol].links[state];
  link.counted_protocol = protocol;
  link.counted_state = state;
}

void ConnectionManager::uncount_link(Link& link) {
  if (link.counted_protocol == Link::kNotCounted) return;
  --metrics_.protocols[link.counted_protocol].links[link.counted_state];
  link.counted_protocol = Link::kNotCounted;
}

std::unique_ptr<ConnectionManager::Link> ConnectionManager::erase_link(Link& link) {
  auto it = links_.find(link.node_id);
  std::unique_ptr<Link> erased = std::move(it->second);
  if (erased->state == LinkState::kActive) --active_;
  uncount_link(*erased);
  links_.erase(it);
  end_attempt(*erased);  // its slots go to the dials waiting, if any
  if (!erased->recent.empty()) recent_[erased->node_id] = std::move(erased->recent);
  return erased;
}

// --- one attempt ------------------------------------------------------------

void ConnectionManager::start_attempt(Link& link, std::vector<Endpoint>* ranked) {
  // Called from the retry timer's callback too: the Timer may go while it
  // runs, and an attempt under way carries none.
  link.timer.reset();
  set_state(link, LinkState::kConnecting);
  link.next_attempt_at.reset();

  auto plan = plan_attempt(link, ranked);
  if (!plan) {
    fail_link(link, plan.error());
    return;
  }
  link.attempts += 1;
  link.attempt = std::make_unique<Attempt>();
  link.attempt->plan = std::move(plan).value();
  launch_next(link);
}

// The endpoints of this attempt, ranked afresh before every attempt: the
// fixed one, or the node's (docs/guide.md, "how an endpoint is chosen"):
// the best only, or every eligible one in rank order when they race.
Result<std::vector<Endpoint>> ConnectionManager::plan_attempt(Link& link,
                                                             std::vector<Endpoint>* ranked) {
  if (link.fixed_endpoint) {
    auto ep = store_.get_endpoint(*link.fixed_endpoint);
    if (!ep) return ep.error();
    if (!connectors_.find(ep->protocol)) return Error::unsupported_protocol(ep->protocol);
    return std::vector<Endpoint>{std::move(ep).value()};
  }
  std::vector<Endpoint> endpoints;
  if (ranked) {
    endpoints = std::move(*ranked);  // what connect() just read
  } else {
    auto fetched = store_.endpoints_of(link.node_id, link.protocol);
    if (!fetched) return fetched.error();
    endpoints = std::move(fetched).value();
  }
  Ranking r = rank(std::move(endpoints), link.protocol, &link.failed_endpoints, false);
  if (r.eligible == 0) return no_candidate(link, r);
  if (r.series_exhausted) link.failed_endpoints.clear();
  std::vector<Endpoint> plan;
  const size_t n = r.race ? r.eligible : 1;
  plan.reserve(n);
  for (size_t i = 0; i < n; ++i) plan.push_back(std::move(r.candidates[i].endpoint));
  return plan;
}

Ranking ConnectionManager::rank(std::vector<Endpoint> endpoints,
                                const std::optional<std::string>& protocol,
                                const std::vector<int64_t>* failed_in_series,
                                bool with_reasons) const {
  RankingRules rules;
  rules.protocol = &protocol;
  rules.failed_in_series = failed_in_series;
  rules.connectors = &connectors_;
  rules.config = &config_;
  rules.with_reasons = with_reasons;
  return rank_candidates(std::move(endpoints), rules);
}

// No eligible endpoint: the node has none (of the protocol asked), or none
// with a connector.
Error ConnectionManager::no_candidate(const Link& link, const Ranking& ranking) const {
  const std::string node = "node '" + link.node_id + "'";
  if (!ranking.candidates.empty()) {
    return Error::unsupported_protocol(ranking.candidates.front().endpoint.protocol,
                                       node + " has no endpoint of a supported protocol");
  }
  if (link.protocol)
    return Error::no_usable_endpoint(node + " has no " + *link.protocol + " endpoint");
  return Error::no_usable_endpoint(node + " has no endpoints");
}

void ConnectionManager::launch_next(Link& link) {
  Attempt& a = *link.attempt;
  const Endpoint& ep = a.plan[a.launched];
  auto owned = std::make_unique<Dial>();
  Dial& dial = *owned;
  dial.link = &link;
  dial.index = a.launched++;
  a.dials.push_back(std::move(owned));
  link.endpoint = target_of(ep);
  count_link(link);

  Event ev = dial_event(EventType::kConnecting, link, ep);
  if (a.plan.size() > 1)
    ev.race_offset_ms = a.race_start ? static_cast<int64_t>(uv_now(loop_) - *a.race_start) : 0;
  publish(std::move(ev));

  dial.request = dial_request(link, ep, dial);
  if (dialing_ < dial_slots() && dial_queue_.empty()) {
    begin_dial(dial);
    return;
  }
  // No slot free: the dial waits its turn (state connecting); its timeout
  // counts from when it begins.
  dial.queue_entry = dial_queue_.insert(dial_queue_.end(), &dial);
  dial.queued = true;
}

DialRequest ConnectionManager::dial_request(const Link& link, const Endpoint& endpoint,
                                            Dial& dial) const {
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
  // A host name's addresses race inside the dial by the same delay rule.
  request.attempt_delay = race_delay(config_, endpoint.rtt_ms);
  // Called during the dial only: a cancelled dial never calls back, and
  // the dial is cancelled before `dial` goes.
  Dial* d = &dial;
  request.on_address = [d](int family) { d->family = family; };
  return request;
}

size_t ConnectionManager::dial_slots() const {
  return static_cast<size_t>(std::max(1, config_.max_concurrent_dials));
}

void ConnectionManager::begin_dial(Dial& dial) {
  Attempt& a = *dial.link->attempt;
  Connector* connector = connectors_.find(dial.request.protocol);
  dial.dialing = true;
  dial.began_ns = uv_hrtime();
  ++dialing_;
  if (!a.race_start) a.race_start = uv_now(loop_);
  // The attempt cancels its dials when it ends, and a cancelled dial never
  // calls back: whenever this callback runs, `d` is alive and dialling.
  Dial* d = &dial;
  dial.handle = connector->connect(dial.request, [this, d](Result<std::unique_ptr<Connection>> r) {
    on_dial_done(*d, std::move(r));
  });
  arm_race_timer(*dial.link, dial);
}

// A race dials the next candidate when the last one started has neither
// succeeded nor failed after its attempt delay, counted from when its dial
// began (not while it waited for a slot).
void ConnectionManager::arm_race_timer(Link& link, const Dial& dial) {
  Attempt& a = *link.attempt;
  if (dial.index + 1 != a.launched || a.launched >= a.plan.size()) return;
  if (!a.race_timer.initialized()) a.race_timer.init(loop_);
  const auto delay = race_delay(config_, a.plan[dial.index].rtt_ms);
  Link* racing = &link;
  a.race_timer.start(static_cast<uint64_t>(delay.count()), [this, racing] { launch_next(*racing); });
}

bool ConnectionManager::release_dial(Dial& dial) {
  if (dial.queued) {
    dial_queue_.erase(dial.queue_entry);
    dial.queued = false;
  }
  dial.handle.cancel();
  if (!dial.dialing) return false;
  dial.dialing = false;
  --dialing_;
  return true;
}

void ConnectionManager::end_attempt(Link& link) {
  if (!link.attempt) return;
  for (auto& d : link.attempt->dials) release_dial(*d);
  link.attempt.reset();
  if (!shut_down_) start_waiting_dials();
}

void ConnectionManager::start_waiting_dials() {
  // Oldest first. Every entry is a live attempt's: an attempt's end takes
  // its dials out of the queue.
  while (dialing_ < dial_slots() && !dial_queue_.empty()) {
    Dial* next = dial_queue_.front();
    dial_queue_.pop_front();
    next->queued = false;
    begin_dial(*next);
  }
}

void ConnectionManager::set_config(const ConnectionConfig& config) {
  config_ = config;
  start_waiting_dials();  // max_concurrent_dials may have grown
}

size_t ConnectionManager::dials_waiting() const { return dial_queue_.size(); }

// --- outcomes ---------------------------------------------------------------

void ConnectionManager::on_dial_done(Dial& dial, Result<std::unique_ptr<Connection>> result) {
  Link& link = *dial.link;
  dial.handle = DialHandle();
  release_dial(dial);
  if (result.ok()) {
    on_race_won(link, dial, std::move(result).value());
    return;
  }
  if (!shut_down_) start_waiting_dials();  // the slot goes to the next dial waiting
  on_dial_failed(link, dial, result.error());
}

// The first dial to succeed is the link; the other dials of the attempt are
// cancelled, counted neither as success nor as failure.
void ConnectionManager::on_race_won(Link& link, Dial& winner,
                                    std::unique_ptr<Connection> connection) {
  const Endpoint& ep = link.attempt->plan[winner.index];
  link.endpoint = target_of(ep);
  record_dial(ep.id, ep.protocol, class_of(ep, winner.family), {}, connection->rtt_ms());
  metrics_.protocols[metrics_.protocol_index(ep.protocol)].dial_duration.observe(
      static_cast<double>(uv_hrtime() - winner.began_ns) / 1e9);
  if (link.attempt->plan.size() > 1)
    ++metrics_.races[static_cast<size_t>(winner.index == 0 ? RaceOutcome::kFirst : RaceOutcome::kFallback)];
  remember_attempt(link, ep.id, AttemptOutcome::kSuccess, {}, false);
  cancel_losers(link, winner);
  end_attempt(link);  // `winner` dies here; the losers' slots go to the dials waiting
  on_connected(link, std::move(connection));
}

void ConnectionManager::cancel_losers(Link& link, const Dial& winner) {
  for (const auto& d : link.attempt->dials) {
    if (d.get() == &winner) continue;
    const Endpoint& ep = link.attempt->plan[d->index];
    ++metrics_.protocols[metrics_.protocol_index(ep.protocol)].dials[static_cast<size_t>(DialResult::kCancelled)];
    Event ev = dial_event(EventType::kConnectFailed, link, ep);
    ev.reason = reason::kCancelled;
    publish(std::move(ev));
    remember_attempt(link, ep.id, AttemptOutcome::kCancelled, reason::kCancelled, false);
  }
}

// One dial failed: recorded, and the race goes on (the next candidate starts
// at once) unless it was the attempt's last dial.
void ConnectionManager::on_dial_failed(Link& link, Dial& dial, const Error& error) {
  Attempt& a = *link.attempt;
  const Endpoint& ep = a.plan[dial.index];
  const std::string why = dial_reason(error);
  const bool charged = record_dial(ep.id, ep.protocol, class_of(ep, dial.family), why);
  remember_attempt(link, ep.id, AttemptOutcome::kFailure, why, charged);
  link.failed_endpoints.push_back(ep.id);
  Event ev = dial_event(EventType::kConnectFailed, link, ep);
  ev.reason = why;
  publish(std::move(ev));
  if (dial.index < a.best_failure_index) {
    a.best_failure = Error::connect_failed(error.message(), why);
    a.best_failure_index = dial.index;
  }
  auto it = std::find_if(a.dials.begin(), a.dials.end(), [&](const auto& d) { return d.get() == &dial; });
  a.dials.erase(it);  // `dial` dies here
  if (a.launched < a.plan.size()) {
    a.race_timer.stop();
    launch_next(link);
  } else if (a.dials.empty()) {
    on_attempt_failed(link);
  }
}

// Every candidate of the attempt failed: the attempt failed, reported with
// the best-ranked candidate's endpoint and reason.
void ConnectionManager::on_attempt_failed(Link& link) {
  Attempt& a = *link.attempt;
  link.endpoint = target_of(a.plan[a.best_failure_index]);
  count_link(link);
  if (a.plan.size() > 1) ++metrics_.races[static_cast<size_t>(RaceOutcome::kFailed)];
  const Error error = *a.best_failure;
  end_attempt(link);
  const bool attempts_remain = link.attempts < link.retry.max_attempts;
  if (attempts_remain || link.reconnect) {
    // A supervised link never gives up until disconnect; max_attempts bounds
    // only how long a `wait` caller waits.
    schedule_retry(link, link.attempts);
  } else {
    Event ev = link_event(EventType::kGaveUp, link);
    ev.reason = error.reason();
    ev.attempt = link.attempts;
    publish(std::move(ev));
  }
  answer_failure(link, error, attempts_remain);
  if (link.state != LinkState::kWaitingRetry) erase_link(link);  // `link` dies here
}

void ConnectionManager::on_connected(Link& link, std::unique_ptr<Connection> connection) {
  link.connection = std::move(connection);
  std::vector<int64_t>().swap(link.failed_endpoints);  // a held link keeps no capacity
  set_state(link, LinkState::kActive);
  link.since = unix_now_ms();
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

// `failure`: empty for a success. The charging rule is the NetworkState's.
bool ConnectionManager::record_dial(int64_t endpoint_id, std::string_view protocol,
                                    AddressClass cls, const std::string& failure,
                                    std::optional<double> rtt_ms) {
  const int64_t now = unix_now_ms();
  ProtocolMetrics& m = metrics_.protocols[metrics_.protocol_index(protocol)];
  if (failure.empty()) {
    ++m.dials[static_cast<size_t>(DialResult::kSuccess)];
    network_.on_success(cls, now);
    store_.record_success(endpoint_id, now, rtt_ms);
    return false;
  }
  ++m.dials[static_cast<size_t>(DialResult::kFailure)];
  if (auto it = m.failures.find(failure); it != m.failures.end())
    ++it->second;
  else
    m.failures.emplace(failure, 1);
  const bool charged = network_.on_failure(endpoint_id, cls, failure);
  if (!charged) {
    const auto why = failure == reason::kLocalNetwork ? UnchargedWhy::kLocalNetwork : UnchargedWhy::kOutage;
    ++metrics_.uncharged[static_cast<size_t>(why)];
  }
  store_.record_failure(endpoint_id, failure, now, charged);
  return charged;
}

void ConnectionManager::remember_attempt(Link& link, int64_t endpoint_id, AttemptOutcome outcome,
                                         const std::string& reason, bool charged) {
  RecentAttempt r{unix_now_ms(), endpoint_id, 0, outcome, charged};
  if (!reason.empty()) {
    auto it = std::find(reasons_.begin(), reasons_.end(), reason);
    if (it == reasons_.end()) it = reasons_.insert(reasons_.end(), reason);
    r.reason = static_cast<uint16_t>(it - reasons_.begin() + 1);
  }
  if (link.recent.size() >= kRecentAttempts) link.recent.erase(link.recent.begin());
  link.recent.push_back(r);
}

std::vector<AttemptRecord> ConnectionManager::recent_of(const std::string& node_id,
                                                        const Link* link) const {
  static constexpr const char* kOutcomes[] = {"success", "failure", "cancelled"};
  const std::vector<RecentAttempt>* kept = link ? &link->recent : nullptr;
  if (!link) {
    auto it = recent_.find(node_id);
    if (it != recent_.end()) kept = &it->second;
  }
  std::vector<AttemptRecord> out;
  if (!kept) return out;
  for (const RecentAttempt& r : *kept) {
    AttemptRecord a{r.at, r.endpoint_id, kOutcomes[static_cast<size_t>(r.outcome)], std::nullopt, r.charged};
    if (r.reason != 0) a.reason = reasons_[r.reason - 1];
    out.push_back(std::move(a));
  }
  return out;
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
  arm_retry(link, backoff_delay_jittered(link.retry, failed_attempts, unit_random()));
}

void ConnectionManager::arm_retry(Link& link, std::chrono::milliseconds delay) {
  set_state(link, LinkState::kWaitingRetry);
  link.retry_delay_ms = delay.count();
  link.next_attempt_at = unix_now_ms() + delay.count();
  // After a drop this runs inside the link's timer callback: the Timer is
  // restarted, which its callback may do.
  if (!link.timer) link.timer = std::make_unique<Timer>(loop_);
  Link* waiting = &link;
  link.timer->start(static_cast<uint64_t>(delay.count()),
                    [this, waiting] { start_attempt(*waiting); });

  Event ev = link_event(EventType::kRetryScheduled, link);
  ev.protocol.reset();  // a node's next attempt may choose another endpoint
  ev.attempt = link.attempts + 1;  // the attempt the timer starts
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
  count_disconnect(link, reason);
  Event ev = link_event(EventType::kDisconnected, link);
  ev.reason = reason;
  publish(std::move(ev));
  if (!link.reconnect || shut_down_) {
    erase_link(link);  // `link` dies here, and its timer, whose callback this is
  } else {
    // Supervised: re-established on the backoff schedule. Flap damping: a
    // link that was up at least stable_link starts the schedule afresh; one
    // that drops sooner goes on where its attempts had got to, so a peer
    // that accepts and closes at once is dialled ever less often.
    const int64_t now = unix_now_ms();
    if (now - link.since >= config_.stable_link.count()) link.attempts = 0;
    link.since = now;
    schedule_retry(link, std::max(1, link.attempts));
  }
  end_streams(std::move(streams), stream_reason::kLinkLost);
}

// An active link ended: its reason and how long it was up.
void ConnectionManager::count_disconnect(const Link& link, std::string_view reason) {
  if (auto it = metrics_.disconnects.find(reason); it != metrics_.disconnects.end())
    ++it->second;
  else
    metrics_.disconnects.emplace(std::string(reason), 1);
  const int64_t up_ms = std::max<int64_t>(0, unix_now_ms() - link.since);
  metrics_.link_duration.observe(static_cast<double>(up_ms) / 1000.0);
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
    count_disconnect(*link, reason);
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
  recent_.erase(node_id);
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
    record_dial(link.endpoint.id, kTcpProtocol,
                address_class(kTcpProtocol, literal_family(link.connection->remote_address())),
                result.ok() ? std::string() : dial_reason(result.error()));
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

// --- choosing and dialing well -------------------------------------------------

std::string_view decision_name(Decision d) {
  static constexpr std::string_view kNames[] = {"reuse", "join", "dial", "wait_retry", "no_endpoint"};
  return kNames[static_cast<size_t>(d)];
}

// The node's endpoints ranked by rank_candidates, as start_attempt ranks
// them (with the link's series, when it has one), and decide()'s decision.
Result<Explanation> ConnectionManager::explain(const std::string& node_id,
                                               const std::optional<std::string>& protocol) {
  auto found = store_.node_with_endpoints(node_id, std::nullopt);
  if (!found) return found.error();
  auto it = links_.find(node_id);
  const Link* link = it == links_.end() ? nullptr : it->second.get();
  Ranking ranking =
      rank(std::move(found->endpoints), protocol, link ? &link->failed_endpoints : nullptr, true);
  Explanation ex;
  ex.node_id = node_id;
  ex.decision = decide(link);
  if (ex.decision == Decision::kDial && ranking.eligible == 0) ex.decision = Decision::kNoEndpoint;
  ex.candidates = std::move(ranking.candidates);
  ex.network = network_.status();
  if (link) ex.link = info_of(*link);
  if (link && link->state == LinkState::kWaitingRetry && link->next_attempt_at)
    ex.backoff = BackoffInfo{link->attempts + 1, link->retry_delay_ms, *link->next_attempt_at};
  ex.recent = recent_of(node_id, link);
  return ex;
}

NetworkStatus ConnectionManager::network_status() const { return network_.status(); }

void ConnectionManager::network_changed() {
  network_.on_network_changed();
  ++metrics_.network_changes;
  Event ev;
  ev.type = EventType::kNetworkChanged;
  ev.generation = network_.status().generation;
  publish(std::move(ev));
  // Supervised links waiting for a retry, ever up or not, are dialled again
  // within a second, spread at random so that a host with thousands of them
  // does not dial all at once, with their backoff restarted.
  for (auto& [id, link] : links_) {
    if (!link->reconnect || link->state != LinkState::kWaitingRetry) continue;
    link->attempts = 0;
    link->failed_endpoints.clear();
    const auto delay = std::chrono::milliseconds(std::llround(unit_random() * 1000));
    arm_retry(*link, delay);
  }
}

}  // namespace connmgr
