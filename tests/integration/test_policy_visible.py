"""test_policy_visible.py - how outbound TLS was decided is visible (issue
#14, point 4): `relayctl policy DOMAIN`, the policy and refusal reason in
`relayctl hosts` and `queue show`, and `tls=` with the TLS version on every
`delivered` line.

Real parts as in test_dane.py: the real relayd with router.dnssec on,
resolving through the tests' loopback DNS server, which sets the AD bit for
the zones marked secure, answers SERVFAIL where data would be bogus and
serves TLSA records; sink MXes on 127.0.0.2/.3 (on this relay's own port)
with real STARTTLS certificates.

Shown:
* after a delivery, `relayctl policy example.net` shows the MX hosts with
  their DNSSEC status and, per host, the TLSA answer relayd holds (secure
  with its records, bogus with why, absent), text and --json; an insecure
  domain shows its MX hosts as insecure and no TLSA; a domain relayd never
  resolved is "nothing held", exit 1;
* `relayctl hosts` and `queue show` show the policy that applied to a host
  (dane) and why one was refused (4.7.5 with the RFC 8460 result type);
* `delivered` says tls=none, opportunistic, verify or dane, and the TLS
  version (tls_version=TLSv1.x) whenever TLS was up.
"""

import json
import re
import unittest

from client import make_message, submit
from relay import TestCA
from test_dane import DaneCase, sha256_cert


SENDER = "alice@example.org"


class PolicyCase(DaneCase):
    """test_dane's relay: router.dnssec on; example.net has mx1 (127.0.0.2,
    pref 10) and mx2 (127.0.0.3, pref 20) and is signed unless told otherwise."""

    def ctl(self, *args, code=0):
        r = self.relay.relayctl(*args)
        self.assertEqual(r.returncode, code, "relayctl %s: rc=%d out=%r err=%r"
                         % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r

    def ctl_json(self, *args):
        return json.loads(self.ctl(*args, "--json").stdout)


class PolicyCommand(PolicyCase):

    def test_policy_shows_the_tlsa_records_held_after_a_delivery(self):
        self.make()
        good, good_key = self.self_signed("mx1.example.net")
        dns = self.relay.dns
        digest = sha256_cert(good)
        dns.set_tlsa(self.tlsa_name("mx1.example.net"), [(3, 0, 1, digest)])
        dns.set_servfail(self.tlsa_name("mx2.example.net"))
        mx1 = self.relay.sink("127.0.0.2", starttls=(good, good_key))
        self.relay.start()
        qid = self.send()
        mx1.wait_for_messages(1, timeout=30)
        self.relay.wait_for_log("delivered", qid=qid, timeout=30)

        out = self.ctl("policy", "example.net").stdout
        lines = out.splitlines()
        self.assertEqual(lines[0], "domain example.net")
        self.assertTrue(lines[1].startswith("dane: MX looked up "), out)
        self.assertIn("router.dnssec on", lines[1])
        [mx1_line] = [l for l in lines if "mx1.example.net" in l]
        self.assertIn("mx 10 mx1.example.net dnssec=secure tlsa=secure looked_up=", mx1_line)
        self.assertIn("    TLSA 3 0 1 %s usable" % digest, lines)
        [mx2_line] = [l for l in lines if "mx2.example.net" in l]
        self.assertIn("mx 20 mx2.example.net dnssec=secure tlsa=bogus", mx2_line)
        self.assertIn("error=", mx2_line)

        doc = self.ctl_json("policy", "example.net")
        self.assertEqual(doc["domain"], "example.net")
        dane = doc["dane"]
        self.assertTrue(dane["dnssec"])
        self.assertFalse(dane["implicit_mx"])
        self.assertRegex(dane["looked_up"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual([(m["host"], m["pref"], m["dnssec"], m["tlsa"]) for m in dane["mx"]],
                         [("mx1.example.net", 10, "secure", "secure"),
                          ("mx2.example.net", 20, "secure", "bogus")])
        self.assertEqual(dane["mx"][0]["records"],
                         [{"usage": 3, "selector": 0, "mtype": 1, "data": digest,
                           "usable": True}])
        self.assertIsNone(dane["mx"][0]["error"])
        self.assertEqual(dane["mx"][1]["records"], [])
        self.assertTrue(dane["mx"][1]["error"])
        self.assertIsNotNone(dane["mx"][1]["looked_up"])
        # case and a trailing dot do not matter
        self.assertEqual(self.ctl_json("policy", "Example.NET.")["dane"]["mx"], dane["mx"])

    def test_policy_of_an_insecure_domain_shows_no_tlsa(self):
        self.make(secure=False)
        self.relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        mx1 = self.relay.sink("127.0.0.2")
        self.relay.start()
        qid = self.send()
        mx1.wait_for_messages(1, timeout=30)
        self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        doc = self.ctl_json("policy", "example.net")
        self.assertEqual([(m["host"], m["dnssec"], m["tlsa"], m["records"])
                          for m in doc["dane"]["mx"]],
                         [("mx1.example.net", "insecure", "insecure", [])])
        out = self.ctl("policy", "example.net").stdout
        self.assertIn("mx 10 mx1.example.net dnssec=insecure tlsa=insecure", out)

    def test_policy_of_an_unknown_domain_exits_1(self):
        self.make()
        self.relay.start()
        # relayd is up and answers relayctl: the domain is simply not known
        self.ctl("hosts")
        r = self.ctl("policy", "never-seen.example", code=1)
        self.assertIn("nothing held for never-seen.example", r.stderr)
        self.assertEqual(r.stdout, "")
        r = self.ctl("policy", "never-seen.example", "--json", code=1)
        self.assertIn("nothing held", r.stderr)
        # usage: exactly one domain
        self.ctl("policy", code=2)
        self.ctl("policy", "a.example", "b.example", code=2)


class PolicyInListings(PolicyCase):

    def test_hosts_and_queue_show_say_why_dane_refused_each_host(self):
        """mx1's certificate matches no TLSA record (refused after the
        handshake); mx2's TLSA answer is bogus (refused before connecting):
        the mail waits, and both listings say which policy refused which host
        and why."""
        self.make()
        cert, key = self.self_signed("mx1.example.net")
        other, _ = self.self_signed("someone-else.invalid")
        dns = self.relay.dns
        dns.set_tlsa(self.tlsa_name("mx1.example.net"), [(3, 0, 1, sha256_cert(other))])
        dns.set_servfail(self.tlsa_name("mx2.example.net"))
        mx1 = self.relay.sink("127.0.0.2", starttls=(cert, key))
        mx2 = self.relay.sink("127.0.0.3")
        self.relay.start()
        qid = self.send()
        self.relay.wait_for_log("deferred", qid=qid, timeout=30)
        self.no_mail(mx1)
        self.assertEqual(mx2.connections, 0)
        port = self.relay.smtp_port
        addr1, addr2 = "127.0.0.2:%d" % port, "127.0.0.3:%d" % port

        doc = self.ctl_json("hosts")
        hosts = {h["address"]: h for h in doc["hosts"]}
        self.assertEqual(hosts[addr1]["policy"], "dane")
        self.assertRegex(hosts[addr1]["refused"],
                         r"^4\.7\.5 validation-failure TLS handshake failed")
        self.assertRegex(hosts[addr1]["refused_at"], r"Z$")
        self.assertEqual(hosts[addr2]["host"], "mx2.example.net")
        self.assertEqual(hosts[addr2]["policy"], "dane")
        self.assertRegex(hosts[addr2]["refused"], r"^4\.7\.5 dnssec-invalid \S")
        # the keys that were there are all still there
        self.assertLessEqual({"host", "address", "state", "failures", "down_until", "since",
                              "last_attempt", "last_error", "probing"}, set(hosts[addr1]))

        out = self.ctl("hosts").stdout
        self.assertRegex(out, r"(?m)^HOST\s+ADDRESS\s+STATE\s+FAILURES\s+DOWN UNTIL\s+LAST ERROR$")
        self.assertRegex(out, r"(?m)^HOST\s+ADDRESS\s+TLS POLICY\s+REFUSED$")
        self.assertRegex(out, r"(?m)^mx1\.example\.net\s+%s\s+dane\s+4\.7\.5 validation-failure "
                              r"TLS handshake failed" % re.escape(addr1))
        self.assertRegex(out, r"(?m)^mx2\.example\.net\s+%s\s+dane\s+4\.7\.5 dnssec-invalid "
                         % re.escape(addr2))

        show = self.ctl_json("queue", "show", qid)
        self.assertEqual(show["recipients"][0]["state"], "deferred")
        tls = {(t["host"], t["ip"]): t for t in show["tls"]}
        self.assertEqual(set(tls), {("mx1.example.net", "127.0.0.2"),
                                    ("mx2.example.net", "127.0.0.3")})
        self.assertEqual(tls["mx1.example.net", "127.0.0.2"]["policy"], "dane")
        self.assertRegex(tls["mx1.example.net", "127.0.0.2"]["refused"],
                         r"^4\.7\.5 validation-failure ")
        self.assertRegex(tls["mx2.example.net", "127.0.0.3"]["refused"],
                         r"^4\.7\.5 dnssec-invalid ")
        self.assertRegex(tls["mx2.example.net", "127.0.0.3"]["time"], r"Z$")
        text = self.ctl("queue", "show", qid).stdout
        self.assertRegex(text, r'(?m)^tls\s+\S+Z  mx1\.example\.net 127\.0\.0\.2 policy=dane '
                               r'refused="4\.7\.5 validation-failure TLS handshake failed')
        self.assertRegex(text, r'(?m)^tls\s+\S+Z  mx2\.example\.net 127\.0\.0\.3 policy=dane '
                               r'refused="4\.7\.5 dnssec-invalid ')

    def test_a_host_that_passes_dane_shows_the_policy_and_no_refusal(self):
        self.make()
        cert, key = self.self_signed("nobody.invalid")
        self.relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        self.relay.dns.set_tlsa(self.tlsa_name("mx1.example.net"),
                                [(3, 0, 1, sha256_cert(cert))])
        mx1 = self.relay.sink("127.0.0.2", starttls=(cert, key))
        # a delivered message leaves the queue: a second recipient the sink
        # defers keeps this one there for queue show
        mx1.script(rcpt={"later@example.net": "450 4.2.0 try later"})
        self.relay.start()
        rcpts = ["bob@example.net", "later@example.net"]
        msg = make_message(SENDER, rcpts[0], "two", "Two.\r\n")
        qid = submit(self.relay, SENDER, rcpts, msg)
        self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.relay.wait_for_log("deferred", qid=qid, timeout=30)
        [h] = [h for h in self.ctl_json("hosts")["hosts"] if h["host"] == "mx1.example.net"]
        self.assertEqual((h["policy"], h["refused"], h["refused_at"]), ("dane", None, None))
        [t] = self.ctl_json("queue", "show", qid)["tls"]
        self.assertEqual((t["host"], t["ip"], t["policy"], t["refused"]),
                         ("mx1.example.net", "127.0.0.2", "dane", None))
        self.assertRegex(self.ctl("queue", "show", qid).stdout,
                         r"(?m)^tls\s+\S+Z  mx1\.example\.net 127\.0\.0\.2 policy=dane$")


class DeliveredSaysHowItWasSecured(PolicyCase):

    def test_none_opportunistic_and_dane_with_the_tls_version(self):
        self.make()
        dns = self.relay.dns
        cert, key = self.self_signed("nobody.invalid")
        dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        dns.set_tlsa(self.tlsa_name("mx1.example.net"), [(3, 0, 1, sha256_cert(cert))])
        dns.set_mx_ips("plain.example", [(10, "127.0.0.5")])     # not signed
        dns.set_mx_ips("opp.example", [(10, "127.0.0.6")])       # not signed
        self.relay.sink("127.0.0.2", starttls=(cert, key))
        self.relay.sink("127.0.0.5")                              # no STARTTLS
        self.relay.sink("127.0.0.6", starttls=(cert, key))
        self.relay.start()
        want = {"bob@plain.example": ("none", None),
                "bob@opp.example": ("opportunistic", "TLS"),
                "bob@example.net": ("dane", "TLS")}
        for rcpt, (tls, version) in want.items():
            qid = self.send(rcpt=rcpt, subject=tls)
            line = self.relay.wait_for_log("delivered", qid=qid, timeout=30)
            self.assertEqual(line["tls"], tls, line)
            if version is None:
                self.assertNotIn("tls_version", line)
            else:
                self.assertRegex(line["tls_version"], r"^TLSv1\.[23]$")
                # the version the TLS session reported
                ev = self.relay.wait_for_log("deliver_tls", qid=qid)
                self.assertEqual(line["tls_version"], ev["version"])

    def test_verify(self):
        ca = TestCA()
        self.make(secure=False, deliver={"tls": "verify", "ca_file": ca.cert})
        cert, key = ca.issue("mx1.example.net", ips=["127.0.0.2"])
        self.relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        self.relay.sink("127.0.0.2", starttls=(cert, key))
        self.relay.start()
        qid = self.send()
        line = self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertEqual(line["tls"], "verify")
        self.assertRegex(line["tls_version"], r"^TLSv1\.[23]$")
        [h] = self.ctl_json("hosts")["hosts"]
        self.assertEqual((h["policy"], h["refused"]), ("verify", None))


if __name__ == "__main__":
    unittest.main()
