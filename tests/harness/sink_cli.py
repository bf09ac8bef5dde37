"""sink_cli.py - a SinkMX (smtpsink.py) driven over stdin/stdout, for tests
written in C (tests/unit/test_deliver.c) that cannot import Python.

    python3 sink_cli.py HOST [OPTIONS-JSON]

OPTIONS-JSON is a JSON object of SinkMX keyword arguments, e.g.
    {"ehlo_features": ["PIPELINING", "SIZE 100"], "starttls": ["cert.pem", "key.pem"],
     "auth": {"user": "pw"}, "auth_required": true, "hang_greeting": true}
The sink listens on HOST and a free port, then prints one line:
    READY <port>
and serves requests read from stdin, one per line, each answered by one line:
    exec <python statement>   -> "OK"
    eval <python expression>  -> "OK <value>"
    quit                      -> "OK", then the sink stops and the program exits
or "ERR <exception>" when the statement or expression raised.  The name
`sink` is the SinkMX; `ssl` and `time` are imported.  A str or bytes value is
printed as text with backslash, CR and LF escaped as \\\\, \\r, \\n (bytes
decoded as Latin-1); any other value as repr().  EOF on stdin stops the sink.
"""

import json
import os
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from smtpsink import SinkMX  # noqa: E402


def _text(v):
    if isinstance(v, bytes):
        v = v.decode("latin-1")
    if isinstance(v, str):
        return v.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")
    return repr(v)


def main(argv):
    if len(argv) < 2:
        sys.stderr.write("usage: sink_cli.py HOST [OPTIONS-JSON]\n")
        return 2
    opts = json.loads(argv[2]) if len(argv) > 2 else {}
    sink = SinkMX(argv[1], 0, **opts)
    env = {"sink": sink, "ssl": ssl, "time": time}
    out = sys.stdout
    out.write("READY %d\n" % sink.port)
    out.flush()
    try:
        for line in sys.stdin:
            line = line.rstrip("\n")
            cmd, _, arg = line.partition(" ")
            try:
                if cmd == "exec":
                    exec(arg, env)
                    out.write("OK\n")
                elif cmd == "eval":
                    out.write("OK %s\n" % _text(eval(arg, env)))
                elif cmd == "quit":
                    out.write("OK\n")
                    out.flush()
                    break
                else:
                    out.write("ERR unknown request %r\n" % cmd)
            except Exception as e:  # the C side reports it
                out.write("ERR %s\n" % _text("%s: %s" % (type(e).__name__, e)))
            out.flush()
    finally:
        sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
