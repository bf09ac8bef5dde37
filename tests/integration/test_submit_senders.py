"""test_submit_senders.py - authorisation of envelope senders by the senders
map (submit.senders): owned addresses and "@domain" entries are accepted,
anything else is 553 5.7.1 naming the reason, domains compare
case-insensitively and local parts exactly, users may not send with the null
sender, submit.check_header_from holds the header From: to the same rule at
the end of DATA (nothing queued), and SIGHUP re-reads the map.
"""

import unittest

from client import make_message, submit
from test_submit_smtp import QueueOnlyRelay as Relay
from test_submit_smtp import auth_session, qid_of, queued_files, read_queued, stop_cleanly

SENDERS = ("# test map\n"
           "alice: alice@example.org, @alice.test\n"
           "bob: bob@example.org\n")


class SubmitSendersTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.relay = Relay(senders=SENDERS)
        cls.relay.start()

    @classmethod
    def tearDownClass(cls):
        stop_cleanly(cls.relay)

    def session(self, user="alice", password="alicepw"):
        r = auth_session(self.relay, user=user, password=password)
        self.addCleanup(r.close)
        return r

    def test_owned_and_unowned_senders(self):
        r = self.session()
        cases = [
            ("alice@example.org", 250),
            ("alice@EXAMPLE.ORG", 250),          # domain: any case
            ("Alice@example.org", 553),          # local part: exact
            ("anyone@alice.test", 250),          # @domain
            ("x.y@Alice.Test", 250),
            ("anyone@sub.alice.test", 553),      # not subdomains
            ("bob@example.org", 553),            # bob's
            ("mallory@evil.example", 553),
        ]
        for addr, want in cases:
            code, text = r.cmd("MAIL FROM:<%s>" % addr)
            self.assertEqual(code, want, addr)
            if want == 553:
                self.assertEqual(text, "5.7.1 <%s>: Sender address rejected: not owned by "
                                 "user alice" % addr)
            else:
                r.cmd("RSET")
        self.relay.wait_for_log("rejected", stage="mail", user="alice")

    def test_other_login_owns_other_addresses(self):
        r = self.session("bob", "bobpw")
        self.assertEqual(r.cmd("MAIL FROM:<bob@example.org>")[0], 250)
        r.cmd("RSET")
        code, text = r.cmd("MAIL FROM:<alice@example.org>")
        self.assertEqual((code, text), (553, "5.7.1 <alice@example.org>: Sender address "
                                             "rejected: not owned by user bob"))

    def test_null_sender_is_refused_for_users(self):
        r = self.session()
        code, text = r.cmd("MAIL FROM:<>")
        self.assertEqual((code, text[:5]), (553, "5.7.1"))
        self.assertIn("Sender address rejected", text)

    def test_accepted_message_records_login_and_sender(self):
        msg = make_message("anyone@alice.test", "bob@example.net", "domain", "x")
        qid = submit(self.relay, "anyone@alice.test", ["bob@example.net"], msg)
        env, _ = read_queued(self.relay, qid)
        self.assertEqual((env["sender"], env["user"]), ("anyone@alice.test", "alice"))


class SubmitHeaderFromTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.relay = Relay(senders=SENDERS, submit={"check_header_from": True})
        cls.relay.start()

    @classmethod
    def tearDownClass(cls):
        stop_cleanly(cls.relay)

    def data(self, headers):
        r = auth_session(self.relay)
        self.addCleanup(r.close)
        before = queued_files(self.relay)
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.org>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<bob@example.net>")[0], 250)
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send(headers + "Subject: hdr\r\n\r\nbody\r\n.\r\n")
        reply = r.read_reply()
        return reply, before, r

    def test_owned_header_from_is_accepted(self):
        for value in ("alice@example.org", "Alice Smith <alice@example.org>",
                      "\"Smith, Alice\" <someone@alice.test>",
                      "alice@example.org (Alice)"):
            (code, text), _, _ = self.data("From: %s\r\n" % value)
            self.assertEqual(code, 250, value)

    def test_unowned_header_from_is_refused_and_nothing_queued(self):
        mark = self.relay.log_mark()
        (code, text), before, r = self.data("From: Bob <bob@example.org>\r\n")
        self.assertEqual(code, 553)
        self.assertEqual(text, "5.7.1 <bob@example.org>: Header From address rejected: not "
                         "owned by user alice")
        self.assertEqual(queued_files(self.relay), before)
        self.assertEqual(self.relay.count_log("accepted", since=mark), 0)
        self.assertEqual(r.cmd("NOOP")[0], 250)          # the session goes on

    def test_unowned_8bit_header_from_is_not_echoed_raw(self):
        # No SMTPUTF8 in this transaction: the 553 quotes the address without
        # its 8-bit bytes.
        (code, text), before, _ = self.data("From: J\u00f6rg <j\u00f6rg@example.org>\r\n")
        self.assertEqual(code, 553)
        self.assertTrue(text.isascii(), text)
        self.assertEqual(text, "5.7.1 <j??rg@example.org>: Header From address rejected: not "
                         "owned by user alice")
        self.assertEqual(queued_files(self.relay), before)

    def test_one_unowned_mailbox_among_several_is_refused(self):
        (code, text), before, _ = self.data("From: alice@example.org, bob@example.org\r\n")
        self.assertEqual(code, 553)
        self.assertEqual(queued_files(self.relay), before)

    def test_missing_or_repeated_from_is_refused(self):
        (code, text), before, _ = self.data("")
        self.assertEqual((code, text[:5]), (550, "5.7.1"))
        (code, text), _, _ = self.data("From: alice@example.org\r\nFrom: alice@example.org\r\n")
        self.assertEqual((code, text[:5]), (550, "5.7.1"))
        self.assertEqual(queued_files(self.relay), before)


class SubmitSendersReloadTest(unittest.TestCase):

    def test_sighup_picks_up_a_new_senders_line(self):
        relay = Relay.for_test(self, senders=SENDERS)
        relay.start()
        r = auth_session(relay)
        self.addCleanup(r.close)
        self.assertEqual(r.cmd("MAIL FROM:<carol@example.org>")[0], 553)
        relay.set_senders(SENDERS + "alice: carol@example.org\n")
        mark = relay.log_mark()
        relay.sighup()
        relay.wait_for_log("reloaded", since=mark)
        # the session that was already open sees the new map too
        self.assertEqual(r.cmd("MAIL FROM:<carol@example.org>")[0], 250)
        msg = make_message("carol@example.org", "bob@example.net", "reload", "x")
        qid = submit(relay, "carol@example.org", ["bob@example.net"], msg)
        self.assertEqual(read_queued(relay, qid)[0]["sender"], "carol@example.org")

    def test_a_broken_map_on_sighup_keeps_the_old_one(self):
        relay = Relay.for_test(self, senders=SENDERS)
        relay.start()
        relay.set_senders(SENDERS + "this line is broken\n")
        mark = relay.log_mark()
        relay.sighup()
        relay.wait_for_log("reload_failed", since=mark)
        msg = make_message("alice@example.org", "bob@example.net", "kept", "x")
        submit(relay, "alice@example.org", ["bob@example.net"], msg)


if __name__ == "__main__":
    unittest.main()
