#!/usr/bin/env python3
"""submit_bench.py - the submission benchmark (not a test): starts a real
relayd (tests/harness Relay) with its mail routed to an SMTP sink on
127.0.0.2, drives N messages over C concurrent STARTTLS + AUTH PLAIN sessions
with the C load generator bench_submit, and prints messages/s, p50/p99 from
end of DATA to 250, CPU per message of relayd and of the load generator, and
relayd's peak RSS (VmHWM).

The sink is the C bench_sink (BUILD/tests/bench_sink: one libuv thread that
counts and discards every message, like Postfix's smtp-sink) so that the
destination costs the measured relay little CPU; --py-sink uses the Python
SinkMX of tests/harness instead (it stores every message and costs much more);
--no-sink routes the mail to a closed port, so it stays queued.  With a sink,
once the load generator is done the bench waits (at most 30 s without
progress) until the sink has every accepted message and adds:

    drained_s=S (delivered msgs/s=R)   S: from the load generator's end until
                                       the sink had them all; R: messages over
                                       the time from the load generator's start
    sink_cpu_ms_per_msg=X relayd_cpu_ms_per_msg_with_delivery=Y
                                       X: CPU of bench_sink (--py-sink: of this
                                       script's process, which runs SinkMX);
                                       Y: relayd's CPU up to then, delivery too
    sink messages=N connections=M      the sink's own counts at the end

    python3 tests/bench/submit_bench.py [--messages 20000] [--sessions 16] [--size 4096]
                                        [--build build] [--py-sink | --no-sink]
                                        [--dkim none|ed25519|rsa+ed25519]
                                        [--deliver-thread] [--submit-workers N] [--warmup N]
                                        [--attach 'CMD ... {pid} ...']
                                        [--baseline OTHER_BUILD [--runs N] [--no-syscalls]]

--warmup N first sends N messages through the same relayd and waits until the
sink has them; the figures are the measured load's only.  A new queue
directory has no spare files: its first messages each make an inode until
the pool covers every message in flight (on this project's VM, where the tests delete many files, ext4 scans
the recently deleted inodes for each: up to a third of relayd's CPU in a
10,000-message run), which a running relay, whose queue keeps its spares
across restarts, does not pay again.  Without it (the default) the run
measures a relayd on a new queue.

--attach runs CMD (split on blanks, {pid} replaced by relayd's pid) from just
before the load generator starts until the sink has drained, then sends it
SIGINT and waits: `--attach 'perf record -g -o perf.data -p {pid}'` profiles
relayd under load, `--attach 'strace -c -f -o strace.txt -p {pid}'` counts its
system calls (strace slows relayd several times: use it for counts, not rates).

Side by side: `--baseline OTHER_BUILD --runs N` runs relayd from OTHER_BUILD
and from --build alternately (baseline first), N times each, in one
invocation, with the load generator and the sink of --build for both, and
prints for each figure every run, its range and median, and new/baseline
(ratio of the medians, and the range of the ratios of the runs paired in
order).  Each run also counts relayd's system calls with `perf stat -e
raw_syscalls:sys_enter` (in-kernel counting, a few per cent of CPU at most,
the same for both builds; --no-syscalls to skip, e.g. without perf) from the
load generator's start until the sink has drained: syscalls_per_msg covers
submission and delivery.

    python3 tests/bench/submit_bench.py --baseline build-base --runs 3 --messages 10000
"""
import argparse
import os
import resource
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))

from relay import Relay  # noqa: E402

DRAIN_STALL_S = 30      # give up waiting for the sink after this long without progress


def vm_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy():
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def self_cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class CSink:
    """bench_sink on host:port; a thread follows its stdout ("ready",
    "count=N" while messages arrive, "messages=N connections=M" at the end)."""

    def __init__(self, binary, host, port):
        self.proc = subprocess.Popen([binary, host, str(port)], stdout=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True)
        self.count = 0
        self.final = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(10):
            self.kill()
            raise RuntimeError("bench_sink on %s:%d did not get ready (exit %s)"
                               % (host, port, self.proc.poll()))

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if line == "ready":
                self._ready.set()
            elif line.startswith("count="):
                self.count = int(line[6:])
            elif line.startswith("messages="):
                self.final = dict(kv.split("=", 1) for kv in line.split())
        self._ready.set()          # exited: let a waiting start-up see it

    def messages(self):
        return self.count

    def cpu_seconds(self):
        return cpu_seconds(self.proc.pid)

    def stop(self):
        """SIGTERM, then (messages, connections) as it printed them."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reader.join(5)
        f = self.final or {}
        return int(f.get("messages", -1)), int(f.get("connections", -1))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class PySink:
    """The harness's SinkMX, seen through the same calls as CSink."""

    def __init__(self, relay, host):
        self.sink = relay.sink(host)

    def messages(self):
        return len(self.sink.messages)

    def cpu_seconds(self):
        return self_cpu_seconds()

    def stop(self):
        return len(self.sink.messages), self.sink.connections

    def kill(self):
        pass


def wait_drained(sink, want):
    """Wait until the sink has want messages, or until DRAIN_STALL_S pass
    without one arriving; returns (when, how many it had)."""
    last, stall_until = -1, 0.0
    while True:
        n, now = sink.messages(), time.monotonic()
        if n >= want:
            return now, n
        if n != last:
            last, stall_until = n, now + DRAIN_STALL_S
        elif now > stall_until:
            return None, n
        time.sleep(0.01)


def attach(cmd, pid):
    """Start cmd against pid; return once it has had time to attach (perf
    and strace print nothing on attaching, so wait for relayd to be traced
    or for perf's output file)."""
    argv = [w.replace("{pid}", str(pid)) for w in cmd.split()]
    p = subprocess.Popen(argv)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and p.poll() is None:
        with open("/proc/%d/status" % pid) as f:
            if any(l.startswith("TracerPid:") and l.split()[1] != "0" for l in f):
                break
        if argv[0].endswith("perf") and any(os.path.exists(w) for w in argv[1:]
                                             if w.endswith(".data")):
            break
        time.sleep(0.05)
    return p


def count_syscalls(pid, path):
    """Start counting relayd's system calls (all threads, and threads it
    starts later) into path; stop() the returned process with SIGINT."""
    p = subprocess.Popen(["perf", "stat", "-x", ",", "-o", path, "-e",
                          "raw_syscalls:sys_enter", "-p", str(pid)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # perf opens its output file before it attaches the counters and prints
    # nothing on attaching: give it a moment once the file is there.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and p.poll() is None and not os.path.exists(path):
        time.sleep(0.02)
    time.sleep(0.3)
    return p


def read_syscalls(path):
    with open(path) as f:
        for line in f:
            v = line.split(",")
            if len(v) > 2 and v[2].startswith("raw_syscalls:sys_enter") and v[0].isdigit():
                return int(v[0])
    return None


def load(tools, relay, n, a):
    """bench_submit: n messages over a.sessions sessions; its CompletedProcess."""
    return subprocess.run([os.path.join(tools, "tests", "bench_submit"), relay.host,
                           str(relay.submit_port), "alice", "alicepw", "alice@example.org",
                           "bob@example.net", str(n), str(a.sessions), str(a.size)],
                          capture_output=True, text=True)


def accepted_of(r, n):
    """Messages the load generator got a 250 for (its first line), else n."""
    for word in (r.stdout.split("\n", 1)[0]).split():
        if word.startswith("messages="):
            return int(word[9:])
    return n


def warm_up(a, tools, relay, sink):
    """--warmup: a.warmup messages through relayd before the measured load,
    waited for until the sink has them (the queue's spare files then exist:
    a new queue directory makes them as its first messages arrive, an inode
    each, see queue/QUEUE.md "Spare files"); returns how many the sink got."""
    r = load(tools, relay, a.warmup, a)
    n = accepted_of(r, a.warmup)
    got = n
    if sink is not None:
        t, got = wait_drained(sink, n)
        if t is None:
            raise RuntimeError("warm-up: the sink had %d of %d" % (got, n))
    print("warmup messages=%d (not measured)" % n, flush=True)
    return got if sink is not None else 0


def run(a, build, figures, attach_cmd=None, syscalls_file=None):
    """One bench run against relayd of build (the load generator and the sink
    come from a.build).  Prints as it goes and fills figures (a dict); returns
    the exit status."""
    tools = a.build
    overrides = {"log_level": "info",
                 "submit": {"login_max_messages": 0, "login_max_recipients": 0,
                            "max_connections_per_ip": 1000}}
    if a.deliver_thread and build == a.build:
        overrides["deliver"] = {"thread": True}     # the new build only: a base may not know it
    if a.submit_workers is not None and build == a.build:
        overrides["submit"]["workers"] = a.submit_workers   # likewise
    relay = Relay(**overrides)
    if a.dkim != "none":
        from relay import share_with_user
        keys = []
        for alg in a.dkim.split("+"):
            path = os.path.join(relay.tmpdir, "dkim-%s.pem" % alg)
            args = ["-algorithm", "ed25519"] if alg == "ed25519" else \
                ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
            subprocess.run(["openssl", "genpkey"] + args + ["-out", path], check=True,
                           capture_output=True)
            share_with_user(path)
            keys.append({"domain": "example.org", "selector": "b" + alg[:3], "key": path})
        relay.update_config(dkim={"keys": keys})
    sink = None
    attached = counter = None
    try:
        if not a.no_sink:
            relay.update_config(router={"routes": [{"domain": "example.net",
                                                    "hosts": ["127.0.0.2:%d" % relay.smtp_port]}]})
            if a.py_sink:
                sink = PySink(relay, "127.0.0.2")
            else:
                sink = CSink(os.path.join(tools, "tests", "bench_sink"), "127.0.0.2",
                             relay.smtp_port)
        else:
            relay.update_config(router={"routes": [{"domain": "example.net",
                                                    "hosts": ["127.0.0.2:9"]}]})
        relay.start()
        warm = warm_up(a, tools, relay, sink) if a.warmup > 0 else 0
        attached = attach(attach_cmd, relay.pid) if attach_cmd else None
        counter = count_syscalls(relay.pid, syscalls_file) if syscalls_file else None
        cpu0, (busy0, total0) = cpu_seconds(relay.pid), machine_busy()
        gen0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        sink_cpu0 = sink.cpu_seconds() if sink else 0.0
        t0 = time.monotonic()
        r = load(tools, relay, a.messages, a)
        t1 = time.monotonic()
        cpu1, (busy1, total1) = cpu_seconds(relay.pid), machine_busy()
        gen1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr[-2000:])
        for word in r.stdout.split():
            k, _, v = word.partition("=")
            if k in ("msgs_per_s", "p50", "p99"):
                figures[k] = float(v)
        gen = (gen1.ru_utime - gen0.ru_utime) + (gen1.ru_stime - gen0.ru_stime)
        figures["relayd_cpu_ms_per_msg"] = (cpu1 - cpu0) * 1000.0 / a.messages
        figures["machine_busy_pct"] = 100.0 * (busy1 - busy0) / max(1, total1 - total0)
        print("relayd_cpu_ms_per_msg=%.3f loadgen_cpu_ms_per_msg=%.3f machine_busy=%.0f%%"
              % (figures["relayd_cpu_ms_per_msg"], gen * 1000.0 / a.messages,
                 figures["machine_busy_pct"]))
        figures["relayd_peak_rss_mib"] = vm_hwm_kib(relay.pid) / 1024.0
        print("relayd_peak_rss_mib=%.1f" % figures["relayd_peak_rss_mib"])
        if sink is None:
            return r.returncode

        accepted = accepted_of(r, a.messages)
        t2, got = wait_drained(sink, warm + accepted)
        got -= warm
        sink_cpu = sink.cpu_seconds() - sink_cpu0
        if t2 is None:
            print("drained_s=timeout (sink had %d of %d, none more in %ds)"
                  % (got, accepted, DRAIN_STALL_S))
        else:
            figures["delivered_msgs_per_s"] = got / max(1e-9, t2 - t0)
            print("drained_s=%.3f (delivered msgs/s=%.0f)" % (t2 - t1, figures["delivered_msgs_per_s"]))
        figures["relayd_cpu_ms_per_msg_with_delivery"] = \
            (cpu_seconds(relay.pid) - cpu0) * 1000.0 / a.messages
        print("sink_cpu_ms_per_msg=%.3f relayd_cpu_ms_per_msg_with_delivery=%.3f"
              % (sink_cpu * 1000.0 / max(1, got), figures["relayd_cpu_ms_per_msg_with_delivery"]))
        print("sink messages=%d connections=%d%s" % (sink.stop() + (
            " (%d of them the warm-up's)" % warm if warm else "",)))
        return r.returncode if t2 is not None else 1
    finally:
        if counter is not None:
            counter.send_signal(signal.SIGINT)
            counter.wait()
            n = read_syscalls(syscalls_file)
            if n is not None:
                figures["syscalls_per_msg"] = n / a.messages
                print("syscalls_per_msg=%.1f" % figures["syscalls_per_msg"])
        if attached is not None:
            attached.send_signal(signal.SIGINT)
            attached.wait()
        if sink is not None:
            sink.kill()
        relay.close()


# The figures compared side by side, in print order.
AB_FIGURES = ("msgs_per_s", "delivered_msgs_per_s", "relayd_cpu_ms_per_msg",
              "relayd_cpu_ms_per_msg_with_delivery", "p50", "p99", "syscalls_per_msg",
              "relayd_peak_rss_mib", "machine_busy_pct")


# Issue #16's targets: (figure, test, limit, what it says).  "ratio" compares
# with the baseline's median (side-by-side runs only).
TARGETS = (("msgs_per_s", "ratio", 1.8, "msgs/s at least 1.8x the baseline's"),
           ("relayd_cpu_ms_per_msg", "max", 0.15, "relayd CPU per message <= 0.15 ms"),
           ("p99", "max", 8.0, "p99 end of DATA -> 250 <= 8 ms"),
           ("relayd_peak_rss_mib", "below", 64.0, "peak RSS < 64 MiB"))


def print_targets(new, base=None):
    """One "met"/"not met" line per target of issue #16, for the figures in
    new (a run's, or the medians of several) against base (the baseline's
    medians) where the target is a ratio."""
    for k, test, limit, what in TARGETS:
        v = new.get(k)
        if v is None or (test == "ratio" and (base is None or not base.get(k))):
            continue
        if test == "ratio":
            v = v / base[k]
            ok, shown = v >= limit, "%.2fx" % v
        else:
            ok = v <= limit if test == "max" else v < limit
            shown = "%.3f" % v if v < 1 else "%.1f" % v
        print("target %-40s %-8s %s" % (what + ":", shown, "met" if ok else "not met"))


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2.0


def side_by_side(a):
    """Baseline and new build alternately, a.runs times each; a summary per figure."""
    import tempfile
    builds = (("base", os.path.abspath(a.baseline)), ("new", a.build))
    results = {"base": [], "new": []}
    status = 0
    with tempfile.TemporaryDirectory(prefix="submit-bench-") as tmp:
        for i in range(a.runs):
            for name, build in builds:
                os.environ["RELAYD_BIN"] = os.path.join(build, "relayd")
                os.environ["RELAYCTL_BIN"] = os.path.join(build, "relayctl")
                print("=== run %d/%d: %s (%s)" % (i + 1, a.runs, name, build), flush=True)
                figures = {}
                path = os.path.join(tmp, "syscalls-%s-%d.csv" % (name, i)) if a.syscalls else None
                status |= run(a, build, figures, a.attach, path)
                results[name].append(figures)
                sys.stdout.flush()
    print("=== side by side: %d runs each, %d messages, %d sessions, %d octets; load average %s"
          % (a.runs, a.messages, a.sessions, a.size,
             " ".join(open("/proc/loadavg").read().split()[:3])))
    for k in AB_FIGURES:
        base = [f[k] for f in results["base"] if k in f]
        new = [f[k] for f in results["new"] if k in f]
        if not base or not new:
            continue
        fmt = "%.0f" if max(base + new) >= 100 else "%.3f" if max(base + new) < 10 else "%.1f"
        row = lambda v: "%s (%s..%s, median %s)" % (" ".join(fmt % x for x in v), fmt % min(v),
                                                    fmt % max(v), fmt % median(v))
        pairs = [n / b for b, n in zip(base, new) if b > 0]
        ratio = "new/base=%.2f" % (median(new) / median(base)) if median(base) > 0 else "new/base=-"
        if pairs:
            ratio += " (runs %.2f..%.2f)" % (min(pairs), max(pairs))
        print("%-36s base: %s" % (k, row(base)))
        print("%-36s new:  %s  %s" % ("", row(new), ratio))
    meds = {}
    for name in ("base", "new"):
        meds[name] = {k: median([f[k] for f in results[name] if k in f]) for k, *_ in TARGETS
                      if any(k in f for f in results[name])}
    print("=== issue #16 targets (medians of the new build's runs)")
    print_targets(meds["new"], meds["base"])
    return status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--sessions", type=int, default=16)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--py-sink", action="store_true",
                       help="deliver to the Python SinkMX instead of bench_sink")
    which.add_argument("--no-sink", action="store_true", help="hold the queue instead of delivering")
    ap.add_argument("--dkim", choices=("none", "ed25519", "rsa+ed25519"), default="none",
                    help="sign alice's mail (example.org) with these keys")
    ap.add_argument("--deliver-thread", action="store_true",
                    help="deliver.thread = true for relayd of --build (not the baseline)")
    ap.add_argument("--submit-workers", type=int, metavar="N",
                    help="submit.workers = N for relayd of --build (not the baseline); "
                         "default: its own default (one per CPU)")
    ap.add_argument("--warmup", type=int, default=0, metavar="N",
                    help="first send N messages through the same relayd, not measured "
                         "(a new queue directory makes its spare files meanwhile)")
    ap.add_argument("--attach", metavar="CMD",
                    help="run CMD ({pid} = relayd's pid) during the load; SIGINT at the end")
    ap.add_argument("--baseline", metavar="BUILD",
                    help="also run relayd of this build directory, alternating with --build")
    ap.add_argument("--runs", type=int, default=3, help="with --baseline: runs of each build")
    ap.add_argument("--no-syscalls", dest="syscalls", action="store_false",
                    help="with --baseline: do not count system calls (perf stat)")
    a = ap.parse_args()
    a.build = os.path.abspath(a.build)

    if a.baseline:
        return side_by_side(a)
    os.environ.setdefault("RELAYD_BIN", os.path.join(a.build, "relayd"))
    os.environ.setdefault("RELAYCTL_BIN", os.path.join(a.build, "relayctl"))
    figures = {}
    status = run(a, a.build, figures, a.attach)
    print("=== issue #16 targets (this run; the throughput target needs --baseline)")
    print_targets(figures)
    return status


if __name__ == "__main__":
    sys.exit(main())
