/*
 * test_deliver_reply.c - the outbound client's protocol helpers, from tables:
 * the reply parser (codes, enhanced codes, continuation lines, malformed
 * replies), the formatted reply text, EHLO capabilities, xtext,
 * streaming dot-stuffing (whatever the chunking) and the MAIL/RCPT lines.
 */
#include <stdlib.h>
#include <string.h>

#include "deliver/deliver_int.h"
#include "common/util.h"
#include "router/router.h"
#include "check.h"

/* ------------------------------------------------------------------ */

struct reply_case {
	const char *lines[6];       /* fed in order until NULL */
	enum deliver_reply_rc want_rc;  /* result of the last line fed */
	int code;
	const char *status;         /* deliver_reply_status() */
	const char *text;           /* deliver_reply_format() */
};

static const struct reply_case reply_cases[] = {
	{ { "250 2.1.0 Ok\r\n" }, DELIVER_REPLY_DONE, 250, "2.1.0", "250 2.1.0 Ok" },
	{ { "250 Ok\r\n" }, DELIVER_REPLY_DONE, 250, "2.0.0", "250 Ok" },
	{ { "250\r\n" }, DELIVER_REPLY_DONE, 250, "2.0.0", "250" },
	{ { "250" }, DELIVER_REPLY_DONE, 250, "2.0.0", "250" },
	{ { "550 5.1.1 <x@y>: no such user\n" }, DELIVER_REPLY_DONE, 550, "5.1.1",
	  "550 5.1.1 <x@y>: no such user" },
	{ { "451 4.3.0 try later\r\n" }, DELIVER_REPLY_DONE, 451, "4.3.0", "451 4.3.0 try later" },
	/* the class of the enhanced code must match the reply's */
	{ { "550 4.1.1 mismatch\r\n" }, DELIVER_REPLY_DONE, 550, "5.0.0", "550 4.1.1 mismatch" },
	{ { "421 4.4.2 bye\r\n" }, DELIVER_REPLY_DONE, 421, "4.4.2", "421 4.4.2 bye" },
	{ { "554 5.7.1234 too long detail\r\n" }, DELIVER_REPLY_DONE, 554, "5.0.0",
	  "554 5.7.1234 too long detail" },
	{ { "552 5.3.4\r\n" }, DELIVER_REPLY_DONE, 552, "5.3.4", "552 5.3.4" },
	{ { "552 5.3.4.\r\n" }, DELIVER_REPLY_DONE, 552, "5.0.0", "552 5.3.4." },
	{ { "250 2.0.0Ok\r\n" }, DELIVER_REPLY_DONE, 250, "2.0.0", "250 2.0.0Ok" },
	/* continuation lines: joined with " / ", status from the first */
	{ { "250-mx.example.net\r\n", "250-PIPELINING\r\n", "250 SIZE 100\r\n" },
	  DELIVER_REPLY_DONE, 250, "2.0.0", "250 mx.example.net / PIPELINING / SIZE 100" },
	{ { "550-5.7.1 first\r\n", "550 5.7.1 second\r\n" }, DELIVER_REPLY_DONE, 550, "5.7.1",
	  "550 5.7.1 first / 5.7.1 second" },
	{ { "250-first\r\n" }, DELIVER_REPLY_MORE, 250, NULL, NULL },
	{ { "250-\r\n", "250 last\r\n" }, DELIVER_REPLY_DONE, 250, "2.0.0", "250 last" },
	/* control characters in the text are masked */
	{ { "550 bad\tbyte\x01here\r\n" }, DELIVER_REPLY_DONE, 550, "5.0.0", "550 bad?byte?here" },
	/* malformed */
	{ { "25\r\n" }, DELIVER_REPLY_BAD, 0, NULL, NULL },
	{ { "\r\n" }, DELIVER_REPLY_BAD, 0, NULL, NULL },
	{ { "abc def\r\n" }, DELIVER_REPLY_BAD, 0, NULL, NULL },
	{ { "150 one-hundred\r\n" }, DELIVER_REPLY_BAD, 0, NULL, NULL },
	{ { "650 six-hundred\r\n" }, DELIVER_REPLY_BAD, 0, NULL, NULL },
	{ { "2x0 ok\r\n" }, DELIVER_REPLY_BAD, 0, NULL, NULL },
	{ { "250_ok\r\n" }, DELIVER_REPLY_BAD, 0, NULL, NULL },
	{ { "250-a\r\n", "251 b\r\n" }, DELIVER_REPLY_BAD, 250, NULL, NULL },
	{ { "250-a\r\n", "garbage\r\n" }, DELIVER_REPLY_BAD, 250, NULL, NULL },
};

static void
test_reply(void)
{
	for (size_t i = 0; i < RELAY_ARRAY_LEN(reply_cases); i++) {
		const struct reply_case *c = &reply_cases[i];
		struct deliver_reply r;
		enum deliver_reply_rc rc = DELIVER_REPLY_BAD;

		deliver_reply_init(&r);
		for (size_t j = 0; j < RELAY_ARRAY_LEN(c->lines) && c->lines[j] != NULL; j++) {
			rc = deliver_reply_feed(&r, c->lines[j], strlen(c->lines[j]));
			if (rc != DELIVER_REPLY_MORE)
				break;
		}
		CHECK_MSG(rc == c->want_rc, "case %zu: rc %d, want %d", i, (int)rc, (int)c->want_rc);
		CHECK_MSG(r.code == c->code, "case %zu: code %d, want %d", i, r.code, c->code);
		if (c->status != NULL) {
			char st[16];

			deliver_reply_status(&r, st, sizeof(st));
			CHECK_STR(st, c->status);
		}
		if (c->text != NULL) {
			struct buf b = BUF_INIT;

			deliver_reply_format(&r, &b);
			CHECK_STR(buf_cstr(&b), c->text);
			buf_free(&b);
		}
		deliver_reply_free(&r);
	}
}

/* A reply longer than the kept text still parses; its text is bounded. */
static void
test_reply_long(void)
{
	struct deliver_reply r;
	char line[1100];
	int i;

	memset(line, 'x', sizeof(line));
	memcpy(line, "250-", 4);
	line[sizeof(line) - 1] = '\0';
	deliver_reply_init(&r);
	for (i = 0; i < 200; i++)
		CHECK_INT(deliver_reply_feed(&r, line, strlen(line)), DELIVER_REPLY_MORE);
	CHECK_INT(deliver_reply_feed(&r, "250 end", 7), DELIVER_REPLY_DONE);
	CHECK_INT(r.nlines, 201);
	CHECK(r.lines.len <= DELIVER_REPLY_MAX_TEXT);
	deliver_reply_reset(&r);
	CHECK_INT(deliver_reply_feed(&r, "220 again", 9), DELIVER_REPLY_DONE);
	CHECK_INT(r.code, 220);
	deliver_reply_free(&r);
}

/* ------------------------------------------------------------------ */

struct caps_case {
	const char *ehlo;           /* lines separated by '\n', without codes */
	struct deliver_caps want;
};

static const struct caps_case caps_cases[] = {
	{ "mx.example.net", { .esmtp = true } },
	{ "mx\nPIPELINING\nSIZE 10240000\n8BITMIME\nENHANCEDSTATUSCODES\nDSN\nSMTPUTF8\nSTARTTLS",
	  { .esmtp = true, .pipelining = true, .size = true, .size_max = 10240000,
	    .eightbitmime = true, .enhancedstatuscodes = true, .dsn = true, .smtputf8 = true,
	    .starttls = true } },
	{ "mx\nsize\npipelining\nstarttls", { .esmtp = true, .size = true, .pipelining = true,
	    .starttls = true } },
	{ "mx\nAUTH PLAIN LOGIN CRAM-MD5", { .esmtp = true, .auth_mechs = "PLAIN LOGIN CRAM-MD5" } },
	{ "mx\nAUTH=LOGIN", { .esmtp = true, .auth_mechs = "LOGIN" } },
	{ "mx\nAUTH CRAM-MD5 XOAUTH2", { .esmtp = true, .auth_mechs = "CRAM-MD5 XOAUTH2" } },
	/* lower case, both spellings, duplicates, and words that are not mechanism names */
	{ "mx\nAUTH plain scram-sha-256\nAUTH=PLAIN LOGIN\nAUTH BAD!NAME THIS-NAME-IS-FAR-TOO-LONG",
	  { .esmtp = true, .auth_mechs = "PLAIN SCRAM-SHA-256 LOGIN" } },
	{ "mx\nSTARTTLSX\nDSNX\nX-PIPELINING", { .esmtp = true } },
	{ "mx\nSIZE 0", { .esmtp = true, .size = true, .size_max = 0 } },
};

static void
test_caps(void)
{
	for (size_t i = 0; i < RELAY_ARRAY_LEN(caps_cases); i++) {
		const struct caps_case *c = &caps_cases[i];
		struct deliver_reply r;
		struct deliver_caps got;
		char line[256];
		const char *p = c->ehlo;

		deliver_reply_init(&r);
		while (*p != '\0') {
			const char *nl = strchr(p, '\n');
			size_t n = nl != NULL ? (size_t)(nl - p) : strlen(p);

			snprintf(line, sizeof(line), "250%c%.*s\r\n", nl != NULL ? '-' : ' ', (int)n, p);
			deliver_reply_feed(&r, line, strlen(line));
			p += n + (nl != NULL);
		}
		deliver_caps_parse(&got, &r);
		CHECK_MSG(memcmp(&got, &c->want, sizeof(got)) == 0, "caps case %zu", i);
		CHECK_STR(got.auth_mechs, c->want.auth_mechs);
		CHECK_INT(got.size_max, c->want.size_max);
		deliver_reply_free(&r);
	}
}

/* ------------------------------------------------------------------ */

struct enc_case {
	const char *in;
	const char *want;
};

static const struct enc_case xtext_cases[] = {
	{ "", "" },
	{ "alice@example.net", "alice@example.net" },
	{ "a+b@x", "a+2Bb@x" },
	{ "a=b", "a+3Db" },
	{ "two words", "two+20words" },
	{ "tab\there", "tab+09here" },
	{ "caf\xc3\xa9", "caf+C3+A9" },
	{ "~!", "~!" },
	{ "del\x7f", "del+7F" },
};

static void
test_encodings(void)
{
	struct buf b = BUF_INIT;

	for (size_t i = 0; i < RELAY_ARRAY_LEN(xtext_cases); i++) {
		buf_reset(&b);
		deliver_xtext(&b, xtext_cases[i].in);
		CHECK_STR(buf_cstr(&b), xtext_cases[i].want);
	}
	buf_free(&b);
}

/* ------------------------------------------------------------------ */

static const struct enc_case dot_cases[] = {
	{ "", ".\r\n" },
	{ "hello\r\n", "hello\r\n.\r\n" },
	{ ".hidden\r\n", "..hidden\r\n.\r\n" },
	{ "a\r\n.\r\n..\r\nb\r\n", "a\r\n..\r\n...\r\nb\r\n.\r\n" },
	{ "no newline at end", "no newline at end\r\n.\r\n" },
	{ "bare\nlf\n.x\n", "bare\r\nlf\r\n..x\r\n.\r\n" },
	{ "mid.dot\r\n", "mid.dot\r\n.\r\n" },
	{ "\r\n.\r\n", "\r\n..\r\n.\r\n" },
	{ "ends with cr\r", "ends with cr\r\n.\r\n" },
	{ ".", "..\r\n.\r\n" },
};

static void
test_dot(void)
{
	struct buf b = BUF_INIT;
	struct deliver_dot st;

	for (size_t i = 0; i < RELAY_ARRAY_LEN(dot_cases); i++) {
		const char *in = dot_cases[i].in;
		size_t n = strlen(in);

		/* The same output whatever the chunk size, 1 byte to all at once. */
		for (size_t chunk = 1; chunk <= n + 1; chunk++) {
			buf_reset(&b);
			deliver_dot_init(&st);
			for (size_t off = 0; off < n; off += chunk)
				deliver_dot_feed(&st, in + off, n - off < chunk ? n - off : chunk, &b);
			deliver_dot_end(&st, &b);
			CHECK_MSG(strcmp(buf_cstr(&b), dot_cases[i].want) == 0,
			    "dot case %zu chunk %zu: got \"%s\"", i, chunk, buf_cstr(&b));
		}
	}
	buf_free(&b);
}

/* ------------------------------------------------------------------ */

static void
test_commands(void)
{
	struct deliver_rcpt rcpts[] = {
		{ .addr = "bob@example.net", .orcpt = "rfc822;bob+x@example.net",
		  .notify = ENV_NOTIFY_SUCCESS | ENV_NOTIFY_FAILURE },
		{ .addr = "carol@example.net", .notify = ENV_NOTIFY_NEVER },
		{ .addr = "dave@example.net" },
		{ .addr = "eve@example.net", .orcpt = "e v e@x", .notify = ENV_NOTIFY_DELAY },
	};
	struct deliver_req req = {
		.sender = "alice@relay.test", .envid = "id=1 2", .ret = ENV_RET_HDRS,
		.body_len = 1234, .body_8bit = true, .smtputf8 = true,
		.rcpts = rcpts, .nrcpts = 4,
	};
	struct deliver_caps all = { .esmtp = true, .size = true, .size_max = 2000, .dsn = true,
	    .eightbitmime = true, .smtputf8 = true };
	struct deliver_caps none = { .esmtp = true };
	static const char *want_all[] = {
		"RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Bx@example.net\r\n",
		"RCPT TO:<carol@example.net> NOTIFY=NEVER\r\n",
		"RCPT TO:<dave@example.net>\r\n",
		"RCPT TO:<eve@example.net> NOTIFY=DELAY ORCPT=rfc822;e+20v+20e@x\r\n",
	};
	struct buf b = BUF_INIT;
	char st[16], text[256];

	deliver_fmt_mail(&b, &req, &all);
	CHECK_STR(buf_cstr(&b), "MAIL FROM:<alice@relay.test> SIZE=1234 BODY=8BITMIME SMTPUTF8 "
	    "RET=HDRS ENVID=id+3D1+202\r\n");
	buf_reset(&b);
	deliver_fmt_mail(&b, &req, &none);
	CHECK_STR(buf_cstr(&b), "MAIL FROM:<alice@relay.test>\r\n");
	for (size_t i = 0; i < RELAY_ARRAY_LEN(rcpts); i++) {
		buf_reset(&b);
		deliver_fmt_rcpt(&b, &rcpts[i], &all);
		CHECK_STR(buf_cstr(&b), want_all[i]);
		buf_reset(&b);
		deliver_fmt_rcpt(&b, &rcpts[i], &none);
		CHECK_MSG(strchr(buf_cstr(&b), '=') == NULL, "no DSN parameters without DSN: %s",
		    buf_cstr(&b));
	}
	req.sender = "";
	req.ret = ENV_RET_NONE;
	req.envid = NULL;
	req.body_8bit = false;
	req.smtputf8 = false;
	buf_reset(&b);
	deliver_fmt_mail(&b, &req, &all);
	CHECK_STR(buf_cstr(&b), "MAIL FROM:<> SIZE=1234\r\n");
	buf_free(&b);

	/* what may not be sent at all */
	struct {
		uint64_t len;
		bool eightbit, utf8;
		struct deliver_caps caps;
		const char *status;     /* NULL: may be sent */
	} rows[] = {
		{ 100, false, false, { .size = true, .size_max = 100 }, NULL },
		{ 101, false, false, { .size = true, .size_max = 100 }, "5.3.4" },
		{ 1u << 30, false, false, { .size = true, .size_max = 0 }, NULL },
		{ 1u << 30, false, false, { .size = false }, NULL },
		{ 10, true, false, { .eightbitmime = false }, "5.6.3" },
		{ 10, true, false, { .eightbitmime = true }, NULL },
		{ 10, false, true, { .eightbitmime = true }, "5.6.7" },
		{ 10, false, true, { .smtputf8 = true }, NULL },
	};
	for (size_t i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		bool refused;

		req.body_len = rows[i].len;
		req.body_8bit = rows[i].eightbit;
		req.smtputf8 = rows[i].utf8;
		refused = deliver_check_caps(&req, &rows[i].caps, st, sizeof(st), text, sizeof(text));
		CHECK_MSG(refused == (rows[i].status != NULL), "caps check row %zu", i);
		if (refused && rows[i].status != NULL) {
			CHECK_STR(st, rows[i].status);
			CHECK(text[0] != '\0');
		}
	}
}

int
main(void)
{
	test_reply();
	test_reply_long();
	test_caps();
	test_encodings();
	test_dot();
	test_commands();
	return check_done();
}
