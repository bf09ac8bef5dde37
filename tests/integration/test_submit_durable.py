"""test_submit_durable.py - durable acceptance under stress: the wait for a
group sync never stalls the event loop, and a message that got its
"250 2.0.0 Ok: queued as QID" survives SIGKILL at any instant -- also in the
window where it exists only in the write-ahead journal (queue_dir/journal)
and not yet as msg/<qid> -- whole, exactly once, and nothing else does.

Two test-only knobs, read by relayd at start, and only by a relayd built
with the CMake option RELAY_TEST_HOOKS (contrib/test.sh builds so; the tests
that need them are skipped otherwise):
  RELAYD_TEST_SYNC_DELAY_MS     every group sync a 250 waits for first sleeps
                                this long (on the commit thread)
  RELAYD_TEST_PUBLISH_DELAY_MS  after the 250, the thread that writes and
                                publishes msg/<qid> sleeps this long per batch

Mail stays queued (QueueOnlyRelay: every domain routed to a dead port, an
hour of backoff) until a test points the route at a sink and flushes.
"""

import json
import os
import random
import threading
import time
import unittest

from client import QUEUED_RE, make_message, raw_session
from relay import needs_test_hooks
from test_submit_smtp import QueueOnlyRelay as Relay
from test_submit_smtp import auth_session, read_queued, send_message

SENDER = "alice@example.org"

# Long enough that session B's TLS handshake and AUTH fit in it on a busy
# machine; nothing is asserted about durations, only about order.
SYNC_DELAY_MS = 2000
PUBLISH_DELAY_MS = 3000


def listed(relay):
    """{qid: message dict} from `relayctl queue list --json`."""
    r = relay.relayctl("queue", "list", "--json")
    if r.returncode != 0:
        raise AssertionError("relayctl queue list: %d %s%s" % (r.returncode, r.stdout, r.stderr))
    return {m["qid"]: m for m in json.loads(r.stdout)["messages"]}


def shown(relay, qid):
    r = relay.relayctl("queue", "show", qid, "--json")
    if r.returncode != 0:
        raise AssertionError("relayctl queue show %s: %d %s%s"
                             % (qid, r.returncode, r.stdout, r.stderr))
    return json.loads(r.stdout)


def wait_listed(relay, qids, timeout=15):
    """The queue listing once every qid in qids is listed and has its file in
    msg/ (a journal replay may publish after start-up); fails naming the
    missing ones otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        now = listed(relay)
        files = set(msg_files(relay))
        missing = sorted(q for q in qids if q not in now or q not in files)
        if not missing:
            return now
        if time.monotonic() > deadline:
            raise AssertionError("acknowledged (250) but not queued: %d of "
                                 "%d, e.g. %s (listed: %d, in msg/: %d)\n%s"
                                 % (len(missing), len(qids), missing[:5], len(now), len(files),
                                    relay.diagnostics()))
        time.sleep(0.1)


def msg_files(relay):
    """The queue ids in queue_dir/msg/ now (published messages; names that
    start with "." are files being written or spares)."""
    d = os.path.join(relay.queue_dir, "msg")
    return sorted(n for n in os.listdir(d) if not n.startswith(".")) if os.path.isdir(d) else []


def corrupt_files(relay):
    d = os.path.join(relay.queue_dir, "corrupt")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def queued_as(reply):
    code, text = reply
    m = QUEUED_RE.search(text)
    if code != 250 or not m:
        raise AssertionError("not queued: %r" % (reply,))
    return m.group(1)


@needs_test_hooks
class SyncWaitTest(unittest.TestCase):
    """A commit waiting for its group sync does not hold up other sessions."""

    def test_sync_wait_does_not_block_loop(self):
        relay = Relay.for_test(self, env={"RELAYD_TEST_SYNC_DELAY_MS": SYNC_DELAY_MS})
        relay.start()
        events, lock = [], threading.Lock()

        def event(name):
            with lock:
                events.append(name)

        a = auth_session(relay)
        self.addCleanup(a.close)
        self.assertEqual(a.cmd("MAIL FROM:<%s>" % SENDER)[0], 250)
        self.assertEqual(a.cmd("RCPT TO:<bob@example.net>")[0], 250)
        self.assertEqual(a.cmd("DATA")[0], 354)
        msg = make_message(SENDER, "bob@example.net", "slow sync", "wait for me\n")
        a_reply = []

        def read_a():
            try:
                a_reply.append(a.read_reply())
            except Exception as e:          # reported by the main thread
                a_reply.append(e)
            event("A-250")

        # the end of data is in relayd's socket buffer before B and C connect
        a.send(msg.encode() + b".\r\n")
        reader = threading.Thread(target=read_a, daemon=True)
        reader.start()

        with raw_session(relay.host, relay.submit_port) as c:
            self.assertEqual(c.greeting[0], 220)
            event("C-greeting")
        b = auth_session(relay)             # EHLO, STARTTLS, EHLO, AUTH PLAIN
        self.addCleanup(b.close)
        self.assertEqual(b.cmd("NOOP"), (250, "2.0.0 Ok"))
        event("B-noop")

        reader.join(30)
        self.assertFalse(reader.is_alive(), "no reply to A's end of data")
        [reply] = a_reply
        if isinstance(reply, Exception):
            raise reply
        qid = queued_as(reply)
        self.assertTrue(reply[1].startswith("2.0.0 "), reply)
        # A waited for the (slow) sync; the loop served B and C meanwhile.
        # With the sync on the loop, B and C would be answered only after A.
        self.assertEqual(events, ["C-greeting", "B-noop", "A-250"],
                         "the event loop stalled while a commit waited for its sync")
        # listed (and in msg/) once published, which may come after the 250
        wait_listed(relay, [qid])
        env, body = read_queued(relay, qid)
        self.assertEqual(env["sender"], SENDER)
        self.assertTrue(body.endswith(msg.encode()), body[-200:])
        self.assertEqual(a.cmd("QUIT")[0], 221)


@needs_test_hooks
class KillAfter250Test(unittest.TestCase):
    """SIGKILL while acknowledged messages are only in the journal."""

    def test_kill9_after_250_before_publish(self):
        relay = Relay.for_test(self, env={"RELAYD_TEST_PUBLISH_DELAY_MS": PUBLISH_DELAY_MS})
        relay.start()
        # (login, sender, recipients, body): one session for three, one
        # each for the others.  The first is larger than the 64 KiB buffer:
        # such a message may be acknowledged only after its publish, so it
        # goes first, and the others are acknowledged during the delay of a
        # later batch.
        big = "".join("big line %05d %s\n" % (i, "x" * 60) for i in range(2000))
        plan = [
            ("alice", SENDER, ["dave@example.net"], big),
            ("alice", SENDER, ["bob@example.net"], "one\n"),
            ("alice", SENDER, ["bob@example.net", "carol@example.com"], "two\n.dot\n"),
            ("bob", "bob@example.org", ["erin@example.net"], "four\n"),
            ("alice", "alice@alice.test", ["frank@example.com", "grace@example.net",
                                           "heidi@example.net"], "five\n"),
        ]
        sent = {}                            # qid -> (sender, rcpts, message bytes)
        shared = auth_session(relay)
        self.addCleanup(shared.close)
        for i, (user, sender, rcpts, text) in enumerate(plan):
            msg = make_message(sender, rcpts, "durable %d" % i,
                               "X-Marker: kill9-%d\n%s" % (i, text)).encode()
            stuffed = msg.replace(b"\r\n.", b"\r\n..")
            if i < 3:
                r = shared
            else:
                r = auth_session(relay, user=user, password=relay.users[user])
                self.addCleanup(r.close)
            qid = queued_as(send_message(r, sender, rcpts, stuffed))
            sent[qid] = (sender, rcpts, msg)
        relay.kill9()

        # The crash hit the window: some acknowledged message was only in
        # the journal (without that the rest of the test proves little).
        journal_only = [q for q in sent if q not in msg_files(relay)]
        self.assertTrue(journal_only, "every msg/<qid> was published before the kill: "
                        "RELAYD_TEST_PUBLISH_DELAY_MS not honoured?")

        # Restart without the delay; deliveries go to a sink that is down
        # for now, so that the queue can be looked at first.
        relay.env.pop("RELAYD_TEST_PUBLISH_DELAY_MS")
        relay.update_config(router={"routes": [
            {"domain": "*", "hosts": ["127.0.0.2:%d" % relay.smtp_port]}]})
        sink = relay.sink("127.0.0.2", start=False)
        relay.start()
        now = wait_listed(relay, sent)
        self.assertEqual(sorted(now), sorted(sent), "extra messages in the queue")
        for qid, (sender, rcpts, msg) in sent.items():
            env, body = read_queued(relay, qid)
            self.assertEqual(env["sender"], sender, qid)
            self.assertEqual([rc[1] for rc in env["rcpts"]], rcpts, qid)
            self.assertTrue(body.startswith(b"Received: "), (qid, body[:100]))
            self.assertTrue(body.endswith(msg), (qid, body[-200:]))
            self.assertEqual(now[qid]["size"], len(body), qid)
            self.assertEqual(now[qid]["sender"], sender, qid)
            self.assertEqual(sorted(rc["addr"] for rc in now[qid]["recipients"]),
                             sorted(rcpts), qid)
            doc = shown(relay, qid)
            self.assertEqual((doc["qid"], doc["sender"]), (qid, sender))
            self.assertEqual([rc["addr"] for rc in doc["recipients"]], rcpts, qid)
        self.assertEqual(corrupt_files(relay), [])

        # Deliver them, and two new ones that go through the journal of this
        # process: each message arrives once, whole.
        sink.up()
        r = auth_session(relay)
        self.addCleanup(r.close)
        for i in range(2):
            msg = make_message(SENDER, "bob@example.net", "fresh %d" % i,
                               "X-Marker: fresh-%d\n" % i).encode()
            sent[queued_as(send_message(r, SENDER, ["bob@example.net"], msg))] = \
                (SENDER, ["bob@example.net"], msg)
        wait_listed(relay, sent)
        r = relay.relayctl("queue", "flush", "--all")   # past the host's backoff
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        nrcpt = sum(len(v[1]) for v in sent.values())
        done = relay.wait_for_count("delivered", nrcpt, timeout=30)
        self.assertEqual(sorted({d["qid"] for d in done}), sorted(sent))
        got = sink.wait_for_messages(len(sent), timeout=30)
        for qid, (sender, rcpts, msg) in sent.items():
            mine = [m for m in got if m.data.endswith(msg)]
            self.assertEqual(len(mine), 1, "%s delivered %d times" % (qid, len(mine)))
            self.assertEqual(mine[0].mail_from, sender)
            self.assertEqual(sorted(m for m, _ in mine[0].rcpts), sorted(rcpts))
        deadline = time.monotonic() + 15
        while listed(relay) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(listed(relay), {})

        # A crash after delivery brings nothing back from the journal.  A
        # message submitted after the restart is published after anything
        # the replay would publish: once it is listed, nothing else may be.
        sink.down()
        relay.kill9()
        relay.start()
        msg = make_message(SENDER, "bob@example.net", "probe", "after the crash\n")
        r = auth_session(relay)
        self.addCleanup(r.close)
        probe = queued_as(send_message(r, SENDER, ["bob@example.net"], msg.encode()))
        self.assertEqual(sorted(wait_listed(relay, [probe])), [probe],
                         "delivered messages came back after a restart")
        self.assertEqual(msg_files(relay), [probe])
        self.assertEqual(len(sink.messages), len(sent))


@needs_test_hooks
class KillLoopTest(unittest.TestCase):
    """SIGKILL at random moments while four sessions submit continuously."""

    ROUNDS = 5
    SESSIONS = 4

    def test_kill9_loop(self):
        # a publish delay keeps acknowledged messages in the journal most of
        # the time, so that the kills land in that window
        relay = Relay.for_test(self, env={"RELAYD_TEST_PUBLISH_DELAY_MS": 200},
                               submit={"login_max_messages": 0})   # no rate limit
        rnd = random.Random()
        seed = rnd.randrange(1 << 30)
        rnd.seed(seed)
        acked = {}                          # qid -> marker
        sent = {}                           # marker -> message bytes (acknowledged or not)
        checked = set()                     # qids whose `queue show` worked
        in_window = []                      # per round: acknowledged, not in msg/ at the kill
        lock = threading.Lock()
        errors = []

        def client(rnd_no, sess_no, stop):
            try:
                r = auth_session(relay)
            except (OSError, EOFError, AssertionError, ValueError):
                return                      # killed before the session was up
            n = 0
            try:
                while not stop.is_set():
                    marker = "kill-loop-%d-%d-%d" % (rnd_no, sess_no, n)
                    body = "X-Marker: %s\n" % marker
                    if sess_no == 0 and n % 4 == 3:     # past the 64 KiB buffer
                        body += "".join("%s %05d\n" % (marker, i) for i in range(3000))
                    else:
                        body += "short %d\n" % n
                    msg = make_message(SENDER, "bob@example.net", marker, body).encode()
                    with lock:
                        sent[marker] = msg
                    for line, want in (("MAIL FROM:<%s>" % SENDER, 250),
                                       ("RCPT TO:<bob@example.net>", 250), ("DATA", 354)):
                        reply = r.cmd(line)
                        if reply[0] != want:
                            errors.append((marker, line, reply))
                            return
                    r.send(msg + b".\r\n")
                    reply = r.read_reply()
                    if reply[0] != 250:
                        errors.append((marker, "end of data", reply))
                        return
                    with lock:
                        acked[queued_as(reply)] = marker
                    n += 1
            except (OSError, EOFError):
                pass                        # relayd was killed under us
            finally:
                r.close()

        relay.start()
        for rnd_no in range(self.ROUNDS):
            stop = threading.Event()
            threads = [threading.Thread(target=client, args=(rnd_no, i, stop), daemon=True)
                       for i in range(self.SESSIONS)]
            for t in threads:
                t.start()
            # some mail acknowledged in this round, then a random moment
            base = len(acked)
            deadline = time.monotonic() + 20
            while len(acked) < base + 8 and time.monotonic() < deadline and not errors:
                time.sleep(0.01)
            time.sleep(rnd.uniform(0.0, 0.4))
            relay.kill9()
            stop.set()
            for t in threads:
                t.join(30)
            with lock:
                in_window.append(len(set(acked) - set(msg_files(relay))))
            self.assertEqual(errors, [], "seed %d" % seed)
            self.assertGreaterEqual(len(acked), base + 8, "round %d: too little accepted" % rnd_no)

            relay.start()
            now = wait_listed(relay, list(acked))
            self.check_queue(relay, now, sent, acked, checked,
                             "round %d (seed %d)" % (rnd_no, seed))
            self.assertEqual(corrupt_files(relay), [])
        # at least one kill hit acknowledged mail that was only in the journal
        self.assertTrue(any(in_window), "no kill hit the window (%r): "
                        "RELAYD_TEST_PUBLISH_DELAY_MS not honoured?" % in_window)

    def check_queue(self, relay, now, sent, acked, checked, where):
        """Every listed message is one that was sent, whole, queued once."""
        markers = {}
        for qid, m in now.items():
            env, body = read_queued(relay, qid)
            text = body.decode("utf-8", "replace")
            marker = (text.split("X-Marker: ", 1)[1].split("\r\n", 1)[0]
                      if "X-Marker: " in text else None)
            self.assertIn(marker, sent, "%s: %s holds no message that was sent" % (where, qid))
            self.assertNotIn(marker, markers, "%s: %s queued twice: %s, %s"
                             % (where, marker, markers.get(marker), qid))
            markers[marker] = qid
            if qid in acked:
                self.assertEqual(acked[qid], marker, "%s: %s" % (where, qid))
            self.assertTrue(body.startswith(b"Received: "), "%s: %s" % (where, qid))
            self.assertTrue(body.endswith(sent[marker]), "%s: %s (%s) is not whole"
                            % (where, qid, marker))
            self.assertEqual(m["size"], len(body), "%s: %s" % (where, qid))
            self.assertEqual([rc[1] for rc in env["rcpts"]], ["bob@example.net"])
            if qid not in checked:
                self.assertEqual(shown(relay, qid)["qid"], qid)
                checked.add(qid)


if __name__ == "__main__":
    unittest.main()


@needs_test_hooks
class DiskFailureTest(unittest.TestCase):
    """The disk stops taking files after a message was acknowledged from the
    journal: that message is kept (the journal's tail stays before it) and
    comes back at the next start; new mail is refused with 451 meanwhile,
    never acknowledged from a journal whose messages cannot be queued."""

    def test_publish_failure_turns_the_journal_off_and_loses_nothing(self):
        relay = Relay.for_test(self, env={"RELAYD_TEST_PUBLISH_DELAY_MS": "1000"})
        relay.start()
        r = auth_session(relay)
        self.addCleanup(r.close)
        r.cmd("MAIL FROM:<%s>" % SENDER)
        r.cmd("RCPT TO:<bob@example.net>")
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send("Subject: kept\r\n\r\njournal only\r\n.\r\n")
        code, text = r.read_reply()
        self.assertEqual(code, 250, text)
        kept = QUEUED_RE.search(text).group(1)
        # msg/ goes away while the publish waits: the publish fails
        relay.remove_msg_dir()
        relay.wait_for_log("queue_publish_failed", qid=kept)
        relay.wait_for_log("queue_journal_failed")
        r.cmd("MAIL FROM:<%s>" % SENDER)
        r.cmd("RCPT TO:<bob@example.net>")
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send("Subject: refused\r\n\r\nno room\r\n.\r\n")
        code, text = r.read_reply()
        self.assertEqual(code, 451, text)
        self.assertEqual(relay.count_log("accepted"), 1)
        r.close()

        relay.env.pop("RELAYD_TEST_PUBLISH_DELAY_MS", None)
        relay.restart()
        relay.wait_for_log("queue_journal_replayed", messages=1)
        env, body = read_queued(relay, kept)
        self.assertEqual(env["sender"], SENDER)
        self.assertTrue(body.endswith(b"\r\n\r\njournal only\r\n"), body[-60:])
        self.assertEqual(set(listed(relay)), {kept})


@needs_test_hooks
class ControlSeesAcknowledgedTest(unittest.TestCase):
    """relayctl answers only once every message acknowledged before its
    request has reached the scheduler: a QID a client was just given is
    never "unknown", even while its msg/ file is still being published."""

    def test_queue_show_right_after_250(self):
        relay = Relay.for_test(self, env={"RELAYD_TEST_PUBLISH_DELAY_MS": "1500"})
        relay.start()
        r = auth_session(relay)
        self.addCleanup(r.close)
        r.cmd("MAIL FROM:<%s>" % SENDER)
        r.cmd("RCPT TO:<bob@example.net>")
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send("Subject: at once\r\n\r\nshow me\r\n.\r\n")
        code, text = r.read_reply()
        self.assertEqual(code, 250, text)
        qid = QUEUED_RE.search(text).group(1)
        # still only in the journal: the publish waits 1.5 s
        self.assertNotIn(qid, msg_files(relay))
        self.assertEqual(shown(relay, qid)["qid"], qid)
        self.assertIn(qid, msg_files(relay))
