/*
 * router_sched.h - (internal to router/) the scheduler: what to try when,
 * over the durable queue (router_queue.h), and what the results mean.
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
#include "router/router_health.h"
#include "router/router_queue.h"
#include "router/router_route.h"

struct mx_resolver;
struct deliver;
struct sched;

/* What the scheduler works with; every pointer is borrowed and outlives it. */
struct sched_deps {
	uv_loop_t *loop;
	struct conf *conf;              /* the scheduler takes its own reference */
	struct relay_stats *stats;
	struct router *router;          /* for ndr_send() */
	struct queue *queue;
	struct mx_resolver *mx;
	struct deliver *deliver;
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
 * never tried or was last waiting for a down destination (status 4.4.1: the
 * destination gets probed again), else last attempt + retry delay.
 */
uint64_t sched_rcpt_due(const struct queue_rcpt *qr, const uint64_t *intervals, size_t n,
    uint32_t rnd);
/* The ramp's next window after a success: doubles; 0 (no limit) once past SCHED_RAMP_MAX. */
unsigned sched_ramp_grow(unsigned window);

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
void sched_set_random(struct sched *s, uint32_t (*rnd)(void *arg), void *arg);

/* ------------------------------------------------------------------ */
/* Administration (relayctl, through router_control). */

/* router.c: the router's scheduler and queue, for router_control(). */
struct sched *router_sched(struct router *r);
struct queue *router_queue(struct router *r);

enum sched_rcpt_state {
	SCHED_RCPT_DUE,                 /* pending; next_ms says when */
	SCHED_RCPT_ACTIVE,              /* in an attempt right now */
	SCHED_RCPT_QUEUED,              /* ready, waiting for a slot of its destination */
	SCHED_RCPT_WAITING,             /* its destination is down: waits for the probe (next_ms) */
	SCHED_RCPT_HELD,
	SCHED_RCPT_DELIVERED,
	SCHED_RCPT_FAILED,
};

struct sched_rcpt_view {
	enum sched_rcpt_state state;
	uint64_t next_ms;               /* next attempt (DUE) or probe (WAITING); 0 = unknown */
	const char *dest;               /* destination while queued/waiting/active, else NULL */
};

const char *sched_rcpt_state_name(enum sched_rcpt_state st);
/* A message by queue id (NULL if unknown or being deleted). */
struct queue_msg *sched_find(struct sched *s, const char *qid);
/* Every message, oldest first. */
void sched_foreach(struct sched *s, void (*cb)(void *arg, const struct queue_msg *m), void *arg);
size_t sched_count(const struct sched *s);
void sched_rcpt_view(struct sched *s, const struct queue_msg *m, size_t i,
    struct sched_rcpt_view *out);

/*
 * Attempt now, ignoring retry timers and host backoff: what is NULL or "" (every
 * message), a queue id, or a recipient domain.  Returns the number of messages
 * flushed (0 = nothing matched).
 * A queue id: the message's jobs start at once.  Every message or a domain
 * only changes state, so it answers at once whatever the backlog: the
 * recipients become due and go out through their destinations' windows;
 * each destination concerned gets ONE attempt now that ignores host backoff
 * and its state (a down destination's probe: its waiting mail follows when
 * the probe gets through, and keeps waiting, unrecorded, when it does not).
 * The resolver's cache is cleared.
 */
int sched_flush(struct sched *s, const char *what);
/* Hold / release a message (QREC_HOLD): a held message is never attempted,
 * expired or warned about.  Released, it is attempted at once.  0 or RELAY_ENOENT. */
int sched_hold(struct sched *s, const char *qid);
int sched_release(struct sched *s, const char *qid);
/* Remove a message without any report (event=deleted).  0 or RELAY_ENOENT. */
int sched_delete(struct sched *s, const char *qid);
/* Fail every pending recipient with 5.0.0 "returned by the administrator" and
 * report it to the sender.  0 or RELAY_ENOENT. */
int sched_bounce(struct sched *s, const char *qid);

/* Host health (relayctl hosts). */
struct health *sched_health(struct sched *s);
/* Reset a host's health (see health_reset) and probe the destinations waiting
 * on it at once.  0 or RELAY_ENOENT. */
int sched_host_reset(struct sched *s, const char *host);

/* Run-time routes (relayctl route set/clear/list). */
struct route_table *sched_routes(struct sched *s);
/* route_set with the configured smtp_port as default port. */
int sched_route_set(struct sched *s, const char *domain, const char *hosts, struct buf *err);
int sched_route_clear(struct sched *s, const char *domain);
void sched_route_list(struct sched *s, bool json, struct buf *out);

/* Destinations (relayctl hosts / stats): one call per destination known. */
struct sched_dest_view {
	const char *name;
	const char *state;              /* "new", "up", "down" */
	unsigned window;                /* jobs allowed in flight; 0 = no limit */
	unsigned inflight;
	size_t queued;                  /* jobs waiting for a slot */
	size_t waiting;                 /* jobs waiting for the destination to come back */
	uint64_t down_since_ms;
	uint64_t probe_at_ms;
};
void sched_foreach_dest(struct sched *s, void (*cb)(void *arg, const struct sched_dest_view *d),
    void *arg);

#endif
