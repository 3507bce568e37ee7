"""Metrics (docs/operations.md, "Metrics"): the `metrics` method and
`connmgrctl metrics` give every family with HELP and TYPE from the start,
promtool (Debian's prometheus package) finds nothing wrong with them, and
each counter moves as the things it counts happen against real sockets.
The HTTP listener, a real Prometheus server scraping it, and the textfile
are in metrics_http_test.py.
"""
import os
import re
import shutil
import subprocess
import unittest

from daemon import CONNMGRCTL, Daemon, Listener, closed_port, wait_for

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

# Every family the daemon writes, as the text format names it, and its type.
FAMILIES = {
    "connmgr_build_info": "gauge",
    "connmgr_nodes": "gauge",
    "connmgr_endpoints": "gauge",
    "connmgr_links": "gauge",
    "connmgr_dials_total": "counter",
    "connmgr_dial_failures_total": "counter",
    "connmgr_dial_duration_seconds": "histogram",
    "connmgr_link_duration_seconds": "histogram",
    "connmgr_disconnects_total": "counter",
    "connmgr_streams": "gauge",
    "connmgr_stream_bytes_total": "counter",
    "connmgr_rpc_requests_total": "counter",
    "connmgr_rpc_clients": "gauge",
    "connmgr_uncharged_failures_total": "counter",
    "connmgr_network_changes_total": "counter",
    "connmgr_network_class_state": "gauge",
    "connmgr_races_total": "counter",
    "connmgr_dials_in_flight": "gauge",
    "connmgr_dials_queued": "gauge",
    "connmgr_storage_flush_duration_seconds": "histogram",
    "connmgr_storage_pending_stats": "gauge",
    "connmgr_inventory_state": "gauge",
    "connmgr_inventory_revision": "gauge",
    "connmgr_inventory_lag_seconds": "gauge",
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
}

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """The exposition as {"types": {family: type}, "helps": {...},
    "samples": {(name, frozenset(labels)): value}}; raises on a line it cannot read."""
    types, helps, samples = {}, {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line.startswith("# HELP "):
            _, _, name, help_text = line.split(" ", 3)
            helps[name] = help_text
        elif line.startswith("#") or not line:
            continue
        else:
            m = SAMPLE.match(line)
            assert m, "not a sample line: %r" % line
            labels = frozenset(LABEL.findall(m.group(3) or ""))
            samples[(m.group(1), labels)] = float(m.group(4))
    return {"types": types, "helps": helps, "samples": samples}


def value(parsed, name, **labels):
    return parsed["samples"].get((name, frozenset(labels.items())))


def promtool_check(test, text):
    """promtool check metrics: exit 0 and no lint complaint."""
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    test.assertEqual(p.returncode, 0, p.stdout.decode() + p.stderr.decode())
    test.assertEqual(p.stdout.decode().strip(), "", p.stdout.decode())


def metrics(d):
    return parse(d.result("metrics")["text"])


class MethodTest(unittest.TestCase):
    def test_every_family_has_help_and_type_from_the_start(self):
        """Pass: a fresh daemon's exposition names every family of the table
        with its type and a HELP line, has no node-id label, and promtool
        accepts it."""
        with Daemon() as d:
            text = d.result("metrics")["text"]
            m = parse(text)
            for name, kind in FAMILIES.items():
                self.assertEqual(m["types"].get(name), kind, name)
                self.assertTrue(m["helps"].get(name), name)
            self.assertEqual(value(m, "connmgr_nodes"), 0)
            self.assertEqual(value(m, "connmgr_links", protocol="tcp", state="active"), 0)
            self.assertEqual(value(m, "connmgr_dials_total", protocol="quic", result="success"), 0)
            self.assertEqual(value(m, "process_open_fds") > 3, True)
            self.assertEqual(value(m, "connmgr_inventory_state", backend="local", state="connected"), 1)
            self.assertEqual(value(m, "connmgr_inventory_state", backend="local", state="unavailable"), 0)
            self.assertEqual(value(m, "connmgr_inventory_revision"), 0)
            for (name, labels), _ in m["samples"].items():
                self.assertNotIn("node_id", dict(labels), name)
            promtool_check(self, text)

    def test_the_docs_list_every_family(self):
        """Pass: every family the daemon writes is named in docs/operations.md's
        Metrics section and in connmgrd(8)'s METRICS section, and neither names
        a connmgr_ family the daemon does not write."""
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "../../docs/operations.md")) as f:
            ops = f.read().split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
        with open(os.path.join(here, "../../docs/man/connmgrd.8.scd")) as f:
            man = f.read().split("\n# METRICS\n", 1)[1].split("\n# ", 1)[0]
        with Daemon() as d:
            written = set(parse(d.result("metrics")["text"])["types"])
        for name, text in (("operations.md", ops), ("connmgrd.8", man)):
            named = set(re.findall(r"\b((?:connmgr|process)_[a-z_]+[a-z])\b", text))
            # Samples of histograms are named after their family.
            named = {n for n in named if not re.search(r"_(bucket|sum|count)$", n)}
            self.assertEqual(sorted(written - named), [], "%s misses families" % name)
            self.assertEqual(sorted(n for n in named - written if n.startswith("connmgr_")), [],
                             "%s names families the daemon does not write" % name)

    def test_counters_move_as_things_happen(self):
        """Pass: two nodes added, one linked over TCP to a real listener, the
        other refused twice, then the link disconnected: the node and
        endpoint gauges, dials by result, failures by reason, the dial
        duration, the links gauge, disconnects and link duration, the
        uncharged failure and the calls by method and outcome all say so."""
        live = Listener()
        try:
            with Daemon() as d:
                d.result("nodes.add", {"id": "up", "endpoints": [
                    {"protocol": "tcp", "address": "127.0.0.1", "port": live.port}]})
                d.result("nodes.add", {"id": "down", "endpoints": [
                    {"protocol": "tcp", "address": "127.0.0.1", "port": closed_port()}]})
                m = metrics(d)
                self.assertEqual(value(m, "connmgr_nodes"), 2)
                self.assertEqual(value(m, "connmgr_endpoints"), 2)

                d.result("connect", {"node_id": "up"})
                answer = d.call("connect", {"node_id": "down", "wait": True, "retry": {
                    "max_attempts": 2, "initial_delay_ms": 20, "max_delay_ms": 20}})
                self.assertIn("error", answer)
                m = metrics(d)
                self.assertEqual(value(m, "connmgr_dials_total", protocol="tcp", result="success"), 1)
                self.assertEqual(value(m, "connmgr_dials_total", protocol="tcp", result="failure"), 2)
                self.assertEqual(value(m, "connmgr_dial_failures_total", protocol="tcp", reason="refused"), 2)
                self.assertEqual(value(m, "connmgr_dial_duration_seconds_count", protocol="tcp"), 1)
                self.assertEqual(value(m, "connmgr_dial_duration_seconds_bucket", protocol="tcp", le="+Inf"), 1)
                self.assertEqual(value(m, "connmgr_links", protocol="tcp", state="active"), 1)
                self.assertEqual(value(m, "connmgr_uncharged_failures_total", why="outage"), 1)
                self.assertEqual(value(m, "connmgr_rpc_requests_total", method="nodes.add", outcome="success"), 2)
                self.assertEqual(value(m, "connmgr_rpc_requests_total", method="connect", outcome="error"), 1)
                self.assertGreaterEqual(value(m, "connmgr_rpc_clients"), 1)  # this call's own

                d.result("disconnect", {"node_id": "up"})
                d.call("no.such.method")
                m = metrics(d)
                self.assertEqual(value(m, "connmgr_links", protocol="tcp", state="active"), 0)
                self.assertEqual(value(m, "connmgr_disconnects_total", reason="requested"), 1)
                self.assertEqual(value(m, "connmgr_link_duration_seconds_count"), 1)
                self.assertEqual(value(m, "connmgr_rpc_requests_total", method="unknown", outcome="error"), 1)
                # The statistics reach the database within the flush interval.
                self.assertTrue(wait_for(lambda: (value(metrics(d), "connmgr_storage_flush_duration_seconds_count")
                                                  or 0) >= 1, timeout=5))
        finally:
            live.stop()

    def test_connmgrctl_metrics_prints_the_exposition(self):
        """Pass: `connmgrctl metrics` prints text promtool accepts, with every
        family; --json prints the method's result."""
        with Daemon() as d:
            out = subprocess.run([CONNMGRCTL, "--socket", d.sock, "metrics"], capture_output=True,
                                 timeout=30, check=True).stdout.decode()
            m = parse(out)
            for name in FAMILIES:
                self.assertIn(name, m["types"])
            promtool_check(self, out)
            js = subprocess.run([CONNMGRCTL, "--socket", d.sock, "--json", "metrics"], capture_output=True,
                                timeout=30, check=True).stdout.decode()
            self.assertIn('"text":', js)


if __name__ == "__main__":
    unittest.main()
