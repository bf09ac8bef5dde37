"""test_ndr_age.py - reports that the queue's clock causes: the one delay
warning ("still being retried", Will-Retry-Until) and the expiry report
(the destination was unreachable since X after N attempts), on the real
relayd with a destination MX that is down.  Short durations are configured
so that the queue's clock runs in seconds; nothing asserts on timing.
"""

import email.utils
import unittest

from client import make_message, submit
from relay import Relay
from test_ndr import NDRChecks, SENDER


class AgeReports(NDRChecks, unittest.TestCase):

    def make(self, **router):
        self.relay = Relay.for_test(self)
        self.relay.update_config(router=dict(retry_intervals=["1s"], host_backoff=["1s", "2s"],
                                             **router))
        self.relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        self.relay.dns.set_mx_ips("example.org", [(10, "127.0.0.3")])
        self.dest = self.relay.sink("127.0.0.2", start=False)    # down: connection refused
        self.home = self.relay.sink("127.0.0.3")
        self.relay.start()

    def send(self, rcpts, **kw):
        msg = make_message(SENDER, rcpts, "status report", "Body.\r\n")
        return submit(self.relay, SENDER, rcpts, msg, **kw)

    def test_expired_report_says_since_when_and_how_often(self):
        self.make(max_queue_age="4s", delay_warning="0")
        qid = self.send(["carol@example.net"], mail_options=["RET=FULL"])
        line = self.relay.wait_for_log("ndr", qid=qid, timeout=60)
        self.assertEqual(line["reason"], "expired")
        self.assertEqual(line["rcpt"], "carol@example.net")
        self.assertRegex(line["status"], r"^[45]\.\d{1,3}\.\d{1,3}$")
        self.assertGreaterEqual(int(line["attempts"]), 1)
        self.assertRegex(line.get("down_since") or "",
                         r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.relay.wait_for_log("expired", qid=qid, timeout=30)

        m = self.parse(self.wait_report(), line["ndr_qid"])
        self.check_top(m, "Undelivered Mail Returned to Sender")
        text, status, orig = self.parts(m, 3)
        words = self.flat(self.text_of(text))
        self.assertIn("carol@example.net", words)
        self.assertIn("unreachable since", words)
        self.assertRegex(words, r"we tried %s times?" % line["attempts"])
        per_msg, rcpts = self.status_blocks(status)
        self.assertEqual(rcpts[0]["Action"], "failed")
        self.assertEqual(rcpts[0]["Status"], line["status"])
        self.check_date(rcpts[0]["Last-Attempt-Date"])
        self.assertIsNone(rcpts[0]["Will-Retry-Until"])
        self.assertEqual(orig.get_content_type(), "message/rfc822")    # RET=FULL on failure
        self.assertEqual(self.dest.connections, 0)

    def test_outage_start_survives_an_empty_queue(self):
        """The outage ends only when the destination is seen up again: its
        waiting queue emptying in between (the first message expired) does
        not restart it, so the next message's report names the same start."""
        self.make(max_queue_age="3s", delay_warning="0")
        first = self.send(["carol@example.net"])
        one = self.relay.wait_for_log("ndr", qid=first, timeout=60)
        self.relay.wait_for_log("expired", qid=first, timeout=30)
        # Nothing waits on example.net now; it was never seen up.
        second = self.send(["dave@example.net"])
        two = self.relay.wait_for_log("ndr", qid=second, timeout=60)
        self.assertEqual(two["reason"], "expired")
        self.assertRegex(one.get("down_since") or "", r"^\d{4}-")
        self.assertEqual(two.get("down_since"), one["down_since"])
        self.assertEqual(self.relay.count_log("destination_down", dest="example.net"), 1)
        self.assertEqual(self.relay.count_log("destination_up"), 0)
        self.assertEqual(self.dest.connections, 0)

    def test_delay_warning_once_then_delivery(self):
        self.make(max_queue_age="1h", delay_warning="2s")
        qid = self.send(["carol@example.net"], mail_options=["RET=FULL"])
        line = self.relay.wait_for_log("ndr", qid=qid, reason="delayed", timeout=60)
        self.assertEqual(line["rcpt"], "carol@example.net")
        self.assertRegex(line["status"], r"^4\.\d{1,3}\.\d{1,3}$")

        m = self.parse(self.wait_report(), line["ndr_qid"])
        self.check_top(m, "Delayed Mail (still being retried)")
        text, status, orig = self.parts(m, 3)
        words = self.flat(self.text_of(text))
        self.assertIn("keep trying until", words)
        self.assertIn("No action is needed", words)
        per_msg, rcpts = self.status_blocks(status)
        self.assertEqual(rcpts[0]["Action"], "delayed")
        self.check_date(rcpts[0]["Will-Retry-Until"])
        arrival = email.utils.parsedate_to_datetime(per_msg["Arrival-Date"])
        until = email.utils.parsedate_to_datetime(rcpts[0]["Will-Retry-Until"])
        self.assertAlmostEqual((until - arrival).total_seconds(), 3600, delta=2)
        # a delay report returns headers only, whatever RET says
        self.assertEqual(orig.get_content_type(), "text/rfc822-headers")

        # The destination comes back: the message goes out, and no second
        # warning was sent meanwhile.
        self.dest.up()
        self.relay.wait_for_log("delivered", qid=qid, timeout=60)
        self.assertEqual(self.relay.count_log("ndr", qid=qid), 1)


if __name__ == "__main__":
    unittest.main()
