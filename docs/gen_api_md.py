#!/usr/bin/env python3
"""Writes docs/api.md, the API reference, from proto/connmgr.openrpc.json.

proto/ is the one description of the API (the end-to-end tests check the
daemon's answers against it); docs/api.md is made from it so that the two
cannot disagree. The transport and framing rules (x-transport), every
method (params with types, constraints and defaults, the cross-param rules,
the result, the errors), every schema of components/schemas, every error
code with when it is answered (x-error-meaning) and the event notification
are written. docs/guide.md and docs/operations.md hold the rest of the
contract in prose (choosing endpoints, retries, configuration, systemd).

Usage:
  gen_api_md.py PROTO                 print the reference on stdout
  gen_api_md.py PROTO --output FILE   write it to FILE
  gen_api_md.py PROTO --check FILE    exit 1 (with a diff) when FILE differs

The test docs-api-md runs --check against the committed docs/api.md; after a
change to proto/, `ninja -C BUILDDIR update-api-md` rewrites it.

Python 3 standard library only.
"""

import argparse
import difflib
import json
import sys

SCHEMA_PREFIX = "#/components/schemas/"
ERROR_PREFIX = "#/components/errors/"


def anchor(name):
    """GitHub's heading anchor for a heading that is just `name`."""
    return "".join(c for c in name.lower() if c.isalnum() or c in "-_ ").replace(" ", "-")


def code(text):
    return "`" + str(text) + "`"


def cell(text):
    """Text made safe for a table cell: no line breaks, `|` escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def json_text(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def ref_name(ref, prefix=SCHEMA_PREFIX):
    if not ref.startswith(prefix):
        raise SystemExit(f"gen_api_md: unsupported $ref {ref!r}")
    return ref[len(prefix):]


class Writer:
    def __init__(self, doc):
        self.doc = doc
        self.schemas = doc.get("components", {}).get("schemas", {})
        self.errors = doc.get("components", {}).get("errors", {})
        self.error_data = doc.get("x-error-data", {})
        self.error_meaning = doc.get("x-error-meaning", {})
        self.lines = []

    def out(self, line=""):
        self.lines.append(line)

    def text(self):
        # One blank line at most between blocks, one newline at the end.
        result, blank = [], False
        for line in self.lines:
            if line == "":
                if not blank and result:
                    result.append("")
                blank = True
            else:
                result.append(line.rstrip())
                blank = False
        while result and result[-1] == "":
            result.pop()
        return "\n".join(result) + "\n"

    # --- types ------------------------------------------------------------

    def link(self, name):
        return f"[{name}](#{anchor(name)})"

    def type_of(self, s):
        """A short type expression for a schema: `integer`, `string or null`,
        `array of [Endpoint](#endpoint)`, `one of "a", "b"`."""
        if s is None or s == {}:
            return "any JSON value"
        if "$ref" in s:
            return self.link(ref_name(s["$ref"]))
        if "const" in s:
            return code(json_text(s["const"]))
        if "enum" in s:
            return "one of " + ", ".join(code(json_text(v)) for v in s["enum"])
        if "oneOf" in s or "anyOf" in s:
            return " or ".join(self.type_of(x) for x in s.get("oneOf", s.get("anyOf")))
        if "allOf" in s:
            parts = [self.type_of(x) for x in s["allOf"] if "$ref" in x or "type" in x]
            extra = [r for x in s["allOf"] for r in x.get("required", []) if "$ref" not in x]
            t = " and ".join(parts) if parts else "object"
            if extra:
                t += " with " + ", ".join(code(r) for r in extra) + " always present"
            return t
        t = s.get("type")
        if isinstance(t, list):
            return " or ".join(self.type_of({**s, "type": x}) for x in t)
        if t == "array":
            return "array of " + self.type_of(s.get("items"))
        if t is None:
            return "any JSON value"
        return t

    def constraints(self, s):
        """Range, length, pattern and default of a schema, in words."""
        notes = []
        lo, hi = s.get("minimum"), s.get("maximum")
        if lo is not None and hi is not None:
            notes.append(f"{lo}..{hi}")
        elif lo is not None:
            notes.append(f"≥ {lo}")
        elif hi is not None:
            notes.append(f"≤ {hi}")
        lo, hi = s.get("minLength"), s.get("maxLength")
        if lo is not None and hi is not None:
            notes.append(f"length {lo}..{hi}")
        elif lo is not None:
            notes.append(f"length ≥ {lo}")
        elif hi is not None:
            notes.append(f"length ≤ {hi}")
        if "pattern" in s:
            notes.append("matches " + code(s["pattern"]))
        if isinstance(s.get("additionalProperties"), dict):
            notes.append("values: " + self.type_of(s["additionalProperties"]))
        return notes

    def describe(self, s, extra=""):
        parts = self.constraints(s)
        if s.get("description"):
            parts.append(s["description"])
        if extra:
            parts.append(extra)
        return cell("; ".join(parts))

    # --- rules (if/then/else, oneOf of required sets) ----------------------

    @staticmethod
    def required_words(s):
        """{required: [a]} / {not: {required: [b]}} / anyOf of those, in words."""
        words = []
        if "required" in s:
            words.append("with " + ", ".join(code(r) for r in s["required"]))
        if "not" in s:
            n = s["not"]
            names = list(n.get("required", []))
            for alt in n.get("anyOf", []):
                names += alt.get("required", [])
            if names:
                words.append("without " + " or ".join(code(r) for r in names))
        return " ".join(words)

    def condition_words(self, cond):
        parts = []
        for name, p in cond.get("properties", {}).items():
            if "const" in p:
                parts.append(f"{code(name)} is {code(json_text(p['const']))}")
            else:
                parts.append(f"{code(name)} is {self.type_of(p)}")
        return " and ".join(parts) or "always"

    def consequence_words(self, s):
        parts = []
        if s.get("required"):
            parts.append(", ".join(code(r) for r in s["required"]) + " present")
        if "not" in s and s["not"].get("required"):
            parts.append(", ".join(code(r) for r in s["not"]["required"]) + " absent")
        for name, p in s.get("properties", {}).items():
            parts.append(f"{code(name)} is {self.type_of(p)}")
        return "; ".join(parts) or "no further rule"

    def rules(self, s):
        """Conditional rules of a schema (if/then/else at the top or in allOf)."""
        out = []
        conds = [s] if "if" in s else []
        conds += [x for x in s.get("allOf", []) if "if" in x]
        for c in conds:
            line = f"When {self.condition_words(c['if'])}: {self.consequence_words(c.get('then', {}))}"
            if "else" in c:
                line += f"; otherwise {self.consequence_words(c['else'])}"
            out.append(line + ".")
        return out

    # --- objects -------------------------------------------------------------

    def object_table(self, s, what="field"):
        props = s.get("properties", {})
        required = set(s.get("required", []))
        self.out(f"| {what} | type | always present | notes |")
        self.out("|---|---|---|---|")
        for name, p in props.items():
            self.out(f"| {code(name)} | {cell(self.type_of(p))} | {'yes' if name in required else 'no'} "
                     f"| {self.describe(p)} |")
        self.out()
        if s.get("additionalProperties") is False:
            self.out("No other fields.")
        elif isinstance(s.get("additionalProperties"), dict):
            self.out("Any other field: " + self.type_of(s["additionalProperties"]) + ".")
        for r in self.rules(s):
            self.out(r)
        self.out()

    def schema_body(self, s):
        """The body of a schema section or of a result: table or one line."""
        if s.get("type") == "object" and "properties" in s and s["properties"]:
            self.object_table(s)
        elif s.get("type") == "object" and isinstance(s.get("additionalProperties"), dict):
            self.out("An object; every field is " + self.type_of(s["additionalProperties"]) + ".")
            self.out()
        else:
            line = self.type_of(s)
            notes = self.constraints(s)
            if notes:
                line += " (" + "; ".join(notes) + ")"
            self.out(line[:1].upper() + line[1:] + ".")
            self.out()
            for r in self.rules(s):
                self.out(r)
            self.out()
        # Nested objects with properties of their own (status.counts).
        for name, p in s.get("properties", {}).items():
            if p.get("type") == "object" and p.get("properties"):
                self.out(f"`{name}`:")
                self.out()
                self.object_table(p)

    # --- sections --------------------------------------------------------

    def header(self):
        info = self.doc["info"]
        self.out(f"# {info['title']}: reference")
        self.out()
        self.out("<!-- Generated from proto/connmgr.openrpc.json by docs/gen_api_md.py: do not edit.")
        self.out("     Change proto/, then `ninja -C BUILDDIR update-api-md`; the test docs-api-md")
        self.out("     fails while this file and proto/ disagree. -->")
        self.out()
        self.out(f"API version {info['version']}, OpenRPC {self.doc['openrpc']}. "
                 "Concepts (choosing an endpoint, retries, supervised links, permissions) are in "
                 "[guide.md](guide.md); configuration, systemd and the database in "
                 "[operations.md](operations.md).")
        self.out()
        self.out(info.get("description", ""))
        self.out()
        self.out("A request is one line: "
                 '`{"jsonrpc":"2.0","id":1,"method":"nodes.get","params":{"node_id":"web1"}}`; '
                 "params are by name and may be left out when none is required.")
        self.out()
        self.transport()
        self.out("## Methods")
        self.out()
        self.out("| method | summary | changes state |")
        self.out("|---|---|---|")
        for m in self.doc["methods"]:
            self.out(f"| [{code(m['name'])}](#{anchor(m['name'])}) | {cell(m.get('summary', ''))} "
                     f"| {'yes' if m.get('x-changes-state') else 'no'} |")
        self.out()

    def transport(self):
        rules = self.doc.get("x-transport", [])
        if not rules:
            return
        self.out("## Transport and framing")
        self.out()
        for r in rules:
            self.out("- " + r)
        self.out()

    def method(self, m):
        self.out(f"### {m['name']}")
        self.out()
        self.out(m.get("summary", ""))
        self.out()
        if m.get("description"):
            self.out(m["description"])
            self.out()
        if m.get("x-changes-state"):
            self.out("Changes state: allowed for uid 0, the daemon's uid and members of `admin_group`; "
                     "others get -32030.")
        else:
            self.out("Read method: open to anyone who can open the socket.")
        self.out()
        self.params(m)
        result = m["result"]
        self.out(f"**Result** ({code(result['name'])}):")
        self.out()
        self.schema_body(result["schema"])
        self.method_errors(m)

    def params(self, m):
        params = m.get("params", [])
        if not params:
            self.out("**Params:** none (`params` may be left out, or `{}`).")
            self.out()
            return
        self.out(f"**Params** ({m.get('paramStructure', 'by-name')}):")
        self.out()
        self.out("| param | type | required | default | notes |")
        self.out("|---|---|---|---|---|")
        for p in params:
            s = p["schema"]
            default = code(json_text(s["default"])) if "default" in s else "-"
            notes = "; ".join(x for x in [self.describe(s), cell(p.get("description", ""))] if x)
            self.out(f"| {code(p['name'])} | {cell(self.type_of(s))} | {'yes' if p.get('required') else 'no'} "
                     f"| {default} | {notes} |")
        self.out()
        xs = m.get("x-params-schema", {})
        for key in ("oneOf", "anyOf"):
            if key in xs:
                alts = [self.required_words(a) for a in xs[key]]
                which = "exactly one" if key == "oneOf" else "at least one"
                self.out(f"Params must match {which} of: " + "; ".join(alts) + ".")
                self.out()
        if xs.get("additionalProperties") is False:
            self.out("Any other param is answered -32602 naming it.")
            self.out()

    def error_line(self, name, note=""):
        e = self.errors[name]
        line = f"- {e['code']} [{name}](#{anchor(name)}): {e['message']}"
        return line + (f" ({note})" if note else "")

    def method_errors(self, m):
        names = [ref_name(e["$ref"], ERROR_PREFIX) for e in m.get("errors", [])]
        if m.get("x-changes-state") and "PermissionDenied" not in names:
            names.append("PermissionDenied")
        self.out("**Errors** (besides -32602 for bad params and -32603):")
        self.out()
        if not names:
            self.out("- none of its own")
        for n in names:
            self.out(self.error_line(n))
        self.out()

    def events(self):
        self.out("## Events")
        self.out()
        for n in self.doc.get("x-notifications", []):
            self.out(f"### Notification {code(n['name'])}")
            self.out()
            self.out(n.get("summary", ""))
            self.out()
            if n.get("description"):
                self.out(n["description"])
                self.out()
            self.out("| param | type | always present | notes |")
            self.out("|---|---|---|---|")
            for p in n.get("params", []):
                self.out(f"| {code(p['name'])} | {cell(self.type_of(p['schema']))} "
                         f"| {'yes' if p.get('required') else 'no'} | {self.describe(p['schema'])} |")
            self.out()
            ps = n.get("x-params-schema", {})
            if "$ref" in ps:
                target = ref_name(ps["$ref"])
                self.out(f"The params are one {self.link(target)} object; the fields each event type "
                         "carries:")
                self.out()
                for r in self.rules(self.schemas[target]):
                    self.out("- " + r)
                self.out()

    def schemas_section(self):
        self.out("## Schemas")
        self.out()
        self.out("The objects and types that params, results, errors and events refer to "
                 "(components/schemas).")
        self.out()
        for name, s in self.schemas.items():
            self.out(f"### {name}")
            self.out()
            if s.get("description"):
                self.out(s["description"])
                self.out()
            self.schema_body({k: v for k, v in s.items() if k != "description"})

    def errors_section(self):
        self.out("## Errors")
        self.out()
        self.out("An error answer is `{\"jsonrpc\":\"2.0\",\"id\":ID,\"error\":{code, message, data?}}`. "
                 "Server errors (-32001 and beyond) carry `data` as an object that names what the "
                 "error is about. Messages are for people; scripts test `code` and `data`.")
        self.out()
        users = {}
        for m in self.doc["methods"]:
            for e in m.get("errors", []):
                users.setdefault(ref_name(e["$ref"], ERROR_PREFIX), []).append(m["name"])
            if m.get("x-changes-state"):
                users.setdefault("PermissionDenied", [])
                if m["name"] not in users["PermissionDenied"]:
                    users["PermissionDenied"].append(m["name"])
        self.out("| code | name | when | data | answered by |")
        self.out("|---|---|---|---|---|")
        for name, e in self.errors.items():
            data = "-"
            if name in self.error_data:
                data = self.type_of(self.error_data[name])
            by = ", ".join(code(x) for x in users.get(name, [])) or "any request"
            when = self.error_meaning.get(name, e["message"])
            self.out(f"| {e['code']} | {name} | {cell(when)} | {cell(data)} | {by} |")
        self.out()
        for name, e in self.errors.items():
            self.out(f"### {name}")
            self.out()
            self.out(f"Code {e['code']}, message {code(e['message'])}.")
            if name in self.error_meaning:
                self.out("When: " + self.error_meaning[name] + ".")
            if name in self.error_data:
                self.out(f"`data` follows {self.type_of(self.error_data[name])}.")
            if "data" in e:
                self.out(f"Example `data`: {code(json_text(e['data']))}.")
            self.out()

    def write(self):
        self.header()
        for m in self.doc["methods"]:
            self.method(m)
        self.events()
        self.errors_section()
        self.schemas_section()
        return self.text()


def generate(proto_path):
    with open(proto_path, encoding="utf-8") as f:
        doc = json.load(f)
    return Writer(doc).write()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("proto")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--output", metavar="FILE")
    group.add_argument("--check", metavar="FILE")
    args = ap.parse_args()
    text = generate(args.proto)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
        return 0
    if args.check:
        with open(args.check, encoding="utf-8") as f:
            committed = f.read()
        if committed == text:
            return 0
        sys.stdout.writelines(difflib.unified_diff(
            committed.splitlines(True), text.splitlines(True),
            fromfile=args.check, tofile="generated from " + args.proto))
        print(f"\n{args.check} is out of step with {args.proto}: "
              "run `ninja -C BUILDDIR update-api-md` (docs/gen_api_md.py) and commit the result.")
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
