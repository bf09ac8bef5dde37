#!/usr/bin/env python3
"""backlog_bench.py - a backlog released on recovery (a benchmark, not a test;
issue #16 step 4): "a 100,000-message backlog for one destination released
on recovery: delivered at the sink's pace with relayd's memory flat, other
destinations' mail not delayed by it".

Two relayds, one after the other, each on a queue filled with N messages for
one destination (d0.bench.test, MX 127.0.161.1) through the queue's own API
(BUILD/tests/bench_control -D 1, the generator of bench_control.py: fast and
the same every time; submitting 100,000 messages would take minutes and only
measure submission again):

1. The sink's pace: the C sink (BUILD/tests/bench_sink) listens on
   127.0.161.1 from the start; a fresh relayd delivers the queue to it (no
   outage: the destination is new, one job finds out, then the ramp).  Its
   delivery rate is the pace the release is held against.
2. The release: nothing listens on 127.0.161.1 (connection refused), so the
   fresh relayd finds the destination down and every message waits for it
   (`relayctl stats`: nothing pending or active).  A second sink (the
   harness's SinkMX on 127.0.161.2, which stamps each arrival) takes mail for
   other destinations (o1..o3.bench.test): a real smtplib client submits a
   steady trickle to them (STARTTLS + AUTH, one message at a time, --rate a
   second) for --before seconds.  Then the C sink starts on 127.0.161.1 and
   the backlog is released the way router/SCHEDULING.md says an outage ends
   — a job reaches a host: `relayctl queue flush --domain d0.bench.test`
   (the probe that ignores host backoff; --trigger probe: host_backoff is
   --probe-backoff and the scheduler's own probe finds the sink up).  The
   trickle goes on until the C sink has all N.

Printed: the release's delivery rate over time (per second, from the sink's
running count) against the sink's pace; when its delivery records and
removals were all written by the queue's writer (`relayctl queue show` waits
for them); relayd's RSS sampled every 0.5 s
(before and through the release: min / median / max and the series); the
trickle's delay (its 250 -> its arrival at the second sink) p50/p99 before
and during the release; each against its target, "met" / "not met":

  release rate        >= 0.8 x the sink's pace (mean over the whole drain,
                      first arrival to last); the ramp costs a few round trips.
                      The pace run is relayd delivering too: since the
                      release goes no faster than the queue's writer writes
                      its delivery records (router/SCHEDULING.md, "up"), the
                      "on disk" rate is the pace both are held to
  RSS flat            max over the release - RSS at its start (the last
                      sample before it) <= --rss-bound MiB (16; a trim that
                      gives memory back during it is no growth):
                      about what 100 delivery connections' buffers may take;
                      anything that grew per released message (100,000 of
                      them) would be far above it
  other mail's delay  p50 during <= 2 x p50 before + 20 ms, and p99 during
                      <= 1 s: mail queued behind the backlog would wait for a
                      good part of the drain (tens of seconds); a busier loop
                      adds milliseconds

    python3 tests/bench/backlog_bench.py [--messages 100000] [--size 1024]
        [--rate 20] [--before 10] [--trigger flush|probe] [--no-pace]
        [--attach 'CMD ... {pid} ...'] [--destinations K] [--dns-ttl S] [--dns-rcvbuf BYTES] [--build build]

--destinations K spreads the backlog over K destinations (d0..d<K-1>.bench.test,
bench_control -D K, every one's MX the C sink's address; the release is
`relayctl queue flush --all`).  Both runs then also print the most
recipients in attempts at once (`relayctl stats`, sampled with the RSS): the
scheduler's cap on jobs in flight in all (router/SCHEDULING.md) bounds it,
where before every destination's window admitted its jobs.

--attach runs CMD against relayd (as submit_bench.py does) from the trigger
until the backlog has arrived, then sends it SIGINT.
"""
import argparse
import json
import os
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))
sys.path.insert(0, HERE)

from relay import Relay, relayctl_bin  # noqa: E402
from smtpsink import SinkMX  # noqa: E402
from client import connect, make_message  # noqa: E402
from submit_bench import CSink, attach  # noqa: E402

BACKLOG_HOST = "127.0.161.1"     # the backlog's exchanger (no test uses 127.0.161.x)
OTHER_HOST = "127.0.161.2"       # the other destinations' exchanger
BACKLOG_DOMAIN = "d0.bench.test"  # bench_control -D 1 sends everything there
OTHER_DOMAINS = ("o1.bench.test", "o2.bench.test", "o3.bench.test")
RSS_PERIOD = 0.5
DRAIN_STALL_S = 60


def now():
    return time.monotonic()


def vm_rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def loadavg():
    return " ".join(open("/proc/loadavg").read().split()[:3])


def pct(v, p):
    """The p-th percentile (nearest rank) of v."""
    v = sorted(v)
    if not v:
        return float("nan")
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def udp_rcvbuf_errors():
    """The host's count of UDP datagrams dropped for a full receive buffer
    (/proc/net/snmp, Udp RcvbufErrors; host-wide), or None."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return None


def verdict(ok):
    return "met" if ok else "NOT MET"


class StampSink(SinkMX):
    """SinkMX that notes when each message arrived (end of data, accepted)."""

    def _record(self, msg, accepted):
        msg.arrived = now()
        super()._record(msg, accepted)


class CountLog:
    """bench_sink's running count as (time, count) pairs: CSink's reader
    thread only keeps the last count, so poll it as often as it prints."""

    def __init__(self, sink):
        self.sink = sink
        self.series = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        last = -1
        while not self._stop.is_set():
            n = self.sink.messages()
            if n != last:
                self.series.append((now(), n))
                last = n
            time.sleep(0.01)

    def stop(self):
        self._stop.set()
        self._t.join()
        n = self.sink.messages()
        if not self.series or self.series[-1][1] != n:
            self.series.append((now(), n))


class RssSampler:
    def __init__(self, pid):
        self.pid = pid
        self.samples = []       # (time, KiB)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            v = vm_rss_kib(self.pid)
            if v is not None:
                self.samples.append((now(), v))
            self._stop.wait(RSS_PERIOD)

    def stop(self):
        self._stop.set()
        self._t.join()

    def between(self, t0, t1):
        return [kib for t, kib in self.samples if t0 <= t <= t1]


class ActiveSampler:
    """The most recipients in attempts at once (`relayctl stats --json`)."""

    def __init__(self, relay):
        self.relay = relay
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                q = json.loads(ctl(self.relay, "stats", "--json", timeout=30))["queue"]["recipients"]
                self.peak = max(self.peak, q["active"])
            except (SystemExit, subprocess.SubprocessError, ValueError, KeyError):
                pass
            self._stop.wait(RSS_PERIOD)

    def stop(self):
        self._stop.set()
        self._t.join()
        return self.peak


class Trickle:
    """One smtplib session submitting to the other destinations at a steady
    rate; records each message's 250 time by its X-Backlog-Bench number."""

    def __init__(self, relay, rate):
        self.relay = relay
        self.period = 1.0 / rate
        self.sent = {}          # n -> time of the 250
        self.errors = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        s, n, due = None, 0, now()
        while not self._stop.is_set():
            try:
                if s is None:
                    s = connect(self.relay, login=("alice", "alicepw"))
                rcpt = "bob%d@%s" % (n, OTHER_DOMAINS[n % len(OTHER_DOMAINS)])
                msg = make_message("alice@example.org", rcpt, "trickle %d" % n, "x" * 512,
                                   extra_headers={"X-Backlog-Bench": str(n)})
                s.sendmail("alice@example.org", [rcpt], msg)
                self.sent[n] = now()
                n += 1
            except (smtplib.SMTPException, OSError):
                self.errors += 1
                try:
                    if s is not None:
                        s.close()
                except Exception:
                    pass
                s = None
            due += self.period
            self._stop.wait(max(0.0, due - now()))
        if s is not None:
            try:
                s.quit()
            except (smtplib.SMTPException, OSError):
                pass

    def stop(self):
        self._stop.set()
        self._t.join()


def ctl(relay, *args, timeout=120):
    r = subprocess.run([relayctl_bin(), "-s", relay.control_socket] + list(args),
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit("relayctl %s: %s" % (" ".join(args), r.stderr.strip()))
    return r.stdout


def settle(relay, n, timeout):
    """Until every one of the n recipients waits (deferred, nothing pending or active)."""
    deadline = now() + timeout
    while True:
        q = json.loads(ctl(relay, "stats", "--json"))["queue"]["recipients"]
        if q["pending"] == 0 and q["active"] == 0 and q["deferred"] >= n:
            return q
        if now() > deadline:
            raise SystemExit("the backlog did not settle within %ds: %r" % (timeout, q))
        time.sleep(0.5)


def fill(a, relay):
    t0 = now()
    r = subprocess.run([os.path.join(a.build, "tests", "bench_control"), "-d", relay.queue_dir,
                        "-n", str(a.messages), "-D", str(a.destinations), "-s", str(a.size), "-c", "256"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("bench_control: %s" % r.stderr)
    print("  %s (%.1fs)" % (r.stdout.strip(), now() - t0), flush=True)


def make_relay(a, backoff):
    relay = Relay(log_level="info", sink_hosts=(BACKLOG_HOST, OTHER_HOST),
                  submit={"login_max_messages": 0, "login_max_recipients": 0},
                  router={"retry_intervals": ["1h"], "host_backoff": [backoff, backoff],
                          "delay_warning": "0", "max_queue_age": "5d"})
    if a.dns_ttl is not None:
        # the server's TTL is its SOA's too: the exchangers' AAAA answer is
        # NODATA, cached per that SOA (RFC 2308), and a lookup's result is
        # kept for the least TTL of its answers (dns/dns.h)
        relay.dns.ttl = a.dns_ttl
    if a.dns_rcvbuf:
        # the harness's DNS server (Python, one thread) drops what its UDP
        # receive buffer (net.core.rmem_default) cannot hold; relayd's
        # resolver asks again after its timeout (2 s)
        relay.dns._udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a.dns_rcvbuf)
    for k in range(a.destinations):
        relay.dns.set_mx_ips("d%d.bench.test" % k, [(10, BACKLOG_HOST)], ttl=a.dns_ttl)
    for d in OTHER_DOMAINS:
        relay.dns.set_mx_ips(d, [(10, OTHER_HOST)])
    return relay


def log_events(relay, event):
    """The log lines of an event (a plain scan: the log holds a line per message)."""
    key = "event=%s " % event
    with open(relay.log_path, errors="replace") as f:
        return [line.strip() for line in f if key in line]


def wait_count(sink, want, what):
    """Until the C sink has want messages; None if it stalls DRAIN_STALL_S."""
    last, stall = -1, now() + DRAIN_STALL_S
    while True:
        n = sink.messages()
        if n >= want:
            return now()
        if n != last:
            last, stall = n, now() + DRAIN_STALL_S
        elif now() > stall:
            print("  %s: stalled at %d of %d" % (what, n, want))
            return None
        time.sleep(0.01)


def written(relay):
    """When every record and removal issued so far is written: `relayctl
    queue show` waits for that before it answers (an unknown id: the
    answer is an error, the wait is what counts)."""
    subprocess.run([relayctl_bin(), "-s", relay.control_socket, "queue", "show", "AAAAAAAAAAAAAAAA"],
                   capture_output=True, text=True, timeout=600)
    return now()


def rate_series(series, n):
    """From (time, count) pairs: (first arrival, last arrival, mean rate,
    per-second rates from the first arrival)."""
    first = next((t for t, c in series if c > 0), None)
    last = next((t for t, c in series if c >= n), None)
    if first is None or last is None:
        return first, last, 0.0, []
    buckets, i = [], 0
    t = first
    prev = 0
    while t < last:
        c = prev
        while i < len(series) and series[i][0] <= t + 1.0:
            c = series[i][1]
            i += 1
        buckets.append(c - prev)
        prev = c
        t += 1.0
    return first, last, n / max(1e-9, last - first), buckets


def show_rates(label, buckets):
    if not buckets:
        return
    mid = buckets[1:-1] or buckets
    print("  %s per second: %s" % (label, " ".join(str(b) for b in buckets)))
    print("  %s per second, whole seconds after the first: min %d, median %d, max %d"
          % (label, min(mid), statistics.median(mid), max(mid)))


def stop(relay):
    """Stop relayd and clean up.  Its stop once unlinked the recycled spare
    files on the loop (now it keeps them for the next start, QUEUE.md);
    a stop after a large run may still take a while on a busy machine, so
    wait longer than the harness does."""
    try:
        if relay.running:
            relay.stop(timeout=600)
    finally:
        relay.close()


def pace_run(a):
    """The sink's pace: a fresh relayd delivers the same queue, sink up from the start."""
    print("=== the sink's pace: %d messages, C sink up from the start" % a.messages, flush=True)
    relay = make_relay(a, "1h")
    sink = counts = None
    try:
        fill(a, relay)
        sink = CSink(os.path.join(a.build, "tests", "bench_sink"), BACKLOG_HOST, relay.smtp_port)
        counts = CountLog(sink)
        relay.start(timeout=600)
        rss = RssSampler(relay.pid)
        active = ActiveSampler(relay)
        done = wait_count(sink, a.messages, "pace")
        rss.stop()
        counts.stop()
        print("  most recipients in attempts at once: %d" % active.stop())
        first, last, rate, buckets = rate_series(counts.series, a.messages)
        if done is None or first is None:
            deferred = log_events(relay, "deferred")
            print("  %d deferred; the first: %s" % (len(deferred), deferred[:1]))
            raise SystemExit("the pace run did not deliver everything")
        kib = [k for _, k in rss.samples]
        print("  delivered %d in %.1fs from the first arrival: %.0f msgs/s; relayd RSS %.1f..%.1f MiB"
              % (a.messages, last - first, rate, min(kib) / 1024.0, max(kib) / 1024.0))
        show_rates("delivered", buckets)
        print("  sink: messages=%d connections=%d" % sink.stop())
        return rate
    finally:
        if sink is not None:
            sink.kill()
        stop(relay)


def release_run(a, pace):
    print("=== the release: %d messages waiting for %s, trickle %.0f/s to %s"
          % (a.messages, BACKLOG_DOMAIN, a.rate, ", ".join(OTHER_DOMAINS)), flush=True)
    relay = make_relay(a, a.probe_backoff if a.trigger == "probe" else "1h")
    sink = other = trickle = rss = counts = None
    ok = True
    try:
        fill(a, relay)
        other = StampSink(OTHER_HOST, relay.smtp_port, nodelay=True)
        t0 = now()
        relay.start(timeout=600)
        q = settle(relay, a.messages, 1200)
        print("  relayd started; the destination is down and all %d wait (%.1fs): %r"
              % (a.messages, now() - t0, q), flush=True)
        rss = RssSampler(relay.pid)
        trickle = Trickle(relay, a.rate)
        time.sleep(a.before)            # the "before" window of the trickle (a measurement, not a sync)
        sink = CSink(os.path.join(a.build, "tests", "bench_sink"), BACKLOG_HOST, relay.smtp_port)
        counts = CountLog(sink)
        attached = attach(a.attach, relay.pid) if a.attach else None
        active = ActiveSampler(relay)
        t_trigger = now()
        nq0, drops0 = len(relay.dns.queries), udp_rcvbuf_errors()
        if a.trigger == "flush" and a.destinations > 1:
            ctl(relay, "queue", "flush", "--all")
        elif a.trigger == "flush":
            ctl(relay, "queue", "flush", "--domain", BACKLOG_DOMAIN)
        done = wait_count(sink, a.messages, "release")
        print("  most recipients in attempts at once: %d" % active.stop())
        t_end = now()
        t_written = written(relay) if done is not None else None
        if attached is not None:
            attached.send_signal(signal.SIGINT)
            attached.wait()
        trickle.stop()
        drops1 = udp_rcvbuf_errors()
        print("  DNS queries during the release: %d; UDP datagrams dropped on a full receive buffer "
              "(host-wide): %s" % (len(relay.dns.queries) - nq0,
                                   "?" if drops0 is None or drops1 is None else drops1 - drops0))
        rss.stop()
        counts.stop()
        first, last, rate, buckets = rate_series(counts.series, a.messages)
        t_release = t_trigger if a.trigger == "flush" else (first or t_trigger)
        up = log_events(relay, "destination_up")
        print("  trigger: %s; first arrival %.3fs after it; destination_up logged: %s"
              % (a.trigger, (first - t_trigger) if first else float("nan"),
                 up[0] if up else "no"))
        if done is None or first is None:
            print("  release: NOT MET (not everything arrived)")
            ok = False
        else:
            print("  delivered %d in %.1fs from the first arrival (%.1fs from the trigger)"
                  % (a.messages, last - first, last - t_trigger))
            show_rates("delivered", buckets)
            if t_written is not None:
                print("  its delivery records and removals all written %.1fs after the trigger: "
                      "%.0f msgs/s on disk" % (t_written - t_trigger, a.messages / (t_written - t_trigger)))
            if pace:
                good = rate >= 0.8 * pace
                ok &= good
                print("  release rate %.0f msgs/s vs the sink's pace %.0f msgs/s: x%.2f "
                      "(target >= 0.8): %s" % (rate, pace, rate / pace, verdict(good)))
            else:
                print("  release rate %.0f msgs/s (no pace run)" % rate)

        before_kib = rss.between(0, t_release)
        during_kib = rss.between(t_release, t_end)
        if during_kib:
            mib = [k / 1024.0 for k in during_kib]
            start = (before_kib[-1] if before_kib else during_kib[0]) / 1024.0
            growth = max(mib) - start
            good = growth <= a.rss_bound
            ok &= good
            print("  relayd RSS before the release (%d samples): %.1f..%.1f MiB"
                  % (len(before_kib), min(before_kib) / 1024.0, max(before_kib) / 1024.0)
                  if before_kib else "  relayd RSS before: no samples")
            print("  relayd RSS during the release (%d samples, every %.1fs): min %.1f, median %.1f, "
                  "max %.1f MiB (max - min %.1f); growth over its start (%.1f MiB) %.1f MiB "
                  "(target <= %.0f MiB): %s"
                  % (len(mib), RSS_PERIOD, min(mib), statistics.median(mib), max(mib),
                     max(mib) - min(mib), start, growth, a.rss_bound, verdict(good)))
            step = max(1, len(mib) // 40)
            print("  RSS series (MiB, every %d%s sample): %s"
                  % (step, "th" if step > 1 else "", " ".join("%.1f" % x for x in mib[::step])))

        # the trickle: wait for the last of it to arrive (the sink, not a sleep)
        want = len(trickle.sent)
        deadline = now() + 30
        while len(other.messages) < want and now() < deadline:
            time.sleep(0.05)
        arrived = {}
        for m in list(other.messages):
            n = m.header("X-Backlog-Bench")
            if n is not None:
                arrived[int(n)] = m.arrived
        before, during, missing = [], [], 0
        for n, t250 in trickle.sent.items():
            if n not in arrived:
                missing += 1
                continue
            d = (arrived[n] - t250) * 1000.0
            (before if t250 < t_release else during).append(d)
        print("  other destinations: %d submitted (%d errors), %d arrived, %d missing"
              % (want, trickle.errors, len(arrived), missing))
        if before and during:
            b50, b99, d50, d99 = pct(before, 50), pct(before, 99), pct(during, 50), pct(during, 99)
            print("  their delay 250 -> sink, before the release (%d msgs): p50 %.1f ms, p99 %.1f ms, "
                  "max %.1f ms" % (len(before), b50, b99, max(before)))
            print("  their delay 250 -> sink, during the release (%d msgs): p50 %.1f ms, p99 %.1f ms, "
                  "max %.1f ms" % (len(during), d50, d99, max(during)))
            g50, g99 = d50 <= 2 * b50 + 20, d99 <= 1000
            ok &= g50 and g99 and missing == 0
            print("  p50 during %.1f ms (target <= 2 x %.1f + 20 = %.1f ms): %s"
                  % (d50, b50, 2 * b50 + 20, verdict(g50)))
            print("  p99 during %.1f ms (target <= 1000 ms): %s" % (d99, verdict(g99)))
        else:
            ok = False
            print("  other destinations: not enough trickle mail to compare: NOT MET")
        print("  sink: messages=%d connections=%d; load average %s"
              % (sink.stop() + (loadavg(),)))
        return ok
    finally:
        for x in (trickle, rss, counts):
            if x is not None:
                x.stop()
        if sink is not None:
            sink.kill()
        stop(relay)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100000)
    ap.add_argument("--size", type=int, default=1024, help="body bytes per message")
    ap.add_argument("--rate", type=float, default=20.0, help="trickle messages per second")
    ap.add_argument("--before", type=float, default=10.0, help="seconds of trickle before the release")
    ap.add_argument("--trigger", choices=("flush", "probe"), default="flush")
    ap.add_argument("--probe-backoff", default="15s", help="host_backoff with --trigger probe")
    ap.add_argument("--rss-bound", type=float, default=16.0, help="MiB")
    ap.add_argument("--no-pace", dest="pace", action="store_false",
                    help="skip the sink's pace run")
    ap.add_argument("--attach", metavar="CMD",
                    help="run CMD ({pid} = relayd's pid) through the release; SIGINT at its end")
    ap.add_argument("--destinations", type=int, default=1,
                    help="spread the backlog over K destinations (flush --all)")
    ap.add_argument("--dns-rcvbuf", type=int, default=4 << 20,
                    help="SO_RCVBUF of the harness's DNS server's UDP socket, bytes "
                         "(default 4 MiB, up to net.core.rmem_max; 0: the host's default)")
    ap.add_argument("--dns-ttl", type=int, default=None,
                    help="TTL of the backlog's MX and A records (default: the harness's, 0)")
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    a = ap.parse_args()
    a.build = os.path.abspath(a.build)
    os.environ.setdefault("RELAYD_BIN", os.path.join(a.build, "relayd"))
    os.environ.setdefault("RELAYCTL_BIN", os.path.join(a.build, "relayctl"))
    print("backlog_bench: %s, load average %s" % (time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                               time.gmtime()), loadavg()))
    pace = pace_run(a) if a.pace else None
    ok = release_run(a, pace)
    print("=== %s; load average %s" % ("all targets met" if ok else "some target NOT MET", loadavg()))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
