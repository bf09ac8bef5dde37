/*
 * ndr.c - delivery status notifications: RFC 3464 reports inside an
 * RFC 3462 multipart/report (report-type=delivery-status), honouring the
 * RFC 3461 DSN options (NOTIFY, RET, ENVID, ORCPT), marked auto-replied
 * (RFC 3834), and put back into the normal queue with envelope sender <>.
 *
 * A report has three parts:
 *   1. text/plain; charset=utf-8: what happened, the remote server's words,
 *      and what the sender can do, in plain language;
 *   2. message/delivery-status: the machine-readable fields;
 *   3. text/rfc822-headers (the original's header section), or
 *      message/rfc822 (the whole original) for a failure report when the
 *      sender asked RET=FULL and the message is at most NDR_FULL_MAX bytes.
 *      Delay and success reports only ever return headers (RFC 3461 4.3).
 *
 * Logging: one `event=ndr` line per reported recipient, all carrying the same
 * qid= (original) and ndr_qid= (the report), so `grep ndr_qid=X` gives the
 * whole report and `grep rcpt=Y` finds what the sender was told about Y.
 * The lines are written when the report's commit is durable; a report that
 * could not be queued logs `event=ndr_failed` instead.  Reports that are not
 * sent log `event=ndr_suppressed` with reason=null_sender (the message is
 * itself a report or had sender <>: no report on a report, no backscatter)
 * or reason=notify (the recipient's NOTIFY excludes this kind).
 *
 * Owns: the report's bytes while they are built, and the small pending
 * record that carries the log lines to the commit callback.
 * Must never: report on a message whose envelope sender is <>; put a bare LF,
 * a control character or a line longer than 998 octets into a header it
 * writes; read more than NDR_FULL_MAX (+ headers cap) of the original; touch
 * the scheduler's state (the caller records QREC_REPORTED from the done
 * callback, once the report's commit is durable).
 *
 * Note on I/O: the original's headers (or, for RET=FULL, the message up to
 * NDR_FULL_MAX) are read with pread() from the queue file the relay itself
 * wrote moments or days ago.  This is a bounded local read on the loop
 * thread, the same kind queue_txn_write() does; no network I/O happens here.
 */
#include "ndr/ndr.h"
#include "common/codec.h"
#include "common/log.h"
#include "common/util.h"
#include "dkim/dkim.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NDR_FULL_MAX    (10u * 1024 * 1024)   /* largest original returned whole */
#define NDR_HDRS_MAX    (1024u * 1024)        /* largest header section returned */
#define NDR_CHUNK       (64u * 1024)
#define NDR_HDR_SOFT    78                    /* RFC 5322 2.1.1 SHOULD */
#define NDR_HDR_HARD    998                   /* RFC 5322 2.1.1 MUST */
#define NDR_WORD_MAX    900                   /* longer unbroken runs are split */
#define NDR_TEXT_WIDTH  76
#define NDR_EW_BYTES    45                    /* bytes per RFC 2047 B word (60 chars) */

/*
 * What differs between the four kinds of report.
 */
struct ndr_kind_info {
	const char *reason;          /* log reason= */
	const char *subject;
	const char *action;          /* RFC 3464 Action */
	const char *status;          /* Status when the caller has none */
	const char *classes;         /* status classes that fit the Action */
	unsigned notify;             /* the NOTIFY bit that asks for it */
	bool may_return_full;        /* RET=FULL honoured */
	const char *intro;           /* first paragraph of the text part */
	const char *verdict;         /* per recipient, after the address */
	const char *content_desc;    /* Content-Description of part 3 (headers) */
};

static const struct ndr_kind_info ndr_kinds[] = {
	[NDR_FAILED] = {
		"failed", "Undelivered Mail Returned to Sender", "failed", "5.0.0", "5",
		ENV_NOTIFY_FAILURE, true,
		"Your message could not be delivered to one or more of its recipients. "
		"This is a permanent error: it will not be retried. "
		"The reason for each recipient is given below.",
		"could not be delivered (permanent error)",
		"Undelivered Message Headers",
	},
	[NDR_EXPIRED] = {
		"expired", "Undelivered Mail Returned to Sender", "failed", "4.4.7", "45",
		ENV_NOTIFY_FAILURE, true,
		"Your message could not be delivered to one or more of its recipients "
		"within the time allowed, despite repeated attempts. "
		"We have given up; the reason for each recipient is given below.",
		"could not be delivered in time (gave up)",
		"Undelivered Message Headers",
	},
	[NDR_DELAYED] = {
		"delayed", "Delayed Mail (still being retried)", "delayed", "4.0.0", "4",
		ENV_NOTIFY_DELAY, false,
		"Your message has not yet been delivered to one or more of its "
		"recipients. This is only a warning: the message is still queued "
		"and we will keep trying. No action is needed on your part.",
		"not delivered yet (still trying)",
		"Delayed Message Headers",
	},
	[NDR_SUCCESS] = {
		/* relayd never delivers to a mailbox: a notice of its own is only
		 * made when the next hop does not do DSN, so it says "relayed"
		 * (RFC 3461 5.2.2); a DSN next hop sends its own (5.2.3) */
		"delivered", "Successful Mail Delivery Report", "relayed", "2.0.0", "2",
		ENV_NOTIFY_SUCCESS, false,
		"Your message was relayed to the mail servers of the recipients "
		"listed below, as you asked to be told. Those servers do not send "
		"delivery notifications, so this is the last you will hear of it "
		"unless they report a problem.",
		"was relayed to the recipient's mail server",
		"Delivered Message Headers",
	},
};

/* The original message as it goes into part 3. */
struct ndr_original {
	struct buf data;             /* CRLF text; empty when unreadable */
	bool full;                   /* data is the whole message (message/rfc822) */
	bool readable;
	const char *note;            /* why less than asked for, or NULL */
};

/* What the commit callback needs to log the report (nothing points into m). */
struct ndr_pending_rcpt {
	char *addr;
	char *status;
	char *remote;
	unsigned attempts;
	uint64_t down_since_ms;
};

struct ndr_pending {
	char qid[QID_MAX];
	char ndr_qid[QID_MAX];
	char *to;
	const char *reason;
	struct relay_stats *stats;
	struct ndr_pending_rcpt *rcpt;
	size_t n;
	ndr_done_cb *done;           /* the caller's, told how the commit ended */
	void *done_arg;
};

static const struct ndr_kind_info *
ndr_kind_info(enum ndr_kind kind)
{
	if ((unsigned)kind >= RELAY_ARRAY_LEN(ndr_kinds))
		fatalx("%s: bad kind %d", __func__, (int)kind);
	return &ndr_kinds[kind];
}

/* Does this recipient's NOTIFY ask for a report of this kind? (RFC 3461 4.1) */
static bool
ndr_wanted(unsigned notify, const struct ndr_kind_info *ki)
{
	if (notify & ENV_NOTIFY_NEVER)
		return false;
	if (notify == 0)
		notify = ENV_NOTIFY_FAILURE | ENV_NOTIFY_DELAY;
	return (notify & ki->notify) != 0;
}

static bool
ndr_has_8bit(const char *s, size_t len)
{
	size_t i;

	for (i = 0; s != NULL && i < len; i++)
		if ((unsigned char)s[i] >= 0x80)
			return true;
	return false;
}

static bool
ndr_str_8bit(const char *s)
{
	return s != NULL && ndr_has_8bit(s, strlen(s));
}

/*
 * Cleaning: every byte that reaches the report goes through one of these.
 */

/* Text for the text/plain part: controls become spaces, invalid UTF-8 '?'. */
static void
ndr_clean_text(struct buf *out, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t len = s ? strlen(s) : 0, i = 0, l;

	while (i < len) {
		if (p[i] < 0x20 || p[i] == 0x7f) {
			buf_putc(out, ' ');
			i++;
		} else if ((l = codec_utf8_len(p + i, len - i)) == 0) {
			buf_putc(out, '?');
			i++;
		} else {
			buf_append(out, p + i, l);
			i += l;
		}
	}
}

/* A field of the delivery-status part: printable ASCII only; other bytes
 * are written as \x{HH} (as RFC 6533 does for code points) so the part
 * stays 7bit and nothing is lost. */
static void
ndr_clean_field(struct buf *out, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	for (; p != NULL && *p != '\0'; p++) {
		if (*p == '\r' || *p == '\n' || *p == '\t')
			buf_putc(out, ' ');
		else if (*p < 0x20 || *p >= 0x7f)
			buf_printf(out, "\\x{%02X}", *p);
		else
			buf_putc(out, (char)*p);
	}
}

/* A host name for From:, Message-ID: and Reporting-MTA: letters, digits,
 * '-', '.', and '[', ']', ':' for address literals; anything else '-'. */
static void
ndr_clean_host(struct buf *out, const char *s)
{
	const char *p;
	size_t start = out->len;

	for (p = s; p != NULL && *p != '\0' && out->len - start < 253; p++) {
		char c = *p;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '.' ||
		    c == '[' || c == ']' || c == ':')
			buf_putc(out, c);
		else
			buf_putc(out, '-');
	}
	if (out->len == start)
		buf_puts(out, "localhost");
}

/* Is s an enhanced status code "c.sss.ddd" (RFC 3463)? */
static bool
ndr_status_valid(const char *s)
{
	int part, digits;

	if (s == NULL || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
		return false;
	s += 2;
	for (part = 0; part < 2; part++) {
		for (digits = 0; *s >= '0' && *s <= '9'; s++)
			digits++;
		if (digits < 1 || digits > 3)
			return false;
		if (part == 0 && *s++ != '.')
			return false;
	}
	return *s == '\0';
}

/* The Status for a recipient: the caller's if it is well formed and fits
 * the Action (a "failed" report never says 4.x.x), else the kind's default. */
static const char *
ndr_status_of(const struct ndr_rcpt *nr, const struct ndr_kind_info *ki)
{
	if (ndr_status_valid(nr->status) && strchr(ki->classes, nr->status[0]) != NULL)
		return nr->status;
	return ki->status;
}

/* Does the diagnostic look like an SMTP reply ("550 5.1.1 ...")? */
static bool
ndr_is_smtp_reply(const char *s)
{
	return s != NULL && s[0] >= '2' && s[0] <= '5' && s[1] >= '0' && s[1] <= '9' &&
	    s[2] >= '0' && s[2] <= '9' && (s[3] == ' ' || s[3] == '-' || s[3] == '\0');
}

/*
 * Headers.
 */

/* RFC 2047 B-encoding of s as encoded-words separated by spaces (so that the
 * folder may break between them), never splitting a UTF-8 character. */
static void
ndr_rfc2047(struct buf *out, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t len = strlen(s), i = 0, take, l;

	while (i < len) {
		take = 0;
		while (i + take < len) {
			l = codec_utf8_len(p + i + take, len - i - take);
			if (l == 0)
				l = 1;
			if (take + l > NDR_EW_BYTES)
				break;
			take += l;
		}
		if (i > 0)
			buf_putc(out, ' ');
		buf_puts(out, "=?utf-8?B?");
		codec_base64_encode(out, p + i, take);
		buf_puts(out, "?=");
		i += take;
	}
}

void
ndr_header_put(struct buf *out, const char *name, const char *value, unsigned flags)
{
	struct buf clean = BUF_INIT, enc = BUF_INIT;
	const char *v, *tok, *end;
	size_t col, len, namelen = strlen(name);

	/* Unfold and neutralise: no CR, LF or other control survives. */
	for (v = value ? value : ""; *v != '\0'; v++) {
		unsigned char c = (unsigned char)*v;
		buf_putc(&clean, (c < 0x20 || c == 0x7f) ? ' ' : (char)c);
	}
	v = buf_cstr(&clean);
	if ((flags & NDR_HDR_TEXT) && ndr_str_8bit(v)) {
		ndr_rfc2047(&enc, v);
		v = buf_cstr(&enc);
	}

	buf_append(out, name, namelen);
	buf_putc(out, ':');
	col = namelen + 1;
	for (tok = v;; tok = end + 1) {
		end = strchr(tok, ' ');
		len = end ? (size_t)(end - tok) : strlen(tok);
		/* Fold before this word if it would overflow and folding
		 * helps: the line already carries a word, or the word fits a
		 * line of its own (never leave a whitespace-only line). */
		if (len > 0 && col + 1 + len > NDR_HDR_SOFT &&
		    (col > namelen + 1 || 1 + len <= NDR_HDR_SOFT)) {
			buf_puts(out, "\r\n");
			col = 0;
		}
		buf_putc(out, ' ');
		col++;
		/* A run longer than any legal line is split (adds a space). */
		while (len > NDR_WORD_MAX) {
			buf_append(out, tok, NDR_WORD_MAX);
			buf_puts(out, "\r\n ");
			tok += NDR_WORD_MAX;
			len -= NDR_WORD_MAX;
			col = 1;
		}
		buf_append(out, tok, len);
		col += len;
		if (end == NULL)
			break;
	}
	buf_puts(out, "\r\n");
	buf_free(&clean);
	buf_free(&enc);
}

/* A delivery-status field: "Name: value" with value cleaned to ASCII. */
static void
ndr_field(struct buf *out, const char *name, const char *prefix, const char *value)
{
	struct buf v = BUF_INIT;

	if (prefix != NULL)
		buf_puts(&v, prefix);
	ndr_clean_field(&v, value);
	ndr_header_put(out, name, buf_cstr(&v), 0);
	buf_free(&v);
}

static void
ndr_field_date(struct buf *out, const char *name, uint64_t ms)
{
	char date[64];

	util_rfc5322_date(ms, date, sizeof(date));
	ndr_header_put(out, name, date, 0);
}

/*
 * The text part.
 */

/* Append text word-wrapped at NDR_TEXT_WIDTH, each line starting with indent. */
static void
ndr_wrap(struct buf *out, const char *indent, const char *text)
{
	struct buf clean = BUF_INIT;
	const char *tok, *end;
	size_t col = 0, len, ilen = strlen(indent);
	bool fresh = true;

	ndr_clean_text(&clean, text);
	for (tok = buf_cstr(&clean);; tok = end + 1) {
		end = strchr(tok, ' ');
		len = end ? (size_t)(end - tok) : strlen(tok);
		if (len > 0) {
			if (!fresh && col + 1 + len > NDR_TEXT_WIDTH) {
				buf_puts(out, "\r\n");
				fresh = true;
			}
			if (fresh) {
				buf_puts(out, indent);
				col = ilen;
				fresh = false;
			} else {
				buf_putc(out, ' ');
				col++;
			}
			while (len > NDR_WORD_MAX) {
				buf_append(out, tok, NDR_WORD_MAX);
				buf_puts(out, "\r\n");
				buf_puts(out, indent);
				tok += NDR_WORD_MAX;
				len -= NDR_WORD_MAX;
				col = ilen;
			}
			buf_append(out, tok, len);
			col += len;
		}
		if (end == NULL)
			break;
	}
	if (!fresh)
		buf_puts(out, "\r\n");
	buf_free(&clean);
}

static void
ndr_wrapf(struct buf *out, const char *indent, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
ndr_wrapf(struct buf *out, const char *indent, const char *fmt, ...)
{
	struct buf t = BUF_INIT;
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&t, fmt, ap);
	va_end(ap);
	ndr_wrap(out, indent, buf_cstr(&t));
	buf_free(&t);
}

/* What the sender can do, by kind and status class. */
static const char *
ndr_advice(enum ndr_kind kind, const char *status)
{
	switch (kind) {
	case NDR_FAILED:
		if (strncmp(status, "5.1.", 4) == 0)
			return "What you can do: check the address for typing mistakes "
			    "and send the message again, or ask the recipient for a "
			    "correct address.";
		if (strncmp(status, "5.2.", 4) == 0)
			return "What you can do: the recipient's mailbox cannot take this "
			    "message (it may be full or the message too large); try "
			    "again later, send a smaller message, or reach the recipient "
			    "another way.";
		if (strncmp(status, "5.7.", 4) == 0)
			return "What you can do: the recipient's server refused the message "
			    "by policy; contact the recipient another way, or forward "
			    "this report to your mail administrator.";
		return "What you can do: check the address and the remote server's "
		    "reason above; if you cannot fix the problem, forward this "
		    "report to your mail administrator.";
	case NDR_EXPIRED:
		return "What you can do: the recipient's mail system may be down for "
		    "a long time or misconfigured. Send the message again later, or "
		    "reach the recipient another way.";
	case NDR_DELAYED:
		return "What you can do: nothing. You will hear from us again only if "
		    "we finally give up.";
	case NDR_SUCCESS:
		return NULL;
	}
	return NULL;
}

static void
ndr_text_rcpt(struct buf *out, const struct queue_msg *m, enum ndr_kind kind,
    const struct ndr_rcpt *nr, const struct ndr_params *p)
{
	const struct ndr_kind_info *ki = ndr_kind_info(kind);
	const char *status = ndr_status_of(nr, ki);
	const char *advice;
	char date[64];

	ndr_wrapf(out, "", "<%s>: %s (%s)", m->env.rcpts[nr->index].addr, ki->verdict, status);
	if (nr->diagnostic != NULL && nr->diagnostic[0] != '\0') {
		if (nr->remote_host != NULL)
			ndr_wrapf(out, "    ", "The %s server %s said:",
			    kind == NDR_SUCCESS ? "receiving" : "remote", nr->remote_host);
		else
			ndr_wrap(out, "    ", "Reason:");
		ndr_wrap(out, "        ", nr->diagnostic);
	} else if (nr->remote_host != NULL) {
		ndr_wrapf(out, "    ", "Mail server: %s", nr->remote_host);
	}
	if (kind == NDR_EXPIRED && nr->down_since_ms != 0) {
		util_rfc5322_date(nr->down_since_ms, date, sizeof(date));
		ndr_wrapf(out, "    ", "The destination has been unreachable since %s; "
		    "we tried %u time%s.", date, nr->attempts, nr->attempts == 1 ? "" : "s");
	} else if (kind == NDR_EXPIRED || kind == NDR_DELAYED) {
		ndr_wrapf(out, "    ", "We tried %u time%s.", nr->attempts,
		    nr->attempts == 1 ? "" : "s");
	}
	if (kind == NDR_DELAYED && nr->down_since_ms != 0) {
		util_rfc5322_date(nr->down_since_ms, date, sizeof(date));
		ndr_wrapf(out, "    ", "The destination has been unreachable since %s.", date);
	}
	if (kind == NDR_DELAYED && p->will_retry_until_ms != 0) {
		util_rfc5322_date(p->will_retry_until_ms, date, sizeof(date));
		ndr_wrapf(out, "    ", "We will keep trying until %s.", date);
	}
	if ((advice = ndr_advice(kind, status)) != NULL)
		ndr_wrap(out, "    ", advice);
	buf_puts(out, "\r\n");
}

static void
ndr_text_part(struct buf *out, const struct queue_msg *m, enum ndr_kind kind,
    const struct ndr_rcpt *rcpts, size_t n, const struct ndr_params *p,
    const char *host, const struct ndr_original *orig)
{
	const struct ndr_kind_info *ki = ndr_kind_info(kind);
	char date[64], age[32];
	size_t i;

	ndr_wrapf(out, "", "This is the mail delivery system at %s.", host);
	buf_puts(out, "\r\n");
	ndr_wrap(out, "", ki->intro);
	if (kind == NDR_EXPIRED && p->now_ms > m->env.arrival_ms) {
		util_format_duration(p->now_ms - m->env.arrival_ms, age, sizeof(age));
		ndr_wrapf(out, "", "The message was in the queue for %s.", age);
	}
	if (p->reason_text != NULL && p->reason_text[0] != '\0')
		ndr_wrap(out, "", p->reason_text);
	buf_puts(out, "\r\n");
	for (i = 0; i < n; i++)
		ndr_text_rcpt(out, m, kind, &rcpts[i], p);

	ndr_wrap(out, "", "About your message:");
	ndr_wrapf(out, "    ", "Queue ID: %s", m->qid);
	ndr_wrapf(out, "    ", "Sender: <%s>", m->env.sender);
	util_rfc5322_date(m->env.arrival_ms, date, sizeof(date));
	ndr_wrapf(out, "    ", "Received: %s", date);
	if (m->env.envid != NULL)
		ndr_wrapf(out, "    ", "Envelope ID: %s", m->env.envid);
	buf_puts(out, "\r\n");
	if (orig->note != NULL)
		ndr_wrap(out, "", orig->note);
	else if (orig->full)
		ndr_wrap(out, "", "Your message is attached in full.");
	else if (orig->readable)
		ndr_wrap(out, "", "The headers of your message are attached.");
}

/*
 * The delivery-status part (RFC 3464 section 2).
 */

static void
ndr_status_part(struct buf *out, const struct queue_msg *m, enum ndr_kind kind,
    const struct ndr_rcpt *rcpts, size_t n, const struct ndr_params *p, const char *host)
{
	const struct ndr_kind_info *ki = ndr_kind_info(kind);
	const struct ndr_rcpt *nr;
	const struct env_rcpt *er;
	size_t i;

	ndr_field(out, "Reporting-MTA", "dns; ", host);
	ndr_field(out, "X-Relayd-Queue-ID", NULL, m->qid);
	if (m->env.envid != NULL)
		ndr_field(out, "Original-Envelope-Id", NULL, m->env.envid);
	ndr_field_date(out, "Arrival-Date", m->env.arrival_ms);
	for (i = 0; i < n; i++) {
		nr = &rcpts[i];
		er = &m->env.rcpts[nr->index];
		buf_puts(out, "\r\n");
		if (er->orcpt != NULL && er->orcpt[0] != '\0')
			ndr_field(out, "Original-Recipient", NULL, er->orcpt);
		ndr_field(out, "Final-Recipient", "rfc822; ", er->addr);
		ndr_header_put(out, "Action", ki->action, 0);
		ndr_header_put(out, "Status", ndr_status_of(nr, ki), 0);
		if (nr->remote_host != NULL && nr->remote_host[0] != '\0')
			ndr_field(out, "Remote-MTA", "dns; ", nr->remote_host);
		if (nr->diagnostic != NULL && nr->diagnostic[0] != '\0')
			ndr_field(out, "Diagnostic-Code",
			    ndr_is_smtp_reply(nr->diagnostic) ? "smtp; " : "X-Relayd; ",
			    nr->diagnostic);
		if (nr->last_attempt_ms != 0)
			ndr_field_date(out, "Last-Attempt-Date", nr->last_attempt_ms);
		if (kind == NDR_DELAYED && p->will_retry_until_ms != 0)
			ndr_field_date(out, "Will-Retry-Until", p->will_retry_until_ms);
	}
}

/*
 * The original message.
 */

/* Length of the header section of p[0..len) (through the LF ending its last
 * line), or (size_t)-1 when no empty line was seen; the scan resumes near
 * from, where a previous call on a shorter prefix stopped. */
static size_t
ndr_header_end(const char *p, size_t len, size_t from)
{
	size_t i;

	if (from == 0 && len >= 1 && p[0] == '\n')
		return 0;
	if (from == 0 && len >= 2 && p[0] == '\r' && p[1] == '\n')
		return 0;
	for (i = from > 2 ? from - 2 : 0; i + 1 < len; i++) {
		if (p[i] != '\n')
			continue;
		if (p[i + 1] == '\n')
			return i + 1;
		if (p[i + 1] == '\r' && i + 2 < len && p[i + 2] == '\n')
			return i + 1;
	}
	return (size_t)-1;
}

static void
ndr_original_load(const struct queue_msg *m, const char *path, enum ndr_kind kind,
    struct ndr_original *o)
{
	const struct ndr_kind_info *ki = ndr_kind_info(kind);
	bool want_full = ki->may_return_full && m->env.ret == ENV_RET_FULL;
	uint64_t limit;
	size_t end, scanned = 0;
	ssize_t got;
	int fd;

	memset(o, 0, sizeof(*o));
	if (want_full && m->body_len > NDR_FULL_MAX) {
		want_full = false;
		o->note = "Your message was too large to be returned in full; "
		    "only its headers are attached.";
	}
	fd = path != NULL ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	if (fd < 0) {
		o->note = "The original message could not be read, so it is not attached.";
		return;
	}
	limit = want_full ? m->body_len : (m->body_len < NDR_HDRS_MAX ? m->body_len : NDR_HDRS_MAX);
	for (;;) {
		size_t want = limit - o->data.len < NDR_CHUNK ? (size_t)(limit - o->data.len) : NDR_CHUNK;
		if (want == 0)
			break;
		buf_reserve(&o->data, want);
		got = pread(fd, o->data.data + o->data.len, want,
		    (off_t)(m->body_offset + o->data.len));
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		o->data.len += (size_t)got;
		o->data.data[o->data.len] = '\0';
		if (!want_full) {
			end = ndr_header_end(o->data.data, o->data.len, scanned);
			if (end != (size_t)-1) {
				buf_truncate(&o->data, end);
				break;
			}
			scanned = o->data.len;
		}
	}
	close(fd);
	o->readable = true;
	o->full = want_full;
	if (want_full && o->data.len < m->body_len) {
		o->full = false;
		o->note = "Your message could only be partly read; the part that "
		    "could be read is attached as headers.";
		end = ndr_header_end(o->data.data ? o->data.data : "", o->data.len, 0);
		if (end != (size_t)-1)
			buf_truncate(&o->data, end);
	} else if (!want_full && o->data.len == NDR_HDRS_MAX && o->data.len < m->body_len) {
		/* No end of headers within the cap: cut at the last whole line. */
		char *nl = memrchr(o->data.data, '\n', o->data.len);
		buf_truncate(&o->data, nl ? (size_t)(nl - o->data.data) + 1 : 0);
		o->note = "Your message's headers were too large to be returned in full; "
		    "they are truncated.";
	}
	if (o->data.len > 0 && o->data.data[o->data.len - 1] != '\n')
		buf_puts(&o->data, "\r\n");
}

static void
ndr_original_free(struct ndr_original *o)
{
	buf_free(&o->data);
}

/*
 * Assembly.
 */

static void
ndr_part_header(struct buf *out, const char *boundary, const char *type,
    const char *desc, bool eightbit)
{
	buf_printf(out, "\r\n--%s\r\n", boundary);
	ndr_header_put(out, "Content-Type", type, 0);
	if (desc != NULL)
		ndr_header_put(out, "Content-Description", desc, NDR_HDR_TEXT);
	ndr_header_put(out, "Content-Transfer-Encoding", eightbit ? "8bit" : "7bit", 0);
	buf_puts(out, "\r\n");
}

/* The recipients of rcpts[0..n) that asked for this kind, into *out (caller frees). */
static size_t
ndr_select(const struct queue_msg *m, enum ndr_kind kind, const struct ndr_rcpt *rcpts,
    size_t n, struct ndr_rcpt **out)
{
	const struct ndr_kind_info *ki = ndr_kind_info(kind);
	size_t i, k = 0;

	*out = xcalloc(n ? n : 1, sizeof(**out));
	for (i = 0; i < n; i++) {
		if (rcpts[i].index < 0 || (size_t)rcpts[i].index >= m->env.nrcpts)
			fatalx("%s: %s: recipient index %d out of range", __func__,
			    m->qid, rcpts[i].index);
		if (ndr_wanted(m->env.rcpts[rcpts[i].index].notify, ki))
			(*out)[k++] = rcpts[i];
	}
	return k;
}

static int
ndr_build(const struct queue_msg *m, enum ndr_kind kind, const struct ndr_rcpt *rcpts,
    size_t n, const struct ndr_params *p, const char *ndr_qid,
    const struct ndr_original *orig, struct buf *out)
{
	const struct ndr_kind_info *ki = ndr_kind_info(kind);
	struct buf host = BUF_INIT, boundary = BUF_INIT, text = BUF_INIT;
	struct buf status = BUF_INIT, v = BUF_INIT;
	bool text8, orig8;
	char date[64];
	unsigned tries;

	if (n == 0)
		return RELAY_EINVAL;
	ndr_clean_host(&host, p->reporting_mta);

	/* The boundary names both queue ids; if the original happens to
	 * contain it, add a counter until it does not. */
	for (tries = 0;; tries++) {
		buf_reset(&boundary);
		buf_printf(&boundary, "=_relayd_ndr_%s_%s", ndr_qid, m->qid);
		if (tries > 0)
			buf_printf(&boundary, "_%u", tries);
		if (orig->data.len == 0 || memmem(orig->data.data, orig->data.len,
		    boundary.data, boundary.len) == NULL)
			break;
	}

	ndr_text_part(&text, m, kind, rcpts, n, p, buf_cstr(&host), orig);
	ndr_status_part(&status, m, kind, rcpts, n, p, buf_cstr(&host));
	text8 = ndr_has_8bit(text.data, text.len);
	orig8 = ndr_has_8bit(orig->data.data, orig->data.len);

	util_rfc5322_date(p->now_ms, date, sizeof(date));
	ndr_header_put(out, "Date", date, 0);
	buf_printf(&v, "Mail Delivery System <MAILER-DAEMON@%s>", buf_cstr(&host));
	ndr_header_put(out, "From", buf_cstr(&v), 0);
	buf_reset(&v);
	buf_printf(&v, "<%s>", m->env.sender);
	ndr_header_put(out, "To", buf_cstr(&v), 0);
	ndr_header_put(out, "Subject", ki->subject, NDR_HDR_TEXT);
	buf_reset(&v);
	buf_printf(&v, "<%s.%llu@%s>", ndr_qid, (unsigned long long)p->now_ms, buf_cstr(&host));
	ndr_header_put(out, "Message-ID", buf_cstr(&v), 0);
	ndr_header_put(out, "Auto-Submitted", "auto-replied", 0);
	ndr_header_put(out, "MIME-Version", "1.0", 0);
	buf_printf(out, "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	    "\tboundary=\"%s\"\r\n", buf_cstr(&boundary));
	if (text8 || orig8)
		ndr_header_put(out, "Content-Transfer-Encoding", "8bit", 0);
	buf_puts(out, "\r\nThis is a MIME-encapsulated message.\r\n");

	ndr_part_header(out, buf_cstr(&boundary), "text/plain; charset=utf-8",
	    "Notification", text8);
	buf_append(out, text.data, text.len);
	ndr_part_header(out, buf_cstr(&boundary), "message/delivery-status",
	    "Delivery report", false);
	buf_append(out, status.data, status.len);
	if (orig->readable) {
		ndr_part_header(out, buf_cstr(&boundary),
		    orig->full ? "message/rfc822" : "text/rfc822-headers",
		    orig->full ? "Undelivered Message" : ki->content_desc, orig8);
		buf_append(out, orig->data.data, orig->data.len);
	}
	buf_printf(out, "\r\n--%s--\r\n", buf_cstr(&boundary));

	buf_free(&host);
	buf_free(&boundary);
	buf_free(&text);
	buf_free(&status);
	buf_free(&v);
	return 0;
}

int
ndr_format(const struct queue_msg *m, const char *path, enum ndr_kind kind,
    const struct ndr_rcpt *rcpts, size_t n, const struct ndr_params *p, const char *ndr_qid,
    struct buf *out)
{
	struct ndr_original orig;
	struct ndr_rcpt *sel;
	size_t k;
	int rc;

	k = ndr_select(m, kind, rcpts, n, &sel);
	if (k == 0) {
		free(sel);
		return RELAY_ENOENT;
	}
	ndr_original_load(m, path, kind, &orig);
	rc = ndr_build(m, kind, sel, k, p, ndr_qid, &orig, out);
	ndr_original_free(&orig);
	free(sel);
	return rc;
}

/*
 * Sending.
 */

static void
ndr_pending_free(struct ndr_pending *np)
{
	size_t i;

	for (i = 0; i < np->n; i++) {
		free(np->rcpt[i].addr);
		free(np->rcpt[i].status);
		free(np->rcpt[i].remote);
	}
	free(np->rcpt);
	free(np->to);
	free(np);
}

static void ndr_committed(void *arg, int err, const char *qid);

/* A report being signed on the thread pool; then committed (or failed). */
struct ndr_sign {
	uv_work_t req;
	struct queue_txn *t;
	queue_commit_cb *cb;
	void *arg;
	char qid[QID_MAX];
	struct dkim_keys *keys;
	struct dkim_msg *msg;
	const char *domain;          /* in keys */
	uint64_t now_s;
	struct buf out, ids, err;
	int rc;
};

static void
ndr_sign_work(uv_work_t *req)
{
	struct ndr_sign *w = req->data;

	w->rc = dkim_sign(w->keys, w->domain, w->msg, NULL, w->now_s, &w->out, &w->ids,
	    &w->err);
}

static void
ndr_sign_done(uv_work_t *req, int status)
{
	struct ndr_sign *w = req->data;
	struct log_line l;

	if (status != 0 && w->rc == 0) {
		w->rc = -1;
		buf_puts(&w->err, uv_strerror(status));
	}
	if (w->rc == 0) {
		queue_txn_prefix(w->t, buf_cstr(&w->out), buf_cstr(&w->ids));
		queue_txn_commit(w->t, w->cb, w->arg);
	} else {
		log_begin(&l, LOG_ERR, "dkim_sign_failed");
		log_kv(&l, "qid", w->qid);
		log_kv(&l, "domain", w->domain);
		log_kv(&l, "error", buf_cstr(&w->err));
		log_end(&l);
		queue_txn_abort(w->t);
		w->cb(w->arg, RELAY_EIO, NULL);      /* never an unsigned report */
	}
	dkim_msg_free(w->msg);
	dkim_keys_unref(w->keys);
	buf_free(&w->out);
	buf_free(&w->ids);
	buf_free(&w->err);
	free(w);
}

void
ndr_commit_signed(struct queue_txn *t, const struct buf *text, const struct ndr_params *p,
    queue_commit_cb *cb, void *arg)
{
	const char *domain = NULL;
	struct ndr_sign *w;

	if (p->dkim != NULL && p->loop != NULL)
		domain = dkim_keys_domain_for_host(p->dkim, p->reporting_mta);
	if (domain == NULL) {
		queue_txn_commit(t, cb, arg);
		return;
	}
	w = xcalloc(1, sizeof(*w));
	w->req.data = w;
	w->t = t;
	w->cb = cb;
	w->arg = arg;
	snprintf(w->qid, sizeof(w->qid), "%s", queue_txn_qid(t));
	w->keys = dkim_keys_ref(p->dkim);
	w->domain = domain;
	w->now_s = p->now_ms / 1000;
	w->msg = dkim_msg_new();
	dkim_msg_write(w->msg, text->data, text->len);
	if (uv_queue_work(p->loop, &w->req, ndr_sign_work, ndr_sign_done) != 0)
		fatalx("%s: uv_queue_work failed", __func__);
}

/* The report is durable (or could not be queued): log it, count it, tell the caller. */
static void
ndr_committed(void *arg, int err, const char *qid)
{
	struct ndr_pending *np = arg;
	struct log_line l;
	char date[40];
	size_t i;

	if (err != 0) {
		log_begin(&l, LOG_ERR, "ndr_failed");
		log_kv(&l, "qid", np->qid);
		log_kv(&l, "ndr_qid", np->ndr_qid);
		log_kv(&l, "to", np->to);
		log_kv(&l, "reason", np->reason);
		log_kvi(&l, "error", err);
		log_end(&l);
		if (np->done != NULL)
			np->done(np->done_arg, err, np->ndr_qid);
		ndr_pending_free(np);
		return;
	}
	for (i = 0; i < np->n; i++) {
		const struct ndr_pending_rcpt *pr = &np->rcpt[i];
		log_begin(&l, LOG_INFO, "ndr");
		log_kv(&l, "qid", np->qid);
		log_kv(&l, "ndr_qid", np->ndr_qid);
		log_kv(&l, "to", np->to);
		log_kv(&l, "reason", np->reason);
		log_kv(&l, "rcpt", pr->addr);
		log_kv(&l, "status", pr->status);
		log_kvu(&l, "attempts", pr->attempts);
		if (pr->down_since_ms != 0) {
			util_rfc3339(pr->down_since_ms, date, sizeof(date));
			log_kv(&l, "down_since", date);
		}
		log_kv(&l, "remote", pr->remote);
		log_end(&l);
	}
	if (np->stats != NULL)
		np->stats->ndr_sent++;
	if (np->done != NULL)
		np->done(np->done_arg, 0, np->ndr_qid);
	ndr_pending_free(np);
}

static void
ndr_log_suppressed(const struct queue_msg *m, const char *rcpt, const char *reason,
    const struct ndr_kind_info *ki)
{
	struct log_line l;

	log_begin(&l, LOG_INFO, "ndr_suppressed");
	log_kv(&l, "qid", m->qid);
	log_kv(&l, "rcpt", rcpt);
	log_kv(&l, "reason", reason);
	log_kv(&l, "report", ki->reason);
	log_end(&l);
}

int
ndr_send(struct queue *q, const struct queue_msg *m, enum ndr_kind kind,
    const struct ndr_rcpt *rcpts, size_t n, const struct ndr_params *p,
    struct relay_stats *stats, char *ndr_qid, ndr_done_cb *done, void *done_arg)
{
	const struct ndr_kind_info *ki = ndr_kind_info(kind);
	struct ndr_original orig;
	struct ndr_rcpt *sel;
	struct ndr_pending *np;
	struct queue_txn *t;
	struct envelope env;
	struct env_rcpt er;
	struct buf out = BUF_INIT;
	char pathbuf[PATH_MAX];
	size_t i, k;
	int rc;

	ndr_qid[0] = '\0';
	if (n == 0)
		return 0;
	if (m->env.sender == NULL || m->env.sender[0] == '\0') {
		ndr_log_suppressed(m, NULL, "null_sender", ki);
		return 0;
	}
	k = ndr_select(m, kind, rcpts, n, &sel);
	for (i = 0; i < n; i++)
		if (!ndr_wanted(m->env.rcpts[rcpts[i].index].notify, ki))
			ndr_log_suppressed(m, m->env.rcpts[rcpts[i].index].addr, "notify", ki);
	if (k == 0) {
		free(sel);
		return 0;
	}

	ndr_original_load(m, queue_msg_path(q, m, pathbuf, sizeof(pathbuf)), kind, &orig);
	memset(&er, 0, sizeof(er));
	er.addr = m->env.sender;
	er.notify = ENV_NOTIFY_NEVER;
	memset(&env, 0, sizeof(env));
	env.sender = "";
	env.rcpts = &er;
	env.nrcpts = 1;
	env.ret = ENV_RET_NONE;
	env.arrival_ms = p->now_ms;
	/* 8BITMIME if any byte that can reach the report is 8-bit (a superset:
	 * delivery-status fields are escaped); SMTPUTF8 only if the address
	 * the report goes to needs it. */
	env.smtputf8 = ndr_str_8bit(m->env.sender);
	env.body_8bit = env.smtputf8 || ndr_has_8bit(orig.data.data, orig.data.len) ||
	    ndr_str_8bit(p->reason_text) || ndr_str_8bit(m->env.envid);
	for (i = 0; i < k; i++)
		env.body_8bit = env.body_8bit || ndr_str_8bit(sel[i].diagnostic) ||
		    ndr_str_8bit(sel[i].remote_host) ||
		    ndr_str_8bit(m->env.rcpts[sel[i].index].addr);

	if ((rc = queue_txn_begin(q, &env, &t)) != 0)
		goto out;
	snprintf(ndr_qid, QID_MAX, "%s", queue_txn_qid(t));
	if ((rc = ndr_build(m, kind, sel, k, p, ndr_qid, &orig, &out)) != 0 ||
	    (rc = queue_txn_write(t, out.data, out.len)) != 0) {
		queue_txn_abort(t);
		ndr_qid[0] = '\0';
		goto out;
	}

	np = xcalloc(1, sizeof(*np));
	snprintf(np->qid, sizeof(np->qid), "%s", m->qid);
	snprintf(np->ndr_qid, sizeof(np->ndr_qid), "%s", ndr_qid);
	np->to = xstrdup(m->env.sender);
	np->reason = ki->reason;
	np->stats = stats;
	np->done = done;
	np->done_arg = done_arg;
	np->n = k;
	np->rcpt = xcalloc(k, sizeof(*np->rcpt));
	for (i = 0; i < k; i++) {
		np->rcpt[i].addr = xstrdup(m->env.rcpts[sel[i].index].addr);
		np->rcpt[i].status = xstrdup(ndr_status_of(&sel[i], ki));
		np->rcpt[i].remote = sel[i].remote_host ? xstrdup(sel[i].remote_host) : NULL;
		np->rcpt[i].attempts = sel[i].attempts;
		np->rcpt[i].down_since_ms = sel[i].down_since_ms;
	}
	ndr_commit_signed(t, &out, p, ndr_committed, np);
	rc = 0;
out:
	buf_free(&out);
	ndr_original_free(&orig);
	free(sel);
	return rc;
}
