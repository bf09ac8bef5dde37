/*
 * relay.c - daemon lifecycle: start every module in order, reload on SIGHUP
 * (a new immutable config snapshot is swapped in only once it validated and
 * every module accepted it), reopen the log on SIGUSR1, stop gracefully on
 * SIGTERM/SIGINT.  Owns the signal handles and the current conf reference;
 * never blocks the loop.
 */
#include "daemon/relay.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "common/log.h"
#include "cluster/cluster.h"
#include "common/util.h"
#include "deliver/deliver.h"
#include "directory/directory.h"
#include "dns/dns.h"
#include "http/http.h"
#include "metrics/metrics.h"
#include "notify/notify.h"
#include "queue/queue.h"
#include "router/router.h"
#include "sandbox/sandbox.h"
#include "submit/submit.h"
#include "tlsrpt/tlsrpt.h"

/*
 * What each holder of descriptors may hold at once; daemon/DESCRIPTORS.md
 * has the table (holder, bound, where it is enforced) and the holders
 * left out.
 */
#define RELAY_FD_PER_SESSION  2 /* its socket, and its transaction's queue file */
#define RELAY_FD_PER_DELIVERY 2 /* its socket, and the message file it sends */
#define RELAY_FD_STDIO        3 /* 0, 1, 2 */
#define RELAY_FD_LOG          2 /* log_file, and the new one while SIGUSR1 reopens it */
#define RELAY_FD_LOOP         5 /* libuv's per loop: epoll, its signal pipe (2), the async
				   eventfd, the /dev/null it keeps for EMFILE once it listens */
#define RELAY_FD_PROCESS      2 /* libuv's per process: the signal lock pipe */
#define RELAY_FD_NOTIFY       1 /* sd_notify's datagram socket, while it sends */
#define RELAY_FD_RELOAD       3 /* a reload reading: the config, a key or map, its include */
#define RELAY_FD_LOOP_READ    1 /* the loop's short read: an NDR's original, opened and closed in one call */
#define RELAY_FD_PER_WORK     2 /* a thread-pool work: its file or socket (saslauthd, sasldb,
				   a state file, queue show's read, /proc/self/statm), and
				   one a library opens meanwhile (a SASL plugin, ldap.conf) */
#define RELAY_HTTP_CLIENTS    2 /* HTTPS clients: the router's (MTA-STS), TLS-RPT's */
#define RELAY_THREADPOOL_MAX  1024 /* libuv's own cap on UV_THREADPOOL_SIZE */

/* The thread pool's size: UV_THREADPOOL_SIZE, which relay_start() sets
 * before the pool starts unless the environment did. */
static uint64_t
relay_threadpool_size(const struct conf *c)
{
	const char *env = getenv("UV_THREADPOOL_SIZE");
	unsigned long n = env != NULL ? strtoul(env, NULL, 10) : submit_threadpool_size(c);

	return n < 1 ? 1 : n > RELAY_THREADPOOL_MAX ? RELAY_THREADPOOL_MAX : n;
}

/*
 * Descriptors a configuration may need at once: the sum of the holders'
 * bounds.  The sessions and deliveries are submit.max_connections and
 * router.max_connections, and the deliveries' connections waiting for their
 * QUIT to be written DELIVER_QUITTING_MAX, TLS-RPT's mail reports being
 * queued TLSRPT_MAILS_MAX; the rest are the queue's (queue_fd_need()), the
 * submission server's listeners, their spares and session threads
 * (submit_fd_need()), the control socket's, the metrics endpoint's, the
 * resolver's, the HTTPS clients', LDAP's and Redis's, the thread pool's
 * works', and the process's own.  The listeners, the session threads and the pool are
 * those of `listeners`: a reload keeps the ones relayd started with.  running
 * is the configuration in force (c itself at start) and dns its resolver
 * (NULL at start): a reload's resolver channel drains its queries on the
 * running channel's servers, as many as c-ares has there.
 */
static uint64_t
relay_fd_need(const struct conf *c, const struct conf *listeners, const struct conf *running,
    const struct dns_resolver *dns)
{
	uint64_t n = RELAY_FD_PER_SESSION * (uint64_t)c->submit.max_connections +
	    RELAY_FD_PER_DELIVERY * (uint64_t)c->router.max_connections;

	n += DELIVER_QUITTING_MAX + TLSRPT_MAILS_MAX;
	n += queue_fd_need() + ROUTER_REPORTS_MAX + submit_fd_need(listeners) + control_fd_need() +
	    metrics_fd_need(listeners) + dns_fd_need(c, running, dns) + RELAY_HTTP_CLIENTS * HTTP_FD_NEED;
	if (c->submit.senders_ldap.uri != NULL)
		n += DIRECTORY_FD_NEED;
	if (listeners->cluster.enabled)
		n += CLUSTER_FD_NEED;
	n += RELAY_FD_PER_WORK * relay_threadpool_size(listeners);
	n += RELAY_FD_STDIO + RELAY_FD_LOG + RELAY_FD_PROCESS + RELAY_FD_NOTIFY +
	    RELAY_FD_RELOAD + RELAY_FD_LOOP_READ;
	n += RELAY_FD_LOOP * (1 + (listeners->deliver.thread ? 1 : 0));
	return n;
}

static int
relay_fd_refuse(const struct conf *c, uint64_t need, uint64_t have, const char *which,
    struct buf *err)
{
	buf_printf(err, "submit.max_connections %u and router.max_connections %u need "
	    "%llu file descriptors, but %s RLIMIT_NOFILE is %llu: raise it "
	    "(LimitNOFILE= in the systemd unit, ulimit -n) or lower submit.max_connections\n",
	    c->submit.max_connections, c->router.max_connections,
	    (unsigned long long)need, which, (unsigned long long)have);
	return -1;
}

static void
relay_log_rlim(struct log_line *l, const char *key, rlim_t v)
{
	if (v == RLIM_INFINITY)
		log_kv(l, key, "unlimited");
	else
		log_kvu(l, key, v);
}

/*
 * At start: raise the soft RLIMIT_NOFILE to the hard limit (a service
 * manager's soft default, 1024, holds few sessions), log both, and refuse a
 * configuration whose connections cannot all have a descriptor.  Before the
 * sandbox: no privilege is needed to raise the soft limit.
 */
static int
relay_fd_limit(const struct conf *c, struct buf *err)
{
	struct rlimit rl;
	rlim_t was;
	uint64_t need = relay_fd_need(c, c, c, NULL);
	struct log_line l;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		buf_printf(err, "getrlimit(RLIMIT_NOFILE): %s\n", strerror(errno));
		return -1;
	}
	was = rl.rlim_cur;
	if (rl.rlim_cur != rl.rlim_max) {
		struct rlimit want = { rl.rlim_max, rl.rlim_max };

		/* An unlimited hard limit is capped by fs.nr_open: ask for what is needed. */
		if (setrlimit(RLIMIT_NOFILE, &want) != 0 && rl.rlim_cur < need) {
			want.rlim_cur = need;
			(void)setrlimit(RLIMIT_NOFILE, &want);
		}
		(void)getrlimit(RLIMIT_NOFILE, &rl);
	}
	log_begin(&l, LOG_INFO, "fd_limit");
	relay_log_rlim(&l, "soft", rl.rlim_cur);
	relay_log_rlim(&l, "hard", rl.rlim_max);
	relay_log_rlim(&l, "was", was);
	log_kvu(&l, "need", need);
	log_end(&l);
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
		return relay_fd_refuse(c, need, rl.rlim_cur,
		    rl.rlim_cur == rl.rlim_max ? "the hard" : "the soft", err);
	return 0;
}

/* At a reload: the limit stays what start-up made it, and so do the listeners. */
static int
relay_fd_check(const struct conf *c, const struct conf *listeners, const struct conf *running,
    const struct dns_resolver *dns, struct buf *err)
{
	struct rlimit rl;
	uint64_t need = relay_fd_need(c, listeners, running, dns);

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur >= need)
		return 0;
	return relay_fd_refuse(c, need, rl.rlim_cur, "the current", err);
}

static enum log_level
relay_log_level(const struct conf *c)
{
	static const struct { const char *name; enum log_level level; } levels[] = {
		{ "debug", LOG_DEBUG }, { "info", LOG_INFO },
		{ "notice", LOG_NOTICE }, { "warning", LOG_WARNING },
	};
	size_t i;

	for (i = 0; c->log_level != NULL && i < RELAY_ARRAY_LEN(levels); i++)
		if (strcmp(c->log_level, levels[i].name) == 0)
			return levels[i].level;
	return LOG_INFO;
}

/* SIGUSR1, logrotate's postrotate: lines before go to the renamed file,
 * lines after to the new one; on failure the old file stays in use. */
static void
relay_reopen_log(struct relay *r)
{
	const char *path = r->conf != NULL ? r->conf->log_file : NULL;

	if (path == NULL || *path == '\0' || strcmp(path, "-") == 0)
		return;                 /* stderr: nothing to reopen */
	if (log_reopen() != 0)
		log_event(LOG_ERR, "log_reopen_failed", "log_file", path,
		    "error", strerror(errno), NULL);
	else
		log_event(LOG_NOTICE, "log_reopened", "log_file", path, NULL);
}

static void
on_signal(uv_signal_t *h, int signum)
{
	struct relay *r = h->data;
	struct buf err = BUF_INIT;

	if (r->magic != RELAY_MAGIC)
		fatalx("%s: bad relay", __func__);
	if (signum == SIGUSR1) {
		relay_reopen_log(r);
		return;
	}
	if (signum == SIGHUP) {
		if (r->stopping)
			log_event(LOG_NOTICE, "reload_ignored", "reason", "stopping", NULL);
		else
			relay_reload(r, &err);
		buf_free(&err);
		return;
	}
	relay_stop(r, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

int
relay_start(struct relay *r, uv_loop_t *loop, const char *conf_path, struct buf *err)
{
	int rc;

	memset(r, 0, sizeof(*r));
	r->magic = RELAY_MAGIC;
	r->loop = loop;
	r->conf_path = xstrdup(conf_path);
	r->stats.start_ms = util_now_ms();
	stats_init(&r->stats);

	/* Signals first: a failed start is unwound by relay_stop(), which closes them last. */
	uv_signal_init(loop, &r->sig_term);
	uv_signal_init(loop, &r->sig_int);
	uv_signal_init(loop, &r->sig_hup);
	uv_signal_init(loop, &r->sig_usr1);
	r->sig_term.data = r->sig_int.data = r->sig_hup.data = r->sig_usr1.data = r;
	uv_signal_start(&r->sig_term, on_signal, SIGTERM);
	uv_signal_start(&r->sig_int, on_signal, SIGINT);
	uv_signal_start(&r->sig_hup, on_signal, SIGHUP);
	uv_signal_start(&r->sig_usr1, on_signal, SIGUSR1);
	r->notify = notify_new(loop, relay_status, r);      /* closed with the signals */

	if (conf_load(conf_path, &r->conf, err) != 0)
		return -1;
	r->conf_start = conf_ref(r->conf);
	/* before anything uses libuv's pool: room for every session loop's SASL steps */
	if (getenv("UV_THREADPOOL_SIZE") == NULL) {
		char n[16];

		snprintf(n, sizeof(n), "%u", submit_threadpool_size(r->conf));
		setenv("UV_THREADPOOL_SIZE", n, 0);
	}
	if (log_open(r->conf->log_file) != 0) {
		buf_printf(err, "%s: cannot open log_file '%s'\n", conf_path, r->conf->log_file);
		return -1;
	}
	log_set_level(relay_log_level(r->conf));
	signal(SIGPIPE, SIG_IGN);
	if (relay_fd_limit(r->conf, err) != 0)
		return -1;
	/* The Redis password is read here, as root, before the sandbox. */
	if (cluster_new(loop, r->conf, &r->cluster, err) != 0)
		return -1;

	/* Landlock while this is the only thread; the queue is opened as the user. */
	if (sandbox_new(r->conf, &r->sandbox, err) != 0 ||
	    sandbox_restrict_fs(r->sandbox, r->conf, err) != 0)
		return -1;
	sandbox_as_user(r->sandbox, true);
	rc = router_new(loop, r->conf, &r->stats, &r->router, err);
	sandbox_as_user(r->sandbox, false);
	if (rc != 0)
		return -1;
	if (control_new(r, r->conf->control_socket, &r->control, err) != 0)
		return -1;
	if (submit_new(loop, r->conf, r->router, &r->stats, &r->submit, err) != 0)
		return -1;
	if (r->conf->metrics_listen != NULL) {
		struct metrics_source src = { &r->stats, r->router, r->submit };

		if (metrics_new(loop, r->conf->metrics_listen, &src, &r->metrics, err) != 0)
			return -1;
	}
	if (r->cluster != NULL) {
		router_set_cluster(r->router, r->cluster);
		submit_set_cluster(r->submit, r->cluster);
	}
	if (sandbox_drop(r->sandbox, err) != 0)
		return -1;
	submit_start(r->submit);        /* its threads inherit the sandbox */

	log_event(LOG_NOTICE, "started", "config", conf_path, "hostname", r->conf->hostname,
	    "queue_dir", r->conf->queue_dir, NULL);
	/* msg/ loads on its thread while relayd answers (the journal was
	 * replayed into it by router_new); the thread inherits the sandbox. */
	router_scan_start(r->router);
	notify_ready(r->notify);        /* listening; the queue loading (STATUS=) */
	return 0;
}

static bool
relay_same(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/*
 * The settings a reload does not take: the metrics endpoint and the Redis
 * link are opened at start (before the privilege drop) and kept until the
 * next start.  The rest of the reload applies, as with queue_dir
 * (router_reload) and the submission listeners (submit_server.c); say so
 * rather than run on with the old ones unsaid.
 */
static void
relay_reload_ignored(const struct conf *o, const struct conf *c)
{
	if (!relay_same(o->metrics_listen, c->metrics_listen))
		log_event(LOG_WARNING, "reload_ignored", "setting", "metrics_listen",
		    "kept", o->metrics_listen != NULL ? o->metrics_listen : "-", NULL);
	if (o->cluster.enabled != c->cluster.enabled ||
	    !relay_same(o->cluster.redis, c->cluster.redis) ||
	    !relay_same(o->cluster.node, c->cluster.node) ||
	    !relay_same(o->cluster.password_file, c->cluster.password_file))
		log_event(LOG_WARNING, "reload_ignored", "setting", "cluster",
		    "kept", o->cluster.enabled ? o->cluster.redis : "-", NULL);
}

int
relay_reload(struct relay *r, struct buf *err)
{
	struct conf *c = NULL;
	struct log_line l;

	if (r->stopping) {
		buf_puts(err, "relayd is stopping");
		return -1;
	}
	notify_reloading(r->notify);
	if (conf_load(r->conf_path, &c, err) != 0 ||
	    relay_fd_check(c, r->conf_start, r->conf, router_dns(r->router), err) != 0 ||
	    sandbox_reload_check(r->sandbox, c, err) != 0 ||
	    submit_reload(r->submit, c, err) != 0) {
		/* Strip the trailing newline for the log line. */
		while (err->len > 0 && err->data[err->len - 1] == '\n')
			buf_truncate(err, err->len - 1);
		log_begin(&l, LOG_ERR, "reload_failed");
		log_kv(&l, "config", r->conf_path);
		log_kv(&l, "error", buf_cstr(err));
		log_end(&l);
		if (c != NULL)
			conf_unref(c);
		notify_ready(r->notify);        /* still serving, on the old one */
		return -1;
	}
	relay_reload_ignored(r->conf_start, c);
	router_reload(r->router, c);
	if (log_open(c->log_file) != 0)
		log_event(LOG_ERR, "log_reopen_failed", "log_file", c->log_file, NULL);
	log_set_level(relay_log_level(c));
	conf_unref(r->conf);
	r->conf = c;
	log_event(LOG_NOTICE, "reloaded", "config", r->conf_path, NULL);
	notify_ready(r->notify);
	return 0;
}

static void
on_signal_closed(uv_handle_t *h)
{
	(void)h;
}

/*
 * Everything is down: close the signal handles last, so that a SIGHUP or a
 * second SIGTERM during a graceful stop finds our handler (logged, ignored)
 * rather than the default action, which would kill the process mid-commit.
 * The loop then ends by itself.
 */
static void
on_router_down(void *arg)
{
	struct relay *r = arg;

	uv_close((uv_handle_t *)&r->sig_term, on_signal_closed);
	uv_close((uv_handle_t *)&r->sig_int, on_signal_closed);
	uv_close((uv_handle_t *)&r->sig_hup, on_signal_closed);
	uv_close((uv_handle_t *)&r->sig_usr1, on_signal_closed);
	notify_close(r->notify);
	r->notify = NULL;
	cluster_close(r->cluster);      /* after submit and router: nobody asks any more */
	r->cluster = NULL;
	r->down = true;
}

unsigned
relay_abandoned(const struct relay *r)
{
	return r->down && r->submit != NULL ? submit_abandoned(r->submit) : 0;
}

static void
on_module_down(void *arg)
{
	struct relay *r = arg;

	if (--r->pending_shutdown > 0)
		return;
	if (r->router != NULL)
		router_shutdown(r->router, on_router_down, r);
	else
		on_router_down(r);
}

void
relay_stop(struct relay *r, const char *why)
{
	if (r->stopping) {
		log_event(LOG_NOTICE, "stop_in_progress", "reason", why, NULL);
		return;
	}
	r->stopping = true;
	notify_stopping(r->notify);
	log_event(LOG_NOTICE, "stopping", "reason", why, NULL);
	if (r->control != NULL) {
		control_close(r->control);      /* freed in its close callback */
		r->control = NULL;
	}
	metrics_close(r->metrics);              /* freed in its close callbacks */
	r->metrics = NULL;
	/* Stop taking mail first, then let the router finish its commits. */
	r->pending_shutdown = 1;
	if (r->submit != NULL)
		submit_shutdown(r->submit, on_module_down, r);
	else
		on_module_down(r);
}

void
relay_free(struct relay *r)
{
	if (r->submit != NULL)
		submit_free(r->submit);
	if (r->router != NULL)
		router_free(r->router);
	if (r->conf != NULL)
		conf_unref(r->conf);
	if (r->conf_start != NULL)
		conf_unref(r->conf_start);
	sandbox_free(r->sandbox);
	free(r->conf_path);
	r->magic = 0;
}
