// AddressRace: the addresses of one host name raced inside one dial, Happy
// Eyeballs style (RFC 8305), for the connectors.
//
// Order: order_for_racing() puts IPv6 first and interleaves the families
// (IPv6, IPv4, IPv6, IPv4, ..., then the rest of the longer family), each
// family in the resolver's order.
//
// Staggering: the first address is dialled at once; when the attempt started
// last has neither succeeded nor failed after `attempt_delay`, the next
// address is dialled as well; a failure dials the next one at once. The first
// attempt to succeed wins: the others are cancelled (their sockets close).
//
// The failure reported when every address failed is the most telling one:
// the last failure whose reason is not "local_network"; "local_network" only
// when every address failed for it (this host could reach none of them: the
// endpoint is not at fault). A single address reports its own failure.
//
// Time: the race has no deadline of its own. Its owner, a dial with the
// request's one timeout, destroys it when that passes (which cancels every
// attempt); each attempt is given the time left until `deadline_ms` (loop
// time, uv_now).
//
// Callbacks: `done` is called once, on the loop thread, never inside start(),
// never after cancel() or destruction; it may destroy the race. An Attempt's
// `done` must not be called inside the Attempt call itself, nor after its
// handle was cancelled; the race drops an attempt's handle (without
// cancelling it) once the attempt has answered, so a handle may own its
// attempt. `on_address` (may be empty) is called with the family of each
// address as its attempt starts; it must not destroy the race.
//
// Ownership: a member of its dial; may be destroyed at any time.
#pragma once

#include <sys/socket.h>
#include <uv.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "net/dial_handle.h"
#include "net/failure_reason.h"
#include "net/socket_address.h"
#include "util/error.h"
#include "util/uv_handle.h"

namespace connmgr {

// IPv6 first, families interleaved, each family in the order given.
std::vector<sockaddr_storage> order_for_racing(const std::vector<sockaddr_storage>& addresses);

template <typename T>
class AddressRace {
 public:
  using AttemptDone = std::function<void(Result<T>)>;
  // Dials one address within `time_left`; answers through `done`.
  using Attempt =
      std::function<DialHandle(const sockaddr_storage& address, std::chrono::milliseconds time_left, AttemptDone done)>;
  using Done = std::function<void(Result<T>)>;

  AddressRace() = default;
  ~AddressRace() { cancel(); }
  AddressRace(const AddressRace&) = delete;
  AddressRace& operator=(const AddressRace&) = delete;

  // The addresses are dialled in order_for_racing's order.
  void start(uv_loop_t* loop, const std::vector<sockaddr_storage>& addresses, std::chrono::milliseconds attempt_delay,
             uint64_t deadline_ms, std::function<void(int family)> on_address, Attempt attempt, Done done) {
    cancel();
    loop_ = loop;
    addresses_ = order_for_racing(addresses);
    next_ = 0;
    tried_.clear();
    failure_.reset();
    delay_ = static_cast<uint64_t>(std::max<int64_t>(0, attempt_delay.count()));
    deadline_ms_ = deadline_ms;
    on_address_ = std::move(on_address);
    attempt_ = std::move(attempt);
    done_ = std::move(done);
    // One address (an IP literal, most dials) needs no stagger timer.
    if (addresses_.size() != 1 && !stagger_.initialized()) stagger_.init(loop_);
    // No attempt answers inside its Attempt call, so neither does the race
    // inside start(); with nothing to dial it answers on the next turn.
    if (addresses_.empty())
      stagger_.start(0, [this] { finish(Error::internal("no address to dial")); });
    else
      dial_next();
  }

  // Every attempt under way is cancelled; `done` will not be called.
  void cancel() {
    done_ = nullptr;
    stagger_.stop();
    for (auto& [index, handle] : std::exchange(under_way_, {})) handle.cancel();
  }

  // The addresses dialled so far, in the order they were ("::1", "127.0.0.1").
  const std::vector<std::string>& tried() const { return tried_; }

 private:
  void dial_next() {
    const size_t index = next_++;
    const sockaddr_storage& address = addresses_[index];
    tried_.push_back(format_host(reinterpret_cast<const sockaddr*>(&address)));
    if (next_ < addresses_.size())
      stagger_.start(delay_, [this] { dial_next(); });
    else
      stagger_.stop();
    if (on_address_) on_address_(address.ss_family);
    uv_update_time(loop_);
    const uint64_t now = uv_now(loop_);
    const std::chrono::milliseconds left(deadline_ms_ > now ? deadline_ms_ - now : 1);
    DialHandle handle = attempt_(address, left, [this, index](Result<T> r) { on_attempt_done(index, std::move(r)); });
    under_way_.emplace(index, std::move(handle));
  }

  void on_attempt_done(size_t index, Result<T> result) {
    // Dropped, not cancelled: the attempt has answered (and the handle may
    // own it: it is destroyed here, its callback being its last statement).
    if (under_way_.erase(index) == 0) return;
    if (result.ok()) return finish(std::move(result));
    const Error& e = result.error();
    if (!failure_ || e.reason() != reason::kLocalNetwork || failure_->reason() == reason::kLocalNetwork)
      failure_ = e;
    if (next_ < addresses_.size()) return dial_next();  // a failure starts the next at once
    if (under_way_.empty()) finish(*failure_);
  }

  // The winner's answer, or the failure: the others are cancelled first.
  void finish(Result<T> result) {
    auto done = std::move(done_);
    cancel();
    if (done) done(std::move(result));  // last: may destroy this
  }

  uv_loop_t* loop_ = nullptr;
  std::vector<sockaddr_storage> addresses_;
  size_t next_ = 0;
  uint64_t delay_ = 0;
  uint64_t deadline_ms_ = 0;
  std::function<void(int)> on_address_;
  Attempt attempt_;
  Done done_;
  Timer stagger_;  // the next address's start
  std::map<size_t, DialHandle> under_way_;
  std::vector<std::string> tried_;
  std::optional<Error> failure_;
};

}  // namespace connmgr
