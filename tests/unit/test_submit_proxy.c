/*
 * test_submit_proxy.c - the PROXY protocol header parser
 * (submit_proxy_parse: v1 and v2, from tables of whole headers and of bad
 * ones, and fed octet by octet as a slow proxy would send them) and the
 * submit.proxy_trusted networks (conf_parse_cidr, conf_cidr_match).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/util.h"
#include "conf/conf.h"
#include "submit/submit_int.h"

#define V2SIG "\r\n\r\n\0\r\nQUIT\n"

struct row {
	const char *in;
	size_t len;             /* 0: strlen(in) */
	int want;
	size_t hlen;            /* DONE: the header's length */
	const char *src;        /* DONE: "addr port", or "local" */
	const char *reason;     /* BAD */
};

static const struct row rows[] = {
	/* v1 */
	{ "PROXY TCP4 192.0.2.1 198.51.100.2 56324 587\r\n", 0, SUBMIT_PROXY_DONE, 45,
	  "192.0.2.1 56324", NULL },
	{ "PROXY TCP4 192.0.2.1 198.51.100.2 56324 587\r\nEHLO x\r\n", 0, SUBMIT_PROXY_DONE, 45,
	  "192.0.2.1 56324", NULL },
	{ "PROXY TCP6 2001:db8::1 ::1 65535 0\r\n", 0, SUBMIT_PROXY_DONE, 36,
	  "2001:db8::1 65535", NULL },
	{ "PROXY UNKNOWN\r\n", 0, SUBMIT_PROXY_DONE, 15, "local", NULL },
	{ "PROXY UNKNOWN ffff:f...f:ffff 1 2 3 4 5 6 7\r\n", 0, SUBMIT_PROXY_DONE, 45, "local", NULL },
	{ "PROXY TCP4 192.0.2.1 198.51.100.2 56324 587", 0, SUBMIT_PROXY_MORE, 0, NULL, NULL },
	{ "PRO", 0, SUBMIT_PROXY_MORE, 0, NULL, NULL },
	{ "", 0, SUBMIT_PROXY_MORE, 0, NULL, NULL },
	{ "EHLO client.test\r\n", 0, SUBMIT_PROXY_BAD, 0, NULL, "missing" },
	{ "PROXX TCP4", 0, SUBMIT_PROXY_BAD, 0, NULL, "missing" },
	{ "\x16\x03\x01", 3, SUBMIT_PROXY_BAD, 0, NULL, "missing" },
	{ "PROXY TCP4 192.0.2.1 198.51.100.2 56324 587\n", 0, SUBMIT_PROXY_BAD, 0, NULL, "garbled" },
	{ "PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n", 0, SUBMIT_PROXY_BAD, 0, NULL, "garbled" },
	{ "PROXY TCP4 192.0.2.1 198.51.100.2 56324 587 9\r\n", 0, SUBMIT_PROXY_BAD, 0, NULL, "garbled" },
	{ "PROXY TCP4  192.0.2.1 198.51.100.2 56324 587\r\n", 0, SUBMIT_PROXY_BAD, 0, NULL, "garbled" },
	{ "PROXY TCP4 192.0.2.1 198.51.100.2 065535 587\r\n", 0, SUBMIT_PROXY_BAD, 0, NULL, "garbled" },
	{ "PROXY TCP4 192.0.2.1 198.51.100.2 65536 587\r\n", 0, SUBMIT_PROXY_BAD, 0, NULL, "garbled" },
	{ "PROXY TCP4 2001:db8::1 ::1 1 2\r\n", 0, SUBMIT_PROXY_BAD, 0, NULL, "garbled" },
	{ "PROXY TCP6 192.0.2.1 198.51.100.2 1 2\r\n", 0, SUBMIT_PROXY_BAD, 0, NULL, "garbled" },
	{ "PROXY TCP4 192.0.2.1\r198.51.100.2 1 2\r\n", 0, SUBMIT_PROXY_BAD, 0, NULL, "garbled" },
	{ "PROXY TCP4 192.0.2.1 \x01", 0, SUBMIT_PROXY_BAD, 0, NULL, "garbled" },
	{ "PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n", 0, SUBMIT_PROXY_BAD, 0, NULL, "unsupported" },
	{ "PROXY TCP6 1111111111111111111111111111111111111111111111111111111111111111111111"
	  "111111111111111111111111111111111111", 0, SUBMIT_PROXY_BAD, 0, NULL, "oversized" },
	/* v2: PROXY TCP4, 192.0.2.1:56324 -> 198.51.100.2:587 */
	{ V2SIG "\x21\x11\x00\x0c" "\xc0\x00\x02\x01" "\xc6\x33\x64\x02" "\xdc\x04\x02\x4b", 28,
	  SUBMIT_PROXY_DONE, 28, "192.0.2.1 56324", NULL },
	/* ... with a NOOP TLV and the client's first octets behind */
	{ V2SIG "\x21\x11\x00\x10" "\xc0\x00\x02\x01" "\xc6\x33\x64\x02" "\xdc\x04\x02\x4b"
	  "\x04\x00\x01z" "\x16\x03\x01", 35, SUBMIT_PROXY_DONE, 32, "192.0.2.1 56324", NULL },
	/* TCP6 2001:db8::1 port 1 */
	{ V2SIG "\x21\x21\x00\x24" "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01"
	  "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01" "\x00\x01\x02\x4b", 52, SUBMIT_PROXY_DONE, 52,
	  "2001:db8::1 1", NULL },
	{ V2SIG "\x20\x00\x00\x00", 16, SUBMIT_PROXY_DONE, 16, "local", NULL },
	{ V2SIG "\x20\x11\x00\x0c" "\xc0\x00\x02\x01" "\xc6\x33\x64\x02" "\xdc\x04\x02\x4b", 28,
	  SUBMIT_PROXY_DONE, 28, "local", NULL },                  /* LOCAL: block ignored */
	{ V2SIG "\x21\x00\x00\x00", 16, SUBMIT_PROXY_DONE, 16, "local", NULL },    /* AF_UNSPEC */
	{ V2SIG "\x21\x11\x00\x0c" "\xc0\x00", 18, SUBMIT_PROXY_MORE, 0, NULL, NULL },
	{ V2SIG "\x21", 13, SUBMIT_PROXY_MORE, 0, NULL, NULL },
	{ "\r\n\r\n\0\r", 6, SUBMIT_PROXY_MORE, 0, NULL, NULL },
	{ "\r\n\r\n\0\n", 6, SUBMIT_PROXY_BAD, 0, NULL, "missing" },
	{ V2SIG "\x11\x11\x00\x0c", 16, SUBMIT_PROXY_BAD, 0, NULL, "garbled" },     /* version 1 */
	{ V2SIG "\x22\x11\x00\x0c", 16, SUBMIT_PROXY_BAD, 0, NULL, "garbled" },     /* command 2 */
	{ V2SIG "\x21\x11\x00\x08" "\0\0\0\0\0\0\0\0", 24, SUBMIT_PROXY_BAD, 0, NULL, "garbled" },
	{ V2SIG "\x21\x21\x00\x0c" "\0\0\0\0\0\0\0\0\0\0\0\0", 28, SUBMIT_PROXY_BAD, 0, NULL,
	  "garbled" },
	{ V2SIG "\x21\x12\x00\x0c", 16, SUBMIT_PROXY_BAD, 0, NULL, "unsupported" },  /* UDP */
	{ V2SIG "\x21\x31\x00\xd8", 16, SUBMIT_PROXY_BAD, 0, NULL, "unsupported" },  /* AF_UNIX */
	{ V2SIG "\x21\x11\x03\xf1", 16, SUBMIT_PROXY_BAD, 0, NULL, "oversized" },    /* 16 + 1009 */
	{ V2SIG "\x21\x11\xff\xff", 16, SUBMIT_PROXY_BAD, 0, NULL, "oversized" },
};

static void
addr_text(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
		snprintf(out, len, "%s %u", ip, ntohs(s6->sin6_port));
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		snprintf(out, len, "%s %u", ip, ntohs(s4->sin_port));
	}
}

static void
test_parse(void)
{
	struct submit_proxy_hdr h;
	char got[128];
	size_t i, len, k;
	int r;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		len = rows[i].len ? rows[i].len : strlen(rows[i].in);
		r = submit_proxy_parse(rows[i].in, len, &h);
		CHECK_MSG(r == rows[i].want, "row %zu: result %d, want %d (%s)", i, r, rows[i].want,
		    h.reason ? h.reason : "");
		if (r != rows[i].want)
			continue;
		if (r == SUBMIT_PROXY_BAD)
			CHECK_STR(h.reason, rows[i].reason);
		if (r != SUBMIT_PROXY_DONE)
			continue;
		CHECK_MSG(h.len == rows[i].hlen, "row %zu: len %zu, want %zu", i, h.len, rows[i].hlen);
		if (h.local)
			snprintf(got, sizeof(got), "local");
		else
			addr_text(&h.src, got, sizeof(got));
		CHECK_STR(got, rows[i].src);
		/* a slow proxy: every shorter prefix of the header asks for more */
		for (k = 0; k < h.len; k++)
			CHECK_MSG(submit_proxy_parse(rows[i].in, k, &h) == SUBMIT_PROXY_MORE,
			    "row %zu: prefix %zu", i, k);
	}
}

static void
test_cidr(void)
{
	static const struct {
		const char *net;        /* NULL: none */
		const char *addr;
		int parse;              /* conf_parse_cidr's result */
		bool match;
	} t[] = {
		{ "127.0.77.1/32", "127.0.77.1", 0, true },
		{ "127.0.77.1/32", "127.0.77.11", 0, false },
		{ "127.0.77.1", "127.0.77.1", 0, true },
		{ "10.0.0.0/8", "10.255.1.2", 0, true },
		{ "10.0.0.0/8", "11.0.0.1", 0, false },
		{ "10.0.0.0/8", "::ffff:10.1.2.3", 0, true },   /* IPv4-mapped */
		{ "0.0.0.0/0", "203.0.113.5", 0, true },
		{ "0.0.0.0/0", "2001:db8::1", 0, false },       /* families do not mix */
		{ "2001:db8::/32", "2001:db8:1::5", 0, true },
		{ "2001:db8::/32", "2001:db9::5", 0, false },
		{ "192.0.2.128/25", "192.0.2.200", 0, true },
		{ "192.0.2.128/25", "192.0.2.100", 0, false },
		{ "10.1.2.3/8", NULL, -1, false },              /* host bits set */
		{ "10.0.0.0/33", NULL, -1, false },
		{ "10.0.0.0/", NULL, -1, false },
		{ "10.0.0.0/-1", NULL, -1, false },
		{ "10.0.0.0/8x", NULL, -1, false },
		{ "example.org/8", NULL, -1, false },
		{ "/8", NULL, -1, false },
		{ "::/129", NULL, -1, false },
	};
	struct conf_cidr c;
	struct sockaddr_storage ss;
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		int r = conf_parse_cidr(t[i].net, &c);

		CHECK_MSG(r == t[i].parse, "row %zu: %s parses to %d", i, t[i].net, r);
		if (r != 0 || t[i].addr == NULL)
			continue;
		memset(&ss, 0, sizeof(ss));
		if (strchr(t[i].addr, ':') != NULL) {
			ss.ss_family = AF_INET6;
			inet_pton(AF_INET6, t[i].addr, &((struct sockaddr_in6 *)&ss)->sin6_addr);
		} else {
			ss.ss_family = AF_INET;
			inet_pton(AF_INET, t[i].addr, &((struct sockaddr_in *)&ss)->sin_addr);
		}
		CHECK_MSG(conf_cidr_match(&c, 1, (struct sockaddr *)&ss) == t[i].match,
		    "row %zu: %s in %s", i, t[i].addr, t[i].net);
	}
	CHECK(!conf_cidr_match(NULL, 0, (struct sockaddr *)&ss));     /* none trusted */
}

int
main(void)
{
	test_parse();
	test_cidr();
	return check_done();
}
