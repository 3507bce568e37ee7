#include "rpc/raw_id.h"

#include <cstring>

#include <nlohmann/json.hpp>

namespace connmgr::rpc {

namespace {

// A cursor over valid JSON text.
class Scanner {
 public:
  explicit Scanner(std::string_view text) : p_(text.data()), end_(text.data() + text.size()) {}

  bool at_end() const { return p_ >= end_; }
  char peek() const { return p_ < end_ ? *p_ : '\0'; }
  void advance() {
    if (p_ < end_) ++p_;
  }
  const char* pos() const { return p_; }

  void skip_ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }

  // At '"': moves past the closing quote; returns the text with its quotes.
  std::string_view string() {
    const char* start = p_;
    ++p_;
    while (p_ < end_) {
      const void* hit = memchr(p_, '"', static_cast<size_t>(end_ - p_));
      if (!hit) break;
      const char* q = static_cast<const char*>(hit);
      // The quote ends the string unless an odd number of backslashes precede it.
      size_t backslashes = 0;
      for (const char* b = q; b > p_ && b[-1] == '\\'; --b) ++backslashes;
      p_ = q + 1;
      if (backslashes % 2 == 0) return {start, static_cast<size_t>(p_ - start)};
    }
    p_ = end_;
    return {start, static_cast<size_t>(p_ - start)};
  }

  // Skips one value; returns its text.
  std::string_view value() {
    skip_ws();
    const char* start = p_;
    if (at_end()) return {};
    const char c = *p_;
    if (c == '"') return string();
    if (c == '{' || c == '[') {
      // Nested: count brackets; strings may hold brackets and quotes.
      size_t depth = 0;
      while (p_ < end_) {
        const char d = *p_;
        if (d == '"') {
          string();
          continue;
        }
        ++p_;
        if (d == '{' || d == '[') {
          ++depth;
        } else if (d == '}' || d == ']') {
          if (--depth == 0) break;
        }
      }
      return {start, static_cast<size_t>(p_ - start)};
    }
    // Number or literal: up to the next delimiter.
    while (p_ < end_) {
      const char d = *p_;
      if (d == ',' || d == '}' || d == ']' || d == ' ' || d == '\t' || d == '\n' || d == '\r') break;
      ++p_;
    }
    return {start, static_cast<size_t>(p_ - start)};
  }

 private:
  const char* p_;
  const char* end_;
};

// Does the raw key (quotes included) spell "id"? Escaped spellings such as
// "\u0069d" are decoded by the parser (rare: only when a backslash is there).
bool key_is_id(std::string_view raw) {
  if (raw == "\"id\"") return true;
  if (raw.find('\\') == std::string_view::npos) return false;
  const auto decoded = nlohmann::json::parse(raw, nullptr, false);
  return decoded.is_string() && decoded.get_ref<const std::string&>() == "id";
}

// At '{': scans the object's members, returns the last "id" value's text.
std::string_view object_id(Scanner& s) {
  std::string_view id;
  s.advance();  // '{'
  for (;;) {
    s.skip_ws();
    if (s.at_end()) return id;
    if (s.peek() == '}') {
      s.advance();
      return id;
    }
    if (s.peek() == ',') {
      s.advance();
      continue;
    }
    if (s.peek() != '"') return id;  // not valid JSON: give up
    const std::string_view key = s.string();
    s.skip_ws();
    if (s.peek() != ':') return id;
    s.advance();
    const std::string_view value = s.value();
    if (key_is_id(key)) id = value;
  }
}

}  // namespace

std::string_view raw_id_of_object(std::string_view text) {
  Scanner s(text);
  s.skip_ws();
  if (s.peek() != '{') return {};
  return object_id(s);
}

void raw_ids_of_batch(std::string_view text, std::vector<std::string_view>& ids) {
  ids.clear();
  Scanner s(text);
  s.skip_ws();
  if (s.peek() != '[') return;
  s.advance();
  for (;;) {
    s.skip_ws();
    if (s.at_end() || s.peek() == ']') return;
    if (s.peek() == ',') {
      s.advance();
      continue;
    }
    if (s.peek() == '{') {
      ids.push_back(object_id(s));
    } else {
      const char* before = s.pos();
      s.value();
      if (s.pos() == before) return;  // no progress: not valid JSON
      ids.emplace_back();
    }
  }
}

}  // namespace connmgr::rpc
