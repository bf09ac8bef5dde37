/*
 * router_sched.h - (internal to router/) the scheduler: what to try when,
 * over the durable queue (queue.h), and what the results mean.
 *
 * In memory, rebuilt from queue_scan() at start-up: per message, per
 * recipient "pending (due at T, or in a job)", "delivered", "failed"; per
 * destination (a recipient domain, or a route with fixed hosts) whether it
 * is up, down (its messages wait together for ONE probe) or ramping up after
 * an outage.  Every state change of a message goes to disk through
 * queue_record() before it matters.  One uv_timer serves a min-heap of
 * wake-up times (messages' retries, expiries, delay warnings, destinations'
 * probes).
 *
 * The strategy (what happens when, in an outage) is described in
 * router/SCHEDULING.md.
 */
#ifndef RELAY_ROUTER_SCHED_H
#define RELAY_ROUTER_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"
#include "common/stats.h"
#include "conf/conf.h"
#include "router/router.h"

struct dns_resolver;
struct deliver;
struct mtasts;
struct sched;

/* What the scheduler works with; every pointer is borrowed and outlives it. */
struct sched_deps {
	uv_loop_t *loop;
	struct conf *conf;              /* the scheduler takes its own reference */
	struct relay_stats *stats;
	struct queue *queue;
	struct dns_resolver *mx;
	struct deliver *deliver;
	struct mtasts *mtasts;          /* MTA-STS policies (router.mta_sts), or NULL */
};

/* ------------------------------------------------------------------ */
/* Pure functions (unit-tested from tables). */

/* Outbound ramp after a destination comes back: jobs in flight it may have. */
#define SCHED_RAMP_START   2            /* after an outage (a first probe is 1) */
#define SCHED_RAMP_MAX     256          /* beyond this, no limit of the scheduler's own */

/*
 * Delay before the next attempt after `attempts` ended attempts (>= 1):
 * intervals[attempts - 1], the last interval repeating, plus a jitter of up
 * to a tenth of it drawn from rnd.  n == 0: 5 minutes.
 */
uint64_t sched_retry_delay(const uint64_t *intervals, size_t n, unsigned attempts, uint32_t rnd);
/*
 * When a pending recipient read back from disk is due: at once if it was
 * never tried or was last waiting for a down destination (qr->waiting, from
 * the record's QREC_WAIT_DEST flag, never from its status text: the
 * destination gets probed again), else last attempt + retry delay.
 */
uint64_t sched_rcpt_due(const struct queue_rcpt *qr, const uint64_t *intervals, size_t n,
    uint32_t rnd);
/* The ramp's next window after a success: doubles; 0 (no limit) once past SCHED_RAMP_MAX. */
unsigned sched_ramp_grow(unsigned window);
/*
 * How many jobs a destination may have in flight: its ramp window while the
 * ramp runs (window below the cap), else max(router.max_connections,
 * SCHED_RAMP_MAX) — past the ramp (window 0) the scheduler sets no limit of
 * its own below what deliver could connect; more would only wait inside
 * deliver, each holding a request (a released backlog of 100,000 started in
 * one loop turn).
 */
unsigned sched_dest_cap(unsigned max_connections, unsigned window);

enum sched_outcome {
	SCHED_DELIVERED,
	SCHED_DEFERRED,
	SCHED_FAILED,
};
/* A recipient's reply code: 2xx delivered, 5xx failed, anything else deferred. */
enum sched_outcome sched_code_outcome(int code);

/* Lifetime of a message that arrived at arrival_ms. */
uint64_t sched_expire_at(uint64_t arrival_ms, const struct conf *c);
/* When its one delay warning is due; UINT64_MAX when disabled. */
uint64_t sched_warn_at(uint64_t arrival_ms, const struct conf *c);

/* ------------------------------------------------------------------ */
/* Life cycle (router.c). */

/* Create the scheduler (health table, run-time routes from queue_dir/routes). */
int sched_new(const struct sched_deps *deps, struct sched **out, struct buf *err);
/* Load every queued message (queue_scan) and start scheduling. */
int sched_load(struct sched *s);
/* The same load on the scan thread: begin (before the listeners open: notes
 * the ids made from then on), run (after the privilege drop). */
void sched_scan_begin(struct sched *s);
void sched_scan_run(struct sched *s);
/* queue_new_cb for queue_set_new_cb(): a freshly committed message (takes m). */
void sched_queue_new(void *arg, struct queue_msg *m);
void sched_reload(struct sched *s, struct conf *conf);
/*
 * Stop: no new attempts, DNS queries cancelled, the timer closed.  Attempts
 * in flight finish through deliver (which the router shuts down meanwhile);
 * done(arg) once the timer is closed, no attempt is in flight and the routes
 * file is written.
 */
void sched_shutdown(struct sched *s, void (*done)(void *arg), void *arg);
/* After sched_shutdown's done: frees every in-memory message (queue_msg_free). */
void sched_free(struct sched *s);

/* Tests: inject the wall clock and the randomness (NULL restores the default). */
void sched_set_clock(struct sched *s, uint64_t (*now)(void *arg), void *arg);
/* Share host health through cl (router_shared.c; NULL: not shared). */
struct cluster;
void sched_set_cluster(struct sched *s, struct cluster *cl);
void sched_set_random(struct sched *s, uint32_t (*rnd)(void *arg), void *arg);

#endif
