// Raw request ids: the exact text of the "id" member of a request object,
// so that the answer echoes it byte for byte (JSON-RPC 2.0, "Response object": "the same as
// the value of the id member in the Request Object").
//
// nlohmann_json keeps a value, not its spelling: 1.50 would come back as 1.5,
// -0 as 0, 12345678901234567890123 as 1.2345678901234568e+22 and "\u0041"
// as "A". The dispatcher therefore splices the request's own text.
//
// Only for texts the JSON parser has accepted: the scanner trusts the syntax
// and does no validation of its own (on other input it stops early, never
// reads out of bounds). Plain functions; no state.
#pragma once

#include <string_view>
#include <vector>

namespace connmgr::rpc {

// `text` is one JSON value. If it is an object with an "id" member, the raw
// text of that member's value (the last one when repeated, as the parser
// keeps the last); else an empty view.
std::string_view raw_id_of_object(std::string_view text);

// `text` is one JSON array (a batch). For each element in order: the raw id
// text when the element is an object with an "id" member, else empty.
void raw_ids_of_batch(std::string_view text, std::vector<std::string_view>& ids);

}  // namespace connmgr::rpc
