#include "server/stream_splice.h"

#include <poll.h>

namespace connmgr::server {

namespace {

constexpr size_t kReadChunk = 64 * 1024;

}  // namespace

// A write to the client under way: libuv needs the request and its bytes
// until it calls back, which it does even after the pipe was closed (then
// with UV_ECANCELED, the splice possibly gone). The block frees itself in the
// callback.
struct StreamSplice::Write {
  uv_write_t req{};
  std::string bytes;
  size_t consume = 0;  // of them, bytes from the stream to consume() once written
};

struct StreamSplice::Shutdown {
  uv_shutdown_t req{};
};

StreamSplice::StreamSplice(uv_loop_t* loop, UvHandle<uv_pipe_t> pipe, std::unique_ptr<rpc::RawStream> stream,
                           size_t buffer, std::function<void()> done)
    : pipe_(std::move(pipe)), stream_(std::move(stream)), buffer_(buffer), done_(std::move(done)) {
  pipe_.set_owner(this);
  done_timer_.init(loop);
  probe_timer_.init(loop);
}

StreamSplice::~StreamSplice() = default;  // pipe closed, stream reset if it still runs

void StreamSplice::start(std::string to_client, std::string to_node) {
  stream_->start(rpc::RawStream::Callbacks{
      [this](std::string_view bytes) { on_node_data(bytes); },
      [this] { on_node_eof(); },
      [this] { update_reading(); },
      [this](const std::string& reason) { on_node_end(reason); },
  });
  if (!to_client.empty()) write_to_client(to_client, 0);
  if (!to_node.empty() && !finished_) stream_->write(to_node);
  update_reading();
}

// --- client -> node -----------------------------------------------------------

void StreamSplice::alloc_cb(uv_handle_t*, size_t, uv_buf_t* buf) {
  // Each chunk is handed to stream->write() (which keeps its own copy) before
  // the next read: one scratch buffer serves every splice.
  static char scratch[kReadChunk];
  *buf = uv_buf_init(scratch, sizeof scratch);
}

void StreamSplice::read_cb(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  if (auto* self = UvHandle<uv_pipe_t>::owner<StreamSplice>(s)) self->on_client_read(n, buf);
}

void StreamSplice::on_client_read(ssize_t n, const uv_buf_t* buf) {
  if (finished_ || n == 0) return;
  if (n == UV_EOF) {
    // A Unix socket reads EOF both when the client shut its writing side and
    // when it closed the socket; only a close also hangs the socket up (as
    // does our own shutdown toward it: then both ways are over anyway).
    if (!client_shut_ && client_hung_up()) return finish(true);  // client_closed
    // Half-close: the end of the stream toward the node; the node may still send.
    client_eof_ = true;
    update_reading();
    if (!ended_) stream_->shutdown_write();
    return;
  }
  if (n < 0) return finish(true);  // the client reset or closed: client_closed
  if (!ended_) stream_->write(std::string_view(buf->base, static_cast<size_t>(n)));
  update_reading();
}

bool StreamSplice::client_hung_up() const {
  uv_os_fd_t fd = -1;
  if (uv_fileno(pipe_.as_handle(), &fd) != 0) return true;
  pollfd p{fd, POLLOUT, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR)) != 0;
}

// Reads the client while the stream holds at most buffer_ bytes toward the node.
void StreamSplice::update_reading() {
  if (!pipe_) return;
  const bool want = !finished_ && !client_eof_ && !ended_ && stream_->buffered() <= buffer_;
  if (want && !reading_) {
    if (uv_read_start(pipe_.as_stream(), alloc_cb, read_cb) == 0) reading_ = true;
  } else if (!want && reading_) {
    uv_read_stop(pipe_.as_stream());
    reading_ = false;
  }
  update_probe();
}

// A hang-up is told from a half-close only while we have not shut our own
// writing side (after that, the client's half-close hangs the socket up too).
void StreamSplice::update_probe() {
  const bool want = !finished_ && !reading_ && !client_shut_;
  if (want && !probe_timer_.active()) {
    probe_timer_.start(
        kHangupProbeMs,
        [this] {
          if (client_hung_up()) finish(true);  // client_closed
        },
        kHangupProbeMs);
  } else if (!want && probe_timer_.active()) {
    probe_timer_.stop();
  }
}

// --- node -> client -----------------------------------------------------------

void StreamSplice::on_node_data(std::string_view bytes) {
  if (finished_) return;
  write_to_client(bytes, bytes.size());
}

void StreamSplice::write_to_client(std::string_view bytes, size_t consume) {
  size_t sent = 0;
  if (queued_ == 0) {
    // Nothing queued ahead: try the socket now (no request, no callback).
    uv_buf_t b = uv_buf_init(const_cast<char*>(bytes.data()), static_cast<unsigned>(bytes.size()));
    const int rc = uv_try_write(pipe_.as_stream(), &b, 1);
    if (rc < 0 && rc != UV_EAGAIN) return finish(true);
    if (rc > 0) sent = static_cast<size_t>(rc);
  }
  if (sent == bytes.size()) {
    if (consume > 0 && !ended_) stream_->consume(consume);
    return;
  }
  auto* w = new Write;
  w->bytes.assign(bytes.substr(sent));
  w->consume = consume;
  w->req.data = w;
  uv_buf_t b = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
  if (uv_write(&w->req, pipe_.as_stream(), &b, 1, write_cb) != 0) {
    delete w;
    return finish(true);
  }
  queued_ += w->bytes.size();
}

void StreamSplice::write_cb(uv_write_t* req, int status) {
  std::unique_ptr<Write> w(static_cast<Write*>(req->data));
  if (auto* self = UvHandle<uv_pipe_t>::owner<StreamSplice>(req->handle))
    self->on_written(w->bytes.size(), w->consume, status);
}

void StreamSplice::on_written(size_t bytes, size_t consume, int status) {
  queued_ -= bytes;
  if (finished_) return;
  if (status < 0) return finish(true);  // the client is gone: client_closed
  if (consume > 0 && !ended_) stream_->consume(consume);
  maybe_close_client();
}

void StreamSplice::on_node_eof() {
  if (finished_ || client_shut_) return;
  // libuv runs the shutdown after the writes queued before it.
  node_eof_ = true;
  client_shut_ = true;
  update_probe();
  auto* s = new Shutdown;
  s->req.data = s;
  if (uv_shutdown(&s->req, pipe_.as_stream(), shutdown_cb) != 0) delete s;
}

void StreamSplice::shutdown_cb(uv_shutdown_t* req, int) {
  delete static_cast<Shutdown*>(req->data);
}

// --- ends ---------------------------------------------------------------------

void StreamSplice::on_node_end(const std::string& reason) {
  ended_ = true;
  if (finished_) return;
  if (reason == "reset") return finish(false);  // the node reset: the client at once
  // Both ways done ("eof"), or the stream ended under us: the client gets
  // what is queued, then its connection closes.
  close_when_flushed_ = true;
  update_reading();
  maybe_close_client();
}

void StreamSplice::maybe_close_client() {
  if (close_when_flushed_ && queued_ == 0) finish(false);
}

void StreamSplice::finish(bool reset_stream) {
  if (finished_) return;
  finished_ = true;
  reading_ = false;
  probe_timer_.stop();
  pipe_.close();
  if (reset_stream && !ended_) {
    ended_ = true;
    stream_->reset();
  }
  // done_ may destroy this splice and its Stream: not from inside a Stream
  // callback, so on the next turn.
  done_timer_.start(0, [this] {
    auto done = std::move(done_);
    done_ = nullptr;
    if (done) done();
  });
}

}  // namespace connmgr::server
