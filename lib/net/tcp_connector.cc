#include "net/tcp_connector.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "net/failure_reason.h"
#include "net/resolver.h"
#include "net/socket_address.h"
#include "net/tcp_stream.h"
#include "util/uv_handle.h"

namespace connmgr {

class TcpDial;

// What a dial hands over: the connected socket and the IP that answered.
struct TcpConnected {
  UvHandle<uv_tcp_t> socket;
  std::string ip;
};
using TcpDialDone = std::function<void(Result<TcpConnected>)>;

// The dials of one connector still under way, which it owns: a dial leaves
// (and is destroyed) when it ends, and destroying the connector destroys
// those left. Links share it too, to dial their streams' connections (a
// TCP stream is a connection of its own); dial handles hold it only as a
// weak_ptr, so that a handle cancelled after the dials went does nothing.
struct TcpConnector::Dials : std::enable_shared_from_this<TcpConnector::Dials> {
  Dials(uv_loop_t* l, TcpOptions o) : loop(l), options(o) {}
  DialHandle start(const DialRequest& request, TcpDialDone done);

  uv_loop_t* loop;
  TcpOptions options;
  std::unordered_map<uint64_t, std::unique_ptr<TcpDial>> under_way;
  uint64_t next_id = 1;
};

namespace {

// --- an established link --------------------------------------------------------

const std::string kTcp = "tcp";

// The link's socket is a UvHandle<uv_tcp_t>: one pointer here, the handle's
// own heap block (248 bytes) freed in its close callback, so the connection
// may be destroyed at any time. Nothing else rides along but a share of the
// connector's dials (for open_stream): a held link costs its handle and this
// object.
class TcpConnection final : public Connection {
 public:
  TcpConnection(UvHandle<uv_tcp_t> link, const DialRequest& req, std::string remote_ip,
                std::shared_ptr<TcpConnector::Dials> dials)
      : link_(std::move(link)),
        dials_(std::move(dials)),
        node_id_(req.node_id),
        endpoint_id_(req.endpoint_id),
        remote_(std::move(remote_ip)),
        port_(req.port) {
    link_.set_owner(this);
    // Read all the time, so that a FIN or a RST is seen when it arrives and
    // not at the next write. connmgr holds links and does not speak on them:
    // whatever the peer sends is dropped.
    uv_read_start(link_.as_stream(), on_alloc, on_read);
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
    if (!link_ || uv_tcp_getsockname(link_.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
    return format_host_port(reinterpret_cast<const sockaddr*>(&ss));
  }
  bool is_active() const override { return static_cast<bool>(link_); }

  std::optional<double> rtt_ms() const override {
    if (!link_) return std::nullopt;
    uv_os_fd_t fd;
    if (uv_fileno(link_.as_handle(), &fd) != 0) return std::nullopt;
    tcp_info info{};
    socklen_t len = sizeof info;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return std::nullopt;
    return static_cast<double>(info.tcpi_rtt) / 1000.0;  // the kernel's smoothed RTT, in µs
  }

  // uv_close on a TCP handle close(2)s the socket: the peer reads EOF.
  void close() override { link_.close(); }

  // A stream is a new connection to the address that answered for the link
  // (a literal: the dial resolves nothing), dialled like the link was.
  DialHandle open_stream(std::chrono::milliseconds timeout, StreamLimits limits, StreamCallback done) override {
    DialRequest req;
    req.node_id = node_id_;
    req.endpoint_id = endpoint_id_;
    req.protocol = kTcp;
    req.address = remote_;
    req.port = port_;
    req.timeout = timeout;
    uv_loop_t* loop = dials_->loop;
    return dials_->start(req, [loop, limits, done = std::move(done)](Result<TcpConnected> r) {
      if (!r.ok()) return done(r.error());
      done(make_tcp_stream(loop, std::move(r.value().socket), limits));
    });
  }

 private:
  static void on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
    // The bytes are never looked at: one scratch buffer per thread serves all links.
    thread_local char scratch[16 * 1024];
    *buf = uv_buf_init(scratch, sizeof scratch);
  }

  static void on_read(uv_stream_t* stream, ssize_t n, const uv_buf_t*) {
    auto* self = UvHandle<uv_tcp_t>::owner<TcpConnection>(stream);
    if (n < 0 && self) self->on_read_error(static_cast<int>(n));
  }

  // UV_EOF: the peer closed ("closed"); UV_ECONNRESET: "reset"; else errno name.
  void on_read_error(int error) {
    close();
    // Last statement: the owner may destroy this connection from the callback.
    notify_drop(reason::from_uv(error));
  }

  UvHandle<uv_tcp_t> link_;
  std::shared_ptr<TcpConnector::Dials> dials_;
  std::string node_id_;
  int64_t endpoint_id_;
  std::string remote_;
  int port_;
};

}  // namespace

// --- a dial ----------------------------------------------------------------------

// One dial: resolve the host, then try each address in turn until one
// connects, all within the request's one timeout. Owned by the connector's
// Dials; it leaves them (and so is destroyed) when it answers, and may be
// destroyed at any time before: its timer, resolution and socket are
// members that close themselves.
class TcpDial {
 public:
  TcpDial(uv_loop_t* loop, const DialRequest& req, TcpDialDone done, const TcpOptions& options,
          TcpConnector::Dials* dials, uint64_t id)
      : loop_(loop), req_(req), done_(std::move(done)), options_(options), dials_(dials), id_(id) {
    target_ = (req_.address.find(':') != std::string::npos ? "[" + req_.address + "]" : req_.address) +
              ":" + std::to_string(req_.port);
  }

  void start() {
    const auto limit = req_.timeout.count() > 0 ? req_.timeout.count() : 1;
    // Timers count from the loop's cached time, which may be a whole loop
    // turn old when connect() is called: refresh it so that the timeout
    // counts from now, not from before.
    uv_update_time(loop_);
    deadline_.init(loop_);
    deadline_.start(static_cast<uint64_t>(limit), [this] { on_timeout(); });
    // The resolver never answers inside start(), so neither does this dial
    // inside connect().
    resolution_.start(loop_, req_.address, req_.port, std::chrono::milliseconds(0),
                      [this](Result<std::vector<sockaddr_storage>> r) { on_resolved(std::move(r)); });
  }

 private:
  void on_resolved(Result<std::vector<sockaddr_storage>> addresses) {
    if (!addresses.ok()) return answer(addresses.error());
    addresses_ = std::move(addresses).value();
    connecting_ = true;
    connect_next();
  }

  // Starts a connect to the next address; an address that fails at once
  // (no route, no socket left) is passed over like one that fails later.
  void connect_next() {
    while (next_ < addresses_.size()) {
      const sockaddr* addr = reinterpret_cast<const sockaddr*>(&addresses_[next_++]);
      current_ip_ = format_host(addr);
      tried_.push_back(current_ip_);
      if (const int rc = start_connect(addr); rc != 0) {
        last_error_ = rc;
        attempt_.close();
        continue;
      }
      return;
    }
    answer(connect_error(last_error_ != 0 ? last_error_ : UV_EADDRNOTAVAIL));
  }

  // The request lives in its own heap block, freed in its callback: libuv
  // calls a pending connect back (UV_ECANCELED) when the socket closes,
  // which may be after this dial is gone. The callback reaches the dial
  // only through the socket's owner, null once the socket was closed.
  int start_connect(const sockaddr* addr) {
    if (const int rc = attempt_.init(loop_, this, uv_tcp_init); rc != 0) return rc;
    auto* request = new uv_connect_t{};
    const int rc = uv_tcp_connect(request, attempt_.get(), addr, &TcpDial::connected);
    if (rc != 0) delete request;  // not taken: no callback will come
    return rc;
  }

  static void connected(uv_connect_t* request, int status) {
    std::unique_ptr<uv_connect_t> owned(request);
    if (auto* dial = UvHandle<uv_tcp_t>::owner<TcpDial>(request->handle)) dial->on_connect(status);
  }

  void on_connect(int status) {
    if (status != 0) {
      last_error_ = status;
      attempt_.close();
      connect_next();
      return;
    }
    // Links carry small messages: no Nagle delay. Keepalive finds a peer
    // that vanished without a FIN or RST (power loss, a NAT forgetting us).
    uv_tcp_nodelay(attempt_.get(), 1);
    if (options_.keepalive.count() > 0)
      uv_tcp_keepalive(attempt_.get(), 1, static_cast<unsigned>(options_.keepalive.count()));
    // The socket now belongs to the link or stream the caller makes of it.
    answer(TcpConnected{std::move(attempt_), current_ip_});
  }

  void on_timeout() {
    std::string text = "connect to " + target_ + " timed out after " + std::to_string(req_.timeout.count()) + " ms";
    if (!connecting_) text += " while resolving the name";
    answer(Error::connect_failed(text + tried_list(), reason::kTimeout));
  }

  Error connect_error(int uv_error) const {
    return Error::connect_failed("connect to " + target_ + " failed: " + reason::describe_uv(uv_error) + tried_list(),
                                 reason::from_uv(uv_error));
  }

  // " (tried ::1, 127.0.0.1)" when the host was a name; "" for a literal.
  std::string tried_list() const {
    if (tried_.empty() || (tried_.size() == 1 && tried_[0] == req_.address)) return {};
    std::string out = " (tried ";
    for (size_t i = 0; i < tried_.size(); ++i) out += (i ? ", " : "") + tried_[i];
    return out + ")";
  }

  // The dial leaves its connector (which destroys it: the timer, the
  // resolution and any socket still connecting close), then answers.
  void answer(Result<TcpConnected> result) {
    auto done = std::move(done_);
    TcpConnector::Dials* dials = dials_;
    dials->under_way.erase(id_);  // destroys this
    if (done) done(std::move(result));
  }

  uv_loop_t* loop_;
  DialRequest req_;
  TcpDialDone done_;
  TcpOptions options_;
  TcpConnector::Dials* dials_;  // the owner
  uint64_t id_;
  std::string target_;  // "host:port" / "[v6]:port", for messages

  Timer deadline_;
  Resolution resolution_;
  bool connecting_ = false;  // resolved: trying addresses
  std::vector<sockaddr_storage> addresses_;
  size_t next_ = 0;
  UvHandle<uv_tcp_t> attempt_;  // the address being tried
  std::string current_ip_;
  std::vector<std::string> tried_;
  int last_error_ = 0;
};

DialHandle TcpConnector::Dials::start(const DialRequest& request, TcpDialDone done) {
  const uint64_t id = next_id++;
  auto dial = std::make_unique<TcpDial>(loop, request, std::move(done), options, this, id);
  TcpDial* started = dial.get();
  under_way.emplace(id, std::move(dial));
  started->start();
  return DialHandle([dials = weak_from_this(), id] {
    // A no-op once the dial has answered (it left the set) or the dials went.
    if (auto d = dials.lock()) d->under_way.erase(id);
  });
}

TcpConnector::TcpConnector(uv_loop_t* loop, TcpOptions options)
    : dials_(std::make_shared<Dials>(loop, options)) {}

// The dials still under way go with their owner; their callbacks never run.
// Links already made keep the (then empty) set for their streams.
TcpConnector::~TcpConnector() { dials_->under_way.clear(); }

DialHandle TcpConnector::connect(const DialRequest& request, ConnectCallback done) {
  // The dials own this callback (with the dial): a raw pointer, not a share.
  return dials_->start(request, [request, dials = dials_.get(), done = std::move(done)](Result<TcpConnected> r) {
    if (!r.ok()) return done(r.error());
    done(std::unique_ptr<Connection>(std::make_unique<TcpConnection>(
        std::move(r.value().socket), request, std::move(r.value().ip), dials->shared_from_this())));
  });
}

}  // namespace connmgr
