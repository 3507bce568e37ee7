#include "daemon/ctl/table.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace connmgr::ctl {
namespace {

using json = nlohmann::json;

bool colour_on() {
  static const bool on = isatty(STDOUT_FILENO) && !getenv("NO_COLOR");
  return on;
}

// Columns count characters a terminal shows: SGR escapes ("\033[1m") take
// none, and a UTF-8 sequence takes one (node names may hold any text).
size_t visible_width(const std::string& s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\033') {
      while (i < s.size() && s[i] != 'm') ++i;
      continue;
    }
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) ++n;
  }
  return n;
}

}  // namespace

std::string paint(const std::string& s, const char* code) {
  return colour_on() ? std::string("\033[") + code + "m" + s + "\033[0m" : s;
}

// "2026-11-24T09:30:00.123Z" -> "3m ago" / "in 20s".
std::string human_time(const json& v) {
  if (!v.is_string()) return "-";
  struct tm tm {};
  const std::string s = v.get<std::string>();
  if (!strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm)) return s;
  const time_t t = timegm(&tm);
  const long long d = static_cast<long long>(time(nullptr)) - static_cast<long long>(t);
  const long long a = d < 0 ? -d : d;
  std::string span;
  if (a < 60) span = std::to_string(a) + "s";
  else if (a < 3600) span = std::to_string(a / 60) + "m";
  else if (a < 86400) span = std::to_string(a / 3600) + "h";
  else span = std::to_string(a / 86400) + "d";
  return d < 0 ? "in " + span : span + " ago";
}

std::string text(const json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
  if (v.is_number_float()) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.2f", v.get<double>());
    return buf;
  }
  return v.dump();
}

void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = visible_width(header[i]);
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size() && i < width.size(); ++i) width[i] = std::max(width[i], visible_width(r[i]));
  auto line = [&](const std::vector<std::string>& r, bool head) {
    std::string out;
    for (size_t i = 0; i < r.size(); ++i) {
      std::string cell = r[i];
      if (i + 1 < r.size() && i < width.size()) cell.append(width[i] - visible_width(r[i]) + 2, ' ');
      out += cell;
    }
    printf("%s\n", head ? paint(out, "1").c_str() : out.c_str());
  };
  line(header, true);
  for (const auto& r : rows) line(r, false);
}

}  // namespace connmgr::ctl
