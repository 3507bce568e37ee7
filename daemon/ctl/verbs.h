// connmgrctl's commands as one table, in the manner of systemd's
// src/shared/verbs.h: a row per command gives its name, its arguments, the
// options it takes, its handler and a help line, and everything a user sees of
// the command line derives from the rows: the Commands section of --help, the
// usage errors (with the command's own synopsis) and the bash completion
// (connmgrctl.bash asks `connmgrctl __complete`, answered from the table).
//
// The table itself (the rows and their handlers) is in connmgrctl.cc; this is
// the machinery over it, with no knowledge of the daemon. Usage errors print
// to stderr and exit 2.
#pragma once

#include <cstddef>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace connmgr::ctl {

constexpr int kExitUsage = 2;

// Prints "connmgrctl: MESSAGE (see connmgrctl --help)" and exits 2.
[[noreturn]] void usage_error(const std::string& message);

// What a word on the command line completes to in bash: a fixed list of words
// (commands, options), files, or values connmgrctl.cc knows (node ids asked of
// the daemon, protocols, endpoint specs, event types, method names).
enum class Completion { kNone, kWords, kFile, kCommand, kNodeId, kProtocol, kEndpointSpec, kEventType, kMethod };

// An option: "--limit N" (value "N"), or "--all" (no value). Given as
// "--name VALUE" or "--name=VALUE", anywhere after the command.
struct Flag {
  std::string_view name = {};
  std::string_view value = {};  // its value's name in the synopsis; empty: takes no value
  Completion completes = Completion::kNone;  // what its value completes to
  bool repeats = false;                      // may be given more than once
  bool in_args = false;                      // Verb::args already shows it (connect's --endpoint)
  std::string_view help = {};                // global options: their line in --help
  bool after_command = false;                // global options: also taken after the command (--json)
};

// A command's words once parsed against its row: the positional arguments in
// order and the options given.
class Arguments {
 public:
  std::vector<std::string> positional;
  std::vector<std::string> command;  // the words after "--" (Verb::command)
  std::string usage;  // "usage: connmgrctl SYNOPSIS", for the handler's own usage errors

  bool has(std::string_view flag) const;
  // The value of an option given once; nullopt when absent.
  std::optional<std::string> value(std::string_view flag) const;
  // Every value of a repeated option, in order.
  std::vector<std::string> values(std::string_view flag) const;
  void add(std::string_view flag, std::string value) { given_.emplace_back(std::string(flag), std::move(value)); }

 private:
  std::vector<std::pair<std::string, std::string>> given_;
};

struct Options;  // connmgrctl.cc: the global options (socket, --json, --timeout)

constexpr size_t kUnlimited = std::numeric_limits<size_t>::max();

// One command.
struct Verb {
  std::string_view name = {};
  std::string_view args = {};  // the positional arguments in the synopsis: "NODE PROTO HOST PORT"
  size_t min_args = 0;
  size_t max_args = 0;  // kUnlimited: any number
  std::vector<Flag> flags = {};
  // What each positional argument completes to; with max_args kUnlimited, the
  // last one stands for the rest.
  std::vector<Completion> arg_completions = {};
  int (*handler)(Options& options, const Arguments& arguments) = nullptr;
  std::string_view help = {};
  // A command to run after "--" (exec's "CMD [ARGS]", its name in the
  // synopsis): required; the words after "--" are its, options or not.
  std::string_view command = {};
  // Arguments taken verbatim: no options parsed, --json after the command is
  // one of them (call's raw params, help).
  bool raw = false;
};

using Verbs = std::vector<Verb>;

const Verb* find_verb(const Verbs& verbs, std::string_view name);

// "nodes [--limit N] [--after ID]": the name, its arguments, then each option
// Verb::args does not already show, then "-- " and Verb::command if any.
std::string synopsis(const Verb& verb);

// The lines of --help's Commands section (and of its Options section, for the
// global options that have a help line), each row wrapped at 88 columns with
// its help line at column 39.
std::string commands_help(const Verbs& verbs);
std::string options_help(const std::vector<Flag>& global_options);

// Parses the words after the command name against its row: unknown options,
// options without their value, an option given twice that does not repeat,
// a wrong number of arguments and a missing "-- CMD" (Verb::command) are
// usage errors naming its synopsis.
Arguments parse_arguments(const Verb& verb, const std::vector<std::string>& words);

// What bash should offer for the last of `words` (the words after the program
// name up to the cursor, the last one being completed): `kind` says how,
// `words` holds the list when kind is kWords. `globals` are the global options
// given before the command, with their values (the completion asks the same
// daemon as the command line names).
struct CompletionRequest {
  Completion kind = Completion::kNone;
  std::vector<std::string> words;
  Arguments globals;
};
CompletionRequest complete(const Verbs& verbs, const std::vector<Flag>& global_options,
                           std::vector<std::string> words);

}  // namespace connmgr::ctl
