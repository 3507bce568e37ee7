// Stream: one bidirectional byte stream to a node over its link: a QUIC
// stream on the node's one QUIC connection, or, since TCP has no streams, a
// TCP connection of its own to the link's endpoint.
//
// Bytes toward the node: write() queues them; the stream holds them until
// the transport has taken them (TCP: written to the kernel; QUIC: acknowledged
// by the peer). buffered() is how many it holds; on_writable fires when that
// falls to half of the limit given at open (StreamLimits::buffer) after having
// been above it, so the user (the daemon's splice) stops reading its own side
// while buffered() > limit and resumes on on_writable. Nothing bounds write()
// itself: the user keeps to the limit. write() after shutdown_write() or
// after the end is ignored.
//
// Bytes from the node: delivered by on_data. The stream delivers at most
// StreamLimits::buffer bytes that the user has not yet consume()d: past that,
// TCP stops reading the socket and QUIC extends no flow-control credit to the
// peer, so a user that cannot pass bytes on stops the node instead of growing.
//
// Ends: shutdown_write() sends FIN once the queued bytes are out (QUIC FIN,
// TCP shutdown(SHUT_WR)); on_eof is the node's FIN (more on_data never
// follows, the user may still write). on_end(reason) is final: "reset" (the
// node reset the stream: QUIC RESET_STREAM, TCP RST), "eof" (both directions
// finished cleanly), "link_lost" (the QUIC connection ended), or an errno
// name; after it no callback fires. reset() ends the stream at once toward
// the node (QUIC RESET_STREAM + STOP_SENDING; TCP close with RST) and fires
// nothing. Destroying a Stream that has not ended resets it. When the
// node's FIN comes last, on_eof fires and on_end("eof") follows on a later
// loop turn.
//
// Threads and ownership: loop thread only. The user owns the Stream
// (unique_ptr); a QUIC stream's connection may end before it (on_end
// "link_lost"), and the Stream stays safe to call and destroy after that.
// Callbacks never fire from inside a call the user makes on the stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "net/dial_handle.h"
#include "util/error.h"

namespace connmgr {

struct StreamLimits {
  size_t buffer = 256 * 1024;  // per direction: unconsumed from, and queued toward, the node
};

class Stream {
 public:
  struct Callbacks {
    std::function<void(std::string_view bytes)> on_data;
    std::function<void()> on_eof;
    std::function<void()> on_writable;
    std::function<void(const std::string& reason)> on_end;
  };

  virtual ~Stream() = default;

  // The transport's id of the stream (QUIC stream id; TCP: 0).
  virtual int64_t transport_id() const = 0;
  // Starts delivering callbacks (none fire before).
  virtual void start(Callbacks callbacks) = 0;
  virtual void write(std::string_view bytes) = 0;
  virtual size_t buffered() const = 0;
  virtual void shutdown_write() = 0;
  // `n` bytes delivered by on_data have been passed on: the node may send more.
  virtual void consume(size_t n) = 0;
  virtual void reset() = 0;
};

using StreamCallback = std::function<void(Result<std::unique_ptr<Stream>>)>;

}  // namespace connmgr
