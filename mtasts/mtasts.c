/*
 * mtasts.c - MTA-STS policy discovery, fetch and cache (mtasts.h): per
 * domain, a TXT check, then the HTTPS fetch when the id is new, with the
 * lookups of that domain waiting meanwhile; the cache in memory and in
 * queue_dir/mta-sts.
 *
 * Owns: every struct mtasts_dom (a domain's cached policy, its check in
 * flight and the queries waiting for it), the cache file (read once in
 * mtasts_new, before the loop runs; written on the thread pool, one write
 * at a time).
 * Must never: block the loop, decide what a policy means for one MX
 * (tlspolicy/ does), or fail a delivery: a failed discovery is "no policy"
 * or "the cached policy", never an error for the router.
 */
#include "mtasts/mtasts.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "common/htab.h"
#include "common/log.h"
#include "common/util.h"
#include "dns/dns.h"
#include "http/http.h"

#define MTASTS_MAGIC        0x4d535453u     /* "MSTS" */
#define MTASTS_MAGIC_Q      0x4d535451u     /* "MSTQ" */
#define MTASTS_FILE         "mta-sts"
#define MTASTS_FILE_TMP     "mta-sts.tmp"
#define MTASTS_MAX_FILE     (64 * 1024 * 1024)

struct mtasts_query {
	uint32_t magic;
	struct mtasts_dom *d;
	TAILQ_ENTRY(mtasts_query) entry;
	mtasts_cb *cb;
	void *arg;
};
TAILQ_HEAD(mtasts_queryq, mtasts_query);

struct mtasts_dom {
	char *domain;
	struct htab_node node;
	struct mtasts *m;
	bool have;                      /* policy holds a policy (maybe expired) */
	struct mtasts_policy policy;
	uint64_t checked_ms;            /* last check ended (wall clock), 0 = never */
	const char *failure;            /* the last check's failure (RFC 8460 type) or NULL */
	char reason[256];
	bool fresh;                     /* the last check fetched policy (use it even at max_age 0) */

	struct dns_query *dq;           /* the TXT lookup in flight */
	struct http_req *hq;            /* the policy fetch in flight */
	char fetch_id[MTASTS_ID_MAX + 1];
	struct mtasts_queryq waiters;
};

struct mtasts {
	uint32_t magic;
	uv_loop_t *loop;
	struct dns_resolver *dns;
	struct http_client *http;
	struct htab doms;               /* struct mtasts_dom by domain */
	unsigned timeout_ms;
	char *ca_file;                  /* or NULL: the system store */
	char *path, *tmp_path;

	uv_work_t work;                 /* the cache write in flight */
	bool writing, dirty, closing;
	char *wtext;
	int werr;
	void (*close_done)(void *);
	void *close_arg;

	uint64_t (*now_fn)(void *);
	void *now_arg;
};

static uint64_t
mtasts_now(const struct mtasts *m)
{
	return m->now_fn != NULL ? m->now_fn(m->now_arg) : util_now_ms();
}

void
mtasts_set_clock(struct mtasts *m, uint64_t (*now)(void *arg), void *arg)
{
	m->now_fn = now;
	m->now_arg = arg;
}

/* ------------------------------------------------------------------ */
/* Domains. */

static struct mtasts_dom *
mtasts_dom_find(const struct mtasts *m, const char *domain)
{
	struct htab_node *n = htab_find(&m->doms, domain);

	return n != NULL ? HTAB_ENTRY(n, struct mtasts_dom, node) : NULL;
}

static struct mtasts_dom *
mtasts_dom_get(struct mtasts *m, const char *domain)
{
	struct mtasts_dom *d = mtasts_dom_find(m, domain);

	if (d != NULL)
		return d;
	d = xcalloc(1, sizeof(*d));
	d->domain = xstrdup(domain);
	d->m = m;
	TAILQ_INIT(&d->waiters);
	htab_insert(&m->doms, &d->node, d->domain);
	return d;
}

static void
mtasts_dom_free(struct mtasts_dom *d)
{
	mtasts_policy_release(&d->policy);
	free(d->domain);
	free(d);
}

bool
mtasts_held(const struct mtasts *m, const char *domain, struct mtasts_held *out)
{
	const struct mtasts_dom *d;
	char name[256];
	size_t n = strlen(domain);

	memset(out, 0, sizeof(*out));
	out->reason = "";
	if (n > 1 && domain[n - 1] == '.')
		n--;
	if (n >= sizeof(name))
		return false;
	memcpy(name, domain, n);
	name[n] = '\0';
	d = mtasts_dom_find(m, name);
	if (d == NULL || (!d->have && d->checked_ms == 0))
		return false;
	out->policy = d->have ? &d->policy : NULL;
	out->checked_ms = d->checked_ms;
	out->failure = d->failure;
	out->reason = d->reason;
	return true;
}

/* What d's state answers at now. */
static void
mtasts_dom_answer(const struct mtasts_dom *d, uint64_t now, struct mtasts_answer *a)
{
	memset(a, 0, sizeof(*a));
	if (d->have && (d->fresh || now < d->policy.expires_ms)) {
		a->policy = &d->policy;
		a->cached = !d->fresh;
	}
	a->failure = d->failure;
	snprintf(a->reason, sizeof(a->reason), "%s", d->reason);
}

/* ------------------------------------------------------------------ */
/* The cache file. */

static void
mtasts_serialize(const struct mtasts *m, uint64_t now, struct buf *b)
{
	struct htab_iter it;
	struct htab_node *n;
	size_t i;

	buf_puts(b, "# relayd MTA-STS policy cache (RFC 8461); rewritten by relayd\n"
	    "# domain id fetched_ms expires_ms mode max_age mx...\n");
	for (n = htab_first(&m->doms, &it); n != NULL; n = htab_next(&it)) {
		const struct mtasts_dom *d = HTAB_ENTRY(n, struct mtasts_dom, node);
		const struct mtasts_policy *p = &d->policy;

		if (!d->have || p->expires_ms <= now)
			continue;
		buf_printf(b, "%s %s %" PRIu64 " %" PRIu64 " %s %" PRIu32, d->domain, p->id,
		    p->fetched_ms, p->expires_ms, mtasts_mode_name(p->mode), p->max_age);
		for (i = 0; i < p->nmx; i++)
			buf_printf(b, " %s", p->mx[i]);
		buf_putc(b, '\n');
	}
}

static void
mtasts_write_work(uv_work_t *w)
{
	struct mtasts *m = w->data;

	m->werr = 0;
	if (util_write_file_atomic(m->path, m->tmp_path, m->wtext, strlen(m->wtext)) != 0)
		m->werr = errno;
}

static void mtasts_write_start(struct mtasts *m);
static void mtasts_destroy(struct mtasts *m);

static void
mtasts_write_done(uv_work_t *w, int status)
{
	struct mtasts *m = w->data;

	m->writing = false;
	free(m->wtext);
	m->wtext = NULL;
	if (status != 0 || m->werr != 0)
		log_event(LOG_ERR, "mtasts_cache_error", "path", m->path, "op", "write",
		    "error", status != 0 ? uv_strerror(status) : strerror(m->werr), NULL);
	/* Changes made while that write ran (a policy fetched just before the
	 * stop) get their own write, closing or not. */
	if (m->dirty && (!m->closing || (status == 0 && m->werr == 0))) {
		mtasts_write_start(m);
		if (m->writing)
			return;
	}
	if (m->closing)
		mtasts_destroy(m);
}

static void
mtasts_write_start(struct mtasts *m)
{
	struct buf b = BUF_INIT;

	if (m->writing) {
		m->dirty = true;
		return;
	}
	mtasts_serialize(m, mtasts_now(m), &b);
	m->wtext = buf_steal(&b);
	m->dirty = false;
	m->work.data = m;
	if (uv_queue_work(m->loop, &m->work, mtasts_write_work, mtasts_write_done) != 0) {
		log_event(LOG_ERR, "mtasts_cache_error", "path", m->path, "op", "write",
		    "error", "queue_work", NULL);
		free(m->wtext);
		m->wtext = NULL;
		return;
	}
	m->writing = true;
}

/* One cache line into a domain; 0 or -1 (malformed). */
static int
mtasts_load_line(struct mtasts *m, char *line)
{
	char *tok[4 + 2 + MTASTS_MAX_MX], *save = NULL, *t, *end;
	struct mtasts_policy p;
	struct mtasts_dom *d;
	size_t n = 0, i;

	for (t = strtok_r(line, " \t", &save); t != NULL; t = strtok_r(NULL, " \t", &save)) {
		if (n == RELAY_ARRAY_LEN(tok))
			return -1;
		tok[n++] = t;
	}
	if (n < 6 || strlen(tok[1]) > MTASTS_ID_MAX || strlen(tok[0]) > 253)
		return -1;
	memset(&p, 0, sizeof(p));
	snprintf(p.id, sizeof(p.id), "%s", tok[1]);
	errno = 0;
	p.fetched_ms = strtoull(tok[2], &end, 10);
	if (*end != '\0' || errno != 0)
		return -1;
	p.expires_ms = strtoull(tok[3], &end, 10);
	if (*end != '\0' || errno != 0)
		return -1;
	if (strcmp(tok[4], "enforce") == 0)
		p.mode = MTASTS_MODE_ENFORCE;
	else if (strcmp(tok[4], "testing") == 0)
		p.mode = MTASTS_MODE_TESTING;
	else if (strcmp(tok[4], "none") == 0)
		p.mode = MTASTS_MODE_NONE;
	else
		return -1;
	p.max_age = (uint32_t)strtoul(tok[5], &end, 10);
	if (*end != '\0' || p.max_age > MTASTS_MAX_AGE)
		return -1;
	if (n == 6 && p.mode != MTASTS_MODE_NONE)
		return -1;
	for (i = 0; tok[0][i] != '\0'; i++)
		tok[0][i] = (char)tolower((unsigned char)tok[0][i]);
	d = mtasts_dom_get(m, tok[0]);
	mtasts_policy_release(&d->policy);
	p.nmx = n - 6;
	p.mx = p.nmx ? xcalloc(p.nmx, sizeof(*p.mx)) : NULL;
	for (i = 0; i < p.nmx; i++)
		p.mx[i] = xstrdup(tok[6 + i]);
	d->policy = p;
	d->have = true;
	return 0;
}

static void
mtasts_load(struct mtasts *m)
{
	char *text, *line, *next;
	size_t len;
	unsigned lineno = 0, loaded = 0;

	if (util_read_file(m->path, MTASTS_MAX_FILE, &text, &len) != 0) {
		if (errno != ENOENT)
			log_event(LOG_ERR, "mtasts_cache_error", "path", m->path, "op", "read",
			    "error", errno == EFBIG ? "too large" : strerror(errno), NULL);
		return;
	}
	for (line = text; line != NULL && *line != '\0'; line = next) {
		lineno++;
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		if (*line == '#' || *line == '\0')
			continue;
		if (mtasts_load_line(m, line) != 0) {
			struct log_line l;

			log_begin(&l, LOG_ERR, "mtasts_cache_error");
			log_kv(&l, "path", m->path);
			log_kv(&l, "op", "read");
			log_kvu(&l, "line", lineno);
			log_kv(&l, "error", "malformed line skipped");
			log_end(&l);
			continue;
		}
		loaded++;
	}
	free(text);
	if (loaded > 0) {
		struct log_line l;

		log_begin(&l, LOG_INFO, "mtasts_cache_loaded");
		log_kv(&l, "path", m->path);
		log_kvu(&l, "policies", loaded);
		log_end(&l);
	}
}

/* ------------------------------------------------------------------ */
/* Checking a domain: TXT, then the policy. */

/* The check of d is over: answer every waiting query. */
static void
mtasts_dom_done(struct mtasts_dom *d)
{
	struct mtasts *m = d->m;
	struct mtasts_query *q;
	struct mtasts_answer a;
	uint64_t now = mtasts_now(m);

	d->checked_ms = now;
	mtasts_dom_answer(d, now, &a);
	while ((q = TAILQ_FIRST(&d->waiters)) != NULL) {
		TAILQ_REMOVE(&d->waiters, q, entry);
		q->magic = 0;
		q->cb(q->arg, &a);
		free(q);
	}
	d->fresh = false;
}

/* The check failed (failure: RFC 8460 type, or NULL for "no policy published"). */
static void
mtasts_dom_fail(struct mtasts_dom *d, const char *failure, const char *why)
{
	struct mtasts *m = d->m;
	bool kept = d->have && mtasts_now(m) < d->policy.expires_ms;

	if (failure == NULL && d->have && !kept) {
		/* no policy published any more, and the cached one has expired */
		mtasts_policy_release(&d->policy);
		d->have = false;
		mtasts_write_start(m);
	}
	d->failure = failure;
	snprintf(d->reason, sizeof(d->reason), "%s", why != NULL ? why : "");
	if (failure != NULL)
		log_event(LOG_NOTICE, "mtasts_fetch_failed", "domain", d->domain,
		    "result", failure, "error", why, "kept", kept ? "cached" : "none", NULL);
	mtasts_dom_done(d);
}

static void
mtasts_log_policy(const struct mtasts_dom *d, const char *ip)
{
	const struct mtasts_policy *p = &d->policy;
	struct buf mx = BUF_INIT;
	struct log_line l;
	char t[32];
	size_t i;

	for (i = 0; i < p->nmx; i++)
		buf_printf(&mx, "%s%s", i ? "," : "", p->mx[i]);
	log_begin(&l, LOG_INFO, "mtasts_policy_fetched");
	log_kv(&l, "domain", d->domain);
	log_kv(&l, "id", p->id);
	log_kv(&l, "mode", mtasts_mode_name(p->mode));
	log_kv(&l, "mx", buf_cstr(&mx));
	log_kvu(&l, "max_age", p->max_age);
	util_rfc3339(p->expires_ms, t, sizeof(t));
	log_kv(&l, "expires", t);
	log_kv(&l, "ip", ip[0] != '\0' ? ip : NULL);
	log_end(&l);
	buf_free(&mx);
}

/* Whether a Content-Type names text/plain (parameters such as charset aside). */
static bool
mtasts_text_plain(const char *ct)
{
	size_t n = strcspn(ct, ";");

	while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
		n--;
	return n == 10 && util_strncasecmp(ct, "text/plain", 10) == 0;
}

static void
mtasts_on_policy(void *arg, struct http_response *res)
{
	struct mtasts_dom *d = arg;
	struct mtasts *m = d->m;
	struct mtasts_policy p;
	struct buf err = BUF_INIT, why = BUF_INIT;

	d->hq = NULL;
	if (res->err != HTTP_OK) {
		buf_printf(&why, "policy fetch: %s", res->error);
		mtasts_dom_fail(d, res->err == HTTP_E_TLS ? "sts-webpki-invalid" :
		    "sts-policy-fetch-error", buf_cstr(&why));
	} else if (res->status != 200) {
		buf_printf(&why, "policy fetch: HTTP status %ld", res->status);
		mtasts_dom_fail(d, "sts-policy-fetch-error", buf_cstr(&why));
	} else if (!mtasts_text_plain(res->content_type)) {
		buf_printf(&why, "policy fetch: Content-Type '%s', not text/plain",
		    res->content_type);
		mtasts_dom_fail(d, "sts-policy-invalid", buf_cstr(&why));
	} else if (mtasts_parse_policy(buf_cstr(&res->body), res->body.len, &p, &err) != 0) {
		buf_printf(&why, "policy: %s", buf_cstr(&err));
		mtasts_dom_fail(d, "sts-policy-invalid", buf_cstr(&why));
	} else {
		snprintf(p.id, sizeof(p.id), "%s", d->fetch_id);
		p.fetched_ms = mtasts_now(m);
		p.expires_ms = p.fetched_ms + (uint64_t)p.max_age * 1000;
		mtasts_policy_release(&d->policy);
		d->policy = p;
		d->have = true;
		d->fresh = true;
		d->failure = NULL;
		d->reason[0] = '\0';
		mtasts_log_policy(d, res->ip);
		mtasts_write_start(m);
		mtasts_dom_done(d);
	}
	buf_free(&err);
	buf_free(&why);
}

static void
mtasts_fetch(struct mtasts_dom *d)
{
	struct mtasts *m = d->m;
	struct http_request rq;
	struct buf url = BUF_INIT, err = BUF_INIT, why = BUF_INIT;

	buf_printf(&url, "https://mta-sts.%s/.well-known/mta-sts.txt", d->domain);
	memset(&rq, 0, sizeof(rq));
	rq.method = HTTP_GET;
	rq.url = buf_cstr(&url);
	rq.max_size = MTASTS_MAX_POLICY;
	rq.timeout_ms = m->timeout_ms;
	rq.ca_file = m->ca_file;
	if ((d->hq = http_start(m->http, &rq, mtasts_on_policy, d, &err)) == NULL) {
		buf_printf(&why, "policy fetch: %s", buf_cstr(&err));
		mtasts_dom_fail(d, "sts-policy-fetch-error", buf_cstr(&why));
	}
	buf_free(&url);
	buf_free(&err);
	buf_free(&why);
}

static void
mtasts_on_txt(void *arg, struct dns_result *res)
{
	struct mtasts_dom *d = arg;
	struct mtasts *m = d->m;
	char id[MTASTS_ID_MAX + 1], one[MTASTS_ID_MAX + 1];
	size_t i, nsts = 0;
	bool valid = false;

	d->dq = NULL;
	if (res->err == RELAY_ETEMP) {
		struct buf why = BUF_INIT;

		buf_printf(&why, "_mta-sts TXT lookup: %s", res->reason);
		dns_result_free(res);
		mtasts_dom_fail(d, "sts-policy-fetch-error", buf_cstr(&why));
		buf_free(&why);
		return;
	}
	/* RFC 8461 3.1: records not starting "v=STSv1;" are discarded; exactly one must be left */
	for (i = 0; res->err == 0 && i < res->ntxt; i++) {
		const char *t = res->txt[i];

		if (!mtasts_txt_is_sts(t))
			continue;
		nsts++;
		valid = mtasts_parse_txt(t, one) == 0;
		if (valid)
			memcpy(id, one, sizeof(id));
	}
	dns_result_free(res);
	if (nsts != 1 || !valid) {
		/* no policy published (an unexpired cached one still holds: RFC 8461 5.1) */
		mtasts_dom_fail(d, NULL, nsts > 1 ? "more than one v=STSv1 TXT record" :
		    nsts == 1 ? "malformed v=STSv1 TXT record" : "no v=STSv1 TXT record");
		return;
	}
	if (d->have && strcmp(d->policy.id, id) == 0 && mtasts_now(m) < d->policy.expires_ms) {
		d->failure = NULL;
		d->reason[0] = '\0';
		mtasts_dom_done(d);
		return;
	}
	memcpy(d->fetch_id, id, sizeof(d->fetch_id));
	mtasts_fetch(d);
}

/* ------------------------------------------------------------------ */
/* The module. */

int
mtasts_get(struct mtasts *m, const char *domain, struct mtasts_answer *a, mtasts_cb *cb,
    void *arg, struct mtasts_query **qp)
{
	struct mtasts_dom *d = mtasts_dom_get(m, domain);
	struct mtasts_query *q;
	struct buf name = BUF_INIT;
	uint64_t now = mtasts_now(m);

	if (m->magic != MTASTS_MAGIC || m->closing)
		fatalx("%s: bad or closing module", __func__);
	*qp = NULL;
	/* the last check stands for a minute, unless it left a policy that has
	 * expired since (max_age 0 included): that one is fetched again */
	if (d->dq == NULL && d->hq == NULL && d->checked_ms != 0 && now >= d->checked_ms &&
	    now - d->checked_ms < MTASTS_RECHECK_MS &&
	    (!d->have || now < d->policy.expires_ms || d->failure != NULL)) {
		mtasts_dom_answer(d, now, a);
		return 0;
	}
	q = xcalloc(1, sizeof(*q));
	q->magic = MTASTS_MAGIC_Q;
	q->d = d;
	q->cb = cb;
	q->arg = arg;
	TAILQ_INSERT_TAIL(&d->waiters, q, entry);
	if (d->dq == NULL && d->hq == NULL) {
		buf_printf(&name, "_mta-sts.%s", domain);
		d->dq = dns_lookup_txt(m->dns, buf_cstr(&name), mtasts_on_txt, d);
		buf_free(&name);
	}
	*qp = q;
	return 1;
}

void
mtasts_cancel(struct mtasts_query *q)
{
	if (q->magic != MTASTS_MAGIC_Q)
		fatalx("%s: bad query", __func__);
	TAILQ_REMOVE(&q->d->waiters, q, entry);
	q->magic = 0;
	free(q);
	/* the check itself goes on: its answer fills the cache */
}

void
mtasts_recheck(struct mtasts *m)
{
	struct htab_iter it;
	struct htab_node *n;

	for (n = htab_first(&m->doms, &it); n != NULL; n = htab_next(&it))
		HTAB_ENTRY(n, struct mtasts_dom, node)->checked_ms = 0;
}

void
mtasts_sweep(struct mtasts *m)
{
	struct htab_iter it;
	struct htab_node *n;
	uint64_t now = mtasts_now(m);

	if (m->magic != MTASTS_MAGIC || m->closing)
		fatalx("%s: bad or closing module", __func__);
	for (n = htab_first(&m->doms, &it); n != NULL; n = htab_next(&it)) {
		struct mtasts_dom *d = HTAB_ENTRY(n, struct mtasts_dom, node);

		if (d->dq != NULL || d->hq != NULL || !TAILQ_EMPTY(&d->waiters))
			continue;
		if (d->have && now < d->policy.expires_ms)
			continue;       /* in force (and in the cache file) */
		if (d->checked_ms != 0 && now >= d->checked_ms && now - d->checked_ms < MTASTS_KEEP_MS)
			continue;
		htab_remove(&m->doms, n);
		mtasts_dom_free(d);
	}
}

void
mtasts_reload(struct mtasts *m, const struct conf *conf)
{
	free(m->ca_file);
	m->ca_file = conf->deliver.ca_file != NULL && conf->deliver.ca_file[0] != '\0' ?
	    xstrdup(conf->deliver.ca_file) : NULL;
	/* a fetch never needs more than an hour; a larger value must not wrap */
	m->timeout_ms = conf->router.mta_sts_timeout > 3600000 ? 3600000 :
	    (unsigned)conf->router.mta_sts_timeout;
}

struct mtasts *
mtasts_new(uv_loop_t *loop, const struct conf *conf, struct dns_resolver *dns,
    struct http_client *http)
{
	struct mtasts *m = xcalloc(1, sizeof(*m));
	struct buf p = BUF_INIT;

	m->magic = MTASTS_MAGIC;
	m->loop = loop;
	m->dns = dns;
	m->http = http;
	htab_init(&m->doms, &htab_ops_nocase);
	buf_printf(&p, "%s/%s", conf->queue_dir, MTASTS_FILE);
	m->path = buf_steal(&p);
	buf_printf(&p, "%s/%s", conf->queue_dir, MTASTS_FILE_TMP);
	m->tmp_path = buf_steal(&p);
	mtasts_reload(m, conf);
	mtasts_load(m);
	return m;
}

static void
mtasts_destroy(struct mtasts *m)
{
	struct htab_iter it;
	struct htab_node *n;
	void (*done)(void *) = m->close_done;
	void *arg = m->close_arg;

	for (n = htab_first(&m->doms, &it); n != NULL; n = htab_next(&it)) {
		struct mtasts_dom *d = HTAB_ENTRY(n, struct mtasts_dom, node);

		htab_remove(&m->doms, n);
		mtasts_dom_free(d);
	}
	htab_free(&m->doms);
	free(m->ca_file);
	free(m->path);
	free(m->tmp_path);
	free(m->wtext);
	m->magic = 0;
	free(m);
	if (done != NULL)
		done(arg);
}

void
mtasts_close(struct mtasts *m, void (*done)(void *arg), void *arg)
{
	struct htab_iter it;
	struct htab_node *n;
	struct mtasts_query *q;

	if (m->magic != MTASTS_MAGIC || m->closing)
		fatalx("%s: bad module or closed twice", __func__);
	m->closing = true;
	m->close_done = done;
	m->close_arg = arg;
	for (n = htab_first(&m->doms, &it); n != NULL; n = htab_next(&it)) {
		struct mtasts_dom *d = HTAB_ENTRY(n, struct mtasts_dom, node);

		while ((q = TAILQ_FIRST(&d->waiters)) != NULL)
			mtasts_cancel(q);
		if (d->dq != NULL) {
			dns_cancel(d->dq);
			d->dq = NULL;
		}
		if (d->hq != NULL) {
			http_cancel(d->hq);
			d->hq = NULL;
		}
	}
	if (!m->writing)
		mtasts_destroy(m);
	/* else mtasts_write_done destroys it */
}
