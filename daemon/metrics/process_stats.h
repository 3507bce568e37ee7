// The standard process_* figures Prometheus' client libraries export (names
// and HELP texts as client_golang's process collector has them), read from
// /proc for this process.
//
// Cost: one read of /proc/self/stat, one of /proc/stat's btime line, and the
// count of open descriptors from stat("/proc/self/fd") (Linux 6.2 and
// later: its size is the count), so that a scrape stays cheap with 20,000
// descriptors open; older kernels list /proc/self/fd instead (getdents64,
// ~17 ms with 20,000).
//
// Threads: any; no shared state.
#pragma once

#include <cstdint>

#include "metrics/exposition.h"
#include "util/error.h"

namespace connmgr::metrics {

struct ProcessStats {
  double cpu_seconds = 0;          // user + system
  uint64_t resident_bytes = 0;
  uint64_t virtual_bytes = 0;
  uint64_t open_fds = 0;
  uint64_t max_fds = 0;            // the soft RLIMIT_NOFILE
  double start_time_seconds = 0;   // since the Unix epoch
};

Result<ProcessStats> read_process_stats();

// process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds,
// process_start_time_seconds.
void write_process_metrics(Exposition& out, const ProcessStats& stats);

}  // namespace connmgr::metrics
