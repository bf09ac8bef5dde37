"""test_ndr_retry.py - a report whose commit fails is not lost (issue 9, "a
bounce can be lost").

The queue lives on a small tmpfs of its own (4 MiB: too small for the 8 MiB
acceptance journal, so relayd runs without it and every commit is
acknowledged after its msg/ file is written and published).  A message to
bob@example.net waits while bob's MX is down; the file system is then
filled up, and bob's MX comes back refusing bob with 550.  The report to
the sender cannot be queued (ENOSPC): `event=ndr_failed`.  The original must
stay queued, and once space is freed the report is queued on the message's
retry timer and reaches the sender's MX exactly once.  The same for the
delay warning of a message that keeps waiting.

Needs root (mount); skipped otherwise.
"""

import json
import os
import shutil
import tempfile
import unittest

from client import make_message, submit
from relay import Relay
from tmpfs import fill, small_tmpfs

SENDER = "alice@example.org"
BOB = "bob@example.net"


class ReportCommitFailure(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="relayd-ndr-retry-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.qdir = small_tmpfs(self, os.path.join(self.tmp, "queue"), "4m")

    def listed(self, relay):
        r = relay.relayctl("queue", "list", "--json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return {m["qid"] for m in json.loads(r.stdout)["messages"]}

    def test_report_is_queued_once_the_disk_has_room_again(self):
        relay = Relay.for_test(self, tmpdir=self.tmp,
                               router={"retry_intervals": ["1s"], "host_backoff": ["1s", "1s"]})
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        relay.dns.set_mx_ips("example.org", [(10, "127.0.0.3")])
        far = relay.sink("127.0.0.2", start=False)           # bob's MX, down for now
        far.script(rcpt={BOB: "550 5.1.1 no such user"})
        home = relay.sink("127.0.0.3")                       # the sender's MX
        relay.start()
        relay.wait_for_log("queue_journal_unavailable")       # commits wait for msg/

        qid = submit(relay, SENDER, [BOB], make_message(SENDER, BOB, "lost?", "Body.\r\n"))
        relay.wait_for_log("deferred", qid=qid, rcpt=BOB, waiting="example.net")

        filler = os.path.join(self.qdir, "filler")
        fill(filler)
        far.up()
        relay.wait_for_log("bounced", qid=qid, rcpt=BOB, timeout=20)
        failed = relay.wait_for_log("ndr_failed", qid=qid, timeout=20)
        self.assertIn("ndr_qid", failed)                     # its commit failed
        # The original stays queued until its report is.
        self.assertIn(qid, self.listed(relay))
        self.assertEqual(relay.count_log("ndr", qid=qid), 0)
        self.assertEqual(relay.count_log("removed", qid=qid), 0)

        os.unlink(filler)
        sent = relay.wait_for_log("ndr", qid=qid, timeout=30)
        self.assertEqual((sent["rcpt"], sent["reason"], sent["to"]), (BOB, "failed", SENDER))
        relay.wait_for_log("removed", qid=qid, timeout=20)
        relay.wait_for_log("delivered", qid=sent["ndr_qid"], timeout=30)
        # The original is gone: nothing can report on it again.
        self.assertNotIn(qid, self.listed(relay))
        self.assertEqual(relay.count_log("ndr", qid=qid), 1)
        reports = [m for m in home.messages if m.mail_from == ""]
        self.assertEqual(len(reports), 1, home.messages)
        self.assertEqual(len(home.messages), 1, home.messages)
        self.assertIn(sent["ndr_qid"].encode(), reports[0].data)
        self.assertIn(b"bob@example.net", reports[0].data)

    def test_delay_warning_is_sent_once_the_disk_has_room_again(self):
        relay = Relay.for_test(self, tmpdir=self.tmp,
                               router={"retry_intervals": ["1s"], "host_backoff": ["1s", "1s"],
                                       "delay_warning": "1h", "max_queue_age": "2h"})
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])     # nobody listens
        relay.dns.set_mx_ips("example.org", [(10, "127.0.0.3")])
        home = relay.sink("127.0.0.3")
        relay.start()
        relay.wait_for_log("queue_journal_unavailable")
        qid = submit(relay, SENDER, [BOB], make_message(SENDER, BOB, "late", "Body.\r\n"))
        relay.wait_for_log("deferred", qid=qid, rcpt=BOB, waiting="example.net")

        filler = os.path.join(self.qdir, "filler")
        fill(filler)
        relay.update_config(router={"delay_warning": "1s"})          # the warning is due now
        mark = relay.log_mark()
        relay.sighup()
        relay.wait_for_log("reloaded", since=mark)
        failed = relay.wait_for_log("ndr_failed", since=mark, qid=qid, timeout=20)
        self.assertIn("ndr_qid", failed)
        self.assertEqual(relay.count_log("ndr", qid=qid), 0)

        os.unlink(filler)
        sent = relay.wait_for_log("ndr", qid=qid, timeout=30)
        self.assertEqual((sent["reason"], sent["rcpt"]), ("delayed", BOB))
        relay.wait_for_log("delivered", qid=sent["ndr_qid"], timeout=30)
        # Two more probes of bob's destination (1s apart) give the scheduler
        # time for any second warning (reports are retried after 1s).
        after = relay.log_mark()
        relay.wait_for_count("deferred", 2, since=after, qid=qid, rcpt=BOB, timeout=30)
        self.assertEqual(relay.count_log("ndr", qid=qid), 1)
        self.assertEqual(len(home.messages), 1, home.messages)
        self.assertEqual(home.messages[0].mail_from, "")
        r = relay.relayctl("queue", "show", qid, "--json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        events = [e["event"] for e in json.loads(r.stdout)["events"]]
        self.assertEqual(events, ["delay_warned"])


if __name__ == "__main__":
    unittest.main()
