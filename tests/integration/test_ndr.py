"""test_ndr.py - non-delivery reports (RFC 3461/3462/3464) end to end.

The real relayd takes a message from alice over authenticated submission and
delivers it to a sink playing the recipients' MX (example.net, 127.0.0.2),
which refuses some recipients with 550.  The report relayd then makes goes
through its own queue and router to a second sink playing the sender's MX
(example.org, 127.0.0.3), where it is parsed with Python's email package and
checked field by field.  The log is checked too: it alone must tell who was
told what and why.

Delay and expiry reports (which need the queue's clock to run) are in
test_ndr_age.py.
"""

import email
import email.policy
import email.utils
import json
import re
import subprocess
import unittest

from client import make_message, submit
from relay import Relay, relayctl_bin

SENDER = "alice@example.org"
RFC5322_DATE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} "
                          r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
                          r"\d\d:\d\d:\d\d [+-]\d{4}$")


class NDRChecks:
    """What every report must look like (shared with test_ndr_age.py).
    The test sets self.relay and self.home (the sink playing the sender's MX)."""

    def wait_report(self, n=1):
        """The n-th message with envelope sender <> the sender's MX accepted."""
        self.home.wait_for_messages(n, timeout=30)
        reports = [x for x in self.home.messages if x.mail_from == ""]
        self.assertGreaterEqual(len(reports), n, self.home.messages)
        return reports[n - 1]

    def parse(self, report, ndr_qid):
        """Parse the report's bytes; check the raw form (CRLF, line length,
        boundary naming the report's queue id) on the way."""
        raw = report.data
        self.assertNotIn(b"\r\r", raw)
        self.assertEqual(raw.count(b"\n"), raw.count(b"\r\n"), "bare LF in the report")
        for ln in raw.split(b"\r\n"):
            self.assertLessEqual(len(ln), 998)
        header_block = raw.split(b"\r\n\r\n", 1)[0]
        for ln in header_block.split(b"\r\n"):
            self.assertTrue(all(b < 0x80 for b in ln), ln)   # headers are ASCII
        m = email.message_from_bytes(raw, policy=email.policy.compat32)
        self.assertTrue(m.is_multipart())
        boundary = m.get_boundary()
        self.assertIn(ndr_qid, boundary)
        self.assertIn(b"\r\n--" + boundary.encode() + b"--\r\n", raw)
        return m

    def check_top(self, m, subject):
        self.assertEqual(m.get_content_type(), "multipart/report")
        self.assertEqual(m.get_param("report-type"), "delivery-status")
        self.assertEqual(m["From"], "Mail Delivery System <MAILER-DAEMON@relay.test>")
        self.assertEqual(email.utils.parseaddr(m["To"])[1], SENDER)
        self.assertEqual(m["Subject"], subject)
        self.assertEqual(m["MIME-Version"], "1.0")
        self.assertEqual(m["Auto-Submitted"], "auto-replied")
        self.assertRegex(m["Message-ID"], r"^<[^<>@\s]+@relay\.test>$")
        self.check_date(m["Date"])
        for name in ("From", "To", "Subject", "Date", "Message-ID", "Content-Type"):
            self.assertEqual(len(m.get_all(name)), 1, name)

    def check_date(self, value):
        self.assertIsNotNone(value)
        self.assertRegex(value, RFC5322_DATE)
        self.assertIsNotNone(email.utils.parsedate_to_datetime(value))

    def parts(self, m, n):
        parts = m.get_payload()
        self.assertEqual(len(parts), n, [p.get_content_type() for p in parts])
        self.assertEqual(parts[0].get_content_type(), "text/plain")
        self.assertEqual(parts[1].get_content_type(), "message/delivery-status")
        return parts

    def status_blocks(self, part):
        """message/delivery-status -> (per-message fields, [per-recipient fields])."""
        blocks = part.get_payload()
        self.assertGreaterEqual(len(blocks), 2)
        for b in blocks[1:]:
            self.assertIsNotNone(b["Final-Recipient"])
            self.assertIsNotNone(b["Action"])
            self.assertRegex(b["Status"], r"^[245]\.\d{1,3}\.\d{1,3}$")
        return blocks[0], blocks[1:]

    @staticmethod
    def text_of(part):
        """A text part's content as str (it must be valid UTF-8)."""
        return part.get_payload(decode=True).decode("utf-8")

    @staticmethod
    def flat(text):
        """Text with its line breaks and indentation folded to single spaces."""
        return re.sub(r"\s+", " ", text).strip()



class Bounces(NDRChecks, unittest.TestCase):
    """Permanent failures (550 at RCPT) become one report to the sender."""

    def setUp(self):
        self.relay = Relay.for_test(self)
        self.relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        self.relay.dns.set_mx_ips("example.org", [(10, "127.0.0.3")])
        self.dest = self.relay.sink("127.0.0.2")
        self.home = self.relay.sink("127.0.0.3")      # the sender's MX: reports land here
        self.dest.script(rcpt={
            "bad@example.net": "550 5.1.1 <bad@example.net>: Recipient address rejected: no such user",
            "bad2@example.net": "550 5.1.1 <bad2@example.net>: mailbox unavailable",
            "never@example.net": "550 5.1.1 <never@example.net>: no such user",
            "*": "250 2.1.5 Ok",
        })
        self.relay.start()

    def send(self, rcpts, mail_options=(), rcpt_options=None, subject="quarterly numbers",
             body="The numbers are in.\r\nSee you.\r\n"):
        msg = make_message(SENDER, rcpts, subject, body,
                           extra_headers={"X-Test-Marker": "original-header-line"})
        return submit(self.relay, SENDER, rcpts, msg, mail_options=mail_options,
                      rcpt_options=rcpt_options or {})

    def test_failed_recipient_report_has_every_field(self):
        qid = self.send(["bad@example.net"], mail_options=["RET=HDRS", "ENVID=env-42"],
                        rcpt_options={"bad@example.net": ["NOTIFY=FAILURE",
                                                          "ORCPT=rfc822;Bad@Example.NET"]})
        line = self.relay.wait_for_log("ndr", qid=qid, timeout=30)
        self.assertEqual(line["to"], SENDER)
        self.assertEqual(line["reason"], "failed")
        self.assertEqual(line["rcpt"], "bad@example.net")
        self.assertEqual(line["status"], "5.1.1")
        ndr_qid = line["ndr_qid"]
        self.assertTrue(ndr_qid and ndr_qid != qid)

        report = self.wait_report()
        self.assertEqual(report.mail_from, "")               # envelope sender <>
        self.assertEqual(report.rcpt_addrs, [SENDER])
        m = self.parse(report, ndr_qid)
        self.check_top(m, "Undelivered Mail Returned to Sender")
        text, status, orig = self.parts(m, 3)

        # 1: plain language, the remote server's words, what to do
        self.assertEqual(text.get_content_type(), "text/plain")
        self.assertEqual(text.get_content_charset(), "utf-8")
        words = self.flat(self.text_of(text))
        self.assertIn("bad@example.net", words)
        self.assertIn("Recipient address rejected: no such user", words)
        self.assertIn("check the address", words)

        # 2: message/delivery-status
        per_msg, rcpts = self.status_blocks(status)
        self.assertEqual(per_msg["Reporting-MTA"], "dns; relay.test")
        self.assertEqual(per_msg["Original-Envelope-Id"], "env-42")
        self.check_date(per_msg["Arrival-Date"])
        self.assertEqual(len(rcpts), 1)
        r = rcpts[0]
        self.assertEqual(r["Original-Recipient"], "rfc822;Bad@Example.NET")
        self.assertEqual(r["Final-Recipient"], "rfc822; bad@example.net")
        self.assertEqual(r["Action"], "failed")
        self.assertEqual(r["Status"], "5.1.1")
        self.assertEqual(r["Remote-MTA"], "dns; mx1.example.net")
        self.assertRegex(self.flat(r["Diagnostic-Code"]),
                         r"^smtp; 550 5\.1\.1 <bad@example\.net>: Recipient address rejected: no such user$")
        self.check_date(r["Last-Attempt-Date"])
        self.assertIsNone(r["Will-Retry-Until"])

        # 3: RET=HDRS: the original's headers only
        self.assertEqual(orig.get_content_type(), "text/rfc822-headers")
        hdrs = orig.get_payload(decode=True).decode()
        self.assertIn("X-Test-Marker: original-header-line", hdrs)
        self.assertIn("Subject: quarterly numbers", hdrs)
        self.assertNotIn("The numbers are in.", hdrs)

    def test_audit_reads_the_bounce_from_relayds_own_log(self):
        """relayctl audit over the real log answers "why did mail to X bounce?"."""
        qid = self.send(["bad@example.net"])
        line = self.relay.wait_for_log("ndr", qid=qid, timeout=30)
        r = subprocess.run([relayctl_bin(), "audit", "--log", self.relay.log_path,
                            "--rcpt", "bad@example.net", "--json"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        [rec] = json.loads(r.stdout)["ndrs"]
        self.assertEqual(rec["qid"], qid)
        self.assertEqual(rec["ndr_qid"], line["ndr_qid"])
        self.assertEqual(rec["sender"], SENDER)
        self.assertEqual(rec["recipient"], "bad@example.net")
        self.assertEqual(rec["status"], "5.1.1")
        self.assertEqual(rec["reason"], "failed")
        self.assertEqual(rec["remote_host"], "mx1.example.net")
        self.assertEqual(rec["remote_ip"], "127.0.0.2")
        self.assertIn("Recipient address rejected: no such user", rec["reply"])
        self.assertEqual(rec["attempts"], 1)

    def test_ret_full_returns_the_whole_message(self):
        qid = self.send(["bad@example.net"], mail_options=["RET=FULL"])
        line = self.relay.wait_for_log("ndr", qid=qid, timeout=30)
        m = self.parse(self.wait_report(), line["ndr_qid"])
        text, status, orig = self.parts(m, 3)
        self.assertEqual(orig.get_content_type(), "message/rfc822")
        [inner] = orig.get_payload()
        self.assertEqual(inner["Subject"], "quarterly numbers")
        self.assertEqual(inner["X-Test-Marker"], "original-header-line")
        self.assertIn("The numbers are in.", inner.get_payload())
        per_msg, rcpts = self.status_blocks(status)
        self.assertIsNone(per_msg["Original-Envelope-Id"])      # no ENVID given
        self.assertIsNone(rcpts[0]["Original-Recipient"])       # no ORCPT given

    def test_notify_never_sends_no_report(self):
        mark = self.relay.log_mark()
        qid = self.send(["never@example.net"],
                        rcpt_options={"never@example.net": ["NOTIFY=NEVER"]})
        self.relay.wait_for_log("ndr_suppressed", qid=qid, rcpt="never@example.net",
                                reason="notify", timeout=30, since=mark)
        self.relay.wait_for_log("bounced", qid=qid, timeout=30, since=mark)
        self.assertEqual(self.relay.count_log("ndr", since=mark), 0)
        self.assertEqual(self.home.transactions, [])

    def test_notify_success_to_a_server_without_dsn_says_relayed(self):
        """RFC 3461 5.2.2: relayed to a server that does not announce DSN, relayd
        sends the success notice itself, and it says relayed, never delivered."""
        self.relay.dns.set_mx_ips("example.com", [(10, "127.0.0.4")])
        plain = self.relay.sink("127.0.0.4", ehlo_features=[
            "PIPELINING", "SIZE 10240000", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"])
        qid = self.send(["good@example.com"], mail_options=["RET=FULL"],
                        rcpt_options={"good@example.com": ["NOTIFY=SUCCESS"]})
        line = self.relay.wait_for_log("ndr", qid=qid, timeout=30)
        self.assertEqual(line["reason"], "delivered")
        self.assertEqual(line["rcpt"], "good@example.com")
        self.assertRegex(line["status"], r"^2\.\d{1,3}\.\d{1,3}$")
        m = self.parse(self.wait_report(), line["ndr_qid"])
        self.check_top(m, "Successful Mail Delivery Report")
        text, status, orig = self.parts(m, 3)
        words = self.flat(self.text_of(text))
        self.assertIn("good@example.com", words)
        self.assertIn("relayed", words)
        self.assertNotIn("delivered to", words)
        per_msg, rcpts = self.status_blocks(status)
        self.assertEqual(len(rcpts), 1)
        self.assertEqual(rcpts[0]["Action"], "relayed")
        self.assertRegex(rcpts[0]["Status"], r"^2\.\d{1,3}\.\d{1,3}$")
        self.assertEqual(rcpts[0]["Final-Recipient"], "rfc822; good@example.com")
        self.assertEqual(rcpts[0]["Remote-MTA"], "dns; mx1.example.com")
        # a success report returns headers only, even with RET=FULL (RFC 3461 4.3)
        self.assertEqual(orig.get_content_type(), "text/rfc822-headers")
        # and the message itself did arrive, without DSN parameters (not announced)
        [msg] = plain.messages
        self.assertEqual(msg.rcpts, [("good@example.com", {})])
        self.assertNotIn("RET", msg.mail_params)

    def test_notify_success_to_a_dsn_server_is_passed_on_not_doubled(self):
        """RFC 3461 5.2.3: the next hop announces DSN, so NOTIFY/ORCPT/ENVID/RET
        go with the message and its notice is the one: relayd sends none."""
        mark = self.relay.log_mark()
        qid = self.send(["good@example.net"], mail_options=["RET=HDRS", "ENVID=env-7"],
                        rcpt_options={"good@example.net": ["NOTIFY=SUCCESS,FAILURE",
                                                           "ORCPT=rfc822;Good@Example.NET"]})
        self.relay.wait_for_log("delivered", qid=qid, timeout=30, since=mark)
        # the message leaves the queue only once nothing is owed for it
        self.relay.wait_for_log("removed", qid=qid, timeout=30, since=mark)
        self.assertEqual(self.relay.count_log("ndr", qid=qid), 0)
        self.assertEqual(self.home.transactions, [])
        [msg] = self.dest.messages
        self.assertEqual(msg.mail_params.get("RET"), "HDRS")
        self.assertEqual(msg.mail_params.get("ENVID"), "env-7")
        [(addr, params)] = msg.rcpts
        self.assertEqual(addr, "good@example.net")
        self.assertEqual(params.get("NOTIFY"), "SUCCESS,FAILURE")
        self.assertEqual(params.get("ORCPT"), "rfc822;Good@Example.NET")

    def test_dsn_pass_on_is_durable_across_a_crash(self):
        """That the next hop took DSN on is recorded with the delivery: a crash
        while the message is still queued (another recipient deferred) does not
        bring relayd's own success notice back after the restart."""
        self.dest.script(rcpt={"later@example.net": ["450 4.2.1 mailbox busy", "250 2.1.5 Ok"],
                               "*": "250 2.1.5 Ok"})
        qid = self.send(["good@example.net", "later@example.net"],
                        rcpt_options={"good@example.net": ["NOTIFY=SUCCESS"]})
        self.relay.wait_for_log("delivered", qid=qid, rcpt="good@example.net", timeout=30)
        self.relay.wait_for_log("deferred", qid=qid, rcpt="later@example.net", timeout=30)
        self.relay.kill9()
        mark = self.relay.log_mark()
        self.relay.start()
        self.relay.wait_for_log("queue_loaded", since=mark, timeout=30)
        self.relay.wait_for_log("delivered", qid=qid, rcpt="later@example.net", timeout=30)
        self.relay.wait_for_log("removed", qid=qid, timeout=30, since=mark)
        self.assertEqual(self.relay.count_log("ndr", qid=qid), 0)
        self.assertEqual(self.home.transactions, [])
        self.assertEqual(self.relay.count_log("delivered", qid=qid, rcpt="good@example.net"), 1)

    def test_mixed_recipients_one_report_for_those_that_asked(self):
        mark = self.relay.log_mark()
        rcpts = ["good@example.net", "bad@example.net", "bad2@example.net", "never@example.net"]
        qid = self.send(rcpts, rcpt_options={"never@example.net": ["NOTIFY=NEVER"],
                                             "bad2@example.net": ["NOTIFY=FAILURE,DELAY"]})
        lines = self.relay.wait_for_count("ndr", 2, qid=qid, timeout=30, since=mark)
        self.relay.wait_for_log("ndr_suppressed", qid=qid, rcpt="never@example.net",
                                reason="notify", since=mark)
        # one report: both lines carry the same ndr_qid, one line per recipient
        self.assertEqual(len({l["ndr_qid"] for l in lines}), 1)
        self.assertEqual(sorted(l["rcpt"] for l in lines), ["bad2@example.net", "bad@example.net"])
        self.assertEqual(self.relay.count_log("ndr", qid=qid, rcpt="good@example.net"), 0)
        self.assertEqual(self.relay.count_log("ndr", qid=qid, rcpt="never@example.net"), 0)

        m = self.parse(self.wait_report(), lines[0]["ndr_qid"])
        text, status, orig = self.parts(m, 3)
        per_msg, groups = self.status_blocks(status)
        self.assertEqual(sorted(g["Final-Recipient"] for g in groups),
                         ["rfc822; bad2@example.net", "rfc822; bad@example.net"])
        for g in groups:
            self.assertEqual(g["Action"], "failed")
            self.assertEqual(g["Status"], "5.1.1")
        words = self.flat(self.text_of(text))
        self.assertIn("mailbox unavailable", words)
        self.assertIn("no such user", words)
        self.assertNotIn("good@example.net", words)
        self.assertEqual(len([x for x in self.home.messages if x.mail_from == ""]), 1)

    def test_report_that_fails_is_not_reported_again(self):
        mark = self.relay.log_mark()
        # The sender's own MX refuses the report: it bounces, and nothing
        # more is sent (no report on a report, no loop).
        self.home.script(rcpt={SENDER: "550 5.1.1 <alice@example.org>: no such user here"})
        qid = self.send(["bad@example.net"])
        line = self.relay.wait_for_log("ndr", qid=qid, timeout=30, since=mark)
        ndr_qid = line["ndr_qid"]
        self.relay.wait_for_log("bounced", qid=ndr_qid, timeout=30, since=mark)
        self.relay.wait_for_log("ndr_suppressed", qid=ndr_qid, reason="null_sender",
                                timeout=30, since=mark)
        self.assertEqual(self.relay.count_log("ndr", qid=ndr_qid, since=mark), 0)
        self.assertEqual(len(self.relay.find_log("ndr", since=mark)), 1)
        # the report really was offered with MAIL FROM:<> and refused
        self.assertTrue(any(line.upper().startswith("MAIL FROM:<>")
                            for _, line in self.home.commands), self.home.commands)
        self.assertEqual(self.home.messages, [])

    def test_stats_count_reports(self):
        qid = self.send(["bad@example.net"])
        self.relay.wait_for_log("ndr", qid=qid, timeout=30)
        self.wait_report()
        doc = self.relay.relayctl("stats", "--json", json=True)
        self.assertEqual(doc["counters"]["ndr_sent"], 1, doc)


if __name__ == "__main__":
    unittest.main()
