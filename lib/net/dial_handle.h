// DialHandle: returned by every asynchronous dial, so that its owner can end
// it. cancel() is idempotent and safe after the dial has completed; after it
// returns, the dial's callback is never called. Destroying a handle does not
// cancel (a handle may be dropped when the caller does not care).
#pragma once

#include <functional>
#include <utility>

namespace connmgr {

class DialHandle {
 public:
  DialHandle() = default;
  explicit DialHandle(std::function<void()> cancel) : cancel_(std::move(cancel)) {}

  void cancel() {
    if (cancel_) {
      auto fn = std::move(cancel_);
      cancel_ = nullptr;
      fn();
    }
  }
  bool empty() const { return !cancel_; }

 private:
  std::function<void()> cancel_;
};

}  // namespace connmgr
