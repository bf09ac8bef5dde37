/*
 * deliver.c - the deliver module's pool: the public API of deliver.h, the
 * FIFO of requests waiting for a connection slot, the open connections
 * (busy and idle, for reuse), the global and per-host connection limits,
 * and shutdown.  It keeps no memory of TLS failures: under every policy a
 * server that offers STARTTLS gets TLS or no mail (deliver_session.c).
 *
 * Scheduling: deliver_start() only queues; a zero-delay timer ("kick") runs
 * the dispatcher on the loop, so a request's callback never fires inside
 * deliver_start().  The dispatcher walks the FIFO in order and starts every
 * request that can start: on an idle connection with the same key (address,
 * port, TLS policy, auth user, and the exchanger name under "verify"), else
 * on a new connection if the global limit (router.max_connections) and the
 * per-host limit (router.max_connections_per_host, host = address) allow,
 * closing idle connections of other keys to make room.  A request that cannot
 * start waits without blocking those behind it that can.
 *
 * Shutdown: waiting requests fail with HOST_FAIL "4.3.2 shutting down", idle
 * connections QUIT, busy ones are aborted the same way unless the final
 * reply to the body is awaited (aborting then could duplicate the message):
 * those finish (bounded by data_done_timeout) and then close.
 *
 * Never: call a request's callback from inside deliver_start(), or let a
 * request's callback free the deliver object (deliver_free() needs
 * deliver_shutdown() to have finished).
 */
#include "deliver/deliver_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

static void deliver_kick(struct deliver *d);

/* ------------------------------------------------------------------ */
/* TLS context */

static void
deliver_tls_setup(struct deliver *d)
{
	const char *ca = d->conf->deliver.ca_file;
	char err[256];
	SSL_CTX *ctx;

	if (d->tls_ctx != NULL && ((ca == NULL && d->tls_ctx_ca == NULL) ||
	    (ca != NULL && d->tls_ctx_ca != NULL && strcmp(ca, d->tls_ctx_ca) == 0)))
		return;
	ctx = io_tls_client_ctx(ca, err, sizeof(err));
	if (ctx == NULL) {
		log_event(LOG_ERR, "deliver_tls_context", "error", err, NULL);
		if (d->tls_ctx != NULL)
			return;     /* keep the one that worked */
		return;
	}
	if (d->tls_ctx != NULL)
		SSL_CTX_free(d->tls_ctx);   /* sessions in progress hold their own reference */
	d->tls_ctx = ctx;
	free(d->tls_ctx_ca);
	d->tls_ctx_ca = ca != NULL ? xstrdup(ca) : NULL;
}

/* ------------------------------------------------------------------ */
/* Life cycle */

static uint64_t
deliver_default_now(void)
{
	return util_mono_ms();
}

struct deliver *
deliver_new(uv_loop_t *loop, struct conf *conf)
{
	struct deliver *d = xcalloc(1, sizeof(*d));

	d->loop = loop;
	d->conf = conf_ref(conf);
	d->now = deliver_default_now;
	TAILQ_INIT(&d->waiting);
	TAILQ_INIT(&d->conns);
	TAILQ_INIT(&d->idle);
	uv_timer_init(loop, &d->kick);
	d->kick.data = d;
	deliver_tls_setup(d);
	return d;
}

void
deliver_reload(struct deliver *d, struct conf *conf)
{
	struct conf *old = d->conf;

	d->conf = conf_ref(conf);
	conf_unref(old);
	deliver_tls_setup(d);
	deliver_kick(d);        /* limits may have grown */
}

static void
deliver_check_done(struct deliver *d)
{
	void (*done)(void *) = d->shutdown_done;

	if (!d->shutting_down || !d->kick_closed || d->nconns > 0 || done == NULL)
		return;
	d->shutdown_done = NULL;
	done(d->shutdown_arg);
}

static void
deliver_kick_closed(uv_handle_t *h)
{
	struct deliver *d = h->data;

	d->kick_closed = true;
	deliver_check_done(d);
}

void
deliver_free(struct deliver *d)
{
	if (d == NULL)
		return;
	if (!d->kick_closed || d->nconns > 0 || !TAILQ_EMPTY(&d->waiting))
		fatalx("%s: deliver_shutdown() has not finished", __func__);
	deliver_auth_release(d);
	if (d->tls_ctx != NULL)
		SSL_CTX_free(d->tls_ctx);
	free(d->tls_ctx_ca);
	conf_unref(d->conf);
	free(d);
}

void
deliver_req_clear(struct deliver_req *req)
{
	for (size_t i = 0; i < req->nrcpts; i++) {
		free(req->rcpts[i].reply);
		req->rcpts[i].reply = NULL;
	}
}

/* ------------------------------------------------------------------ */
/* Requests */

static void
deliver_txn_result(struct deliver_txn *t, struct deliver_result *res, const char *status,
    const char *text)
{
	const struct deliver_req *req = t->req;

	memset(res, 0, sizeof(*res));
	res->status = DELIVER_HOST_FAIL;
	res->io_err = IO_ERR_OTHER;
	snprintf(res->status_code, sizeof(res->status_code), "%s", status);
	snprintf(res->reply, sizeof(res->reply), "%s", text);
	if (req->addr.ss_family == AF_INET6)
		uv_ip6_name((const struct sockaddr_in6 *)&req->addr, res->ip, sizeof(res->ip));
	else
		uv_ip4_name((const struct sockaddr_in *)&req->addr, res->ip, sizeof(res->ip));
}

int
deliver_start(struct deliver *d, struct deliver_req *req, deliver_cb *cb, void *arg)
{
	struct deliver_txn *t;
	char ip[64];
	int port;

	if (d->shutting_down)
		return RELAY_ECLOSED;
	if (req == NULL || cb == NULL || req->msg_path == NULL || req->nrcpts == 0 ||
	    req->rcpts == NULL || (req->addr.ss_family != AF_INET && req->addr.ss_family != AF_INET6))
		return RELAY_EINVAL;
	if (req->auth_user != NULL && req->auth_user[0] == '\0')
		return RELAY_EINVAL;

	t = xcalloc(1, sizeof(*t));
	t->d = d;
	t->req = req;
	t->cb = cb;
	t->arg = arg;
	if (req->addr.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&req->addr;

		uv_ip6_name(a, ip, sizeof(ip));
		port = ntohs(a->sin6_port);
	} else {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&req->addr;

		uv_ip4_name(a, ip, sizeof(ip));
		port = ntohs(a->sin_port);
	}
	snprintf(t->host_ip, sizeof(t->host_ip), "%s", ip);
	snprintf(t->key, sizeof(t->key), "%s|%d|%s|%s|%s", ip, port, conf_tls_name(req->tls),
	    req->auth_user != NULL ? req->auth_user : "",
	    req->tls == CONF_TLS_VERIFY && req->host != NULL ? req->host : "");
	TAILQ_INSERT_TAIL(&d->waiting, t, entry);
	deliver_kick(d);
	return 0;
}

void
deliver_pool_finish(struct deliver *d, struct deliver_txn *t, const struct deliver_result *res)
{
	deliver_cb *cb = t->cb;
	struct deliver_req *req = t->req;
	void *arg = t->arg;

	free(t);
	cb(arg, req, res);
}

void
deliver_pool_retry(struct deliver *d, struct deliver_txn *t)
{
	if (d->shutting_down) {
		struct deliver_result res;

		deliver_txn_result(t, &res, "4.3.2", "shutting down");
		deliver_pool_finish(d, t, &res);
		return;
	}
	TAILQ_INSERT_HEAD(&d->waiting, t, entry);
	deliver_kick(d);
}

/* ------------------------------------------------------------------ */
/* Connections */

static struct deliver_conn *
deliver_conn_new(struct deliver *d, const struct deliver_txn *t)
{
	struct deliver_conn *c = xcalloc(1, sizeof(*c));

	c->magic = DELIVER_MAGIC_CONN;
	c->d = d;
	snprintf(c->key, sizeof(c->key), "%s", t->key);
	snprintf(c->host_ip, sizeof(c->host_ip), "%s", t->host_ip);
	TAILQ_INSERT_TAIL(&d->conns, c, entry);
	d->nconns++;
	d->nconnects++;
	return c;
}

void
deliver_pool_idle(struct deliver *d, struct deliver_conn *c)
{
	if (c->magic != DELIVER_MAGIC_CONN)
		fatalx("%s: bad connection", __func__);
	if (c->idle)
		fatalx("%s: connection already idle", __func__);
	if (d->shutting_down) {
		deliver_session_close(c);
		return;
	}
	c->finishing = false;
	c->idle = true;
	c->idle_since = d->now();
	TAILQ_INSERT_TAIL(&d->idle, c, idle_entry);
	deliver_kick(d);
}

void
deliver_pool_gone(struct deliver *d, struct deliver_conn *c)
{
	if (c->magic != DELIVER_MAGIC_CONN)
		fatalx("%s: bad connection", __func__);
	if (c->idle)
		TAILQ_REMOVE(&d->idle, c, idle_entry);
	TAILQ_REMOVE(&d->conns, c, entry);
	d->nconns--;
	c->magic = 0;
	free(c);
	if (d->shutting_down)
		deliver_check_done(d);
	else
		deliver_kick(d);
}

static void
deliver_unidle(struct deliver *d, struct deliver_conn *c)
{
	TAILQ_REMOVE(&d->idle, c, idle_entry);
	c->idle = false;
}

static struct deliver_conn *
deliver_find_idle(struct deliver *d, const char *key)
{
	struct deliver_conn *c;

	TAILQ_FOREACH(c, &d->idle, idle_entry)
		if (strcmp(c->key, key) == 0)
			return c;
	return NULL;
}

/* A connection with key that is finishing a transaction and not yet counted on. */
static struct deliver_conn *
deliver_find_finishing(struct deliver *d, const char *key)
{
	struct deliver_conn *c;

	TAILQ_FOREACH(c, &d->conns, entry)
		if (c->finishing && !c->reserved && strcmp(c->key, key) == 0)
			return c;
	return NULL;
}

static unsigned
deliver_host_count(struct deliver *d, const char *host_ip)
{
	struct deliver_conn *c;
	unsigned n = 0;

	TAILQ_FOREACH(c, &d->conns, entry)
		if (strcmp(c->host_ip, host_ip) == 0)
			n++;
	return n;
}

/* Close the oldest idle connection (of host_ip if given) to make room. */
static bool
deliver_close_idle(struct deliver *d, const char *host_ip)
{
	struct deliver_conn *c;

	TAILQ_FOREACH(c, &d->idle, idle_entry)
		if (host_ip == NULL || strcmp(c->host_ip, host_ip) == 0) {
			deliver_unidle(d, c);
			deliver_session_close(c);
			return true;
		}
	return false;
}

static void
deliver_dispatch(struct deliver *d)
{
	unsigned max = d->conf->router.max_connections;
	unsigned max_host = d->conf->router.max_connections_per_host;
	struct deliver_txn *t, *next;
	struct deliver_conn *c;

	TAILQ_FOREACH(c, &d->conns, entry)
		c->reserved = false;
	for (t = TAILQ_FIRST(&d->waiting); t != NULL && !d->shutting_down; t = next) {
		next = TAILQ_NEXT(t, entry);
		if (!t->no_reuse && (c = deliver_find_finishing(d, t->key)) != NULL) {
			/* Its RSET is on the way: wait for it rather than connect again. */
			c->reserved = true;
			continue;
		}
		c = t->no_reuse ? NULL : deliver_find_idle(d, t->key);
		if (c != NULL) {
			TAILQ_REMOVE(&d->waiting, t, entry);
			deliver_unidle(d, c);
			c->ntxn++;
			deliver_session_reuse(c, t);
			/* t may have finished (and "next" with it, had it been queued
			 * after a retry): restart from the head. */
			next = TAILQ_FIRST(&d->waiting);
			continue;
		}
		if (max > 0 && d->nconns >= max && !deliver_close_idle(d, NULL))
			continue;
		if (max_host > 0 && deliver_host_count(d, t->host_ip) >= max_host &&
		    !deliver_close_idle(d, t->host_ip))
			continue;
		TAILQ_REMOVE(&d->waiting, t, entry);
		c = deliver_conn_new(d, t);
		c->ntxn++;
		deliver_session_open(c, t);
		next = TAILQ_FIRST(&d->waiting);
	}
}

static void
deliver_shutdown_run(struct deliver *d)
{
	struct deliver_txn *t;
	struct deliver_conn *c, *cnext;
	struct deliver_result res;

	while ((t = TAILQ_FIRST(&d->waiting)) != NULL) {
		TAILQ_REMOVE(&d->waiting, t, entry);
		deliver_txn_result(t, &res, "4.3.2", "shutting down");
		deliver_pool_finish(d, t, &res);
	}
	for (c = TAILQ_FIRST(&d->conns); c != NULL; c = cnext) {
		cnext = TAILQ_NEXT(c, entry);
		if (c->idle) {
			deliver_unidle(d, c);
			deliver_session_close(c);
		} else
			deliver_session_abort(c);
	}
	if (!uv_is_closing((uv_handle_t *)&d->kick))
		uv_close((uv_handle_t *)&d->kick, deliver_kick_closed);
}

static void
deliver_kick_cb(uv_timer_t *h)
{
	struct deliver *d = h->data;

	if (d->shutting_down)
		deliver_shutdown_run(d);
	else
		deliver_dispatch(d);
}

static void
deliver_kick(struct deliver *d)
{
	if (uv_is_closing((uv_handle_t *)&d->kick) || uv_is_active((uv_handle_t *)&d->kick))
		return;
	uv_timer_start(&d->kick, deliver_kick_cb, 0, 0);
}

void
deliver_shutdown(struct deliver *d, void (*done)(void *arg), void *arg)
{
	if (d->shutting_down)
		fatalx("%s: called twice", __func__);
	d->shutting_down = true;
	d->shutdown_done = done;
	d->shutdown_arg = arg;
	/* The work runs from the kick, never inside a request's callback. */
	if (uv_is_active((uv_handle_t *)&d->kick))
		uv_timer_stop(&d->kick);
	uv_timer_start(&d->kick, deliver_kick_cb, 0, 0);
}
