#include "storage/wal_checkpointer.h"

#include <sqlite3.h>

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace connmgr {

struct WalCheckpointer::Shared {
  std::string uri;
  sqlite3* db = nullptr;  // the worker's: touched only while `running`, or once closed
  std::mutex mu;
  std::condition_variable idle;
  bool running = false;
  bool closed = false;
};

namespace {

// One checkpoint request; freed when libuv calls it back on the loop.
struct Work {
  uv_work_t req{};
  std::shared_ptr<WalCheckpointer::Shared> shared;
};

void checkpoint(uv_work_t* req) {
  auto& s = *static_cast<Work*>(req->data)->shared;
  if (!s.db &&
      sqlite3_open_v2(s.uri.c_str(), &s.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI,
                      nullptr) != SQLITE_OK) {
    sqlite3_close_v2(s.db);
    s.db = nullptr;
  }
  // PASSIVE: copies what no reader still needs, waits for no one. A
  // failure (busy, I/O) leaves the frames for the next one.
  if (s.db) sqlite3_wal_checkpoint_v2(s.db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.running = false;
  }
  s.idle.notify_all();
}

void checkpointed(uv_work_t* req, int) { delete static_cast<Work*>(req->data); }

}  // namespace

WalCheckpointer::WalCheckpointer(uv_loop_t* loop, std::string uri)
    : loop_(loop), shared_(std::make_shared<Shared>()) {
  shared_->uri = std::move(uri);
}

void WalCheckpointer::wal_grew(int pages) {
  if (pages < kPages || !shared_) return;
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (shared_->running || shared_->closed) return;
    shared_->running = true;
  }
  auto* work = new Work{};
  work->req.data = work;
  work->shared = shared_;
  if (uv_queue_work(loop_, &work->req, &checkpoint, &checkpointed) != 0) {
    delete work;
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->running = false;
  }
}

void WalCheckpointer::close() {
  if (!shared_) return;
  std::unique_lock<std::mutex> lock(shared_->mu);
  shared_->closed = true;
  // Shutdown only: a checkpoint takes milliseconds; a stuck one is left to
  // finish on its own (its connection then stays open until exit).
  if (shared_->idle.wait_for(lock, std::chrono::seconds(5), [this] { return !shared_->running; })) {
    sqlite3_close_v2(shared_->db);
    shared_->db = nullptr;
  }
  lock.unlock();
  shared_.reset();
}

}  // namespace connmgr
