"""test_fd_limit.py - relayd and RLIMIT_NOFILE: at start it raises its soft
limit to the hard limit and logs it (event=fd_limit), so that
submit.max_connections sessions can each have a descriptor; a configuration
whose submit.max_connections + router.max_connections + 256 + 512 (the
queue's: recycled files' descriptors kept for its writer, record files not
yet synced) + one spare
descriptor per submission listener (the accept pause's) does not fit
under the hard limit is refused with a message saying what to raise, at
start (exit 1, start_failed) and at a reload (reload_failed, the old
configuration stays).

The limits are set for relayd's process only (preexec_fn, a wrapper that
execs relayd, or this test process's soft limit around the start, which
relayd inherits).
"""

import os
import resource
import socket
import subprocess
import unittest

from relay import Relay, relayd_bin


def nofile_of(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3]), int(line.split()[4])
    raise AssertionError("no Max open files line")


def start_limited(relay, n):
    """Start relay's relayd with RLIMIT_NOFILE n (soft and hard), through a
    wrapper that sets it and execs relayd."""
    wrapper = os.path.join(relay.tmpdir, "relayd-%d" % n)
    with open(wrapper, "w") as f:
        f.write('#!/bin/sh\nulimit -n %d && exec "%s" "$@"\n' % (n, relayd_bin()))
    os.chmod(wrapper, 0o755)
    saved = os.environ.get("RELAYD_BIN")
    os.environ["RELAYD_BIN"] = wrapper
    try:
        relay.start()
    finally:
        if saved is None:
            del os.environ["RELAYD_BIN"]
        else:
            os.environ["RELAYD_BIN"] = saved
    assert nofile_of(relay.pid) == (n, n), nofile_of(relay.pid)


class FdLimitTest(unittest.TestCase):

    def test_raises_soft_limit_to_hard(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard < 2048:
            self.skipTest("needs a finite hard RLIMIT_NOFILE of at least 2048 (is %s)" % hard)
        relay = Relay.for_test(self, submit={"workers": 1})
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
        try:
            relay.start()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        ev = relay.wait_for_log("fd_limit")
        self.assertEqual(ev["was"], "512")
        self.assertEqual(ev["soft"], str(hard))
        self.assertEqual(ev["hard"], str(hard))
        # the defaults, and the spare descriptor of each of the test's two
        # listeners (listen, listen_tls); relayd once left them out
        self.assertEqual(len(relay.config["submit"]["listen"]) +
                         len(relay.config["submit"]["listen_tls"]), 2)
        self.assertEqual(ev["need"], str(1000 + 100 + 256 + 512 + 2))
        self.assertEqual(nofile_of(relay.pid), (hard, hard))

    def test_refuses_max_connections_over_hard_limit(self):
        relay = Relay.for_test(self, submit={"max_connections": 2000, "workers": 1})
        r = subprocess.run(
            [relayd_bin(), "-c", relay.config_path], capture_output=True, text=True,
            timeout=30, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                              (1024, 1024)))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("submit.max_connections 2000 and router.max_connections 100 need "
                      "2870 file descriptors, but the hard RLIMIT_NOFILE is 1024", r.stderr)
        ev = relay.wait_for_log("start_failed")
        self.assertIn("lower submit.max_connections", ev["error"])
        self.assertEqual(relay.count_log("started"), 0)

    def test_reload_refuses_what_the_limit_cannot_hold(self):
        relay = Relay.for_test(self, submit={"workers": 1})
        # 1,870 descriptors needed now, 10,870 after the change: relayd gets
        # 2,000 (hard), through a wrapper that sets it and execs relayd.
        start_limited(relay, 2000)
        relay.update_config(submit={"max_connections": 10000})
        mark = relay.log_mark()
        relay.sighup()
        ev = relay.wait_for_log("reload_failed", since=mark)
        self.assertIn("need 10870 file descriptors, but the current RLIMIT_NOFILE is 2000",
                      ev["error"])
        relay.update_config(submit={"max_connections": 1000})
        mark = relay.log_mark()
        relay.sighup()
        relay.wait_for_log("reloaded", since=mark)
        # exactly 2,000 with the two listeners relayd has: a reload that adds a
        # third (ignored until a restart) needs no spare descriptor for it
        relay.update_config(submit={"max_connections": 1130, "listen": [
            "127.0.0.1:%d" % relay.submit_port, "127.0.0.1:1"]})
        mark = relay.log_mark()
        relay.sighup()
        relay.wait_for_log("reload_listen_ignored", since=mark)
        relay.wait_for_log("reloaded", since=mark)
        self.assertEqual(relay.count_log("reload_failed", since=mark), 0)

    def test_session_threads_are_counted(self):
        # 32 session threads, each with its own listening sockets, their
        # spares and its loop's descriptors: what relayd says it needs must
        # hold them and still every one of submit.max_connections sessions.
        # Given exactly that many, relayd starts and all ten sessions are
        # greeted (when the threads were left out of the sum, 32 of them did
        # not fit: relayd died at start with "too many open files"; with
        # 25 it started holding all its descriptors, and greeted nobody).
        relay = Relay.for_test(self, submit={"workers": 32, "max_connections": 10,
                                              "max_connections_per_ip": 10},
                               router={"max_connections": 10})
        relay.start()
        ev = relay.wait_for_log("fd_limit")
        need = int(ev["need"])
        self.assertEqual(need, 10 + 10 + 256 + 512 + 32 * (2 * 2 + 8 + 4))
        relay.stop()
        start_limited(relay, need)
        socks = []
        try:
            for _ in range(10):
                c = socket.create_connection(("127.0.0.1", relay.submit_port), timeout=10)
                socks.append(c)
                greeting = c.recv(512)
                self.assertTrue(greeting.startswith(b"220 "), greeting)
        finally:
            for c in socks:
                c.close()


if __name__ == "__main__":
    unittest.main()
