// NetWatch: tells the loop when the host's network changes.
//
// It listens to the kernel's rtnetlink notifications (links, IPv4 and IPv6
// addresses, IPv4 and IPv6 routes) on a NETLINK_ROUTE socket watched by a
// libuv poll handle, never blocking the loop. A burst of notifications (an
// interface coming up announces its link, its addresses and its routes in a
// few messages) is coalesced: `changed` is called once, `settle` after the
// last message of the burst (and at the latest 10 x `settle` after its
// first, for a network that never stops changing).
//
// What counts as a change: every link, address and route notification but
// two that repeat without news: a link message carrying wireless-extension
// events (IFLA_WIRELESS: a Wi-Fi scan or roam), and an address announced
// again with the same flags (IPv6 re-announces each address whose lifetimes
// a router advertisement refreshes). Notifications lost to an overrun of
// the socket's buffer (ENOBUFS) count as a change.
//
// Ownership and threads: used from the loop thread only; may be destroyed at
// any time, `changed` included (its handles close with it, `changed` is not
// called afterwards). Its handles do not keep the loop running.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include <uv.h>

#include "util/error.h"

namespace connmgr {

class NetWatch {
 public:
  using Changed = std::function<void()>;

  NetWatch();  // out of line: Impl is complete only in the .cc
  ~NetWatch();
  NetWatch(const NetWatch&) = delete;
  NetWatch& operator=(const NetWatch&) = delete;

  // Opens the rtnetlink socket and starts watching. An error (no netlink in
  // this sandbox, descriptors exhausted) leaves the NetWatch inert; the
  // daemon logs it and carries on without network-change reactions.
  Status start(uv_loop_t* loop, Changed changed,
               std::chrono::milliseconds settle = std::chrono::milliseconds(100));

  // Notifications seen since start() (tests, logs).
  uint64_t messages() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace connmgr
