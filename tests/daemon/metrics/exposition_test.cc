#include "metrics/exposition.h"

#include <catch2/catch.hpp>

#include <array>

using namespace connmgr;
using namespace connmgr::metrics;

TEST_CASE("a counter's family is named with _total in the text format only", "[metrics]") {
  for (Format f : {Format::kText, Format::kOpenMetrics}) {
    Exposition e(f);
    e.family("connmgr_dials", Type::kCounter, "Dials ended.");
    e.sample({{"protocol", "tcp"}, {"result", "success"}}, uint64_t{3});
    const std::string text = e.finish();
    if (f == Format::kText) {
      CHECK(text ==
            "# HELP connmgr_dials_total Dials ended.\n"
            "# TYPE connmgr_dials_total counter\n"
            "connmgr_dials_total{protocol=\"tcp\",result=\"success\"} 3\n");
    } else {
      CHECK(text ==
            "# HELP connmgr_dials Dials ended.\n"
            "# TYPE connmgr_dials counter\n"
            "connmgr_dials_total{protocol=\"tcp\",result=\"success\"} 3\n"
            "# EOF\n");
    }
  }
}

TEST_CASE("label values and help text are escaped", "[metrics]") {
  Exposition e(Format::kText);
  e.family("connmgr_x", Type::kGauge, "a \\ b\nc");
  e.sample({{"v", "q\"\\\n"}}, 1.5);
  CHECK(e.finish() ==
        "# HELP connmgr_x a \\\\ b\\nc\n"
        "# TYPE connmgr_x gauge\n"
        "connmgr_x{v=\"q\\\"\\\\\\n\"} 1.5\n");
}

TEST_CASE("an info family is a gauge in the text format", "[metrics]") {
  Exposition t(Format::kText);
  t.family("connmgr_build", Type::kInfo, "Build.");
  t.info({{"version", "0.2.0"}});
  CHECK(t.finish() ==
        "# HELP connmgr_build_info Build.\n# TYPE connmgr_build_info gauge\n"
        "connmgr_build_info{version=\"0.2.0\"} 1\n");
  Exposition o(Format::kOpenMetrics);
  o.family("connmgr_build", Type::kInfo, "Build.");
  o.info({{"version", "0.2.0"}});
  CHECK(o.finish() ==
        "# HELP connmgr_build Build.\n# TYPE connmgr_build info\n"
        "connmgr_build_info{version=\"0.2.0\"} 1\n# EOF\n");
}

TEST_CASE("a histogram's buckets are cumulative and end with +Inf", "[metrics]") {
  static constexpr std::array<double, 3> kBounds{0.01, 0.1, 1};
  Histogram h(kBounds);
  h.observe(0.005);
  h.observe(0.01);  // on a bound: that bucket (le means <=)
  h.observe(0.5);
  h.observe(7);
  Exposition e(Format::kOpenMetrics);
  e.family("connmgr_dial_duration_seconds", Type::kHistogram, "Dials.", "seconds");
  e.histogram({{"protocol", "tcp"}}, h);
  CHECK(e.finish() ==
        "# HELP connmgr_dial_duration_seconds Dials.\n"
        "# TYPE connmgr_dial_duration_seconds histogram\n"
        "# UNIT connmgr_dial_duration_seconds seconds\n"
        "connmgr_dial_duration_seconds_bucket{protocol=\"tcp\",le=\"0.01\"} 2\n"
        "connmgr_dial_duration_seconds_bucket{protocol=\"tcp\",le=\"0.1\"} 2\n"
        "connmgr_dial_duration_seconds_bucket{protocol=\"tcp\",le=\"1.0\"} 3\n"
        "connmgr_dial_duration_seconds_bucket{protocol=\"tcp\",le=\"+Inf\"} 4\n"
        "connmgr_dial_duration_seconds_sum{protocol=\"tcp\"} 7.515\n"
        "connmgr_dial_duration_seconds_count{protocol=\"tcp\"} 4\n"
        "# EOF\n");
}

TEST_CASE("Accept picks OpenMetrics only when asked for at least as much as text", "[metrics]") {
  CHECK(negotiate("") == Format::kText);
  CHECK(negotiate("*/*") == Format::kText);
  CHECK(negotiate("text/plain;version=0.0.4") == Format::kText);
  CHECK(negotiate("application/openmetrics-text") == Format::kOpenMetrics);
  // What Prometheus 2.42 sends.
  CHECK(negotiate("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                  "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1") ==
        Format::kOpenMetrics);
  CHECK(negotiate("application/openmetrics-text; version=2.0.0") == Format::kText);
  CHECK(negotiate("application/openmetrics-text;q=0") == Format::kText);
  CHECK(negotiate("text/plain;q=0.9, application/openmetrics-text;q=0.5") == Format::kText);
  CHECK(negotiate("Application/OpenMetrics-Text ; Q=1") == Format::kOpenMetrics);
}
