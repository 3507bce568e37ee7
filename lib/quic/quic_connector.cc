#include "quic/quic_connector.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <sys/random.h>

#include <cstring>
#include <unordered_map>
#include <utility>

#include "net/failure_reason.h"
#include "net/socket_address.h"
#include "quic/peer_identity.h"
#include "util/uv_handle.h"

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

namespace {
class QuicSession;
}  // namespace

// The dials under way, which own their sessions until the handshake ends:
// a session leaves the set (destroyed on failure, handed to its
// QuicConnection on success), and destroying the connector destroys the
// rest. Handles reach it through a weak_ptr (a no-op once it is gone).
struct QuicDials {
  std::unordered_map<uint64_t, std::unique_ptr<QuicSession>> under_way;
  uint64_t next_id = 1;
};

// What every dial shares: the credentials and the parsed priority string.
// GnuTLS reference-counts both, and a parsed priority costs ~8 KiB, which
// one per held link would pay for nothing.
struct QuicConnector::Impl {
  uv_loop_t* loop = nullptr;
  QuicOptions options;
  gnutls_certificate_credentials_t credentials = nullptr;
  gnutls_priority_t priority = nullptr;
  std::shared_ptr<QuicDials> dials = std::make_shared<QuicDials>();
  ~Impl() {
    dials->under_way.clear();  // their TLS sessions use the credentials
    if (priority) gnutls_priority_deinit(priority);
    if (credentials) gnutls_certificate_free_credentials(credentials);
  }
};

namespace {

class QuicConnection;

// One QUIC connection from dial to close: the UDP socket, the ngtcp2 and
// GnuTLS state, the expiry timer and the dial's deadline. Owned by the
// connector's QuicDials until the handshake completes, then by its
// QuicConnection; destroying it at any time closes everything.
//
// Ending it (fail(), drop()) is always the last thing a method does, and a
// method that may end it returns false then: its owner may destroy it from
// the callback that reports the end, so nothing may touch it afterwards.
// ngtcp2's and GnuTLS's callbacks only note facts (flags); the decisions
// are taken after ngtcp2 returns.
class QuicSession {
 public:
  QuicSession(QuicConnector::Impl& connector, const DialRequest& req, ConnectCallback done, uint64_t id)
      : connector_(connector), req_(req), done_(std::move(done)), id_(id) {
    conn_ref_.get_conn = [](ngtcp2_crypto_conn_ref* ref) {
      return static_cast<QuicSession*>(ref->user_data)->conn_;
    };
    conn_ref_.user_data = this;
  }
  ~QuicSession() { release_quic(); }
  QuicSession(const QuicSession&) = delete;
  QuicSession& operator=(const QuicSession&) = delete;

  void start();
  void close_by_owner();  // QuicConnection::close()
  std::optional<double> rtt_ms() const;
  bool active() const { return state_ == State::kEstablished; }
  const std::string& local() const { return local_; }
  const std::string& remote() const { return remote_; }

 private:
  enum class State { kResolving, kHandshake, kEstablished, kClosed };

  // Dial steps, one per event.
  void start_deadline();
  void start_lookup();
  void on_deadline();
  void on_resolved(int status, const addrinfo* res);
  void open_socket(const sockaddr* addr);
  bool bind_and_connect(const sockaddr* addr);
  bool init_tls();
  bool init_quic();
  void start_reading();
  // Connection steps.
  void on_read(ssize_t n, const uv_buf_t* buf);
  void on_read_error(int error);
  void on_packet_error(int rv);
  void on_expiry();
  bool write_packets();
  void send(const uint8_t* data, size_t len);
  void arm_timer();
  void after_io();
  void establish();
  void release_tls();
  void release_quic();
  std::string tls_failure_reason(int rv, std::string* message);
  // Endings.
  void fail(const std::string& reason, const std::string& message);
  void drop(const std::string& reason);
  void stop_io();

  static int verify_cb(gnutls_session_t s);
  static ngtcp2_callbacks callbacks();

  QuicConnector::Impl& connector_;
  DialRequest req_;
  ConnectCallback done_;
  uint64_t id_;  // in connector_.dials while dialling
  QuicConnection* owner_ = nullptr;
  State state_ = State::kResolving;

  UvHandle<uv_udp_t> udp_;
  Timer expiry_;
  Timer deadline_;
  AddrInfoRequest lookup_;

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

  friend class QuicConnection;
};

class QuicConnection final : public Connection {
 public:
  QuicConnection(std::unique_ptr<QuicSession> session, const DialRequest& req)
      : session_(std::move(session)), node_id_(req.node_id), endpoint_id_(req.endpoint_id),
        protocol_(req.protocol), port_(req.port), loop_(session_->connector_.loop) {
    session_->owner_ = this;
  }
  ~QuicConnection() override {
    forget_drop_callback();
    close();
  }

  const std::string& node_id() const override { return node_id_; }
  int64_t endpoint_id() const override { return endpoint_id_; }
  const std::string& protocol() const override { return protocol_; }
  const std::string& remote_address() const override { return live() ? session_->remote() : empty_; }
  int remote_port() const override { return port_; }
  std::string local_address() const override { return live() ? session_->local() : std::string(); }
  bool is_active() const override { return live() && session_->active(); }
  std::optional<double> rtt_ms() const override { return live() ? session_->rtt_ms() : std::nullopt; }
  void close() override {
    if (!session_) return;
    session_->owner_ = nullptr;
    if (!dropped_) session_->close_by_owner();
    session_.reset();
  }

  // Not yet: QUIC streams land in the next commit. Answers on the next turn
  // (never inside the call) with reason "unsupported". The timer owns itself
  // through its callback until it fires or the handle cancels it.
  DialHandle open_stream(std::chrono::milliseconds, StreamLimits, StreamCallback done) override {
    auto timer = std::make_shared<Timer>(loop_);
    timer->start(0, [timer, done = std::move(done)] {
      done(Error::connect_failed("streams over QUIC links are not supported yet", "unsupported"));
    });
    return DialHandle([weak = std::weak_ptr<Timer>(timer)] {
      if (auto t = weak.lock()) t->stop();
    });
  }

  // From the session: the link ended on its own. The session stays (closed)
  // until this connection goes: it is still on the stack here.
  void on_drop(const std::string& reason) {
    dropped_ = true;
    notify_drop(reason);  // last: the owner may destroy this
  }

 private:
  bool live() const { return session_ && !dropped_; }

  std::unique_ptr<QuicSession> session_;
  bool dropped_ = false;
  std::string node_id_;
  int64_t endpoint_id_;
  std::string protocol_;
  int port_;
  uv_loop_t* loop_;
  std::string empty_;
};

// --- dialling -------------------------------------------------------------------

void QuicSession::start() {
  expiry_.init(connector_.loop);
  deadline_.init(connector_.loop);
  start_deadline();
  expected_name_ = req_.server_name.value_or(req_.address);
  sockaddr_storage ss{};
  if (parse_ip_literal(req_.address, req_.port, &ss)) {
    // Opened on the next turn so that `done` never runs inside connect().
    remote_addr_ = ss;
    expiry_.start(0, [this] { open_socket(reinterpret_cast<sockaddr*>(&remote_addr_)); });
  } else {
    start_lookup();
  }
}

void QuicSession::start_deadline() {
  uv_update_time(connector_.loop);  // the deadline counts from now (see TcpDial)
  const auto timeout = static_cast<uint64_t>(std::max<int64_t>(1, req_.timeout.count()));
  deadline_.start(timeout, [this] { on_deadline(); });
}

void QuicSession::on_deadline() {
  if (state_ != State::kResolving && state_ != State::kHandshake) return;
  fail(reason::kTimeout, "QUIC handshake with " + req_.address + " port " + std::to_string(req_.port) +
                             " timed out after " + std::to_string(req_.timeout.count()) + " ms");
}

void QuicSession::start_lookup() {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  const int rc = lookup_.start(connector_.loop, req_.address.c_str(), std::to_string(req_.port).c_str(), &hints,
                               [this](int status, addrinfo* res) { on_resolved(status, res); });
  if (rc != 0) {
    // Answered on the next turn, never inside connect().
    expiry_.start(0, [this, rc] {
      fail(reason::kDns, "cannot resolve " + req_.address + ": " + uv_strerror(rc));
    });
  }
}

void QuicSession::on_resolved(int status, const addrinfo* res) {
  if (state_ != State::kResolving) return;
  if (status != 0 || !res)
    return fail(reason::kDns, "cannot resolve " + req_.address + ": " + uv_strerror(status));
  memcpy(&remote_addr_, res->ai_addr, res->ai_addrlen);
  open_socket(reinterpret_cast<sockaddr*>(&remote_addr_));
}

void QuicSession::open_socket(const sockaddr* addr) {
  if (state_ != State::kResolving) return;
  state_ = State::kHandshake;
  remote_ = format_host(addr);
  if (!bind_and_connect(addr) || !init_tls() || !init_quic()) return;
  start_reading();
  if (!write_packets()) return;
  arm_timer();
}

bool QuicSession::bind_and_connect(const sockaddr* addr) {
  int rc = udp_.init(connector_.loop, this, uv_udp_init);
  sockaddr_storage any{};
  parse_ip_literal(addr->sa_family == AF_INET6 ? "::" : "0.0.0.0", 0, &any);
  if (rc == 0) rc = uv_udp_bind(udp_.get(), reinterpret_cast<sockaddr*>(&any), 0);
  // A connected UDP socket hears ICMP port-unreachable as ECONNREFUSED.
  if (rc == 0) rc = uv_udp_connect(udp_.get(), addr);
  if (rc != 0) {
    fail(reason::from_uv(rc), "cannot open a UDP socket to " + remote_ + ": " + uv_strerror(rc));
    return false;
  }
  int len = sizeof local_addr_;
  uv_udp_getsockname(udp_.get(), reinterpret_cast<sockaddr*>(&local_addr_), &len);
  local_ = format_host_port(reinterpret_cast<sockaddr*>(&local_addr_));
  return true;
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
  // Names the call that failed, with GnuTLS's words.
  auto failed = [this](const char* call, const std::string& why) {
    fail(reason::kTls, std::string("cannot set up TLS: ") + call + ": " + why);
    return false;
  };
  // No tickets: connmgr never resumes, and a session freed after the
  // handshake (release_tls) could not keep one. GnuTLS then offers no
  // psk_key_exchange_modes, and RFC 8446 (section 4.2.9) asks servers to
  // send no ticket; one sent anyway is dropped (see recv_crypto_data).
  int rc = gnutls_init(&tls_, GNUTLS_CLIENT | GNUTLS_ENABLE_EARLY_DATA | GNUTLS_NO_END_OF_EARLY_DATA |
                                  GNUTLS_NO_TICKETS);
  if (rc != 0) return failed("gnutls_init", gnutls_strerror(rc));
  if ((rc = gnutls_priority_set(tls_, connector_.priority)) != 0)
    return failed("gnutls_priority_set", gnutls_strerror(rc));
  if (ngtcp2_crypto_gnutls_configure_client_session(tls_) != 0)
    return failed("ngtcp2_crypto_gnutls_configure_client_session", "failed");
  if ((rc = gnutls_credentials_set(tls_, GNUTLS_CRD_CERTIFICATE, connector_.credentials)) != 0)
    return failed("gnutls_credentials_set", gnutls_strerror(rc));
  // Not the connection itself: ngtcp2's helpers find it through this ref.
  gnutls_session_set_ptr(tls_, &conn_ref_);
  gnutls_session_set_verify_function(tls_, &QuicSession::verify_cb);
  sockaddr_storage probe{};
  if (!parse_ip_literal(expected_name_, 0, &probe))  // SNI never carries an IP
    gnutls_server_name_set(tls_, GNUTLS_NAME_DNS, expected_name_.data(), expected_name_.size());
  const std::string alpn = req_.alpn.value_or(connector_.options.default_alpn);
  gnutls_datum_t proto{reinterpret_cast<unsigned char*>(const_cast<char*>(alpn.data())),
                       static_cast<unsigned>(alpn.size())};
  if ((rc = gnutls_alpn_set_protocols(tls_, &proto, 1, GNUTLS_ALPN_MANDATORY)) != 0)
    return failed("gnutls_alpn_set_protocols", gnutls_strerror(rc));
  return true;
}

// ngtcp2's callbacks: its crypto helpers, plus a few that only note what
// happened for the session to act on once ngtcp2 returns.
ngtcp2_callbacks QuicSession::callbacks() {
  ngtcp2_callbacks cb{};
  cb.client_initial = ngtcp2_crypto_client_initial_cb;
  // Once the handshake is confirmed the TLS session is gone (release_tls);
  // the only CRYPTO data QUIC allows after that is a NewSessionTicket
  // (RFC 9001, section 4.1.3: no KeyUpdate, no post-handshake
  // authentication), which connmgr would not use.
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
    static_cast<QuicSession*>(self)->handshake_done_ = true;
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
  return cb;
}

namespace {

ngtcp2_settings client_settings(std::chrono::milliseconds handshake_timeout) {
  ngtcp2_settings settings;
  ngtcp2_settings_default(&settings);
  settings.initial_ts = now_ns();
  // The default (333 ms) is for the open Internet; the first retransmit on a
  // LAN or loopback should not wait that long.
  settings.initial_rtt = 100 * NGTCP2_MILLISECONDS;
  settings.handshake_timeout = static_cast<ngtcp2_duration>(handshake_timeout.count()) * NGTCP2_MILLISECONDS;
  return settings;
}

ngtcp2_transport_params client_params(std::chrono::milliseconds idle_timeout) {
  ngtcp2_transport_params params;
  ngtcp2_transport_params_default(&params);
  // connmgr opens no streams; a peer (e.g. HTTP/3) may open a few of its own.
  params.initial_max_stream_data_bidi_local = 64 * 1024;
  params.initial_max_stream_data_bidi_remote = 64 * 1024;
  params.initial_max_stream_data_uni = 64 * 1024;
  params.initial_max_data = 256 * 1024;
  params.initial_max_streams_bidi = 0;
  params.initial_max_streams_uni = 3;
  params.max_idle_timeout = static_cast<ngtcp2_duration>(idle_timeout.count()) * NGTCP2_MILLISECONDS;
  return params;
}

ngtcp2_socklen length_of(const sockaddr_storage& ss) {
  return ss.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
}

}  // namespace

bool QuicSession::init_quic() {
  ngtcp2_cid dcid, scid;
  dcid.datalen = 18;
  fill_random(dcid.data, dcid.datalen);
  scid.datalen = 17;
  fill_random(scid.data, scid.datalen);
  const ngtcp2_callbacks cb = callbacks();
  const ngtcp2_settings settings = client_settings(req_.timeout);
  const ngtcp2_transport_params params = client_params(connector_.options.idle_timeout);
  path_.local.addr = reinterpret_cast<ngtcp2_sockaddr*>(&local_addr_);
  path_.local.addrlen = length_of(local_addr_);
  path_.remote.addr = reinterpret_cast<ngtcp2_sockaddr*>(&remote_addr_);
  path_.remote.addrlen = length_of(remote_addr_);
  const int rv = ngtcp2_conn_client_new(&conn_, &dcid, &scid, &path_, NGTCP2_PROTO_VER_V1, &cb, &settings,
                                        &params, nullptr, this);
  if (rv != 0) {
    fail(reason::kHandshake, std::string("cannot create the QUIC connection: ") + ngtcp2_strerror(rv));
    return false;
  }
  ngtcp2_conn_set_tls_native_handle(conn_, tls_);
  return true;
}

void QuicSession::start_reading() {
  uv_udp_recv_start(
      udp_.get(),
      [](uv_handle_t*, size_t, uv_buf_t* buf) {
        static char scratch[65536];
        *buf = uv_buf_init(scratch, sizeof scratch);
      },
      [](uv_udp_t* u, ssize_t n, const uv_buf_t* buf, const sockaddr*, unsigned) {
        if (auto* self = UvHandle<uv_udp_t>::owner<QuicSession>(u)) self->on_read(n, buf);
      });
}

// --- packets and timers -------------------------------------------------------

// Writes what ngtcp2 has to send. False when that ended the session.
bool QuicSession::write_packets() {
  if (!conn_ || state_ == State::kClosed) return false;
  uint8_t buf[kMaxUdpPayload];
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi{};
  for (;;) {
    const ngtcp2_ssize n = ngtcp2_conn_write_pkt(conn_, &ps.path, &pi, buf, sizeof buf, now_ns());
    if (n < 0) {
      if (state_ == State::kHandshake)
        fail(reason::kHandshake, std::string("QUIC: ") + ngtcp2_strerror(static_cast<int>(n)));
      else
        drop(reason::kClosed);
      return false;
    }
    if (n == 0) return true;
    send(buf, static_cast<size_t>(n));
  }
}

// uv_udp_try_send: synchronous, no request to outlive the session. A full
// socket buffer loses the packet; QUIC's recovery resends it.
void QuicSession::send(const uint8_t* data, size_t len) {
  uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(const_cast<uint8_t*>(data)), static_cast<unsigned>(len));
  uv_udp_try_send(udp_.get(), &b, 1, nullptr);
}

void QuicSession::arm_timer() {
  if (!conn_ || state_ == State::kClosed) return;
  const ngtcp2_tstamp expiry = ngtcp2_conn_get_expiry(conn_);
  if (expiry == UINT64_MAX) {
    expiry_.stop();
    return;
  }
  const uint64_t now = now_ns();
  const uint64_t delay_ms = expiry <= now ? 0 : (expiry - now + 999999) / 1000000;
  expiry_.start(delay_ms, [this] { on_expiry(); });
}

void QuicSession::on_expiry() {
  if (!conn_ || state_ == State::kClosed) return;
  const int rv = ngtcp2_conn_handle_expiry(conn_, now_ns());
  if (rv == NGTCP2_ERR_IDLE_CLOSE) {
    if (state_ == State::kHandshake)
      return fail(reason::kTimeout, "QUIC peer " + remote_ + " went silent during the handshake");
    return drop(reason::kIdleTimeout);
  }
  if (rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) return fail(reason::kTimeout, "QUIC handshake with " + remote_ + " timed out");
  if (rv != 0) {
    if (state_ == State::kHandshake) return fail(reason::kHandshake, std::string("QUIC: ") + ngtcp2_strerror(rv));
    return drop(reason::kClosed);
  }
  if (!write_packets()) return;
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
  if (alert)
    *message += std::string(" (TLS alert: ") +
                gnutls_alert_get_strname(static_cast<gnutls_alert_description_t>(alert)) + ")";
  // no_application_protocol (120): the peer speaks no ALPN we offered.
  return alert == 120 ? reason::kHandshake : reason::kTls;
}

void QuicSession::on_read(ssize_t n, const uv_buf_t* buf) {
  if (state_ == State::kClosed || !conn_ || n == 0) return;
  if (n < 0) return on_read_error(static_cast<int>(n));
  ngtcp2_pkt_info pi{};
  const int rv = ngtcp2_conn_read_pkt(conn_, &path_, &pi, reinterpret_cast<const uint8_t*>(buf->base),
                                      static_cast<size_t>(n), now_ns());
  if (rv != 0) {
    // Anything but these: a packet we could not use; QUIC tolerates that.
    if (rv == NGTCP2_ERR_DRAINING || rv == NGTCP2_ERR_CLOSING || rv == NGTCP2_ERR_CRYPTO ||
        rv == NGTCP2_ERR_CALLBACK_FAILURE || (state_ == State::kHandshake && ngtcp2_err_is_fatal(rv)))
      return on_packet_error(rv);
  }
  after_io();
}

void QuicSession::on_read_error(int error) {
  if (state_ == State::kHandshake)
    return fail(reason::from_uv(error), "QUIC dial to " + remote_ + " port " + std::to_string(req_.port) +
                                            " failed: " + uv_strerror(error));
  drop(error == UV_ECONNREFUSED ? reason::kClosed : reason::from_uv(error));
}

// A packet that ends the connection (or the handshake).
void QuicSession::on_packet_error(int rv) {
  const bool handshake = state_ == State::kHandshake;
  if (rv == NGTCP2_ERR_DRAINING || rv == NGTCP2_ERR_CLOSING) {
    // The peer closed (CONNECTION_CLOSE) or reset the connection.
    if (!handshake) return drop(stateless_reset_ ? reason::kReset : reason::kClosed);
    std::string message;
    std::string why = tls_failure_reason(rv, &message);
    if (!pin_mismatch_ && !untrusted_) {
      why = stateless_reset_ ? reason::kReset : reason::kHandshake;
      message = "QUIC peer " + remote_ + " closed the connection during the handshake";
    }
    return fail(why, message);
  }
  if (rv == NGTCP2_ERR_CRYPTO || rv == NGTCP2_ERR_CALLBACK_FAILURE) {
    std::string message;
    const std::string why = tls_failure_reason(rv, &message);
    if (handshake) return fail(why, message);
    return drop(reason::kClosed);
  }
  fail(reason::kHandshake, std::string("QUIC: ") + ngtcp2_strerror(rv));  // fatal during the handshake
}

// After packets came in: answer them, and finish the handshake when it is
// done. Last in its callers: the session may have ended or been handed over.
void QuicSession::after_io() {
  if (!write_packets()) return;
  if (handshake_confirmed_ && tls_) release_tls();
  if (state_ == State::kHandshake && handshake_done_) return establish();
  arm_timer();
}

// The handshake is done: the session leaves the dials for a QuicConnection,
// which the dial's callback gets.
void QuicSession::establish() {
  state_ = State::kEstablished;
  deadline_.stop();
  ngtcp2_conn_set_keep_alive_timeout(
      conn_, static_cast<ngtcp2_duration>(connector_.options.keepalive.count()) * NGTCP2_MILLISECONDS);
  arm_timer();
  auto done = std::move(done_);
  auto& dials = connector_.dials->under_way;
  auto it = dials.find(id_);
  if (it == dials.end()) return;  // cannot happen: a session leaves its dial only here or in fail()
  auto conn = std::make_unique<QuicConnection>(std::move(it->second), req_);
  dials.erase(it);
  if (done) done(std::unique_ptr<Connection>(std::move(conn)));  // last: `this` belongs to conn
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

// Never from inside an ngtcp2 callback: ngtcp2 is not on the stack here.
void QuicSession::release_quic() {
  if (conn_) ngtcp2_conn_del(conn_);
  conn_ = nullptr;
  if (tls_) gnutls_deinit(tls_);
  tls_ = nullptr;
}

std::optional<double> QuicSession::rtt_ms() const {
  if (!conn_) return std::nullopt;
  ngtcp2_conn_stat stat{};
  ngtcp2_conn_get_conn_stat(conn_, &stat);
  return static_cast<double>(stat.smoothed_rtt) / 1e6;
}

// --- endings --------------------------------------------------------------------

// The dial failed: the session leaves the dials (destroyed), then answers.
void QuicSession::fail(const std::string& why, const std::string& message) {
  if (state_ == State::kClosed || state_ == State::kEstablished) return;
  auto done = std::move(done_);
  const auto dials = connector_.dials;
  dials->under_way.erase(id_);  // destroys this
  if (done) done(Error::connect_failed(message, why));
}

// The link ended on its own: everything stops, the owner hears of it last.
void QuicSession::drop(const std::string& why) {
  if (state_ != State::kEstablished) return;
  QuicConnection* owner = std::exchange(owner_, nullptr);
  stop_io();
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
    const ngtcp2_ssize n =
        ngtcp2_conn_write_connection_close(conn_, &ps.path, &pi, buf, sizeof buf, &ccerr, now_ns());
    if (n > 0) send(buf, static_cast<size_t>(n));
  }
  stop_io();
}

// Closes the socket and timers (their callbacks never come) and frees the
// QUIC and TLS state; the session object stays until its owner lets go.
void QuicSession::stop_io() {
  state_ = State::kClosed;
  done_ = nullptr;
  lookup_.cancel();
  expiry_.close();
  deadline_.close();
  udp_.close();
  release_quic();
}

}  // namespace

Result<std::unique_ptr<QuicConnector>> QuicConnector::create(uv_loop_t* loop, QuicOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->loop = loop;
  impl->options = std::move(options);
  int rc = gnutls_certificate_allocate_credentials(&impl->credentials);
  if (rc < 0)
    return Error::internal(std::string("gnutls_certificate_allocate_credentials: ") + gnutls_strerror(rc));
  const std::string& ca_file = impl->options.ca_file;
  rc = ca_file.empty() ? gnutls_certificate_set_x509_system_trust(impl->credentials)
                       : gnutls_certificate_set_x509_trust_file(impl->credentials, ca_file.c_str(),
                                                                GNUTLS_X509_FMT_PEM);
  // Both return the number of certificates loaded.
  if (rc == 0 && !ca_file.empty()) return Error::internal("quic_ca_file: no certificate in " + ca_file);
  if (rc < 0) {
    return Error::internal(
        (ca_file.empty() ? std::string("cannot load the system trust store") : "quic_ca_file: cannot load " + ca_file) +
        ": " + gnutls_strerror(rc));
  }
  if (rc = gnutls_priority_init(&impl->priority, kPriority, nullptr); rc < 0)
    return Error::internal(std::string("cannot parse the TLS priority string: ") + gnutls_strerror(rc));
  return std::unique_ptr<QuicConnector>(new QuicConnector(std::move(impl)));
}

QuicConnector::QuicConnector(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
QuicConnector::~QuicConnector() = default;

DialHandle QuicConnector::connect(const DialRequest& request, ConnectCallback done) {
  auto& dials = *impl_->dials;
  const uint64_t id = dials.next_id++;
  auto session = std::make_unique<QuicSession>(*impl_, request, std::move(done), id);
  QuicSession* started = session.get();
  dials.under_way.emplace(id, std::move(session));
  started->start();
  return DialHandle([dials = std::weak_ptr<QuicDials>(impl_->dials), id] {
    // A no-op once the dial has answered (it left the set) or the connector went.
    if (auto d = dials.lock()) d->under_way.erase(id);
  });
}

}  // namespace connmgr
