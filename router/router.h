/*
 * router.h - the router module's one public face: what happens to a queued
 * message.  The scheduler decides what to try when, the routing decides
 * where (routes, MX through dns/, host health), deliver/ makes the attempt,
 * and ndr/ reports failures.  Data flows one way: submit -> queue/ ->
 * scheduler -> deliver/ -> results back to the scheduler.  The control plane
 * (daemon/) administers it through the calls at the end.
 */
#ifndef RELAY_ROUTER_H
#define RELAY_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"
#include "common/envelope.h"
#include "common/stats.h"
#include "conf/conf.h"
#include "queue/queue.h"
#include "router/router_dane.h"
#include "router/router_health.h"
#include "router/router_route.h"

struct router;

/*
 * Reports relayd queues at once (non-delivery, delay and success notices,
 * ndr/): each is a queue transaction that holds a file until its commit, so
 * a mass expiry (a restart after days, a `queue bounce --all`) must not
 * open one per message at once; the others wait their turn, oldest first
 * (router/SCHEDULING.md, "Lifetime").  daemon/relay.c counts them in the
 * descriptors relayd needs.
 */
#define ROUTER_REPORTS_MAX 64

/*
 * Create the router: open (create) queue_dir, recover the queue from disk,
 * start the commit thread and the scheduler.  stats must outlive the router.
 * 0, or -1 with a message in err.
 */
int router_new(uv_loop_t *loop, struct conf *conf, struct relay_stats *stats,
    struct router **out, struct buf *err);
/* A new configuration snapshot (SIGHUP).  The router takes its own reference. */
void router_reload(struct router *r, struct conf *conf);
/* Stop scheduling, wait for commits in flight, close handles; done(arg) when all closed. */
void router_shutdown(struct router *r, void (*done)(void *arg), void *arg);
/* Start loading the queue (msg/) on the scan thread: after the listeners
 * open and the privilege drop; messages are scheduled as they arrive. */
void router_scan_start(struct router *r);
void router_free(struct router *r);
/* Share host health with the other nodes through cl (cluster/; NULL: this
 * node alone).  cl must outlive the router's shutdown. */
struct cluster;
void router_set_cluster(struct router *r, struct cluster *cl);

/*
 * Submission into the queue: router_txn_begin() starts a queue transaction
 * (queue/queue.h: queue_txn_write, queue_txn_commit, queue_txn_abort) for a
 * message with envelope env (copied) and assigns its queue id (env NULL:
 * reserved, queue_txn_envelope() gives it one later).
 */
struct queue_txn;
int router_txn_begin(struct router *r, const struct envelope *env, struct queue_txn **out);

/*
 * A wait for every message acknowledged so far to reach the scheduler
 * (queue_wait_acked() in queue/queue.h): relayctl waits so that it sees every
 * message a client was told is queued.
 */
struct queue_waiter;
bool router_wait_acked(struct router *r, struct queue_waiter *w);
/* Only for the acknowledged messages, not the records (queue_wait_published()). */
bool router_wait_published(struct router *r, struct queue_waiter *w);
void router_wait_cancel(struct router *r, struct queue_waiter *w);

/* ------------------------------------------------------------------ */
/* Administration (relayctl, through daemon/control_queue.c). */

/* The router's scheduler and queue, for the control plane. */
struct sched *router_sched(struct router *r);
/* The router's DNS resolver (relayctl dkim --check); NULL once closed. */
struct dns_resolver *router_dns(struct router *r);
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
/* The start-up scan of msg/ is still running (a queue id may not be loaded
 * yet): true, with the messages loaded and the files found corrupt so far. */
bool sched_scanning(struct sched *s, size_t *loaded, size_t *corrupt);
void sched_rcpt_view(struct sched *s, const struct queue_msg *m, size_t i,
    struct sched_rcpt_view *out);
/*
 * The queue in numbers (the metrics endpoint), from tallies the scheduler
 * keeps as things change: O(1) whatever the queue's size.  Recipients are
 * pending ones, by where they are: in an attempt (active; a recipient whose
 * outcome is in stays counted until its attempt ends), queued behind their
 * destination's window, waiting for a down destination, held, or due (the
 * rest: waiting for their retry time or the next timer run).
 */
struct sched_tally {
	size_t messages;
	size_t held;                    /* held messages */
	size_t rcpts_pending;
	size_t rcpts_active, rcpts_queued, rcpts_waiting, rcpts_held, rcpts_due;
	unsigned attempts;              /* delivery attempts in flight */
	uint64_t oldest_arrival_ms;     /* the oldest message's arrival; 0 = empty */
};
void sched_tally(const struct sched *s, struct sched_tally *out);

/*
 * relayctl stats: pending recipients by relayctl's states (recipients of
 * jobs queued behind their destination's window and due ones whose retry
 * time is not after now are "pending"; those waiting for a down destination
 * or due later "deferred") and by recipient domain, from tallies the
 * scheduler keeps as recipients move: O(domains), plus the messages whose
 * wake-up is not after now (none once the queue has settled).
 */
struct sched_stats_dom {
	const char *name;               /* lower-cased; valid until the loop runs again */
	size_t rcpts;                   /* its pending recipients */
	const char *dest;               /* the destination one of them is in a job for, or NULL */
};
struct sched_stats {
	size_t messages;
	size_t pending, deferred, held, active;
	struct sched_stats_dom *doms;   /* ndoms, in no order; sched_stats_free() */
	size_t ndoms;
};
void sched_stats(struct sched *s, uint64_t now, struct sched_stats *out);
void sched_stats_free(struct sched_stats *st);

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

/* How the outbound TLS policy treated each exchanger address tried for a
 * message (relayctl queue show), oldest first; memory only, the last 8. */
struct sched_tls_view {
	const char *host, *ip;
	const char *policy;             /* "dane", "dane-unauth", or deliver.tls's value */
	const char *refused;            /* why the policy refused it ("4.7.5 tlsa-invalid ..."),
	                                   or NULL: not refused */
	uint64_t time_ms;               /* of the last attempt or refusal */
};
void sched_msg_tls(struct sched *s, const char *qid,
    void (*cb)(void *arg, const struct sched_tls_view *v), void *arg);

/* Host health (relayctl hosts). */
struct health *sched_health(struct sched *s);
/* Reset a host's health (see health_reset) and probe the destinations waiting
 * on it at once.  0 or RELAY_ENOENT. */
int sched_host_reset(struct sched *s, const char *host);

/* DANE as DNS last told the router, per recipient domain and MX host
 * (relayctl policy; router/router_dane.h). */
struct dane_seen *sched_dane(struct sched *s);
/* The MTA-STS policies (relayctl policy; mtasts/mtasts.h), or NULL. */
struct mtasts;
struct mtasts *sched_mtasts(struct sched *s);

/* The DKIM keys in force (relayctl dkim); NULL-safe dkim/ calls. */
struct dkim_keys;
struct dkim_keys *sched_dkim(struct sched *s);

/* TLS reporting (relayctl policy: tlsrpt_describe). */
struct tlsrpt;
struct tlsrpt *sched_tlsrpt(struct sched *s);
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
	size_t queued;                  /* recipients waiting for a slot (its queued line) */
	size_t waiting;                 /* recipients waiting for the destination to come back */
	uint64_t down_since_ms;
	uint64_t probe_at_ms;
};
void sched_foreach_dest(struct sched *s, void (*cb)(void *arg, const struct sched_dest_view *d),
    void *arg);

#endif
