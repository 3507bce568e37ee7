"""End-to-end harness: starts the real connmgrd as a process on a temporary
database and socket, talks JSON-RPC over its socket, and checks every answer
against proto/connmgr.openrpc.json with jsonschema (Debian's python3-jsonschema).
A validation failure is an AssertionError, so it fails the test that made the call.

Paths come from the environment that meson sets (tests/e2e/meson.build):
CONNMGRD, CONNMGRCTL, TEST_PEER (connmgr-test-peer), PROTO. Run by hand:
    CONNMGRD=build/daemon/connmgrd CONNMGRCTL=build/daemon/ctl/connmgrctl \
        /usr/bin/python3 tests/e2e/api_test.py
Every wait is bounded; only processes started here are signalled, by pid.
"""
import json
import os
import re
import select
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import jsonschema

HERE = os.path.dirname(os.path.abspath(__file__))
CONNMGRD = os.environ.get("CONNMGRD", os.path.join(HERE, "../../build/daemon/connmgrd"))
CONNMGRCTL = os.environ.get("CONNMGRCTL", os.path.join(HERE, "../../build/daemon/ctl/connmgrctl"))
TEST_PEER = os.environ.get("TEST_PEER", os.path.join(HERE, "../../build/tests/peer/connmgr-test-peer"))
PROTO = os.environ.get("PROTO", os.path.join(HERE, "../../proto/connmgr.openrpc.json"))

STANDARD_CODES = {-32700, -32600, -32601, -32602, -32603}
PERMISSION_DENIED = -32030


class Proto:
    """The OpenRPC document: the schemas answers, errors, events and params are
    checked against. $ref's point into the document's components."""

    def __init__(self, path=PROTO):
        with open(path) as f:
            self.doc = json.load(f)
        self.methods = {m["name"]: m for m in self.doc["methods"]}
        errors = self.doc["components"]["errors"]
        self.errors_by_code = {e["code"]: e for e in errors.values()}
        # code -> the JSON Schema of that error's `data` (top-level x-error-data,
        # keyed by the error's component name).
        self.data_schemas = {errors[name]["code"]: schema for name, schema in self.doc["x-error-data"].items()}
        # RefResolver is deprecated in jsonschema >= 4.18 but is what Debian 12's
        # 4.10 offers; it resolves "#/components/..." against the whole document.
        self.resolver = jsonschema.RefResolver.from_schema(self.doc)

    def schema(self, name):
        return self.doc["components"]["schemas"][name]

    def check(self, instance, schema, what="instance"):
        validator = jsonschema.Draft7Validator(schema, resolver=self.resolver)
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        if errors:
            raise AssertionError("%s does not follow proto/: %s\n  %s" % (
                what, "; ".join("%s at %s" % (e.message, list(e.path)) for e in errors[:5]),
                json.dumps(instance)[:2000]))

    def is_valid(self, instance, schema):
        return jsonschema.Draft7Validator(schema, resolver=self.resolver).is_valid(instance)

    def params_valid(self, method, params):
        m = self.methods.get(method)
        return m is not None and self.is_valid({} if params is None else params, m["x-params-schema"])

    def allowed_codes(self, method):
        m = self.methods.get(method)
        allowed = set(STANDARD_CODES)
        if m:
            for ref in m.get("errors", []):
                allowed.add(self.doc["components"]["errors"][ref["$ref"].split("/")[-1]]["code"])
            if m.get("x-changes-state"):
                allowed.add(PERMISSION_DENIED)
        return allowed

    def validate_answer(self, method, answer, params=None):
        """One answer to a request of `method` sent with `params`."""
        if isinstance(answer, dict) and "error" in answer:
            self.check(answer, self.schema("ErrorResponse"), "error response to " + method)
            self.validate_error(method, answer["error"])
            # The daemon and proto/ agree on which params are invalid.
            if answer["error"]["code"] == -32602 and isinstance(params, dict):
                assert not self.params_valid(method, params), \
                    "%s refused params %s that proto/ accepts: %s" % (method, params, answer["error"])
            return
        self.check(answer, self.schema("ResultResponse"), "answer to " + method)
        m = self.methods.get(method)
        assert m is not None, "no method %s in proto/, yet it answered a result" % method
        self.check(answer["result"], m["result"]["schema"], "result of " + method)
        if params is not None:
            assert self.params_valid(method, params), \
                "%s accepted params %s that proto/ refuses" % (method, params)

    def validate_error(self, method, error):
        self.check(error, self.schema("ErrorObject"), "error object")
        code = error["code"]
        if method is not None:
            assert code in self.allowed_codes(method), \
                "%s answered code %d, not listed for it in proto/" % (method, code)
        spec = self.errors_by_code.get(code)
        assert spec is not None, "code %d is not in proto/'s components/errors" % code
        schema = self.data_schemas.get(code)
        if schema is not None and "data" in error:
            self.check(error["data"], schema, "data of error %d" % code)
        elif schema is not None and code not in STANDARD_CODES:
            raise AssertionError("error %d without data: %s" % (code, error))

    def validate_event(self, notification):
        self.check(notification, self.schema("Notification"), "event notification")


PROTO_DOC = Proto()


class Client:
    """One connection to the daemon's socket. Every answer read through call()
    is validated; events that arrive meanwhile are validated and kept."""

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
        self.sent = {}  # id -> (method, params)
        self.events = []

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def shut_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def read_line(self, timeout=10.0):
        """One line without its newline, or None at EOF."""
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
        self.sent[id] = (method, params)
        self.send_raw((json.dumps(req) + "\n").encode())
        return id

    def receive(self, timeout=10.0):
        """The next answer (validated against the request it answers) or event."""
        msg = self.read_json(timeout)
        assert msg is not None, "connection closed before an answer"
        if isinstance(msg, dict) and msg.get("method") == "event":
            PROTO_DOC.validate_event(msg)
        elif isinstance(msg, dict) and msg.get("id") in self.sent:
            method, params = self.sent.pop(msg["id"])
            PROTO_DOC.validate_answer(method, msg, params)
        return msg

    def call(self, method, params=None, timeout=10.0):
        """Sends one request and returns its answer."""
        id = self.send(method, params)
        deadline = time.monotonic() + timeout
        while True:
            msg = self.receive(max(0.01, deadline - time.monotonic()))
            if msg.get("method") == "event":
                self.events.append(msg["params"])
                continue
            assert msg.get("id") == id, "answer to another request: %s" % msg
            return msg

    def next_event(self, timeout=10.0):
        if self.events:
            return self.events.pop(0)
        msg = self.receive(timeout)
        assert msg.get("method") == "event", "expected an event, got %s" % msg
        return msg["params"]


class Daemon:
    """The real connmgrd, started on its own temporary directory:
    `connmgrd --database=DIR/connmgr.db --socket=DIR/connmgrd.sock --log-level=debug`.
    As a context manager it stops with SIGTERM and asserts exit status 0."""

    def __init__(self, *extra_args, env=None, config_text=None, start=True, socket_path=None):
        self.dir = tempfile.mkdtemp(prefix="connmgr-e2e-")
        os.chmod(self.dir, 0o755)  # the permission tests connect as another uid
        self.db = os.path.join(self.dir, "connmgr.db")
        self.sock = socket_path or os.path.join(self.dir, "connmgrd.sock")
        self.log_path = os.path.join(self.dir, "connmgrd.log")
        self.config_path = os.path.join(self.dir, "connmgrd.conf")
        args = [CONNMGRD, "--database=" + self.db, "--socket=" + self.sock, "--log-level=debug"]
        if config_text is not None:
            with open(self.config_path, "w") as f:
                f.write(config_text)
            args.append("--config=" + self.config_path)
        self.args = args + list(extra_args)
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.log = None
        if start:
            self.start()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *rest):
        try:
            if exc_type is None:
                self.stop_ok()
        finally:
            self.cleanup()

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, env=self.env)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=10.0):
        """Until a status request is answered on the socket (bounded)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("connmgrd exited with %s:\n%s" % (self.proc.returncode, self.log_text()))
            try:
                with Client(self.sock, timeout=2) as c:
                    c.send_raw(b'{"jsonrpc":"2.0","id":0,"method":"status"}\n')
                    if c.read_line(timeout=2):
                        return
            except (OSError, TimeoutError) as e:
                last = e
            time.sleep(0.02)
        raise TimeoutError("connmgrd did not answer on %s within %.0fs (%s):\n%s"
                           % (self.sock, timeout, last, self.log_text()))

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def client(self):
        return Client(self.sock)

    def call(self, method, params=None, timeout=10.0):
        """One request on a fresh connection; the parsed, validated answer."""
        with self.client() as c:
            return c.call(method, params, timeout)

    def result(self, method, params=None, timeout=10.0):
        answer = self.call(method, params, timeout)
        assert "result" in answer, "%s %s answered %s" % (method, params, answer)
        return answer["result"]

    def raw(self, data, shut=True, timeout=10.0, max_lines=100):
        """Sends bytes as they are; returns the lines answered (bytes, without
        newlines) until EOF, or until `timeout` passes without a line when the
        writing side is left open."""
        lines = []
        with Client(self.sock) as c:
            c.send_raw(data)
            if shut:
                c.shut_write()
            while len(lines) < max_lines:
                try:
                    line = c.read_line(timeout)
                except TimeoutError:
                    if shut:
                        raise
                    break
                if line is None:
                    break
                lines.append(line)
        return lines

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=10.0):
        """SIGTERM to our own pid; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("connmgrd did not exit within %.0fs of SIGTERM:\n%s" % (timeout, self.log_text()))

    def stop_ok(self, out_of_descriptors=False):
        """Stops with SIGTERM and asserts a clean exit: status 0 and, in a
        sanitizer build, no report in the log.

        out_of_descriptors: the daemon ran out of descriptors on purpose.
        UBSan's vptr check then reports objects it cannot read ("invalid vptr",
        "<memory cannot be printed>"): it probes memory through a pipe, which
        EMFILE denies. Those reports, and only those, are set aside."""
        status = self.stop()
        assert status == 0, "connmgrd exited with %s:\n%s" % (status, self.log_text())
        log = self.log_text()
        if out_of_descriptors:
            log = re.sub(r"[^\n]*runtime error: member (?:call on|access within) address 0x[0-9a-f]+ which does not point to "
                         r"an object of type '[^']+'\n0x[0-9a-f]+: note: object has invalid vptr\n"
                         r"<memory cannot be printed>\n", "", log)
        for word in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            assert word not in log, "sanitizer report in connmgrd's log:\n" + log

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self.log:
            self.log.close()
            self.log = None
        shutil.rmtree(self.dir, ignore_errors=True)


class Listener:
    """A TCP listener on 127.0.0.1 (port 0, or `port`) that accepts in the
    background and holds what it accepts; counts peers that sent EOF."""

    def __init__(self, port=0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.eofs = 0
        self.total = 0
        self.close_requested = False
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        # epoll through selectors: select() stops at descriptor 1024, and the
        # fault tests hold a thousand links and more.
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        try:
            while not self.stopped:
                if self.close_requested:
                    for c in self.conns:
                        sel.unregister(c)
                        c.close()
                    self.conns.clear()
                    self.close_requested = False
                try:
                    ready = sel.select(0.05)
                except (OSError, ValueError):
                    return
                for key, _ in ready:
                    s = key.fileobj
                    if s is self.sock:
                        try:
                            c, _ = self.sock.accept()
                        except OSError:
                            continue
                        self.conns.append(c)
                        sel.register(c, selectors.EVENT_READ)
                        self.total += 1
                        continue
                    try:
                        data = s.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        self.eofs += 1
                        sel.unregister(s)
                        self.conns.remove(s)
                        s.close()
        finally:
            sel.close()

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
    """A loopback TCP port nobody listens on (bound then released)."""
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


def duration_ms(text):
    """'1m' -> 60000, '250ms' -> 250, '10' -> 10000 (durations as connmgrd.conf(5) spells them)."""
    units = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit) and text[:-len(unit)].replace(".", "", 1).isdigit():
            return float(text[:-len(unit)]) * units[unit]
    return float(text) * 1000


class DaemonTest(unittest.TestCase):
    """A test case with a fresh daemon per test, stopped cleanly after it."""

    daemon_args = ()

    def setUp(self):
        self.d = Daemon(*self.daemon_args)

    def tearDown(self):
        try:
            if self.d.proc is not None and self.d.proc.poll() is None:
                self.d.stop_ok()
        finally:
            self.d.cleanup()

    def assertError(self, answer, code):
        self.assertIn("error", answer, answer)
        self.assertEqual(answer["error"]["code"], code, answer)
        return answer["error"]
