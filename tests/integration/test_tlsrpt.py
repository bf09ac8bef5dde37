"""test_tlsrpt.py - SMTP TLS reporting (RFC 8460), end to end.

The real relayd delivers to example.net, whose exchangers are DANE-protected
(the loopback DNS server plays a validating resolver, as in test_dane.py):
mx1 (127.0.0.2) presents a certificate its TLSA record does not match, mx2
(127.0.0.3) one that matches.  example.net publishes
"_smtp._tls.example.net TXT v=TLSRPTv1; rua=mailto:tlsrpt@reports.test"
(reports.test's MX is the sink on 127.0.0.5).  With router.tlsrpt_interval
a few seconds, relayd sends the report through its own queue; the test
parses the MIME (multipart/report; report-type=tlsrpt, RFC 8460 5.3
headers), gunzips the application/tlsrpt+gzip part, and checks the JSON
against the required fields of RFC 8460's schema (4.4) and the counts: one
validation-failure at mx1's address, one success at mx2, each under its own
"tlsa" policy with the TLSA records as policy-string.  The mail is
DKIM-signed with relay.test's key (dkimpy verifies it).

The same report goes by HTTPS POST (application/tlsrpt+gzip, through the
http/ client, to a real HTTPS server on loopback whose certificate a test CA
issued); a POST answered 503 is tried again at the next slot with the same
report-id while the mail, which went, is not sent twice.

MTA-STS (enforce) sessions are reported as policy-type "sts" with the
policy's lines and mx pattern, an exchanger the policy refuses as a
validation-failure.

Also shown: the counts survive a kill -9 between the sessions and the
report (queue_dir/tlsrpt), and `relayctl policy DOMAIN` shows where the
domain's reports go and today's counts; a TLSA answer that is bogus counts as
dnssec-invalid; a domain that publishes no _smtp._tls record gets no report
(event=tlsrpt_skipped) and a no-policy domain without a record is not even
counted, while one with a record gets "no-policy-found" counts.

Many domains due at once (ManyDomains, test hooks): at most 16 mail reports
(TLSRPT_MAILS_MAX) are being queued at once, the others wait their turn,
and a stop while some wait loses none of them.
"""

import email
import email.policy
import gzip
import json
import os
import re
import shutil
import sys
import time
import unittest

try:
    import dkim
except ImportError:                         # Debian's python3-dkim, another python
    sys.path.append("/usr/lib/python3/dist-packages")
    import dkim

from client import make_message, submit
from httpsserver import HTTPSServer, fixed_port_ip
from relay import Relay, TestCA, needs_test_hooks
from test_dane import sha256_cert
from test_dkim import dnsfunc_for, make_key, txt_record

SENDER = "alice@example.org"
RECORD = "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test"

# RFC 8460 4.4 (and its JSON schema): what every report must have
REPORT_REQUIRED = ("organization-name", "date-range", "contact-info", "report-id", "policies")
DATE_RANGE_REQUIRED = ("start-datetime", "end-datetime")
POLICY_REQUIRED = ("policy-type", "policy-domain")
SUMMARY_REQUIRED = ("total-successful-session-count", "total-failure-session-count")
DETAIL_REQUIRED = ("result-type", "failed-session-count")
RESULT_TYPES = {
    "starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
    "certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid",
    "dane-required", "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
}
RFC3339 = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"


class TlsrptCase(unittest.TestCase):

    def make(self, interval="2s", record=RECORD, **overrides):
        key = make_key("relay.test.tlsrpt", "ed25519")
        router = {"dnssec": True, "tlsrpt_interval": interval}
        router.update(overrides.pop("router", {}))
        self.relay = Relay.for_test(
            self, router=router,
            tlsrpt={"organization": "Relay Test Org", "contact": "mailto:tls-admin@relay.test"},
            dkim={"keys": [{"domain": "relay.test", "selector": "tlsrpt", "key": key}]},
            **overrides)
        dns = self.relay.dns
        dns.set_txt("tlsrpt._domainkey.relay.test", [txt_record(key, "ed25519")])
        dns.set_mx_ips("example.org", [(10, "127.0.0.4")])
        self.home = self.relay.sink("127.0.0.4")
        dns.set_mx_ips("example.net", [(10, "127.0.0.2"), (20, "127.0.0.3")])
        dns.set_secure("example.net")
        if record is not None:
            dns.set_txt("_smtp._tls.example.net", [record])
        dns.set_mx_ips("reports.test", [(10, "127.0.0.5")])
        self.reports = self.relay.sink("127.0.0.5")
        self.dir = os.path.join(self.relay.tmpdir, "tlsrpt-certs")
        os.makedirs(self.dir, exist_ok=True)
        return self.relay

    def dane_mxes(self):
        """mx1 fails DANE (its TLSA names another certificate), mx2 passes."""
        from relay import make_cert
        bad, bad_key = make_cert(self.dir, cn="mx1.example.net", dns=("mx1.example.net",),
                                 ips=(), name="mx1")
        other, _ = make_cert(self.dir, cn="other.invalid", dns=("other.invalid",), ips=(),
                             name="other")
        good, good_key = make_cert(self.dir, cn="mx2.example.net", dns=("mx2.example.net",),
                                   ips=(), name="mx2")
        dns = self.relay.dns
        self.tlsa1 = (3, 0, 1, sha256_cert(other))
        self.tlsa2 = (3, 0, 1, sha256_cert(good))
        dns.set_tlsa(dns.tlsa_name("mx1.example.net", self.relay.smtp_port), [self.tlsa1])
        dns.set_tlsa(dns.tlsa_name("mx2.example.net", self.relay.smtp_port), [self.tlsa2])
        self.mx1 = self.relay.sink("127.0.0.2", starttls=(bad, bad_key))
        self.mx2 = self.relay.sink("127.0.0.3", starttls=(good, good_key))

    def send(self, rcpt="bob@example.net", subject="hello"):
        msg = make_message(SENDER, rcpt, subject, "Body of %s.\r\n" % subject)
        return submit(self.relay, SENDER, [rcpt], msg)

    # -- the reports ----------------------------------------------------------

    def report_of(self, m, domain="example.net"):
        """(m, the parsed mail, the report's JSON) of a report mail m."""
        msg = email.message_from_bytes(m.data, policy=email.policy.compat32)
        self.assertEqual(msg.get_content_type(), "multipart/report")
        self.assertEqual(msg.get_param("report-type"), "tlsrpt")
        parts = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
        self.assertEqual(len(parts), 1)
        self.assertRegex(parts[0].get_filename(),
                         r"^relay\.test!%s!\d+!\d+\.json\.gz$" % re.escape(domain))
        report = json.loads(gzip.decompress(parts[0].get_payload(decode=True)))
        self.check_schema(report)
        self.assertEqual(msg["TLS-Report-Domain"], domain)
        self.assertEqual(msg["TLS-Report-Submitter"], "relay.test")
        subject = " ".join(msg["Subject"].split())
        self.assertEqual(subject, "Report Domain: %s Submitter: relay.test "
                         "Report-ID: <%s>" % (domain, report["report-id"]))
        return m, msg, report

    def check_schema(self, r):
        """RFC 8460 4.4: the required fields and their types."""
        for k in REPORT_REQUIRED:
            self.assertIn(k, r)
        self.assertEqual(r["organization-name"], "Relay Test Org")
        self.assertEqual(r["contact-info"], "mailto:tls-admin@relay.test")
        self.assertIsInstance(r["report-id"], str)
        for k in DATE_RANGE_REQUIRED:
            self.assertRegex(r["date-range"][k], RFC3339)
        self.assertLessEqual(r["date-range"]["start-datetime"], r["date-range"]["end-datetime"])
        self.assertIsInstance(r["policies"], list)
        self.assertGreater(len(r["policies"]), 0)
        for p in r["policies"]:
            for k in ("policy", "summary"):
                self.assertIn(k, p)
            for k in POLICY_REQUIRED:
                self.assertIn(k, p["policy"])
            self.assertIn(p["policy"]["policy-type"], ("tlsa", "sts", "no-policy-found"))
            for k in SUMMARY_REQUIRED:
                self.assertIsInstance(p["summary"][k], int)
            fails = 0
            for d in p.get("failure-details", []):
                for k in DETAIL_REQUIRED:
                    self.assertIn(k, d)
                self.assertIn(d["result-type"], RESULT_TYPES)
                fails += d["failed-session-count"]
            self.assertEqual(fails, p["summary"]["total-failure-session-count"])

    def collect(self, want_sessions, sink=None, timeout=40, domain="example.net"):
        """Report mails until their policies add up to want_sessions sessions
        (a slot boundary may split them over two reports): [(m, mail, report)]."""
        sink = sink or self.reports
        deadline = time.time() + timeout
        n = 1
        while True:
            msgs = sink.wait_for_messages(n, timeout=max(0.1, deadline - time.time()))
            got = [self.report_of(m, domain) for m in msgs]
            total = sum(p["summary"]["total-successful-session-count"] +
                        p["summary"]["total-failure-session-count"]
                        for _, _, r in got for p in r["policies"])
            if total >= want_sessions:
                self.assertEqual(total, want_sessions)
                return got
            n = len(msgs) + 1

    @staticmethod
    def merged(reports):
        """{(policy-type, mx-host tuple, policy-string tuple): [ok, failed, {(result, ip): n}]}"""
        out = {}
        for _, _, r in reports:
            for p in r["policies"]:
                pol = p["policy"]
                mx = pol.get("mx-host", ())
                key = (pol["policy-type"], (mx,) if isinstance(mx, str) else tuple(mx),
                       tuple(pol.get("policy-string", ())))
                e = out.setdefault(key, [0, 0, {}])
                e[0] += p["summary"]["total-successful-session-count"]
                e[1] += p["summary"]["total-failure-session-count"]
                for d in p.get("failure-details", []):
                    k = (d["result-type"], d.get("receiving-ip"), d.get("receiving-mx-hostname"))
                    e[2][k] = e[2].get(k, 0) + d["failed-session-count"]
        return out

    @staticmethod
    def tlsa_str(rr):
        return "%d %d %d %s" % (rr[0], rr[1], rr[2], rr[3].upper())

    def counts_in_file(self, domain):
        """Sessions (ok + failed) queue_dir/tlsrpt holds for domain."""
        path = os.path.join(self.relay.queue_dir, "tlsrpt")
        total, cur = 0, None
        try:
            with open(path) as f:
                for line in f:
                    w = line.split()
                    if w and w[0] == "B":
                        cur = w[3]
                    elif w and w[0] == "P" and cur == domain:
                        total += int(w[2]) + int(w[3])
        except FileNotFoundError:
            pass
        return total

    def wait_file(self, domain, pred, timeout=10):
        """Poll queue_dir/tlsrpt (state, written a second after a change)
        until pred(sessions held for domain)."""
        deadline = time.time() + timeout
        while not pred(self.counts_in_file(domain)):
            if time.time() > deadline:
                self.fail("queue_dir/tlsrpt: %s holds %d sessions" %
                          (domain, self.counts_in_file(domain)))
            time.sleep(0.05)


class ReportByMail(TlsrptCase):

    def test_dane_failure_and_success_are_reported_by_mail(self):
        self.make()
        self.dane_mxes()
        self.relay.start()
        qid = self.send()
        self.mx2.wait_for_messages(1, timeout=30)
        self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        got = self.collect(2)
        msg, m, _ = got[0]
        merged = self.merged(got)
        self.assertEqual(merged, {
            ("tlsa", ("mx1.example.net",), (self.tlsa_str(self.tlsa1),)):
                [0, 1, {("validation-failure", "127.0.0.2", "mx1.example.net"): 1}],
            ("tlsa", ("mx2.example.net",), (self.tlsa_str(self.tlsa2),)):
                [1, 0, {}],
        })
        for _, _, r in got:
            for p in r["policies"]:
                self.assertEqual(p["policy"]["policy-domain"], "example.net")
        # queued by relayd itself, to the rua address, with <> as sender
        self.assertEqual(msg.mail_from, "")
        self.assertEqual([r for r, _ in msg.rcpts], ["tlsrpt@reports.test"])
        self.assertEqual(m["From"], "TLS reporting <noreply-smtp-tls-reporting@relay.test>")
        # DKIM-signed with relay.test's key, and the signature covers the report
        self.assertTrue(dkim.verify(msg.data, dnsfunc=dnsfunc_for(self.relay.dns)))
        self.assertFalse(dkim.verify(msg.data.replace(b"aggregate TLS report",
                                                      b"aggregated TLS report"),
                                     dnsfunc=dnsfunc_for(self.relay.dns)))
        ev = self.relay.wait_for_log("tlsrpt_sent", domain="example.net")
        self.assertEqual(ev["rua"], "mailto:tlsrpt@reports.test")
        self.assertIn(ev["report_id"], [r["report-id"] for _, _, r in got])
        self.assertEqual(ev["successes"], "1" if len(got) == 1 else ev["successes"])
        # a report that went out leaves the file
        self.wait_file("example.net", lambda n: n == 0)

    def test_bogus_tlsa_counts_as_dnssec_invalid(self):
        self.make()
        from relay import make_cert
        good, good_key = make_cert(self.dir, cn="mx2.example.net", dns=("mx2.example.net",),
                                   ips=(), name="mx2")
        dns = self.relay.dns
        dns.set_servfail(dns.tlsa_name("mx1.example.net", self.relay.smtp_port))
        tlsa2 = (3, 0, 1, sha256_cert(good))
        dns.set_tlsa(dns.tlsa_name("mx2.example.net", self.relay.smtp_port), [tlsa2])
        mx1 = self.relay.sink("127.0.0.2")
        mx2 = self.relay.sink("127.0.0.3", starttls=(good, good_key))
        self.relay.start()
        qid = self.send()
        mx2.wait_for_messages(1, timeout=30)
        self.relay.wait_for_log("tls_policy_refused", qid=qid, result="dnssec-invalid")
        merged = self.merged(self.collect(2))
        self.assertEqual(merged[("tlsa", ("mx1.example.net",), ())],
                         [0, 1, {("dnssec-invalid", None, "mx1.example.net"): 1}])
        self.assertEqual(merged[("tlsa", ("mx2.example.net",), (self.tlsa_str(tlsa2),))],
                         [1, 0, {}])
        self.assertEqual(mx1.connections, 0)

    def test_no_record_no_report(self):
        self.make(record=None)
        self.dane_mxes()
        self.relay.start()
        qid = self.send()
        self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        # the report run got to example.net and found nobody to send to
        ev = self.relay.wait_for_log("tlsrpt_skipped", domain="example.net", timeout=30)
        self.assertEqual(ev["reason"], "no _smtp._tls record")
        self.assertEqual(self.reports.messages, [])
        self.assertEqual(self.relay.count_log("tlsrpt_sent"), 0)
        self.wait_file("example.net", lambda n: n == 0)


class ReportByHttps(TlsrptCase):
    """rua has both a mailto: and an https: URI; the HTTPS server (a test CA's
    certificate for tlsrpt.reports.test, on 127.0.0.84) first answers 503."""

    PATH = "/v1/tlsrpt"

    def test_https_post_is_retried_and_mail_is_not_sent_twice(self):
        ca = TestCA()
        self.addCleanup(shutil.rmtree, ca.dir, True)
        crt, key = ca.issue("tlsrpt.reports.test")
        srv = HTTPSServer("127.0.0.84", 0, crt, key).start()
        self.addCleanup(srv.stop)
        srv.route("tlsrpt.reports.test", self.PATH, body="busy\n", status=503)
        uri = "https://tlsrpt.reports.test:%d%s" % (srv.port, self.PATH)
        self.make(record="v=TLSRPTv1; rua=mailto:tlsrpt@reports.test, %s" % uri,
                  deliver={"ca_file": ca.cert})
        self.relay.dns.set_a("tlsrpt.reports.test", ["127.0.0.84"])
        self.dane_mxes()
        self.relay.start()
        qid = self.send()
        self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        failed = self.relay.wait_for_log("tlsrpt_failed", domain="example.net", rua=uri,
                                         timeout=30)
        self.assertIn("503", failed["error"])
        srv.route("tlsrpt.reports.test", self.PATH, body="", status=201)
        # every report that failed is sent again, with its report-id, until it goes
        ids = set()
        deadline = time.time() + 40
        while True:
            sent = {e["report_id"] for e in self.relay.find_log("tlsrpt_sent", rua=uri)}
            bad = {e["report_id"] for e in self.relay.find_log("tlsrpt_failed", rua=uri)}
            if sent and bad <= sent:
                break
            self.assertLess(time.time(), deadline, "https reports not all sent: %r %r" %
                            (sent, bad))
            time.sleep(0.1)
        self.assertIn(failed["report_id"], sent)
        posts = {}
        for (method, host, path, headers, body) in list(srv.requests):
            self.assertEqual((method, host, path), ("POST", "tlsrpt.reports.test", self.PATH))
            self.assertEqual(headers.get("Content-Type"), "application/tlsrpt+gzip")
            r = json.loads(gzip.decompress(body))
            self.check_schema(r)
            posts.setdefault(r["report-id"], []).append(r)
        self.assertGreaterEqual(len(posts[failed["report_id"]]), 2)   # tried, then again
        # the same report each time; together they hold every session
        for rid, rs in posts.items():
            self.assertTrue(all(x == rs[0] for x in rs), rid)
        got = [(None, None, rs[0]) for rid, rs in posts.items() if rid in sent]
        merged = self.merged(got)
        self.assertEqual(merged, {
            ("tlsa", ("mx1.example.net",), (self.tlsa_str(self.tlsa1),)):
                [0, 1, {("validation-failure", "127.0.0.2", "mx1.example.net"): 1}],
            ("tlsa", ("mx2.example.net",), (self.tlsa_str(self.tlsa2),)):
                [1, 0, {}],
        })
        # the mail went once per report: the retries were for https only
        mails = self.collect(2)
        self.assertEqual(sorted(r["report-id"] for _, _, r in mails), sorted(posts))
        self.assertEqual(len(self.reports.messages), len(posts))
        self.wait_file("example.net", lambda n: n == 0)


STS_IP = fixed_port_ip()         # the MTA-STS policy host, port 443 (this process's own)


@unittest.skipUnless(os.geteuid() == 0, "binding port 443 needs root")
class MtaSts(TlsrptCase):

    def test_mta_sts_sessions_are_reported(self):
        ca = TestCA()
        self.addCleanup(shutil.rmtree, ca.dir, True)
        crt, key = ca.issue("mta-sts.sts.test")
        srv = HTTPSServer(STS_IP, 443, crt, key).start()
        self.addCleanup(srv.stop)
        srv.route("mta-sts.sts.test", "/.well-known/mta-sts.txt",
                  body="version: STSv1\r\nmode: enforce\r\nmx: *.sts.test\r\n"
                       "max_age: 86400\r\n")
        self.make(deliver={"ca_file": ca.cert})
        dns = self.relay.dns
        dns.set_a("mta-sts.sts.test", [STS_IP])
        dns.set_txt("_mta-sts.sts.test", ["v=STSv1; id=one;"])
        dns.set_txt("_smtp._tls.sts.test", [RECORD])
        dns.set_mx("sts.test", [(10, "mx1.elsewhere.test"), (20, "mx2.sts.test")])
        dns.set_a("mx1.elsewhere.test", ["127.0.0.2"])
        dns.set_a("mx2.sts.test", ["127.0.0.3"])
        mx1 = self.relay.sink("127.0.0.2", starttls=ca.issue("mx1.elsewhere.test"))
        mx2 = self.relay.sink("127.0.0.3", starttls=ca.issue("mx2.sts.test"))
        self.relay.start()
        qid = self.send("bob@sts.test")
        mx2.wait_for_messages(1, timeout=30)
        self.assertEqual(self.relay.wait_for_log("delivered", qid=qid, timeout=30)["tls"],
                         "mta-sts")
        merged = self.merged(self.collect(2, domain="sts.test"))
        lines = ("version: STSv1", "mode: enforce", "mx: *.sts.test", "max_age: 86400")
        self.assertEqual(merged, {
            ("sts", ("*.sts.test",), lines):
                [1, 1, {("validation-failure", None, "mx1.elsewhere.test"): 1}],
        })
        self.assertEqual(mx1.connections, 0)


class NoPolicy(TlsrptCase):

    def test_no_policy_domain_counts_only_with_a_record(self):
        self.make()
        dns = self.relay.dns
        for dom, ip in (("plain.test", "127.0.0.6"), ("quiet.test", "127.0.0.7")):
            dns.set_mx_ips(dom, [(10, ip)])
        dns.set_txt("_smtp._tls.plain.test", ["v=TLSRPTv1;rua=mailto:plain-reports@reports.test"])
        from relay import test_cert
        cert, key = test_cert()
        plain = self.relay.sink("127.0.0.6", starttls=(cert, key))
        quiet = self.relay.sink("127.0.0.7")
        self.relay.start()
        q1 = self.send("bob@plain.test", "one")
        q2 = self.send("bob@quiet.test", "two")
        plain.wait_for_messages(1, timeout=30)
        quiet.wait_for_messages(1, timeout=30)
        self.relay.wait_for_log("delivered", qid=q1, timeout=30)
        self.relay.wait_for_log("delivered", qid=q2, timeout=30)
        self.relay.dns.wait_for_query("_smtp._tls.quiet.test", "TXT")
        [m] = self.reports.wait_for_messages(1, timeout=40)
        self.assertEqual([r for r, _ in m.rcpts], ["plain-reports@reports.test"])
        msg = email.message_from_bytes(m.data, policy=email.policy.compat32)
        self.assertEqual(msg["TLS-Report-Domain"], "plain.test")
        part = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"][0]
        r = json.loads(gzip.decompress(part.get_payload(decode=True)))
        [p] = r["policies"]
        self.assertEqual(p["policy"], {"policy-type": "no-policy-found",
                                       "policy-domain": "plain.test"})
        self.assertEqual(p["summary"], {"total-successful-session-count": 1,
                                        "total-failure-session-count": 0})
        # quiet.test publishes nothing: never counted, never looked up at report time
        self.relay.wait_for_log("tlsrpt_sent", domain="plain.test")
        self.assertEqual(self.relay.count_log("tlsrpt_skipped", domain="quiet.test"), 0)
        self.assertEqual(self.counts_in_file("quiet.test"), 0)


MAILS_MAX = 16                  # TLSRPT_MAILS_MAX (tlsrpt.h)


@needs_test_hooks
class ManyDomains(TlsrptCase):

    N = MAILS_MAX + 4

    def start_with_all_due(self):
        """N domains publish a record and have a counted session each; relayd
        restarts with every report due, its commits slowed
        (RELAYD_TEST_SYNC_DELAY_MS) so that every report is built before the
        first commit ends.  The domains, and the log mark of the restart."""
        from relay import test_cert
        self.make(interval="1h")
        dns = self.relay.dns
        cert, key = test_cert()
        sink = self.relay.sink("127.0.0.6", starttls=(cert, key))
        domains = ["d%02d.test" % i for i in range(self.N)]
        for d in domains:
            dns.set_mx_ips(d, [(10, "127.0.0.6")])
            dns.set_txt("_smtp._tls." + d, ["v=TLSRPTv1;rua=mailto:tlsrpt-%s@reports.test" % d])
        self.relay.start()
        qids = [self.send("bob@" + d, d) for d in domains]
        sink.wait_for_messages(self.N, timeout=60)
        for q in qids:
            self.relay.wait_for_log("delivered", qid=q, timeout=30)
        for d in domains:
            self.wait_file(d, lambda c: c == 1)
        self.relay.stop()
        self.relay.env["RELAYD_TEST_SYNC_DELAY_MS"] = "1000"
        self.relay.update_config(router={"tlsrpt_interval": "2s"})
        mark = self.relay.log_mark()
        self.relay.start()
        return domains, mark

    def test_mail_reports_being_queued_are_capped(self):
        """When a slot ends every due domain's report is queued, each a queue
        transaction holding its file until its commit: at most MAILS_MAX of
        them at once (tlsrpt_queueing to tlsrpt_sent), the others wait their
        turn (waited=yes), and every one is sent.  Before the cap all N were
        being queued at once."""
        domains, mark = self.start_with_all_due()
        sent = self.relay.wait_for_count("tlsrpt_sent", self.N, timeout=60, since=mark)
        self.assertEqual(sorted(e["domain"] for e in sent), domains)
        self.assertEqual(self.relay.count_log("tlsrpt_failed", since=mark), 0)
        # the reports being queued, in the log's order
        inflight = peak = 0
        for e in self.relay.find_log(since=mark):
            if e.get("event") == "tlsrpt_queueing":
                inflight += 1
                peak = max(peak, inflight)
            elif e.get("event") in ("tlsrpt_sent", "tlsrpt_failed") and \
                    e.get("rua", "").startswith("mailto:"):
                inflight -= 1
        self.assertLessEqual(peak, MAILS_MAX)
        self.assertEqual(peak, MAILS_MAX)       # the cap was reached: the test shows it
        waited = self.relay.find_log("tlsrpt_queueing", since=mark, waited="yes")
        self.assertEqual(len(waited), self.N - MAILS_MAX)
        msgs = self.reports.wait_for_messages(self.N, timeout=30)
        self.assertEqual(sorted(r for m in msgs for r, _ in m.rcpts),
                         sorted("tlsrpt-%s@reports.test" % d for d in domains))

    def test_reports_waiting_at_a_stop_are_sent_after(self):
        """A stop while reports wait for room: those being queued finish,
        the waiting ones fail ("relayd is stopping") and stay in
        queue_dir/tlsrpt; the next start sends them.  Every domain gets its
        report once."""
        domains, mark = self.start_with_all_due()
        self.relay.wait_for_count("tlsrpt_queueing", MAILS_MAX, timeout=30, since=mark)
        self.assertEqual(self.relay.stop(), 0)
        before = [e["domain"] for e in self.relay.find_log("tlsrpt_sent", since=mark)]
        self.assertGreaterEqual(len(before), MAILS_MAX)
        # the rest were waiting (or, not built yet, their lookup was cancelled)
        stopping = self.relay.find_log("tlsrpt_failed", since=mark, error="relayd is stopping")
        self.assertGreater(len(stopping), 0)
        rest = sorted(set(domains) - set(before))
        self.assertEqual(len(rest), self.N - len(before))
        self.assertLessEqual(set(e["domain"] for e in stopping), set(rest))
        for d in rest:
            self.assertEqual(self.counts_in_file(d), 1)
        del self.relay.env["RELAYD_TEST_SYNC_DELAY_MS"]
        mark = self.relay.log_mark()
        self.relay.start()
        sent = self.relay.wait_for_count("tlsrpt_sent", len(rest), timeout=60, since=mark)
        self.assertEqual(sorted(e["domain"] for e in sent), rest)
        msgs = self.reports.wait_for_messages(self.N, timeout=30)
        self.assertEqual(sorted(r for m in msgs for r, _ in m.rcpts),
                         sorted("tlsrpt-%s@reports.test" % d for d in domains))


class Durable(TlsrptCase):

    def test_counts_survive_kill9_before_the_report(self):
        self.make(interval="1h")
        self.dane_mxes()
        self.relay.start()
        qid = self.send()
        self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.wait_file("example.net", lambda n: n == 2)
        self.assertEqual(self.reports.messages, [])
        # relayctl policy: where the domain's reports go, and today's counts
        deadline = time.time() + 10
        while True:
            js = self.relay.relayctl("policy", "example.net", "--json", json=True)
            if js["tlsrpt"] is not None and js["tlsrpt"]["rua"]:
                break
            self.assertLess(time.time(), deadline, js)
            time.sleep(0.1)
        self.assertEqual(js["tlsrpt"]["rua"], ["mailto:tlsrpt@reports.test"])
        self.assertEqual(js["tlsrpt"]["today"]["tlsa"], {"successful": 1, "failed": 1})
        self.assertEqual(js["tlsrpt"]["today"]["no-policy-found"], {"successful": 0, "failed": 0})
        out = self.relay.relayctl("policy", "example.net", check=True).stdout
        self.assertRegex(out, r"(?m)^tlsrpt: rua mailto:tlsrpt@reports\.test \(looked up ")
        self.assertRegex(out, r"(?m)^  today tlsa: 1 successful, 1 failed$")
        # written, renamed and the rename synced (queue_dir) without an error
        self.assertEqual(self.relay.count_log("tlsrpt_save_failed"), 0)
        self.relay.kill9()
        self.relay.update_config(router={"tlsrpt_interval": "2s"})
        self.relay.start()
        merged = self.merged(self.collect(2))
        self.assertEqual(merged[("tlsa", ("mx1.example.net",), (self.tlsa_str(self.tlsa1),))],
                         [0, 1, {("validation-failure", "127.0.0.2", "mx1.example.net"): 1}])
        self.assertEqual(merged[("tlsa", ("mx2.example.net",), (self.tlsa_str(self.tlsa2),))],
                         [1, 0, {}])

    def test_counts_survive_a_stop_while_the_report_lookup_is_out(self):
        """A stop while a due report's _smtp._tls lookup is unanswered keeps
        the bucket for the next start (it was dropped: counts lost)."""
        self.make(interval="1h")
        self.dane_mxes()
        self.relay.start()
        qid = self.send()
        self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.wait_file("example.net", lambda n: n == 2)
        self.relay.stop()
        dns = self.relay.dns
        dns.set_drop("_smtp._tls.example.net")
        dns.clear_queries()
        self.relay.update_config(router={"tlsrpt_interval": "2s"})
        self.relay.start()
        # the due bucket's report lookup, never answered
        dns.wait_for_query("_smtp._tls.example.net", "TXT", timeout=15)
        self.assertEqual(self.relay.stop(), 0)
        self.assertEqual(self.counts_in_file("example.net"), 2)
        self.assertEqual(self.reports.messages, [])
        dns.clear("_smtp._tls.example.net")
        dns.set_txt("_smtp._tls.example.net", [RECORD])
        self.relay.start()
        merged = self.merged(self.collect(2))
        self.assertEqual(merged[("tlsa", ("mx1.example.net",), (self.tlsa_str(self.tlsa1),))],
                         [0, 1, {("validation-failure", "127.0.0.2", "mx1.example.net"): 1}])
        self.assertEqual(merged[("tlsa", ("mx2.example.net",), (self.tlsa_str(self.tlsa2),))],
                         [1, 0, {}])


if __name__ == "__main__":
    unittest.main()
