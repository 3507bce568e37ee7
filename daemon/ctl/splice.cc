#include "daemon/ctl/splice.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

namespace connmgr::ctl {
namespace {

constexpr size_t kChunk = 64 * 1024;

// The two directions. The socket is non-blocking, so that bytes from the
// node keep flowing to stdout while the node (or connmgrd's back-pressure)
// is not taking ours: an echoing node would otherwise deadlock us. stdin
// and stdout stay as they are (their file descriptions may be shared):
// stdin is read once poll() says it is ready; stdout takes blocking writes,
// so a reader that does not keep up holds the stream back (connmgrd then
// stops taking the node's bytes: back-pressure, not memory).
struct Splice {
  int sock = -1;
  bool stdin_open = true;
  bool sock_open = true;  // no EOF read from the socket yet
  bool shut_write = false;
  std::string toward_node;
  std::string error;  // why the stream ended badly
};

bool write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

void read_stdin(Splice& s) {
  char buf[kChunk];
  const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n > 0) s.toward_node.assign(buf, static_cast<size_t>(n));
  else s.stdin_open = false;  // EOF (or an unreadable stdin: the same for the node)
}

void write_socket(Splice& s) {
  const ssize_t n = ::send(s.sock, s.toward_node.data(), s.toward_node.size(), MSG_NOSIGNAL);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n < 0) s.error = std::string("the stream was closed: ") + strerror(errno);
  else s.toward_node.erase(0, static_cast<size_t>(n));
}

void read_socket(Splice& s) {
  char buf[kChunk];
  const ssize_t n = ::recv(s.sock, buf, sizeof buf, 0);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n < 0) {
    s.error = std::string("the stream was reset: ") + strerror(errno);
  } else if (n == 0) {
    s.sock_open = false;
    ::close(STDOUT_FILENO);
  } else if (!write_all(STDOUT_FILENO, buf, static_cast<size_t>(n))) {
    s.error = std::string("cannot write to stdout: ") + strerror(errno);
  }
}

// One poll() turn: waits for what can move and moves it.
void step(Splice& s) {
  pollfd fds[2] = {{.fd = -1, .events = POLLIN, .revents = 0}, {.fd = s.sock, .events = 0, .revents = 0}};
  if (s.stdin_open && s.toward_node.empty()) fds[0].fd = STDIN_FILENO;
  if (s.sock_open) fds[1].events |= POLLIN;
  if (!s.toward_node.empty()) fds[1].events |= POLLOUT;
  if (::poll(fds, 2, -1) < 0) {
    if (errno != EINTR) s.error = std::string("poll: ") + strerror(errno);
    return;
  }
  if (fds[0].revents) read_stdin(s);
  if (fds[1].revents & POLLOUT) write_socket(s);
  if (fds[1].revents & (POLLIN | POLLERR | POLLHUP) && s.sock_open) read_socket(s);
  // A hang-up with the socket's EOF read: connmgrd closed the connection
  // (a reset by the node, the link lost, ...), not just the node's half.
  if (fds[1].revents & POLLHUP && !s.sock_open && !s.shut_write && s.error.empty())
    s.error = "the stream was closed before stdin ended (reset by the node, or the link was lost)";
  if (!s.stdin_open && s.toward_node.empty() && !s.shut_write) {
    ::shutdown(s.sock, SHUT_WR);
    s.shut_write = true;
  }
}

}  // namespace

int join_stdio(int sock) {
  Splice s;
  s.sock = sock;
  fcntl(sock, F_SETFL, fcntl(sock, F_GETFL) | O_NONBLOCK);
  while (s.error.empty() && (s.sock_open || !s.shut_write)) step(s);
  ::close(sock);
  if (s.error.empty()) return 0;
  fprintf(stderr, "connmgrctl: %s\n", s.error.c_str());
  return 1;
}

int exec_on(int sock, const std::vector<std::string>& command) {
  if (dup2(sock, STDIN_FILENO) < 0 || dup2(sock, STDOUT_FILENO) < 0) {
    fprintf(stderr, "connmgrctl: dup2: %s\n", strerror(errno));
    return 126;
  }
  if (sock > STDOUT_FILENO) ::close(sock);
  std::vector<char*> argv;
  for (const std::string& word : command) argv.push_back(const_cast<char*>(word.c_str()));
  argv.push_back(nullptr);
  execvp(argv[0], argv.data());
  const int err = errno;
  fprintf(stderr, "connmgrctl: cannot run %s: %s\n", argv[0], strerror(err));
  return err == ENOENT ? 127 : 126;
}

}  // namespace connmgr::ctl
