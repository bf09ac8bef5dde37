"""test_tls_scan.py - testssl.sh (Debian's package) finds nothing of severity
LOW or higher on either submission port (issue #15, point 4): 587 with
STARTTLS and an RSA certificate, 465 with implicit TLS and an EC P-256
certificate (the harness's kind), each from its own relayd with the default
TLS policy, both scans at once.

    testssl --severity LOW --nodns min -p -s -f -P -S -U --jsonfile F \
        [--starttls smtp] 127.0.0.1:PORT

is testssl's default run less its two slowest sections, which only ever
report INFO (testssl 3.0.8's run_allciphers() and run_client_simulation()
write no other severity): the list of every cipher (-e) and the client
simulations (-c).  They took 10 of the 27 minutes of a full run on a busy
2-core machine.  What stays: protocols, cipher categories, forward secrecy,
server preferences, server defaults and every vulnerability check.
`--nodns min` skips the DNS CAA lookup (a property of the domain's DNS, not
of the server, and there is no network here).

Excluded by id, because they judge the test certificate and not relayd:

  cert_chain_of_trust  the certificate is self-signed (a real one chains to a CA)
  cert_revocation      it names no CRL or OCSP URI (a CA's certificate would)

Nothing else is excluded.  The certificates are valid for 365 days, so
testssl's "valid too long" (cert_validityPeriod) does not apply.  That the
scan really ran is shown by testssl's own text output: every section, the
last vulnerability check, and "Done".
"""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

from relay import make_cert, share_with_user
from test_submit_smtp import QueueOnlyRelay as Relay

SEVERE = ("LOW", "MEDIUM", "HIGH", "CRITICAL", "FATAL")
CERT_ONLY = {
    "cert_chain_of_trust": "self-signed test certificate",
    "cert_revocation": "test certificate names no CRL or OCSP URI",
}
# testssl's section headings, in the order its default run prints them.
SECTIONS = ("Testing protocols", "Testing cipher categories",
            "Testing robust (perfect) forward secrecy", "Testing server preferences",
            "Testing server defaults", "Testing vulnerabilities", "RC4 (CVE", " Done ")
SCAN_TIMEOUT = 1500


def testssl_bin():
    return shutil.which("testssl") or shutil.which("testssl.sh")


def scan_command(jsonfile, target, starttls):
    cmd = [testssl_bin(), "--severity", "LOW", "--nodns", "min",
           "-p", "-s", "-f", "-P", "-S", "-U",
           "--jsonfile", jsonfile, "--warnings", "batch", "--color", "0"]
    if starttls:
        cmd += ["--starttls", "smtp"]
    return cmd + [target]


class TLSScanTest(unittest.TestCase):

    def setUp(self):
        if testssl_bin() is None:
            self.fail("testssl is missing: sh contrib/install-deps.sh installs testssl.sh")
        self.dir = tempfile.mkdtemp(prefix="tlsscan-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        share_with_user(self.dir)

    def relay_with(self, key_type):
        cert, key = make_cert(self.dir, name=key_type, key_type=key_type, days=365)
        relay = Relay.for_test(self, submit={"tls_cert": cert, "tls_key": key})
        relay.start()
        return relay

    def test_testssl_finds_nothing_on_587_and_465(self):
        rsa, ec = self.relay_with("rsa"), self.relay_with("ec")
        scans = {
            "587": ("127.0.0.1:%d" % rsa.submit_port, True),
            "465": ("127.0.0.1:%d" % ec.tls_port, False),
        }
        procs = {}
        for name, (target, starttls) in scans.items():
            jsonfile = os.path.join(self.dir, name + ".json")
            out = open(os.path.join(self.dir, name + ".out"), "w+")
            self.addCleanup(out.close)
            procs[name] = (jsonfile, out, subprocess.Popen(
                scan_command(jsonfile, target, starttls), stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        for name, (jsonfile, out, proc) in procs.items():
            try:
                proc.wait(timeout=SCAN_TIMEOUT)
            except subprocess.TimeoutExpired:
                for _, _, p in procs.values():
                    p.kill()
                self.fail("testssl on %s took more than %d s" % (name, SCAN_TIMEOUT))
            out.seek(0)
            text = out.read()
            with self.subTest(port=name):
                self.check_scan(name, jsonfile, text)
        for relay in (rsa, ec):
            self.assertEqual(relay.stop(), 0, relay.diagnostics())

    def check_scan(self, name, jsonfile, text):
        at = 0
        for heading in SECTIONS:
            i = text.find(heading, at)
            self.assertNotEqual(i, -1, "%s: testssl did not get to %r:\n%s"
                                % (name, heading, text[-3000:]))
            at = i
        with open(jsonfile) as f:
            findings = json.load(f)
        bad = [f for f in findings
               if f.get("severity") in SEVERE and f.get("id") not in CERT_ONLY]
        self.assertEqual(bad, [], "%s: testssl findings:\n%s" % (
            name, "\n".join("%s %s: %s" % (f["severity"], f["id"], f.get("finding"))
                            for f in bad)))


if __name__ == "__main__":
    unittest.main()
