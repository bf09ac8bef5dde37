/*
 * tlsrpt_report.c - what a TLSRPT report is made of (RFC 8460): the
 * reporting slots, the _smtp._tls record, the JSON report (4.4), its gzip,
 * and the mail that carries it (5.3).
 *
 * Owns: nothing between calls.
 * Must never: do I/O, read a clock, or look anything up (tlsrpt.c does).
 */
#include "tlsrpt/tlsrpt_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common/codec.h"
#include "common/json.h"
#include "common/util.h"
#include "ndr/ndr.h"

#define TLSRPT_DAY_MS 86400000ULL

const char *
tlsrpt_ptype_name(enum tlsrpt_ptype t)
{
	switch (t) {
	case TLSRPT_TLSA:
		return "tlsa";
	case TLSRPT_STS:
		return "sts";
	case TLSRPT_NO_POLICY:
		break;
	}
	return "no-policy-found";
}

void
tlsrpt_slot(uint64_t now_ms, uint64_t interval_ms, uint64_t *start, uint64_t *end)
{
	uint64_t day = now_ms - now_ms % TLSRPT_DAY_MS, s, e;

	if (interval_ms == 0)
		interval_ms = TLSRPT_DAY_MS;
	s = now_ms - now_ms % interval_ms;
	e = s + interval_ms;
	*start = s > day ? s : day;
	*end = e < day + TLSRPT_DAY_MS ? e : day + TLSRPT_DAY_MS;
}

/*
 * The record.
 */

static int
tlsrpt_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* A mailto: URI's address (RFC 6068): up to '?', %-decoded; NULL if unusable. */
static char *
tlsrpt_mailto(const char *s, size_t n)
{
	struct buf b = BUF_INIT;
	size_t i;
	int hi, lo;

	for (i = 0; i < n && s[i] != '?'; i++) {
		if (s[i] == '%' && i + 2 < n && (hi = tlsrpt_hexval(s[i + 1])) >= 0 &&
		    (lo = tlsrpt_hexval(s[i + 2])) >= 0) {
			buf_putc(&b, (char)(hi * 16 + lo));
			i += 2;
		} else
			buf_putc(&b, s[i]);
	}
	if (b.len == 0 || memchr(b.data, '@', b.len) == NULL || strlen(buf_cstr(&b)) != b.len ||
	    strpbrk(buf_cstr(&b), " <>\r\n\t,") != NULL) {
		buf_free(&b);
		return NULL;
	}
	return buf_steal(&b);
}

int
tlsrpt_parse_record(char *const *txt, size_t ntxt, char *rua[TLSRPT_MAX_RUA],
    char kind[TLSRPT_MAX_RUA], const char **why)
{
	const char *rec = NULL, *p, *e, *v;
	size_t i, nrec = 0, n, k;
	int nrua = 0;

	for (i = 0; i < ntxt; i++) {
		p = txt[i];
		if (strncmp(p, "v=TLSRPTv1", 10) == 0 &&
		    (p[10] == ';' || p[10] == '\0' || p[10] == ' ' || p[10] == '\t')) {
			rec = p;
			nrec++;
		}
	}
	if (nrec != 1) {
		*why = nrec == 0 ? "no v=TLSRPTv1 record" : "more than one v=TLSRPTv1 record";
		return -1;
	}
	/* fields: "name=value" separated by ';' with optional white space */
	for (p = rec; *p != '\0'; p = *e == ';' ? e + 1 : e) {
		while (*p == ' ' || *p == '\t')
			p++;
		e = p + strcspn(p, ";");
		if (strncmp(p, "rua=", 4) != 0)
			continue;
		for (v = p + 4; v < e && nrua < TLSRPT_MAX_RUA; v += n + (v + n < e)) {
			const char *u;
			size_t un;

			n = strcspn(v, ",;");
			if (v + n > e)
				n = (size_t)(e - v);
			u = v;
			un = n;
			while (un > 0 && (*u == ' ' || *u == '\t'))
				u++, un--;
			while (un > 0 && (u[un - 1] == ' ' || u[un - 1] == '\t'))
				un--;
			if (un > 7 && util_strncasecmp(u, "mailto:", 7) == 0) {
				if ((rua[nrua] = tlsrpt_mailto(u + 7, un - 7)) != NULL)
					kind[nrua++] = 'm';
			} else if (un > 8 && util_strncasecmp(u, "https://", 8) == 0 &&
			    memchr(u, ' ', un) == NULL) {
				rua[nrua] = xstrndup(u, un);
				kind[nrua++] = 'h';
			}
			/* a URI given twice gets the report once */
			for (k = 0; nrua > 0 && k + 1 < (size_t)nrua; k++)
				if (kind[k] == kind[nrua - 1] && strcmp(rua[k], rua[nrua - 1]) == 0) {
					free(rua[--nrua]);
					break;
				}
		}
		break;
	}
	if (nrua == 0) {
		*why = "no usable rua= (mailto: or https:)";
		return -1;
	}
	return nrua;
}

/*
 * The JSON report (RFC 8460 4.4).
 */

static void
tlsrpt_json_strings(struct json *j, const char *joined)
{
	const char *p, *e;
	char *s;

	json_array_begin(j);
	for (p = joined; p != NULL && *p != '\0'; p = *e != '\0' ? e + 1 : e) {
		e = p + strcspn(p, "\n");
		s = xstrndup(p, (size_t)(e - p));
		json_string(j, s);
		free(s);
	}
	json_array_end(j);
}

static void
tlsrpt_json_opt(struct json *j, const char *key, const char *v)
{
	if (v == NULL)
		return;
	json_key(j, key);
	json_string(j, v);
}

void
tlsrpt_report_json(const struct tlsrpt_bucket *b, const struct tlsrpt_org *org, uint64_t end_ms,
    struct buf *out)
{
	struct json j;
	char date[40];
	size_t i, k;

	json_init(&j, out);
	json_object_begin(&j);
	json_key(&j, "organization-name");
	json_string(&j, org->organization);
	json_key(&j, "date-range");
	json_object_begin(&j);
	util_rfc3339_sec(b->start_ms, date, sizeof(date));
	json_key(&j, "start-datetime");
	json_string(&j, date);
	util_rfc3339_sec(end_ms, date, sizeof(date));
	json_key(&j, "end-datetime");
	json_string(&j, date);
	json_object_end(&j);
	json_key(&j, "contact-info");
	json_string(&j, org->contact);
	json_key(&j, "report-id");
	json_string(&j, b->report_id);
	json_key(&j, "policies");
	json_array_begin(&j);
	for (i = 0; i < b->np; i++) {
		const struct tlsrpt_policy *p = &b->p[i];

		json_object_begin(&j);
		json_key(&j, "policy");
		json_object_begin(&j);
		json_key(&j, "policy-type");
		json_string(&j, tlsrpt_ptype_name(p->type));
		if (p->strings != NULL) {
			json_key(&j, "policy-string");
			tlsrpt_json_strings(&j, p->strings);
		}
		json_key(&j, "policy-domain");
		json_string(&j, b->domain);
		if (p->mx != NULL) {
			/* RFC 8460 4.4 and its example: one pattern, a string; an
			 * MTA-STS policy with several mx: lines gives an array */
			json_key(&j, "mx-host");
			if (strchr(p->mx, '\n') == NULL)
				json_string(&j, p->mx);
			else
				tlsrpt_json_strings(&j, p->mx);
		}
		json_object_end(&j);
		json_key(&j, "summary");
		json_object_begin(&j);
		json_key(&j, "total-successful-session-count");
		json_uint(&j, p->ok);
		json_key(&j, "total-failure-session-count");
		json_uint(&j, p->failed);
		json_object_end(&j);
		if (p->nd > 0) {
			json_key(&j, "failure-details");
			json_array_begin(&j);
			for (k = 0; k < p->nd; k++) {
				const struct tlsrpt_detail *d = &p->d[k];

				json_object_begin(&j);
				json_key(&j, "result-type");
				json_string(&j, d->result);
				tlsrpt_json_opt(&j, "sending-mta-ip", d->sending_ip);
				tlsrpt_json_opt(&j, "receiving-mx-hostname", d->mx);
				tlsrpt_json_opt(&j, "receiving-ip", d->ip);
				json_key(&j, "failed-session-count");
				json_uint(&j, d->count);
				tlsrpt_json_opt(&j, "failure-reason-code", d->info);
				json_object_end(&j);
			}
			json_array_end(&j);
		}
		json_object_end(&j);
	}
	json_array_end(&j);
	json_object_end(&j);
}

int
tlsrpt_gzip(const void *in, size_t len, struct buf *out)
{
	z_stream z;
	int rc;

	memset(&z, 0, sizeof(z));
	/* windowBits 15 + 16: a gzip header and trailer (RFC 1952) */
	if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
	    Z_DEFAULT_STRATEGY) != Z_OK)
		return -1;
	buf_reserve(out, deflateBound(&z, (uLong)len) + 1);
	z.next_in = (Bytef *)(uintptr_t)in;
	z.avail_in = (uInt)len;
	z.next_out = (Bytef *)out->data + out->len;
	z.avail_out = (uInt)(out->cap - out->len - 1);
	rc = deflate(&z, Z_FINISH);
	if (rc == Z_STREAM_END)
		out->len += z.total_out;
	deflateEnd(&z);
	if (rc != Z_STREAM_END)
		return -1;
	out->data[out->len] = '\0';
	return 0;
}

/*
 * The mail (RFC 8460 5.3).
 */

void
tlsrpt_report_mail(const struct tlsrpt_bucket *b, const struct tlsrpt_org *org,
    const char *from, const char *to, uint64_t now_ms, uint64_t end_ms,
    const struct buf *gz, struct buf *out)
{
	struct buf v = BUF_INIT, b64 = BUF_INIT;
	char date[48], boundary[64];
	size_t i;

	snprintf(boundary, sizeof(boundary), "=_relayd_tlsrpt_%" PRIu64 "_%" PRIu64,
	    b->start_ms / 1000, now_ms);
	buf_printf(&v, "TLS reporting <%s>", from);
	ndr_header_put(out, "From", buf_cstr(&v), 0);
	util_rfc5322_date(now_ms, date, sizeof(date));
	ndr_header_put(out, "Date", date, 0);
	ndr_header_put(out, "To", to, 0);
	buf_reset(&v);
	buf_printf(&v, "Report Domain: %s Submitter: %s Report-ID: <%s>", b->domain,
	    org->hostname, b->report_id);
	ndr_header_put(out, "Subject", buf_cstr(&v), NDR_HDR_TEXT);
	buf_reset(&v);
	buf_printf(&v, "<%s>", b->report_id);
	ndr_header_put(out, "Message-ID", buf_cstr(&v), 0);
	ndr_header_put(out, "TLS-Report-Domain", b->domain, 0);
	ndr_header_put(out, "TLS-Report-Submitter", org->hostname, 0);
	ndr_header_put(out, "Auto-Submitted", "auto-generated", 0);
	ndr_header_put(out, "MIME-Version", "1.0", 0);
	buf_reset(&v);
	buf_printf(&v, "multipart/report; report-type=\"tlsrpt\"; boundary=\"%s\"", boundary);
	ndr_header_put(out, "Content-Type", buf_cstr(&v), 0);
	buf_puts(out, "\r\nThis is a multipart message in MIME format.\r\n");
	buf_printf(out, "\r\n--%s\r\n", boundary);
	buf_puts(out, "Content-Type: text/plain; charset=\"us-ascii\"\r\n"
	    "Content-Transfer-Encoding: 7bit\r\n\r\n");
	buf_printf(out, "This is an aggregate TLS report from %s\r\nfor %s.\r\n", org->hostname,
	    b->domain);
	buf_printf(out, "\r\n--%s\r\n", boundary);
	buf_puts(out, "Content-Type: application/tlsrpt+gzip\r\n"
	    "Content-Transfer-Encoding: base64\r\n");
	buf_reset(&v);
	/* RFC 8460 5.1: sender!policy-domain!begin-timestamp!end-timestamp.json.gz */
	buf_printf(&v, "attachment; filename=\"%s!%s!%" PRIu64 "!%" PRIu64 ".json.gz\"",
	    org->hostname, b->domain, b->start_ms / 1000, end_ms / 1000);
	ndr_header_put(out, "Content-Disposition", buf_cstr(&v), 0);
	buf_puts(out, "\r\n");
	codec_base64_encode(&b64, gz->data, gz->len);
	for (i = 0; i < b64.len; i += 76) {
		buf_append(out, b64.data + i, b64.len - i < 76 ? b64.len - i : 76);
		buf_puts(out, "\r\n");
	}
	buf_printf(out, "\r\n--%s--\r\n", boundary);
	buf_free(&v);
	buf_free(&b64);
}
