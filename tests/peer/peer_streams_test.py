"""The stream tooling issue 14 needs, tested on its own: connmgr-test-peer's
stream modes (TCP with plain sockets, QUIC with the Go client on quic-go), the
Go peer against itself, and OpenSSH through the test peer's QUIC-to-TCP
gateway. Real processes on 127.0.0.1; every wait is bounded.

Run one group: peer_streams_test.py TcpStreamsTest (meson runs one per test)."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402
import sshd_fixture  # noqa: E402
from peers import Certificate, QuicgoServer, TestPeer, pattern, quicgo_client  # noqa: E402

MiB = 1 << 20
EXIT_STREAM_ERROR, EXIT_WRITE_TIMEOUT = 3, 4


def need_peer(test):
    if not peers.TEST_PEER:
        raise unittest.SkipTest("TEST_PEER is not set")


def need_quicgo(test):
    if not peers.QUICGO_PEER or not os.path.exists(peers.QUICGO_PEER):
        raise unittest.SkipTest("QUICGO_PEER is not built (golang-go and quic-go missing)")


class PeerTest(unittest.TestCase):
    """Starts test peers and checks, at the end, that each stopped cleanly."""

    def setUp(self):
        need_peer(self)
        self.tmp = tempfile.mkdtemp(prefix="connmgr-peer-")
        self.peers = []

    def tearDown(self):
        for p in self.peers:
            status, errors = p.stop()
            for mark in peers.SANITIZER_MARKS:
                self.assertNotIn(mark, errors)
            self.assertEqual(status, 0, errors[-3000:])
        shutil.rmtree(self.tmp, ignore_errors=True)

    def peer(self, *args):
        p = TestPeer(*args)
        self.peers.append(p)
        return p

    def quic_peer(self, mode):
        self.cert = getattr(self, "cert", None) or Certificate(self.tmp)
        return self.peer("--quic", "0", "--cert", self.cert.cert, "--key", self.cert.key, "--quic-streams", mode)


def read_all(sock, limit=64 * MiB):
    chunks, total = [], 0
    while total <= limit:
        b = sock.recv(1 << 16)
        if not b:
            break
        chunks.append(b)
        total += len(b)
    return b"".join(chunks)


class TcpStreamsTest(PeerTest):
    def connect(self, mode):
        p = self.peer("--tcp", "0", "--tcp-streams", mode)
        s = socket.create_connection(("127.0.0.1", p.tcp_port), timeout=30)
        self.addCleanup(s.close)
        return s

    def test_echo_returns_every_byte_and_answers_the_end_with_an_end(self):
        s = self.connect("echo")
        data = os.urandom(4 * MiB)

        def send():
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        t = threading.Thread(target=send)
        t.start()
        got = read_all(s)
        t.join(30)
        self.assertEqual(len(got), len(data))
        self.assertEqual(got, data)

    def test_send_n_sends_the_pattern_then_ends(self):
        s = self.connect("send:3000000")
        self.assertEqual(read_all(s), pattern(3000000))

    def test_reset_answers_the_first_bytes_with_rst(self):
        s = self.connect("reset")
        s.sendall(b"hello")
        with self.assertRaises(ConnectionResetError):
            for _ in range(100):
                if not s.recv(100):
                    self.fail("an orderly end, not a reset")

    def test_hold_never_reads(self):
        s = self.connect("hold")
        s.settimeout(2)
        sent = 0
        chunk = b"x" * 65536
        with self.assertRaises(socket.timeout):
            while sent < 256 * MiB:
                sent += s.send(chunk)
        self.assertLess(sent, 256 * MiB)  # the buffers filled; nobody read

    def test_without_a_mode_links_behave_as_before(self):
        p = self.peer("--tcp", "0")
        s = socket.create_connection(("127.0.0.1", p.tcp_port), timeout=10)
        s.sendall(b"dropped")
        s.close()
        deadline = time.monotonic() + 10
        while "open_tcp=0" not in p.command("count") and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn("tcp=1 ", p.command("count"))
        self.assertIn("open_tcp=0", p.command("count"))


class QuicStreamsTest(PeerTest):
    """The Go client (quic-go) against connmgr-test-peer (ngtcp2)."""

    def setUp(self):
        super().setUp()
        need_quicgo(self)

    def client(self, peer, *flags, data=b"", timeout=90):
        return quicgo_client(peer.quic_port, self.cert.pin, *flags, data=data, timeout=timeout)

    def test_echo_of_8_mib_is_byte_exact_with_half_close(self):
        p = self.quic_peer("echo")
        data = os.urandom(8 * MiB)
        rc, out, stats = self.client(p, data=data)
        self.assertEqual(rc, 0, stats)
        self.assertEqual(len(out), len(data))
        self.assertEqual(out, data)

    def test_send_n_sends_the_pattern_then_fin(self):
        p = self.quic_peer("send:5000000")
        rc, out, stats = self.client(p)
        self.assertEqual(rc, 0, stats)
        self.assertEqual(out, pattern(5000000))

    def test_reset_is_an_error_for_the_client(self):
        p = self.quic_peer("reset")
        rc, out, stats = self.client(p, data=b"hello\n")
        self.assertEqual(rc, EXIT_STREAM_ERROR, stats)
        self.assertIn("canceled", stats["error"])

    def test_hold_lets_no_more_than_the_window_through(self):
        p = self.quic_peer("hold")
        rc, out, stats = self.client(p, "--write-timeout", "2", data=os.urandom(8 * MiB))
        self.assertEqual(rc, EXIT_WRITE_TIMEOUT, stats)
        # The peer's stream window is 256 KiB and it never gives credit back.
        self.assertGreater(stats["sent"], 0)
        self.assertLessEqual(stats["sent"], 256 * 1024)

    def test_many_streams_at_once_on_one_connection(self):
        p = self.quic_peer("echo")
        rc, out, stats = self.client(p, "--streams", "300", "--bytes", "50000")
        self.assertEqual(rc, 0, stats)
        self.assertEqual(stats["received"], 300 * 50000)

    def test_forward_joins_each_stream_to_a_tcp_connection(self):
        tcp = self.peer("--tcp", "0", "--tcp-streams", "echo")
        p = self.quic_peer("forward:%d" % tcp.tcp_port)
        data = os.urandom(8 * MiB)
        rc, out, stats = self.client(p, data=data)
        self.assertEqual(rc, 0, stats)
        self.assertEqual(out, data)
        rc, out, stats = self.client(p, "--streams", "50", "--bytes", "100000")
        self.assertEqual(rc, 0, stats)
        self.assertIn("tcp=51 ", tcp.command("count"))

    def test_forward_passes_the_tcp_end_on_while_the_client_still_sends(self):
        tcp = self.peer("--tcp", "0", "--tcp-streams", "send:1000000")
        p = self.quic_peer("forward:%d" % tcp.tcp_port)
        rc, out, stats = self.client(p, data=os.urandom(2 * MiB))
        self.assertEqual(rc, 0, stats)
        self.assertEqual(out, pattern(1000000))
        self.assertEqual(stats["sent"], 2 * MiB)

    def test_forward_turns_a_tcp_reset_into_a_stream_reset(self):
        tcp = self.peer("--tcp", "0", "--tcp-streams", "reset")
        p = self.quic_peer("forward:%d" % tcp.tcp_port)
        rc, out, stats = self.client(p, data=b"hello\n")
        self.assertEqual(rc, EXIT_STREAM_ERROR, stats)

    def test_forward_to_a_closed_port_resets_the_stream(self):
        p = self.quic_peer("forward:%d" % sshd_fixture.free_tcp_port())
        rc, out, stats = self.client(p, data=b"hello\n")
        self.assertEqual(rc, EXIT_STREAM_ERROR, stats)

    def test_forward_turns_a_stream_reset_into_a_tcp_reset(self):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        self.addCleanup(server.close)
        p = self.quic_peer("forward:%d" % server.getsockname()[1])
        result = {}

        def run_client():  # it resets its stream when a write blocks for 1 s
            result["client"] = self.client(p, "--write-timeout", "1", data=os.urandom(32 * MiB))
        t = threading.Thread(target=run_client)
        t.start()
        server.settimeout(20)
        conn, _ = server.accept()
        self.addCleanup(conn.close)
        t.join(60)  # nobody reads the TCP side: the client's writes block
        rc, out, stats = result["client"]
        self.assertEqual(rc, EXIT_WRITE_TIMEOUT, stats)
        conn.settimeout(20)
        with self.assertRaises(ConnectionResetError):
            read_all(conn)


class QuicgoSanityTest(unittest.TestCase):
    """The Go client against the Go server: the tool checks itself."""

    def setUp(self):
        need_quicgo(self)
        self.server = QuicgoServer()
        self.addCleanup(self.server.stop)

    def test_echo_and_half_close(self):
        data = os.urandom(4 * MiB)
        rc, out, stats = quicgo_client(self.server.port, self.server.pin, data=data)
        self.assertEqual(rc, 0, stats)
        self.assertEqual(out, data)

    def test_reset_marker_resets(self):
        rc, out, stats = quicgo_client(self.server.port, self.server.pin, data=b"RESET\nmore")
        self.assertEqual(rc, EXIT_STREAM_ERROR, stats)

    def test_many_streams(self):
        rc, out, stats = quicgo_client(self.server.port, self.server.pin, "--streams", "100", "--bytes", "100000")
        self.assertEqual(rc, 0, stats)

    def test_a_wrong_pin_is_refused(self):
        rc, out, stats = quicgo_client(self.server.port, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        self.assertNotEqual(rc, 0)


class SshGatewayTest(PeerTest):
    """OpenSSH through the test peer's QUIC-to-TCP gateway, the Go client as
    ProxyCommand: what `ssh -o ProxyCommand='connmgrctl pipe %h'` will do."""

    def setUp(self):
        super().setUp()
        need_quicgo(self)
        why = sshd_fixture.available()
        if why:
            self.skipTest(why)
        self.sshd = sshd_fixture.Sshd()
        self.sshd.start()
        self.addCleanup(self.sshd.stop)
        self.gateway = self.quic_peer("forward:%d" % self.sshd.port)
        self.proxy = peers.quicgo_command(self.gateway.quic_port, self.cert.pin)

    def ssh(self, *remote, data=b""):
        proc = subprocess.run(self.sshd.ssh_command(*remote, proxy=self.proxy), input=data,
                              capture_output=True, timeout=120)
        return proc.returncode, proc.stdout, proc.stderr.decode(errors="replace") + self.sshd.logs()[-3000:]

    def test_ssh_true_through_the_gateway(self):
        rc, out, why = self.ssh("true")
        self.assertEqual(rc, 0, why)

    def test_ssh_carries_bytes_both_ways(self):
        data = os.urandom(2 * MiB)
        rc, out, why = self.ssh("cat", data=data)
        self.assertEqual(rc, 0, why)
        self.assertEqual(out, data)


if __name__ == "__main__":
    unittest.main(verbosity=2)
