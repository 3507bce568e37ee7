// The log's cap on lines per second and the per-node summary of repeated
// dial failures, driven with a clock of the test's own.
#include "systemd/log_throttle.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

using namespace connmgr::daemon;

TEST_CASE("the limiter lets a burst through, then its rate", "[log_throttle]") {
  LineLimiter l(50, 100);
  int64_t now = 1000;
  int passed = 0;
  for (int i = 0; i < 1000; ++i) passed += l.admit(now);
  CHECK(passed == 100);
  CHECK(l.suppressed() == 900);
  // One second later: 50 more, and no more than that however many try.
  now += 1000;
  passed = 0;
  for (int i = 0; i < 1000; ++i) passed += l.admit(now);
  CHECK(passed == 50);
  // A steady 10 lines a second, under the rate, all pass after a refill.
  now += 10000;
  passed = 0;
  for (int i = 0; i < 100; ++i) {
    now += 100;
    passed += l.admit(now);
  }
  CHECK(passed == 100);
}

TEST_CASE("the limiter reports what it suppressed at most once a second", "[log_throttle]") {
  LineLimiter l(1, 2);
  int64_t now = 0;
  CHECK(l.take_report(now) == 0);  // nothing suppressed: no report
  CHECK(l.admit(now));
  CHECK(l.admit(now));
  CHECK_FALSE(l.admit(now));
  CHECK_FALSE(l.admit(now));
  CHECK(l.take_report(now) == 2);
  CHECK(l.suppressed() == 0);
  CHECK_FALSE(l.admit(now + 10));
  CHECK(l.take_report(now + 10) == 0);  // within the second of the last report
  CHECK(l.take_report(now + 999) == 0);
  CHECK(l.take_report(now + 1000) == 1);
  CHECK(l.take_report(now + 5000) == 0);  // reported already
}

TEST_CASE("a clock that steps back neither adds tokens nor breaks the bucket", "[log_throttle]") {
  LineLimiter l(10, 1);
  CHECK(l.admit(5000));
  CHECK_FALSE(l.admit(1000));
  CHECK_FALSE(l.admit(5050));  // 50 ms after the latest time seen: half a token
  CHECK(l.admit(5100));
}

namespace {
struct Line {
  std::string node;
  uint64_t count;
  std::string reasons;
};
std::vector<Line> flush(FailureSummary& s) {
  std::vector<Line> out;
  s.flush([&](const FailureSummary::Repeats& r) { out.push_back({r.node, r.count, r.reasons}); });
  return out;
}
}  // namespace

TEST_CASE("a series's first failure is a line, its repeats one summary per period", "[log_throttle]") {
  FailureSummary s;
  CHECK(s.on_failure("n1", "refused"));
  CHECK(s.on_failure("n2", "timeout"));
  for (int i = 0; i < 2132; ++i) CHECK_FALSE(s.on_failure("n1", "refused"));
  CHECK_FALSE(s.on_failure("n1", "timeout"));
  auto lines = flush(s);
  REQUIRE(lines.size() == 1);  // n2 failed once: nothing to sum up
  CHECK(lines[0].node == "n1");
  CHECK(lines[0].count == 2133);
  CHECK(lines[0].reasons == "refused:2132,timeout:1");
  // The series goes on in the next period: still no first-failure line.
  CHECK_FALSE(s.on_failure("n1", "refused"));
  lines = flush(s);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].count == 1);
  CHECK(lines[0].reasons == "refused:1");
  CHECK(flush(s).empty());
}

TEST_CASE("a success or a state change ends a series", "[log_throttle]") {
  FailureSummary s;
  CHECK(s.on_failure("n1", "refused"));
  CHECK_FALSE(s.on_failure("n1", "refused"));
  s.end_series("n1");
  CHECK(s.on_failure("n1", "refused"));  // a new series: its first failure is a line
  CHECK_FALSE(s.on_failure("n1", "refused"));
  CHECK(s.in_series("n1"));
  s.end_series("n1");
  CHECK_FALSE(s.in_series("n1"));
  auto lines = flush(s);
  // The repeats of both series are summed up: none is lost.
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].count == 2);
  CHECK(s.tracked_nodes() == 0);  // ended and summed up: forgotten
  // A series that ends with no repeat leaves nothing behind.
  CHECK(s.on_failure("n2", "refused"));
  s.end_series("n2");
  CHECK(s.tracked_nodes() == 0);
  CHECK(flush(s).empty());
}

TEST_CASE("the summary holds only the nodes that failed in the last period", "[log_throttle]") {
  FailureSummary s;
  for (int i = 0; i < 1000; ++i) {
    s.on_failure("n" + std::to_string(i), "refused");
    s.on_failure("n" + std::to_string(i), "refused");
  }
  CHECK(s.tracked_nodes() == 1000);
  CHECK(flush(s).size() == 1000);
  CHECK(s.tracked_nodes() == 1000);  // they failed in the period that ended
  CHECK_FALSE(s.on_failure("n7", "refused"));
  CHECK(flush(s).size() == 1);
  CHECK(s.tracked_nodes() == 1);  // the others were quiet a whole period: forgotten
  CHECK(flush(s).empty());
  CHECK(s.tracked_nodes() == 0);
  CHECK(s.on_failure("n7", "refused"));  // quiet a period: a new series
}
