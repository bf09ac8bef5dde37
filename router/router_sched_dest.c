/*
 * router_sched_dest.c - the scheduler's destinations and jobs: where a job
 * (one transaction of one message to one destination) goes and what the
 * answers mean.  A job is admitted by its destination (started, or its
 * recipients put in the destination's queued line behind the ramp's window,
 * or in its waiting line while the destination is down: the job is freed),
 * resolves its exchangers (routes, MX), walks their addresses in order
 * skipping hosts known to be down, hands ONE attempt at a time to deliver/,
 * and turns the result into recipient outcomes, host health and the
 * destination's state (down: every recipient waits for ONE probe, in the
 * destination's line and in no job; up again: the line is released into
 * the queued line, paced by the window: the pump makes a job of its first
 * recipients when the window has room).  See router/SCHEDULING.md.
 *
 * A flush (sched_flush --all / --domain) gives each destination it concerns
 * ONE attempt that ignores host backoff and the destination's state: the
 * probe of a down destination, or else the first job of flushed recipients
 * admitted; everything else it made due goes through the window as usual.
 *
 * Owns: every struct sched_dest and struct sched_job, the destinations'
 * queued and waiting lines (links in the messages' struct sched_rcpt), and the route cache
 * (struct sched_rcache: recipient domain -> shared route, one reference each).
 * Never: keeps a timer of its own (probes are wake-ups in router_sched.c's
 * heap), speaks SMTP, or records a state change except through
 * sched_rcpt_outcome() (queue_record()).
 */
#include "router/router_sched_int.h"
#include "common/util.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void sched_job_start(struct sched *, struct sched_job *);
static void sched_dest_pump(struct sched *, struct sched_dest *);
static void sched_dest_unhold(struct sched *, struct sched_dest *);
static void sched_job_next(struct sched_job *);

/* ------------------------------------------------------------------ */
/* Destinations by name. */

struct sched_dest *
sched_dest_get(struct sched *s, const char *name)
{
	struct htab_node *n = htab_find(&s->dhash, name);
	struct sched_dest *d;

	if (n != NULL)
		return HTAB_ENTRY(n, struct sched_dest, node);
	d = xcalloc(1, sizeof(*d));
	d->name = xstrdup(name);
	d->state = SCHED_DEST_NEW;
	d->window = 1;                  /* unknown: one job finds out first */
	TAILQ_INIT(&d->queued);
	TAILQ_INIT(&d->waiting);
	d->wake.at = SCHED_NOWAKE;
	d->wake.kind = SCHED_WAKE_DEST;
	htab_insert(&s->dhash, &d->node, d->name);
	TAILQ_INSERT_TAIL(&s->dests, d, entry);
	s->ndests++;
	return d;
}

/*
 * Free d when nothing refers to it any more (its hosts' health stays).  A
 * down destination is kept, jobs or not, until it is seen up again (or
 * relayd stops): the outage, and the down_since its reports name, does not
 * end because its waiting queue emptied in between.  One left empty for
 * SCHED_HEALTH_KEEP (the horizon of the host health table) is forgotten by
 * the scheduler's hourly sweep, so that dead domains seen once do not pile
 * up.
 */
void
sched_dest_maybe_free(struct sched *s, struct sched_dest *d)
{
	if (d->inflight > 0 || d->nbacklog > 0 || d->nwaiting > 0) {
		d->empty_since = 0;
		return;
	}
	if (d->state == SCHED_DEST_DOWN && !s->stopping) {
		uint64_t now = sched_now(s);

		if (d->empty_since == 0)
			d->empty_since = now;
		if (now - d->empty_since < SCHED_HEALTH_KEEP) {
			sched_heap_set(s, &d->wake, d->empty_since + SCHED_HEALTH_KEEP);
			return;
		}
	}
	sched_heap_remove(s, &d->wake);
	sched_dest_unhold(s, d);
	htab_remove(&s->dhash, &d->node);
	TAILQ_REMOVE(&s->dests, d, entry);
	s->ndests--;
	sched_route_unref(d->route);
	free(d->name);
	free(d);
}

/* When an empty down destination is to be forgotten, else SCHED_NOWAKE. */
static uint64_t
sched_dest_forget_at(const struct sched *s, const struct sched_dest *d)
{
	if (d->state != SCHED_DEST_DOWN || s->stopping || d->probe_out || d->empty_since == 0 ||
	    d->inflight > 0 || d->nbacklog > 0 || d->nwaiting > 0)
		return SCHED_NOWAKE;
	return d->empty_since + SCHED_HEALTH_KEEP;
}

/* d's wake is due: its probe, or the end of its time as an empty down one. */
void
sched_dest_wake(struct sched *s, struct sched_dest *d)
{
	if (sched_dest_forget_at(s, d) != SCHED_NOWAKE)
		sched_dest_maybe_free(s, d);
	else
		sched_dest_rewake(s, d);
}

/* ------------------------------------------------------------------ */
/* Jobs. */

static const struct sched_last sched_last_none;

/* The job's last attempt, to set (allocated on first use). */
static struct sched_last *
sched_job_last(struct sched_job *job)
{
	if (job->last == NULL)
		job->last = xcalloc(1, sizeof(*job->last));
	return job->last;
}

/* The job's last attempt, to read: empty fields if it made none. */
static const struct sched_last *
sched_job_seen(const struct sched_job *job)
{
	return job->last != NULL ? job->last : &sched_last_none;
}

/* Whether the job's attempt, if one runs, tried to connect to an exchanger. */
static bool
sched_job_tried(const struct sched_job *job)
{
	return job->at != NULL && job->at->ntried > 0;
}

/* Drop one reference to a shared route (NULL: nothing). */
void
sched_route_unref(struct sched_route *sr)
{
	if (sr == NULL || --sr->refs > 0)
		return;
	route_release(&sr->r);
	free(sr);
}

/*
 * A reference to the shared route equal to *r: like (NULL: none) when it is
 * the same, else its destination's route when it has one and it is the
 * same (r released), else a new one made of r's contents (sched_job_new
 * makes it the destination's).  *r is left empty.  A route is compared in
 * full (route_equal), so a job never sends mail another way than its own
 * route says, whatever changed in between.
 */
static struct sched_route *
sched_route_share(struct sched *s, struct route *r, struct sched_route *like)
{
	struct htab_node *n;
	struct sched_route *sr;

	if (like != NULL && route_equal(&like->r, r)) {
		route_release(r);
		like->refs++;
		return like;
	}
	n = htab_find(&s->dhash, r->dest);
	sr = n != NULL ? HTAB_ENTRY(n, struct sched_dest, node)->route : NULL;
	if (sr != NULL && route_equal(&sr->r, r)) {
		route_release(r);
		sr->refs++;
		return sr;
	}
	sr = xmalloc(sizeof(*sr));
	sr->r = *r;
	memset(r, 0, sizeof(*r));
	sr->refs = 1;                   /* the caller's */
	return sr;
}

/* Route cache (struct sched_rcache): drop every entry; free_slots: the array too. */
void
sched_route_cache_flush(struct sched *s, bool free_slots)
{
	struct sched_rcache *c = &s->rcache;
	size_t i;

	for (i = 0; c->slot != NULL && i < SCHED_RCACHE_SLOTS; i++) {
		if (c->slot[i].sr == NULL)
			continue;
		sched_route_unref(c->slot[i].sr);
		c->slot[i].sr = NULL;
	}
	if (free_slots) {
		free(c->slot);
		c->slot = NULL;
	}
}

/* Fold domain as route_resolve does (route_fold_domain) into key: its
 * length, or SIZE_MAX when it does not fit. */
static size_t
sched_route_key(const char *domain, char key[SCHED_RCACHE_KEYMAX])
{
	size_t len = route_fold_domain(domain, key, SCHED_RCACHE_KEYMAX);

	return len < SCHED_RCACHE_KEYMAX ? len : SIZE_MAX;
}

struct sched_route *
sched_route_for(struct sched *s, const char *domain, struct sched_route *like)
{
	struct sched_rcache *c = &s->rcache;
	struct sched_rcache_slot *e = NULL;
	struct sched_route *sr;
	struct route r;
	char key[SCHED_RCACHE_KEYMAX];
	size_t len = sched_route_key(domain, key), k, at, first = 0;
	uint32_t h = 0;

	if (len != SIZE_MAX) {
		if (c->slot == NULL)
			c->slot = xcalloc(SCHED_RCACHE_SLOTS, sizeof(*c->slot));
		if (c->route_gen != route_table_gen(s->routes)) {
			sched_route_cache_flush(s, false);
			c->route_gen = route_table_gen(s->routes);
		}
		h = util_hash_bytes(key, len);
		first = h & (SCHED_RCACHE_SLOTS - 1);
		for (k = 0, at = first; k < SCHED_RCACHE_PROBE; k++, at = (at + 1) & (SCHED_RCACHE_SLOTS - 1)) {
			e = &c->slot[at];
			if (e->sr != NULL && e->hash == h && e->len == len &&
			    memcmp(e->domain, key, len) == 0) {
				c->hits++;
				e->sr->refs++;
				return e->sr;
			}
		}
	}
	c->misses++;
	route_resolve(s->routes, s->conf, domain, &r);
	sr = sched_route_share(s, &r, like);
	if (len == SIZE_MAX)
		return sr;
	for (k = 0, at = first; k < SCHED_RCACHE_PROBE; k++, at = (at + 1) & (SCHED_RCACHE_SLOTS - 1))
		if (c->slot[at].sr == NULL)
			break;
	e = &c->slot[k < SCHED_RCACHE_PROBE ? at : first];
	if (e->sr != NULL)                      /* evicted */
		sched_route_unref(e->sr);
	memcpy(e->domain, key, len + 1);
	e->hash = h;
	e->len = (uint32_t)len;
	e->sr = sr;
	sr->refs++;
	return sr;
}

struct sched_job *
sched_job_new(struct sched *s, struct sched_msg *sm, struct sched_dest *d, struct sched_route *sr)
{
	struct sched_job *job = xcalloc(1, sizeof(*job));
	size_t max;

	job->magic = SCHED_MAGIC_JOB;
	job->sm = sm;
	job->route = sr;
	sr->refs++;
	if (d->route != sr) {                   /* the next job of d shares it */
		sr->refs++;
		sched_route_unref(d->route);
		d->route = sr;
	}
	/* no more than the message has: most have one, and max_rcpts_per_txn is 100 */
	max = sched_job_max(s);
	if (max > sm->m->env.nrcpts)
		max = sm->m->env.nrcpts;
	/* a job of one recipient (most are) keeps its index inline */
	if (max > 1) {
		job->many = true;
		job->rc.many = xcalloc(max, sizeof(*job->rc.many));
	}
	sm->njobs++;
	return job;
}

unsigned
sched_job_max(const struct sched *s)
{
	unsigned max = s->conf->router.max_rcpts_per_txn;

	return max == 0 ? 1 : max > SCHED_JOB_RCPTS_MAX ? SCHED_JOB_RCPTS_MAX : max;
}

uint64_t
sched_job_add_rcpt(struct sched *s, struct sched_job *job, int i)
{
	struct sched_rcpt *rc = &job->sm->rc[i];
	uint64_t gen = rc->flush_gen;

	if (rc->waiting)
		fatalx("%s: recipient is waiting", __func__);
	sched_job_rcpts(job)[job->nrcpts++] = i;
	rc->job = job;
	sched_rcpt_tally(s, job->sm, (size_t)i);
	rc->flush_gen = 0;
	return gen;
}

/* The job's attempt is over (no query or delivery of it out): free what it held. */
static void
sched_attempt_free(struct sched_job *job)
{
	struct sched_attempt *at = job->at;

	if (at == NULL)
		return;
	if (at->mx != NULL)
		dns_result_free(at->mx);
	free(at->dr);
	free(at->msg_path);
	queue_image_unref(at->image);
	tlspolicy_clear(&at->tlspol);
	mtasts_policy_release(&at->sts);
	conf_unref(at->conf);
	free(at);
	job->at = NULL;
}

/* Another reference to sr. */
static struct sched_route *
sched_route_ref(struct sched_route *sr)
{
	sr->refs++;
	return sr;
}

/* Free a job that is in no list; its recipients become free (retry_at kept). */
void
sched_job_free(struct sched *s, struct sched_job *job)
{
	size_t k;

	for (k = 0; k < job->nrcpts; k++) {
		int i = sched_job_rcpt(job, k);

		if (sched_rcpt_job(&job->sm->rc[i]) == job) {
			job->sm->rc[i].job = NULL;
			sched_rcpt_tally(s, job->sm, (size_t)i);
		}
	}
	/* The message's first round of attempts is over (delivered, deferred or
	 * failed; not when its recipients were only queued behind the window):
	 * later ones read its file, the image's memory goes now. */
	job->sm->njobs--;
	if (!sched_msg_under_way(job->sm))
		queue_msg_drop_image(job->sm->m);
	sched_attempt_free(job);
	free(job->last);
	sched_route_unref(job->route);
	if (job->many)
		free(job->rc.many);
	job->magic = 0;
	free(job);
}

/* Put recipient i of sm (in no job) at the end of d's queued line (queued)
 * or waiting line. */
static void
sched_rcpt_line(struct sched *s, struct sched_msg *sm, size_t i, struct sched_dest *d,
    bool queued)
{
	struct sched_rcpt *rc = &sm->rc[i];

	if (sched_rcpt_busy(rc))
		fatalx("%s: recipient is busy", __func__);
	rc->wdest = d;
	if (queued) {
		rc->queued = true;
		TAILQ_INSERT_TAIL(&d->queued, rc, wentry);
		d->nbacklog++;
		s->nr_backlog++;
	} else {
		rc->waiting = true;
		TAILQ_INSERT_TAIL(&d->waiting, rc, wentry);
		d->nwaiting++;
		s->nr_waiting++;
	}
	sched_rcpt_tally(s, sm, i);
}

void
sched_rcpt_unwait(struct sched *s, struct sched_msg *sm, size_t i, uint64_t due)
{
	struct sched_rcpt *rc = &sm->rc[i];
	struct sched_dest *d = rc->wdest;

	if (rc->queued) {
		TAILQ_REMOVE(&d->queued, rc, wentry);
		d->nbacklog--;
		s->nr_backlog--;
		/* the line emptied (a take, delete, hold, reroute, or d went
		 * down: the line to its waiting line, whose next probe the
		 * flush's attempt becomes, sched_dest_down): no job is left for
		 * a flush's forced attempt held for room */
		if (TAILQ_EMPTY(&d->queued))
			d->next_force = false;
	} else if (rc->waiting) {
		TAILQ_REMOVE(&d->waiting, rc, wentry);
		d->nwaiting--;
		s->nr_waiting--;
	} else
		fatalx("%s: recipient is in no line", __func__);
	rc->waiting = rc->queued = false;
	rc->job = NULL;
	rc->retry_at = due;
	rc->flush_gen = 0;
	sched_rcpt_tally(s, sm, i);
}

void
sched_msg_unwait(struct sched *s, struct sched_msg *sm, uint64_t due)
{
	struct sched_dest *ds[8], **dests = ds, *d;
	size_t n = sm->m->env.nrcpts, nd = 0, i, k;

	for (i = 0; i < n; i++) {
		if (!sched_rcpt_lined(&sm->rc[i]))
			continue;
		d = sm->rc[i].wdest;
		sched_rcpt_unwait(s, sm, i, due);
		for (k = 0; k < nd && dests[k] != d; k++)
			;
		if (k < nd)
			continue;
		if (nd == RELAY_ARRAY_LEN(ds) && dests == ds) {
			dests = xcalloc(n, sizeof(*dests));
			memcpy(dests, ds, sizeof(ds));
		}
		dests[nd++] = d;
	}
	/* Only now: a destination's next probe never takes one of these */
	for (k = 0; k < nd; k++) {
		sched_dest_rewake(s, dests[k]);
		sched_dest_maybe_free(s, dests[k]);
	}
	if (dests != ds)
		free(dests);
}

/*
 * What a recipient that tried no exchanger records when it waits for d: that
 * d is down, and nothing of an attempt (no host, no address: those of its
 * own last attempt stay, QREC_NO_ATTEMPT).  The same for every such
 * recipient of d, whichever attempt found d down, so one that waited already
 * (a restart's, found waiting again) changes nothing and is not written
 * again (sched_rcpt_outcome; SCHEDULING.md "Outages").
 */
static void
sched_dest_down_why(const struct sched_dest *d, char *buf, size_t len)
{
	snprintf(buf, len, "all exchangers of %s are down", d->name);
}

/*
 * Why recipient r, which tried no exchanger, waits while d is down: down
 * (sched_dest_down_why), unless r already waits with a reply that says why d
 * is down ("... (last: host: reply)", from an attempt of its own): that cause
 * is kept, so a wait that changes nothing (a restart's) is not recorded and
 * the report still names it.  The reply is copied into out.
 */
static const char *
sched_rcpt_down_why(const struct queue_rcpt *r, const char *down, struct buf *out)
{
	struct queue_last last;
	size_t n = strlen(down);

	if (!r->waiting || !queue_rcpt_has_status(r))
		return down;
	queue_rcpt_last(r, &last);
	if (last.reply == NULL || strncmp(last.reply, down, n) != 0 ||
	    (last.reply[n] != '\0' && strncmp(last.reply + n, " (last: ", 8) != 0))
		return down;
	buf_reset(out);
	buf_append(out, last.reply, strlen(last.reply));
	return buf_cstr(out);
}

/*
 * The job's recipients wait for the destination to come back (logged and
 * recorded, with the last exchanger tried: host and ip, "" for none, and
 * why; a job that tried none records sched_dest_down_why), at the end of
 * its line and in no job: the job, taken out of any list, is freed.
 * Those of a message held meanwhile (its attempt was out) stay out of the
 * line, held: no probe or release may take them.
 */
static void
sched_job_wait(struct sched *s, struct sched_job *job, const char *host, const char *ip,
    const char *why, uint64_t now)
{
	struct sched_dest *d = job->dest;
	struct sched_msg *sm = job->sm;
	struct queue_msg *m = sm->m;
	bool tried = sched_job_tried(job);
	struct buf own = BUF_INIT;
	char down[512];
	size_t k;

	if (!tried) {
		sched_dest_down_why(d, down, sizeof(down));
		host = ip = NULL;
	}
	queue_msg_drop_image(m);        /* it may wait long: it will read its file */
	for (k = 0; k < job->nrcpts; k++) {
		int i = sched_job_rcpt(job, k);

		if (m->rcpt[i].state != RCPT_PENDING)
			continue;
		if (sm->rc[i].down_since == 0)
			sm->rc[i].down_since = d->down_since != 0 ? d->down_since : now;
		sched_rcpt_outcome(s, sm, i, SCHED_DEFERRED, host, ip, "4.4.1",
		    tried ? why : sched_rcpt_down_why(&m->rcpt[i], down, &own), tried, d->name,
		    false, now);
	}
	buf_free(&own);
	for (k = 0; k < job->nrcpts; k++) {
		int i = sched_job_rcpt(job, k);

		if (sched_rcpt_job(&sm->rc[i]) != job)
			continue;
		sm->rc[i].job = NULL;
		if (m->rcpt[i].state == RCPT_PENDING && !m->held)
			sched_rcpt_line(s, sm, (size_t)i, d, false);
		else {
			if (m->held)
				sm->rc[i].retry_at = now;       /* as sched_hold leaves it */
			sched_rcpt_tally(s, sm, (size_t)i);
		}
	}
	sched_job_free(s, job);
}

/* Whether rc is in d's queued line (queued) or waiting line. */
static bool
sched_rcpt_in(const struct sched_rcpt *rc, const struct sched_dest *d, bool queued)
{
	return (queued ? rc->queued : rc->waiting) && rc->wdest == d;
}

/*
 * A job of recipient first, in one of d's lines, taken out of it with the
 * other recipients of its message in that line that sched_msg_dispatch
 * would group with it: those, in their order, cut into jobs of
 * sched_job_max, the one first is in.  Not admitted yet.  Its route is what
 * their domain's route is now (the route cache), shared with d's; from the
 * queued line, d's route (the line is within one route generation: each was
 * queued under d's route, and sched_reroute takes out those whose domain
 * goes another way since), without a lookup per job the pump makes.
 */
static struct sched_job *
sched_dest_take(struct sched *s, struct sched_dest *d, struct sched_rcpt *first)
{
	struct sched_msg *sm = sched_rcpt_msg(first);
	const char *addr = sm->m->env.rcpts[first->idx].addr, *at = strrchr(addr, '@');
	size_t n = sm->m->env.nrcpts, max = sched_job_max(s), pos = 0, from, i;
	bool queued = first->queued;
	struct sched_route *sr = queued && d->route != NULL ? sched_route_ref(d->route) :
	    sched_route_for(s, at != NULL ? at + 1 : "", d->route);
	struct sched_job *job = sched_job_new(s, sm, d, sr);

	sched_route_unref(sr);
	job->dest = d;
	for (i = 0; i < first->idx; i++)
		pos += sched_rcpt_in(&sm->rc[i], d, queued);
	from = pos - pos % max;         /* first's job begins with the from-th */
	for (i = 0, pos = 0; i < n && job->nrcpts < max; i++) {
		if (!sched_rcpt_in(&sm->rc[i], d, queued) || pos++ < from)
			continue;
		sched_rcpt_unwait(s, sm, i, 0);
		(void)sched_job_add_rcpt(s, job, (int)i);
	}
	return job;
}

/* A job of the first in d's queued line (sched_dest_take), forced when a
 * flush's forced attempt of d waited for room in all (d->next_force; a
 * line emptied otherwise, by a delete, a hold, a reroute or an outage of
 * d, clears it: sched_rcpt_unwait). */
static struct sched_job *
sched_dest_take_queued(struct sched *s, struct sched_dest *d)
{
	bool force = d->next_force;     /* read first: a take that empties the line clears it */
	struct sched_job *job = sched_dest_take(s, d, TAILQ_FIRST(&d->queued));

	job->force = force;
	d->next_force = false;
	return job;
}

/* The message's view on one attempt of a job: every recipient of it gets o. */
static void
sched_job_outcome_all(struct sched *s, struct sched_job *job, enum sched_outcome o,
    const char *status, const char *reply, bool counted, uint64_t now)
{
	struct queue_msg *m = job->sm->m;
	size_t k;

	for (k = 0; k < job->nrcpts; k++) {
		int i = sched_job_rcpt(job, k);

		if (m->rcpt[i].state != RCPT_PENDING)
			continue;
		sched_rcpt_outcome(s, job->sm, i, o, sched_job_seen(job)->host,
		    sched_job_seen(job)->ip, status, reply, counted, NULL, false, now);
	}
}

static void
sched_log_dest(const char *ev, struct sched_dest *d, uint64_t now, enum log_level lvl)
{
	struct log_line l;
	char buf[32];

	log_begin(&l, lvl, ev);
	log_kv(&l, "dest", d->name);
	if (d->state == SCHED_DEST_DOWN) {
		util_rfc3339(d->probe_at, buf, sizeof(buf));
		log_kv(&l, "probe_at", buf);
		log_kvu(&l, "waiting", d->nwaiting);
	} else {
		util_format_duration(now - d->down_since, buf, sizeof(buf));
		log_kv(&l, "down_for", buf);
		log_kvu(&l, "backlog", d->nbacklog);
	}
	log_end(&l);
}

/* Whether the destination has as many jobs in flight as it may (sched_dest_cap()). */
static bool
sched_dest_full(const struct sched *s, const struct sched_dest *d)
{
	return d->inflight >= sched_dest_cap(s->conf->router.max_connections, d->window);
}

/* Jobs in flight in all (s->nactive) at most: s->jobs_max when set
 * (tests), else 2 per router.max_connections, at least SCHED_JOBS_MIN
 * (SCHEDULING.md, "A cap on jobs in flight"). */
unsigned
sched_jobs_max(const struct sched *s)
{
	unsigned mc = s->conf->router.max_connections;

	if (s->jobs_max != 0)
		return s->jobs_max;
	if (mc > UINT_MAX / 2)
		return UINT_MAX;
	return 2 * mc > SCHED_JOBS_MIN ? 2 * mc : SCHED_JOBS_MIN;
}

/* Whether the jobs in flight in all are at the cap (sched_jobs_max). */
static bool
sched_jobs_full(const struct sched *s)
{
	return s->nactive >= sched_jobs_max(s);
}

/* d's queued line (or, down, its due probe) waits for room in all: at the
 * end of the ring of held destinations, or, when fresh (new mail or a retry
 * for a destination with no job and no line: its first job waits for the
 * next free slot, not for a turn of every backlog), behind the fresh ones
 * already at its front (s->held_fresh): the fresh go in the order they
 * came, a later one never passes an earlier one. */
static void
sched_dest_hold(struct sched *s, struct sched_dest *d, bool fresh)
{
	if (d->held || (TAILQ_EMPTY(&d->queued) && d->state != SCHED_DEST_DOWN))
		return;
	d->held = true;
	if (!fresh)
		TAILQ_INSERT_TAIL(&s->held, d, hentry);
	else {
		if (s->held_fresh != NULL)
			TAILQ_INSERT_AFTER(&s->held, s->held_fresh, d, hentry);
		else
			TAILQ_INSERT_HEAD(&s->held, d, hentry);
		s->held_fresh = d;
	}
}

/* d leaves the ring of held destinations (it is freed, or relayd stops). */
static void
sched_dest_unhold(struct sched *s, struct sched_dest *d)
{
	if (!d->held)
		return;
	if (s->held_fresh == d)         /* the one before it is fresh too, or none is */
		s->held_fresh = TAILQ_PREV(d, sched_destq, hentry);
	TAILQ_REMOVE(&s->held, d, hentry);
	d->held = false;
	if (TAILQ_EMPTY(&s->held))
		s->held_backlog_turn = false;   /* a new turn begins with the fresh */
}

/* Loop: the queue's writer has caught up (half of pump_ops_max behind):
 * the held destinations pump again, in turn. */
static void
sched_pump_drained(void *arg)
{
	struct sched *s = arg;

	s->pump_paced = false;
	if (s->stopping)
		return;
	sched_held_pump(s);
	sched_arm(s);
}

/*
 * Whether the pumps hold back: the records and removals the queue's writer
 * has not written yet are pump_ops_max or more.  Every job a pump starts
 * issues a record per recipient and, once its message is done, a removal;
 * a backlog released faster than the writer writes them piled them up in
 * memory (tests/bench/README.md, "the release's memory").  Held back, the
 * jobs in flight go on, the rest of each queued line waits, and
 * sched_pump_drained() pumps again once the writer is down to half.  A job
 * admitted with room in its destination's window, and in all
 * (sched_jobs_max), starts all the same (new mail and retries are not held
 * behind another destination's backlog); a record that fails is done too,
 * so the wait always ends.
 */
static bool
sched_pump_paced(struct sched *s)
{
	if (s->pump_paced)
		return true;
	if (queue_ops_unwritten(s->q) < s->pump_ops_max)
		return false;
	s->pump_wait.cb = sched_pump_drained;
	s->pump_wait.arg = s;
	if (queue_wait_written(s->q, &s->pump_wait, s->pump_ops_max / 2))
		return false;
	s->pump_paced = true;
	return true;
}

/* Whether a pump may start a job: the jobs in flight are below the cap
 * and the queue's writer keeps up. */
static bool
sched_pump_room(struct sched *s)
{
	return !sched_jobs_full(s) && !sched_pump_paced(s);
}

void
sched_pump_stop(struct sched *s)
{
	struct sched_dest *d;

	if (s->pump_paced) {
		queue_wait_cancel(s->q, &s->pump_wait);
		s->pump_paced = false;
	}
	while ((d = TAILQ_FIRST(&s->held)) != NULL)
		sched_dest_unhold(s, d);
}

/* While the destination's window allows, and there is room in all
 * (sched_pump_room), make a job of the first in its queued line (with its
 * message's others, as the dispatch groups them) and start it; without
 * room, d is held (sched_dest_hold).  While others are held, d takes its
 * turn among them rather than the room one of them waits for. */
static void
sched_dest_pump(struct sched *s, struct sched_dest *d)
{
	struct sched_rcpt *rc;

	if (s->stopping)
		return;
	if (!TAILQ_EMPTY(&s->held)) {
		if (d->state != SCHED_DEST_DOWN && !sched_dest_full(s, d))
			sched_dest_hold(s, d, false);
		sched_held_pump(s);
		return;
	}
	if (d->state == SCHED_DEST_DOWN)
		return;
	while ((rc = TAILQ_FIRST(&d->queued)) != NULL && !sched_dest_full(s, d)) {
		if (!sched_pump_room(s)) {
			sched_dest_hold(s, d, false);
			return;
		}
		sched_job_start(s, sched_dest_take_queued(s, d));
	}
}

/* The first backlog in the ring (behind the fresh ones), or NULL. */
static struct sched_dest *
sched_held_backlog(struct sched *s)
{
	return s->held_fresh != NULL ? TAILQ_NEXT(s->held_fresh, hentry) : TAILQ_FIRST(&s->held);
}

/* The held destination whose turn it is, and whether it is fresh: while
 * both fresh and backlog destinations are held, the slots go to them in
 * turn (s->held_backlog_turn: a fresh one took the last), else to the
 * ring's front. */
static struct sched_dest *
sched_held_next(struct sched *s, bool *fresh)
{
	struct sched_dest *b;

	if (s->held_fresh == NULL) {
		*fresh = false;
		return TAILQ_FIRST(&s->held);
	}
	if (s->held_backlog_turn && (b = sched_held_backlog(s)) != NULL) {
		*fresh = false;
		return b;
	}
	*fresh = true;
	return TAILQ_FIRST(&s->held);
}

/*
 * While there is room in all, the held destinations start a job each in
 * turn (round-robin: a destination with a long line goes back to the end
 * of the ring, so it does not starve the others); a down one makes its
 * probe (sched_dest_rewake).  The fresh at the ring's front and the
 * backlogs behind them take the slots alternately while both are held
 * (sched_held_next): a fresh one with k fresh ahead of it waits for at
 * most k + 1 backlog jobs, and a stream of fresh mail for other destinations
 * leaves the backlogs half the slots, not none.  One that is full
 * by its own window or has nothing queued leaves the ring: the end of one
 * of its jobs pumps it again.  O(jobs started), never a walk of every
 * destination.
 */
void
sched_held_pump(struct sched *s)
{
	struct sched_dest *d;
	struct sched_rcpt *rc;
	unsigned before;
	bool fresh;

	while (!s->stopping && (d = sched_held_next(s, &fresh)) != NULL) {
		if (d->state == SCHED_DEST_DOWN) {
			/* its probe, due when it was held */
			if (sched_jobs_full(s) && !d->probe_out && d->nwaiting > 0)
				return;
			before = s->nactive;
			sched_dest_unhold(s, d);
			sched_dest_rewake(s, d);
			if (s->nactive > before)        /* the probe took a slot: a turn */
				s->held_backlog_turn = fresh && sched_held_backlog(s) != NULL;
			continue;
		}
		if (sched_dest_full(s, d) ||
		    (rc = TAILQ_FIRST(&d->queued)) == NULL) {
			sched_dest_unhold(s, d);
			continue;
		}
		if (!sched_pump_room(s))
			return;
		sched_dest_unhold(s, d);
		sched_job_start(s, sched_dest_take_queued(s, d));
		if (!d->held && !sched_dest_full(s, d) && !TAILQ_EMPTY(&d->queued)) {
			d->held = true;         /* to the end of the ring */
			TAILQ_INSERT_TAIL(&s->held, d, hentry);
		}
		s->held_backlog_turn = fresh && sched_held_backlog(s) != NULL;
	}
}

/* The job's recipients go to the end of d's queued line, in the job's
 * order (the pump makes a job of them again): the job is freed. */
static void
sched_job_queue(struct sched *s, struct sched_dest *d, struct sched_job *job)
{
	struct sched_msg *sm = job->sm;
	size_t k;

	for (k = 0; k < job->nrcpts; k++) {
		int i = sched_job_rcpt(job, k);

		if (sched_rcpt_job(&sm->rc[i]) != job)
			continue;
		sm->rc[i].job = NULL;
		sm->rc[i].flush_gen = 0;
		sched_rcpt_line(s, sm, (size_t)i, d, true);
	}
	sched_job_free(s, job);
}

/* The earliest end of backoff among the exchangers the job saw. */
static uint64_t
sched_job_probe_at(struct sched *s, struct sched_job *job, uint64_t now)
{
	uint64_t at = SCHED_NOWAKE, t;
	char key[HEALTH_ADDR_MAX];
	struct health_host *h;
	size_t ti, ai;

	for (ti = 0; job->at->mx != NULL && ti < job->at->ntargets; ti++) {
		const struct dns_target *tg = &job->at->mx->targets[ti];

		for (ai = 0; ai < tg->naddrs; ai++) {
			health_addr_key((const struct sockaddr *)&tg->addrs[ai].ss, key, sizeof(key));
			h = health_find(s->health, key);
			if (h != NULL && h->state == HEALTH_DOWN)
				t = h->down_until_ms;
			else            /* its probe is out elsewhere: look again after the least backoff */
				t = now + job->at->conf->router.host_backoff_min;
			if (t < at)
				at = t;
		}
	}
	if (at == SCHED_NOWAKE)
		at = now + job->at->conf->router.host_backoff_min;
	if (at < now + SCHED_PROBE_FLOOR)
		at = now + SCHED_PROBE_FLOOR;
	return at;
}

/* Every exchanger of the job's destination is down: its recipients and the
 * queued line's wait (at the end of the line, the job's first, then the
 * queued line's in its order, each deferred as the job's); the job is freed.
 * A flush's forced attempt that was held for room (d->next_force) has not
 * been made: the job that found d down started before it.  It becomes the
 * next probe, forced and due now, as `queue flush` promises an attempt that
 * ignores a down destination. */
static void
sched_dest_down(struct sched *s, struct sched_dest *d, struct sched_job *job, uint64_t now)
{
	struct sched_last *own = job->last;     /* kept past the job, for the queued line's */
	const struct sched_last *last = own != NULL ? own : &sched_last_none;
	struct sched_msg *sm;
	struct sched_rcpt *rc;
	struct buf why = BUF_INIT, kept = BUF_INIT;
	char down[512];
	bool was_down = d->state == SCHED_DEST_DOWN;
	bool forced = d->next_force;    /* read first: emptying the line clears it */

	job->last = NULL;

	if (!was_down)
		d->down_since = now;
	d->state = SCHED_DEST_DOWN;
	d->window = 1;
	d->probe_at = sched_job_probe_at(s, job, now);
	buf_printf(&why, "all exchangers of %s are down (last: %s%s%s)", d->name,
	    last->host, last->host[0] ? ": " : "", last->reply[0] ? last->reply : "no answer");
	sched_job_wait(s, job, last->host, last->ip, buf_cstr(&why), now);
	sched_dest_down_why(d, down, sizeof(down));
	while ((rc = TAILQ_FIRST(&d->queued)) != NULL) {
		size_t i = rc->idx;

		sm = sched_rcpt_msg(rc);
		sched_rcpt_unwait(s, sm, i, 0);
		queue_msg_drop_image(sm->m);    /* it may wait long: it will read its file */
		if (sm->m->rcpt[i].state != RCPT_PENDING)
			continue;
		if (rc->down_since == 0)
			rc->down_since = d->down_since != 0 ? d->down_since : now;
		/* as a job that never made an attempt (not counted) */
		sched_rcpt_outcome(s, sm, (int)i, SCHED_DEFERRED, NULL, NULL, "4.4.1",
		    sched_rcpt_down_why(&sm->m->rcpt[i], down, &kept), false, d->name, false, now);
		if (sm->m->rcpt[i].state == RCPT_PENDING && !sched_rcpt_busy(rc))
			sched_rcpt_line(s, sm, i, d, false);
	}
	if (forced && d->nwaiting > 0 && !d->probe_out) {
		d->probe_force = true;
		d->probe_at = now;
	}
	buf_free(&why);
	buf_free(&kept);
	free(own);
	if (!was_down)
		sched_log_dest("destination_down", d, now, LOG_NOTICE);
}

/* The destination answered: ramp up, and after an outage release its
 * waiting line into its queued line (no job: the pump makes them). */
static void
sched_dest_reached(struct sched *s, struct sched_dest *d, uint64_t now)
{
	struct sched_rcpt *rc;

	if (d->state == SCHED_DEST_DOWN) {
		d->state = SCHED_DEST_UP;
		d->window = SCHED_RAMP_START;
		d->probe_force = false;         /* no probe to come: a flush's is done */
		/* in the line's order (the pump groups them as the dispatch does) */
		while ((rc = TAILQ_FIRST(&d->waiting)) != NULL) {
			TAILQ_REMOVE(&d->waiting, rc, wentry);
			d->nwaiting--;
			s->nr_waiting--;
			rc->waiting = false;
			rc->queued = true;
			TAILQ_INSERT_TAIL(&d->queued, rc, wentry);
			d->nbacklog++;
			s->nr_backlog++;
			sched_rcpt_tally(s, sched_rcpt_msg(rc), rc->idx);
		}
		sched_log_dest("destination_up", d, now, LOG_NOTICE);
		d->down_since = 0;
		return;
	}
	d->state = SCHED_DEST_UP;
	d->window = sched_ramp_grow(d->window);
}

/*
 * A job's attempt is over (outcomes recorded).  news says what it taught us
 * about the destination (DOWN: its recipients wait).  The job is freed; then
 * the destination and the message move on.
 */
static void
sched_job_end(struct sched_job *job, enum sched_news news)
{
	struct sched *s = job->at->s;
	struct sched_msg *sm = job->sm;
	struct sched_dest *d = job->dest;
	uint64_t now = sched_now(s);

	TAILQ_REMOVE(&s->active, job, entry);
	s->nactive--;
	s->nr_active -= job->nrcpts;
	d->inflight--;
	/* One of the old route's attempts that sched_reroute() let out ahead
	 * of the new route's first job is over: the window closes behind it. */
	if (d->state == SCHED_DEST_NEW && d->window > 1 && news != SCHED_NEWS_REACHED &&
	    sched_attempt_rerouted(s, job))
		d->window--;
	if (job->probe) {
		d->probe_out = false;
		job->probe = false;
	}
	if (news == SCHED_NEWS_DOWN && !s->stopping && !sm->deleted)
		sched_dest_down(s, d, job, now);        /* reads its attempt's exchangers, frees it */
	else
		sched_job_free(s, job);
	if (news == SCHED_NEWS_REACHED) {
		bool was_down = d->state == SCHED_DEST_DOWN;

		sched_dest_reached(s, d, now);
		if (was_down)
			sched_shared_dest_up(s, d);     /* the other nodes release theirs */
	}
	sched_dest_pump(s, d);
	sched_dest_rewake(s, d);
	sched_dest_maybe_free(s, d);

	if (sm->deleted) {
		if (sm->njobs == 0)
			sched_msg_free(s, sm);
	} else if (!s->stopping)
		sched_msg_run(s, sm, now);

	if (s->stopping) {
		sched_shutdown_check(s);
		return;
	}
	sched_arm(s);
}

static void
sched_log_host(const struct health_host *h, const char *ip)
{
	struct log_line l;
	char buf[32];

	log_begin(&l, h->state == HEALTH_DOWN ? LOG_NOTICE : LOG_INFO,
	    h->state == HEALTH_DOWN ? "host_down" : "host_up");
	log_kv(&l, "host", h->name[0] ? h->name : "-");
	log_kv(&l, "ip", ip);
	log_kv(&l, "addr", h->addr);
	if (h->state == HEALTH_DOWN) {
		log_kvu(&l, "failures", h->failures);
		util_format_duration(h->backoff_ms, buf, sizeof(buf));
		log_kv(&l, "backoff", buf);
		util_rfc3339(h->down_until_ms, buf, sizeof(buf));
		log_kv(&l, "until", buf);
		log_kv(&l, "error", h->last_error);
	}
	log_end(&l);
}

void
sched_addr_ip(const struct dns_addr *a, char *out, size_t outlen)
{
	const struct sockaddr *sa = (const struct sockaddr *)&a->ss;

	if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)outlen);
	else if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)outlen);
	else
		snprintf(out, outlen, "?");
}

/* deliver's answer for one attempt. */
static void
sched_on_deliver(void *arg, struct deliver_req *req, const struct deliver_result *res)
{
	struct sched_job *job = arg;
	struct sched *s;
	struct queue_msg *m;
	const struct dns_target *tg;
	struct sched_last *last;
	struct health_host *h;
	enum health_state was;
	uint64_t now;
	struct log_line l;
	size_t k;

	if (job->magic != SCHED_MAGIC_JOB || job->state != SCHED_JOB_DELIVERING)
		fatalx("%s: result for a job not delivering", __func__);
	s = job->at->s;
	m = job->sm->m;
	now = sched_now(s);
	job->state = SCHED_JOB_RESOLVING;       /* between attempts */
	queue_image_unref(job->at->image);      /* deliver is done with req.body */
	job->at->image = NULL;
	req->body = NULL;
	tg = &job->at->mx->targets[job->at->ti];
	last = sched_job_last(job);
	snprintf(last->host, sizeof(last->host), "%s", tg->host);
	if (res->ip[0] != '\0')
		snprintf(last->ip, sizeof(last->ip), "%s", res->ip);
	else
		sched_addr_ip(&tg->addrs[job->at->ai], last->ip, sizeof(last->ip));
	snprintf(last->status, sizeof(last->status), "%s",
	    res->status_code[0] ? res->status_code : "4.4.1");
	snprintf(last->reply, sizeof(last->reply), "%s", res->reply);

	h = health_get(s->health, job->at->addr_key, tg->host);
	if (job->at->probing_host) {
		h->probing = false;
		job->at->probing_host = false;
	}

	if (job->sm->deleted || (s->stopping && res->status != DELIVER_DONE)) {
		/* Nobody wants this result any more: record nothing. */
		deliver_req_clear(req);
		sched_job_end(job, SCHED_NEWS_NONE);
		return;
	}

	sched_tls_attempt(s, job, h, tg->host, last->ip, res);
	was = h->state;
	if (res->status == DELIVER_HOST_FAIL) {
		bool down = health_marks_down(res->io_err, res->code);

		job->at->ntried++;
		if (down) {
			health_host_fail(h, now, job->at->conf->router.host_backoff_min,
			    job->at->conf->router.host_backoff_max, res->reply);
			sched_log_host(h, last->ip);
			sched_shared_host_down(s, h);
		} else
			job->at->soft_fail = true;
		log_begin(&l, LOG_INFO, "host_failed");
		log_kv(&l, "qid", m->qid);
		log_kv(&l, "host", last->host);
		log_kv(&l, "ip", last->ip);
		log_kv(&l, "status", last->status);
		log_kv(&l, "reply", last->reply);
		log_kv(&l, "down", down ? "yes" : "no");
		if (res->tls_result[0] != '\0')
			log_kv(&l, "tls_result", res->tls_result);
		log_end(&l);
		sched_tlsrpt_session(s, job, tg, res, last->ip);
		deliver_req_clear(req);
		job->at->ai++;
		if (s->stopping) {
			sched_job_end(job, SCHED_NEWS_NONE);
			return;
		}
		sched_job_next(job);
		return;
	}

	job->at->ntried++;
	sched_tlsrpt_session(s, job, tg, res, last->ip);
	health_host_ok(h, now);
	for (k = 0; k < job->nrcpts; k++)
		job->sm->rc[sched_job_rcpt(job, k)].down_since = 0;
	if (was == HEALTH_DOWN) {
		sched_log_host(h, last->ip);
		sched_shared_host_up(s, h);
	}

	switch (res->status) {
	case DELIVER_DONE:
		s->outcome_tls = res->tls[0] != '\0' ? res->tls : NULL;
		s->outcome_tls_version = res->tls_version[0] != '\0' ? res->tls_version : NULL;
		for (k = 0; k < job->nrcpts; k++) {
			const struct deliver_rcpt *dr = &job->at->dr[k];
			int i = sched_job_rcpt(job, k);

			if (m->rcpt[i].state != RCPT_PENDING)
				continue;
			sched_rcpt_outcome(s, job->sm, i, sched_code_outcome(dr->code), last->host,
			    last->ip, dr->status[0] ? dr->status : (dr->code / 100 == 2 ? "2.0.0" :
			    dr->code / 100 == 5 ? "5.0.0" : "4.0.0"),
			    dr->reply != NULL ? dr->reply : "", true, NULL, res->dsn, now);
		}
		s->outcome_tls = NULL;
		s->outcome_tls_version = NULL;
		break;
	case DELIVER_TEMP:
		sched_job_outcome_all(s, job, SCHED_DEFERRED, last->status, last->reply, true, now);
		break;
	case DELIVER_PERM:
		sched_job_outcome_all(s, job, SCHED_FAILED, last->status, last->reply, true, now);
		break;
	default:
		fatalx("%s: unknown deliver status %d", __func__, (int)res->status);
	}
	deliver_req_clear(req);
	sched_job_end(job, SCHED_NEWS_REACHED);
}

/* Every address was tried or skipped. */
static void
sched_job_exhausted(struct sched_job *job)
{
	struct sched *s = job->at->s;
	const struct sched_last *last = sched_job_seen(job);
	uint64_t now = sched_now(s);

	if (job->at->soft_fail) {
		/* Some host answered but would not do (TLS policy, greeting):
		 * the destination is up; these recipients retry on their own. */
		sched_job_outcome_all(s, job, SCHED_DEFERRED,
		    last->status[0] ? last->status : "4.4.1", last->reply,
		    sched_job_tried(job), now);
		sched_job_end(job, SCHED_NEWS_REACHED);
		return;
	}
	sched_job_end(job, SCHED_NEWS_DOWN);
}

/*
 * The job's domain goes another way since its attempt began (sched_reroute):
 * it tries none of the old route's exchangers left.  What it tried is
 * recorded as a deferral due at once (sched_rcpt_outcome); if it tried
 * none, nothing happened to record, as for a queued job.  Its recipients go
 * again at once, the new way (sched_job_end runs the message), and its
 * destination learns nothing from it (the hosts it tried keep their health).
 */
static void
sched_job_rerouted(struct sched_job *job)
{
	struct sched *s = job->at->s;
	const struct sched_last *last = sched_job_seen(job);
	uint64_t now = sched_now(s);
	size_t k;

	if (sched_job_tried(job) || job->at->soft_fail)
		sched_job_outcome_all(s, job, SCHED_DEFERRED, last->status[0] ? last->status : "4.4.1",
		    last->reply, sched_job_tried(job), now);
	else
		for (k = 0; k < job->nrcpts; k++)
			job->sm->rc[sched_job_rcpt(job, k)].retry_at = now;
	sched_job_end(job, SCHED_NEWS_NONE);
}

/* Try the next usable address of the job's exchangers, or give up. */
static void
sched_job_next(struct sched_job *job)
{
	struct sched *s = job->at->s;
	struct queue_msg *m = job->sm->m;
	struct sched_last *last;
	struct health_host *h;
	enum health_verdict v;
	uint64_t now = sched_now(s);
	size_t k;

	if (sched_attempt_rerouted(s, job)) {
		sched_job_rerouted(job);
		return;
	}
	for (; job->at->ti < job->at->ntargets; job->at->ti++, job->at->ai = 0) {
		const struct dns_target *tg = &job->at->mx->targets[job->at->ti];

		/* DANE, then MTA-STS (tlspolicy/): what TLS this exchanger needs,
		 * or not to use it */
		tlspolicy_clear(&job->at->tlspol);
		tlspolicy_for_target(job->route->r.tls, tg, &job->at->tlspol);
		tlspolicy_apply_sts(job->route->r.tls, job->at->has_sts ? &job->at->sts : NULL, tg->host,
		    &job->at->tlspol);
		if (job->at->tlspol.testing != NULL && job->at->ai == 0)
			log_event(LOG_NOTICE, "tls_policy_testing", "qid", m->qid, "host", tg->host,
			    "policy", job->at->tlspol.source, "result", job->at->tlspol.testing,
			    "error", job->at->tlspol.reason, NULL);
		if (job->at->tlspol.refuse && job->at->ai < tg->naddrs) {
			last = sched_job_last(job);
			snprintf(last->host, sizeof(last->host), "%s", tg->host);
			sched_addr_ip(&tg->addrs[0], last->ip, sizeof(last->ip));
			snprintf(last->status, sizeof(last->status), "%s", job->at->tlspol.status);
			snprintf(last->reply, sizeof(last->reply), "%s", job->at->tlspol.reason);
			job->at->soft_fail = true;
			sched_tls_refused(s, job, tg);
			log_event(LOG_NOTICE, "tls_policy_refused", "qid", m->qid, "host", tg->host,
			    "policy", job->at->tlspol.source, "status", job->at->tlspol.status,
			    "result", job->at->tlspol.result, "error", job->at->tlspol.reason, NULL);
			sched_tlsrpt_session(s, job, tg, NULL, NULL);
			continue;
		}

		for (; job->at->ai < tg->naddrs; job->at->ai++) {
			const struct dns_addr *a = &tg->addrs[job->at->ai];

			health_addr_key((const struct sockaddr *)&a->ss, job->at->addr_key,
			    sizeof(job->at->addr_key));
			h = health_get(s->health, job->at->addr_key, tg->host);
			v = health_host_check(h, now);
			if (v == HEALTH_SKIP && !job->force) {
				char until[32];

				last = sched_job_last(job);
				snprintf(last->host, sizeof(last->host), "%s", tg->host);
				sched_addr_ip(a, last->ip, sizeof(last->ip));
				snprintf(last->status, sizeof(last->status), "4.4.1");
				util_rfc3339(h->down_until_ms, until, sizeof(until));
				snprintf(last->reply, sizeof(last->reply),
				    "host down until %s: %s", until,
				    h->last_error[0] ? h->last_error : "probe in progress");
				continue;
			}
			if (v == HEALTH_PROBE) {
				h->probing = true;
				job->at->probing_host = true;
			}

			memset(&job->at->req, 0, sizeof(job->at->req));
			job->at->req.qid = m->qid;
			if (job->at->msg_path == NULL) {
				char path[PATH_MAX];

				if (queue_msg_path(s->q, m, path, sizeof(path)) == NULL)
					fatalx("%s: %s: no file name", __func__, m->qid);
				job->at->msg_path = xstrdup(path);
			}
			job->at->req.msg_path = job->at->msg_path;
			job->at->req.body_offset = m->body_offset;
			job->at->req.body_len = m->body_len;
			/* Its first attempts send the image kept since its publish. */
			queue_image_unref(job->at->image);
			job->at->image = queue_image_ref(m->image);
			job->at->req.body = job->at->image != NULL ? queue_image_body(job->at->image) : NULL;
			job->at->req.prefix = m->dkim;
			job->at->req.prefix_len = m->dkim != NULL ? strlen(m->dkim) : 0;
			job->at->req.sender = m->env.sender;
			job->at->req.envid = m->env.envid;
			job->at->req.ret = (int)m->env.ret;
			job->at->req.body_8bit = m->env.body_8bit;
			job->at->req.smtputf8 = m->env.smtputf8;
			free(job->at->dr);
			job->at->dr = xcalloc(job->nrcpts, sizeof(*job->at->dr));
			for (k = 0; k < job->nrcpts; k++) {
				const struct env_rcpt *er = &m->env.rcpts[sched_job_rcpt(job, k)];

				job->at->dr[k].addr = er->addr;
				job->at->dr[k].orcpt = er->orcpt;
				job->at->dr[k].notify = er->notify;
			}
			job->at->req.rcpts = job->at->dr;
			job->at->req.nrcpts = job->nrcpts;
			job->at->req.host = tg->host;
			memcpy(&job->at->req.addr, &a->ss, sizeof(a->ss));
			job->at->req.addrlen = a->len;
			job->at->req.tls = job->route->r.tls;
			job->at->req.policy = job->at->tlspol.policy;
			job->at->req.tlsa = job->at->tlspol.tlsa;
			job->at->req.ntlsa = job->at->tlspol.ntlsa;
			job->at->req.auth_user = job->route->r.auth_user;
			job->at->req.auth_password = job->route->r.auth_password;
			job->at->req.helo_name = job->at->conf->hostname;
			job->state = SCHED_JOB_DELIVERING;
			if (deliver_start(s->d, &job->at->req, sched_on_deliver, job) == 0)
				return;
			job->state = SCHED_JOB_RESOLVING;
			if (job->at->probing_host) {
				h->probing = false;
				job->at->probing_host = false;
			}
			job->at->soft_fail = true;
			last = sched_job_last(job);
			snprintf(last->host, sizeof(last->host), "%s", tg->host);
			sched_addr_ip(a, last->ip, sizeof(last->ip));
			snprintf(last->status, sizeof(last->status), "4.3.0");
			snprintf(last->reply, sizeof(last->reply), "could not start a delivery attempt");
		}
	}
	sched_job_exhausted(job);
}

/* The domain's MTA-STS policy is known (a->policy NULL: none): walk the exchangers. */
static void
sched_job_sts_known(struct sched_job *job, const struct mtasts_answer *a)
{
	mtasts_policy_release(&job->at->sts);
	job->at->has_sts = a->policy != NULL;
	snprintf(job->at->sts_failure, sizeof(job->at->sts_failure), "%s",
	    a->policy == NULL && a->failure != NULL ? a->failure : "");
	if (a->policy != NULL)
		mtasts_policy_copy(&job->at->sts, a->policy);
	sched_job_next(job);
}

static void
sched_on_sts(void *arg, const struct mtasts_answer *a)
{
	struct sched_job *job = arg;

	if (job->magic != SCHED_MAGIC_JOB || job->state != SCHED_JOB_RESOLVING || job->at->stsq == NULL)
		fatalx("%s: answer for a job not waiting for it", __func__);
	job->at->stsq = NULL;
	if (job->sm->deleted) {
		sched_job_end(job, SCHED_NEWS_NONE);
		return;
	}
	sched_job_sts_known(job, a);
}

/*
 * MTA-STS (mtasts/) for DNS delivery under router.mta_sts, unless the
 * route says tls "none" or the domain is an address literal: the policy
 * from the cache, or the job waits (still resolving) for its check.
 */
static void
sched_job_sts(struct sched_job *job)
{
	struct sched *s = job->at->s;
	struct mtasts_answer a;

	if (s->mtasts == NULL || !job->at->conf->router.mta_sts || job->route->r.nhosts > 0 ||
	    job->route->r.tls == CONF_TLS_NONE || job->route->r.dest[0] == '[') {
		memset(&a, 0, sizeof(a));
		sched_job_sts_known(job, &a);
		return;
	}
	if (mtasts_get(s->mtasts, job->route->r.dest, &a, sched_on_sts, job, &job->at->stsq) == 0)
		sched_job_sts_known(job, &a);
}

/* The resolver's answer for a job. */
static void
sched_on_mx(void *arg, struct dns_result *res)
{
	struct sched_job *job = arg;
	struct sched *s;
	uint64_t now;
	size_t n;

	if (job->magic != SCHED_MAGIC_JOB || job->state != SCHED_JOB_RESOLVING)
		fatalx("%s: answer for a job not resolving", __func__);
	s = job->at->s;
	now = sched_now(s);
	job->at->mxq = NULL;
	if (job->sm->deleted) {
		dns_result_free(res);
		sched_job_end(job, SCHED_NEWS_NONE);
		return;
	}
	/* An answer about a way the domain no longer goes (a route change
	 * meanwhile) decides nothing, not even a "no such domain"; nor does
	 * the old domain's MTA-STS policy get fetched for it */
	if (sched_attempt_rerouted(s, job)) {
		dns_result_free(res);
		sched_job_rerouted(job);
		return;
	}
	if (res->err != 0) {
		struct sched_last *last = sched_job_last(job);

		last->host[0] = last->ip[0] = '\0';
		snprintf(last->status, sizeof(last->status), "%s",
		    res->status[0] ? res->status : "4.4.3");
		snprintf(last->reply, sizeof(last->reply), "%s", res->reason);
		sched_job_outcome_all(s, job,
		    res->err == RELAY_ETEMP ? SCHED_DEFERRED : SCHED_FAILED,
		    last->status, last->reply, true, now);
		dns_result_free(res);
		sched_job_end(job, SCHED_NEWS_NONE);
		return;
	}
	job->at->mx = res;
	if (job->route->r.nhosts == 0)
		dane_seen_record(s->dane, job->route->r.dest, res, job->at->conf->router.dnssec, now);
	n = res->ntargets;
	if (job->route->r.nhosts == 0 && job->route->r.mx_policy == CONF_MX_PRIMARY_ONLY) {
		for (n = 1; n < res->ntargets && res->targets[n].pref == res->targets[0].pref; n++)
			;
	}
	job->at->ntargets = n;
	job->at->ti = job->at->ai = 0;
	sched_job_sts(job);
}

static void
sched_job_start(struct sched *s, struct sched_job *job)
{
	struct sched_dest *d = job->dest;

	job->state = SCHED_JOB_RESOLVING;
	TAILQ_INSERT_TAIL(&s->active, job, entry);
	s->nactive++;
	s->nr_active += job->nrcpts;
	sched_job_tally(s, job);
	d->inflight++;
	sched_attempt_free(job);
	job->at = xcalloc(1, sizeof(*job->at));
	job->at->s = s;
	job->at->conf = conf_ref(s->conf);     /* a reload since the job was made applies */
	job->at->reroute_gen = s->reroute_gen;  /* its route is current (sched_reroute) */
	if (job->route->r.nhosts > 0)
		job->at->mxq = dns_lookup_hosts(s->mx, job->route->r.hosts, job->route->r.nhosts, sched_on_mx, job);
	else
		job->at->mxq = dns_lookup(s->mx, job->route->r.dest, job->at->conf->router.smtp_port,
		    sched_on_mx, job);
}

/* An admitted job with no room in all: its recipients to d's queued line
 * (the job is freed), d to the ring (fresh when it had no job and no line);
 * a flush's forced job makes d's next job forced. */
static void
sched_job_hold(struct sched *s, struct sched_dest *d, struct sched_job *job)
{
	bool fresh = d->inflight == 0 && TAILQ_EMPTY(&d->queued);

	if (job->force)
		d->next_force = true;
	sched_job_queue(s, d, job);
	sched_dest_hold(s, d, fresh);
}

/* A new job for its destination: start it, queue it, or let its recipients
 * wait (the job is freed then). */
void
sched_dest_admit(struct sched *s, struct sched_dest *d, struct sched_job *job, uint64_t flush_gen,
    uint64_t now)
{
	job->dest = d;
	if (!job->force && flush_gen != 0 && flush_gen == s->flush_gen &&
	    d->forced_gen != s->flush_gen) {
		/* the destination's one attempt for this flush */
		job->force = true;
		d->forced_gen = s->flush_gen;
	}
	if (job->force && sched_jobs_full(s)) {
		/* a flush's attempt, with no room in all: its turn among the held */
		if (d->state == SCHED_DEST_DOWN) {
			/* the probe goes for it; one out is its attempt (as for
			 * flush --all, sched_flush): forcing the next one
			 * instead would outlast this flush (one that succeeds
			 * left it to the next outage's first probe) */
			if (!d->probe_out) {
				d->probe_force = true;
				d->probe_at = now;
			}
			sched_job_wait(s, job, NULL, NULL, NULL, now);  /* frees job */
			sched_dest_rewake(s, d);
		} else
			sched_job_hold(s, d, job);
		return;
	}
	if (!job->force) {
		if (d->state == SCHED_DEST_DOWN) {
			if (!d->probe_out && now >= d->probe_at) {
				job->probe = true;
				job->force = d->probe_force;
				d->probe_force = false;
				d->probe_out = true;
				sched_job_start(s, job);
				return;
			}
			/* tried nothing: sched_dest_down_why */
			sched_job_wait(s, job, NULL, NULL, NULL, now);  /* frees job */
			sched_dest_rewake(s, d);
			return;
		}
		if (sched_dest_full(s, d)) {
			sched_job_queue(s, d, job);     /* frees job */
			return;
		}
		if (sched_jobs_full(s) || d->held) {
			sched_job_hold(s, d, job);      /* no room in all */
			return;
		}
	}
	sched_job_start(s, job);
}

/* The probe of a down destination is due (or its state changed). */
void
sched_dest_rewake(struct sched *s, struct sched_dest *d)
{
	struct sched_job *job;
	uint64_t now;

	if (d->state != SCHED_DEST_DOWN || d->probe_out || d->nwaiting == 0 || s->stopping) {
		sched_heap_set(s, &d->wake, sched_dest_forget_at(s, d));
		return;
	}
	now = sched_now(s);
	if (now < d->probe_at) {
		sched_heap_set(s, &d->wake, d->probe_at);
		return;
	}
	sched_heap_set(s, &d->wake, SCHED_NOWAKE);
	if (sched_jobs_full(s)) {
		sched_dest_hold(s, d, true);    /* no room in all: the ring makes the probe */
		return;
	}
	/* the first in line, with its message's others (a failed probe's
	 * recipients went to the end of the line) */
	job = sched_dest_take(s, d, TAILQ_FIRST(&d->waiting));
	job->probe = true;
	job->force = d->probe_force;
	d->probe_force = false;
	d->probe_out = true;
	sched_job_start(s, job);
}

bool
sched_dest_release(struct sched *s, const char *name)
{
	struct htab_node *n = htab_find(&s->dhash, name);
	struct sched_dest *d;

	if (n == NULL)
		return false;
	d = HTAB_ENTRY(n, struct sched_dest, node);
	if (d->state != SCHED_DEST_DOWN || s->stopping)
		return false;
	sched_dest_reached(s, d, sched_now(s));
	sched_dest_pump(s, d);
	sched_dest_rewake(s, d);
	sched_arm(s);
	return true;
}

void
sched_foreach_dest(struct sched *s, void (*cb)(void *arg, const struct sched_dest_view *d),
    void *arg)
{
	static const char *const names[] = { "new", "up", "down" };
	struct sched_dest_view v;
	struct sched_dest *d;

	TAILQ_FOREACH(d, &s->dests, entry) {
		v.name = d->name;
		v.state = names[d->state];
		v.window = d->window;
		v.inflight = d->inflight;
		v.queued = d->nbacklog;
		v.waiting = d->nwaiting;
		v.down_since_ms = d->down_since;
		v.probe_at_ms = d->probe_at;
		cb(arg, &v);
	}
}
