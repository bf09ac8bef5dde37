"""test_submit_stream.py - DATA is streamed to the queue as it arrives: a
session's memory stays small whatever the message size.  A 40 MB message is
submitted while relayd's resident memory is sampled; it must grow by a small
fraction of the message, and the queued body must be the whole message."""

import os
import threading
import time
import unittest

from test_submit_smtp import QueueOnlyRelay, auth_session, read_queued, send_message, qid_of

SIZE = 40 * 1024 * 1024


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Streaming(unittest.TestCase):

    def test_large_message_does_not_grow_memory(self):
        relay = QueueOnlyRelay.for_test(self, submit={"max_message_size": "64M", "data_timeout": "2m"})
        if "ASAN_OPTIONS" in os.environ:
            # AddressSanitizer keeps freed chunks in a quarantine (256 MB by
            # default), which would count as relayd's memory here.
            self.addCleanup(os.environ.__setitem__, "ASAN_OPTIONS", os.environ["ASAN_OPTIONS"])
            os.environ["ASAN_OPTIONS"] += ":quarantine_size_mb=0:thread_local_quarantine_size_kb=0"
        relay.start()
        r = auth_session(relay)
        self.addCleanup(r.close)
        base = rss_kib(relay.pid)
        peak = [base]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss_kib(relay.pid))
                time.sleep(0.01)
        t = threading.Thread(target=sample)
        t.start()
        line = b"x" * 998 + b"\r\n"
        head = b"From: <alice@example.org>\r\nTo: <bob@example.net>\r\nSubject: big\r\n\r\n"
        body = head + line * (SIZE // len(line))
        try:
            code, text = send_message(r, "alice@example.org", ["bob@example.net"], body)
        finally:
            done.set()
            t.join()
        self.assertEqual(code, 250, text)
        growth_mib = (peak[0] - base) / 1024.0
        # A session that buffered the message would grow by 40 MB or more.
        self.assertLess(growth_mib, 8, "relayd grew by %.1f MiB for a 40 MiB message" % growth_mib)
        env, queued = read_queued(relay, qid_of(text))
        self.assertTrue(queued.endswith(line))
        self.assertGreaterEqual(len(queued), len(body))


if __name__ == "__main__":
    unittest.main()
