"""test_relayctl_outage.py - the admin's outage drill with relayctl (issue #6),
and what holding mail means for its lifetime.

The drill: a customer's server (example.net, MX 127.0.0.2) goes away; mail
queues up deferred; the customer says "we are back, on another line" (a
stand-in SinkMX on 127.0.0.7); the admin sets a run-time route, flushes the
domain, and the backlog is delivered there, logged event=delivered with the
stand-in as host.  The route survives a restart of relayd.

Held mail: relayd follows Postfix.  A held message is never attempted and
never expires while held, however old it gets (also across a restart); once
released, max_queue_age is counted from its ARRIVAL, so mail held past its
lifetime expires at release (4.4.7, event=expired, one report to the sender)
instead of being attempted.
"""

import json
import unittest

from client import make_message, submit
from relay import Relay
from smtpsink import SinkMX

SENDER = "alice@example.org"


class Case(unittest.TestCase):

    def make(self, router=None):
        cfg = {"retry_intervals": ["1h"], "host_backoff": ["1h", "1h"], "delay_warning": "0"}
        cfg.update(router or {})
        self.relay = Relay.for_test(self, router=cfg)
        self.relay.dns.set_mx_ips("example.org", [(10, "127.0.0.4")])
        self.home = self.relay.sink("127.0.0.4")                  # the sender's MX (reports)
        self.relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        self.customer = self.relay.sink("127.0.0.2", start=False)  # the server that went away
        return self.relay

    def send(self, n, prefix="user"):
        qids = []
        for i in range(n):
            rcpt = "%s%d@example.net" % (prefix, i)
            qids.append(submit(self.relay, SENDER, [rcpt],
                               make_message(SENDER, rcpt, "%s %d" % (prefix, i), "Hello.\r\n")))
        return qids

    def ctl_json(self, *args):
        r = self.relay.relayctl(*(args + ("--json",)))
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def standin(self, ip="127.0.0.7"):
        s = SinkMX(ip, self.relay.smtp_port)
        self.addCleanup(s.stop)
        return s


class OutageDrill(Case):

    def test_route_set_and_flush_send_the_backlog_to_the_standin(self):
        relay = self.make()
        relay.start()
        qids = self.send(3)
        for qid in qids:
            relay.wait_for_log("deferred", qid=qid)

        # What the admin sees: the host and the destination are down, mail waits.
        [host] = self.ctl_json("hosts")["hosts"]
        self.assertEqual((host["host"], host["state"]), ("mx1.example.net", "down"))
        top = self.ctl_json("stats")["queue"]["top_destinations"]
        self.assertEqual(top, [{"domain": "example.net", "recipients": 3, "state": "down"}])
        listed = self.ctl_json("queue", "list", "--domain", "example.net")["messages"]
        self.assertEqual([m["qid"] for m in listed], qids)
        self.assertEqual({m["recipients"][0]["state"] for m in listed}, {"deferred"})

        # The customer is back on another address: route there, flush the domain.
        standin = self.standin()
        target = "127.0.0.7:%d" % relay.smtp_port
        r = relay.relayctl("route", "set", "example.net", target)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = relay.relayctl("queue", "flush", "--domain", "example.net")
        self.assertEqual(r.returncode, 0, r.stderr)

        got = standin.wait_for_messages(3, timeout=30)
        self.assertEqual(sorted(m.rcpt_addrs[0] for m in got),
                         ["user0@example.net", "user1@example.net", "user2@example.net"])
        for qid in qids:
            line = relay.wait_for_log("delivered", qid=qid)
            self.assertEqual((line["host"], line["ip"]), ("127.0.0.7", "127.0.0.7"))
        self.assertEqual(self.customer.connections, 0)
        self.assertEqual(self.ctl_json("queue", "list")["count"], 0)

        # The old line is fixed: clear the route, mail goes by DNS again.
        self.assertEqual(relay.relayctl("route", "clear", "example.net").returncode, 0)
        self.customer.up()
        r = relay.relayctl("hosts", "reset", "mx1.example.net")
        self.assertEqual(r.returncode, 0, r.stderr)
        [qid] = self.send(1, prefix="after")
        self.customer.wait_for_messages(1, timeout=30)
        self.assertEqual(relay.wait_for_log("delivered", qid=qid)["ip"], "127.0.0.2")
        self.assertEqual(len(standin.messages), 3)

    def test_route_survives_a_restart(self):
        relay = self.make()
        relay.start()
        standin = self.standin()
        r = relay.relayctl("route", "set", "example.net", "127.0.0.7:%d" % relay.smtp_port)
        self.assertEqual(r.returncode, 0, r.stderr)
        relay.restart()
        [qid] = self.send(1)
        standin.wait_for_messages(1, timeout=30)
        self.assertEqual(relay.wait_for_log("delivered", qid=qid)["host"], "127.0.0.7")
        self.assertEqual(self.customer.connections, 0)


class HeldLifetime(Case):

    def test_held_mail_expires_only_when_released(self):
        relay = self.make(router={"max_queue_age": "3s"})
        relay.start()
        held, control = self.send(2)
        for qid in (held, control):
            relay.wait_for_log("deferred", qid=qid)
        r = relay.relayctl("queue", "hold", held)
        self.assertEqual(r.returncode, 0, r.stderr)
        # The control message (younger than the held one) expires at 3s...
        line = relay.wait_for_log("expired", qid=control, timeout=30)
        self.assertEqual(line["status"], "4.4.7")
        # ...the held one is past its lifetime too, and still there, held.
        self.assertEqual(relay.count_log("expired", qid=held), 0)
        [m] = self.ctl_json("queue", "list", "--domain", "example.net")["messages"]
        self.assertEqual((m["qid"], m["held"], m["recipients"][0]["state"]), (held, True, "held"))
        self.assertGreaterEqual(m["age_s"], 3)

        # A restart keeps it held and unexpired.
        relay.restart()
        [m] = self.ctl_json("queue", "list", "--held")["messages"]
        self.assertEqual((m["qid"], m["held"]), (held, True))
        # The scheduler has run over the reloaded queue (everything read back is
        # due at once) by the time a message submitted after the restart has
        # been attempted: a witness to another domain, delivered.
        relay.dns.set_mx_ips("witness.test", [(10, "127.0.0.5")])
        witness_mx = relay.sink("127.0.0.5")
        rcpt = "w@witness.test"
        witness = submit(relay, SENDER, [rcpt], make_message(SENDER, rcpt, "witness", "Hi.\r\n"))
        witness_mx.wait_for_messages(1, timeout=30)
        relay.wait_for_log("delivered", qid=witness, timeout=30)
        self.assertEqual(relay.count_log("expired", qid=held), 0)

        # Released: counted from arrival, it is past max_queue_age -> expires, is reported.
        mark = relay.log_mark()
        self.customer.up()                # even a reachable server gets no attempt
        r = relay.relayctl("queue", "release", held)
        self.assertEqual(r.returncode, 0, r.stderr)
        line = relay.wait_for_log("expired", qid=held, since=mark, timeout=30)
        self.assertEqual(line["status"], "4.4.7")
        relay.wait_for_log("ndr", qid=held, since=mark, timeout=30)
        reports = self.home.wait_for_messages(2, timeout=30)       # control's and held's
        self.assertEqual({m.mail_from for m in reports}, {""})
        self.assertEqual(self.customer.connections, 0)
        self.assertEqual(relay.count_log("delivered", qid=held), 0)

    def test_released_in_time_is_attempted_at_once(self):
        relay = self.make(router={"max_queue_age": "1h"})
        self.customer.up()
        self.customer.script(rcpt="451 4.3.0 not now")     # up, but defers: next try in 1h
        relay.start()
        [qid] = self.send(1)
        relay.wait_for_log("deferred", qid=qid)
        self.assertEqual(relay.relayctl("queue", "hold", qid).returncode, 0)
        self.customer.reset_script()
        self.assertEqual(relay.relayctl("queue", "release", qid).returncode, 0)
        self.customer.wait_for_messages(1, timeout=30)
        relay.wait_for_log("delivered", qid=qid)


if __name__ == "__main__":
    unittest.main()
