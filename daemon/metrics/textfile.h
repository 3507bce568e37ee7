// The metrics textfile for node_exporter's textfile collector: the metrics
// written to a path at start and then every interval, atomically (readers
// see the previous file whole or the new one whole, never a part).
//
// Each write goes to a temporary file in the same directory
// (".<name>.<pid>.tmp", mode 0644 so node_exporter's user can read it),
// written fully, fsync'd, then renamed over the path. A failure leaves no
// temporary file behind and is reported to on_error once per kind of failure
// (the step and its errno) until a write succeeds again: a directory that
// went missing is said once, not every interval.
//
// The text is rendered on the loop; the file is written on libuv's thread
// pool, since fsync alone costs 5 to 7 ms on this machine's ext4 (a 40 KiB
// file: 0.4 ms without it), more than a scrape may take of the loop. One
// write at a time: a write asked for while one is under way follows it, once.
//
// Threads: the loop's thread only (the pool thread touches none of this
// object). The callbacks run on the loop; render and on_error must not
// destroy the MetricsTextfile. Destroying it with a write under way is safe:
// the write completes (or is cancelled) and reports nothing.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <set>
#include <string>

#include "util/uv_handle.h"

namespace connmgr::metrics {

class MetricsTextfile {
 public:
  using Render = std::function<std::string()>;
  using OnError = std::function<void(const std::string& error)>;

  MetricsTextfile(uv_loop_t* loop, std::string path, std::chrono::milliseconds interval,
                  Render render, OnError on_error);
  ~MetricsTextfile();
  MetricsTextfile(const MetricsTextfile&) = delete;
  MetricsTextfile& operator=(const MetricsTextfile&) = delete;

  // Writes at once, then every interval.
  void start();
  // No more writes started until start() (one under way completes).
  void stop();
  // Renders and starts one write now (or right after the one under way).
  void write_now();

  const std::string& path() const { return path_; }
  // A write is under way on the thread pool.
  bool writing() const { return write_ != nullptr; }
  // Writes that replaced the file, since construction.
  uint64_t writes() const { return writes_; }

 private:
  struct Write;  // one write's request and data, freed when libuv calls back

  static void write_file(uv_work_t* request);                 // on the pool
  static void after_write(uv_work_t* request, int status);   // on the loop
  void on_written(const Write& write);
  // Reports `kind` (the failing step and errno) unless already reported
  // since the last success.
  void fail(const std::string& kind, const std::string& message);

  uv_loop_t* loop_;
  std::string path_;
  std::string temp_path_;
  std::chrono::milliseconds interval_;
  Render render_;
  OnError on_error_;
  Timer timer_;
  Write* write_ = nullptr;
  bool again_ = false;
  uint64_t writes_ = 0;
  std::set<std::string> reported_;
};

}  // namespace connmgr::metrics
