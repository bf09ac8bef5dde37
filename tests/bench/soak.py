#!/usr/bin/env python3
"""soak.py - the crash soak (a benchmark-style tool, not a timed test):
kills a real relayd with SIGKILL at random instants under concurrent load,
N times, restarts it on the same queue each time, then lets everything drain
to a sink and accounts for every message a client was told is queued.

Set-up: a relayd from tests/harness (relay.py), its example.net mail routed
to the harness's SMTP sink (smtpsink.py SinkMX on 127.0.0.2, which records
every message it accepts), retries after 1 s.  --threads submitters
(smtplib: STARTTLS, AUTH PLAIN, MAIL, RCPT, DATA; each message carries a
unique X-Soak-Id) submit without pause and reconnect whenever relayd is
gone.  Delivery runs at the same time, so the kills land in submissions,
group syncs, journal batches, publishes, deliveries and state records.

One round: wait until --min-acked more messages got their 250 in this
round, sleep a random time in [0, --max-delay] s, SIGKILL, restart.  After
--kills rounds the submitters stop, relayd runs until the sink has every
acknowledged message or nothing moves for --drain-stall s, and then:

    acked               messages that got "250 ... queued as QID"
    delivered_once      acknowledged, delivered exactly once
    still_queued        acknowledged, not delivered, listed by
                        `relayctl queue list --json` under their QID
    lost                acknowledged, neither delivered nor queued
    dup_confirmed       extra copies of a message whose earlier copy's 250
                        relayd had read (its log's "delivered" event names
                        the sink's reply): relayd knew and sent it again
    dup_unconfirmed     extra copies where the sink accepted the earlier copy
                        but relayd never read that 250: the kill came between
                        the two (the sink records a message before its reply
                        goes out).  SMTP cannot close this window (RFC 1047);
                        relayd must retry such a message, so it is reported,
                        not counted as a failure (unless --strict)
    unacked_delivered   no 250 seen by the client, but delivered (allowed:
                        the kill came after the sync and before the reply
                        reached the client)
    unacked_queued      the same, still queued

and how many kills found acknowledged mail that was only in the journal
(no msg/<qid> file yet: the start-up replay must bring it back), and how
many such messages in all.
    unknown_delivered   the sink got a message no submitter sent (never allowed)

It exits 1 on any loss, confirmed duplicate or unknown message (with
--strict on any duplicate), else 0.  --seed makes
the kill instants repeatable (the machine's timing does not).

    python3 tests/bench/soak.py [--kills 100] [--threads 4] [--build build]
                                [--min-acked 10] [--max-delay 0.5] [--seed S]
                                [--publish-delay-ms 0] [--drain-stall 60] [--strict]

--publish-delay-ms sets RELAYD_TEST_PUBLISH_DELAY_MS (only a relayd built
with -DRELAY_TEST_HOOKS=ON honours it): acknowledged mail stays in the
journal longer before its msg/ file exists, so more kills land there.
"""
import argparse
import json
import os
import random
import smtplib
import ssl
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))

from client import QUEUED_RE  # noqa: E402
from relay import Relay, RelayError  # noqa: E402

SENDER = "alice@example.org"
RCPT = "bob@example.net"
ID_HEADER = b"X-Soak-Id: "


class Ledger:
    """What the submitters did, under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = set()           # ids whose end of data was sent
        self.acked = {}             # id -> qid (got the 250)
        self.refused = 0            # 4xx/5xx at some step (counted, not an error)
        self.round_acked = 0

    def ack(self, mid, qid):
        with self.lock:
            self.acked[mid] = qid
            self.round_acked += 1


def submitter(relay, no, ledger, stop):
    """Submit without pause; reconnect (after a short pause) when relayd is gone."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    n = 0
    while not stop.is_set():
        s = None
        try:
            s = smtplib.SMTP(relay.host, relay.submit_port, timeout=30)
            s.ehlo("soak.test")
            s.starttls(context=ctx)
            s.ehlo("soak.test")
            s.login("alice", "alicepw")
            while not stop.is_set():
                mid = "soak-%d-%d" % (no, n)
                n += 1
                body = ("From: <%s>\r\nTo: <%s>\r\nSubject: soak %s\r\n%s%s\r\n\r\n"
                        % (SENDER, RCPT, mid, ID_HEADER.decode(), mid))
                body += "line %s\r\n" % mid * random.randint(1, 40)
                code, _ = s.mail(SENDER)
                if code != 250:
                    ledger.refused += 1
                    break
                code, _ = s.rcpt(RCPT)
                if code != 250:
                    ledger.refused += 1
                    break
                with ledger.lock:
                    ledger.sent.add(mid)    # from here on it may be queued
                code, text = s.data(body.encode())
                m = QUEUED_RE.search(text.decode("utf-8", "replace"))
                if code == 250 and m:
                    ledger.ack(mid, m.group(1))
                else:
                    ledger.refused += 1
                    break
        except (OSError, smtplib.SMTPException):
            pass                            # killed under us, or not up yet
        finally:
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        stop.wait(0.05)


def msg_files(relay):
    """The queue ids with a published file in queue_dir/msg/."""
    d = os.path.join(relay.queue_dir, "msg")
    return [n for n in os.listdir(d) if not n.startswith(".")] if os.path.isdir(d) else []


def soak_id(data):
    """The X-Soak-Id of a delivered message, or None."""
    i = data.find(ID_HEADER)
    if i < 0:
        return None
    j = data.find(b"\r\n", i)
    return data[i + len(ID_HEADER):j].decode("ascii", "replace")


def queued_qids(relay):
    r = relay.relayctl("queue", "list", "--json")
    if r.returncode != 0:
        raise RelayError("relayctl queue list: %d %s%s" % (r.returncode, r.stdout, r.stderr))
    return {m["qid"] for m in json.loads(r.stdout)["messages"]}


def delivered(sink):
    """{soak id: [the sink's Message for each copy, in order]}."""
    copies = {}
    for msg in list(sink.messages):
        copies.setdefault(soak_id(msg.data), []).append(msg)
    return copies


def dup_kinds(relay, qid, copies):
    """(confirmed, unconfirmed) extra copies: an earlier copy is confirmed
    when relayd logged its delivery with the sink's reply to that copy."""
    seen = {d.get("reply") for d in relay.find_log("delivered", qid=qid)} if qid else set()
    confirmed = sum(1 for m in copies[:-1] if m.reply in seen)
    return confirmed, len(copies) - 1 - confirmed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--min-acked", type=int, default=10,
                    help="acknowledged messages per round before the kill instant is drawn")
    ap.add_argument("--max-delay", type=float, default=0.5)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--publish-delay-ms", type=int, default=0)
    ap.add_argument("--drain-stall", type=float, default=60.0,
                    help="give up draining after this long without progress")
    ap.add_argument("--strict", action="store_true",
                    help="fail on unconfirmed duplicates too")
    a = ap.parse_args()

    build = os.path.abspath(a.build)      # relayd runs in its own directory
    os.environ.setdefault("RELAYD_BIN", os.path.join(build, "relayd"))
    os.environ.setdefault("RELAYCTL_BIN", os.path.join(build, "relayctl"))
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 30)
    rnd = random.Random(seed)
    env = {"RELAYD_TEST_PUBLISH_DELAY_MS": a.publish_delay_ms} if a.publish_delay_ms else None
    relay = Relay(env=env, log_level="info",
                  submit={"login_max_messages": 0, "login_max_recipients": 0,
                          "max_connections_per_ip": 1000},
                  router={"retry_intervals": ["1s"], "host_backoff": ["1s", "2s"]})
    relay.update_config(router={"routes": [{"domain": "example.net",
                                            "hosts": ["127.0.0.2:%d" % relay.smtp_port]}]})
    sink = relay.sink("127.0.0.2", nodelay=True)
    ledger = Ledger()
    stop = threading.Event()
    threads = []
    failed = True
    journal_only = journal_kills = 0
    t0 = time.monotonic()
    try:
        relay.start()
        threads = [threading.Thread(target=submitter, args=(relay, i, ledger, stop), daemon=True)
                   for i in range(a.threads)]
        for t in threads:
            t.start()
        for k in range(a.kills):
            with ledger.lock:
                ledger.round_acked = 0
            deadline = time.monotonic() + 60
            while ledger.round_acked < a.min_acked:
                if time.monotonic() > deadline:
                    raise RelayError("round %d: only %d acknowledged in 60 s\n%s"
                                     % (k, ledger.round_acked, relay.diagnostics()))
                time.sleep(0.01)
            time.sleep(rnd.uniform(0.0, a.max_delay))
            relay.kill9()
            # acknowledged, but only in the journal at the kill: no msg/ file
            # yet, and not delivered (a delivered message's file is gone)
            gone = set(delivered(sink))
            with ledger.lock:
                qids = {q for m, q in ledger.acked.items() if m not in gone}
            in_journal = len(qids - set(msg_files(relay)))
            journal_only += in_journal
            journal_kills += in_journal > 0
            relay.start(timeout=30)
            if (k + 1) % 10 == 0:
                print("kills=%d acked=%d delivered=%d" % (k + 1, len(ledger.acked),
                                                          len(sink.messages)), flush=True)
        stop.set()
        for t in threads:
            t.join(60)

        # drain: until every acknowledged message is at the sink, or no progress
        want = set(ledger.acked)
        last, last_change = -1, time.monotonic()
        while True:
            got = delivered(sink)
            missing = [m for m in want if m not in got]
            if not missing:
                break
            n = sum(len(v) for v in got.values())
            if n != last:
                last, last_change = n, time.monotonic()
            elif time.monotonic() - last_change > a.drain_stall:
                break
            time.sleep(0.2)
        time.sleep(1.0)                     # a late duplicate would show up now
        got = delivered(sink)
        queued = queued_qids(relay)

        c = dict.fromkeys(("acked", "delivered_once", "still_queued", "lost", "dup_confirmed",
                           "dup_unconfirmed",
                           "unacked_sent", "unacked_delivered", "unacked_queued",
                           "unknown_delivered"), 0)
        lost, dups = [], []
        qid_of = dict(ledger.acked)
        c["acked"] = len(qid_of)
        for mid, qid in qid_of.items():
            n = len(got.get(mid, ()))
            if n == 1:
                c["delivered_once"] += 1
            elif n > 1:
                yes, no = dup_kinds(relay, qid, got[mid])
                c["dup_confirmed"] += yes
                c["dup_unconfirmed"] += no
                dups.append((mid, qid, n, yes))
            elif qid in queued:
                c["still_queued"] += 1
            else:
                c["lost"] += 1
                lost.append((mid, qid))
        unacked = ledger.sent - set(qid_of)
        c["unacked_sent"] = len(unacked)
        for mid in unacked:
            n = len(got.get(mid, ()))
            if n > 0:
                c["unacked_delivered"] += 1
            if n > 1:
                c["dup_unconfirmed"] += n - 1     # no qid known: not told apart
                dups.append((mid, None, n, 0))
        c["unacked_queued"] = max(0, len(queued) - c["still_queued"])
        c["unknown_delivered"] = sum(len(v) for mid, v in got.items()
                                     if mid not in ledger.sent)
        print("soak: kills=%d threads=%d seed=%d elapsed_s=%.0f refused_replies=%d "
              "kills_with_journal_only_mail=%d journal_only_at_kill=%d"
              % (a.kills, a.threads, seed, time.monotonic() - t0, ledger.refused,
                 journal_kills, journal_only))
        print(" ".join("%s=%d" % kv for kv in c.items()))
        for mid, qid in lost[:20]:
            print("LOST %s qid=%s" % (mid, qid))
        for mid, qid, n, yes in dups[:20]:
            print("DUPLICATE %s qid=%s delivered=%d confirmed_before=%d" % (mid, qid, n, yes))
        failed = (c["lost"] > 0 or c["dup_confirmed"] > 0 or c["unknown_delivered"] > 0 or
                  (a.strict and c["dup_unconfirmed"] > 0))
        return 1 if failed else 0
    finally:
        stop.set()
        relay.close(failed=failed)
        if failed:
            print("relayd's directory kept: %s" % relay.tmpdir)


if __name__ == "__main__":
    sys.exit(main())
