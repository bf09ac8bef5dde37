"""test_disk_full.py - a full disk heals without an operator (issue 15,
point 2).

The queue lives on a small tmpfs of its own (12 MiB: room for the 8 MiB
acceptance journal, preallocated, and a little mail).  The file system is
filled up; a message then still gets its 250 from the journal (the journal
needs no new block), but its msg/ file cannot be written: the journal goes
off (`queue_journal_failed`, naming the error) and the message is kept in it.
While the disk is full, new mail is refused with 452 4.3.1 (insufficient
system storage, RFC 3463), never acknowledged.  relayd probes the disk with
back-off; once space is freed it writes what the journal holds into msg/,
hands it to the scheduler and turns the journal on again
(`queue_journal_restored`): the acknowledged message is delivered exactly
once, without a restart.  The same across SIGKILL while the journal is off,
and while it is being restored.

Messages submitted while the disk is full are larger than any before them
(17 KiB more each time, below the 64 KiB that the journal takes): relayd
keeps the files of delivered messages for reuse, and on a full file system
it can still overwrite one in place.

Needs root (mount); skipped otherwise.  The restore test needs a relayd built
with RELAY_TEST_HOOKS (RELAYD_TEST_PUBLISH_DELAY_MS).
"""

import os
import shutil
import tempfile
import time
import unittest

from client import QUEUED_RE, make_message, submit
from relay import Relay, needs_test_hooks
from test_submit_smtp import auth_session, send_message, stop_cleanly
from tmpfs import fill, small_tmpfs

SENDER = "alice@example.org"
BOB = "bob@example.net"
ENOSPC = os.strerror(28)           # "No space left on device"


def big_message(marker, lines):
    """A message of about lines * 58 bytes."""
    body = "".join("%s line %04d %s\n" % (marker, i, "x" * 40) for i in range(lines))
    return make_message(SENDER, BOB, marker, "X-Marker: %s\n%s" % (marker, body)).encode()


def queued_as(reply):
    code, text = reply
    m = QUEUED_RE.search(text)
    if code != 250 or not m:
        raise AssertionError("not queued: %r" % (reply,))
    return m.group(1)


class DiskFullBase(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="relayd-disk-full-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.qdir = small_tmpfs(self, os.path.join(self.tmp, "queue"), "12m")
        self.filler = os.path.join(self.qdir, "filler")
        self.lines = 0              # of the last message submitted on a full disk

    def relay(self, **kw):
        relay = Relay.for_test(self, tmpdir=self.tmp,
                               router={"retry_intervals": ["1s"], "host_backoff": ["1s", "1s"]},
                               **kw)
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        return relay

    def fill_and_accept(self, relay, marker):
        """Fill the disk; a message gets its 250 from the journal, its publish
        fails and the journal goes off.  Returns (qid, message)."""
        mark = relay.log_mark()
        fill(self.filler)
        self.lines += 300           # larger than any file there is to reuse
        msg = big_message(marker, self.lines)
        r = auth_session(relay)
        self.addCleanup(r.close)
        qid = queued_as(send_message(r, SENDER, [BOB], msg))
        relay.wait_for_log("queue_publish_failed", since=mark, qid=qid, timeout=20)
        failed = relay.wait_for_log("queue_journal_failed", since=mark, timeout=20)
        self.assertEqual(failed["error"], ENOSPC, failed)
        self.assertGreaterEqual(int(failed["errors"]), 1, failed)
        r.close()
        return qid, msg

    def delivered_once(self, sink, msg):
        mine = [m for m in sink.messages if m.data.endswith(msg)]
        self.assertEqual(len(mine), 1, "delivered %d times" % len(mine))


class HealsWithoutRestartTest(DiskFullBase):

    def test_full_disk_after_250_heals_without_restart(self):
        relay = self.relay()
        sink = relay.sink("127.0.0.2")
        relay.start()
        relay.wait_for_log("queue_scan")
        self.assertEqual(relay.count_log("queue_journal_unavailable"), 0)   # the journal is in use
        pid = relay.pid

        # Mail flows; its file is kept for reuse once delivered.
        first_msg = make_message(SENDER, BOB, "first", "X-Marker: first\nbefore\n").encode()
        first = submit(relay, SENDER, [BOB], first_msg)
        relay.wait_for_log("delivered", qid=first, timeout=20)

        kept, kept_msg = self.fill_and_accept(relay, "kept")

        # While the disk is full: 452 4.3.1, and nothing is queued.
        r = auth_session(relay)
        self.addCleanup(r.close)
        code, text = send_message(r, SENDER, [BOB], big_message("refused", self.lines))
        self.assertEqual(code, 452, text)
        self.assertTrue(text.startswith("4.3.1 "), text)
        # one past the 64 KiB buffer fails while its body is being written
        code, text = send_message(r, SENDER, [BOB], big_message("refused-large", 1300))
        self.assertEqual(code, 452, text)
        self.assertTrue(text.startswith("4.3.1 "), text)
        # BDAT too, at the chunk whose octets cannot be written; the LAST
        # chunk pipelined behind it is read and dropped (503), in step
        msg = big_message("refused-bdat", 1300)
        c1, c2 = msg[:70000], msg[70000:]
        self.assertEqual(r.cmd("MAIL FROM:<%s>" % SENDER)[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<%s>" % BOB)[0], 250)
        r.send(b"BDAT %d\r\n" % len(c1) + c1 + b"BDAT %d LAST\r\n" % len(c2) + c2)
        code, text = r.read_reply()
        self.assertEqual(code, 452, text)
        self.assertTrue(text.startswith("4.3.1 "), text)
        self.assertEqual(r.read_reply(), (503, "5.5.1 Error: need MAIL command"))
        self.assertEqual(r.cmd("NOOP"), (250, "2.0.0 Ok"))
        r.close()

        # A probe found the disk still full: nothing restored, nothing sent.
        mark = relay.log_mark()
        relay.wait_for_log("queue_error", since=mark, op="probe(write)", error=ENOSPC, timeout=20)
        self.assertEqual(relay.count_log("queue_journal_restored"), 0)
        self.assertEqual(relay.count_log("delivered", qid=kept), 0)

        os.unlink(self.filler)
        restored = relay.wait_for_log("queue_journal_restored", timeout=40)
        self.assertEqual(restored["messages"], "1", restored)
        self.assertGreaterEqual(int(restored["probes"]), 2, restored)
        relay.wait_for_log("delivered", qid=kept, timeout=20)

        # The journal is on again: on a full disk a message is acknowledged
        # from it once more (with it off, the disk full, it would get 452),
        # and the second outage heals too.
        again, again_msg = self.fill_and_accept(relay, "again")
        self.assertEqual(relay.count_log("queue_journal_failed"), 2)
        os.unlink(self.filler)
        relay.wait_for_count("queue_journal_restored", 2, timeout=60)
        relay.wait_for_log("delivered", qid=again, timeout=20)

        # A last message through the journal; once it is delivered, anything
        # the restores handed over twice would have been delivered too.
        last_msg = make_message(SENDER, BOB, "last", "X-Marker: last\nafter\n").encode()
        last = submit(relay, SENDER, [BOB], last_msg)
        relay.wait_for_log("delivered", qid=last, timeout=20)

        self.assertEqual(relay.pid, pid, "relayd restarted")
        self.assertEqual(relay.count_log("started"), 1)
        self.assertEqual(relay.count_log("queue_journal_replayed"), 0)
        for msg in (first_msg, kept_msg, again_msg, last_msg):
            self.delivered_once(sink, msg)
        self.assertEqual(len(sink.messages), 4, [m.data[-80:] for m in sink.messages])
        for qid in (first, kept, again, last):
            self.assertEqual(relay.count_log("delivered", qid=qid), 1, qid)
        self.assertFalse([m for m in sink.messages if b"X-Marker: refused" in m.data])
        stop_cleanly(relay)


class KillWhileOffTest(DiskFullBase):

    def test_kill9_while_the_journal_is_off(self):
        relay = self.relay()
        sink = relay.sink("127.0.0.2")
        relay.start()
        relay.wait_for_log("queue_scan")
        kept, kept_msg = self.fill_and_accept(relay, "kept")
        relay.kill9()
        os.unlink(self.filler)

        relay.start()
        relay.wait_for_log("queue_journal_replayed", messages=1)
        relay.wait_for_log("delivered", qid=kept, timeout=20)
        last_msg = make_message(SENDER, BOB, "last", "X-Marker: last\nafter\n").encode()
        last = submit(relay, SENDER, [BOB], last_msg)
        relay.wait_for_log("delivered", qid=last, timeout=20)
        self.delivered_once(sink, kept_msg)
        self.assertEqual(len(sink.messages), 2)
        self.assertEqual(relay.count_log("delivered", qid=kept), 1)
        stop_cleanly(relay)

    def test_stop_while_the_journal_is_off(self):
        """A clean stop with an acknowledged message held: relayd exits 0
        (the held message freed, the probe timer closed), and the next start
        replays it from the journal."""
        relay = self.relay()
        sink = relay.sink("127.0.0.2")
        relay.start()
        relay.wait_for_log("queue_scan")
        kept, kept_msg = self.fill_and_accept(relay, "kept")
        self.assertEqual(relay.stop(), 0, relay.diagnostics())
        os.unlink(self.filler)

        mark = relay.log_mark()
        relay.start()
        relay.wait_for_log("queue_journal_replayed", since=mark, messages=1)
        relay.wait_for_log("delivered", qid=kept, timeout=20)
        self.delivered_once(sink, kept_msg)
        stop_cleanly(relay)


@needs_test_hooks
class KillWhileRestoringTest(DiskFullBase):
    """RELAYD_TEST_PUBLISH_DELAY_MS also holds a restore between writing the
    journal's messages into msg/ and moving the journal's tail past them."""

    DELAY_MS = 2000

    def test_kill9_while_the_journal_is_being_restored(self):
        relay = self.relay(env={"RELAYD_TEST_PUBLISH_DELAY_MS": self.DELAY_MS})
        sink = relay.sink("127.0.0.2")
        relay.start()
        relay.wait_for_log("queue_scan")
        kept, kept_msg = self.fill_and_accept(relay, "kept")
        mark = relay.log_mark()
        relay.wait_for_log("queue_error", since=mark, op="probe(write)", timeout=30)
        path = os.path.join(self.qdir, "msg", kept)
        self.assertFalse(os.path.exists(path))

        os.unlink(self.filler)
        # the restore has written msg/<kept>; its tail has not moved yet
        deadline = time.monotonic() + 60
        while not os.path.exists(path):
            self.assertLess(time.monotonic(), deadline, "no restore\n" + relay.diagnostics())
            time.sleep(0.01)
        relay.kill9()
        self.assertEqual(relay.count_log("queue_journal_restored"), 0,
                         "the kill came after the restore: the window was missed")
        self.assertEqual(relay.count_log("delivered", qid=kept), 0)

        relay.env.pop("RELAYD_TEST_PUBLISH_DELAY_MS")
        relay.start()
        relay.wait_for_log("queue_journal_replayed", messages=1)
        relay.wait_for_log("delivered", qid=kept, timeout=20)

        # And once restored for good, a kill brings nothing back.
        kept2, kept2_msg = self.fill_and_accept(relay, "kept2")
        os.unlink(self.filler)
        relay.wait_for_log("queue_journal_restored", timeout=40)
        relay.wait_for_log("delivered", qid=kept2, timeout=20)
        relay.kill9()
        mark = relay.log_mark()
        relay.start()
        relay.wait_for_log("queue_scan", since=mark)
        last_msg = make_message(SENDER, BOB, "last", "X-Marker: last\nafter\n").encode()
        last = submit(relay, SENDER, [BOB], last_msg)
        relay.wait_for_log("delivered", qid=last, timeout=20)
        self.assertEqual(relay.count_log("queue_journal_replayed", since=mark), 0)
        for msg in (kept_msg, kept2_msg, last_msg):
            self.delivered_once(sink, msg)
        self.assertEqual(len(sink.messages), 3)
        stop_cleanly(relay)


if __name__ == "__main__":
    unittest.main()
