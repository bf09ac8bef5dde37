"""relayctl dkim --check: each selector's TXT record looked up through
relayd's own resolver (the tests' DNS server) and compared with the key:
ok, mismatch, missing, error; exit 0 only when all are ok."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))
sys.path.insert(0, os.path.dirname(__file__))

from test_dkim import DkimCase, make_key, txt_record  # noqa: E402


class DkimCheckTest(DkimCase):

    def test_all_published_is_ok(self):
        relay = self.make(start=False)
        # the published RSA record split into strings, with whitespace in p=
        name = "s2026r._domainkey.example.org"
        rec = self.records[name]
        head, p = rec.split("p=", 1)
        relay.dns._set(name, 16, [[head + "p=" + p[:100], " " + p[100:200] + "\t",
                                   p[200:]]], None)
        relay.start()
        r = relay.relayctl("dkim", "--check")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.count("    check: ok\n"), 2, r.stdout)
        self.assertIn("s2026e._domainkey.example.org. IN TXT", r.stdout)
        doc = relay.relayctl("dkim", "--check", "--json", json=True)
        self.assertEqual([k["check"] for k in doc["keys"]], ["ok", "ok"])
        # without --check nothing changes: no "check" member
        doc = relay.relayctl("dkim", "--json", json=True)
        self.assertNotIn("check", doc["keys"][0])

    def test_mismatch_missing_error(self):
        relay = self.make(start=False, extra_keys=(("example.com", "gone", "ed25519"),
                                                   ("example.net", "broken", "ed25519")))
        other = make_key("example.org.other", "ed25519")
        relay.dns.set_txt("s2026e._domainkey.example.org", txt_record(other, "ed25519"))
        relay.dns.set_nxdomain("gone._domainkey.example.com")
        relay.dns.set_servfail("broken._domainkey.example.net")
        relay.start()
        r = relay.relayctl("dkim", "--check")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        checks = [l.split(": ")[1] for l in r.stdout.splitlines() if l.startswith("    check: ")]
        self.assertEqual(checks, ["ok", "mismatch", "missing", "error"], r.stdout)
        r = relay.relayctl("dkim", "--check", "--json")
        self.assertEqual(r.returncode, 1, r.stderr)
        import json
        doc = json.loads(r.stdout)
        self.assertEqual([(k["selector"], k["check"]) for k in doc["keys"]],
                         [("s2026r", "ok"), ("s2026e", "mismatch"), ("gone", "missing"),
                          ("broken", "error")])
        self.assertEqual(doc["keys"][1]["record"], "s2026e._domainkey.example.org")

    def test_nodata_is_missing(self):
        relay = self.make(algs=("ed",), start=False)
        relay.dns.clear("s2026e._domainkey.example.org")
        relay.dns.set_a("s2026e._domainkey.example.org", ["127.0.0.9"])
        relay.start()
        r = relay.relayctl("dkim", "--check")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("    check: missing\n", r.stdout)

    def test_client_gone_cancels(self):
        """A client that leaves before the answer: its lookups are cancelled
        and relayd carries on (a later check with the same slow name works)."""
        import socket
        relay = self.make(algs=("ed",), start=False)
        relay.dns.set_drop("s2026e._domainkey.example.org")
        relay.start()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(relay.control_socket)
        s.sendall(b"dkim\0--check\0\0")
        relay.dns.wait_for_query("s2026e._domainkey.example.org", "TXT")
        s.close()
        r = relay.relayctl("dkim", "--check", timeout=60)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("    check: error\n", r.stdout)
        self.assertEqual(relay.relayctl("stats").returncode, 0)

    def test_option_only_for_dkim(self):
        relay = self.make(algs=("ed",))
        r = relay.relayctl("queue", "list", "--check")
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
