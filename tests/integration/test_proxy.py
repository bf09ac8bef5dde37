"""test_proxy.py - relayd behind a real HAProxy speaking the PROXY protocol
(issue #12, point 1).

One relayd with four listeners: 587 and 465 as today, and a STARTTLS and an
implicit-TLS listener marked { proxy = true; }, trusting only 127.0.77.1 (the
address HAProxy connects from).  One HAProxy (Debian's, started by the test
on loopback, mode tcp) has four frontends on 127.0.77.1: send-proxy (v1) and
send-proxy-v2 to each proxy listener.  Clients bind their own loopback
address (127.0.77.N, N >= 10), so theirs differs from HAProxy's.

Shown:
* through v1 and v2, on 587 (STARTTLS) and 465 (TLS from the first octet
  after the header): event=connect, Received: and `relayctl queue show`
  carry the client's address, not HAProxy's;
* the per-IP connection limit and the per-IP AUTH throttle count the client:
  one client at its limit does not stop another behind the same HAProxy;
* a direct connection from an untrusted address to a proxy listener, and a
  header that is missing, garbled, oversized or slow (raw sockets from the
  trusted address), are closed and logged as event=proxy_refused;
* the header is taken and not an octet more: a TLS ClientHello sent in the
  same segment as a v2 header completes its handshake; v2 LOCAL keeps the
  connection's own address;
* HAProxy's connect-only health checks (reset before the accept) are closed
  quietly, not refused as untrusted;
* a listener not marked works as today: no header expected, and a PROXY line
  sent there is an SMTP error, not an address;
* relayd -n takes the listen forms and proxy_trusted, and names bad ones.
"""

import base64
import os
import socket
import ssl
import struct
import sys
import unittest


from client import client_context, make_message, submit
from haproxy import HAProxy
from relay import Relay, free_port
from test_submit_limits import session_from
from test_submit_smtp import stop_cleanly

PROXY_HOST = "127.0.77.1"           # HAProxy's frontends, and its source toward relayd
UNTRUSTED = "127.0.77.200"
V2SIG = b"\r\n\r\n\x00\r\nQUIT\n"



class Front:
    """A relay-like object for client.submit() and session_from(): one of
    HAProxy's frontends, sending the PROXY header version to relayd's
    proxy listeners on 587 and 465."""

    def __init__(self, haproxy, version):
        self.host = haproxy.host
        self.submit_port = haproxy.ports["v%d_587" % version]
        self.tls_port = haproxy.ports["v%d_465" % version]


def plain(user, password):
    return base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()


def front_session(front, source, tls=False):
    """A RawSession through HAProxy from source (after the greeting)."""
    return session_from(front, source, tls=tls)


class ProxyProtocolTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.r587 = free_port()
        cls.r465 = free_port(exclude=(cls.r587,))
        cls.relay = Relay(
            submit={"proxy_trusted": [PROXY_HOST + "/32", "192.0.2.0/24"],
                    "proxy_timeout": "1s",
                    "max_connections_per_ip": 2,
                    "auth_fail_limit": 3, "auth_fail_delay_after": 100,
                    "auth_login_fail_limit": 0},
            router={"routes": [{"domain": "held.test", "hosts": ["127.0.0.1:9"]}],
                    "host_backoff": ["1h", "1h"], "retry_intervals": ["1h"]})
        sub = cls.relay.config["submit"]
        sub["listen"] = (sub["listen"][0],
                         {"address": "127.0.0.1:%d" % cls.r587, "proxy": True})
        sub["listen_tls"] = (sub["listen_tls"][0],
                             {"address": "127.0.0.1:%d" % cls.r465, "proxy": True})
        cls.relay.write_config()
        cls.relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        cls.sink = cls.relay.sink("127.0.0.2")
        cls.relay.start()
        cls.relay.wait_for_log("listening", address="127.0.0.1:%d" % cls.r465, proxy="yes")
        cls.haproxy = HAProxy(
            [{"name": "v%d_%s" % (v, p), "servers": [("127.0.0.1", port)],
              "send_proxy": v, "source": PROXY_HOST}
             for v in (1, 2) for p, port in (("587", cls.r587), ("465", cls.r465))],
            host=PROXY_HOST)

    @classmethod
    def tearDownClass(cls):
        cls.haproxy.stop()
        stop_cleanly(cls.relay)

    # -- through HAProxy --------------------------------------------------

    def test_client_address_in_logs_received_and_queue(self):
        relay = self.relay
        n = 0
        for version in (1, 2):
            for port in ("starttls", "tls"):
                n += 1
                src = "127.0.77.%d" % (10 + n)
                front = Front(self.haproxy, version)
                mark = relay.log_mark()
                qid = submit(front, "alice@example.org", ["bob@example.net"],
                             make_message("alice@example.org", "bob@example.net",
                                          "via v%d %s" % (version, port), "body"),
                             port=port, source=src)
                ev = relay.wait_for_log("connect", since=mark, client=src)
                self.assertEqual((ev["proxy"], ev["proxy_version"]),
                                 (PROXY_HOST, str(version)))
                self.assertEqual(ev["listener"], "127.0.0.1:%d" %
                                 (self.r587 if port == "starttls" else self.r465))
                relay.wait_for_log("accepted", since=mark, qid=qid)
                relay.wait_for_log("authenticated", since=mark, client=src)
                self.assertEqual(relay.count_log("connect", since=mark, client=PROXY_HOST), 0)
                relay.wait_for_log("delivered", since=mark, qid=qid)
                [msg] = [m for m in self.sink.wait_for_messages(n)
                         if ("via v%d %s" % (version, port)).encode() in m.data]
                received = msg.data.split(b"\r\n\r\n")[0].split(b"\r\n")[0]
                self.assertTrue(received.startswith(b"Received: from client.test ([%s])"
                                                    % src.encode()), received)
                self.assertNotIn(b"[%s]" % PROXY_HOST.encode(), msg.data.split(b"\r\n\r\n")[0])

        # a message that stays queued: relayctl queue show names the client
        src = "127.0.77.19"
        qid = submit(Front(self.haproxy, 2), "alice@example.org", ["bob@held.test"],
                     make_message("alice@example.org", "bob@held.test", "held", "body"),
                     port="tls", source=src)
        out = relay.relayctl("queue", "show", qid, check=True).stdout
        self.assertRegex(out, r"(?m)^client\s+%s helo=client\.test$" % src.replace(".", r"\."))

    def test_per_ip_connection_limit_counts_the_client(self):
        relay = self.relay
        front = Front(self.haproxy, 2)
        mark = relay.log_mark()
        held = [front_session(front, "127.0.77.30") for _ in range(2)]
        for r in held:
            self.addCleanup(r.close)
            self.assertEqual(r.greeting[0], 220)
        third = front_session(front, "127.0.77.30")
        self.addCleanup(third.close)
        self.assertEqual(third.greeting,
                         (421, "4.7.0 Error: too many connections from your address, "
                               "try again later"))
        relay.wait_for_log("connection_refused", since=mark, client="127.0.77.30",
                           reason="max_connections_per_ip")
        # another client behind the same HAProxy (same peer address) gets in
        other = front_session(front, "127.0.77.31")
        self.addCleanup(other.close)
        self.assertEqual(other.greeting[0], 220)
        self.assertEqual(relay.count_log("connection_refused", since=mark), 1)

    def test_auth_throttle_counts_the_client(self):
        relay = self.relay
        front = Front(self.haproxy, 1)
        mark = relay.log_mark()

        def auth(src, password):
            r = front_session(front, src, tls=True)
            try:
                self.assertEqual(r.cmd("EHLO client.test")[0], 250)
                return r.cmd("AUTH PLAIN " + plain("bob", password))
            finally:
                r.close()       # max_connections_per_ip is 2

        for i in range(3):
            self.assertEqual(auth("127.0.77.40", "wrong%d" % i)[0], 535)
        relay.wait_for_log("auth_blocked", since=mark, client="127.0.77.40")
        self.assertEqual(auth("127.0.77.40", "bobpw")[1].split(" Error: ")[-1],
                         "too many failed authentication attempts, try again later")
        relay.wait_for_log("auth_refused", since=mark, client="127.0.77.40")
        # HAProxy's address is not what was blocked: another client logs in
        self.assertEqual(auth("127.0.77.41", "bobpw")[0], 235)
        self.assertEqual(relay.count_log("auth_failed", since=mark, client=PROXY_HOST), 0)
        relay.relayctl("auth", "unblock", "127.0.77.40", check=True)

    # -- refused ------------------------------------------------------------

    def raw(self, port, source=PROXY_HOST):
        s = socket.create_connection(("127.0.0.1", port), timeout=10,
                                     source_address=(source, 0))
        self.addCleanup(s.close)
        return s

    def assert_closed_silently(self, s):
        """relayd closes without a word: FIN, or RST when it left octets unread."""
        s.settimeout(10)
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        self.assertEqual(data, b"", "closed without a word")

    def refused(self, mark, reason, client=PROXY_HOST, port=None):
        ev = self.relay.wait_for_log("proxy_refused", since=mark, reason=reason, client=client)
        if port is not None:
            self.assertEqual(ev["listener"], "127.0.0.1:%d" % port)
        return ev

    def test_untrusted_source_is_refused(self):
        for port in (self.r587, self.r465):
            mark = self.relay.log_mark()
            s = self.raw(port, source=UNTRUSTED)
            s.sendall(b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 587\r\n")
            self.assert_closed_silently(s)
            self.refused(mark, "untrusted", client=UNTRUSTED, port=port)
            self.assertEqual(self.relay.count_log("connect", since=mark), 0)

    def test_bad_headers_are_refused(self):
        cases = [
            ("missing", b"EHLO client.test\r\n"),
            ("missing", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),   # a bare ClientHello
            ("garbled", b"PROXY TCP4 203.0.113.9 127.0.0.1 5555\r\n"),
            ("garbled", b"PROXY TCP4 203.0.113.999 127.0.0.1 5555 587\r\n"),
            ("garbled", b"PROXY TCP4 203.0.113.9 127.0.0.1 05555 587\r\n"),
            ("garbled", b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 587\n"),
            ("unsupported", b"PROXY UDP4 203.0.113.9 127.0.0.1 5555 587\r\n"),
            ("oversized", b"PROXY TCP6 " + b"1" * 200),
            ("garbled", V2SIG + b"\x31\x11\x00\x0c" + bytes(12)),            # version 3
            ("unsupported", V2SIG + b"\x21\x12\x00\x0c" + bytes(12)),       # UDP
            ("garbled", V2SIG + b"\x21\x11\x00\x04" + bytes(4)),            # short block
            ("oversized", V2SIG + b"\x21\x11\x10\x00"),                     # 4 KiB claimed
        ]
        for reason, data in cases:
            with self.subTest(reason=reason, data=data):
                mark = self.relay.log_mark()
                s = self.raw(self.r587)
                s.sendall(data)
                self.assert_closed_silently(s)
                self.refused(mark, reason, port=self.r587)
                self.assertEqual(self.relay.count_log("connect", since=mark), 0)

    def test_slow_or_unfinished_header_is_refused(self):
        for port in (self.r587, self.r465):
            # half a header, then nothing: the deadline (proxy_timeout 1s) closes it
            mark = self.relay.log_mark()
            s = self.raw(port)
            s.sendall(b"PROXY TCP4 203.0.1")
            self.assert_closed_silently(s)
            ev = self.refused(mark, "timeout", port=port)
            self.assertGreaterEqual(int(ev["age_ms"]), 900)
            # nothing at all
            mark = self.relay.log_mark()
            s = self.raw(port)
            self.assert_closed_silently(s)
            self.refused(mark, "timeout", port=port)
        # a header cut short by the proxy's close
        mark = self.relay.log_mark()
        s = self.raw(self.r587)
        s.sendall(V2SIG + b"\x21\x11\x00\x0c\x01")
        s.shutdown(socket.SHUT_WR)
        self.assert_closed_silently(s)
        self.refused(mark, "eof", port=self.r587)

    # -- the header and no more ------------------------------------------

    def test_client_hello_in_the_same_segment_survives(self):
        """v2 header and the TLS ClientHello in one send: relayd takes the
        header only, and the handshake completes (465)."""
        mark = self.relay.log_mark()
        s = self.raw(self.r465)
        header = (V2SIG + b"\x21\x11\x00\x0c" + socket.inet_aton("198.51.100.7") +
                  socket.inet_aton("127.0.0.1") + struct.pack("!HH", 40000, 465))
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = client_context().wrap_bio(inc, out)
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        s.sendall(header + out.read())
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = out.read()
                if pending:
                    s.sendall(pending)
                data = s.recv(65536)
                self.assertTrue(data, "closed during the handshake")
                inc.write(data)
        s.sendall(out.read())
        greeting = b""
        while not greeting.endswith(b"\r\n"):
            try:
                greeting += tls.read(4096)
            except ssl.SSLWantReadError:
                inc.write(s.recv(65536))
        self.assertTrue(greeting.startswith(b"220 "), greeting)
        ev = self.relay.wait_for_log("connect", since=mark, client="198.51.100.7")
        self.assertEqual((ev["port"], ev["proxy"], ev["proxy_version"]),
                         ("40000", PROXY_HOST, "2"))

    def test_local_and_unknown_keep_the_connection_address(self):
        for data, command in ((V2SIG + b"\x20\x00\x00\x00", "local"),
                              (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", "unknown")):
            mark = self.relay.log_mark()
            s = self.raw(self.r587)
            s.sendall(data)
            self.assertTrue(s.recv(4096).startswith(b"220 "))
            ev = self.relay.wait_for_log("connect", since=mark, client=PROXY_HOST)
            self.assertEqual(ev.get("proxy_command"), command)

    def test_v1_and_v2_ipv6_source(self):
        for data in (b"PROXY TCP6 2001:db8::7 ::1 4711 587\r\n",
                     V2SIG + b"\x21\x21\x00\x24" +
                     socket.inet_pton(socket.AF_INET6, "2001:db8::7") +
                     socket.inet_pton(socket.AF_INET6, "::1") +
                     struct.pack("!HH", 4711, 587) + b"\x04\x00\x02xx"):  # with a NOOP TLV
            mark = self.relay.log_mark()
            s = self.raw(self.r587)
            s.sendall(data)
            self.assertTrue(s.recv(4096).startswith(b"220 "))
            ev = self.relay.wait_for_log("connect", since=mark, client="2001:db8::7")
            self.assertEqual(ev["port"], "4711")

    def test_health_checks_are_not_refusals(self):
        """HAProxy's connect-only health checks reset the connection before
        relayd can even ask who connected: closed quietly, not logged as an
        untrusted proxy with an empty address."""
        relay = self.relay
        mark = relay.log_mark()
        hp = HAProxy([{"name": "checked", "servers": [("127.0.0.1", self.r587)],
                       "send_proxy": 2, "source": PROXY_HOST,
                       "server_options": "check inter 100"}], host=PROXY_HOST)
        try:
            since = mark
            for _ in range(3):          # three checks came and went
                relay.wait_for_log("disconnect", since=since, client="")
                since = relay.log_mark()
        finally:
            hp.stop()
        self.assertEqual(relay.count_log("proxy_refused", since=mark, reason="untrusted"), 0)

    # -- a listener not marked --------------------------------------------

    def test_unmarked_listener_works_as_before(self):
        relay = self.relay
        mark = relay.log_mark()
        r = session_from(relay, "127.0.77.50")
        self.addCleanup(r.close)
        self.assertEqual(r.greeting[0], 220)
        ev = relay.wait_for_log("connect", since=mark, client="127.0.77.50")
        self.assertNotIn("proxy", ev)
        # a PROXY line is a command like any other there, not an address
        self.assertEqual(r.cmd("PROXY TCP4 203.0.113.9 127.0.0.1 5555 587")[0], 500)
        self.assertEqual(relay.count_log("connect", since=mark, client="203.0.113.9"), 0)
        self.assertEqual(relay.count_log("proxy_refused", since=mark), 0)


class ProxyConfigTest(unittest.TestCase):
    """relayd -n: the listen forms and proxy_trusted, good and bad."""

    def setUp(self):
        self.relay = Relay()
        self.addCleanup(self.relay.close)

    def check(self, **submit_keys):
        sub = self.relay.config["submit"]
        for k, v in submit_keys.items():
            sub[k] = v
        self.relay.write_config()
        return self.relay.check_config()

    def test_good_forms(self):
        rc, err = self.check(
            listen=("127.0.0.1:%d" % free_port(), {"address": "127.0.0.1:%d" % free_port(),
                                                    "proxy": True}),
            listen_tls=({"address": "[::1]:%d" % free_port(), "proxy": False},),
            proxy_trusted=["127.0.77.1", "10.0.0.0/8", "2001:db8::/32"],
            proxy_timeout="3s")
        self.assertEqual((rc, err), (0, ""))

    def test_errors_name_the_place(self):
        path = self.relay.config_path
        cases = [
            (dict(listen=({"address": "127.0.0.1:5870", "proxy": True},)),
             r"submit.proxy_trusted: required when a listener has proxy = true"),
            (dict(proxy_trusted=["10.1.2.3/8"]),
             r"submit.proxy_trusted\[0\]: bad network '10.1.2.3/8'"),
            (dict(proxy_trusted=["10.0.0.0/33"]), r"bad network '10.0.0.0/33'"),
            (dict(proxy_trusted=["proxy.example"]), r"bad network 'proxy.example'"),
            (dict(listen=({"proxy": True},), proxy_trusted=["127.0.0.1"]),
             r"submit.listen\[0\]: address is required"),
            (dict(listen=({"address": "127.0.0.1:5870", "proxi": True},)),
             r"unknown key 'submit.listen\[0\].proxi'"),
            (dict(listen=({"address": "nowhere:587"},)),
             r"submit.listen\[0\]: bad listen address 'nowhere:587'"),
            (dict(listen=({"address": "127.0.0.1:5870", "proxy": "yes"},)),
             r"submit.listen\[0\].proxy: "),
            (dict(proxy_timeout=0), r"submit.proxy_timeout"),
        ]
        for keys, want in cases:
            with self.subTest(keys=keys):
                self.relay.config["submit"].pop("proxy_trusted", None)
                rc, err = self.check(**keys)
                self.assertNotEqual(rc, 0)
                self.assertRegex(err, "%s:\\d+: .*%s" % (path.replace(".", r"\."), want))


if __name__ == "__main__":
    unittest.main()
