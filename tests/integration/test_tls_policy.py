"""test_tls_policy.py - the submission server's TLS policy (common/io_tls.c),
by real handshakes on both ports (587 STARTTLS, 465 implicit TLS): Mozilla's
"intermediate" profile by default (TLS 1.2 with ECDHE + AES-GCM/ChaCha20, TLS
1.3; no suite without forward secrecy, no CBC, no finite-field DHE, groups
X25519/P-256/P-384, no RFC 5077 session tickets), submit.tls_ciphers and
submit.tls_min_version changing it (also on SIGHUP), and `relayd -n` naming
FILE:LINE for a value OpenSSL does not take.  test_tls_scan.py runs
testssl.sh over the same.
"""

import re
import socket
import ssl
import subprocess
import tempfile
import unittest
import warnings

from client import raw_session
from relay import make_cert, share_with_user
from test_submit_smtp import QueueOnlyRelay as Relay
from test_submit_smtp import stop_cleanly

PROTOCOLS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1,
             "TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}

# Alerts the server sends when it will not agree; anything else (a client-side
# "no ciphers available", a reset) would not show the server's choice.
REFUSALS = ("SSLV3_ALERT_HANDSHAKE_FAILURE", "TLSV1_ALERT_PROTOCOL_VERSION",
            "UNSUPPORTED_PROTOCOL", "NO_SHARED_CIPHER")


def client_ctx(version, cipher=None):
    """A client that offers exactly one protocol version (and for TLS 1.2 and
    below exactly the given suites).  Old versions need security level 0 in
    the client's OpenSSL, or it would not offer them at all."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version in ("TLSv1", "TLSv1.1"):
        ctx.set_ciphers((cipher or "ALL") + ":@SECLEVEL=0")
    elif cipher is not None:
        ctx.set_ciphers(cipher)
    with warnings.catch_warnings():     # ssl deprecates naming TLS 1.0/1.1
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = PROTOCOLS[version]
    return ctx


def handshake(relay, port, ctx, session=None):
    """A TLS handshake with relayd on "starttls" (587) or "tls" (465): the
    ssl socket, open (the caller closes it)."""
    if port == "starttls":
        r = raw_session(relay.host, relay.submit_port)
        try:
            r.cmd("EHLO client.test")
            code, text = r.cmd("STARTTLS")
            if code != 220:
                raise AssertionError("STARTTLS: %d %s" % (code, text))
            return ctx.wrap_socket(r.sock, session=session)
        except BaseException:
            r.close()
            raise
    sock = socket.create_connection((relay.host, relay.tls_port), timeout=10)
    try:
        return ctx.wrap_socket(sock, session=session)
    except BaseException:
        sock.close()
        raise


def smtp_quit(s, port):
    """QUIT over TLS and read up to the server's close (on 465 the greeting
    comes first)."""
    f = s.makefile("rb")
    if port == "tls":
        assert f.readline().startswith(b"220 ")
    s.sendall(b"QUIT\r\n")
    assert f.readline().startswith(b"221 ")
    assert f.read() == b""


def negotiate(relay, port, version, cipher=None):
    """(version, cipher) agreed, or ("refused", reason) after the server's alert."""
    try:
        s = handshake(relay, port, client_ctx(version, cipher))
    except ssl.SSLError as e:
        if e.reason not in REFUSALS:
            raise
        return "refused", e.reason
    with s:
        return s.version(), s.cipher()[0]


def openssl_group(relay, port, group, version):
    """Whether a handshake that offers only this key-exchange group succeeds
    (openssl s_client: Python cannot choose groups)."""
    target = relay.submit_port if port == "starttls" else relay.tls_port
    args = ["openssl", "s_client", "-connect", "%s:%d" % (relay.host, target),
            "-groups", group, "-tls1_3" if version == "TLSv1.3" else "-tls1_2", "-brief"]
    if port == "starttls":
        args += ["-starttls", "smtp"]
    r = subprocess.run(args, input="QUIT\r\n", capture_output=True, text=True, timeout=30)
    return r.returncode == 0 and "Protocol version" in r.stderr, r.stderr


class TLSPolicyCase(unittest.TestCase):
    """Helpers: check rows of (version, cipher, accepted) on both ports."""

    def check_rows(self, relay, rows):
        for port in ("starttls", "tls"):
            for version, cipher, accepted in rows:
                with self.subTest(port=port, version=version, cipher=cipher):
                    got = negotiate(relay, port, version, cipher)
                    if accepted:
                        self.assertEqual(got[0], version)
                        if cipher is not None:
                            self.assertEqual(got[1], cipher)
                    else:
                        self.assertEqual(got[0], "refused", "agreed on %s %s" % got)


class DefaultPolicyRSATest(TLSPolicyCase):
    """An RSA certificate: the one where suites without forward secrecy
    (RSA key transport) could be offered at all."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        share_with_user(cls.dir.name)
        cert, key = make_cert(cls.dir.name, name="rsa", key_type="rsa")
        cls.relay = Relay(submit={"tls_cert": cert, "tls_key": key})
        cls.relay.start()

    @classmethod
    def tearDownClass(cls):
        stop_cleanly(cls.relay)
        cls.dir.cleanup()

    def test_only_forward_secret_aead_suites(self):
        self.check_rows(self.relay, [
            ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", True),
            ("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384", True),
            ("TLSv1.2", "ECDHE-RSA-CHACHA20-POLY1305", True),
            ("TLSv1.3", None, True),
            ("TLSv1.2", "AES128-GCM-SHA256", False),          # RSA key transport
            ("TLSv1.2", "AES256-GCM-SHA384", False),          # RSA key transport
            ("TLSv1.2", "AES128-SHA", False),                 # RSA, CBC
            ("TLSv1.2", "ECDHE-RSA-AES128-SHA256", False),    # CBC
            ("TLSv1.2", "ECDHE-RSA-AES256-SHA", False),       # CBC
            ("TLSv1.2", "DHE-RSA-AES128-GCM-SHA256", False),  # finite-field DHE
            ("TLSv1.2", "DHE-RSA-CHACHA20-POLY1305", False),  # finite-field DHE
        ])

    def test_tls_1_1_and_1_0_are_refused(self):
        self.check_rows(self.relay, [("TLSv1.1", None, False), ("TLSv1", None, False)])

    def test_only_x25519_p256_p384_groups(self):
        rows = [("X25519", True), ("prime256v1", True), ("secp384r1", True),
                ("secp521r1", False), ("X448", False), ("ffdhe2048", False)]
        for port in ("starttls", "tls"):
            for version in ("TLSv1.2", "TLSv1.3"):
                for group, accepted in rows:
                    if group.startswith("ffdhe") and version == "TLSv1.2":
                        continue        # TLS 1.2 names no FFDHE group in ECDHE
                    with self.subTest(port=port, version=version, group=group):
                        ok, err = openssl_group(self.relay, port, group, version)
                        self.assertEqual(ok, accepted, err)

    def test_no_session_tickets_but_resumption_by_session_id(self):
        # A ticket would be sealed with a key that lives as long as relayd.
        ctx = client_ctx("TLSv1.2")
        for port in ("starttls", "tls"):
            with self.subTest(port=port):
                with handshake(self.relay, port, ctx) as s:
                    session = s.session
                    self.assertFalse(session.has_ticket)
                    smtp_quit(s, port)      # a clean end keeps it in the cache
                with handshake(self.relay, port, ctx, session=session) as s:
                    self.assertTrue(s.session_reused)


class DefaultPolicyECDSATest(TLSPolicyCase):
    """The harness's EC P-256 certificate: the ECDSA suites."""

    @classmethod
    def setUpClass(cls):
        cls.relay = Relay()
        cls.relay.start()

    @classmethod
    def tearDownClass(cls):
        stop_cleanly(cls.relay)

    def test_only_forward_secret_aead_suites(self):
        self.check_rows(self.relay, [
            ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256", True),
            ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384", True),
            ("TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305", True),
            ("TLSv1.3", None, True),
            ("TLSv1.2", "ECDHE-ECDSA-AES128-SHA", False),     # CBC
            ("TLSv1.2", "ECDHE-ECDSA-AES128-SHA256", False),  # CBC
            ("TLSv1.2", "ECDHE-ECDSA-AES256-SHA384", False),  # CBC
            ("TLSv1.1", None, False),
        ])


class PolicyKeysTest(TLSPolicyCase):

    def test_tls_ciphers_and_tls_min_version_change_the_policy(self):
        relay = Relay.for_test(self, submit={
            "tls_ciphers": "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-SHA"})
        relay.start()
        # exactly the configured list: narrower, and wider (a CBC suite) too
        self.check_rows(relay, [
            ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384", True),
            ("TLSv1.2", "ECDHE-ECDSA-AES128-SHA", True),
            ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256", False),
            ("TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305", False),
            ("TLSv1.3", None, True),
        ])
        # SIGHUP: TLS 1.3 only, and the default list back
        relay.update_config(submit={"tls_ciphers": None, "tls_min_version": "TLSv1.3"})
        mark = relay.log_mark()
        relay.sighup()
        relay.wait_for_log("reloaded", since=mark)
        self.check_rows(relay, [
            ("TLSv1.3", None, True),
            ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384", False),
            ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256", False),
        ])
        self.assertEqual(relay.stop(), 0, relay.diagnostics())

    def test_relayd_n_names_file_and_line_of_a_bad_value(self):
        relay = Relay.for_test(self)
        rows = [
            ("tls_ciphers", "NO-SUCH-CIPHER", "bad cipher list 'NO-SUCH-CIPHER'"),
            ("tls_ciphers", "", "bad cipher list ''"),
            ("tls_min_version", "TLSv1.1", "unknown TLS version 'TLSv1.1' (use TLSv1.2 or TLSv1.3)"),
            ("tls_min_version", "tls1.2", "unknown TLS version 'tls1.2'"),
            ("tls_min_version", 12, "expected a string"),
        ]
        for key, value, want in rows:
            with self.subTest(key=key, value=value):
                relay.update_config(submit={"tls_ciphers": None, "tls_min_version": None,
                                            key: value})
                line = self.line_of(relay, key)
                rc, err = relay.check_config()
                self.assertEqual(rc, 1, err)
                self.assertIn("%s:%d: submit.%s: %s" % (relay.config_path, line, key, want), err)
        for key, value in (("tls_min_version", "TLSv1.3"), ("tls_min_version", "TLSv1.2"),
                           ("tls_ciphers", "ECDHE+AESGCM:!aNULL")):
            with self.subTest(key=key, value=value):
                relay.update_config(submit={"tls_ciphers": None, "tls_min_version": None,
                                            key: value})
                rc, err = relay.check_config()
                self.assertEqual(rc, 0, err)

    @staticmethod
    def line_of(relay, key):
        for n, text in enumerate(relay.config_text().splitlines(), 1):
            if re.match(r"\s*%s\s*[=:]" % key, text):
                return n
        raise AssertionError("%s not in the configuration" % key)


if __name__ == "__main__":
    unittest.main()
