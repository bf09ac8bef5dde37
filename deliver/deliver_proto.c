/*
 * deliver_proto.c - the outbound client's protocol helpers: the one SMTP
 * reply parser, EHLO capabilities, xtext and base64, streaming dot-stuffing,
 * and the MAIL/RCPT command lines with their ESMTP parameters.
 *
 * Owns no state: pure functions over buffers, tested from tables in
 * tests/unit/test_deliver_reply.c.  Must never do I/O or touch the loop.
 */
#include "deliver/deliver_int.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "common/envelope.h"

/* ------------------------------------------------------------------ */
/* Replies */

void
deliver_reply_init(struct deliver_reply *r)
{
	memset(r, 0, sizeof(*r));
	buf_init(&r->lines);
}

void
deliver_reply_reset(struct deliver_reply *r)
{
	r->code = 0;
	r->nlines = 0;
	r->done = false;
	buf_reset(&r->lines);
}

void
deliver_reply_free(struct deliver_reply *r)
{
	buf_free(&r->lines);
	memset(r, 0, sizeof(*r));
}

enum deliver_reply_rc
deliver_reply_feed(struct deliver_reply *r, const char *line, size_t len)
{
	int code;
	bool last;

	if (r->done)
		fatalx("%s: reply fed after its last line", __func__);
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	if (len < 3 || line[0] < '2' || line[0] > '5' ||
	    !isdigit((unsigned char)line[1]) || !isdigit((unsigned char)line[2]))
		return DELIVER_REPLY_BAD;
	code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (len == 3)
		last = true;
	else if (line[3] == ' ')
		last = true;
	else if (line[3] == '-')
		last = false;
	else
		return DELIVER_REPLY_BAD;
	if (r->nlines > 0 && code != r->code)
		return DELIVER_REPLY_BAD;

	r->code = code;
	r->nlines++;
	if (len > 4 && r->lines.len + (len - 4) + 1 <= DELIVER_REPLY_MAX_TEXT) {
		buf_append(&r->lines, line + 4, len - 4);
		buf_putc(&r->lines, '\n');
	} else if (r->lines.len + 1 <= DELIVER_REPLY_MAX_TEXT)
		buf_putc(&r->lines, '\n');
	if (!last)
		return DELIVER_REPLY_MORE;
	r->done = true;
	return DELIVER_REPLY_DONE;
}

void
deliver_reply_format(const struct deliver_reply *r, struct buf *out)
{
	const char *p = buf_cstr(&r->lines), *nl;
	bool first = true;

	buf_printf(out, "%d", r->code);
	for (; *p != '\0'; p = nl + 1) {
		nl = strchr(p, '\n');
		if (nl == NULL)
			nl = p + strlen(p);
		if (nl > p) {
			buf_puts(out, first ? " " : " / ");
			for (const char *q = p; q < nl; q++) {
				unsigned char ch = (unsigned char)*q;
				buf_putc(out, (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch);
			}
			first = false;
		}
		if (*nl == '\0')
			break;
	}
}

/* Digits at p: 1..3 of them; returns how many, 0 if none or too many. */
static size_t
deliver_status_digits(const char *p)
{
	size_t n = 0;

	while (isdigit((unsigned char)p[n]))
		n++;
	return n >= 1 && n <= 3 ? n : 0;
}

void
deliver_status_from_text(int code, const char *text, char *out, size_t outlen)
{
	const char *p = text;
	size_t n1, n2, n3;

	/* class "." subject "." detail, class one of 2 4 5 matching the code */
	if (text != NULL && (p[0] == '2' || p[0] == '4' || p[0] == '5') &&
	    p[0] - '0' == code / 100 && p[1] == '.') {
		n1 = 1;
		if ((n2 = deliver_status_digits(p + 2)) != 0 && p[2 + n2] == '.' &&
		    (n3 = deliver_status_digits(p + 3 + n2)) != 0) {
			char end = p[3 + n2 + n3];
			size_t total = n1 + 1 + n2 + 1 + n3;

			if ((end == '\0' || end == ' ' || end == '\n' || end == '\t') &&
			    total < outlen) {
				memcpy(out, p, total);
				out[total] = '\0';
				return;
			}
		}
	}
	snprintf(out, outlen, "%d.0.0", code >= 200 && code < 600 ? code / 100 : 4);
}

void
deliver_reply_status(const struct deliver_reply *r, char *out, size_t outlen)
{
	deliver_status_from_text(r->code, buf_cstr(&r->lines), out, outlen);
}

/* ------------------------------------------------------------------ */
/* EHLO capabilities */

/* The keyword of an EHLO line and where its parameters start. */
static size_t
deliver_caps_word(const char *p, const char *end)
{
	size_t n = 0;

	while (p + n < end && p[n] != ' ' && p[n] != '=')
		n++;
	return n;
}

static bool
deliver_caps_is(const char *p, size_t n, const char *kw)
{
	return strlen(kw) == n && util_strncasecmp(p, kw, n) == 0;
}

/* A SASL mechanism name (RFC 4422 3.1): 1-20 of A-Z 0-9 - _ (any case here). */
static bool
deliver_caps_mech_ok(const char *p, size_t n)
{
	if (n == 0 || n > 20)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)p[i]) && p[i] != '-' && p[i] != '_')
			return false;
	return true;
}

/* Is the n-byte upper-cased word w already in the space-separated list? */
static bool
deliver_caps_has_mech(const char *list, const char *w, size_t n)
{
	const char *p = list;

	while (*p != '\0') {
		size_t len = strcspn(p, " ");

		if (len == n && memcmp(p, w, n) == 0)
			return true;
		p += len;
		while (*p == ' ')
			p++;
	}
	return false;
}

/* "AUTH PLAIN LOGIN" or the old "AUTH=LOGIN": add each valid name once. */
static void
deliver_caps_auth(struct deliver_caps *c, const char *p, const char *end)
{
	while (p < end) {
		char w[24];
		size_t n, have;

		while (p < end && (*p == ' ' || *p == '='))
			p++;
		n = deliver_caps_word(p, end);
		if (deliver_caps_mech_ok(p, n)) {
			for (size_t i = 0; i < n; i++)
				w[i] = (char)toupper((unsigned char)p[i]);
			w[n] = '\0';
			have = strlen(c->auth_mechs);
			if (!deliver_caps_has_mech(c->auth_mechs, w, n) &&
			    have + (have > 0) + n < sizeof(c->auth_mechs))
				snprintf(c->auth_mechs + have, sizeof(c->auth_mechs) - have, "%s%s",
				    have > 0 ? " " : "", w);
		}
		p += n;
	}
}

void
deliver_caps_parse(struct deliver_caps *c, const struct deliver_reply *r)
{
	const char *p = buf_cstr(&r->lines), *nl;

	memset(c, 0, sizeof(*c));
	c->esmtp = true;
	/* The first line is the greeting ("mx.example.net Hello ..."). */
	nl = strchr(p, '\n');
	if (nl == NULL)
		return;
	for (p = nl + 1; *p != '\0'; p = nl + 1) {
		const char *end;
		size_t n;

		nl = strchr(p, '\n');
		end = nl != NULL ? nl : p + strlen(p);
		n = deliver_caps_word(p, end);
		if (deliver_caps_is(p, n, "STARTTLS"))
			c->starttls = true;
		else if (deliver_caps_is(p, n, "PIPELINING"))
			c->pipelining = true;
		else if (deliver_caps_is(p, n, "8BITMIME"))
			c->eightbitmime = true;
		else if (deliver_caps_is(p, n, "SMTPUTF8"))
			c->smtputf8 = true;
		else if (deliver_caps_is(p, n, "DSN"))
			c->dsn = true;
		else if (deliver_caps_is(p, n, "ENHANCEDSTATUSCODES"))
			c->enhancedstatuscodes = true;
		else if (deliver_caps_is(p, n, "SIZE")) {
			const char *q = p + n;
			uint64_t v = 0;

			c->size = true;
			while (q < end && *q == ' ')
				q++;
			while (q < end && isdigit((unsigned char)*q) && v < UINT64_MAX / 10 - 10)
				v = v * 10 + (uint64_t)(*q++ - '0');
			c->size_max = v;
		} else if (deliver_caps_is(p, n, "AUTH"))
			deliver_caps_auth(c, p + n, end);
		if (nl == NULL)
			break;
	}
}

/* ------------------------------------------------------------------ */
/* Encodings */

void
deliver_xtext(struct buf *out, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch >= '!' && ch <= '~' && ch != '+' && ch != '=')
			buf_putc(out, (char)ch);
		else {
			buf_putc(out, '+');
			buf_putc(out, hex[ch >> 4]);
			buf_putc(out, hex[ch & 0x0f]);
		}
	}
}

void
deliver_dot_init(struct deliver_dot *s)
{
	s->bol = true;
	s->cr = false;
}

void
deliver_dot_feed(struct deliver_dot *s, const char *p, size_t n, struct buf *out)
{
	const char *end = p + n;

	while (p < end) {
		const char *nl;
		size_t span;

		if (s->bol && *p == '.')
			buf_putc(out, '.');
		s->bol = false;
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL) {
			buf_append(out, p, (size_t)(end - p));
			s->cr = end[-1] == '\r';
			return;
		}
		/* p .. nl-1, then CRLF whatever ended the line */
		span = (size_t)(nl - p);
		buf_append(out, p, span);
		if (!(span > 0 ? nl[-1] == '\r' : s->cr))
			buf_putc(out, '\r');
		buf_putc(out, '\n');
		s->bol = true;
		s->cr = false;
		p = nl + 1;
	}
}

void
deliver_dot_end(struct deliver_dot *s, struct buf *out)
{
	if (!s->bol)
		buf_puts(out, s->cr ? "\n" : "\r\n");
	buf_puts(out, ".\r\n");
	s->bol = true;
	s->cr = false;
}

/* ------------------------------------------------------------------ */
/* Commands */

void
deliver_fmt_mail(struct buf *out, const struct deliver_req *req, const struct deliver_caps *caps)
{
	buf_printf(out, "MAIL FROM:<%s>", req->sender != NULL ? req->sender : "");
	if (caps->size)
		buf_printf(out, " SIZE=%" PRIu64, req->body_len + req->prefix_len);
	if (req->body_8bit && caps->eightbitmime)
		buf_puts(out, " BODY=8BITMIME");
	if (req->smtputf8 && caps->smtputf8)
		buf_puts(out, " SMTPUTF8");
	if (caps->dsn) {
		if (req->ret == ENV_RET_FULL)
			buf_puts(out, " RET=FULL");
		else if (req->ret == ENV_RET_HDRS)
			buf_puts(out, " RET=HDRS");
		if (req->envid != NULL && req->envid[0] != '\0') {
			buf_puts(out, " ENVID=");
			deliver_xtext(out, req->envid);
		}
	}
	buf_puts(out, "\r\n");
}

void
deliver_fmt_rcpt(struct buf *out, const struct deliver_rcpt *rcpt, const struct deliver_caps *caps)
{
	buf_printf(out, "RCPT TO:<%s>", rcpt->addr);
	if (caps->dsn) {
		if (rcpt->notify & ENV_NOTIFY_NEVER)
			buf_puts(out, " NOTIFY=NEVER");
		else if (rcpt->notify != 0) {
			const char *sep = "";

			buf_puts(out, " NOTIFY=");
			if (rcpt->notify & ENV_NOTIFY_SUCCESS) {
				buf_printf(out, "%sSUCCESS", sep);
				sep = ",";
			}
			if (rcpt->notify & ENV_NOTIFY_FAILURE) {
				buf_printf(out, "%sFAILURE", sep);
				sep = ",";
			}
			if (rcpt->notify & ENV_NOTIFY_DELAY)
				buf_printf(out, "%sDELAY", sep);
		}
		if (rcpt->orcpt != NULL && rcpt->orcpt[0] != '\0') {
			const char *semi = strchr(rcpt->orcpt, ';');

			buf_puts(out, " ORCPT=");
			if (semi != NULL) {
				/* addr-type stays as is; the address part is xtext */
				buf_append(out, rcpt->orcpt, (size_t)(semi - rcpt->orcpt) + 1);
				deliver_xtext(out, semi + 1);
			} else {
				buf_puts(out, "rfc822;");
				deliver_xtext(out, rcpt->orcpt);
			}
		}
	}
	buf_puts(out, "\r\n");
}

bool
deliver_check_caps(const struct deliver_req *req, const struct deliver_caps *caps,
    char *status, size_t statuslen, char *text, size_t textlen)
{
	if (caps->size && caps->size_max > 0 && req->body_len + req->prefix_len > caps->size_max) {
		snprintf(status, statuslen, "5.3.4");
		snprintf(text, textlen, "message size %" PRIu64 " exceeds the exchanger's "
		    "fixed maximum message size %" PRIu64, req->body_len + req->prefix_len,
		    caps->size_max);
		return true;
	}
	if (req->body_8bit && !caps->eightbitmime) {
		snprintf(status, statuslen, "5.6.3");
		snprintf(text, textlen, "8-bit message, and the exchanger does not "
		    "announce 8BITMIME (conversion not supported)");
		return true;
	}
	if (req->smtputf8 && !caps->smtputf8) {
		snprintf(status, statuslen, "5.6.7");
		snprintf(text, textlen, "message needs SMTPUTF8, and the exchanger does "
		    "not announce it");
		return true;
	}
	return false;
}
