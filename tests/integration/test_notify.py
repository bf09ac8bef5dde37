"""test_notify.py - relayd speaks systemd's notify protocol (sd_notify through
libsystemd) on a real notify socket (issue 10, point 5; the C side).

The test binds an AF_UNIX datagram socket, starts relayd with NOTIFY_SOCKET
pointing at it (and WATCHDOG_USEC; WATCHDOG_PID is left unset, which
sd_watchdog_enabled accepts) and reads what relayd sends, synchronising on
the datagrams: READY=1 only once the submission port listens and the control
socket exists, with a STATUS= line; WATCHDOG=1 again and again at about half
the interval; STATUS= following the queue and the destinations' health;
RELOADING=1 then READY=1 around a SIGHUP (and around relayctl reload, also
when the new configuration is rejected); STOPPING=1 on SIGTERM, then a
clean exit.  Without NOTIFY_SOCKET relayd runs as before.
"""

import os
import signal
import socket
import threading
import time
import unittest

from client import make_message, submit
from relay import SLOW, Relay, _listening

SENDER = "alice@example.org"


class NotifySocket:
    """The manager's end: collects every datagram with its arrival time."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)       # as systemd's: relayd may have switched to its user
        self.sock.settimeout(0.2)
        self.msgs = []                    # (monotonic time, {key: value}, raw)
        self.cond = threading.Condition()
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            text = data.decode()
            fields = dict(line.split("=", 1) for line in text.split("\n") if "=" in line)
            with self.cond:
                self.msgs.append((time.monotonic(), fields, text))
                self.cond.notify_all()

    def mark(self):
        with self.cond:
            return len(self.msgs)

    def wait(self, pred, since=0, timeout=10, what="a datagram"):
        """The first datagram from index since on whose fields satisfy pred;
        returns (index, fields)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(since, len(self.msgs)):
                    if pred(self.msgs[i][1]):
                        return i, self.msgs[i][1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no %s within %ss; got %r"
                                         % (what, timeout, [m[2] for m in self.msgs]))
                self.cond.wait(left)

    def wait_key(self, key, value=None, since=0, timeout=10):
        return self.wait(lambda f: key in f and (value is None or f[key] == value),
                         since, timeout, "%s=%s" % (key, value if value is not None else "*"))

    def close(self):
        self.running = False
        self.thread.join(2)
        self.sock.close()


class Notify(unittest.TestCase):
    # pings every 0.5 s; under TSan (SLOW 3) every 1.5 s: a gap is checked
    # against the interval, and TSan's relayd on a loaded machine must not
    # miss it by scheduling alone (0.5 s of slack was all it had)
    WATCHDOG_USEC = 1000000 * SLOW

    def make(self, **kw):
        self.relay = Relay.for_test(self, **kw)
        self.ns = NotifySocket(os.path.join(self.relay.tmpdir, "notify.sock"))
        self.addCleanup(self.ns.close)
        self.relay.env.update(NOTIFY_SOCKET=self.ns.path,
                              WATCHDOG_USEC=str(self.WATCHDOG_USEC), WATCHDOG_PID=None)
        return self.relay

    def test_lifecycle(self):
        relay = self.make()
        relay.start(wait=False)
        _, ready = self.ns.wait_key("READY", "1")
        # READY=1 came only after the port listens and the control socket exists.
        self.assertTrue(_listening(relay.host, relay.submit_port))
        self.assertTrue(os.path.exists(relay.control_socket))
        # READY=1 comes with the scan of msg/ started on its thread, not done.
        self.assertEqual(ready.get("STATUS"),
                         "0 messages queued, 0 destinations down, scanning the queue: 0 loaded so far")
        relay.wait_ready()
        relay.wait_for_log("queue_scanned")
        self.ns.wait_key("STATUS", "0 messages queued, 0 destinations down", timeout=10)

        # The watchdog: WATCHDOG=1 again and again, about every half interval.
        first, _ = self.ns.wait_key("WATCHDOG", "1")
        i = first
        for _ in range(4):
            i, _ = self.ns.wait_key("WATCHDOG", "1", since=i + 1, timeout=5)
        with self.ns.cond:
            times = [t for t, f, _ in self.ns.msgs[first:i + 1] if f.get("WATCHDOG") == "1"]
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertLess(max(gaps), self.WATCHDOG_USEC / 1e6, gaps)   # inside the deadline
        # A timer, not a spin.  The first ping goes out with READY, between two
        # ticks of the timer, so only the gaps after it show the timer's period.
        self.assertGreater(min(gaps[1:]), self.WATCHDOG_USEC / 1e6 / 4, gaps)

        # SIGHUP: RELOADING=1, then READY=1, in that order.
        mark = self.ns.mark()
        relay.sighup()
        r, _ = self.ns.wait_key("RELOADING", "1", since=mark)
        self.ns.wait_key("READY", "1", since=r + 1)
        relay.wait_for_log("reloaded")

        # relayctl reload with a broken file: still RELOADING=1 then READY=1
        # (relayd goes on serving with the old configuration).
        with open(relay.config_path, "a") as f:
            f.write("\nbogus_key = 1;\n")
        mark = self.ns.mark()
        self.assertEqual(relay.relayctl("reload").returncode, 1)
        r, _ = self.ns.wait_key("RELOADING", "1", since=mark)
        self.ns.wait_key("READY", "1", since=r + 1)
        relay.write_config()

        # SIGTERM: STOPPING=1, and a clean exit.
        mark = self.ns.mark()
        relay.signal(signal.SIGTERM)
        self.ns.wait_key("STOPPING", "1", since=mark)
        self.assertEqual(relay.wait_exit(), 0)
        relay.wait_for_log("stopped", clean="yes")

    def test_status_follows_the_queue(self):
        relay = self.make(router={"retry_intervals": ["1h"], "host_backoff": ["1h", "1h"]})
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        relay.sink("127.0.0.2", start=False)            # down: connections refused
        relay.start()
        self.ns.wait_key("READY", "1")
        for n in range(2):
            rcpt = "bob%d@example.net" % n
            qid = submit(relay, SENDER, [rcpt], make_message(SENDER, rcpt, "s", "b\r\n"))
            relay.wait_for_log("deferred", qid=qid, timeout=20)
        self.ns.wait_key("STATUS", "2 messages queued, 1 destination down", timeout=10)

    def test_no_watchdog_without_watchdog_usec(self):
        relay = self.make()
        relay.env.update(WATCHDOG_USEC=None)
        relay.start()
        self.ns.wait_key("READY", "1")
        # With a watchdog, WATCHDOG=1 follows READY=1 at once; a reload's
        # READY=1 later proves relayd went on past that point.
        mark = self.ns.mark()
        relay.sighup()
        self.ns.wait_key("READY", "1", since=mark)
        with self.ns.cond:
            self.assertFalse([m for m in self.ns.msgs if "WATCHDOG" in m[1]])

    def test_without_notify_socket(self):
        relay = Relay.for_test(self, env={"NOTIFY_SOCKET": None, "WATCHDOG_USEC": "100000"})
        relay.start()
        self.assertEqual(relay.relayctl("stats").returncode, 0)
        self.assertEqual(relay.stop(), 0)
        relay.wait_for_log("stopped", clean="yes")


if __name__ == "__main__":
    unittest.main()
