#include "systemd/listen_fds.h"

#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace connmgr::daemon {

Result<std::optional<int>> rpc_listen_fd() {
  char** raw_names = nullptr;
  const int n = sd_listen_fds_with_names(/*unset_environment=*/1, &raw_names);
  std::vector<std::string> names;
  if (raw_names) {
    for (int i = 0; i < n; ++i) {
      names.emplace_back(raw_names[i] ? raw_names[i] : "");
      free(raw_names[i]);
    }
    free(raw_names);
  }
  if (n < 0) return Error::internal(std::string("socket activation: ") + strerror(-n));
  if (n == 0) return std::optional<int>();

  int chosen = -1;
  for (int i = 0; i < n; ++i)
    if (i < static_cast<int>(names.size()) && names[i] == kRpcSocketName) chosen = SD_LISTEN_FDS_START + i;
  if (chosen < 0 && n == 1) chosen = SD_LISTEN_FDS_START;
  // What we do not serve is closed, so it does not hold a port or a path.
  for (int i = 0; i < n; ++i)
    if (SD_LISTEN_FDS_START + i != chosen) close(SD_LISTEN_FDS_START + i);
  if (chosen < 0)
    return Error::internal("socket activation: " + std::to_string(n) + " sockets passed, none named '" +
                           kRpcSocketName + "'");
  if (sd_is_socket_unix(chosen, SOCK_STREAM, /*listening=*/1, nullptr, 0) <= 0) {
    close(chosen);
    return Error::internal("socket activation: the passed socket is not a listening Unix stream "
                           "socket (ListenStream= must be a path)");
  }
  return std::optional<int>(chosen);
}

}  // namespace connmgr::daemon
