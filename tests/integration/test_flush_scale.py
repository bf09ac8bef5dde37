"""test_flush_scale.py - flushing a large deferred backlog only changes state:
relayctl answers at once, and what the flush sets off is bounded by the
destinations, not by the number of messages.

2,000 messages to one destination (d0.bench.test, one exchanger on
127.0.0.2 that refuses connections) are written straight into the queue
directory in the queue's own format (the build's tests/bench_control, the
generator of tests/bench/bench_control.py) before relayd starts; relayd finds
the destination down and they all wait on it, recorded with 4.4.1.  What is
proved, from relayd's log and the DNS server's query log:

  * `queue flush --all` and `--domain` return with the number of messages,
    and each costs ONE forced probe: one connection attempt to the dead
    exchanger, one MX query, and one deferral recorded (the probe's own
    message) - the other 1,999 keep waiting together, untouched;
  * once the exchanger is back, one flush releases the whole backlog through
    the destination's ramp, every message is delivered, and the domain is
    resolved a handful of times, not 2,000: concurrent jobs share one lookup
    and the resolver keeps the answer for its TTL (60 s here).
"""

import json
import os
import subprocess
import time
import unittest

from dnsserver import DNSServer
from relay import Relay, relayd_bin

N = 2000
DOMAIN = "d0.bench.test"            # bench_control's first domain (-D 1: every message)
MX_IP = "127.0.0.2"


def generator():
    return os.path.join(os.path.dirname(os.path.abspath(relayd_bin())), "tests", "bench_control")


class FlushScale(unittest.TestCase):

    def setUp(self):
        # Records and negative answers with a TTL, so that the resolver may keep them.
        self.dns = DNSServer(ttl=60).start()
        self.addCleanup(self.dns.stop)
        self.relay = Relay.for_test(self, dns=self.dns,
                                    router={"retry_intervals": ["1h"],
                                            "host_backoff": ["1h", "1h"],
                                            "delay_warning": "0", "max_queue_age": "5d"})
        self.dns.set_mx_ips("example.org", [(10, "127.0.0.4")])
        self.dns.set_mx_ips(DOMAIN, [(10, MX_IP)])
        self.mx = self.relay.sink(MX_IP, start=False)          # refused until up()

    def ctl(self, *args):
        r = self.relay.relayctl(*args, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r.stdout

    def recipients(self):
        return json.loads(self.ctl("stats", "--json"))["queue"]["recipients"]

    def settle(self, timeout=120):
        """Wait until nothing is pending or active: every recipient waits."""
        deadline = time.time() + timeout
        while True:
            rc = self.recipients()
            if rc["pending"] == 0 and rc["active"] == 0 and rc["deferred"] == N:
                return rc
            if time.time() > deadline:
                self.fail("the queue did not settle: %r" % rc)
            time.sleep(0.2)

    def fill_queue(self):
        gen = generator()
        self.assertTrue(os.access(gen, os.X_OK), "%s is not built" % gen)
        r = subprocess.run([gen, "-d", self.relay.queue_dir, "-n", str(N), "-r", "1",
                            "-D", "1", "-c", "256"], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)

    def flush_once(self, *args, want):
        """One flush while the exchanger is dead: what it cost."""
        relay = self.relay
        mark = relay.log_mark()
        self.dns.clear_queries()
        self.assertEqual(self.ctl("queue", "flush", *args), want)
        relay.wait_for_count("host_failed", 1, since=mark, timeout=30)
        # Everything the flush set off has been through the scheduler once
        # nothing is pending (made due, not yet dispatched) or active and every
        # recipient waits again: the next attempt is the probe in an hour.
        self.settle()
        self.assertEqual(relay.count_log("host_failed", since=mark), 1,
                         "one forced probe, not one attempt per message")
        self.assertEqual(relay.count_log("deferred", since=mark), 1,
                         "the waiting backlog was re-recorded")
        self.assertEqual(self.dns.count(DOMAIN, "MX"), 1)
        self.assertEqual(relay.count_log("destination_down", since=mark), 0)

    def test_flushing_a_large_backlog_costs_one_probe_then_delivers_it(self):
        relay = self.relay
        self.fill_queue()
        relay.start(timeout=60)
        self.settle()
        down = relay.wait_for_log("destination_down", dest=DOMAIN)
        self.assertEqual(relay.count_log("host_failed"), 1)     # found out once, at start
        self.assertGreaterEqual(int(down["waiting"]), 1)

        self.flush_once("--all", want="flushed %d messages\n" % N)
        self.flush_once("--domain", DOMAIN, want="flushed %d messages\n" % N)
        self.assertEqual(self.mx.connections, 0)

        # The exchanger is back: one flush and the backlog goes out, paced.
        mark = relay.log_mark()
        self.dns.clear_queries()
        self.mx.up()
        doc = json.loads(self.ctl("queue", "flush", "--all", "--json"))
        self.assertEqual((doc["action"], doc["count"], len(set(doc["qids"])), doc["skipped"]),
                         ("flush", N, N, []))
        up = relay.wait_for_log("destination_up", dest=DOMAIN, since=mark, timeout=30)
        self.assertGreaterEqual(int(up["backlog"]), 1)
        delivered = relay.wait_for_count("delivered", N, since=mark, timeout=240)
        self.assertEqual(len({d["qid"] for d in delivered}), N)
        self.assertEqual(len(self.mx.wait_for_messages(N, timeout=60)), N)
        self.assertEqual(relay.count_log("host_failed", since=mark), 0)
        self.assertEqual(relay.count_log("bounced"), 0)
        # 2,000 jobs; the answer is shared and kept for 60 s
        self.assertLessEqual(self.dns.count(DOMAIN, "MX"), 3, self.dns.queries[:20])
        self.assertEqual(json.loads(self.ctl("queue", "list", "--json"))["count"], 0)


if __name__ == "__main__":
    unittest.main()
