"""client.py - submission clients for the integration tests: the mail user's side.

    qid = submit(relay, "alice@example.org", ["bob@example.net"], msg)
    s = connect(relay, login=("alice", "alicepw"))      # authenticated smtplib.SMTP
    with raw_session(relay.host, relay.submit_port) as r:   # byte-level conversation
        assert r.greeting[0] == 220
        code, text = r.cmd("EHLO client.test")
        r.starttls()                                     # manual TLS wrap
        r.send(b"MAIL FROM:<a@b>\\r\\nRCPT TO:<c@d>\\r\\n")  # pipelined
        replies = [r.read_reply(), r.read_reply()]
    msg = make_message("alice@example.org", "bob@example.net", "Subject", "Body")

submit(relay, mail_from, rcpts, msg, user="alice", password="alicepw",
       port="starttls"|"tls", mail_options=(), rcpt_options=(), allow_refused=False)
    -> the queue id from "250 2.0.0 Ok: queued as <QID>".  Failures raise the
    smtplib exceptions (SMTPAuthenticationError, SMTPSenderRefused,
    SMTPRecipientsRefused (any refused recipient, unless allow_refused),
    SMTPDataError).  user=None: no AUTH.  rcpt_options: a sequence of strings for
    every recipient, or a dict {rcpt: [options]}.  Addresses are sent as given
    (no parseaddr rewriting); SMTPUTF8 in mail_options sends UTF-8 commands.
connect(relay, tls=False, starttls=True, login=None, timeout=30)
    -> smtplib.SMTP / SMTP_SSL after EHLO (and STARTTLS, and AUTH when login is
    (user, password)).  tls=True: the implicit-TLS port.
raw_session(host, port, tls=False, read_greeting=True, timeout=10) -> RawSession
    .greeting (code, text) | .send(bytes|str) | .cmd(line) -> (code, text) |
    .read_reply() -> (code, text) (text: the lines joined with "\\n") |
    .read_reply_lines() -> (code, [lines]) | .starttls(server_hostname=None) |
    .wait_closed(timeout) -> bool | .close()
    Raises EOFError when the server closes the connection.
make_message(from_, to, subject, body, extra_headers=None, date=True,
             message_id=True) -> str with CRLF line ends.
"""

import email.utils
import re
import smtplib
import socket
import ssl
import time

__all__ = ["submit", "connect", "raw_session", "RawSession", "make_message",
           "client_context", "QUEUED_RE"]

QUEUED_RE = re.compile(r"queued as (\S+)", re.I)


def client_context():
    """A TLS client context that does not check the certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _hostport(relay, tls):
    return relay.host, (relay.tls_port if tls else relay.submit_port)


def connect(relay, tls=False, starttls=True, login=None, timeout=30, source=None):
    """An smtplib session with relayd, after EHLO (and STARTTLS / AUTH);
    source: the client's own address (127.0.0.N), else the kernel's choice."""
    host, port = _hostport(relay, tls)
    src = (source, 0) if source is not None else None
    if tls:
        s = smtplib.SMTP_SSL(host, port, local_hostname="client.test", timeout=timeout,
                             context=client_context(), source_address=src)
    else:
        s = smtplib.SMTP(host, port, local_hostname="client.test", timeout=timeout,
                         source_address=src)
    try:
        s.ehlo()
        if not tls and starttls:
            s.starttls(context=client_context())
            s.ehlo()
        if login is not None:
            s.login(*login)
    except BaseException:
        try:
            s.close()
        except Exception:
            pass
        raise
    return s


def _opts(options):
    return "".join(" " + o for o in options)


def submit(relay, mail_from, rcpts, msg, user="alice", password="alicepw", port="starttls",
           mail_options=(), rcpt_options=(), allow_refused=False, timeout=30, source=None):
    """Submit one message; returns its queue id (see the module docstring)."""
    if isinstance(rcpts, str):
        rcpts = [rcpts]
    if port not in ("starttls", "tls"):
        raise ValueError("port must be 'starttls' or 'tls'")
    s = connect(relay, tls=(port == "tls"), starttls=True,
                login=None if user is None else (user, password), timeout=timeout,
                source=source)
    try:
        if any(o.upper() == "SMTPUTF8" for o in mail_options):
            s.command_encoding = "utf-8"
        code, resp = s.docmd("MAIL", "FROM:<%s>%s" % (mail_from, _opts(mail_options)))
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, resp, mail_from)
        refused = {}
        for r in rcpts:
            opts = rcpt_options.get(r, ()) if isinstance(rcpt_options, dict) else rcpt_options
            code, resp = s.docmd("RCPT", "TO:<%s>%s" % (r, _opts(opts)))
            if code not in (250, 251):
                refused[r] = (code, resp)
        if refused and (not allow_refused or len(refused) == len(rcpts)):
            s.rset()
            raise smtplib.SMTPRecipientsRefused(refused)
        if isinstance(msg, str):
            msg = msg.encode("utf-8")
        code, resp = s.data(msg)
        if code != 250:
            raise smtplib.SMTPDataError(code, resp)
        text = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else resp
        m = QUEUED_RE.search(text)
        if not m:
            raise smtplib.SMTPResponseException(code, "no queue id in %r" % text)
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            pass
        return m.group(1)
    finally:
        s.close()


class RawSession:
    """A socket-level SMTP conversation: send bytes, read (multi-line) replies."""

    def __init__(self, host, port, tls=False, read_greeting=True, timeout=10,
                 server_hostname=None):
        self.host, self.port = host, port
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.tls = False
        self.greeting = None
        self.transcript = []            # [(">" | "<", line)]
        if tls:
            self._wrap(server_hostname)
        if read_greeting:
            self.greeting = self.read_reply()

    def _wrap(self, server_hostname=None, context=None):
        ctx = context or client_context()
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)
        self.tls = True
        self.buf = b""

    def starttls(self, server_hostname=None, context=None, command=True):
        """Send STARTTLS (unless command=False), expect 220, wrap the socket.
        Returns the STARTTLS reply.  Leftover buffered bytes are an error (the
        server must not send anything between 220 and the handshake)."""
        reply = self.cmd("STARTTLS") if command else (220, "")
        if reply[0] != 220:
            return reply
        if self.buf:
            raise AssertionError("bytes after the STARTTLS reply: %r" % self.buf)
        self._wrap(server_hostname, context)
        return reply

    def send(self, data):
        """Send bytes (or a str, as UTF-8) exactly as given."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.transcript.append((">", data))
        self.sock.sendall(data)

    def _fill(self, timeout=None):
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        finally:
            if timeout is not None:
                self.sock.settimeout(self.timeout)
        if not chunk:
            raise EOFError("connection closed by %s:%s" % (self.host, self.port))
        self.buf += chunk

    def readline(self):
        """One line, without CRLF (str)."""
        while b"\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\n", 1)
        line = line.rstrip(b"\r").decode("utf-8", "replace")
        self.transcript.append(("<", line))
        return line

    def read_reply_lines(self):
        """(code, [text of each line])."""
        lines = []
        while True:
            line = self.readline()
            if len(line) < 3 or not line[:3].isdigit():
                raise ValueError("bad reply line %r" % line)
            lines.append(line[4:])
            if len(line) == 3 or line[3] != "-":
                return int(line[:3]), lines

    def read_reply(self):
        """(code, text) with the lines' texts joined by "\\n"."""
        code, lines = self.read_reply_lines()
        return code, "\n".join(lines)

    def cmd(self, line):
        """Send one command line (CRLF added) and read its reply."""
        if isinstance(line, bytes):
            line = line.decode("utf-8")
        self.send(line + "\r\n")
        return self.read_reply()

    def wait_closed(self, timeout=5):
        """True if the server closes the connection within timeout (anything
        it sends meanwhile is read and kept in the buffer)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                self._fill(timeout=left)
            except EOFError:
                return True
            except (socket.timeout, TimeoutError):
                return False
            except (ConnectionResetError, ssl.SSLError, OSError):
                return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def raw_session(host, port, tls=False, read_greeting=True, timeout=10, server_hostname=None):
    """A RawSession connected to host:port (tls=True: TLS from the first byte)."""
    return RawSession(host, port, tls=tls, read_greeting=read_greeting, timeout=timeout,
                      server_hostname=server_hostname)


def make_message(from_, to, subject, body, extra_headers=None, date=True, message_id=True):
    """An RFC 5322 message with CRLF line ends (str).  to: str or list;
    extra_headers: dict or [(name, value)]; body lines may use \\n or \\r\\n."""
    if not isinstance(to, str):
        to = ", ".join(to)
    headers = [("From", from_), ("To", to), ("Subject", subject)]
    if date:
        headers.append(("Date", email.utils.formatdate(localtime=False)))
    if message_id:
        headers.append(("Message-ID", email.utils.make_msgid(domain="client.test")))
    if extra_headers:
        items = extra_headers.items() if isinstance(extra_headers, dict) else extra_headers
        headers += list(items)
    head = "".join("%s: %s\r\n" % (k, v) for k, v in headers)
    body = body.replace("\r\n", "\n").replace("\n", "\r\n")
    if body and not body.endswith("\r\n"):
        body += "\r\n"
    return head + "\r\n" + body
