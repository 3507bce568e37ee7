"""QUIC through the daemon: connect with protocol quic picks the QUIC endpoint
and handshakes with gtlsserver (Debian's ngtcp2-server); links show rtt."""
import os
import signal
import socket
import subprocess
import tempfile
import shutil
import time
import unittest

from daemon import DaemonTest, Listener, wait_for

GTLSSERVER = "/usr/sbin/gtlsserver"


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class QuicThroughDaemonTest(DaemonTest):
    daemon_args = ("--quic-idle-timeout=2s", "--quic-keepalive=500ms")

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp()
        self.key = os.path.join(self.tmp, "key.pem")
        self.cert = os.path.join(self.tmp, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
        self.pin = subprocess.run(
            "openssl x509 -in %s -pubkey -noout | openssl pkey -pubin -outform der | "
            "openssl dgst -sha256 -binary | openssl enc -base64" % self.cert,
            shell=True, check=True, capture_output=True, text=True).stdout.strip()
        self.port = free_udp_port()
        self.server = subprocess.Popen([GTLSSERVER, "-q", "127.0.0.1", str(self.port), self.key, self.cert],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.tcp = Listener()

    def tearDown(self):
        if self.server.poll() is None:
            self.server.kill()
            self.server.wait(5)
        self.tcp.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
        super().tearDown()

    def add_node(self, pin):
        self.d.result("nodes.add", {"id": "q1", "endpoints": [
            {"protocol": "tcp", "address": "127.0.0.1", "port": self.tcp.port},
            {"protocol": "quic", "address": "127.0.0.1", "port": self.port, "alpn": "h3", "pin_sha256": pin}]})

    def connect_quic(self):
        # gtlsserver needs a moment to bind its port.
        for _ in range(50):
            answer = self.d.call("connect", {"node_id": "q1", "protocol": "quic", "timeout_ms": 2000})
            if "result" in answer or answer["error"]["data"].get("reason") != "refused":
                return answer
            time.sleep(0.1)
        return answer

    def test_protocol_quic_picks_the_quic_endpoint_and_shows_rtt(self):
        self.add_node(self.pin)
        answer = self.connect_quic()
        self.assertIn("result", answer, answer)
        self.assertEqual(answer["result"]["protocol"], "quic")
        self.assertEqual(answer["result"]["state"], "active")
        links = self.d.result("connections.list")["connections"]
        self.assertEqual(links[0]["protocol"], "quic")
        self.assertIsNotNone(links[0]["rtt_ms"])
        self.assertGreater(links[0]["rtt_ms"], 0)
        self.assertEqual(self.tcp.accepted(), 0)
        self.assertIn("quic", self.d.result("status")["connectors"])

    def test_a_wrong_pin_is_reported_and_recorded(self):
        self.add_node("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
        answer = self.connect_quic()
        self.assertEqual(answer["error"]["code"], -32010)
        self.assertEqual(answer["error"]["data"]["reason"], "pin_mismatch")
        time.sleep(0.2)
        eps = self.d.result("endpoints.list", {"node_id": "q1", "protocol": "quic"})["endpoints"]
        self.assertEqual(eps[0]["last_error"], "pin_mismatch")

    def test_a_supervised_quic_link_notices_the_peer_is_gone(self):
        self.add_node(self.pin)
        sub = self.d.client()
        sub.call("events.subscribe", {"types": ["disconnected"]})
        answer = self.connect_quic()
        self.assertIn("result", answer, answer)
        self.server.kill()
        self.server.wait(5)
        event = sub.next_event(timeout=10)
        self.assertIn(event["reason"], ("idle_timeout", "closed"))
        self.assertEqual(event["protocol"], "quic")
        sub.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
