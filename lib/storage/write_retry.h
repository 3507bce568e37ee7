// retry_when_locked: run a Store write now, and if another process holds the
// database's write lock (kStorage, reason "locked"), try again from a loop
// timer with growing delays until `limit` has passed; then report the last
// error ("locked past its limit"). The loop is never blocked.
//
// `write` is called on the loop thread, first on the next loop turn and again
// on each retry; `done` is called exactly once with its last result, never
// from inside retry_when_locked(). Returns a handle whose
// cancel() stops the retries (done is then not called).
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
  void cancel();

 private:
  std::weak_ptr<WriteRetry> retry_;
};

// `write` returns Status; a Result<T> producer can capture its value.
WriteRetryHandle retry_when_locked(uv_loop_t* loop, std::chrono::milliseconds limit,
                                   std::function<Status()> write,
                                   std::function<void(Status)> done);

}  // namespace connmgr
