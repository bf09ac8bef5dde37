"""test_harness.py - tests of the integration-test harness itself (tests/harness).

They run without relayd: the loopback DNS server is queried with a small stdlib
client over UDP and TCP; the sink MX is driven by smtplib and by raw sockets;
the log parser, the libconfig writer, the certificate and sasldb makers, and the
Relay fixture's process handling (against a stand-in relayd written in Python)
are checked directly.  A failure here means the harness, not relayd, is wrong.
"""

import base64
import os
import smtplib
import socket
import ssl
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import types
import unittest

import client
import dnsserver
import relay as relaymod
from dnsserver import DNSServer, build_query, parse_message, encode_name
from smtpsink import SinkMX
from relay import Relay, parse_log_line, to_libconfig, free_port, RelayError


# ---------------------------------------------------------------------------
# A tiny DNS client
# ---------------------------------------------------------------------------

def udp_query(port, name, qtype, qid=0x4242, timeout=2.0, raw=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(raw if raw is not None else build_query(name, qtype, qid), ("127.0.0.1", port))
        data, _ = s.recvfrom(65535)
        return parse_message(data)
    finally:
        s.close()


def tcp_query(port, name, qtype, qid=0x2424, timeout=2.0):
    q = build_query(name, qtype, qid)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(struct.pack("!H", len(q)) + q)
        n = struct.unpack("!H", _recv_exact(s, 2))[0]
        return parse_message(_recv_exact(s, n))


def read(path):
    with open(path) as f:
        return f.read()


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        c = s.recv(n - len(buf))
        if not c:
            raise EOFError
        buf += c
    return buf


class DNSServerTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.dns = DNSServer().start()

    @classmethod
    def tearDownClass(cls):
        cls.dns.stop()

    def setUp(self):
        self.dns.reset()

    def test_mx_answer_is_authoritative_and_echoes_id_and_question(self):
        self.dns.set_mx("Example.NET.", [(10, "mx1.example.net"), (20, "MX2.example.net.")])
        r = udp_query(self.dns.port, "example.net", "MX", qid=0xBEEF)
        self.assertEqual(r["id"], 0xBEEF)
        self.assertTrue(r["qr"])
        self.assertTrue(r["aa"])
        self.assertTrue(r["rd"])                # copied from the query
        self.assertEqual(r["rcode_name"], "NOERROR")
        self.assertEqual(r["question"], [("example.net", "MX")])
        self.assertEqual([a[3] for a in r["answer"]],
                         [(10, "mx1.example.net"), (20, "mx2.example.net")])
        self.assertEqual(r["answer"][0][:3], ("example.net", "MX", 0))

    def test_question_case_is_echoed(self):
        self.dns.set_a("host.test", ["127.0.0.9"])
        r = udp_query(self.dns.port, "HoSt.TeSt", "A")
        self.assertEqual(r["question"], [("HoSt.TeSt", "A")])
        self.assertEqual(r["answer"][0][3], "127.0.0.9")

    def test_a_and_aaaa(self):
        self.dns.set_a("mx.test", ["127.0.0.2", "127.0.0.3"])
        self.dns.set_aaaa("mx.test", ["::1"])
        r = udp_query(self.dns.port, "mx.test.", "A")
        self.assertEqual([a[3] for a in r["answer"]], ["127.0.0.2", "127.0.0.3"])
        r = udp_query(self.dns.port, "mx.test", "AAAA")
        self.assertEqual(r["answer"], [("mx.test", "AAAA", 0, "::1")])

    def test_nodata_has_soa_and_no_answer(self):
        self.dns.set_a("only-a.test", ["127.0.0.2"])
        r = udp_query(self.dns.port, "only-a.test", "MX")
        self.assertEqual(r["rcode_name"], "NOERROR")
        self.assertEqual(r["answer"], [])
        self.assertEqual([x[1] for x in r["authority"]], ["SOA"])
        r = udp_query(self.dns.port, "only-a.test", "TXT")
        self.assertEqual((r["rcode_name"], r["answer"]), ("NOERROR", []))

    def test_unknown_and_nxdomain_names(self):
        r = udp_query(self.dns.port, "never-set.test", "MX")
        self.assertEqual(r["rcode_name"], "NXDOMAIN")
        self.assertTrue(r["aa"])
        self.assertEqual([x[1] for x in r["authority"]], ["SOA"])
        self.dns.set_a("gone.test", ["127.0.0.2"])
        self.dns.set_nxdomain("gone.test")
        self.assertEqual(udp_query(self.dns.port, "gone.test", "A")["rcode_name"], "NXDOMAIN")
        self.dns.set_a("back.test", ["127.0.0.2"])
        self.dns.clear("back.test")
        self.assertEqual(udp_query(self.dns.port, "back.test", "A")["rcode_name"], "NXDOMAIN")

    def test_servfail(self):
        self.dns.set_servfail("broken.test")
        r = udp_query(self.dns.port, "broken.test", "MX")
        self.assertEqual(r["rcode_name"], "SERVFAIL")
        self.assertEqual(r["answer"], [])

    def test_null_mx(self):
        self.dns.set_null_mx("nomail.test")
        r = udp_query(self.dns.port, "nomail.test", "MX")
        self.assertEqual(r["answer"], [("nomail.test", "MX", 0, (0, ""))])

    def test_cname_is_followed_to_known_records(self):
        self.dns.set_a("real.test", ["127.0.0.4"])
        self.dns.set_cname("alias.test", "real.test")
        r = udp_query(self.dns.port, "alias.test", "A")
        self.assertEqual(r["rcode_name"], "NOERROR")
        self.assertEqual(r["answer"], [("alias.test", "CNAME", 0, "real.test"),
                                       ("real.test", "A", 0, "127.0.0.4")])
        r = udp_query(self.dns.port, "alias.test", "MX")     # target has no MX: NODATA
        self.assertEqual((r["rcode_name"], [a[1] for a in r["answer"]]), ("NOERROR", ["CNAME"]))
        r = udp_query(self.dns.port, "alias.test", "CNAME")
        self.assertEqual(r["answer"], [("alias.test", "CNAME", 0, "real.test")])
        self.dns.set_cname("dangling.test", "nowhere.test")
        r = udp_query(self.dns.port, "dangling.test", "A")
        self.assertEqual((r["rcode_name"], [a[1] for a in r["answer"]]), ("NXDOMAIN", ["CNAME"]))

    def test_set_mx_ips_makes_mx_and_address_records(self):
        names = self.dns.set_mx_ips("two.test", [(10, "127.0.0.2"), (20, "127.0.0.3")])
        self.assertEqual(names, ["mx1.two.test", "mx2.two.test"])
        r = udp_query(self.dns.port, "two.test", "MX")
        self.assertEqual([a[3] for a in r["answer"]], [(10, "mx1.two.test"), (20, "mx2.two.test")])
        r = udp_query(self.dns.port, "mx2.two.test", "A")
        self.assertEqual(r["answer"][0][3], "127.0.0.3")

    def test_tcp_queries_several_per_connection(self):
        self.dns.set_mx("tcp.test", [(5, "mx.tcp.test")])
        r = tcp_query(self.dns.port, "tcp.test", "MX", qid=77)
        self.assertEqual((r["id"], r["answer"][0][3]), (77, (5, "mx.tcp.test")))
        q1, q2 = build_query("tcp.test", "MX", 1), build_query("nope.test", "A", 2)
        with socket.create_connection(("127.0.0.1", self.dns.port), timeout=2) as s:
            s.sendall(struct.pack("!H", len(q1)) + q1 + struct.pack("!H", len(q2)) + q2)
            out = []
            for _ in range(2):
                n = struct.unpack("!H", _recv_exact(s, 2))[0]
                out.append(parse_message(_recv_exact(s, n)))
        self.assertEqual([(m["id"], m["rcode_name"]) for m in out], [(1, "NOERROR"), (2, "NXDOMAIN")])

    def test_large_answer_is_truncated_over_udp_not_tcp(self):
        mxs = [(i, "a-rather-long-exchange-name-number-%02d.big.test" % i) for i in range(20)]
        self.dns.set_mx("big.test", mxs)
        r = udp_query(self.dns.port, "big.test", "MX")
        self.assertTrue(r["tc"])
        self.assertEqual(r["answer"], [])
        r = tcp_query(self.dns.port, "big.test", "MX")
        self.assertFalse(r["tc"])
        self.assertEqual(len(r["answer"]), 20)

    def test_compressed_name_in_query_is_parsed(self):
        # the header's ancount/nscount/arcount spell the name "tst" at offset 6;
        # the question is "example" + a pointer to it
        hdr = struct.pack("!HHHHHH", 99, 0x0100, 1, 0x0374, 0x7374, 0)
        q = hdr + b"\x07example\xc0\x06" + struct.pack("!HH", 1, 1)
        self.dns.set_a("example.tst", ["127.0.0.8"])
        r = udp_query(self.dns.port, None, None, raw=q)
        self.assertEqual(r["question"], [("example.tst", "A")])
        self.assertEqual(r["answer"][0][3], "127.0.0.8")

    def test_drop_never_answers_and_malformed_packets_are_ignored(self):
        self.dns.set_drop("slow.test")
        with self.assertRaises(socket.timeout):
            udp_query(self.dns.port, "slow.test", "A", timeout=0.3)
        for junk in (b"", b"\x00", b"\x12\x34\x01\x00\x00\x01", b"\xff" * 40,
                     struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x3fabc",
                     struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",
                     build_query("x.test", "A")[:-1]):
            with self.assertRaises(socket.timeout):
                udp_query(self.dns.port, None, None, raw=junk, timeout=0.2)
        # a response (QR=1) is not answered either
        resp = bytearray(build_query("x.test", "A"))
        resp[2] |= 0x80
        with self.assertRaises(socket.timeout):
            udp_query(self.dns.port, None, None, raw=bytes(resp), timeout=0.2)
        # and the server still works
        self.dns.set_a("ok.test", ["127.0.0.2"])
        self.assertEqual(udp_query(self.dns.port, "ok.test", "A")["answer"][0][3], "127.0.0.2")

    def test_any_is_not_implemented(self):
        self.dns.set_a("any.test", ["127.0.0.2"])
        self.assertEqual(udp_query(self.dns.port, "any.test", "ANY")["rcode_name"], "NOTIMP")

    def test_query_log(self):
        self.dns.set_mx("log.test", [(10, "mx.log.test")])
        udp_query(self.dns.port, "LOG.test.", "MX")
        udp_query(self.dns.port, "log.test", "A")
        tcp_query(self.dns.port, "log.test", "MX")
        self.assertEqual(self.dns.count("log.test"), 3)
        self.assertEqual(self.dns.count("log.test.", "MX"), 2)
        self.assertEqual(self.dns.count("log.test", "aaaa"), 0)
        self.assertIn(("log.test", "A"), self.dns.queries)
        self.assertEqual(self.dns.wait_for_query("log.test", "MX", timeout=1, n=2), 2)

    def test_stop_releases_the_port_and_context_manager(self):
        with DNSServer() as d:
            d.set_a("cm.test", ["127.0.0.2"])
            self.assertEqual(udp_query(d.port, "cm.test", "A")["answer"][0][3], "127.0.0.2")
            port = d.port
        with self.assertRaises(OSError):
            tcp_query(port, "cm.test", "A", timeout=0.5)


class FreePortTest(unittest.TestCase):

    def test_ports_are_below_the_ephemeral_range_and_bindable(self):
        """A picked port is bound by its server only later; outgoing
        connections take their source ports from the ephemeral range, so a
        port from there could be taken in between (CI saw relayd fail with
        "address already in use").  free_port() must pick below it."""
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
        if low < 11000:
            self.skipTest("ephemeral range starts at %d: no room below it" % low)
        hosts = ("127.0.0.2", "127.0.0.3")
        ports = [free_port(hosts) for _ in range(50)]
        for port in ports:
            self.assertGreaterEqual(port, 10000)
            self.assertLess(port, low)
        self.assertGreater(len(set(ports)), 40)          # random, not one fixed port
        # exclude is honoured and each host really can bind the port
        port = free_port(hosts, exclude=set(ports))
        self.assertNotIn(port, ports)
        for h in hosts:
            s = socket.socket()
            s.bind((h, port))
            s.close()


# ---------------------------------------------------------------------------
# The sink MX
# ---------------------------------------------------------------------------

class SinkTest(unittest.TestCase):

    def setUp(self):
        self.port = free_port(("127.0.0.2", "127.0.0.3"))
        self.sink = SinkMX("127.0.0.2", self.port)
        self.addCleanup(self.sink.stop)

    def smtp(self, sink=None):
        sink = sink or self.sink
        s = smtplib.SMTP(sink.host, sink.port, local_hostname="relay.test", timeout=5)
        self.addCleanup(s.close)
        return s

    def test_smtplib_message_with_pipelining_and_dot_unstuffing(self):
        s = self.smtp()
        s.ehlo()
        self.assertTrue(s.has_extn("pipelining"))
        self.assertTrue(s.has_extn("dsn"))
        body = ("From: a@example.org\r\nSubject: t\r\n\r\n"
                ".leading dot\r\n..two dots\r\n.\r\nlast\r\n")
        refused = s.sendmail("a@example.org", ["x@example.net", "y@example.net"], body,
                             mail_options=["BODY=8BITMIME", "RET=HDRS", "ENVID=abc"],
                             rcpt_options=["NOTIFY=FAILURE"])
        self.assertEqual(refused, {})
        [m] = self.sink.wait_for_messages(1, timeout=5)
        self.assertEqual(m.mail_from, "a@example.org")
        self.assertEqual(m.mail_params["BODY"], "8BITMIME")
        self.assertEqual(m.mail_params["RET"], "HDRS")
        self.assertEqual(m.mail_params["ENVID"], "abc")
        self.assertEqual(m.mail_params["SIZE"], str(len(body)))   # smtplib adds SIZE
        self.assertEqual(m.rcpts, [("x@example.net", {"NOTIFY": "FAILURE"}),
                                   ("y@example.net", {"NOTIFY": "FAILURE"})])
        self.assertEqual(m.data, body.encode())
        self.assertEqual(m.helo, "relay.test")
        self.assertFalse(m.tls)
        self.assertEqual(m.header("subject"), "t")
        self.assertEqual(self.sink.connections, 1)

    def test_raw_pipelined_commands_are_answered_in_order(self):
        with client.raw_session("127.0.0.2", self.port) as r:
            self.assertEqual(r.greeting[0], 220)
            code, text = r.cmd("EHLO relay.test")
            self.assertEqual(code, 250)
            self.assertIn("PIPELINING", text.splitlines())
            r.send("MAIL FROM:<> SMTPUTF8\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n"
                   "DATA\r\n")
            codes = [r.read_reply()[0] for _ in range(4)]
            self.assertEqual(codes, [250, 250, 250, 354])
            r.send("Subject: x\r\n\r\nhi\r\n.\r\nRSET\r\nMAIL FROM:<c@x.test>\r\n"
                   "RCPT TO:<d@x.test>\r\nDATA\r\n")
            self.assertEqual([r.read_reply()[0] for _ in range(5)], [250, 250, 250, 250, 354])
            r.send("second\r\n.\r\n")
            code, text = r.read_reply()
            self.assertEqual(code, 250)
            self.assertIn("queued as", text)
            self.assertEqual(r.cmd("NOOP")[0], 250)
            self.assertEqual(r.cmd("QUIT")[0], 221)
            self.assertTrue(r.wait_closed(2))
        msgs = self.sink.wait_for_messages(2, timeout=5)
        self.assertEqual(msgs[0].mail_from, "")
        self.assertEqual(msgs[0].mail_params, {"SMTPUTF8": True})
        self.assertEqual(msgs[0].rcpt_addrs, ["a@x.test", "b@x.test"])
        self.assertEqual(msgs[1].data, b"second\r\n")
        self.assertEqual(msgs[1].conn, msgs[0].conn)

    def test_bad_sequences(self):
        with client.raw_session("127.0.0.2", self.port) as r:
            self.assertEqual(r.cmd("MAIL FROM:<a@b>")[0], 503)      # before EHLO
            self.assertEqual(r.cmd("HELO relay.test")[0], 250)
            self.assertEqual(r.cmd("RCPT TO:<a@b>")[0], 503)
            self.assertEqual(r.cmd("MAIL FROM:<a@b>")[0], 250)
            self.assertEqual(r.cmd("DATA")[0], 554)                 # no recipients
            self.assertEqual(r.cmd("BOGUS")[0], 500)
            self.assertEqual(r.cmd("STARTTLS")[0], 502)             # not configured

    def test_scripted_per_recipient_replies(self):
        self.sink.script(rcpt={"bad@x.test": "550 5.1.1 no such user",
                               "@busy.test": "450 4.2.1 busy",
                               "Twice@x.test": ["451 4.3.0 not yet", "250 2.1.5 ok now"],
                               "*": "250 2.1.5 fine"})
        s = self.smtp()
        with self.assertRaises(smtplib.SMTPRecipientsRefused):
            s.sendmail("a@x.test", ["bad@x.test"], "Subject: x\r\n\r\nx\r\n")
        s.rset()
        refused = s.sendmail("a@x.test", ["good@x.test", "BAD@x.test", "u@busy.test",
                                          "twice@x.test"], "Subject: y\r\n\r\ny\r\n")
        self.assertEqual(set(refused), {"BAD@x.test", "u@busy.test", "twice@x.test"})
        self.assertEqual(refused["BAD@x.test"][0], 550)
        self.assertEqual(refused["u@busy.test"][0], 450)
        self.assertEqual(refused["twice@x.test"][0], 451)
        refused = s.sendmail("a@x.test", ["twice@x.test"], "Subject: z\r\n\r\nz\r\n")
        self.assertEqual(refused, {})
        msgs = self.sink.wait_for_messages(2, timeout=5)
        self.assertEqual(msgs[0].rcpt_addrs, ["good@x.test"])
        self.assertEqual([r[0] for r in msgs[0].rejected_rcpts],
                         ["BAD@x.test", "u@busy.test", "twice@x.test"])
        self.assertEqual(msgs[1].rcpt_addrs, ["twice@x.test"])

    def test_first_attempt_temporary_then_success(self):
        self.sink.script(eod=["451 4.3.0 try later", "250 2.0.0 ok"],
                         greeting=["220 first", "220 second"])
        for expect in (451, 250, 250):
            s = self.smtp()
            s.ehlo()
            s.mail("a@x.test")
            s.rcpt("b@x.test")
            code, _ = s.data("Subject: x\r\n\r\nx\r\n")
            self.assertEqual(code, expect)
            s.quit()
        self.assertEqual(len(self.sink.transactions), 3)
        self.assertEqual(len(self.sink.messages), 2)
        self.assertEqual(self.sink.transactions[0].reply, "451 4.3.0 try later")
        self.assertEqual([s.replies[0] for s in self.sink.sessions],
                         ["220 first", "220 second", "220 second"])

    def test_mail_and_data_scripts_multiline_and_callables(self):
        self.sink.script(mail=["452 4.3.1 full", "250 ok"],
                         data="554 5.7.1 no\n554 5.7.1 really not",
                         ehlo=lambda arg: "250 hello " + arg)
        with client.raw_session("127.0.0.2", self.port) as r:
            self.assertEqual(r.cmd("EHLO me.test"), (250, "hello me.test"))
            self.assertEqual(r.cmd("MAIL FROM:<a@x.test>")[0], 452)
            self.assertEqual(r.cmd("MAIL FROM:<a@x.test>")[0], 250)
            self.assertEqual(r.cmd("RCPT TO:<b@x.test>")[0], 250)
            self.assertEqual(r.cmd("DATA"),
                             (554, "5.7.1 no\n5.7.1 really not"))
        self.assertEqual(self.sink.transactions, [])

    def test_down_refuses_and_up_listens_again(self):
        s = self.smtp()
        s.ehlo()
        self.sink.down()
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", self.port), timeout=2)
        # the open session was dropped too
        with self.assertRaises((smtplib.SMTPServerDisconnected, OSError)):
            s.noop()
            s.noop()
        self.sink.up()
        with client.raw_session("127.0.0.2", self.port) as r:
            self.assertEqual(r.greeting[0], 220)
        self.assertEqual(self.sink.connections, 2)
        self.sink.wait_for_connections(2, timeout=1)

    def test_distinct_hosts_same_port(self):
        other = SinkMX("127.0.0.3", self.port)
        self.addCleanup(other.stop)
        for host in ("127.0.0.2", "127.0.0.3", "127.0.0.3"):
            with client.raw_session(host, self.port) as r:
                r.cmd("QUIT")
        self.assertEqual((self.sink.connections, other.connections), (1, 2))
        self.assertEqual(other.sessions[0].peer[0], "127.0.0.1")

    def test_hang_greeting_and_421_and_drop(self):
        self.sink.script(greeting="HANG")
        with socket.create_connection(("127.0.0.2", self.port), timeout=0.3) as c:
            with self.assertRaises(socket.timeout):
                c.recv(100)
        self.sink.script(greeting="421 4.3.2 go away")
        with client.raw_session("127.0.0.2", self.port) as r:
            self.assertEqual(r.greeting, (421, "4.3.2 go away"))
            self.assertTrue(r.wait_closed(2))
        self.sink.script(greeting="554 5.7.1 no service here")
        with client.raw_session("127.0.0.2", self.port) as r:
            self.assertEqual(r.cmd("EHLO x")[0], 503)
            self.assertEqual(r.cmd("QUIT")[0], 221)
        self.sink.reset_script()
        self.sink.script(rcpt={"*": "DROP"})
        with client.raw_session("127.0.0.2", self.port) as r:
            r.cmd("EHLO x")
            r.cmd("MAIL FROM:<a@b>")
            r.send("RCPT TO:<c@d>\r\n")
            self.assertTrue(r.wait_closed(2))
        hang = SinkMX("127.0.0.3", self.port, hang_greeting=True)
        self.addCleanup(hang.stop)
        with socket.create_connection(("127.0.0.3", self.port), timeout=0.3) as c:
            with self.assertRaises(socket.timeout):
                c.recv(100)
        hang.stop()     # ends the hanging session promptly

    def test_starttls_and_auth(self):
        cert, key = relaymod.test_cert()
        sink = SinkMX("127.0.0.3", self.port, starttls=(cert, key),
                      auth={"relayuser": "s3cret"}, auth_required=True)
        self.addCleanup(sink.stop)
        s = self.smtp(sink)
        s.ehlo()
        self.assertTrue(s.has_extn("starttls"))
        self.assertTrue(s.has_extn("auth"))
        s.starttls(context=client.client_context())
        s.ehlo()
        self.assertFalse(s.has_extn("starttls"))
        with self.assertRaises(smtplib.SMTPSenderRefused):       # 530 before AUTH
            s.sendmail("a@x.test", ["b@x.test"], "x\r\n")
        with self.assertRaises(smtplib.SMTPAuthenticationError):
            s.login("relayuser", "wrong")
        s.login("relayuser", "s3cret")                            # PLAIN
        s.sendmail("a@x.test", ["b@x.test"], "Subject: tls\r\n\r\nx\r\n")
        [m] = sink.wait_for_messages(1, timeout=5)
        self.assertTrue(m.tls)
        self.assertEqual(m.auth_user, "relayuser")
        # (smtplib tries PLAIN, then LOGIN, with the wrong password)
        self.assertEqual(sink.auth_attempts[-1], ("relayuser", True))
        self.assertEqual({a for a in sink.auth_attempts[:-1]}, {("relayuser", False)})
        # AUTH LOGIN over a raw session after a manual TLS wrap
        with client.raw_session("127.0.0.3", self.port) as r:
            r.cmd("EHLO relay.test")
            self.assertEqual(r.starttls()[0], 220)
            self.assertTrue(r.tls)
            self.assertEqual(r.cmd("EHLO relay.test")[0], 250)
            self.assertEqual(r.cmd("AUTH LOGIN"), (334, "VXNlcm5hbWU6"))
            self.assertEqual(r.cmd(base64.b64encode(b"relayuser").decode())[0], 334)
            self.assertEqual(r.cmd(base64.b64encode(b"s3cret").decode())[0], 235)

    def test_bdat_when_chunking_is_offered(self):
        sink = SinkMX("127.0.0.3", self.port, ehlo_features=["CHUNKING", "PIPELINING"])
        self.addCleanup(sink.stop)
        with client.raw_session("127.0.0.3", self.port) as r:
            self.assertIn("CHUNKING", r.cmd("EHLO relay.test")[1])
            r.cmd("MAIL FROM:<a@x.test> BODY=BINARYMIME")
            r.cmd("RCPT TO:<b@x.test>")
            r.send(b"BDAT 5\r\nab\r\n.BDAT 3 LAST\r\nxyz")
            self.assertEqual(r.read_reply()[0], 250)
            self.assertEqual(r.read_reply()[0], 250)
        [m] = sink.wait_for_messages(1, timeout=5)
        self.assertEqual(m.data, b"ab\r\n.xyz")


# ---------------------------------------------------------------------------
# The client helpers against a sink standing in for relayd
# ---------------------------------------------------------------------------

class ClientTest(unittest.TestCase):

    def test_submit_parses_the_queue_id_and_make_message(self):
        port = free_port(("127.0.0.2",))
        cert, key = relaymod.test_cert()
        sink = SinkMX("127.0.0.2", port, starttls=(cert, key), auth={"alice": "alicepw"},
                      auth_required=True)
        self.addCleanup(sink.stop)
        sink.script(eod="250 2.0.0 Ok: queued as 0123ABCD", rcpt={"no@x.test": "550 5.1.1 no"})
        fake = types.SimpleNamespace(host="127.0.0.2", submit_port=port, tls_port=None)
        msg = client.make_message("alice@example.org", ["b@x.test", "c@x.test"], "Hello",
                                         "line 1\n.line 2\n", extra_headers={"X-Test": "1"})
        self.assertTrue(msg.endswith("\r\n.line 2\r\n"))
        self.assertNotIn("\n", msg.replace("\r\n", ""))
        qid = client.submit(fake, "alice@example.org", ["b@x.test", "c@x.test"], msg,
                            mail_options=["BODY=8BITMIME"], rcpt_options={"c@x.test": ["NOTIFY=NEVER"]})
        self.assertEqual(qid, "0123ABCD")
        [m] = sink.wait_for_messages(1, timeout=5)
        self.assertEqual(m.auth_user, "alice")
        self.assertTrue(m.tls)
        self.assertEqual(m.rcpts, [("b@x.test", {}), ("c@x.test", {"NOTIFY": "NEVER"})])
        self.assertEqual(m.header("X-Test"), "1")
        self.assertIn(b"\r\n.line 2\r\n", m.data)       # stuffed, then unstuffed
        with self.assertRaises(smtplib.SMTPRecipientsRefused):
            client.submit(fake, "alice@example.org", ["b@x.test", "no@x.test"], msg)
        self.assertEqual(client.submit(fake, "alice@example.org", ["b@x.test", "no@x.test"], msg,
                                       allow_refused=True), "0123ABCD")
        with self.assertRaises(smtplib.SMTPAuthenticationError):
            client.submit(fake, "alice@example.org", ["b@x.test"], msg, password="bad")


# ---------------------------------------------------------------------------
# Log parsing and the libconfig writer
# ---------------------------------------------------------------------------

class LogParseTest(unittest.TestCase):

    def test_plain_and_quoted_values(self):
        line = ('ts=2024-05-01T10:00:00.123Z level=info event=delivered qid=ABC123 '
                'rcpt=bob@example.net reply="250 2.0.0 Ok: queued as \\"X\\"" empty="" '
                'path="C:\\\\dir" multi="a\\nb\\r\\tc" ctl="\\x01\\x7f" eq="k=v"\n')
        d = parse_log_line(line)
        self.assertEqual(d, {
            "ts": "2024-05-01T10:00:00.123Z", "level": "info", "event": "delivered",
            "qid": "ABC123", "rcpt": "bob@example.net",
            "reply": '250 2.0.0 Ok: queued as "X"', "empty": "", "path": "C:\\dir",
            "multi": "a\nb\r\tc", "ctl": "\x01\x7f", "eq": "k=v"})

    def test_odd_input(self):
        self.assertEqual(parse_log_line(""), {})
        self.assertEqual(parse_log_line("event=x  bare key=\"unterminated"),
                         {"event": "x", "bare": None, "key": "unterminated"})
        self.assertEqual(parse_log_line(b'event=y v="caf\xc3\xa9 \\q"'),
                         {"event": "y", "v": "caf\u00e9 \\q"})

    def test_round_trip_with_the_c_quoting_rules(self):
        # the quoting rules of common/log.c, in Python
        def quote(v):
            if v and not any(ord(c) <= 32 or c in '"\\=' or ord(c) == 127 for c in v):
                return v
            out = ""
            for c in v:
                out += {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r",
                        "\t": "\\t"}.get(c, "\\x%02x" % ord(c) if ord(c) < 32 or ord(c) == 127 else c)
            return '"' + out + '"'
        values = ["", "plain", "with space", 'q"uote', "back\\slash", "a=b", "\x00\x1b",
                  "tab\there", "über", "end\\"]
        line = "event=t " + " ".join("k%d=%s" % (i, quote(v)) for i, v in enumerate(values))
        d = parse_log_line(line)
        self.assertEqual([d["k%d" % i] for i in range(len(values))], values)


class LibconfigTest(unittest.TestCase):

    def test_serializer(self):
        text = to_libconfig({
            "hostname": 'relay "test"\\\n',
            "n": 3, "big": 2**40, "on": True, "off": False, "skip": None,
            "submit": {"listen": ["127.0.0.1:1", "127.0.0.1:2"], "max_recipients": 3,
                       "empty": []},
            "router": {"routes": [{"domain": "x.test", "hosts": ["127.0.0.5:2525"]}],
                       "tuple": ("a",), "host_backoff": ["1s", "2s"]},
            "e": {"routes": []},
        })
        self.assertEqual(text, textwrap.dedent('''\
            hostname = "relay \\"test\\"\\\\\\n";
            n = 3;
            big = 1099511627776L;
            on = true;
            off = false;
            submit = {
            \tlisten = [ "127.0.0.1:1", "127.0.0.1:2" ];
            \tmax_recipients = 3;
            \tempty = [ ];
            };
            router = {
            \troutes = (
            \t\t{
            \t\t\tdomain = "x.test";
            \t\t\thosts = [ "127.0.0.5:2525" ];
            \t\t}
            \t);
            \ttuple = (
            \t\t"a"
            \t);
            \thost_backoff = [ "1s", "2s" ];
            };
            e = {
            \troutes = ( );
            };
            '''))

    def test_merge(self):
        base = {"a": {"b": 1, "c": 2}, "d": 3}
        relaymod.merge(base, {"a": {"b": 5, "c": None}, "d": [1], "e": {"f": 1}})
        self.assertEqual(base, {"a": {"b": 5}, "d": [1], "e": {"f": 1}})


# ---------------------------------------------------------------------------
# The Relay fixture, with a stand-in relayd
# ---------------------------------------------------------------------------

FAKE_RELAYD = r'''#!/usr/bin/env python3
# A stand-in for relayd: reads the few settings it needs from the config,
# listens, makes the control socket, logs events, exits on SIGTERM.
import re, signal, socket, sys, os, time
args = sys.argv[1:]
conf = open(args[args.index("-c") + 1]).read()
if "-n" in args:
    if "bad" in conf:
        sys.stderr.write("%s:1: bad setting\n" % args[args.index("-c") + 1])
        sys.exit(1)
    sys.exit(0)
def get(key):
    return re.search(r'\b%s = "([^"]*)"' % key, conf).group(1)
log = open(get("log_file"), "a")
def event(name, **kv):
    log.write("ts=2024-01-01T00:00:00Z level=info event=%s %s\n" % (name,
        " ".join('%s="%s"' % (k, str(v).replace("\\", "\\\\").replace('"', '\\"'))
                 for k, v in kv.items())))
    log.flush()
listen = re.search(r'listen = \[ "([\d.]+):(\d+)"', conf)
time.sleep(0.2)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((listen.group(1), int(listen.group(2)))); s.listen(5)
u = socket.socket(socket.AF_UNIX); u.bind(get("control_socket")); u.listen(1)
event("started", pid=os.getpid())
event("queue_loaded", messages=0)       # its scan of msg/ is over: Relay.start() waits for it
def term(*a):
    event("stopped", reason="signal")
    os.unlink(get("control_socket"))
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
signal.signal(signal.SIGHUP, lambda *a: event("reloaded", note='he said "hi"'))
while True:
    time.sleep(0.05)
'''


class RelayFixtureTest(unittest.TestCase):

    def setUp(self):
        self.bindir = tempfile.mkdtemp(prefix="fake-relayd-")
        self.addCleanup(lambda: __import__("shutil").rmtree(self.bindir, True))
        self.fake = os.path.join(self.bindir, "relayd")
        with open(self.fake, "w") as f:
            f.write(FAKE_RELAYD.replace("/usr/bin/env python3", sys.executable, 1))
        os.chmod(self.fake, 0o755)
        old = os.environ.get("RELAYD_BIN")
        os.environ["RELAYD_BIN"] = self.fake
        self.addCleanup(lambda: os.environ.__setitem__("RELAYD_BIN", old) if old is not None
                        else os.environ.pop("RELAYD_BIN", None))

    def test_files_config_and_process_handling(self):
        r = Relay.for_test(self, submit={"max_recipients": 3},
                           router={"routes": [{"domain": "x.test", "hosts": ["127.0.0.5:2525"]}]},
                           deliver={"connect_timeout": None})
        # files
        users = subprocess.run(["sasldblistusers2", "-f", r.sasldb], capture_output=True,
                               text=True).stdout
        self.assertIn("alice@relay.test", users)
        self.assertIn("bob@relay.test", users)
        r.add_user("carol", "carolpw")
        self.assertIn("carol@relay.test", subprocess.run(
            ["sasldblistusers2", "-f", r.sasldb], capture_output=True, text=True).stdout)
        self.assertIn("alice: alice@example.org, @alice.test", read(r.senders_path))
        r.set_senders("carol: carol@example.org\n")
        self.assertEqual(read(r.senders_path), "carol: carol@example.org\n")
        cert_text = subprocess.run(["openssl", "x509", "-in", r.cert, "-noout", "-text"],
                                   capture_output=True, text=True).stdout
        self.assertIn("DNS:relay.test", cert_text)
        self.assertIn("IP Address:127.0.0.1", cert_text)
        self.assertEqual(relaymod.test_cert(), (r.cert, r.key))      # one per process
        conf = r.config_text()
        self.assertIn('hostname = "relay.test";', conf)
        self.assertIn('listen = [ "127.0.0.1:%d" ];' % r.submit_port, conf)
        self.assertIn('listen_tls = [ "127.0.0.1:%d" ];' % r.tls_port, conf)
        self.assertIn('dns_servers = [ "127.0.0.1:%d" ];' % r.dns.port, conf)
        self.assertIn("smtp_port = %d;" % r.smtp_port, conf)
        self.assertIn("max_recipients = 3;", conf)
        self.assertIn('hosts = [ "127.0.0.5:2525" ];', conf)
        self.assertNotIn("connect_timeout", conf)
        self.assertEqual(len({r.submit_port, r.tls_port, r.smtp_port}), 3)
        # process
        self.assertEqual(r.check_config(), (0, ""))
        bad = os.path.join(r.tmpdir, "bad.conf")
        with open(bad, "w") as f:
            f.write("bad = 1;\n")
        rc, err = r.check_config(bad)
        self.assertEqual(rc, 1)
        self.assertIn("bad.conf:1:", err)
        r.start()
        self.assertTrue(r.running)
        self.assertTrue(os.path.exists(r.control_socket))
        started = r.wait_for_log("started", timeout=5)
        self.assertEqual(started["pid"], str(r.pid))
        mark = r.log_mark()
        r.sighup()
        d = r.wait_for_log("reloaded", timeout=5, since=mark)
        self.assertEqual(d["note"], 'he said "hi"')
        self.assertEqual(r.count_log("reloaded"), 1)
        with self.assertRaises(RelayError) as cm:
            r.wait_for_log("never", timeout=0.3)
        self.assertIn("event=started", str(cm.exception))
        self.assertEqual(r.stop(), 0)
        self.assertFalse(r.running)
        r.start()
        self.assertEqual(r.count_log("started"), 2)
        self.assertEqual(r.kill9(), -9)

    def test_a_half_written_last_line_is_not_a_line_yet(self):
        # test_policy_visible once read "delivered ... attempts=1" without its
        # tls= key: the reader caught relayd's write(2) half copied
        r = Relay.for_test(self)
        os.makedirs(os.path.dirname(r.log_path), exist_ok=True)
        with open(r.log_path, "w") as f:
            f.write("ts=1 level=info event=started pid=1\n"
                    "ts=2 level=info event=delivered qid=Q1 attempts=1")
        self.assertEqual([d["event"] for d in r.log_lines()], ["started"])
        self.assertEqual(r.find_log("delivered"), [])
        with open(r.log_path, "a") as f:
            f.write(" tls=none\n")
        self.assertEqual(r.find_log("delivered")[0]["tls"], "none")

    def test_start_failure_reports_stderr(self):
        with open(self.fake, "w") as f:
            f.write("#!/bin/sh\necho 'relayd: cannot open queue' >&2\nexit 2\n")
        r = Relay.for_test(self)
        with self.assertRaises(RelayError) as cm:
            r.start(timeout=5)
        self.assertIn("exited with 2", str(cm.exception))
        self.assertIn("cannot open queue", str(cm.exception))

    def test_context_manager_starts_and_stops(self):
        with Relay(users={"solo": "pw"}) as r:
            self.assertTrue(r.running)
            tmp = r.tmpdir
            sink = r.sink("127.0.0.4")
            self.assertEqual(sink.port, r.smtp_port)
            with socket.create_connection(("127.0.0.4", r.smtp_port), timeout=2):
                pass
            self.assertEqual(r.users, {"solo": "pw"})
        self.assertFalse(r.running)
        self.assertFalse(os.path.exists(tmp))
        self.assertFalse(sink.listening)


if __name__ == "__main__":
    unittest.main()
