"""connmgrctl against the real daemon: commands, tables, --json, exit codes."""
import json
import os
import pty
import re
import select
import signal
import subprocess
import tempfile
import unittest

from daemon import CONNMGRCTL, PROTO_DOC, DaemonTest, Listener, closed_port, wait_for

PIN = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
COMPLETION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "daemon", "ctl", "connmgrctl.bash")


def help_rows(help_text):
    """The Commands section of `connmgrctl --help`: name -> its lines (a row's
    first line starts with two spaces and the name, its continuations with more)."""
    rows, current, section = {}, None, False
    for line in help_text.splitlines():
        if line == "Commands:":
            section = True
        elif not line.strip():
            section = False
        elif section and re.match(r"^  \S", line):
            current = line.split()[0]
            rows[current] = [line]
        elif section:
            rows[current].append(line)
    return rows


def complete(*words, env=None):
    """What bash offers for the last of `words` with connmgrctl.bash sourced."""
    script = f". {json.dumps(COMPLETION)}\n" + r"""
COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
_connmgrctl connmgrctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""
    env = dict(env or os.environ)
    # The completion runs `connmgrctl`: the one under test.
    env["PATH"] = os.path.dirname(os.path.abspath(CONNMGRCTL)) + os.pathsep + env.get("PATH", "")
    out = subprocess.run(["bash", "--norc", "--noprofile", "-c", script, "bash", "connmgrctl"] + list(words),
                         capture_output=True, text=True, timeout=30, env=env, check=True)
    return out.stdout.split()


class CtlTest(DaemonTest):
    def ctl(self, *args, check=None, env=None):
        out = subprocess.run([CONNMGRCTL, "--socket", self.d.sock] + list(args),
                             capture_output=True, text=True, timeout=30, env=env)
        if check is not None:
            self.assertEqual(out.returncode, check, out.stderr + out.stdout)
        for word in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            self.assertNotIn(word, out.stderr)
        return out

    def ctl_json(self, method, *args):
        """`connmgrctl --json ARGS`: its stdout is the result of `method`, as proto/ says."""
        out = self.ctl("--json", *args, check=0)
        result = json.loads(out.stdout)
        PROTO_DOC.check(result, PROTO_DOC.methods[method]["result"]["schema"], "connmgrctl --json " + args[0])
        return result

    def ctl_on_terminal(self, *args, env=None):
        """Runs connmgrctl with its stdout on a pseudo-terminal; returns (status, output)."""
        master, slave = pty.openpty()
        try:
            proc = subprocess.Popen([CONNMGRCTL, "--socket", self.d.sock] + list(args), stdout=slave,
                                    stderr=subprocess.PIPE, env=env)
            os.close(slave)
            slave = None
            chunks = []
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO once the child has closed the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            proc.wait(10)
            proc.stderr.close()
            return proc.returncode, b"".join(chunks).decode()
        finally:
            os.close(master)
            if slave is not None:
                os.close(slave)

    def test_add_connect_list_and_disconnect(self):
        peer = Listener()
        try:
            out = self.ctl("add-node", "web1", "--name", "web one", "--endpoint",
                           "tcp://127.0.0.1:%d" % peer.port, "--endpoint", "quic://[::1]:4433", check=0)
            self.assertIn("added node web1", out.stdout)
            self.assertIn("::1", out.stdout)
            out = self.ctl("nodes", check=0)
            self.assertIn("web one", out.stdout)
            self.assertIn("ago", out.stdout)
            out = self.ctl("connect", "web1", "--protocol", "tcp", check=0)
            self.assertIn("linked via tcp", out.stdout)
            out = self.ctl("links", check=0)
            self.assertIn("web1", out.stdout)
            self.assertIn("active", out.stdout)
            links = json.loads(self.ctl("--json", "links", check=0).stdout)
            self.assertEqual(links["connections"][0]["node_id"], "web1")
            out = self.ctl("disconnect", "web1", check=0)
            self.assertIn("disconnected", out.stdout)
            self.assertTrue(wait_for(lambda: peer.eofs == 1))
        finally:
            peer.stop()

    def test_help_lists_every_command(self):
        for args in (["--help"], ["help"]):
            out = subprocess.run([CONNMGRCTL] + args, capture_output=True, text=True, timeout=10)
            self.assertEqual(out.returncode, 0)
            for cmd in ["status", "nodes", "node ", "endpoints", "add-node", "remove-node", "add-endpoint",
                        "remove-endpoint", "connect", "disconnect", "links", "watch", "pipe", "exec", "call",
                        "--json", "--socket", "--timeout"]:
                self.assertIn(cmd, out.stdout)

    def test_help_lists_every_row_of_the_command_table(self):
        # The table's rows as the completion gets them from connmgrctl itself.
        table = subprocess.run([CONNMGRCTL, "__complete", ""], capture_output=True, text=True, timeout=10,
                               check=True).stdout.split()
        self.assertEqual(table[0], "words")
        self.assertGreaterEqual(len(table), 15)
        for args in (["--help"], ["help"]):
            out = subprocess.run([CONNMGRCTL] + args, capture_output=True, text=True, timeout=10)
            self.assertEqual(out.returncode, 0)
            rows = help_rows(out.stdout)
            self.assertEqual(list(rows), table[1:])
            for name, lines in rows.items():
                # Each row with its help line, at column 39.
                self.assertTrue(any(len(l) > 39 and l[38] == " " and l[39] != " " for l in lines), lines)

    def test_a_wrong_argument_count_or_option_names_the_commands_synopsis_and_exits_2(self):
        usage = {
            "status": "status",
            "node": "node ID",
            "nodes": "nodes [--limit N] [--after ID]",
            "add-endpoint": "add-endpoint NODE PROTO HOST PORT [--server-name S] [--alpn A] [--pin SHA256]",
            "connect": "connect NODE | --endpoint ID [--protocol P] [--timeout DURATION] [--retry N] [--wait] "
                       "[--reconnect]",
            "links": "links [--all]",
            "call": "call METHOD [JSON-PARAMS]",
            "pipe": "pipe NODE [--protocol P] [--timeout DURATION]",
            "exec": "exec NODE [--protocol P] [--timeout DURATION] -- CMD [ARGS]",
        }
        cases = [
            (("status", "extra"), "status", None),
            (("node",), "node", None),
            (("node", "a", "b"), "node", None),
            (("add-endpoint", "n1", "tcp"), "add-endpoint", None),
            (("connect",), "connect", None),
            (("connect", "n1", "--endpoint", "3"), "connect", None),
            (("call",), "call", None),
            (("call", "status", "{}", "more"), "call", None),
            (("nodes", "--bogus"), "nodes", "unknown option --bogus for nodes"),
            (("links", "--all", "--all"), "links", "--all given twice"),
            (("links", "--all=yes"), "links", "--all takes no value"),
            (("pipe",), "pipe", None),
            (("pipe", "n1", "n2"), "pipe", None),
            (("exec", "n1"), "exec", "no command to run after --"),
            (("exec", "n1", "--"), "exec", "no command to run after --"),
            (("exec", "n1", "true"), "exec", None),
        ]
        help_text = self.ctl("--help", check=0).stdout
        for args, cmd, what in cases:
            with self.subTest(args=args):
                out = self.ctl(*args, check=2)
                self.assertEqual(out.stdout, "")
                self.assertIn("usage: connmgrctl " + usage[cmd] + " (see connmgrctl --help)", out.stderr)
                if what:
                    self.assertIn(what, out.stderr)
        for cmd in ("status", "node", "nodes", "add-endpoint", "links", "call"):
            self.assertRegex(help_text, r"\n  " + re.escape(usage[cmd]) + r"[ \n]")  # as --help's row
        self.assertIn("unknown command 'frobnicate'", self.ctl("frobnicate", check=2).stderr)
        self.assertEqual(self.d.result("nodes.list")["nodes"], [])  # none of these reached the daemon

    def test_completion_offers_the_tables_commands_and_a_commands_options(self):
        rows = help_rows(self.ctl("--help", check=0).stdout)
        self.assertEqual(complete(""), list(rows))
        self.assertEqual(complete("add-"), ["add-node", "add-endpoint"])
        for cmd, lines in rows.items():
            with self.subTest(command=cmd):
                options = sorted(set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", "\n".join(lines))))
                if cmd not in ("call", "help"):  # --json after any command but these raw ones
                    options = sorted(options + ["--json"])
                self.assertEqual(sorted(complete(cmd, "--")), options)
        self.assertEqual(complete("--"), ["--socket", "--json", "--timeout", "--help", "--version"])
        # Values: node ids asked of the daemon the command line names, protocols.
        for node in ("web1", "web2", "db1"):
            self.ctl("add-node", node, check=0)
        self.assertEqual(complete("--socket", self.d.sock, "connect", "web"), ["web1", "web2"])
        self.assertEqual(complete("--socket=" + self.d.sock, "add-endpoint", ""), ["db1", "web1", "web2"])
        self.assertEqual(complete("--socket", self.d.sock, "add-endpoint", "db1", ""), ["tcp", "quic"])
        self.assertEqual(complete("--socket", self.d.sock, "endpoints", "db1", "--protocol", "t"), ["tcp"])
        self.assertEqual(complete("--socket", self.d.sock, "pipe", "d"), ["db1"])
        self.assertEqual(complete("pipe", "db1", "--protocol", "q"), ["quic"])
        # exec: the command after "--" (a program of PATH), then files.
        self.assertIn("true", complete("exec", "db1", "--", "tru"))
        with tempfile.TemporaryDirectory() as d:
            open(os.path.join(d, "stream-input"), "w").close()
            self.assertEqual(complete("exec", "db1", "--", "cat", os.path.join(d, "stream-in")),
                             [os.path.join(d, "stream-input")])

    def test_every_command_has_its_method_and_json_output(self):
        self.ctl_json("nodes.add", "add-node", "n1", "--name", "one")
        ep = self.ctl_json("endpoints.add", "add-endpoint", "n1", "quic", "::1", "4433", "--server-name", "peer.test",
                           "--alpn", "h3", "--pin", PIN)
        self.assertEqual((ep["server_name"], ep["alpn"], ep["pin_sha256"]), ("peer.test", "h3", PIN))
        self.ctl_json("endpoints.add", "add-endpoint", "n1", "tcp", "127.0.0.1", "9")
        self.assertEqual([e["protocol"] for e in self.ctl_json("endpoints.list", "endpoints", "n1", "--protocol", "quic")["endpoints"]],
                         ["quic"])
        self.assertEqual(len(self.ctl_json("nodes.get", "node", "n1")["endpoints"]), 2)
        for i in range(2, 5):
            self.ctl("add-node", "n%d" % i, check=0)
        page = self.ctl_json("nodes.list", "nodes", "--limit", "2", "--after", "n1")
        self.assertEqual([n["id"] for n in page["nodes"]], ["n2", "n3"])
        out = self.ctl("nodes", "--limit", "2", check=0)
        self.assertIn("--after n2", out.stdout)  # tells how to get the next page
        self.assertEqual(self.ctl_json("endpoints.remove", "remove-endpoint", str(ep["id"])),
                         {"endpoint_id": ep["id"], "removed": True})
        self.assertEqual(self.ctl_json("nodes.remove", "remove-node", "n4"), {"node_id": "n4", "removed": True})
        self.ctl_json("status", "status")
        self.ctl_json("connections.list", "links", "--all")
        self.ctl_json("disconnect", "disconnect", "n1")
        # --json may also follow the command.
        self.assertIn("nodes", json.loads(self.ctl("nodes", "--json", check=0).stdout))

    def test_tables_are_aligned_with_human_times(self):
        self.ctl("add-node", "a", "--endpoint", "tcp://127.0.0.1:9", "--endpoint", "quic://[::1]:4433", check=0)
        self.ctl("add-node", "a-much-longer-node-id", "--name", "web", check=0)
        lines = self.ctl("nodes", check=0).stdout.splitlines()
        self.assertEqual(lines[0].split(), ["ID", "NAME", "LINK", "CREATED"])
        # Columns start where the header's do.
        col = lines[0].index("NAME")
        self.assertEqual(lines[2][col:col + 3], "web")
        self.assertEqual(lines[1][col:col + 1], "-")
        self.assertRegex(lines[1], r"\d+s ago$")
        lines = self.ctl("endpoints", "a", check=0).stdout.splitlines()
        self.assertEqual(len(lines), 3)
        self.assertIn("::1", lines[2])

    def test_connect_by_endpoint_with_a_timeout_then_links(self):
        peer = Listener()
        try:
            self.ctl("add-node", "n1", "--endpoint", "tcp://127.0.0.1:%d" % peer.port, check=0)
            ep = self.ctl_json("endpoints.list", "endpoints", "n1")["endpoints"][0]
            link = self.ctl_json("connect", "connect", "--endpoint", str(ep["id"]), "--timeout", "2s")
            self.assertEqual(link["state"], "active")
            out = self.ctl("connect", "n1", check=0)
            self.assertIn("already linked", out.stdout)
            table = self.ctl("links", check=0).stdout.splitlines()
            self.assertEqual(table[0].split()[:2], ["NODE", "STATE"])
            self.assertTrue(table[1].startswith("n1 "))
            self.assertIn("127.0.0.1:%d" % peer.port, table[1])
        finally:
            peer.stop()

    def test_a_failed_connect_with_retries_reports_attempts(self):
        self.ctl("add-node", "n1", "--endpoint", "tcp://127.0.0.1:%d" % closed_port(), check=0)
        out = self.ctl("connect", "n1", "--retry", "3", "--wait", check=1)
        self.assertIn("refused", out.stderr)
        self.assertIn("3 attempts", out.stderr)
        self.assertIn("-32010", out.stderr)
        # Each attempt as it happens: n/m, the reason, the delay before the next.
        lines = out.stderr.splitlines()
        for n in (1, 2, 3):
            self.assertIn("attempt %d/3 via endpoint 1 (tcp) failed: refused" % n, lines)
        self.assertIn("  next try in 1.0s", lines)
        self.assertIn("  next try in 2.0s", lines)
        self.assertLess(lines.index("attempt 1/3 via endpoint 1 (tcp) failed: refused"),
                        lines.index("  next try in 1.0s"))
        # --json keeps stderr for the error alone.
        out = self.ctl("--json", "connect", "n1", "--retry", "2", "--wait", check=1)
        self.assertNotIn("attempt 1/2", out.stderr)
        out = self.ctl("connect", "n1", "--retry", "5", check=1)
        self.assertIn("next attempt", out.stderr)
        out = self.ctl("links", "--all", check=0)
        self.assertIn("waiting_retry", out.stdout)
        self.assertNotIn("waiting_retry", self.ctl("links", check=0).stdout)
        out = self.ctl("disconnect", "n1", check=0)
        self.assertIn("attempts cancelled", out.stdout)

    def test_colour_only_on_a_terminal_without_no_color(self):
        env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
        peer = Listener()
        try:
            self.ctl("add-node", "linked", "--endpoint", "tcp://127.0.0.1:%d" % peer.port, check=0)
            self.ctl("add-node", "z", check=0)
            self.ctl("connect", "linked", check=0)
            status, out = self.ctl_on_terminal("nodes", env=env)
            self.assertEqual(status, 0)
            self.assertIn("\x1b[", out)
            # Coloured cells take no extra width: CREATED stays aligned.
            plain = [re.sub(r"\x1b\[[0-9;]*m", "", l) for l in out.replace("\r", "").splitlines()]
            col = plain[0].index("CREATED")
            self.assertRegex(plain[1][col:], r"^\d+s ago$")
            self.assertRegex(plain[2][col:], r"^\d+s ago$")
            self.ctl("disconnect", "linked", check=0)
        finally:
            peer.stop()
        status, out = self.ctl_on_terminal("nodes", env=dict(env, NO_COLOR="1"))
        self.assertEqual(status, 0)
        self.assertIn("ID", out)
        self.assertNotIn("\x1b[", out)
        self.assertNotIn("\x1b[", self.ctl("nodes", env=env, check=0).stdout)

    def test_error_answers_exit_1_with_the_message(self):
        out = self.ctl("node", "ghost", check=1)
        self.assertIn("not found", out.stderr)
        self.assertIn("-32001", out.stderr)
        self.assertEqual(out.stdout, "")
        self.ctl("add-node", "n1", "--endpoint", "tcp://127.0.0.1:9", check=0)
        out = self.ctl("connect", "n1", check=1)
        self.assertIn("refused", out.stderr)

    def test_usage_errors_exit_2_and_an_absent_daemon_exits_3(self):
        self.ctl("frobnicate", check=2)
        self.ctl("node", check=2)
        self.ctl("add-node", "x", "--endpoint", "nonsense", check=2)
        self.ctl("add-node", "x", "--endpoint", "tcp://::1:80", check=2)  # IPv6 needs brackets
        self.ctl("connect", "x", "--timeout", "soon", check=2)
        self.ctl("nodes", "--limit", "many", check=2)
        self.ctl("--bogus", "status", check=2)
        out = subprocess.run([CONNMGRCTL, "--socket"], capture_output=True, text=True, timeout=10)
        self.assertEqual(out.returncode, 2)
        self.assertEqual(self.d.result("nodes.list")["nodes"], [])  # none of these reached the daemon
        out = subprocess.run([CONNMGRCTL, "--socket", "/nonexistent/sock", "status"],
                             capture_output=True, text=True, timeout=10)
        self.assertEqual(out.returncode, 3)
        self.assertIn("cannot connect to /nonexistent/sock", out.stderr)
        self.assertIn("is connmgrd running", out.stderr)

    def test_call_sends_any_method(self):
        out = self.ctl("--json", "call", "status", check=0)
        self.assertIn("node_id", json.loads(out.stdout))
        self.ctl("call", "status", "{not json", check=2)

    def test_watch_prints_events_as_they_happen(self):
        peer = Listener()
        watcher = subprocess.Popen([CONNMGRCTL, "--socket", self.d.sock, "--json", "watch", "connected"],
                                   stdout=subprocess.PIPE, text=True)
        try:
            self.assertTrue(wait_for(lambda: self.d.result("status")["counts"]["clients"] >= 2))
            self.ctl("add-node", "n1", "--endpoint", "tcp://127.0.0.1:%d" % peer.port, check=0)
            self.ctl("connect", "n1", check=0)
            line = watcher.stdout.readline()
            event = json.loads(line)
            PROTO_DOC.check(event, PROTO_DOC.schema("Event"), "connmgrctl --json watch")
            self.assertEqual(event["type"], "connected")
            self.assertEqual(event["node_id"], "n1")
        finally:
            watcher.terminate()
            watcher.wait(5)
            watcher.stdout.close()
            peer.stop()

    def test_watch_on_a_terminal_is_a_live_view_of_links_and_events(self):
        peer = Listener()
        self.ctl("add-node", "n1", "--endpoint", "tcp://127.0.0.1:%d" % peer.port, check=0)
        pid, fd = pty.fork()
        if pid == 0:  # the child: connmgrctl on a terminal
            os.execv(CONNMGRCTL, ["connmgrctl", "--socket", self.d.sock, "watch"])
        out = b""

        def screen_has(*words):
            nonlocal out
            while True:
                r, _, _ = select.select([fd], [], [], 0.1)
                if not r:
                    break
                try:
                    out += os.read(fd, 65536)
                except OSError:
                    break
            last = re.sub(r"\x1b\[[0-9;]*m", "", out.decode(errors="replace").split("\x1b[2J")[-1])
            return all(w in last for w in words)
        try:
            self.assertTrue(wait_for(lambda: screen_has("0 active", "NODE", "latest events"), timeout=5))
            self.ctl("connect", "n1", "--wait", check=0)
            # Redrawn at the event: the link in the table, the event below it.
            self.assertTrue(wait_for(lambda: screen_has("1 active", "n1", "active", "connected  node=n1"),
                                     timeout=5), out.decode(errors="replace")[-2000:])
            self.ctl("disconnect", "n1", check=0)
            self.assertTrue(wait_for(lambda: screen_has("0 active", "disconnected  node=n1"), timeout=5))
        finally:
            os.kill(pid, signal.SIGINT)
            os.waitpid(pid, 0)
            os.close(fd)
            peer.stop()
        # --plain keeps the stream on a terminal too (and the stream is what a pipe gets).
        self.assertIn("--plain", self.ctl("--help", check=0).stdout)

    def test_the_daemons_default_socket_is_found_without_flags(self):
        env = dict(os.environ, CONNMGR_SOCKET=self.d.sock)
        out = subprocess.run([CONNMGRCTL, "status"], capture_output=True, text=True, timeout=10, env=env)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("connmgrd", out.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
