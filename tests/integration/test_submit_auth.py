"""test_submit_auth.py - SMTP AUTH (RFC 4954) through Cyrus SASL against a
real sasldb: PLAIN and LOGIN with and without an initial response,
CRAM-MD5 and SCRAM-SHA-256 when the installed plugins offer them, wrong
passwords and unknown users (535 5.7.8, event=auth_failed without the
password), "*" cancellation, base64 errors, unknown mechanisms, AUTH
before TLS, and the per-IP slow-down then refusal of repeated failures.
"""

import base64
import hashlib
import hmac
import os
import smtplib
import time
import unittest

from client import client_context, connect, make_message, raw_session, submit
from test_submit_smtp import QueueOnlyRelay as Relay
from test_submit_smtp import auth_session, read_queued, stop_cleanly

MECHS = "PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256"


def b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


def tls_session(relay):
    """A RawSession after EHLO, STARTTLS, EHLO; returns (session, EHLO lines)."""
    r = raw_session(relay.host, relay.submit_port)
    r.cmd("EHLO client.test")
    r.starttls()
    r.send("EHLO client.test\r\n")
    code, lines = r.read_reply_lines()
    assert code == 250
    return r, lines


def offered(lines):
    for l in lines:
        if l.startswith("AUTH "):
            return l[5:].split()
    return []


class SubmitAuthTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.relay = Relay(submit={"sasl_mechanisms": MECHS, "auth_fail_limit": 1000,
                                  "auth_fail_delay_after": 1000})
        cls.relay.start()

    @classmethod
    def tearDownClass(cls):
        stop_cleanly(cls.relay)

    def session(self):
        r, lines = tls_session(self.relay)
        self.addCleanup(r.close)
        return r, lines

    def assertAuthenticated(self, r, mech, user="alice"):
        self.relay.wait_for_log("authenticated", mech=mech, user=user)
        self.assertEqual(r.cmd("MAIL FROM:<%s@example.org>" % user), (250, "2.1.0 Ok"))

    def test_auth_is_neither_offered_nor_accepted_before_tls(self):
        with raw_session(self.relay.host, self.relay.submit_port) as r:
            r.send("EHLO client.test\r\n")
            code, lines = r.read_reply_lines()
            self.assertFalse(any(l.startswith("AUTH") for l in lines), lines)
            self.assertEqual(r.cmd("AUTH PLAIN " + b64("\0alice\0alicepw")),
                             (530, "5.7.0 Must issue a STARTTLS command first"))
            self.assertEqual(r.cmd("MAIL FROM:<alice@example.org>")[0], 530)

    def test_mail_before_auth_is_refused(self):
        r, _ = self.session()
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.org>"),
                         (530, "5.7.0 Authentication required"))

    def test_plain_with_initial_response(self):
        r, lines = self.session()
        self.assertIn("PLAIN", offered(lines))
        self.assertEqual(r.cmd("AUTH PLAIN " + b64("\0alice\0alicepw")),
                         (235, "2.7.0 Authentication successful"))
        self.assertAuthenticated(r, "PLAIN")

    def test_plain_without_initial_response_and_authzid(self):
        r, _ = self.session()
        self.assertEqual(r.cmd("AUTH plain"), (334, ""))
        self.assertEqual(r.cmd(b64("bob\0bob\0bobpw"))[0], 235)
        self.assertAuthenticated(r, "PLAIN", user="bob")

    def test_login(self):
        r, lines = self.session()
        self.assertIn("LOGIN", offered(lines))
        code, text = r.cmd("AUTH LOGIN")
        self.assertEqual((code, base64.b64decode(text)), (334, b"Username:"))
        code, text = r.cmd(b64("alice"))
        self.assertEqual((code, base64.b64decode(text)), (334, b"Password:"))
        self.assertEqual(r.cmd(b64("alicepw"))[0], 235)
        self.assertAuthenticated(r, "LOGIN")

    def test_login_with_initial_response(self):
        r, _ = self.session()
        code, text = r.cmd("AUTH LOGIN " + b64("alice"))
        self.assertEqual((code, base64.b64decode(text)), (334, b"Password:"))
        self.assertEqual(r.cmd(b64("alicepw"))[0], 235)

    def test_cram_md5(self):
        r, lines = self.session()
        if "CRAM-MD5" not in offered(lines):
            self.skipTest("the CRAM-MD5 plugin is not installed")
        code, text = r.cmd("AUTH CRAM-MD5")
        self.assertEqual(code, 334)
        challenge = base64.b64decode(text)
        digest = hmac.new(b"alicepw", challenge, hashlib.md5).hexdigest()
        self.assertEqual(r.cmd(b64("alice " + digest))[0], 235)
        self.assertAuthenticated(r, "CRAM-MD5")

    def test_cram_md5_through_smtplib(self):
        s = connect(self.relay)
        self.addCleanup(s.close)
        if not s.has_extn("auth") or "CRAM-MD5" not in s.esmtp_features["auth"].split():
            self.skipTest("the CRAM-MD5 plugin is not installed")
        s.user, s.password = "alice", "alicepw"
        code, _ = s.auth("CRAM-MD5", s.auth_cram_md5)
        self.assertEqual(code, 235)

    def test_scram_sha_256(self):
        r, lines = self.session()
        if "SCRAM-SHA-256" not in offered(lines):
            self.skipTest("the SCRAM plugin is not installed")
        cnonce = b64(os.urandom(18))
        first_bare = "n=alice,r=" + cnonce
        code, text = r.cmd("AUTH SCRAM-SHA-256 " + b64("n,," + first_bare))
        self.assertEqual(code, 334)
        server_first = base64.b64decode(text).decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        self.assertTrue(attrs["r"].startswith(cnonce))
        salted = hashlib.pbkdf2_hmac("sha256", b"alicepw", base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored = hashlib.sha256(client_key).digest()
        final_wo_proof = "c=biws,r=" + attrs["r"]
        auth_msg = ",".join([first_bare, server_first, final_wo_proof]).encode()
        sig = hmac.new(stored, auth_msg, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        code, text = r.cmd(b64(final_wo_proof + ",p=" + b64(proof)))
        self.assertEqual(code, 334)                 # server-final, RFC 4954 4
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        want = b64(hmac.new(server_key, auth_msg, hashlib.sha256).digest())
        self.assertEqual(base64.b64decode(text).decode(), "v=" + want)
        self.assertEqual(r.cmd("")[0], 235)
        self.assertAuthenticated(r, "SCRAM-SHA-256")

    def test_wrong_password_is_535_and_logged_without_the_password(self):
        mark = self.relay.log_mark()
        r, _ = self.session()
        self.assertEqual(r.cmd("AUTH PLAIN " + b64("\0alice\0Secret-Wrong-1")),
                         (535, "5.7.8 Error: authentication failed"))
        code, _ = r.cmd("AUTH LOGIN " + b64("bob"))
        self.assertEqual(r.cmd(b64("Secret-Wrong-2"))[0], 535)
        self.assertEqual(r.cmd("AUTH PLAIN " + b64("\0nosuchuser\0Secret-Wrong-3"))[0], 535)
        self.relay.wait_for_log("auth_failed", since=mark, user="alice", client="127.0.0.1",
                                mech="PLAIN")
        self.relay.wait_for_log("auth_failed", since=mark, user="bob", mech="LOGIN")
        self.relay.wait_for_log("auth_failed", since=mark, user="nosuchuser", mech="PLAIN")
        # still usable, and a correct login works after failures
        self.assertEqual(r.cmd("AUTH PLAIN " + b64("\0alice\0alicepw"))[0], 235)
        with open(self.relay.log_path, "rb") as f:
            log = f.read()
        for secret in (b"Secret-Wrong", b"alicepw", b"U2VjcmV0"):
            self.assertNotIn(secret, log)

    def test_smtplib_wrong_password(self):
        with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
            connect(self.relay, login=("alice", "nope"))
        self.assertEqual(cm.exception.smtp_code, 535)

    def test_cancel_with_star(self):
        r, _ = self.session()
        self.assertEqual(r.cmd("AUTH LOGIN")[0], 334)
        self.assertEqual(r.cmd("*"), (501, "5.7.0 Authentication aborted"))
        self.assertEqual(r.cmd("AUTH PLAIN"), (334, ""))
        self.assertEqual(r.cmd("*")[0], 501)
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.org>")[0], 530)
        self.assertEqual(r.cmd("AUTH PLAIN " + b64("\0alice\0alicepw"))[0], 235)

    def test_base64_errors(self):
        r, _ = self.session()
        code, text = r.cmd("AUTH PLAIN not*base64")
        self.assertEqual((code, text[:5]), (501, "5.5.2"))
        self.assertEqual(r.cmd("AUTH PLAIN"), (334, ""))
        code, text = r.cmd("%%%")
        self.assertEqual((code, text[:5]), (501, "5.5.2"))
        self.assertEqual(r.cmd("NOOP")[0], 250)         # back to commands
        self.assertEqual(r.cmd("AUTH PLAIN " + b64("\0alice\0alicepw"))[0], 235)

    def test_unknown_or_unoffered_mechanism(self):
        r, _ = self.session()
        self.assertEqual(r.cmd("AUTH X-UNKNOWN"), (504, "5.5.4 Unrecognized authentication type"))
        self.assertEqual(r.cmd("AUTH ANONYMOUS")[0], 504)
        self.assertEqual(r.cmd("AUTH")[0], 501)

    def test_implicit_tls_auth_and_submit(self):
        msg = make_message("alice@example.org", "bob@example.net", "465", "implicit")
        qid = submit(self.relay, "alice@example.org", ["bob@example.net"], msg, port="tls")
        env, _ = read_queued(self.relay, qid)
        self.assertEqual(env["user"], "alice")


class SubmitAuthLimitTest(unittest.TestCase):
    """Repeated failures from one IP are slowed (timer), then refused."""

    def test_failures_are_delayed_then_refused(self):
        relay = Relay.for_test(self, submit={"auth_fail_delay_after": 1, "auth_fail_limit": 3,
                                             "auth_fail_window": "1h"})
        relay.start()
        r, _ = tls_session(relay)
        self.addCleanup(r.close)
        bad = "AUTH PLAIN " + b64("\0alice\0wrong")
        self.assertEqual(r.cmd(bad)[0], 535)
        relay.wait_for_log("auth_failed", delay_ms=0)
        t0 = time.monotonic()
        # the NOOP waits behind the held-back reply (and, pipelined behind
        # AUTH before authentication, is refused)
        r.send(bad + "\r\nNOOP\r\n")
        self.assertEqual(r.read_reply()[0], 535)
        self.assertEqual(r.read_reply()[0], 503)
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        relay.wait_for_log("auth_failed", delay_ms=1000)
        self.assertEqual(r.cmd(bad)[0], 535)            # the third: the limit
        relay.wait_for_log("auth_failed", delay_ms=2000)
        code, text = r.cmd("AUTH PLAIN " + b64("\0alice\0alicepw"))
        self.assertEqual((code, text[:5]), (421, "4.7.0"))
        self.assertTrue(r.wait_closed())
        # a new connection from the same address is refused too, even with the
        # right password, while the window lasts
        r2, _ = tls_session(relay)
        self.addCleanup(r2.close)
        code, _ = r2.cmd("AUTH PLAIN " + b64("\0alice\0alicepw"))
        self.assertEqual(code, 421)
        relay.wait_for_log("auth_refused", client="127.0.0.1")


if __name__ == "__main__":
    unittest.main()
