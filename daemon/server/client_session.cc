#include "server/client_session.h"

#include <sys/socket.h>

#include "server/socket_server.h"

namespace connmgr::server {

namespace {
constexpr size_t kReadChunk = 64 * 1024;
}

ClientSession::ClientSession(SocketServer* server, uint64_t id) : server_(server), id_(id) {}

ClientSession::~ClientSession() = default;

bool ClientSession::accept(uv_stream_t* listener) {
  uv_loop_t* loop = listener->loop;
  uv_pipe_init(loop, &pipe_, 0);
  pipe_.data = this;
  uv_timer_init(loop, &partial_timer_);
  partial_timer_.data = this;
  open_handles_ = 2;
  self_ = shared_from_this();
  if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(&pipe_)) != 0) {
    close();
    return false;
  }
  uv_os_fd_t fd;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&pipe_), &fd) == 0) {
    struct ucred cred {};
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
      creds_.pid = cred.pid;
      creds_.uid = cred.uid;
      creds_.gid = cred.gid;
    }
  }
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&pipe_),
      [](uv_handle_t*, size_t, uv_buf_t* buf) {
        // Input is copied into the session's buffer at once, so one scratch
        // buffer serves every client.
        static char scratch[kReadChunk];
        *buf = uv_buf_init(scratch, sizeof scratch);
      },
      [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
        static_cast<ClientSession*>(s->data)->on_read(n, buf);
      });
  return true;
}

void ClientSession::on_read(ssize_t n, const uv_buf_t* buf) {
  if (closed_) return;
  if (n > 0) {
    in_.append(buf->base, static_cast<size_t>(n));
    process_input();
    return;
  }
  if (n == 0) return;
  if (n != UV_EOF) {
    close();  // reset or error: nobody is there to read answers
    return;
  }
  // Half-close: serve a last line ended by EOF, then close once every answer
  // owed has been written.
  eof_ = true;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&pipe_));
  uv_timer_stop(&partial_timer_);
  if (!in_.empty() && !finishing_) {
    std::string last = std::move(in_);
    in_.clear();
    scanned_ = 0;
    if (!last.empty() && last.back() == '\r') last.pop_back();
    if (last.find_first_not_of(" \t\r") != std::string::npos) dispatch(last);
  }
  maybe_finish();
}

void ClientSession::process_input() {
  const size_t limit = server_ ? server_->limits().max_request_bytes : kReadChunk;
  size_t start = 0;
  for (;;) {
    const size_t nl = in_.find('\n', std::max(start, scanned_));
    if (nl == std::string::npos) break;
    std::string_view line(in_.data() + start, nl - start);
    start = nl + 1;
    scanned_ = start;
    if (line.size() > limit) {
      refuse(rpc::Dispatcher::error_line(
          -32600, "invalid request: request line over " + std::to_string(limit) + " bytes"));
      return;
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;  // blank line
    dispatch(line);
    if (closed_ || finishing_) return;
  }
  if (start > 0) {
    in_.erase(0, start);
    scanned_ = 0;
  }
  scanned_ = in_.size();
  if (in_.size() > limit) {
    refuse(rpc::Dispatcher::error_line(
        -32600, "invalid request: request line over " + std::to_string(limit) + " bytes"));
    return;
  }
  arm_partial_timer();
}

void ClientSession::arm_partial_timer() {
  if (in_.empty() || !server_) {
    uv_timer_stop(&partial_timer_);
    return;
  }
  if (uv_is_active(reinterpret_cast<uv_handle_t*>(&partial_timer_))) return;
  const auto ms = server_->limits().partial_request_timeout.count();
  if (ms <= 0) return;
  uv_timer_start(
      &partial_timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<ClientSession*>(t->data);
        self->refuse(rpc::Dispatcher::error_line(
            -32600, "invalid request: a partial request line stalled; closing"));
      },
      static_cast<uint64_t>(ms), 0);
}

void ClientSession::dispatch(std::string_view line) {
  if (!server_) return;
  ++owed_;
  std::weak_ptr<ClientSession> weak = weak_from_this();
  server_->dispatcher().handle_line(line, self_, [weak](std::optional<std::string> answer) {
    if (auto s = weak.lock()) s->on_answer(std::move(answer));
  });
}

void ClientSession::on_answer(std::optional<std::string> answer) {
  if (owed_ > 0) --owed_;
  if (answer && !closed_) queue_line(*answer);
  maybe_finish();
}

void ClientSession::notify(const rpc::json& notification) {
  if (closed_ || finishing_) return;
  queue_line(notification.dump(-1, ' ', false, rpc::json::error_handler_t::replace));
}

void ClientSession::queue_line(std::string_view line) {
  if (closed_) return;
  out_.append(line);
  out_.push_back('\n');
  const size_t limit = server_ ? server_->limits().max_output_bytes : SIZE_MAX;
  if (out_.size() + in_flight_.size() > limit) {
    // A client that does not read its answers is cut off rather than let
    // its queue grow without bound.
    close();
    return;
  }
  if (!writing_) start_write();
}

void ClientSession::start_write() {
  if (out_.empty() || closed_) return;
  // Everything queued since the last write goes out in one write.
  in_flight_.swap(out_);
  out_.clear();
  writing_ = true;
  write_req_.data = this;
  uv_buf_t b = uv_buf_init(in_flight_.data(), static_cast<unsigned>(in_flight_.size()));
  int rc = uv_write(&write_req_, reinterpret_cast<uv_stream_t*>(&pipe_), &b, 1,
                    [](uv_write_t* req, int status) {
                      static_cast<ClientSession*>(req->data)->on_write_done(status);
                    });
  if (rc != 0) {
    writing_ = false;
    close();
  }
}

void ClientSession::on_write_done(int status) {
  writing_ = false;
  in_flight_.clear();
  if (status < 0) {
    close();
    return;
  }
  if (!out_.empty()) {
    start_write();
    return;
  }
  maybe_finish();
}

void ClientSession::maybe_finish() {
  if (closed_ || writing_ || !out_.empty()) return;
  if (finishing_ || (eof_ && owed_ == 0)) close();
}

void ClientSession::refuse(const std::string& line) {
  if (closed_) return;
  finishing_ = true;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&pipe_));
  uv_timer_stop(&partial_timer_);
  in_.clear();
  queue_line(line);
  maybe_finish();
}

void ClientSession::close_after_flush() {
  if (closed_) return;
  finishing_ = true;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&pipe_));
  uv_timer_stop(&partial_timer_);
  maybe_finish();
}

void ClientSession::close() {
  if (closed_) return;
  closed_ = true;
  auto hooks = std::move(close_hooks_);
  close_hooks_.clear();
  for (auto& h : hooks) h();
  auto on_closed = [](uv_handle_t* h) { static_cast<ClientSession*>(h->data)->on_handle_closed(); };
  uv_close(reinterpret_cast<uv_handle_t*>(&pipe_), on_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&partial_timer_), on_closed);
}

void ClientSession::on_handle_closed() {
  if (--open_handles_ > 0) return;
  if (server_) server_->on_session_closed(id_);
  auto keep = std::move(self_);  // may destroy this at scope end
}

}  // namespace connmgr::server
