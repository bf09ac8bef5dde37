/*
 * submit_limits.c - the submission server's counters: connections per client
 * IP and in total, failed AUTH attempts per client IP (slow down, then
 * refuse) and per tried login from any IP (a short block that doubles while
 * the guessing goes on; addresses the login recently succeeded from are
 * exempt), messages and recipients per login per time window.
 *
 * Every decision is a pure function of the counters and the `now` passed in,
 * so the unit tests drive it from tables without a clock.  Windows are fixed:
 * one starts at the first event and ends `window` later.  Owns two small
 * string-keyed hash tables (common/htab); it must never sleep, read a clock
 * or log.  The tried-login table is keyed by the name as the AUTH gave it,
 * folded to lower case by the caller, so it holds names that do not exist
 * too: a block says nothing about whether the login is real.  With a
 * cluster (cluster/), what the other nodes counted is merged in (the
 * *_merge calls raise a count to the shared one), and the same pure
 * functions decide.  A connection whose address is not known yet (a PROXY
 * listener's, until its header) is counted in the total only
 * (submit_limits_conn_reserve).
 */
#include "submit/submit_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/htab.h"
#include "common/util.h"
#include "conf/conf.h"

struct submit_limits_entry {
	struct htab_node node;      /* in ips or logins, by key */
	unsigned conns;             /* (ip) open connections */
	unsigned auth_fails;        /* (ip) failures in the window */
	uint64_t auth_start;
	unsigned msgs, rcpts;       /* (login) accepted in the window */
	uint64_t rate_start;
	char key[];
};

/* A tried login: its failures from any address, its block, where it succeeded. */
struct submit_limits_tried {
	struct htab_node node;      /* in tried, by key */
	unsigned fails;             /* in the window, since the last block began */
	unsigned block_fails;       /* the failures that began the last block (shown) */
	uint64_t fail_start;
	unsigned blocks;            /* blocks in this streak (each twice as long) */
	uint64_t block_until;       /* 0: never blocked */
	struct submit_limits_known {
		char ip[64];        /* "": an empty slot */
		uint64_t at;
	} *known;                   /* [SUBMIT_LIMITS_KNOWN] after the first success, else NULL:
	                               names only guessed at stay small */
	char key[];
};

struct submit_limits {
	struct submit_limits_params p;
	struct htab ips, logins;    /* struct submit_limits_entry by IP, by login */
	struct htab tried;          /* struct submit_limits_tried by tried login */
	unsigned total_conns;
};


static struct submit_limits_entry *
submit_limits_find(const struct htab *t, const char *key)
{
	struct htab_node *n = htab_find(t, key);

	return n != NULL ? HTAB_ENTRY(n, struct submit_limits_entry, node) : NULL;
}

static struct submit_limits_entry *
submit_limits_get(struct htab *t, const char *key)
{
	struct submit_limits_entry *e = submit_limits_find(t, key);
	size_t len;

	if (e != NULL)
		return e;
	len = strlen(key);
	e = xcalloc(1, sizeof(*e) + len + 1);
	memcpy(e->key, key, len + 1);
	htab_insert(t, &e->node, e->key);
	return e;
}

static void
submit_limits_table_free(struct htab *t)
{
	struct htab_iter it;
	struct htab_node *n;

	HTAB_FOREACH(n, t, &it)
		free(HTAB_ENTRY(n, struct submit_limits_entry, node));
	htab_free(t);
}

static void
submit_limits_tried_free(struct htab *t)
{
	struct htab_iter it;
	struct htab_node *n;

	struct submit_limits_tried *e;

	HTAB_FOREACH(n, t, &it) {
		e = HTAB_ENTRY(n, struct submit_limits_tried, node);
		free(e->known);
		free(e);
	}
	htab_free(t);
}

struct submit_limits *
submit_limits_new(void)
{
	return xcalloc(1, sizeof(struct submit_limits));
}

void
submit_limits_free(struct submit_limits *l)
{
	if (l == NULL)
		return;
	submit_limits_table_free(&l->ips);
	submit_limits_table_free(&l->logins);
	submit_limits_tried_free(&l->tried);
	free(l);
}

void
submit_limits_set_params(struct submit_limits *l, const struct submit_limits_params *p)
{
	l->p = *p;
}

void
submit_limits_params_from_conf(struct submit_limits_params *p, const struct conf *c)
{
	p->max_connections = c->submit.max_connections;
	p->max_connections_per_ip = c->submit.max_connections_per_ip;
	p->auth_fail_delay_after = c->submit.auth_fail_delay_after;
	p->auth_fail_limit = c->submit.auth_fail_limit;
	p->auth_fail_window = c->submit.auth_fail_window;
	p->auth_login_fail_limit = c->submit.auth_login_fail_limit;
	p->auth_login_block = c->submit.auth_login_block;
	p->auth_login_block_max = c->submit.auth_login_block_max;
	p->auth_login_known_ttl = c->submit.auth_login_known_ttl;
	p->login_max_messages = c->submit.login_max_messages;
	p->login_max_recipients = c->submit.login_max_recipients;
	p->login_rate_window = c->submit.login_rate_window;
}

enum submit_conn_verdict
submit_limits_conn_open(struct submit_limits *l, const char *ip)
{
	struct submit_limits_entry *e;

	if (l->p.max_connections > 0 && l->total_conns >= l->p.max_connections)
		return SUBMIT_CONN_TOTAL;
	e = submit_limits_find(&l->ips, ip);
	if (e != NULL && l->p.max_connections_per_ip > 0 && e->conns >= l->p.max_connections_per_ip)
		return SUBMIT_CONN_PER_IP;
	if (e == NULL)
		e = submit_limits_get(&l->ips, ip);
	e->conns++;
	l->total_conns++;
	return SUBMIT_CONN_OK;
}

enum submit_conn_verdict
submit_limits_conn_reserve(struct submit_limits *l)
{
	if (l->p.max_connections > 0 && l->total_conns >= l->p.max_connections)
		return SUBMIT_CONN_TOTAL;
	l->total_conns++;
	return SUBMIT_CONN_OK;
}

void
submit_limits_conn_unreserve(struct submit_limits *l)
{
	if (l->total_conns == 0)
		fatalx("%s: no connection reserved", __func__);
	l->total_conns--;
}

void
submit_limits_conn_close(struct submit_limits *l, const char *ip)
{
	struct submit_limits_entry *e = submit_limits_find(&l->ips, ip);

	if (e == NULL || e->conns == 0 || l->total_conns == 0)
		fatalx("%s: no open connection from %s", __func__, ip);
	e->conns--;
	l->total_conns--;
}

unsigned
submit_limits_conn_count(const struct submit_limits *l, const char *ip)
{
	const struct submit_limits_entry *e;

	if (ip == NULL)
		return l->total_conns;
	e = submit_limits_find(&l->ips, ip);
	return e ? e->conns : 0;
}

/* Restart the AUTH failure window of e if it ended. */
static void
submit_limits_auth_window(const struct submit_limits *l, struct submit_limits_entry *e, uint64_t now)
{
	if (e->auth_fails > 0 && now - e->auth_start >= l->p.auth_fail_window)
		e->auth_fails = 0;
}

bool
submit_limits_auth_allowed(struct submit_limits *l, const char *ip, uint64_t now)
{
	struct submit_limits_entry *e = submit_limits_find(&l->ips, ip);

	if (e == NULL)
		return true;
	submit_limits_auth_window(l, e, now);
	return l->p.auth_fail_limit == 0 || e->auth_fails < l->p.auth_fail_limit;
}

uint64_t
submit_limits_auth_failed(struct submit_limits *l, const char *ip, uint64_t now, bool *refused)
{
	struct submit_limits_entry *e = submit_limits_get(&l->ips, ip);
	uint64_t delay;

	submit_limits_auth_window(l, e, now);
	if (e->auth_fails == 0)
		e->auth_start = now;
	e->auth_fails++;
	*refused = l->p.auth_fail_limit > 0 && e->auth_fails >= l->p.auth_fail_limit;
	if (e->auth_fails <= l->p.auth_fail_delay_after)
		return 0;
	delay = (uint64_t)(e->auth_fails - l->p.auth_fail_delay_after) * SUBMIT_AUTH_DELAY_STEP_MS;
	return delay < SUBMIT_AUTH_DELAY_MAX_MS ? delay : SUBMIT_AUTH_DELAY_MAX_MS;
}

/* ---- failed AUTH per tried login ---- */

static struct submit_limits_tried *
submit_limits_tried_find(const struct submit_limits *l, const char *login)
{
	struct htab_node *n = htab_find(&l->tried, login);

	return n != NULL ? HTAB_ENTRY(n, struct submit_limits_tried, node) : NULL;
}

static struct submit_limits_tried *
submit_limits_tried_get(struct submit_limits *l, const char *login)
{
	struct submit_limits_tried *t = submit_limits_tried_find(l, login);
	size_t len;

	if (t != NULL)
		return t;
	len = strlen(login);
	t = xcalloc(1, sizeof(*t) + len + 1);
	memcpy(t->key, login, len + 1);
	htab_insert(&l->tried, &t->node, t->key);
	return t;
}

/* Did login succeed from ip within auth_login_known_ttl? */
static bool
submit_limits_tried_known(const struct submit_limits *l, const struct submit_limits_tried *t,
    const char *ip, uint64_t now)
{
	size_t i;

	if (l->p.auth_login_known_ttl == 0 || t->known == NULL)
		return false;
	for (i = 0; i < SUBMIT_LIMITS_KNOWN; i++)
		if (t->known[i].ip[0] != '\0' && now - t->known[i].at < l->p.auth_login_known_ttl &&
		    strcmp(t->known[i].ip, ip) == 0)
			return true;
	return false;
}

/* Forget failures whose window ended (not while a block runs), and a streak
 * of blocks a whole window after the last one ended. */
static void
submit_limits_tried_window(const struct submit_limits *l, struct submit_limits_tried *t,
    uint64_t now)
{
	if (now < t->block_until)
		return;
	if (t->fails > 0 && now - t->fail_start >= l->p.auth_fail_window)
		t->fails = 0;
	if (t->blocks > 0 && now - t->block_until >= l->p.auth_fail_window)
		t->blocks = 0;
}

bool
submit_limits_login_blocked(struct submit_limits *l, const char *login, const char *ip,
    uint64_t now, uint64_t *until)
{
	struct submit_limits_tried *t = submit_limits_tried_find(l, login);

	if (t == NULL || now >= t->block_until || submit_limits_tried_known(l, t, ip, now))
		return false;
	*until = t->block_until;
	return true;
}

uint64_t
submit_limits_login_failed(struct submit_limits *l, const char *login, uint64_t now)
{
	struct submit_limits_tried *t;
	uint64_t len;
	unsigned i;

	if (l->p.auth_login_fail_limit == 0)
		return 0;
	t = submit_limits_tried_get(l, login);
	if (now < t->block_until)       /* from an exempt address: the block stands */
		return 0;
	submit_limits_tried_window(l, t, now);
	if (t->fails == 0)
		t->fail_start = now;
	if (++t->fails < l->p.auth_login_fail_limit)
		return 0;
	len = l->p.auth_login_block;
	for (i = 0; i < t->blocks && len < l->p.auth_login_block_max; i++)
		len *= 2;
	if (len > l->p.auth_login_block_max)
		len = l->p.auth_login_block_max;
	if (len == 0)
		len = 1;
	t->blocks++;
	t->block_until = now + len;
	t->block_fails = t->fails;
	t->fails = 0;
	return len;
}

void
submit_limits_login_succeeded(struct submit_limits *l, const char *login, const char *ip,
    uint64_t now)
{
	struct submit_limits_tried *t;
	size_t i, slot = 0;

	if (l->p.auth_login_known_ttl == 0 || l->p.auth_login_fail_limit == 0)
		return;
	t = submit_limits_tried_get(l, login);
	if (t->known == NULL)
		t->known = xcalloc(SUBMIT_LIMITS_KNOWN, sizeof(*t->known));
	for (i = 0; i < SUBMIT_LIMITS_KNOWN; i++) {
		if (strcmp(t->known[i].ip, ip) == 0) {
			slot = i;
			break;
		}
		if (t->known[slot].ip[0] != '\0' &&
		    (t->known[i].ip[0] == '\0' || t->known[i].at < t->known[slot].at))
			slot = i;           /* an empty slot, else the oldest */
	}
	snprintf(t->known[slot].ip, sizeof(t->known[slot].ip), "%s", ip);
	t->known[slot].at = now;
}

void
submit_limits_auth_each(struct submit_limits *l, uint64_t now,
    void (*cb)(void *arg, const struct submit_limits_block *b), void *arg)
{
	struct submit_limits_block b;
	struct submit_limits_entry *e;
	struct submit_limits_tried *t;
	struct htab_iter it;
	struct htab_node *n;

	HTAB_FOREACH(n, &l->ips, &it) {
		e = HTAB_ENTRY(n, struct submit_limits_entry, node);
		submit_limits_auth_window(l, e, now);
		if (e->auth_fails == 0)
			continue;
		memset(&b, 0, sizeof(b));
		b.name = e->key;
		b.failures = e->auth_fails;
		b.blocked = l->p.auth_fail_limit > 0 && e->auth_fails >= l->p.auth_fail_limit;
		b.until = e->auth_start + l->p.auth_fail_window;
		cb(arg, &b);
	}
	HTAB_FOREACH(n, &l->tried, &it) {
		t = HTAB_ENTRY(n, struct submit_limits_tried, node);
		submit_limits_tried_window(l, t, now);
		if (t->fails == 0 && now >= t->block_until)
			continue;
		memset(&b, 0, sizeof(b));
		b.login = true;
		b.name = t->key;
		b.blocked = now < t->block_until;
		b.failures = b.blocked ? t->block_fails : t->fails;
		b.until = b.blocked ? t->block_until : t->fail_start + l->p.auth_fail_window;
		b.blocks = t->blocks;
		cb(arg, &b);
	}
}

int
submit_limits_auth_clear(struct submit_limits *l, const char *name, bool login, uint64_t now)
{
	struct submit_limits_entry *e;
	struct submit_limits_tried *t;

	if (!login) {
		e = submit_limits_find(&l->ips, name);
		if (e == NULL)
			return RELAY_ENOENT;
		submit_limits_auth_window(l, e, now);
		if (e->auth_fails == 0)
			return RELAY_ENOENT;
		e->auth_fails = 0;
		return 0;
	}
	t = submit_limits_tried_find(l, name);
	if (t == NULL)
		return RELAY_ENOENT;
	submit_limits_tried_window(l, t, now);
	if (t->fails == 0 && now >= t->block_until)
		return RELAY_ENOENT;
	t->fails = 0;
	t->blocks = 0;
	t->block_until = 0;
	return 0;
}

static void
submit_limits_rate_window(const struct submit_limits *l, struct submit_limits_entry *e, uint64_t now)
{
	if ((e->msgs > 0 || e->rcpts > 0) && now - e->rate_start >= l->p.login_rate_window)
		e->msgs = e->rcpts = 0;
}

enum submit_rate_verdict
submit_limits_login_check(struct submit_limits *l, const char *login, uint64_t now, unsigned nrcpt)
{
	struct submit_limits_entry *e = submit_limits_find(&l->logins, login);
	unsigned msgs = 0, rcpts = 0;

	if (e != NULL) {
		submit_limits_rate_window(l, e, now);
		msgs = e->msgs;
		rcpts = e->rcpts;
	}
	if (nrcpt == 0)
		return l->p.login_max_messages > 0 && msgs >= l->p.login_max_messages ?
		    SUBMIT_RATE_MESSAGES : SUBMIT_RATE_OK;
	return l->p.login_max_recipients > 0 && rcpts + nrcpt > l->p.login_max_recipients ?
	    SUBMIT_RATE_RECIPIENTS : SUBMIT_RATE_OK;
}

void
submit_limits_login_add(struct submit_limits *l, const char *login, uint64_t now, unsigned nrcpt)
{
	struct submit_limits_entry *e = submit_limits_get(&l->logins, login);

	submit_limits_rate_window(l, e, now);
	if (e->msgs == 0 && e->rcpts == 0)
		e->rate_start = now;
	e->msgs++;
	e->rcpts += nrcpt;
}

/* The start of a window of len ms that has ttl ms left at now. */
static uint64_t
submit_limits_window_start(uint64_t now, uint64_t len, uint64_t ttl)
{
	uint64_t gone = ttl < len ? len - ttl : 0;

	return now > gone ? now - gone : 0;
}

void
submit_limits_login_merge(struct submit_limits *l, const char *login, uint64_t now,
    unsigned msgs, unsigned rcpts, uint64_t ttl)
{
	struct submit_limits_entry *e;

	if ((msgs == 0 && rcpts == 0) || ttl == 0)
		return;
	e = submit_limits_get(&l->logins, login);
	submit_limits_rate_window(l, e, now);
	if (e->msgs == 0 && e->rcpts == 0)
		e->rate_start = submit_limits_window_start(now, l->p.login_rate_window, ttl);
	if (msgs > e->msgs)
		e->msgs = msgs;
	if (rcpts > e->rcpts)
		e->rcpts = rcpts;
}

void
submit_limits_auth_merge(struct submit_limits *l, const char *ip, uint64_t now, unsigned fails,
    uint64_t ttl)
{
	struct submit_limits_entry *e;

	if (fails == 0 || ttl == 0)
		return;
	e = submit_limits_get(&l->ips, ip);
	submit_limits_auth_window(l, e, now);
	if (e->auth_fails == 0)
		e->auth_start = submit_limits_window_start(now, l->p.auth_fail_window, ttl);
	if (fails > e->auth_fails)
		e->auth_fails = fails;
}

static void
submit_limits_table_expire(struct htab *t, bool (*stale)(const struct submit_limits *,
    const struct submit_limits_entry *, uint64_t), const struct submit_limits *l, uint64_t now)
{
	struct submit_limits_entry *e;
	struct htab_iter it;
	struct htab_node *n;

	HTAB_FOREACH(n, t, &it) {
		e = HTAB_ENTRY(n, struct submit_limits_entry, node);
		if (stale(l, e, now)) {
			htab_remove(t, n);
			free(e);
		}
	}
}

static bool
submit_limits_ip_stale(const struct submit_limits *l, const struct submit_limits_entry *e, uint64_t now)
{
	return e->conns == 0 && (e->auth_fails == 0 || now - e->auth_start >= l->p.auth_fail_window);
}

static bool
submit_limits_login_stale(const struct submit_limits *l, const struct submit_limits_entry *e,
    uint64_t now)
{
	return now - e->rate_start >= l->p.login_rate_window;
}

static bool
submit_limits_tried_stale(const struct submit_limits *l, struct submit_limits_tried *t,
    uint64_t now)
{
	size_t i;

	submit_limits_tried_window(l, t, now);
	if (t->fails > 0 || t->blocks > 0 || now < t->block_until)
		return false;
	for (i = 0; t->known != NULL && i < SUBMIT_LIMITS_KNOWN; i++)
		if (t->known[i].ip[0] != '\0' && now - t->known[i].at < l->p.auth_login_known_ttl)
			return false;
	return true;
}

void
submit_limits_expire(struct submit_limits *l, uint64_t now)
{
	struct submit_limits_tried *t;
	struct htab_iter it;
	struct htab_node *n;

	submit_limits_table_expire(&l->ips, submit_limits_ip_stale, l, now);
	submit_limits_table_expire(&l->logins, submit_limits_login_stale, l, now);
	HTAB_FOREACH(n, &l->tried, &it) {
		t = HTAB_ENTRY(n, struct submit_limits_tried, node);
		if (submit_limits_tried_stale(l, t, now)) {
			htab_remove(&l->tried, n);
			free(t->known);
			free(t);
		}
	}
}

size_t
submit_limits_entries(const struct submit_limits *l)
{
	return htab_count(&l->ips) + htab_count(&l->logins) + htab_count(&l->tried);
}
