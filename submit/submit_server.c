/*
 * submit_server.c - the submission server as a whole: the listeners
 * (submit.listen: plaintext + STARTTLS, RFC 6409; submit.listen_tls: implicit
 * TLS, RFC 8314; IPv4 and IPv6), accepting connections into sessions, the
 * server TLS context, the senders map and the limits, SIGHUP reloads and
 * the graceful shutdown.
 *
 * Owns struct submit and everything hanging off it (see submit_int.h).  It
 * must never change a listener address at run time, never half-apply a
 * reload (a bad certificate or senders map keeps the old ones), and never
 * free itself while a libuv handle of its own is open.
 */
#include "submit/submit_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

#define SUBMIT_SWEEP_MS   60000

/* A shard whose front has decided to stop (its STOP may still be on its way). */
static bool
submit_server_stopping(const struct submit *srv)
{
	return srv->shutting_down || (srv->front != NULL &&
	    __atomic_load_n(&srv->front->stop_requested, __ATOMIC_ACQUIRE));
}

static void
submit_server_check_done(struct submit *srv)
{
	void (*done)(void *);

	if (!srv->shutting_down || srv->shutdown_done == NULL || srv->nlisteners_open > 0 ||
	    srv->sweep_open || __atomic_load_n(&srv->nsessions, __ATOMIC_RELAXED) > 0 ||
	    srv->auth_stop_open || submit_workers_busy(srv))
		return;
	done = srv->shutdown_done;
	srv->shutdown_done = NULL;
	done(srv->shutdown_arg);
}

static void submit_server_listener_closed(uv_handle_t *);

#define SUBMIT_PAUSE_MIN_MS 100
#define SUBMIT_PAUSE_MAX_MS 1000

static void submit_server_on_conn(uv_stream_t *, int);

/* The end of an accept pause: the listener again on a dup of spare_fd. */
static void
submit_server_resume(uv_timer_t *t)
{
	struct submit_listener *l = t->data;
	char count[24];
	int fd, rc;

	if (submit_server_stopping(l->srv))
		return;                 /* (listen() would revive a socket shut down) */
	if (l->tcp_open) {
		uv_timer_start(t, submit_server_resume, l->pause_ms, 0);
		return;
	}
	if ((fd = fcntl(l->spare_fd, F_DUPFD_CLOEXEC, 0)) < 0) {
		/* still out of descriptors (the one the pause gave back went to
		 * another listener, or another shard): as a failed accept */
		l->nfailed++;
		snprintf(count, sizeof(count), "%lu", l->nfailed);
		log_event(LOG_WARNING, "accept_error", "listener", l->text,
		    "error", uv_strerror(uv_translate_sys_error(errno)), "count", count, NULL);
		l->pause_ms = l->pause_ms * 2 > SUBMIT_PAUSE_MAX_MS ? SUBMIT_PAUSE_MAX_MS :
		    l->pause_ms * 2;
		uv_timer_start(t, submit_server_resume, l->pause_ms, 0);
		return;
	}
	uv_tcp_init(l->srv->loop, &l->tcp);
	l->tcp.data = l;
	l->tcp_open = true;
	l->srv->nlisteners_open++;
	if ((rc = uv_tcp_open(&l->tcp, fd)) != 0)
		close(fd);
	else
		rc = uv_listen((uv_stream_t *)&l->tcp, SUBMIT_BACKLOG, submit_server_on_conn);
	if (rc != 0) {
		snprintf(count, sizeof(count), "%lu", l->nfailed);
		log_event(LOG_WARNING, "accept_error", "listener", l->text,
		    "error", uv_strerror(rc), "count", count, NULL);
		uv_close((uv_handle_t *)&l->tcp, submit_server_listener_closed);
		uv_timer_start(t, submit_server_resume, l->pause_ms, 0);
	}
}

/* A session closed: its descriptor is free, so a paused listener resumes now. */
void
submit_server_session_gone(struct submit *srv)
{
	size_t i;

	for (i = 0; i < srv->nlisteners; i++) {
		struct submit_listener *l = &srv->listeners[i];

		if (l->resume_open && !l->tcp_open && !srv->shutting_down &&
		    uv_is_active((uv_handle_t *)&l->resume))
			uv_timer_start(&l->resume, submit_server_resume, 0, 0);
	}
	submit_server_check_done(srv);
}

/*
 * A connection to accept, or an accept that failed.  Out of descriptors,
 * buffers or memory, libuv would call back at once for the same connection,
 * in a loop: the listener pauses instead (its socket closed, the kernel
 * queues connections on spare_fd's) and logs once per pause.
 */
static void
submit_server_on_conn(uv_stream_t *server, int status)
{
	struct submit_listener *l = server->data;
	struct submit *srv;
	char count[24];

	if (l == NULL || l->magic != SUBMIT_LISTENER_MAGIC)
		fatalx("%s: bad listener", __func__);
	srv = l->srv;
	if (status < 0 && srv->front != NULL && submit_server_stopping(srv)) {
		/* the front shut the socket down (EINVAL): it listens no more, and
		 * libuv would call back again at once */
		if (!uv_is_closing((uv_handle_t *)&l->tcp))
			uv_close((uv_handle_t *)&l->tcp, submit_server_listener_closed);
		return;
	}
	if (status < 0) {
		l->nfailed++;
		snprintf(count, sizeof(count), "%lu", l->nfailed);
		log_event(LOG_WARNING, "accept_error", "listener", l->text,
		    "error", uv_strerror(status), "count", count, NULL);
		if ((status != UV_EMFILE && status != UV_ENFILE && status != UV_ENOBUFS &&
		    status != UV_ENOMEM) || l->spare_fd < 0 || srv->shutting_down)
			return;
		l->pause_ms = l->pause_ms == 0 ? SUBMIT_PAUSE_MIN_MS : l->pause_ms * 2;
		if (l->pause_ms > SUBMIT_PAUSE_MAX_MS)
			l->pause_ms = SUBMIT_PAUSE_MAX_MS;
		if (!l->resume_open) {
			uv_timer_init(srv->loop, &l->resume);
			l->resume.data = l;
			l->resume_open = true;
			srv->nlisteners_open++;
		}
		uv_close((uv_handle_t *)&l->tcp, submit_server_listener_closed);
		uv_timer_start(&l->resume, submit_server_resume, l->pause_ms, 0);
		return;
	}
	l->nfailed = 0;
	l->pause_ms = 0;
	/* a shard's STOP may still be on its way: no greeting once the stop is
	 * decided (the connection is closed with the listener) */
	if (submit_server_stopping(srv))
		return;
	submit_session_accept(srv, l);
}

static void
submit_server_listener_closed(uv_handle_t *h)
{
	struct submit_listener *l = h->data;
	struct submit *srv = l->srv;

	l->tcp_open = false;
	srv->nlisteners_open--;
	submit_server_check_done(srv);
}

static void
submit_server_sweep_closed(uv_handle_t *h)
{
	struct submit *srv = h->data;

	srv->sweep_open = false;
	submit_server_check_done(srv);
}

static void
submit_server_sweep(uv_timer_t *t)
{
	struct submit *srv = t->data;

	submit_lock(srv);
	submit_limits_expire(srv->limits, util_mono_ms());
	submit_unlock(srv);
}

static void
submit_server_close_handles(struct submit *srv)
{
	size_t i;

	for (i = 0; i < srv->nlisteners; i++) {
		uv_handle_t *h = (uv_handle_t *)&srv->listeners[i].tcp;

		if (srv->listeners[i].magic == SUBMIT_LISTENER_MAGIC && !uv_is_closing(h))
			uv_close(h, submit_server_listener_closed);
		/* The socket stops listening only with its last descriptor: a
		 * client of a stopping relayd is refused, not left queued. */
		if (srv->listeners[i].spare_fd >= 0) {
			close(srv->listeners[i].spare_fd);
			srv->listeners[i].spare_fd = -1;
		}
		h = (uv_handle_t *)&srv->listeners[i].resume;
		if (srv->listeners[i].resume_open && !uv_is_closing(h)) {
			uv_timer_stop(&srv->listeners[i].resume);
			uv_close(h, submit_server_listener_closed);
		}
	}
	if (srv->sweep_open && !uv_is_closing((uv_handle_t *)&srv->sweep)) {
		uv_timer_stop(&srv->sweep);
		uv_close((uv_handle_t *)&srv->sweep, submit_server_sweep_closed);
	}
}

int
submit_server_listen(struct submit *srv, const struct conf_listen *cl, bool implicit_tls,
    int sock, bool log, struct buf *err)
{
	struct submit_listener *l = &srv->listeners[srv->nlisteners];
	uv_os_fd_t fd;
	int rc;

	l->magic = SUBMIT_LISTENER_MAGIC;
	l->srv = srv;
	l->implicit_tls = implicit_tls;
	l->proxy = cl->proxy;
	l->text = xstrdup(cl->text);
	l->spare_fd = -1;
	uv_tcp_init(srv->loop, &l->tcp);
	l->tcp.data = l;
	l->tcp_open = true;
	srv->nlisteners++;
	srv->nlisteners_open++;
	if (sock >= 0 && (rc = uv_tcp_open(&l->tcp, sock)) != 0)
		close(sock);
	else if (sock < 0)
		rc = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&cl->addr,
		    cl->addr.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&l->tcp, SUBMIT_BACKLOG, submit_server_on_conn);
	if (rc != 0) {
		buf_printf(err, "%s %s: cannot listen: %s\n",
		    implicit_tls ? "submit.listen_tls" : "submit.listen", cl->text, uv_strerror(rc));
		return -1;
	}
	/* Without it (EMFILE at start), accept errors are not paused. */
	if (uv_fileno((uv_handle_t *)&l->tcp, &fd) == 0)
		l->spare_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (log)
		log_event(LOG_INFO, "listening", "address", cl->text, "tls",
		    implicit_tls ? "implicit" : "starttls", "proxy", cl->proxy ? "yes" : NULL, NULL);
	return 0;
}

/* The certificate and key of c, or NULL (err filled) if they do not load. */
static int
submit_server_tls(const struct conf *c, SSL_CTX **out, struct buf *err)
{
	char e[256];

	*out = NULL;
	if (c->submit.tls_cert == NULL || c->submit.tls_key == NULL)
		return 0;
	if ((*out = io_tls_server_ctx(c->submit.tls_cert, c->submit.tls_key, e, sizeof(e))) == NULL) {
		buf_printf(err, "submit.tls_cert/tls_key: %s\n", e);
		return -1;
	}
	if (io_tls_server_policy(*out, c->submit.tls_ciphers, c->submit.tls_min_version,
	    e, sizeof(e)) != 0) {
		buf_printf(err, "submit.tls_ciphers/tls_min_version: %s\n", e);
		SSL_CTX_free(*out);
		*out = NULL;
		return -1;
	}
	return 0;
}

static void
submit_server_free_mem(struct submit *srv)
{
	size_t i;

	for (i = 0; i < srv->nlisteners; i++) {
		free(srv->listeners[i].text);
		if (srv->listeners[i].spare_fd >= 0)
			close(srv->listeners[i].spare_fd);
	}
	free(srv->listeners);
	if (srv->front == NULL) {           /* a shard's are the front's */
		submit_limits_free(srv->limits);
		submit_slots_free(srv->slots);
		directory_free(srv->directory);
	}
	submit_senders_free(srv->senders);
	dkim_keys_unref(srv->dkim);
	if (srv->tls_ctx != NULL)
		SSL_CTX_free(srv->tls_ctx);
	buf_free(&srv->mechs);
	conf_unref(srv->conf);
	conf_unref(srv->listen_conf);
	srv->magic = 0;
	free(srv);
}

void
submit_server_free_shard(struct submit *shard)
{
	if (shard->front == NULL || shard->nlisteners_open > 0 || shard->nsessions > 0 ||
	    shard->auth_stop_open)
		fatalx("%s: not a stopped shard", __func__);
	submit_server_free_mem(shard);
}

/* How many shards submit.workers asks for (0: one per CPU). */
static unsigned
submit_server_nworkers(const struct conf *c)
{
	unsigned n = c->submit.workers != 0 ? c->submit.workers : uv_available_parallelism();

	if (c->submit.nlisten + c->submit.nlisten_tls == 0)
		return 1;               /* nothing to listen on: nothing to spread */
	return n < 1 ? 1 : n > CONF_SUBMIT_WORKERS_MAX ? CONF_SUBMIT_WORKERS_MAX : n;
}

/*
 * Descriptors a shard holds whatever its sessions, beyond its listeners'
 * two each and its reserved txns' spare files (SUBMIT_TXN_POOL): its loop's
 * epoll and wake-up descriptors, its inbox, with room to spare (measured:
 * about 5).
 */
#define SUBMIT_SHARD_FDS 8

uint64_t
submit_fd_need(const struct conf *c)
{
	uint64_t nl = c->submit.nlisten + c->submit.nlisten_tls;
	uint64_t refusing = c->submit.nlisten_tls > 0 ? SUBMIT_REFUSING_MAX : 0;
	uint64_t accepting = nl > 0 ? SUBMIT_ACCEPTING : 0;
	unsigned n = submit_server_nworkers(c);
	size_t i;

	/* PROXY connections waiting for their header with no place */
	for (i = 0; i < c->submit.nlisten; i++)
		if (c->submit.listen[i].proxy)
			accepting = SUBMIT_ACCEPTING + SUBMIT_UNPLACED_MAX;
	for (i = 0; i < c->submit.nlisten_tls; i++)
		if (c->submit.listen_tls[i].proxy)
			accepting = SUBMIT_ACCEPTING + SUBMIT_UNPLACED_MAX;

	if (n == 1)     /* each listener's socket and its spare */
		return 2 * nl + refusing + accepting;
	return n * (2 * nl + SUBMIT_SHARD_FDS + SUBMIT_TXN_POOL + refusing + accepting) +
	    SUBMIT_EVICTING_MAX;
}

unsigned
submit_threadpool_size(const struct conf *c)
{
	return 4 + SUBMIT_AUTH_MAX_RUNNING * (submit_server_nworkers(c) - 1);
}

/* A failed submit_new(): free once the handles it opened are closed. */
static void
submit_server_abandoned(void *arg)
{
	struct submit *srv = arg;

	submit_server_free_mem(srv);
}

int
submit_new(uv_loop_t *loop, struct conf *conf, struct router *router,
    struct relay_stats *stats, struct submit **out, struct buf *err)
{
	struct submit *srv = xcalloc(1, sizeof(*srv));
	struct submit_limits_params p;
	struct log_line l;
	size_t i;
	bool sasl = false;

	srv->magic = SUBMIT_MAGIC;
	srv->loop = loop;
	srv->conf = conf_ref(conf);
	srv->listen_conf = conf_ref(conf);
	srv->router = router;
	srv->stats = stats;
	TAILQ_INIT(&srv->sessions);
	TAILQ_INIT(&srv->auth_waiting);
	srv->limits = submit_limits_new();
	srv->slots = submit_slots_new();
	submit_limits_params_from_conf(&p, conf);
	submit_limits_set_params(srv->limits, &p);
	srv->listeners = xcalloc(conf->submit.nlisten + conf->submit.nlisten_tls + 1,
	    sizeof(*srv->listeners));

	if (submit_senders_load(conf->submit.senders, &srv->senders, err) != 0 ||
	    dkim_keys_load(conf, &srv->dkim, err) != 0 ||
	    submit_server_tls(conf, &srv->tls_ctx, err) != 0)
		goto fail;
	if (conf->submit.senders_ldap.uri != NULL &&
	    directory_new(loop, conf, &srv->directory, err) != 0)
		goto fail;
	if (srv->tls_ctx == NULL && conf->submit.nlisten + conf->submit.nlisten_tls > 0) {
		buf_printf(err, "submit: listeners need submit.tls_cert and submit.tls_key\n");
		goto fail;
	}
	if (submit_auth_init(srv, err) != 0)
		goto fail;
	sasl = true;
	if (submit_server_nworkers(conf) > 1) {
		if (submit_workers_new(srv, submit_server_nworkers(conf), err) != 0)
			goto fail;
	} else {
		for (i = 0; i < conf->submit.nlisten; i++)
			if (submit_server_listen(srv, &conf->submit.listen[i], false, -1, true, err) != 0)
				goto fail;
		for (i = 0; i < conf->submit.nlisten_tls; i++)
			if (submit_server_listen(srv, &conf->submit.listen_tls[i], true, -1, true,
			    err) != 0)
				goto fail;
	}
	uv_timer_init(loop, &srv->sweep);
	srv->sweep.data = srv;
	srv->sweep_open = true;
	uv_timer_start(&srv->sweep, submit_server_sweep, SUBMIT_SWEEP_MS, SUBMIT_SWEEP_MS);
	uv_unref((uv_handle_t *)&srv->sweep);
	log_begin(&l, LOG_INFO, "submit_ready");
	log_kv(&l, "mechanisms", buf_cstr(&srv->mechs));
	log_kvu(&l, "workers", srv->workers != NULL ? submit_workers_count(srv) : 1);
	log_end(&l);
	*out = srv;
	return 0;
fail:
	if (sasl)
		submit_auth_done();
	srv->shutting_down = true;
	if (srv->nlisteners_open == 0) {
		submit_server_free_mem(srv);
	} else {
		srv->shutdown_done = submit_server_abandoned;
		srv->shutdown_arg = srv;
		submit_server_close_handles(srv);   /* closes the fds now, frees later */
	}
	return -1;
}

static bool
submit_server_same_listeners(const struct conf_listen *a, size_t na,
    const struct conf_listen *b, size_t nb)
{
	size_t i;

	if (na != nb)
		return false;
	for (i = 0; i < na; i++)
		if (a[i].addrlen != b[i].addrlen || memcmp(&a[i].addr, &b[i].addr, a[i].addrlen) != 0 ||
		    a[i].proxy != b[i].proxy)
			return false;
	return true;
}

int
submit_reload(struct submit *s, struct conf *conf, struct buf *err)
{
	struct submit_senders *senders = NULL;
	struct submit_limits_params p;
	struct dkim_keys *dkim = NULL;
	SSL_CTX *ctx = NULL;

	if (s->magic != SUBMIT_MAGIC)
		fatalx("%s: bad submit", __func__);
	if (submit_senders_load(conf->submit.senders, &senders, err) != 0)
		return -1;
	if (dkim_keys_load(conf, &dkim, err) != 0) {
		submit_senders_free(senders);
		return -1;
	}
	if (submit_server_tls(conf, &ctx, err) != 0 ||
	    (ctx == NULL && (s->nlisteners > 0 || s->workers != NULL))) {
		if (ctx == NULL && (s->nlisteners > 0 || s->workers != NULL) && err->len == 0)
			buf_printf(err, "submit: listeners need submit.tls_cert and submit.tls_key\n");
		submit_senders_free(senders);
		dkim_keys_unref(dkim);
		return -1;
	}
	/* the directory last: it keeps its new settings once this succeeds */
	if (conf->submit.senders_ldap.uri != NULL &&
	    (s->directory != NULL ? directory_reload(s->directory, conf, err) :
	    directory_new(s->loop, conf, &s->directory, err)) != 0) {
		if (ctx != NULL)
			SSL_CTX_free(ctx);
		submit_senders_free(senders);
		dkim_keys_unref(dkim);
		return -1;
	}
	/* against the listeners in use, not the last reload's addresses */
	if (!submit_server_same_listeners(s->listen_conf->submit.listen,
	    s->listen_conf->submit.nlisten, conf->submit.listen, conf->submit.nlisten) ||
	    !submit_server_same_listeners(s->listen_conf->submit.listen_tls,
	    s->listen_conf->submit.nlisten_tls, conf->submit.listen_tls, conf->submit.nlisten_tls))
		log_event(LOG_WARNING, "reload_listen_ignored", "reason",
		    "listener addresses change only on restart", NULL);
	if (conf->submit.workers != s->listen_conf->submit.workers) {
		char kept[16];

		snprintf(kept, sizeof(kept), "%u", s->listen_conf->submit.workers);
		log_event(LOG_WARNING, "reload_ignored", "setting", "submit.workers", "kept", kept,
		    NULL);
	}

	submit_senders_free(s->senders);
	s->senders = senders;
	dkim_keys_unref(s->dkim);           /* signing in progress holds its own reference */
	s->dkim = dkim;
	if (s->tls_ctx != NULL)
		SSL_CTX_free(s->tls_ctx);       /* live sessions hold their own reference */
	s->tls_ctx = ctx;
	conf_unref(s->conf);
	s->conf = conf_ref(conf);
	submit_limits_params_from_conf(&p, conf);
	submit_lock(s);
	submit_limits_set_params(s->limits, &p);
	submit_unlock(s);
	submit_auth_reload(s);
	submit_workers_reload(s);
	log_event(LOG_INFO, "submit_reloaded", "mechanisms", buf_cstr(&s->mechs), NULL);
	return 0;
}

void
submit_shutdown_shard(struct submit *s, void (*done)(void *arg), void *arg)
{
	struct submit_session *sess, *next;

	if (s->magic != SUBMIT_MAGIC)
		fatalx("%s: bad submit", __func__);
	s->shutting_down = true;
	s->shutdown_done = done;
	s->shutdown_arg = arg;
	submit_server_close_handles(s);
	for (sess = TAILQ_FIRST(&s->sessions); sess != NULL; sess = next) {
		next = TAILQ_NEXT(sess, entry);
		submit_session_shutdown(sess);
	}
	if (s->directory != NULL && s->front == NULL)
		directory_cancel_all(s->directory);     /* sessions waiting on it close */
	submit_auth_shutdown(s);
	submit_server_check_done(s);
}

void
submit_shutdown(struct submit *s, void (*done)(void *arg), void *arg)
{
	/* the front: its sweep, the directory's waiters (their answers are
	 * posted back), then each shard stops on its own loop */
	__atomic_store_n(&s->stop_requested, true, __ATOMIC_RELEASE);
	submit_shutdown_shard(s, done, arg);
	submit_workers_shutdown(s);
}

unsigned
submit_abandoned(const struct submit *s)
{
	if (s->workers != NULL)
		return submit_workers_abandoned(s);
	return s->auth_abandoned > 0 && s->auth_running > 0 ? s->auth_running : 0;
}

void
submit_start(struct submit *s)
{
	if (s->magic != SUBMIT_MAGIC)
		fatalx("%s: bad submit", __func__);
	submit_workers_start(s);
}

void
submit_free(struct submit *s)
{
	if (s == NULL)
		return;
	if (s->magic != SUBMIT_MAGIC)
		fatalx("%s: bad submit", __func__);
	if (s->nlisteners_open > 0 || s->sweep_open || s->nsessions > 0 || s->auth_stop_open ||
	    submit_workers_busy(s))
		fatalx("%s: handles still open (call submit_shutdown first)", __func__);
	submit_workers_free(s);
	submit_auth_done();
	submit_server_free_mem(s);
}

size_t
submit_nsessions(const struct submit *s)
{
	return __atomic_load_n(&s->nsessions, __ATOMIC_RELAXED) + submit_workers_nsessions(s);
}
