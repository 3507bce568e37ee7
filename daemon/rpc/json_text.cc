#include "rpc/json_text.h"

namespace connmgr::rpc {

void append_json(std::string& out, const json& value) {
  // Serialize straight into `out` rather than through dump()'s temporary.
  nlohmann::detail::serializer<json> s(nlohmann::detail::output_adapter<char>(out), ' ',
                                       json::error_handler_t::replace);
  s.dump(value, false, false, 0);
}

std::string answer_line(std::string_view id_text, bool is_error, const json& payload) {
  std::string out;
  out.reserve(96);
  out += R"({"jsonrpc":"2.0","id":)";
  out += id_text;
  if (!is_error) {
    out += R"(,"result":)";
    append_json(out, payload);
  } else {
    // code, message, data: in the specification's order, which people read
    // more easily than the alphabetical order of a JSON object's keys.
    out += R"(,"error":{)";
    const char* sep = "";
    for (const char* key : {"code", "message", "data"}) {
      auto it = payload.find(key);
      if (it == payload.end()) continue;
      out += sep;
      out += '"';
      out += key;
      out += "\":";
      append_json(out, *it);
      sep = ",";
    }
    if (payload.is_object()) {
      for (auto it = payload.begin(); it != payload.end(); ++it) {
        if (it.key() == "code" || it.key() == "message" || it.key() == "data") continue;
        out += sep;
        append_json(out, it.key());
        out += ':';
        append_json(out, it.value());
        sep = ",";
      }
    }
    out += '}';
  }
  out += '}';
  return out;
}

std::string result_line(std::string_view id_text, std::string_view result_text) {
  constexpr std::string_view kHead = R"({"jsonrpc":"2.0","id":)";
  constexpr std::string_view kResult = R"(,"result":)";
  std::string out;
  out.reserve(kHead.size() + id_text.size() + kResult.size() + result_text.size() + 1);
  out += kHead;
  out += id_text;
  out += kResult;
  out += result_text;
  out += '}';
  return out;
}

std::string error_answer(std::string_view id_text, int code, std::string_view message,
                         const json& data) {
  json e{{"code", code}, {"message", message}};
  if (!data.is_null()) e["data"] = data;
  return answer_line(id_text, true, e);
}

}  // namespace connmgr::rpc
