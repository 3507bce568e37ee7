// Quick figures for QUIC: the median handshake time of sequential dials, and
// the memory (RSS) a held link costs, through the real QuicConnector against
// a QUIC server given on the command line (gtlsserver or connmgr-test-peer).
// Not a test; run by hand:
//   quic_link_bench PORT PIN [ALPN] [DIALS] [HELD] [IN_FLIGHT]
// Held links are dialled IN_FLIGHT (default 32) at a time, as a manager
// would, so that the figure is the cost of a held link and not of thousands
// of simultaneous handshakes timing out. Memory is reported twice: RSS, and
// the heap in use (mallinfo2), which fragmentation does not blur.
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <vector>

#include "quic/quic_connector.h"
#include "test_support.h"

using namespace connmgr;

namespace {

long rss_kib() {
  std::ifstream in("/proc/self/statm");
  long pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * sysconf(_SC_PAGESIZE) / 1024;
}

long heap_kib() { return static_cast<long>(mallinfo2().uordblks / 1024); }

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s PORT PIN [ALPN] [DIALS] [HELD] [IN_FLIGHT]\n", argv[0]);
    return 2;
  }
  const int port = atoi(argv[1]);
  const std::string pin = argv[2];
  const std::string alpn = argc > 3 ? argv[3] : "h3";
  const int dials = argc > 4 ? atoi(argv[4]) : 200;
  const int held = argc > 5 ? atoi(argv[5]) : 500;
  const int in_flight = argc > 6 ? atoi(argv[6]) : 32;
  uv_loop_t loop;
  uv_loop_init(&loop);
  QuicOptions o;
  o.idle_timeout = std::chrono::seconds(60);
  o.keepalive = std::chrono::seconds(20);
  auto connector = QuicConnector::create(&loop, o);
  if (!connector) return 1;
  DialRequest r;
  r.node_id = "bench";
  r.protocol = "quic";
  r.address = "127.0.0.1";
  r.port = port;
  r.alpn = alpn;
  r.pin_sha256 = pin;
  r.timeout = std::chrono::seconds(5);

  std::vector<double> times;
  int failed = 0;
  for (int i = 0; i < dials; ++i) {
    bool done = false;
    std::unique_ptr<Connection> c;
    const uint64_t t0 = uv_hrtime();
    (*connector)->connect(r, [&](Result<std::unique_ptr<Connection>> res) {
      done = true;
      if (res.ok()) c = std::move(res).value();
      else ++failed;
    });
    test::run_until(&loop, [&] { return done; }, std::chrono::seconds(10));
    times.push_back(static_cast<double>(uv_hrtime() - t0) / 1e6);
    c.reset();
  }
  std::sort(times.begin(), times.end());
  printf("quic handshake: median %.3f ms, p90 %.3f ms over %d dials (%d failed)\n", times[times.size() / 2],
         times[times.size() * 9 / 10], dials, failed);

  test::run_for(&loop, std::chrono::milliseconds(200));
  const long before = rss_kib();
  const long heap_before = heap_kib();
  std::vector<std::unique_ptr<Connection>> links;
  std::map<std::string, int> failures;
  int started = 0, pending = 0;
  std::function<void()> dial_more = [&] {
    while (started < held && pending < in_flight) {
      ++started;
      ++pending;
      (*connector)->connect(r, [&](Result<std::unique_ptr<Connection>> res) {
        --pending;
        if (res.ok()) links.push_back(std::move(res).value());
        else ++failures[res.error().reason()];
        dial_more();
      });
    }
  };
  dial_more();
  test::run_until(&loop, [&] { return started == held && pending == 0; }, std::chrono::seconds(120));
  test::run_for(&loop, std::chrono::milliseconds(300));
  const long after = rss_kib();
  const long heap_after = heap_kib();
  const double n = links.empty() ? 1.0 : static_cast<double>(links.size());
  printf("quic held links: %zu up, RSS +%ld KiB, %.1f KiB per link; heap +%ld KiB, %.1f KiB per link\n",
         links.size(), after - before, static_cast<double>(after - before) / n, heap_after - heap_before,
         static_cast<double>(heap_after - heap_before) / n);
  for (const auto& [why, count] : failures) printf("  failed: %d %s\n", count, why.c_str());
  links.clear();
  connector->reset();
  test::drain_loop(&loop);
  return 0;
}
