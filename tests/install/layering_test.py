#!/usr/bin/env python3
"""The layering of lib/ and daemon/ (docs/ARCHITECTURE.md), kept by reading
every #include line.

Each folder of lib/ and daemon/ is a layer. LAYERS says which of the
project's layers a layer may include (a quoted include is resolved as the
compiler would: next to the file, then under lib/, daemon/ and the top), and
which system headers it must not include (angle brackets). A file in a
folder the table does not know fails the test too: a new folder is a new
layer, to be placed here and in docs/ARCHITECTURE.md.

The rules in words: lib/ never includes daemon/; storage knows no JSON;
connectors (net, quic) know nothing of storage; the manager (core) knows no
JSON, no SQLite and no concrete connector; the RPC layer (rpc, server) never
touches SQLite, the Store or the manager; only lib/storage includes
<sqlite3.h>; connmgrctl talks to the daemon over the socket only.

Usage: layering_test.py SOURCE_ROOT
Python 3 standard library only.
"""

import os
import re
import sys

# Headers of the libraries a layer may not reach for, by angle-bracket prefix.
JSON = ("nlohmann/",)
SQLITE = ("sqlite3.h",)
SYSTEMD = ("systemd/",)
QUIC_TLS = ("ngtcp2/", "gnutls/")

# layer -> (project layers it may include besides itself, system headers it must not include)
LAYERS = {
    "lib/util": ((), JSON + SQLITE + SYSTEMD + QUIC_TLS),
    "lib/storage": (("lib/util",), JSON + SYSTEMD + QUIC_TLS),
    "lib/net": (("lib/util",), JSON + SQLITE + SYSTEMD + QUIC_TLS),
    "lib/quic": (("lib/util", "lib/net"), JSON + SQLITE + SYSTEMD),
    "lib/core": (("lib/util", "lib/storage", "lib/net"), JSON + SQLITE + SYSTEMD + QUIC_TLS),
    "daemon/config": (("lib/util",), SQLITE + SYSTEMD + QUIC_TLS),
    "daemon/rpc": (("lib/util",), SQLITE + SYSTEMD + QUIC_TLS),
    "daemon/server": (("lib/util", "daemon/rpc"), SQLITE + SYSTEMD + QUIC_TLS),
    "daemon/systemd": (("lib/util", "daemon/config"), SQLITE + QUIC_TLS),
    "daemon/methods": (("lib/util", "lib/storage", "lib/net", "lib/core", "daemon/rpc"),
                       SQLITE + SYSTEMD + QUIC_TLS),
    "daemon/ctl": (("generated",), SQLITE + SYSTEMD + QUIC_TLS),
    # connmgrd's composition root (daemon.cc, main.cc): builds every part.
    "daemon": (("lib/util", "lib/storage", "lib/net", "lib/quic", "lib/core", "daemon/config",
                "daemon/rpc", "daemon/server", "daemon/systemd", "daemon/methods", "generated"),
               SQLITE + QUIC_TLS),
}

# Quoted includes that name no file of the tree: made by meson.
GENERATED = {"connmgr_version.h"}

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


def layer_of(rel):
    """The layer of a file's path relative to the source root: its longest
    folder prefix in LAYERS, or None."""
    folder = os.path.dirname(rel)
    while folder:
        if folder in LAYERS:
            return folder
        folder = os.path.dirname(folder)
    return None


def resolve(root, rel, name):
    """The file a quoted include names, relative to root, or None."""
    for base in (os.path.dirname(rel), "lib", "daemon", ""):
        candidate = os.path.normpath(os.path.join(base, name))
        if os.path.isfile(os.path.join(root, candidate)):
            return candidate
    return None


def sources(root):
    for top in ("lib", "daemon"):
        for folder, _, files in os.walk(os.path.join(root, top)):
            for f in sorted(files):
                if f.endswith((".h", ".cc")):
                    yield os.path.relpath(os.path.join(folder, f), root)


def check(root):
    problems = []
    count = 0
    for rel in sources(root):
        count += 1
        layer = layer_of(rel)
        if layer is None:
            problems.append(f"{rel}: its folder is no layer of tests/install/layering_test.py "
                            "(add it there and to docs/ARCHITECTURE.md)")
            continue
        allowed, forbidden = LAYERS[layer]
        with open(os.path.join(root, rel), encoding="utf-8") as f:
            text = f.read()
        for bracket, name in INCLUDE.findall(text):
            if bracket == "<":
                if name.startswith(forbidden):
                    problems.append(f"{rel}: #include <{name}>: {layer} must not use it")
                continue
            if name in GENERATED:
                target = "generated"
            else:
                found = resolve(root, rel, name)
                if found is None:
                    problems.append(f'{rel}: #include "{name}" names no file of the tree')
                    continue
                target = layer_of(found) or found
            if target != layer and target not in allowed:
                problems.append(f'{rel}: #include "{name}": {layer} may not include {target}')
    return count, problems


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-3])
        return 2
    count, problems = check(sys.argv[1])
    if count == 0:
        print("layering_test.py: no source under lib/ or daemon/")
        return 1
    for p in problems:
        print(p)
    if problems:
        print(f"\n{len(problems)} include(s) break the layering of docs/ARCHITECTURE.md")
        return 1
    print(f"{count} files of lib/ and daemon/ keep the layering")
    return 0


if __name__ == "__main__":
    sys.exit(main())
