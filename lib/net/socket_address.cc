#include "net/socket_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

namespace connmgr {

bool parse_ip_literal(const std::string& host, int port, sockaddr_storage* out) {
  memset(out, 0, sizeof *out);
  auto* v4 = reinterpret_cast<sockaddr_in*>(out);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(out);
  if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    return true;
  }
  return false;
}

std::string format_host(const sockaddr* addr) {
  char buf[INET6_ADDRSTRLEN] = "";
  if (addr->sa_family == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(addr)->sin_addr, buf, sizeof buf);
  else if (addr->sa_family == AF_INET6)
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(addr)->sin6_addr, buf, sizeof buf);
  return buf;
}

std::string format_host_port(const sockaddr* addr) {
  if (addr->sa_family == AF_INET6) {
    return "[" + format_host(addr) + "]:" +
           std::to_string(ntohs(reinterpret_cast<const sockaddr_in6*>(addr)->sin6_port));
  }
  if (addr->sa_family == AF_INET) {
    return format_host(addr) + ":" +
           std::to_string(ntohs(reinterpret_cast<const sockaddr_in*>(addr)->sin_port));
  }
  return {};
}

}  // namespace connmgr
