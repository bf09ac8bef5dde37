"""test_delivery.py - where mail goes and what the answers mean, end to end.

The real relayd takes messages over authenticated submission and delivers
them, through the loopback DNS server, to sink MXes on 127.0.0.2/.3/.4 that
share router.smtp_port.  Each test names the routing or outcome rule it
proves: MX preference order and fall-through, equal preferences spread,
implicit MX, DNS failures (NXDOMAIN, SERVFAIL then recovery, null MX, our own
hostname as best MX), configured routes, primary-only, a smarthost with AUTH
over TLS, and per-recipient outcomes (4xx retried, 5xx bounced, mixed replies
in one transaction, delivered recipients never sent again); a primary that
fails the host's way (421 greeting, no greeting, STARTTLS offered but failing
under "require" and "opportunistic") hands the message to the secondary and
never sees a MAIL; a delivered message leaves the queue.
"""

import os
import ssl
import threading
import time
import unittest
import warnings

from client import make_message, submit
from relay import Relay, test_cert

SENDER = "alice@example.org"


class DeliveryCase(unittest.TestCase):
    """A relay with its own DNS server; the sender's domain has an MX (.4)
    so that reports have somewhere to go."""

    def make(self, start=True, **overrides):
        self.relay = Relay.for_test(self, **overrides)
        self.relay.dns.set_mx_ips("example.org", [(10, "127.0.0.4")])
        self.home = self.relay.sink("127.0.0.4")
        if start:
            self.relay.start()
        return self.relay

    def send(self, rcpts, subject="hello", **kw):
        if isinstance(rcpts, str):
            rcpts = [rcpts]
        msg = make_message(SENDER, ", ".join(rcpts), subject, "Body of %s.\r\n" % subject)
        return submit(self.relay, SENDER, rcpts, msg, **kw)


class MXRouting(DeliveryCase):

    def test_lowest_preference_first(self):
        self.make(start=False)
        # mx1 (pref 20, .3) is listed before mx2 (pref 10, .2): order is by preference
        self.relay.dns.set_mx_ips("example.net", [(20, "127.0.0.3"), (10, "127.0.0.2")])
        best = self.relay.sink("127.0.0.2")
        other = self.relay.sink("127.0.0.3")
        self.relay.start()
        qid = self.send("bob@example.net")
        [m] = best.wait_for_messages(1)
        self.assertEqual(m.rcpt_addrs, ["bob@example.net"])
        self.assertEqual(m.mail_from, SENDER)
        line = self.relay.wait_for_log("delivered", qid=qid)
        self.assertEqual(line["rcpt"], "bob@example.net")
        self.assertEqual(line["ip"], "127.0.0.2")
        self.assertEqual(line["host"], "mx2.example.net")
        self.assertRegex(line["status"], r"^2\.")
        self.assertIn("queued as", line["reply"])     # the remote server's own words
        self.assertEqual(other.connections, 0)

    def test_primary_refuses_secondary_takes_it(self):
        self.make(start=False)
        self.relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2"), (20, "127.0.0.3")])
        self.relay.sink("127.0.0.2", start=False)          # nothing listens: refused
        second = self.relay.sink("127.0.0.3")
        self.relay.start()
        qid = self.send("bob@example.net")
        second.wait_for_messages(1)
        line = self.relay.wait_for_log("delivered", qid=qid)
        self.assertEqual(line["ip"], "127.0.0.3")
        failed = self.relay.find_log("host_failed", qid=qid)
        self.assertEqual([f["ip"] for f in failed], ["127.0.0.2"])
        self.relay.wait_for_log("host_down", ip="127.0.0.2")
        self.assertEqual(self.relay.count_log("deferred", qid=qid), 0)

    def test_equal_preferences_are_spread(self):
        self.make(start=False)
        self.relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2"), (10, "127.0.0.3")])
        a = self.relay.sink("127.0.0.2")
        b = self.relay.sink("127.0.0.3")
        self.relay.start()
        for i in range(16):
            self.send("user%d@example.net" % i, subject="m%d" % i)
        self.relay.wait_for_count("delivered", 16, timeout=30)
        # shuffled per lookup: all 16 on one host has probability 2^-15
        self.assertGreater(len(a.messages), 0)
        self.assertGreater(len(b.messages), 0)
        self.assertEqual(len(a.messages) + len(b.messages), 16)

    def test_implicit_mx_is_the_domain_itself(self):
        self.make(start=False)
        self.relay.dns.set_a("plain.example", ["127.0.0.2"])    # no MX records
        sink = self.relay.sink("127.0.0.2")
        self.relay.start()
        qid = self.send("bob@plain.example")
        sink.wait_for_messages(1)
        line = self.relay.wait_for_log("delivered", qid=qid)
        self.assertEqual(line["host"], "plain.example")

    def test_nxdomain_bounces_with_5_1_2(self):
        self.make()
        qid = self.send("bob@nowhere.example")
        line = self.relay.wait_for_log("bounced", qid=qid)
        self.assertEqual(line["status"], "5.1.2")
        self.assertEqual(line["rcpt"], "bob@nowhere.example")
        ndr = self.relay.wait_for_log("ndr", qid=qid)
        self.assertEqual(ndr["reason"], "failed")
        reports = self.home.wait_for_messages(1)
        self.assertEqual(reports[0].mail_from, "")
        self.assertEqual(reports[0].rcpt_addrs, [SENDER])

    def test_servfail_defers_then_recovers(self):
        self.make(start=False)
        self.relay.dns.set_servfail("flaky.example")
        sink = self.relay.sink("127.0.0.2")
        self.relay.start()
        qid = self.send("bob@flaky.example")
        line = self.relay.wait_for_log("deferred", qid=qid, timeout=30)
        self.assertEqual(line["status"], "4.4.3")
        self.assertEqual(sink.connections, 0)
        self.relay.dns.set_mx_ips("flaky.example", [(10, "127.0.0.2")])
        sink.wait_for_messages(1, timeout=30)
        self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertEqual(self.relay.count_log("bounced", qid=qid), 0)

    def test_null_mx_bounces_with_5_1_10(self):
        self.make()
        self.relay.dns.set_null_mx("nomail.example")
        qid = self.send("bob@nomail.example")
        line = self.relay.wait_for_log("bounced", qid=qid)
        self.assertEqual(line["status"], "5.1.10")
        self.relay.wait_for_log("ndr", qid=qid)

    def test_own_hostname_as_best_mx_bounces_with_5_4_6(self):
        self.make(start=False)
        self.relay.dns.set_mx("loop.example", [(10, "relay.test"), (20, "mx2.loop.example")])
        self.relay.dns.set_a("relay.test", ["127.0.0.1"])
        self.relay.dns.set_a("mx2.loop.example", ["127.0.0.3"])
        worse = self.relay.sink("127.0.0.3")
        self.relay.start()
        qid = self.send("bob@loop.example")
        line = self.relay.wait_for_log("bounced", qid=qid)
        self.assertEqual(line["status"], "5.4.6")
        self.assertEqual(worse.connections, 0)


class Routes(DeliveryCase):

    def test_route_hosts_override_dns(self):
        relay = self.make(start=False)
        port = relay.smtp_port
        relay.update_config(router={"routes": [
            {"domain": "routed.example", "hosts": ["127.0.0.3:%d" % port, "127.0.0.2:%d" % port]}]})
        relay.dns.set_mx_ips("routed.example", [(10, "127.0.0.2")])
        dns_mx = relay.sink("127.0.0.2")
        first = relay.sink("127.0.0.3")
        relay.start()
        qid = self.send("bob@routed.example")
        first.wait_for_messages(1)
        line = relay.wait_for_log("delivered", qid=qid)
        self.assertEqual(line["ip"], "127.0.0.3")
        self.assertEqual(dns_mx.connections, 0)
        self.assertEqual(relay.dns.count("routed.example", "MX"), 0)

    def test_route_falls_through_its_hosts_in_order(self):
        relay = self.make(start=False)
        port = relay.smtp_port
        relay.update_config(router={"routes": [
            {"domain": "routed.example", "hosts": ["127.0.0.3:%d" % port, "127.0.0.2:%d" % port]}]})
        relay.sink("127.0.0.3", start=False)                 # first host refuses
        second = relay.sink("127.0.0.2")
        relay.start()
        qid = self.send("bob@routed.example")
        second.wait_for_messages(1)
        self.assertEqual(relay.wait_for_log("delivered", qid=qid)["ip"], "127.0.0.2")

    def test_primary_only_waits_for_the_primary(self):
        relay = self.make(start=False)
        relay.update_config(router={"routes": [
            {"domain": "po.example", "mx_policy": "primary-only"}],
            "host_backoff": ["1s", "1s"]})
        relay.dns.set_mx_ips("po.example", [(10, "127.0.0.2"), (20, "127.0.0.3")])
        primary = relay.sink("127.0.0.2", start=False)       # down
        backup = relay.sink("127.0.0.3")
        relay.start()
        qid = self.send("bob@po.example")
        relay.wait_for_log("deferred", qid=qid)
        # it keeps waiting for the primary (probes), never the backup
        relay.wait_for_count("host_failed", 2, qid=qid, ip="127.0.0.2", timeout=30)
        self.assertEqual(backup.connections, 0)
        primary.up()
        primary.wait_for_messages(1, timeout=30)
        self.assertEqual(relay.wait_for_log("delivered", qid=qid)["ip"], "127.0.0.2")
        self.assertEqual(backup.connections, 0)

    def test_reload_reroutes_mail_waiting_for_a_dead_destination(self):
        relay = self.make(start=False)
        relay.update_config(router={"retry_intervals": ["1h"], "host_backoff": ["1h", "1h"]})
        relay.dns.set_mx_ips("dead.example", [(10, "127.0.0.2")])     # nothing listens
        detour = relay.sink("127.0.0.3")
        relay.start()
        qids = [self.send("u%d@dead.example" % i, subject="d%d" % i) for i in range(3)]
        for q in qids:
            relay.wait_for_log("deferred", qid=q, waiting="dead.example")
        # an hour of backoff and of retry interval: only the new route can move them
        relay.update_config(router={"routes": [
            {"domain": "dead.example", "hosts": ["127.0.0.3:%d" % relay.smtp_port]}]})
        relay.sighup()
        detour.wait_for_messages(3, timeout=30)
        for q in qids:
            self.assertEqual(relay.wait_for_log("delivered", qid=q)["ip"], "127.0.0.3")

    def test_smarthost_with_auth_over_tls(self):
        relay = self.make(start=False)
        port = relay.smtp_port
        relay.update_config(router={"routes": [
            {"domain": "*", "hosts": ["127.0.0.3:%d" % port], "auth_user": "relayuser",
             "auth_password": "relay-secret", "tls": "require"}]})
        smarthost = relay.sink("127.0.0.3", starttls=test_cert(),
                               auth={"relayuser": "relay-secret"}, auth_required=True)
        relay.start()
        qid = self.send(["bob@anywhere.example", "carol@elsewhere.example"])
        [m] = smarthost.wait_for_messages(1)
        # every domain goes to the smarthost, in one transaction, authenticated over TLS
        self.assertEqual(sorted(m.rcpt_addrs), ["bob@anywhere.example", "carol@elsewhere.example"])
        self.assertTrue(m.tls)
        self.assertEqual(m.auth_user, "relayuser")
        self.assertEqual(relay.wait_for_count("delivered", 2, qid=qid)[0]["ip"], "127.0.0.3")
        self.assertEqual(relay.dns.count("anywhere.example"), 0)


class Outcomes(DeliveryCase):

    def setUp(self):
        self.make(start=False)
        self.relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        self.sink = self.relay.sink("127.0.0.2")
        self.relay.start()

    def test_4xx_is_retried_until_it_succeeds(self):
        self.sink.script(eod=["451 4.3.0 try again later", "250 2.0.0 ok second time"])
        qid = self.send("bob@example.net")
        line = self.relay.wait_for_log("deferred", qid=qid)
        self.assertEqual(line["status"], "4.3.0")
        self.assertIn("try again later", line["reply"])
        self.sink.wait_for_messages(1, timeout=30)
        done = self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertIn("ok second time", done["reply"])
        self.assertEqual(len(self.sink.transactions), 2)
        self.assertEqual(self.relay.count_log("bounced", qid=qid), 0)

    def test_5xx_bounces_once_and_reports(self):
        self.sink.script(rcpt={"bad@example.net": "550 5.1.1 <bad@example.net>: no such user"})
        qid = self.send("bad@example.net")
        line = self.relay.wait_for_log("bounced", qid=qid)
        self.assertEqual(line["status"], "5.1.1")
        self.assertIn("no such user", line["reply"])
        self.relay.wait_for_log("ndr", qid=qid, reason="failed")
        self.home.wait_for_messages(1)
        self.assertEqual(self.relay.count_log("deferred", qid=qid), 0)
        self.assertEqual(self.sink.messages, [])

    def test_mixed_replies_in_one_transaction(self):
        self.sink.script(rcpt={
            "bad@example.net": "550 5.1.1 no such user",
            "later@example.net": ["450 4.2.1 mailbox busy", "250 2.1.5 ok"],
        })
        rcpts = ["good@example.net", "bad@example.net", "later@example.net"]
        qid = self.send(rcpts)
        self.relay.wait_for_log("delivered", qid=qid, rcpt="later@example.net", timeout=30)
        first, second = self.sink.wait_for_messages(2, timeout=30)[:2]
        # one transaction for the three, the good one delivered at once ...
        self.assertEqual(first.rcpt_addrs, ["good@example.net"])
        self.assertEqual([r[0] for r in first.rejected_rcpts],
                         ["bad@example.net", "later@example.net"])
        # ... and only the deferred one is tried again
        self.assertEqual(second.rcpt_addrs, ["later@example.net"])
        self.assertEqual(self.relay.count_log("delivered", qid=qid, rcpt="good@example.net"), 1)
        self.assertEqual(self.relay.count_log("bounced", qid=qid, rcpt="bad@example.net"), 1)
        self.assertEqual(self.relay.count_log("deferred", qid=qid, rcpt="later@example.net"), 1)
        self.assertEqual(self.relay.count_log("deferred", qid=qid, rcpt="good@example.net"), 0)
        self.assertEqual(len(self.sink.transactions), 2)

    def test_recipients_are_batched_per_destination(self):
        self.relay.update_config(router={"max_rcpts_per_txn": 2})
        self.relay.restart()
        rcpts = ["a@example.net", "b@example.net", "c@example.net"]
        qid = self.send(rcpts)
        self.relay.wait_for_count("delivered", 3, qid=qid)
        sizes = sorted(len(m.rcpt_addrs) for m in self.sink.messages)
        self.assertEqual(sizes, [1, 2])

    def test_kill_during_delivery_resumes_after_restart(self):
        self.sink.script(eod="HANG")                 # the attempt never ends
        qid = self.send("bob@example.net")
        self.sink.wait_for_transactions(1, timeout=30)
        self.relay.kill9()
        self.sink.drop_connections()
        self.sink.reset_script()
        self.relay.start()
        self.sink.wait_for_messages(1, timeout=30)
        self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertEqual(len(self.sink.messages), 1)

    def test_delivered_message_is_not_sent_again_after_restart(self):
        qid = self.send("bob@example.net")
        self.sink.wait_for_messages(1)
        self.relay.wait_for_log("delivered", qid=qid)
        self.relay.restart()
        mark = self.relay.log_mark()
        qid2 = self.send("carol@example.net")
        self.relay.wait_for_log("delivered", qid=qid2, since=mark)
        self.assertEqual(self.relay.count_log("delivered", qid=qid, since=mark), 0)
        self.assertEqual([m.rcpt_addrs for m in self.sink.messages],
                         [["bob@example.net"], ["carol@example.net"]])


class FallThrough(DeliveryCase):
    """example.net has a primary (.2, preference 10) and a secondary (.3, 20).
    The primary fails in a way that is the host's fault: the message must be
    delivered at the secondary in the same attempt, without a deferral, and
    the primary must never have been sent a MAIL."""

    def two_mx(self, primary_kw=None, secondary_kw=None, **overrides):
        self.make(start=False, **overrides)
        self.relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2"), (20, "127.0.0.3")])
        primary = self.relay.sink("127.0.0.2", **(primary_kw or {}))
        secondary = self.relay.sink("127.0.0.3", **(secondary_kw or {}))
        return primary, secondary

    def delivered_at_secondary(self, primary, secondary):
        """Send, check the outcome; returns (the secondary's Message, the
        primary's host_failed log line)."""
        self.relay.start()
        qid = self.send("bob@example.net")
        [m] = secondary.wait_for_messages(1, timeout=30)
        self.assertEqual(m.rcpt_addrs, ["bob@example.net"])
        line = self.relay.wait_for_log("delivered", qid=qid, timeout=30)
        self.assertEqual(line["ip"], "127.0.0.3")
        failed = self.relay.find_log("host_failed", qid=qid)
        self.assertEqual([f["ip"] for f in failed], ["127.0.0.2"])
        self.assertEqual(self.relay.count_log("deferred", qid=qid), 0)
        self.assertGreaterEqual(primary.connections, 1)
        self.assertEqual(primary.transactions, [])
        self.assertEqual([c for _, c in primary.commands if c.upper().startswith("MAIL")], [])
        return m, failed[0]

    def test_421_greeting_at_primary(self):
        primary, secondary = self.two_mx()
        primary.script(greeting="421 4.3.2 mx1 overloaded, try later")
        _, failed = self.delivered_at_secondary(primary, secondary)
        self.assertEqual(failed["status"], "4.3.2")
        self.assertIn("overloaded", failed["reply"])

    def test_primary_that_never_greets(self):
        primary, secondary = self.two_mx(primary_kw={"hang_greeting": True},
                                         deliver={"greeting_timeout": "2s"})
        started = time.monotonic()
        _, failed = self.delivered_at_secondary(primary, secondary)
        self.assertEqual(failed["status"], "4.4.2")
        self.assertIn("timeout", failed["reply"])
        self.assertIn("GREETING", failed["reply"])
        self.assertLess(time.monotonic() - started, 25)     # greeting_timeout, not 5 minutes
        self.assertEqual(primary.commands, [])

    def tls_primary_fails(self, policy, how):
        """The primary offers STARTTLS; how = "handshake" (it speaks TLS 1.1
        at most, relayd needs 1.2) or "refused" (454 to STARTTLS)."""
        tls = {"starttls": test_cert()}
        primary, secondary = self.two_mx(primary_kw=tls, secondary_kw=tls,
                                         deliver={"tls": policy})
        if how == "handshake":
            with warnings.catch_warnings():     # TLS 1.1 is deprecated: that is the point
                warnings.simplefilter("ignore", DeprecationWarning)
                primary._tls_ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        else:
            primary.script(starttls="454 4.7.0 TLS not available")
        m, failed = self.delivered_at_secondary(primary, secondary)
        self.assertTrue(m.tls)
        self.assertEqual([c for _, c in primary.commands][-1:], ["STARTTLS"])
        self.assertEqual(failed["down"], "no")      # the host answered: not down
        return failed

    def test_tls_handshake_fails_at_primary_under_require(self):
        failed = self.tls_primary_fails("require", "handshake")
        self.assertEqual(failed["status"], "4.7.5")
        self.assertIn("TLS handshake failed", failed["reply"])

    def test_tls_handshake_fails_at_primary_under_opportunistic(self):
        failed = self.tls_primary_fails("opportunistic", "handshake")
        self.assertEqual(failed["status"], "4.7.5")
        self.assertIn("TLS handshake failed", failed["reply"])

    def test_starttls_refused_at_primary_under_require(self):
        failed = self.tls_primary_fails("require", "refused")
        self.assertEqual(failed["status"], "4.7.4")
        self.assertEqual(failed["reply"], "454 4.7.0 TLS not available")

    def test_starttls_refused_at_primary_under_opportunistic(self):
        failed = self.tls_primary_fails("opportunistic", "refused")
        self.assertEqual(failed["status"], "4.7.5")
        self.assertEqual(failed["reply"], "454 4.7.0 TLS not available")


class QueueRemoval(DeliveryCase):

    def test_delivered_message_leaves_the_queue(self):
        # two destinations; the second holds its end-of-data reply until told
        self.make(start=False)
        self.relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        self.relay.dns.set_mx_ips("example.com", [(10, "127.0.0.3")])
        fast = self.relay.sink("127.0.0.2")
        slow = self.relay.sink("127.0.0.3")
        gate = threading.Event()
        slow.script(eod=lambda m: gate.wait(20) and "250 2.0.0 ok after the gate")
        self.relay.start()
        qid = self.send(["bob@example.net", "carol@example.net", "dave@example.com"])
        path = os.path.join(self.relay.queue_dir, "msg", qid)
        self.relay.wait_for_count("delivered", 2, qid=qid, ip="127.0.0.2", timeout=30)
        fast.wait_for_messages(1)
        # delivered to some recipients, not all: the message stays
        self.assertTrue(os.path.exists(path), path)
        self.assertEqual(self.relay.count_log("delivered", qid=qid, rcpt="dave@example.com"), 0)
        gate.set()
        slow.wait_for_messages(1, timeout=30)
        self.relay.wait_for_log("delivered", qid=qid, rcpt="dave@example.com", timeout=30)
        deadline = time.monotonic() + 10
        while os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(os.path.exists(path), "%s still there after every rcpt was delivered"
                         % path)
        self.assertNotIn(qid, os.listdir(os.path.join(self.relay.queue_dir, "msg")))
        self.assertEqual(self.relay.count_log("delivered", qid=qid), 3)


if __name__ == "__main__":
    unittest.main()
