// StreamSplice: joins a client's Unix connection, after the answer line of
// its streams.open, to a stream toward a node (rpc::RawStream, lib/net's
// Stream adapted by daemon/methods): a raw byte pipe both ways.
//
// Toward the node: what the client writes goes to stream->write(); reading
// the client pauses while stream->buffered() is over the buffer limit and
// resumes on the stream's on_writable. The client's half-close (EOF) becomes
// stream->shutdown_write(); a client that closes or resets its socket (a read
// error, EOF on a socket also hung up, or a write to it failing) resets the
// stream (the manager's wrapper
// names that end client_closed).
//
// Toward the client: bytes from the node are written to the client's socket
// and consume()d from the stream only when their write completed, so the
// bytes queued toward the client never exceed what the stream delivers
// unconsumed (the buffer limit). The node's end of stream (on_eof) becomes
// shutdown(SHUT_WR) toward the client after the bytes queued; the client may
// go on sending.
//
// While reading the client is paused (the node is not reading, or the client
// half-closed), a socket the client closes would go unnoticed until the
// splice reads again, which a node that never reads never lets happen: a
// probe timer then polls the socket for a hang-up every kHangupProbeMs and
// resets the stream (client_closed) when it finds one.
//
// Ends: on_end("eof") closes the client's connection once everything queued
// toward it is written; on_end("reset") closes it at once; any other end
// (link_lost, disconnect, node_removed, shutdown, an errno name) closes it
// too, after the bytes already queued. `done` is then called on a later loop
// turn (never from inside a Stream callback), so that its caller may destroy
// the splice and with it the Stream.
//
// Lifetime: owned by the ClientSession that handed its pipe over; may be
// destroyed at any time (the Stream is then reset if it has not ended, the
// pipe closed). Write and shutdown requests under way live in blocks of their
// own freed in their callbacks (libuv calls them back with UV_ECANCELED after
// the pipe is closed). Threads: the loop's.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "rpc/raw_stream.h"
#include "util/uv_handle.h"

namespace connmgr::server {

class StreamSplice {
 public:
  static constexpr uint64_t kHangupProbeMs = 500;

  // `pipe`: the client's connection (reading stopped); `to_client`: bytes to
  // write to the client first (the answer line); `to_node`: bytes the client
  // sent after its request line, the stream's first bytes; `buffer`: the
  // limit each way (stream_buffer).
  StreamSplice(uv_loop_t* loop, UvHandle<uv_pipe_t> pipe, std::unique_ptr<rpc::RawStream> stream,
               size_t buffer, std::function<void()> done);
  ~StreamSplice();
  StreamSplice(const StreamSplice&) = delete;
  StreamSplice& operator=(const StreamSplice&) = delete;

  void start(std::string to_client, std::string to_node);

  // Bytes written to the client and not yet completed (tests).
  size_t queued_to_client() const { return queued_; }
  bool ended() const { return ended_; }

 private:
  struct Write;
  struct Shutdown;

  static void alloc_cb(uv_handle_t*, size_t, uv_buf_t* buf);
  static void read_cb(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
  static void write_cb(uv_write_t* req, int status);
  static void shutdown_cb(uv_shutdown_t* req, int status);

  void on_client_read(ssize_t n, const uv_buf_t* buf);
  void update_reading();
  bool client_hung_up() const;
  // Runs the hang-up probe while reading is paused, stops it otherwise.
  void update_probe();
  // Writes `bytes` to the client; `consume` of them are the stream's, to be
  // consume()d once written.
  void write_to_client(std::string_view bytes, size_t consume);
  void on_written(size_t bytes, size_t consume, int status);
  void on_node_data(std::string_view bytes);
  void on_node_eof();
  void on_node_end(const std::string& reason);
  void maybe_close_client();
  // The splice is over: close the client's connection, reset the stream if
  // it still runs, and call done_ on the next loop turn.
  void finish(bool reset_stream);

  UvHandle<uv_pipe_t> pipe_;
  std::unique_ptr<rpc::RawStream> stream_;
  size_t buffer_;
  std::function<void()> done_;
  Timer done_timer_;
  Timer probe_timer_;

  size_t queued_ = 0;           // bytes written to the client, not yet completed
  bool reading_ = false;        // reading the client
  bool client_eof_ = false;     // the client half-closed
  bool node_eof_ = false;       // the node's FIN came: shut the client's reading side
  bool client_shut_ = false;    // shutdown(SHUT_WR) toward the client requested
  bool close_when_flushed_ = false;
  bool ended_ = false;          // the stream ended (on_end), or was reset by us
  bool finished_ = false;
};

}  // namespace connmgr::server
