/*
 * submit_data.c - the DATA phase as a line machine: the end of data is
 * <CRLF>.<CRLF> and nothing else; dot-unstuffing; bare LF and bare CR are
 * refused (SMTP smuggling, CVE-2023-51764) without ever ending the data
 * early; a NUL byte refuses the message (SMTP data is text: RFC 5321 2.3.8,
 * RFC 6152); size and text-line limits; the relay's Received: goes first, and
 * Date: and Message-ID: are added at the end of the header section when the
 * client left them out (RFC 6409 8.2, 8.3); the From: field is collected for
 * the senders check.  BDAT (RFC 3030) feeds the same line machine: its
 * octets, cut anywhere, are put together into lines first, and neither
 * dot-stuffing nor the end-of-data line applies to them.
 *
 * Owns one staging buffer per session (flushed in SUBMIT_DATA_CHUNK pieces,
 * so memory stays small whatever the message size) and the unfolded From:.
 * It must never allocate per line, never hold the whole message, and after
 * the first error never write another byte.
 */
#include "submit/submit_int.h"

#include <stdio.h>
#include <string.h>

#include "common/util.h"

void
submit_data_init(struct submit_data *d)
{
	memset(d, 0, sizeof(*d));
}

void
submit_data_free(struct submit_data *d)
{
	buf_free(&d->hdr_date);
	buf_free(&d->hdr_msgid);
	buf_free(&d->out);
	buf_free(&d->from);
	buf_free(&d->part);
}

static void
submit_data_flush(struct submit_data *d)
{
	if (d->out.len == 0)
		return;
	if (d->err == SUBMIT_DATA_OK && d->write(d->write_arg, d->out.data, d->out.len) != 0)
		d->err = SUBMIT_DATA_WRITE;
	buf_reset(&d->out);
}

static void
submit_data_emit(struct submit_data *d, const char *p, size_t len, bool crlf)
{
	if (d->err != SUBMIT_DATA_OK)
		return;
	buf_append(&d->out, p, len);
	if (crlf)
		buf_append(&d->out, "\r\n", 2);
	if (d->out.len >= SUBMIT_DATA_CHUNK)
		submit_data_flush(d);
}

void
submit_data_begin(struct submit_data *d, uint64_t max_size, bool collect_from,
    const char *received, const char *date, const char *msgid,
    submit_data_write_fn *write, void *arg)
{
	d->max_size = max_size;
	d->collect_from = collect_from;
	d->write = write;
	d->write_arg = arg;
	buf_reset(&d->hdr_date);
	buf_puts(&d->hdr_date, date);
	buf_reset(&d->hdr_msgid);
	buf_puts(&d->hdr_msgid, msgid);
	d->in_header = true;
	d->prev_crlf = true;        /* the DATA command's CRLF */
	d->in_from = false;
	d->saw_date = d->saw_msgid = false;
	d->nfrom = 0;
	d->err = SUBMIT_DATA_OK;
	d->size = 0;
	buf_reset(&d->out);
	buf_reset(&d->from);
	d->chunked = false;
	d->skipping = false;
	buf_reset(&d->part);
	submit_data_emit(d, received, strlen(received), false);
}

/* The header section ends (blank line, body line, or end of data). */
static void
submit_data_end_header(struct submit_data *d)
{
	d->in_header = false;
	d->in_from = false;
	if (!d->saw_date)
		submit_data_emit(d, d->hdr_date.data, d->hdr_date.len, false);
	if (!d->saw_msgid)
		submit_data_emit(d, d->hdr_msgid.data, d->hdr_msgid.len, false);
}

static bool
submit_data_field_is(const char *p, size_t namelen, const char *name)
{
	return strlen(name) == namelen && util_strncasecmp(p, name, namelen) == 0;
}

/* A line of the header section (without its CRLF). */
static void
submit_data_header(struct submit_data *d, const char *p, size_t len)
{
	size_t i, namelen;

	if (len == 0) {
		submit_data_end_header(d);
		return;
	}
	if (p[0] == ' ' || p[0] == '\t') {          /* folded continuation */
		if (d->in_from && d->collect_from) {
			if (d->from.len + len > SUBMIT_DATA_FROM_MAX)
				d->err = SUBMIT_DATA_HEADER_FROM;
			else
				buf_append(&d->from, p, len);
		}
		return;
	}
	for (i = 0; i < len && p[i] != ':' && (unsigned char)p[i] > 32 && (unsigned char)p[i] < 127; i++)
		;
	namelen = i;
	while (i < len && (p[i] == ' ' || p[i] == '\t'))     /* obs-optional */
		i++;
	if (namelen == 0 || i == len || p[i] != ':') {
		submit_data_end_header(d);          /* the body began without a blank line */
		return;
	}
	d->in_from = false;
	if (submit_data_field_is(p, namelen, "Date"))
		d->saw_date = true;
	else if (submit_data_field_is(p, namelen, "Message-ID"))
		d->saw_msgid = true;
	else if (submit_data_field_is(p, namelen, "From")) {
		d->in_from = true;
		if (++d->nfrom == 1 && d->collect_from) {
			if (len - i - 1 > SUBMIT_DATA_FROM_MAX)
				d->err = SUBMIT_DATA_HEADER_FROM;
			else
				buf_append(&d->from, p + i + 1, len - i - 1);
		}
	}
}

void
submit_data_check_text(struct submit_data *d, const char *p, size_t len)
{
	if (d->err == SUBMIT_DATA_OK && memchr(p, '\0', len) != NULL)
		d->err = SUBMIT_DATA_NUL;
}

int
submit_data_line(struct submit_data *d, const char *line, size_t len)
{
	const char *p = line;
	size_t n;
	bool crlf = len >= 2 && line[len - 2] == '\r' && line[len - 1] == '\n';

	if (!d->chunked && crlf && len == 3 && line[0] == '.' && d->prev_crlf)
		return 1;                           /* <CRLF>.<CRLF> */
	n = crlf ? len - 2 : (len > 0 && line[len - 1] == '\n' ? len - 1 : len);
	d->prev_crlf = crlf;
	if (!crlf || memchr(p, '\r', n) != NULL) {
		if (d->err == SUBMIT_DATA_OK || d->err == SUBMIT_DATA_HEADER_FROM)
			d->err = SUBMIT_DATA_BARE;
		return 0;
	}
	if (d->err != SUBMIT_DATA_OK)
		return 0;
	if (!d->chunked && n > 0 && p[0] == '.') {  /* dot-unstuffing (not in BDAT) */
		p++;
		n--;
	}
	if (n + 2 > SUBMIT_TEXT_LINE_MAX) {
		d->err = SUBMIT_DATA_LONG_LINE;
		return 0;
	}
	d->size += n + 2;
	if (d->size > d->max_size) {
		d->err = SUBMIT_DATA_TOO_BIG;
		return 0;
	}
	submit_data_check_text(d, p, n);
	if (d->err != SUBMIT_DATA_OK)
		return 0;
	if (d->in_header) {
		submit_data_header(d, p, n);
		if (d->err != SUBMIT_DATA_OK)
			return 0;
	}
	submit_data_emit(d, p, n, true);
	return 0;
}

void
submit_data_long_line(struct submit_data *d)
{
	/* the io cannot say how the discarded line ended: CRLF is the safe
	 * guess, else a well-formed ".<CRLF>" would never end this DATA */
	d->prev_crlf = true;
	if (d->err == SUBMIT_DATA_OK)
		d->err = SUBMIT_DATA_LONG_LINE;
}

void
submit_data_chunked(struct submit_data *d)
{
	d->chunked = true;
}

void
submit_data_bytes(struct submit_data *d, const char *p, size_t len)
{
	const char *lf;
	size_t take;

	while (len > 0) {
		lf = memchr(p, '\n', len);
		take = lf != NULL ? (size_t)(lf - p) + 1 : len;
		if (d->skipping) {
			d->skipping = lf == NULL;
		} else if (d->part.len + take > SUBMIT_TEXT_LINE_MAX + 1) {
			/* as DATA's io does with a line over its limit */
			buf_reset(&d->part);
			submit_data_long_line(d);
			d->skipping = lf == NULL;
		} else if (lf == NULL) {
			buf_append(&d->part, p, take);
		} else if (d->part.len == 0) {
			submit_data_line(d, p, take);
		} else {
			buf_append(&d->part, p, take);
			submit_data_line(d, d->part.data, d->part.len);
			buf_reset(&d->part);
		}
		p += take;
		len -= take;
	}
}

void
submit_data_bytes_last(struct submit_data *d)
{
	if (d->part.len > 0) {
		/* "x\r" becomes "x\r\r\n": still a bare CR, refused */
		buf_append(&d->part, "\r\n", 2);
		submit_data_line(d, d->part.data, d->part.len);
		buf_reset(&d->part);
	}
	d->skipping = false;
}

void
submit_data_finish(struct submit_data *d)
{
	if (d->in_header)
		submit_data_end_header(d);
	submit_data_flush(d);
}

const char *
submit_data_protocol(bool esmtp, bool tls, bool auth, bool utf8)
{
	static const char *names[2][2][2] = {
		/* [utf8][tls][auth] */
		{ { "ESMTP", "ESMTPA" }, { "ESMTPS", "ESMTPSA" } },
		{ { "UTF8SMTP", "UTF8SMTPA" }, { "UTF8SMTPS", "UTF8SMTPSA" } },
	};

	if (!esmtp)
		return "SMTP";
	return names[utf8][tls][auth];
}

void
submit_data_received(struct buf *out, const struct submit_received *r)
{
	char date[64];
	bool v6 = strchr(r->client_ip, ':') != NULL;

	util_rfc5322_date(r->now_ms, date, sizeof(date));
	buf_printf(out, "Received: from %s (", r->helo && *r->helo ? r->helo : "unknown");
	if (r->client_host != NULL)
		buf_printf(out, "%s ", r->client_host);
	buf_printf(out, "[%s%s])\r\n\tby %s (relayd) with %s id %s",
	    v6 ? "IPv6:" : "", r->client_ip, r->hostname, r->protocol, r->qid);
	if (r->tls_version != NULL)
		buf_printf(out, "\r\n\t(using %s with cipher %s (%d/%d bits))",
		    r->tls_version, r->tls_cipher ? r->tls_cipher : "unknown",
		    r->tls_bits, r->tls_bits);
	if (r->rcpt != NULL)
		buf_printf(out, "\r\n\tfor <%s>", r->rcpt);
	buf_printf(out, "; %s\r\n", date);
}
