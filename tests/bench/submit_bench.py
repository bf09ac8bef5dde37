#!/usr/bin/env python3
"""submit_bench.py - the submission benchmark (not a test): starts a real
relayd (tests/harness Relay) with its mail routed to a real SMTP sink on
127.0.0.2, drives N messages over C concurrent STARTTLS + AUTH PLAIN sessions
with the C load generator bench_submit, and prints messages/s, p50/p99 from
end of DATA to 250, and relayd's peak RSS (VmHWM).

    python3 tests/bench/submit_bench.py [--messages 20000] [--sessions 16] [--size 4096]
                                        [--build build] [--no-sink]
"""
import argparse
import os
import resource
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))

from relay import Relay  # noqa: E402


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--sessions", type=int, default=16)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--no-sink", action="store_true", help="hold the queue instead of delivering")
    a = ap.parse_args()
    a.build = os.path.abspath(a.build)

    os.environ.setdefault("RELAYD_BIN", os.path.join(a.build, "relayd"))
    os.environ.setdefault("RELAYCTL_BIN", os.path.join(a.build, "relayctl"))
    overrides = {"log_level": "info",
                 "submit": {"login_max_messages": 0, "login_max_recipients": 0,
                            "max_connections_per_ip": 1000}}
    relay = Relay(**overrides)
    try:
        if not a.no_sink:
            relay.update_config(router={"routes": [{"domain": "example.net",
                                                    "hosts": ["127.0.0.2:%d" % relay.smtp_port]}]})
            relay.sink("127.0.0.2")
        else:
            relay.update_config(router={"routes": [{"domain": "example.net",
                                                    "hosts": ["127.0.0.2:9"]}]})
        relay.start()
        cpu0, (busy0, total0) = cpu_seconds(relay.pid), machine_busy()
        gen0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run([os.path.join(a.build, "tests", "bench_submit"), relay.host,
                            str(relay.submit_port), "alice", "alicepw", "alice@example.org",
                            "bob@example.net", str(a.messages), str(a.sessions), str(a.size)],
                           capture_output=True, text=True)
        cpu1, (busy1, total1) = cpu_seconds(relay.pid), machine_busy()
        gen1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr[-2000:])
        gen = (gen1.ru_utime - gen0.ru_utime) + (gen1.ru_stime - gen0.ru_stime)
        print("relayd_cpu_ms_per_msg=%.3f loadgen_cpu_ms_per_msg=%.3f machine_busy=%.0f%%"
              % ((cpu1 - cpu0) * 1000.0 / a.messages, gen * 1000.0 / a.messages,
                 100.0 * (busy1 - busy0) / max(1, total1 - total0)))
        print("relayd_peak_rss_mib=%.1f" % (vm_hwm_kib(relay.pid) / 1024.0))
        return r.returncode
    finally:
        relay.close()


if __name__ == "__main__":
    sys.exit(main())
