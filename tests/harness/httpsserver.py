"""httpsserver.py - a real HTTPS server on loopback for tests (Python's ssl
and http.server): MTA-STS policies for relayd to fetch, and the target of
its HTTPS POSTs.

    srv = HTTPSServer("127.0.0.61", 443, cert_file, key_file)   # port 0: a free one
    srv.start()
    srv.route("mta-sts.example.test", "/.well-known/mta-sts.txt",
              body="version: STSv1\\n...", ctype="text/plain")
    srv.route(None, "/slow", body="x", delay=5)                 # any Host
    srv.route(None, "/big", body="x" * 70000, length=False)     # no Content-Length
    ... relayd fetches https://mta-sts.example.test/... ...
    srv.count("mta-sts.example.test", "/.well-known/mta-sts.txt")
    srv.requests        # [(method, host, path, headers dict, body bytes), ...]
    srv.max_inflight    # the most requests received and not yet answered at once
                        # (delay included; a request leaves the count as its
                        # answer starts)
    srv.stop()

A route answers with status (200), the Content-Type ctype, the body, after
delay seconds; with length=False the body goes without Content-Length and
the connection closes after it.  location= adds a Location header (for 3xx).
Unrouted paths get 404.  Every request is logged (also those for unrouted
paths), with the Host header's name (port dropped, lower case).  A request
with a body (POST) is answered by its route like a GET.
"""

import http.server
import os
import ssl
import threading
import time

__all__ = ["HTTPSServer"]


def fixed_port_ip():
    """A loopback address of this process's own, for a server on a fixed port
    (443: MTA-STS policies, RFC 8461 3.3): two test runs on one machine (a CI
    run beside contrib/fresh-check.sh, whose root shares the network) do not
    bind each other's address."""
    pid = os.getpid()
    return "127.%d.%d.%d" % (84 + ((pid >> 16) & 63), (pid >> 8) & 255, 1 + pid % 254)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _serve(self):
        srv = self.server.owner
        with srv.lock:
            srv.inflight += 1
            srv.max_inflight = max(srv.max_inflight, srv.inflight)
        self._counted = True
        try:
            self._answer(srv)
        finally:
            self._answered(srv)

    def _answered(self, srv):
        """The request leaves max_inflight's count: before its answer goes
        out, so that a client's next request, sent once it has the answer,
        never finds it still counted (a 9th seen with 8 at most in flight)."""
        if self._counted:
            self._counted = False
            with srv.lock:
                srv.inflight -= 1

    def _answer(self, srv):
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n > 0 else b""
        with srv.lock:
            srv.requests.append((self.command, host, self.path, dict(self.headers.items()), body))
            r = srv.routes.get((host, self.path)) or srv.routes.get((None, self.path))
        if r is None:
            r = {"status": 404, "body": b"not found\n", "ctype": "text/plain", "delay": 0,
                 "length": True, "location": None}
        if r["delay"]:
            if srv.stopping.wait(r["delay"]):
                return
        self._answered(srv)
        try:
            self.send_response(r["status"])
            if r["ctype"] is not None:
                self.send_header("Content-Type", r["ctype"])
            if r["location"] is not None:
                self.send_header("Location", r["location"])
            if r["length"]:
                self.send_header("Content-Length", str(len(r["body"])))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(r["body"])
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True

    do_GET = _serve
    do_POST = _serve


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, ctx, owner):
        self.ctx = ctx
        self.owner = owner
        super().__init__(addr, _Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.settimeout(10)
        try:
            return self.ctx.wrap_socket(sock, server_side=True), addr
        except (ssl.SSLError, OSError):
            sock.close()
            raise OSError("TLS handshake failed")

    def handle_error(self, request, client_address):
        pass


class HTTPSServer:
    def __init__(self, host, port, cert_file, key_file):
        self.host = host
        self.lock = threading.Lock()
        self.routes = {}
        self.requests = []
        self.inflight = self.max_inflight = 0
        self.stopping = threading.Event()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_file, key_file)
        self._srv = _Server((host, port), ctx, self)
        self.port = self._srv.server_address[1]
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.stopping.set()
        self._srv.shutdown()
        self._srv.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def route(self, host, path, body="", status=200, ctype="text/plain", delay=0, length=True,
              location=None):
        if isinstance(body, str):
            body = body.encode()
        with self.lock:
            self.routes[(host.lower() if host else None, path)] = {
                "status": status, "body": body, "ctype": ctype, "delay": delay,
                "length": length, "location": location}

    def unroute(self, host, path):
        with self.lock:
            self.routes.pop((host.lower() if host else None, path), None)

    def count(self, host=None, path=None):
        with self.lock:
            return sum(1 for r in self.requests
                       if (host is None or r[1] == host.lower()) and (path is None or r[2] == path))

    def wait_for_request(self, host=None, path=None, n=1, timeout=10):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.count(host, path) >= n:
                return True
            time.sleep(0.02)
        return False
