"""A real PostgreSQL 15 for the tests of a fleet's shared inventory
(docs/operations.md, "Running a fleet").

PostgresServer runs initdb and postgres from Debian's postgresql-15 in a fresh
temporary directory under /tmp, listening on 127.0.0.1 on a free port (and on a
Unix socket in that directory), tuned to be light (fsync off, 16 MB of shared
buffers). PostgreSQL refuses to run as root: when the tests run as root (here
and in CI) it runs as the `postgres` system user through
`setpriv --reuid=postgres ...`, in a directory given to that user (not under
the build tree, which that user may not enter); otherwise it runs as the
current user. It is stopped by its pid (SIGINT: fast shutdown); every wait is
bounded.

Roles: the superuser `postgres` is trusted over 127.0.0.1 (the tests' psql);
every other role logs in with a password (scram-sha-256), which the daemons
find in the pgpass file the server writes (pgpass_path): the DSNs they are
given hold none, as connmgrd requires.

By hand: /usr/bin/python3 tests/e2e/postgres.py starts one, prints a DSN and
waits for Ctrl-C.
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")


def available():
    """Whether PostgreSQL 15's binaries are installed (tests skip otherwise)."""
    return all(os.access(os.path.join(PG_BIN, b), os.X_OK) for b in ("initdb", "postgres", "psql"))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One PostgreSQL server for a test file (start it in setUpClass: initdb
    takes a second or two). stop() and start() again keep its data (a server
    that goes away and comes back); close() stops it and removes everything."""

    SUPERUSER = "postgres"

    def __init__(self):
        self.as_postgres = os.geteuid() == 0
        self.dir = tempfile.mkdtemp(prefix="connmgr-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "postgres.log")
        self.pgpass_path = os.path.join(self.dir, "pgpass")
        self.port = None
        self.proc = None
        self.log = None
        if self.as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)
        with open(self.pgpass_path, "w"):
            pass
        os.chmod(self.pgpass_path, 0o600)  # libpq ignores a pgpass others may read
        self._initdb()

    # --- running as the server's user -------------------------------------------

    def _command(self, argv):
        if not self.as_postgres:
            return argv
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--reset-env"] + argv

    def _initdb(self):
        out = subprocess.run(self._command([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", self.SUPERUSER,
                                            "-E", "UTF8", "--locale=C", "--no-sync", "--auth-local=trust",
                                            "--auth-host=scram-sha-256"]),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120, cwd="/")
        if out.returncode != 0:
            raise RuntimeError("initdb failed:\n" + out.stdout.decode(errors="replace"))
        hba = ("local all all trust\n"
               "host all postgres 127.0.0.1/32 trust\n"
               "host all all 127.0.0.1/32 scram-sha-256\n"
               "host all all ::1/128 scram-sha-256\n")
        # Written as the server's user would: the file stays theirs.
        self._write_as_server(os.path.join(self.data, "pg_hba.conf"), hba)

    def _write_as_server(self, path, text):
        with open(path, "w") as f:
            f.write(text)
        if self.as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    # --- start and stop ---------------------------------------------------------

    def start(self, timeout=30.0):
        """Starts the server (on the port it had, if it ran before) and waits
        until it accepts connections."""
        if self.port is None:
            self.port = free_port()
        self.log = open(self.log_path, "ab")
        if self.as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.log_path, pw.pw_uid, pw.pw_gid)
        argv = [os.path.join(PG_BIN, "postgres"), "-D", self.data,
                "-c", "listen_addresses=127.0.0.1", "-c", "port=%d" % self.port,
                "-c", "unix_socket_directories=" + self.dir,
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "shared_buffers=16MB", "-c", "max_connections=40", "-c", "max_wal_senders=0",
                "-c", "wal_level=minimal", "-c", "autovacuum=off", "-c", "logging_collector=off",
                "-c", "log_min_messages=warning"]
        self.proc = subprocess.Popen(self._command(argv), stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, cwd="/")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited with %s:\n%s" % (self.proc.returncode, self.log_text()))
            if self.psql("SELECT 1", check=False, timeout=5).returncode == 0:
                return
            time.sleep(0.05)
        raise TimeoutError("postgres did not accept connections within %.0fs:\n%s" % (timeout, self.log_text()))

    def stop(self, timeout=30.0):
        """Fast shutdown (SIGINT to our own pid): clients are disconnected."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.log:
            self.log.close()
            self.log = None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def close(self):
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    # --- SQL as the superuser ---------------------------------------------------

    def psql(self, sql, dbname="postgres", check=True, timeout=60):
        """Runs SQL as the superuser over 127.0.0.1; unaligned, tuples only."""
        out = subprocess.run([os.path.join(PG_BIN, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                              "-h", "127.0.0.1", "-p", str(self.port), "-U", self.SUPERUSER, "-d", dbname,
                              "-c", sql],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                             env=dict(os.environ, PGCONNECT_TIMEOUT="3"))
        if check and out.returncode != 0:
            raise AssertionError("psql %r failed: %s" % (sql[:200], out.stderr.decode(errors="replace")))
        return out

    def query(self, sql, dbname="postgres"):
        """The rows of a query, each a list of strings."""
        text = self.psql(sql, dbname).stdout.decode()
        return [line.split("|") for line in text.splitlines() if line]

    def scalar(self, sql, dbname="postgres"):
        rows = self.query(sql, dbname)
        return rows[0][0] if rows else None

    # --- a fleet's database -----------------------------------------------------

    def create_fleet(self, dbname, user=None, password=None):
        """A role and a database for a fleet, as docs/operations.md ("Running a
        fleet") sets them up; the password goes into pgpass_path. Returns the
        DSN the daemons are given (no password in it)."""
        user = user or dbname
        password = password or ("pw-" + dbname)
        self.psql("CREATE ROLE %s LOGIN PASSWORD '%s'" % (user, password))
        self.psql("CREATE DATABASE %s OWNER %s" % (dbname, user))
        self.psql("REVOKE ALL ON DATABASE %s FROM PUBLIC" % dbname)
        with open(self.pgpass_path, "a") as f:
            f.write("127.0.0.1:%d:%s:%s:%s\n" % (self.port, dbname, user, password))
        return self.dsn(dbname, user)

    def dsn(self, dbname, user):
        return "host=127.0.0.1 port=%d dbname=%s user=%s" % (self.port, dbname, user)

    def env(self):
        """What a daemon needs in its environment to log in (its password)."""
        return {"PGPASSFILE": self.pgpass_path}


if __name__ == "__main__":
    server = PostgresServer()
    try:
        server.start()
        print(server.create_fleet("fleet"))
        print("PGPASSFILE=" + server.pgpass_path)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
