/*
 * router_route.h - (internal to router/) where a recipient domain goes,
 * before DNS: the configured routes (conf router.routes) and the RUN-TIME
 * routes an admin sets with `relayctl route set DOMAIN HOST:PORT,...`.
 *
 * Run-time routes live in memory and in queue_dir/routes (one line each:
 * "DOMAIN HOST:PORT HOST:PORT ..."), so they survive restarts; the file is
 * rewritten off the loop (libuv thread pool) after each change.
 *
 * Precedence (route_resolve): a run-time route for the exact domain, then a
 * configured route for the exact domain, then a run-time "*", then a
 * configured "*"; otherwise plain DNS.  A route with hosts overrides DNS;
 * one without hosts only sets the MX policy, TLS or AUTH of DNS delivery.
 *
 * A struct route is a self-contained copy (the job that uses it survives
 * reloads and route changes); route_release() frees it.
 */
#ifndef RELAY_ROUTER_ROUTE_H
#define RELAY_ROUTER_ROUTE_H

#include <ctype.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <uv.h>

#include "common/buf.h"
#include "conf/conf.h"

#define ROUTE_MAX_HOSTS  16

struct route {
	const char *dest;               /* destination key: "example.net", or "route:*" for a host route */
	char *domain;                   /* the route's domain ("*", "x.test") or NULL (plain DNS) */
	bool runtime;                   /* set by relayctl, not by the configuration */
	struct conf_hostport *hosts;    /* nhosts > 0: fixed hosts, tried in order */
	size_t nhosts;
	enum conf_mx_policy mx_policy;  /* for DNS delivery */
	enum conf_tls tls;
	char *auth_user;                /* or NULL */
	char *auth_password;
};

struct route_table;

/*
 * Create the table and load queue_dir/routes if it exists (at start-up,
 * before the loop runs).  NULL with a message in err when the file is
 * unreadable or malformed.
 */
struct route_table *route_table_new(uv_loop_t *loop, const char *queue_dir, struct buf *err);
/* Wait for a file write in flight; done(arg) on the loop (at once if none). */
void route_table_close(struct route_table *t, void (*done)(void *arg), void *arg);
void route_table_free(struct route_table *t);

/*
 * Set the run-time route for domain ("*" allowed) to hosts, a list
 * "HOST[:PORT],..." (IPv6 as "[::1]:25"; a missing port is default_port).
 * 0, or RELAY_EINVAL with a one-line message in err.
 */
int route_set(struct route_table *t, const char *domain, const char *hosts, uint16_t default_port,
    struct buf *err);
/* Remove the run-time route for domain: 0 or RELAY_ENOENT. */
int route_clear(struct route_table *t, const char *domain);
/* Counts the changes to the run-time routes (loading the routes file,
 * route_set, route_clear): what route_resolve gives for a domain under one
 * configuration changes only when this does (the scheduler's route cache is
 * stamped with it). */
uint64_t route_table_gen(const struct route_table *t);
/* Every route, run-time and configured, as an aligned table or a JSON array. */
void route_list(const struct route_table *t, const struct conf *conf, bool json, struct buf *out);

/* domain as routes name it (a trailing dot dropped, ASCII lower case): the
 * length; written to out with its NUL only when it fits in cap bytes.  The
 * key of a destination without hosts, and of the scheduler's route cache. */
static inline size_t
route_fold_domain(const char *domain, char *out, size_t cap)
{
	size_t i, len = strlen(domain);

	if (len > 1 && domain[len - 1] == '.')
		len--;
	if (len >= cap)
		return len;
	for (i = 0; i < len; i++)
		out[i] = (char)tolower((unsigned char)domain[i]);
	out[len] = '\0';
	return len;
}
/* Where mail for domain goes (see the precedence above); fills out (release it).
 * Its dest is shared with the other routes t resolved to the same destination
 * (t may be NULL: a copy of its own); treat it as read-only. */
void route_resolve(struct route_table *t, const struct conf *conf, const char *domain,
    struct route *out);
void route_release(struct route *r);
/* Whether a and b send mail the same way (destination, hosts, policy, TLS, AUTH). */
bool route_equal(const struct route *a, const struct route *b);

/* Pure: parse "HOST[:PORT],..." (also space-separated); 0 or RELAY_EINVAL (err says why). */
int route_parse_hosts(const char *text, uint16_t default_port, struct conf_hostport **out,
    size_t *n, struct buf *err);
void route_hosts_free(struct conf_hostport *h, size_t n);
/* "host:port" / "[v6]:port" of h into b. */
void route_format_host(struct buf *b, const struct conf_hostport *h);

#endif
