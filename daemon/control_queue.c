/*
 * control_queue.c - relayctl's queue commands: the listing (queue list), one
 * message in full (queue show: its header block and every record of its
 * file), and the administration of messages (queue flush / hold / release /
 * delete / bounce).
 *
 * Owns: nothing beyond one request; a listing of 100,000 messages is one
 * pass over the scheduler's list, no sorting, no per-line allocation.
 * Never: changes a message except through the scheduler's administration
 * calls (router/router.h); reads a queue file except for `queue show` (one
 * bounded read of the header block, and queue_history_file()), and that
 * only on the libuv thread pool (struct rctl_show), never on the loop.
 */
#include "daemon/control_int.h"
#include "common/log.h"
#include "common/util.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Recipient states as relayctl shows them. */

/*
 * pending   waiting for its first attempt, or due now (also: ready, waiting
 *           for a connection slot of its destination)
 * deferred  an attempt failed temporarily: retried at `until`, or its
 *           destination is down and `until` is the destination's next probe
 * held      the message is held by the admin: never attempted
 * active    an attempt is in flight right now
 * delivered / failed   done (the message waits for the others, or its report)
 */
static const struct {
	enum sched_rcpt_state st;
	const char *name;               /* NULL: decided from the retry time */
	bool until;                     /* next_ms is worth showing */
} rctl_state_map[] = {
	{ SCHED_RCPT_DUE,       NULL,        true },
	{ SCHED_RCPT_ACTIVE,    "active",    false },
	{ SCHED_RCPT_QUEUED,    "pending",   false },
	{ SCHED_RCPT_WAITING,   "deferred",  true },
	{ SCHED_RCPT_HELD,      "held",      false },
	{ SCHED_RCPT_DELIVERED, "delivered", false },
	{ SCHED_RCPT_FAILED,    "failed",    false },
};

void
rctl_rcpt_state(const struct rctl *c, const struct queue_msg *m, size_t i, struct rctl_rstate *out)
{
	struct sched_rcpt_view v;
	size_t k;

	sched_rcpt_view(c->s, m, i, &v);
	memset(out, 0, sizeof(*out));
	out->dest = v.dest;
	for (k = 0; k < RELAY_ARRAY_LEN(rctl_state_map); k++) {
		if (rctl_state_map[k].st != v.state)
			continue;
		out->name = rctl_state_map[k].name;
		if (rctl_state_map[k].until)
			out->until = v.next_ms;
		break;
	}
	if (out->name == NULL) {
		/* Due: at once (pending), or at a later retry time (deferred). */
		if (v.next_ms > c->now)
			out->name = "deferred";
		else {
			out->name = "pending";
			out->until = 0;
		}
	}
	if (out->until != 0 && out->until <= c->now && strcmp(out->name, "deferred") == 0)
		out->until = c->now;
}

/* Is one of m's recipients still to be delivered at domain (NULL: anywhere)? */
static bool
rctl_msg_has_domain(const struct queue_msg *m, const char *domain)
{
	size_t i;

	for (i = 0; i < m->env.nrcpts; i++)
		if (m->rcpt[i].state == RCPT_PENDING && (domain == NULL ||
		    util_strcasecmp(rctl_domain_of(m->env.rcpts[i].addr), domain) == 0))
			return true;
	return false;
}

/* ------------------------------------------------------------------ */
/* queue list */

struct rctl_list {
	struct rctl *c;
	size_t nmsgs, nrcpts;
};

static void
rctl_list_json_rcpt(struct rctl *c, const struct queue_msg *m, size_t i)
{
	const struct queue_rcpt *qr = &m->rcpt[i];
	struct buf *b = c->out;
	struct rctl_rstate st;
	struct queue_last last;

	rctl_rcpt_state(c, m, i, &st);
	queue_rcpt_last(qr, &last);
	buf_puts(b, "{\"addr\":");
	json_str(b, m->env.rcpts[i].addr);
	buf_printf(b, ",\"state\":\"%s\",\"until\":", st.name);
	rctl_json_time(c, b, st.until);
	buf_printf(b, ",\"attempts\":%u,\"last_attempt\":", qr->attempts);
	rctl_json_time(c, b, qr->last_attempt_ms);
	buf_puts(b, ",\"last_host\":");
	json_str(b, last.host);
	buf_puts(b, ",\"last_ip\":");
	json_str(b, last.ip);
	buf_puts(b, ",\"last_status\":");
	json_str(b, last.status);
	buf_puts(b, ",\"last_reply\":");
	json_str(b, last.reply);
	buf_puts(b, ",\"destination\":");
	json_str(b, st.dest);
	buf_putc(b, '}');
}

static void
rctl_list_human_rcpt(struct rctl *c, const struct queue_msg *m, size_t i)
{
	const struct queue_rcpt *qr = &m->rcpt[i];
	struct buf *b = c->out;
	struct rctl_rstate st;
	struct queue_last last;

	rctl_rcpt_state(c, m, i, &st);
	queue_rcpt_last(qr, &last);
	buf_puts(b, "    ");
	rctl_text_pad(b, m->env.rcpts[i].addr, 32);
	buf_puts(b, st.name);
	if (st.until != 0) {
		buf_printf(b, " until %s", rctl_ctime(c, st.until));
	}
	buf_printf(b, ", %u attempt%s", qr->attempts, qr->attempts == 1 ? "" : "s");
	if (st.dest != NULL && strcmp(st.name, "deferred") == 0) {
		buf_puts(b, ", waiting for ");
		rctl_text(b, st.dest);
	}
	buf_putc(b, '\n');
	if (last.status != NULL || last.reply != NULL) {
		buf_puts(b, "        last: ");
		if (last.host != NULL) {
			rctl_text(b, last.host);
			buf_putc(b, ' ');
		}
		if (last.ip != NULL) {
			buf_putc(b, '[');
			rctl_text(b, last.ip);
			buf_puts(b, "] ");
		}
		if (last.status != NULL) {
			rctl_text(b, last.status);
			buf_putc(b, ' ');
		}
		rctl_text(b, last.reply);
		buf_putc(b, '\n');
	}
}

static void
rctl_list_one(void *arg, const struct queue_msg *m)
{
	struct rctl_list *l = arg;
	struct rctl *c = l->c;
	struct buf *b = c->out;
	const char *t;
	char age[32];
	size_t i;

	if (c->held && !m->held)
		return;
	if (c->domain != NULL && !rctl_msg_has_domain(m, c->domain))
		return;
	t = rctl_ctime(c, m->env.arrival_ms);
	rctl_age(c->now, m->env.arrival_ms, age, sizeof(age));
	if (c->json) {
		buf_puts(b, l->nmsgs ? ",\n{\"qid\":" : "\n{\"qid\":");
		json_str(b, m->qid);
		buf_printf(b, ",\"arrival\":\"%s\",\"age_s\":%llu,\"size\":%llu,\"sender\":", t,
		    (unsigned long long)(c->now > m->env.arrival_ms ? (c->now - m->env.arrival_ms) / 1000 : 0),
		    (unsigned long long)m->env.size);
		json_str(b, m->env.sender);
		buf_puts(b, ",\"user\":");
		json_str(b, m->env.auth_user);
		buf_printf(b, ",\"held\":%s,\"recipients\":[", m->held ? "true" : "false");
		for (i = 0; i < m->env.nrcpts; i++) {
			if (i)
				buf_putc(b, ',');
			rctl_list_json_rcpt(c, m, i);
		}
		buf_puts(b, "]}");
	} else {
		if (l->nmsgs == 0)
			buf_printf(b, "%-21s %-20s  %-10s %10s  %s\n", "QID", "ARRIVAL", "AGE", "SIZE",
			    "SENDER");
		buf_printf(b, "%-21s %-20s  %-10s %10llu  ", m->qid, t, age,
		    (unsigned long long)m->env.size);
		rctl_text(b, m->env.sender[0] ? m->env.sender : "<>");
		buf_puts(b, m->held ? "  (held)\n" : "\n");
		for (i = 0; i < m->env.nrcpts; i++)
			rctl_list_human_rcpt(c, m, i);
	}
	l->nmsgs++;
	l->nrcpts += m->env.nrcpts;
}

int
rctl_queue_list(struct rctl *c)
{
	struct rctl_list l = { c, 0, 0 };
	size_t loaded, corrupt;
	bool scanning;

	if (c->json)
		buf_puts(c->out, "{\"messages\":[");
	sched_foreach(c->s, rctl_list_one, &l);
	scanning = sched_scanning(c->s, &loaded, &corrupt);
	if (c->json) {
		buf_printf(c->out, "%s],\"count\":%zu,\"recipients\":%zu", l.nmsgs ? "\n" : "",
		    l.nmsgs, l.nrcpts);
		if (scanning)
			buf_printf(c->out, ",\"scanning\":{\"loaded\":%zu,\"corrupt\":%zu}",
			    loaded, corrupt);
		buf_puts(c->out, "}\n");
		return 0;
	}
	if (l.nmsgs == 0)
		buf_puts(c->out, sched_count(c->s) == 0 && !scanning ? "queue is empty\n" :
		    "no queued message matches\n");
	else
		buf_printf(c->out, "-- %zu message%s, %zu recipient%s\n", l.nmsgs,
		    l.nmsgs == 1 ? "" : "s", l.nrcpts, l.nrcpts == 1 ? "" : "s");
	if (scanning)
		rctl_scanning(c);
	return 0;
}

/* The start-up scan still runs: the listing is partial, a queue id may be unknown yet. */
void
rctl_scanning(struct rctl *c)
{
	size_t loaded, corrupt;

	(void)sched_scanning(c->s, &loaded, &corrupt);
	buf_printf(c->out, "-- scanning the queue: %zu message%s loaded so far, %zu corrupt\n",
	    loaded, loaded == 1 ? "" : "s", corrupt);
}

/* An unknown queue id: it may not be loaded yet while the scan runs; say so. */
static int
rctl_unknown_qid(struct rctl *c, const char *qid)
{
	size_t loaded, corrupt;

	if (sched_scanning(c->s, &loaded, &corrupt))
		buf_printf(c->out, "queue id %s not loaded yet: the queue is still being scanned "
		    "(%zu message%s so far); try again", qid, loaded, loaded == 1 ? "" : "s");
	else
		buf_printf(c->out, "unknown queue id: %s", qid);
	return RELAY_ENOENT;
}

/* ------------------------------------------------------------------ */
/* queue show */

/* The header fields shown, first occurrence each. */
static const struct {
	const char *name;               /* as in the message */
	const char *key;                /* JSON key */
} rctl_head_fields[] = {
	{ "From", "from" },
	{ "To", "to" },
	{ "Subject", "subject" },
	{ "Date", "date" },
	{ "Message-ID", "message_id" },
};

struct rctl_head {
	char *value[RELAY_ARRAY_LEN(rctl_head_fields)];
};

static void
rctl_head_free(struct rctl_head *h)
{
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(h->value); i++)
		free(h->value[i]);
}

/* The unfolded, trimmed value of the field that starts at line[0 .. len). */
static char *
rctl_head_value(const char *p, const char *end)
{
	struct buf v = BUF_INIT;
	bool space = false;

	for (; p < end && v.len < RCTL_FIELD_MAX; p++) {
		if (*p == '\r' || *p == '\n' || *p == ' ' || *p == '\t') {
			space = v.len > 0;
			continue;
		}
		if (space)
			buf_putc(&v, ' ');
		space = false;
		buf_putc(&v, *p);
	}
	if (v.data == NULL)
		buf_puts(&v, "");
	return buf_steal(&v);
}

/*
 * Parse the header block text[0 .. len) (CRLF or LF lines, folded lines
 * continued by white space, ends at the first empty line).
 */
static void
rctl_head_parse(const char *text, size_t len, struct rctl_head *h)
{
	const char *p = text, *end = text + len, *eol, *colon, *vend;
	size_t i, nlen;

	while (p < end && *p != '\r' && *p != '\n') {
		/* One field: its name, then up to the next line that does not fold. */
		vend = p;
		do {
			eol = memchr(vend, '\n', (size_t)(end - vend));
			vend = eol != NULL ? eol + 1 : end;
		} while (vend < end && (*vend == ' ' || *vend == '\t'));
		colon = memchr(p, ':', (size_t)(vend - p));
		if (colon != NULL) {
			nlen = (size_t)(colon - p);
			while (nlen > 0 && (p[nlen - 1] == ' ' || p[nlen - 1] == '\t'))
				nlen--;
			for (i = 0; i < RELAY_ARRAY_LEN(rctl_head_fields); i++) {
				if (h->value[i] == NULL && strlen(rctl_head_fields[i].name) == nlen &&
				    util_strncasecmp(p, rctl_head_fields[i].name, nlen) == 0) {
					h->value[i] = rctl_head_value(colon + 1, vend);
					break;
				}
			}
		}
		p = vend;
	}
}

/* Read the header block of the body at body_offset in the queue file at
 * path (a bounded read; a thread-pool thread). */
static int
rctl_head_read(const char *path, uint64_t body_offset, uint64_t body_len, struct rctl_head *h)
{
	size_t want = body_len < RCTL_HEAD_MAX ? (size_t)body_len : RCTL_HEAD_MAX;
	char *text;
	ssize_t n;
	size_t got = 0;
	int fd;

	if (path == NULL || (fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return RELAY_EIO;
	text = xmalloc(want + 1);
	while (got < want) {
		n = pread(fd, text + got, want - got, (off_t)(body_offset + got));
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	rctl_head_parse(text, got, h);
	free(text);
	return 0;
}

/* One record of a message's history, copied out of queue_history_file(). */
struct rctl_hist {
	enum queue_rec_type type;
	int rcpt;
	int value;
	uint64_t time_ms;
	char *host, *ip, *status, *reply;
};

struct rctl_histv {
	struct rctl_hist *v;
	size_t n, cap;
};

static char *
rctl_dup(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

static void
rctl_hist_add(void *arg, const struct queue_record *rec)
{
	struct rctl_histv *hv = arg;
	struct rctl_hist *h;

	if (hv->n == hv->cap) {
		hv->cap = hv->cap ? hv->cap * 2 : 16;
		hv->v = xrealloc(hv->v, hv->cap * sizeof(*hv->v));
	}
	h = &hv->v[hv->n++];
	h->type = rec->type;
	h->rcpt = rec->rcpt;
	h->value = rec->value;
	h->time_ms = rec->time_ms;
	h->host = rctl_dup(rec->host);
	h->ip = rctl_dup(rec->ip);
	h->status = rctl_dup(rec->status);
	h->reply = rctl_dup(rec->reply);
}

static void
rctl_histv_free(struct rctl_histv *hv)
{
	size_t i;

	for (i = 0; i < hv->n; i++) {
		free(hv->v[i].host);
		free(hv->v[i].ip);
		free(hv->v[i].status);
		free(hv->v[i].reply);
	}
	free(hv->v);
}

/* What a record means, for the history. */
static const struct {
	enum queue_rec_type type;
	const char *what;
} rctl_rec_names[] = {
	{ QREC_ATTEMPT, "deferred" },
	{ QREC_DELIVERED, "delivered" },
	{ QREC_FAILED, "failed" },
	{ QREC_REPORTED, "reported" },
	{ QREC_HOLD, "held" },
	{ QREC_WARNED, "delay_warned" },
};

static const char *
rctl_rec_name(const struct rctl_hist *h)
{
	size_t i;

	if (h->type == QREC_HOLD && h->value == 0)
		return "released";
	for (i = 0; i < RELAY_ARRAY_LEN(rctl_rec_names); i++)
		if (rctl_rec_names[i].type == h->type)
			return rctl_rec_names[i].what;
	return "unknown";
}

static const char *
rctl_ret_name(enum env_ret ret)
{
	return ret == ENV_RET_FULL ? "full" : ret == ENV_RET_HDRS ? "hdrs" : NULL;
}

/* NOTIFY flags as "SUCCESS,FAILURE" (or NULL when not given). */
static const struct {
	unsigned bit;
	const char *name;
} rctl_notify_names[] = {
	{ ENV_NOTIFY_NEVER, "NEVER" },
	{ ENV_NOTIFY_SUCCESS, "SUCCESS" },
	{ ENV_NOTIFY_FAILURE, "FAILURE" },
	{ ENV_NOTIFY_DELAY, "DELAY" },
};

static void
rctl_notify(struct buf *b, unsigned notify, bool json)
{
	size_t i, n = 0;

	if (json)
		buf_putc(b, '[');
	for (i = 0; i < RELAY_ARRAY_LEN(rctl_notify_names); i++) {
		if (!(notify & rctl_notify_names[i].bit))
			continue;
		if (json)
			buf_printf(b, "%s\"%s\"", n ? "," : "", rctl_notify_names[i].name);
		else
			buf_printf(b, "%s%s", n ? "," : "", rctl_notify_names[i].name);
		n++;
	}
	if (json)
		buf_putc(b, ']');
	else if (n == 0)
		buf_puts(b, "-");
}

static bool
rctl_hist_is_rcpt(const struct rctl_hist *h, size_t i)
{
	return h->rcpt == (int)i && h->type != QREC_HOLD && h->type != QREC_WARNED;
}

static void
rctl_show_json(struct rctl *c, const struct queue_msg *m, const struct rctl_head *hd,
    const struct rctl_histv *hv)
{
	struct buf *b = c->out;
	struct rctl_rstate st;
	size_t i, k, n;

	buf_puts(b, "{\"qid\":");
	json_str(b, m->qid);
	buf_puts(b, ",\"arrival\":");
	rctl_json_time(c, b, m->env.arrival_ms);
	buf_printf(b, ",\"age_s\":%llu,\"size\":%llu,\"sender\":",
	    (unsigned long long)(c->now > m->env.arrival_ms ? (c->now - m->env.arrival_ms) / 1000 : 0),
	    (unsigned long long)m->env.size);
	json_str(b, m->env.sender);
	buf_puts(b, ",\"user\":");
	json_str(b, m->env.auth_user);
	buf_puts(b, ",\"client\":{\"ip\":");
	json_str(b, m->env.client_ip);
	buf_puts(b, ",\"helo\":");
	json_str(b, m->env.client_helo);
	buf_puts(b, "},\"dsn\":{\"envid\":");
	json_str(b, m->env.envid);
	buf_puts(b, ",\"ret\":");
	json_str(b, rctl_ret_name(m->env.ret));
	buf_printf(b, "},\"body_8bit\":%s,\"smtputf8\":%s,\"held\":%s,\"delay_warned\":%s,\"dkim\":",
	    m->env.body_8bit ? "true" : "false", m->env.smtputf8 ? "true" : "false",
	    m->held ? "true" : "false", m->delay_warned ? "true" : "false");
	json_str(b, queue_msg_dkim_ids(m));
	buf_puts(b, ",\"headers\":{");
	for (i = 0; i < RELAY_ARRAY_LEN(rctl_head_fields); i++) {
		buf_printf(b, "%s\"%s\":", i ? "," : "", rctl_head_fields[i].key);
		json_str(b, hd->value[i]);
	}
	buf_puts(b, "},\"recipients\":[");
	for (i = 0; i < m->env.nrcpts; i++) {
		const struct queue_rcpt *qr = &m->rcpt[i];
		struct queue_last last;

		rctl_rcpt_state(c, m, i, &st);
		buf_puts(b, i ? ",{\"addr\":" : "{\"addr\":");
		json_str(b, m->env.rcpts[i].addr);
		buf_puts(b, ",\"orcpt\":");
		json_str(b, m->env.rcpts[i].orcpt);
		buf_puts(b, ",\"notify\":");
		rctl_notify(b, m->env.rcpts[i].notify, true);
		buf_printf(b, ",\"state\":\"%s\",\"until\":", st.name);
		rctl_json_time(c, b, st.until);
		queue_rcpt_last(qr, &last);
		buf_printf(b, ",\"attempts\":%u,\"last_status\":", qr->attempts);
		json_str(b, last.status);
		buf_puts(b, ",\"last_reply\":");
		json_str(b, last.reply);
		buf_puts(b, ",\"destination\":");
		json_str(b, st.dest);
		buf_puts(b, ",\"history\":[");
		for (k = n = 0; k < hv->n; k++) {
			const struct rctl_hist *h = &hv->v[k];

			if (!rctl_hist_is_rcpt(h, i))
				continue;
			buf_puts(b, n++ ? ",{\"time\":" : "{\"time\":");
			rctl_json_time(c, b, h->time_ms);
			buf_printf(b, ",\"result\":\"%s\",\"host\":", rctl_rec_name(h));
			json_str(b, h->host);
			buf_puts(b, ",\"ip\":");
			json_str(b, h->ip);
			buf_puts(b, ",\"status\":");
			json_str(b, h->status);
			buf_puts(b, ",\"reply\":");
			json_str(b, h->reply);
			buf_putc(b, '}');
		}
		buf_puts(b, "]}");
	}
	buf_puts(b, "],\"events\":[");
	for (k = n = 0; k < hv->n; k++) {
		const struct rctl_hist *h = &hv->v[k];

		if (h->type != QREC_HOLD && h->type != QREC_WARNED)
			continue;
		buf_puts(b, n++ ? ",{\"time\":" : "{\"time\":");
		rctl_json_time(c, b, h->time_ms);
		buf_printf(b, ",\"event\":\"%s\"}", rctl_rec_name(h));
	}
	buf_putc(b, ']');
	rctl_policy_msg(c, m->qid);
	buf_puts(b, "}\n");
}

/* " host [ip] status reply", each part only when known. */
static void
rctl_hist_detail(struct buf *b, const struct rctl_hist *h)
{
	if (h->host != NULL) {
		buf_putc(b, ' ');
		rctl_text(b, h->host);
	}
	if (h->ip != NULL) {
		buf_puts(b, " [");
		rctl_text(b, h->ip);
		buf_putc(b, ']');
	}
	if (h->status != NULL) {
		buf_putc(b, ' ');
		rctl_text(b, h->status);
	}
	if (h->reply != NULL) {
		buf_putc(b, ' ');
		rctl_text(b, h->reply);
	}
}

static void
rctl_show_human(struct rctl *c, const struct queue_msg *m, const struct rctl_head *hd,
    const struct rctl_histv *hv)
{
	struct buf *b = c->out;
	char t[32], age[32];
	size_t i, k;

	util_rfc3339_sec(m->env.arrival_ms, t, sizeof(t));
	rctl_age(c->now, m->env.arrival_ms, age, sizeof(age));
	buf_printf(b, "%-12s %s\n", "qid", m->qid);
	buf_printf(b, "%-12s %s (age %s)%s\n", "arrival", t, age, m->held ? ", held" : "");
	buf_printf(b, "%-12s %llu\n", "size", (unsigned long long)m->env.size);
	buf_printf(b, "%-12s ", "sender");
	rctl_text(b, m->env.sender[0] ? m->env.sender : "<>");
	buf_printf(b, "\n%-12s ", "user");
	rctl_text(b, m->env.auth_user);
	buf_printf(b, "\n%-12s ", "client");
	rctl_text(b, m->env.client_ip);
	buf_puts(b, " helo=");
	rctl_text(b, m->env.client_helo);
	buf_printf(b, "\n%-12s envid=", "dsn");
	rctl_text(b, m->env.envid);
	buf_puts(b, " ret=");
	rctl_text(b, rctl_ret_name(m->env.ret));
	buf_printf(b, "\n%-12s %s%s\n", "body", m->env.body_8bit ? "8bitmime" : "7bit",
	    m->env.smtputf8 ? " smtputf8" : "");
	buf_printf(b, "%-12s ", "dkim");
	rctl_text(b, m->dkim != NULL ? queue_msg_dkim_ids(m) : "none");
	buf_putc(b, '\n');
	buf_puts(b, "headers\n");
	for (i = 0; i < RELAY_ARRAY_LEN(rctl_head_fields); i++) {
		buf_printf(b, "    %-12s", rctl_head_fields[i].name);
		rctl_text(b, hd->value[i]);
		buf_putc(b, '\n');
	}
	buf_puts(b, "recipients\n");
	for (i = 0; i < m->env.nrcpts; i++) {
		rctl_list_human_rcpt(c, m, i);
		buf_puts(b, "        orcpt=");
		rctl_text(b, m->env.rcpts[i].orcpt);
		buf_puts(b, " notify=");
		rctl_notify(b, m->env.rcpts[i].notify, false);
		buf_putc(b, '\n');
		for (k = 0; k < hv->n; k++) {
			const struct rctl_hist *h = &hv->v[k];

			if (!rctl_hist_is_rcpt(h, i))
				continue;
			util_rfc3339_sec(h->time_ms, t, sizeof(t));
			buf_printf(b, "        %s  %s", t, rctl_rec_name(h));
			rctl_hist_detail(b, h);
			buf_putc(b, '\n');
		}
	}
	for (k = 0; k < hv->n; k++) {
		const struct rctl_hist *h = &hv->v[k];

		if (h->type != QREC_HOLD && h->type != QREC_WARNED)
			continue;
		util_rfc3339_sec(h->time_ms, t, sizeof(t));
		buf_printf(b, "event        %s  %s\n", t, rctl_rec_name(h));
	}
	rctl_policy_msg(c, m->qid);
}

/*
 * queue show reads the message's file on the libuv thread pool: the loop
 * finds the message and copies what the read needs (its file's name, where
 * the header block is); a pool thread reads the header block and the
 * records; back on the loop the message is found again by its id and the
 * answer made from the scheduler's state of then (a message removed
 * meanwhile is an unknown queue id, as for a request after the removal).
 * The read uses nothing but its struct rctl_show, so the connection may
 * close and relayd may stop (the scheduler freed, the queue closed) while it
 * runs: cancelled, it ends unanswered and frees itself; the loop does not
 * end before it has.
 *
 * The pool's four threads also sign mail, check passwords and refill the
 * queue's spare files: at most RCTL_SHOW_RUNNING reads run at once (a
 * script asking for many messages on a slow disk would otherwise hold them
 * all), the others wait in rctl_show_waiting, first come first served.
 * Both are the loop's only.
 */
#define RCTL_SHOW_RUNNING 1

struct rctl_show {
	uv_work_t work;
	TAILQ_ENTRY(rctl_show) entry;   /* in rctl_show_waiting, while queued */
	bool queued;
	uv_loop_t *loop;
	struct control_later *later;    /* NULL once cancelled: nobody waits */
	struct router *r;               /* valid while later is set */
	bool json;
	char qid[QID_MAX];
	char *path;                     /* the message's file, or NULL: it has none */
	uint64_t body_offset, body_len;
	unsigned delay_ms;              /* tests: RELAYD_TEST_SHOW_DELAY_MS */
	/* Filled by the pool thread. */
	struct rctl_head hd;
	struct rctl_histv hv;
	int rc;                         /* queue_history_file()'s */
};

static TAILQ_HEAD(, rctl_show) rctl_show_waiting = TAILQ_HEAD_INITIALIZER(rctl_show_waiting);
static unsigned rctl_show_running;

static void rctl_show_read(uv_work_t *w);
static void rctl_show_done(uv_work_t *w, int status);

/* Start the reads waiting, while fewer than RCTL_SHOW_RUNNING run. */
static void
rctl_show_next(void)
{
	struct rctl_show *s;

	while (rctl_show_running < RCTL_SHOW_RUNNING &&
	    (s = TAILQ_FIRST(&rctl_show_waiting)) != NULL) {
		TAILQ_REMOVE(&rctl_show_waiting, s, entry);
		s->queued = false;
		rctl_show_running++;
		if (uv_queue_work(s->loop, &s->work, rctl_show_read, rctl_show_done) != 0)
			fatalx("%s: uv_queue_work failed", __func__);
	}
}

static void
rctl_show_free(struct rctl_show *s)
{
	if (s->later == NULL && s->delay_ms > 0)
		log_event(LOG_INFO, "queue_show_test_dropped", "qid", s->qid, NULL);
	rctl_histv_free(&s->hv);
	rctl_head_free(&s->hd);
	free(s->path);
	free(s);
}

/* The thread pool's part: the file's reads. */
static void
rctl_show_read(uv_work_t *w)
{
	struct rctl_show *s = w->data;

	if (s->delay_ms > 0) {
		/* tests: a slow disk; the events say the read has begun (and
		 * that a cancelled one is over, in rctl_show_done) */
		log_event(LOG_INFO, "queue_show_test_delay", "qid", s->qid, NULL);
		uv_sleep(s->delay_ms);
	}
	(void)rctl_head_read(s->path, s->body_offset, s->body_len, &s->hd);
	if (s->path != NULL)
		s->rc = queue_history_file(s->path, s->qid, rctl_hist_add, &s->hv);
	else
		s->rc = RELAY_ENOENT;
}

/* The loop's part, once the read is over (or cancelled before it began). */
static void
rctl_show_done(uv_work_t *w, int status)
{
	struct rctl_show *s = w->data;
	struct control_later *later = s->later;
	struct buf out = BUF_INIT;
	const struct queue_msg *m;
	struct rctl c;
	int rc = 0;

	(void)status;                   /* UV_ECANCELED only after rctl_show_cancel() */
	if (later != NULL) {
		rctl_begin(&c, s->r, s->json, &out);
		if (c.s == NULL) {
			buf_puts(&out, "the router is not running");   /* not expected */
			rc = RELAY_ECLOSED;
		} else if ((m = sched_find(c.s, s->qid)) == NULL)
			rc = rctl_unknown_qid(&c, s->qid);
		else if (s->rc != 0 && s->rc != RELAY_ENOENT) {
			buf_printf(&out, "cannot read the queue file of %s", s->qid);
			rc = RELAY_EIO;
		} else if (s->json)
			rctl_show_json(&c, m, &s->hd, &s->hv);
		else
			rctl_show_human(&c, m, &s->hd, &s->hv);
		later->pending = NULL;
		later->done(later->arg, rc, &out);
		buf_free(&out);
		if (s->delay_ms > 0)
			log_event(LOG_INFO, "queue_show_test_answered", "qid", s->qid, NULL);
	}
	rctl_show_running--;
	rctl_show_free(s);
	rctl_show_next();
}

/* control_later's cancel: the read frees itself when it is over. */
static void
rctl_show_cancel(void *pending)
{
	struct rctl_show *s = pending;

	s->later = NULL;
	if (s->queued) {                /* never given to the pool */
		TAILQ_REMOVE(&rctl_show_waiting, s, entry);
		rctl_show_free(s);
		return;
	}
	/* not begun yet: done comes on a later loop turn with UV_ECANCELED;
	 * begun: when the read is over */
	(void)uv_cancel((uv_req_t *)&s->work);
}

int
rctl_queue_show(struct rctl *c)
{
	const char *qid = c->pos[0];
	struct queue_msg *m = sched_find(c->s, qid);
	struct rctl_show *s;
	char pathbuf[PATH_MAX];
	const char *path;

	if (m == NULL)
		return rctl_unknown_qid(c, qid);
	if (c->later == NULL)
		fatalx("%s: queue show answers later", __func__);
	s = xcalloc(1, sizeof(*s));
	s->work.data = s;
	s->later = c->later;
	s->r = c->r;
	s->json = c->json;
	snprintf(s->qid, sizeof(s->qid), "%s", m->qid);
	if ((path = queue_msg_path(c->q, m, pathbuf, sizeof(pathbuf))) != NULL)
		s->path = xstrdup(path);
	s->body_offset = m->body_offset;
	s->body_len = m->body_len;
#ifdef RELAY_TEST_HOOKS
	{
		const char *v = getenv("RELAYD_TEST_SHOW_DELAY_MS");

		if (v != NULL)
			s->delay_ms = (unsigned)strtoul(v, NULL, 10);
	}
#endif
	c->later->pending = s;
	c->later->cancel = rctl_show_cancel;
	s->loop = c->later->loop;
	s->queued = true;
	TAILQ_INSERT_TAIL(&rctl_show_waiting, s, entry);
	rctl_show_next();
	if (s->queued && s->delay_ms > 0)
		log_event(LOG_INFO, "queue_show_test_queued", "qid", s->qid, NULL);
	return CONTROL_LATER;
}

/* ------------------------------------------------------------------ */
/* queue flush / hold / release / delete / bounce */

struct rctl_qids {
	char (*v)[QID_MAX];
	size_t n, cap;
	struct rctl *c;
	int (*want)(const struct queue_msg *m);
};

static void
rctl_qids_add(struct rctl_qids *q, const char *qid)
{
	if (q->n == q->cap) {
		q->cap = q->cap ? q->cap * 2 : 64;
		q->v = xrealloc(q->v, q->cap * sizeof(*q->v));
	}
	snprintf(q->v[q->n++], QID_MAX, "%s", qid);
}

static bool
rctl_qids_has(const struct rctl_qids *q, const char *qid)
{
	size_t i;

	for (i = 0; i < q->n; i++)
		if (strcmp(q->v[i], qid) == 0)
			return true;
	return false;
}

static void
rctl_qids_select(void *arg, const struct queue_msg *m)
{
	struct rctl_qids *q = arg;

	if ((q->want == NULL || q->want(m)) && rctl_msg_has_domain(m, q->c->domain))
		rctl_qids_add(q, m->qid);
}

/* flush --all / --domain: the messages it is for, each flushed or skipped (held). */
struct rctl_flush_sel {
	const char *domain;             /* NULL: all */
	struct rctl_qids *done, *skipped;
};

static void
rctl_flush_select(void *arg, const struct queue_msg *m)
{
	struct rctl_flush_sel *fs = arg;

	if (rctl_msg_has_domain(m, fs->domain))
		rctl_qids_add(m->held ? fs->skipped : fs->done, m->qid);
}

static int
rctl_want_unheld(const struct queue_msg *m)
{
	return !m->held;
}

static int
rctl_want_held(const struct queue_msg *m)
{
	return m->held;
}

static int
rctl_flush_one(struct sched *s, const char *qid)
{
	return sched_flush(s, qid) > 0 ? 0 : RELAY_ENOENT;
}

/*
 * What each action does to one message, and which messages it is for: want
 * selects among the messages of --domain, and among named QIDs too when
 * want_named (a held message is not flushed; it is reported as skipped).
 */
struct rctl_action {
	const char *sub;
	const char *done;               /* past tense, for the answer */
	int (*apply)(struct sched *s, const char *qid);
	int (*want)(const struct queue_msg *m);
	bool want_named;
};

static const struct rctl_action rctl_actions[] = {
	{ "flush", "flushed", rctl_flush_one, rctl_want_unheld, true },
	{ "hold", "held", sched_hold, rctl_want_unheld, false },
	{ "release", "released", sched_release, rctl_want_held, false },
	{ "delete", "deleted", sched_delete, NULL, false },
	{ "bounce", "bounced", sched_bounce, NULL, false },
};

static void
rctl_json_qids(struct buf *b, const struct rctl_qids *q)
{
	size_t i;

	buf_putc(b, '[');
	for (i = 0; q != NULL && i < q->n; i++) {
		buf_puts(b, i ? "," : "");
		json_str(b, q->v[i]);
	}
	buf_putc(b, ']');
}

/* done: the messages acted on; skipped: named ones left alone (NULL: no list). */
static void
rctl_action_answer(struct rctl *c, const struct rctl_action *a, size_t count,
    const struct rctl_qids *done, const struct rctl_qids *skipped)
{
	size_t i;

	if (c->json) {
		buf_printf(c->out, "{\"action\":\"%s\",\"count\":%zu", a->sub, count);
		if (done != NULL) {
			buf_puts(c->out, ",\"qids\":");
			rctl_json_qids(c->out, done);
			buf_puts(c->out, ",\"skipped\":");
			rctl_json_qids(c->out, skipped);
		}
		buf_puts(c->out, "}\n");
		return;
	}
	buf_printf(c->out, "%s %zu message%s", a->done, count, count == 1 ? "" : "s");
	if (done != NULL && done->n > 0 && done->n <= 20) {
		buf_puts(c->out, ":");
		for (i = 0; i < done->n; i++)
			buf_printf(c->out, " %s", done->v[i]);
	}
	if (skipped != NULL && skipped->n > 0)
		buf_printf(c->out, " (%zu held, not %s: release first)", skipped->n, a->done);
	buf_putc(c->out, '\n');
}

/* queue flush / hold / release / delete / bounce, by the command's second word. */
int
rctl_queue_action(struct rctl *c)
{
	const char *sub = c->cmd->sub;
	const struct rctl_action *a = NULL;
	struct rctl_qids q, skipped;
	const struct queue_msg *m;
	size_t i, done = 0;
	int rc = 0;

	for (i = 0; i < RELAY_ARRAY_LEN(rctl_actions); i++)
		if (strcmp(rctl_actions[i].sub, sub) == 0)
			a = &rctl_actions[i];
	if (a == NULL)
		fatalx("%s: no action %s", __func__, sub);
	memset(&q, 0, sizeof(q));
	memset(&skipped, 0, sizeof(skipped));
	q.c = c;
	q.want = a->want;

	/* flush --all / --domain: the scheduler walks the queue itself; the
	 * answer names what it is for (held mail is skipped). */
	if (a->apply == rctl_flush_one && c->npos == 0) {
		struct rctl_flush_sel fs = { c->all ? NULL : c->domain, &q, &skipped };

		sched_foreach(c->s, rctl_flush_select, &fs);
		(void)sched_flush(c->s, fs.domain);
		rctl_action_answer(c, a, q.n, &q, &skipped);
		free(q.v);
		free(skipped.v);
		return 0;
	}
	if (c->npos > 0) {
		/* Every QID must exist before anything is done. */
		for (i = 0; i < (size_t)c->npos; i++) {
			if (sched_find(c->s, c->pos[i]) == NULL)
				return rctl_unknown_qid(c, c->pos[i]);
		}
		for (i = 0; i < (size_t)c->npos; i++) {
			m = sched_find(c->s, c->pos[i]);
			if (rctl_qids_has(&q, m->qid) || rctl_qids_has(&skipped, m->qid))
				continue;
			if (a->want_named && a->want != NULL && !a->want(m))
				rctl_qids_add(&skipped, m->qid);
			else
				rctl_qids_add(&q, m->qid);
		}
	} else
		sched_foreach(c->s, rctl_qids_select, &q);

	/* Act; q keeps the ones acted on. */
	for (i = 0; i < q.n; i++) {
		rc = a->apply(c->s, q.v[i]);
		if (rc == 0)
			memmove(q.v[done++], q.v[i], QID_MAX);
		else if (rc != RELAY_ENOENT)
			break;                  /* a storage error: stop, say so */
		rc = 0;
	}
	if (rc != 0) {
		buf_printf(c->out, "%s %s: storage error (%zu message%s %s before it)", sub, q.v[i],
		    done, done == 1 ? "" : "s", a->done);
		free(q.v);
		free(skipped.v);
		return RELAY_EIO;
	}
	q.n = done;
	rctl_action_answer(c, a, done, &q, &skipped);
	free(q.v);
	free(skipped.v);
	return 0;
}
