// connmgr-test-peer: the streams of a QUIC connection, served in the mode the
// command line chose (echo, send:N, reset, hold, forward:PORT).
#include <algorithm>

#include "peer.h"

namespace connmgr::test_peer {

// The pattern of send:N, from stream offset `from` on.
std::string pattern(uint64_t from, size_t n) {
  std::string out(n, '\0');
  for (size_t k = 0; k < n; ++k) out[k] = static_cast<char>((from + k) % 251);
  return out;
}

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

namespace {

ServerConn* conn_of(void* user) { return static_cast<ServerConn*>(user); }

}  // namespace

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

}  // namespace connmgr::test_peer
