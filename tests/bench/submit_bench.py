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
                                        [--attach 'CMD ... {pid} ...']

--attach runs CMD (split on blanks, {pid} replaced by relayd's pid) from just
before the load generator starts until the sink has drained, then sends it
SIGINT and waits: `--attach 'perf record -g -o perf.data -p {pid}'` profiles
relayd under load, `--attach 'strace -c -f -o strace.txt -p {pid}'` counts its
system calls (strace slows relayd several times: use it for counts, not rates).
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
    ap.add_argument("--attach", metavar="CMD",
                    help="run CMD ({pid} = relayd's pid) during the load; SIGINT at the end")
    a = ap.parse_args()
    a.build = os.path.abspath(a.build)

    os.environ.setdefault("RELAYD_BIN", os.path.join(a.build, "relayd"))
    os.environ.setdefault("RELAYCTL_BIN", os.path.join(a.build, "relayctl"))
    overrides = {"log_level": "info",
                 "submit": {"login_max_messages": 0, "login_max_recipients": 0,
                            "max_connections_per_ip": 1000}}
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
    attached = None
    try:
        if not a.no_sink:
            relay.update_config(router={"routes": [{"domain": "example.net",
                                                    "hosts": ["127.0.0.2:%d" % relay.smtp_port]}]})
            if a.py_sink:
                sink = PySink(relay, "127.0.0.2")
            else:
                sink = CSink(os.path.join(a.build, "tests", "bench_sink"), "127.0.0.2",
                             relay.smtp_port)
        else:
            relay.update_config(router={"routes": [{"domain": "example.net",
                                                    "hosts": ["127.0.0.2:9"]}]})
        relay.start()
        attached = attach(a.attach, relay.pid) if a.attach else None
        cpu0, (busy0, total0) = cpu_seconds(relay.pid), machine_busy()
        gen0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        sink_cpu0 = sink.cpu_seconds() if sink else 0.0
        t0 = time.monotonic()
        r = subprocess.run([os.path.join(a.build, "tests", "bench_submit"), relay.host,
                            str(relay.submit_port), "alice", "alicepw", "alice@example.org",
                            "bob@example.net", str(a.messages), str(a.sessions), str(a.size)],
                           capture_output=True, text=True)
        t1 = time.monotonic()
        cpu1, (busy1, total1) = cpu_seconds(relay.pid), machine_busy()
        gen1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr[-2000:])
        gen = (gen1.ru_utime - gen0.ru_utime) + (gen1.ru_stime - gen0.ru_stime)
        print("relayd_cpu_ms_per_msg=%.3f loadgen_cpu_ms_per_msg=%.3f machine_busy=%.0f%%"
              % ((cpu1 - cpu0) * 1000.0 / a.messages, gen * 1000.0 / a.messages,
                 100.0 * (busy1 - busy0) / max(1, total1 - total0)))
        print("relayd_peak_rss_mib=%.1f" % (vm_hwm_kib(relay.pid) / 1024.0))
        if sink is None:
            return r.returncode

        accepted = a.messages
        for word in (r.stdout.split("\n", 1)[0]).split():
            if word.startswith("messages="):
                accepted = int(word[9:])
        t2, got = wait_drained(sink, accepted)
        sink_cpu = sink.cpu_seconds() - sink_cpu0
        if t2 is None:
            print("drained_s=timeout (sink had %d of %d, none more in %ds)"
                  % (got, accepted, DRAIN_STALL_S))
        else:
            print("drained_s=%.3f (delivered msgs/s=%.0f)" % (t2 - t1, got / max(1e-9, t2 - t0)))
        print("sink_cpu_ms_per_msg=%.3f relayd_cpu_ms_per_msg_with_delivery=%.3f"
              % (sink_cpu * 1000.0 / max(1, got),
                 (cpu_seconds(relay.pid) - cpu0) * 1000.0 / a.messages))
        print("sink messages=%d connections=%d" % sink.stop())
        return r.returncode if t2 is not None else 1
    finally:
        if attached is not None:
            attached.send_signal(signal.SIGINT)
            attached.wait()
        if sink is not None:
            sink.kill()
        relay.close()


if __name__ == "__main__":
    sys.exit(main())
