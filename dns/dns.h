/*
 * dns.h - where mail for a domain goes: the asynchronous DNS resolver
 * of the router (c-ares on the one libuv loop).  It turns a recipient domain
 * into an ordered list of exchangers with their addresses (RFC 5321 5.1,
 * RFC 7505), and a route's configured hosts into addresses.
 *
 * What a lookup of domain D answers (dns_lookup):
 *   - MX records sorted by preference; equal preferences shuffled (the
 *     randomness is injectable: dns_set_random());
 *   - each exchanger resolved to AAAA and A, in parallel; per exchanger the
 *     IPv6 addresses come first, then the IPv4 ones (the deliverer tries
 *     them in that order and falls through on connect failure);
 *   - CNAMEs are followed, inside one answer and across queries (8 links);
 *   - an exchanger without addresses is skipped; if none is left: 4.4.3
 *     (temporary) when any of its lookups failed temporarily (SERVFAIL,
 *     timeout, refused), else 5.1.2 "no usable exchanger";
 *   - no MX records (NODATA): D itself is the implicit exchanger (pref 0,
 *     result->implicit);
 *   - NXDOMAIN: 5.1.2 (permanent);  SERVFAIL/timeout: 4.4.3 (temporary);
 *   - a null MX ("MX 0 ."): 5.1.10 at once, no address lookups;
 *   - an exchanger that is relayd itself (its name equals conf hostname,
 *     case-insensitively, trailing dot ignored; or one of its addresses is a
 *     configured submit.listen/listen_tls address) drops every exchanger of
 *     that preference or worse; if nothing is left: 5.4.6 "mail for D loops
 *     back to myself";
 *   - an address literal "[192.0.2.1]" / "[IPv6:2001:db8::1]" is used as is
 *     (implicit, pref 0; the loop check applies).
 *   - router.dnssec (the resolvers are trusted, validating ones): every
 *     query carries EDNS0 with the DO bit and the answers' AD bit is
 *     believed.  An exchanger whose MX answer (or NODATA for an implicit
 *     MX) and address answers all had AD is "secure"; for each secure one
 *     _PORT._tcp.HOST TLSA is looked up (PORT: dns_lookup's port; HOST the
 *     exchanger's name as listed, CNAMEs not expanded) and the validated
 *     records are kept in the target (DNS_TLSA_SECURE); an insecure or
 *     empty answer leaves DNS_TLSA_NONE; a failed one (a validating
 *     resolver says SERVFAIL for bogus data) is DNS_TLSA_FAILED, and the
 *     result is cached as a temporary failure is.  What the records mean
 *     is tlspolicy/'s business;
 * dns_lookup_hosts (routes) resolves names or literals in the given order
 * (target i has pref i, each with its own port) and does no loop check (a
 * smarthost on our own address but another port is legitimate); when no
 * host resolves the result is always temporary (4.4.3): a configuration
 * mistake must not bounce mail.
 *
 * Sharing and caching: lookups of the same domain and port (or the same
 * route hosts) while one is in flight share its DNS queries; a finished
 * result is cached for min(TTL, 60 s) (a negative answer per its SOA,
 * RFC 2308; nothing with TTL 0), a temporary failure for 5 s.  Every caller
 * still gets a result of its own, equal preferences shuffled for each one.
 * (With more than DNS_MAX_TARGETS exchangers, the ones kept are the best by
 * preference in answer order; the shuffle is among those.)
 *
 * Ownership: the resolver owns its queries; a query lives until its callback
 * has returned or it is cancelled.  The callback owns the result and frees
 * it with dns_result_free().  Callbacks never fire from inside dns_lookup*()
 * (always from the loop), and never after dns_cancel() or dns_close().
 * Cancelling one lookup never affects another lookup of the same key.
 */
#ifndef RELAY_ROUTER_MX_H
#define RELAY_ROUTER_MX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "common/buf.h"
#include "common/tlsa.h"
#include "conf/conf.h"

#define DNS_MAX_TARGETS   16     /* exchangers kept per result, best first */
#define DNS_MAX_ADDRS     16     /* addresses kept per exchanger */

struct dns_addr {
	struct sockaddr_storage ss; /* port already set (dns_lookup's port, or the route's) */
	socklen_t len;
};

/* What the TLSA lookup of an exchanger found (router.dnssec; see dns_lookup). */
enum dns_tlsa_state {
	DNS_TLSA_NONE = 0,          /* not looked up (insecure MX or address), none, or insecure */
	DNS_TLSA_SECURE,            /* validated (AD) TLSA records: tlsa[], ntlsa > 0 */
	DNS_TLSA_FAILED,            /* the lookup failed (SERVFAIL = bogus, timeout): tlsa_error */
};

struct dns_target {
	char *host;                 /* exchanger name as in DNS (no trailing dot), or the literal */
	unsigned pref;              /* MX preference; index for routes; 0 for implicit */
	struct dns_addr *addrs;      /* naddrs > 0: IPv6 first, then IPv4 */
	size_t naddrs;
	bool secure;                /* router.dnssec: its MX and address answers had AD */
	enum dns_tlsa_state tlsa_state;
	struct tlsa_rr *tlsa;       /* DNS_TLSA_SECURE: every TLSA record of _PORT._tcp.host */
	size_t ntlsa;
	char tlsa_error[160];       /* DNS_TLSA_FAILED: why */
};

struct dns_result {
	int err;                    /* 0, RELAY_ETEMP (temporary), or RELAY_EINVAL (permanent) */
	char status[16];            /* on failure: "5.1.2", "5.1.10", "4.4.3", "5.4.6" */
	char reason[256];           /* on failure: "domain example.invalid does not exist (NXDOMAIN)" */
	struct dns_target *targets;  /* err == 0: ntargets > 0, in the order to try */
	size_t ntargets;
	bool implicit;              /* no MX records: the domain (or literal) itself */
	char **txt;                 /* dns_lookup_txt, err == 0: the records (0 = NODATA) */
	size_t ntxt;
};

/* The callback owns res and frees it with dns_result_free(). */
typedef void dns_cb(void *arg, struct dns_result *res);

/* Randomness for shuffling equal preferences: a uniform value in [0, n). */
typedef uint32_t dns_random_fn(void *arg, uint32_t n);

struct dns_resolver;
struct dns_query;

/*
 * Create a resolver on loop with conf's router.dns_servers ("addr:port",
 * numeric) or, when there are none, the system resolver (/etc/resolv.conf).
 * Takes what it needs from conf (copies: hostname, listen addresses).
 * NULL with a message in err on failure.
 */
struct dns_resolver *dns_new(uv_loop_t *loop, const struct conf *conf, struct buf *err);
/*
 * Descriptors the resolver may hold at once with conf: c-ares (1.18) keeps
 * one UDP and one TCP socket per server and channel; the channels are
 * conf's and, at a reload, the running one's, retired while its queries
 * drain.  The servers are router.dns_servers, else as many as c-ares reads
 * from /etc/resolv.conf (every nameserver line, not only glibc's three: a
 * probe channel counts them, ares_get_servers_ports).  The running channel's
 * are r's current channel's, counted when it was made (r NULL, at start:
 * running's, as conf's; at start running is conf).
 */
uint64_t dns_fd_need(const struct conf *conf, const struct conf *running,
    const struct dns_resolver *r);
/*
 * A new configuration (SIGHUP): servers, hostname and listen addresses.
 * Queries in flight finish on the old servers.  0, or RELAY_EINVAL with a
 * message in err (the resolver is then unchanged).
 */
int dns_reload(struct dns_resolver *r, const struct conf *conf, struct buf *err);
/* Replace the shuffle's randomness (tests); NULL restores the default. */
void dns_set_random(struct dns_resolver *r, dns_random_fn *fn, void *arg);
/*
 * DNS timing: per-try timeout in ms (default 2000, doubling per retry as
 * c-ares does) and tries (default 2).  Applies to lookups started afterwards.
 */
int dns_set_timeout(struct dns_resolver *r, unsigned timeout_ms, unsigned tries);

/*
 * Start resolving domain (no trailing dot needed); the targets' addresses
 * carry port.  cb(arg, res) fires exactly once, from the loop, unless the
 * query is cancelled.  Never NULL.
 */
struct dns_query *dns_lookup(struct dns_resolver *r, const char *domain, uint16_t port,
    dns_cb *cb, void *arg);
/* Resolve a route's hosts (names or numeric literals, no brackets) in order. */
struct dns_query *dns_lookup_hosts(struct dns_resolver *r, const struct conf_hostport *hosts,
    size_t n, dns_cb *cb, void *arg);
/*
 * Look up the TXT records of name (DKIM selectors: relayctl dkim --check),
 * no cache and no sharing.  The result has err 0 and ntxt records (each
 * record's strings concatenated; ntxt 0 for NODATA), RELAY_EINVAL for
 * NXDOMAIN or a bad name, RELAY_ETEMP for SERVFAIL/timeout.
 */
struct dns_query *dns_lookup_txt(struct dns_resolver *r, const char *name, dns_cb *cb, void *arg);
/* Forget a query that has not called back yet: its callback never fires. */
void dns_cancel(struct dns_query *q);

/*
 * Cancel every pending query (their callbacks never fire), close the
 * resolver's handles and free it; done(arg) fires once all handles are
 * closed (may be NULL).
 */
void dns_close(struct dns_resolver *r, void (*done)(void *arg), void *arg);

void dns_result_free(struct dns_result *res);

/* Number of queries whose callback is still due (for relayctl and tests). */
size_t dns_pending(const struct dns_resolver *r);

/* Forget every cached result (relayctl queue flush; dns_reload does it too). */
void dns_cache_clear(struct dns_resolver *r);
/* Replace the cache's monotonic clock in ms (tests); NULL restores the default. */
void dns_set_clock(struct dns_resolver *r, uint64_t (*now)(void *arg), void *arg);

/* Counters since dns_new (for relayctl and tests). */
struct dns_stats {
	uint64_t lookups;       /* dns_lookup() and dns_lookup_hosts() calls */
	uint64_t fetches;       /* resolutions started (neither joined nor cached; literals aside) */
	uint64_t joined;        /* lookups that joined a resolution in flight */
	uint64_t cache_hits;    /* lookups answered from the cache */
	size_t cached;          /* results in the cache now */
};
void dns_get_stats(const struct dns_resolver *r, struct dns_stats *out);

#endif
