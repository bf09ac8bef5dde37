/*
 * queue_scan.c - the start-up scan of msg/ on a thread of its own, so that
 * relayd answers while a large queue loads (QUEUE.md "The scan").  The
 * thread walks the directory and parses each file (queue_scan_entry():
 * corrupt files are moved and logged as by queue_scan()); the loop takes
 * the parsed messages in batches of QUEUE_SCAN_BATCH per iteration, and
 * stops handing a batch over after QUEUE_SCAN_TURN_MS (the rest waits for
 * the next iteration, after the loop's I/O), and none while the writer is
 * QUEUE_SCAN_OPS_MAX records and removals behind (a waiter resumes it).
 * The walk gives back the listing's memory as it passes it.  Queue
 * ids made by this process while the walk runs are noted
 * (queue_scanner_made(), called when the id is made, before its file can
 * be in msg/) and skipped, so no message is loaded twice.  A stop never
 * waits for the thread on the loop: the thread quits at its next check (it
 * may be reading msg/ itself, a million names, or one file), and the loop
 * joins it once it has said so; the queue's close waits for that.
 */
#include "queue/queue_int.h"
#include "common/htab.h"
#include "common/log.h"
#include "common/util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QUEUE_SCAN_PENDING 4096         /* parsed, not yet taken by the loop: at most */
#define QUEUE_SCAN_RELEASE 4096         /* names walked between give-backs of their memory */

struct queue_scan_made {
	struct htab_node node;
	char qid[QID_MAX];
};

struct queue_scanner {
	struct queue *q;
	queue_new_cb *cb;
	queue_scan_done_cb *done;
	void *arg;
	uv_async_t async;               /* the thread says: messages (or: finished) */
	uv_thread_t thread;
	bool started, joined, reported;
	bool stopped;                   /* loop: queue_scanner_stop() was called */
	unsigned dir_stall_ms;          /* RELAY_TEST_HOOKS: after reading msg/, sleep this long */
	uint64_t t0;                    /* mono ms at the start of the walk */
	unsigned stall_ms;              /* RELAY_TEST_HOOKS: each file waits this long first */
	size_t handed;                  /* loop: messages given to cb */
	bool pacing;                    /* loop: waiting (waiter) for the writer's backlog */
	struct queue_waiter waiter;
	struct queue_msg *carry[QUEUE_SCAN_BATCH];  /* loop: taken from v, not handed yet: */
	size_t carry_head, carry_n;     /* carry[carry_head..carry_n) */

	uv_mutex_t mtx;                 /* the rest */
	uv_cond_t cond;
	struct htab made;               /* queue ids made since the scanner exists */
	struct queue_msg **v;           /* parsed, for the loop: v[head..n) */
	size_t head, n, cap;
	size_t corrupt;
	bool stop, finished;
};

#ifdef RELAY_TEST_HOOKS
static unsigned
queue_scan_stall(const char *name)
{
	const char *v = getenv(name);

	return v != NULL ? (unsigned)strtoul(v, NULL, 10) : 0;
}
#else
static unsigned
queue_scan_stall(const char *name)
{
	(void)name;
	return 0;
}
#endif

static bool
queue_scan_stopped(struct queue_scanner *sc)
{
	bool stop;

	uv_mutex_lock(&sc->mtx);
	stop = sc->stop;
	uv_mutex_unlock(&sc->mtx);
	return stop;
}

static void
queue_scan_main(void *arg)
{
	struct queue_scanner *sc = arg;
	struct queue_dirent *v;
	struct queue_msg *m;
	size_t i, n = 0;
	uint64_t end, now;
	bool skip;
	int rc;

	if ((v = queue_read_dir(sc->q->msgfd, &n)) == NULL)
		queue_log_errno(NULL, "readdir(msg/)", errno);
	if (sc->dir_stall_ms > 0) {
		/* RELAYD_TEST_SCAN_DIR_STALL_MS: a read of a huge msg/, which no
		 * stop flag cuts short (readdir, the sort). */
		usleep(sc->dir_stall_ms * 1000u);
		log_event(LOG_INFO, "queue_scan_test_stall_over", NULL);
	}
	for (i = 0; v != NULL && i < n; i++) {
		if (i % QUEUE_SCAN_RELEASE == 0)
			queue_dir_release(v, n, i);     /* what the walk passed: not kept to its end */
		uv_mutex_lock(&sc->mtx);
		while (!sc->stop && sc->n - sc->head >= QUEUE_SCAN_PENDING)
			uv_cond_wait(&sc->cond, &sc->mtx);
		if (sc->stall_ms > 0) {
			/* The whole stall: the loop's "room again" signals do not cut it. */
			end = util_mono_ms() + sc->stall_ms;
			while (!sc->stop && (now = util_mono_ms()) < end)
				(void)uv_cond_timedwait(&sc->cond, &sc->mtx, (end - now) * 1000000ULL);
		}
		skip = sc->stop || htab_find(&sc->made, v[i].name) != NULL;
		uv_mutex_unlock(&sc->mtx);
		if (queue_scan_stopped(sc))
			break;
		if (skip)
			continue;       /* queued by this process: the router has it */
		rc = queue_scan_entry(sc->q, v[i].name, &m);
		uv_mutex_lock(&sc->mtx);
		if (rc > 0) {
			if (sc->n == sc->cap) {
				sc->cap = sc->cap ? sc->cap * 2 : 256;
				sc->v = xrealloc(sc->v, sc->cap * sizeof(*sc->v));
			}
			sc->v[sc->n++] = m;
		} else if (rc < 0)
			sc->corrupt++;
		uv_mutex_unlock(&sc->mtx);
		if (rc > 0)
			uv_async_send(&sc->async);
	}
	if (v != NULL)
		queue_free_dir(v, n);
	uv_mutex_lock(&sc->mtx);
	sc->finished = true;
	uv_mutex_unlock(&sc->mtx);
	uv_async_send(&sc->async);
}

static void
queue_scan_join(struct queue_scanner *sc)
{
	struct htab_iter it;
	struct htab_node *nd, *next;

	if (sc->started && !sc->joined) {
		uv_thread_join(&sc->thread);
		sc->joined = true;
	}
	for (nd = htab_first(&sc->made, &it); nd != NULL; nd = next) {
		next = htab_next(&it);
		free(HTAB_ENTRY(nd, struct queue_scan_made, node));
	}
	htab_free(&sc->made);
	if (sc->q->scanner == sc)
		sc->q->scanner = NULL;
}

static void
queue_scan_closed(uv_handle_t *h)
{
	struct queue_scanner *sc = h->data;

	uv_mutex_destroy(&sc->mtx);
	uv_cond_destroy(&sc->cond);
	free(sc->v);
	free(sc);
}

/*
 * After a stop, once the thread is over (or never ran): join it (it has
 * nothing left to do), drop what it loaded but did not hand over (still in
 * msg/, loaded again at the next start), free the scanner, and let a
 * closing queue finish.
 */
static void
queue_scan_end(struct queue_scanner *sc)
{
	struct queue *q = sc->q;
	size_t i;

	queue_scan_join(sc);
	for (i = sc->carry_head; i < sc->carry_n; i++)
		queue_msg_free(sc->carry[i]);
	sc->carry_head = sc->carry_n = 0;
	for (i = sc->head; i < sc->n; i++)
		queue_msg_free(sc->v[i]);
	sc->head = sc->n = 0;
	uv_close((uv_handle_t *)&sc->async, queue_scan_closed);
	queue_maybe_finish(q);
}

/* Loop: the writer's backlog is written; hand over again. */
static void
queue_scan_drained(void *arg)
{
	struct queue_scanner *sc = arg;

	sc->pacing = false;
	uv_async_send(&sc->async);
}

/*
 * Loop: true if no message goes now: the records and removals issued (each
 * message handed over may issue one at once: a restart with its
 * destinations down defers them all) are QUEUE_SCAN_OPS_MAX or more not
 * yet written; queue_scan_drained() resumes once they are.  Without it a
 * scan faster than the writer piled up hundreds of thousands of records in
 * memory, and their freed buffers stayed as holes between the messages'
 * structures (tests/bench/README.md "The start-up scan's holes").
 */
static bool
queue_scan_paced(struct queue_scanner *sc)
{
	struct queue *q = sc->q;

	if (sc->pacing)
		return true;
	if (q->ops_total - q->ops_done < QUEUE_SCAN_OPS_MAX)
		return false;
	sc->waiter.cb = queue_scan_drained;
	sc->waiter.arg = sc;
	if (queue_wait_acked(q, &sc->waiter))
		return false;
	sc->pacing = true;
	return true;
}

/* Loop, under sc->mtx: take the next batch from the thread into carry. */
static void
queue_scan_take(struct queue_scanner *sc)
{
	size_t k = sc->n - sc->head;

	if (k > QUEUE_SCAN_BATCH)
		k = QUEUE_SCAN_BATCH;
	if (k > 0)      /* sc->v is NULL until the first message */
		memcpy(sc->carry, sc->v + sc->head, k * sizeof(*sc->carry));
	sc->carry_head = 0;
	sc->carry_n = k;
	sc->head += k;
	if (sc->head == sc->n)
		sc->head = sc->n = 0;
	else if (sc->head >= sc->cap / 2) {
		memmove(sc->v, sc->v + sc->head, (sc->n - sc->head) * sizeof(*sc->v));
		sc->n -= sc->head;
		sc->head = 0;
	}
	uv_cond_signal(&sc->cond);      /* room again */
}

/*
 * Loop: hand over one batch, for at most QUEUE_SCAN_TURN_MS (what is left
 * goes first at the next iteration, after the loop's I/O: under load a
 * batch of 119 messages once held the loop 106 ms); at the end, join the
 * thread and report.
 */
static void
queue_scan_async(uv_async_t *h)
{
	struct queue_scanner *sc = h->data;
	uint64_t t0 = uv_hrtime(), turn = (uint64_t)QUEUE_SCAN_TURN_MS * 1000000;
	struct queue_msg *m;
	size_t corrupt;
	bool more, finished;

	if (sc->stopped) {
		/* Nothing more for the caller; the thread's last word ends it. */
		uv_mutex_lock(&sc->mtx);
		finished = sc->finished;
		uv_mutex_unlock(&sc->mtx);
		if (finished)
			queue_scan_end(sc);
		return;
	}
	if (sc->carry_head == sc->carry_n) {
		uv_mutex_lock(&sc->mtx);
		queue_scan_take(sc);
		uv_mutex_unlock(&sc->mtx);
	}
	while (sc->carry_head < sc->carry_n) {
		if (queue_scan_paced(sc))
			return;         /* the rest once the writer's backlog is written */
		m = sc->carry[sc->carry_head++];
		sc->handed++;
		sc->cb(sc->arg, m);
		if (sc->stopped)
			return;         /* queue_scan_end() frees the rest */
		if (uv_hrtime() - t0 >= turn)
			break;
	}
	if (sc->carry_head < sc->carry_n) {
		uv_async_send(&sc->async);      /* the rest after this iteration's I/O */
		return;
	}
	uv_mutex_lock(&sc->mtx);
	more = sc->n > sc->head;
	finished = sc->finished && !more;
	corrupt = sc->corrupt;
	uv_mutex_unlock(&sc->mtx);
	if (more)
		uv_async_send(&sc->async);      /* the next batch after this iteration's I/O */
	else if (finished && !sc->reported) {
		sc->reported = true;
		queue_scan_join(sc);
		queue_scan_log(sc->q, sc->handed, corrupt);
		sc->done(sc->arg, sc->handed, corrupt, util_mono_ms() - sc->t0);
	}
}

struct queue_scanner *
queue_scanner_new(struct queue *q, queue_new_cb *cb, queue_scan_done_cb *done, void *arg)
{
	struct queue_scanner *sc = xcalloc(1, sizeof(*sc));

	sc->q = q;
	sc->cb = cb;
	sc->done = done;
	sc->arg = arg;
	sc->stall_ms = queue_scan_stall("RELAYD_TEST_SCAN_STALL_MS");
	sc->dir_stall_ms = queue_scan_stall("RELAYD_TEST_SCAN_DIR_STALL_MS");
	htab_init(&sc->made, NULL);
	if (uv_mutex_init(&sc->mtx) != 0 || uv_cond_init(&sc->cond) != 0 ||
	    uv_async_init(q->loop, &sc->async, queue_scan_async) != 0)
		fatalx("%s: cannot set up the scan", __func__);
	sc->async.data = sc;
	q->scanner = sc;
	return sc;
}

void
queue_scanner_made(struct queue_scanner *sc, const char *qid)
{
	struct queue_scan_made *e;

	if (sc->reported)
		return;
	e = xcalloc(1, sizeof(*e));
	memcpy(e->qid, qid, QID_MAX);
	uv_mutex_lock(&sc->mtx);
	if (!sc->finished)
		htab_insert(&sc->made, &e->node, e->qid);
	else
		free(e);        /* the walk is over: it cannot meet the id any more */
	uv_mutex_unlock(&sc->mtx);
}

void
queue_scanner_run(struct queue_scanner *sc)
{
	sc->t0 = util_mono_ms();
	if (uv_thread_create(&sc->thread, queue_scan_main, sc) != 0)
		fatalx("%s: cannot start the scan thread", __func__);
	sc->started = true;
}

void
queue_scanner_counts(struct queue_scanner *sc, size_t *loaded, size_t *corrupt, bool *running)
{
	uv_mutex_lock(&sc->mtx);
	*corrupt = sc->corrupt;
	uv_mutex_unlock(&sc->mtx);
	*loaded = sc->handed;
	*running = !sc->reported;
}

/*
 * Tell the thread to quit; never wait for it here.  It checks the flag
 * before each file (and wakes from a wait for room), so it ends within
 * the read it is doing; its last uv_async_send() brings queue_scan_end()
 * to the loop.  Not started, or over already: ended now.
 */
void
queue_scanner_stop(struct queue_scanner *sc)
{
	bool finished;

	if (sc->stopped)
		fatalx("%s: stopped twice", __func__);
	sc->stopped = true;
	if (sc->pacing) {
		queue_wait_cancel(sc->q, &sc->waiter);
		sc->pacing = false;
	}
	uv_mutex_lock(&sc->mtx);
	sc->stop = true;
	finished = sc->finished;
	uv_cond_broadcast(&sc->cond);
	uv_mutex_unlock(&sc->mtx);
	if (!sc->started || sc->joined || finished)
		queue_scan_end(sc);
}
