"""test_restart_state.py - what a recipient was waiting for survives a restart
as an explicit state in the queue file, never read back from a status text
a remote server chose (issue 9, "state read back from status strings").

One message goes to two recipients: bob@example.net, whose MX (a sink on
127.0.0.2) answers RCPT with its own "451 4.4.1", and carol@down.example,
whose only exchanger (127.0.0.5) refuses connections, so her destination is
down and she waits for it.  After a restart, with a retry interval of an
hour, carol is probed again at once (a destination wait, as before) and bob
stays deferred until his own retry time: the remote's "4.4.1" does not make
him look like a destination wait.
"""

import datetime
import json
import unittest

from client import make_message, submit
from relay import Relay

SENDER = "alice@example.org"
BOB = "bob@example.net"
CAROL = "carol@down.example"


def parse_time(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


class RestartKeepsExplicitState(unittest.TestCase):

    def test_remote_441_is_not_a_destination_wait_after_restart(self):
        relay = Relay.for_test(self, router={"retry_intervals": ["1h"],
                                             "host_backoff": ["1s", "2s"]})
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        relay.dns.set_mx_ips("down.example", [(10, "127.0.0.5")])    # nobody listens
        sink = relay.sink("127.0.0.2")
        sink.script(rcpt={BOB: "451 4.4.1 remote says: no answer from next hop"})
        relay.start()
        qid = submit(relay, SENDER, [BOB, CAROL],
                     make_message(SENDER, [BOB, CAROL], "restart", "Body.\r\n"))

        bob = relay.wait_for_log("deferred", qid=qid, rcpt=BOB)
        self.assertEqual(bob["status"], "4.4.1")
        self.assertNotIn("waiting", bob)                    # the remote's own 451
        self.assertTrue(bob["retry_in"].startswith("1h"), bob)   # 1h + jitter
        carol = relay.wait_for_log("deferred", qid=qid, rcpt=CAROL)
        self.assertEqual(carol["waiting"], "down.example")  # her destination is down
        self.assertEqual(sink.connections, 1)

        mark = relay.log_mark()
        relay.restart()
        # A real destination wait is due at once after the restart: carol's
        # destination is probed again (and is still down).  This also proves
        # the scheduler has run its start-up dispatch, where bob would have
        # gone out too were he taken for a destination wait.
        again = relay.wait_for_log("deferred", since=mark, qid=qid, rcpt=CAROL, timeout=20)
        self.assertEqual(again["waiting"], "down.example")

        r = relay.relayctl("queue", "show", qid, "--json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        shown = {x["addr"]: x for x in json.loads(r.stdout)["recipients"]}
        b = shown[BOB]
        # On its own retry timer: one attempt so far, next one an hour after it.
        self.assertEqual((b["state"], b["attempts"], b["last_status"]),
                         ("deferred", 1, "4.4.1"), b)
        hist = [h for h in b["history"] if h["result"] == "deferred"]
        self.assertEqual(len(hist), 1, b)
        wait = parse_time(b["until"]) - parse_time(hist[0]["time"])
        self.assertGreaterEqual(wait, datetime.timedelta(minutes=59), b)
        self.assertEqual(relay.count_log("deferred", since=mark, rcpt=BOB), 0)
        self.assertEqual(sink.connections, 1)
        self.assertEqual(shown[CAROL]["state"], "deferred", shown[CAROL])


if __name__ == "__main__":
    unittest.main()
