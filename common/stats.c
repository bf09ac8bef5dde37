/*
 * stats.c - the shared counters' few helpers: the histograms' buckets,
 * observing a value, and sorting a refusal into its reason.  Owns the
 * bucket bounds; never formats anything (metrics/ does).
 */
#include "common/stats.h"

#include <string.h>

/* End of DATA -> 250: the group commit's sync, normally milliseconds. */
static const double stats_commit_bounds[] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};
/* Arrival -> delivered: seconds when all is well, up to days in an outage. */
static const double stats_delivery_bounds[] = {
	0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 21600, 86400, 432000,
};
/* Message size: a short note to the 25 MB default limit and beyond. */
static const double stats_size_bounds[] = {
	1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
};

#define STATS_NB(a) (sizeof(a) / sizeof((a)[0]))

static void
stats_hist_set(struct stats_hist *h, const double *b, size_t n)
{
	h->bounds = b;
	h->nbounds = n < STATS_HIST_MAX ? n : STATS_HIST_MAX;
}

void
stats_init(struct relay_stats *st)
{
	stats_hist_set(&st->commit_seconds, stats_commit_bounds, STATS_NB(stats_commit_bounds));
	stats_hist_set(&st->delivery_seconds, stats_delivery_bounds, STATS_NB(stats_delivery_bounds));
	stats_hist_set(&st->size_bytes, stats_size_bounds, STATS_NB(stats_size_bounds));
}

void
stats_observe(struct stats_hist *h, double v)
{
	size_t i;

	for (i = 0; i < h->nbounds && v > h->bounds[i]; i++)
		;
	h->counts[i]++;
	h->count++;
	h->sum += v;
}

static const char *const stats_reject_names[STATS_REJ_MAX] = {
	[STATS_REJ_POLICY] = "policy",
	[STATS_REJ_RATE_LIMIT] = "rate_limit",
	[STATS_REJ_SYNTAX] = "syntax",
	[STATS_REJ_SIZE] = "size",
	[STATS_REJ_CONTENT] = "content",
	[STATS_REJ_TEMPORARY] = "temporary",
	[STATS_REJ_OTHER] = "other",
};

const char *
stats_reject_name(enum stats_reject_reason r)
{
	return r < STATS_REJ_MAX ? stats_reject_names[r] : "other";
}

/* "550 5.7.1 text": the enhanced status code after the reply code. */
enum stats_reject_reason
stats_reject_reason(const char *reply)
{
	static const struct {
		const char *prefix;
		enum stats_reject_reason r;
	} map[] = {
		{ "5.7.", STATS_REJ_POLICY },
		{ "4.7.", STATS_REJ_RATE_LIMIT },
		{ "4.5.3", STATS_REJ_RATE_LIMIT },
		{ "5.5.", STATS_REJ_SYNTAX },
		{ "5.1.", STATS_REJ_SYNTAX },
		{ "5.3.4", STATS_REJ_SIZE },
		{ "5.6.", STATS_REJ_CONTENT },
		{ "4.", STATS_REJ_TEMPORARY },
	};
	const char *code;
	size_t i;

	if (reply == NULL || strlen(reply) < 6 || (reply[3] != ' ' && reply[3] != '-'))
		return STATS_REJ_OTHER;
	code = reply + 4;
	for (i = 0; i < STATS_NB(map); i++)
		if (strncmp(code, map[i].prefix, strlen(map[i].prefix)) == 0)
			return map[i].r;
	return STATS_REJ_OTHER;
}

void
stats_reject_by(struct relay_stats *st, enum stats_reject_reason r)
{
	st->rejected++;
	st->rejected_by[r]++;
}

void
stats_reject(struct relay_stats *st, const char *reply)
{
	stats_reject_by(st, stats_reject_reason(reply));
}

void
stats_accepted(struct relay_stats *st, double commit_seconds, double size_bytes)
{
	st->accepted++;
	stats_observe(&st->commit_seconds, commit_seconds);
	stats_observe(&st->size_bytes, size_bytes);
}
