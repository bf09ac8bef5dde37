"""test_relayctl.py - relayctl queue administration, host health, run-time
routes and queue statistics against the real relayd (issue #6).

Mail goes to sink MXes on loopback that start DOWN (connections refused), so
it stays in the queue: the destination is down and, with host_backoff and
retry_intervals of an hour, nothing but an admin's command moves it.  What is
proved, command by command: the listing and the JSON shapes, that flush
attempts at once (ignoring backoff and retry timers), that held mail is never
attempted until released, that delete removes without a report (event=deleted)
and bounce reports 5.0.0 at once, that hosts reset probes at once, that routes
survive restarts, that a route set while an attempt is out sends that mail the
new way when the attempt ends (not back to the old host), and the exit codes:
0 ok, 1 error (unknown QID, unknown host, relay not running), 2 usage.
"""

import json
import os
import re
import subprocess
import unittest

from client import make_message, submit
from relay import Relay, relayctl_bin

SENDER = "alice@example.org"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

LIST_KEYS = {"messages", "count", "recipients"}
MSG_KEYS = {"qid", "arrival", "age_s", "size", "sender", "user", "held", "recipients"}
RCPT_KEYS = {"addr", "state", "until", "attempts", "last_attempt", "last_host", "last_ip",
             "last_status", "last_reply", "destination"}
SHOW_KEYS = {"qid", "arrival", "age_s", "size", "sender", "user", "client", "dsn", "body_8bit",
             "smtputf8", "held", "delay_warned", "dkim", "headers", "recipients", "events",
             "tls"}
SHOW_RCPT_KEYS = {"addr", "orcpt", "notify", "state", "until", "attempts", "last_status",
                  "last_reply", "destination", "history"}
HIST_KEYS = {"time", "result", "host", "ip", "status", "reply"}
HOST_KEYS = {"host", "address", "state", "failures", "down_until", "since", "last_attempt",
             "last_error", "probing", "policy", "refused", "refused_at"}
DEST_KEYS = {"name", "state", "inflight", "window", "queued", "waiting", "down_since",
             "next_probe"}
ROUTE_KEYS = {"domain", "hosts", "source", "mx_policy", "tls", "auth_user"}
QSTATS_KEYS = {"messages", "recipients", "domains", "top_destinations"}


class CtlCase(unittest.TestCase):
    """example.net (127.0.0.2) and example.com (127.0.0.3) are down at first;
    example.org (127.0.0.4, the sender's domain) is up and receives reports."""

    def make(self, router=None, **kw):
        cfg = {"retry_intervals": ["1h"], "host_backoff": ["1h", "1h"], "delay_warning": "0"}
        cfg.update(router or {})
        self.relay = Relay.for_test(self, router=cfg, **kw)
        self.relay.dns.set_mx_ips("example.org", [(10, "127.0.0.4")])
        self.home = self.relay.sink("127.0.0.4")
        self.relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        self.net = self.relay.sink("127.0.0.2", start=False)
        self.relay.dns.set_mx_ips("example.com", [(10, "127.0.0.3")])
        self.com = self.relay.sink("127.0.0.3", start=False)
        return self.relay

    def start(self, **kw):
        self.make(**kw)
        self.relay.start()
        return self.relay

    def send(self, rcpt, subject="hello", **kw):
        msg = make_message(SENDER, rcpt, subject, "Body of %s.\r\n" % subject)
        return submit(self.relay, SENDER, [rcpt], msg, **kw)

    def send_deferred(self, rcpt, subject="hello", n=1, **kw):
        """Submit and wait until the (down) destination deferred it n times."""
        qid = self.send(rcpt, subject, **kw)
        self.relay.wait_for_count("deferred", n, qid=qid, timeout=20)
        return qid

    def ctl(self, *args):
        return self.relay.relayctl(*args)

    def ok(self, *args):
        r = self.ctl(*args)
        self.assertEqual(r.returncode, 0, "relayctl %s: %s" % (" ".join(args), r.stderr))
        return r.stdout

    def js(self, *args):
        r = self.ctl(*(args + ("--json",)))
        self.assertEqual(r.returncode, 0, "relayctl %s --json: %s" % (" ".join(args), r.stderr))
        return json.loads(r.stdout)

    def fails(self, code, *args):
        r = self.ctl(*args)
        self.assertEqual(r.returncode, code, "relayctl %s: rc=%d out=%r err=%r"
                         % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r.stderr

    def qids_listed(self, *args):
        return [m["qid"] for m in self.js("queue", "list", *args)["messages"]]


class QueueList(CtlCase):

    def test_empty_queue(self):
        self.start()
        self.assertEqual(self.ok("queue", "list"), "queue is empty\n")
        self.assertEqual(self.js("queue", "list"), {"messages": [], "count": 0, "recipients": 0})

    def test_deferred_mail_shows_state_attempts_and_last_reply(self):
        self.start()
        qid = self.send_deferred("bob@example.net", "first")
        out = self.ok("queue", "list")
        self.assertRegex(out, r"(?m)^QID\s+ARRIVAL\s+AGE\s+SIZE\s+SENDER$")
        self.assertRegex(out, r"(?m)^%s\s+\d{4}-\d\d-\d\dT\S+Z\s+\S+\s+\d+\s+alice@example.org$"
                         % qid)
        self.assertRegex(out, r"(?m)^    bob@example.net\s+deferred until \S+Z, 1 attempt, "
                              r"waiting for example.net$")
        self.assertIn("[127.0.0.2] 4.4.1", out)
        self.assertIn("connection refused", out)
        self.assertTrue(out.endswith("-- 1 message, 1 recipient\n"), out)

        doc = self.js("queue", "list")
        self.assertEqual(set(doc), LIST_KEYS)
        self.assertEqual((doc["count"], doc["recipients"]), (1, 1))
        [m] = doc["messages"]
        self.assertEqual(set(m), MSG_KEYS)
        self.assertEqual((m["qid"], m["sender"], m["user"], m["held"]),
                         (qid, SENDER, "alice", False))
        self.assertRegex(m["arrival"], RFC3339)
        self.assertGreater(m["size"], 0)
        self.assertGreaterEqual(m["age_s"], 0)
        [r] = m["recipients"]
        self.assertEqual(set(r), RCPT_KEYS)
        self.assertEqual((r["addr"], r["state"], r["attempts"], r["last_ip"], r["last_status"],
                          r["last_host"], r["destination"]),
                         ("bob@example.net", "deferred", 1, "127.0.0.2", "4.4.1",
                          "mx1.example.net", "example.net"))
        self.assertRegex(r["until"], RFC3339)
        self.assertGreaterEqual(r["until"], m["arrival"])
        self.assertIn("connection refused", r["last_reply"])

    def test_domain_filter_is_case_insensitive(self):
        self.start()
        q_net = self.send_deferred("bob@example.net", "to net")
        q_com = self.send_deferred("carol@example.com", "to com")
        self.assertEqual(self.qids_listed(), [q_net, q_com])         # oldest first
        self.assertEqual(self.qids_listed("--domain", "example.com"), [q_com])
        self.assertEqual(self.qids_listed("--domain", "EXAMPLE.NET"), [q_net])
        out = self.ok("queue", "list", "--domain", "example.com")
        self.assertIn(q_com, out)
        self.assertNotIn(q_net, out)
        self.assertEqual(self.ok("queue", "list", "--domain", "nowhere.test"),
                         "no queued message matches\n")

    def test_held_filter(self):
        self.start()
        q1 = self.send_deferred("bob@example.net", "one")
        q2 = self.send_deferred("bob@example.net", "two")
        self.ok("queue", "hold", q2)
        self.assertEqual(self.qids_listed("--held"), [q2])
        self.assertEqual(self.qids_listed(), [q1, q2])
        [m] = self.js("queue", "list", "--held")["messages"]
        self.assertTrue(m["held"])
        self.assertEqual(m["recipients"][0]["state"], "held")
        self.assertEqual(m["recipients"][0]["until"], None)
        out = self.ok("queue", "list", "--held")
        self.assertRegex(out, r"(?m)^%s .*alice@example.org  \(held\)$" % q2)
        self.assertRegex(out, r"(?m)^    bob@example.net\s+held, \d+ attempts?$")
        self.assertEqual(self.qids_listed("--held", "--domain", "example.com"), [])


class QueueShow(CtlCase):

    def test_envelope_headers_and_history_of_attempts(self):
        self.start()
        msg = ("From: Alice <alice@example.org>\r\nTo: bob@example.net\r\n"
               "Subject: Quarterly\r\n\treport \"Q3\"\r\n"          # folded, quoted
               "Date: Sun, 22 Nov 2026 11:21:31 +0000\r\n"
               "Message-ID: <q3.report@example.org>\r\n\r\nNumbers.\r\n")
        qid = submit(self.relay, SENDER, ["bob@example.net"], msg,
                     mail_options=["ENVID=env-42", "RET=HDRS"],
                     rcpt_options=["NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;bob@example.net"])
        self.relay.wait_for_count("deferred", 1, qid=qid)
        self.ok("queue", "flush", qid)                     # a second attempt, now
        self.relay.wait_for_count("deferred", 2, qid=qid)

        doc = self.js("queue", "show", qid)
        self.assertEqual(set(doc), SHOW_KEYS)
        self.assertEqual((doc["qid"], doc["sender"], doc["user"]), (qid, SENDER, "alice"))
        self.assertEqual(doc["client"]["ip"], "127.0.0.1")
        self.assertTrue(doc["client"]["helo"])
        self.assertEqual(doc["dsn"], {"envid": "env-42", "ret": "hdrs"})
        self.assertEqual(doc["headers"]["subject"], 'Quarterly report "Q3"')
        self.assertEqual(doc["headers"]["message_id"], "<q3.report@example.org>")
        self.assertEqual(doc["headers"]["from"], "Alice <alice@example.org>")
        self.assertEqual(doc["headers"]["to"], "bob@example.net")
        self.assertEqual(doc["headers"]["date"], "Sun, 22 Nov 2026 11:21:31 +0000")
        [r] = doc["recipients"]
        self.assertEqual(set(r), SHOW_RCPT_KEYS)
        self.assertEqual(r["orcpt"], "rfc822;bob@example.net")
        self.assertEqual(r["notify"], ["FAILURE", "DELAY"])
        self.assertEqual((r["state"], r["attempts"]), ("deferred", 2))
        self.assertEqual(len(r["history"]), 2, r["history"])
        for h in r["history"]:
            self.assertEqual(set(h), HIST_KEYS)
            self.assertEqual((h["result"], h["ip"], h["host"], h["status"]),
                             ("deferred", "127.0.0.2", "mx1.example.net", "4.4.1"))
            self.assertIn("connection refused", h["reply"])
            self.assertRegex(h["time"], RFC3339)
        self.assertEqual(doc["events"], [])

        out = self.ok("queue", "show", qid)
        self.assertRegex(out, r"(?m)^qid\s+%s$" % qid)
        self.assertRegex(out, r"(?m)^user\s+alice$")
        self.assertRegex(out, r"(?m)^dsn\s+envid=env-42 ret=hdrs$")
        self.assertRegex(out, r'(?m)^    Subject\s+Quarterly report "Q3"$')
        self.assertRegex(out, r"(?m)^    Message-ID\s+<q3.report@example.org>$")
        self.assertRegex(out, r"(?m)^        orcpt=rfc822;bob@example.net notify=FAILURE,DELAY$")
        self.assertEqual(len(re.findall(r"(?m)^        \S+Z  deferred mx1.example.net "
                                        r"\[127.0.0.2\] 4.4.1 ", out)), 2, out)

    def test_hold_and_release_appear_as_events(self):
        self.start()
        qid = self.send_deferred("bob@example.net")
        self.ok("queue", "hold", qid)
        self.ok("queue", "release", qid)
        doc = self.js("queue", "show", qid)
        self.assertEqual([e["event"] for e in doc["events"]], ["held", "released"])
        self.assertFalse(doc["held"])

    def test_unknown_qid_exits_1_and_changes_nothing(self):
        self.start()
        qid = self.send_deferred("bob@example.net")
        err = self.fails(1, "queue", "show", "0000NOSUCHQID")
        self.assertIn("unknown queue id: 0000NOSUCHQID", err)
        self.fails(1, "queue", "show", "not/a/qid")
        for verb in ("flush", "hold", "release", "delete", "bounce"):
            err = self.fails(1, "queue", verb, qid, "0000NOSUCHQID")
            self.assertIn("unknown queue id: 0000NOSUCHQID", err)
        # nothing was done to the good one
        [m] = self.js("queue", "list")["messages"]
        self.assertEqual((m["qid"], m["held"]), (qid, False))
        self.assertEqual(self.relay.count_log("held", qid=qid), 0)
        self.assertEqual(self.relay.count_log("deleted", qid=qid), 0)


class Flush(CtlCase):

    def test_flush_qid_attempts_now_despite_backoff(self):
        self.start()
        qid = self.send_deferred("bob@example.net", "waiting an hour")
        self.net.up()                   # back, but relayd would wait an hour for its probe
        doc = self.js("queue", "flush", qid)
        self.assertEqual(doc, {"action": "flush", "count": 1, "qids": [qid], "skipped": []})
        [m] = self.net.wait_for_messages(1, timeout=20)
        self.assertEqual(m.header("Subject"), "waiting an hour")
        self.assertEqual(self.relay.wait_for_log("delivered", qid=qid)["ip"], "127.0.0.2")

    def test_flush_domain_flushes_only_that_domain_then_all(self):
        self.start()
        q_net = self.send_deferred("bob@example.net", "net")
        q_com = self.send_deferred("carol@example.com", "com")
        self.net.up()
        self.com.up()
        self.assertEqual(self.ok("queue", "flush", "--domain", "example.net"),
                         "flushed 1 message: %s\n" % q_net)
        self.relay.wait_for_log("delivered", qid=q_net)
        self.assertEqual(self.qids_listed(), [q_com])
        self.assertEqual(self.com.connections, 0)
        # --json: the messages flushed and the held ones skipped (README)
        self.assertEqual(self.js("queue", "flush", "--all"),
                         {"action": "flush", "count": 1, "qids": [q_com], "skipped": []})
        self.relay.wait_for_log("delivered", qid=q_com)
        self.assertEqual([m.header("Subject") for m in self.com.messages], ["com"])


class HoldRelease(CtlCase):

    def test_held_mail_is_never_attempted_until_released(self):
        self.start()
        held = self.send_deferred("bob@example.net", "held one")
        free = self.send_deferred("dave@example.net", "free one")
        self.assertEqual(self.js("queue", "hold", held, held),      # named twice: once
                         {"action": "hold", "count": 1, "qids": [held], "skipped": []})
        self.relay.wait_for_log("held", qid=held)
        self.net.up()
        self.assertEqual(self.js("queue", "flush", "--all"),
                         {"action": "flush", "count": 1, "qids": [free], "skipped": [held]})
        self.relay.wait_for_log("delivered", qid=free)
        self.assertEqual(self.ok("queue", "flush", held),     # a held message is not flushed
                         "flushed 0 messages (1 held, not flushed: release first)\n")
        self.assertEqual(self.js("queue", "flush", held),
                         {"action": "flush", "count": 0, "qids": [], "skipped": [held]})
        self.assertEqual(self.qids_listed(), [held])
        self.assertEqual([m.header("Subject") for m in self.net.messages], ["free one"])
        self.assertEqual(self.relay.count_log("deferred", qid=held), 1)   # no attempt since

        self.assertEqual(self.ok("queue", "release", held), "released 1 message: %s\n" % held)
        self.relay.wait_for_log("released", qid=held)
        self.relay.wait_for_log("delivered", qid=held)
        self.assertEqual(sorted(m.header("Subject") for m in self.net.messages),
                         ["free one", "held one"])

    def test_hold_and_release_by_domain(self):
        self.start()
        q_net = self.send_deferred("bob@example.net", "net")
        q_com = self.send_deferred("carol@example.com", "com")
        self.assertEqual(self.js("queue", "hold", "--domain", "example.net"),
                         {"action": "hold", "count": 1, "qids": [q_net], "skipped": []})
        self.assertEqual(self.qids_listed("--held"), [q_net])
        # holding again selects nothing new
        self.assertEqual(self.js("queue", "hold", "--domain", "example.net")["count"], 0)
        self.assertEqual(self.ok("queue", "release", "--domain", "example.com"),
                         "released 0 messages\n")
        self.assertEqual(self.js("queue", "release", "--domain", "example.net"),
                         {"action": "release", "count": 1, "qids": [q_net], "skipped": []})
        self.assertEqual(self.qids_listed("--held"), [])
        self.assertEqual(self.qids_listed(), [q_net, q_com])


class DeleteBounce(CtlCase):

    def test_delete_removes_without_report(self):
        self.start()
        qid = self.send_deferred("bob@example.net")
        path = os.path.join(self.relay.queue_dir, "msg", qid)
        self.assertTrue(os.path.exists(path))
        self.assertEqual(self.ok("queue", "delete", qid), "deleted 1 message: %s\n" % qid)
        line = self.relay.wait_for_log("deleted", qid=qid)
        self.assertEqual(line["by"], "admin")
        self.assertFalse(os.path.exists(path))
        self.assertEqual(self.ok("queue", "list"), "queue is empty\n")
        self.assertEqual(self.js("stats")["counters"]["deleted"], 1)
        self.assertEqual(self.relay.count_log("ndr"), 0)
        self.assertEqual(self.relay.count_log("bounced"), 0)
        self.assertEqual(self.home.connections, 0)
        self.fails(1, "queue", "delete", qid)        # gone: unknown now

    def test_delete_by_domain(self):
        self.start()
        q_net = self.send_deferred("bob@example.net", "net")
        q_com = self.send_deferred("carol@example.com", "com")
        self.assertEqual(self.js("queue", "delete", "--domain", "example.com"),
                         {"action": "delete", "count": 1, "qids": [q_com], "skipped": []})
        self.relay.wait_for_log("deleted", qid=q_com)
        self.assertEqual(self.qids_listed(), [q_net])

    def test_bounce_reports_to_the_sender_now(self):
        self.start()
        qid = self.send_deferred("bob@example.net", "never mind")
        self.assertEqual(self.js("queue", "bounce", qid),
                         {"action": "bounce", "count": 1, "qids": [qid], "skipped": []})
        line = self.relay.wait_for_log("bounced", qid=qid)
        self.assertEqual((line["rcpt"], line["status"]), ("bob@example.net", "5.0.0"))
        self.assertIn("returned by the administrator", line["reply"])
        [report] = self.home.wait_for_messages(1, timeout=20)
        self.assertEqual(report.mail_from, "")
        self.assertEqual(report.rcpt_addrs, [SENDER])
        self.assertIn(b"5.0.0", report.data)
        self.assertIn(b"returned by the administrator", report.data)
        # and as the report's own reason, above the recipients (not only in
        # the recipient's diagnostic): built once the F record is durable
        intro = report.data.split(b"This is the mail delivery system", 1)[1]
        intro = intro.split(b"<bob@example.net>:", 1)[0]
        self.assertIn(b"returned by the administrator", intro)
        self.assertEqual(self.net.connections, 0)
        self.assertNotIn(qid, self.qids_listed())


class Hosts(CtlCase):

    def test_empty_table(self):
        self.start()
        self.assertEqual(self.ok("hosts"), "no hosts known yet\n")
        self.assertEqual(self.js("hosts"), {"hosts": [], "destinations": []})

    def test_host_table_shows_the_down_host(self):
        relay = self.start()
        self.send_deferred("bob@example.net")
        addr = "127.0.0.2:%d" % relay.smtp_port
        out = self.ok("hosts")
        self.assertRegex(out, r"(?m)^HOST\s+ADDRESS\s+STATE\s+FAILURES\s+DOWN UNTIL\s+LAST ERROR$")
        self.assertRegex(out, r"(?m)^mx1.example.net\s+%s\s+down\s+1\s+\S+Z\s+connection refused$"
                         % re.escape(addr))
        self.assertRegex(out, r"(?m)^DESTINATION\s+STATE\s+INFLIGHT\s+QUEUED\s+WAITING\s+"
                              r"DOWN SINCE\s+NEXT PROBE$")
        row = re.search(r"(?m)^example.net\s+down\s+0\s+0\s+1\s+(\S+Z)\s+(\S+Z)$", out)
        self.assertIsNotNone(row, out)
        doc = self.js("hosts")
        self.assertEqual(set(doc), {"hosts", "destinations"})
        [h] = doc["hosts"]
        self.assertEqual(set(h), HOST_KEYS)
        self.assertEqual((h["host"], h["address"], h["state"], h["failures"], h["last_error"],
                          h["probing"]),
                         ("mx1.example.net", addr, "down", 1, "connection refused", False))
        self.assertRegex(h["down_until"], RFC3339)
        [d] = doc["destinations"]
        self.assertEqual(set(d), DEST_KEYS)
        self.assertEqual((d["name"], d["state"], d["waiting"]), ("example.net", "down", 1))
        self.assertRegex(d["next_probe"], RFC3339)
        self.assertRegex(d["down_since"], RFC3339)
        self.assertEqual(row.group(1), d["down_since"][:19] + "Z")     # the text is to the second

    def test_reset_by_name_probes_at_once(self):
        self.start()
        qid = self.send_deferred("bob@example.net")
        self.net.up()                                 # back; the backoff says: in an hour
        self.assertEqual(self.js("hosts", "reset", "mx1.example.net"), {"reset": "mx1.example.net"})
        self.relay.wait_for_log("host_reset", host="mx1.example.net")
        self.relay.wait_for_log("delivered", qid=qid)
        [h] = self.js("hosts")["hosts"]
        self.assertEqual((h["state"], h["failures"], h["down_until"]), ("up", 0, None))

    def test_reset_by_address_probes_at_once(self):
        self.start()
        self.send_deferred("bob@example.net")
        self.assertEqual(self.relay.count_log("host_failed", ip="127.0.0.2"), 1)
        mark = self.relay.log_mark()
        out = self.ok("hosts", "reset", "127.0.0.2")     # still down: the probe fails again
        self.assertIn("127.0.0.2 reset", out)
        self.relay.wait_for_log("host_failed", ip="127.0.0.2", since=mark)
        [h] = self.js("hosts")["hosts"]
        self.assertEqual((h["state"], h["failures"]), ("down", 1))

    def test_reset_unknown_host_exits_1(self):
        self.start()
        self.send_deferred("bob@example.net")
        err = self.fails(1, "hosts", "reset", "mx9.nowhere.test")
        self.assertIn("unknown host: mx9.nowhere.test", err)


class Routes(CtlCase):

    def test_set_list_clear_and_survive_a_restart(self):
        relay = self.start()
        self.assertEqual(self.js("route", "list"), [])
        p = relay.smtp_port
        hosts = "127.0.0.5:%d,127.0.0.6:%d" % (p, p)
        self.assertEqual(self.js("route", "set", "example.net", hosts),
                         {"domain": "example.net", "hosts": hosts.split(",")})
        relay.wait_for_log("route_set", domain="example.net")
        [r] = self.js("route", "list")
        self.assertEqual(set(r), ROUTE_KEYS)
        self.assertEqual((r["domain"], r["hosts"], r["source"]),
                         ("example.net", hosts.split(","), "runtime"))
        self.assertRegex(self.ok("route", "list"),
                         r"(?m)^example.net\s+runtime\s+any\s+-\s+%s$" % re.escape(hosts))
        relay.restart()
        self.assertEqual(self.js("route", "list"), [r])
        self.assertEqual(self.ok("route", "clear", "example.net"),
                         "route for example.net cleared\n")
        self.assertEqual(self.js("route", "list"), [])
        err = self.fails(1, "route", "clear", "example.net")
        self.assertIn("no run-time route for example.net", err)
        relay.restart()
        self.assertEqual(self.js("route", "list"), [])

    def test_set_while_the_probe_is_out_sends_its_mail_the_new_way_at_once(self):
        """example.net is down and its probe is out (the old host hangs at the
        greeting) when the admin sets a route to a new host: the mail waiting
        goes there at once, and when the probe then fails its message is not
        put back to wait an hour for the old host's backoff: it is deferred
        with retry_in=0s and goes the new way at once; the old host is not
        contacted again."""
        relay = self.start()
        q1 = self.send_deferred("bob@example.net", "1")
        q2 = self.send_deferred("carol@example.net", "2")
        new = relay.sink("127.0.0.5")
        self.net.script(greeting="HANG")
        self.net.up()
        self.ok("hosts", "reset", "mx1.example.net")     # q1's job probes at once, and hangs
        self.net.wait_for_connections(1)
        self.ok("route", "set", "example.net", "127.0.0.5:%d" % relay.smtp_port)
        relay.wait_for_log("delivered", qid=q2)          # it was waiting: re-routed at once
        mark = relay.log_mark()
        self.net.down()                                  # the probe fails (temporary)
        relay.wait_for_log("host_failed", qid=q1, ip="127.0.0.2", since=mark)
        deferred = relay.wait_for_log("deferred", qid=q1, since=mark)
        self.assertEqual((deferred["host"], deferred.get("retry_in"), deferred.get("waiting")),
                         ("mx1.example.net", "0s", None))    # not back to wait an hour
        relay.wait_for_log("delivered", qid=q1, since=mark)
        self.assertEqual(sorted(m.rcpts[0][0] for m in new.messages),
                         ["bob@example.net", "carol@example.net"])
        self.assertEqual(self.net.connections, 1)
        self.assertEqual(relay.count_log("host_failed", ip="127.0.0.2", since=mark), 1)

    def test_set_while_the_mx_lookup_is_out_never_contacts_the_old_host(self):
        """The job's MX lookup for example.net is out (unanswered) when the
        admin sets a route: the answer comes, the old host is up, but the job
        goes the new way instead (nothing recorded for the old one)."""
        relay = self.start()
        relay.dns.set_drop("example.net")
        new = relay.sink("127.0.0.5")
        self.net.up()
        qid = self.send("bob@example.net")
        relay.dns.wait_for_query("example.net", "MX")
        self.ok("route", "set", "example.net", "127.0.0.5:%d" % relay.smtp_port)
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])   # the resolver's retry gets it
        relay.wait_for_log("delivered", qid=qid, timeout=20)
        self.assertEqual([m.rcpts[0][0] for m in new.messages], ["bob@example.net"])
        self.assertEqual(self.net.connections, 0)
        self.assertEqual(relay.count_log("deferred", qid=qid), 0)

    def test_set_while_the_mx_lookup_is_out_ignores_its_nxdomain(self):
        """The job's MX lookup for example.net is out when the admin sets a
        route; the answer is "no such domain".  That answer was about the old
        way, which the domain no longer goes: no bounce, no deferral, and the
        mail goes to the route's host."""
        relay = self.start()
        relay.dns.set_drop("example.net")
        new = relay.sink("127.0.0.5")
        qid = self.send("bob@example.net")
        relay.dns.wait_for_query("example.net", "MX")
        self.ok("route", "set", "example.net", "127.0.0.5:%d" % relay.smtp_port)
        relay.dns.set_nxdomain("example.net")   # the resolver's retry gets it
        relay.wait_for_log("delivered", qid=qid, timeout=20)
        self.assertEqual([m.rcpts[0][0] for m in new.messages], ["bob@example.net"])
        self.assertEqual(relay.count_log("bounced", qid=qid), 0)
        self.assertEqual(relay.count_log("deferred", qid=qid), 0)

    def test_bad_host_list_is_a_usage_error(self):
        self.start()
        err = self.fails(2, "route", "set", "example.net", "127.0.0.5:notaport")
        self.assertIn("route set example.net", err)
        self.assertEqual(self.js("route", "list"), [])


class Stats(CtlCase):

    def test_queue_by_state_and_top_destinations(self):
        self.start()
        self.send_deferred("a@example.net", "1")
        self.send_deferred("b@example.net", "2")
        q3 = self.send_deferred("c@example.com", "3")
        self.ok("queue", "hold", q3)
        doc = self.js("stats")
        q = doc["queue"]
        self.assertEqual(set(q), QSTATS_KEYS)
        self.assertEqual(q["messages"], 3)
        self.assertEqual(q["recipients"], {"pending": 0, "deferred": 2, "held": 1, "active": 0})
        self.assertEqual(q["domains"], 2)
        self.assertEqual(q["top_destinations"][0],
                         {"domain": "example.net", "recipients": 2, "state": "down"})
        com = q["top_destinations"][1]
        self.assertEqual((com["domain"], com["recipients"]), ("example.com", 1))
        self.assertIn(com["state"], ("up", "down", "unknown"))
        out = self.ok("stats")
        self.assertRegex(out, r"(?m)^queued\s+3$")
        self.assertRegex(out, r"(?m)^  deferred\s+2$")
        self.assertRegex(out, r"(?m)^  held\s+1$")
        self.assertRegex(out, r"(?m)^TOP DESTINATIONS\s+RECIPIENTS\s+STATE$")
        self.assertRegex(out, r"(?m)^example.net\s+2\s+down$")

    def test_empty_queue(self):
        self.start()
        q = self.js("stats")["queue"]
        self.assertEqual(q, {"messages": 0, "domains": 0, "top_destinations": [],
                             "recipients": {"pending": 0, "deferred": 0, "held": 0, "active": 0}})


class ExitCodes(CtlCase):

    USAGE = [
        [],
        ["bogus"],
        ["queue"],
        ["queue", "list", "extra"],
        ["queue", "list", "--bogus"],
        ["queue", "list", "--domain"],
        ["queue", "show"],
        ["queue", "show", "A", "B"],
        ["queue", "flush"],
        ["queue", "hold"],
        ["queue", "release"],
        ["queue", "delete"],
        ["queue", "bounce"],
        ["queue", "bounce", "--domain", "example.net"],
        ["queue", "delete", "--all"],
        ["hosts", "reset"],
        ["hosts", "extra"],
        ["route", "set", "example.net"],
        ["route", "clear"],
        ["route", "list", "extra"],
    ]
    # Accepted by relayctl's grammar, refused by relayd as usage errors.
    DAEMON_USAGE = [
        ["queue", "flush", "--all", "--domain", "example.net"],
        ["queue", "flush", "0000QID", "--all"],
        ["queue", "hold", "0000QID", "--domain", "example.net"],
        ["queue", "list", "--domain", ""],
    ]

    def test_unknown_subcommand_is_named(self):
        self.start()
        for args, want in ((["queue", "frob"], "unknown queue subcommand 'frob'"),
                           (["route", "frob", "x"], "unknown route subcommand 'frob'"),
                           (["queue"], "queue needs a subcommand"),
                           (["frob"], "unknown command 'frob'")):
            with self.subTest(args=args):
                r = self.ctl(*args)
                self.assertEqual(r.returncode, 2, (r.stdout, r.stderr))
                self.assertIn("relayctl: " + want + "\n", r.stderr)
                self.assertIn("usage", r.stderr)
                self.assertEqual(r.stdout, "")
        r = self.ctl("queue", "frob")        # the usage shown is the queue commands'
        self.assertIn("relayctl queue list", r.stderr)
        self.assertNotIn("relayctl route", r.stderr)


        relay = self.start()
        for args in self.USAGE + self.DAEMON_USAGE:
            with self.subTest(args=args):
                r = subprocess.run([relayctl_bin(), "-s", relay.control_socket] + args,
                                   capture_output=True, text=True, timeout=20)
                self.assertEqual(r.returncode, 2, (r.stdout, r.stderr))
                self.assertIn("usage", r.stderr)
                self.assertEqual(r.stdout, "")

    def test_relay_not_running_exits_1(self):
        relay = self.start()
        relay.stop()
        for args in (["queue", "list"], ["queue", "show", "0000QID"], ["queue", "flush", "--all"],
                     ["hosts"], ["hosts", "reset", "x"], ["route", "list"],
                     ["route", "set", "example.net", "127.0.0.5"], ["stats", "--json"]):
            with self.subTest(args=args):
                r = self.ctl(*args)
                self.assertEqual(r.returncode, 1)
                self.assertIn("relayd is not running", r.stderr)
                self.assertEqual(r.stdout, "")

    def test_config_file_finds_the_socket(self):
        relay = self.start()
        r = subprocess.run([relayctl_bin(), "-c", relay.config_path, "queue", "list", "--json"],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('"messages"', r.stdout)


if __name__ == "__main__":
    unittest.main()
