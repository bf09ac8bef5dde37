"""test_ndr_durable.py - a report is issued only once the record that caused
it is durable (issue #16 follow-up: "a report can become durable before the
record that caused it").

A report's commit is acknowledged from the acceptance journal within a few
milliseconds, while the F record that makes it due (a permanent failure,
here a 550 from bob's MX) is appended by the queue's writer thread and
synced in a later group.  Were the report queued at once, a kill -9 in
between would leave the report in the journal and the recipient pending in
msg/: the restart retries bob, fails him again and reports him a second
time.

RELAYD_TEST_RECORD_DELAY_MS (RELAY_TEST_HOOKS builds) makes the writer thread
sleep before it appends records: for that long a record is neither in its
file nor synced (what a power loss before the group sync loses, or a kill -9
before the append), while the journal still acknowledges at once.  That
holds the window open for as long as the test needs it.
"""

import json
import unittest

from client import make_message, submit
from relay import Relay, needs_test_hooks

SENDER = "alice@example.org"
BOB = "bob@example.net"
DAVE = "dave@example.org"
CAROL = "carol@example.net"
STALL_MS = "30000"          # longer than any test step below: the kill comes first
SHORT_STALL_MS = "1500"


@needs_test_hooks
class ReportAfterItsCause(unittest.TestCase):

    def relay(self, stall_ms):
        relay = Relay.for_test(self, env={"RELAYD_TEST_RECORD_DELAY_MS": stall_ms})
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        relay.dns.set_mx_ips("example.org", [(10, "127.0.0.3")])
        self.far = relay.sink("127.0.0.2")                  # bob's MX: refuses bob
        self.far.script(rcpt={BOB: "550 5.1.1 no such user"})
        self.home = relay.sink("127.0.0.3")                 # the sender's MX
        # A failure before the kill: relayd cannot stop gracefully within the
        # stall (the stop flushes the records), so it is killed instead.
        self.addCleanup(lambda: "RELAYD_TEST_RECORD_DELAY_MS" in relay.env and relay.kill9())
        relay.start()
        return relay

    def tries(self):
        """RCPT commands for bob that bob's MX saw (it refuses him there)."""
        return sum(1 for _, c in self.far.commands if c.upper().startswith("RCPT TO:<" + BOB.upper()))

    def reports(self):
        return [m for m in self.home.messages if m.mail_from == ""]

    def restart_without_stall(self, relay):
        relay.kill9()
        relay.env.pop("RELAYD_TEST_RECORD_DELAY_MS")
        mark = relay.log_mark()
        relay.start()
        return mark

    def queued(self, relay):
        r = relay.relayctl("queue", "list", "--json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return [m["qid"] for m in json.loads(r.stdout)["messages"]]

    def test_no_report_before_its_failure_is_durable(self):
        """Killed while bob's F record is not durable: no report was queued,
        and after the restart bob is tried again and reported exactly once."""
        relay = self.relay(STALL_MS)
        qid = submit(relay, SENDER, [BOB], make_message(SENDER, BOB, "twice?", "Body.\r\n"))
        relay.wait_for_log("bounced", qid=qid, rcpt=BOB, timeout=20)
        # A message submitted now is acknowledged from the journal after any
        # report queued with the failure (same loop turn, earlier in the
        # journal): its 250 proves the daemon got where a report would be.
        # (It holds because this relay signs no report: a DKIM-signed one
        # goes through the thread pool before its commit.)
        probe = submit(relay, SENDER, [DAVE], make_message(SENDER, DAVE, "probe", "Probe.\r\n"))
        self.assertNotEqual(probe, qid)
        self.assertEqual(relay.count_log("ndr", qid=qid), 0,
                         "a report was queued before the failure it reports was durable")

        mark = self.restart_without_stall(relay)
        # The failure was never durable: bob is tried again (not a loss: his
        # sender was told nothing yet), fails again, and is reported once.
        relay.wait_for_log("bounced", since=mark, qid=qid, rcpt=BOB, timeout=20)
        sent = relay.wait_for_log("ndr", since=mark, qid=qid, timeout=20)
        relay.wait_for_log("delivered", since=mark, qid=sent["ndr_qid"], timeout=30)
        relay.wait_for_log("removed", since=mark, qid=qid, timeout=30)
        relay.wait_for_log("delivered", since=mark, qid=probe, rcpt=DAVE, timeout=30)
        self.assertEqual(relay.count_log("ndr", qid=qid), 1)
        self.assertEqual(relay.count_log("queue_journal_replayed", since=mark), 1)
        self.assertEqual(self.queued(relay), [], "left in the queue (a report replayed?)")
        reports = self.reports()
        self.assertEqual(len(reports), 1, self.home.messages)
        self.assertIn(sent["ndr_qid"].encode(), reports[0].data)

    def test_no_success_notice_before_its_delivery_is_durable(self):
        """NOTIFY=SUCCESS to a next hop without DSN: relayd owes the notice,
        and queues it only once the D record is durable.  Killed before
        that: no notice was queued (nor "delivered" logged); after the
        restart carol is delivered again (the window every delivery has
        before its record) and the sender gets exactly one notice."""
        relay = self.relay(STALL_MS)
        self.far.ehlo_features = [f for f in self.far.ehlo_features if f != "DSN"]
        qid = submit(relay, SENDER, [CAROL], make_message(SENDER, CAROL, "ok?", "Body.\r\n"),
                     rcpt_options={CAROL: ["NOTIFY=SUCCESS"]})
        relay.wait_for_log("deliver_attempt", qid=qid, code=250, timeout=20)
        probe = submit(relay, SENDER, [DAVE], make_message(SENDER, DAVE, "probe", "Probe.\r\n"))
        self.assertNotEqual(probe, qid)
        self.assertEqual(relay.count_log("delivered", qid=qid), 0)
        self.assertEqual(relay.count_log("ndr", qid=qid), 0,
                         "a success notice was queued before its delivery was durable")

        mark = self.restart_without_stall(relay)
        sent = relay.wait_for_log("ndr", since=mark, qid=qid, timeout=20)
        self.assertEqual((sent["rcpt"], sent["reason"]), (CAROL, "delivered"))
        relay.wait_for_log("delivered", since=mark, qid=sent["ndr_qid"], timeout=30)
        relay.wait_for_log("removed", since=mark, qid=qid, timeout=30)
        relay.wait_for_log("delivered", since=mark, qid=probe, rcpt=DAVE, timeout=30)
        self.assertEqual(relay.count_log("ndr", qid=qid), 1)
        self.assertEqual(self.queued(relay), [], "left in the queue (a notice replayed?)")
        self.assertEqual(len(self.reports()), 1, self.home.messages)

    def test_report_follows_the_durable_failure(self):
        """The report is queued once bob's F record is durable: killed after
        the report was logged, the restart does not try bob again."""
        # A short stall: the report comes after it, and the kill follows at
        # once, well within the stall of the REPORTED record that comes next.
        relay = self.relay(SHORT_STALL_MS)
        qid = submit(relay, SENDER, [BOB], make_message(SENDER, BOB, "once", "Body.\r\n"))
        relay.wait_for_log("bounced", qid=qid, rcpt=BOB, timeout=20)
        sent = relay.wait_for_log("ndr", qid=qid, timeout=20)
        self.assertEqual((sent["rcpt"], sent["reason"]), (BOB, "failed"))
        self.assertEqual(self.tries(), 1, self.far.commands)

        mark = self.restart_without_stall(relay)
        relay.wait_for_log("removed", since=mark, qid=qid, timeout=30)
        # The failure was durable before the report: bob is not tried again.
        self.assertEqual(relay.count_log("bounced", since=mark, qid=qid), 0)
        self.assertEqual(self.tries(), 1, self.far.commands)
        # Reported: once, or twice when the kill came before the REPORTED
        # record was durable (the window every report has after its commit;
        # not this test's).
        self.assertGreaterEqual(relay.count_log("ndr", qid=qid), 1)


if __name__ == "__main__":
    unittest.main()
