/*
 * test_log.c - the event log's line format and quoting (a contract with
 * admins' tools), its RFC 3339 timestamps, and the buffer type under it.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/util.h"
#include "tests/unit/check.h"

static void
test_quote(void)
{
	static const struct { const char *in; const char *want; } rows[] = {
		{ "plain", "plain" },
		{ "alice@example.org", "alice@example.org" },
		{ "", "\"\"" },
		{ "two words", "\"two words\"" },
		{ "say \"hi\"", "\"say \\\"hi\\\"\"" },
		{ "back\\slash", "\"back\\\\slash\"" },
		{ "a=b", "\"a=b\"" },
		{ "line\r\nnext", "\"line\\r\\nnext\"" },
		{ "tab\there", "\"tab\\there\"" },
		{ "bell\a", "\"bell\\x07\"" },
		{ "550 5.1.1 <bob@x>: user unknown", "\"550 5.1.1 <bob@x>: user unknown\"" },
	};
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		struct buf b = BUF_INIT;
		log_quote(&b, rows[i].in, strlen(rows[i].in));
		CHECK_STR(buf_cstr(&b), rows[i].want);
		buf_free(&b);
	}
}

static void
test_line(void)
{
	char path[] = "/tmp/relayd-test-log-XXXXXX";
	char text[1024];
	struct log_line l;
	ssize_t n;
	int fd = mkstemp(path);

	CHECK(fd >= 0);
	CHECK_INT(log_open(path), 0);
	log_begin(&l, LOG_INFO, "delivered");
	log_kv(&l, "qid", "0A1B2C");
	log_kv(&l, "reply", "250 2.0.0 Ok queued");
	log_kvu(&l, "attempts", 3);
	log_kv(&l, "skipped", NULL);
	log_end(&l);
	log_begin(&l, LOG_DEBUG, "filtered");       /* below the default level */
	log_end(&l);
	log_close();

	n = read(fd, text, sizeof(text) - 1);
	CHECK(n > 0);
	text[n > 0 ? n : 0] = '\0';
	CHECK_MSG(strncmp(text, "ts=", 3) == 0, "%s", text);
	/* ts=YYYY-MM-DDTHH:MM:SS.mmmZ */
	CHECK_MSG(strlen(text) > 27 && text[13] == 'T' && text[26] == 'Z', "%s", text);
	CHECK_MSG(strstr(text, " level=info event=delivered qid=0A1B2C reply=\"250 2.0.0 Ok queued\" attempts=3\n")
	    != NULL, "%s", text);
	CHECK(strstr(text, "filtered") == NULL);
	CHECK(strstr(text, "skipped") == NULL);
	close(fd);
	unlink(path);
}

static void
test_buf(void)
{
	struct buf b = BUF_INIT;
	char *s;

	CHECK_STR(buf_cstr(&b), "");
	buf_append(&b, "a\0b", 3);
	CHECK_INT(b.len, 3);
	CHECK(b.data[3] == '\0');
	buf_printf(&b, "%0300d", 7);                /* forces growth mid-printf */
	CHECK_INT(b.len, 303);
	buf_consume(&b, 2);
	CHECK(b.data[0] == 'b');
	buf_truncate(&b, 1);
	CHECK_STR(buf_cstr(&b), "b");
	s = buf_steal(&b);
	CHECK_STR(s, "b");
	CHECK(b.data == NULL && b.len == 0);
	free(s);
	buf_free(&b);
}

static void
test_durations(void)
{
	static const struct { uint64_t ms; const char *want; } rows[] = {
		{ 0, "0s" }, { 250, "250ms" }, { 1000, "1s" }, { 90000, "1m30s" },
		{ 86400000ULL * 5, "5d" }, { 3600000 + 1, "1h1ms" },
	};
	size_t i;
	char out[32];

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		util_format_duration(rows[i].ms, out, sizeof(out));
		CHECK_STR(out, rows[i].want);
	}
}

/* The two RFC 3339 forms (log: milliseconds; relayctl: seconds), and the
 * parser reading back what they write. */
static void
test_rfc3339(void)
{
	static const struct { uint64_t ms; const char *log, *sec; } rows[] = {
		{ 0, "1970-01-01T00:00:00.000Z", "1970-01-01T00:00:00Z" },
		{ 1795346491123ULL, "2026-11-22T11:21:31.123Z", "2026-11-22T11:21:31Z" },
		{ 951782400999ULL, "2000-02-29T00:00:00.999Z", "2000-02-29T00:00:00Z" },
		{ 1709251199000ULL, "2024-02-29T23:59:59.000Z", "2024-02-29T23:59:59Z" },
		{ 4102444800001ULL, "2100-01-01T00:00:00.001Z", "2100-01-01T00:00:00Z" },
	};
	char out[40];
	uint64_t ms;
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		util_rfc3339(rows[i].ms, out, sizeof(out));
		CHECK_STR(out, rows[i].log);
		util_rfc3339_sec(rows[i].ms, out, sizeof(out));
		CHECK_STR(out, rows[i].sec);
		CHECK_INT(util_rfc3339_parse(rows[i].log, &ms), 0);
		CHECK_INT(ms, rows[i].ms);
		CHECK_INT(util_rfc3339_parse(rows[i].sec, &ms), 0);
		CHECK_INT(ms, rows[i].ms / 1000 * 1000);
	}
	/* A leap second is the next minute's first. */
	CHECK_INT(util_rfc3339_parse("2016-12-31T23:59:60Z", &ms), 0);
	CHECK_INT(ms, 1483228800000ULL);
	CHECK_INT(util_rfc3339_parse("1969-12-31T23:59:59Z", &ms), RELAY_EINVAL);
	CHECK_INT(util_rfc3339_parse("1970-01-01T00:30:00+01:00", &ms), RELAY_EINVAL);
}

int
main(void)
{
	test_quote();
	test_line();
	test_buf();
	test_durations();
	test_rfc3339();
	return check_done();
}
