// connmgr-test-peer: the QUIC server side (ngtcp2 + GnuTLS, TLS 1.3), its
// packets, timers and stream writes.
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <sys/random.h>

#include <cstring>

#include "peer.h"

namespace connmgr::test_peer {

namespace {

constexpr size_t kScidLen = 17;
constexpr size_t kMaxUdpPayload = 1452;
constexpr const char* kPriority =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:"
    "+AES-128-CCM:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:%DISABLE_TLS13_COMPAT_MODE";

void fill_random(uint8_t* d, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = getrandom(d + got, n - got, 0);
    if (r > 0) got += static_cast<size_t>(r);
  }
}

socklen_t addr_len(const sockaddr_storage& s) {
  return s.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
}

}  // namespace

void Peer::write_conn(ServerConn* c) {
  uint8_t buf[kMaxUdpPayload];
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi{};
  for (auto& [id, s] : c->streams) {
    if (s->reset_wanted && !s->quic_closed) {
      s->reset_wanted = false;
      ngtcp2_conn_shutdown_stream(c->conn, id, kResetCode);
    }
  }
  // Streams out of flow-control credit (the stream's or the connection's) sit
  // out this turn; a later turn, after the client's next packet, tries again.
  std::set<int64_t> blocked;
  for (;;) {
    QStream* s = c->next_sender(blocked);
    ngtcp2_vec vec[16];
    bool to_end = false;
    const size_t nvec = s ? s->out.peek(vec, 16, &to_end) : 0;
    uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
    if (s && to_end && s->out.finishing()) flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
    ngtcp2_ssize consumed = -1;
    ngtcp2_ssize n = ngtcp2_conn_writev_stream(c->conn, &ps.path, &pi, buf, sizeof buf, &consumed, flags,
                                               s ? s->id : -1, nvec ? vec : nullptr, nvec, uv_hrtime());
    if (s && consumed >= 0) {
      s->out.consumed(static_cast<uint64_t>(consumed), flags & NGTCP2_WRITE_STREAM_FLAG_FIN);
      if (quic_mode.mode == Mode::kEcho) s->credit(static_cast<uint64_t>(consumed));
      c->last_sent = s->id;
    }
    if (n == NGTCP2_ERR_WRITE_MORE) continue;
    if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED || n == NGTCP2_ERR_STREAM_SHUT_WR || n == NGTCP2_ERR_STREAM_NOT_FOUND) {
      if (s) blocked.insert(s->id);
      continue;
    }
    if (n < 0) {
      remove(c);
      return;
    }
    if (n == 0) break;
    uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(buf), static_cast<unsigned>(n));
    uv_udp_try_send(udp.get(), &b, 1, reinterpret_cast<const sockaddr*>(&c->remote));
  }
  arm(c);
}

void Peer::arm(ServerConn* c) {
  const ngtcp2_tstamp expiry = ngtcp2_conn_get_expiry(c->conn);
  if (expiry == UINT64_MAX) {
    c->timer.stop();
    return;
  }
  const uint64_t now = uv_hrtime();
  const uint64_t ms = expiry <= now ? 0 : (expiry - now + 999999) / 1000000;
  c->timer.start(ms, [this, c] {
    if (ngtcp2_conn_handle_expiry(c->conn, uv_hrtime()) != 0) {
      remove(c);  // idle timeout or worse: forget it
      return;
    }
    write_conn(c);
  });
}

void Peer::remove(ServerConn* c) {
  auto it = conns.find(c);
  if (it == conns.end()) return;
  for (const auto& id : c->cids) by_cid.erase(id);
  conns.erase(it);
}

void Peer::close_conn(ServerConn* c) {
  uint8_t buf[kMaxUdpPayload];
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi{};
  ngtcp2_connection_close_error ccerr;
  ngtcp2_connection_close_error_default(&ccerr);
  ngtcp2_ssize n = ngtcp2_conn_write_connection_close(c->conn, &ps.path, &pi, buf, sizeof buf, &ccerr, uv_hrtime());
  if (n > 0) {
    uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(buf), static_cast<unsigned>(n));
    uv_udp_try_send(udp.get(), &b, 1, reinterpret_cast<const sockaddr*>(&c->remote));
  }
  remove(c);
}

namespace {

// The connection callbacks: the crypto ones, fresh connection IDs, the
// handshake's end; the stream ones when the peer serves streams.
ngtcp2_callbacks connection_callbacks(bool serving) {
  ngtcp2_callbacks cb{};
  cb.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
  cb.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
  cb.encrypt = ngtcp2_crypto_encrypt_cb;
  cb.decrypt = ngtcp2_crypto_decrypt_cb;
  cb.hp_mask = ngtcp2_crypto_hp_mask_cb;
  cb.update_key = ngtcp2_crypto_update_key_cb;
  cb.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
  cb.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
  cb.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
  cb.version_negotiation = ngtcp2_crypto_version_negotiation_cb;
  cb.rand = [](uint8_t* d, size_t len, const ngtcp2_rand_ctx*) { fill_random(d, len); };
  cb.get_new_connection_id = [](ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token, size_t len, void* user) {
    fill_random(cid->data, len);
    cid->datalen = len;
    fill_random(token, NGTCP2_STATELESS_RESET_TOKENLEN);
    auto* c = static_cast<ServerConn*>(user);
    std::string key(reinterpret_cast<char*>(cid->data), len);
    c->cids.push_back(key);
    c->peer->by_cid[key] = c;
    return 0;
  };
  cb.handshake_completed = [](ngtcp2_conn*, void* user) {
    auto* c = static_cast<ServerConn*>(user);
    c->established = true;
    c->peer->quic_accepted++;
    return 0;
  };
  if (serving) set_stream_callbacks(&cb);
  return cb;
}

}  // namespace

// Creates the ngtcp2 server connection for a client's first packet.
bool Peer::start_conn(ServerConn* c, const ngtcp2_pkt_hd& hd, const ngtcp2_cid& scid) {
  const bool serving = quic_mode.mode != Mode::kNone;
  const ngtcp2_callbacks cb = connection_callbacks(serving);
  ngtcp2_settings settings;
  ngtcp2_settings_default(&settings);
  settings.initial_ts = uv_hrtime();
  ngtcp2_transport_params params;
  ngtcp2_transport_params_default(&params);
  params.original_dcid = hd.dcid;
  params.initial_max_streams_bidi = serving ? 100 : 10;
  params.initial_max_streams_uni = 10;
  params.initial_max_data = 1 << 20;
  params.initial_max_stream_data_bidi_remote = 1 << 18;
  params.initial_max_stream_data_uni = 1 << 18;
  params.max_idle_timeout = 120 * NGTCP2_SECONDS;
  if (ngtcp2_conn_server_new(&c->conn, &hd.scid, &scid, &c->path, hd.version, &cb, &settings, &params,
                             nullptr, c) != 0) {
    c->conn = nullptr;
    return false;
  }
  gnutls_init(&c->tls, GNUTLS_SERVER | GNUTLS_ENABLE_EARLY_DATA | GNUTLS_NO_END_OF_EARLY_DATA);
  gnutls_priority_set_direct(c->tls, kPriority, nullptr);
  ngtcp2_crypto_gnutls_configure_server_session(c->tls);
  gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, cred);
  std::vector<gnutls_datum_t> protos;
  for (auto& a : alpns)
    protos.push_back({reinterpret_cast<unsigned char*>(a.data()), static_cast<unsigned>(a.size())});
  gnutls_alpn_set_protocols(c->tls, protos.data(), static_cast<unsigned>(protos.size()), GNUTLS_ALPN_MANDATORY);
  c->ref.get_conn = [](ngtcp2_crypto_conn_ref* r) { return static_cast<ServerConn*>(r->user_data)->conn; };
  c->ref.user_data = c;
  gnutls_session_set_ptr(c->tls, &c->ref);
  ngtcp2_conn_set_tls_native_handle(c->conn, c->tls);
  return true;
}

ServerConn* Peer::accept_quic(const uint8_t* data, size_t n, const sockaddr* from) {
  ngtcp2_pkt_hd hd;
  if (ngtcp2_accept(&hd, data, n) != 0) return nullptr;
  auto owned = std::make_unique<ServerConn>();
  ServerConn* c = owned.get();
  c->peer = this;
  memcpy(&c->remote, from, from->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
  c->path.local.addr = reinterpret_cast<ngtcp2_sockaddr*>(&local);
  c->path.local.addrlen = addr_len(local);
  c->path.remote.addr = reinterpret_cast<ngtcp2_sockaddr*>(&c->remote);
  c->path.remote.addrlen = addr_len(c->remote);
  ngtcp2_cid scid;
  scid.datalen = kScidLen;
  fill_random(scid.data, scid.datalen);
  if (!start_conn(c, hd, scid)) return nullptr;
  c->timer.init(loop);
  conns[c] = std::move(owned);
  for (const ngtcp2_cid* id : {&hd.dcid, &scid}) {
    std::string key(reinterpret_cast<const char*>(id->data), id->datalen);
    c->cids.push_back(key);
    by_cid[key] = c;
  }
  return c;
}

void Peer::on_datagram(const uint8_t* data, size_t n, const sockaddr* from) {
  ngtcp2_version_cid vc;
  if (ngtcp2_pkt_decode_version_cid(&vc, data, n, kScidLen) != 0) return;
  std::string key(reinterpret_cast<const char*>(vc.dcid), vc.dcidlen);
  ServerConn* c = nullptr;
  if (auto it = by_cid.find(key); it != by_cid.end()) c = it->second;
  else c = accept_quic(data, n, from);
  if (!c) return;
  ngtcp2_pkt_info pi{};
  int rv = ngtcp2_conn_read_pkt(c->conn, &c->path, &pi, data, n, uv_hrtime());
  if (rv == NGTCP2_ERR_DRAINING) {
    client_closes++;  // the client sent CONNECTION_CLOSE
    remove(c);
    return;
  }
  if (rv != 0) {
    // A handshake failure: tell the client why, then forget it.
    ngtcp2_connection_close_error ccerr;
    ngtcp2_connection_close_error_set_transport_error_liberr(&ccerr, rv, nullptr, 0);
    uint8_t buf[kMaxUdpPayload];
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_ssize w = ngtcp2_conn_write_connection_close(c->conn, &ps.path, &pi, buf, sizeof buf, &ccerr, uv_hrtime());
    if (w > 0) {
      uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(buf), static_cast<unsigned>(w));
      uv_udp_try_send(udp.get(), &b, 1, from);
    }
    remove(c);
    return;
  }
  write_conn(c);
}

}  // namespace connmgr::test_peer
