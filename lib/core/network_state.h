// NetworkState: the host's network as the manager's dials see it, per
// address class (TCP or UDP x IPv4 or IPv6): each class's state and last
// success, the generation of network changes, and the charging rule that
// keeps our own outages out of the endpoints' failure_count (docs/guide.md,
// "Statistics and how an endpoint is chosen").
//
// The rule: a failure with reason local_network is never charged; any other
// is charged only when its endpoint has no charged failure since the daemon
// started, or its last charged failure is older than the last success of
// the failure's class (the daemon's start counts as every class's first
// success). "Older" is by the order outcomes were recorded in (a counter),
// not by the clock: two outcomes in one millisecond keep their order.
//
// State of a class: "unknown" at start and after a network change until the
// next success or local_network failure in it; "up" after a success; "down"
// after a local_network failure. Other failures leave it as it is: a remote
// failure says nothing of our own network.
//
// Memory: one entry per endpoint that had a charged failure since the start
// (16 bytes and the map's node), forgotten with forget_endpoint(). Plain
// data, loop thread only.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace connmgr {

// An address class: transport (TCP, or UDP for QUIC) x address family.
enum class AddressClass { kTcp4 = 0, kTcp6, kUdp4, kUdp6 };
inline constexpr size_t kAddressClasses = 4;
std::string_view address_class_name(AddressClass c);  // "tcp4", "tcp6", "udp4", "udp6"

// The class of a dial of `protocol` ("quic": UDP, others TCP) on an address
// of `family` (AF_INET6: IPv6; anything else IPv4).
AddressClass address_class(std::string_view protocol, int family);
// AF_INET6 for an IPv6 literal, AF_INET for an IPv4 one, 0 for a host name.
int literal_family(const std::string& address);

struct ClassStatus {
  std::string state = "unknown";  // "up" | "down" | "unknown"
  std::optional<int64_t> last_success_at;  // unix ms; none until a dial of the class succeeds
};

// status.network.
struct NetworkStatus {
  uint64_t generation = 0;  // network changes seen (rtnetlink)
  std::array<ClassStatus, kAddressClasses> classes;  // indexed by AddressClass
};

class NetworkState {
 public:
  // A dial of the class succeeded at `at` (unix ms).
  void on_success(AddressClass c, int64_t at);
  // A dial of `endpoint_id` in class `c` failed with reason `failure`:
  // whether the failure is charged to the endpoint's failure_count.
  bool on_failure(int64_t endpoint_id, AddressClass c, std::string_view failure);
  // The host's network changed: generation + 1, every class "unknown".
  void on_network_changed();
  void forget_endpoint(int64_t endpoint_id) { last_charged_.erase(endpoint_id); }
  const NetworkStatus& status() const { return status_; }

 private:
  NetworkStatus status_;
  uint64_t seq_ = 0;  // outcomes recorded so far
  std::array<uint64_t, kAddressClasses> last_success_seq_{};  // 0: the daemon's start
  std::unordered_map<int64_t, uint64_t> last_charged_;  // endpoint -> its last charged failure's seq
};

}  // namespace connmgr
