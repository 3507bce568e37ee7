#include "net/tcp_connector.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstring>
#include <vector>

#include "net/failure_reason.h"
#include "net/socket_address.h"

namespace connmgr {

namespace {

// --- an established link --------------------------------------------------------

// The libuv side of a link: lives until uv_close's callback, which frees it,
// so that the TcpConnection owning it may be destroyed at any time.
struct TcpLink {
  uv_tcp_t tcp{};
  class TcpConnection* owner = nullptr;
  uint64_t bytes_in = 0;
};

void close_link(TcpLink* link) {
  link->owner = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&link->tcp),
           [](uv_handle_t* h) { delete static_cast<TcpLink*>(h->data); });
}

class TcpConnection final : public Connection {
 public:
  TcpConnection(TcpLink* link, const DialRequest& req, std::string remote)
      : link_(link),
        node_id_(req.node_id),
        endpoint_id_(req.endpoint_id),
        protocol_(req.protocol),
        remote_(std::move(remote)),
        port_(req.port) {
    link_->owner = this;
    link_->tcp.data = link_;
    sockaddr_storage ss{};
    int len = sizeof ss;
    if (uv_tcp_getsockname(&link_->tcp, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
      local_ = format_host_port(reinterpret_cast<const sockaddr*>(&ss));
    // Read continuously: EOF and resets are seen at once; bytes are counted
    // and dropped (connmgr keeps links, it does not speak on them).
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&link_->tcp),
        [](uv_handle_t*, size_t, uv_buf_t* buf) {
          static char scratch[16 * 1024];
          *buf = uv_buf_init(scratch, sizeof scratch);
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t*) {
          auto* link = static_cast<TcpLink*>(s->data);
          if (n > 0) {
            link->bytes_in += static_cast<uint64_t>(n);
            return;
          }
          if (n < 0 && link->owner) link->owner->on_read_error(static_cast<int>(n));
        });
  }

  ~TcpConnection() override {
    forget_drop_callback();
    close();
  }

  const std::string& node_id() const override { return node_id_; }
  int64_t endpoint_id() const override { return endpoint_id_; }
  const std::string& protocol() const override { return protocol_; }
  const std::string& remote_address() const override { return remote_; }
  int remote_port() const override { return port_; }
  const std::string& local_address() const override { return local_; }
  bool is_active() const override { return link_ != nullptr; }

  std::optional<double> rtt_ms() const override {
    if (!link_) return std::nullopt;
    uv_os_fd_t fd;
    if (uv_fileno(reinterpret_cast<const uv_handle_t*>(&link_->tcp), &fd) != 0) return std::nullopt;
    struct tcp_info info {};
    socklen_t len = sizeof info;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return std::nullopt;
    return static_cast<double>(info.tcpi_rtt) / 1000.0;  // tcpi_rtt is in µs
  }

  void close() override {
    if (!link_) return;
    // uv_close on a TCP handle closes the socket: the peer sees FIN (EOF).
    close_link(link_);
    link_ = nullptr;
  }

  void on_read_error(int error) {
    close();
    // Last statement: the owner may destroy this connection from the callback.
    notify_drop(reason::from_uv(error));
  }

 private:
  TcpLink* link_;
  std::string node_id_;
  int64_t endpoint_id_;
  std::string protocol_;
  std::string remote_;
  int port_;
  std::string local_;
};

// --- a dial ------------------------------------------------------------------------

// One dial: resolve, then try each address in turn, all within one timeout.
// It frees itself once finished and every libuv handle and request it
// started has called back (refs_ counts those).
class TcpDial {
 public:
  TcpDial(uv_loop_t* loop, const DialRequest& req, ConnectCallback done, const TcpOptions& options)
      : loop_(loop), req_(req), done_(std::move(done)), options_(options),
        alive_(std::make_shared<bool>(true)) {}

  DialHandle start() {
    // The deadline counts from now, not from the loop's cached time, which is
    // stale when the caller did blocking work since the loop last woke.
    uv_update_time(loop_);
    uv_timer_init(loop_, &timer_);
    timer_.data = this;
    ++refs_;  // the timer, until its close callback
    uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<TcpDial*>(t->data)->on_timeout(); },
                   static_cast<uint64_t>(req_.timeout.count() > 0 ? req_.timeout.count() : 1), 0);

    sockaddr_storage ss{};
    if (parse_ip_literal(req_.address, req_.port, &ss)) {
      addresses_.push_back(ss);
      try_next();
    } else {
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      hints.ai_flags = AI_ADDRCONFIG;
      gai_.data = this;
      ++refs_;
      resolving_ = true;
      const std::string port = std::to_string(req_.port);
      int rc = uv_getaddrinfo(
          loop_, &gai_,
          [](uv_getaddrinfo_t* r, int status, addrinfo* res) {
            static_cast<TcpDial*>(r->data)->on_resolved(status, res);
          },
          req_.address.c_str(), port.c_str(), &hints);
      if (rc != 0) {
        --refs_;
        resolving_ = false;
        fail_later(rc, "cannot resolve " + req_.address);
      }
    }
    std::weak_ptr<bool> alive = alive_;
    return DialHandle([this, alive] {
      if (auto a = alive.lock(); a && *a) cancel();
    });
  }

 private:
  void on_resolved(int status, addrinfo* res) {
    --refs_;
    resolving_ = false;
    if (!finished_) {
      if (status != 0) {
        finish_error(status, "cannot resolve " + req_.address + ": " + uv_strerror(status));
      } else {
        for (addrinfo* ai = res; ai; ai = ai->ai_next) {
          sockaddr_storage ss{};
          memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
          addresses_.push_back(ss);
        }
        try_next();
      }
    }
    uv_freeaddrinfo(res);
    maybe_free();
  }

  void try_next() {
    while (!finished_ && next_ < addresses_.size()) {
      const sockaddr_storage& addr = addresses_[next_++];
      current_addr_ = format_host(reinterpret_cast<const sockaddr*>(&addr));
      auto* link = new TcpLink;
      link->tcp.data = this;
      int rc = uv_tcp_init(loop_, &link->tcp);
      if (rc != 0) {
        delete link;
        last_error_ = rc;
        continue;
      }
      ++refs_;  // the handle, until its close callback or hand-over
      connect_req_.data = this;
      rc = uv_tcp_connect(&connect_req_, &link->tcp, reinterpret_cast<const sockaddr*>(&addr),
                          [](uv_connect_t* r, int status) {
                            static_cast<TcpDial*>(r->data)->on_connect(status);
                          });
      if (rc != 0) {
        last_error_ = rc;
        release_handle(link);
        continue;
      }
      pending_ = link;
      return;
    }
    if (!finished_) {
      finish_error(last_error_ ? last_error_ : UV_EADDRNOTAVAIL,
                   "connect to " + describe() + " failed");
    }
  }

  void on_connect(int status) {
    TcpLink* link = pending_;
    pending_ = nullptr;
    if (!link) {
      // Closed by finish(): its close callback frees it.
      maybe_free();
      return;
    }
    if (status != 0) {
      if (status != UV_ECANCELED) last_error_ = status;
      release_handle(link);
      try_next();
      maybe_free();
      return;
    }
    // Established: the link now belongs to the connection.
    --refs_;
    uv_tcp_nodelay(&link->tcp, 1);
    if (options_.keepalive.count() > 0)
      uv_tcp_keepalive(&link->tcp, 1, static_cast<unsigned>(options_.keepalive.count()));
    auto conn = std::make_unique<TcpConnection>(link, req_, current_addr_);
    auto done = std::move(done_);
    finish();
    done(std::unique_ptr<Connection>(std::move(conn)));
    maybe_free();
  }

  void on_timeout() {
    if (finished_) return;
    const std::string target = describe();
    finish_error(UV_ETIMEDOUT, "connect to " + target + " timed out after " +
                                   std::to_string(req_.timeout.count()) + " ms");
  }

  void cancel() {
    if (finished_) return;
    done_ = nullptr;
    finish();
    maybe_free();
  }

  // Reports an error found while connect() is still on the stack: through
  // the timer, so that the callback never runs inside connect().
  void fail_later(int error, std::string message) {
    later_error_ = error;
    later_message_ = std::move(message);
    uv_timer_start(&timer_, [](uv_timer_t* t) {
      auto* d = static_cast<TcpDial*>(t->data);
      d->finish_error(d->later_error_, d->later_message_);
    }, 0, 0);
  }

  void finish_error(int error, const std::string& message) {
    if (finished_) return;
    std::string why = reason::from_uv(error);
    std::string text = message;
    if (error != UV_ETIMEDOUT && message.find(uv_strerror(error)) == std::string::npos)
      text += ": " + std::string(uv_strerror(error));
    auto done = std::move(done_);
    finish();
    if (done) done(Error(ErrorCode::kConnectFailed, text, why));
    maybe_free();
  }

  // Stops everything still running; the callbacks that follow find finished_.
  void finish() {
    finished_ = true;
    *alive_ = false;
    done_ = nullptr;
    if (!timer_closed_) {
      timer_closed_ = true;
      uv_timer_stop(&timer_);
      uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
        auto* d = static_cast<TcpDial*>(h->data);
        --d->refs_;
        d->maybe_free();
      });
    }
    if (resolving_) uv_cancel(reinterpret_cast<uv_req_t*>(&gai_));
    if (pending_) {
      // Closing the handle makes its connect callback run with UV_ECANCELED,
      // before the close callback that frees it.
      TcpLink* link = pending_;
      pending_ = nullptr;
      release_handle(link);
    }
  }

  // Closes a handle that did not become a link; frees it in the callback.
  void release_handle(TcpLink* link) {
    link->tcp.data = this;
    uv_close(reinterpret_cast<uv_handle_t*>(&link->tcp), [](uv_handle_t* h) {
      auto* d = static_cast<TcpDial*>(h->data);
      delete reinterpret_cast<TcpLink*>(h);  // tcp is TcpLink's first member
      --d->refs_;
      d->maybe_free();
    });
  }

  std::string describe() const {
    std::string target = req_.address;
    if (!current_addr_.empty() && current_addr_ != req_.address) target += " (" + current_addr_ + ")";
    return target + " port " + std::to_string(req_.port);
  }

  void maybe_free() {
    if (finished_ && refs_ == 0 && !freeing_) {
      freeing_ = true;
      delete this;
    }
  }

  uv_loop_t* loop_;
  DialRequest req_;
  ConnectCallback done_;
  TcpOptions options_;
  std::shared_ptr<bool> alive_;

  uv_timer_t timer_{};
  bool timer_closed_ = false;
  uv_getaddrinfo_t gai_{};
  bool resolving_ = false;
  uv_connect_t connect_req_{};
  TcpLink* pending_ = nullptr;

  std::vector<sockaddr_storage> addresses_;
  size_t next_ = 0;
  std::string current_addr_;
  int last_error_ = 0;
  int later_error_ = 0;
  std::string later_message_;
  int refs_ = 0;
  bool finished_ = false;
  bool freeing_ = false;
};

}  // namespace

TcpConnector::TcpConnector(uv_loop_t* loop, TcpOptions options) : loop_(loop), options_(options) {}
TcpConnector::~TcpConnector() = default;

DialHandle TcpConnector::connect(const DialRequest& request, ConnectCallback done) {
  auto* dial = new TcpDial(loop_, request, std::move(done), options_);
  return dial->start();
}

}  // namespace connmgr
