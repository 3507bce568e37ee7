"""connmgrctl pipe and exec against the real daemon: ssh through
`connmgrctl pipe %h` as its ProxyCommand over a TCP link (straight to a
throwaway sshd) and over a QUIC link (connmgr-test-peer's QUIC-to-TCP
gateway in front of it), `connmgrctl exec` and a few MiB through `pipe`
byte-exact against an echoing peer, and pipe's errors."""
import hashlib
import os
import subprocess
import sys
import tempfile
import unittest

from daemon import CONNMGRCTL, DaemonTest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "peer"))
import sshd_fixture  # noqa: E402
from peers import Certificate, TestPeer  # noqa: E402

MiB = 1024 * 1024


class CtlStreamsTest(DaemonTest):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def ctl(self, *args, **kwargs):
        kwargs.setdefault("timeout", 60)
        kwargs.setdefault("capture_output", True)
        return subprocess.run([CONNMGRCTL, "--socket", self.d.sock] + list(args), **kwargs)

    def add_node(self, node, protocol, port, **extra):
        self.d.result("nodes.add", {"id": node, "endpoints": [
            dict({"protocol": protocol, "address": "127.0.0.1", "port": port}, **extra)]})

    def echo_peer(self):
        peer = TestPeer("--tcp", "0", "--tcp-streams", "echo")
        self.addCleanup(peer.stop)
        self.add_node("echo", "tcp", peer.tcp_port)
        return peer

    def test_pipe_carries_a_few_mib_byte_exact_both_ways(self):
        self.echo_peer()
        data = os.urandom(4 * MiB)
        src, dst = os.path.join(self.tmp.name, "in"), os.path.join(self.tmp.name, "out")
        with open(src, "wb") as f:
            f.write(data)
        with open(src, "rb") as stdin, open(dst, "wb") as stdout:
            out = self.ctl("pipe", "echo", stdin=stdin, stdout=stdout, capture_output=False,
                           stderr=subprocess.PIPE)
        self.assertEqual(out.returncode, 0, out.stderr)
        with open(dst, "rb") as f:
            back = f.read()
        self.assertEqual(len(back), len(data))
        self.assertEqual(hashlib.sha256(back).hexdigest(), hashlib.sha256(data).hexdigest())

    def test_exec_runs_the_command_on_the_stream(self):
        self.echo_peer()
        # The command's stdin and stdout are the stream: what it writes comes back.
        out = self.ctl("exec", "echo", "--", "sh", "-c", "echo hello; head -c 6 >&2", input=b"")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, b"")
        self.assertIn(b"hello\n", out.stderr)
        out = self.ctl("exec", "echo", "--", "/nonexistent-program")
        self.assertEqual(out.returncode, 127, out.stderr)
        self.assertIn(b"cannot run /nonexistent-program", out.stderr)

    def test_pipe_to_an_unknown_node_exits_1_with_the_error(self):
        out = self.ctl("pipe", "nosuchnode", input=b"ignored")
        self.assertEqual(out.returncode, 1)
        self.assertEqual(out.stdout, b"")
        self.assertIn(b"nosuchnode", out.stderr)
        out = self.ctl("exec", "nosuchnode", "--", "true")
        self.assertEqual(out.returncode, 1)
        out = subprocess.run([CONNMGRCTL, "--socket", self.d.sock + ".absent", "pipe", "x"], capture_output=True,
                             timeout=30)
        self.assertEqual(out.returncode, 3, out.stderr)

    def test_pipe_exits_1_when_the_node_resets_the_stream(self):
        peer = TestPeer("--tcp", "0", "--tcp-streams", "reset")
        self.addCleanup(peer.stop)
        self.add_node("rst", "tcp", peer.tcp_port)
        # stdin stays open: the reset alone must end pipe, promptly.
        proc = subprocess.Popen([CONNMGRCTL, "--socket", self.d.sock, "pipe", "rst"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            proc.stdin.write(b"x" * 1000)
            proc.stdin.flush()
            rc = proc.wait(20)  # its few lines of stderr fit the pipe
            err = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            for f in (proc.stdin, proc.stdout, proc.stderr):
                f.close()
        self.assertNotEqual(rc, 0)
        self.assertIn(b"connmgrctl: the stream was", err)


class SshThroughPipeTest(DaemonTest):
    """ssh -o ProxyCommand='connmgrctl pipe %h' NODE true, over both transports."""

    def setUp(self):
        super().setUp()
        why = sshd_fixture.available()
        if why:
            self.skipTest(why)
        self.sshd = sshd_fixture.Sshd()
        self.sshd.start()
        self.addCleanup(self.sshd.stop)
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.proxy = [CONNMGRCTL, "--socket", self.d.sock, "pipe", "%h"]

    def ssh(self, *remote, data=b""):
        proc = subprocess.run(self.sshd.ssh_command(*remote, proxy=self.proxy), input=data,
                              capture_output=True, timeout=90)
        why = proc.stderr.decode(errors="replace") + self.sshd.logs()[-3000:]
        return proc.returncode, proc.stdout, why

    def test_ssh_over_a_tcp_link(self):
        self.d.result("nodes.add", {"id": "node", "endpoints": [
            {"protocol": "tcp", "address": "127.0.0.1", "port": self.sshd.port}]})
        rc, _, why = self.ssh("true")
        self.assertEqual(rc, 0, why)
        data = os.urandom(256 * 1024)
        rc, out, why = self.ssh("cat", data=data)
        self.assertEqual(rc, 0, why)
        self.assertEqual(out, data)

    def test_ssh_over_a_quic_link_through_the_peers_gateway(self):
        cert = Certificate(self.tmp.name)
        gateway = TestPeer("--quic", "0", "--cert", cert.cert, "--key", cert.key,
                           "--quic-streams", "forward:%d" % self.sshd.port)
        self.addCleanup(gateway.stop)
        self.d.result("nodes.add", {"id": "node", "endpoints": [
            {"protocol": "quic", "address": "127.0.0.1", "port": gateway.quic_port, "pin_sha256": cert.pin}]})
        rc, _, why = self.ssh("true")
        self.assertEqual(rc, 0, why)
        links = self.d.result("connections.list")["connections"]
        self.assertEqual([(l["node_id"], l["protocol"]) for l in links], [("node", "quic")])


if __name__ == "__main__":
    unittest.main()
