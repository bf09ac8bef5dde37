"""test_accept_pause.py - relayd out of file descriptors (EMFILE): the
listener pauses instead of failing accept(2) in a loop.  libuv calls the
connection callback again at once for the same queued connection, so without
the pause relayd logs accept_error millions of times a minute; with it, one
accept_error line per pause (100 ms doubling to 1 s, or until a session
closes) with count= the failed accepts since the last accepted connection,
the kernel keeps queueing connections, and once descriptors are free again the
next connection is accepted and greeted.

relayd's RLIMIT_NOFILE is lowered after start to a few descriptors over what it
uses (relayd refuses to start under submit.max_connections + 356, so it cannot
be started that low): prlimit(2) from a child running as relayd's own user,
which may lower another process's limits without CAP_SYS_RESOURCE.
"""

import os
import resource
import select
import socket
import time
import unittest

from client import make_message, raw_session, submit
from relay import Relay, test_user_ids

FREE = 3          # descriptors left to relayd under its lowered limit
CONNECTIONS = 8   # queued while the listener is paused


def lower_nofile(pid, limit):
    """Set pid's RLIMIT_NOFILE to (limit, limit) as pid's own user."""
    uid, gid = test_user_ids()
    child = os.fork()
    if child == 0:
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(child, 0)
    if status != 0:
        raise AssertionError("prlimit of relayd as its own user failed")


class AcceptPauseTest(unittest.TestCase):

    def test_emfile_pauses_the_listener_and_resumes(self):
        if test_user_ids() is None:
            self.skipTest("needs the test user relayd runs as")
        relay = Relay.for_test(self)
        relay.start()
        nfds = len(os.listdir("/proc/%d/fd" % relay.pid))
        lower_nofile(relay.pid, nfds + FREE)
        mark = relay.log_mark()

        # Connect one at a time until relayd is out of descriptors: each
        # connection is greeted (a session), or dropped unanswered (libuv's own
        # EMFILE fallback, which it can use once: its spare descriptor, a
        # directory, cannot be reopened under Landlock), or left in the listen
        # queue, and then relayd has logged accept_error.
        socks, greeted = [], 0
        while relay.count_log("accept_error", since=mark) == 0:
            self.assertLess(len(socks), 40, "no accept_error")
            s = socket.create_connection((relay.host, relay.submit_port), timeout=10)
            socks.append(s)
            deadline = time.monotonic() + 10
            while relay.count_log("accept_error", since=mark) == 0:
                if select.select([s], [], [], 0.05)[0]:
                    greeted += s.recv(512).startswith(b"220 ")
                    break
                self.assertLess(time.monotonic(), deadline, "connection neither answered "
                                "nor logged as failing")
        self.assertGreaterEqual(greeted, 1)
        first = relay.find_log("accept_error", since=mark)[0]
        self.assertEqual(first["error"], "too many open files")
        self.assertEqual(first["count"], "1")

        # Held for a while: more connections wait in the listen queue (each
        # one's connect(2) completes: queued, not refused) while the listener
        # pauses four more times (100 + 200 + 400 + 800 ms), failing again
        # each time, one line per pause.
        socks += [socket.create_connection((relay.host, relay.submit_port), timeout=10)
                  for _ in range(CONNECTIONS)]
        relay.wait_for_count("accept_error", 5, since=mark)
        self.assertLess(relay.count_log("accept_error", since=mark), 20)
        self.assertTrue(all(int(e["count"]) >= 1
                            for e in relay.find_log("accept_error", since=mark)))
        self.assertLess(len(select.select(socks[-CONNECTIONS:], [], [], 0)[0]), CONNECTIONS)

        # The sessions and the queued clients go away: descriptors are free
        # again, the listener resumes, and a new session is greeted.  Until
        # relayd has seen every one of those go, a connection may still be
        # dropped unanswered (libuv's EMFILE fallback, its spare descriptor
        # taken again once descriptors were free): each attempt waits for
        # its answer, greeting or close.
        for s in socks:
            s.close()
        for attempt in range(20):
            try:
                with raw_session(relay.host, relay.submit_port) as r:
                    self.assertEqual(r.greeting[0], 220)
                    self.assertEqual(r.cmd("NOOP")[0], 250)
                    break
            except (EOFError, ConnectionResetError):
                continue
        else:
            self.fail("no session greeted after the descriptors were free again")
        self.assertLess(relay.count_log("accept_error", since=mark), 20)

    def test_a_stopping_relayd_refuses_new_clients(self):
        """The listener keeps a spare descriptor of its socket for accept
        pauses; a stop must close it too, or the kernel goes on queueing new
        clients that nobody will ever greet, instead of refusing them (so
        that they fail over to another server at once)."""
        relay = Relay.for_test(self)
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        _, release, at_eod = relay.held_sink("127.0.0.2")
        relay.start()
        self.addCleanup(release.set)
        msg = make_message("alice@example.org", "bob@example.net", "held", "Body.\r\n")
        submit(relay, "alice@example.org", ["bob@example.net"], msg)
        self.assertTrue(at_eod.wait(20), "the delivery never reached the end of data")
        mark = relay.log_mark()
        relay.signal(15)
        relay.wait_for_log("stopping", since=mark)
        # relayd now waits for the held delivery: its listeners are closed
        # (at once, or within the loop turn after the line above).
        refused = False
        deadline = time.monotonic() + 10
        while not refused and time.monotonic() < deadline:
            try:
                c = socket.create_connection((relay.host, relay.submit_port), timeout=2)
            except ConnectionRefusedError:
                refused = True
                continue
            c.settimeout(1)
            try:
                greeting = c.recv(512)
            except socket.timeout:
                greeting = b""
            c.close()
            self.assertEqual(greeting, b"", "a stopping relayd greeted a new client")
        self.assertTrue(refused, "connections to a stopping relayd were queued, not refused")
        release.set()
        self.assertEqual(relay.wait_exit(30), 0)



if __name__ == "__main__":
    unittest.main()
