// Retrying a Store write while another process holds the database's write
// lock (kStorage, reason "locked"): from a loop timer, with growing delays
// (5, 10, 20, 40, 80, then every 100 ms) until `limit` has passed since the
// start; then the answer is kStorage, reason "locked", "database locked for
// more than N ms: ...". Any other outcome (success or another error) is
// answered at once. The loop is never blocked.
//
// Callbacks: `write` is called on the loop thread, first on the next loop
// turn (a zero-delay timer, never inside the call that starts it) and again
// on each retry; `done` is called exactly once with the last result, also
// never from inside the start, so a caller may finish setting up its own
// state after it. cancel() stops the retries: after it neither callback runs
// again (it may be called from inside `write`).
//
// Ownership: a WriteRetry belongs to whoever starts it, and destroying it at
// any time (except from inside its own `write`: cancel() there) cancels it.
// Callers that start writes and do not keep each one (the daemon's API) keep
// a WriteRetries, which owns its retries until they answer and cancels the
// rest when destroyed. Timers are freed through the loop: run it once more
// after the last retry ends before closing it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>

#include <uv.h>

#include "util/error.h"
#include "util/uv_handle.h"

namespace connmgr {

class WriteRetry {
 public:
  // `write` returns Status; a Result<T> producer can capture its value.
  // `on_end`, if set, runs once the retry has ended (answered or cancelled),
  // before `done`; it may destroy the WriteRetry (WriteRetries does).
  WriteRetry(uv_loop_t* loop, std::chrono::milliseconds limit, std::function<Status()> write,
             std::function<void(Status)> done, std::function<void()> on_end = nullptr);
  ~WriteRetry() = default;  // the Timer closes: no callback after this
  WriteRetry(const WriteRetry&) = delete;
  WriteRetry& operator=(const WriteRetry&) = delete;

  // Stops the retries; `done` is not called. A no-op once the retry ended.
  void cancel();
  bool ended() const { return ended_; }

 private:
  void on_timer();
  Status locked_too_long(const Status& last) const;
  void end();

  uv_loop_t* loop_;
  uint64_t limit_ms_;
  std::function<Status()> write_;
  std::function<void(Status)> done_;
  std::function<void()> on_end_;
  Timer timer_;
  uint64_t started_ms_ = 0;
  uint64_t delay_ms_ = 0;
  int attempts_ = 0;
  bool cancelled_ = false;
  bool writing_ = false;  // inside write_: cancel() must not end the retry yet
  bool ended_ = false;
};

// Retries owned together, for callers that start writes without keeping
// each (each leaves the set when it ends). Destroying the set cancels the
// retries still running.
class WriteRetries {
 public:
  using Id = uint64_t;
  // Starts a retry as WriteRetry does; the id cancels it.
  Id start(uv_loop_t* loop, std::chrono::milliseconds limit, std::function<Status()> write,
           std::function<void(Status)> done);
  // A no-op once the retry ended.
  void cancel(Id id);
  size_t running() const { return retries_.size(); }

 private:
  struct Entry {
    Id id;
    std::unique_ptr<WriteRetry> retry;
  };
  void remove(Id id);

  std::list<Entry> retries_;
  Id next_id_ = 1;
};

}  // namespace connmgr
