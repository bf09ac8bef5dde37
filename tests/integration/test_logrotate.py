"""test_logrotate.py - the shipped logrotate entry (contrib/logrotate/relayd)
run by the real logrotate (-f, on a test state file) twice while relayd
writes its log under load: nothing is lost across the rotations, nothing is
written twice, and after each rotation relayd writes to the new file (the
postrotate SIGUSR1 made it reopen log_file).  The test's copy of the entry
differs from the shipped one only in the log path, the owner of the new file
and whom postrotate signals (this relayd's pid, not every relayd here).

"""

import glob
import grp
import gzip
import os
import pwd
import re
import shutil
import subprocess
import threading
import time
import unittest

from client import make_message, submit
from relay import REPO, test_user_ids
from test_submit_smtp import QueueOnlyRelay as Relay

SHIPPED = os.path.join(REPO, "contrib", "logrotate", "relayd")


def test_copy(text, log_dir, pid):
    """The shipped entry with the test's path, owner and signal target."""
    # The account relayd runs as: the file logrotate creates must be writable
    # by it, as the shipped "create 0640 relayd relayd" is for the package's.
    ids = test_user_ids() if os.getuid() == 0 else None
    uid, gid = ids or (os.getuid(), os.getgid())
    user = pwd.getpwuid(uid).pw_name
    group = grp.getgrgid(gid).gr_name
    out = text.replace("/var/log/relayd/*.log", os.path.join(log_dir, "*.log"))
    out = re.sub(r"(?m)^(\s*create \d+) relayd relayd$", r"\1 %s %s" % (user, group), out)
    out, n = re.subn(r"(?s)(\n\s*postrotate\n).*?(\n\s*endscript)",
                     r"\1\t\tkill -USR1 %d\2" % pid, out)
    assert n == 1, "no postrotate block in %s" % SHIPPED
    return out


def read_log(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return f.read().splitlines()


class LogrotateTest(unittest.TestCase):

    def test_rotation_under_load_loses_nothing(self):
        if shutil.which("logrotate") is None:
            self.fail("logrotate is missing: sh contrib/install-deps.sh installs it")
        relay = Relay()
        self.addCleanup(relay.close)
        relay.start()
        log_dir = os.path.dirname(relay.log_path)
        self.assertTrue(relay.log_path.endswith(".log"))
        with open(SHIPPED) as f:
            shipped = f.read()
        conf = os.path.join(relay.tmpdir, "logrotate.conf")
        with open(conf, "w") as f:
            f.write(test_copy(shipped, log_dir, relay.pid))
        state = os.path.join(relay.tmpdir, "logrotate.state")

        qids, errors, stop = [], [], threading.Event()

        def load():
            i = 0
            try:
                while not stop.is_set() or i < 20:
                    i += 1
                    qids.append(submit(relay, "alice@example.org", ["bob@example.net"],
                                       make_message("alice@example.org", "bob@example.net",
                                                    "rotation %d" % i, "body %d" % i)))
            except Exception as e:      # reported by the main thread
                errors.append(e)

        def more_accepted(n):
            """Wait until n more messages got their 250 (their accepted
            lines are then in the file relayd writes now)."""
            want = len(qids) + n
            deadline = time.monotonic() + 120
            while len(qids) < want and not errors and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertGreaterEqual(len(qids), want, "no mail accepted: %r" % errors)

        t = threading.Thread(target=load)
        t.start()
        try:
            for n in range(2):
                # Two more, so at least one was submitted whole after the reopen.
                more_accepted(2)
                r = subprocess.run(["logrotate", "-f", "-s", state, conf],
                                   capture_output=True, text=True, timeout=60)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertTrue(relay.running, "relayd died on the postrotate signal")
                # relayd reopened: the new file fills up again.
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and os.path.getsize(relay.log_path) == 0:
                    time.sleep(0.05)
                self.assertGreater(os.path.getsize(relay.log_path), 0,
                                   "nothing written to the new %s after rotation %d"
                                   % (relay.log_path, n + 1))
            more_accepted(2)
        finally:
            stop.set()
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(relay.stop(), 0)

        files = sorted(glob.glob(relay.log_path + "*"))
        # relayd.log, relayd.log.1 (delaycompress), relayd.log.2.gz
        self.assertEqual([os.path.basename(p) for p in files],
                         ["relayd.log", "relayd.log.1", "relayd.log.2.gz"])
        lines = {p: read_log(p) for p in files}
        for p, ls in lines.items():
            self.assertTrue(any(" event=accepted " in l for l in ls),
                            "%s has no accepted message: the rotation came between "
                            "no messages" % p)
        everything = [l for ls in lines.values() for l in ls]
        self.assertEqual(len(everything), len(set(everything)), "a line was written twice")
        for qid in qids:
            where = [p for p, ls in lines.items()
                     if any(" event=accepted qid=%s " % qid in l for l in ls)]
            self.assertEqual(len(where), 1, "qid %s accepted in %r" % (qid, where))
        # Each file after a rotation starts where relayd reopened it.
        for p in (relay.log_path, relay.log_path + ".1"):
            self.assertIn(" event=log_reopened", lines[p][0], p)
        # The last lines of relayd's life are in the current file.
        self.assertTrue(any(" event=stopped " in l for l in lines[relay.log_path]))
        self.assertTrue(any(" event=started " in l for l in lines[relay.log_path + ".2.gz"]))
        print("%d messages; lines per file: %s" % (
            len(qids), {os.path.basename(p): len(ls) for p, ls in lines.items()}))


if __name__ == "__main__":
    unittest.main()
