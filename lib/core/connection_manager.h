// ConnectionManager: keeps one link per node.
//
// It ranks a node's endpoints (rank_candidates, core/endpoint_ranking.h),
// dials them through the ConnectorFactory (racing them when racing is on),
// records each outcome in the Store under the charging rule of its address
// class (core/network_state.h), retries on the backoff schedule with flap
// damping, supervises `reconnect` links, reacts to network changes and
// publishes events, as docs/guide.md describes ("One link per node",
// "Racing a node's endpoints", "Statistics and how an endpoint is chosen",
// "Retries and backoff", "Flap damping", "Network changes", "Supervised
// links", "Events"). explain() answers from the same ranking and decision
// functions connect() uses. It knows no JSON and no systemd.
//
// Attempts: an attempt of the retry schedule dials one endpoint, or races
// several (each dial holding its own max_concurrent_dials slot); the first
// success is the link and the other dials are cancelled (connect_failed
// "cancelled", no statistic). A node's last 16 dial outcomes are kept in
// memory (explain's `recent`) until the node is removed.
//
// Ownership and threads: used from the loop thread only. It borrows the loop,
// Store, ConnectorFactory and EventBus, which must outlive it. Per node it
// owns at most one Link: the established Connection, or the attempt under
// way, or the timer of a scheduled retry. shutdown() (also run by the
// destructor) closes every link and cancels every attempt and timer; pending
// callers then get kCancelled.
//
// Callbacks: a ConnectDone is called exactly once, on the loop thread, never
// from inside connect() (even for an immediate answer such as a reused link
// or an unknown node). So is a StreamDone, never from inside open_stream().
//
// Streams: open_stream() carries a program's bytes over a node's link (see
// docs/api.md, "Streams"). The Stream it hands out is the manager's wrapper
// around the transport's (net/stream.h): it counts the bytes into the
// link's totals and its StreamInfo, and publishes stream_opened and
// stream_closed. A stream never ends its link; the link's end ends its
// streams first, each with on_end(reason) and a stream_closed event:
// "link_lost" (the link dropped), "disconnect" (disconnect_node),
// "node_removed" (remove_node_links), "shutdown". The user's reset(), or
// destroying an unended stream, ends it with "client_closed"; the
// transport's own ends ("eof", "reset", an errno name) pass through. A
// stream may outlive the manager (it has ended by then: "shutdown").
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <uv.h>

#include "core/backoff.h"
#include "core/connection_config.h"
#include "core/endpoint_ranking.h"
#include "core/events.h"
#include "core/manager_metrics.h"
#include "core/network_state.h"
#include "net/connector_factory.h"
#include "net/stream.h"
#include "storage/store.h"
#include "util/error.h"
#include "util/uv_handle.h"

namespace connmgr {

// Why a stream ended besides the transport's own reasons ("eof", "reset",
// an errno name): stream_closed's `reason` and the Stream's on_end.
namespace stream_reason {
inline constexpr const char* kClientClosed = "client_closed";  // the user's reset()
inline constexpr const char* kLinkLost = "link_lost";
inline constexpr const char* kDisconnect = "disconnect";
inline constexpr const char* kNodeRemoved = "node_removed";
inline constexpr const char* kShutdown = "shutdown";
}  // namespace stream_reason

// What `connect` asks for (the parameters of the `connect` method).
struct ConnectRequest {
  std::optional<int64_t> endpoint_id;      // exactly one of endpoint_id,
  std::optional<std::string> node_id;      // node_id
  std::optional<std::string> protocol;     // preferred protocol (node_id only)
  std::optional<std::chrono::milliseconds> timeout;
  std::optional<RetryOptions> retry;       // none: a single attempt
  bool wait = false;       // answer when up or attempts spent
  bool reconnect = false;  // supervise: re-establish when the link drops
};

enum class LinkState { kConnecting, kWaitingRetry, kActive };
std::string_view link_state_name(LinkState state);

// A link as `connections.list` shows it.
struct LinkInfo {
  std::string node_id;
  int64_t endpoint_id = 0;
  std::string protocol;
  std::string address;
  int port = 0;
  std::string local_address;
  LinkState state = LinkState::kConnecting;
  int64_t since = 0;     // unix ms: when the link came up, or the attempts began
  int attempts = 0;      // attempts made for the current link
  std::optional<double> rtt_ms;
  std::optional<int64_t> next_attempt_at;  // unix ms, kWaitingRetry only
  bool reconnect = false;
  // Streams open on the link, and the bytes of every stream of the link
  // since it came up, closed ones included (in: from the node; out: to it).
  size_t streams = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
};

struct ConnectOutcome {
  LinkInfo link;
  bool reused = false;
};

// kConnectFailed errors carry these details (the error's `data`).
struct ConnectFailure {
  int64_t endpoint_id = 0;
  int attempts = 0;
  std::string reason;
  bool retry_scheduled = false;
  std::optional<int64_t> next_attempt_at;
};

using ConnectDone = std::function<void(Result<ConnectOutcome>, const ConnectFailure*)>;

// Who opened a stream (the daemon's client, from its socket's credentials).
struct StreamClient {
  int64_t pid = 0;
  int64_t uid = -1;
};

// A stream as `streams.list` shows it.
struct StreamInfo {
  uint64_t stream_id = 0;
  std::string node_id;
  int64_t endpoint_id = 0;
  std::string protocol;
  int64_t opened_at = 0;  // unix ms
  uint64_t bytes_in = 0;   // from the node
  uint64_t bytes_out = 0;  // to the node (as written to the stream)
  StreamClient client;
};

struct OpenedStream {
  uint64_t stream_id = 0;
  LinkInfo link;  // the link it runs on (its `streams` counts this one)
  bool link_reused = false;
  std::unique_ptr<Stream> stream;  // the manager's wrapper around the transport's
};

using StreamDone = std::function<void(Result<OpenedStream>, const ConnectFailure*)>;

// --- Choosing and dialing well (docs/guide.md) ------------------------------

// One of a node's last attempts (kept in memory, 16 per node).
struct AttemptRecord {
  int64_t at = 0;  // unix ms, when the dial ended
  int64_t endpoint_id = 0;
  std::string outcome;  // "success" | "failure" | "cancelled"
  std::optional<std::string> reason;  // failure reason; none on success
  bool charged = false;  // counted in the endpoint's failure_count
};

enum class Decision { kReuse, kJoin, kDial, kWaitRetry, kNoEndpoint };
std::string_view decision_name(Decision d);  // "reuse", "join", "dial", "wait_retry", "no_endpoint"

struct BackoffInfo {
  int attempt = 0;
  int64_t delay_ms = 0;
  int64_t next_attempt_at = 0;  // unix ms
};

// nodes.explain: what connect would do for the node now, and why.
struct Explanation {
  std::string node_id;
  Decision decision = Decision::kNoEndpoint;
  std::optional<LinkInfo> link;
  std::vector<Candidate> candidates;  // every endpoint of the node, ranked first
  NetworkStatus network;
  std::optional<BackoffInfo> backoff;
  std::vector<AttemptRecord> recent;  // oldest first, at most 16
};

struct DisconnectOutcome {
  bool was_connected = false;
  bool cancelled_attempts = false;
};

class ConnectionManager {
 public:
  ConnectionManager(uv_loop_t* loop, Store& store, ConnectorFactory& connectors,
                    EventBus& events, ConnectionConfig config);
  ~ConnectionManager();
  ConnectionManager(const ConnectionManager&) = delete;
  ConnectionManager& operator=(const ConnectionManager&) = delete;

  // Reads through the Store: a page of nodes (ordered by id, after `after`),
  // and a node's endpoints ranked as a node connect tries them (of
  // `protocol` only, when given).
  Result<NodePage> get_all_nodes(int limit, const std::optional<std::string>& after);
  Result<std::vector<Endpoint>> get_endpoints_for_node(const std::string& node_id,
                                                       const std::optional<std::string>& protocol);

  // Connects a node, or the node of an endpoint: reuses its active link,
  // joins its attempt under way, or attempts now (replacing a scheduled
  // retry), retrying on `request.retry`'s schedule (docs/guide.md, "One link
  // per node", "Racing a node's endpoints" and "Retries and backoff"). A node
  // connect with several eligible endpoints races them when config.race is
  // on. On failure `done` gets the Error and, for kConnectFailed, the
  // failure details (of the attempt's best-ranked endpoint when it raced).
  void connect(const ConnectRequest& request, ConnectDone done);

  // Closes the node's link (peers see a clean close) and cancels its
  // attempts and timers; waiters get kCancelled. Idempotent.
  DisconnectOutcome disconnect_node(const std::string& node_id);
  // The same for a node being removed: its streams end with "node_removed"
  // rather than "disconnect" (the `disconnected` event says "requested"),
  // and its recent attempts are forgotten.
  DisconnectOutcome remove_node_links(const std::string& node_id);

  // Opens a stream to a node (streams.open). The link is reused or made
  // exactly as connect() with wait=true does (same choice, retries, errors:
  // kConnectFailed with the ConnectFailure), then a stream is opened over it;
  // `request.timeout` (else connection_timeout) covers the dial and the
  // stream's opening together. Refusals once the link is up:
  // Error::stream_refused(message, reason), reason "limit" (max_streams
  // open or opening), "stream_limit" (QUIC: the peer's stream credit never
  // came), "link_lost", or "refused" (a TCP stream's own dial failed: the
  // message names the dial's reason, which ConnectFailure::reason carries,
  // with ConnectFailure::endpoint_id). A TCP stream's dial counts for the
  // endpoint's statistics like any dial. A link that ends while the stream
  // opens answers "link_lost", or kCancelled on disconnect or shutdown.
  void open_stream(const ConnectRequest& request, const StreamClient& client, StreamDone done);
  std::vector<StreamInfo> list_streams() const;
  size_t stream_count() const { return streams_open_; }

  // nodes.explain: computed by the code connect() decides with (decide()
  // and rank_candidates, with the link's series of failed endpoints).
  // Every endpoint of the node is a candidate, those of another protocol
  // than `protocol` or without a connector unranked. kNodeNotFound when the
  // node does not exist.
  Result<Explanation> explain(const std::string& node_id, const std::optional<std::string>& protocol);
  // status.network.
  NetworkStatus network_status() const;
  // The host's network changed (links, addresses, routes): supervised links
  // waiting for a retry are dialled again within a second (spread at random
  // over 0-1 s) with their backoff restarted; a network_changed event.
  void network_changed();

  std::vector<LinkInfo> get_active_connections(bool include_pending) const;
  std::optional<LinkInfo> link_of(const std::string& node_id) const;
  size_t active_count() const;
  size_t pending_count() const;
  bool has_link(const std::string& node_id) const;

  // Replaces the configuration (SIGHUP); affects attempts started afterwards
  // (and lets waiting dials start when max_concurrent_dials grew).
  void set_config(const ConnectionConfig& config);
  // Dials under way, and attempts waiting for a dial slot.
  size_t dials_under_way() const { return dialing_; }
  size_t dials_waiting() const;
  const ConnectionConfig& config() const { return config_; }

  // Closes every link (event reason "shutdown"), cancels every attempt and
  // timer, answers waiters with kCancelled. Idempotent.
  void shutdown();

  // What the manager counted since it started (the daemon's metrics):
  // dials by protocol and result (a race's cancelled losers included; a
  // TCP link's stream dials count as dials of the link's endpoint), failures
  // by reason, successful link dials' durations, links by protocol and
  // state, streams and their bytes, disconnects of active links by reason
  // and how long they were up, uncharged failures, raced attempts' outcomes,
  // network changes.
  const ManagerMetrics& metrics() const { return metrics_; }

  struct Link;  // one node's link state machine (in the .cc)
  struct Attempt;  // an attempt's dials: one, or a race's (in the .cc)
  struct Dial;  // one dial of an attempt (in the .cc)
  struct LinkStreams;  // a link's streams, open and opening (in the .cc)
  class ManagedStream;  // the Stream open_stream() hands out (in the .cc)

 private:
  struct Waiter {
    ConnectDone done;
    bool wait = false;
  };
  enum class AttemptOutcome : uint8_t { kSuccess, kFailure, kCancelled };
  // An AttemptRecord in 24 bytes: a node keeps up to 16, a held link one.
  struct RecentAttempt {
    int64_t at = 0;
    int64_t endpoint_id = 0;
    uint16_t reason = 0;  // 0: none, else reasons_[reason - 1]
    AttemptOutcome outcome = AttemptOutcome::kSuccess;
    bool charged = false;
  };
  using Links = std::map<std::string, std::unique_ptr<Link>>;

  // `ranked`: the node's endpoints as connect() read them, for a first
  // attempt started here (nullptr: start_attempt reads them itself).
  void join_or_start(const ConnectRequest& request, ConnectDone done,
                     std::vector<Endpoint>* ranked);
  void configure(Link& link, const ConnectRequest& request);
  Link& add_link(const std::string& node_id);
  // What a connect for the node does now given its link (none: kDial);
  // explain() says the same.
  static Decision decide(const Link* link);

  // One attempt: rank the candidates, then dial the first, and race the
  // others when racing (each dial now or queued for a slot).
  void start_attempt(Link& link, std::vector<Endpoint>* ranked = nullptr);
  // The endpoints to dial in this attempt, in order: one, or a race's.
  Result<std::vector<Endpoint>> plan_attempt(Link& link, std::vector<Endpoint>* ranked);
  Ranking rank(std::vector<Endpoint> endpoints, const std::optional<std::string>& protocol,
               const std::vector<int64_t>* failed_in_series, bool with_reasons) const;
  Error no_candidate(const Link& link, const Ranking& ranking) const;
  // Starts the attempt's next candidate (a `connecting` event, then its dial
  // now or in the queue).
  void launch_next(Link& link);
  DialRequest dial_request(const Link& link, const Endpoint& endpoint, Dial& dial) const;
  // A dial holds one of max_concurrent_dials slots from begin_dial() until
  // it ends (release_dial), which starts the attempts queued meanwhile.
  void begin_dial(Dial& dial);
  void arm_race_timer(Link& link, const Dial& dial);
  // Takes the dial out of the queue or its slot and cancels it; true when
  // it had a slot (its caller then starts the dials waiting).
  bool release_dial(Dial& dial);
  // Ends the link's attempt: its dials cancelled, its slots freed.
  void end_attempt(Link& link);
  void start_waiting_dials();
  size_t dial_slots() const;

  // The outcomes, each from the callback of something the link owns (its
  // dials, its connection, its timers), which cannot call back once the
  // link is gone.
  void on_dial_done(Dial& dial, Result<std::unique_ptr<Connection>> result);
  void on_race_won(Link& link, Dial& winner, std::unique_ptr<Connection> connection);
  void cancel_losers(Link& link, const Dial& winner);
  void on_dial_failed(Link& link, Dial& dial, const Error& error);
  void on_attempt_failed(Link& link);
  void on_connected(Link& link, std::unique_ptr<Connection> connection);
  void on_drop(Link& link, const std::string& reason);
  // The next attempt after the backoff's delay for `failed_attempts`.
  void schedule_retry(Link& link, int failed_attempts);
  // Starts the link's next attempt after `delay` (state kWaitingRetry), and
  // announces it (retry_scheduled).
  void arm_retry(Link& link, std::chrono::milliseconds delay);
  void fail_link(Link& link, const Error& error);
  void answer_success(Link& link, bool reused);
  void answer_failure(Link& link, const Error& error, bool attempts_remain);
  // `streams_end`: the reason the link's streams end with.
  void end_link(const std::string& node_id, const char* reason, const char* streams_end,
                DisconnectOutcome* outcome);
  // A dial's outcome into the Store and the network state (`failure`
  // empty: a success); whether a failure was charged.
  // Counted in metrics_ too.
  bool record_dial(int64_t endpoint_id, std::string_view protocol, AddressClass cls,
                   const std::string& failure, std::optional<double> rtt_ms = std::nullopt);
  void count_disconnect(const Link& link, std::string_view reason);
  // A dial's outcome into the link's recent attempts (kRecentAttempts).
  void remember_attempt(Link& link, int64_t endpoint_id, AttemptOutcome outcome,
                        const std::string& reason, bool charged);
  std::vector<AttemptRecord> recent_of(const std::string& node_id, const Link* link) const;

  // Streams: the steps of open_stream, and the end of a link's streams.
  using Deadline = std::chrono::steady_clock::time_point;
  void on_stream_link(Deadline deadline, const StreamClient& client, StreamDone done,
                      Result<ConnectOutcome> link, const ConnectFailure* failure);
  void begin_stream(Link& link, std::chrono::milliseconds timeout, const StreamClient& client,
                    bool reused, StreamDone done);
  void on_stream_opened(Link& link, uint64_t opening_id, Result<std::unique_ptr<Stream>> result);
  void on_stream_failed(Link& link, StreamDone done, const Error& error);
  LinkStreams& streams_of(Link& link);
  // Ends the streams (and cancels the opens) of a registry taken from its link.
  void end_streams(std::unique_ptr<LinkStreams> streams, const char* reason);
  // stream_opened, or stream_closed with `reason` and the bytes.
  void publish_stream(EventType type, const StreamInfo& info, const std::string* reason = nullptr);

  // Every change of a link's state and every removal goes through these,
  // which keep active_ exact (`status` asks for it on every call).
  // erase_link also ends the link's attempt (its dials out of the queue and
  // their slots), and hands the link back: it dies with the returned pointer.
  void set_state(Link& link, LinkState state);
  std::unique_ptr<Link> erase_link(Link& link);
  // The links gauge of metrics_ (set_state and endpoint changes call it).
  void count_link(Link& link);
  void uncount_link(Link& link);

  // Runs `fn` on a later loop turn (answers never come from inside connect()).
  void post(std::function<void()> fn);
  void run_posted();
  void publish(Event event);
  LinkInfo info_of(const Link& link) const;

  uv_loop_t* loop_;
  Store& store_;
  ConnectorFactory& connectors_;
  EventBus& events_;
  ConnectionConfig config_;
  Links links_;
  size_t active_ = 0;  // links in kActive
  size_t dialing_ = 0;  // dials under way (each holds a slot)
  size_t streams_open_ = 0;
  size_t streams_opening_ = 0;
  uint64_t next_stream_id_ = 1;
  // Dials waiting for a slot, oldest first. Every entry is a live attempt's
  // dial, which leaves the queue when it begins or its attempt ends.
  std::list<Dial*> dial_queue_;
  NetworkState network_;
  ManagerMetrics metrics_;
  // The recent attempts of nodes without a link, kept beyond the link's end
  // so that explain can show why a connect failed: a link's go here when it
  // ends and back into the node's next link. A node's entry goes when the
  // node is removed (remove_node_links). Held links keep theirs in the Link
  // (no map entry and key per held link).
  std::map<std::string, std::vector<RecentAttempt>> recent_;
  // The failure reasons recent attempts name (RecentAttempt::reason - 1).
  std::vector<std::string> reasons_;
  bool shut_down_ = false;
  // post()'s calls, run by one unreferenced timer (it must not keep the loop
  // alive on its own); the destructor runs those still pending.
  std::vector<std::function<void()>> posted_;
  Timer posted_timer_;
};

}  // namespace connmgr
