"""test_sandbox.py - relayd never runs sessions as root: started as root it
switches to `user` (the harness's TEST_USER, "nobody") after start-up, with
no_new_privs, a seccomp filter and (where the kernel has it) Landlock.

Needs root (CI runs the tests as root): without it the switch cannot be
shown and the tests skip.
"""

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import unittest

from client import make_message, submit
from relay import TEST_USER, Relay, make_cert, relayd_bin, share_with_user


def proc_status(pid, task=None):
    """/proc/PID/status (or one thread's) as {key: value}."""
    path = "/proc/%d/status" % pid if task is None else "/proc/%d/task/%s/status" % (pid, task)
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


@unittest.skipUnless(os.geteuid() == 0, "the switch to another user needs root")
class SandboxTest(unittest.TestCase):

    def setUp(self):
        self.pw = pwd.getpwnam(TEST_USER)

    def test_sessions_run_as_the_user_with_seccomp_and_no_new_privs(self):
        relay = Relay.for_test(self)
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        sink = relay.sink("127.0.0.2")
        relay.start()
        relay.wait_for_log("sandbox", user=TEST_USER)
        # Every thread (the commit threads existed before the switch) has dropped.
        tasks = os.listdir("/proc/%d/task" % relay.pid)
        self.assertGreater(len(tasks), 1)
        for t in tasks:
            st = proc_status(relay.pid, t)
            self.assertEqual(st["Uid"].split(), [str(self.pw.pw_uid)] * 4, t)
            self.assertEqual(st["Gid"].split(), [str(self.pw.pw_gid)] * 4, t)
            self.assertEqual(st["NoNewPrivs"], "1", t)
            self.assertEqual(st["Seccomp"], "2", t)
            self.assertEqual(st["CapEff"], "0000000000000000", t)
        # Mail flows: STARTTLS, AUTH against the sasldb, queued, delivered.
        msg = make_message("alice@example.org", "bob@example.net", "as nobody", "body")
        qid = submit(relay, "alice@example.org", ["bob@example.net"], msg)
        [got] = sink.wait_for_messages(1)
        self.assertIn(b"as nobody", got.data)
        relay.wait_for_log("delivered", qid=qid)
        # The queue is the user's, 0700, and so is everything relayd made in it.
        st = os.stat(relay.queue_dir)
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (self.pw.pw_uid, 0o700))
        for root, dirs, files in os.walk(relay.queue_dir):
            for name in dirs + files:
                self.assertEqual(os.lstat(os.path.join(root, name)).st_uid, self.pw.pw_uid,
                                 os.path.join(root, name))
        # A reload re-reads certificate, key, sasldb, senders and log as the user.
        mark = relay.log_mark()
        relay.sighup()
        relay.wait_for_log("reloaded", since=mark)
        self.assertEqual(relay.count_log("log_reopen_failed", since=mark), 0)
        self.assertEqual(relay.stop(), 0)

    def _start_fails(self, relay, want):
        relay.start(wait=False)
        rc = relay.wait_exit()
        with open(relay.stderr_path) as f:
            err = f.read()
        self.assertEqual(rc, 1, err)
        self.assertIn(want, err)
        return err

    def test_a_user_that_does_not_exist_is_a_start_error(self):
        relay = Relay.for_test(self, user="relayd-no-such-user")
        self._start_fails(relay, "user 'relayd-no-such-user' does not exist")
        rc, err = relay.check_config()
        self.assertEqual(rc, 1)
        self.assertIn("user 'relayd-no-such-user' does not exist", err)

    def test_root_as_user_is_a_start_error(self):
        relay = Relay.for_test(self, user="root")
        self._start_fails(relay, "user 'root' is uid 0")

    def test_a_world_writable_queue_is_refused(self):
        relay = Relay.for_test(self)
        os.chmod(relay.queue_dir, 0o777)
        self._start_fails(relay, "is world-writable")

    def test_a_queue_of_another_user_is_refused(self):
        relay = Relay.for_test(self)
        other = pwd.getpwnam("daemon")          # uid 1 on Debian: neither root nor nobody
        os.chown(relay.queue_dir, other.pw_uid, other.pw_gid)
        self._start_fails(relay, "belongs to uid %d, not to user '%s'" % (other.pw_uid, TEST_USER))

    def test_a_queue_the_user_cannot_reach_is_refused(self):
        relay = Relay.for_test(self)
        private = os.path.join(relay.tmpdir, "private")
        os.mkdir(private, 0o700)
        relay.update_config(queue_dir=os.path.join(private, "queue"))
        self._start_fails(relay, "user '%s' cannot reach it" % TEST_USER)

    def test_a_queue_root_wrote_is_handed_to_the_user_with_its_mail(self):
        # An older relayd ran as root: its queue (with a deferred message) is root's.
        relay = Relay.for_test(self)
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        relay.start()
        msg = make_message("alice@example.org", "bob@example.net", "kept", "body")
        qid = submit(relay, "alice@example.org", ["bob@example.net"], msg)
        relay.wait_for_log("deferred", qid=qid)
        self.assertEqual(relay.stop(), 0)
        for root, dirs, files in os.walk(relay.queue_dir):
            for name in dirs + files:
                os.chown(os.path.join(root, name), 0, 0)
        os.chown(relay.queue_dir, 0, 0)
        sink = relay.sink("127.0.0.2")
        mark = relay.log_mark()
        relay.start()
        relay.wait_for_log("queue_chowned", since=mark, user=TEST_USER)
        relay.wait_for_log("delivered", qid=qid, since=mark)
        self.assertEqual(len(sink.wait_for_messages(1)), 1)
        for root, dirs, files in os.walk(relay.queue_dir):
            for name in dirs + files:
                self.assertEqual(os.lstat(os.path.join(root, name)).st_uid, self.pw.pw_uid)

    def test_check_warns_about_a_key_the_user_cannot_read(self):
        relay = Relay.for_test(self)
        rc, err = relay.check_config()
        self.assertEqual((rc, err), (0, ""))        # the harness's files are shared
        key = os.path.join(relay.tmpdir, "private.key")
        shutil.copy(relay.key, key)
        os.chmod(key, 0o600)
        os.chown(key, 0, 0)
        relay.update_config(submit={"tls_key": key})
        rc, err = relay.check_config()
        self.assertEqual(rc, 0, err)
        self.assertIn("submit.tls_key '%s' will not be readable by user '%s'" % (key, TEST_USER),
                      err)
        self.assertNotIn("tls_cert", err)

    def test_started_as_another_user_it_runs_as_that_user_and_warns(self):
        # As under systemd's User= with AmbientCapabilities=CAP_NET_BIND_SERVICE:
        # no user to switch to (`user` names someone else), capabilities dropped.
        relay = Relay.for_test(self, user="relayd-someone-else")
        os.chown(relay.queue_dir, self.pw.pw_uid, self.pw.pw_gid)
        wrapper = os.path.join(relay.tmpdir, "relayd-as-user")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec setpriv --reuid=%d --regid=%d --clear-groups "
                    "--inh-caps=+net_bind_service --ambient-caps=+net_bind_service %s \"$@\"\n"
                    % (self.pw.pw_uid, self.pw.pw_gid, relayd_bin()))
        os.chmod(wrapper, 0o755)
        old = os.environ.get("RELAYD_BIN")
        os.environ["RELAYD_BIN"] = wrapper
        try:
            relay.start()
        finally:
            if old is None:
                del os.environ["RELAYD_BIN"]
            else:
                os.environ["RELAYD_BIN"] = old
        relay.wait_for_log("user_ignored", user="relayd-someone-else", running_as=TEST_USER)
        line = relay.wait_for_log("sandbox")
        self.assertNotIn("user", line)
        st = proc_status(relay.pid)
        self.assertEqual(st["Uid"].split(), [str(self.pw.pw_uid)] * 4)
        self.assertEqual((st["NoNewPrivs"], st["Seccomp"]), ("1", "2"))
        self.assertEqual((st["CapEff"], st["CapPrm"], st["CapAmb"]), ("0" * 16,) * 3)
        msg = make_message("alice@example.org", "bob@example.net", "unprivileged", "x")
        submit(relay, "alice@example.org", ["bob@example.net"], msg)

    def test_a_reload_naming_a_file_outside_the_sandbox_fails_clearly(self):
        relay = Relay.for_test(self)
        relay.start()
        line = relay.wait_for_log("sandbox", user=TEST_USER)
        if line.get("landlock") != "yes":
            self.skipTest("the kernel has no Landlock")
        elsewhere = tempfile.mkdtemp(prefix="relayd-elsewhere-")
        self.addCleanup(shutil.rmtree, elsewhere, True)
        share_with_user(elsewhere)
        cert, key = make_cert(elsewhere, name="moved")
        relay.update_config(submit={"tls_cert": cert, "tls_key": key})
        mark = relay.log_mark()
        relay.sighup()
        failed = relay.wait_for_log("reload_failed", since=mark)
        self.assertIn("cannot read '%s': Permission denied" % cert, failed["error"])
        self.assertTrue(relay.running)
        # The old certificate still serves: mail still flows.
        msg = make_message("alice@example.org", "bob@example.net", "after", "x")
        submit(relay, "alice@example.org", ["bob@example.net"], msg)

    def test_etc_files_replaced_by_rename_stay_readable(self):
        """useradd, groupadd and resolvconf write a new /etc/group (or passwd,
        resolv.conf) and rename it over the old one.  A Landlock rule on the
        file's inode would stop matching: control_group's lookup on SIGHUP
        (and, on a busy machine, the start's own lookups) then failed with
        'no such group'."""
        if not shutil.which("groupadd"):
            self.skipTest("needs groupadd")
        # A group only /etc/group knows (nss-systemd makes nobody's up).
        group = "relaydll%d" % os.getpid()
        subprocess.run(["groupadd", group], check=True)
        self.addCleanup(subprocess.run, ["groupdel", group])
        relay = Relay.for_test(self, control_group=group)
        relay.start()
        line = relay.wait_for_log("sandbox", user=TEST_USER)
        if line.get("landlock") != "yes":
            self.skipTest("the kernel has no Landlock")
        for path in ("/etc/group", "/etc/passwd"):
            before = os.stat(path)
            tmp = path + ".relayd-test"
            shutil.copy2(path, tmp)
            os.chown(tmp, before.st_uid, before.st_gid)
            os.replace(tmp, path)
            self.assertNotEqual(os.stat(path).st_ino, before.st_ino)
        mark = relay.log_mark()
        relay.sighup()
        relay.wait_for_log("reloaded", since=mark)
        self.assertEqual(relay.relayctl("queue", "list").returncode, 0)


if __name__ == "__main__":
    unittest.main()
