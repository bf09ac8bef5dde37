/*
 * router_dane.c - the router's memory of DANE as DNS last told it
 * (router_dane.h): MX hosts per recipient domain, the last TLSA answer per
 * MX host, for `relayctl policy`.
 *
 * Owns: every entry and its copies of names and TLSA records.
 * Never: looks anything up or decides a policy (dns/ and tlspolicy/ do);
 * the scheduler only tells it what a lookup found.
 */
#include "router/router_dane.h"
#include "dns/dns.h"
#include "common/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dane_seen {
	struct htab domains;            /* struct dane_domain by name */
	struct htab hosts;              /* struct dane_host by name */
};

struct dane_seen *
dane_seen_new(void)
{
	struct dane_seen *t = xcalloc(1, sizeof(*t));

	htab_init(&t->domains, &htab_ops_nocase);
	htab_init(&t->hosts, &htab_ops_nocase);
	return t;
}

static void
dane_domain_free(struct dane_domain *d)
{
	size_t i;

	for (i = 0; i < d->nmx; i++)
		free(d->mx[i].host);
	free(d->mx);
	free(d->name);
	free(d);
}

static void
dane_host_free(struct dane_host *h)
{
	tlsa_free_all(h->tlsa, h->ntlsa);
	free(h->name);
	free(h);
}

void
dane_seen_free(struct dane_seen *t)
{
	struct htab_iter it;
	struct htab_node *n;

	if (t == NULL)
		return;
	HTAB_FOREACH(n, &t->domains, &it)
		dane_domain_free(HTAB_ENTRY(n, struct dane_domain, node));
	HTAB_FOREACH(n, &t->hosts, &it)
		dane_host_free(HTAB_ENTRY(n, struct dane_host, node));
	htab_free(&t->domains);
	htab_free(&t->hosts);
	free(t);
}

static int
dane_mx_cmp(const void *a, const void *b)
{
	const struct dane_mx *x = a, *y = b;

	if (x->pref != y->pref)
		return x->pref < y->pref ? -1 : 1;
	return util_strcasecmp(x->host, y->host);
}

/* The name without a trailing dot, at most 253 bytes, into out. */
static const char *
dane_key(const char *name, char *out, size_t outlen)
{
	size_t n = strlen(name);

	if (n > 1 && name[n - 1] == '.')
		n--;
	snprintf(out, outlen, "%.*s", (int)n, name);
	return out;
}

static void
dane_host_record(struct dane_seen *t, const struct dns_target *tg, uint64_t now)
{
	struct htab_node *n = htab_find(&t->hosts, tg->host);
	struct dane_host *h;

	if (n != NULL) {
		h = HTAB_ENTRY(n, struct dane_host, node);
		tlsa_free_all(h->tlsa, h->ntlsa);
		h->tlsa = NULL;
		h->ntlsa = 0;
		h->error[0] = '\0';
	} else {
		h = xcalloc(1, sizeof(*h));
		h->name = xstrdup(tg->host);
		htab_insert(&t->hosts, &h->node, h->name);
	}
	h->looked_up_ms = now;
	switch (tg->tlsa_state) {
	case DNS_TLSA_SECURE:
		h->state = DANE_TLSA_SECURE;
		h->tlsa = tlsa_copy_all(tg->tlsa, tg->ntlsa);
		h->ntlsa = tg->ntlsa;
		break;
	case DNS_TLSA_FAILED:
		h->state = DANE_TLSA_BOGUS;
		snprintf(h->error, sizeof(h->error), "%s", tg->tlsa_error);
		break;
	case DNS_TLSA_NONE:
		h->state = tg->secure ? DANE_TLSA_ABSENT : DANE_TLSA_INSECURE;
		break;
	}
}

void
dane_seen_record(struct dane_seen *t, const char *domain, const struct dns_result *res,
    bool dnssec, uint64_t now)
{
	char key[256];
	struct htab_node *n;
	struct dane_domain *d;
	size_t i;

	if (res->err != 0)
		return;
	dane_key(domain, key, sizeof(key));
	if ((n = htab_find(&t->domains, key)) != NULL) {
		d = HTAB_ENTRY(n, struct dane_domain, node);
		for (i = 0; i < d->nmx; i++)
			free(d->mx[i].host);
		free(d->mx);
	} else {
		d = xcalloc(1, sizeof(*d));
		d->name = xstrdup(key);
		for (i = 0; d->name[i] != '\0'; i++)
			if (d->name[i] >= 'A' && d->name[i] <= 'Z')
				d->name[i] = (char)(d->name[i] - 'A' + 'a');
		htab_insert(&t->domains, &d->node, d->name);
	}
	d->dnssec = dnssec;
	d->implicit = res->implicit;
	d->looked_up_ms = now;
	d->nmx = res->ntargets;
	d->mx = xcalloc(res->ntargets + 1, sizeof(*d->mx));
	for (i = 0; i < res->ntargets; i++) {
		d->mx[i].host = xstrdup(res->targets[i].host);
		d->mx[i].pref = res->targets[i].pref;
		d->mx[i].secure = res->targets[i].secure;
		dane_host_record(t, &res->targets[i], now);
	}
	if (d->nmx > 1)
		qsort(d->mx, d->nmx, sizeof(*d->mx), dane_mx_cmp);
}

const struct dane_domain *
dane_seen_domain(const struct dane_seen *t, const char *domain)
{
	char key[256];
	struct htab_node *n = htab_find(&t->domains, dane_key(domain, key, sizeof(key)));

	return n != NULL ? HTAB_ENTRY(n, struct dane_domain, node) : NULL;
}

const struct dane_host *
dane_seen_host(const struct dane_seen *t, const char *host)
{
	char key[256];
	struct htab_node *n = htab_find(&t->hosts, dane_key(host, key, sizeof(key)));

	return n != NULL ? HTAB_ENTRY(n, struct dane_host, node) : NULL;
}

void
dane_seen_expire(struct dane_seen *t, uint64_t cutoff_ms)
{
	struct htab_iter it;
	struct htab_node *n;

	HTAB_FOREACH(n, &t->domains, &it) {
		struct dane_domain *d = HTAB_ENTRY(n, struct dane_domain, node);

		if (d->looked_up_ms < cutoff_ms) {
			htab_remove(&t->domains, n);
			dane_domain_free(d);
		}
	}
	HTAB_FOREACH(n, &t->hosts, &it) {
		struct dane_host *h = HTAB_ENTRY(n, struct dane_host, node);

		if (h->looked_up_ms < cutoff_ms) {
			htab_remove(&t->hosts, n);
			dane_host_free(h);
		}
	}
}

const char *
dane_tlsa_seen_name(enum dane_tlsa_seen s)
{
	static const char *const names[] = { "insecure", "absent", "secure", "bogus" };

	return (size_t)s < RELAY_ARRAY_LEN(names) ? names[s] : "?";
}
