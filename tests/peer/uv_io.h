// libuv I/O helpers of connmgr-test-peer: writes and shutdowns whose bytes and
// requests outlive their owner, a close with RST, one read buffer.
#pragma once

#include <sys/socket.h>
#include <uv.h>

#include <memory>
#include <string>

#include "util/uv_handle.h"

namespace connmgr::test_peer {

constexpr size_t kChunk = 64 * 1024;

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
inline void reset_close(UvHandle<uv_tcp_t>& tcp) {
  uv_os_fd_t fd;
  if (tcp && uv_fileno(tcp.as_handle(), &fd) == 0) {
    linger l{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  tcp.close();
}

inline void alloc_buffer(uv_handle_t*, size_t, uv_buf_t* b) {
  static char scratch[kChunk];
  *b = uv_buf_init(scratch, sizeof scratch);
}

}  // namespace connmgr::test_peer
