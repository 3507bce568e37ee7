// ConnectionConfig: the manager's settings (the seed's ConnectionConfig),
// filled by the daemon from flags, configuration file and defaults.
#pragma once

#include <chrono>

namespace connmgr {

struct ConnectionConfig {
  std::chrono::milliseconds connection_timeout{10000};
  std::chrono::milliseconds base_retry_interval{1000};
  std::chrono::milliseconds max_retry_interval{60000};
  int max_retry_count = 5;  // retries after the first attempt
  // Fraction (0..1) of each delay drawn at random and subtracted; 0 keeps
  // API.md's formula exact.
  double retry_jitter = 0.0;
};

}  // namespace connmgr
