// Fuzz target: connmgrd's configuration. The input is split at the first NUL
// into a configuration file's text and a list of command-line flags (one per
// line); both go through parse_config() as connmgrd reads them (the file
// through Environment::read_file, no disk), and a
// successful result through reload_diff / merge_reload and config_to_json.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace connmgr::config;
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string file = input.substr(0, nul);
  std::vector<std::string> args{"--config=/fuzz/connmgrd.conf"};
  if (nul != std::string::npos) {
    size_t start = nul + 1;
    while (start <= input.size() && args.size() < 32) {
      size_t end = input.find('\n', start);
      if (end == std::string::npos) end = input.size();
      args.push_back(input.substr(start, end - start));
      start = end + 1;
    }
  }
  // The file is read through the environment's hook, as the unit tests do.
  Environment env;
  env.uid = 0;
  env.getenv = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  env.read_file = [&file](const std::string& path, std::string* why) -> std::optional<std::string> {
    if (path == "/fuzz/connmgrd.conf") return file;
    if (why) *why = "No such file or directory";
    return std::nullopt;
  };
  auto parsed = parse_config(args, env);
  if (parsed) {
    auto running = parse_config({}, env);
    if (running) {
      (void)reload_diff(*running, *parsed);
      (void)merge_reload(*running, *parsed);
    }
    // As the daemon serializes status.config (rpc/json_text.cc): invalid
    // UTF-8 in a path from the file is replaced, not thrown.
    (void)config_to_json(*parsed).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    (void)parsed.error().message();
  }
  return 0;
}
