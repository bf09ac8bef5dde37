/*
 * stats.h - counters since start, shared by every module and reported by
 * `relayctl stats`.  Plain integers: everything runs on the one loop thread.
 */
#ifndef RELAY_STATS_H
#define RELAY_STATS_H

#include <stdint.h>

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
};

#endif
