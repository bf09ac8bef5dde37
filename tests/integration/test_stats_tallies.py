"""test_stats_tallies.py - `relayctl stats` comes from tallies the scheduler
keeps as recipients move (router/router_sched_tally.c), not from a walk over
the queue (issue #16, step 4: stats under 100 ms with 1,000,000 queued).

After each step of a mix of operations — mail deferred by down destinations,
hold, release, delete, bounce, flush (every recipient queued again and
attempted), reload, a destination coming up and delivering, and a restart —
stats (text and --json) must say exactly what a walk over `queue list --json`
says: the messages, the pending recipients by state, and per recipient
domain.  In a debug build (CI's ASan build: no NDEBUG) relayd itself also compares its
tallies with a full walk on every stats and stops on a difference
(daemon/control_hosts.c, rctl_stats_check), so a wrong tally shows up here as
a failed relayctl as well.
"""

import collections
import time
import unittest

from client import make_message, submit
from relay import needs_test_hooks
from test_relayctl import SENDER, CtlCase

# Every group sync of the queue sleeps this long first (RELAYD_TEST_SYNC_DELAY_MS):
# long enough that two relayctl runs fit in it on a busy machine.  Nothing is
# asserted about durations, only about order.
SYNC_DELAY_MS = 3000


class StatsTallies(CtlCase):

    def walk(self):
        """stats' figures computed from the full listing."""
        lst = self.js("queue", "list")
        states = collections.Counter()
        doms = collections.Counter()
        for m in lst["messages"]:
            for r in m["recipients"]:
                if r["state"] in ("delivered", "failed"):
                    continue
                states[r["state"]] += 1
                doms[r["addr"].rsplit("@", 1)[1].lower()] += 1
        return len(lst["messages"]), states, doms

    def check(self, want_msgs):
        """stats equals the walk (and the messages expected); the text form agrees."""
        q = self.js("stats")["queue"]
        msgs, states, doms = self.walk()
        self.assertEqual(q["messages"], msgs)
        self.assertEqual(q["messages"], want_msgs)
        self.assertEqual(q["recipients"],
                         {k: states.get(k, 0) for k in ("pending", "deferred", "held", "active")})
        self.assertEqual(q["domains"], len(doms))
        self.assertEqual({d["domain"]: d["recipients"] for d in q["top_destinations"]},
                         dict(doms))
        out = self.ok("stats")
        self.assertRegex(out, r"(?m)^queued\s+%d$" % msgs)
        for k in ("pending", "deferred", "held", "active"):
            self.assertRegex(out, r"(?m)^  %s\s+%d$" % (k, states.get(k, 0)))
        for d, n in doms.items():
            self.assertRegex(out, r"(?m)^%s\s+%d\s+\S+$" % (d.replace(".", r"\."), n))
        return q

    def send_two(self, subject):
        """One message to a recipient at each down destination."""
        rcpts = ["x-%s@example.net" % subject, "y-%s@Example.COM" % subject]
        msg = make_message(SENDER, ", ".join(rcpts), subject, "Body.\r\n")
        qid = submit(self.relay, SENDER, rcpts, msg)
        self.relay.wait_for_count("deferred", 2, qid=qid, timeout=20)
        return qid

    def test_tallies_equal_a_walk_through_admin_reload_delivery_and_restart(self):
        relay = self.start()
        self.check(0)
        q1 = self.send_deferred("a@example.net", "1")
        q2 = self.send_deferred("b@example.net", "2")
        q3 = self.send_deferred("c@example.com", "3")
        q4 = self.send_two("4")
        q = self.check(4)
        self.assertEqual(q["recipients"]["deferred"], 5)
        self.assertEqual(q["domains"], 2)

        self.ok("queue", "hold", q1)
        self.ok("queue", "hold", q4)
        q = self.check(4)
        self.assertEqual(q["recipients"]["held"], 3)
        self.ok("queue", "release", q1)
        self.relay.wait_for_count("deferred", 2, qid=q1, timeout=20)
        self.check(4)
        self.ok("queue", "delete", q2)
        self.check(3)

        # Flush: every recipient is queued again and attempted; the destinations
        # are still down, so they come back deferred.
        mark = relay.log_mark()
        self.ok("queue", "flush", "--all")
        relay.wait_for_log("deferred", since=mark, qid=q1, timeout=20)
        relay.wait_for_log("deferred", since=mark, qid=q3, timeout=20)
        self.check(3)

        # Reload: jobs not started are routed again.
        mark = relay.log_mark()
        self.ok("reload")
        relay.wait_for_log("reloaded", since=mark, timeout=20)
        self.check(3)

        # example.com comes up: its mail is delivered (q4 is held: stays).
        self.com.up()
        self.ok("hosts", "reset", "127.0.0.3")
        relay.wait_for_log("delivered", qid=q3, timeout=20)
        q = self.check(2)
        self.assertEqual(q["recipients"]["held"], 2)

        # Bounce the held one: its recipients fail and leave the tallies.
        self.ok("queue", "bounce", q4)
        relay.wait_for_log("bounced", qid=q4, timeout=20)
        relay.wait_for_log("delivered", rcpt=SENDER, timeout=20)    # the report
        self.check(1)

        # A restart rebuilds everything from the queue files (q1 is tried at
        # once: it was waiting for its destination).
        mark = relay.log_mark()
        relay.restart()
        relay.wait_for_log("deferred", since=mark, qid=q1, timeout=20)
        self.check(1)

    def test_a_failed_delete_leaves_the_tallies_right(self):
        """`queue delete` cancels the message's waiting jobs before it removes
        the file; when the removal fails (msg/ not writable for relayd's user),
        the message stays queued and its recipients are due again: stats must
        still equal the walk (relayd once left it with no wake-up, counted as
        deferred by the tallies and pending by the walk; a debug build stopped
        on stats).  relayctl says so, exit 1; the messages named before it are
        deleted, the one after it is left alone."""
        import os
        relay = self.start()
        q1 = self.send_deferred("a@example.net", "1")
        q2 = self.send_deferred("b@example.net", "2")
        q3 = self.send_deferred("c@example.net", "3")
        self.check(3)
        msgdir = os.path.join(relay.queue_dir, "msg")
        mode = os.stat(msgdir).st_mode & 0o7777
        os.chmod(msgdir, 0o555)         # relayd runs as nobody, the owner
        try:
            err = self.fails(1, "queue", "delete", q2, q3)
        finally:
            os.chmod(msgdir, mode)
        self.assertIn("delete %s: storage error (0 messages deleted before it)" % q2, err)
        self.assertEqual(sorted(self.qids_listed()), sorted([q1, q2, q3]))
        self.check(3)
        self.assertIn("deleted 2 messages", self.ok("queue", "delete", q2, q3))
        self.check(1)

    def test_delete_of_a_vanished_file(self):
        """A message whose file was removed behind relayd's back: its id names
        no file any more, which is what the delete wanted.  It is deleted and
        counted (relayd once answered "deleted 0 messages" and kept it queued,
        so that a `--domain` delete stopped there for good), the removal is
        logged as a queue error, and the rest of a --domain delete goes on."""
        import os
        relay = self.start()
        q1 = self.send_deferred("a@example.net", "1")
        q2 = self.send_deferred("b@example.net", "2")
        q3 = self.send_deferred("c@example.net", "3")
        self.check(3)
        os.remove(os.path.join(relay.queue_dir, "msg", q1))
        mark = relay.log_mark()
        self.assertIn("deleted 3 messages", self.ok("queue", "delete", "--domain", "example.net"))
        relay.wait_for_log("queue_error", since=mark, qid=q1, op="remove", timeout=10)
        self.assertEqual(relay.count_log("deleted", since=mark), 3)
        self.assertEqual(self.qids_listed(), [])
        self.check(0)
        left = os.listdir(os.path.join(relay.queue_dir, "msg"))
        self.assertEqual([f for f in left if not f.startswith(".")], [])   # spares only


@needs_test_hooks
class StatsAnswersFromMemory(CtlCase):
    """`relayctl stats` answers from the scheduler's tallies, which follow a
    record as soon as the loop issues it: it does not wait for the queue's
    writer to make every record issued so far durable, as the commands that
    read queue files do (issue #16 step 4: after a mass deferral the writer
    has up to a million to append, and one stats in three took 1.4-2 s).  A
    delivery's "delivered" line is written only once its D record is durable;
    with every group sync slowed down, stats must count the delivery while
    that line is still missing."""

    def test_stats_does_not_wait_for_the_records(self):
        relay = self.start(env={"RELAYD_TEST_SYNC_DELAY_MS": SYNC_DELAY_MS})
        qid = self.send("bob@example.org", "slow record")
        self.home.wait_for_messages(1, timeout=60)
        deadline = time.monotonic() + 60
        while self.js("stats")["counters"]["delivered"] < 1:    # the D record is issued
            self.assertLess(time.monotonic(), deadline, "stats never counted the delivery")
            time.sleep(0.05)
        self.assertEqual(relay.count_log("delivered", qid=qid), 0,
                         "stats waited for the D record to be durable")
        relay.wait_for_count("delivered", 1, qid=qid, timeout=60)


@needs_test_hooks
class ControlWaitsByCommand(CtlCase):
    """What each relayctl command waits for is the `wait` column of the
    command table (common/control_cmds.c; reasons in queue/QUEUE.md,
    "relayctl").  The commands that answer from the scheduler's memory, or
    change it (their own records follow the ones before them on the
    queue's writer), wait only for the acknowledged messages, like stats:
    after a mass deferral every command took seconds behind the writer.
    `queue delete` still waits for the records issued before it, so that it
    renames the file on the loop and a failure is answered."""

    # Each group sync takes this long.  A command is only checked inside
    # the window it leaves (from the D record's issue to its sync); when a
    # slow machine (a sanitizer build under load) has used up most of it,
    # the next commands get a new message and a new window.
    SLOW_SYNC_MS = 15000

    def delivery_window(self, relay, n):
        """Submit the n-th message to bob, wait until stats counts its
        delivery (its D record issued, not durable): (qid, issue time)."""
        qid = self.send("bob@example.org", "slow record %d" % n)
        self.home.wait_for_messages(n, timeout=120)
        deadline = time.monotonic() + 120
        while self.js("stats")["counters"]["delivered"] < n:    # the D record is issued
            self.assertLess(time.monotonic(), deadline, "stats never counted the delivery")
            time.sleep(0.05)
        issued = time.monotonic()
        self.assertEqual(relay.count_log("delivered", qid=qid), 0,
                         "the D record was durable already: SYNC_DELAY not honoured?")
        return qid, issued

    def test_memory_commands_do_not_wait_for_the_records(self):
        relay = self.start(env={"RELAYD_TEST_SYNC_DELAY_MS": self.SLOW_SYNC_MS})
        q1 = self.send_deferred("a@example.net", "waits")
        n = 1
        qid, issued = self.delivery_window(relay, n)
        commands = [
            ("queue", "list"),
            ("hosts",),
            ("route", "list"),
            ("auth", "list"),
            ("queue", "hold", q1),
            ("queue", "release", q1),
            ("queue", "flush", "--all"),
            ("hosts", "reset", "127.0.0.2"),
            ("route", "set", "example.com", "127.0.0.3:25"),
            ("reload",),
            ("queue", "bounce", q1),
        ]
        for args in commands:
            if time.monotonic() - issued > self.SLOW_SYNC_MS / 2000.0:
                n += 1
                qid, issued = self.delivery_window(relay, n)
            r = self.ctl(*args)
            self.assertIn(r.returncode, (0, 1), "relayctl %s: %r" % (" ".join(args), r))
            self.assertLess(time.monotonic() - issued, self.SLOW_SYNC_MS / 1000.0,
                            "relayctl %s: ran past the window, cannot tell" % " ".join(args))
            self.assertEqual(relay.count_log("delivered", qid=qid), 0,
                             "relayctl %s waited for the D record to be durable"
                             % " ".join(args))
        relay.wait_for_count("delivered", 1, qid=qid, timeout=120)
        relay.wait_for_log("bounced", qid=q1, timeout=120)
        # The stop writes what is left, each group sync as slow.
        self.assertEqual(relay.stop(timeout=240), 0)

    def test_delete_waits_for_the_records_before_it(self):
        """A's deferral record is on its way to the file (every group sync
        slowed down) when `queue delete` comes, msg/ not writable: the
        delete waits for the record, then renames the file itself and
        answers the failure (exit 1, the message stays queued).  Without its
        wait the removal went behind the record to the writer, relayctl
        said "deleted 1 message" and the failure was only logged."""
        import os
        relay = self.start(env={"RELAYD_TEST_SYNC_DELAY_MS": 3000})
        q1 = self.send_deferred("a@example.net", "1")     # its A record is not durable yet
        msgdir = os.path.join(relay.queue_dir, "msg")
        mode = os.stat(msgdir).st_mode & 0o7777
        os.chmod(msgdir, 0o555)         # relayd runs as nobody, the owner
        try:
            err = self.fails(1, "queue", "delete", q1)
        finally:
            os.chmod(msgdir, mode)
        self.assertIn("delete %s: storage error (0 messages deleted before it)" % q1, err)
        self.assertEqual(self.qids_listed(), [q1])
        self.assertIn("deleted 1 message", self.ok("queue", "delete", q1))
        self.assertEqual(self.qids_listed(), [])


if __name__ == "__main__":
    unittest.main()
