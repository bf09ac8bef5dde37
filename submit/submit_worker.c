/*
 * submit_worker.c - submission sessions on N event-loop threads
 * (submit.workers > 1): the shards, their threads and inboxes, and the calls
 * a shard's session posts to the front's loop (the main loop) for what has
 * one owner there.
 *
 * A shard is a struct submit of its own (submit_int.h: front set) on a
 * thread's loop: its listeners, bound to every listen address with
 * SO_REUSEPORT so that the kernel spreads the connections, its sessions,
 * their SASL steps and timers, its own references to the conf snapshot, TLS
 * context, senders map and DKIM keys.  The front (the struct submit that
 * submit.h hands out) keeps what has one owner: the queue (through the
 * router), the directory, the cluster link and the counters of struct
 * relay_stats; the limits and slots are the front's too, shared by the shards
 * under the front's lock (submit_lock(): short in-memory calls, never held
 * across I/O; SUBMIT.md says why a lock and not posted calls).
 *
 * What crosses the threads, and nothing else (common/xloop.h, one inbox per
 * loop; every answer goes back to the asking shard's inbox, so a session's
 * callbacks run on its own loop):
 *  - to the front: RESERVE (txns begun without an envelope, for the shard's
 *    pool), BEGIN (router_txn_begin on the session's envelope, which the
 *    paused session does not touch until BEGUN: only when the pool is
 *    empty), COMMIT (the txn; the accepted counters are counted there),
 *    ABORT (one txn or a pool's), LOOKUP (the directory), COUNT (the
 *    cluster), STAT (connections, auth failures, refusals), STOPPED (a
 *    shard's loop has ended);
 *  - to a shard: RESERVED, BEGUN, COMMITTED, LOOKED_UP (a directory_owned
 *    reference, dropped on the shard: its count is atomic), COUNTED, EVICT
 *    (a session of this shard chosen by another's accept, by pointer and
 *    id: gone already, it is not found), RELOAD (new references), STOP.
 * The pool: a session's DATA or first BDAT takes a reserved txn and gives
 * it its envelope on the shard (queue_txn_envelope), so a message's path
 * crosses to the front only for its COMMIT; fewer than SUBMIT_TXN_LOW left,
 * the shard asks RESERVE for the rest (one at a time).  A reserved txn holds
 * a queue id, maybe a spare file, and the queue's count of open txns (its
 * close waits for them); nothing of it is on disk but a spare's name, and
 * nothing is acknowledged.  STOP and RELOAD post the pool back (ABORT: the
 * spares go back to the queue's pool); a RESERVED that finds its shard
 * stopping is aborted there, and one for a shard whose inbox has closed is
 * aborted on the front (checked under the front's lock, as an eviction).
 * A session with a call under way keeps a pending flag (begin_pending,
 * commit_pending, lookup_pending), so that it is not freed before the answer.
 * queue_txn_write() and queue_txn_prefix() run on the shard: they touch only
 * the txn and the queue's descriptors set at start (q->msgfd, q->named).
 *
 * Order and contracts: the shards' threads start with submit_start(), after
 * the sandbox (capabilities are per thread); a shard answers STOP with
 * STOPPED once its sessions, listeners and SASL steps are done (or abandoned
 * after SUBMIT_AUTH_STOP_MS); the front joins each thread on STOPPED and
 * closes its inbox after the last, then the shutdown's done runs on the main
 * loop.  Never: run a session's code on the front's loop, touch a shard's
 * sessions from another thread (an eviction is posted), or post to a shard
 * whose inbox has closed (closed is set under the front's lock).
 */
#include "submit/submit_int.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xloop.h"

#define SUBMIT_WORKER_MAGIC 0x53574b52u     /* "SWKR" */

enum sw_kind {
	/* to the front */
	SW_RESERVE, SW_BEGIN, SW_COMMIT, SW_ABORT, SW_LOOKUP, SW_COUNT, SW_STAT, SW_STOPPED,
	/* to a shard */
	SW_RESERVED, SW_BEGUN, SW_COMMITTED, SW_LOOKED_UP, SW_COUNTED, SW_EVICT, SW_RELOAD, SW_STOP,
};

struct sw_msg {
	struct xloop_msg x;                 /* first: the inboxes hand back this */
	enum sw_kind kind;
	struct submit *shard;               /* who asks, or who is told */
	struct submit_session *s;           /* kept alive by its pending flag */
	char sid[20];                       /* EVICT: the session's id */
	int rc;
	/* BEGIN, COMMIT, ABORT */
	struct queue_txn *txn;
	char qid[QID_MAX];
	uint64_t eod_ms;
	double size;
	/* RESERVE (ntxn wanted), RESERVED, ABORT */
	struct queue_txn *txns[SUBMIT_TXN_POOL];
	size_t ntxn;
	/* LOOKUP */
	char *name;                         /* LOOKUP, COUNT: the login or address */
	bool fresh;
	directory_cb *dcb;
	enum directory_status st;
	struct directory_owned *owned;
	/* COUNT */
	const char *what;
	const char *const *fields;
	long long incr[CLUSTER_COUNT_MAX];
	size_t n;
	uint64_t window;
	cluster_count_cb ccb;               /* NULL: nothing to answer */
	bool answered;
	struct cluster_counts counts;
	/* STAT */
	unsigned connections, auth_failed;
	int reject;                         /* enum stats_reject_reason, or -1 */
	/* EVICT */
	const char *reason;
	size_t unauth;
	/* RELOAD */
	struct conf *conf;
	struct submit_senders *senders;
	struct dkim_keys *dkim;
	SSL_CTX *tls_ctx;
	struct buf mechs;
	struct directory *directory;
	/* STOPPED */
	unsigned abandoned;
};

struct submit_worker {
	uint32_t magic;
	struct submit *shard;
	struct submit *front;
	uv_loop_t loop;
	uv_thread_t tid;
	struct xloop_inbox inbox;           /* on the shard's loop */
	bool started;
	bool closed;                        /* inbox closing: nobody posts (front's lock) */
	bool joined;
	bool stopped_posted;                /* STOPPED is on its way (the shard's thread's) */
	unsigned abandoned;
	/* the shard's thread's (the front's before it starts) */
	struct queue_txn *pool[SUBMIT_TXN_POOL];   /* reserved, unused */
	size_t npool;
	bool reserving;                     /* a RESERVE is on its way */
	bool pool_closed;                   /* stopping: what comes back is aborted */
};

struct submit_workers {
	struct submit_worker *w;
	size_t n;
	struct xloop_inbox inbox;           /* on the front's loop */
	bool inbox_open;
	bool started;
	bool stopping;
	size_t nrunning;                    /* threads not yet joined */
	uv_mutex_t lock;                    /* the shards' shared limits and slots */
};

static struct sw_msg *
sw_msg_new(enum sw_kind kind, struct submit *shard, struct submit_session *s)
{
	struct sw_msg *m = xcalloc(1, sizeof(*m));

	m->kind = kind;
	m->shard = shard;
	m->s = s;
	m->reject = -1;
	return m;
}

static void
sw_msg_free(struct sw_msg *m)
{
	free(m->name);
	buf_free(&m->mechs);
	free(m);
}

static void
sw_to_front(struct submit *shard, struct sw_msg *m)
{
	xloop_post(&shard->front->workers->inbox, &m->x);
}

static void
sw_to_shard(struct sw_msg *m, enum sw_kind kind)
{
	m->kind = kind;
	xloop_post(&m->shard->worker->inbox, &m->x);
}

/* ------------------------------------------------------------------ */
/* The front's loop */

static void
sw_committed(void *arg, int err, const char *qid)
{
	struct sw_msg *m = arg;
	struct submit *front = m->shard->front;

	m->rc = err;
	if (err == 0) {
		snprintf(m->qid, sizeof(m->qid), "%s", qid);
		stats_accepted(front->stats, (double)(util_mono_ms() - m->eod_ms) / 1000.0,
		    m->size);
	}
	sw_to_shard(m, SW_COMMITTED);
}

static void
sw_looked_up(void *arg, enum directory_status st, struct directory_owned *o)
{
	struct sw_msg *m = arg;

	m->st = st;
	m->owned = o != NULL ? directory_owned_ref(o) : NULL;
	sw_to_shard(m, SW_LOOKED_UP);
}

static void
sw_counted(void *arg, const struct cluster_counts *c)
{
	struct sw_msg *m = arg;

	m->answered = c != NULL;
	if (c != NULL)
		m->counts = *c;
	sw_to_shard(m, SW_COUNTED);
}

static void
sw_front_lookup(struct submit *front, struct sw_msg *m)
{
	struct directory_owned *o;

	if (front->directory == NULL || front->shutting_down) {
		sw_looked_up(m, DIRECTORY_UNAVAILABLE, NULL);   /* as directory_cancel_all */
		return;
	}
	if (m->fresh) {
		directory_lookup_fresh(front->directory, m->name, sw_looked_up, m);
		return;
	}
	if ((o = directory_cached(front->directory, m->name)) != NULL) {
		sw_looked_up(m, DIRECTORY_OK, o);
		return;
	}
	directory_lookup(front->directory, m->name, sw_looked_up, m);
}

static void
sw_front_stat(struct submit *front, const struct sw_msg *m)
{
	struct relay_stats *st = front->stats;

	st->connections += m->connections;
	st->auth_failed += m->auth_failed;
	if (m->reject >= 0 && m->reject < STATS_REJ_MAX)
		stats_reject_by(st, (enum stats_reject_reason)m->reject);
}

/* Abort the txns of m (the front's loop). */
static void
sw_front_abort(struct sw_msg *m)
{
	size_t i;

	for (i = 0; i < m->ntxn; i++)
		queue_txn_abort(m->txns[i]);
	sw_msg_free(m);
}

/* Reserve up to m->ntxn txns for the shard's pool and post them back. */
static void
sw_front_reserve(struct submit *front, struct sw_msg *m)
{
	struct submit_worker *w = m->shard->worker;
	size_t want = m->ntxn;
	bool closed;

	for (m->ntxn = 0; m->ntxn < want && !front->workers->stopping; m->ntxn++)
		if (router_txn_begin(front->router, NULL, &m->txns[m->ntxn]) != 0)
			break;
	/* as an eviction: posted under the lock, or not at all once the
	 * shard's inbox is closing (the shard runs what it holds first) */
	uv_mutex_lock(&front->workers->lock);
	if (!(closed = w->closed))
		sw_to_shard(m, SW_RESERVED);
	uv_mutex_unlock(&front->workers->lock);
	if (closed)
		sw_front_abort(m);
}

static void
sw_front_inbox_closed(uv_handle_t *h)
{
	struct submit *front = ((struct xloop_inbox *)h->data)->data;

	front->workers->inbox_open = false;
	submit_server_session_gone(front);     /* the shutdown may be done */
}

static void
sw_front_cb(struct xloop_inbox *in, struct xloop_msg *x)
{
	struct submit *front = in->data;
	struct sw_msg *m = (struct sw_msg *)x;
	struct submit_worker *w;

	if (front->magic != SUBMIT_MAGIC)
		fatalx("%s: bad submit", __func__);
	switch (m->kind) {
	case SW_RESERVE:
		sw_front_reserve(front, m);
		break;
	case SW_BEGIN:
		m->rc = router_txn_begin(front->router, &m->s->env, &m->txn);
		if (m->rc != 0)
			m->txn = NULL;
		sw_to_shard(m, SW_BEGUN);
		break;
	case SW_COMMIT:
		queue_txn_commit(m->txn, sw_committed, m);
		break;
	case SW_ABORT:
		sw_front_abort(m);
		break;
	case SW_LOOKUP:
		sw_front_lookup(front, m);
		break;
	case SW_COUNT:
		if (front->cluster == NULL || cluster_count(front->cluster, m->what, m->name,
		    m->fields, m->incr, m->n, m->window, m->ccb != NULL ? sw_counted : NULL,
		    m->ccb != NULL ? m : NULL) != 0) {
			if (m->ccb != NULL)
				sw_counted(m, NULL);    /* degraded: the local counters decide */
			else
				sw_msg_free(m);
		} else if (m->ccb == NULL) {
			sw_msg_free(m);
		}
		break;
	case SW_STAT:
		sw_front_stat(front, m);
		sw_msg_free(m);
		break;
	case SW_STOPPED:
		w = m->shard->worker;
		w->abandoned = m->abandoned;
		if (m->abandoned == 0) {
			uv_thread_join(&w->tid);    /* it posted its last message: returning */
			w->joined = true;
		}
		sw_msg_free(m);
		if (--front->workers->nrunning == 0)
			xloop_inbox_close(&front->workers->inbox, sw_front_inbox_closed);
		break;
	default:
		fatalx("%s: message %d in the front's inbox", __func__, (int)m->kind);
	}
}

/* ------------------------------------------------------------------ */
/* A shard's loop */

/* The pool back to the front (STOP, RELOAD): its txns are aborted there. */
static void
sw_pool_release(struct submit *shard)
{
	struct submit_worker *w = shard->worker;
	struct sw_msg *m;

	if (w->npool == 0)
		return;
	m = sw_msg_new(SW_ABORT, shard, NULL);
	memcpy(m->txns, w->pool, w->npool * sizeof(w->pool[0]));
	m->ntxn = w->npool;
	w->npool = 0;
	sw_to_front(shard, m);
}

/* Fewer than SUBMIT_TXN_LOW reserved txns: ask for the rest (one RESERVE at a time). */
static void
sw_pool_refill(struct submit *shard)
{
	struct submit_worker *w = shard->worker;
	struct sw_msg *m;

	if (w->reserving || w->pool_closed || w->npool >= SUBMIT_TXN_LOW)
		return;
	m = sw_msg_new(SW_RESERVE, shard, NULL);
	m->ntxn = SUBMIT_TXN_POOL - w->npool;
	w->reserving = true;
	sw_to_front(shard, m);
}

/* RESERVED: into the pool, unless the shard is stopping (then back, as ABORT). */
static bool
sw_pool_reserved(struct submit *shard, struct sw_msg *m)
{
	struct submit_worker *w = shard->worker;
	size_t i, n = 0;

	w->reserving = false;
	for (i = 0; i < m->ntxn; i++)
		if (!w->pool_closed && w->npool < SUBMIT_TXN_POOL)
			w->pool[w->npool++] = m->txns[i];
		else
			m->txns[n++] = m->txns[i];
	m->ntxn = n;
	if (n == 0)
		return false;
	m->kind = SW_ABORT;
	sw_to_front(shard, m);
	return true;
}

struct queue_txn *
submit_worker_txn_take(struct submit *shard)
{
	struct submit_worker *w = shard->worker;
	struct queue_txn *t = NULL;

	if (w->npool > 0)
		t = w->pool[--w->npool];
	sw_pool_refill(shard);
	return t;
}

/* The session s (by pointer and id) if it is still one of shard's. */
static struct submit_session *
sw_find(struct submit *shard, const struct submit_session *s, const char *sid)
{
	struct submit_session *it;

	TAILQ_FOREACH(it, &shard->sessions, entry)
		if (it == s && it->magic == SUBMIT_SESSION_MAGIC && strcmp(it->id, sid) == 0)
			return it;
	return NULL;
}

static void
sw_shard_reload(struct submit *shard, struct sw_msg *m)
{
	conf_unref(shard->conf);
	shard->conf = m->conf;
	submit_senders_free(shard->senders);
	shard->senders = m->senders;
	dkim_keys_unref(shard->dkim);       /* signing in progress holds its own reference */
	shard->dkim = m->dkim;
	if (shard->tls_ctx != NULL)
		SSL_CTX_free(shard->tls_ctx);   /* live sessions hold their own reference */
	shard->tls_ctx = m->tls_ctx;
	buf_reset(&shard->mechs);
	buf_append(&shard->mechs, m->mechs.data, m->mechs.len);
	shard->directory = m->directory;
	m->conf = NULL;
	m->senders = NULL;
	m->dkim = NULL;
	m->tls_ctx = NULL;
}

/* The front's references now, for shard: a RELOAD, or its first ones. */
static struct sw_msg *
sw_reload_msg(struct submit *front, struct submit *shard)
{
	struct sw_msg *m = sw_msg_new(SW_RELOAD, shard, NULL);

	m->conf = conf_ref(front->conf);
	m->senders = submit_senders_ref(front->senders);
	m->dkim = dkim_keys_ref(front->dkim);
	if (front->tls_ctx != NULL && SSL_CTX_up_ref(front->tls_ctx) == 1)
		m->tls_ctx = front->tls_ctx;
	buf_append(&m->mechs, front->mechs.data, front->mechs.len);
	m->directory = front->directory;
	return m;
}

/* The shard's shutdown is over: nothing more comes in, its loop ends. */
static void
sw_shard_stopped(void *arg)
{
	struct submit *shard = arg;
	struct submit_worker *w = shard->worker;

	unsigned abandoned = submit_abandoned(shard);
	struct sw_msg *m;

	uv_mutex_lock(shard->shared_lock);
	w->closed = true;                   /* no eviction is posted to it from now on */
	uv_mutex_unlock(shard->shared_lock);
	/* one posted before that and not yet run (its wake-up would be lost
	 * with the handle): its session is gone, it finds nothing */
	xloop_inbox_run(&w->inbox);
	xloop_inbox_close(&w->inbox, NULL);
	if (abandoned > 0) {
		/* a password check stuck in its backend keeps this loop alive:
		 * the front goes on without joining (relayd leaves without
		 * freeing, see relayd_main.c) */
		w->stopped_posted = true;
		m = sw_msg_new(SW_STOPPED, shard, NULL);
		m->abandoned = abandoned;
		sw_to_front(shard, m);
	}
}

/*
 * An eviction another shard's accept chose, for the session m names by
 * pointer and id (one gone meanwhile is not found): the victim's slot and
 * count were given up at once (submit_slots_make_room).  One that authenticated since
 * (its AUTH step ended in the same turn) is not closed — one loop never
 * closes an authenticated session for a newcomer, and it may already have
 * had its 235 or a message under way — and is counted again if the limits
 * have room (else it goes on uncounted: its close then uncounts nothing).
 */
static void
sw_shard_evict(struct submit *shard, const struct sw_msg *m)
{
	struct submit_session *s;
	struct log_line l;

	submit_lock(shard);
	shard->front->nevicting--;      /* on its way no more (SUBMIT_EVICTING_MAX) */
	submit_unlock(shard);
	if ((s = sw_find(shard, m->s, m->sid)) == NULL)
		return;                 /* gone meanwhile */
	if (s->login == NULL) {
		submit_slots_evict(s, m->reason, m->unauth);
		return;
	}
	submit_lock(shard);
	if (!s->counted && submit_limits_conn_open(shard->limits, s->ip) == SUBMIT_CONN_OK)
		s->counted = true;
	submit_unlock(shard);
	log_begin(&l, LOG_INFO, "session_evict_skipped");
	log_kv(&l, "session", s->id);
	log_kv(&l, "client", s->ip);
	log_kv(&l, "reason", m->reason);
	log_kv(&l, "counted", s->counted ? "yes" : "no");
	log_end(&l);
}

#ifdef RELAY_TEST_HOOKS
/* RELAYD_TEST_EVICT_DELAY_MS=N: an EVICT waits N ms on its shard before it
 * is carried out, so that a test can authenticate the victim meanwhile
 * (test_submit_workers: the eviction of a session authenticated since). */
struct sw_evict_later {
	uv_timer_t timer;
	struct sw_msg *m;
};

static void
sw_evict_later_closed(uv_handle_t *h)
{
	free(h->data);
}

static void
sw_evict_later_cb(uv_timer_t *t)
{
	struct sw_evict_later *el = t->data;
	sw_shard_evict(el->m->shard, el->m);
	sw_msg_free(el->m);
	uv_close((uv_handle_t *)t, sw_evict_later_closed);
}

static bool
sw_evict_later(struct submit *shard, struct sw_msg *m)
{
	const char *v = getenv("RELAYD_TEST_EVICT_DELAY_MS");
	struct sw_evict_later *el;

	if (v == NULL || *v == '\0')
		return false;
	el = xcalloc(1, sizeof(*el));
	el->m = m;
	el->timer.data = el;
	if (uv_timer_init(shard->loop, &el->timer) != 0 ||
	    uv_timer_start(&el->timer, sw_evict_later_cb, strtoull(v, NULL, 10), 0) != 0)
		fatalx("%s: timer", __func__);
	return true;
}
#endif

static void
sw_shard_cb(struct xloop_inbox *in, struct xloop_msg *x)
{
	struct submit *shard = in->data;
	struct sw_msg *m = (struct sw_msg *)x;

	if (shard->magic != SUBMIT_MAGIC || shard->front == NULL)
		fatalx("%s: bad shard", __func__);
	switch (m->kind) {
	case SW_RESERVED:
		if (sw_pool_reserved(shard, m))
			return;             /* posted back: the front's now */
		break;
	case SW_BEGUN:
		submit_session_begun(m->s, m->rc, m->txn);
		break;
	case SW_COMMITTED:
		submit_session_committed(m->s, m->rc, m->qid);
		break;
	case SW_LOOKED_UP:
		m->dcb(m->s, m->st, m->owned);
		directory_owned_unref(m->owned);
		break;
	case SW_COUNTED:
		m->ccb(m->s, m->answered ? &m->counts : NULL);
		break;
	case SW_EVICT:
#ifdef RELAY_TEST_HOOKS
		if (sw_evict_later(shard, m))
			return;             /* carried out later, by sw_evict_later_cb */
#endif
		sw_shard_evict(shard, m);
		break;
	case SW_RELOAD:
		sw_shard_reload(shard, m);
		sw_pool_release(shard);     /* no reserved txn outlives a reload */
		sw_pool_refill(shard);
		break;
	case SW_STOP:
		shard->worker->pool_closed = true;
		sw_pool_release(shard);
		submit_shutdown_shard(shard, sw_shard_stopped, shard);
		break;
	default:
		fatalx("%s: message %d in a shard's inbox", __func__, (int)m->kind);
	}
	sw_msg_free(m);
}

static void
sw_main(void *arg)
{
	struct submit_worker *w = arg;
	struct sw_msg *m;
	int rc;

	pthread_setname_np(pthread_self(), "relayd-submit");
	sw_pool_refill(w->shard);       /* the first pool: reserved by the front's running loop */
	uv_run(&w->loop, UV_RUN_DEFAULT);
	if ((rc = uv_loop_close(&w->loop)) != 0)
		fatalx("%s: uv_loop_close: %s", __func__, uv_strerror(rc));
	if (!w->stopped_posted) {
		m = sw_msg_new(SW_STOPPED, w->shard, NULL);
		sw_to_front(w->shard, m);
	}
}

/* ------------------------------------------------------------------ */
/* The front's side: make, start, reload, stop, free */

/*
 * Whether nobody listens on a's address: 0, or -EADDRINUSE (-errno).  A
 * socket without SO_REUSEPORT cannot bind where another listens, with or
 * without it; the shards' sockets can, beside any other process of the same
 * user that set it (a second relayd would share the port, the kernel
 * spreading the connections over both).  So the first shard's bind is
 * preceded by this one, made and closed: a second relayd fails to start
 * with "Address already in use", as with one loop.  SO_REUSEADDR: a
 * connection of a past run in TIME_WAIT is no listener.
 */
static int sw_bound(const struct conf_listen *a, bool share);

static int
sw_port_free(const struct conf_listen *a)
{
	int fd = sw_bound(a, false);

	if (fd < 0)
		return fd;
	close(fd);
	return 0;
}

/* A socket bound to a's address (SO_REUSEADDR; SO_REUSEPORT if share): the
 * fd or -errno. */
static int
sw_bound(const struct conf_listen *a, bool share)
{
	int fd, on = 1, e;

	if ((fd = socket(a->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) == -1)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
	    (share && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0) ||
	    (a->addr.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on)) != 0) ||
	    bind(fd, (const struct sockaddr *)&a->addr, a->addrlen) != 0) {
		e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

/* A listening socket on a's address that shares the port (SO_REUSEPORT): the fd or -errno. */
static int
sw_socket(const struct conf_listen *a)
{
	int fd = sw_bound(a, true), e;

	if (fd >= 0 && listen(fd, SUBMIT_BACKLOG) != 0) {
		e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

int
submit_workers_new(struct submit *front, unsigned n, struct buf *err)
{
	const struct conf *c = front->conf;
	size_t nl = c->submit.nlisten + c->submit.nlisten_tls, i, j, k;
	struct submit_workers *ws;
	struct sw_msg *m;
	int *fds = xcalloc(n * nl, sizeof(*fds));
	int rc;

	/* every socket first: a failure leaves nothing bound and no thread */
	for (i = 0; i < n; i++)
		for (j = 0; j < nl; j++) {
			const struct conf_listen *a = j < c->submit.nlisten ? &c->submit.listen[j] :
			    &c->submit.listen_tls[j - c->submit.nlisten];

			if (i > 0 || (fds[i * nl + j] = sw_port_free(a)) == 0)
				fds[i * nl + j] = sw_socket(a);
			if (fds[i * nl + j] < 0) {
				buf_printf(err, "%s %s: cannot listen: %s\n", j < c->submit.nlisten ?
				    "submit.listen" : "submit.listen_tls", a->text,
				    strerror(-fds[i * nl + j]));
				for (k = i * nl + j; k-- > 0;)
					close(fds[k]);
				free(fds);
				return -1;
			}
		}

	ws = xcalloc(1, sizeof(*ws));
	ws->w = xcalloc(n, sizeof(*ws->w));
	ws->n = n;
	if ((rc = uv_mutex_init(&ws->lock)) != 0 ||
	    (rc = xloop_inbox_init(&ws->inbox, front->loop, sw_front_cb, front)) != 0)
		fatalx("%s: %s", __func__, uv_strerror(rc));
	ws->inbox_open = true;
	front->workers = ws;
	front->shared_lock = &ws->lock;
	for (i = 0; i < n; i++) {
		struct submit_worker *w = &ws->w[i];
		struct submit *sh = xcalloc(1, sizeof(*sh));

		w->magic = SUBMIT_WORKER_MAGIC;
		w->shard = sh;
		w->front = front;
		if ((rc = uv_loop_init(&w->loop)) != 0 ||
		    (rc = xloop_inbox_init(&w->inbox, &w->loop, sw_shard_cb, sh)) != 0)
			fatalx("%s: %s", __func__, uv_strerror(rc));
		sh->magic = SUBMIT_MAGIC;
		sh->loop = &w->loop;
		sh->listen_conf = conf_ref(front->listen_conf);
		sh->front = front;
		sh->worker = w;
		sh->shard_no = (unsigned)i + 1;
		sh->shared_lock = &ws->lock;
		sh->limits = front->limits;
		sh->slots = front->slots;
		m = sw_reload_msg(front, sh);   /* conf, senders, DKIM, TLS, mechanisms */
		sw_shard_reload(sh, m);
		sw_msg_free(m);
		sh->cluster = front->cluster;
		TAILQ_INIT(&sh->sessions);
		TAILQ_INIT(&sh->auth_waiting);
		sh->listeners = xcalloc(nl + 1, sizeof(*sh->listeners));
		for (j = 0; j < nl; j++) {
			bool tls = j >= c->submit.nlisten;
			const struct conf_listen *a = !tls ? &c->submit.listen[j] :
			    &c->submit.listen_tls[j - c->submit.nlisten];

			if (submit_server_listen(sh, a, tls, fds[i * nl + j], i == 0, err) != 0)
				fatalx("%s: %s", __func__, buf_cstr(err));
		}
	}
	free(fds);
	ws->nrunning = n;
	return 0;
}

void
submit_workers_start(struct submit *front)
{
	struct submit_workers *ws = front->workers;
	size_t i;
	int rc;

	if (ws == NULL || ws->started)
		return;
	ws->started = true;
	for (i = 0; i < ws->n; i++) {
		ws->w[i].shard->cluster = front->cluster;   /* set after submit_new */
		ws->w[i].started = true;
		if ((rc = uv_thread_create(&ws->w[i].tid, sw_main, &ws->w[i])) != 0)
			fatalx("%s: uv_thread_create: %s", __func__, uv_strerror(rc));
	}
}

/* RELOAD or STOP to every shard, unless they are stopping. */
static void
sw_post_all(struct submit *front, enum sw_kind kind)
{
	struct submit_workers *ws = front->workers;
	struct submit *sh;
	size_t i;

	if (ws == NULL || ws->stopping)
		return;
	ws->stopping = kind == SW_STOP;
	submit_workers_start(front);        /* never started (a failed start): they stop at once */
	for (i = 0; i < ws->n; i++) {
		sh = ws->w[i].shard;
		sw_to_shard(kind == SW_RELOAD ? sw_reload_msg(front, sh) : sw_msg_new(kind, sh, NULL),
		    kind);
	}
}

void
submit_workers_reload(struct submit *front)
{
	sw_post_all(front, SW_RELOAD);
}

/*
 * One loop closes its listeners in the turn that decides the stop, so that a
 * client connecting after it is refused, not queued and then reset.  The
 * shards' STOP is on its way: their sockets stop listening now, from here
 * (shutdown(2) of the socket through its spare descriptor, which the shard
 * changes only after STOP; the shard's accept then fails and it closes the
 * listener, submit_server.c).
 */
void
submit_workers_shutdown(struct submit *front)
{
	struct submit_workers *ws = front->workers;
	size_t i, j;

	for (i = 0; ws != NULL && !ws->stopping && i < ws->n; i++)
		for (j = 0; j < ws->w[i].shard->nlisteners; j++)
			if (ws->w[i].shard->listeners[j].spare_fd >= 0)
				(void)shutdown(ws->w[i].shard->listeners[j].spare_fd, SHUT_RD);
	sw_post_all(front, SW_STOP);
}

bool
submit_workers_busy(const struct submit *front)
{
	return front->workers != NULL && front->workers->inbox_open;
}

size_t
submit_workers_nsessions(const struct submit *front)
{
	const struct submit_workers *ws = front->workers;
	size_t i, n = 0;

	for (i = 0; ws != NULL && i < ws->n; i++)
		n += __atomic_load_n(&ws->w[i].shard->nsessions, __ATOMIC_RELAXED);
	return n;
}

size_t
submit_workers_count(const struct submit *front)
{
	return front->workers != NULL ? front->workers->n : 1;
}

unsigned
submit_workers_abandoned(const struct submit *front)
{
	const struct submit_workers *ws = front->workers;
	unsigned n = 0;
	size_t i;

	for (i = 0; ws != NULL && i < ws->n; i++)
		n += ws->w[i].abandoned;
	return n;
}

void
submit_workers_free(struct submit *front)
{
	struct submit_workers *ws = front->workers;
	size_t i;

	if (ws == NULL)
		return;
	if (ws->inbox_open)
		fatalx("%s: the shards have not stopped", __func__);
	for (i = 0; i < ws->n; i++)
		if ((ws->w[i].started && !ws->w[i].joined) || ws->w[i].npool > 0)
			fatalx("%s: a shard's thread still runs or holds txns", __func__);
	for (i = 0; i < ws->n; i++) {
		xloop_inbox_destroy(&ws->w[i].inbox);
		submit_server_free_shard(ws->w[i].shard);
		ws->w[i].magic = 0;
	}
	xloop_inbox_destroy(&ws->inbox);
	uv_mutex_destroy(&ws->lock);
	free(ws->w);
	free(ws);
	front->workers = NULL;
	front->shared_lock = NULL;
}

/* ------------------------------------------------------------------ */
/* A shard's session asks the front */

void
submit_worker_txn_begin(struct submit_session *s)
{
	s->begin_pending = true;
	sw_to_front(s->srv, sw_msg_new(SW_BEGIN, s->srv, s));
}

void
submit_worker_txn_commit(struct submit_session *s, struct queue_txn *txn)
{
	struct sw_msg *m = sw_msg_new(SW_COMMIT, s->srv, s);

	m->txn = txn;
	m->eod_ms = s->eod_ms;
	m->size = (double)s->data.size;
	sw_to_front(s->srv, m);
}

void
submit_worker_txn_abort(struct submit *shard, struct queue_txn *txn)
{
	struct sw_msg *m = sw_msg_new(SW_ABORT, shard, NULL);

	m->txns[0] = txn;
	m->ntxn = 1;
	sw_to_front(shard, m);
}

void
submit_worker_lookup(struct submit_session *s, const char *login, bool fresh, directory_cb *cb)
{
	struct sw_msg *m = sw_msg_new(SW_LOOKUP, s->srv, s);

	m->name = xstrdup(login);
	m->fresh = fresh;
	m->dcb = cb;
	sw_to_front(s->srv, m);
}

void
submit_worker_count(struct submit_session *s, const char *what, const char *name,
    const char *const *fields, const long long *incr, size_t n, uint64_t window,
    cluster_count_cb cb)
{
	struct sw_msg *m = sw_msg_new(SW_COUNT, s->srv, cb != NULL ? s : NULL);

	if (n > CLUSTER_COUNT_MAX)
		fatalx("%s: %zu counters", __func__, n);
	m->what = what;
	m->name = xstrdup(name);
	m->fields = fields;
	memcpy(m->incr, incr, n * sizeof(*incr));
	m->n = n;
	m->window = window;
	m->ccb = cb;
	sw_to_front(s->srv, m);
}

void
submit_worker_stat(struct submit *shard, unsigned connections, unsigned auth_failed,
    const char *reject)
{
	struct sw_msg *m = sw_msg_new(SW_STAT, shard, NULL);

	m->connections = connections;
	m->auth_failed = auth_failed;
	if (reject != NULL)
		m->reject = (int)stats_reject_reason(reject);
	sw_to_front(shard, m);
}

bool
submit_worker_evict(struct submit_session *v, const char *reason, size_t unauth)
{
	struct sw_msg *m;

	if (v->srv->worker->closed)
		return false;
	m = sw_msg_new(SW_EVICT, v->srv, v);
	snprintf(m->sid, sizeof(m->sid), "%s", v->id);
	m->reason = reason;
	m->unauth = unauth;
	v->srv->front->nevicting++;     /* under the lock, as make_room's check */
	sw_to_shard(m, SW_EVICT);
	return true;
}
