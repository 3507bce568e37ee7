#include "net/netwatch.h"

#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <string>

#include "util/uv_handle.h"

namespace connmgr {

namespace {

constexpr uint32_t kGroups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR |
                             RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE;
// The kernel's notifications are under a page each; a read returns one
// datagram, so this holds any of them (a longer one is cut, which only
// loses messages we would have counted as one change anyway).
constexpr size_t kReadBuffer = 32 * 1024;
// Room for a route flood (a full BGP table) before the kernel drops
// notifications (ENOBUFS, handled as a change); best effort.
constexpr int kReceiveBuffer = 1024 * 1024;
// Reads per readable event: a flood is drained over several loop turns
// (the poll is level-triggered) instead of holding the loop.
constexpr int kReadsPerEvent = 64;
// A network that never stops changing still gets `changed` this many
// settle periods after the first message of a burst.
constexpr uint64_t kMaxSettles = 10;
// The addresses remembered to recognise a repeated announcement; past this
// many the memory starts again (one spurious change).
constexpr size_t kMaxAddresses = 4096;

std::string errno_text(const char* what, int err) {
  return std::string("network watch: ") + what + ": " + std::strerror(err);
}

}  // namespace

struct NetWatch::Impl {
  Impl(uv_loop_t* on, Changed notify, std::chrono::milliseconds settle_period)
      : loop(on),
        changed(std::move(notify)),
        settle_ms(static_cast<uint64_t>(std::max<int64_t>(settle_period.count(), 0))) {}
  ~Impl() {
    // The poll stops watching the descriptor inside uv_close, so it may be
    // closed right after (libuv forbids closing a descriptor still polled).
    poll.close();
    settle_timer.close();
    if (fd >= 0) ::close(fd);
  }

  Status open();
  static void on_poll(uv_poll_t* handle, int status, int events);
  void on_readable(bool error_reported);
  bool is_change(const nlmsghdr* m, size_t len);
  bool address_changed(const nlmsghdr* m, size_t len);
  void note_change();
  void fire();

  uv_loop_t* loop;
  Changed changed;
  uint64_t settle_ms;
  int fd = -1;
  UvHandle<uv_poll_t> poll;
  Timer settle_timer;
  uint64_t messages = 0;
  uint64_t burst_started_ms = 0;  // uv_now of the burst's first change
  // Each known address (family, interface, prefix, address bytes) and its
  // flags, to tell a real change from an announcement repeated as is.
  std::map<std::string, uint32_t> addresses;
  alignas(nlmsghdr) char buffer[kReadBuffer];
};

Status NetWatch::Impl::open() {
  fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
  if (fd < 0) return Error::internal(errno_text("netlink socket", errno));
  // Unprivileged processes may set at most net.core.rmem_max: whatever the
  // kernel grants is what we have.
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kReceiveBuffer, sizeof kReceiveBuffer);
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  local.nl_groups = kGroups;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0)
    return Error::internal(errno_text("netlink bind", errno));
  if (int rc = poll.init(loop, this, uv_poll_init, fd); rc != 0)
    return Error::internal(std::string("network watch: poll: ") + uv_strerror(rc));
  if (int rc = uv_poll_start(poll.get(), UV_READABLE, &Impl::on_poll); rc != 0)
    return Error::internal(std::string("network watch: poll: ") + uv_strerror(rc));
  if (settle_timer.init(loop) != 0) return Error::internal("network watch: timer");
  // A watcher alone does not keep the loop running.
  uv_unref(poll.as_handle());
  settle_timer.unref();
  return ok_status();
}

void NetWatch::Impl::on_poll(uv_poll_t* handle, int status, int) {
  if (auto* self = UvHandle<uv_poll_t>::owner<Impl>(handle)) self->on_readable(status < 0);
}

// Reads what is queued. An overrun (more notifications than the receive
// buffer held) is reported by the socket as an error: epoll says EPOLLERR,
// on which libuv stops the poll and reports UV_EBADF; the next recv returns
// ENOBUFS, clears the error, and the queue behind it reads normally. Lost
// notifications mean an unknown change: a change, and the remembered
// addresses are forgotten.
void NetWatch::Impl::on_readable(bool error_reported) {
  bool change = false;
  for (int reads = 0; reads < kReadsPerEvent; ++reads) {
    sockaddr_nl from{};
    socklen_t from_len = sizeof from;
    const ssize_t n = ::recvfrom(fd, buffer, sizeof buffer, 0, reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == ENOBUFS) {
        change = true;
        addresses.clear();
        continue;
      }
      // A descriptor that fails otherwise would report the same at every
      // turn: stop watching rather than spin (the NetWatch turns inert).
      poll.close();
      break;
    }
    if (from.nl_pid != 0) continue;  // only the kernel speaks for the network
    size_t len = static_cast<size_t>(n);
    for (auto* m = reinterpret_cast<const nlmsghdr*>(buffer); NLMSG_OK(m, len); m = NLMSG_NEXT(m, len)) {
      if (m->nlmsg_type == NLMSG_OVERRUN) change = true;
      if (m->nlmsg_type < NLMSG_MIN_TYPE) continue;  // NOOP, ERROR, DONE: no news
      ++messages;
      if (is_change(m, m->nlmsg_len)) change = true;
    }
  }
  if (error_reported && poll) uv_poll_start(poll.get(), UV_READABLE, &Impl::on_poll);
  if (change) note_change();
}

// Every link, address and route message is a change except two kinds that
// repeat without news: wireless-extension events (a link message carrying
// IFLA_WIRELESS, sent on scans and roams of a Wi-Fi card), and an address
// announced again as it was (IPv6 re-announces each address whose lifetimes
// a router advertisement refreshes, every few minutes).
bool NetWatch::Impl::is_change(const nlmsghdr* m, size_t len) {
  switch (m->nlmsg_type) {
    case RTM_NEWLINK: {
      if (len < NLMSG_LENGTH(sizeof(ifinfomsg))) return true;
      auto* info = static_cast<const ifinfomsg*>(NLMSG_DATA(m));
      size_t attrs_len = len - NLMSG_LENGTH(sizeof(ifinfomsg));
      for (auto* a = IFLA_RTA(info); RTA_OK(a, attrs_len); a = RTA_NEXT(a, attrs_len))
        if (a->rta_type == IFLA_WIRELESS) return false;
      return true;
    }
    case RTM_NEWADDR:
    case RTM_DELADDR:
      return address_changed(m, len);
    default:
      return true;
  }
}

bool NetWatch::Impl::address_changed(const nlmsghdr* m, size_t len) {
  if (len < NLMSG_LENGTH(sizeof(ifaddrmsg))) return true;
  auto* ifa = static_cast<const ifaddrmsg*>(NLMSG_DATA(m));
  std::string key;
  key.push_back(static_cast<char>(ifa->ifa_family));
  key.push_back(static_cast<char>(ifa->ifa_prefixlen));
  key.append(reinterpret_cast<const char*>(&ifa->ifa_index), sizeof ifa->ifa_index);
  uint32_t flags = ifa->ifa_flags;
  size_t attrs_len = len - NLMSG_LENGTH(sizeof(ifaddrmsg));
  for (auto* a = IFA_RTA(ifa); RTA_OK(a, attrs_len); a = RTA_NEXT(a, attrs_len)) {
    if (a->rta_type == IFA_FLAGS && RTA_PAYLOAD(a) >= sizeof(uint32_t)) {
      std::memcpy(&flags, RTA_DATA(a), sizeof flags);
    } else if (a->rta_type == IFA_ADDRESS || a->rta_type == IFA_LOCAL) {
      key.push_back(static_cast<char>(a->rta_type));
      key.append(static_cast<const char*>(RTA_DATA(a)), RTA_PAYLOAD(a));
    }
  }
  if (m->nlmsg_type == RTM_DELADDR) {
    addresses.erase(key);
    return true;
  }
  auto it = addresses.find(key);
  if (it != addresses.end() && it->second == flags) return false;
  if (addresses.size() >= kMaxAddresses) addresses.clear();
  addresses[key] = flags;
  return true;
}

// `changed` runs settle_ms after the burst's last change, and at the latest
// kMaxSettles settle periods after its first.
void NetWatch::Impl::note_change() {
  const uint64_t now = uv_now(loop);
  if (!settle_timer.active()) burst_started_ms = now;
  const uint64_t deadline = burst_started_ms + kMaxSettles * std::max<uint64_t>(settle_ms, 1);
  const uint64_t wait = std::min(settle_ms, deadline > now ? deadline - now : 0);
  settle_timer.start(wait, [this] { fire(); });
}

void NetWatch::Impl::fire() {
  // A copy: `changed` may destroy the NetWatch, and this Impl with it.
  Changed notify = changed;
  if (notify) notify();
}

NetWatch::NetWatch() = default;
NetWatch::~NetWatch() = default;

Status NetWatch::start(uv_loop_t* loop, Changed changed, std::chrono::milliseconds settle) {
  impl_.reset();
  auto impl = std::make_unique<Impl>(loop, std::move(changed), settle);
  if (Status s = impl->open(); !s.ok()) return s;  // impl's destructor closes what opened
  impl_ = std::move(impl);
  return ok_status();
}

uint64_t NetWatch::messages() const { return impl_ ? impl_->messages : 0; }

}  // namespace connmgr
