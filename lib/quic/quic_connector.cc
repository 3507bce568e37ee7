#include "quic/quic_connector.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <sys/random.h>

#include <cstring>
#include <map>
#include <unordered_map>
#include <utility>
#include <vector>

#include "net/address_race.h"
#include "net/failure_reason.h"
#include "net/resolver.h"
#include "net/socket_address.h"
#include "quic/peer_identity.h"
#include "quic/quic_stream.h"
#include "util/uv_handle.h"

namespace connmgr {

namespace {

// TLS 1.3 only, and no middlebox compatibility mode (QUIC forbids it).
constexpr const char* kPriority =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:"
    "+AES-128-CCM:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:%DISABLE_TLS13_COMPAT_MODE";
constexpr size_t kMaxUdpPayload = 1452;
// The application error code of every RESET_STREAM and STOP_SENDING we send
// (connmgr speaks no application protocol of its own over streams).
constexpr uint64_t kStreamAbortCode = 0x1;

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
class QuicNameDial;
}  // namespace

// The dials under way, which own their sessions until the handshake ends:
// a session leaves the set (destroyed on failure, handed to its
// QuicConnection on success), and destroying the connector destroys the
// rest. A host name's dial (`named`) races one session per address, each
// in `under_way` like a dial of an IP literal. Handles reach them through a
// weak_ptr (a no-op once the connector is gone).
struct QuicDials {
  std::unordered_map<uint64_t, std::unique_ptr<QuicSession>> under_way;
  std::unordered_map<uint64_t, std::unique_ptr<QuicNameDial>> named;
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
    dials->named.clear();      // their sessions go with them, uncalled
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
// Streams: the session registers each QuicStream it opened (quic_stream.h)
// by stream id, hands ngtcp2's stream events to it, and writes the streams'
// bytes round-robin into packets. Pending open_stream() calls wait in
// `opens_` for the peer's stream credit. Flow control: the transport
// parameters give the peer no window at all (no stream, no connection
// credit); each stream we open grants its own window (StreamLimits::buffer)
// on the stream and on the connection, and credit comes back only as its
// user consumes. A window of a stream that ends is reused by the next one
// (`spare_credit_`): QUIC cannot take credit back.
class QuicSession final : public quic::QuicStreamHost {
 public:
  QuicSession(QuicConnector::Impl& connector, const DialRequest& req, ConnectCallback done, uint64_t id)
      : connector_(connector), req_(req), done_(std::move(done)), id_(id) {
    conn_ref_.get_conn = [](ngtcp2_crypto_conn_ref* ref) {
      return static_cast<QuicSession*>(ref->user_data)->conn_;
    };
    conn_ref_.user_data = this;
  }
  ~QuicSession() override {
    end_streams();
    release_quic();
  }
  QuicSession(const QuicSession&) = delete;
  QuicSession& operator=(const QuicSession&) = delete;

  void start();
  void close_by_owner();  // QuicConnection::close()
  DialHandle open_stream(std::chrono::milliseconds timeout, StreamLimits limits, StreamCallback done);
  uint64_t refused_peer_streams() const { return refused_; }

  // QuicStreamHost
  void send_soon() override;
  void return_credit(int64_t id, uint64_t n) override;
  void release(quic::QuicStream* stream) override;
  std::optional<double> rtt_ms() const;
  bool active() const { return state_ == State::kEstablished; }
  const std::string& local() const { return local_; }
  const std::string& remote() const { return remote_; }

 private:
  enum class State { kOpening, kHandshake, kEstablished, kClosed };

  // One open_stream() until it is answered: waiting for credit (no stream
  // yet) or answered on the next turn. Its timer is the timeout, then the
  // answer; the opens go with the session (their callbacks never run).
  struct PendingOpen {
    StreamLimits limits;
    StreamCallback done;
    Timer timer;
    std::unique_ptr<quic::QuicStream> stream;  // opened, to hand over
    std::optional<Error> error;                // or the refusal
  };
  struct PendingOpens {
    std::map<uint64_t, std::unique_ptr<PendingOpen>> waiting;  // in call order
    uint64_t next_key = 1;
  };

  // Dial steps, one per event.
  void start_deadline();
  void on_deadline();
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
  // Stream steps.
  bool try_open(PendingOpen* open);
  void open_waiting();
  void answer_soon(uint64_t key, PendingOpen* open);
  void answer(uint64_t key);
  void refuse_peer_streams();
  bool write_stream_packets(uint8_t* buf, size_t len, ngtcp2_path_storage* ps, ngtcp2_tstamp ts);
  quic::QuicStream* stream(int64_t id) const;
  void on_stream_close(int64_t id, bool reset);
  void end_streams();
  std::string tls_failure_reason(int rv, std::string* message);
  // Endings.
  void fail(const std::string& reason, const std::string& message);
  void drop(const std::string& reason);
  void stop_io();

  static int verify_cb(gnutls_session_t s);
  static ngtcp2_callbacks callbacks();
  static void add_stream_callbacks(ngtcp2_callbacks* cb);

  QuicConnector::Impl& connector_;
  DialRequest req_;
  ConnectCallback done_;
  uint64_t id_;  // in connector_.dials while dialling
  QuicConnection* owner_ = nullptr;
  State state_ = State::kOpening;

  UvHandle<uv_udp_t> udp_;
  Timer expiry_;
  Timer deadline_;

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
  int send_error_ = 0;  // the first failed sendmsg's libuv error (send())

  std::map<int64_t, quic::QuicStream*> streams_;  // registered: open in ngtcp2
  // Bytes of released streams that ngtcp2 may still read (retransmission)
  // until it closes them: freed on stream_close or with the connection.
  std::unordered_map<int64_t, quic::SendQueue> orphans_;
  std::shared_ptr<PendingOpens> opens_;  // made by the first open_stream()
  std::vector<int64_t> to_refuse_;       // peer-opened streams, reset after the read
  uint64_t refused_ = 0;
  uint64_t spare_credit_ = 0;  // connection credit left by ended streams
  bool streams_credit_ = false;  // extend_max_local_streams_bidi came
  int64_t last_sender_ = -1;     // round-robin position

  friend class QuicConnection;
};

class QuicConnection final : public Connection {
 public:
  QuicConnection(std::unique_ptr<QuicSession> session, const DialRequest& req)
      : session_(std::move(session)), node_id_(req.node_id), endpoint_id_(req.endpoint_id),
        protocol_(req.protocol), port_(req.port) {
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
  // The session stays (closed, small) until this connection goes, so that
  // streams and pending opens end through it ("link_lost").
  void close() override {
    if (closed_) return;
    closed_ = true;
    session_->owner_ = nullptr;
    if (!dropped_) session_->close_by_owner();
  }

  DialHandle open_stream(std::chrono::milliseconds timeout, StreamLimits limits, StreamCallback done) override {
    return session_->open_stream(timeout, limits, std::move(done));
  }
  uint64_t refused_peer_streams() const override { return session_->refused_peer_streams(); }

  // From the session: the link ended on its own. The session stays (closed)
  // until this connection goes: it is still on the stack here.
  void on_drop(const std::string& reason) {
    dropped_ = true;
    notify_drop(reason);  // last: the owner may destroy this
  }

 private:
  bool live() const { return !closed_ && !dropped_; }

  std::unique_ptr<QuicSession> session_;  // for the connection's whole life
  bool closed_ = false;
  bool dropped_ = false;
  std::string node_id_;
  int64_t endpoint_id_;
  std::string protocol_;
  int port_;
  std::string empty_;
};

// --- dialling -------------------------------------------------------------------

// A session dials an IP literal (a host name's dial gives each of its
// sessions one of the name's addresses).
void QuicSession::start() {
  expiry_.init(connector_.loop);
  deadline_.init(connector_.loop);
  start_deadline();
  expected_name_ = req_.server_name.value_or(req_.address);
  // Opened on the next turn so that `done` never runs inside connect().
  if (parse_ip_literal(req_.address, req_.port, &remote_addr_)) {
    expiry_.start(0, [this] { open_socket(reinterpret_cast<sockaddr*>(&remote_addr_)); });
  } else {
    expiry_.start(0, [this] { fail(reason::kDns, "QUIC: " + req_.address + " is not an IP address"); });
  }
}

void QuicSession::start_deadline() {
  uv_update_time(connector_.loop);  // the deadline counts from now (see TcpDial)
  const auto timeout = static_cast<uint64_t>(std::max<int64_t>(1, req_.timeout.count()));
  deadline_.start(timeout, [this] { on_deadline(); });
}

void QuicSession::on_deadline() {
  if (state_ != State::kOpening && state_ != State::kHandshake) return;
  fail(reason::kTimeout, "QUIC handshake with " + req_.address + " port " + std::to_string(req_.port) +
                             " timed out after " + std::to_string(req_.timeout.count()) + " ms");
}

void QuicSession::open_socket(const sockaddr* addr) {
  if (state_ != State::kOpening) return;
  state_ = State::kHandshake;
  remote_ = format_host(addr);
  if (req_.on_address) req_.on_address(addr->sa_family);
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
    fail(reason::from_uv(rc), "cannot open a UDP socket to " + remote_ + ": " + reason::describe_uv(rc));
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
  add_stream_callbacks(&cb);
  return cb;
}

// Streams: the stream objects only take note; nothing they do calls ngtcp2
// or a user callback from here.
void QuicSession::add_stream_callbacks(ngtcp2_callbacks* callbacks) {
  ngtcp2_callbacks& cb = *callbacks;
  cb.extend_max_local_streams_bidi = [](ngtcp2_conn*, uint64_t, void* self) {
    static_cast<QuicSession*>(self)->streams_credit_ = true;
    return 0;
  };
  cb.stream_open = [](ngtcp2_conn* conn, int64_t id, void* self) {
    // The transport parameters allow the peer no stream: one that opens
    // anyway is refused after the read (ngtcp2 is not to be called here).
    if (!ngtcp2_conn_is_local_stream(conn, id)) {
      static_cast<QuicSession*>(self)->to_refuse_.push_back(id);
      static_cast<QuicSession*>(self)->refused_++;
    }
    return 0;
  };
  cb.recv_stream_data = [](ngtcp2_conn* conn, uint32_t flags, int64_t id, uint64_t, const uint8_t* data,
                           size_t n, void* self, void*) {
    if (auto* s = static_cast<QuicSession*>(self)->stream(id))
      s->on_data(data, n, flags & NGTCP2_STREAM_DATA_FLAG_FIN);
    else
      ngtcp2_conn_extend_max_offset(conn, n);  // nobody takes them: the connection's credit comes back
    return 0;
  };
  cb.acked_stream_data_offset = [](ngtcp2_conn*, int64_t id, uint64_t offset, uint64_t n, void* self, void*) {
    auto* session = static_cast<QuicSession*>(self);
    if (auto* s = session->stream(id)) {
      s->on_acked(offset + n);
    } else if (auto it = session->orphans_.find(id); it != session->orphans_.end()) {
      it->second.acked_to(offset + n);
    }
    return 0;
  };
  cb.stream_reset = [](ngtcp2_conn*, int64_t id, uint64_t, uint64_t, void* self, void*) {
    if (auto* s = static_cast<QuicSession*>(self)->stream(id)) s->on_peer_reset();
    return 0;
  };
  cb.stream_stop_sending = [](ngtcp2_conn*, int64_t id, uint64_t, void* self, void*) {
    // ngtcp2 answers STOP_SENDING with RESET_STREAM on its own.
    if (auto* s = static_cast<QuicSession*>(self)->stream(id)) s->on_peer_reset();
    return 0;
  };
  cb.stream_close = [](ngtcp2_conn*, uint32_t flags, int64_t id, uint64_t, void* self, void*) {
    static_cast<QuicSession*>(self)->on_stream_close(id, flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET);
    return 0;
  };
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
  // No window auto-tuning: a stream's receive window is exactly the bytes
  // its user may leave unconsumed (QuicStream), never more.
  settings.max_window = 0;
  settings.max_stream_window = 0;
  return settings;
}

ngtcp2_transport_params client_params(std::chrono::milliseconds idle_timeout) {
  ngtcp2_transport_params params;
  ngtcp2_transport_params_default(&params);
  // The peer may open no bidirectional stream toward us (streams are ours
  // to open), and gets no credit up front: each stream we open grants its
  // own window, on the stream and on the connection (QuicSession::try_open).
  // Three unidirectional streams stay allowed, with no credit: an HTTP/3
  // server (gtlsserver) refuses a client that allows fewer than its three
  // control streams. Any stream it opens is refused (refuse_peer_streams).
  params.initial_max_stream_data_bidi_local = 0;
  params.initial_max_stream_data_bidi_remote = 0;
  params.initial_max_stream_data_uni = 0;
  params.initial_max_data = 0;
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

// Writes what ngtcp2 has to send, the streams' bytes included. False when
// that ended the session.
bool QuicSession::write_packets() {
  if (!conn_ || state_ == State::kClosed) return false;
  uint8_t buf[kMaxUdpPayload];
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  const ngtcp2_tstamp ts = now_ns();
  const bool written = write_stream_packets(buf, sizeof buf, &ps, ts);
  if (written && send_error_ != 0 && state_ == State::kHandshake) {
    // The kernel refused our packets (no route any more, the interface
    // down, the source address gone, a port-unreachable heard earlier):
    // the handshake cannot go on, and retransmitting until the deadline
    // would only hide why.
    const int error = send_error_;
    fail(reason::from_uv(error), "QUIC dial to " + remote_ + " port " + std::to_string(req_.port) +
                                     " failed: cannot send: " + reason::describe_uv(error));
    return false;
  }
  if (written) return true;
  if (state_ == State::kHandshake)
    fail(reason::kHandshake, "QUIC: cannot write a packet");
  else
    drop(reason::kClosed);
  return false;
}

// The write loop of ngtcp2's examples: streams with something to send take
// turns (round robin from the one after the last served), several STREAM
// frames share a packet (FLAG_MORE), and a burst stops at ngtcp2's send
// quantum, after which pacing (the expiry timer) resumes it. False on a
// connection error.
bool QuicSession::write_stream_packets(uint8_t* buf, size_t len, ngtcp2_path_storage* ps, ngtcp2_tstamp ts) {
  std::vector<quic::QuicStream*> senders;
  if (state_ == State::kEstablished) {
    for (auto it = streams_.upper_bound(last_sender_); it != streams_.end(); ++it)
      if (it->second->wants_to_send()) senders.push_back(it->second);
    for (auto it = streams_.begin(); it != streams_.end() && it->first <= last_sender_; ++it)
      if (it->second->wants_to_send()) senders.push_back(it->second);
  }
  const size_t max_packets = std::max<size_t>(1, ngtcp2_conn_get_send_quantum(conn_) / len);
  size_t packets = 0, next = 0;
  ngtcp2_pkt_info pi{};
  for (;;) {
    quic::QuicStream* s = next < senders.size() ? senders[next] : nullptr;
    ngtcp2_vec vecs[8];
    size_t nvecs = 0;
    uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_NONE;
    int64_t id = -1;
    if (s) {
      id = s->transport_id();
      nvecs = s->send_queue().unsent(vecs, 8);
      flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
      // The FIN rides with the last bytes when they all fit in the vectors.
      uint64_t offered = 0;
      for (size_t i = 0; i < nvecs; ++i) offered += vecs[i].len;
      if (s->fin_pending() && offered == s->send_queue().unsent_bytes()) flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
    }
    ngtcp2_ssize accepted = -1;
    const ngtcp2_ssize n =
        ngtcp2_conn_writev_stream(conn_, &ps->path, &pi, buf, len, &accepted, flags, id, vecs, nvecs, ts);
    if (s && accepted >= 0) {
      const uint64_t offered_all = s->send_queue().unsent_bytes();
      const bool fin = (flags & NGTCP2_WRITE_STREAM_FLAG_FIN) && static_cast<uint64_t>(accepted) == offered_all;
      s->on_sent(static_cast<uint64_t>(accepted), fin);
      last_sender_ = id;
      if (!s->wants_to_send()) ++next;
    }
    if (n == NGTCP2_ERR_WRITE_MORE) continue;  // room left in the packet for another stream
    if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED || n == NGTCP2_ERR_STREAM_SHUT_WR || n == NGTCP2_ERR_STREAM_NOT_FOUND) {
      ++next;  // this stream waits (flow control) or cannot send; the others go on
      continue;
    }
    if (n < 0) return false;
    if (n == 0) break;  // nothing more, or congestion-limited
    send(buf, static_cast<size_t>(n));
    if (++packets == max_packets) break;
  }
  // Pacing only for a link's bytes: the handshake's last flight goes at once
  // (the dial answers right after it).
  if (state_ == State::kEstablished) ngtcp2_conn_update_pkt_tx_time(conn_, ts);
  return true;
}

// uv_udp_try_send: synchronous, no request to outlive the session. A full
// socket buffer loses the packet; QUIC's recovery resends it. Any other
// error is noted for write_packets(): it ends a handshake; a link's packets
// lost that way are left to QUIC's recovery and idle timeout (a route may
// come back).
void QuicSession::send(const uint8_t* data, size_t len) {
  uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(const_cast<uint8_t*>(data)), static_cast<unsigned>(len));
  const int rc = uv_udp_try_send(udp_.get(), &b, 1, nullptr);
  if (rc < 0 && rc != UV_EAGAIN && rc != UV_ENOBUFS && rc != UV_EMSGSIZE && send_error_ == 0) send_error_ = rc;
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
                                            " failed: " + reason::describe_uv(error));
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
  if (state_ == State::kEstablished) {
    refuse_peer_streams();
    if (std::exchange(streams_credit_, false)) open_waiting();
  }
  if (!write_packets()) return;
  if (handshake_confirmed_ && tls_) {
    release_tls();
    // Opens waited for confirmation (try_open): they may go now.
    if (opens_ && !opens_->waiting.empty()) {
      open_waiting();
      if (!write_packets()) return;
    }
  }
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
  expiry_.close();
  deadline_.close();
  udp_.close();
  end_streams();
  release_quic();
  orphans_.clear();  // ngtcp2, which read them, is gone
}

// --- streams --------------------------------------------------------------------

DialHandle QuicSession::open_stream(std::chrono::milliseconds timeout, StreamLimits limits, StreamCallback done) {
  if (!opens_) opens_ = std::make_shared<PendingOpens>();
  const uint64_t key = opens_->next_key++;
  auto owned = std::make_unique<PendingOpen>();
  PendingOpen* open = owned.get();
  open->limits = limits;
  open->done = std::move(done);
  open->timer.init(connector_.loop);
  opens_->waiting.emplace(key, std::move(owned));
  // Opens wait their turn: one still waiting for credit goes first.
  bool first = true;
  for (auto& [k, other] : opens_->waiting)
    if (k != key && !other->stream && !other->error) first = false;
  if (state_ != State::kEstablished) {
    open->error = Error::stream_refused("the QUIC link to " + remote_ + " has ended", "link_lost");
  } else if (!first || !try_open(open)) {
    uv_update_time(connector_.loop);  // the timeout counts from now
    const auto ms = static_cast<uint64_t>(std::max<int64_t>(1, timeout.count()));
    open->timer.start(ms, [this, key, open, ms] {
      open->error = Error::stream_refused("the QUIC peer " + remote_ + " allowed no new stream within " +
                                              std::to_string(ms) + " ms (its stream limit is reached)",
                                          "stream_limit");
      answer(key);
    });
    return DialHandle([opens = std::weak_ptr<PendingOpens>(opens_), key] {
      if (auto o = opens.lock()) o->waiting.erase(key);
    });
  }
  answer_soon(key, open);
  return DialHandle([opens = std::weak_ptr<PendingOpens>(opens_), key] {
    if (auto o = opens.lock()) o->waiting.erase(key);
  });
}

// Opens the QUIC stream of `open` if the peer allows one more, granting it
// its receive window. False while the peer's stream limit is reached.
bool QuicSession::try_open(PendingOpen* open) {
  // Not before the handshake is confirmed: ngtcp2 0.12.1 may then leave a
  // new stream's window (MAX_STREAM_DATA) out of the packets that carry
  // its first bytes, and once those are acknowledged it is never sent: the
  // peer could never answer (seen with the test peer).
  if (!handshake_confirmed_) return false;
  int64_t id = -1;
  const int rv = ngtcp2_conn_open_bidi_stream(conn_, &id, nullptr);
  if (rv == NGTCP2_ERR_STREAM_ID_BLOCKED) return false;
  if (rv != 0) {
    open->error = Error::internal(std::string("cannot open a QUIC stream: ") + ngtcp2_strerror(rv));
    return true;
  }
  const uint64_t window = std::max<size_t>(open->limits.buffer, 1);
  ngtcp2_conn_extend_max_stream_offset(conn_, id, window);
  const uint64_t reused = std::min(spare_credit_, window);
  spare_credit_ -= reused;
  ngtcp2_conn_extend_max_offset(conn_, window - reused);
  open->stream = std::make_unique<quic::QuicStream>(connector_.loop, this, id, open->limits);
  streams_[id] = open->stream.get();
  send_soon();  // the window (MAX_STREAM_DATA) tells the peer of the stream
  return true;
}

// The peer allowed more streams: the waiting opens take them in order.
void QuicSession::open_waiting() {
  if (!opens_) return;
  for (auto& [key, open] : opens_->waiting) {
    if (open->stream || open->error) continue;  // answered already
    if (!try_open(open.get())) return;
    answer_soon(key, open.get());
  }
}

void QuicSession::answer_soon(uint64_t key, PendingOpen* open) {
  open->timer.start(0, [this, key] { answer(key); });
}

// The open leaves the set, then its callback runs: last, since it may
// destroy the connection.
void QuicSession::answer(uint64_t key) {
  auto it = opens_->waiting.find(key);
  if (it == opens_->waiting.end()) return;
  std::unique_ptr<PendingOpen> open = std::move(it->second);
  opens_->waiting.erase(it);
  auto done = std::move(open->done);
  if (open->stream)
    done(std::unique_ptr<Stream>(std::move(open->stream)));
  else
    done(open->error ? *open->error : Error::internal("stream open answered without a result"));
}

// Streams the peer opened although the transport parameters allow none
// (a peer that ignores them): RESET_STREAM + STOP_SENDING.
void QuicSession::refuse_peer_streams() {
  for (const int64_t id : to_refuse_) ngtcp2_conn_shutdown_stream(conn_, id, kStreamAbortCode);
  to_refuse_.clear();
}

quic::QuicStream* QuicSession::stream(int64_t id) const {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second;
}

void QuicSession::send_soon() {
  if (state_ == State::kEstablished && conn_) expiry_.start(0, [this] { on_expiry(); });
}

void QuicSession::return_credit(int64_t id, uint64_t n) {
  if (!conn_ || !stream(id)) return;
  ngtcp2_conn_extend_max_stream_offset(conn_, id, n);
  ngtcp2_conn_extend_max_offset(conn_, n);
}

// The stream's user is done with it while ngtcp2 still has it open.
void QuicSession::release(quic::QuicStream* s) {
  const int64_t id = s->transport_id();
  auto it = streams_.find(id);
  if (it == streams_.end() || it->second != s) return;
  streams_.erase(it);
  if (!conn_) return;
  // The connection credit of the bytes it held comes back; its window
  // serves the next stream.
  ngtcp2_conn_extend_max_offset(conn_, s->outstanding());
  spare_credit_ += s->limit();
  ngtcp2_conn_shutdown_stream(conn_, id, kStreamAbortCode);
  if (!s->send_queue().empty()) orphans_.emplace(id, s->take_send_queue());
  send_soon();
}

// From ngtcp2's stream_close: the stream is gone from ngtcp2.
void QuicSession::on_stream_close(int64_t id, bool reset) {
  orphans_.erase(id);
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  quic::QuicStream* s = it->second;
  streams_.erase(it);
  ngtcp2_conn_extend_max_offset(conn_, s->outstanding());  // a counter: safe inside the callback
  spare_credit_ += s->limit();
  s->on_closed(reset);
}

// The link ends: waiting opens are refused ("link_lost", next turn), open
// streams end with "link_lost".
void QuicSession::end_streams() {
  if (opens_) {
    for (auto& [key, open] : opens_->waiting) {
      open->stream.reset();  // releases it while ngtcp2 is still here
      open->error = Error::stream_refused("the QUIC link to " + remote_ + " ended", "link_lost");
      if (open->timer.initialized() && state_ == State::kClosed) answer_soon(key, open.get());
    }
  }
  for (auto& [id, s] : std::exchange(streams_, {})) s->on_link_lost();
}

// --- dials ---------------------------------------------------------------------

// A dial of one IP literal: one session, in the connector's dials until it
// answers.
DialHandle start_session(QuicConnector::Impl& connector, const DialRequest& request, ConnectCallback done) {
  auto& dials = *connector.dials;
  const uint64_t id = dials.next_id++;
  auto session = std::make_unique<QuicSession>(connector, request, std::move(done), id);
  QuicSession* started = session.get();
  dials.under_way.emplace(id, std::move(session));
  started->start();
  return DialHandle([dials = std::weak_ptr<QuicDials>(connector.dials), id] {
    // A no-op once the dial has answered (it left the set) or the connector went.
    if (auto d = dials.lock()) d->under_way.erase(id);
  });
}

// A dial of a host name: resolve it, then race its addresses
// (net/address_race.h), one session each, dialling the IP with the name
// for SNI and verification, all within the request's one timeout. Owned by
// the connector's dials (`named`); leaves them when it answers, and may be
// destroyed at any time before (its race cancels its sessions).
class QuicNameDial {
 public:
  using Race = AddressRace<std::unique_ptr<Connection>>;

  QuicNameDial(QuicConnector::Impl& connector, const DialRequest& req, ConnectCallback done, uint64_t id)
      : connector_(connector), req_(req), done_(std::move(done)), id_(id) {}

  void start() {
    const auto limit = static_cast<uint64_t>(std::max<int64_t>(1, req_.timeout.count()));
    uv_update_time(connector_.loop);  // the deadline counts from now (see TcpDial)
    deadline_at_ = uv_now(connector_.loop) + limit;
    deadline_.init(connector_.loop);
    deadline_.start(limit, [this] { on_deadline(); });
    // Never answers inside start(), so neither does connect().
    resolution_.start(connector_.loop, req_.address, req_.port, std::chrono::milliseconds(0),
                      [this](Result<std::vector<sockaddr_storage>> r) { on_resolved(std::move(r)); });
  }

 private:
  void on_resolved(Result<std::vector<sockaddr_storage>> addresses) {
    if (!addresses.ok()) return answer(addresses.error());
    race_.start(
        connector_.loop, addresses.value(), req_.attempt_delay, deadline_at_, req_.on_address,
        [this](const sockaddr_storage& a, std::chrono::milliseconds left, Race::AttemptDone done) {
          return dial_address(a, left, std::move(done));
        },
        [this](Result<std::unique_ptr<Connection>> r) { on_raced(std::move(r)); });
  }

  DialHandle dial_address(const sockaddr_storage& address, std::chrono::milliseconds left, Race::AttemptDone done) {
    DialRequest one = req_;
    one.address = format_host(reinterpret_cast<const sockaddr*>(&address));
    one.server_name = req_.server_name.value_or(req_.address);  // the name, not the IP
    one.timeout = left;
    one.on_address = nullptr;  // the race tells the caller
    return start_session(connector_, one, std::move(done));
  }

  void on_raced(Result<std::unique_ptr<Connection>> result) {
    if (result.ok()) return answer(std::move(result));
    const Error& e = result.error();
    answer(Error::connect_failed(e.message() + tried_list(), e.reason()));
  }

  void on_deadline() {
    answer(Error::connect_failed("QUIC dial to " + req_.address + " port " + std::to_string(req_.port) +
                                     " timed out after " + std::to_string(req_.timeout.count()) + " ms" +
                                     (race_.tried().empty() ? " while resolving the name" : tried_list()),
                                 reason::kTimeout));
  }

  // " (tried ::1, 127.0.0.1)".
  std::string tried_list() const {
    std::string out;
    for (const auto& ip : race_.tried()) out += (out.empty() ? " (" + req_.address + ": tried " : ", ") + ip;
    return out.empty() ? out : out + ")";
  }

  // Leaves the dials (destroyed: the deadline, the resolution and the
  // sessions still racing close), then answers.
  void answer(Result<std::unique_ptr<Connection>> result) {
    auto done = std::move(done_);
    const auto dials = connector_.dials;
    dials->named.erase(id_);  // destroys this
    if (done) done(std::move(result));
  }

  QuicConnector::Impl& connector_;
  DialRequest req_;
  ConnectCallback done_;
  uint64_t id_;
  Timer deadline_;
  uint64_t deadline_at_ = 0;  // loop time
  Resolution resolution_;
  Race race_;
};

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
  sockaddr_storage literal{};
  if (parse_ip_literal(request.address, request.port, &literal)) return start_session(*impl_, request, std::move(done));
  auto& dials = *impl_->dials;
  const uint64_t id = dials.next_id++;
  auto dial = std::make_unique<QuicNameDial>(*impl_, request, std::move(done), id);
  QuicNameDial* started = dial.get();
  dials.named.emplace(id, std::move(dial));
  started->start();
  return DialHandle([dials = std::weak_ptr<QuicDials>(impl_->dials), id] {
    if (auto d = dials.lock()) d->named.erase(id);
  });
}

}  // namespace connmgr
