/*
 * tlsrpt_count.c - the TLSRPT counts table: per policy domain and slot, the
 * policies seen, their successful and failed sessions and the failure
 * details (RFC 8460 4.4); and its text form, the file queue_dir/tlsrpt.
 *
 * File format, one record per line, fields escaped as in queue files
 * (queue/QUEUE.md: "\s" for a space, "-" for none):
 *	B start_ms end_ms domain report_id      a bucket; the lines below are its
 *	S rua                                   a destination that took its report
 *	P type ok failed strings mx             a policy ("strings": '\n'-joined)
 *	D count result sending_ip mx ip info    a failure detail of the last P
 *
 * Owns: the buckets and everything in them.
 * Must never: do I/O (tlsrpt.c reads and writes the file) or read a clock.
 */
#include "tlsrpt/tlsrpt_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "queue/queue.h"

#define TLSRPT_MAX_POLICIES  64         /* per bucket; more are folded into the last */
#define TLSRPT_MAX_DETAILS   64         /* per policy; more are folded into one of
                                           the same result type */

static bool
tlsrpt_streq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static char *
tlsrpt_dup(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

void
tlsrpt_table_init(struct tlsrpt_table *tb)
{
	htab_init(&tb->buckets, NULL);
}

static void
tlsrpt_policy_free(struct tlsrpt_policy *p)
{
	size_t i;

	for (i = 0; i < p->nd; i++) {
		free(p->d[i].result);
		free(p->d[i].sending_ip);
		free(p->d[i].mx);
		free(p->d[i].ip);
		free(p->d[i].info);
	}
	free(p->d);
	free(p->strings);
	free(p->mx);
}

static void
tlsrpt_bucket_free(struct tlsrpt_bucket *b)
{
	size_t i;

	for (i = 0; i < b->np; i++)
		tlsrpt_policy_free(&b->p[i]);
	free(b->p);
	for (i = 0; i < b->nsent; i++)
		free(b->sent[i]);
	free(b->sent);
	free(b->report_id);
	free(b->domain);
	free(b->key);
	free(b);
}

void
tlsrpt_table_remove(struct tlsrpt_table *tb, struct tlsrpt_bucket *b)
{
	htab_remove(&tb->buckets, &b->node);
	tlsrpt_bucket_free(b);
}

void
tlsrpt_table_free(struct tlsrpt_table *tb)
{
	struct htab_iter it;
	struct htab_node *n;

	for (n = htab_first(&tb->buckets, &it); n != NULL; n = htab_next(&it))
		tlsrpt_table_remove(tb, HTAB_ENTRY(n, struct tlsrpt_bucket, node));
	htab_free(&tb->buckets);
}

static void
tlsrpt_key(struct buf *k, const char *domain, uint64_t start)
{
	const char *p;

	buf_printf(k, "%" PRIu64 " ", start);
	for (p = domain; *p != '\0'; p++)       /* domains compare without case */
		buf_putc(k, (*p >= 'A' && *p <= 'Z') ? (char)(*p - 'A' + 'a') : *p);
}

struct tlsrpt_bucket *
tlsrpt_table_find(struct tlsrpt_table *tb, const char *domain, uint64_t start)
{
	struct buf k = BUF_INIT;
	struct htab_node *n;

	tlsrpt_key(&k, domain, start);
	n = htab_find(&tb->buckets, buf_cstr(&k));
	buf_free(&k);
	return n != NULL ? HTAB_ENTRY(n, struct tlsrpt_bucket, node) : NULL;
}

static struct tlsrpt_bucket *
tlsrpt_bucket_get(struct tlsrpt_table *tb, const char *domain, uint64_t start, uint64_t end)
{
	struct tlsrpt_bucket *b;
	struct buf k = BUF_INIT;

	if ((b = tlsrpt_table_find(tb, domain, start)) != NULL)
		return b;
	b = xcalloc(1, sizeof(*b));
	tlsrpt_key(&k, domain, start);
	b->key = buf_steal(&k);
	b->domain = xstrdup(strchr(b->key, ' ') + 1);
	b->start_ms = start;
	b->end_ms = end;
	htab_insert(&tb->buckets, &b->node, b->key);
	return b;
}

static struct tlsrpt_policy *
tlsrpt_policy_get(struct tlsrpt_bucket *b, enum tlsrpt_ptype type, const char *strings,
    const char *mx)
{
	struct tlsrpt_policy *p;
	size_t i;

	for (i = 0; i < b->np; i++)
		if (b->p[i].type == type && tlsrpt_streq(b->p[i].strings, strings) &&
		    tlsrpt_streq(b->p[i].mx, mx))
			return &b->p[i];
	if (b->np == TLSRPT_MAX_POLICIES)
		return &b->p[b->np - 1];
	b->p = xrealloc(b->p, (b->np + 1) * sizeof(*b->p));
	p = &b->p[b->np++];
	memset(p, 0, sizeof(*p));
	p->type = type;
	p->strings = tlsrpt_dup(strings);
	p->mx = tlsrpt_dup(mx);
	return p;
}

static struct tlsrpt_detail *
tlsrpt_detail_get(struct tlsrpt_policy *p, const char *result, const char *sending_ip,
    const char *mx, const char *ip, const char *info)
{
	struct tlsrpt_detail *d;
	size_t i;

	for (i = 0; i < p->nd; i++) {
		d = &p->d[i];
		if (strcmp(d->result, result) == 0 && tlsrpt_streq(d->sending_ip, sending_ip) &&
		    tlsrpt_streq(d->mx, mx) && tlsrpt_streq(d->ip, ip) &&
		    tlsrpt_streq(d->info, info))
			return d;
	}
	if (p->nd >= TLSRPT_MAX_DETAILS) {
		/* folded into one of the same result type; a new type still gets
		 * its own (a few: the result types are RFC 8460's) */
		for (i = p->nd; i > 0; i--)
			if (strcmp(p->d[i - 1].result, result) == 0)
				return &p->d[i - 1];
	}
	p->d = xrealloc(p->d, (p->nd + 1) * sizeof(*p->d));
	d = &p->d[p->nd++];
	memset(d, 0, sizeof(*d));
	d->result = xstrdup(result);
	d->sending_ip = tlsrpt_dup(sending_ip);
	d->mx = tlsrpt_dup(mx);
	d->ip = tlsrpt_dup(ip);
	d->info = tlsrpt_dup(info);
	return d;
}

void
tlsrpt_table_add(struct tlsrpt_table *tb, const struct tlsrpt_session *ev, uint64_t start,
    uint64_t end)
{
	struct tlsrpt_bucket *b = tlsrpt_bucket_get(tb, ev->domain, start, end);
	struct tlsrpt_policy *p;
	struct buf s = BUF_INIT;
	size_t i;

	for (i = 0; i < ev->nstrings; i++) {
		if (i > 0)
			buf_putc(&s, '\n');
		buf_puts(&s, ev->strings[i]);
	}
	p = tlsrpt_policy_get(b, ev->type, ev->nstrings > 0 ? buf_cstr(&s) : NULL,
	    ev->type == TLSRPT_NO_POLICY ? NULL : ev->mx_host);
	buf_free(&s);
	if (ev->result == NULL) {
		p->ok++;
		return;
	}
	p->failed++;
	tlsrpt_detail_get(p, ev->result, ev->sending_ip, ev->receiving_mx, ev->receiving_ip,
	    ev->info)->count++;
}

void
tlsrpt_table_drop_nopolicy(struct tlsrpt_table *tb, const char *domain)
{
	struct htab_iter it;
	struct htab_node *n;
	struct tlsrpt_bucket *b;
	size_t i;

	for (n = htab_first(&tb->buckets, &it); n != NULL; n = htab_next(&it)) {
		b = HTAB_ENTRY(n, struct tlsrpt_bucket, node);
		if (b->sending || util_strcasecmp(b->domain, domain) != 0)
			continue;
		for (i = 0; i < b->np;) {
			if (b->p[i].type != TLSRPT_NO_POLICY) {
				i++;
				continue;
			}
			tlsrpt_policy_free(&b->p[i]);
			memmove(&b->p[i], &b->p[i + 1], (b->np - i - 1) * sizeof(*b->p));
			b->np--;
		}
		if (b->np == 0)
			tlsrpt_table_remove(tb, b);
	}
}

bool
tlsrpt_bucket_was_sent(const struct tlsrpt_bucket *b, const char *rua)
{
	size_t i;

	for (i = 0; i < b->nsent; i++)
		if (strcmp(b->sent[i], rua) == 0)
			return true;
	return false;
}

void
tlsrpt_bucket_mark_sent(struct tlsrpt_bucket *b, const char *rua)
{
	if (tlsrpt_bucket_was_sent(b, rua))
		return;
	b->sent = xrealloc(b->sent, (b->nsent + 1) * sizeof(*b->sent));
	b->sent[b->nsent++] = xstrdup(rua);
}

/*
 * The file.
 */

static int
tlsrpt_bucket_cmp(const void *a, const void *b)
{
	const struct tlsrpt_bucket *x = *(const struct tlsrpt_bucket *const *)a;
	const struct tlsrpt_bucket *y = *(const struct tlsrpt_bucket *const *)b;

	return strcmp(x->key, y->key);
}

void
tlsrpt_table_save(const struct tlsrpt_table *tb, struct buf *out)
{
	struct tlsrpt_bucket **v;
	struct htab_iter it;
	struct htab_node *n;
	size_t nb = 0, i, j, k;

	buf_puts(out, "# relayd TLSRPT counts (RFC 8460); rewritten by relayd, do not edit while running\n");
	v = xcalloc(htab_count(&tb->buckets) + 1, sizeof(*v));
	for (n = htab_first(&tb->buckets, &it); n != NULL; n = htab_next(&it))
		v[nb++] = HTAB_ENTRY(n, struct tlsrpt_bucket, node);
	qsort(v, nb, sizeof(*v), tlsrpt_bucket_cmp);
	for (i = 0; i < nb; i++) {
		const struct tlsrpt_bucket *b = v[i];

		buf_printf(out, "B %" PRIu64 " %" PRIu64, b->start_ms, b->end_ms);
		envelope_escape(out, b->domain);
		envelope_escape(out, b->report_id);
		buf_putc(out, '\n');
		for (j = 0; j < b->nsent; j++) {
			buf_puts(out, "S");
			envelope_escape(out, b->sent[j]);
			buf_putc(out, '\n');
		}
		for (j = 0; j < b->np; j++) {
			const struct tlsrpt_policy *p = &b->p[j];

			buf_printf(out, "P %d %" PRIu64 " %" PRIu64, (int)p->type, p->ok, p->failed);
			envelope_escape(out, p->strings);
			envelope_escape(out, p->mx);
			buf_putc(out, '\n');
			for (k = 0; k < p->nd; k++) {
				const struct tlsrpt_detail *d = &p->d[k];

				buf_printf(out, "D %" PRIu64, d->count);
				envelope_escape(out, d->result);
				envelope_escape(out, d->sending_ip);
				envelope_escape(out, d->mx);
				envelope_escape(out, d->ip);
				envelope_escape(out, d->info);
				buf_putc(out, '\n');
			}
		}
	}
	free(v);
}

static int
tlsrpt_u64(const char *s, uint64_t *v)
{
	char *end;

	if (*s < '0' || *s > '9')
		return -1;
	*v = strtoull(s, &end, 10);
	return *end == '\0' ? 0 : -1;
}

/* Unescape argv[from..argc) in place; -1 if one is malformed. */
static int
tlsrpt_fields(char **argv, int argc, int from)
{
	int i;

	for (i = from; i < argc; i++)
		if (envelope_unescape(argv[i], &argv[i]) != 0)
			return -1;
	return 0;
}

int
tlsrpt_table_load(struct tlsrpt_table *tb, char *text, struct buf *why)
{
	struct tlsrpt_bucket *b = NULL;
	struct tlsrpt_policy *p = NULL;
	struct tlsrpt_detail *d;
	char *line, *next, *argv[8];
	uint64_t a, c;
	unsigned lineno = 0;
	int argc, type;

	for (line = text; line != NULL && *line != '\0'; line = next) {
		lineno++;
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		if (line[0] == '#' || line[0] == '\0')
			continue;
		if ((argc = envelope_split(line, argv, 8)) < 1)
			goto bad;
		if (strcmp(argv[0], "B") == 0) {
			if (argc != 5 || tlsrpt_u64(argv[1], &a) != 0 || tlsrpt_u64(argv[2], &c) != 0 ||
			    tlsrpt_fields(argv, argc, 3) != 0 || argv[3] == NULL ||
			    tlsrpt_table_find(tb, argv[3], a) != NULL)
				goto bad;
			b = tlsrpt_bucket_get(tb, argv[3], a, c);
			b->report_id = tlsrpt_dup(argv[4]);
			p = NULL;
		} else if (strcmp(argv[0], "S") == 0) {
			if (b == NULL || argc != 2 || tlsrpt_fields(argv, argc, 1) != 0 ||
			    argv[1] == NULL)
				goto bad;
			tlsrpt_bucket_mark_sent(b, argv[1]);
		} else if (strcmp(argv[0], "P") == 0) {
			if (b == NULL || argc != 6 || tlsrpt_u64(argv[2], &a) != 0 ||
			    tlsrpt_u64(argv[3], &c) != 0 || tlsrpt_fields(argv, argc, 4) != 0)
				goto bad;
			type = atoi(argv[1]);
			if (type < TLSRPT_NO_POLICY || type > TLSRPT_STS)
				goto bad;
			p = tlsrpt_policy_get(b, (enum tlsrpt_ptype)type, argv[4], argv[5]);
			p->ok += a;
			p->failed += c;
		} else if (strcmp(argv[0], "D") == 0) {
			if (p == NULL || argc != 7 || tlsrpt_u64(argv[1], &a) != 0 ||
			    tlsrpt_fields(argv, argc, 2) != 0 || argv[2] == NULL)
				goto bad;
			d = tlsrpt_detail_get(p, argv[2], argv[3], argv[4], argv[5], argv[6]);
			d->count += a;
		} else
			goto bad;
	}
	return 0;
bad:
	buf_printf(why, "line %u: malformed", lineno);
	return -1;
}
