// ConnectionManager: keeps one link per node (the seed's ConnectionManager).
//
// It chooses endpoints from the Store's ranking, dials them through the
// ConnectorFactory, records each outcome in the Store, retries on the backoff
// schedule, supervises `reconnect` links and publishes events, following
// API.md §4 to the letter. It knows no JSON and no systemd.
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
// or an unknown node).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <uv.h>

#include "core/backoff.h"
#include "core/connection_config.h"
#include "core/events.h"
#include "net/connector_factory.h"
#include "storage/store.h"
#include "util/error.h"

namespace connmgr {

// What `connect` asks for (API.md §4 params).
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
};

struct ConnectOutcome {
  LinkInfo link;
  bool reused = false;
};

// kConnectFailed errors carry these details (API.md §3's `data`).
struct ConnectFailure {
  int64_t endpoint_id = 0;
  int attempts = 0;
  std::string reason;
  bool retry_scheduled = false;
  std::optional<int64_t> next_attempt_at;
};

using ConnectDone = std::function<void(Result<ConnectOutcome>, const ConnectFailure*)>;

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

  // The seed's reads, through the Store.
  Result<NodePage> get_all_nodes(int limit, const std::optional<std::string>& after);
  Result<Node> get_node_by_id(const std::string& node_id);
  Result<std::vector<Endpoint>> get_endpoints_for_node(const std::string& node_id,
                                                       const std::optional<std::string>& protocol);

  // API.md §4's connect algorithm. On failure `done` gets the Error and, for
  // kConnectFailed, the failure details.
  void connect(const ConnectRequest& request, ConnectDone done);
  // The seed's names, as thin forms of connect().
  void connect_to_endpoint(int64_t endpoint_id, std::optional<RetryOptions> retry, ConnectDone done);
  void connect_to_node(const std::string& node_id, const std::optional<std::string>& protocol,
                       std::optional<RetryOptions> retry, ConnectDone done);
  // RetryConnection: dial `endpoint_id` with up to `max_attempts` attempts on
  // the configuration's schedule, answering when up or spent.
  void retry_connection(int64_t endpoint_id, int max_attempts, ConnectDone done);

  // Closes the node's link (peers see a clean close) and cancels its
  // attempts and timers; waiters get kCancelled. Idempotent.
  DisconnectOutcome disconnect_node(const std::string& node_id);

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

  struct Link;  // one node's link state machine (in the .cc)

 private:
  struct Deferred;  // calls run on a later loop turn (in the .cc)
  struct Waiter {
    ConnectDone done;
    bool wait = false;
  };

  // `ranked`: the node's endpoints as connect() read them, for a first
  // attempt started here (nullptr: start_attempt reads them itself).
  void join_or_start(const ConnectRequest& request, ConnectDone done,
                     const std::vector<Endpoint>* ranked);
  void configure(Link& link, const ConnectRequest& request);
  void start_attempt(Link& link, const std::vector<Endpoint>* ranked = nullptr);
  // A dial holds one of max_concurrent_dials slots from begin_dial() until
  // end_dial(), which starts the attempts queued meanwhile.
  void begin_dial(Link& link, const DialRequest& request);
  void end_dial(Link& link);
  void start_waiting_dials();
  size_t dial_slots() const;
  void on_dial_done(const std::string& node_id, uint64_t generation,
                    Result<std::unique_ptr<Connection>> result);
  void on_drop(const std::string& node_id, uint64_t generation, const std::string& reason);
  void on_retry_timer(const std::string& node_id, uint64_t generation);
  void schedule_retry(Link& link, int failed_attempts);
  void fail_link(Link& link, const Error& error);
  void answer_success(Link& link, bool reused);
  void end_link(std::string node_id, const char* reason, bool answer_cancelled,
                DisconnectOutcome* outcome);
  void stop_timer(Link& link);
  // Every change of a link's state and every removal goes through these,
  // which keep active_ exact (`status` asks for it on every call).
  void set_state(Link& link, LinkState state);
  void erase_link(std::map<std::string, std::unique_ptr<Link>>::iterator it);
  void post(std::function<void()> fn);
  void publish(Event event);
  LinkInfo info_of(const Link& link) const;

  uv_loop_t* loop_;
  Store& store_;
  ConnectorFactory& connectors_;
  EventBus& events_;
  ConnectionConfig config_;
  std::map<std::string, std::unique_ptr<Link>> links_;
  size_t active_ = 0;  // links in kActive
  size_t dialing_ = 0;  // links whose dial is under way
  // Attempts waiting for a dial slot, with the link's generation then (an
  // entry whose link moved on since is passed over).
  struct QueuedDial {
    uint64_t generation = 0;
    DialRequest request;
  };
  std::deque<QueuedDial> dial_queue_;
  uint64_t next_generation_ = 1;
  bool shut_down_ = false;
  std::unique_ptr<Deferred> deferred_;
};

}  // namespace connmgr
