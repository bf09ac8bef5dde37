"""test_relayctl_show.py - `relayctl queue show` reads the message file off
the event loop (daemon/control_queue.c: the libuv thread pool), against the
real relayd.

The test hook RELAYD_TEST_SHOW_DELAY_MS (a RELAY_TEST_HOOKS build) makes
that read wait first, as a slow disk would, and logs
event=queue_show_test_delay when it begins (event=queue_show_test_dropped
when a read nobody waits for any more is over).  What is proved: while one
read waits, relayd greets a new SMTP client, answers its EHLO and answers
`relayctl stats` and `relayctl reload`, and then the show answers in full; a
message deleted while its read runs answers "unknown queue id" (exit 1), as
for a show after the delete; a queue file relayd cannot parse answers
"cannot read the queue file of QID" (exit 1), as before; the relayctl client
closing its connection while the read runs, or relayd stopping then, costs
nothing (no crash, a clean stop; the ASan build checks the memory).  One
read runs at a time (the pool's threads also sign mail and check passwords):
a second show waits (event=queue_show_test_queued) until the first is
answered (event=queue_show_test_answered), and one whose client goes while
it waits never reads.  With
the hook sleeping on the loop instead, the first test fails: no greeting
while the read waits.
"""

import json
import os
import signal
import subprocess
import unittest

from client import raw_session
from relay import SLOW, needs_test_hooks, relayctl_bin
from test_relayctl import CtlCase

# the read's wait: far longer than a greeting and two relayctl answers
DELAY_MS = 5000 * SLOW


def show_proc(relay, *args):
    """`relayctl queue show ARGS` started, not waited for."""
    return subprocess.Popen([relayctl_bin(), "-s", relay.control_socket, "queue", "show", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


@needs_test_hooks
class ShowOffTheLoop(CtlCase):

    def start_delayed(self):
        self.start(env={"RELAYD_TEST_SHOW_DELAY_MS": str(DELAY_MS)})
        return self.send_deferred("bob@example.net", subject="Quarterly")

    def begin_show(self, qid, *args):
        """A show whose read has begun (and now waits DELAY_MS)."""
        mark = self.relay.log_mark()
        p = show_proc(self.relay, qid, *args)
        self.addCleanup(p.kill)
        self.relay.wait_for_log("queue_show_test_delay", since=mark, qid=qid)
        return p

    def stop_clean(self):
        self.assertEqual(self.relay.stop(), 0)
        self.assertEqual(self.relay.find_log("stopped")[-1].get("clean"), "yes")

    def test_loop_serves_smtp_and_relayctl_while_the_read_waits(self):
        qid = self.start_delayed()
        show = self.begin_show(qid, "--json")

        s = raw_session(self.relay.host, self.relay.submit_port, timeout=DELAY_MS / 1000 * 2)
        self.assertEqual(s.greeting[0], 220, s.greeting)
        code, text = s.cmd("EHLO client.example.org")
        self.assertEqual(code, 250, text)
        s.cmd("QUIT")
        s.close()
        stats = self.ctl("stats")
        self.assertEqual(stats.returncode, 0, stats.stderr)
        self.assertRegex(stats.stdout, r"(?m)^uptime\s")
        reload = self.ctl("reload")
        self.assertEqual(reload.returncode, 0, reload.stderr)
        # all of that was answered while the show's read still waited
        self.assertIsNone(show.poll(), "queue show answered before the loop served anybody")

        out, err = show.communicate(timeout=60)
        self.assertEqual(show.returncode, 0, err)
        doc = json.loads(out)
        self.assertEqual(doc["qid"], qid)
        self.assertEqual(doc["headers"]["subject"], "Quarterly")
        self.assertEqual(doc["headers"]["to"], "bob@example.net")
        [r] = doc["recipients"]
        self.assertEqual((r["addr"], r["state"], r["attempts"]), ("bob@example.net", "deferred", 1))
        self.assertEqual([(h["result"], h["ip"], h["status"]) for h in r["history"]],
                         [("deferred", "127.0.0.2", "4.4.1")])
        self.stop_clean()

    def test_message_deleted_while_the_read_runs_is_an_unknown_qid(self):
        qid = self.start_delayed()
        show = self.begin_show(qid)
        self.ok("queue", "delete", qid)
        self.relay.wait_for_log("deleted", qid=qid)
        out, err = show.communicate(timeout=60)
        self.assertEqual(show.returncode, 1, (out, err))
        self.assertEqual(out, "")
        self.assertIn("unknown queue id: %s" % qid, err)
        self.stop_clean()

    def test_client_gone_while_the_read_runs(self):
        qid = self.start_delayed()
        show = self.begin_show(qid)
        mark = self.relay.log_mark()
        show.kill()                                  # its connection closes mid-read
        show.communicate()
        self.relay.wait_for_log("queue_show_test_dropped", since=mark, qid=qid,
                                timeout=DELAY_MS / 1000 * 4)
        # relayd lives on, and the next show is whole
        out = self.ok("queue", "show", qid)
        self.assertRegex(out, r"(?m)^qid\s+%s$" % qid)
        self.assertRegex(out, r"(?m)^    Subject\s+Quarterly$")
        self.stop_clean()

    def test_one_read_at_a_time_and_a_waiting_one_can_go(self):
        """The pool's threads also sign mail and check passwords: a second
        show waits for the first's read to be over (queue_show_test_queued),
        and one whose client goes while it waits never reads."""
        qid1 = self.start_delayed()
        qid2 = self.send_deferred("carol@example.com", subject="Second")
        qid3 = self.send("dave@example.net", subject="Third")   # waits for example.net
        self.assertIn(qid3, self.qids_listed())    # the scheduler has it
        first = self.begin_show(qid1)
        mark = self.relay.log_mark()
        second = show_proc(self.relay, qid2)
        self.addCleanup(second.kill)
        third = show_proc(self.relay, qid3)
        self.addCleanup(third.kill)
        self.relay.wait_for_log("queue_show_test_queued", since=mark, qid=qid2)
        self.relay.wait_for_log("queue_show_test_queued", since=mark, qid=qid3)
        third.kill()                                 # gone while it waits
        third.communicate()
        self.relay.wait_for_log("queue_show_test_dropped", since=mark, qid=qid3)
        self.assertIsNone(first.poll())
        self.assertIsNone(second.poll())

        for p, qid, subject in ((first, qid1, "Quarterly"), (second, qid2, "Second")):
            out, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 0, err)
            self.assertRegex(out, r"(?m)^qid\s+%s$" % qid)
            self.assertRegex(out, r"(?m)^    Subject\s+%s$" % subject)
        self.relay.wait_for_log("queue_show_test_answered", since=mark, qid=qid2)
        # the second read began only once the first was answered; the third never did
        seen = [(d.get("event"), d.get("qid")) for d in self.relay.log_lines()[mark:]]
        self.assertLess(seen.index(("queue_show_test_answered", qid1)),
                        seen.index(("queue_show_test_delay", qid2)))
        self.assertNotIn(("queue_show_test_delay", qid3), seen)
        self.stop_clean()

    def test_stop_while_the_read_runs(self):
        qid = self.start_delayed()
        show = self.begin_show(qid)
        self.relay.signal(signal.SIGTERM)
        self.assertEqual(self.relay.wait_exit(timeout=DELAY_MS / 1000 * 6), 0)
        out, err = show.communicate(timeout=60)
        self.assertEqual(show.returncode, 1, (out, err))
        self.assertIn("no answer from relayd", err)
        # the read ended, unanswered, before the loop did
        names = [d.get("event") for d in self.relay.log_lines()]
        self.assertIn("queue_show_test_dropped", names)
        self.assertLess(names.index("queue_show_test_dropped"), names.index("stopped"))
        self.assertEqual(self.relay.find_log("stopped")[-1].get("clean"), "yes")


class ShowErrors(CtlCase):

    def test_unparseable_queue_file_is_a_storage_error(self):
        self.start()
        qid = self.send_deferred("bob@example.net")
        with open(os.path.join(self.relay.queue_dir, "msg", qid), "ab") as f:
            f.write(b"not a record\n")
        r = self.ctl("queue", "show", qid)
        self.assertEqual(r.returncode, 1, (r.stdout, r.stderr))
        self.assertEqual(r.stdout, "")
        self.assertIn("cannot read the queue file of %s" % qid, r.stderr)
        # the message itself is untouched
        self.assertEqual(self.qids_listed(), [qid])


if __name__ == "__main__":
    unittest.main()
