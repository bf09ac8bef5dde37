"""test_unit_file.py - the shipped systemd files, checked by systemd's own
tools: contrib/systemd/relayd.service passes `systemd-analyze verify` (with
ExecStart pointing at the relayd under test, since verify checks that the
binary exists), `systemd-analyze security --offline=true` rates its exposure
2.0 or lower, and relayd.sysusers plus relayd.tmpfiles, applied to an empty
root directory, make the relayd user and its directories with the owners and
modes relayd needs (queue 0700).  Needs systemd installed (not running).
"""

import os
import re
import shutil
import stat
import subprocess
import tempfile
import unittest

from relay import REPO, relayd_bin

SYSTEMD = os.path.join(REPO, "contrib", "systemd")
UNIT = os.path.join(SYSTEMD, "relayd.service")
MAX_EXPOSURE = 2.0


def unit_settings(path):
    """[(section, key, value)] of a unit file, in order."""
    out, section = [], None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            out.append((section, key.strip(), value.strip()))
    return out


class UnitFileTest(unittest.TestCase):

    def setUp(self):
        if shutil.which("systemd-analyze") is None:
            self.fail("systemd-analyze is missing: sh contrib/install-deps.sh installs systemd")
        self.tmp = tempfile.mkdtemp(prefix="relayd-unit-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_verify_is_clean(self):
        relayd = os.path.abspath(relayd_bin())
        self.assertTrue(os.access(relayd, os.X_OK), relayd)
        with open(UNIT) as f:
            text = f.read()
        self.assertIn("/usr/sbin/relayd ", text)
        copy = os.path.join(self.tmp, "relayd.service")
        with open(copy, "w") as f:
            f.write(text.replace("/usr/sbin/relayd ", relayd + " "))
        # --man=no: the man pages named by Documentation= are not installed here.
        r = subprocess.run(["systemd-analyze", "verify", "--man=no", copy],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual((r.stdout + r.stderr).strip(), "", "verify complained")

    def test_security_exposure_is_at_most_2(self):
        r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", UNIT],
                           capture_output=True, text=True, timeout=60)
        m = re.search(r"Overall exposure level for relayd\.service: (\d+\.\d+)", r.stdout)
        self.assertIsNotNone(m, r.stdout + r.stderr)
        exposure = float(m.group(1))
        print("systemd-analyze security: exposure %.1f" % exposure)
        self.assertLessEqual(exposure, MAX_EXPOSURE, r.stdout)

    def test_the_unit_runs_relayd_unprivileged_and_checks_the_config_first(self):
        s = unit_settings(UNIT)
        svc = {k: v for sec, k, v in s if sec == "Service"}
        self.assertEqual(svc["Type"], "notify")
        self.assertEqual(svc["User"], "relayd")
        self.assertEqual(svc["ExecStart"], "/usr/sbin/relayd -c /etc/relayd/relayd.conf")
        self.assertEqual(svc["ExecStartPre"], "/usr/sbin/relayd -n -c /etc/relayd/relayd.conf")
        self.assertEqual(svc["ExecReload"], "/bin/kill -HUP $MAINPID")
        self.assertEqual(svc["CapabilityBoundingSet"], "CAP_NET_BIND_SERVICE")
        self.assertEqual(svc["AmbientCapabilities"], "CAP_NET_BIND_SERVICE")
        self.assertIn("/var/spool/relayd", svc["ReadWritePaths"].split())
        self.assertIn(("Install", "WantedBy", "multi-user.target"), s)

    def test_sysusers_and_tmpfiles_make_the_user_and_its_directories(self):
        root = self.tmp
        os.makedirs(os.path.join(root, "etc"))
        for cmd in (["systemd-sysusers", "--root=" + root,
                     os.path.join(SYSTEMD, "relayd.sysusers")],
                    ["systemd-tmpfiles", "--root=" + root, "--create",
                     os.path.join(SYSTEMD, "relayd.tmpfiles")]):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(os.path.join(root, "etc", "passwd")) as f:
            users = {l.split(":")[0]: l.strip().split(":") for l in f if l.strip()}
        self.assertIn("relayd", users)
        uid = int(users["relayd"][2])
        self.assertNotEqual(uid, 0)
        self.assertEqual(users["relayd"][6], "/usr/sbin/nologin")
        for path, mode in (("var/spool/relayd", 0o700), ("var/log/relayd", 0o750),
                           ("run/relayd", 0o755)):
            st = os.stat(os.path.join(root, path))
            self.assertEqual(st.st_uid, uid, path)
            self.assertEqual(stat.S_IMODE(st.st_mode), mode, path)


if __name__ == "__main__":
    unittest.main()
