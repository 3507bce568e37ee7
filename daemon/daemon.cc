#include "daemon.h"

#include <grp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>

#include "connmgr_version.h"
#include "core/connection_manager.h"
#include "event_log.h"
#include "methods/api.h"
#include "metrics/families.h"
#include "metrics/http_listener.h"
#include "metrics/process_stats.h"
#include "metrics/textfile.h"
#include "net/netwatch.h"
#include "net/tcp_connector.h"
#include "quic/quic_connector.h"
#include "rpc/dispatcher.h"
#include "server/socket_server.h"
#include "storage/local_inventory.h"
#include "storage/postgres_inventory.h"
#include "storage/store.h"
#include "systemd/log.h"
#include "systemd/notify.h"
#include "util/clock.h"
#include "util/uv_handle.h"

namespace connmgr::daemon {

namespace {

constexpr uint64_t kStatusIntervalMs = 5000;
// After SIGTERM: answers to cancelled calls get this long to be written
// before clients that do not read are cut.
constexpr uint64_t kDrainMs = 2000;

std::optional<gid_t> group_id(const std::optional<std::string>& name) {
  if (!name) return std::nullopt;
  if (!name->empty() && name->find_first_not_of("0123456789") == std::string::npos)
    return static_cast<gid_t>(std::stoul(*name));
  if (struct group* g = getgrnam(name->c_str())) return g->gr_gid;
  return std::nullopt;
}

// Every link and every client is a descriptor: the soft limit (1024 under
// systemd and most shells) is raised to the hard one, as Go programs and
// most servers do, so that the limit an operator sets with LimitNOFILE= or
// ulimit -Hn is the one that counts.
rlim_t raise_nofile_soft_limit() {
  struct rlimit r {};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return 0;
  if (r.rlim_cur < r.rlim_max) {
    struct rlimit raised = r;
    raised.rlim_cur = r.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) return raised.rlim_cur;
  }
  return r.rlim_cur;
}

ConnectionConfig connection_config(const config::DaemonConfig& c) {
  ConnectionConfig cc;
  cc.connection_timeout = c.connection_timeout;
  cc.base_retry_interval = c.base_retry_interval;
  cc.max_retry_interval = c.max_retry_interval;
  cc.max_retry_count = c.max_retry_count;
  cc.retry_jitter = c.retry_jitter;
  cc.max_concurrent_dials = static_cast<int>(c.max_concurrent_dials);
  cc.stream_buffer = c.stream_buffer;
  cc.max_streams = c.max_streams;
  cc.race = c.race;
  cc.race_delay = c.race_delay;
  cc.race_delay_min = c.race_delay_min;
  cc.race_delay_max = c.race_delay_max;
  cc.stable_link = c.stable_link;
  return cc;
}

server::ServerLimits server_limits(const config::DaemonConfig& c) {
  server::ServerLimits l;
  l.max_request_bytes = c.max_request_bytes;
  l.max_clients = c.max_clients;
  l.max_output_bytes = c.max_output_bytes;
  l.partial_request_timeout = c.partial_request_timeout;
  return l;
}

// Creates the directory that will hold `path` (the embedded default's
// $XDG_STATE_HOME/connmgr, ...), private to the user.
void ensure_parent(const std::string& path) {
  const auto dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) return;
  std::error_code ec;
  if (std::filesystem::exists(dir, ec)) return;
  std::filesystem::create_directories(dir, ec);
  if (!ec) ::chmod(dir.c_str(), 0700);
}

class Daemon {
 public:
  Daemon(std::vector<std::string> args, config::Environment env, config::DaemonConfig config)
      : args_(std::move(args)), env_(std::move(env)), config_(std::move(config)) {}

  int run();

 private:
  // start()'s steps, in order; each logs why it failed.
  bool start();
  bool resolve_groups(std::optional<gid_t>& socket_gid);
  bool check_inventory_dsn();
  bool open_store();
  bool build_connectors();
  void build_manager();
  void build_inventory();
  void build_server();
  bool listen(std::optional<gid_t> socket_gid);
  void register_methods();
  void build_metrics();
  bool serve_metrics();
  void watch_signals();
  void watch_network();
  void start_timers();
  void announce_ready();

  void on_signal(int signum);
  void on_network_changed();
  void on_inventory_change(const InventoryChange& change);
  void reload();
  void begin_shutdown();
  std::string summary() const;
  bool privileged(const rpc::PeerCredentials& creds);
  void raise_descriptor_limit();
  void close_handles();

  std::vector<std::string> args_;
  config::Environment env_;
  config::DaemonConfig config_;
  Logger log_;
  uv_loop_t loop_{};
  std::unique_ptr<Store> store_;
  ConnectorFactory connectors_;
  EventBus events_;
  std::unique_ptr<ConnectionManager> manager_;
  // Where writes to nodes and endpoints go; the Api borrows it. Destroyed
  // once no request is read any more (the drain), before the manager.
  std::unique_ptr<Inventory> inventory_;
  std::unique_ptr<methods::Api> api_;
  std::unique_ptr<rpc::Dispatcher> dispatcher_;
  std::unique_ptr<server::SocketServer> server_;
  std::optional<gid_t> admin_gid_;
  rpc::AccessPolicy policy_;  // this process's euid and admin_gid_
  Watchdog watchdog_;
  UvHandle<uv_signal_t> sigterm_, sigint_, sighup_;
  std::unique_ptr<NetWatch> netwatch_;  // the host's network changes, to the manager
  Timer status_timer_;  // STATUS= for systemd every kStatusIntervalMs
  Timer drain_timer_;   // the steps of a graceful stop
  std::string socket_path_;
  std::unique_ptr<EventLog> event_log_;  // the events' lines
  metrics::Sources metrics_;  // what the metrics read (method, listener, textfile)
  std::unique_ptr<metrics::MetricsHttpListener> metrics_http_;  // metrics_listen
  std::unique_ptr<metrics::MetricsTextfile> metrics_textfile_;  // metrics_textfile
  uint64_t config_generation_ = 0;  // counts reloads (ApiContext::config_generation)
  bool stopping_ = false;
  int failed_status_ = 1;  // run()'s exit status when start() fails (2: configuration)
};

void Daemon::raise_descriptor_limit() {
  const rlim_t limit = raise_nofile_soft_limit();
  log_.debug("descriptor limit", {{"nofile", limit == RLIM_INFINITY ? std::string("unlimited")
                                                                    : std::to_string(limit)}});
}

bool Daemon::privileged(const rpc::PeerCredentials& c) {
  // policy_ is built at start and again when a reload changes admin_group:
  // geteuid() per state-changing call was a syscall per connect.
  if (rpc::may_change_state(c, policy_)) return true;
  // Refusals are worth an operator's eye (the caller's answer says more).
  log_.warning("state-changing call refused", {{"uid", std::to_string(c.uid)},
                                                {"gid", std::to_string(c.gid)},
                                                {"pid", std::to_string(c.pid)}});
  return false;
}

std::string Daemon::summary() const {
  const size_t clients = server_ ? server_->client_count() : 0;
  return std::to_string(manager_ ? manager_->active_count() : 0) + " active links, " +
         std::to_string(manager_ ? manager_->pending_count() : 0) + " pending, " +
         std::to_string(clients) + " clients";
}

bool Daemon::start() {
  log_.set_level(config_.log_level);
  raise_descriptor_limit();
  std::optional<gid_t> socket_gid;
  if (!resolve_groups(socket_gid)) return false;
  if (!check_inventory_dsn()) return false;
  if (!open_store()) return false;
  if (!build_connectors()) return false;
  build_manager();
  build_inventory();
  build_server();
  if (!listen(socket_gid)) return false;
  build_metrics();
  if (!serve_metrics()) return false;
  register_methods();
  watch_signals();
  watch_network();
  start_timers();
  announce_ready();
  return true;
}

// admin_group (who may change state) and socket_group (the socket file's
// group) name groups that must exist.
bool Daemon::resolve_groups(std::optional<gid_t>& socket_gid) {
  if (config_.admin_group) {
    admin_gid_ = group_id(config_.admin_group);
    if (!admin_gid_) {
      log_.error("admin_group: no such group", {{"group", *config_.admin_group}});
      return false;
    }
  }
  policy_ = rpc::process_access_policy(admin_gid_);
  if (config_.socket_group) {
    socket_gid = group_id(config_.socket_group);
    if (!socket_gid) {
      log_.error("socket_group: no such group", {{"group", *config_.socket_group}});
      return false;
    }
  }
  return true;
}

// --- the inventory (docs/operations.md, "Running a fleet") --------------------

// A DSN that holds a password is a configuration error (exit status 2, like
// the parser's): `status` and the logs show the DSN, so the password belongs
// in a pgpass file. Checked here, not by the configuration parser, which
// stays free of libpq.
bool Daemon::check_inventory_dsn() {
  if (config_.inventory != "postgres" || !config_.inventory_dsn) return true;
  auto has_password = dsn_has_password(*config_.inventory_dsn);
  if (has_password && !*has_password) return true;
  failed_status_ = 2;
  if (!has_password) {
    log_.error("inventory_dsn: " + has_password.error().message());
    return false;
  }
  log_.error("inventory_dsn: holds a password; give it in a pgpass file instead (PGPASSFILE, "
             "~/.pgpass), see docs/operations.md \"Running a fleet\"");
  return false;
}

// The local backend (the database file) or a fleet's shared one; the
// latter connects in the background and tells of every change it applies.
void Daemon::build_inventory() {
  if (config_.inventory != "postgres") {
    inventory_ = std::make_unique<LocalInventory>(&loop_, *store_, config_.lock_timeout);
    return;
  }
  PostgresInventoryOptions options;
  options.dsn = config_.inventory_dsn.value_or("");
  options.resync_interval = config_.inventory_resync_interval;
  options.connect_timeout = config_.inventory_connect_timeout;
  options.retry_max = config_.inventory_retry_max;
  inventory_ = make_postgres_inventory(&loop_, *store_, std::move(options));
  inventory_->set_listener([this](const InventoryChange& change) { on_inventory_change(change); });
  inventory_->start();
}

// A change applied to the mirror, whoever made it: a removed node loses its
// links on this host too, and subscribers hear of every revision.
void Daemon::on_inventory_change(const InventoryChange& change) {
  if (stopping_) return;  // the links are closing anyway; no one is served
  if (change.kind == InventoryChange::Kind::kNodeRemoved) manager_->remove_node_links(change.node_id);
  if (!events_.wants(EventType::kInventoryChanged)) return;
  Event ev;
  ev.type = EventType::kInventoryChanged;
  ev.at = unix_now_ms();
  ev.node_id = change.node_id;
  ev.endpoint_id = change.endpoint_id;
  ev.revision = change.revision;
  ev.kind = std::string(inventory_change_kind_name(change.kind));
  events_.publish(ev);
}

bool Daemon::open_store() {
  ensure_parent(config_.database);
  StoreOptions so;
  so.path = config_.database;
  so.close_lock_limit = config_.lock_timeout;
  auto store = Store::open(&loop_, so);
  if (!store) {
    log_.error(store.error().message(), {{"reason", store.error().reason()}});
    return false;
  }
  store_ = std::move(store).value();
  if (config_.node_id && *config_.node_id != store_->local_node_id()) {
    if (Status s = store_->set_local_node_id(*config_.node_id); !s.ok())
      log_.warning("node_id could not be kept in the database: " + s.message());
  }
  return true;
}

bool Daemon::build_connectors() {
  TcpOptions tcp;
  tcp.keepalive = std::chrono::duration_cast<std::chrono::seconds>(config_.tcp_keepalive);
  connectors_.add(std::make_unique<TcpConnector>(&loop_, tcp));
  QuicOptions quic;
  quic.default_alpn = config_.quic_alpn;
  quic.ca_file = config_.quic_ca_file.value_or("");
  quic.idle_timeout = config_.quic_idle_timeout;
  quic.keepalive = config_.quic_keepalive;
  auto quic_connector = QuicConnector::create(&loop_, quic);
  if (!quic_connector) {
    log_.error(quic_connector.error().message());
    return false;
  }
  connectors_.add(std::move(quic_connector).value());
  return true;
}

void Daemon::build_manager() {
  manager_ = std::make_unique<ConnectionManager>(&loop_, *store_, connectors_, events_,
                                                  connection_config(config_));
  // CONNMGRD_LOG_PERIOD (seconds) shortens the summaries' period for tests.
  uint64_t period_s = kLogSummaryPeriodS;
  if (auto v = env_.getenv ? env_.getenv("CONNMGRD_LOG_PERIOD") : std::nullopt)
    if (const unsigned long n = std::strtoul(v->c_str(), nullptr, 10); n > 0) period_s = n;
  event_log_ = std::make_unique<EventLog>(&loop_, log_, events_, *manager_, period_s);
  event_log_->set_level(config_.log_level);
}

void Daemon::build_server() {
  dispatcher_ = std::make_unique<rpc::Dispatcher>(
      [this](const rpc::PeerCredentials& c) { return privileged(c); });
  dispatcher_->on_warning([this](const std::string& message, const rpc::PeerCredentials& c) {
    log_.warning(message, {{"uid", std::to_string(c.uid)}, {"pid", std::to_string(c.pid)}});
  });
  server_ = std::make_unique<server::SocketServer>(&loop_, *dispatcher_, server_limits(config_));
}

// The socket systemd passed (socket activation), else the configured path.
bool Daemon::listen(std::optional<gid_t> socket_gid) {
  Status s;
  if (auto fd = activated_socket()) {
    socket_path_ = "(systemd socket activation)";
    s = server_->listen_fd(*fd);
  } else {
    ensure_parent(config_.socket);
    socket_path_ = config_.socket;
    s = server_->listen_path(config_.socket, config_.socket_mode, socket_gid);
  }
  if (!s.ok()) log_.error(s.message());
  return s.ok();
}

void Daemon::register_methods() {
  methods::ApiContext ctx;
  ctx.loop = &loop_;
  ctx.store = store_.get();
  ctx.manager = manager_.get();
  ctx.events = &events_;
  ctx.connectors = &connectors_;
  ctx.inventory = inventory_.get();
  ctx.write_lock_limit = config_.lock_timeout;
  ctx.version = CONNMGR_VERSION;
  ctx.started_at_ms = static_cast<uint64_t>(unix_now_ms());
  ctx.client_count = [this] { return server_ ? server_->client_count() : 0; };
  ctx.config_json = [this] { return config::to_json(config_); };
  ctx.config_generation = [this] { return config_generation_; };
  ctx.socket_path = socket_path_;
  ctx.metrics_text = [this] { return metrics::render(metrics_, metrics::Format::kText); };
  api_ = std::make_unique<methods::Api>(ctx);
  for (auto& m : api_->methods()) dispatcher_->add(std::move(m));
}

// The parts the metrics read; they all live as long as the loop serves.
void Daemon::build_metrics() {
  metrics_.version = CONNMGR_VERSION;
  metrics_.store = store_.get();
  metrics_.manager = manager_.get();
  metrics_.dispatcher = dispatcher_.get();
  metrics_.protocols = connectors_.names();
  metrics_.rpc_clients = [this] { return server_ ? server_->client_count() : 0; };
  metrics_.extra = [this](metrics::Exposition& e) {
    metrics::write_inventory_metrics(e, inventory_ ? inventory_->status() : InventoryStatus{});
  };
  metrics_.process = [](metrics::Exposition& e) {
    if (auto stats = metrics::read_process_stats(); stats.ok()) metrics::write_process_metrics(e, *stats);
  };
}

// metrics_listen and metrics_textfile, when configured. A listener that
// cannot bind stops the start (as the socket does): an operator who asked
// for it would otherwise scrape nothing without knowing why.
bool Daemon::serve_metrics() {
  if (config_.metrics_listen) {
    metrics::HttpListenerOptions options;
    options.address = *config_.metrics_listen;
    auto listener = metrics::MetricsHttpListener::start(
        &loop_, options, [this](metrics::Format f) { return metrics::render(metrics_, f); });
    if (!listener) {
      log_.error("metrics_listen: " + listener.error().message());
      return false;
    }
    metrics_http_ = std::move(listener).value();
    log_.info("serving metrics", {{"address", *config_.metrics_listen}});
  }
  if (config_.metrics_textfile) {
    metrics_textfile_ = std::make_unique<metrics::MetricsTextfile>(
        &loop_, *config_.metrics_textfile, config_.metrics_interval,
        [this] { return metrics::render(metrics_, metrics::Format::kText, metrics::Scope::kWithoutProcess); },
        [this](const std::string& error) { log_.warning("metrics_textfile: " + error); });
    metrics_textfile_->start();
  }
  return true;
}

// SIGTERM and SIGINT stop the daemon, SIGHUP reloads its configuration.
void Daemon::watch_signals() {
  auto on_sig = [](uv_signal_t* s, int signum) {
    if (auto* d = UvHandle<uv_signal_t>::owner<Daemon>(s)) d->on_signal(signum);
  };
  for (auto [sig, num] : {std::pair{&sigterm_, SIGTERM}, std::pair{&sigint_, SIGINT}, std::pair{&sighup_, SIGHUP}}) {
    sig->init(&loop_, this, uv_signal_init);
    uv_signal_start(sig->get(), on_sig, num);
  }
}

// rtnetlink's link, address and route changes reach the manager (supervised
// links waiting for a retry are dialled again). Without it (no netlink here)
// the daemon works as before, only slower to notice a network coming back.
void Daemon::watch_network() {
  netwatch_ = std::make_unique<NetWatch>();
  Status s = netwatch_->start(&loop_, [this] { on_network_changed(); });
  if (s.ok()) return;
  log_.warning("network changes will not be noticed: " + s.message());
  netwatch_.reset();
}

void Daemon::on_network_changed() {
  manager_->network_changed();
  log_.info("network changed",
            {{"generation", std::to_string(manager_->network_status().generation)}});
}

void Daemon::start_timers() {
  status_timer_.init(&loop_);
  status_timer_.start(kStatusIntervalMs, [this] { notify_status(summary()); }, kStatusIntervalMs);
  drain_timer_.init(&loop_);
  watchdog_.start(&loop_);
}

void Daemon::announce_ready() {
  log_.info("ready", {{"version", CONNMGR_VERSION},
                      {"database", config_.database},
                      {"socket", socket_path_},
                      {"node_id", store_->local_node_id()},
                      {"inventory", config_.inventory}});
  notify_ready(summary());
}

void Daemon::close_handles() {
  netwatch_.reset();
  sigterm_.close();
  sigint_.close();
  sighup_.close();
  status_timer_.close();
  drain_timer_.close();
}

void Daemon::on_signal(int signum) {
  if (signum == SIGHUP) {
    reload();
    return;
  }
  begin_shutdown();
}

void Daemon::reload() {
  notify_reloading();
  auto inv = config::parse(args_, env_);
  if (!inv) {
    log_.error("reload failed, keeping the running configuration: " + inv.error().message());
    notify_ready(summary() + "; reload failed: " + inv.error().message());
    return;
  }
  config::DaemonConfig next = inv->config;
  std::optional<gid_t> admin = admin_gid_;
  if (next.admin_group != config_.admin_group) {
    admin = group_id(next.admin_group);
    if (next.admin_group && !admin) {
      log_.error("reload failed, keeping the running configuration: admin_group: no such group " +
                 *next.admin_group);
      notify_ready(summary() + "; reload failed");
      return;
    }
  }
  const auto restart = config::keys_needing_restart(config_, next);
  if (!restart.empty()) {
    std::string keys;
    for (const auto& k : restart) keys += (keys.empty() ? "" : ", ") + k;
    log_.warning("reload: these keys change only at restart and keep their running values: " + keys);
    // Keep the running values of what cannot change live (the key table
    // says which; config::merge_reload follows it).
    next = config::merge_reload(config_, next);
  }
  config_ = std::move(next);
  ++config_generation_;  // `status` serializes the configuration again
  admin_gid_ = admin;
  policy_ = rpc::process_access_policy(admin_gid_);
  log_.set_level(config_.log_level);
  event_log_->set_level(config_.log_level);
  manager_->set_config(connection_config(config_));
  server_->set_limits(server_limits(config_));
  log_.info("configuration reloaded");
  notify_ready(summary());
}

void Daemon::begin_shutdown() {
  if (stopping_) return;
  stopping_ = true;
  notify_stopping();
  log_.info("stopping", {{"active", std::to_string(manager_->active_count())},
                         {"pending", std::to_string(manager_->pending_count())}});
  server_->stop_listening();
  metrics_http_.reset();  // scrapes during the drain would see half a daemon
  if (metrics_textfile_) metrics_textfile_->stop();
  netwatch_.reset();  // no redials once the manager has shut down
  // Links close (peers see EOF) and waiting callers are answered "cancelled".
  manager_->shutdown();
  if (Status s = store_->flush(); !s.ok()) log_.warning("statistics not yet written: " + s.message());
  sigterm_.close();
  sigint_.close();
  sighup_.close();
  status_timer_.close();
  event_log_->stop();  // the last repeats are written, then no more timers
  watchdog_.stop();
  // Next turn: the cancelled answers have been queued; flush them, close.
  drain_timer_.start(1, [this] {
    server_->close_clients();
    // No request is read any more: the Api writes nothing after this, and
    // a shared inventory's connection and timers must not keep the loop.
    inventory_.reset();
    drain_timer_.start(kDrainMs, [this] {
      // Clients that would not read their last answers are cut now.
      server_.reset();
      drain_timer_.close();
    });
    // Only clients still writing keep the loop (and this deadline) alive.
    drain_timer_.unref();
  });
}

int Daemon::run() {
  uv_loop_init(&loop_);
  const bool started = start();
  if (started) uv_run(&loop_, UV_RUN_DEFAULT);

  // Take the parts down in dependency order, then let libuv finish closing.
  metrics_http_.reset();  // they read the parts below
  metrics_textfile_.reset();
  inventory_.reset();  // writes under way are dropped; its listener uses the manager
  api_.reset();
  netwatch_.reset();  // its callback uses the manager
  event_log_.reset();  // it uses the manager too
  manager_.reset();
  server_.reset();
  Status flushed = ok_status();
  if (store_) flushed = store_->close();
  if (!flushed.ok()) log_.error("statistics lost at exit: " + flushed.message());
  store_.reset();
  watchdog_.stop();
  // Our own handles first (their blocks are freed by their close callbacks),
  // then whatever another part left open.
  close_handles();
  uv_walk(&loop_, [](uv_handle_t* h, void*) {
    if (!uv_is_closing(h)) uv_close(h, nullptr);
  }, nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
  if (started) log_.info("stopped");
  return started ? 0 : failed_status_;
}

}  // namespace

int run(const std::vector<std::string>& args, const config::Environment& env,
        const config::DaemonConfig& config) {
  Daemon d(args, env, config);
  return d.run();
}

}  // namespace connmgr::daemon
