// Writing metrics in the two text formats Prometheus scrapes: the text
// format 0.0.4 (the default, and the `metrics` method's) and OpenMetrics 1.0
// (when a scraper asks for it through Accept). The formats differ in little:
// a counter's family is named without `_total` in OpenMetrics (its samples
// keep it), an info family has its own type there (a gauge of value 1 in
// 0.0.4), OpenMetrics may state a family's unit, and ends with "# EOF".
//
// Exposition is a writer: family() starts a family (HELP and TYPE lines),
// then sample()/histogram() add its samples. Label values are escaped
// (backslash, double quote, newline); names are the caller's constants.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "util/histogram.h"

namespace connmgr::metrics {

enum class Format { kText, kOpenMetrics };

inline constexpr std::string_view kTextContentType = "text/plain; version=0.0.4; charset=utf-8";
inline constexpr std::string_view kOpenMetricsContentType =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

std::string_view content_type(Format format);

// The format an HTTP Accept header asks for: OpenMetrics when it names
// application/openmetrics-text with a q above 0 (and version 1.0.0 or none)
// ranked at least as high as text/plain; else the text format.
Format negotiate(std::string_view accept);

enum class Type { kCounter, kGauge, kHistogram, kInfo };

struct Label {
  std::string_view name;
  std::string_view value;
};
using Labels = std::initializer_list<Label>;

class Exposition {
 public:
  explicit Exposition(Format format) : format_(format) {}

  // Starts a family. `name` is the family's name as the text format has it
  // without a counter's "_total" or an info's "_info" (connmgr_dials for
  // connmgr_dials_total, connmgr_build for connmgr_build_info); `unit`, when
  // given, must be the name's last part (OpenMetrics states it).
  void family(std::string_view name, Type type, std::string_view help,
              std::string_view unit = {});
  // A sample of the current family (a counter's gets "_total", an info's
  // "_info" and the value 1).
  void sample(Labels labels, double value);
  void sample(Labels labels, uint64_t value);
  void sample(Labels labels, int64_t value) { sample(labels, static_cast<double>(value)); }
  void info(Labels labels);
  // A histogram's _bucket (cumulative, le="+Inf" last), _sum and _count.
  void histogram(Labels labels, const Histogram& h);

  // The text so far, with OpenMetrics' "# EOF" when that is the format.
  std::string finish();
  Format format() const { return format_; }

 private:
  void write_name(std::string_view suffix);
  void write_labels(Labels labels, const Label* extra = nullptr);
  void write_value(double value);
  void write_value(uint64_t value);

  Format format_;
  Type type_ = Type::kGauge;
  std::string name_;
  std::string out_;
};

}  // namespace connmgr::metrics
