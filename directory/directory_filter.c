/*
 * directory_filter.c - the pure text work of the directory module: the search
 * filter built from a template with the login escaped (RFC 4515), and an
 * attribute value turned into an owned address.  No I/O, no libldap; it must
 * never let a login change the filter's structure (a login "*" matches
 * nobody, not everybody).
 */
#include "directory/directory.h"

#include <string.h>

#include "common/util.h"

void
directory_escape(struct buf *out, const char *s)
{
	for (; *s != '\0'; s++) {
		switch (*s) {
		case '*':
		case '(':
		case ')':
		case '\\':
			buf_printf(out, "\\%02x", (unsigned)(unsigned char)*s);
			break;
		default:
			buf_putc(out, *s);
			break;
		}
	}
}

int
directory_filter(struct buf *out, const char *tmpl, const char *login)
{
	const char *at = strrchr(login, '@');
	const char *p;

	buf_reset(out);
	for (p = tmpl; *p != '\0'; p++) {
		if (*p != '%') {
			buf_putc(out, *p);
			continue;
		}
		switch (p[1]) {
		case 'u':
			directory_escape(out, login);
			break;
		case 'd':
			directory_escape(out, at != NULL ? at + 1 : "");
			break;
		case '%':
			buf_putc(out, '%');
			break;
		default:
			return -1;
		}
		p++;
	}
	return 0;
}

int
directory_value(struct buf *out, const char *v, size_t len)
{
	const char *at;
	size_t i;

	while (len > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		len--;
	}
	while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
		len--;
	if (len >= 5 && util_strncasecmp(v, "smtp:", 5) == 0) {
		v += 5;
		len -= 5;
	}
	if (len == 0 || len > 512 || memchr(v, '\0', len) != NULL)
		return -1;
	for (i = 0; i < len; i++)
		if ((unsigned char)v[i] <= ' ' || v[i] == 127)
			return -1;
	at = NULL;
	for (i = len; i > 0; i--)
		if (v[i - 1] == '@') {
			at = v + i - 1;
			break;
		}
	/* "@domain" or "local@domain"; a ':' means another type ("X500:", "SIP:") */
	if (at == NULL || at + 1 == v + len || memchr(v, ':', len) != NULL)
		return -1;
	buf_reset(out);
	buf_append(out, v, len);
	return 0;
}
