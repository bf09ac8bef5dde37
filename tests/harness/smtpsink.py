"""smtpsink.py - a scriptable SMTP server that plays a destination mail exchanger.

relayd delivers to these sinks over real sockets on loopback: each sink listens
on its own address (127.0.0.2, 127.0.0.3, ... are distinct MX hosts) and all of
them on the same port, router.smtp_port.

    sink = SinkMX("127.0.0.2", port)          # listening and serving at once
    sink.script(rcpt={"bad@example.net": "550 5.1.1 no such user"},
                eod=["451 4.3.0 try later", "250 2.0.0 ok"])
    ... relayd delivers ...
    [msg] = sink.wait_for_messages(1, timeout=10)
    assert msg.rcpts == [("good@example.net", {})] and b"Subject:" in msg.data
    sink.down()        # connections refused from now on (listener closed)
    sink.up()          # listening again on the same address and port
    sink.stop()        # also: with SinkMX(...) as sink: ...

Constructor options (all keywords but host and port):
  ehlo_features  EHLO keywords after the greeting line (default DEFAULT_FEATURES)
  starttls       (certfile, keyfile) or a certfile holding both: advertise
                 STARTTLS and upgrade with the ssl module
  auth           {user: password}: advertise "AUTH PLAIN LOGIN", check credentials,
                 remember the user (auth_required=True: MAIL needs AUTH first)
  hang_greeting  accept connections but never greet (the same as greeting="HANG")
  nodelay        TCP_NODELAY on accepted connections: pipelined replies are not
                 held back by Nagle's algorithm (tests that send thousands of messages)
  hostname       the name in the default greeting/EHLO reply ("sink.<host>")
  start          listen at once (default True); else call up()

Scripted replies: sink.script(greeting=, ehlo=, helo=, mail=, rcpt=, data=,
eod=, rset=, quit=, starttls=, bdat=) changes the given ones only
(reset_script() restores all defaults).  Each value is one of
  * a reply string: "250 2.0.0 ok".  Several lines: "250-a\\n250 b", or
    "250 a\\n250 b" (the sink makes the continuation dashes itself).  Sent as
    UTF-8; U+DC80..U+DCFF go out as the raw bytes 0x80..0xff (surrogateescape),
    so a reply can carry bytes that are not UTF-8;
  * a list of those, consumed one per use (per connection for greeting, per
    command for the others: a transaction has one MAIL, one DATA, one end of
    data); the last one stays once the others are used up:
    eod=["451 4.3.0 try later", "250 ok"] = first attempt temporary, then success;
  * a callable fn(arg) -> reply (arg: the address for mail/rcpt, the Message for
    eod, the argument text otherwise);
  * "HANG": say nothing more, keep the connection open (timeouts);
  * "DROP": close the connection at once, without a reply.
  A 421 reply closes the connection after it is sent.  A 5xx greeting (554)
  answers "503 5.5.1" to everything but QUIT.
rcpt= may also be a dict {address (case-insensitive) | "@domain" | "*": value},
each value as above (lists consumed per RCPT of that key); addresses not
matched get the default reply ("250 2.1.5 Ok").  ehlo=None means the normal
EHLO reply made from ehlo_features; ehlo="502 ..." makes the client fall back
to HELO.

Recorded (lists are appended to under a lock; read them at will):
  connections   number of accepted TCP connections
  max_concurrent  the most connections open at the same time (a connection
                counts until the sink has seen it close)
  messages      Messages whose end of data got a 2xx reply (delivered)
  transactions  every Message that reached the end of data, whatever the reply
  sessions      a Session per connection: .peer .helo .tls .auth_user
                .commands (lines received) .replies (lines sent) .closed
  commands      every command line received, all connections: [(conn_no, line)]
  auth_attempts [(user, ok)]
A Message has .mail_from (str, "" for <>), .mail_params (dict: keyword upper-cased
-> value str, or True when it has no value: {"SIZE": "123", "BODY": "8BITMIME",
"RET": "HDRS", "ENVID": "x", "SMTPUTF8": True}), .rcpts ([(addr, params)] for
ACCEPTED recipients only), .rejected_rcpts ([(addr, params, reply)]), .data
(bytes, dot-unstuffed, CRLF line ends as received, terminating "." line
excluded), .tls, .auth_user, .helo, .reply (the end-of-data reply sent),
.conn (connection number, from 1), .peer.

Protocol: EHLO/HELO, STARTTLS, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA, BDAT (when
"CHUNKING" is in ehlo_features), RSET, NOOP, VRFY (252), QUIT; PIPELINING is
just reading commands as they come and replying in order; many transactions per
connection.  Bad sequences get 503, unknown commands 500.  Nothing is rejected
by default.
"""

import base64
import binascii
import re
import socket
import ssl
import threading
import time

__all__ = ["SinkMX", "Message", "Session", "DEFAULT_FEATURES"]

DEFAULT_FEATURES = ["PIPELINING", "SIZE 10240000", "8BITMIME", "ENHANCEDSTATUSCODES",
                    "DSN", "SMTPUTF8"]

DEFAULT_REPLIES = {
    "greeting": None,      # "220 <hostname> ESMTP sink"
    "ehlo": None,          # made from ehlo_features
    "helo": None,          # "250 <hostname>"
    "starttls": "220 2.0.0 Ready to start TLS",
    "mail": "250 2.1.0 Ok",
    "rcpt": "250 2.1.5 Ok",
    "data": "354 End data with <CR><LF>.<CR><LF>",
    "eod": None,           # "250 2.0.0 Ok: queued as SINK<n>"
    "bdat": "250 2.0.0 Ok: {size} octets received",
    "rset": "250 2.0.0 Ok",
    "quit": "221 2.0.0 Bye",
}

MAX_LINE = 1 << 20


class _Closed(Exception):
    """The connection is gone (peer closed, DROP, or the sink stopped)."""


class Message:
    """One mail transaction as the sink saw it (see the module docstring)."""

    def __init__(self, session):
        self.mail_from = None
        self.mail_params = {}
        self.rcpts = []
        self.rejected_rcpts = []
        self.data = None
        self.tls = session.tls
        self.auth_user = session.auth_user
        self.helo = session.helo
        self.conn = session.conn_no
        self.peer = session.peer
        self.reply = None
        self.received_at = None

    @property
    def rcpt_addrs(self):
        """Just the accepted recipient addresses."""
        return [a for a, _ in self.rcpts]

    def header(self, name):
        """The first header field `name` (case-insensitive) of data, unfolded, or None."""
        if self.data is None:
            return None
        head = self.data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        head = re.sub(r"\r?\n[ \t]+", " ", head)
        for line in head.splitlines():
            k, sep, v = line.partition(":")
            if sep and k.strip().lower() == name.lower():
                return v.strip()
        return None

    def __repr__(self):
        return "<Message from=%r rcpts=%r params=%r size=%s tls=%s reply=%r>" % (
            self.mail_from, self.rcpt_addrs, self.mail_params,
            None if self.data is None else len(self.data), self.tls, self.reply)


class Session:
    """One connection as the sink saw it."""

    def __init__(self, conn_no, peer):
        self.conn_no = conn_no
        self.peer = peer
        self.helo = None
        self.esmtp = False
        self.tls = False
        self.auth_user = None
        self.commands = []
        self.replies = []
        self.closed = False

    def __repr__(self):
        return "<Session #%d peer=%r helo=%r tls=%s auth=%r commands=%r>" % (
            self.conn_no, self.peer, self.helo, self.tls, self.auth_user, self.commands)


class _Reply:
    """A scripted reply: a constant, a list consumed one per use, or a callable."""

    def __init__(self, value):
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError("empty reply list")
            self.items = list(value)
        else:
            self.items = [value]
        self.lock = threading.Lock()

    def next(self, arg=None):
        with self.lock:
            v = self.items.pop(0) if len(self.items) > 1 else self.items[0]
        if callable(v):
            v = v(arg)
        return v


def _parse_params(text):
    """"SIZE=12 BODY=8BITMIME SMTPUTF8" -> {"SIZE": "12", "BODY": "8BITMIME", "SMTPUTF8": True}."""
    params = {}
    for tok in text.split():
        k, eq, v = tok.partition("=")
        params[k.upper()] = v if eq else True
    return params


def _parse_path(arg, keyword):
    """"FROM:<a@b> SIZE=1" -> ("a@b", {"SIZE": "1"}); None if it does not parse."""
    m = re.match(r"(?i)\s*" + keyword + r"\s*:\s*", arg)
    if not m:
        return None
    rest = arg[m.end():]
    if rest.startswith("<"):
        # find the closing '>' outside a quoted local part
        i, q = 1, False
        while i < len(rest):
            c = rest[i]
            if c == "\\" and q:
                i += 2
                continue
            if c == '"':
                q = not q
            elif c == ">" and not q:
                break
            i += 1
        else:
            return None
        addr = rest[1:i]
        params = rest[i + 1:]
        if ":" in addr and addr.startswith("@"):      # source route: @a,@b:user@d
            addr = addr.split(":", 1)[1]
    else:
        parts = rest.split(None, 1)
        if not parts:
            return None
        addr = parts[0]
        params = parts[1] if len(parts) > 1 else ""
    return addr, _parse_params(params)


class SinkMX:
    """A threaded SMTP server on (host, port) playing a destination MX."""

    def __init__(self, host="127.0.0.2", port=0, ehlo_features=None, starttls=None,
                 auth=None, auth_required=False, hang_greeting=False, hostname=None,
                 start=True, timeout=60, nodelay=False):
        self.host = host
        self.port = port
        self.hostname = hostname or ("sink-%s" % host.replace(":", "-"))
        self.ehlo_features = list(DEFAULT_FEATURES if ehlo_features is None else ehlo_features)
        self.auth = dict(auth) if auth else None
        self.auth_required = auth_required
        self.timeout = timeout
        self.nodelay = nodelay
        self._tls_ctx = None
        if starttls:
            if isinstance(starttls, (list, tuple)):
                cert, key = starttls
            else:
                cert, key = starttls, None
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self._tls_ctx = ctx
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._listener = None
        self._accept_thread = None
        self._conns = {}                # socket -> thread
        self._stopping = False
        self.connections = 0
        self.max_concurrent = 0
        self.messages = []
        self.transactions = []
        self.sessions = []
        self.commands = []
        self.auth_attempts = []
        self._replies = {}
        self.reset_script()
        if hang_greeting:
            self.script(greeting="HANG")
        if start:
            self.up()

    # -- scripting ----------------------------------------------------------

    def script(self, **replies):
        """Set scripted replies (see the module docstring); returns self."""
        with self._lock:
            for k, v in replies.items():
                if k not in DEFAULT_REPLIES:
                    raise TypeError("unknown reply %r (one of %s)" % (k, ", ".join(DEFAULT_REPLIES)))
                if k == "rcpt" and isinstance(v, dict):
                    self._replies["rcpt"] = {a.lower(): _Reply(r) for a, r in v.items()}
                elif v is None:
                    self._replies[k] = None
                else:
                    self._replies[k] = _Reply(v)
        return self

    def reset_script(self):
        """Back to the default replies."""
        with self._lock:
            self._replies = {k: (None if v is None else _Reply(v))
                             for k, v in DEFAULT_REPLIES.items()}

    def reset(self):
        """Forget what was recorded (connections, messages, sessions, commands)."""
        with self._lock:
            self.connections = 0
            self.max_concurrent = len(self._conns)
            self.messages.clear()
            self.transactions.clear()
            self.sessions.clear()
            self.commands.clear()
            self.auth_attempts.clear()

    def _reply_for(self, kind, arg=None, default=None):
        with self._lock:
            r = self._replies.get(kind)
        if r is None:
            return default
        v = r.next(arg)
        return default if v is None else v

    def _rcpt_reply(self, addr):
        with self._lock:
            r = self._replies.get("rcpt")
        default = DEFAULT_REPLIES["rcpt"]
        if isinstance(r, dict):
            a = addr.lower()
            dom = "@" + a.rsplit("@", 1)[1] if "@" in a else None
            for key in (a, dom, "*"):
                if key is not None and key in r:
                    v = r[key].next(addr)
                    return default if v is None else v
            return default
        if r is None:
            return default
        v = r.next(addr)
        return default if v is None else v

    # -- lifecycle ----------------------------------------------------------

    def up(self):
        """Listen (again) on host:port.  With port 0 the first up() picks one."""
        with self._lock:
            if self._listener is not None:
                return self
            fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((self.host, self.port))
                s.listen(128)
            except OSError:
                s.close()
                raise
            self.port = s.getsockname()[1]
            self._listener = s
            self._stopping = False
            t = threading.Thread(target=self._accept_loop, args=(s,), daemon=True,
                                 name="sink-accept-%s" % self.host)
            self._accept_thread = t
            t.start()
        return self

    def down(self, drop_connections=True):
        """Stop listening: new connections are refused.  By default the open
        connections are closed too (a host that went away keeps no sessions)."""
        with self._lock:
            s, self._listener = self._listener, None
            t, self._accept_thread = self._accept_thread, None
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        if t is not None:
            t.join(2)
        if drop_connections:
            self.drop_connections()
        return self

    def drop_connections(self):
        """Close every open connection now (the peer sees a reset or EOF)."""
        with self._lock:
            conns = list(self._conns.items())
        for c, _ in conns:
            c.abort()
        for _, t in conns:
            t.join(2)

    def stop(self):
        """down() and forget: for the end of a test."""
        self._stopping = True
        self.down(drop_connections=True)

    close = stop

    @property
    def listening(self):
        return self._listener is not None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    # -- waiting ------------------------------------------------------------

    def _wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("sink %s: %s not reached within %ss; sessions: %r"
                                       % (self.address, what, timeout, self.sessions[-5:]))
                self._cond.wait(min(left, 0.5))

    def wait_for_messages(self, n=1, timeout=10):
        """Wait until at least n messages were accepted; returns a copy of
        messages (all of them, which may be more than n)."""
        self._wait(lambda: len(self.messages) >= n, timeout, "%d message(s)" % n)
        with self._lock:
            return list(self.messages)

    def wait_for_transactions(self, n=1, timeout=10):
        """Like wait_for_messages, counting rejected transactions too."""
        self._wait(lambda: len(self.transactions) >= n, timeout, "%d transaction(s)" % n)
        with self._lock:
            return list(self.transactions)

    def wait_for_connections(self, n=1, timeout=10):
        """Wait until at least n TCP connections were accepted."""
        self._wait(lambda: self.connections >= n, timeout, "%d connection(s)" % n)
        return self.connections

    def wait_for_command(self, prefix, timeout=10, n=1):
        """Wait until n command lines starting with prefix (case-insensitive) came."""
        p = prefix.upper()
        self._wait(lambda: sum(1 for _, c in self.commands if c.upper().startswith(p)) >= n,
                   timeout, "%d %r command(s)" % (n, prefix))

    # -- serving ------------------------------------------------------------

    def _accept_loop(self, lsock):
        while True:
            try:
                conn, peer = lsock.accept()
            except OSError:
                return
            with self._cond:
                if self._listener is not lsock:
                    conn.close()
                    return
                self.connections += 1
                sess = Session(self.connections, peer)
                self.sessions.append(sess)
                c = _Conn(self, conn, sess)
                t = threading.Thread(target=self._serve, args=(c,), daemon=True,
                                     name="sink-%s-%d" % (self.host, sess.conn_no))
                self._conns[c] = t
                self.max_concurrent = max(self.max_concurrent, len(self._conns))
                # started before the lock is let go: drop_connections() and
                # down() join every thread of _conns, and joining one not
                # started yet raises RuntimeError (a failure seen under TSan)
                t.start()
                self._cond.notify_all()

    def _serve(self, c):
        try:
            c.run()
        except (_Closed, OSError, ssl.SSLError, ValueError):
            pass
        finally:
            c.sess.closed = True
            with self._cond:
                self._conns.pop(c, None)
                self._cond.notify_all()
            c.close()

    def _record(self, msg, accepted):
        with self._cond:
            self.transactions.append(msg)
            if accepted:
                self.messages.append(msg)
            self._cond.notify_all()


class _Conn:
    """One SMTP conversation (runs in its own thread)."""

    def __init__(self, sink, sock, sess):
        self.sink = sink
        self.sock = sock
        self.raw_sock = sock
        self.sess = sess
        self.buf = b""
        self.txn = None
        self.rejecting = False     # after a 5xx greeting
        sock.settimeout(sink.timeout)
        if sink.nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- I/O --

    def abort(self):
        """Called from another thread: wake the conversation and end it."""
        for s in (self.raw_sock, self.sock):
            try:
                # the plain socket method, also on an SSLSocket: wakes the
                # reader at the kernel level without touching the TLS state
                socket.socket.shutdown(s, socket.SHUT_RDWR)
            except (OSError, ValueError):
                pass

    def close(self):
        for s in (self.sock, self.raw_sock):
            try:
                s.close()
            except OSError:
                pass

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise _Closed()
        if not chunk:
            raise _Closed()
        self.buf += chunk

    def readline(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
                return line
            if len(self.buf) > MAX_LINE:
                line, self.buf = self.buf, b""
                return line
            self._fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def hang(self):
        """Say nothing; read and discard until the peer or the sink closes."""
        self.buf = b""
        while True:
            self._fill()
            self.buf = b""

    def send_reply(self, reply):
        """Send a reply (string, maybe multi-line).  Handles HANG / DROP / 421."""
        if reply == "HANG":
            self.hang()
        if reply == "DROP":
            raise _Closed()
        lines = [l for l in str(reply).replace("\r\n", "\n").split("\n") if l != ""]
        out = []
        for i, l in enumerate(lines):
            m = re.match(r"(\d{3})[ -]?(.*)", l, re.S)
            if m and len(lines) > 1:
                sep = " " if i == len(lines) - 1 else "-"
                l = m.group(1) + sep + m.group(2)
            out.append(l)
        data = "".join(l + "\r\n" for l in out).encode("utf-8", "surrogateescape")
        self.sess.replies.extend(out)
        self.sock.sendall(data)
        if out and out[-1].startswith("421"):
            raise _Closed()
        return out[-1][:3] if out else ""

    # -- the conversation --

    def run(self):
        sink, sess = self.sink, self.sess
        greet = sink._reply_for("greeting", None, "220 %s ESMTP sink" % sink.hostname)
        code = self.send_reply(greet)
        if code.startswith("5"):
            self.rejecting = True
        while True:
            raw = self.readline()
            line = raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
            sess.commands.append(line)
            with sink._lock:
                sink.commands.append((sess.conn_no, line))
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if self.rejecting and verb != "QUIT":
                self.send_reply("503 5.5.1 No service")
                continue
            handler = getattr(self, "do_" + verb, None) if verb.isalpha() else None
            if handler is None:
                self.send_reply("500 5.5.2 Error: command not recognized")
                continue
            handler(arg.strip())

    def do_EHLO(self, arg, esmtp=True):
        sink = self.sink
        if not arg:
            self.send_reply("501 5.5.4 Syntax: %s hostname" % ("EHLO" if esmtp else "HELO"))
            return
        if esmtp:
            feats = list(sink.ehlo_features)
            if sink._tls_ctx is not None and not self.sess.tls:
                feats.append("STARTTLS")
            if sink.auth is not None:
                feats.append("AUTH PLAIN LOGIN")
            default = "\n".join(["250 %s" % sink.hostname] + ["250 %s" % f for f in feats])
            reply = sink._reply_for("ehlo", arg, default)
        else:
            reply = sink._reply_for("helo", arg, "250 %s" % sink.hostname)
        code = self.send_reply(reply)
        if code.startswith("2"):
            self.sess.helo = arg
            self.sess.esmtp = esmtp
            self.txn = None

    def do_HELO(self, arg):
        self.do_EHLO(arg, esmtp=False)

    def do_STARTTLS(self, arg):
        sink = self.sink
        if sink._tls_ctx is None or self.sess.tls:
            self.send_reply("502 5.5.1 Error: command not implemented")
            return
        if arg:
            self.send_reply("501 5.5.4 Syntax: STARTTLS")
            return
        code = self.send_reply(sink._reply_for("starttls", arg, DEFAULT_REPLIES["starttls"]))
        if not code.startswith("2"):
            return
        self.buf = b""                      # RFC 3207: discard pipelined plaintext
        self.sock = sink._tls_ctx.wrap_socket(self.raw_sock, server_side=True)
        self.sess.tls = True
        self.sess.helo = None
        self.sess.auth_user = None
        self.txn = None

    def do_AUTH(self, arg):
        sink = self.sink
        if sink.auth is None:
            self.send_reply("502 5.5.1 Error: command not implemented")
            return
        if self.sess.auth_user is not None:
            self.send_reply("503 5.5.1 Error: already authenticated")
            return
        if self.txn is not None:
            self.send_reply("503 5.5.1 Error: MAIL transaction in progress")
            return
        parts = arg.split()
        if not parts:
            self.send_reply("501 5.5.4 Syntax: AUTH mechanism")
            return
        mech = parts[0].upper()
        initial = parts[1] if len(parts) > 1 else None

        def ask(challenge):
            self.send_reply("334 " + challenge)
            resp = self.readline().rstrip(b"\r\n").decode("ascii", "replace")
            self.sess.commands.append("<auth data>")
            if resp == "*":
                return None
            return resp

        try:
            if mech == "PLAIN":
                resp = initial if initial is not None else ask("")
                if resp is None:
                    self.send_reply("501 5.7.0 Authentication aborted")
                    return
                dec = base64.b64decode(resp, validate=True) if resp != "=" else b""
                fields = dec.split(b"\0")
                if len(fields) != 3:
                    raise ValueError("bad PLAIN")
                user, pw = fields[1].decode("utf-8"), fields[2].decode("utf-8")
            elif mech == "LOGIN":
                u = initial if initial is not None else ask("VXNlcm5hbWU6")
                if u is None:
                    self.send_reply("501 5.7.0 Authentication aborted")
                    return
                p = ask("UGFzc3dvcmQ6")
                if p is None:
                    self.send_reply("501 5.7.0 Authentication aborted")
                    return
                user = base64.b64decode(u, validate=True).decode("utf-8")
                pw = base64.b64decode(p, validate=True).decode("utf-8")
            else:
                self.send_reply("504 5.5.4 Unrecognized authentication type")
                return
        except (ValueError, binascii.Error, UnicodeError):
            self.send_reply("501 5.5.2 Cannot decode response")
            return
        ok = sink.auth.get(user) == pw
        with sink._lock:
            sink.auth_attempts.append((user, ok))
        if ok:
            self.sess.auth_user = user
            self.send_reply("235 2.7.0 Authentication successful")
        else:
            self.send_reply("535 5.7.8 Error: authentication failed")

    def do_MAIL(self, arg):
        sink = self.sink
        if self.sess.helo is None:
            self.send_reply("503 5.5.1 Error: send HELO/EHLO first")
            return
        if self.txn is not None:
            self.send_reply("503 5.5.1 Error: nested MAIL command")
            return
        if sink.auth_required and self.sess.auth_user is None:
            self.send_reply("530 5.7.0 Authentication required")
            return
        p = _parse_path(arg, "FROM")
        if p is None:
            self.send_reply("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        addr, params = p
        code = self.send_reply(sink._reply_for("mail", addr, DEFAULT_REPLIES["mail"]))
        if code.startswith("2"):
            t = Message(self.sess)
            t.mail_from = addr
            t.mail_params = params
            self.txn = t

    def do_RCPT(self, arg):
        if self.txn is None:
            self.send_reply("503 5.5.1 Error: need MAIL command")
            return
        p = _parse_path(arg, "TO")
        if p is None:
            self.send_reply("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        addr, params = p
        reply = self.sink._rcpt_reply(addr)
        if reply in ("HANG", "DROP"):
            self.send_reply(reply)
        code = str(reply)[:3]
        if code.startswith("2"):
            self.txn.rcpts.append((addr, params))
        else:
            self.txn.rejected_rcpts.append((addr, params, reply))
        self.send_reply(reply)

    def do_DATA(self, arg):
        sink = self.sink
        if self.txn is None:
            self.send_reply("503 5.5.1 Error: need MAIL command")
            return
        if not self.txn.rcpts:
            self.send_reply("554 5.5.1 Error: no valid recipients")
            return
        code = self.send_reply(sink._reply_for("data", arg, DEFAULT_REPLIES["data"]))
        if not code.startswith("3"):
            return
        out = []
        while True:
            line = self.readline()
            if line == b".\r\n":
                break
            if line.startswith(b"."):
                line = line[1:]
            out.append(line)
        self._finish(b"".join(out))

    def do_BDAT(self, arg):
        parts = arg.split()
        if not parts or not parts[0].isdigit() or len(parts) > 2 or \
                (len(parts) == 2 and parts[1].upper() != "LAST"):
            self.send_reply("501 5.5.4 Syntax: BDAT size [LAST]")
            return
        size = int(parts[0])
        chunk = self.read_exact(size)
        if self.txn is None or not self.txn.rcpts:
            self.send_reply("503 5.5.1 Error: need MAIL and RCPT")
            return
        self.txn.data = (self.txn.data or b"") + chunk
        if len(parts) == 2:
            data, self.txn.data = self.txn.data, None
            self._finish(data)
        else:
            r = self.sink._reply_for("bdat", arg, DEFAULT_REPLIES["bdat"])
            self.send_reply(r.replace("{size}", str(size)) if isinstance(r, str) else r)

    def _finish(self, data):
        sink = self.sink
        t, self.txn = self.txn, None
        t.data = data
        t.received_at = time.time()
        with sink._lock:
            n = len(sink.transactions) + 1
        reply = sink._reply_for("eod", t, "250 2.0.0 Ok: queued as SINK%d" % n)
        if reply in ("HANG", "DROP"):
            t.reply = reply
            sink._record(t, False)
            self.send_reply(reply)
        t.reply = reply
        sink._record(t, str(reply).startswith("2"))
        self.send_reply(reply)

    def do_RSET(self, arg):
        self.txn = None
        self.send_reply(self.sink._reply_for("rset", arg, DEFAULT_REPLIES["rset"]))

    def do_NOOP(self, arg):
        self.send_reply("250 2.0.0 Ok")

    def do_VRFY(self, arg):
        self.send_reply("252 2.0.0 Cannot VRFY user")

    def do_QUIT(self, arg):
        self.send_reply(self.sink._reply_for("quit", arg, DEFAULT_REPLIES["quit"]))
        raise _Closed()
