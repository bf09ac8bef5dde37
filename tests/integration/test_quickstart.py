"""test_quickstart.py - the README's first command, contrib/quickstart.sh,
leaves a relay that a real client (smtplib, STARTTLS + AUTH as the printed
demo user) can reach and that queues its message.  The build and install
steps are skipped here (ctest runs after the build); everything else is the
script as a newcomer runs it."""

import json
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
import unittest

from client import client_context, make_message
from relay import REPO, TEST_USER, free_port, relayctl_bin, relayd_bin


class Quickstart(unittest.TestCase):

    def test_quickstart_relay_accepts_mail_from_the_demo_user(self):
        tmp = tempfile.mkdtemp(prefix="relayd-quickstart-")
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        os.chmod(tmp, 0o755)        # relayd's user must reach the quick-start directory
        port = free_port()
        tls_port = free_port(exclude=(port,))
        env = dict(os.environ, QUICKSTART_DIR=os.path.join(tmp, "qs"), QUICKSTART_SKIP_BUILD="1",
                   QUICKSTART_PORT=str(port), QUICKSTART_TLS_PORT=str(tls_port),
                   QUICKSTART_USER=TEST_USER, RELAYD_BIN=relayd_bin())
        out = open(os.path.join(tmp, "out"), "w+")
        proc = subprocess.Popen(["sh", os.path.join(REPO, "contrib", "quickstart.sh")], env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def stop():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)
            out.close()
        self.addCleanup(stop)

        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                self.assertIsNone(proc.poll(), "quickstart exited")
                self.assertLess(time.time(), deadline, "nothing listens on %d" % port)
                time.sleep(0.2)
        out.seek(0)
        text = out.read()
        password = re.search(r"demo user:\s+demo\s+password: (\S+)", text).group(1)

        with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
            s.starttls(context=client_context())
            s.login("demo", password)
            msg = make_message("demo@example.test", "someone@example.net", "hello", "first mail")
            code, reply = s.docmd("MAIL FROM:<demo@example.test>")
            self.assertEqual(code, 250, reply)
            code, reply = s.docmd("RCPT TO:<someone@example.net>")
            self.assertEqual(code, 250, reply)
            code, reply = s.data(msg)
            self.assertEqual(code, 250, reply)
        self.assertRegex(reply.decode(), r"^2\.0\.0 Ok: queued as [0-9A-Z]+$")
        qid = reply.decode().rsplit(" ", 1)[-1]
        # The quick-start relay logs to a file (named in what it printed), so
        # that `relayctl audit` finds its log through the configuration too.
        log = re.search(r"log:\s+(\S+)", text).group(1)
        self.assertEqual(log, os.path.join(tmp, "qs", "relayd.log"))
        deadline = time.time() + 10
        while True:
            with open(log) as f:
                logged = f.read()
            if re.search(r"event=accepted qid=%s from=demo@example.test" % qid, logged):
                break
            self.assertLess(time.time(), deadline, "no event=accepted for %s" % qid)
            time.sleep(0.1)
        # Started as root, it runs as the unprivileged user.
        if os.geteuid() == 0:
            self.assertRegex(logged, r"event=sandbox user=%s " % TEST_USER)
        conf = os.path.join(tmp, "qs", "relayd.conf")
        self.assertIn("relayctl -c %s audit" % conf, text)
        r = subprocess.run([relayctl_bin(), "-c", conf, "audit", "--json"], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["files"], [log])
        # It says what becomes of the test mail on a machine without real DNS.
        self.assertRegex(" ".join(text.split()), r"without real DNS.*bounces")


if __name__ == "__main__":
    unittest.main()
