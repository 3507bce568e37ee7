"""Metrics over HTTP and in a textfile (docs/operations.md, "Metrics"):
connmgrd with metrics_listen on 127.0.0.1 answers GET /metrics in the text
format or, when Accept asks for it, OpenMetrics; other paths and methods get
the right status codes; promtool accepts the body; a real Prometheus server
(Debian's prometheus package) started here scrapes the daemon and its query
API returns connmgr_links with the number of links up; the scrape
configuration and the alert rules docs/operations.md shows pass promtool;
metrics_textfile is rewritten atomically, without process_* families.
"""
import http.client
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse
import json

from daemon import Daemon, Listener, wait_for
from metrics_test import PROMTOOL, parse, promtool_check, value

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
OPERATIONS_MD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../docs/operations.md")
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT = "text/plain; version=0.0.4; charset=utf-8"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(port, path="/metrics", method="GET", headers=None, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def doc_yaml_blocks():
    """The ```yaml blocks of docs/operations.md's Metrics section."""
    with open(OPERATIONS_MD) as f:
        text = f.read()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```yaml\n(.*?)```", section, re.S)


class HttpTest(unittest.TestCase):
    def setUp(self):
        self.port = free_port()
        self.d = Daemon("--metrics-listen=127.0.0.1:%d" % self.port)

    def tearDown(self):
        try:
            self.d.stop_ok()
        finally:
            self.d.cleanup()

    def test_get_metrics_in_both_formats(self):
        """Pass: without Accept, text 0.0.4 that promtool accepts and that
        holds what the method holds; with Prometheus' own Accept, OpenMetrics
        (counter families without _total, # EOF last); HEAD gives the
        headers only."""
        status, headers, body = get(self.port)
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], TEXT)
        text = body.decode()
        promtool_check(self, text)
        self.assertEqual(set(parse(text)["types"]), set(parse(self.d.result("metrics")["text"])["types"]))

        accept = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                  "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
        status, headers, body = get(self.port, headers={"Accept": accept})
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], OPENMETRICS)
        om = body.decode()
        self.assertTrue(om.endswith("# EOF\n"))
        self.assertIn("# TYPE connmgr_dials counter\n", om)
        self.assertIn("# TYPE connmgr_build info\n", om)
        self.assertIn("# UNIT connmgr_dial_duration_seconds seconds\n", om)
        self.assertIn('connmgr_dials_total{protocol="tcp",result="success"} 0\n', om)

        status, headers, body = get(self.port, method="HEAD")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"")

    def test_other_paths_and_methods_get_their_status_codes(self):
        """Pass: 404 for another path, 405 with Allow for POST, 413 for a
        request with a body, and the listener still serves afterwards."""
        self.assertEqual(get(self.port, "/")[0], 404)
        self.assertEqual(get(self.port, "/metricsx")[0], 404)
        status, headers, _ = get(self.port, method="POST", body=b"")
        self.assertEqual(status, 405)
        self.assertEqual(headers.get("Allow"), "GET, HEAD")
        self.assertEqual(get(self.port, method="GET", body=b"x" * 10)[0], 413)
        self.assertEqual(get(self.port, "/metrics?x=1")[0], 200)
        self.assertEqual(get(self.port)[0], 200)

    def test_the_rpc_socket_still_answers_while_a_client_dribbles(self):
        """Pass: a client that sends half a request and stops does not hold
        the daemon: status answers, and another scrape is served."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        try:
            s.sendall(b"GET /metr")
            self.assertIn("version", self.d.result("status"))
            self.assertEqual(get(self.port)[0], 200)
        finally:
            s.close()


class PrometheusTest(unittest.TestCase):
    def test_a_real_prometheus_scrapes_the_daemon(self):
        """Pass: Prometheus 2.42, scraping every second, reports the target
        up with no scrape error and its query API returns
        connmgr_links{protocol="tcp",state="active"} = 2 after two nodes
        are linked, then 1 after one is disconnected."""
        port = free_port()
        live = Listener()
        work = tempfile.mkdtemp(prefix="connmgr-prom-")
        prom = None
        try:
            with Daemon("--metrics-listen=127.0.0.1:%d" % port) as d:
                for n in ("a", "b"):
                    d.result("nodes.add", {"id": n, "endpoints": [
                        {"protocol": "tcp", "address": "127.0.0.1", "port": live.port}]})
                    d.result("connect", {"node_id": n})
                web = free_port()
                config = os.path.join(work, "prometheus.yml")
                with open(config, "w") as f:
                    f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                            "scrape_configs:\n  - job_name: connmgr\n    static_configs:\n"
                            "      - targets: ['127.0.0.1:%d']\n" % port)
                log = open(os.path.join(work, "prometheus.log"), "wb")
                prom = subprocess.Popen([PROMETHEUS, "--config.file=" + config,
                                         "--storage.tsdb.path=" + os.path.join(work, "data"),
                                         "--web.listen-address=127.0.0.1:%d" % web],
                                        stdout=log, stderr=log, stdin=subprocess.DEVNULL)

                def query(q):
                    try:
                        _, _, body = get(web, "/api/v1/query?" + urllib.parse.urlencode({"query": q}))
                        result = json.loads(body)["data"]["result"]
                    except (OSError, ValueError, KeyError):
                        return None
                    return float(result[0]["value"][1]) if result else None

                def links_up():
                    return query('connmgr_links{protocol="tcp",state="active"}')

                self.assertTrue(wait_for(lambda: links_up() == 2, timeout=30), self.prom_log(work))
                _, _, body = get(web, "/api/v1/targets")
                targets = json.loads(body)["data"]["activeTargets"]
                self.assertEqual(len(targets), 1)
                self.assertEqual(targets[0]["health"], "up", targets[0])
                self.assertEqual(targets[0]["lastError"], "")
                self.assertEqual(query('connmgr_build_info'), 1)
                d.result("disconnect", {"node_id": "a"})
                self.assertTrue(wait_for(lambda: links_up() == 1, timeout=15), self.prom_log(work))
                self.assertEqual(query('connmgr_disconnects_total{reason="requested"}'), 1)
        finally:
            if prom is not None:
                prom.terminate()
                try:
                    prom.wait(10)
                except subprocess.TimeoutExpired:
                    prom.kill()
                    prom.wait(5)
            live.stop()
            shutil.rmtree(work, ignore_errors=True)

    @staticmethod
    def prom_log(work):
        try:
            with open(os.path.join(work, "prometheus.log"), errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def test_the_documented_scrape_config_and_alerts_pass_promtool(self):
        """Pass: docs/operations.md's scrape configuration passes `promtool
        check config` and its alert rules `promtool check rules`."""
        blocks = doc_yaml_blocks()
        config = [b for b in blocks if "scrape_configs" in b]
        rules = [b for b in blocks if "groups:" in b]
        self.assertEqual((len(config), len(rules)), (1, 1), blocks)
        work = tempfile.mkdtemp(prefix="connmgr-promtool-")
        try:
            for name, text, cmd in (("prometheus.yml", config[0], "config"), ("rules.yml", rules[0], "rules")):
                path = os.path.join(work, name)
                with open(path, "w") as f:
                    f.write(text)
                p = subprocess.run([PROMTOOL, "check", cmd, path], capture_output=True, timeout=30)
                self.assertEqual(p.returncode, 0, p.stdout.decode() + p.stderr.decode())
        finally:
            shutil.rmtree(work, ignore_errors=True)


class TextfileTest(unittest.TestCase):
    def test_the_textfile_is_rewritten_atomically_without_process_families(self):
        """Pass: with metrics_interval 100ms, a reader that reads the file
        over and over for 3 s while nodes are added always gets a whole
        exposition (first and last family present, ending in a newline),
        sees connmgr_nodes grow, never a process_* family; the file is
        0644; no temporary file is left once the daemon has stopped."""
        work = tempfile.mkdtemp(prefix="connmgr-textfile-")
        path = os.path.join(work, "connmgr.prom")
        try:
            with Daemon("--metrics-textfile=" + path, "--metrics-interval=100ms") as d:
                self.assertTrue(wait_for(lambda: os.path.exists(path), timeout=5))
                self.assertEqual(os.stat(path).st_mode & 0o777, 0o644)
                reads, seen_nodes, stop = [0], set(), [False]
                problems = []

                def reader():
                    while not stop[0]:
                        with open(path) as f:
                            text = f.read()
                        reads[0] += 1
                        if not (text.startswith("# HELP connmgr_build_info") and text.endswith("\n")
                                and "connmgr_storage_pending_stats " in text):
                            problems.append(text[-200:])
                        if "process_" in text:
                            problems.append("process_ family in the textfile")
                        m = re.search(r"^connmgr_nodes (\d+)$", text, re.M)
                        if m:
                            seen_nodes.add(int(m.group(1)))

                t = threading.Thread(target=reader)
                t.start()
                try:
                    for i in range(30):
                        d.result("nodes.add", {"id": "n%d" % i})
                        time.sleep(0.1)
                finally:
                    stop[0] = True
                    t.join(10)
                self.assertEqual(problems, [])
                self.assertGreater(reads[0], 100)
                self.assertGreater(len(seen_nodes), 5)  # rewritten as nodes came

                def shows_all_nodes():
                    with open(path) as f:
                        return "\nconnmgr_nodes 30\n" in f.read()
                self.assertTrue(wait_for(shows_all_nodes, timeout=5))
            self.assertEqual(sorted(os.listdir(work)), ["connmgr.prom"])
        finally:
            shutil.rmtree(work, ignore_errors=True)


class StartTest(unittest.TestCase):
    def test_a_listen_address_in_use_stops_the_start(self):
        """Pass: metrics_listen on a port another socket holds: connmgrd
        exits 1 with a line naming metrics_listen and the address."""
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        d = Daemon("--metrics-listen=127.0.0.1:%d" % port, start=False)
        try:
            d.start(wait=False)
            d.proc.wait(10)
            self.assertEqual(d.proc.returncode, 1)
            self.assertRegex(d.log_text(), r"metrics_listen: .*127\.0\.0\.1:%d" % port)
        finally:
            holder.close()
            d.cleanup()


if __name__ == "__main__":
    unittest.main()
