// ConnectionConfig: the connection manager's settings, filled by the daemon
// from flags, configuration file and defaults.
#pragma once

#include <chrono>
#include <cstddef>

namespace connmgr {

struct ConnectionConfig {
  std::chrono::milliseconds connection_timeout{10000};
  std::chrono::milliseconds base_retry_interval{1000};
  std::chrono::milliseconds max_retry_interval{60000};
  int max_retry_count = 5;  // retries after the first attempt
  // Fraction (0..1) of each delay drawn at random and subtracted; 0 keeps
  // the backoff formula exact (backoff.h).
  double retry_jitter = 0.0;
  // Dials under way at once; more wait for a free slot, in the order asked.
  // Every dial that completes is work on the loop (its answer, its events):
  // 10,000 connects let loose at once held the loop for ~100 ms, and every
  // other client's answer with it. Also bounds descriptors and ports in use.
  int max_concurrent_dials = 32;
  // Streams over links: bytes held per stream and direction (beyond it the
  // side that is ahead is no longer read), and streams open at once.
  size_t stream_buffer = 256 * 1024;
  size_t max_streams = 4096;
};

}  // namespace connmgr
