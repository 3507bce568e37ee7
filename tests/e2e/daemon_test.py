"""connmgrd as a process: configuration, signals, systemd's notify protocol and
socket activation, permissions, the socket file's life, shell pipelines."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from daemon import CONNMGRD, Client, Daemon, Listener, duration_ms, wait_for


def run(args, timeout=10, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)


class ConfigurationTest(unittest.TestCase):
    def test_help_shows_every_key_with_its_default(self):
        out = run([CONNMGRD, "--help"])
        self.assertEqual(out.returncode, 0)
        for key in ["database", "socket", "socket_mode", "admin_group", "connection_timeout",
                    "base_retry_interval", "max_retry_interval", "max_retry_count", "max_clients",
                    "max_request_bytes", "log_level", "quic_alpn", "quic_ca_file", "quic_idle_timeout",
                    "quic_keepalive", "tcp_keepalive"]:
            self.assertIn(key, out.stdout)
        self.assertIn("[10s]", out.stdout)

    def test_a_user_who_is_not_root_gets_the_embedded_default(self):
        d = tempfile.mkdtemp()
        try:
            env = {"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": d + "/run", "XDG_STATE_HOME": d + "/state"}
            out = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", CONNMGRD, "--help"], env=env)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn(d + "/state/connmgr/connmgr.db", out.stdout)
            self.assertIn(d + "/run/connmgr/connmgrd.sock", out.stdout)
        finally:
            shutil.rmtree(d)

    def test_errors_name_the_key_and_exit_2(self):
        cases = [
            (["--connection-timeout=fast"], "connection_timeout"),
            (["--connection-timeout", "0"], "connection_timeout"),
            (["--max-clients=-1"], "max_clients"),
            (["--socket-mode=999"], "socket_mode"),
            (["--log-level=loud"], "log_level"),
            (["--no-such-key=1"], "no_such_key"),
            (["--base-retry-interval=2m", "--max-retry-interval=1m"], "base_retry_interval"),
            (["--quic-keepalive=40s"], "quic_keepalive"),
            (["--database"], "database"),
            (["--config=/nonexistent/connmgrd.conf"], "/nonexistent/connmgrd.conf"),
        ]
        for args, word in cases:
            with self.subTest(args=args):
                out = run([CONNMGRD] + args)
                self.assertEqual(out.returncode, 2, out.stderr)
                self.assertIn(word, out.stderr)

    def test_a_bad_file_is_reported_with_its_line(self):
        d = tempfile.mkdtemp()
        try:
            path = os.path.join(d, "c.conf")
            with open(path, "w") as f:
                f.write("# comment\n[connections]\nconnection_timeout = 2s\nmax_retry_count = lots\n")
            out = run([CONNMGRD, "--config", path])
            self.assertEqual(out.returncode, 2)
            self.assertIn("max_retry_count", out.stderr)
            self.assertIn(path + ":4", out.stderr)
        finally:
            shutil.rmtree(d)

    def test_flags_win_over_the_file_which_wins_over_defaults(self):
        d = Daemon("--max-retry-count=9", config_text="max_retry_count = 7\nbase-retry-interval = 250ms  # comment\n")
        try:
            cfg = d.result("status")["config"]
            self.assertEqual(cfg["max_retry_count"], "9")
            # status.config may spell a duration in any unit: compare values.
            self.assertEqual(duration_ms(cfg["base_retry_interval"]), 250)
            self.assertEqual(duration_ms(cfg["max_retry_interval"]), 60000)
        finally:
            d.stop()
            d.cleanup()


class LifecycleTest(unittest.TestCase):
    def setUp(self):
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            d.cleanup()

    def daemon(self, *args, **kw):
        d = Daemon(*args, **kw)
        self.daemons.append(d)
        return d

    def test_sigterm_closes_links_so_peers_see_eof_and_exits_0(self):
        peer = Listener()
        try:
            d = self.daemon()
            for i in range(20):
                d.result("nodes.add", {"id": "n%d" % i, "endpoints": [{"protocol": "tcp", "address": "127.0.0.1", "port": peer.port}]})
                d.result("connect", {"node_id": "n%d" % i})
            self.assertTrue(wait_for(lambda: peer.accepted() == 20))
            start = time.monotonic()
            self.assertEqual(d.stop(), 0)
            self.assertLess(time.monotonic() - start, 5)
            self.assertTrue(wait_for(lambda: peer.eofs == 20))
            self.assertFalse(os.path.exists(d.sock))
            self.assertIn("stopped", d.log_text())
        finally:
            peer.stop()

    def test_statistics_are_flushed_at_exit(self):
        peer = Listener()
        try:
            d = self.daemon()
            d.result("nodes.add", {"id": "n1", "endpoints": [{"protocol": "tcp", "address": "127.0.0.1", "port": peer.port}]})
            d.result("connect", {"node_id": "n1"})
            self.assertEqual(d.stop(), 0)
            out = run(["sqlite3", d.db, "SELECT success_count FROM endpoints"])
            self.assertEqual(out.stdout.strip(), "1")
        finally:
            peer.stop()

    def test_sighup_rereads_the_configuration_and_keeps_it_when_bad(self):
        d = self.daemon(config_text="connection_timeout = 3s\n")
        self.assertEqual(duration_ms(d.result("status")["config"]["connection_timeout"]), 3000)
        with open(d.config_path, "w") as f:
            f.write("connection_timeout = 4s\nquic_alpn = other\n")
        d.signal(signal.SIGHUP)
        self.assertTrue(wait_for(lambda: duration_ms(d.result("status")["config"]["connection_timeout"]) == 4000))
        self.assertEqual(d.result("status")["config"]["quic_alpn"], "connmgr")  # needs a restart
        self.assertIn("restart", d.log_text())
        with open(d.config_path, "w") as f:
            f.write("connection_timeout = never\n")
        d.signal(signal.SIGHUP)
        self.assertTrue(wait_for(lambda: "reload failed" in d.log_text()))
        self.assertEqual(duration_ms(d.result("status")["config"]["connection_timeout"]), 4000)
        self.assertEqual(d.stop(), 0)

    def test_a_stale_socket_file_is_replaced(self):
        d = self.daemon(start=False)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(d.sock)
        s.close()  # the file stays; nobody listens
        d.start()
        self.assertIn("result", d.call("status"))

    def test_a_second_daemon_on_a_live_socket_refuses_to_start(self):
        d = self.daemon()
        out = run([CONNMGRD, "--database=" + d.db + "2", "--socket=" + d.sock])
        self.assertEqual(out.returncode, 1)
        self.assertIn("another connmgrd is serving", out.stderr)
        self.assertIn("result", d.call("status"))

    def test_a_socket_path_over_sun_path_is_refused(self):
        d = tempfile.mkdtemp()
        try:
            long_path = os.path.join(d, "x" * 120 + ".sock")
            out = run([CONNMGRD, "--database=" + d + "/db", "--socket=" + long_path])
            self.assertEqual(out.returncode, 1)
            self.assertIn("over the limit of 107", out.stderr)
        finally:
            shutil.rmtree(d)

    def test_a_file_that_is_not_a_database_stops_the_start_and_is_kept(self):
        d = self.daemon(start=False)
        with open(d.db, "wb") as f:
            f.write(b"this is not sqlite" * 100)
        out = run(d.args)
        self.assertEqual(out.returncode, 1)
        self.assertIn("not a database", out.stderr)
        with open(d.db, "rb") as f:
            self.assertEqual(f.read(), b"this is not sqlite" * 100)

    def test_the_socket_has_mode_0660_by_default(self):
        d = self.daemon()
        self.assertEqual(os.stat(d.sock).st_mode & 0o777, 0o660)

    def test_a_socat_jq_pipeline_gets_a_slow_answer_after_half_close(self):
        d = self.daemon()
        d.result("nodes.add", {"id": "n1", "endpoints": [{"protocol": "tcp", "address": "127.0.0.1", "port": 9}]})
        req = '{"jsonrpc":"2.0","id":1,"method":"connect","params":{"node_id":"n1","wait":true,"retry":{"max_attempts":3,"initial_delay_ms":700}}}'
        out = subprocess.run("echo '%s' | socat -t 30 - UNIX-CONNECT:%s | jq -e '.error.data.attempts'" % (req, d.sock),
                             shell=True, capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.strip(), "3")


class PipelineTest(unittest.TestCase):
    def test_echo_socat_jq_gets_a_result(self):
        peer = Listener()
        try:
            with Daemon() as d:
                d.result("nodes.add", {"id": "n1", "endpoints": [{"protocol": "tcp", "address": "127.0.0.1", "port": peer.port}]})
                req = '{"jsonrpc":"2.0","id":1,"method":"connect","params":{"node_id":"n1"}}'
                out = subprocess.run("echo '%s' | socat -t 30 - UNIX-CONNECT:%s | jq -e .result.state" % (req, d.sock),
                                     shell=True, capture_output=True, text=True, timeout=40)
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertEqual(out.stdout.strip(), '"active"')
                # jq -e fails the pipeline on an error answer.
                req = '{"jsonrpc":"2.0","id":2,"method":"nodes.get","params":{"node_id":"ghost"}}'
                out = subprocess.run("echo '%s' | socat -t 30 - UNIX-CONNECT:%s | jq -e .result" % (req, d.sock),
                                     shell=True, capture_output=True, text=True, timeout=40)
                self.assertNotEqual(out.returncode, 0)
        finally:
            peer.stop()


class PermissionsTest(unittest.TestCase):
    def test_state_changing_methods_need_privilege(self):
        d = Daemon("--socket-mode=0666")
        try:
            status = '{"jsonrpc":"2.0","id":1,"method":"status"}'
            add = '{"jsonrpc":"2.0","id":2,"method":"nodes.add","params":{"id":"x"}}'
            cmd = "printf '%s\\n%s\\n' | socat -t 5 - UNIX-CONNECT:%s" % (status, add, d.sock)
            out = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", cmd])
            lines = [l for l in out.stdout.splitlines() if l]
            self.assertEqual(len(lines), 2, out)
            import json
            answers = {json.loads(l)["id"]: json.loads(l) for l in lines}
            self.assertIn("result", answers[1])
            self.assertEqual(answers[2]["error"]["code"], -32030)
            self.assertEqual(answers[2]["error"]["data"]["uid"], 65534)
            # Root may.
            self.assertIn("result", d.call("nodes.add", {"id": "x"}))
        finally:
            d.stop()
            d.cleanup()

    def test_members_of_the_admin_group_may_change_state(self):
        d = Daemon("--socket-mode=0666", "--admin-group=65534")
        try:
            add = '{"jsonrpc":"2.0","id":2,"method":"nodes.add","params":{"id":"y"}}'
            cmd = "echo '%s' | socat -t 5 - UNIX-CONNECT:%s" % (add, d.sock)
            out = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", cmd])
            self.assertIn('"result"', out.stdout, out)
        finally:
            d.stop()
            d.cleanup()

    def test_without_access_to_the_socket_nobody_gets_in(self):
        d = Daemon()
        try:
            out = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "socat", "-t", "2", "-",
                       "UNIX-CONNECT:" + d.sock], input='{"jsonrpc":"2.0","id":1,"method":"status"}\n')
            self.assertNotEqual(out.returncode, 0)
            self.assertIn("Permission denied", out.stderr)
        finally:
            d.stop()
            d.cleanup()


class SystemdTest(unittest.TestCase):
    def test_notify_protocol_ready_watchdog_reloading_stopping(self):
        tmp = tempfile.mkdtemp()
        notify_path = os.path.join(tmp, "notify")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(notify_path)
        listener.settimeout(0.2)
        d = Daemon(env={"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "200000"}, start=False)
        try:
            d.start(wait=False)
            seen = []

            def drain(until, timeout=10):
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    try:
                        seen.append(listener.recv(4096).decode())
                    except socket.timeout:
                        pass
                    if any(until in m for m in seen):
                        return True
                return False

            self.assertTrue(drain("READY=1"))
            ready = next(m for m in seen if "READY=1" in m)
            self.assertIn("STATUS=", ready)
            # READY comes once the socket is served.
            self.assertIn("result", d.call("status"))
            seen.clear()
            self.assertTrue(drain("WATCHDOG=1", timeout=3))
            seen.clear()
            d.signal(signal.SIGHUP)
            self.assertTrue(drain("READY=1"))
            self.assertTrue(any("RELOADING=1" in m and "MONOTONIC_USEC=" in m for m in seen), seen)
            seen.clear()
            d.signal(signal.SIGTERM)
            self.assertTrue(drain("STOPPING=1"))
            self.assertEqual(d.proc.wait(10), 0)
        finally:
            listener.close()
            d.cleanup()
            shutil.rmtree(tmp)

    def test_socket_activation_serves_the_passed_socket(self):
        tmp = tempfile.mkdtemp()
        sock = os.path.join(tmp, "activated.sock")
        proc = subprocess.Popen(["systemd-socket-activate", "-l", sock, "--fdname=rpc", CONNMGRD,
                                 "--database=" + os.path.join(tmp, "db"), "--socket=" + os.path.join(tmp, "unused.sock")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            self.assertTrue(wait_for(lambda: os.path.exists(sock)))
            c = Client(sock)
            answer = c.call("status")
            c.close()
            self.assertEqual(answer["result"]["socket"], "(systemd socket activation)")
            self.assertFalse(os.path.exists(os.path.join(tmp, "unused.sock")))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
            shutil.rmtree(tmp)


if __name__ == "__main__":
    unittest.main(verbosity=2)
