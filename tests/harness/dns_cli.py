"""dns_cli.py - the loopback DNSServer (dnsserver.py) driven over stdin/stdout,
for tests that are not written in Python (tests/unit/test_mx.c).

    python3 dns_cli.py [ZONE_JSON]

starts a DNSServer on 127.0.0.1 (a free port), applies ZONE_JSON (a JSON list
of commands, see below), prints "READY <port>" and then answers one command
per input line, each a JSON array [method, arg, ...]:

    ["set_mx", "example.test", [[10, "mx1.example.test"]]]   -> OK null
    ["count", "example.test", "A"]                           -> OK 0
    ["queries"]                                  -> OK [["example.test", "MX"], ...]
    ["quit"]                                     -> OK null, then exits

Methods: the zone and query-log methods of DNSServer (set_mx, set_null_mx,
set_mx_ips, set_a, set_aaaa, set_txt, set_cname, set_nxdomain, set_servfail,
set_drop, clear, reset, count, clear_queries) plus "queries" (the query log)
and "quit".  Each reply is one line: "OK <json result>" or "ERR <message>".
End of input stops the server too.
"""

import json
import sys

from dnsserver import DNSServer

METHODS = {"set_mx", "set_null_mx", "set_mx_ips", "set_a", "set_aaaa", "set_txt",
           "set_cname", "set_nxdomain", "set_servfail", "set_drop", "clear", "reset",
           "count", "clear_queries"}


def run(dns, cmd):
    """Run one command (a list); returns (result, quit)."""
    if not isinstance(cmd, list) or not cmd or not isinstance(cmd[0], str):
        raise ValueError("a command is a JSON array [method, arg, ...]")
    name, args = cmd[0], cmd[1:]
    if name == "quit":
        return None, True
    if name == "queries":
        with dns._lock:
            return [list(q) for q in dns.queries], False
    if name not in METHODS:
        raise ValueError("unknown method %r" % name)
    if name in ("set_mx", "set_mx_ips") and len(args) >= 2:
        args[1] = [tuple(x) for x in args[1]]
    return getattr(dns, name)(*args), False


def main(argv):
    zone = json.loads(argv[1]) if len(argv) > 1 else []
    dns = DNSServer()
    dns.start()
    try:
        for cmd in zone:
            run(dns, cmd)
        print("READY %d" % dns.port, flush=True)
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                res, stop = run(dns, json.loads(line))
            except Exception as e:      # report, keep serving
                print("ERR %s" % str(e).replace("\n", " "), flush=True)
                continue
            print("OK %s" % json.dumps(res), flush=True)
            if stop:
                break
    finally:
        dns.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
