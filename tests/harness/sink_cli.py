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
`sink` is the SinkMX (a WireSinkMX: it also records how the bytes came, see
below); `ssl` and `time` are imported.  A str or bytes value is
printed as text with backslash, CR and LF escaped as \\\\, \\r, \\n (bytes
decoded as Latin-1); any other value as repr().  EOF on stdin stops the sink.

WireSinkMX adds two records to SinkMX's (smtpsink.py is left as it is):
    sink.reads    every recv() of a conversation: [(conn_no, bytes)]
    sink.pending  every reply, with what had arrived from the client and was
                  not yet read as a command when it was sent:
                  [(conn_no, reply, bytes)] (over TLS: the sink's own buffer
                  only; in plaintext also what waits in the socket)
and one call for a reply script:
    sink.wait_unread(text, timeout)  in a reply function: wait until text has
                  arrived on this connection and is not yet read as a command
                  (True), or timeout seconds pass (False)
So "the client sent RCPT and DATA before the MAIL reply" (PIPELINING) reads
    sink.script(mail=lambda a: sink.wait_unread(b"DATA\\r\\n", 10) and "250 2.1.0 sender ok")
    [p for _, r, p in sink.pending if r.startswith("250 2.1.0 sender ok")]
"""

import json
import os
import select
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from smtpsink import SinkMX  # noqa: E402


def _waiting(c):
    """Bytes the client sent that the conversation c has not read yet."""
    data = bytes(c.buf)
    if c.sock is not c.raw_sock:
        return data                 # TLS: a peek would see records, not text
    try:
        readable, _, _ = select.select([c.raw_sock], [], [], 0)
        if readable:
            data += c.raw_sock.recv(65536, socket.MSG_PEEK)
    except (OSError, ValueError):
        pass
    return data


class WireSinkMX(SinkMX):
    """A SinkMX that also records reads and what was waiting at each reply."""

    def __init__(self, *args, **kwargs):
        self.reads = []
        self.pending = []
        self._here = threading.local()      # the connection this thread serves
        super().__init__(*args, **kwargs)

    def wait_unread(self, text, timeout):
        """From a reply function: wait until text is among the bytes the client
        sent on this connection that are not yet read as a command."""
        deadline = time.monotonic() + timeout
        while text not in _waiting(self._here.conn):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def _serve(self, c):
        fill, send = c._fill, c.send_reply
        self._here.conn = c

        def recording_fill():
            n = len(c.buf)
            fill()
            with self._lock:
                self.reads.append((c.sess.conn_no, bytes(c.buf[n:])))

        def recording_send(reply):
            if reply not in ("HANG", "DROP"):
                waiting = _waiting(c)
                with self._lock:
                    self.pending.append((c.sess.conn_no, str(reply), waiting))
            return send(reply)

        c._fill = recording_fill
        c.send_reply = recording_send
        super()._serve(c)

    def reset(self):
        with self._lock:
            self.reads.clear()
            self.pending.clear()
        super().reset()


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
    sink = WireSinkMX(argv[1], 0, **opts)
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
