/*
 * router_mx.c - the router's DNS resolver: MX lookup, exchanger ordering,
 * address resolution, loop detection (RFC 5321 5.1, RFC 7505), and the
 * resolution of a route's hosts.  c-ares runs on the one libuv loop: its
 * sockets are watched by uv_poll_t handles (ARES_OPT_SOCK_STATE_CB), its
 * timeouts by one uv_timer_t per channel, and ares_process_fd() does the work.
 *
 * Lookups are shared: a caller's lookup (struct mx_query) waits on a fetch
 * (struct mx_fetch, the DNS work for one key: domain and port, or a route's
 * host list).  Concurrent lookups of one key join the fetch in flight; its
 * result is built once and every waiter gets its own copy, equal
 * preferences shuffled per copy.  Finished results are kept in a small cache
 * (MX_CACHE_MAX entries, least recently used out first) for min(TTL,
 * MX_CACHE_TTL_MAX) seconds — the TTL being the least of every record and
 * negative answer (SOA, RFC 2308) the result rests on — or MX_CACHE_TTL_TEMP
 * seconds after a temporary failure.  mx_cache_clear() and mx_reload()
 * forget it.  c-ares' timer is rearmed once per loop iteration (a uv_prepare_t
 * before the loop blocks), never per request: ares_timeout() walks every
 * request in flight.
 *
 * Owns: the c-ares channels (the current one, and older ones still draining
 * their queries after a reload), their poll and timer handles, every fetch
 * until its last request has called back, every query until its callback has
 * returned or it is cancelled, and the cache.  Answers are parsed here
 * (answer section walk, CNAME chains, SOA of negative answers) so that every
 * rcode maps to exactly one result.
 *
 * Must never: block the loop (no getaddrinfo, no /etc/hosts), call a user
 * callback from inside c-ares or from inside mx_lookup*() (results are handed
 * out from a 0 ms timer), call ares_destroy() from inside a c-ares callback,
 * or hand one result to two callers.
 */
#include "router/router_mx.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <ares.h>

#include "common/log.h"
#include "common/util.h"

#define MX_MAGIC_RESOLVER   0x4d585253u     /* "MXRS" */
#define MX_MAGIC_CHAN       0x4d584348u     /* "MXCH" */
#define MX_MAGIC_QUERY      0x4d585159u     /* "MXQY" */
#define MX_MAGIC_FETCH      0x4d584654u     /* "MXFT" */

#define MX_CNAME_MAX        8       /* CNAME links followed, across queries */
#define MX_MAX_RECORDS      64      /* MX records read from one answer */
#define MX_MAX_PER_FAMILY   (MX_MAX_ADDRS / 2)
#define MX_NAME_MAX         255

#define MX_DEFAULT_TIMEOUT  2000
#define MX_DEFAULT_TRIES    2

#define MX_CACHE_MAX        1024    /* results cached, least recently used out first */
#define MX_CACHE_TTL_MAX    60      /* s: a result is never kept longer */
#define MX_CACHE_TTL_TEMP   5       /* s: a temporary failure is kept this long */
#define MX_TTL_NONE         UINT32_MAX

#define MX_CONTAINER(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

/* What one c-ares request asks. */
enum mx_kind {
	MX_REQ_MX,
	MX_REQ_AAAA,
	MX_REQ_A,
};

struct mx_poll {
	uv_poll_t h;
	struct mx_chan *c;
	ares_socket_t fd;
	LIST_ENTRY(mx_poll) entry;
};

struct mx_chan {
	uint32_t magic;
	struct mx_resolver *r;
	ares_channel ch;
	uv_timer_t timer;
	LIST_HEAD(, mx_poll) polls;
	size_t inflight;        /* c-ares requests not called back yet */
	size_t nhandles;        /* open uv handles (timer + polls) */
	bool retired;           /* a newer channel took over */
	bool destroyed;         /* ares_destroy() done, handles closing */
	bool rearm;             /* requests changed: rearm the timer before the loop blocks */
	TAILQ_ENTRY(mx_chan) entry;
};

/* One exchanger (or route host) being resolved. */
struct mx_xch {
	char *host;
	unsigned pref;
	uint16_t port;
	struct mx_addr a6[MX_MAX_PER_FAMILY];
	size_t n6;
	struct mx_addr a4[MX_MAX_PER_FAMILY];
	size_t n4;
	bool temp;              /* a lookup for it failed temporarily */
	bool self;              /* one of its addresses is ours */
};

/* A node of a string-keyed hash table (fetches in flight, cached results). */
struct mx_hnode {
	char *key;
	size_t hash;
	struct mx_hnode *next;
};

struct mx_htab {
	struct mx_hnode **b;
	size_t nb, n;
};

TAILQ_HEAD(mx_query_list, mx_query);

/*
 * The DNS work for one key, shared by the lookups waiting on it.  Joinable
 * (in r->inflight) until it is done, abandoned or a reload makes it stale.
 */
struct mx_fetch {
	uint32_t magic;
	struct mx_resolver *r;
	struct mx_chan *c;      /* the channel its requests run on */
	struct mx_hnode node;   /* key NULL: private (literal, bad name) */
	bool joinable;          /* in r->inflight */
	bool stale;             /* started under an older configuration: not cached */
	bool abandoned;         /* every waiter cancelled: answers are ignored */
	char *domain;           /* lower case, no trailing dot; or a description for routes */
	uint16_t port;
	bool routes;            /* mx_lookup_hosts(): no loop check, temp when unresolved */
	bool implicit;
	size_t inflight;        /* c-ares requests (plus construction hold) outstanding */
	uint32_t ttl;           /* s: least TTL of what the result rests on (MX_TTL_NONE) */
	bool temp;              /* some lookup failed temporarily */

	struct mx_xch *x;
	size_t nx;
	unsigned self_pref;     /* exchangers of this preference or worse are us */
	bool self_found;

	int err;                /* a failure decided before address resolution */
	char status[16];
	char reason[256];
	struct mx_query_list waiters;
	TAILQ_ENTRY(mx_fetch) entry;    /* r->fetches */
};

/* One caller's lookup: waits on a fetch, then holds its own result. */
struct mx_query {
	uint32_t magic;
	struct mx_resolver *r;
	struct mx_fetch *f;     /* while waiting */
	mx_cb *cb;
	void *arg;
	struct mx_result *res;  /* when ready */
	bool ready;             /* on r->ready, waiting for the kick */
	TAILQ_ENTRY(mx_query) entry;    /* f->waiters or r->ready */
};

/* One c-ares request in flight. */
struct mx_req {
	struct mx_fetch *f;
	struct mx_chan *c;
	enum mx_kind kind;
	size_t xi;              /* exchanger index for A/AAAA */
	unsigned depth;         /* CNAME links followed so far */
	char *name;             /* the name asked */
};

/* A cached result, as resolved (equal preferences not shuffled). */
struct mx_cent {
	struct mx_hnode node;
	struct mx_result *res;
	bool shuffle;           /* shuffle equal preferences per copy (not for routes) */
	uint64_t expires;       /* the resolver's clock, ms */
	TAILQ_ENTRY(mx_cent) lru;       /* least recently used first */
};

struct mx_resolver {
	uint32_t magic;
	uv_loop_t *loop;
	struct mx_chan *chan;                   /* the current channel */
	TAILQ_HEAD(, mx_chan) chans;            /* all channels, current included */
	uv_timer_t kick;                        /* 0 ms: hand out results, reap channels */
	uv_prepare_t prepare;                   /* before the loop blocks: rearm channel timers */
	struct mx_query_list ready;
	size_t npending;                        /* queries whose callback is still due */
	TAILQ_HEAD(, mx_fetch) fetches;         /* every fetch until its last request is back */
	struct mx_htab inflight;                /* joinable fetches by key */
	struct mx_htab cache;                   /* struct mx_cent by key */
	TAILQ_HEAD(, mx_cent) lru;
	struct mx_stats stats;
	uint64_t (*now)(void *);                /* monotonic ms (tests inject it) */
	void *now_arg;

	char *hostname;                         /* lower case, no trailing dot */
	struct sockaddr_storage *self;          /* listen addresses (ports ignored) */
	size_t nself;
	struct ares_addr_port_node *servers;    /* array; NULL = system resolver */
	size_t nservers;
	unsigned timeout_ms;
	unsigned tries;

	mx_random_fn *rnd;
	void *rnd_arg;
	uint64_t rnd_state;

	size_t nhandles;                        /* every open uv handle of ours */
	bool closing;
	void (*done)(void *);
	void *done_arg;
};

static void mx_ares_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen);
static void mx_kick(struct mx_resolver *r);
static void mx_resolver_maybe_free(struct mx_resolver *r);

/* ---- small helpers ---- */

/* Lower-case copy of name without a trailing dot (NULL when too long). */
static char *
mx_norm(const char *name)
{
	size_t n = strlen(name), i;
	char *s;

	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n > MX_NAME_MAX)
		return NULL;
	s = xstrndup(name, n);
	for (i = 0; i < n; i++)
		s[i] = (char)tolower((unsigned char)s[i]);
	return s;
}

static bool
mx_name_eq(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (la > 0 && a[la - 1] == '.')
		la--;
	if (lb > 0 && b[lb - 1] == '.')
		lb--;
	return la == lb && util_strncasecmp(a, b, la) == 0;
}

static void
mx_fail(struct mx_fetch *f, int err, const char *status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Record the fetch's failure (the first one wins). */
static void
mx_fail(struct mx_fetch *f, int err, const char *status, const char *fmt, ...)
{
	va_list ap;

	if (err == RELAY_ETEMP)
		f->temp = true;
	if (f->err != 0)
		return;
	f->err = err;
	snprintf(f->status, sizeof(f->status), "%s", status);
	va_start(ap, fmt);
	vsnprintf(f->reason, sizeof(f->reason), fmt, ap);
	va_end(ap);
}

/* The result rests on something valid for ttl seconds. */
static void
mx_fetch_ttl(struct mx_fetch *f, uint32_t ttl)
{
	if (ttl < f->ttl)
		f->ttl = ttl;
}

static void
mx_set_port(struct mx_addr *a, uint16_t port)
{
	if (a->ss.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&a->ss)->sin6_port = htons(port);
	else
		((struct sockaddr_in *)&a->ss)->sin_port = htons(port);
}

/* Parse a numeric address into a; 0 or -1. */
static int
mx_parse_numeric(const char *s, uint16_t port, struct mx_addr *a)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;

	memset(a, 0, sizeof(*a));
	if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		a->len = sizeof(*sin);
	} else if (inet_pton(AF_INET6, s, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		a->len = sizeof(*sin6);
	} else
		return -1;
	mx_set_port(a, port);
	return 0;
}

static void
mx_xch_add(struct mx_xch *x, int family, const unsigned char *p)
{
	struct mx_addr *a;
	size_t i;

	if (family == AF_INET6) {
		for (i = 0; i < x->n6; i++)
			if (memcmp(&((struct sockaddr_in6 *)&x->a6[i].ss)->sin6_addr, p, 16) == 0)
				return;
		if (x->n6 == MX_MAX_PER_FAMILY)
			return;
		a = &x->a6[x->n6++];
		memset(a, 0, sizeof(*a));
		((struct sockaddr_in6 *)&a->ss)->sin6_family = AF_INET6;
		memcpy(&((struct sockaddr_in6 *)&a->ss)->sin6_addr, p, 16);
		a->len = sizeof(struct sockaddr_in6);
	} else {
		for (i = 0; i < x->n4; i++)
			if (memcmp(&((struct sockaddr_in *)&x->a4[i].ss)->sin_addr, p, 4) == 0)
				return;
		if (x->n4 == MX_MAX_PER_FAMILY)
			return;
		a = &x->a4[x->n4++];
		memset(a, 0, sizeof(*a));
		((struct sockaddr_in *)&a->ss)->sin_family = AF_INET;
		memcpy(&((struct sockaddr_in *)&a->ss)->sin_addr, p, 4);
		a->len = sizeof(struct sockaddr_in);
	}
	mx_set_port(a, x->port);
}

static void
mx_xch_add_addr(struct mx_xch *x, const struct mx_addr *a)
{
	if (a->ss.ss_family == AF_INET6)
		mx_xch_add(x, AF_INET6,
		    (const unsigned char *)&((const struct sockaddr_in6 *)&a->ss)->sin6_addr);
	else
		mx_xch_add(x, AF_INET,
		    (const unsigned char *)&((const struct sockaddr_in *)&a->ss)->sin_addr);
}

/* Is the address one of our listen addresses (ports ignored)? */
static bool
mx_is_self_addr(const struct mx_resolver *r, const struct mx_addr *a)
{
	size_t i;

	for (i = 0; i < r->nself; i++) {
		const struct sockaddr_storage *s = &r->self[i];

		if (s->ss_family != a->ss.ss_family)
			continue;
		if (s->ss_family == AF_INET && memcmp(&((const struct sockaddr_in *)s)->sin_addr,
		    &((const struct sockaddr_in *)&a->ss)->sin_addr, 4) == 0)
			return true;
		if (s->ss_family == AF_INET6 && memcmp(&((const struct sockaddr_in6 *)s)->sin6_addr,
		    &((const struct sockaddr_in6 *)&a->ss)->sin6_addr, 16) == 0)
			return true;
	}
	return false;
}

/* ---- randomness ---- */

static uint32_t
mx_default_random(void *arg, uint32_t n)
{
	struct mx_resolver *r = arg;
	uint64_t z;

	/* splitmix64: good enough to spread load, not a secret */
	z = (r->rnd_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	z ^= z >> 31;
	return n ? (uint32_t)(z % n) : 0;
}

static uint32_t
mx_random(struct mx_resolver *r, uint32_t n)
{
	uint32_t v;

	if (r->rnd == NULL)
		return mx_default_random(r, n);
	v = r->rnd(r->rnd_arg, n);
	if (v >= n)
		fatalx("%s: random function returned %u, want < %u", __func__, v, n);
	return v;
}

/* ---- answer parsing ---- */

struct mx_rr {
	char *owner;
	int type;
	unsigned pref;          /* MX */
	char *target;           /* MX exchange, CNAME target */
	unsigned char addr[16]; /* A, AAAA */
};

struct mx_answer {
	struct mx_rr *rr;
	size_t n;
	uint32_t min_ttl;       /* least TTL in the answer section (MX_TTL_NONE: no record) */
	uint32_t neg_ttl;       /* negative answer: min(SOA TTL, SOA minimum); 0 without SOA */
};

static void
mx_answer_free(struct mx_answer *an)
{
	size_t i;

	for (i = 0; i < an->n; i++) {
		free(an->rr[i].owner);
		free(an->rr[i].target);
	}
	free(an->rr);
	an->rr = NULL;
	an->n = 0;
}

/* Expand a (compressed) name at p into a malloc'd normalized string; NULL on error. */
static char *
mx_expand(const unsigned char *p, const unsigned char *abuf, int alen, long *used)
{
	char *s, *n;

	if (ares_expand_name(p, abuf, alen, &s, used) != ARES_SUCCESS)
		return NULL;
	n = mx_norm(s);
	ares_free_string(s);
	return n;
}

/* A TTL field (RFC 2181 8: a value with the top bit set is 0). */
static uint32_t
mx_ttl_at(const unsigned char *p)
{
	uint32_t v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];

	return v > 0x7fffffffu ? 0 : v;
}

/*
 * The TTL of a negative answer (RFC 2308 5): min(SOA TTL, SOA minimum) of
 * the authority section's SOA at p; 0 (do not keep) without one.
 */
static uint32_t
mx_parse_neg_ttl(const unsigned char *abuf, int alen, const unsigned char *p, unsigned nscount)
{
	const unsigned char *end = abuf + alen, *rd;
	unsigned i, type, class, rdlen;
	uint32_t ttl, min;
	long used;
	char *name;

	for (i = 0; i < nscount; i++) {
		if ((name = mx_expand(p, abuf, alen, &used)) == NULL)
			return 0;
		free(name);
		p += used;
		if (end - p < NS_RRFIXEDSZ)
			return 0;
		type = (unsigned)p[0] << 8 | p[1];
		class = (unsigned)p[2] << 8 | p[3];
		ttl = mx_ttl_at(p + 4);
		rdlen = (unsigned)p[8] << 8 | p[9];
		rd = p + NS_RRFIXEDSZ;
		if ((size_t)(end - rd) < rdlen)
			return 0;
		p = rd + rdlen;
		if (type != ns_t_soa || class != ns_c_in || rdlen < 22)
			continue;
		min = mx_ttl_at(rd + rdlen - 4);        /* the last of SOA's five numbers */
		return ttl < min ? ttl : min;
	}
	return 0;
}

/*
 * Collect the answer section's CNAME, MX, A and AAAA records of class IN,
 * the least TTL among its records, and the TTL of a negative answer.
 * 0, or -1 for a malformed message.
 */
static int
mx_parse_answer(const unsigned char *abuf, int alen, struct mx_answer *an)
{
	const unsigned char *p, *end = abuf + alen;
	unsigned qd, ancount, nscount, i;
	uint32_t ttl;
	long used;
	char *name;

	memset(an, 0, sizeof(*an));
	an->min_ttl = MX_TTL_NONE;
	if (abuf == NULL || alen < NS_HFIXEDSZ)
		return -1;
	qd = (unsigned)abuf[4] << 8 | abuf[5];
	ancount = (unsigned)abuf[6] << 8 | abuf[7];
	nscount = (unsigned)abuf[8] << 8 | abuf[9];
	p = abuf + NS_HFIXEDSZ;
	for (i = 0; i < qd; i++) {
		if ((name = mx_expand(p, abuf, alen, &used)) == NULL)
			return -1;
		free(name);
		p += used;
		if (end - p < NS_QFIXEDSZ)
			return -1;
		p += NS_QFIXEDSZ;
	}
	if (ancount > 0)
		an->rr = xcalloc(ancount, sizeof(*an->rr));
	for (i = 0; i < ancount; i++) {
		struct mx_rr *rr = &an->rr[an->n];
		unsigned type, class, rdlen;
		const unsigned char *rd;

		if ((name = mx_expand(p, abuf, alen, &used)) == NULL)
			goto bad;
		p += used;
		if (end - p < NS_RRFIXEDSZ) {
			free(name);
			goto bad;
		}
		type = (unsigned)p[0] << 8 | p[1];
		class = (unsigned)p[2] << 8 | p[3];
		ttl = mx_ttl_at(p + 4);
		rdlen = (unsigned)p[8] << 8 | p[9];
		rd = p + NS_RRFIXEDSZ;
		if ((size_t)(end - rd) < rdlen) {
			free(name);
			goto bad;
		}
		p = rd + rdlen;
		if (ttl < an->min_ttl)
			an->min_ttl = ttl;
		if (class != ns_c_in) {
			free(name);
			continue;
		}
		rr->owner = name;
		rr->type = (int)type;
		switch (type) {
		case ns_t_a:
			if (rdlen != 4)
				goto bad_rr;
			memcpy(rr->addr, rd, 4);
			break;
		case ns_t_aaaa:
			if (rdlen != 16)
				goto bad_rr;
			memcpy(rr->addr, rd, 16);
			break;
		case ns_t_mx:
			if (rdlen < 3)
				goto bad_rr;
			rr->pref = (unsigned)rd[0] << 8 | rd[1];
			if ((rr->target = mx_expand(rd + 2, abuf, alen, &used)) == NULL)
				goto bad_rr;
			break;
		case ns_t_cname:
			if ((rr->target = mx_expand(rd, abuf, alen, &used)) == NULL)
				goto bad_rr;
			break;
		default:
			free(name);
			rr->owner = NULL;
			continue;
		}
		an->n++;
	}
	an->neg_ttl = mx_parse_neg_ttl(abuf, alen, p, nscount);
	return 0;
bad_rr:
	free(an->rr[an->n].owner);
	an->rr[an->n].owner = NULL;
bad:
	mx_answer_free(an);
	return -1;
}

/*
 * Follow the CNAME chain from name through the answer.  Returns the name
 * the chain ends at (a pointer into an, or name itself); *links counts the
 * links followed.
 */
static const char *
mx_chain_end(const struct mx_answer *an, const char *name, unsigned *links)
{
	size_t i;
	bool moved;

	*links = 0;
	do {
		moved = false;
		for (i = 0; i < an->n; i++) {
			if (an->rr[i].type == ns_t_cname && strcmp(an->rr[i].owner, name) == 0) {
				name = an->rr[i].target;
				moved = true;
				(*links)++;
				break;
			}
		}
	} while (moved && *links <= MX_CNAME_MAX);
	return name;
}

/* ---- channels ---- */

static void mx_chan_touch(struct mx_chan *c);

static void
mx_chan_timeout(uv_timer_t *t)
{
	struct mx_chan *c = t->data;

	if (c->magic != MX_MAGIC_CHAN)
		fatalx("%s: bad channel", __func__);
	ares_process_fd(c->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	mx_chan_touch(c);
}

/*
 * Run the channel's timer for c-ares' next timeout, if it has queries.
 * ares_timeout() walks every request in flight: called once per loop
 * iteration at most (mx_prepare_cb), never per request.
 */
static void
mx_chan_rearm(struct mx_chan *c)
{
	struct timeval tv, *tvp;
	uint64_t ms;

	if (c->destroyed)
		return;
	if ((tvp = ares_timeout(c->ch, NULL, &tv)) == NULL) {
		uv_timer_stop(&c->timer);
		return;
	}
	ms = (uint64_t)tvp->tv_sec * 1000 + ((uint64_t)tvp->tv_usec + 999) / 1000;
	uv_timer_start(&c->timer, mx_chan_timeout, ms, 0);
}

/* Before the loop blocks: rearm the timers of the channels whose requests changed. */
static void
mx_prepare_cb(uv_prepare_t *h)
{
	struct mx_resolver *r = h->data;
	struct mx_chan *c;

	if (r->magic != MX_MAGIC_RESOLVER)
		fatalx("%s: bad resolver", __func__);
	uv_prepare_stop(h);
	TAILQ_FOREACH(c, &r->chans, entry) {
		if (c->rearm) {
			c->rearm = false;
			mx_chan_rearm(c);
		}
	}
}

/* The channel's requests changed (sent, answered, timed out): rearm it soon. */
static void
mx_chan_touch(struct mx_chan *c)
{
	c->rearm = true;
	if (!c->r->closing)
		uv_prepare_start(&c->r->prepare, mx_prepare_cb);
}

static void
mx_chan_free_if_done(struct mx_chan *c)
{
	struct mx_resolver *r = c->r;

	if (!c->destroyed || c->nhandles > 0)
		return;
	TAILQ_REMOVE(&r->chans, c, entry);
	c->magic = 0;
	free(c);
	mx_resolver_maybe_free(r);
}

static void
mx_poll_closed(uv_handle_t *h)
{
	struct mx_poll *p = h->data;
	struct mx_chan *c = p->c;

	free(p);
	c->nhandles--;
	c->r->nhandles--;
	mx_chan_free_if_done(c);
}

static void
mx_chan_timer_closed(uv_handle_t *h)
{
	struct mx_chan *c = h->data;

	c->nhandles--;
	c->r->nhandles--;
	mx_chan_free_if_done(c);
}

static void
mx_poll_cb(uv_poll_t *h, int status, int events)
{
	struct mx_poll *p = h->data;
	struct mx_chan *c = p->c;
	ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;

	if (c->magic != MX_MAGIC_CHAN)
		fatalx("%s: bad channel", __func__);
	if (status < 0) {
		/* let c-ares find the error on the socket */
		rfd = wfd = p->fd;
	} else {
		if (events & UV_READABLE)
			rfd = p->fd;
		if (events & UV_WRITABLE)
			wfd = p->fd;
	}
	/* p may be closed by the socket state callback from here on */
	ares_process_fd(c->ch, rfd, wfd);
	mx_chan_touch(c);
}

/* c-ares tells which sockets to watch, and for what. */
static void
mx_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct mx_chan *c = data;
	struct mx_resolver *r = c->r;
	struct mx_poll *p;
	int rc;

	LIST_FOREACH(p, &c->polls, entry)
		if (p->fd == fd)
			break;
	if (readable || writable) {
		if (p == NULL) {
			p = xcalloc(1, sizeof(*p));
			p->c = c;
			p->fd = fd;
			if ((rc = uv_poll_init_socket(r->loop, &p->h, fd)) != 0) {
				log_event(LOG_WARNING, "dns_error", "reason", uv_strerror(rc), NULL);
				free(p);
				return;
			}
			p->h.data = p;
			LIST_INSERT_HEAD(&c->polls, p, entry);
			c->nhandles++;
			r->nhandles++;
		}
		uv_poll_start(&p->h, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0),
		    mx_poll_cb);
	} else if (p != NULL) {
		LIST_REMOVE(p, entry);
		uv_poll_stop(&p->h);
		uv_close((uv_handle_t *)&p->h, mx_poll_closed);
	}
}

static struct mx_chan *
mx_chan_new(struct mx_resolver *r, struct buf *err)
{
	struct ares_options o;
	struct mx_chan *c;
	size_t i;
	int rc, mask;

	c = xcalloc(1, sizeof(*c));
	c->magic = MX_MAGIC_CHAN;
	c->r = r;
	LIST_INIT(&c->polls);

	memset(&o, 0, sizeof(o));
	mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB;
	o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
	o.timeout = (int)r->timeout_ms;
	o.tries = (int)r->tries;
	o.sock_state_cb = mx_sock_state;
	o.sock_state_cb_data = c;
	if ((rc = ares_init_options(&c->ch, &o, mask)) != ARES_SUCCESS) {
		buf_printf(err, "DNS resolver: %s", ares_strerror(rc));
		free(c);
		return NULL;
	}
	if (r->nservers > 0) {
		for (i = 0; i < r->nservers; i++)
			r->servers[i].next = i + 1 < r->nservers ? &r->servers[i + 1] : NULL;
		if ((rc = ares_set_servers_ports(c->ch, r->servers)) != ARES_SUCCESS) {
			buf_printf(err, "DNS resolver: setting servers: %s", ares_strerror(rc));
			ares_destroy(c->ch);
			free(c);
			return NULL;
		}
	}
	uv_timer_init(r->loop, &c->timer);
	c->timer.data = c;
	c->nhandles = 1;
	r->nhandles++;
	TAILQ_INSERT_TAIL(&r->chans, c, entry);
	return c;
}

/* Destroy a channel: outstanding requests call back with ARES_EDESTRUCTION. */
static void
mx_chan_destroy(struct mx_chan *c)
{
	if (c->destroyed)
		return;
	c->destroyed = true;
	uv_timer_stop(&c->timer);
	ares_destroy(c->ch);    /* closes its sockets through mx_sock_state() */
	c->ch = NULL;
	uv_close((uv_handle_t *)&c->timer, mx_chan_timer_closed);
}

/* A new channel with the resolver's current settings becomes the current one. */
static int
mx_chan_replace(struct mx_resolver *r, struct buf *err)
{
	struct mx_chan *c;

	if ((c = mx_chan_new(r, err)) == NULL)
		return RELAY_EINVAL;
	if (r->chan != NULL) {
		r->chan->retired = true;
		if (r->chan->inflight == 0)
			mx_kick(r);
	}
	r->chan = c;
	return 0;
}

/* ---- tables: fetches in flight and cached results, by key ---- */

static size_t
mx_hash(const char *k)
{
	size_t h = 2166136261u;

	for (; *k != '\0'; k++)
		h = (h ^ (unsigned char)*k) * 16777619u;
	return h;
}

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

/* ---- results ---- */

void
mx_result_free(struct mx_result *res)
{
	size_t i;

	if (res == NULL)
		return;
	for (i = 0; i < res->ntargets; i++) {
		free(res->targets[i].host);
		free(res->targets[i].addrs);
	}
	free(res->targets);
	free(res);
}

/* A deep copy: every caller owns its own result. */
static struct mx_result *
mx_result_copy(const struct mx_result *src)
{
	struct mx_result *res = xmalloc(sizeof(*res));
	size_t i;

	*res = *src;
	res->targets = NULL;
	if (src->ntargets == 0)
		return res;
	res->targets = xcalloc(src->ntargets, sizeof(*res->targets));
	for (i = 0; i < src->ntargets; i++) {
		const struct mx_target *s = &src->targets[i];
		struct mx_target *t = &res->targets[i];

		*t = *s;
		t->host = xstrdup(s->host);
		t->addrs = xcalloc(s->naddrs, sizeof(*t->addrs));
		memcpy(t->addrs, s->addrs, s->naddrs * sizeof(*t->addrs));
	}
	return res;
}

/* Shuffle each run of equal preferences (the targets are sorted by preference). */
static void
mx_shuffle(struct mx_resolver *r, struct mx_result *res)
{
	struct mx_target *t = res->targets, tmp;
	size_t n = res->ntargets, i, j, k, pick;

	for (i = 0; i < n; i = j) {
		for (j = i + 1; j < n && t[j].pref == t[i].pref; j++)
			;
		for (k = j - 1; k > i; k--) {
			pick = i + mx_random(r, (uint32_t)(k - i + 1));
			tmp = t[k];
			t[k] = t[pick];
			t[pick] = tmp;
		}
	}
}

static void
mx_result_fail(struct mx_result *res, int err, const char *status, const char *reason)
{
	res->err = err;
	snprintf(res->status, sizeof(res->status), "%s", status);
	snprintf(res->reason, sizeof(res->reason), "%s", reason);
}

static struct mx_result *
mx_build_result(struct mx_fetch *f)
{
	struct mx_resolver *r = f->r;
	struct mx_result *res = xcalloc(1, sizeof(*res));
	unsigned cut = 0;
	bool cutting = f->self_found, temp = false;
	size_t i, j, kept = 0;
	char msg[256];

	res->implicit = f->implicit;
	if (f->err != 0) {
		mx_result_fail(res, f->err, f->status, f->reason);
		return res;
	}
	if (cutting)
		cut = f->self_pref;

	/* an exchanger with one of our addresses is us, too */
	if (!f->routes) {
		for (i = 0; i < f->nx; i++) {
			struct mx_xch *x = &f->x[i];

			for (j = 0; j < x->n6 && !x->self; j++)
				x->self = mx_is_self_addr(r, &x->a6[j]);
			for (j = 0; j < x->n4 && !x->self; j++)
				x->self = mx_is_self_addr(r, &x->a4[j]);
			if (x->self && (!cutting || x->pref < cut)) {
				cutting = true;
				cut = x->pref;
			}
		}
	}
	for (i = 0; i < f->nx; i++)
		if (!cutting || f->x[i].pref < cut)
			kept++;
	if (kept == 0) {
		snprintf(msg, sizeof(msg), "mail for %s loops back to myself", f->domain);
		mx_result_fail(res, RELAY_EINVAL, "5.4.6", msg);
		return res;
	}

	res->targets = xcalloc(f->nx, sizeof(*res->targets));
	for (i = 0; i < f->nx; i++) {
		struct mx_xch *x = &f->x[i];
		struct mx_target *t;

		if (cutting && x->pref >= cut)
			continue;
		if (x->n6 + x->n4 == 0) {
			temp = temp || x->temp;
			continue;
		}
		t = &res->targets[res->ntargets++];
		t->host = xstrdup(x->host);
		t->pref = x->pref;
		t->addrs = xcalloc(x->n6 + x->n4, sizeof(*t->addrs));
		for (j = 0; j < x->n6; j++)
			t->addrs[t->naddrs++] = x->a6[j];
		for (j = 0; j < x->n4; j++)
			t->addrs[t->naddrs++] = x->a4[j];
	}
	if (res->ntargets > 0)
		return res;
	free(res->targets);
	res->targets = NULL;
	if (f->routes) {
		snprintf(msg, sizeof(msg), "no host of the route (%s) could be resolved%s", f->domain,
		    temp ? " (temporary DNS failure)" : "");
		mx_result_fail(res, RELAY_ETEMP, "4.4.3", msg);
	} else if (temp) {
		snprintf(msg, sizeof(msg), "no exchanger for %s could be resolved "
		    "(temporary DNS failure)", f->domain);
		mx_result_fail(res, RELAY_ETEMP, "4.4.3", msg);
	} else {
		snprintf(msg, sizeof(msg), "no usable exchanger for %s", f->domain);
		mx_result_fail(res, RELAY_EINVAL, "5.1.2", msg);
	}
	return res;
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
	size_t h = mx_hash(key);

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

/* ---- queries and fetches ---- */

static struct mx_query *
mx_query_new(struct mx_resolver *r, mx_cb *cb, void *arg)
{
	struct mx_query *q;

	if (r->closing)
		fatalx("%s: lookup on a closing resolver", __func__);
	q = xcalloc(1, sizeof(*q));
	q->magic = MX_MAGIC_QUERY;
	q->r = r;
	q->cb = cb;
	q->arg = arg;
	r->npending++;
	r->stats.lookups++;
	return q;
}

/* q has its own result: the kick hands it out. */
static void
mx_query_ready(struct mx_query *q, struct mx_result *res, bool shuffle)
{
	struct mx_resolver *r = q->r;

	if (shuffle)
		mx_shuffle(r, res);
	q->res = res;
	q->ready = true;
	TAILQ_INSERT_TAIL(&r->ready, q, entry);
	mx_kick(r);
}

/* A fetch with its construction hold (mx_fetch_release); key (taken) makes it joinable. */
static struct mx_fetch *
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
		f->node.hash = mx_hash(key);
		mx_htab_add(&r->inflight, &f->node);
		f->joinable = true;
		r->stats.fetches++;
	}
	return f;
}

static void
mx_fetch_join(struct mx_fetch *f, struct mx_query *q)
{
	q->f = f;
	TAILQ_INSERT_TAIL(&f->waiters, q, entry);
}

/* Later lookups of the key start afresh. */
static void
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
static void
mx_fetch_release(struct mx_fetch *f)
{
	if (f->inflight == 0)
		fatalx("%s: release without hold", __func__);
	if (--f->inflight == 0)
		mx_fetch_done(f);
}

static void
mx_send(struct mx_fetch *f, enum mx_kind kind, size_t xi, unsigned depth, const char *name)
{
	struct mx_req *req;
	int type;

	req = xcalloc(1, sizeof(*req));
	req->f = f;
	req->c = f->c;
	req->kind = kind;
	req->xi = xi;
	req->depth = depth;
	req->name = xstrdup(name);
	f->inflight++;
	f->c->inflight++;
	switch (kind) {
	case MX_REQ_MX:
		type = ns_t_mx;
		break;
	case MX_REQ_AAAA:
		type = ns_t_aaaa;
		break;
	default:
		type = ns_t_a;
		break;
	}
	/* may call back at once (bad name, no memory): the hold keeps f alive */
	ares_query(f->c->ch, req->name, ns_c_in, type, mx_ares_cb, req);
	mx_chan_touch(f->c);
}

/* How long a negative answer (NXDOMAIN, NODATA) may be kept: 0 when it says nothing. */
static uint32_t
mx_neg_ttl(const unsigned char *abuf, int alen)
{
	struct mx_answer an;
	uint32_t ttl;

	if (mx_parse_answer(abuf, alen, &an) == -1)
		return 0;
	ttl = an.neg_ttl < an.min_ttl ? an.neg_ttl : an.min_ttl;   /* CNAMEs on the way count */
	mx_answer_free(&an);
	return ttl;
}

/* Temporary DNS failures (as opposed to "this does not exist"). */
static bool
mx_status_temp(int status)
{
	switch (status) {
	case ARES_SUCCESS:
	case ARES_ENODATA:
	case ARES_ENOTFOUND:
	case ARES_EBADNAME:
		return false;
	default:
		return true;
	}
}

static const char *
mx_status_text(int status)
{
	switch (status) {
	case ARES_ESERVFAIL:
		return "SERVFAIL";
	case ARES_ETIMEOUT:
		return "timed out";
	case ARES_EREFUSED:
		return "REFUSED";
	case ARES_ECONNREFUSED:
		/* c-ares 1.18 ends a query whose every try met SERVFAIL or
		 * REFUSED (it fails over to the next server on those) with this
		 * status too, the same as for servers that cannot be reached */
		return "no DNS server answered (SERVFAIL, REFUSED or unreachable)";
	case ARES_ENOTFOUND:
		return "NXDOMAIN";
	default:
		return ares_strerror(status);
	}
}

static void
mx_xch_init(struct mx_xch *x, const char *host, unsigned pref, uint16_t port)
{
	memset(x, 0, sizeof(*x));
	x->host = xstrdup(host);
	x->pref = pref;
	x->port = port;
}

/* Start AAAA and A lookups for every exchanger. */
static void
mx_resolve_all(struct mx_fetch *f)
{
	size_t i;

	for (i = 0; i < f->nx; i++) {
		mx_send(f, MX_REQ_AAAA, i, 0, f->x[i].host);
		mx_send(f, MX_REQ_A, i, 0, f->x[i].host);
	}
}

/* No MX records: the domain itself is the exchanger (RFC 5321 5.1). */
static void
mx_implicit(struct mx_fetch *f)
{
	struct mx_resolver *r = f->r;

	f->implicit = true;
	f->x = xcalloc(1, sizeof(*f->x));
	mx_xch_init(&f->x[0], f->domain, 0, f->port);
	f->nx = 1;
	if (r->hostname != NULL && mx_name_eq(f->domain, r->hostname)) {
		mx_fail(f, RELAY_EINVAL, "5.4.6", "mail for %s loops back to myself", f->domain);
		return;
	}
	mx_resolve_all(f);
}

struct mx_pair {
	unsigned pref;
	const char *host;
};

/* The MX answer: order the exchangers, drop ourselves, resolve the rest. */
static void
mx_got_mx(struct mx_fetch *f, struct mx_req *req, const struct mx_answer *an)
{
	struct mx_resolver *r = f->r;
	struct mx_pair pairs[MX_MAX_RECORDS], tmp;
	const char *end;
	size_t n = 0, i, j, nmx = 0, nnull = 0;
	unsigned links;

	end = mx_chain_end(an, req->name, &links);
	for (i = 0; i < an->n; i++) {
		if (an->rr[i].type != ns_t_mx || strcmp(an->rr[i].owner, end) != 0)
			continue;
		nmx++;
		if (an->rr[i].target[0] == '\0') {
			nnull++;
			continue;
		}
		if (n < MX_MAX_RECORDS) {
			pairs[n].pref = an->rr[i].pref;
			pairs[n].host = an->rr[i].target;
			n++;
		}
	}
	if (nmx == 0) {
		/* a CNAME the server did not chase: ask for its target */
		if (links > 0 && req->depth + links <= MX_CNAME_MAX) {
			mx_send(f, MX_REQ_MX, 0, req->depth + links, end);
			return;
		}
		if (links > 0) {
			mx_fail(f, RELAY_ETEMP, "4.4.3", "DNS lookup of MX for %s: CNAME chain too long",
			    f->domain);
			return;
		}
		mx_implicit(f);
		return;
	}
	if (nmx == 1 && nnull == 1) {
		mx_fail(f, RELAY_EINVAL, "5.1.10",
		    "domain %s does not accept mail (null MX)", f->domain);
		return;
	}
	if (n == 0) {
		mx_fail(f, RELAY_EINVAL, "5.1.2", "no usable exchanger for %s", f->domain);
		return;
	}

	/* stable sort by preference; equal ones are shuffled per caller (mx_shuffle) */
	for (i = 1; i < n; i++) {
		tmp = pairs[i];
		for (j = i; j > 0 && pairs[j - 1].pref > tmp.pref; j--)
			pairs[j] = pairs[j - 1];
		pairs[j] = tmp;
	}

	/* RFC 5321 5.1: we are an exchanger: drop it and everything not better */
	for (i = 0; i < n; i++) {
		if (r->hostname != NULL && mx_name_eq(pairs[i].host, r->hostname)) {
			f->self_found = true;
			f->self_pref = pairs[i].pref;
			break;
		}
	}

	f->x = xcalloc(n, sizeof(*f->x));
	for (i = 0; i < n && f->nx < MX_MAX_TARGETS; i++) {
		if (f->self_found && pairs[i].pref >= f->self_pref)
			break;
		for (j = 0; j < f->nx; j++)
			if (strcmp(f->x[j].host, pairs[i].host) == 0)
				break;
		if (j < f->nx)
			continue;       /* listed twice: the better preference stays */
		mx_xch_init(&f->x[f->nx++], pairs[i].host, pairs[i].pref, f->port);
	}
	if (f->nx == 0) {
		mx_fail(f, RELAY_EINVAL, "5.4.6", "mail for %s loops back to myself", f->domain);
		return;
	}
	mx_resolve_all(f);
}

static void
mx_on_mx(struct mx_fetch *f, struct mx_req *req, int status, unsigned char *abuf, int alen)
{
	struct mx_answer an;

	switch (status) {
	case ARES_SUCCESS:
		if (mx_parse_answer(abuf, alen, &an) == -1) {
			mx_fail(f, RELAY_ETEMP, "4.4.3", "DNS lookup of MX for %s: malformed answer",
			    f->domain);
			return;
		}
		mx_fetch_ttl(f, an.min_ttl);
		mx_got_mx(f, req, &an);
		mx_answer_free(&an);
		return;
	case ARES_ENODATA:
		mx_fetch_ttl(f, mx_neg_ttl(abuf, alen));
		mx_implicit(f);
		return;
	case ARES_ENOTFOUND:
		mx_fetch_ttl(f, mx_neg_ttl(abuf, alen));
		mx_fail(f, RELAY_EINVAL, "5.1.2", "domain %s does not exist (NXDOMAIN)", f->domain);
		return;
	case ARES_EBADNAME:
		mx_fail(f, RELAY_EINVAL, "5.1.2", "bad domain name %s", f->domain);
		return;
	default:
		mx_fail(f, RELAY_ETEMP, "4.4.3", "DNS lookup of MX for %s failed: %s", f->domain,
		    mx_status_text(status));
		return;
	}
}

static void
mx_on_addr(struct mx_fetch *f, struct mx_req *req, int status, unsigned char *abuf, int alen)
{
	struct mx_xch *x = &f->x[req->xi];
	struct mx_answer an;
	const char *end;
	unsigned links;
	int type = req->kind == MX_REQ_AAAA ? ns_t_aaaa : ns_t_a;
	size_t i, found = 0;

	if (status == ARES_ENODATA || status == ARES_ENOTFOUND) {
		mx_fetch_ttl(f, mx_neg_ttl(abuf, alen));
		return;         /* no address of this family */
	}
	if (status != ARES_SUCCESS && !mx_status_temp(status))
		return;
	if (status != ARES_SUCCESS || mx_parse_answer(abuf, alen, &an) == -1) {
		x->temp = true;
		f->temp = true;
		return;
	}
	mx_fetch_ttl(f, an.min_ttl);
	end = mx_chain_end(&an, req->name, &links);
	for (i = 0; i < an.n; i++) {
		if (an.rr[i].type != type || strcmp(an.rr[i].owner, end) != 0)
			continue;
		mx_xch_add(x, type == ns_t_aaaa ? AF_INET6 : AF_INET, an.rr[i].addr);
		found++;
	}
	if (found == 0 && links > 0) {
		/* a CNAME chain the server did not chase (or a long one): go on */
		if (req->depth + links <= MX_CNAME_MAX)
			mx_send(f, req->kind, req->xi, req->depth + links, end);
		else
			x->temp = true;
	}
	mx_answer_free(&an);
}

/* Every c-ares request ends here, exactly once. */
static void
mx_ares_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct mx_req *req = arg;
	struct mx_fetch *f = req->f;
	struct mx_chan *c = req->c;

	(void)timeouts;
	if (f->magic != MX_MAGIC_FETCH || c->magic != MX_MAGIC_CHAN)
		fatalx("%s: bad fetch or channel", __func__);
	if (!f->abandoned && status != ARES_EDESTRUCTION && status != ARES_ECANCELLED &&
	    f->err == 0) {
		if (req->kind == MX_REQ_MX)
			mx_on_mx(f, req, status, abuf, alen);
		else
			mx_on_addr(f, req, status, abuf, alen);
	}
	free(req->name);
	free(req);
	c->inflight--;
	if (c->retired && c->inflight == 0)
		mx_kick(c->r);
	mx_fetch_release(f);
}

/* Answer q from the cache, or let it join the fetch in flight for key: false if neither. */
static bool
mx_share(struct mx_resolver *r, struct mx_query *q, const char *key)
{
	size_t h = mx_hash(key);
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

/* "[192.0.2.1]" or "[IPv6:2001:db8::1]": 1 literal parsed, 0 not a literal, -1 bad. */
static int
mx_literal(const char *domain, uint16_t port, struct mx_addr *a, char *text, size_t textlen)
{
	size_t n = strlen(domain);
	const char *s = domain + 1;

	if (n < 2 || domain[0] != '[')
		return 0;
	if (domain[n - 1] != ']' || n - 2 >= textlen)
		return -1;
	if (n > 7 && util_strncasecmp(s, "IPv6:", 5) == 0) {
		memcpy(text, s + 5, n - 7);
		text[n - 7] = '\0';
		if (mx_parse_numeric(text, port, a) == -1 || a->ss.ss_family != AF_INET6)
			return -1;
		return 1;
	}
	memcpy(text, s, n - 2);
	text[n - 2] = '\0';
	if (mx_parse_numeric(text, port, a) == -1 || a->ss.ss_family != AF_INET)
		return -1;
	return 1;
}

struct mx_query *
mx_lookup(struct mx_resolver *r, const char *domain, uint16_t port, mx_cb *cb, void *arg)
{
	struct mx_query *q = mx_query_new(r, cb, arg);
	struct mx_fetch *f;
	struct mx_addr a;
	struct buf key = BUF_INIT;
	char text[INET6_ADDRSTRLEN + 8], *name;
	int lit = 0;

	name = mx_norm(domain);
	if (name != NULL && name[0] != '\0' &&
	    (lit = mx_literal(domain, port, &a, text, sizeof(text))) == 0) {
		buf_printf(&key, "M%u %s", (unsigned)port, name);
		if (mx_share(r, q, buf_cstr(&key))) {
			free(name);
			buf_free(&key);
			return q;
		}
		f = mx_fetch_new(r, buf_steal(&key));
		buf_free(&key);
		f->domain = name;
		f->port = port;
		mx_fetch_join(f, q);
		mx_send(f, MX_REQ_MX, 0, 0, f->domain);
		mx_fetch_release(f);
		return q;
	}

	/* No DNS: a bad name or an address literal, of its own. */
	f = mx_fetch_new(r, NULL);
	f->port = port;
	mx_fetch_join(f, q);
	if (name == NULL || name[0] == '\0') {
		free(name);
		f->domain = xstrdup("(bad)");
		mx_fail(f, RELAY_EINVAL, "5.1.2", "bad domain name");
		mx_fetch_release(f);
		return q;
	}
	f->domain = name;
	if (lit == -1)
		mx_fail(f, RELAY_EINVAL, "5.1.2", "bad address literal %s", f->domain);
	else {
		f->implicit = true;
		f->x = xcalloc(1, sizeof(*f->x));
		mx_xch_init(&f->x[0], text, 0, port);
		mx_xch_add_addr(&f->x[0], &a);
		f->nx = 1;
	}
	mx_fetch_release(f);
	return q;
}

struct mx_query *
mx_lookup_hosts(struct mx_resolver *r, const struct conf_hostport *hosts, size_t n,
    mx_cb *cb, void *arg)
{
	struct mx_query *q = mx_query_new(r, cb, arg);
	struct mx_fetch *f;
	struct mx_addr a;
	struct buf desc = BUF_INIT, key = BUF_INIT;
	size_t i;

	if (n > MX_MAX_TARGETS)
		n = MX_MAX_TARGETS;
	if (n > 0) {
		buf_putc(&key, 'H');
		for (i = 0; i < n; i++)
			buf_printf(&key, " %s:%u", hosts[i].host, (unsigned)hosts[i].port);
		if (mx_share(r, q, buf_cstr(&key))) {
			buf_free(&key);
			return q;
		}
	}
	f = mx_fetch_new(r, n > 0 ? buf_steal(&key) : NULL);
	buf_free(&key);
	f->routes = true;
	mx_fetch_join(f, q);
	f->x = xcalloc(n ? n : 1, sizeof(*f->x));
	f->nx = n;
	for (i = 0; i < n; i++) {
		buf_printf(&desc, "%s%s", i ? "," : "", hosts[i].host);
		mx_xch_init(&f->x[i], hosts[i].host, (unsigned)i, hosts[i].port);
	}
	f->domain = desc.len ? buf_steal(&desc) : xstrdup("(no hosts)");
	buf_free(&desc);
	if (n == 0)
		mx_fail(f, RELAY_ETEMP, "4.4.3", "route has no hosts");
	for (i = 0; i < n && f->err == 0; i++) {
		if (mx_parse_numeric(f->x[i].host, f->x[i].port, &a) == 0)
			mx_xch_add_addr(&f->x[i], &a);
		else {
			mx_send(f, MX_REQ_AAAA, i, 0, f->x[i].host);
			mx_send(f, MX_REQ_A, i, 0, f->x[i].host);
		}
	}
	mx_fetch_release(f);
	return q;
}

void
mx_cancel(struct mx_query *q)
{
	struct mx_resolver *r;
	struct mx_fetch *f;

	if (q == NULL)
		return;
	if (q->magic != MX_MAGIC_QUERY)
		fatalx("%s: bad or cancelled query", __func__);
	r = q->r;
	if (q->ready) {
		TAILQ_REMOVE(&r->ready, q, entry);
		mx_result_free(q->res);
	} else {
		/* the others waiting on the fetch keep it; the last one abandons it */
		f = q->f;
		TAILQ_REMOVE(&f->waiters, q, entry);
		if (TAILQ_EMPTY(&f->waiters)) {
			f->abandoned = true;
			mx_fetch_unjoin(f);     /* freed when its last request calls back */
		}
	}
	r->npending--;
	q->magic = 0;
	free(q);
}

/* ---- the kick: results out, retired channels reaped ---- */

static void
mx_kick_cb(uv_timer_t *t)
{
	struct mx_resolver *r = t->data;
	struct mx_query *q;
	struct mx_chan *c, *next;

	if (r->magic != MX_MAGIC_RESOLVER)
		fatalx("%s: bad resolver", __func__);
	while (!r->closing && (q = TAILQ_FIRST(&r->ready)) != NULL) {
		struct mx_result *res = q->res;
		mx_cb *cb = q->cb;
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
			mx_chan_destroy(c);
	}
}

static void
mx_kick(struct mx_resolver *r)
{
	if (!r->closing)
		uv_timer_start(&r->kick, mx_kick_cb, 0, 0);
}

/* ---- the resolver ---- */

/* Take hostname, listen addresses and DNS servers from conf into r's fields. */
static int
mx_take_conf(struct mx_resolver *r, const struct conf *conf, struct buf *err)
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
	free(r->hostname);
	r->hostname = conf->hostname != NULL && conf->hostname[0] != '\0' ?
	    mx_norm(conf->hostname) : NULL;
	return 0;
}

struct mx_resolver *
mx_new(uv_loop_t *loop, const struct conf *conf, struct buf *err)
{
	struct mx_resolver *r;
	int rc;

	if ((rc = ares_library_init(ARES_LIB_INIT_ALL)) != ARES_SUCCESS) {
		buf_printf(err, "DNS resolver: %s", ares_strerror(rc));
		return NULL;
	}
	r = xcalloc(1, sizeof(*r));
	r->magic = MX_MAGIC_RESOLVER;
	r->loop = loop;
	r->timeout_ms = MX_DEFAULT_TIMEOUT;
	r->tries = MX_DEFAULT_TRIES;
	TAILQ_INIT(&r->chans);
	TAILQ_INIT(&r->ready);
	TAILQ_INIT(&r->fetches);
	TAILQ_INIT(&r->lru);
	if (getrandom(&r->rnd_state, sizeof(r->rnd_state), GRND_NONBLOCK) !=
	    (ssize_t)sizeof(r->rnd_state))
		r->rnd_state = util_mono_ms() ^ ((uint64_t)getpid() << 32);
	if (mx_take_conf(r, conf, err) != 0 || mx_chan_replace(r, err) != 0) {
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
mx_forget(struct mx_resolver *r)
{
	struct mx_fetch *f;

	mx_cache_clear(r);
	TAILQ_FOREACH(f, &r->fetches, entry) {
		mx_fetch_unjoin(f);
		f->stale = true;
	}
}

int
mx_reload(struct mx_resolver *r, const struct conf *conf, struct buf *err)
{
	struct mx_resolver save;
	int rc;

	if (r->closing)
		fatalx("%s: resolver is closing", __func__);
	/* keep the old settings until the new channel exists */
	save.servers = r->servers;
	save.nservers = r->nservers;
	save.self = r->self;
	save.nself = r->nself;
	save.hostname = r->hostname;
	r->servers = NULL;
	r->self = NULL;
	r->hostname = NULL;
	if ((rc = mx_take_conf(r, conf, err)) == 0 && (rc = mx_chan_replace(r, err)) == 0) {
		free(save.servers);
		free(save.self);
		free(save.hostname);
		mx_forget(r);
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
	return rc;
}

void
mx_set_random(struct mx_resolver *r, mx_random_fn *fn, void *arg)
{
	r->rnd = fn;
	r->rnd_arg = arg;
}

int
mx_set_timeout(struct mx_resolver *r, unsigned timeout_ms, unsigned tries)
{
	struct buf err = BUF_INIT;
	unsigned old_ms = r->timeout_ms, old_tries = r->tries;
	int rc;

	if (timeout_ms == 0 || tries == 0)
		return RELAY_EINVAL;
	r->timeout_ms = timeout_ms;
	r->tries = tries;
	if ((rc = mx_chan_replace(r, &err)) != 0) {
		r->timeout_ms = old_ms;
		r->tries = old_tries;
		log_event(LOG_WARNING, "dns_error", "reason", buf_cstr(&err), NULL);
	}
	buf_free(&err);
	return rc;
}

size_t
mx_pending(const struct mx_resolver *r)
{
	return r->npending;
}

void
mx_set_clock(struct mx_resolver *r, uint64_t (*now)(void *arg), void *arg)
{
	r->now = now;
	r->now_arg = arg;
}

void
mx_get_stats(const struct mx_resolver *r, struct mx_stats *out)
{
	*out = r->stats;
	out->cached = r->cache.n;
}

static void
mx_resolver_maybe_free(struct mx_resolver *r)
{
	void (*done)(void *);
	void *arg;

	if (!r->closing || r->nhandles > 0)
		return;
	if (!TAILQ_EMPTY(&r->chans) || !TAILQ_EMPTY(&r->fetches))
		fatalx("%s: channels or fetches left", __func__);
	done = r->done;
	arg = r->done_arg;
	free(r->inflight.b);
	free(r->cache.b);
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
mx_handle_closed(uv_handle_t *h)
{
	struct mx_resolver *r = h->data;

	r->nhandles--;
	mx_resolver_maybe_free(r);
}

void
mx_close(struct mx_resolver *r, void (*done)(void *), void *arg)
{
	struct mx_query *q;
	struct mx_fetch *f;
	struct mx_chan *c, *next;

	if (r->closing)
		fatalx("%s: closed twice", __func__);
	r->closing = true;
	r->done = done;
	r->done_arg = arg;
	while ((q = TAILQ_FIRST(&r->ready)) != NULL)
		mx_cancel(q);
	/* fetches stay until their requests call back (ARES_EDESTRUCTION below) */
	TAILQ_FOREACH(f, &r->fetches, entry)
		while ((q = TAILQ_FIRST(&f->waiters)) != NULL)
			mx_cancel(q);
	mx_cache_clear(r);
	uv_timer_stop(&r->kick);
	uv_close((uv_handle_t *)&r->kick, mx_handle_closed);
	uv_prepare_stop(&r->prepare);
	uv_close((uv_handle_t *)&r->prepare, mx_handle_closed);
	/* outstanding requests call back with ARES_EDESTRUCTION and free their queries */
	for (c = TAILQ_FIRST(&r->chans); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		mx_chan_destroy(c);
	}
	r->chan = NULL;
}
