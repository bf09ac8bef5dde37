"""test_log_reopen.py - SIGUSR1 reopens log_file (logrotate's postrotate), and
nothing is lost across a rotation (issue 10, point 7; the C side).

While a client thread submits messages one after another, the test renames
the log (what logrotate does), sends SIGUSR1, waits for event=log_reopened to
appear in a new file at the old path and for more messages to be accepted
after it, then stops the client.  Every queue id the client was given has
its `accepted` event in exactly one of the two files, exactly once; both
files hold some (the rotation happened mid-stream); the renamed file ends
before log_reopened, which is the first line of the new one.
Without the SIGUSR1 handler the signal's default action kills relayd.
"""

import os
import signal
import threading
import unittest

from client import make_message, submit
from relay import Relay, parse_log_line

SENDER = "alice@example.org"
RCPT = "bob@example.net"


def accepted_qids(path):
    out = []
    with open(path, "rb") as f:
        for raw in f.read().decode("utf-8", "replace").split("\n"):
            d = parse_log_line(raw) if raw.strip() else {}
            if d.get("event") == "accepted":
                out.append(d.get("qid"))
    return out


class LogReopen(unittest.TestCase):
    def test_sigusr1_reopens_and_loses_nothing(self):
        relay = Relay.for_test(self)
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        relay.sink("127.0.0.2")
        relay.start()

        qids, errors = [], []
        stop = threading.Event()

        def client():
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    qids.append(submit(relay, SENDER, [RCPT],
                                       make_message(SENDER, RCPT, "m%d" % n, "body %d\r\n" % n)))
                except Exception as e:          # reported by the test below
                    errors.append(e)
                    return

        t = threading.Thread(target=client, daemon=True)
        t.start()
        try:
            relay.wait_for_count("accepted", 5, timeout=30)
            rotated = relay.log_path + ".1"
            os.rename(relay.log_path, rotated)
            relay.signal(signal.SIGUSR1)
            # relay.log_path is the new file from here on.
            ev = relay.wait_for_log("log_reopened", timeout=10)
            self.assertEqual(ev["log_file"], relay.log_path)
            relay.wait_for_count("accepted", 5, timeout=30)
        finally:
            stop.set()
            t.join(60)
        self.assertFalse(errors, errors)
        self.assertEqual(relay.stop(), 0)

        old, new = accepted_qids(rotated), accepted_qids(relay.log_path)
        self.assertGreaterEqual(len(old), 5)
        self.assertGreaterEqual(len(new), 5)
        self.assertEqual(sorted(old + new), sorted(qids))       # each exactly once
        self.assertFalse(set(old) & set(new))
        with open(relay.log_path) as f:
            first = parse_log_line(f.readline())
        self.assertEqual(first.get("event"), "log_reopened")
        with open(rotated) as f:
            self.assertNotIn("event=log_reopened", f.read())

    def test_reopen_failure_keeps_the_old_file(self):
        """A log path relayd can no longer create: log_reopen_failed goes to
        the file still open, and logging goes on there."""
        relay = Relay.for_test(self)
        logdir = os.path.join(relay.tmpdir, "logs")
        os.mkdir(logdir)
        relay.log_path = os.path.join(logdir, "relayd.log")
        relay.update_config(log_file=relay.log_path)
        relay.start()
        moved = os.path.join(relay.tmpdir, "moved.log")
        os.rename(relay.log_path, moved)
        os.rmdir(logdir)                        # the path cannot be created now
        mark = len(open(moved).readlines())
        relay.signal(signal.SIGUSR1)
        relay.log_path = moved
        ev = relay.wait_for_log("log_reopen_failed", since=mark)
        self.assertIn("No such file", ev["error"])
        self.assertEqual(relay.relayctl("stats").returncode, 0)
        self.assertTrue(relay.running)


if __name__ == "__main__":
    unittest.main()
