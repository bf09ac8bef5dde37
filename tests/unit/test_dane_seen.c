/*
 * test_dane_seen.c - the router's memory of DANE for relayctl policy
 * (router/router_dane.c): what a lookup's targets become (TLSA secure with
 * copies of the records, bogus with why, absent, insecure), MX hosts sorted
 * by preference, a newer answer replacing an older one, lookups ignoring
 * case and a trailing dot, and expiry by the time last refreshed.
 */
#include "router/router_dane.h"
#include "dns/dns.h"
#include "common/util.h"

#include <stdlib.h>
#include <string.h>

#include "check.h"

static unsigned char digest[32] = { 0xab, 0xcd };

/* A lookup result of rows' targets (host, pref, secure, TLSA state). */
struct row {
	const char *host;
	unsigned pref;
	bool secure;
	enum dns_tlsa_state tlsa;
};

static struct dns_result *
result(const struct row *rows, size_t n)
{
	struct dns_result *res = xcalloc(1, sizeof(*res));
	size_t i;

	res->targets = xcalloc(n, sizeof(*res->targets));
	res->ntargets = n;
	for (i = 0; i < n; i++) {
		struct dns_target *t = &res->targets[i];

		t->host = xstrdup(rows[i].host);
		t->pref = rows[i].pref;
		t->secure = rows[i].secure;
		t->tlsa_state = rows[i].tlsa;
		if (t->tlsa_state == DNS_TLSA_SECURE) {
			struct tlsa_rr rr = { 3, 1, 1, digest, sizeof(digest) };

			t->tlsa = tlsa_copy_all(&rr, 1);
			t->ntlsa = 1;
		} else if (t->tlsa_state == DNS_TLSA_FAILED)
			snprintf(t->tlsa_error, sizeof(t->tlsa_error), "TLSA lookup: SERVFAIL");
	}
	return res;
}

static void
test_record(void)
{
	static const struct row rows[] = {
		{ "mx2.example.net", 20, true, DNS_TLSA_FAILED },
		{ "mx1.example.net", 10, true, DNS_TLSA_SECURE },
		{ "mx3.example.net", 20, true, DNS_TLSA_NONE },
		{ "mx0.other.example", 30, false, DNS_TLSA_NONE },
	};
	static const struct {
		const char *host;
		unsigned pref;
		bool secure;
		const char *tlsa;
	} want[] = {
		{ "mx1.example.net", 10, true, "secure" },
		{ "mx2.example.net", 20, true, "bogus" },
		{ "mx3.example.net", 20, true, "absent" },
		{ "mx0.other.example", 30, false, "insecure" },
	};
	struct dane_seen *t = dane_seen_new();
	struct dns_result *res = result(rows, RELAY_ARRAY_LEN(rows));
	const struct dane_domain *d;
	const struct dane_host *h;
	size_t i;

	CHECK(dane_seen_domain(t, "example.net") == NULL);
	dane_seen_record(t, "Example.NET", res, true, 1000);
	dns_result_free(res);           /* the table keeps copies */
	d = dane_seen_domain(t, "example.net.");
	CHECK(d != NULL);
	if (d == NULL)
		goto out;
	CHECK_STR(d->name, "example.net");
	CHECK(d->dnssec);
	CHECK_INT(d->looked_up_ms, 1000);
	CHECK_INT(d->nmx, RELAY_ARRAY_LEN(want));
	for (i = 0; i < d->nmx && i < RELAY_ARRAY_LEN(want); i++) {
		CHECK_STR(d->mx[i].host, want[i].host);
		CHECK_INT(d->mx[i].pref, want[i].pref);
		CHECK_INT(d->mx[i].secure, want[i].secure);
		h = dane_seen_host(t, d->mx[i].host);
		CHECK(h != NULL);
		if (h != NULL)
			CHECK_STR(dane_tlsa_seen_name(h->state), want[i].tlsa);
	}
	h = dane_seen_host(t, "MX1.example.net.");
	CHECK(h != NULL && h->ntlsa == 1 && h->tlsa[0].usage == 3 && h->tlsa[0].len == 32 &&
	    memcmp(h->tlsa[0].data, digest, 32) == 0 && h->looked_up_ms == 1000);
	h = dane_seen_host(t, "mx2.example.net");
	CHECK(h != NULL && strstr(h->error, "SERVFAIL") != NULL && h->ntlsa == 0);

	/* a newer answer replaces the older: mx1 lost its records, mx2 is fine now */
	{
		static const struct row later[] = {
			{ "mx1.example.net", 10, true, DNS_TLSA_NONE },
			{ "mx2.example.net", 20, true, DNS_TLSA_SECURE },
		};

		res = result(later, RELAY_ARRAY_LEN(later));
		dane_seen_record(t, "example.net", res, true, 5000);
		dns_result_free(res);
	}
	d = dane_seen_domain(t, "example.net");
	CHECK(d != NULL && d->nmx == 2 && d->looked_up_ms == 5000);
	h = dane_seen_host(t, "mx1.example.net");
	CHECK(h != NULL && h->state == DANE_TLSA_ABSENT && h->ntlsa == 0 && h->looked_up_ms == 5000);
	h = dane_seen_host(t, "mx2.example.net");
	CHECK(h != NULL && h->state == DANE_TLSA_SECURE && h->ntlsa == 1 && h->error[0] == '\0');

	/* a failed lookup records nothing */
	res = xcalloc(1, sizeof(*res));
	res->err = RELAY_ETEMP;
	dane_seen_record(t, "failed.example", res, true, 6000);
	dns_result_free(res);
	CHECK(dane_seen_domain(t, "failed.example") == NULL);

	/* expiry: what was not refreshed since the cutoff goes */
	dane_seen_expire(t, 2000);
	CHECK(dane_seen_domain(t, "example.net") != NULL);
	CHECK(dane_seen_host(t, "mx1.example.net") != NULL);
	CHECK(dane_seen_host(t, "mx3.example.net") == NULL);    /* last seen at 1000 */
	CHECK(dane_seen_host(t, "mx0.other.example") == NULL);
	dane_seen_expire(t, 5001);
	CHECK(dane_seen_domain(t, "example.net") == NULL);
	CHECK(dane_seen_host(t, "mx1.example.net") == NULL);
out:
	dane_seen_free(t);
}

int
main(void)
{
	test_record();
	CHECK_STR(dane_tlsa_seen_name(DANE_TLSA_INSECURE), "insecure");
	CHECK_STR(dane_tlsa_seen_name(DANE_TLSA_BOGUS), "bogus");
	return check_done();
}
