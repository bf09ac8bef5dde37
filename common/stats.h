/*
 * stats.h - counters since start, shared by every module and reported by
 * `relayctl stats` and the metrics endpoint (metrics/).  Plain integers:
 * everything runs on the one loop thread.  A module only counts (a ++, a
 * stats_reject() or a stats_observe()); reading and formatting is the
 * readers' business.
 */
#ifndef RELAY_STATS_H
#define RELAY_STATS_H

#include <stddef.h>
#include <stdint.h>

/* Why a transaction was refused (stats_reject(), from the reply's enhanced
 * status code); the metrics' reason label is stats_reject_name(). */
enum stats_reject_reason {
	STATS_REJ_POLICY,          /* 5.7.x: sender or From: not the login's */
	STATS_REJ_RATE_LIMIT,      /* 4.7.x, 4.5.3: message or recipient limits */
	STATS_REJ_SYNTAX,          /* 5.5.x, 5.1.x: bad command, address or parameter */
	STATS_REJ_SIZE,            /* 5.3.4: too big */
	STATS_REJ_CONTENT,         /* 5.6.x: bare CR/LF, NUL, long line, SMTPUTF8 */
	STATS_REJ_TEMPORARY,       /* 4.3.x and other 4xx: our trouble (queue, lookups) */
	STATS_REJ_OTHER,
	STATS_REJ_MAX
};

/*
 * A histogram with fixed upper bounds (Prometheus' "le", ascending):
 * counts[i] is the observations in bucket i alone (not cumulative),
 * counts[nbounds] those above the last bound.  A zeroed struct (tests that
 * skip stats_init) counts everything in that last bucket.
 */
#define STATS_HIST_MAX 16
struct stats_hist {
	const double *bounds;
	size_t nbounds;
	uint64_t counts[STATS_HIST_MAX + 1];
	uint64_t count;
	double sum;
};

struct relay_stats {
	uint64_t start_ms;
	uint64_t connections;      /* submission connections accepted */
	uint64_t accepted;         /* messages queued (250 given) */
	uint64_t rejected;         /* transactions refused (any 4xx/5xx to MAIL/RCPT/DATA) */
	uint64_t auth_failed;
	uint64_t delivered;        /* recipients */
	uint64_t deferred;         /* recipient attempts that were deferred */
	uint64_t bounced;          /* recipients failed permanently */
	uint64_t expired;          /* recipients failed for age */
	uint64_t ndr_sent;         /* reports queued */
	uint64_t deleted;          /* messages deleted by the admin */
	uint64_t rejected_by[STATS_REJ_MAX];    /* rejected, by reason */
	struct stats_hist commit_seconds;       /* end of DATA -> 250 */
	struct stats_hist delivery_seconds;     /* arrival -> delivered (per recipient) */
	struct stats_hist size_bytes;           /* accepted messages' size */
};

/* Set the histograms' bounds (zeroes nothing else). */
void stats_init(struct relay_stats *st);
void stats_observe(struct stats_hist *h, double v);
/* One refused transaction: rejected and rejected_by[] from reply ("550 5.7.1 ..."). */
void stats_reject(struct relay_stats *st, const char *reply);
/* The same, by its reason (a session thread's, counted on the main loop). */
void stats_reject_by(struct relay_stats *st, enum stats_reject_reason r);
/* One accepted message: accepted, its end-of-DATA-to-250 time and its size. */
void stats_accepted(struct relay_stats *st, double commit_seconds, double size_bytes);
enum stats_reject_reason stats_reject_reason(const char *reply);
const char *stats_reject_name(enum stats_reject_reason r);

#endif
