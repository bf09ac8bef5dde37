#!/usr/bin/env python3
"""bench_control.py - how fast relayctl answers with a big queue (a benchmark,
not a test; issue #6 point 7: "every command answers in well under a second
with 100,000 messages queued").

It fills a fresh queue_dir with N messages in the queue's own format (the C
generator bench_control, which links relaycore's queue API), spread over D
domains whose MX is a dead loopback address (127.0.0.9: connection refused),
starts the real relayd on it (tests/harness Relay), waits until every
recipient is deferred (its destination down, waiting for a probe an hour
away), then times each relayctl command R times and prints min / median / max
wall-clock milliseconds (including relayctl's own start-up) and the size of
the answer.

    python3 tests/bench/bench_control.py [--messages 100000] [--domains 10]
        [--rcpts 1] [--runs 5] [--build build]
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_fill import DEAD_MX, REPO, ctl, dead_relay, fill, settle, use_build  # noqa: E402


def row(args, times, out):
    if not times:
        print("%-58s FAILED %s" % (" ".join(args)[:58], out))
        return
    print("%-58s %5d %9.1f %9.1f %9.1f %11d" % (" ".join(args)[:58], len(times), min(times),
                                                statistics.median(times), max(times), len(out)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100000)
    ap.add_argument("--domains", type=int, default=10)
    ap.add_argument("--rcpts", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    a = ap.parse_args()

    use_build(a.build)
    relay = dead_relay(a.domains)
    try:
        fill(relay, a.build, a.messages, a.domains, a.rcpts)
        t1 = time.perf_counter()
        relay.start(timeout=600)
        t2 = time.perf_counter()
        q = settle(relay, a.messages * a.rcpts, 1200)
        t3 = time.perf_counter()
        print("relayd started in %.1fs, queue settled %.1fs later: %d messages, %r"
              % (t2 - t1, t3 - t2, q["messages"], q["recipients"]))

        listing = json.loads(relay.relayctl("queue", "list", "--domain", "d1.bench.test",
                                            "--json").stdout)["messages"]
        qids = [m["qid"] for m in listing]
        standin = "127.0.0.8:%d" % relay.smtp_port
        commands = [
            ("queue", "list"),
            ("queue", "list", "--json"),
            ("queue", "list", "--domain", "d3.bench.test"),
            ("queue", "list", "--domain", "d3.bench.test", "--json"),
            ("queue", "list", "--held"),
            ("queue", "show", qids[0]),
            ("queue", "show", qids[0], "--json"),
            ("hosts",),
            ("hosts", "--json"),
            ("stats",),
            ("stats", "--json"),
            ("route", "list"),
        ]
        once = [
            ("queue", "hold", "--domain", "d2.bench.test"),
            ("queue", "list", "--held"),
            ("queue", "release", "--domain", "d2.bench.test"),
            ("queue", "hold", qids[1]),
            ("queue", "release", qids[1]),
            ("queue", "delete", qids[2]),
            ("queue", "bounce", qids[3]),
            ("queue", "flush", qids[4]),
            ("route", "set", "d9.bench.test", standin),
            ("queue", "flush", "--domain", "d9.bench.test"),
            ("route", "clear", "d9.bench.test"),
            ("hosts", "reset", DEAD_MX),
            ("queue", "flush", "--all"),
        ]
        print("\n%-58s %5s %9s %9s %9s %11s" % ("COMMAND", "RUNS", "MIN ms", "MEDIAN ms",
                                               "MAX ms", "BYTES"))
        for args in commands:
            times, out = [], b""
            for _ in range(a.runs):
                ms, out = ctl(relay, *args)
                if ms is None:
                    break
                times.append(ms)
            row(args, times, out)
        print("\nOne-off commands; then how long the next `stats` waited for the loop, and how"
              "\nlong until the queue settled again (what the command set off):")
        for args in once:
            ms, out = ctl(relay, *args)
            row(args, [ms] if ms is not None else [], out)
            after, _ = ctl(relay, "stats", "--json")
            t0 = time.perf_counter()
            settle(relay, 0, 1200)
            print("    -> next stats answered in %s ms; the queue settled %.1fs later"
                  % ("%.1f" % after if after is not None else "(none)", time.perf_counter() - t0))
    finally:
        relay.close()


if __name__ == "__main__":
    main()
