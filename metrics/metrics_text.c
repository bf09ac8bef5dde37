/*
 * metrics_text.c - the text exposition format (Prometheus 0.0.4) of one
 * snapshot: every metric's HELP and TYPE lines and its samples, in a fixed
 * order.  Owns the metric names (the README's "Metrics" section lists them:
 * a name is a contract).  Pure: reads the snapshot, appends to a buffer.
 */
#include "metrics/metrics.h"

#include <math.h>

static void
metrics_head(struct buf *out, const char *name, const char *type, const char *help)
{
	buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
metrics_u64(struct buf *out, const char *name, const char *type, const char *help,
    uint64_t v)
{
	metrics_head(out, name, type, help);
	buf_printf(out, "%s %llu\n", name, (unsigned long long)v);
}

/* A float sample: integers exactly, others with enough digits to read back. */
static void
metrics_float(struct buf *out, double v)
{
	if (isinf(v))
		buf_puts(out, v > 0 ? "+Inf" : "-Inf");
	else if (v == floor(v) && fabs(v) < 1e15)
		buf_printf(out, "%.0f", v);
	else
		buf_printf(out, "%.17g", v);
}

/* A bucket bound: short (the bounds are short decimals), "+Inf" for the last. */
static void
metrics_le(struct buf *out, double v)
{
	if (v == floor(v) && fabs(v) < 1e15)
		buf_printf(out, "%.0f", v);
	else
		buf_printf(out, "%.6g", v);
}

static void
metrics_hist(struct buf *out, const char *name, const char *help, const struct stats_hist *h)
{
	uint64_t cum = 0;
	size_t i;

	metrics_head(out, name, "histogram", help);
	for (i = 0; i < h->nbounds; i++) {
		cum += h->counts[i];
		buf_printf(out, "%s_bucket{le=\"", name);
		metrics_le(out, h->bounds[i]);
		buf_printf(out, "\"} %llu\n", (unsigned long long)cum);
	}
	buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)h->count);
	buf_printf(out, "%s_sum ", name);
	metrics_float(out, h->sum);
	buf_printf(out, "\n%s_count %llu\n", name, (unsigned long long)h->count);
}

void
metrics_format(const struct metrics_snapshot *snap, struct buf *out)
{
	const struct relay_stats *st = &snap->stats;
	const struct sched_tally *q = &snap->queue;
	const struct {
		const char *state;
		size_t n;
	} rstates[] = {
		{ "active", q->rcpts_active },
		{ "queued", q->rcpts_queued },
		{ "waiting", q->rcpts_waiting },
		{ "held", q->rcpts_held },
		{ "due", q->rcpts_due },
	};
	size_t i;

	/* Counters. */
	metrics_u64(out, "relayd_connections_total", "counter",
	    "Submission connections accepted.", st->connections);
	metrics_u64(out, "relayd_messages_accepted_total", "counter",
	    "Messages queued (250 given).", st->accepted);
	metrics_head(out, "relayd_messages_rejected_total", "counter",
	    "Transactions refused (4xx/5xx to MAIL, RCPT or DATA), by reason.");
	for (i = 0; i < STATS_REJ_MAX; i++)
		buf_printf(out, "relayd_messages_rejected_total{reason=\"%s\"} %llu\n",
		    stats_reject_name((enum stats_reject_reason)i),
		    (unsigned long long)st->rejected_by[i]);
	metrics_u64(out, "relayd_auth_failures_total", "counter",
	    "Failed AUTH attempts.", st->auth_failed);
	metrics_u64(out, "relayd_recipients_delivered_total", "counter",
	    "Recipients delivered.", st->delivered);
	metrics_u64(out, "relayd_recipients_deferred_total", "counter",
	    "Recipient attempts that ended deferred.", st->deferred);
	metrics_u64(out, "relayd_recipients_bounced_total", "counter",
	    "Recipients failed permanently.", st->bounced);
	metrics_u64(out, "relayd_recipients_expired_total", "counter",
	    "Recipients failed for their age (max_queue_age).", st->expired);
	metrics_u64(out, "relayd_ndrs_sent_total", "counter",
	    "Reports (non-delivery, delay, success) queued to senders.", st->ndr_sent);
	metrics_u64(out, "relayd_messages_deleted_total", "counter",
	    "Messages deleted by the administrator.", st->deleted);

	/* Gauges. */
	metrics_u64(out, "relayd_start_time_seconds", "gauge",
	    "When relayd started, in seconds since the epoch.", st->start_ms / 1000);
	metrics_u64(out, "relayd_queue_messages", "gauge",
	    "Messages in the queue.", q->messages);
	metrics_u64(out, "relayd_queue_messages_held", "gauge",
	    "Messages held by the administrator.", q->held);
	metrics_head(out, "relayd_queue_recipients", "gauge",
	    "Pending recipients, by state.");
	for (i = 0; i < sizeof(rstates) / sizeof(rstates[0]); i++)
		buf_printf(out, "relayd_queue_recipients{state=\"%s\"} %zu\n",
		    rstates[i].state, rstates[i].n);
	metrics_u64(out, "relayd_queue_oldest_message_age_seconds", "gauge",
	    "Age of the oldest queued message (0 when the queue is empty).",
	    q->oldest_arrival_ms != 0 && snap->now_ms > q->oldest_arrival_ms ?
	    (snap->now_ms - q->oldest_arrival_ms) / 1000 : 0);
	metrics_u64(out, "relayd_destinations", "gauge",
	    "Destinations the scheduler knows.", snap->dests);
	metrics_u64(out, "relayd_destinations_down", "gauge",
	    "Destinations down (their mail waits for a probe).", snap->dests_down);
	metrics_u64(out, "relayd_sessions_open", "gauge",
	    "Submission sessions open.", snap->sessions);
	metrics_u64(out, "relayd_deliveries_in_flight", "gauge",
	    "Delivery attempts in flight (resolving or talking to an exchanger).", q->attempts);
	metrics_u64(out, "relayd_journal_used_bytes", "gauge",
	    "Bytes of the acceptance journal holding messages not yet published.",
	    snap->journal_used);
	metrics_u64(out, "relayd_journal_size_bytes", "gauge",
	    "Size of the acceptance journal's ring (0: no journal).", snap->journal_size);

	/* Histograms. */
	metrics_hist(out, "relayd_accept_duration_seconds",
	    "Time from the end of DATA to the 250 reply (the queue commit).",
	    &st->commit_seconds);
	metrics_hist(out, "relayd_delivery_delay_seconds",
	    "Time from a message's arrival to a recipient's delivery.",
	    &st->delivery_seconds);
	metrics_hist(out, "relayd_message_size_bytes",
	    "Size of accepted messages.", &st->size_bytes);
}
