// ThreadPoolBlocker: keeps every thread of libuv's pool asleep for a while,
// so that a uv_getaddrinfo queued meanwhile waits: a name resolution that
// is slow on demand, without a slow DNS server. The loop must run until
// wait_done() before it is closed (the work items call back on it).
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"

namespace connmgr::test {

class ThreadPoolBlocker {
 public:
  ThreadPoolBlocker(uv_loop_t* loop, std::chrono::milliseconds how_long)
      : loop_(loop), how_long_(how_long) {
    // libuv's pool has 4 threads unless UV_THREADPOOL_SIZE says otherwise.
    const char* env = getenv("UV_THREADPOOL_SIZE");
    const int threads = env && atoi(env) > 0 ? atoi(env) : 4;
    work_.resize(static_cast<size_t>(threads));
    for (auto& w : work_) {
      w.data = this;
      uv_queue_work(
          loop_, &w,
          [](uv_work_t* r) {
            std::this_thread::sleep_for(static_cast<ThreadPoolBlocker*>(r->data)->how_long_);
          },
          [](uv_work_t* r, int) { static_cast<ThreadPoolBlocker*>(r->data)->finished_++; });
    }
  }
  // Runs the loop until every work item has called back (bounded).
  bool wait_done() {
    return run_until(loop_, [this] { return finished_ == static_cast<int>(work_.size()); },
                     how_long_ + std::chrono::seconds(10));
  }
  ~ThreadPoolBlocker() { wait_done(); }

 private:
  uv_loop_t* loop_;
  std::chrono::milliseconds how_long_;
  std::vector<uv_work_t> work_;
  int finished_ = 0;
};

}  // namespace connmgr::test
