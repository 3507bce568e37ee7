#include "net/tcp_stream.h"

#include <sys/socket.h>

#include <algorithm>
#include <string>
#include <utility>

#include "net/failure_reason.h"

namespace connmgr {

namespace {

// Bytes asked of the kernel per read: enough to move MiB/s, small enough to
// keep a thread's scratch buffer cheap.
constexpr size_t kReadChunk = 64 * 1024;

// The bytes of one uv_write live with its request in one heap block, freed
// in the write's callback: libuv calls it (UV_ECANCELED) when the socket
// closes, which may be after the stream is gone. The callback reaches the
// stream only through the socket's owner, null once the socket was closed.
struct WriteBlock {
  uv_write_t req{};
  std::string bytes;
};

class TcpStream final : public Stream {
 public:
  TcpStream(uv_loop_t* loop, UvHandle<uv_tcp_t> socket, StreamLimits limits)
      : loop_(loop), socket_(std::move(socket)), limit_(std::max<size_t>(limits.buffer, 1)) {
    socket_.set_owner(this);
  }

  // An unended stream goes with a RST: the node must not take a truncated
  // stream for a complete one.
  ~TcpStream() override {
    if (!ended_) abort_socket();
  }

  int64_t transport_id() const override { return 0; }

  void start(Callbacks callbacks) override {
    callbacks_ = std::move(callbacks);
    if (ended_ || started_) return;
    started_ = true;
    resume_reading();
  }

  void write(std::string_view bytes) override {
    if (ended_ || failing_ || shutdown_wanted_ || bytes.empty()) return;
    queued_.append(bytes);
    if (buffered() > limit_) above_limit_ = true;
    flush();
  }

  size_t buffered() const override { return in_flight_ + queued_.size(); }

  void shutdown_write() override {
    if (ended_ || failing_ || shutdown_wanted_) return;
    shutdown_wanted_ = true;
    flush();
  }

  void consume(size_t n) override {
    unconsumed_ -= std::min(n, unconsumed_);
    if (!ended_ && started_) resume_reading();
  }

  void reset() override {
    if (ended_) return;
    ended_ = true;
    callbacks_ = {};
    later_.close();
    abort_socket();
  }

 private:
  // --- toward the node --------------------------------------------------------

  // Hands the queue to the kernel when no write is in flight, then the FIN
  // once everything queued is handed over (libuv sends it after the writes).
  void flush() {
    if (in_flight_ == 0 && !queued_.empty()) {
      auto* block = new WriteBlock{};
      block->bytes = std::move(queued_);
      queued_.clear();
      uv_buf_t buf = uv_buf_init(block->bytes.data(), static_cast<unsigned>(block->bytes.size()));
      if (const int rc = uv_write(&block->req, socket_.as_stream(), &buf, 1, &TcpStream::written); rc != 0) {
        delete block;  // not taken: no callback will come
        return fail_later(rc);
      }
      in_flight_ = block->bytes.size();
    }
    if (shutdown_wanted_ && !shutdown_sent_ && queued_.empty()) {
      shutdown_sent_ = true;
      auto* req = new uv_shutdown_t{};
      if (const int rc = uv_shutdown(req, socket_.as_stream(), &TcpStream::shut_down); rc != 0) {
        delete req;
        return fail_later(rc);
      }
    }
  }

  static void written(uv_write_t* req, int status) {
    std::unique_ptr<WriteBlock> block(reinterpret_cast<WriteBlock*>(req));  // req is the first member
    if (auto* self = UvHandle<uv_tcp_t>::owner<TcpStream>(req->handle)) self->on_written(status);
  }

  void on_written(int status) {
    if (status != 0) return end(reason::from_uv(status));
    in_flight_ = 0;
    flush();
    if (failing_ || !above_limit_ || buffered() > limit_ / 2) return;
    above_limit_ = false;
    if (callbacks_.on_writable) callbacks_.on_writable();  // last: may destroy this
  }

  static void shut_down(uv_shutdown_t* req, int status) {
    std::unique_ptr<uv_shutdown_t> owned(req);
    if (auto* self = UvHandle<uv_tcp_t>::owner<TcpStream>(req->handle)) self->on_shut_down(status);
  }

  void on_shut_down(int status) {
    if (status != 0) return end(reason::from_uv(status));
    write_done_ = true;
    if (read_done_) end("eof");
  }

  // --- from the node ------------------------------------------------------------

  void resume_reading() {
    if (reading_ || read_done_ || failing_ || unconsumed_ >= limit_) return;
    if (const int rc = uv_read_start(socket_.as_stream(), &TcpStream::alloc, &TcpStream::on_read); rc != 0)
      return fail_later(rc);
    reading_ = true;
  }

  void pause_reading() {
    if (!reading_) return;
    uv_read_stop(socket_.as_stream());
    reading_ = false;
  }

  // Each read is sized to the room left under the limit, so the bytes
  // delivered and not yet consumed never pass it.
  static void alloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
    // on_data hands the bytes over before the next read: one scratch
    // buffer per thread serves every stream.
    thread_local char scratch[kReadChunk];
    auto* self = UvHandle<uv_tcp_t>::owner<TcpStream>(handle);
    const size_t room = self ? self->limit_ - std::min(self->unconsumed_, self->limit_) : 0;
    *buf = uv_buf_init(scratch, static_cast<unsigned>(std::min(room, kReadChunk)));
  }

  static void on_read(uv_stream_t* stream, ssize_t n, const uv_buf_t* buf) {
    auto* self = UvHandle<uv_tcp_t>::owner<TcpStream>(stream);
    if (!self || n == 0) return;
    if (n > 0) return self->on_bytes(std::string_view(buf->base, static_cast<size_t>(n)));
    if (n == UV_EOF) return self->on_node_eof();
    if (n == UV_ENOBUFS) return self->pause_reading();  // no room (never expected: paused at the limit)
    self->end(reason::from_uv(static_cast<int>(n)));
  }

  void on_bytes(std::string_view bytes) {
    unconsumed_ += bytes.size();
    if (unconsumed_ >= limit_) pause_reading();
    if (callbacks_.on_data) callbacks_.on_data(bytes);  // last: may destroy this
  }

  // The node's FIN. libuv has stopped reading. When our FIN has gone too,
  // on_end("eof") follows on the next turn: on_eof may destroy the stream.
  void on_node_eof() {
    read_done_ = true;
    reading_ = false;
    if (write_done_) post([this] { end("eof"); });
    if (callbacks_.on_eof) callbacks_.on_eof();  // last: may destroy this
  }

  // --- ends -------------------------------------------------------------------------

  // Final: closes the socket and reports. After it no callback fires.
  void end(const std::string& why) {
    if (ended_) return;
    ended_ = true;
    auto on_end = std::move(callbacks_.on_end);
    callbacks_ = {};
    later_.close();
    socket_.close();  // pending writes come back cancelled, to no owner
    if (on_end) on_end(why);  // last: may destroy this
  }

  // A call the user made failed at once: the end is reported on the next
  // turn, never from inside the call.
  void fail_later(int uv_error) {
    failing_ = true;
    pause_reading();
    post([this, why = reason::from_uv(uv_error)] { end(why); });
  }

  void post(std::function<void()> fn) {
    if (!later_.initialized() && later_.init(loop_) != 0) return;
    later_.start(0, std::move(fn));
  }

  // SO_LINGER with a zero timeout makes close(2) send a RST and drop what
  // the kernel still holds.
  void abort_socket() {
    if (!socket_) return;
    uv_os_fd_t fd;
    if (uv_fileno(socket_.as_handle(), &fd) == 0) {
      linger lg{1, 0};
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    socket_.close();
  }

  uv_loop_t* loop_;
  UvHandle<uv_tcp_t> socket_;
  size_t limit_;
  Callbacks callbacks_;
  Timer later_;  // opened only when an end must wait for the next turn

  std::string queued_;     // not yet handed to libuv
  size_t in_flight_ = 0;   // bytes of the one uv_write under way
  size_t unconsumed_ = 0;  // delivered by on_data, not yet consume()d
  bool started_ = false;
  bool reading_ = false;
  bool above_limit_ = false;  // buffered() passed the limit: on_writable is owed
  bool shutdown_wanted_ = false, shutdown_sent_ = false;
  bool read_done_ = false, write_done_ = false;
  bool failing_ = false;  // an end is posted
  bool ended_ = false;
};

}  // namespace

std::unique_ptr<Stream> make_tcp_stream(uv_loop_t* loop, UvHandle<uv_tcp_t> socket, StreamLimits limits) {
  return std::make_unique<TcpStream>(loop, std::move(socket), limits);
}

}  // namespace connmgr
