"""test_submit_workers.py - submission sessions on several event-loop threads
(submit.workers, submit/SUBMIT.md "Workers"): the threads exist (named
relayd-submit) and the kernel spreads connections over them (the connect
event's worker key); max_connections_per_ip and max_connections count the
sessions of every thread together, and a newcomer on one thread evicts an
unauthenticated session of another (session_evicted, 421 4.7.0); a reload
reaches every thread and a stop (SIGTERM) with sessions open on both loses no
acknowledged message: each is delivered, after the restart at the latest.
Each test sets submit.workers itself (RELAYD_TEST_SUBMIT_WORKERS is
overridden), and picks the thread a session lands on by the connect event.
"""

import base64
import os
import socket
import subprocess
import unittest

from client import RawSession
from relay import Relay, needs_test_hooks, relayd_bin
from test_submit_smtp import qid_of, stop_cleanly

PLAIN = base64.b64encode(b"\0alice\0alicepw").decode()


def submit_threads(relay):
    """How many of relayd's threads are named relayd-submit."""
    n = 0
    for tid in os.listdir("/proc/%d/task" % relay.pid):
        try:
            with open("/proc/%d/task/%s/comm" % (relay.pid, tid)) as f:
                n += f.read().strip() == "relayd-submit"
        except OSError:
            pass
    return n


def session_from(relay, source="127.0.0.1"):
    """A RawSession (greeting read) to the STARTTLS port from source."""
    sock = socket.create_connection((relay.host, relay.submit_port), timeout=10,
                                    source_address=(source, 0))
    r = RawSession.__new__(RawSession)
    r.host, r.port, r.timeout = relay.host, relay.submit_port, 10
    r.sock, r.buf, r.tls, r.transcript = sock, b"", False, []
    r.greeting = r.read_reply()
    return r


def authenticate(r):
    assert r.cmd("EHLO client.test")[0] == 250
    assert r.starttls()[0] == 220
    assert r.cmd("EHLO client.test")[0] == 250
    code, text = r.cmd("AUTH PLAIN " + PLAIN)
    assert code == 235, (code, text)


class WorkersCase(unittest.TestCase):

    def make(self, workers=2, sink=False, **submit):
        submit = dict(submit, workers=workers)
        self.relay = Relay.for_test(self, submit=submit)
        if sink:
            self.relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
            self.sink = self.relay.sink("127.0.0.2")
        self.relay.start()
        return self.relay

    def connect(self, source="127.0.0.1"):
        """(session, its connect event): the event names the session's thread."""
        r = session_from(self.relay, source)
        self.addCleanup(r.close)
        port = r.sock.getsockname()[1]
        return r, self.relay.wait_for_log("connect", port=port)

    def drop(self, r, ev):
        """Close a session and wait until relayd has let it go (its slot free)."""
        r.close()
        self.relay.wait_for_log("disconnect", session=ev["session"])

    def per_worker(self, want, source="127.0.0.1", auth=False):
        """Sessions until each of the two threads holds want of them (the
        ones that land on a full thread are closed again): {worker: [(r, ev)]}."""
        got = {"1": [], "2": []}
        for _ in range(200):
            if all(len(v) == want for v in got.values()):
                return got
            r, ev = self.connect(source)
            w = ev["worker"]
            if len(got[w]) == want:
                self.drop(r, ev)
                continue
            if auth:
                authenticate(r)
            got[w].append((r, ev))
        self.fail("the connections never reached both threads: %r" %
                  {k: len(v) for k, v in got.items()})


class SpreadTest(WorkersCase):

    def test_sessions_land_on_every_thread(self):
        relay = self.make(workers=2)
        relay.wait_for_log("submit_ready", workers=2)
        self.assertEqual(submit_threads(relay), 2)
        seen = set()
        for _ in range(16):
            r, ev = self.connect()
            self.assertEqual(r.greeting[0], 220)
            self.assertEqual(r.cmd("EHLO client.test")[0], 250)
            seen.add(ev["worker"])
        self.assertEqual(seen, {"1", "2"})
        stop_cleanly(relay)

    def test_one_worker_is_the_main_loop(self):
        relay = self.make(workers=1)
        relay.wait_for_log("submit_ready", workers=1)
        self.assertEqual(submit_threads(relay), 0)
        r, ev = self.connect()
        self.assertNotIn("worker", ev)
        self.assertEqual(r.cmd("EHLO client.test")[0], 250)
        stop_cleanly(relay)


    def test_second_relayd_on_the_port_is_refused(self):
        """The threads' listeners share their port (SO_REUSEPORT), which the
        kernel would let a second relayd of the same user join, splitting the
        connections between the two: a second relayd on the same address,
        with a queue of its own, fails to start with "in use", as with one
        loop, and the first keeps every connection."""
        relay = self.make(workers=2)
        relay.wait_for_log("submit_ready", workers=2)
        other = Relay.for_test(self, submit={"workers": 2})
        other.config["submit"]["listen"] = ["%s:%d" % (relay.host, relay.submit_port)]
        other.config["submit"]["listen_tls"] = ["%s:%d" % (relay.host, relay.tls_port)]
        other.write_config()
        r = subprocess.run([relayd_bin(), "-c", other.config_path],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("submit.listen %s:%d: cannot listen: Address already in use"
                      % (relay.host, relay.submit_port), r.stderr)
        for _ in range(8):
            _, ev = self.connect()
            self.assertIn(ev["worker"], ("1", "2"))
        stop_cleanly(relay)


class LimitsTest(WorkersCase):

    def test_per_ip_limit_counts_both_threads(self):
        relay = self.make(max_connections_per_ip=4, unauthenticated_share=100)
        self.per_worker(2, source="127.0.0.5")
        mark = relay.log_mark()
        r = session_from(relay, "127.0.0.5")
        self.addCleanup(r.close)
        self.assertEqual(r.greeting, (421, "4.7.0 Error: too many connections from your "
                                           "address, try again later"))
        relay.wait_for_log("connection_refused", since=mark, client="127.0.0.5",
                           reason="max_connections_per_ip")
        other, _ = self.connect("127.0.0.6")
        self.assertEqual(other.greeting[0], 220)
        stop_cleanly(relay)

    def test_max_connections_counts_both_threads(self):
        relay = self.make(max_connections=4, unauthenticated_share=100)
        self.per_worker(2, auth=True)       # authenticated: nobody to evict
        mark = relay.log_mark()
        r = session_from(relay, "127.0.0.7")
        self.addCleanup(r.close)
        self.assertEqual(r.greeting, (421, "4.7.0 Error: too many connections, try again later"))
        relay.wait_for_log("connection_refused", since=mark, reason="max_connections")
        stop_cleanly(relay)

    def test_newcomer_evicts_a_session_of_the_other_thread(self):
        relay = self.make(max_connections=1, unauthenticated_share=100)
        old, old_ev = self.connect("127.0.0.8")
        for _ in range(40):
            new, new_ev = self.connect("127.0.0.9")
            self.assertEqual(new.greeting[0], 220)
            self.assertEqual(old.read_reply()[:1], (421,))   # evicted for the newcomer
            relay.wait_for_log("session_evicted", session=old_ev["session"],
                               reason="max_connections")
            if new_ev["worker"] != old_ev["worker"]:
                break
            old, old_ev = new, new_ev
        else:
            self.fail("no newcomer landed on the other thread")
        self.assertEqual(new.cmd("EHLO client.test")[0], 250)
        stop_cleanly(relay)

    @needs_test_hooks
    def test_session_authenticated_before_its_eviction_is_kept(self):
        """An eviction chosen by one thread's accept for an unauthenticated
        session of the other reaches it by a posted message; if the session
        authenticated meanwhile it is kept (one loop never closes an
        authenticated session for a newcomer), not closed after its 235
        (session_evict_skipped; counted=no: the newcomer has the only slot).
        RELAYD_TEST_EVICT_DELAY_MS holds the message on the victim's thread
        while the test authenticates."""
        self.relay = relay = Relay.for_test(
            self, submit={"workers": 2, "max_connections": 1, "unauthenticated_share": 100},
            env={"RELAYD_TEST_EVICT_DELAY_MS": "3000"})
        relay.start()
        old, old_ev = self.connect("127.0.0.8")
        for _ in range(40):
            self.assertEqual(old.cmd("EHLO client.test")[0], 250)
            self.assertEqual(old.starttls()[0], 220)
            self.assertEqual(old.cmd("EHLO client.test")[0], 250)
            new, new_ev = self.connect("127.0.0.9")
            self.assertEqual(new.greeting[0], 220)
            if new_ev["worker"] != old_ev["worker"]:
                break
            # the same thread evicts at once, with no message: try again
            self.assertEqual(old.read_reply()[:1], (421,))
            old, old_ev = new, new_ev
        else:
            self.fail("no newcomer landed on the other thread")
        code, text = old.cmd("AUTH PLAIN " + PLAIN)
        self.assertEqual(code, 235, text)
        relay.wait_for_log("session_evict_skipped", session=old_ev["session"],
                           reason="max_connections", counted="no", timeout=20)
        self.assertEqual(old.cmd("MAIL FROM:<alice@example.org>")[0], 250)
        self.assertEqual(old.cmd("RSET")[0], 250)
        self.assertEqual(new.cmd("EHLO client.test")[0], 250)
        self.assertEqual(relay.count_log("session_evicted", session=old_ev["session"]), 0)
        stop_cleanly(relay)


class ReloadStopTest(WorkersCase):

    def send(self, r, subject):
        """One message on an authenticated session: its queue id."""
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.org>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<bob@example.net>")[0], 250)
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send("From: <alice@example.org>\r\nTo: <bob@example.net>\r\nSubject: %s\r\n"
               "\r\nhi\r\n.\r\n" % subject)
        code, text = r.read_reply()
        self.assertEqual(code, 250, text)
        return qid_of(text)

    def test_reload_and_stop_lose_nothing_acknowledged(self):
        relay = self.make(sink=True, max_message_size="10K")
        sessions = [r for v in self.per_worker(2, auth=True).values() for r, _ in v]
        subjects = []
        for i, r in enumerate(sessions):
            subjects.append("before %d" % i)
            self.send(r, subjects[-1])

        # a reload reaches both threads: new sessions on each see the new size
        mark = relay.log_mark()
        relay.update_config(submit={"max_message_size": "20K"})
        relay.sighup()
        relay.wait_for_log("submit_reloaded", since=mark)
        for w, v in self.per_worker(1).items():
            v[0][0].send("EHLO client.test\r\n")
            _, lines = v[0][0].read_reply_lines()
            self.assertIn("SIZE 20480", lines, "thread %s" % w)
        # and the sessions opened before it carry on
        for i, r in enumerate(sessions):
            subjects.append("after %d" % i)
            self.send(r, subjects[-1])

        # a message half sent on each thread when the stop comes: not acknowledged
        for r in sessions[:2] + sessions[-2:-1]:
            r.cmd("MAIL FROM:<alice@example.org>")
            r.cmd("RCPT TO:<bob@example.net>")
            r.cmd("DATA")
            r.send("Subject: never\r\n\r\npart")
        self.assertEqual(relay.stop(), 0)
        relay.start()
        got = self.sink.wait_for_messages(len(subjects), timeout=30)
        self.assertEqual(sorted(m.header("Subject") for m in got), sorted(subjects))
        stop_cleanly(relay)


class ReservedTxnTest(WorkersCase):
    """A thread's sessions take the queue txns the main loop reserved for it
    ahead of need (SUBMIT.md "Workers"): no BEGIN round trip on a message's
    path, and the unused ones are given back at the stop."""

    def send_three(self, r, ev):
        """Three messages on an authenticated session: their queue ids."""
        qids = []
        for i in range(3):
            qids.append(ReloadStopTest.send(self, r, "reserved %s %d" % (ev["worker"], i)))
        return qids

    def test_message_needs_no_begin_round_trip(self):
        # each thread starts with SUBMIT_TXN_POOL (4) reserved txns: three
        # messages per thread take them and never wait in the BEGIN state
        # (each did, one posted BEGIN and its answer, before)
        relay = self.make()
        qids = []
        for w, v in self.per_worker(1, auth=True).items():
            r, ev = v[0]
            qids += self.send_three(r, ev)
            relay.wait_for_log("accepted", qid=qids[-1], session=ev["session"])
            self.assertEqual(relay.count_log("submit_state", session=ev["session"],
                                             to="begin"), 0, "thread %s" % w)
        self.assertEqual(len(set(qids)), 6)
        stop_cleanly(relay)

    def test_stop_gives_the_reserved_txns_back(self):
        # the reserved txns hold the queue's close (and maybe a spare file
        # each) until they are aborted: the stop must give them back (else
        # relayd never ends), and leave in msg/ no file of a message begun
        # (.in-<qid>), only messages (the six, their bounces) and spare files
        relay = self.make()
        for v in self.per_worker(1, auth=True).values():
            self.send_three(*v[0])
        mark = relay.log_mark()
        relay.update_config(submit={"max_message_size": "20K"})
        relay.sighup()                      # gives the pools back, takes new ones
        relay.wait_for_log("submit_reloaded", since=mark)
        self.assertEqual(relay.stop(), 0, relay.diagnostics())
        left = [n for n in os.listdir(os.path.join(relay.queue_dir, "msg"))
                if n.startswith(".") and not n.startswith(".spare-")]
        self.assertEqual(left, [])
        stop_cleanly(relay)


if __name__ == "__main__":
    unittest.main()
