"""test_submit_bdat.py - CHUNKING/BDAT (RFC 3030) on submission, spoken by
hand over real TLS (Python's smtplib has no BDAT): exact byte counts, no
dot-stuffing, chunks pipelined straight behind their command lines and cut
anywhere (inside a CRLF, inside a header field, bigger than relayd's read
buffer), each non-LAST chunk answered with its octet count, LAST with the
queue id once the message is durable (SIGKILL right after keeps it), the
size limit (552, the rest of the chunks read and dropped, the session in
step), every bad sequence answered 503 with its octets consumed, bare LF/CR
refused as for DATA, and a message sent by BDAT reaches the next hop with
the same bytes as the same message sent by DATA.
"""

import os
import unittest

from client import make_message, raw_session, submit
from test_submit_smtp import QueueOnlyRelay
from test_submit_smtp import (auth_session, qid_of, queued_files, read_queued, send_message,
                              stop_cleanly)
from relay import Relay
import test_dkim

SENDER = "alice@example.org"
RCPT = "bob@example.net"

# A message that needs nothing added (Date and Message-ID given), with lines
# that DATA must dot-stuff and BDAT must not touch.
MESSAGE = (b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: chunks\r\n"
           b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <bdat-1@client.test>\r\n"
           b"\r\n.leading dot\r\n..two dots\r\n.\r\nbody line\r\n")


def bdat(chunks, last=True):
    """BDAT command lines, each followed at once by its chunk."""
    out = b""
    for i, c in enumerate(chunks):
        end = b" LAST" if last and i == len(chunks) - 1 else b""
        out += b"BDAT %d%s\r\n" % (len(c), end) + c
    return out


def split_at(data, cuts):
    """data cut at the given offsets."""
    pieces, prev = [], 0
    for c in list(cuts) + [len(data)]:
        pieces.append(data[prev:c])
        prev = c
    return pieces


def without_received(body):
    """The message after relayd's Received: field (its first, folded field)."""
    lines = body.split(b"\r\n")
    assert lines[0].startswith(b"Received: "), body[:100]
    i = 1
    while lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


class BdatTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.relay = QueueOnlyRelay(submit={"max_message_size": "2M"})
        cls.relay.start()

    @classmethod
    def tearDownClass(cls):
        stop_cleanly(cls.relay)

    def session(self):
        r = auth_session(self.relay)
        self.addCleanup(r.close)
        return r

    def begin(self, r, rcpts=(RCPT,)):
        self.assertEqual(r.cmd("MAIL FROM:<%s>" % SENDER)[0], 250)
        for rc in rcpts:
            self.assertEqual(r.cmd("RCPT TO:<%s>" % rc)[0], 250)

    def queued(self, reply):
        code, text = reply
        self.assertEqual(code, 250, text)
        self.assertRegex(text, r"^2\.0\.0 Ok: queued as \S+$")
        return qid_of(text)

    def send_chunks(self, r, chunks):
        """Pipeline the chunks; check every non-LAST reply; the LAST reply's qid."""
        r.send(bdat(chunks))
        for c in chunks[:-1]:
            self.assertEqual(r.read_reply(), (250, "2.0.0 Ok: %d octets received" % len(c)))
        return self.queued(r.read_reply())

    def test_ehlo_offers_chunking_and_not_binarymime(self):
        with raw_session(self.relay.host, self.relay.submit_port) as r:
            r.cmd("EHLO client.test")
            r.starttls()
            code, lines = (r.send("EHLO client.test\r\n"), r.read_reply_lines())[1]
            self.assertEqual(code, 250)
            self.assertIn("CHUNKING", lines)
            self.assertNotIn("BINARYMIME", lines)

    def test_one_chunk_is_queued_byte_for_byte_with_no_unstuffing(self):
        r = self.session()
        mark = self.relay.log_mark()
        self.begin(r)
        qid = self.send_chunks(r, [MESSAGE])
        _, body = read_queued(self.relay, qid)
        self.assertEqual(without_received(body), MESSAGE)
        self.assertTrue(body.startswith(b"Received: from client.test ([127.0.0.1])\r\n"
                                        b"\tby relay.test (relayd) with ESMTPSA id %s\r\n"
                                        % qid.encode()), body[:200])
        self.relay.wait_for_log("accepted", qid=qid, size=len(MESSAGE), since=mark)

    def test_same_queue_bytes_as_data(self):
        r = self.session()
        self.begin(r)
        qid_b = self.send_chunks(r, split_at(MESSAGE, [7, 40, 41, 100]))
        code, text = send_message(r, SENDER, [RCPT], MESSAGE.replace(b"\r\n.", b"\r\n.."))
        qid_d = self.queued((code, text))
        _, bb = read_queued(self.relay, qid_b)
        _, bd = read_queued(self.relay, qid_d)
        self.assertEqual(without_received(bb), without_received(bd))

    def test_pipelined_with_mail_and_rcpt_and_cut_anywhere(self):
        # cut inside a CRLF (after "\r"), inside a header field name, at a dot
        cr = MESSAGE.index(b"\r\n") + 1
        inside = MESSAGE.index(b"Subject") + 4
        dot = MESSAGE.index(b"\r\n.leading") + 2
        for cuts in ([cr], [inside], [dot], [cr, inside, dot],
                     list(range(1, len(MESSAGE)))):         # one octet per chunk
            with self.subTest(cuts=cuts[:4]):
                r = self.session()
                r.send(b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\n" % (SENDER.encode(), RCPT.encode())
                       + bdat(split_at(MESSAGE, cuts)))
                self.assertEqual(r.read_reply(), (250, "2.1.0 Ok"))
                self.assertEqual(r.read_reply(), (250, "2.1.5 Ok"))
                pieces = split_at(MESSAGE, cuts)
                for c in pieces[:-1]:
                    self.assertEqual(r.read_reply(),
                                     (250, "2.0.0 Ok: %d octets received" % len(c)))
                qid = self.queued(r.read_reply())
                _, body = read_queued(self.relay, qid)
                self.assertEqual(without_received(body), MESSAGE)

    def test_chunk_bigger_than_the_read_buffer(self):
        line = b"x" * 998 + b"\r\n"
        chunks = [MESSAGE + line * 300, line * 1500]        # ~1.5 MB in the second
        r = self.session()
        self.begin(r)
        qid = self.send_chunks(r, chunks)
        _, body = read_queued(self.relay, qid)
        self.assertEqual(without_received(body), b"".join(chunks))

    def test_bdat_0_last(self):
        r = self.session()
        self.begin(r)
        qid = self.send_chunks(r, [MESSAGE, b""])
        _, body = read_queued(self.relay, qid)
        self.assertEqual(without_received(body), MESSAGE)
        # an empty message: only what relayd adds
        self.begin(r)
        qid = self.send_chunks(r, [b""])
        _, body = read_queued(self.relay, qid)
        rest = without_received(body)
        self.assertRegex(rest, rb"^Date: [^\r\n]+\r\nMessage-ID: <%s@relay\.test>\r\n$"
                         % qid.encode())

    def test_a_last_line_without_crlf_gets_one(self):
        r = self.session()
        self.begin(r)
        qid = self.send_chunks(r, [MESSAGE + b"no line end"])
        _, body = read_queued(self.relay, qid)
        self.assertEqual(without_received(body), MESSAGE + b"no line end\r\n")

    def test_size_limit_drops_the_rest_and_stays_in_step(self):
        r = self.session()
        mark = self.relay.log_mark()
        before = queued_files(self.relay)
        self.begin(r)
        half = b"y" * 998 + b"\r\n"
        first = MESSAGE + half * 1000                        # ~1 MB of the 2 MB
        # the second chunk takes it over; the third (already pipelined) and
        # its octets, which hold command lines, are read and dropped
        r.send(bdat([first, half * 1100], last=False) + bdat([b"NOOP\r\nQUIT\r\n"])
               + b"NOOP\r\n")
        self.assertEqual(r.read_reply(), (250, "2.0.0 Ok: %d octets received" % len(first)))
        self.assertEqual(r.read_reply(), (552, "5.3.4 Error: message file too big"))
        self.assertEqual(r.read_reply(), (503, "5.5.1 Error: need MAIL command"))
        self.assertEqual(r.read_reply(), (250, "2.0.0 Ok"))  # the real NOOP
        self.assertEqual(queued_files(self.relay), before)
        self.assertEqual(self.relay.count_log("accepted", since=mark), 0)
        self.assertEqual(self.relay.count_log("rejected", since=mark, stage="data"), 1)
        # and the session still takes a message
        self.begin(r)
        self.send_chunks(r, [MESSAGE])

    def test_a_declared_size_over_the_limit_closes_without_reading(self):
        # relayd will not read more than max_message_size for a refused chunk:
        # 552, then 421 and the close, and the chunk's octets never run
        r = self.session()
        self.begin(r)
        r.send(b"BDAT %d LAST\r\n" % (2 * 1024 * 1024 + 1) + b"NOOP\r\n")
        self.assertEqual(r.read_reply(), (552, "5.3.4 Error: message file too big"))
        code, text = r.read_reply()
        self.assertEqual((code, text[:6]), (421, "4.3.4 "), text)
        self.assertTrue(r.wait_closed())

    def test_bad_sequences_get_503_and_their_octets_are_consumed(self):
        r = self.session()
        smuggle = b"RSET\r\nQUIT\r\n"
        # BDAT without MAIL, and without RCPT
        r.send(bdat([smuggle], last=False) + b"NOOP\r\n")
        self.assertEqual(r.read_reply(), (503, "5.5.1 Error: need MAIL command"))
        self.assertEqual(r.read_reply(), (250, "2.0.0 Ok"))
        self.assertEqual(r.cmd("MAIL FROM:<%s>" % SENDER)[0], 250)
        r.send(bdat([smuggle]) + b"NOOP\r\n")
        self.assertEqual(r.read_reply(), (503, "5.5.1 Error: need RCPT command"))
        self.assertEqual(r.read_reply(), (250, "2.0.0 Ok"))
        self.assertEqual(r.cmd("RCPT TO:<%s>" % RCPT)[0], 250)
        # between chunks: DATA, RCPT, MAIL and AUTH are out of sequence
        r.send(bdat([b"Subject: x\r\n"], last=False))
        self.assertEqual(r.read_reply(), (250, "2.0.0 Ok: 12 octets received"))
        self.assertEqual(r.cmd("DATA"),
                         (503, "5.5.1 Error: BDAT in progress, send BDAT with LAST or RSET"))
        self.assertEqual(r.cmd("RCPT TO:<carol@example.net>")[0], 503)
        self.assertEqual(r.cmd("MAIL FROM:<%s>" % SENDER)[0], 503)
        # the transaction goes on after them
        qid = self.send_chunks(r, [b"\r\nbody\r\n"])
        _, body = read_queued(self.relay, qid)
        self.assertTrue(without_received(body).startswith(b"Subject: x\r\n"))
        # RSET between chunks forgets the message
        before = queued_files(self.relay)
        self.begin(r)
        r.send(bdat([b"Subject: y\r\n"], last=False))
        self.assertEqual(r.read_reply()[0], 250)
        self.assertEqual(r.cmd("RSET"), (250, "2.0.0 Ok"))
        r.send(bdat([smuggle]) + b"NOOP\r\n")
        self.assertEqual(r.read_reply(), (503, "5.5.1 Error: need MAIL command"))
        self.assertEqual(r.read_reply(), (250, "2.0.0 Ok"))
        self.assertEqual(queued_files(self.relay), before)

    def test_data_after_a_last_chunk_needs_a_new_transaction(self):
        r = self.session()
        self.begin(r)
        self.send_chunks(r, [MESSAGE])
        self.assertEqual(r.cmd("DATA"), (503, "5.5.1 Error: need MAIL command"))
        r.send(bdat([b"x\r\n"]) + b"NOOP\r\n")
        self.assertEqual(r.read_reply(), (503, "5.5.1 Error: need MAIL command"))
        self.assertEqual(r.read_reply(), (250, "2.0.0 Ok"))

    def test_before_tls_and_auth_the_chunk_is_not_read_and_the_session_closes(self):
        # a client that has not logged in cannot make relayd read a chunk
        # (up to 2^64-1 octets): the refusal, then 421 and the close
        for size, tls in ((6, False), (6, True), (18446744073709551615, True)):
            with self.subTest(size=size, tls=tls), \
                    raw_session(self.relay.host, self.relay.submit_port) as r:
                r.cmd("EHLO client.test")
                want = "5.7.0 Must issue a STARTTLS command first"
                if tls:
                    r.starttls()
                    r.cmd("EHLO client.test")
                    want = "5.7.0 Authentication required"
                r.send(b"BDAT %d LAST\r\nQUIT\r\nNOOP\r\n" % size)
                self.assertEqual(r.read_reply(), (530, want))
                code, text = r.read_reply()
                self.assertEqual((code, text[:6]), (421, "4.7.0 "), text)
                self.assertTrue(r.wait_closed())

    def test_a_bdat_line_refused_before_the_command_table_closes_the_session(self):
        # a NUL, a leading space (bad syntax) or a line too long: the BDAT is
        # refused before its size is read, so its chunk (here command lines)
        # must not run: 500, then 421 and the close, and nothing is queued
        chunk = (b"RSET\r\nMAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nNOOP\r\n"
                 % (SENDER.encode(), RCPT.encode()))
        for line, reply in ((b"BDAT %d LAST\x00" % len(chunk),
                             "5.5.2 Error: NUL character in command"),
                            (b"bdat\x00 %d" % len(chunk), "5.5.2 Error: NUL character in command"),
                            (b" BDAT %d LAST" % len(chunk), "5.5.2 Error: bad syntax"),
                            (b"BDAT %d LAST" % len(chunk) + b" " * 13000,     # over the read limit
                             "5.5.2 Error: line too long")):
            with self.subTest(line=line[:20]):
                r = self.session()
                mark = self.relay.log_mark()
                self.begin(r)
                r.send(line + b"\r\n" + chunk)
                self.assertEqual(r.read_reply(), (500, reply))
                code, text = r.read_reply()
                self.assertEqual((code, text[:6]), (421, "4.5.0 "), text)
                self.assertTrue(r.wait_closed())
                self.assertEqual(self.relay.count_log("accepted", since=mark), 0)

    def test_trailing_spaces_after_the_size_are_accepted(self):
        r = self.session()
        self.begin(r)
        r.send(b"BDAT %d   \r\n" % len(MESSAGE) + MESSAGE + b"BDAT 0 LAST  \r\n")
        self.assertEqual(r.read_reply(), (250, "2.0.0 Ok: %d octets received" % len(MESSAGE)))
        self.queued(r.read_reply())

    def test_a_chunk_size_that_cannot_be_read_closes_the_session(self):
        r = self.session()
        self.begin(r)
        r.send(b"BDAT ten LAST\r\nQUIT\r\n")
        self.assertEqual(r.read_reply(), (501, "5.5.4 Syntax: BDAT chunk-size [LAST]"))
        code, text = r.read_reply()
        self.assertEqual(code, 421, text)
        self.assertTrue(r.wait_closed())

    def test_bare_lf_and_bare_cr_are_refused_as_in_data(self):
        for bad in (b"Subject: x\r\n\r\nline\nsmuggled\r\n",
                    b"Subject: x\r\n\r\nline\rmore\r\n",
                    b"Subject: x\r\n\r\nends in CR\r"):
            with self.subTest(bad=bad):
                r = self.session()
                mark = self.relay.log_mark()
                before = queued_files(self.relay)
                self.begin(r)
                r.send(bdat(split_at(bad, [len(bad) // 2])) + b"NOOP\r\n")
                self.assertEqual(r.read_reply()[0], 250)         # the first chunk
                code, text = r.read_reply()
                self.assertEqual(code, 550, text)
                self.assertTrue(text.startswith("5.6.11 "), text)
                self.assertEqual(r.read_reply(), (250, "2.0.0 Ok"))
                self.assertEqual(queued_files(self.relay), before)
                self.assertEqual(self.relay.count_log("accepted", since=mark), 0)

    def test_a_nul_byte_is_treated_as_data_treats_it(self):
        # whatever DATA does with a NUL in the text (refuse, or keep), BDAT does the same
        msg = MESSAGE + b"nul \x00 here\r\n"
        r = self.session()
        data_reply = send_message(r, SENDER, [RCPT], msg.replace(b"\r\n.", b"\r\n.."))
        self.begin(r)
        r.send(bdat(split_at(msg, [len(msg) - 8])))
        first = r.read_reply()
        self.assertEqual(first[0], 250)
        bdat_reply = r.read_reply()
        self.assertEqual(bdat_reply[0], data_reply[0], (data_reply, bdat_reply))
        if data_reply[0] == 250:
            _, bd = read_queued(self.relay, qid_of(data_reply[1]))
            _, bb = read_queued(self.relay, qid_of(bdat_reply[1]))
            self.assertEqual(without_received(bb), without_received(bd))
        else:
            self.assertEqual(bdat_reply, data_reply)
        self.assertEqual(r.cmd("NOOP"), (250, "2.0.0 Ok"))

    def test_long_line_is_refused_as_in_data(self):
        r = self.session()
        self.begin(r)
        long_line = b"Subject: x\r\n\r\n" + b"w" * 999 + b"\r\n"
        r.send(bdat(split_at(long_line, [20, 500])))
        self.assertEqual(r.read_reply()[0], 250)
        self.assertEqual(r.read_reply()[0], 250)
        code, text = r.read_reply()
        self.assertEqual(code, 554, text)
        self.assertTrue(text.startswith("5.6.0 "), text)


class BdatDurabilityTest(unittest.TestCase):

    def test_a_message_that_got_250_survives_sigkill(self):
        relay = QueueOnlyRelay.for_test(self)
        relay.start()
        r = auth_session(relay)
        self.addCleanup(r.close)
        r.cmd("MAIL FROM:<%s>" % SENDER)
        r.cmd("RCPT TO:<%s>" % RCPT)
        r.send(bdat(split_at(MESSAGE, [30, 31])))
        r.read_reply()
        r.read_reply()
        code, text = r.read_reply()
        self.assertEqual(code, 250, text)
        qid = qid_of(text)
        relay.kill9()
        relay.start()
        relay.wait_for_log("queue_scan", messages=1)
        self.assertIn(qid, queued_files(relay))
        env, body = read_queued(relay, qid)
        self.assertEqual(env["sender"], SENDER)
        self.assertEqual(env["rcpts"][0][1], RCPT)
        self.assertEqual(without_received(body), MESSAGE)


class BdatDeliveryTest(unittest.TestCase):
    """The next hop gets the same bytes whether the client used BDAT or DATA."""

    def test_bdat_and_data_deliver_identical_messages(self):
        relay = Relay.for_test(self)
        relay.dns.set_mx_ips("example.net", [(10, "127.0.0.2")])
        sink = relay.sink("127.0.0.2")
        relay.start()
        r = auth_session(relay)
        self.addCleanup(r.close)
        r.cmd("MAIL FROM:<%s>" % SENDER)
        r.cmd("RCPT TO:<%s>" % RCPT)
        r.send(bdat(split_at(MESSAGE, [11, 60])))
        r.read_reply()
        r.read_reply()
        code, text = r.read_reply()
        self.assertEqual(code, 250, text)
        qid_b = qid_of(text)
        qid_d = submit(relay, SENDER, [RCPT], MESSAGE.decode())      # smtplib: DATA
        relay.wait_for_log("delivered", qid=qid_b, timeout=30)
        relay.wait_for_log("delivered", qid=qid_d, timeout=30)
        sink.wait_for_messages(2, timeout=10)
        by_qid = {}
        for m in sink.messages:
            first = m.data.split(b"\r\n", 2)[1]                 # "\tby relay.test ... id QID"
            by_qid[first.rsplit(b" ", 1)[-1].decode()] = m
        self.assertEqual(sorted(by_qid), sorted([qid_b, qid_d]))
        self.assertEqual(without_received(by_qid[qid_b].data), MESSAGE)
        self.assertEqual(without_received(by_qid[qid_b].data),
                         without_received(by_qid[qid_d].data))
        self.assertEqual(by_qid[qid_b].rcpt_addrs, [RCPT])


class BdatDkimTest(test_dkim.DkimCase):
    """A message sent by BDAT is signed as DATA's is: both signatures verify."""

    def test_bdat_message_is_signed(self):
        self.make()
        r = auth_session(self.relay)
        self.addCleanup(r.close)
        r.cmd("MAIL FROM:<%s>" % SENDER)
        r.cmd("RCPT TO:<%s>" % RCPT)
        cut = MESSAGE.index(b"Subject") + 3
        r.send(bdat(split_at(MESSAGE, [cut, cut + 1, len(MESSAGE) - 5])))
        for _ in range(3):
            self.assertEqual(r.read_reply()[0], 250)
        code, text = r.read_reply()
        self.assertEqual(code, 250, text)
        qid = qid_of(text)
        [m] = self.sink.wait_for_messages(1, timeout=60)
        self.verify_all(m.data, 2)
        self.assertTrue(m.data.endswith(b"\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n"
                                        b"body line\r\n"))
        line = self.relay.wait_for_log("accepted", qid=qid)
        self.assertEqual(line["dkim"], "d=example.org;s=s2026r,d=example.org;s=s2026e")


if __name__ == "__main__":
    unittest.main()
