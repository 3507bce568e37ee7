"""Faults the daemon must survive (issue 7): killed mid-write, a database locked
by another process, read-only and full disks, running out of descriptors,
peers that misbehave, clients that misbehave, and a stop with a thousand links.

Each test has one pass condition, stated in its docstring. The real connmgrd
runs as a process; tests that need root (mount namespaces, prlimit on another
uid) skip with the reason when they cannot run.
"""
import json
import os
import random
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import unittest

from daemon import Client, Daemon, Listener, closed_port, wait_for


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_own_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= n


def hold_write_lock(db, seconds):
    """Another process that takes the database's write lock (BEGIN EXCLUSIVE),
    prints "locked", holds it `seconds`, then commits and exits 0."""
    return subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3,sys,time\n"
         "db=sqlite3.connect(sys.argv[1],isolation_level=None)\n"
         "db.execute('BEGIN EXCLUSIVE')\n"
         "print('locked',flush=True)\n"
         "time.sleep(float(sys.argv[2]))\n"
         "db.execute('COMMIT')\n", db, str(seconds)],
        stdout=subprocess.PIPE, text=True)


def node(i, port, protocol="tcp"):
    return {"id": "n%d" % i, "endpoints": [{"protocol": protocol, "address": "127.0.0.1", "port": port}]}


def can_unshare_mounts():
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return r.returncode == 0


class Pipelined:
    """Many requests on one socket: a writer thread sends them all, the caller
    reads answers by id."""

    def __init__(self, sock_path):
        self.client = Client(sock_path, timeout=30)

    def send_all(self, lines):
        data = "".join(lines).encode()
        t = threading.Thread(target=self.client.send_raw, args=(data,), daemon=True)
        t.start()
        return t

    def answers(self, n, timeout=60):
        got = {}
        deadline = time.monotonic() + timeout
        while len(got) < n:
            msg = self.client.read_json(timeout=max(0.1, deadline - time.monotonic()))
            if msg is None:
                break
            if "id" in msg:
                got[msg["id"]] = msg
        return got


class KilledMidWriteTest(unittest.TestCase):
    def test_sigkill_during_adds_loses_no_acknowledged_node(self):
        """Pass: after SIGKILL in a burst of nodes.add, integrity_check is ok,
        every acknowledged node is in the file, and a restarted daemon serves them."""
        d = Daemon("--log-level=warning")
        try:
            acked = []
            stop = threading.Event()

            def burst():
                try:
                    with Client(d.sock, timeout=5) as c:
                        i = 0
                        while not stop.is_set():
                            a = c.call("nodes.add", node(i, 9))
                            if "result" in a:
                                acked.append("n%d" % i)
                            i += 1
                except (OSError, TimeoutError, AssertionError, json.JSONDecodeError):
                    pass  # the daemon died under us: that is the point

            t = threading.Thread(target=burst, daemon=True)
            t.start()
            wait_for(lambda: len(acked) >= 200, timeout=20)
            d.proc.kill()
            d.proc.wait(5)
            stop.set()
            t.join(10)
            self.assertGreaterEqual(len(acked), 200)

            db = sqlite3.connect(d.db)
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            present = {r[0] for r in db.execute("SELECT id FROM nodes")}
            db.close()
            missing = [n for n in acked if n not in present]
            self.assertEqual(missing, [], "acknowledged but lost")

            d.log.close()
            d.start()
            for n in (acked[0], acked[len(acked) // 2], acked[-1]):
                self.assertEqual(d.result("nodes.get", {"node_id": n})["id"], n)
            d.stop_ok()
        finally:
            d.cleanup()


class LockedDatabaseTest(unittest.TestCase):
    def test_a_3s_write_lock_held_elsewhere_delays_writes_but_loses_nothing(self):
        """Pass: while another process holds the write lock for 3 s, status
        answers stay fast, connects succeed, a nodes.add waits and succeeds;
        afterwards every success is counted in the file."""
        peer = Listener()
        with Daemon("--log-level=warning") as d:
            d.result("nodes.add", node(0, peer.port))
            holder = hold_write_lock(d.db, 3)
            try:
                self.assertEqual(holder.stdout.readline().strip(), "locked")
                locked_at = time.monotonic()
                slowest = 0.0
                cycles = 0
                add_result = {}

                def add_during_lock():
                    add_result["answer"] = d.call("nodes.add", node(1, peer.port), timeout=10)
                    add_result["at"] = time.monotonic()

                adder = threading.Thread(target=add_during_lock, daemon=True)
                adder.start()
                with d.client() as c:
                    while time.monotonic() - locked_at < 2.5:
                        t0 = time.monotonic()
                        c.call("status")
                        slowest = max(slowest, time.monotonic() - t0)
                        self.assertIn("result", c.call("connect", {"node_id": "n0", "wait": True}))
                        self.assertIn("result", c.call("disconnect", {"node_id": "n0"}))
                        cycles += 1
                adder.join(10)
                self.assertEqual(holder.wait(10), 0)
            finally:
                if holder.poll() is None:
                    holder.kill()
                    holder.wait(5)
                holder.stdout.close()
            self.assertLess(slowest, 0.5, "status held back by the lock")
            self.assertGreater(cycles, 5)
            self.assertIn("result", add_result["answer"], add_result["answer"])
            self.assertGreaterEqual(add_result["at"] - locked_at, 2.0, "the add did not wait for the lock")

            def counted():
                db = sqlite3.connect(d.db)
                try:
                    return db.execute("SELECT success_count FROM endpoints e JOIN nodes n "
                                      "ON n.id = e.node_id WHERE n.id='n0'").fetchone()[0]
                finally:
                    db.close()
            self.assertTrue(wait_for(lambda: counted() == cycles, timeout=10),
                            "success_count %s, connects %d" % (counted(), cycles))
            self.assertEqual(d.result("nodes.get", {"node_id": "n1"})["id"], "n1")
        peer.stop()

    def test_a_lock_held_past_lock_timeout_is_a_clear_storage_error(self):
        """Pass: with lock_timeout=500ms and a lock held 3 s, nodes.add answers
        -32020 reason locked, reads still answer, and the add works after."""
        with Daemon("--log-level=warning", "--lock-timeout=500ms") as d:
            holder = hold_write_lock(d.db, 3)
            try:
                self.assertEqual(holder.stdout.readline().strip(), "locked")
                a = d.call("nodes.add", node(0, 9))
                self.assertEqual(a["error"]["code"], -32020, a)
                self.assertEqual(a["error"]["data"]["reason"], "locked", a)
                self.assertIn("result", d.call("nodes.list"))
                self.assertEqual(holder.wait(10), 0)
            finally:
                if holder.poll() is None:
                    holder.kill()
                    holder.wait(5)
                holder.stdout.close()
            self.assertIn("result", d.call("nodes.add", node(0, 9)))


@unittest.skipUnless(can_unshare_mounts(), "needs root and mount namespaces (unshare -m)")
class DiskTest(unittest.TestCase):
    """The database lives on a small tmpfs that only the daemon's mount
    namespace sees; the test reaches it through /proc/PID/root."""

    def start_on_tmpfs(self, d, size):
        disk = os.path.join(d.dir, "disk")
        os.mkdir(disk)
        db = os.path.join(disk, "connmgr.db")
        d.args = [a if not a.startswith("--database=") else "--database=" + db for a in d.args]
        script = 'mount -t tmpfs -o size=%s tmpfs "$1" && ' % size
        script += 'shift; exec "$@"'
        d.args = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", disk] + d.args
        return disk

    def test_a_full_disk_is_a_clear_error_reads_go_on_and_writes_resume(self):
        """Pass: on a full tmpfs nodes.add answers -32020 naming the cause,
        nodes.list still answers, and once space returns the add succeeds."""
        d = Daemon("--log-level=warning", start=False)
        try:
            disk = self.start_on_tmpfs(d, "1m")
            d.start()
            d.result("nodes.add", node(0, 9))
            inside = "/proc/%d/root%s" % (d.proc.pid, disk)
            filler = os.path.join(inside, "filler")
            with open(filler, "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError:
                    pass
            errors = []
            for i in range(1, 3000):  # until the database's free pages are spent
                a = d.call("nodes.add", {"id": "big%d" % i, "name": "x" * 1000,
                                         "endpoints": [{"protocol": "tcp", "address": "127.0.0.1", "port": 9}]})
                if "error" in a:
                    errors.append(a["error"])
                    break
            self.assertTrue(errors, "the disk never filled")
            self.assertEqual(errors[0]["code"], -32020, errors[0])
            self.assertIn(errors[0]["data"]["reason"], ("full", "io"), errors[0])
            self.assertIn("result", d.call("nodes.list"))
            self.assertEqual(d.result("nodes.get", {"node_id": "n0"})["id"], "n0")
            os.unlink(filler)
            self.assertIn("result", d.call("nodes.add", node(1, 9)))
            self.assertIn("result", d.call("status"))
            d.stop_ok()
            # The file is gone with the namespace; what counts was checked above.
        finally:
            d.cleanup()

    def test_a_read_only_database_serves_reads_and_refuses_writes_clearly(self):
        """Pass: on a read-only mount the daemon starts, answers nodes.list,
        and nodes.add is -32020 reason read_only."""
        d = Daemon("--log-level=warning", start=False)
        try:
            disk = os.path.join(d.dir, "disk")
            os.mkdir(disk)
            db_path = os.path.join(disk, "connmgr.db")
            # Make the database with the daemon itself, then remount read-only.
            first = Daemon("--log-level=warning", "--database=" + db_path)
            first.result("nodes.add", node(0, 9))
            first.stop_ok()
            first.cleanup()
            d.args = [a if not a.startswith("--database=") else "--database=" + db_path for a in d.args]
            d.args = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                      'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"',
                      "sh", disk] + d.args
            d.start()
            self.assertEqual(d.result("nodes.get", {"node_id": "n0"})["id"], "n0")
            self.assertIn("result", d.call("nodes.list"))
            a = d.call("nodes.add", node(1, 9))
            self.assertEqual(a["error"]["code"], -32020, a)
            self.assertEqual(a["error"]["data"]["reason"], "read_only", a)
            d.stop_ok()
        finally:
            d.cleanup()


class DescriptorExhaustionTest(unittest.TestCase):
    def test_out_of_descriptors_no_busy_loop_and_service_resumes(self):
        """Pass: with RLIMIT_NOFILE 64 and 100 clients knocking, the daemon
        stays up, uses under 0.5 s of CPU in 2 s (no accept loop spinning), a
        connect made meanwhile is answered, and once clients leave a new one is served."""
        self.assertTrue(raise_own_nofile(512))
        peer = Listener()
        d = Daemon("--log-level=warning", start=False)
        d.args = ["prlimit", "--nofile=64:64", "--"] + d.args
        try:
            d.start()
            d.result("nodes.add", node(0, peer.port))
            first = d.client()  # accepted while descriptors are free
            self.assertIn("result", first.call("status"))
            knocking = []
            for _ in range(100):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.setblocking(False)
                try:
                    s.connect(d.sock)
                except (BlockingIOError, OSError):
                    pass
                knocking.append(s)
            time.sleep(0.5)
            before = cpu_seconds(d.proc.pid)
            time.sleep(2)
            used = cpu_seconds(d.proc.pid) - before
            self.assertLess(used, 0.5, "the daemon spins while out of descriptors")
            a = first.call("connect", {"node_id": "n0", "wait": True}, timeout=15)
            self.assertTrue("result" in a or a["error"]["code"] == -32010, a)
            if "error" in a:
                self.assertEqual(a["error"]["data"]["reason"], "EMFILE", a)
            for s in knocking:
                s.close()
            first.call("disconnect", {"node_id": "n0"})
            first.close()
            self.assertTrue(wait_for(lambda: fd_count(d.proc.pid) < 40, timeout=10),
                            "descriptors not given back: %d" % fd_count(d.proc.pid))
            with Client(d.sock, timeout=5) as c:
                self.assertIn("result", c.call("status", timeout=5))
                self.assertIn("result", c.call("connect", {"node_id": "n0", "wait": True}))
            self.assertIsNone(d.proc.poll())
            d.stop_ok(out_of_descriptors=True)
        finally:
            d.cleanup()
            peer.stop()


class MisbehavingPeersTest(unittest.TestCase):
    def test_reset_close_at_once_garbage_and_silence_leak_nothing(self):
        """Pass: a reset link reports reason reset, a peer that closes at once
        reports closed, a peer sending garbage keeps its link, a UDP port that
        answers QUIC with noise fails the connect, and the daemon's descriptor
        count is back where it started."""
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(64)
        port = srv.getsockname()[1]
        accepted = []
        stop = threading.Event()

        def accept_loop():
            srv.settimeout(0.1)
            while not stop.is_set():
                try:
                    c, _ = srv.accept()
                    accepted.append(c)
                except socket.timeout:
                    continue
                except OSError:
                    return
        t = threading.Thread(target=accept_loop, daemon=True)
        t.start()

        noise = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        noise.bind(("127.0.0.1", 0))
        noise_port = noise.getsockname()[1]

        def noise_loop():
            noise.settimeout(0.1)
            rnd = random.Random(7)
            while not stop.is_set():
                try:
                    _, addr = noise.recvfrom(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                noise.sendto(bytes(rnd.getrandbits(8) for _ in range(1200)), addr)
        u = threading.Thread(target=noise_loop, daemon=True)
        u.start()

        try:
            with Daemon("--log-level=warning") as d:
                d.result("nodes.add", node(0, port))
                d.result("nodes.add", node(1, noise_port, "quic"))
                baseline = fd_count(d.proc.pid)
                with d.client() as w:
                    w.call("events.subscribe", {"types": ["disconnected"]})

                    # Reset mid-link: RST (SO_LINGER 0) after the link is up.
                    self.assertIn("result", d.call("connect", {"node_id": "n0", "wait": True}))
                    wait_for(lambda: accepted, timeout=5)
                    c = accepted.pop()
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    c.close()
                    e = w.next_event(timeout=5)
                    self.assertEqual((e["node_id"], e["reason"]), ("n0", "reset"), e)

                    # Closed at once: FIN right after accept.
                    self.assertIn("result", d.call("connect", {"node_id": "n0", "wait": True}))
                    wait_for(lambda: accepted, timeout=5)
                    accepted.pop().close()
                    e = w.next_event(timeout=5)
                    self.assertEqual((e["node_id"], e["reason"]), ("n0", "closed"), e)

                    # Garbage: a megabyte of noise, then the link is still up.
                    self.assertIn("result", d.call("connect", {"node_id": "n0", "wait": True}))
                    wait_for(lambda: accepted, timeout=5)
                    g = accepted.pop()
                    g.sendall(bytes(random.Random(3).getrandbits(8) for _ in range(1 << 20)))
                    time.sleep(0.3)
                    links = d.result("connections.list")["connections"]
                    self.assertEqual([l["node_id"] for l in links], ["n0"])
                    self.assertIn("result", d.call("disconnect", {"node_id": "n0"}))
                    g.close()

                # QUIC noise: the handshake never completes; the attempt ends in time.
                a = d.call("connect", {"node_id": "n1", "wait": True, "timeout_ms": 1000}, timeout=10)
                self.assertEqual(a["error"]["code"], -32010, a)
                self.assertIn(a["error"]["data"]["reason"], ("timeout", "handshake"), a)
                self.assertIn("result", d.call("status"))
                self.assertTrue(wait_for(lambda: fd_count(d.proc.pid) <= baseline, timeout=5),
                                "descriptors: %d at start, %d now" % (baseline, fd_count(d.proc.pid)))
        finally:
            stop.set()
            t.join(2)
            u.join(2)
            srv.close()
            noise.close()
            for c in accepted:
                c.close()


class MisbehavingClientsTest(unittest.TestCase):
    def test_1024_clients_and_one_more(self):
        """Pass: 1024 clients are each served; the 1025th gets an error line
        and is closed; the first ones still answer."""
        self.assertTrue(raise_own_nofile(4096), "cannot raise our own descriptor limit")
        with Daemon("--log-level=warning") as d:
            clients = []
            try:
                for _ in range(1024):
                    clients.append(Client(d.sock, timeout=10))
                for c in clients:
                    c.send_raw(b'{"jsonrpc":"2.0","id":1,"method":"status"}\n')
                for c in clients:
                    self.assertIn("result", c.read_json())
                with Client(d.sock, timeout=10) as extra:
                    answer = extra.read_json()
                    self.assertIn("too many clients", answer["error"]["message"])
                    self.assertIsNone(extra.read_line(timeout=5), "the extra client was not closed")
                self.assertIn("result", clients[0].call("status"))
                self.assertIn("result", clients[-1].call("status"))
            finally:
                for c in clients:
                    c.close()

    def test_clients_that_leave_mid_request_do_not_disturb_the_others(self):
        """Pass: clients that vanish with a waiting connect or half a line
        leave the daemon answering and its descriptors where they were."""
        with Daemon("--log-level=warning") as d:
            black = closed_port()
            d.result("nodes.add", node(0, black))
            baseline = fd_count(d.proc.pid)
            for i in range(50):
                with Client(d.sock) as c:
                    if i % 2:
                        c.send_raw(b'{"jsonrpc":"2.0","id":1,"method":"connect","params":'
                                   b'{"node_id":"n0","wait":true,"retry":{"max_attempts":3,"initial_delay_ms":50}}}\n')
                    else:
                        c.send_raw(b'{"jsonrpc":"2.0","id":1,"method":"nodes.li')
            self.assertIn("result", d.call("status"))
            self.assertTrue(wait_for(lambda: fd_count(d.proc.pid) <= baseline, timeout=10),
                            "descriptors: %d at start, %d now" % (baseline, fd_count(d.proc.pid)))

    def test_10000_pipelined_requests_on_one_socket(self):
        """Pass: every one of 10,000 requests written at once is answered, once."""
        with Daemon("--log-level=warning") as d:
            p = Pipelined(d.sock)
            lines = ['{"jsonrpc":"2.0","id":%d,"method":"status"}\n' % i for i in range(10000)]
            w = p.send_all(lines)
            got = p.answers(10000, timeout=120)
            w.join(10)
            p.client.close()
            self.assertEqual(sorted(got), list(range(10000)))
            self.assertTrue(all("result" in a for a in got.values()))


class StopUnderLoadTest(unittest.TestCase):
    def test_sigterm_with_1000_links_and_pending_retries(self):
        """Pass: with 1,000 links up and 50 nodes waiting to retry, SIGTERM
        ends the daemon with status 0 within 5 s and every peer sees the close."""
        self.assertTrue(raise_own_nofile(4096), "cannot raise our own descriptor limit")
        peer = Listener()
        try:
            d = Daemon("--log-level=warning")
            try:
                black = closed_port()
                p = Pipelined(d.sock)
                adds = ['{"jsonrpc":"2.0","id":%d,"method":"nodes.add","params":%s}\n'
                        % (i, json.dumps(node(i, peer.port))) for i in range(1000)]
                adds += ['{"jsonrpc":"2.0","id":%d,"method":"nodes.add","params":%s}\n'
                         % (1000 + i, json.dumps({"id": "r%d" % i, "endpoints": [
                             {"protocol": "tcp", "address": "127.0.0.1", "port": black}]}))
                         for i in range(50)]
                p.send_all(adds).join(30)
                got = p.answers(1050)
                self.assertTrue(all("result" in a for a in got.values()))
                connects = ['{"jsonrpc":"2.0","id":%d,"method":"connect","params":{"node_id":"n%d"}}\n'
                            % (i, i) for i in range(1000)]
                connects += ['{"jsonrpc":"2.0","id":%d,"method":"connect","params":{"node_id":"r%d",'
                             '"reconnect":true,"retry":{"max_attempts":100,"initial_delay_ms":2000}}}\n'
                             % (1000 + i, i) for i in range(50)]
                p.send_all(connects).join(30)
                p.answers(1050)
                self.assertTrue(wait_for(lambda: peer.accepted() >= 1000, timeout=30),
                                "accepted %d" % peer.accepted())
                status = d.result("status")
                self.assertGreaterEqual(status["counts"]["active"], 1000, status)
                p.client.close()
                t0 = time.monotonic()
                os.kill(d.proc.pid, signal.SIGTERM)
                code = d.proc.wait(10)
                took = time.monotonic() - t0
                self.assertEqual(code, 0, d.log_text())
                self.assertLess(took, 5.0)
                self.assertTrue(wait_for(lambda: peer.eofs >= 1000, timeout=5),
                                "peers that saw the close: %d" % peer.eofs)
                d.stop_ok()
            finally:
                d.cleanup()
        finally:
            peer.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
