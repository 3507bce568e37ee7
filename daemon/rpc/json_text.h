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
#include "util/error.h"

namespace connmgr::rpc {

// The codes this layer answers with, as the ints of an answer's "code"
// member; the numbers themselves are spelled once, in ErrorCode
// (util/error.h).
inline constexpr int kParseError = static_cast<int>(ErrorCode::kParseError);
inline constexpr int kInvalidRequest = static_cast<int>(ErrorCode::kInvalidRequest);
inline constexpr int kMethodNotFound = static_cast<int>(ErrorCode::kMethodNotFound);
inline constexpr int kInvalidParams = static_cast<int>(ErrorCode::kInvalidParams);
inline constexpr int kInternalError = static_cast<int>(ErrorCode::kInternal);
inline constexpr int kPermissionDenied = static_cast<int>(ErrorCode::kPermissionDenied);

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
