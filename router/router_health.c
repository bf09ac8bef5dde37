/*
 * router_health.c - host health (issue #5): what the router knows about each
 * exchanger address, shared by every message.  See router_health.h.
 *
 * Owns: the table of struct health_host (common/htab, keyed by address)
 * and every entry in it.
 * Never: connects, logs, reads the clock or keeps a timer — the scheduler
 * passes `now` in and decides what to do with the verdicts.
 */
#include "router/router_health.h"
#include "common/util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct health {
	struct htab hosts;              /* struct health_host by addr */
};

/* ------------------------------------------------------------------ */
/* Pure functions. */

uint64_t
health_backoff(unsigned failures, uint64_t min_ms, uint64_t max_ms)
{
	uint64_t b;
	unsigned i;

	if (min_ms == 0)
		min_ms = 1;
	if (max_ms < min_ms)
		max_ms = min_ms;
	b = min_ms;
	for (i = 1; i < failures && b < max_ms; i++) {
		if (b > max_ms / 2) {
			b = max_ms;
			break;
		}
		b *= 2;
	}
	return b > max_ms ? max_ms : b;
}

bool
health_marks_down(enum io_error err, int code)
{
	if (err == IO_ERR_TLS)
		return false;
	if (code == 421)
		return true;
	if (code != 0)
		return false;       /* the host answered, e.g. 554 at the greeting */
	return true;                /* refused, unreachable, timeout, reset, EOF */
}

void
health_host_fail(struct health_host *h, uint64_t now, uint64_t min_ms, uint64_t max_ms,
    const char *why)
{
	if (h->state != HEALTH_DOWN)
		h->since_ms = now;
	h->state = HEALTH_DOWN;
	h->failures++;
	h->backoff_ms = health_backoff(h->failures, min_ms, max_ms);
	h->down_until_ms = now + h->backoff_ms;
	h->last_attempt_ms = now;
	h->probing = false;
	snprintf(h->last_error, sizeof(h->last_error), "%s", why ? why : "");
}

void
health_host_ok(struct health_host *h, uint64_t now)
{
	if (h->state != HEALTH_UP)
		h->since_ms = now;
	h->state = HEALTH_UP;
	h->failures = 0;
	h->backoff_ms = 0;
	h->down_until_ms = 0;
	h->last_attempt_ms = now;
	h->probing = false;
}

bool
health_host_shared_down(struct health_host *h, uint64_t now, uint64_t until, unsigned failures,
    uint64_t backoff_ms, const char *why)
{
	if (h->probing || until <= now || (h->state == HEALTH_DOWN && h->down_until_ms >= until))
		return false;
	if (h->state != HEALTH_DOWN)
		h->since_ms = now;
	h->state = HEALTH_DOWN;
	if (failures > h->failures)
		h->failures = failures;
	h->backoff_ms = backoff_ms;
	h->down_until_ms = until;
	snprintf(h->last_error, sizeof(h->last_error), "%s", why ? why : "");
	return true;
}

enum health_verdict
health_host_check(const struct health_host *h, uint64_t now)
{
	if (h == NULL || h->state != HEALTH_DOWN)
		return HEALTH_TRY;
	if (now < h->down_until_ms || h->probing)
		return HEALTH_SKIP;
	return HEALTH_PROBE;
}

void
health_addr_key(const struct sockaddr *sa, char *out, size_t outlen)
{
	char ip[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
		snprintf(out, outlen, "[%s]:%u", ip, (unsigned)ntohs(s6->sin6_port));
	} else if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		snprintf(out, outlen, "%s:%u", ip, (unsigned)ntohs(s4->sin_port));
	} else
		snprintf(out, outlen, "?");
}

const char *
health_state_name(enum health_state s)
{
	switch (s) {
	case HEALTH_UNKNOWN:
		return "unknown";
	case HEALTH_UP:
		return "up";
	case HEALTH_DOWN:
		return "down";
	}
	return "?";
}

void
health_host_policy(struct health_host *h, const char *policy, const char *refused,
    bool keep_refused, uint64_t now)
{
	snprintf(h->policy, sizeof(h->policy), "%s", policy);
	if (keep_refused)
		return;
	if (refused == NULL) {
		h->refused[0] = '\0';
		return;
	}
	snprintf(h->refused, sizeof(h->refused), "%s", refused);
	h->refused_ms = now;
}

/* ------------------------------------------------------------------ */
/* The table. */


struct health *
health_new(void)
{
	struct health *t = xcalloc(1, sizeof(*t));

	htab_init(&t->hosts, NULL);
	return t;
}

void
health_free(struct health *t)
{
	struct htab_iter it;
	struct htab_node *n;

	if (t == NULL)
		return;
	HTAB_FOREACH(n, &t->hosts, &it)
		free(HTAB_ENTRY(n, struct health_host, node));
	htab_free(&t->hosts);
	free(t);
}

struct health_host *
health_find(struct health *t, const char *addr)
{
	struct htab_node *n = htab_find(&t->hosts, addr);

	return n != NULL ? HTAB_ENTRY(n, struct health_host, node) : NULL;
}

struct health_host *
health_get(struct health *t, const char *addr, const char *name)
{
	struct health_host *h;

	if ((h = health_find(t, addr)) == NULL) {
		h = xcalloc(1, sizeof(*h));
		snprintf(h->addr, sizeof(h->addr), "%s", addr);
		htab_insert(&t->hosts, &h->node, h->addr);
	}
	if (name != NULL && *name != '\0')
		snprintf(h->name, sizeof(h->name), "%s", name);
	return h;
}

void
health_foreach(struct health *t, void (*cb)(void *arg, const struct health_host *h), void *arg)
{
	struct htab_iter it;
	struct htab_node *n;

	HTAB_FOREACH(n, &t->hosts, &it)
		cb(arg, HTAB_ENTRY(n, struct health_host, node));
}

size_t
health_count(const struct health *t)
{
	return htab_count(&t->hosts);
}

/* Whether host (as relayctl gives it) names entry h. */
static bool
health_matches(const struct health_host *h, const char *host)
{
	size_t n;

	if (strcmp(h->addr, host) == 0 || util_strcasecmp(h->name, host) == 0)
		return true;
	/* An address without port: "192.0.2.1" matches "192.0.2.1:25";
	 * "::1" and "[::1]" match "[::1]:25". */
	n = strlen(host);
	if (n > 0 && host[0] == '[' && host[n - 1] == ']')
		return strncmp(h->addr, host, n) == 0 && h->addr[n] == ':';
	if (h->addr[0] == '[')
		return strncmp(h->addr + 1, host, n) == 0 && h->addr[n + 1] == ']';
	return strncmp(h->addr, host, n) == 0 && h->addr[n] == ':';
}

int
health_reset(struct health *t, const char *host)
{
	struct health_host *h;
	struct htab_iter it;
	struct htab_node *n;
	int found = 0;

	HTAB_FOREACH(n, &t->hosts, &it) {
		h = HTAB_ENTRY(n, struct health_host, node);
		if (!health_matches(h, host))
			continue;
		h->state = HEALTH_UNKNOWN;
		h->failures = 0;
		h->backoff_ms = 0;
		h->down_until_ms = 0;
		h->probing = false;
		h->last_error[0] = '\0';
		h->refused[0] = '\0';
		found = 1;
	}
	return found ? 0 : RELAY_ENOENT;
}

void
health_expire(struct health *t, uint64_t cutoff_ms)
{
	struct health_host *h;
	struct htab_iter it;
	struct htab_node *n;

	HTAB_FOREACH(n, &t->hosts, &it) {
		h = HTAB_ENTRY(n, struct health_host, node);
		if (h->state != HEALTH_DOWN && !h->probing && h->last_attempt_ms < cutoff_ms &&
		    h->refused_ms < cutoff_ms) {
			htab_remove(&t->hosts, n);
			free(h);
		}
	}
}
