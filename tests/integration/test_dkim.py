"""test_dkim.py - DKIM signing at acceptance, checked by an independent verifier.

The real relayd signs what alice submits; the sink MX receives it, and
dkimpy (Debian's python3-dkim) verifies every signature against the public
keys the tests' DNS server publishes (its dnsfunc asks that server over UDP).
Cases: RSA alone, Ed25519 alone, dual; 8-bit and SMTPUTF8 bodies, long
folded headers, a body whose last line has trailing blanks, an empty body,
dot-stuffed lines, a 20 MB message, a message relayd added Date/Message-ID
to (they are signed); a domain without a key arrives unsigned; a tampered
body fails verification (the verifier is not vacuous); the accepted event
and `relayctl queue show` say dkim=; a signature survives a kill -9 right
after the 250 (journal); relayd -n refuses a short RSA key with FILE:LINE;
a second session is answered while a signature is being made (test hook).
"""

import atexit
import os
import re
import shutil
import select
import socket
import subprocess
import sys
import tempfile
import time
import unittest

try:
    import dkim
except ImportError:                         # Debian's python3-dkim, another python
    sys.path.append("/usr/lib/python3/dist-packages")
    import dkim

import dnsserver
from client import connect, make_message, submit
from relay import SLOW, Relay, needs_test_hooks, share_with_user

SENDER = "alice@example.org"
RCPT = "bob@example.net"

_keydir = None


def keydir():
    global _keydir
    if _keydir is None:
        _keydir = tempfile.mkdtemp(prefix="relayd-dkim-")
        share_with_user(_keydir)
        if not os.environ.get("RELAYD_KEEP_TMP"):
            atexit.register(shutil.rmtree, _keydir, True)
    return _keydir


def make_key(name, alg):
    """A PEM private key made with openssl genpkey (alg: rsa2048, rsa1024, ed25519)."""
    path = os.path.join(keydir(), name + ".pem")
    if not os.path.exists(path):
        if alg.startswith("rsa"):
            args = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:%s" % alg[3:]]
        else:
            args = ["-algorithm", "ed25519"]
        subprocess.run(["openssl", "genpkey"] + args + ["-out", path], check=True,
                       capture_output=True)
        share_with_user(path)
    return path


def txt_record(path, alg):
    """The selector's TXT record, made from the key with the openssl CLI."""
    der = subprocess.run(["openssl", "pkey", "-in", path, "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    import base64
    if alg == "ed25519":
        return "v=DKIM1; k=ed25519; p=" + base64.b64encode(der[-32:]).decode()
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def dnsfunc_for(dns):
    """dkimpy's dnsfunc: a TXT query to the tests' DNS server over UDP."""
    host, port = dns.host, dns.port

    def query(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.settimeout(timeout)
            s.sendto(dnsserver.build_query(name.rstrip("."), "TXT"), (host, port))
            reply = dnsserver.parse_message(s.recv(65535))
        finally:
            s.close()
        txts = ["".join(rd) for (_, t, _, rd) in reply["answer"] if t == "TXT"]
        return txts[0].encode() if txts else None
    return query


KEYS = {
    "rsa": ("s2026r", "rsa2048"),
    "ed": ("s2026e", "ed25519"),
}


class DkimCase(unittest.TestCase):

    def make(self, algs=("rsa", "ed"), domain="example.org", extra_keys=(), env=None,
             start=True, sink_kw=None, **overrides):
        keys = []
        self.records = {}
        for a in algs:
            sel, kind = KEYS[a]
            path = make_key("%s.%s" % (domain, sel), kind)
            keys.append({"domain": domain, "selector": sel, "key": path})
            self.records["%s._domainkey.%s" % (sel, domain)] = txt_record(path, kind)
        for (dom, sel, kind) in extra_keys:
            path = make_key("%s.%s" % (dom, sel), kind)
            keys.append({"domain": dom, "selector": sel, "key": path})
            self.records["%s._domainkey.%s" % (sel, dom)] = txt_record(path, kind)
        self.relay = Relay.for_test(self, dkim={"keys": keys}, env=env, **overrides)
        for name, rec in self.records.items():
            self.relay.dns.set_txt(name, rec)
        self.relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        self.relay.dns.set_mx_ips("example.org", [(10, "127.0.0.4")])
        self.sink = self.relay.sink("127.0.0.2", **(sink_kw or {}))
        self.home = self.relay.sink("127.0.0.4")
        self.dnsfunc = dnsfunc_for(self.relay.dns)
        if start:
            self.relay.start()
        return self.relay

    def verify(self, data):
        return dkim.verify(data, dnsfunc=self.dnsfunc)

    def signatures(self, data):
        """[(d, s, a)] of the DKIM-Signature fields of data."""
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        head = re.sub(r"\r\n[ \t]+", " ", head)
        out = []
        for line in head.split("\r\n"):
            if line.lower().startswith("dkim-signature:"):
                tags = dict(t.strip().split("=", 1) for t in line.split(":", 1)[1].split(";")
                            if "=" in t)
                out.append((tags["d"], tags["s"], tags["a"]))
        return out

    def verify_all(self, data, n):
        """Every one of the n signatures verifies (dkimpy checks one at a time)."""
        sigs = self.signatures(data)
        self.assertEqual(len(sigs), n, data[:2000])
        for i in range(n):
            d = dkim.DKIM(data)
            self.assertTrue(d.verify(idx=i, dnsfunc=self.dnsfunc),
                            "signature %d %r does not verify" % (i, sigs[i]))
        return sigs

    def send(self, msg, mail_from=SENDER, rcpts=(RCPT,), **kw):
        """Submit msg; (qid, the message as the sink got it)."""
        self.nsent = getattr(self, "nsent", 0) + 1
        qid = submit(self.relay, mail_from, list(rcpts), msg, **kw)
        got = self.sink.wait_for_messages(self.nsent, timeout=60)
        return qid, got[self.nsent - 1]


class Signing(DkimCase):

    def test_dual_signature_verifies_and_is_logged(self):
        self.make()
        qid, m = self.send(make_message(SENDER, RCPT, "dual", "Hello, world.\r\n"))
        sigs = self.verify_all(m.data, 2)
        self.assertEqual(sorted(sigs), [("example.org", "s2026e", "ed25519-sha256"),
                                        ("example.org", "s2026r", "rsa-sha256")])
        line = self.relay.wait_for_log("accepted", qid=qid)
        self.assertEqual(line["dkim"], "d=example.org;s=s2026r,d=example.org;s=s2026e")

    def test_rsa_alone(self):
        self.make(algs=("rsa",))
        _, m = self.send(make_message(SENDER, RCPT, "rsa", "RSA body\r\n"))
        self.assertEqual(self.verify_all(m.data, 1), [("example.org", "s2026r", "rsa-sha256")])

    def test_ed25519_alone(self):
        self.make(algs=("ed",))
        _, m = self.send(make_message(SENDER, RCPT, "ed", "Ed25519 body\r\n"))
        self.assertEqual(self.verify_all(m.data, 1),
                         [("example.org", "s2026e", "ed25519-sha256")])

    def test_tampered_body_fails(self):
        self.make()
        _, m = self.send(make_message(SENDER, RCPT, "tamper", "Pay 10 EUR.\r\n"))
        self.assertTrue(self.verify(m.data))
        self.assertFalse(self.verify(m.data.replace(b"Pay 10 EUR.", b"Pay 99 EUR.")))
        self.assertFalse(self.verify(m.data.replace(b"Subject: tamper", b"Subject: tamperd")))

    def test_hard_bodies(self):
        self.make()
        long_to = ", ".join("user%d@example.net" % i for i in range(40))
        cases = [
            ("8bit", make_message(SENDER, RCPT, "8bit", "Gr\u00fc\u00dfe, \u00e7a va?\r\n",
                                  extra_headers={"Content-Type": "text/plain; charset=utf-8",
                                                 "Content-Transfer-Encoding": "8bit",
                                                 "MIME-Version": "1.0"}), {}),
            ("folded", make_message(SENDER, RCPT, "folded " + "x" * 300, "long\r\n",
                                    extra_headers=[("Cc", long_to),
                                                   ("References", "\r\n\t".join(
                                                       "<%d@x.test>" % i for i in range(30)))]), {}),
            ("trailing", make_message(SENDER, RCPT, "trailing", "a  \t\r\nb\t\r\n\r\n\r\n"), {}),
            ("empty", make_message(SENDER, RCPT, "empty", ""), {}),
            ("dots", make_message(SENDER, RCPT, "dots", ".\r\n..\r\n.leading dot\r\n"), {}),
            ("wsp", make_message(SENDER, RCPT, "wsp", "   many    spaces\r\n\t\ttabs\r\n"), {}),
        ]
        for name, msg, kw in cases:
            with self.subTest(name):
                _, m = self.send(msg, **kw)
                self.verify_all(m.data, 2)
                if name == "dots":          # unstuffed by the sink: as the client wrote them
                    self.assertTrue(m.data.endswith(b"\r\n\r\n.\r\n..\r\n.leading dot\r\n"))

    def test_smtputf8(self):
        self.make()
        msg = make_message(SENDER, RCPT, "\u00fcber", "\u65e5\u672c\u8a9e\r\n")
        _, m = self.send(msg, mail_options=("SMTPUTF8", "BODY=8BITMIME"))
        self.verify_all(m.data, 2)

    def test_added_date_and_message_id_are_signed(self):
        self.make()
        msg = make_message(SENDER, RCPT, "no date", "body\r\n", date=False, message_id=False)
        _, m = self.send(msg)
        self.verify_all(m.data, 2)
        self.assertIsNotNone(m.header("Date"))
        self.assertIsNotNone(m.header("Message-ID"))
        sig = re.sub(r"\s+", "", m.header("DKIM-Signature"))
        self.assertRegex(sig, r"h=from:from:to:subject:date:message-id;")
        # and it matters: a changed Message-ID breaks it
        changed = re.sub(rb"Message-ID: <[^>]*>", b"Message-ID: <other@x>", m.data)
        self.assertNotEqual(changed, m.data)
        self.assertFalse(self.verify(changed))

    def test_big_message(self):
        self.make(submit={"max_message_size": "30M"}, sink_kw={"ehlo_features": [
            "PIPELINING", "SIZE 40000000", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"]})
        line = "0123456789" * 7 + "\r\n"
        body = line * (20 * 1024 * 1024 // len(line))
        _, m = self.send(make_message(SENDER, RCPT, "big", body), timeout=120)
        self.assertGreater(len(m.data), 20 * 1000 * 1000)
        self.verify_all(m.data, 2)

    def test_domain_without_key_is_unsigned(self):
        self.make()
        qid, m = self.send(make_message("x@alice.test", RCPT, "nokey", "body\r\n"),
                           mail_from="x@alice.test")
        self.assertEqual(self.signatures(m.data), [])
        self.assertEqual(self.relay.wait_for_log("accepted", qid=qid)["dkim"], "none")

    def test_queue_show_and_kill9_keep_the_signature(self):
        # The sink is down: the message stays queued; a kill -9 right after the
        # 250 (the journal holds it) must keep its signature.
        self.make(start=False)
        self.sink.stop()
        self.relay.start()
        qid = submit(self.relay, SENDER, [RCPT], make_message(SENDER, RCPT, "kept", "b\r\n"))
        self.relay.kill9()
        self.relay.start()
        out = self.relay.relayctl("queue", "show", qid, check=True)
        self.assertRegex(out.stdout, r"(?m)^dkim\s+d=example\.org;s=s2026r,d=example\.org;s=s2026e$")
        js = self.relay.relayctl("queue", "show", qid, "--json", json=True)
        self.assertEqual(js["dkim"], "d=example.org;s=s2026r,d=example.org;s=s2026e")


class Reports(DkimCase):

    def test_ndr_is_signed_with_hostnames_domain_key(self):
        # hostname is relay.test: its key signs the report; example.org's keys
        # sign what alice sends
        self.make(extra_keys=[("relay.test", "ndr", "ed25519")], start=False)
        self.sink.script(rcpt={RCPT: "550 5.1.1 <bob@example.net>: no such user"})
        self.relay.start()
        qid = submit(self.relay, SENDER, [RCPT], make_message(SENDER, RCPT, "bounce", "b\r\n"))
        [ndr] = self.home.wait_for_messages(1, timeout=30)
        self.assertEqual(ndr.mail_from, "")
        self.assertEqual(self.verify_all(ndr.data, 1), [("relay.test", "ndr", "ed25519-sha256")])
        self.relay.wait_for_log("ndr", qid=qid)
        self.assertFalse(self.verify(ndr.data.replace(b"no such user", b"no such usex")))


class Admin(DkimCase):

    def test_relayctl_dkim_lists_keys_and_their_records(self):
        self.make()
        out = self.relay.relayctl("dkim", check=True).stdout
        self.assertRegex(out, r"(?m)^example\.org s2026r rsa-sha256 2048 \S+\.pem$")
        self.assertRegex(out, r"(?m)^example\.org s2026e ed25519-sha256 256 \S+\.pem$")
        # the zone-file line's strings, joined, are the record openssl's key gives
        for sel in ("s2026r", "s2026e"):
            name = "%s._domainkey.example.org" % sel
            m = re.search(r"(?m)^    %s\. IN TXT \((.*)\)$" % re.escape(name), out)
            self.assertIsNotNone(m, out)
            parts = re.findall(r'"([^"]*)"', m.group(1))
            self.assertTrue(all(len(p) <= 255 for p in parts))
            self.assertEqual("".join(parts), self.records[name])
        doc = self.relay.relayctl("dkim", "--json", json=True)
        self.assertEqual({(k["record"], k["txt"], k["algorithm"]) for k in doc["keys"]},
                         {("s2026r._domainkey.example.org", self.records[
                             "s2026r._domainkey.example.org"], "rsa-sha256"),
                          ("s2026e._domainkey.example.org", self.records[
                              "s2026e._domainkey.example.org"], "ed25519-sha256")})

    def test_sighup_rereads_the_keys(self):
        # a new selector after a reload signs the next message (as the user)
        self.make(algs=("ed",))
        path = make_key("example.org.s2027e", "ed25519")
        self.relay.dns.set_txt("s2027e._domainkey.example.org", txt_record(path, "ed25519"))
        mark = self.relay.log_mark()
        self.relay.update_config(dkim={"keys": [{"domain": "example.org", "selector": "s2027e",
                                                 "key": path}]})
        self.relay.sighup()
        self.relay.wait_for_log("reloaded", since=mark)
        _, m = self.send(make_message(SENDER, RCPT, "rotated", "body\r\n"))
        self.assertEqual(self.verify_all(m.data, 1), [("example.org", "s2027e", "ed25519-sha256")])


class Config(DkimCase):

    def test_short_rsa_key_is_refused_with_its_line(self):
        self.make(start=False)
        short = make_key("short", "rsa1024")
        self.relay.update_config(dkim={"keys": [{"domain": "example.org", "selector": "old",
                                                 "key": short}]})
        rc, err = self.relay.check_config()
        self.assertNotEqual(rc, 0)
        self.assertRegex(err, r"^%s:\d+: dkim\.keys\[0\]\.key: '%s' is an RSA key of 1024 bits"
                         % (re.escape(self.relay.config_path), re.escape(short)))


class OffTheLoop(DkimCase):

    @needs_test_hooks
    def test_second_session_answered_while_signing(self):
        # The signing sleeps 3 s; TSan runs the session's own work several
        # times slower, so there it sleeps (and the bound below is) SLOW times
        # as long: the second session must be served well inside the sleep,
        # which signing on the loop would make it wait for.
        self.make(env={"RELAYD_TEST_DKIM_DELAY_MS": str(3000 * SLOW)})
        s = connect(self.relay, starttls=True, login=("alice", "alicepw"))
        s.docmd("MAIL", "FROM:<%s>" % SENDER)
        s.docmd("RCPT", "TO:<%s>" % RCPT)
        s.docmd("DATA")
        s.send(make_message(SENDER, RCPT, "slow", "body\r\n").encode() + b".\r\n")
        # while the signing work sleeps on the thread pool, a new session is served
        t0 = time.monotonic()
        s2 = connect(self.relay, starttls=False, login=None)
        code, _ = s2.ehlo("second.test")
        self.assertEqual(code, 250)
        self.assertLess(time.monotonic() - t0, 2.5 * SLOW)
        # the first has no answer yet: its signature is still being made
        r, _, _ = select.select([s.sock], [], [], 0)
        self.assertEqual(r, [])
        code, resp = s.getreply()
        self.assertEqual(code, 250, resp)
        s2.quit()
        s.quit()
        [m] = self.sink.wait_for_messages(1)
        self.verify_all(m.data, 2)


if __name__ == "__main__":
    unittest.main()
