"""test_submit_tls.py - TLS on the submission listeners: STARTTLS (RFC 3207)
on submit.listen and implicit TLS (RFC 8314) on submit.listen_tls, TLS 1.2
and up only, the STARTTLS command injection (CVE-2011-0411: anything
pipelined behind STARTTLS is discarded and all earlier state forgotten), and
the certificate re-read on SIGHUP (a broken one keeps the old).
"""

import os
import ssl
import unittest
import warnings

from client import client_context, make_message, raw_session, submit
from relay import make_cert
from test_submit_smtp import QueueOnlyRelay as Relay
from test_submit_smtp import auth_session, read_queued, stop_cleanly


def peer_der(relay, tls):
    """The DER certificate relayd presents (implicit TLS or STARTTLS)."""
    with raw_session(relay.host, relay.tls_port if tls else relay.submit_port, tls=tls) as r:
        if not tls:
            r.cmd("EHLO client.test")
            r.starttls()
        return r.sock.getpeercert(binary_form=True)


def file_der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


class SubmitTLSTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.relay = Relay()
        cls.relay.start()

    @classmethod
    def tearDownClass(cls):
        stop_cleanly(cls.relay)

    def test_starttls_negotiates_tls_1_2_or_later(self):
        with raw_session(self.relay.host, self.relay.submit_port) as r:
            r.cmd("EHLO client.test")
            r.starttls()
            self.assertIn(r.sock.version(), ("TLSv1.2", "TLSv1.3"))
            self.assertEqual(r.cmd("EHLO client.test")[0], 250)

    def test_implicit_tls_greets_only_inside_tls(self):
        with raw_session(self.relay.host, self.relay.tls_port, tls=True) as r:
            self.assertEqual(r.greeting, (220, "relay.test ESMTP relayd"))
            self.assertIn(r.sock.version(), ("TLSv1.2", "TLSv1.3"))
            r.send("EHLO client.test\r\n")
            code, lines = r.read_reply_lines()
            self.assertIn("AUTH PLAIN LOGIN", lines)
            self.assertNotIn("STARTTLS", lines)
        # a plaintext client on the TLS port never sees an SMTP greeting
        with raw_session(self.relay.host, self.relay.tls_port, read_greeting=False) as r:
            r.send("EHLO plain.test\r\n")
            self.assertTrue(r.wait_closed())
            self.assertFalse(r.buf.startswith(b"220"), r.buf)

    def test_tls_1_1_is_refused(self):
        ctx = client_context()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ssl.TLSVersion.TLSv1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        except (ValueError, ssl.SSLError) as e:
            self.skipTest("this client cannot speak TLS 1.1: %s" % e)
        for tls in (False, True):
            with self.assertRaises((ssl.SSLError, OSError)) as cm:
                port = self.relay.tls_port if tls else self.relay.submit_port
                with raw_session(self.relay.host, port, read_greeting=not tls) as r:
                    if tls:
                        r._wrap(context=ctx)
                        r.read_reply()
                    else:
                        r.cmd("EHLO client.test")
                        r.starttls(context=ctx)
            if "NO_PROTOCOLS_AVAILABLE" in str(cm.exception):
                self.skipTest("this client cannot offer TLS 1.1")

    def test_input_pipelined_behind_starttls_is_discarded(self):
        mark = self.relay.log_mark()
        with raw_session(self.relay.host, self.relay.submit_port) as r:
            r.cmd("EHLO client.test")
            # CVE-2011-0411: plaintext commands in the same packet as STARTTLS
            r.send("STARTTLS\r\nRSET\r\nMAIL FROM:<alice@example.org>\r\nNOOP\r\n")
            self.assertEqual(r.read_reply(), (220, "2.0.0 Ready to start TLS"))
            r.starttls(command=False)
            # the first reply inside TLS answers our EHLO, not the injected RSET
            r.send("EHLO client.test\r\n")
            code, lines = r.read_reply_lines()
            self.assertEqual((code, lines[0]), (250, "relay.test"))
            self.assertEqual(r.cmd("NOOP"), (250, "2.0.0 Ok"))
        self.assertEqual(self.relay.count_log("rejected", since=mark), 0)

    def test_state_before_starttls_is_forgotten(self):
        with raw_session(self.relay.host, self.relay.submit_port) as r:
            r.cmd("EHLO client.test")
            r.starttls()
            self.assertEqual(r.cmd("MAIL FROM:<alice@example.org>"),
                             (503, "5.5.1 Error: send HELO/EHLO first"))
            r.send("EHLO client.test\r\n")
            code, lines = r.read_reply_lines()
            self.assertIn("AUTH PLAIN LOGIN", lines)

    def test_received_header_names_the_tls_session(self):
        for tls in (False, True):
            r = auth_session(self.relay, tls=tls)
            self.addCleanup(r.close)
            version = r.sock.version()
            cipher = r.sock.cipher()[0]
            r.cmd("MAIL FROM:<alice@example.org>")
            r.cmd("RCPT TO:<bob@example.net>")
            r.cmd("DATA")
            r.send("Subject: tls\r\n\r\nx\r\n.\r\n")
            code, text = r.read_reply()
            self.assertEqual(code, 250)
            _, body = read_queued(self.relay, text.rsplit(" ", 1)[-1])
            self.assertIn(("with ESMTPSA id %s\r\n\t(using %s with cipher %s ("
                           % (text.rsplit(" ", 1)[-1], version, cipher)).encode(), body)


class SubmitTLSReloadTest(unittest.TestCase):

    def test_sighup_rereads_the_certificate(self):
        relay = Relay.for_test(self)
        relay.start()
        self.assertEqual(peer_der(relay, tls=True), file_der(relay.cert))
        cert, key = make_cert(relay.tmpdir, cn="other.relay.test", dns=("other.relay.test",),
                              name="other")
        relay.update_config(submit={"tls_cert": cert, "tls_key": key})
        mark = relay.log_mark()
        relay.sighup()
        relay.wait_for_log("reloaded", since=mark)
        self.assertEqual(peer_der(relay, tls=True), file_der(cert))
        self.assertEqual(peer_der(relay, tls=False), file_der(cert))
        msg = make_message("alice@example.org", "bob@example.net", "after reload", "x")
        submit(relay, "alice@example.org", ["bob@example.net"], msg)

    def test_a_broken_certificate_on_sighup_keeps_the_old_one(self):
        relay = Relay.for_test(self)
        relay.start()
        bad = os.path.join(relay.tmpdir, "broken.crt")
        with open(bad, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        relay.update_config(submit={"tls_cert": bad})
        mark = relay.log_mark()
        relay.sighup()
        relay.wait_for_log("reload_failed", since=mark)
        self.assertEqual(peer_der(relay, tls=True), file_der(relay.cert))


if __name__ == "__main__":
    unittest.main()
