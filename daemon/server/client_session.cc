#include "server/client_session.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "rpc/json_text.h"
#include "server/socket_server.h"

namespace connmgr::server {

namespace {

constexpr size_t kReadChunk = 64 * 1024;
// Requests one session dispatches before the loop turns again. A 64 KiB read
// holds ~700 pipelined connects of ~40 us each: dispatched at once they held
// every other client (and every dial's completion) for tens of milliseconds.
// The rest waits for the next turn, reading paused, so that a busy client
// cannot starve the others; 16 keeps a turn near a millisecond.
constexpr size_t kLinesPerTurn = 16;
// Buffers grown past this by one large request or answer are given back
// afterwards, so that an idle client does not keep megabytes.
constexpr size_t kKeepCapacity = 256 * 1024;

bool is_blank(std::string_view line) {
  for (char c : line)
    if (c != ' ' && c != '\t' && c != '\r') return false;
  return true;
}

void release_if_large(std::string& s) {
  if (s.empty() && s.capacity() > kKeepCapacity) std::string().swap(s);
}

}  // namespace

ClientSession::ClientSession(SocketServer* server, uint64_t id) : server_(server), id_(id) {}

ClientSession::~ClientSession() = default;

bool ClientSession::open(uv_loop_t* loop, int fd) {
  uv_pipe_init(loop, &pipe_, 0);
  pipe_.data = this;
  uv_timer_init(loop, &partial_timer_);
  partial_timer_.data = this;
  uv_idle_init(loop, &resume_idle_);
  resume_idle_.data = this;
  open_handles_ = 3;
  self_ = shared_from_this();
  read_credentials(fd);
  if (uv_pipe_open(&pipe_, fd) != 0) {
    ::close(fd);
    close();
    return false;
  }
  uv_read_start(reinterpret_cast<uv_stream_t*>(&pipe_), alloc_chunk,
                [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
                  static_cast<ClientSession*>(s->data)->on_read(n, buf);
                });
  return true;
}

void ClientSession::alloc_chunk(uv_handle_t*, size_t, uv_buf_t* buf) {
  // Each chunk is consumed (or its tail copied into the session) before the
  // next read, so one scratch buffer serves every client.
  static char scratch[kReadChunk];
  *buf = uv_buf_init(scratch, sizeof scratch);
}

void ClientSession::read_credentials(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    creds_.pid = cred.pid;
    creds_.uid = cred.uid;
    creds_.gid = cred.gid;
  }
  // Supplementary groups as the kernel saw them at connect time (Linux 4.13+);
  // without them the access check falls back to /proc and NSS.
  std::vector<gid_t> groups(64);
  len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
  int rc = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len);
  if (rc != 0 && errno == ERANGE) {
    groups.resize(len / sizeof(gid_t));
    rc = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len);
  }
  if (rc == 0) {
    groups.resize(len / sizeof(gid_t));
    creds_.groups = std::move(groups);
    creds_.groups_known = true;
  }
}

void ClientSession::on_read(ssize_t n, const uv_buf_t* buf) {
  if (closed_ || finishing_) return;
  if (n == 0) return;  // EAGAIN
  if (n < 0) {
    if (n == UV_EOF) return on_eof();
    close();  // reset or error: nobody is there to read answers
    return;
  }
  const std::string_view chunk(buf->base, static_cast<size_t>(n));
  corked_ = true;
  size_t consumed;
  if (in_.empty()) {
    // The common case: whole lines straight from the read buffer, only the
    // tail of an unfinished line is copied.
    consumed = take_lines(chunk, 0);
    if (consumed != std::string_view::npos && consumed < chunk.size()) {
      in_.assign(chunk.substr(consumed));
      scanned_ = in_.size();
    }
  } else {
    in_.append(chunk);
    // Only the new bytes can hold the '\n' that ends the line.
    consumed = take_lines(in_, scanned_);
    if (consumed != std::string_view::npos) {
      in_.erase(0, consumed);
      scanned_ = in_.size();
      release_if_large(in_);
    }
  }
  if (consumed != std::string_view::npos) {
    if (backlog_)
      pause_for_backlog();
    else if (server_ && in_.size() > server_->limits().max_request_bytes)
      refuse_over_long();
    else if (consumed > 0 || !uv_is_active(reinterpret_cast<uv_handle_t*>(&partial_timer_)))
      arm_partial_timer();  // a new line began: its own time limit
  }
  corked_ = false;
  after_queue();
}

void ClientSession::pause_for_backlog() {
  // in_ starts with whole lines not yet dispatched: nothing in it has been
  // scanned, and no line is half-sent (no partial-request timer).
  scanned_ = 0;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&pipe_));
  uv_timer_stop(&partial_timer_);
  // An idle handle, not a 0 ms timer: libuv runs the idle callbacks once
  // per turn, before it polls for I/O, so the other clients are read between
  // two shares (a timer re-armed at 0 ms would run again in the same pass).
  uv_idle_start(&resume_idle_, [](uv_idle_t* h) { static_cast<ClientSession*>(h->data)->resume(); });
}

void ClientSession::resume() {
  uv_idle_stop(&resume_idle_);
  if (closed_ || finishing_) return;
  corked_ = true;
  const size_t consumed = take_lines(in_, 0);
  if (consumed != std::string_view::npos) {
    in_.erase(0, consumed);
    if (backlog_) {
      pause_for_backlog();
    } else {
      scanned_ = in_.size();
      release_if_large(in_);
      if (server_ && in_.size() > server_->limits().max_request_bytes) {
        refuse_over_long();
      } else {
        uv_read_start(reinterpret_cast<uv_stream_t*>(&pipe_), alloc_chunk,
                      [](uv_stream_t* st, ssize_t n, const uv_buf_t* buf) {
                        static_cast<ClientSession*>(st->data)->on_read(n, buf);
                      });
        arm_partial_timer();
      }
    }
  }
  corked_ = false;
  after_queue();
}

size_t ClientSession::take_lines(std::string_view data, size_t scan_from) {
  const size_t limit = server_ ? server_->limits().max_request_bytes : kReadChunk;
  size_t start = 0;
  size_t pos = scan_from;
  size_t dispatched = 0;
  backlog_ = false;
  while (pos < data.size()) {
    if (dispatched == kLinesPerTurn) {
      // More may follow: they wait for the next turn (pause_for_backlog).
      backlog_ = memchr(data.data() + pos, '\n', data.size() - pos) != nullptr;
      if (backlog_) break;
    }
    const void* hit = memchr(data.data() + pos, '\n', data.size() - pos);
    if (!hit) break;
    const size_t end = static_cast<size_t>(static_cast<const char*>(hit) - data.data());
    std::string_view line = data.substr(start, end - start);
    start = pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > limit) {
      refuse_over_long();
      return std::string_view::npos;
    }
    if (is_blank(line)) continue;
    dispatch(line);
    ++dispatched;
    if (closed_ || finishing_) return std::string_view::npos;
  }
  return start;
}

void ClientSession::on_eof() {
  // Half-close: serve a last line ended by EOF, then close once every answer
  // owed has been written (maybe_finish).
  eof_ = true;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&pipe_));
  uv_timer_stop(&partial_timer_);
  if (!in_.empty()) {
    std::string last = std::move(in_);
    in_.clear();
    scanned_ = 0;
    if (last.back() == '\r') last.pop_back();
    if (!is_blank(last)) dispatch(last);
  }
  maybe_finish();
}

void ClientSession::arm_partial_timer() {
  if (in_.empty() || !server_ || eof_) {
    uv_timer_stop(&partial_timer_);
    return;
  }
  const auto ms = server_->limits().partial_request_timeout.count();
  if (ms <= 0) return;
  uv_timer_start(
      &partial_timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<ClientSession*>(t->data);
        const auto s = self->server_ ? self->server_->limits().partial_request_timeout.count() : 0;
        self->refuse(rpc::Dispatcher::error_line(
            rpc::kInvalidRequest, "invalid request: a request line was left unfinished for " +
                                      std::to_string(s) + " ms; closing"));
      },
      static_cast<uint64_t>(ms), 0);
}

void ClientSession::refuse_over_long() {
  const size_t limit = server_ ? server_->limits().max_request_bytes : 0;
  refuse(rpc::Dispatcher::error_line(
      rpc::kInvalidRequest, "invalid request: request line over the limit of " +
                                std::to_string(limit) + " bytes (max_request_bytes); closing"));
}

void ClientSession::dispatch(std::string_view line) {
  if (!server_) return;
  ++owed_;
  server_->count_request();
  std::weak_ptr<ClientSession> weak = weak_from_this();
  server_->dispatcher().handle_line(line, self_, [weak](std::optional<std::string> answer) {
    if (auto s = weak.lock()) s->on_answer(std::move(answer));
  });
}

void ClientSession::on_answer(std::optional<std::string> answer) {
  if (owed_ > 0) --owed_;
  if (closed_) return;
  if (answer) queue_line(*answer);
  after_queue();
  maybe_finish();
}

void ClientSession::notify(const rpc::json& notification) {
  if (closed_ || finishing_) return;
  rpc::append_json(out_, notification);
  out_.push_back('\n');
  const size_t limit = server_ ? server_->limits().max_output_bytes : SIZE_MAX;
  if (out_.size() + in_flight_.size() > limit) {
    close();
    return;
  }
  after_queue();
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
  }
}

void ClientSession::after_queue() {
  if (!corked_ && !writing_ && !closed_ && !out_.empty()) start_write();
}

void ClientSession::start_write() {
  // Most answers fit the socket's buffer: uv_try_write sends them at once,
  // with no write request, no callback on a later loop turn, and no POLLOUT
  // stop in libuv (each uv_write costs an epoll_ctl MOD when it completes).
  // What the kernel does not take goes out through uv_write as before.
  uv_stream_t* stream = reinterpret_cast<uv_stream_t*>(&pipe_);
  uv_buf_t whole = uv_buf_init(out_.data(), static_cast<unsigned>(out_.size()));
  const int sent = uv_try_write(stream, &whole, 1);
  if (sent < 0 && sent != UV_EAGAIN) {
    close();
    return;
  }
  if (sent == static_cast<int>(out_.size())) {
    out_.clear();
    release_if_large(out_);
    maybe_finish();
    return;
  }
  // Everything still queued goes out in one write; out_ and in_flight_
  // trade buffers, so a busy client allocates nothing here.
  in_flight_.swap(out_);
  out_.clear();
  if (sent > 0) in_flight_.erase(0, static_cast<size_t>(sent));
  writing_ = true;
  write_req_.data = this;
  uv_buf_t b = uv_buf_init(in_flight_.data(), static_cast<unsigned>(in_flight_.size()));
  const int rc = uv_write(&write_req_, stream, &b, 1,
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
  release_if_large(in_flight_);
  if (status < 0 || closed_) {
    close();
    return;
  }
  if (!out_.empty()) {
    start_write();
    return;
  }
  release_if_large(out_);
  maybe_finish();
}

void ClientSession::maybe_finish() {
  if (closed_ || writing_ || !out_.empty()) return;
  if (finishing_ || (eof_ && owed_ == 0)) close();
}

void ClientSession::refuse(const std::string& line) {
  if (closed_ || finishing_) return;
  finishing_ = true;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&pipe_));
  uv_timer_stop(&partial_timer_);
  uv_idle_stop(&resume_idle_);
  in_.clear();
  queue_line(line);
  after_queue();
  maybe_finish();
}

void ClientSession::close_after_flush() {
  if (closed_) return;
  finishing_ = true;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&pipe_));
  uv_timer_stop(&partial_timer_);
  uv_idle_stop(&resume_idle_);
  after_queue();
  maybe_finish();
}

void ClientSession::close() {
  if (closed_) return;
  closed_ = true;
  auto hooks = std::move(close_hooks_);
  close_hooks_.clear();
  for (auto& h : hooks) h();
  auto on_closed = [](uv_handle_t* h) {
    static_cast<ClientSession*>(h->data)->on_handle_closed();
  };
  uv_close(reinterpret_cast<uv_handle_t*>(&pipe_), on_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&partial_timer_), on_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&resume_idle_), on_closed);
}

void ClientSession::on_handle_closed() {
  if (--open_handles_ > 0) return;
  if (server_) server_->on_session_closed(id_);
  auto keep = std::move(self_);  // may destroy this at scope end
}

}  // namespace connmgr::server
