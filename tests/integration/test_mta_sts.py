"""test_mta_sts.py - MTA-STS for outbound SMTP (RFC 8461), end to end.

Real parts: the real relayd; the loopback DNS server serving the
"_mta-sts" TXT records and the address of mta-sts.DOMAIN; a real HTTPS
server (tests/harness/httpsserver.py, Python's ssl) on port 443 of a
loopback address of the test process's own (fixed_port_ip: another run on
the machine uses another one; binding 443 needs root, as the
harness's switch to `nobody` does; without root these tests are skipped),
serving the policies with a certificate from the test CA; sink MXes on
127.0.0.2-.7 with STARTTLS certificates from that CA (matching, wrong name,
expired), self-signed, or no STARTTLS.  deliver.ca_file is the CA: relayd's
HTTPS client and its SMTP client trust it, and nothing else.

Shown: enforce skips an MX that matches no mx pattern (no connection at
all) and delivers to one that does, with tls=mta-sts; enforce refuses a
wrong name, an expired and a self-signed certificate and a missing STARTTLS,
each with its RFC 8460 result type, and never sends in clear; testing mode
delivers to what enforce would refuse and reports it; the policy cache
survives a restart with the HTTPS server gone (still enforced, not fetched);
a changed id is fetched again, and a failed refetch keeps the cached policy;
an oversized, a slow, a missing (404), a redirected and a wrongly typed
policy are fetch errors that leave the domain without a policy, so the mail
is delivered as today; a domain without a TXT record is never fetched.
"""

import os
import unittest

from client import make_message, submit
from httpsserver import HTTPSServer, fixed_port_ip
from relay import Relay, TestCA, make_cert

SENDER = "alice@example.org"
STS_IP = fixed_port_ip()         # the policy host, port 443 (RFC 8461 3.3)
POLICY_PATH = "/.well-known/mta-sts.txt"
DOMAINS = ("example.net", "big.test", "nolen.test", "slow.test", "missing.test",
           "moved.test", "html.test")


def policy(mode, *mx, max_age=86400):
    return "version: STSv1\r\nmode: %s\r\n%smax_age: %d\r\n" % (
        mode, "".join("mx: %s\r\n" % m for m in mx), max_age)


@unittest.skipUnless(os.geteuid() == 0, "binding port 443 needs root")
class MtaStsCase(unittest.TestCase):
    """A relay that trusts only the test CA; example.org's mail stays home
    (127.0.0.9); the policy server is up with nothing routed."""

    def make(self, **overrides):
        deliver = dict(overrides.pop("deliver", {}))
        self.relay = Relay.for_test(self, deliver=deliver, **overrides)
        self.dir = os.path.join(self.relay.tmpdir, "sts-certs")
        os.makedirs(self.dir, exist_ok=True)
        self.ca = TestCA(directory=os.path.join(self.dir, "ca"))
        self.relay.update_config(deliver={"ca_file": self.ca.cert})
        dns = self.relay.dns
        dns.set_mx_ips("example.org", [(10, "127.0.0.9")])
        self.home = self.relay.sink("127.0.0.9")
        cert, key = self.ca.issue("mta-sts.example.net",
                                  dns=["mta-sts.%s" % d for d in DOMAINS])
        self.https = HTTPSServer(STS_IP, 443, cert, key).start()
        self.addCleanup(self.https.stop)
        for d in DOMAINS:
            dns.set_a("mta-sts.%s" % d, [STS_IP])
        return self.relay

    def publish(self, domain, id_, text, **kw):
        """The TXT record and the policy body for domain."""
        self.relay.dns.set_txt("_mta-sts.%s" % domain, ["v=STSv1; id=%s;" % id_])
        self.https.route("mta-sts.%s" % domain, POLICY_PATH, body=text, **kw)

    def mx(self, domain, hosts):
        """MX records for domain: [(pref, name, ip), ...]."""
        dns = self.relay.dns
        dns.set_mx(domain, [(p, n) for p, n, _ in hosts])
        for _, n, ip in hosts:
            dns.set_a(n, [ip])

    def sink(self, ip, name=None, cert=None, **kw):
        """A sink on ip with STARTTLS and a CA certificate for name, or cert
        ((cert, key), or False: no STARTTLS)."""
        if cert is None:
            cert = self.ca.issue(name)
        if cert is False:
            return self.relay.sink(ip, **kw)
        return self.relay.sink(ip, starttls=cert, **kw)

    def send(self, rcpt="bob@example.net", subject="hello"):
        msg = make_message(SENDER, rcpt, subject, "Body of %s.\r\n" % subject)
        return submit(self.relay, SENDER, [rcpt], msg)

    def no_mail(self, sink):
        self.assertEqual(sink.transactions, [])
        self.assertEqual([c for _, c in sink.commands if c.upper().startswith("MAIL")], [])


class Enforce(MtaStsCase):

    def test_non_matching_mx_is_skipped_and_a_matching_one_gets_the_mail(self):
        self.make()
        self.mx("example.net", [(10, "mx1.elsewhere.test", "127.0.0.2"),
                                (20, "mx2.example.net", "127.0.0.3")])
        self.publish("example.net", "v1", policy("enforce", "*.example.net"))
        mx1 = self.sink("127.0.0.2", "mx1.elsewhere.test")
        mx2 = self.sink("127.0.0.3", "mx2.example.net")
        self.relay.start()
        qid = self.send()
        [m] = mx2.wait_for_messages(1, timeout=30)
        self.assertTrue(m.tls)
        line = self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertEqual(line["ip"], "127.0.0.3")
        self.assertEqual(line["tls"], "mta-sts")
        ref = self.relay.wait_for_log("tls_policy_refused", qid=qid)
        self.assertEqual(ref["policy"], "mta-sts")
        self.assertEqual(ref["host"], "mx1.elsewhere.test")
        self.assertEqual(ref["status"], "4.7.5")
        self.assertEqual(ref["result"], "validation-failure")
        fetched = self.relay.wait_for_log("mtasts_policy_fetched", domain="example.net")
        self.assertEqual((fetched["id"], fetched["mode"], fetched["mx"]),
                         ("v1", "enforce", "*.example.net"))
        self.assertEqual(fetched["ip"], STS_IP)
        self.assertEqual(mx1.connections, 0)        # refused before connecting
        self.no_mail(mx1)
        self.assertEqual(self.https.count("mta-sts.example.net", POLICY_PATH), 1)
        # the TXT record and the policy host were asked of relayd's resolver
        self.assertGreaterEqual(self.relay.dns.count("_mta-sts.example.net", "TXT"), 1)
        self.assertGreaterEqual(self.relay.dns.count("mta-sts.example.net", "A"), 1)
        # relayctl policy shows what is held
        doc = self.relay.relayctl("policy", "Example.NET.", "--json", json=True)["mta_sts"]
        self.assertEqual((doc["policy"]["id"], doc["policy"]["mode"], doc["policy"]["mx"],
                          doc["policy"]["max_age"], doc["failure"]),
                         ("v1", "enforce", ["*.example.net"], 86400, None))
        self.assertTrue(doc["policy"]["fetched"] and doc["policy"]["expires"] and doc["checked"])
        out = self.relay.relayctl("policy", "example.net", check=True).stdout
        self.assertIn("mta-sts: policy id=v1 mode=enforce max_age=86400", out)
        self.assertIn("\n  mx *.example.net\n", out)

    def test_bad_certificates_and_no_starttls_are_refused_never_plaintext(self):
        self.make()
        self.mx("example.net", [(10, "mx1.example.net", "127.0.0.2"),
                                (20, "mx2.example.net", "127.0.0.3"),
                                (30, "mx3.example.net", "127.0.0.4"),
                                (40, "mx4.example.net", "127.0.0.5"),
                                (50, "mx5.example.net", "127.0.0.6")])
        self.publish("example.net", "v1", policy("enforce", "*.example.net"))
        sinks = {
            "127.0.0.2": self.sink("127.0.0.2", cert=self.ca.issue("wrong.example.com")),
            "127.0.0.3": self.sink("127.0.0.3", cert=self.ca.issue("mx2.example.net",
                                                                   expired=True)),
            "127.0.0.4": self.sink("127.0.0.4", cert=make_cert(
                self.dir, cn="mx3.example.net", dns=("mx3.example.net",), ips=())),
            "127.0.0.5": self.sink("127.0.0.5", cert=False),
        }
        good = self.sink("127.0.0.6", "mx5.example.net")
        self.relay.start()
        qid = self.send()
        [m] = good.wait_for_messages(1, timeout=30)
        self.assertTrue(m.tls)
        line = self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertEqual((line["ip"], line["tls"]), ("127.0.0.6", "mta-sts"))
        want = {"127.0.0.2": "certificate-host-mismatch",
                "127.0.0.3": "certificate-expired",
                "127.0.0.4": "certificate-not-trusted",
                "127.0.0.5": "starttls-not-supported"}
        for ip, result in want.items():
            ev = self.relay.wait_for_log("deliver_tls_failed", qid=qid, ip=ip)
            self.assertEqual((ev["policy"], ev["result"]), ("mta-sts", result), ip)
            [failed] = self.relay.find_log("host_failed", qid=qid, ip=ip)
            self.assertEqual((failed["status"], failed["tls_result"], failed["down"]),
                             ("4.7.5", result, "no"), ip)
            self.assertGreaterEqual(sinks[ip].connections, 1, ip)
            self.no_mail(sinks[ip])

    def test_only_bad_exchangers_defer_the_mail(self):
        self.make()
        self.mx("example.net", [(10, "mx1.example.net", "127.0.0.2")])
        self.publish("example.net", "v1", policy("enforce", "mx1.example.net"))
        mx1 = self.sink("127.0.0.2", cert=False)       # STARTTLS stripped
        self.relay.start()
        qid = self.send()
        line = self.relay.wait_for_log("deferred", qid=qid, timeout=30)
        self.assertEqual(line["status"], "4.7.5")
        self.assertIn("MTA-STS", line["reply"])
        self.assertGreaterEqual(mx1.connections, 1)
        self.no_mail(mx1)
        self.assertEqual(self.relay.count_log("delivered", qid=qid), 0)


    def test_each_refused_retry_is_recorded(self):
        # The only exchanger does not match the policy: every retry is
        # refused before connecting, an attempt that tried no exchanger with
        # the same status and reply each time.  Each is still a record of
        # its own (relayctl queue show's history has a line per deferral):
        # only a wait for a destination still down goes unrecorded.
        self.make(router=dict(retry_intervals=["1s"]))
        self.mx("example.net", [(10, "mx1.elsewhere.test", "127.0.0.2")])
        self.publish("example.net", "v1", policy("enforce", "*.example.net"))
        mx1 = self.sink("127.0.0.2", "mx1.elsewhere.test")
        self.relay.start()
        qid = self.send()
        self.relay.wait_for_count("deferred", 3, timeout=30)
        self.relay.stop()                # every record issued is in its file
        self.relay.start()
        doc = self.relay.relayctl("queue", "show", qid, "--json", json=True)
        [rc] = doc["recipients"]
        self.assertEqual(mx1.connections, 0)
        deferred = self.relay.find_log("deferred", qid=qid)
        self.assertGreaterEqual(len(deferred), 3)
        self.assertGreaterEqual(len(rc["history"]), 3, rc["history"])

class Testing(MtaStsCase):

    def test_testing_mode_delivers_and_reports(self):
        self.make()
        self.mx("example.net", [(10, "mx1.example.net", "127.0.0.2")])
        self.publish("example.net", "t1", policy("testing", "mx1.example.net"))
        mx1 = self.sink("127.0.0.2", cert=self.ca.issue("mx1.example.net", expired=True))
        self.relay.start()
        qid = self.send()
        [m] = mx1.wait_for_messages(1, timeout=30)
        self.assertTrue(m.tls)
        line = self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertEqual(line["tls"], "opportunistic")     # as without a policy
        ev = self.relay.wait_for_log("tls_policy_testing", qid=qid)
        self.assertEqual((ev["policy"], ev["result"], ev["host"]),
                         ("mta-sts", "certificate-expired", "mx1.example.net"))
        self.relay.wait_for_log("mtasts_policy_fetched", domain="example.net", mode="testing")

    def test_testing_mode_reports_a_non_matching_mx(self):
        self.make()
        self.mx("example.net", [(10, "mx1.elsewhere.test", "127.0.0.2")])
        self.publish("example.net", "t1", policy("testing", "*.example.net"))
        mx1 = self.sink("127.0.0.2", "mx1.elsewhere.test")
        self.relay.start()
        qid = self.send()
        mx1.wait_for_messages(1, timeout=30)
        self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        ev = self.relay.wait_for_log("tls_policy_testing", qid=qid)
        self.assertEqual((ev["result"], ev["host"]), ("validation-failure", "mx1.elsewhere.test"))
        self.assertEqual(self.relay.count_log("tls_policy_refused", qid=qid), 0)


class Cache(MtaStsCase):

    def setup_two_mx(self):
        self.mx("example.net", [(10, "mx1.example.net", "127.0.0.2"),
                                (20, "mx2.example.net", "127.0.0.3")])
        self.mx1 = self.sink("127.0.0.2", "mx1.example.net")
        self.mx2 = self.sink("127.0.0.3", "mx2.example.net")

    def test_the_cache_survives_a_restart_with_the_policy_server_down(self):
        self.make()
        self.setup_two_mx()
        self.publish("example.net", "v1", policy("enforce", "mx2.example.net"))
        self.relay.start()
        qid = self.send(subject="before")
        self.mx2.wait_for_messages(1, timeout=30)
        self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.relay.stop()
        self.https.stop()
        with open(os.path.join(self.relay.queue_dir, "mta-sts")) as f:
            self.assertIn("example.net v1 ", f.read())
        self.relay.start()
        loaded = self.relay.wait_for_log("mtasts_cache_loaded")
        self.assertEqual(loaded["policies"], "1")
        qid = self.send(subject="after")
        self.mx2.wait_for_messages(2, timeout=30)
        line = self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertEqual((line["ip"], line["tls"]), ("127.0.0.3", "mta-sts"))
        ref = self.relay.wait_for_log("tls_policy_refused", qid=qid)
        self.assertEqual((ref["host"], ref["policy"]), ("mx1.example.net", "mta-sts"))
        self.no_mail(self.mx1)
        # the TXT id was the cached one: nothing to fetch, nothing failed
        self.assertEqual(self.https.count(), 1)
        self.assertEqual(self.relay.count_log("mtasts_fetch_failed"), 0)

    def test_a_changed_id_is_fetched_again(self):
        self.make()
        self.setup_two_mx()
        self.publish("example.net", "v1", policy("enforce", "mx1.example.net"))
        self.relay.start()
        qid = self.send(subject="one")
        self.mx1.wait_for_messages(1, timeout=30)
        self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.publish("example.net", "v2", policy("enforce", "mx2.example.net"))
        self.relay.relayctl("queue", "flush", "--all", check=True)    # look at the TXT id again now
        qid = self.send(subject="two")
        self.mx2.wait_for_messages(1, timeout=30)
        line = self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertEqual(line["ip"], "127.0.0.3")
        self.relay.wait_for_log("mtasts_policy_fetched", domain="example.net", id="v2")
        self.assertEqual(self.https.count("mta-sts.example.net", POLICY_PATH), 2)
        self.assertEqual(len(self.mx1.transactions), 1)

    def test_a_failed_refetch_keeps_the_cached_policy(self):
        self.make()
        self.setup_two_mx()
        self.publish("example.net", "v1", policy("enforce", "mx2.example.net"))
        self.relay.start()
        qid = self.send(subject="one")
        self.mx2.wait_for_messages(1, timeout=30)
        self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        # a new id, but the policy server now answers 404
        self.relay.dns.set_txt("_mta-sts.example.net", ["v=STSv1; id=v2;"])
        self.https.unroute("mta-sts.example.net", POLICY_PATH)
        self.relay.relayctl("queue", "flush", "--all", check=True)
        qid = self.send(subject="two")
        self.mx2.wait_for_messages(2, timeout=30)
        line = self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertEqual((line["ip"], line["tls"]), ("127.0.0.3", "mta-sts"))
        failed = self.relay.wait_for_log("mtasts_fetch_failed", domain="example.net")
        self.assertEqual((failed["result"], failed["kept"]), ("sts-policy-fetch-error", "cached"))
        self.assertIn("404", failed["error"])
        self.no_mail(self.mx1)


class FetchErrors(MtaStsCase):

    def test_a_record_not_starting_v_stsv1_semicolon_is_discarded(self):
        # RFC 8461 3.1: "v=STSv1 ..." without its ';' is not an STS record, so
        # the one real record is "exactly one" and its policy applies.
        self.make()
        self.mx("example.net", [(10, "mx1.example.net", "127.0.0.2")])
        self.publish("example.net", "v1", policy("enforce", "mx1.example.net"))
        self.relay.dns.set_txt("_mta-sts.example.net",
                               ["v=STSv1 see the policy host", "v=STSv1; id=v1;"])
        mx1 = self.sink("127.0.0.2", "mx1.example.net")
        self.relay.start()
        qid = self.send()
        mx1.wait_for_messages(1, timeout=30)
        self.assertEqual(self.relay.wait_for_log("delivered", qid=qid, timeout=30)["tls"], "mta-sts")
        self.assertEqual(self.relay.wait_for_log("mtasts_policy_fetched",
                                                 domain="example.net")["id"], "v1")

    def test_bad_policies_are_fetch_errors_and_the_mail_goes_as_today(self):
        # each domain publishes an enforce policy that mx1 (its only MX)
        # would fail; the policy cannot be had, so there is none
        self.make(router={"mta_sts_timeout": "2s"})
        bad = policy("enforce", "nothing.invalid")
        cases = {
            "big.test": (dict(body=bad + "x: " + "y" * 70000 + "\r\n"),
                         "sts-policy-fetch-error", "larger than"),
            "nolen.test": (dict(body=bad + "x: " + "y" * 70000 + "\r\n", length=False),
                           "sts-policy-fetch-error", "larger than"),
            "slow.test": (dict(body=bad, delay=6), "sts-policy-fetch-error", "imed out"),
            "missing.test": (dict(body="no\n", status=404), "sts-policy-fetch-error", "404"),
            "moved.test": (dict(body="", status=301,
                                location="https://mta-sts.example.net" + POLICY_PATH),
                           "sts-policy-fetch-error", "301"),
            "html.test": (dict(body=bad, ctype="text/html"), "sts-policy-invalid", "text/html"),
        }
        self.mx("example.net", [(10, "mx1.example.net", "127.0.0.2")])
        for d in cases:
            self.mx(d, [(10, "mx1.example.net", "127.0.0.2")])
        self.https.route("mta-sts.example.net", POLICY_PATH, body=bad)   # not asked for
        mx1 = self.sink("127.0.0.2", "mx1.example.net")
        self.relay.start()
        for d, (route, _, _) in cases.items():
            self.relay.dns.set_txt("_mta-sts.%s" % d, ["v=STSv1; id=b1;"])
            self.https.route("mta-sts.%s" % d, POLICY_PATH, **route)
        qids = {d: self.send(rcpt="bob@%s" % d, subject=d) for d in cases}
        mx1.wait_for_messages(len(cases), timeout=60)
        for d, (_, result, why) in cases.items():
            line = self.relay.wait_for_log("delivered", qid=qids[d], timeout=30)
            self.assertEqual(line["tls"], "opportunistic", d)
            ev = self.relay.wait_for_log("mtasts_fetch_failed", domain=d)
            self.assertEqual((ev["result"], ev["kept"]), (result, "none"), d)
            self.assertIn(why, ev["error"], d)
            self.assertEqual(self.relay.count_log("tls_policy_refused", qid=qids[d]), 0, d)
        self.assertEqual(self.relay.count_log("mtasts_policy_fetched"), 0)
        doc = self.relay.relayctl("policy", "missing.test", "--json", json=True)["mta_sts"]
        self.assertEqual((doc["policy"], doc["failure"]), (None, "sts-policy-fetch-error"))
        self.assertIn("404", doc["error"])
        # the redirect was not followed
        self.assertEqual(self.https.count("mta-sts.example.net", POLICY_PATH), 0)

    def test_a_domain_without_the_txt_record_is_delivered_as_today(self):
        self.make()
        self.mx("example.net", [(10, "mx1.elsewhere.test", "127.0.0.2")])
        self.https.route("mta-sts.example.net", POLICY_PATH,
                         body=policy("enforce", "*.example.net"))
        mx1 = self.sink("127.0.0.2", "mx1.elsewhere.test")
        self.relay.start()
        qid = self.send()
        mx1.wait_for_messages(1, timeout=30)
        line = self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertEqual(line["tls"], "opportunistic")
        self.assertGreaterEqual(self.relay.dns.count("_mta-sts.example.net", "TXT"), 1)
        self.assertEqual(self.https.count(), 0)
        self.assertEqual(self.relay.count_log("mtasts_fetch_failed"), 0)

    def test_mta_sts_off_never_asks(self):
        self.make(router={"mta_sts": False})
        self.mx("example.net", [(10, "mx1.elsewhere.test", "127.0.0.2")])
        self.publish("example.net", "v1", policy("enforce", "*.example.net"))
        mx1 = self.sink("127.0.0.2", "mx1.elsewhere.test")
        self.relay.start()
        qid = self.send()
        mx1.wait_for_messages(1, timeout=30)
        self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertEqual(self.relay.dns.count("_mta-sts.example.net", "TXT"), 0)
        self.assertEqual(self.https.count(), 0)


if __name__ == "__main__":
    unittest.main()
