// The envelope read while parsing (rpc/envelope.h) against the document
// nlohmann builds from the same line: every member the dispatcher checks
// must say what the document says, repeated members and escapes included.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "rpc/envelope.h"

namespace connmgr::rpc {
namespace {

using Type = Envelope::Type;

Type type_of(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return Type::kNull;
    case json::value_t::boolean: return Type::kBool;
    case json::value_t::string: return Type::kString;
    case json::value_t::object: return Type::kObject;
    case json::value_t::array: return Type::kArray;
    default: return Type::kNumber;
  }
}

// What the dispatcher used to read from a request's document.
void check_against_document(const Envelope& e, const json& doc) {
  REQUIRE(e.is_object == doc.is_object());
  if (!doc.is_object()) return;
  auto type_at = [&](const char* key) {
    auto it = doc.find(key);
    return it == doc.end() ? Type::kAbsent : type_of(*it);
  };
  CHECK(e.id == type_at("id"));
  if (e.id == Type::kString || e.id == Type::kNumber || e.id == Type::kNull)
    CHECK(e.id_value == doc.at("id"));
  CHECK(e.jsonrpc == type_at("jsonrpc"));
  if (e.jsonrpc == Type::kString) CHECK(e.jsonrpc_text == doc.at("jsonrpc").get<std::string>());
  CHECK(e.method == type_at("method"));
  if (e.method == Type::kString) CHECK(e.method_name == doc.at("method").get<std::string>());
  CHECK(e.params == type_at("params"));
  if (e.params != Type::kAbsent) CHECK(e.params_value == doc.at("params"));
  std::optional<std::string> unknown;
  for (const auto& [key, value] : doc.items())
    if (key != "jsonrpc" && key != "method" && key != "params" && key != "id") {
      unknown = key;
      break;
    }
  CHECK(e.unknown_member == unknown);
}

void check_line(const std::string& line) {
  INFO(line);
  ParsedLine parsed;
  parse_line(line, 64, parsed);
  REQUIRE(parsed.outcome == ParsedLine::Outcome::kOk);
  const json doc = json::parse(line);
  REQUIRE(parsed.is_batch == doc.is_array());
  if (!doc.is_array()) {
    REQUIRE(parsed.requests.size() == 1);
    check_against_document(parsed.requests[0], doc);
    return;
  }
  REQUIRE(parsed.requests.size() == doc.size());
  for (size_t i = 0; i < doc.size(); ++i) check_against_document(parsed.requests[i], doc[i]);
}

TEST_CASE("the envelope says what the parsed document says") {
  const std::vector<std::string> lines = {
      R"({"jsonrpc":"2.0","id":1,"method":"status"})",
      R"({"jsonrpc":"2.0","method":"status","params":{"a":[1,{"b":null}],"c":"x"}})",
      R"({"jsonrpc":"2.0","id":"x","method":"m","params":[1,2.5,-3,true,null,"s",{}]})",
      R"({"jsonrpc":"2.0","id":null,"method":"m","params":7})",
      R"({"jsonrpc":"2.0","id":1.25e3,"method":"m","params":"p"})",
      R"({"jsonrpc":"2.0","id":-4,"method":"m","params":null})",
      R"({"jsonrpc":"2.0","id":18446744073709551615,"method":"m"})",
      R"({"jsonrpc":"2.0","id":true,"method":"m"})",
      R"({"jsonrpc":"2.0","id":{"a":[1]},"method":["m"],"params":{"x":{"y":{}}}})",
      R"({"jsonrpc":2,"method":{"a":"b"}})",
      R"({"jsonrpc":["2.0"],"id":[[]],"method":null})",
      R"({"id":1,"id":"two","method":"a","method":"b","jsonrpc":"1","jsonrpc":"2.0"})",
      R"({"id":[1],"id":2,"params":{"a":1},"params":[3],"params":{"b":{"c":[4]}}})",
      R"({"params":{"a":1},"params":5})",
      R"({"\u0069d":3,"\u006dethod":"st\u0061tus","j\u0073onrpc":"2.0"})",
      R"({"zeta":1,"alpha":{"k":[1,2]},"Beta":[],"id":1,"params":{"zeta":1}})",
      R"({"b":1,"a":2,"b\u0000":3})",
      R"({})",
      R"([])",
      R"(5)",
      R"("text")",
      R"(null)",
      R"([1,"x",[],[{"id":1}],{},{"jsonrpc":"2.0","id":2,"method":"m","params":{"n":[[1]]}}])",
      R"([{"id":1,"id":{}},{"method":"m","zz":{"id":5},"aa":[{"method":1}]}])",
      R"( { "jsonrpc" : "2.0" , "id" : "a\"b\\" , "method" : "m" } )",
  };
  for (const auto& line : lines) check_line(line);
}

TEST_CASE("nesting is counted from the line's first bracket, params and batches alike") {
  auto nested = [](size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  ParsedLine parsed;
  parse_line(nested(64), 64, parsed);
  CHECK(parsed.outcome == ParsedLine::Outcome::kOk);
  parse_line(nested(65), 64, parsed);
  CHECK(parsed.outcome == ParsedLine::Outcome::kTooDeep);
  // The request object is level 1, its params level 2.
  const std::string inside = nested(62);
  parse_line(R"({"jsonrpc":"2.0","method":"m","params":{"a":)" + inside + "}}", 64, parsed);
  CHECK(parsed.outcome == ParsedLine::Outcome::kOk);
  parse_line(R"({"jsonrpc":"2.0","method":"m","params":{"a":[)" + inside + "]}}", 64, parsed);
  CHECK(parsed.outcome == ParsedLine::Outcome::kTooDeep);
  // Members that are skipped rather than built count too.
  parse_line(R"({"zz":)" + nested(64) + "}", 64, parsed);
  CHECK(parsed.outcome == ParsedLine::Outcome::kTooDeep);
  parse_line(R"([{"id":)" + nested(63) + "}]", 64, parsed);
  CHECK(parsed.outcome == ParsedLine::Outcome::kTooDeep);
}

TEST_CASE("a line that is not JSON is reported as such, also after a good value") {
  ParsedLine parsed;
  for (const char* line : {R"({"jsonrpc":"2.0")", R"({"a":1} x)", R"({"a":01})", "nul", "",
                           "{\"a\":\"\xff\"}", R"({"a":1,})"}) {
    INFO(line);
    parse_line(line, 64, parsed);
    CHECK(parsed.outcome == ParsedLine::Outcome::kInvalidJson);
  }
}

TEST_CASE("a NUL byte anywhere in a line makes it invalid JSON, not the end of the line") {
  // nlohmann's lexer stops at a NUL as at the end of a C string; the line
  // goes on after it (JSONTestSuite's n_multidigit_number_then_00).
  using namespace std::string_literals;
  ParsedLine parsed;
  for (const std::string& line : {"123\0"s, "\0"s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"}\0garbage"s,
                                  "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\"}]\0"s, "{\"a\":\"x\0y\"}"s}) {
    INFO(json(line).dump());
    parse_line(line, 64, parsed);
    CHECK(parsed.outcome == ParsedLine::Outcome::kInvalidJson);
  }
}

}  // namespace
}  // namespace connmgr::rpc
