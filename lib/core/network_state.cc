#include "core/network_state.h"

#include <uv.h>

#include <sys/socket.h>

#include "net/failure_reason.h"

namespace connmgr {

std::string_view address_class_name(AddressClass c) {
  static constexpr std::string_view kNames[] = {"tcp4", "tcp6", "udp4", "udp6"};
  return kNames[static_cast<size_t>(c)];
}

AddressClass address_class(std::string_view protocol, int family) {
  const bool v6 = family == AF_INET6;
  if (protocol == "quic") return v6 ? AddressClass::kUdp6 : AddressClass::kUdp4;
  return v6 ? AddressClass::kTcp6 : AddressClass::kTcp4;
}

int literal_family(const std::string& address) {
  unsigned char buf[sizeof(struct in6_addr)];
  if (uv_inet_pton(AF_INET, address.c_str(), buf) == 0) return AF_INET;
  if (uv_inet_pton(AF_INET6, address.c_str(), buf) == 0) return AF_INET6;
  return 0;
}

void NetworkState::on_success(AddressClass c, int64_t at) {
  const auto i = static_cast<size_t>(c);
  last_success_seq_[i] = ++seq_;
  status_.classes[i].state = "up";
  status_.classes[i].last_success_at = at;
}

bool NetworkState::on_failure(int64_t endpoint_id, AddressClass c, std::string_view failure) {
  const auto i = static_cast<size_t>(c);
  ++seq_;
  if (failure == reason::kLocalNetwork) {
    status_.classes[i].state = "down";
    return false;
  }
  auto [it, first] = last_charged_.try_emplace(endpoint_id, seq_);
  if (first) return true;
  if (it->second > last_success_seq_[i]) return false;  // charged once since the class's last success
  it->second = seq_;
  return true;
}

void NetworkState::on_network_changed() {
  ++status_.generation;
  for (auto& c : status_.classes) c.state = "unknown";
}

}  // namespace connmgr
