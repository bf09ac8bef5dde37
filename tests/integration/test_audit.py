"""test_audit.py - `relayctl audit` reads relayd's log and its rotated copies
(plain and gzip) without the daemon, and reports every NDR: time, QID,
sender, recipient, status, reason, remote host and its reply, attempts, with
totals by recipient domain and by status; --json, --since, --domain, --rcpt;
exit 1 naming an unreadable log, exit 2 for a bad --since.

The logs are written here in relayd's exact line format (common/log.c's
quoting), so the tests need no running daemon -- which is the point."""

import gzip
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

from relay import Relay, relayctl_bin

NOW_MS = int(time.time() * 1000)
HOUR = 3600 * 1000
DAY = 24 * HOUR

NDR_KEYS = {"time", "qid", "ndr_qid", "sender", "recipient", "status", "reason",
            "remote_host", "remote_ip", "reply", "attempts", "down_since"}

LONG_REPLY = "554 5.7.1 <erin@example.org>: rejected by policy; " + "see https://example.org/policy " * 6


def rfc3339(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def quote(v):
    """common/log.c's log_quote()."""
    if v and not any(c <= " " or c in '"\\=' or c == "\x7f" for c in v):
        return v
    out = []
    for c in v:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif c < " " or c == "\x7f":
            out.append("\\x%02x" % ord(c))
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def line(ms, event, level="info", **kv):
    parts = ["ts=%s level=%s event=%s" % (rfc3339(ms), level, event)]
    for k, v in kv.items():
        parts.append("%s=%s" % (k.rstrip("_"), quote(str(v))))
    return " ".join(parts) + "\n"


# Three generations of one log.  Q2's NDR (in the live log) takes its remote
# host and reply from a deferral in relayd.log.1: read in the wrong order, the
# record would lack them.
T_OLD = NOW_MS - 2 * DAY          # Q1: bounced two days ago
T_Q2 = NOW_MS - 30 * 60 * 1000    # Q2: expired half an hour ago
T_Q3 = NOW_MS - 10 * 60 * 1000    # Q3: bounced ten minutes ago

GEN2 = "".join([                  # relayd.log.2.gz, the oldest
    line(T_OLD, "accepted", qid="Q1", from_="alice@relay.test", nrcpt=2, size=512,
         user="alice", client="127.0.0.1"),
    line(T_OLD + 1000, "delivered", qid="Q1", rcpt="carol@example.org", host="mx.example.org",
         ip="192.0.2.20", reply="250 2.0.0 Ok"),
    line(T_OLD + 2000, "bounced", level="notice", qid="Q1", rcpt="bob@example.net",
         host="mx1.example.net", ip="192.0.2.1", status="5.1.1",
         reply='550 5.1.1 <bob@example.net>: "bob" unknown; x=y'),
    line(T_OLD + 3000, "ndr", qid="Q1", ndr_qid="N1", to="alice@relay.test", reason="failed",
         rcpt="bob@example.net", status="5.1.1", attempts=1),
    line(T_Q2 - 3 * DAY, "accepted", qid="Q2", from_="bob@relay.test", nrcpt=1, size=100,
         user="bob", client="127.0.0.1"),
    line(T_Q2 - 3 * DAY + 1000, "deferred", qid="Q2", rcpt="dave@slow.example",
         host="mx1.slow.example", ip="192.0.2.30", status="4.4.1", reply="421 4.4.1 busy"),
])
GEN1 = "".join([                  # relayd.log.1
    line(T_Q2 - 1 * DAY, "deferred", qid="Q2", rcpt="dave@slow.example",
         host="mx2.slow.example", ip="192.0.2.31", status="4.2.0", reply="451 4.2.0 try again later"),
    "this line is not in the log format\n",
    line(T_Q3 - HOUR, "accepted", qid="Q3", from_="bob@relay.test", nrcpt=1, size=900,
         user="bob", client="127.0.0.1"),
])
GEN0 = "".join([                  # relayd.log, the live one
    line(T_Q2 - 1000, "expired", level="notice", qid="Q2", rcpt="dave@slow.example", status="4.4.7"),
    line(T_Q2, "ndr", qid="Q2", ndr_qid="N2", to="bob@relay.test", reason="expired",
         rcpt="dave@slow.example", status="4.4.7", attempts=2, down_since=rfc3339(T_Q2 - DAY)),
    line(T_Q3 - 1000, "bounced", level="notice", qid="Q3", rcpt="erin@Example.ORG",
         host="mx.example.org", ip="192.0.2.20", status="5.7.1", reply=LONG_REPLY),
    line(T_Q3, "ndr", qid="Q3", ndr_qid="N3", reason="failed", rcpt="erin@Example.ORG"),
])

WANT = [
    {"time": rfc3339(T_OLD + 3000), "qid": "Q1", "ndr_qid": "N1", "sender": "alice@relay.test",
     "recipient": "bob@example.net", "status": "5.1.1", "reason": "failed",
     "remote_host": "mx1.example.net", "remote_ip": "192.0.2.1",
     "reply": '550 5.1.1 <bob@example.net>: "bob" unknown; x=y', "attempts": 1, "down_since": None},
    {"time": rfc3339(T_Q2), "qid": "Q2", "ndr_qid": "N2", "sender": "bob@relay.test",
     "recipient": "dave@slow.example", "status": "4.4.7", "reason": "expired",
     "remote_host": "mx2.slow.example", "remote_ip": "192.0.2.31",
     "reply": "451 4.2.0 try again later", "attempts": 2, "down_since": rfc3339(T_Q2 - DAY)},
    {"time": rfc3339(T_Q3), "qid": "Q3", "ndr_qid": "N3", "sender": "bob@relay.test",
     "recipient": "erin@Example.ORG", "status": "5.7.1", "reason": "failed",
     "remote_host": "mx.example.org", "remote_ip": "192.0.2.20", "reply": LONG_REPLY,
     "attempts": 1, "down_since": None},
]


def write_logs(directory, base="relayd.log"):
    """The three generations; returns their paths oldest first."""
    paths = [os.path.join(directory, base + sfx) for sfx in (".2.gz", ".1", "")]
    with gzip.open(paths[0], "wt") as f:
        f.write(GEN2)
    with open(paths[1], "w") as f:
        f.write(GEN1)
    with open(paths[2], "w") as f:
        f.write(GEN0)
    return paths


def audit(*args, conf=None):
    cmd = [relayctl_bin()]
    if conf:
        cmd += ["-c", conf]
    else:
        cmd += ["-s", "/nonexistent/relayd-control.sock"]   # no config, no daemon
    cmd += ["audit", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def audit_json(testcase, *args, conf=None):
    r = audit(*args, "--json", conf=conf)
    testcase.assertEqual(r.returncode, 0, r.stderr)
    return json.loads(r.stdout)


class AuditTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="relayd-audit-")
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        self.paths = write_logs(self.dir)

    def logs(self):
        args = []
        for p in self.paths:
            args += ["--log", p]
        return args

    def test_json_reports_every_ndr_across_plain_and_gzip_logs(self):
        out = audit_json(self, *self.logs())
        self.assertEqual(set(out), {"ndrs", "totals", "files", "lines", "malformed_lines"})
        for rec in out["ndrs"]:
            self.assertEqual(set(rec), NDR_KEYS)
        self.assertEqual(out["ndrs"], WANT)
        self.assertEqual(out["totals"], {
            "ndrs": 3,
            "by_domain": {"example.net": 1, "example.org": 1, "slow.example": 1},
            "by_status": {"4.4.7": 1, "5.1.1": 1, "5.7.1": 1}})
        self.assertEqual(out["files"], self.paths)
        self.assertEqual(out["lines"], GEN2.count("\n") + GEN1.count("\n") + GEN0.count("\n"))
        self.assertEqual(out["malformed_lines"], 1)

    def test_default_logs_come_from_the_config_oldest_first(self):
        relay = Relay.for_test(self)              # its config; relayd is never started
        paths = write_logs(os.path.dirname(relay.log_path), os.path.basename(relay.log_path))
        with open(relay.log_path + ".lock", "w") as f:    # not a rotated copy
            f.write("garbage\n")
        self.assertFalse(os.path.exists(relay.control_socket))
        out = audit_json(self, conf=relay.config_path)
        self.assertEqual(out["files"], paths)
        self.assertEqual(out["ndrs"], WANT)
        self.assertEqual(out["malformed_lines"], 1)

    def test_quoted_glob_reads_matches_oldest_first(self):
        out = audit_json(self, "--log", os.path.join(self.dir, "relayd.log*"))
        self.assertEqual(out["files"], self.paths)
        self.assertEqual(out["ndrs"], WANT)

    def test_log_takes_several_files_as_a_shell_glob_gives_them(self):
        """--log FILE FILE... (what `--log /var/log/relayd.log*` expands to)."""
        out = audit_json(self, "--log", *self.paths)
        self.assertEqual(out["files"], self.paths)
        self.assertEqual(out["ndrs"], WANT)
        r = audit("--log", self.paths[0], "stray")
        self.assertEqual(r.returncode, 1, r.stderr)   # 'stray' is read as a file that does not exist
        self.assertIn("stray", r.stderr)

    def test_table_then_totals(self):
        r = audit(*self.logs())
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        head = lines[0]
        cols = ["TIME", "QID", "SENDER", "RECIPIENT", "STATUS", "REASON", "HOST", "ATTEMPTS", "REPLY"]
        self.assertEqual(head.split(), cols)
        starts = [head.index(c) for c in cols]
        rows = lines[1:4]
        self.assertEqual(len(rows), 3)
        for row, want in zip(rows, WANT):
            cells = [row[starts[i]:(starts[i + 1] if i + 1 < len(starts) else None)].strip()
                     for i in range(len(cols))]
            # Aligned: every cell starts in its header's column.
            self.assertEqual(cells[0], want["time"][:19] + "Z")
            self.assertEqual(cells[1:8], [want["qid"], want["sender"], want["recipient"], want["status"],
                                          want["reason"], want["remote_host"], str(want["attempts"])])
            if len(want["reply"]) <= 60:
                self.assertEqual(cells[8], want["reply"])
            else:                                 # truncated in the table, in full in JSON
                self.assertEqual(cells[8], want["reply"][:57] + "...")
        self.assertEqual(lines[4], "")
        self.assertRegex(lines[5], r"^3 NDRs \(3 files, \d+ lines read\)\.$")
        self.assertIn("note: 1 malformed line skipped.", r.stdout)
        tail = r.stdout[r.stdout.index("By recipient domain:"):]
        self.assertRegex(tail, r"By recipient domain:\n  example\.net +1\n  example\.org +1\n"
                               r"  slow\.example +1\n\nBy status:\n  4\.4\.7 +1\n  5\.1\.1 +1\n  5\.7\.1 +1\n$")

    def test_since_filters_by_time(self):
        out = audit_json(self, *self.logs(), "--since", "1h")
        self.assertEqual([n["qid"] for n in out["ndrs"]], ["Q2", "Q3"])
        # Still correlated with lines older than the window.
        self.assertEqual(out["ndrs"], WANT[1:])
        self.assertEqual(out["totals"]["by_status"], {"4.4.7": 1, "5.7.1": 1})
        out = audit_json(self, *self.logs(), "--since", "20m")
        self.assertEqual(out["ndrs"], WANT[2:])
        out = audit_json(self, *self.logs(), "--since", "3d")
        self.assertEqual(out["ndrs"], WANT)

    def test_domain_and_rcpt_filters_ignore_case(self):
        out = audit_json(self, *self.logs(), "--domain", "EXAMPLE.org")
        self.assertEqual(out["ndrs"], WANT[2:])
        self.assertEqual(out["totals"], {"ndrs": 1, "by_domain": {"example.org": 1},
                                         "by_status": {"5.7.1": 1}})
        out = audit_json(self, *self.logs(), "--rcpt", "BOB@example.NET")
        self.assertEqual(out["ndrs"], WANT[:1])
        out = audit_json(self, *self.logs(), "--rcpt", "bo@example.net")
        self.assertEqual(out["ndrs"], [])
        out = audit_json(self, *self.logs(), "--domain", "example.net", "--since", "1d")
        self.assertEqual(out["ndrs"], [])

    def test_why_did_mail_to_x_bounce(self):
        r = audit(*self.logs(), "--rcpt", "bob@example.net")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('550 5.1.1 <bob@example.net>: "bob" unknown; x=y', r.stdout)
        self.assertIn("mx1.example.net", r.stdout)
        self.assertNotIn("dave@slow.example", r.stdout)

    def test_no_ndrs_is_not_an_error(self):
        path = os.path.join(self.dir, "quiet.log")
        with open(path, "w") as f:
            f.write(line(NOW_MS, "started", version="1"))
            f.write(line(NOW_MS, "accepted", qid="Q9", from_="a@relay.test", nrcpt=1))
            f.write(line(NOW_MS, "delivered", qid="Q9", rcpt="x@example.net"))
        r = audit("--log", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "No NDRs found (1 file, 3 lines read).\n")
        out = audit_json(self, "--log", path)
        self.assertEqual(out["ndrs"], [])
        self.assertEqual(out["totals"], {"ndrs": 0, "by_domain": {}, "by_status": {}})

    def test_only_failure_and_delay_reports_are_ndrs_and_unknown_hosts_are_null(self):
        """A success notice (NOTIFY=SUCCESS) is not an NDR: it is neither listed
        nor counted.  A recipient that failed before any host was reached (a
        DNS failure: relayd logs host=- ip=-) has null remote_host and
        remote_ip, "-" in the table (README: null when unknown)."""
        path = os.path.join(self.dir, "mixed.log")
        with open(path, "w") as f:
            f.write(line(NOW_MS, "accepted", qid="S1", from_="a@relay.test", nrcpt=3))
            f.write(line(NOW_MS + 1, "delivered", qid="S1", rcpt="x@example.net",
                         host="mx.example.net", ip="192.0.2.5", status="2.0.0", reply="250 ok"))
            f.write(line(NOW_MS + 2, "ndr", qid="S1", ndr_qid="SN1", to="a@relay.test",
                         reason="delivered", rcpt="x@example.net", status="2.0.0", attempts=1))
            f.write(line(NOW_MS + 3, "ndr", qid="S1", ndr_qid="SN2", to="a@relay.test",
                         reason="relayed", rcpt="x@example.net", status="2.0.0", attempts=1))
            f.write(line(NOW_MS + 4, "bounced", level="notice", qid="S1", rcpt="y@nx.example",
                         host="-", ip="-", status="5.1.2", reply="domain nx.example does not exist",
                         attempts=1))
            f.write(line(NOW_MS + 5, "ndr", qid="S1", ndr_qid="SN3", to="a@relay.test",
                         reason="failed", rcpt="y@nx.example", status="5.1.2", attempts=1))
            f.write(line(NOW_MS + 6, "deferred", qid="S1", rcpt="z@slow.example", host="-",
                         ip="-", status="4.4.3", reply="", attempts=1, retry_in="5m"))
            f.write(line(NOW_MS + 7, "ndr", qid="S1", ndr_qid="SN4", to="a@relay.test",
                         reason="delayed", rcpt="z@slow.example", status="4.4.3", attempts=1))
        out = audit_json(self, "--log", path)
        self.assertEqual([(n["ndr_qid"], n["reason"]) for n in out["ndrs"]],
                         [("SN3", "failed"), ("SN4", "delayed")])
        self.assertEqual(out["totals"], {"ndrs": 2,
                                         "by_domain": {"nx.example": 1, "slow.example": 1},
                                         "by_status": {"4.4.3": 1, "5.1.2": 1}})
        for n in out["ndrs"]:
            self.assertIsNone(n["remote_host"], n)
            self.assertIsNone(n["remote_ip"], n)
        self.assertEqual(out["ndrs"][0]["reply"], "domain nx.example does not exist")
        self.assertIsNone(out["ndrs"][1]["reply"])
        r = audit("--log", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("SN1", r.stdout)
        self.assertRegex(r.stdout, r"(?m)^2 NDRs \(")
        self.assertRegex(r.stdout, r"(?m)^\S+Z\s+S1\s+a@relay.test\s+y@nx.example\s+5.1.2\s+"
                                   r"failed\s+-\s+1\s+domain nx.example does not exist$")

    def test_unreadable_log_exits_1_naming_it(self):
        missing = os.path.join(self.dir, "missing.log")
        broken = os.path.join(self.dir, "broken.log.3.gz")
        with open(self.paths[0], "rb") as f:
            data = f.read()
        with open(broken, "wb") as f:
            f.write(data[:len(data) // 2])        # a truncated gzip file
        for bad in (missing, self.dir, broken):
            with self.subTest(bad):
                r = audit(*self.logs(), "--log", bad)
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                self.assertIn(bad + ":", r.stderr)
                self.assertEqual(r.stdout, "")
        r = audit("--log", os.path.join(self.dir, "nomatch*"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("nomatch*", r.stderr)

    def test_bad_since_is_a_usage_error(self):
        for bad in ("2x", "yesterday", "-1h", ""):
            with self.subTest(bad):
                r = audit(*self.logs(), "--since", bad)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertIn("--since", r.stderr)
                self.assertEqual(r.stdout, "")

    def test_no_log_known_is_a_usage_error(self):
        r = audit()
        self.assertEqual(r.returncode, 2)
        self.assertIn("--log", r.stderr)

    def test_long_lines_and_escapes_survive(self):
        path = os.path.join(self.dir, "long.log")
        reply = "550 " + "x" * 100000 + ' "quoted" back\\slash\ttab \x01'
        with open(path, "w") as f:
            f.write(line(NOW_MS, "bounced", qid="L1", rcpt="z@example.com", host="mx", status="5.0.0",
                         reply=reply))
            f.write(line(NOW_MS, "ndr", qid="L1", ndr_qid="LN", to="s@relay.test", reason="failed",
                         rcpt="z@example.com"))
            cut = line(NOW_MS, "ndr", qid="L2", ndr_qid="LN2", reason="failed", rcpt="y@example.com",
                       reply="451 try again later")
            f.write(cut[:cut.index("again")] + "\n")    # cut inside the quoted value: skipped
        out = audit_json(self, "--log", path)
        self.assertEqual(len(out["ndrs"]), 1)
        self.assertEqual(out["ndrs"][0]["reply"], reply)
        self.assertEqual(out["malformed_lines"], 1)
        r = audit("--log", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("\x01", r.stdout)        # control characters never reach the terminal
        self.assertLess(max(len(x) for x in r.stdout.splitlines()), 300)


if __name__ == "__main__":
    unittest.main()
