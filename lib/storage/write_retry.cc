#include "storage/write_retry.h"

#include <algorithm>

namespace connmgr {

namespace {

// First retry delay and the cap of the doubling: a lock held for a commit
// (typically well under a millisecond in WAL mode) is met again within 5 ms,
// while a long foreign transaction costs at most ten attempts a second.
constexpr uint64_t kFirstDelayMs = 5;
constexpr uint64_t kMaxDelayMs = 100;

}  // namespace

// One write being retried. Holds a shared_ptr to itself (self_) from start()
// until finish(); handles hold weak_ptrs. The uv_timer_t is a separate heap
// object freed in its close callback, so it may outlive the WriteRetry.
class WriteRetry : public std::enable_shared_from_this<WriteRetry> {
 public:
  WriteRetry(uv_loop_t* loop, std::chrono::milliseconds limit, std::function<Status()> write,
             std::function<void(Status)> done)
      : limit_ms_(static_cast<uint64_t>(std::max<int64_t>(limit.count(), 0))),
        write_(std::move(write)),
        done_(std::move(done)) {
    timer_ = new uv_timer_t;
    uv_timer_init(loop, timer_);
    timer_->data = this;
    // uv_now is the loop's cached time; refresh it so that a limit counts
    // from this call, not from the start of the current loop turn.
    uv_update_time(loop);
    started_ms_ = uv_now(loop);
  }

  void start() {
    self_ = shared_from_this();
    arm(0);
  }

  void cancel() { finish(); }

 private:
  void arm(uint64_t delay_ms) {
    uv_timer_start(
        timer_, [](uv_timer_t* t) { static_cast<WriteRetry*>(t->data)->on_timer(); }, delay_ms, 0);
  }

  void on_timer() {
    // `write` may cancel this retry (and so drop self_): keep it alive.
    auto keep = shared_from_this();
    Status st = write_();
    ++attempts_;
    if (!timer_) return;  // cancelled from inside write
    uv_update_time(timer_->loop);
    const uint64_t waited = uv_now(timer_->loop) - started_ms_;
    const bool locked = !st.ok() && st.reason() == "locked";
    if (locked && waited < limit_ms_) {
      delay_ms_ = delay_ms_ == 0 ? kFirstDelayMs : std::min(delay_ms_ * 2, kMaxDelayMs);
      // The last attempt lands at the limit, not up to 100 ms after it.
      arm(std::min(delay_ms_, limit_ms_ - waited));
      return;
    }
    if (locked) {
      st = Error(ErrorCode::kStorage,
                 "database locked for more than " + std::to_string(limit_ms_) +
                     " ms by another process (" + std::to_string(attempts_) +
                     " attempts): " + st.message(),
                 "locked");
    }
    auto done = std::move(done_);
    finish();
    if (done) done(st);
  }

  void finish() {
    if (!timer_) return;
    done_ = nullptr;
    uv_timer_stop(timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(timer_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    timer_ = nullptr;
    self_.reset();  // may free this; callers hold `keep` where they use it after
  }

  uint64_t limit_ms_;
  std::function<Status()> write_;
  std::function<void(Status)> done_;
  uv_timer_t* timer_ = nullptr;
  uint64_t started_ms_ = 0;
  uint64_t delay_ms_ = 0;
  int attempts_ = 0;
  std::shared_ptr<WriteRetry> self_;
};

void WriteRetryHandle::cancel() {
  if (auto r = retry_.lock()) r->cancel();
}

WriteRetryHandle retry_when_locked(uv_loop_t* loop, std::chrono::milliseconds limit,
                                   std::function<Status()> write,
                                   std::function<void(Status)> done) {
  auto retry = std::make_shared<WriteRetry>(loop, limit, std::move(write), std::move(done));
  retry->start();
  return WriteRetryHandle(retry);
}

}  // namespace connmgr
