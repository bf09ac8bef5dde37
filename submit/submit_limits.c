/*
 * submit_limits.c - the submission server's counters: connections per client
 * IP and in total, failed AUTH attempts per client IP (slow down, then
 * refuse), messages and recipients per login per time window.
 *
 * Every decision is a pure function of the counters and the `now` passed in,
 * so the unit tests drive it from tables without a clock.  Windows are fixed:
 * one starts at the first event and ends `window` later.  Owns two small
 * string-keyed hash tables (common/htab); it must never sleep, read a clock
 * or log.
 */
#include "submit/submit_int.h"

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

struct submit_limits {
	struct submit_limits_params p;
	struct htab ips, logins;    /* struct submit_limits_entry by IP, by login */
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

void
submit_limits_expire(struct submit_limits *l, uint64_t now)
{
	submit_limits_table_expire(&l->ips, submit_limits_ip_stale, l, now);
	submit_limits_table_expire(&l->logins, submit_limits_login_stale, l, now);
}

size_t
submit_limits_entries(const struct submit_limits *l)
{
	return htab_count(&l->ips) + htab_count(&l->logins);
}
