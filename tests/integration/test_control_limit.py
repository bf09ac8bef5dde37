"""test_control_limit.py - the control socket holds at most 16 client
connections (CONTROL_MAX_CONN, daemon/DESCRIPTORS.md): each holds a
descriptor until it is answered, and a client may connect and say nothing.

Sixteen real clients connect to the live relayd's control socket and send
nothing.  relayctl, the seventeenth, is answered "busy" (exit 1) and relayd
logs event=control_busy with its pid; more raw clients get the same answer
and EOF at once, and relayd's descriptors do not grow.  Meanwhile relayd
goes on serving: a message is submitted (250) and delivered to the sink.
One held client then sends a request and is answered; once it has read its
EOF (relayd closes the connection after the answer, and counts it gone
before that), relayctl is answered again.

Before the cap every connection was kept, with no limit and no deadline.

test_silent_clients_are_closed: a client has CONTROL_REQUEST_MS (10 s; 700
ms here, RELAYD_TEST_CONTROL_REQUEST_MS) from its connection to send its
request.  Sixteen clients that say nothing fill the socket (relayctl is told
"busy"); each is then closed (EOF) and logged (event=control_timeout with
its pid), and relayctl, which sends its request at once, is answered and
not closed.  Without the deadline they were held for ever.
"""

import os
import socket
import unittest

from client import make_message, submit
from relay import Relay, needs_test_hooks

CAP = 16


def hold(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s


def read_all(s):
    out = b""
    while True:
        b = s.recv(4096)
        if not b:
            return out
        out += b


def nfds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class ControlLimitTest(unittest.TestCase):

    def test_cap_holds_and_relayd_serves(self):
        relay = Relay.for_test(self)
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        sink = relay.sink("127.0.0.2")
        relay.start()
        held = [hold(relay.control_socket) for _ in range(CAP)]
        try:
            mark = relay.log_mark()
            r = relay.relayctl("stats")
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn("too many control connections", r.stderr)
            ev = relay.wait_for_log("control_busy", since=mark)
            self.assertEqual(ev["connections"], str(CAP))
            self.assertNotEqual(ev["pid"], "0")

            # a flood beyond the cap: each told at once, nothing kept
            before = nfds(relay.pid)
            for _ in range(20):
                s = hold(relay.control_socket)
                self.assertTrue(read_all(s).startswith(b"ERR busy "))
                s.close()
            self.assertEqual(nfds(relay.pid), before)
            relay.wait_for_count("control_busy", 21, since=mark)

            # submissions go on meanwhile
            qid = submit(relay, "alice@example.org", ["bob@example.net"],
                         make_message("alice@example.org", "bob@example.net", "hi", "body"))
            sink.wait_for_messages(1)
            relay.wait_for_log("delivered", qid=qid)

            # a held client is still served; once it is answered and gone,
            # there is room again
            held[0].sendall(b"stats\0\0")
            self.assertTrue(read_all(held[0]).startswith(b"OK\n"))
            held.pop(0).close()
            r = relay.relayctl("stats")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertEqual(relay.count_log("control_busy", since=mark), 21)
        finally:
            for s in held:
                s.close()

    @needs_test_hooks
    def test_silent_clients_are_closed(self):
        relay = Relay.for_test(self, env={"RELAYD_TEST_CONTROL_REQUEST_MS": "700"})
        relay.start()
        mark = relay.log_mark()
        held = [hold(relay.control_socket) for _ in range(CAP)]
        try:
            r = relay.relayctl("stats")
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn("too many control connections", r.stderr)
            relay.wait_for_log("control_busy", since=mark)
            # the busy answer proves they were all held; now the deadline
            relay.wait_for_count("control_timeout", CAP, since=mark, timeout=30)
            for s in held:
                self.assertEqual(read_all(s), b"")     # closed, nothing said
            ev = relay.wait_for_log("control_timeout", since=mark)
            self.assertEqual(ev["pid"], str(os.getpid()))
            self.assertGreaterEqual(int(ev["after_ms"]), 700)
            r = relay.relayctl("stats")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertEqual(relay.count_log("control_timeout", since=mark), CAP)
        finally:
            for s in held:
                s.close()


if __name__ == "__main__":
    unittest.main()
