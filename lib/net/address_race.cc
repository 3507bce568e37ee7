#include "net/address_race.h"

namespace connmgr {

std::vector<sockaddr_storage> order_for_racing(const std::vector<sockaddr_storage>& addresses) {
  std::vector<sockaddr_storage> v6, v4, out;
  for (const auto& a : addresses) (a.ss_family == AF_INET6 ? v6 : v4).push_back(a);
  out.reserve(addresses.size());
  for (size_t i = 0; i < std::max(v6.size(), v4.size()); ++i) {
    if (i < v6.size()) out.push_back(v6[i]);
    if (i < v4.size()) out.push_back(v4[i]);
  }
  return out;
}

}  // namespace connmgr
