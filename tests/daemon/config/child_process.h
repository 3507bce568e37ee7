// Runs a check in a forked child, for checks that change process-wide state
// (file descriptors 3.., a private mount namespace) that the test process
// must keep. The child reports failures as text; the parent waits (bounded).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>

namespace connmgr::test {

// "" when `check` returned "" in the child; else what it returned, or why
// the child did not finish (killed after `limit`).
inline std::string run_in_child(const std::function<std::string()>& check,
                                std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  int fds[2];
  if (pipe(fds) != 0) return "pipe failed";
  const pid_t pid = fork();
  if (pid < 0) return "fork failed";
  if (pid == 0) {
    close(fds[0]);
    // Out of the way of the low descriptors the check may take over.
    const int report = fcntl(fds[1], F_DUPFD_CLOEXEC, 100);
    close(fds[1]);
    const std::string failure = check();
    ssize_t rc = write(report, failure.data(), failure.size());
    (void)rc;
    _exit(failure.empty() ? 0 : 1);
  }
  close(fds[1]);
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      close(fds[0]);
      return "child did not finish in time";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::string out;
  char buf[512];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  if (!WIFEXITED(status)) return "child died with signal " + std::to_string(WTERMSIG(status)) + ": " + out;
  if (WEXITSTATUS(status) != 0 && out.empty()) return "child exited " + std::to_string(WEXITSTATUS(status));
  return out;
}

}  // namespace connmgr::test
