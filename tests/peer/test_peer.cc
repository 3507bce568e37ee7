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
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "util/uv_handle.h"

namespace {

using connmgr::Timer;
using connmgr::UvHandle;

constexpr size_t kScidLen = 17;
constexpr size_t kMaxUdpPayload = 1452;
constexpr size_t kChunk = 64 * 1024;
// Bytes a stream holds for the side that is behind before it stops taking
// more from the other side.
constexpr uint64_t kStreamBuffer = 256 * 1024;
constexpr uint64_t kResetCode = 1;
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

enum class Mode { kNone, kEcho, kSend, kReset, kHold, kForward };

struct StreamMode {
  Mode mode = Mode::kNone;
  uint64_t send_bytes = 0;  // send:N
  int forward_port = 0;     // forward:PORT
};

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

// The pattern of send:N, from stream offset `from` on.
std::string pattern(uint64_t from, size_t n) {
  std::string out(n, '\0');
  for (size_t k = 0; k < n; ++k) out[k] = static_cast<char>((from + k) % 251);
  return out;
}

// A write to a libuv stream: the bytes live with the request until its
// callback, which may come after the writer is gone (then it finds no owner).
struct WriteReq {
  uv_write_t req{};
  std::string bytes;
};

// Writes `bytes` on `stream`; `done(owner, status, size)` runs when libuv is
// finished with them, unless the stream's owner has gone.
template <typename Owner>
int write_to(uv_stream_t* stream, std::string bytes, void (*done)(Owner*, int, size_t)) {
  auto* w = new WriteReq;
  w->bytes = std::move(bytes);
  w->req.data = reinterpret_cast<void*>(done);
  uv_buf_t b = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
  const int rc = uv_write(&w->req, stream, &b, 1, [](uv_write_t* req, int status) {
    std::unique_ptr<WriteReq> w(reinterpret_cast<WriteReq*>(req));
    auto* owner = UvHandle<uv_tcp_t>::owner<Owner>(req->handle);
    if (owner) reinterpret_cast<void (*)(Owner*, int, size_t)>(req->data)(owner, status, w->bytes.size());
  });
  if (rc != 0) delete w;
  return rc;
}

// Half-closes `stream` once its writes are done; `done(owner, status)` as above.
template <typename Owner>
void shutdown_then(uv_stream_t* stream, void (*done)(Owner*, int)) {
  auto* req = new uv_shutdown_t;
  req->data = reinterpret_cast<void*>(done);
  if (uv_shutdown(req, stream, [](uv_shutdown_t* r, int status) {
        std::unique_ptr<uv_shutdown_t> req(r);
        auto* owner = UvHandle<uv_tcp_t>::owner<Owner>(r->handle);
        if (owner) reinterpret_cast<void (*)(Owner*, int)>(r->data)(owner, status);
      }) != 0) {
    delete req;
    done(UvHandle<uv_tcp_t>::owner<Owner>(stream), UV_EPIPE);
  }
}

// Closes a TCP socket with RST instead of FIN (SO_LINGER 0).
void reset_close(UvHandle<uv_tcp_t>& tcp) {
  uv_os_fd_t fd;
  if (tcp && uv_fileno(tcp.as_handle(), &fd) == 0) {
    linger l{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  tcp.close();
}

void alloc_buffer(uv_handle_t*, size_t, uv_buf_t* b) {
  static char scratch[kChunk];
  *b = uv_buf_init(scratch, sizeof scratch);
}

// The bytes one side of a QUIC stream has to send. ngtcp2 keeps pointers to
// the bytes it sent until they are acknowledged, so a chunk never moves once
// queued (a std::deque keeps its elements in place on push_back/pop_front).
class SendQueue {
 public:
  void push(std::string bytes) {
    if (bytes.empty()) return;
    end_ += bytes.size();
    chunks_.push_back(std::move(bytes));
  }
  void finish() { fin_ = true; }
  bool finishing() const { return fin_; }
  uint64_t unsent() const { return end_ - sent_; }
  uint64_t held() const { return end_ - acked_; }  // queued, not yet acknowledged
  bool fin_sent() const { return fin_sent_; }
  // Up to `max` pieces of unsent bytes; true when they reach the end.
  size_t peek(ngtcp2_vec* v, size_t max, bool* to_end) const {
    size_t n = 0;
    uint64_t start = base_, covered = sent_;
    for (const auto& c : chunks_) {
      const uint64_t stop = start + c.size();
      if (stop > sent_ && n < max) {
        const size_t skip = sent_ > start ? static_cast<size_t>(sent_ - start) : 0;
        v[n].base = reinterpret_cast<uint8_t*>(const_cast<char*>(c.data())) + skip;
        v[n].len = c.size() - skip;
        covered = stop;
        ++n;
      }
      start = stop;
    }
    *to_end = covered == end_;
    return n;
  }
  void consumed(uint64_t n, bool fin) {
    sent_ += n;
    if (fin && sent_ == end_) fin_sent_ = true;
  }
  void acked(uint64_t upto) {
    acked_ = std::max(acked_, upto);
    while (!chunks_.empty() && base_ + chunks_.front().size() <= acked_) {
      base_ += chunks_.front().size();
      chunks_.pop_front();
    }
  }

 private:
  std::deque<std::string> chunks_;
  uint64_t base_ = 0;  // stream offset of chunks_.front()
  uint64_t acked_ = 0, sent_ = 0, end_ = 0;
  bool fin_ = false, fin_sent_ = false;
};

struct Peer;
struct ServerConn;

// One bidirectional stream a client opened on a QUIC connection.
struct QStream {
  ServerConn* conn = nullptr;
  int64_t id = 0;
  SendQueue out;
  bool reset_wanted = false;   // reset mode: reset at the next chance
  bool fin_received = false;
  bool quic_closed = false;    // ngtcp2 closed it; only the TCP side is left
  uint64_t to_generate = 0;    // send:N bytes not queued yet
  uint64_t generated = 0;
  // forward:PORT
  UvHandle<uv_tcp_t> tcp;
  bool tcp_connected = false, tcp_eof = false, tcp_shut = false, tcp_reading = false;
  std::deque<std::string> before_connect;
  size_t tcp_writes = 0;

  ~QStream() {
    // A gateway stream that ends before both sides finished is a reset.
    if (tcp && !(tcp_eof && tcp_shut)) reset_close(tcp);
  }
  void refill();
  void credit(uint64_t n);
  void to_tcp(std::string bytes);
  void tcp_flushed();
  void tcp_read(ssize_t n, const uv_buf_t* b);
  void start_tcp_reading();
  void reset();
  bool tcp_done() const { return tcp_eof && tcp_shut; }
};

// One QUIC connection accepted by the peer.
struct ServerConn {
  Peer* peer = nullptr;
  ngtcp2_conn* conn = nullptr;
  gnutls_session_t tls = nullptr;
  ngtcp2_crypto_conn_ref ref{};
  sockaddr_storage remote{};
  ngtcp2_path path{};
  Timer timer;
  std::vector<std::string> cids;
  std::map<int64_t, std::unique_ptr<QStream>> streams;
  int64_t last_sent = -1;  // streams take turns sending
  bool established = false;

  ~ServerConn() {
    streams.clear();
    if (conn) ngtcp2_conn_del(conn);
    if (tls) gnutls_deinit(tls);
  }
  QStream* find(int64_t id) {
    auto it = streams.find(id);
    return it == streams.end() ? nullptr : it->second.get();
  }
  QStream* next_sender(const std::set<int64_t>& blocked);
  void open_stream(int64_t id);
  void on_data(QStream* s, uint32_t flags, const uint8_t* data, size_t n);
  void on_closed(int64_t id, bool reset);
};

// One accepted TCP connection.
struct TcpLink {
  Peer* peer = nullptr;
  UvHandle<uv_tcp_t> tcp;
  size_t writes = 0;       // bytes written and not yet done
  bool eof = false, shut = false, reading = false;
  uint64_t to_generate = 0, generated = 0;

  void start();
  void read(ssize_t n, const uv_buf_t* b);
  void resume();
  void written(size_t n);
  void maybe_finish();
};

struct Peer {
  uv_loop_t* loop = nullptr;
  UvHandle<uv_tcp_t> tcp_server;
  std::map<TcpLink*, std::unique_ptr<TcpLink>> tcp_links;
  UvHandle<uv_udp_t> udp;
  sockaddr_storage local{};
  gnutls_certificate_credentials_t cred = nullptr;
  std::vector<std::string> alpns;
  std::map<std::string, ServerConn*> by_cid;
  std::map<ServerConn*, std::unique_ptr<ServerConn>> conns;
  StreamMode tcp_mode, quic_mode;
  int tcp_accepted = 0;
  int quic_accepted = 0;
  int client_closes = 0;
  UvHandle<uv_pipe_t> input;
  std::string input_buf;

  void on_datagram(const uint8_t* data, size_t n, const sockaddr* from);
  ServerConn* accept_quic(const uint8_t* data, size_t n, const sockaddr* from);
  void write_conn(ServerConn* c);
  void arm(ServerConn* c);
  void remove(ServerConn* c);
  void close_conn(ServerConn* c);
  void accept_tcp();
  void drop(TcpLink* t) { tcp_links.erase(t); }
  void command(const std::string& line);
  void stop();
};

socklen_t addr_len(const sockaddr_storage& s) {
  return s.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
}

// ---- QUIC streams ----

void ServerConn::open_stream(int64_t id) {
  if (!ngtcp2_is_bidi_stream(id) || peer->quic_mode.mode == Mode::kNone) return;
  auto s = std::make_unique<QStream>();
  s->conn = this;
  s->id = id;
  const StreamMode& m = peer->quic_mode;
  if (m.mode == Mode::kSend) {
    s->to_generate = m.send_bytes;
    s->refill();
  } else if (m.mode == Mode::kForward) {
    QStream* raw = s.get();
    sockaddr_in to{};
    uv_ip4_addr("127.0.0.1", m.forward_port, &to);
    auto* req = new uv_connect_t;
    if (raw->tcp.init(peer->loop, raw, uv_tcp_init) != 0 ||
        uv_tcp_connect(req, raw->tcp.get(), reinterpret_cast<sockaddr*>(&to), [](uv_connect_t* r, int status) {
          std::unique_ptr<uv_connect_t> req(r);
          auto* s = UvHandle<uv_tcp_t>::owner<QStream>(r->handle);
          if (!s) return;
          if (status != 0) {
            s->reset();
            return;
          }
          s->tcp_connected = true;
          auto waiting = std::move(s->before_connect);
          for (auto& bytes : waiting) s->to_tcp(std::move(bytes));
          s->start_tcp_reading();
          s->tcp_flushed();
        }) != 0) {
      delete req;
      raw->reset_wanted = true;
    }
  }
  streams[id] = std::move(s);
}

// send:N: keeps up to kStreamBuffer of the pattern queued.
void QStream::refill() {
  if (conn->peer->quic_mode.mode != Mode::kSend) return;
  while (to_generate > 0 && out.held() < kStreamBuffer) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(to_generate, kChunk));
    out.push(pattern(generated, n));
    generated += n;
    to_generate -= n;
  }
  if (to_generate == 0) out.finish();
}

// Gives the client back credit for n bytes that have gone on.
void QStream::credit(uint64_t n) {
  if (quic_closed || n == 0) return;
  ngtcp2_conn_extend_max_stream_offset(conn->conn, id, n);
  ngtcp2_conn_extend_max_offset(conn->conn, n);
}

void ServerConn::on_data(QStream* s, uint32_t flags, const uint8_t* data, size_t n) {
  const bool fin = flags & NGTCP2_STREAM_DATA_FLAG_FIN;
  switch (peer->quic_mode.mode) {
    case Mode::kEcho:
      // Credit comes back as the echo is handed to ngtcp2 (write_conn).
      s->out.push(std::string(reinterpret_cast<const char*>(data), n));
      if (fin) s->out.finish();
      break;
    case Mode::kSend:
      s->credit(n);  // read and dropped
      break;
    case Mode::kReset:
      s->reset_wanted = true;
      break;
    case Mode::kForward:
      // Credit comes back once the bytes are written to the TCP side.
      if (n > 0) s->to_tcp(std::string(reinterpret_cast<const char*>(data), n));
      if (fin) {
        s->fin_received = true;
        s->tcp_flushed();
      }
      break;
    default:  // hold: never read, never give credit back
      break;
  }
}

// ngtcp2 closed the stream: `reset` when either side reset it.
void ServerConn::on_closed(int64_t id, bool reset) {
  auto it = streams.find(id);
  if (it == streams.end()) return;
  QStream* s = it->second.get();
  if (ngtcp2_is_bidi_stream(id) && !ngtcp2_conn_is_local_stream(conn, id))
    ngtcp2_conn_extend_max_streams_bidi(conn, 1);
  s->quic_closed = true;
  if (reset || !s->tcp || s->tcp_done()) {
    streams.erase(it);  // a gateway's TCP side is reset by the destructor
    return;
  }
  s->tcp_flushed();  // the TCP side finishes its writes, then the stream goes
}

QStream* ServerConn::next_sender(const std::set<int64_t>& blocked) {
  if (streams.empty()) return nullptr;
  auto start = streams.upper_bound(last_sent);
  auto it = start;
  for (size_t i = 0; i < streams.size(); ++i) {
    if (it == streams.end()) it = streams.begin();
    QStream* s = it->second.get();
    if (!s->quic_closed && !blocked.count(s->id) && (s->out.unsent() > 0 || (s->out.finishing() && !s->out.fin_sent())))
      return s;
    ++it;
  }
  return nullptr;
}

void QStream::reset() {
  if (quic_closed) {
    conn->streams.erase(id);
    return;
  }
  reset_wanted = true;
  conn->peer->write_conn(conn);
}

// Gateway: bytes from the client, on to the TCP side.
void QStream::to_tcp(std::string bytes) {
  if (!tcp_connected) {
    before_connect.push_back(std::move(bytes));
    return;
  }
  const size_t n = bytes.size();
  tcp_writes += n;
  if (write_to<QStream>(tcp.as_stream(), std::move(bytes), [](QStream* s, int status, size_t n) {
        s->tcp_writes -= n;
        if (status != 0) {
          s->reset();
          return;
        }
        s->credit(n);
        const bool closed = s->quic_closed;
        ServerConn* c = s->conn;
        s->tcp_flushed();  // may end s when ngtcp2 is done with it
        if (!closed) c->peer->write_conn(c);
      }) != 0) {
    tcp_writes -= n;
    reset_wanted = true;
  }
}

// After the TCP side's writes: pass the client's end on, or finish.
void QStream::tcp_flushed() {
  if (!tcp_connected || tcp_writes > 0 || !before_connect.empty()) return;
  if (fin_received && !tcp_shut) {
    tcp_shut = true;  // set first: the callback may come at once
    shutdown_then<QStream>(tcp.as_stream(), [](QStream* s, int) {
      if (s->quic_closed && s->tcp_done()) s->conn->streams.erase(s->id);
    });
    return;
  }
  if (quic_closed && tcp_done()) conn->streams.erase(id);
}

void QStream::start_tcp_reading() {
  if (tcp_reading || tcp_eof || !tcp_connected) return;
  tcp_reading = true;
  uv_read_start(tcp.as_stream(), alloc_buffer, [](uv_stream_t* st, ssize_t n, const uv_buf_t* b) {
    if (auto* s = UvHandle<uv_tcp_t>::owner<QStream>(st)) s->tcp_read(n, b);
  });
}

// Gateway: bytes from the TCP side, on to the client.
void QStream::tcp_read(ssize_t n, const uv_buf_t* b) {
  if (n == UV_EOF) {
    tcp_eof = true;
    uv_read_stop(tcp.as_stream());
    if (quic_closed) {
      tcp_flushed();
      return;
    }
    out.finish();
    conn->peer->write_conn(conn);
    return;
  }
  if (n < 0) {
    tcp_eof = true;
    reset();
    return;
  }
  if (quic_closed) return;  // nobody to give them to
  out.push(std::string(b->base, static_cast<size_t>(n)));
  if (out.held() >= kStreamBuffer) {
    uv_read_stop(tcp.as_stream());  // resumed as the client acknowledges
    tcp_reading = false;
  }
  conn->peer->write_conn(conn);
}

// ---- QUIC connections ----

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

ServerConn* conn_of(void* user) { return static_cast<ServerConn*>(user); }

// The callbacks that serve streams; ngtcp2 calls them while it reads a packet,
// so they only change state: Peer::write_conn sends what they queue.
void set_stream_callbacks(ngtcp2_callbacks* cb) {
  cb->stream_open = [](ngtcp2_conn*, int64_t id, void* user) {
    conn_of(user)->open_stream(id);
    return 0;
  };
  cb->recv_stream_data = [](ngtcp2_conn*, uint32_t flags, int64_t id, uint64_t, const uint8_t* data, size_t n,
                            void* user, void*) {
    if (QStream* s = conn_of(user)->find(id)) conn_of(user)->on_data(s, flags, data, n);
    return 0;
  };
  cb->acked_stream_data_offset = [](ngtcp2_conn*, int64_t id, uint64_t offset, uint64_t n, void* user, void*) {
    QStream* s = conn_of(user)->find(id);
    if (!s) return 0;
    s->out.acked(offset + n);
    s->refill();
    if (s->tcp && !s->tcp_reading && s->out.held() < kStreamBuffer) s->start_tcp_reading();
    return 0;
  };
  cb->stream_reset = [](ngtcp2_conn*, int64_t id, uint64_t, uint64_t, void* user, void*) {
    if (QStream* s = conn_of(user)->find(id)) s->reset_wanted = true;  // answered with a reset
    return 0;
  };
  cb->stream_stop_sending = [](ngtcp2_conn*, int64_t id, uint64_t, void* user, void*) {
    if (QStream* s = conn_of(user)->find(id)) s->reset_wanted = true;
    return 0;
  };
  cb->stream_close = [](ngtcp2_conn*, uint32_t flags, int64_t id, uint64_t code, void* user, void*) {
    ServerConn* c = conn_of(user);
    QStream* s = c->find(id);
    const bool reset = ((flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET) && code != 0) ||
                       (s && (s->reset_wanted || !s->out.fin_sent()));
    c->on_closed(id, reset);
    return 0;
  };
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
  const bool serving = quic_mode.mode != Mode::kNone;
  if (serving) set_stream_callbacks(&cb);

  ngtcp2_cid scid;
  scid.datalen = kScidLen;
  fill_random(scid.data, scid.datalen);
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

// ---- TCP links ----

void Peer::accept_tcp() {
  auto link = std::make_unique<TcpLink>();
  TcpLink* t = link.get();
  t->peer = this;
  if (t->tcp.init(loop, t, uv_tcp_init) != 0 || uv_accept(tcp_server.as_stream(), t->tcp.as_stream()) != 0) return;
  tcp_accepted++;
  tcp_links[t] = std::move(link);
  t->start();
}

void TcpLink::start() {
  const StreamMode& m = peer->tcp_mode;
  if (m.mode == Mode::kHold) return;  // never read
  if (m.mode == Mode::kSend) {
    to_generate = m.send_bytes;
    written(0);  // writes, reads, may end the link
    return;
  }
  resume();
}

void TcpLink::resume() {
  if (reading || eof) return;
  reading = true;
  uv_read_start(tcp.as_stream(), alloc_buffer, [](uv_stream_t* st, ssize_t n, const uv_buf_t* b) {
    if (auto* t = UvHandle<uv_tcp_t>::owner<TcpLink>(st)) t->read(n, b);
  });
}

void TcpLink::read(ssize_t n, const uv_buf_t* b) {
  const Mode mode = peer->tcp_mode.mode;
  if (n < 0) {
    eof = true;
    uv_read_stop(tcp.as_stream());
    if (n != UV_EOF || mode == Mode::kNone || mode == Mode::kReset) {
      peer->drop(this);  // today's links: gone with the client's end
      return;
    }
    maybe_finish();
    return;
  }
  if (mode == Mode::kReset && n > 0) {
    reset_close(tcp);
    peer->drop(this);
    return;
  }
  if (mode != Mode::kEcho || n == 0) return;  // read and dropped
  writes += static_cast<size_t>(n);
  if (write_to<TcpLink>(tcp.as_stream(), std::string(b->base, static_cast<size_t>(n)),
                        [](TcpLink* t, int status, size_t size) {
                          if (status != 0) {
                            t->peer->drop(t);
                            return;
                          }
                          t->written(size);
                        }) != 0) {
    peer->drop(this);
    return;
  }
  if (writes >= kStreamBuffer) {
    uv_read_stop(tcp.as_stream());  // the client reads slower than it sends
    reading = false;
  }
}

// After `n` bytes were written: more of the pattern, more reading, or the end.
void TcpLink::written(size_t n) {
  writes -= n;
  while (to_generate > 0 && writes < kStreamBuffer) {
    const size_t k = static_cast<size_t>(std::min<uint64_t>(to_generate, kChunk));
    writes += k;
    to_generate -= k;
    const uint64_t from = generated;
    generated += k;
    if (write_to<TcpLink>(tcp.as_stream(), pattern(from, k), [](TcpLink* t, int status, size_t size) {
          if (status != 0) {
            t->peer->drop(t);
            return;
          }
          t->written(size);
        }) != 0) {
      peer->drop(this);
      return;
    }
  }
  if (writes < kStreamBuffer) resume();
  maybe_finish();
}

// echo: the client's end is answered with an end once all is echoed;
// send:N: an end once N bytes are out. The link goes once both ends are done.
void TcpLink::maybe_finish() {
  const Mode mode = peer->tcp_mode.mode;
  const bool all_out = writes == 0 && to_generate == 0;
  if (!shut && all_out && (mode == Mode::kSend || (mode == Mode::kEcho && eof))) {
    shut = true;
    shutdown_then<TcpLink>(tcp.as_stream(), [](TcpLink* t, int) { t->maybe_finish(); });
    return;
  }
  if (shut && eof && all_out) peer->drop(this);
}

// ---- commands ----

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

}  // namespace

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
