"""test_state_files.py - relayd's small state files (queue_dir/routes,
queue_dir/mta-sts, queue_dir/tlsrpt) survive a power loss as the old file
or the new one, and after the write is done, the new one.

They are all written by util_write_file_atomic(): the text goes to a
temporary file, which is fsynced and renamed over the real name.  The rename
is a change of the directory, and it is durable only once the directory
itself is fsynced; without that, a power loss right after `relayctl route
set` answered could bring back the old routes.  No test can pull the power,
so strace, attached to the real relayd, is the witness: the rename of the
routes file must be followed by an fsync of queue_dir.
"""

import os
import re
import shutil
import subprocess
import time
import unittest

from relay import Relay


@unittest.skipUnless(shutil.which("strace"), "strace is not installed")
class RenameIsFollowedByDirectorySync(unittest.TestCase):

    def test_route_set_syncs_queue_dir_after_rename(self):
        relay = Relay.for_test(self)
        relay.start()
        out = os.path.join(relay.tmpdir, "strace.out")
        # -f: the thread pool's threads; -y: paths for descriptors.
        tracer = subprocess.Popen(
            ["strace", "-f", "-y", "-e", "trace=rename,renameat,renameat2,fsync,fdatasync",
             "-o", out, "-p", str(relay.pid)],
            stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: tracer.poll() is None and (tracer.terminate(), tracer.wait()))
        # strace says "attached" once per thread on stderr: wait for the first.
        line = tracer.stderr.readline()
        self.assertIn("attached", line)

        r = relay.relayctl("route", "set", "state.example", "127.0.0.2:2525")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        routes = os.path.join(relay.queue_dir, "routes")
        qdir = os.path.realpath(relay.queue_dir)
        # The write runs on the thread pool after the answer: wait for it to
        # reach the directory sync (or give up, and show what strace saw).
        pattern = re.compile(r"fsync\(\d+<%s>\)\s+= 0" % re.escape(qdir))
        deadline = time.monotonic() + 20
        text = ""
        while time.monotonic() < deadline:
            with open(out) as f:
                text = f.read()
            if "routes" in text and pattern.search(text.split("routes", 1)[1]):
                break
            time.sleep(0.05)
        tracer.terminate()
        tracer.wait()
        with open(routes) as f:
            self.assertIn("state.example 127.0.0.2:2525", f.read())
        # The order: the temporary file synced, renamed over routes, then the
        # directory synced.
        ren = re.search(r"rename\w*\([^\n]*routes[^\n]*\)\s+= 0", text)
        self.assertIsNotNone(ren, text)
        self.assertRegex(text[:ren.start()], r"fsync\(\d+<[^>]*routes[^>]*>\)\s+= 0")
        self.assertRegex(text[ren.end():], pattern)


if __name__ == "__main__":
    unittest.main()
