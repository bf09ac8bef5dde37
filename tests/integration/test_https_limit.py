"""test_https_limit.py - relayd's HTTPS client holds at most 8 connections
at once (HTTP_MAX_CONNS, http/http.h; daemon/DESCRIPTORS.md): MTA-STS
fetches one policy per domain, and a burst of new domains once had as many
connections, and descriptors, as domains.

Real parts: the real relayd; the loopback DNS server with 20 domains
publishing an MTA-STS TXT record and mta-sts.DOMAIN's address; a real HTTPS
server (tests/harness/httpsserver.py) on port 443 of the test's own
loopback address, which holds every policy request 1.5 s before it answers
and counts the requests it is answering at once; sinks as the MXes.  One
message to a recipient in each of the 20 domains makes relayd fetch 20
policies together: the server never answers more than 8 at once, every
policy is fetched (the others waited in curl, none failed), and a message
submitted meanwhile is accepted and delivered.  Without the cap the server
answered 20 at once.  Binding 443 needs root, as in test_mta_sts.
"""

import os
import unittest

from client import make_message, submit
from httpsserver import HTTPSServer, fixed_port_ip
from relay import SLOW, Relay, TestCA

SENDER = "alice@example.org"
STS_IP = fixed_port_ip()
POLICY_PATH = "/.well-known/mta-sts.txt"
CAP = 8
DOMAINS = ["d%d.test" % i for i in range(20)]


@unittest.skipUnless(os.geteuid() == 0, "binding port 443 needs root")
class HttpsLimitTest(unittest.TestCase):

    def policy_server(self, relay, delay):
        """The HTTPS server of DOMAINS' policies, each answered after delay;
        the DNS records pointing at it, and the domains' MX 127.0.0.2."""
        certs = os.path.join(relay.tmpdir, "sts-certs")
        os.makedirs(certs, exist_ok=True)
        ca = TestCA(directory=os.path.join(certs, "ca"))
        relay.update_config(deliver={"ca_file": ca.cert})
        cert, key = ca.issue("mta-sts.d0.test", dns=["mta-sts.%s" % d for d in DOMAINS])
        https = HTTPSServer(STS_IP, 443, cert, key).start()
        self.addCleanup(https.stop)
        for d in DOMAINS:
            relay.dns.set_mx_ips(d, [(10, "127.0.0.2")])
            relay.dns.set_txt("_mta-sts.%s" % d, ["v=STSv1; id=1;"])
            relay.dns.set_a("mta-sts.%s" % d, [STS_IP])
            https.route("mta-sts.%s" % d, POLICY_PATH, delay=delay,
                        body="version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n")
        return https

    def test_policy_fetches_share_eight_connections(self):
        relay = Relay.for_test(self)
        https = self.policy_server(relay, 1.5)
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.3")])
        sink = relay.sink("127.0.0.2")
        plain = relay.sink("127.0.0.3")
        relay.start()

        rcpts = ["bob@%s" % d for d in DOMAINS]
        submit(relay, SENDER, rcpts, make_message(SENDER, rcpts, "many", "To each domain.\r\n"))
        # while the fetches are held, relayd takes and delivers other mail
        https.wait_for_request(n=1, timeout=30)
        qid = submit(relay, SENDER, ["carol@example.net"],
                     make_message(SENDER, "carol@example.net", "meanwhile", "Hello.\r\n"))
        plain.wait_for_messages(1, timeout=30)
        relay.wait_for_log("delivered", qid=qid, timeout=30)

        for d in DOMAINS:
            relay.wait_for_log("mtasts_policy_fetched", domain=d, timeout=60)
        self.assertEqual(relay.count_log("mtasts_fetch_failed"), 0)
        self.assertEqual(https.count(path=POLICY_PATH), len(DOMAINS))
        self.assertLessEqual(https.max_inflight, CAP)
        self.assertGreater(https.max_inflight, 1)
        sink.wait_for_messages(1, timeout=60)

    def test_waiting_fetches_get_their_whole_timeout(self):
        # 20 policies, each answered after HOLD, within a timeout of 2 x
        # HOLD: three rounds of at most 8 fetches.  A fetch waiting for a
        # connection has its whole timeout once it has one: every policy is
        # fetched.  When the waiting ones waited in curl, their timeout ran
        # meanwhile and those of the later rounds failed untried
        # ("Failed to resolve host ... with timeout after 0 ms").
        hold = 2.0 * SLOW
        relay = Relay.for_test(self, router={"mta_sts_timeout": "%dms" % int(2000 * hold)})
        https = self.policy_server(relay, hold)
        sink = relay.sink("127.0.0.2")
        relay.start()

        rcpts = ["bob@%s" % d for d in DOMAINS]
        submit(relay, SENDER, rcpts, make_message(SENDER, rcpts, "many", "To each domain.\r\n"))
        for d in DOMAINS:
            relay.wait_for_log("mtasts_policy_fetched", domain=d, timeout=60 * SLOW)
        self.assertEqual(relay.count_log("mtasts_fetch_failed"), 0)
        self.assertEqual(https.count(path=POLICY_PATH), len(DOMAINS))
        self.assertLessEqual(https.max_inflight, CAP)
        sink.wait_for_messages(1, timeout=60)


if __name__ == "__main__":
    unittest.main()
