"""tmpfs.py - a small file system of a test's own, to fill up for real.

    qdir = small_tmpfs(self, os.path.join(tmp, "queue"), "12m")   # skips unless root
    filler = os.path.join(qdir, "filler")
    fill(filler)            # no block left: writes fail with ENOSPC
    os.unlink(filler)       # room again

Mounting needs root; small_tmpfs() skips the test otherwise (or when mount
fails), and unmounts it at cleanup.
"""

import errno
import os
import subprocess


def small_tmpfs(test, path, size):
    """Mount a tmpfs of size ("4m") on path (made, mode 0700) for test."""
    if os.geteuid() != 0:
        test.skipTest("needs root to mount a small tmpfs")
    os.makedirs(path, mode=0o700, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "tmpfs", path],
                       capture_output=True, text=True)
    if r.returncode != 0:
        test.skipTest("cannot mount a tmpfs: %s" % r.stderr.strip())
    test.addCleanup(subprocess.run, ["umount", "-l", path])
    return path


def fill(path):
    """Write path until the file system has no block left."""
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 16, 4096, 1):
            while True:
                try:
                    f.write(b"\0" * chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
