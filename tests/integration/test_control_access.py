"""test_control_access.py - who may use the control socket (issue 10, point 3).

The socket belongs to relayd's user: mode 0600, or 0660 with control_group
as its group.  Root, relayd's own uid and members of control_group get
answers; anyone else is refused twice over, and each check is exercised:

* by the filesystem: the socket's mode stops a stranger's connect(2) with
  EACCES; relayctl says "permission denied" and exits 1; relayd never sees
  the attempt (no control_denied, proved after a later request answered);
* by the peer's credentials on accept (SO_PEERCRED / SO_PEERGROUPS): with
  the socket file opened up to everyone (chmod 0666, test-only), a stranger
  connects, gets "permission denied" (exit 1) and relayd logs
  event=control_denied with its uid and pid; a control_group member still
  passes, by its primary or a supplementary group.

Other users are played by relayctl under setpriv (util-linux) with uids
that are neither root nor relayd's user; control_group is a group made for
the test with groupadd and removed after.  Needs root.
"""

import grp
import os
import shutil
import subprocess
import unittest

from relay import Relay, relayctl_bin

STRANGER = 65532       # neither root nor relayd's user (the harness may run relayd as nobody)
MEMBER = 65533


def run_as(uid, gid, groups, argv):
    """Run argv as uid/gid with exactly these supplementary groups:
    (returncode, stdout, stderr, pid)."""
    cmd = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid]
    cmd += ["--groups=" + ",".join(map(str, groups))] if groups else ["--clear-groups"]
    p = subprocess.Popen(cmd + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, stdin=subprocess.DEVNULL)
    out, err = p.communicate(timeout=20)
    return p.returncode, out, err, p.pid      # setpriv execs relayctl: the same pid


def euid_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[2])
    raise AssertionError("no Uid: line")


@unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv") and shutil.which("groupadd"),
                     "needs root, setpriv and groupadd to act as other users")
class ControlAccess(unittest.TestCase):
    def make(self, group=False):
        kw = {}
        self.gid = None
        if group:
            self.group = "relaydctl%d" % os.getpid()
            subprocess.run(["groupadd", self.group], check=True)
            self.addCleanup(subprocess.run, ["groupdel", self.group])
            self.gid = grp.getgrnam(self.group).gr_gid
            kw["control_group"] = self.group
        self.relay = Relay.for_test(self, **kw)
        os.chmod(self.relay.tmpdir, 0o755)       # others may reach the socket's directory
        self.exe = os.path.join(self.relay.tmpdir, "relayctl")
        shutil.copy(relayctl_bin(), self.exe)
        os.chmod(self.exe, 0o755)
        self.relay.start()
        self.relay.wait_for_log("started")       # after any switch to relayd's user
        return self.relay

    def ctl(self, uid, gid, groups=()):
        return run_as(uid, gid, groups, [self.exe, "-s", self.relay.control_socket, "stats"])

    def assert_refused_by_filesystem(self, rc, out, err):
        self.assertEqual(rc, 1, out + err)
        self.assertIn("permission denied on " + self.relay.control_socket, err)
        # relayd answers a later request (so it accepted everything before it)
        # and never saw the refused one.
        self.assertEqual(self.relay.relayctl("stats").returncode, 0)
        self.assertEqual(self.relay.count_log("control_denied"), 0)

    def test_private_without_control_group(self):
        relay = self.make()
        st = os.stat(relay.control_socket)
        self.assertEqual(st.st_mode & 0o777, 0o600)
        self.assertEqual(st.st_uid, euid_of(relay.pid))      # relayd's user
        self.assert_refused_by_filesystem(*self.ctl(STRANGER, STRANGER)[:3])
        self.assertEqual(relay.relayctl("stats").returncode, 0)    # root

    def test_control_group_members_may_use_it(self):
        relay = self.make(group=True)
        st = os.stat(relay.control_socket)
        self.assertEqual(st.st_mode & 0o777, 0o660)
        self.assertEqual(st.st_gid, self.gid)
        self.assertEqual(st.st_uid, euid_of(relay.pid))
        # A member by a supplementary group, and by its primary group.
        for gid, groups in ((MEMBER, [self.gid]), (self.gid, [])):
            with self.subTest(gid=gid, groups=groups):
                rc, out, err, _ = self.ctl(MEMBER, gid, groups)
                self.assertEqual(rc, 0, err)
                self.assertIn("accepted", out)
        # Not a member: the file's mode refuses it.
        self.assert_refused_by_filesystem(*self.ctl(STRANGER, STRANGER)[:3])
        # A reload looks the group up again (relayd -n and SIGHUP check it).
        mark = relay.log_mark()
        relay.sighup()
        relay.wait_for_log("reloaded", since=mark)

    def test_peer_credentials_are_checked_on_accept(self):
        relay = self.make(group=True)
        os.chmod(relay.control_socket, 0o666)    # test-only: let anyone connect
        rc, out, err, pid = self.ctl(STRANGER, STRANGER)
        self.assertEqual(rc, 1, out + err)
        self.assertIn("relayctl: permission denied: only root, relayd's user and members of "
                      "control_group may use the control socket", err)
        ev = relay.wait_for_log("control_denied", uid=STRANGER)
        self.assertEqual(ev["pid"], str(pid))
        self.assertEqual(ev["level"], "warning")
        # The accept-time check lets members in: the file no longer decides.
        rc, out, err, _ = self.ctl(MEMBER, MEMBER, [self.gid])
        self.assertEqual(rc, 0, err)
        self.assertEqual(relay.count_log("control_denied"), 1)

    def test_unknown_control_group_is_a_config_error(self):
        relay = Relay.for_test(self, control_group="no-such-group-relayd")
        rc, err = relay.check_config()
        self.assertEqual(rc, 1)
        self.assertIn("control_group: no such group 'no-such-group-relayd'", err)


if __name__ == "__main__":
    unittest.main()
