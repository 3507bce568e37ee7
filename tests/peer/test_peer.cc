// connmgr-test-peer: a small peer for tests, the demo and benchmarks. It
// accepts TCP links and QUIC connections (ngtcp2 server side, GnuTLS, TLS 1.3)
// on 127.0.0.1, holds them, and closes or drops them on command; on request it
// also serves streams.
//
//   connmgr-test-peer [--bind 127.0.0.1] [--tcp PORT] [--quic PORT]
//                     [--cert PEM --key PEM] [--alpn connmgr,h3]
//                     [--tcp-streams MODE] [--quic-streams MODE]
//
// Prints "ready tcp=PORT quic=PORT" once listening (port 0 = any). Commands,
// one per line on stdin:
//   close-all  FIN every TCP link, CONNECTION_CLOSE every QUIC connection
//   reset-all  RST every TCP link; forget every QUIC connection silently
//   vanish     exit at once, saying nothing to anyone
//   count      prints "count tcp=N quic=N open_tcp=N open_quic=N client_closes=N"
// End of input stops it cleanly.
//
// Stream modes (each accepted TCP connection is one stream; on QUIC, each
// bidirectional stream the client opens):
//   echo          sends every byte back; the client's end (FIN) is answered
//                 with FIN once all is echoed
//   send:N        sends N bytes, byte k being k % 251, then FIN; what the
//                 client sends is read and dropped
//   reset         resets the stream (QUIC RESET_STREAM + STOP_SENDING; TCP RST)
//                 once its first bytes arrive
//   hold          accepts the stream and never reads it: the client's
//                 flow-control window (QUIC) or socket buffers (TCP) fill
//   forward:PORT  QUIC only: a gateway, each stream joined byte for byte, both
//                 directions, to a new TCP connection to 127.0.0.1:PORT; an end
//                 (FIN) is passed on as an end, a reset as a reset
// Without a mode the peer behaves as it always has: TCP bytes are read and
// dropped, QUIC stream data is never read.
// QUIC flow control holds both ways: credit for a stream's bytes is given back
// only once they have gone on (echoed, forwarded, dropped).
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "peer.h"

namespace connmgr::test_peer {

bool parse_mode(const std::string& text, bool quic, StreamMode* out) {
  auto number = [](const std::string& digits, uint64_t* n) {
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return false;
    *n = std::stoull(digits);
    return true;
  };
  uint64_t n = 0;
  if (text == "echo") out->mode = Mode::kEcho;
  else if (text == "reset") out->mode = Mode::kReset;
  else if (text == "hold") out->mode = Mode::kHold;
  else if (text.rfind("send:", 0) == 0 && number(text.substr(5), &n)) *out = {Mode::kSend, n, 0};
  else if (quic && text.rfind("forward:", 0) == 0 && number(text.substr(8), &n) && n > 0 && n < 65536)
    *out = {Mode::kForward, 0, static_cast<int>(n)};
  else return false;
  return true;
}

void Peer::command(const std::string& line) {
  if (line == "close-all") {
    tcp_links.clear();  // each closes with FIN
    std::vector<ServerConn*> all;
    for (auto& [c, owned] : conns) all.push_back(c);
    for (auto* c : all) close_conn(c);
  } else if (line == "reset-all") {
    for (auto& [t, owned] : tcp_links) reset_close(t->tcp);
    tcp_links.clear();
    by_cid.clear();
    conns.clear();
  } else if (line == "vanish") {
    fflush(stdout);
    _exit(0);
  } else if (line == "count") {
    size_t open_quic = 0;
    for (auto& [c, owned] : conns) open_quic += c->established;
    printf("count tcp=%d quic=%d open_tcp=%zu open_quic=%zu client_closes=%d\n", tcp_accepted, quic_accepted,
           tcp_links.size(), open_quic, client_closes);
    fflush(stdout);
  } else if (!line.empty()) {
    fprintf(stderr, "connmgr-test-peer: unknown command '%s'\n", line.c_str());
  }
}

void Peer::stop() {
  tcp_links.clear();
  by_cid.clear();
  conns.clear();
  tcp_server.close();
  udp.close();
  input.close();
}

int port_of(const sockaddr_storage& s) {
  return ntohs(s.ss_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6*>(&s)->sin6_port
                                       : reinterpret_cast<const sockaddr_in*>(&s)->sin_port);
}

constexpr const char* kUsage =
    "usage: connmgr-test-peer [--bind IP] [--tcp PORT] [--quic PORT] [--cert PEM --key PEM] [--alpn A,B]\n"
    "                         [--tcp-streams echo|send:N|reset|hold]\n"
    "                         [--quic-streams echo|send:N|reset|hold|forward:PORT]\n";

struct Options {
  std::string bind_ip = "127.0.0.1", cert, key, alpn = "connmgr";
  int tcp_port = -1, quic_port = -1;
  StreamMode tcp_mode, quic_mode;
};

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        fprintf(stderr, "connmgr-test-peer: %s needs a value\n", a.c_str());
        exit(2);
      }
      return argv[++i];
    };
    auto mode = [&](bool quic, StreamMode* out) {
      const std::string v = value();
      if (!parse_mode(v, quic, out)) {
        fprintf(stderr, "connmgr-test-peer: %s: unknown stream mode '%s'\n%s", a.c_str(), v.c_str(), kUsage);
        exit(2);
      }
    };
    if (a == "--bind") o.bind_ip = value();
    else if (a == "--tcp") o.tcp_port = atoi(value().c_str());
    else if (a == "--quic") o.quic_port = atoi(value().c_str());
    else if (a == "--cert") o.cert = value();
    else if (a == "--key") o.key = value();
    else if (a == "--alpn") o.alpn = value();
    else if (a == "--tcp-streams") mode(false, &o.tcp_mode);
    else if (a == "--quic-streams") mode(true, &o.quic_mode);
    else {
      fputs(kUsage, stderr);
      exit(2);
    }
  }
  return o;
}

// Listens for TCP links; returns the port, or -1.
int listen_tcp(Peer& peer, const sockaddr_storage& a) {
  if (peer.tcp_server.init(peer.loop, &peer, uv_tcp_init) != 0 ||
      uv_tcp_bind(peer.tcp_server.get(), reinterpret_cast<const sockaddr*>(&a), 0) != 0 ||
      uv_listen(peer.tcp_server.as_stream(), 4096, [](uv_stream_t* s, int status) {
        auto* p = UvHandle<uv_tcp_t>::owner<Peer>(s);
        if (p && status == 0) p->accept_tcp();
      }) != 0)
    return -1;
  sockaddr_storage b{};
  int len = sizeof b;
  uv_tcp_getsockname(peer.tcp_server.get(), reinterpret_cast<sockaddr*>(&b), &len);
  return port_of(b);
}

// Listens for QUIC connections; returns the port, or -1.
int listen_quic(Peer& peer, const sockaddr_storage& a) {
  if (peer.udp.init(peer.loop, &peer, uv_udp_init) != 0 ||
      uv_udp_bind(peer.udp.get(), reinterpret_cast<const sockaddr*>(&a), 0) != 0)
    return -1;
  int len = sizeof peer.local;
  uv_udp_getsockname(peer.udp.get(), reinterpret_cast<sockaddr*>(&peer.local), &len);
  uv_udp_recv_start(peer.udp.get(), [](uv_handle_t*, size_t, uv_buf_t* b) {
    static char scratch[65536];
    *b = uv_buf_init(scratch, sizeof scratch);
  }, [](uv_udp_t* u, ssize_t n, const uv_buf_t* b, const sockaddr* from, unsigned) {
    auto* p = UvHandle<uv_udp_t>::owner<Peer>(u);
    if (!p || n <= 0 || !from) return;
    p->on_datagram(reinterpret_cast<const uint8_t*>(b->base), static_cast<size_t>(n), from);
  });
  return port_of(peer.local);
}

// Commands on stdin, one per line; end of input stops the peer.
void read_commands(Peer& peer) {
  if (peer.input.init(peer.loop, &peer, uv_pipe_init, 0) != 0) return;
  if (uv_pipe_open(peer.input.get(), 0) != 0) {
    peer.input.close();
    return;
  }
  uv_read_start(peer.input.as_stream(), [](uv_handle_t*, size_t, uv_buf_t* b) {
    static char scratch[4096];
    *b = uv_buf_init(scratch, sizeof scratch);
  }, [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
    auto* p = UvHandle<uv_pipe_t>::owner<Peer>(s);
    if (!p) return;
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

}  // namespace connmgr::test_peer

using namespace connmgr::test_peer;  // this file's own helpers, above

int main(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  Peer peer;
  peer.loop = uv_default_loop();
  peer.tcp_mode = o.tcp_mode;
  peer.quic_mode = o.quic_mode;
  std::stringstream ss(o.alpn);
  for (std::string part; std::getline(ss, part, ',');) peer.alpns.push_back(part);

  sockaddr_storage addr{};
  if (uv_ip4_addr(o.bind_ip.c_str(), 0, reinterpret_cast<sockaddr_in*>(&addr)) != 0)
    uv_ip6_addr(o.bind_ip.c_str(), 0, reinterpret_cast<sockaddr_in6*>(&addr));
  auto with_port = [&](int port) {
    sockaddr_storage a = addr;
    if (a.ss_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(&a)->sin6_port = htons(static_cast<uint16_t>(port));
    else reinterpret_cast<sockaddr_in*>(&a)->sin_port = htons(static_cast<uint16_t>(port));
    return a;
  };

  int tcp_bound = 0, quic_bound = 0;
  if (o.tcp_port >= 0 && (tcp_bound = listen_tcp(peer, with_port(o.tcp_port))) < 0) {
    fprintf(stderr, "connmgr-test-peer: cannot listen on TCP port %d\n", o.tcp_port);
    return 1;
  }
  if (o.quic_port >= 0) {
    if (o.cert.empty() || o.key.empty()) {
      fprintf(stderr, "connmgr-test-peer: --quic needs --cert and --key\n");
      return 2;
    }
    gnutls_certificate_allocate_credentials(&peer.cred);
    if (gnutls_certificate_set_x509_key_file(peer.cred, o.cert.c_str(), o.key.c_str(), GNUTLS_X509_FMT_PEM) < 0) {
      fprintf(stderr, "connmgr-test-peer: cannot load %s / %s\n", o.cert.c_str(), o.key.c_str());
      return 1;
    }
    if ((quic_bound = listen_quic(peer, with_port(o.quic_port))) < 0) {
      fprintf(stderr, "connmgr-test-peer: cannot bind UDP port %d\n", o.quic_port);
      return 1;
    }
  }
  read_commands(peer);
  printf("ready tcp=%d quic=%d\n", tcp_bound, quic_bound);
  fflush(stdout);
  uv_run(peer.loop, UV_RUN_DEFAULT);
  peer.stop();
  uv_run(peer.loop, UV_RUN_DEFAULT);  // the close callbacks free the handles
  if (peer.cred) gnutls_certificate_free_credentials(peer.cred);
  return 0;
}

