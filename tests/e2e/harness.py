"""End-to-end harness: starts the real connmgrd as a process on a temporary
database and socket, talks JSON-RPC over its socket, and checks every answer
against proto/connmgr.openrpc.json with jsonschema (Debian's python3-jsonschema).

Paths come from the environment that meson sets: CONNMGRD, CONNMGRCTL, PROTO.
Every wait is bounded; only processes started here are signalled, by pid.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import jsonschema

CONNMGRD = os.environ.get("CONNMGRD", "build/daemon/connmgrd")
CONNMGRCTL = os.environ.get("CONNMGRCTL", "build/daemon/ctl/connmgrctl")
PROTO = os.environ.get("PROTO", os.path.join(os.path.dirname(__file__), "../../proto/connmgr.openrpc.json"))

STANDARD_CODES = {-32700, -32600, -32601, -32602, -32603}


class Proto:
    """The OpenRPC document, used to validate results and errors."""

    def __init__(self, path=PROTO):
        with open(path) as f:
            self.doc = json.load(f)
        self.methods = {m["name"]: m for m in self.doc["methods"]}
        self.errors_by_code = {e["code"]: e for e in self.doc["components"]["errors"].values()}
        self.resolver = jsonschema.RefResolver.from_schema(self.doc)

    def _check(self, instance, schema):
        jsonschema.validate(instance, schema, resolver=self.resolver,
                            cls=jsonschema.Draft7Validator)

    def validate_answer(self, method, answer):
        assert answer.get("jsonrpc") == "2.0", answer
        assert ("result" in answer) != ("error" in answer), answer
        if "error" in answer:
            self.validate_error(method, answer["error"])
            return
        m = self.methods.get(method)
        assert m is not None, f"no method {method} in proto"
        self._check(answer["result"], m["result"]["schema"])

    def validate_error(self, method, error):
        self._check(error, self.doc["components"]["schemas"]["ErrorObject"])
        code = error["code"]
        if code in STANDARD_CODES:
            spec = self.errors_by_code.get(code)
        else:
            m = self.methods.get(method)
            allowed = set()
            if m:
                for ref in m.get("errors", []):
                    allowed.add(self.doc["components"]["errors"][ref["$ref"].split("/")[-1]]["code"])
                if m.get("x-changes-state"):
                    allowed.add(-32030)
            assert code in allowed, f"{method} answered code {code}, not listed in proto ({sorted(allowed)})"
            spec = self.errors_by_code[code]
        if spec and "data" in spec:
            assert "data" in error or code in STANDARD_CODES, error
            if "data" in error:
                self._check(error["data"], spec["data"])

    def validate_event(self, notification):
        assert notification.get("method") == "event", notification
        self._check(notification["params"], self.doc["components"]["schemas"]["Event"])


PROTO_DOC = Proto()


class Client:
    """One connection to the daemon's socket."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.buf = b""
        self.next_id = 1
        self.pending_methods = {}
        self.events = []

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def read_line(self, timeout=10.0):
        """One line, or None at EOF."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no line within %.1fs" % timeout)
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                if self.buf:
                    line, self.buf = self.buf, b""
                    return line
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def read_json(self, timeout=10.0):
        line = self.read_line(timeout)
        return None if line is None else json.loads(line)

    def send(self, method, params=None, id=None):
        if id is None:
            id = self.next_id
            self.next_id += 1
        req = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            req["params"] = params
        self.pending_methods[id] = method
        self.send_raw((json.dumps(req) + "\n").encode())
        return id

    def call(self, method, params=None, timeout=10.0):
        """Sends one request and returns its answer (validated against proto);
        event notifications that arrive meanwhile are kept in self.events."""
        id = self.send(method, params)
        while True:
            msg = self.read_json(timeout)
            assert msg is not None, "connection closed before the answer"
            if msg.get("method") == "event":
                PROTO_DOC.validate_event(msg)
                self.events.append(msg["params"])
                continue
            assert msg.get("id") == id, msg
            PROTO_DOC.validate_answer(method, msg)
            return msg

    def next_event(self, timeout=10.0):
        if self.events:
            return self.events.pop(0)
        msg = self.read_json(timeout)
        assert msg is not None and msg.get("method") == "event", msg
        PROTO_DOC.validate_event(msg)
        return msg["params"]


class Daemon:
    """The real connmgrd, started on its own temporary directory."""

    def __init__(self, *extra_args, env=None, config_text=None, start=True, socket_path=None):
        self.dir = tempfile.mkdtemp(prefix="connmgr-e2e-")
        os.chmod(self.dir, 0o755)
        self.db = os.path.join(self.dir, "connmgr.db")
        self.sock = socket_path or os.path.join(self.dir, "connmgrd.sock")
        self.log_path = os.path.join(self.dir, "connmgrd.log")
        self.config_path = os.path.join(self.dir, "connmgrd.conf")
        args = [CONNMGRD, "--database=" + self.db, "--socket=" + self.sock, "--log-level=debug"]
        if config_text is not None:
            with open(self.config_path, "w") as f:
                f.write(config_text)
            args.append("--config=" + self.config_path)
        args += list(extra_args)
        self.args = args
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        if start:
            self.start()

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, env=self.env)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("connmgrd exited with %s:\n%s" % (self.proc.returncode, self.log_text()))
            try:
                c = Client(self.sock, timeout=2)
                c.close()
                return
            except OSError:
                time.sleep(0.02)
        raise TimeoutError("connmgrd did not serve %s within %.0fs:\n%s" % (self.sock, timeout, self.log_text()))

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def client(self):
        return Client(self.sock)

    def call(self, method, params=None):
        c = self.client()
        try:
            return c.call(method, params)
        finally:
            c.close()

    def result(self, method, params=None):
        answer = self.call(method, params)
        assert "result" in answer, answer
        return answer["result"]

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=10.0):
        """SIGTERM; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Listener:
    """A TCP listener on 127.0.0.1 that accepts in the background and holds
    what it accepts; tells whether a peer has sent EOF."""

    def __init__(self):
        import threading
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.eofs = 0
        self.total = 0
        self.close_requested = False
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import select
        while not self.stopped:
            if self.close_requested:
                for c in self.conns:
                    c.close()
                self.conns.clear()
                self.close_requested = False
            rl = [self.sock] + self.conns
            try:
                ready, _, _ = select.select(rl, [], [], 0.05)
            except (OSError, ValueError):
                return
            for s in ready:
                if s is self.sock:
                    try:
                        c, _ = self.sock.accept()
                        self.conns.append(c)
                        self.total += 1
                    except OSError:
                        pass
                else:
                    try:
                        data = s.recv(4096)
                    except OSError:
                        data = b""
                    if not data:
                        self.eofs += 1
                        self.conns.remove(s)
                        s.close()

    def accepted(self):
        return self.total

    def close_all(self):
        """Closes every accepted link (FIN), from the listener's own thread."""
        self.close_requested = True
        wait_for(lambda: not self.close_requested, timeout=5)

    def stop(self):
        self.stopped = True
        self.thread.join(2)
        self.sock.close()
        for c in self.conns:
            c.close()


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, timeout=10.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


class DaemonTest(unittest.TestCase):
    """A test case with a fresh daemon per test."""

    daemon_args = ()

    def setUp(self):
        self.d = Daemon(*self.daemon_args)

    def tearDown(self):
        # Every test ends with a clean stop: exit status 0 and, in a
        # sanitizer build, no report in the daemon's log.
        try:
            if self.d.proc is not None and self.d.proc.poll() is None:
                self.assertEqual(self.d.stop(), 0, self.d.log_text())
            log = self.d.log_text()
            for word in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
                self.assertNotIn(word, log)
        finally:
            self.d.cleanup()

    def assertError(self, answer, code):
        self.assertIn("error", answer, answer)
        self.assertEqual(answer["error"]["code"], code, answer)
        return answer["error"]
