// Socket addresses as text and back: IP literals with a port into a
// sockaddr_storage, and addresses into "127.0.0.1", "::1", "127.0.0.1:443" or
// "[::1]:443" for people and the API.
#pragma once

#include <sys/socket.h>

#include <string>

namespace connmgr {

// True and fills `out` when `host` is an IPv4 or IPv6 literal (no brackets).
bool parse_ip_literal(const std::string& host, int port, sockaddr_storage* out);
// "127.0.0.1" / "::1".
std::string format_host(const sockaddr* addr);
// "127.0.0.1:443" / "[::1]:443".
std::string format_host_port(const sockaddr* addr);

}  // namespace connmgr
