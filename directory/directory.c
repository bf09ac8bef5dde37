/*
 * directory.c - owned senders from LDAP: the request queue, the cache, the
 * outage state, and the one worker that talks to the directory through
 * libldap's synchronous calls on the libuv thread pool.
 *
 * One lookup runs at a time (d->busy); others wait in d->waiting in arrival
 * order.  The worker gets its own reference to the settings it started with
 * and is the only user of the pooled LDAP handle while it runs; the loop
 * thread touches the handle only in directory_free(), when no work is out.
 * A lookup that fails (connect, bind, search, timeout) drops the handle, so
 * the next one reconnects; a failure on an old connection is retried once on
 * a fresh one within the same deadline.  When a lookup finds the directory
 * unavailable, every request that waited behind it is answered unavailable
 * too, so no client waits for more than about one timeout.  Must never call a
 * callback from inside directory_lookup(), never cache an outage, never log a
 * bind password.
 */
#include "directory/directory.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <ldap.h>

#include "common/htab.h"
#include "common/log.h"
#include "common/util.h"

#define DIRECTORY_MAGIC          0x44495221u    /* "DIR!" */
#define DIRECTORY_CACHE_MAX      10000          /* then the cache starts afresh */
#define DIRECTORY_PASSWORD_MAX   1024
#define DIRECTORY_VALUES_MAX     1000           /* per login */

/* The settings a lookup runs with; shared by reference with the worker. */
struct directory_params {
	unsigned refs;
	char *uri;
	char *base;
	char *filter;
	char **attrs;                   /* NULL-terminated, for ldap_search_ext_s */
	char *bind_dn;
	char *bind_password;            /* NULL: anonymous */
	bool starttls;
	uint64_t timeout;
	uint64_t cache_ttl;
	unsigned gen;                   /* changes on every reload */
};

struct directory_req {
	TAILQ_ENTRY(directory_req) entry;
	char *login;
	directory_cb *cb;
	void *arg;
	bool fresh;                     /* only a lookup may answer it, not the cache */
};
TAILQ_HEAD(directory_req_list, directory_req);

struct directory_cache_entry {
	struct htab_node node;
	char *login;
	struct directory_owned *owned;
	uint64_t expires;               /* util_mono_ms() */
};

/* One lookup on the thread pool. */
struct directory_work {
	uv_work_t req;
	struct directory *d;
	struct directory_params *p;
	char *login;
	/* results, written by the worker */
	enum directory_status status;
	struct directory_owned *owned;
	struct buf error;               /* why it was unavailable */
};

struct directory {
	uint32_t magic;
	uv_loop_t *loop;
	struct directory_params *p;
	struct directory_req_list waiting;
	struct htab cache;
	bool busy;                      /* a work item is out */
	bool orphan;                    /* directory_free() came while busy */
	bool down;                      /* ldap_unavailable was logged */
	unsigned gen;
	/* the worker's, while busy */
	LDAP *ld;
	unsigned ld_gen;                /* the settings ld was opened with */
};

static void directory_next(struct directory *d);
static void directory_start(struct directory *d, const char *login);

/* ---- owned sets ---- */

static struct directory_owned *
directory_owned_new(void)
{
	struct directory_owned *o = xcalloc(1, sizeof(*o));

	atomic_init(&o->refs, 1);
	return o;
}

struct directory_owned *
directory_owned_ref(struct directory_owned *o)
{
	atomic_fetch_add(&o->refs, 1);
	return o;
}

void
directory_owned_unref(struct directory_owned *o)
{
	size_t i;

	if (o == NULL || atomic_fetch_sub(&o->refs, 1) > 1)
		return;
	for (i = 0; i < o->n; i++)
		free(o->addrs[i]);
	free(o->addrs);
	free(o);
}

bool
directory_owns(const struct directory_owned *o, const char *addr)
{
	const char *at = strrchr(addr, '@'), *vat;
	size_t i, locallen;

	if (o == NULL || at == NULL)
		return false;
	locallen = (size_t)(at - addr);
	for (i = 0; i < o->n; i++) {
		vat = strrchr(o->addrs[i], '@');
		if (util_strcasecmp(vat + 1, at + 1) != 0)
			continue;
		if (vat == o->addrs[i])
			return true;    /* "@domain" */
		if ((size_t)(vat - o->addrs[i]) == locallen &&
		    memcmp(o->addrs[i], addr, locallen) == 0)
			return true;
	}
	return false;
}

/* ---- settings ---- */

static void
directory_params_unref(struct directory_params *p)
{
	size_t i;

	if (p == NULL || --p->refs > 0)
		return;
	free(p->uri);
	free(p->base);
	free(p->filter);
	for (i = 0; p->attrs != NULL && p->attrs[i] != NULL; i++)
		free(p->attrs[i]);
	free(p->attrs);
	free(p->bind_dn);
	if (p->bind_password != NULL) {
		explicit_bzero(p->bind_password, strlen(p->bind_password));
		free(p->bind_password);
	}
	free(p);
}

static struct directory_params *
directory_params_new(const struct conf *c, unsigned gen, struct buf *err)
{
	const struct conf_senders_ldap *l = &c->submit.senders_ldap;
	struct directory_params *p = xcalloc(1, sizeof(*p));
	size_t i;

	p->refs = 1;
	p->uri = xstrdup(l->uri);
	p->base = xstrdup(l->base);
	p->filter = xstrdup(l->filter);
	p->attrs = xcalloc(l->nattributes + 1, sizeof(*p->attrs));
	for (i = 0; i < l->nattributes; i++)
		p->attrs[i] = xstrdup(l->attributes[i]);
	p->bind_dn = l->bind_dn != NULL ? xstrdup(l->bind_dn) : NULL;
	p->starttls = l->starttls;
	p->timeout = l->timeout;
	p->cache_ttl = l->cache_ttl;
	p->gen = gen;
	if (l->bind_password_file != NULL &&
	    util_read_secret(l->bind_password_file, DIRECTORY_PASSWORD_MAX, &p->bind_password, err) != 0) {
		directory_params_unref(p);
		return NULL;
	}
	return p;
}

/* ---- the cache ---- */

static void
directory_cache_clear(struct directory *d)
{
	struct htab_iter it;
	struct htab_node *n, *next;

	for (n = htab_first(&d->cache, &it); n != NULL; n = next) {
		struct directory_cache_entry *e = HTAB_ENTRY(n, struct directory_cache_entry, node);

		next = htab_next(&it);
		htab_remove(&d->cache, n);
		directory_owned_unref(e->owned);
		free(e->login);
		free(e);
	}
}

/* The live cached answer for login, or NULL (an expired one is dropped). */
static struct directory_owned *
directory_cache_get(struct directory *d, const char *login)
{
	struct htab_node *n = htab_find(&d->cache, login);
	struct directory_cache_entry *e;

	if (n == NULL)
		return NULL;
	e = HTAB_ENTRY(n, struct directory_cache_entry, node);
	if (util_mono_ms() < e->expires)
		return e->owned;
	htab_remove(&d->cache, n);
	directory_owned_unref(e->owned);
	free(e->login);
	free(e);
	return NULL;
}

static void
directory_cache_put(struct directory *d, const char *login, struct directory_owned *o)
{
	struct directory_cache_entry *e;
	struct htab_node *n;

	if (d->p->cache_ttl == 0)
		return;
	if ((n = htab_find(&d->cache, login)) != NULL) {
		e = HTAB_ENTRY(n, struct directory_cache_entry, node);
		directory_owned_unref(e->owned);
	} else {
		if (htab_count(&d->cache) >= DIRECTORY_CACHE_MAX)
			directory_cache_clear(d);
		e = xcalloc(1, sizeof(*e));
		e->login = xstrdup(login);
		htab_insert(&d->cache, &e->node, e->login);
	}
	e->owned = directory_owned_ref(o);
	e->expires = util_mono_ms() + d->p->cache_ttl;
}

/* ---- the worker (thread pool; touches only w, w->p and d->ld) ---- */

static void
directory_timeval(struct timeval *tv, uint64_t ms)
{
	if (ms == 0)
		ms = 1;
	tv->tv_sec = (time_t)(ms / 1000);
	tv->tv_usec = (suseconds_t)(ms % 1000) * 1000;
}

static uint64_t
directory_left(uint64_t deadline)
{
	uint64_t now = util_mono_ms();

	return now < deadline ? deadline - now : 0;
}

static void
directory_drop(struct directory *d)
{
	if (d->ld != NULL) {
		ldap_unbind_ext_s(d->ld, NULL, NULL);
		d->ld = NULL;
	}
}

/* Open and bind d->ld.  LDAP_SUCCESS, or an LDAP error with w->error set. */
static int
directory_connect(struct directory_work *w, uint64_t deadline)
{
	struct directory *d = w->d;
	struct directory_params *p = w->p;
	struct timeval tv;
	struct berval cred;
	int rc, v3 = LDAP_VERSION3;

	if ((rc = ldap_initialize(&d->ld, p->uri)) != LDAP_SUCCESS) {
		d->ld = NULL;
		buf_printf(&w->error, "initialize: %s", ldap_err2string(rc));
		return rc;
	}
	d->ld_gen = p->gen;
	directory_timeval(&tv, directory_left(deadline));
	ldap_set_option(d->ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
	ldap_set_option(d->ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
	ldap_set_option(d->ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
	ldap_set_option(d->ld, LDAP_OPT_TIMEOUT, &tv);
	if (p->starttls && (rc = ldap_start_tls_s(d->ld, NULL, NULL)) != LDAP_SUCCESS) {
		buf_printf(&w->error, "starttls: %s", ldap_err2string(rc));
		return rc;
	}
	directory_timeval(&tv, directory_left(deadline));
	ldap_set_option(d->ld, LDAP_OPT_TIMEOUT, &tv);
	cred.bv_val = p->bind_password;
	cred.bv_len = p->bind_password != NULL ? strlen(p->bind_password) : 0;
	rc = ldap_sasl_bind_s(d->ld, p->bind_dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
	if (rc != LDAP_SUCCESS) {
		buf_printf(&w->error, "bind: %s", ldap_err2string(rc));
		return rc;
	}
	return LDAP_SUCCESS;
}

/* Collect the attribute values of every entry in res into w->owned. */
static void
directory_collect(struct directory_work *w, LDAPMessage *res)
{
	LDAP *ld = w->d->ld;
	struct directory_owned *o = directory_owned_new();
	struct buf v = BUF_INIT;
	LDAPMessage *e;
	size_t i, j, cap = 0;

	for (e = ldap_first_entry(ld, res); e != NULL; e = ldap_next_entry(ld, e)) {
		for (i = 0; w->p->attrs[i] != NULL; i++) {
			struct berval **vals = ldap_get_values_len(ld, e, w->p->attrs[i]);

			for (j = 0; vals != NULL && vals[j] != NULL; j++) {
				if (o->n >= DIRECTORY_VALUES_MAX ||
				    directory_value(&v, vals[j]->bv_val, vals[j]->bv_len) != 0)
					continue;
				if (o->n == cap) {
					cap = cap ? cap * 2 : 8;
					o->addrs = xrealloc(o->addrs, cap * sizeof(*o->addrs));
				}
				o->addrs[o->n++] = xstrdup(buf_cstr(&v));
			}
			ldap_value_free_len(vals);
		}
	}
	buf_free(&v);
	w->owned = o;
}

static void
directory_work(uv_work_t *req)
{
	struct directory_work *w = req->data;
	struct directory *d = w->d;
	struct buf filter = BUF_INIT;
	uint64_t deadline = util_mono_ms() + w->p->timeout;
	LDAPMessage *res = NULL;
	struct timeval tv;
	bool fresh;
	int rc, attempt;

	w->status = DIRECTORY_UNAVAILABLE;
	if (directory_filter(&filter, w->p->filter, w->login) != 0) {
		buf_puts(&w->error, "bad filter");
		buf_free(&filter);
		return;
	}
	if (d->ld != NULL && d->ld_gen != w->p->gen)
		directory_drop(d);      /* settings changed (SIGHUP) */
	for (attempt = 0; attempt < 2; attempt++) {
		fresh = d->ld == NULL;
		if (fresh && directory_connect(w, deadline) != LDAP_SUCCESS) {
			directory_drop(d);
			break;
		}
		directory_timeval(&tv, directory_left(deadline));
		ldap_set_option(d->ld, LDAP_OPT_TIMEOUT, &tv);
		rc = ldap_search_ext_s(d->ld, w->p->base, LDAP_SCOPE_SUBTREE, buf_cstr(&filter),
		    w->p->attrs, 0, NULL, NULL, &tv, LDAP_NO_LIMIT, &res);
		/* a base that is not there is a broken setting: unavailable, not "owns nothing" */
		if (rc == LDAP_SUCCESS || rc == LDAP_SIZELIMIT_EXCEEDED) {
			directory_collect(w, res);
			w->status = DIRECTORY_OK;
			ldap_msgfree(res);
			break;
		}
		ldap_msgfree(res);
		res = NULL;
		buf_reset(&w->error);
		buf_printf(&w->error, "search: %s", ldap_err2string(rc));
		directory_drop(d);
		/* an old connection may have died under us: once more, fresh */
		if (fresh || directory_left(deadline) == 0)
			break;
		buf_reset(&w->error);
	}
	buf_free(&filter);
}

/* ---- the loop side ---- */

static void
directory_answer(struct directory_req *r, enum directory_status st, struct directory_owned *o)
{
	r->cb(r->arg, st, st == DIRECTORY_OK ? o : NULL);
	free(r->login);
	free(r);
}

static void
directory_state(struct directory *d, const struct directory_work *w)
{
	struct log_line l;

	if (w->status == DIRECTORY_UNAVAILABLE && !d->down) {
		d->down = true;
		log_begin(&l, LOG_WARNING, "ldap_unavailable");
		log_kv(&l, "uri", w->p->uri);
		log_kv(&l, "error", buf_cstr(&w->error));
		log_end(&l);
	} else if (w->status == DIRECTORY_OK && d->down) {
		d->down = false;
		log_begin(&l, LOG_NOTICE, "ldap_restored");
		log_kv(&l, "uri", w->p->uri);
		log_end(&l);
	}
}

static void
directory_work_done(uv_work_t *req, int status)
{
	struct directory_work *w = req->data;
	struct directory *d = w->d;
	struct directory_req *r, *next;

	if (d->magic != DIRECTORY_MAGIC)
		fatalx("%s: bad directory", __func__);
	d->busy = false;
	if (d->orphan) {
		w->status = DIRECTORY_UNAVAILABLE;
		directory_owned_unref(w->owned);
		directory_params_unref(w->p);
		buf_free(&w->error);
		free(w->login);
		free(w);
		directory_free(d);
		return;
	}
	if (status != 0)
		w->status = DIRECTORY_UNAVAILABLE;      /* cancelled */
	directory_state(d, w);
	if (w->status == DIRECTORY_OK && w->p->gen == d->gen)
		directory_cache_put(d, w->login, w->owned);
	for (r = TAILQ_FIRST(&d->waiting); r != NULL; r = next) {
		next = TAILQ_NEXT(r, entry);
		if (w->status == DIRECTORY_UNAVAILABLE || strcmp(r->login, w->login) == 0) {
			TAILQ_REMOVE(&d->waiting, r, entry);
			directory_answer(r, w->status, w->owned);
		}
	}
	directory_owned_unref(w->owned);
	directory_params_unref(w->p);
	buf_free(&w->error);
	free(w->login);
	free(w);
	directory_next(d);
}

/* Answer what the cache knows; start a lookup for the first request it does not. */
static void
directory_next(struct directory *d)
{
	struct directory_req *r, *next;
	struct directory_owned *o;

	for (r = TAILQ_FIRST(&d->waiting); r != NULL; r = next) {
		next = TAILQ_NEXT(r, entry);
		if (!r->fresh && (o = directory_cache_get(d, r->login)) != NULL) {
			TAILQ_REMOVE(&d->waiting, r, entry);
			directory_answer(r, DIRECTORY_OK, o);
		}
	}
	if (!d->busy && (r = TAILQ_FIRST(&d->waiting)) != NULL)
		directory_start(d, r->login);
}

/* A lookup of login on the thread pool. */
static void
directory_start(struct directory *d, const char *login)
{
	struct directory_work *w;

	w = xcalloc(1, sizeof(*w));
	w->req.data = w;
	w->d = d;
	d->p->refs++;
	w->p = d->p;
	w->login = xstrdup(login);
	d->busy = true;
	if (uv_queue_work(d->loop, &w->req, directory_work, directory_work_done) != 0)
		fatalx("%s: uv_queue_work failed", __func__);
}

struct directory_owned *
directory_cached(struct directory *d, const char *login)
{
	return directory_cache_get(d, login);
}

static void
directory_request(struct directory *d, const char *login, bool fresh, directory_cb *cb,
    void *arg)
{
	struct directory_req *r = xcalloc(1, sizeof(*r));

	r->login = xstrdup(login);
	r->cb = cb;
	r->arg = arg;
	r->fresh = fresh;
	TAILQ_INSERT_TAIL(&d->waiting, r, entry);
	if (!d->busy)
		directory_start(d, r->login);
}

void
directory_lookup(struct directory *d, const char *login, directory_cb *cb, void *arg)
{
	directory_request(d, login, false, cb, arg);
}

void
directory_lookup_fresh(struct directory *d, const char *login, directory_cb *cb, void *arg)
{
	directory_request(d, login, true, cb, arg);
}

void
directory_cancel_all(struct directory *d)
{
	struct directory_req *r;

	while ((r = TAILQ_FIRST(&d->waiting)) != NULL) {
		TAILQ_REMOVE(&d->waiting, r, entry);
		directory_answer(r, DIRECTORY_UNAVAILABLE, NULL);
	}
}

int
directory_new(uv_loop_t *loop, const struct conf *c, struct directory **out, struct buf *err)
{
	struct directory *d;
	struct directory_params *p;
	int debug = 0;

	if ((p = directory_params_new(c, 1, err)) == NULL)
		return -1;
	/* libldap reads /etc/ldap/ldap.conf once, on first use: do it now, before the sandbox */
	ldap_get_option(NULL, LDAP_OPT_DEBUG_LEVEL, &debug);
	d = xcalloc(1, sizeof(*d));
	d->magic = DIRECTORY_MAGIC;
	d->loop = loop;
	d->p = p;
	d->gen = 1;
	TAILQ_INIT(&d->waiting);
	htab_init(&d->cache, NULL);
	*out = d;
	return 0;
}

int
directory_reload(struct directory *d, const struct conf *c, struct buf *err)
{
	struct directory_params *p;

	if ((p = directory_params_new(c, d->gen + 1, err)) == NULL)
		return -1;
	d->gen++;
	directory_params_unref(d->p);
	d->p = p;
	directory_cache_clear(d);
	return 0;
}

void
directory_free(struct directory *d)
{
	if (d == NULL)
		return;
	if (!TAILQ_EMPTY(&d->waiting))
		fatalx("%s: lookups outstanding", __func__);
	if (d->busy) {
		d->orphan = true;       /* freed when the work item comes back */
		return;
	}
	directory_drop(d);
	directory_cache_clear(d);
	htab_free(&d->cache);
	directory_params_unref(d->p);
	d->magic = 0;
	free(d);
}
