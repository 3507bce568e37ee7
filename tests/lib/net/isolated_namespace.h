// Runs a test binary's cases tagged [isolated] in a child of it with its own
// mount and network namespaces: a private /etc/hosts bind-mounted over the
// real one (names with the addresses a test wants), and only a loopback
// interface, so that any non-loopback address has no route. Nothing of the
// host is changed. Needs root (or the capabilities for unshare).
#pragma once

#include <fcntl.h>
#include <linux/limits.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern char** environ;

namespace connmgr::test {

inline constexpr const char* kIsolatedEnv = "CONNMGR_NET_ISOLATED";
inline constexpr int kCannotIsolate = 77;

// Runs this binary's [isolated] cases in new namespaces; their exit status,
// kCannotIsolate when namespaces are not allowed (not root), -1 on a hang.
inline int run_isolated_cases(const std::string& hosts_file) {
  char self[PATH_MAX] = {};
  if (readlink("/proc/self/exe", self, sizeof self - 1) <= 0) return kCannotIsolate;
  // Everything the child needs is prepared before fork(): between fork and
  // exec only async-signal-safe calls are allowed (libuv's pool has threads).
  std::vector<std::string> env_text;
  for (char** e = environ; *e; ++e) env_text.emplace_back(*e);
  env_text.push_back(std::string(kIsolatedEnv) + "=1");
  std::vector<char*> envp;
  for (auto& s : env_text) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string tag = "[isolated]";
  char* argv[] = {self, tag.data(), nullptr};

  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (unshare(CLONE_NEWNS | CLONE_NEWNET) != 0) _exit(kCannotIsolate);
    // Without MS_PRIVATE the bind mount below would propagate to the host.
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) _exit(kCannotIsolate);
    if (mount(hosts_file.c_str(), "/etc/hosts", nullptr, MS_BIND, nullptr) != 0) _exit(kCannotIsolate);
    // A new network namespace has its loopback down.
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    ifreq ifr{};
    memcpy(ifr.ifr_name, "lo", 3);
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) != 0) _exit(kCannotIsolate);
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) _exit(kCannotIsolate);
    close(s);
    execve(self, argv, envp.data());
    _exit(127);
  }
  const uint64_t deadline = uv_hrtime() + 60ull * 1000000000ull;
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (uv_hrtime() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    usleep(10 * 1000);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

inline bool isolated() { return getenv(kIsolatedEnv) != nullptr; }

}  // namespace connmgr::test
