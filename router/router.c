/*
 * router.c - the router module's front: creates the queue, the resolver, the
 * outbound client (deliver) and the scheduler, and wires them together:
 * submit -> queue -> scheduler -> resolver/deliver -> scheduler.  Forwards
 * submission transactions to the queue.
 *
 * Owns: the struct router, its conf reference, the struct queue, the mx
 * resolver, the HTTPS client and the MTA-STS policies (mtasts/, which use
 * both), the deliver module and the scheduler (which owns every queued
 * message once the queue hands it over).  Closing goes top down: the
 * scheduler and deliver, then mtasts, the HTTPS client, the resolver, the
 * queue.
 * Must never: block the loop; touch queue files itself (that is
 * queue.c); decide what to try when (router_sched.c); reach into
 * submit/ or deliver/ structs.
 */
#include "router/router.h"
#include "dns/dns.h"
#include "http/http.h"
#include "mtasts/mtasts.h"
#include "queue/queue.h"
#include "router/router_sched.h"
#include "deliver/deliver.h"
#include "common/log.h"
#include "common/util.h"

#include <stdlib.h>
#include <string.h>

#define ROUTER_MAGIC 0x524f5554u

struct router {
	uint32_t magic;
	uv_loop_t *loop;
	struct conf *conf;
	struct conf *start_conf;         /* the one queue_dir and deliver.thread came from */
	struct relay_stats *stats;
	struct queue *queue;             /* NULL once closed */
	struct dns_resolver *mx;          /* NULL once closed */
	struct http_client *http;        /* NULL once closed */
	struct mtasts *mtasts;           /* NULL once closed */
	struct deliver *deliver;
	struct sched *sched;
	bool shutting_down;
	int pending;                     /* shutdown steps still running */
	void (*shutdown_done)(void *arg);
	void *shutdown_arg;
};

/*
 * Life cycle.
 */

int
router_new(uv_loop_t *loop, struct conf *conf, struct relay_stats *stats,
    struct router **out, struct buf *err)
{
	struct sched_deps deps;
	struct router *r;

	r = xcalloc(1, sizeof(*r));
	r->magic = ROUTER_MAGIC;
	r->loop = loop;
	r->stats = stats;
	if (queue_open(loop, conf->queue_dir, &r->queue, err) != 0) {
		free(r);
		return -1;
	}
	r->conf = conf_ref(conf);
	r->start_conf = conf_ref(conf);
	if ((r->mx = dns_new(loop, conf, err)) == NULL)
		goto fail;
	if ((r->http = http_new(loop, r->mx, err)) == NULL)
		goto fail;
	r->mtasts = mtasts_new(loop, conf, r->mx, r->http);
	/* outbound delivery: on the router's loop, or on a thread of its own */
	r->deliver = conf->deliver.thread ? deliver_new_thread(loop, conf) : deliver_new(loop, conf);
	memset(&deps, 0, sizeof(deps));
	deps.loop = loop;
	deps.conf = conf;
	deps.stats = stats;
	deps.queue = r->queue;
	deps.mx = r->mx;
	deps.deliver = r->deliver;
	deps.mtasts = r->mtasts;
	if (sched_new(&deps, &r->sched, err) != 0)
		goto fail;
	queue_set_new_cb(r->queue, sched_queue_new, r->sched);
	sched_scan_begin(r->sched);     /* loaded by router_scan_start() */
	*out = r;
	return 0;

fail:
	/* Start-up failed: the daemon exits; handles close if the loop runs again. */
	if (r->mtasts != NULL)
		mtasts_close(r->mtasts, NULL, NULL);
	if (r->http != NULL)
		http_close(r->http, NULL, NULL);
	if (r->mx != NULL)
		dns_close(r->mx, NULL, NULL);
	if (r->deliver != NULL)
		deliver_shutdown(r->deliver, NULL, NULL);
	queue_close(r->queue, NULL, NULL);
	conf_unref(r->conf);
	conf_unref(r->start_conf);
	r->magic = 0;
	free(r);
	return -1;
}

void
router_scan_start(struct router *r)
{
	sched_scan_run(r->sched);
}

void
router_reload(struct router *r, struct conf *conf)
{
	struct buf err = BUF_INIT;

	/* against what is in use (opened at start), not the last reload's */
	if (strcmp(conf->queue_dir, r->start_conf->queue_dir) != 0)
		log_event(LOG_WARNING, "reload_ignored", "setting", "queue_dir",
		    "kept", r->start_conf->queue_dir, NULL);
	if (conf->deliver.thread != r->start_conf->deliver.thread)
		log_event(LOG_WARNING, "reload_ignored", "setting", "deliver.thread",
		    "kept", r->start_conf->deliver.thread ? "true" : "false", NULL);
	conf_ref(conf);
	conf_unref(r->conf);
	r->conf = conf;
	if (dns_reload(r->mx, conf, &err) != 0)
		log_event(LOG_ERR, "reload_failed", "module", "resolver", "error", buf_cstr(&err), NULL);
	buf_free(&err);
	mtasts_reload(r->mtasts, conf);
	deliver_reload(r->deliver, conf);
	sched_reload(r->sched, conf);
}

static void
router_queue_closed(void *arg)
{
	struct router *r = arg;

	r->queue = NULL;
	if (r->shutdown_done != NULL)
		r->shutdown_done(r->shutdown_arg);
}

static void
router_dns_closed(void *arg)
{
	struct router *r = arg;

	r->mx = NULL;
	/* Last: the queue, once nothing can record into it any more. */
	queue_close(r->queue, router_queue_closed, r);
}

static void
router_http_closed(void *arg)
{
	struct router *r = arg;

	r->http = NULL;
	dns_close(r->mx, router_dns_closed, r);
}

static void
router_mtasts_closed(void *arg)
{
	struct router *r = arg;

	r->mtasts = NULL;
	http_close(r->http, router_http_closed, r);
}

/* The scheduler (attempts in flight finished) and deliver (connections closed). */
static void
router_step_done(void *arg)
{
	struct router *r = arg;

	if (--r->pending > 0)
		return;
	/* a cache write in flight finishes first */
	mtasts_close(r->mtasts, router_mtasts_closed, r);
}

void
router_shutdown(struct router *r, void (*done)(void *arg), void *arg)
{
	if (r->magic != ROUTER_MAGIC || r->shutting_down)
		fatalx("%s: bad router or shutdown twice", __func__);
	r->shutting_down = true;
	r->shutdown_done = done;
	r->shutdown_arg = arg;
	r->pending = 2;
	sched_shutdown(r->sched, router_step_done, r);
	deliver_shutdown(r->deliver, router_step_done, r);
}

/*
 * After router_shutdown() has called back.  Without a shutdown (start-up
 * failed elsewhere), the modules are told to close and free themselves if
 * the loop runs again.
 */
void
router_set_cluster(struct router *r, struct cluster *cl)
{
	if (r->magic != ROUTER_MAGIC)
		fatalx("%s: bad router", __func__);
	sched_set_cluster(r->sched, cl);
}

void
router_free(struct router *r)
{
	if (r == NULL)
		return;
	if (r->magic != ROUTER_MAGIC)
		fatalx("%s: bad router", __func__);
	if (r->queue != NULL) {
		if (r->shutting_down)
			fatalx("%s: router freed before its shutdown completed", __func__);
		/* Never started to shut down: nothing ran, nothing is in flight. */
		mtasts_close(r->mtasts, NULL, NULL);
		http_close(r->http, NULL, NULL);
		dns_close(r->mx, NULL, NULL);
		deliver_shutdown(r->deliver, NULL, NULL);
		queue_close(r->queue, NULL, NULL);
		r->queue = NULL;
		r->deliver = NULL;      /* freed with the loop's last handles: leaked at exit */
	}
	sched_free(r->sched);
	if (r->deliver != NULL)
		deliver_free(r->deliver);
	conf_unref(r->conf);
	conf_unref(r->start_conf);
	r->magic = 0;
	free(r);
}

/*
 * Submission: the transaction API lives in queue.c.
 */

int
router_txn_begin(struct router *r, const struct envelope *env, struct queue_txn **out)
{
	if (r->shutting_down)
		return RELAY_ECLOSED;
	return queue_txn_begin(r->queue, env, out);
}

/*
 * For the router's own files (router_control, the scheduler's administration).
 */

struct sched *
router_sched(struct router *r)
{
	return r->sched;
}

struct dns_resolver *
router_dns(struct router *r)
{
	return r->mx;
}

struct queue *
router_queue(struct router *r)
{
	return r->queue;
}

bool
router_wait_acked(struct router *r, struct queue_waiter *w)
{
	return r->queue == NULL || queue_wait_acked(r->queue, w);
}

bool
router_wait_published(struct router *r, struct queue_waiter *w)
{
	return r->queue == NULL || queue_wait_published(r->queue, w);
}

void
router_wait_cancel(struct router *r, struct queue_waiter *w)
{
	if (r->queue != NULL)
		queue_wait_cancel(r->queue, w);
}
