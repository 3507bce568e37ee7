"""Processes for the stream tests: connmgr-test-peer and the Go QUIC peer
(tests/peer/quicgo), a throwaway key and certificate with its pin. Everything
listens on 127.0.0.1; every wait is bounded; only our own processes are ended.

TEST_PEER and QUICGO_PEER name the programs (meson sets both)."""
import json
import os
import subprocess
import tempfile

TEST_PEER = os.environ.get("TEST_PEER", "")
QUICGO_PEER = os.environ.get("QUICGO_PEER", "")

# Sanitizer findings in a peer's stderr fail the test that made them.
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def pattern(n, start=0):
    """The bytes of connmgr-test-peer's send:N: byte k is k % 251."""
    base = bytes(range(251))
    whole = base * ((start + n) // 251 + 2)
    return whole[start % 251:start % 251 + n]


class Certificate:
    """A self-signed EC key and certificate in a temporary directory."""

    def __init__(self, directory):
        self.key = os.path.join(directory, "key.pem")
        self.cert = os.path.join(directory, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "2", "-subj", "/CN=node",
                        "-addext", "subjectAltName=DNS:node,IP:127.0.0.1"], check=True, capture_output=True)
        # The pin as connmgr has it: base64 SHA-256 of the SubjectPublicKeyInfo.
        self.pin = subprocess.run(
            "openssl x509 -in '%s' -pubkey -noout | openssl pkey -pubin -outform der | "
            "openssl dgst -sha256 -binary | openssl enc -base64" % self.cert,
            shell=True, check=True, capture_output=True, text=True).stdout.strip()


class TestPeer:
    """connmgr-test-peer as a child; stopped by closing its stdin."""

    def __init__(self, *args, timeout=20):
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([TEST_PEER, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr)
        line = self._line(timeout)
        if not line.startswith("ready "):
            self.stop()
            raise RuntimeError("connmgr-test-peer did not start: %r %s" % (line, self.errors()))
        fields = dict(part.split("=") for part in line.split()[1:])
        self.tcp_port = int(fields["tcp"])
        self.quic_port = int(fields["quic"])

    def _line(self, timeout):
        import select
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().decode().strip() if ready else ""

    def command(self, line, timeout=10):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()
        return self._line(timeout) if line == "count" else ""

    def errors(self):
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def stop(self, timeout=20):
        """Ends the peer cleanly; returns its exit status and stderr."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()
        return self.proc.returncode, self.errors()


class QuicgoServer:
    """The Go stream server: echo, "RESET\\n" resets."""

    def __init__(self, timeout=20):
        self.proc = subprocess.Popen([QUICGO_PEER, "server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        import select
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError("quicgo-peer server did not start")
        info = json.loads(line)
        self.port, self.pin = info["port"], info["pin"]

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def quicgo_command(port, pin, *flags):
    """The Go client's command line, e.g. for an ssh ProxyCommand."""
    return [QUICGO_PEER, "client", "--pin", pin, *flags, "127.0.0.1", str(port)]


def quicgo_client(port, pin, *flags, data=b"", timeout=60):
    """Runs the Go client once; returns (exit status, stdout bytes, stats dict)."""
    proc = subprocess.run(quicgo_command(port, pin, "--stats", *flags), input=data, capture_output=True,
                          timeout=timeout)
    stats = {}
    for line in proc.stderr.decode(errors="replace").splitlines():
        if line.startswith("{"):
            stats = json.loads(line)
    return proc.returncode, proc.stdout, stats
