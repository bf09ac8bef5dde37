/*
 * dns_resolve.c - what a lookup answers (dns.h says it in
 * full): dns_lookup() and dns_lookup_hosts() start a fetch (or join one,
 * dns_cache.c), and the answers of its c-ares requests decide the
 * result.  MX records are sorted by preference, an exchanger listed twice
 * keeps its better preference; no MX records (NODATA) makes the domain the
 * implicit exchanger; a lone "MX 0 ." is a null MX (RFC 7505, 5.1.10);
 * CNAMEs are followed inside one answer and across queries (DNS_CNAME_MAX
 * links); each exchanger is resolved to AAAA and A in parallel.  An
 * exchanger that is relayd itself (its name is our hostname, or one of its
 * addresses one of our listen addresses) drops that preference and worse
 * (RFC 5321 5.1; 5.4.6 when nothing is left).  Address literals need no
 * DNS.  Every c-ares status maps to exactly one outcome: permanent (5.1.2),
 * temporary (4.4.3), or no address of that family.
 *
 * Owns: each c-ares request (struct dns_req) until its callback, which fires
 * exactly once (ARES_EDESTRUCTION when its channel is destroyed); the
 * exchangers of a fetch while they are resolved.
 *
 * Must never: call a user callback (results go through the fetch and the
 * kick), block the loop, or treat a temporary failure as permanent for a
 * route's hosts (a configuration mistake must not bounce mail).
 */
#include "dns/dns_int.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define DNS_MAX_RECORDS      64      /* MX records read from one answer */

/* What one c-ares request asks. */
enum dns_kind {
	DNS_REQ_MX,
	DNS_REQ_AAAA,
	DNS_REQ_A,
	DNS_REQ_TXT,
};

/* One c-ares request in flight. */
struct dns_req {
	struct dns_fetch *f;
	struct dns_chan *c;
	enum dns_kind kind;
	size_t xi;              /* exchanger index for A/AAAA */
	unsigned depth;         /* CNAME links followed so far */
	char *name;             /* the name asked */
};

static void dns_ares_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen);

/* ---- small helpers ---- */

static bool
dns_name_eq(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (la > 0 && a[la - 1] == '.')
		la--;
	if (lb > 0 && b[lb - 1] == '.')
		lb--;
	return la == lb && util_strncasecmp(a, b, la) == 0;
}

static void
dns_fail(struct dns_fetch *f, int err, const char *status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Record the fetch's failure (the first one wins). */
static void
dns_fail(struct dns_fetch *f, int err, const char *status, const char *fmt, ...)
{
	va_list ap;

	if (err == RELAY_ETEMP)
		f->temp = true;
	if (f->err != 0)
		return;
	f->err = err;
	snprintf(f->status, sizeof(f->status), "%s", status);
	va_start(ap, fmt);
	vsnprintf(f->reason, sizeof(f->reason), fmt, ap);
	va_end(ap);
}

/* The result rests on something valid for ttl seconds. */
static void
dns_fetch_ttl(struct dns_fetch *f, uint32_t ttl)
{
	if (ttl < f->ttl)
		f->ttl = ttl;
}

static void
dns_set_port(struct dns_addr *a, uint16_t port)
{
	if (a->ss.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&a->ss)->sin6_port = htons(port);
	else
		((struct sockaddr_in *)&a->ss)->sin_port = htons(port);
}

/* Parse a numeric address into a; 0 or -1. */
static int
dns_parse_numeric(const char *s, uint16_t port, struct dns_addr *a)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;

	memset(a, 0, sizeof(*a));
	if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		a->len = sizeof(*sin);
	} else if (inet_pton(AF_INET6, s, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		a->len = sizeof(*sin6);
	} else
		return -1;
	dns_set_port(a, port);
	return 0;
}

static void
dns_xch_init(struct dns_xch *x, const char *host, unsigned pref, uint16_t port)
{
	memset(x, 0, sizeof(*x));
	x->host = xstrdup(host);
	x->pref = pref;
	x->port = port;
}

static void
dns_xch_add(struct dns_xch *x, int family, const unsigned char *p)
{
	struct dns_addr *a;
	size_t i;

	if (family == AF_INET6) {
		for (i = 0; i < x->n6; i++)
			if (memcmp(&((struct sockaddr_in6 *)&x->a6[i].ss)->sin6_addr, p, 16) == 0)
				return;
		if (x->n6 == DNS_MAX_PER_FAMILY)
			return;
		a = &x->a6[x->n6++];
		memset(a, 0, sizeof(*a));
		((struct sockaddr_in6 *)&a->ss)->sin6_family = AF_INET6;
		memcpy(&((struct sockaddr_in6 *)&a->ss)->sin6_addr, p, 16);
		a->len = sizeof(struct sockaddr_in6);
	} else {
		for (i = 0; i < x->n4; i++)
			if (memcmp(&((struct sockaddr_in *)&x->a4[i].ss)->sin_addr, p, 4) == 0)
				return;
		if (x->n4 == DNS_MAX_PER_FAMILY)
			return;
		a = &x->a4[x->n4++];
		memset(a, 0, sizeof(*a));
		((struct sockaddr_in *)&a->ss)->sin_family = AF_INET;
		memcpy(&((struct sockaddr_in *)&a->ss)->sin_addr, p, 4);
		a->len = sizeof(struct sockaddr_in);
	}
	dns_set_port(a, x->port);
}

static void
dns_xch_add_addr(struct dns_xch *x, const struct dns_addr *a)
{
	if (a->ss.ss_family == AF_INET6)
		dns_xch_add(x, AF_INET6,
		    (const unsigned char *)&((const struct sockaddr_in6 *)&a->ss)->sin6_addr);
	else
		dns_xch_add(x, AF_INET,
		    (const unsigned char *)&((const struct sockaddr_in *)&a->ss)->sin_addr);
}

/* Is the address one of our listen addresses (ports ignored)? */
static bool
dns_is_self_addr(const struct dns_resolver *r, const struct dns_addr *a)
{
	size_t i;

	for (i = 0; i < r->nself; i++) {
		const struct sockaddr_storage *s = &r->self[i];

		if (s->ss_family != a->ss.ss_family)
			continue;
		if (s->ss_family == AF_INET && memcmp(&((const struct sockaddr_in *)s)->sin_addr,
		    &((const struct sockaddr_in *)&a->ss)->sin_addr, 4) == 0)
			return true;
		if (s->ss_family == AF_INET6 && memcmp(&((const struct sockaddr_in6 *)s)->sin6_addr,
		    &((const struct sockaddr_in6 *)&a->ss)->sin6_addr, 16) == 0)
			return true;
	}
	return false;
}

/* ---- the result ---- */

static void
dns_result_fail(struct dns_result *res, int err, const char *status, const char *reason)
{
	res->err = err;
	snprintf(res->status, sizeof(res->status), "%s", status);
	snprintf(res->reason, sizeof(res->reason), "%s", reason);
}

struct dns_result *
dns_build_result(struct dns_fetch *f)
{
	struct dns_resolver *r = f->r;
	struct dns_result *res = xcalloc(1, sizeof(*res));
	unsigned cut = 0;
	bool cutting = f->self_found, temp = false;
	size_t i, j, kept = 0;
	char msg[256];

	res->implicit = f->implicit;
	if (f->err != 0) {
		dns_result_fail(res, f->err, f->status, f->reason);
		return res;
	}
	if (f->txtq) {
		res->txt = f->txt;
		res->ntxt = f->ntxt;
		f->txt = NULL;
		f->ntxt = 0;
		return res;
	}
	if (cutting)
		cut = f->self_pref;

	/* an exchanger with one of our addresses is us, too */
	if (!f->routes) {
		for (i = 0; i < f->nx; i++) {
			struct dns_xch *x = &f->x[i];

			for (j = 0; j < x->n6 && !x->self; j++)
				x->self = dns_is_self_addr(r, &x->a6[j]);
			for (j = 0; j < x->n4 && !x->self; j++)
				x->self = dns_is_self_addr(r, &x->a4[j]);
			if (x->self && (!cutting || x->pref < cut)) {
				cutting = true;
				cut = x->pref;
			}
		}
	}
	for (i = 0; i < f->nx; i++)
		if (!cutting || f->x[i].pref < cut)
			kept++;
	if (kept == 0) {
		snprintf(msg, sizeof(msg), "mail for %s loops back to myself", f->domain);
		dns_result_fail(res, RELAY_EINVAL, "5.4.6", msg);
		return res;
	}

	res->targets = xcalloc(f->nx, sizeof(*res->targets));
	for (i = 0; i < f->nx; i++) {
		struct dns_xch *x = &f->x[i];
		struct dns_target *t;

		if (cutting && x->pref >= cut)
			continue;
		if (x->n6 + x->n4 == 0) {
			temp = temp || x->temp;
			continue;
		}
		t = &res->targets[res->ntargets++];
		t->host = xstrdup(x->host);
		t->pref = x->pref;
		t->addrs = xcalloc(x->n6 + x->n4, sizeof(*t->addrs));
		for (j = 0; j < x->n6; j++)
			t->addrs[t->naddrs++] = x->a6[j];
		for (j = 0; j < x->n4; j++)
			t->addrs[t->naddrs++] = x->a4[j];
	}
	if (res->ntargets > 0)
		return res;
	free(res->targets);
	res->targets = NULL;
	if (f->routes) {
		snprintf(msg, sizeof(msg), "no host of the route (%s) could be resolved%s", f->domain,
		    temp ? " (temporary DNS failure)" : "");
		dns_result_fail(res, RELAY_ETEMP, "4.4.3", msg);
	} else if (temp) {
		snprintf(msg, sizeof(msg), "no exchanger for %s could be resolved "
		    "(temporary DNS failure)", f->domain);
		dns_result_fail(res, RELAY_ETEMP, "4.4.3", msg);
	} else {
		snprintf(msg, sizeof(msg), "no usable exchanger for %s", f->domain);
		dns_result_fail(res, RELAY_EINVAL, "5.1.2", msg);
	}
	return res;
}

/* ---- requests and their answers ---- */

static void
dns_send(struct dns_fetch *f, enum dns_kind kind, size_t xi, unsigned depth, const char *name)
{
	struct dns_req *req;
	int type;

	req = xcalloc(1, sizeof(*req));
	req->f = f;
	req->c = f->c;
	req->kind = kind;
	req->xi = xi;
	req->depth = depth;
	req->name = xstrdup(name);
	f->inflight++;
	f->c->inflight++;
	switch (kind) {
	case DNS_REQ_MX:
		type = ns_t_mx;
		break;
	case DNS_REQ_AAAA:
		type = ns_t_aaaa;
		break;
	case DNS_REQ_TXT:
		type = ns_t_txt;
		break;
	default:
		type = ns_t_a;
		break;
	}
	/* may call back at once (bad name, no memory): the hold keeps f alive */
	ares_query(f->c->ch, req->name, ns_c_in, type, dns_ares_cb, req);
	dns_chan_touch(f->c);
}

/* Temporary DNS failures (as opposed to "this does not exist"). */
static bool
dns_status_temp(int status)
{
	switch (status) {
	case ARES_SUCCESS:
	case ARES_ENODATA:
	case ARES_ENOTFOUND:
	case ARES_EBADNAME:
		return false;
	default:
		return true;
	}
}

static const char *
dns_status_text(int status)
{
	switch (status) {
	case ARES_ESERVFAIL:
		return "SERVFAIL";
	case ARES_ETIMEOUT:
		return "timed out";
	case ARES_EREFUSED:
		return "REFUSED";
	case ARES_ECONNREFUSED:
		/* c-ares 1.18 ends a query whose every try met SERVFAIL or
		 * REFUSED (it fails over to the next server on those) with this
		 * status too, the same as for servers that cannot be reached */
		return "no DNS server answered (SERVFAIL, REFUSED or unreachable)";
	case ARES_ENOTFOUND:
		return "NXDOMAIN";
	default:
		return ares_strerror(status);
	}
}

/* Start AAAA and A lookups for every exchanger. */
static void
dns_resolve_all(struct dns_fetch *f)
{
	size_t i;

	for (i = 0; i < f->nx; i++) {
		dns_send(f, DNS_REQ_AAAA, i, 0, f->x[i].host);
		dns_send(f, DNS_REQ_A, i, 0, f->x[i].host);
	}
}

/* No MX records: the domain itself is the exchanger (RFC 5321 5.1). */
static void
dns_implicit(struct dns_fetch *f)
{
	struct dns_resolver *r = f->r;

	f->implicit = true;
	f->x = xcalloc(1, sizeof(*f->x));
	dns_xch_init(&f->x[0], f->domain, 0, f->port);
	f->nx = 1;
	if (r->hostname != NULL && dns_name_eq(f->domain, r->hostname)) {
		dns_fail(f, RELAY_EINVAL, "5.4.6", "mail for %s loops back to myself", f->domain);
		return;
	}
	dns_resolve_all(f);
}

struct dns_pair {
	unsigned pref;
	const char *host;
};

/* The MX answer: order the exchangers, drop ourselves, resolve the rest. */
static void
dns_got_mx(struct dns_fetch *f, struct dns_req *req, const struct dns_answer *an)
{
	struct dns_resolver *r = f->r;
	struct dns_pair pairs[DNS_MAX_RECORDS], tmp;
	const char *end;
	size_t n = 0, i, j, nmx = 0, nnull = 0;
	unsigned links;

	end = dns_chain_end(an, req->name, &links);
	for (i = 0; i < an->n; i++) {
		if (an->rr[i].type != ns_t_mx || strcmp(an->rr[i].owner, end) != 0)
			continue;
		nmx++;
		if (an->rr[i].target[0] == '\0') {
			nnull++;
			continue;
		}
		if (n < DNS_MAX_RECORDS) {
			pairs[n].pref = an->rr[i].pref;
			pairs[n].host = an->rr[i].target;
			n++;
		}
	}
	if (nmx == 0) {
		/* a CNAME the server did not chase: ask for its target */
		if (links > 0 && req->depth + links <= DNS_CNAME_MAX) {
			dns_send(f, DNS_REQ_MX, 0, req->depth + links, end);
			return;
		}
		if (links > 0) {
			dns_fail(f, RELAY_ETEMP, "4.4.3", "DNS lookup of MX for %s: CNAME chain too long",
			    f->domain);
			return;
		}
		dns_implicit(f);
		return;
	}
	if (nmx == 1 && nnull == 1) {
		dns_fail(f, RELAY_EINVAL, "5.1.10",
		    "domain %s does not accept mail (null MX)", f->domain);
		return;
	}
	if (n == 0) {
		dns_fail(f, RELAY_EINVAL, "5.1.2", "no usable exchanger for %s", f->domain);
		return;
	}

	/* stable sort by preference; equal ones are shuffled per caller (dns_shuffle) */
	for (i = 1; i < n; i++) {
		tmp = pairs[i];
		for (j = i; j > 0 && pairs[j - 1].pref > tmp.pref; j--)
			pairs[j] = pairs[j - 1];
		pairs[j] = tmp;
	}

	/* RFC 5321 5.1: we are an exchanger: drop it and everything not better */
	for (i = 0; i < n; i++) {
		if (r->hostname != NULL && dns_name_eq(pairs[i].host, r->hostname)) {
			f->self_found = true;
			f->self_pref = pairs[i].pref;
			break;
		}
	}

	f->x = xcalloc(n, sizeof(*f->x));
	for (i = 0; i < n && f->nx < DNS_MAX_TARGETS; i++) {
		if (f->self_found && pairs[i].pref >= f->self_pref)
			break;
		for (j = 0; j < f->nx; j++)
			if (strcmp(f->x[j].host, pairs[i].host) == 0)
				break;
		if (j < f->nx)
			continue;       /* listed twice: the better preference stays */
		dns_xch_init(&f->x[f->nx++], pairs[i].host, pairs[i].pref, f->port);
	}
	if (f->nx == 0) {
		dns_fail(f, RELAY_EINVAL, "5.4.6", "mail for %s loops back to myself", f->domain);
		return;
	}
	dns_resolve_all(f);
}

static void
dns_on_mx(struct dns_fetch *f, struct dns_req *req, int status, unsigned char *abuf, int alen)
{
	struct dns_answer an;

	switch (status) {
	case ARES_SUCCESS:
		if (dns_parse_answer(abuf, alen, &an) == -1) {
			dns_fail(f, RELAY_ETEMP, "4.4.3", "DNS lookup of MX for %s: malformed answer",
			    f->domain);
			return;
		}
		dns_fetch_ttl(f, an.min_ttl);
		dns_got_mx(f, req, &an);
		dns_answer_free(&an);
		return;
	case ARES_ENODATA:
		dns_fetch_ttl(f, dns_neg_ttl(abuf, alen));
		dns_implicit(f);
		return;
	case ARES_ENOTFOUND:
		dns_fetch_ttl(f, dns_neg_ttl(abuf, alen));
		dns_fail(f, RELAY_EINVAL, "5.1.2", "domain %s does not exist (NXDOMAIN)", f->domain);
		return;
	case ARES_EBADNAME:
		dns_fail(f, RELAY_EINVAL, "5.1.2", "bad domain name %s", f->domain);
		return;
	default:
		dns_fail(f, RELAY_ETEMP, "4.4.3", "DNS lookup of MX for %s failed: %s", f->domain,
		    dns_status_text(status));
		return;
	}
}

static void
dns_on_addr(struct dns_fetch *f, struct dns_req *req, int status, unsigned char *abuf, int alen)
{
	struct dns_xch *x = &f->x[req->xi];
	struct dns_answer an;
	const char *end;
	unsigned links;
	int type = req->kind == DNS_REQ_AAAA ? ns_t_aaaa : ns_t_a;
	size_t i, found = 0;

	if (status == ARES_ENODATA || status == ARES_ENOTFOUND) {
		dns_fetch_ttl(f, dns_neg_ttl(abuf, alen));
		return;         /* no address of this family */
	}
	if (status != ARES_SUCCESS && !dns_status_temp(status))
		return;
	if (status != ARES_SUCCESS || dns_parse_answer(abuf, alen, &an) == -1) {
		x->temp = true;
		f->temp = true;
		return;
	}
	dns_fetch_ttl(f, an.min_ttl);
	end = dns_chain_end(&an, req->name, &links);
	for (i = 0; i < an.n; i++) {
		if (an.rr[i].type != type || strcmp(an.rr[i].owner, end) != 0)
			continue;
		dns_xch_add(x, type == ns_t_aaaa ? AF_INET6 : AF_INET, an.rr[i].addr);
		found++;
	}
	if (found == 0 && links > 0) {
		/* a CNAME chain the server did not chase (or a long one): go on */
		if (req->depth + links <= DNS_CNAME_MAX)
			dns_send(f, req->kind, req->xi, req->depth + links, end);
		else
			x->temp = true;
	}
	dns_answer_free(&an);
}

/* TXT records: each record's strings joined into one. */
static void
dns_on_txt(struct dns_fetch *f, int status, unsigned char *abuf, int alen)
{
	switch (status) {
	case ARES_SUCCESS:
		if (dns_parse_txt(abuf, alen, &f->txt, &f->ntxt) == -1) {
			dns_fail(f, RELAY_ETEMP, "4.4.3", "DNS lookup of TXT for %s: malformed answer",
			    f->domain);
			return;
		}
		return;
	case ARES_ENODATA:
		return;
	case ARES_ENOTFOUND:
		dns_fail(f, RELAY_EINVAL, "5.1.2", "%s does not exist (NXDOMAIN)", f->domain);
		return;
	case ARES_EBADNAME:
		dns_fail(f, RELAY_EINVAL, "5.1.2", "bad domain name %s", f->domain);
		return;
	default:
		dns_fail(f, RELAY_ETEMP, "4.4.3", "DNS lookup of TXT for %s failed: %s", f->domain,
		    dns_status_text(status));
		return;
	}
}

/* Every c-ares request ends here, exactly once. */
static void
dns_ares_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_req *req = arg;
	struct dns_fetch *f = req->f;
	struct dns_chan *c = req->c;

	(void)timeouts;
	if (f->magic != DNS_MAGIC_FETCH || c->magic != DNS_MAGIC_CHAN)
		fatalx("%s: bad fetch or channel", __func__);
	if (!f->abandoned && status != ARES_EDESTRUCTION && status != ARES_ECANCELLED &&
	    f->err == 0) {
		if (req->kind == DNS_REQ_MX)
			dns_on_mx(f, req, status, abuf, alen);
		else if (req->kind == DNS_REQ_TXT)
			dns_on_txt(f, status, abuf, alen);
		else
			dns_on_addr(f, req, status, abuf, alen);
	}
	free(req->name);
	free(req);
	c->inflight--;
	if (c->retired && c->inflight == 0)
		dns_kick(c->r);
	dns_fetch_release(f);
}

/* ---- lookups ---- */

/* "[192.0.2.1]" or "[IPv6:2001:db8::1]": 1 literal parsed, 0 not a literal, -1 bad. */
static int
dns_literal(const char *domain, uint16_t port, struct dns_addr *a, char *text, size_t textlen)
{
	size_t n = strlen(domain);
	const char *s = domain + 1;

	if (n < 2 || domain[0] != '[')
		return 0;
	if (domain[n - 1] != ']' || n - 2 >= textlen)
		return -1;
	if (n > 7 && util_strncasecmp(s, "IPv6:", 5) == 0) {
		memcpy(text, s + 5, n - 7);
		text[n - 7] = '\0';
		if (dns_parse_numeric(text, port, a) == -1 || a->ss.ss_family != AF_INET6)
			return -1;
		return 1;
	}
	memcpy(text, s, n - 2);
	text[n - 2] = '\0';
	if (dns_parse_numeric(text, port, a) == -1 || a->ss.ss_family != AF_INET)
		return -1;
	return 1;
}

struct dns_query *
dns_lookup(struct dns_resolver *r, const char *domain, uint16_t port, dns_cb *cb, void *arg)
{
	struct dns_query *q = dns_query_new(r, cb, arg);
	struct dns_fetch *f;
	struct dns_addr a;
	struct buf key = BUF_INIT;
	char text[INET6_ADDRSTRLEN + 8], *name;
	int lit = 0;

	name = dns_norm(domain);
	if (name != NULL && name[0] != '\0' &&
	    (lit = dns_literal(domain, port, &a, text, sizeof(text))) == 0) {
		buf_printf(&key, "M%u %s", (unsigned)port, name);
		if (dns_share(r, q, buf_cstr(&key))) {
			free(name);
			buf_free(&key);
			return q;
		}
		f = dns_fetch_new(r, buf_steal(&key));
		buf_free(&key);
		f->domain = name;
		f->port = port;
		dns_fetch_join(f, q);
		dns_send(f, DNS_REQ_MX, 0, 0, f->domain);
		dns_fetch_release(f);
		return q;
	}

	/* No DNS: a bad name or an address literal, of its own. */
	f = dns_fetch_new(r, NULL);
	f->port = port;
	dns_fetch_join(f, q);
	if (name == NULL || name[0] == '\0') {
		free(name);
		f->domain = xstrdup("(bad)");
		dns_fail(f, RELAY_EINVAL, "5.1.2", "bad domain name");
		dns_fetch_release(f);
		return q;
	}
	f->domain = name;
	if (lit == -1)
		dns_fail(f, RELAY_EINVAL, "5.1.2", "bad address literal %s", f->domain);
	else {
		f->implicit = true;
		f->x = xcalloc(1, sizeof(*f->x));
		dns_xch_init(&f->x[0], text, 0, port);
		dns_xch_add_addr(&f->x[0], &a);
		f->nx = 1;
	}
	dns_fetch_release(f);
	return q;
}

struct dns_query *
dns_lookup_txt(struct dns_resolver *r, const char *name, dns_cb *cb, void *arg)
{
	struct dns_query *q = dns_query_new(r, cb, arg);
	struct dns_fetch *f = dns_fetch_new(r, NULL);
	char *norm = dns_norm(name);

	f->txtq = true;
	dns_fetch_join(f, q);
	if (norm == NULL || norm[0] == '\0') {
		free(norm);
		f->domain = xstrdup("(bad)");
		dns_fail(f, RELAY_EINVAL, "5.1.2", "bad domain name");
	} else {
		f->domain = norm;
		dns_send(f, DNS_REQ_TXT, 0, 0, f->domain);
	}
	dns_fetch_release(f);
	return q;
}

struct dns_query *
dns_lookup_hosts(struct dns_resolver *r, const struct conf_hostport *hosts, size_t n,
    dns_cb *cb, void *arg)
{
	struct dns_query *q = dns_query_new(r, cb, arg);
	struct dns_fetch *f;
	struct dns_addr a;
	struct buf desc = BUF_INIT, key = BUF_INIT;
	size_t i;

	if (n > DNS_MAX_TARGETS)
		n = DNS_MAX_TARGETS;
	if (n > 0) {
		buf_putc(&key, 'H');
		for (i = 0; i < n; i++)
			buf_printf(&key, " %s:%u", hosts[i].host, (unsigned)hosts[i].port);
		if (dns_share(r, q, buf_cstr(&key))) {
			buf_free(&key);
			return q;
		}
	}
	f = dns_fetch_new(r, n > 0 ? buf_steal(&key) : NULL);
	buf_free(&key);
	f->routes = true;
	dns_fetch_join(f, q);
	f->x = xcalloc(n ? n : 1, sizeof(*f->x));
	f->nx = n;
	for (i = 0; i < n; i++) {
		buf_printf(&desc, "%s%s", i ? "," : "", hosts[i].host);
		dns_xch_init(&f->x[i], hosts[i].host, (unsigned)i, hosts[i].port);
	}
	f->domain = desc.len ? buf_steal(&desc) : xstrdup("(no hosts)");
	buf_free(&desc);
	if (n == 0)
		dns_fail(f, RELAY_ETEMP, "4.4.3", "route has no hosts");
	for (i = 0; i < n && f->err == 0; i++) {
		if (dns_parse_numeric(f->x[i].host, f->x[i].port, &a) == 0)
			dns_xch_add_addr(&f->x[i], &a);
		else {
			dns_send(f, DNS_REQ_AAAA, i, 0, f->x[i].host);
			dns_send(f, DNS_REQ_A, i, 0, f->x[i].host);
		}
	}
	dns_fetch_release(f);
	return q;
}
