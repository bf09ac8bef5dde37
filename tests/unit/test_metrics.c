/*
 * test_metrics.c - the metrics' pure parts: sorting a refusal into its
 * reason (common/stats.c), histogram buckets (a value on a bound counts in
 * that bound's bucket, "le"), and the text exposition of a snapshot
 * (metrics/metrics_text.c): exact sample lines from a table, cumulative
 * buckets, and HELP/TYPE before every family's samples.
 */
#include "metrics/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static const struct {
	const char *reply;
	enum stats_reject_reason want;
} reasons[] = {
	{ "553 5.7.1 <x@y>: Sender address rejected: not owned by user alice", STATS_REJ_POLICY },
	{ "550 5.7.1 Header From: rejected: no valid address", STATS_REJ_POLICY },
	{ "450 4.7.1 Error: message rate limit exceeded", STATS_REJ_RATE_LIMIT },
	{ "452 4.5.3 Error: too many recipients", STATS_REJ_RATE_LIMIT },
	{ "501 5.5.4 Bad SIZE parameter", STATS_REJ_SYNTAX },
	{ "501 5.1.3 Bad recipient address syntax", STATS_REJ_SYNTAX },
	{ "552 5.3.4 Message size exceeds fixed maximum message size", STATS_REJ_SIZE },
	{ "550 5.6.11 Error: bare <LF> or <CR> received", STATS_REJ_CONTENT },
	{ "553 5.6.7 <x>: SMTPUTF8 is required", STATS_REJ_CONTENT },
	{ "451 4.3.0 Error: queue file write error", STATS_REJ_TEMPORARY },
	{ "452 4.3.1 Error: insufficient system storage", STATS_REJ_TEMPORARY },
	{ "554 5.0.0 something else", STATS_REJ_OTHER },
	{ "550", STATS_REJ_OTHER },
	{ "", STATS_REJ_OTHER },
	{ NULL, STATS_REJ_OTHER },
};

static void
test_reasons(void)
{
	struct relay_stats st;
	size_t i;

	for (i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
		CHECK_MSG(stats_reject_reason(reasons[i].reply) == reasons[i].want, "%s -> %s",
		    reasons[i].reply ? reasons[i].reply : "(null)",
		    stats_reject_name(stats_reject_reason(reasons[i].reply)));
	memset(&st, 0, sizeof(st));
	stats_reject(&st, "553 5.7.1 no");
	stats_reject(&st, "553 5.7.1 no");
	stats_reject(&st, "501 5.5.4 Bad");
	CHECK_INT(st.rejected, 3);
	CHECK_INT(st.rejected_by[STATS_REJ_POLICY], 2);
	CHECK_INT(st.rejected_by[STATS_REJ_SYNTAX], 1);
}

static void
test_hist(void)
{
	static const struct {
		double v;
		size_t bucket;
	} obs[] = {
		{ 0, 0 }, { 1024, 0 }, { 1025, 1 }, { 4096, 1 }, { 1e9, 9 },
	};
	struct relay_stats st;
	size_t i;

	memset(&st, 0, sizeof(st));
	stats_init(&st);
	CHECK_INT(st.size_bytes.nbounds, 9);
	for (i = 0; i < sizeof(obs) / sizeof(obs[0]); i++) {
		uint64_t before = st.size_bytes.counts[obs[i].bucket];

		stats_observe(&st.size_bytes, obs[i].v);
		CHECK_MSG(st.size_bytes.counts[obs[i].bucket] == before + 1, "%g", obs[i].v);
	}
	CHECK_INT(st.size_bytes.count, 5);
	/* without stats_init: every value in the one +Inf bucket */
	memset(&st, 0, sizeof(st));
	stats_observe(&st.commit_seconds, 0.5);
	CHECK_INT(st.commit_seconds.counts[0], 1);
}

static void
test_format(void)
{
	static const char *const want[] = {
		"relayd_connections_total 7\n",
		"relayd_messages_accepted_total 5\n",
		"relayd_messages_rejected_total{reason=\"policy\"} 2\n",
		"relayd_messages_rejected_total{reason=\"other\"} 0\n",
		"relayd_recipients_delivered_total 4\n",
		"relayd_start_time_seconds 1700000000\n",
		"relayd_queue_messages 100000\n",
		"relayd_queue_messages_held 3\n",
		"relayd_queue_recipients{state=\"waiting\"} 99990\n",
		"relayd_queue_recipients{state=\"due\"} 4\n",
		"relayd_queue_oldest_message_age_seconds 3600\n",
		"relayd_destinations_down 2\n",
		"relayd_sessions_open 9\n",
		"relayd_deliveries_in_flight 6\n",
		"relayd_journal_used_bytes 4096\n",
		"relayd_journal_size_bytes 8380416\n",
		"relayd_accept_duration_seconds_bucket{le=\"0.0025\"} 1\n",
		"relayd_accept_duration_seconds_bucket{le=\"0.005\"} 2\n",
		"relayd_accept_duration_seconds_bucket{le=\"10\"} 2\n",
		"relayd_accept_duration_seconds_bucket{le=\"+Inf\"} 3\n",
		"relayd_accept_duration_seconds_sum 20.006\n",
		"relayd_accept_duration_seconds_count 3\n",
		"relayd_message_size_bytes_bucket{le=\"1048576\"} 0\n",
		"relayd_message_size_bytes_bucket{le=\"+Inf\"} 0\n",
		"relayd_delivery_delay_seconds_bucket{le=\"432000\"} 0\n",
		"# HELP relayd_queue_recipients ",
		"# TYPE relayd_queue_recipients gauge\n",
		"# TYPE relayd_messages_rejected_total counter\n",
		"# TYPE relayd_delivery_delay_seconds histogram\n",
	};
	struct metrics_snapshot snap;
	struct buf out;
	const char *p, *text;
	char name[128], prev[128] = "";
	size_t i;

	memset(&snap, 0, sizeof(snap));
	stats_init(&snap.stats);
	snap.stats.start_ms = 1700000000123ULL;
	snap.stats.connections = 7;
	snap.stats.accepted = 5;
	snap.stats.rejected_by[STATS_REJ_POLICY] = 2;
	snap.stats.delivered = 4;
	stats_observe(&snap.stats.commit_seconds, 0.002);
	stats_observe(&snap.stats.commit_seconds, 0.004);
	stats_observe(&snap.stats.commit_seconds, 20);
	snap.queue.messages = 100000;
	snap.queue.held = 3;
	snap.queue.rcpts_waiting = 99990;
	snap.queue.rcpts_due = 4;
	snap.now_ms = 1700003600000ULL;
	snap.queue.oldest_arrival_ms = 1700000000000ULL;
	snap.dests_down = 2;
	snap.sessions = 9;
	snap.queue.attempts = 6;
	snap.journal_used = 4096;
	snap.journal_size = 8380416;

	buf_init(&out);
	metrics_format(&snap, &out);
	text = buf_cstr(&out);
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		CHECK_MSG(strstr(text, want[i]) != NULL, "missing: %s", want[i]);
	CHECK(text[out.len - 1] == '\n');

	/* Every sample's family was introduced by HELP then TYPE just before. */
	for (p = text; *p != '\0'; p = strchr(p, '\n') + 1) {
		if (strncmp(p, "# HELP ", 7) == 0) {
			CHECK(sscanf(p + 7, "%127s", name) == 1);
			p = strchr(p, '\n') + 1;
			CHECK_MSG(strncmp(p, "# TYPE ", 7) == 0 &&
			    strncmp(p + 7, name, strlen(name)) == 0, "%s", name);
			snprintf(prev, sizeof(prev), "%s", name);
			continue;
		}
		CHECK_MSG(prev[0] != '\0' && strncmp(p, prev, strlen(prev)) == 0,
		    "sample outside its family (%s): %.40s", prev, p);
	}

	/* An empty queue has no age. */
	snap.queue.oldest_arrival_ms = 0;
	buf_reset(&out);
	metrics_format(&snap, &out);
	CHECK(strstr(buf_cstr(&out), "relayd_queue_oldest_message_age_seconds 0\n") != NULL);
	buf_free(&out);
}

int
main(void)
{
	test_reasons();
	test_hist();
	test_format();
	return check_done();
}
