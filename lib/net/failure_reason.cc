#include "net/failure_reason.h"

#include <uv.h>

namespace connmgr::reason {

std::string from_uv(int e) {
  switch (e) {
    case UV_ECONNREFUSED:
      return kRefused;
    case UV_ETIMEDOUT:
      return kTimeout;
    case UV_EHOSTUNREACH:
      return kUnreachable;
    case UV_ENETUNREACH:
    case UV_ENETDOWN:
    case UV_EADDRNOTAVAIL:
    case UV_EAFNOSUPPORT:
      return kLocalNetwork;
    case UV_ECONNRESET:
    case UV_EPIPE:
    case UV_ECONNABORTED:
      return kReset;
    case UV_EOF:
      return kClosed;
    case UV_ECANCELED:
      return kCancelled;
    default:
      break;
  }
  // Every getaddrinfo failure is a name-resolution failure for the user.
  switch (e) {
    case UV_EAI_ADDRFAMILY:
    case UV_EAI_AGAIN:
    case UV_EAI_BADFLAGS:
    case UV_EAI_BADHINTS:
    case UV_EAI_CANCELED:
    case UV_EAI_FAIL:
    case UV_EAI_FAMILY:
    case UV_EAI_MEMORY:
    case UV_EAI_NODATA:
    case UV_EAI_NONAME:
    case UV_EAI_OVERFLOW:
    case UV_EAI_PROTOCOL:
    case UV_EAI_SERVICE:
    case UV_EAI_SOCKTYPE:
      return kDns;
    default:
      return uv_err_name(e);  // "EMFILE", ...
  }
}

std::string describe_uv(int e) { return std::string(uv_strerror(e)) + " (" + uv_err_name(e) + ")"; }

}  // namespace connmgr::reason
