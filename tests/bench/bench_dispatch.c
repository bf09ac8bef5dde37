/*
 * bench_dispatch.c - what the scheduler spends turning queued messages into
 * jobs: loads a queue directory filled by bench_control (relaycore's queue
 * API) with the real scheduler, dispatches every message once (start-up:
 * each message's recipients are grouped by destination into jobs), and
 * stops once nothing is due.  Meant to be run under
 * `valgrind --tool=callgrind` (instruction counts do not depend on the
 * machine's load): sched_msg_dispatch's inclusive count over the messages
 * is the cost per dispatched message.  Not a test.
 *
 *   bench_dispatch -d QUEUE_DIR [-m smarthost|dns] [-r]
 *
 * smarthost (default): router.routes "*" goes to 127.0.0.1:1, where nothing
 * listens: the one destination's first job is refused, the destination is
 * down, and every other recipient waits for it (an outage with a full queue).
 * dns: "*" only sets the TLS of DNS delivery, each domain is a destination
 * of its own, and the resolver asks 127.0.0.1:1 (nothing answers): each
 * destination's first job is resolving when the bench stops, the others are
 * queued behind it (the shutdown cancels the queries).
 * -r: once every message is dispatched, `relayctl route set` for a domain
 * no message goes to (sched_route_set): sched_reroute's inclusive count is
 * the cost of a route change per waiting recipient, none of which changes (the
 * route is written to the queue directory's routes file, as relayctl's is).
 * The queue directory is changed (the attempts' records): copy it first.
 * Owns: its loop, queue, resolver, deliver and scheduler.
 */
#include "router/router_sched_int.h"
#include "queue/queue.h"
#include "dns/dns.h"
#include "deliver/deliver.h"
#include "common/log.h"
#include "common/util.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct bench_dsp {
	uv_loop_t loop;
	uv_timer_t poll;
	struct sched *s;
	int closed;
	bool reroute;                   /* -r */
};

static void
bench_dsp_done(void *arg)
{
	(*(int *)arg)++;
}

/* Nothing due any more (every loaded message dispatched; a deferred one is
 * due later): shut down (attempts still resolving are cancelled, connections
 * in flight finish). */
static void
bench_dsp_poll(uv_timer_t *t)
{
	struct bench_dsp *b = t->data;
	struct sched_tally st;

	if (b->s->nheap > 0 && b->s->heap[0]->at <= util_now_ms())
		return;
	uv_timer_stop(t);
	if (b->reroute) {
		struct buf err = BUF_INIT;

		if (sched_route_set(b->s, "bench-unrelated.invalid", "127.0.0.1:2", &err) != 0)
			fatalx("route set: %s", buf_cstr(&err));
		buf_free(&err);
		printf("route set: every waiting recipient looked at\n");
	}
	sched_tally(b->s, &st);
	printf("dispatched %zu messages: %zu recipients waiting, %zu queued, %zu active, "
	    "%zu due later\n", st.messages, st.rcpts_waiting, st.rcpts_queued, st.rcpts_active,
	    st.rcpts_due);
	uv_stop(&b->loop);
}

/* 127.0.0.1:1, where nothing listens. */
static struct conf_hostport *
bench_dsp_refused(void)
{
	struct conf_hostport *h = xcalloc(1, sizeof(*h));

	h->host = xstrdup("127.0.0.1");
	h->port = 1;
	return h;
}

int
main(int argc, char **argv)
{
	struct bench_dsp b;
	struct sched_deps deps;
	struct relay_stats stats;
	struct buf err = BUF_INIT;
	struct conf_route *r;
	struct conf *c;
	struct queue *q;
	struct dns_resolver *dns;
	struct deliver *d;
	const char *dir = NULL, *mode = "smarthost";
	int ch;

	memset(&b, 0, sizeof(b));
	while ((ch = getopt(argc, argv, "d:m:r")) != -1) {
		switch (ch) {
		case 'd': dir = optarg; break;
		case 'm': mode = optarg; break;
		case 'r': b.reroute = true; break;
		default:
			fprintf(stderr, "usage: bench_dispatch -d QUEUE_DIR [-m smarthost|dns] [-r]\n");
			return 2;
		}
	}
	if (dir == NULL || (strcmp(mode, "smarthost") != 0 && strcmp(mode, "dns") != 0)) {
		fprintf(stderr, "usage: bench_dispatch -d QUEUE_DIR [-m smarthost|dns] [-r]\n");
		return 2;
	}
	log_set_level(LOG_WARNING);
	memset(&stats, 0, sizeof(stats));
	c = conf_new_defaults();
	free(c->queue_dir);
	c->queue_dir = xstrdup(dir);
	c->router.delay_warning = 0;            /* no reports: only the dispatch */
	c->router.max_queue_age = 30 * 86400000ULL;
	c->deliver.tls = CONF_TLS_NONE;
	c->router.routes = xcalloc(1, sizeof(*c->router.routes));
	c->router.nroutes = 1;
	r = &c->router.routes[0];
	r->domain = xstrdup("*");
	if (strcmp(mode, "smarthost") == 0) {
		r->hosts = bench_dsp_refused();
		r->nhosts = 1;
	} else {
		r->has_tls = true;
		r->tls = CONF_TLS_NONE;
		c->router.dns_servers = bench_dsp_refused();
		c->router.ndns_servers = 1;
	}
	uv_loop_init(&b.loop);
	if (queue_open(&b.loop, dir, &q, &err) != 0)
		fatalx("queue_open %s: %s", dir, buf_cstr(&err));
	if ((dns = dns_new(&b.loop, c, &err)) == NULL)
		fatalx("dns_new: %s", buf_cstr(&err));
	d = deliver_new(&b.loop, c);
	memset(&deps, 0, sizeof(deps));
	deps.loop = &b.loop;
	deps.conf = c;
	deps.stats = &stats;
	deps.queue = q;
	deps.mx = dns;
	deps.deliver = d;
	if (sched_new(&deps, &b.s, &err) != 0)
		fatalx("sched_new: %s", buf_cstr(&err));
	if (sched_load(b.s) != 0)
		fatalx("sched_load failed");
	uv_timer_init(&b.loop, &b.poll);
	b.poll.data = &b;
	uv_timer_start(&b.poll, bench_dsp_poll, 10, 10);
	uv_run(&b.loop, UV_RUN_DEFAULT);

	uv_close((uv_handle_t *)&b.poll, NULL);
	sched_shutdown(b.s, bench_dsp_done, &b.closed);
	deliver_shutdown(d, bench_dsp_done, &b.closed);
	while (b.closed < 2)
		uv_run(&b.loop, UV_RUN_ONCE);
	dns_close(dns, bench_dsp_done, &b.closed);
	while (b.closed < 3)
		uv_run(&b.loop, UV_RUN_ONCE);
	sched_free(b.s);
	deliver_free(d);
	queue_close(q, bench_dsp_done, &b.closed);
	uv_run(&b.loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&b.loop) != 0)
		fatalx("loop not closed cleanly");
	conf_unref(c);
	buf_free(&err);
	return 0;
}
