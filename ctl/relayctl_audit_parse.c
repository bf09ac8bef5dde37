/*
 * relayctl_audit_parse.c - the tokenizer for relayd's event log lines, the
 * reverse of common/log.c:
 *   ts=<RFC 3339> level=<level> event=<name> key=value key="quoted \"value\"" ...
 * Quoted values use the escapes \" \\ \n \r \t \xHH.  Owns the line copy it
 * unescapes in place (struct ctl_audit_line).  Must never trust a line: any
 * length, any bytes; what does not follow the format is reported malformed,
 * never half-parsed.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "ctl/relayctl_audit.h"

void
ctl_audit_line_init(struct ctl_audit_line *l)
{
	memset(l, 0, sizeof(*l));
	buf_init(&l->store);
}

void
ctl_audit_line_free(struct ctl_audit_line *l)
{
	buf_free(&l->store);
	free(l->f);
	memset(l, 0, sizeof(*l));
}

static int
parse_is_keychar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    c == '_' || c == '-' || c == '.';
}

static int
parse_hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static void
parse_add_field(struct ctl_audit_line *l, const char *key, const char *val, size_t vallen)
{
	if (l->nf == l->capf) {
		l->capf = l->capf ? l->capf * 2 : 16;
		l->f = xrealloc(l->f, l->capf * sizeof(*l->f));
	}
	l->f[l->nf].key = key;
	l->f[l->nf].val = val;
	l->f[l->nf].vallen = vallen;
	l->nf++;
}

/*
 * Unescape the quoted value starting at s[*i] (the opening quote) in place.
 * On success *i is past the closing quote, *out and *outlen the value.
 */
static int
parse_quoted(char *s, size_t len, size_t *i, char **out, size_t *outlen)
{
	size_t r = *i + 1, w = *i;
	int hi, lo;

	*out = s + w;
	while (r < len) {
		unsigned char c = (unsigned char)s[r];

		if (c == '"') {
			*outlen = w - (size_t)(*out - s);
			s[w] = '\0';
			*i = r + 1;
			return 0;
		}
		if (c < 0x20 || c == 0x7f)
			return RELAY_EINVAL;
		if (c != '\\') {
			s[w++] = (char)c;
			r++;
			continue;
		}
		if (r + 1 >= len)
			return RELAY_EINVAL;
		switch (s[r + 1]) {
		case '"':  s[w++] = '"';  r += 2; break;
		case '\\': s[w++] = '\\'; r += 2; break;
		case 'n':  s[w++] = '\n'; r += 2; break;
		case 'r':  s[w++] = '\r'; r += 2; break;
		case 't':  s[w++] = '\t'; r += 2; break;
		case 'x':
			if (r + 3 >= len)
				return RELAY_EINVAL;
			hi = parse_hexval((unsigned char)s[r + 2]);
			lo = parse_hexval((unsigned char)s[r + 3]);
			if (hi < 0 || lo < 0)
				return RELAY_EINVAL;
			s[w++] = (char)(hi << 4 | lo);
			r += 4;
			break;
		default:
			return RELAY_EINVAL;
		}
	}
	return RELAY_EINVAL;            /* no closing quote: a truncated line */
}

int
ctl_audit_line_parse(struct ctl_audit_line *l, const char *line, size_t len)
{
	char *s;
	size_t i = 0;

	buf_reset(&l->store);
	buf_append(&l->store, line, len);
	s = l->store.data;
	l->nf = 0;
	l->ts = l->event = NULL;
	l->ts_ms = 0;

	while (i < len) {
		char *key, *val;
		size_t vallen;

		if (s[i] == ' ') {
			i++;
			continue;
		}
		key = s + i;
		while (i < len && parse_is_keychar((unsigned char)s[i]))
			i++;
		if (i == len || s[i] != '=' || s + i == key)
			return RELAY_EINVAL;
		s[i++] = '\0';
		if (i < len && s[i] == '"') {
			if (parse_quoted(s, len, &i, &val, &vallen) != 0)
				return RELAY_EINVAL;
			if (i < len && s[i] != ' ')
				return RELAY_EINVAL;
		} else {
			val = s + i;
			while (i < len && s[i] != ' ') {
				unsigned char c = (unsigned char)s[i];
				if (c < 0x20 || c == 0x7f)
					return RELAY_EINVAL;
				i++;
			}
			vallen = (size_t)(s + i - val);
			if (vallen == 0)        /* log.c writes "" for empty: truncated */
				return RELAY_EINVAL;
			if (i < len)
				s[i++] = '\0';
		}
		parse_add_field(l, key, val, vallen);
	}

	if (l->nf == 0 || strcmp(l->f[0].key, "ts") != 0)
		return RELAY_EINVAL;
	l->ts = l->f[0].val;
	if (util_rfc3339_parse(l->ts, &l->ts_ms) != 0)
		return RELAY_EINVAL;
	l->event = ctl_audit_line_get(l, "event");
	if (l->event == NULL || *l->event == '\0')
		return RELAY_EINVAL;
	return 0;
}

const char *
ctl_audit_line_get(const struct ctl_audit_line *l, const char *key)
{
	size_t i;

	for (i = 0; i < l->nf; i++)
		if (strcmp(l->f[i].key, key) == 0)
			return l->f[i].val;
	return NULL;
}
