"""An OpenSSH server on 127.0.0.1 as the test's own child, for tests that
carry ssh over connmgr's streams (the test peer's QUIC-to-TCP gateway, the
daemon's streams).

    with Sshd() as sshd:
        subprocess.run(sshd.ssh_command("true", proxy="PROGRAM ARGS"), ...)

A fresh host key and client key per fixture, in a temporary directory; the
client key is the only one authorized, for the user running the test (root
logs in with it too). Every wait is bounded; only sshd's own pid is ended."""
import getpass
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time

SSHD = shutil.which("sshd", path="/usr/sbin:/usr/bin:/sbin:/bin")
SSH = shutil.which("ssh")
SSH_KEYGEN = shutil.which("ssh-keygen")


def available():
    """Why sshd cannot run here, or None when it can."""
    if not (SSHD and SSH and SSH_KEYGEN):
        return "openssh-server and openssh-client are not installed"
    if not os.path.isdir("/run/sshd") and os.geteuid() != 0:
        return "sshd needs its privilege-separation directory /run/sshd (made by root)"
    return None


def free_tcp_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Sshd:
    def __init__(self, start_timeout=20):
        self.start_timeout = start_timeout
        self.dir = tempfile.mkdtemp(prefix="connmgr-sshd-")
        self.user = getpass.getuser()
        self.proc = None
        self.port = 0
        self.host_key = os.path.join(self.dir, "host_key")
        self.client_key = os.path.join(self.dir, "client_key")
        self.log = os.path.join(self.dir, "sshd.log")

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def _keygen(self, path):
        subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", path], check=True,
                       capture_output=True, timeout=30)

    def _config(self):
        authorized = os.path.join(self.dir, "authorized_keys")
        shutil.copy(self.client_key + ".pub", authorized)
        conf = os.path.join(self.dir, "sshd_config")
        with open(conf, "w") as f:
            f.write("\n".join([
                "ListenAddress 127.0.0.1",
                "HostKey %s" % self.host_key,
                "PidFile none",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "AuthorizedKeysFile %s" % authorized,
                "AllowUsers %s" % self.user,
                "LogLevel VERBOSE",
                "MaxStartups 50",
                "",
            ]))
        return conf

    def start(self):
        why = available()
        if why:
            raise RuntimeError(why)
        self._keygen(self.host_key)
        self._keygen(self.client_key)
        conf = self._config()
        # sshd's privilege separation needs this directory (systemd makes it
        # at boot; a container may not have it).
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        last = ""
        for _ in range(3):  # the free port may be taken before sshd binds it
            self.port = free_tcp_port()
            log = open(self.log, "ab")
            # sshd re-executes itself: it wants its absolute path.
            self.proc = subprocess.Popen([os.path.abspath(SSHD), "-D", "-e", "-f", conf, "-p", str(self.port),
                                          "-h", self.host_key], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            log.close()
            if self._wait_listening():
                return
            self.stop_process()
            last = self.logs()
        raise RuntimeError("sshd did not start: " + last[-2000:])

    def _wait_listening(self):
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.settimeout(2)
                    return s.recv(4).startswith(b"SSH-")
            except OSError:
                time.sleep(0.1)
        return False

    def client_options(self):
        """ssh's options for this server: its client key, no host key
        check, no config read, never a prompt. None holds a space."""
        return ["-F", "/dev/null", "-i", self.client_key, "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR"]

    def ssh_command(self, *remote, proxy=None):
        """ssh to this server (through `proxy`, a ProxyCommand, when given)
        running `remote`; host keys are not checked, no config is read."""
        args = [SSH] + self.client_options()
        if proxy is not None:
            if not isinstance(proxy, str):
                proxy = " ".join(shlex.quote(p) for p in proxy)
            args += ["-o", "ProxyCommand=" + proxy, "%s@node" % self.user]
        else:
            args += ["-p", str(self.port), "%s@127.0.0.1" % self.user]
        return args + list(remote)

    def logs(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop_process(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def stop(self):
        self.stop_process()
        shutil.rmtree(self.dir, ignore_errors=True)
