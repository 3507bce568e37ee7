// Output for people, for connmgrctl: aligned tables, "3m ago" times, and
// colour only when stdout is a terminal and NO_COLOR is unset
// (https://no-color.org). Everything prints to stdout; nothing here owns state
// beyond the colour decision, made once per process.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace connmgr::ctl {

// Wraps `s` in the SGR `code` ("1" bold, "32" green...) when colour is on.
std::string paint(const std::string& s, const char* code);

// An RFC 3339 time of the API ("2026-11-24T09:30:00.123Z") relative to now:
// "3m ago", "in 20s"; "-" for null.
std::string human_time(const nlohmann::json& v);

// A JSON value as a table cell: strings bare, null as "-", booleans yes/no.
std::string text(const nlohmann::json& v);

// Prints the header (bold) and rows in columns two spaces apart, aligned on
// what is visible (colour escapes take no width).
void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);

}  // namespace connmgr::ctl
