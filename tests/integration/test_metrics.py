"""test_metrics.py - the Prometheus endpoint (metrics_listen) of a live relay.

The real relayd serves GET /metrics on 127.0.12.1 (an address no other test
uses).  Mail goes through it the ordinary way: accepted and delivered to a
sink playing example.net's MX (127.0.0.2), one recipient refused there for
good (bounced, and the report goes to the sender's MX, 127.0.0.3), one
deferred (451); a sender alice does not own is refused, a wrong password
fails AUTH.  Each scrape is read over real HTTP and parsed; the counters,
gauges and histograms must have moved by exactly what was done, and
Debian's promtool must accept the live scrape.  Other paths and methods get
404/405, an oversized request is refused, and without metrics_listen relayd
listens on nothing but its submission ports.
"""

import http.client
import json
import os
import re
import shutil
import smtplib
import socket
import subprocess
import unittest

from client import connect, make_message, raw_session, submit
from relay import Relay, free_port

HOST = "127.0.12.1"
REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DASHBOARD = os.path.join(REPO, "contrib", "grafana", "relayd-dashboard.json")

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def parse(text):
    """{(name, labels): float} of a text exposition; labels a sorted tuple."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        if m is None:
            raise AssertionError("bad sample line %r" % line)
        labels = ()
        if m.group(2):
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(2))))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def http_get(port, path="/metrics", method="GET", headers=None, body=None):
    c = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        c.close()


def listening_ports(pid):
    """The TCP ports process pid listens on (from /proc: its sockets' inodes)."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:     # LISTEN
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


class MetricsTest(unittest.TestCase):

    def start_relay(self, **overrides):
        self.port = free_port(hosts=(HOST,))
        self.relay = Relay.for_test(self, metrics_listen="%s:%d" % (HOST, self.port),
                                    router={"retry_intervals": ["1h"]}, **overrides)
        self.relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        self.relay.dns.set_mx_ips("example.org", [(10, "127.0.0.3")])
        self.dest = self.relay.sink("127.0.0.2")
        self.home = self.relay.sink("127.0.0.3")
        self.relay.start()
        self.relay.wait_for_log("started")  # the metrics socket is bound after submission's

    def stop_clean(self):
        """relayd stops by itself with 0, its loop closed, no sanitizer report."""
        self.assertEqual(self.relay.stop(), 0, self.relay.diagnostics())
        with open(self.relay.stderr_path, errors="replace") as f:
            err = f.read()
        self.assertNotIn("Sanitizer", err)
        self.assertNotIn("runtime error", err)

    def scrape(self):
        status, headers, body = http_get(self.port)
        self.assertEqual(status, 200, body)
        self.assertTrue(headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers)
        return body, parse(body)

    def test_counters_gauges_histograms_move(self):
        """Each kind of mail moves its own metric by exactly one, and promtool
        accepts the scrape."""
        self.start_relay()
        relay = self.relay
        self.dest.script(rcpt={"gone@example.net": "550 5.1.1 no such user",
                               "later@example.net": "451 4.3.0 try again later"})
        _, before = self.scrape()
        self.assertEqual(before[("relayd_queue_messages", ())], 0)
        self.assertEqual(before[("relayd_queue_oldest_message_age_seconds", ())], 0)

        # accepted and delivered
        msg = make_message("alice@example.org", "bob@example.net", "hi", "\n".join("line %d of a longer body" % i for i in range(100)))
        qid_ok = submit(relay, "alice@example.org", ["bob@example.net"], msg)
        relay.wait_for_log("delivered", qid=qid_ok)
        # bounced (and a report to alice)
        qid_b = submit(relay, "alice@example.org", ["gone@example.net"],
                       make_message("alice@example.org", "gone@example.net", "b", "x"))
        relay.wait_for_log("bounced", qid=qid_b)
        self.home.wait_for_messages(1, timeout=30)
        # deferred: stays queued, due in an hour
        qid_d = submit(relay, "alice@example.org", ["later@example.net"],
                       make_message("alice@example.org", "later@example.net", "d", "x"))
        relay.wait_for_log("deferred", qid=qid_d)
        # rejected: a sender alice does not own (5.7.1: policy)
        s = connect(relay, login=("alice", "alicepw"))
        code, _ = s.mail("mallory@example.com")
        self.assertEqual(code, 553)
        s.quit()
        relay.wait_for_log("rejected", stage="mail")
        # a failed AUTH
        s = connect(relay)
        s.user, s.password = "alice", "wrong"
        with self.assertRaises(smtplib.SMTPAuthenticationError):
            s.auth("PLAIN", s.auth_plain)
        s.close()
        relay.wait_for_log("auth_failed")

        text, after = self.scrape()

        def delta(name, **labels):
            key = (name, tuple(sorted(labels.items())))
            return after[key] - before.get(key, 0)

        self.assertGreaterEqual(delta("relayd_connections_total"), 5)
        self.assertEqual(delta("relayd_messages_accepted_total"), 3)
        self.assertEqual(delta("relayd_messages_rejected_total", reason="policy"), 1)
        self.assertEqual(delta("relayd_messages_rejected_total", reason="syntax"), 0)
        self.assertEqual(delta("relayd_auth_failures_total"), 1)
        self.assertEqual(delta("relayd_recipients_delivered_total"), 2)   # bob + the report
        self.assertEqual(delta("relayd_recipients_bounced_total"), 1)
        self.assertEqual(delta("relayd_recipients_deferred_total"), 1)
        self.assertEqual(delta("relayd_recipients_expired_total"), 0)
        self.assertEqual(delta("relayd_ndrs_sent_total"), 1)
        # histograms: one observation per accepted message / delivered recipient
        self.assertEqual(delta("relayd_accept_duration_seconds_count"), 3)
        self.assertEqual(delta("relayd_message_size_bytes_count"), 3)
        self.assertEqual(delta("relayd_delivery_delay_seconds_count"), 2)
        self.assertEqual(after[("relayd_message_size_bytes_bucket", (("le", "+Inf"),))], 3)
        # bob's message is over 500 bytes: not in the first (1 KiB) bucket with the others
        self.assertEqual(after[("relayd_message_size_bytes_bucket", (("le", "1024"),))], 2)
        self.assertGreater(delta("relayd_message_size_bytes_sum"), 500)
        # gauges: the deferred message is the queue
        self.assertEqual(after[("relayd_queue_messages", ())], 1)
        self.assertEqual(after[("relayd_queue_recipients", (("state", "due"),))], 1)
        for st in ("active", "queued", "waiting", "held"):
            self.assertEqual(after[("relayd_queue_recipients", (("state", st),))], 0, st)
        self.assertEqual(after[("relayd_deliveries_in_flight", ())], 0)
        self.assertEqual(after[("relayd_destinations_down", ())], 0)
        self.assertGreater(after[("relayd_journal_size_bytes", ())], 0)
        self.promtool(text)

        # held: the gauge follows relayctl hold / release
        relay.relayctl("queue", "hold", qid_d, check=True)
        _, held = self.scrape()
        self.assertEqual(held[("relayd_queue_messages_held", ())], 1)
        self.assertEqual(held[("relayd_queue_recipients", (("state", "held"),))], 1)
        self.assertEqual(held[("relayd_queue_recipients", (("state", "due"),))], 0)
        relay.relayctl("queue", "delete", qid_d, check=True)
        _, gone = self.scrape()
        self.assertEqual(gone[("relayd_queue_messages", ())], 0)
        self.assertEqual(gone[("relayd_queue_messages_held", ())], 0)
        self.assertEqual(gone[("relayd_queue_recipients", (("state", "held"),))], 0)
        self.assertEqual(gone[("relayd_messages_deleted_total", ())], 1)
        self.stop_clean()

    def test_open_sessions_and_age(self):
        """A session left open is counted; a queued message has an age."""
        self.start_relay()
        self.dest.script(rcpt="451 4.3.0 try again later")
        qid = submit(self.relay, "alice@example.org", ["x@example.net"],
                     make_message("alice@example.org", "x@example.net", "d", "x"))
        self.relay.wait_for_log("deferred", qid=qid)
        with raw_session(self.relay.host, self.relay.submit_port) as r:
            self.assertEqual(r.greeting[0], 220)
            _, m = self.scrape()
            self.assertEqual(m[("relayd_sessions_open", ())], 1)
        self.assertGreaterEqual(m[("relayd_queue_oldest_message_age_seconds", ())], 0)
        self.assertEqual(m[("relayd_queue_messages", ())], 1)

    def test_destination_down(self):
        """A destination whose only exchanger refuses connections is down."""
        self.start_relay()
        self.relay.dns.set_mx_ips("dead.test", [(10, "127.0.0.4")])   # no sink there
        qid = submit(self.relay, "alice@example.org", ["x@dead.test"],
                     make_message("alice@example.org", "x@dead.test", "d", "x"))
        self.relay.wait_for_log("destination_down", timeout=30)
        _, m = self.scrape()
        self.assertEqual(m[("relayd_destinations_down", ())], 1)
        self.assertEqual(m[("relayd_queue_messages", ())], 1)
        self.assertEqual(m[("relayd_queue_recipients", (("state", "waiting"),))]
                         + m[("relayd_queue_recipients", (("state", "due"),))], 1, qid)

    def promtool(self, text):
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool (Debian's prometheus package) is missing")
        p = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout.decode() + p.stderr.decode())
        # proof that promtool looks: a counter without _total fails its lint
        bad = "# HELP relayd_x Bad.\n# TYPE relayd_x counter\nrelayd_x 1\n"
        p = subprocess.run([promtool, "check", "metrics"], input=bad.encode(),
                           capture_output=True, timeout=60)
        self.assertNotEqual(p.returncode, 0)

    def test_other_requests(self):
        """Only GET /metrics gets a scrape; bad requests are bounded."""
        self.start_relay()
        status, _, _ = http_get(self.port, "/")
        self.assertEqual(status, 404)
        status, _, _ = http_get(self.port, "/metrics/x")
        self.assertEqual(status, 404)
        status, headers, _ = http_get(self.port, "/metrics", method="POST", body="x=1")
        self.assertEqual(status, 405)
        self.assertEqual(headers.get("Allow"), "GET")
        status, _, _ = http_get(self.port, "/metrics", method="DELETE")
        self.assertEqual(status, 405)
        # a request larger than the per-connection limit (16 KiB) is refused
        big = {"X-Big": "a" * 40000}
        try:
            status, _, _ = http_get(self.port, "/metrics", headers=big)
        except (ConnectionError, http.client.HTTPException):
            status = None
        self.assertIn(status, (None, 413, 431))
        # the connection limit (8): with 8 half-sent requests open, a 9th
        # connection is not served; once they close, it is
        socks = [socket.create_connection((HOST, self.port)) for _ in range(8)]
        for s in socks:
            s.sendall(b"GET /metr")
        s9 = socket.create_connection((HOST, self.port), timeout=10)
        s9.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        s9.settimeout(2)
        with self.assertRaises(socket.timeout):
            s9.recv(100)
        for s in socks:
            s.close()
        s9.settimeout(10)
        self.assertRegex(s9.recv(100), rb"^HTTP/1\.[01] 200 ")
        # a connection left open mid-request when relayd stops
        s10 = socket.create_connection((HOST, self.port))
        s10.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        s9.close()
        status, _, _ = http_get(self.port)
        self.assertEqual(status, 200)
        self.stop_clean()
        s10.close()
        s9.close()

    def test_dashboard_metrics_exist(self):
        """Every metric the example Grafana dashboard uses is in a live scrape."""
        self.start_relay()
        with open(DASHBOARD) as f:
            dash = json.load(f)
        exprs = []

        def walk(o):
            if isinstance(o, dict):
                for k, v in o.items():
                    if k == "expr":
                        exprs.append(v)
                    else:
                        walk(v)
            elif isinstance(o, list):
                for v in o:
                    walk(v)
        walk(dash)
        self.assertGreater(len(exprs), 5)
        body, _ = self.scrape()
        families = set(re.findall(r"^# TYPE (\S+) ", body, re.M))
        used = set()
        for e in exprs:
            used.update(re.findall(r"relayd_[a-z_]+", e))
        self.assertTrue(used)
        for name in sorted(used):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            self.assertIn(base if base in families else name, families, name)

    def test_off_by_default(self):
        """Without metrics_listen relayd listens on its submission ports only;
        with it, on the metrics port too (the check sees a listener)."""
        relay = Relay.for_test(self)
        relay.start()
        relay.wait_for_log("started")       # past where the metrics socket would be bound
        self.assertEqual(listening_ports(relay.pid), {relay.submit_port, relay.tls_port})
        relay.stop()
        port = free_port(hosts=(HOST,))
        relay.update_config(metrics_listen="%s:%d" % (HOST, port))
        mark = relay.log_mark()
        relay.start()
        relay.wait_for_log("started", since=mark)
        self.assertEqual(listening_ports(relay.pid), {relay.submit_port, relay.tls_port, port})

    def test_a_reload_keeps_the_endpoint_and_says_so(self):
        """A reload with a new metrics_listen applies the rest, keeps the old
        endpoint serving and logs reload_ignored setting=metrics_listen."""
        self.start_relay()
        port = free_port(hosts=(HOST,), exclude=(self.port,))
        self.relay.update_config(metrics_listen="%s:%d" % (HOST, port),
                                 router={"retry_intervals": ["2h"]})
        mark = self.relay.log_mark()
        self.relay.sighup()
        self.relay.wait_for_log("reloaded", since=mark)
        ev = self.relay.wait_for_log("reload_ignored", since=mark, setting="metrics_listen")
        self.assertEqual(ev["kept"], "%s:%d" % (HOST, self.port))
        self.scrape()                       # the old endpoint still serves
        self.assertNotIn(port, listening_ports(self.relay.pid))
        # a reload that leaves it alone says nothing
        mark = self.relay.log_mark()
        self.relay.update_config(metrics_listen="%s:%d" % (HOST, self.port))
        self.relay.sighup()
        self.relay.wait_for_log("reloaded", since=mark)
        self.assertEqual(self.relay.count_log("reload_ignored", since=mark), 0)
        self.stop_clean()

    def test_address_in_use_is_a_start_error(self):
        """A metrics_listen another relayd already serves is a start error,
        not a second listener sharing the port (SO_REUSEPORT) and half the
        scrapes."""
        self.start_relay()
        other = Relay.for_test(self, metrics_listen="%s:%d" % (HOST, self.port))
        other.start(wait=False)
        rc = other.wait_exit()
        with open(other.stderr_path, errors="replace") as f:
            err = f.read()
        self.assertEqual(rc, 1, err)
        self.assertIn("metrics_listen: cannot listen on %s:%d" % (HOST, self.port), err)
        self.scrape()                       # the first one still serves
        self.stop_clean()

    def test_bad_address(self):
        """A bad metrics_listen is a configuration error naming the key."""
        relay = Relay.for_test(self, metrics_listen="localhost")
        rc, err = relay.check_config()
        self.assertEqual(rc, 1, err)
        self.assertIn("metrics_listen: bad address 'localhost'", err)


if __name__ == "__main__":
    unittest.main()
