"""test_submit_sasl_backends.py - AUTH through submit.sasl_options against
real password backends started here on loopback: a real saslauthd -a shadow
checking a system account the test makes, Cyrus's SQL auxprop plugin on a
real SQLite database, and a saslauthd socket that accepts and never answers.

For each backend: the good password (mail accepted), a wrong password and an
unknown user (535 5.7.8), the backend stopped (454 4.7.0, not counted by the
per-IP failure throttle).  The hanging backend is answered 454 after
submit.auth_timeout (event=auth_failed reason=timeout) while another
session's EHLO is answered meanwhile: the check runs off the event loop; and
SIGTERM while a check hangs in it stops relayd within a short bound
(event=auth_abandoned, exit 0, the queue closed cleanly: nothing to replay
at the next start, the queued message still there).  saslauthd -a ldap with
slapd stopped answers a bare "NO", as for a wrong password: with
submit.senders_ldap on the same slapd, relayd asks the directory and answers
454 (auth_error, not counted; the right password works again once slapd is
back, and a wrong one is 535 again; a senders_ldap that hangs holds the
answer at most submit.auth_timeout, then 454 reason=timeout, while other
sessions are served); without senders_ldap it is a 535 that counts, as the
README documents.  The SQL plugin's database gone is a 454
that does not count.
"""

import base64
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import time
import unittest

from client import raw_session
from relay import REPO, TEST_USER, share_with_user
from saslauthd import DeadSocket, Saslauthd, SystemUser, available
from test_submit_smtp import QueueOnlyRelay as Relay
from test_submit_smtp import auth_session, qid_of, stop_cleanly

try:    # the LDAP engineer's slapd fixture (tests/harness/ldapserver.py)
    import ldapserver
except ImportError:
    ldapserver = None

SKIP = available()
USER, PASSWORD = "rdsasl1", "Good-pw-1"
SENDERS = ("%s: %s@example.org\nsqluser: sqluser@example.org\nalice: alice@example.org\n"
           % (USER, USER))


def plain(user, password):
    return base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()


def tls_session(relay):
    r = raw_session(relay.host, relay.submit_port, timeout=20)
    assert r.cmd("EHLO client.test")[0] == 250
    assert r.starttls()[0] == 220
    assert r.cmd("EHLO client.test")[0] == 250
    return r


def backend_relay(sasl_options, ldap=None, ldap_timeout="3s", **submit):
    """A relayd whose AUTH goes to sasl_options instead of the sasldb; with
    ldap (an ldapserver.LDAPServer), submit.senders_ldap points at it."""
    cfg = {"sasl_db": None, "sasl_options": sasl_options, "sasl_mechanisms": "PLAIN LOGIN",
           "auth_fail_limit": 1000, "auth_fail_delay_after": 1000}
    cfg.update(submit)
    relay = Relay(users={}, senders=SENDERS, submit=cfg)
    if ldap is not None:
        pwfile = os.path.join(relay.tmpdir, "ldap.secret")
        with open(pwfile, "w") as f:
            f.write(ldapserver.BIND_PW + "\n")
        share_with_user(pwfile)
        relay.update_config(submit={"senders_ldap": {
            "uri": ldap.uri, "base": "ou=people," + ldapserver.BASE,
            "bind_dn": ldapserver.BIND_DN, "bind_password_file": pwfile,
            "timeout": ldap_timeout, "cache_ttl": "1h"}})
    relay.start()
    return relay


class BackendChecks:
    """The cases every backend answers the same way."""

    user = password = None

    def auth(self, user, password):
        r = tls_session(self.relay)
        self.addCleanup(r.close)
        return r, r.cmd("AUTH PLAIN " + plain(user, password))

    def test_good_password_sends_mail(self):
        r, reply = self.auth(self.user, self.password)
        self.assertEqual(reply, (235, "2.7.0 Authentication successful"))
        self.relay.wait_for_log("authenticated", user=self.user, mech="PLAIN")
        self.assertEqual(r.cmd("MAIL FROM:<%s@example.org>" % self.user)[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<someone@example.net>")[0], 250)
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send("Subject: hi\r\n\r\nbody\r\n.\r\n")
        code, text = r.read_reply()
        self.assertEqual(code, 250, text)
        self.assertIn("queued as", text)

    def test_login_mechanism(self):
        r = tls_session(self.relay)
        self.addCleanup(r.close)
        self.assertEqual(r.cmd("AUTH LOGIN")[0], 334)
        self.assertEqual(r.cmd(base64.b64encode(self.user.encode()).decode())[0], 334)
        self.assertEqual(r.cmd(base64.b64encode(self.password.encode()).decode())[0], 235)

    def test_wrong_password(self):
        mark = self.relay.log_mark()
        r, reply = self.auth(self.user, "not-" + self.password)
        self.assertEqual(reply, (535, "5.7.8 Error: authentication failed"))
        self.relay.wait_for_log("auth_failed", since=mark, user=self.user)
        self.assertEqual(r.cmd("MAIL FROM:<%s@example.org>" % self.user)[0], 530)

    def test_unknown_user(self):
        mark = self.relay.log_mark()
        _, reply = self.auth("nosuchuser", "whatever")
        self.assertEqual(reply, (535, "5.7.8 Error: authentication failed"))
        self.relay.wait_for_log("auth_failed", since=mark, user="nosuchuser")


@unittest.skipIf(SKIP, SKIP)
class SaslauthdShadowTest(BackendChecks, unittest.TestCase):
    """saslauthd -a shadow with a system account made by useradd."""

    user, password = USER, PASSWORD

    @classmethod
    def setUpClass(cls):
        cls.account = SystemUser(USER, PASSWORD)
        cls.saslauthd = Saslauthd("shadow").start()
        cls.relay = backend_relay(cls.saslauthd.sasl_options(), auth_fail_limit=2)

    @classmethod
    def tearDownClass(cls):
        try:
            stop_cleanly(cls.relay)
        finally:
            cls.saslauthd.close()
            cls.account.close()

    # auth_fail_limit is 2 here: the failing cases above must not run into it
    def setUp(self):
        self.relay.restart()

    def test_saslauthd_stopped_is_454_and_not_counted(self):
        self.saslauthd.stop()
        self.addCleanup(lambda: self.saslauthd.running or self.saslauthd.start())
        for _ in range(3):                      # more than auth_fail_limit
            mark = self.relay.log_mark()
            r, reply = self.auth(USER, PASSWORD)
            self.assertEqual(reply, (454, "4.7.0 Temporary authentication failure"))
            self.relay.wait_for_log("auth_error", since=mark, mech="PLAIN")
            self.assertEqual(self.relay.count_log("auth_failed", since=mark), 0)
        self.saslauthd.start()
        _, reply = self.auth(USER, PASSWORD)    # not refused by the throttle
        self.assertEqual(reply[0], 235)


SASLAUTHD_LDAP_CONF = """\
ldap_servers: {uri}
ldap_search_base: ou=people,{base}
ldap_filter: (uid=%u)
ldap_bind_dn: {binddn}
ldap_password: {bindpw}
ldap_timeout: 5
"""


@unittest.skipIf(SKIP or ldapserver is None, SKIP or "no tests/harness/ldapserver.py (slapd)")
class SaslauthdLDAPTest(BackendChecks, unittest.TestCase):
    """saslauthd -a ldap against a real slapd (LDAP/Active Directory), with
    submit.senders_ldap on the same slapd (the usual setup); cls.plain is a
    relayd with the same saslauthd and no senders_ldap."""

    user, password = "alice", "alicepw"

    @classmethod
    def setUpClass(cls):
        cls.ldap = ldapserver.LDAPServer().start()
        conf = SASLAUTHD_LDAP_CONF.format(uri=cls.ldap.uri, base=ldapserver.BASE,
                                          binddn=ldapserver.BIND_DN, bindpw=ldapserver.BIND_PW)
        cls.saslauthd = Saslauthd("ldap", conf=conf).start()
        cls.plain = cls.relay = cls.hung = None
        cls.hanging = ldapserver.HangingServer()
        try:
            # cache_ttl 1h: a cached answer must not stand in for the directory
            cls.relay = backend_relay(cls.saslauthd.sasl_options(), ldap=cls.ldap)
            cls.plain = backend_relay(cls.saslauthd.sasl_options())
            # senders_ldap hangs, for longer than auth_timeout
            cls.hung = backend_relay(cls.saslauthd.sasl_options(), ldap=cls.hanging,
                                     ldap_timeout="5s", auth_timeout="2s")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            for relay in (cls.relay, cls.plain, cls.hung):
                if relay is not None:
                    stop_cleanly(relay)
        finally:
            cls.hanging.close()
            cls.saslauthd.close()
            cls.ldap.close()

    def auth_list(self, relay):
        """relayctl auth list: (kind, name, failures) of each entry."""
        doc = relay.relayctl("auth", "list", "--json", json=True)
        return sorted((e["kind"], e["name"], e["failures"]) for e in doc["entries"])

    def test_saslauthd_stopped_is_454(self):
        self.saslauthd.stop()
        self.addCleanup(lambda: self.saslauthd.running or self.saslauthd.start())
        mark = self.relay.log_mark()
        _, reply = self.auth(self.user, self.password)
        self.assertEqual(reply, (454, "4.7.0 Temporary authentication failure"))
        self.assertEqual(self.relay.count_log("auth_failed", since=mark), 0)

    def test_slapd_stopped_behind_saslauthd_is_454_with_senders_ldap(self):
        # saslauthd -a ldap answers a bare "NO" for any LDAP error, which
        # libsasl makes a SASL_BADAUTH; relayd asks senders_ldap (the same
        # slapd): unreachable, so the NO was the outage, not the password.
        # alice's directory answer is cached (cache_ttl 1h): not trusted here.
        r, _ = self.auth(self.user, self.password)
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.net>")[0], 553)   # asks the directory
        counted = self.auth_list(self.relay)
        self.ldap.stop()
        self.addCleanup(self.ldap.start)
        mark = self.relay.log_mark()
        first, reply = self.auth(self.user, self.password)
        self.assertEqual(reply, (454, "4.7.0 Temporary authentication failure"))
        self.relay.wait_for_log("auth_error", since=mark, mech="PLAIN",
                                error="directory unavailable")
        # a second session meanwhile: answered, and its wrong password is an
        # outage too, not a failure
        _, reply = self.auth("bob", "wrong")
        self.assertEqual(reply, (454, "4.7.0 Temporary authentication failure"))
        self.assertEqual(first.cmd("NOOP")[0], 250)             # the first one goes on
        self.assertEqual(self.relay.count_log("auth_failed", since=mark), 0)
        self.assertEqual(self.auth_list(self.relay), counted)   # nothing counted
        # slapd back: the right password works, a wrong one is a 535 again
        self.ldap.start()
        _, reply = self.auth(self.user, self.password)
        self.assertEqual(reply[0], 235, reply)
        mark = self.relay.log_mark()
        _, reply = self.auth(self.user, "wrong")
        self.assertEqual(reply, (535, "5.7.8 Error: authentication failed"))
        self.relay.wait_for_log("auth_failed", since=mark, user=self.user)
        self.assertIn(("login", self.user), [e[:2] for e in self.auth_list(self.relay)])
        self.relay.relayctl("auth", "unblock", self.user, check=True)

    def test_hanging_directory_is_bounded_by_auth_timeout(self):
        # saslauthd says NO at once; the directory asked about it never
        # answers: the session waits auth_timeout (2 s), not the directory's
        # 5 s, gets 454 (auth_failed reason=timeout, not counted), and
        # another session is served meanwhile.
        counted = self.auth_list(self.hung)
        mark = self.hung.log_mark()
        waiting = tls_session(self.hung)
        self.addCleanup(waiting.close)
        leaving = tls_session(self.hung)        # leaves while its probe runs
        t0 = time.monotonic()
        leaving.send("AUTH PLAIN %s\r\n" % plain(self.user, "wrong"))
        waiting.send("AUTH PLAIN %s\r\n" % plain(self.user, "wrong"))
        other = tls_session(self.hung)
        self.addCleanup(other.close)
        self.assertEqual(other.cmd("NOOP")[0], 250)
        self.assertLess(time.monotonic() - t0, 1.5, "a session waited for the directory")
        leaving.close()
        self.assertEqual(waiting.read_reply(), (454, "4.7.0 Temporary authentication failure"))
        waited = time.monotonic() - t0
        self.assertGreater(waited, 1.5)
        self.assertLess(waited, 4.0)            # the directory's own timeout is 5 s
        self.hung.wait_for_log("auth_failed", since=mark, reason="timeout", user=self.user)
        self.hung.wait_for_log("ldap_unavailable", since=mark)     # the lookup came back
        self.assertEqual(waiting.cmd("NOOP")[0], 250)
        self.assertEqual(self.auth_list(self.hung), counted)
        self.assertEqual(self.hung.count_log("auth_failed", since=mark, reason="timeout"), 1)

    def test_slapd_stopped_behind_saslauthd_without_senders_ldap_is_535(self):
        # Without a directory to ask, relayd cannot tell: a 535 that counts,
        # as the README and relayd.conf(5) say.
        self.ldap.stop()
        self.addCleanup(self.ldap.start)
        mark = self.plain.log_mark()
        r = tls_session(self.plain)
        self.addCleanup(r.close)
        reply = r.cmd("AUTH PLAIN " + plain(self.user, self.password))
        self.assertEqual(reply, (535, "5.7.8 Error: authentication failed"))
        self.plain.wait_for_log("auth_failed", since=mark, user=self.user)
        self.assertEqual(self.plain.count_log("auth_error", since=mark), 0)
        # what the admin sees afterwards, and clears
        self.assertIn(("login", self.user), [e[:2] for e in self.auth_list(self.plain)])
        self.plain.relayctl("auth", "unblock", self.user, check=True)


@unittest.skipIf(SKIP or ldapserver is None, SKIP or "no tests/harness/ldapserver.py (slapd)")
class SaslauthdLDAPCacheTest(unittest.TestCase):
    """The README's advice for an LDAP outage behind saslauthd: its credential
    cache (-c) answers a user who logged in lately without asking LDAP."""

    @classmethod
    def setUpClass(cls):
        cls.ldap = ldapserver.LDAPServer().start()
        conf = SASLAUTHD_LDAP_CONF.format(uri=cls.ldap.uri, base=ldapserver.BASE,
                                          binddn=ldapserver.BIND_DN, bindpw=ldapserver.BIND_PW)
        cls.saslauthd = Saslauthd("ldap", conf=conf, cache=True).start()
        cls.relay = backend_relay(cls.saslauthd.sasl_options())

    @classmethod
    def tearDownClass(cls):
        try:
            stop_cleanly(cls.relay)
        finally:
            cls.saslauthd.close()
            cls.ldap.close()

    def auth(self, user, password):
        r = tls_session(self.relay)
        self.addCleanup(r.close)
        return r.cmd("AUTH PLAIN " + plain(user, password))

    def test_cached_user_logs_in_while_slapd_is_down(self):
        self.assertEqual(self.auth("alice", "alicepw")[0], 235)
        self.ldap.stop()
        self.addCleanup(self.ldap.start)
        self.assertEqual(self.auth("alice", "alicepw")[0], 235)     # from the cache
        self.assertEqual(self.auth("alice", "wrong")[0], 535)       # the cache is no oracle


@unittest.skipIf(SKIP, SKIP)
class SaslauthdHangsTest(unittest.TestCase):
    """A saslauthd socket that accepts and never answers."""

    @classmethod
    def setUpClass(cls):
        cls.dir = os.path.join(os.environ.get("TMPDIR", "/tmp"),
                               "relayd-dead-%d" % os.getpid())
        os.makedirs(cls.dir, exist_ok=True)
        os.chmod(cls.dir, 0o755)
        cls.path = os.path.join(cls.dir, "mux")
        cls.dead = DeadSocket(cls.path)
        cls.relay = backend_relay({"pwcheck_method": "saslauthd", "saslauthd_path": cls.path},
                                  auth_timeout="2s", auth_fail_limit=1)

    @classmethod
    def tearDownClass(cls):
        cls.dead.release()              # the blocked checks return, then relayd stops
        try:
            stop_cleanly(cls.relay)
        finally:
            shutil.rmtree(cls.dir, ignore_errors=True)

    def test_timeout_is_454_and_the_loop_runs_meanwhile(self):
        relay = self.relay
        mark = relay.log_mark()
        a = tls_session(relay)
        self.addCleanup(a.close)
        asked = len(self.dead.conns)
        a.send("AUTH PLAIN %s\r\n" % plain(USER, PASSWORD))
        started = time.monotonic()
        self.assertTrue(self.dead.wait_connections(asked + 1), "relayd never asked the backend")

        # the check hangs: another session is served meanwhile
        b = raw_session(relay.host, relay.submit_port, timeout=5)
        self.addCleanup(b.close)
        b.send("EHLO other.test\r\n")
        code, _ = b.read_reply_lines()
        answered = time.monotonic() - started
        self.assertEqual(code, 250)
        self.assertLess(answered, 1.5, "EHLO waited for the AUTH of another session")
        with self.assertRaises(socket.timeout):
            a._fill(timeout=0.2)        # ... while the first still has no answer

        self.assertEqual(a.read_reply(), (454, "4.7.0 Temporary authentication failure"))
        self.assertGreaterEqual(time.monotonic() - started, 1.9)
        relay.wait_for_log("auth_failed", since=mark, reason="timeout", mech="PLAIN")

        # the timed-out check still runs: this session may not start another
        self.assertEqual(a.cmd("AUTH PLAIN " + plain(USER, PASSWORD)),
                         (454, "4.7.0 Temporary authentication failure"))
        # a client that leaves while its check runs: the check's end frees the
        # exchange (tearDownClass releases the backend; relayd must stop cleanly)
        d = tls_session(relay)
        asked = len(self.dead.conns)
        d.send("AUTH PLAIN %s\r\n" % plain(USER, PASSWORD))
        self.assertTrue(self.dead.wait_connections(asked + 1))
        d.close()
        self.assertEqual(b.cmd("NOOP")[0], 250)

        # timeouts are not failed passwords: auth_fail_limit = 1 is not reached
        # (both threads are taken now: this check waits its turn, then times out)
        c = tls_session(relay)
        self.addCleanup(c.close)
        c.send("AUTH PLAIN %s\r\n" % plain(USER, PASSWORD))
        self.assertEqual(c.read_reply()[0], 454)
        self.assertEqual(relay.count_log("auth_refused", since=mark), 0)
        # and one that leaves while its check waits for a thread
        mark2 = relay.log_mark()
        e = tls_session(relay)
        e.send("AUTH PLAIN %s\r\n" % plain(USER, PASSWORD))
        relay.wait_for_log("submit_state", since=mark2, to="auth-wait")
        e.close()
        relay.wait_for_log("disconnect", since=mark2)
        self.assertEqual(b.cmd("NOOP")[0], 250)

        # nor does fail2ban's filter count them against the client
        if shutil.which("fail2ban-regex") is None:
            return
        self.assertGreaterEqual(relay.count_log("auth_failed", reason="timeout"), 2)
        r = subprocess.run(["fail2ban-regex", relay.log_path,
                            os.path.join(REPO, "contrib", "fail2ban", "filter.d", "relayd.conf")],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        m = re.search(r"^Lines: \d+ lines, (\d+) ignored, (\d+) matched", r.stdout, re.M)
        self.assertIsNotNone(m, r.stdout)
        self.assertEqual(int(m.group(2)), 0, r.stdout)
        self.assertGreaterEqual(int(m.group(1)), 2, r.stdout)


@unittest.skipIf(SKIP, SKIP)
class SaslauthdHangsAtStopTest(unittest.TestCase):
    """SIGTERM while a password check hangs in a backend that never answers."""

    def setUp(self):
        self.dir = os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                "relayd-deadstop-%d" % os.getpid())
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.dead = DeadSocket(os.path.join(self.dir, "mux"))
        self.addCleanup(self.dead.release)
        # a sasldb user sends a message first: the queue has something to close
        self.relay = Relay(submit={"auth_timeout": "60s"})
        self.relay.start()
        self.addCleanup(self.relay.close)

    def test_sigterm_does_not_wait_for_a_hung_check(self):
        relay = self.relay
        r = auth_session(relay)
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.org>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<someone@example.net>")[0], 250)
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send("Subject: before the stop\r\n\r\nbody\r\n.\r\n")
        code, text = r.read_reply()
        self.assertEqual(code, 250, text)
        qid = qid_of(text)
        r.close()

        # the same relayd, now asking the backend that never answers
        relay.update_config(submit={"sasl_db": None, "sasl_mechanisms": "PLAIN LOGIN",
                                    "sasl_options": {"pwcheck_method": "saslauthd",
                                                     "saslauthd_path": self.dead.path}})
        relay.restart()
        a = tls_session(relay)
        self.addCleanup(a.close)
        a.send("AUTH PLAIN %s\r\n" % plain(USER, PASSWORD))
        self.assertTrue(self.dead.wait_connections(1), "relayd never asked the backend")
        relay.wait_for_log("submit_state", to="auth-wait")

        mark = relay.log_mark()
        started = time.monotonic()
        rc = relay.stop(timeout=8)          # a RelayError (and SIGKILL) if it hangs
        took = time.monotonic() - started
        self.assertEqual(rc, 0, relay.diagnostics())
        self.assertLess(took, 6, "the stop waited for the hung check")
        relay.wait_for_log("auth_abandoned", since=mark, steps="1")
        relay.wait_for_log("stopped", since=mark, clean="yes")
        # the session was told and closed
        code, text = a.read_reply()
        self.assertEqual(code, 421, text)
        self.assertTrue(a.wait_closed())

        # the queue was closed cleanly: nothing to replay, the message kept
        mark = relay.log_mark()
        relay.start()
        self.assertEqual(relay.count_log("queue_journal_replayed", since=mark), 0)
        doc = relay.relayctl("queue", "list", "--json", json=True)
        self.assertEqual([m["qid"] for m in doc["messages"]], [qid])
        stop_cleanly(relay)


@unittest.skipIf(SKIP, SKIP)
class SQLAuxpropTest(BackendChecks, unittest.TestCase):
    """Cyrus's SQL auxprop plugin (sqlite3 engine) on a real SQLite database."""

    user, password = "sqluser", "sql-pw-1"

    @classmethod
    def setUpClass(cls):
        plugdir = "/usr/lib/x86_64-linux-gnu/sasl2"
        if not any(n.startswith("libsql.so") for n in os.listdir(plugdir)):
            raise unittest.SkipTest("libsasl2-modules-sql is not installed")
        cls.dir = os.path.join(os.environ.get("TMPDIR", "/tmp"), "relayd-sql-%d" % os.getpid())
        os.makedirs(cls.dir, exist_ok=True)
        os.chmod(cls.dir, 0o755)
        cls.db = os.path.join(cls.dir, "users.db")
        with sqlite3.connect(cls.db) as db:
            db.execute("CREATE TABLE users (user TEXT PRIMARY KEY, password TEXT)")
            db.execute("INSERT INTO users VALUES (?, ?)", (cls.user, cls.password))
        share_with_user(cls.db)
        cls.relay = backend_relay({
            "pwcheck_method": "auxprop", "auxprop_plugin": "sql", "sql_engine": "sqlite3",
            "sql_database": cls.db,
            "sql_select": "SELECT password FROM users WHERE user = '%u'"})

    @classmethod
    def tearDownClass(cls):
        try:
            stop_cleanly(cls.relay)
        finally:
            shutil.rmtree(cls.dir, ignore_errors=True)

    def test_check_config_warns_about_an_unreadable_database(self):
        rc, err = self.relay.check_config()
        self.assertEqual((rc, err), (0, ""), "the shared database draws no warning")
        os.chmod(self.db, 0o600)
        self.addCleanup(os.chmod, self.db, 0o644)
        rc, err = self.relay.check_config()
        self.assertEqual(rc, 0, err)
        self.assertIn("submit.sasl_options.sql_database '%s' will not be readable by user '%s'"
                      % (self.db, TEST_USER), err)

    def test_reload_while_a_session_waits(self):
        r = tls_session(self.relay)
        self.addCleanup(r.close)
        mark = self.relay.log_mark()
        self.relay.sighup()
        self.relay.wait_for_log("reloaded", since=mark)
        self.assertEqual(r.cmd("AUTH PLAIN " + plain(self.user, self.password))[0], 235)
        _, reply = self.auth(self.user, self.password)
        self.assertEqual(reply[0], 235)

    def test_database_gone_is_454_and_not_counted(self):
        os.rename(self.db, self.db + ".away")
        self.addCleanup(os.rename, self.db + ".away", self.db)
        mark = self.relay.log_mark()
        _, reply = self.auth(self.user, self.password)
        self.assertEqual(reply, (454, "4.7.0 Temporary authentication failure"))
        self.assertEqual(self.relay.count_log("auth_failed", since=mark), 0)
        # counted neither for the address nor for the login
        doc = self.relay.relayctl("auth", "list", "--json", json=True)
        self.assertEqual([e for e in doc["entries"] if e["name"] in (self.user, "127.0.0.1")], [])


if __name__ == "__main__":
    unittest.main()
