"""test_delivery_thread.py - outbound delivery runs on its own thread.

With deliver.thread = true, deliver/ runs its pool, its sessions and their
sockets on the delivery thread (deliver/deliver_thread.c), an event loop of its own beside the main loop
that serves submission and relayctl.  These tests prove it from the outside:

- a thread named relayd-deliver exists, and while it is stuck (the test hook
  RELAYD_TEST_DELIVER_STALL_MS blocks it before its first delivery) the main
  loop still takes a whole submission session and answers relayctl; the
  stuck delivery then goes out;
- SIGHUP and SIGTERM with deliveries in flight: the reload is taken while
  both are in flight, a delivery waiting for its final reply at SIGTERM
  finishes and is logged delivered, relayd stops cleanly (exit 0, "stopped clean=yes"), and a delivery aborted
  by the shutdown stays queued and goes out after a restart.
"""

import os
import unittest

from client import make_message, submit
from relay import Relay, needs_test_hooks

SENDER = "alice@example.org"


def thread_names(pid):
    names = []
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return names


class ThreadCase(unittest.TestCase):

    def make(self, **overrides):
        self.relay = Relay.for_test(self, **overrides)
        self.relay.update_config(deliver={"thread": True})
        self.relay.dns.set_mx_ips("example.org", [(10, "127.0.0.4")])
        self.relay.sink("127.0.0.4")
        return self.relay

    def send(self, rcpt, subject):
        msg = make_message(SENDER, rcpt, subject, "Body of %s.\r\n" % subject)
        return submit(self.relay, SENDER, [rcpt], msg)


@needs_test_hooks
class StuckDeliveryThread(ThreadCase):

    def test_main_loop_serves_while_delivery_is_stuck(self):
        relay = self.make()
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        sink = relay.sink("127.0.0.2")
        relay.env["RELAYD_TEST_DELIVER_STALL_MS"] = "8000"
        relay.start()
        self.assertIn("relayd-deliver", thread_names(relay.pid))
        first = self.send("bob@example.net", "first")
        relay.wait_for_log("accepted", qid=first)
        # The delivery thread now sleeps in its first delivery; the main loop
        # takes a whole second submission session and answers relayctl.
        second = self.send("carol@example.net", "second")
        relay.wait_for_log("accepted", qid=second)
        self.assertEqual(relay.relayctl("stats").returncode, 0)
        self.assertEqual(sink.messages, [])
        self.assertEqual(relay.find_log("delivered"), [])
        relay.wait_for_log("delivered", qid=first, timeout=30)
        relay.wait_for_log("delivered", qid=second, timeout=30)
        self.assertEqual(sorted(m.rcpt_addrs[0] for m in sink.wait_for_messages(2)),
                         ["bob@example.net", "carol@example.net"])


class InFlight(ThreadCase):

    def test_reload_and_stop_with_deliveries_in_flight(self):
        relay = self.make()
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        relay.dns.set_mx_ips("example.com", [(10, "127.0.0.3")])
        held, release, at_eod = relay.held_sink("127.0.0.2")
        hung = relay.sink("127.0.0.3")
        hung.script(mail=["HANG", "250 2.1.0 ok"])
        relay.start()
        waiting = self.send("bob@example.net", "awaits its final reply")
        aborted = self.send("dave@example.com", "hangs at MAIL")
        self.assertTrue(at_eod.wait(20), "the delivery never reached the end of data")
        hung.wait_for_command("MAIL")

        # A reload with both in flight reaches the delivery thread: nothing
        # is lost, and the deliveries keep going.
        mark = relay.log_mark()
        relay.sighup()
        relay.wait_for_log("reloaded", since=mark)

        # SIGTERM: the one awaiting its final reply finishes, the other is
        # aborted and stays queued; relayd stops cleanly.
        mark = relay.log_mark()
        relay.signal(15)
        relay.wait_for_log("stopping", since=mark)
        release.set()
        self.assertEqual(relay.wait_exit(30), 0)
        relay.wait_for_log("stopped", since=mark, clean="yes")
        relay.wait_for_log("delivered", qid=waiting)
        self.assertEqual(len(held.messages), 1)
        self.assertEqual(relay.find_log("delivered", qid=aborted), [])

        # After a restart the aborted one goes out (the sink answers MAIL now).
        relay.start()
        relay.wait_for_log("delivered", qid=aborted, timeout=30)
        self.assertEqual([m.rcpt_addrs for m in hung.wait_for_messages(1)],
                         [["dave@example.com"]])
        self.assertEqual(len(held.messages), 1)     # never sent twice

    def test_reload_log_level_reaches_the_delivery_thread(self):
        # The log level is set on the main loop and read by the delivery
        # thread at every line: a reload to "debug" while a delivery waits
        # for its final reply shows in that session's next state change.
        # (Under ThreadSanitizer this also proves the level is shared
        # without a data race: relayd then exits 66.)
        relay = self.make(log_level="info")
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        held, release, at_eod = relay.held_sink("127.0.0.2")
        relay.start()
        qid = self.send("bob@example.net", "held at its final reply")
        self.assertTrue(at_eod.wait(20), "the delivery never reached the end of data")
        self.assertEqual(relay.find_log(level="debug"), [])      # info: no debug lines

        mark = relay.log_mark()
        relay.update_config(log_level="debug")
        relay.sighup()
        relay.wait_for_log("reloaded", since=mark)
        release.set()
        relay.wait_for_log("delivered", qid=qid)
        relay.wait_for_log("deliver_attempt", since=mark, qid=qid, level="debug")

        mark = relay.log_mark()
        relay.signal(15)
        self.assertEqual(relay.wait_exit(30), 0)
        relay.wait_for_log("stopped", since=mark, clean="yes")


if __name__ == "__main__":
    unittest.main()
