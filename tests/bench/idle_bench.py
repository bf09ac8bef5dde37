#!/usr/bin/env python3
"""idle_bench.py - the idle-sessions benchmark (not a test): issue #16's
"10,000 concurrent idle TLS sessions: relayd's RSS under 256 MiB, and a new
session still answered within 50 ms".

It starts a real relayd (tests/harness Relay) configured to hold them
(submit.max_connections = sessions + 100, max_connections_per_ip 100,
command_timeout --idle-timeout), with its own soft RLIMIT_NOFILE lowered to
--nofile (default 1024, what systemd gives a service) so that relayd's own
raise towards the hard limit at start-up is what lets it hold them.  Then
--workers client processes (Python asyncio + ssl) open --sessions sessions
from 127.0.93.1 .. 127.0.93.254 (about 40 per address), every second one
STARTTLS on the submission port (587's role), the others implicit TLS
(465's role), each doing EHLO and AUTH PLAIN and then staying idle, as a mail
client that keeps its connection open does.  (They authenticate because that
is what a real client holds open, and because unauthenticated sessions may
only hold submit.unauthenticated_share of the slots and are the first to be
closed when a newcomer needs room; --no-auth stops after EHLO and sets the
share to 100.)

While they are all open it reads relayd's VmRSS and VmHWM from /proc, and
times --probes new sessions from 127.0.94.1 (a fresh blocking socket each):
connect to the 220 greeting, and a full connect + 220 + EHLO + STARTTLS +
handshake + EHLO; min/median/max of each, each against its target.  The
same probes run once before any idle session is open: on a shared machine
that reference says how much of a slow answer is the load, not relayd.  At the
end every worker sends NOOP on each of its sessions and counts the 250s
(all sessions were still open), and the bench checks relayd's log for
session_timeout and session_evicted (none).

    python3 tests/bench/idle_bench.py [--sessions 10000] [--workers 4] [--probes 20]
                                      [--build build] [--no-auth] [--idle-timeout 30m]
                                      [--nofile 1024] [--hold S]

The client processes need a soft RLIMIT_NOFILE above sessions/workers; they
raise theirs to the hard limit.  Needs root for nothing but what the harness
needs (relayd switches to `nobody`).
"""
import argparse
import asyncio
import base64
import os
import resource
import socket
import ssl
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))

CLIENT_NET = "127.0.93."        # idle sessions: 127.0.93.1 .. .254 (no test uses it)
PROBE_IP = "127.0.94.1"         # the timed new sessions
RSS_TARGET_MIB = 256
ANSWER_TARGET_MS = 50
OPEN_CONCURRENCY = 64           # handshakes in flight per worker


def tls_client_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# ---------------------------------------------------------------------------
# A worker: holds its share of the idle sessions (python3 idle_bench.py --worker)
# ---------------------------------------------------------------------------

async def read_reply(reader):
    """One SMTP reply (all its lines); returns (code, last line)."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3]), line


async def expect(reader, code):
    got, line = await read_reply(reader)
    if got != code:
        raise ConnectionError("want %d, got %r" % (code, line))


async def open_session(i, a, ctx, auth):
    ip = CLIENT_NET + str(1 + i % 254)
    starttls = i % 2 == 0
    port = a.port if starttls else a.tls_port
    reader, writer = await asyncio.open_connection(
        a.host, port, local_addr=(ip, 0), ssl=None if starttls else ctx,
        server_hostname=None if starttls else "relay.test")
    try:
        await expect(reader, 220)
        writer.write(b"EHLO idle%d.example.org\r\n" % i)
        await expect(reader, 250)
        if starttls:
            writer.write(b"STARTTLS\r\n")
            await expect(reader, 220)
            await writer.start_tls(ctx, server_hostname="relay.test")
            writer.write(b"EHLO idle%d.example.org\r\n" % i)
            await expect(reader, 250)
        if auth is not None:
            writer.write(b"AUTH PLAIN " + auth + b"\r\n")
            await expect(reader, 235)
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def worker_main(a):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = tls_client_ctx()
    auth = None if a.no_auth else base64.b64encode(b"\0alice\0alicepw")
    sem = asyncio.Semaphore(OPEN_CONCURRENCY)
    sessions, errors = [], []

    async def one(i):
        async with sem:
            try:
                sessions.append(await open_session(i, a, ctx, auth))
            except (OSError, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as e:
                errors.append("%d: %s" % (i, e))

    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(a.first, a.first + a.count)))
    print("opened %d failed %d in %.1fs%s" % (len(sessions), len(errors), time.monotonic() - t0,
                                                (" first error: " + errors[0]) if errors else ""),
          flush=True)
    loop = asyncio.get_running_loop()
    while True:
        cmd = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if cmd == "noop":
            async def noop(rw):
                rw[1].write(b"NOOP\r\n")
                code, _ = await read_reply(rw[0])
                return code == 250
            res = await asyncio.gather(*(noop(rw) for rw in sessions), return_exceptions=True)
            print("noop ok %d of %d" % (sum(1 for r in res if r is True), len(sessions)), flush=True)
        else:                   # "quit" or EOF
            for _, w in sessions:
                w.transport.abort()
            return


# ---------------------------------------------------------------------------
# The timed probes (blocking sockets in the bench's own process)
# ---------------------------------------------------------------------------

def recv_reply(f):
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("closed")
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3])


def want(f, code, what):
    if recv_reply(f) != code:
        raise ConnectionError(what)


def probe(host, port, steps):
    """Seconds from connect() (from PROBE_IP) to the end of steps(sock)."""
    t0 = time.perf_counter()
    s = socket.create_connection((host, port), source_address=(PROBE_IP, 0))
    try:
        steps(s)
        return time.perf_counter() - t0
    finally:
        s.close()


def probe_greeting(host, port):
    """connect() to the whole 220 line."""
    return probe(host, port, lambda s: want(s.makefile("rb"), 220, "no 220"))


def probe_starttls(host, port, ctx):
    """connect() to the 250 of the EHLO after STARTTLS."""
    def steps(s):
        f = s.makefile("rb")
        want(f, 220, "no 220")
        s.sendall(b"EHLO probe.example.org\r\n")
        want(f, 250, "EHLO refused")
        s.sendall(b"STARTTLS\r\n")
        want(f, 220, "STARTTLS refused")
        t = ctx.wrap_socket(s, server_hostname="relay.test")
        t.sendall(b"EHLO probe.example.org\r\n")
        want(t.makefile("rb"), 250, "EHLO after STARTTLS refused")
    return probe(host, port, steps)


def probe_implicit(host, port, ctx):
    """connect() to the 220 over implicit TLS (handshake included)."""
    return probe(host, port, lambda s: want(
        ctx.wrap_socket(s, server_hostname="relay.test").makefile("rb"), 220, "no 220"))


# ---------------------------------------------------------------------------
# The bench
# ---------------------------------------------------------------------------

def proc_status_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def nofile_limit(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                return line.split()[3:5]
    return ["?", "?"]


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def loadavg():
    return " ".join(open("/proc/loadavg").read().split()[:3])


def verdict(ok):
    return "met" if ok else "NOT MET"


def timed(label, fn, n, target_ms):
    v = []
    for _ in range(n):
        v.append(fn() * 1000.0)
        time.sleep(0.05)
    mx = max(v)
    print("%-46s min %.2f  median %.2f  max %.2f ms  (target < %d ms: %s)"
          % (label, min(v), statistics.median(v), mx, target_ms, verdict(mx < target_ms)))
    return mx < target_ms


def bench(a):
    from relay import Relay

    os.environ.setdefault("RELAYD_BIN", os.path.join(a.build, "relayd"))
    os.environ.setdefault("RELAYCTL_BIN", os.path.join(a.build, "relayctl"))
    sub = {"max_connections": a.sessions + 100, "max_connections_per_ip": 100,
           "command_timeout": a.idle_timeout, "login_max_messages": 0,
           "login_max_recipients": 0}
    if a.no_auth:
        sub["unauthenticated_share"] = 100
    relay = Relay(log_level="info", submit=sub)
    workers = []
    status = 0
    # relayd inherits this soft limit (a service manager's default) and must
    # raise it itself; the workers raise theirs.  Its hard limit must hold
    # two descriptors per session (daemon/DESCRIPTORS.md): systemd gives a
    # service 524288, a shell often less; as root the bench gives that room.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = 2 * (a.sessions + 100) + 8192
    if os.geteuid() == 0 and hard != resource.RLIM_INFINITY and hard < room:
        hard = room
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(a.nofile, hard), hard))
    except (ValueError, OSError) as e:
        # a container without CAP_SYS_RESOURCE cannot raise its hard limit
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        print("idle_bench: cannot raise RLIMIT_NOFILE's hard limit to %d (%s); it stays %d, and "
              "relayd needs two descriptors per session slot (daemon/DESCRIPTORS.md): "
              "fewer --sessions, or a larger hard limit (ulimit -Hn, LimitNOFILE=)"
              % (room, e, hard), file=sys.stderr)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(a.nofile, hard), hard))
    try:
        relay.start(timeout=60)     # a loaded machine (or --attach-like wrappers) starts slowly
        pid = relay.pid
        lim = nofile_limit(pid)
        print("relayd pid %d: RLIMIT_NOFILE soft %s hard %s (started with soft %d); "
              "max_connections %d; command_timeout %s; %s"
              % (pid, lim[0], lim[1], a.nofile, a.sessions + 100, a.idle_timeout,
                 "EHLO only (--no-auth)" if a.no_auth else "EHLO + AUTH PLAIN"), flush=True)
        for ev in relay.log_lines():
            if ev.get("event") == "fd_limit":
                print("relayd log: event=fd_limit " + " ".join(
                    "%s=%s" % (k, ev.get(k)) for k in ("soft", "hard", "was", "need")))
        ctx = tls_client_ctx()
        print("reference, no idle session open yet (the machine's load, not relayd's "
              "sessions; load average %s):" % loadavg())
        timed("  new session, connect -> 220 (587)",
              lambda: probe_greeting(relay.host, relay.submit_port), a.probes, ANSWER_TARGET_MS)
        timed("  new session, connect -> STARTTLS -> EHLO",
              lambda: probe_starttls(relay.host, relay.submit_port, ctx), a.probes,
              ANSWER_TARGET_MS)
        time.sleep(0.5)
        rss0 = proc_status_kib(pid, "VmRSS")
        print("relayd before: VmRSS %.1f MiB, %d fds" % (rss0 / 1024.0, open_fds(pid)))

        t0 = time.monotonic()
        per = (a.sessions + a.workers - 1) // a.workers
        for w in range(a.workers):
            first, count = w * per, min(per, a.sessions - w * per)
            if count <= 0:
                break
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--host", relay.host,
                   "--port", str(relay.submit_port), "--tls-port", str(relay.tls_port),
                   "--first", str(first), "--count", str(count)]
            if a.no_auth:
                cmd.append("--no-auth")
            workers.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            text=True))
        opened = 0
        for p in workers:
            line = p.stdout.readline().strip()
            print("worker: " + line, flush=True)
            if line.startswith("opened "):
                opened += int(line.split()[1])
        t_open = time.monotonic() - t0
        print("opened %d of %d sessions in %.1f s (%.0f/s); load average %s"
              % (opened, a.sessions, t_open, opened / max(t_open, 1e-9), loadavg()), flush=True)
        if opened < a.sessions:
            status = 1

        time.sleep(1.0)         # let the last handshakes' garbage settle
        rss = proc_status_kib(pid, "VmRSS")
        hwm = proc_status_kib(pid, "VmHWM")
        fds = open_fds(pid)
        print("relayd with %d idle sessions open (%d fds):" % (opened, fds))
        print("  VmRSS %.1f MiB  (target < %d MiB: %s)"
              % (rss / 1024.0, RSS_TARGET_MIB, verdict(rss < RSS_TARGET_MIB * 1024)))
        print("  VmHWM %.1f MiB  (peak, opening included; target < %d MiB: %s)"
              % (hwm / 1024.0, RSS_TARGET_MIB, verdict(hwm < RSS_TARGET_MIB * 1024)))
        print("  RSS per idle session %.1f KiB ((VmRSS - %.1f MiB before) / %d)"
              % ((rss - rss0) / max(opened, 1), rss0 / 1024.0, opened))
        if rss >= RSS_TARGET_MIB * 1024 or hwm >= RSS_TARGET_MIB * 1024:
            status = 1

        ok = timed("new session, connect -> 220 (587)",
                   lambda: probe_greeting(relay.host, relay.submit_port), a.probes,
                   ANSWER_TARGET_MS)
        ok &= timed("new session, connect -> STARTTLS -> EHLO 250",
                    lambda: probe_starttls(relay.host, relay.submit_port, ctx), a.probes,
                    ANSWER_TARGET_MS)
        timed("new session, implicit TLS -> 220 (465)",
              lambda: probe_implicit(relay.host, relay.tls_port, ctx), a.probes,
              ANSWER_TARGET_MS)
        if not ok:
            status = 1
        print("load average %s" % loadavg(), flush=True)
        if a.hold:
            print("holding the sessions for %d s (relayd pid %d)" % (a.hold, pid), flush=True)
            time.sleep(a.hold)

        held = 0
        for p in workers:
            p.stdin.write("noop\n")
            p.stdin.flush()
        for p in workers:
            line = p.stdout.readline().strip()
            held += int(line.split()[2]) if line.startswith("noop ok") else 0
        print("still open at the end (NOOP answered 250): %d of %d, %.0f s after the first "
              "opened" % (held, opened, time.monotonic() - t0))
        timeouts = relay.count_log("session_timeout")
        evicted = relay.count_log("session_evicted")
        print("relayd logged session_timeout %d, session_evicted %d" % (timeouts, evicted))
        if held < opened or timeouts or evicted:
            status = 1
        return status
    finally:
        for p in workers:
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in workers:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        relay.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--probes", type=int, default=20)
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--no-auth", action="store_true")
    ap.add_argument("--idle-timeout", default="30m",
                    help="submit.command_timeout for the run (default 30m: the bench must "
                         "finish before the idle sessions' deadline)")
    ap.add_argument("--nofile", type=int, default=1024,
                    help="soft RLIMIT_NOFILE relayd is started with")
    ap.add_argument("--hold", type=int, default=0, metavar="S",
                    help="keep the sessions open S more seconds after the probes (to look "
                         "at relayd with other tools)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--host", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--tls-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        asyncio.run(worker_main(a))
        return 0
    a.build = os.path.abspath(a.build)
    print("idle_bench: %s; %d CPUs; %s UTC; load average %s"
          % (" ".join(sys.argv), os.cpu_count(), time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
             loadavg()), flush=True)
    return bench(a)


if __name__ == "__main__":
    sys.exit(main())
