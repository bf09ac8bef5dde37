#!/usr/bin/env python3
"""queue_bench.py - relayd's start-up with a huge queue (a benchmark, not a
test; issue #16 step 4: "1,000,000 queued messages: relayd restarts and
answers its first EHLO within 10 s, RSS under 512 MiB, `relayctl stats`
under 100 ms").

It fills a queue_dir with N messages through the queue API (bench_fill: the
C generator bench_control, spread over D domains whose MX is a dead loopback
address), then twice — the first start on the filled queue, and a restart
(SIGTERM, start again on the same queue_dir, which is the figure the issue
asks for) — it:

  * execs relayd and connects a real SMTP client to the submission port as
    soon as it listens: time from exec to the 220 greeting and to the answer
    of the first EHLO;
  * reads relayd's VmRSS/VmHWM right after that, and `relayctl stats` R times
    (wall time, relayctl's own start included: min / median / max);
  * waits until the queue has settled (every recipient deferred: its
    destination down, a probe an hour away), then RSS and `stats` again;

and prints each figure against its target (met / not met), and the times of
relayd's own log events (queue scan, start) after exec.

    python3 tests/bench/queue_bench.py [--messages 1000000] [--domains 10]
        [--rcpts 1] [--runs 5] [--build build] [--queue DIR] [--keep] [--hold S]

--queue DIR uses DIR as queue_dir (filled first unless it already has a
msg/ directory) and keeps it; otherwise the queue is made under a fresh
directory in $TMPDIR (about 1.5 GB and 1M inodes for 1M messages: mind
`df -h`, `df -i`) and deleted at the end unless --keep.
"""
import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_fill import REPO, ctl, dead_relay, fill, give_to_user, settle, use_build  # noqa: E402
from relay import parse_log_line  # noqa: E402

EHLO_TARGET_S = 10.0
RSS_TARGET_MIB = 512.0
STATS_TARGET_MS = 100.0


def verdict(ok):
    return "met" if ok else "NOT MET"


def first_ehlo(relay, t_exec, timeout):
    """Connect as soon as the port takes connections; (s to 220, s to the
    EHLO's last line), both from t_exec."""
    host, port = relay.host, relay.submit_port
    deadline = t_exec + timeout
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.connect((host, port))
            break
        except OSError:
            s.close()
            if relay.proc.poll() is not None:
                raise SystemExit("relayd exited with %s\n%s" % (relay.proc.returncode,
                                                                relay.diagnostics()))
            if time.perf_counter() > deadline:
                raise SystemExit("relayd did not listen within %ds" % timeout)
            time.sleep(0.002)
    s.settimeout(max(1.0, deadline - time.perf_counter()))
    f = s.makefile("rb")

    def reply():
        while True:
            line = f.readline()
            if not line:
                raise SystemExit("relayd closed the connection")
            if line[3:4] != b"-":
                return line

    greet = reply()
    t_greet = time.perf_counter() - t_exec
    if not greet.startswith(b"220"):
        raise SystemExit("greeting: %r" % greet)
    s.sendall(b"EHLO bench.client\r\n")
    last = reply()
    t_ehlo = time.perf_counter() - t_exec
    if not last.startswith(b"250"):
        raise SystemExit("EHLO: %r" % last)
    s.sendall(b"QUIT\r\n")
    f.close()
    s.close()
    return t_greet, t_ehlo


def rss(pid):
    """(VmRSS, VmHWM) of pid in MiB."""
    v = {}
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith(("VmRSS:", "VmHWM:")):
                k, n = ln.split()[:2]
                v[k[:-1]] = int(n) / 1024.0
    return v["VmRSS"], v["VmHWM"]


def time_stats(relay, runs):
    """Wall ms of each run; a run with no answer within 60 s counts as 60 s
    (and the rest are skipped)."""
    times = []
    for _ in range(runs):
        ms, out = ctl(relay, "stats", timeout=60)
        if ms is None:
            print("  relayctl stats: %s" % out)
            times.append(60000.0)
            break
        times.append(ms)
    return times


def log_events(relay, since, t_exec_wall):
    """Seconds after exec of relayd's start-up log events (from since)."""
    want = ("queue_journal_replayed", "queue_scan", "queue_loaded", "queue_scan_done", "started",
            "queue_scanned")
    out = []
    with open(relay.log_path, "rb") as f:
        f.seek(since)
        for ln in f:
            d = parse_log_line(ln)
            if d.get("event") in want and d.get("ts"):
                try:
                    ts = datetime.datetime.fromisoformat(d["ts"].replace("Z", "+00:00"))
                except ValueError:
                    continue
                extra = " ".join("%s=%s" % (k, d[k]) for k in ("messages", "count", "corrupt", "ms")
                                 if k in d)
                out.append("%s at %.2fs %s" % (d["event"], ts.timestamp() - t_exec_wall, extra))
    return out


def one_start(relay, label, a, n_rcpts):
    print("\n== %s ==" % label)
    since = os.path.getsize(relay.log_path) if os.path.exists(relay.log_path) else 0
    t_exec_wall = time.time()
    t_exec = time.perf_counter()
    relay.start(wait=False)
    t_greet, t_ehlo = first_ehlo(relay, t_exec, 600)
    pid = relay.pid
    rss0, hwm0 = rss(pid)
    relay.wait_ready(timeout=600)
    st0 = time_stats(relay, a.runs)
    t_settle0 = time.perf_counter()
    q = settle(relay, n_rcpts, 3600)
    t_settled = time.perf_counter() - t_settle0
    rss1, hwm1 = rss(pid)
    st1 = time_stats(relay, a.runs)
    if a.hold > 0:
        # the queue's writer may still be appending the deferral records, and
        # the scheduler trims the heap once things are quiet: RSS over time
        t_end = time.perf_counter() + a.hold
        while time.perf_counter() < t_end:
            time.sleep(5)
            r, h = rss(pid)
            print("  held %5.0fs: VmRSS / VmHWM %.1f / %.1f MiB"
                  % (a.hold - (t_end - time.perf_counter()), r, h))
    for e in log_events(relay, since, t_exec_wall):
        print("  log: %s" % e)
    print("  queue settled %.1fs after the first stats: %d messages, %s"
          % (t_settled, q["messages"], json.dumps(q["recipients"], sort_keys=True)))
    rows = [
        ("exec -> 220 greeting", "%.2f s" % t_greet, ""),
        ("exec -> first EHLO answered", "%.2f s" % t_ehlo,
         "< %.0f s: %s" % (EHLO_TARGET_S, verdict(t_ehlo < EHLO_TARGET_S))),
        ("RSS after start (VmRSS / VmHWM)", "%.1f / %.1f MiB" % (rss0, hwm0),
         "< %.0f MiB: %s" % (RSS_TARGET_MIB, verdict(hwm0 < RSS_TARGET_MIB))),
        ("RSS settled (VmRSS / VmHWM)", "%.1f / %.1f MiB" % (rss1, hwm1),
         "< %.0f MiB: %s" % (RSS_TARGET_MIB, verdict(hwm1 < RSS_TARGET_MIB))),
    ]
    for what, t in (("stats after start", st0), ("stats settled", st1)):
        rows.append(("%s, %d runs min/med/max" % (what, len(t)),
                     "%.1f / %.1f / %.1f ms" % (min(t), statistics.median(t), max(t)),
                     "< %.0f ms: %s" % (STATS_TARGET_MS, verdict(max(t) < STATS_TARGET_MS))))
    for r in rows:
        print("  %-40s %-26s %s" % r)
    return t_ehlo < EHLO_TARGET_S and hwm1 < RSS_TARGET_MIB and max(st0 + st1) < STATS_TARGET_MS


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000000)
    ap.add_argument("--domains", type=int, default=10)
    ap.add_argument("--rcpts", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--queue", help="queue_dir to use (filled unless it has msg/); kept")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--hold", type=float, default=0,
                    help="keep relayd running this many seconds after the settled figures, "
                    "printing its VmRSS / VmHWM every 5 s")
    ap.add_argument("--once", action="store_true",
                    help="start only once (on a --queue relayd has run on: that is the restart)")
    a = ap.parse_args()

    sys.stdout.reconfigure(line_buffering=True)     # progress, also into a file
    use_build(a.build)
    if a.keep:
        os.environ["RELAYD_KEEP_TMP"] = "1"
    relay = dead_relay(a.domains)
    ok = False
    try:
        if a.queue:
            relay.queue_dir = relay.config["queue_dir"] = os.path.abspath(a.queue)
            relay.write_config()
            os.makedirs(relay.queue_dir, mode=0o700, exist_ok=True)
        if not os.path.isdir(os.path.join(relay.queue_dir, "msg")):
            fill(relay, a.build, a.messages, a.domains, a.rcpts)
        else:
            give_to_user(relay.queue_dir)
            print("using the queue in %s as it is" % relay.queue_dir)
        print("machine: %s, %d CPUs; load average %s; %s UTC" % (
            os.uname().nodename, os.cpu_count(), " ".join("%.2f" % x for x in os.getloadavg()),
            datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M")))
        print(subprocess.run(["df", "-h", relay.queue_dir], capture_output=True,
                             text=True).stdout.strip())
        n_rcpts = a.messages * a.rcpts
        if a.once:
            ok = one_start(relay, "start on the queue as it is", a, n_rcpts)
            return 0 if ok else 1
        ok1 = one_start(relay, "first start on the filled queue", a, n_rcpts)
        t0 = time.perf_counter()
        relay.stop(timeout=600)
        print("\nSIGTERM -> exit: %.2f s" % (time.perf_counter() - t0))
        ok = one_start(relay, "restart (SIGTERM, start again on the same queue_dir): the target",
                       a, n_rcpts)
        print("\nload average at the end %s" % " ".join("%.2f" % x for x in os.getloadavg()))
        print("targets %s on the restart (first start: %s)" % (
            "all met" if ok else "NOT all met", "all met" if ok1 else "NOT all met"))
    finally:
        if relay.running:
            relay.stop(timeout=600)
        relay.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
