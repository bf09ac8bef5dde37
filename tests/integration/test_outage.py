"""test_outage.py - host health and destinations that wait together (issue #5).

The real relayd delivers to sink MXes on 127.0.0.2/.3 that are taken down
(connections refused) and brought back while mail queues up.  What is proved:
a dead host is not hammered (connection attempts to it stay bounded however
many messages are queued, counted from relayd's own log), the next exchanger
takes the traffic, a destination whose every exchanger is down waits for ONE
probe per host backoff instead of each message's own (long) retry timer, and
its whole backlog goes out as soon as a probe succeeds — also across a
restart in the middle of the outage.  Lifetimes: expiry with a short
max_queue_age, and exactly one delay warning.
"""

import json
import os
import unittest

from client import make_message, submit
from relay import Relay, wait_past

SENDER = "alice@example.org"


class OutageCase(unittest.TestCase):

    def make(self, router=None, **kw):
        cfg = {"retry_intervals": ["1h"], "host_backoff": ["1s", "2s"]}
        cfg.update(router or {})
        self.relay = Relay.for_test(self, router=cfg, **kw)
        self.relay.dns.set_mx_ips("example.org", [(10, "127.0.0.4")])
        self.home = self.relay.sink("127.0.0.4")       # the sender's MX (reports)
        self.relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2"), (20, "127.0.0.3")])
        self.primary = self.relay.sink("127.0.0.2", start=False)
        self.secondary = self.relay.sink("127.0.0.3", start=False)
        return self.relay

    def send(self, n, prefix="user"):
        qids = []
        for i in range(n):
            rcpt = "%s%d@example.net" % (prefix, i)
            msg = make_message(SENDER, rcpt, "burst %d" % i, "Body %d.\r\n" % i)
            qids.append(submit(self.relay, SENDER, [rcpt], msg))
        return qids

    def attempts_at(self, ip, since=0):
        """Connection attempts relayd made to ip that failed (its own log)."""
        return self.relay.count_log("host_failed", since=since, ip=ip)


class HostHealth(OutageCase):

    def test_dead_primary_is_skipped_for_a_burst(self):
        relay = self.make(router={"retry_intervals": ["1s"], "host_backoff": ["1m", "1h"]})
        self.secondary.up()
        relay.start()
        qids = self.send(25)
        self.secondary.wait_for_messages(25, timeout=60)
        relay.wait_for_count("delivered", 25, timeout=30)
        for line in relay.find_log("delivered"):
            self.assertEqual(line["ip"], "127.0.0.3")
        # the dead primary was tried once, then skipped until its backoff ends
        self.assertEqual(self.attempts_at("127.0.0.2"), 1)
        down = relay.wait_for_log("host_down", ip="127.0.0.2")
        self.assertEqual(down["failures"], "1")
        self.assertEqual(down["backoff"], "1m")
        self.assertEqual(relay.count_log("deferred"), 0)
        self.assertEqual(len(set(qids)), 25)

    def test_primary_comes_back_after_its_backoff(self):
        relay = self.make(router={"retry_intervals": ["1s"], "host_backoff": ["1s", "1s"]})
        self.secondary.up()
        relay.start()
        self.send(1, prefix="early")
        self.secondary.wait_for_messages(1)
        down = relay.wait_for_log("host_down", ip="127.0.0.2")
        self.primary.up()
        wait_past(down["until"])                          # its 1s backoff is over
        qid = self.send(1, prefix="late")[0]
        self.primary.wait_for_messages(1, timeout=30)
        self.assertEqual(relay.wait_for_log("delivered", qid=qid)["ip"], "127.0.0.2")
        relay.wait_for_log("host_up", ip="127.0.0.2")


class DestinationOutage(OutageCase):

    def wait_all_waiting(self, qids):
        for q in qids:
            self.relay.wait_for_log("deferred", qid=q, status="4.4.1", timeout=30)

    def test_backlog_goes_out_at_once_when_a_probe_succeeds(self):
        relay = self.make()
        relay.start()
        qids = self.send(20)
        self.wait_all_waiting(qids)
        line = relay.find_log("deferred", qid=qids[-1])[0]
        self.assertEqual(line["waiting"], "example.net")
        relay.wait_for_log("destination_down", dest="example.net")
        # probes go out on the host backoff (1s, 2s, 2s ...), not per message:
        # three probes later (each tries both hosts, once), the 20 messages
        # still cost only those
        mark = relay.log_mark()
        relay.wait_for_count("host_failed", 6, since=mark, timeout=30)
        probes = [f["ip"] for f in relay.find_log("host_failed", since=mark)][:6]
        self.assertEqual(probes, ["127.0.0.2", "127.0.0.3"] * 3)
        failed = relay.count_log("host_failed")
        self.assertLess(failed, 20, "a connection attempt per message: not waiting together")
        self.assertEqual(self.primary.connections + self.secondary.connections, 0)

        self.secondary.up()
        # retry_intervals is 1h: only the destination's probe can bring these out
        self.secondary.wait_for_messages(20, timeout=30)
        delivered = relay.wait_for_count("delivered", 20, timeout=30)
        self.assertEqual(sorted(d["qid"] for d in delivered), sorted(qids))
        up = relay.wait_for_log("destination_up", dest="example.net")
        self.assertGreaterEqual(int(up["backlog"]), 1)
        self.assertEqual(relay.count_log("bounced"), 0)

    def test_restart_in_the_middle_of_an_outage(self):
        relay = self.make()
        relay.start()
        qids = self.send(6)
        self.wait_all_waiting(qids)
        mark = relay.log_mark()
        relay.restart()
        # after the restart the destination is probed again: one attempt per
        # host finds it down, and the six messages wait together again
        down = relay.wait_for_log("destination_down", dest="example.net", since=mark, timeout=30)
        # the scan hands messages over while the first is tried: the count
        # at the moment it goes down may be fewer than six; all six wait
        for q in qids:
            relay.wait_for_log("deferred", qid=q, status="4.4.1", waiting="example.net",
                               since=mark, timeout=30)
        self.assertLessEqual(int(down["waiting"]), 6)
        before = [f for f in relay.find_log("host_failed", since=mark) if f["ts"] <= down["ts"]]
        self.assertEqual(sorted(f["ip"] for f in before), ["127.0.0.2", "127.0.0.3"])
        self.primary.up()
        self.primary.wait_for_messages(6, timeout=30)
        delivered = relay.wait_for_count("delivered", 6, since=mark, timeout=30)
        self.assertEqual(sorted(d["qid"] for d in delivered), sorted(qids))
        self.assertEqual(self.secondary.connections, 0)

    def test_restart_does_not_rewrite_waiting_messages(self):
        # Six messages wait for example.net (its hosts refuse; the host
        # backoff is an hour, so only a restart or a flush tries them) and
        # got their one delay warning.  The restart probes the destination,
        # finds it down, and every recipient waits again: those the probe did
        # not try would get a record that changes nothing they carry, so
        # their files stay as they were, byte for byte, and relayctl shows
        # them as before.  Delivery once the hosts are back, and the delay
        # warnings (one per message, none again), are as without a restart.
        relay = self.make(router={"host_backoff": ["1h", "1h"], "delay_warning": "1s"})
        relay.start()
        qids = self.send(6)
        self.wait_all_waiting(qids)
        for q in qids:
            relay.wait_for_log("ndr", qid=q, reason="delayed", timeout=30)
        self.home.wait_for_messages(6, timeout=30)
        shown = {q: self.shown(q) for q in qids}
        tried = {f["qid"] for f in relay.find_log("host_failed")}
        relay.stop()                     # every record issued is in its file now
        files = {q: self.msg_file(q) for q in qids}

        mark = relay.log_mark()
        relay.start()
        relay.wait_for_log("destination_down", dest="example.net", since=mark, timeout=30)
        for q in qids:
            relay.wait_for_log("deferred", qid=q, status="4.4.1", waiting="example.net",
                               since=mark, timeout=30)
        again = {q: self.shown(q) for q in qids}   # waits for the records issued so far
        probed = {f["qid"] for f in relay.find_log("host_failed", since=mark)}
        self.assertTrue(probed, "the restart probed nothing")
        for q in probed:                 # an attempt: recorded
            self.assertEqual(again[q]["attempts"], shown[q]["attempts"] + 1)
            self.assertGreater(len(self.msg_file(q)), len(files[q]))
        idle = [q for q in qids if q not in tried | probed]
        self.assertGreaterEqual(len(idle), 3, (tried, probed))
        for q in idle:
            self.assertEqual(self.msg_file(q), files[q], "message %s rewritten" % q)
            self.assertEqual(again[q], shown[q])

        self.primary.up()
        r = relay.relayctl("queue", "flush", "--all")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        delivered = relay.wait_for_count("delivered", 6, since=mark, timeout=30)
        self.assertEqual(sorted(d["qid"] for d in delivered), sorted(qids))
        self.assertEqual(relay.count_log("ndr", reason="delayed"), 6)
        self.assertEqual(relay.count_log("bounced"), 0)

    def test_restart_keeps_the_cause_of_a_wait(self):
        # Two recipients of one message (one per transaction) each tried the
        # down destination themselves: each carries why it is down ("...
        # (last: host: reply)").  The restart's probe takes one; the other
        # waits again without an attempt and keeps its own cause (what its
        # report would name), not the bare "all exchangers ... are down".
        relay = Relay.for_test(self)
        self.relay = relay
        relay.update_config(router=dict(retry_intervals=["1h"], host_backoff=["1h", "1h"],
                                        max_rcpts_per_txn=1))
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        relay.dns.set_mx_ips("example.org", [(10, "127.0.0.3")])
        relay.sink("127.0.0.2", start=False)
        relay.sink("127.0.0.3")
        relay.start()
        rcpts = ["carol@example.net", "dave@example.net"]
        q = submit(relay, SENDER, rcpts, make_message(SENDER, rcpts, "s", "B.\r\n"))
        relay.wait_for_log("destination_down", dest="example.net", timeout=30)
        mark = relay.log_mark()
        relay.relayctl("queue", "flush", q)
        relay.wait_for_count("deferred", 2, since=mark, timeout=30)
        before = self.replies(q)
        for reply in before.values():
            self.assertIn("(last: ", reply)
        relay.stop()
        mark = relay.log_mark()
        relay.start()
        relay.wait_for_count("deferred", 2, since=mark, timeout=30)
        self.assertEqual(relay.count_log("host_failed", since=mark), 1)
        self.assertEqual(self.replies(q), before)

    def replies(self, qid):
        r = self.relay.relayctl("queue", "show", qid, "--json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return {x["addr"]: x["last_reply"] for x in json.loads(r.stdout)["recipients"]}

    def shown(self, qid):
        """What relayctl queue show --json says of qid's recipient, without
        the time its destination's next probe is due (state "until")."""
        r = self.relay.relayctl("queue", "show", qid, "--json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        [rcpt] = json.loads(r.stdout)["recipients"]
        rcpt.pop("until")
        return rcpt

    def msg_file(self, qid):
        with open(os.path.join(self.relay.queue_dir, "msg", qid), "rb") as f:
            return f.read()

    def test_messages_arriving_during_an_outage_wait_too(self):
        relay = self.make(router={"host_backoff": ["30s", "1m"]})
        relay.start()
        first = self.send(1, prefix="first")
        self.wait_all_waiting(first)
        mark = relay.log_mark()
        later = self.send(10, prefix="later")
        self.wait_all_waiting(later)
        # both hosts are down for 30s: nobody connects for the late ones
        self.assertEqual(relay.count_log("host_failed", since=mark), 0)
        # the admin's flush ignores the backoff
        self.secondary.up()
        r = relay.relayctl("queue", "flush", "--all")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.secondary.wait_for_messages(11, timeout=30)


class Lifetime(OutageCase):

    def test_expired_after_max_queue_age(self):
        relay = self.make(router={"retry_intervals": ["1s"], "max_queue_age": "3s",
                                  "delay_warning": "0"})
        self.secondary.up()
        self.secondary.script(rcpt="451 4.7.1 greylisted, come back later")
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.3")])
        relay.start()
        [qid] = self.send(1)
        line = relay.wait_for_log("expired", qid=qid, timeout=30)
        self.assertEqual(line["status"], "4.4.7")
        self.assertIn("greylisted", line["reply"])
        ndr = relay.wait_for_log("ndr", qid=qid, timeout=30)
        self.assertEqual(ndr["reason"], "expired")
        reports = self.home.wait_for_messages(1, timeout=30)
        self.assertEqual(reports[0].mail_from, "")
        # gone from the queue: nothing can try it again; every attempt the
        # exchanger saw is one relayd recorded before it expired
        relay.wait_for_log("removed", qid=qid, timeout=30)
        rcpts = sum(1 for _, c in self.secondary.commands if c.upper().startswith("RCPT"))
        self.assertGreaterEqual(rcpts, 2)                 # retried until it expired
        self.assertEqual(rcpts, relay.count_log("deferred", qid=qid))
        lines = relay.log_lines()
        expired_at = next(i for i, d in enumerate(lines)
                          if d.get("event") == "expired" and d.get("qid") == qid)
        self.assertEqual(relay.count_log("deferred", since=expired_at, qid=qid), 0)
        self.assertEqual(relay.count_log("delivered", qid=qid), 0)

    def test_one_delay_warning_then_delivery(self):
        relay = self.make(router={"retry_intervals": ["1s"], "delay_warning": "2s",
                                  "max_queue_age": "1h"})
        self.secondary.up()
        self.secondary.script(rcpt="451 4.3.0 not now")
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.3")])
        relay.start()
        [qid] = self.send(1)
        ndr = relay.wait_for_log("ndr", qid=qid, reason="delayed", timeout=30)
        self.assertEqual(ndr["rcpt"], "user0@example.net")
        # several more retries, no second warning
        relay.wait_for_count("deferred", 5, qid=qid, timeout=30)
        self.assertEqual(relay.count_log("ndr", qid=qid), 1)
        self.secondary.reset_script()
        relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertEqual(relay.count_log("ndr", qid=qid), 1)
        warnings = [m for m in self.home.wait_for_messages(1, timeout=30) if m.mail_from == ""]
        self.assertEqual(len(warnings), 1)


if __name__ == "__main__":
    unittest.main()
