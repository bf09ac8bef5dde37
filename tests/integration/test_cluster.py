"""test_cluster.py - two relayd nodes sharing state in one real Redis (issue #12).

The test starts its own redis-server on loopback (its own port, a password,
no persistence: --save '' --appendonly no) and two real relayd nodes, "a" and
"b", with the group `cluster = { redis; password_file; node; }`, the same DNS
server and the same sink MXes; for the address checks a real HAProxy (mode
tcp, balance roundrobin, send-proxy-v2, on 127.0.78.1) in front of both
nodes' listener marked { proxy = true; }.  What is shown:

* through HAProxy, round robin over both nodes: each node's logs and the
  Received: field carry the client's address (127.0.78.N), never HAProxy's;
  a login's message limit holds over the two nodes behind it, and one
  client's failed AUTH attempts spread over both nodes block that client
  (421) while another client behind the same HAProxy still logs in;

* a login's message limit (submit.login_max_messages) holds across both
  nodes: one message through each, the next is refused on either (450 4.7.1);
* an address's failed AUTH attempts are counted across both nodes: failures
  spread over them reach submit.auth_fail_limit (421 4.7.0);
* a destination taken down (its MX answers 421) and found down by node A is
  waited on by node B without B connecting to it: every connection the sink
  saw is one of A's attempts (A's own log), B logs no attempt at all; when the
  MX is back, A's probe gets through and B's backlog goes out too (B logs
  cluster_destination_up, then delivered) without B probing first;
* redis-server killed mid-run: both nodes keep accepting and delivering,
  each logs cluster_degraded; once it is started again both log
  cluster_restored and the login limit is shared again;
* redis-server frozen (SIGSTOP, the "slow" case): a session's MAIL is
  answered within the cluster timeout (300 ms) plus slack, never held, and
  cluster_degraded names the timeout.
"""

import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from client import make_message, raw_session, submit
from haproxy import HAProxy
from relay import SLOW, Relay, free_port
from test_submit_limits import session_from
from test_submit_smtp import auth_session

SENDER = "alice@example.org"
REDIS_PASSWORD = "cluster-test-secret"


class RedisServer:
    """A real redis-server on 127.0.0.1:port, no persistence, with a password."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="relayd-redis-")
        self.proc = None

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def start(self, timeout=10):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--requirepass", REDIS_PASSWORD,
             "--dir", self.dir, "--daemonize", "no", "--logfile", "",
             "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ping():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited with %s" % self.proc.returncode)
            time.sleep(0.05)
        raise TimeoutError("redis-server did not answer on %s" % self.address)

    def command(self, *args, timeout=2):
        """One command in RESP; the first reply line (enough for the checks here)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            out = b""
            for cmd in (("AUTH", REDIS_PASSWORD), args):
                out += b"*%d\r\n" % len(cmd)
                for a in cmd:
                    a = a.encode() if isinstance(a, str) else a
                    out += b"$%d\r\n%s\r\n" % (len(a), a)
            s.sendall(out)
            buf = b""
            while buf.count(b"\r\n") < 2:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            return buf.split(b"\r\n")[1].decode()

    def ping(self):
        try:
            return self.command("PING", timeout=0.5) == "+PONG"
        except OSError:
            return False

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


HAPROXY_HOST = "127.0.78.1"         # HAProxy's frontend, and its source toward the nodes

class Front:
    """What client.submit() and session_from() need of a relay: HAProxy's frontend."""

    def __init__(self, host, port):
        self.host, self.submit_port, self.tls_port = host, port, None


def password_file(directory):
    path = os.path.join(directory, "redis.pass")
    with open(path, "w") as f:
        f.write(REDIS_PASSWORD + "\n")
    os.chmod(path, 0o600)           # root reads it before the privilege drop
    return path


class ClusterCase(unittest.TestCase):

    def setUp(self):
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        self.a = self.b = None

    def tearDown(self):
        """Each node stops cleanly: every handle closed (hiredis's too), exit 0."""
        for relay in (self.b, self.a):
            if relay is not None and relay.running:
                self.assertEqual(relay.stop(), 0, relay.diagnostics())
                self.assertEqual(relay.find_log("stopped")[-1].get("clean"), "yes")

    def nodes(self, submit_cfg=None, router=None, proxied=False):
        """Nodes a and b (started, both connected to Redis), sharing DNS and sinks;
        proxied: each also has a listener marked proxy = true (relay.proxy_port)
        trusting HAProxy's address, and self.haproxy balances over both."""
        router_cfg = {"retry_intervals": ["1h"], "host_backoff": ["2s", "4s"]}
        router_cfg.update(router or {})
        submit_cfg = dict(submit_cfg or {})
        if proxied:
            submit_cfg["proxy_trusted"] = [HAPROXY_HOST + "/32"]
        self.a = Relay.for_test(self, submit=submit_cfg, router=router_cfg)
        self.b = Relay.for_test(self, dns=self.a.dns, smtp_port=self.a.smtp_port,
                                submit=submit_cfg, router=router_cfg)
        taken = set()
        for relay, node in ((self.a, "a"), (self.b, "b")):
            relay.config["cluster"] = {"redis": self.redis.address,
                                       "password_file": password_file(relay.tmpdir),
                                       "node": node}
            if proxied:
                taken |= {relay.submit_port, relay.tls_port, relay.smtp_port}
                relay.proxy_port = free_port(exclude=taken)
                taken.add(relay.proxy_port)
                sub = relay.config["submit"]
                sub["listen"] = (sub["listen"][0],
                                 {"address": "127.0.0.1:%d" % relay.proxy_port, "proxy": True})
            relay.write_config()
        self.a.dns.set_mx_ips("example.org", [(10, "127.0.0.4")])
        self.home = self.a.sink("127.0.0.4")
        self.a.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        self.mx = self.a.sink("127.0.0.2")
        for relay, node in ((self.a, "a"), (self.b, "b")):
            relay.start()
            relay.wait_for_log("cluster_connected", node=node, redis=self.redis.address)
        if proxied:
            # round robin over both nodes, send-proxy-v2 (README: "Running several nodes")
            hp = HAProxy([{"name": "submission", "send_proxy": 2, "source": HAPROXY_HOST,
                           "servers": [("127.0.0.1", self.a.proxy_port),
                                       ("127.0.0.1", self.b.proxy_port)]}], host=HAPROXY_HOST)
            self.addCleanup(hp.stop)
            self.haproxy = Front(HAPROXY_HOST, hp.ports["submission"])
        return self.a, self.b

    def send(self, relay, rcpt="bob@example.net", user="alice", password="alicepw",
             sender=SENDER):
        msg = make_message(sender, rcpt, "via %s" % relay.submit_port, "Body.\r\n")
        return submit(relay, sender, [rcpt], msg, user=user, password=password)

    def mail_reply(self, relay, user="alice", password="alicepw", sender=SENDER):
        r = auth_session(relay, user=user, password=password)
        self.addCleanup(r.close)
        return r.cmd("MAIL FROM:<%s>" % sender)


class SharedLimits(ClusterCase):

    def test_login_message_limit_holds_across_nodes(self):
        a, b = self.nodes(submit_cfg={"login_max_messages": 2, "login_rate_window": "1h"})
        self.send(a)
        self.send(b)
        # each node accepted one: alone, each would take another
        self.assertEqual(self.mail_reply(a)[0], 450)
        self.assertEqual(self.mail_reply(b)[0], 450)
        a.wait_for_log("rate_limited", user="alice")
        b.wait_for_log("rate_limited", user="alice")
        self.assertEqual(self.redis.command("EXISTS", "relayd:login:alice"), ":1")
        # another login is not touched
        self.assertEqual(self.mail_reply(a, user="bob", password="bobpw",
                                         sender="bob@example.org")[0], 250)

    def test_without_login_limits_no_login_is_counted(self):
        # nobody reads a login's window when both login limits are off, so
        # no node spends a Redis command on it per message
        a, b = self.nodes(submit_cfg={"login_max_messages": 0, "login_max_recipients": 0})
        self.send(a)
        self.send(b)
        self.assertEqual(len(self.mx.wait_for_messages(2, timeout=30)), 2)
        self.assertEqual(self.redis.command("EXISTS", "relayd:login:alice"), ":0")

    def test_a_reload_keeps_the_redis_link_and_says_so(self):
        a, b = self.nodes()
        a.config["cluster"]["node"] = "a2"
        a.write_config()
        mark = a.log_mark()
        a.sighup()
        a.wait_for_log("reloaded", since=mark)
        ev = a.wait_for_log("reload_ignored", since=mark, setting="cluster")
        self.assertEqual(ev["kept"], self.redis.address)
        self.send(a)                        # still a node, still accepting
        # a reload that leaves it alone says nothing
        a.config["cluster"]["node"] = "a"
        a.write_config()
        mark = a.log_mark()
        a.sighup()
        a.wait_for_log("reloaded", since=mark)
        self.assertEqual(a.count_log("reload_ignored", since=mark), 0)

    def test_auth_failures_are_counted_across_nodes(self):
        a, b = self.nodes(submit_cfg={"auth_fail_limit": 3, "auth_fail_delay_after": 100,
                                      "auth_login_fail_limit": 100})
        wrong = base64.b64encode(b"\0alice\0wrong").decode()

        def fail(relay):
            r = auth_session_raw(relay)
            self.addCleanup(r.close)
            return r.cmd("AUTH PLAIN " + wrong)

        self.assertEqual(fail(a)[0], 535)
        self.assertEqual(fail(b)[0], 535)
        self.assertEqual(fail(a)[0], 535)    # the third from 127.0.0.1, over both nodes
        a.wait_for_log("auth_blocked", client="127.0.0.1")
        # b counted one itself: only the shared count refuses this AUTH
        r = auth_session_raw(b)
        self.addCleanup(r.close)
        code, text = r.cmd("AUTH PLAIN " + wrong)
        self.assertEqual(code, 421, text)
        b.wait_for_log("auth_refused", client="127.0.0.1")


def auth_session_raw(relay, source=None):
    """A RawSession after EHLO, STARTTLS, EHLO (no AUTH yet)."""
    if source is not None:
        r = session_from(relay, source)
    else:
        r = raw_session(relay.host, relay.submit_port)
    assert r.cmd("EHLO client.test")[0] == 250
    assert r.starttls()[0] == 220
    assert r.cmd("EHLO client.test")[0] == 250
    return r


class BehindHAProxy(ClusterCase):

    def test_client_address_and_shared_limits_through_haproxy(self):
        a, b = self.nodes(submit_cfg={"login_max_messages": 2, "login_rate_window": "1h"},
                          proxied=True)
        front = self.haproxy
        qids = []
        for n, src in enumerate(("127.0.78.10", "127.0.78.11")):
            msg = make_message(SENDER, "bob@example.net", "through haproxy %d" % n, "Body.\r\n")
            qids.append(submit(front, SENDER, ["bob@example.net"], msg, source=src))
        # round robin: one message on each node, each logged with its client
        for relay, qid, src in ((a, qids[0], "127.0.78.10"), (b, qids[1], "127.0.78.11")):
            if relay.count_log("accepted", qid=qid) == 0:
                relay = b if relay is a else a
            ev = relay.wait_for_log("accepted", qid=qid)
            self.assertEqual(ev["client"], src)
            self.assertEqual(relay.wait_for_log("connect", client=src)["proxy"], HAPROXY_HOST)
            relay.wait_for_log("delivered", qid=qid)
        self.assertEqual(a.count_log("accepted"), 1)
        self.assertEqual(b.count_log("accepted"), 1)
        for relay in (a, b):
            self.assertEqual(relay.count_log("connect", client=HAPROXY_HOST), 0)
        msgs = self.mx.wait_for_messages(2)
        for n, src in enumerate(("127.0.78.10", "127.0.78.11")):
            [m] = [m for m in msgs if b"through haproxy %d" % n in m.data]
            head = m.data.split(b"\r\n\r\n")[0]
            self.assertTrue(head.startswith(b"Received: from client.test ([%s])" % src.encode()),
                            head[:200])
            self.assertNotIn(b"[%s]" % HAPROXY_HOST.encode(), head)
        # alice's limit of 2 holds over both nodes behind HAProxy
        r = auth_session_proxied(front, "127.0.78.12")
        self.addCleanup(r.close)
        self.assertEqual(r.cmd("MAIL FROM:<%s>" % SENDER)[0], 450)

    def test_auth_failures_of_one_client_over_both_nodes(self):
        a, b = self.nodes(submit_cfg={"auth_fail_limit": 3, "auth_fail_delay_after": 100,
                                      "auth_login_fail_limit": 100}, proxied=True)
        wrong = base64.b64encode(b"\0alice\0wrong").decode()
        for _ in range(3):
            r = auth_session_raw(self.haproxy, source="127.0.78.20")
            self.addCleanup(r.close)
            self.assertEqual(r.cmd("AUTH PLAIN " + wrong)[0], 535)
        # the three went round robin: neither node alone saw three
        self.assertEqual(a.count_log("auth_failed", client="127.0.78.20") +
                         b.count_log("auth_failed", client="127.0.78.20"), 3)
        self.assertGreater(a.count_log("auth_failed"), 0)
        self.assertGreater(b.count_log("auth_failed"), 0)
        for _ in range(2):                   # whichever node HAProxy picks
            r = auth_session_raw(self.haproxy, source="127.0.78.20")
            self.addCleanup(r.close)
            self.assertEqual(r.cmd("AUTH PLAIN " + wrong)[0], 421)
        # another client behind the same HAProxy is not that client
        r = auth_session_proxied(self.haproxy, "127.0.78.21")
        self.addCleanup(r.close)


def auth_session_proxied(front, source, user="alice", password="alicepw"):
    """An authenticated RawSession through HAProxy from source."""
    r = auth_session_raw(front, source=source)
    code, text = r.cmd("AUTH PLAIN " + base64.b64encode(
        ("\0%s\0%s" % (user, password)).encode()).decode())
    assert code == 235, (code, text)
    return r


class SharedHostHealth(ClusterCase):

    def test_destination_down_found_by_a_is_waited_on_by_b(self):
        a, b = self.nodes()
        addr = "127.0.0.2:%d" % a.smtp_port
        self.mx.script(greeting="421 4.3.2 down for maintenance")
        qa = self.send(a, rcpt="one@example.net")
        a.wait_for_log("destination_down", dest="example.net")
        b.wait_for_log("cluster_host_down", addr=addr, node="a")
        qb = self.send(b, rcpt="two@example.net")
        b.wait_for_log("deferred", qid=qb, waiting="example.net")
        # every connection the MX saw was one of a's attempts; b made none
        self.assertEqual(self.mx.connections, a.count_log("host_failed", ip="127.0.0.2"))
        self.assertEqual(b.count_log("host_failed"), 0)
        self.assertEqual(self.mx.messages, [])

        mark_b = b.log_mark()
        self.mx.reset_script()               # the MX is back
        a.wait_for_log("destination_up", dest="example.net", timeout=30)
        a.wait_for_log("delivered", qid=qa, timeout=30)
        b.wait_for_log("cluster_destination_up", dest="example.net", node="a", since=mark_b,
                       timeout=30)
        b.wait_for_log("delivered", qid=qb, since=mark_b, timeout=30)
        self.mx.wait_for_messages(2)
        self.assertEqual(b.count_log("host_failed"), 0)
        # b went out because a's probe got through, not by a probe of its own
        lines = b.find_log(since=mark_b)
        events = [l["event"] for l in lines if l["event"] in
                  ("cluster_destination_up", "delivered")]
        self.assertEqual(events[0], "cluster_destination_up")


class RedisOutage(ClusterCase):

    def test_a_node_back_on_redis_does_not_take_its_own_news_from_others(self):
        """After a lost link, the hosts still down that a node reads back from
        Redis include the ones it marked itself: it keeps its own backoff end
        (no cluster_host_down of its own news)."""
        a, b = self.nodes(submit_cfg={"login_max_messages": 5, "login_rate_window": "1h"},
                          router={"host_backoff": ["60s", "120s"]})
        addr = "127.0.0.2:%d" % a.smtp_port
        self.mx.script(greeting="421 4.3.2 down for maintenance")
        self.send(a, rcpt="one@example.net")
        a.wait_for_log("destination_down", dest="example.net")
        b.wait_for_log("cluster_host_down", addr=addr, node="a")
        mark_a, mark_b = a.log_mark(), b.log_mark()
        self.redis.command("CLIENT", "KILL", "TYPE", "normal")
        self.redis.command("CLIENT", "KILL", "TYPE", "pubsub")
        a.wait_for_log("cluster_restored", node="a", since=mark_a, timeout=20)
        b.wait_for_log("cluster_restored", node="b", since=mark_b, timeout=20)
        # a's MAIL reads its login window after the hosts on the same link:
        # its reply proves a has read them back
        self.assertEqual(self.mail_reply(a)[0], 250)
        self.assertEqual(a.count_log("cluster_host_down", since=mark_a), 0)

    def test_redis_killed_nodes_keep_going_and_share_again_after(self):
        a, b = self.nodes(submit_cfg={"login_max_messages": 2, "login_rate_window": "1h"})
        self.redis.kill()
        a.wait_for_log("cluster_degraded", node="a")
        b.wait_for_log("cluster_degraded", node="b")
        # accepting and delivering go on, on local state
        qa = self.send(a, rcpt="during-a@example.net")
        qb = self.send(b, rcpt="during-b@example.net")
        a.wait_for_log("delivered", qid=qa)
        b.wait_for_log("delivered", qid=qb)
        self.assertEqual(a.count_log("cluster_degraded"), 1)    # logged once

        self.redis.start()
        a.wait_for_log("cluster_restored", node="a", timeout=20)
        b.wait_for_log("cluster_restored", node="b", timeout=20)
        # shared again: bob's limit of 2 holds over both nodes
        self.send(a, user="bob", password="bobpw", sender="bob@example.org")
        self.send(b, user="bob", password="bobpw", sender="bob@example.org")
        self.assertEqual(self.mail_reply(a, user="bob", password="bobpw",
                                         sender="bob@example.org")[0], 450)

    def test_frozen_redis_never_holds_a_session(self):
        a, b = self.nodes(submit_cfg={"login_max_messages": 5, "login_rate_window": "1h"})
        r = auth_session(a)
        self.addCleanup(r.close)
        self.redis.proc.send_signal(signal.SIGSTOP)
        self.addCleanup(lambda: self.redis.proc.send_signal(signal.SIGCONT))
        start = time.monotonic()
        code, _ = r.cmd("MAIL FROM:<%s>" % SENDER)
        took = time.monotonic() - start
        self.assertEqual(code, 250)
        # the timeout is 300 ms; the slack (0.7 s, 2.7 s under TSan: SLOW)
        # is for the build's and the machine's speed, not the session's
        self.assertLess(took, 1.0 * SLOW)
        a.wait_for_log("cluster_degraded", node="a", error="command timeout")
        self.redis.proc.send_signal(signal.SIGCONT)
        a.wait_for_log("cluster_restored", node="a", timeout=20)


if __name__ == "__main__":
    unittest.main()
