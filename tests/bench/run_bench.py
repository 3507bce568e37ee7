#!/usr/bin/env python3
"""connmgr's benchmark suite: every figure of docs/PERFORMANCE.md, each beside
the reference it is judged against, measured in the same run.

Run through scripts/bench (which installs redis and builds a release tree):
    scripts/bench [--rounds N] [--only ROW,...] [--markdown FILE]
Rows: status, tcp, quic, links, scale, latency, streams, race, fleet.

The machines are shared and noisy: every figure is the median of --rounds
rounds, connmgr's and the reference's rounds interleaved, and judged by the
ratio of the two medians, not by its absolute value. Everything runs on
loopback; every process started here is ended here, by its pid; every wait
is bounded.
"""
import argparse
import json
import os
import random
import re
import resource
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, "../.."))


def parse_fields(line):
    """'a=1 b=2.5' -> {'a': 1.0, 'b': 2.5}"""
    out = {}
    for part in line.split():
        if "=" in part:
            k, v = part.split("=", 1)
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def run_tool(args, timeout=900):
    """Runs one of the bench programs; returns the fields of its last line."""
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    lines = [l for l in p.stdout.splitlines() if "=" in l]
    if p.returncode != 0 or not lines:
        raise RuntimeError("%s failed (exit %d): %s %s" % (
            " ".join(os.path.basename(a) for a in args[:3]), p.returncode, p.stdout[-500:], p.stderr[-1500:]))
    return parse_fields(lines[-1])


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Rpc:
    """A blocking JSON-RPC client on the daemon's socket (set-up and the few
    single calls that are timed one at a time)."""

    def __init__(self, path, timeout=60):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.next_id = 1

    def call_raw(self, method, params=None):
        req = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        self.next_id += 1
        if params is not None:
            req["params"] = params
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("the daemon closed the socket")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, method, params=None):
        answer = self.call_raw(method, params)
        if "error" in answer:
            raise RuntimeError("%s: %s" % (method, answer["error"]))
        return answer["result"]

    def timed(self, method, params=None):
        t = time.perf_counter()
        answer = self.call_raw(method, params)
        return (time.perf_counter() - t) * 1000.0, answer

    def close(self):
        self.sock.close()


class Bench:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.tools = os.path.join(self.build, "tests/bench")
        self.connmgrd = os.path.join(self.build, "daemon/connmgrd")
        self.peer_bin = os.path.join(self.build, "tests/peer/connmgr-test-peer")
        self.work = tempfile.mkdtemp(prefix="connmgr-bench.")
        self.procs = []
        self.rows = []
        self.notes = []
        self.cert, self.key, self.pin = self.make_cert()

    # --- processes -----------------------------------------------------------

    def start(self, args, **kw):
        p = subprocess.Popen(args, **kw)
        self.procs.append(p)
        return p

    def stop(self, p, sig_timeout=10):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(sig_timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if p in self.procs:
            self.procs.remove(p)
        return p.returncode

    def cleanup(self):
        for p in list(self.procs):
            if p.stdin:
                try:
                    p.stdin.close()
                except OSError:
                    pass
            self.stop(p)
        shutil.rmtree(self.work, ignore_errors=True)

    def make_cert(self):
        key = os.path.join(self.work, "peer.key")
        cert = os.path.join(self.work, "peer.crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30",
                        "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
        der = subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"],
                             check=True, capture_output=True).stdout
        import base64
        import hashlib
        return cert, key, base64.b64encode(hashlib.sha256(der).digest()).decode()

    def start_peer(self, *modes):
        """connmgr-test-peer: accepts TCP and QUIC (ALPN connmgr) and holds
        every link; `modes` are its stream options (--tcp-streams MODE ...).
        Returns (process, tcp_port, quic_port)."""
        p = self.start([self.peer_bin, "--tcp", "0", "--quic", "0", "--cert", self.cert,
                        "--key", self.key, "--alpn", "connmgr", *modes],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = p.stdout.readline()
        f = parse_fields(line)
        if "tcp" not in f:
            raise RuntimeError("connmgr-test-peer did not start: %r" % line)
        return p, int(f["tcp"]), int(f["quic"])

    def stop_peer(self, p):
        p.stdin.close()
        self.stop(p)

    def start_daemon(self, name, *flags, database=None, pin_cpu=None, env=None):
        d = os.path.join(self.work, name)
        os.makedirs(d, exist_ok=True)
        sock = os.path.join(d, "s")
        db = database or os.path.join(d, "connmgr.db")
        log = open(os.path.join(d, "log"), "ab")
        t0 = time.perf_counter()
        pin = pinned(pin_cpu) if pin_cpu is not None else []
        p = self.start(pin + [self.connmgrd, "--database=" + db, "--socket=" + sock,
                        "--log-level=warning", *flags], stdout=log, stderr=log,
                       env=dict(os.environ, **env) if env else None)
        log.close()
        deadline = time.time() + 60
        while True:
            try:
                r = Rpc(sock)
                r.call("status")
                break
            except (OSError, RuntimeError):
                if p.poll() is not None or time.time() > deadline:
                    raise RuntimeError("connmgrd did not start; see %s/log" % d)
                time.sleep(0.001)
        started_ms = (time.perf_counter() - t0) * 1000.0
        return p, sock, r, started_ms, db

    def stop_daemon(self, p, rpc=None):
        if rpc:
            rpc.close()
        rc = self.stop(p, sig_timeout=30)
        if rc != 0:
            raise RuntimeError("connmgrd exited %s" % rc)

    # --- rows ------------------------------------------------------------------

    def row(self, figure, ours, ref, unit, target, higher_is_better=True, ref_name=""):
        """One line of the table. target: (kind, value): ('ratio', x) judges
        ours/ref >= x; ('max', x) judges ours <= x; ('min', x) ours >= x."""
        ratio = ours / ref if ref else None
        kind, value = target
        if kind == "info":
            met = None
            target_text = "(info)"
        elif kind == "ratio":
            met = ratio is not None and ratio >= value
            target_text = "≥ %.1f×" % value
        elif kind == "max":
            met = ours <= value
            target_text = "≤ %s %s" % (fmt(value), unit)
        else:
            met = ours >= value
            target_text = "≥ %s %s" % (fmt(value), unit)
        self.rows.append({"figure": figure, "ours": ours, "ref": ref, "ref_name": ref_name,
                          "unit": unit, "ratio": ratio, "target": target_text, "met": met})
        print("  %-58s %12s %12s %8s  %-10s %s" % (
            figure, fmt(ours), fmt(ref) if ref else "—", ("%.2f×" % ratio) if ratio else "—",
            target_text, "" if met is None else "met" if met else "NOT MET"), flush=True)

    def rounds(self):
        return self.args.rounds

    def bench_status(self):
        print("status requests/s over the Unix socket (connmgr rpc_load vs redis-benchmark PING)",
              flush=True)
        # One request at a time is a ping-pong between two processes: its
        # rate swings tenfold with whether the scheduler puts them on one
        # core or two. Both servers run on CPU 0 and both loaders on CPU 1.
        d, sock, rpc, _, _ = self.start_daemon("status", pin_cpu=0)
        rsock = os.path.join(self.work, "redis.sock")
        redis = self.start(pinned(0) + ["redis-server", "--port", "0", "--unixsocket", rsock, "--save", "",
                            "--appendonly", "no", "--logfile", os.path.join(self.work, "redis.log")])
        deadline = time.time() + 10
        while not os.path.exists(rsock) and time.time() < deadline:
            time.sleep(0.01)
        seconds = self.args.seconds
        cases = [("1 client", 1, 1), ("16 clients", 16, 1), ("16 clients × pipeline 16", 16, 16)]
        for label, clients, pipeline in cases:
            ours, ref, ours_loader_on_redis = [], [], []
            for _ in range(self.rounds()):
                f = run_tool(pinned(1) + [os.path.join(self.tools, "rpc_load"), "rate", sock, str(clients),
                              str(pipeline), str(seconds)])
                ours.append(f["rate"])
                # redis-benchmark takes a count, not a time: aim at `seconds`.
                n = int(max(20000, (ref[-1] if ref else 20000 * clients * pipeline) * seconds))
                out = subprocess.run(pinned(1) + ["redis-benchmark", "-s", rsock, "-t", "ping", "-n", str(n),
                                      "-c", str(clients), "-P", str(pipeline), "--csv"],
                                     capture_output=True, text=True, timeout=300).stdout
                ref.append(redis_rps(out, "PING_MBULK"))
                # The loader against Redis itself: shows whether the loader or
                # the server is the bound.
                g = run_tool(pinned(1) + [os.path.join(self.tools, "rpc_load"), "rate", rsock,
                              str(clients), str(pipeline), str(seconds), "PING\r"])
                ours_loader_on_redis.append(g["rate"])
            target = 0.5 if pipeline > 1 else 1.0
            self.row("status req/s, " + label, statistics.median(ours), statistics.median(ref),
                     "req/s", ("ratio", target), ref_name="redis-benchmark PING")
            if ours_loader_on_redis:
                self.notes.append("%s: rpc_load against redis-server itself: %s req/s (redis-benchmark: %s)"
                                  % (label, fmt(statistics.median(ours_loader_on_redis)),
                                     fmt(statistics.median(ref))))
        self.stop(redis)
        self.stop_daemon(d, rpc)

    def add_nodes_sql(self, db, nodes):
        """Nodes written into the database as another program would (plain SQL
        on the schema of docs/operations.md):
        nodes = [(id, [(protocol, address, port, pin), ...]), ...]."""
        c = sqlite3.connect(db, timeout=30)
        with c:
            c.executemany("INSERT INTO nodes(id, name) VALUES (?, NULL)", ((n, ) for n, _ in nodes))
            c.executemany("INSERT INTO endpoints(node_id, protocol, address, port, pin_sha256) "
                          "VALUES (?, ?, ?, ?, ?)",
                          ((n, proto, addr, port, pin) for n, eps in nodes for proto, addr, port, pin in eps))
        c.close()

    def fresh_db(self, name, nodes):
        """A database made by the daemon (schema), then filled with `nodes`."""
        d, _, rpc, _, db = self.start_daemon(name)
        self.stop_daemon(d, rpc)
        self.add_nodes_sql(db, nodes)
        return db

    def bench_cycles(self, protocol):
        """Connect + disconnect cycles through the RPC against a plain loop
        on the same listener(s). Cases: (listeners, in flight).

        One listener is the reference as specified. A closed connection's
        port stays in TIME_WAIT, reusable after a second, so one destination
        caps any loop near 28,000 cycles/s in the steady state (the ephemeral
        range): rounds run long enough to reach it. Four listeners lift that
        cap and show the kernel's own rate, for information."""
        label = protocol.upper()
        print("%s connect + disconnect cycles/s through the RPC" % label, flush=True)
        cases = [(1, 1), (1, 16), (4, 16)] if protocol == "tcp" else [(1, 1), (1, 16)]
        peers = [self.start_peer() for _ in range(max(c[0] for c in cases))]
        tcp_ports = [p[1] for p in peers]
        quic_port = peers[0][2]
        nodes = []
        for listeners, slots in cases:
            for i in range(slots):
                name = "c%d_%d_%d" % (listeners, slots, i)
                if protocol == "tcp":
                    nodes.append((name, [("tcp", "127.0.0.1", tcp_ports[i % listeners], None)]))
                else:
                    nodes.append((name, [("quic", "127.0.0.1", quic_port, self.pin)]))
        db = self.fresh_db(protocol + "-cycles", nodes)
        d, sock, rpc, _, _ = self.start_daemon(protocol + "-cycles", database=db)
        cycles = self.args.cycles if protocol == "tcp" else max(200, self.args.cycles // 20)
        for listeners, slots in cases:
            ours, ref = [], []
            for _ in range(self.rounds()):
                f = run_tool([os.path.join(self.tools, "rpc_load"), "cycle", sock, str(slots),
                              str(cycles), "c%d_%d_" % (listeners, slots)])
                if f["failures"]:
                    raise RuntimeError("%d connects failed" % f["failures"])
                ours.append(f["rate"])
                if protocol == "tcp":
                    g = run_tool([os.path.join(self.tools, "tcp_plain_cycle"), "127.0.0.1",
                                  ",".join(map(str, tcp_ports[:listeners])), str(cycles), str(slots)])
                else:
                    g = run_tool([os.path.join(self.tools, "quic_plain_client"), "127.0.0.1",
                                  str(quic_port), self.pin, "connmgr", str(cycles), str(slots)])
                if g.get("failures"):
                    raise RuntimeError("reference: %d failures" % g["failures"])
                ref.append(g["rate"])
            where = "" if listeners == 1 else ", %d listeners (no port-range cap)" % listeners
            self.row("%s connect+disconnect cycles/s, %d in flight%s" % (label, slots, where),
                     statistics.median(ours), statistics.median(ref), "cycles/s",
                     ("ratio", 0.5 if protocol == "tcp" else 0.7) if listeners == 1 else ("info", 0),
                     ref_name="plain connect()+close()" if protocol == "tcp"
                     else "plain ngtcp2+GnuTLS client")
        self.stop_daemon(d, rpc)
        for p in peers:
            self.stop_peer(p[0])

    def bench_links(self, protocol, wanted):
        label = protocol.upper()
        # Each link is a descriptor in the daemon and one in the peer; both
        # inherit this process's limit, and the daemon raises its soft limit
        # to the hard one.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        count = min(wanted, hard - 400)
        if count < wanted:
            self.notes.append("%s links held: %d, not %d: RLIMIT_NOFILE's hard limit is %d here "
                              "and cannot be raised (no CAP_SYS_RESOURCE); each link is a "
                              "descriptor in the daemon and one in the peer." % (label, count, wanted, hard))
        print("%s links held at once: %d" % (label, count), flush=True)
        # TCP links spread over four listeners: with tens of thousands of
        # links to one port the kernel's search for a free ephemeral port
        # slows every connect() down.
        peers = [self.start_peer() for _ in range(4 if protocol == "tcp" else 1)]
        nodes = []
        for i in range(count):
            if protocol == "tcp":
                nodes.append(("l%d" % i, [("tcp", "127.0.0.1", peers[i % len(peers)][1], None)]))
            else:
                nodes.append(("l%d" % i, [("quic", "127.0.0.1", peers[0][2], self.pin)]))
        warm = 200
        for i in range(warm):
            nodes.append(("w%d" % i, nodes[0][1]))
        db = self.fresh_db(protocol + "-links", nodes)
        d, sock, rpc, _, _ = self.start_daemon(protocol + "-links", database=db)
        # Warm up: the allocator, the statement cache, the first links.
        run_tool([os.path.join(self.tools, "rpc_load"), "connect-many", sock, str(warm), "w", "64"])
        for i in range(warm):
            rpc.call("disconnect", {"node_id": "w%d" % i})
        time.sleep(0.3)
        before = rss_kib(d.pid)
        f = run_tool([os.path.join(self.tools, "rpc_load"), "connect-many", sock, str(count), "l",
                      "256" if protocol == "tcp" else "64"], timeout=1800)
        time.sleep(0.5)  # statistics flushed, events delivered
        after = rss_kib(d.pid)
        ms, answer = rpc.timed("connections.list")
        listed = len(answer.get("result", {}).get("connections", []))
        per_link = (after - before) * 1024.0 / count
        self.row("%s links held: RSS growth per link (%d links)" % (label, count), per_link / 1024.0,
                 None, "KiB", ("max", 1.0 if protocol == "tcp" else 48.0))
        self.row("%s links held: connections.list of all %d, ms" % (label, count), ms, None, "ms",
                 ("max", 1000.0))
        if listed != count:
            raise RuntimeError("connections.list gave %d links, not %d" % (listed, count))
        self.notes.append("%s links: %d connected in %.1f s (%s/s); RSS %d → %d KiB; "
                          "connections.list answered %d links in %.0f ms"
                          % (label, count, f["seconds"], fmt(f["rate"]), before, after, listed, ms))
        self.stop_daemon(d, rpc)
        for p in peers:
            self.stop_peer(p[0])

    def bench_metrics(self, count=20000, calls=300):
        """What a scrape costs the daemon's loop with `count` TCP links held:
        the `metrics` method's round trip over the socket and an HTTP GET
        /metrics (metrics_listen), p50 and p99 of `calls` each, one at a time,
        beside `status`'s round trip in the same daemon (the reference: the
        cheapest call, about one loop turn). The round trip bounds the loop
        time from above."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        count = min(count, hard - 400)
        print("metrics with %d TCP links held" % count, flush=True)
        peers = [self.start_peer() for _ in range(4)]
        nodes = [("m%d" % i, [("tcp", "127.0.0.1", peers[i % 4][1], None)]) for i in range(count)]
        db = self.fresh_db("metrics", nodes)
        port = free_tcp_port()
        d, sock, rpc, _, _ = self.start_daemon("metrics", "--metrics-listen=127.0.0.1:%d" % port,
                                               database=db)
        run_tool([os.path.join(self.tools, "rpc_load"), "connect-many", sock, str(count), "m", "256"],
                 timeout=1800)
        time.sleep(0.5)
        text = rpc.call("metrics")["text"]
        active = re.search(r'^connmgr_links\{protocol="tcp",state="active"\} (\d+)$', text, re.M)
        if not active or int(active.group(1)) != count:
            raise RuntimeError("connmgr_links says %s active links, not %d" %
                               (active.group(1) if active else "nothing", count))

        def timed_calls(method):
            out = []
            for _ in range(calls):
                ms, answer = rpc.timed(method)
                if "error" in answer:
                    raise RuntimeError("%s: %s" % (method, answer["error"]))
                out.append(ms)
            return sorted(out)

        def timed_gets():
            import http.client
            out = []
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            for _ in range(calls):
                t = time.perf_counter()
                conn.request("GET", "/metrics")
                body = conn.getresponse().read()
                out.append((time.perf_counter() - t) * 1000.0)
                if b"connmgr_links" not in body:
                    raise RuntimeError("GET /metrics gave no connmgr_links")
            conn.close()
            return sorted(out)

        status = timed_calls("status")
        method = timed_calls("metrics")
        http = timed_gets()
        ref50, ref99 = statistics.median(status), p99(status)
        self.row("metrics method at %d links, p50 ms (ref: status)" % count, statistics.median(method),
                 ref50, "ms", ("max", 5.0), higher_is_better=False, ref_name="status")
        self.row("metrics method at %d links, p99 ms (ref: status)" % count, p99(method),
                 ref99, "ms", ("max", 5.0), higher_is_better=False, ref_name="status")
        self.row("GET /metrics at %d links, p99 ms (ref: status)" % count, p99(http),
                 ref99, "ms", ("max", 5.0), higher_is_better=False, ref_name="status")
        self.notes.append("metrics: %d links; exposition %d bytes; metrics method p50 %.3f ms, "
                          "GET /metrics p50 %.3f ms, status p50 %.3f ms"
                          % (count, len(text), statistics.median(method), statistics.median(http), ref50))
        self.stop_daemon(d, rpc)
        for p in peers:
            self.stop_peer(p[0])

    def scale_db(self):
        """1M nodes and 2M endpoints, made once and kept in the build tree."""
        path = os.path.join(self.build, "bench-data", "scale-1M.db")
        if os.path.exists(path):
            try:
                c = sqlite3.connect(path)
                n = c.execute("SELECT count(*) FROM nodes").fetchone()[0]
                c.close()
                if n == 1_000_000:
                    return path
            except sqlite3.Error:
                pass
            os.remove(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        print("  making the 1M-node database (once; kept in %s)" % path, flush=True)
        d, _, rpc, _, _ = self.start_daemon("scale-make", database=path)
        self.stop_daemon(d, rpc)
        c = sqlite3.connect(path)
        c.execute("PRAGMA synchronous=OFF")
        with c:
            c.executemany("INSERT INTO nodes(id, name) VALUES (?, ?)",
                          (("n%07d" % i, "node %d" % i) for i in range(1_000_000)))
            # Port 1 on loopback: nothing listens, a dial is refused at once.
            c.executemany("INSERT INTO endpoints(node_id, protocol, address, port, success_count, "
                          "failure_count) VALUES (?, ?, '127.0.0.1', ?, ?, ?)",
                          (("n%07d" % (i // 2), "tcp" if i % 2 == 0 else "quic", 1 + i % 2, i % 7, i % 5)
                           for i in range(2_000_000)))
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c.close()
        return path

    def bench_scale(self):
        print("database scale: 1M nodes, 2M endpoints", flush=True)
        path = self.scale_db()
        starts = []
        for _ in range(self.rounds()):
            # The page cache is warm, as on a host that runs the daemon.
            d, sock, rpc, ms, _ = self.start_daemon("scale", database=path)
            starts.append(ms)
            self.stop_daemon(d, rpc)
        self.row("1M nodes: start until status answers, ms", statistics.median(starts), None, "ms",
                 ("max", 200.0))
        d, sock, rpc, _, _ = self.start_daemon("scale", database=path)
        rng = random.Random(7)
        ids = ["n%07d" % rng.randrange(1_000_000) for _ in range(300)]
        get = [rpc.timed("nodes.get", {"node_id": i})[0] for i in ids]
        rank = [rpc.timed("endpoints.list", {"node_id": i})[0] for i in ids]
        conn = []
        for i in ids[:100]:
            ms, answer = rpc.timed("connect", {"node_id": i, "protocol": "tcp"})
            if answer.get("error", {}).get("code") != -32010:
                raise RuntimeError("connect to a refused port answered %r" % answer)
            conn.append(ms)
        page = [rpc.timed("nodes.list", {"limit": 1000, "after": i})[0] for i in ids[:50]]
        page_ep = [rpc.timed("nodes.list", {"limit": 1000, "after": i, "with_endpoints": True})[0]
                   for i in ids[:20]]
        self.row("1M nodes: nodes.get, p50 ms (round trip)", statistics.median(get), None, "ms",
                 ("max", 1.0))
        self.row("1M nodes: endpoint choice (endpoints.list), p50 ms", statistics.median(rank), None,
                 "ms", ("max", 1.0))
        self.row("1M nodes: node connect, refused at once, p50 ms", statistics.median(conn), None,
                 "ms", ("max", 1.0))
        self.row("1M nodes: nodes.list page of 1000, p50 ms", statistics.median(page), None, "ms",
                 ("max", 10.0))
        # Beyond the rows: with every endpoint (2,000 per page), for
        # information; most of it is building the answer as JSON.
        self.row("1M nodes: nodes.list page of 1000 with endpoints, p50 ms",
                 statistics.median(page_ep), None, "ms", ("info", 0))
        # nodes.explain: the ranking connect uses, every candidate with its
        # reasons, the classes, the backoff and the recent attempts (the
        # first 100 ids have one refused attempt each, from the rows above).
        expl = []
        for i in ids:
            ms, answer = rpc.timed("nodes.explain", {"node_id": i})
            if "result" not in answer or len(answer["result"]["candidates"]) != 2:
                raise RuntimeError("nodes.explain answered %r" % answer)
            expl.append(ms)
        self.row("1M nodes: nodes.explain, p50 ms (round trip)", statistics.median(expl), None, "ms",
                 ("max", 1.0))
        self.notes.append("1M nodes, p99 of 300: nodes.get %.2f ms, endpoints.list %.2f ms, "
                          "nodes.explain %.2f ms; connect p99 of 100 %.2f ms"
                          % (p99(get), p99(rank), p99(expl), p99(conn)))
        self.stop_daemon(d, rpc)

    def bench_race(self):
        """A node whose best-ranked endpoint blackholes (its SYNs dropped) and
        whose second endpoint accepts: the time a node connect takes, racing
        (the default) against race = false. Target with racing: the race
        delay + 2 x RTT + 5 ms, the delay as nodes.explain plans it (the
        second candidate's race_offset_ms) and the RTT measured here as the
        median plain connect() to the live endpoint."""
        print("node connect past a blackholed best endpoint: racing on vs off", flush=True)
        hole, filler = blackholed_port()
        hole_port = hole.getsockname()[1]
        peer, tcp_port, _ = self.start_peer()
        rtt_ms = statistics.median(plain_connect_ms("127.0.0.1", tcp_port) for _ in range(50))
        conf = os.path.join(self.work, "race-off.conf")
        with open(conf, "w") as f:
            f.write("race = false\n")
        # "RTT unknown": no rtt_ms, the delay is 250 ms; "RTT 0.1 ms": a
        # loopback-like smoothed RTT, 1.5 x RTT clamped up to race_delay_min.
        for n, (label, hole_rtt) in enumerate([("RTT unknown", None), ("RTT 0.1 ms", 0.1)]):
            self.race_case(n, label, hole_port, hole_rtt, tcp_port, rtt_ms, conf)
        self.stop_peer(peer)
        filler.close()
        hole.close()

    def race_case(self, n, label, hole_port, hole_rtt, tcp_port, rtt_ms, conf):
        """One row of bench_race: its own databases and daemons (racing, and
        race = false from `conf`), rounds of timed node connects on both."""
        nodes = [("race", [("tcp", "127.0.0.1", hole_port, None), ("tcp", "127.0.0.1", tcp_port, None)])]
        off_timeout_ms = 1000
        db_on = self.fresh_db("race-on-%d" % n, nodes)
        db_off = self.fresh_db("race-off-%d" % n, nodes)
        for db in (db_on, db_off):
            reset_race_record(db, hole_port, hole_rtt)
        don, _, rpc_on, _, _ = self.start_daemon("race-on-%d" % n, database=db_on)
        doff, _, rpc_off, _, _ = self.start_daemon("race-off-%d" % n, "--config=" + conf, database=db_off)
        plan = rpc_on.call("nodes.explain", {"node_id": "race"})
        ranked = sorted((c for c in plan["candidates"] if c["rank"] is not None), key=lambda c: c["rank"])
        if ranked[0]["endpoint"]["port"] != hole_port:
            raise RuntimeError("the blackholed endpoint does not rank first: %r" % plan)
        delay = ranked[1]["race_offset_ms"]
        on, off = [], []
        for _ in range(self.rounds()):
            for _ in range(self.args.race_runs):
                on.append(timed_node_connect(rpc_on, {"node_id": "race"}, tcp_port, 1))
            for _ in range(max(1, self.args.race_runs // 10)):
                if off:
                    # The timed-out dial ranks the blackholed endpoint behind
                    # (consecutive_failures): once the daemon has written that
                    # down (its writes are batched), put it first again.
                    wait_race_failure_flushed(db_off, hole_port)
                    reset_race_record(db_off, hole_port, hole_rtt)
                off.append(timed_node_connect(rpc_off, {
                    "node_id": "race", "timeout_ms": off_timeout_ms, "wait": True,
                    "retry": {"max_attempts": 2, "initial_delay_ms": 0}}, tcp_port, 2))
        self.stop_daemon(don, rpc_on)
        self.stop_daemon(doff, rpc_off)
        target = delay + 2 * rtt_ms + 5
        self.row("node connect, best endpoint blackholed, racing, %s: p50 ms" % label,
                 statistics.median(on), statistics.median(off), "ms", ("max", target),
                 ref_name="race = false, timeout %d ms" % off_timeout_ms)
        self.notes.append("race, %s: target %.1f ms = race delay %d ms (nodes.explain) + 2 × RTT "
                          "%.3f ms + 5 ms; racing p50 %.1f ms, p99 %.1f ms over %d connects; "
                          "race = false p50 %.1f ms over %d (timeout_ms %d, then the live endpoint)"
                          % (label, target, delay, rtt_ms, statistics.median(on), p99(on), len(on),
                             statistics.median(off), len(off), off_timeout_ms))

    def bench_latency(self):
        print("loop responsiveness: status p99 while busy", flush=True)
        count = 10000
        peer, tcp_port, _ = self.start_peer()
        nodes = [("r%d" % i, [("tcp", "127.0.0.1", tcp_port, None)]) for i in range(count)]
        db = self.fresh_db("latency", nodes)
        probe = os.path.join(self.tools, "rpc_load")
        idle, busy, locked, busy_samples = [], [], [], []
        for _ in range(self.rounds()):
            d, sock, rpc, _, _ = self.start_daemon("latency", database=db)
            idle.append(run_tool([probe, "probe", sock, "2", "1"])["p99_us"] / 1000.0)
            # 10,000 connects at once, on 8 sockets, while the probe asks;
            # only the answers to requests sent while the connects ran count.
            samples = os.path.join(self.work, "probe.txt")
            p = subprocess.Popen([probe, "probe", sock, "4", "1", samples], stdout=subprocess.PIPE,
                                 text=True)
            time.sleep(0.3)
            t0 = time.monotonic()
            f = run_tool([probe, "connect-many", sock, str(count), "r", str(count)])
            t1 = time.monotonic()
            p.communicate(timeout=60)
            window = window_latencies_ms(samples, t0, t1)
            if len(window) < 20:
                raise RuntimeError("only %d probe answers while the connects ran" % len(window))
            busy.append(p99(window))
            busy_samples.append(len(window))
            if f["connected"] != count:
                raise RuntimeError("only %d of %d connects succeeded" % (f["connected"], count))
            # Another process holds the write lock for 3 s while links are
            # dropped and made again (each records statistics).
            holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, db, "3"],
                                      stdout=subprocess.PIPE, text=True)
            holder.stdout.readline()  # "locked"
            p = subprocess.Popen([probe, "probe", sock, "3", "1"], stdout=subprocess.PIPE, text=True)
            for i in range(0, 2000):
                rpc.call("disconnect", {"node_id": "r%d" % i})
            run_tool([probe, "connect-many", sock, "2000", "r", "2000"])
            out, _ = p.communicate(timeout=60)
            locked.append(parse_fields(out.strip().splitlines()[-1])["p99_us"] / 1000.0)
            holder.wait(30)
            self.stop_daemon(d, rpc)
        self.row("status p99 ms, idle (reference)", statistics.median(idle), None, "ms", ("max", 5.0))
        self.notes.append("status p99 while 10,000 connects ran: over %s probe answers per round "
                          "(those sent between the first connect and the last answer)"
                          % "/".join(str(n) for n in busy_samples))
        self.row("status p99 ms, while 10,000 connects run", statistics.median(busy),
                 statistics.median(idle), "ms", ("max", 5.0), ref_name="idle p99")
        self.row("status p99 ms, while another process holds the write lock 3 s",
                 statistics.median(locked), statistics.median(idle), "ms", ("max", 5.0),
                 ref_name="idle p99")
        self.stop_peer(peer)

    def bench_streams(self):
        """Streams through the daemon (streams.open, then the raw pipe)
        against stream_load talking to the same peer straight; the RSS rows
        hold streams open and read the daemon's VmRSS."""
        size = self.args.stream_bytes
        print("streams: bulk %s bytes one way, 64-byte round trips, idle streams, a peer that never reads"
              % fmt(size), flush=True)
        load = os.path.join(self.tools, "stream_load")
        send = self.start_peer("--quic-streams", "send:%d" % size)
        # The TCP node of the bulk rows: stream_load's source (the test peer's
        # send:N would send on the link too, and end it).
        source = self.start([load, "source", str(size)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
        source_port = int(parse_fields(source.stdout.readline())["port"])
        echo = self.start_peer("--tcp-streams", "echo", "--quic-streams", "echo")
        hold = self.start_peer("--tcp-streams", "hold", "--quic-streams", "hold")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        # Each idle stream is a Unix socket in the daemon and one in
        # stream_load; the peer allows 100 streams per QUIC connection, so
        # they spread over links of 100 streams each.
        idle_count = min(self.args.idle_streams, hard - 500)
        idle_nodes = (idle_count + 99) // 100
        nodes = [("bt", [("tcp", "127.0.0.1", source_port, None)]),
                 ("bq", [("quic", "127.0.0.1", send[2], self.pin)]),
                 ("et", [("tcp", "127.0.0.1", echo[1], None)]),
                 ("eq", [("quic", "127.0.0.1", echo[2], self.pin)]),
                 ("ht", [("tcp", "127.0.0.1", hold[1], None)]),
                 ("hq", [("quic", "127.0.0.1", hold[2], self.pin)])]
        nodes += [("i%d" % i, [("quic", "127.0.0.1", hold[2], self.pin)]) for i in range(idle_nodes)]
        db = self.fresh_db("streams", nodes)
        stream_buffer = 256 * 1024  # the default, said explicitly
        # A stream's client is one of the daemon's clients (max_clients).
        d, sock, rpc, _, _ = self.start_daemon("streams", "--max-streams=%d" % (idle_count + 100),
                                               "--max-clients=%d" % (idle_count + 200),
                                               "--stream-buffer=%d" % stream_buffer, database=db)
        self.streams_bulk(sock, size, source_port, send[2])
        self.streams_round_trips(sock, echo[1])
        self.streams_hold(d, sock, rpc, stream_buffer)
        self.streams_idle(d, sock, rpc, idle_count, idle_nodes, hard)
        self.stop_daemon(d, rpc)
        for peer in (send, echo, hold):
            self.stop_peer(peer[0])
        source.stdin.close()
        self.stop(source)

    def streams_bulk(self, sock, size, source_port, quic_port):
        """Bulk rows: one stream, one way, through the daemon and straight."""
        load = os.path.join(self.tools, "stream_load")
        timeout = max(300, size // (10 << 20))
        # Bulk, one way (node -> client: the peer's send:N, read to the end).
        ours_t, ref_t, ours_q, ref_q = [], [], [], []
        for _ in range(self.rounds()):
            ours_t.append(run_tool([load, "unix:%s:bt" % sock, "download", str(size)], timeout)["mib_s"])
            ref_t.append(run_tool([load, "tcp:127.0.0.1:%d" % source_port, "download", str(size)],
                                  timeout)["mib_s"])
            ours_q.append(run_tool([load, "unix:%s:bq" % sock, "download", str(size)], timeout)["mib_s"])
            ref_q.append(run_tool([os.path.join(self.tools, "quic_plain_client"), "127.0.0.1", str(quic_port),
                                   self.pin, "connmgr", "download", str(size)], timeout)["mib_s"])
        self.row("TCP stream bulk, node → client, MiB/s", statistics.median(ours_t), statistics.median(ref_t),
                 "MiB/s", ("ratio", 0.5), ref_name="same client, straight to the peer")
        self.row("QUIC stream bulk, node → client, MiB/s", statistics.median(ours_q), statistics.median(ref_q),
                 "MiB/s", ("ratio", 0.7), ref_name="plain ngtcp2+GnuTLS client, same window")
        self.notes.append("bulk rows: %s bytes per transfer (--stream-bytes), node → client, read to "
                          "the end by stream_load through the daemon's socket or straight from the node; "
                          "TCP node: stream_load source, QUIC node: the test peer's send:N; QUIC reference: quic_plain_client "
                          "download, one stream with connmgr's 256 KiB window" % fmt(size))

    def streams_round_trips(self, sock, echo_port):
        """64-byte round trips through the daemon and straight."""
        load = os.path.join(self.tools, "stream_load")
        # 64-byte round trips (the peer's echo).
        n = self.args.round_trips
        ours, ref, ours_q = [], [], []
        for _ in range(self.rounds()):
            ours.append(run_tool([load, "unix:%s:et" % sock, "rr", str(n), "64"])["rate"])
            ref.append(run_tool([load, "tcp:127.0.0.1:%d" % echo_port, "rr", str(n), "64"])["rate"])
            ours_q.append(run_tool([load, "unix:%s:eq" % sock, "rr", str(n), "64"])["rate"])
        self.row("TCP stream 64-byte round trips/s", statistics.median(ours), statistics.median(ref),
                 "rt/s", ("ratio", 0.4), ref_name="same client, straight to the peer")
        self.row("QUIC stream 64-byte round trips/s", statistics.median(ours_q), None, "rt/s", ("info", 0))

    def streams_hold(self, d, sock, rpc, stream_buffer):
        """RSS growth while pushing toward a peer that never reads."""
        load = os.path.join(self.tools, "stream_load")
        # A peer that never reads: what the daemon holds stays bounded.
        bound_kib = (2 * stream_buffer + (1 << 20)) / 1024.0
        for node, label in (("ht", "TCP"), ("hq", "QUIC")):
            rpc.call("connect", {"node_id": node})
            time.sleep(0.3)
            before = rss_kib(d.pid)
            p = self.start([load, "unix:%s:%s" % (sock, node), "push", str(64 << 20)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            f = parse_fields(p.stdout.readline())
            after = rss_kib(d.pid)
            p.stdin.close()
            self.stop(p)
            # The client gone, the stream ends (client_closed): wait for it,
            # so that the idle row starts from none open.
            def left():
                return len([s for s in rpc.call("streams.list")["streams"] if s["node_id"] == node])
            deadline = time.time() + 10
            while left() and time.time() < deadline:
                time.sleep(0.05)
            if left():
                self.notes.append("%s hold: %d stream(s) still listed 10 s after the client closed"
                                  % (label, left()))
            self.row("%s stream, 64 MiB toward a peer that never reads: RSS growth KiB" % label,
                     after - before, None, "KiB", ("max", bound_kib))
            self.notes.append("%s hold: %s bytes accepted before the pipe stalled; daemon RSS %d → %d KiB"
                              % (label, fmt(f.get("pushed", 0)), before, after))

    def streams_idle(self, d, sock, rpc, idle_count, idle_nodes, hard):
        """Daemon RSS per idle QUIC stream, all held at once."""
        load = os.path.join(self.tools, "stream_load")
        # Idle QUIC streams held at once.
        for i in range(idle_nodes):
            rpc.call("connect", {"node_id": "i%d" % i})
        time.sleep(0.5)
        before = rss_kib(d.pid)
        p = self.start([load, "unix:" + sock, "idle", str(idle_count), "i", str(idle_nodes)],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        f = parse_fields(p.stdout.readline())
        if f.get("opened") != idle_count:
            raise RuntimeError("stream_load idle: %r" % f)
        time.sleep(0.5)
        after = rss_kib(d.pid)
        listed = len(rpc.call("streams.list")["streams"])
        p.stdin.close()
        self.stop(p)
        self.row("QUIC idle streams: daemon RSS per stream, KiB (%d streams)" % idle_count,
                 (after - before) / idle_count, None, "KiB", ("max", 8.0))
        self.notes.append("idle: %d QUIC streams over %d links (100 per link: the peer's stream limit) "
                          "opened in %.1f s; streams.list listed %d; daemon RSS %d → %d KiB"
                          % (idle_count, idle_nodes, f["seconds"], listed, before, after))
        if idle_count < self.args.idle_streams:
            self.notes.append("idle streams: %d, not %d: RLIMIT_NOFILE's hard limit is %d, and each "
                              "stream is a Unix socket in the daemon and one in stream_load"
                              % (idle_count, self.args.idle_streams, hard))

    # --- report ----------------------------------------------------------------

    # --- a fleet's shared inventory (docs/operations.md, "Running a fleet") -----

    def bench_fleet(self):
        print("a fleet's shared inventory on PostgreSQL 15 (tests/e2e/postgres.py)", flush=True)
        sys.path.insert(0, os.path.join(TOP, "tests", "e2e"))
        import postgres
        if not postgres.available():
            self.notes.append("fleet rows skipped: PostgreSQL 15 is not installed")
            return
        server = postgres.PostgresServer()
        try:
            server.start()
            dsn = server.create_fleet("bench")
            flags = ("--inventory=postgres", "--inventory-dsn=" + dsn)
            env = server.env()
            p50s, p99s = [], []
            for r in range(self.rounds()):
                a, _, ra, _, _ = self.start_daemon("fleet-a%d" % r, *flags, env=env)
                b, _, rb, _, _ = self.start_daemon("fleet-b%d" % r, *flags, env=env)
                for rpc in (ra, rb):
                    wait_inventory(rpc, lambda inv: inv["state"] == "connected")
                lat = propagation_ms(ra, rb, "r%d-" % r, self.args.fleet_adds)
                p50s.append(statistics.median(lat))
                p99s.append(p99(lat))
                self.stop_daemon(a, ra)
                self.stop_daemon(b, rb)
            self.row("propagation ms, nodes.add on one host to nodes.get on another, p50",
                     statistics.median(p50s), None, "ms", ("max", 50.0))
            self.row("propagation ms, the same, p99", statistics.median(p99s), None, "ms", ("info", None))
            self.bench_fleet_resync(server, flags, env)
        finally:
            server.close()

    def bench_fleet_resync(self, server, flags, env):
        """A host's first start on a fleet of N nodes (written on the server
        with SQL, as many hosts' nodes.add would): the full resync's rate, and
        status p99 while it runs."""
        count = self.args.fleet_nodes
        fill_fleet_sql(server, "bench", count)
        probe = os.path.join(self.tools, "rpc_load")
        rates, status_p99, idle_p99 = [], [], []
        for r in range(self.rounds()):
            t0 = time.monotonic()
            d, sock, rpc, _, _ = self.start_daemon("fleet-resync%d" % r, *flags, env=env)
            samples = os.path.join(self.work, "fleet-probe.txt")
            # The probe asks for status every ms for 15 s (it writes its
            # samples when it ends); the answers sent before the resync ended count.
            p = subprocess.Popen([probe, "probe", sock, "15", "1", samples], stdout=subprocess.PIPE, text=True)
            t_probe = time.monotonic()
            wait_inventory(rpc, lambda inv: inv["state"] == "connected", timeout=120)
            deadline = time.monotonic() + 300
            while rpc.call("status")["counts"]["nodes"] < count:
                if time.monotonic() > deadline:
                    raise RuntimeError("the resync of %d nodes did not end within 300 s" % count)
                time.sleep(0.01)
            t1 = time.monotonic()
            p.communicate(timeout=60)
            rates.append(count / (t1 - t0))
            window = window_latencies_ms(samples, t_probe, t1)
            if len(window) < 20:
                raise RuntimeError("only %d probe answers while the resync ran" % len(window))
            status_p99.append(p99(window))
            # The same daemon once the resync is over: what this machine allows.
            idle_p99.append(run_tool([probe, "probe", sock, "3", "1"])["p99_us"] / 1000.0)
            self.stop_daemon(d, rpc)
        self.row("full resync nodes/s, first start on %s nodes (from exec)" % fmt(count),
                 statistics.median(rates), None, "nodes/s", ("min", 20000.0))
        self.row("status p99 ms, while %s nodes resync" % fmt(count), statistics.median(status_p99),
                 statistics.median(idle_p99), "ms", ("max", 5.0), ref_name="idle p99 after it")

    def markdown(self):
        lines = ["| figure | connmgr | reference | ratio | target | |", "|---|---:|---:|---:|---|---|"]
        for r in self.rows:
            ref = "—" if not r["ref"] else "%s (%s)" % (fmt(r["ref"]), r["ref_name"])
            lines.append("| %s | %s %s | %s | %s | %s | %s |" % (
                r["figure"], fmt(r["ours"]), r["unit"], ref,
                ("%.2f×" % r["ratio"]) if r["ratio"] else "—", r["target"],
                "" if r["met"] is None else "met" if r["met"] else "**not met**"))
        return "\n".join(lines) + "\n\n" + "\n".join("- " + n for n in self.notes) + "\n"


LOCK_HOLDER = r"""
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
c.execute("BEGIN IMMEDIATE")
c.execute("UPDATE nodes SET name = name WHERE id = (SELECT min(id) FROM nodes)")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
c.execute("COMMIT")
"""


def pinned(cpu):
    """taskset's prefix that runs a command on one CPU (none on a 1-CPU machine)."""
    return ["taskset", "-c", str(cpu)] if (os.cpu_count() or 1) > 1 else []


def redis_rps(csv_text, test):
    for line in csv_text.splitlines():
        cols = [c.strip('"') for c in line.split(",")]
        if cols and cols[0] == test:
            return float(cols[1])
    raise RuntimeError("redis-benchmark gave no %s figure: %s" % (test, csv_text[-300:]))


def window_latencies_ms(path, t0, t1):
    """The probe's latencies (ms) of the requests sent between t0 and t1
    (CLOCK_MONOTONIC seconds, as rpc_load writes them)."""
    out = []
    with open(path) as f:
        for line in f:
            sent, us = line.split()
            if t0 <= float(sent) <= t1:
                out.append(float(us) / 1000.0)
    return out


def blackholed_port():
    """A 127.0.0.1 listener that drops SYNs: listen(0), never accepted, one
    connection queued, so a dial to it hangs until its timeout (checked).
    Returns (listener, the queued connection)."""
    hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    filler = socket.create_connection(hole.getsockname(), timeout=5)
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.settimeout(0.3)
    try:
        probe.connect(hole.getsockname())
        raise RuntimeError("the blackholed port accepted a connection")
    except (TimeoutError, socket.timeout):
        pass
    finally:
        probe.close()
    return hole, filler


def timed_node_connect(rpc, params, live_port, attempts):
    """One connect, ms; it must link through live_port after `attempts`
    attempts. The link is then dropped."""
    ms, answer = rpc.timed("connect", params)
    result = answer.get("result", {})
    if result.get("port") != live_port or result.get("attempts") != attempts:
        raise RuntimeError("connect %r answered %r" % (params, answer))
    rpc.call("disconnect", {"node_id": params["node_id"]})
    return ms


def plain_connect_ms(host, port):
    """One blocking connect() to a listener, ms: about one round trip."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t = time.perf_counter()
    s.connect((host, port))
    ms = (time.perf_counter() - t) * 1000.0
    s.close()
    return ms


def reset_race_record(db, hole_port, rtt_ms):
    """The blackholed endpoint of bench_race ranked first again, as another
    program would write it: a record far better than the live one's, no
    failure in a row, the given smoothed RTT."""
    c = sqlite3.connect(db, timeout=30)
    with c:
        c.execute("UPDATE endpoints SET success_count = 1000000, failure_count = 0, consecutive_failures = 0, "
                  "rtt_ms = ? WHERE port = ?", (rtt_ms, hole_port))
    c.close()


def wait_race_failure_flushed(db, hole_port, timeout=10.0):
    """Until the daemon has written the blackholed endpoint's failure."""
    deadline = time.time() + timeout
    while True:
        c = sqlite3.connect(db, timeout=30)
        n = c.execute("SELECT consecutive_failures FROM endpoints WHERE port = ?", (hole_port, )).fetchone()[0]
        c.close()
        if n > 0:
            return
        if time.time() > deadline:
            raise RuntimeError("the timed-out dial was not recorded within %.0f s" % timeout)
        time.sleep(0.02)


def free_tcp_port():
    """A loopback TCP port free now (bound then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_inventory(rpc, pred, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        inv = rpc.call("status")["inventory"]
        if pred(inv):
            return inv
        if time.monotonic() > deadline:
            raise RuntimeError("status.inventory stayed %s" % inv)
        time.sleep(0.01)


def propagation_ms(ra, rb, prefix, adds):
    """nodes.add through one host, then nodes.get on the other until it
    answers, alternating directions: the time from the add's request to the
    first successful get, in ms."""
    out = []
    for i in range(adds):
        writer, reader = (ra, rb) if i % 2 == 0 else (rb, ra)
        node_id = "%s%d" % (prefix, i)
        t0 = time.perf_counter()
        writer.call("nodes.add", {"id": node_id})
        deadline = t0 + 10
        while "error" in reader.call_raw("nodes.get", {"node_id": node_id}):
            if time.perf_counter() > deadline:
                raise RuntimeError("%s never reached the other host" % node_id)
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def fill_fleet_sql(server, dbname, count):
    """`count` nodes with one endpoint each, written on the server in one
    statement per table (the server's triggers log every row)."""
    server.psql("INSERT INTO connmgr.nodes(id, name) SELECT 'f' || g, NULL FROM generate_series(1, %d) g" % count,
                dbname, timeout=600)
    server.psql("INSERT INTO connmgr.endpoints(node_id, protocol, address, port) "
                "SELECT 'f' || g, 'tcp', '127.0.0.1', 1 + g %% 65535 FROM generate_series(1, %d) g" % count,
                dbname, timeout=600)


def p99(values):
    v = sorted(values)
    return v[min(len(v) - 1, int(0.99 * len(v)))]


def fmt(x):
    if x is None:
        return "—"
    if abs(x) >= 1000:
        return "{:,.0f}".format(x)
    if abs(x) >= 10:
        return "%.1f" % x
    return "%.3g" % x


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(TOP, "build-bench"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="length of one rate round")
    ap.add_argument("--cycles", type=int, default=60000,
                    help="TCP cycles per round (QUIC: a twentieth)")
    ap.add_argument("--stream-bytes", type=int, default=1 << 30,
                    help="bytes of one bulk stream transfer (streams rows)")
    ap.add_argument("--round-trips", type=int, default=20000,
                    help="64-byte round trips per round (streams rows)")
    ap.add_argument("--idle-streams", type=int, default=10000,
                    help="idle QUIC streams held at once (streams rows)")
    ap.add_argument("--race-runs", type=int, default=20,
                    help="racing connects per round (race rows; race = false: a tenth)")
    ap.add_argument("--fleet-adds", type=int, default=400,
                    help="nodes added per round for the propagation rows (fleet rows)")
    ap.add_argument("--fleet-nodes", type=int, default=100000,
                    help="nodes of the fleet a host resyncs at its first start (fleet rows)")
    ap.add_argument("--only", default="status,tcp,quic,links,scale,latency,streams,race,metrics,fleet")
    ap.add_argument("--markdown", help="also write the table to this file")
    args = ap.parse_args()
    only = set(args.only.split(","))
    b = Bench(args)
    started = time.time()
    print("connmgr benchmarks: %s, %d cores, %d rounds per figure (medians)\n" % (
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.cpu_count(), args.rounds))
    print("  %-58s %12s %12s %8s  %-10s" % ("figure", "connmgr", "reference", "ratio", "target"))
    try:
        if "status" in only:
            b.bench_status()
        if "tcp" in only:
            b.bench_cycles("tcp")
        if "quic" in only:
            b.bench_cycles("quic")
        if "links" in only:
            b.bench_links("tcp", 50000)
            b.bench_links("quic", 5000)
        if "scale" in only:
            b.bench_scale()
        if "latency" in only:
            b.bench_latency()
        if "streams" in only:
            b.bench_streams()
        if "race" in only:
            b.bench_race()
        if "metrics" in only:
            b.bench_metrics()
        if "fleet" in only:
            b.bench_fleet()
    finally:
        b.cleanup()
    print()
    for n in b.notes:
        print("note: " + n)
    judged = [r for r in b.rows if r["met"] is not None]
    print("\n%d of %d figures meet their targets (%.0f s)" % (
        sum(r["met"] for r in judged), len(judged), time.time() - started))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(b.markdown())


if __name__ == "__main__":
    main()
