"""relay.py - the fixture that runs the real relayd for integration tests.

A Relay owns a temporary directory holding everything relayd needs: a TLS
certificate (self-signed, made with the openssl CLI, one per test process), a
real sasldb made with saslpasswd2, a senders map, a queue directory, and a
libconfig configuration file pointing at free loopback ports, at a loopback
DNS server (dnsserver.DNSServer) and at the port the sink MXes listen on.

    import unittest
    from relay import Relay
    from client import submit, make_message

    class T(unittest.TestCase):
        def test_delivers(self):
            relay = Relay.for_test(self)            # cleanup + log tail on failure
            relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
            sink = relay.sink("127.0.0.2")           # SinkMX on relay.smtp_port
            relay.start()
            qid = submit(relay, "alice@example.org", ["bob@example.net"],
                         make_message("alice@example.org", "bob@example.net", "hi", "body"))
            [msg] = sink.wait_for_messages(1)
            relay.wait_for_log("delivered", qid=qid)

    or: with Relay(submit={"max_recipients": 3}) as relay: ...   (starts relayd)

Relay(tmpdir=None, dns=None, smtp_port=None, users=None, senders=None,
      sink_hosts=..., env=None, **overrides)
  dns        None: the Relay makes and owns a started DNSServer (relay.dns);
             a DNSServer, or an int port of one on 127.0.0.1
  smtp_port  router.smtp_port; None: a port free on every sink_hosts address
             (127.0.0.2 .. 127.0.0.9)
  users      {name: password}, default {"alice": "alicepw", "bob": "bobpw"}
  senders    the senders map text (default SENDERS)
  env        extra environment variables for relayd ({name: value}; a value of
             None removes the variable); kept in relay.env, which start() reads,
             so change it before a restart (e.g. RELAYD_TEST_* knobs)
  overrides  a nested dict merged into the configuration (dicts merge, anything
             else replaces, None deletes the key), e.g.
             Relay(submit={"max_recipients": 3},
                   router={"routes": [{"domain": "x.test", "hosts": ["127.0.0.5:2525"]}]})

The queue directory is made (empty, mode 0700) before relayd starts.

Attributes: tmpdir, config (the dict), config_path, queue_dir, control_socket,
log_path, stdout_path, stderr_path, host ("127.0.0.1"), submit_port (STARTTLS),
tls_port (implicit TLS), smtp_port, dns, cert, key, sasldb, senders_path,
realm, users, env, proc, pid.

Methods: write_config(), update_config(**overrides), start(wait=True, timeout=10),
stop(timeout=10) -> exit code, kill9(), restart(), sighup(), running,
check_config(path=None) -> (returncode, stderr), relayctl(*args, check=False),
add_user(name, pw), set_senders(text), sink(host="127.0.0.2", **kw) -> SinkMX,
log_lines(), log_mark(), wait_for_log(event, timeout=10, since=0, **match),
count_log(event, since=0, **match), log_tail(n), stderr_tail(n),
sanitizer_report(), close() (raises RelayError when relayd's stderr holds a
ThreadSanitizer report).

Module functions: free_port(hosts=("127.0.0.1",)), parse_log_line(line),
to_libconfig(dict), test_cert(), make_cert(dir, cn, dns, ips, key_type, days), TestCA,
relayd_bin(), relayctl_bin(), wait_past(rfc3339) (until a time relayd logged
has passed), relayd_has_test_hooks(), and the decorator
needs_test_hooks for tests that set RELAYD_TEST_* (only a relayd built with
the CMake option RELAY_TEST_HOOKS reads them).

relayd runs as TEST_USER (config key `user`, default "nobody", or
$RELAYD_TEST_USER): started as root it switches to that account after
start-up, so the fixture makes its files reachable by it (share_with_user():
temporary directories searchable, keys group-readable by the user's group,
tmpdir the user's own so it can remove its control socket and make logs).

Environment: RELAYD_BIN, RELAYCTL_BIN (default <repo>/build/relayd and
<repo>/build/relayctl); RELAYD_KEEP_TMP=1 keeps every temporary directory;
RELAYD_TEST_VERBOSE=1 prints the log tail after every test, not only failed ones.
RELAYD_TEST_DELIVER_THREAD=1 runs every relayd with deliver.thread = true (the
delivery thread under the whole suite).
RELAYD_TEST_SUBMIT_WORKERS=N runs every relayd with submit.workers = N (the
sessions on N event-loop threads under the whole suite).
"""

import atexit
import errno
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from dnsserver import DNSServer
from smtpsink import SinkMX

__all__ = ["Relay", "free_port", "parse_log_line", "to_libconfig", "test_cert",
           "make_cert", "TestCA", "relayd_bin", "relayctl_bin", "RelayError",
           "DEFAULT_USERS", "SENDERS", "REALM", "TEST_USER", "share_with_user"]

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

REALM = "relay.test"
DEFAULT_USERS = {"alice": "alicepw", "bob": "bobpw"}
SENDERS = "alice: alice@example.org, @alice.test\nbob: bob@example.org\n"
SINK_HOSTS = tuple("127.0.0.%d" % i for i in range(2, 10))
TEST_USER = os.environ.get("RELAYD_TEST_USER", "nobody")
# A ThreadSanitizer build (TSAN_OPTIONS set, as contrib/test.sh runs it) is
# 5-15 times slower: the fixture's own waits (start, stop, wait_for_log) are
# three times as long there.
SLOW = 3 if os.environ.get("TSAN_OPTIONS") else 1


class RelayError(Exception):
    """relayd did not do what the fixture needed (start, stop, a log event)."""


def relayd_bin():
    return os.environ.get("RELAYD_BIN") or os.path.join(REPO, "build", "relayd")


def relayctl_bin():
    return os.environ.get("RELAYCTL_BIN") or os.path.join(REPO, "build", "relayctl")


def wait_past(stamp):
    """Wait until the wall clock is past a time relayd logged (RFC 3339 with
    milliseconds, e.g. a host's down `until`): relayd's own deadline, not a
    guessed delay."""
    import datetime
    t = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    while time.time() <= t:
        time.sleep(min(0.05, t - time.time() + 0.001))


def relayd_has_test_hooks():
    """True when relayd was built with the CMake option RELAY_TEST_HOOKS (as
    contrib/test.sh builds it): only then does it read the RELAYD_TEST_*
    variables.  A normal build does not even contain their names."""
    try:
        with open(relayd_bin(), "rb") as f:
            return b"RELAYD_TEST_PUBLISH_DELAY_MS" in f.read()
    except OSError:
        return False


def needs_test_hooks(test):
    """Decorator: skip a test (class or method) that sets RELAYD_TEST_* when
    relayd has no test hooks, saying how to build it."""
    import unittest
    return unittest.skipUnless(
        relayd_has_test_hooks(),
        "relayd built without the test hooks: cmake -DRELAY_TEST_HOOKS=ON")(test)


# ---------------------------------------------------------------------------
# Ports
# ---------------------------------------------------------------------------

def _can_bind(host, port):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _pick_range():
    """The ports free_port() picks from: those below the kernel's ephemeral
    range (net.ipv4.ip_local_port_range), down to 10000.  A port handed out
    here is bound by its server only later (relayd, a sink, slapd, HAProxy);
    had it come from the ephemeral range, as bind(port 0) gives, any outgoing
    connection on the machine (another test's client, relayd's delivery) could
    take it as its source port in between, and the server's bind would fail
    with "address already in use".  None when the range leaves no room."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    if low - 10000 < 1000:
        return None
    return 10000, low - 1


_port_random = random.SystemRandom()

# Ports this process has handed out, each held by an flock on a file of
# PORT_CLAIMS: until this test process exits, no other test process picks
# it.  A test that stops relayd and starts it again on the same ports leaves
# them unbound in between, when another process's free_port() could take
# one (its bind check passes) and bind it first: the restart failed with
# "address already in use", or, with submit.workers above 1, one relayd
# was refused at start (the session threads' port check).  The kernel
# drops the locks when the process ends, whatever way it ends.
PORT_CLAIMS = os.path.join(tempfile.gettempdir(), "relayd-test-ports")
_port_claims = []


def _claim_port(port):
    """True if this process now holds port's claim (nobody else does)."""
    import fcntl
    try:
        os.makedirs(PORT_CLAIMS, mode=0o1777, exist_ok=True)
        fd = os.open(os.path.join(PORT_CLAIMS, str(port)), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        return True             # no claims here: the bind check alone, as before
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _port_claims.append(fd)
    return True


def free_port(hosts=("127.0.0.1",), exclude=()):
    """A TCP port that is free on every address in hosts, below the ephemeral
    range (see _pick_range(); random, so that parallel test processes rarely
    pick the same one, and checked by binding it on every host).  exclude:
    ports not to return."""
    if isinstance(hosts, str):
        hosts = (hosts,)
    hosts = list(hosts)
    span = _pick_range()
    for _ in range(500):
        if span is not None:
            port = _port_random.randint(*span)
        else:
            fam = socket.AF_INET6 if ":" in hosts[0] else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            try:
                s.bind((hosts[0], 0))
                port = s.getsockname()[1]
            finally:
                s.close()
        if port in exclude:
            continue
        if all(_can_bind(h, port) for h in hosts) and _claim_port(port):
            return port
    raise RelayError("no port free on all of %r" % (hosts,))


# ---------------------------------------------------------------------------
# The unprivileged account relayd switches to
# ---------------------------------------------------------------------------

def test_user_ids():
    """(uid, gid) of TEST_USER, or None when it does not exist."""
    import pwd
    try:
        pw = pwd.getpwnam(TEST_USER)
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def share_with_user(path, own=False):
    """Make path usable by TEST_USER after relayd's switch (we run as root):
    a directory becomes searchable by everyone (0755), a file readable by the
    user's group; with own, the user owns it.  Without root: nothing to do."""
    ids = test_user_ids()
    if os.geteuid() != 0 or ids is None:
        return
    st = os.stat(path)
    if own:
        os.chown(path, ids[0], ids[1])
    elif not os.path.isdir(path):
        os.chown(path, -1, ids[1])
    if os.path.isdir(path):
        os.chmod(path, (st.st_mode & 0o7777) | 0o755)
    else:
        os.chmod(path, (st.st_mode & 0o7777) | 0o040)


# ---------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------

def _openssl(*args, cwd=None):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RelayError("openssl %s failed: %s" % (" ".join(args), r.stderr.strip()))
    return r


def _san(dns, ips):
    return ",".join(["DNS:" + d for d in dns] + ["IP:" + i for i in ips])


def make_cert(directory, cn="relay.test", dns=("relay.test",), ips=("127.0.0.1",),
              name=None, key_type="ec", days=3650):
    """A self-signed certificate and key (EC P-256, or with key_type="rsa"
    RSA 2048; valid for days) in directory.  Returns (cert_path, key_path)."""
    name = name or cn
    cert = os.path.join(directory, name + ".crt")
    key = os.path.join(directory, name + ".key")
    newkey = {"ec": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
              "rsa": ["-newkey", "rsa:2048"]}[key_type]
    args = ["req", "-x509", *newkey,
            "-nodes", "-keyout", key, "-out", cert, "-days", str(days), "-subj", "/CN=" + cn]
    if dns or ips:
        args += ["-addext", "subjectAltName=" + _san(dns, ips)]
    _openssl(*args)
    share_with_user(key)
    return cert, key


_PROC_TMP = None


def _proc_tmp():
    """A directory for the whole test process (removed at exit)."""
    global _PROC_TMP
    if _PROC_TMP is None:
        _PROC_TMP = tempfile.mkdtemp(prefix="relayd-certs-")
        share_with_user(_PROC_TMP)
        if not os.environ.get("RELAYD_KEEP_TMP"):
            atexit.register(shutil.rmtree, _PROC_TMP, True)
    return _PROC_TMP


_CERT = None


def test_cert():
    """The process-wide self-signed certificate for relay.test (also good for
    sinks offering STARTTLS): (cert_path, key_path)."""
    global _CERT
    if _CERT is None:
        _CERT = make_cert(_proc_tmp(), "relay.test", ("relay.test",), ("127.0.0.1",))
    return _CERT


class TestCA:
    """A throwaway certificate authority, for deliver.tls = "verify" tests.

        ca = TestCA()                       # .cert is the CA file (deliver.ca_file)
        cert, key = ca.issue("mx1.example.net", ips=["127.0.0.2"])
        sink = SinkMX("127.0.0.2", port, starttls=(cert, key))
    """

    __test__ = False        # not a unittest/pytest test class

    def __init__(self, directory=None, cn="relayd test CA"):
        self.dir = directory or tempfile.mkdtemp(prefix="ca-", dir=_proc_tmp())
        os.makedirs(self.dir, exist_ok=True)
        share_with_user(self.dir)
        self.cert = os.path.join(self.dir, "ca.crt")
        self.key = os.path.join(self.dir, "ca.key")
        self._n = 0
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "3650",
                 "-subj", "/CN=" + cn,
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 "-addext", "subjectKeyIdentifier=hash")

    def issue(self, cn, dns=None, ips=(), days=3650, expired=False):
        """A leaf certificate signed by this CA: (cert_path, key_path).
        dns defaults to [cn]; expired=True makes one that is no longer valid."""
        self._n += 1
        base = os.path.join(self.dir, "%d-%s" % (self._n, cn.replace("*", "_")))
        key, csr, crt, ext = base + ".key", base + ".csr", base + ".crt", base + ".ext"
        dns = [cn] if dns is None else list(dns)
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=" + cn)
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n"
                    "subjectKeyIdentifier=hash\n"
                    "authorityKeyIdentifier=keyid\n")
            if dns or ips:
                f.write("subjectAltName=%s\n" % _san(dns, ips))
        if expired:
            return self._issue_expired(csr, crt, ext, key)
        _openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
                 "-CAcreateserial", "-out", crt, "-extfile", ext, "-days", str(days))
        return crt, key

    def _issue_expired(self, csr, crt, ext, key):
        # `openssl ca` can set explicit dates; it needs a tiny database.
        db = os.path.join(self.dir, "index.txt")
        open(db, "a").close()
        cnf = os.path.join(self.dir, "ca.cnf")
        with open(cnf, "w") as f:
            f.write("[ca]\ndefault_ca=d\n[d]\ndatabase=%s\nnew_certs_dir=%s\n"
                    "serial=%s\ndefault_md=sha256\npolicy=p\nunique_subject=no\n"
                    "[p]\ncommonName=supplied\n"
                    % (db, self.dir, os.path.join(self.dir, "serial")))
        with open(os.path.join(self.dir, "serial"), "w") as f:
            f.write("%04X\n" % (0x1000 + self._n))
        _openssl("ca", "-batch", "-config", cnf, "-cert", self.cert, "-keyfile", self.key,
                 "-in", csr, "-out", crt, "-extfile", ext, "-notext",
                 "-startdate", "20000101000000Z", "-enddate", "20010101000000Z")
        return crt, key


# ---------------------------------------------------------------------------
# libconfig
# ---------------------------------------------------------------------------

class LCList(tuple):
    """Force a libconfig list "( ... )" (a tuple does the same)."""


_GROUP_LIST_KEYS = {"routes"}


def _lc_str(s):
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\f":
            out.append("\\f")
        elif o < 0x20 or o == 0x7F:
            out.append("\\x%02x" % o)
        elif 0xDC80 <= o <= 0xDCFF:
            # a byte that is not UTF-8, as os.fsdecode() gives it: written raw
            out.append("\\x%02x" % (o - 0xDC00))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _lc_value(v, indent, key=None):
    pad = "\t" * indent
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return "%dL" % v if not -2**31 <= v < 2**31 else str(v)
    if isinstance(v, float):
        r = repr(v)
        return r if ("." in r or "e" in r or "n" in r) else r + ".0"
    if isinstance(v, str):
        return _lc_str(v)
    if isinstance(v, dict):
        if not v:
            return "{ }"
        lines = ["{"]
        for k, x in v.items():
            if x is None:
                continue
            lines.append("%s\t%s = %s;" % (pad, k, _lc_value(x, indent + 1, k)))
        lines.append(pad + "}")
        return "\n".join(lines)
    if isinstance(v, (list, tuple)):
        is_list = (isinstance(v, tuple) or any(isinstance(x, (dict, list, tuple)) for x in v)
                   or (not v and key in _GROUP_LIST_KEYS))
        items = [_lc_value(x, indent + 1) for x in v]
        if is_list:
            if not items:
                return "( )"
            return "(\n" + ",\n".join(pad + "\t" + i for i in items) + "\n" + pad + ")"
        return "[ " + ", ".join(items) + " ]" if items else "[ ]"
    raise TypeError("cannot write %r (%s) as libconfig" % (v, type(v).__name__))


def to_libconfig(cfg):
    """Serialize a dict as a libconfig file: str -> "quoted" (\\" \\\\ \\n \\r \\t
    \\f \\xHH escapes; U+DC80..U+DCFF, bytes that are not UTF-8 as
    surrogateescape decodes them, become \\xHH too: the raw byte),
    bool -> true/false, int (L suffix past 32 bits), float,
    dict -> { k = v; }, list of scalars -> [ a, b ] (an array), tuple or list of
    groups/lists -> ( a, b ) (a list); an empty list is "[ ]" except for
    "routes" ("( )").  Keys whose value is None are left out."""
    out = []
    for k, v in cfg.items():
        if v is None:
            continue
        out.append("%s = %s;" % (k, _lc_value(v, 0, k)))
    return "\n".join(out) + "\n"


def merge(base, overrides):
    """Deep-merge overrides into base (in place): dicts merge, other values
    replace, None deletes.  Returns base."""
    for k, v in overrides.items():
        if v is None:
            base.pop(k, None)
        elif isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = _copy(v)
    return base


def _copy(v):
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, LCList):
        return LCList(_copy(x) for x in v)
    if isinstance(v, tuple):
        return tuple(_copy(x) for x in v)
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v


# ---------------------------------------------------------------------------
# The log
# ---------------------------------------------------------------------------

_ESC = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def parse_log_line(line):
    """Parse `ts=... level=... event=name key=value key="quoted \\"x\\" value"`
    into a dict of str -> str.  Quoted values understand \\" \\\\ \\n \\r \\t
    and \\xHH.  A token without '=' maps to None.  Returns {} for a blank line."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    line = line.rstrip("\r\n")
    res = {}
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] == " ":
            i += 1
        if i >= n:
            break
        j = i
        while j < n and line[j] not in "= ":
            j += 1
        key = line[i:j]
        if j >= n or line[j] == " ":
            res.setdefault(key, None)
            i = j
            continue
        j += 1                                  # past '='
        if j < n and line[j] == '"':
            j += 1
            buf = []
            while j < n and line[j] != '"':
                c = line[j]
                if c == "\\" and j + 1 < n:
                    e = line[j + 1]
                    if e in _ESC:
                        buf.append(_ESC[e])
                        j += 2
                        continue
                    if e == "x" and re.match(r"[0-9a-fA-F]{2}", line[j + 2:j + 4]):
                        buf.append(chr(int(line[j + 2:j + 4], 16)))
                        j += 4
                        continue
                    buf.append(c)
                    j += 1
                    continue
                buf.append(c)
                j += 1
            value = "".join(buf)
            j += 1                              # past the closing quote
        else:
            k = j
            while j < n and line[j] != " ":
                j += 1
            value = line[k:j]
        res[key] = value
        i = j
    return res


# ---------------------------------------------------------------------------
# The fixture
# ---------------------------------------------------------------------------

def _tail(path, n=40):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return "(no %s)" % os.path.basename(path)
    lines = data.decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-n:]) if lines else "(empty)"


def _listening(host, port):
    """Is something listening on host:port?  Read from /proc/net/tcp{,6} so that
    relayd sees no probe connection (it would log a session); where /proc is
    missing, try to connect."""
    try:
        packed = socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        packed = None
    files = ["/proc/net/tcp6"] if ":" in host else ["/proc/net/tcp", "/proc/net/tcp6"]
    if packed is not None and os.path.exists(files[0]):
        want_port = "%04X" % port
        # /proc shows addresses as host-order 32-bit words in hex
        words = [packed[i:i + 4][::-1].hex().upper() for i in range(0, len(packed), 4)]
        want = "".join(words)
        anys = {"00000000", "0" * 32}
        for fn in files:
            try:
                with open(fn) as f:
                    next(f)
                    for line in f:
                        parts = line.split()
                        addr, _, p = parts[1].partition(":")
                        if parts[3] == "0A" and p == want_port and (addr == want or addr in anys):
                            return True
            except (OSError, StopIteration, IndexError):
                continue
        return False
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Relay:
    """A real relayd with everything it needs in a temporary directory."""

    def __init__(self, tmpdir=None, dns=None, smtp_port=None, users=None, senders=None,
                 sink_hosts=SINK_HOSTS, env=None, **overrides):
        self._own_tmp = tmpdir is None
        self.env = dict(env or {})
        self.tmpdir = tmpdir or tempfile.mkdtemp(prefix="relayd-")
        os.makedirs(self.tmpdir, exist_ok=True)
        share_with_user(self.tmpdir, own=True)
        self.host = "127.0.0.1"
        self.realm = REALM
        self.proc = None
        self.sinks = []
        self._outf = self._errf = None
        self.failed = False

        self._own_dns = None
        if dns is None:
            self.dns = self._own_dns = DNSServer().start()
        elif isinstance(dns, int):
            self.dns = None
            self._dns_addr = "127.0.0.1:%d" % dns
        else:
            self.dns = dns
        dns_addr = self.dns.address if self.dns is not None else self._dns_addr
        try:
            self._setup(dns_addr, smtp_port, users, senders, sink_hosts, overrides)
        except BaseException:
            if self._own_dns is not None:
                self._own_dns.stop()
            if self._own_tmp:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
            raise

    def _setup(self, dns_addr, smtp_port, users, senders, sink_hosts, overrides):
        self.smtp_port = smtp_port or free_port(sink_hosts)
        self.submit_port = free_port(exclude=(self.smtp_port,))
        self.tls_port = free_port(exclude=(self.smtp_port, self.submit_port))

        self.cert, self.key = test_cert()
        self.queue_dir = os.path.join(self.tmpdir, "queue")
        self.control_socket = os.path.join(self.tmpdir, "control.sock")
        self.log_path = os.path.join(self.tmpdir, "relayd.log")
        self.stdout_path = os.path.join(self.tmpdir, "stdout")
        self.stderr_path = os.path.join(self.tmpdir, "stderr")
        self.config_path = os.path.join(self.tmpdir, "relayd.conf")
        self.sasldb = os.path.join(self.tmpdir, "sasldb2")
        self.senders_path = os.path.join(self.tmpdir, "senders")
        os.makedirs(self.queue_dir, mode=0o700, exist_ok=True)

        self.users = {}
        for u, p in (DEFAULT_USERS if users is None else users).items():
            self.add_user(u, p)
        if not self.users:
            self._make_empty_sasldb()
        self.set_senders(SENDERS if senders is None else senders)

        self.config = {
            "hostname": "relay.test",
            "user": TEST_USER,
            "queue_dir": self.queue_dir,
            "control_socket": self.control_socket,
            "log_file": self.log_path,
            "log_level": "debug",
            "submit": {
                "listen": ["%s:%d" % (self.host, self.submit_port)],
                "listen_tls": ["%s:%d" % (self.host, self.tls_port)],
                "tls_cert": self.cert,
                "tls_key": self.key,
                "sasl_db": self.sasldb,
                "sasl_realm": self.realm,
                "senders": self.senders_path,
            },
            "router": {
                "dns_servers": [dns_addr],
                "smtp_port": self.smtp_port,
                "retry_intervals": ["1s"],
            },
            "deliver": {
                "tls": "opportunistic",
                "connect_timeout": "2s",
            },
        }
        if os.environ.get("RELAYD_TEST_DELIVER_THREAD"):
            self.config["deliver"]["thread"] = True
        if os.environ.get("RELAYD_TEST_SUBMIT_WORKERS"):
            self.config["submit"]["workers"] = int(os.environ["RELAYD_TEST_SUBMIT_WORKERS"])
        merge(self.config, overrides)
        self.write_config()

    # -- files ----------------------------------------------------------------

    def write_config(self, path=None):
        """Write self.config (libconfig syntax) to config_path (or path)."""
        path = path or self.config_path
        with open(path, "w") as f:
            f.write("# written by tests/harness/relay.py\n")
            f.write(to_libconfig(self.config))
        return path

    def update_config(self, **overrides):
        """Merge overrides into the configuration and rewrite the file
        (relayd sees it after sighup() or restart())."""
        merge(self.config, overrides)
        self.write_config()

    def config_text(self):
        with open(self.config_path) as f:
            return f.read()

    def add_user(self, name, password, realm=None):
        """Add (or change) a sasldb user with saslpasswd2."""
        r = subprocess.run(["saslpasswd2", "-p", "-f", self.sasldb, "-u", realm or self.realm,
                            "-c", name], input=password.encode(), capture_output=True)
        if r.returncode != 0:
            raise RelayError("saslpasswd2 %s: %s" % (name, r.stderr.decode(errors="replace")))
        share_with_user(self.sasldb)
        self.users[name] = password

    def delete_user(self, name, realm=None):
        r = subprocess.run(["saslpasswd2", "-f", self.sasldb, "-u", realm or self.realm,
                            "-d", name], capture_output=True, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RelayError("saslpasswd2 -d %s: %s" % (name, r.stderr.decode(errors="replace")))
        self.users.pop(name, None)

    def _make_empty_sasldb(self):
        # a database with no users: create one user, then delete it
        self.add_user("nobody-placeholder", "x")
        self.delete_user("nobody-placeholder")

    def set_senders(self, text):
        """Rewrite the senders map (relayd reads it again on sighup())."""
        with open(self.senders_path, "w") as f:
            f.write(text)

    # -- the process ----------------------------------------------------------

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def _probe_port(self):
        sub = self.config.get("submit", {})
        for key in ("listen", "listen_tls"):
            for text in sub.get(key) or []:
                if isinstance(text, dict):      # { address = "..."; proxy = true; }
                    text = text.get("address", "")
                m = re.match(r"^\[?([^\]]+?)\]?:(\d+)$", text)
                if m:
                    host = m.group(1)
                    if host in ("0.0.0.0", "::"):
                        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
                    return host, int(m.group(2))
        return None

    def start(self, wait=True, timeout=10, args=(), scanned=True):
        """Run relayd -c config_path.  With wait: until the first submit port
        accepts TCP connections and the control socket exists, and (scanned)
        until the queue is loaded (relayd listens before its scan of msg/
        ends: queue/QUEUE.md "The scan"; `queue_loaded` is an info line, so
        this needs log_level info or debug, the tests' default); raises
        RelayError (with the tail of stderr and of the log) otherwise."""
        if self.running:
            raise RelayError("relayd already running (pid %d)" % self.proc.pid)
        mark = self.log_mark()
        self._close_outputs()
        self._outf = open(self.stdout_path, "ab")
        self._errf = open(self.stderr_path, "ab")
        cmd = [relayd_bin(), "-c", self.config_path, *args]
        env = None
        if self.env:
            env = dict(os.environ)
            for k, v in self.env.items():
                if v is None:
                    env.pop(k, None)
                else:
                    env[k] = str(v)
        try:
            self.proc = subprocess.Popen(cmd, stdout=self._outf, stderr=self._errf,
                                         stdin=subprocess.DEVNULL, cwd=self.tmpdir, env=env)
        except OSError as e:
            raise RelayError("cannot run %s: %s (set RELAYD_BIN)" % (cmd[0], e))
        if wait:
            self.wait_ready(timeout)
            if scanned and self.config.get("log_level", "debug") in ("debug", "info"):
                self.wait_for_log("queue_loaded", since=mark, timeout=max(timeout, 60))
        return self

    def wait_ready(self, timeout=10):
        """Wait until relayd listens and its control socket exists."""
        timeout *= SLOW
        deadline = time.monotonic() + timeout
        probe = self._probe_port()
        ctl = self.config.get("control_socket") or os.path.join(
            self.config.get("queue_dir", ""), "control.sock")
        while True:
            if self.proc.poll() is not None:
                raise RelayError("relayd exited with %s while starting\n%s"
                                 % (self.proc.returncode, self.diagnostics()))
            port_ok = probe is None or _listening(*probe)
            if port_ok and os.path.exists(ctl):
                return
            if time.monotonic() > deadline:
                raise RelayError("relayd not ready after %ss (port %s ok: %s, control socket "
                                 "%s: %s)\n%s" % (timeout, probe, port_ok, ctl,
                                                  os.path.exists(ctl), self.diagnostics()))
            time.sleep(0.05)

    def stop(self, timeout=10):
        """SIGTERM, wait; returns the exit code (None if it was not running).
        After timeout seconds it is killed (SIGKILL) and RelayError is raised."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            timeout *= SLOW
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._close_outputs()
                raise RelayError("relayd ignored SIGTERM for %ss; killed\n%s"
                                 % (timeout, self.diagnostics()))
        self._close_outputs()
        return rc

    def kill9(self):
        """SIGKILL (a crash); returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
        rc = self.proc.wait()
        self._close_outputs()
        return rc

    def restart(self, wait=True, timeout=10):
        """stop() then start() with the same directory, queue and config."""
        self.stop()
        return self.start(wait=wait, timeout=timeout)

    def sighup(self):
        """Ask relayd to reload its configuration (SIGHUP)."""
        if not self.running:
            raise RelayError("relayd is not running")
        self.proc.send_signal(signal.SIGHUP)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=10):
        """Wait for relayd to exit by itself; returns the exit code."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise RelayError("relayd still running after %ss" % timeout)
        self._close_outputs()
        return rc

    def check_config(self, path=None, timeout=30):
        """relayd -c FILE -n (check the configuration and exit):
        (returncode, stderr text)."""
        r = subprocess.run([relayd_bin(), "-c", path or self.config_path, "-n"],
                           capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, cwd=self.tmpdir)
        return r.returncode, r.stderr

    def relayctl(self, *args, check=False, timeout=30, json=False):
        """RELAYCTL_BIN -s control_socket ARGS -> CompletedProcess (text).
        json=True: parse stdout as JSON and return that instead."""
        r = subprocess.run([relayctl_bin(), "-s", self.control_socket, *map(str, args)],
                           capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RelayError("relayctl %s failed (%d): %s%s"
                             % (" ".join(map(str, args)), r.returncode, r.stdout, r.stderr))
        if json:
            import json as _json
            return _json.loads(r.stdout)
        return r

    def _close_outputs(self):
        for f in (self._outf, self._errf):
            if f is not None:
                f.close()
        self._outf = self._errf = None

    # -- sinks ------------------------------------------------------------------

    def remove_msg_dir(self):
        """Take queue_dir/msg away under a running relayd (to make its next
        file operation there fail).  Its writer thread may create a spare file
        in it meanwhile, so rmtree can find it not empty: take what appeared
        and try again; once the directory is gone nothing can appear in it."""
        path = os.path.join(self.queue_dir, "msg")
        for _ in range(1000):
            try:
                shutil.rmtree(path)
                return
            except OSError as e:
                if e.errno != errno.ENOTEMPTY:
                    raise
        raise AssertionError("%s: still refilled after 1000 removals" % path)

    def sink(self, host="127.0.0.2", **kw):
        """A SinkMX on host:smtp_port, stopped by close()."""
        s = SinkMX(host, self.smtp_port, **kw)
        self.sinks.append(s)
        return s

    def held_sink(self, host="127.0.0.2"):
        """A sink on host that holds each message's final reply until release
        is set (at_eod: one is being held); (sink, release, at_eod)."""
        import threading
        release = threading.Event()
        at_eod = threading.Event()

        def held_eod(msg):
            at_eod.set()
            release.wait(30)
            return "250 2.0.0 ok held"
        held = self.sink(host)
        held.script(eod=held_eod)
        return held, release, at_eod

    # -- the log ----------------------------------------------------------------

    def log_lines(self):
        """Every event line of the log so far, parsed (see parse_log_line)."""
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        # relayd writes each line with one write(2), but a reader can still
        # catch one half copied (Linux copies a write page by page, and a
        # line may straddle a page): text after the last newline is not a
        # line yet
        data = data[:data.rfind(b"\n") + 1]
        out = []
        for raw in data.decode("utf-8", "replace").split("\n"):
            if raw.strip():
                d = parse_log_line(raw)
                if d:
                    out.append(d)
        return out

    def log_mark(self):
        """The number of log lines so far: pass it as since= to look only at
        what comes after."""
        return len(self.log_lines())

    @staticmethod
    def _matches(d, event, match):
        if event is not None and d.get("event") != event:
            return False
        for k, v in match.items():
            if v is None:
                if k in d:
                    return False
            elif d.get(k) != str(v):
                return False
        return True

    def find_log(self, event=None, since=0, **match):
        """All parsed lines (from line `since` on) with that event whose keys
        equal the match values (compared as strings; None = key absent)."""
        return [d for d in self.log_lines()[since:] if self._matches(d, event, match)]

    def count_log(self, event=None, since=0, **match):
        return len(self.find_log(event, since, **match))

    def wait_for_log(self, event, timeout=10, since=0, **match):
        """The first line (from line `since` on) with that event and keys;
        raises RelayError with the log tail after timeout seconds.  For keys
        that are Python keywords: wait_for_log("x", **{"from": "a@b"})."""
        timeout *= SLOW
        deadline = time.monotonic() + timeout
        while True:
            found = self.find_log(event, since, **match)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise RelayError("no log event %s %r within %ss\n%s"
                                 % (event, match, timeout, self.diagnostics()))
            if self.proc is not None and self.proc.poll() is not None:
                # relayd is gone: one last look, then fail at once
                found = self.find_log(event, since, **match)
                if found:
                    return found[0]
                raise RelayError("relayd exited (%s) before log event %s %r\n%s"
                                 % (self.proc.returncode, event, match, self.diagnostics()))
            time.sleep(0.05)

    def wait_for_count(self, event, n, timeout=10, since=0, **match):
        """Wait until count_log(event, **match) >= n; returns the matches."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.find_log(event, since, **match)
            if len(found) >= n:
                return found
            if time.monotonic() > deadline:
                raise RelayError("%d of %d log events %s %r within %ss\n%s"
                                 % (len(found), n, event, match, timeout, self.diagnostics()))
            time.sleep(0.05)

    def log_tail(self, n=40):
        return _tail(self.log_path, n)

    def stderr_tail(self, n=20):
        return _tail(self.stderr_path, n)

    def sanitizer_report(self):
        """The first ThreadSanitizer report in relayd's stderr (every run of
        this fixture appends there), or None.  A TSan build (CMake option
        RELAY_TSAN) with halt_on_error=1 exits 66 after it, which a test may
        only see at close(): close() raises it so the test fails."""
        try:
            with open(self.stderr_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return None
        start = text.find("WARNING: ThreadSanitizer:")
        if start < 0:
            start = text.find("ThreadSanitizer: ")      # FATAL: ..., CHECK failed
        if start < 0:
            return None
        return "\n".join(text[start:].splitlines()[:200])

    def diagnostics(self, n=40):
        """The tails of stderr and of the log, for error messages."""
        return ("--- relayd stderr (%s) ---\n%s\n--- relayd log (%s) ---\n%s"
                % (self.stderr_path, self.stderr_tail(n // 2), self.log_path, self.log_tail(n)))

    # -- cleanup ----------------------------------------------------------------

    def close(self, failed=None):
        """Stop relayd, the sinks and an owned DNS server; remove the temporary
        directory (kept when failed, or with RELAYD_KEEP_TMP=1)."""
        if failed:
            self.failed = True
        err = None
        try:
            if self.running:
                self.stop()
        except RelayError as e:
            err = e
        self._close_outputs()
        for s in self.sinks:
            s.stop()
        self.sinks = []
        if self._own_dns is not None:
            self._own_dns.stop()
            self._own_dns = None
        report = self.sanitizer_report()
        if report is not None:
            self.failed = True
            err = RelayError("relayd (%s): %s" % (self.tmpdir, report))
        if self._own_tmp and not self.failed and not os.environ.get("RELAYD_KEEP_TMP"):
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        if err is not None:
            raise err

    def _report(self, what):
        sys.stderr.write("\n=== relayd (%s) %s ===\n%s\n" % (self.tmpdir, what, self.diagnostics(60)))
        sys.stderr.flush()

    def __enter__(self):
        if not self.running:
            self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        failed = exc_type is not None
        if failed or os.environ.get("RELAYD_TEST_VERBOSE"):
            self._report("after a failure" if failed else "log")
        self.close(failed=failed)
        return False

    @classmethod
    def for_test(cls, testcase, **kw):
        """A Relay (not started) cleaned up after the test: relayd stopped,
        the log tail printed when the test failed (the directory is kept then)."""
        relay = cls(**kw)

        def cleanup():
            failed = _test_failed(testcase)
            if failed or os.environ.get("RELAYD_TEST_VERBOSE"):
                relay._report("after a failure" if failed else "log")
            relay.close(failed=failed)
        testcase.addCleanup(cleanup)
        return relay


def _test_failed(testcase):
    """Best effort: did this unittest test fail or error so far?"""
    outcome = getattr(testcase, "_outcome", None)
    if outcome is None:
        return False
    if getattr(outcome, "success", True) is False:
        return True
    result = getattr(outcome, "result", None)
    if result is not None:
        for _, lst in (("errors", getattr(result, "errors", [])),
                       ("failures", getattr(result, "failures", []))):
            if any(t is testcase for t, _ in lst):
                return True
    return False
