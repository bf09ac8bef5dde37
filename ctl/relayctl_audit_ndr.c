/*
 * relayctl_audit_ndr.c - turns relayd's event stream into NDR records for
 * `relayctl audit`.  The record comes from the `ndr` line (one per reported
 * recipient); what it lacks is filled in from earlier lines:
 *   accepted  qid= from= nrcpt=          -> the sender (if the ndr has no to=)
 *   deferred / bounced  qid= rcpt= host= ip= status= reply=
 *                                        -> the last attempt (replaces the one before)
 *   expired   qid= rcpt= status= ...     -> updates what it carries
 *   delivered qid= rcpt=                 -> that recipient is done: forgotten
 * Only failure and delay reports are NDRs: an ndr line for a success notice
 * (reason=delivered, or any reason but failed/expired/delayed) gives no
 * record.  A host or address relayd logged as "-" (none reached) is unknown:
 * NULL, like an empty reply.
 * Owns two hash tables (common/htab): per message (sender, recipients still
 * open) and per (message, recipient) last attempt.  Entries go when the recipient is
 * finished (delivered, or an ndr with reason failed/expired), and anything
 * not touched for CTL_AUDIT_HORIZON_MS of log time is swept: the state stays
 * bounded by what relayd can still have queued.  Must never hold a whole log,
 * nor the records it emits (the caller keeps what it wants).
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/htab.h"
#include "common/util.h"
#include "ctl/relayctl_audit.h"

#define CORR_SWEEP_LINES 65536

/* A message (key "qid") or a (message, recipient) attempt (key "qid\nrcpt"). */
struct corr_ent {
	struct htab_node node;      /* in msgs or atts, by key */
	char *key;
	uint64_t touched;           /* log time of the last line about it */
	/* message */
	char *from;
	long pending;               /* recipients not finished; -1 unknown */
	/* attempt */
	char *host, *ip, *reply, *status;
	long attempts;
};

struct ctl_audit_corr {
	struct htab msgs, atts;     /* struct corr_ent */
	ctl_audit_emit_fn emit;
	void *arg;
	uint64_t newest;            /* the latest ts seen */
	size_t lines;               /* since the last sweep */
};

static void
corr_ent_free(struct corr_ent *e)
{
	free(e->key);
	free(e->from);
	free(e->host);
	free(e->ip);
	free(e->reply);
	free(e->status);
	free(e);
}

static struct corr_ent *
corr_find(const struct htab *t, const char *key)
{
	struct htab_node *n = htab_find(t, key);

	return n != NULL ? HTAB_ENTRY(n, struct corr_ent, node) : NULL;
}

static struct corr_ent *
corr_get(struct htab *t, const char *key)
{
	struct corr_ent *e = corr_find(t, key);

	if (e != NULL)
		return e;
	e = xcalloc(1, sizeof(*e));
	e->key = xstrdup(key);
	e->pending = -1;
	htab_insert(t, &e->node, e->key);
	return e;
}

static void
corr_del(struct htab *t, const char *key)
{
	struct corr_ent *e = corr_find(t, key);

	if (e != NULL) {
		htab_remove(t, &e->node);
		corr_ent_free(e);
	}
}

static void
corr_table_expire(struct htab *t, uint64_t before)
{
	struct corr_ent *e;
	struct htab_iter it;
	struct htab_node *n;

	HTAB_FOREACH(n, t, &it) {
		e = HTAB_ENTRY(n, struct corr_ent, node);
		if (e->touched < before) {
			htab_remove(t, n);
			corr_ent_free(e);
		}
	}
}

static void
corr_table_free(struct htab *t)
{
	corr_table_expire(t, UINT64_MAX);
	htab_free(t);
}

/* "qid\nrcpt" with the recipient lowercased (the key of an attempt). */
static void
corr_att_key(struct buf *k, const char *qid, const char *rcpt)
{
	size_t i;

	buf_reset(k);
	buf_puts(k, qid);
	buf_putc(k, '\n');
	for (i = 0; rcpt[i] != '\0'; i++) {
		char c = rcpt[i];
		buf_putc(k, c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c);
	}
}

/* Replace *dst with src (NULL clears) or, with keep, only when src is set. */
static void
corr_set(char **dst, const char *src, int keep)
{
	if (src == NULL && keep)
		return;
	free(*dst);
	*dst = src ? xstrdup(src) : NULL;
}

static long
corr_number(const char *s)
{
	char *end;
	long v;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	v = strtol(s, &end, 10);
	return *end == '\0' ? v : -1;
}

/* A recipient of qid is finished: the message is forgotten with its last one. */
static void
corr_rcpt_done(struct ctl_audit_corr *c, const char *qid, const char *attkey)
{
	struct corr_ent *m = corr_find(&c->msgs, qid);

	corr_del(&c->atts, attkey);
	if (m != NULL && m->pending > 0 && --m->pending == 0)
		corr_del(&c->msgs, qid);
}

static void
corr_on_accepted(struct ctl_audit_corr *c, const struct ctl_audit_line *l, const char *qid,
    const char *rcpt, struct buf *key)
{
	struct corr_ent *m = corr_get(&c->msgs, qid);

	corr_set(&m->from, ctl_audit_line_get(l, "from"), 0);
	m->pending = corr_number(ctl_audit_line_get(l, "nrcpt"));
	m->touched = l->ts_ms;
}

static void
corr_on_attempt(struct ctl_audit_corr *c, const struct ctl_audit_line *l, const char *qid,
    const char *rcpt, struct buf *key)
{
	struct corr_ent *a, *m;
	int expired = strcmp(l->event, "expired") == 0;

	if (rcpt == NULL)
		return;
	corr_att_key(key, qid, rcpt);
	a = corr_get(&c->atts, buf_cstr(key));
	a->touched = l->ts_ms;
	/* An attempt replaces the one before; expiry only adds what it knows. */
	corr_set(&a->host, ctl_audit_line_get(l, "host"), expired);
	corr_set(&a->ip, ctl_audit_line_get(l, "ip"), expired);
	corr_set(&a->reply, ctl_audit_line_get(l, "reply"), expired);
	corr_set(&a->status, ctl_audit_line_get(l, "status"), expired);
	if (!expired)
		a->attempts++;
	if ((m = corr_find(&c->msgs, qid)) != NULL)
		m->touched = l->ts_ms;
}

static void
corr_on_delivered(struct ctl_audit_corr *c, const struct ctl_audit_line *l, const char *qid,
    const char *rcpt, struct buf *key)
{
	if (rcpt == NULL)
		return;
	corr_att_key(key, qid, rcpt);
	corr_rcpt_done(c, qid, buf_cstr(key));
}

static const char *
corr_pick(const char *first, const char *second)
{
	return first != NULL ? first : second;
}

/* v, or NULL where the log says "none" ("-" for a host or address, "" for any). */
static const char *
corr_known(const char *v, bool dash)
{
	if (v == NULL || *v == '\0' || (dash && strcmp(v, "-") == 0))
		return NULL;
	return v;
}

/* A failure or delay report (an NDR), not a success notice; no reason: old logs, kept. */
static bool
corr_is_ndr(const char *reason)
{
	return reason == NULL || strcmp(reason, "failed") == 0 || strcmp(reason, "expired") == 0 ||
	    strcmp(reason, "delayed") == 0;
}

static void
corr_on_ndr(struct ctl_audit_corr *c, const struct ctl_audit_line *l, const char *qid,
    const char *rcpt, struct buf *key)
{
	struct ctl_audit_ndr r;
	struct corr_ent *a = NULL, *m = corr_find(&c->msgs, qid);

	if (rcpt != NULL) {
		corr_att_key(key, qid, rcpt);
		a = corr_find(&c->atts, buf_cstr(key));
	}
	memset(&r, 0, sizeof(r));
	r.ts_ms = l->ts_ms;
	r.time = l->ts;
	r.qid = qid;
	r.ndr_qid = ctl_audit_line_get(l, "ndr_qid");
	r.sender = corr_pick(ctl_audit_line_get(l, "to"), m ? m->from : NULL);
	r.recipient = rcpt;
	r.reason = ctl_audit_line_get(l, "reason");
	r.status = corr_pick(ctl_audit_line_get(l, "status"), a ? a->status : NULL);
	r.host = corr_known(corr_pick(ctl_audit_line_get(l, "host"), a ? a->host : NULL), true);
	r.ip = corr_known(corr_pick(ctl_audit_line_get(l, "ip"), a ? a->ip : NULL), true);
	r.reply = corr_known(corr_pick(ctl_audit_line_get(l, "reply"), a ? a->reply : NULL), false);
	r.down_since = ctl_audit_line_get(l, "down_since");
	r.attempts = corr_number(ctl_audit_line_get(l, "attempts"));
	if (r.attempts < 0 && a != NULL && a->attempts > 0)
		r.attempts = a->attempts;
	if (corr_is_ndr(r.reason))
		c->emit(&r, c->arg);

	/* A failure or expiry report is the recipient's end; a delay warning is not. */
	if (rcpt != NULL && r.reason != NULL &&
	    (strcmp(r.reason, "failed") == 0 || strcmp(r.reason, "expired") == 0))
		corr_rcpt_done(c, qid, buf_cstr(key));
}

typedef void (*corr_handler)(struct ctl_audit_corr *, const struct ctl_audit_line *, const char *,
    const char *, struct buf *);

static const struct {
	const char *event;
	corr_handler fn;
} corr_events[] = {
	{ "accepted",  corr_on_accepted },
	{ "deferred",  corr_on_attempt },
	{ "bounced",   corr_on_attempt },
	{ "expired",   corr_on_attempt },
	{ "delivered", corr_on_delivered },
	{ "ndr",       corr_on_ndr },
};

struct ctl_audit_corr *
ctl_audit_corr_new(ctl_audit_emit_fn emit, void *arg)
{
	struct ctl_audit_corr *c = xcalloc(1, sizeof(*c));

	c->emit = emit;
	c->arg = arg;
	return c;
}

void
ctl_audit_corr_feed(struct ctl_audit_corr *c, const struct ctl_audit_line *l)
{
	struct buf key = BUF_INIT;
	const char *qid;
	size_t i;

	if (l->ts_ms > c->newest)
		c->newest = l->ts_ms;
	if (++c->lines >= CORR_SWEEP_LINES) {
		c->lines = 0;
		if (c->newest > CTL_AUDIT_HORIZON_MS)
			ctl_audit_corr_expire(c, c->newest - CTL_AUDIT_HORIZON_MS);
	}
	if ((qid = ctl_audit_line_get(l, "qid")) == NULL)
		return;
	for (i = 0; i < RELAY_ARRAY_LEN(corr_events); i++) {
		if (strcmp(l->event, corr_events[i].event) == 0) {
			corr_events[i].fn(c, l, qid, ctl_audit_line_get(l, "rcpt"), &key);
			break;
		}
	}
	buf_free(&key);
}

void
ctl_audit_corr_expire(struct ctl_audit_corr *c, uint64_t before)
{
	corr_table_expire(&c->msgs, before);
	corr_table_expire(&c->atts, before);
}

size_t
ctl_audit_corr_tracked(const struct ctl_audit_corr *c)
{
	return htab_count(&c->msgs) + htab_count(&c->atts);
}

void
ctl_audit_corr_free(struct ctl_audit_corr *c)
{
	if (c == NULL)
		return;
	corr_table_free(&c->msgs);
	corr_table_free(&c->atts);
	free(c);
}
