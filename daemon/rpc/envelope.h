// Envelope: what the dispatcher needs of one JSON-RPC request object
// (jsonrpc, method, id, params, unknown members), read while the line is
// parsed, and parse_line(), which reads a line into envelopes.
//
// Only `params` is built as a JSON document; the envelope's own members are
// kept as plain fields and unknown members only by name. Building the whole
// request object (a std::map with a node and a heap string per member) and
// looking each member up again cost more than the rest of a `status` call.
//
// The parse is nlohmann's own (strict JSON, UTF-8 checked; a line with a NUL
// byte is refused first, as nlohmann would stop at it); repeated members
// behave as in a nlohmann document: the last one counts. Nesting deeper than
// `max_depth` stops the parse before anything deeper is built (a line of
// 1 MiB of '[' would otherwise be built, then walked recursively).
//
// Plain functions and value types; no threads of their own.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "rpc/method.h"

namespace connmgr::rpc {

struct Envelope {
  // A JSON value's type, as far as the envelope's checks care.
  enum class Type { kAbsent, kNull, kBool, kNumber, kString, kObject, kArray };

  bool is_object = false;  // else the request is not an object at all
  Type id = Type::kAbsent;
  // The id's value when it is a string, number or null: for the (unexpected)
  // case where the raw id scanner finds no text to echo.
  json id_value;
  Type jsonrpc = Type::kAbsent;
  std::string jsonrpc_text;  // when jsonrpc is a string
  Type method = Type::kAbsent;
  std::string method_name;  // when method is a string
  Type params = Type::kAbsent;
  json params_value;  // when params is there
  // The first member other than jsonrpc, method, params and id, in the
  // order a nlohmann object keeps them (byte order of the names).
  std::optional<std::string> unknown_member;

  bool has_id() const { return id != Type::kAbsent; }
};

struct ParsedLine {
  enum class Outcome { kOk, kTooDeep, kInvalidJson };
  Outcome outcome = Outcome::kInvalidJson;
  bool is_batch = false;  // the line is an array: one envelope per element
  std::vector<Envelope> requests;
};

// Parses one line of input into `out` (its vector is reused).
void parse_line(std::string_view line, size_t max_depth, ParsedLine& out);

}  // namespace connmgr::rpc
