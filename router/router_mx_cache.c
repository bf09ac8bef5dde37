/*
 * router_mx_cache.c - sharing DNS work between lookups.  A caller's lookup
 * (struct mx_query) waits on a fetch (struct mx_fetch, the DNS work for one
 * key: domain and port, or a route's host list).  Concurrent lookups of one
 * key join the fetch in flight; its result is built once and every waiter
 * gets its own copy.  Finished results are kept in a small cache
 * (MX_CACHE_MAX entries, least recently used out first) for min(TTL,
 * MX_CACHE_TTL_MAX) seconds — the TTL being the least of every record and
 * negative answer (SOA, RFC 2308) the result rests on — or
 * MX_CACHE_TTL_TEMP seconds after a temporary failure; nothing with TTL 0,
 * nothing from a fetch a reload made stale.  mx_cache_clear() and
 * mx_reload() forget it.  Both tables are keyed by the same strings
 * ("M<port> <domain>", "H <host>:<port>...").
 *
 * Owns: every fetch until its last request has called back (a fetch holds
 * itself while being built: mx_fetch_new .. mx_fetch_release), the table
 * of joinable fetches, and the cache (each entry its own copy of a result).
 *
 * Must never: hand one result to two waiters, cache a result built under an
 * older configuration, or free a fetch with a request still in flight.
 */
#include "router/router_mx_int.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

#define MX_CACHE_MAX        1024    /* results cached, least recently used out first */
#define MX_CACHE_TTL_MAX    60      /* s: a result is never kept longer */
#define MX_CACHE_TTL_TEMP   5       /* s: a temporary failure is kept this long */

#define MX_CONTAINER(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

/* A cached result, as resolved (equal preferences not shuffled). */
struct mx_cent {
	struct mx_hnode node;
	struct mx_result *res;
	bool shuffle;           /* shuffle equal preferences per copy (not for routes) */
	uint64_t expires;       /* the resolver's clock, ms */
	TAILQ_ENTRY(mx_cent) lru;       /* least recently used first */
};

/* ---- tables: fetches in flight and cached results, by key ---- */


static struct mx_hnode *
mx_htab_find(const struct mx_htab *t, const char *key, size_t h)
{
	struct mx_hnode *n;

	if (t->nb == 0)
		return NULL;
	for (n = t->b[h % t->nb]; n != NULL; n = n->next)
		if (n->hash == h && strcmp(n->key, key) == 0)
			return n;
	return NULL;
}

static void
mx_htab_add(struct mx_htab *t, struct mx_hnode *n)
{
	struct mx_hnode **nb, *e, *next;
	size_t size, i, k;

	if (t->n >= t->nb) {
		size = t->nb ? t->nb * 2 : 64;
		nb = xcalloc(size, sizeof(*nb));
		for (i = 0; i < t->nb; i++) {
			for (e = t->b[i]; e != NULL; e = next) {
				next = e->next;
				k = e->hash % size;
				e->next = nb[k];
				nb[k] = e;
			}
		}
		free(t->b);
		t->b = nb;
		t->nb = size;
	}
	k = n->hash % t->nb;
	n->next = t->b[k];
	t->b[k] = n;
	t->n++;
}

static void
mx_htab_del(struct mx_htab *t, struct mx_hnode *n)
{
	struct mx_hnode **pp;

	for (pp = &t->b[n->hash % t->nb]; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == n) {
			*pp = n->next;
			t->n--;
			return;
		}
	}
	fatalx("%s: node not in its table", __func__);
}

/* ---- the cache ---- */

static uint64_t
mx_now(struct mx_resolver *r)
{
	return r->now != NULL ? r->now(r->now_arg) : util_mono_ms();
}

static void
mx_cache_del(struct mx_resolver *r, struct mx_cent *e)
{
	mx_htab_del(&r->cache, &e->node);
	TAILQ_REMOVE(&r->lru, e, lru);
	mx_result_free(e->res);
	free(e->node.key);
	free(e);
}

/* The cached result for key while it is fresh (then it is the most recently used). */
static struct mx_cent *
mx_cache_get(struct mx_resolver *r, const char *key, size_t h)
{
	struct mx_hnode *n;
	struct mx_cent *e;

	if ((n = mx_htab_find(&r->cache, key, h)) == NULL)
		return NULL;
	e = MX_CONTAINER(n, struct mx_cent, node);
	if (mx_now(r) >= e->expires) {
		mx_cache_del(r, e);
		return NULL;
	}
	TAILQ_REMOVE(&r->lru, e, lru);
	TAILQ_INSERT_TAIL(&r->lru, e, lru);
	return e;
}

/* Keep a copy of res for keep seconds, pushing out the least recently used. */
static void
mx_cache_put(struct mx_resolver *r, const char *key, const struct mx_result *res, bool shuffle,
    uint32_t keep)
{
	struct mx_hnode *n;
	struct mx_cent *e;
	size_t h = util_hash_str(key);

	if ((n = mx_htab_find(&r->cache, key, h)) != NULL)
		mx_cache_del(r, MX_CONTAINER(n, struct mx_cent, node));
	if (r->cache.n >= MX_CACHE_MAX)
		mx_cache_del(r, TAILQ_FIRST(&r->lru));
	e = xcalloc(1, sizeof(*e));
	e->node.key = xstrdup(key);
	e->node.hash = h;
	e->res = mx_result_copy(res);
	e->shuffle = shuffle;
	e->expires = mx_now(r) + (uint64_t)keep * 1000;
	mx_htab_add(&r->cache, &e->node);
	TAILQ_INSERT_TAIL(&r->lru, e, lru);
}

void
mx_cache_clear(struct mx_resolver *r)
{
	struct mx_cent *e;

	while ((e = TAILQ_FIRST(&r->lru)) != NULL)
		mx_cache_del(r, e);
}

/* How long a fetch's result may be kept (s); 0: not at all. */
static uint32_t
mx_fetch_keep(const struct mx_fetch *f, const struct mx_result *res)
{
	if (f->temp || res->err == RELAY_ETEMP)
		return f->ttl < MX_CACHE_TTL_TEMP ? f->ttl : MX_CACHE_TTL_TEMP;
	if (f->ttl == MX_TTL_NONE)
		return 0;               /* nothing came from DNS */
	return f->ttl < MX_CACHE_TTL_MAX ? f->ttl : MX_CACHE_TTL_MAX;
}

/* ---- fetches ---- */

/* A fetch with its construction hold (mx_fetch_release); key (taken) makes it joinable. */
struct mx_fetch *
mx_fetch_new(struct mx_resolver *r, char *key)
{
	struct mx_fetch *f = xcalloc(1, sizeof(*f));

	f->magic = MX_MAGIC_FETCH;
	f->r = r;
	f->c = r->chan;
	f->inflight = 1;
	f->ttl = MX_TTL_NONE;
	TAILQ_INIT(&f->waiters);
	TAILQ_INSERT_TAIL(&r->fetches, f, entry);
	if (key != NULL) {
		f->node.key = key;
		f->node.hash = util_hash_str(key);
		mx_htab_add(&r->inflight, &f->node);
		f->joinable = true;
		r->stats.fetches++;
	}
	return f;
}

void
mx_fetch_join(struct mx_fetch *f, struct mx_query *q)
{
	q->f = f;
	TAILQ_INSERT_TAIL(&f->waiters, q, entry);
}

/* Later lookups of the key start afresh. */
void
mx_fetch_unjoin(struct mx_fetch *f)
{
	if (!f->joinable)
		return;
	mx_htab_del(&f->r->inflight, &f->node);
	f->joinable = false;
}

static void
mx_fetch_free(struct mx_fetch *f)
{
	size_t i;

	TAILQ_REMOVE(&f->r->fetches, f, entry);
	for (i = 0; i < f->nx; i++)
		free(f->x[i].host);
	free(f->x);
	free(f->domain);
	free(f->node.key);
	f->magic = 0;
	free(f);
}

static size_t
mx_fetch_nwaiters(const struct mx_fetch *f)
{
	const struct mx_query *q;
	size_t n = 0;

	TAILQ_FOREACH(q, &f->waiters, entry)
		n++;
	return n;
}

/* One line per resolution (not per caller); keep: seconds it is cached. */
static void
mx_log_result(const struct mx_fetch *f, const struct mx_result *res, uint32_t keep)
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
	log_kvu(&l, "waiters", mx_fetch_nwaiters(f));
	log_kvu(&l, "cached_s", keep);
	log_end(&l);
}

/*
 * The fetch's last request is back: the result is built once, kept in the
 * cache if it may be, and every waiter gets its own copy.
 */
static void
mx_fetch_done(struct mx_fetch *f)
{
	struct mx_resolver *r = f->r;
	struct mx_result *res;
	struct mx_query *q;
	uint32_t keep;

	mx_fetch_unjoin(f);
	if (!TAILQ_EMPTY(&f->waiters)) {
		res = mx_build_result(f);
		keep = f->node.key != NULL && !f->stale ? mx_fetch_keep(f, res) : 0;
		mx_log_result(f, res, keep);
		if (keep > 0)
			mx_cache_put(r, f->node.key, res, !f->routes, keep);
		while ((q = TAILQ_FIRST(&f->waiters)) != NULL) {
			TAILQ_REMOVE(&f->waiters, q, entry);
			q->f = NULL;
			mx_query_ready(q, TAILQ_EMPTY(&f->waiters) ? res : mx_result_copy(res),
			    !f->routes);
		}
	}
	mx_fetch_free(f);
}

/* Drop a hold (a request called back, or construction is over). */
void
mx_fetch_release(struct mx_fetch *f)
{
	if (f->inflight == 0)
		fatalx("%s: release without hold", __func__);
	if (--f->inflight == 0)
		mx_fetch_done(f);
}

/* Answer q from the cache, or let it join the fetch in flight for key: false if neither. */
bool
mx_share(struct mx_resolver *r, struct mx_query *q, const char *key)
{
	size_t h = util_hash_str(key);
	struct mx_hnode *n;
	struct mx_cent *e;

	if ((e = mx_cache_get(r, key, h)) != NULL) {
		r->stats.cache_hits++;
		mx_query_ready(q, mx_result_copy(e->res), e->shuffle);
		return true;
	}
	if ((n = mx_htab_find(&r->inflight, key, h)) != NULL) {
		r->stats.joined++;
		mx_fetch_join(MX_CONTAINER(n, struct mx_fetch, node), q);
		return true;
	}
	return false;
}
