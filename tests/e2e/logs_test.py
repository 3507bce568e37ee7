"""A storm of failing dials cannot flood the log: 50 supervised nodes whose
only endpoint refuses (a closed 127.0.0.1 port), redialled every 50 ms, make
thousands of failed dials; the log holds one connect_failed line per node
(the first failure of its series) and, at the end of each period, one
"dials failed" line per node that sums up the repeats with their reasons.

The period is shortened to 3 s with CONNMGRD_LOG_PERIOD (seconds); the
daemon logs at info (a test daemon's default is debug, which adds a line per
dial attempt). The cap on lines per second is tested with its own clock in
tests/daemon/config/log_throttle_test.cc.
"""
import re
import socket
import sqlite3
import time
import unittest

from daemon import Daemon, wait_for

NODES = 50
PERIOD_S = 3
STORM_S = 5


def refused_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # bound, never listened: a connect is refused
    return port


def failed_dials(d):
    db = sqlite3.connect(d.db)
    try:
        row = db.execute("SELECT SUM(failure_count + uncharged_failure_count) FROM endpoints").fetchone()
        return row[0] or 0
    finally:
        db.close()


class StormTest(unittest.TestCase):
    def test_a_storm_of_refused_dials_is_a_few_lines(self):
        """Pass: after ~5 s of refused dials of 50 nodes, each node has exactly
        one connect_failed line and at least one "dials failed" summary with
        reasons=refused:N; the storm's lines are at most nodes x 3 + 10 (one
        first failure, and a summary per period that ended, the stop's
        included: two in 5 s unless the machine is slow), the dials at least
        10 x the lines, and the lines' counts add up to the dials the
        statistics counted."""
        port = refused_port()
        started = time.monotonic()
        with Daemon("--log-level=info", env={"CONNMGRD_LOG_PERIOD": str(PERIOD_S)}) as d:
            for i in range(NODES):
                d.result("nodes.add", {"id": "n%d" % i,
                                       "endpoints": [{"protocol": "tcp", "address": "127.0.0.1", "port": port}]})
            for i in range(NODES):
                answer = d.call("connect", {"node_id": "n%d" % i, "reconnect": True,
                                            "retry": {"initial_delay_ms": 50, "max_delay_ms": 50,
                                                      "exponential": False}})
                self.assertIn("error", answer)
            # Every node's repeats summed up at least once (the period's end).
            self.assertTrue(wait_for(lambda: all('msg="dials failed" node=n%d ' % i in d.log_text()
                                                 for i in range(NODES)), timeout=PERIOD_S * 4),
                            d.log_text())
            time.sleep(max(0.0, started + STORM_S - time.monotonic()))
            for i in range(NODES):
                d.result("disconnect", {"node_id": "n%d" % i})
            # The stop writes the last period's summaries and the statistics.
            d.stop_ok()
            log = d.log_text()
            dials = failed_dials(d)
            # The periods that ended while the storm lasted (a slow machine
            # stretches it), the stop's included: each adds a line per node.
            periods = int((time.monotonic() - started) / PERIOD_S) + 1
        # The storm's lines: all but the start's and the nodes' additions.
        lines = [l for l in log.splitlines() if "msg=node_added" not in l and "msg=ready" not in l]
        self.assertNotIn("log lines suppressed", log)
        for i in range(NODES):
            first = [l for l in lines if l.startswith("level=warning msg=connect_failed ")
                     and " node=n%d " % i in l]
            self.assertEqual(len(first), 1, "n%d: %s" % (i, first))
            self.assertIn("reason=refused", first[0])
        summaries = [re.fullmatch(r'level=warning msg="dials failed" node=(n\d+) count=(\d+) '
                                  r'period_s=%d reasons=refused:(\d+)' % PERIOD_S, l)
                     for l in lines if 'msg="dials failed"' in l]
        self.assertTrue(all(summaries), [l for l in lines if 'msg="dials failed"' in l])
        self.assertTrue(all(m.group(2) == m.group(3) for m in summaries))
        self.assertLessEqual(len(lines), NODES * (1 + max(2, periods)) + 10, log)
        self.assertGreaterEqual(dials, 10 * len(lines), "%d dials, %d lines" % (dials, len(lines)))
        # Nothing lost: the first failures and the summed-up repeats are
        # every failed dial the statistics counted.
        self.assertEqual(NODES + sum(int(m.group(2)) for m in summaries), dials)
        print("%d failed dials, %d log lines, %d summary lines" % (dials, len(lines), len(summaries)))

    def test_attempts_spent_is_a_line_and_ends_the_series(self):
        """Pass: a connect of 3 attempts, all refused, logs its first failure
        and `gave up` with attempts=3, nothing for the two repeats but the
        period's summary; the next connect's first failure is a line again."""
        port = refused_port()
        with Daemon("--log-level=info", env={"CONNMGRD_LOG_PERIOD": "1"}) as d:
            d.result("nodes.add", {"id": "g0",
                                   "endpoints": [{"protocol": "tcp", "address": "127.0.0.1", "port": port}]})
            params = {"node_id": "g0", "wait": True,
                      "retry": {"max_attempts": 3, "initial_delay_ms": 50, "exponential": False}}
            self.assertIn("error", d.call("connect", params))
            self.assertTrue(wait_for(lambda: 'msg="gave up" node=g0 attempts=3' in d.log_text(), timeout=5),
                            d.log_text())
            self.assertEqual(d.log_text().count("msg=connect_failed"), 1, d.log_text())
            self.assertTrue(wait_for(lambda: 'msg="dials failed" node=g0 count=2 period_s=1 reasons=refused:2'
                                     in d.log_text(), timeout=5), d.log_text())
            self.assertIn("error", d.call("connect", params))
            self.assertTrue(wait_for(lambda: d.log_text().count('msg="gave up" node=g0') == 2, timeout=5),
                            d.log_text())
            self.assertEqual(d.log_text().count("msg=connect_failed"), 2, d.log_text())


if __name__ == "__main__":
    unittest.main()
