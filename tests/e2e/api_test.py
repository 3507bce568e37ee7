"""connmgrd's API end to end: every method, every error code, framing and
batches, events, against the real daemon over its socket."""
import json
import socket
import time
import unittest

from daemon import (PROTO_DOC, Client, DaemonTest, Listener, closed_port, duration_ms, wait_for)

PIN = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


class MethodsTest(DaemonTest):
    def test_status_describes_the_daemon(self):
        st = self.d.result("status")
        self.assertEqual(st["database"], self.d.db)
        self.assertEqual(st["socket"], self.d.sock)
        self.assertIn("tcp", st["connectors"])
        self.assertEqual(len(st["node_id"]), 32)
        self.assertEqual(st["counts"]["nodes"], 0)
        self.assertEqual(duration_ms(st["config"]["connection_timeout"]), 10000)

    def test_nodes_are_added_listed_paged_and_removed(self):
        for i in range(5):
            self.d.result("nodes.add", {"id": "n%d" % i, "name": "node %d" % i,
                                        "endpoints": [{"protocol": "tcp", "address": "127.0.0.1", "port": 1000 + i}]})
        page = self.d.result("nodes.list", {"limit": 2})
        self.assertEqual([n["id"] for n in page["nodes"]], ["n0", "n1"])
        self.assertEqual(page["next"], "n1")
        page = self.d.result("nodes.list", {"limit": 2, "after": page["next"], "with_endpoints": True})
        self.assertEqual([n["id"] for n in page["nodes"]], ["n2", "n3"])
        self.assertEqual(page["nodes"][0]["endpoints"][0]["port"], 1002)
        page = self.d.result("nodes.list", {"limit": 2, "after": page["next"]})
        self.assertEqual([n["id"] for n in page["nodes"]], ["n4"])
        self.assertIsNone(page["next"])
        node = self.d.result("nodes.get", {"node_id": "n3"})
        self.assertEqual(node["name"], "node 3")
        self.assertFalse(node["connected"])
        self.assertEqual(len(node["endpoints"]), 1)
        self.assertEqual(self.d.result("nodes.remove", {"node_id": "n3"}), {"node_id": "n3", "removed": True})
        self.assertError(self.d.call("nodes.get", {"node_id": "n3"}), -32001)

    def test_endpoints_are_added_ranked_and_removed(self):
        self.d.result("nodes.add", {"id": "n1"})
        a = self.d.result("endpoints.add", {"node_id": "n1", "protocol": "tcp", "address": "127.0.0.1", "port": 1})
        b = self.d.result("endpoints.add", {"node_id": "n1", "protocol": "quic", "address": "::1", "port": 2,
                                            "server_name": "peer.test", "alpn": "h3", "pin_sha256": PIN})
        self.assertEqual(b["pin_sha256"], PIN)
        eps = self.d.result("endpoints.list", {"node_id": "n1"})["endpoints"]
        self.assertEqual([e["id"] for e in eps], [a["id"], b["id"]])
        quic = self.d.result("endpoints.list", {"node_id": "n1", "protocol": "quic"})["endpoints"]
        self.assertEqual([e["id"] for e in quic], [b["id"]])
        self.assertEqual(self.d.result("endpoints.remove", {"endpoint_id": a["id"]}),
                         {"endpoint_id": a["id"], "removed": True})
        self.assertError(self.d.call("endpoints.remove", {"endpoint_id": a["id"]}), -32002)

    def test_duplicates_are_refused_with_already_exists(self):
        self.d.result("nodes.add", {"id": "n1", "endpoints": [{"protocol": "tcp", "address": "h", "port": 1}]})
        self.assertError(self.d.call("nodes.add", {"id": "n1"}), -32040)
        self.assertError(self.d.call("endpoints.add", {"node_id": "n1", "protocol": "tcp", "address": "h", "port": 1}), -32040)

    def test_unknown_nodes_and_endpoints_are_not_found(self):
        err = self.assertError(self.d.call("nodes.get", {"node_id": "ghost"}), -32001)
        self.assertEqual(err["data"]["node_id"], "ghost")
        self.assertError(self.d.call("endpoints.list", {"node_id": "ghost"}), -32001)
        self.assertError(self.d.call("endpoints.add", {"node_id": "ghost", "protocol": "tcp", "address": "h", "port": 1}), -32001)
        err = self.assertError(self.d.call("connect", {"endpoint_id": 999}), -32002)
        self.assertEqual(err["data"]["endpoint_id"], 999)
        self.assertError(self.d.call("connect", {"node_id": "ghost"}), -32001)

    def test_invalid_params_name_the_param(self):
        cases = [
            ("nodes.list", {"limit": 0}, "limit"),
            ("nodes.list", {"limit": 10001}, "limit"),
            ("nodes.list", {"bogus": 1}, "bogus"),
            ("nodes.get", {}, "node_id"),
            ("nodes.get", {"node_id": 5}, "node_id"),
            ("nodes.add", {"id": "i" * 257}, "id"),
            ("nodes.add", {"id": "x", "name": "n" * 1025}, "name"),
            ("nodes.add", {"id": "x", "endpoints": [{"protocol": "tcp", "address": "h", "port": 70000}]}, "endpoints[0].port"),
            ("nodes.add", {"id": "x", "endpoints": [{"protocol": "tcp", "address": "h", "port": 1, "pin_sha256": "short"}]}, "pin_sha256"),
            ("connect", {"node_id": "x", "retry": {"max_attempts": 0}}, "retry.max_attempts"),
            ("connect", {"node_id": "x", "retry": {"tries": 3}}, "retry.tries"),
            ("connect", {"node_id": "x", "timeout_ms": "5s"}, "timeout_ms"),
            ("connect", {"node_id": "x", "wait": "yes"}, "wait"),
            ("connect", {}, "exactly one"),
            ("connect", {"node_id": "x", "endpoint_id": 1}, "exactly one"),
            ("connect", {"endpoint_id": 1, "protocol": "tcp"}, "protocol"),
            ("events.subscribe", {"types": ["exploded"]}, "types"),
            ("status", {"verbose": True}, "verbose"),
            # An address is an IP literal or a host name; anything else is refused.
            ("nodes.add", {"id": "x", "endpoints": [{"protocol": "tcp", "address": "no such host", "port": 1}]},
             "endpoints[0].address"),
            ("nodes.add", {"id": "x", "endpoints": [{"protocol": "tcp", "address": "tcp://h:1", "port": 1}]},
             "endpoints[0].address"),
            ("endpoints.add", {"node_id": "x", "protocol": "tcp", "address": "a.1", "port": 1}, "address"),
            ("endpoints.add", {"node_id": "x", "protocol": "tcp", "address": "-bad.example", "port": 1}, "address"),
        ]
        for method, params, word in cases:
            with self.subTest(method=method, params=params):
                err = self.assertError(self.d.call(method, params), -32602)
                self.assertIn(word, err["message"])

    def test_addresses_that_are_literals_or_host_names_are_stored(self):
        endpoints = [{"protocol": "tcp", "address": a, "port": 1}
                     for a in ("example.com.", "2001:db8::1", "10.0.0.1", "a-b.example")]
        node = self.d.call("nodes.add", {"id": "addr-ok", "endpoints": endpoints})["result"]
        self.assertEqual(sorted(e["address"] for e in node["endpoints"]),
                         sorted(e["address"] for e in endpoints))
        err = self.assertError(self.d.call("nodes.add", {"id": "addr-bad", "endpoints": [
            {"protocol": "tcp", "address": "no such host", "port": 1}]}), -32602)
        self.assertEqual(err["data"]["param"], "endpoints[0].address")
        self.assertError(self.d.call("nodes.get", {"node_id": "addr-bad"}), -32001)  # nothing stored

    def test_invalid_params_data_names_the_param_and_unknown_methods_their_name(self):
        err = self.assertError(self.d.call("nodes.list", {"limit": 0}), -32602)
        self.assertEqual(err["data"]["param"], "limit")
        err = self.assertError(self.d.call("nodes.lst"), -32601)
        self.assertEqual(err["data"]["method"], "nodes.lst")

    def test_positional_params_are_refused(self):
        self.assertError(self.d.call("nodes.get", ["n1"]), -32602)


class ConnectTest(DaemonTest):
    def setUp(self):
        super().setUp()
        self.peer = Listener()

    def tearDown(self):
        self.peer.stop()
        super().tearDown()

    def test_connect_reuse_list_and_disconnect(self):
        self.d.result("nodes.add", {"id": "n1", "endpoints": [{"protocol": "tcp", "address": "127.0.0.1", "port": self.peer.port}]})
        link = self.d.result("connect", {"node_id": "n1"})
        self.assertEqual(link["state"], "active")
        self.assertFalse(link["reused"])
        self.assertEqual(link["port"], self.peer.port)
        self.assertTrue(link["local_address"].startswith("127.0.0.1:"))
        again = self.d.result("connect", {"node_id": "n1"})
        self.assertTrue(again["reused"])
        self.assertTrue(wait_for(lambda: self.peer.accepted() == 1))
        conns = self.d.result("connections.list")["connections"]
        self.assertEqual(len(conns), 1)
        self.assertIsNotNone(conns[0]["rtt_ms"])
        self.assertTrue(self.d.result("nodes.get", {"node_id": "n1"})["connected"])
        out = self.d.result("disconnect", {"node_id": "n1"})
        self.assertEqual(out, {"node_id": "n1", "was_connected": True, "cancelled_attempts": False})
        self.assertTrue(wait_for(lambda: self.peer.eofs == 1))
        self.assertEqual(self.d.result("disconnect", {"node_id": "n1"})["was_connected"], False)
        time.sleep(0.2)  # statistics are flushed every 100 ms
        ep = self.d.result("endpoints.list", {"node_id": "n1"})["endpoints"][0]
        self.assertEqual(ep["success_count"], 1)
        self.assertIsNotNone(ep["last_success_at"])

    def test_a_refused_connect_reports_its_reason_and_is_recorded(self):
        port = closed_port()
        self.d.result("nodes.add", {"id": "n1", "endpoints": [{"protocol": "tcp", "address": "127.0.0.1", "port": port}]})
        err = self.assertError(self.d.call("connect", {"node_id": "n1"}), -32010)
        self.assertEqual(err["data"]["reason"], "refused")
        self.assertEqual(err["data"]["attempts"], 1)
        self.assertFalse(err["data"]["retry_scheduled"])
        time.sleep(0.2)
        ep = self.d.result("endpoints.list", {"node_id": "n1"})["endpoints"][0]
        self.assertEqual(ep["failure_count"], 1)
        self.assertEqual(ep["last_error"], "refused")

    def test_retries_run_in_the_background_without_wait(self):
        self.d.result("nodes.add", {"id": "n1", "endpoints": [{"protocol": "tcp", "address": "127.0.0.1", "port": closed_port()}]})
        err = self.assertError(self.d.call("connect", {"node_id": "n1", "retry": {"max_attempts": 3, "initial_delay_ms": 5000}}), -32010)
        self.assertTrue(err["data"]["retry_scheduled"])
        self.assertIn("next_attempt_at", err["data"])
        pending = self.d.result("connections.list", {"include_pending": True})["connections"]
        self.assertEqual(pending[0]["state"], "waiting_retry")
        self.assertEqual(self.d.result("connections.list")["connections"], [])
        out = self.d.result("disconnect", {"node_id": "n1"})
        self.assertTrue(out["cancelled_attempts"])

    def test_wait_answers_when_attempts_are_spent(self):
        self.d.result("nodes.add", {"id": "n1", "endpoints": [{"protocol": "tcp", "address": "127.0.0.1", "port": closed_port()}]})
        err = self.assertError(self.d.call("connect", {"node_id": "n1", "wait": True,
                                                       "retry": {"max_attempts": 3, "initial_delay_ms": 20, "max_delay_ms": 40}}), -32010)
        self.assertEqual(err["data"]["attempts"], 3)
        self.assertFalse(err["data"]["retry_scheduled"])

    def test_wait_with_retry_answers_once_the_peer_comes_up(self):
        port = closed_port()
        self.d.result("nodes.add", {"id": "n1", "endpoints": [{"protocol": "tcp", "address": "127.0.0.1", "port": port}]})
        sub = self.d.client()
        sub.call("events.subscribe", {"types": ["connect_failed", "retry_scheduled", "connected"]})
        waiter = self.d.client()
        waiter.send("connect", {"node_id": "n1", "wait": True,
                                "retry": {"max_attempts": 50, "initial_delay_ms": 100, "exponential": False}})
        # The first attempt is refused and a retry is scheduled; then the peer appears.
        self.assertEqual(sub.next_event()["type"], "connect_failed")
        ev = sub.next_event()
        self.assertEqual(ev["type"], "retry_scheduled")
        self.assertEqual(ev["delay_ms"], 100)
        late = Listener(port)
        try:
            answer = waiter.receive(timeout=15)
            self.assertIn("result", answer, answer)
            self.assertEqual(answer["result"]["state"], "active")
            self.assertGreaterEqual(answer["result"]["attempts"], 2)
            self.assertTrue(wait_for(lambda: late.accepted() == 1))
        finally:
            waiter.close()
            sub.close()
            self.d.result("disconnect", {"node_id": "n1"})
            late.stop()

    def test_a_node_without_endpoints_and_an_unknown_protocol(self):
        self.d.result("nodes.add", {"id": "empty"})
        self.assertError(self.d.call("connect", {"node_id": "empty"}), -32003)
        self.d.result("nodes.add", {"id": "n1", "endpoints": [{"protocol": "sctp", "address": "127.0.0.1", "port": 9}]})
        err = self.assertError(self.d.call("connect", {"node_id": "n1", "protocol": "sctp"}), -32004)
        self.assertEqual(err["data"]["protocol"], "sctp")

    def test_disconnect_cancels_a_waiting_connect(self):
        self.d.result("nodes.add", {"id": "n1", "endpoints": [{"protocol": "tcp", "address": "127.0.0.1", "port": closed_port()}]})
        waiter = self.d.client()
        waiter.send("connect", {"node_id": "n1", "wait": True, "retry": {"max_attempts": 10, "initial_delay_ms": 1000}})
        time.sleep(0.3)
        self.assertTrue(self.d.result("disconnect", {"node_id": "n1"})["cancelled_attempts"])
        answer = waiter.read_json()
        PROTO_DOC.validate_answer("connect", answer)
        self.assertEqual(answer["error"]["code"], -32011)
        waiter.close()

    def test_events_arrive_in_order(self):
        sub = self.d.client()
        self.assertEqual(sub.call("events.subscribe")["result"], {"subscribed": True})
        self.d.result("nodes.add", {"id": "n1", "endpoints": [{"protocol": "tcp", "address": "127.0.0.1", "port": self.peer.port}]})
        self.d.result("connect", {"node_id": "n1"})
        self.d.result("disconnect", {"node_id": "n1"})
        types = [sub.next_event()["type"] for _ in range(4)]
        self.assertEqual(types, ["node_added", "connecting", "connected", "disconnected"])
        self.assertEqual(sub.call("events.unsubscribe")["result"], {"subscribed": False})
        sub.close()

    def test_events_can_be_filtered_by_type(self):
        sub = self.d.client()
        sub.call("events.subscribe", {"types": ["connected"]})
        self.d.result("nodes.add", {"id": "n1", "endpoints": [{"protocol": "tcp", "address": "127.0.0.1", "port": self.peer.port}]})
        self.d.result("connect", {"node_id": "n1"})
        ev = sub.next_event()
        self.assertEqual(ev["type"], "connected")
        self.assertEqual(ev["node_id"], "n1")
        sub.close()

    def test_a_dropped_supervised_link_comes_back(self):
        self.d.result("nodes.add", {"id": "n1", "endpoints": [{"protocol": "tcp", "address": "127.0.0.1", "port": self.peer.port}]})
        self.d.result("connect", {"node_id": "n1", "reconnect": True, "retry": {"initial_delay_ms": 50}})
        self.assertTrue(wait_for(lambda: self.peer.accepted() == 1))
        time.sleep(0.1)
        self.peer.close_all()
        self.assertTrue(wait_for(lambda: self.peer.accepted() == 2, timeout=5))
        self.assertTrue(wait_for(lambda: self.d.result("connections.list")["connections"] != [], timeout=5))

    def test_a_slow_connect_does_not_hold_back_a_status(self):
        self.d.result("nodes.add", {"id": "n1", "endpoints": [{"protocol": "tcp", "address": "127.0.0.1", "port": closed_port()}]})
        c = self.d.client()
        slow = c.send("connect", {"node_id": "n1", "wait": True, "retry": {"max_attempts": 3, "initial_delay_ms": 300}})
        fast = c.send("status")
        first = c.read_json()
        second = c.read_json(timeout=10)
        self.assertEqual(first["id"], fast)
        self.assertEqual(second["id"], slow)
        c.close()


class FramingTest(DaemonTest):
    def raw(self, data, lines=1, shut=True, timeout=10.0):
        c = Client(self.d.sock)
        c.send_raw(data)
        if shut:
            c.sock.shutdown(socket.SHUT_WR)
        out = []
        for _ in range(lines):
            line = c.read_line(timeout)
            if line is None:
                break
            out.append(json.loads(line))
        c.close()
        return out

    def test_ids_are_echoed_byte_for_byte(self):
        c = Client(self.d.sock)
        for raw_id in [b"12345678901234567890123456789", b"1.50", b"-7", b'"x"', b"null", b"0.1e3",
                       b"-123456789012345678901234567890.000"]:
            c.send_raw(b'{"jsonrpc":"2.0","method":"status","id":' + raw_id + b"}\n")
            line = c.read_line()
            self.assertTrue(line.startswith(b'{"jsonrpc":"2.0","id":' + raw_id + b","), line)
        # Strings come back equal as JSON values (escapes may be spelled anew).
        c.send_raw(b'{"jsonrpc":"2.0","method":"status","id":"x\\u00e9"}\n')
        self.assertEqual(c.read_json()["id"], "x\u00e9")
        c.close()

    def test_several_requests_in_one_write_and_one_request_in_many(self):
        c = Client(self.d.sock)
        c.send_raw(b'{"jsonrpc":"2.0","id":1,"method":"status"}\n{"jsonrpc":"2.0","id":2,"method":"status"}\r\n')
        ids = {c.read_json()["id"], c.read_json()["id"]}
        self.assertEqual(ids, {1, 2})
        for b in b'{"jsonrpc":"2.0","id":3,"method":"status"}\n':
            c.send_raw(bytes([b]))
        self.assertEqual(c.read_json()["id"], 3)
        c.close()

    def test_a_last_line_without_newline_is_served_at_eof(self):
        out = self.raw(b'{"jsonrpc":"2.0","id":9,"method":"status"}')
        self.assertEqual(out[0]["id"], 9)

    def test_notifications_get_no_answer(self):
        c = Client(self.d.sock)
        c.send_raw(b'{"jsonrpc":"2.0","method":"status"}\n{"jsonrpc":"2.0","id":"after","method":"status"}\n')
        self.assertEqual(c.read_json()["id"], "after")
        c.close()

    def test_parse_errors_and_invalid_requests_keep_the_connection(self):
        c = Client(self.d.sock)
        for bad, code in [(b"{nope", -32700), (b'{"jsonrpc":"2.0","id":1,"method":"status"', -32700),
                          (b'"\xff\xfe"', -32700), (b"[]", -32600), (b"42", -32600),
                          (b'{"jsonrpc":"1.0","id":1,"method":"status"}', -32600),
                          (b'{"jsonrpc":"2.0","id":1,"method":7}', -32600),
                          (b'{"jsonrpc":"2.0","id":{},"method":"status"}', -32600),
                          (b'{"jsonrpc":"2.0","id":1,"method":"status","params":3}', -32600),
                          (b'{"jsonrpc":"2.0","id":1,"method":"no.such"}', -32601),
                          (b'{"jsonrpc":"2.0","id":1,"method":"status","x\x00y":1}', -32700),
                          (b'{"jsonrpc":"2.0","id":1,"method":"status","extra":1}', -32600)]:
            with self.subTest(bad=bad):
                c.send_raw(bad + b"\n")
                answer = c.read_json()
                PROTO_DOC.validate_error("status", answer["error"])
                self.assertEqual(answer["error"]["code"], code, answer)
        c.send_raw(b'{"jsonrpc":"2.0","id":"still","method":"status"}\n')
        self.assertEqual(c.read_json()["id"], "still")
        c.close()

    def test_batches(self):
        out = self.raw(b'[{"jsonrpc":"2.0","id":1,"method":"status"},{"jsonrpc":"2.0","method":"status"},'
                       b'1,{"jsonrpc":"2.0","id":2,"method":"nope"}]')
        batch = out[0]
        self.assertIsInstance(batch, list)
        self.assertEqual(len(batch), 3)
        self.assertEqual(batch[0]["id"], 1)
        self.assertIn("result", batch[0])
        self.assertEqual(batch[1]["error"]["code"], -32600)
        self.assertEqual(batch[2]["error"]["code"], -32601)
        # A batch of notifications gets no line; the next request still does.
        out = self.raw(b'[{"jsonrpc":"2.0","method":"status"},{"jsonrpc":"2.0","method":"status"}]\n'
                       b'{"jsonrpc":"2.0","id":"next","method":"status"}\n')
        self.assertEqual(out[0]["id"], "next")

    def test_deep_nesting_is_an_invalid_request(self):
        deep = b"[" * 65 + b"]" * 65
        self.assertEqual(self.raw(deep)[0]["error"]["code"], -32600)
        ok = b'{"jsonrpc":"2.0","id":1,"method":"status","params":{}}'
        self.assertIn("result", self.raw(ok)[0])


class LimitsTest(DaemonTest):
    daemon_args = ("--max-request-bytes=4096", "--max-clients=3", "--partial-request-timeout=500ms",
                   "--max-output-bytes=65536")

    def test_an_over_long_line_is_refused_and_the_connection_closed(self):
        c = Client(self.d.sock)
        c.send_raw(b'{"jsonrpc":"2.0","id":1,"method":"status","params":{"x":"' + b"a" * 8000 + b'"}}\n')
        answer = c.read_json()
        self.assertEqual(answer["error"]["code"], -32600)
        self.assertIsNone(c.read_line())
        c.close()
        self.assertIn("result", self.d.call("status"))

    def test_one_client_over_the_limit_is_told_and_closed(self):
        # Earlier connections may still be closing: wait them out on a
        # connection that stays, so that none of ours is counted twice.
        probe = Client(self.d.sock)
        self.assertTrue(wait_for(lambda: probe.call("status")["result"]["counts"]["clients"] == 1))
        held = [probe]
        for _ in range(2):
            held.append(Client(self.d.sock))
            held[-1].call("status")
        extra = Client(self.d.sock)
        answer = extra.read_json()
        self.assertIn("too many clients", answer["error"]["message"])
        self.assertIsNone(extra.read_line())
        extra.close()
        for h in held:
            h.close()

        # Until the daemon has seen those closes, a new client may still be
        # the one too many (told so on a line with id null): ask again.
        def served():
            try:
                return "result" in self.d.call("status")
            except AssertionError:
                return False
        self.assertTrue(wait_for(served))

    def test_a_stalled_partial_line_is_cut(self):
        c = Client(self.d.sock)
        c.send_raw(b'{"jsonrpc":"2.0","id":1,')
        answer = c.read_json(timeout=5)
        self.assertEqual(answer["error"]["code"], -32600)
        self.assertIsNone(c.read_line(timeout=5))
        c.close()

    def test_a_client_that_never_reads_is_cut_at_the_output_limit(self):
        c = Client(self.d.sock)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        req = b'{"jsonrpc":"2.0","id":1,"method":"status"}\n' * 200
        cut = False
        for _ in range(200):
            try:
                c.sock.sendall(req)
            except OSError:
                cut = True
                break
        if not cut:
            # Drain: the daemon must have closed us once the queue passed the limit.
            total = 0
            try:
                while True:
                    chunk = c.sock.recv(65536)
                    if not chunk:
                        cut = True
                        break
                    total += len(chunk)
            except OSError:
                cut = True
        self.assertTrue(cut)
        c.close()
        self.assertIn("result", self.d.call("status"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
