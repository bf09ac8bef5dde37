/*
 * test_submit_parse.c - the submission tokenizer from tables: command
 * splitting, MAIL/RCPT paths (quoted local parts, source routes, postmaster,
 * limits), ESMTP parameters, xtext, NOTIFY, ORCPT and header From:
 * mailboxes (base64 is in test_codec.c).
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/util.h"
#include "router/router.h"
#include "submit/submit_int.h"

static void
test_command(void)
{
	static const struct {
		const char *line, *verb, *args;
		int rc;
	} t[] = {
		{ "EHLO client.example", "EHLO", "client.example", 0 },
		{ "QUIT", "QUIT", "", 0 },
		{ "NOOP   ", "NOOP", "", 0 },
		{ "MAIL FROM:<a@b.c> SIZE=10  ", "MAIL", "FROM:<a@b.c> SIZE=10", 0 },
		{ "RCPT   TO:<x@y.z>", "RCPT", "TO:<x@y.z>", 0 },
		{ "", NULL, NULL, RELAY_EINVAL },
		{ " EHLO x", NULL, NULL, RELAY_EINVAL },
	};
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		char *line = strdup(t[i].line), *verb = NULL, *args = NULL;
		int rc = submit_parse_command(line, &verb, &args);

		CHECK_INT(rc, t[i].rc);
		if (rc == 0) {
			CHECK_STR(verb, t[i].verb);
			CHECK_STR(args, t[i].args);
		}
		free(line);
	}
}

static void
test_path(void)
{
	static const struct {
		const char *args, *prefix;
		bool postmaster;
		int err;
		const char *addr;
		size_t nparams;
		bool utf8;
	} t[] = {
		{ "FROM:<alice@example.com>", "FROM:", false, SUBMIT_PARSE_OK, "alice@example.com", 0, false },
		{ "from:<alice@example.com>", "FROM:", false, SUBMIT_PARSE_OK, "alice@example.com", 0, false },
		{ "FROM: <alice@example.com>", "FROM:", false, SUBMIT_PARSE_OK, "alice@example.com", 0, false },
		{ "FROM:<>", "FROM:", false, SUBMIT_PARSE_OK, "", 0, false },
		{ "FROM:<> SIZE=100", "FROM:", false, SUBMIT_PARSE_OK, "", 1, false },
		{ "FROM:<a@b.example> SIZE=100 BODY=8BITMIME SMTPUTF8", "FROM:", false, SUBMIT_PARSE_OK,
		  "a@b.example", 3, false },
		{ "FROM:<\"alice\"@example.com>", "FROM:", false, SUBMIT_PARSE_OK, "alice@example.com", 0, false },
		{ "FROM:<\"john doe\"@example.com>", "FROM:", false, SUBMIT_PARSE_OK,
		  "\"john doe\"@example.com", 0, false },
		{ "FROM:<\"a>b\"@example.com>", "FROM:", false, SUBMIT_PARSE_OK, "\"a>b\"@example.com", 0, false },
		{ "FROM:<\"a\\\"b\"@example.com>", "FROM:", false, SUBMIT_PARSE_OK, "\"a\\\"b\"@example.com", 0, false },
		{ "FROM:<@relay.one,@relay.two:alice@example.com>", "FROM:", false, SUBMIT_PARSE_OK,
		  "alice@example.com", 0, false },
		{ "FROM:<alice@[192.0.2.1]>", "FROM:", false, SUBMIT_PARSE_OK, "alice@[192.0.2.1]", 0, false },
		{ "FROM:<J\xc3\xb6rg@b\xc3\xbc.example>", "FROM:", false, SUBMIT_PARSE_OK,
		  "J\xc3\xb6rg@b\xc3\xbc.example", 0, true },
		{ "TO:<Postmaster>", "TO:", true, SUBMIT_PARSE_OK, "postmaster", 0, false },
		{ "TO:<bob@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+40example.org", "TO:", true,
		  SUBMIT_PARSE_OK, "bob@example.org", 2, false },
		/* errors */
		{ "FROM:alice@example.com", "FROM:", false, SUBMIT_PARSE_ESYNTAX, NULL, 0, false },
		{ "TO:<a@b.c>", "FROM:", false, SUBMIT_PARSE_ESYNTAX, NULL, 0, false },
		{ "FROM:<alice@example.com", "FROM:", false, SUBMIT_PARSE_EADDR, NULL, 0, false },
		{ "FROM:<alice>", "FROM:", false, SUBMIT_PARSE_EADDR, NULL, 0, false },
		{ "TO:<postmaster>", "TO:", false, SUBMIT_PARSE_EADDR, NULL, 0, false },
		{ "FROM:<alice@>", "FROM:", false, SUBMIT_PARSE_EADDR, NULL, 0, false },
		{ "FROM:<.alice@example.com>", "FROM:", false, SUBMIT_PARSE_EADDR, NULL, 0, false },
		{ "FROM:<al..ice@example.com>", "FROM:", false, SUBMIT_PARSE_EADDR, NULL, 0, false },
		{ "FROM:<alice@-example.com>", "FROM:", false, SUBMIT_PARSE_EADDR, NULL, 0, false },
		{ "FROM:<alice@exa mple.com>", "FROM:", false, SUBMIT_PARSE_EADDR, NULL, 0, false },
		{ "FROM:<alice@example..com>", "FROM:", false, SUBMIT_PARSE_EADDR, NULL, 0, false },
		{ "FROM:<a@b@c.example>", "FROM:", false, SUBMIT_PARSE_EADDR, NULL, 0, false },
		{ "FROM:<@relay.one:>", "FROM:", false, SUBMIT_PARSE_EADDR, NULL, 0, false },
		{ "FROM:<\"unterminated@example.com>", "FROM:", false, SUBMIT_PARSE_EADDR, NULL, 0, false },
		{ "FROM:<a@b.example>junk", "FROM:", false, SUBMIT_PARSE_ESYNTAX, NULL, 0, false },
		{ "FROM:<a@b.example> SIZE=", "FROM:", false, SUBMIT_PARSE_EPARAM, NULL, 0, false },
		{ "FROM:<a@b.example> =1", "FROM:", false, SUBMIT_PARSE_EPARAM, NULL, 0, false },
		{ "FROM:<a@b.example> A=B=C", "FROM:", false, SUBMIT_PARSE_EPARAM, NULL, 0, false },
		{ "FROM:<a@b.example> A B C D E F G H I J K L M N O P Q", "FROM:", false,
		  SUBMIT_PARSE_ETOOMANY, NULL, 0, false },
		{ "FROM:<aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@b.example>",
		  "FROM:", false, SUBMIT_PARSE_EADDR, NULL, 0, false },
	};
	struct submit_path p;
	size_t i;

	memset(&p, 0, sizeof(p));
	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		char *args = strdup(t[i].args);
		int rc = submit_parse_path(args, t[i].prefix, t[i].postmaster, &p);

		CHECK_MSG((rc == 0) == (t[i].err == SUBMIT_PARSE_OK), "row %zu: %s", i, t[i].args);
		CHECK_MSG((int)p.err == t[i].err, "row %zu: err %d want %d", i, p.err, t[i].err);
		if (rc == 0) {
			CHECK_STR(buf_cstr(&p.addr), t[i].addr);
			CHECK_INT(p.nparams, t[i].nparams);
			CHECK_INT(p.utf8, t[i].utf8);
		}
		free(args);
	}
	buf_free(&p.addr);
}

static void
test_params(void)
{
	char args[] = "TO:<b@c.example> NOTIFY=NEVER ORCPT=rfc822;b+2Bx@c.example FLAG";
	struct submit_path p;

	memset(&p, 0, sizeof(p));
	CHECK_INT(submit_parse_path(args, "TO:", false, &p), 0);
	CHECK_INT(p.nparams, 3);
	CHECK_STR(p.params[0].key, "NOTIFY");
	CHECK_STR(p.params[0].value, "NEVER");
	CHECK_STR(p.params[1].key, "ORCPT");
	CHECK_STR(p.params[1].value, "rfc822;b+2Bx@c.example");
	CHECK_STR(p.params[2].key, "FLAG");
	CHECK(p.params[2].value == NULL);
	buf_free(&p.addr);
}

static void
test_xtext(void)
{
	static const struct {
		const char *in, *out;
		int rc;
	} t[] = {
		{ "abc", "abc", 0 },
		{ "a+2Bb", "a+b", 0 },
		{ "a+3Db+20c", "a=b c", 0 },
		{ "a+2bb", "a+b", 0 },
		{ "", "", 0 },
		{ "a+2", NULL, RELAY_EINVAL },
		{ "a+ZZ", NULL, RELAY_EINVAL },
		{ "a=b", NULL, RELAY_EINVAL },
		{ "a b", NULL, RELAY_EINVAL },
	};
	struct buf out = BUF_INIT;
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		CHECK_INT(submit_parse_xtext(t[i].in, &out), t[i].rc);
		if (t[i].rc == 0)
			CHECK_STR(buf_cstr(&out), t[i].out);
	}
	buf_free(&out);
}

static void
test_notify_orcpt(void)
{
	static const struct {
		const char *in;
		int rc;
		unsigned bits;
	} n[] = {
		{ "NEVER", 0, ENV_NOTIFY_NEVER },
		{ "success", 0, ENV_NOTIFY_SUCCESS },
		{ "SUCCESS,FAILURE,DELAY", 0, ENV_NOTIFY_SUCCESS | ENV_NOTIFY_FAILURE | ENV_NOTIFY_DELAY },
		{ "FAILURE,DELAY", 0, ENV_NOTIFY_FAILURE | ENV_NOTIFY_DELAY },
		{ "NEVER,SUCCESS", RELAY_EINVAL, 0 },
		{ "SOMETIMES", RELAY_EINVAL, 0 },
		{ "SUCCESS,", RELAY_EINVAL, 0 },
		{ "", RELAY_EINVAL, 0 },
	};
	static const struct {
		const char *in, *out;
		int rc;
	} o[] = {
		{ "rfc822;bob@example.org", "rfc822;bob@example.org", 0 },
		{ "rfc822;bob+2Bx@example.org", "rfc822;bob+x@example.org", 0 },
		{ "utf-8;j+C3+B6rg@example.org", "utf-8;j\xc3\xb6rg@example.org", 0 },
		{ "bob@example.org", NULL, RELAY_EINVAL },
		{ ";bob@example.org", NULL, RELAY_EINVAL },
		{ "rfc822;", NULL, RELAY_EINVAL },
		{ "rfc 822;x@y", NULL, RELAY_EINVAL },
	};
	struct buf out = BUF_INIT;
	unsigned bits;
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(n); i++) {
		bits = 0;
		CHECK_INT(submit_parse_notify(n[i].in, &bits), n[i].rc);
		if (n[i].rc == 0)
			CHECK_INT(bits, n[i].bits);
	}
	for (i = 0; i < RELAY_ARRAY_LEN(o); i++) {
		CHECK_INT(submit_parse_orcpt(o[i].in, &out), o[i].rc);
		if (o[i].rc == 0)
			CHECK_STR(buf_cstr(&out), o[i].out);
	}
	buf_free(&out);
}

static void
collect(void *arg, const char *addr)
{
	struct buf *b = arg;

	if (b->len > 0)
		buf_putc(b, '|');
	buf_puts(b, addr);
}

static void
test_header_addrs(void)
{
	static const struct {
		const char *value, *want;
		int n;
	} t[] = {
		{ " alice@example.com", "alice@example.com", 1 },
		{ " Alice Smith <alice@example.com>", "alice@example.com", 1 },
		{ " \"Smith, Alice\" <alice@example.com>", "alice@example.com", 1 },
		{ " alice@example.com (Alice Smith)", "alice@example.com", 1 },
		{ " =?utf-8?q?J=C3=B6rg?= <jorg@example.com>", "jorg@example.com", 1 },
		{ " a@x.example, B <b@y.example>", "a@x.example|b@y.example", 2 },
		{ " Friends: a@x.example, b@y.example;", "a@x.example|b@y.example", 2 },
		{ " Alice\r\n <alice@example.com>", "alice@example.com", 1 },
		{ " <\"alice\"@example.com>", "alice@example.com", 1 },
		{ " (c (nested)) alice@example.com", "alice@example.com", 1 },
		{ " <alice@example.com> junk", NULL, RELAY_EINVAL },
		{ " <>", NULL, RELAY_EINVAL },
		{ " not an address", NULL, RELAY_EINVAL },
		{ " <alice@example.com", NULL, RELAY_EINVAL },
		{ " (unclosed alice@example.com", NULL, RELAY_EINVAL },
		{ "", "", 0 },
	};
	struct buf got = BUF_INIT;
	size_t i;
	int n;

	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		buf_reset(&got);
		n = submit_parse_header_addrs(t[i].value, strlen(t[i].value), collect, &got);
		CHECK_MSG(n == t[i].n, "row %zu: n=%d want %d", i, n, t[i].n);
		if (t[i].n >= 0)
			CHECK_STR(buf_cstr(&got), t[i].want);
	}
	buf_free(&got);
}

/* BDAT chunk-size [LAST] (RFC 3030 2). */
static void
test_bdat(void)
{
	static const struct {
		const char *in;
		int rc;
		uint64_t size;
		bool last;
	} t[] = {
		{ "0", 0, 0, false },
		{ "0 LAST", 0, 0, true },
		{ "1024", 0, 1024, false },
		{ "1024 last", 0, 1024, true },
		{ "1024 Last", 0, 1024, true },
		{ "7  LAST", 0, 7, true },
		{ "007", 0, 7, false },
		{ "18446744073709551615", 0, UINT64_MAX, false },
		{ "18446744073709551616", RELAY_EINVAL, 0, false },
		{ "99999999999999999999999", RELAY_EINVAL, 0, false },
		{ "", RELAY_EINVAL, 0, false },
		{ "LAST", RELAY_EINVAL, 0, false },
		{ "-1", RELAY_EINVAL, 0, false },
		{ "+1", RELAY_EINVAL, 0, false },
		{ "1e3", RELAY_EINVAL, 0, false },
		{ "12 LAST x", RELAY_EINVAL, 0, false },
		{ "12 LASTX", RELAY_EINVAL, 0, false },
		{ "12 FIRST", RELAY_EINVAL, 0, false },
		{ "12\tLAST", RELAY_EINVAL, 0, false },
		{ "12 ", 0, 12, false },                /* trailing spaces */
		{ "12 LAST  ", 0, 12, true },
		{ "12  ", 0, 12, false },
	};
	uint64_t size;
	bool last;
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		size = 99;
		last = true;
		CHECK_MSG(submit_parse_bdat(t[i].in, &size, &last) == t[i].rc, "\"%s\"", t[i].in);
		if (t[i].rc == 0)
			CHECK_MSG(size == t[i].size && last == t[i].last, "\"%s\": %llu %d", t[i].in,
			    (unsigned long long)size, last);
	}
}

int
main(void)
{
	test_command();
	test_path();
	test_params();
	test_xtext();
	test_notify_orcpt();
	test_header_addrs();
	test_bdat();
	return check_done();
}
