// TcpStream: a Stream (net/stream.h) over one connected TCP socket, which
// it owns. TCP has no streams of its own: a TCP link's open_stream() dials a
// new connection to the link's endpoint and wraps it in one of these.
//
// Toward the node: write() appends to a queue; one uv_write is in flight at
// a time and carries everything queued when it starts, so buffered() is the
// bytes not yet taken by the kernel. shutdown_write() is uv_shutdown (FIN)
// once the queue is handed over. From the node: the socket is read only
// while fewer than StreamLimits::buffer bytes are delivered and not yet
// consume()d; each read is sized so the delivered-unconsumed bytes never pass
// the limit, then reading stops until consume() makes room (the node's
// writes block in its socket buffers).
//
// Ends: UV_ECONNRESET / EPIPE -> on_end("reset"); the node's FIN -> on_eof,
// and on_end("eof") once our FIN has gone too; other socket errors end the
// stream with failure_reason.h's word for them. reset() and destruction of
// an unended stream close with SO_LINGER 0 (RST).
//
// Threads and ownership: loop thread only; owned by its user, destroyable at
// any time (no callback fires after). The socket's and the write requests'
// memory outlive it until their libuv callbacks, which find no owner.
#pragma once

#include <uv.h>

#include <memory>

#include "net/stream.h"
#include "util/uv_handle.h"

namespace connmgr {

// `socket` is connected; its handle's owner becomes the stream.
std::unique_ptr<Stream> make_tcp_stream(uv_loop_t* loop, UvHandle<uv_tcp_t> socket, StreamLimits limits);

}  // namespace connmgr
