// quic_plain_client: the reference that connmgr's QUIC connect is measured
// against. A plain ngtcp2 0.12.1 + GnuTLS client on libuv, built on none of
// connmgr's libraries, doing per cycle what QuicConnector does per dial: a
// fresh connected UDP socket, a full TLS 1.3 handshake with ALPN and SNI (SNI
// only for a host name: RFC 6066 forbids IP literals in it, and QuicConnector
// follows that), the server's key checked against a pin (base64 SHA-256 of
// its SubjectPublicKeyInfo), "connected" at ngtcp2's handshake_completed
// (QuicConnector's State::kEstablished), then CONNECTION_CLOSE and the socket
// closed. Not a test; run by hand:
//   quic_plain_client HOST PORT PIN ALPN CYCLES IN_FLIGHT
// Prints one line: "cycles=N seconds=S rate=R failures=F", where N counts all
// cycles (failed ones too) and R only the successful ones per second, so that
// a failure can never make the rate look better. Reasons go to stderr.
//
//   quic_plain_client HOST PORT PIN ALPN download BYTES
// The reference of the QUIC stream bulk row: one connection, one
// bidirectional stream opened and ended at once (FIN, no data), whose BYTES
// from the peer (connmgr-test-peer --quic-streams send:BYTES) are read to the
// peer's FIN with the flow-control window connmgr gives a stream (256 KiB,
// stream and connection, credit given back as bytes arrive). Prints
// "bytes=N seconds=S mib_s=R failures=F", timed from the stream's opening.
//
// HOST is resolved once at start (QuicConnector does no resolution for an IP
// literal, which is what the benchmark dials).
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netdb.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <sys/random.h>
#include <uv.h>

#include <arpa/inet.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

// The same priority string as QuicConnector: TLS 1.3 only, no middlebox
// compatibility mode (QUIC forbids it), the same groups and ciphers, so that
// both sides do the same elliptic-curve work.
constexpr const char* kPriority =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:"
    "+AES-128-CCM:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:%DISABLE_TLS13_COMPAT_MODE";
constexpr size_t kMaxUdpPayload = 1452;
constexpr uint64_t kHandshakeTimeoutMs = 5000;  // the bench's DialRequest::timeout

void fill_random(uint8_t* dest, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = getrandom(dest + got, len - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
}

// base64(SHA-256(SPKI DER)) of the leaf certificate of a session; empty when
// it cannot be read.
std::string pin_of_peer(gnutls_session_t s) {
  unsigned n = 0;
  const gnutls_datum_t* certs = gnutls_certificate_get_peers(s, &n);
  if (!certs || n == 0) return {};
  std::string pin;
  gnutls_x509_crt_t crt = nullptr;
  gnutls_pubkey_t key = nullptr;
  gnutls_datum_t spki{nullptr, 0};
  if (gnutls_x509_crt_init(&crt) == 0 && gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) == 0 &&
      gnutls_pubkey_init(&key) == 0 && gnutls_pubkey_import_x509(key, crt, 0) == 0 &&
      gnutls_pubkey_export2(key, GNUTLS_X509_FMT_DER, &spki) == 0) {
    unsigned char digest[32];
    gnutls_datum_t b64{nullptr, 0};
    gnutls_datum_t raw{digest, sizeof digest};
    if (gnutls_hash_fast(GNUTLS_DIG_SHA256, spki.data, spki.size, digest) == 0 &&
        gnutls_base64_encode2(&raw, &b64) == 0) {
      pin.assign(reinterpret_cast<char*>(b64.data), b64.size);
      gnutls_free(b64.data);
    }
  }
  gnutls_free(spki.data);
  if (key) gnutls_pubkey_deinit(key);
  if (crt) gnutls_x509_crt_deinit(crt);
  return pin;
}

struct Client {
  uv_loop_t* loop = nullptr;
  sockaddr_storage remote{};
  std::string host;  // SNI, when not an IP literal
  bool sni = false;
  std::string pin;
  std::string alpn;
  // One credentials object for every cycle, as QuicConnector holds one for
  // all its dials; the pin replaces chain verification, so no trust store.
  gnutls_certificate_credentials_t cred = nullptr;
  long cycles = 0;
  long started = 0;
  long finished = 0;
  long failures = 0;
  uint64_t bulk = 0;      // download mode: bytes expected; 0: cycles
  uint64_t received = 0;  // download mode: bytes read
  uint64_t t0 = 0;
  uint64_t t1 = 0;

  void start_next();
  void on_finished(bool ok);
};

// One connection attempt: it frees itself once its two handles have closed.
class Attempt {
 public:
  explicit Attempt(Client& c) : client_(c) {
    ref_.get_conn = [](ngtcp2_crypto_conn_ref* r) { return static_cast<Attempt*>(r->user_data)->conn_; };
    ref_.user_data = this;
  }
  void start();

 private:
  bool init_tls();
  bool init_quic();
  void on_read(ssize_t n, const uv_buf_t* buf);
  void on_expiry();
  bool write_packets();
  void arm_timer();
  void finish(bool ok, const char* why);
  static int verify_cb(gnutls_session_t s);

  Client& client_;
  uv_udp_t udp_{};
  uv_timer_t timer_{};
  int handles_ = 0;
  bool done_ = false;
  bool handshake_done_ = false;
  int64_t stream_ = -1;  // download mode
  bool fin_sent_ = false;
  bool fin_received_ = false;
  ngtcp2_conn* conn_ = nullptr;
  gnutls_session_t tls_ = nullptr;
  ngtcp2_crypto_conn_ref ref_{};
  sockaddr_storage local_{};
  ngtcp2_path path_{};
};

socklen_t addr_len(const sockaddr_storage& ss) {
  return ss.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
}

void Attempt::start() {
  uv_timer_init(client_.loop, &timer_);
  uv_udp_init(client_.loop, &udp_);
  timer_.data = udp_.data = this;
  handles_ = 2;
  sockaddr_storage any{};
  any.ss_family = client_.remote.ss_family;  // the wildcard address, port 0
  int rc = uv_udp_bind(&udp_, reinterpret_cast<sockaddr*>(&any), 0);
  // Connected, as QuicConnector's: ICMP port-unreachable then reads as ECONNREFUSED.
  if (rc == 0) rc = uv_udp_connect(&udp_, reinterpret_cast<sockaddr*>(&client_.remote));
  int len = sizeof local_;
  if (rc == 0) rc = uv_udp_getsockname(&udp_, reinterpret_cast<sockaddr*>(&local_), &len);
  if (rc != 0) return finish(false, uv_strerror(rc));
  if (!init_tls() || !init_quic()) return;
  uv_udp_recv_start(&udp_, [](uv_handle_t*, size_t, uv_buf_t* buf) {
    // One loop thread, and each datagram is consumed before the next read.
    static char scratch[65536];
    *buf = uv_buf_init(scratch, sizeof scratch);
  }, [](uv_udp_t* u, ssize_t n, const uv_buf_t* buf, const sockaddr*, unsigned) {
    static_cast<Attempt*>(u->data)->on_read(n, buf);
  });
  if (write_packets()) arm_timer();
}

int Attempt::verify_cb(gnutls_session_t s) {
  auto* self = static_cast<Attempt*>(static_cast<ngtcp2_crypto_conn_ref*>(gnutls_session_get_ptr(s))->user_data);
  return pin_of_peer(s) == self->client_.pin ? 0 : -1;  // -1 aborts the handshake
}

bool Attempt::init_tls() {
  int rc = gnutls_init(&tls_, GNUTLS_CLIENT | GNUTLS_ENABLE_EARLY_DATA | GNUTLS_NO_END_OF_EARLY_DATA);
  if (rc == 0) rc = gnutls_priority_set_direct(tls_, kPriority, nullptr);
  if (rc == 0 && ngtcp2_crypto_gnutls_configure_client_session(tls_) != 0) rc = GNUTLS_E_INTERNAL_ERROR;
  if (rc == 0) rc = gnutls_credentials_set(tls_, GNUTLS_CRD_CERTIFICATE, client_.cred);
  if (rc != 0) {
    finish(false, gnutls_strerror(rc));
    return false;
  }
  // ngtcp2's GnuTLS helpers expect a conn_ref here, not the connection.
  gnutls_session_set_ptr(tls_, &ref_);
  gnutls_session_set_verify_function(tls_, &Attempt::verify_cb);
  if (client_.sni) gnutls_server_name_set(tls_, GNUTLS_NAME_DNS, client_.host.data(), client_.host.size());
  gnutls_datum_t proto{reinterpret_cast<unsigned char*>(client_.alpn.data()),
                       static_cast<unsigned>(client_.alpn.size())};
  gnutls_alpn_set_protocols(tls_, &proto, 1, GNUTLS_ALPN_MANDATORY);
  return true;
}

bool Attempt::init_quic() {
  ngtcp2_callbacks cb{};
  cb.client_initial = ngtcp2_crypto_client_initial_cb;
  cb.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
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
    static_cast<Attempt*>(self)->handshake_done_ = true;
    return 0;
  };
  // Download mode: bytes are taken at once and their credit given back.
  cb.recv_stream_data = [](ngtcp2_conn* conn, uint32_t flags, int64_t id, uint64_t, const uint8_t*, size_t n,
                           void* self, void*) {
    auto* a = static_cast<Attempt*>(self);
    a->client_.received += n;
    ngtcp2_conn_extend_max_stream_offset(conn, id, n);
    ngtcp2_conn_extend_max_offset(conn, n);
    if (flags & NGTCP2_STREAM_DATA_FLAG_FIN) a->fin_received_ = true;
    return 0;
  };

  // Connection ID lengths, initial RTT and transport parameters as
  // QuicConnector sets them, so both send the same packets.
  ngtcp2_cid dcid, scid;
  dcid.datalen = 18;
  fill_random(dcid.data, dcid.datalen);
  scid.datalen = 17;
  fill_random(scid.data, scid.datalen);
  ngtcp2_settings settings;
  ngtcp2_settings_default(&settings);
  settings.initial_ts = uv_hrtime();
  settings.initial_rtt = 100 * NGTCP2_MILLISECONDS;
  // Stands in for QuicConnector's dial deadline timer.
  settings.handshake_timeout = kHandshakeTimeoutMs * NGTCP2_MILLISECONDS;
  ngtcp2_transport_params params;
  ngtcp2_transport_params_default(&params);
  params.initial_max_stream_data_bidi_local = client_.bulk ? 256 * 1024 : 64 * 1024;
  params.initial_max_stream_data_bidi_remote = 64 * 1024;
  params.initial_max_stream_data_uni = 64 * 1024;
  params.initial_max_data = 256 * 1024;  // download mode: connmgr's one-stream window
  params.initial_max_streams_uni = 3;
  params.max_idle_timeout = 30 * NGTCP2_SECONDS;

  path_.local.addr = reinterpret_cast<ngtcp2_sockaddr*>(&local_);
  path_.local.addrlen = addr_len(local_);
  path_.remote.addr = reinterpret_cast<ngtcp2_sockaddr*>(&client_.remote);
  path_.remote.addrlen = addr_len(client_.remote);
  int rv = ngtcp2_conn_client_new(&conn_, &dcid, &scid, &path_, NGTCP2_PROTO_VER_V1, &cb, &settings, &params,
                                  nullptr, this);
  if (rv != 0) {
    finish(false, ngtcp2_strerror(rv));
    return false;
  }
  ngtcp2_conn_set_tls_native_handle(conn_, tls_);
  return true;
}

// Sends until ngtcp2 has nothing more; false once the attempt has failed.
bool Attempt::write_packets() {
  uint8_t buf[kMaxUdpPayload];
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi{};
  for (;;) {
    ngtcp2_ssize n;
    if (stream_ >= 0 && !fin_sent_) {  // download mode: the stream's FIN, no data
      ngtcp2_ssize taken = -1;
      n = ngtcp2_conn_writev_stream(conn_, &ps.path, &pi, buf, sizeof buf, &taken, NGTCP2_WRITE_STREAM_FLAG_FIN,
                                    stream_, nullptr, 0, uv_hrtime());
      if (taken >= 0) fin_sent_ = true;
    } else {
      n = ngtcp2_conn_write_pkt(conn_, &ps.path, &pi, buf, sizeof buf, uv_hrtime());
    }
    if (n < 0) {
      finish(false, ngtcp2_strerror(static_cast<int>(n)));
      return false;
    }
    if (n == 0) return true;
    uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(buf), static_cast<unsigned>(n));
    // A full socket buffer loses this packet; QUIC's recovery resends it.
    uv_udp_try_send(&udp_, &b, 1, nullptr);
  }
}

void Attempt::arm_timer() {
  const ngtcp2_tstamp expiry = ngtcp2_conn_get_expiry(conn_);
  if (expiry == UINT64_MAX) return (void)uv_timer_stop(&timer_);
  const uint64_t now = uv_hrtime();
  // Rounded up: a timer that fires early finds nothing expired and spins.
  const uint64_t ms = expiry <= now ? 0 : (expiry - now + 999999) / 1000000;
  uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<Attempt*>(t->data)->on_expiry(); }, ms, 0);
}

void Attempt::on_expiry() {
  if (done_) return;
  int rv = ngtcp2_conn_handle_expiry(conn_, uv_hrtime());
  if (rv != 0) return finish(false, ngtcp2_strerror(rv));  // idle close, handshake timeout
  if (write_packets()) arm_timer();
}

void Attempt::on_read(ssize_t n, const uv_buf_t* buf) {
  if (done_ || n == 0) return;
  if (n < 0) return finish(false, uv_strerror(static_cast<int>(n)));
  ngtcp2_pkt_info pi{};
  int rv = ngtcp2_conn_read_pkt(conn_, &path_, &pi, reinterpret_cast<const uint8_t*>(buf->base),
                                static_cast<size_t>(n), uv_hrtime());
  // A packet that could not be used is tolerated, as in QuicConnector; a
  // closing peer, a TLS failure (the pin included) or a fatal error is not.
  if (rv != 0 && (rv == NGTCP2_ERR_DRAINING || rv == NGTCP2_ERR_CLOSING || rv == NGTCP2_ERR_CRYPTO ||
                  rv == NGTCP2_ERR_CALLBACK_FAILURE || ngtcp2_err_is_fatal(rv)))
    return finish(false, ngtcp2_strerror(rv));
  // Flush first (the client Finished and ACKs), then test for completion:
  // QuicConnector's after_io() does it in this order.
  if (!write_packets()) return;
  if (handshake_done_ && !client_.bulk) return finish(true, nullptr);
  if (handshake_done_ && stream_ < 0) {
    if (int rv2 = ngtcp2_conn_open_bidi_stream(conn_, &stream_, nullptr); rv2 != 0)
      return finish(false, ngtcp2_strerror(rv2));
    client_.t0 = uv_hrtime();
    if (!write_packets()) return;
  }
  if (fin_received_) {
    if (client_.received != client_.bulk) return finish(false, "the stream ended early");
    return finish(true, nullptr);
  }
  arm_timer();
}

void Attempt::finish(bool ok, const char* why) {
  if (done_) return;
  done_ = true;
  if (ok) {
    // CONNECTION_CLOSE (NO_ERROR) before the socket goes, as QuicConnection::close().
    uint8_t buf[kMaxUdpPayload];
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi{};
    ngtcp2_connection_close_error ccerr;
    ngtcp2_connection_close_error_default(&ccerr);
    ngtcp2_ssize n = ngtcp2_conn_write_connection_close(conn_, &ps.path, &pi, buf, sizeof buf, &ccerr, uv_hrtime());
    if (n > 0) {
      uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(buf), static_cast<unsigned>(n));
      uv_udp_try_send(&udp_, &b, 1, nullptr);
    }
  } else {
    fprintf(stderr, "cycle failed: %s\n", why ? why : "?");
  }
  // The ngtcp2 and GnuTLS state go with the last handle: no callback can
  // reach them after that.
  auto closed = [](uv_handle_t* h) {
    auto* self = static_cast<Attempt*>(h->data);
    if (--self->handles_ > 0) return;
    if (self->conn_) ngtcp2_conn_del(self->conn_);
    if (self->tls_) gnutls_deinit(self->tls_);
    delete self;
  };
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&udp_), closed);
  client_.on_finished(ok);
}

void Client::start_next() {
  if (started >= cycles) return;
  ++started;
  (new Attempt(*this))->start();
}

void Client::on_finished(bool ok) {
  ++finished;
  if (!ok) ++failures;
  if (finished == cycles) t1 = uv_hrtime();
  // The next cycle starts from the loop, not from inside this attempt's
  // callbacks, so the stack stays flat however many fail at once.
  auto* idle = new uv_idle_t;
  uv_idle_init(loop, idle);
  idle->data = this;
  uv_idle_start(idle, [](uv_idle_t* h) {
    static_cast<Client*>(h->data)->start_next();
    uv_close(reinterpret_cast<uv_handle_t*>(h), [](uv_handle_t* x) { delete reinterpret_cast<uv_idle_t*>(x); });
  });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: %s HOST PORT PIN ALPN CYCLES IN_FLIGHT\n"
                    "       %s HOST PORT PIN ALPN download BYTES\n", argv[0], argv[0]);
    return 2;
  }
  Client c;
  c.host = argv[1];
  c.pin = argv[3];
  c.alpn = argv[4];
  const bool download = strcmp(argv[5], "download") == 0;
  if (download) c.bulk = strtoull(argv[6], nullptr, 10);
  c.cycles = download ? 1 : atol(argv[5]);
  const long in_flight = download ? 1 : atol(argv[6]);
  if (c.cycles <= 0 || in_flight <= 0) {
    fprintf(stderr, "CYCLES and IN_FLIGHT must be positive\n");
    return 2;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(argv[1], argv[2], &hints, &res); rc != 0 || !res) {
    fprintf(stderr, "cannot resolve %s: %s\n", argv[1], gai_strerror(rc));
    return 1;
  }
  memcpy(&c.remote, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  in6_addr probe;
  c.sni = inet_pton(AF_INET, argv[1], &probe) != 1 && inet_pton(AF_INET6, argv[1], &probe) != 1;
  if (gnutls_certificate_allocate_credentials(&c.cred) != 0) return 1;

  uv_loop_t loop;
  uv_loop_init(&loop);
  c.loop = &loop;
  c.t0 = uv_hrtime();
  for (long i = 0; i < in_flight; ++i) c.start_next();
  uv_run(&loop, UV_RUN_DEFAULT);
  const double seconds = static_cast<double>(c.t1 - c.t0) / 1e9;
  if (download) {
    printf("bytes=%llu seconds=%.3f mib_s=%.1f failures=%ld\n", static_cast<unsigned long long>(c.received), seconds,
           seconds > 0 ? static_cast<double>(c.received) / (1 << 20) / seconds : 0.0, c.failures);
    uv_loop_close(&loop);
    gnutls_certificate_free_credentials(c.cred);
    return c.failures == 0 ? 0 : 1;
  }
  printf("cycles=%ld seconds=%.3f rate=%.1f failures=%ld\n", c.finished, seconds,
         seconds > 0 ? static_cast<double>(c.finished - c.failures) / seconds : 0.0, c.failures);
  uv_loop_close(&loop);
  gnutls_certificate_free_credentials(c.cred);
  return c.failures == 0 ? 0 : 1;
}
