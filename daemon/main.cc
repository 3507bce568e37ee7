// connmgrd: the connection manager daemon. See README.md and docs/.
#include <signal.h>

#include <cstdio>
#include <string>
#include <vector>

#include "config/config.h"
#include "connmgr_version.h"
#include "daemon.h"

int main(int argc, char** argv) {
  // A client that goes away while we write must not kill the daemon: libuv
  // writes with write(2), which raises SIGPIPE on a closed socket.
  signal(SIGPIPE, SIG_IGN);

  const auto env = connmgr::config::process_environment();
  const std::vector<std::string> args(argv + 1, argv + argc);
  auto inv = connmgr::config::parse(args, env);
  if (!inv) {
    fprintf(stderr, "connmgrd: %s\n", inv.error().message().c_str());
    return 2;
  }
  if (inv->help) {
    fputs(connmgr::config::help_text(env).c_str(), stdout);
    return 0;
  }
  if (inv->version) {
    printf("connmgrd %s\n", CONNMGR_VERSION);
    return 0;
  }
  return connmgr::daemon::run(args, env, inv->config);
}
