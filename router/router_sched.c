/*
 * router_sched.c - the scheduler: decides what to try when over the durable
 * queue.  This file keeps the messages (rebuilt from queue_scan() at
 * start-up), their recipients' retry times and expiry, the wake-up heap and
 * its ONE uv_timer, the life cycle and the administration API
 * (router_sched.h).  Where mail goes and what the answers mean is
 * router_sched_dest.c; the reports a message owes (and its delay warning)
 * are router_sched_report.c.  See router/SCHEDULING.md.
 *
 * Owns: every struct sched_msg (found by qid in s->mhash) and the queue_msg
 * itself once the queue handed it over; the heap and timer; the host health
 * table and the run-time route table.
 * Never: changes a message's state except through queue_record(), speaks
 * SMTP, blocks the loop, or keeps one timer per message.
 */
#include "router/router_sched_int.h"
#include "common/log.h"
#include "common/util.h"
#include "dkim/dkim.h"
#include "tlsrpt/tlsrpt.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Pure functions. */

uint64_t
sched_retry_delay(const uint64_t *intervals, size_t n, unsigned attempts, uint32_t rnd)
{
	uint64_t base;
	size_t i;

	if (n == 0 || intervals == NULL)
		base = SCHED_DEFAULT_RETRY;
	else {
		i = attempts == 0 ? 0 : attempts - 1;
		base = intervals[i < n ? i : n - 1];
	}
	return base + (uint64_t)rnd % (base / 10 + 1);
}

uint64_t
sched_rcpt_due(const struct queue_rcpt *qr, const uint64_t *intervals, size_t n, uint32_t rnd)
{
	if (qr->state != RCPT_PENDING)
		return SCHED_NOWAKE;
	if (qr->last_attempt_ms == 0 || !queue_rcpt_has_status(qr))
		return 0;
	if (qr->waiting)
		return 0;               /* it waited for its destination: probe again */
	return qr->last_attempt_ms + sched_retry_delay(intervals, n, qr->attempts, rnd);
}

unsigned
sched_ramp_grow(unsigned window)
{
	if (window == 0 || window >= SCHED_RAMP_MAX / 2)
		return 0;
	return window * 2;
}

unsigned
sched_dest_cap(unsigned max_connections, unsigned window)
{
	unsigned cap = max_connections;

	if (cap < SCHED_RAMP_MAX)
		cap = SCHED_RAMP_MAX;
	if (window != 0 && window < cap)
		cap = window;
	return cap;
}

enum sched_outcome
sched_code_outcome(int code)
{
	if (code >= 200 && code < 300)
		return SCHED_DELIVERED;
	if (code >= 500 && code < 600)
		return SCHED_FAILED;
	return SCHED_DEFERRED;
}

uint64_t
sched_expire_at(uint64_t arrival_ms, const struct conf *c)
{
	return arrival_ms + c->router.max_queue_age;
}

uint64_t
sched_warn_at(uint64_t arrival_ms, const struct conf *c)
{
	if (c->router.delay_warning == 0 || c->router.delay_warning >= c->router.max_queue_age)
		return SCHED_NOWAKE;
	return arrival_ms + c->router.delay_warning;
}

/* ------------------------------------------------------------------ */
/* Clock and randomness. */

uint64_t
sched_now(struct sched *s)
{
	return s->now_fn != NULL ? s->now_fn(s->now_arg) : util_now_ms();
}

uint32_t
sched_rnd(struct sched *s)
{
	uint64_t x;

	if (s->rnd_fn != NULL)
		return s->rnd_fn(s->rnd_arg);
	x = s->rnd_state;                /* xorshift64* */
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	s->rnd_state = x;
	return (uint32_t)((x * 0x2545F4914F6CDD1DULL) >> 32);
}

void
sched_set_clock(struct sched *s, uint64_t (*now)(void *arg), void *arg)
{
	s->now_fn = now;
	s->now_arg = arg;
}

void
sched_set_random(struct sched *s, uint32_t (*rnd)(void *arg), void *arg)
{
	s->rnd_fn = rnd;
	s->rnd_arg = arg;
}

/* ------------------------------------------------------------------ */
/* The wake-up heap (min-heap on at) and its one timer. */

static void
sched_heap_swap(struct sched *s, size_t a, size_t b)
{
	struct sched_wake *t = s->heap[a];

	s->heap[a] = s->heap[b];
	s->heap[b] = t;
	s->heap[a]->pos = (uint32_t)a;
	s->heap[b]->pos = (uint32_t)b;
}

static void
sched_heap_up(struct sched *s, size_t i)
{
	while (i > 0 && s->heap[(i - 1) / 2]->at > s->heap[i]->at) {
		sched_heap_swap(s, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void
sched_heap_down(struct sched *s, size_t i)
{
	size_t l, r, m;

	for (;;) {
		l = 2 * i + 1;
		r = l + 1;
		m = i;
		if (l < s->nheap && s->heap[l]->at < s->heap[m]->at)
			m = l;
		if (r < s->nheap && s->heap[r]->at < s->heap[m]->at)
			m = r;
		if (m == i)
			return;
		sched_heap_swap(s, i, m);
		i = m;
	}
}

void
sched_heap_remove(struct sched *s, struct sched_wake *w)
{
	size_t i = w->pos;

	if (w->at == SCHED_NOWAKE)
		return;
	if (i >= s->nheap || s->heap[i] != w)
		fatalx("%s: wake-up not where it says", __func__);
	w->at = SCHED_NOWAKE;
	s->nheap--;
	if (i != s->nheap) {
		s->heap[i] = s->heap[s->nheap];
		s->heap[i]->pos = (uint32_t)i;
		sched_heap_down(s, i);
		sched_heap_up(s, i);
	}
}

/* Put w in the heap at `at`, move it, or take it out (SCHED_NOWAKE). */
void
sched_heap_set(struct sched *s, struct sched_wake *w, uint64_t at)
{
	if (at == SCHED_NOWAKE) {
		sched_heap_remove(s, w);
		return;
	}
	if (w->at == SCHED_NOWAKE) {
		if (s->nheap == s->cheap) {
			if (s->cheap > UINT32_MAX / 2)
				fatalx("%s: wake-up heap full", __func__);
			s->cheap = s->cheap ? s->cheap * 2 : 64;
			s->heap = xrealloc(s->heap, s->cheap * sizeof(*s->heap));
		}
		w->at = at;
		w->pos = (uint32_t)s->nheap;
		s->heap[s->nheap++] = w;
		sched_heap_up(s, w->pos);
		return;
	}
	w->at = at;
	sched_heap_down(s, w->pos);
	sched_heap_up(s, w->pos);
}

static void sched_trim(struct sched *, uint64_t);

static void
sched_on_timer(uv_timer_t *t)
{
	struct sched *s = t->data;
	struct sched_wake *w;
	uint64_t now = sched_now(s);
	unsigned n = 0;

	if (s->magic != SCHED_MAGIC)
		fatalx("%s: bad scheduler", __func__);
	while (!s->stopping && s->nheap > 0 && s->heap[0]->at <= now && n++ < SCHED_MAX_PER_TICK) {
		w = s->heap[0];
		sched_heap_remove(s, w);
		if (w->kind == SCHED_WAKE_MSG)
			sched_msg_run(s, SCHED_WAKE_OWNER(w, struct sched_msg), now);
		else if (w->kind == SCHED_WAKE_DEST)
			sched_dest_wake(s, SCHED_WAKE_OWNER(w, struct sched_dest));
		else
			sched_trim(s, now);
	}
	if (!s->stopping && now - s->last_sweep >= SCHED_SWEEP_EVERY) {
		s->last_sweep = now;
		health_expire(s->health, now > SCHED_HEALTH_KEEP ? now - SCHED_HEALTH_KEEP : 0);
		dane_seen_expire(s->dane, now > SCHED_HEALTH_KEEP ? now - SCHED_HEALTH_KEEP : 0);
		if (s->mtasts != NULL)
			mtasts_sweep(s->mtasts);
	}
	sched_arm(s);
}

void
sched_churn(struct sched *s, size_t n)
{
	s->churn += n;
	if (s->churn >= SCHED_TRIM_CHURN && s->trim_wake.at == SCHED_NOWAKE && s->loaded &&
	    !s->stopping) {
		s->churn_seen = s->churn;
		s->trim_delay = 0;
		sched_heap_set(s, &s->trim_wake, sched_now(s) + SCHED_TRIM_QUIET);
		sched_arm(s);
	}
}

/* Resident bytes of this process (/proc/self/statm), or -1. */
static int64_t
sched_rss(void)
{
	FILE *f = fopen("/proc/self/statm", "re");
	unsigned long long size, res;
	int n;

	if (f == NULL)
		return -1;
	n = fscanf(f, "%llu %llu", &size, &res);
	fclose(f);
	return n == 2 ? (int64_t)res * sysconf(_SC_PAGESIZE) : -1;
}

/* The thread pool: give freed pages back, and say how much RSS that saved. */
static void
sched_trim_work(uv_work_t *w)
{
	struct sched *s = w->data;
	int64_t before = sched_rss(), after;

#ifdef __GLIBC__
	malloc_trim(0);
#endif
	after = sched_rss();
	s->trim_gave = before >= 0 && after >= 0 ? before - after : -1;
}

/* The loop: another trim follows while one gives back enough to matter. */
static void
sched_trim_done(uv_work_t *w, int status)
{
	struct sched *s = w->data;

	s->trimming = false;
	if (status == 0 && !s->stopping && s->trim_gave >= (int64_t)SCHED_TRIM_WORTH &&
	    s->trim_delay <= SCHED_TRIM_LAST)
		sched_heap_set(s, &s->trim_wake, sched_now(s) + s->trim_delay);
	else
		s->trim_delay = 0;
	if (s->stopping)
		sched_shutdown_check(s);
	else
		sched_arm(s);
}

/*
 * The trim wake: once SCHED_TRIM_QUIET has passed with less than
 * SCHED_TRIM_CHURN more churn, give the pages of freed memory back
 * (malloc_trim: after a 200,000-message start-up and deferral, 330 MiB of
 * RSS became 135 MiB).  It walks every free list, hundreds of ms on a heap
 * of a million messages, so it runs on the thread pool, never on the loop.
 * The queue's threads free the records issued meanwhile later, so while a
 * trim gives back at least SCHED_TRIM_WORTH of RSS another follows, each
 * after twice the wait, up to SCHED_TRIM_LAST (at most seven in a row).
 */
static void
sched_trim(struct sched *s, uint64_t now)
{
	if (s->churn - s->churn_seen >= SCHED_TRIM_CHURN) {
		s->churn_seen = s->churn;
		s->trim_delay = SCHED_TRIM_QUIET;
		sched_heap_set(s, &s->trim_wake, now + SCHED_TRIM_QUIET);
		return;
	}
	s->churn = s->churn_seen = 0;
	if (s->trim_delay == 0)
		s->trim_delay = SCHED_TRIM_QUIET;
	s->trim_delay *= 2;
	if (s->trimming)
		return;
	s->trim_work.data = s;
	if (uv_queue_work(s->loop, &s->trim_work, sched_trim_work, sched_trim_done) == 0)
		s->trimming = true;
	else
		s->trim_delay = 0;
}

void
sched_arm(struct sched *s)
{
	uint64_t now, at;

	if (s->stopping || !s->loaded)
		return;
	if (s->nheap == 0) {
		uv_timer_stop(&s->timer);
		return;
	}
	now = sched_now(s);
	at = s->heap[0]->at;
	uv_timer_start(&s->timer, sched_on_timer, at > now ? at - now : 0, 0);
}

/* ------------------------------------------------------------------ */
/* Messages by queue id. */


struct sched_msg *
sched_msg_lookup(struct sched *s, const char *qid)
{
	struct htab_node *n = htab_find(&s->mhash, qid);

	return n != NULL ? HTAB_ENTRY(n, struct sched_msg, node) : NULL;
}

static void
sched_msg_hash_add(struct sched *s, struct sched_msg *sm)
{
	htab_insert(&s->mhash, &sm->node, sm->m->qid);
}

static void
sched_msg_hash_del(struct sched *s, struct sched_msg *sm)
{
	htab_remove(&s->mhash, &sm->node);
}

/* ------------------------------------------------------------------ */
/* Recipients: durable outcomes, one log line each. */

static const char *
sched_rcpt_domain(const char *addr)
{
	const char *at = strrchr(addr, '@');

	return at != NULL ? at + 1 : "";
}

/* Delivered or failed, and reported if a report is owed (the original
 * stays queued until its report is: a report is built from it).  A success
 * notice is owed only when the next hop did not take DSN on (RFC 3461 5.2). */
static bool
sched_rcpt_done(const struct queue_msg *m, size_t i)
{
	const struct queue_rcpt *qr = &m->rcpt[i];

	if (qr->state == RCPT_PENDING)
		return false;
	if (qr->reported || m->env.sender[0] == '\0')
		return true;
	return qr->state == RCPT_DELIVERED &&
	    (!(m->env.rcpts[i].notify & ENV_NOTIFY_SUCCESS) || qr->dsn_passed);
}

bool
sched_job_active(const struct sched_job *job)
{
	return job != NULL &&
	    (job->state == SCHED_JOB_RESOLVING || job->state == SCHED_JOB_DELIVERING);
}

/* The tallies (sched_tally): m's pending recipients and its hold counted in (sign > 0) or out. */
static void
sched_tally_msg(struct sched *s, const struct queue_msg *m, int sign)
{
	size_t i, n = 0;

	for (i = 0; i < m->env.nrcpts; i++)
		if (m->rcpt[i].state == RCPT_PENDING)
			n++;
	if (sign > 0) {
		s->npending += n;
		s->nheld += m->held;
		s->nheld_rcpts += m->held ? n : 0;
	} else {
		s->npending -= n;
		s->nheld -= m->held;
		s->nheld_rcpts -= m->held ? n : 0;
	}
}

/*
 * queue_record() for sm; the in-memory state follows even if it fails.  With
 * cb: true if cb(arg, err) will run (on the loop, after the record's sync),
 * false if it never will (the record was not written).
 */
static bool
sched_record_cb(struct sched *s, struct sched_msg *sm, const struct queue_record *rec,
    queue_sync_cb *cb, void *arg)
{
	const struct queue_msg *m = sm->m;
	bool pending = !sm->deleted && rec->rcpt >= 0 && (size_t)rec->rcpt < m->env.nrcpts &&
	    m->rcpt[rec->rcpt].state == RCPT_PENDING;
	bool hold = rec->type == QREC_HOLD && !sm->deleted;
	int rc;

	if (hold)
		sched_tally_msg(s, m, -1);
	sched_churn(s, 1);
	if ((rc = queue_record(s->q, sm->m, rec, cb, arg)) != 0) {
		struct log_line l;

		/* Memory follows anyway: what we did must not be done twice now;
		 * only a crash before the next successful write can repeat it. */
		queue_msg_apply(sm->m, rec);
		log_begin(&l, LOG_ERR, "queue_record_failed");
		log_kv(&l, "qid", sm->m->qid);
		log_kvf(&l, "type", "%c", (char)rec->type);
		log_kvi(&l, "error", rc);
		log_end(&l);
	}
	if (hold)
		sched_tally_msg(s, m, 1);
	else if (pending && m->rcpt[rec->rcpt].state != RCPT_PENDING) {
		s->npending--;
		s->nheld_rcpts -= m->held;
	}
	if (hold)
		sched_msg_tally(s, sm);
	else if (rec->rcpt >= 0 && (size_t)rec->rcpt < m->env.nrcpts)
		sched_rcpt_tally(s, sm, (size_t)rec->rcpt);
	return rc == 0;
}

void
sched_record(struct sched *s, struct sched_msg *sm, const struct queue_record *rec)
{
	(void)sched_record_cb(s, sm, rec, NULL, NULL);
}

/*
 * A recipient's outcome record (D or F) on its way to the disk.  Its sync
 * callback is the point where the outcome is durable: it writes the
 * "delivered" line, if any, and lets the recipient's report go: a report
 * is never built from an outcome a crash could still take back
 * (sched_msg_report skips a recipient while outcome_out; SCHEDULING.md,
 * "Lifetime").  The message may be gone by then: found by its id.
 */
struct sched_outcome_sync {
	struct sched *s;
	struct log_line *line;          /* "delivered", or NULL */
	int rcpt;
	char qid[QID_MAX];
};

/*
 * Is sm's every outcome record durable, with a recipient delivered or
 * failed and not done (its report owed)?  Then it runs: one attempt's
 * outcomes go in one report.
 */
static bool
sched_msg_owes_report(const struct sched_msg *sm)
{
	bool owed = false;
	size_t i;

	for (i = 0; i < sm->m->env.nrcpts; i++) {
		if (sm->rc[i].outcome_out)
			return false;
		if (sm->m->rcpt[i].state != RCPT_PENDING && !sched_rcpt_done(sm->m, i))
			owed = true;
	}
	return owed;
}

static void
sched_outcome_synced(void *arg, int err)
{
	struct sched_outcome_sync *os = arg;
	struct sched *s = os->s;
	struct sched_msg *sm;

	/*
	 * err: the queue logged it.  The report goes all the same, as it did
	 * before it waited: memory says the recipient failed (or was
	 * delivered), and holding its report would keep the message queued
	 * until a restart; only a crash before the disk takes a record again
	 * can repeat the recipient and its report.
	 */
	(void)err;
	if (os->line != NULL) {
		log_end(os->line);
		free(os->line);
	}
	if (s->magic != SCHED_MAGIC)
		fatalx("%s: bad scheduler", __func__);
	s->noutcomes--;
	if ((sm = sched_msg_lookup(s, os->qid)) != NULL && !sm->deleted) {
		sm->rc[os->rcpt].outcome_out = false;
		/*
		 * A report is owed now: the message runs to queue it, once the
		 * last of its outcomes on their way is durable, so that one
		 * attempt's failures go in one report even when their callbacks
		 * come in different loop turns (queue_async_cb's bound).
		 */
		if (!s->stopping && sched_msg_owes_report(sm)) {
			sched_heap_set(s, &sm->wake, sched_now(s));
			sched_arm(s);
		}
	}
	free(os);
	sched_shutdown_check(s);
}

/*
 * queue_record() for a D or F record of rec->rcpt, with the callback above;
 * line (may be NULL) is logged from it.  False if the record was not written
 * (the callback never runs: the caller logs line; nothing holds the report).
 */
static bool
sched_record_outcome(struct sched *s, struct sched_msg *sm, const struct queue_record *rec,
    struct log_line *line)
{
	struct sched_outcome_sync *os = xcalloc(1, sizeof(*os));

	os->s = s;
	os->line = line;
	os->rcpt = rec->rcpt;
	snprintf(os->qid, sizeof(os->qid), "%s", sm->m->qid);
	/* the null sender is owed no report: nothing to hold (ndr_suppressed at once) */
	sm->rc[rec->rcpt].outcome_out = sm->m->env.sender[0] != '\0';
	if (sched_record_cb(s, sm, rec, sched_outcome_synced, os)) {
		s->noutcomes++;         /* a stop waits for the callback */
		return true;
	}
	sm->rc[rec->rcpt].outcome_out = false;
	free(os);
	return false;
}

/*
 * Record and log one recipient's outcome.  wait_dest: it now waits for its
 * destination (no retry timer of its own).
 */
void
sched_rcpt_outcome(struct sched *s, struct sched_msg *sm, int i, enum sched_outcome o,
    const char *host, const char *ip, const char *status, const char *reply, bool counted,
    const char *wait_dest, bool dsn_passed, uint64_t now)
{
	struct queue_msg *m = sm->m;
	struct queue_record rec;
	struct log_line ll, *lp = &ll;
	const char *ev;
	uint64_t delay = 0;
	bool later = false, again;

	memset(&rec, 0, sizeof(rec));
	rec.type = o == SCHED_DELIVERED ? QREC_DELIVERED : o == SCHED_FAILED ? QREC_FAILED :
	    QREC_ATTEMPT;
	rec.rcpt = i;
	rec.time_ms = now;
	rec.host = host != NULL && *host != '\0' ? host : NULL;
	rec.ip = ip != NULL && *ip != '\0' ? ip : NULL;
	rec.status = status;
	rec.reply = reply;
	rec.value = counted ? 0 : QREC_NO_ATTEMPT;
	/* Deferred by an attempt that went a way its domain no longer goes
	 * (a route change while it was out): due at once, the new way, and
	 * so at start-up too (no retry timer of its own, as a waiting one). */
	again = o == SCHED_DEFERRED && wait_dest == NULL &&
	    sched_job_active(sched_rcpt_job(&sm->rc[i])) && sched_attempt_rerouted(s, sm->rc[i].job);
	if (o == SCHED_DEFERRED && (wait_dest != NULL || again))
		rec.value |= QREC_WAIT_DEST;    /* explicit: never read back from "4.4.1" */
	if (o == SCHED_DELIVERED && dsn_passed)
		rec.value |= QREC_DSN_PASSED;   /* the next hop sends any success notice */
	/*
	 * "delivered" is logged once its D record is durable (the writer thread
	 * appends it after this returns): a crash before that sends the message
	 * again, and its log never said it was delivered.  Filled in below;
	 * the callback never runs before this returns.  A D or F record also
	 * holds the recipient's report until then (sched_record_outcome).
	 */
	if (o == SCHED_DELIVERED) {
		lp = xmalloc(sizeof(*lp));
		later = sched_record_outcome(s, sm, &rec, lp);
	} else if (o == SCHED_FAILED)
		(void)sched_record_outcome(s, sm, &rec, NULL);
	else if (wait_dest != NULL && queue_record_idle(m, &rec))
		/* No attempt, and it waits as it did with the same strings (a
		 * restart's recipients that waited for a destination still
		 * down): a record would add only its time to the file. */
		sched_rcpt_tally(s, sm, (size_t)i);
	else
		sched_record(s, sm, &rec);

	if (o == SCHED_DEFERRED && wait_dest == NULL) {
		if (!again)
			delay = sched_retry_delay(s->conf->router.retry_intervals,
			    s->conf->router.nretry_intervals, m->rcpt[i].attempts, sched_rnd(s));
		sm->rc[i].retry_at = now + delay;
	}

	switch (o) {
	case SCHED_DELIVERED:
		ev = "delivered";
		s->stats->delivered++;
		stats_observe(&s->stats->delivery_seconds, now > m->env.arrival_ms ?
		    (double)(now - m->env.arrival_ms) / 1000.0 : 0.0);
		break;
	case SCHED_FAILED:
		ev = "bounced";
		s->stats->bounced++;
		break;
	default:
		ev = "deferred";
		s->stats->deferred++;
		break;
	}
	log_begin(lp, o == SCHED_FAILED ? LOG_NOTICE : LOG_INFO, ev);
	log_kv(lp, "qid", m->qid);
	log_kv(lp, "rcpt", m->env.rcpts[i].addr);
	log_kv(lp, "host", rec.host != NULL ? rec.host : "-");
	log_kv(lp, "ip", rec.ip != NULL ? rec.ip : "-");
	log_kv(lp, "status", status);
	log_kv(lp, "reply", reply != NULL ? reply : "");
	log_kvu(lp, "attempts", m->rcpt[i].attempts);
	if (o == SCHED_DELIVERED && s->outcome_tls != NULL)
		log_kv(lp, "tls", s->outcome_tls);
	if (o == SCHED_DELIVERED && s->outcome_tls_version != NULL)
		log_kv(lp, "tls_version", s->outcome_tls_version);
	if (o == SCHED_DEFERRED) {
		if (wait_dest != NULL)
			log_kv(lp, "waiting", wait_dest);
		else {
			char d[32];

			util_format_duration(delay, d, sizeof(d));
			log_kv(lp, "retry_in", d);
		}
	}
	if (o == SCHED_FAILED && m->env.sender[0] == '\0')
		log_kv(lp, "report", "none");
	if (!later) {
		log_end(lp);
		if (lp != &ll)
			free(lp);
	}
}

/* ------------------------------------------------------------------ */
/* Messages. */

/* Recipients whose candidates, routes and marks sched_msg_dispatch keeps on
 * its stack (most messages have one): more are allocated. */
#define SCHED_DISPATCH_STACK 8

/* Group the message's due recipients by destination into jobs: one route
 * reference per candidate (sched_route_for: the route cache), then one job
 * per destination. */
static void
sched_msg_dispatch(struct sched *s, struct sched_msg *sm, uint64_t now, bool force,
    const char *only_domain)
{
	struct queue_msg *m = sm->m;
	size_t n = m->env.nrcpts, i, j, nc = 0;
	unsigned max = sched_job_max(s);
	struct sched_route **routes, *routes_s[SCHED_DISPATCH_STACK];
	int *cand, cand_s[SCHED_DISPATCH_STACK];
	bool *taken, taken_s[SCHED_DISPATCH_STACK];
	bool small = n <= SCHED_DISPATCH_STACK;

	cand = small ? cand_s : xcalloc(n, sizeof(*cand));
	for (i = 0; i < n; i++) {
		if (m->rcpt[i].state != RCPT_PENDING || sched_rcpt_busy(&sm->rc[i]))
			continue;
		if (only_domain != NULL &&
		    util_strcasecmp(sched_rcpt_domain(m->env.rcpts[i].addr), only_domain) != 0)
			continue;
		if (!force && sm->rc[i].retry_at > now)
			continue;
		cand[nc++] = (int)i;
	}
	if (nc == 0) {
		if (!small)
			free(cand);
		return;
	}
	routes = small ? routes_s : xcalloc(nc, sizeof(*routes));
	taken = small ? taken_s : xcalloc(nc, sizeof(*taken));
	memset(taken, 0, nc * sizeof(*taken));
	for (i = 0; i < nc; i++)
		routes[i] = sched_route_for(s, sched_rcpt_domain(m->env.rcpts[cand[i]].addr), NULL);
	for (i = 0; i < nc; i++) {
		struct sched_job *job;
		struct sched_dest *d;
		uint64_t gen, g;

		if (taken[i])
			continue;
		taken[i] = true;
		d = sched_dest_get(s, routes[i]->r.dest);
		job = sched_job_new(s, sm, d, routes[i]);
		job->force = force;
		gen = sched_job_add_rcpt(s, job, cand[i]);
		for (j = i + 1; j < nc && job->nrcpts < max; j++) {
			if (!taken[j] && strcmp(routes[j]->r.dest, job->route->r.dest) == 0) {
				taken[j] = true;
				g = sched_job_add_rcpt(s, job, cand[j]);
				if (g > gen)
					gen = g;
			}
		}
		sched_dest_admit(s, d, job, gen, now);
	}
	for (i = 0; i < nc; i++)
		sched_route_unref(routes[i]);
	if (!small) {
		free(routes);
		free(taken);
		free(cand);
	}
}

/* Recipients still pending max_queue_age after arrival fail with 4.4.7. */
static void
sched_msg_expire(struct sched *s, struct sched_msg *sm, uint64_t now)
{
	struct queue_msg *m = sm->m;
	struct queue_record rec;
	struct queue_last last;
	struct log_line l;
	char age[32];
	size_t i;

	if (now < sched_expire_at(m->env.arrival_ms, s->conf))
		return;
	util_format_duration(s->conf->router.max_queue_age, age, sizeof(age));
	sched_msg_unwait(s, sm, 0);     /* every pending one not in an attempt expires:
	                                   out of its line (jobs are only in flight) */
	for (i = 0; i < m->env.nrcpts; i++) {
		struct sched_job *job = sched_rcpt_job(&sm->rc[i]);
		struct queue_rcpt *qr = &m->rcpt[i];
		char reply[600], *host, *ip;

		if (qr->state != RCPT_PENDING || job != NULL)
			continue;
		queue_rcpt_last(qr, &last);
		if (last.reply != NULL)
			snprintf(reply, sizeof(reply), "%s", last.reply);
		else
			snprintf(reply, sizeof(reply), "no delivery attempt succeeded within %s", age);
		/* The record replaces qr's strings: pass copies. */
		host = last.host != NULL ? xstrdup(last.host) : NULL;
		ip = last.ip != NULL ? xstrdup(last.ip) : NULL;
		memset(&rec, 0, sizeof(rec));
		rec.type = QREC_FAILED;
		rec.rcpt = (int)i;
		rec.time_ms = now;
		rec.host = host;
		rec.ip = ip;
		rec.status = "4.4.7";
		rec.reply = reply;
		rec.value = QREC_NO_ATTEMPT | QREC_EXPIRED;
		(void)sched_record_outcome(s, sm, &rec, NULL);   /* its report waits for it */
		free(host);
		free(ip);
		s->stats->expired++;
		log_begin(&l, LOG_NOTICE, "expired");
		log_kv(&l, "qid", m->qid);
		log_kv(&l, "rcpt", m->env.rcpts[i].addr);
		log_kv(&l, "status", "4.4.7");
		log_kv(&l, "age", age);
		log_kvu(&l, "attempts", qr->attempts);
		log_kv(&l, "reply", reply);
		if (m->env.sender[0] == '\0')
			log_kv(&l, "report", "none");
		log_end(&l);
	}
}

void
sched_msg_free(struct sched *s, struct sched_msg *sm)
{
	size_t i;

	for (i = 0; i < sm->m->env.nrcpts; i++)        /* none, but never a dangling link */
		if (sched_rcpt_lined(&sm->rc[i]))
			sched_rcpt_unwait(s, sm, i, 0);
	sched_heap_remove(s, &sm->wake);
	if (!sm->deleted) {
		sched_msg_hash_del(s, sm);
		TAILQ_REMOVE(&s->msgs, sm, entry);
		s->nmsgs--;
		sched_tally_msg(s, sm->m, -1);
	}
	sched_churn(s, 1);
	sm->deleted = true;             /* out of relayctl stats' tallies */
	sched_msg_tally(s, sm);
	queue_msg_free(sm->m);
	sched_tls_notes_free(sm);
	sm->magic = 0;
	free(sm);
}

/* Every recipient done: the message leaves the queue.  True if sm is gone. */
static bool
sched_msg_maybe_done(struct sched *s, struct sched_msg *sm)
{
	struct queue_msg *m = sm->m;
	struct log_line l;
	size_t i;
	int rc;

	if (sm->njobs > 0)
		return false;
	for (i = 0; i < m->env.nrcpts; i++)
		if (!sched_rcpt_done(m, i))
			return false;
	if ((rc = queue_remove(s->q, m)) != 0) {
		log_begin(&l, LOG_ERR, "queue_remove_failed");
		log_kv(&l, "qid", m->qid);
		log_kvi(&l, "error", rc);
		log_end(&l);
	} else {
		log_begin(&l, LOG_DEBUG, "removed");
		log_kv(&l, "qid", m->qid);
		log_end(&l);
	}
	sched_msg_free(s, sm);
	return true;
}

/*
 * When the message next needs the scheduler's attention.  A message whose
 * report waits for room (sm->report_wait) is not woken for its reports or
 * its warning: sched_report_pump runs it when room comes, and a wake at a
 * time already past would run it again at once, turn after turn (the timer
 * re-armed at 0 ms from its own callback: the loop never polls again).
 */
void
sched_msg_rewake(struct sched *s, struct sched_msg *sm, uint64_t now)
{
	struct queue_msg *m = sm->m;
	uint64_t at = SCHED_NOWAKE, t;
	bool idle_pending = false;
	size_t i;

	(void)now;
	if (!m->held) {
		for (i = 0; i < m->env.nrcpts; i++) {
			if (m->rcpt[i].state != RCPT_PENDING ||
			    sched_job_active(sched_rcpt_job(&sm->rc[i])))
				continue;
			idle_pending = true;
			if (!sched_rcpt_busy(&sm->rc[i]) && sm->rc[i].retry_at < at)
				at = sm->rc[i].retry_at;
		}
		if (idle_pending) {
			t = sched_expire_at(m->env.arrival_ms, s->conf);
			if (t < at)
				at = t;
			if (!m->delay_warned && !sm->warn_out && !sm->report_wait &&
			    m->env.sender[0] != '\0') {
				t = sched_warn_at(m->env.arrival_ms, s->conf);
				if (t != SCHED_NOWAKE && t < sm->report_retry_at)
					t = sm->report_retry_at;
				if (t < at)
					at = t;
			}
		}
	}
	if (sm->report_retry_at != 0 && !sm->report_wait) {
		for (i = 0; i < m->env.nrcpts; i++) {
			if (!sched_rcpt_done(m, i) && m->rcpt[i].state != RCPT_PENDING &&
			    !sm->rc[i].report_out && !sm->rc[i].outcome_out) {
				if (sm->report_retry_at < at)
					at = sm->report_retry_at;
				break;
			}
		}
	}
	sched_heap_set(s, &sm->wake, at);
}

void
sched_msg_run(struct sched *s, struct sched_msg *sm, uint64_t now)
{
	if (sm->magic != SCHED_MAGIC_MSG)
		fatalx("%s: bad message", __func__);
	if (sm->deleted || s->stopping)
		return;
	if (!sm->m->held) {
		sched_msg_expire(s, sm, now);
		sched_msg_warn(s, sm, now);
		sched_msg_dispatch(s, sm, now, false, NULL);
	}
	if (!sched_msg_under_way(sm))
		queue_msg_drop_image(sm->m);    /* no attempt under way: none to feed */
	sched_msg_report(s, sm, sm->admin_bounced ? SCHED_BOUNCE_REASON : NULL, now);
	if (sched_msg_maybe_done(s, sm))
		return;
	sched_msg_rewake(s, sm, now);
}

/* Take over m (new, or read back at start-up) with its recipients due as on disk. */
static void
sched_msg_add(struct sched *s, struct queue_msg *m, bool fresh)
{
	struct sched_msg *sm;
	size_t i;

	if (sched_msg_lookup(s, m->qid) != NULL) {
		log_event(LOG_ERR, "duplicate_qid", "qid", m->qid, NULL);
		queue_msg_free(m);
		return;
	}
	if (m->env.nrcpts > UINT32_MAX)
		fatalx("%s: %s: %zu recipients", __func__, m->qid, m->env.nrcpts);
	sm = xcalloc(1, sizeof(*sm) + (m->env.nrcpts ? m->env.nrcpts : 1) * sizeof(sm->rc[0]));
	sm->magic = SCHED_MAGIC_MSG;
	sm->m = m;
	sm->wake.at = SCHED_NOWAKE;
	sm->wake.kind = SCHED_WAKE_MSG;
	for (i = 0; i < m->env.nrcpts; i++) {
		uint64_t due = fresh ? 0 : sched_rcpt_due(&m->rcpt[i], s->conf->router.retry_intervals,
		    s->conf->router.nretry_intervals, sched_rnd(s));

		sm->rc[i].retry_at = due == SCHED_NOWAKE ? 0 : due;
		sm->rc[i].idx = (uint32_t)i;
	}
	sched_msg_hash_add(s, sm);
	TAILQ_INSERT_TAIL(&s->msgs, sm, entry);
	s->nmsgs++;
	sched_churn(s, 1);
	sched_tally_msg(s, m, 1);
	sched_msg_tally(s, sm);
	/* Due things run from the timer, never inside the queue's callback. */
	sched_heap_set(s, &sm->wake, 0);
}

/* ------------------------------------------------------------------ */
/* Life cycle. */

static void
sched_scan_cb(void *arg, struct queue_msg *m)
{
	sched_msg_add(arg, m, false);
}

void
sched_queue_new(void *arg, struct queue_msg *m)
{
	struct sched *s = arg;

	if (s->stopping) {
		queue_msg_free(m);      /* on disk; picked up at the next start */
		return;
	}
	sched_msg_add(s, m, true);
	sched_arm(s);
}

int
sched_new(const struct sched_deps *deps, struct sched **out, struct buf *err)
{
	struct sched *s = xcalloc(1, sizeof(*s));
	struct tlsrpt_deps td;

	s->magic = SCHED_MAGIC;
	s->loop = deps->loop;
	s->trim_wake.at = SCHED_NOWAKE;
	s->trim_wake.kind = SCHED_WAKE_TRIM;
	s->pump_ops_max = SCHED_PUMP_OPS_MAX;
	TAILQ_INIT(&s->held);
	htab_init(&s->tdoms, &htab_ops_nocase);
	s->conf = conf_ref(deps->conf);
	s->stats = deps->stats;
	s->q = deps->queue;
	s->mx = deps->mx;
	s->d = deps->deliver;
	s->mtasts = deps->mtasts;
	s->health = health_new();
	s->dane = dane_seen_new();
	if (dkim_keys_load(s->conf, &s->dkim, err) != 0 ||
	    (s->routes = route_table_new(s->loop, s->conf->queue_dir, err)) == NULL) {
		dkim_keys_unref(s->dkim);
		health_free(s->health);
		dane_seen_free(s->dane);
		conf_unref(s->conf);
		free(s);
		return -1;
	}
	memset(&td, 0, sizeof(td));
	td.loop = s->loop;
	td.conf = s->conf;
	td.queue = s->q;
	td.dns = s->mx;
	td.dkim = s->dkim;
	if ((s->tlsrpt = tlsrpt_new(&td, err)) == NULL) {
		route_table_free(s->routes);
		dkim_keys_unref(s->dkim);
		health_free(s->health);
		conf_unref(s->conf);
		free(s);
		return -1;
	}
	htab_init(&s->mhash, NULL);
	htab_init(&s->dhash, NULL);
	TAILQ_INIT(&s->msgs);
	TAILQ_INIT(&s->dests);
	TAILQ_INIT(&s->active);
	s->rnd_state = (util_mono_ms() << 20) ^ util_now_ms() ^ ((uint64_t)getpid() << 40) ^
	    0x9E3779B97F4A7C15ULL;
	if (s->rnd_state == 0)
		s->rnd_state = 1;
	uv_timer_init(s->loop, &s->timer);
	s->timer.data = s;
	*out = s;
	return 0;
}

int
sched_load(struct sched *s)
{
	struct log_line l;
	int rc;

	s->last_sweep = sched_now(s);
	rc = queue_scan(s->q, sched_scan_cb, s);
	s->loaded = true;
	log_begin(&l, LOG_INFO, "queue_loaded");
	log_kvu(&l, "messages", s->nmsgs);
	log_end(&l);
	sched_arm(s);
	return rc;
}

/*
 * The start-up scan on its thread (queue_scan.c): begun before anything can
 * be submitted (ids made from then on are not loaded by it), run once the
 * listeners are open.  Scheduling runs from the start: each batch of
 * scanned messages is dispatched like messages loaded by sched_load().
 */
static void
sched_scan_take(void *arg, struct queue_msg *m)
{
	struct sched *s = arg;

	if (s->stopping || sched_msg_lookup(s, m->qid) != NULL) {
		queue_msg_free(m);      /* on disk; or already here */
		return;
	}
	sched_msg_add(s, m, false);
	sched_arm(s);
}

static void
sched_scan_done(void *arg, size_t loaded, size_t corrupt, uint64_t ms)
{
	struct sched *s = arg;
	struct log_line l;

	log_begin(&l, LOG_INFO, "queue_loaded");
	log_kvu(&l, "messages", s->nmsgs);
	log_end(&l);
	log_begin(&l, LOG_NOTICE, "queue_scanned");
	log_kvu(&l, "count", loaded);
	log_kvu(&l, "corrupt", corrupt);
	log_kvu(&l, "ms", ms);
	log_end(&l);
}

void
sched_scan_begin(struct sched *s)
{
	s->last_sweep = sched_now(s);
	s->scanner = queue_scanner_new(s->q, sched_scan_take, sched_scan_done, s);
	s->loaded = true;
}

void
sched_scan_run(struct sched *s)
{
	if (s->scanner != NULL)
		queue_scanner_run(s->scanner);
}

bool
sched_scanning(struct sched *s, size_t *loaded, size_t *corrupt)
{
	bool running = false;

	*loaded = *corrupt = 0;
	if (s->scanner != NULL)
		queue_scanner_counts(s->scanner, loaded, corrupt, &running);
	return running;
}

/*
 * Whether the domain of recipient i of sm goes another way now than route
 * says.  The route cache answers (a route change looks at every waiting
 * recipient: a million in an outage): most hold the very route it gives,
 * and the others are compared in full.
 */
static bool
sched_rcpt_route_changed(struct sched *s, const struct sched_msg *sm, size_t i,
    struct sched_route *route)
{
	struct sched_route *sr;
	bool changed;

	if (route == NULL)
		return true;
	sr = sched_route_for(s, sched_rcpt_domain(sm->m->env.rcpts[i].addr), route);
	changed = sr != route && !route_equal(&sr->r, &route->r);
	sched_route_unref(sr);
	return changed;
}

/* Whether job's domain goes another way now than the job's route says. */
static bool
sched_job_route_changed(struct sched *s, const struct sched_job *job)
{
	const struct env_rcpt *rcpts = job->sm->m->env.rcpts;
	const char *dom, *prev = NULL;
	bool changed = false;
	size_t k;

	/* every domain of the job (a route with hosts for "*" groups several) */
	for (k = 0; k < job->nrcpts && !changed; k++) {
		dom = sched_rcpt_domain(rcpts[sched_job_rcpt(job, k)].addr);
		if (prev != NULL && util_strcasecmp(dom, prev) == 0)
			continue;
		prev = dom;
		changed = sched_rcpt_route_changed(s, job->sm, (size_t)sched_job_rcpt(job, k),
		    job->route);
	}
	return changed;
}

bool
sched_attempt_rerouted(struct sched *s, struct sched_job *job)
{
	struct sched_attempt *at = job->at;

	if (at == NULL)
		return false;
	if (at->reroute_gen != s->reroute_gen) {
		at->reroute_gen = s->reroute_gen;
		at->rerouted = sched_job_route_changed(s, job);
	}
	return at->rerouted;
}

/*
 * Count in each down destination's rerouted how many of its attempts in
 * flight go a way their domain no longer goes: one pass over the attempts
 * in flight, not one per destination (a route change for "*" in an outage
 * looks at every down destination).  Other destinations' counts are not
 * used.
 */
static void
sched_count_rerouted(struct sched *s)
{
	struct sched_dest *d;
	struct sched_job *job;

	TAILQ_FOREACH(d, &s->dests, entry)
		d->rerouted = 0;
	TAILQ_FOREACH(job, &s->active, entry)
		if (job->dest != NULL && job->dest->state == SCHED_DEST_DOWN &&
		    sched_job_route_changed(s, job))
			job->dest->rerouted++;
}

/*
 * Whether the name of d, a destination of a route with hosts, stands for
 * other hosts (or another way) now: its route resolved again for the
 * route's own domain ("*" included).
 */
static bool
sched_dest_route_changed(struct sched *s, const struct sched_dest *d)
{
	struct route r;
	bool changed;

	if (d->route == NULL || d->route->r.nhosts == 0 || d->route->r.domain == NULL)
		return false;
	route_resolve(s->routes, s->conf, d->route->r.domain, &r);
	changed = !route_equal(&r, &d->route->r);
	route_release(&r);
	return changed;
}

/* Take the recipients of line (d's queued or waiting line) whose domain goes
 * another way now out of it: due now, the new way (d moves on in the
 * caller).  How many left. */
static size_t
sched_dest_unline_rerouted(struct sched *s, struct sched_dest *d, struct sched_rcptq *line,
    uint64_t now)
{
	struct sched_rcpt *rc, *rn;
	size_t n = 0;

	for (rc = TAILQ_FIRST(line); rc != NULL; rc = rn) {
		struct sched_msg *sm = sched_rcpt_msg(rc);

		rn = TAILQ_NEXT(rc, wentry);
		if (!sched_rcpt_route_changed(s, sm, rc->idx, d->route))
			continue;
		sched_rcpt_unwait(s, sm, rc->idx, now);
		sched_heap_set(s, &sm->wake, now);
		n++;
	}
	return n;
}

/*
 * Routes or the configuration changed: every recipient queued behind its
 * destination's window or waiting for it whose domain goes another way
 * than its destination's route (the route its jobs took: the one route of
 * its name until a change) is taken out of its line, and their messages
 * are dispatched again (recipients whose route did not change keep their
 * place).  A job in flight keeps its route until its
 * attempt ends; then, if its domain goes another way, it is not put back on
 * the old one (sched_job_next, sched_rcpt_outcome: its recipients go again
 * at once, the new way).
 */
static void
sched_reroute(struct sched *s)
{
	struct sched_dest *d, *dn;
	uint64_t now = sched_now(s);
	size_t n, nr;

	/* Before any recipient leaves a line: that starts no attempt but a
	 * probe of the destination being looked at, after its count is used. */
	sched_count_rerouted(s);
	for (d = TAILQ_FIRST(&s->dests); d != NULL; d = dn) {
		dn = TAILQ_NEXT(d, entry);
		n = sched_dest_unline_rerouted(s, d, &d->queued, now);
		nr = sched_dest_unline_rerouted(s, d, &d->waiting, now);
		/* A down destination with no job left, kept to remember its
		 * outage: if its name stands for other hosts now, the outage was
		 * of the old ones, and it is forgotten (their health stays). */
		if (n == 0 && nr == 0 && d->inflight == 0 && d->nwaiting + d->nbacklog == 0 &&
		    d->state == SCHED_DEST_DOWN && sched_dest_route_changed(s, d)) {
			d->state = SCHED_DEST_NEW;
			sched_dest_maybe_free(s, d);
			continue;
		}
		/* Every job and recipient of a down destination, those in flight
		 * too, has a new route: the outage was of the old route's hosts,
		 * and they try the new ones at once.  The old route's attempts
		 * still out do not hold the first of them back (the window). */
		if ((n > 0 || nr > 0 || d->inflight > 0) && d->state == SCHED_DEST_DOWN &&
		    d->nbacklog == 0 && d->nwaiting == 0 && d->rerouted == d->inflight) {
			d->state = SCHED_DEST_NEW;
			d->window = 1 + d->inflight;
			d->down_since = 0;
		}
		if (n > 0 || nr > 0) {  /* its next probe, or forget it (d is not
		                           looked at again) */
			sched_dest_rewake(s, d);
			sched_dest_maybe_free(s, d);
		}
	}
	/* Last: an attempt begun above (a probe a rewake started) is
	 * stamped with the old generation, so it looks at its route too. */
	s->reroute_gen++;
}

struct dkim_keys *
sched_dkim(struct sched *s)
{
	return s->dkim;
}

void
sched_reload(struct sched *s, struct conf *conf)
{
	struct sched_msg *sm;
	uint64_t now = sched_now(s);
	struct dkim_keys *dkim = NULL;
	struct buf err = BUF_INIT;

	conf_unref(s->conf);
	s->conf = conf_ref(conf);
	sched_route_cache_flush(s, false);      /* resolved under the old configuration */
	/* submit_reload() loaded the same keys a moment ago: a failure here is a race */
	if (dkim_keys_load(conf, &dkim, &err) == 0) {
		dkim_keys_unref(s->dkim);
		s->dkim = dkim;
	} else
		log_event(LOG_ERR, "reload_failed", "config", conf->path, "error", buf_cstr(&err), NULL);
	buf_free(&err);
	tlsrpt_reload(s->tlsrpt, conf, s->dkim);
	sched_reroute(s);
	TAILQ_FOREACH(sm, &s->msgs, entry)
		sched_msg_rewake(s, sm, now);
	sched_arm(s);
}

void
sched_shutdown_check(struct sched *s)
{
	if (s->nactive == 0 && s->nreports == 0 && s->noutcomes == 0 && s->timer_closed && s->routes_closed &&
	    s->tlsrpt_closed && !s->trimming && s->shutdown_done != NULL) {
		void (*done)(void *) = s->shutdown_done;

		s->shutdown_done = NULL;
		done(s->shutdown_arg);
	}
}

static void
sched_on_timer_closed(uv_handle_t *h)
{
	struct sched *s = h->data;

	s->timer_closed = true;
	sched_shutdown_check(s);
}

static void
sched_on_tlsrpt_closed(void *arg)
{
	struct sched *s = arg;

	s->tlsrpt_closed = true;
	sched_shutdown_check(s);
}

static void
sched_on_routes_closed(void *arg)
{
	struct sched *s = arg;

	s->routes_closed = true;
	sched_shutdown_check(s);
}

void
sched_shutdown(struct sched *s, void (*done)(void *arg), void *arg)
{
	struct sched_dest *d, *dn;
	struct sched_job *job, *jn;
	struct sched_rcpt *rc;

	s->stopping = true;
	if (s->scanner != NULL) {
		queue_scanner_stop(s->scanner);    /* the rest stays in msg/ */
		s->scanner = NULL;
	}
	sched_pump_stop(s);
	s->shutdown_done = done;
	s->shutdown_arg = arg;
	/* Jobs that only wait for DNS, and the recipients queued behind their
	 * destinations' windows or waiting for them, are simply forgotten:
	 * nothing about them was recorded, the next start picks them up. */
	for (d = TAILQ_FIRST(&s->dests); d != NULL; d = dn) {
		dn = TAILQ_NEXT(d, entry);
		while ((rc = TAILQ_FIRST(&d->queued)) != NULL)
			sched_rcpt_unwait(s, sched_rcpt_msg(rc), rc->idx, 0);
		while ((rc = TAILQ_FIRST(&d->waiting)) != NULL)
			sched_rcpt_unwait(s, sched_rcpt_msg(rc), rc->idx, 0);
		sched_heap_remove(s, &d->wake);
	}
	for (job = TAILQ_FIRST(&s->active); job != NULL; job = jn) {
		jn = TAILQ_NEXT(job, entry);
		if (job->state == SCHED_JOB_RESOLVING && (job->at->mxq != NULL || job->at->stsq != NULL)) {
			if (job->at->mxq != NULL)
				dns_cancel(job->at->mxq);
			if (job->at->stsq != NULL)
				mtasts_cancel(job->at->stsq);
			job->at->mxq = NULL;
			job->at->stsq = NULL;
			TAILQ_REMOVE(&s->active, job, entry);
			s->nactive--;
			s->nr_active -= job->nrcpts;
			job->dest->inflight--;
			sched_job_free(s, job);
		}
	}
	for (d = TAILQ_FIRST(&s->dests); d != NULL; d = dn) {
		dn = TAILQ_NEXT(d, entry);
		sched_dest_maybe_free(s, d);
	}
	uv_timer_stop(&s->timer);
	uv_close((uv_handle_t *)&s->timer, sched_on_timer_closed);
	route_table_close(s->routes, sched_on_routes_closed, s);
	tlsrpt_close(s->tlsrpt, sched_on_tlsrpt_closed, s);
}

void
sched_free(struct sched *s)
{
	struct sched_msg *sm;
	struct sched_dest *d;

	if (s == NULL)
		return;
	if (s->scanner != NULL)
		queue_scanner_stop(s->scanner);
	sched_pump_stop(s);
	if (s->nactive > 0)
		fatalx("%s: %u attempts still in flight", __func__, s->nactive);
	if (s->nreports > 0)
		fatalx("%s: %u reports still being queued", __func__, s->nreports);
	if (s->noutcomes > 0)
		fatalx("%s: %u outcome records still being synced", __func__, s->noutcomes);
	if (s->trimming)
		fatalx("%s: a heap trim still runs", __func__);
	while ((sm = TAILQ_FIRST(&s->msgs)) != NULL)
		sched_msg_free(s, sm);
	sched_route_cache_flush(s, true);
	while ((d = TAILQ_FIRST(&s->dests)) != NULL) {
		TAILQ_REMOVE(&s->dests, d, entry);
		sched_route_unref(d->route);
		free(d->name);
		free(d);
	}
	health_free(s->health);
	dane_seen_free(s->dane);
	route_table_free(s->routes);
	tlsrpt_free(s->tlsrpt);
	dkim_keys_unref(s->dkim);
	conf_unref(s->conf);
	free(s->heap);
	htab_free(&s->mhash);
	htab_free(&s->dhash);
	sched_tally_free(s);
	sched_report_wait_free(s);
	s->magic = 0;
	free(s);
}

/* ------------------------------------------------------------------ */
/* Administration. */

const char *
sched_rcpt_state_name(enum sched_rcpt_state st)
{
	static const char *const names[] = {
		"pending", "active", "queued", "waiting", "held", "delivered", "failed",
	};

	return (size_t)st < RELAY_ARRAY_LEN(names) ? names[st] : "?";
}

struct queue_msg *
sched_find(struct sched *s, const char *qid)
{
	struct sched_msg *sm = sched_msg_lookup(s, qid);

	return sm != NULL ? sm->m : NULL;
}

void
sched_foreach(struct sched *s, void (*cb)(void *arg, const struct queue_msg *m), void *arg)
{
	struct sched_msg *sm;

	TAILQ_FOREACH(sm, &s->msgs, entry)
		cb(arg, sm->m);
}

size_t
sched_count(const struct sched *s)
{
	return s->nmsgs;
}

void
sched_tally(const struct sched *s, struct sched_tally *out)
{
	const struct sched_msg *first = TAILQ_FIRST(&s->msgs);
	size_t busy = s->nr_active + s->nr_backlog + s->nr_waiting + s->nheld_rcpts;

	memset(out, 0, sizeof(*out));
	out->messages = s->nmsgs;
	out->held = s->nheld;
	out->rcpts_pending = s->npending;
	out->rcpts_active = s->nr_active;
	out->rcpts_queued = s->nr_backlog;
	out->rcpts_waiting = s->nr_waiting;
	out->rcpts_held = s->nheld_rcpts;
	out->rcpts_due = s->npending > busy ? s->npending - busy : 0;
	out->attempts = s->nactive;
	out->oldest_arrival_ms = first != NULL ? first->m->env.arrival_ms : 0;
}

void
sched_rcpt_view(struct sched *s, const struct queue_msg *m, size_t i, struct sched_rcpt_view *out)
{
	const struct sched_msg *sm = sched_msg_lookup(s, m->qid);
	const struct sched_job *job;

	memset(out, 0, sizeof(*out));
	if (m->rcpt[i].state == RCPT_DELIVERED) {
		out->state = SCHED_RCPT_DELIVERED;
		return;
	}
	if (m->rcpt[i].state == RCPT_FAILED) {
		out->state = SCHED_RCPT_FAILED;
		return;
	}
	if (sm == NULL || sm->m != m)
		return;
	if (sm->rc[i].waiting) {
		out->dest = sm->rc[i].wdest->name;
		out->state = SCHED_RCPT_WAITING;
		out->next_ms = sm->rc[i].wdest->probe_at;
		return;
	}
	if (sm->rc[i].queued) {
		out->dest = sm->rc[i].wdest->name;
		out->state = SCHED_RCPT_QUEUED;
		return;
	}
	job = sm->rc[i].job;
	if (job != NULL) {
		out->dest = job->dest->name;
		out->state = sched_job_active(job) ? SCHED_RCPT_ACTIVE : SCHED_RCPT_QUEUED;
		return;
	}
	if (m->held) {
		out->state = SCHED_RCPT_HELD;
		return;
	}
	out->state = SCHED_RCPT_DUE;
	out->next_ms = sm->rc[i].retry_at;
}

/* Flush one message by queue id: its queued and waiting recipients are
 * made into jobs again, and they start now. */
static void
sched_msg_flush(struct sched *s, struct sched_msg *sm, uint64_t now)
{
	struct queue_msg *m = sm->m;

	if (m->held)
		return;
	sched_msg_unwait(s, sm, 0);
	sched_msg_dispatch(s, sm, now, true, NULL);
	sched_msg_rewake(s, sm, now);
}

/*
 * flush --all / --domain, one message: its pending recipients (of
 * only_domain) not in a job are due now, marked with this flush; the
 * destinations its waiting recipients wait for are marked for a forced probe.  No
 * job is made or started here.  True if the message has a pending recipient
 * of only_domain (held or not).
 */
static bool
sched_msg_flush_due(struct sched *s, struct sched_msg *sm, const char *only_domain,
    uint64_t now)
{
	struct queue_msg *m = sm->m;
	bool matched = false, due = false;
	size_t i;

	for (i = 0; i < m->env.nrcpts; i++) {
		if (m->rcpt[i].state != RCPT_PENDING)
			continue;
		if (only_domain != NULL &&
		    util_strcasecmp(sched_rcpt_domain(m->env.rcpts[i].addr), only_domain) != 0)
			continue;
		matched = true;
		if (m->held)
			continue;
		if (sm->rc[i].waiting)
			sm->rc[i].wdest->forced_gen = s->flush_gen;
		else if (!sched_rcpt_busy(&sm->rc[i])) {   /* queued: it keeps its place */
			sm->rc[i].retry_at = now;
			sm->rc[i].flush_gen = s->flush_gen;
			due = true;
		}
	}
	if (due)
		sched_heap_set(s, &sm->wake, now);
	return matched;
}

/*
 * Flushing a backlog only changes state, whatever its size: recipients
 * become due and the timer dispatches them (SCHED_MAX_PER_TICK at a time)
 * through their destinations' windows; a down destination's waiting
 * recipients stay together behind ONE probe that goes out now, ignoring host backoff.
 */
int
sched_flush(struct sched *s, const char *what)
{
	struct sched_msg *sm;
	struct sched_dest *d, *dn;
	const char *domain = what != NULL && *what != '\0' ? what : NULL;
	uint64_t now = sched_now(s);
	int n = 0;

	if (s->stopping)
		return 0;
	dns_cache_clear(s->mx);          /* the admin may just have fixed DNS */
	if (s->mtasts != NULL)
		mtasts_recheck(s->mtasts);  /* or a domain's MTA-STS policy */
	if (domain != NULL && (sm = sched_msg_lookup(s, domain)) != NULL) {
		sched_msg_flush(s, sm, now);
		sched_arm(s);
		return 1;
	}
	s->flush_gen++;
	TAILQ_FOREACH(sm, &s->msgs, entry) {
		if (sched_msg_flush_due(s, sm, domain, now) || domain == NULL)
			n++;
	}
	for (d = TAILQ_FIRST(&s->dests); d != NULL; d = dn) {
		dn = TAILQ_NEXT(d, entry);
		if (d->forced_gen != s->flush_gen || d->state != SCHED_DEST_DOWN || d->probe_out)
			continue;
		d->probe_at = now;
		d->probe_force = true;
		sched_dest_rewake(s, d);
	}
	sched_arm(s);
	return n;
}

static void
sched_admin_log(const char *ev, const struct queue_msg *m)
{
	log_event(LOG_NOTICE, ev, "qid", m->qid, "by", "admin", NULL);
}

int
sched_hold(struct sched *s, const char *qid)
{
	struct sched_msg *sm = sched_msg_lookup(s, qid);
	struct queue_record rec;
	uint64_t now = sched_now(s);

	if (sm == NULL)
		return RELAY_ENOENT;
	if (!sm->m->held) {
		memset(&rec, 0, sizeof(rec));
		rec.type = QREC_HOLD;
		rec.rcpt = -1;
		rec.time_ms = now;
		rec.value = 1;
		sched_record(s, sm, &rec);
		sched_msg_unwait(s, sm, now);
		/* out of the queued lines: no first attempt is only postponed
		 * any more (one in flight keeps it until it ends); a held
		 * message may stay for days, its image would hold the bound */
		if (!sched_msg_under_way(sm))
			queue_msg_drop_image(sm->m);
		sched_admin_log("held", sm->m);
	}
	sched_msg_rewake(s, sm, now);
	sched_arm(s);
	return 0;
}

int
sched_release(struct sched *s, const char *qid)
{
	struct sched_msg *sm = sched_msg_lookup(s, qid);
	struct queue_record rec;
	uint64_t now = sched_now(s);
	size_t i;

	if (sm == NULL)
		return RELAY_ENOENT;
	if (sm->m->held) {
		memset(&rec, 0, sizeof(rec));
		rec.type = QREC_HOLD;
		rec.rcpt = -1;
		rec.time_ms = now;
		rec.value = 0;
		sched_record(s, sm, &rec);
		for (i = 0; i < sm->m->env.nrcpts; i++)
			if (!sched_rcpt_busy(&sm->rc[i]))
				sm->rc[i].retry_at = 0;
		sched_admin_log("released", sm->m);
	}
	sched_heap_set(s, &sm->wake, now);
	sched_arm(s);
	return 0;
}

int
sched_delete(struct sched *s, const char *qid)
{
	struct sched_msg *sm = sched_msg_lookup(s, qid);
	int rc;

	if (sm == NULL)
		return RELAY_ENOENT;
	sched_msg_unwait(s, sm, 0);
	if ((rc = queue_remove(s->q, sm->m)) != 0) {
		/* Not deleted: its cancelled recipients are due again now, and a
		 * due recipient's message always wakes by then (the tallies'
		 * pending/deferred split rests on it). */
		sched_msg_rewake(s, sm, sched_now(s));
		sched_arm(s);
		return rc;
	}
	s->stats->deleted++;
	sched_admin_log("deleted", sm->m);
	sched_heap_remove(s, &sm->wake);
	sched_msg_hash_del(s, sm);
	TAILQ_REMOVE(&s->msgs, sm, entry);
	s->nmsgs--;
	sched_tally_msg(s, sm->m, -1);
	sm->deleted = true;
	sched_msg_tally(s, sm);
	if (sm->njobs == 0)
		sched_msg_free(s, sm);  /* deleted: out of the lists and tallies already */
	sched_arm(s);
	return 0;
}

int
sched_bounce(struct sched *s, const char *qid)
{
	static const char reason[] = SCHED_BOUNCE_REASON;
	struct sched_msg *sm = sched_msg_lookup(s, qid);
	struct queue_msg *m;
	uint64_t now = sched_now(s);
	size_t i;

	if (sm == NULL)
		return RELAY_ENOENT;
	m = sm->m;
	sched_msg_unwait(s, sm, 0);
	for (i = 0; i < m->env.nrcpts; i++) {
		if (m->rcpt[i].state != RCPT_PENDING || sched_rcpt_busy(&sm->rc[i]))
			continue;
		sched_rcpt_outcome(s, sm, (int)i, SCHED_FAILED, NULL, NULL, "5.0.0", reason, false,
		    NULL, false, now);
	}
	sched_admin_log("bounced_by_admin", m);
	/* its report may be built later, once the F records are durable
	 * (sched_outcome_synced), or again after a failed try: it keeps the reason */
	sm->admin_bounced = true;
	sm->report_retry_at = 0;
	sched_msg_report(s, sm, reason, now);
	if (!sched_msg_maybe_done(s, sm))
		sched_msg_rewake(s, sm, now);
	sched_arm(s);
	return 0;
}

struct health *
sched_health(struct sched *s)
{
	return s->health;
}

struct dane_seen *
sched_dane(struct sched *s)
{
	return s->dane;
}

struct mtasts *
sched_mtasts(struct sched *s)
{
	return s->mtasts;
}

int
sched_host_reset(struct sched *s, const char *host)
{
	struct sched_dest *d, *dn;
	uint64_t now = sched_now(s);
	int rc;

	if ((rc = health_reset(s->health, host)) != 0)
		return rc;
	log_event(LOG_NOTICE, "host_reset", "host", host, "by", "admin", NULL);
	for (d = TAILQ_FIRST(&s->dests); d != NULL; d = dn) {
		dn = TAILQ_NEXT(d, entry);
		if (d->state == SCHED_DEST_DOWN) {
			d->probe_at = now;
			sched_dest_rewake(s, d);
		}
	}
	sched_arm(s);
	return 0;
}

struct route_table *
sched_routes(struct sched *s)
{
	return s->routes;
}

int
sched_route_set(struct sched *s, const char *domain, const char *hosts, struct buf *err)
{
	int rc;

	if ((rc = route_set(s->routes, domain, hosts, s->conf->router.smtp_port, err)) != 0)
		return rc;
	log_event(LOG_NOTICE, "route_set", "domain", domain, "hosts", hosts, "by", "admin", NULL);
	sched_reroute(s);
	sched_arm(s);
	return 0;
}

int
sched_route_clear(struct sched *s, const char *domain)
{
	int rc;

	if ((rc = route_clear(s->routes, domain)) != 0)
		return rc;
	log_event(LOG_NOTICE, "route_cleared", "domain", domain, "by", "admin", NULL);
	sched_reroute(s);
	sched_arm(s);
	return 0;
}

void
sched_route_list(struct sched *s, bool json, struct buf *out)
{
	route_list(s->routes, s->conf, json, out);
}

