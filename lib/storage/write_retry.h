// retry_when_locked: run a Store write, and if another process holds the
// database's write lock (kStorage, reason "locked"), try again from a loop
// timer with growing delays (5, 10, 20, 40, 80, then every 100 ms) until
// `limit` has passed since the call; then report kStorage, reason "locked",
// "database locked for more than N ms: ...". Any other outcome (success or
// another error) is reported at once. The loop is never blocked.
//
// Callbacks: `write` is called on the loop thread, first on the next loop turn
// (a zero-delay timer, never inside retry_when_locked()) and again on each
// retry; `done` is called exactly once with the last result, also never from
// inside retry_when_locked(), so a caller may finish setting up its own state
// after the call. The returned handle's cancel() stops the retries: after it
// neither callback runs again (it may be called from inside `write`). The
// retry owns itself until it ends; its timer is freed in the close callback,
// so the loop must run once more after the end before it is closed.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include <uv.h>

#include "util/error.h"

namespace connmgr {

class WriteRetry;

class WriteRetryHandle {
 public:
  WriteRetryHandle() = default;
  explicit WriteRetryHandle(std::weak_ptr<WriteRetry> retry) : retry_(std::move(retry)) {}
  // Stops the retries; `done` is not called. A no-op once the retry ended.
  void cancel();

 private:
  std::weak_ptr<WriteRetry> retry_;
};

// `write` returns Status; a Result<T> producer can capture its value.
WriteRetryHandle retry_when_locked(uv_loop_t* loop, std::chrono::milliseconds limit,
                                   std::function<Status()> write,
                                   std::function<void(Status)> done);

}  // namespace connmgr
