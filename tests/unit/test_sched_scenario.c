/*
 * test_sched_scenario.c - the scheduler's behaviour in time (router/
 * SCHEDULING.md), from tables: outage -> probe -> ramp -> release, expiry
 * and the delay warning while the destination is down, hold / release,
 * flush.  Each row of `scenarios` is one behaviour of SCHEDULING.md: a
 * sequence of steps (set the clock to T, say which exchangers answer, act)
 * and what must be seen after each step.
 *
 * Real parts where they run: a real queue in a temporary directory
 * (fixture.h), the real resolver (the route's hosts are literals: no DNS),
 * the real deliver module against real SMTP sinks on loopback (mxsink.h:
 * 127.0.0.2 and .3 are the two exchangers of the route for a.test, 127.0.0.4
 * takes every other domain: the reports to the sender).  Only the wall clock
 * and the randomness are injected (sched_set_clock, sched_set_random): time
 * moves when a step says so, and the jitter is 0.
 *
 * An exchanger that is "down" answers every connection with a 421 greeting
 * (the scheduler marks it down: SCHEDULING.md, Host health), so the sink
 * still counts the attempt.  After each step the loop runs until the
 * scheduler has nothing due at the clock's time and no attempt in flight:
 * a "nothing was attempted" row is checked only once the scheduler has
 * looked at everything that was due.
 *
 * Observations are of behaviour (attempts per exchanger, deliveries,
 * reports queued, the destination's state), not of the text of records.
 */
#include "router/router_sched_int.h"
#include "router/router_sched.h"
#include "dns/dns.h"
#include "deliver/deliver.h"
#include "common/util.h"
#include "check.h"
#include "fixture.h"
#include "mxsink.h"

#define S 1000ULL
#define M (60 * S)
#define H (60 * M)

#define MAX_STEPS 12
#define MAX_MSGS  320     /* test_release_many_dests, deflt: SCHED_JOBS_MIN + 44 */

enum act {
	TICK,                   /* nothing: only the clock moves */
	SUBMIT,                 /* n messages, one recipient at a.test each */
	HOLD,                   /* hold message n (0 = the first submitted) */
	RELEASE,                /* release message n */
	FLUSH,                  /* sched_flush(): every message */
	FLUSH_MSG,              /* sched_flush(): message n by queue id */
	DELETE,                 /* sched_delete(): message n, as relayctl delete */
};

/* What must hold after a step; counts are totals since the scenario began. */
struct want {
	int a, b;               /* attempts each exchanger saw (421 greetings + MAIL) */
	int delivered;          /* messages the exchangers accepted */
	const char *dest;       /* the destination's state: "new", "up", "down", "-" = idle (gone) */
	int waiting;            /* its recipients waiting for it to come back */
	int pending;            /* messages still queued (reports apart) */
	int reports;            /* reports queued to the sender (failure, delay, expiry) */
	int expired;            /* recipients failed for age */
	uint64_t down_since;    /* its outage began at (clock); 0 = not checked */
};

struct step {
	uint64_t at;            /* the clock, from the scenario's start */
	const char *up;         /* the exchangers that answer: "ab", "a", "b", "";
	                           upper case: answers, but defers every recipient (451) */
	enum act act;
	int n;
	struct want want;
};

struct scenario {
	const char *name;       /* the behaviour (SCHEDULING.md) */
	uint64_t backoff_min, backoff_max;
	uint64_t max_queue_age, delay_warning;
	struct step steps[MAX_STEPS];
};

/*
 * Every row: the route for a.test has two exchangers, a (127.0.0.2) then b
 * (127.0.0.3); everything else goes to the reports sink.  Columns:
 *   { clock, answering, action, n,
 *     { attempts at a, at b, delivered, destination, waiting, pending, reports, expired,
 *       outage began at (optional: 0 = not checked) } }
 * Knobs per row: host_backoff min and max, max_queue_age, delay_warning.
 */
static const struct scenario scenarios[] = {
	{
		"a burst to a dead destination costs one connection per exchanger; ONE probe "
		"when the backoff ends (none before), doubling; the first probe through "
		"releases the whole backlog at once",
		10 * M, 1 * H, 5 * 24 * H, 0,
		{
			{ 0, "", SUBMIT, 5, { 1, 1, 0, "down", 5, 5, 0, 0, 0 } },
			{ 9 * M, "", TICK, 0, { 1, 1, 0, "down", 5, 5, 0, 0, 0 } },
			{ 10 * M, "", TICK, 0, { 2, 2, 0, "down", 5, 5, 0, 0, 0 } },
			{ 29 * M, "", TICK, 0, { 2, 2, 0, "down", 5, 5, 0, 0, 0 } },
			{ 30 * M, "a", TICK, 0, { 7, 2, 5, "-", 0, 0, 0, 0, 0 } },
		},
	},
	{
		"while the destination is down, a message submitted later waits with the "
		"others, without an attempt of its own",
		10 * M, 1 * H, 5 * 24 * H, 0,
		{
			{ 0, "", SUBMIT, 1, { 1, 1, 0, "down", 1, 1, 0, 0, 0 } },
			{ 1 * M, "ab", SUBMIT, 2, { 1, 1, 0, "down", 3, 3, 0, 0, 0 } },
			{ 10 * M, "ab", TICK, 0, { 4, 1, 3, "-", 0, 0, 0, 0, 0 } },
		},
	},
	{
		"the probe tries the exchangers in order; when only the second answers, "
		"the mail goes there",
		10 * M, 1 * H, 5 * 24 * H, 0,
		{
			{ 0, "", SUBMIT, 2, { 1, 1, 0, "down", 2, 2, 0, 0, 0 } },
			{ 10 * M, "b", TICK, 0, { 2, 3, 2, "-", 0, 0, 0, 0, 0 } },
		},
	},
	{
		"a server that answers but defers (4xx) keeps its destination up: the "
		"recipient retries on its own timer (retry_intervals: 5m, then 10m), and "
		"other mail to the destination goes at once",
		10 * M, 1 * H, 5 * 24 * H, 0,
		{
			{ 0, "A", SUBMIT, 1, { 1, 0, 0, "-", 0, 1, 0, 0, 0 } },
			{ 4 * M, "A", TICK, 0, { 1, 0, 0, "-", 0, 1, 0, 0, 0 } },
			{ 5 * M, "A", TICK, 0, { 2, 0, 0, "-", 0, 1, 0, 0, 0 } },
			{ 6 * M, "a", SUBMIT, 1, { 3, 0, 1, "-", 0, 1, 0, 0, 0 } },
			{ 14 * M, "a", TICK, 0, { 3, 0, 1, "-", 0, 1, 0, 0, 0 } },
			{ 15 * M, "a", TICK, 0, { 4, 0, 2, "-", 0, 0, 0, 0, 0 } },
		},
	},
	{
		"max_queue_age after arrival, the recipients waiting on a down destination "
		"fail (expired) and each sender gets one report; no attempt is made for it",
		1 * H, 4 * H, 30 * M, 0,
		{
			{ 0, "", SUBMIT, 2, { 1, 1, 0, "down", 2, 2, 0, 0, 0 } },
			{ 29 * M, "", TICK, 0, { 1, 1, 0, "down", 2, 2, 0, 0, 0 } },
			{ 30 * M, "", TICK, 0, { 1, 1, 0, "down", 0, 0, 2, 2, 0 } },
		},
	},
	{
		"delay_warning after arrival, ONE delayed report per message, which keeps "
		"waiting and is delivered when the destination is back",
		1 * H, 4 * H, 24 * H, 20 * M,
		{
			{ 0, "", SUBMIT, 1, { 1, 1, 0, "down", 1, 1, 0, 0, 0 } },
			{ 19 * M, "", TICK, 0, { 1, 1, 0, "down", 1, 1, 0, 0, 0 } },
			{ 20 * M, "", TICK, 0, { 1, 1, 0, "down", 1, 1, 1, 0, 0 } },
			{ 50 * M, "", TICK, 0, { 1, 1, 0, "down", 1, 1, 1, 0, 0 } },
			{ 1 * H, "a", TICK, 0, { 2, 1, 1, "-", 0, 0, 1, 0, 0 } },
		},
	},
	{
		"a held message is never attempted, even when its destination comes back; "
		"released, it is attempted at once",
		10 * M, 1 * H, 24 * H, 0,
		{
			{ 0, "", SUBMIT, 2, { 1, 1, 0, "down", 2, 2, 0, 0, 0 } },
			{ 1 * M, "", HOLD, 0, { 1, 1, 0, "down", 1, 2, 0, 0, 0 } },
			{ 10 * M, "a", TICK, 0, { 2, 1, 1, "-", 0, 1, 0, 0, 0 } },
			{ 3 * H, "a", TICK, 0, { 2, 1, 1, "-", 0, 1, 0, 0, 0 } },
			{ 3 * H, "a", RELEASE, 0, { 3, 1, 2, "-", 0, 0, 0, 0, 0 } },
		},
	},
	{
		"a held message is never expired or warned about",
		10 * M, 1 * H, 1 * H, 20 * M,
		{
			{ 0, "", SUBMIT, 1, { 1, 1, 0, "down", 1, 1, 0, 0, 0 } },
			{ 1 * M, "", HOLD, 0, { 1, 1, 0, "down", 0, 1, 0, 0, 0 } },
			{ 2 * H, "ab", TICK, 0, { 1, 1, 0, "down", 0, 1, 0, 0, 0 } },
		},
	},
	{
		"a destination stays down until it is seen up, also when nothing waits on "
		"it in between (the mail expired): a message submitted later waits for the "
		"probe without an attempt of its own, and the outage still began when the "
		"first message found it down",
		1 * H, 4 * H, 30 * M, 0,
		{
			{ 1 * M, "", SUBMIT, 1, { 1, 1, 0, "down", 1, 1, 0, 0, 1 * M } },
			{ 31 * M, "", TICK, 0, { 1, 1, 0, "down", 0, 0, 1, 1, 1 * M } },
			{ 40 * M, "", SUBMIT, 1, { 1, 1, 0, "down", 1, 1, 1, 1, 1 * M } },
			{ 1 * H + 1 * M, "a", TICK, 0, { 2, 1, 1, "-", 0, 0, 1, 1, 0 } },
		},
	},
	{
		"a down destination nothing has waited on for a day (the health table's "
		"horizon) is forgotten by the hourly sweep: dead domains do not pile up",
		1 * H, 4 * H, 30 * M, 0,
		{
			{ 1 * M, "", SUBMIT, 1, { 1, 1, 0, "down", 1, 1, 0, 0, 1 * M } },
			{ 31 * M, "", TICK, 0, { 1, 1, 0, "down", 0, 0, 1, 1, 1 * M } },
			{ 24 * H, "", TICK, 0, { 1, 1, 0, "down", 0, 0, 1, 1, 1 * M } },
			{ 26 * H, "", TICK, 0, { 1, 1, 0, "-", 0, 0, 1, 1, 0 } },
		},
	},
	{
		"flush of every message: the down destination gets ONE attempt that ignores "
		"host backoff; when it gets through, the waiting mail follows",
		1 * H, 4 * H, 24 * H, 0,
		{
			{ 0, "", SUBMIT, 3, { 1, 1, 0, "down", 3, 3, 0, 0, 0 } },
			{ 5 * M, "", FLUSH, 0, { 2, 2, 0, "down", 3, 3, 0, 0, 0 } },
			{ 10 * M, "a", TICK, 0, { 2, 2, 0, "down", 3, 3, 0, 0, 0 } },
			{ 10 * M, "a", FLUSH, 0, { 5, 2, 3, "-", 0, 0, 0, 0, 0 } },
		},
	},
	{
		"flush of one message by queue id: its job starts at once, ignoring host "
		"backoff and the destination's state; getting through brings the "
		"destination up, and the mail waiting on it follows",
		1 * H, 4 * H, 24 * H, 0,
		{
			{ 0, "", SUBMIT, 2, { 1, 1, 0, "down", 2, 2, 0, 0, 0 } },
			{ 5 * M, "a", FLUSH_MSG, 1, { 3, 1, 2, "-", 0, 0, 0, 0, 0 } },
		},
	},
	{
		"a message the administrator deletes after an attempt leaves the queue "
		"and nothing of it stays behind (its TLS notes too: the sanitizer "
		"build checks)",
		10 * M, 1 * H, 5 * 24 * H, 0,
		{
			{ 0, "A", SUBMIT, 1, { 1, 0, 0, "-", 0, 1, 0, 0, 0 } },
			{ 1 * M, "A", DELETE, 0, { 1, 0, 0, "-", 0, 0, 0, 0, 0 } },
			{ 6 * M, "A", TICK, 0, { 1, 0, 0, "-", 0, 0, 0, 0, 0 } },
		},
	},
};

/* ------------------------------------------------------------------ */
/* The fixture: the sinks (for the whole program) and, per scenario, a
 * loop, a queue, a resolver, deliver and the scheduler. */

static struct mxsink sink_a, sink_b, sink_r;

struct fx {
	uv_loop_t loop;
	uv_timer_t guard;
	struct conf *conf;
	struct relay_stats stats;
	struct queue *q;
	struct dns_resolver *dns;
	struct deliver *d;
	struct sched *s;
	uint64_t base, clock;           /* the injected wall clock */
	int nsubmitted, ncommitted;
	int nnew;                       /* messages the queue handed to the scheduler */
	int want_reports;               /* the step expects this many reports queued */
	char qids[MAX_MSGS][QID_MAX];
	int shut;
};

static uint64_t
fx_now(void *arg)
{
	return ((struct fx *)arg)->clock;
}

static uint32_t
fx_rnd(void *arg)
{
	return 0;                       /* no jitter: times in the table are exact */
}

/* The attempts a sink saw: connections it greeted with 421, and MAIL commands. */
static const char sink_attempts[] =
    "sum(1 for s in sink.sessions if s.replies and s.replies[0].startswith('421')) + "
    "sum(1 for _, c in sink.commands if c.upper().startswith('MAIL'))";

static void
sink_set_up(struct mxsink *s, char name, const char *up)
{
	if (strchr(up, name) != NULL)
		mxsink_exec(s, "sink.reset_script()");
	else if (strchr(up, name - 'a' + 'A') != NULL)
		mxsink_exec(s, "sink.reset_script(); sink.script(rcpt='451 4.3.0 not now')");
	else
		mxsink_exec(s, "sink.script(greeting='421 4.3.2 down for the test'); "
		    "sink.drop_connections()");
}

/* Sinks a and b empty and up as up says (sink_set_up). */
static void
sinks_reset(const char *up)
{
	mxsink_exec(&sink_a, "sink.reset()");
	mxsink_exec(&sink_b, "sink.reset()");
	sink_set_up(&sink_a, 'a', up);
	sink_set_up(&sink_b, 'b', up);
}

static void
conf_route(struct conf *c, const char *domain, const char *hosts)
{
	struct conf_route *r;
	struct buf err = BUF_INIT;

	c->router.routes = xrealloc(c->router.routes, (c->router.nroutes + 1) * sizeof(*r));
	r = &c->router.routes[c->router.nroutes++];
	memset(r, 0, sizeof(*r));
	r->domain = xstrdup(domain);
	if (route_parse_hosts(hosts, 25, &r->hosts, &r->nhosts, &err) != 0)
		fatalx("%s: %s", __func__, buf_cstr(&err));
	buf_free(&err);
}

/* The queue hands a committed message (ours, or a report) to the scheduler. */
static void
fx_new(void *arg, struct queue_msg *m)
{
	struct fx *fx = arg;

	fx->nnew++;
	sched_queue_new(fx->s, m);
}

static int fx_many_dests;       /* routes d0.test ... to a_hosts as well (fx_conf) */

/* The scenario's configuration: a.test routed to a_hosts, the rest to the
 * reports sink. */
static struct conf *
fx_conf(const struct scenario *sc, const char *dir, const char *a_hosts)
{
	struct conf *c = conf_new_defaults();
	struct buf hosts = BUF_INIT;

	free(c->hostname);
	c->hostname = xstrdup("relay.test");
	free(c->queue_dir);
	c->queue_dir = xstrdup(dir);
	c->router.host_backoff_min = sc->backoff_min;
	c->router.host_backoff_max = sc->backoff_max;
	c->router.max_queue_age = sc->max_queue_age;
	c->router.delay_warning = sc->delay_warning;
	c->deliver.tls = CONF_TLS_NONE;
	conf_route(c, "a.test", a_hosts);
	for (int k = 0; k < fx_many_dests; k++) {      /* d0.test ...: as many destinations */
		char dom[32];

		snprintf(dom, sizeof(dom), "d%d.test", k);
		conf_route(c, dom, a_hosts);
	}
	buf_printf(&hosts, "127.0.0.4:%d", sink_r.port);
	conf_route(c, "*", buf_cstr(&hosts));
	buf_free(&hosts);
	return c;
}

static void
fx_init(struct fx *fx, const struct scenario *sc, int no)
{
	struct sched_deps deps;
	struct buf err = BUF_INIT, hosts = BUF_INIT;
	char dir[128];

	memset(fx, 0, sizeof(*fx));
	uv_loop_init(&fx->loop);
	uv_timer_init(&fx->loop, &fx->guard);
	snprintf(dir, sizeof(dir), "%s/q%d", tdir, no);
	buf_printf(&hosts, "127.0.0.2:%d,127.0.0.3:%d", sink_a.port, sink_b.port);
	fx->conf = fx_conf(sc, dir, buf_cstr(&hosts));
	buf_free(&hosts);

	fx->base = util_now_ms();
	fx->clock = fx->base;
	fx->q = open_queue(&fx->loop, dir);
	if ((fx->dns = dns_new(&fx->loop, fx->conf, &err)) == NULL)
		fatalx("dns_new: %s", buf_cstr(&err));
	fx->d = deliver_new(&fx->loop, fx->conf);
	memset(&deps, 0, sizeof(deps));
	deps.loop = &fx->loop;
	deps.conf = fx->conf;
	deps.stats = &fx->stats;
	deps.queue = fx->q;
	deps.mx = fx->dns;
	deps.deliver = fx->d;
	if (sched_new(&deps, &fx->s, &err) != 0)
		fatalx("sched_new: %s", buf_cstr(&err));
	sched_set_clock(fx->s, fx_now, fx);
	sched_set_random(fx->s, fx_rnd, fx);
	queue_set_new_cb(fx->q, fx_new, fx);
	CHECK_INT(sched_load(fx->s), 0);
	buf_free(&err);
}

static void
fx_done_cb(void *arg)
{
	(*(int *)arg)++;
}

static void
fx_guard_cb(uv_timer_t *t)
{
}

/* Run the loop until pred(fx); false after 20 s (a broken test, not a timing check). */
static bool
fx_run(struct fx *fx, bool (*pred)(struct fx *))
{
	uint64_t deadline = util_mono_ms() + 20000;
	bool ok = true;

	uv_timer_start(&fx->guard, fx_guard_cb, 20, 20);
	while (!pred(fx)) {
		if (util_mono_ms() > deadline) {
			ok = false;
			break;
		}
		uv_run(&fx->loop, UV_RUN_ONCE);
	}
	uv_timer_stop(&fx->guard);
	return ok;
}

static bool
pred_shut(struct fx *fx)
{
	return fx->shut == 2;
}

static bool
pred_dns_closed(struct fx *fx)
{
	return fx->shut == 3;
}

/* The end of a test whose scheduler's shutdown has begun (sched_shutdown). */
static void
fx_fini_shut(struct fx *fx)
{
	int closed = 0;

	deliver_shutdown(fx->d, fx_done_cb, &fx->shut);
	CHECK_MSG(fx_run(fx, pred_shut), "shutdown did not complete");
	dns_close(fx->dns, fx_done_cb, &fx->shut);
	CHECK_MSG(fx_run(fx, pred_dns_closed), "the resolver did not close");
	sched_free(fx->s);
	deliver_free(fx->d);
	queue_close(fx->q, closed_cb, &closed);
	uv_close((uv_handle_t *)&fx->guard, NULL);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	CHECK_INT(closed, 1);
	CHECK_INT(uv_loop_close(&fx->loop), 0);
	conf_unref(fx->conf);
}

static void
fx_fini(struct fx *fx)
{
	sched_shutdown(fx->s, fx_done_cb, &fx->shut);
	fx_fini_shut(fx);
}

/* ------------------------------------------------------------------ */
/* Acting and observing. */

struct submit_res {
	struct fx *fx;
	int i;
};

static void
fx_committed(void *arg, int err, const char *qid)
{
	struct submit_res *r = arg;

	CHECK_INT(err, 0);
	snprintf(r->fx->qids[r->i], QID_MAX, "%s", qid != NULL ? qid : "");
	r->fx->ncommitted++;
	free(r);
}

/* One message to the n recipients rcpt (their fields as the caller set them). */
static void
fx_submit_rcpts(struct fx *fx, struct env_rcpt *rcpt, size_t n)
{
	static const char body[] = "Subject: scheduled\r\n\r\nhello\r\n";
	struct envelope env;
	struct submit_res *r = xcalloc(1, sizeof(*r));
	struct queue_txn *t = NULL;

	if (fx->nsubmitted >= MAX_MSGS) {       /* fx_committed indexes qids[] by it */
		CHECK_MSG(0, "more than %d messages submitted", MAX_MSGS);
		free(r);
		return;
	}
	memset(&env, 0, sizeof(env));
	env.sender = "alice@sender.test";
	env.rcpts = rcpt;
	env.nrcpts = n;
	env.ret = ENV_RET_NONE;
	env.arrival_ms = fx->clock;
	r->fx = fx;
	r->i = fx->nsubmitted++;
	CHECK_INT(queue_txn_begin(fx->q, &env, &t), 0);
	if (t == NULL)
		exit(2);
	CHECK_INT(queue_txn_write(t, body, sizeof(body) - 1), 0);
	queue_txn_commit(t, fx_committed, r);
}

/* n messages, one recipient at domain each. */
static void
fx_submit_to(struct fx *fx, int n, const char *domain)
{
	struct env_rcpt rcpt;
	char addr[64];

	for (int k = 0; k < n && fx->nsubmitted < MAX_MSGS; k++) {
		snprintf(addr, sizeof(addr), "rcpt%d@%s", fx->nsubmitted, domain);
		memset(&rcpt, 0, sizeof(rcpt));
		rcpt.addr = addr;
		rcpt.notify = ENV_NOTIFY_FAILURE | ENV_NOTIFY_DELAY;
		fx_submit_rcpts(fx, &rcpt, 1);
	}
}

static void
fx_submit(struct fx *fx, int n)
{
	fx_submit_to(fx, n, "a.test");
}

struct count {
	int pending;
};

static void
count_msg(void *arg, const struct queue_msg *m)
{
	struct count *c = arg;

	if (m->env.sender[0] != '\0')       /* not a report */
		c->pending++;
}

static int
fx_pending(struct fx *fx)
{
	struct count c = { 0 };

	sched_foreach(fx->s, count_msg, &c);
	return c.pending;
}

struct dest_seen {
	const char *name;
	char state[8];
	size_t waiting;
	uint64_t down_since;
};

static void
dest_cb(void *arg, const struct sched_dest_view *v)
{
	struct dest_seen *d = arg;

	if (strcmp(v->name, d->name) == 0) {
		snprintf(d->state, sizeof(d->state), "%s", v->state);
		d->waiting = v->waiting;
		d->down_since = v->down_since_ms;
	}
}

/* The scheduler's destination called name, or NULL. */
static struct sched_dest *
fx_dest(struct fx *fx, const char *name)
{
	struct htab_node *n = htab_find(&fx->s->dhash, name);

	return n != NULL ? HTAB_ENTRY(n, struct sched_dest, node) : NULL;
}

/*
 * Settled: every submission and report reached the scheduler, no attempt is in
 * flight, and nothing in the wake-up heap is due at the clock's time.
 */
static bool
pred_settled(struct fx *fx)
{
	struct sched *s = fx->s;

	if (fx->ncommitted < fx->nsubmitted || fx->nnew < fx->nsubmitted + (int)fx->stats.ndr_sent)
		return false;
	/* A report is counted once its commit is through (asynchronous): wait
	 * for the ones the step expects; one too many shows at the next step,
	 * or after the shutdown (every commit done). */
	if ((int)fx->stats.ndr_sent < fx->want_reports)
		return false;
	if (s->nactive > 0)
		return false;
	return s->nheap == 0 || s->heap[0]->at > fx->clock;
}

static void
fx_act(struct fx *fx, const struct step *st)
{
	const char *qid = st->n < fx->nsubmitted ? fx->qids[st->n] : "";

	switch (st->act) {
	case TICK:
		break;
	case SUBMIT:
		fx_submit(fx, st->n);
		break;
	case HOLD:
		CHECK_INT(sched_hold(fx->s, qid), 0);
		break;
	case RELEASE:
		CHECK_INT(sched_release(fx->s, qid), 0);
		break;
	case FLUSH:
		CHECK(sched_flush(fx->s, NULL) > 0);
		break;
	case FLUSH_MSG:
		CHECK_INT(sched_flush(fx->s, qid), 1);
		break;
	case DELETE:
		CHECK_INT(sched_delete(fx->s, qid), 0);
		break;
	}
}

/* The metrics' tallies (sched_tally, kept as things change) agree with a
 * walk over every recipient (sched_rcpt_view). */
struct tally_walk {
	struct sched *s;
	struct sched_tally t;
};

static void
tally_walk_msg(void *arg, const struct queue_msg *m)
{
	struct tally_walk *w = arg;
	struct sched_rcpt_view v;
	size_t i;

	w->t.messages++;
	w->t.held += m->held;
	for (i = 0; i < m->env.nrcpts; i++) {
		sched_rcpt_view(w->s, m, i, &v);
		switch (v.state) {
		case SCHED_RCPT_ACTIVE: w->t.rcpts_active++; break;
		case SCHED_RCPT_QUEUED: w->t.rcpts_queued++; break;
		case SCHED_RCPT_WAITING: w->t.rcpts_waiting++; break;
		case SCHED_RCPT_HELD: w->t.rcpts_held++; break;
		case SCHED_RCPT_DUE: w->t.rcpts_due++; break;
		default: continue;
		}
		w->t.rcpts_pending++;
	}
}

static void
check_tally(struct sched *s, int no, size_t k)
{
	struct tally_walk w;
	struct sched_tally t;

	memset(&w, 0, sizeof(w));
	w.s = s;
	sched_foreach(s, tally_walk_msg, &w);
	sched_tally(s, &t);
	CHECK_MSG(t.messages == w.t.messages && t.held == w.t.held &&
	    t.rcpts_pending == w.t.rcpts_pending && t.rcpts_active == w.t.rcpts_active &&
	    t.rcpts_queued == w.t.rcpts_queued && t.rcpts_waiting == w.t.rcpts_waiting &&
	    t.rcpts_held == w.t.rcpts_held && t.rcpts_due == w.t.rcpts_due,
	    "scenario %d step %zu: tally msgs=%zu held=%zu pending=%zu active=%zu queued=%zu "
	    "waiting=%zu held=%zu due=%zu; walk %zu %zu %zu %zu %zu %zu %zu %zu", no, k,
	    t.messages, t.held, t.rcpts_pending, t.rcpts_active, t.rcpts_queued,
	    t.rcpts_waiting, t.rcpts_held, t.rcpts_due, w.t.messages, w.t.held,
	    w.t.rcpts_pending, w.t.rcpts_active, w.t.rcpts_queued, w.t.rcpts_waiting,
	    w.t.rcpts_held, w.t.rcpts_due);
}

static void
run_scenario(const struct scenario *sc, int no)
{
	struct fx fx;
	size_t k;

	mxsink_exec(&sink_a, "sink.reset()");
	mxsink_exec(&sink_b, "sink.reset()");
	fx_init(&fx, sc, no);
	for (k = 0; k < MAX_STEPS && sc->steps[k].up != NULL; k++) {
		const struct step *st = &sc->steps[k];
		const struct want *w = &st->want;
		struct dest_seen d = { "route:a.test", "-", 0, 0 };
		int a, b, delivered;

		sink_set_up(&sink_a, 'a', st->up);
		sink_set_up(&sink_b, 'b', st->up);
		fx.clock = fx.base + st->at;
		fx.want_reports = w->reports;
		fx_act(&fx, st);
		sched_arm(fx.s);        /* the clock moved: what is due now runs */
		CHECK_MSG(fx_run(&fx, pred_settled), "scenario %d step %zu: never settled", no, k);

		a = (int)mxsink_long(&sink_a, sink_attempts);
		b = (int)mxsink_long(&sink_b, sink_attempts);
		delivered = (int)mxsink_long(&sink_a, "len(sink.messages)") +
		    (int)mxsink_long(&sink_b, "len(sink.messages)");
		sched_foreach_dest(fx.s, dest_cb, &d);
		check_tally(fx.s, no, k);
		CHECK_MSG(a == w->a && b == w->b && delivered == w->delivered &&
		    strcmp(d.state, w->dest) == 0 && (int)d.waiting == w->waiting &&
		    fx_pending(&fx) == w->pending && (int)fx.stats.ndr_sent == w->reports &&
		    (int)fx.stats.expired == w->expired &&
		    (w->down_since == 0 || d.down_since == fx.base + w->down_since),
		    "\n  scenario %d: %s\n  step %zu (at %llu s): "
		    "got a=%d b=%d delivered=%d dest=%s waiting=%zu pending=%d reports=%d "
		    "expired=%d down_since=+%llds\n  want a=%d b=%d delivered=%d dest=%s waiting=%d "
		    "pending=%d reports=%d expired=%d down_since=+%llus", no, sc->name, k,
		    (unsigned long long)(st->at / S), a, b, delivered, d.state, d.waiting,
		    fx_pending(&fx), (int)fx.stats.ndr_sent, (int)fx.stats.expired,
		    d.down_since ? (long long)(d.down_since - fx.base) / (long long)S : -1LL,
		    w->a, w->b, w->delivered, w->dest, w->waiting, w->pending, w->reports,
		    w->expired, (unsigned long long)(w->down_since / S));
	}
	fx_fini(&fx);
	/* every commit is through now: no report beyond the last step's */
	CHECK_MSG((int)fx.stats.ndr_sent == sc->steps[k - 1].want.reports,
	    "scenario %d: %d reports queued in all, want %d", no, (int)fx.stats.ndr_sent,
	    sc->steps[k - 1].want.reports);
}

/* ------------------------------------------------------------------ */
/* Shared routes (struct sched_route): their references across route changes. */

static const struct scenario route_share = { "shared route", 10 * M, 1 * H, 5 * 24 * H, 0, { { 0 } } };

static bool
pred_active(struct fx *fx)
{
	return fx->s->nactive > 0;
}

static bool
pred_delivering(struct fx *fx)
{
	struct sched_job *job = TAILQ_FIRST(&fx->s->active);

	return job != NULL && job->state == SCHED_JOB_DELIVERING;
}

/* How many of d's jobs (in flight) hold sr, and of its queued and waiting
 * recipients are under it (d's route: they hold no reference of their own). */
static int
route_holders(struct sched *s, struct sched_dest *d, const struct sched_route *sr)
{
	struct sched_job *job;
	struct sched_rcpt *rc;
	int n = 0;

	TAILQ_FOREACH(rc, &d->waiting, wentry)
		n += d->route == sr;
	TAILQ_FOREACH(rc, &d->queued, wentry)
		n += d->route == sr;
	TAILQ_FOREACH(job, &s->active, entry)
		n += job->dest == d && job->route == sr;
	return n;
}

/* How many entries of the route cache (struct sched_rcache) hold sr. */
static int
route_cached(struct sched *s, const struct sched_route *sr)
{
	int n = 0;

	for (size_t i = 0; s->rcache.slot != NULL && i < SCHED_RCACHE_SLOTS; i++)
		n += s->rcache.slot[i].sr == sr;
	return n;
}

/*
 * A destination's jobs share one route (one reference each, one the
 * destination's, and one the route cache's entry for their domain, dropped
 * with its generation; its waiting recipients hold none: they wait under
 * the destination's); a route change while one of them is in flight gives
 * the others a new shared route, and the job in flight keeps its old one
 * (its last reference) until its attempt ends: then it is not put back on
 * the old route but made again on the new one, sharing it with the others.
 * Run under ASan, a reference too few is a use after free and one too many
 * a leak.
 */
static void
test_route_shared(int no)
{
	struct fx fx;
	struct sched_dest *d;
	struct sched_route *first, *second;
	struct sched_job *probe;
	struct buf err = BUF_INIT, hosts = BUF_INIT;
	struct htab_node *n;

	sinks_reset("");
	fx_init(&fx, &route_share, no);
	fx_submit(&fx, 4);
	CHECK_MSG(fx_run(&fx, pred_settled), "shared route: never settled");
	n = htab_find(&fx.s->dhash, "route:a.test");
	CHECK(n != NULL);
	if (n == NULL)
		exit(check_done());
	d = HTAB_ENTRY(n, struct sched_dest, node);
	CHECK(d->state == SCHED_DEST_DOWN && d->nwaiting == 4);
	first = d->route;
	CHECK(first != NULL && route_holders(fx.s, d, first) == 4 && route_cached(fx.s, first) == 1 &&
	    first->refs == 2);

	/* the probe is in flight when the route changes (to a alone) */
	fx.clock = fx.base + 10 * M;
	sched_arm(fx.s);
	CHECK_MSG(fx_run(&fx, pred_active), "shared route: no probe");
	probe = TAILQ_FIRST(&fx.s->active);
	buf_printf(&hosts, "127.0.0.2:%d", sink_a.port);
	CHECK_INT(sched_route_set(fx.s, "a.test", buf_cstr(&hosts), &err), 0);
	second = d->route;
	CHECK(probe != NULL && probe->route == first && (int)first->refs == 2 + route_cached(fx.s, first) &&
	    second == first &&
	    d->nwaiting == 0 && d->state == SCHED_DEST_NEW);
	CHECK_MSG(fx_run(&fx, pred_settled), "shared route: never settled after route set");
	/* the probe did not go on to b (only in the old route); its message
	 * waits with the others, on the new route */
	CHECK_INT((int)mxsink_long(&sink_b, sink_attempts), 1);
	CHECK(d->state == SCHED_DEST_DOWN && d->nwaiting == 4);
	second = d->route;
	CHECK(second != NULL && second->r.runtime && second->refs == 2 &&
	    route_holders(fx.s, d, second) == 4 && route_cached(fx.s, second) == 1);

	/* back to the configured route: every job gets it again, and the
	 * run-time one goes (with the destination: every job left it) */
	CHECK_INT(sched_route_clear(fx.s, "a.test"), 0);
	CHECK_MSG(fx_run(&fx, pred_settled), "shared route: never settled after route clear");
	d = fx_dest(&fx, "route:a.test");
	CHECK(d != NULL && d->state == SCHED_DEST_DOWN && d->nwaiting == 4);
	CHECK(d != NULL && d->route != NULL && !d->route->r.runtime && d->route->refs == 2 &&
	    route_holders(fx.s, d, d->route) == 4 && route_cached(fx.s, d->route) == 1);
	buf_free(&hosts);
	buf_free(&err);
	fx_fini(&fx);
}

/*
 * A route set while an attempt is out (SCHEDULING.md, Routes): when that
 * attempt ends with a temporary failure, its job is not put back on the
 * old route; its message goes at once the new way, with the others, and
 * the old route's exchangers are not tried again.  The clock stands still
 * (no retry timer or backoff ends).  a.test's route goes from a and b to
 * the reports' sink r (up) while the first attempt's connection to a is out:
 *   - a and b are down: the attempt is the probe of the down destination,
 *     a answers 421 and the probe does not go on to b;
 *   - a answers but defers the recipient (451): a delivery attempt to a
 *     destination that is not down.
 */
static void
test_route_set_attempt_out(int no, const char *up, int want_a)
{
	struct fx fx;
	struct buf err = BUF_INIT, hosts = BUF_INIT;
	int a, b, delivered;

	sinks_reset(up);
	mxsink_exec(&sink_r, "sink.reset()");
	fx_init(&fx, &route_share, no);
	fx_submit(&fx, 2);
	if (*up == '\0') {
		CHECK_MSG(fx_run(&fx, pred_settled), "attempt out (%s): never settled", up);
		fx.clock = fx.base + 10 * M;    /* the hosts' backoff is over: the probe goes */
		sched_arm(fx.s);
	}
	CHECK_MSG(fx_run(&fx, pred_delivering), "attempt out (%s): no attempt", up);
	buf_printf(&hosts, "127.0.0.4:%d", sink_r.port);
	CHECK_INT(sched_route_set(fx.s, "a.test", buf_cstr(&hosts), &err), 0);
	CHECK_MSG(fx_run(&fx, pred_settled), "attempt out (%s): never settled after route set", up);

	a = (int)mxsink_long(&sink_a, sink_attempts);
	b = (int)mxsink_long(&sink_b, sink_attempts);
	delivered = (int)mxsink_long(&sink_r,
	    "sum(1 for m in sink.messages if m.rcpts[0][0].endswith('@a.test'))");
	CHECK_MSG(a == want_a && b == (*up == '\0') && delivered == 2 && fx_pending(&fx) == 0,
	    "attempt out (\"%s\"): a=%d b=%d (want %d %d) delivered at r=%d (want 2) pending=%d "
	    "(want 0)", up, a, b, want_a, *up == '\0', delivered, fx_pending(&fx));
	buf_free(&hosts);
	buf_free(&err);
	fx_fini(&fx);
}

/* The old route's attempts (two hosts) have all ended; the queue has settled
 * but for attempts that hang (r never greets). */
static bool
pred_old_gone(struct fx *fx)
{
	struct sched_job *job;

	TAILQ_FOREACH(job, &fx->s->active, entry)
		if (job->route->r.nhosts != 1 || job->state != SCHED_JOB_DELIVERING)
			return false;
	return fx->s->nheap == 0 || fx->s->heap[0]->at > fx->clock;
}

/*
 * SCHEDULING.md, Routes: a down destination whose every job now goes
 * another way is new again, "its jobs queue behind a window of one plus the
 * old attempts still out".  Once the old probe has ended, the new route is
 * still unknown (r does not greet): one job only may be trying it.
 */
static void
test_route_set_window(int no)
{
	struct fx fx;
	struct sched_dest *d;
	struct buf err = BUF_INIT, hosts = BUF_INIT;

	sinks_reset("");
	mxsink_exec(&sink_r, "sink.reset(); sink.script(greeting='HANG')");
	fx_init(&fx, &route_share, no);
	fx_submit(&fx, 4);
	CHECK_MSG(fx_run(&fx, pred_settled), "window: never settled");
	fx.clock = fx.base + 10 * M;
	sched_arm(fx.s);
	CHECK_MSG(fx_run(&fx, pred_delivering), "window: no probe");
	buf_printf(&hosts, "127.0.0.4:%d", sink_r.port);
	CHECK_INT(sched_route_set(fx.s, "a.test", buf_cstr(&hosts), &err), 0);
	CHECK_MSG(fx_run(&fx, pred_old_gone), "window: the old probe never ended");
	d = fx_dest(&fx, "route:a.test");
	CHECK_MSG(d != NULL && d->state == SCHED_DEST_NEW && d->inflight == 1 && d->nbacklog == 3,
	    "window: state %d inflight %u backlog %u window %u (want new, 1 in flight, 3 queued)",
	    d ? (int)d->state : -1, d ? d->inflight : 0, d ? (unsigned)d->nbacklog : 0, d ? d->window : 0);
	mxsink_exec(&sink_r, "sink.reset_script()");
	buf_free(&hosts);
	buf_free(&err);
	fx_fini(&fx);
}

/* One message to c.test and d.test (both by the configured "*": r). */
static void
fx_submit_two_domains(struct fx *fx)
{
	struct env_rcpt rcpt[2];

	memset(rcpt, 0, sizeof(rcpt));
	rcpt[0].addr = "x@c.test";
	rcpt[1].addr = "y@d.test";
	fx_submit_rcpts(fx, rcpt, 2);
}

/*
 * A job by a route with hosts for "*" holds recipients of several domains
 * (one destination, route:*).  A route set for the second of them while the
 * attempt is out: that recipient goes the new way (a), not on with the
 * old route's job.
 */
static void
test_route_set_second_domain(int no)
{
	struct fx fx;
	struct buf err = BUF_INIT, hosts = BUF_INIT;
	int at_a;

	mxsink_exec(&sink_a, "sink.reset(); sink.reset_script()");
	mxsink_exec(&sink_r, "sink.reset(); sink.script(greeting='421 4.3.2 down for the test')");
	fx_init(&fx, &route_share, no);
	fx_submit_two_domains(&fx);
	CHECK_MSG(fx_run(&fx, pred_delivering), "second domain: no attempt");
	buf_printf(&hosts, "127.0.0.2:%d", sink_a.port);
	CHECK_INT(sched_route_set(fx.s, "d.test", buf_cstr(&hosts), &err), 0);
	CHECK_MSG(fx_run(&fx, pred_settled), "second domain: never settled");
	at_a = (int)mxsink_long(&sink_a, "sum(1 for m in sink.messages for a, _ in m.rcpts if a == 'y@d.test')");
	CHECK_MSG(at_a == 1, "second domain: y@d.test delivered %d times at a (want 1: its new route)",
	    at_a);
	mxsink_exec(&sink_r, "sink.reset(); sink.reset_script()");
	buf_free(&hosts);
	buf_free(&err);
	fx_fini(&fx);
}

/*
 * SCHEDULING.md, Routes: the probe out during a route set fails; what it
 * tried "is recorded as a deferral due at once" (retry_in=0s).  A restart
 * before the new way's attempt records anything (r never greets) finds the
 * recipient due at once, not a retry interval after the old probe.
 */
static void
test_route_set_restart(int no)
{
	struct fx fx;
	struct sched_msg *sm;
	struct buf err = BUF_INIT, hosts = BUF_INIT;
	char qid[QID_MAX];
	uint64_t clock, due;

	sinks_reset("");
	mxsink_exec(&sink_r, "sink.reset(); sink.script(greeting='HANG')");
	fx_init(&fx, &route_share, no);
	fx_submit(&fx, 1);
	CHECK_MSG(fx_run(&fx, pred_settled), "restart: never settled");
	fx.clock = fx.base + 10 * M;
	clock = fx.clock;
	sched_arm(fx.s);
	CHECK_MSG(fx_run(&fx, pred_delivering), "restart: no probe");
	buf_printf(&hosts, "127.0.0.4:%d", sink_r.port);
	CHECK_INT(sched_route_set(fx.s, "a.test", buf_cstr(&hosts), &err), 0);
	CHECK_MSG(fx_run(&fx, pred_old_gone), "restart: the old probe never ended");
	snprintf(qid, sizeof(qid), "%s", fx.qids[0]);
	fx_fini(&fx);

	fx_init(&fx, &route_share, no);
	sm = sched_msg_lookup(fx.s, qid);
	due = sm != NULL ? sm->rc[0].retry_at : 0;
	CHECK_MSG(sm != NULL && due <= clock,
	    "restart: the rerouted recipient is due %llu s after the deferral (want at once)",
	    (unsigned long long)(due > clock ? (due - clock) / S : 0));
	mxsink_exec(&sink_r, "sink.reset(); sink.reset_script()");
	buf_free(&hosts);
	buf_free(&err);
	fx_fini(&fx);
}

/*
 * SCHEDULING.md, Routes: "a down destination whose every job, in flight or
 * not, now goes another way is new again (the outage was of the old
 * hosts)".  One with no job left (kept to remember its outage) too: a route
 * set to r, and the next message goes there at once, not after the old
 * hosts' backoff.
 */
static void
test_route_set_empty_down(int no)
{
	struct fx fx;
	struct buf err = BUF_INIT, hosts = BUF_INIT;
	int delivered;

	sinks_reset("");
	mxsink_exec(&sink_r, "sink.reset(); sink.reset_script()");
	fx_init(&fx, &route_share, no);
	fx_submit(&fx, 1);
	CHECK_MSG(fx_run(&fx, pred_settled), "empty down: never settled");
	CHECK_INT(sched_delete(fx.s, fx.qids[0]), 0);
	CHECK_MSG(fx_run(&fx, pred_settled), "empty down: never settled after delete");
	buf_printf(&hosts, "127.0.0.4:%d", sink_r.port);
	CHECK_INT(sched_route_set(fx.s, "a.test", buf_cstr(&hosts), &err), 0);
	fx_submit(&fx, 1);
	CHECK_MSG(fx_run(&fx, pred_settled), "empty down: never settled after route set");
	delivered = (int)mxsink_long(&sink_r,
	    "sum(1 for m in sink.messages if m.rcpts[0][0].endswith('@a.test'))");
	CHECK_MSG(delivered == 1 && fx_pending(&fx) == 0,
	    "empty down: delivered at r %d (want 1), pending %d (want 0)", delivered, fx_pending(&fx));
	buf_free(&hosts);
	buf_free(&err);
	fx_fini(&fx);
}

/* ------------------------------------------------------------------ */
/* The route cache (struct sched_rcache): one resolve per domain and generation. */

static int
sink_got(struct mxsink *sink)
{
	return (int)mxsink_long(sink, "len(sink.messages)");
}

/*
 * The jobs of one recipient domain share its route without resolving it
 * again, whatever its case or a trailing dot ("A.Test." is a.test); a route
 * set, a route clear, and a reload with another route for the domain each
 * begin a generation: the next job resolves again and goes the new way, and
 * the ones after it share that.
 */
static void
test_route_cache(int no)
{
	struct fx fx;
	struct sched_rcache *c;
	struct conf *conf2;
	struct buf err = BUF_INIT, hosts = BUF_INIT;

	sinks_reset("ab");
	fx_init(&fx, &route_share, no);
	c = &fx.s->rcache;

	/* one resolve for the four: to a, the route's first exchanger */
	fx_submit_to(&fx, 2, "a.test");
	fx_submit_to(&fx, 1, "A.Test.");
	fx_submit_to(&fx, 1, "a.TEST");
	CHECK_MSG(fx_run(&fx, pred_settled), "route cache: never settled");
	CHECK_MSG(sink_got(&sink_a) == 4 && sink_got(&sink_b) == 0 && c->misses == 1 && c->hits == 3,
	    "route cache: a got %d, b %d (want 4, 0), %llu resolved, %llu shared (want 1, 3)",
	    sink_got(&sink_a), sink_got(&sink_b), (unsigned long long)c->misses,
	    (unsigned long long)c->hits);

	/* route set (to b alone): the next job resolves again, and goes to b */
	buf_printf(&hosts, "127.0.0.3:%d", sink_b.port);
	CHECK_INT(sched_route_set(fx.s, "A.TEST.", buf_cstr(&hosts), &err), 0);
	fx_submit_to(&fx, 2, "a.test.");
	CHECK_MSG(fx_run(&fx, pred_settled), "route cache: never settled after route set");
	CHECK_MSG(sink_got(&sink_a) == 4 && sink_got(&sink_b) == 2 && c->misses == 2,
	    "route cache after route set: a got %d, b %d (want 4, 2), %llu resolved (want 2)",
	    sink_got(&sink_a), sink_got(&sink_b), (unsigned long long)c->misses);

	/* route clear: the configured route again (a first) */
	CHECK_INT(sched_route_clear(fx.s, "a.test"), 0);
	fx_submit_to(&fx, 1, "A.test");
	CHECK_MSG(fx_run(&fx, pred_settled), "route cache: never settled after route clear");
	CHECK_MSG(sink_got(&sink_a) == 5 && sink_got(&sink_b) == 2 && c->misses == 3,
	    "route cache after route clear: a got %d, b %d (want 5, 2), %llu resolved (want 3)",
	    sink_got(&sink_a), sink_got(&sink_b), (unsigned long long)c->misses);

	/* a reload that routes a.test to b alone */
	conf2 = fx_conf(&route_share, fx.conf->queue_dir, buf_cstr(&hosts));
	sched_reload(fx.s, conf2);
	fx_submit_to(&fx, 2, "a.test");
	CHECK_MSG(fx_run(&fx, pred_settled), "route cache: never settled after a reload");
	CHECK_MSG(sink_got(&sink_a) == 5 && sink_got(&sink_b) == 4 && c->misses == 4,
	    "route cache after a reload: a got %d, b %d (want 5, 4), %llu resolved (want 4)",
	    sink_got(&sink_a), sink_got(&sink_b), (unsigned long long)c->misses);
	buf_free(&hosts);
	buf_free(&err);
	fx_fini(&fx);
	conf_unref(conf2);
}

/*
 * The cache is bounded: looking up four times as many domains as it has
 * slots leaves at most one entry per slot (the others evicted, their routes
 * freed: the sanitizer build checks), the domain looked up last is still
 * there, and none of it outlives the scheduler.  A domain's key is kept in
 * its slot only up to 63 bytes.
 */
static void
test_route_cache_bounded(int no)
{
	struct fx fx;
	struct sched_route *sr;
	char dom[32];
	size_t i, used = 0;
	uint64_t misses;

	fx_init(&fx, &route_share, no);
	for (i = 0; i < 4 * SCHED_RCACHE_SLOTS; i++) {
		snprintf(dom, sizeof(dom), "d%zu.test", i);
		sched_route_unref(sched_route_for(fx.s, dom, NULL));
	}
	for (i = 0; i < SCHED_RCACHE_SLOTS; i++)
		used += fx.s->rcache.slot[i].sr != NULL;
	CHECK(fx.s->rcache.misses == 4 * SCHED_RCACHE_SLOTS && used > 0 && used <= SCHED_RCACHE_SLOTS);
	misses = fx.s->rcache.misses;
	sr = sched_route_for(fx.s, dom, NULL);
	CHECK(fx.s->rcache.misses == misses && strcmp(sr->r.dest, "route:*") == 0);
	sched_route_unref(sr);
	/* a folded domain of 63 bytes is kept in its slot; one of 64 never is */
	for (size_t len = 63; len <= 64; len++) {
		char big[80];

		memset(big, 'y', len);
		memcpy(big + len - 5, ".test", 6);
		misses = fx.s->rcache.misses;
		sched_route_unref(sched_route_for(fx.s, big, NULL));
		sched_route_unref(sched_route_for(fx.s, big, NULL));
		CHECK_MSG(fx.s->rcache.misses - misses == (len == 63 ? 1 : 2),
		    "a %zu-byte domain: %llu misses in two lookups", len,
		    (unsigned long long)(fx.s->rcache.misses - misses));
	}
	fx_fini(&fx);
}

/*
 * Whatever the run-time routes and the configuration went through, the
 * cache gives for a domain what route_resolve gives now (route_equal), for
 * domains folded alike or not, empty, literal, UTF-8 or too long to be kept.
 */
static void
test_route_cache_matches_resolve(int no)
{
	static const char *const doms[] = {
		"a.test", "A.Test.", "a.test..", "b.test", "B.TEST.", "c.test", "", ".", "*",
		"[192.0.2.1]", "[IPv6:2001:DB8::1]", "[ipv6:2001:db8::1]", "\xc3\xbc.test",
		"\xc3\x9c.TEST.", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
	};
	static const char *const rt[] = { "*", "b.test", "A.TEST.", "c.test." };
	struct fx fx;
	struct conf *confs[3];
	struct buf err = BUF_INIT, hosts = BUF_INIT;
	char l254[300], l255[300], l256[300], l257[300], s63[80], s64[80], s64d[80], s65d[80];
	const char *dl[RELAY_ARRAY_LEN(doms)];
	uint32_t rnd = 12345;
	size_t i, k, nd = RELAY_ARRAY_LEN(doms) - 8, bad = 0;

	memset(l254, 'x', sizeof(l254));
	l254[254] = '\0';
	memcpy(l255, l254, sizeof(l254));
	l255[254] = '.';
	l255[255] = '\0';
	memcpy(l256, l254, sizeof(l254));
	l256[255] = 'Y';
	l256[256] = '\0';
	memcpy(l257, l256, sizeof(l256));
	l257[256] = '.';
	l257[257] = '\0';
	memcpy(dl, doms, sizeof(doms));
	dl[nd++] = l254;
	dl[nd++] = l255;
	dl[nd++] = l256;
	dl[nd++] = l257;
	/* around the cache's inline keys (SCHED_RCACHE_KEYMAX 64: 63 bytes fit) */
	snprintf(s63, sizeof(s63), "%.60s.ab", l254);
	snprintf(s64, sizeof(s64), "%.60s.abc", l254);
	snprintf(s64d, sizeof(s64d), "%.60s.AB.", l254);
	snprintf(s65d, sizeof(s65d), "%.60s.ABC.", l254);
	dl[nd++] = s63;
	dl[nd++] = s64;
	dl[nd++] = s64d;
	dl[nd++] = s65d;
	fx_init(&fx, &route_share, no);
	buf_printf(&hosts, "127.0.0.3:%d", sink_b.port);
	confs[0] = conf_ref(fx.conf);
	confs[1] = fx_conf(&route_share, fx.conf->queue_dir, buf_cstr(&hosts));
	confs[2] = conf_new_defaults();
	free(confs[2]->queue_dir);
	confs[2]->queue_dir = xstrdup(fx.conf->queue_dir);
	for (k = 0; k < 3000; k++) {
		unsigned op;

		rnd = rnd * 1103515245u + 12345u;
		op = (rnd >> 16) % 16;
		if (op == 0)
			sched_reload(fx.s, confs[(rnd >> 8) % 3]);
		else if (op < 4)
			(void)sched_route_set(fx.s, rt[(rnd >> 4) % 4], buf_cstr(&hosts), &err);
		else if (op < 6)
			(void)sched_route_clear(fx.s, rt[(rnd >> 4) % 4]);
		for (i = 0; i < nd; i++) {
			struct sched_route *sr = sched_route_for(fx.s, dl[i], NULL);
			struct route r;

			route_resolve(fx.s->routes, fx.s->conf, dl[i], &r);
			if (!route_equal(&sr->r, &r) && bad++ < 5)
				fprintf(stderr, "route cache: step %zu, '%s': cached %s, resolved %s\n",
				    k, dl[i], sr->r.dest, r.dest);
			route_release(&r);
			sched_route_unref(sr);
		}
	}
	CHECK_MSG(bad == 0, "route cache: %zu lookups unlike route_resolve", bad);
	CHECK(fx.s->rcache.hits > 0);
	for (i = 0; i < 3; i++)
		conf_unref(confs[i]);
	buf_free(&hosts);
	buf_free(&err);
	fx_fini(&fx);
}

/* One message of n recipients: the first na at a.test in changing case, the
 * rest at other domains (the configured "*": r). */
static void
fx_submit_many(struct fx *fx, int n, int na)
{
	static const char *const adom[] = { "a.test", "A.TEST", "a.Test." };
	struct env_rcpt rcpt[32];
	char addr[32][64];

	memset(rcpt, 0, sizeof(rcpt));
	for (int k = 0; k < n; k++) {
		if (k < na)
			snprintf(addr[k], sizeof(addr[k]), "u%d@%s", k, adom[k % 3]);
		else
			snprintf(addr[k], sizeof(addr[k]), "u%d@d%d.test", k, k % 4);
		rcpt[k].addr = addr[k];
	}
	fx_submit_rcpts(fx, rcpt, (size_t)n);
}

/* sched_msg_dispatch's arrays on the stack (8 recipients) and allocated (more):
 * one transaction per destination either way. */
static void
test_dispatch_many(int no, int n, int na)
{
	struct fx fx;
	int ra, rr, ma, mr;

	mxsink_exec(&sink_a, "sink.reset(); sink.reset_script()");
	mxsink_exec(&sink_b, "sink.reset(); sink.reset_script()");
	mxsink_exec(&sink_r, "sink.reset(); sink.reset_script()");
	sink_set_up(&sink_a, 'a', "ab");
	sink_set_up(&sink_b, 'b', "ab");
	fx_init(&fx, &route_share, no);
	fx_submit_many(&fx, n, na);
	CHECK_MSG(fx_run(&fx, pred_settled), "dispatch many: never settled");
	ma = sink_got(&sink_a);
	mr = sink_got(&sink_r);
	ra = (int)mxsink_long(&sink_a, "sum(len(m.rcpts) for m in sink.messages)");
	rr = (int)mxsink_long(&sink_r, "sum(len(m.rcpts) for m in sink.messages)");
	CHECK_MSG(ma == 1 && mr == 1 && ra == na && rr == n - na,
	    "dispatch %d: a %d messages %d rcpts, r %d messages %d rcpts (want 1/%d, 1/%d)",
	    n, ma, ra, mr, rr, na, n - na);
	fx_fini(&fx);
}

/*
 * A reload reaches the mail that waits: an attempt runs under the
 * configuration current when it starts, not the one its job was made under
 * (here the HELO name; the routes stay, so the job keeps its place).  And a
 * job takes at most max_rcpts_per_txn recipients, bounded by its count's
 * width.
 */
static void
test_reload_waiting(int no)
{
	struct fx fx;
	struct conf *conf2;
	struct sched_dest *d;
	struct buf hosts = BUF_INIT;
	unsigned saved;

	sinks_reset("");
	fx_init(&fx, &route_share, no);
	fx_submit(&fx, 1);
	CHECK_MSG(fx_run(&fx, pred_settled), "reload waiting: never settled");
	d = fx_dest(&fx, "route:a.test");
	/* the first attempt reached the sinks (refused at the greeting) */
	CHECK(d != NULL && d->state == SCHED_DEST_DOWN && d->nwaiting == 1 &&
	    mxsink_long(&sink_a, sink_attempts) + mxsink_long(&sink_b, sink_attempts) >= 1);

	buf_printf(&hosts, "127.0.0.2:%d,127.0.0.3:%d", sink_a.port, sink_b.port);
	conf2 = fx_conf(&route_share, fx.conf->queue_dir, buf_cstr(&hosts));
	free(conf2->hostname);
	conf2->hostname = xstrdup("relay2.test");
	sched_reload(fx.s, conf2);
	CHECK(d->state == SCHED_DEST_DOWN && d->nwaiting == 1);     /* not rerouted */
	sinks_reset("a");
	fx.clock = fx.base + 10 * M;
	sched_arm(fx.s);
	CHECK_MSG(fx_run(&fx, pred_settled), "reload waiting: never settled after the reload");
	CHECK_MSG(sink_got(&sink_a) == 1 &&
	    mxsink_long(&sink_a, "sum(1 for _, c in sink.commands if c.upper() == 'EHLO RELAY2.TEST')") == 1 &&
	    mxsink_long(&sink_a, "sum(1 for _, c in sink.commands if c.upper() == 'EHLO RELAY.TEST')") == 0,
	    "reload waiting: a got %d (want 1), EHLO relay2.test %ld times (want 1)", sink_got(&sink_a),
	    mxsink_long(&sink_a, "sum(1 for _, c in sink.commands if c.upper() == 'EHLO RELAY2.TEST')"));

	saved = fx.s->conf->router.max_rcpts_per_txn;
	fx.s->conf->router.max_rcpts_per_txn = 100000;
	CHECK_INT((int)sched_job_max(fx.s), SCHED_JOB_RCPTS_MAX);
	fx.s->conf->router.max_rcpts_per_txn = 0;
	CHECK_INT((int)sched_job_max(fx.s), 1);
	fx.s->conf->router.max_rcpts_per_txn = 100;
	CHECK_INT((int)sched_job_max(fx.s), 100);
	fx.s->conf->router.max_rcpts_per_txn = saved;
	buf_free(&hosts);
	fx_fini(&fx);
	conf_unref(conf2);
}

struct attempts_sum {
	long attempts;                  /* recorded attempts, every recipient of ours */
	int msgs;
};

static void
attempts_cb(void *arg, const struct queue_msg *m)
{
	struct attempts_sum *a = arg;

	if (m->env.sender[0] == '\0')   /* a report */
		return;
	a->msgs++;
	for (size_t i = 0; i < m->env.nrcpts; i++)
		a->attempts += m->rcpt[i].attempts;
}

/*
 * A job that made attempts of its own (the first, then the probe: it goes
 * to the tail of the waiting list), released to the backlog with the others
 * when the destination is said to be up, is still queued behind the window
 * when the attempts let out find it down again: it waits again without an
 * attempt recorded, since it made none.  The recipients' attempts are the
 * connections the exchangers saw.
 */
static void
test_backlog_wait_attempts(int no)
{
	struct fx fx;
	struct sched_dest *d;
	struct attempts_sum sum = { 0, 0 };
	long a, b;

	sinks_reset("");
	mxsink_exec(&sink_r, "sink.reset(); sink.reset_script()");
	fx_init(&fx, &route_share, no);
	fx_submit(&fx, 4);
	CHECK_MSG(fx_run(&fx, pred_settled), "backlog wait: never settled");
	fx.clock = fx.base + 10 * M;            /* the probe: the first job again */
	sched_arm(fx.s);
	CHECK_MSG(fx_run(&fx, pred_settled), "backlog wait: the probe never settled");
	d = fx_dest(&fx, "route:a.test");
	CHECK(d != NULL && d->state == SCHED_DEST_DOWN && d->nwaiting == 4);
	/* up by hand: 2 jobs go (the window), the prober stays queued at the tail */
	CHECK(sched_dest_release(fx.s, "route:a.test"));
	CHECK(d->nbacklog == 2 && fx.s->nactive == 2);
	CHECK_MSG(fx_run(&fx, pred_settled), "backlog wait: never settled after the release");
	CHECK(d->state == SCHED_DEST_DOWN && d->nwaiting == 4);
	a = mxsink_long(&sink_a, sink_attempts);
	b = mxsink_long(&sink_b, sink_attempts);
	sched_foreach(fx.s, attempts_cb, &sum);
	CHECK_MSG(a == 2 && b == 2 && sum.msgs == 4 && sum.attempts == 2,
	    "backlog wait: a %ld b %ld connections, %d messages with %ld attempts recorded "
	    "(want 2, 2, 4, 2)", a, b, sum.msgs, sum.attempts);
	fx_fini(&fx);
}

/*
 * router.max_rcpts_per_txn below a message's recipients for one destination:
 * jobs of max (the last fewer), each one transaction; max 1 gives jobs of
 * one recipient (kept inline) for a message of several.
 */
static void
test_split_max(int no, unsigned max, int n, int want_msgs)
{
	struct fx fx;
	int ma, ra;

	sinks_reset("ab");
	mxsink_exec(&sink_r, "sink.reset(); sink.reset_script()");
	fx_init(&fx, &route_share, no);
	fx.conf->router.max_rcpts_per_txn = max;
	fx_submit_many(&fx, n, n);
	CHECK_MSG(fx_run(&fx, pred_settled), "split %u: never settled", max);
	ma = sink_got(&sink_a);
	ra = (int)mxsink_long(&sink_a, "sum(len(m.rcpts) for m in sink.messages)");
	CHECK_MSG(ma == want_msgs && ra == n &&
	    mxsink_long(&sink_a, "max(len(m.rcpts) for m in sink.messages)") == (long)max,
	    "split %u of %d: %d transactions, %d recipients (want %d, %d)", max, n, ma, ra,
	    want_msgs, n);
	fx_fini(&fx);
}

/* The messages' jobs: none while every recipient waits for its destination. */
static unsigned
fx_njobs(struct fx *fx)
{
	struct sched_msg *sm;
	unsigned n = 0;

	TAILQ_FOREACH(sm, &fx->s->msgs, entry)
		n += sm->njobs;
	return n;
}

/* Recipient i of the message qid is in state st for the destination called dest. */
static bool
fx_rcpt_is(struct fx *fx, const char *qid, size_t i, enum sched_rcpt_state st, const char *dest)
{
	struct sched_msg *sm = sched_msg_lookup(fx->s, qid);
	struct sched_rcpt_view v;

	if (sm == NULL)
		return false;
	sched_rcpt_view(fx->s, sm->m, i, &v);
	return v.state == st && v.dest != NULL && strcmp(v.dest, dest) == 0;
}

/* Recipient i of the first message waits for the destination called dest. */
static bool
fx_rcpt_waits(struct fx *fx, size_t i, const char *dest)
{
	return fx_rcpt_is(fx, fx->qids[0], i, SCHED_RCPT_WAITING, dest);
}

/*
 * SCHEDULING.md, Outages and Memory: a message whose recipients' two
 * destinations (a.test's route; c.test by "*": r) are both down waits in
 * both lines, each recipient in its own, and with no job.  One destination
 * coming back (another node said so) sends its recipient; the other keeps
 * waiting, and a delete takes it out of its line.  The tallies agree with
 * a walk at each point, also right after the release (jobs in the backlog).
 */
static void
test_wait_two_dests(int no)
{
	struct fx fx;
	struct sched_dest *da, *dr;
	struct env_rcpt rcpt[2];

	sinks_reset("");
	mxsink_exec(&sink_r, "sink.reset(); sink.script(greeting='421 4.3.2 down for the test'); "
	    "sink.drop_connections()");
	fx_init(&fx, &route_share, no);
	memset(rcpt, 0, sizeof(rcpt));
	rcpt[0].addr = "x@a.test";
	rcpt[1].addr = "y@c.test";
	fx_submit_rcpts(&fx, rcpt, 2);
	CHECK_MSG(fx_run(&fx, pred_settled), "two dests: never settled");
	da = fx_dest(&fx, "route:a.test");
	dr = fx_dest(&fx, "route:*");
	CHECK(da != NULL && dr != NULL);
	if (da == NULL || dr == NULL)
		exit(check_done());
	CHECK_MSG(da->state == SCHED_DEST_DOWN && dr->state == SCHED_DEST_DOWN &&
	    da->nwaiting == 1 && dr->nwaiting == 1 && fx.s->nr_waiting == 2 && fx_njobs(&fx) == 0,
	    "two dests: states %d %d, waiting %zu %zu (%zu in all), %u jobs (want down, down, 1, 1, "
	    "2, no job)", (int)da->state, (int)dr->state, da->nwaiting, dr->nwaiting,
	    fx.s->nr_waiting, fx_njobs(&fx));
	CHECK(fx_rcpt_waits(&fx, 0, "route:a.test") && fx_rcpt_waits(&fx, 1, "route:*"));
	check_tally(fx.s, no, 0);

	/* as when another node reached a: its address is up, its destination too */
	sink_set_up(&sink_a, 'a', "a");
	CHECK_INT(health_reset(sched_health(fx.s), "127.0.0.2"), 0);
	CHECK(sched_dest_release(fx.s, "route:a.test"));
	check_tally(fx.s, no, 1);
	CHECK_MSG(fx_run(&fx, pred_settled), "two dests: never settled after the release");
	/* a.test's destination is up and idle: gone */
	CHECK_MSG(sink_got(&sink_a) == 1 && fx_dest(&fx, "route:a.test") == NULL &&
	    dr->nwaiting == 1 && fx_rcpt_waits(&fx, 1, "route:*") && fx_pending(&fx) == 1 &&
	    fx_njobs(&fx) == 0,
	    "two dests: %d delivered at a, waiting %zu at r, %d pending, %u jobs (want 1, 1, 1, "
	    "none)", sink_got(&sink_a), dr->nwaiting, fx_pending(&fx), fx_njobs(&fx));
	check_tally(fx.s, no, 2);

	CHECK_INT(sched_delete(fx.s, fx.qids[0]), 0);
	CHECK_MSG(fx_dest(&fx, "route:*") == dr && dr->state == SCHED_DEST_DOWN && dr->nwaiting == 0 &&
	    fx.s->nr_waiting == 0 && fx_pending(&fx) == 0,
	    "two dests: after the delete %zu waiting (%zu in all), %d pending (want 0, 0, 0)",
	    dr->nwaiting, fx.s->nr_waiting, fx_pending(&fx));
	check_tally(fx.s, no, 3);
	mxsink_exec(&sink_r, "sink.reset(); sink.reset_script()");
	fx_fini(&fx);
}

/*
 * The probe of a down destination takes the first recipient in line and,
 * of its message's others waiting there, those the dispatch put in its job
 * (router.max_rcpts_per_txn 2: three recipients are two transactions, 2 +
 * 1).  The failed probe's two go to the end of the line, so the next probe
 * is the third alone; when it gets through, the release sends the other two
 * in one transaction.
 */
static void
test_probe_takes_group(int no)
{
	struct fx fx;
	struct sched_dest *d;
	long order;

	sinks_reset("");
	mxsink_exec(&sink_r, "sink.reset(); sink.reset_script()");
	fx_init(&fx, &route_share, no);
	fx.conf->router.max_rcpts_per_txn = 2;
	fx_submit_many(&fx, 3, 3);
	CHECK_MSG(fx_run(&fx, pred_settled), "probe group: never settled");
	d = fx_dest(&fx, "route:a.test");
	CHECK_MSG(d != NULL && d->state == SCHED_DEST_DOWN && d->nwaiting == 3 && fx_njobs(&fx) == 0,
	    "probe group: %zu recipients waiting, %u jobs (want 3, none)", d ? d->nwaiting : 0,
	    fx_njobs(&fx));
	check_tally(fx.s, no, 0);
	fx.clock = fx.base + 10 * M;            /* the probe: the first two, down again */
	sched_arm(fx.s);
	CHECK_MSG(fx_run(&fx, pred_settled), "probe group: the probe never settled");
	CHECK_MSG(mxsink_long(&sink_a, sink_attempts) == 2 && d->nwaiting == 3 && fx_njobs(&fx) == 0,
	    "probe group: a saw %ld attempts, %zu waiting (want 2, 3)",
	    mxsink_long(&sink_a, sink_attempts), d->nwaiting);
	sink_set_up(&sink_a, 'a', "a");
	fx.clock = fx.base + 30 * M;            /* the next: the third, then the release */
	sched_arm(fx.s);
	CHECK_MSG(fx_run(&fx, pred_settled), "probe group: never settled after the second probe");
	order = mxsink_long(&sink_a, "len(sink.messages[0].rcpts) * 10 + len(sink.messages[1].rcpts) "
	    "if len(sink.messages) == 2 else -len(sink.messages)");
	CHECK_MSG(order == 12 && fx_pending(&fx) == 0,
	    "probe group: transactions of %ld (want 12: the probe's 1, then the released 2), "
	    "%d pending", order, fx_pending(&fx));
	check_tally(fx.s, no, 1);
	fx_fini(&fx);
}

/*
 * relayctl queue hold / release / bounce of a message whose two recipients
 * wait for their down destination: a hold takes them out of its line
 * (held: the probe's time passes without an attempt), a release makes them
 * due (the message is the probe due meanwhile: down, they wait again,
 * still in no job), and a bounce fails both (5.0.0, one report) and leaves
 * the line empty.  The tallies agree with a walk after each.
 */
static void
test_admin_waiting(int no)
{
	struct fx fx;
	struct sched_dest *d;
	struct sched_tally t;
	long attempts;

	sinks_reset("");
	mxsink_exec(&sink_r, "sink.reset(); sink.reset_script()");
	fx_init(&fx, &route_share, no);
	fx_submit_many(&fx, 2, 2);
	CHECK_MSG(fx_run(&fx, pred_settled), "admin waiting: never settled");
	d = fx_dest(&fx, "route:a.test");
	CHECK(d != NULL && d->state == SCHED_DEST_DOWN && d->nwaiting == 2 && fx_njobs(&fx) == 0);
	if (d == NULL)
		exit(check_done());
	attempts = mxsink_long(&sink_a, sink_attempts);

	CHECK_INT(sched_hold(fx.s, fx.qids[0]), 0);
	sched_tally(fx.s, &t);
	CHECK_MSG(d->nwaiting == 0 && t.rcpts_held == 2 && t.rcpts_waiting == 0,
	    "admin waiting: held: %zu waiting, tally held %zu waiting %zu (want 0, 2, 0)",
	    d->nwaiting, t.rcpts_held, t.rcpts_waiting);
	check_tally(fx.s, no, 0);
	fx.clock = fx.base + 10 * M;            /* the probe's time: nothing waits */
	sched_arm(fx.s);
	CHECK_MSG(fx_run(&fx, pred_settled), "admin waiting: never settled while held");
	CHECK(mxsink_long(&sink_a, sink_attempts) == attempts);

	CHECK_INT(sched_release(fx.s, fx.qids[0]), 0);
	sched_arm(fx.s);
	CHECK_MSG(fx_run(&fx, pred_settled), "admin waiting: never settled after the release");
	CHECK_MSG(d->state == SCHED_DEST_DOWN && d->nwaiting == 2 && fx_njobs(&fx) == 0 &&
	    fx_rcpt_waits(&fx, 0, "route:a.test") && fx_rcpt_waits(&fx, 1, "route:a.test"),
	    "admin waiting: released: %zu waiting, %u jobs (want 2, none)", d->nwaiting, fx_njobs(&fx));
	check_tally(fx.s, no, 1);

	fx.want_reports = 1;
	CHECK_INT(sched_bounce(fx.s, fx.qids[0]), 0);
	CHECK_MSG(d->nwaiting == 0 && fx.s->nr_waiting == 0, "admin waiting: bounced: %zu waiting",
	    d->nwaiting);
	check_tally(fx.s, no, 2);
	CHECK_MSG(fx_run(&fx, pred_settled), "admin waiting: never settled after the bounce");
	CHECK_MSG(fx_pending(&fx) == 0 && (int)fx.stats.ndr_sent == 1 && fx.stats.bounced == 2,
	    "admin waiting: %d pending, %d reports, %d bounced (want 0, 1, 2)", fx_pending(&fx),
	    (int)fx.stats.ndr_sent, (int)fx.stats.bounced);
	check_tally(fx.s, no, 3);
	fx_fini(&fx);
}

/*
 * SCHEDULING.md, Lifetime: "Held messages are never attempted".  A message
 * held while its attempt is out (the first one, to a destination not known
 * yet) finds every exchanger down: its recipient is held, not in the
 * destination's line, so neither the probe when the backoff ends (a is up
 * again by then) nor the release of the destination takes it; released by
 * the administrator, it goes at once.
 */
static void
test_hold_attempt_out(int no)
{
	struct fx fx;
	struct sched_dest *d;
	struct sched_tally t;
	int got;

	sinks_reset("");
	mxsink_exec(&sink_r, "sink.reset(); sink.reset_script()");
	fx_init(&fx, &route_share, no);
	fx_submit(&fx, 1);
	CHECK_MSG(fx_run(&fx, pred_active), "hold out: no attempt");
	CHECK_INT(sched_hold(fx.s, fx.qids[0]), 0);
	CHECK_MSG(fx_run(&fx, pred_settled), "hold out: never settled");
	d = fx_dest(&fx, "route:a.test");
	sched_tally(fx.s, &t);
	CHECK_MSG(d != NULL && d->state == SCHED_DEST_DOWN && d->nwaiting == 0 &&
	    fx.s->nr_waiting == 0 && t.rcpts_held == 1 && t.rcpts_waiting == 0,
	    "hold out: %zu waiting (%zu in all), tally held %zu waiting %zu (want 0, 0, 1, 0)",
	    d != NULL ? d->nwaiting : 0, fx.s->nr_waiting, t.rcpts_held, t.rcpts_waiting);
	check_tally(fx.s, no, 0);

	sink_set_up(&sink_a, 'a', "a");
	fx.clock = fx.base + 10 * M;            /* the probe's time: nothing may go */
	sched_arm(fx.s);
	CHECK_MSG(fx_run(&fx, pred_settled), "hold out: never settled at the probe's time");
	(void)sched_dest_release(fx.s, "route:a.test");  /* as when another node reached a */
	sched_arm(fx.s);
	CHECK_MSG(fx_run(&fx, pred_settled), "hold out: never settled after the release");
	got = (int)mxsink_long(&sink_a, "len(sink.messages)");
	CHECK_MSG(got == 0 && fx_pending(&fx) == 1,
	    "hold out: a held message was delivered %d times (want 0), %d pending (want 1)", got,
	    fx_pending(&fx));
	check_tally(fx.s, no, 1);

	CHECK_INT(sched_release(fx.s, fx.qids[0]), 0);
	sched_arm(fx.s);
	CHECK_MSG(fx_run(&fx, pred_settled), "hold out: never settled after the message's release");
	got = (int)mxsink_long(&sink_a, "len(sink.messages)");
	CHECK_MSG(got == 1 && fx_pending(&fx) == 0,
	    "hold out: released, delivered %d (want 1), %d pending (want 0)", got, fx_pending(&fx));
	check_tally(fx.s, no, 2);
	fx_fini(&fx);
}

/* ------------------------------------------------------------------ */
/* The queued line: recipients behind a destination's window keep no job. */

/* The most jobs seen at once that were not in flight (made, not started). */
static unsigned jobs_idle_max;

static void
jobs_idle_look(struct fx *fx)
{
	unsigned n = fx_njobs(fx);

	if (n > fx->s->nactive && n - fx->s->nactive > jobs_idle_max)
		jobs_idle_max = n - fx->s->nactive;
}

static bool
pred_settled_idle(struct fx *fx)
{
	jobs_idle_look(fx);
	return pred_settled(fx);
}

/* One attempt delivering, the other four behind the window (test_queued_no_job). */
static bool
pred_four_queued(struct fx *fx)
{
	struct sched_dest *d = fx_dest(fx, "route:a.test");

	jobs_idle_look(fx);
	return pred_delivering(fx) && d != NULL && d->nbacklog + d->inflight == 5;
}

/* a.test's destination is up again (test_release_paced). */
static bool
pred_up_idle(struct fx *fx)
{
	struct sched_dest *d = fx_dest(fx, "route:a.test");

	jobs_idle_look(fx);
	return d != NULL && d->state == SCHED_DEST_UP;
}

/*
 * SCHEDULING.md, Memory: five messages to a new destination (window 1)
 * whose first attempt hangs: one job, in flight; the other four recipients
 * wait in its queued line with no job, shown queued for it (relayctl queue
 * show, the tallies).  A flush of one of them takes it out of the line and
 * starts it past the window (the flush's one attempt); a delete of another
 * takes it out of the line.
 */
static void
test_queued_no_job(int no)
{
	struct fx fx;
	struct sched_dest *d;
	struct sched_tally t;

	sinks_reset("a");
	mxsink_exec(&sink_a, "sink.script(greeting='HANG')");
	fx_init(&fx, &route_share, no);
	jobs_idle_max = 0;
	fx_submit(&fx, 5);
	CHECK_MSG(fx_run(&fx, pred_four_queued), "queued: never one attempt and four behind it");
	d = fx_dest(&fx, "route:a.test");
	CHECK(d != NULL);
	if (d == NULL)
		exit(check_done());
	sched_tally(fx.s, &t);
	CHECK_MSG(d->state == SCHED_DEST_NEW && d->inflight == 1 && d->nbacklog == 4 &&
	    fx_njobs(&fx) == 1 && jobs_idle_max == 0 && t.rcpts_queued == 4 && t.rcpts_active == 1,
	    "queued: inflight %u, %zu queued, %u jobs (%u idle at most), tally queued %zu active %zu "
	    "(want 1, 4, 1 job, none idle, 4, 1)", d->inflight, d->nbacklog, fx_njobs(&fx),
	    jobs_idle_max, t.rcpts_queued, t.rcpts_active);
	CHECK(fx_rcpt_is(&fx, fx.qids[4], 0, SCHED_RCPT_QUEUED, "route:a.test"));
	/* their first attempt is only postponed: it is still to be sent from
	 * the in-memory image, not read back from the file */
	for (int k = 1; k < 5; k++) {
		struct sched_msg *sm = sched_msg_lookup(fx.s, fx.qids[k]);

		CHECK_MSG(sm != NULL && sm->m->image != NULL, "queued: message %d lost its image", k);
	}
	check_tally(fx.s, no, 0);

	CHECK_INT(sched_flush(fx.s, fx.qids[4]), 1);
	CHECK_MSG(d->inflight == 2 && d->nbacklog == 3 && fx_njobs(&fx) == 2,
	    "queued: flushed: inflight %u, %zu queued, %u jobs (want 2, 3, 2)", d->inflight,
	    d->nbacklog, fx_njobs(&fx));
	CHECK_INT(sched_delete(fx.s, fx.qids[3]), 0);
	CHECK_MSG(d->nbacklog == 2 && fx.s->nr_backlog == 2 && fx_njobs(&fx) == 2,
	    "queued: deleted: %zu queued (%zu), %u jobs (want 2, 2)", d->nbacklog,
	    fx.s->nr_backlog, fx_njobs(&fx));
	check_tally(fx.s, no, 1);
	/* a hold of another takes it out of the line: its first attempt is
	 * not merely postponed any more, and a held message keeps no image
	 * (it may stay held for days, within the images' 4 MiB for all) */
	CHECK_INT(sched_hold(fx.s, fx.qids[2]), 0);
	{
		struct sched_msg *sm = sched_msg_lookup(fx.s, fx.qids[2]);

		CHECK_MSG(d->nbacklog == 1 && sm != NULL && sm->m->held && sm->m->image == NULL,
		    "queued: held: %zu queued (want 1), held %d, image %s (want none)", d->nbacklog,
		    sm != NULL && sm->m->held, sm != NULL && sm->m->image != NULL ? "kept" : "none");
	}
	check_tally(fx.s, no, 2);
	mxsink_exec(&sink_a, "sink.reset_script()");
	fx_fini(&fx);
}

/* An outage of a.test: nm messages of nr recipients there, in jobs of max,
 * every recipient waiting for it and in no job.  Its destination. */
static struct sched_dest *
fx_outage(struct fx *fx, int no, int nm, int nr, int max)
{
	struct sched_dest *d;

	sinks_reset("");
	mxsink_exec(&sink_r, "sink.reset(); sink.reset_script()");
	fx_init(fx, &route_share, no);
	fx->conf->router.max_rcpts_per_txn = (unsigned)max;
	for (int k = 0; k < nm; k++)
		fx_submit_many(fx, nr, nr);
	CHECK_MSG(fx_run(fx, pred_settled), "outage: never settled");
	d = fx_dest(fx, "route:a.test");
	CHECK(d != NULL && d->state == SCHED_DEST_DOWN && d->nwaiting == (size_t)(nm * nr) &&
	    fx_njobs(fx) == 0);
	if (d == NULL)
		exit(check_done());
	return d;
}

/*
 * SCHEDULING.md, Outages: the release of a long waiting line (16 messages
 * of 32 recipients, 512, in jobs of max_rcpts_per_txn 4) makes no job per
 * message: its recipients move to the queued line, and a job is made only
 * when the window has room (at most the window's jobs at any time, every
 * one in flight), grouped as the dispatch groups them, until all are
 * delivered in 128 transactions of 4.
 */
static void
test_release_paced(int no)
{
	enum { NM = 16, NR = 32, MAX = 4 };
	struct fx fx;
	struct sched_dest *d;
	size_t queued;
	unsigned jobs;
	long ntx, nr, least, most;

	d = fx_outage(&fx, no, NM, NR, MAX);
	/* the probe (the first 4) is delivered: the rest is released */
	sink_set_up(&sink_a, 'a', "a");
	fx.clock = fx.base + 30 * M;
	sched_arm(fx.s);
	jobs_idle_max = 0;
	CHECK_MSG(fx_run(&fx, pred_up_idle), "release: the probe never got through");
	queued = d->nbacklog;
	jobs = fx_njobs(&fx);
	CHECK_MSG(d->window == SCHED_RAMP_START && jobs == SCHED_RAMP_START &&
	    fx.s->nactive == SCHED_RAMP_START && queued == NM * NR - (1 + SCHED_RAMP_START) * MAX &&
	    d->nwaiting == 0,
	    "release: window %u, %u jobs, %u active, %zu queued (want %d, %d, %d, %d)", d->window,
	    jobs, fx.s->nactive, queued, SCHED_RAMP_START, SCHED_RAMP_START, SCHED_RAMP_START,
	    NM * NR - (1 + SCHED_RAMP_START) * MAX);
	check_tally(fx.s, no, 0);
	CHECK_MSG(fx_run(&fx, pred_settled_idle), "release: never settled after the release");
	ntx = sink_got(&sink_a);
	nr = mxsink_long(&sink_a, "sum(len(m.rcpts) for m in sink.messages)");
	least = mxsink_long(&sink_a, "min(len(m.rcpts) for m in sink.messages)");
	most = mxsink_long(&sink_a, "max(len(m.rcpts) for m in sink.messages)");
	CHECK_MSG(ntx == NM * NR / MAX && nr == NM * NR && least == MAX && most == MAX &&
	    fx_pending(&fx) == 0 && jobs_idle_max == 0,
	    "release: a got %ld transactions of %ld recipients (%ld to %ld each), %d pending, "
	    "%u jobs idle at most (want %d of %d, %d each, 0, 0)", ntx, nr, least, most,
	    fx_pending(&fx), jobs_idle_max, NM * NR / MAX, NM * NR, MAX);
	check_tally(fx.s, no, 1);
	fx_fini(&fx);
}

#ifdef RELAY_TEST_HOOKS
static bool
pred_written(struct fx *fx)
{
	return queue_ops_unwritten(fx->q) == 0;
}

/* Nothing in flight, and a.test's queued line empty or held back by the writer. */
static bool
pred_pump_stopped(struct fx *fx)
{
	struct sched_dest *d = fx_dest(fx, "route:a.test");

	return fx->s->nactive == 0 && d != NULL && d->state == SCHED_DEST_UP &&
	    (d->nbacklog == 0 || fx->s->pump_paced);
}

/* Every recipient delivered, nothing due or in flight. */
static bool
pred_all_done(struct fx *fx)
{
	return pred_settled(fx) && fx_pending(fx) == 0;
}

/*
 * SCHEDULING.md, Outages: a released backlog goes no faster than the
 * queue's writer writes its delivery records and removals.  The same
 * release as test_release_paced (512 recipients in jobs of 4), with the
 * queue's sync thread held, so that no record is ever written, and the
 * pumps' bound lowered to 16: the pump stops after the jobs that fill the
 * writer's backlog (the attempts in flight end; the rest of the line waits,
 * in no job), and the whole line goes once the writer goes on.  Without
 * the bound every recipient was delivered while none of their records was
 * written.  stop: a shutdown while the pump waits cancels the wait and
 * completes once the writer goes on.
 */
static void
test_release_writer_paced(int no, bool stop)
{
	enum { NM = 16, NR = 32, MAX = 4, OPS = 16 };
	struct fx fx;
	struct sync_hold g;
	struct sched_dest *d;
	long ntx;

	memset(&g, 0, sizeof(g));
	if (uv_mutex_init(&g.mu) != 0 || uv_cond_init(&g.cv) != 0)
		exit(2);
	d = fx_outage(&fx, no, NM, NR, MAX);
	CHECK_MSG(fx_run(&fx, pred_written), "writer paced: the deferrals never written");

	fx.s->pump_ops_max = OPS;
	queue_test_set_sync_fn(fx.q, sync_hold_fn, &g);
	sink_set_up(&sink_a, 'a', "a");
	fx.clock = fx.base + 30 * M;
	sched_arm(fx.s);
	CHECK_MSG(fx_run(&fx, pred_pump_stopped), "writer paced: the release never stopped");
	ntx = sink_got(&sink_a);
	/* the probe, the ramp's first jobs, and those started before their
	 * records reached OPS: far from the line's 128 transactions */
	CHECK_MSG(fx.s->pump_paced && d->nbacklog >= NM * NR - 16 * MAX && ntx <= 16 &&
	    queue_ops_unwritten(fx.q) >= OPS && fx_njobs(&fx) == 0,
	    "writer paced: paced %d, %zu queued, a got %ld transactions, %llu records unwritten, "
	    "%u jobs (want paced, >= %d queued, <= 16, >= %d, no job)", fx.s->pump_paced,
	    d->nbacklog, ntx, (unsigned long long)queue_ops_unwritten(fx.q), fx_njobs(&fx),
	    NM * NR - 16 * MAX, OPS);
	check_tally(fx.s, no, 0);
	if (stop) {
		sched_shutdown(fx.s, fx_done_cb, &fx.shut);
		CHECK_MSG(!fx.s->pump_paced, "writer paced: the shutdown left the wait out");
		sync_hold_open(&g);
		fx_fini_shut(&fx);
	} else {
		sync_hold_open(&g);
		CHECK_MSG(fx_run(&fx, pred_all_done), "writer paced: the release never ended");
		ntx = sink_got(&sink_a);
		d = fx_dest(&fx, "route:a.test");      /* up and empty: forgotten */
		CHECK_MSG(ntx == NM * NR / MAX && fx_pending(&fx) == 0 && !fx.s->pump_paced &&
		    (d == NULL || d->nbacklog == 0),
		    "writer paced: a got %ld transactions, %d pending, paced %d (want %d, 0, no)", ntx,
		    fx_pending(&fx), fx.s->pump_paced, NM * NR / MAX);
		check_tally(fx.s, no, 1);
		fx_fini(&fx);
	}
	uv_mutex_destroy(&g.mu);
	uv_cond_destroy(&g.cv);
}
static unsigned many_active_max;        /* pred_many_*: the most jobs in flight seen */
static uint64_t many_unwritten_max;     /* and the most records and removals unwritten */

static void
many_watch(struct fx *fx)
{
	if (fx->s->nactive > many_active_max)
		many_active_max = fx->s->nactive;
	if (queue_ops_unwritten(fx->q) > many_unwritten_max)
		many_unwritten_max = queue_ops_unwritten(fx->q);
}

static bool
pred_many_done(struct fx *fx)
{
	many_watch(fx);
	return pred_all_done(fx);
}

/* Nothing in flight, every message in (held back: the writer is stopped). */
static bool
pred_many_stopped(struct fx *fx)
{
	many_watch(fx);
	return fx->ncommitted == fx->nsubmitted && fx->s->nactive == 0 && fx->s->pump_paced &&
	    !TAILQ_EMPTY(&fx->s->held);
}

/*
 * SCHEDULING.md, Outages: a backlog over many destinations (DESTS of them,
 * new, each admitting one job) starts no more jobs in all than the cap
 * (jobs_max, lowered to CAP), in turn: every message is delivered, and
 * never more than CAP attempts are out.  Without the cap each destination
 * started its job at once (DESTS in flight).  writer: the queue's sync
 * thread is held and the pumps' bound lowered to OPS: the destinations
 * held back wait in the ring while the writer's backlog stays within OPS
 * and the records of the CAP jobs that were out (without the cap every
 * destination's job issued its records: 2 per message), and all of them
 * resume and deliver once the writer goes on.  flush: every destination
 * is down (its recipients wait) when `relayctl queue flush --all` forces
 * an attempt of each: no more than CAP of them go out at once, the others
 * make their probes in turn (without the cap every destination's forced
 * attempt started at once).  deflt: jobs_max left unset, the default cap
 * (2 per router.max_connections, at least SCHED_JOBS_MIN) holds: more
 * destinations than it, one message each, never more than it out (with no
 * cap by default all of them were).
 */
enum many_mode { MANY_ADMIT, MANY_WRITER, MANY_FLUSH, MANY_DEFAULT };

static void
test_release_many_dests(int no, enum many_mode mode)
{
	bool writer = mode == MANY_WRITER, deflt = mode == MANY_DEFAULT;
	enum { OPS = 4 };
	const int DESTS = deflt ? SCHED_JOBS_MIN + 44 : 16, PER = deflt ? 1 : 4;
	unsigned CAP = 4;
	struct fx fx;
	struct sync_hold g;
	char dom[32];
	long ntx;

	memset(&g, 0, sizeof(g));
	if (uv_mutex_init(&g.mu) != 0 || uv_cond_init(&g.cv) != 0)
		exit(2);
	/* writer: every first attempt deferred (451 to RCPT), their retries due at once */
	sinks_reset(writer ? "A" : mode == MANY_FLUSH ? "" : "a");
	mxsink_exec(&sink_r, "sink.reset(); sink.reset_script()");
	fx_many_dests = DESTS;
	fx_init(&fx, &route_share, no);
	fx_many_dests = 0;
	if (deflt) {
		CAP = 2 * fx.s->conf->router.max_connections;
		if (CAP < SCHED_JOBS_MIN)
			CAP = SCHED_JOBS_MIN;
		CHECK_MSG(sched_jobs_max(fx.s) == CAP && CAP < (unsigned)DESTS,
		    "many dests: default cap %u (want %u, below %d)", sched_jobs_max(fx.s), CAP, DESTS);
	}
	fx.s->jobs_max = mode == MANY_FLUSH || deflt ? 0 : CAP;
	many_active_max = 0;
	many_unwritten_max = 0;
	for (int k = 0; k < DESTS; k++) {
		snprintf(dom, sizeof(dom), "d%d.test", k);
		fx_submit_to(&fx, PER, dom);
	}
	if (mode == MANY_FLUSH) {
		struct sched_dest *d;

		CHECK_MSG(fx_run(&fx, pred_settled), "many dests: the outage never settled");
		snprintf(dom, sizeof(dom), "route:d%d.test", DESTS - 1);
		d = fx_dest(&fx, dom);
		CHECK_MSG(d != NULL && d->state == SCHED_DEST_DOWN && fx.s->nactive == 0,
		    "many dests: %s not down", dom);
		sink_set_up(&sink_a, 'a', "a");
		fx.s->jobs_max = CAP;
		many_active_max = 0;
		CHECK(sched_flush(fx.s, NULL) > 0);
	}
	if (writer) {
		CHECK_MSG(fx_run(&fx, pred_settled) && fx_run(&fx, pred_written),
		    "many dests: the first attempts never settled");
		mxsink_exec(&sink_a, "sink.reset()");
		sink_set_up(&sink_a, 'a', "a");
		fx.s->pump_ops_max = OPS;
		queue_test_set_sync_fn(fx.q, sync_hold_fn, &g);
		many_active_max = 0;
		many_unwritten_max = 0;
		fx.clock = fx.base + 1 * H;
		sched_arm(fx.s);
		CHECK_MSG(fx_run(&fx, pred_many_stopped), "many dests: the retries never held back");
		CHECK_MSG(many_active_max <= CAP && many_unwritten_max <= OPS + 2 * CAP,
		    "many dests, writer held: %u jobs in flight, %llu records unwritten at most "
		    "(want <= %u, <= %u)", many_active_max, (unsigned long long)many_unwritten_max,
		    CAP, OPS + 2 * CAP);
		check_tally(fx.s, no, 0);
		sync_hold_open(&g);
	}
	CHECK_MSG(fx_run(&fx, pred_many_done), "many dests: the backlog never delivered");
	ntx = sink_got(&sink_a);
	CHECK_MSG(ntx == DESTS * PER && fx_pending(&fx) == 0 && many_active_max <= CAP &&
	    TAILQ_EMPTY(&fx.s->held),
	    "many dests: a got %ld transactions, %d pending, %u jobs in flight at most "
	    "(want %d, 0, <= %u)", ntx, fx_pending(&fx), many_active_max, DESTS * PER, CAP);
	check_tally(fx.s, no, 1);
	fx_fini(&fx);
	uv_mutex_destroy(&g.mu);
	uv_cond_destroy(&g.cv);
}

/* r holds a connection open (greeting='HANG'), its thread started.  The
 * tests then abort r's connections without sink.drop_connections(), which
 * joins their threads and fails on one not started yet (a report's
 * connection coming in meanwhile). */
static bool
pred_r_hanging(struct fx *fx)
{
	return mxsink_long(&sink_r, "int(len(sink.sessions) >= 1 and "
	    "all(t.ident is not None for t in list(sink._conns.values())))") == 1;
}

static int fresh_want;          /* pred_fresh_*: the destination d<k>.test looked at */

/* d<fresh_want>.test is held in the ring. */
static bool
pred_fresh_held(struct fx *fx)
{
	char name[32];
	struct sched_dest *d;

	snprintf(name, sizeof(name), "route:d%d.test", fresh_want);
	d = fx_dest(fx, name);
	return fx->ncommitted == fx->nsubmitted && d != NULL && d->held;
}

/* a has fresh_want transactions. */
static bool
pred_fresh_got(struct fx *fx)
{
	return fx->s->nactive == 0 && sink_got(&sink_a) >= fresh_want;
}

/* A fixture of ndests extra destinations whose cap on jobs in flight is 1,
 * that one slot held by an attempt to x.test hanging at the greeting (the
 * rest wait in the held ring until the test lets it go). */
static void
fx_one_slot_hanging(struct fx *fx, int no, int ndests, const char *what)
{
	sinks_reset("a");
	mxsink_exec(&sink_r, "sink.reset(); sink.script(greeting='HANG')");
	fx_many_dests = ndests;
	fx_init(fx, &route_share, no);
	fx_many_dests = 0;
	fx->s->jobs_max = 1;
	fx_submit_to(fx, 1, "x.test");
	CHECK_MSG(fx_run(fx, pred_delivering), "%s: x.test's attempt never out", what);
	CHECK_MSG(fx_run(fx, pred_r_hanging), "%s: x.test's attempt never hangs", what);
}

/*
 * SCHEDULING.md, "A cap on jobs in flight": fresh mail waits for the next
 * free slot, and fresh mail that came earlier is not passed by fresh mail
 * that came later (first come, first served among the fresh).  Cap 1, the
 * one slot held by an attempt that hangs (x.test, at r); then one message
 * each to d1, d2, d3, one after the other, each held fresh in turn; the
 * hanging attempt ends: d1, d2, d3 go out in the order they came.  Put at
 * the ring's front one by one, they went out d3, d2, d1: under a steady
 * stream of fresh mail for other destinations the first of them waited as
 * long as the stream lasted.  A held destination whose message is deleted
 * leaves the ring as it is forgotten.
 */
static void
test_fresh_in_order(int no)
{
	enum { DESTS = 4 };
	struct fx fx;
	char dom[32];
	const char *order;

	fx_one_slot_hanging(&fx, no, DESTS, "fresh in order");
	for (int k = 1; k < DESTS; k++) {
		snprintf(dom, sizeof(dom), "d%d.test", k);
		fx_submit_to(&fx, 1, dom);
		fresh_want = k;
		CHECK_MSG(fx_run(&fx, pred_fresh_held), "fresh in order: %s never held", dom);
	}
	/* relayctl delete of a held destination's only message: it leaves the
	 * ring as it is freed (ASan: no use after free when the ring turns) */
	fx_submit_to(&fx, 1, "d0.test");
	fresh_want = 0;
	CHECK_MSG(fx_run(&fx, pred_fresh_held), "fresh in order: d0.test never held");
	CHECK_INT(sched_delete(fx.s, fx.qids[DESTS]), 0);
	CHECK_MSG(fx_dest(&fx, "route:d0.test") == NULL && fx.s->held_fresh != NULL &&
	    strcmp(fx.s->held_fresh->name, "route:d3.test") == 0,
	    "fresh in order: d0.test not forgotten when its message was deleted");
	mxsink_exec(&sink_r, "sink.reset_script(); [c.abort() for c in sink._conns.copy()]");
	fresh_want = DESTS - 1;
	CHECK_MSG(fx_run(&fx, pred_fresh_got), "fresh in order: the mail never delivered");
	order = mxsink_eval(&sink_a,
	    "','.join(m.rcpt_addrs[0].split('@')[1] for m in sink.messages)");
	CHECK_MSG(strcmp(order, "d1.test,d2.test,d3.test") == 0,
	    "fresh in order: delivered %s (want d1.test,d2.test,d3.test)", order);
	fx_fini(&fx);
}

/*
 * SCHEDULING.md, "A cap on jobs in flight": while fresh destinations and
 * backlogs are both held, the slots go to them in turn: a stream of fresh
 * mail for other destinations does not starve a backlog, and fresh mail
 * still waits for at most one backlog job per fresh one ahead of it (and
 * one before them).  Cap 1,
 * the one slot held by an attempt that hangs (x.test, at r); NB messages
 * for d0 (its line), then one message each for d1 ... dFRESH, each held
 * fresh as it comes: the stream as the ring sees it, each arrival before
 * the slot frees.  The hanging attempt ends: d0's first job (fresh), then
 * its line (a backlog at the ring's back) and the fresh ones alternate.
 * Fresh ones always first, d0's line waited for the whole stream: d0,
 * d1 ... dFRESH, then d0's rest (a stream as long as it lasts, none).
 */
static void
test_backlog_turns(int no)
{
	enum { FRESH = 4, NB = 8 };
	struct fx fx;
	char dom[32], order[256];
	const char *p;
	int n = 0, nfresh = 0, nb = 0, nb_fresh = 0, late = -1;

	fx_one_slot_hanging(&fx, no, FRESH + 1, "backlog turns");
	fx_submit_to(&fx, NB, "d0.test");
	fresh_want = 0;
	CHECK_MSG(fx_run(&fx, pred_fresh_held), "backlog turns: d0.test never held");
	for (int k = 1; k <= FRESH; k++) {
		snprintf(dom, sizeof(dom), "d%d.test", k);
		fx_submit_to(&fx, 1, dom);
		fresh_want = k;
		CHECK_MSG(fx_run(&fx, pred_fresh_held), "backlog turns: %s never held", dom);
	}
	mxsink_exec(&sink_r, "sink.reset_script(); [c.abort() for c in sink._conns.copy()]");
	fresh_want = NB + FRESH;
	CHECK_MSG(fx_run(&fx, pred_fresh_got), "backlog turns: the mail never delivered");
	/* the destinations' numbers in the order delivered: "0,1,0,2,..." */
	snprintf(order, sizeof(order), "%s", mxsink_eval(&sink_a,
	    "','.join(m.rcpt_addrs[0].split('@')[1][1:].split('.')[0] for m in sink.messages)"));
	for (p = order; *p != '\0'; n++) {
		char *end;
		long k = strtol(p, &end, 10);

		if (k == 0)
			nb++;
		else {
			/* the k-th fresh after d0's first job: behind k fresh
			 * jobs (d0's first, d1 ... d<k-1>) and at most one of
			 * d0's line after each */
			nfresh++;
			if (k != nfresh || n > 2 * k)
				late = n;
			nb_fresh = nb;
		}
		p = *end == ',' ? end + 1 : end;
	}
	CHECK_MSG(n == NB + FRESH && nfresh == FRESH && late < 0 && nb_fresh >= FRESH,
	    "backlog turns: delivered %s (destinations' numbers): %d, %d fresh, one late at %d, "
	    "%d of d0's jobs before the last fresh one (want %d, %d, none late, >= %d)", order,
	    n, nfresh, late, nb_fresh, NB + FRESH, FRESH, FRESH);
	fx_fini(&fx);
}

/* Nothing in flight and d1.test held in the ring. */
static bool
pred_d1_held(struct fx *fx)
{
	struct sched_dest *d = fx_dest(fx, "route:d1.test");

	return d != NULL && d->held;
}

/*
 * SCHEDULING.md, "A cap on jobs in flight": a flush's forced attempt that
 * waits for room in all is still forced when its turn comes (it ignores
 * host backoff).  d1 (not down: its message deferred by a 451) and d2 share a
 * host that d2's attempt marked down (421); d2's message is deleted, so
 * no probe of d2 clears it.  With the one slot (cap 1) held by an attempt
 * that hangs, `flush --all` forces an attempt of d1: it waits in the ring,
 * and when the slot frees it reaches the host and delivers.  Taken from the
 * ring as an ordinary job it skipped the host (down) and d1 went down
 * until the host's backoff ended.
 */
static void
test_flush_forced_held(int no)
{
	struct fx fx;
	struct sched_dest *d;
	long ntx;

	sinks_reset("A");
	mxsink_exec(&sink_r, "sink.reset(); sink.reset_script()");
	fx_many_dests = 3;
	fx_init(&fx, &route_share, no);
	fx_many_dests = 0;
	fx_submit_to(&fx, 1, "d1.test");
	CHECK_MSG(fx_run(&fx, pred_settled), "flush held: d1 never settled");
	sink_set_up(&sink_a, 'a', "");
	fx_submit_to(&fx, 1, "d2.test");
	CHECK_MSG(fx_run(&fx, pred_settled), "flush held: d2 never settled");
	d = fx_dest(&fx, "route:d2.test");
	CHECK_MSG(d != NULL && d->state == SCHED_DEST_DOWN, "flush held: d2 not down");
	d = fx_dest(&fx, "route:d1.test");
	CHECK_MSG(d == NULL || d->state != SCHED_DEST_DOWN, "flush held: d1 down");
	CHECK_INT(sched_delete(fx.s, fx.qids[1]), 0);
	sink_set_up(&sink_a, 'a', "a");
	mxsink_exec(&sink_a, "sink.reset()");
	mxsink_exec(&sink_r, "sink.script(greeting='HANG')");
	fx.s->jobs_max = 1;
	fx_submit_to(&fx, 1, "x.test");
	CHECK_MSG(fx_run(&fx, pred_delivering), "flush held: x.test's attempt never out");
	CHECK_MSG(fx_run(&fx, pred_r_hanging), "flush held: x.test's attempt never hangs");
	CHECK(sched_flush(fx.s, NULL) > 0);
	CHECK_MSG(fx_run(&fx, pred_d1_held), "flush held: d1 never held");
	mxsink_exec(&sink_r, "sink.reset_script(); [c.abort() for c in sink._conns.copy()]");
	CHECK_MSG(fx_run(&fx, pred_settled), "flush held: never settled after the flush");
	ntx = sink_got(&sink_a);
	d = fx_dest(&fx, "route:d1.test");
	CHECK_MSG(ntx == 1 && (d == NULL || d->state != SCHED_DEST_DOWN),
	    "flush held: a got %ld transactions, d1 %s (want 1, not down)", ntx,
	    d != NULL && d->state == SCHED_DEST_DOWN ? "down" : "not down");
	fx_fini(&fx);
}

/* An attempt hangs at a (after its RCPT), and one at r. */
static bool
pred_a_r_hanging(struct fx *fx)
{
	return fx->s->nactive == 2 && pred_r_hanging(fx) && mxsink_long(&sink_a,
	    "int(any(c.upper().startswith('RCPT') for _, c in sink.commands))") == 1;
}

/* Every message in, d1.test's second in its queued line. */
static bool
pred_d1_queued(struct fx *fx)
{
	struct sched_dest *d = fx_dest(fx, "route:d1.test");

	return fx->ncommitted == fx->nsubmitted && d != NULL && d->nbacklog == 1;
}

/*
 * Cap 2: d1's first message in an attempt that hangs at a (its RCPT),
 * x.test's at r; d1's second message queued behind its window (1); `flush`
 * of it forces an attempt, held for room in all (d->next_force).
 */
static void
fx_flush_held(struct fx *fx, int no, const char *what)
{
	struct sched_dest *d;

	sinks_reset("a");
	mxsink_exec(&sink_a, "sink.script(rcpt={'rcpt0@d1.test': 'HANG'})");
	mxsink_exec(&sink_r, "sink.reset(); sink.script(greeting='HANG')");
	fx_many_dests = 2;
	fx_init(fx, &route_share, no);
	fx_many_dests = 0;
	fx->s->jobs_max = 2;
	fx_submit_to(fx, 1, "d1.test");
	fx_submit_to(fx, 1, "x.test");
	CHECK_MSG(fx_run(fx, pred_a_r_hanging), "%s: the attempts never hang", what);
	fx_submit_to(fx, 1, "d1.test");
	CHECK_MSG(fx_run(fx, pred_d1_queued), "%s: d1's second never queued", what);
	CHECK_INT(sched_flush(fx->s, fx->qids[2]), 1);
	d = fx_dest(fx, "route:d1.test");
	CHECK_MSG(d != NULL && d->next_force && d->held && d->nbacklog == 1,
	    "%s: the flush's attempt not held for room", what);
}

/*
 * SCHEDULING.md, "A cap on jobs in flight": a flush's forced attempt held
 * for room in all (d->next_force) is forgotten when the destination's
 * queued line empties otherwise, by a delete (hold: a hold of the
 * message): d1's next job, much later, must not ignore host backoff once
 * for a flush that is long over.  Cap 2: d1's first message in an attempt
 * that hangs at a (its RCPT), x.test's at r; d1's second message queued
 * behind its window (1); `flush` of it forces an attempt, held for room;
 * the message is deleted (held): d1 (alive: its attempt is out) has no
 * forced job to come.  Kept, the force went to d1's next job, whenever.
 */
static void
test_flush_forced_emptied(int no, bool hold)
{
	struct fx fx;
	struct sched_dest *d;

	fx_flush_held(&fx, no, "forced emptied");
	if (hold)
		CHECK_INT(sched_hold(fx.s, fx.qids[2]), 0);
	else
		CHECK_INT(sched_delete(fx.s, fx.qids[2]), 0);
	d = fx_dest(&fx, "route:d1.test");
	CHECK_MSG(d != NULL && d->inflight == 1 && d->nbacklog == 0 && !d->next_force,
	    "forced emptied (%s): d1 %s, its next job %s", hold ? "hold" : "delete",
	    d != NULL ? "alive" : "forgotten",
	    d != NULL && d->next_force ? "forced" : "not forced");
	mxsink_exec(&sink_a, "sink.reset_script(); [c.abort() for c in sink._conns.copy()]");
	mxsink_exec(&sink_r, "sink.reset_script(); [c.abort() for c in sink._conns.copy()]");
	fx_fini(&fx);
}

/*
 * SCHEDULING.md, Lifetime: at most ROUTER_REPORTS_MAX reports are being
 * queued at once (s->reports_max: 2 here), each a queue transaction that
 * holds a file until its commit; the others wait their turn.  Ten messages
 * waiting for a down a.test are bounced by the administrator one after the
 * other: their F records become durable together, and their reports would
 * all start in that turn.  Every one is sent, never more than two at once,
 * and the queue is empty after.  Without the cap the peak was ten.
 */
static void
test_reports_capped(int no)
{
	enum { N = 10 };
	struct fx fx;

	(void)fx_outage(&fx, no, N, 1, 1);
	fx.s->reports_max = 2;
	fx.want_reports = N;
	for (int k = 0; k < N; k++)
		CHECK_INT(sched_bounce(fx.s, fx.qids[k]), 0);
	CHECK_MSG(fx_run(&fx, pred_settled), "reports capped: never settled");
	CHECK_MSG((int)fx.stats.ndr_sent == N && fx_pending(&fx) == 0 &&
	    fx.s->nreports_peak == 2 && fx.s->report_wait_n == 0,
	    "reports capped: %d reports, %d pending, at most %u at once, %zu waiting "
	    "(want %d, 0, 2, 0)", (int)fx.stats.ndr_sent, fx_pending(&fx), fx.s->nreports_peak,
	    fx.s->report_wait_n, N);
	fx_fini(&fx);
}

/* The first delay warning in flight, the others waiting for room. */
static bool
pred_warn_waits(struct fx *fx)
{
	return fx->s->nreports == 1 && fx->s->report_wait_n > 0;
}

/*
 * SCHEDULING.md, Lifetime: a message whose report waits for room sleeps
 * until sched_report_pump runs it.  Four messages waiting for a down
 * a.test pass their delay warning together with room for one report: the
 * three waiting are not due (without it their wake stayed at the warning
 * time, in the past, and the timer ran them again and again, up to 4,096
 * a turn, until room came), and every warning is sent in the end.
 */
static void
test_reports_wait_asleep(int no)
{
	enum { N = 4 };
	struct fx fx;
	struct sched_msg *sm;
	int waiting = 0, due = 0;

	(void)fx_outage(&fx, no, N, 1, 1);
	fx.s->reports_max = 1;
	fx.conf->router.delay_warning = 20 * M;
	fx.clock = fx.base + 21 * M;
	TAILQ_FOREACH(sm, &fx.s->msgs, entry)  /* their wake with the warning's time */
		sched_msg_rewake(fx.s, sm, fx.clock);
	sched_arm(fx.s);
	CHECK_MSG(fx_run(&fx, pred_warn_waits), "reports wait: no warning waited");
	TAILQ_FOREACH(sm, &fx.s->msgs, entry) {
		if (!sm->report_wait)
			continue;
		waiting++;
		if (sm->wake.at <= fx.clock)
			due++;
	}
	CHECK_MSG(waiting == N - 1 && due == 0,
	    "reports wait: %d waiting, %d of them due now (want %d, 0)", waiting, due, N - 1);
	fx.want_reports = N;
	CHECK_MSG(fx_run(&fx, pred_settled), "reports wait: never settled");
	CHECK_MSG((int)fx.stats.ndr_sent == N && fx.s->report_wait_n == 0 &&
	    fx.s->nreports_peak == 1,
	    "reports wait: %d warnings, %zu waiting, at most %u at once (want %d, 0, 1)",
	    (int)fx.stats.ndr_sent, fx.s->report_wait_n, fx.s->nreports_peak, N);
	fx_fini(&fx);
}

/* d1.test down (its attempt at a dropped), its next probe held for room. */
static bool
pred_d1_down_held(struct fx *fx)
{
	struct sched_dest *d = fx_dest(fx, "route:d1.test");

	return d != NULL && d->state == SCHED_DEST_DOWN && d->held && !d->probe_out &&
	    fx->s->nactive == 1;
}

/*
 * README, `queue flush`: an attempt now, ignoring a down destination.  A
 * flush's forced attempt held for room (d->next_force) whose destination
 * is found down meanwhile, by an attempt that started before the flush,
 * is still to be made: it becomes d's next probe, forced and due at once
 * (sched_dest_down).  Cap 2: d1's first message in an attempt hanging at a,
 * x.test's at r; d1's second queued; `flush` of it is held for room; the
 * cap drops to 1 and a goes down (greets 421, drops the hanging
 * connection): d1 is down and its probe, forced and due now, waits for the
 * room x.test's attempt holds; x.test's attempt ends: the probe goes to a
 * with the clock where it was.  Before, the line waited for the probe at
 * the end of host backoff, unforced: no connection to a came.
 */
static void
test_flush_forced_down(int no)
{
	struct fx fx;
	struct sched_dest *d;
	long conns;

	fx_flush_held(&fx, no, "forced down");
	fx.s->jobs_max = 1;
	conns = mxsink_long(&sink_a, "sink.connections");
	sink_set_up(&sink_a, 'a', "");         /* greets 421, drops d1's attempt */
	CHECK_MSG(fx_run(&fx, pred_d1_down_held), "forced down: d1 never down with its probe held");
	d = fx_dest(&fx, "route:d1.test");
	CHECK_MSG(d != NULL && d->probe_force && d->probe_at <= fx.clock,
	    "forced down: d1's next probe %s, due in %lld ms (want forced, due now)",
	    d != NULL && d->probe_force ? "forced" : "not forced",
	    d != NULL ? (long long)d->probe_at - (long long)fx.clock : 0LL);
	mxsink_exec(&sink_r, "sink.reset_script(); [c.abort() for c in sink._conns.copy()]");
	CHECK_MSG(fx_run(&fx, pred_settled), "forced down: never settled");
	CHECK_MSG(mxsink_long(&sink_a, "sink.connections") == conns + 1,
	    "forced down: %ld connections to a after the drop (want 1: the flush's probe)",
	    mxsink_long(&sink_a, "sink.connections") - conns);
	d = fx_dest(&fx, "route:d1.test");
	CHECK_MSG(d != NULL && d->state == SCHED_DEST_DOWN && !d->probe_force,
	    "forced down: after the probe d1 %s, its next probe %s (want down, not forced)",
	    d != NULL && d->state == SCHED_DEST_DOWN ? "down" : "not down",
	    d != NULL && d->probe_force ? "forced" : "not forced");
	mxsink_exec(&sink_a, "sink.reset_script(); [c.abort() for c in sink._conns.copy()]");
	fx_fini(&fx);
}

/* a.test's probe out, hanging at a. */
static bool
pred_probe_hanging(struct fx *fx)
{
	struct sched_dest *d = fx_dest(fx, "route:a.test");

	return d != NULL && d->probe_out && fx->s->nactive == 1 &&
	    mxsink_long(&sink_a, "int(len(sink.sessions) >= 1 and "
	    "all(t.ident is not None for t in list(sink._conns.values())))") == 1;
}

/*
 * SCHEDULING.md, Outages: a flush's forced attempt of a down destination
 * (d->probe_force) lasts no longer than the flush.  probe_out: a.test down
 * (two messages waiting), its probe out and hanging at a, no room in all
 * (cap 1): `flush` of the other message finds the probe out, which is the
 * destination's attempt (as flush --all has it, sched_flush): it waits for
 * the probe's outcome, and no later probe is forced for it.  It forced the
 * next probe: one after this probe failed, or, the probe a success, the
 * first of the next outage, whenever.  Else: no probe out, the cap full
 * (x.test's attempt hangs at r): `flush --all` forces a.test's probe,
 * held for room; a.test comes up meanwhile (a cluster node reached it,
 * sched_dest_release): no probe is to come, and the force is forgotten.
 * It was kept for the first probe of the next outage.
 */
static void
test_flush_probe_force(int no, bool probe_out)
{
	struct fx fx;
	struct sched_dest *d;

	d = fx_outage(&fx, no, 2, 1, 1);
	fx.s->jobs_max = 1;
	if (probe_out) {
		mxsink_exec(&sink_a, "sink.reset_script(); sink.script(greeting='HANG')");
		fx.clock = fx.base + 30 * M;
		sched_arm(fx.s);
		CHECK_MSG(fx_run(&fx, pred_probe_hanging), "probe force: the probe never hangs");
		CHECK_INT(sched_flush(fx.s, fx.qids[1]), 1);
		d = fx_dest(&fx, "route:a.test");
		CHECK_MSG(d != NULL && d->probe_out && d->nwaiting == 1 && !d->probe_force,
		    "probe force (probe out): probe %s, %zu waiting, the next probe %s "
		    "(want out, 1, not forced)", d != NULL && d->probe_out ? "out" : "not out",
		    d != NULL ? d->nwaiting : 0, d != NULL && d->probe_force ? "forced" : "not forced");
		mxsink_exec(&sink_a, "sink.reset_script(); [c.abort() for c in sink._conns.copy()]");
	} else {
		mxsink_exec(&sink_r, "sink.script(greeting='HANG')");
		fx_submit_to(&fx, 1, "x.test");
		CHECK_MSG(fx_run(&fx, pred_r_hanging), "probe force: x.test's attempt never hangs");
		CHECK(sched_flush(fx.s, NULL) > 0);
		d = fx_dest(&fx, "route:a.test");
		CHECK_MSG(d != NULL && d->probe_force && d->held && !d->probe_out,
		    "probe force: the flush's probe not held for room");
		CHECK(sched_dest_release(fx.s, "route:a.test"));
		d = fx_dest(&fx, "route:a.test");
		CHECK_MSG(d != NULL && d->state != SCHED_DEST_DOWN && !d->probe_force,
		    "probe force (up meanwhile): a.test %s, its next probe %s (want up, not forced)",
		    d != NULL && d->state == SCHED_DEST_DOWN ? "down" : "up",
		    d != NULL && d->probe_force ? "forced" : "not forced");
		mxsink_exec(&sink_r, "sink.reset_script(); [c.abort() for c in sink._conns.copy()]");
	}
	fx_fini(&fx);
}
#endif

int
main(void)
{
	if (fixture_setup("sched_scenario") != 0)
		return 2;
	mxsink_start(&sink_a, "127.0.0.2", NULL);
	mxsink_start(&sink_b, "127.0.0.3", NULL);
	mxsink_start(&sink_r, "127.0.0.4", NULL);
	for (size_t i = 0; i < RELAY_ARRAY_LEN(scenarios); i++)
		run_scenario(&scenarios[i], (int)i);
	test_route_shared((int)RELAY_ARRAY_LEN(scenarios));
	test_route_set_attempt_out((int)RELAY_ARRAY_LEN(scenarios) + 1, "", 2);
	test_route_set_attempt_out((int)RELAY_ARRAY_LEN(scenarios) + 2, "A", 1);
	test_route_set_window((int)RELAY_ARRAY_LEN(scenarios) + 3);
	test_route_set_second_domain((int)RELAY_ARRAY_LEN(scenarios) + 4);
	test_route_set_restart((int)RELAY_ARRAY_LEN(scenarios) + 5);
	test_route_set_empty_down((int)RELAY_ARRAY_LEN(scenarios) + 6);
	test_route_cache((int)RELAY_ARRAY_LEN(scenarios) + 7);
	test_route_cache_bounded((int)RELAY_ARRAY_LEN(scenarios) + 8);
	test_route_cache_matches_resolve((int)RELAY_ARRAY_LEN(scenarios) + 9);
	test_dispatch_many((int)RELAY_ARRAY_LEN(scenarios) + 10, 8, 5);
	test_dispatch_many((int)RELAY_ARRAY_LEN(scenarios) + 11, 20, 11);
	test_reload_waiting((int)RELAY_ARRAY_LEN(scenarios) + 12);
	test_backlog_wait_attempts((int)RELAY_ARRAY_LEN(scenarios) + 13);
	test_split_max((int)RELAY_ARRAY_LEN(scenarios) + 14, 1, 3, 3);
	test_split_max((int)RELAY_ARRAY_LEN(scenarios) + 15, 2, 5, 3);
	test_split_max((int)RELAY_ARRAY_LEN(scenarios) + 16, 4, 9, 3);
	test_wait_two_dests((int)RELAY_ARRAY_LEN(scenarios) + 17);
	test_probe_takes_group((int)RELAY_ARRAY_LEN(scenarios) + 18);
	test_admin_waiting((int)RELAY_ARRAY_LEN(scenarios) + 19);
	test_hold_attempt_out((int)RELAY_ARRAY_LEN(scenarios) + 20);
	test_queued_no_job((int)RELAY_ARRAY_LEN(scenarios) + 21);
	test_release_paced((int)RELAY_ARRAY_LEN(scenarios) + 22);
#ifdef RELAY_TEST_HOOKS
	test_release_writer_paced((int)RELAY_ARRAY_LEN(scenarios) + 23, false);
	test_release_writer_paced((int)RELAY_ARRAY_LEN(scenarios) + 24, true);
	test_release_many_dests((int)RELAY_ARRAY_LEN(scenarios) + 25, MANY_ADMIT);
	test_release_many_dests((int)RELAY_ARRAY_LEN(scenarios) + 26, MANY_WRITER);
	test_release_many_dests((int)RELAY_ARRAY_LEN(scenarios) + 27, MANY_FLUSH);
	test_release_many_dests((int)RELAY_ARRAY_LEN(scenarios) + 28, MANY_DEFAULT);
	test_fresh_in_order((int)RELAY_ARRAY_LEN(scenarios) + 29);
	test_flush_forced_held((int)RELAY_ARRAY_LEN(scenarios) + 30);
	test_backlog_turns((int)RELAY_ARRAY_LEN(scenarios) + 31);
	test_flush_forced_emptied((int)RELAY_ARRAY_LEN(scenarios) + 32, false);
	test_flush_forced_emptied((int)RELAY_ARRAY_LEN(scenarios) + 33, true);
	test_flush_probe_force((int)RELAY_ARRAY_LEN(scenarios) + 34, true);
	test_flush_probe_force((int)RELAY_ARRAY_LEN(scenarios) + 35, false);
	test_flush_forced_down((int)RELAY_ARRAY_LEN(scenarios) + 36);
	test_reports_capped((int)RELAY_ARRAY_LEN(scenarios) + 37);
	test_reports_wait_asleep((int)RELAY_ARRAY_LEN(scenarios) + 38);
#endif
	mxsink_stop(&sink_a);
	mxsink_stop(&sink_b);
	mxsink_stop(&sink_r);
	fixture_teardown();
	return check_done();
}
