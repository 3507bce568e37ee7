// Socket activation: descriptors placed at 3.. with LISTEN_PID, LISTEN_FDS
// and LISTEN_FDNAMES, as systemd passes them. Each case runs in a child
// process, which may take over descriptors 3 and 4.
#include "systemd/listen_fds.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <string>

#include "child_process.h"
#include "test_support.h"

using namespace connmgr::daemon;
using connmgr::test::run_in_child;

namespace {

// A socket of `type` at `target` (listening when a stream socket), bound
// to `path`; "" on success.
std::string place_socket(int target, int type, const std::string& path) {
  const int fd = socket(AF_UNIX, type, 0);
  if (fd < 0) return "socket failed";
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  strcpy(a.sun_path, path.c_str());
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return "bind " + path + ": " + strerror(errno);
  if (type == SOCK_STREAM && listen(fd, 8) != 0) return "listen failed";
  if (fd != target) {
    if (dup2(fd, target) != target) return "dup2 failed";
    close(fd);
  }
  return "";
}

void set_listen_env(int count, const char* names) {
  setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
  setenv("LISTEN_FDS", std::to_string(count).c_str(), 1);
  if (names) setenv("LISTEN_FDNAMES", names, 1);
  else unsetenv("LISTEN_FDNAMES");
}

bool is_open(int fd) { return fcntl(fd, F_GETFD) != -1; }

}  // namespace

TEST_CASE("without passed sockets the daemon binds its own") {
  CHECK(run_in_child([] {
          unsetenv("LISTEN_PID");
          unsetenv("LISTEN_FDS");
          auto fd = rpc_listen_fd();
          if (!fd) return "error: " + fd.error().message();
          return fd->has_value() ? std::string("a descriptor without activation") : std::string();
        }) == "");
}

TEST_CASE("sockets passed to another process are not taken") {
  connmgr::test::TempDir dir;
  CHECK(run_in_child([&] {
          if (auto e = place_socket(3, SOCK_STREAM, dir.file("s")); !e.empty()) return e;
          set_listen_env(1, "rpc");
          setenv("LISTEN_PID", std::to_string(getppid()).c_str(), 1);
          auto fd = rpc_listen_fd();
          if (!fd) return "error: " + fd.error().message();
          return fd->has_value() ? std::string("took another process's socket") : std::string();
        }) == "");
}

TEST_CASE("the socket named rpc is chosen, the others are closed and the variables removed") {
  connmgr::test::TempDir dir;
  CHECK(run_in_child([&] {
          if (auto e = place_socket(3, SOCK_STREAM, dir.file("other")); !e.empty()) return e;
          if (auto e = place_socket(4, SOCK_STREAM, dir.file("rpc")); !e.empty()) return e;
          set_listen_env(2, "other:rpc");
          auto fd = rpc_listen_fd();
          if (!fd) return "error: " + fd.error().message();
          if (*fd != 4) return std::string("chose ") + (fd->has_value() ? std::to_string(**fd) : "none");
          if (is_open(3)) return std::string("the unused socket stayed open");
          if (!is_open(4)) return std::string("the chosen socket was closed");
          if (getenv("LISTEN_FDS") || getenv("LISTEN_PID") || getenv("LISTEN_FDNAMES"))
            return std::string("LISTEN_* left in the environment");
          return std::string();
        }) == "");
}

TEST_CASE("a single unnamed socket is taken") {
  connmgr::test::TempDir dir;
  CHECK(run_in_child([&] {
          if (auto e = place_socket(3, SOCK_STREAM, dir.file("s")); !e.empty()) return e;
          set_listen_env(1, nullptr);
          auto fd = rpc_listen_fd();
          if (!fd) return "error: " + fd.error().message();
          return *fd == std::optional<int>(3) ? std::string() : std::string("fd 3 not chosen");
        }) == "");
}

TEST_CASE("several sockets with none named rpc are an error") {
  connmgr::test::TempDir dir;
  CHECK(run_in_child([&] {
          if (auto e = place_socket(3, SOCK_STREAM, dir.file("a")); !e.empty()) return e;
          if (auto e = place_socket(4, SOCK_STREAM, dir.file("b")); !e.empty()) return e;
          set_listen_env(2, "a:b");
          auto fd = rpc_listen_fd();
          if (fd) return std::string("accepted");
          return fd.error().message().find("none named 'rpc'") != std::string::npos
                     ? std::string()
                     : "wrong message: " + fd.error().message();
        }) == "");
}

TEST_CASE("a passed socket that is not a listening stream socket is an error") {
  connmgr::test::TempDir dir;
  CHECK(run_in_child([&] {
          if (auto e = place_socket(3, SOCK_DGRAM, dir.file("d")); !e.empty()) return e;
          set_listen_env(1, "rpc");
          auto fd = rpc_listen_fd();
          if (fd) return std::string("accepted a datagram socket");
          if (is_open(3)) return std::string("the refused socket stayed open");
          return fd.error().message().find("not a listening Unix stream socket") != std::string::npos
                     ? std::string()
                     : "wrong message: " + fd.error().message();
        }) == "");
}
