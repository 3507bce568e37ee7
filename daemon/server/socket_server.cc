#include "server/socket_server.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <utility>
#include <vector>

#include "server/client_session.h"

namespace connmgr::server {

namespace {

// Connections taken per readiness callback, so that a flood of connects
// cannot hold the loop away from the clients already connected.
constexpr int kAcceptBurst = 64;

Error server_error(const std::string& message) { return Error::internal(message); }

std::string errno_text(int err) { return std::string(strerror(err)); }

enum class Probe { kLive, kStale, kGone, kUnknown };

// Does a process answer on the socket file at `path`? A non-blocking
// connect: a live server with a full backlog says EAGAIN rather than block.
Probe probe_socket(const std::string& path, int& err) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    err = errno;
    return Probe::kUnknown;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  err = rc == 0 ? 0 : errno;
  ::close(fd);
  if (rc == 0 || err == EAGAIN || err == EINPROGRESS) return Probe::kLive;
  if (err == ECONNREFUSED) return Probe::kStale;
  if (err == ENOENT) return Probe::kGone;
  return Probe::kUnknown;
}

// libuv 1.44's uv_pipe_bind silently truncates a long path, and so would a
// careless copy into sun_path: check first.
Status check_path_length(const std::string& path) {
  constexpr size_t kMax = sizeof(sockaddr_un::sun_path) - 1;
  if (path.empty()) return server_error("socket path is empty");
  if (path.size() > kMax)
    return server_error("socket path is " + std::to_string(path.size()) +
                        " bytes, over the limit of " + std::to_string(kMax) +
                        " of a Unix socket address; choose a shorter one: " + path);
  return ok_status();
}

// A socket file left at `path` by a daemon that died is removed; one that a
// process answers on, or a file that is not a socket, is an error.
Status clear_stale_socket(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return ok_status();
  if (!S_ISSOCK(st.st_mode))
    return server_error("socket path exists and is not a socket; remove it or choose another: " + path);
  int err = 0;
  switch (probe_socket(path, err)) {
    case Probe::kLive:
      return server_error("another connmgrd is serving " + path + "; refusing to start a second one");
    case Probe::kStale:
      ::unlink(path.c_str());  // left by a daemon that died
      break;
    case Probe::kGone:
      break;
    case Probe::kUnknown:
      return server_error("cannot tell whether " + path + " is in use: " + errno_text(err));
  }
  return ok_status();
}

// A new socket bound to `path`, the file private to this user until the
// caller sets its mode.
Result<int> bind_private(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return server_error("cannot create the RPC socket: " + errno_text(errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  // bind() creates the file with the umask's mode: keep it private until
  // the chmod, so nobody connects through a wider window.
  const mode_t old_umask = ::umask(0177);
  const int bound = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  const int bind_err = errno;
  ::umask(old_umask);
  if (bound != 0) {
    ::close(fd);
    return server_error("cannot bind the RPC socket " + path + ": " + errno_text(bind_err));
  }
  return fd;
}

}  // namespace

SocketServer::SocketServer(uv_loop_t* loop, rpc::Dispatcher& dispatcher, ServerLimits limits)
    : loop_(loop), dispatcher_(dispatcher), limits_(limits) {}

SocketServer::~SocketServer() {
  stop_listening();
  for (auto& [id, session] : clients_) {
    session->detach_server();
    session->close();
  }
  clients_.clear();
}

Status SocketServer::listen_path(const std::string& path, mode_t mode,
                                 std::optional<gid_t> group) {
  if (listening()) return server_error("the RPC server is already listening");
  if (Status s = check_path_length(path); !s.ok()) return s;
  if (Status s = clear_stale_socket(path); !s.ok()) return s;
  Result<int> bound = bind_private(path);
  if (!bound) return bound.error();
  const int fd = *bound;
  auto fail = [&](const std::string& what) {
    const int err = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return server_error(what + path + ": " + errno_text(err));
  };
  struct stat st {};
  if (::chmod(path.c_str(), mode) != 0) return fail("cannot set the mode of ");
  if (group && ::chown(path.c_str(), static_cast<uid_t>(-1), *group) != 0)
    return fail("cannot set the group (" + std::to_string(*group) + ") of ");
  if (::stat(path.c_str(), &st) != 0) return fail("cannot stat ");
  if (::listen(fd, SOMAXCONN) != 0) return fail("cannot listen on ");
  path_dev_ = st.st_dev;
  path_ino_ = st.st_ino;
  path_ = path;
  Status s = start_polling(fd);
  if (!s.ok()) {
    ::unlink(path.c_str());
    path_.clear();
  }
  return s;
}

Status SocketServer::listen_fd(int fd) {
  if (listening()) {
    ::close(fd);
    return server_error("the RPC server is already listening");
  }
  int accepting = 0;
  socklen_t len = sizeof accepting;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) != 0 || !accepting) {
    const int err = errno;
    ::close(fd);
    return server_error("the socket passed by systemd (fd " + std::to_string(fd) +
                        ") is not a listening socket" + (accepting ? ": " + errno_text(err) : ""));
  }
  const int flags = ::fcntl(fd, F_GETFD);
  if (flags >= 0) ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
  return start_polling(fd);
}

Status SocketServer::start_polling(int fd) {
  // uv_poll_init_socket also sets O_NONBLOCK.
  int rc = listen_poll_.init(loop_, this, uv_poll_init_socket, fd);
  if (rc == 0) rc = accept_pause_.init(loop_);
  if (rc != 0) {
    listen_poll_.close();
    ::close(fd);
    return server_error(std::string("cannot watch the RPC socket: ") + uv_strerror(rc));
  }
  listen_fd_ = fd;
  watch_listener();
  return ok_status();
}

void SocketServer::watch_listener() {
  uv_poll_start(listen_poll_.get(), UV_READABLE, [](uv_poll_t* p, int status, int) {
    auto* server = UvHandle<uv_poll_t>::owner<SocketServer>(p);
    if (status < 0 || !server) return;
    server->on_readable();
  });
}

void SocketServer::on_readable() {
  for (int i = 0; i < kAcceptBurst && listening(); ++i) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      add_client(fd);
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    // EMFILE, ENFILE, ENOBUFS, ENOMEM, or worse: the socket stays readable
    // and polling it again at once would spin the loop. Pause instead.
    pause_accepting();
    return;
  }
}

void SocketServer::pause_accepting() {
  ++accept_pauses_;
  uv_poll_stop(listen_poll_.get());
  accept_pause_.start(static_cast<uint64_t>(std::max<int64_t>(1, limits_.accept_pause.count())),
                      [this] { watch_listener(); });
}

void SocketServer::add_client(int fd) {
  ++accepted_total_;
  auto session = std::make_shared<ClientSession>(this, next_id_++);
  if (!session->open(loop_, fd)) return;  // fd closed; the session goes with this scope
  clients_.emplace(session->id(), session);
  if (clients_.size() > limits_.max_clients) {
    session->refuse(rpc::Dispatcher::error_line(
        rpc::kInternalError, "too many clients: the daemon serves at most " +
                                 std::to_string(limits_.max_clients) +
                                 " at once (max_clients); try again later"));
  }
}

void SocketServer::on_session_closed(uint64_t id) { clients_.erase(id); }

void SocketServer::stop_listening() {
  if (!listening()) return;
  // uv_close stops the poll at once, so the descriptor can go now: a second
  // daemon probing the path sees it refused from here on.
  listen_poll_.close();
  accept_pause_.close();
  ::close(std::exchange(listen_fd_, -1));
  if (!path_.empty()) {
    // Only our own file: a successor may already have replaced it.
    struct stat st {};
    if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == path_dev_ && st.st_ino == path_ino_)
      ::unlink(path_.c_str());
    path_.clear();
  }
}

void SocketServer::close_clients() {
  // Copy: a session that closes leaves the map at once.
  std::vector<std::shared_ptr<ClientSession>> all;
  all.reserve(clients_.size());
  for (auto& [id, s] : clients_) all.push_back(s);
  for (auto& s : all) s->close_after_flush();
}

}  // namespace connmgr::server
