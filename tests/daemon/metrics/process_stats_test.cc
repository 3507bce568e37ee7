#include "metrics/process_stats.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <vector>

using namespace connmgr;
using namespace connmgr::metrics;

namespace {

// When this test program started (static initialisation runs first thing).
const time_t kProgramStart = time(nullptr);

ProcessStats stats_now() {
  Result<ProcessStats> stats = read_process_stats();
  if (!stats) FAIL(stats.error().message());
  return *stats;
}

struct OpenFds {
  std::vector<int> fds;
  explicit OpenFds(size_t n) {
    const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    for (size_t i = 0; i < n; ++i) {
      const int fd = fcntl(null_fd, F_DUPFD_CLOEXEC, 0);
      if (fd < 0) break;
      fds.push_back(fd);
    }
    close(null_fd);
  }
  ~OpenFds() {
    for (int fd : fds) close(fd);
  }
};

}  // namespace

TEST_CASE("open_fds counts the descriptors opened", "[metrics][process]") {
  const uint64_t before = stats_now().open_fds;
  CHECK(before >= 3);
  {
    OpenFds more(200);
    REQUIRE(more.fds.size() == 200);
    CHECK(stats_now().open_fds == before + 200);
  }
  CHECK(stats_now().open_fds == before);
}

TEST_CASE("resident memory grows after touching 16 MiB", "[metrics][process]") {
  const uint64_t before = stats_now().resident_bytes;
  constexpr size_t kSize = 16u << 20;
  std::unique_ptr<char[]> block(new char[kSize]);
  std::memset(block.get(), 0x5a, kSize);
  const ProcessStats after = stats_now();
  CHECK(block[kSize - 1] == 0x5a);
  CHECK(after.resident_bytes >= before + 14 * (1u << 20));
  CHECK(after.virtual_bytes >= after.resident_bytes);
}

TEST_CASE("start time, CPU time and the descriptor limit", "[metrics][process]") {
  const ProcessStats stats = stats_now();
  // Start time: clock ticks (1/100 s) after boot, so within a second or two
  // of when this program began.
  CHECK(stats.start_time_seconds >= static_cast<double>(kProgramStart) - 2);
  CHECK(stats.start_time_seconds <= static_cast<double>(kProgramStart) + 2);
  rlimit limit{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &limit) == 0);
  CHECK(stats.max_fds == limit.rlim_cur);
  // Burn ~50 ms of CPU: the counter moves.
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
  volatile unsigned spin = 0;
  while (std::chrono::steady_clock::now() < until) spin = spin + 1;
  CHECK(stats_now().cpu_seconds > stats.cpu_seconds);
}

TEST_CASE("the process families are client_golang's", "[metrics][process]") {
  ProcessStats stats;
  stats.cpu_seconds = 1.5;
  stats.resident_bytes = 4096;
  stats.virtual_bytes = 8192;
  stats.open_fds = 7;
  stats.max_fds = 1024;
  stats.start_time_seconds = 1700000000;
  Exposition out(Format::kText);
  write_process_metrics(out, stats);
  const std::string text = out.finish();
  for (const char* line : {
           "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n",
           "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n",
           "# HELP process_max_fds Maximum number of open file descriptors.\n",
           "# TYPE process_max_fds gauge\nprocess_max_fds 1024\n",
           "# HELP process_open_fds Number of open file descriptors.\n",
           "process_open_fds 7\n",
           "# HELP process_resident_memory_bytes Resident memory size in bytes.\n",
           "process_resident_memory_bytes 4096\n",
           "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n",
           "process_start_time_seconds 1700000000\n",
           "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n",
           "process_virtual_memory_bytes 8192\n"}) {
    INFO(line);
    CHECK(text.find(line) != std::string::npos);
  }
}

TEST_CASE("read_process_stats stays cheap with 20,000 descriptors open", "[metrics][process]") {
  rlimit limit{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &limit) == 0);
  const rlimit saved = limit;
  limit.rlim_cur = std::min<rlim_t>(limit.rlim_max, 20000);
  REQUIRE(setrlimit(RLIMIT_NOFILE, &limit) == 0);
  {
    const uint64_t open_now = stats_now().open_fds;
    OpenFds many(limit.rlim_cur - open_now - 16);
    const ProcessStats stats = stats_now();
    CHECK(stats.open_fds == open_now + many.fds.size());
    constexpr int kRounds = 20;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kRounds; ++i) REQUIRE(read_process_stats().ok());
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / kRounds;
    std::printf("read_process_stats with %llu descriptors open: %.3f ms\n",
                static_cast<unsigned long long>(stats.open_fds), ms);
    CHECK(ms < 50);  // a generous bound for a loaded machine (measured: see the report)
  }
  REQUIRE(setrlimit(RLIMIT_NOFILE, &saved) == 0);
}
