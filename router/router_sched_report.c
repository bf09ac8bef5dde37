/*
 * router_sched_report.c - the reports a queued message owes its sender:
 * failures, expiries, deliveries whose NOTIFY asks for SUCCESS, and the one
 * delay warning, each built and queued by ndr/.  A report is built only
 * once the record that caused it (D, F) is durable: sched_msg_report skips
 * a recipient while its outcome_out (router_sched.c, sched_outcome_synced).
 * A report counts as sent only once its commit is durable: REPORTED
 * (WARNED) is recorded from ndr_send's done callback, which finds the
 * message again by its queue id; a report that could not be queued is
 * tried again after a back-off on the retry intervals.  See
 * router/SCHEDULING.md, "Lifetime".
 *
 * At most ROUTER_REPORTS_MAX (s->reports_max in tests) are in flight: a
 * message whose report finds no room waits in s->report_wait, by queue id,
 * and is run again (sched_report_pump) as reports end, oldest first.
 *
 * Owns: the small struct sched_report each report in flight carries, and
 * the ring of messages waiting for room.
 * Never: builds a report from an outcome not yet durable, records a report
 * before it is safely queued, lets the original leave the queue before its
 * reports are (sched_rcpt_done in router_sched.c), or builds the same
 * report twice while one is in flight.
 */
#include "router/router_sched_int.h"
#include "ndr/ndr.h"
#include "common/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
sched_ndr_fill(struct sched_msg *sm, int i, struct ndr_rcpt *nr)
{
	const struct queue_rcpt *qr = &sm->m->rcpt[i];
	struct queue_last last;

	queue_rcpt_last(qr, &last);
	memset(nr, 0, sizeof(*nr));
	nr->index = i;
	nr->status = last.status != NULL ? last.status : "4.4.1";
	nr->remote_host = last.host;
	nr->diagnostic = last.reply;
	nr->last_attempt_ms = qr->last_attempt_ms;
	nr->attempts = qr->attempts;
	nr->down_since_ms = sm->rc[i].down_since;
	if (nr->down_since_ms == 0 && sm->rc[i].waiting)
		nr->down_since_ms = sm->rc[i].wdest->down_since;
}

/* A report in flight: what its commit callback needs to find the message again. */
struct sched_report {
	struct sched *s;
	char qid[QID_MAX];              /* the original: it may be gone by then */
	enum ndr_kind kind;
	size_t n;
	int idx[];                      /* its recipients */
};

/* The report is safely queued (or there was nothing to send): record it. */
static void
sched_report_record(struct sched *s, struct sched_msg *sm, enum ndr_kind kind, const int *idx,
    size_t n, uint64_t now)
{
	struct queue_record rec;
	size_t k;

	memset(&rec, 0, sizeof(rec));
	rec.time_ms = now;
	if (kind == NDR_DELAYED) {
		rec.type = QREC_WARNED;
		rec.rcpt = -1;
		if (!sm->m->delay_warned)
			sched_record(s, sm, &rec);
	} else {
		rec.type = QREC_REPORTED;
		for (k = 0; k < n; k++) {
			rec.rcpt = idx[k];
			if (!sm->m->rcpt[idx[k]].reported)
				sched_record(s, sm, &rec);
		}
	}
	sm->report_retry_at = 0;
	sm->report_failures = 0;
}

/* A report could not be queued: the message keeps it due, with back-off
 * on the retry intervals (the original stays queued meanwhile). */
static void
sched_report_backoff(struct sched *s, struct sched_msg *sm, uint64_t now)
{
	if (sm->report_failures < UINT16_MAX)
		sm->report_failures++;
	sm->report_retry_at = now + sched_retry_delay(s->conf->router.retry_intervals,
	    s->conf->router.nretry_intervals, sm->report_failures, sched_rnd(s));
}

static void
sched_report_mark(struct sched_msg *sm, const struct sched_report *r, bool out)
{
	size_t k;

	if (r->kind == NDR_DELAYED)
		sm->warn_out = out;
	else
		for (k = 0; k < r->n; k++)
			sm->rc[r->idx[k]].report_out = out;
}

static unsigned
sched_reports_max(const struct sched *s)
{
	return s->reports_max != 0 ? s->reports_max : ROUTER_REPORTS_MAX;
}

/* sm's report finds no room: it waits, once, at the end of the ring. */
static void
sched_report_wait(struct sched *s, struct sched_msg *sm)
{
	size_t k;

	if (sm->report_wait)
		return;
	if (s->report_wait_n == s->report_wait_cap) {
		size_t cap = s->report_wait_cap ? 2 * s->report_wait_cap : 64;
		char (*ring)[QID_MAX] = xcalloc(cap, sizeof(*ring));

		for (k = 0; k < s->report_wait_n; k++)
			memcpy(ring[k], s->report_wait[(s->report_wait_head + k) % s->report_wait_cap],
			    QID_MAX);
		free(s->report_wait);
		s->report_wait = ring;
		s->report_wait_cap = cap;
		s->report_wait_head = 0;
	}
	k = (s->report_wait_head + s->report_wait_n++) % s->report_wait_cap;
	snprintf(s->report_wait[k], QID_MAX, "%s", sm->m->qid);
	sm->report_wait = true;
}

/*
 * Room for reports: the messages waiting for it run again (sched_msg_run),
 * oldest first, until the room is taken or none waits.  Each either takes
 * room or has nothing to report any more (deleted, reported meanwhile), so
 * the ring never waits while there is room.
 */
static void
sched_report_pump(struct sched *s, uint64_t now)
{
	while (s->report_wait_n > 0 && s->nreports < sched_reports_max(s) && !s->stopping) {
		struct sched_msg *sm = sched_msg_lookup(s, s->report_wait[s->report_wait_head]);

		s->report_wait_head = (s->report_wait_head + 1) % s->report_wait_cap;
		s->report_wait_n--;
		if (sm == NULL || !sm->report_wait)
			continue;
		sm->report_wait = false;
		sched_msg_run(s, sm, now);      /* as its timer would: warning, reports, rewake */
	}
}

void
sched_report_wait_free(struct sched *s)
{
	free(s->report_wait);
	s->report_wait = NULL;
	s->report_wait_head = s->report_wait_n = s->report_wait_cap = 0;
}

/*
 * ndr_send's done: the report's commit ended.  Durable: recorded now, and the
 * message runs again (it may have waited only for this to leave the queue).
 * Failed (ndr_failed was logged): due again after a back-off.  A message
 * deleted meanwhile is not found by its id: nothing to do.
 */
static void
sched_report_done(void *arg, int err, const char *ndr_qid)
{
	struct sched_report *r = arg;
	struct sched *s = r->s;
	struct sched_msg *sm;
	uint64_t now = sched_now(s);

	(void)ndr_qid;
	if (s->magic != SCHED_MAGIC)
		fatalx("%s: bad scheduler", __func__);
	s->nreports--;
	if ((sm = sched_msg_lookup(s, r->qid)) != NULL && !sm->deleted) {
		sched_report_mark(sm, r, false);
		if (err == 0) {
			sched_report_record(s, sm, r->kind, r->idx, r->n, now);
			sched_heap_set(s, &sm->wake, now);
		} else {
			sched_report_backoff(s, sm, now);
			sched_msg_rewake(s, sm, now);
		}
		sched_arm(s);
	}
	free(r);
	if (s->report_wait_n > 0) {
		sched_report_pump(s, now);
		sched_arm(s);           /* the messages it ran may be due sooner */
	}
	sched_shutdown_check(s);
}

/*
 * Queue one report of kind for recipients idx[0..n).  REPORTED (or WARNED)
 * is recorded only once the report's commit is durable (sched_report_done),
 * or at once when there is nothing to send (NOTIFY, null sender).
 */
static int
sched_report(struct sched *s, struct sched_msg *sm, enum ndr_kind kind, const int *idx, size_t n,
    const char *reason, uint64_t now)
{
	struct queue_msg *m = sm->m;
	struct ndr_rcpt *nr;
	struct sched_report *r;
	struct ndr_params p;
	char ndr_qid[QID_MAX] = "";
	size_t k;
	int rc;

	if (s->nreports >= sched_reports_max(s)) {
		sched_report_wait(s, sm);       /* sched_report_pump runs it again */
		return 0;
	}
	nr = xcalloc(n, sizeof(*nr));
	for (k = 0; k < n; k++) {
		sched_ndr_fill(sm, idx[k], &nr[k]);
		if (kind == NDR_DELAYED && nr[k].status[0] != '4')
			nr[k].status = "4.4.1";
	}
	memset(&p, 0, sizeof(p));
	p.reporting_mta = s->conf->hostname;
	p.now_ms = now;
	p.will_retry_until_ms = sched_expire_at(m->env.arrival_ms, s->conf);
	p.reason_text = reason;
	p.dkim = s->dkim;
	p.loop = s->loop;
	r = xcalloc(1, sizeof(*r) + n * sizeof(r->idx[0]));
	r->s = s;
	snprintf(r->qid, sizeof(r->qid), "%s", m->qid);
	r->kind = kind;
	r->n = n;
	memcpy(r->idx, idx, n * sizeof(r->idx[0]));
	rc = ndr_send(s->q, m, kind, nr, n, &p, s->stats, ndr_qid, sched_report_done, r);
	free(nr);
	if (rc != 0) {
		struct log_line l;

		log_begin(&l, LOG_ERR, "ndr_failed");
		log_kv(&l, "qid", m->qid);
		log_kvi(&l, "error", rc);
		log_end(&l);
		free(r);
		sched_report_backoff(s, sm, now);
		return rc;
	}
	if (ndr_qid[0] == '\0') {
		free(r);                /* nothing to send: decided, recorded now */
		sched_report_record(s, sm, kind, idx, n, now);
		return 0;
	}
	sched_report_mark(sm, r, true);
	if (++s->nreports > s->nreports_peak)
		s->nreports_peak = s->nreports;
	return 0;
}

/*
 * Report what is due and not yet reported: failures (expired ones apart)
 * and deliveries whose NOTIFY asks for SUCCESS, unless the next hop took
 * DSN on (QREC_DSN_PASSED: its notice is the one, RFC 3461 5.2.3).  For the null sender the
 * NDR module logs that it reports nothing; we record that it was decided.
 */
void
sched_msg_report(struct sched *s, struct sched_msg *sm, const char *reason, uint64_t now)
{
	struct queue_msg *m = sm->m;
	size_t n = m->env.nrcpts, i, nexp = 0, nfail = 0, nok = 0;
	int *exp, *fail, *ok;

	if (now < sm->report_retry_at)
		return;
	exp = xcalloc(n ? n : 1, sizeof(*exp));
	fail = xcalloc(n ? n : 1, sizeof(*fail));
	ok = xcalloc(n ? n : 1, sizeof(*ok));
	for (i = 0; i < n; i++) {
		const struct queue_rcpt *qr = &m->rcpt[i];

		if (qr->reported || sm->rc[i].report_out || sm->rc[i].outcome_out)
			continue;       /* reported, being queued, or its cause not durable yet */
		if (qr->state == RCPT_DELIVERED) {
			if ((m->env.rcpts[i].notify & ENV_NOTIFY_SUCCESS) && m->env.sender[0] != '\0' &&
			    !qr->dsn_passed)
				ok[nok++] = (int)i;
		} else if (qr->state == RCPT_FAILED) {
			if (qr->expired)
				exp[nexp++] = (int)i;
			else
				fail[nfail++] = (int)i;
		}
	}
	if (nexp > 0)
		sched_report(s, sm, NDR_EXPIRED, exp, nexp, NULL, now);
	if (nfail > 0)
		sched_report(s, sm, NDR_FAILED, fail, nfail, reason, now);
	if (nok > 0)
		sched_report(s, sm, NDR_SUCCESS, ok, nok, NULL, now);
	free(exp);
	free(fail);
	free(ok);
}

/* The one delay warning, once delay_warning has passed. */
void
sched_msg_warn(struct sched *s, struct sched_msg *sm, uint64_t now)
{
	struct queue_msg *m = sm->m;
	size_t i, n = 0;
	int *idx;

	if (m->delay_warned || sm->warn_out || m->env.sender[0] == '\0' ||
	    now < sched_warn_at(m->env.arrival_ms, s->conf) || now < sm->report_retry_at)
		return;
	idx = xcalloc(m->env.nrcpts ? m->env.nrcpts : 1, sizeof(*idx));
	for (i = 0; i < m->env.nrcpts; i++)
		if (m->rcpt[i].state == RCPT_PENDING)
			idx[n++] = (int)i;
	if (n > 0)
		sched_report(s, sm, NDR_DELAYED, idx, n, NULL, now);
	free(idx);
}
