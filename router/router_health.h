/*
 * router_health.h - (internal to router/) host health: one entry per
 * exchanger ADDRESS ("192.0.2.1:25", "[2001:db8::1]:25"), shared by every
 * message.  An address is unknown (never tried), up, or down until a time,
 * with a backoff that doubles on each consecutive failure from
 * router.host_backoff_min to host_backoff_max.  A down address is skipped
 * without a connection attempt until its backoff ends; then exactly one
 * attempt (the probe) may go to it while the others keep skipping it.
 *
 * The state changes are PURE functions of (state, now): the scheduler passes
 * the clock in, the unit tests drive them from tables.  The table itself is a
 * plain hash of entries (common/htab), iterated by `relayctl hosts` and reset by
 * `relayctl hosts reset HOST`.
 */
#ifndef RELAY_ROUTER_HEALTH_H
#define RELAY_ROUTER_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/htab.h"
#include "common/io.h"

#define HEALTH_ADDR_MAX   64        /* "[ffff:...:ffff]:65535" fits */
#define HEALTH_ERR_MAX    256

enum health_state {
	HEALTH_UNKNOWN = 0,             /* never tried, or reset by the admin */
	HEALTH_UP,                      /* the last attempt reached the host */
	HEALTH_DOWN,                    /* skipped until down_until_ms */
};

struct health_host {
	char addr[HEALTH_ADDR_MAX];     /* the key: address and port */
	char name[256];                 /* exchanger name last seen with it */
	enum health_state state;
	unsigned failures;              /* consecutive failures */
	uint64_t since_ms;              /* in this state since (down: first failure of the streak) */
	uint64_t down_until_ms;         /* HEALTH_DOWN: no attempt before this */
	uint64_t backoff_ms;            /* the backoff that set down_until_ms */
	uint64_t last_attempt_ms;       /* the last attempt that ended, 0 = none */
	char last_error[HEALTH_ERR_MAX];/* why it went down ("connection refused") */
	bool probing;                   /* the one attempt after the backoff is in flight */
	char policy[16];                /* the TLS policy of the last attempt or refusal:
	                                   "dane", "dane-unauth", or deliver.tls's value; "" */
	char refused[HEALTH_ERR_MAX];   /* why the TLS policy last refused it ("4.7.5
	                                   tlsa-invalid ..."), "" when it did not */
	uint64_t refused_ms;            /* when, 0 = never */
	struct htab_node node;          /* in the table (common/htab), by addr */
};

/* What the router may do with an address now. */
enum health_verdict {
	HEALTH_TRY,                     /* unknown or up: connect */
	HEALTH_PROBE,                   /* down, backoff over, no probe in flight: connect, as the probe */
	HEALTH_SKIP,                    /* down (or its probe is in flight): go to the next one */
};

/* Pure functions. */

/* The backoff after the n-th consecutive failure (n >= 1): min, 2min, 4min... capped at max. */
uint64_t health_backoff(unsigned failures, uint64_t min_ms, uint64_t max_ms);
/* Whether a failed attempt says the host is down: refused, unreachable,
 * timeout, reset, EOF or a 421 greeting; not a TLS failure or another reply. */
bool health_marks_down(enum io_error err, int code);
/* An attempt to h ended with a failure that marks it down (now, backoff bounds, why). */
void health_host_fail(struct health_host *h, uint64_t now, uint64_t min_ms, uint64_t max_ms,
    const char *why);
/* An attempt to h reached the host (any SMTP answer but a 421 greeting). */
void health_host_ok(struct health_host *h, uint64_t now);
/*
 * The TLS policy that applied to h (policy), and why it refused h (refused:
 * "STATUS [RESULT] WHY") or NULL when an attempt got through under it (the
 * refusal is forgotten); keep_refused: neither (the connection failed first).
 */
void health_host_policy(struct health_host *h, const char *policy, const char *refused,
    bool keep_refused, uint64_t now);
/* Another node found h down (cluster/): skip it until `until` unless it is
 * known down longer or probed here now.  true if h changed. */
bool health_host_shared_down(struct health_host *h, uint64_t now, uint64_t until, unsigned failures,
    uint64_t backoff_ms, const char *why);
enum health_verdict health_host_check(const struct health_host *h, uint64_t now);
/* The address key of sa ("1.2.3.4:25", "[::1]:25") into out (HEALTH_ADDR_MAX). */
void health_addr_key(const struct sockaddr *sa, char *out, size_t outlen);
const char *health_state_name(enum health_state s);

/* The table. */
struct health;

struct health *health_new(void);
void health_free(struct health *t);
/* The entry for addr, created (unknown) when missing; name updates the exchanger name. */
struct health_host *health_get(struct health *t, const char *addr, const char *name);
/* The entry for addr, or NULL. */
struct health_host *health_find(struct health *t, const char *addr);
/* Every entry, in no particular order; cb must not change the table. */
void health_foreach(struct health *t, void (*cb)(void *arg, const struct health_host *h),
    void *arg);
size_t health_count(const struct health *t);
/*
 * Forget what is known about host: an address with port ("192.0.2.1:25"),
 * an address (every port), or an exchanger name (case-insensitive).  The
 * matching entries become unknown.  0, or RELAY_ENOENT when nothing matched.
 */
int health_reset(struct health *t, const char *host);
/* Drop entries that are up or unknown and untouched (attempted or refused) since
 * before cutoff_ms. */
void health_expire(struct health *t, uint64_t cutoff_ms);

#endif
