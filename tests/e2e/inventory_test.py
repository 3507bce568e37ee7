"""A fleet's shared inventory end to end (docs/operations.md, "Running a
fleet"): several connmgrd processes, each with its own database, sharing the
nodes and endpoints of one real PostgreSQL 15 (tests/e2e/postgres.py), and the
local backend that stays the default.

The PostgreSQL cases need Debian's postgresql-15 and are skipped without it.
One server serves the whole file; each case gets a database of its own.
"""
import os
import re
import statistics
import subprocess
import tempfile
import time
import unittest

import postgres
from daemon import CONNMGRD, PROTO_DOC, Client, Daemon, DaemonTest, Listener, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
STORAGE_ERROR = -32020
NODE_NOT_FOUND = -32001


def run(args, timeout=20, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)


def tcp_node(node_id, port, address="127.0.0.1"):
    return {"id": node_id, "endpoints": [{"protocol": "tcp", "address": address, "port": port}]}


def fill_fleet(server, dbname, count):
    """`count` nodes with one endpoint each, written on the server with SQL as
    another program would (the server's triggers log every row)."""
    server.psql("INSERT INTO connmgr.nodes(id) SELECT 'f' || g FROM generate_series(1, %d) g" % count,
                dbname, timeout=600)
    server.psql("INSERT INTO connmgr.endpoints(node_id, protocol, address, port) "
                "SELECT 'f' || g, 'tcp', '127.0.0.1', 1 + g %% 65535 FROM generate_series(1, %d) g" % count,
                dbname, timeout=600)


def migration_recipe():
    """The sh block of docs/operations.md's "Moving a local inventory into the
    shared one"."""
    with open(os.path.join(ROOT, "docs", "operations.md")) as f:
        text = f.read()
    section = text.split("### Moving a local inventory into the shared one", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


# --- the local backend (the default) ---------------------------------------------


class LocalInventoryTest(DaemonTest):
    def test_status_shows_the_local_inventory(self):
        inv = self.d.result("status")["inventory"]
        self.assertEqual(inv, {"backend": "local", "state": "connected", "revision": 0, "lag_s": 0})
        self.assertEqual(self.d.result("status")["config"]["inventory"], "local")

    def test_local_writes_send_no_inventory_changed_event(self):
        with self.d.client() as c:
            c.call("events.subscribe", {"types": ["inventory_changed", "node_added"]})
            self.d.result("nodes.add", tcp_node("n1", 9))
            self.assertEqual(c.next_event()["type"], "node_added")
            self.d.result("nodes.remove", {"node_id": "n1"})
            with self.assertRaises(TimeoutError):
                c.next_event(timeout=0.3)


class InventoryConfigurationTest(unittest.TestCase):
    def refused(self, *args):
        """connmgrd's stderr; it must exit 2 without starting (a start would
        time out: the DSNs name no server)."""
        with tempfile.TemporaryDirectory() as d:
            out = run([CONNMGRD, "--database=%s/x.db" % d, "--socket=%s/s" % d, *args], timeout=10)
            self.assertEqual(out.returncode, 2, out.stderr)
            self.assertFalse(os.path.exists(os.path.join(d, "x.db")), "the database was created")
        return out.stderr

    def test_postgres_needs_a_dsn(self):
        self.assertIn("inventory_dsn", self.refused("--inventory=postgres"))
        self.assertIn("inventory", self.refused("--inventory=etcd"))

    def test_a_dsn_that_holds_a_password_is_refused_naming_the_key(self):
        for dsn in ("host=db.example dbname=fleet user=connmgr password=secret",
                    "postgresql://connmgr:secret@db.example/fleet"):
            with self.subTest(dsn=dsn):
                err = self.refused("--inventory=postgres", "--inventory-dsn=" + dsn)
                self.assertIn("inventory_dsn", err)
                self.assertNotIn("secret", err)


# --- a fleet on PostgreSQL ---------------------------------------------------------


@unittest.skipUnless(postgres.available(), "PostgreSQL 15 is not installed (postgresql-15)")
class FleetTest(unittest.TestCase):
    server = None
    fleets = 0

    @classmethod
    def setUpClass(cls):
        cls.server = postgres.PostgresServer()
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        if cls.server:
            cls.server.close()

    def setUp(self):
        if not self.server.running():
            self.server.start()
        FleetTest.fleets += 1
        self.dbname = "fleet%d" % FleetTest.fleets
        self.dsn = self.server.create_fleet(self.dbname)
        self.hosts = []

    def tearDown(self):
        try:
            for h in self.hosts:
                if h.proc is not None and h.proc.poll() is None:
                    h.stop_ok()
        finally:
            for h in self.hosts:
                h.cleanup()
            if not self.server.running():
                self.server.start()

    # --- helpers --------------------------------------------------------------

    def host(self, *args, connected=True):
        """A connmgrd on the fleet's inventory, with its own database; waits
        until its inventory is connected (unless told not to)."""
        d = Daemon("--inventory=postgres", "--inventory-dsn=" + self.dsn, "--inventory-retry-max=500ms",
                   "--inventory-connect-timeout=2s", "--inventory-resync-interval=2s", *args,
                   env=self.server.env())
        self.hosts.append(d)
        if connected:
            self.wait_state(d, "connected")
        return d

    def restart(self, d):
        """Starts a stopped host again on its database (its mirror)."""
        if d.log:
            d.log.close()
        d.start()

    def inventory(self, d):
        return d.result("status")["inventory"]

    def wait_state(self, d, state, timeout=15):
        ok = wait_for(lambda: self.inventory(d)["state"] == state, timeout=timeout)
        self.assertTrue(ok, "inventory never %s: %s\n%s" % (state, self.inventory(d), d.log_text()[-3000:]))

    def wait_node(self, d, node_id, present=True, timeout=10):
        def seen():
            answer = d.call("nodes.get", {"node_id": node_id})
            return ("result" in answer) == present
        self.assertTrue(wait_for(seen, timeout=timeout, step=0.01),
                        "%s never %s on %s" % (node_id, "appeared" if present else "went", d.sock))

    def assertUnavailable(self, answer):
        self.assertIn("error", answer, answer)
        self.assertEqual(answer["error"]["code"], STORAGE_ERROR, answer)
        self.assertEqual(answer["error"]["data"]["reason"], "unavailable", answer)

    # --- propagation ------------------------------------------------------------

    def test_writes_through_either_host_reach_the_other(self):
        a, b = self.host(), self.host()
        added = a.result("nodes.add", tcp_node("n1", 7001))
        t0 = time.monotonic()
        self.wait_node(b, "n1")
        print("\npropagation a -> b: %.1f ms" % ((time.monotonic() - t0) * 1000))
        ep = b.result("endpoints.add", {"node_id": "n1", "protocol": "tcp", "address": "::1", "port": 7002})
        self.assertTrue(wait_for(lambda: len(a.result("endpoints.list", {"node_id": "n1"})["endpoints"]) == 2))
        # Ids are the server's: the same on every host.
        ids_a = sorted(e["id"] for e in a.result("endpoints.list", {"node_id": "n1"})["endpoints"])
        ids_b = sorted(e["id"] for e in b.result("endpoints.list", {"node_id": "n1"})["endpoints"])
        self.assertEqual(ids_a, ids_b)
        self.assertIn(ep["id"], ids_a)
        self.assertIn(added["endpoints"][0]["id"], ids_b)
        b.result("endpoints.remove", {"endpoint_id": added["endpoints"][0]["id"]})
        self.assertTrue(wait_for(lambda: [e["id"] for e in a.result("endpoints.list", {"node_id": "n1"})["endpoints"]]
                                 == [ep["id"]]))
        # Both mirrors at the same revision, which the server's log holds.
        self.assertTrue(wait_for(lambda: self.inventory(a)["revision"] == self.inventory(b)["revision"]))
        inv = self.inventory(a)
        self.assertEqual(inv["backend"], "postgres")
        self.assertGreaterEqual(inv["revision"], 3)
        self.assertEqual(inv["lag_s"], 0)
        self.assertEqual(sorted(inv["dsn"].split()), sorted(self.dsn.split()))  # normalized
        # What either host refuses, the server refused.
        self.assertEqual(b.call("nodes.add", tcp_node("n1", 7003))["error"]["code"], -32040)
        self.assertEqual(b.call("nodes.remove", {"node_id": "ghost"})["error"]["code"], NODE_NOT_FOUND)
        self.assertEqual(b.call("endpoints.add", {"node_id": "ghost", "protocol": "tcp", "address": "::1",
                                                  "port": 1})["error"]["code"], NODE_NOT_FOUND)

    def test_every_host_sends_inventory_changed_the_writer_included(self):
        a, b = self.host(), self.host()
        with a.client() as ca, b.client() as cb:
            ca.call("events.subscribe", {"types": ["inventory_changed"]})
            cb.call("events.subscribe", {"types": ["inventory_changed"]})
            added = a.result("nodes.add", {"id": "n1"})
            self.assertEqual(added["endpoints"], [])
            ea, eb = ca.next_event(), cb.next_event()
            for e in (ea, eb):
                self.assertEqual(e["type"], "inventory_changed")
                self.assertEqual(e["kind"], "node_added")
                self.assertEqual(e["node_id"], "n1")
            self.assertEqual(ea["revision"], eb["revision"])
            ep = b.result("endpoints.add", {"node_id": "n1", "protocol": "tcp", "address": "127.0.0.1", "port": 9})
            for c in (ca, cb):
                e = c.next_event()
                self.assertEqual((e["kind"], e["node_id"], e["endpoint_id"]), ("endpoint_added", "n1", ep["id"]))
                self.assertEqual(e["revision"], ea["revision"] + 1)

    def test_a_node_removed_through_one_host_loses_its_links_on_every_host(self):
        listener = Listener()
        try:
            a, b, c = self.host(), self.host(), self.host()
            a.result("nodes.add", tcp_node("n1", listener.port))
            for d in (b, c):
                self.wait_node(d, "n1")
            for d in (a, b, c):
                d.result("connect", {"node_id": "n1", "wait": True, "reconnect": True})
            self.assertTrue(wait_for(lambda: listener.accepted() == 3))
            with a.client() as watch:
                watch.call("events.subscribe", {"types": ["disconnected", "inventory_changed"]})
                c.result("nodes.remove", {"node_id": "n1"})
                types = {watch.next_event()["type"], watch.next_event()["type"]}
                self.assertEqual(types, {"disconnected", "inventory_changed"})
            for d in (a, b, c):
                self.wait_node(d, "n1", present=False)
                self.assertTrue(wait_for(lambda: d.result("connections.list", {"include_pending": True})
                                         ["connections"] == []), d.sock)
            # The peer saw every host's link end, and none came back.
            self.assertTrue(wait_for(lambda: listener.eofs == 3), "eofs: %d" % listener.eofs)
            time.sleep(0.3)
            self.assertEqual(listener.accepted(), 3)
        finally:
            listener.stop()

    def test_statistics_stay_on_each_host(self):
        listener = Listener()
        try:
            a, b = self.host(), self.host()
            a.result("nodes.add", tcp_node("n1", listener.port))
            self.wait_node(b, "n1")
            a.result("connect", {"node_id": "n1", "wait": True})
            a.result("disconnect", {"node_id": "n1"})
            self.assertTrue(wait_for(lambda: a.result("endpoints.list", {"node_id": "n1"})["endpoints"][0]
                                     ["success_count"] == 1))
            # Another change to the node: b's mirror applies it, and keeps its
            # own (empty) record of the endpoint; a keeps its success.
            b.result("endpoints.add", {"node_id": "n1", "protocol": "tcp", "address": "::1", "port": 9})
            self.assertTrue(wait_for(lambda: len(a.result("endpoints.list", {"node_id": "n1"})["endpoints"]) == 2))
            first_a = [e for e in a.result("endpoints.list", {"node_id": "n1"})["endpoints"]
                       if e["address"] == "127.0.0.1"][0]
            first_b = [e for e in b.result("endpoints.list", {"node_id": "n1"})["endpoints"]
                       if e["address"] == "127.0.0.1"][0]
            self.assertEqual(first_a["success_count"], 1)
            self.assertEqual(first_b["success_count"], 0)
            # Nothing of it is on the server.
            columns = {r[0] for r in self.server.query(
                "SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database() "
                "AND table_schema NOT IN ('pg_catalog', 'information_schema')", self.dbname)}
            for stat in ("success_count", "failure_count", "last_success_at", "rtt_ms", "consecutive_failures"):
                self.assertNotIn(stat, columns)
        finally:
            listener.stop()

    # --- the server away ----------------------------------------------------------

    def test_with_the_server_away_links_and_reads_carry_on_writes_fail_fast_then_catch_up(self):
        listener = Listener()
        try:
            a, b = self.host(), self.host()
            a.result("nodes.add", tcp_node("n1", listener.port))
            self.wait_node(b, "n1")
            b.result("connect", {"node_id": "n1", "wait": True})
            self.server.stop()
            for d in (a, b):
                self.assertTrue(wait_for(lambda: self.inventory(d)["state"] != "connected", timeout=10))
            # Reads, links and status carry on.
            self.assertEqual(b.result("nodes.get", {"node_id": "n1"})["connected"], True)
            self.assertEqual(len(b.result("connections.list")["connections"]), 1)
            self.assertEqual(listener.eofs, 0)
            # Writes are refused at once, never queued.
            with b.client() as c:
                slowest = 0.0
                for i in range(5):
                    t0 = time.monotonic()
                    self.assertUnavailable(c.call("nodes.add", tcp_node("late%d" % i, 9)))
                    slowest = max(slowest, time.monotonic() - t0)
                self.assertUnavailable(c.call("nodes.remove", {"node_id": "n1"}))
                self.assertUnavailable(c.call("endpoints.add", {"node_id": "n1", "protocol": "tcp",
                                                                "address": "::1", "port": 9}))
                self.assertUnavailable(c.call("endpoints.remove", {"endpoint_id": 1}))
            print("\nslowest refused write with the server away: %.1f ms" % (slowest * 1000))
            self.assertLess(slowest, 0.5)
            inv = self.inventory(b)
            self.assertIn(inv["state"], ("connecting", "unavailable"))
            self.assertIn("last_error", inv)
            time.sleep(1.1)
            self.assertGreaterEqual(self.inventory(b)["lag_s"], 1)
            # The metrics say the same as status.inventory.
            text = b.result("metrics")["text"]
            self.assertIn('connmgr_inventory_state{backend="postgres",state="connected"} 0\n', text)
            self.assertRegex(text, r"\nconnmgr_inventory_lag_seconds [1-9]")
            self.assertIn("\nconnmgr_inventory_revision %d\n" % inv["revision"], text)
            self.assertTrue(b.result("nodes.get", {"node_id": "n1"})["connected"])
            # Back: both reconnect; what one writes reaches the other.
            self.server.start()
            for d in (a, b):
                self.wait_state(d, "connected")
            a.result("nodes.add", {"id": "n2"})
            self.wait_node(b, "n2")
            self.assertEqual(self.inventory(b)["lag_s"], 0)
            text = b.result("metrics")["text"]
            self.assertIn('connmgr_inventory_state{backend="postgres",state="connected"} 1\n', text)
            self.assertIn("\nconnmgr_inventory_revision %d\n" % self.inventory(b)["revision"], text)
            for i in range(5):
                self.assertEqual(b.call("nodes.get", {"node_id": "late%d" % i})["error"]["code"], NODE_NOT_FOUND)
            self.assertEqual(listener.eofs, 0)
        finally:
            listener.stop()

    def test_a_host_that_was_down_catches_up_from_the_log(self):
        a, b = self.host(), self.host()
        a.result("nodes.add", {"id": "keep"})
        a.result("nodes.add", {"id": "gone"})
        self.wait_node(b, "gone")
        b.stop_ok()
        a.result("nodes.remove", {"node_id": "gone"})
        a.result("nodes.add", tcp_node("new", 9))
        self.restart(b)
        self.wait_state(b, "connected")
        self.wait_node(b, "new")
        self.wait_node(b, "gone", present=False)
        self.assertEqual(self.inventory(b)["revision"], self.inventory(a)["revision"])

    def test_a_daemon_started_while_the_server_is_down_serves_its_mirror(self):
        a = self.host()
        a.result("nodes.add", tcp_node("n1", 9))
        a.stop_ok()
        self.server.stop()
        self.restart(a)
        inv = self.inventory(a)
        self.assertIn(inv["state"], ("connecting", "unavailable"))
        self.assertEqual(a.result("nodes.get", {"node_id": "n1"})["id"], "n1")
        self.assertEqual(a.result("status")["counts"]["nodes"], 1)
        self.assertUnavailable(a.call("nodes.add", {"id": "n2"}))
        self.server.start()
        self.wait_state(a, "connected")
        a.result("nodes.add", {"id": "n2"})

    def test_a_host_behind_a_pruned_log_resyncs_in_full_and_keeps_its_statistics(self):
        listener = Listener()
        try:
            a, b = self.host(), self.host()
            a.result("nodes.add", tcp_node("keep", listener.port))
            a.result("nodes.add", tcp_node("gone", 9))
            self.wait_node(b, "gone")
            b.result("connect", {"node_id": "keep", "wait": True})
            b.result("disconnect", {"node_id": "keep"})
            b.stop_ok()
            a.result("nodes.remove", {"node_id": "gone"})
            a.result("nodes.add", tcp_node("new", 9))
            pruned = int(self.server.scalar("SELECT connmgr.prune_changes(now())", self.dbname))
            self.assertGreaterEqual(pruned, 4)
            self.restart(b)
            self.wait_state(b, "connected")
            self.wait_node(b, "new")
            self.wait_node(b, "gone", present=False)
            self.assertEqual(self.inventory(b)["revision"], self.inventory(a)["revision"])
            ep = b.result("endpoints.list", {"node_id": "keep"})["endpoints"][0]
            self.assertEqual(ep["success_count"], 1)
        finally:
            listener.stop()

    def test_a_hundred_thousand_nodes_resync_while_status_stays_fast(self):
        count = 100000
        self.host().stop_ok()  # the server's schema, made by a first host
        t0 = time.monotonic()
        fill_fleet(self.server, self.dbname, count)
        print("\n%d nodes and endpoints written on the server in %.1f s" % (count, time.monotonic() - t0))
        last = int(self.server.scalar("SELECT max(revision) FROM connmgr.changes", self.dbname))
        t0 = time.monotonic()
        d = self.host(connected=False)
        latencies = []
        with d.client() as c:
            while True:
                t = time.monotonic()
                st = c.call("status")["result"]
                latencies.append((time.monotonic() - t) * 1000)
                if st["inventory"]["revision"] == last and st["counts"]["nodes"] == count:
                    break
                self.assertLess(time.monotonic() - t0, 120, "resync unfinished: %s" % st["inventory"])
                time.sleep(0.001)
        took = time.monotonic() - t0
        idle = []
        with d.client() as c:
            for _ in range(300):
                t = time.monotonic()
                c.call("status")
                idle.append((time.monotonic() - t) * 1000)
                time.sleep(0.001)
        latencies.sort()
        idle.sort()
        p99 = latencies[int(0.99 * (len(latencies) - 1))]
        print("resync of %d nodes: %.2f s from exec (%.0f nodes/s); status p99 %.2f ms, max %.2f ms over %d calls; "
              "idle after it: p99 %.2f ms" % (count, took, count / took, p99, latencies[-1], len(latencies),
                                             idle[int(0.99 * (len(idle) - 1))]))
        self.assertGreater(len(latencies), 50)
        # The contract's figure (p99 < 5 ms) is the bench's (scripts/bench
        # --only fleet, docs/PERFORMANCE.md), on a quiet machine; here, on
        # shared cores, a generous bound that a loop held for a whole resync
        # (seconds) would still fail.
        self.assertLess(p99, 100.0)
        self.assertEqual(d.result("status")["counts"]["endpoints"], count)
        self.assertEqual(d.result("nodes.get", {"node_id": "f%d" % count})["endpoints"][0]["port"],
                         1 + count % 65535)

    def test_moving_a_local_inventory_in_keeps_ids_and_statistics(self):
        """The recipe of docs/operations.md ("Moving a local inventory into
        the shared one"), run as written."""
        listener = Listener()
        try:
            old = Daemon()
            self.hosts.append(old)
            old.result("nodes.add", {"id": "n1", "name": "first", "endpoints": [
                {"protocol": "tcp", "address": "127.0.0.1", "port": listener.port},
                {"protocol": "quic", "address": "::1", "port": 4433, "server_name": "n1.example"}]})
            old.result("nodes.add", {"id": "n2"})
            old.result("connect", {"node_id": "n1", "wait": True, "protocol": "tcp"})
            old.result("disconnect", {"node_id": "n1"})
            before = {e["id"]: e for e in old.result("endpoints.list", {"node_id": "n1"})["endpoints"]}
            old.stop_ok()
            other = self.host()  # creates the server's schema
            out = run(["bash", "-c", "set -euo pipefail\n" + migration_recipe()],
                      env=dict(os.environ, OLD=old.db, DSN=self.dsn, **self.server.env()), timeout=60)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            self.wait_node(other, "n2")
            old.args += ["--inventory=postgres", "--inventory-dsn=" + self.dsn]
            old.env.update(self.server.env())
            self.restart(old)
            self.wait_state(old, "connected")
            after = {e["id"]: e for e in old.result("endpoints.list", {"node_id": "n1"})["endpoints"]}
            self.assertEqual(sorted(after), sorted(before))
            tcp = [i for i, e in before.items() if e["protocol"] == "tcp"][0]
            self.assertEqual(after[tcp]["success_count"], 1)
            self.assertEqual(old.result("nodes.get", {"node_id": "n1"})["name"], "first")
            quic = [e for e in after.values() if e["protocol"] == "quic"][0]
            self.assertEqual(quic["server_name"], "n1.example")
            self.assertIsNone(quic["alpn"])
            # The server's ids go on after the copied ones.
            ep = other.result("endpoints.add", {"node_id": "n2", "protocol": "tcp", "address": "::1", "port": 9})
            self.assertGreater(ep["id"], max(before))
            self.wait_node(old, "n2")
        finally:
            listener.stop()

    def test_an_unreachable_server_at_first_start_leaves_an_empty_mirror_that_reads(self):
        self.server.stop()
        a = self.host(connected=False)
        self.assertEqual(a.result("nodes.list")["nodes"], [])
        self.assertUnavailable(a.call("nodes.add", {"id": "n1"}))
        self.assertEqual(self.inventory(a)["revision"], 0)


if __name__ == "__main__":
    unittest.main()
