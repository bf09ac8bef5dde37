/*
 * test_tlsrpt.c - tlsrpt/'s pure parts (RFC 8460): the reporting slots, the
 * _smtp._tls record parser, the counts table and its file form (round trip,
 * malformed lines), the JSON report's required fields, the gzip, and the
 * report mail's RFC 8460 5.3 headers.
 */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common/buf.h"
#include "common/util.h"
#include "tlsrpt/tlsrpt_int.h"
#include "tests/unit/check.h"

#define DAY 86400000ULL

static void
test_slot(void)
{
	static const struct {
		uint64_t now, interval, start, end;
	} rows[] = {
		{ 10 * DAY + 5000, DAY, 10 * DAY, 11 * DAY },
		{ 10 * DAY + 5000, 3000, 10 * DAY + 3000, 10 * DAY + 6000 },
		{ 10 * DAY + 1000, 7 * 3600000ULL, 10 * DAY, 10 * DAY + 5 * 3600000ULL },   /* cut at midnight */
		{ 11 * DAY - 1, 7 * 3600000ULL, 10 * DAY + 19 * 3600000ULL, 11 * DAY },     /* and at the next */
		{ 10 * DAY, 0, 10 * DAY, 11 * DAY },            /* 0: a day */
	};
	size_t i;
	uint64_t s, e;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		tlsrpt_slot(rows[i].now, rows[i].interval, &s, &e);
		CHECK_INT(s, rows[i].start);
		CHECK_INT(e, rows[i].end);
	}
}

static void
test_record(void)
{
	static const struct {
		const char *txt[3];
		int n;
		const char *rua0, *rua1;
		char k0, k1;
	} rows[] = {
		{ { "v=TLSRPTv1; rua=mailto:tls@example.net" }, 1, "tls@example.net", NULL, 'm', 0 },
		{ { "v=TLSRPTv1;rua=mailto:a%40b@example.net,https://r.example.net/tls" }, 2,
		  "a@b@example.net", "https://r.example.net/tls", 'm', 'h' },
		{ { "v=TLSRPTv1; rua=https://r.example/x , mailto:x@y.example?subject=hi" }, 2,
		  "https://r.example/x", "x@y.example", 'h', 'm' },
		{ { "v=spf1 -all", "v=TLSRPTv1; rua=mailto:x@y.example" }, 1, "x@y.example", NULL, 'm', 0 },
		{ { "v=TLSRPTv1; rua=mailto:x@y.example", "v=TLSRPTv1; rua=mailto:z@y.example" }, -1,
		  NULL, NULL, 0, 0 },                   /* two records: none */
		{ { "v=TLSRPTv1; rua=mailto:x@y.example,MAILTO:x@y.example, https://r.example/x,"
		    "https://r.example/x" }, 2, "x@y.example", "https://r.example/x", 'm', 'h' },
		                                        /* a URI given twice: one report */
		{ { "v=TLSRPTv1; rua=ftp://x.example/" }, -1, NULL, NULL, 0, 0 },
		{ { "v=TLSRPTv1" }, -1, NULL, NULL, 0, 0 },
		{ { "v=TLSRPTv10; rua=mailto:x@y.example" }, -1, NULL, NULL, 0, 0 },
		{ { "v=TLSRPTv1; rua=mailto:nobody" }, -1, NULL, NULL, 0, 0 },
		{ { NULL }, -1, NULL, NULL, 0, 0 },
	};
	char *rua[TLSRPT_MAX_RUA], kind[TLSRPT_MAX_RUA];
	const char *why;
	size_t i, nt;
	int n, k;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		for (nt = 0; nt < 3 && rows[i].txt[nt] != NULL; nt++)
			;
		why = NULL;
		n = tlsrpt_parse_record((char *const *)rows[i].txt, nt, rua, kind, &why);
		CHECK_INT(n, rows[i].n);
		if (n < 0) {
			CHECK(why != NULL);
			continue;
		}
		CHECK_STR(rua[0], rows[i].rua0);
		CHECK_INT(kind[0], rows[i].k0);
		if (n > 1) {
			CHECK_STR(rua[1], rows[i].rua1);
			CHECK_INT(kind[1], rows[i].k1);
		}
		for (k = 0; k < n; k++)
			free(rua[k]);
	}
}

static void
fill(struct tlsrpt_table *tb, uint64_t start)
{
	static const char *const tlsa[] = { "3 1 1 ABCD", "2 0 1 EF01" };
	struct tlsrpt_session ev;
	int i;

	memset(&ev, 0, sizeof(ev));
	ev.domain = "Example.NET";
	ev.type = TLSRPT_TLSA;
	ev.strings = tlsa;
	ev.nstrings = 2;
	ev.mx_host = "mx1.example.net";
	for (i = 0; i < 3; i++)
		tlsrpt_table_add(tb, &ev, start, start + DAY);
	ev.result = "validation-failure";
	ev.receiving_mx = "mx1.example.net";
	ev.receiving_ip = "192.0.2.1";
	ev.info = "a space and a\\backslash";
	tlsrpt_table_add(tb, &ev, start, start + DAY);
	tlsrpt_table_add(tb, &ev, start, start + DAY);
	ev.result = "starttls-not-supported";
	ev.receiving_ip = NULL;
	ev.info = NULL;
	tlsrpt_table_add(tb, &ev, start, start + DAY);
	memset(&ev, 0, sizeof(ev));
	ev.domain = "example.net";
	tlsrpt_table_add(tb, &ev, start, start + DAY);          /* no-policy-found */
}

static void
test_table(void)
{
	struct tlsrpt_table tb, tb2;
	struct tlsrpt_bucket *b;
	struct buf a = BUF_INIT, c = BUF_INIT, why = BUF_INIT;
	char *text;
	static const char *const bad[] = {
		"P 1 1 0 - -\n",                                        /* P before B */
		"B 1 2 x.example -\nP 9 1 0 - -\n",                     /* unknown type */
		"B 1 2 x.example -\nD 1 r - - - -\n",                   /* D before P */
		"B x 2 x.example -\n",
		"B 1 2 x.example -\nB 1 2 x.example -\n",               /* twice */
		"Q\n",
	};
	size_t i;

	tlsrpt_table_init(&tb);
	fill(&tb, 10 * DAY);
	b = tlsrpt_table_find(&tb, "example.net", 10 * DAY);
	CHECK(b != NULL);
	CHECK_INT(b->np, 2);
	CHECK_INT(b->p[0].ok, 3);
	CHECK_INT(b->p[0].failed, 3);
	CHECK_INT(b->p[0].nd, 2);
	CHECK_INT(b->p[0].d[0].count, 2);
	CHECK_INT(b->p[1].type, TLSRPT_NO_POLICY);
	CHECK_INT(b->p[1].ok, 1);
	b->report_id = xstrdup("id@relay.test");
	tlsrpt_bucket_mark_sent(b, "mailto:x@y.example");
	tlsrpt_table_save(&tb, &a);

	tlsrpt_table_init(&tb2);
	text = xstrdup(buf_cstr(&a));
	CHECK_INT(tlsrpt_table_load(&tb2, text, &why), 0);
	free(text);
	tlsrpt_table_save(&tb2, &c);
	CHECK_STR(buf_cstr(&c), buf_cstr(&a));
	b = tlsrpt_table_find(&tb2, "EXAMPLE.net", 10 * DAY);
	CHECK(b != NULL && tlsrpt_bucket_was_sent(b, "mailto:x@y.example"));
	CHECK(b != NULL && !tlsrpt_bucket_was_sent(b, "https://r.example/"));
	CHECK_STR(b != NULL ? b->p[0].d[0].info : NULL, "a space and a\\backslash");

	tlsrpt_table_drop_nopolicy(&tb2, "example.net");
	CHECK_INT(b->np, 1);
	tlsrpt_table_free(&tb2);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		tlsrpt_table_init(&tb2);
		text = xstrdup(bad[i]);
		buf_reset(&why);
		CHECK_MSG(tlsrpt_table_load(&tb2, text, &why) == -1, "%s", bad[i]);
		CHECK(why.len > 0);
		free(text);
		tlsrpt_table_free(&tb2);
	}
	/* a bucket of nothing but no-policy rows goes away */
	tlsrpt_table_init(&tb2);
	{
		struct tlsrpt_session ev;

		memset(&ev, 0, sizeof(ev));
		ev.domain = "plain.example";
		tlsrpt_table_add(&tb2, &ev, 0, DAY);
	}
	tlsrpt_table_drop_nopolicy(&tb2, "PLAIN.example");
	CHECK(tlsrpt_table_find(&tb2, "plain.example", 0) == NULL);
	tlsrpt_table_free(&tb2);

	tlsrpt_table_free(&tb);
	buf_free(&a);
	buf_free(&c);
	buf_free(&why);
}

/* A policy's failure details are capped: past the cap a failure is folded
 * into a detail of its own result type (a new type gets one), never counted
 * as another type. */
static void
test_detail_cap(void)
{
	struct tlsrpt_table tb;
	struct tlsrpt_bucket *b;
	struct tlsrpt_session ev;
	char ip[32];
	size_t i, n;
	uint64_t sum = 0;

	tlsrpt_table_init(&tb);
	memset(&ev, 0, sizeof(ev));
	ev.domain = "example.net";
	ev.type = TLSRPT_TLSA;
	ev.mx_host = "mx1.example.net";
	ev.result = "certificate-expired";
	ev.receiving_ip = "192.0.2.200";
	tlsrpt_table_add(&tb, &ev, DAY, 2 * DAY);
	ev.result = "validation-failure";
	for (i = 0; i < 100; i++) {
		snprintf(ip, sizeof(ip), "192.0.2.%zu", i);
		ev.receiving_ip = ip;
		tlsrpt_table_add(&tb, &ev, DAY, 2 * DAY);
	}
	ev.result = "certificate-expired";
	ev.receiving_ip = "198.51.100.1";
	tlsrpt_table_add(&tb, &ev, DAY, 2 * DAY);
	ev.result = "starttls-not-supported";
	tlsrpt_table_add(&tb, &ev, DAY, 2 * DAY);
	b = tlsrpt_table_find(&tb, "example.net", DAY);
	CHECK(b != NULL && b->np == 1);
	if (b == NULL)
		return;
	n = 0;
	for (i = 0; i < b->p[0].nd; i++) {
		sum += b->p[0].d[i].count;
		if (strcmp(b->p[0].d[i].result, "certificate-expired") == 0)
			n += b->p[0].d[i].count;
		if (strcmp(b->p[0].d[i].result, "starttls-not-supported") == 0)
			n += 10 * b->p[0].d[i].count;
	}
	CHECK_INT(n, 12);
	CHECK_INT(sum, 103);
	CHECK_INT(b->p[0].failed, 103);
	CHECK_INT(b->p[0].nd, 65);
	tlsrpt_table_free(&tb);
}

static void
test_report(void)
{
	struct tlsrpt_table tb;
	struct tlsrpt_bucket *b;
	struct tlsrpt_org org = { "Example Org", "mailto:tls@relay.test", "relay.test" };
	struct buf json = BUF_INIT, gz = BUF_INIT, mail = BUF_INIT;
	static const char *const want[] = {
		"\"organization-name\":\"Example Org\"",
		"\"date-range\":{\"start-datetime\":\"1970-01-11T00:00:00Z\",\"end-datetime\":\"1970-01-12T00:00:00Z\"}",
		"\"contact-info\":\"mailto:tls@relay.test\"",
		"\"report-id\":\"864000.example.net@relay.test\"",
		"\"policy-type\":\"tlsa\",\"policy-string\":[\"3 1 1 ABCD\",\"2 0 1 EF01\"],"
		    "\"policy-domain\":\"example.net\",\"mx-host\":\"mx1.example.net\"",
		"\"summary\":{\"total-successful-session-count\":3,\"total-failure-session-count\":3}",
		"{\"result-type\":\"validation-failure\",\"receiving-mx-hostname\":\"mx1.example.net\","
		    "\"receiving-ip\":\"192.0.2.1\",\"failed-session-count\":2,",
		/* RFC 8460 4.3: free text is failure-reason-code (additional-information is a URI) */
		"\"failed-session-count\":2,\"failure-reason-code\":\"a space and a\\\\backslash\"}",
		"\"policy\":{\"policy-type\":\"no-policy-found\",\"policy-domain\":\"example.net\"}",
	};
	unsigned char out[8192];
	uLongf outlen = sizeof(out);
	z_stream z;
	size_t i;

	tlsrpt_table_init(&tb);
	fill(&tb, 10 * DAY);
	b = tlsrpt_table_find(&tb, "example.net", 10 * DAY);
	b->report_id = xstrdup("864000.example.net@relay.test");
	tlsrpt_report_json(b, &org, 11 * DAY, &json);
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		CHECK_MSG(strstr(buf_cstr(&json), want[i]) != NULL, "%s not in %s", want[i],
		    buf_cstr(&json));

	CHECK_INT(tlsrpt_gzip(json.data, json.len, &gz), 0);
	CHECK(gz.len > 10 && (unsigned char)gz.data[0] == 0x1f && (unsigned char)gz.data[1] == 0x8b);
	memset(&z, 0, sizeof(z));
	CHECK_INT(inflateInit2(&z, 15 + 16), Z_OK);
	z.next_in = (Bytef *)gz.data;
	z.avail_in = (uInt)gz.len;
	z.next_out = out;
	z.avail_out = (uInt)outlen;
	CHECK_INT(inflate(&z, Z_FINISH), Z_STREAM_END);
	CHECK_INT(z.total_out, json.len);
	CHECK(memcmp(out, json.data, json.len) == 0);
	inflateEnd(&z);

	tlsrpt_report_mail(b, &org, "noreply@relay.test", "tls@example.net", 11 * DAY + 5,
	    11 * DAY, &gz, &mail);
	CHECK(strstr(buf_cstr(&mail), "\r\nTLS-Report-Domain: example.net\r\n") != NULL);
	CHECK(strstr(buf_cstr(&mail), "\r\nTLS-Report-Submitter: relay.test\r\n") != NULL);
	{
		/* unfolded (RFC 5322 2.2.3): CRLF before white space goes */
		struct buf u = BUF_INIT;
		size_t k;

		for (k = 0; k < mail.len; k++) {
			if (mail.data[k] == '\r' && k + 2 < mail.len && mail.data[k + 1] == '\n' &&
			    mail.data[k + 2] == ' ') {
				k++;
				continue;
			}
			buf_putc(&u, mail.data[k]);
		}
		CHECK(strstr(buf_cstr(&u), "\nSubject: Report Domain: example.net Submitter: "
		    "relay.test Report-ID: <864000.example.net@relay.test>\r\n") != NULL);
		buf_free(&u);
	}
	CHECK(strstr(buf_cstr(&mail), "multipart/report; report-type=\"tlsrpt\"") != NULL);
	CHECK(strstr(buf_cstr(&mail), "Content-Type: application/tlsrpt+gzip\r\n") != NULL);
	CHECK(strstr(buf_cstr(&mail), "relay.test!example.net!864000!950400.json.gz") != NULL);

	tlsrpt_table_free(&tb);
	buf_free(&json);
	buf_free(&gz);
	buf_free(&mail);
}

int
main(void)
{
	test_slot();
	test_record();
	test_table();
	test_detail_cap();
	test_report();
	return check_done();
}
