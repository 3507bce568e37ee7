// Socket activation: the RPC socket that systemd passes (connmgrd.socket,
// FileDescriptorName=rpc), taken with sd_listen_fds_with_names(3).
//
// The LISTEN_* variables are removed from the environment once read, so a
// child process never mistakes them for its own. The caller owns the
// returned descriptor; passed descriptors it does not use are closed.
#pragma once

#include <optional>

#include "util/error.h"

namespace connmgr::daemon {

// The name connmgrd.socket gives the RPC socket (FileDescriptorName=).
inline constexpr const char kRpcSocketName[] = "rpc";

// nullopt when the daemon was not socket-activated (it then binds the
// configured path). Otherwise the descriptor named "rpc", or the only one
// passed when none is named so (a launcher without names). Errors: several
// descriptors and none named "rpc", or the chosen one is not a listening
// Unix stream socket.
Result<std::optional<int>> rpc_listen_fd();

// Old spelling, kept until daemon/daemon.cc uses rpc_listen_fd(): an error
// reads as "not activated".
inline std::optional<int> activated_socket() {
  auto fd = rpc_listen_fd();
  return fd ? *fd : std::nullopt;
}

}  // namespace connmgr::daemon
