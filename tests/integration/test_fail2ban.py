"""test_fail2ban.py - the shipped fail2ban filter
(contrib/fail2ban/filter.d/relayd.conf) against the log of a real relayd:
successful logins (PLAIN, LOGIN), failed ones (wrong password, unknown user,
a user name made to look like a log key), enough failures from one
address to be blocked (auth_blocked), and one more try (auth_refused).  fail2ban-regex (Debian's fail2ban)
must match exactly the auth_failed and auth_blocked lines, each with the
client address as the host, and nothing else.
"""

import base64
import os
import re
import shutil
import subprocess
import unittest

from client import raw_session
from relay import REPO
from test_submit_smtp import QueueOnlyRelay as Relay
from test_submit_smtp import auth_session

FILTER = os.path.join(REPO, "contrib", "fail2ban", "filter.d", "relayd.conf")


def b64(s):
    return base64.b64encode(s.encode()).decode()


def failed_login(relay, user, password):
    with raw_session(relay.host, relay.submit_port) as r:
        r.cmd("EHLO client.test")
        r.starttls()
        r.cmd("EHLO client.test")
        code, _ = r.cmd("AUTH PLAIN " + b64("\0%s\0%s" % (user, password)))
        return code


class Fail2banFilterTest(unittest.TestCase):

    def setUp(self):
        if shutil.which("fail2ban-regex") is None:
            self.fail("fail2ban-regex is missing: sh contrib/install-deps.sh installs fail2ban")

    def test_filter_matches_failed_and_blocked_logins_only(self):
        relay = Relay(submit={"auth_fail_delay_after": 100, "auth_fail_limit": 4,
                              "auth_fail_window": "15m"})
        self.addCleanup(relay.close)
        relay.start()
        # Successful logins: must not match.
        for tls in (False, True):
            auth_session(relay, tls=tls).close()
        with raw_session(relay.host, relay.submit_port) as r:
            r.cmd("EHLO client.test")
            r.starttls()
            r.cmd("EHLO client.test")
            self.assertEqual(r.cmd("AUTH LOGIN")[0], 334)
            self.assertEqual(r.cmd(b64("bob"))[0], 334)
            self.assertEqual(r.cmd(b64("bobpw"))[0], 235)
        # Failures; the fourth within the window blocks 127.0.0.1.
        self.assertEqual(failed_login(relay, "alice", "wrong"), 535)
        self.assertEqual(failed_login(relay, "nosuchuser", "x"), 535)
        self.assertEqual(failed_login(relay, 'x client=192.0.2.66 "', "x"), 535)
        self.assertEqual(failed_login(relay, "bob", "wrong"), 535)
        relay.wait_for_log("auth_blocked")
        # Refused from now on (auth_refused): not one of the two events.
        self.assertEqual(failed_login(relay, "alice", "alicepw"), 421)
        relay.wait_for_log("auth_refused")
        self.assertEqual(relay.stop(), 0)

        with open(relay.log_path) as f:
            lines = f.read().splitlines()
        failed = [l for l in lines if re.search(r" event=auth_(failed|blocked) ", l)]
        self.assertEqual(sum(" event=auth_failed " in l for l in failed), 4, failed)
        self.assertEqual(sum(" event=auth_blocked " in l for l in failed), 1, failed)
        self.assertEqual(sum(" event=authenticated " in l for l in lines), 3)

        r = subprocess.run(["fail2ban-regex", "--print-all-matched", "--print-all-missed",
                            relay.log_path, FILTER],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        m = re.search(r"^Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed",
                      r.stdout, re.M)
        self.assertIsNotNone(m, r.stdout)
        total, ignored, matched, missed = map(int, m.groups())
        self.assertEqual(total, len(lines))
        self.assertEqual(matched, len(failed), r.stdout)
        self.assertEqual(missed, len(lines) - len(failed), r.stdout)
        # Every host found is the client's address, never the one in the user name.
        r2 = subprocess.run(["fail2ban-regex", "--out", "ip", relay.log_path, FILTER],
                            capture_output=True, text=True, timeout=120)
        self.assertEqual(r2.returncode, 0, r2.stdout + r2.stderr)
        self.assertEqual(r2.stdout.split(), ["127.0.0.1"] * len(failed), r2.stdout)
        # The matched section lists exactly the auth_failed/auth_blocked lines.
        matched_part = r.stdout.split("|- Matched line(s):")[1].split("`-")[0]
        missed_part = r.stdout.split("|- Missed line(s):")[1].split("`-")[0]
        for l in failed:
            self.assertIn(l.split(" ", 1)[1], matched_part)
        self.assertTrue(any(" event=auth_refused " in l for l in lines))
        for l in lines:
            if re.search(" event=(authenticated|auth_refused) ", l):
                self.assertIn(l.split(" ", 1)[1], missed_part)
                self.assertNotIn(l.split(" ", 1)[1], matched_part)


if __name__ == "__main__":
    unittest.main()
