"""test_queue_scan.py - the start-up scan of msg/ runs on its own thread after
the listeners open (issue 16): relayd answers and delivers while it runs,
relayctl says the queue is being scanned, every queued message is delivered
once, a reload during the scan does not stop it, and a stop or a kill -9
during the scan loses nothing.

The scan is slowed by the test hook RELAYD_TEST_SCAN_STALL_MS (each file
waits that long first; RELAY_TEST_HOOKS builds only).  The messages are
queued by a first run whose exchanger (a sink on 127.0.31.7) refuses every
connection (a destination wait); the next runs find them in msg/.
"""

import json
import time
import unittest

from client import make_message, submit
from relay import Relay

SENDER = "alice@example.org"
RCPT = "bob@scan.example"
N = 12


class QueueScanTest(unittest.TestCase):

    def fill(self):
        relay = Relay.for_test(self, router={"retry_intervals": ["1h"]})
        relay.dns.set_mx_ips("scan.example", [(10, "127.0.31.7")])
        sink = relay.sink("127.0.31.7")
        sink.down()                     # refused: the destination waits, due at the next start
        relay.start(scanned=False)
        qids = []
        for i in range(N):
            qids.append(submit(relay, SENDER, [RCPT],
                               make_message(SENDER, RCPT, "old %d" % i, "Body.\r\n")))
        for qid in qids:
            relay.wait_for_log("deferred", qid=qid, timeout=20)
        relay.stop()
        sink.up()
        return relay, sink, qids

    def subjects(self, sink):
        out = []
        for m in sink.messages:
            for line in m.data.split(b"\r\n"):
                if line.startswith(b"Subject: "):
                    out.append(line[9:].decode())
        return out

    def restart_delivers_all(self, relay, sink):
        """Start again without the stall: the scan finds all N, each delivered once."""
        relay.env["RELAYD_TEST_SCAN_STALL_MS"] = None
        mark = relay.log_mark()
        relay.start(scanned=False)
        done = relay.wait_for_log("queue_scanned", since=mark, timeout=30)
        self.assertEqual(done["count"], str(N))
        sink.wait_for_messages(N, timeout=30)
        self.assertEqual(sorted(self.subjects(sink)), sorted("old %d" % i for i in range(N)))

    def test_answers_and_delivers_while_scanning(self):
        relay, sink, qids = self.fill()
        relay.env["RELAYD_TEST_SCAN_STALL_MS"] = "1500"   # 18 s: room for slow (sanitizer) builds
        mark = relay.log_mark()
        relay.start(scanned=False)
        # The listeners are open with the scan still running: a new message
        # is accepted and delivered before the scan ends.
        new = submit(relay, SENDER, [RCPT], make_message(SENDER, RCPT, "new", "Body.\r\n"))
        relay.wait_for_log("delivered", since=mark, qid=new, timeout=20)
        self.assertEqual(relay.count_log("queue_scanned", since=mark), 0)
        r = relay.relayctl("queue", "list")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("scanning the queue:", r.stdout)
        r = relay.relayctl("queue", "list", "--json")
        self.assertIn("scanning", json.loads(r.stdout))
        # stats' figures are of what is loaded so far, and say so.
        r = relay.relayctl("stats")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("scanning the queue:", r.stdout)
        r = relay.relayctl("stats", "--json")
        self.assertIn("scanning", json.loads(r.stdout)["queue"])
        # A queue id not scanned yet: said so, not "unknown".
        r = relay.relayctl("queue", "show", qids[-1])
        if relay.count_log("queue_scanned", since=mark) == 0 and r.returncode != 0:
            self.assertIn("still being scanned", r.stdout + r.stderr)
        done = relay.wait_for_log("queue_scanned", since=mark, timeout=90)
        self.assertEqual((done["count"], done["corrupt"]), (str(N), "0"))
        sink.wait_for_messages(N + 1, timeout=30)
        subj = self.subjects(sink)
        self.assertEqual(sorted(subj), sorted(["old %d" % i for i in range(N)] + ["new"]))
        r = relay.relayctl("queue", "list")
        self.assertNotIn("scanning", r.stdout)
        self.assertNotIn("scanning", relay.relayctl("stats").stdout)
        self.assertNotIn("scanning", json.loads(relay.relayctl("stats", "--json").stdout)["queue"])

    def test_reload_during_the_scan(self):
        relay, sink, qids = self.fill()
        relay.env["RELAYD_TEST_SCAN_STALL_MS"] = "1000"     # 12 s
        mark = relay.log_mark()
        relay.start(scanned=False)
        relay.wait_for_log("started", since=mark)
        relay.sighup()
        relay.wait_for_log("reloaded", since=mark, timeout=20)
        # The reload came while the scan ran; the scan goes on to the end.
        self.assertEqual(relay.count_log("queue_scanned", since=mark), 0)
        r = relay.relayctl("queue", "list")
        self.assertIn("scanning the queue:", r.stdout)
        done = relay.wait_for_log("queue_scanned", since=mark, timeout=90)
        self.assertEqual((done["count"], done["corrupt"]), (str(N), "0"))
        sink.wait_for_messages(N, timeout=30)
        for qid in qids:
            relay.wait_for_log("delivered", since=mark, qid=qid, timeout=30)
        # Every message delivered, each once: the queue is empty, the sink has N.
        r = relay.relayctl("queue", "list")
        self.assertEqual(r.stdout, "queue is empty\n")
        self.assertEqual(sorted(self.subjects(sink)), sorted("old %d" % i for i in range(N)))
        self.assertEqual(relay.count_log("delivered", since=mark), N)

    def test_sigterm_during_the_scan_then_restart(self):
        relay, sink, qids = self.fill()
        relay.env["RELAYD_TEST_SCAN_STALL_MS"] = "5000"     # a minute's scan
        mark = relay.log_mark()
        relay.start(scanned=False)
        relay.wait_for_log("started", since=mark)
        t0 = time.monotonic()
        relay.stop(timeout=10)          # prompt: long before the scan would end
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(relay.count_log("queue_scanned", since=mark), 0)
        self.restart_delivers_all(relay, sink)

    def test_kill9_during_the_scan_loses_nothing(self):
        relay, sink, qids = self.fill()
        relay.env["RELAYD_TEST_SCAN_STALL_MS"] = "5000"
        mark = relay.log_mark()
        relay.start(scanned=False)
        relay.wait_for_log("started", since=mark)
        relay.kill9()
        self.restart_delivers_all(relay, sink)


if __name__ == "__main__":
    unittest.main()
