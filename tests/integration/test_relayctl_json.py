"""test_relayctl_json.py - every relayctl --json answer is valid UTF-8 JSON,
whatever bytes reach it (issue 9, "invalid JSON from the unchecked escaper").

Text that relayd did not write reaches the JSON answers: a route's auth_user
from the configuration, a remote server's reply text, a message's header.
Here each holds bytes that are not UTF-8 (a lone 0xff, latin-1, a surrogate
encoded in UTF-8, an overlong '/') and control characters.  Every --json verb
must give bytes that a strict UTF-8 decoder and a JSON parser accept; the bad
bytes come out as U+FFFD and the good text around them unchanged.
"""

import json
import subprocess
import unittest

from client import make_message, submit
from relay import Relay, relayctl_bin

SENDER = "alice@example.org"
# Python str with surrogate escapes: the harness sends/writes them as raw bytes.
BAD = "\udcff lat\udce9n \udced\udca0\udc80 sur \udce0\udc80\udcaf ovl \x01\x1b[31m ctl"
AUTH_USER = "relay" + BAD
REPLY = "421 4.3.2 busy" + BAD
SUBJECT = b"caf\xe9 \xed\xa0\x80 \xe0\x80\xaf \x7f subject"


def strict_json(testcase, raw, what):
    try:
        text = raw.decode("utf-8")              # strict: no surrogates, no overlongs
    except UnicodeDecodeError as e:
        testcase.fail("%s: not UTF-8: %s: %r" % (what, e, raw))
    try:
        return json.loads(text)
    except ValueError as e:
        testcase.fail("%s: not JSON: %s: %r" % (what, e, raw))


class JsonFromBadBytes(unittest.TestCase):

    def setUp(self):
        self.relay = Relay.for_test(self, router={
            "retry_intervals": ["1h"], "host_backoff": ["1h", "1h"], "delay_warning": "0",
            "routes": [{"domain": "example.com", "hosts": ["127.0.0.3"],
                        "auth_user": AUTH_USER, "auth_password": "pw"}]})
        self.relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        self.sink = self.relay.sink("127.0.0.2")
        self.sink.script(greeting=REPLY)
        self.relay.start()

    def ctl_json(self, *args):
        """The raw bytes of relayctl ARGS --json, decoded strictly."""
        r = subprocess.run([relayctl_bin(), "-s", self.relay.control_socket, *args, "--json"],
                           capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, "relayctl %s --json: %r" % (" ".join(args), r.stderr))
        return strict_json(self, r.stdout, "relayctl %s --json" % " ".join(args))

    def test_every_json_verb_is_valid_utf8_json(self):
        msg = make_message(SENDER, "bob@example.net", "x", "Body.\r\n").encode("utf-8")
        msg = msg.replace(b"Subject: x", b"Subject: " + SUBJECT)
        qid = submit(self.relay, SENDER, ["bob@example.net"], msg)
        self.relay.wait_for_count("deferred", 1, qid=qid, timeout=20)
        self.sink.wait_for_connections(1)

        bad_out = "\ufffd lat\ufffdn \ufffd\ufffd\ufffd sur \ufffd\ufffd\ufffd ovl %s[31m ctl"
        # the reply parser already turns control characters into '?'
        want_text = "busy" + bad_out % "??"

        # Each verb is checked on its own (subTest), so a failure names them all.
        for args in [("route", "list"), ("queue", "list"), ("queue", "list", "--domain", "example.net"),
                     ("queue", "show", qid), ("hosts",), ("stats",)]:
            with self.subTest(verb=" ".join(args)):
                doc = self.ctl_json(*args)
                self.check_content(args, doc, bad_out, want_text)

    def check_content(self, args, doc, bad_out, want_text):
        """The good text around the bad bytes comes through, bad bytes as U+FFFD."""
        if args == ("route", "list"):
            [route] = [r for r in doc if r["domain"] == "example.com"]
            self.assertEqual(route["auth_user"], "relay" + bad_out % "\x01\x1b")
        elif args[:2] == ("queue", "list"):
            [m] = doc["messages"]
            self.assertIn(want_text, m["recipients"][0]["last_reply"])
        elif args[:2] == ("queue", "show"):
            rcpt = doc["recipients"][0]
            self.assertIn(want_text, rcpt["last_reply"])
            self.assertIn(want_text, rcpt["history"][0]["reply"])
            self.assertIn("caf\ufffd \ufffd\ufffd\ufffd \ufffd\ufffd\ufffd \x7f subject",
                          json.dumps(doc["headers"], ensure_ascii=False))
        elif args == ("hosts",):
            self.assertIn(want_text, json.dumps(doc, ensure_ascii=False))

if __name__ == "__main__":
    unittest.main()
