/*
 * cluster.h - state shared by several relayd nodes through one Redis server
 * (issue #12): windowed counters (a login's messages and recipients, an
 * address's failed AUTH attempts) and host health news (a host down until a
 * time, a host or a destination back).  Built on hiredis's asynchronous API
 * driven by the loop (its libuv adapter); nothing here ever blocks.
 *
 * Redis is never needed for mail to flow.  While the link is down (not yet
 * connected, refused, a command or the connection slower than
 * CLUSTER_TIMEOUT_MS) the module is *degraded*: the calls below return
 * RELAY_ETEMP at once (or publish nothing) and the callers use their local
 * state; the link comes back with a back-off from CLUSTER_RETRY_MIN_MS to
 * CLUSTER_RETRY_MAX_MS.  One `event=cluster_degraded` when it goes,
 * `cluster_restored` when it is back.
 *
 * Ownership: struct cluster owns both Redis connections (commands, and the
 * subscription to the health channel), its timer and every request in
 * flight.  cluster_close() ends the connections (callbacks of requests still
 * in flight fire with NULL first) and the struct is freed once its timer
 * has closed.
 */
#ifndef RELAY_CLUSTER_H
#define RELAY_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"
#include "conf/conf.h"

#define CLUSTER_TIMEOUT_MS      300     /* connect, and each command */
#define CLUSTER_RETRY_MIN_MS    250     /* reconnect back-off: doubles ... */
#define CLUSTER_RETRY_MAX_MS    4000    /* ... up to this */
#define CLUSTER_COUNT_MAX       2       /* counters per key */
#define CLUSTER_FD_NEED         2       /* descriptors: the two connections */

struct cluster;

/*
 * Without a cluster group *out is NULL and nothing is done.  Otherwise the
 * password file is read now (call it before the privilege drop) and the
 * first connection starts.  0, or -1 with err.
 */
int cluster_new(uv_loop_t *loop, const struct conf *c, struct cluster **out, struct buf *err);
/* End both connections and free cl once its handles have closed.  NULL is fine. */
void cluster_close(struct cluster *cl);
/* Connected: shared state is used. */
bool cluster_up(const struct cluster *cl);
const char *cluster_node(const struct cluster *cl);

/* What Redis holds for one key: the counters and the time left in its window. */
struct cluster_counts {
	long long v[CLUSTER_COUNT_MAX];
	uint64_t ttl_ms;                /* 0: no window (nothing counted) */
};
/* counts is NULL when Redis did not answer in time: the caller's local state decides. */
typedef void (*cluster_count_cb)(void *arg, const struct cluster_counts *counts);

/*
 * Add incr[i] to counter fields[i] of the key kind:name, atomically in
 * Redis (a Lua script, EVALSHA); the window of window_ms starts with the
 * first addition and the key expires at its end.  With every incr 0 it
 * only reads (and starts nothing).  0: cb (may be NULL) fires exactly once,
 * from the loop, within CLUSTER_TIMEOUT_MS.  RELAY_ETEMP: degraded, cb never
 * fires.
 */
int cluster_count(struct cluster *cl, const char *kind, const char *name, const char *const *fields,
    const long long *incr, size_t n, uint64_t window_ms, cluster_count_cb cb, void *arg);

/* Health news from the other nodes (and, after a reconnect, the hosts still down). */
struct cluster_host_news {
	const char *node;               /* who found out */
	const char *addr;               /* "192.0.2.1:25", "[2001:db8::1]:25" */
	unsigned failures;
	uint64_t until_ms;              /* wall clock: no attempt before */
	uint64_t backoff_ms;
	const char *why;
};
struct cluster_health_ops {
	void (*host_down)(void *arg, const struct cluster_host_news *n);
	void (*host_up)(void *arg, const char *node, const char *addr);
	void (*dest_up)(void *arg, const char *node, const char *dest);
	void *arg;
};
/* Where news goes (copied); NULL ops: nowhere. */
void cluster_set_health(struct cluster *cl, const struct cluster_health_ops *ops);
/* Tell the other nodes (fire and forget; nothing while degraded). */
void cluster_host_down(struct cluster *cl, const char *addr, unsigned failures, uint64_t until_ms,
    uint64_t backoff_ms, const char *why);
void cluster_host_up(struct cluster *cl, const char *addr);
void cluster_dest_up(struct cluster *cl, const char *dest);

#endif
