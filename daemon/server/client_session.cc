#include "server/client_session.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "rpc/json_text.h"
#include "server/socket_server.h"
#include "server/stream_splice.h"

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

// One uv_write under way and the bytes it sends. libuv needs both until it
// calls the write back, and it calls back even after the pipe was closed
// (UV_ECANCELED, while it closes the pipe), by which time the session may be
// gone. So the request lives in a block of its own. While the session is
// open it keeps the block (write_) and reuses it and its buffer for the next
// write; when it closes the pipe with a write under way it lets go of the
// block, and the callback, finding no session behind the pipe (UvHandle nulls
// the pipe's data before uv_close), frees the block itself.
struct ClientSession::Write {
  uv_write_t req{};
  std::string bytes;
};

ClientSession::ClientSession(SocketServer* server, uint64_t id) : server_(server), id_(id) {}

ClientSession::~ClientSession() { release_handles(); }

bool ClientSession::open(uv_loop_t* loop, int fd) {
  read_credentials(fd);
  int rc = pipe_.init(loop, this, uv_pipe_init, 0);
  if (rc == 0) rc = partial_timer_.init(loop);
  if (rc == 0) rc = resume_idle_.init(loop, this, uv_idle_init);
  if (rc == 0) rc = uv_pipe_open(pipe_.get(), fd);
  if (rc != 0) {
    ::close(fd);
    close();
    return false;
  }
  start_reading();
  return true;
}

// Each state's entry work; the one place the state changes.
void ClientSession::set_state(State next) {
  if (state_ == State::kClosed || state_ == next) return;
  state_ = next;
  switch (next) {
    case State::kReading:
      uv_idle_stop(resume_idle_.get());
      start_reading();
      break;
    case State::kBacklogged:
      // in_ starts with whole lines not yet dispatched: nothing in it has
      // been scanned, and no line is half-sent (no partial-request timer).
      scanned_ = 0;
      stop_reading();
      // An idle handle, not a 0 ms timer: libuv runs the idle callbacks once
      // per turn, before it polls for I/O, so the other clients are read
      // between two shares (a timer re-armed at 0 ms would run again in the
      // same pass).
      uv_idle_start(resume_idle_.get(), [](uv_idle_t* h) {
        if (auto* self = UvHandle<uv_idle_t>::owner<ClientSession>(h)) {
          const auto keep = self->shared_from_this();
          self->resume();
        }
      });
      break;
    case State::kDraining:
      stop_reading();
      break;
    case State::kFinishing:
      stop_reading();
      uv_idle_stop(resume_idle_.get());
      break;
    case State::kStreamPending:  // the bytes after the request line are the
    case State::kStreaming:      // stream's: kept, then the splice's to read
      stop_reading();
      uv_idle_stop(resume_idle_.get());
      break;
    case State::kClosed: {
      auto hooks = std::move(close_hooks_);
      close_hooks_.clear();
      for (auto& [id, hook] : hooks) hook();
      release_handles();
      // The server drops its reference here: whoever called in (a libuv
      // callback, the dispatcher's answer, the server) holds one.
      if (server_) server_->on_session_closed(id_);
      break;
    }
  }
}

void ClientSession::start_reading() {
  if (pipe_) uv_read_start(pipe_.as_stream(), alloc_chunk, on_read_cb);
}

void ClientSession::stop_reading() {
  if (pipe_) uv_read_stop(pipe_.as_stream());
  partial_timer_.stop();
}

void ClientSession::release_handles() {
  // A write under way keeps its block until libuv calls it back (Write).
  if (writing_) {
    static_cast<void>(write_.release());
    writing_ = false;
  }
  pipe_.close();
  partial_timer_.close();
  resume_idle_.close();
  splice_.reset();
  stream_.reset();
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

void ClientSession::on_read_cb(uv_stream_t* stream, ssize_t n, const uv_buf_t* buf) {
  auto* self = UvHandle<uv_pipe_t>::owner<ClientSession>(stream);
  if (!self) return;
  const auto keep = self->shared_from_this();
  self->on_read(n, buf);
}

void ClientSession::on_read(ssize_t n, const uv_buf_t* buf) {
  if (state_ != State::kReading) return;
  if (n == 0) return;  // EAGAIN
  if (n < 0) {
    if (n == UV_EOF) return on_eof();
    close();  // reset or error: nobody is there to read answers
    return;
  }
  corked_ = true;
  const Cut cut = take_chunk(std::string_view(buf->base, static_cast<size_t>(n)));
  if (!cut.stopped) after_cut(cut);
  corked_ = false;
  after_queue();
  maybe_hand_over();
}

// Serves the whole lines of a read chunk; keeps the start of an unfinished
// one in in_.
ClientSession::Cut ClientSession::take_chunk(std::string_view chunk) {
  if (in_.empty()) {
    // The common case: whole lines straight from the read buffer, only the
    // tail of an unfinished line is copied.
    const Cut cut = take_lines(chunk, 0);
    if (!cut.stopped && cut.consumed < chunk.size()) {
      in_.assign(chunk.substr(cut.consumed));
      scanned_ = in_.size();
    }
    return cut;
  }
  in_.append(chunk);
  // Only the new bytes can hold the '\n' that ends the line.
  const Cut cut = take_lines(in_, scanned_);
  if (!cut.stopped) {
    in_.erase(0, cut.consumed);
    scanned_ = in_.size();
    release_if_large(in_);
  }
  return cut;
}

// After a chunk's lines were served: lines left for the next turn, a line
// grown over the limit, or a new unfinished line with its own time limit.
void ClientSession::after_cut(const Cut& cut) {
  if (state_ == State::kStreamPending) return;  // in_ holds the stream's first bytes
  if (cut.lines_left)
    set_state(State::kBacklogged);
  else if (server_ && in_.size() > server_->limits().max_request_bytes)
    refuse_over_long();
  else if (cut.consumed > 0 || !partial_timer_.active())
    arm_partial_timer();  // a new line began: its own time limit
}

// The idle handle's call, once per turn while backlogged: the next share of
// the lines waiting.
void ClientSession::resume() {
  if (state_ != State::kBacklogged) {
    uv_idle_stop(resume_idle_.get());
    return;
  }
  corked_ = true;
  const Cut cut = take_lines(in_, 0);
  if (!cut.stopped) {
    in_.erase(0, cut.consumed);
    if (state_ == State::kStreamPending) {
      // in_ holds the stream's first bytes.
    } else if (cut.lines_left) {
      scanned_ = 0;  // still backlogged: the next share on the next turn
    } else {
      scanned_ = in_.size();
      release_if_large(in_);
      if (server_ && in_.size() > server_->limits().max_request_bytes) {
        refuse_over_long();
      } else {
        set_state(State::kReading);
        arm_partial_timer();
      }
    }
  }
  corked_ = false;
  after_queue();
  maybe_hand_over();
}

ClientSession::Cut ClientSession::take_lines(std::string_view data, size_t scan_from) {
  const size_t limit = server_ ? server_->limits().max_request_bytes : kReadChunk;
  Cut cut;
  size_t pos = scan_from;
  size_t dispatched = 0;
  while (pos < data.size()) {
    if (dispatched == kLinesPerTurn) {
      // More may follow: they wait for the next turn (backlogged).
      cut.lines_left = memchr(data.data() + pos, '\n', data.size() - pos) != nullptr;
      if (cut.lines_left) break;
    }
    const void* hit = memchr(data.data() + pos, '\n', data.size() - pos);
    if (!hit) break;
    const size_t end = static_cast<size_t>(static_cast<const char*>(hit) - data.data());
    // The line is a view with its length: a NUL byte in it is the parser's
    // to refuse, not an end.
    std::string_view line = data.substr(cut.consumed, end - cut.consumed);
    cut.consumed = pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > limit) {
      refuse_over_long();
      cut.stopped = true;
      return cut;
    }
    if (is_blank(line)) continue;
    in_take_ = true;
    dispatch(line);
    in_take_ = false;
    ++dispatched;
    if (state_ == State::kFinishing || state_ == State::kClosed) {
      cut.stopped = true;
      return cut;
    }
    if (state_ == State::kStreamPending || state_ == State::kStreaming) {
      cut.lines_left = false;  // what follows is the stream's, not lines
      return cut;
    }
  }
  return cut;
}

void ClientSession::on_eof() {
  // Half-close: serve a last line ended by EOF, then close once every answer
  // owed has been written (maybe_finish).
  set_state(State::kDraining);
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
  if (in_.empty() || !server_ || state_ != State::kReading) {
    partial_timer_.stop();
    return;
  }
  const auto ms = server_->limits().partial_request_timeout.count();
  if (ms <= 0) return;
  partial_timer_.start(static_cast<uint64_t>(ms), [this] {
    const auto keep = shared_from_this();
    on_partial_timeout();
  });
}

void ClientSession::on_partial_timeout() {
  const auto ms = server_ ? server_->limits().partial_request_timeout.count() : 0;
  refuse(rpc::Dispatcher::error_line(
      rpc::kInvalidRequest, "invalid request: a request line was left unfinished for " +
                                std::to_string(ms) + " ms; closing"));
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
  server_->dispatcher().handle_line(line, shared_from_this(), [weak](std::optional<std::string> answer) {
    if (auto s = weak.lock()) s->on_answer(std::move(answer));
  });
}

void ClientSession::on_answer(std::optional<std::string> answer) {
  if (owed_ > 0) --owed_;
  if (state_ == State::kClosed || state_ == State::kStreaming) return;
  if (state_ == State::kStreamPending) {
    if (answer) queue_line(*answer);
    if (state_ == State::kClosed) return;
    if (stream_) {
      answered_stream_ = true;
      maybe_hand_over();
    } else {
      give_back();
    }
    return;
  }
  if (answer) queue_line(*answer);
  after_queue();
  maybe_finish();
}

size_t ClientSession::queued_bytes() const {
  return out_.size() + (writing_ ? write_->bytes.size() : 0);
}

bool ClientSession::queue_over_limit() const {
  return server_ && queued_bytes() > server_->limits().max_output_bytes;
}

void ClientSession::notify(const rpc::json& notification) {
  if (state_ == State::kFinishing || state_ == State::kClosed || state_ == State::kStreaming) return;
  rpc::append_json(out_, notification);
  out_.push_back('\n');
  if (queue_over_limit()) {
    close();
    return;
  }
  after_queue();
}

void ClientSession::queue_line(std::string_view line) {
  if (state_ == State::kClosed || state_ == State::kStreaming) return;
  out_.append(line);
  out_.push_back('\n');
  // A client that does not read its answers is cut off rather than let its
  // queue grow without bound.
  if (queue_over_limit()) close();
}

void ClientSession::after_queue() {
  if (corked_ || writing_ || out_.empty()) return;
  if (state_ == State::kClosed || state_ == State::kStreaming) return;
  // The answer of a streams.open goes out with the splice's first write.
  if (answered_stream_) return;
  start_write();
}

void ClientSession::start_write() {
  // Most answers fit the socket's buffer: uv_try_write sends them at once,
  // with no write request, no callback on a later loop turn, and no POLLOUT
  // stop in libuv (each uv_write costs an epoll_ctl MOD when it completes).
  // What the kernel does not take goes out through uv_write as before.
  uv_buf_t whole = uv_buf_init(out_.data(), static_cast<unsigned>(out_.size()));
  const int sent = uv_try_write(pipe_.as_stream(), &whole, 1);
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
  // Everything still queued goes out in one write; out_ and the block's
  // buffer trade places, so a busy client allocates nothing here.
  if (!write_) write_ = std::make_unique<Write>();
  write_->bytes.swap(out_);
  out_.clear();
  if (sent > 0) write_->bytes.erase(0, static_cast<size_t>(sent));
  write_->req.data = write_.get();
  uv_buf_t b = uv_buf_init(write_->bytes.data(), static_cast<unsigned>(write_->bytes.size()));
  writing_ = true;
  if (uv_write(&write_->req, pipe_.as_stream(), &b, 1, on_write_cb) != 0) {
    writing_ = false;
    close();
  }
}

void ClientSession::on_write_cb(uv_write_t* req, int status) {
  auto* self = UvHandle<uv_pipe_t>::owner<ClientSession>(req->handle);
  if (!self) {
    // The pipe was closed with this write under way: the session let go of
    // the block (release_handles) and may be gone.
    delete static_cast<Write*>(req->data);
    return;
  }
  const auto keep = self->shared_from_this();
  self->on_write_done(status);
}

void ClientSession::on_write_done(int status) {
  writing_ = false;
  write_->bytes.clear();
  release_if_large(write_->bytes);
  if (status < 0) {
    close();
    return;
  }
  if (answered_stream_) {
    maybe_hand_over();
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
  if (state_ == State::kClosed || writing_ || !out_.empty()) return;
  if (state_ == State::kFinishing || (state_ == State::kDraining && owed_ == 0)) close();
}

void ClientSession::refuse(const std::string& line) {
  if (state_ == State::kFinishing || state_ == State::kClosed) return;
  if (state_ == State::kStreaming || state_ == State::kStreamPending) return close();
  set_state(State::kFinishing);
  in_.clear();
  queue_line(line);
  after_queue();
  maybe_finish();
}

void ClientSession::close_after_flush() {
  if (state_ == State::kClosed) return;
  // A stream's bytes have no line to flush: the connection ends now.
  if (state_ == State::kStreaming || state_ == State::kStreamPending) return close();
  set_state(State::kFinishing);
  after_queue();
  maybe_finish();
}

void ClientSession::close() { set_state(State::kClosed); }

// --- raw streams (streams.open) ---------------------------------------------

bool ClientSession::claim_raw_alone() {
  // This request is the one owed; any other unanswered one would have its
  // answer land in the middle of the stream's bytes.
  if (owed_ != 1) return false;
  if (state_ != State::kReading && state_ != State::kBacklogged && state_ != State::kDraining)
    return false;
  claimed_from_ = state_;
  set_state(State::kStreamPending);
  return true;
}

void ClientSession::attach_stream(std::unique_ptr<rpc::RawStream> stream, size_t buffer) {
  if (state_ != State::kStreamPending) return;  // dropped: the Stream resets
  stream_ = std::move(stream);
  stream_buffer_ = buffer;
}

void ClientSession::maybe_hand_over() {
  if (state_ != State::kStreamPending || !answered_stream_ || in_take_ || writing_) return;
  answered_stream_ = false;
  uv_loop_t* loop = pipe_->loop;
  std::weak_ptr<ClientSession> weak = weak_from_this();
  set_state(State::kStreaming);
  splice_ = std::make_unique<StreamSplice>(loop, std::move(pipe_), std::move(stream_), stream_buffer_,
                                           [weak] {
                                             if (auto s = weak.lock()) s->close();
                                           });
  std::string answer = std::move(out_);
  std::string first = std::move(in_);
  out_.clear();
  in_.clear();
  scanned_ = 0;
  splice_->start(std::move(answer), std::move(first));
}

void ClientSession::give_back() {
  stream_.reset();
  answered_stream_ = false;
  const State back = claimed_from_;
  if (in_take_ || back == State::kDraining) {
    // Answered from inside the dispatch (take_lines goes on with the chunk),
    // or after EOF (the end is served as before).
    set_state(back);
    if (back == State::kDraining) {
      after_queue();
      maybe_finish();
    }
    return;
  }
  // The kept bytes are read as lines again: whole ones on the next turns.
  scanned_ = 0;
  if (memchr(in_.data(), '\n', in_.size()) != nullptr) {
    set_state(State::kBacklogged);
  } else {
    set_state(State::kReading);
    scanned_ = in_.size();
    if (server_ && in_.size() > server_->limits().max_request_bytes) refuse_over_long();
    else arm_partial_timer();
  }
  after_queue();
}

}  // namespace connmgr::server
