// NetworkState: address classes, their state, and the charging rule.
#include "core/network_state.h"

#include <sys/socket.h>

#include <catch2/catch.hpp>

using namespace connmgr;

TEST_CASE("address classes come from the protocol and the family") {
  CHECK(address_class("tcp", AF_INET) == AddressClass::kTcp4);
  CHECK(address_class("tcp", AF_INET6) == AddressClass::kTcp6);
  CHECK(address_class("quic", AF_INET) == AddressClass::kUdp4);
  CHECK(address_class("quic", AF_INET6) == AddressClass::kUdp6);
  CHECK(address_class("tcp", 0) == AddressClass::kTcp4);
  CHECK(literal_family("::1") == AF_INET6);
  CHECK(literal_family("10.0.0.1") == AF_INET);
  CHECK(literal_family("example.org") == 0);
  CHECK(address_class_name(AddressClass::kUdp6) == "udp6");
}

TEST_CASE("a failure is charged once between two successes of its class") {
  NetworkState n;
  CHECK(n.on_failure(1, AddressClass::kTcp4, "refused"));   // the start counts as a success
  CHECK_FALSE(n.on_failure(1, AddressClass::kTcp4, "refused"));
  CHECK(n.on_failure(2, AddressClass::kTcp4, "timeout"));   // each endpoint's first
  n.on_success(AddressClass::kTcp6, 10);                    // another class
  CHECK_FALSE(n.on_failure(1, AddressClass::kTcp4, "refused"));
  n.on_success(AddressClass::kTcp4, 20);
  CHECK(n.on_failure(1, AddressClass::kTcp4, "refused"));
  CHECK_FALSE(n.on_failure(1, AddressClass::kTcp4, "refused"));
  CHECK(n.on_failure(2, AddressClass::kTcp4, "timeout"));
}

TEST_CASE("local_network failures are never charged and mark the class down") {
  NetworkState n;
  CHECK_FALSE(n.on_failure(1, AddressClass::kTcp6, "local_network"));
  CHECK(n.status().classes[static_cast<size_t>(AddressClass::kTcp6)].state == "down");
  CHECK(n.on_failure(1, AddressClass::kTcp6, "unreachable"));  // still its first charged one
  CHECK(n.status().classes[static_cast<size_t>(AddressClass::kTcp6)].state == "down");
  n.on_success(AddressClass::kTcp6, 5);
  const auto& c = n.status().classes[static_cast<size_t>(AddressClass::kTcp6)];
  CHECK(c.state == "up");
  CHECK(c.last_success_at == 5);
}

TEST_CASE("a network change makes every class unknown and counts a generation") {
  NetworkState n;
  n.on_success(AddressClass::kUdp4, 7);
  n.on_network_changed();
  n.on_network_changed();
  CHECK(n.status().generation == 2);
  for (const auto& c : n.status().classes) CHECK(c.state == "unknown");
  CHECK(n.status().classes[static_cast<size_t>(AddressClass::kUdp4)].last_success_at == 7);
}
