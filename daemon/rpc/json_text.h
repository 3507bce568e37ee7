// Writing JSON-RPC answer lines: a JSON value appended to a string in
// compact form, and the answer envelope around a result or an error with
// the request's id spliced in as raw text (raw_id.h).
//
// Strings that are not valid UTF-8 (a method echoing bytes it was given)
// are written with U+FFFD instead of throwing. Plain functions.
#pragma once

#include <string>
#include <string_view>

#include "rpc/method.h"

namespace connmgr::rpc {

// JSON-RPC 2.0 §5.1 codes, and the server codes this layer produces.
inline constexpr int kParseError = -32700;
inline constexpr int kInvalidRequest = -32600;
inline constexpr int kMethodNotFound = -32601;
inline constexpr int kInvalidParams = -32602;
inline constexpr int kInternalError = -32603;
inline constexpr int kPermissionDenied = -32030;

// Appends `value` serialized compactly (no newline).
void append_json(std::string& out, const json& value);

// {"jsonrpc":"2.0","id":ID,"result":PAYLOAD} or ...,"error":PAYLOAD}.
// `id_text` is raw JSON ("null" when there is none).
std::string answer_line(std::string_view id_text, bool is_error, const json& payload);

// {"jsonrpc":"2.0","id":ID,"result":RESULT} with RESULT already serialized.
std::string result_line(std::string_view id_text, std::string_view result_text);

// An error answer; `data` null means no "data" member.
std::string error_answer(std::string_view id_text, int code, std::string_view message,
                         const json& data = nullptr);

}  // namespace connmgr::rpc
