"""bench_fill.py - the part the big-queue benchmarks share (bench_control.py,
metrics_bench.py, queue_bench.py): a real relayd (tests/harness Relay) whose
bench domains d0..dN-1.bench.test have a dead loopback MX, a queue_dir filled
with N messages through the queue's own API by the C generator
build/tests/bench_control, relayctl timed, and waiting until the queue has
settled.  Not a benchmark by itself.
"""
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))

from relay import Relay, relayctl_bin, test_user_ids  # noqa: E402

DEAD_MX = "127.0.0.9"       # nothing listens there: connection refused


def use_build(build):
    """Run relayd and relayctl of this build directory (unless set already)."""
    os.environ.setdefault("RELAYD_BIN", os.path.join(build, "relayd"))
    os.environ.setdefault("RELAYCTL_BIN", os.path.join(build, "relayctl"))


def dead_relay(domains, **overrides):
    """A Relay (not started) whose domains d0..d<domains-1>.bench.test all
    have DEAD_MX as their one MX, retrying every hour: once relayd has tried
    each destination once, every recipient waits for an hour-away probe."""
    router = {"retry_intervals": ["1h"], "host_backoff": ["1h", "1h"],
              "delay_warning": "0", "max_queue_age": "5d"}
    router.update(overrides.pop("router", {}))
    relay = Relay(log_level=overrides.pop("log_level", "notice"), router=router, **overrides)
    for d in range(domains):
        relay.dns.set_mx_ips("d%d.bench.test" % d, [(10, DEAD_MX)])
    return relay


def fill(relay, build, messages, domains, rcpts=1, inflight=256):
    """Fill relay.queue_dir (relayd not running) with bench_control; prints
    its summary line and returns the seconds it took."""
    t0 = time.perf_counter()
    gen = subprocess.run([os.path.join(build, "tests", "bench_control"), "-d", relay.queue_dir,
                          "-n", str(messages), "-r", str(rcpts), "-D", str(domains),
                          "-c", str(inflight)], capture_output=True, text=True)
    if gen.returncode != 0:
        raise SystemExit("bench_control: %s" % gen.stderr)
    print(gen.stdout.strip())
    give_to_user(relay.queue_dir)
    return time.perf_counter() - t0


def give_to_user(queue_dir):
    """The generator ran as root: relayd, which runs as the harness's test
    user, must own the queue it opens."""
    ids = test_user_ids()
    if os.geteuid() == 0 and ids is not None:
        subprocess.run(["chown", "-R", "%d:%d" % ids, queue_dir], check=True)


def ctl(relay, *args, timeout=120):
    """Run relayctl; (milliseconds, output bytes) or (None, why) on failure."""
    cmd = [relayctl_bin(), "-s", relay.control_socket] + list(args)
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "no answer within %ds" % timeout
    ms = (time.perf_counter() - t0) * 1000.0
    if r.returncode != 0:
        return None, "exit %d: %s" % (r.returncode, r.stderr.decode(errors="replace").strip())
    return ms, r.stdout


def settle(relay, n_rcpts, timeout):
    """Wait until no recipient is pending or active: all deferred (or held)."""
    deadline = time.time() + timeout
    while True:
        ms, out = ctl(relay, "stats", "--json", timeout=max(1, int(deadline - time.time())))
        q = json.loads(out)["queue"] if ms is not None else None
        if q is not None and q["recipients"]["pending"] == 0 and q["recipients"]["active"] == 0 \
                and q["recipients"]["deferred"] + q["recipients"]["held"] >= n_rcpts:
            return q
        if time.time() > deadline:
            raise SystemExit("queue did not settle within %ds: %r" % (timeout, q))
        time.sleep(1)
