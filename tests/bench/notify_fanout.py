#!/usr/bin/env python3
"""What a fleet of N hosts costs its PostgreSQL server (docs/PERFORMANCE.md, "A
fleet's shared inventory"): N connections that LISTEN as connmgrd's do, their
backends' memory (Pss), and the time a NOTIFY takes to commit and to reach the
last of them. libpq through ctypes, so that one process holds every connection.

    ulimit -n 4096; python3 tests/bench/notify_fanout.py 300
"""
import ctypes, os, sys, time, select
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'e2e'))
import postgres
pq = ctypes.CDLL("libpq.so.5")
pq.PQconnectdb.restype = ctypes.c_void_p; pq.PQconnectdb.argtypes = [ctypes.c_char_p]
pq.PQstatus.argtypes = [ctypes.c_void_p]
pq.PQexec.restype = ctypes.c_void_p; pq.PQexec.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
pq.PQclear.argtypes = [ctypes.c_void_p]
pq.PQsocket.argtypes = [ctypes.c_void_p]
pq.PQconsumeInput.argtypes = [ctypes.c_void_p]
pq.PQnotifies.restype = ctypes.c_void_p; pq.PQnotifies.argtypes = [ctypes.c_void_p]
pq.PQfreemem.argtypes = [ctypes.c_void_p]
pq.PQbackendPID.argtypes = [ctypes.c_void_p]
pq.PQfinish.argtypes = [ctypes.c_void_p]
pq.PQerrorMessage.restype = ctypes.c_char_p; pq.PQerrorMessage.argtypes = [ctypes.c_void_p]
N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
class Big(postgres.PostgresServer):
    def _command(self, argv):
        return super()._command([("max_connections=%d" % (N + 20)) if a == "max_connections=40" else a for a in argv])
s = Big(); s.start()
dsn = s.create_fleet("fan")
os.environ["PGPASSFILE"] = s.pgpass_path
def pss(pid):
    try:
        for l in open("/proc/%d/smaps_rollup" % pid):
            if l.startswith("Pss:"): return int(l.split()[1])
    except OSError: return 0
    return 0
def backends():
    return [int(r[0]) for r in s.query("SELECT pid FROM pg_stat_activity WHERE datname='fan' AND backend_type='client backend'")]
conns = []
try:
    for i in range(N):
        c = pq.PQconnectdb(dsn.encode())
        if pq.PQstatus(c) != 0: raise SystemExit(pq.PQerrorMessage(c))
        pq.PQclear(pq.PQexec(c, b"LISTEN connmgr_inventory"))
        conns.append(c)
    pids = [pq.PQbackendPID(c) for c in conns]
    total = sum(pss(p) for p in pids)
    print("%d listening backends: Pss %.1f MiB total, %.2f MiB each" % (N, total / 1024, total / 1024 / N))
    writer = pq.PQconnectdb(dsn.encode())
    socks = {pq.PQsocket(c): c for c in conns}
    times = []
    for k in range(20):
        t0 = time.monotonic()
        pq.PQclear(pq.PQexec(writer, b"NOTIFY connmgr_inventory, '1'"))
        t_commit = time.monotonic()
        pending = set(socks)
        while pending:
            r, _, _ = select.select(list(pending), [], [], 5)
            if not r: raise SystemExit("lost")
            for fd in r:
                c = socks[fd]; pq.PQconsumeInput(c)
                n = pq.PQnotifies(c)
                if n: pq.PQfreemem(n); pending.discard(fd)
        times.append(((t_commit - t0) * 1000, (time.monotonic() - t0) * 1000))
    times.sort(key=lambda x: x[1])
    print("NOTIFY to %d listeners: commit %.2f ms median, last listener %.2f ms median, %.2f ms max" % (
        N, sorted(t[0] for t in times)[10], times[10][1], times[-1][1]))
finally:
    for c in conns: pq.PQfinish(c)
    s.close()
