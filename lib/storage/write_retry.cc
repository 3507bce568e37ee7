#include "storage/write_retry.h"

#include <algorithm>
#include <utility>

namespace connmgr {

namespace {

// First retry delay and the cap of the doubling: a lock held for a commit
// (typically well under a millisecond in WAL mode) is met again within 5 ms,
// while a long foreign transaction costs at most ten attempts a second.
constexpr uint64_t kFirstDelayMs = 5;
constexpr uint64_t kMaxDelayMs = 100;

}  // namespace

WriteRetry::WriteRetry(uv_loop_t* loop, std::chrono::milliseconds limit, std::function<Status()> write,
                       std::function<void(Status)> done, std::function<void()> on_end)
    : loop_(loop),
      limit_ms_(static_cast<uint64_t>(std::max<int64_t>(limit.count(), 0))),
      write_(std::move(write)),
      done_(std::move(done)),
      on_end_(std::move(on_end)) {
  // uv_now is the loop's cached time; refresh it so that a limit counts
  // from this call, not from the start of the current loop turn.
  uv_update_time(loop_);
  started_ms_ = uv_now(loop_);
  timer_.init(loop_);  // uv_timer_init cannot fail
  timer_.start(0, [this] { on_timer(); });
}

void WriteRetry::cancel() {
  if (ended_) return;
  cancelled_ = true;
  done_ = nullptr;
  timer_.stop();
  // Inside write_: on_timer ends the retry once write_ has returned (ending
  // it here could destroy the retry, and write_ with it, while it runs).
  if (!writing_) end();
}

void WriteRetry::on_timer() {
  writing_ = true;
  Status st = write_();
  writing_ = false;
  ++attempts_;
  if (cancelled_) {  // from inside write_
    end();
    return;
  }
  uv_update_time(loop_);
  const uint64_t waited = uv_now(loop_) - started_ms_;
  const bool locked = !st.ok() && st.reason() == "locked";
  if (locked && waited < limit_ms_) {
    delay_ms_ = delay_ms_ == 0 ? kFirstDelayMs : std::min(delay_ms_ * 2, kMaxDelayMs);
    // The last attempt lands at the limit, not up to 100 ms after it.
    timer_.start(std::min(delay_ms_, limit_ms_ - waited), [this] { on_timer(); });
    return;
  }
  if (locked) st = locked_too_long(st);
  auto done = std::move(done_);
  end();  // may destroy this
  if (done) done(st);
}

Status WriteRetry::locked_too_long(const Status& last) const {
  return Error::storage("database locked for more than " + std::to_string(limit_ms_) +
                            " ms by another process (" + std::to_string(attempts_) +
                            " attempts): " + last.message(),
                        "locked");
}

void WriteRetry::end() {
  if (ended_) return;
  ended_ = true;
  done_ = nullptr;
  timer_.close();
  if (auto on_end = std::move(on_end_)) on_end();  // last: may destroy this
}

WriteRetries::Id WriteRetries::start(uv_loop_t* loop, std::chrono::milliseconds limit,
                                     std::function<Status()> write, std::function<void(Status)> done) {
  const Id id = next_id_++;
  auto retry = std::make_unique<WriteRetry>(loop, limit, std::move(write), std::move(done),
                                            [this, id] { remove(id); });
  retries_.push_back(Entry{id, std::move(retry)});
  return id;
}

void WriteRetries::cancel(Id id) {
  for (auto& entry : retries_) {
    if (entry.id == id) {
      entry.retry->cancel();  // leaves the set through on_end, unless inside its write
      return;
    }
  }
}

void WriteRetries::remove(Id id) {
  retries_.remove_if([id](const Entry& entry) { return entry.id == id; });
}

}  // namespace connmgr
