"""saslauthd.py - a real saslauthd(8) for the tests, and the pieces around it.

    with SystemUser("rdtest1", "pw") as u, Saslauthd("shadow") as sa:
        relay = Relay(submit={"sasl_db": None, "sasl_options": sa.sasl_options()})

Saslauthd(mech, conf=None, tmpdir=None, cache=False)
  mech   the saslauthd -a backend: "shadow", "pam", "ldap" ...
  conf   the text of a saslauthd.conf (for -a ldap), written beside the socket
  cache  run with saslauthd's credential cache (-c)
  Runs `saslauthd -a MECH -m DIR -n 1 -d` in the foreground, its mux socket in
  a private directory that relayd's test user can reach; start() waits until
  the socket answers connect().  Attributes: dir, path (the mux socket), proc.
  Methods: start(), stop(), sasl_options() -> the relayd.conf group,
  running, log_tail().

SystemUser(name, password)
  A system account made with useradd (no home, no shell) and its password set
  with chpasswd; removed with userdel on close.  Needs root.

DeadSocket(path)
  A unix socket at path that accepts connections and never answers (a
  backend that hangs).  release() closes every accepted connection and the
  listener, so that a client blocked on it returns.  wait_connections(n)
  waits until n connections were accepted in all.

available() -> None, or why the saslauthd tests cannot run here.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from relay import share_with_user

SASLAUTHD = shutil.which("saslauthd") or "/usr/sbin/saslauthd"

__all__ = ["Saslauthd", "SystemUser", "DeadSocket", "available"]


def available():
    if os.geteuid() != 0:
        return "saslauthd -a shadow and useradd need root"
    if not os.access(SASLAUTHD, os.X_OK):
        return "saslauthd is not installed (contrib/install-deps.sh: sasl2-bin)"
    for tool in ("useradd", "userdel", "chpasswd"):
        if shutil.which(tool) is None:
            return "%s is missing" % tool
    return None


def _connectable(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class Saslauthd:

    def __init__(self, mech="shadow", conf=None, tmpdir=None, cache=False):
        self.mech = mech
        self.cache = cache
        self.dir = tempfile.mkdtemp(prefix="saslauthd-", dir=tmpdir)
        os.chmod(self.dir, 0o755)
        share_with_user(self.dir)
        self.path = os.path.join(self.dir, "mux")
        self.conf_path = None
        if conf is not None:
            self.conf_path = os.path.join(self.dir, "saslauthd.conf")
            with open(self.conf_path, "w") as f:
                f.write(conf)
        self.log_path = os.path.join(self.dir, "saslauthd.log")
        self.proc = None

    def start(self, timeout=10):
        args = [SASLAUTHD, "-a", self.mech, "-m", self.dir, "-n", "1", "-d"]
        if self.conf_path is not None:
            args += ["-O", self.conf_path]
        if self.cache:
            args += ["-c"]
        self._log = open(self.log_path, "ab")
        # a session of its own: saslauthd stops by killing its process group
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not _connectable(self.path):
            if self.proc.poll() is not None:
                raise RuntimeError("saslauthd exited with %s:\n%s"
                                   % (self.proc.returncode, self.log_tail()))
            if time.monotonic() > deadline:
                raise RuntimeError("saslauthd did not listen on %s:\n%s"
                                   % (self.path, self.log_tail()))
            time.sleep(0.05)
        return self

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """Stop saslauthd (SIGTERM, then SIGKILL); the socket file is gone after."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self._log.close()
        self.proc = None
        if os.path.exists(self.path):
            os.unlink(self.path)

    def close(self):
        self.stop()
        if not os.environ.get("RELAYD_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def sasl_options(self):
        return {"pwcheck_method": "saslauthd", "saslauthd_path": self.path}

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


class SystemUser:

    def __init__(self, name, password):
        self.name = name
        self.password = password
        subprocess.run(["userdel", name], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)     # left over from a killed run
        subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", name], check=True)
        subprocess.run(["chpasswd"], input=("%s:%s\n" % (name, password)).encode(),
                       check=True)

    def close(self):
        subprocess.run(["userdel", self.name], check=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DeadSocket:

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o777)
        self.sock.listen(16)
        self.conns = []
        self.accepted = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.conns.append(c)
            self.accepted.set()

    def wait_connections(self, n, timeout=10):
        """Wait until n connections were accepted in all; True if they were."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.conns) >= n:
                    return True
            self.accepted.wait(0.05)
            self.accepted.clear()
        return False

    def release(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(5)
        with self._lock:
            for c in self.conns:
                c.close()
            self.conns = []
        if os.path.exists(self.path):
            os.unlink(self.path)
