/*
 * router_mx_int.h - the DNS resolver's insides, shared by its files and by
 * nothing else (everything outside router_mx*.c includes router_mx.h only).
 *
 * The resolver is one concept split in five files, each owning a part:
 *   router_mx.c         the resolver object: mx_new/mx_reload/mx_close, the
 *                       callers' queries (mx_cancel), results handed out
 *                       from the kick, the shuffle of equal preferences;
 *   router_mx_resolve.c what a lookup answers: mx_lookup/mx_lookup_hosts,
 *                       address literals, MX ordering, implicit MX, null MX,
 *                       CNAME chains, loops back to ourselves (RFC 5321 5.1,
 *                       RFC 7505), every c-ares request and its answer;
 *   router_mx_cache.c   sharing: fetches (the DNS work for one key) that
 *                       lookups join while in flight, and finished results
 *                       cached for their TTL;
 *   router_mx_ares.c    c-ares on the libuv loop: channels, their poll and
 *                       timer handles;
 *   router_mx_answer.c  DNS names and raw answers: the answer section, CNAME
 *                       chains, the TTL of negative answers (RFC 2308).
 *
 * Must never: be included outside router/router_mx*.c.
 */
#ifndef RELAY_ROUTER_MX_INT_H
#define RELAY_ROUTER_MX_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <ares.h>

#include "router/router_mx.h"

#define MX_MAGIC_RESOLVER   0x4d585253u     /* "MXRS" */
#define MX_MAGIC_CHAN       0x4d584348u     /* "MXCH" */
#define MX_MAGIC_QUERY      0x4d585159u     /* "MXQY" */
#define MX_MAGIC_FETCH      0x4d584654u     /* "MXFT" */

#define MX_CNAME_MAX        8       /* CNAME links followed, across queries */
#define MX_MAX_PER_FAMILY   (MX_MAX_ADDRS / 2)
#define MX_TTL_NONE         UINT32_MAX

struct mx_poll;
struct mx_cent;

/* A c-ares channel on the loop (router_mx_ares.c). */
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
 * The DNS work for one key (router_mx_cache.c), shared by the lookups
 * waiting on it.  Joinable (in r->inflight) until it is done, abandoned or
 * a reload makes it stale.
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

/* The resolver (router_mx.c); its tables and cache are router_mx_cache.c's. */
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

/* One record of an answer section (class IN: CNAME, MX, A, AAAA). */
struct mx_rr {
	char *owner;
	int type;
	unsigned pref;          /* MX */
	char *target;           /* MX exchange, CNAME target */
	unsigned char addr[16]; /* A, AAAA */
};

/* What mx_parse_answer() read from one answer (freed with mx_answer_free()). */
struct mx_answer {
	struct mx_rr *rr;
	size_t n;
	uint32_t min_ttl;       /* least TTL in the answer section (MX_TTL_NONE: no record) */
	uint32_t neg_ttl;       /* negative answer: min(SOA TTL, SOA minimum); 0 without SOA */
};

/* ---- router_mx.c: the resolver, queries, results ---- */

/* A new query of r for cb(arg, res), counted as pending until it is handed out or cancelled. */
struct mx_query *mx_query_new(struct mx_resolver *r, mx_cb *cb, void *arg);
/* q owns res now (shuffled per q when shuffle): the kick hands it out. */
void mx_query_ready(struct mx_query *q, struct mx_result *res, bool shuffle);
/* Run the kick soon (results out, retired channels reaped); nothing while closing. */
void mx_kick(struct mx_resolver *r);
/* Free a closing resolver once its last handle is closed, then call its done. */
void mx_resolver_maybe_free(struct mx_resolver *r);
/* A deep copy, owned by the caller. */
struct mx_result *mx_result_copy(const struct mx_result *src);

/* ---- router_mx_resolve.c: what a lookup answers ---- */

/* The fetch's result, built once from what its requests found (owned by the caller). */
struct mx_result *mx_build_result(struct mx_fetch *f);

/* ---- router_mx_cache.c: fetches shared in flight, results cached ---- */

/*
 * Answer q from the cache, or let it join the fetch in flight for key;
 * false if neither (q is untouched then).
 */
bool mx_share(struct mx_resolver *r, struct mx_query *q, const char *key);
/*
 * A fetch with its construction hold (dropped with mx_fetch_release); a
 * key (taken) makes it joinable by later lookups of that key.
 */
struct mx_fetch *mx_fetch_new(struct mx_resolver *r, char *key);
/* q waits on f. */
void mx_fetch_join(struct mx_fetch *f, struct mx_query *q);
/* Later lookups of f's key start afresh. */
void mx_fetch_unjoin(struct mx_fetch *f);
/*
 * Drop a hold (a request called back, or construction is over); the last
 * one builds the result, caches it, hands every waiter its copy and frees f.
 */
void mx_fetch_release(struct mx_fetch *f);

/* ---- router_mx_ares.c: c-ares channels on the loop ---- */

/* A new channel with r's current settings becomes the current one: 0 or RELAY_EINVAL. */
int mx_chan_replace(struct mx_resolver *r, struct buf *err);
/* The channel's requests changed (sent, answered, timed out): rearm it soon. */
void mx_chan_touch(struct mx_chan *c);
/* Destroy a channel: outstanding requests call back with ARES_EDESTRUCTION. */
void mx_chan_destroy(struct mx_chan *c);

/* ---- router_mx_answer.c: DNS names and answers ---- */

/* Lower-case copy of name without a trailing dot (NULL when too long). */
char *mx_norm(const char *name);
/*
 * Collect the answer section's CNAME, MX, A and AAAA records of class IN,
 * the least TTL among its records, and the TTL of a negative answer.
 * 0, or -1 for a malformed message (an is empty then).
 */
int mx_parse_answer(const unsigned char *abuf, int alen, struct mx_answer *an);
void mx_answer_free(struct mx_answer *an);
/* Where the CNAME chain from name ends (in an, or name); *links counts the links. */
const char *mx_chain_end(const struct mx_answer *an, const char *name, unsigned *links);
/* How long a negative answer (NXDOMAIN, NODATA) may be kept: 0 when it says nothing. */
uint32_t mx_neg_ttl(const unsigned char *abuf, int alen);

#endif
