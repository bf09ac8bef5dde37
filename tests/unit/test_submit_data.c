/*
 * test_submit_data.c - the DATA line machine from tables: the only end of
 * data is <CRLF>.<CRLF>; bare LF / bare CR (SMTP smuggling) are refused and
 * never end the data early; dot-unstuffing; size and line-length limits;
 * Received: first, Date:/Message-ID: added at the end of the header section
 * only when missing; From: collected (unfolded).  Also Received: formatting,
 * and BDAT's octets cut anywhere: the same checks, no dot-stuffing, no end line.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/util.h"
#include "submit/submit_int.h"

#define RCVD  "Received: x\r\n"
#define DATE  "Date: D\r\n"
#define MSGID "Message-ID: <Q@h>\r\n"

struct sink {
	struct buf b;
	int writes;
	int fail_after;             /* fail the nth write (0 = never) */
};

static int
sink_write(void *arg, const void *p, size_t len)
{
	struct sink *s = arg;

	if (++s->writes == s->fail_after)
		return RELAY_EIO;
	buf_append(&s->b, p, len);
	return 0;
}

/*
 * Feed input split after each '\n' as io_getline() would; return how many
 * octets were consumed when the end of data was seen (or -1).
 */
static long
feed(struct submit_data *d, const char *in, size_t len)
{
	size_t off = 0;

	while (off < len) {
		const char *nl = memchr(in + off, '\n', len - off);
		size_t n = nl ? (size_t)(nl - (in + off)) + 1 : len - off;

		if (submit_data_line(d, in + off, n) == 1)
			return (long)(off + n);
		off += n;
	}
	return -1;
}

static void
test_lines(void)
{
	static const struct {
		const char *name;
		const char *in;
		long end;               /* where the end of data was seen, -1 = never */
		int err;
		const char *out;        /* NULL: not checked (error) */
		uint64_t size;
	} t[] = {
		{ "simple", "Subject: hi\r\n\r\nbody\r\n.\r\n", 24, SUBMIT_DATA_OK,
		  RCVD "Subject: hi\r\n" DATE MSGID "\r\nbody\r\n", 21 },
		{ "empty message", ".\r\n", 3, SUBMIT_DATA_OK, RCVD DATE MSGID, 0 },
		{ "keeps Date and Message-ID",
		  "Date: x\r\nmessage-id: <a@b>\r\n\r\nb\r\n.\r\n", 36, SUBMIT_DATA_OK,
		  RCVD "Date: x\r\nmessage-id: <a@b>\r\n\r\nb\r\n", 33 },
		{ "header only", "Subject: s\r\n.\r\n", 15, SUBMIT_DATA_OK,
		  RCVD "Subject: s\r\n" DATE MSGID, 12 },
		{ "body without blank line", "Subject: s\r\nno colon here\r\n.\r\n", 30, SUBMIT_DATA_OK,
		  RCVD "Subject: s\r\n" DATE MSGID "no colon here\r\n", 27 },
		{ "folded header", "Subject: a\r\n b\r\nDate: d\r\n\r\n.\r\n", 30, SUBMIT_DATA_OK,
		  RCVD "Subject: a\r\n b\r\nDate: d\r\n" MSGID "\r\n", 27 },
		{ "dot-unstuffing", "\r\n..\r\n..x\r\n.y\r\n.\r\n", 18, SUBMIT_DATA_OK,
		  RCVD DATE MSGID "\r\n.\r\n.x\r\ny\r\n", 12 },
		{ "dot not at line start", "\r\na.\r\n .\r\n.\r\n", 13, SUBMIT_DATA_OK,
		  RCVD DATE MSGID "\r\na.\r\n .\r\n", 10 },
		{ "data after the end stays unread", "\r\nx\r\n.\r\nMAIL FROM:<a@b.c>\r\n", 8,
		  SUBMIT_DATA_OK, RCVD DATE MSGID "\r\nx\r\n", 5 },
		/* smuggling: none of these end the data */
		{ "bare LF dot bare LF", "\r\nx\n.\nMAIL FROM:<a@b.c>\r\n", -1, SUBMIT_DATA_BARE, NULL, 0 },
		{ "bare LF then dot CRLF", "\r\nx\n.\r\nRCPT TO:<a@b.c>\r\n", -1, SUBMIT_DATA_BARE, NULL, 0 },
		{ "CRLF dot bare LF", "\r\nx\r\n.\nMAIL FROM:<a@b.c>\r\n", -1, SUBMIT_DATA_BARE, NULL, 0 },
		{ "bare CR dot", "\r\nx\r.\r\nDATA\r\n", -1, SUBMIT_DATA_BARE, NULL, 0 },
		{ "bare CR in a line", "Subject: a\rb\r\n\r\n", -1, SUBMIT_DATA_BARE, NULL, 0 },
		{ "smuggled message, real end later",
		  "\r\nx\n.\nMAIL FROM:<e@v.il>\r\nDATA\r\nevil\r\n.\r\n", 41, SUBMIT_DATA_BARE, NULL, 0 },
		{ "bare LF ends only at a real CRLF.CRLF",
		  "a\n.\r\n.\r\n", 8, SUBMIT_DATA_BARE, NULL, 0 },
	};
	struct submit_data d;
	struct sink s;
	size_t i;
	long end;

	submit_data_init(&d);
	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		memset(&s, 0, sizeof(s));
		submit_data_begin(&d, 1000000, false, RCVD, DATE, MSGID, sink_write, &s);
		end = feed(&d, t[i].in, strlen(t[i].in));
		CHECK_MSG(end == t[i].end, "%s: end %ld want %ld", t[i].name, end, t[i].end);
		if (end >= 0)
			submit_data_finish(&d);
		CHECK_MSG((int)d.err == t[i].err, "%s: err %d want %d", t[i].name, d.err, t[i].err);
		if (t[i].out != NULL) {
			CHECK_STR(buf_cstr(&s.b), t[i].out);
			CHECK_INT(d.size, t[i].size);
		}
		buf_free(&s.b);
	}
	submit_data_free(&d);
}

static void
test_limits(void)
{
	struct submit_data d;
	struct sink s;
	struct buf in = BUF_INIT;
	size_t i;

	submit_data_init(&d);

	/* size: 10 octets allowed; "12345678\r\n" fits, one more line does not */
	memset(&s, 0, sizeof(s));
	submit_data_begin(&d, 10, false, RCVD, DATE, MSGID, sink_write, &s);
	CHECK_INT(feed(&d, "12345678\r\n.\r\n", 13), 13);
	CHECK_INT(d.err, SUBMIT_DATA_OK);
	submit_data_begin(&d, 10, false, RCVD, DATE, MSGID, sink_write, &s);
	CHECK_INT(feed(&d, "12345678\r\nx\r\n.\r\n", 16), 16);
	CHECK_INT(d.err, SUBMIT_DATA_TOO_BIG);
	buf_free(&s.b);

	/* text line: 998 octets + CRLF is the limit; stuffed dot not counted */
	for (i = 0; i < 998; i++)
		buf_putc(&in, 'a');
	buf_puts(&in, "\r\n.\r\n");
	memset(&s, 0, sizeof(s));
	submit_data_begin(&d, 1000000, false, RCVD, DATE, MSGID, sink_write, &s);
	CHECK(feed(&d, in.data, in.len) > 0);
	CHECK_INT(d.err, SUBMIT_DATA_OK);
	buf_reset(&in);
	buf_putc(&in, '.');
	for (i = 0; i < 998; i++)
		buf_putc(&in, '.');
	buf_puts(&in, "\r\n.\r\n");
	submit_data_begin(&d, 1000000, false, RCVD, DATE, MSGID, sink_write, &s);
	CHECK(feed(&d, in.data, in.len) > 0);
	CHECK_INT(d.err, SUBMIT_DATA_OK);
	buf_reset(&in);
	for (i = 0; i < 999; i++)
		buf_putc(&in, 'a');
	buf_puts(&in, "\r\n.\r\n");
	submit_data_begin(&d, 1000000, false, RCVD, DATE, MSGID, sink_write, &s);
	CHECK(feed(&d, in.data, in.len) > 0);
	CHECK_INT(d.err, SUBMIT_DATA_LONG_LINE);

	/* the io discarded a long line: the error sticks, ".\r\n" still ends */
	submit_data_begin(&d, 1000000, false, RCVD, DATE, MSGID, sink_write, &s);
	submit_data_long_line(&d);
	CHECK_INT(feed(&d, ".\r\n", 3), 3);
	CHECK_INT(d.err, SUBMIT_DATA_LONG_LINE);
	buf_free(&s.b);

	/* a failed write is remembered; nothing is written after it */
	memset(&s, 0, sizeof(s));
	s.fail_after = 1;
	submit_data_begin(&d, 100000000, false, RCVD, DATE, MSGID, sink_write, &s);
	buf_reset(&in);
	for (i = 0; i < SUBMIT_DATA_CHUNK / 10 + 10; i++)
		buf_puts(&in, "123456789\r\n");
	buf_puts(&in, "123456789\r\n");
	CHECK_INT(feed(&d, in.data, in.len), -1);
	CHECK_INT(d.err, SUBMIT_DATA_WRITE);
	CHECK_INT(s.b.len, 0);
	buf_free(&s.b);

	/* memory stays bounded: staging never grows far past one chunk */
	memset(&s, 0, sizeof(s));
	submit_data_begin(&d, 100000000, false, RCVD, DATE, MSGID, sink_write, &s);
	for (i = 0; i < 100000; i++)
		submit_data_line(&d, "0123456789012345678901234567890123456789\r\n", 42);
	CHECK(d.out.cap <= 2 * SUBMIT_DATA_CHUNK + 64);
	CHECK(s.writes > 100);
	buf_free(&s.b);

	buf_free(&in);
	submit_data_free(&d);
}

/* BDAT: in whole, octet by octet, and in two pieces cut at every offset. */
static void
chunked_run(struct submit_data *d, struct sink *s, const char *in, size_t len, size_t cut,
    bool bytewise)
{
	size_t i;

	memset(s, 0, sizeof(*s));
	submit_data_begin(d, 1000000, false, RCVD, DATE, MSGID, sink_write, s);
	submit_data_chunked(d);
	if (bytewise) {
		for (i = 0; i < len; i++)
			submit_data_bytes(d, in + i, 1);
	} else {
		submit_data_bytes(d, in, cut);
		submit_data_bytes(d, in + cut, len - cut);
	}
	submit_data_bytes_last(d);
	submit_data_finish(d);
}

static void
test_chunked(void)
{
	static const struct {
		const char *name;
		const char *in;
		int err;
		const char *out;        /* NULL: not checked (error) */
		uint64_t size;
	} t[] = {
		{ "simple", "Subject: hi\r\n\r\nbody\r\n", SUBMIT_DATA_OK,
		  RCVD "Subject: hi\r\n" DATE MSGID "\r\nbody\r\n", 21 },
		{ "empty (BDAT 0 LAST)", "", SUBMIT_DATA_OK, RCVD DATE MSGID, 0 },
		{ "dots are text, never unstuffed", "Subject: s\r\n\r\n.\r\n..x\r\n.y\r\n",
		  SUBMIT_DATA_OK, RCVD "Subject: s\r\n" DATE MSGID "\r\n.\r\n..x\r\n.y\r\n", 26 },
		{ "no end-of-data line: what follows is text",
		  "\r\nx\r\n.\r\nMAIL FROM:<a@b.c>\r\n", SUBMIT_DATA_OK,
		  RCVD DATE MSGID "\r\nx\r\n.\r\nMAIL FROM:<a@b.c>\r\n", 27 },
		{ "a last line without CRLF gets one", "Subject: s\r\n\r\nend", SUBMIT_DATA_OK,
		  RCVD "Subject: s\r\n" DATE MSGID "\r\nend\r\n", 19 },
		{ "header without CRLF at the end", "Subject: s", SUBMIT_DATA_OK,
		  RCVD "Subject: s\r\n" DATE MSGID, 12 },
		{ "bare LF", "\r\nx\ny\r\n", SUBMIT_DATA_BARE, NULL, 0 },
		{ "bare LF dot bare LF", "\r\nx\n.\nMAIL FROM:<a@b.c>\r\n", SUBMIT_DATA_BARE, NULL, 0 },
		{ "bare CR in a line", "Subject: a\rb\r\n\r\n", SUBMIT_DATA_BARE, NULL, 0 },
		{ "ends in a bare CR", "\r\nx\r", SUBMIT_DATA_BARE, NULL, 0 },
		{ "ends in a bare LF", "\r\nx\n", SUBMIT_DATA_BARE, NULL, 0 },
	};
	struct submit_data d;
	struct sink s;
	struct buf in = BUF_INIT;
	size_t i, cut, len;
	int way;

	submit_data_init(&d);
	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		len = strlen(t[i].in);
		for (way = 0; way < 2; way++)
			for (cut = 0; cut <= len; cut++) {
				chunked_run(&d, &s, t[i].in, len, cut, way == 1);
				CHECK_MSG((int)d.err == t[i].err, "%s (cut %zu/%d): err %d want %d",
				    t[i].name, cut, way, d.err, t[i].err);
				if (t[i].out != NULL) {
					CHECK_MSG(strcmp(buf_cstr(&s.b), t[i].out) == 0,
					    "%s (cut %zu/%d): \"%s\"", t[i].name, cut, way, buf_cstr(&s.b));
					CHECK_INT(d.size, t[i].size);
				}
				buf_free(&s.b);
				if (way == 1)
					break;
			}
	}

	/* text lines: 998 octets + CRLF fit, 999 do not, nor a run without LF;
	 * the lines after an over-long one are still read through */
	for (i = 0; i < 998; i++)
		buf_putc(&in, '.');
	buf_puts(&in, "\r\n");
	for (cut = 0; cut <= in.len; cut += 97) {
		chunked_run(&d, &s, in.data, in.len, cut, false);
		CHECK_MSG(d.err == SUBMIT_DATA_OK, "998 + CRLF (cut %zu): %d", cut, d.err);
		CHECK_INT(d.size, 1000);
		buf_free(&s.b);
	}
	buf_reset(&in);
	for (i = 0; i < 999; i++)
		buf_putc(&in, 'a');
	buf_puts(&in, "\r\nnext\r\n");
	for (cut = 0; cut <= in.len; cut += 97) {
		chunked_run(&d, &s, in.data, in.len, cut, false);
		CHECK_MSG(d.err == SUBMIT_DATA_LONG_LINE, "999 + CRLF (cut %zu): %d", cut, d.err);
		buf_free(&s.b);
	}
	buf_reset(&in);
	for (i = 0; i < 5000; i++)
		buf_putc(&in, 'b');
	chunked_run(&d, &s, in.data, in.len, 2500, false);
	CHECK_INT(d.err, SUBMIT_DATA_LONG_LINE);
	CHECK(d.part.cap <= 2 * SUBMIT_TEXT_LINE_MAX + 64);     /* never held whole */
	buf_free(&s.b);

	/* DATA after BDAT on the same state: submit_data_begin() forgets BDAT */
	memset(&s, 0, sizeof(s));
	submit_data_begin(&d, 1000000, false, RCVD, DATE, MSGID, sink_write, &s);
	CHECK_INT(feed(&d, "\r\n..x\r\n.\r\n", 10), 10);
	submit_data_finish(&d);
	CHECK_STR(buf_cstr(&s.b), RCVD DATE MSGID "\r\n.x\r\n");
	buf_free(&s.b);

	buf_free(&in);
	submit_data_free(&d);
}

static void
test_from(void)
{
	static const struct {
		const char *in, *from;
		unsigned nfrom;
		int err;
	} t[] = {
		{ "From: alice@example.com\r\n\r\nFrom: not@header\r\n.\r\n", " alice@example.com", 1, 0 },
		{ "from:Alice\r\n <alice@example.com>\r\nTo: x\r\n\r\n.\r\n", "Alice <alice@example.com>", 1, 0 },
		{ "From: a@x\r\nFrom: b@y\r\n\r\n.\r\n", " a@x", 2, 0 },
		{ "Subject: none\r\n\r\n.\r\n", "", 0, 0 },
	};
	struct submit_data d;
	struct sink s;
	size_t i;

	submit_data_init(&d);
	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		memset(&s, 0, sizeof(s));
		submit_data_begin(&d, 100000, true, RCVD, DATE, MSGID, sink_write, &s);
		CHECK(feed(&d, t[i].in, strlen(t[i].in)) > 0);
		CHECK_STR(buf_cstr(&d.from), t[i].from);
		CHECK_INT(d.nfrom, t[i].nfrom);
		CHECK_INT(d.err, t[i].err);
		buf_free(&s.b);
	}
	submit_data_free(&d);
}

static void
test_received(void)
{
	struct submit_received r = {
		.helo = "client.example", .client_ip = "127.0.0.1", .client_host = NULL,
		.hostname = "relay.test", .protocol = "ESMTPSA", .qid = "ABC123",
		.tls_version = "TLSv1.3", .tls_cipher = "TLS_AES_256_GCM_SHA384", .tls_bits = 256,
		.rcpt = "bob@example.org", .now_ms = 0,
	};
	struct buf b = BUF_INIT;

	submit_data_received(&b, &r);
	CHECK_STR(buf_cstr(&b),
	    "Received: from client.example ([127.0.0.1])\r\n"
	    "\tby relay.test (relayd) with ESMTPSA id ABC123\r\n"
	    "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n"
	    "\tfor <bob@example.org>; Thu, 1 Jan 1970 00:00:00 +0000\r\n");
	buf_reset(&b);
	r.client_ip = "::1";
	r.client_host = "localhost";
	r.tls_version = NULL;
	r.rcpt = NULL;
	r.protocol = "ESMTPA";
	submit_data_received(&b, &r);
	CHECK_STR(buf_cstr(&b),
	    "Received: from client.example (localhost [IPv6:::1])\r\n"
	    "\tby relay.test (relayd) with ESMTPA id ABC123; Thu, 1 Jan 1970 00:00:00 +0000\r\n");
	buf_free(&b);

	CHECK_STR(submit_data_protocol(true, true, true, false), "ESMTPSA");
	CHECK_STR(submit_data_protocol(true, true, false, false), "ESMTPS");
	CHECK_STR(submit_data_protocol(true, false, true, false), "ESMTPA");
	CHECK_STR(submit_data_protocol(true, false, false, false), "ESMTP");
	CHECK_STR(submit_data_protocol(true, true, true, true), "UTF8SMTPSA");
	CHECK_STR(submit_data_protocol(false, true, true, false), "SMTP");
}

int
main(void)
{
	test_lines();
	test_limits();
	test_chunked();
	test_from();
	test_received();
	return check_done();
}
