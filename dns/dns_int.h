/*
 * dns_int.h - the DNS resolver's insides, shared by its files and by
 * nothing else (everything outside dns*.c includes dns.h only).
 *
 * The resolver is one concept split in five files, each owning a part:
 *   dns.c         the resolver object: dns_new/dns_reload/dns_close, the
 *                       callers' queries (dns_cancel), results handed out
 *                       from the kick, the shuffle of equal preferences;
 *   dns_resolve.c what a lookup answers: dns_lookup/dns_lookup_hosts,
 *                       address literals, MX ordering, implicit MX, null MX,
 *                       CNAME chains, loops back to ourselves (RFC 5321 5.1,
 *                       RFC 7505), secure exchangers and their TLSA records
 *                       (router.dnssec), every c-ares request and its answer;
 *   dns_cache.c   sharing: fetches (the DNS work for one key) that
 *                       lookups join while in flight, and finished results
 *                       cached for their TTL;
 *   dns_ares.c    c-ares on the libuv loop: channels, their poll and
 *                       timer handles;
 *   dns_answer.c  DNS names and raw answers: the answer section (TLSA
 *                       records too), CNAME chains, the TTL of negative
 *                       answers (RFC 2308), the AD bit, and the query with
 *                       the DO bit that router.dnssec sends (RFC 3225).
 *
 * Must never: be included outside dns/dns*.c.
 */
#ifndef RELAY_ROUTER_MX_INT_H
#define RELAY_ROUTER_MX_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <ares.h>

#include "common/htab.h"
#include "dns/dns.h"

#define DNS_MAGIC_RESOLVER   0x4d585253u     /* "MXRS" */
#define DNS_MAGIC_CHAN       0x4d584348u     /* "MXCH" */
#define DNS_MAGIC_QUERY      0x4d585159u     /* "MXQY" */
#define DNS_MAGIC_FETCH      0x4d584654u     /* "MXFT" */

#define DNS_CNAME_MAX        8       /* CNAME links followed, across queries */
#define DNS_MAX_PER_FAMILY   (DNS_MAX_ADDRS / 2)
#define DNS_TTL_NONE         UINT32_MAX

struct dns_poll;
struct dns_cent;

/* A c-ares channel on the loop (dns_ares.c). */
struct dns_chan {
	uint32_t magic;
	struct dns_resolver *r;
	ares_channel ch;
	uv_timer_t timer;
	LIST_HEAD(, dns_poll) polls;
	size_t inflight;        /* c-ares requests not called back yet */
	size_t nhandles;        /* open uv handles (timer + polls) */
	bool retired;           /* a newer channel took over */
	bool destroyed;         /* ares_destroy() done, handles closing */
	bool rearm;             /* requests changed: rearm the timer before the loop blocks */
	size_t nservers;        /* the servers c-ares has (ares_get_servers_ports), at creation */
	TAILQ_ENTRY(dns_chan) entry;
};

/* One exchanger (or route host) being resolved. */
struct dns_xch {
	char *host;
	unsigned pref;
	uint16_t port;
	struct dns_addr a6[DNS_MAX_PER_FAMILY];
	size_t n6;
	struct dns_addr a4[DNS_MAX_PER_FAMILY];
	size_t n4;
	bool temp;              /* a lookup for it failed temporarily */
	bool self;              /* one of its addresses is ours */
	bool insecure;          /* an address answer came without AD (router.dnssec) */
	unsigned addr_pending;  /* its A/AAAA requests (CNAME follow-ups included) out */
	enum dns_tlsa_state tlsa_state;
	struct tlsa_rr *tlsa;
	size_t ntlsa;
	char tlsa_error[160];
};

TAILQ_HEAD(dns_query_list, dns_query);

/*
 * The DNS work for one key (dns_cache.c), shared by the lookups
 * waiting on it.  Joinable (in r->inflight) until it is done, abandoned or
 * a reload makes it stale.
 */
struct dns_fetch {
	uint32_t magic;
	struct dns_resolver *r;
	struct dns_chan *c;      /* the channel its requests run on */
	char *key;               /* NULL: private (literal, bad name) */
	struct htab_node node;   /* in r->inflight while joinable */
	bool joinable;          /* in r->inflight */
	bool stale;             /* started under an older configuration: not cached */
	bool abandoned;         /* every waiter cancelled: answers are ignored */
	char *domain;           /* lower case, no trailing dot; or a description for routes */
	uint16_t port;
	bool routes;            /* dns_lookup_hosts(): no loop check, temp when unresolved */
	bool implicit;
	bool txtq;              /* dns_lookup_txt(): TXT records, no exchangers */
	char **txt;             /* txtq: the records read */
	size_t ntxt;
	size_t inflight;        /* c-ares requests (plus construction hold) outstanding */
	uint32_t ttl;           /* s: least TTL of what the result rests on (DNS_TTL_NONE) */
	bool temp;              /* some lookup failed temporarily */
	bool mx_insecure;       /* router.dnssec: an MX answer on the way had no AD */

	struct dns_xch *x;
	size_t nx;
	unsigned self_pref;     /* exchangers of this preference or worse are us */
	bool self_found;

	int err;                /* a failure decided before address resolution */
	char status[16];
	char reason[256];
	struct dns_query_list waiters;
	TAILQ_ENTRY(dns_fetch) entry;    /* r->fetches */
};

/* One caller's lookup: waits on a fetch, then holds its own result. */
struct dns_query {
	uint32_t magic;
	struct dns_resolver *r;
	struct dns_fetch *f;     /* while waiting */
	dns_cb *cb;
	void *arg;
	struct dns_result *res;  /* when ready */
	bool ready;             /* on r->ready, waiting for the kick */
	TAILQ_ENTRY(dns_query) entry;    /* f->waiters or r->ready */
};

/* The resolver (dns.c); its tables and cache are dns_cache.c's. */
struct dns_resolver {
	uint32_t magic;
	uv_loop_t *loop;
	struct dns_chan *chan;                   /* the current channel */
	TAILQ_HEAD(, dns_chan) chans;            /* all channels, current included */
	uv_timer_t kick;                        /* 0 ms: hand out results, reap channels */
	uv_prepare_t prepare;                   /* before the loop blocks: rearm channel timers */
	struct dns_query_list ready;
	size_t npending;                        /* queries whose callback is still due */
	TAILQ_HEAD(, dns_fetch) fetches;         /* every fetch until its last request is back */
	struct htab inflight;                    /* joinable fetches by key */
	struct htab cache;                       /* struct dns_cent by key */
	TAILQ_HEAD(, dns_cent) lru;
	struct dns_stats stats;
	uint64_t (*now)(void *);                /* monotonic ms (tests inject it) */
	void *now_arg;

	char *hostname;                         /* lower case, no trailing dot */
	struct sockaddr_storage *self;          /* listen addresses (ports ignored) */
	size_t nself;
	struct ares_addr_port_node *servers;    /* array; NULL = system resolver */
	size_t nservers;
	unsigned timeout_ms;
	unsigned tries;
	bool dnssec;                            /* router.dnssec: DO bit on, AD believed */

	dns_random_fn *rnd;
	void *rnd_arg;
	uint64_t rnd_state;

	size_t nhandles;                        /* every open uv handle of ours */
	bool closing;
	void (*done)(void *);
	void *done_arg;
};

/* One record of an answer section (class IN: CNAME, MX, A, AAAA, TLSA). */
struct dns_rr {
	char *owner;
	int type;
	unsigned pref;          /* MX */
	char *target;           /* MX exchange, CNAME target */
	unsigned char addr[16]; /* A, AAAA */
	struct tlsa_rr tlsa;    /* TLSA (its data malloc'd) */
};

/* What dns_parse_answer() read from one answer (freed with dns_answer_free()). */
struct dns_answer {
	struct dns_rr *rr;
	size_t n;
	uint32_t min_ttl;       /* least TTL in the answer section (DNS_TTL_NONE: no record) */
	uint32_t neg_ttl;       /* negative answer: min(SOA TTL, SOA minimum); 0 without SOA */
	bool ad;                /* the header's AD bit (RFC 4035 3.2.3) */
};

/* ---- dns.c: the resolver, queries, results ---- */

/* A new query of r for cb(arg, res), counted as pending until it is handed out or cancelled. */
struct dns_query *dns_query_new(struct dns_resolver *r, dns_cb *cb, void *arg);
/* q owns res now (shuffled per q when shuffle): the kick hands it out. */
void dns_query_ready(struct dns_query *q, struct dns_result *res, bool shuffle);
/* Run the kick soon (results out, retired channels reaped); nothing while closing. */
void dns_kick(struct dns_resolver *r);
/* Free a closing resolver once its last handle is closed, then call its done. */
void dns_resolver_maybe_free(struct dns_resolver *r);
/* A deep copy, owned by the caller. */
struct dns_result *dns_result_copy(const struct dns_result *src);

/* ---- dns_resolve.c: what a lookup answers ---- */

/* The fetch's result, built once from what its requests found (owned by the caller). */
struct dns_result *dns_build_result(struct dns_fetch *f);

/* ---- dns_cache.c: fetches shared in flight, results cached ---- */

/*
 * Answer q from the cache, or let it join the fetch in flight for key;
 * false if neither (q is untouched then).
 */
bool dns_share(struct dns_resolver *r, struct dns_query *q, const char *key);
/*
 * A fetch with its construction hold (dropped with dns_fetch_release); a
 * key (taken) makes it joinable by later lookups of that key.
 */
struct dns_fetch *dns_fetch_new(struct dns_resolver *r, char *key);
/* q waits on f. */
void dns_fetch_join(struct dns_fetch *f, struct dns_query *q);
/* Later lookups of f's key start afresh. */
void dns_fetch_unjoin(struct dns_fetch *f);
/*
 * Drop a hold (a request called back, or construction is over); the last
 * one builds the result, caches it, hands every waiter its copy and frees f.
 */
void dns_fetch_release(struct dns_fetch *f);

/* ---- dns_ares.c: c-ares channels on the loop ---- */

/* A new channel with r's current settings becomes the current one: 0 or RELAY_EINVAL. */
int dns_chan_replace(struct dns_resolver *r, struct buf *err);
/* The channel's requests changed (sent, answered, timed out): rearm it soon. */
void dns_chan_touch(struct dns_chan *c);
/* Destroy a channel: outstanding requests call back with ARES_EDESTRUCTION. */
void dns_chan_destroy(struct dns_chan *c);
/*
 * The servers a channel without router.dns_servers would have now: a probe
 * channel reads the system's configuration as dns_chan_new() does (every
 * nameserver line of /etc/resolv.conf, 127.0.0.1 when there is none), is
 * counted and destroyed; it opens no socket, and reads the files on the
 * calling thread as a channel made at a reload does.  0 when c-ares cannot
 * start.
 */
size_t dns_ares_system_servers(void);

/* ---- dns_answer.c: DNS names and answers ---- */

/* Lower-case copy of name without a trailing dot (NULL when too long). */
char *dns_norm(const char *name);
/*
 * Collect the answer section's CNAME, MX, A and AAAA records of class IN,
 * the least TTL among its records, and the TTL of a negative answer.
 * 0, or -1 for a malformed message (an is empty then).
 */
int dns_parse_answer(const unsigned char *abuf, int alen, struct dns_answer *an);
void dns_answer_free(struct dns_answer *an);
/* Where the CNAME chain from name ends (in an, or name); *links counts the links. */
const char *dns_chain_end(const struct dns_answer *an, const char *name, unsigned *links);
/* How long a negative answer (NXDOMAIN, NODATA) may be kept: 0 when it says nothing. */
uint32_t dns_neg_ttl(const unsigned char *abuf, int alen);
/* The TXT records of an answer, each record's strings joined into one:
 * *out (n + 1 entries, NULL-terminated) and *n, owned by the caller.
 * 0, or -1 for a malformed answer. */
int dns_parse_txt(const unsigned char *abuf, int alen, char ***out, size_t *n);
/*
 * A query for name/type (class IN, RD) with an EDNS0 OPT record of
 * DNS_EDNS_UDPSIZE and the DO bit set (RFC 3225), for ares_send(): 0 and
 * *buf (free with ares_free_string), or an ARES_E* code.
 */
#define DNS_EDNS_UDPSIZE     1232
int dns_make_query_do(const char *name, int type, unsigned char **buf, int *len);
/* The AD bit of a message's header (false for a short one). */
bool dns_answer_ad(const unsigned char *abuf, int alen);
/*
 * What ares_query() would report for a complete answer from ares_send():
 * ARES_SUCCESS (records), ARES_ENODATA, ARES_ENOTFOUND, ARES_ESERVFAIL,
 * ARES_EREFUSED, ARES_EFORMERR, ARES_ENOTIMP, or ARES_EBADRESP (too short).
 */
int dns_answer_status(const unsigned char *abuf, int alen);

#endif
