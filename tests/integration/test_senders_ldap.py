"""test_senders_ldap.py - owned senders from a real OpenLDAP (slapd started
by the test, tests/harness/ldapserver.py): submit.senders_ldap grants the
addresses in the configured attributes (two of them: mail and
mailAlternateAddress), a value "@domain" grants the domain, the senders map
and the directory each grant on their own, a login is escaped into the
filter (a login "*" matches nobody), a directory that is down or hangs is a
451 4.3.0 at MAIL (never a 553) logged once per outage while other sessions
go on, the directory coming back is logged and used, a cached answer does
not outlive cache_ttl, and SIGHUP re-reads the settings and clears the cache.
"""

import os
import time
import unittest

from client import raw_session
from ldapserver import BIND_DN, BIND_PW, HangingServer, LDAPServer
from relay import make_cert, share_with_user
from test_submit_smtp import QueueOnlyRelay as Relay
from test_submit_smtp import auth_session, stop_cleanly

PEOPLE = "ou=people,dc=example,dc=org"
USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw", "st*r": "starpw",
         "*": "anypw", "dave": "davepw"}
SENDERS = "alice: alice@file.test\ndave: dave@file.test\n"


def ldap_conf(relay, uri, **kw):
    pwfile = os.path.join(relay.tmpdir, "ldap.secret")
    with open(pwfile, "w") as f:
        f.write(BIND_PW + "\n")
    share_with_user(pwfile)
    conf = {"uri": uri, "base": PEOPLE, "bind_dn": BIND_DN, "bind_password_file": pwfile,
            "attributes": ["mail", "mailAlternateAddress"], "timeout": "2s",
            "cache_ttl": "1s"}
    conf.update(kw)
    return conf


def start_relay(test, uri, senders=SENDERS, **kw):
    relay = Relay(users=USERS, senders=senders)
    test.addCleanup(stop_cleanly, relay)
    relay.update_config(submit={"senders_ldap": ldap_conf(relay, uri, **kw)})
    relay.start()
    return relay


class SendersLDAPTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.ldap = LDAPServer().start()
        cls.relay = Relay(users=USERS, senders=SENDERS)
        cls.relay.update_config(submit={"senders_ldap": ldap_conf(cls.relay, cls.ldap.uri)})
        cls.relay.start()

    @classmethod
    def tearDownClass(cls):
        stop_cleanly(cls.relay)
        cls.ldap.close()

    def session(self, user="alice"):
        r = auth_session(self.relay, user=user, password=USERS[user])
        self.addCleanup(r.close)
        return r

    def mail(self, r, addr):
        code, text = r.cmd("MAIL FROM:<%s>" % addr)
        if code == 250:
            r.cmd("RSET")
        return code, text

    def test_addresses_in_both_attributes_are_owned(self):
        r = self.session()
        self.assertEqual(self.mail(r, "alice@example.org")[0], 250)        # mail
        self.assertEqual(self.mail(r, "a.smith@example.org")[0], 250)      # mailAlternateAddress
        self.assertEqual(self.mail(r, "postmaster@EXAMPLE.org")[0], 250)   # domain: any case
        self.assertEqual(self.mail(r, "A.Smith@example.org")[0], 553)      # local part: exact

    def test_address_not_in_the_directory_is_553(self):
        r = self.session()
        self.assertEqual(self.mail(r, "bob@example.org"),
                         (553, "5.7.1 <bob@example.org>: Sender address rejected: "
                               "not owned by user alice"))
        r = self.session("carol")                   # in the directory, no address
        self.assertEqual(self.mail(r, "carol@example.org")[0], 553)

    def test_at_domain_value_grants_the_domain(self):
        r = self.session("bob")
        self.assertEqual(self.mail(r, "anyone@bob.test")[0], 250)
        self.assertEqual(self.mail(r, "x@Bob.Test")[0], 250)
        self.assertEqual(self.mail(r, "x@sub.bob.test")[0], 553)

    def test_senders_map_and_directory_each_grant(self):
        r = self.session()
        self.assertEqual(self.mail(r, "alice@file.test")[0], 250)          # the map only
        self.assertEqual(self.mail(r, "alice@example.org")[0], 250)        # the directory only
        r = self.session("dave")                                           # map only, not in LDAP
        self.assertEqual(self.mail(r, "dave@file.test")[0], 250)
        self.assertEqual(self.mail(r, "alice@example.org")[0], 553)

    def test_login_is_escaped_into_the_filter(self):
        # "(uid=*)" would match every entry and grant alice's addresses to "*"
        r = self.session("*")
        self.assertEqual(self.mail(r, "alice@example.org")[0], 553)
        self.assertEqual(self.mail(r, "star@example.org")[0], 553)
        # "st*r" is one entry, found by its exact uid, not as a wildcard
        r = self.session("st*r")
        self.assertEqual(self.mail(r, "star@example.org")[0], 250)
        self.assertEqual(self.mail(r, "alice@example.org")[0], 553)

    def test_pipelined_commands_wait_behind_the_lookup(self):
        r = self.session("bob")
        r.send("MAIL FROM:<bob@example.org>\r\nRCPT TO:<x@example.net>\r\nRSET\r\n")
        self.assertEqual(r.read_reply()[0], 250)
        self.assertEqual(r.read_reply()[0], 250)    # RCPT saw the MAIL state
        self.assertEqual(r.read_reply()[0], 250)


class SendersLDAPHeaderFromTest(unittest.TestCase):

    def test_header_from_is_held_to_the_directory_too(self):
        ldap = LDAPServer().start()
        self.addCleanup(ldap.close)
        relay = Relay(users=USERS, senders=SENDERS)
        self.addCleanup(stop_cleanly, relay)
        relay.update_config(submit={"check_header_from": True,
                                    "senders_ldap": ldap_conf(relay, ldap.uri)})
        relay.start()
        log = relay.wait_for_log("sandbox")
        self.assertEqual((log.get("seccomp"), log.get("landlock")), ("yes", "yes"), log)
        r = auth_session(relay, user="alice", password="alicepw")
        self.addCleanup(r.close)
        for hdr_from, want in (("a.smith@example.org", 250),       # the directory's
                               ("alice@file.test", 250),           # the map's
                               ("bob@example.org", 553)):          # nobody's for alice
            # the envelope sender is the map's: the directory is asked all the same
            self.assertEqual(r.cmd("MAIL FROM:<alice@file.test>")[0], 250)
            self.assertEqual(r.cmd("RCPT TO:<x@example.net>")[0], 250)
            self.assertEqual(r.cmd("DATA")[0], 354)
            r.send("From: %s\r\nSubject: t\r\n\r\nbody\r\n.\r\n" % hdr_from)
            self.assertEqual(r.read_reply()[0], want, hdr_from)
        # the directory down: the map still grants, what only it could grant is 451
        ldap.stop()
        time.sleep(1.1)     # past the 1s cache_ttl
        for hdr_from, want in (("alice@file.test", 250), ("a.smith@example.org", 451)):
            self.assertEqual(r.cmd("MAIL FROM:<alice@file.test>")[0], 250)
            self.assertEqual(r.cmd("RCPT TO:<x@example.net>")[0], 250)
            self.assertEqual(r.cmd("DATA")[0], 354)
            r.send("From: %s\r\nSubject: t\r\n\r\nbody\r\n.\r\n" % hdr_from)
            code, text = r.read_reply()
            self.assertEqual(code, want, (hdr_from, text))


class SendersLDAPUnixSocketTest(unittest.TestCase):

    def test_ldapi_socket_works_inside_the_sandbox(self):
        ldap = LDAPServer(ldapi=True).start()
        self.addCleanup(ldap.close)
        relay = start_relay(self, ldap.ldapi_uri)
        log = relay.wait_for_log("sandbox")
        self.assertEqual(log.get("landlock"), "yes", log)
        r = auth_session(relay, user="alice", password="alicepw")
        self.addCleanup(r.close)
        self.assertEqual(r.cmd("MAIL FROM:<a.smith@example.org>")[0], 250)


class SendersLDAPStartTLSTest(unittest.TestCase):

    def ldap_with_tls(self, certdir):
        cert, key = make_cert(certdir, cn="127.0.0.1", dns=(), ips=("127.0.0.1",),
                              name="slapd")
        ldap = LDAPServer(tls=(cert, key)).start()
        self.addCleanup(ldap.close)
        return ldap, cert

    def test_starttls_with_a_trusted_certificate(self):
        relay = Relay(users=USERS, senders=SENDERS)
        self.addCleanup(stop_cleanly, relay)
        ldap, cert = self.ldap_with_tls(relay.tmpdir)
        relay.env["LDAPTLS_CACERT"] = cert      # libldap's trust anchor for this test
        relay.update_config(submit={"senders_ldap": ldap_conf(relay, ldap.uri, starttls=True)})
        relay.start()
        r = auth_session(relay, user="alice", password="alicepw")
        self.addCleanup(r.close)
        self.assertEqual(r.cmd("MAIL FROM:<a.smith@example.org>")[0], 250)

    def test_starttls_with_an_untrusted_certificate_is_451(self):
        relay = Relay(users=USERS, senders=SENDERS)
        self.addCleanup(stop_cleanly, relay)
        ldap, _ = self.ldap_with_tls(relay.tmpdir)
        relay.update_config(submit={"senders_ldap": ldap_conf(relay, ldap.uri, starttls=True)})
        relay.start()
        r = auth_session(relay, user="alice", password="alicepw")
        self.addCleanup(r.close)
        code, text = r.cmd("MAIL FROM:<a.smith@example.org>")
        self.assertEqual((code, text[:6]), (451, "4.3.0 "))
        log = relay.wait_for_log("ldap_unavailable")
        self.assertIn("starttls", log.get("error", ""))


class SendersLDAPOutageTest(unittest.TestCase):

    def test_directory_down_is_451_logged_once_then_restored(self):
        ldap = LDAPServer().start()
        self.addCleanup(ldap.close)
        relay = start_relay(self, ldap.uri)
        r = auth_session(relay, user="bob", password="bobpw")
        self.addCleanup(r.close)
        self.assertEqual(r.cmd("MAIL FROM:<bob@example.org>")[0], 250)    # connected, cached
        r.cmd("RSET")
        ldap.stop()
        time.sleep(1.1)     # let the 1s cache_ttl pass: the next MAIL must ask the directory
        mark = relay.log_mark()
        for _ in range(3):
            code, text = r.cmd("MAIL FROM:<bob@example.org>")
            self.assertEqual(code, 451, text)
            self.assertTrue(text.startswith("4.3.0 "), text)
        relay.wait_for_log("ldap_unavailable", since=mark)
        self.assertEqual(relay.count_log("ldap_unavailable", since=mark), 1)
        # the senders map still grants on its own during the outage
        r2 = auth_session(relay, user="alice", password="alicepw")
        self.addCleanup(r2.close)
        self.assertEqual(r2.cmd("MAIL FROM:<alice@file.test>")[0], 250)

        ldap.start()
        self.assertEqual(r.cmd("MAIL FROM:<bob@example.org>")[0], 250)
        relay.wait_for_log("ldap_restored", since=mark)
        self.assertEqual(relay.count_log("ldap_unavailable", since=mark), 1)

    def test_negative_answer_does_not_outlive_cache_ttl(self):
        ldap = LDAPServer().start()
        self.addCleanup(ldap.close)
        relay = start_relay(self, ldap.uri, cache_ttl="2s")
        r = auth_session(relay, user="carol", password="carolpw")
        self.addCleanup(r.close)
        self.assertEqual(r.cmd("MAIL FROM:<carol@example.org>")[0], 553)
        ldap.modify_ldif("dn: uid=carol,%s\nchangetype: modify\nadd: mail\n"
                         "mail: carol@example.org\n" % PEOPLE)
        start = time.monotonic()
        self.assertEqual(r.cmd("MAIL FROM:<carol@example.org>")[0], 553)   # cached
        while r.cmd("MAIL FROM:<carol@example.org>")[0] != 250:
            self.assertLess(time.monotonic() - start, 6, "the negative answer outlived cache_ttl")
            time.sleep(0.3)     # few 553s: max_command_errors is 20
        self.assertGreater(time.monotonic() - start, 1.0)

    def test_sighup_rereads_settings_and_clears_the_cache(self):
        ldap = LDAPServer().start()
        self.addCleanup(ldap.close)
        relay = start_relay(self, ldap.uri, cache_ttl="1h")
        r = auth_session(relay, user="alice", password="alicepw")
        self.addCleanup(r.close)
        self.assertEqual(r.cmd("MAIL FROM:<a.smith@example.org>")[0], 250)
        r.cmd("RSET")
        ldap.modify_ldif("dn: uid=alice,%s\nchangetype: modify\ndelete: mailAlternateAddress\n"
                         "mailAlternateAddress: a.smith@example.org\n" % PEOPLE)
        self.assertEqual(r.cmd("MAIL FROM:<a.smith@example.org>")[0], 250)  # cached for 1h
        r.cmd("RSET")
        mark = relay.log_mark()
        relay.update_config(submit={"senders_ldap": {"cache_ttl": "1h", "timeout": "3s"}})
        relay.sighup()
        relay.wait_for_log("submit_reloaded", since=mark)
        self.assertEqual(r.cmd("MAIL FROM:<a.smith@example.org>")[0], 553)
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.org>")[0], 250)

    def test_sighup_turns_the_directory_on_and_off(self):
        ldap = LDAPServer().start()
        self.addCleanup(ldap.close)
        relay = Relay(users=USERS, senders=SENDERS)
        self.addCleanup(stop_cleanly, relay)
        relay.start()
        r = auth_session(relay, user="alice", password="alicepw")
        self.addCleanup(r.close)
        self.assertEqual(r.cmd("MAIL FROM:<a.smith@example.org>")[0], 553)
        mark = relay.log_mark()
        relay.update_config(submit={"senders_ldap": ldap_conf(relay, ldap.uri)})
        relay.sighup()
        relay.wait_for_log("submit_reloaded", since=mark)
        self.assertEqual(r.cmd("MAIL FROM:<a.smith@example.org>")[0], 250)
        r.cmd("RSET")
        mark = relay.log_mark()
        del relay.config["submit"]["senders_ldap"]
        relay.write_config()
        relay.sighup()
        relay.wait_for_log("submit_reloaded", since=mark)
        self.assertEqual(r.cmd("MAIL FROM:<a.smith@example.org>")[0], 553)
        self.assertEqual(r.cmd("MAIL FROM:<alice@file.test>")[0], 250)

    def test_hanging_directory_blocks_only_its_own_session(self):
        hang = HangingServer()
        self.addCleanup(hang.close)
        relay = start_relay(self, hang.uri, timeout="3s")
        r1 = auth_session(relay, user="bob", password="bobpw")
        self.addCleanup(r1.close)
        mark = relay.log_mark()
        t0 = time.monotonic()
        r1.send("MAIL FROM:<bob@example.org>\r\nNOOP\r\n")
        # while r1 waits on the directory, another session is served in full
        r2 = auth_session(relay, user="alice", password="alicepw")
        self.addCleanup(r2.close)
        self.assertEqual(r2.cmd("MAIL FROM:<alice@file.test>")[0], 250)
        self.assertEqual(r2.cmd("RCPT TO:<x@example.net>")[0], 250)
        served = time.monotonic() - t0
        self.assertLess(served, 2.0, "a second session waited for the hanging directory")
        self.assertGreaterEqual(hang.accepted, 1)
        code, text = r1.read_reply()
        waited = time.monotonic() - t0
        self.assertEqual((code, text[:6]), (451, "4.3.0 "))
        self.assertGreater(waited, 2.5)
        self.assertEqual(r1.read_reply()[0], 250)       # the pipelined NOOP, after it
        relay.wait_for_log("ldap_unavailable", since=mark)


if __name__ == "__main__":
    unittest.main()
