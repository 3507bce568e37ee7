#include "net/resolver.h"

#include <netdb.h>
#include <netinet/in.h>

#include <cstring>
#include <utility>

#include "net/failure_reason.h"
#include "net/socket_address.h"

namespace connmgr {

namespace {

bool same_address(const sockaddr_storage& a, const sockaddr_storage& b) {
  if (a.ss_family != b.ss_family) return false;
  if (a.ss_family == AF_INET) {
    return memcmp(&reinterpret_cast<const sockaddr_in&>(a).sin_addr,
                  &reinterpret_cast<const sockaddr_in&>(b).sin_addr, sizeof(in_addr)) == 0;
  }
  const auto& a6 = reinterpret_cast<const sockaddr_in6&>(a);
  const auto& b6 = reinterpret_cast<const sockaddr_in6&>(b);
  return memcmp(&a6.sin6_addr, &b6.sin6_addr, sizeof(in6_addr)) == 0 &&
         a6.sin6_scope_id == b6.sin6_scope_id;
}

// getaddrinfo's IPv4 and IPv6 addresses in its order, each once, with `port`.
std::vector<sockaddr_storage> addresses_of(const addrinfo* result, int port) {
  std::vector<sockaddr_storage> out;
  for (const addrinfo* ai = result; ai; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    sockaddr_storage ss{};
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    if (ss.ss_family == AF_INET)
      reinterpret_cast<sockaddr_in&>(ss).sin_port = htons(static_cast<uint16_t>(port));
    else
      reinterpret_cast<sockaddr_in6&>(ss).sin6_port = htons(static_cast<uint16_t>(port));
    bool seen = false;
    for (const auto& prev : out) seen = seen || same_address(prev, ss);
    if (!seen) out.push_back(ss);
  }
  return out;
}

}  // namespace

void Resolution::start(uv_loop_t* loop, const std::string& host, int port, std::chrono::milliseconds timeout,
                       ResolveCallback done) {
  cancel();
  host_ = host;
  port_ = port;
  timeout_ = timeout;
  done_ = std::move(done);
  if (!timer_.initialized()) timer_.init(loop);  // uv_timer_init cannot fail
  sockaddr_storage literal{};
  if (parse_ip_literal(host_, port_, &literal)) {
    answer_later(std::vector<sockaddr_storage>{literal});
  } else if (host_.empty()) {
    answer_later(Error::connect_failed("cannot resolve an empty host name", reason::kDns));
  } else {
    start_lookup(loop, timeout);
  }
}

void Resolution::start_lookup(uv_loop_t* loop, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  // One entry per address (without it each comes once per socket type).
  hints.ai_socktype = SOCK_STREAM;
  const int rc = lookup_.start(loop, host_.c_str(), nullptr, &hints,
                               [this](int status, addrinfo* result) { on_resolved(status, result); });
  if (rc != 0) {
    answer_later(dns_error(rc));
    return;
  }
  if (timeout.count() > 0) {
    uv_update_time(loop);  // count from now, not from the loop's cached time
    timer_.start(static_cast<uint64_t>(timeout.count()), [this] { on_timeout(); });
  }
}

void Resolution::cancel() {
  done_ = nullptr;
  timer_.stop();
  lookup_.cancel();
}

// An answer known while start() is still on the stack goes out on the next
// loop turn, through the timer, so that `done` never runs inside it.
void Resolution::answer_later(Answer answer) {
  timer_.start(0, [this, answer = std::move(answer)]() mutable { deliver(std::move(answer)); });
}

void Resolution::on_resolved(int status, const addrinfo* result) {
  if (status != 0) return deliver(dns_error(status));
  auto addresses = addresses_of(result, port_);
  if (addresses.empty())
    return deliver(Error::connect_failed("cannot resolve " + host_ + ": no IPv4 or IPv6 address", reason::kDns));
  deliver(std::move(addresses));
}

void Resolution::on_timeout() {
  deliver(Error::connect_failed(
      "resolving " + host_ + " timed out after " + std::to_string(timeout_.count()) + " ms", reason::kTimeout));
}

Error Resolution::dns_error(int uv_error) const {
  return Error::connect_failed("cannot resolve " + host_ + ": " + uv_strerror(uv_error), reason::from_uv(uv_error));
}

void Resolution::deliver(Answer answer) {
  auto done = std::move(done_);
  cancel();
  if (done) done(std::move(answer));  // last: may destroy this
}

}  // namespace connmgr
