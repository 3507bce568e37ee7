"""proto/connmgr.openrpc.json on its own: an OpenRPC 1.2 document naming every
method and error code of the API (docs/api.md), whose schemas are valid, whose references
resolve, whose examples follow its own schemas, and whose per-method params
schema agrees with the params list. Needs no daemon."""
import unittest

import jsonschema

from daemon import PROTO, PROTO_DOC

API_METHODS = ["nodes.list", "nodes.get", "nodes.explain", "endpoints.list", "connect", "disconnect",
               "connections.list", "nodes.add", "nodes.remove", "endpoints.add",
               "endpoints.remove", "events.subscribe", "events.unsubscribe", "status", "metrics",
               "streams.open", "streams.list"]
API_CODES = [-32700, -32600, -32601, -32602, -32603, -32001, -32002, -32003, -32004,
             -32010, -32011, -32012, -32020, -32030, -32040]
STATE_CHANGING = {"connect", "disconnect", "nodes.add", "nodes.remove", "endpoints.add", "endpoints.remove",
                  "streams.open"}

DOC = PROTO_DOC.doc
SCHEMAS = DOC["components"]["schemas"]
ERRORS = DOC["components"]["errors"]


def refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def resolve(ref):
    assert ref.startswith("#/"), ref
    node = DOC
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def valid(method, params):
    return PROTO_DOC.params_valid(method, params)


class DocumentTest(unittest.TestCase):
    def test_it_is_openrpc_1_2_with_info(self):
        self.assertRegex(DOC["openrpc"], r"^1\.2\.\d+$")
        self.assertTrue(DOC["info"]["title"])
        self.assertTrue(DOC["info"]["version"])

    def test_it_keeps_to_openrpc_object_fields(self):
        # OpenRPC 1.2's objects are closed except for x- extensions; error
        # objects are closed without exception (hence x-error-data at the top).
        def keys_ok(obj, allowed, what, extensions=True):
            extra = {k for k in obj if k not in allowed and not (extensions and k.startswith("x-"))}
            self.assertEqual(extra, set(), what)
        keys_ok(DOC, {"openrpc", "info", "servers", "methods", "components", "externalDocs"}, "document")
        keys_ok(DOC["info"], {"title", "description", "termsOfService", "version", "contact", "license"}, "info")
        method_keys = {"name", "description", "summary", "servers", "tags", "paramStructure", "params", "result",
                       "errors", "links", "examples", "deprecated", "externalDocs"}
        descriptor_keys = {"name", "description", "summary", "schema", "required", "deprecated"}
        for m in DOC["methods"]:
            keys_ok(m, method_keys, m["name"])
            self.assertIn(m["paramStructure"], ("by-position", "by-name", "either"))
            for p in m["params"] + [m["result"]]:
                keys_ok(p, descriptor_keys, m["name"] + " " + p["name"])
            for e in m["errors"]:
                self.assertEqual(set(e), {"$ref"}, m["name"])
        for name, e in ERRORS.items():
            keys_ok(e, {"code", "message", "data"}, name, extensions=False)
            self.assertIsInstance(e["code"], int)
        keys_ok(DOC["components"], {"schemas", "links", "errors", "examples", "examplePairings",
                                    "contentDescriptors", "tags"}, "components", extensions=False)

    def test_every_method_of_the_api_is_there_once(self):
        names = [m["name"] for m in DOC["methods"]]
        self.assertEqual(sorted(names), sorted(API_METHODS))

    def test_every_error_code_of_the_api_is_there_once(self):
        codes = [e["code"] for e in ERRORS.values()]
        self.assertEqual(sorted(codes), sorted(API_CODES))
        for e in ERRORS.values():
            self.assertTrue(e["message"])

    def test_every_reference_resolves(self):
        for ref in refs(DOC):
            with self.subTest(ref=ref):
                resolve(ref)

    def test_every_schema_is_a_valid_draft7_schema(self):
        for name, schema in SCHEMAS.items():
            with self.subTest(schema=name):
                jsonschema.Draft7Validator.check_schema(schema)
        for m in DOC["methods"] + DOC["x-notifications"]:
            for p in m["params"]:
                jsonschema.Draft7Validator.check_schema(p["schema"])
            jsonschema.Draft7Validator.check_schema(m["x-params-schema"])
            if "result" in m:
                jsonschema.Draft7Validator.check_schema(m["result"]["schema"])
        for schema in DOC["x-error-data"].values():
            jsonschema.Draft7Validator.check_schema(schema)

    def test_error_examples_follow_their_data_schema(self):
        for name, e in ERRORS.items():
            if "data" in e:
                with self.subTest(error=name):
                    self.assertIn(name, DOC["x-error-data"])
                    PROTO_DOC.check(e["data"], DOC["x-error-data"][name], name + " example")

    def test_every_server_error_has_a_data_schema(self):
        for name, e in ERRORS.items():
            if e["code"] > -32100:
                self.assertIn(name, DOC["x-error-data"])
        self.assertLessEqual(set(DOC["x-error-data"]), set(ERRORS))

    def test_server_errors_name_what_they_are_about(self):
        def data(code):
            schema = PROTO_DOC.data_schemas[code]
            return resolve(schema["$ref"]) if "$ref" in schema else schema
        cf = data(-32010)
        self.assertEqual(set(cf["required"]), {"endpoint_id", "attempts", "reason", "retry_scheduled"})
        self.assertIn("next_attempt_at", cf["properties"])
        self.assertEqual(data(-32001)["required"], ["node_id"])
        self.assertEqual(data(-32002)["required"], ["endpoint_id"])
        self.assertEqual(data(-32020)["required"], ["reason"])

    def test_methods_take_params_by_name_and_list_their_errors(self):
        for m in DOC["methods"]:
            with self.subTest(method=m["name"]):
                self.assertEqual(m["paramStructure"], "by-name")
                self.assertEqual(m["x-changes-state"], m["name"] in STATE_CHANGING)
                for ref in m["errors"]:
                    self.assertTrue(ref["$ref"].startswith("#/components/errors/"))

    def test_the_params_schema_agrees_with_the_params_list(self):
        for m in DOC["methods"]:
            with self.subTest(method=m["name"]):
                s = m["x-params-schema"]
                self.assertIs(s["additionalProperties"], False)
                self.assertEqual(list(s["properties"]), [p["name"] for p in m["params"]])
                for p in m["params"]:
                    self.assertEqual(s["properties"][p["name"]], p["schema"])
                self.assertEqual(s.get("required", []), [p["name"] for p in m["params"] if p.get("required")])

    def test_the_event_notification_is_described(self):
        (n,) = DOC["x-notifications"]
        self.assertEqual(n["name"], "event")
        names = [p["name"] for p in n["params"]]
        self.assertEqual(set(names), set(SCHEMAS["Event"]["properties"]))
        self.assertIn("x-notifications", DOC["info"]["description"])


class SchemaBehaviourTest(unittest.TestCase):
    """The schemas accept what the API allows and refuse what it does not."""

    def test_param_ranges(self):
        self.assertTrue(valid("nodes.list", {"limit": 1}))
        self.assertTrue(valid("nodes.list", {"limit": 10000, "after": "n1", "with_endpoints": True}))
        self.assertFalse(valid("nodes.list", {"limit": 0}))
        self.assertFalse(valid("nodes.list", {"limit": 10001}))
        self.assertFalse(valid("nodes.list", {"limit": 1.5}))
        self.assertFalse(valid("nodes.list", {"bogus": 1}))
        spec = {"protocol": "tcp", "address": "::1", "port": 1}
        self.assertTrue(valid("endpoints.add", dict(spec, node_id="n")))
        self.assertTrue(valid("endpoints.add", dict(spec, node_id="n", port=65535)))
        self.assertFalse(valid("endpoints.add", dict(spec, node_id="n", port=0)))
        self.assertFalse(valid("endpoints.add", dict(spec, node_id="n", port=65536)))
        self.assertFalse(valid("nodes.add", {"id": "n", "endpoints": [dict(spec, port=70000)]}))
        self.assertFalse(valid("nodes.add", {"id": "n", "endpoints": [dict(spec, extra=1)]}))
        self.assertFalse(valid("endpoints.add", dict(spec, node_id="n", pin_sha256="short")))
        self.assertTrue(valid("endpoints.add", dict(spec, node_id="n",
                                                    pin_sha256="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")))

    def test_connect_takes_exactly_one_target_and_a_closed_retry(self):
        self.assertTrue(valid("connect", {"node_id": "n", "protocol": "tcp", "timeout_ms": 1, "wait": True,
                                          "reconnect": False, "retry": {"max_attempts": 1, "initial_delay_ms": 0,
                                                                        "max_delay_ms": 0, "exponential": False}}))
        self.assertTrue(valid("connect", {"endpoint_id": 3}))
        self.assertTrue(valid("connect", {"node_id": "n", "retry": {}}))
        self.assertFalse(valid("connect", {}))
        self.assertFalse(valid("connect", {"node_id": "n", "endpoint_id": 3}))
        self.assertFalse(valid("connect", {"endpoint_id": 3, "protocol": "tcp"}))
        self.assertFalse(valid("connect", {"node_id": "n", "timeout_ms": 0}))
        self.assertFalse(valid("connect", {"node_id": "n", "retry": {"max_attempts": 0}}))
        self.assertFalse(valid("connect", {"node_id": "n", "retry": {"initial_delay_ms": -1}}))
        self.assertFalse(valid("connect", {"node_id": "n", "retry": {"max_delay_ms": -1}}))
        self.assertFalse(valid("connect", {"node_id": "n", "retry": {"exponential": "yes"}}))
        self.assertFalse(valid("connect", {"node_id": "n", "retry": {"tries": 3}}))

    def test_methods_without_params_refuse_any(self):
        for m in ("status", "events.unsubscribe"):
            self.assertTrue(valid(m, {}))
            self.assertFalse(valid(m, {"verbose": True}))

    def test_times_are_rfc3339_utc_with_milliseconds(self):
        t = SCHEMAS["Time"]
        self.assertTrue(PROTO_DOC.is_valid("2026-11-24T09:30:00.123Z", t))
        for bad in ["2026-11-24T09:30:00Z", "2026-11-24T09:30:00.123+01:00", "2026-11-24 09:30:00.123Z", 1764000000000]:
            self.assertFalse(PROTO_DOC.is_valid(bad, t), bad)

    def test_a_connection_carries_next_attempt_at_only_while_waiting(self):
        c = {"node_id": "n", "endpoint_id": 1, "protocol": "tcp", "address": "127.0.0.1", "port": 80,
             "local_address": "127.0.0.1:4000", "state": "active", "since": "2026-11-24T09:30:00.123Z",
             "attempts": 1, "rtt_ms": 0.05, "reconnect": False, "streams": 0, "bytes_in": 0, "bytes_out": 0}
        s = SCHEMAS["Connection"]
        self.assertTrue(PROTO_DOC.is_valid(c, s))
        self.assertTrue(PROTO_DOC.is_valid(dict(c, rtt_ms=None), s))
        self.assertFalse(PROTO_DOC.is_valid(dict(c, state="broken"), s))
        self.assertFalse(PROTO_DOC.is_valid(dict(c, next_attempt_at="2026-11-24T09:30:01.000Z"), s))
        waiting = dict(c, state="waiting_retry", local_address=None, rtt_ms=None)
        self.assertFalse(PROTO_DOC.is_valid(waiting, s))
        self.assertTrue(PROTO_DOC.is_valid(dict(waiting, next_attempt_at="2026-11-24T09:30:01.000Z"), s))
        result = DOC["methods"][[m["name"] for m in DOC["methods"]].index("connect")]["result"]["schema"]
        self.assertFalse(PROTO_DOC.is_valid(c, result))  # reused is required there
        self.assertTrue(PROTO_DOC.is_valid(dict(c, reused=True), result))

    def test_events_carry_the_fields_of_their_type(self):
        base = {"at": "2026-11-24T09:30:00.123Z", "node_id": "n"}
        line = {"jsonrpc": "2.0", "method": "event"}
        ok = [dict(base, type="node_added"),
              dict(base, type="connected", endpoint_id=1, protocol="tcp"),
              dict(base, type="connect_failed", endpoint_id=1, protocol="tcp", reason="refused", attempt=1),
              dict(base, type="connect_failed", endpoint_id=1, protocol="tcp", reason="EACCES", attempt=2),
              dict(base, type="retry_scheduled", attempt=1, delay_ms=100, next_attempt_at="2026-11-24T09:30:00.223Z"),
              dict(base, type="disconnected", reason="requested")]
        bad = [dict(base, type="exploded"),
               dict(base, type="connect_failed", endpoint_id=1, protocol="tcp", reason="it broke", attempt=1),
               dict(base, type="connect_failed", endpoint_id=1, protocol="tcp"),
               dict(base, type="retry_scheduled", attempt=1),
               dict(base, type="disconnected", reason="refused"),
               dict(base, type="node_added", extra=1)]
        for ev in ok:
            self.assertTrue(PROTO_DOC.is_valid(dict(line, params=ev), SCHEMAS["Notification"]), ev)
        for ev in bad:
            self.assertFalse(PROTO_DOC.is_valid(dict(line, params=ev), SCHEMAS["Notification"]), ev)

    def test_events_tied_to_no_node_have_no_node_id(self):
        line = {"jsonrpc": "2.0", "method": "event"}
        at = "2026-11-24T09:30:00.123Z"
        ok = [{"type": "network_changed", "at": at, "generation": 1},
              {"type": "connecting", "at": at, "node_id": "n", "endpoint_id": 2, "protocol": "tcp",
               "race_offset_ms": 250},
              {"type": "connect_failed", "at": at, "node_id": "n", "endpoint_id": 2, "protocol": "tcp",
               "reason": "local_network", "attempt": 1},
              {"type": "connect_failed", "at": at, "node_id": "n", "endpoint_id": 2, "protocol": "tcp",
               "reason": "cancelled", "attempt": 1}]
        bad = [{"type": "network_changed", "at": at, "node_id": "n", "generation": 1},
               {"type": "network_changed", "at": at, "node_id": "", "generation": 1},
               {"type": "network_changed", "at": at},
               {"type": "node_added", "at": at},
               {"type": "connecting", "at": at, "node_id": "n", "endpoint_id": 2, "protocol": "tcp",
                "race_offset_ms": -1}]
        for ev in ok:
            self.assertTrue(PROTO_DOC.is_valid(dict(line, params=ev), SCHEMAS["Notification"]), ev)
        for ev in bad:
            self.assertFalse(PROTO_DOC.is_valid(dict(line, params=ev), SCHEMAS["Notification"]), ev)

    def test_an_explanation_ranks_the_eligible_and_nulls_the_rest(self):
        endpoint = {"id": 1, "node_id": "n", "protocol": "tcp", "address": "127.0.0.1", "port": 80,
                    "server_name": None, "alpn": None, "pin_sha256": None, "success_count": 0,
                    "failure_count": 0, "last_success_at": None, "last_failure_at": None, "last_error": None,
                    "rtt_ms": None, "consecutive_failures": 0, "uncharged_failure_count": 0}
        cls = {"state": "unknown", "last_success_at": None}
        x = {"node_id": "n", "decision": "dial", "link": None,
             "candidates": [{"endpoint": endpoint, "rank": 0, "eligible": True, "why": [], "race_offset_ms": 0},
                            {"endpoint": dict(endpoint, id=2, protocol="quic"), "rank": None, "eligible": False,
                             "why": ["protocol quic not asked"], "race_offset_ms": None}],
             "classes": {"tcp4": cls, "tcp6": dict(cls, state="up", last_success_at="2026-11-24T09:30:00.123Z"),
                         "udp4": dict(cls, state="down"), "udp6": cls},
             "backoff": None,
             "recent": [{"at": "2026-11-24T09:30:00.123Z", "endpoint_id": 1, "outcome": "failure",
                         "reason": "local_network", "charged": False},
                        {"at": "2026-11-24T09:30:00.124Z", "endpoint_id": 1, "outcome": "success",
                         "reason": None, "charged": False}]}
        s = SCHEMAS["Explanation"]
        self.assertTrue(PROTO_DOC.is_valid(x, s))
        self.assertTrue(PROTO_DOC.is_valid(dict(x, decision="wait_retry", backoff={
            "attempt": 2, "delay_ms": 1000, "next_attempt_at": "2026-11-24T09:30:01.123Z"}), s))
        self.assertFalse(PROTO_DOC.is_valid(dict(x, decision="maybe"), s))
        self.assertFalse(PROTO_DOC.is_valid(dict(x, classes={"tcp4": cls}), s))
        self.assertFalse(PROTO_DOC.is_valid(dict(x, recent=x["recent"] * 9), s))  # 18 > 16
        self.assertFalse(PROTO_DOC.is_valid({k: v for k, v in x.items() if k != "backoff"}, s))
        self.assertFalse(PROTO_DOC.is_valid(dict(x, classes=dict(x["classes"], tcp4={"state": "sideways",
                                                                                     "last_success_at": None})), s))
        self.assertTrue(valid("nodes.explain", {"node_id": "n", "protocol": "tcp"}))
        self.assertFalse(valid("nodes.explain", {}))
        self.assertFalse(valid("nodes.explain", {"node_id": "n", "endpoint_id": 1}))

    def test_error_responses(self):
        s = SCHEMAS["ErrorResponse"]
        self.assertTrue(PROTO_DOC.is_valid({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}, s))
        self.assertTrue(PROTO_DOC.is_valid({"jsonrpc": "2.0", "id": 7, "error": {"code": -32001, "message": "m",
                                                                                  "data": {"node_id": "n"}}}, s))
        self.assertFalse(PROTO_DOC.is_valid({"jsonrpc": "2.0", "error": {"code": 1, "message": "m"}}, s))
        self.assertFalse(PROTO_DOC.is_valid({"jsonrpc": "2.0", "id": 1, "error": {"code": 1}}, s))
        self.assertFalse(PROTO_DOC.is_valid({"jsonrpc": "2.0", "id": 1, "result": 1, "error": {"code": 1, "message": "m"}}, s))


if __name__ == "__main__":
    unittest.main(verbosity=2)
