"""The operator's view of choosing and dialing, against the real daemon: the
race and stable_link keys (accepted, refused, reloaded), status.network,
nodes.explain's shape and simple decisions, `connmgrctl explain`, and the
events of a race. Every answer and event is checked against proto/ by the
harness (daemon.py); the decisions' finer rules are tested in dialing_test.py."""
import json
import signal
import socket
import subprocess
import unittest

from daemon import (CONNMGRCTL, CONNMGRD, PROTO_DOC, Daemon, DaemonTest, Listener, closed_port, duration_ms,
                    wait_for)

CLASSES = ["tcp4", "tcp6", "udp4", "udp6"]


def run(args):
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


class SilentUdp:
    """A UDP port on 127.0.0.1 that takes every datagram and answers none: a
    QUIC handshake to it stays under way until its timeout."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


class KeysTest(unittest.TestCase):
    def test_the_keys_are_taken_from_flags_and_shown_in_status(self):
        with Daemon("--race=false", "--race-delay=300ms", "--race-delay-min=10ms", "--race-delay-max=1.5s",
                    "--stable-link=5m") as d:
            config = d.result("status")["config"]
            self.assertEqual(config["race"], "false")
            self.assertEqual(duration_ms(config["race_delay"]), 300)
            self.assertEqual(duration_ms(config["race_delay_min"]), 10)
            self.assertEqual(duration_ms(config["race_delay_max"]), 1500)
            self.assertEqual(duration_ms(config["stable_link"]), 300000)

    def test_the_defaults(self):
        with Daemon() as d:
            config = d.result("status")["config"]
            self.assertEqual(config["race"], "true")
            self.assertIsNone(config["race_delay"])
            self.assertEqual(duration_ms(config["race_delay_min"]), 50)
            self.assertEqual(duration_ms(config["race_delay_max"]), 2000)
            self.assertEqual(duration_ms(config["stable_link"]), 60000)

    def test_bad_values_and_combinations_stop_the_start_naming_the_key(self):
        cases = [(["--race=maybe"], "race: must be true or false, got 'maybe'"),
                 (["--race-delay=soon"], "race_delay: invalid duration 'soon'"),
                 (["--stable-link=0"], "stable_link: must be longer than zero"),
                 (["--race-delay-min=3s"], "race_delay_min: is longer than race_delay_max (3s > 2s)"),
                 (["--race-delay-max=10ms"], "race_delay_max: is shorter than race_delay_min (10ms < 50ms)")]
        for args, message in cases:
            with self.subTest(args=args):
                out = run([CONNMGRD, "--database=/nonexistent/db", "--socket=/nonexistent/sock"] + args)
                self.assertEqual(out.returncode, 2, out.stderr)
                self.assertIn(message, out.stderr)

    def test_sighup_changes_them_live_and_a_bad_combination_keeps_the_running_values(self):
        with Daemon(config_text="race = true\nstable_link = 60s\n") as d:
            with open(d.config_path, "w") as f:
                f.write("race = off\nrace_delay = 100ms\nrace_delay_min = 20ms\nrace_delay_max = 1s\n"
                        "stable_link = 2m\n")
            d.signal(signal.SIGHUP)
            self.assertTrue(wait_for(lambda: d.result("status")["config"]["race"] == "false"))
            config = d.result("status")["config"]
            self.assertEqual(duration_ms(config["race_delay"]), 100)
            self.assertEqual(duration_ms(config["race_delay_min"]), 20)
            self.assertEqual(duration_ms(config["race_delay_max"]), 1000)
            self.assertEqual(duration_ms(config["stable_link"]), 120000)
            self.assertNotIn("restart", d.log_text())  # every one of them changes live
            with open(d.config_path, "w") as f:
                f.write("race_delay_min = 5s\n")
            d.signal(signal.SIGHUP)
            self.assertTrue(wait_for(lambda: "race_delay_min: is longer than race_delay_max" in d.log_text()))
            self.assertEqual(duration_ms(d.result("status")["config"]["race_delay_min"]), 20)
            with open(d.config_path, "w") as f:
                f.write("race_delay =\n")  # back to the defaults; race_delay unset again
            d.signal(signal.SIGHUP)
            self.assertTrue(wait_for(lambda: d.result("status")["config"]["race"] == "true"))
            self.assertIsNone(d.result("status")["config"]["race_delay"])


class NetworkStatusTest(DaemonTest):
    def test_every_class_is_unknown_at_start(self):
        network = self.d.result("status")["network"]
        self.assertEqual(sorted(network["classes"]), CLASSES)
        self.assertIsInstance(network["generation"], int)
        for name in CLASSES:
            self.assertEqual(network["classes"][name], {"state": "unknown", "last_success_at": None}, name)

    def test_a_tcp4_success_makes_its_class_up(self):
        peer = Listener()
        try:
            self.d.result("nodes.add", {"id": "n1", "endpoints": [
                {"protocol": "tcp", "address": "127.0.0.1", "port": peer.port}]})
            self.d.result("connect", {"node_id": "n1"})
            tcp4 = self.d.result("status")["network"]["classes"]["tcp4"]
            self.assertEqual(tcp4["state"], "up")
            self.assertIsNotNone(tcp4["last_success_at"])
            self.assertEqual(self.d.result("status")["network"]["classes"]["tcp6"]["state"], "unknown")
        finally:
            peer.stop()


class ExplainTest(DaemonTest):
    def explain(self, node_id, **params):
        return self.d.result("nodes.explain", dict(params, node_id=node_id))

    def add_two_protocols(self, tcp_port, quic_port):
        """A node with a TCP and a QUIC endpoint; returns their ids."""
        node = self.d.result("nodes.add", {"id": "n1", "endpoints": [
            {"protocol": "tcp", "address": "127.0.0.1", "port": tcp_port},
            {"protocol": "quic", "address": "127.0.0.1", "port": quic_port}]})
        return {e["protocol"]: e["id"] for e in node["endpoints"]}

    def test_an_unknown_node_is_not_found(self):
        error = self.assertError(self.d.call("nodes.explain", {"node_id": "ghost"}), -32001)
        self.assertEqual(error["data"]["node_id"], "ghost")
        self.assertError(self.d.call("nodes.explain", {}), -32602)
        self.assertError(self.d.call("nodes.explain", {"node_id": "n", "endpoint_id": 1}), -32602)

    def test_no_endpoint(self):
        self.d.result("nodes.add", {"id": "bare"})
        x = self.explain("bare")
        self.assertEqual(x["decision"], "no_endpoint")
        self.assertEqual(x["candidates"], [])
        self.assertIsNone(x["link"])
        self.assertIsNone(x["backoff"])
        self.assertEqual(sorted(x["classes"]), CLASSES)

    def test_the_other_protocol_is_listed_ineligible_with_rank_null(self):
        ids = self.add_two_protocols(closed_port(), closed_port())
        x = self.explain("n1", protocol="tcp")
        self.assertEqual(x["node_id"], "n1")
        self.assertEqual(x["decision"], "dial")
        self.assertEqual(len(x["candidates"]), 2)
        by_id = {c["endpoint"]["id"]: c for c in x["candidates"]}
        tcp, quic = by_id[ids["tcp"]], by_id[ids["quic"]]
        self.assertEqual((tcp["rank"], tcp["eligible"]), (0, True))
        self.assertEqual((quic["rank"], quic["eligible"]), (None, False))
        self.assertIsNone(quic["race_offset_ms"])
        self.assertTrue(quic["why"], "an ineligible candidate says why")
        self.assertEqual(x["candidates"][0]["endpoint"]["id"], ids["tcp"], "eligible ones first")
        # Only QUIC asked: the other way round; nothing asked: both eligible.
        x = self.explain("n1", protocol="quic")
        self.assertEqual({c["endpoint"]["id"]: c["rank"] for c in x["candidates"]}, {ids["quic"]: 0, ids["tcp"]: None})
        x = self.explain("n1")
        self.assertEqual(sorted(c["rank"] for c in x["candidates"]), [0, 1])
        self.assertTrue(all(c["eligible"] for c in x["candidates"]))
        # A protocol no endpoint has: nothing to dial.
        x = self.explain("n1", protocol="sctp")
        self.assertEqual(x["decision"], "no_endpoint")
        self.assertEqual([c["rank"] for c in x["candidates"]], [None, None])

    def test_reuse_shows_the_link_and_recent_shows_the_dial(self):
        peer = Listener()
        try:
            ids = self.add_two_protocols(peer.port, closed_port())
            self.d.result("connect", {"node_id": "n1", "protocol": "tcp"})
            x = self.explain("n1")
            self.assertEqual(x["decision"], "reuse")
            self.assertEqual(x["link"]["state"], "active")
            self.assertEqual(x["link"]["endpoint_id"], ids["tcp"])
            self.assertEqual([(r["endpoint_id"], r["outcome"], r["reason"], r["charged"]) for r in x["recent"]],
                             [(ids["tcp"], "success", None, False)])
            self.assertEqual(x["classes"]["tcp4"]["state"], "up")
        finally:
            peer.stop()

    def test_join_while_an_attempt_is_under_way(self):
        silent = SilentUdp()
        try:
            self.d.result("nodes.add", {"id": "slow", "endpoints": [
                {"protocol": "quic", "address": "127.0.0.1", "port": silent.port}]})
            with self.d.client() as c:
                c.send("connect", {"node_id": "slow", "timeout_ms": 5000})
                self.assertTrue(wait_for(lambda: self.explain("slow")["decision"] == "join", timeout=5))
                x = self.explain("slow")
                self.assertEqual(x["link"]["state"], "connecting")
                self.assertEqual(self.d.result("disconnect", {"node_id": "slow"})["cancelled_attempts"], True)
                self.assertError(c.receive(), -32011)
        finally:
            silent.close()

    def test_wait_retry_shows_the_backoff(self):
        self.d.result("nodes.add", {"id": "down", "endpoints": [
            {"protocol": "tcp", "address": "127.0.0.1", "port": closed_port()}]})
        answer = self.d.call("connect", {"node_id": "down", "retry": {"max_attempts": 5, "initial_delay_ms": 30000}})
        self.assertTrue(self.assertError(answer, -32010)["data"]["retry_scheduled"])
        x = self.explain("down")
        self.assertEqual(x["decision"], "wait_retry")
        self.assertEqual(x["link"]["state"], "waiting_retry")
        self.assertEqual(x["backoff"]["delay_ms"], 30000)
        self.assertGreaterEqual(x["backoff"]["attempt"], 1)
        self.assertEqual(x["backoff"]["next_attempt_at"], x["link"]["next_attempt_at"])
        (attempt,) = x["recent"]
        self.assertEqual((attempt["outcome"], attempt["reason"], attempt["charged"]), ("failure", "refused", True))
        # The failure reaches the endpoint's record at the next flush (within 100 ms).
        self.assertTrue(wait_for(
            lambda: self.explain("down")["candidates"][0]["endpoint"]["consecutive_failures"] == 1))

    def test_endpoints_carry_the_new_statistics_everywhere(self):
        """rtt_ms, consecutive_failures and uncharged_failure_count in every
        answer that holds an Endpoint (proto/ requires them; their rules are
        dialing_test.py's)."""
        peer = Listener()
        try:
            added = self.d.result("nodes.add", {"id": "n1", "endpoints": [
                {"protocol": "tcp", "address": "127.0.0.1", "port": peer.port}]})["endpoints"]
            added += [self.d.result("endpoints.add", {"node_id": "n1", "protocol": "quic", "address": "::1",
                                                      "port": 4433})]
            self.d.result("connect", {"node_id": "n1", "protocol": "tcp"})
            seen = {"nodes.add": added,
                    "nodes.get": self.d.result("nodes.get", {"node_id": "n1"})["endpoints"],
                    "endpoints.list": self.d.result("endpoints.list", {"node_id": "n1"})["endpoints"],
                    "nodes.list": self.d.result("nodes.list", {"with_endpoints": True})["nodes"][0]["endpoints"],
                    "nodes.explain": [c["endpoint"] for c in self.explain("n1")["candidates"]]}
            for where, endpoints in seen.items():
                with self.subTest(where=where):
                    self.assertEqual(len(endpoints), 2)
                    for e in endpoints:
                        self.assertTrue(e["rtt_ms"] is None or e["rtt_ms"] >= 0, e)
                        self.assertIsInstance(e["consecutive_failures"], int)
                        self.assertIsInstance(e["uncharged_failure_count"], int)
            fresh = next(e for e in seen["nodes.add"] if e["protocol"] == "quic")
            self.assertEqual((fresh["rtt_ms"], fresh["consecutive_failures"], fresh["uncharged_failure_count"]),
                             (None, 0, 0))
            # The link's handshake RTT reaches the record at the next flush.
            self.assertTrue(wait_for(lambda: self.d.result("endpoints.list", {"node_id": "n1", "protocol": "tcp"})
                                     ["endpoints"][0]["rtt_ms"] is not None))
        finally:
            peer.stop()


class ExplainPermissionTest(unittest.TestCase):
    def test_a_caller_without_privilege_may_explain(self):
        with Daemon("--socket-mode=0666") as d:
            d.result("nodes.add", {"id": "n1"})
            req = '{"jsonrpc":"2.0","id":1,"method":"nodes.explain","params":{"node_id":"n1"}}'
            out = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c",
                       "printf '%%s\\n' '%s' | socat -t 5 - UNIX-CONNECT:%s" % (req, d.sock)])
            answer = json.loads(out.stdout)
            PROTO_DOC.validate_answer("nodes.explain", answer, {"node_id": "n1"})
            self.assertEqual(answer["result"]["decision"], "no_endpoint")


class RaceEventsTest(DaemonTest):
    def test_a_race_past_a_refusing_endpoint_names_each_dial_s_offset(self):
        peer = Listener()
        try:
            node = self.d.result("nodes.add", {"id": "n1", "endpoints": [
                {"protocol": "tcp", "address": "127.0.0.1", "port": closed_port()},
                {"protocol": "tcp", "address": "127.0.0.1", "port": peer.port}]})
            self.assertEqual(len(node["endpoints"]), 2)
            with self.d.client() as watcher:
                self.assertIn("result", watcher.call("events.subscribe", {"types": ["connecting", "connected"]}))
                self.d.result("connect", {"node_id": "n1", "wait": True})
                events = []
                while not any(e["type"] == "connected" for e in events):
                    events.append(watcher.next_event())  # validated against proto/ as it arrives
            connecting = [e for e in events if e["type"] == "connecting"]
            self.assertGreaterEqual(len(connecting), 1)
            self.assertTrue(all("race_offset_ms" in e and e["race_offset_ms"] >= 0 for e in connecting), events)
        finally:
            peer.stop()

    def test_a_subscriber_may_ask_for_network_changed(self):
        with self.d.client() as c:
            self.assertIn("result", c.call("events.subscribe", {"types": ["network_changed"]}))
        error = self.assertError(self.d.call("events.subscribe", {"types": ["network_change"]}), -32602)
        self.assertIn("network_changed", error["message"])


class CtlExplainTest(DaemonTest):
    def ctl(self, *args, check=None):
        out = subprocess.run([CONNMGRCTL, "--socket", self.d.sock] + list(args), capture_output=True, text=True,
                             timeout=30)
        if check is not None:
            self.assertEqual(out.returncode, check, out.stderr + out.stdout)
        for word in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            self.assertNotIn(word, out.stderr)
        return out

    def test_explain_for_people_and_for_scripts(self):
        port = closed_port()
        self.d.result("nodes.add", {"id": "web1", "endpoints": [
            {"protocol": "tcp", "address": "127.0.0.1", "port": port},
            {"protocol": "quic", "address": "::1", "port": 4433}]})
        out = self.ctl("explain", "web1", "--protocol", "tcp", check=0).stdout
        self.assertIn("node web1: dial", out)
        self.assertIn("link     none", out)
        self.assertIn("backoff  none", out)
        self.assertIn("tcp4 unknown", out)
        for column in ("RANK", "ELIGIBLE", "ADDRESS", "RACE", "WHY"):
            self.assertIn(column, out)
        self.assertIn("127.0.0.1:%d" % port, out)
        self.assertIn("[::1]:4433", out)
        quic_row = next(line for line in out.splitlines() if "[::1]:4433" in line)
        self.assertTrue(quic_row.startswith("-"), "an ineligible candidate has no rank: " + quic_row)
        self.assertIn("no", quic_row.split())
        self.assertIn("recent attempts, oldest first:\nnone", out)
        result = json.loads(self.ctl("--json", "explain", "web1", check=0).stdout)
        PROTO_DOC.check(result, PROTO_DOC.methods["nodes.explain"]["result"]["schema"], "connmgrctl --json explain")
        self.assertEqual(result["decision"], "dial")
        # A failed dial shows in the recent attempts.
        self.d.call("connect", {"node_id": "web1", "protocol": "tcp"})
        out = self.ctl("explain", "web1", check=0).stdout
        self.assertIn("refused", out)
        self.assertIn("failure", out)

    def test_an_unknown_node_and_a_missing_argument(self):
        out = self.ctl("explain", "ghost", check=1)
        self.assertIn("not found", out.stderr)
        out = self.ctl("explain", check=2)
        self.assertIn("explain NODE [--protocol P]", out.stderr)

    def test_status_shows_the_network(self):
        out = self.ctl("status", check=0).stdout
        self.assertRegex(out, r"network +\d+ change\(s\) seen; tcp4 unknown, tcp6 unknown, udp4 unknown, udp6 unknown")


if __name__ == "__main__":
    unittest.main(verbosity=2)
