"""test_submit_auth_throttle.py - AUTH guessing is limited per login too, not
only per client address (issue #15, point 3), and relayctl shows and clears
the blocks.  Real clients from many loopback addresses (127.0.0.N) against a
real relayd with a real sasldb.

* Failures against one login from many addresses (each far below the per-IP
  limit) block that login: event=auth_login_blocked.  While blocked, an AUTH
  naming it gets 454 4.7.0 before any password is checked, the right password
  as well as a wrong one, with PLAIN and LOGIN, in any letter case
  (event=auth_login_refused).  Another login from the same address still logs
  in, and so does the blocked login from an address it authenticated from
  before the guessing began.
* A name that does not exist is counted and blocked exactly alike: the
  replies do not tell whether a login exists.
* `relayctl auth list [--json]` shows the login and a blocked address;
  `relayctl auth unblock LOGIN` and `... ADDRESS` clear them (event
  auth_unblocked) and the next AUTH succeeds; an address or login with
  nothing to clear is a clear error (exit 1), a missing argument a usage
  error (exit 2).
"""

import base64
import unittest

from test_submit_limits import session_from
from test_submit_smtp import QueueOnlyRelay as Relay
from test_submit_smtp import stop_cleanly

DENIED = (535, "5.7.8 Error: authentication failed")
HELD = (454, "4.7.0 Temporary authentication failure")


def plain(user, password):
    return base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()


class AuthThrottleTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.relay = Relay(users={"alice": "alicepw", "bob": "bobpw", "carol": "carolpw",
                                 "dave": "davepw"},
                          submit={"auth_fail_limit": 3, "auth_fail_delay_after": 100,
                                  "auth_login_fail_limit": 4, "auth_login_block": "10m"})
        cls.relay.start()

    @classmethod
    def tearDownClass(cls):
        stop_cleanly(cls.relay)

    def session(self, source):
        r = session_from(self.relay, source)
        self.addCleanup(r.close)
        self.assertEqual(r.cmd("EHLO client.test")[0], 250)
        self.assertEqual(r.starttls()[0], 220)
        self.assertEqual(r.cmd("EHLO client.test")[0], 250)
        return r

    def auth(self, source, user, password):
        return self.session(source).cmd("AUTH PLAIN " + plain(user, password))

    def guess(self, user, sources):
        """One wrong password for user from each source; the last one blocks it."""
        mark = self.relay.log_mark()
        for src in sources:
            self.assertEqual(self.auth(src, user, "guess-" + src), DENIED)
        self.relay.wait_for_log("auth_login_blocked", since=mark, user=user.lower(),
                                client=sources[-1])
        self.assertEqual(self.relay.count_log("auth_login_blocked", since=mark), 1)
        self.assertEqual(self.relay.count_log("auth_blocked", since=mark), 0,
                         "no address reached the per-IP limit")

    def test_guessing_one_login_from_many_addresses_blocks_that_login(self):
        relay = self.relay
        # alice works from her usual address before the guessing starts
        self.assertEqual(self.auth("127.0.0.20", "alice", "alicepw")[0], 235)
        self.guess("alice", ["127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"])

        # blocked from a new address: the right password is not even checked
        mark = relay.log_mark()
        self.assertEqual(self.auth("127.0.0.25", "alice", "alicepw"), HELD)
        relay.wait_for_log("auth_login_refused", since=mark, user="alice", client="127.0.0.25")
        self.assertEqual(self.auth("127.0.0.25", "alice", "wrong"), HELD)
        self.assertEqual(self.auth("127.0.0.25", "ALICE", "alicepw"), HELD)
        r = self.session("127.0.0.25")
        self.assertEqual(r.cmd("AUTH LOGIN")[0], 334)
        self.assertEqual(r.cmd(base64.b64encode(b"alice").decode()), HELD)   # before the password
        self.assertEqual(relay.count_log("authenticated", since=mark), 0)
        self.assertEqual(relay.count_log("auth_failed", since=mark), 0,
                         "a held AUTH is not a failure (fail2ban must not ban the office)")

        # another login from the same address, and alice from her own address
        self.assertEqual(self.auth("127.0.0.25", "bob", "bobpw")[0], 235)
        self.assertEqual(self.auth("127.0.0.20", "alice", "alicepw")[0], 235)

        out = relay.relayctl("auth", "list", check=True).stdout
        self.assertRegex(out, r"(?m)^login\s+alice\s+4\s+blocked\s+\d{4}-\d\d-\d\dT")
        doc = relay.relayctl("auth", "list", "--json", json=True)
        [e] = [e for e in doc["entries"] if e["name"] == "alice"]
        self.assertEqual((e["kind"], e["failures"], e["blocked"], e["blocks"]),
                         ("login", 4, True, 1))
        self.assertRegex(e["until"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

        mark = relay.log_mark()
        r = relay.relayctl("auth", "unblock", "Alice")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("login alice unblocked", r.stdout)
        relay.wait_for_log("auth_unblocked", since=mark, user="alice", by="relayctl")
        self.assertEqual(self.auth("127.0.0.25", "alice", "alicepw")[0], 235)
        self.assertNotIn("alice", [e["name"] for e in
                                   relay.relayctl("auth", "list", "--json", json=True)["entries"]])

    def test_a_login_that_does_not_exist_is_blocked_alike(self):
        # the same replies as for carol, who exists: nothing tells them apart
        self.guess("carol", ["127.0.0.41", "127.0.0.42", "127.0.0.43", "127.0.0.44"])
        self.guess("ghost", ["127.0.0.51", "127.0.0.52", "127.0.0.53", "127.0.0.54"])
        self.assertEqual(self.auth("127.0.0.45", "carol", "carolpw"), HELD)
        self.assertEqual(self.auth("127.0.0.45", "ghost", "whatever"), HELD)
        doc = self.relay.relayctl("auth", "list", "--json", json=True)
        rows = {e["name"]: e for e in doc["entries"] if e["kind"] == "login"}
        self.assertEqual({k: (v["failures"], v["blocked"]) for k, v in rows.items()
                          if k in ("carol", "ghost")},
                         {"carol": (4, True), "ghost": (4, True)})
        for name in ("carol", "ghost"):
            self.relay.relayctl("auth", "unblock", name, check=True)
        self.assertEqual(self.auth("127.0.0.45", "carol", "carolpw")[0], 235)

    def test_white_space_around_the_login_is_the_same_login(self):
        # Cyrus SASL strips it before the check: " dave\t" logs in as dave ...
        self.assertEqual(self.auth("127.0.0.60", " dave\t", "davepw")[0], 235)
        # ... so guesses under such spellings count against dave, not each alone
        mark = self.relay.log_mark()
        for src, name in (("127.0.0.61", " dave"), ("127.0.0.62", "dave "),
                          ("127.0.0.63", "\tdave"), ("127.0.0.64", "  DAVE\r")):
            self.assertEqual(self.auth(src, name, "guess"), DENIED)
        self.relay.wait_for_log("auth_login_blocked", since=mark, user="dave",
                                client="127.0.0.64")
        self.assertEqual(self.auth("127.0.0.65", "dave", "davepw"), HELD)
        self.assertEqual(self.auth("127.0.0.65", " dave ", "davepw"), HELD)
        self.relay.relayctl("auth", "unblock", "dave", check=True)
        self.assertEqual(self.auth("127.0.0.65", "dave", "davepw")[0], 235)

    def test_unblock_an_address(self):
        relay = self.relay
        src = "127.0.0.30"
        mark = relay.log_mark()
        for user in ("u1", "u2", "u3"):         # per-IP limit 3, each login once
            self.assertEqual(self.auth(src, user, "x"), DENIED)
        relay.wait_for_log("auth_blocked", since=mark, client=src)
        r = self.session(src)
        self.assertEqual(r.cmd("AUTH PLAIN " + plain("dave", "davepw"))[0], 421)

        out = relay.relayctl("auth", "list", check=True).stdout
        self.assertRegex(out, r"(?m)^address\s+127\.0\.0\.30\s+3\s+blocked\s")
        doc = relay.relayctl("auth", "list", "--json", json=True)
        [e] = [e for e in doc["entries"] if e["name"] == src]
        self.assertEqual((e["kind"], e["failures"], e["blocked"]), ("address", 3, True))

        mark = relay.log_mark()
        doc = relay.relayctl("auth", "unblock", src, "--json", json=True)
        self.assertEqual(doc, {"unblocked": src, "kind": "address"})
        relay.wait_for_log("auth_unblocked", since=mark, client=src, by="relayctl")
        self.assertEqual(self.auth(src, "dave", "davepw")[0], 235)

    def test_unblock_what_is_not_blocked(self):
        r = self.relay.relayctl("auth", "unblock", "127.0.0.99")
        self.assertEqual(r.returncode, 1)
        self.assertIn("not blocked: 127.0.0.99", r.stderr)
        r = self.relay.relayctl("auth", "unblock", "nobody-here")
        self.assertEqual(r.returncode, 1)
        self.assertIn("not blocked: nobody-here (no login with failed AUTHs", r.stderr)
        r = self.relay.relayctl("auth", "unblock")
        self.assertEqual(r.returncode, 2)
        self.assertIn("auth unblock ADDRESS|LOGIN", r.stderr)


if __name__ == "__main__":
    unittest.main()
