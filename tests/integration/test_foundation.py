"""test_foundation.py - the daemon's lifecycle, configuration checking, log
format and control socket, exercised on the real relayd and relayctl."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import unittest

from relay import Relay, relayctl_bin, relayd_bin, parse_log_line

LOG_LINE = re.compile(r'^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=(debug|info|notice|warning|err|crit) '
                      r'event=[a-z_]+( [a-z_]+=("([^"\\]|\\.)*"|[^ "=]+))*$')


class ConfigCheck(unittest.TestCase):
    """relayd -c FILE -n: 0 for a valid file, else FILE:LINE: message."""

    def setUp(self):
        self.relay = Relay()
        self.addCleanup(self.relay.close)

    def write(self, name, text):
        path = os.path.join(self.relay.tmpdir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_valid_config_passes(self):
        rc, err = self.relay.check_config()
        self.assertEqual(rc, 0, err)

    def test_errors_name_file_and_line(self):
        good = self.relay.config_text()
        cases = {
            "unknown key": (good + "\nbogus_key = 1;\n", "unknown key"),
            "bad duration": (good.replace('"1s"', '"1 fortnight"'), "duration"),
            "missing cert": (good.replace(self.relay.cert, "/nonexistent/cert.pem"), "/nonexistent/cert.pem"),
            "bad listen": (good.replace("127.0.0.1:%d" % self.relay.submit_port, "127.0.0.1:notaport"), "listen"),
        }
        for name, (text, needle) in cases.items():
            with self.subTest(name):
                path = self.write("broken.conf", text)
                rc, err = self.relay.check_config(path)
                self.assertNotEqual(rc, 0)
                self.assertRegex(err, re.escape(path) + r":\d+: ")
                self.assertIn(needle, err)
                # The line named is the line of the offending setting.
                line = int(re.search(re.escape(path) + r":(\d+):", err).group(1))
                self.assertGreater(line, 0)
                if name == "unknown key":
                    self.assertEqual(line, text.count("\n"))

    def test_start_refuses_broken_config(self):
        path = self.write("broken.conf", self.relay.config_text() + "\nbogus_key = 1;\n")
        r = subprocess.run([relayd_bin(), "-c", path], capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 1)
        self.assertIn("unknown key", r.stderr)

    def test_usage_error_exits_2(self):
        r = subprocess.run([relayd_bin(), "-x"], capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 2)


class Lifecycle(unittest.TestCase):

    def setUp(self):
        self.relay = Relay.for_test(self)

    def test_stats_end_to_end(self):
        self.relay.start()
        r = self.relay.relayctl("stats")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(?m)^accepted\s+0$")
        self.assertRegex(r.stdout, r"(?m)^auth_failed\s+0$")
        doc = self.relay.relayctl("stats", "--json", json=True)
        for key in ("accepted", "delivered", "deferred", "bounced", "expired", "ndr_sent", "auth_failed"):
            self.assertIn(key, doc["counters"])
        self.assertGreaterEqual(doc["uptime_s"], 0)

    def test_relayctl_without_relay(self):
        r = subprocess.run([relayctl_bin(), "-s", self.relay.control_socket, "stats"],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not running", r.stderr)

    def test_relayctl_usage_errors(self):
        for args in (["frobnicate"], ["queue", "show"], ["stats", "--bogus"], []):
            with self.subTest(args=args):
                r = subprocess.run([relayctl_bin(), "-s", self.relay.control_socket, *args],
                                   capture_output=True, text=True, timeout=20)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn("usage", r.stderr.lower() + r.stdout.lower())

    def test_control_socket_is_private(self):
        self.relay.start()
        mode = os.stat(self.relay.control_socket).st_mode & 0o777
        self.assertEqual(mode & 0o077, 0, oct(mode))

    def test_peer_credentials_are_checked(self):
        """Even with the file opened up, a foreign uid is refused by SO_PEERCRED."""
        if os.geteuid() != 0 or shutil.which("setpriv") is None:
            self.skipTest("needs root and setpriv to act as another user")
        self.relay.start()
        os.chmod(self.relay.tmpdir, 0o755)
        os.chmod(self.relay.control_socket, 0o666)
        exe = os.path.join(self.relay.tmpdir, "relayctl")
        shutil.copy(relayctl_bin(), exe)
        os.chmod(exe, 0o755)
        # 65533: neither root nor relayd's own user (the harness runs it as nobody, 65534).
        r = subprocess.run(["setpriv", "--reuid=65533", "--regid=65533", "--clear-groups",
                            exe, "-s", self.relay.control_socket, "stats"],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("permission denied", r.stderr)
        self.relay.wait_for_log("control_denied", uid="65533")

    def test_sighup_reload_good_and_bad(self):
        self.relay.start()
        mark = self.relay.log_mark()
        self.relay.sighup()
        self.relay.wait_for_log("reloaded", since=mark)
        # A broken config is logged and the old one stays in force.
        with open(self.relay.config_path, "a") as f:
            f.write("\nbogus_key = 1;\n")
        mark = self.relay.log_mark()
        self.relay.sighup()
        ev = self.relay.wait_for_log("reload_failed", since=mark)
        self.assertIn("unknown key", ev["error"])
        self.assertRegex(ev["error"], re.escape(self.relay.config_path) + r":\d+:")
        r = self.relay.relayctl("stats")
        self.assertEqual(r.returncode, 0)
        # relayctl reload says so too, and exits 1.
        r = self.relay.relayctl("reload")
        self.assertEqual(r.returncode, 1)
        self.assertIn("rejected", r.stderr)
        self.relay.write_config()
        r = self.relay.relayctl("reload")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("reloaded", r.stdout)

    def test_reload_compares_with_what_is_in_use(self):
        """reload_listen_ignored and reload_ignored compare the new
        configuration with the listeners and the queue directory in use, not
        with the last reload's: setting them back is quiet."""
        self.relay.start()
        listen = list(self.relay.config["submit"]["listen"])
        queue_dir = self.relay.config["queue_dir"]
        other_dir = os.path.join(self.relay.tmpdir, "queue-other")
        os.makedirs(other_dir, mode=0o700)
        port = self.relay.submit_port + 1
        self.relay.config["submit"]["listen"] = ["%s:%d" % (self.relay.host, port)]
        self.relay.update_config(queue_dir=other_dir)
        mark = self.relay.log_mark()
        self.relay.sighup()
        self.relay.wait_for_log("reloaded", since=mark)
        self.relay.wait_for_log("reload_listen_ignored", since=mark)
        ev = self.relay.wait_for_log("reload_ignored", since=mark, setting="queue_dir")
        self.assertEqual(ev["kept"], queue_dir)
        # back to what is in use: nothing to ignore
        self.relay.config["submit"]["listen"] = listen
        self.relay.update_config(queue_dir=queue_dir)
        mark = self.relay.log_mark()
        self.relay.sighup()
        self.relay.wait_for_log("reloaded", since=mark)
        self.assertEqual(self.relay.count_log("reload_listen_ignored", since=mark), 0)
        self.assertEqual(self.relay.count_log("reload_ignored", since=mark), 0)

    def test_sigterm_stops_cleanly(self):
        self.relay.start()
        rc = self.relay.stop()
        self.assertEqual(rc, 0)
        self.relay.wait_for_log("stopped", clean="yes")
        self.assertFalse(os.path.exists(self.relay.control_socket))

    def test_second_instance_refused(self):
        self.relay.start()
        r = subprocess.run([relayd_bin(), "-c", self.relay.config_path],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 1)
        self.assertTrue("another relayd" in r.stderr or "in use" in r.stderr, r.stderr)

    def test_log_lines_follow_the_format(self):
        self.relay.start()
        self.relay.relayctl("stats")
        self.relay.sighup()
        self.relay.wait_for_log("reloaded")
        self.relay.stop()
        with open(self.relay.log_path) as f:
            lines = [l.rstrip("\n") for l in f if l.strip()]
        self.assertTrue(lines)
        for line in lines:
            self.assertRegex(line, LOG_LINE)
            self.assertIn("event", parse_log_line(line))


if __name__ == "__main__":
    unittest.main()
