#include "server/socket_server.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "server/client_session.h"

namespace connmgr::server {

namespace {

Error server_error(const std::string& message) { return Error(ErrorCode::kInternal, message); }

// Is somebody answering on the socket file at `path`?
bool socket_is_live(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const bool live = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return live;
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

Status SocketServer::listen_path(const std::string& path, mode_t mode, std::optional<gid_t> group) {
  // libuv 1.44's uv_pipe_bind silently truncates a long path: check first.
  constexpr size_t kMax = sizeof(sockaddr_un::sun_path) - 1;
  if (path.empty() || path.size() > kMax)
    return server_error("socket path is " + std::to_string(path.size()) + " bytes, over the limit of " +
                        std::to_string(kMax) + ": " + path);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return server_error("socket path exists and is not a socket; remove it or choose another: " + path);
    if (socket_is_live(path))
      return server_error("another connmgrd is serving " + path + "; refusing to start a second one");
    ::unlink(path.c_str());  // stale: left by a daemon that died
  }
  listener_ = new uv_pipe_t;
  uv_pipe_init(loop_, listener_, 0);
  listener_->data = this;
  // The file is created with the umask's mode; tighten it before listening.
  const mode_t old_umask = ::umask(0177);
  int rc = uv_pipe_bind(listener_, path.c_str());
  ::umask(old_umask);
  if (rc == 0) {
    path_ = path;
    if (::chmod(path.c_str(), mode) != 0) {
      stop_listening();
      return server_error("cannot set mode of " + path + ": " + strerror(errno));
    }
    if (group && ::chown(path.c_str(), static_cast<uid_t>(-1), *group) != 0) {
      stop_listening();
      return server_error("cannot set group of " + path + ": " + strerror(errno));
    }
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(listener_), SOMAXCONN,
                   [](uv_stream_t* s, int status) {
                     static_cast<SocketServer*>(s->data)->on_connection(status);
                   });
  }
  if (rc != 0) {
    stop_listening();
    return server_error("cannot listen on " + path + ": " + uv_strerror(rc));
  }
  return ok_status();
}

Status SocketServer::listen_fd(int fd) {
  listener_ = new uv_pipe_t;
  uv_pipe_init(loop_, listener_, 0);
  listener_->data = this;
  int rc = uv_pipe_open(listener_, fd);
  if (rc == 0)
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(listener_), SOMAXCONN,
                   [](uv_stream_t* s, int status) {
                     static_cast<SocketServer*>(s->data)->on_connection(status);
                   });
  if (rc != 0) {
    stop_listening();
    return server_error("cannot serve the socket passed by systemd: " + std::string(uv_strerror(rc)));
  }
  return ok_status();
}

void SocketServer::on_connection(int status) {
  // libuv answers EMFILE itself (it keeps a spare descriptor to accept and
  // drop the connection), so a full descriptor table cannot spin the loop.
  if (status < 0) return;
  auto session = std::make_shared<ClientSession>(this, next_id_++);
  if (!session->accept(reinterpret_cast<uv_stream_t*>(listener_))) return;
  clients_.emplace(session->id(), session);
  if (clients_.size() > limits_.max_clients) {
    session->refuse(rpc::Dispatcher::error_line(
        -32603, "too many clients (max_clients = " + std::to_string(limits_.max_clients) + ")"));
  }
}

void SocketServer::on_session_closed(uint64_t id) { clients_.erase(id); }

void SocketServer::stop_listening() {
  if (!listener_) return;
  uv_close(reinterpret_cast<uv_handle_t*>(listener_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
  listener_ = nullptr;
  if (!path_.empty()) {
    ::unlink(path_.c_str());
    path_.clear();
  }
}

void SocketServer::close_clients() {
  // Copy: closing erases from the map in the close callbacks.
  std::vector<std::shared_ptr<ClientSession>> all;
  for (auto& [id, s] : clients_) all.push_back(s);
  for (auto& s : all) s->close_after_flush();
}

}  // namespace connmgr::server
