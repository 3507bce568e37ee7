#include "quic/quic_connector.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <sys/random.h>

#include <cstring>

#include "net/failure_reason.h"
#include "net/socket_address.h"
#include "quic/peer_identity.h"

namespace connmgr {

namespace {

// TLS 1.3 only, and no middlebox compatibility mode (QUIC forbids it).
constexpr const char* kPriority =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:"
    "+AES-128-CCM:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:%DISABLE_TLS13_COMPAT_MODE";
constexpr size_t kMaxUdpPayload = 1452;

uint64_t now_ns() { return uv_hrtime(); }

void fill_random(uint8_t* dest, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = getrandom(dest + got, len - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
}

}  // namespace

// What every dial shares: the credentials and the parsed priority string.
// GnuTLS reference-counts both, and a parsed priority costs ~8 KiB, which
// one per held link would pay for nothing.
struct QuicConnector::Impl {
  uv_loop_t* loop = nullptr;
  QuicOptions options;
  gnutls_certificate_credentials_t credentials = nullptr;
  gnutls_priority_t priority = nullptr;
  ~Impl() {
    if (priority) gnutls_priority_deinit(priority);
    if (credentials) gnutls_certificate_free_credentials(credentials);
  }
};

namespace {

class QuicConnection;

// One QUIC connection from dial to close: the UDP socket, the ngtcp2 and
// GnuTLS state, the expiry timer and the dial's deadline. It frees itself
// once closed and its three libuv handles have called back. The owner is the
// dial until the handshake completes, then a QuicConnection.
class QuicSession {
 public:
  QuicSession(QuicConnector::Impl& connector, const DialRequest& req, ConnectCallback done)
      : connector_(connector), req_(req), done_(std::move(done)), alive_(std::make_shared<bool>(true)) {
    conn_ref_.get_conn = [](ngtcp2_crypto_conn_ref* ref) {
      return static_cast<QuicSession*>(ref->user_data)->conn_;
    };
    conn_ref_.user_data = this;
  }

  DialHandle start();
  void close_by_owner();  // QuicConnection::close()
  void detach_owner() { owner_ = nullptr; }
  std::optional<double> rtt_ms() const;
  bool active() const { return state_ == State::kEstablished; }
  const std::string& local() const { return local_; }
  const std::string& remote() const { return remote_; }

 private:
  enum class State { kResolving, kHandshake, kEstablished, kClosed };

  void on_resolved(int status, addrinfo* res);
  void open_socket(const sockaddr* addr);
  bool init_tls();
  bool init_quic();
  void on_read(ssize_t n, const uv_buf_t* buf);
  void on_expiry();
  void write_packets();
  void arm_timer();
  void handshake_completed() { handshake_done_ = true; }
  void release_tls();
  void after_io();
  void fail(const std::string& reason, const std::string& message);
  void drop(const std::string& reason);
  void teardown();
  void on_handle_closed();
  std::string tls_failure_reason(int rv, std::string* message);

  static int verify_cb(gnutls_session_t s);

  QuicConnector::Impl& connector_;
  DialRequest req_;
  ConnectCallback done_;
  std::shared_ptr<bool> alive_;
  QuicConnection* owner_ = nullptr;
  State state_ = State::kResolving;

  uv_udp_t udp_{};
  uv_timer_t expiry_{};
  uv_timer_t deadline_{};
  uv_getaddrinfo_t gai_{};
  bool resolving_ = false;
  int handles_ = 0;

  ngtcp2_conn* conn_ = nullptr;
  gnutls_session_t tls_ = nullptr;
  ngtcp2_crypto_conn_ref conn_ref_{};
  sockaddr_storage local_addr_{};
  sockaddr_storage remote_addr_{};
  ngtcp2_path path_{};
  std::string local_;
  std::string remote_;
  std::string expected_name_;
  std::string verify_detail_;
  bool pin_mismatch_ = false;
  bool untrusted_ = false;
  bool handshake_done_ = false;
  bool handshake_confirmed_ = false;
  bool stateless_reset_ = false;
};

class QuicConnection final : public Connection {
 public:
  QuicConnection(QuicSession* session, const DialRequest& req)
      : session_(session), node_id_(req.node_id), endpoint_id_(req.endpoint_id),
        protocol_(req.protocol), port_(req.port) {}
  ~QuicConnection() override {
    forget_drop_callback();
    close();
  }

  const std::string& node_id() const override { return node_id_; }
  int64_t endpoint_id() const override { return endpoint_id_; }
  const std::string& protocol() const override { return protocol_; }
  const std::string& remote_address() const override { return session_ ? session_->remote() : empty_; }
  int remote_port() const override { return port_; }
  std::string local_address() const override { return session_ ? session_->local() : std::string(); }
  bool is_active() const override { return session_ && session_->active(); }
  std::optional<double> rtt_ms() const override { return session_ ? session_->rtt_ms() : std::nullopt; }
  void close() override {
    if (!session_) return;
    QuicSession* s = session_;
    session_ = nullptr;
    s->detach_owner();
    s->close_by_owner();
  }

  // From the session: the link ended on its own.
  void on_drop(const std::string& reason) {
    session_ = nullptr;
    notify_drop(reason);  // last: the owner may destroy this
  }

 private:
  QuicSession* session_;
  std::string node_id_;
  int64_t endpoint_id_;
  std::string protocol_;
  int port_;
  std::string empty_;
};

DialHandle QuicSession::start() {
  uv_update_time(connector_.loop);  // the deadline counts from now (see TcpDial)
  uv_timer_init(connector_.loop, &expiry_);
  uv_timer_init(connector_.loop, &deadline_);
  expiry_.data = deadline_.data = this;
  handles_ = 2;
  const auto timeout = static_cast<uint64_t>(std::max<int64_t>(1, req_.timeout.count()));
  uv_timer_start(&deadline_, [](uv_timer_t* t) {
    auto* s = static_cast<QuicSession*>(t->data);
    if (s->state_ == State::kResolving || s->state_ == State::kHandshake)
      s->fail(reason::kTimeout, "QUIC handshake with " + s->req_.address + " port " +
                                    std::to_string(s->req_.port) + " timed out after " +
                                    std::to_string(s->req_.timeout.count()) + " ms");
  }, timeout, 0);

  expected_name_ = req_.server_name.value_or(req_.address);
  sockaddr_storage ss{};
  if (parse_ip_literal(req_.address, req_.port, &ss)) {
    // Opened on the next turn so that `done` never runs inside connect().
    remote_addr_ = ss;
    uv_timer_start(&expiry_, [](uv_timer_t* t) {
      auto* s = static_cast<QuicSession*>(t->data);
      s->open_socket(reinterpret_cast<sockaddr*>(&s->remote_addr_));
    }, 0, 0);
  } else {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    gai_.data = this;
    resolving_ = true;
    ++handles_;  // the request counts like a handle until its callback
    int rc = uv_getaddrinfo(connector_.loop, &gai_, [](uv_getaddrinfo_t* r, int status, addrinfo* res) {
      static_cast<QuicSession*>(r->data)->on_resolved(status, res);
    }, req_.address.c_str(), std::to_string(req_.port).c_str(), &hints);
    if (rc != 0) {
      resolving_ = false;
      --handles_;
      uv_timer_start(&expiry_, [](uv_timer_t* t) {
        auto* s = static_cast<QuicSession*>(t->data);
        s->fail(reason::kDns, "cannot resolve " + s->req_.address);
      }, 0, 0);
    }
  }
  std::weak_ptr<bool> alive = alive_;
  return DialHandle([this, alive] {
    if (auto a = alive.lock(); a && *a && state_ != State::kEstablished && state_ != State::kClosed) {
      done_ = nullptr;
      teardown();
    }
  });
}

void QuicSession::on_resolved(int status, addrinfo* res) {
  resolving_ = false;
  if (state_ == State::kResolving) {
    if (status != 0 || !res) {
      fail(reason::kDns, "cannot resolve " + req_.address + ": " + uv_strerror(status));
    } else {
      memcpy(&remote_addr_, res->ai_addr, res->ai_addrlen);
      open_socket(reinterpret_cast<sockaddr*>(&remote_addr_));
    }
  }
  if (res) uv_freeaddrinfo(res);
  on_handle_closed();  // the request is done
}

void QuicSession::open_socket(const sockaddr* addr) {
  if (state_ != State::kResolving) return;
  state_ = State::kHandshake;
  remote_ = format_host(addr);
  uv_udp_init(connector_.loop, &udp_);
  udp_.data = this;
  ++handles_;
  sockaddr_storage any{};
  parse_ip_literal(addr->sa_family == AF_INET6 ? "::" : "0.0.0.0", 0, &any);
  int rc = uv_udp_bind(&udp_, reinterpret_cast<sockaddr*>(&any), 0);
  // A connected UDP socket hears ICMP port-unreachable as ECONNREFUSED.
  if (rc == 0) rc = uv_udp_connect(&udp_, addr);
  if (rc != 0) {
    fail(reason::from_uv(rc), "cannot open a UDP socket to " + remote_ + ": " + uv_strerror(rc));
    return;
  }
  int len = sizeof local_addr_;
  uv_udp_getsockname(&udp_, reinterpret_cast<sockaddr*>(&local_addr_), &len);
  local_ = format_host_port(reinterpret_cast<sockaddr*>(&local_addr_));
  if (!init_tls() || !init_quic()) return;
  uv_udp_recv_start(&udp_, [](uv_handle_t*, size_t, uv_buf_t* buf) {
    static char scratch[65536];
    *buf = uv_buf_init(scratch, sizeof scratch);
  }, [](uv_udp_t* u, ssize_t n, const uv_buf_t* buf, const sockaddr*, unsigned) {
    static_cast<QuicSession*>(u->data)->on_read(n, buf);
  });
  write_packets();
  arm_timer();
}

int QuicSession::verify_cb(gnutls_session_t s) {
  auto* ref = static_cast<ngtcp2_crypto_conn_ref*>(gnutls_session_get_ptr(s));
  auto* self = static_cast<QuicSession*>(ref->user_data);
  switch (quic::judge_peer(s, self->expected_name_, self->req_.pin_sha256, &self->verify_detail_)) {
    case quic::Verdict::kAccepted:
      return 0;
    case quic::Verdict::kPinMismatch:
      self->pin_mismatch_ = true;
      return -1;
    case quic::Verdict::kUntrusted:
      self->untrusted_ = true;
      return -1;
  }
  return -1;
}

bool QuicSession::init_tls() {
  // No tickets: connmgr never resumes, and a session freed after the
  // handshake (release_tls) could not keep one. GnuTLS then offers no
  // psk_key_exchange_modes, and RFC 8446 §4.2.9 asks servers to send no
  // ticket; one sent anyway is dropped (see recv_crypto_data).
  int rc = gnutls_init(&tls_, GNUTLS_CLIENT | GNUTLS_ENABLE_EARLY_DATA | GNUTLS_NO_END_OF_EARLY_DATA |
                                  GNUTLS_NO_TICKETS);
  if (rc == 0) rc = gnutls_priority_set(tls_, connector_.priority);
  if (rc == 0) rc = ngtcp2_crypto_gnutls_configure_client_session(tls_) == 0 ? 0 : GNUTLS_E_INTERNAL_ERROR;
  if (rc == 0) rc = gnutls_credentials_set(tls_, GNUTLS_CRD_CERTIFICATE, connector_.credentials);
  if (rc != 0) {
    fail(reason::kTls, std::string("cannot set up TLS: ") + gnutls_strerror(rc));
    return false;
  }
  // Not the connection itself: ngtcp2's helpers find it through this ref.
  gnutls_session_set_ptr(tls_, &conn_ref_);
  gnutls_session_set_verify_function(tls_, &QuicSession::verify_cb);
  sockaddr_storage probe{};
  if (!parse_ip_literal(expected_name_, 0, &probe))  // SNI never carries an IP
    gnutls_server_name_set(tls_, GNUTLS_NAME_DNS, expected_name_.data(), expected_name_.size());
  const std::string alpn = req_.alpn.value_or(connector_.options.default_alpn);
  gnutls_datum_t proto{reinterpret_cast<unsigned char*>(const_cast<char*>(alpn.data())),
                       static_cast<unsigned>(alpn.size())};
  gnutls_alpn_set_protocols(tls_, &proto, 1, GNUTLS_ALPN_MANDATORY);
  return true;
}

bool QuicSession::init_quic() {
  ngtcp2_callbacks cb{};
  cb.client_initial = ngtcp2_crypto_client_initial_cb;
  // Once the handshake is confirmed the TLS session is gone (release_tls);
  // the only CRYPTO data QUIC allows after that is a NewSessionTicket
  // (RFC 9001 §4.1.3: no KeyUpdate, no post-handshake authentication),
  // which connmgr would not use.
  cb.recv_crypto_data = [](ngtcp2_conn* conn, ngtcp2_crypto_level level, uint64_t offset, const uint8_t* data,
                           size_t len, void* self) {
    if (!static_cast<QuicSession*>(self)->tls_) return 0;
    return ngtcp2_crypto_recv_crypto_data_cb(conn, level, offset, data, len, self);
  };
  cb.encrypt = ngtcp2_crypto_encrypt_cb;
  cb.decrypt = ngtcp2_crypto_decrypt_cb;
  cb.hp_mask = ngtcp2_crypto_hp_mask_cb;
  cb.recv_retry = ngtcp2_crypto_recv_retry_cb;
  cb.update_key = ngtcp2_crypto_update_key_cb;
  cb.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
  cb.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
  cb.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
  cb.version_negotiation = ngtcp2_crypto_version_negotiation_cb;
  cb.rand = [](uint8_t* dest, size_t len, const ngtcp2_rand_ctx*) { fill_random(dest, len); };
  cb.get_new_connection_id = [](ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token, size_t len, void*) {
    fill_random(cid->data, len);
    cid->datalen = len;
    fill_random(token, NGTCP2_STATELESS_RESET_TOKENLEN);
    return 0;
  };
  cb.handshake_completed = [](ngtcp2_conn*, void* self) {
    static_cast<QuicSession*>(self)->handshake_completed();
    return 0;
  };
  cb.handshake_confirmed = [](ngtcp2_conn*, void* self) {
    static_cast<QuicSession*>(self)->handshake_confirmed_ = true;
    return 0;
  };
  cb.recv_stateless_reset = [](ngtcp2_conn*, const ngtcp2_pkt_stateless_reset*, void* self) {
    static_cast<QuicSession*>(self)->stateless_reset_ = true;
    return 0;
  };

  ngtcp2_cid dcid, scid;
  dcid.datalen = 18;
  fill_random(dcid.data, dcid.datalen);
  scid.datalen = 17;
  fill_random(scid.data, scid.datalen);

  ngtcp2_settings settings;
  ngtcp2_settings_default(&settings);
  settings.initial_ts = now_ns();
  // The default (333 ms) is for the open Internet; the first retransmit on a
  // LAN or loopback should not wait that long.
  settings.initial_rtt = 100 * NGTCP2_MILLISECONDS;
  settings.handshake_timeout = static_cast<ngtcp2_duration>(req_.timeout.count()) * NGTCP2_MILLISECONDS;

  ngtcp2_transport_params params;
  ngtcp2_transport_params_default(&params);
  // connmgr opens no streams; a peer (e.g. HTTP/3) may open a few of its own.
  params.initial_max_stream_data_bidi_local = 64 * 1024;
  params.initial_max_stream_data_bidi_remote = 64 * 1024;
  params.initial_max_stream_data_uni = 64 * 1024;
  params.initial_max_data = 256 * 1024;
  params.initial_max_streams_bidi = 0;
  params.initial_max_streams_uni = 3;
  params.max_idle_timeout = static_cast<ngtcp2_duration>(connector_.options.idle_timeout.count()) * NGTCP2_MILLISECONDS;

  path_.local.addr = reinterpret_cast<ngtcp2_sockaddr*>(&local_addr_);
  path_.local.addrlen = local_addr_.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  path_.remote.addr = reinterpret_cast<ngtcp2_sockaddr*>(&remote_addr_);
  path_.remote.addrlen = remote_addr_.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);

  int rv = ngtcp2_conn_client_new(&conn_, &dcid, &scid, &path_, NGTCP2_PROTO_VER_V1, &cb, &settings,
                                  &params, nullptr, this);
  if (rv != 0) {
    fail(reason::kHandshake, std::string("cannot create the QUIC connection: ") + ngtcp2_strerror(rv));
    return false;
  }
  ngtcp2_conn_set_tls_native_handle(conn_, tls_);
  return true;
}

void QuicSession::write_packets() {
  if (!conn_ || state_ == State::kClosed) return;
  uint8_t buf[kMaxUdpPayload];
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi{};
  for (;;) {
    ngtcp2_ssize n = ngtcp2_conn_write_pkt(conn_, &ps.path, &pi, buf, sizeof buf, now_ns());
    if (n < 0) {
      if (state_ == State::kHandshake) fail(reason::kHandshake, std::string("QUIC: ") + ngtcp2_strerror(static_cast<int>(n)));
      else drop(reason::kClosed);
      return;
    }
    if (n == 0) return;
    uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(buf), static_cast<unsigned>(n));
    // A full socket buffer loses this packet; QUIC's recovery resends it.
    uv_udp_try_send(&udp_, &b, 1, nullptr);
  }
}

void QuicSession::arm_timer() {
  if (!conn_ || state_ == State::kClosed) return;
  const ngtcp2_tstamp expiry = ngtcp2_conn_get_expiry(conn_);
  if (expiry == UINT64_MAX) {
    uv_timer_stop(&expiry_);
    return;
  }
  const uint64_t now = now_ns();
  const uint64_t delay_ms = expiry <= now ? 0 : (expiry - now + 999999) / 1000000;
  uv_timer_start(&expiry_, [](uv_timer_t* t) { static_cast<QuicSession*>(t->data)->on_expiry(); },
                 delay_ms, 0);
}

void QuicSession::on_expiry() {
  if (!conn_ || state_ == State::kClosed) return;
  int rv = ngtcp2_conn_handle_expiry(conn_, now_ns());
  if (rv == NGTCP2_ERR_IDLE_CLOSE) {
    if (state_ == State::kHandshake) fail(reason::kTimeout, "QUIC peer " + remote_ + " went silent during the handshake");
    else drop(reason::kIdleTimeout);
    return;
  }
  if (rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
    fail(reason::kTimeout, "QUIC handshake with " + remote_ + " timed out");
    return;
  }
  if (rv != 0) {
    if (state_ == State::kHandshake) fail(reason::kHandshake, std::string("QUIC: ") + ngtcp2_strerror(rv));
    else drop(reason::kClosed);
    return;
  }
  write_packets();
  arm_timer();
}

std::string QuicSession::tls_failure_reason(int rv, std::string* message) {
  if (pin_mismatch_) {
    *message = "QUIC peer " + remote_ + " failed its pin: " + verify_detail_;
    return reason::kPinMismatch;
  }
  if (untrusted_) {
    *message = "QUIC peer " + remote_ + " is not trusted as " + expected_name_ + ": " + verify_detail_;
    return reason::kTls;
  }
  const uint8_t alert = ngtcp2_conn_get_tls_alert(conn_);
  *message = std::string("QUIC/TLS handshake with ") + remote_ + " failed: " + ngtcp2_strerror(rv);
  if (alert) *message += std::string(" (TLS alert: ") + gnutls_alert_get_strname(static_cast<gnutls_alert_description_t>(alert)) + ")";
  // no_application_protocol (120): the peer speaks no ALPN we offered.
  return alert == 120 ? reason::kHandshake : reason::kTls;
}

void QuicSession::on_read(ssize_t n, const uv_buf_t* buf) {
  if (state_ == State::kClosed || !conn_) return;
  if (n == 0) return;
  if (n < 0) {
    if (state_ == State::kHandshake)
      fail(reason::from_uv(static_cast<int>(n)), "QUIC dial to " + remote_ + " port " +
                                                     std::to_string(req_.port) + " failed: " +
                                                     uv_strerror(static_cast<int>(n)));
    else
      drop(n == UV_ECONNREFUSED ? reason::kClosed : reason::from_uv(static_cast<int>(n)));
    return;
  }
  ngtcp2_pkt_info pi{};
  int rv = ngtcp2_conn_read_pkt(conn_, &path_, &pi, reinterpret_cast<const uint8_t*>(buf->base),
                                static_cast<size_t>(n), now_ns());
  if (rv != 0) {
    if (rv == NGTCP2_ERR_DRAINING || rv == NGTCP2_ERR_CLOSING) {
      // The peer closed (CONNECTION_CLOSE) or reset the connection.
      if (state_ == State::kHandshake) {
        std::string message;
        std::string why = tls_failure_reason(rv, &message);
        if (!pin_mismatch_ && !untrusted_) {
          why = stateless_reset_ ? reason::kReset : reason::kHandshake;
          message = "QUIC peer " + remote_ + " closed the connection during the handshake";
        }
        fail(why, message);
      } else {
        drop(stateless_reset_ ? reason::kReset : reason::kClosed);
      }
      return;
    }
    if (rv == NGTCP2_ERR_CRYPTO || rv == NGTCP2_ERR_CALLBACK_FAILURE) {
      std::string message;
      const std::string why = tls_failure_reason(rv, &message);
      if (state_ == State::kHandshake) fail(why, message);
      else drop(reason::kClosed);
      return;
    }
    // Anything else: a packet we could not use; QUIC tolerates that.
    if (state_ == State::kHandshake && ngtcp2_err_is_fatal(rv)) {
      fail(reason::kHandshake, std::string("QUIC: ") + ngtcp2_strerror(rv));
      return;
    }
  }
  after_io();
}

void QuicSession::after_io() {
  write_packets();
  if (state_ == State::kClosed) return;
  if (handshake_confirmed_ && tls_) release_tls();
  if (state_ == State::kHandshake && handshake_done_) {
    state_ = State::kEstablished;
    uv_timer_stop(&deadline_);
    ngtcp2_conn_set_keep_alive_timeout(
        conn_, static_cast<ngtcp2_duration>(connector_.options.keepalive.count()) * NGTCP2_MILLISECONDS);
    auto conn = std::make_unique<QuicConnection>(this, req_);
    owner_ = conn.get();
    auto done = std::move(done_);
    done_ = nullptr;
    arm_timer();
    if (done) done(std::unique_ptr<Connection>(std::move(conn)));
    return;
  }
  arm_timer();
}

// After the handshake is confirmed ngtcp2 needs no TLS: packet protection,
// key updates and header protection use its own AEAD contexts, and the
// peer's identity was judged during the handshake. The session (~10 KiB of
// heap, ~12 KiB of RSS per held link, measured: session, extensions, the
// peer's certificate) is freed then, not at close. Confirmed, not merely
// completed: until HANDSHAKE_DONE the server may still resend
// Handshake-level CRYPTO data.
void QuicSession::release_tls() {
  ngtcp2_conn_set_tls_native_handle(conn_, nullptr);
  gnutls_deinit(tls_);
  tls_ = nullptr;
}

std::optional<double> QuicSession::rtt_ms() const {
  if (!conn_) return std::nullopt;
  ngtcp2_conn_stat stat{};
  ngtcp2_conn_get_conn_stat(conn_, &stat);
  return static_cast<double>(stat.smoothed_rtt) / 1e6;
}

void QuicSession::fail(const std::string& why, const std::string& message) {
  if (state_ == State::kClosed || state_ == State::kEstablished) return;
  auto done = std::move(done_);
  done_ = nullptr;
  teardown();
  if (done) done(Error(ErrorCode::kConnectFailed, message, why));
}

void QuicSession::drop(const std::string& why) {
  if (state_ != State::kEstablished) return;
  QuicConnection* owner = owner_;
  owner_ = nullptr;
  teardown();
  if (owner) owner->on_drop(why);
}

void QuicSession::close_by_owner() {
  owner_ = nullptr;
  if (state_ == State::kEstablished && conn_) {
    // Tell the peer (CONNECTION_CLOSE, NO_ERROR) before the socket goes.
    uint8_t buf[kMaxUdpPayload];
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi{};
    ngtcp2_connection_close_error ccerr;
    ngtcp2_connection_close_error_default(&ccerr);
    ngtcp2_ssize n = ngtcp2_conn_write_connection_close(conn_, &ps.path, &pi, buf, sizeof buf, &ccerr, now_ns());
    if (n > 0) {
      uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(buf), static_cast<unsigned>(n));
      uv_udp_try_send(&udp_, &b, 1, nullptr);
    }
  }
  teardown();
}

void QuicSession::teardown() {
  if (state_ == State::kClosed) return;
  const bool had_socket = state_ != State::kResolving;
  state_ = State::kClosed;
  *alive_ = false;
  done_ = nullptr;
  if (resolving_) uv_cancel(reinterpret_cast<uv_req_t*>(&gai_));
  auto closed = [](uv_handle_t* h) { static_cast<QuicSession*>(h->data)->on_handle_closed(); };
  uv_close(reinterpret_cast<uv_handle_t*>(&expiry_), closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&deadline_), closed);
  if (had_socket) uv_close(reinterpret_cast<uv_handle_t*>(&udp_), closed);
}

void QuicSession::on_handle_closed() {
  if (--handles_ > 0 || state_ != State::kClosed) return;
  if (conn_) ngtcp2_conn_del(conn_);
  if (tls_) gnutls_deinit(tls_);
  delete this;
}

}  // namespace

Result<std::unique_ptr<QuicConnector>> QuicConnector::create(uv_loop_t* loop, QuicOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->loop = loop;
  impl->options = std::move(options);
  int rc = gnutls_certificate_allocate_credentials(&impl->credentials);
  if (rc == 0) {
    rc = impl->options.ca_file.empty()
             ? gnutls_certificate_set_x509_system_trust(impl->credentials)
             : gnutls_certificate_set_x509_trust_file(impl->credentials, impl->options.ca_file.c_str(),
                                                      GNUTLS_X509_FMT_PEM);
    // Both return the number of certificates loaded.
    if (rc == 0 && !impl->options.ca_file.empty())
      return Error(ErrorCode::kInternal, "quic_ca_file: no certificate in " + impl->options.ca_file);
    if (rc > 0) rc = 0;
  }
  if (rc < 0) {
    return Error(ErrorCode::kInternal,
                 std::string(impl->options.ca_file.empty() ? "cannot load the system trust store"
                                                           : "quic_ca_file: cannot load " + impl->options.ca_file) +
                     ": " + gnutls_strerror(rc));
  }
  if (rc = gnutls_priority_init(&impl->priority, kPriority, nullptr); rc < 0)
    return Error(ErrorCode::kInternal, std::string("cannot parse the TLS priority string: ") + gnutls_strerror(rc));
  return std::unique_ptr<QuicConnector>(new QuicConnector(std::move(impl)));
}

QuicConnector::QuicConnector(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
QuicConnector::~QuicConnector() = default;

DialHandle QuicConnector::connect(const DialRequest& request, ConnectCallback done) {
  auto* session = new QuicSession(*impl_, request, std::move(done));
  return session->start();
}

}  // namespace connmgr
