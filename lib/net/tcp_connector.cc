#include "net/tcp_connector.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "net/failure_reason.h"
#include "net/resolver.h"
#include "net/socket_address.h"

namespace connmgr {

class TcpDial;

// The dials of one connector still under way, so that destroying the
// connector can cancel them. Shared with the dials, which leave it when they
// finish, whichever of the two goes first.
struct TcpConnector::Dials {
  std::unordered_set<TcpDial*> under_way;
};

namespace {

// --- an established link --------------------------------------------------------

class TcpConnection;

// The libuv side of a link: the bare handle, which lives until uv_close's
// callback frees it, so that the TcpConnection owning it may be destroyed at
// any time. Its `data` is the dial while dialling, then the owning
// TcpConnection, then nullptr once the connection let it go. Nothing else
// rides along: a held link costs its handle (248 bytes) and the connection.
using TcpLink = uv_tcp_t;

void free_link_on_close(uv_handle_t* h) { delete reinterpret_cast<TcpLink*>(h); }

const std::string kTcp = "tcp";

class TcpConnection final : public Connection {
 public:
  TcpConnection(TcpLink* link, const DialRequest& req, std::string remote_ip)
      : link_(link),
        node_id_(req.node_id),
        endpoint_id_(req.endpoint_id),
        remote_(std::move(remote_ip)),
        port_(req.port) {
    link_->data = this;
    // Read all the time, so that a FIN or a RST is seen when it arrives and
    // not at the next write. connmgr holds links and does not speak on them:
    // whatever the peer sends is dropped.
    uv_read_start(reinterpret_cast<uv_stream_t*>(link_), on_alloc, on_read);
  }

  ~TcpConnection() override {
    forget_drop_callback();
    close();
  }

  const std::string& node_id() const override { return node_id_; }
  int64_t endpoint_id() const override { return endpoint_id_; }
  const std::string& protocol() const override { return kTcp; }
  const std::string& remote_address() const override { return remote_; }
  int remote_port() const override { return port_; }
  std::string local_address() const override {
    sockaddr_storage ss{};
    int len = sizeof ss;
    if (!link_ || uv_tcp_getsockname(link_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
    return format_host_port(reinterpret_cast<const sockaddr*>(&ss));
  }
  bool is_active() const override { return link_ != nullptr; }

  std::optional<double> rtt_ms() const override {
    if (!link_) return std::nullopt;
    uv_os_fd_t fd;
    if (uv_fileno(reinterpret_cast<const uv_handle_t*>(link_), &fd) != 0) return std::nullopt;
    tcp_info info{};
    socklen_t len = sizeof info;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return std::nullopt;
    return static_cast<double>(info.tcpi_rtt) / 1000.0;  // the kernel's smoothed RTT, in µs
  }

  void close() override {
    if (!link_) return;
    // uv_close on a TCP handle close(2)s the socket: the peer reads EOF.
    link_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(link_), free_link_on_close);
    link_ = nullptr;
  }

 private:
  static void on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
    // The bytes are never looked at: one scratch buffer per thread serves all links.
    thread_local char scratch[16 * 1024];
    *buf = uv_buf_init(scratch, sizeof scratch);
  }

  static void on_read(uv_stream_t* stream, ssize_t n, const uv_buf_t*) {
    auto* owner = static_cast<TcpConnection*>(stream->data);
    if (n < 0 && owner) owner->on_read_error(static_cast<int>(n));
  }

  // UV_EOF: the peer closed ("closed"); UV_ECONNRESET: "reset"; else errno name.
  void on_read_error(int error) {
    close();
    // Last statement: the owner may destroy this connection from the callback.
    notify_drop(reason::from_uv(error));
  }

  TcpLink* link_;
  std::string node_id_;
  int64_t endpoint_id_;
  std::string remote_;
  int port_;
};

}  // namespace

// --- a dial ----------------------------------------------------------------------

// One dial: resolve the host, then try each address in turn until one
// connects, all within the request's one timeout. States: resolving,
// connecting (one address at a time), done. It frees itself once done and
// every libuv handle it opened has called back; refs_ counts those.
class TcpDial {
 public:
  TcpDial(uv_loop_t* loop, const DialRequest& req, ConnectCallback done, const TcpOptions& options,
          std::shared_ptr<TcpConnector::Dials> dials)
      : loop_(loop), req_(req), done_(std::move(done)), options_(options), dials_(std::move(dials)),
        alive_(std::make_shared<bool>(true)) {
    target_ = (req_.address.find(':') != std::string::npos ? "[" + req_.address + "]" : req_.address) +
              ":" + std::to_string(req_.port);
  }

  DialHandle start() {
    dials_->under_way.insert(this);
    uv_timer_init(loop_, &timer_);
    timer_.data = this;
    ++refs_;  // the timer, until its close callback
    const auto limit = req_.timeout.count() > 0 ? req_.timeout.count() : 1;
    // Timers count from the loop's cached time, which may be a whole loop
    // turn old when connect() is called: refresh it so that the timeout
    // counts from now, not from before.
    uv_update_time(loop_);
    uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<TcpDial*>(t->data)->on_timeout(); },
                   static_cast<uint64_t>(limit), 0);
    // The resolver never answers inside resolve(), so neither does this dial
    // inside connect(). Its callback never runs after finish() cancels it.
    state_ = State::kResolving;
    resolving_ = resolve(loop_, req_.address, req_.port, std::chrono::milliseconds(0),
                         [this](Result<std::vector<sockaddr_storage>> r) { on_resolved(std::move(r)); });
    std::weak_ptr<bool> alive = alive_;
    return DialHandle([this, alive] {
      // alive_ is true only while the dial is under way, hence not freed.
      if (auto a = alive.lock(); a && *a) cancel();
    });
  }

  void cancel() {
    done_ = nullptr;
    finish();
    maybe_free();
  }

 private:
  enum class State { kResolving, kConnecting, kDone };

  void on_resolved(Result<std::vector<sockaddr_storage>> addresses) {
    resolving_ = DialHandle();
    if (!addresses.ok()) {
      fail(addresses.error());
      return;
    }
    addresses_ = std::move(addresses).value();
    state_ = State::kConnecting;
    connect_next();
  }

  // Starts a connect to the next address; an address that fails at once
  // (no route, no socket left) is passed over like one that fails later.
  void connect_next() {
    while (next_ < addresses_.size()) {
      const sockaddr* addr = reinterpret_cast<const sockaddr*>(&addresses_[next_++]);
      current_ip_ = format_host(addr);
      tried_.push_back(current_ip_);
      auto* link = new TcpLink{};
      int rc = uv_tcp_init(loop_, link);
      if (rc != 0) {
        delete link;  // not initialised: nothing for uv_close to do
        last_error_ = rc;
        continue;
      }
      link->data = this;
      ++refs_;  // the handle, until its close callback or until a connection takes it
      connect_req_.data = this;
      rc = uv_tcp_connect(&connect_req_, link, addr, [](uv_connect_t* r, int status) {
        static_cast<TcpDial*>(r->data)->on_connect(status);
      });
      if (rc != 0) {
        last_error_ = rc;
        close_attempt(link);
        continue;
      }
      attempt_ = link;
      return;
    }
    fail(connect_error(last_error_ != 0 ? last_error_ : UV_EADDRNOTAVAIL));
  }

  void on_connect(int status) {
    TcpLink* link = attempt_;
    attempt_ = nullptr;
    // No attempt: finish() closed it, which calls back here with
    // UV_ECANCELED before the close callback that frees it.
    if (!link) return;
    if (status != 0) {
      last_error_ = status;
      close_attempt(link);
      connect_next();
      return;
    }
    // Connected: the handle now belongs to the connection.
    --refs_;
    // Links carry small messages: no Nagle delay. Keepalive finds a peer
    // that vanished without a FIN or RST (power loss, a NAT forgetting us).
    uv_tcp_nodelay(link, 1);
    if (options_.keepalive.count() > 0)
      uv_tcp_keepalive(link, 1, static_cast<unsigned>(options_.keepalive.count()));
    auto conn = std::make_unique<TcpConnection>(link, req_, current_ip_);
    auto done = std::move(done_);
    finish();
    // The timer's close callback is still to come, so `this` survives `done`.
    done(std::unique_ptr<Connection>(std::move(conn)));
    maybe_free();
  }

  void on_timeout() {
    std::string text = "connect to " + target_ + " timed out after " +
                       std::to_string(req_.timeout.count()) + " ms";
    if (state_ == State::kResolving) text += " while resolving the name";
    fail(Error(ErrorCode::kConnectFailed, text + tried_list(), reason::kTimeout));
  }

  Error connect_error(int uv_error) const {
    return Error(ErrorCode::kConnectFailed,
                 "connect to " + target_ + " failed: " + uv_strerror(uv_error) + tried_list(),
                 reason::from_uv(uv_error));
  }

  // " (tried ::1, 127.0.0.1)" when the host was a name; "" for a literal.
  std::string tried_list() const {
    if (tried_.empty() || (tried_.size() == 1 && tried_[0] == req_.address)) return {};
    std::string out = " (tried ";
    for (size_t i = 0; i < tried_.size(); ++i) out += (i ? ", " : "") + tried_[i];
    return out + ")";
  }

  void fail(const Error& error) {
    if (state_ == State::kDone) return;
    auto done = std::move(done_);
    finish();
    if (done) done(error);
    maybe_free();
  }

  // Stops whatever is still running; the callbacks that follow find kDone.
  void finish() {
    if (state_ == State::kDone) return;
    state_ = State::kDone;
    *alive_ = false;
    dials_->under_way.erase(this);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
      auto* dial = static_cast<TcpDial*>(h->data);
      --dial->refs_;
      dial->maybe_free();
    });
    resolving_.cancel();
    if (attempt_) {
      TcpLink* link = attempt_;
      attempt_ = nullptr;
      close_attempt(link);
    }
  }

  // Closes a handle that did not become a link; freed in its close callback.
  void close_attempt(TcpLink* link) {
    uv_close(reinterpret_cast<uv_handle_t*>(link), [](uv_handle_t* h) {
      auto* dial = static_cast<TcpDial*>(h->data);
      free_link_on_close(h);
      --dial->refs_;
      dial->maybe_free();
    });
  }

  void maybe_free() {
    if (state_ == State::kDone && refs_ == 0) delete this;
  }

  uv_loop_t* loop_;
  DialRequest req_;
  ConnectCallback done_;
  TcpOptions options_;
  std::shared_ptr<TcpConnector::Dials> dials_;
  std::shared_ptr<bool> alive_;
  std::string target_;  // "host:port" / "[v6]:port", for messages

  State state_ = State::kResolving;
  uv_timer_t timer_{};
  DialHandle resolving_;
  std::vector<sockaddr_storage> addresses_;
  size_t next_ = 0;
  uv_connect_t connect_req_{};  // reused: one connect at a time
  TcpLink* attempt_ = nullptr;
  std::string current_ip_;
  std::vector<std::string> tried_;
  int last_error_ = 0;
  int refs_ = 0;
};

TcpConnector::TcpConnector(uv_loop_t* loop, TcpOptions options)
    : loop_(loop), options_(options), dials_(std::make_shared<Dials>()) {}

TcpConnector::~TcpConnector() {
  // Cancelling removes a dial from the set: walk a copy.
  const auto under_way = dials_->under_way;
  for (TcpDial* dial : under_way) dial->cancel();
}

DialHandle TcpConnector::connect(const DialRequest& request, ConnectCallback done) {
  auto* dial = new TcpDial(loop_, request, std::move(done), options_, dials_);
  return dial->start();
}

}  // namespace connmgr
