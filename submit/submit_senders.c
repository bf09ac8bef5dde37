/*
 * submit_senders.c - the senders map: which authenticated login may use
 * which envelope sender (and, with submit.check_header_from, header From:).
 *
 *   # comment
 *   alice: alice@example.com, a.smith@example.com
 *   bob:   @example.org            (any address at that domain)
 *
 * Domains compare case-insensitively, local parts exactly; a login may have
 * several lines.  Owns the parsed map (one sorted array, looked up by binary
 * search); the file is read once per load (start and SIGHUP).  It must never
 * be consulted for a login that did not authenticate, and a map that fails to
 * parse is never half-applied: the caller keeps the old one.
 */
#include "submit/submit_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"

#define SUBMIT_SENDERS_FILE_MAX (64u * 1024 * 1024)

struct submit_senders_entry {
	char *login;
	char *local;                /* NULL for an "@domain" entry */
	char *domain;
};

struct submit_senders {
	struct submit_senders_entry *e;
	size_t n, cap;
	atomic_int refs;            /* the front and each shard (submit_worker.c) hold one */
};

static void
submit_senders_add(struct submit_senders *m, const char *login, size_t loginlen,
    const char *local, size_t locallen, const char *domain)
{
	struct submit_senders_entry *e;

	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 16;
		m->e = xrealloc(m->e, m->cap * sizeof(*m->e));
	}
	e = &m->e[m->n++];
	e->login = xstrndup(login, loginlen);
	e->local = local ? xstrndup(local, locallen) : NULL;
	e->domain = xstrdup(domain);
}

static int
submit_senders_cmp(const void *a, const void *b)
{
	const struct submit_senders_entry *x = a, *y = b;

	return strcmp(x->login, y->login);
}

/* Split "local@domain" (canonical, the last '@' separates) into its parts. */
static const char *
submit_senders_split(const char *addr, size_t *locallen)
{
	const char *at = strrchr(addr, '@');

	if (at == NULL)
		return NULL;
	*locallen = (size_t)(at - addr);
	return at + 1;
}

/* One token of the address list: "@domain" or a mailbox. 0 or -1 with err. */
static int
submit_senders_token(struct submit_senders *m, const char *login, size_t loginlen,
    const char *tok, size_t toklen, struct buf *canon)
{
	const char *domain;
	size_t locallen = 0;

	if (tok[0] == '@') {
		/* reuse the mailbox grammar for the domain: "x@domain" */
		struct buf t = BUF_INIT;
		int rc;

		buf_putc(&t, 'x');
		buf_append(&t, tok, toklen);
		rc = submit_parse_mailbox(t.data, t.len, canon, NULL);
		buf_free(&t);
		if (rc != 0)
			return -1;
		submit_senders_add(m, login, loginlen, NULL, 0, buf_cstr(canon) + 2);
		return 0;
	}
	if (submit_parse_mailbox(tok, toklen, canon, NULL) != 0)
		return -1;
	if ((domain = submit_senders_split(buf_cstr(canon), &locallen)) == NULL)
		return -1;
	submit_senders_add(m, login, loginlen, canon->data, locallen, domain);
	return 0;
}

static int
submit_senders_line(struct submit_senders *m, const char *line, size_t len,
    const char *name, unsigned lineno, struct buf *canon, struct buf *err)
{
	const char *p = line, *end = line + len, *colon, *tok;
	size_t i, loginlen;
	bool q;

	/* a '#' at the start or after a blank starts a comment */
	for (i = 0; i < len; i++)
		if (line[i] == '#' && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) {
			end = line + i;
			break;
		}
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
		p++;
	while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
		end--;
	if (p == end)
		return 0;
	if ((colon = memchr(p, ':', (size_t)(end - p))) == NULL) {
		buf_printf(err, "%s:%u: expected \"login: address, ...\"\n", name, lineno);
		return -1;
	}
	loginlen = (size_t)(colon - p);
	while (loginlen > 0 && (p[loginlen - 1] == ' ' || p[loginlen - 1] == '\t'))
		loginlen--;
	if (loginlen == 0) {
		buf_printf(err, "%s:%u: empty login\n", name, lineno);
		return -1;
	}
	for (i = 0; i < loginlen; i++)
		if ((unsigned char)p[i] <= ' ') {
			buf_printf(err, "%s:%u: blank in login\n", name, lineno);
			return -1;
		}
	for (tok = colon + 1; tok < end; ) {
		const char *t;

		while (tok < end && (*tok == ' ' || *tok == '\t' || *tok == ','))
			tok++;
		if (tok == end)
			break;
		for (t = tok, q = false; t < end; t++) {
			if (q && *t == '\\' && t + 1 < end)
				t++;
			else if (*t == '"')
				q = !q;
			else if (!q && (*t == ' ' || *t == '\t' || *t == ','))
				break;
		}
		if (submit_senders_token(m, p, loginlen, tok, (size_t)(t - tok), canon) != 0) {
			buf_printf(err, "%s:%u: bad address \"%.*s\"\n", name, lineno,
			    (int)(t - tok), tok);
			return -1;
		}
		tok = t;
	}
	return 0;
}

int
submit_senders_parse(const char *name, const char *text, size_t len,
    struct submit_senders **out, struct buf *err)
{
	struct submit_senders *m = xcalloc(1, sizeof(*m));
	struct buf canon = BUF_INIT;
	const char *p = text, *end = text + len, *nl;
	unsigned lineno = 0;
	int rc = 0;

	atomic_init(&m->refs, 1);
	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			nl = end;
		lineno++;
		if (submit_senders_line(m, p, (size_t)(nl - p), name, lineno, &canon, err) != 0)
			rc = -1;
		p = nl + 1;
	}
	buf_free(&canon);
	if (rc != 0) {
		submit_senders_free(m);
		return -1;
	}
	if (m->n > 1)
		qsort(m->e, m->n, sizeof(*m->e), submit_senders_cmp);
	*out = m;
	return 0;
}

int
submit_senders_load(const char *path, struct submit_senders **out, struct buf *err)
{
	struct buf text = BUF_INIT;
	struct stat st;
	ssize_t n;
	int fd, rc;

	if (path == NULL)
		return submit_senders_parse("(none)", "", 0, out, err);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		buf_printf(err, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0 || (uint64_t)st.st_size > SUBMIT_SENDERS_FILE_MAX) {
		buf_printf(err, "%s: %s\n", path, "cannot stat or too large");
		close(fd);
		return -1;
	}
	buf_reserve(&text, (size_t)st.st_size + 1);
	for (;;) {
		buf_reserve(&text, 4096);
		n = read(fd, text.data + text.len, text.cap - text.len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			buf_printf(err, "%s: %s\n", path, strerror(errno));
			close(fd);
			buf_free(&text);
			return -1;
		}
		if (n == 0)
			break;
		text.len += (size_t)n;
		text.data[text.len] = '\0';
		if (text.len > SUBMIT_SENDERS_FILE_MAX)
			break;
	}
	close(fd);
	rc = submit_senders_parse(path, buf_cstr(&text), text.len, out, err);
	buf_free(&text);
	return rc;
}

struct submit_senders *
submit_senders_ref(struct submit_senders *m)
{
	if (m != NULL)
		atomic_fetch_add(&m->refs, 1);
	return m;
}

void
submit_senders_free(struct submit_senders *m)
{
	size_t i;

	if (m == NULL || atomic_fetch_sub(&m->refs, 1) > 1)
		return;
	for (i = 0; i < m->n; i++) {
		free(m->e[i].login);
		free(m->e[i].local);
		free(m->e[i].domain);
	}
	free(m->e);
	free(m);
}

size_t
submit_senders_count(const struct submit_senders *m)
{
	return m->n;
}

bool
submit_senders_owns(const struct submit_senders *m, const char *login, const char *addr)
{
	const char *domain;
	size_t lo = 0, hi = m->n, mid, locallen;

	if (login == NULL || *addr == '\0' ||
	    (domain = submit_senders_split(addr, &locallen)) == NULL)
		return false;
	while (lo < hi) {           /* first entry of login */
		mid = lo + (hi - lo) / 2;
		if (strcmp(m->e[mid].login, login) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < m->n && strcmp(m->e[lo].login, login) == 0; lo++) {
		const struct submit_senders_entry *e = &m->e[lo];

		if (util_strcasecmp(e->domain, domain) != 0)
			continue;
		if (e->local == NULL)
			return true;
		if (strlen(e->local) == locallen && memcmp(e->local, addr, locallen) == 0)
			return true;
	}
	return false;
}
