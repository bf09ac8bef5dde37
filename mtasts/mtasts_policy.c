/*
 * mtasts_policy.c - what MTA-STS texts mean (mtasts.h): the "_mta-sts" TXT
 * record (RFC 8461 3.1), the policy body (3.2) and MX host matching (4.1).
 *
 * Owns: a parsed policy's mx pattern strings.
 * Must never: do I/O or keep state; anything malformed is refused with a
 * reason, never half taken.
 */
#include "mtasts/mtasts.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define MTASTS_WSP(c) ((c) == ' ' || (c) == '\t')

const char *
mtasts_mode_name(enum mtasts_mode m)
{
	switch (m) {
	case MTASTS_MODE_ENFORCE:
		return "enforce";
	case MTASTS_MODE_TESTING:
		return "testing";
	case MTASTS_MODE_NONE:
		break;
	}
	return "none";
}

bool
mtasts_txt_is_sts(const char *txt)
{
	const char *p = txt + 7;

	if (strncmp(txt, "v=STSv1", 7) != 0)
		return false;
	while (MTASTS_WSP(*p))
		p++;
	return *p == ';';
}

int
mtasts_parse_txt(const char *txt, char id[MTASTS_ID_MAX + 1])
{
	const char *p = txt, *f, *e;
	bool have_id = false;
	size_t n, i;

	if (strncmp(p, "v=STSv1", 7) != 0)
		return RELAY_EINVAL;
	p += 7;
	for (;;) {
		while (MTASTS_WSP(*p))
			p++;
		if (*p == '\0')
			break;
		if (*p != ';')
			return RELAY_EINVAL;
		p++;
		while (MTASTS_WSP(*p))
			p++;
		if (*p == '\0')
			break;              /* a trailing delimiter */
		f = p;
		while (*p != '\0' && *p != ';' && !MTASTS_WSP(*p))
			p++;
		e = p;
		if ((n = (size_t)(e - f)) > 3 && strncmp(f, "id=", 3) == 0) {
			if (have_id)
				continue;   /* the first one counts */
			if (n - 3 > MTASTS_ID_MAX)
				return RELAY_EINVAL;
			for (i = 3; i < n; i++)
				if (!isalnum((unsigned char)f[i]))
					return RELAY_EINVAL;
			memcpy(id, f + 3, n - 3);
			id[n - 3] = '\0';
			have_id = true;
		} else if (memchr(f, '=', n) == NULL || f[0] == '=')
			return RELAY_EINVAL;    /* an extension is name=value */
	}
	return have_id ? 0 : RELAY_EINVAL;
}

/* An mx value: ["*."] domain, lower-cased into a new string, or NULL. */
static char *
mtasts_mx_pattern(const char *v, size_t n)
{
	size_t i, label = 0, start = 0;
	char *s;

	if (n > 0 && v[n - 1] == '.')
		n--;
	if (n >= 2 && v[0] == '*' && v[1] == '.')
		start = 2;
	if (n <= start || n > 253)
		return NULL;
	for (i = start; i < n; i++) {
		if (v[i] == '.') {
			if (label == 0)
				return NULL;
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char)v[i]) && v[i] != '-' && v[i] != '_')
			return NULL;
		if (++label > 63)
			return NULL;
	}
	if (label == 0)
		return NULL;
	s = xstrndup(v, n);
	for (i = 0; i < n; i++)
		s[i] = (char)tolower((unsigned char)s[i]);
	return s;
}

void
mtasts_policy_release(struct mtasts_policy *p)
{
	size_t i;

	for (i = 0; i < p->nmx; i++)
		free(p->mx[i]);
	free(p->mx);
	memset(p, 0, sizeof(*p));
}

void
mtasts_policy_copy(struct mtasts_policy *dst, const struct mtasts_policy *src)
{
	size_t i;

	*dst = *src;
	dst->mx = src->nmx ? xcalloc(src->nmx, sizeof(*dst->mx)) : NULL;
	for (i = 0; i < src->nmx; i++)
		dst->mx[i] = xstrdup(src->mx[i]);
}

static bool
mtasts_key_is(const char *k, size_t n, const char *want)
{
	return strlen(want) == n && util_strncasecmp(k, want, n) == 0;
}

int
mtasts_parse_policy(const char *text, size_t len, struct mtasts_policy *out, struct buf *err)
{
	const char *p = text, *end = text + len, *eol, *k, *v, *colon;
	bool have_version = false, have_mode = false, have_age = false;
	size_t kn, vn, i;
	unsigned lineno = 0;

	memset(out, 0, sizeof(*out));
	if (memchr(text, '\0', len) != NULL) {
		buf_puts(err, "NUL in the policy");
		return RELAY_EINVAL;
	}
	while (p < end) {
		lineno++;
		if ((eol = memchr(p, '\n', (size_t)(end - p))) == NULL)
			eol = end;
		k = p;
		p = eol < end ? eol + 1 : end;
		if (eol > k && eol[-1] == '\r')
			eol--;
		while (k < eol && MTASTS_WSP(*k))
			k++;
		if (k == eol)
			continue;           /* an empty line */
		if ((colon = memchr(k, ':', (size_t)(eol - k))) == NULL) {
			buf_printf(err, "line %u: no ':'", lineno);
			goto bad;
		}
		kn = (size_t)(colon - k);
		while (kn > 0 && MTASTS_WSP(k[kn - 1]))
			kn--;
		v = colon + 1;
		while (v < eol && MTASTS_WSP(*v))
			v++;
		vn = (size_t)(eol - v);
		while (vn > 0 && MTASTS_WSP(v[vn - 1]))
			vn--;
		if (mtasts_key_is(k, kn, "version")) {
			if (have_version)
				continue;
			if (vn != 5 || strncmp(v, "STSv1", 5) != 0) {
				buf_printf(err, "line %u: version is not STSv1", lineno);
				goto bad;
			}
			have_version = true;
		} else if (mtasts_key_is(k, kn, "mode")) {
			if (have_mode)
				continue;
			if (mtasts_key_is(v, vn, "enforce"))
				out->mode = MTASTS_MODE_ENFORCE;
			else if (mtasts_key_is(v, vn, "testing"))
				out->mode = MTASTS_MODE_TESTING;
			else if (mtasts_key_is(v, vn, "none"))
				out->mode = MTASTS_MODE_NONE;
			else {
				buf_printf(err, "line %u: unknown mode '%.*s'", lineno,
				    (int)(vn > 32 ? 32 : vn), v);
				goto bad;
			}
			have_mode = true;
		} else if (mtasts_key_is(k, kn, "max_age")) {
			uint64_t age = 0;

			if (have_age)
				continue;
			if (vn == 0 || vn > 10) {
				buf_printf(err, "line %u: bad max_age", lineno);
				goto bad;
			}
			for (i = 0; i < vn; i++) {
				if (!isdigit((unsigned char)v[i])) {
					buf_printf(err, "line %u: bad max_age", lineno);
					goto bad;
				}
				age = age * 10 + (uint64_t)(v[i] - '0');
			}
			out->max_age = age > MTASTS_MAX_AGE ? MTASTS_MAX_AGE : (uint32_t)age;
			have_age = true;
		} else if (mtasts_key_is(k, kn, "mx")) {
			char *pat = mtasts_mx_pattern(v, vn);

			if (pat == NULL) {
				buf_printf(err, "line %u: bad mx '%.*s'", lineno,
				    (int)(vn > 64 ? 64 : vn), v);
				goto bad;
			}
			if (out->nmx == MTASTS_MAX_MX) {
				free(pat);
				buf_printf(err, "more than %d mx patterns", MTASTS_MAX_MX);
				goto bad;
			}
			out->mx = xrealloc(out->mx, (out->nmx + 1) * sizeof(*out->mx));
			out->mx[out->nmx++] = pat;
		}
		/* other keys: extensions, ignored (RFC 8461 3.2) */
	}
	if (!have_version || !have_mode || !have_age) {
		buf_printf(err, "missing %s", !have_version ? "version" : !have_mode ? "mode" :
		    "max_age");
		goto bad;
	}
	if (out->mode != MTASTS_MODE_NONE && out->nmx == 0) {
		buf_puts(err, "no mx pattern");
		goto bad;
	}
	return 0;
bad:
	mtasts_policy_release(out);
	return RELAY_EINVAL;
}

bool
mtasts_mx_match(const struct mtasts_policy *p, const char *host)
{
	size_t i, n = strlen(host), pn;
	const char *dot;

	if (n > 0 && host[n - 1] == '.')
		n--;
	for (i = 0; i < p->nmx; i++) {
		const char *pat = p->mx[i];

		pn = strlen(pat);
		if (pat[0] == '*' && pat[1] == '.') {
			/* one label, then exactly the rest */
			if ((dot = memchr(host, '.', n)) == NULL || dot == host)
				continue;
			if ((size_t)(host + n - dot) == pn - 1 &&
			    util_strncasecmp(dot, pat + 1, pn - 1) == 0)
				return true;
		} else if (pn == n && util_strncasecmp(host, pat, n) == 0)
			return true;
	}
	return false;
}
