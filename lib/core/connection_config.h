// ConnectionConfig: the connection manager's settings, filled by the daemon
// from flags, configuration file and defaults.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>

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
  // Racing a node's endpoints (docs/guide.md, "Racing a node's endpoints"):
  // the next candidate is dialled when the one before has neither succeeded
  // nor failed after the attempt delay: `race_delay` when set, else 1.5 x the
  // smoothed RTT of the endpoint dialled before clamped to [race_delay_min,
  // race_delay_max], 250 ms when that RTT is unknown. `race` false: one
  // endpoint at a time, each for its whole timeout.
  bool race = true;
  std::optional<std::chrono::milliseconds> race_delay;
  std::chrono::milliseconds race_delay_min{50};
  std::chrono::milliseconds race_delay_max{2000};
  // A supervised link that was up at least this long restarts its backoff
  // schedule when it drops; one that drops sooner continues it.
  std::chrono::milliseconds stable_link{60000};
};

}  // namespace connmgr
