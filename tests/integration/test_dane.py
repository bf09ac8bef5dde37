"""test_dane.py - DANE for outbound SMTP (RFC 7672), end to end.

The real relayd resolves through the loopback DNS server, which plays a
trusted validating resolver: with router.dnssec = true relayd asks with the
DO bit, and the server sets AD on answers for zones marked secure, answers
SERVFAIL where the data would be bogus, and serves TLSA records.  The sink
MXes on 127.0.0.2/.3 offer STARTTLS with real certificates (self-signed, or
issued by a test CA), and the TLSA records name them by SHA2-256 digest.

Shown: a DANE-EE match is delivered, authenticated although the certificate
names nobody (tls=dane); a mismatch skips that MX with 4.7.5 and the next MX,
which matches, gets the mail; DANE-TA checks the MX host name; TLSA records
and no STARTTLS defer the mail and nothing goes in clear; a TLSA set of only
unusable records (PKIX-EE) makes TLS mandatory but unauthenticated; without
AD there is no DANE and no TLSA lookup (opportunistic as before); a bogus
(SERVFAIL) TLSA answer is a temporary failure; router.dnssec = false never
asks for TLSA and never sets DO.
"""

import hashlib
import os
import ssl
import subprocess
import unittest

from client import make_message, submit
from relay import Relay, TestCA, make_cert

SENDER = "alice@example.org"


def cert_der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def sha256_cert(path):
    """TLSA selector 0 (full certificate), matching type 1 (SHA2-256)."""
    return hashlib.sha256(cert_der(path)).hexdigest()


def sha256_spki(path):
    """TLSA selector 1 (SubjectPublicKeyInfo), matching type 1 (SHA2-256)."""
    pub = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-pubkey"],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         check=True, capture_output=True).stdout
    return hashlib.sha256(der).hexdigest()


class DaneCase(unittest.TestCase):
    """A relay with router.dnssec on (unless told otherwise); example.net
    has mx1 (127.0.0.2, pref 10) and mx2 (127.0.0.3, pref 20) and is signed."""

    def make(self, dnssec=True, secure=True, **overrides):
        router = dict(overrides.pop("router", {}))
        router["dnssec"] = dnssec
        self.relay = Relay.for_test(self, router=router, **overrides)
        dns = self.relay.dns
        dns.set_mx_ips("example.org", [(10, "127.0.0.4")])
        self.home = self.relay.sink("127.0.0.4")
        dns.set_mx_ips("example.net", [(10, "127.0.0.2"), (20, "127.0.0.3")])
        if secure:
            dns.set_secure("example.net")
        self.dir = os.path.join(self.relay.tmpdir, "dane-certs")
        os.makedirs(self.dir, exist_ok=True)
        return self.relay

    def tlsa_name(self, host):
        return self.relay.dns.tlsa_name(host, self.relay.smtp_port)

    def self_signed(self, name):
        """A self-signed certificate that names nobody relayd would ask for."""
        return make_cert(self.dir, cn=name, dns=(name,), ips=(), name=name)

    def send(self, rcpt="bob@example.net", subject="hello"):
        msg = make_message(SENDER, rcpt, subject, "Body of %s.\r\n" % subject)
        return submit(self.relay, SENDER, [rcpt], msg)

    def no_mail(self, sink):
        self.assertEqual(sink.transactions, [])
        self.assertEqual([c for _, c in sink.commands if c.upper().startswith("MAIL")], [])


class DaneEE(DaneCase):

    def test_dane_ee_match_is_delivered_authenticated(self):
        self.make()
        cert, key = self.self_signed("nobody.invalid")
        self.relay.dns.set_tlsa(self.tlsa_name("mx1.example.net"),
                                [(3, 1, 1, sha256_spki(cert))])
        mx1 = self.relay.sink("127.0.0.2", starttls=(cert, key))
        self.relay.start()
        qid = self.send()
        [m] = mx1.wait_for_messages(1, timeout=30)
        self.assertTrue(m.tls)
        line = self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertEqual(line["host"], "mx1.example.net")
        self.assertEqual(line["tls"], "dane")
        tls = self.relay.wait_for_log("deliver_tls", qid=qid)
        self.assertEqual(tls["verified"], "dane")
        # asked with DO, and the TLSA question was the MX host's at our port
        self.assertIn(("example.net", "MX", True), self.relay.dns.query_do)
        self.assertGreaterEqual(self.relay.dns.count(self.tlsa_name("mx1.example.net"), "TLSA"), 1)

    def test_dane_ee_mismatch_skips_to_the_next_mx(self):
        self.make()
        bad, bad_key = self.self_signed("mx1.example.net")
        other, _ = self.self_signed("someone-else.invalid")
        good, good_key = self.self_signed("mx2.example.net")
        dns = self.relay.dns
        dns.set_tlsa(self.tlsa_name("mx1.example.net"), [(3, 0, 1, sha256_cert(other))])
        dns.set_tlsa(self.tlsa_name("mx2.example.net"), [(3, 0, 1, sha256_cert(good))])
        mx1 = self.relay.sink("127.0.0.2", starttls=(bad, bad_key))
        mx2 = self.relay.sink("127.0.0.3", starttls=(good, good_key))
        self.relay.start()
        qid = self.send()
        [m] = mx2.wait_for_messages(1, timeout=30)
        self.assertTrue(m.tls)
        line = self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertEqual(line["ip"], "127.0.0.3")
        self.assertEqual(line["tls"], "dane")
        [failed] = self.relay.find_log("host_failed", qid=qid)
        self.assertEqual(failed["ip"], "127.0.0.2")
        self.assertEqual(failed["status"], "4.7.5")
        self.assertEqual(failed["tls_result"], "validation-failure")
        self.assertEqual(failed["down"], "no")
        ev = self.relay.wait_for_log("deliver_tls_failed", qid=qid, ip="127.0.0.2")
        self.assertEqual(ev["policy"], "dane")
        self.assertGreaterEqual(mx1.connections, 1)
        self.no_mail(mx1)

    def test_tlsa_without_starttls_is_deferred_never_plaintext(self):
        self.make()
        cert, _ = self.self_signed("mx1.example.net")
        dns = self.relay.dns
        dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        dns.set_tlsa(self.tlsa_name("mx1.example.net"), [(3, 0, 1, sha256_cert(cert))])
        mx1 = self.relay.sink("127.0.0.2")         # no STARTTLS: stripped, or never there
        self.relay.start()
        qid = self.send()
        line = self.relay.wait_for_log("deferred", qid=qid, timeout=30)
        self.assertEqual(line["status"], "4.7.5")
        self.assertIn("STARTTLS not offered", line["reply"])
        ev = self.relay.wait_for_log("deliver_tls_failed", qid=qid)
        self.assertEqual(ev["result"], "starttls-not-supported")
        self.assertGreaterEqual(mx1.connections, 1)     # it got as far as EHLO
        self.no_mail(mx1)
        self.assertEqual(self.relay.count_log("delivered", qid=qid), 0)


class DaneTA(DaneCase):

    def test_dane_ta_checks_the_mx_host_name(self):
        self.make()
        ca = TestCA(directory=os.path.join(self.dir, "ca"))

        def chain(cn):
            crt, key = ca.issue(cn)
            full = crt + ".chain"
            with open(full, "w") as f, open(crt) as a, open(ca.cert) as b:
                f.write(a.read() + b.read())
            return full, key

        wrong = chain("elsewhere.example.com")       # the CA's, but not mx1's name
        right = chain("mx2.example.net")
        dns = self.relay.dns
        for host in ("mx1.example.net", "mx2.example.net"):
            dns.set_tlsa(self.tlsa_name(host), [(2, 0, 1, sha256_cert(ca.cert))])
        mx1 = self.relay.sink("127.0.0.2", starttls=wrong)
        mx2 = self.relay.sink("127.0.0.3", starttls=right)
        self.relay.start()
        qid = self.send()
        mx2.wait_for_messages(1, timeout=30)
        line = self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertEqual(line["ip"], "127.0.0.3")
        self.assertEqual(line["tls"], "dane")
        [failed] = self.relay.find_log("host_failed", qid=qid)
        self.assertEqual(failed["ip"], "127.0.0.2")
        self.assertEqual(failed["status"], "4.7.5")
        self.no_mail(mx1)


class DaneFallbacks(DaneCase):

    def test_unusable_only_tlsa_requires_tls_unauthenticated(self):
        self.make()
        cert, key = self.self_signed("nobody.invalid")
        dns = self.relay.dns
        # PKIX-EE (1) is unusable for SMTP (RFC 7672 3.1.3); mx2 has no STARTTLS
        dns.set_tlsa(self.tlsa_name("mx1.example.net"), [(1, 1, 1, "00" * 32)])
        dns.set_tlsa(self.tlsa_name("mx2.example.net"), [(0, 0, 1, "11" * 32)])
        mx1 = self.relay.sink("127.0.0.2", starttls=(cert, key))
        mx2 = self.relay.sink("127.0.0.3")
        self.relay.start()
        qid = self.send()
        [m] = mx1.wait_for_messages(1, timeout=30)
        self.assertTrue(m.tls)
        line = self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertEqual(line["tls"], "require")        # TLS, without authentication
        self.assertEqual(self.relay.wait_for_log("deliver_tls", qid=qid)["verified"], "no")

        # the same policy without STARTTLS: deferred, not sent in clear
        dns.set_mx_ips("example.net", [(10, "127.0.0.3")])
        dns.set_tlsa(self.tlsa_name("mx1.example.net"), [(0, 0, 1, "11" * 32)])
        qid2 = self.send(subject="second")
        line = self.relay.wait_for_log("deferred", qid=qid2, timeout=30)
        self.assertEqual(line["status"], "4.7.5")
        self.no_mail(mx2)

    def test_unusable_only_tlsa_keeps_a_configured_verify(self):
        """DANE never weakens the configured TLS: with deliver.tls = verify,
        an unusable-only TLSA set still checks the certificate (found in
        review: it was switched off, and any certificate got the mail)."""
        ca = TestCA()
        self.make(deliver={"tls": "verify", "ca_file": ca.cert})
        stranger, stranger_key = self.self_signed("mx1.example.net")
        good, good_key = ca.issue("mx2.example.net", ips=["127.0.0.3"])
        dns = self.relay.dns
        dns.set_tlsa(self.tlsa_name("mx1.example.net"), [(1, 1, 1, "00" * 32)])
        dns.set_tlsa(self.tlsa_name("mx2.example.net"), [(1, 1, 1, "00" * 32)])
        mx1 = self.relay.sink("127.0.0.2", starttls=(stranger, stranger_key))
        mx2 = self.relay.sink("127.0.0.3", starttls=(good, good_key))
        self.relay.start()
        qid = self.send()
        [m] = mx2.wait_for_messages(1, timeout=30)      # mx1's certificate failed
        self.assertTrue(m.tls)
        line = self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertEqual(line["host"], "mx2.example.net")
        self.assertEqual(line["tls"], "verify")
        self.no_mail(mx1)

    def test_insecure_answers_mean_no_dane(self):
        self.make(secure=False)
        other, _ = self.self_signed("someone-else.invalid")
        dns = self.relay.dns
        dns.set_tlsa(self.tlsa_name("mx1.example.net"), [(3, 0, 1, sha256_cert(other))])
        mx1 = self.relay.sink("127.0.0.2")          # plaintext only
        self.relay.start()
        qid = self.send()
        [m] = mx1.wait_for_messages(1, timeout=30)
        self.assertFalse(m.tls)
        line = self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertEqual(line["tls"], "none")
        # asked with DO, got no AD: the TLSA records were never asked for
        self.assertIn(("example.net", "MX", True), dns.query_do)
        self.assertEqual(dns.count(self.tlsa_name("mx1.example.net"), "TLSA"), 0)

    def test_bogus_tlsa_is_a_temporary_failure(self):
        self.make()
        dns = self.relay.dns
        dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        dns.set_servfail(self.tlsa_name("mx1.example.net"))
        mx1 = self.relay.sink("127.0.0.2")
        self.relay.start()
        qid = self.send()
        line = self.relay.wait_for_log("deferred", qid=qid, timeout=30)
        self.assertEqual(line["status"], "4.7.5")
        self.assertIn("TLSA", line["reply"])
        ev = self.relay.wait_for_log("tls_policy_refused", qid=qid)
        self.assertEqual(ev["result"], "dnssec-invalid")
        self.assertEqual(ev["host"], "mx1.example.net")
        self.assertEqual(mx1.connections, 0)
        self.assertEqual(self.relay.count_log("bounced", qid=qid), 0)

    def test_dnssec_off_asks_no_tlsa(self):
        self.make(dnssec=False)
        other, _ = self.self_signed("someone-else.invalid")
        dns = self.relay.dns
        dns.set_tlsa(self.tlsa_name("mx1.example.net"), [(3, 0, 1, sha256_cert(other))])
        mx1 = self.relay.sink("127.0.0.2")
        self.relay.start()
        qid = self.send()
        mx1.wait_for_messages(1, timeout=30)
        line = self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertEqual(line["tls"], "none")
        # the lookups happened (MX and addresses of mx1), none with DO, no TLSA
        self.assertGreaterEqual(dns.count("example.net", "MX"), 1)
        self.assertGreaterEqual(dns.count("mx1.example.net", "A"), 1)
        self.assertEqual(dns.count(self.tlsa_name("mx1.example.net"), "TLSA"), 0)
        self.assertEqual([q for q in dns.query_do if q[2]], [])


if __name__ == "__main__":
    unittest.main()
