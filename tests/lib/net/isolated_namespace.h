// Runs test cases of a test binary in a child of it with a network namespace
// of its own (and, when asked, a private /etc/hosts bind-mounted over the
// real one in a mount namespace of its own): nothing of the host changes.
// Needs root (or the capabilities for unshare).
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

// How run_self_isolated() isolates the child.
struct Isolation {
  // Bind-mounted over /etc/hosts in a mount namespace of the child's own
  // (the names a test wants); empty: the host's /etc/hosts, no mount namespace.
  std::string hosts_file;
  // A new network namespace has its loopback down; true brings it up.
  bool loopback_up = true;
};

// Runs this binary again with `args` (e.g. a tag, or a case name) in a
// child with a network namespace of its own, kIsolatedEnv set; its exit
// status, kCannotIsolate when namespaces are not allowed (not root), -1 on
// a hang (60 s).
inline int run_self_isolated(std::vector<std::string> args, const Isolation& how) {
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
  std::vector<char*> argv{self};
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const bool mount_hosts = !how.hosts_file.empty();

  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (unshare(CLONE_NEWNET | (mount_hosts ? CLONE_NEWNS : 0)) != 0) _exit(kCannotIsolate);
    if (mount_hosts) {
      // Without MS_PRIVATE the bind mount below would propagate to the host.
      if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) _exit(kCannotIsolate);
      if (mount(how.hosts_file.c_str(), "/etc/hosts", nullptr, MS_BIND, nullptr) != 0)
        _exit(kCannotIsolate);
    }
    if (how.loopback_up) {
      int s = socket(AF_INET, SOCK_DGRAM, 0);
      ifreq ifr{};
      memcpy(ifr.ifr_name, "lo", 3);
      if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) != 0) _exit(kCannotIsolate);
      ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
      if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) _exit(kCannotIsolate);
      close(s);
    }
    execve(self, argv.data(), envp.data());
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

// Runs this binary's [isolated] cases with `hosts_file` as /etc/hosts and
// only a loopback interface (up), so any other address has no route.
inline int run_isolated_cases(const std::string& hosts_file) {
  return run_self_isolated({"[isolated]"}, Isolation{hosts_file, true});
}

inline bool isolated() { return getenv(kIsolatedEnv) != nullptr; }

}  // namespace connmgr::test
