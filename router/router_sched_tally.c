/*
 * router_sched_tally.c - the tallies behind `relayctl stats`: pending
 * recipients by where they are (due, in an attempt, queued behind their
 * destination's window, waiting for it, held) and by recipient domain, with
 * the destinations their jobs go to.  The scheduler's files call
 * sched_rcpt_tally() (or the message's and job's forms) after whatever a
 * recipient's view depends on changed; each recipient remembers where it is
 * counted, so a move is a few counter updates and stats never walks the
 * queue.
 *
 * Owns: struct sched_tdom and struct sched_tdest (freed when nothing is
 * counted under them any more).
 * Never: changes a message or a job; reads the clock (sched_stats takes now).
 */
#include "router/router_sched_int.h"
#include "common/util.h"

#include <stdlib.h>
#include <string.h>

/* A recipient domain, and the destinations of the jobs its recipients are in. */
struct sched_tdom {
	struct htab_node node;          /* in s->tdoms */
	char *name;                     /* lower-cased */
	size_t n;                       /* recipients counted under it */
	struct sched_tdest *dests;      /* the newest first */
};

struct sched_tdest {
	struct sched_tdest *next;
	char *dest;                     /* the destination's name (a copy) */
	size_t n;                       /* recipients of the domain in its jobs */
};

static struct sched_tdom *
sched_tdom_get(struct sched *s, const char *addr)
{
	const char *at = strrchr(addr, '@');
	const char *name = at != NULL ? at + 1 : "";
	struct htab_node *hn;
	struct sched_tdom *t;
	size_t k;

	if ((hn = htab_find(&s->tdoms, name)) != NULL)
		return HTAB_ENTRY(hn, struct sched_tdom, node);
	t = xcalloc(1, sizeof(*t));
	t->name = xstrdup(name);
	for (k = 0; t->name[k] != '\0'; k++)
		if (t->name[k] >= 'A' && t->name[k] <= 'Z')
			t->name[k] = (char)(t->name[k] - 'A' + 'a');
	htab_insert(&s->tdoms, &t->node, t->name);
	return t;
}

static void
sched_tdom_put(struct sched *s, struct sched_tdom *t)
{
	if (--t->n > 0)
		return;
	htab_remove(&s->tdoms, &t->node);
	free(t->name);
	free(t);
}

static struct sched_tdest *
sched_tdest_get(struct sched_tdom *t, const char *dest)
{
	struct sched_tdest *d;

	for (d = t->dests; d != NULL; d = d->next)
		if (strcmp(d->dest, dest) == 0)
			return d;
	d = xcalloc(1, sizeof(*d));
	d->dest = xstrdup(dest);
	d->next = t->dests;
	t->dests = d;
	return d;
}

static void
sched_tdest_put(struct sched_tdom *t, struct sched_tdest *d)
{
	struct sched_tdest **pp;

	if (--d->n > 0)
		return;
	for (pp = &t->dests; *pp != d; pp = &(*pp)->next)
		;
	*pp = d->next;
	free(d->dest);
	free(d);
}

/* Where recipient i of sm is to be counted now (sched_rcpt_view's order). */
static enum sched_tb
sched_rcpt_bucket(const struct sched_msg *sm, size_t i)
{
	const struct sched_job *job = sched_rcpt_job(&sm->rc[i]);

	if (sm->deleted || sm->m->rcpt[i].state != RCPT_PENDING)
		return SCHED_TB_NONE;
	if (sm->rc[i].waiting)
		return SCHED_TB_WAITING;
	if (sm->rc[i].queued)
		return SCHED_TB_QUEUED;
	if (job != NULL)
		return sched_job_active(job) ? SCHED_TB_ACTIVE : SCHED_TB_QUEUED;
	return sm->m->held ? SCHED_TB_HELD : SCHED_TB_DUE;
}

void
sched_rcpt_tally(struct sched *s, struct sched_msg *sm, size_t i)
{
	struct sched_rcpt *rc = &sm->rc[i];
	enum sched_tb b = sched_rcpt_bucket(sm, i);
	const struct sched_job *job = sched_rcpt_job(rc);
	const char *dest = b == SCHED_TB_NONE ? NULL : sched_rcpt_lined(rc) ? rc->wdest->name :
	    job != NULL && job->dest != NULL ? job->dest->name : NULL;

	if (b == rc->tbucket && (dest == NULL ? rc->tdest == NULL :
	    rc->tdest != NULL && strcmp(rc->tdest->dest, dest) == 0))
		return;
	s->tb[rc->tbucket]--;
	s->tb[b]++;
	rc->tbucket = (uint8_t)b;
	if (rc->tdest != NULL) {
		sched_tdest_put(rc->tdom, rc->tdest);
		rc->tdest = NULL;
	}
	if (b == SCHED_TB_NONE) {
		if (rc->tdom != NULL)
			sched_tdom_put(s, rc->tdom);
		rc->tdom = NULL;
		return;
	}
	if (rc->tdom == NULL) {
		rc->tdom = sched_tdom_get(s, sm->m->env.rcpts[i].addr);
		rc->tdom->n++;
	}
	if (dest != NULL) {
		rc->tdest = sched_tdest_get(rc->tdom, dest);
		rc->tdest->n++;
	}
}

void
sched_msg_tally(struct sched *s, struct sched_msg *sm)
{
	size_t i;

	for (i = 0; i < sm->m->env.nrcpts; i++)
		sched_rcpt_tally(s, sm, i);
}

void
sched_job_tally(struct sched *s, struct sched_job *job)
{
	size_t k;

	for (k = 0; k < job->nrcpts; k++)
		sched_rcpt_tally(s, job->sm, (size_t)sched_job_rcpt(job, k));
}

/*
 * Due recipients whose retry time is not after now.  A due recipient's
 * message wakes no later than its retry time (sched_msg_rewake), so only
 * messages whose wake-up is not after now are looked at: the heap's top.
 */
static size_t
sched_due_now(const struct sched *s, uint64_t now)
{
	size_t *stack, top = 0, n = 0, i, k, c;

	if (s->nheap == 0 || s->heap[0]->at > now)
		return 0;
	stack = xcalloc(s->nheap, sizeof(*stack));
	stack[top++] = 0;
	while (top > 0) {
		struct sched_wake *w = s->heap[i = stack[--top]];

		if (w->kind == SCHED_WAKE_MSG) {
			const struct sched_msg *sm = SCHED_WAKE_OWNER(w, struct sched_msg);

			for (k = 0; k < sm->m->env.nrcpts; k++)
				if (sm->rc[k].tbucket == SCHED_TB_DUE && sm->rc[k].retry_at <= now)
					n++;
		}
		for (c = 2 * i + 1; c <= 2 * i + 2 && c < s->nheap; c++)
			if (s->heap[c]->at <= now)
				stack[top++] = c;
	}
	free(stack);
	return n;
}

void
sched_stats(struct sched *s, uint64_t now, struct sched_stats *out)
{
	size_t due_now = sched_due_now(s, now), j = 0;
	struct htab_iter it;
	struct htab_node *hn;

	memset(out, 0, sizeof(*out));
	out->messages = s->nmsgs;
	out->active = s->tb[SCHED_TB_ACTIVE];
	out->held = s->tb[SCHED_TB_HELD];
	out->pending = s->tb[SCHED_TB_QUEUED] + due_now;
	out->deferred = s->tb[SCHED_TB_WAITING] + s->tb[SCHED_TB_DUE] - due_now;
	out->doms = xcalloc(htab_count(&s->tdoms) + 1, sizeof(*out->doms));
	HTAB_FOREACH(hn, &s->tdoms, &it) {
		const struct sched_tdom *t = HTAB_ENTRY(hn, struct sched_tdom, node);
		const struct sched_tdest *td, *best = t->dests;

		/* A domain split over destinations (a reload changed its route
		 * while jobs ran): the one holding most of its recipients. */
		for (td = t->dests; td != NULL; td = td->next)
			if (td->n > best->n)
				best = td;
		out->doms[j].name = t->name;
		out->doms[j].rcpts = t->n;
		out->doms[j].dest = best != NULL ? best->dest : NULL;
		j++;
	}
	out->ndoms = j;
}

void
sched_stats_free(struct sched_stats *st)
{
	free(st->doms);
	memset(st, 0, sizeof(*st));
}

/* At sched_free, after every message is gone: nothing is counted any more. */
void
sched_tally_free(struct sched *s)
{
	struct htab_iter it;
	struct htab_node *hn;

	HTAB_FOREACH(hn, &s->tdoms, &it) {
		struct sched_tdom *t = HTAB_ENTRY(hn, struct sched_tdom, node);

		while (t->dests != NULL) {
			struct sched_tdest *d = t->dests;

			t->dests = d->next;
			free(d->dest);
			free(d);
		}
		free(t->name);
		free(t);
	}
	htab_free(&s->tdoms);
}
