/*
 * test_dane.c - the pieces of DANE that need no network, from tables: the
 * query with the DO bit (dns_make_query_do), the AD bit and the status of
 * raw answers (dns_answer_ad, dns_answer_status), TLSA records in an answer
 * (dns_parse_answer), which TLSA records an SMTP client may use
 * (tlsa_usable), and the policy per exchanger (tlspolicy_for_target).
 * The end-to-end behaviour is tests/integration/test_dane.py.
 */
#include <arpa/nameser.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dns/dns_int.h"
#include "tlspolicy/tlspolicy.h"

/* ---- the query with DO ---- */

static void
test_query_do(void)
{
	static const struct {
		const char *name;
		int type;
	} rows[] = {
		{ "example.net", ns_t_mx },
		{ "_25._tcp.mx1.example.net", 52 },
		{ "mx1.example.net", ns_t_aaaa },
	};
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		unsigned char *q;
		int len, rc;
		char *name = NULL;
		long used;
		const unsigned char *p, *opt;

		rc = dns_make_query_do(rows[i].name, rows[i].type, &q, &len);
		CHECK_INT(rc, ARES_SUCCESS);
		if (rc != ARES_SUCCESS)
			continue;
		CHECK(q[2] & 0x01);                             /* RD */
		CHECK_INT(q[3] & 0x20, 0);                      /* no AD asked */
		CHECK_INT((q[4] << 8) | q[5], 1);               /* QDCOUNT */
		CHECK_INT((q[10] << 8) | q[11], 1);             /* ARCOUNT: the OPT */
		CHECK_INT(ares_expand_name(q + NS_HFIXEDSZ, q, len, &name, &used), ARES_SUCCESS);
		CHECK_STR(name, rows[i].name);
		ares_free_string(name);
		p = q + NS_HFIXEDSZ + used;
		CHECK_INT((p[0] << 8) | p[1], rows[i].type);
		CHECK_INT((p[2] << 8) | p[3], ns_c_in);
		opt = p + 4;
		CHECK_INT(q + len - opt, 11);                   /* the OPT is all that follows */
		CHECK_INT(opt[0], 0);                           /* root owner */
		CHECK_INT((opt[1] << 8) | opt[2], 41);          /* TYPE OPT */
		CHECK_INT((opt[3] << 8) | opt[4], DNS_EDNS_UDPSIZE);
		CHECK_INT(opt[5], 0);                           /* extended RCODE */
		CHECK_INT(opt[6], 0);                           /* EDNS version 0 */
		CHECK_INT(opt[7], 0x80);                        /* DO, and nothing else */
		CHECK_INT(opt[8], 0);
		CHECK_INT((opt[9] << 8) | opt[10], 0);          /* RDLEN */
		ares_free_string(q);
	}
}

/* ---- answers: a tiny builder ---- */

struct pkt {
	unsigned char b[512];
	size_t n;
};

static void
put8(struct pkt *p, unsigned v)
{
	p->b[p->n++] = (unsigned char)v;
}

static void
put16(struct pkt *p, unsigned v)
{
	put8(p, v >> 8);
	put8(p, v & 0xff);
}

static void
put32(struct pkt *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p, v & 0xffff);
}

static void
putname(struct pkt *p, const char *name)
{
	const char *s = name, *dot;

	while (*s != '\0') {
		dot = strchr(s, '.');
		size_t l = dot != NULL ? (size_t)(dot - s) : strlen(s);

		put8(p, (unsigned)l);
		memcpy(p->b + p->n, s, l);
		p->n += l;
		s += l;
		if (*s == '.')
			s++;
	}
	put8(p, 0);
}

/* A response header and the question for name/type. */
static void
answer_start(struct pkt *p, unsigned flags2, unsigned ancount, const char *name, int type)
{
	p->n = 0;
	put16(p, 0x1234);
	put8(p, 0x81);                  /* QR, RD */
	put8(p, flags2);                /* RA, AD, RCODE */
	put16(p, 1);
	put16(p, ancount);
	put16(p, 0);
	put16(p, 0);
	putname(p, name);
	put16(p, (unsigned)type);
	put16(p, ns_c_in);
}

static void
put_tlsa(struct pkt *p, const char *owner, unsigned u, unsigned s, unsigned m,
    const unsigned char *data, size_t len)
{
	putname(p, owner);
	put16(p, 52);
	put16(p, ns_c_in);
	put32(p, 300);
	put16(p, (unsigned)(3 + len));
	put8(p, u);
	put8(p, s);
	put8(p, m);
	memcpy(p->b + p->n, data, len);
	p->n += len;
}

static void
test_answer_header(void)
{
	static const struct {
		unsigned flags2;
		unsigned ancount;
		bool ad;
		int status;
	} rows[] = {
		{ 0x80, 1, false, ARES_SUCCESS },       /* RA, NOERROR, records */
		{ 0xa0, 1, true,  ARES_SUCCESS },       /* RA AD */
		{ 0xa0, 0, true,  ARES_ENODATA },       /* AD NODATA: a secure denial */
		{ 0x80, 0, false, ARES_ENODATA },
		{ 0x83, 0, false, ARES_ENOTFOUND },
		{ 0xa3, 0, true,  ARES_ENOTFOUND },
		{ 0x82, 0, false, ARES_ESERVFAIL },     /* a validating resolver's "bogus" */
		{ 0x85, 0, false, ARES_EREFUSED },
		{ 0x81, 0, false, ARES_EFORMERR },
		{ 0x84, 0, false, ARES_ENOTIMP },
	};
	struct pkt p;
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		answer_start(&p, rows[i].flags2, rows[i].ancount, "example.net", ns_t_mx);
		CHECK_MSG(dns_answer_ad(p.b, (int)p.n) == rows[i].ad, "row %zu", i);
		CHECK_MSG(dns_answer_status(p.b, (int)p.n) == rows[i].status, "row %zu: %d", i,
		    dns_answer_status(p.b, (int)p.n));
	}
	CHECK(!dns_answer_ad(p.b, 5));
	CHECK_INT(dns_answer_status(p.b, 11), ARES_EBADRESP);
	CHECK(!dns_answer_ad(NULL, 0));
}

static void
test_parse_tlsa(void)
{
	unsigned char h[32], tiny[1] = { 0xab };
	struct dns_answer an;
	struct pkt p;
	size_t i;

	for (i = 0; i < sizeof(h); i++)
		h[i] = (unsigned char)i;
	answer_start(&p, 0xa0, 2, "_25._tcp.mx1.example.net", 52);
	put_tlsa(&p, "_25._tcp.mx1.example.net", 3, 1, 1, h, sizeof(h));
	put_tlsa(&p, "_25._tcp.mx1.example.net", 2, 0, 0, tiny, sizeof(tiny));
	CHECK_INT(dns_parse_answer(p.b, (int)p.n, &an), 0);
	CHECK(an.ad);
	CHECK_INT(an.n, 2);
	if (an.n == 2) {
		CHECK_INT(an.rr[0].type, 52);
		CHECK_STR(an.rr[0].owner, "_25._tcp.mx1.example.net");
		CHECK_INT(an.rr[0].tlsa.usage, 3);
		CHECK_INT(an.rr[0].tlsa.selector, 1);
		CHECK_INT(an.rr[0].tlsa.mtype, 1);
		CHECK_INT(an.rr[0].tlsa.len, 32);
		CHECK(memcmp(an.rr[0].tlsa.data, h, 32) == 0);
		CHECK_INT(an.rr[1].tlsa.usage, 2);
		CHECK_INT(an.rr[1].tlsa.len, 1);
		CHECK_INT(an.rr[1].tlsa.data[0], 0xab);
	}
	CHECK_INT(an.min_ttl, 300);
	dns_answer_free(&an);

	/* a TLSA record too short for its three fixed fields: malformed */
	answer_start(&p, 0x80, 1, "_25._tcp.mx1.example.net", 52);
	putname(&p, "_25._tcp.mx1.example.net");
	put16(&p, 52);
	put16(&p, ns_c_in);
	put32(&p, 300);
	put16(&p, 2);
	put16(&p, 0x0301);
	CHECK_INT(dns_parse_answer(p.b, (int)p.n, &an), -1);
	CHECK(!an.ad || an.n == 0);
}

/* ---- which records may be used ---- */

static void
test_tlsa_usable(void)
{
	static unsigned char d64[64], d32[32], d1[1];
	static const struct {
		uint8_t u, s, m;
		const unsigned char *data;
		size_t len;
		bool want;
	} rows[] = {
		{ 3, 1, 1, d32, 32, true },
		{ 3, 0, 2, d64, 64, true },
		{ 2, 0, 1, d32, 32, true },
		{ 2, 1, 0, d1, 1, true },       /* exact match: any length */
		{ 1, 1, 1, d32, 32, false },    /* PKIX-EE: not for SMTP */
		{ 0, 0, 1, d32, 32, false },    /* PKIX-TA: not for SMTP */
		{ 4, 1, 1, d32, 32, false },    /* unknown usage */
		{ 3, 2, 1, d32, 32, false },    /* unknown selector */
		{ 3, 1, 3, d32, 32, false },    /* unknown matching type */
		{ 3, 1, 1, d64, 31, false },    /* SHA2-256 of the wrong length */
		{ 3, 1, 2, d64, 32, false },    /* SHA2-512 of the wrong length */
		{ 3, 1, 0, d1, 0, false },      /* nothing to match */
	};
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct tlsa_rr rr = { rows[i].u, rows[i].s, rows[i].m,
		    (unsigned char *)rows[i].data, rows[i].len };

		CHECK_MSG(tlsa_usable(&rr) == rows[i].want, "row %zu", i);
	}
}

static void
test_tlsa_digest(void)
{
	unsigned char a[32] = { 1 }, b[32] = { 2 };
	struct tlsa_rr one[] = { { 3, 1, 1, a, 32 } }, two[] = { { 3, 1, 1, a, 32 }, { 2, 0, 1, b, 32 } },
	    other[] = { { 3, 1, 1, b, 32 } }, usage[] = { { 2, 1, 1, a, 32 } };
	char d1[TLSA_DIGEST_LEN], d1b[TLSA_DIGEST_LEN], d2[TLSA_DIGEST_LEN],
	    d3[TLSA_DIGEST_LEN], d4[TLSA_DIGEST_LEN];

	tlsa_digest(one, 1, d1);
	tlsa_digest(one, 1, d1b);
	tlsa_digest(two, 2, d2);
	tlsa_digest(other, 1, d3);
	tlsa_digest(usage, 1, d4);
	CHECK_INT(strlen(d1), 64);
	CHECK_STR(d1, d1b);
	CHECK(strcmp(d1, d2) != 0);
	CHECK(strcmp(d1, d3) != 0);
	CHECK(strcmp(d1, d4) != 0);
}

/* ---- the policy per exchanger ---- */

static void
test_policy(void)
{
	static unsigned char d32[32];
	struct tlsa_rr ee = { 3, 1, 1, d32, 32 }, pkix = { 1, 1, 1, d32, 32 },
	    bad = { 3, 1, 1, d32, 20 };
	struct tlsa_rr mixed[] = { pkix, ee, bad }, unusable[] = { pkix, bad };
	static const struct {
		enum conf_tls tls;
		enum dns_tlsa_state state;
		int set;                /* 0 none, 1 mixed, 2 unusable */
		enum deliver_policy want;
		size_t ntlsa;
		bool refuse;
	} rows[] = {
		{ CONF_TLS_OPPORTUNISTIC, DNS_TLSA_NONE, 0, DELIVER_POLICY_CONF, 0, false },
		{ CONF_TLS_OPPORTUNISTIC, DNS_TLSA_SECURE, 1, DELIVER_POLICY_DANE, 1, false },
		{ CONF_TLS_VERIFY, DNS_TLSA_SECURE, 1, DELIVER_POLICY_DANE, 1, false },
		{ CONF_TLS_OPPORTUNISTIC, DNS_TLSA_SECURE, 2, DELIVER_POLICY_DANE_UNAUTH, 0, false },
		{ CONF_TLS_REQUIRE, DNS_TLSA_FAILED, 0, DELIVER_POLICY_CONF, 0, true },
		{ CONF_TLS_NONE, DNS_TLSA_SECURE, 1, DELIVER_POLICY_CONF, 0, false },
		{ CONF_TLS_NONE, DNS_TLSA_FAILED, 0, DELIVER_POLICY_CONF, 0, false },
	};
	struct tlspolicy pol;
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct dns_target tg;

		memset(&tg, 0, sizeof(tg));
		tg.host = "mx1.example.net";
		tg.secure = rows[i].state != DNS_TLSA_NONE;
		tg.tlsa_state = rows[i].state;
		if (rows[i].set == 1) {
			tg.tlsa = mixed;
			tg.ntlsa = 3;
		} else if (rows[i].set == 2) {
			tg.tlsa = unusable;
			tg.ntlsa = 2;
		}
		snprintf(tg.tlsa_error, sizeof(tg.tlsa_error), "TLSA lookup failed: SERVFAIL");
		tlspolicy_for_target(rows[i].tls, &tg, &pol);
		CHECK_MSG(pol.policy == rows[i].want, "row %zu: %d", i, (int)pol.policy);
		CHECK_MSG(pol.ntlsa == rows[i].ntlsa, "row %zu: %zu", i, pol.ntlsa);
		CHECK_MSG(pol.refuse == rows[i].refuse, "row %zu", i);
		if (pol.ntlsa == 1) {
			CHECK_INT(pol.tlsa[0].usage, 3);
			CHECK(pol.tlsa[0].data != d32);         /* a copy */
			CHECK_INT(pol.nunusable, 2);
		}
		if (pol.refuse) {
			CHECK_STR(pol.status, "4.7.5");
			CHECK_STR(pol.result, "dnssec-invalid");
			CHECK_STR(pol.reason, "TLSA lookup failed: SERVFAIL");
		}
		tlspolicy_clear(&pol);
		CHECK(pol.tlsa == NULL && pol.policy == DELIVER_POLICY_CONF);
	}
}

int
main(void)
{
	test_query_do();
	test_answer_header();
	test_parse_tlsa();
	test_tlsa_usable();
	test_tlsa_digest();
	test_policy();
	return check_done();
}
