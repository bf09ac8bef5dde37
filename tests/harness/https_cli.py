"""https_cli.py - an HTTPS server (httpsserver.py) with its DNS server
(dnsserver.py) and test CA (relay.py's TestCA), driven over stdin/stdout, for the
C unit test of the HTTPS client (tests/unit/test_http.c).

    python3 https_cli.py DIR

makes a CA in DIR, starts a DNSServer and an HTTPSServer on 127.0.0.1 (free
ports) with a certificate for www.example.test, and prints

    READY <dns port> <https port> <ca file>

The zone: www.example.test and wrong.example.test -> 127.0.0.1 (the
certificate does not name the second); nothing.example.test does not exist.
The routes (any Host): /ok (200 text/plain "hello\\n"), /big (5000 bytes with
Content-Length), /big-nolen (5000 bytes, no Content-Length), /slow (answers
after 5 s), /redirect (301 to /ok), /post (200 "accepted\\n"); others 404.
Commands, one JSON array per line, each answered "OK <json>":
    ["requests"]   the log: [[method, host, path, content_type, body], ...]
    ["quit"]       stops everything (so does the end of input)
"""

import json
import sys

from dnsserver import DNSServer
from httpsserver import HTTPSServer
from relay import TestCA


def main(argv):
    ca = TestCA(argv[1])
    cert, key = ca.issue("www.example.test")
    dns = DNSServer()
    dns.start()
    dns.set_a("www.example.test", ["127.0.0.1"])
    dns.set_a("wrong.example.test", ["127.0.0.1"])
    srv = HTTPSServer("127.0.0.1", 0, cert, key)
    srv.route(None, "/ok", body="hello\n")
    srv.route(None, "/big", body="x" * 5000)
    srv.route(None, "/big-nolen", body="x" * 5000, length=False)
    srv.route(None, "/slow", body="late\n", delay=5)
    srv.route(None, "/redirect", status=301, body="", location="/ok")
    srv.route(None, "/post", body="accepted\n")
    srv.start()
    print("READY %d %d %s" % (dns.port, srv.port, ca.cert), flush=True)
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd[0] == "quit":
                print("OK null", flush=True)
                break
            if cmd[0] == "requests":
                with srv.lock:
                    out = [[m, h, p, hd.get("Content-Type"), b.decode("latin-1")]
                           for (m, h, p, hd, b) in srv.requests]
                print("OK " + json.dumps(out), flush=True)
            else:
                print("ERR unknown command", flush=True)
    finally:
        srv.stop()
        dns.stop()


if __name__ == "__main__":
    main(sys.argv)
