#include "metrics/exposition.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>

namespace connmgr::metrics {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const char x = (a[i] >= 'A' && a[i] <= 'Z') ? static_cast<char>(a[i] + 32) : a[i];
    const char y = (b[i] >= 'A' && b[i] <= 'Z') ? static_cast<char>(b[i] + 32) : b[i];
    if (x != y) return false;
  }
  return true;
}

// One media range of an Accept header: its type, q and version parameter.
struct MediaRange {
  std::string_view type;
  double q = 1.0;
  std::string_view version;
};

MediaRange parse_range(std::string_view range) {
  MediaRange r;
  size_t semi = range.find(';');
  r.type = trim(range.substr(0, semi));
  while (semi != std::string_view::npos) {
    range.remove_prefix(semi + 1);
    semi = range.find(';');
    const std::string_view param = trim(range.substr(0, semi));
    const size_t eq = param.find('=');
    if (eq == std::string_view::npos) continue;
    const std::string_view key = trim(param.substr(0, eq));
    std::string_view value = trim(param.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
      value = value.substr(1, value.size() - 2);
    if (iequals(key, "q")) {
      const std::string v(value);
      char* end = nullptr;
      const double q = std::strtod(v.c_str(), &end);
      r.q = (end != v.c_str() && std::isfinite(q)) ? std::clamp(q, 0.0, 1.0) : 0.0;
    } else if (iequals(key, "version")) {
      r.version = value;
    }
  }
  return r;
}

}  // namespace

std::string_view content_type(Format format) {
  return format == Format::kOpenMetrics ? kOpenMetricsContentType : kTextContentType;
}

Format negotiate(std::string_view accept) {
  double q_open = 0;  // application/openmetrics-text in a version served here
  double q_text = 0;  // text/plain, text/* or */*
  while (!accept.empty()) {
    const size_t comma = accept.find(',');
    const MediaRange r = parse_range(accept.substr(0, comma));
    accept.remove_prefix(comma == std::string_view::npos ? accept.size() : comma + 1);
    if (iequals(r.type, "application/openmetrics-text")) {
      // 0.0.1 is the draft Prometheus still asks for second; 1.0.0 differs
      // from it in nothing this daemon writes.
      if (r.version.empty() || r.version == "1.0.0" || r.version == "0.0.1")
        q_open = std::max(q_open, r.q);
    } else if (iequals(r.type, "text/plain") || iequals(r.type, "text/*") ||
               iequals(r.type, "*/*")) {
      q_text = std::max(q_text, r.q);
    }
  }
  return (q_open > 0 && q_open >= q_text) ? Format::kOpenMetrics : Format::kText;
}

void Exposition::family(std::string_view name, Type type, std::string_view help,
                        std::string_view unit) {
  type_ = type;
  name_.assign(name);
  // The text format names a counter's family as its samples are named, and
  // has no info type (an info is a gauge named ..._info there).
  std::string family(name);
  if (format_ == Format::kText) {
    if (type == Type::kCounter) family += "_total";
    if (type == Type::kInfo) family += "_info";
  }
  static constexpr std::string_view kTypeNames[] = {"counter", "gauge", "histogram", "info"};
  std::string_view type_name = kTypeNames[static_cast<int>(type)];
  if (format_ == Format::kText && type == Type::kInfo) type_name = "gauge";
  out_ += "# HELP ";
  out_ += family;
  out_ += ' ';
  // HELP text escapes backslash and newline in both formats (OpenMetrics
  // also the double quote).
  for (char c : help) {
    if (c == '\\') out_ += "\\\\";
    else if (c == '\n') out_ += "\\n";
    else if (c == '"' && format_ == Format::kOpenMetrics) out_ += "\\\"";
    else out_ += c;
  }
  out_ += "\n# TYPE ";
  out_ += family;
  out_ += ' ';
  out_ += type_name;
  out_ += '\n';
  if (format_ == Format::kOpenMetrics && !unit.empty()) {
    out_ += "# UNIT ";
    out_ += family;
    out_ += ' ';
    out_ += unit;
    out_ += '\n';
  }
}

void Exposition::write_name(std::string_view suffix) {
  out_ += name_;
  out_ += suffix;
}

void Exposition::write_labels(Labels labels, const Label* extra) {
  if (labels.size() == 0 && !extra) return;
  out_ += '{';
  bool first = true;
  auto one = [&](const Label& l) {
    if (!first) out_ += ',';
    first = false;
    out_ += l.name;
    out_ += "=\"";
    for (char c : l.value) {
      if (c == '\\') out_ += "\\\\";
      else if (c == '"') out_ += "\\\"";
      else if (c == '\n') out_ += "\\n";
      else out_ += c;
    }
    out_ += '"';
  };
  for (const Label& l : labels) one(l);
  if (extra) one(*extra);
  out_ += '}';
}

void Exposition::write_value(uint64_t value) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  out_.append(buf, end);
}

void Exposition::write_value(double value) {
  if (std::isnan(value)) {
    out_ += "NaN";
  } else if (std::isinf(value)) {
    out_ += value > 0 ? "+Inf" : "-Inf";
  } else if (value == std::floor(value) && std::fabs(value) < 1e15) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, static_cast<int64_t>(value));
    out_.append(buf, end);
  } else {
    char buf[32];
    // General notation: 0.0005, not the shorter 5e-04.
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::general);
    out_.append(buf, end);
  }
}

void Exposition::sample(Labels labels, double value) {
  write_name(type_ == Type::kCounter ? "_total" : "");
  write_labels(labels);
  out_ += ' ';
  write_value(value);
  out_ += '\n';
}

void Exposition::sample(Labels labels, uint64_t value) {
  write_name(type_ == Type::kCounter ? "_total" : "");
  write_labels(labels);
  out_ += ' ';
  write_value(value);
  out_ += '\n';
}

void Exposition::info(Labels labels) {
  write_name("_info");
  write_labels(labels);
  out_ += " 1\n";
}

void Exposition::histogram(Labels labels, const Histogram& h) {
  uint64_t cumulative = 0;
  const auto& bounds = h.bounds();
  const auto& counts = h.counts();
  char le[32];
  for (size_t i = 0; i <= bounds.size(); ++i) {
    cumulative += counts[i];
    std::string_view le_value = "+Inf";
    if (i < bounds.size()) {
      auto [end, ec] = std::to_chars(le, le + sizeof le, bounds[i], std::chars_format::general);
      char* stop = end;
      // OpenMetrics writes bounds as canonical floats: 1.0, not 1.
      if (format_ == Format::kOpenMetrics && bounds[i] == std::floor(bounds[i]) &&
          std::string_view(le, static_cast<size_t>(end - le)).find_first_of(".e") ==
              std::string_view::npos) {
        *stop++ = '.';
        *stop++ = '0';
      }
      le_value = std::string_view(le, static_cast<size_t>(stop - le));
    }
    const Label extra{"le", le_value};
    write_name("_bucket");
    write_labels(labels, &extra);
    out_ += ' ';
    write_value(cumulative);
    out_ += '\n';
  }
  write_name("_sum");
  write_labels(labels);
  out_ += ' ';
  write_value(h.sum());
  out_ += '\n';
  write_name("_count");
  write_labels(labels);
  out_ += ' ';
  write_value(h.count());
  out_ += '\n';
}

std::string Exposition::finish() {
  if (format_ == Format::kOpenMetrics) out_ += "# EOF\n";
  return std::move(out_);
}

}  // namespace connmgr::metrics
