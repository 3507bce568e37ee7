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
// The write is synchronous on the loop: a file of tens of KiB costs well
// under a millisecond on ext4, fsync included (measured in the tests' notes).
//
// Threads: the loop's thread only. The callbacks run on it; render and
// on_error must not destroy the MetricsTextfile.
#pragma once

#include <uv.h>

#include <chrono>
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
  ~MetricsTextfile() = default;  // the timer closes with it
  MetricsTextfile(const MetricsTextfile&) = delete;
  MetricsTextfile& operator=(const MetricsTextfile&) = delete;

  // Writes at once, then every interval.
  void start();
  // No more writes until start().
  void stop();
  // One write now; true when the file was replaced.
  bool write_now();

  const std::string& path() const { return path_; }

 private:
  // Reports `kind` (the failing step and errno) unless already reported
  // since the last success.
  void fail(const std::string& kind, const std::string& message);

  std::string path_;
  std::string temp_path_;
  std::chrono::milliseconds interval_;
  Render render_;
  OnError on_error_;
  Timer timer_;
  std::set<std::string> reported_;
};

}  // namespace connmgr::metrics
