#include "storage/write_retry.h"

#include <algorithm>

namespace connmgr {

// One write being retried. Owned by a shared_ptr held by its timer's data
// until the timer's close callback; handles hold weak_ptrs.
class WriteRetry : public std::enable_shared_from_this<WriteRetry> {
 public:
  WriteRetry(uv_loop_t* loop, std::chrono::milliseconds limit, std::function<Status()> write,
             std::function<void(Status)> done)
      : limit_(limit), write_(std::move(write)), done_(std::move(done)) {
    timer_ = new uv_timer_t;
    uv_timer_init(loop, timer_);
    started_ms_ = uv_now(loop);
  }

  void start(std::shared_ptr<WriteRetry> self) {
    self_ = std::move(self);  // alive until finish()
    timer_->data = this;
    // The first try runs on the next loop turn too, so that `done` never runs
    // inside retry_when_locked().
    arm(0);
  }

  void cancel() { finish(nullptr); }

 private:
  void arm(uint64_t delay_ms) {
    uv_timer_start(
        timer_, [](uv_timer_t* t) { static_cast<WriteRetry*>(t->data)->attempt(); }, delay_ms, 0);
  }

  void attempt() {
    Status st = write_();
    const uint64_t waited = uv_now(timer_->loop) - started_ms_;
    if (!st.ok() && st.reason() == "locked" && waited < static_cast<uint64_t>(limit_.count())) {
      // Another process holds the write lock: try again soon, backing off
      // from 5 ms to 100 ms so a long lock costs little.
      delay_ms_ = std::min<uint64_t>(delay_ms_ * 2, 100);
      arm(delay_ms_);
      return;
    }
    if (!st.ok() && st.reason() == "locked") {
      st = Error(ErrorCode::kStorage,
                 st.message() + "; gave up after " + std::to_string(waited) + " ms", "locked");
    }
    auto done = std::move(done_);
    finish(nullptr);
    if (done) done(st);
  }

  void finish(std::nullptr_t) {
    if (!timer_) return;
    done_ = nullptr;
    write_ = nullptr;
    uv_timer_stop(timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(timer_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    timer_ = nullptr;
    auto keep = std::move(self_);  // may free this at scope end
  }

  std::chrono::milliseconds limit_;
  std::function<Status()> write_;
  std::function<void(Status)> done_;
  uv_timer_t* timer_ = nullptr;
  uint64_t started_ms_ = 0;
  uint64_t delay_ms_ = 2;
  std::shared_ptr<WriteRetry> self_;
};

void WriteRetryHandle::cancel() {
  if (auto r = retry_.lock()) r->cancel();
}

WriteRetryHandle retry_when_locked(uv_loop_t* loop, std::chrono::milliseconds limit,
                                   std::function<Status()> write,
                                   std::function<void(Status)> done) {
  auto retry = std::make_shared<WriteRetry>(loop, limit, std::move(write), std::move(done));
  retry->start(retry);
  return WriteRetryHandle(retry);
}

}  // namespace connmgr
