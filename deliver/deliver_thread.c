/*
 * deliver_thread.c - the delivery thread: outbound delivery (the pool of
 * deliver.c, its sessions, their sockets and TLS) runs on an event loop of
 * its own, on a thread of its own, beside the caller's loop (the router's,
 * which also runs the submission sessions).  This file owns that thread, its
 * loop, the inbox of calls made on the caller's loop and the outbox of
 * results going back to it, and the caller's front (a struct deliver whose
 * ->thread is set: deliver.c passes its public calls on to here).
 *
 * What crosses the threads, and nothing else (through two common/xloop.h
 * inboxes, each under its own lock):
 *  - inbox: START (req, cb, arg), RELOAD (a conf reference), SHUTDOWN; the
 *    thread's uv_async drains it in order into its pool (deliver.c), which
 *    runs each request as it would on one loop;
 *  - outbox: RESULT (a copy of the struct deliver_result, with req, cb, arg),
 *    then DONE once the pool has shut down and the thread's loop has ended;
 *    the caller's uv_async drains it and calls cb on the caller's loop.
 * Between START and its RESULT the request and all it points to (message
 * path, envelope strings, TLSA records, credentials) belong to the thread:
 * the caller reads and changes none of it until cb (the router keeps its job
 * alive and untouched while it delivers).  rcpts[].reply is malloc'd on the
 * thread and freed by the caller (deliver_req_clear).  The conf is an
 * immutable snapshot with an atomic reference count.
 *
 * Order and contracts: results come back in the order the pool produced them,
 * and DONE after the last; deliver_start() never calls back (results arrive
 * through the outbox); the done of deliver_shutdown() runs on the caller's
 * loop after the thread has been joined and the caller's async closed, so
 * deliver_free() may follow at once.
 *
 * libsasl's client side is set up (sasl_client_init) and given back
 * (sasl_client_done, in deliver_free) on the caller's thread, as without the
 * thread: both rebuild or free libsasl's global state, which submit/'s
 * server side reads on that thread.
 *
 * Never: call a request's callback on the delivery thread, or touch the pool
 * from the caller's thread while the thread runs (the pool is made before the
 * thread starts and freed by the caller once it has joined the thread; the
 * one exception is its SASL reference, taken by deliver_thread_start()
 * before it posts the request that needs it).
 */
#include "deliver/deliver_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "common/xloop.h"

#define DELIVER_MAGIC_THREAD    0x444c7654u     /* "DLvT" */

enum dt_kind {
	DT_START,           /* inbox: run req */
	DT_RELOAD,          /* inbox: a new conf (one reference) */
	DT_SHUTDOWN,        /* inbox: shut the pool down, end the thread */
	DT_RESULT,          /* outbox: req's result */
	DT_DONE,            /* outbox: the thread has ended its loop */
};

struct dt_msg {
	struct xloop_msg x;         /* first: the inboxes hand back this */
	struct deliver_thread *dt;
	enum dt_kind kind;
	struct deliver_req *req;
	deliver_cb *cb;
	void *arg;
	struct conf *conf;
	struct deliver_result res;
};

struct deliver_thread {
	uint32_t magic;
	/* the caller's side */
	uv_loop_t *caller;
	struct xloop_inbox outbox;  /* on the caller's loop: RESULT, DONE */
	bool shutting_down;         /* deliver_shutdown() was called: START refused */
	bool results_closed;
	void (*done)(void *);
	void *done_arg;
	/* the delivery thread's side */
	uv_thread_t tid;
	uv_loop_t loop;
	struct xloop_inbox inbox;   /* on the thread's loop: START, RELOAD, SHUTDOWN */
	struct deliver *pool;       /* deliver.c's pool, used by the thread only */
	unsigned test_stall_ms;     /* RELAYD_TEST_DELIVER_STALL_MS: block the thread once */
};

static struct dt_msg *dt_msg_new(struct deliver_thread *dt, enum dt_kind kind);

/* ------------------------------------------------------------------ */
/* The delivery thread */

static void
dt_pool_done(void *arg)
{
	struct deliver_thread *dt = arg;

	xloop_inbox_close(&dt->inbox, NULL);  /* the loop ends when the pool's handles have closed */
}

/* The pool's callback, on the thread: the result goes back in the START's message. */
static void
dt_start_result(void *arg, struct deliver_req *req, const struct deliver_result *res)
{
	struct dt_msg *m = arg;

	if (req != m->req)
		fatalx("%s: result for another request", __func__);
	m->kind = DT_RESULT;
	m->res = *res;
	xloop_post(&m->dt->outbox, &m->x);
}

static void
dt_inbox_cb(struct xloop_inbox *in, struct xloop_msg *x)
{
	struct deliver_thread *dt = in->data;
	struct dt_msg *m = (struct dt_msg *)x;

	switch (m->kind) {
	case DT_START:
		if (dt->test_stall_ms > 0) {
			/* tests: a delivery thread stuck, as in a blocking library call */
			uv_sleep(dt->test_stall_ms);
			dt->test_stall_ms = 0;
		}
		if (deliver_start(dt->pool, m->req, dt_start_result, m) != 0) {
			struct deliver_result res;

			/* Checked on the caller's side already: not expected. */
			memset(&res, 0, sizeof(res));
			res.status = DELIVER_HOST_FAIL;
			res.io_err = IO_ERR_OTHER;
			snprintf(res.status_code, sizeof(res.status_code), "4.3.0");
			snprintf(res.reply, sizeof(res.reply), "could not start a delivery attempt");
			dt_start_result(m, m->req, &res);
		}
		break;
	case DT_RELOAD:
		deliver_reload(dt->pool, m->conf);
		conf_unref(m->conf);
		free(m);
		break;
	case DT_SHUTDOWN:
		free(m);
		deliver_shutdown(dt->pool, dt_pool_done, dt);
		break;
	default:
		fatalx("%s: message %d in the inbox", __func__, (int)m->kind);
	}
}

static void
dt_main(void *arg)
{
	struct deliver_thread *dt = arg;
	int rc;

	pthread_setname_np(pthread_self(), "relayd-deliver");
	uv_run(&dt->loop, UV_RUN_DEFAULT);
	if ((rc = uv_loop_close(&dt->loop)) != 0)
		fatalx("%s: uv_loop_close: %s", __func__, uv_strerror(rc));
	xloop_post(&dt->outbox, &dt_msg_new(dt, DT_DONE)->x);
}

/* ------------------------------------------------------------------ */
/* The caller's side */

static void
dt_results_closed(uv_handle_t *h)
{
	struct deliver_thread *dt = ((struct xloop_inbox *)h->data)->data;
	void (*done)(void *) = dt->done;

	dt->results_closed = true;
	dt->done = NULL;
	if (done != NULL)
		done(dt->done_arg);
}

static void
dt_outbox_cb(struct xloop_inbox *in, struct xloop_msg *x)
{
	struct deliver_thread *dt = in->data;
	struct dt_msg *m = (struct dt_msg *)x;

	if (dt->magic != DELIVER_MAGIC_THREAD)
		fatalx("%s: bad delivery thread", __func__);
	switch (m->kind) {
	case DT_RESULT:
		m->cb(m->arg, m->req, &m->res);
		free(m);
		break;
	case DT_DONE:
		free(m);
		/* The thread has posted its last message: it is returning. */
		uv_thread_join(&dt->tid);
		deliver_free(dt->pool);     /* here: sasl_client_done on this thread */
		dt->pool = NULL;
		xloop_inbox_close(&dt->outbox, dt_results_closed);
		break;
	default:
		fatalx("%s: message %d in the outbox", __func__, (int)m->kind);
	}
}

struct deliver *
deliver_new_thread(uv_loop_t *loop, struct conf *conf)
{
	struct deliver *d = xcalloc(1, sizeof(*d));
	struct deliver_thread *dt = xcalloc(1, sizeof(*dt));
	int rc;

	d->loop = loop;
	d->thread = dt;
	dt->magic = DELIVER_MAGIC_THREAD;
	dt->caller = loop;
	if ((rc = uv_loop_init(&dt->loop)) != 0 ||
	    (rc = xloop_inbox_init(&dt->inbox, &dt->loop, dt_inbox_cb, dt)) != 0 ||
	    (rc = xloop_inbox_init(&dt->outbox, loop, dt_outbox_cb, dt)) != 0)
		fatalx("%s: %s", __func__, uv_strerror(rc));
#ifdef RELAY_TEST_HOOKS
	{
		const char *v = getenv("RELAYD_TEST_DELIVER_STALL_MS");

		if (v != NULL)
			dt->test_stall_ms = (unsigned)strtoul(v, NULL, 10);
	}
#endif
	/* Made here, used only by the thread from now on (its start orders the two). */
	dt->pool = deliver_new(&dt->loop, conf);
	dt->pool->sasl_by_caller = true;
	if ((rc = uv_thread_create(&dt->tid, dt_main, dt)) != 0)
		fatalx("%s: uv_thread_create: %s", __func__, uv_strerror(rc));
	return d;
}

static struct dt_msg *
dt_msg_new(struct deliver_thread *dt, enum dt_kind kind)
{
	struct dt_msg *m = xcalloc(1, sizeof(*m));

	m->dt = dt;
	m->kind = kind;
	return m;
}

int
deliver_thread_start(struct deliver_thread *dt, struct deliver_req *req, deliver_cb *cb, void *arg)
{
	char ip[64], name[DELIVER_KEY_MAX], err[256];
	struct dt_msg *m;
	int rc;

	if (dt->magic != DELIVER_MAGIC_THREAD)
		fatalx("%s: bad delivery thread", __func__);
	if (dt->shutting_down)
		return RELAY_ECLOSED;
	if (cb == NULL)
		return RELAY_EINVAL;
	/* The pool's own refusals, here, so that the caller hears them at once. */
	if ((rc = deliver_req_key(req, name, sizeof(name), ip, sizeof(ip))) != 0)
		return rc;
	/* libsasl's client side, on this thread; a failure (logged) fails the
	 * attempt at AUTH on the thread, as it would without the thread */
	if (req->auth_user != NULL)
		(void)deliver_auth_caller_init(dt->pool, err, sizeof(err));
	m = dt_msg_new(dt, DT_START);
	m->req = req;
	m->cb = cb;
	m->arg = arg;
	xloop_post(&dt->inbox, &m->x);
	return 0;
}

void
deliver_thread_reload(struct deliver_thread *dt, struct conf *conf)
{
	struct dt_msg *m;

	if (dt->shutting_down)
		return;             /* the thread reads its inbox no more */
	m = dt_msg_new(dt, DT_RELOAD);
	m->conf = conf_ref(conf);
	xloop_post(&dt->inbox, &m->x);
}

void
deliver_thread_shutdown(struct deliver_thread *dt, void (*done)(void *arg), void *arg)
{
	dt->shutting_down = true;
	dt->done = done;
	dt->done_arg = arg;
	xloop_post(&dt->inbox, &dt_msg_new(dt, DT_SHUTDOWN)->x);
}

void
deliver_thread_free(struct deliver_thread *dt)
{
	if (!dt->results_closed || !xloop_inbox_empty(&dt->inbox) ||
	    !xloop_inbox_empty(&dt->outbox))
		fatalx("%s: deliver_shutdown() has not finished", __func__);
	xloop_inbox_destroy(&dt->inbox);
	xloop_inbox_destroy(&dt->outbox);
	dt->magic = 0;
	free(dt);
}
