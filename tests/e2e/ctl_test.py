"""connmgrctl against the real daemon: commands, tables, --json, exit codes."""
import json
import os
import subprocess
import time
import unittest

from harness import CONNMGRCTL, DaemonTest, Listener, wait_for


class CtlTest(DaemonTest):
    def ctl(self, *args, check=None):
        out = subprocess.run([CONNMGRCTL, "--socket", self.d.sock] + list(args),
                             capture_output=True, text=True, timeout=30)
        if check is not None:
            self.assertEqual(out.returncode, check, out.stderr + out.stdout)
        return out

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

    def test_error_answers_exit_1_with_the_message(self):
        out = self.ctl("node", "ghost", check=1)
        self.assertIn("not found", out.stderr)
        self.ctl("add-node", "n1", "--endpoint", "tcp://127.0.0.1:9", check=0)
        out = self.ctl("connect", "n1", check=1)
        self.assertIn("refused", out.stderr)

    def test_usage_errors_exit_2_and_an_absent_daemon_exits_3(self):
        self.ctl("frobnicate", check=2)
        self.ctl("node", check=2)
        self.ctl("add-node", "x", "--endpoint", "nonsense", check=2)
        out = subprocess.run([CONNMGRCTL, "--socket", "/nonexistent/sock", "status"],
                             capture_output=True, text=True, timeout=10)
        self.assertEqual(out.returncode, 3)
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
            self.assertEqual(event["type"], "connected")
            self.assertEqual(event["node_id"], "n1")
        finally:
            watcher.terminate()
            watcher.wait(5)
            watcher.stdout.close()
            peer.stop()

    def test_the_daemons_default_socket_is_found_without_flags(self):
        env = dict(os.environ, CONNMGR_SOCKET=self.d.sock)
        out = subprocess.run([CONNMGRCTL, "status"], capture_output=True, text=True, timeout=10, env=env)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("connmgrd", out.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
