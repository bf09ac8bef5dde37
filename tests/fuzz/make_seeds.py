#!/usr/bin/env python3
"""make_seeds.py - (re)writes the seed corpora of tests/fuzz/corpus/<name>/
that are made from the real pieces: DNS answers from the harness's DNS
server (tests/harness/dnsserver.py), and queue files, journal inputs and log
lines from a real relayd (tests/harness/relay.py, routes to a closed port so
that the mail stays queued).  The hand-written seeds (SMTP lines, replies,
configs, control requests) are committed as they are.

    python3 tests/fuzz/make_seeds.py [--build build]
"""
import argparse
import gzip
import os
import shutil
import socket
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

from dnsserver import DNSServer, build_query  # noqa: E402

CORPUS = os.path.join(HERE, "corpus")


def put(name, fname, data):
    d = os.path.join(CORPUS, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data)


def dns_seeds():
    with DNSServer(ttl=300) as dns:
        dns.set_mx("example.net", [(10, "mx1.example.net"), (20, "mx2.example.net")])
        dns.set_a("mx1.example.net", ["192.0.2.1", "192.0.2.2"])
        dns.set_aaaa("mx2.example.net", ["2001:db8::25"])
        dns.set_txt("sel._domainkey.example.org",
                    ["v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="])
        dns.set_txt("long.example.org", ["a" * 255 + "b" * 100])
        dns.set_cname("www.example.com", "alias.example.com")
        dns.set_cname("alias.example.com", "host.example.com")
        dns.set_a("host.example.com", ["198.51.100.7"])
        dns.set_null_mx("nomail.example.org")
        dns.set_nxdomain("nx.example.org")
        host, port = dns.address.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        for fname, name, qtype in (("mx", "example.net", "MX"), ("a", "mx1.example.net", "A"),
                                   ("aaaa", "mx2.example.net", "AAAA"),
                                   ("txt-dkim", "sel._domainkey.example.org", "TXT"),
                                   ("txt-long", "long.example.org", "TXT"),
                                   ("cname-chain", "www.example.com", "A"),
                                   ("null-mx", "nomail.example.org", "MX"),
                                   ("nxdomain-soa", "nx.example.org", "MX"),
                                   ("nodata", "mx1.example.net", "MX")):
            s.sendto(build_query(name, qtype), (host, int(port)))
            put("dns_answer", fname, s.recvfrom(65535)[0])
        s.close()


def relay_seeds(build):
    os.environ.setdefault("RELAYD_BIN", os.path.join(build, "relayd"))
    os.environ.setdefault("RELAYCTL_BIN", os.path.join(build, "relayctl"))
    from client import submit
    from test_submit_smtp import QueueOnlyRelay
    relay = QueueOnlyRelay()
    try:
        relay.start()
        submit(relay, "alice@example.org", ["bob@example.net"],
               "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: one\r\n\r\nbody\r\n")
        submit(relay, "alice@example.org", ["bob@example.net", "carol@example.com"],
               "From: alice@example.org\r\nSubject: two\r\n\r\n..dot\r\nmore\r\n")
        relay.wait_for_log("deferred", timeout=20)
        relay.stop()
        msgdir = os.path.join(relay.queue_dir, "msg")
        images = []
        for n in sorted(os.listdir(msgdir)):
            if n.startswith("."):
                continue
            with open(os.path.join(msgdir, n), "rb") as f:
                data = f.read()
            images.append((n, data))
            put("queue_file", "msg-%d" % len(images), data)
            if data.endswith(b"\n"):
                put("queue_file", "torn-%d" % len(images), data + b"A 0 1733465000000 h")
        # journal inputs: flags 0, records "qidlen|0x80 qid len16 image"
        j = b"\0"
        for i, (qid, img) in enumerate(images):
            j += bytes([len(qid) | (0x80 if i else 0)]) + qid.encode() + struct.pack("<H", len(img)) + img
        put("journal", "two-batches", j)
        qid, img = images[0]
        put("journal", "one", b"\0" + bytes([len(qid)]) + qid.encode() + struct.pack("<H", len(img)) + img)
        put("journal", "damaged", b"\1\x30\0\x04" + bytes([len(qid)]) + qid.encode()
            + struct.pack("<H", len(img)) + img)
        with open(relay.log_path, "rb") as f:
            log = f.read()
        put("audit", "log", b"\0" + log)
        put("audit", "log-json", b"\1" + log)
        put("audit", "log-gz", b"\1" + gzip.compress(log, mtime=0))
        put("conf", "harness.conf", open(relay.config_path, "rb").read())
    finally:
        relay.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    a = ap.parse_args()
    dns_seeds()
    relay_seeds(os.path.abspath(a.build))
    shutil.copy(os.path.join(REPO, "contrib", "relayd.conf"), os.path.join(CORPUS, "conf", "contrib.conf"))


if __name__ == "__main__":
    main()
