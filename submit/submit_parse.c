/*
 * submit_parse.c - the submission server's one tokenizer: command lines,
 * MAIL/RCPT paths (RFC 5321 4.1.2, with quoted local parts and source
 * routes), ESMTP keyword=value parameters, RFC 3461 xtext, NOTIFY and ORCPT,
 * the BDAT arguments (RFC 3030), and the mailboxes of a header From: (RFC 5322 3.4).
 *
 * Owns nothing: it works in place on the caller's line or writes into the
 * caller's buffers.  It must never allocate per call beyond those buffers,
 * never touch the network, and never trust a length it did not check.
 */
#include "submit/submit_int.h"

#include <string.h>

#include "common/util.h"
#include "common/envelope.h"

#define LOCAL_MAX   64      /* RFC 5321 4.5.3.1.1 */
#define DOMAIN_MAX  255     /* RFC 5321 4.5.3.1.2 */
#define PATH_MAX_   256     /* RFC 5321 4.5.3.1.3 */

static bool
submit_parse_is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
submit_parse_is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* RFC 5322 atext, plus UTF-8 octets (RFC 6531). */
static bool
submit_parse_is_atext(unsigned char c)
{
	if (submit_parse_is_alpha(c) || submit_parse_is_digit(c) || c >= 0x80)
		return true;
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* RFC 5321 qtextSMTP: printable ASCII but '"' and '\', and UTF-8. */
static bool
submit_parse_is_qtext(unsigned char c)
{
	return (c >= 32 && c <= 126 && c != '"' && c != '\\') || c >= 0x80;
}

int
submit_parse_command(char *line, char **verb, char **args)
{
	char *p = line, *end;

	while (*p != '\0' && *p != ' ')
		p++;
	if (p == line)
		return RELAY_EINVAL;
	*verb = line;
	if (*p == ' ') {
		*p++ = '\0';
		while (*p == ' ')
			p++;
	}
	end = p + strlen(p);
	while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
		*--end = '\0';
	*args = p;
	return 0;
}

/* Is s[0..len) a dot-string: atoms of atext joined by single dots? */
static bool
submit_parse_is_dot_string(const char *s, size_t len)
{
	size_t i;
	bool prev_dot = true;

	if (len == 0)
		return false;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.') {
			if (prev_dot)
				return false;
			prev_dot = true;
		} else if (submit_parse_is_atext(c)) {
			prev_dot = false;
		} else {
			return false;
		}
	}
	return !prev_dot;
}

/* A domain: sub-domains of letters, digits, hyphens (and U-labels), or [literal]. */
static bool
submit_parse_is_domain(const char *s, size_t len, bool *utf8)
{
	size_t i, label = 0;
	unsigned char c, prev = '.';

	if (len == 0 || len > DOMAIN_MAX)
		return false;
	if (s[0] == '[') {
		if (len < 3 || s[len - 1] != ']')
			return false;
		for (i = 1; i < len - 1; i++) {
			c = (unsigned char)s[i];
			if (c < 33 || c > 126 || c == '[' || c == ']' || c == '\\')
				return false;
		}
		return true;
	}
	for (i = 0; i < len; i++) {
		c = (unsigned char)s[i];
		if (c == '.') {
			if (label == 0 || prev == '-')
				return false;
			label = 0;
		} else if (submit_parse_is_alpha(c) || submit_parse_is_digit(c) || c >= 0x80) {
			if (c >= 0x80)
				*utf8 = true;
			label++;
		} else if (c == '-') {
			if (label == 0)
				return false;
			label++;
		} else {
			return false;
		}
		if (label > 63)
			return false;
		prev = c;
	}
	return label > 0 && prev != '-';
}

int
submit_parse_mailbox(const char *s, size_t len, struct buf *out, bool *utf8)
{
	char local[LOCAL_MAX + 1];
	size_t i = 0, at, loclen = 0;
	bool u8 = false;

	buf_reset(out);
	if (len == 0 || len > PATH_MAX_)
		return RELAY_EINVAL;
	if (s[0] == '"') {
		for (i = 1; i < len && s[i] != '"'; i++) {
			unsigned char c = (unsigned char)s[i];

			if (c == '\\') {
				if (++i == len)
					return RELAY_EINVAL;
				c = (unsigned char)s[i];
				if (c < 32 || c > 126)
					return RELAY_EINVAL;
			} else if (!submit_parse_is_qtext(c)) {
				return RELAY_EINVAL;
			}
			if (c >= 0x80)
				u8 = true;
			if (loclen == LOCAL_MAX)
				return RELAY_EINVAL;
			local[loclen++] = (char)c;
		}
		if (i >= len)
			return RELAY_EINVAL;
		i++;                    /* closing quote */
		if (i >= len || s[i] != '@')
			return RELAY_EINVAL;
		at = i;
	} else {
		const char *a = memchr(s, '@', len);

		/* an unquoted local part cannot hold '@': the first one ends it */
		if (a == NULL)
			return RELAY_EINVAL;
		at = (size_t)(a - s);
		if (at > LOCAL_MAX || !submit_parse_is_dot_string(s, at))
			return RELAY_EINVAL;
		for (i = 0; i < at; i++)
			if ((unsigned char)s[i] >= 0x80)
				u8 = true;
		memcpy(local, s, at);
		loclen = at;
	}
	if (!submit_parse_is_domain(s + at + 1, len - at - 1, &u8))
		return RELAY_EINVAL;

	/* canonical: quotes only when the local part is not a dot-string */
	if (submit_parse_is_dot_string(local, loclen)) {
		buf_append(out, local, loclen);
	} else {
		buf_putc(out, '"');
		for (i = 0; i < loclen; i++) {
			if (local[i] == '"' || local[i] == '\\')
				buf_putc(out, '\\');
			buf_putc(out, local[i]);
		}
		buf_putc(out, '"');
	}
	buf_putc(out, '@');
	buf_append(out, s + at + 1, len - at - 1);
	if (utf8 != NULL)
		*utf8 = u8;
	return 0;
}

/* Find the '>' that closes a path starting after '<', skipping quoted strings. */
static char *
submit_parse_path_end(char *p)
{
	bool q = false;

	for (; *p != '\0'; p++) {
		if (q && *p == '\\' && p[1] != '\0')
			p++;
		else if (*p == '"')
			q = !q;
		else if (!q && *p == '>')
			return p;
	}
	return NULL;
}

/* RFC 5321 esmtp-keyword and esmtp-value, in place; *p advanced past the param. */
static int
submit_parse_param(char **pp, struct submit_param *out)
{
	char *p = *pp, *key = p;

	if (!submit_parse_is_alpha((unsigned char)*p) && !submit_parse_is_digit((unsigned char)*p))
		return RELAY_EINVAL;
	while (submit_parse_is_alpha((unsigned char)*p) || submit_parse_is_digit((unsigned char)*p) ||
	    *p == '-')
		p++;
	out->key = key;
	out->value = NULL;
	if (*p == '=') {
		char *val;

		*p++ = '\0';
		val = p;
		while (*p != '\0' && *p != ' ') {
			unsigned char c = (unsigned char)*p;

			if ((c < 33 || c > 126 || c == '=') && c < 0x80)
				return RELAY_EINVAL;
			p++;
		}
		if (p == val)
			return RELAY_EINVAL;
		out->value = val;
	}
	if (*p != '\0' && *p != ' ')
		return RELAY_EINVAL;
	if (*p == ' ') {
		*p++ = '\0';
		while (*p == ' ')
			p++;
	}
	*pp = p;
	return 0;
}

int
submit_parse_path(char *args, const char *prefix, bool allow_postmaster, struct submit_path *p)
{
	size_t plen = strlen(prefix);
	char *s = args, *end, *box;

	buf_reset(&p->addr);
	p->utf8 = false;
	p->nparams = 0;
	p->err = SUBMIT_PARSE_ESYNTAX;
	if (util_strncasecmp(s, prefix, plen) != 0)
		return RELAY_EINVAL;
	s += plen;
	while (*s == ' ')               /* "MAIL FROM: <x>" is common enough */
		s++;
	if (*s != '<')
		return RELAY_EINVAL;
	p->err = SUBMIT_PARSE_EADDR;
	if ((end = submit_parse_path_end(s + 1)) == NULL)
		return RELAY_EINVAL;
	box = s + 1;
	if (*box == '@') {              /* source route "@a,@b:" (RFC 5321 C) */
		char *colon = memchr(box, ':', (size_t)(end - box));

		if (colon == NULL)
			return RELAY_EINVAL;
		box = colon + 1;
	}
	if (box == end) {
		if (box != s + 1)
			return RELAY_EINVAL;    /* "<@a:>" */
	} else if (allow_postmaster && (size_t)(end - box) == 10 &&
	    util_strncasecmp(box, "postmaster", 10) == 0) {
		buf_puts(&p->addr, "postmaster");
	} else if (submit_parse_mailbox(box, (size_t)(end - box), &p->addr, &p->utf8) != 0) {
		return RELAY_EINVAL;
	}

	s = end + 1;
	if (*s != '\0' && *s != ' ') {
		p->err = SUBMIT_PARSE_ESYNTAX;
		return RELAY_EINVAL;
	}
	while (*s == ' ')
		s++;
	while (*s != '\0') {
		if (p->nparams == SUBMIT_PARAMS_MAX) {
			p->err = SUBMIT_PARSE_ETOOMANY;
			return RELAY_EINVAL;
		}
		if (submit_parse_param(&s, &p->params[p->nparams]) != 0) {
			p->err = SUBMIT_PARSE_EPARAM;
			return RELAY_EINVAL;
		}
		p->nparams++;
	}
	p->err = SUBMIT_PARSE_OK;
	return 0;
}

static int
submit_parse_hex(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int
submit_parse_xtext(const char *in, struct buf *out)
{
	const unsigned char *p = (const unsigned char *)in;
	int hi, lo;

	buf_reset(out);
	for (; *p != '\0'; p++) {
		if (*p == '+') {
			if ((hi = submit_parse_hex(p[1])) < 0 || (lo = submit_parse_hex(p[2])) < 0)
				goto bad;
			buf_putc(out, (char)(hi << 4 | lo));
			p += 2;
		} else if (*p >= 33 && *p <= 126 && *p != '=') {
			buf_putc(out, (char)*p);
		} else {
			goto bad;
		}
	}
	return 0;
bad:
	buf_reset(out);
	return RELAY_EINVAL;
}

int
submit_parse_notify(const char *v, unsigned *out)
{
	static const struct {
		const char *name;
		unsigned bit;
	} words[] = {
		{ "NEVER", ENV_NOTIFY_NEVER },
		{ "SUCCESS", ENV_NOTIFY_SUCCESS },
		{ "FAILURE", ENV_NOTIFY_FAILURE },
		{ "DELAY", ENV_NOTIFY_DELAY },
	};
	unsigned bits = 0;
	size_t i, n;

	while (*v != '\0') {
		n = strcspn(v, ",");
		for (i = 0; i < RELAY_ARRAY_LEN(words); i++)
			if (strlen(words[i].name) == n && util_strncasecmp(v, words[i].name, n) == 0)
				break;
		if (i == RELAY_ARRAY_LEN(words))
			return RELAY_EINVAL;
		bits |= words[i].bit;
		v += n;
		if (*v == ',' && *++v == '\0')
			return RELAY_EINVAL;
	}
	if (bits == 0 || ((bits & ENV_NOTIFY_NEVER) && bits != ENV_NOTIFY_NEVER))
		return RELAY_EINVAL;
	*out = bits;
	return 0;
}

int
submit_parse_orcpt(const char *v, struct buf *out)
{
	struct buf x = BUF_INIT;
	const char *semi = strchr(v, ';');
	const char *p;

	buf_reset(out);
	if (semi == NULL || semi == v || semi[1] == '\0')
		return RELAY_EINVAL;
	for (p = v; p < semi; p++)
		if (!submit_parse_is_alpha((unsigned char)*p) && !submit_parse_is_digit((unsigned char)*p) &&
		    *p != '-')
			return RELAY_EINVAL;
	if (submit_parse_xtext(semi + 1, &x) != 0) {
		buf_free(&x);
		return RELAY_EINVAL;
	}
	buf_append(out, v, (size_t)(semi - v + 1));
	buf_append(out, x.data, x.len);
	buf_free(&x);
	return 0;
}

int
submit_parse_bdat(const char *args, uint64_t *size, bool *last)
{
	const char *p = args;
	uint64_t n = 0;

	*size = 0;
	*last = false;
	if (!submit_parse_is_digit((unsigned char)*p))
		return RELAY_EINVAL;
	for (; submit_parse_is_digit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');

		if (n > (UINT64_MAX - d) / 10)
			return RELAY_EINVAL;    /* no such chunk: the count is out of reach */
		n = n * 10 + d;
	}
	if (*p == ' ') {
		while (*p == ' ')
			p++;
		if (util_strncasecmp(p, "LAST", 4) == 0) {
			*last = true;
			p += 4;
		}
		while (*p == ' ')       /* trailing spaces */
			p++;
	}
	if (*p != '\0')
		return RELAY_EINVAL;
	*size = n;
	return 0;
}

/* Skip an RFC 5322 comment starting at v[*i] == '('; nested, with quoted-pairs. */
static int
submit_parse_skip_comment(const char *v, size_t len, size_t *i)
{
	int depth = 0;

	for (; *i < len; (*i)++) {
		if (v[*i] == '\\')
			(*i)++;
		else if (v[*i] == '(')
			depth++;
		else if (v[*i] == ')' && --depth == 0)
			return 0;
	}
	return RELAY_EINVAL;
}

static int
submit_parse_header_flush(struct buf *cur, struct buf *canon,
    void (*cb)(void *arg, const char *addr), void *arg, int *n)
{
	if (cur->len == 0)
		return 0;
	if (submit_parse_mailbox(cur->data, cur->len, canon, NULL) != 0)
		return RELAY_EINVAL;
	cb(arg, buf_cstr(canon));
	(*n)++;
	buf_reset(cur);
	return 0;
}

int
submit_parse_header_addrs(const char *v, size_t len,
    void (*cb)(void *arg, const char *addr), void *arg)
{
	struct buf cur = BUF_INIT, canon = BUF_INIT;
	size_t i;
	int n = 0, rc = RELAY_EINVAL;
	bool angled = false;        /* cur holds an angle-addr: ignore until ',' */

	for (i = 0; i < len; i++) {
		char c = v[i];

		if (c == '(') {
			if (submit_parse_skip_comment(v, len, &i) != 0)
				goto out;
		} else if (c == '"') {
			if (angled)
				goto out;
			buf_putc(&cur, c);
			for (i++; i < len && v[i] != '"'; i++) {
				if (v[i] == '\\' && i + 1 < len)
					buf_putc(&cur, v[i++]);
				buf_putc(&cur, v[i]);
			}
			if (i == len)
				goto out;
			buf_putc(&cur, '"');
		} else if (c == '<') {
			if (angled)
				goto out;
			buf_reset(&cur);    /* what came before was a display name */
			for (i++; i < len && v[i] != '>'; i++) {
				if (v[i] == '"') {
					buf_putc(&cur, v[i]);
					for (i++; i < len && v[i] != '"'; i++) {
						if (v[i] == '\\' && i + 1 < len)
							buf_putc(&cur, v[i++]);
						buf_putc(&cur, v[i]);
					}
					if (i == len)
						goto out;
				}
				if (v[i] != ' ' && v[i] != '\t' && v[i] != '\r' && v[i] != '\n')
					buf_putc(&cur, v[i]);
			}
			if (i == len || cur.len == 0)
				goto out;
			angled = true;
		} else if (c == ':' && !angled) {
			buf_reset(&cur);    /* a group's display name */
		} else if (c == ',' || c == ';') {
			if (submit_parse_header_flush(&cur, &canon, cb, arg, &n) != 0)
				goto out;
			angled = false;
		} else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			continue;
		} else if (angled) {
			goto out;           /* junk after "<addr>" */
		} else {
			buf_putc(&cur, c);
		}
	}
	if (submit_parse_header_flush(&cur, &canon, cb, arg, &n) != 0)
		goto out;
	rc = n;
out:
	buf_free(&cur);
	buf_free(&canon);
	return rc;
}
