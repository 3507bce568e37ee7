// NetWatch: tells the loop when the host's network changes.
//
// It listens to the kernel's rtnetlink notifications (links, IPv4 and IPv6
// addresses, IPv4 and IPv6 routes) on a NETLINK_ROUTE socket watched by a
// libuv poll handle, never blocking the loop. A burst of notifications (an
// interface coming up announces its link, its addresses and its routes in a
// few messages) is coalesced: `changed` is called once, `settle` after the
// last message of the burst.
//
// Ownership and threads: used from the loop thread only; may be destroyed at
// any time (its handles close with it, `changed` is not called afterwards).
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

  NetWatch() = default;
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
