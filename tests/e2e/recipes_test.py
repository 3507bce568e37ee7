"""Every shell recipe in README.md and docs/*.md runs against a live daemon and a
live peer, so the docs cannot rot.

A recipe is a fenced block tagged `sh`. Blocks whose first line starts with
"# not run by the recipes test" are skipped (the two commands at the top of
README, which build and test everything). The blocks of one file run in order
in one bash process with `set -euo pipefail`, in a directory laid out as the
tour expects: `.run/connmgrd.sock` (the daemon under test), `.run/demo.env` (the
demo peer's ports and pin) and `build/daemon/ctl/connmgrctl`. Recipes in docs/
run in the tour's shell: CONNMGR_SOCKET, PATH and demo.env already set.

README's ssh block reaches "this machine's own sshd" as SSH_PORT with the
options in SSH_OPTS: the test starts a throwaway sshd on 127.0.0.1
(tests/peer/sshd_fixture.py) and sets both. Where sshd cannot run, that block
is left out and the test, its other checks passed, is reported skipped.
"""
import glob
import os
import re
import subprocess
import sys
import tempfile
import unittest

from daemon import CONNMGRCTL, TEST_PEER, Daemon, HERE

sys.path.insert(0, os.path.join(HERE, "..", "peer"))
import sshd_fixture  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
SKIP_MARK = "# not run by the recipes test"


def recipes(path):
    """[(line number, text)] of the runnable sh blocks of a Markdown file."""
    blocks = []
    with open(path) as f:
        lines = f.read().split("\n")
    i = 0
    while i < len(lines):
        if re.fullmatch(r"```sh\s*", lines[i]):
            start = i + 1
            j = start
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            body = lines[start:j]
            if body and not body[0].startswith(SKIP_MARK):
                blocks.append((start + 1, "\n".join(body)))
            i = j
        i += 1
    return blocks


class DemoPeer:
    """connmgr-test-peer with a fresh self-signed certificate, as scripts/run starts it
    (its streams echo)."""

    def __init__(self, workdir):
        key, crt = os.path.join(workdir, "peer.key"), os.path.join(workdir, "peer.crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                        "-keyout", key, "-out", crt], check=True, capture_output=True)
        der = subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"],
                             check=True, capture_output=True).stdout
        import base64
        import hashlib
        self.pin = base64.b64encode(hashlib.sha256(der).digest()).decode()
        self.proc = subprocess.Popen([TEST_PEER, "--tcp", "0", "--quic", "0", "--cert", crt, "--key", key,
                                      "--tcp-streams", "echo", "--quic-streams", "echo"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline().split()  # "ready tcp=N quic=N"
        assert ready and ready[0] == "ready", "test peer did not start: %s" % ready
        fields = dict(f.split("=") for f in ready[1:])
        self.tcp, self.quic = int(fields["tcp"]), int(fields["quic"])

    def stop(self):
        self.proc.stdin.close()  # end of input stops it
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc.stdout.close()


class RecipesTest(unittest.TestCase):
    def run_file(self, md, env_extra=None, leave_out=None):
        """Runs the recipes of `md`, with `env_extra` in their environment and
        without the blocks that mention `leave_out`."""
        blocks = [b for b in recipes(md) if not (leave_out and leave_out in b[1])]
        if not blocks:
            self.skipTest("no recipes in " + md)
        with tempfile.TemporaryDirectory(prefix="connmgr-recipes-") as work, \
                Daemon("--log-level=warning") as d:
            peer = DemoPeer(work)
            try:
                os.makedirs(os.path.join(work, ".run"))
                os.makedirs(os.path.join(work, "build", "daemon", "ctl"))
                os.symlink(d.sock, os.path.join(work, ".run", "connmgrd.sock"))
                os.symlink(os.path.abspath(CONNMGRCTL), os.path.join(work, "build", "daemon", "ctl", "connmgrctl"))
                with open(os.path.join(work, ".run", "demo.env"), "w") as f:
                    f.write("DEMO_TCP_PORT=%d\nDEMO_QUIC_PORT=%d\nDEMO_PIN=%s\n" % (peer.tcp, peer.quic, peer.pin))
                script = ["set -euo pipefail"]
                if os.path.basename(md) != "README.md":
                    # docs/ assume the tour's shell: its socket, PATH and demo peer.
                    script.append("export CONNMGR_SOCKET=$PWD/.run/connmgrd.sock PATH=$PWD/build/daemon/ctl:$PATH")
                    script.append(". .run/demo.env")
                for line, text in blocks:
                    script.append("echo '### %s:%d' >&2" % (os.path.basename(md), line))
                    script.append(text)
                env = {k: v for k, v in os.environ.items()
                       if k not in ("CONNMGR_SOCKET", "NO_COLOR", "SSH_PORT", "SSH_OPTS")}
                env.update(env_extra or {})
                r = subprocess.run(["bash", "-c", "\n".join(script)], cwd=work, env=env,
                                   capture_output=True, text=True, timeout=120)
                self.assertEqual(r.returncode, 0, "recipe failed:\n--- stdout\n%s\n--- stderr\n%s"
                                 % (r.stdout, r.stderr))
                return r
            finally:
                peer.stop()

    def sshd_env(self):
        """SSH_PORT and SSH_OPTS of a throwaway sshd for README's ssh block,
        or None when sshd cannot run here."""
        if sshd_fixture.available():
            return None
        sshd = sshd_fixture.Sshd()
        self.addCleanup(sshd.stop)
        sshd.start()
        return {"SSH_PORT": str(sshd.port), "SSH_OPTS": " ".join(sshd.client_options())}

    def test_readme(self):
        ssh_env = self.sshd_env()
        r = self.run_file(os.path.join(ROOT, "README.md"), env_extra=ssh_env,
                          leave_out=None if ssh_env else "SSH_PORT")
        out = r.stdout
        # What the tour says happens, happened.
        self.assertIn("edge1 linked via quic 127.0.0.1:", out)
        self.assertIn("edge1 already linked via quic", out)
        self.assertIn("edge1: disconnected", out)
        self.assertRegex(out, r'\{"type":"connected","node_id":"edge1","protocol":"quic"')
        self.assertRegex(out, r'\{"type":"disconnected","node_id":"edge1","protocol":"quic","reason":"requested"\}')
        self.assertIn("attempt 3/3 via endpoint", r.stderr)
        self.assertIn("next try in 2.0s", r.stderr)
        self.assertIn("exit status 1: the connect failed", out)
        self.assertIn("db1 tcp active", out)
        # Streams: socat's first line is the answer, then the echo; pipe, exec.
        self.assertRegex(out, r'(?m)^\{"jsonrpc":"2.0","id":1,"result":\{.*"node_id":"edge1".*\}\}\n'
                              r'hello over a stream$')
        self.assertIn("hello through connmgrctl pipe\n", out)
        self.assertIn("1 MB came back intact", out)
        self.assertIn("ping", r.stderr)
        self.assertRegex(out, r'\{"node_id":"edge1","streams":0,"bytes_in":\d{7},"bytes_out":\d{7}\}')
        # ssh through connmgr: the remote command ran, over host1's TCP link.
        if not ssh_env:
            self.skipTest("README's ssh block not run: " + sshd_fixture.available())
        self.assertRegex(out, r"(?m)^logged in to \S+ through connmgr$")
        self.assertRegex(out, r"(?m)^host1\b.*\btcp\b")

    def test_docs(self):
        ran = 0
        for md in sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))):
            if recipes(md):
                with self.subTest(doc=os.path.basename(md)):
                    r = self.run_file(md)
                    ran += 1
                    if os.path.basename(md) == "operations.md":
                        self.assertIn("sql1  added with sqlite3", r.stdout)
                        self.assertIn("sql1 linked via tcp", r.stdout)
                        self.assertRegex(r.stdout, r"(?m)^ok$")  # integrity_check
                        self.assertRegex(r.stdout, r"(?m)^1$")   # the backup holds sql1
        if not ran:
            self.skipTest("no recipes in docs/*.md yet")


if __name__ == "__main__":
    unittest.main(verbosity=2)
