// WalCheckpointer: SQLite WAL checkpoints on a libuv worker thread instead of
// inside a commit on the loop.
//
// SQLite checkpoints automatically when a commit leaves the WAL past ~1,000
// pages: it copies them into the database and syncs both files, inside that
// commit. During a bulk write (the postgres mirror's full resync) that held
// the loop 10-25 ms each time on a loaded machine. A Store that enables this
// (Store::checkpoint_in_background) replaces the automatic checkpoint with a
// WAL hook that asks for a PASSIVE checkpoint on the thread pool, run on a
// connection of its own (opened there, on first use): it never waits for
// the loop's writes nor blocks them.
//
// Ownership and threads: owned by the Store, used from the loop thread; the
// state a worker touches is shared with the work request, which keeps it
// alive until libuv calls the request back. close() waits (bounded) for a
// checkpoint under way, then closes the worker's connection.
#pragma once

#include <uv.h>

#include <memory>
#include <string>

namespace connmgr {

class WalCheckpointer {
 public:
  WalCheckpointer(uv_loop_t* loop, std::string uri);
  ~WalCheckpointer() { close(); }
  WalCheckpointer(const WalCheckpointer&) = delete;
  WalCheckpointer& operator=(const WalCheckpointer&) = delete;

  // The WAL has `pages` pages after a commit: checkpoints when that passes
  // kPages and none is under way.
  void wal_grew(int pages);
  void close();

  static constexpr int kPages = 1000;  // SQLite's automatic threshold

  struct Shared;

 private:
  uv_loop_t* loop_;
  std::shared_ptr<Shared> shared_;
};

}  // namespace connmgr
