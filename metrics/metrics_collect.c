/*
 * metrics_collect.c - one scrape's numbers, read from the modules that keep
 * them: the shared counters (a copy), the scheduler's tallies, the
 * destinations (one walk: there are few), the submission sessions and the
 * journal's fill.  Never walks the queue; changes nothing.
 */
#include "metrics/metrics.h"

#include <string.h>

static void
metrics_count_dest(void *arg, const struct sched_dest_view *d)
{
	struct metrics_snapshot *snap = arg;

	snap->dests++;
	if (strcmp(d->state, "down") == 0)
		snap->dests_down++;
}

void
metrics_collect(const struct metrics_source *src, uint64_t now_ms, struct metrics_snapshot *out)
{
	struct sched *s;

	memset(out, 0, sizeof(*out));
	out->now_ms = now_ms;
	if (src->stats != NULL)
		out->stats = *src->stats;
	if (src->router != NULL) {
		s = router_sched(src->router);
		sched_tally(s, &out->queue);
		sched_foreach_dest(s, metrics_count_dest, out);
		queue_journal_fill(router_queue(src->router), &out->journal_used,
		    &out->journal_size);
	}
	if (src->submit != NULL)
		out->sessions = submit_nsessions(src->submit);
}
