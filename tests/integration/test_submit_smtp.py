"""test_submit_smtp.py - the submission server's SMTP dialogue (RFC 5321,
RFC 6409): EHLO keywords before and after TLS, every command's reply and
enhanced status code, sequence errors, MAIL/RCPT syntax, PIPELINING (and
its refusal before AUTH), DSN/SMTPUTF8/8BITMIME parameters kept in the
queued envelope, IPv6 listeners, and one session driven by swaks.

The router only queues here: QueueOnlyRelay routes every domain to a
loopback port where nothing listens and backs off for an hour, so results
are read straight from queue_dir/msg/<qid>.  The helpers at the top are
shared by the other test_submit_*.py files.
"""

import base64
import os
import shutil
import socket
import subprocess
import time
import unittest

from client import connect, make_message, raw_session, submit
from relay import Relay as _Relay, merge


class QueueOnlyRelay(_Relay):
    """A Relay whose mail stays queued: every domain goes to 127.0.0.1:9
    (nothing listens there), and a failed host is left alone for an hour."""

    def __init__(self, *args, **overrides):
        held = {"router": {"routes": [{"domain": "*", "hosts": ["127.0.0.1:9"]}],
                           "host_backoff": ["1h", "1h"], "retry_intervals": ["1h"]}}
        merge(held, overrides)
        super().__init__(*args, **held)


Relay = QueueOnlyRelay

USERS_PLAIN = base64.b64encode(b"\0alice\0alicepw").decode()


# ---------------------------------------------------------------------------
# helpers shared by the test_submit_*.py files
# ---------------------------------------------------------------------------

def _unescape(field):
    """A queue-file envelope field: "-" is None, "\\e" is "", \\s \\\\ \\xHH."""
    if field == "-":
        return None
    if field == "\\e":
        return ""
    out, i = [], 0
    while i < len(field):
        c = field[i]
        if c == "\\" and i + 1 < len(field):
            e = field[i + 1]
            if e == "s":
                out.append(" ")
                i += 2
                continue
            if e == "\\":
                out.append("\\")
                i += 2
                continue
            if e == "x":
                out.append(chr(int(field[i + 2:i + 4], 16)))
                i += 4
                continue
        out.append(c)
        i += 1
    return "".join(out)


def _list_msg(relay):
    d = os.path.join(relay.queue_dir, "msg")
    return sorted(n for n in os.listdir(d) if not n.startswith(".")) if os.path.isdir(d) else []


def queued_files(relay, settle=0.1):
    """The queue ids with a file in queue_dir/msg/, once the listing has
    stopped changing for `settle` seconds: a message is acknowledged from
    the journal and gets its msg/ file a moment later (queue/QUEUE.md)."""
    last, deadline = _list_msg(relay), time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(settle)
        cur = _list_msg(relay)
        if cur == last:
            return cur
        last = cur
    return last


def read_queued(relay, qid, timeout=10):
    """(envelope dict, body bytes) of queue_dir/msg/<qid>, waiting for the
    file to be published.  The envelope has one entry per key ("sender",
    "envid", "ret", "body", "smtputf8", "user", "client") plus "rcpts":
    [(notify, addr, orcpt)]."""
    path = os.path.join(relay.queue_dir, "msg", qid)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    with open(path, "rb") as f:
        data = f.read()
    first = data.split(b"\n", 1)[0].split()
    if first[0] != b"RELAYQ":
        raise AssertionError("not a queue file: %r" % first)
    off, blen = int(first[2], 16), int(first[3], 16)
    head = data[:off].decode("utf-8")
    env = {"rcpts": []}
    for line in head.split("\n")[1:]:
        if line in ("", "."):
            continue
        key, _, rest = line.partition(" ")
        fields = rest.split(" ")
        if key == "rcpt":
            env["rcpts"].append((fields[0], _unescape(fields[1]), _unescape(fields[2])))
        elif key in ("sender", "envid", "user"):
            env[key] = _unescape(fields[0])
        else:
            env[key] = rest
    return env, data[off:off + blen]


def auth_session(relay, tls=False, user="alice", password="alicepw", ehlo="client.test"):
    """A RawSession after EHLO, STARTTLS (unless tls), EHLO and AUTH PLAIN."""
    r = raw_session(relay.host, relay.tls_port if tls else relay.submit_port, tls=tls)
    try:
        assert r.greeting[0] == 220, r.greeting
        if not tls:
            assert r.cmd("EHLO " + ehlo)[0] == 250
            assert r.starttls()[0] == 220
        assert r.cmd("EHLO " + ehlo)[0] == 250
        resp = base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()
        code, text = r.cmd("AUTH PLAIN " + resp)
        assert code == 235, (code, text)
    except BaseException:
        r.close()
        raise
    return r


def send_message(r, mail_from, rcpts, msg):
    """MAIL, RCPT..., DATA, the message on a RawSession; the final reply."""
    assert r.cmd("MAIL FROM:<%s>" % mail_from)[0] == 250
    for rc in rcpts:
        assert r.cmd("RCPT TO:<%s>" % rc)[0] == 250
    assert r.cmd("DATA")[0] == 354
    if isinstance(msg, str):
        msg = msg.encode()
    r.send(msg + b".\r\n")
    return r.read_reply()


def qid_of(text):
    return text.rsplit(" ", 1)[-1]


def stop_cleanly(relay):
    """Stop relayd (SIGTERM) and clean up; its exit code must be 0 (every
    handle closed, nothing leaked under the sanitizers)."""
    rc = relay.stop()
    relay.close()
    if rc not in (0, None):
        raise AssertionError("relayd exited with %s\n%s" % (rc, relay.diagnostics()))


# ---------------------------------------------------------------------------

class SubmitSMTPTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.relay = Relay()
        cls.relay.start()

    @classmethod
    def tearDownClass(cls):
        stop_cleanly(cls.relay)

    def session(self, **kw):
        r = auth_session(self.relay, **kw)
        self.addCleanup(r.close)
        return r

    def test_ehlo_before_tls_offers_starttls_and_no_auth(self):
        with raw_session(self.relay.host, self.relay.submit_port) as r:
            self.assertEqual(r.greeting, (220, "relay.test ESMTP relayd"))
            code, lines = (r.send("EHLO client.test\r\n"), r.read_reply_lines())[1]
            self.assertEqual(code, 250)
            self.assertEqual(lines, ["relay.test", "PIPELINING", "SIZE 26214400", "8BITMIME",
                                     "CHUNKING", "ENHANCEDSTATUSCODES", "STARTTLS", "DSN",
                                     "SMTPUTF8"])

    def test_ehlo_after_tls_offers_auth_and_no_starttls(self):
        with raw_session(self.relay.host, self.relay.submit_port) as r:
            r.cmd("EHLO client.test")
            self.assertEqual(r.starttls(), (220, "2.0.0 Ready to start TLS"))
            code, lines = (r.send("EHLO client.test\r\n"), r.read_reply_lines())[1]
            self.assertEqual(code, 250)
            self.assertIn("AUTH PLAIN LOGIN", lines)
            self.assertNotIn("STARTTLS", lines)
            for kw in ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "DSN", "SMTPUTF8"):
                self.assertIn(kw, lines)

    def test_helo_noop_vrfy_help_rset_quit(self):
        with raw_session(self.relay.host, self.relay.submit_port) as r:
            self.assertEqual(r.cmd("HELO client.test"), (250, "relay.test"))
            self.assertEqual(r.cmd("NOOP"), (250, "2.0.0 Ok"))
            self.assertEqual(r.cmd("NOOP whatever"), (250, "2.0.0 Ok"))
            code, text = r.cmd("VRFY bob@example.net")
            self.assertEqual((code, text[:5]), (252, "2.0.0"))
            self.assertEqual(r.cmd("VRFY")[0], 501)
            code, text = r.cmd("HELP")
            self.assertEqual((code, text[:5]), (214, "2.0.0"))
            self.assertEqual(r.cmd("RSET"), (250, "2.0.0 Ok"))
            self.assertEqual(r.cmd("RSET now")[0], 501)
            self.assertEqual(r.cmd("QUIT"), (221, "2.0.0 Bye"))
            self.assertTrue(r.wait_closed())

    def test_unknown_and_malformed_commands(self):
        with raw_session(self.relay.host, self.relay.submit_port) as r:
            self.assertEqual(r.cmd("FOO bar"), (500, "5.5.2 Error: command not recognized"))
            self.assertEqual(r.cmd("EXPN staff")[0], 500)
            self.assertEqual(r.cmd("EHLO"), (501, "5.5.4 Syntax: EHLO hostname"))
            self.assertEqual(r.cmd("HELO two words")[0], 501)
            self.assertEqual(r.cmd("ehlo client.test")[0], 250)      # verbs: any case

    def test_sequence_errors(self):
        with raw_session(self.relay.host, self.relay.submit_port) as r:
            self.assertEqual(r.cmd("MAIL FROM:<alice@example.org>"),
                             (503, "5.5.1 Error: send HELO/EHLO first"))
            r.cmd("EHLO client.test")
            self.assertEqual(r.cmd("MAIL FROM:<alice@example.org>"),
                             (530, "5.7.0 Must issue a STARTTLS command first"))
            self.assertEqual(r.cmd("STARTTLS now")[0], 501)
            r.starttls()
            self.assertEqual(r.cmd("MAIL FROM:<alice@example.org>"),
                             (503, "5.5.1 Error: send HELO/EHLO first"))   # forgotten by TLS
            r.cmd("EHLO client.test")
            self.assertEqual(r.cmd("MAIL FROM:<alice@example.org>"),
                             (530, "5.7.0 Authentication required"))
            self.assertEqual(r.cmd("STARTTLS"), (503, "5.5.1 Error: TLS already active"))
            self.assertEqual(r.cmd("AUTH PLAIN " + USERS_PLAIN)[0], 235)
            self.assertEqual(r.cmd("AUTH PLAIN " + USERS_PLAIN),
                             (503, "5.5.1 Error: already authenticated"))
            self.assertEqual(r.cmd("RCPT TO:<bob@example.net>"),
                             (503, "5.5.1 Error: need MAIL command"))
            self.assertEqual(r.cmd("DATA"), (503, "5.5.1 Error: need MAIL command"))
            self.assertEqual(r.cmd("MAIL FROM:<alice@example.org>"), (250, "2.1.0 Ok"))
            self.assertEqual(r.cmd("DATA"), (503, "5.5.1 Error: need RCPT command"))
            self.assertEqual(r.cmd("MAIL FROM:<alice@example.org>")[0], 503)   # nested
            self.assertEqual(r.cmd("RCPT TO:<bob@example.net>"), (250, "2.1.5 Ok"))
            self.assertEqual(r.cmd("DATA now")[0], 501)
            self.assertEqual(r.cmd("RSET"), (250, "2.0.0 Ok"))
            self.assertEqual(r.cmd("RCPT TO:<bob@example.net>")[0], 503)       # RSET forgot it

    def test_mail_and_rcpt_syntax(self):
        r = self.session()
        cases = [
            ("MAIL FROM:alice@example.org", 501, "5.5.4"),
            ("MAIL TO:<alice@example.org>", 501, "5.5.4"),
            ("MAIL FROM:<alice@>", 501, "5.1.7"),
            ("MAIL FROM:<al..ice@example.org>", 501, "5.1.7"),
            ("MAIL FROM:<alice@example.org> FOO=1", 555, "5.5.4"),
            ("MAIL FROM:<alice@example.org> SIZE=12x", 501, "5.5.4"),
            ("MAIL FROM:<alice@example.org> BODY=BINARYMIME", 501, "5.5.4"),
            ("MAIL FROM:<alice@example.org> RET=SOME", 501, "5.5.4"),
            ("MAIL FROM:<alice@example.org> ENVID=a=b", 501, "5.5.4"),
            ("MAIL FROM:<alice@example.org> SIZE=1 SIZE=2", 501, "5.5.4"),
        ]
        for line, code, status in cases:
            got = r.cmd(line)
            self.assertEqual((got[0], got[1][:5]), (code, status), line)
        # quoted local parts are canonicalised, source routes dropped
        self.assertEqual(r.cmd('MAIL FROM:<"alice"@example.org>')[0], 250)
        rc_cases = [
            ("RCPT TO:<>", 501, "5.1.3"),
            ("RCPT TO:bob@example.net", 501, "5.5.4"),
            ("RCPT TO:<bob@exa mple.net>", 501, "5.1.3"),
            ("RCPT TO:<bob@example.net> NOTIFY=SOMETIMES", 501, "5.5.4"),
            ("RCPT TO:<bob@example.net> NOTIFY=NEVER,SUCCESS", 501, "5.5.4"),
            ("RCPT TO:<bob@example.net> ORCPT=bob@example.net", 501, "5.5.4"),
            ("RCPT TO:<bob@example.net> XYZZY", 555, "5.5.4"),
        ]
        for line, code, status in rc_cases:
            got = r.cmd(line)
            self.assertEqual((got[0], got[1][:5]), (code, status), line)
        self.assertEqual(r.cmd("RCPT TO:<@hop.example:bob@example.net>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<Postmaster>")[0], 250)
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send("Subject: syntax\r\n\r\nhi\r\n.\r\n")
        code, text = r.read_reply()
        self.assertEqual(code, 250)
        env, _ = read_queued(self.relay, qid_of(text))
        self.assertEqual(env["sender"], "alice@example.org")
        self.assertEqual([a for _, a, _ in env["rcpts"]], ["bob@example.net", "postmaster"])

    def test_pipelined_transactions_get_replies_in_order(self):
        r = self.session()
        msg = make_message("alice@example.org", "bob@example.net", "one", "first")
        r.send("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n"
               "RCPT TO:<bad address>\r\nRCPT TO:<carol@example.net>\r\nDATA\r\n")
        replies = [r.read_reply()[0] for _ in range(5)]
        self.assertEqual(replies, [250, 250, 501, 250, 354])
        # the end of data, then a whole second transaction, in one write
        msg2 = make_message("alice@example.org", "dave@example.net", "two", "second")
        r.send(msg + ".\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<dave@example.net>\r\n"
               "DATA\r\n")
        first = r.read_reply()
        self.assertEqual(first[0], 250)
        self.assertIn("queued as", first[1])
        self.assertEqual([r.read_reply()[0] for _ in range(3)], [250, 250, 354])
        r.send(msg2 + ".\r\n")
        second = r.read_reply()
        self.assertEqual(second[0], 250)
        env1, body1 = read_queued(self.relay, qid_of(first[1]))
        env2, body2 = read_queued(self.relay, qid_of(second[1]))
        self.assertEqual([a for _, a, _ in env1["rcpts"]], ["bob@example.net", "carol@example.net"])
        self.assertEqual([a for _, a, _ in env2["rcpts"]], ["dave@example.net"])
        self.assertIn(b"Subject: one\r\n", body1)
        self.assertIn(b"Subject: two\r\n", body2)

    def test_nothing_may_be_pipelined_behind_ehlo_before_auth(self):
        with raw_session(self.relay.host, self.relay.submit_port) as r:
            r.cmd("EHLO client.test")
            r.starttls()
            r.send("EHLO client.test\r\nNOOP\r\n")
            self.assertEqual(r.read_reply()[0], 250)
            self.assertEqual(r.read_reply(),
                             (503, "5.5.0 Error: improper use of SMTP command pipelining"))
            self.assertEqual(r.cmd("NOOP"), (250, "2.0.0 Ok"))  # not pipelined: fine

    def test_dsn_parameters_are_kept_with_the_message(self):
        r = self.session()
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.org> RET=HDRS ENVID=QQ+2B1 "
                               "SIZE=100")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE "
                               "ORCPT=rfc822;bob+2Bx@example.net")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<carol@example.net> NOTIFY=NEVER")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<dave@example.net>")[0], 250)
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send("Subject: dsn\r\n\r\nx\r\n.\r\n")
        code, text = r.read_reply()
        self.assertEqual(code, 250)
        env, _ = read_queued(self.relay, qid_of(text))
        self.assertEqual(env["envid"], "QQ+1")
        self.assertEqual(env["ret"], "HDRS")
        self.assertEqual(env["rcpts"], [("SUCCESS,FAILURE", "bob@example.net", "rfc822;bob+x@example.net"),
                                        ("NEVER", "carol@example.net", None),
                                        ("-", "dave@example.net", None)])

    def test_smtputf8_and_8bitmime_are_kept(self):
        r = self.session()
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.org>")[0], 250)
        code, text = r.cmd("RCPT TO:<j\u00f6rg@example.net>")
        self.assertEqual((code, text[:5]), (553, "5.6.7"))     # needs SMTPUTF8
        r.cmd("RSET")
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.org> SMTPUTF8 BODY=8BITMIME")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<j\u00f6rg@b\u00fccher.example>")[0], 250)
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send("Subject: gr\u00fc\u00dfe\r\n\r\nK\u00e4se\r\n.\r\n")
        code, text = r.read_reply()
        self.assertEqual(code, 250)
        env, body = read_queued(self.relay, qid_of(text))
        self.assertEqual(env["smtputf8"], "1")
        self.assertEqual(env["body"], "8BITMIME")
        self.assertEqual(env["rcpts"][0][1], "j\u00f6rg@b\u00fccher.example")
        self.assertIn("K\u00e4se\r\n".encode(), body)
        self.assertIn(b"with UTF8SMTPSA id", body)

    def test_553_never_echoes_8bit_bytes_without_smtputf8(self):
        # A client that did not ask for SMTPUTF8 gets no raw 8-bit bytes back
        # (RFC 6531 3.7.4.2: UTF-8 in replies only after SMTPUTF8).
        r = self.session()
        code, text = r.cmd("MAIL FROM:<j\u00f6rg@example.org>")
        self.assertEqual((code, text[:5]), (553, "5.6.7"))
        self.assertTrue(text.isascii(), text)
        self.assertIn("<j??rg@example.org>", text)
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.org>")[0], 250)
        code, text = r.cmd("RCPT TO:<j\u00f6rg@b\u00fccher.example>")
        self.assertEqual((code, text[:5]), (553, "5.6.7"))
        self.assertTrue(text.isascii(), text)
        r.cmd("RSET")
        # with SMTPUTF8 the address is the client's own, as it gave it
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.org> SMTPUTF8")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<j\u00f6rg@b\u00fccher.example>")[0], 250)

    def test_smtplib_submission_on_both_ports(self):
        msg = make_message("alice@example.org", "bob@example.net", "ports", "hello")
        for port in ("starttls", "tls"):
            qid = submit(self.relay, "alice@example.org", ["bob@example.net"], msg, port=port)
            env, body = read_queued(self.relay, qid)
            self.assertEqual(env["user"], "alice")
            self.assertIn(b"\r\n\r\nhello\r\n", body)
            self.relay.wait_for_log("accepted", qid=qid, user="alice", nrcpt=1,
                                    client="127.0.0.1", **{"from": "alice@example.org"})

    @unittest.skipUnless(shutil.which("swaks"), "swaks not installed")
    def test_swaks_submission_with_starttls_and_auth(self):
        r = subprocess.run(["swaks", "--server", "%s:%d" % (self.relay.host, self.relay.submit_port),
                            "--tls", "--auth", "LOGIN", "--auth-user", "alice",
                            "--auth-password", "alicepw", "--from", "alice@example.org",
                            "--to", "bob@example.net", "--helo", "swaks.test",
                            "--header", "Subject: from swaks", "--pipeline"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        m = [l for l in r.stdout.splitlines() if "queued as" in l]
        self.assertTrue(m, r.stdout)
        env, body = read_queued(self.relay, m[0].rsplit(" ", 1)[-1])
        self.assertEqual(env["sender"], "alice@example.org")
        self.assertIn(b"Subject: from swaks", body)
        self.assertIn(b"Received: from swaks.test ([127.0.0.1])", body)


class SubmitShutdownTest(unittest.TestCase):

    def test_sigterm_says_421_to_open_sessions_and_queues_nothing_half_done(self):
        relay = Relay.for_test(self)
        relay.start()
        idle = raw_session(relay.host, relay.submit_port)
        self.addCleanup(idle.close)
        busy = auth_session(relay, tls=True)
        self.addCleanup(busy.close)
        busy.cmd("MAIL FROM:<alice@example.org>")
        busy.cmd("RCPT TO:<bob@example.net>")
        self.assertEqual(busy.cmd("DATA")[0], 354)
        busy.send("Subject: half\r\n\r\nnot finished\r\n")
        self.assertEqual(idle.cmd("NOOP")[0], 250)
        self.assertEqual(relay.stop(), 0)
        for r in (idle, busy):
            code, text = r.read_reply()
            self.assertEqual((code, text), (421, "4.3.2 relay.test Service shutting down, "
                                                 "closing connection"))
            self.assertTrue(r.wait_closed())
        self.assertEqual(queued_files(relay), [])


def _have_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


class SubmitIPv6Test(unittest.TestCase):

    @unittest.skipUnless(_have_ipv6_loopback(), "no IPv6 loopback")
    def test_ipv6_listeners_for_starttls_and_implicit_tls(self):
        relay = Relay.for_test(self)
        from relay import free_port
        p1, p2 = free_port(("::1",)), free_port(("::1",))
        relay.update_config(submit={"listen": ["[::1]:%d" % p1], "listen_tls": ["[::1]:%d" % p2]})
        relay.start()
        relay.host, relay.submit_port, relay.tls_port = "::1", p1, p2
        msg = make_message("alice@example.org", "bob@example.net", "v6", "over IPv6")
        for port in ("starttls", "tls"):
            qid = submit(relay, "alice@example.org", ["bob@example.net"], msg, port=port)
            env, body = read_queued(relay, qid)
            self.assertEqual(env["client"].split(" ")[0], "::1")
            self.assertIn(b"[IPv6:::1]", body)


if __name__ == "__main__":
    unittest.main()
