// connmgr-test-peer: a small peer for tests, the demo and benchmarks. It
// accepts TCP links and QUIC connections (ngtcp2 server side, GnuTLS, TLS 1.3)
// on 127.0.0.1, holds them, and closes or drops them on command.
//
//   connmgr-test-peer [--bind 127.0.0.1] [--tcp PORT] [--quic PORT]
//                     [--cert PEM --key PEM] [--alpn connmgr,h3]
//
// Prints "ready tcp=PORT quic=PORT" once listening (port 0 = any). Commands,
// one per line on stdin:
//   close-all  FIN every TCP link, CONNECTION_CLOSE every QUIC connection
//   reset-all  RST every TCP link; forget every QUIC connection silently
//   vanish     exit at once, saying nothing to anyone
//   count      prints "count tcp=N quic=N open_tcp=N open_quic=N client_closes=N"
// End of input stops it cleanly.
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <sys/random.h>
#include <unistd.h>
#include <uv.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

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

struct Peer;

// One QUIC connection accepted by the peer.
struct ServerConn {
  Peer* peer = nullptr;
  ngtcp2_conn* conn = nullptr;
  gnutls_session_t tls = nullptr;
  ngtcp2_crypto_conn_ref ref{};
  sockaddr_storage remote{};
  ngtcp2_path path{};
  uv_timer_t timer{};
  std::vector<std::string> cids;
  bool established = false;
};

struct Peer {
  uv_loop_t* loop = nullptr;
  uv_tcp_t tcp_server{};
  std::set<uv_tcp_t*> tcp_links;
  uv_udp_t udp{};
  sockaddr_storage local{};
  gnutls_certificate_credentials_t cred = nullptr;
  std::vector<std::string> alpns;
  std::map<std::string, ServerConn*> by_cid;
  std::set<ServerConn*> conns;
  int tcp_accepted = 0;
  int quic_accepted = 0;
  int client_closes = 0;
  uv_pipe_t input{};
  std::string input_buf;
  bool quic_on = false;

  void on_datagram(const uint8_t* data, size_t n, const sockaddr* from);
  ServerConn* accept_quic(const uint8_t* data, size_t n, const sockaddr* from);
  void write_conn(ServerConn* c);
  void arm(ServerConn* c);
  void remove(ServerConn* c);
  void close_conn(ServerConn* c);
  void command(const std::string& line);
  void stop();
};

socklen_t addr_len(const sockaddr_storage& s) {
  return s.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
}

void Peer::write_conn(ServerConn* c) {
  uint8_t buf[kMaxUdpPayload];
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi{};
  for (;;) {
    ngtcp2_ssize n = ngtcp2_conn_write_pkt(c->conn, &ps.path, &pi, buf, sizeof buf, uv_hrtime());
    if (n < 0) {
      remove(c);
      return;
    }
    if (n == 0) break;
    uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(buf), static_cast<unsigned>(n));
    uv_udp_try_send(&udp, &b, 1, reinterpret_cast<const sockaddr*>(&c->remote));
  }
  arm(c);
}

void Peer::arm(ServerConn* c) {
  const ngtcp2_tstamp expiry = ngtcp2_conn_get_expiry(c->conn);
  if (expiry == UINT64_MAX) {
    uv_timer_stop(&c->timer);
    return;
  }
  const uint64_t now = uv_hrtime();
  const uint64_t ms = expiry <= now ? 0 : (expiry - now + 999999) / 1000000;
  uv_timer_start(&c->timer, [](uv_timer_t* t) {
    auto* c = static_cast<ServerConn*>(t->data);
    if (ngtcp2_conn_handle_expiry(c->conn, uv_hrtime()) != 0) {
      c->peer->remove(c);  // idle timeout or worse: forget it
      return;
    }
    c->peer->write_conn(c);
  }, ms, 0);
}

void Peer::remove(ServerConn* c) {
  if (!conns.erase(c)) return;
  for (const auto& id : c->cids) by_cid.erase(id);
  uv_timer_stop(&c->timer);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), [](uv_handle_t* h) {
    auto* c = static_cast<ServerConn*>(h->data);
    ngtcp2_conn_del(c->conn);
    gnutls_deinit(c->tls);
    delete c;
  });
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
    uv_udp_try_send(&udp, &b, 1, reinterpret_cast<const sockaddr*>(&c->remote));
  }
  remove(c);
}

ServerConn* Peer::accept_quic(const uint8_t* data, size_t n, const sockaddr* from) {
  ngtcp2_pkt_hd hd;
  if (ngtcp2_accept(&hd, data, n) != 0) return nullptr;
  auto* c = new ServerConn;
  c->peer = this;
  memcpy(&c->remote, from, from->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
  c->path.local.addr = reinterpret_cast<ngtcp2_sockaddr*>(&local);
  c->path.local.addrlen = addr_len(local);
  c->path.remote.addr = reinterpret_cast<ngtcp2_sockaddr*>(&c->remote);
  c->path.remote.addrlen = addr_len(c->remote);

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

  ngtcp2_cid scid;
  scid.datalen = kScidLen;
  fill_random(scid.data, scid.datalen);
  ngtcp2_settings settings;
  ngtcp2_settings_default(&settings);
  settings.initial_ts = uv_hrtime();
  ngtcp2_transport_params params;
  ngtcp2_transport_params_default(&params);
  params.original_dcid = hd.dcid;
  params.initial_max_streams_bidi = 10;
  params.initial_max_streams_uni = 10;
  params.initial_max_data = 1 << 20;
  params.initial_max_stream_data_bidi_remote = 1 << 18;
  params.initial_max_stream_data_uni = 1 << 18;
  params.max_idle_timeout = 120 * NGTCP2_SECONDS;

  if (ngtcp2_conn_server_new(&c->conn, &hd.scid, &scid, &c->path, hd.version, &cb, &settings, &params,
                             nullptr, c) != 0) {
    delete c;
    return nullptr;
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

  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  conns.insert(c);
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
      uv_udp_try_send(&udp, &b, 1, from);
    }
    remove(c);
    return;
  }
  write_conn(c);
}

void Peer::command(const std::string& line) {
  if (line == "close-all") {
    for (auto* t : tcp_links)
      uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    tcp_links.clear();
    for (auto* c : std::vector<ServerConn*>(conns.begin(), conns.end())) close_conn(c);
  } else if (line == "reset-all") {
    for (auto* t : tcp_links)
      uv_tcp_close_reset(t, [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    tcp_links.clear();
    for (auto* c : std::vector<ServerConn*>(conns.begin(), conns.end())) remove(c);
  } else if (line == "vanish") {
    fflush(stdout);
    _exit(0);
  } else if (line == "count") {
    size_t open_quic = 0;
    for (auto* c : conns) open_quic += c->established;
    printf("count tcp=%d quic=%d open_tcp=%zu open_quic=%zu client_closes=%d\n", tcp_accepted, quic_accepted,
           tcp_links.size(), open_quic, client_closes);
    fflush(stdout);
  } else if (!line.empty()) {
    fprintf(stderr, "connmgr-test-peer: unknown command '%s'\n", line.c_str());
  }
}

void Peer::stop() {
  uv_walk(loop, [](uv_handle_t* h, void*) {
    if (!uv_is_closing(h)) uv_close(h, nullptr);
  }, nullptr);
}

int port_of(const sockaddr_storage& s) {
  return ntohs(s.ss_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6*>(&s)->sin6_port
                                       : reinterpret_cast<const sockaddr_in*>(&s)->sin_port);
}

}  // namespace

int main(int argc, char** argv) {
  std::string bind_ip = "127.0.0.1", cert, key, alpn = "connmgr";
  int tcp_port = -1, quic_port = -1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        fprintf(stderr, "connmgr-test-peer: %s needs a value\n", a.c_str());
        exit(2);
      }
      return argv[++i];
    };
    if (a == "--bind") bind_ip = value();
    else if (a == "--tcp") tcp_port = atoi(value().c_str());
    else if (a == "--quic") quic_port = atoi(value().c_str());
    else if (a == "--cert") cert = value();
    else if (a == "--key") key = value();
    else if (a == "--alpn") alpn = value();
    else {
      fprintf(stderr, "usage: connmgr-test-peer [--bind IP] [--tcp PORT] [--quic PORT] [--cert PEM --key PEM] [--alpn A,B]\n");
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  Peer peer;
  peer.loop = uv_default_loop();
  std::stringstream ss(alpn);
  for (std::string part; std::getline(ss, part, ',');) peer.alpns.push_back(part);

  sockaddr_storage addr{};
  if (uv_ip4_addr(bind_ip.c_str(), 0, reinterpret_cast<sockaddr_in*>(&addr)) != 0)
    uv_ip6_addr(bind_ip.c_str(), 0, reinterpret_cast<sockaddr_in6*>(&addr));
  auto with_port = [&](int port) {
    sockaddr_storage a = addr;
    if (a.ss_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(&a)->sin6_port = htons(static_cast<uint16_t>(port));
    else reinterpret_cast<sockaddr_in*>(&a)->sin_port = htons(static_cast<uint16_t>(port));
    return a;
  };

  int tcp_bound = 0, quic_bound = 0;
  if (tcp_port >= 0) {
    uv_tcp_init(peer.loop, &peer.tcp_server);
    peer.tcp_server.data = &peer;
    sockaddr_storage a = with_port(tcp_port);
    if (uv_tcp_bind(&peer.tcp_server, reinterpret_cast<sockaddr*>(&a), 0) != 0 ||
        uv_listen(reinterpret_cast<uv_stream_t*>(&peer.tcp_server), 4096, [](uv_stream_t* s, int status) {
          if (status < 0) return;
          auto* p = static_cast<Peer*>(s->data);
          auto* t = new uv_tcp_t;
          uv_tcp_init(p->loop, t);
          t->data = p;
          if (uv_accept(s, reinterpret_cast<uv_stream_t*>(t)) != 0) {
            uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
            return;
          }
          p->tcp_accepted++;
          p->tcp_links.insert(t);
          uv_read_start(reinterpret_cast<uv_stream_t*>(t), [](uv_handle_t*, size_t, uv_buf_t* b) {
            static char scratch[4096];
            *b = uv_buf_init(scratch, sizeof scratch);
          }, [](uv_stream_t* st, ssize_t n, const uv_buf_t*) {
            if (n >= 0) return;
            auto* tt = reinterpret_cast<uv_tcp_t*>(st);
            static_cast<Peer*>(tt->data)->tcp_links.erase(tt);
            uv_close(reinterpret_cast<uv_handle_t*>(tt), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
          });
        }) != 0) {
      fprintf(stderr, "connmgr-test-peer: cannot listen on TCP port %d\n", tcp_port);
      return 1;
    }
    sockaddr_storage b{};
    int len = sizeof b;
    uv_tcp_getsockname(&peer.tcp_server, reinterpret_cast<sockaddr*>(&b), &len);
    tcp_bound = port_of(b);
  }
  if (quic_port >= 0) {
    if (cert.empty() || key.empty()) {
      fprintf(stderr, "connmgr-test-peer: --quic needs --cert and --key\n");
      return 2;
    }
    gnutls_certificate_allocate_credentials(&peer.cred);
    if (gnutls_certificate_set_x509_key_file(peer.cred, cert.c_str(), key.c_str(), GNUTLS_X509_FMT_PEM) < 0) {
      fprintf(stderr, "connmgr-test-peer: cannot load %s / %s\n", cert.c_str(), key.c_str());
      return 1;
    }
    uv_udp_init(peer.loop, &peer.udp);
    peer.udp.data = &peer;
    sockaddr_storage a = with_port(quic_port);
    if (uv_udp_bind(&peer.udp, reinterpret_cast<sockaddr*>(&a), 0) != 0) {
      fprintf(stderr, "connmgr-test-peer: cannot bind UDP port %d\n", quic_port);
      return 1;
    }
    int len = sizeof peer.local;
    uv_udp_getsockname(&peer.udp, reinterpret_cast<sockaddr*>(&peer.local), &len);
    quic_bound = port_of(peer.local);
    uv_udp_recv_start(&peer.udp, [](uv_handle_t*, size_t, uv_buf_t* b) {
      static char scratch[65536];
      *b = uv_buf_init(scratch, sizeof scratch);
    }, [](uv_udp_t* u, ssize_t n, const uv_buf_t* b, const sockaddr* from, unsigned) {
      if (n <= 0 || !from) return;
      static_cast<Peer*>(u->data)->on_datagram(reinterpret_cast<const uint8_t*>(b->base), static_cast<size_t>(n), from);
    });
  }

  uv_pipe_init(peer.loop, &peer.input, 0);
  peer.input.data = &peer;
  if (uv_pipe_open(&peer.input, 0) == 0) {
    uv_read_start(reinterpret_cast<uv_stream_t*>(&peer.input), [](uv_handle_t*, size_t, uv_buf_t* b) {
      static char scratch[4096];
      *b = uv_buf_init(scratch, sizeof scratch);
    }, [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
      auto* p = static_cast<Peer*>(s->data);
      if (n < 0) {
        p->stop();  // end of input: stop cleanly
        return;
      }
      p->input_buf.append(b->base, static_cast<size_t>(n));
      for (size_t nl; (nl = p->input_buf.find('\n')) != std::string::npos;) {
        std::string line = p->input_buf.substr(0, nl);
        p->input_buf.erase(0, nl + 1);
        p->command(line);
      }
    });
  }
  printf("ready tcp=%d quic=%d\n", tcp_bound, quic_bound);
  fflush(stdout);
  uv_run(peer.loop, UV_RUN_DEFAULT);
  for (auto* c : std::vector<ServerConn*>(peer.conns.begin(), peer.conns.end())) {
    ngtcp2_conn_del(c->conn);
    gnutls_deinit(c->tls);
    delete c;
  }
  if (peer.cred) gnutls_certificate_free_credentials(peer.cred);
  return 0;
}
