#!/usr/bin/env python3
"""The man pages and the bash completion against the programs they describe.

Each list a person could forget to update is read from its source of truth
and compared, both ways, so that none can drift:

- connmgrd(8): every flag of `connmgrd --help` (the keys as --key-name flags,
  --config, --help, --version) with its default and whether it needs a
  restart; its exit statuses.
- connmgrd.conf(5): every key, with its default as the generated
  connmgrd.conf writes it (for `none`-like defaults, as --help words it) and
  whether SIGHUP changes it; no key that does not exist.
- docs/operations.md: its table of keys, likewise (the defaults as --help
  words them; * for the keys that need a restart).
- connmgrctl(1): every command of `connmgrctl --help` with each of its
  options, the global options, the exit statuses, the environment variables.
- daemon/ctl/connmgrctl.bash: it lists nothing itself but asks connmgrctl
  (`connmgrctl __complete`, from its command table); what it offers is
  compared with `connmgrctl --help` (commands, options) and proto/ (methods,
  event types), and it completes node ids asked of a live daemon.

Environment (tests/install/meson.build): CONNMGRD, CONNMGRCTL, SAMPLE_CONF,
MAN_DIR (the .scd sources), COMPLETION, PROTO.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

ENV = {k: os.environ.get(k, "") for k in
       ("CONNMGRD", "CONNMGRCTL", "SAMPLE_CONF", "MAN_DIR", "COMPLETION", "PROTO")}


def run(*args, env=None):
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=30, env=env).stdout


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# --- the sources of truth ----------------------------------------------------------------

class DaemonHelp:
    """`connmgrd --help`: keys (name -> live, bracketed default), other flags, exit codes."""

    def __init__(self, text):
        self.keys = {}
        self.flags = []
        section = None
        for line in text.splitlines():
            if line.startswith("Keys"):
                section = "keys"
                continue
            if not line.strip():
                section = None if section == "keys" else section
                continue
            if section == "keys":
                m = re.match(r"^  (\w+)(\*?)\s+.*\[(.*)\]$", line)
                if not m:
                    raise AssertionError(f"connmgrd --help: cannot read key line {line!r}")
                self.keys[m.group(1)] = {"live": m.group(2) != "*", "default": m.group(3)}
            elif re.match(r"^  --[a-z]", line):
                self.flags.append(line.split()[0])
        self.exit_codes = exit_codes(text)


class CtlHelp:
    """`connmgrctl --help`: commands with their options, global options, exit codes."""

    def __init__(self, text):
        self.commands = {}
        self.global_options = []
        section = None
        current = None
        for line in text.splitlines():
            if line in ("Commands:", "Options:"):
                section = line[:-1]
                continue
            if not line.strip():
                section = None
                continue
            if section == "Commands":
                if re.match(r"^  \S", line):  # a command's first line
                    current = line.split()[0]
                    self.commands[current] = []
                # Its options: every --word on its lines (continuations included).
                for opt in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line):
                    if opt not in self.commands[current]:
                        self.commands[current].append(opt)
            elif section == "Options":
                m = re.match(r"^  (--[a-z-]+)", line)
                if m:
                    self.global_options.append(m.group(1))
        self.exit_codes = exit_codes(text)
        self.environment = sorted(set(re.findall(r"\$([A-Z][A-Z0-9_]+)", text)) |
                                  set(re.findall(r"\b([A-Z][A-Z0-9_]+) set\b", text)))


def exit_codes(help_text):
    """The numbers of the "Exit status: 0 ..., 1 ..." paragraph of a --help."""
    m = re.search(r"Exit status:(.*?)(?:\n\n|\Z)", help_text, re.S)
    if not m:
        raise AssertionError("--help has no 'Exit status:' paragraph")
    return sorted({int(n) for n in re.findall(r"(?:^|[:,]|\n)\s*(\d+)\s", ":" + m.group(1))})


def sample_defaults(text):
    """The generated connmgrd.conf: key -> default ("" when it has none)."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^#(\w+) =(?: (.*))?$", line)
        if m:
            out[m.group(1)] = m.group(2) or ""
    return out


# --- the man pages -------------------------------------------------------------------

def scd_plain(text):
    """scdoc source without its markup, for comparing words."""
    text = text.replace("\\*", "*").replace("\\_", "_")
    text = re.sub(r"(?<![\w\\])[*_]|[*_](?![\w])", "", text)
    return " ".join(text.split())


def scd_sections(text):
    """'# NAME' sections of an scdoc page: name -> text."""
    out, name = {}, None
    for line in text.splitlines():
        m = re.match(r"^# (.+)$", line)
        if m:
            name = m.group(1).strip()
            out[name] = []
        elif name:
            out[name].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def scd_items(section_text):
    """Definition items of a section: the unindented lines that start with *,
    each with its indented body: [(head, body)]."""
    items, current = [], None
    for line in section_text.splitlines():
        if line.startswith("*"):
            current = [line, []]
            items.append(current)
        elif line.startswith("\t") and current:
            current[1].append(line)
        elif line.strip():
            current = None  # a plain paragraph ends the item
    return [(h, "\n".join(b)) for h, b in items]


def item_heads(items, pattern):
    out = {}
    for head, body in items:
        m = re.match(pattern, head)
        if m:
            out[m.group(1)] = (head, body)
    return out


def page(name):
    return read(os.path.join(ENV["MAN_DIR"], name + ".scd"))


def exit_status_codes(page_text):
    sec = scd_sections(page_text).get("EXIT STATUS", "")
    return sorted(int(x) for x in re.findall(r"^\*(\d+)\*$", sec, re.M))


class ManPages(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dhelp = DaemonHelp(run(ENV["CONNMGRD"], "--help"))
        cls.chelp = CtlHelp(run(ENV["CONNMGRCTL"], "--help"))
        cls.defaults = sample_defaults(read(ENV["SAMPLE_CONF"]))

    def expected_default(self, key):
        d = self.defaults[key]
        return d if d else self.dhelp.keys[key]["default"]

    def check_key_body(self, where, key, body):
        plain = scd_plain(body)
        live = self.dhelp.keys[key]["live"]
        default = self.expected_default(key)
        # The default, as a whole word, after "Default:" (database and socket
        # name the systemd and per-user paths too).
        self.assertRegex(plain, rf"Default: (.* )?(?<![\w./$-]){re.escape(default)}(?![\w/-])",
                         f"{where}: {key}: the default {default!r} is not stated after 'Default:'")
        marker, other = ("Changes on reload.", "Needs a restart.") if live else \
                        ("Needs a restart.", "Changes on reload.")
        self.assertIn(marker, plain, f"{where}: {key} must say '{marker}' (connmgrd --help)")
        self.assertNotIn(other, plain, f"{where}: {key} must not say '{other}'")

    def test_the_sample_file_and_help_list_the_same_keys(self):
        self.assertTrue(self.dhelp.keys)
        self.assertEqual(sorted(self.dhelp.keys), sorted(self.defaults))

    def test_connmgrd_8_has_every_flag_with_its_default(self):
        text = page("connmgrd.8")
        opts = item_heads(scd_items(scd_sections(text)["OPTIONS"]), r"^(?:\*-h\*, )?\*--([a-z][a-z-]*)\*")
        for key in self.dhelp.keys:
            flag = key.replace("_", "-")
            with self.subTest(flag=flag):
                self.assertTrue(flag in opts, f"connmgrd.8: no item for --{flag}")
                self.check_key_body("connmgrd.8", key, opts[flag][1])
        for flag in self.dhelp.flags:  # --config FILE, --help, --version
            with self.subTest(flag=flag):
                self.assertTrue(flag[2:] in opts, f"connmgrd.8: no item for {flag}")
        known = {k.replace("_", "-") for k in self.dhelp.keys} | {f[2:] for f in self.dhelp.flags}
        self.assertEqual(sorted(set(opts) - known), [], "connmgrd.8 documents flags connmgrd does not have")

    def test_connmgrd_8_exit_statuses_and_signals(self):
        text = page("connmgrd.8")
        self.assertEqual(exit_status_codes(text), self.dhelp.exit_codes)
        signals = scd_sections(text)["SIGNALS"]
        for sig in ("SIGHUP", "SIGTERM", "SIGINT"):
            self.assertIn(f"*{sig}*", signals)

    def test_connmgrd_conf_5_has_every_key_with_its_default(self):
        text = page("connmgrd.conf.5")
        keys = item_heads(scd_items(scd_sections(text)["KEYS"]), r"^\*([a-z_]+)\* = ")
        for key in self.dhelp.keys:
            with self.subTest(key=key):
                self.assertTrue(key in keys, f"connmgrd.conf.5: no item for {key}")
                self.check_key_body("connmgrd.conf.5", key, keys[key][1])
        self.assertEqual(sorted(set(keys) - set(self.dhelp.keys)), [],
                         "connmgrd.conf.5 documents keys that do not exist")

    def test_operations_md_has_every_key_with_its_default(self):
        text = read(os.path.join(os.path.dirname(ENV["MAN_DIR"].rstrip("/")), "operations.md"))
        # The keys' table is the Configuration section's (other sections have
        # tables of their own: the metrics').
        text = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
        rows = {m.group(1): (m.group(2) == "*", m.group(3).strip().strip("`"))
                for m in re.finditer(r"^\| `([a-z_]+)`(\*?) \| ([^|]+) \|", text, re.M)}
        self.assertEqual(sorted(rows), sorted(self.dhelp.keys),
                         "docs/operations.md's table of keys and connmgrd --help differ")
        for key, (restart, default) in rows.items():
            with self.subTest(key=key):
                self.assertEqual(restart, not self.dhelp.keys[key]["live"],
                                 f"operations.md: {key} must be marked * exactly when it needs a restart")
                if key not in ("database", "socket"):  # they depend on the user: "see above"
                    self.assertEqual(default, self.dhelp.keys[key]["default"], f"operations.md: {key}")

    def test_connmgrctl_1_has_every_command_and_option(self):
        text = page("connmgrctl.1")
        sections = scd_sections(text)
        commands = item_heads(scd_items(sections["COMMANDS"]), r"^\*([a-z][a-z-]*)\*")
        for cmd, options in self.chelp.commands.items():
            with self.subTest(command=cmd):
                self.assertTrue(cmd in commands, f"connmgrctl.1: no item for the command {cmd}")
                head, body = commands[cmd]
                for opt in options:
                    self.assertIn(f"*{opt}*", head + body, f"connmgrctl.1: {cmd} does not show {opt}")
        self.assertEqual(sorted(set(commands) - set(self.chelp.commands)), [],
                         "connmgrctl.1 documents commands connmgrctl --help does not list")
        options = item_heads(scd_items(sections["OPTIONS"]), r"^(?:\*-h\*, )?\*(--[a-z-]+)\*")
        for opt in self.chelp.global_options + ["--help", "--version"]:
            with self.subTest(option=opt):
                self.assertTrue(opt in options, f"connmgrctl.1: no item for the option {opt}")

    def test_connmgrctl_1_exit_statuses_and_environment(self):
        text = page("connmgrctl.1")
        self.assertEqual(exit_status_codes(text), self.chelp.exit_codes)
        env = scd_sections(text)["ENVIRONMENT"]
        self.assertTrue(self.chelp.environment)
        for name in self.chelp.environment:
            with self.subTest(variable=name):
                self.assertRegex(env, rf"(?m)^\*{name}\*", f"connmgrctl.1: ENVIRONMENT lacks {name}")

    def test_every_page_has_the_usual_sections_and_names_the_others(self):
        pages = {"connmgrd.8": "connmgrd(8)", "connmgrctl.1": "connmgrctl(1)", "connmgrd.conf.5": "connmgrd.conf(5)"}
        for name, title in pages.items():
            with self.subTest(page=name):
                text = page(name)
                self.assertTrue(text.startswith(title + "\n"), f"{name}: the first line must be {title}")
                sections = scd_sections(text)
                for s in ("NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"):
                    self.assertIn(s, sections)
                for other, ref in pages.items():
                    if other != name:
                        self.assertIn("*" + ref.replace("(", "*("), sections["SEE ALSO"])


# --- the bash completion ------------------------------------------------------------------

def completion_probe(script, env):
    """Runs bash with the completion sourced and `script` after it; `t WORD...`
    prints what completing the last word offers."""
    src = f". {json.dumps(ENV['COMPLETION'])}\n" + r"""
t() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
      COMPREPLY=(); _connmgrctl connmgrctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
      printf '%s\n' "${COMPREPLY[*]}"; }
""" + script
    return subprocess.run(["bash", "--norc", "--noprofile", "-c", src], check=True, capture_output=True,
                          text=True, timeout=30, env=env).stdout.splitlines()


def env_with_connmgrctl_in_path(tmp):
    """The environment, with the connmgrctl under test first in PATH (the
    completion runs `connmgrctl`) and no systemd variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "LISTEN_FDS", "JOURNAL_STREAM")}
    bindir = os.path.join(tmp, "bin")
    os.mkdir(bindir)
    os.symlink(os.path.abspath(ENV["CONNMGRCTL"]), os.path.join(bindir, "connmgrctl"))
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


class Completion(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.chelp = CtlHelp(run(ENV["CONNMGRCTL"], "--help"))
        with open(ENV["PROTO"], encoding="utf-8") as f:
            cls.proto = json.load(f)
        cls.tmp = tempfile.mkdtemp(prefix="connmgr-completion-")
        cls.env = env_with_connmgrctl_in_path(cls.tmp)
        cmds = list(cls.chelp.commands)
        lines = completion_probe("t connmgrctl ''; t connmgrctl --; t connmgrctl call ''; t connmgrctl watch ''; "
                                 + " ".join(f"t connmgrctl {c} --;" for c in cmds), cls.env)
        cls.commands, cls.global_options, cls.methods, cls.event_types = (l.split() for l in lines[:4])
        cls.command_options = {c: lines[4 + i].split() for i, c in enumerate(cmds)}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_it_lists_no_command_or_option_itself(self):
        code = "\n".join(l for l in read(ENV["COMPLETION"]).splitlines() if not l.lstrip().startswith("#"))
        self.assertEqual(re.findall(r"(?<![\w-])--[a-z][a-z-]*", code), [], "options spelled in connmgrctl.bash")
        for cmd in self.chelp.commands:
            self.assertNotRegex(code, rf"(?<![\w-]){re.escape(cmd)}(?![\w-])", f"connmgrctl.bash spells {cmd}")

    def test_it_offers_exactly_the_commands_of_connmgrctl_help_in_its_order(self):
        self.assertEqual(self.commands, list(self.chelp.commands))

    def test_it_knows_the_options_of_each_command(self):
        for cmd, options in self.chelp.commands.items():
            with self.subTest(command=cmd):
                got = set(self.command_options[cmd])
                self.assertEqual(sorted(set(options) - got), [], f"{cmd}: options the completion lacks")
                extra = got - set(options) - {"--json"}
                self.assertEqual(sorted(extra), [], f"{cmd}: options connmgrctl --help does not list")
                # --json is taken after any command but among call's raw arguments.
                self.assertEqual("--json" in got, cmd not in ("call", "help"), cmd)

    def test_it_knows_the_global_options(self):
        self.assertEqual(sorted(set(self.chelp.global_options) - set(self.global_options)), [])
        self.assertEqual(sorted(set(self.global_options) - set(self.chelp.global_options) - {"--help", "--version"}), [])

    def test_it_knows_the_methods_and_event_types_of_proto(self):
        self.assertEqual(sorted(self.methods), sorted(m["name"] for m in self.proto["methods"]))
        self.assertEqual(sorted(self.event_types),
                         sorted(self.proto["components"]["schemas"]["EventType"]["enum"]))

    def test_it_completes_commands_options_and_values(self):
        out = completion_probe("t connmgrctl ''; t connmgrctl dis; t connmgrctl --j; "
                               "t connmgrctl --socket /x connect --re; t connmgrctl links --a; "
                               "t connmgrctl endpoints web1 --protocol q; t connmgrctl watch node_; "
                               "t connmgrctl call events.; t connmgrctl add-endpoint web1 t; "
                               "t connmgrctl endpoints web1 --protocol=q; t connmgrctl add-node x --endpoint q; "
                               "t connmgrctl connect --endpoint ''; t connmgrctl frobnicate ''", self.env)
        self.assertEqual(out[0].split(), self.commands)
        self.assertEqual(out[1:], ["disconnect", "--json", "--retry --reconnect", "--all", "quic",
                                   "node_added node_removed", "events.subscribe events.unsubscribe", "tcp",
                                   "quic", "quic://", "", ""])

    def test_a_connmgrctl_that_fails_offers_nothing(self):
        bindir = os.path.join(self.tmp, "failing")
        os.mkdir(bindir)
        with open(os.path.join(bindir, "connmgrctl"), "w", encoding="utf-8") as f:
            f.write("#!/bin/sh\necho words; echo status; exit 127\n")
        os.chmod(os.path.join(bindir, "connmgrctl"), 0o755)
        env = dict(self.env, PATH=bindir + os.pathsep + self.env["PATH"])
        self.assertEqual(completion_probe("t connmgrctl ''; t connmgrctl nodes --", env), ["", ""])

    def test_it_completes_node_ids_from_a_running_daemon(self):
        tmp = tempfile.mkdtemp(prefix="connmgr-completion-")
        sock = os.path.join(tmp, "connmgrd.sock")
        daemon = subprocess.Popen([ENV["CONNMGRD"], "--database", os.path.join(tmp, "db"), "--socket", sock],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=self.env)
        try:
            deadline = time.monotonic() + 20
            while not os.path.exists(sock):
                if daemon.poll() is not None:
                    self.fail("connmgrd stopped: " + daemon.stderr.read().decode())
                self.assertLess(time.monotonic(), deadline, "connmgrd did not make its socket in 20 s")
                time.sleep(0.05)
            for node in ("alpha", "alpine", "beta"):
                run(ENV["CONNMGRCTL"], "--socket", sock, "add-node", node)
            out = completion_probe(f"t connmgrctl --socket {sock} connect al; "
                                   f"t connmgrctl --socket={sock} node ''; "
                                   f"t connmgrctl --socket {sock} add-endpoint b; "
                                   f"t connmgrctl --socket {sock} nodes --after alp; "
                                   f"t connmgrctl --socket {sock}.absent node ''", env=self.env)
            self.assertEqual(out, ["alpha alpine", "alpha alpine beta", "beta", "alpha alpine", ""])
        finally:
            daemon.terminate()
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(timeout=15)
            daemon.stderr.close()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    missing = [k for k, v in ENV.items() if not v]
    if missing:
        print("docs_drift_test.py: not set: " + ", ".join(missing) + " (see tests/install/meson.build)")
        sys.exit(2)
    unittest.main(verbosity=2)
