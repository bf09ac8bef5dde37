/*
 * router_control.c - relayctl's requests to the router (router_control()):
 * the queue listing and its administration (queue list / show / flush /
 * hold / release / delete / bounce), the host-health table (hosts, hosts
 * reset), run-time routes (route set / clear / list) and the queue part of
 * `relayctl stats`.  Every answer is an aligned human table, or a JSON
 * document with a stable shape (README "relayctl") when json is true.
 *
 * Owns: nothing beyond one request; the answer is written into the caller's
 * buffer as it is produced (a listing of 100,000 messages is one pass over
 * the scheduler's list, no sorting, no per-line allocation).
 * Never: changes a message except through the scheduler's administration
 * calls (router_sched.h); keeps state between requests; reads a queue file
 * except for `queue show` (one bounded read of the header block, and
 * queue_history()).
 */
#include "router/router_sched.h"
#include "router/router_queue.h"
#include "common/util.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RCTL_HEAD_MAX      (64 * 1024)  /* header block read by `queue show` */
#define RCTL_FIELD_MAX     998          /* a header value shown (RFC 5322 line limit) */
#define RCTL_TOP_DESTS     10           /* top destinations in stats */

/* Options a command accepts (bits). */
#define RCTL_O_DOMAIN      0x01         /* --domain D */
#define RCTL_O_ALL         0x02         /* --all */
#define RCTL_O_HELD        0x04         /* --held */
#define RCTL_O_TARGET      0x08         /* QID..., --domain or --all: exactly one kind */

struct rctl_cmd;

/* One request, parsed. */
struct rctl {
	const struct rctl_cmd *cmd;     /* the command's row */
	struct router *r;
	struct sched *s;
	struct queue *q;
	bool json;
	struct buf *out;
	char **pos;                     /* positional arguments */
	int npos;
	const char *domain;             /* --domain */
	bool all;                       /* --all */
	bool held;                      /* --held */
	uint64_t now;
	/* The last times formatted: a listing repeats the same few seconds. */
	uint64_t tc_sec[4];
	char tc_text[4][24];
	unsigned tc_next;
};

struct rctl_cmd {
	const char *word, *sub;         /* sub NULL: a one-word command */
	int min_pos, max_pos;           /* max_pos -1: unlimited */
	unsigned opts;
	int (*run)(struct rctl *c);
	const char *usage;
};

/* ------------------------------------------------------------------ */
/* Output helpers. */

/* A JSON string (or null): control characters escaped, invalid UTF-8 as U+FFFD. */
static void
rctl_json_str(struct buf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s, *run;

	if (s == NULL) {
		buf_puts(b, "null");
		return;
	}
	buf_putc(b, '"');
	while (*p != '\0') {
		run = p;
		while (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\')
			p++;
		if (p > run)
			buf_append(b, run, (size_t)(p - run));
		if (*p == '\0')
			break;
		if (*p == '"' || *p == '\\') {
			buf_putc(b, '\\');
			buf_putc(b, (char)*p++);
		} else if (*p < 0x20 || *p == 0x7f) {
			buf_printf(b, "\\u%04x", *p++);
		} else {
			/* A UTF-8 sequence: copied when well-formed. */
			size_t n = *p >= 0xf0 && *p <= 0xf4 ? 4 : *p >= 0xe0 ? 3 : *p >= 0xc2 && *p < 0xe0 ? 2 : 0;
			size_t k;

			for (k = 1; n > 0 && k < n; k++)
				if ((p[k] & 0xc0) != 0x80)
					n = 0;
			if (n == 0) {
				buf_puts(b, "\\ufffd");
				p++;
			} else {
				buf_append(b, p, n);
				p += n;
			}
		}
	}
	buf_putc(b, '"');
}

/* Text for a human table: control characters become '?'; NULL becomes "-". */
static void
rctl_text(struct buf *b, const char *s)
{
	const char *run;

	if (s == NULL || *s == '\0') {
		buf_putc(b, '-');
		return;
	}
	while (*s != '\0') {
		run = s;
		while ((unsigned char)*s >= 0x20 && *s != 0x7f)
			s++;
		if (s > run)
			buf_append(b, run, (size_t)(s - run));
		if (*s == '\0')
			break;
		buf_putc(b, '?');
		s++;
	}
}

/* Text padded to width (at least one space follows). */
static void
rctl_text_pad(struct buf *b, const char *s, size_t width)
{
	size_t start = b->len;

	rctl_text(b, s);
	do
		buf_putc(b, ' ');
	while (b->len - start < width);
}

/* "2026-11-22T11:21:31Z" (UTC, to the second) into out (at least 24 bytes). */
static void
rctl_time(uint64_t ms, char *out, size_t outlen)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	if (strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0 && outlen > 0)
		out[0] = '\0';
}

/* rctl_time() through the request's small cache; valid until 3 more calls. */
static const char *
rctl_ctime(struct rctl *c, uint64_t ms)
{
	uint64_t sec = ms / 1000 + 1;   /* 0 = empty slot */
	unsigned i;

	for (i = 0; i < RELAY_ARRAY_LEN(c->tc_sec); i++)
		if (c->tc_sec[i] == sec)
			return c->tc_text[i];
	i = c->tc_next++ % RELAY_ARRAY_LEN(c->tc_sec);
	c->tc_sec[i] = sec;
	rctl_time(ms, c->tc_text[i], sizeof(c->tc_text[i]));
	return c->tc_text[i];
}

/* A JSON time string, or null for 0. */
static void
rctl_json_time(struct rctl *c, struct buf *b, uint64_t ms)
{
	if (ms == 0) {
		buf_puts(b, "null");
		return;
	}
	buf_putc(b, '"');
	buf_puts(b, rctl_ctime(c, ms));
	buf_putc(b, '"');
}

static void
rctl_age(uint64_t now, uint64_t then, char *out, size_t outlen)
{
	util_format_duration(now > then ? (now - then) / 1000 * 1000 : 0, out, outlen);
}

/* The domain part of an address ("" when there is none). */
static const char *
rctl_domain_of(const char *addr)
{
	const char *at = strrchr(addr, '@');

	return at != NULL ? at + 1 : "";
}

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
struct rctl_rstate {
	const char *name;
	uint64_t until;                 /* 0: none */
	const char *dest;               /* the destination it waits for, or NULL */
};

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

static void
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

/* Is one of m's recipients still to be delivered at domain? */
static bool
rctl_msg_has_domain(const struct queue_msg *m, const char *domain)
{
	size_t i;

	for (i = 0; i < m->env.nrcpts; i++)
		if (m->rcpt[i].state == RCPT_PENDING &&
		    util_strcasecmp(rctl_domain_of(m->env.rcpts[i].addr), domain) == 0)
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

	rctl_rcpt_state(c, m, i, &st);
	buf_puts(b, "{\"addr\":");
	rctl_json_str(b, m->env.rcpts[i].addr);
	buf_printf(b, ",\"state\":\"%s\",\"until\":", st.name);
	rctl_json_time(c, b, st.until);
	buf_printf(b, ",\"attempts\":%u,\"last_attempt\":", qr->attempts);
	rctl_json_time(c, b, qr->last_attempt_ms);
	buf_puts(b, ",\"last_host\":");
	rctl_json_str(b, qr->last_host);
	buf_puts(b, ",\"last_ip\":");
	rctl_json_str(b, qr->last_ip);
	buf_puts(b, ",\"last_status\":");
	rctl_json_str(b, qr->last_status);
	buf_puts(b, ",\"last_reply\":");
	rctl_json_str(b, qr->last_reply);
	buf_puts(b, ",\"destination\":");
	rctl_json_str(b, st.dest);
	buf_putc(b, '}');
}

static void
rctl_list_human_rcpt(struct rctl *c, const struct queue_msg *m, size_t i)
{
	const struct queue_rcpt *qr = &m->rcpt[i];
	struct buf *b = c->out;
	struct rctl_rstate st;

	rctl_rcpt_state(c, m, i, &st);
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
	if (qr->last_status != NULL || qr->last_reply != NULL) {
		buf_puts(b, "        last: ");
		if (qr->last_host != NULL) {
			rctl_text(b, qr->last_host);
			buf_putc(b, ' ');
		}
		if (qr->last_ip != NULL) {
			buf_putc(b, '[');
			rctl_text(b, qr->last_ip);
			buf_puts(b, "] ");
		}
		if (qr->last_status != NULL) {
			rctl_text(b, qr->last_status);
			buf_putc(b, ' ');
		}
		rctl_text(b, qr->last_reply);
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
		rctl_json_str(b, m->qid);
		buf_printf(b, ",\"arrival\":\"%s\",\"age_s\":%llu,\"size\":%llu,\"sender\":", t,
		    (unsigned long long)(c->now > m->env.arrival_ms ? (c->now - m->env.arrival_ms) / 1000 : 0),
		    (unsigned long long)m->env.size);
		rctl_json_str(b, m->env.sender);
		buf_puts(b, ",\"user\":");
		rctl_json_str(b, m->env.auth_user);
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

static int
rctl_queue_list(struct rctl *c)
{
	struct rctl_list l = { c, 0, 0 };

	if (c->json)
		buf_puts(c->out, "{\"messages\":[");
	sched_foreach(c->s, rctl_list_one, &l);
	if (c->json)
		buf_printf(c->out, "%s],\"count\":%zu,\"recipients\":%zu}\n", l.nmsgs ? "\n" : "",
		    l.nmsgs, l.nrcpts);
	else if (l.nmsgs == 0)
		buf_puts(c->out, sched_count(c->s) == 0 ? "queue is empty\n" :
		    "no queued message matches\n");
	else
		buf_printf(c->out, "-- %zu message%s, %zu recipient%s\n", l.nmsgs,
		    l.nmsgs == 1 ? "" : "s", l.nrcpts, l.nrcpts == 1 ? "" : "s");
	return 0;
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

/* Read m's header block from its queue file (a bounded read). */
static int
rctl_head_read(const struct queue_msg *m, struct rctl_head *h)
{
	size_t want = m->body_len < RCTL_HEAD_MAX ? (size_t)m->body_len : RCTL_HEAD_MAX;
	char *text;
	ssize_t n;
	size_t got = 0;
	int fd;

	if (m->path == NULL || (fd = open(m->path, O_RDONLY | O_CLOEXEC)) == -1)
		return RELAY_EIO;
	text = xmalloc(want + 1);
	while (got < want) {
		n = pread(fd, text + got, want - got, (off_t)(m->body_offset + got));
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	rctl_head_parse(text, got, h);
	free(text);
	return 0;
}

/* One record of a message's history, copied out of queue_history(). */
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
	rctl_json_str(b, m->qid);
	buf_puts(b, ",\"arrival\":");
	rctl_json_time(c, b, m->env.arrival_ms);
	buf_printf(b, ",\"age_s\":%llu,\"size\":%llu,\"sender\":",
	    (unsigned long long)(c->now > m->env.arrival_ms ? (c->now - m->env.arrival_ms) / 1000 : 0),
	    (unsigned long long)m->env.size);
	rctl_json_str(b, m->env.sender);
	buf_puts(b, ",\"user\":");
	rctl_json_str(b, m->env.auth_user);
	buf_puts(b, ",\"client\":{\"ip\":");
	rctl_json_str(b, m->env.client_ip);
	buf_puts(b, ",\"helo\":");
	rctl_json_str(b, m->env.client_helo);
	buf_puts(b, "},\"dsn\":{\"envid\":");
	rctl_json_str(b, m->env.envid);
	buf_puts(b, ",\"ret\":");
	rctl_json_str(b, rctl_ret_name(m->env.ret));
	buf_printf(b, "},\"body_8bit\":%s,\"smtputf8\":%s,\"held\":%s,\"delay_warned\":%s,\"headers\":{",
	    m->env.body_8bit ? "true" : "false", m->env.smtputf8 ? "true" : "false",
	    m->held ? "true" : "false", m->delay_warned ? "true" : "false");
	for (i = 0; i < RELAY_ARRAY_LEN(rctl_head_fields); i++) {
		buf_printf(b, "%s\"%s\":", i ? "," : "", rctl_head_fields[i].key);
		rctl_json_str(b, hd->value[i]);
	}
	buf_puts(b, "},\"recipients\":[");
	for (i = 0; i < m->env.nrcpts; i++) {
		const struct queue_rcpt *qr = &m->rcpt[i];

		rctl_rcpt_state(c, m, i, &st);
		buf_puts(b, i ? ",{\"addr\":" : "{\"addr\":");
		rctl_json_str(b, m->env.rcpts[i].addr);
		buf_puts(b, ",\"orcpt\":");
		rctl_json_str(b, m->env.rcpts[i].orcpt);
		buf_puts(b, ",\"notify\":");
		rctl_notify(b, m->env.rcpts[i].notify, true);
		buf_printf(b, ",\"state\":\"%s\",\"until\":", st.name);
		rctl_json_time(c, b, st.until);
		buf_printf(b, ",\"attempts\":%u,\"last_status\":", qr->attempts);
		rctl_json_str(b, qr->last_status);
		buf_puts(b, ",\"last_reply\":");
		rctl_json_str(b, qr->last_reply);
		buf_puts(b, ",\"destination\":");
		rctl_json_str(b, st.dest);
		buf_puts(b, ",\"history\":[");
		for (k = n = 0; k < hv->n; k++) {
			const struct rctl_hist *h = &hv->v[k];

			if (!rctl_hist_is_rcpt(h, i))
				continue;
			buf_puts(b, n++ ? ",{\"time\":" : "{\"time\":");
			rctl_json_time(c, b, h->time_ms);
			buf_printf(b, ",\"result\":\"%s\",\"host\":", rctl_rec_name(h));
			rctl_json_str(b, h->host);
			buf_puts(b, ",\"ip\":");
			rctl_json_str(b, h->ip);
			buf_puts(b, ",\"status\":");
			rctl_json_str(b, h->status);
			buf_puts(b, ",\"reply\":");
			rctl_json_str(b, h->reply);
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
	buf_puts(b, "]}\n");
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

	rctl_time(m->env.arrival_ms, t, sizeof(t));
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
			rctl_time(h->time_ms, t, sizeof(t));
			buf_printf(b, "        %s  %s", t, rctl_rec_name(h));
			rctl_hist_detail(b, h);
			buf_putc(b, '\n');
		}
	}
	for (k = 0; k < hv->n; k++) {
		const struct rctl_hist *h = &hv->v[k];

		if (h->type != QREC_HOLD && h->type != QREC_WARNED)
			continue;
		rctl_time(h->time_ms, t, sizeof(t));
		buf_printf(b, "event        %s  %s\n", t, rctl_rec_name(h));
	}
}

static int
rctl_queue_show(struct rctl *c)
{
	const char *qid = c->pos[0];
	struct queue_msg *m = sched_find(c->s, qid);
	struct rctl_head hd;
	struct rctl_histv hv = { NULL, 0, 0 };
	int rc;

	if (m == NULL) {
		buf_printf(c->out, "unknown queue id: %s", qid);
		return RELAY_ENOENT;
	}
	memset(&hd, 0, sizeof(hd));
	(void)rctl_head_read(m, &hd);
	if ((rc = queue_history(c->q, m->qid, rctl_hist_add, &hv)) != 0 && rc != RELAY_ENOENT) {
		rctl_histv_free(&hv);
		rctl_head_free(&hd);
		buf_printf(c->out, "cannot read the queue file of %s", qid);
		return RELAY_EIO;
	}
	if (c->json)
		rctl_show_json(c, m, &hd, &hv);
	else
		rctl_show_human(c, m, &hd, &hv);
	rctl_histv_free(&hv);
	rctl_head_free(&hd);
	return 0;
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
		rctl_json_str(b, q->v[i]);
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
static int
rctl_queue_action(struct rctl *c)
{
	const char *sub = c->cmd->sub;
	const struct rctl_action *a = NULL;
	struct rctl_qids q, skipped;
	const struct queue_msg *m;
	size_t i, done = 0;
	int rc = 0, n;

	for (i = 0; i < RELAY_ARRAY_LEN(rctl_actions); i++)
		if (strcmp(rctl_actions[i].sub, sub) == 0)
			a = &rctl_actions[i];
	if (a == NULL)
		fatalx("%s: no action %s", __func__, sub);
	memset(&q, 0, sizeof(q));
	memset(&skipped, 0, sizeof(skipped));
	q.c = c;
	q.want = a->want;

	/* flush --all / --domain: the scheduler walks the queue itself. */
	if (a->apply == rctl_flush_one && c->npos == 0) {
		n = sched_flush(c->s, c->all ? NULL : c->domain);
		rctl_action_answer(c, a, n > 0 ? (size_t)n : 0, NULL, NULL);
		return 0;
	}
	if (c->npos > 0) {
		/* Every QID must exist before anything is done. */
		for (i = 0; i < (size_t)c->npos; i++) {
			if (sched_find(c->s, c->pos[i]) == NULL) {
				buf_printf(c->out, "unknown queue id: %s", c->pos[i]);
				return RELAY_ENOENT;
			}
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

/* ------------------------------------------------------------------ */
/* hosts */

struct rctl_hostv {
	const struct health_host **v;
	size_t n, cap;
};

static void
rctl_host_add(void *arg, const struct health_host *h)
{
	struct rctl_hostv *hv = arg;

	if (hv->n == hv->cap) {
		hv->cap = hv->cap ? hv->cap * 2 : 32;
		hv->v = xrealloc(hv->v, hv->cap * sizeof(*hv->v));
	}
	hv->v[hv->n++] = h;
}

static int
rctl_host_cmp(const void *a, const void *b)
{
	const struct health_host *x = *(const struct health_host *const *)a;
	const struct health_host *y = *(const struct health_host *const *)b;
	int d = util_strcasecmp(x->name, y->name);

	return d != 0 ? d : strcmp(x->addr, y->addr);
}

struct rctl_dests {
	struct rctl *c;
	size_t n;
};

static void
rctl_dest_row(void *arg, const struct sched_dest_view *d)
{
	struct rctl_dests *ds = arg;
	struct rctl *c = ds->c;
	struct buf *b = c->out;
	char t[32];

	if (c->json) {
		buf_puts(b, ds->n ? ",{\"name\":" : "{\"name\":");
		rctl_json_str(b, d->name);
		buf_printf(b, ",\"state\":\"%s\",\"inflight\":%u,\"window\":%u,\"queued\":%zu,"
		    "\"waiting\":%zu,\"down_since\":", d->state, d->inflight, d->window, d->queued,
		    d->waiting);
		rctl_json_time(c, b, strcmp(d->state, "down") == 0 ? d->down_since_ms : 0);
		buf_puts(b, ",\"next_probe\":");
		rctl_json_time(c, b, strcmp(d->state, "down") == 0 ? d->probe_at_ms : 0);
		buf_putc(b, '}');
	} else {
		if (ds->n == 0)
			buf_printf(b, "\n%-32s %-5s %8s %7s %7s  %s\n", "DESTINATION", "STATE",
			    "INFLIGHT", "QUEUED", "WAITING", "NEXT PROBE");
		rctl_text_pad(b, d->name, 33);
		buf_printf(b, "%-5s %8u %7zu %7zu  ", d->state, d->inflight, d->queued, d->waiting);
		if (strcmp(d->state, "down") == 0 && d->probe_at_ms != 0) {
			rctl_time(d->probe_at_ms, t, sizeof(t));
			buf_puts(b, t);
		} else
			buf_putc(b, '-');
		buf_putc(b, '\n');
	}
	ds->n++;
}

static int
rctl_hosts(struct rctl *c)
{
	struct rctl_hostv hv = { NULL, 0, 0 };
	struct rctl_dests ds = { c, 0 };
	struct buf *b = c->out;
	char t[32];
	size_t i;

	health_foreach(sched_health(c->s), rctl_host_add, &hv);
	if (hv.n > 1)
		qsort(hv.v, hv.n, sizeof(*hv.v), rctl_host_cmp);
	if (c->json)
		buf_puts(b, "{\"hosts\":[");
	else if (hv.n == 0)
		buf_puts(b, "no hosts known yet\n");
	else
		buf_printf(b, "%-32s %-24s %-7s %8s  %-20s  %s\n", "HOST", "ADDRESS", "STATE",
		    "FAILURES", "DOWN UNTIL", "LAST ERROR");
	for (i = 0; i < hv.n; i++) {
		const struct health_host *h = hv.v[i];
		bool down = h->state == HEALTH_DOWN;

		if (c->json) {
			buf_puts(b, i ? ",{\"host\":" : "{\"host\":");
			rctl_json_str(b, h->name[0] ? h->name : NULL);
			buf_puts(b, ",\"address\":");
			rctl_json_str(b, h->addr);
			buf_printf(b, ",\"state\":\"%s\",\"failures\":%u,\"down_until\":",
			    health_state_name(h->state), h->failures);
			rctl_json_time(c, b, down ? h->down_until_ms : 0);
			buf_puts(b, ",\"since\":");
			rctl_json_time(c, b, h->since_ms);
			buf_puts(b, ",\"last_attempt\":");
			rctl_json_time(c, b, h->last_attempt_ms);
			buf_puts(b, ",\"last_error\":");
			rctl_json_str(b, h->last_error[0] ? h->last_error : NULL);
			buf_printf(b, ",\"probing\":%s}", h->probing ? "true" : "false");
			continue;
		}
		rctl_text_pad(b, h->name[0] ? h->name : "-", 33);
		rctl_text_pad(b, h->addr, 25);
		buf_printf(b, "%-7s %8u  ", health_state_name(h->state), h->failures);
		if (down && h->down_until_ms != 0)
			rctl_time(h->down_until_ms, t, sizeof(t));
		else
			snprintf(t, sizeof(t), "-");
		buf_printf(b, "%-20s  ", t);
		rctl_text(b, h->last_error[0] ? h->last_error : NULL);
		buf_putc(b, '\n');
	}
	if (c->json)
		buf_puts(b, "],\"destinations\":[");
	sched_foreach_dest(c->s, rctl_dest_row, &ds);
	if (c->json)
		buf_puts(b, "]}\n");
	free(hv.v);
	return 0;
}

static int
rctl_hosts_reset(struct rctl *c)
{
	const char *host = c->pos[0];

	if (sched_host_reset(c->s, host) != 0) {
		buf_printf(c->out, "unknown host: %s (not in relayctl hosts)", host);
		return RELAY_ENOENT;
	}
	if (c->json) {
		buf_puts(c->out, "{\"reset\":");
		rctl_json_str(c->out, host);
		buf_puts(c->out, "}\n");
	} else
		buf_printf(c->out, "host %s reset: its destinations are probed now\n", host);
	return 0;
}

/* ------------------------------------------------------------------ */
/* route */

static int
rctl_route_set(struct rctl *c)
{
	const char *domain = c->pos[0], *hosts = c->pos[1], *p, *comma;
	struct buf err = BUF_INIT;
	int rc;

	if ((rc = sched_route_set(c->s, domain, hosts, &err)) != 0) {
		buf_printf(c->out, "route set %s: %s", domain,
		    err.len ? buf_cstr(&err) : "invalid route");
		buf_free(&err);
		return rc == RELAY_ENOENT ? RELAY_EINVAL : rc;
	}
	buf_free(&err);
	if (c->json) {
		buf_puts(c->out, "{\"domain\":");
		rctl_json_str(c->out, domain);
		buf_puts(c->out, ",\"hosts\":[");
		for (p = hosts; *p != '\0'; p = *comma ? comma + 1 : comma) {
			char *one;

			comma = strchr(p, ',');
			if (comma == NULL)
				comma = p + strlen(p);
			one = xstrndup(p, (size_t)(comma - p));
			buf_puts(c->out, p == hosts ? "" : ",");
			rctl_json_str(c->out, one);
			free(one);
		}
		buf_puts(c->out, "]}\n");
	} else if (strcmp(domain, "*") == 0)
		buf_printf(c->out, "route for * set to %s (flush the queue with: relayctl queue flush "
		    "--all)\n", hosts);
	else
		buf_printf(c->out, "route for %s set to %s (flush its mail with: relayctl queue flush "
		    "--domain %s)\n", domain, hosts, domain);
	return 0;
}

static int
rctl_route_clear(struct rctl *c)
{
	const char *domain = c->pos[0];

	if (sched_route_clear(c->s, domain) != 0) {
		buf_printf(c->out, "no run-time route for %s", domain);
		return RELAY_ENOENT;
	}
	if (c->json) {
		buf_puts(c->out, "{\"cleared\":");
		rctl_json_str(c->out, domain);
		buf_puts(c->out, "}\n");
	} else
		buf_printf(c->out, "route for %s cleared\n", domain);
	return 0;
}

static int
rctl_route_list(struct rctl *c)
{
	sched_route_list(c->s, c->json, c->out);
	return 0;
}

/* ------------------------------------------------------------------ */
/* stats: the queue by state and by destination domain. */

struct rctl_dom {
	char *name;                     /* lower-cased; NULL = free slot */
	size_t n;
	const char *dest;               /* a destination seen for it (borrowed) */
};

struct rctl_stats {
	struct rctl *c;
	size_t msgs;
	size_t pending, deferred, held, active;
	struct rctl_dom *dom;
	size_t cap, used;
};

static uint32_t
rctl_hash(const char *s, size_t len)
{
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch >= 'A' && ch <= 'Z')
			ch = (unsigned char)(ch - 'A' + 'a');
		h = (h ^ ch) * 16777619u;
	}
	return h;
}

static void
rctl_dom_grow(struct rctl_stats *st)
{
	struct rctl_dom *old = st->dom;
	size_t ocap = st->cap, i, j;

	st->cap = ocap ? ocap * 2 : 64;
	st->dom = xcalloc(st->cap, sizeof(*st->dom));
	for (i = 0; i < ocap; i++) {
		if (old[i].name == NULL)
			continue;
		j = rctl_hash(old[i].name, strlen(old[i].name)) & (st->cap - 1);
		while (st->dom[j].name != NULL)
			j = (j + 1) & (st->cap - 1);
		st->dom[j] = old[i];
	}
	free(old);
}

static struct rctl_dom *
rctl_dom_get(struct rctl_stats *st, const char *name)
{
	size_t len = strlen(name), j, k;

	if ((st->used + 1) * 10 >= st->cap * 7)
		rctl_dom_grow(st);
	j = rctl_hash(name, len) & (st->cap - 1);
	while (st->dom[j].name != NULL) {
		if (util_strcasecmp(st->dom[j].name, name) == 0)
			return &st->dom[j];
		j = (j + 1) & (st->cap - 1);
	}
	st->dom[j].name = xstrdup(name);
	for (k = 0; k < len; k++)
		if (st->dom[j].name[k] >= 'A' && st->dom[j].name[k] <= 'Z')
			st->dom[j].name[k] = (char)(st->dom[j].name[k] - 'A' + 'a');
	st->used++;
	return &st->dom[j];
}

static void
rctl_stats_msg(void *arg, const struct queue_msg *m)
{
	struct rctl_stats *st = arg;
	struct rctl_rstate rs;
	struct rctl_dom *d;
	size_t i;

	st->msgs++;
	for (i = 0; i < m->env.nrcpts; i++) {
		if (m->rcpt[i].state != RCPT_PENDING)
			continue;
		rctl_rcpt_state(st->c, m, i, &rs);
		if (strcmp(rs.name, "held") == 0)
			st->held++;
		else if (strcmp(rs.name, "deferred") == 0)
			st->deferred++;
		else if (strcmp(rs.name, "active") == 0)
			st->active++;
		else
			st->pending++;
		d = rctl_dom_get(st, rctl_domain_of(m->env.rcpts[i].addr));
		d->n++;
		if (rs.dest != NULL)
			d->dest = rs.dest;
	}
}

static int
rctl_dom_cmp(const void *a, const void *b)
{
	const struct rctl_dom *x = a, *y = b;

	if (x->n != y->n)
		return x->n > y->n ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* The state of the destination a top domain goes to. */
struct rctl_dest_find {
	const char *name, *alt;
	const char *state;
};

static void
rctl_dest_find(void *arg, const struct sched_dest_view *d)
{
	struct rctl_dest_find *f = arg;

	if (f->state == NULL && (util_strcasecmp(d->name, f->name) == 0 ||
	    (f->alt != NULL && util_strcasecmp(d->name, f->alt) == 0)))
		f->state = d->state;
}

static const char *
rctl_dom_state(struct rctl *c, const struct rctl_dom *d, struct buf *alt)
{
	struct rctl_dest_find f;

	buf_reset(alt);
	buf_printf(alt, "route:%s", d->name);
	f.name = d->dest != NULL ? d->dest : d->name;
	f.alt = d->dest != NULL ? NULL : buf_cstr(alt);
	f.state = NULL;
	sched_foreach_dest(c->s, rctl_dest_find, &f);
	if (f.state == NULL || strcmp(f.state, "new") == 0)
		return "unknown";
	return f.state;
}

static int
rctl_stats(struct rctl *c)
{
	struct rctl_stats st;
	struct buf *b = c->out, alt = BUF_INIT;
	size_t i, j, top;

	memset(&st, 0, sizeof(st));
	st.c = c;
	sched_foreach(c->s, rctl_stats_msg, &st);
	/* Compact the table, sort by count: the domains are few next to the recipients. */
	for (i = j = 0; i < st.cap; i++)
		if (st.dom[i].name != NULL)
			st.dom[j++] = st.dom[i];
	if (j > 1)
		qsort(st.dom, j, sizeof(*st.dom), rctl_dom_cmp);
	top = j < RCTL_TOP_DESTS ? j : RCTL_TOP_DESTS;
	if (c->json) {
		buf_printf(b, "{\"messages\":%zu,\"recipients\":{\"pending\":%zu,\"deferred\":%zu,"
		    "\"held\":%zu,\"active\":%zu},\"domains\":%zu,\"top_destinations\":[", st.msgs,
		    st.pending, st.deferred, st.held, st.active, j);
		for (i = 0; i < top; i++) {
			buf_puts(b, i ? ",{\"domain\":" : "{\"domain\":");
			rctl_json_str(b, st.dom[i].name);
			buf_printf(b, ",\"recipients\":%zu,\"state\":\"%s\"}", st.dom[i].n,
			    rctl_dom_state(c, &st.dom[i], &alt));
		}
		buf_puts(b, "]}");
	} else {
		buf_printf(b, "%-14s %zu\n", "queued", st.msgs);
		buf_printf(b, "%-14s %zu\n", "  pending", st.pending);
		buf_printf(b, "%-14s %zu\n", "  deferred", st.deferred);
		buf_printf(b, "%-14s %zu\n", "  held", st.held);
		buf_printf(b, "%-14s %zu\n", "  active", st.active);
		if (top > 0)
			buf_printf(b, "\n%-32s %10s  %s\n", "TOP DESTINATIONS", "RECIPIENTS", "STATE");
		for (i = 0; i < top; i++) {
			rctl_text_pad(b, st.dom[i].name, 33);
			buf_printf(b, "%10zu  %s\n", st.dom[i].n, rctl_dom_state(c, &st.dom[i], &alt));
		}
	}
	for (i = 0; i < j; i++)
		free(st.dom[i].name);
	free(st.dom);
	buf_free(&alt);
	return 0;
}

/* ------------------------------------------------------------------ */
/* The command table and the entry point. */

static const struct rctl_cmd rctl_cmds[] = {
	{ "queue", "list", 0, 0, RCTL_O_DOMAIN | RCTL_O_HELD, rctl_queue_list,
	  "queue list [--domain D] [--held]" },
	{ "queue", "show", 1, 1, 0, rctl_queue_show, "queue show QID" },
	{ "queue", "flush", 0, -1, RCTL_O_DOMAIN | RCTL_O_ALL | RCTL_O_TARGET, rctl_queue_action,
	  "queue flush QID... | --domain D | --all" },
	{ "queue", "hold", 0, -1, RCTL_O_DOMAIN | RCTL_O_TARGET, rctl_queue_action,
	  "queue hold QID... | --domain D" },
	{ "queue", "release", 0, -1, RCTL_O_DOMAIN | RCTL_O_TARGET, rctl_queue_action,
	  "queue release QID... | --domain D" },
	{ "queue", "delete", 0, -1, RCTL_O_DOMAIN | RCTL_O_TARGET, rctl_queue_action,
	  "queue delete QID... | --domain D" },
	{ "queue", "bounce", 1, -1, 0, rctl_queue_action, "queue bounce QID..." },
	{ "hosts", NULL, 0, 0, 0, rctl_hosts, "hosts" },
	{ "hosts", "reset", 1, 1, 0, rctl_hosts_reset, "hosts reset HOST" },
	{ "route", "set", 2, 2, 0, rctl_route_set, "route set DOMAIN HOST:PORT[,HOST:PORT...]" },
	{ "route", "clear", 1, 1, 0, rctl_route_clear, "route clear DOMAIN" },
	{ "route", "list", 0, 0, 0, rctl_route_list, "route list" },
	{ "stats", NULL, 0, 0, 0, rctl_stats, "stats" },
};

/* The longest pattern that matches argv ("hosts reset" over "hosts"). */
static const struct rctl_cmd *
rctl_match(int argc, char **argv, int *consumed)
{
	const struct rctl_cmd *best = NULL;
	size_t i;

	*consumed = 0;
	for (i = 0; i < RELAY_ARRAY_LEN(rctl_cmds); i++) {
		const struct rctl_cmd *cmd = &rctl_cmds[i];
		int n = cmd->sub != NULL ? 2 : 1;

		if (argc < n || strcmp(argv[0], cmd->word) != 0)
			continue;
		if (n == 2 && strcmp(argv[1], cmd->sub) != 0)
			continue;
		if (n > *consumed) {
			best = cmd;
			*consumed = n;
		}
	}
	return best;
}

/* Options and positional arguments after the command words; 0 or RELAY_EINVAL. */
static int
rctl_parse(const struct rctl_cmd *cmd, int argc, char **argv, struct rctl *c)
{
	int i, kinds;

	c->pos = xcalloc((size_t)argc + 1, sizeof(*c->pos));
	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--domain") == 0 && (cmd->opts & RCTL_O_DOMAIN)) {
			if (i + 1 >= argc || c->domain != NULL || argv[i + 1][0] == '\0')
				return RELAY_EINVAL;
			c->domain = argv[++i];
		} else if (strcmp(argv[i], "--all") == 0 && (cmd->opts & RCTL_O_ALL))
			c->all = true;
		else if (strcmp(argv[i], "--held") == 0 && (cmd->opts & RCTL_O_HELD))
			c->held = true;
		else if (strncmp(argv[i], "--", 2) == 0)
			return RELAY_EINVAL;
		else
			c->pos[c->npos++] = argv[i];
	}
	if (c->npos < cmd->min_pos || (cmd->max_pos >= 0 && c->npos > cmd->max_pos))
		return RELAY_EINVAL;
	if (cmd->opts & RCTL_O_TARGET) {
		kinds = (c->npos > 0) + (c->domain != NULL) + c->all;
		if (kinds != 1)
			return RELAY_EINVAL;
	}
	return 0;
}

int
router_control(struct router *r, int argc, char **argv, bool json, struct buf *out)
{
	const struct rctl_cmd *cmd;
	struct rctl c;
	int consumed, rc;

	memset(&c, 0, sizeof(c));
	c.r = r;
	c.s = router_sched(r);
	c.q = router_queue(r);
	c.json = json;
	c.out = out;
	c.now = util_now_ms();
	if (argc < 1 || (cmd = rctl_match(argc, argv, &consumed)) == NULL) {
		buf_printf(out, "unknown command: %s", argc > 0 ? argv[0] : "(none)");
		return RELAY_EINVAL;
	}
	if (c.s == NULL || c.q == NULL) {
		buf_puts(out, "the router is not running");
		return RELAY_ECLOSED;
	}
	c.cmd = cmd;
	if (rctl_parse(cmd, argc - consumed, argv + consumed, &c) != 0) {
		free(c.pos);
		buf_printf(out, "usage: relayctl %s", cmd->usage);
		return RELAY_EINVAL;
	}
	rc = cmd->run(&c);
	free(c.pos);
	return rc;
}
