/*
 * deliver.c - the deliver module's pool: the public API of deliver.h, the
 * requests waiting for a connection slot, the open connections (busy and
 * idle, for reuse), the global and per-host connection limits, and shutdown.
 * It keeps no memory of TLS failures: under every policy a server that
 * offers STARTTLS gets TLS or no mail (deliver_session.c).
 *
 * Waiting requests are grouped by connection key (address, port, TLS policy,
 * auth user, and the exchanger name under "verify"): a struct deliver_key,
 * found by name in a small hash table, holds its FIFO and its connections;
 * a struct deliver_host per address counts that address's connections for
 * router.max_connections_per_host.  Keys with waiting requests take turns in
 * d->ready.
 *
 * Scheduling: deliver_start() only queues; a zero-delay timer ("kick") runs
 * the dispatcher on the loop, so a request's callback never fires inside
 * deliver_start().  A dispatch pass goes round the keys that have waiting
 * requests, starting one request per key per turn (round-robin: a key with
 * thousands waiting does not starve the others), in FIFO order within a key:
 * on an idle connection of the key (a completed transaction leaves its
 * connection idle at once, with no RSET: the next MAIL goes straight out);
 * else, when one of the key's connections is finishing (the RSET after a
 * transaction that did not complete is out), the request waits for it; else
 * on a new connection if the global limit (router.max_connections) and the
 * per-host limit (router.max_connections_per_host) allow, closing idle
 * connections (of the same host, else the oldest) to make room.  A key that
 * cannot start its next request leaves the pass: the requests behind it
 * could not either, and other keys are not held up.  A pass costs O(keys +
 * connections + requests started), never a walk of every waiting request.
 *
 * Connections that left the pool and wait for their QUIT to be written keep
 * their socket meanwhile: d->nquitting counts them, and past
 * DELIVER_QUITTING_MAX a connection closes without QUIT (a burst of idle
 * connections closed to make room, or servers that stop reading, cannot
 * hold more descriptors than that).
 *
 * Shutdown: waiting requests fail with HOST_FAIL "4.3.2 shutting down", idle
 * connections QUIT, busy ones are aborted the same way unless the final
 * reply to the body is awaited (aborting then could duplicate the message):
 * those finish (bounded by data_done_timeout) and then close.  It is done
 * once the last QUIT is out (or given up) as well.
 *
 * A front made by deliver_new_thread() (d->thread set) holds no pool: its
 * deliver_start/reload/shutdown/free pass on to deliver_thread.c, whose
 * thread runs a pool of this file on its own loop.
 *
 * Never: call a request's callback from inside deliver_start(), or let a
 * request's callback free the deliver object (deliver_free() needs
 * deliver_shutdown() to have finished).  A key or host is freed only when
 * nothing refers to it; the dispatcher holds the key it works on.
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
/* Keys and hosts */

static struct deliver_host *
deliver_host_get(struct deliver *d, const char *ip)
{
	struct htab_node *n = htab_find(&d->hosts, ip);
	struct deliver_host *h;

	if (n != NULL)
		return HTAB_ENTRY(n, struct deliver_host, node);
	h = xcalloc(1, sizeof(*h));
	snprintf(h->ip, sizeof(h->ip), "%s", ip);
	TAILQ_INIT(&h->idle);
	htab_insert(&d->hosts, &h->node, h->ip);
	return h;
}

/* The key called name (of address ip), made if new; the caller takes its reference. */
static struct deliver_key *
deliver_key_get(struct deliver *d, const char *name, const char *ip)
{
	struct htab_node *n = htab_find(&d->keys, name);
	size_t len = strlen(name);
	struct deliver_key *k;

	if (n != NULL)
		return HTAB_ENTRY(n, struct deliver_key, node);
	k = xcalloc(1, sizeof(*k) + len + 1);
	memcpy(k->name, name, len + 1);
	TAILQ_INIT(&k->waiting);
	TAILQ_INIT(&k->conns);
	TAILQ_INIT(&k->idle);
	k->host = deliver_host_get(d, ip);
	k->host->nkeys++;
	htab_insert(&d->keys, &k->node, k->name);
	return k;
}

/* Drop a reference to k: the last one frees it (and its host if it was the host's last key). */
static void
deliver_key_unref(struct deliver *d, struct deliver_key *k)
{
	struct deliver_host *h = k->host;

	if (k->refs == 0)
		fatalx("%s: %s: no reference", __func__, k->name);
	if (--k->refs > 0)
		return;
	if (k->nwaiting > 0 || k->queued || !TAILQ_EMPTY(&k->conns))
		fatalx("%s: %s: still in use", __func__, k->name);
	htab_remove(&d->keys, &k->node);
	free(k);
	if (--h->nkeys == 0) {
		if (h->nconns > 0)
			fatalx("%s: %s: connections without a key", __func__, h->ip);
		htab_remove(&d->hosts, &h->node);
		free(h);
	}
}

/* Queue t on its key (at the head for a retry) and give the key a turn. */
static void
deliver_key_push(struct deliver *d, struct deliver_txn *t, bool head)
{
	struct deliver_key *k = t->key;

	if (head)
		TAILQ_INSERT_HEAD(&k->waiting, t, entry);
	else
		TAILQ_INSERT_TAIL(&k->waiting, t, entry);
	k->nwaiting++;
	d->nwaiting++;
	if (!k->queued) {
		TAILQ_INSERT_TAIL(&d->ready, k, ready_entry);
		k->queued = true;
	}
}

static void
deliver_key_pop(struct deliver *d, struct deliver_txn *t)
{
	TAILQ_REMOVE(&t->key->waiting, t, entry);
	t->key->nwaiting--;
	d->nwaiting--;
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
	TAILQ_INIT(&d->ready);
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

	if (d->thread != NULL) {
		deliver_thread_reload(d->thread, conf);
		return;
	}
	d->conf = conf_ref(conf);
	conf_unref(old);
	deliver_tls_setup(d);
	deliver_kick(d);        /* limits may have grown */
}

static void
deliver_check_done(struct deliver *d)
{
	void (*done)(void *) = d->shutdown_done;

	if (!d->shutting_down || !d->kick_closed || d->nconns > 0 || d->nquitting > 0 ||
	    done == NULL)
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
	if (d->thread != NULL) {
		deliver_thread_free(d->thread);
		free(d);
		return;
	}
	if (!d->kick_closed || d->nconns > 0 || d->nwaiting > 0 || d->nquitting > 0)
		fatalx("%s: deliver_shutdown() has not finished", __func__);
	if (htab_count(&d->keys) > 0 || htab_count(&d->hosts) > 0)
		fatalx("%s: %zu keys, %zu hosts left", __func__, htab_count(&d->keys),
		    htab_count(&d->hosts));
	htab_free(&d->keys);
	htab_free(&d->hosts);
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

const char *
deliver_policy_name(enum deliver_policy p)
{
	switch (p) {
	case DELIVER_POLICY_CONF:
		return "conf";
	case DELIVER_POLICY_DANE:
		return "dane";
	case DELIVER_POLICY_DANE_UNAUTH:
		return "dane-unauth";
	case DELIVER_POLICY_MTA_STS:
		return "mta-sts";
	case DELIVER_POLICY_MTA_STS_TESTING:
		return "mta-sts-testing";
	}
	return "?";
}

/*
 * deliver_start()'s checks of req, and its connection key: name (and the
 * address as text in ip).  0, or RELAY_EINVAL.  Reads req only: the
 * delivery thread's front (deliver_thread.c) runs it on the caller's loop.
 */
int
deliver_req_key(const struct deliver_req *req, char *name, size_t namelen, char *ip, size_t iplen)
{
	char tlsa[TLSA_DIGEST_LEN] = "";
	const char *user, *host;
	int port, n;

	if (req == NULL || req->msg_path == NULL || req->nrcpts == 0 ||
	    req->rcpts == NULL || (req->addr.ss_family != AF_INET && req->addr.ss_family != AF_INET6))
		return RELAY_EINVAL;
	if (req->auth_user != NULL && req->auth_user[0] == '\0')
		return RELAY_EINVAL;
	if (req->policy == DELIVER_POLICY_DANE &&
	    (req->ntlsa == 0 || req->tlsa == NULL || req->host == NULL || req->host[0] == '\0'))
		return RELAY_EINVAL;
	if ((req->policy == DELIVER_POLICY_MTA_STS || req->policy == DELIVER_POLICY_MTA_STS_TESTING) &&
	    (req->host == NULL || req->host[0] == '\0'))
		return RELAY_EINVAL;

	if (req->addr.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&req->addr;

		uv_ip6_name(a, ip, iplen);
		port = ntohs(a->sin6_port);
	} else {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&req->addr;

		uv_ip4_name(a, ip, iplen);
		port = ntohs(a->sin_port);
	}
	/* user and host are length-prefixed: no two different ones share a key */
	user = req->auth_user != NULL ? req->auth_user : "";
	host = (req->tls == CONF_TLS_VERIFY || req->policy == DELIVER_POLICY_DANE ||
	    req->policy == DELIVER_POLICY_MTA_STS || req->policy == DELIVER_POLICY_MTA_STS_TESTING) &&
	    req->host != NULL ? req->host : "";
	/* a DANE session never shares a connection with one made under less,
	 * nor with one authenticated by another TLSA set */
	if (req->policy == DELIVER_POLICY_DANE)
		tlsa_digest(req->tlsa, req->ntlsa, tlsa);
	n = snprintf(name, namelen, "%s|%d|%s|%s%s%s|%zu:%s|%zu:%s", ip, port,
	    conf_tls_name(req->tls), deliver_policy_name(req->policy), tlsa[0] ? ":" : "", tlsa,
	    strlen(user), user, strlen(host), host);
	if (n < 0 || (size_t)n >= namelen)
		return RELAY_EINVAL;             /* a key cut short could merge two */
	return 0;
}

int
deliver_start(struct deliver *d, struct deliver_req *req, deliver_cb *cb, void *arg)
{
	struct deliver_txn *t;
	char ip[64], name[DELIVER_KEY_MAX];
	int rc;

	if (d->thread != NULL)
		return deliver_thread_start(d->thread, req, cb, arg);
	if (d->shutting_down)
		return RELAY_ECLOSED;
	if (cb == NULL)
		return RELAY_EINVAL;
	if ((rc = deliver_req_key(req, name, sizeof(name), ip, sizeof(ip))) != 0)
		return rc;
	t = xcalloc(1, sizeof(*t));
	t->d = d;
	t->req = req;
	t->cb = cb;
	t->arg = arg;
	t->key = deliver_key_get(d, name, ip);
	t->key->refs++;
	deliver_key_push(d, t, false);
	deliver_kick(d);
	return 0;
}

void
deliver_pool_finish(struct deliver *d, struct deliver_txn *t, const struct deliver_result *res)
{
	deliver_cb *cb = t->cb;
	struct deliver_req *req = t->req;
	struct deliver_key *k = t->key;
	void *arg = t->arg;

	free(t);
	cb(arg, req, res);
	deliver_key_unref(d, k);    /* after: a request the callback makes for k finds it */
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
	deliver_key_push(d, t, true);
	deliver_kick(d);
}

/* ------------------------------------------------------------------ */
/* Connections */

static struct deliver_conn *
deliver_conn_new(struct deliver *d, struct deliver_key *k)
{
	struct deliver_conn *c = xcalloc(1, sizeof(*c));

	c->magic = DELIVER_MAGIC_CONN;
	c->d = d;
	c->key = k;
	k->refs++;
	TAILQ_INSERT_TAIL(&k->conns, c, key_entry);
	k->host->nconns++;
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
	TAILQ_INSERT_TAIL(&c->key->idle, c, key_idle_entry);
	TAILQ_INSERT_TAIL(&c->key->host->idle, c, host_idle_entry);
	deliver_kick(d);
}

static void
deliver_unidle(struct deliver *d, struct deliver_conn *c)
{
	TAILQ_REMOVE(&d->idle, c, idle_entry);
	TAILQ_REMOVE(&c->key->idle, c, key_idle_entry);
	TAILQ_REMOVE(&c->key->host->idle, c, host_idle_entry);
	c->idle = false;
}

void
deliver_pool_gone(struct deliver *d, struct deliver_conn *c)
{
	struct deliver_key *k = c->key;

	if (c->magic != DELIVER_MAGIC_CONN)
		fatalx("%s: bad connection", __func__);
	if (c->idle)
		deliver_unidle(d, c);
	TAILQ_REMOVE(&d->conns, c, entry);
	d->nconns--;
	TAILQ_REMOVE(&k->conns, c, key_entry);
	k->host->nconns--;
	c->magic = 0;
	free(c);
	deliver_key_unref(d, k);
	if (d->shutting_down)
		deliver_check_done(d);
	else
		deliver_kick(d);
}

/* A quitting connection's socket is closed (io_set_closed_cb). */
static void
deliver_quit_closed(void *arg)
{
	struct deliver *d = arg;

	if (d->nquitting == 0)
		fatalx("%s: no connection quitting", __func__);
	d->nquitting--;
	deliver_check_done(d);
}

bool
deliver_pool_quit_begin(struct deliver *d, struct io *io)
{
	if (d->nquitting >= DELIVER_QUITTING_MAX)
		return false;
	d->nquitting++;
	io_set_closed_cb(io, deliver_quit_closed, d);
	return true;
}

/* Close the idle connection c (it leaves the pool at once). */
static void
deliver_close_idle(struct deliver *d, struct deliver_conn *c)
{
	deliver_unidle(d, c);
	deliver_session_close(c);
}

/*
 * Room for one more connection to host h within router.max_connections_per_host
 * and router.max_connections, closing idle connections to make it (the host's
 * own, oldest first, then the oldest of all).  False, closing nothing, when
 * not enough idle connections could be closed.
 */
static bool
deliver_make_room(struct deliver *d, struct deliver_host *h)
{
	unsigned max = d->conf->router.max_connections;
	unsigned max_host = d->conf->router.max_connections_per_host;
	struct deliver_conn *c;

	if ((max_host > 0 && h->nconns >= max_host && TAILQ_EMPTY(&h->idle)) ||
	    (max > 0 && d->nconns >= max && TAILQ_EMPTY(&d->idle)))
		return false;
	while (max_host > 0 && h->nconns >= max_host) {
		if ((c = TAILQ_FIRST(&h->idle)) == NULL)
			return false;   /* limits lowered by a reload: more busy ones than allowed */
		deliver_close_idle(d, c);
	}
	while (max > 0 && d->nconns >= max) {
		if ((c = TAILQ_FIRST(&d->idle)) == NULL)
			return false;
		deliver_close_idle(d, c);
	}
	return true;
}

/* ------------------------------------------------------------------ */
/* Dispatch */

/*
 * k's turn in pass d->pass: start its next request that can start.  True if
 * one started; false if none can in this pass (the requests behind a blocked
 * one would be blocked too: same key, same host, same limits).
 */
static bool
deliver_key_turn(struct deliver *d, struct deliver_key *k)
{
	struct deliver_txn *t, *next;
	struct deliver_conn *c;

	if (k->pass != d->pass) {
		k->pass = d->pass;
		k->cursor = TAILQ_FIRST(&k->waiting);
		k->finishing = 0;
		TAILQ_FOREACH(c, &k->conns, key_entry)
			if (c->finishing && !c->idle)
				k->finishing++;
	}
	for (t = k->cursor; t != NULL; t = next) {
		next = TAILQ_NEXT(t, entry);
		if (!t->no_reuse && (c = TAILQ_FIRST(&k->idle)) != NULL) {
			k->cursor = next;
			deliver_key_pop(d, t);
			deliver_unidle(d, c);
			c->ntxn++;
			deliver_session_reuse(c, t);
			return true;
		}
		if (!t->no_reuse && k->finishing > 0) {
			/* A connection's RSET (after a failed transaction) is on the way: t
			 * waits for it rather than connect again. */
			k->finishing--;
			continue;
		}
		if (!deliver_make_room(d, k->host)) {
			k->cursor = t;
			return false;
		}
		k->cursor = next;
		deliver_key_pop(d, t);
		c = deliver_conn_new(d, k);
		c->ntxn++;
		deliver_session_open(c, t);
		return true;
	}
	k->cursor = NULL;
	return false;
}

/*
 * One pass: the keys waiting now take turns, one request each per turn,
 * until none can start more.  A key that can start no more waits in d->ready
 * for the next pass (a connection going idle or away, a new request, a
 * reload: each kicks).  Callbacks may run inside a turn (a connection that
 * fails at once, a reused one that dies): a key they queue requests for goes
 * to d->ready, and the dispatcher's reference keeps the current key alive.
 */
static void
deliver_dispatch(struct deliver *d)
{
	struct deliver_keyq turns;
	struct deliver_key *k;
	bool started;

	d->pass++;
	TAILQ_INIT(&turns);
	TAILQ_CONCAT(&turns, &d->ready, ready_entry);
	while (!d->shutting_down && (k = TAILQ_FIRST(&turns)) != NULL) {
		TAILQ_REMOVE(&turns, k, ready_entry);
		k->queued = false;
		k->refs++;
		started = deliver_key_turn(d, k);
		if (!k->queued && k->nwaiting > 0) {
			if (started)
				TAILQ_INSERT_TAIL(&turns, k, ready_entry);
			else
				TAILQ_INSERT_TAIL(&d->ready, k, ready_entry);
			k->queued = true;
		}
		deliver_key_unref(d, k);
	}
	/* A callback started the shutdown: the rest are failed by deliver_shutdown_run(). */
	while ((k = TAILQ_LAST(&turns, deliver_keyq)) != NULL) {
		TAILQ_REMOVE(&turns, k, ready_entry);
		TAILQ_INSERT_HEAD(&d->ready, k, ready_entry);
	}
}

static void
deliver_shutdown_run(struct deliver *d)
{
	struct deliver_key *k;
	struct deliver_txn *t;
	struct deliver_conn *c, *cnext;
	struct deliver_result res;

	while ((k = TAILQ_FIRST(&d->ready)) != NULL) {
		TAILQ_REMOVE(&d->ready, k, ready_entry);
		k->queued = false;
		k->refs++;
		while ((t = TAILQ_FIRST(&k->waiting)) != NULL) {
			deliver_key_pop(d, t);
			deliver_txn_result(t, &res, "4.3.2", "shutting down");
			deliver_pool_finish(d, t, &res);
		}
		deliver_key_unref(d, k);
	}
	for (c = TAILQ_FIRST(&d->conns); c != NULL; c = cnext) {
		cnext = TAILQ_NEXT(c, entry);
		if (c->idle)
			deliver_close_idle(d, c);
		else
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
	if (d->thread != NULL) {
		deliver_thread_shutdown(d->thread, done, arg);
		return;
	}
	d->shutdown_done = done;
	d->shutdown_arg = arg;
	/* The work runs from the kick, never inside a request's callback. */
	if (uv_is_active((uv_handle_t *)&d->kick))
		uv_timer_stop(&d->kick);
	uv_timer_start(&d->kick, deliver_kick_cb, 0, 0);
}
