// connmgr-test-peer: the TCP links, each served as one stream in the mode the
// command line chose (echo, send:N, reset, hold), or read and dropped.
#include <algorithm>

#include "peer.h"

namespace connmgr::test_peer {

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

}  // namespace connmgr::test_peer
