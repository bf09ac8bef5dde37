"""test_fd_limit.py - relayd and RLIMIT_NOFILE: at start it raises its soft
limit to the hard limit and logs it (event=fd_limit), so that every holder
of descriptors has room for its bound (daemon/DESCRIPTORS.md): a
configuration whose sum does not fit under the hard limit is refused with a
message saying what to raise, at start (exit 1, start_failed) and at a
reload (reload_failed, the old configuration stays).

The sum, for the test's configuration (two listeners, one resolver server,
no metrics, LDAP or Redis, the thread pool of 4 that one session thread
gets), is FIXED + 2 * submit.max_connections + 2 * router.max_connections.

The limits are set for relayd's process only (preexec_fn, a wrapper that
execs relayd, or this test process's soft limit around the start, which
relayd inherits).
"""

import asyncio
import base64
import os
import resource
import socket
import subprocess
import unittest

from client import client_context, make_message
from relay import SLOW, Relay, needs_test_hooks, relayd_bin


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


# What daemon/DESCRIPTORS.md's table adds up to beside the sessions and
# deliveries (2 each: a session's socket and its message's queue file, a
# delivery's socket and the file it sends), for the harness's configuration.
QUEUE = 8 + 256 + 256 + 512 + (16 - 1) + 32   # fixed, kept, records, acknowledged, spares
CONTROL = 1 + 16 + 1                          # the socket, its clients, one refused
DNS = 2 * 2 * 1                               # two channels, UDP + TCP, one server
POOL = 2 * 4                                  # per thread-pool work, 4 threads
HTTP = 2 * (2 * 8 + 2)                        # two HTTPS clients: connections (two sockets
                                              # each while connecting), wake-up pair
PROCESS = 3 + 2 + 5 + 2 + 1 + 3 + 1           # stdio, log, loop, signal lock, notify,
                                              # a reload's files, the loop's short read
LISTENERS = 2 * 2                             # two listeners: socket and spare each
REFUSING = 16                                 # refused on listen_tls, waiting for the handshake
ACCEPTING = 1                                 # the connection being accepted, refused or
                                              # taking an evicted session's slot
REPORTS = 64                                  # reports in flight (ROUTER_REPORTS_MAX)
QUITTING = 64                                 # deliveries' QUITs (DELIVER_QUITTING_MAX)
TLSRPT = 16                                   # TLS reports being queued (TLSRPT_MAILS_MAX)
FIXED = (QUEUE + CONTROL + DNS + HTTP + POOL + PROCESS + LISTENERS + REFUSING + ACCEPTING + REPORTS +
         QUITTING + TLSRPT)


def need(sessions, deliveries, fixed=FIXED):
    return 2 * sessions + 2 * deliveries + fixed


def reload_refused_then_fits(test, relay, sessions, needed):
    """A reload to submit.max_connections sessions (with whatever else the
    configuration changed) is refused for needing needed descriptors; the
    same with one session less is taken."""
    relay.update_config(submit={"max_connections": sessions})
    mark = relay.log_mark()
    relay.sighup()
    ev = relay.wait_for_log("reload_failed", since=mark)
    test.assertIn("need %d file descriptors" % needed, ev["error"])
    relay.update_config(submit={"max_connections": sessions - 1})
    mark = relay.log_mark()
    relay.sighup()
    relay.wait_for_log("reloaded", since=mark)
    test.assertEqual(relay.count_log("reload_failed", since=mark), 0)


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
        # the defaults, with the test's two listeners (listen, listen_tls)
        # and one DNS server: once a fixed guess of 256 stood for all but
        # the sessions, deliveries and the queue (1,870)
        self.assertEqual(len(relay.config["submit"]["listen"]) +
                         len(relay.config["submit"]["listen_tls"]), 2)
        self.assertEqual(len(relay.config["router"]["dns_servers"]), 1)
        self.assertEqual(ev["need"], str(need(1000, 100)))
        self.assertEqual(ev["need"], "3527")
        self.assertEqual(nofile_of(relay.pid), (hard, hard))

    def test_refuses_max_connections_over_hard_limit(self):
        relay = Relay.for_test(self, submit={"max_connections": 2000, "workers": 1})
        r = subprocess.run(
            [relayd_bin(), "-c", relay.config_path], capture_output=True, text=True,
            timeout=30, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                              (1024, 1024)))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("submit.max_connections 2000 and router.max_connections 100 need "
                      "%d file descriptors, but the hard RLIMIT_NOFILE is 1024"
                      % need(2000, 100), r.stderr)
        ev = relay.wait_for_log("start_failed")
        self.assertIn("lower submit.max_connections", ev["error"])
        self.assertEqual(relay.count_log("started"), 0)

    def test_reload_refuses_what_the_limit_cannot_hold(self):
        relay = Relay.for_test(self, submit={"workers": 1})
        # need(1000, 100) descriptors needed now, need(10000, 100) after the
        # change: relayd gets need(1020, 100) (hard), through a wrapper that
        # sets it and execs relayd.
        limit = need(1020, 100)
        start_limited(relay, limit)
        relay.update_config(submit={"max_connections": 10000})
        mark = relay.log_mark()
        relay.sighup()
        ev = relay.wait_for_log("reload_failed", since=mark)
        self.assertIn("need %d file descriptors, but the current RLIMIT_NOFILE is %d"
                      % (need(10000, 100), limit), ev["error"])
        relay.update_config(submit={"max_connections": 1000})
        mark = relay.log_mark()
        relay.sighup()
        relay.wait_for_log("reloaded", since=mark)
        # exactly the limit with the two listeners relayd has: a reload that
        # adds a third (ignored until a restart) needs no descriptors for it
        relay.update_config(submit={"max_connections": 1020, "listen": [
            "127.0.0.1:%d" % relay.submit_port, "127.0.0.1:1"]})
        mark = relay.log_mark()
        relay.sighup()
        relay.wait_for_log("reload_listen_ignored", since=mark)
        relay.wait_for_log("reloaded", since=mark)
        self.assertEqual(relay.count_log("reload_failed", since=mark), 0)

    def test_reload_counts_the_retired_resolver(self):
        # A reload from three DNS servers to one: the retired channel keeps
        # its three servers' sockets while its queries drain, so the reload
        # needs 2 x 1 + 2 x 3 for DNS, not 4 x 1.  Given exactly what start
        # needs (3 servers: 12), a reload to one server that adds three
        # sessions (6 descriptors) is refused, and one that adds two (4)
        # fits.  When only the new server count was counted twice, the
        # first one was accepted with 2 descriptors it did not have.
        relay = Relay.for_test(self, submit={"workers": 1})
        one = relay.config["router"]["dns_servers"]
        three = one + ["127.0.0.1:1", "127.0.0.1:2"]
        relay.update_config(router={"dns_servers": three})
        fixed3 = FIXED - DNS + 2 * 3 + 2 * 3
        limit = need(1000, 100, fixed3)
        start_limited(relay, limit)
        self.assertEqual(relay.wait_for_log("fd_limit")["need"], str(limit))
        relay.update_config(router={"dns_servers": one})
        reload_refused_then_fits(self, relay, 1003,
                                 need(1003, 100, FIXED - DNS + 2 * 1 + 2 * 3))

    @needs_test_hooks
    def test_every_resolv_conf_nameserver_is_counted(self):
        # Without router.dns_servers c-ares resolves with every nameserver
        # line of /etc/resolv.conf, not only the three the C library uses.
        # A resolv.conf of five (RELAYD_TEST_RESOLV_CONF, beside the
        # configuration: the sandbox lets relayd read there) needs 2 x 5 per
        # channel, for the running one and a reload's: 20 for DNS (when
        # three were assumed, 12).  Given exactly that, a reload to six
        # (2 x 6 for the new channel, 2 x 5 for the running one's) that
        # also drops one session fits, and one that keeps the sessions is
        # refused.
        relay = Relay.for_test(self, submit={"workers": 1})
        del relay.config["router"]["dns_servers"]
        relay.write_config()
        resolv = os.path.join(os.path.dirname(relay.config_path), "resolv.conf")

        def nameservers(n):
            with open(resolv, "w") as f:
                f.write("".join("nameserver 127.0.0.%d\n" % (20 + i) for i in range(n)))
            os.chmod(resolv, 0o644)
        nameservers(5)
        relay.env["RELAYD_TEST_RESOLV_CONF"] = resolv
        limit = need(1000, 100, FIXED - DNS + 2 * 5 + 2 * 5)
        start_limited(relay, limit)
        self.assertEqual(relay.wait_for_log("fd_limit")["need"], str(limit))
        nameservers(6)
        reload_refused_then_fits(self, relay, 1000,
                                 need(1000, 100, FIXED - DNS + 2 * 6 + 2 * 5))

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
        n = int(ev["need"])
        # each thread: two listeners' sockets and spares, its loop, its 4
        # reserved transactions' files, its 16 refused connections waiting
        # for their handshake, the one it is accepting; 16 evictions on their
        # way to another thread; the pool: 4 + 2 per extra thread
        self.assertEqual(n, need(10, 10, FIXED - LISTENERS - REFUSING - ACCEPTING - POOL +
                                 32 * (2 * 2 + 8 + 4 + 16 + 1) + 16 + 2 * (4 + 2 * 31)))
        relay.stop()
        start_limited(relay, n)
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

    def test_sessions_in_data_fit(self):
        # The worst case for the sessions: every one of them in DATA with
        # more than the queue's 64 KiB write buffer sent, so that each holds
        # its socket and its message's file.  Given exactly what relayd says
        # it needs, all of them are accepted (250), and delivered.  When a
        # session counted one descriptor and a fixed 256 stood for the rest,
        # 1,100 such sessions did not fit the 1,874 relayd asked for.
        n = 1100
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard < 2 * n + 512:
            self.skipTest("needs a hard RLIMIT_NOFILE of at least %d (is %s)"
                          % (2 * n + 512, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        relay = Relay.for_test(self, submit={
            "workers": 1, "max_connections": n, "max_connections_per_ip": n,
            "login_max_messages": 2 * n, "login_max_recipients": 2 * n},
            router={"max_connections": 4})
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        sink = relay.sink("127.0.0.2")
        relay.start()
        limit = int(relay.wait_for_log("fd_limit")["need"])
        relay.stop()
        start_limited(relay, limit)
        msg = make_message("alice@example.org", "bob@example.net", "fd",
                           "x" * 76 + "\r\n" + ("y" * 76 + "\r\n") * 1000).encode()
        self.assertGreater(len(msg), 64 * 1024)
        codes = asyncio.run(self.sessions_in_data(relay, n, msg))
        self.assertEqual(codes, [250] * n)
        sink.wait_for_messages(n, timeout=120 * SLOW)
        relay.wait_for_count("delivered", n, timeout=120)   # scaled by SLOW itself

    @staticmethod
    async def sessions_in_data(relay, n, msg):
        """n sessions, each left in DATA with all of msg but its final dot;
        then every one ends its message: the codes of the final replies."""
        auth = base64.b64encode(b"\0alice\0alicepw").decode()
        opening = asyncio.Semaphore(32)   # few unauthenticated at once

        async def reply(r):
            while True:
                line = await asyncio.wait_for(r.readline(), 60 * SLOW)
                if not line:
                    raise ConnectionError("relayd closed the session")
                if line[3:4] != b"-":
                    return int(line[:3]), line

        async def cmd(r, w, line, want):
            w.write(line.encode() + b"\r\n")
            code, text = await reply(r)
            if code != want:
                raise AssertionError("%s: %r" % (line, text))

        async def into_data():
            async with opening:
                r, w = await asyncio.open_connection(relay.host, relay.submit_port)
                assert (await reply(r))[0] == 220
                await cmd(r, w, "EHLO client.test", 250)
                await cmd(r, w, "STARTTLS", 220)
                await w.start_tls(client_context())
                await cmd(r, w, "EHLO client.test", 250)
                await cmd(r, w, "AUTH PLAIN " + auth, 235)
                await cmd(r, w, "MAIL FROM:<alice@example.org>", 250)
                await cmd(r, w, "RCPT TO:<bob@example.net>", 250)
                await cmd(r, w, "DATA", 354)
                w.write(msg)
                await w.drain()
                return r, w

        sessions = await asyncio.gather(*(into_data() for _ in range(n)))
        codes = []
        for r, w in sessions:
            w.write(b".\r\n")
        for r, w in sessions:
            codes.append((await reply(r))[0])
            w.close()
        return codes


if __name__ == "__main__":
    unittest.main()
