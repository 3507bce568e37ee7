"""The daemon notices the host's network changing (rtnetlink): each change is
one `network_changed` event, tied to no node, and one line in the log.

connmgrd runs in a network namespace of its own (`unshare -n`, which execs
it: the daemon keeps unshare's pid), with only a loopback interface, down;
the test changes that network with `nsenter -t PID -n ip ...`. Its Unix
socket is a file, reachable from the test's own namespace. Needs root;
skips with the reason otherwise. Nothing of the host's network changes.
"""
import os
import subprocess
import unittest

from daemon import Daemon, wait_for


def can_unshare_net():
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["unshare", "-n", "true"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return r.returncode == 0


@unittest.skipUnless(can_unshare_net(), "needs root and network namespaces (unshare -n)")
class NetworkChangeTest(unittest.TestCase):
    def setUp(self):
        self.d = Daemon(start=False)
        self.d.args = ["unshare", "-n", "--"] + self.d.args
        self.d.start()

    def tearDown(self):
        try:
            self.d.stop_ok()
        finally:
            self.d.cleanup()

    def ip(self, *args):
        subprocess.run(["nsenter", "-t", str(self.d.proc.pid), "-n", "ip"] + list(args), check=True)

    def network_changed(self, sub, timeout=5.0):
        """The next network_changed event (others are skipped: there are none
        without nodes)."""
        while True:
            ev = sub.next_event(timeout)
            if ev["type"] == "network_changed":
                return ev

    def test_a_loopback_coming_up_then_an_address_are_two_network_changed_events(self):
        """Pass: `ip link set lo up` in the daemon's namespace brings one
        network_changed event without node_id, generation 1, and one log line;
        an address added after it, another with generation 2."""
        with self.d.client() as sub:
            sub.call("events.subscribe")
            self.ip("link", "set", "lo", "up")
            ev = self.network_changed(sub)
            self.assertNotIn("node_id", ev)
            self.assertEqual(ev["generation"], 1)
            self.ip("addr", "add", "10.9.9.9/24", "dev", "lo")
            ev = self.network_changed(sub)
            self.assertNotIn("node_id", ev)
            self.assertEqual(ev["generation"], 2)
        self.assertTrue(wait_for(lambda: 'msg="network changed" generation=2' in self.d.log_text(), timeout=5),
                        self.d.log_text())
        # One burst (the link, its addresses, its routes) was one change.
        self.assertEqual(self.d.log_text().count('msg="network changed"'), 2, self.d.log_text())


if __name__ == "__main__":
    unittest.main(verbosity=2)
