"""test_outage_pacing.py - when a dead destination comes back, its backlog is
released at once but paced (issue #5 item 2): a ramp of transactions, not a
thundering herd of the whole deferred queue.

Both exchangers of example.net are down while 40 messages queue up (each
waits on the destination, long retry intervals).  The primary comes back
with a sink whose end-of-data reply takes 200 ms, so concurrent transactions
are visible.  Until the first transactions after the probe have completed,
at most the ramp's first window (2) may be open at once; later the window
grows; and the whole backlog arrives.
"""

import threading
import time
import unittest

from client import make_message, submit
from relay import Relay

SENDER = "alice@example.org"
N = 40


class Pacing(unittest.TestCase):

    def test_backlog_released_with_a_ramp(self):
        relay = Relay.for_test(self, router={"retry_intervals": ["1h"], "host_backoff": ["1s", "2s"],
                                             "max_connections_per_host": 10})
        relay.dns.set_mx_ips("example.org", [(10, "127.0.0.4")])
        relay.sink("127.0.0.4")
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2"), (20, "127.0.0.3")])
        primary = relay.sink("127.0.0.2", start=False)
        relay.start()

        lock = threading.Lock()
        state = {"active": 0, "done": 0, "timeline": []}

        def on_mail(arg):
            with lock:
                state["active"] += 1
                state["timeline"].append((state["active"], state["done"]))
            return "250 2.1.0 Ok"

        def on_eod(arg):
            time.sleep(0.2)
            with lock:
                state["active"] -= 1
                state["done"] += 1
            return "250 2.0.0 Ok"

        for i in range(N):
            rcpt = "user%d@example.net" % i
            submit(relay, SENDER, [rcpt], make_message(SENDER, rcpt, "backlog %d" % i, "Body.\r\n"))
        relay.wait_for_count("deferred", N, timeout=30)

        primary.script(mail=on_mail, eod=on_eod)
        primary.up()
        primary.wait_for_messages(N, timeout=60)
        relay.wait_for_count("delivered", N, timeout=30)

        timeline = state["timeline"]
        # The probe, then the ramp's first window of 2: no more than 2 open
        # transactions before the first two after the probe have finished.
        early = [active for active, done in timeline if done <= 1]
        self.assertTrue(early)
        self.assertLessEqual(max(early), 2, timeline[:12])
        # The window grows with success, within max_connections_per_host.
        self.assertGreater(max(a for a, _ in timeline), 2, timeline)
        self.assertLessEqual(max(a for a, _ in timeline), 10, timeline)


if __name__ == "__main__":
    unittest.main()
