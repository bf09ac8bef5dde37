"""test_submit_data.py - message intake: the Received: header relayd
prepends (RFC 5321 4.4, RFC 3848 protocol names, TLS details), Date: and
Message-ID: added only when missing and at the end of the header section
(RFC 6409 8), dot-unstuffing, SMTP smuggling (bare LF / bare CR,
CVE-2023-51764: 550 5.6.11, nothing queued, nothing pipelined behind it
executed), large messages streamed, a client that leaves while the queue
commits, and durable acceptance: a message that got its 250 survives
SIGKILL and is there after a restart.
"""

import email
import email.policy
import os
import re
import socket
import time
import unittest

from client import make_message, raw_session, submit
from test_submit_smtp import QueueOnlyRelay as Relay
from test_submit_smtp import (auth_session, qid_of, queued_files, read_queued, send_message,
                              stop_cleanly)


class SubmitHeadersTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.relay = Relay()
        cls.relay.start()

    @classmethod
    def tearDownClass(cls):
        stop_cleanly(cls.relay)

    def test_received_date_and_message_id_are_added(self):
        msg = make_message("alice@example.org", "bob@example.net", "no date", "body\n",
                           date=False, message_id=False)
        qid = submit(self.relay, "alice@example.org", ["bob@example.net"], msg)
        _, body = read_queued(self.relay, qid)
        text = body.decode()
        head, _, rest = text.partition("\r\n\r\n")
        self.assertEqual(rest, "body\r\n")
        self.assertTrue(text.startswith("Received: from client.test ([127.0.0.1])\r\n"
                                        "\tby relay.test (relayd) with ESMTPSA id %s\r\n" % qid),
                        text[:200])
        self.assertRegex(head, r"\(using TLSv1\.[23] with cipher \S+ \(\d+/\d+ bits\)\)")
        self.assertRegex(head, r"\tfor <bob@example\.net>; \w{3}, \d{1,2} \w{3} \d{4} "
                               r"\d\d:\d\d:\d\d [+-]\d{4}\r\n")
        parsed = email.message_from_string(text, policy=email.policy.default)
        self.assertEqual(parsed["Message-ID"], "<%s@relay.test>" % qid)
        self.assertIsNotNone(parsed["Date"].datetime)
        # added at the end of the header section, after the client's fields
        names = [l.split(":")[0] for l in head.split("\r\n") if l and l[0] not in " \t"]
        self.assertEqual(names, ["Received", "From", "To", "Subject", "Date", "Message-ID"])

    def test_client_date_and_message_id_are_kept(self):
        msg = make_message("alice@example.org", ["bob@example.net", "carol@example.net"],
                           "dated", "x", extra_headers={"Date": "Mon, 1 Jan 2024 00:00:00 +0000",
                                                        "message-id": "<mine@client.test>"},
                           date=False, message_id=False)
        qid = submit(self.relay, "alice@example.org", ["bob@example.net", "carol@example.net"], msg)
        _, body = read_queued(self.relay, qid)
        text = body.decode()
        self.assertEqual(text.count("Date:"), 1)
        self.assertEqual(text.lower().count("message-id:"), 1)
        self.assertIn("Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n", text)
        self.assertIn("message-id: <mine@client.test>\r\n", text)
        self.assertNotIn("\tfor <", text)           # two recipients: no "for"

    def test_dot_unstuffing_and_exact_body(self):
        body = ".leading dot\n..two dots\n.\nend\n"
        msg = make_message("alice@example.org", "bob@example.net", "dots", body)
        qid = submit(self.relay, "alice@example.org", ["bob@example.net"], msg)   # smtplib stuffs
        _, got = read_queued(self.relay, qid)
        self.assertTrue(got.endswith(b"\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n"), got)
        self.relay.wait_for_log("accepted", qid=qid, size=len(msg.encode()))

    def test_large_message_is_streamed_whole(self):
        line = b"0123456789" * 9 + b"\r\n"
        n = 40000                                       # ~3.6 MB
        r = auth_session(self.relay)
        self.addCleanup(r.close)
        r.cmd("MAIL FROM:<alice@example.org> SIZE=%d" % (n * len(line) + 100))
        r.cmd("RCPT TO:<bob@example.net>")
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send(b"Subject: big\r\n\r\n")
        chunk = line * 1000
        for _ in range(n // 1000):
            r.send(chunk)
        r.send(b".\r\n")
        code, text = r.read_reply()
        self.assertEqual(code, 250)
        _, body = read_queued(self.relay, qid_of(text))
        self.assertTrue(body.endswith(b"\r\n\r\n" + chunk * (n // 1000)))


class SubmitSmugglingTest(unittest.TestCase):
    """A bare LF or CR in the data is refused; "\\n.\\n" never ends the data."""

    @classmethod
    def setUpClass(cls):
        cls.relay = Relay()
        cls.relay.start()

    @classmethod
    def tearDownClass(cls):
        stop_cleanly(cls.relay)

    SMUGGLED = ("MAIL FROM:<alice@example.org>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n"
                "From: alice@example.org\r\nSubject: smuggled\r\n\r\nevil\r\n")

    def attempt(self, payload):
        """Send a message with payload inside it, then the real end of data and
        a NOOP; return (reply to the data, the next reply)."""
        r = auth_session(self.relay)
        self.addCleanup(r.close)
        mark = self.relay.log_mark()
        before = queued_files(self.relay)
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.org>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<bob@example.net>")[0], 250)
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send(b"Subject: innocent\r\n\r\nhello\r\n" + payload + b".\r\nNOOP\r\n")
        first, second = r.read_reply(), r.read_reply()
        self.assertEqual(queued_files(self.relay), before)
        self.assertEqual(self.relay.count_log("accepted", since=mark), 0)
        self.assertEqual(self.relay.count_log("rejected", since=mark, stage="data"), 1)
        return first, second, r

    def check_refused(self, payload):
        first, second, r = self.attempt(payload)
        self.assertEqual(first[0], 550)
        self.assertTrue(first[1].startswith("5.6.11 "), first)
        self.assertIn("bare LF/CR not allowed", first[1])
        # nothing smuggled was run as a command: the next reply is the NOOP's
        self.assertEqual(second, (250, "2.0.0 Ok"))
        # and the session is still good for a real message
        code, text = send_message(r, "alice@example.org", ["bob@example.net"],
                                  b"Subject: after\r\n\r\nfine\r\n")
        self.assertEqual(code, 250)

    def test_bare_lf_dot_bare_lf(self):
        self.check_refused(b"\n.\n" + self.SMUGGLED.encode())

    def test_crlf_dot_bare_lf(self):
        self.check_refused(b".\n" + self.SMUGGLED.encode())

    def test_bare_lf_dot_crlf(self):
        self.check_refused(b"x\n.\r\n" + self.SMUGGLED.encode())

    def test_bare_cr_dot(self):
        self.check_refused(b"x\r.\r\n" + self.SMUGGLED.encode())

    def test_bare_cr_inside_a_line(self):
        self.check_refused(b"abc\rdef\r\n")

    def test_bare_lf_line_endings(self):
        # (LF "." CRLF would not end the data either: only CRLF "." CRLF does)
        self.check_refused(b"line one\nline two\nline three\r\n")


    def test_nul_in_the_data_is_refused(self):
        # SMTP data is text lines (RFC 5321 2.3.8, 4.1.1.4), and NUL is not
        # text, not even with 8BITMIME (RFC 6152); only BINARYMIME (RFC 3030,
        # not offered) may carry it.  Refused at the end of the data, nothing
        # queued, the data never ended early, the session goes on.
        for payload in (b"a\x00b\r\n", b"\x00\r\n", b"\x00\r\n\x00.\r\nmore\r\n"):
            with self.subTest(payload=payload):
                first, second, r = self.attempt(payload)
                self.assertEqual(first[0], 550)
                self.assertTrue(first[1].startswith("5.6.0 "), first)
                self.assertIn("NUL", first[1])
                self.assertEqual(second, (250, "2.0.0 Ok"))
                code, text = send_message(r, "alice@example.org", ["bob@example.net"],
                                          b"Subject: after\r\n\r\nfine\r\n")
                self.assertEqual(code, 250)

class SubmitDurabilityTest(unittest.TestCase):

    def test_a_message_that_got_250_survives_sigkill(self):
        relay = Relay.for_test(self)
        relay.start()
        msg = make_message("alice@example.org", "bob@example.net", "durable", "keep me\n")
        qid = submit(relay, "alice@example.org", ["bob@example.net"], msg)
        relay.kill9()
        # in msg/ already, or only in the journal: the start replays it
        relay.start()
        relay.wait_for_log("queue_scan", messages=1)
        self.assertIn(qid, queued_files(relay))
        env, body = read_queued(relay, qid)
        self.assertEqual(env["sender"], "alice@example.org")
        self.assertEqual(env["rcpts"][0][1], "bob@example.net")
        self.assertTrue(body.endswith(b"\r\n\r\nkeep me\r\n"))

    def test_a_failed_commit_is_451_and_never_250(self):
        relay = Relay.for_test(self)
        relay.start()
        r = auth_session(relay)
        self.addCleanup(r.close)
        r.cmd("MAIL FROM:<alice@example.org>")
        r.cmd("RCPT TO:<bob@example.net>")
        self.assertEqual(r.cmd("DATA")[0], 354)
        # the queue cannot move the message into msg/ any more; it is too
        # large for the journal (queue/QUEUE.md), so only its file holds it
        relay.remove_msg_dir()
        r.send("Subject: lost\r\n\r\n" + ("x" * 998 + "\r\n") * 100 + ".\r\n")
        self.assertEqual(r.read_reply(), (451, "4.3.0 Error: queue file write error"))
        self.assertEqual(relay.count_log("accepted"), 0)
        self.assertEqual(r.cmd("NOOP"), (250, "2.0.0 Ok"))

    def test_client_leaving_during_commit_breaks_nothing(self):
        relay = Relay.for_test(self)
        relay.start()
        r = auth_session(relay)
        r.cmd("MAIL FROM:<alice@example.org>")
        r.cmd("RCPT TO:<bob@example.net>")
        r.cmd("DATA")
        r.send("Subject: gone\r\n\r\nbye\r\n.\r\nQUIT\r\n")
        r.sock.shutdown(socket.SHUT_RDWR)
        r.close()
        line = relay.wait_for_log("accepted", user="alice")
        self.assertIn(line["qid"], queued_files(relay))
        # relayd is alive and well
        msg = make_message("alice@example.org", "bob@example.net", "next", "x")
        submit(relay, "alice@example.org", ["bob@example.net"], msg)
        self.assertEqual(relay.stop(), 0)


if __name__ == "__main__":
    unittest.main()
