/*
 * dkim_canon.c - relaxed/relaxed canonicalisation (RFC 6376 section 3.4.2,
 * 3.4.4) and the message being signed: the header section kept as it came,
 * the body canonicalised and hashed (SHA-256) byte by byte as it streams, so
 * a message of any size costs a few KiB here.
 *
 * Owns struct dkim_msg.  Never holds the body; never signs (dkim_sign.c).
 */
#include "dkim/dkim_int.h"

#include <string.h>

#include "common/util.h"

#define DKIM_OUT_CHUNK	4096

static bool
dkim_wsp(char c)
{
	return c == ' ' || c == '\t';
}

void
dkim_canon_header(const char *field, size_t len, bool crlf, struct buf *out)
{
	size_t i = 0, name_end;
	bool wsp = false, any = false;

	/* the name: lower-case, WSP before the colon dropped */
	while (i < len && field[i] != ':')
		i++;
	name_end = i;
	while (name_end > 0 && dkim_wsp(field[name_end - 1]))
		name_end--;
	for (size_t j = 0; j < name_end; j++) {
		char c = field[j];

		buf_putc(out, c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c);
	}
	buf_putc(out, ':');
	if (i < len)
		i++;
	/* the value: unfolded, WSP runs -> one SP, none at either end */
	for (; i < len; i++) {
		char c = field[i];

		if (c == '\r' || c == '\n')
			continue;
		if (dkim_wsp(c)) {
			wsp = true;
			continue;
		}
		if (wsp && any)
			buf_putc(out, ' ');
		wsp = false;
		any = true;
		buf_putc(out, c);
	}
	if (crlf)
		buf_append(out, "\r\n", 2);
}

/* ---- the body: a byte machine over any chunking ---- */

static void
dkim_body_out(struct dkim_body *b, const char *p, size_t n)
{
	if (b->pending.len + n > DKIM_OUT_CHUNK)
		dkim_body_flush(b);
	buf_append(&b->pending, p, n);
}

void
dkim_body_flush(struct dkim_body *b)
{
	if (b->pending.len == 0)
		return;
	b->sink(b->sink_arg, b->pending.data, b->pending.len);
	buf_reset(&b->pending);
}

/* Everything before a visible character of a line: the empty lines held
 * back (they only count if more text follows) and one SP for a WSP run. */
static void
dkim_body_before_text(struct dkim_body *b)
{
	for (; b->nempty > 0; b->nempty--)
		dkim_body_out(b, "\r\n", 2);
	if (b->wsp)
		dkim_body_out(b, " ", 1);
	b->wsp = false;
}

static void
dkim_body_byte(struct dkim_body *b, char c)
{
	if (b->cr) {
		b->cr = false;
		if (c == '\n') {                    /* end of line: trailing WSP dropped */
			b->wsp = false;
			if (b->linelen == 0)
				b->nempty++;
			else
				dkim_body_out(b, "\r\n", 2);
			b->linelen = 0;
			return;
		}
		dkim_body_before_text(b);           /* a bare CR is text */
		dkim_body_out(b, "\r", 1);
		b->linelen++;
	}
	if (c == '\r') {
		b->cr = true;
		return;
	}
	if (dkim_wsp(c)) {
		b->wsp = true;
		return;
	}
	dkim_body_before_text(b);
	dkim_body_out(b, &c, 1);
	b->linelen++;
}

void
dkim_body_feed(struct dkim_body *b, const char *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		dkim_body_byte(b, p[i]);
}

void
dkim_body_end(struct dkim_body *b)
{
	if (b->cr) {                                /* a last bare CR is text */
		b->cr = false;
		dkim_body_before_text(b);
		dkim_body_out(b, "\r", 1);
		b->linelen++;
	}
	b->wsp = false;
	if (b->linelen > 0)                         /* no final CRLF: one is added */
		dkim_body_out(b, "\r\n", 2);
	b->linelen = 0;
	b->nempty = 0;                              /* trailing empty lines never count */
	dkim_body_flush(b);
}

static void
dkim_buf_sink(void *arg, const char *p, size_t n)
{
	buf_append(arg, p, n);
}

void
dkim_canon_body(const char *body, size_t len, size_t chunk, struct buf *out)
{
	struct dkim_body b;
	size_t off, n;

	memset(&b, 0, sizeof(b));
	b.sink = dkim_buf_sink;
	b.sink_arg = out;
	for (off = 0; off < len; off += n) {
		n = len - off < chunk ? len - off : chunk;
		dkim_body_feed(&b, body + off, n);
	}
	dkim_body_end(&b);
	buf_free(&b.pending);
}

/* ---- the message ---- */

static void
dkim_hash_sink(void *arg, const char *p, size_t n)
{
	struct dkim_msg *m = arg;

	if (m->md != NULL && EVP_DigestUpdate(m->md, p, n) != 1)
		m->md_failed = true;
}

struct dkim_msg *
dkim_msg_new(void)
{
	struct dkim_msg *m = xcalloc(1, sizeof(*m));

	m->in_header = true;
	m->line_start = true;
	m->body.sink = dkim_hash_sink;
	m->body.sink_arg = m;
	if ((m->md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(m->md, EVP_sha256(), NULL) != 1)
		m->md_failed = true;
	return m;
}

void
dkim_msg_free(struct dkim_msg *m)
{
	if (m == NULL)
		return;
	buf_free(&m->hdr);
	buf_free(&m->body.pending);
	EVP_MD_CTX_free(m->md);
	free(m);
}

/*
 * The header section ends with its empty line (which belongs to neither
 * part); a line that cannot be a field (no colon, not a continuation) ends
 * it too and is the body's first line, as relayd queues it.
 */
void
dkim_msg_write(struct dkim_msg *m, const void *data, size_t len)
{
	const char *p = data;
	size_t i = 0;

	if (m->hdr_too_big)
		return;
	while (i < len && m->in_header) {
		const char *nl = memchr(p + i, '\n', len - i);
		size_t n = nl != NULL ? (size_t)(nl - (p + i)) + 1 : len - i;
		if (m->hdr.len + n > DKIM_HDR_MAX) {
			/* never hold a whole message: what was kept still
			 * names the From (the keys), but cannot be signed */
			m->hdr_too_big = true;
			m->in_header = false;
			buf_truncate(&m->hdr, m->line_off);
			return;
		}
		buf_append(&m->hdr, p + i, n);
		i += n;
		if (nl == NULL)
			break;                          /* the rest of the line comes later */
		/* a whole line now ends the buffer: [m->line_off, hdr.len) */
		if (m->hdr.len - m->line_off == 2 && m->hdr.data[m->line_off] == '\r') {
			buf_truncate(&m->hdr, m->line_off);
			m->in_header = false;
		} else if (m->hdr.data[m->line_off] != ' ' && m->hdr.data[m->line_off] != '\t' &&
		    memchr(m->hdr.data + m->line_off, ':', m->hdr.len - m->line_off) == NULL) {
			size_t off = m->line_off;

			m->in_header = false;
			dkim_body_feed(&m->body, m->hdr.data + off, m->hdr.len - off);
			buf_truncate(&m->hdr, off);
		} else
			m->line_off = m->hdr.len;
	}
	if (i < len)
		dkim_body_feed(&m->body, p + i, len - i);
}

/* Call fn for each field of the header section: [p, p+len) with its CRLFs. */
void
dkim_msg_fields(const struct dkim_msg *m, void (*fn)(void *, const char *, size_t), void *arg)
{
	const char *p = m->hdr.data, *end = m->hdr.data + m->hdr.len, *f = NULL;

	while (p != NULL && p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *next = nl != NULL ? nl + 1 : end;

		if (*p != ' ' && *p != '\t') {
			if (f != NULL)
				fn(arg, f, (size_t)(p - f));
			f = p;
		}
		p = next;
	}
	if (f != NULL)
		fn(arg, f, (size_t)(end - f));
}

bool
dkim_field_is(const char *f, size_t len, const char *name, bool prefix)
{
	size_t n = strlen(name), i = 0;

	while (i < len && f[i] != ':' && !dkim_wsp(f[i]))
		i++;
	if (prefix)
		return i >= n && util_strncasecmp(f, name, n) == 0;
	return i == n && util_strncasecmp(f, name, n) == 0;
}

struct dkim_find {
	const char *name;
	struct buf *out;
	bool found;
};

static void
dkim_find_cb(void *arg, const char *f, size_t len)
{
	struct dkim_find *x = arg;
	const char *colon;
	size_t i;

	if (x->found || !dkim_field_is(f, len, x->name, false))
		return;
	if ((colon = memchr(f, ':', len)) == NULL)
		return;
	x->found = true;
	for (i = (size_t)(colon - f) + 1; i < len; i++)
		if (f[i] != '\r' && f[i] != '\n')
			buf_putc(x->out, f[i]);
}

int
dkim_msg_field(const struct dkim_msg *m, const char *name, struct buf *out)
{
	struct dkim_find x = { name, out, false };

	dkim_msg_fields(m, dkim_find_cb, &x);
	return x.found ? 0 : -1;
}

int
dkim_msg_body_hash(struct dkim_msg *m, unsigned char out[32])
{
	unsigned int n = 0;

	if (m->md == NULL || m->md_failed)
		return -1;
	m->in_header = false;                       /* no empty line: no body */
	dkim_body_end(&m->body);
	if (m->md_failed || EVP_DigestFinal_ex(m->md, out, &n) != 1 || n != 32)
		return -1;
	return 0;
}
