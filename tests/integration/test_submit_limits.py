"""test_submit_limits.py - the submission server's limits and their replies:
submit.max_message_size (advertised in SIZE; MAIL SIZE= over it and DATA
over it are 552 5.3.4 with nothing queued), submit.max_recipients (452
4.5.3), command and text line lengths, max_command_errors, total and
per-client-IP connection limits (421 4.7.0, also over implicit TLS), the
idle timeout (421 4.4.2), and the per-login message and recipient rates
(450 4.7.1 / 452 4.5.3, event=rate_limited).
"""

import base64
import os
import socket
import ssl
import unittest

from client import RawSession, client_context, make_message, raw_session, submit
from test_submit_smtp import QueueOnlyRelay as Relay
from test_submit_smtp import auth_session, qid_of, queued_files, read_queued, stop_cleanly


def session_from(relay, source, tls=False):
    """A RawSession to relayd from the loopback address source (127.0.0.N)."""
    port = relay.tls_port if tls else relay.submit_port
    sock = socket.create_connection((relay.host, port), timeout=10, source_address=(source, 0))
    r = RawSession.__new__(RawSession)
    r.host, r.port, r.timeout = relay.host, port, 10
    r.sock, r.buf, r.tls, r.transcript = sock, b"", False, []
    if tls:
        r._wrap()
    r.greeting = r.read_reply()
    return r


class SubmitSizeAndCountTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.relay = Relay(submit={"max_message_size": "10K", "max_recipients": 3})
        cls.relay.start()

    @classmethod
    def tearDownClass(cls):
        stop_cleanly(cls.relay)

    def session(self):
        r = auth_session(self.relay)
        self.addCleanup(r.close)
        return r

    def test_size_is_advertised(self):
        with raw_session(self.relay.host, self.relay.submit_port) as r:
            r.send("EHLO client.test\r\n")
            _, lines = r.read_reply_lines()
            self.assertIn("SIZE 10240", lines)

    def test_mail_size_parameter_over_the_limit(self):
        r = self.session()
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.org> SIZE=10241"),
                         (552, "5.3.4 Message size exceeds fixed maximum message size"))
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.org> SIZE=10240")[0], 250)

    def test_data_over_the_limit_is_refused_and_nothing_queued(self):
        r = self.session()
        mark = self.relay.log_mark()
        before = queued_files(self.relay)
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.org>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<bob@example.net>")[0], 250)
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send("Subject: big\r\n\r\n" + ("x" * 70 + "\r\n") * 200 + ".\r\n")
        code, text = r.read_reply()
        self.assertEqual((code, text[:5]), (552, "5.3.4"))
        self.assertEqual(queued_files(self.relay), before)
        self.assertEqual(self.relay.count_log("accepted", since=mark), 0)
        # the session survives: a small message goes through
        code, text = r.cmd("MAIL FROM:<alice@example.org>")
        self.assertEqual(code, 250)
        r.cmd("RCPT TO:<bob@example.net>")
        r.cmd("DATA")
        r.send("Subject: small\r\n\r\nok\r\n.\r\n")
        self.assertEqual(r.read_reply()[0], 250)

    def test_too_many_recipients(self):
        r = self.session()
        r.cmd("MAIL FROM:<alice@example.org>")
        for i in range(3):
            self.assertEqual(r.cmd("RCPT TO:<r%d@example.net>" % i)[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<r3@example.net>"), (452, "4.5.3 Error: too many recipients"))
        r.cmd("DATA")
        r.send("Subject: three\r\n\r\nx\r\n.\r\n")
        code, text = r.read_reply()
        self.assertEqual(code, 250)
        env, _ = read_queued(self.relay, qid_of(text))
        self.assertEqual(len(env["rcpts"]), 3)

    def test_long_command_lines_are_refused_and_the_session_survives(self):
        r = self.session()
        self.assertEqual(r.cmd("NOOP " + "x" * 600), (500, "5.5.2 Error: line too long"))
        self.assertEqual(r.cmd("MAIL FROM:<%s@example.org>" % ("a" * 600))[0], 500)
        self.assertEqual(r.cmd("NOOP " + "x" * 20000), (500, "5.5.2 Error: line too long"))
        self.assertEqual(r.cmd("NOOP"), (250, "2.0.0 Ok"))
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.org>")[0], 250)

    def test_long_text_line_is_refused_and_nothing_queued(self):
        r = self.session()
        before = queued_files(self.relay)
        r.cmd("MAIL FROM:<alice@example.org>")
        r.cmd("RCPT TO:<bob@example.net>")
        r.cmd("DATA")
        r.send("Subject: long\r\n\r\n" + "y" * 999 + "\r\n.\r\n")    # 1001 with CRLF
        code, text = r.read_reply()
        self.assertEqual((code, text[:5]), (554, "5.6.0"))
        self.assertEqual(queued_files(self.relay), before)
        # 998 + CRLF is fine, even dot-stuffed
        r.cmd("MAIL FROM:<alice@example.org>")
        r.cmd("RCPT TO:<bob@example.net>")
        r.cmd("DATA")
        r.send("Subject: long\r\n\r\n" + "." + "." * 998 + "\r\n.\r\n")
        code, text = r.read_reply()
        self.assertEqual(code, 250)
        _, body = read_queued(self.relay, qid_of(text))
        self.assertIn(b"\r\n" + b"." * 998 + b"\r\n", body)


class SubmitErrorsTest(unittest.TestCase):

    def test_too_many_command_errors_close_the_session(self):
        relay = Relay.for_test(self, submit={"max_command_errors": 3})
        relay.start()
        with raw_session(relay.host, relay.submit_port) as r:
            for _ in range(3):
                self.assertEqual(r.cmd("BOGUS")[0], 500)
            code, text = r.cmd("BOGUS")
            self.assertEqual(code, 500)
            self.assertEqual(r.read_reply(), (421, "4.7.0 relay.test Error: too many errors"))
            self.assertTrue(r.wait_closed())


def log_in(r, tls=False):
    """EHLO, STARTTLS (unless tls), EHLO and AUTH PLAIN as alice on a RawSession."""
    assert r.cmd("EHLO client.test")[0] == 250
    if not tls:
        assert r.starttls()[0] == 220
        assert r.cmd("EHLO client.test")[0] == 250
    assert r.cmd("AUTH PLAIN " + base64.b64encode(b"\0alice\0alicepw").decode())[0] == 235


class SubmitConnectionLimitTest(unittest.TestCase):

    def test_per_ip_and_total_connection_limits(self):
        # Authenticated sessions hold their slots: a newcomer is refused, not
        # let in by closing one (only unauthenticated ones make room, see
        # test_submit_slow.py).
        relay = Relay.for_test(self, submit={"max_connections": 3, "max_connections_per_ip": 2})
        relay.start()
        a1 = session_from(relay, "127.0.0.1")
        self.addCleanup(a1.close)
        self.assertEqual(a1.greeting[0], 220)
        log_in(a1)
        a2 = session_from(relay, "127.0.0.1", tls=True)
        self.addCleanup(a2.close)
        self.assertEqual(a2.greeting[0], 220)
        log_in(a2, tls=True)
        # a third from the same address: refused (over TLS on the TLS port)
        for tls in (False, True):
            a3 = session_from(relay, "127.0.0.1", tls=tls)
            self.assertEqual(a3.greeting, (421, "4.7.0 Error: too many connections from your "
                                                "address, try again later"))
            self.assertTrue(a3.wait_closed())
            a3.close()
        relay.wait_for_log("connection_refused", reason="max_connections_per_ip")
        # another address still gets in, up to the total
        b1 = session_from(relay, "127.0.0.3")
        self.addCleanup(b1.close)
        self.assertEqual(b1.greeting[0], 220)
        log_in(b1)
        c1 = session_from(relay, "127.0.0.4")
        self.assertEqual(c1.greeting, (421, "4.7.0 Error: too many connections, try again later"))
        c1.close()
        relay.wait_for_log("connection_refused", reason="max_connections")
        # a slot freed by QUIT can be used again
        mark = relay.log_mark()
        self.assertEqual(a1.cmd("QUIT")[0], 221)
        self.assertTrue(a1.wait_closed())
        relay.wait_for_log("disconnect", since=mark, client="127.0.0.1")
        a4 = session_from(relay, "127.0.0.1")
        self.addCleanup(a4.close)
        self.assertEqual(a4.greeting[0], 220)

    def test_refusals_waiting_for_a_handshake_are_capped(self):
        # A connection refused by the limits on the implicit-TLS port gets
        # its 421 over TLS, so relayd keeps it until the handshake (up to
        # submit.tls_timeout) although it holds no slot.  At most 16 such
        # (SUBMIT_REFUSING_MAX, counted in fd_limit's need) wait at once;
        # one more is closed at once.  Without the cap each of the 40
        # connections below held a descriptor.
        relay = Relay.for_test(self, submit={"workers": 1, "max_connections": 10,
                                              "max_connections_per_ip": 1})
        relay.start()
        a1 = session_from(relay, "127.0.0.1")
        self.addCleanup(a1.close)
        self.assertEqual(a1.greeting[0], 220)
        before = nfds(relay.pid)
        mark = relay.log_mark()
        refused = []
        for _ in range(40):
            s = socket.create_connection((relay.host, relay.tls_port), timeout=10)
            self.addCleanup(s.close)
            refused.append(s)
        relay.wait_for_count("connection_refused", 40, since=mark,
                             reason="max_connections_per_ip")
        # the first 16 wait for their handshake; the 24 others are gone
        relay.wait_for_count("disconnect", 24, since=mark, client="127.0.0.1")
        self.assertEqual(nfds(relay.pid), before + 16)
        for s in refused[16:]:
            self.assertEqual(s.recv(64), b"")
        # one that waits is told why over TLS; its place is free again
        r = RawSession.__new__(RawSession)
        r.host, r.port, r.timeout = relay.host, relay.tls_port, 10
        r.sock, r.buf, r.tls, r.transcript = refused[0], b"", False, []
        r._wrap()
        self.addCleanup(r.close)
        self.assertEqual(r.read_reply(), (421, "4.7.0 Error: too many connections from your "
                                               "address, try again later"))
        self.assertTrue(r.wait_closed())
        mark = relay.log_mark()
        late = socket.create_connection((relay.host, relay.tls_port), timeout=10)
        self.addCleanup(late.close)
        relay.wait_for_log("connection_refused", since=mark)
        r = RawSession.__new__(RawSession)
        r.host, r.port, r.timeout = relay.host, relay.tls_port, 10
        r.sock, r.buf, r.tls, r.transcript = late, b"", False, []
        r._wrap()
        self.addCleanup(r.close)
        self.assertEqual(r.read_reply()[0], 421)


def nfds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class SubmitIdleTimeoutTest(unittest.TestCase):

    def test_idle_session_gets_421_and_is_closed(self):
        relay = Relay.for_test(self, submit={"idle_timeout": "1s"})
        relay.start()
        with raw_session(relay.host, relay.submit_port) as r:
            self.assertEqual(r.cmd("EHLO client.test")[0], 250)
            self.assertEqual(r.read_reply(), (421, "4.4.2 relay.test Error: timeout exceeded"))
            self.assertTrue(r.wait_closed())
        relay.wait_for_log("session_timeout", phase="command", state="helo")


class SubmitDataTimeoutTest(unittest.TestCase):

    def test_stalled_data_gets_421_and_nothing_is_queued(self):
        relay = Relay.for_test(self, submit={"data_timeout": "1s"})
        relay.start()
        r = auth_session(relay)
        self.addCleanup(r.close)
        r.cmd("MAIL FROM:<alice@example.org>")
        r.cmd("RCPT TO:<bob@example.net>")
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send("Subject: stalled\r\n\r\nand then nothing")
        self.assertEqual(r.read_reply(), (421, "4.4.2 relay.test Error: timeout exceeded"))
        self.assertTrue(r.wait_closed())
        relay.wait_for_log("session_timeout", phase="data", state="data")
        self.assertEqual(queued_files(relay), [])


class SubmitRateLimitTest(unittest.TestCase):

    def test_messages_per_login(self):
        relay = Relay.for_test(self, submit={"login_max_messages": 2, "login_rate_window": "1h"})
        relay.start()
        msg = make_message("alice@example.org", "bob@example.net", "rate", "x")
        for _ in range(2):
            submit(relay, "alice@example.org", ["bob@example.net"], msg)
        r = auth_session(relay)
        self.addCleanup(r.close)
        code, text = r.cmd("MAIL FROM:<alice@example.org>")
        self.assertEqual((code, text[:5]), (450, "4.7.1"))
        relay.wait_for_log("rate_limited", user="alice", limit="messages")
        # another login has its own budget
        submit(relay, "bob@example.org", ["x@example.net"], msg, user="bob", password="bobpw")

    def test_recipients_per_login(self):
        relay = Relay.for_test(self, submit={"login_max_recipients": 3, "login_rate_window": "1h"})
        relay.start()
        r = auth_session(relay)
        self.addCleanup(r.close)
        r.cmd("MAIL FROM:<alice@example.org>")
        self.assertEqual(r.cmd("RCPT TO:<a@example.net>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<b@example.net>")[0], 250)
        r.cmd("DATA")
        r.send("Subject: two\r\n\r\nx\r\n.\r\n")
        self.assertEqual(r.read_reply()[0], 250)
        r.cmd("MAIL FROM:<alice@example.org>")
        self.assertEqual(r.cmd("RCPT TO:<c@example.net>")[0], 250)      # the third
        code, text = r.cmd("RCPT TO:<d@example.net>")
        self.assertEqual((code, text[:5]), (452, "4.5.3"))             # send the rest later
        r.cmd("DATA")
        r.send("Subject: one\r\n\r\nx\r\n.\r\n")
        self.assertEqual(r.read_reply()[0], 250)
        r.cmd("MAIL FROM:<alice@example.org>")
        code, text = r.cmd("RCPT TO:<e@example.net>")
        self.assertEqual((code, text[:5]), (450, "4.7.1"))
        relay.wait_for_log("rate_limited", user="alice", limit="recipients")


if __name__ == "__main__":
    unittest.main()
