#include "net/tcp_connector.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "net/address_race.h"
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

// One address's connect: its socket and the uv_connect_t under way. Owned by
// the race's handle for it, so destroying the handle closes the socket
// (net/address_race.h); answers `done` as the last thing it does.
class TcpAttempt {
 public:
  TcpAttempt(uv_loop_t* loop, AddressRace<TcpConnected>::AttemptDone done) : loop_(loop), done_(std::move(done)) {}

  void start(const sockaddr_storage& address) {
    const auto* addr = reinterpret_cast<const sockaddr*>(&address);
    ip_ = format_host(addr);
    if (const int rc = start_connect(addr); rc != 0) {
      // Failed at once (no route, no socket left): answered on the next
      // turn, never inside the race's Attempt call.
      socket_.close();
      later_.init(loop_);
      later_.start(0, [this, rc] { on_connect(rc); });
    }
  }

 private:
  // The request lives in its own heap block, freed in its callback: libuv
  // calls a pending connect back (UV_ECANCELED) when the socket closes,
  // which may be after this attempt is gone. The callback reaches the
  // attempt only through the socket's owner, null once the socket was closed.
  int start_connect(const sockaddr* addr) {
    if (const int rc = socket_.init(loop_, this, uv_tcp_init); rc != 0) return rc;
    auto* request = new uv_connect_t{};
    const int rc = uv_tcp_connect(request, socket_.get(), addr, &TcpAttempt::connected);
    if (rc != 0) delete request;  // not taken: no callback will come
    return rc;
  }

  static void connected(uv_connect_t* request, int status) {
    std::unique_ptr<uv_connect_t> owned(request);
    if (auto* attempt = UvHandle<uv_tcp_t>::owner<TcpAttempt>(request->handle)) attempt->on_connect(status);
  }

  // The message is the error in words only: the dial names its target.
  void on_connect(int status) {
    auto done = std::move(done_);
    if (status != 0) {
      socket_.close();
      return done(Error::connect_failed(reason::describe_uv(status), reason::from_uv(status)));
    }
    done(TcpConnected{std::move(socket_), ip_});  // last: the race may destroy this
  }

  uv_loop_t* loop_;
  AddressRace<TcpConnected>::AttemptDone done_;
  UvHandle<uv_tcp_t> socket_;
  Timer later_;  // a failure known at once, answered on the next turn
  std::string ip_;
};

// One dial: resolve the host, then race its addresses (net/address_race.h),
// all within the request's one timeout. Owned by the connector's Dials; it
// leaves them (and so is destroyed) when it answers, and may be destroyed
// at any time before: its timer, resolution and race are members that
// close themselves.
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
    deadline_at_ = uv_now(loop_) + static_cast<uint64_t>(limit);
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
    connecting_ = true;
    race_.start(
        loop_, addresses.value(), req_.attempt_delay, deadline_at_, req_.on_address,
        [this](const sockaddr_storage& address, std::chrono::milliseconds, AddressRace<TcpConnected>::AttemptDone done) {
          auto attempt = std::make_shared<TcpAttempt>(loop_, std::move(done));
          attempt->start(address);
          return DialHandle([attempt] {});  // cancelling (or dropping) it destroys the attempt
        },
        [this](Result<TcpConnected> r) { on_raced(std::move(r)); });
  }

  void on_raced(Result<TcpConnected> result) {
    if (!result.ok()) {
      const Error& e = result.error();
      return answer(Error::connect_failed("connect to " + target_ + " failed: " + e.message() + tried_list(),
                                          e.reason()));
    }
    // Links carry small messages: no Nagle delay. Keepalive finds a peer
    // that vanished without a FIN or RST (power loss, a NAT forgetting us).
    uv_tcp_t* socket = result.value().socket.get();
    uv_tcp_nodelay(socket, 1);
    if (options_.keepalive.count() > 0) uv_tcp_keepalive(socket, 1, static_cast<unsigned>(options_.keepalive.count()));
    // The socket now belongs to the link or stream the caller makes of it.
    answer(std::move(result));
  }

  void on_timeout() {
    std::string text = "connect to " + target_ + " timed out after " + std::to_string(req_.timeout.count()) + " ms";
    if (!connecting_) text += " while resolving the name";
    answer(Error::connect_failed(text + tried_list(), reason::kTimeout));
  }

  // " (tried ::1, 127.0.0.1)" when the host was a name; "" for a literal.
  std::string tried_list() const {
    const auto& tried = race_.tried();
    if (tried.empty() || (tried.size() == 1 && tried[0] == req_.address)) return {};
    std::string out = " (tried ";
    for (size_t i = 0; i < tried.size(); ++i) out += (i ? ", " : "") + tried[i];
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
  uint64_t deadline_at_ = 0;  // loop time
  Resolution resolution_;
  bool connecting_ = false;  // resolved: racing the addresses
  AddressRace<TcpConnected> race_;
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
