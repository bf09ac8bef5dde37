"""test_deliver_image.py - a new message's first delivery attempt is sent
from its in-memory image (issue #16 step 3), later ones from its file, and
both send the same bytes.

The sink's DATA reply is the moment the relay has a message open for its
first attempt: there the test rewrites a marker in the message's queue file
in place (same length).  The first attempt must still carry the original
marker (the body came from memory, not the file), and is refused with 451;
the retry, after the deferral dropped the image, reads the file and carries
the rewritten marker -- and is otherwise byte for byte the first attempt.
Covered: dot-stuffing (lines starting with "."), an 8-bit body (8BITMIME),
a message submitted with BDAT, a DKIM signature sent before the body, a message for two destinations (two
deliveries sharing one image) and the delivery thread (deliver.thread).
With the test hook RELAYD_TEST_IMAGE_MAX=0 (no image kept) the first attempt
already reads the file: that proves the marker check can see the difference.
"""

import glob
import os
import threading
import unittest

from client import submit
from relay import Relay, needs_test_hooks
from test_dkim import make_key, txt_record
from test_submit_bdat import bdat, split_at
from test_submit_smtp import auth_session, qid_of

SENDER = "alice@example.org"
ORIG = b"MARK-ORIGINAL-0123456789"
NEW = b"MARK-REWRITTEN-012345678"
assert len(ORIG) == len(NEW)

BODY = (b"First line with the marker " + ORIG + b"\r\n"
        b".a line that starts with a dot\r\n"
        b"..two dots\r\n"
        b".\r\n"
        b"8-bit: gr\xc3\xbc\xc3\x9fe, \xe2\x82\xac and a long line " + b"x" * 900 + b"\r\n"
        b"last line\r\n")


def message(subject, rcpts):
    return (b"From: <" + SENDER.encode() + b">\r\n"
            b"To: " + b", ".join(b"<" + r.encode() + b">" for r in rcpts) + b"\r\n"
            b"Subject: " + subject.encode() + b"\r\n"
            b"Message-ID: <" + subject.encode() + b"@example.org>\r\n"
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n"
            b"\r\n" + BODY)


class ImageCase(unittest.TestCase):

    def make(self, env=None, thread=False):
        path = make_key("example.org.s2026e", "ed25519")
        self.relay = Relay.for_test(self, env=env,
                                    dkim={"keys": [{"domain": "example.org", "selector": "s2026e",
                                                    "key": path}]})
        self.relay.dns.set_txt("s2026e._domainkey.example.org", txt_record(path, "ed25519"))
        if thread:
            self.relay.update_config(deliver={"thread": True})
        self.relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        self.relay.dns.set_mx_ips("example.com", [(10, "127.0.0.2")])
        self.seen = set()
        self.lock = threading.Lock()
        self.sink = self.relay.sink("127.0.0.2", ehlo_features=[
            "PIPELINING", "SIZE 10240000", "8BITMIME", "ENHANCEDSTATUSCODES"])
        self.sink.script(data=self.rewrite, eod=self.first_refused)
        self.relay.start()

    def rewrite(self, arg):
        """At DATA: the marker in every queue file, rewritten in place."""
        for path in glob.glob(os.path.join(self.relay.queue_dir, "msg", "[!.]*")):
            with open(path, "r+b") as f:
                data = f.read()
                at = data.find(ORIG)
                if at >= 0:
                    f.seek(at)
                    f.write(NEW)
        return "354 go ahead"

    def first_refused(self, msg):
        key = (msg.header("Subject"), tuple(msg.rcpt_addrs))
        with self.lock:
            first = key not in self.seen
            self.seen.add(key)
        return "451 4.3.0 first attempt refused" if first else "250 2.0.0 ok"

    def submit_bdat(self, msg, rcpts):
        r = auth_session(self.relay)
        self.addCleanup(r.close)
        self.assertEqual(r.cmd("MAIL FROM:<%s> BODY=8BITMIME" % SENDER)[0], 250)
        for rc in rcpts:
            self.assertEqual(r.cmd("RCPT TO:<%s>" % rc)[0], 250)
        r.send(bdat(split_at(msg, [40, 200])))
        r.read_reply()
        r.read_reply()
        code, text = r.read_reply()
        self.assertEqual(code, 250, text)
        return qid_of(text)

    def run_one(self, subject, rcpts, first_marker, use_bdat=False):
        if use_bdat:
            qid = self.submit_bdat(message(subject, rcpts), rcpts)
        else:
            qid = submit(self.relay, SENDER, rcpts, message(subject, rcpts),
                         mail_options=["BODY=8BITMIME"])
        self.sink.wait_for_messages(len(rcpts), timeout=30)
        for r in rcpts:
            self.relay.wait_for_log("delivered", qid=qid, rcpt=r, timeout=30)
        for r in rcpts:
            tx = [t for t in self.sink.transactions if t.rcpt_addrs == [r]]
            self.assertEqual(len(tx), 2, tx)
            first, retry = tx
            self.assertTrue(first.reply.startswith("451") and retry.reply.startswith("250"))
            self.assertEqual(first.mail_params.get("BODY"), "8BITMIME")
            # the first attempt's body is what was submitted ...
            self.assertIn(BODY.replace(ORIG, first_marker), first.data)
            self.assertTrue(first.data.endswith(BODY.replace(ORIG, first_marker)))
            self.assertIn(b"DKIM-Signature:", first.data)
            # ... and the retry from the file the same bytes but the rewritten marker
            self.assertIn(NEW, retry.data)
            self.assertEqual(retry.data, first.data.replace(ORIG, NEW))
        return qid

    def test_first_attempt_from_image_retry_from_file(self):
        self.make()
        self.run_one("one", ["bob@example.net"], ORIG)

    def test_two_destinations_share_the_image(self):
        self.make()
        self.run_one("two", ["bob@example.net", "carol@example.com"], ORIG)

    def test_submitted_with_bdat(self):
        self.make()
        self.run_one("bdat", ["bob@example.net"], ORIG, use_bdat=True)

    def test_delivery_thread(self):
        self.make(thread=True)
        self.run_one("thread", ["bob@example.net", "carol@example.com"], ORIG)

    @needs_test_hooks
    def test_without_image_first_attempt_reads_the_file(self):
        self.make(env={"RELAYD_TEST_IMAGE_MAX": "0"})
        self.run_one("file", ["bob@example.net"], NEW)


if __name__ == "__main__":
    unittest.main()
