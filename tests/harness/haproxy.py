"""haproxy.py - a real HAProxy (Debian's `haproxy`) in front of relayd, for
the tests of listeners marked { proxy = true; } (the PROXY protocol).

    from haproxy import HAProxy
    hp = HAProxy([{"name": "v2", "servers": [("127.0.0.1", relay_port)],
                   "send_proxy": 2, "source": "127.0.77.1"}], host="127.0.77.1")
    ... connect to (hp.host, hp.ports["v2"]) ...
    hp.stop()

Each frontend is a dict: name; servers, a list of (host, port) (several:
`balance roundrobin`); send_proxy 1 (send-proxy), 2 (send-proxy-v2) or None;
source, the address HAProxy connects from (None: the kernel's choice);
server_options, more words for each server line (e.g. "check inter 1s").  Every
frontend listens on host at a free port (ports[name]) in `mode tcp`, so TLS
(465, or after STARTTLS) passes through untouched.  haproxy runs in the
foreground (-db) until stop(); config_text is the configuration it runs
(for the README), output() what it printed.
"""

import os
import shutil
import subprocess
import tempfile
import time

from relay import _listening, free_port

__all__ = ["HAProxy", "haproxy_config"]

DEFAULTS = """\
global
    maxconn 200

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
"""


def haproxy_config(frontends, host, ports):
    """The configuration text for frontends (see the module docstring)."""
    out = [DEFAULTS]
    for fe in frontends:
        name = fe["name"]
        out.append("frontend %s\n    bind %s:%d\n    default_backend %s\n"
                   % (name, host, ports[name], name))
        out.append("backend %s\n" % name)
        if len(fe["servers"]) > 1:
            out.append("    balance roundrobin\n")
        opts = {1: " send-proxy", 2: " send-proxy-v2", None: ""}[fe.get("send_proxy")]
        if fe.get("source"):
            opts += " source %s" % fe["source"]
        if fe.get("server_options"):
            opts += " " + fe["server_options"]
        for i, (shost, sport) in enumerate(fe["servers"]):
            out.append("    server %s%d %s:%d%s\n" % (name, i, shost, sport, opts))
        out.append("\n")
    return "".join(out)


class HAProxy:

    def __init__(self, frontends, host="127.0.0.1", timeout=10):
        self.host = host
        self.dir = tempfile.mkdtemp(prefix="relayd-haproxy-")
        self.ports = {}
        for fe in frontends:
            self.ports[fe["name"]] = free_port((host,), exclude=set(self.ports.values()))
        self.config_text = haproxy_config(frontends, host, self.ports)
        self.cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(self.cfg, "w") as f:
            f.write(self.config_text)
        self.log_path = os.path.join(self.dir, "haproxy.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", self.cfg],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not all(_listening(host, p) for p in self.ports.values()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop(keep=True)
                raise RuntimeError("haproxy did not start (%s):\n%s"
                                   % (self.dir, self.output()))
            time.sleep(0.02)

    def output(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, keep=False):
        """Stop haproxy (SIGTERM, then SIGKILL); remove its directory unless
        keep or RELAYD_KEEP_TMP=1."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
        if not keep and not os.environ.get("RELAYD_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)
