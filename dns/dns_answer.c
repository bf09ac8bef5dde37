/*
 * dns_answer.c - DNS names and answers for the resolver: the normal
 * form of a name (lower case, no trailing dot), and the walk over a raw
 * answer from c-ares (header, question, answer section, the authority
 * section's SOA of a negative answer) that yields its CNAME, MX, A and AAAA
 * records, the least TTL they carry (RFC 2181 8) and how long a negative
 * answer may be kept (RFC 2308 5); and the TXT records of an answer.
 *
 * Owns: the records of a struct dns_answer until dns_answer_free().
 *
 * Must never: read outside the answer buffer (every length is checked
 * against its end), or decide what a lookup answers (dns_resolve.c
 * does).
 */
#include "dns/dns_int.h"

#include <arpa/nameser.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define DNS_NAME_MAX         255

/* Lower-case copy of name without a trailing dot (NULL when too long). */
char *
dns_norm(const char *name)
{
	size_t n = strlen(name), i;
	char *s;

	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n > DNS_NAME_MAX)
		return NULL;
	s = xstrndup(name, n);
	for (i = 0; i < n; i++)
		s[i] = (char)tolower((unsigned char)s[i]);
	return s;
}

void
dns_answer_free(struct dns_answer *an)
{
	size_t i;

	for (i = 0; i < an->n; i++) {
		free(an->rr[i].owner);
		free(an->rr[i].target);
	}
	free(an->rr);
	an->rr = NULL;
	an->n = 0;
}

/* Expand a (compressed) name at p into a malloc'd normalized string; NULL on error. */
static char *
dns_expand(const unsigned char *p, const unsigned char *abuf, int alen, long *used)
{
	char *s, *n;

	if (ares_expand_name(p, abuf, alen, &s, used) != ARES_SUCCESS)
		return NULL;
	n = dns_norm(s);
	ares_free_string(s);
	return n;
}

/* A TTL field (RFC 2181 8: a value with the top bit set is 0). */
static uint32_t
dns_ttl_at(const unsigned char *p)
{
	uint32_t v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];

	return v > 0x7fffffffu ? 0 : v;
}

/*
 * The TTL of a negative answer (RFC 2308 5): min(SOA TTL, SOA minimum) of
 * the authority section's SOA at p; 0 (do not keep) without one.
 */
static uint32_t
dns_parse_neg_ttl(const unsigned char *abuf, int alen, const unsigned char *p, unsigned nscount)
{
	const unsigned char *end = abuf + alen, *rd;
	unsigned i, type, class, rdlen;
	uint32_t ttl, min;
	long used;
	char *name;

	for (i = 0; i < nscount; i++) {
		if ((name = dns_expand(p, abuf, alen, &used)) == NULL)
			return 0;
		free(name);
		p += used;
		if (end - p < NS_RRFIXEDSZ)
			return 0;
		type = (unsigned)p[0] << 8 | p[1];
		class = (unsigned)p[2] << 8 | p[3];
		ttl = dns_ttl_at(p + 4);
		rdlen = (unsigned)p[8] << 8 | p[9];
		rd = p + NS_RRFIXEDSZ;
		if ((size_t)(end - rd) < rdlen)
			return 0;
		p = rd + rdlen;
		if (type != ns_t_soa || class != ns_c_in || rdlen < 22)
			continue;
		min = dns_ttl_at(rd + rdlen - 4);        /* the last of SOA's five numbers */
		return ttl < min ? ttl : min;
	}
	return 0;
}

/*
 * Collect the answer section's CNAME, MX, A and AAAA records of class IN,
 * the least TTL among its records, and the TTL of a negative answer.
 * 0, or -1 for a malformed message.
 */
int
dns_parse_answer(const unsigned char *abuf, int alen, struct dns_answer *an)
{
	const unsigned char *p, *end = abuf + alen;
	unsigned qd, ancount, nscount, i;
	uint32_t ttl;
	long used;
	char *name;

	memset(an, 0, sizeof(*an));
	an->min_ttl = DNS_TTL_NONE;
	if (abuf == NULL || alen < NS_HFIXEDSZ)
		return -1;
	qd = (unsigned)abuf[4] << 8 | abuf[5];
	ancount = (unsigned)abuf[6] << 8 | abuf[7];
	nscount = (unsigned)abuf[8] << 8 | abuf[9];
	p = abuf + NS_HFIXEDSZ;
	for (i = 0; i < qd; i++) {
		if ((name = dns_expand(p, abuf, alen, &used)) == NULL)
			return -1;
		free(name);
		p += used;
		if (end - p < NS_QFIXEDSZ)
			return -1;
		p += NS_QFIXEDSZ;
	}
	if (ancount > 0)
		an->rr = xcalloc(ancount, sizeof(*an->rr));
	for (i = 0; i < ancount; i++) {
		struct dns_rr *rr = &an->rr[an->n];
		unsigned type, class, rdlen;
		const unsigned char *rd;

		if ((name = dns_expand(p, abuf, alen, &used)) == NULL)
			goto bad;
		p += used;
		if (end - p < NS_RRFIXEDSZ) {
			free(name);
			goto bad;
		}
		type = (unsigned)p[0] << 8 | p[1];
		class = (unsigned)p[2] << 8 | p[3];
		ttl = dns_ttl_at(p + 4);
		rdlen = (unsigned)p[8] << 8 | p[9];
		rd = p + NS_RRFIXEDSZ;
		if ((size_t)(end - rd) < rdlen) {
			free(name);
			goto bad;
		}
		p = rd + rdlen;
		if (ttl < an->min_ttl)
			an->min_ttl = ttl;
		if (class != ns_c_in) {
			free(name);
			continue;
		}
		rr->owner = name;
		rr->type = (int)type;
		switch (type) {
		case ns_t_a:
			if (rdlen != 4)
				goto bad_rr;
			memcpy(rr->addr, rd, 4);
			break;
		case ns_t_aaaa:
			if (rdlen != 16)
				goto bad_rr;
			memcpy(rr->addr, rd, 16);
			break;
		case ns_t_mx:
			if (rdlen < 3)
				goto bad_rr;
			rr->pref = (unsigned)rd[0] << 8 | rd[1];
			if ((rr->target = dns_expand(rd + 2, abuf, alen, &used)) == NULL)
				goto bad_rr;
			break;
		case ns_t_cname:
			if ((rr->target = dns_expand(rd, abuf, alen, &used)) == NULL)
				goto bad_rr;
			break;
		default:
			free(name);
			rr->owner = NULL;
			continue;
		}
		an->n++;
	}
	an->neg_ttl = dns_parse_neg_ttl(abuf, alen, p, nscount);
	return 0;
bad_rr:
	free(an->rr[an->n].owner);
	an->rr[an->n].owner = NULL;
bad:
	dns_answer_free(an);
	return -1;
}

/*
 * Follow the CNAME chain from name through the answer.  Returns the name
 * the chain ends at (a pointer into an, or name itself); *links counts the
 * links followed.
 */
const char *
dns_chain_end(const struct dns_answer *an, const char *name, unsigned *links)
{
	size_t i;
	bool moved;

	*links = 0;
	do {
		moved = false;
		for (i = 0; i < an->n; i++) {
			if (an->rr[i].type == ns_t_cname && strcmp(an->rr[i].owner, name) == 0) {
				name = an->rr[i].target;
				moved = true;
				(*links)++;
				break;
			}
		}
	} while (moved && *links <= DNS_CNAME_MAX);
	return name;
}

/* How long a negative answer (NXDOMAIN, NODATA) may be kept: 0 when it says nothing. */
uint32_t
dns_neg_ttl(const unsigned char *abuf, int alen)
{
	struct dns_answer an;
	uint32_t ttl;

	if (dns_parse_answer(abuf, alen, &an) == -1)
		return 0;
	ttl = an.neg_ttl < an.min_ttl ? an.neg_ttl : an.min_ttl;   /* CNAMEs on the way count */
	dns_answer_free(&an);
	return ttl;
}

int
dns_parse_txt(const unsigned char *abuf, int alen, char ***out, size_t *n)
{
	struct ares_txt_ext *txt, *t;
	struct buf rec = BUF_INIT;
	size_t nrec = 0;
	char **v;

	*out = NULL;
	*n = 0;
	if (ares_parse_txt_reply_ext(abuf, alen, &txt) != ARES_SUCCESS)
		return -1;
	for (t = txt; t != NULL; t = t->next)
		nrec += t->record_start;
	v = xcalloc(nrec + 2, sizeof(*v));
	for (t = txt; t != NULL; t = t->next) {
		if (t->record_start && t != txt) {
			v[(*n)++] = xstrdup(buf_cstr(&rec));
			buf_reset(&rec);
		}
		buf_append(&rec, (const char *)t->txt, t->length);
	}
	if (txt != NULL)
		v[(*n)++] = xstrdup(buf_cstr(&rec));
	buf_free(&rec);
	ares_free_data(txt);
	*out = v;
	return 0;
}
