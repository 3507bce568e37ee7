#include "daemon/ctl/verbs.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace connmgr::ctl {
namespace {

constexpr size_t kWidth = 88;       // --help's widest lines, as its notes
constexpr size_t kHelpColumn = 39;  // where a command's help line starts

bool is_option(std::string_view word) { return word.size() > 2 && word.substr(0, 2) == "--"; }

// The option named by "--name" or "--name=VALUE" among `flags`.
const Flag* find_flag(const std::vector<Flag>& flags, std::string_view word) {
  const std::string_view name = word.substr(0, word.find('='));
  for (const Flag& f : flags)
    if (f.name == name) return &f;
  return nullptr;
}

// "[--limit N]", "[--wait]", "[--endpoint PROTO://HOST:PORT ...]".
std::string flag_synopsis(const Flag& f) {
  std::string s = "[" + std::string(f.name);
  if (!f.value.empty()) s += " " + std::string(f.value);
  if (f.repeats) s += " ...";
  return s + "]";
}

// The words of a synopsis that a line may end after: spaces inside brackets
// do not split ("[--endpoint PROTO://HOST:PORT ...]" stays one).
std::vector<std::string> synopsis_words(const Verb& verb) {
  std::vector<std::string> out{std::string(verb.name)};
  std::string word;
  int depth = 0;
  for (char c : verb.args) {
    depth += c == '[' ? 1 : c == ']' ? -1 : 0;
    if (c == ' ' && depth == 0) {
      if (!word.empty()) out.push_back(word);
      word.clear();
    } else {
      word += c;
    }
  }
  if (!word.empty()) out.push_back(word);
  for (const Flag& f : verb.flags)
    if (!f.in_args) out.push_back(flag_synopsis(f));
  if (!verb.command.empty()) out.push_back("-- " + std::string(verb.command));
  return out;
}

// Appends `words` to `text`, starting on its last line and going on to new
// lines that start at `indent`, none over kWidth.
void wrap(std::string& text, const std::vector<std::string>& words, size_t indent) {
  size_t line_start = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
  for (const std::string& w : words) {
    bool space = !text.empty() && text.back() != ' ' && text.back() != '\n';
    if (space && text.size() - line_start + 1 + w.size() > kWidth) {
      text += "\n";
      line_start = text.size();
      text += std::string(indent, ' ');
      space = false;
    }
    if (space) text += ' ';
    text += w;
  }
}

std::vector<std::string> split_words(std::string_view s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    const size_t end = std::min(s.find(' ', i), s.size());
    if (end > i) out.emplace_back(s.substr(i, end - i));
    i = end + 1;
  }
  return out;
}

// "  nodes [--limit N] [--after ID]       list nodes": the synopsis (wrapped
// under its arguments), then the help line at kHelpColumn, on the same line
// when the synopsis leaves room for it.
std::string command_row(const Verb& verb) {
  std::string row = "  ";
  wrap(row, synopsis_words(verb), 2 + verb.name.size() + 1);
  if (verb.help.empty()) return row + "\n";
  const size_t last_line = row.size() - (row.rfind('\n') == std::string::npos ? 0 : row.rfind('\n') + 1);
  if (last_line + 2 <= kHelpColumn) row += std::string(kHelpColumn - last_line, ' ');
  else row += "\n" + std::string(kHelpColumn, ' ');
  wrap(row, split_words(verb.help), kHelpColumn);
  return row + "\n";
}

// The words a completion offers: names of commands or of options.
template <typename Row>
void add_names(std::vector<std::string>& out, const std::vector<Row>& rows) {
  for (const Row& r : rows) out.emplace_back(r.name);
}

// The global options before the command (with their values) and where the
// command is: the first word that is neither a global option nor the value of
// one. Returns words.size() when there is no command yet.
size_t find_command(const std::vector<std::string>& words, const std::vector<Flag>& globals, Arguments& given) {
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& w = words[i];
    if (w.empty() || w[0] != '-') return i;
    const Flag* f = find_flag(globals, w);
    if (!f || f->value.empty()) continue;
    if (const size_t eq = w.find('='); eq != std::string::npos) given.add(f->name, w.substr(eq + 1));
    else if (i + 1 < words.size()) given.add(f->name, words[++i]);
  }
  return words.size();
}

// The position among the command's positional arguments of the word after
// `words` (options and their values not counted).
size_t argument_position(const Verb& verb, const std::vector<std::string>& words, size_t command_at) {
  size_t position = 0;
  for (size_t i = command_at + 1; i < words.size(); ++i) {
    if (words[i].empty() || words[i][0] != '-') {
      ++position;
    } else if (const Flag* f = find_flag(verb.flags, words[i]);
               f && !f->value.empty() && words[i].find('=') == std::string::npos) {
      ++i;  // its value
    }
  }
  return position;
}

// What the words after a known command offer: its options, or what its
// argument at that position completes to.
void complete_after_command(const Verb& verb, const std::vector<Flag>& globals, const std::vector<std::string>& words,
                            size_t command_at, const std::string& cur, CompletionRequest& out) {
  // After "--": the command to run, then its arguments (files).
  if (const auto dashes = std::find(words.begin() + static_cast<long>(command_at) + 1, words.end(), "--");
      !verb.command.empty() && dashes != words.end()) {
    out.kind = dashes + 1 == words.end() ? Completion::kCommand : Completion::kFile;
    return;
  }
  if (!cur.empty() && cur[0] == '-') {
    if (verb.raw) return;
    out.kind = Completion::kWords;
    add_names(out.words, verb.flags);
    for (const Flag& g : globals)
      if (g.after_command) out.words.emplace_back(g.name);
    return;
  }
  const size_t position = argument_position(verb, words, command_at);
  const auto& c = verb.arg_completions;
  if (position < c.size()) out.kind = c[position];
  else if (verb.max_args == kUnlimited && !c.empty()) out.kind = c.back();
}

}  // namespace

void usage_error(const std::string& message) {
  fprintf(stderr, "connmgrctl: %s (see connmgrctl --help)\n", message.c_str());
  exit(kExitUsage);
}

bool Arguments::has(std::string_view flag) const {
  return std::any_of(given_.begin(), given_.end(), [&](const auto& g) { return g.first == flag; });
}

std::optional<std::string> Arguments::value(std::string_view flag) const {
  for (const auto& [name, value] : given_)
    if (name == flag) return value;
  return std::nullopt;
}

std::vector<std::string> Arguments::values(std::string_view flag) const {
  std::vector<std::string> out;
  for (const auto& [name, value] : given_)
    if (name == flag) out.push_back(value);
  return out;
}

const Verb* find_verb(const Verbs& verbs, std::string_view name) {
  for (const Verb& v : verbs)
    if (v.name == name) return &v;
  return nullptr;
}

std::string synopsis(const Verb& verb) {
  std::string s;
  for (const std::string& w : synopsis_words(verb)) s += (s.empty() ? "" : " ") + w;
  return s;
}

std::string commands_help(const Verbs& verbs) {
  std::string out;
  for (const Verb& v : verbs) out += command_row(v);
  return out;
}

std::string options_help(const std::vector<Flag>& global_options) {
  auto left = [](const Flag& f) { return std::string(f.name) + (f.value.empty() ? "" : " " + std::string(f.value)); };
  size_t width = 0;
  for (const Flag& f : global_options)
    if (!f.help.empty()) width = std::max(width, left(f).size());
  std::string out;
  for (const Flag& f : global_options) {
    if (f.help.empty()) continue;
    std::string l = left(f);
    out += "  " + l + std::string(width + 2 - l.size(), ' ') + std::string(f.help) + "\n";
  }
  return out;
}

namespace {

// The option words[i] (and its value, words[i + 1] when not given with "=").
void take_option(const Verb& verb, const std::vector<std::string>& words, size_t& i, Arguments& out) {
  const std::string& w = words[i];
  const size_t eq = w.find('=');
  const std::string name = w.substr(0, eq);
  const Flag* f = find_flag(verb.flags, name);
  if (!f) usage_error("unknown option " + name + " for " + std::string(verb.name) + "; " + out.usage);
  if (out.has(f->name) && !f->repeats) usage_error(name + " given twice; " + out.usage);
  if (f->value.empty()) {
    if (eq != std::string::npos) usage_error(name + " takes no value; " + out.usage);
    out.add(f->name, "");
  } else if (eq != std::string::npos) {
    out.add(f->name, w.substr(eq + 1));
  } else {
    if (i + 1 >= words.size()) usage_error(name + " needs a value");
    out.add(f->name, words[++i]);
  }
}

}  // namespace

Arguments parse_arguments(const Verb& verb, const std::vector<std::string>& words) {
  Arguments out;
  out.usage = "usage: connmgrctl " + synopsis(verb);
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& w = words[i];
    if (!verb.command.empty() && w == "--") {
      out.command.assign(words.begin() + static_cast<long>(i) + 1, words.end());
      break;
    }
    if (verb.raw || !is_option(w)) out.positional.push_back(w);
    else take_option(verb, words, i, out);
  }
  if (out.positional.size() < verb.min_args || out.positional.size() > verb.max_args) usage_error(out.usage);
  if (!verb.command.empty() && out.command.empty()) usage_error("no command to run after --; " + out.usage);
  return out;
}

CompletionRequest complete(const Verbs& verbs, const std::vector<Flag>& global_options,
                           std::vector<std::string> words) {
  CompletionRequest out;
  std::string cur = words.empty() ? "" : words.back();
  if (!words.empty()) words.pop_back();
  std::string prev = words.empty() ? "" : words.back();
  // "--protocol=q": the value of --protocol.
  const bool split = is_option(cur) && cur.find('=') != std::string::npos;
  if (split) {
    prev = cur.substr(0, cur.find('='));
    cur = cur.substr(cur.find('=') + 1);
  }
  const size_t command_at = find_command(words, global_options, out.globals);
  const Verb* verb = command_at < words.size() ? find_verb(verbs, words[command_at]) : nullptr;
  if (command_at < words.size() && !verb) return out;  // an unknown command: nothing to offer

  // The value of an option.
  if (const Flag* f = find_flag(verb ? verb->flags : global_options, prev);
      f && !f->value.empty() && (split || prev.find('=') == std::string::npos)) {
    out.kind = f->completes;
    return out;
  }
  if (split) return out;
  if (!verb) {
    out.kind = Completion::kWords;
    if (!cur.empty() && cur[0] == '-') add_names(out.words, global_options);
    else add_names(out.words, verbs);
    return out;
  }
  complete_after_command(*verb, global_options, words, command_at, cur, out);
  return out;
}

}  // namespace connmgr::ctl
