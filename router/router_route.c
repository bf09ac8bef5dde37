/*
 * router_route.c - routing before DNS: configured routes and the run-time
 * routes set by relayctl (persisted in queue_dir/routes).  See
 * router_route.h for the precedence rules.
 *
 * Owns: the run-time route list, the routes file (written off the loop,
 * one write at a time, by the libuv thread pool) and the table of the
 * destination keys made last (references only: routes keep their keys).
 * Never: resolves names, connects, or blocks the loop after start-up (the
 * file is read synchronously once, in route_table_new, before the loop runs).
 */
#include "router/router_route.h"
#include "common/intern.h"
#include "common/json.h"
#include "common/log.h"
#include "common/util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ROUTE_FILE      "routes"
#define ROUTE_FILE_TMP  "routes.tmp"
#define ROUTE_MAX_FILE  (1024 * 1024)

/* Destination keys the table keeps for sharing: a job waiting in an outage
 * keeps its route, so a copy each was one allocation per queued message.
 * Loop thread only (no lock). */
#define ROUTE_KEYS      256             /* slots (a power of 2) */
#define ROUTE_KEY_PROBE 4               /* slots looked at per lookup */

struct route_rt {                       /* one run-time route */
	char *domain;
	struct conf_hostport *hosts;
	size_t nhosts;
};

struct route_table {
	uv_loop_t *loop;
	char *path;                     /* queue_dir/routes */
	char *tmp_path;
	struct route_rt *rt;
	size_t nrt;
	uint64_t gen;                   /* route_table_gen: changes of rt */

	uv_work_t work;                 /* the write in flight */
	bool writing;
	bool dirty;                     /* changed again while writing */
	char *wtext;                    /* what the worker writes */
	int werr;                       /* the worker's errno, 0 = ok */
	bool freed;                     /* route_table_free while writing: free at the end */
	void (*close_done)(void *);
	void *close_arg;
	struct intern_table *keys;      /* the destination keys made last (common/intern.c) */
};

/* ------------------------------------------------------------------ */
/* Parsing. */

void
route_hosts_free(struct conf_hostport *h, size_t n)
{
	conf_hostports_free(h, n);
}

static bool
route_host_ok(const char *h, size_t n)
{
	size_t i;

	if (n == 0 || n > 253)
		return false;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)h[i]) && strchr(".-_:", h[i]) == NULL)
			return false;
	return true;
}

/* One "HOST[:PORT]" of n bytes at p into hp. */
static int
route_parse_one(const char *p, size_t n, uint16_t default_port, struct conf_hostport *hp,
    struct buf *err)
{
	const char *host = p, *port = NULL;
	size_t hlen = n, plen = 0, i;
	unsigned long v = 0;

	if (n > 0 && p[0] == '[') {
		const char *close = memchr(p, ']', n);

		if (close == NULL) {
			buf_printf(err, "'%.*s': missing ']'", (int)n, p);
			return RELAY_EINVAL;
		}
		host = p + 1;
		hlen = (size_t)(close - host);
		if ((size_t)(close + 1 - p) < n) {
			if (close[1] != ':') {
				buf_printf(err, "'%.*s': expected ':' after ']'", (int)n, p);
				return RELAY_EINVAL;
			}
			port = close + 2;
			plen = n - (size_t)(port - p);
		}
	} else {
		const char *colon = memchr(p, ':', n);

		if (colon != NULL) {
			if (memchr(colon + 1, ':', n - (size_t)(colon + 1 - p)) != NULL) {
				buf_printf(err, "'%.*s': write IPv6 addresses as [addr]:port", (int)n, p);
				return RELAY_EINVAL;
			}
			hlen = (size_t)(colon - p);
			port = colon + 1;
			plen = n - hlen - 1;
		}
	}
	if (!route_host_ok(host, hlen)) {
		buf_printf(err, "'%.*s': bad host name", (int)n, p);
		return RELAY_EINVAL;
	}
	if (port != NULL) {
		if (plen == 0 || plen > 5) {
			buf_printf(err, "'%.*s': bad port", (int)n, p);
			return RELAY_EINVAL;
		}
		for (i = 0; i < plen; i++) {
			if (!isdigit((unsigned char)port[i])) {
				buf_printf(err, "'%.*s': bad port", (int)n, p);
				return RELAY_EINVAL;
			}
			v = v * 10 + (unsigned long)(port[i] - '0');
		}
		if (v == 0 || v > 65535) {
			buf_printf(err, "'%.*s': port out of range", (int)n, p);
			return RELAY_EINVAL;
		}
	} else
		v = default_port;
	hp->host = xstrndup(host, hlen);
	for (i = 0; i < hlen; i++)
		hp->host[i] = (char)tolower((unsigned char)hp->host[i]);
	hp->port = (uint16_t)v;
	return 0;
}

int
route_parse_hosts(const char *text, uint16_t default_port, struct conf_hostport **out,
    size_t *n, struct buf *err)
{
	struct conf_hostport *h = NULL;
	const char *p = text, *e;
	size_t nh = 0;

	*out = NULL;
	*n = 0;
	for (;;) {
		while (*p == ',' || *p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			break;
		for (e = p; *e != '\0' && *e != ',' && *e != ' ' && *e != '\t'; e++)
			;
		if (nh == ROUTE_MAX_HOSTS) {
			buf_printf(err, "more than %d hosts", ROUTE_MAX_HOSTS);
			route_hosts_free(h, nh);
			return RELAY_EINVAL;
		}
		h = xrealloc(h, (nh + 1) * sizeof(*h));
		if (route_parse_one(p, (size_t)(e - p), default_port, &h[nh], err) != 0) {
			route_hosts_free(h, nh);
			return RELAY_EINVAL;
		}
		nh++;
		p = e;
	}
	if (nh == 0) {
		buf_puts(err, "no hosts given");
		free(h);
		return RELAY_EINVAL;
	}
	*out = h;
	*n = nh;
	return 0;
}

void
route_format_host(struct buf *b, const struct conf_hostport *h)
{
	if (strchr(h->host, ':') != NULL)
		buf_printf(b, "[%s]:%u", h->host, (unsigned)h->port);
	else
		buf_printf(b, "%s:%u", h->host, (unsigned)h->port);
}

/* A route's domain: "*" or a lower-cased domain name; NULL if malformed. */
static char *
route_domain(const char *d)
{
	size_t i, n = strlen(d);
	char *s;

	if (n > 1 && d[n - 1] == '.')
		n--;
	if (n == 1 && d[0] == '*')
		return xstrdup("*");
	if (n == 0 || n > 253 || d[0] == '.' || d[0] == '-')
		return NULL;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)d[i]) && d[i] != '.' && d[i] != '-' && d[i] != '_')
			return NULL;
	s = xstrndup(d, n);
	for (i = 0; i < n; i++)
		s[i] = (char)tolower((unsigned char)s[i]);
	return s;
}

/* ------------------------------------------------------------------ */
/* The table and its file. */

static struct route_rt *
route_rt_find(const struct route_table *t, const char *domain)
{
	size_t i, len = strlen(domain);

	if (len > 1 && domain[len - 1] == '.')
		len--;
	for (i = 0; i < t->nrt; i++)
		if (strlen(t->rt[i].domain) == len &&
		    util_strncasecmp(t->rt[i].domain, domain, len) == 0)
			return &t->rt[i];
	return NULL;
}

static void
route_rt_add(struct route_table *t, char *domain, struct conf_hostport *hosts, size_t n)
{
	struct route_rt *r = route_rt_find(t, domain);

	if (r != NULL) {
		free(domain);
		route_hosts_free(r->hosts, r->nhosts);
	} else {
		t->rt = xrealloc(t->rt, (t->nrt + 1) * sizeof(*t->rt));
		r = &t->rt[t->nrt++];
		r->domain = domain;
	}
	r->hosts = hosts;
	r->nhosts = n;
	t->gen++;
}

static int
route_load(struct route_table *t, struct buf *err)
{
	char *text, *line, *next, *sp;
	int lineno = 0, rc = 0;
	size_t len;

	if (util_read_file(t->path, ROUTE_MAX_FILE, &text, &len) != 0) {
		if (errno == ENOENT)
			return 0;
		buf_printf(err, "%s: %s", t->path, errno == EFBIG ? "too large" : strerror(errno));
		return RELAY_EIO;
	}
	for (line = text; line != NULL && *line != '\0'; line = next) {
		struct conf_hostport *hosts;
		size_t nh;
		char *dom;

		lineno++;
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		while (*line == ' ' || *line == '\t')
			line++;
		if (*line == '\0' || *line == '#')
			continue;
		if ((sp = strpbrk(line, " \t")) == NULL) {
			buf_printf(err, "%s:%d: route without hosts", t->path, lineno);
			rc = RELAY_EINVAL;
			break;
		}
		*sp++ = '\0';
		if ((dom = route_domain(line)) == NULL) {
			buf_printf(err, "%s:%d: bad domain '%s'", t->path, lineno, line);
			rc = RELAY_EINVAL;
			break;
		}
		if (route_parse_hosts(sp, 25, &hosts, &nh, err) != 0) {
			free(dom);
			buf_printf(err, " (%s:%d)", t->path, lineno);
			rc = RELAY_EINVAL;
			break;
		}
		route_rt_add(t, dom, hosts, nh);
	}
	free(text);
	return rc;
}

static void
route_serialize(const struct route_table *t, struct buf *b)
{
	size_t i, j;

	buf_puts(b, "# relayd run-time routes (relayctl route set/clear); do not edit while running\n");
	for (i = 0; i < t->nrt; i++) {
		buf_puts(b, t->rt[i].domain);
		for (j = 0; j < t->rt[i].nhosts; j++) {
			buf_putc(b, ' ');
			route_format_host(b, &t->rt[i].hosts[j]);
		}
		buf_putc(b, '\n');
	}
}

/* Thread pool: write the text to the temporary file, sync it, rename it over,
 * sync the directory (util_write_file_atomic). */
static void
route_write_work(uv_work_t *w)
{
	struct route_table *t = w->data;

	t->werr = 0;
	if (util_write_file_atomic(t->path, t->tmp_path, t->wtext, strlen(t->wtext)) != 0)
		t->werr = errno;
}

static void route_write_start(struct route_table *t);
static void route_table_destroy(struct route_table *t);

static void
route_write_done(uv_work_t *w, int status)
{
	struct route_table *t = w->data;

	t->writing = false;
	free(t->wtext);
	t->wtext = NULL;
	if (status != 0 || t->werr != 0)
		log_event(LOG_ERR, "routes_write_failed", "path", t->path,
		    "error", status != 0 ? uv_strerror(status) : strerror(t->werr), NULL);
	if (t->dirty && !t->freed) {
		route_write_start(t);
		return;
	}
	if (t->close_done != NULL) {
		void (*done)(void *) = t->close_done;

		t->close_done = NULL;
		done(t->close_arg);
	}
	if (t->freed)
		route_table_destroy(t);
}

static void
route_write_start(struct route_table *t)
{
	struct buf b = BUF_INIT;

	if (t->writing) {
		t->dirty = true;
		return;
	}
	route_serialize(t, &b);
	t->wtext = buf_steal(&b);
	t->dirty = false;
	t->work.data = t;
	if (uv_queue_work(t->loop, &t->work, route_write_work, route_write_done) != 0) {
		log_event(LOG_ERR, "routes_write_failed", "path", t->path, "error", "queue_work", NULL);
		free(t->wtext);
		t->wtext = NULL;
		return;
	}
	t->writing = true;
}

struct route_table *
route_table_new(uv_loop_t *loop, const char *queue_dir, struct buf *err)
{
	struct route_table *t = xcalloc(1, sizeof(*t));
	struct buf p = BUF_INIT;

	t->loop = loop;
	t->keys = intern_table_new(ROUTE_KEYS, ROUTE_KEY_PROBE, 0);
	buf_printf(&p, "%s/%s", queue_dir, ROUTE_FILE);
	t->path = buf_steal(&p);
	buf_printf(&p, "%s/%s", queue_dir, ROUTE_FILE_TMP);
	t->tmp_path = buf_steal(&p);
	if (route_load(t, err) != 0) {
		route_table_destroy(t);
		return NULL;
	}
	return t;
}

void
route_table_close(struct route_table *t, void (*done)(void *arg), void *arg)
{
	if (!t->writing) {
		if (done != NULL)
			done(arg);
		return;
	}
	t->close_done = done;
	t->close_arg = arg;
}

static void
route_table_destroy(struct route_table *t)
{
	size_t i;

	for (i = 0; i < t->nrt; i++) {
		free(t->rt[i].domain);
		route_hosts_free(t->rt[i].hosts, t->rt[i].nhosts);
	}
	intern_table_free(t->keys);     /* routes keep their keys */
	free(t->rt);
	free(t->path);
	free(t->tmp_path);
	free(t->wtext);
	free(t);
}

void
route_table_free(struct route_table *t)
{
	if (t == NULL)
		return;
	if (t->writing) {
		t->freed = true;        /* route_write_done frees it */
		return;
	}
	route_table_destroy(t);
}

int
route_set(struct route_table *t, const char *domain, const char *hosts, uint16_t default_port,
    struct buf *err)
{
	struct conf_hostport *h;
	size_t n;
	char *dom;

	if ((dom = route_domain(domain)) == NULL) {
		buf_printf(err, "bad domain '%s'", domain);
		return RELAY_EINVAL;
	}
	if (route_parse_hosts(hosts, default_port, &h, &n, err) != 0) {
		free(dom);
		return RELAY_EINVAL;
	}
	route_rt_add(t, dom, h, n);
	route_write_start(t);
	return 0;
}

int
route_clear(struct route_table *t, const char *domain)
{
	struct route_rt *r = route_rt_find(t, domain);
	size_t i;

	if (r == NULL)
		return RELAY_ENOENT;
	i = (size_t)(r - t->rt);
	free(r->domain);
	route_hosts_free(r->hosts, r->nhosts);
	memmove(&t->rt[i], &t->rt[i + 1], (t->nrt - i - 1) * sizeof(*t->rt));
	t->nrt--;
	t->gen++;
	route_write_start(t);
	return 0;
}

uint64_t
route_table_gen(const struct route_table *t)
{
	return t->gen;
}

/* ------------------------------------------------------------------ */
/* Listing. */

static void
route_list_one(struct buf *out, struct json *j, const char *domain,
    const struct conf_hostport *hosts, size_t nhosts, const char *source, const char *policy,
    const char *tls, const char *auth_user)
{
	struct buf hb = BUF_INIT;
	size_t i;

	if (j != NULL) {
		json_object_begin(j);
		json_key(j, "domain");
		json_string(j, domain);
		json_key(j, "hosts");
		json_array_begin(j);
		for (i = 0; i < nhosts; i++) {
			buf_reset(&hb);
			route_format_host(&hb, &hosts[i]);
			json_string(j, buf_cstr(&hb));
		}
		json_array_end(j);
		json_key(j, "source");
		json_string(j, source);
		json_key(j, "mx_policy");
		json_string(j, policy);
		json_key(j, "tls");
		json_string(j, tls);
		json_key(j, "auth_user");
		json_string(j, auth_user);
		json_object_end(j);
	} else {
		for (i = 0; i < nhosts; i++) {
			if (i)
				buf_putc(&hb, ',');
			route_format_host(&hb, &hosts[i]);
		}
		buf_printf(out, "%-24s %-8s %-12s %-13s %s%s%s\n", domain, source, policy,
		    tls != NULL ? tls : "-", nhosts ? buf_cstr(&hb) : "(dns)",
		    auth_user != NULL ? " auth=" : "", auth_user != NULL ? auth_user : "");
	}
	buf_free(&hb);
}

void
route_list(const struct route_table *t, const struct conf *conf, bool json, struct buf *out)
{
	struct json jw, *j = NULL;
	size_t i;

	if (json) {
		json_init(&jw, out);
		j = &jw;
		json_array_begin(j);
	} else
		buf_printf(out, "%-24s %-8s %-12s %-13s %s\n", "DOMAIN", "SOURCE", "MX_POLICY",
		    "TLS", "HOSTS");
	for (i = 0; i < t->nrt; i++)
		route_list_one(out, j, t->rt[i].domain, t->rt[i].hosts,
		    t->rt[i].nhosts, "runtime", "any", NULL, NULL);
	for (i = 0; conf != NULL && i < conf->router.nroutes; i++) {
		const struct conf_route *r = &conf->router.routes[i];

		route_list_one(out, j, r->domain, r->hosts, r->nhosts, "config",
		    r->mx_policy == CONF_MX_PRIMARY_ONLY ? "primary-only" : "any",
		    r->has_tls ? conf_tls_name(r->tls) : NULL, r->auth_user);
	}
	if (json) {
		json_array_end(j);
		buf_putc(out, '\n');
	}
}

/* ------------------------------------------------------------------ */
/* Resolution. */

static void
route_from_rt(struct route *out, const struct route_rt *rt, const struct conf *conf)
{
	size_t i;

	out->domain = xstrdup(rt->domain);
	out->runtime = true;
	out->hosts = xcalloc(rt->nhosts, sizeof(*out->hosts));
	for (i = 0; i < rt->nhosts; i++) {
		out->hosts[i].host = xstrdup(rt->hosts[i].host);
		out->hosts[i].port = rt->hosts[i].port;
	}
	out->nhosts = rt->nhosts;
	out->mx_policy = CONF_MX_ANY;
	out->tls = conf->deliver.tls;
}

static void
route_from_conf(struct route *out, const struct conf_route *r, const struct conf *conf)
{
	size_t i;

	out->domain = xstrdup(r->domain);
	out->hosts = r->nhosts ? xcalloc(r->nhosts, sizeof(*out->hosts)) : NULL;
	for (i = 0; i < r->nhosts; i++) {
		out->hosts[i].host = xstrdup(r->hosts[i].host);
		out->hosts[i].port = r->hosts[i].port;
	}
	out->nhosts = r->nhosts;
	out->mx_policy = r->mx_policy;
	out->tls = r->has_tls ? r->tls : conf->deliver.tls;
	if (r->auth_user != NULL) {
		out->auth_user = xstrdup(r->auth_user);
		out->auth_password = xstrdup(r->auth_password != NULL ? r->auth_password : "");
	}
}

void
route_resolve(struct route_table *t, const struct conf *conf, const char *domain,
    struct route *out)
{
	const struct conf_route *cr = conf_route_find(conf, domain);
	const struct route_rt *rt = t != NULL ? route_rt_find(t, domain) : NULL;
	struct buf key = BUF_INIT;
	size_t len;

	memset(out, 0, sizeof(*out));
	out->mx_policy = CONF_MX_ANY;
	out->tls = conf->deliver.tls;
	if (rt != NULL)
		route_from_rt(out, rt, conf);
	else if (cr != NULL && strcmp(cr->domain, "*") != 0)
		route_from_conf(out, cr, conf);
	else if (t != NULL && (rt = route_rt_find(t, "*")) != NULL)
		route_from_rt(out, rt, conf);
	else if (cr != NULL)
		route_from_conf(out, cr, conf);

	if (out->nhosts > 0) {
		buf_printf(&key, "route:%s", out->domain);
	} else {
		len = route_fold_domain(domain, NULL, 0);
		buf_reserve(&key, len + 1);
		route_fold_domain(domain, key.data, len + 1);
		key.len = len;
	}
	/* shared: a job waiting in an outage keeps it (one per queued message) */
	out->dest = intern_get(t != NULL ? t->keys : NULL, key.data != NULL ? key.data : "", key.len);
	buf_free(&key);
}

void
route_release(struct route *r)
{
	intern_unref(r->dest);
	free(r->domain);
	route_hosts_free(r->hosts, r->nhosts);
	free(r->auth_user);
	free(r->auth_password);
	memset(r, 0, sizeof(*r));
}

static bool
route_str_equal(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

bool
route_equal(const struct route *a, const struct route *b)
{
	size_t i;

	if (!route_str_equal(a->dest, b->dest) || !route_str_equal(a->domain, b->domain) ||
	    a->runtime != b->runtime || a->nhosts != b->nhosts || a->mx_policy != b->mx_policy ||
	    a->tls != b->tls || !route_str_equal(a->auth_user, b->auth_user) ||
	    !route_str_equal(a->auth_password, b->auth_password))
		return false;
	for (i = 0; i < a->nhosts; i++)
		if (strcmp(a->hosts[i].host, b->hosts[i].host) != 0 || a->hosts[i].port != b->hosts[i].port)
			return false;
	return true;
}
