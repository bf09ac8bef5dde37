"""test_submit_fds.py - submission connections that hold no session slot
hold no descriptor beyond the bounds relayd counts (daemon/DESCRIPTORS.md,
`fd_limit need`):

* on a PROXY listener, a connection counts in submit.max_connections from
  its accept, before its header names the client (as Postfix counts a
  connection against its process limit): with every place taken, one more
  is closed at once (event=proxy_refused reason=max_connections), where it
  once waited for its header up to submit.proxy_timeout, holding a
  descriptor each;
* a session evicted to make room has its socket closed in the call that
  evicts it (SUBMIT_ACCEPTING), even when its client left its replies
  unread: its 421 goes as far as the kernel takes it, where the socket once
  waited for the output to drain (up to the drain timeout);
* a session that ends with a last word (221, a 421 at a timeout) closes
  its socket in the call that gives its slot up, as refusals and evictions
  do: it once waited for the reply to drain;
* with submit.workers, an eviction posted to another session thread keeps
  its victim's socket until that thread runs it: at most 16 are on their
  way at once (SUBMIT_EVICTING_MAX); beyond them a newcomer that finds no
  slot is refused, where each once evicted one more.

Real sockets on loopback; each step waits for relayd's log lines or for
the client's own socket, and the descriptors are counted in
/proc/PID/fd.
"""

import os
import re
import socket
import subprocess
import time
import unittest

from relay import free_port, needs_test_hooks
from test_submit_limits import session_from
from test_submit_smtp import QueueOnlyRelay as Relay
from test_submit_workers import WorkersCase


def nfds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def tcp_state(local_port, remote_port):
    """The state (hex, /proc/net/tcp) of the IPv4 socket local_port ->
    remote_port, or None."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if (int(fields[1].split(":")[1], 16) == local_port and
                    int(fields[2].split(":")[1], 16) == remote_port):
                return fields[3]
    return None


def send_buffer_full(local_port, remote_port):
    """Is the send buffer of the socket local_port -> remote_port full
    (ss: wmem_queued at least sndbuf) with input left unread?"""
    out = subprocess.run(["ss", "-tmnH", "sport = :%d and dport = :%d"
                          % (local_port, remote_port)],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"skmem:\(([^)]*)\)", out)
    if m is None:
        return False
    mem = dict((k, int(v)) for k, v in re.findall(r"([a-z]+)(\d+)", m.group(1)))
    return mem["w"] >= mem["tb"] and mem["r"] > 0


def client_reading_nothing(test, relay, address):
    """A connection from address to relayd's submission port that pipelines
    NOOPs and reads none of their replies, until relayd's send buffer is
    full and what it cannot send waits in its own (it reads on up to 1 MiB);
    closed at the test's end.  Returns its local port."""
    a = socket.socket()
    test.addCleanup(a.close)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    a.bind((address, 0))
    a.connect((relay.host, relay.submit_port))
    a.setblocking(False)
    aport = a.getsockname()[1]
    blob = b"NOOP\r\n" * 10000
    deadline = time.monotonic() + 60
    while not send_buffer_full(relay.submit_port, aport):
        test.assertLess(time.monotonic(), deadline, "relayd's send buffer never filled")
        try:
            while True:
                a.send(blob)
        except BlockingIOError:
            pass
    return aport


class SubmitProxyPlacesTest(unittest.TestCase):

    def proxy_relay(self, **submit):
        """relayd with three places (max_connections) and its second listener
        a PROXY one for 127.0.0.1 on a port of its own; started.  Returns it
        and that port."""
        port = free_port()
        relay = Relay.for_test(self, submit=dict({
            "workers": 1, "max_connections": 3, "proxy_trusted": ["127.0.0.1/32"],
            "proxy_timeout": "60s"}, **submit))
        sub = relay.config["submit"]
        sub["listen"] = (sub["listen"][0], {"address": "127.0.0.1:%d" % port, "proxy": True})
        relay.write_config()
        relay.start()
        relay.wait_for_log("listening", address="127.0.0.1:%d" % port, proxy="yes")
        return relay, port

    def test_connections_waiting_for_their_header_count_from_the_accept(self):
        relay, port = self.proxy_relay()
        before = nfds(relay.pid)
        mark = relay.log_mark()
        waiting = []
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            self.addCleanup(s.close)
            waiting.append(s)
        # the fourth finds the three places taken: closed at once, without a word
        late = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(late.close)
        ev = relay.wait_for_log("proxy_refused", since=mark, reason="max_connections")
        self.assertEqual(ev["client"], "127.0.0.1")
        self.assertEqual(late.recv(64), b"")
        self.assertEqual(relay.count_log("proxy_refused", since=mark), 1)
        self.assertEqual(nfds(relay.pid), before + 3)
        # nor is there room on a plain listener: 421, as over max_connections
        mark = relay.log_mark()
        plain = session_from(relay, "127.0.0.2")
        self.addCleanup(plain.close)
        self.assertEqual(plain.greeting, (421, "4.7.0 Error: too many connections, "
                                               "try again later"))
        relay.wait_for_log("connection_refused", since=mark, reason="max_connections")
        # a header: its place becomes the client's slot, greeted
        waiting[0].sendall(b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 587\r\n")
        self.assertTrue(waiting[0].recv(512).startswith(b"220 "))
        relay.wait_for_log("connect", since=mark, client="203.0.113.9", proxy="127.0.0.1")
        # one that leaves gives its place back: the next is taken in
        mark = relay.log_mark()
        waiting[1].close()
        relay.wait_for_log("proxy_refused", since=mark, reason="missing")
        again = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(again.close)
        again.sendall(b"PROXY TCP4 203.0.113.10 127.0.0.1 5556 587\r\n")
        self.assertTrue(again.recv(512).startswith(b"220 "))
        self.assertEqual(relay.count_log("proxy_refused", since=mark, reason="max_connections"), 0)

    def test_an_eviction_waits_for_the_header_that_names_the_client(self):
        """A PROXY connection that finds every place taken by unauthenticated
        sessions evicts one only once its header names a client that may
        come in: one that never sends a header (a load balancer's TCP check)
        and one whose client is at its per-IP limit evict nobody, as on a
        plain listener (submit_slots_make_room: refused anyway)."""
        relay, port = self.proxy_relay(max_connections_per_ip=1, unauthenticated_share=100)

        def via_proxy(client):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            self.addCleanup(s.close)
            s.sendall(b"PROXY TCP4 %s 127.0.0.1 5555 587\r\n" % client.encode())
            return s, s.recv(512)

        # three unauthenticated sessions, 203.0.113.2 the oldest
        held = {}
        for client in ("203.0.113.2", "203.0.113.1", "203.0.113.3"):
            s, greeting = via_proxy(client)
            self.assertTrue(greeting.startswith(b"220 "), greeting)
            held[client] = s
        mark = relay.log_mark()
        # a client at its per-IP limit: refused, as on a plain listener
        s, reply = via_proxy("203.0.113.1")
        self.assertTrue(reply.startswith(b"421 "), reply)
        relay.wait_for_log("connection_refused", since=mark, client="203.0.113.1")
        self.assertEqual(relay.count_log("session_evicted", since=mark), 0)
        # a connection that closes without a header
        check = socket.create_connection(("127.0.0.1", port), timeout=10)
        time.sleep(0.5)                 # accepted, and its header not come
        check.close()
        relay.wait_for_log("proxy_refused", since=mark, reason="missing")
        self.assertEqual(relay.count_log("session_evicted", since=mark), 0)
        held["203.0.113.2"].sendall(b"NOOP\r\n")
        self.assertTrue(held["203.0.113.2"].recv(512).startswith(b"250"))
        # a client that may come in evicts the oldest, as any newcomer
        s, greeting = via_proxy("203.0.113.4")
        self.assertTrue(greeting.startswith(b"220 "), greeting)
        ev = relay.wait_for_log("session_evicted", since=mark)
        self.assertEqual(ev["client"], "203.0.113.2")


class SubmitEvictedSocketTest(unittest.TestCase):

    def test_an_evicted_client_that_reads_nothing_loses_its_socket_at_once(self):
        # max 2, half of it for unauthenticated sessions: a second one evicts the first
        relay = Relay.for_test(self, submit={"workers": 1, "max_connections": 2,
                                              "unauthenticated_share": 50})
        relay.start()
        aport = client_reading_nothing(self, relay, "127.0.0.7")
        self.assertEqual(tcp_state(relay.submit_port, aport), "01")     # established
        before = nfds(relay.pid)
        mark = relay.log_mark()
        b = session_from(relay, "127.0.0.8")
        self.addCleanup(b.close)
        self.assertEqual(b.greeting[0], 220)
        ev = relay.wait_for_log("session_evicted", since=mark)
        self.assertEqual(ev["client"], "127.0.0.7")
        # the eviction ran before b's greeting: a's socket is gone (reset:
        # its input was unread), b's is there
        self.assertEqual(nfds(relay.pid), before)
        self.assertIsNone(tcp_state(relay.submit_port, aport))



class SubmitLastWordTest(unittest.TestCase):

    def test_a_session_ended_with_its_replies_unread_loses_its_socket_at_once(self):
        """A session's last word (here the 421 of a command timeout) goes as
        far as the kernel takes it, and the socket is closed in the same call
        that gives the slot up: it once waited for the reply to drain, up to
        the drain timeout for a client that read nothing, a socket no slot
        counted."""
        relay = Relay.for_test(self, submit={"workers": 1, "command_timeout": "5s"})
        relay.start()
        mark = relay.log_mark()
        aport = client_reading_nothing(self, relay, "127.0.0.7")
        self.assertEqual(tcp_state(relay.submit_port, aport), "01")     # established
        before = nfds(relay.pid)
        # relayd reads no more while its replies wait: the command timer runs out
        ev = relay.wait_for_log("session_timeout", since=mark, client="127.0.0.7")
        relay.wait_for_log("disconnect", since=mark, session=ev["session"])
        self.assertEqual(nfds(relay.pid), before - 1)
        self.assertIsNone(tcp_state(relay.submit_port, aport))


class SubmitEvictionsOnTheirWayTest(WorkersCase):

    @needs_test_hooks
    def test_evictions_posted_to_another_thread_are_capped(self):
        """RELAYD_TEST_EVICT_DELAY_MS holds each eviction on the victim's
        thread, so that they pile up: the one that would be the 17th is not
        made, and its newcomer is refused."""
        self.relay = relay = Relay.for_test(
            self, submit={"workers": 2, "max_connections": 40, "unauthenticated_share": 100,
                          "max_connections_per_ip": 100},
            env={"RELAYD_TEST_EVICT_DELAY_MS": "5000"})
        relay.start()
        held = self.per_worker(20)      # every slot taken, none authenticated
        self.assertEqual(sum(len(v) for v in held.values()), 40)
        mark = relay.log_mark()
        greeted = 0
        for _ in range(200):
            r = session_from(relay, "127.0.0.9")
            self.addCleanup(r.close)
            if r.greeting[0] != 220:
                break
            greeted += 1
        else:
            self.fail("no newcomer was refused")
        self.assertEqual(r.greeting, (421, "4.7.0 Error: too many connections, try again later"))
        relay.wait_for_log("connection_refused", since=mark, reason="max_connections")
        # each newcomer evicted one session: its own thread's at once
        # (logged), the other's by a message still held there (not yet)
        self.assertEqual(greeted - relay.count_log("session_evicted", since=mark), 16)

if __name__ == "__main__":
    unittest.main()
