/*
 * dns.c - the router's DNS resolver (dns.h): the resolver
 * object, its configuration, and the callers' queries.  dns_new() creates it
 * on the one libuv loop, dns_reload() swaps its configuration (a new c-ares
 * channel; the cache and the fetches in flight are forgotten), dns_close()
 * cancels every query and closes its handles.  A query (struct dns_query) is
 * one caller's lookup: it waits on a fetch (dns_cache.c), then holds a
 * result of its own, which a 0 ms timer (the kick) hands to its callback,
 * equal preferences shuffled per caller.  The kick also reaps channels
 * retired by a reload once their last request is back.
 *
 * The other parts (see dns_int.h): dns_resolve.c (what a lookup
 * answers: dns_lookup*, MX/A/AAAA/CNAME, implicit and null MX, loops),
 * dns_cache.c (fetches shared in flight, the result cache),
 * dns_ares.c (c-ares on the libuv loop), dns_answer.c (answer
 * parsing).
 *
 * Owns: the resolver (freed once its last handle is closed), its kick timer
 * and prepare handle, every query until its callback has returned or it is
 * cancelled, the configuration copies (hostname, listen addresses, DNS
 * servers) and the shuffle's randomness.
 *
 * Must never: call a user callback from inside c-ares or from inside
 * dns_lookup*() (only from the kick), call a query's callback after
 * dns_cancel() or dns_close(), or hand one result to two callers.
 */
#include "dns/dns_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

#define DNS_DEFAULT_TIMEOUT  2000
#define DNS_DEFAULT_TRIES    2

/* ---- randomness ---- */

static uint32_t
dns_default_random(void *arg, uint32_t n)
{
	struct dns_resolver *r = arg;
	uint64_t z;

	/* splitmix64: good enough to spread load, not a secret */
	z = (r->rnd_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	z ^= z >> 31;
	return n ? (uint32_t)(z % n) : 0;
}

static uint32_t
dns_random(struct dns_resolver *r, uint32_t n)
{
	uint32_t v;

	if (r->rnd == NULL)
		return dns_default_random(r, n);
	v = r->rnd(r->rnd_arg, n);
	if (v >= n)
		fatalx("%s: random function returned %u, want < %u", __func__, v, n);
	return v;
}

/* ---- results ---- */

void
dns_result_free(struct dns_result *res)
{
	size_t i;

	if (res == NULL)
		return;
	for (i = 0; i < res->ntargets; i++) {
		free(res->targets[i].host);
		free(res->targets[i].addrs);
		tlsa_free_all(res->targets[i].tlsa, res->targets[i].ntlsa);
	}
	free(res->targets);
	for (i = 0; i < res->ntxt; i++)
		free(res->txt[i]);
	free(res->txt);
	free(res);
}

/* A deep copy: every caller owns its own result. */
struct dns_result *
dns_result_copy(const struct dns_result *src)
{
	struct dns_result *res = xmalloc(sizeof(*res));
	size_t i;

	*res = *src;
	res->targets = NULL;
	res->txt = NULL;
	if (src->ntxt > 0) {
		res->txt = xcalloc(src->ntxt, sizeof(*res->txt));
		for (i = 0; i < src->ntxt; i++)
			res->txt[i] = xstrdup(src->txt[i]);
	}
	if (src->ntargets == 0)
		return res;
	res->targets = xcalloc(src->ntargets, sizeof(*res->targets));
	for (i = 0; i < src->ntargets; i++) {
		const struct dns_target *s = &src->targets[i];
		struct dns_target *t = &res->targets[i];

		*t = *s;
		t->host = xstrdup(s->host);
		t->addrs = xcalloc(s->naddrs, sizeof(*t->addrs));
		memcpy(t->addrs, s->addrs, s->naddrs * sizeof(*t->addrs));
		t->tlsa = tlsa_copy_all(s->tlsa, s->ntlsa);
	}
	return res;
}

/* Shuffle each run of equal preferences (the targets are sorted by preference). */
static void
dns_shuffle(struct dns_resolver *r, struct dns_result *res)
{
	struct dns_target *t = res->targets, tmp;
	size_t n = res->ntargets, i, j, k, pick;

	for (i = 0; i < n; i = j) {
		for (j = i + 1; j < n && t[j].pref == t[i].pref; j++)
			;
		for (k = j - 1; k > i; k--) {
			pick = i + dns_random(r, (uint32_t)(k - i + 1));
			tmp = t[k];
			t[k] = t[pick];
			t[pick] = tmp;
		}
	}
}

/* ---- queries ---- */

struct dns_query *
dns_query_new(struct dns_resolver *r, dns_cb *cb, void *arg)
{
	struct dns_query *q;

	if (r->closing)
		fatalx("%s: lookup on a closing resolver", __func__);
	q = xcalloc(1, sizeof(*q));
	q->magic = DNS_MAGIC_QUERY;
	q->r = r;
	q->cb = cb;
	q->arg = arg;
	r->npending++;
	r->stats.lookups++;
	return q;
}

/* q has its own result: the kick hands it out. */
void
dns_query_ready(struct dns_query *q, struct dns_result *res, bool shuffle)
{
	struct dns_resolver *r = q->r;

	if (shuffle)
		dns_shuffle(r, res);
	q->res = res;
	q->ready = true;
	TAILQ_INSERT_TAIL(&r->ready, q, entry);
	dns_kick(r);
}

void
dns_cancel(struct dns_query *q)
{
	struct dns_resolver *r;
	struct dns_fetch *f;

	if (q == NULL)
		return;
	if (q->magic != DNS_MAGIC_QUERY)
		fatalx("%s: bad or cancelled query", __func__);
	r = q->r;
	if (q->ready) {
		TAILQ_REMOVE(&r->ready, q, entry);
		dns_result_free(q->res);
	} else {
		/* the others waiting on the fetch keep it; the last one abandons it */
		f = q->f;
		TAILQ_REMOVE(&f->waiters, q, entry);
		if (TAILQ_EMPTY(&f->waiters)) {
			f->abandoned = true;
			dns_fetch_unjoin(f);     /* freed when its last request calls back */
		}
	}
	r->npending--;
	q->magic = 0;
	free(q);
}

/* ---- the kick: results out, retired channels reaped ---- */

static void
dns_kick_cb(uv_timer_t *t)
{
	struct dns_resolver *r = t->data;
	struct dns_query *q;
	struct dns_chan *c, *next;

	if (r->magic != DNS_MAGIC_RESOLVER)
		fatalx("%s: bad resolver", __func__);
	while (!r->closing && (q = TAILQ_FIRST(&r->ready)) != NULL) {
		struct dns_result *res = q->res;
		dns_cb *cb = q->cb;
		void *arg = q->arg;

		TAILQ_REMOVE(&r->ready, q, entry);
		r->npending--;
		q->magic = 0;
		free(q);
		cb(arg, res);   /* may cancel, look up, or close the resolver */
	}
	if (r->closing)
		return;
	for (c = TAILQ_FIRST(&r->chans); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		if (c->retired && c->inflight == 0 && !c->destroyed)
			dns_chan_destroy(c);
	}
}

void
dns_kick(struct dns_resolver *r)
{
	if (!r->closing)
		uv_timer_start(&r->kick, dns_kick_cb, 0, 0);
}

/* ---- the resolver ---- */

/* Take hostname, listen addresses and DNS servers from conf into r's fields. */
static int
dns_take_conf(struct dns_resolver *r, const struct conf *conf, struct buf *err)
{
	struct ares_addr_port_node *servers = NULL;
	struct sockaddr_storage *self;
	size_t i, n = 0, nself;

	if (conf->router.ndns_servers > 0)
		servers = xcalloc(conf->router.ndns_servers, sizeof(*servers));
	for (i = 0; i < conf->router.ndns_servers; i++) {
		const struct conf_hostport *hp = &conf->router.dns_servers[i];
		struct ares_addr_port_node *s = &servers[n];

		if (inet_pton(AF_INET, hp->host, &s->addr.addr4) == 1)
			s->family = AF_INET;
		else if (inet_pton(AF_INET6, hp->host, &s->addr.addr6) == 1)
			s->family = AF_INET6;
		else {
			buf_printf(err, "router.dns_servers: \"%s\" is not a numeric address",
			    hp->host);
			free(servers);
			return RELAY_EINVAL;
		}
		s->udp_port = s->tcp_port = hp->port ? hp->port : 53;
		n++;
	}
	nself = conf->submit.nlisten + conf->submit.nlisten_tls;
	self = xcalloc(nself ? nself : 1, sizeof(*self));
	nself = 0;
	for (i = 0; i < conf->submit.nlisten + conf->submit.nlisten_tls; i++) {
		const struct conf_listen *l = i < conf->submit.nlisten ?
		    &conf->submit.listen[i] : &conf->submit.listen_tls[i - conf->submit.nlisten];
		const struct sockaddr_storage *ss = &l->addr;

		/* a wildcard listener says nothing about which address is ours */
		if (ss->ss_family == AF_INET &&
		    ((const struct sockaddr_in *)ss)->sin_addr.s_addr == htonl(INADDR_ANY))
			continue;
		if (ss->ss_family == AF_INET6 &&
		    IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)ss)->sin6_addr))
			continue;
		if (ss->ss_family != AF_INET && ss->ss_family != AF_INET6)
			continue;
		self[nself++] = *ss;
	}

	free(r->servers);
	r->servers = servers;
	r->nservers = n;
	free(r->self);
	r->self = self;
	r->nself = nself;
	r->dnssec = conf->router.dnssec;
	free(r->hostname);
	r->hostname = conf->hostname != NULL && conf->hostname[0] != '\0' ?
	    dns_norm(conf->hostname) : NULL;
	return 0;
}

/*
 * Servers counted when none are configured and c-ares cannot say how many
 * it reads from the system (it could not start: then no channel starts
 * either): glibc's MAXNS.
 */
#define DNS_SYSTEM_SERVERS_GUESS 3

/* The servers a channel made now for conf would have: router.dns_servers, else
 * as many as c-ares reads from /etc/resolv.conf (all its nameserver lines). */
static uint64_t
dns_servers_of(const struct conf *conf)
{
	size_t n;

	if (conf->router.ndns_servers > 0)
		return conf->router.ndns_servers;
	n = dns_ares_system_servers();
	return n > 0 ? n : DNS_SYSTEM_SERVERS_GUESS;
}

/* UDP + TCP per server, for conf's channel and the one it retires. */
uint64_t
dns_fd_need(const struct conf *conf, const struct conf *running, const struct dns_resolver *r)
{
	uint64_t next = dns_servers_of(conf), now;

	if (r != NULL && r->chan != NULL)
		now = r->chan->nservers;
	else
		now = running == conf ? next : dns_servers_of(running);   /* at start: one probe */
	return 2 * next + 2 * now;
}

struct dns_resolver *
dns_new(uv_loop_t *loop, const struct conf *conf, struct buf *err)
{
	struct dns_resolver *r;
	int rc;

	if ((rc = ares_library_init(ARES_LIB_INIT_ALL)) != ARES_SUCCESS) {
		buf_printf(err, "DNS resolver: %s", ares_strerror(rc));
		return NULL;
	}
	r = xcalloc(1, sizeof(*r));
	r->magic = DNS_MAGIC_RESOLVER;
	r->loop = loop;
	r->timeout_ms = DNS_DEFAULT_TIMEOUT;
	r->tries = DNS_DEFAULT_TRIES;
	TAILQ_INIT(&r->chans);
	TAILQ_INIT(&r->ready);
	TAILQ_INIT(&r->fetches);
	TAILQ_INIT(&r->lru);
	if (getrandom(&r->rnd_state, sizeof(r->rnd_state), GRND_NONBLOCK) !=
	    (ssize_t)sizeof(r->rnd_state))
		r->rnd_state = util_mono_ms() ^ ((uint64_t)getpid() << 32);
	if (dns_take_conf(r, conf, err) != 0 || dns_chan_replace(r, err) != 0) {
		free(r->servers);
		free(r->self);
		free(r->hostname);
		free(r);
		ares_library_cleanup();
		return NULL;
	}
	uv_timer_init(loop, &r->kick);
	r->kick.data = r;
	r->nhandles++;
	uv_prepare_init(loop, &r->prepare);
	r->prepare.data = r;
	r->nhandles++;
	return r;
}

/*
 * A new configuration: what was resolved under the old one (our hostname and
 * addresses decide loops) is forgotten, and fetches in flight finish for
 * their waiters only.
 */
static void
dns_forget(struct dns_resolver *r)
{
	struct dns_fetch *f;

	dns_cache_clear(r);
	TAILQ_FOREACH(f, &r->fetches, entry) {
		dns_fetch_unjoin(f);
		f->stale = true;
	}
}

int
dns_reload(struct dns_resolver *r, const struct conf *conf, struct buf *err)
{
	struct dns_resolver save;
	int rc;

	if (r->closing)
		fatalx("%s: resolver is closing", __func__);
	/* keep the old settings until the new channel exists */
	save.servers = r->servers;
	save.nservers = r->nservers;
	save.self = r->self;
	save.nself = r->nself;
	save.hostname = r->hostname;
	save.dnssec = r->dnssec;
	r->servers = NULL;
	r->self = NULL;
	r->hostname = NULL;
	if ((rc = dns_take_conf(r, conf, err)) == 0 && (rc = dns_chan_replace(r, err)) == 0) {
		free(save.servers);
		free(save.self);
		free(save.hostname);
		dns_forget(r);
		return 0;
	}
	free(r->servers);
	free(r->self);
	free(r->hostname);
	r->servers = save.servers;
	r->nservers = save.nservers;
	r->self = save.self;
	r->nself = save.nself;
	r->hostname = save.hostname;
	r->dnssec = save.dnssec;
	return rc;
}

void
dns_set_random(struct dns_resolver *r, dns_random_fn *fn, void *arg)
{
	r->rnd = fn;
	r->rnd_arg = arg;
}

int
dns_set_timeout(struct dns_resolver *r, unsigned timeout_ms, unsigned tries)
{
	struct buf err = BUF_INIT;
	unsigned old_ms = r->timeout_ms, old_tries = r->tries;
	int rc;

	if (timeout_ms == 0 || tries == 0)
		return RELAY_EINVAL;
	r->timeout_ms = timeout_ms;
	r->tries = tries;
	if ((rc = dns_chan_replace(r, &err)) != 0) {
		r->timeout_ms = old_ms;
		r->tries = old_tries;
		log_event(LOG_WARNING, "dns_error", "reason", buf_cstr(&err), NULL);
	}
	buf_free(&err);
	return rc;
}

size_t
dns_pending(const struct dns_resolver *r)
{
	return r->npending;
}

void
dns_set_clock(struct dns_resolver *r, uint64_t (*now)(void *arg), void *arg)
{
	r->now = now;
	r->now_arg = arg;
}

void
dns_get_stats(const struct dns_resolver *r, struct dns_stats *out)
{
	*out = r->stats;
	out->cached = htab_count(&r->cache);
}

void
dns_resolver_maybe_free(struct dns_resolver *r)
{
	void (*done)(void *);
	void *arg;

	if (!r->closing || r->nhandles > 0)
		return;
	if (!TAILQ_EMPTY(&r->chans) || !TAILQ_EMPTY(&r->fetches))
		fatalx("%s: channels or fetches left", __func__);
	done = r->done;
	arg = r->done_arg;
	htab_free(&r->inflight);
	htab_free(&r->cache);
	free(r->servers);
	free(r->self);
	free(r->hostname);
	r->magic = 0;
	free(r);
	ares_library_cleanup();
	if (done != NULL)
		done(arg);
}

static void
dns_handle_closed(uv_handle_t *h)
{
	struct dns_resolver *r = h->data;

	r->nhandles--;
	dns_resolver_maybe_free(r);
}

void
dns_close(struct dns_resolver *r, void (*done)(void *), void *arg)
{
	struct dns_query *q;
	struct dns_fetch *f;
	struct dns_chan *c, *next;

	if (r->closing)
		fatalx("%s: closed twice", __func__);
	r->closing = true;
	r->done = done;
	r->done_arg = arg;
	while ((q = TAILQ_FIRST(&r->ready)) != NULL)
		dns_cancel(q);
	/* fetches stay until their requests call back (ARES_EDESTRUCTION below) */
	TAILQ_FOREACH(f, &r->fetches, entry)
		while ((q = TAILQ_FIRST(&f->waiters)) != NULL)
			dns_cancel(q);
	dns_cache_clear(r);
	uv_timer_stop(&r->kick);
	uv_close((uv_handle_t *)&r->kick, dns_handle_closed);
	uv_prepare_stop(&r->prepare);
	uv_close((uv_handle_t *)&r->prepare, dns_handle_closed);
	/* outstanding requests call back with ARES_EDESTRUCTION and free their queries */
	for (c = TAILQ_FIRST(&r->chans); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		dns_chan_destroy(c);
	}
	r->chan = NULL;
}
