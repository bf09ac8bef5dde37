/*
 * dns_cache.c - sharing DNS work between lookups.  A caller's lookup
 * (struct dns_query) waits on a fetch (struct dns_fetch, the DNS work for one
 * key: domain and port, or a route's host list).  Concurrent lookups of one
 * key join the fetch in flight; its result is built once and every waiter
 * gets its own copy.  Finished results are kept in a small cache
 * (DNS_CACHE_MAX entries, least recently used out first) for min(TTL,
 * DNS_CACHE_TTL_MAX) seconds — the TTL being the least of every record and
 * negative answer (SOA, RFC 2308) the result rests on — or
 * DNS_CACHE_TTL_TEMP seconds after a temporary failure; nothing with TTL 0,
 * nothing from a fetch a reload made stale.  dns_cache_clear() and
 * dns_reload() forget it.  Both tables are keyed by the same strings
 * ("M<port> <domain>", "H <host>:<port>...").
 *
 * Owns: every fetch until its last request has called back (a fetch holds
 * itself while being built: dns_fetch_new .. dns_fetch_release), the table
 * of joinable fetches, and the cache (each entry its own copy of a result).
 *
 * Must never: hand one result to two waiters, cache a result built under an
 * older configuration, or free a fetch with a request still in flight.
 */
#include "dns/dns_int.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

#define DNS_CACHE_MAX        1024    /* results cached, least recently used out first */
#define DNS_CACHE_TTL_MAX    60      /* s: a result is never kept longer */
#define DNS_CACHE_TTL_TEMP   5       /* s: a temporary failure is kept this long */

/* A cached result, as resolved (equal preferences not shuffled). */
struct dns_cent {
	struct htab_node node;  /* in r->cache */
	char *key;
	struct dns_result *res;
	bool shuffle;           /* shuffle equal preferences per copy (not for routes) */
	uint64_t expires;       /* the resolver's clock, ms */
	TAILQ_ENTRY(dns_cent) lru;       /* least recently used first */
};

/* ---- the cache ---- */

static uint64_t
dns_now(struct dns_resolver *r)
{
	return r->now != NULL ? r->now(r->now_arg) : util_mono_ms();
}

static void
dns_cache_del(struct dns_resolver *r, struct dns_cent *e)
{
	htab_remove(&r->cache, &e->node);
	TAILQ_REMOVE(&r->lru, e, lru);
	dns_result_free(e->res);
	free(e->key);
	free(e);
}

/* The cached result for key while it is fresh (then it is the most recently used). */
static struct dns_cent *
dns_cache_get(struct dns_resolver *r, const char *key)
{
	struct htab_node *n;
	struct dns_cent *e;

	if ((n = htab_find(&r->cache, key)) == NULL)
		return NULL;
	e = HTAB_ENTRY(n, struct dns_cent, node);
	if (dns_now(r) >= e->expires) {
		dns_cache_del(r, e);
		return NULL;
	}
	TAILQ_REMOVE(&r->lru, e, lru);
	TAILQ_INSERT_TAIL(&r->lru, e, lru);
	return e;
}

/* Keep a copy of res for keep seconds, pushing out the least recently used. */
static void
dns_cache_put(struct dns_resolver *r, const char *key, const struct dns_result *res, bool shuffle,
    uint32_t keep)
{
	struct htab_node *n;
	struct dns_cent *e;

	if ((n = htab_find(&r->cache, key)) != NULL)
		dns_cache_del(r, HTAB_ENTRY(n, struct dns_cent, node));
	if (htab_count(&r->cache) >= DNS_CACHE_MAX)
		dns_cache_del(r, TAILQ_FIRST(&r->lru));
	e = xcalloc(1, sizeof(*e));
	e->key = xstrdup(key);
	e->res = dns_result_copy(res);
	e->shuffle = shuffle;
	e->expires = dns_now(r) + (uint64_t)keep * 1000;
	htab_insert(&r->cache, &e->node, e->key);
	TAILQ_INSERT_TAIL(&r->lru, e, lru);
}

void
dns_cache_clear(struct dns_resolver *r)
{
	struct dns_cent *e;

	while ((e = TAILQ_FIRST(&r->lru)) != NULL)
		dns_cache_del(r, e);
}

/* How long a fetch's result may be kept (s); 0: not at all. */
static uint32_t
dns_fetch_keep(const struct dns_fetch *f, const struct dns_result *res)
{
	if (f->temp || res->err == RELAY_ETEMP)
		return f->ttl < DNS_CACHE_TTL_TEMP ? f->ttl : DNS_CACHE_TTL_TEMP;
	if (f->ttl == DNS_TTL_NONE)
		return 0;               /* nothing came from DNS */
	return f->ttl < DNS_CACHE_TTL_MAX ? f->ttl : DNS_CACHE_TTL_MAX;
}

/* ---- fetches ---- */

/* A fetch with its construction hold (dns_fetch_release); key (taken) makes it joinable. */
struct dns_fetch *
dns_fetch_new(struct dns_resolver *r, char *key)
{
	struct dns_fetch *f = xcalloc(1, sizeof(*f));

	f->magic = DNS_MAGIC_FETCH;
	f->r = r;
	f->c = r->chan;
	f->inflight = 1;
	f->ttl = DNS_TTL_NONE;
	TAILQ_INIT(&f->waiters);
	TAILQ_INSERT_TAIL(&r->fetches, f, entry);
	if (key != NULL) {
		f->key = key;
		htab_insert(&r->inflight, &f->node, f->key);
		f->joinable = true;
		r->stats.fetches++;
	}
	return f;
}

void
dns_fetch_join(struct dns_fetch *f, struct dns_query *q)
{
	q->f = f;
	TAILQ_INSERT_TAIL(&f->waiters, q, entry);
}

/* Later lookups of the key start afresh. */
void
dns_fetch_unjoin(struct dns_fetch *f)
{
	if (!f->joinable)
		return;
	htab_remove(&f->r->inflight, &f->node);
	f->joinable = false;
}

static void
dns_fetch_free(struct dns_fetch *f)
{
	size_t i;

	TAILQ_REMOVE(&f->r->fetches, f, entry);
	for (i = 0; i < f->nx; i++) {
		free(f->x[i].host);
		tlsa_free_all(f->x[i].tlsa, f->x[i].ntlsa);
	}
	free(f->x);
	for (i = 0; i < f->ntxt; i++)
		free(f->txt[i]);
	free(f->txt);
	free(f->domain);
	free(f->key);
	f->magic = 0;
	free(f);
}

static size_t
dns_fetch_nwaiters(const struct dns_fetch *f)
{
	const struct dns_query *q;
	size_t n = 0;

	TAILQ_FOREACH(q, &f->waiters, entry)
		n++;
	return n;
}

/* One line per resolution (not per caller); keep: seconds it is cached. */
static void
dns_log_result(const struct dns_fetch *f, const struct dns_result *res, uint32_t keep)
{
	struct log_line l;
	size_t i;

	log_begin(&l, LOG_DEBUG, "mx");
	log_kv(&l, f->routes ? "hosts" : "domain", f->domain);
	if (res->err != 0) {
		log_kv(&l, "status", res->status);
		log_kv(&l, "reason", res->reason);
	} else {
		struct buf b = BUF_INIT;

		for (i = 0; i < res->ntargets; i++)
			buf_printf(&b, "%s%u:%s/%zu", i ? "," : "", res->targets[i].pref,
			    res->targets[i].host, res->targets[i].naddrs);
		log_kv(&l, "targets", buf_cstr(&b));
		if (res->implicit)
			log_kv(&l, "implicit", "yes");
		buf_free(&b);
	}
	log_kvu(&l, "waiters", dns_fetch_nwaiters(f));
	log_kvu(&l, "cached_s", keep);
	log_end(&l);
}

/*
 * The fetch's last request is back: the result is built once, kept in the
 * cache if it may be, and every waiter gets its own copy.
 */
static void
dns_fetch_done(struct dns_fetch *f)
{
	struct dns_resolver *r = f->r;
	struct dns_result *res;
	struct dns_query *q;
	uint32_t keep;

	dns_fetch_unjoin(f);
	if (!TAILQ_EMPTY(&f->waiters)) {
		res = dns_build_result(f);
		keep = f->key != NULL && !f->stale ? dns_fetch_keep(f, res) : 0;
		if (!f->txtq)
			dns_log_result(f, res, keep);
		if (keep > 0)
			dns_cache_put(r, f->key, res, !f->routes, keep);
		while ((q = TAILQ_FIRST(&f->waiters)) != NULL) {
			TAILQ_REMOVE(&f->waiters, q, entry);
			q->f = NULL;
			dns_query_ready(q, TAILQ_EMPTY(&f->waiters) ? res : dns_result_copy(res),
			    !f->routes);
		}
	}
	dns_fetch_free(f);
}

/* Drop a hold (a request called back, or construction is over). */
void
dns_fetch_release(struct dns_fetch *f)
{
	if (f->inflight == 0)
		fatalx("%s: release without hold", __func__);
	if (--f->inflight == 0)
		dns_fetch_done(f);
}

/* Answer q from the cache, or let it join the fetch in flight for key: false if neither. */
bool
dns_share(struct dns_resolver *r, struct dns_query *q, const char *key)
{
	struct htab_node *n;
	struct dns_cent *e;

	if ((e = dns_cache_get(r, key)) != NULL) {
		r->stats.cache_hits++;
		dns_query_ready(q, dns_result_copy(e->res), e->shuffle);
		return true;
	}
	if ((n = htab_find(&r->inflight, key)) != NULL) {
		r->stats.joined++;
		dns_fetch_join(HTAB_ENTRY(n, struct dns_fetch, node), q);
		return true;
	}
	return false;
}
