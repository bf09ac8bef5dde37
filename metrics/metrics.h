/*
 * metrics.h - the metrics module's one public face: the Prometheus endpoint
 * on metrics_listen (off by default).  GET /metrics answers the counters of
 * common/stats.h, the queue's numbers from the scheduler's tallies
 * (router.h: sched_tally), the destinations down, the open sessions and the
 * journal's fill, in the text exposition format 0.0.4.  The HTTP server
 * (libmicrohttpd) runs on the relay's loop: no thread, nothing blocks.
 */
#ifndef RELAY_METRICS_H
#define RELAY_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"
#include "common/stats.h"
#include "router/router.h"
#include "submit/submit.h"

struct metrics;

/* Where a scrape reads from; each must outlive the metrics (submit may be NULL). */
struct metrics_source {
	const struct relay_stats *stats;
	struct router *router;
	struct submit *submit;
};

/*
 * Bind listen ("addr:port", as conf_parse_listen takes it) and serve it on
 * loop.  Call before the privilege drop: the socket is bound here.  0, or -1
 * with a message in err (nothing left open).
 */
int metrics_new(uv_loop_t *loop, const char *listen, const struct metrics_source *src,
    struct metrics **out, struct buf *err);
/* Descriptors the endpoint of c (metrics_listen) may hold at once; 0 when off. */
uint64_t metrics_fd_need(const struct conf *c);
/* Close the listener and every connection; m is freed once its handles are
 * closed (the loop runs them).  NULL is a no-op. */
void metrics_close(struct metrics *m);

/* One scrape's numbers. */
struct metrics_snapshot {
	struct relay_stats stats;
	struct sched_tally queue;
	uint64_t now_ms;                /* wall clock */
	size_t dests, dests_down;
	size_t sessions;
	uint64_t journal_used, journal_size;
};
/* Read the snapshot from src: no walk over the queue (its tallies), one over
 * the destinations. */
void metrics_collect(const struct metrics_source *src, uint64_t now_ms,
    struct metrics_snapshot *out);
/* The text exposition format (0.0.4) of snap, appended to out. */
void metrics_format(const struct metrics_snapshot *snap, struct buf *out);

#endif
