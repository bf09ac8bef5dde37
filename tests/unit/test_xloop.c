/*
 * test_xloop.c - the cross-loop inbox (common/xloop.c) with real threads and
 * loops: a request/answer round trip between the main loop and a thread's
 * loop (each callback on its owner's thread, answers in the order posted),
 * several threads posting at once into one inbox (nothing lost, each
 * poster's order kept), and the close protocol (the owner closes its inbox
 * after the last message; the loop ends; what was posted in the closing turn
 * is run first by xloop_inbox_run()).
 */
#include "common/xloop.h"
#include "common/util.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "check.h"

#define ROUNDS          2000
#define POSTERS         3
#define PER_POSTER      5000

enum kind { K_PING, K_PONG, K_STOP, K_DONE, K_MANY };

struct msg {
	struct xloop_msg x;
	enum kind kind;
	int n;
	int poster;
	pthread_t ran_on;       /* the thread the inbox's callback ran on */
};

struct side {
	uv_loop_t loop;
	struct xloop_inbox in;
	pthread_t self;
	struct side *peer;
	uv_thread_t tid;
	int next;               /* the next PING/PONG number expected */
	int bad_order, bad_thread;
	int last[POSTERS];      /* K_MANY: each poster's last number */
	int many, many_bad;
	bool done;
};

static struct msg *
msg_new(enum kind k, int n)
{
	struct msg *m = xcalloc(1, sizeof(*m));

	m->kind = k;
	m->n = n;
	return m;
}

/* The thread's side: answers each PING, ends on STOP. */
static void
worker_cb(struct xloop_inbox *in, struct xloop_msg *x)
{
	struct side *w = in->data;
	struct msg *m = (struct msg *)x;

	if (!pthread_equal(pthread_self(), w->self))
		w->bad_thread++;
	switch (m->kind) {
	case K_PING:
		if (m->n != w->next++)
			w->bad_order++;
		m->kind = K_PONG;
		m->ran_on = pthread_self();
		xloop_post(&w->peer->in, &m->x);
		break;
	case K_STOP:
		free(m);
		xloop_inbox_close(&w->in, NULL);
		break;
	default:
		abort();
	}
}

static void
worker_main(void *arg)
{
	struct side *w = arg;

	w->self = pthread_self();
	uv_run(&w->loop, UV_RUN_DEFAULT);
	uv_loop_close(&w->loop);
	xloop_post(&w->peer->in, &msg_new(K_DONE, 0)->x);
}

static void
main_cb(struct xloop_inbox *in, struct xloop_msg *x)
{
	struct side *s = in->data;
	struct msg *m = (struct msg *)x;

	if (!pthread_equal(pthread_self(), s->self))
		s->bad_thread++;
	switch (m->kind) {
	case K_PONG:
		if (m->n != s->next++)
			s->bad_order++;
		if (pthread_equal(m->ran_on, s->self))
			s->bad_thread++;
		if (s->next == ROUNDS)
			xloop_post(&s->peer->in, &msg_new(K_STOP, 0)->x);
		break;
	case K_MANY:
		if (m->n != s->last[m->poster] + 1)
			s->many_bad++;
		s->last[m->poster] = m->n;
		s->many++;
		break;
	case K_DONE:
		uv_thread_join(&s->peer->tid);
		s->done = true;
		if (s->many == POSTERS * PER_POSTER)
			xloop_inbox_close(&s->in, NULL);
		break;
	default:
		abort();
	}
	if (m->kind == K_MANY && s->many == POSTERS * PER_POSTER && s->done)
		xloop_inbox_close(&s->in, NULL);
	free(m);
}

static struct side *many_to;

static void
poster_main(void *arg)
{
	int p = (int)(intptr_t)arg, i;

	for (i = 1; i <= PER_POSTER; i++) {
		struct msg *m = msg_new(K_MANY, i);

		m->poster = p;
		xloop_post(&many_to->in, &m->x);
	}
}

static void
test_round_trip_and_posters(void)
{
	struct side s, w;
	uv_thread_t posters[POSTERS];
	int i;

	memset(&s, 0, sizeof(s));
	memset(&w, 0, sizeof(w));
	s.self = pthread_self();
	s.peer = &w;
	w.peer = &s;
	CHECK_INT(uv_loop_init(&s.loop), 0);
	CHECK_INT(uv_loop_init(&w.loop), 0);
	CHECK_INT(xloop_inbox_init(&s.in, &s.loop, main_cb, &s), 0);
	CHECK_INT(xloop_inbox_init(&w.in, &w.loop, worker_cb, &w), 0);
	CHECK(xloop_inbox_empty(&s.in));
	/* posted before the thread runs: waits in the inbox */
	for (i = 0; i < ROUNDS; i++)
		xloop_post(&w.in, &msg_new(K_PING, i)->x);
	CHECK(!xloop_inbox_empty(&w.in));
	CHECK_INT(uv_thread_create(&w.tid, worker_main, &w), 0);
	many_to = &s;
	for (i = 0; i < POSTERS; i++)
		CHECK_INT(uv_thread_create(&posters[i], poster_main, (void *)(intptr_t)i), 0);
	uv_run(&s.loop, UV_RUN_DEFAULT);
	for (i = 0; i < POSTERS; i++)
		uv_thread_join(&posters[i]);
	CHECK_INT(uv_loop_close(&s.loop), 0);

	CHECK_INT(w.next, ROUNDS);
	CHECK_INT(s.next, ROUNDS);
	CHECK_INT(w.bad_order + s.bad_order, 0);
	CHECK_INT(w.bad_thread + s.bad_thread, 0);
	CHECK_INT(s.many, POSTERS * PER_POSTER);
	CHECK_INT(s.many_bad, 0);
	for (i = 0; i < POSTERS; i++)
		CHECK_INT(s.last[i], PER_POSTER);
	CHECK(s.done);
	CHECK(xloop_inbox_empty(&s.in));
	CHECK(xloop_inbox_empty(&w.in));
	xloop_inbox_destroy(&s.in);
	xloop_inbox_destroy(&w.in);
}

/* run_cb: counts, and on the first message posts one more to its own inbox
 * and closes it in the same turn, as a shard's stop does with an eviction
 * another loop posted just before (submit_worker.c). */
static int run_count;

static void
run_cb(struct xloop_inbox *in, struct xloop_msg *x)
{
	run_count++;
	if (((struct msg *)x)->n == 0) {
		xloop_post(in, &msg_new(K_MANY, 1)->x);     /* its wake-up: pending */
		xloop_inbox_run(in);
		xloop_inbox_close(in, NULL);
	}
	free(x);
}

/* A close runs nothing by itself: what was posted in the closing turn is
 * run by xloop_inbox_run() first, or it would be left in the inbox (libuv
 * drops a wake-up pending at the close) and destroy would find it. */
static void
test_run_before_close(void)
{
	uv_loop_t loop;
	struct xloop_inbox in;

	run_count = 0;
	CHECK_INT(uv_loop_init(&loop), 0);
	CHECK_INT(xloop_inbox_init(&in, &loop, run_cb, NULL), 0);
	xloop_post(&in, &msg_new(K_MANY, 0)->x);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(uv_loop_close(&loop), 0);
	CHECK_INT(run_count, 2);
	CHECK(xloop_inbox_empty(&in));
	xloop_inbox_destroy(&in);
}

int
main(void)
{
	test_round_trip_and_posters();
	test_run_before_close();
	return check_done();
}
