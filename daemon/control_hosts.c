/*
 * control_hosts.c - relayctl's commands about destinations: the host-health
 * table and destinations (hosts, hosts reset), run-time routes (route set /
 * clear / list) and the queue part of `relayctl stats`.
 *
 * Owns: nothing beyond one request.
 */
#include "daemon/control_int.h"
#include "common/htab.h"
#include "common/util.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* hosts */

struct rctl_hostv {
	const struct health_host **v;
	size_t n, cap;
};

static void
rctl_host_add(void *arg, const struct health_host *h)
{
	struct rctl_hostv *hv = arg;

	if (hv->n == hv->cap) {
		hv->cap = hv->cap ? hv->cap * 2 : 32;
		hv->v = xrealloc(hv->v, hv->cap * sizeof(*hv->v));
	}
	hv->v[hv->n++] = h;
}

static int
rctl_host_cmp(const void *a, const void *b)
{
	const struct health_host *x = *(const struct health_host *const *)a;
	const struct health_host *y = *(const struct health_host *const *)b;
	int d = util_strcasecmp(x->name, y->name);

	return d != 0 ? d : strcmp(x->addr, y->addr);
}

struct rctl_dests {
	struct rctl *c;
	size_t n;
};

static void
rctl_dest_row(void *arg, const struct sched_dest_view *d)
{
	struct rctl_dests *ds = arg;
	struct rctl *c = ds->c;
	struct buf *b = c->out;
	char t[32];

	if (c->json) {
		buf_puts(b, ds->n ? ",{\"name\":" : "{\"name\":");
		json_str(b, d->name);
		buf_printf(b, ",\"state\":\"%s\",\"inflight\":%u,\"window\":%u,\"queued\":%zu,"
		    "\"waiting\":%zu,\"down_since\":", d->state, d->inflight, d->window, d->queued,
		    d->waiting);
		rctl_json_time(c, b, strcmp(d->state, "down") == 0 ? d->down_since_ms : 0);
		buf_puts(b, ",\"next_probe\":");
		rctl_json_time(c, b, strcmp(d->state, "down") == 0 ? d->probe_at_ms : 0);
		buf_putc(b, '}');
	} else {
		bool down = strcmp(d->state, "down") == 0;

		if (ds->n == 0)
			buf_printf(b, "\n%-32s %-5s %8s %7s %7s  %-20s  %s\n", "DESTINATION", "STATE",
			    "INFLIGHT", "QUEUED", "WAITING", "DOWN SINCE", "NEXT PROBE");
		rctl_text_pad(b, d->name, 33);
		buf_printf(b, "%-5s %8u %7zu %7zu  ", d->state, d->inflight, d->queued, d->waiting);
		if (down && d->down_since_ms != 0)
			util_rfc3339_sec(d->down_since_ms, t, sizeof(t));
		else
			snprintf(t, sizeof(t), "-");
		buf_printf(b, "%-20s  ", t);
		if (down && d->probe_at_ms != 0) {
			util_rfc3339_sec(d->probe_at_ms, t, sizeof(t));
			buf_puts(b, t);
		} else
			buf_putc(b, '-');
		buf_putc(b, '\n');
	}
	ds->n++;
}

int
rctl_hosts(struct rctl *c)
{
	struct rctl_hostv hv = { NULL, 0, 0 };
	struct rctl_dests ds = { c, 0 };
	struct buf *b = c->out;
	char t[32];
	size_t i;

	health_foreach(sched_health(c->s), rctl_host_add, &hv);
	if (hv.n > 1)
		qsort(hv.v, hv.n, sizeof(*hv.v), rctl_host_cmp);
	if (c->json)
		buf_puts(b, "{\"hosts\":[");
	else if (hv.n == 0)
		buf_puts(b, "no hosts known yet\n");
	else
		buf_printf(b, "%-32s %-24s %-7s %8s  %-20s  %s\n", "HOST", "ADDRESS", "STATE",
		    "FAILURES", "DOWN UNTIL", "LAST ERROR");
	for (i = 0; i < hv.n; i++) {
		const struct health_host *h = hv.v[i];
		bool down = h->state == HEALTH_DOWN;

		if (c->json) {
			buf_puts(b, i ? ",{\"host\":" : "{\"host\":");
			json_str(b, h->name[0] ? h->name : NULL);
			buf_puts(b, ",\"address\":");
			json_str(b, h->addr);
			buf_printf(b, ",\"state\":\"%s\",\"failures\":%u,\"down_until\":",
			    health_state_name(h->state), h->failures);
			rctl_json_time(c, b, down ? h->down_until_ms : 0);
			buf_puts(b, ",\"since\":");
			rctl_json_time(c, b, h->since_ms);
			buf_puts(b, ",\"last_attempt\":");
			rctl_json_time(c, b, h->last_attempt_ms);
			buf_puts(b, ",\"last_error\":");
			json_str(b, h->last_error[0] ? h->last_error : NULL);
			buf_printf(b, ",\"probing\":%s", h->probing ? "true" : "false");
			rctl_policy_host(c, h);
			buf_putc(b, '}');
			continue;
		}
		rctl_text_pad(b, h->name[0] ? h->name : "-", 33);
		rctl_text_pad(b, h->addr, 25);
		buf_printf(b, "%-7s %8u  ", health_state_name(h->state), h->failures);
		if (down && h->down_until_ms != 0)
			util_rfc3339_sec(h->down_until_ms, t, sizeof(t));
		else
			snprintf(t, sizeof(t), "-");
		buf_printf(b, "%-20s  ", t);
		rctl_text(b, h->last_error[0] ? h->last_error : NULL);
		buf_putc(b, '\n');
	}
	if (!c->json)
		rctl_policy_hosts(c, hv.v, hv.n);
	if (c->json)
		buf_puts(b, "],\"destinations\":[");
	sched_foreach_dest(c->s, rctl_dest_row, &ds);
	if (c->json)
		buf_puts(b, "]}\n");
	free(hv.v);
	return 0;
}

int
rctl_hosts_reset(struct rctl *c)
{
	const char *host = c->pos[0];

	if (sched_host_reset(c->s, host) != 0) {
		buf_printf(c->out, "unknown host: %s (not in relayctl hosts)", host);
		return RELAY_ENOENT;
	}
	if (c->json) {
		buf_puts(c->out, "{\"reset\":");
		json_str(c->out, host);
		buf_puts(c->out, "}\n");
	} else
		buf_printf(c->out, "host %s reset: its destinations are probed now\n", host);
	return 0;
}

/* ------------------------------------------------------------------ */
/* route */

int
rctl_route_set(struct rctl *c)
{
	const char *domain = c->pos[0], *hosts = c->pos[1], *p, *comma;
	struct buf err = BUF_INIT;
	int rc;

	if ((rc = sched_route_set(c->s, domain, hosts, &err)) != 0) {
		buf_printf(c->out, "route set %s: %s", domain,
		    err.len ? buf_cstr(&err) : "invalid route");
		buf_free(&err);
		return rc == RELAY_ENOENT ? RELAY_EINVAL : rc;
	}
	buf_free(&err);
	if (c->json) {
		buf_puts(c->out, "{\"domain\":");
		json_str(c->out, domain);
		buf_puts(c->out, ",\"hosts\":[");
		for (p = hosts; *p != '\0'; p = *comma ? comma + 1 : comma) {
			char *one;

			comma = strchr(p, ',');
			if (comma == NULL)
				comma = p + strlen(p);
			one = xstrndup(p, (size_t)(comma - p));
			buf_puts(c->out, p == hosts ? "" : ",");
			json_str(c->out, one);
			free(one);
		}
		buf_puts(c->out, "]}\n");
	} else if (strcmp(domain, "*") == 0)
		buf_printf(c->out, "route for * set to %s (flush the queue with: relayctl queue flush "
		    "--all)\n", hosts);
	else
		buf_printf(c->out, "route for %s set to %s (flush its mail with: relayctl queue flush "
		    "--domain %s)\n", domain, hosts, domain);
	return 0;
}

int
rctl_route_clear(struct rctl *c)
{
	const char *domain = c->pos[0];

	if (sched_route_clear(c->s, domain) != 0) {
		buf_printf(c->out, "no run-time route for %s", domain);
		return RELAY_ENOENT;
	}
	if (c->json) {
		buf_puts(c->out, "{\"cleared\":");
		json_str(c->out, domain);
		buf_puts(c->out, "}\n");
	} else
		buf_printf(c->out, "route for %s cleared\n", domain);
	return 0;
}

int
rctl_route_list(struct rctl *c)
{
	sched_route_list(c->s, c->json, c->out);
	return 0;
}

/* ------------------------------------------------------------------ */
/* stats: the queue by state and by destination domain. */

struct rctl_dom {
	struct htab_node node;          /* in rctl_stats.doms */
	char *name;                     /* lower-cased */
	size_t n;
	const char *dest;               /* a destination seen for it (borrowed) */
};

struct rctl_stats {
	struct rctl *c;
	size_t msgs;
	size_t pending, deferred, held, active;
	struct htab doms;               /* struct rctl_dom by name, case ignored */
	struct rctl_dom *dom;           /* then copied out of it, to be sorted */
};

static struct rctl_dom *
rctl_dom_get(struct rctl_stats *st, const char *name)
{
	struct htab_node *n = htab_find(&st->doms, name);
	struct rctl_dom *d;
	size_t k;

	if (n != NULL)
		return HTAB_ENTRY(n, struct rctl_dom, node);
	d = xcalloc(1, sizeof(*d));
	d->name = xstrdup(name);
	for (k = 0; d->name[k] != '\0'; k++)
		if (d->name[k] >= 'A' && d->name[k] <= 'Z')
			d->name[k] = (char)(d->name[k] - 'A' + 'a');
	htab_insert(&st->doms, &d->node, d->name);
	return d;
}

static void
rctl_stats_msg(void *arg, const struct queue_msg *m)
{
	struct rctl_stats *st = arg;
	struct rctl_rstate rs;
	struct rctl_dom *d;
	size_t i;

	st->msgs++;
	for (i = 0; i < m->env.nrcpts; i++) {
		if (m->rcpt[i].state != RCPT_PENDING)
			continue;
		rctl_rcpt_state(st->c, m, i, &rs);
		if (strcmp(rs.name, "held") == 0)
			st->held++;
		else if (strcmp(rs.name, "deferred") == 0)
			st->deferred++;
		else if (strcmp(rs.name, "active") == 0)
			st->active++;
		else
			st->pending++;
		d = rctl_dom_get(st, rctl_domain_of(m->env.rcpts[i].addr));
		d->n++;
		if (rs.dest != NULL)
			d->dest = rs.dest;
	}
}

static int
rctl_dom_cmp(const void *a, const void *b)
{
	const struct rctl_dom *x = a, *y = b;

	if (x->n != y->n)
		return x->n > y->n ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* The state of the destination a top domain goes to. */
struct rctl_dest_find {
	const char *name, *alt;
	const char *state;
};

static void
rctl_dest_find(void *arg, const struct sched_dest_view *d)
{
	struct rctl_dest_find *f = arg;

	if (f->state == NULL && (util_strcasecmp(d->name, f->name) == 0 ||
	    (f->alt != NULL && util_strcasecmp(d->name, f->alt) == 0)))
		f->state = d->state;
}

static const char *
rctl_dom_state(struct rctl *c, const struct rctl_dom *d, struct buf *alt)
{
	struct rctl_dest_find f;

	buf_reset(alt);
	buf_printf(alt, "route:%s", d->name);
	f.name = d->dest != NULL ? d->dest : d->name;
	f.alt = d->dest != NULL ? NULL : buf_cstr(alt);
	f.state = NULL;
	sched_foreach_dest(c->s, rctl_dest_find, &f);
	if (f.state == NULL || strcmp(f.state, "new") == 0)
		return "unknown";
	return f.state;
}

int
rctl_stats(struct rctl *c)
{
	struct rctl_stats st;
	struct buf *b = c->out, alt = BUF_INIT;
	struct htab_iter it;
	struct htab_node *n;
	size_t i, j, top;

	memset(&st, 0, sizeof(st));
	st.c = c;
	htab_init(&st.doms, &htab_ops_nocase);
	sched_foreach(c->s, rctl_stats_msg, &st);
	/* Copy out of the table, sort by count: the domains are few next to the recipients. */
	st.dom = xcalloc(htab_count(&st.doms) + 1, sizeof(*st.dom));
	j = 0;
	HTAB_FOREACH(n, &st.doms, &it) {
		st.dom[j++] = *HTAB_ENTRY(n, struct rctl_dom, node);
		free(HTAB_ENTRY(n, struct rctl_dom, node));
	}
	htab_free(&st.doms);
	if (j > 1)
		qsort(st.dom, j, sizeof(*st.dom), rctl_dom_cmp);
	top = j < RCTL_TOP_DESTS ? j : RCTL_TOP_DESTS;
	if (c->json) {
		buf_printf(b, "{\"messages\":%zu,\"recipients\":{\"pending\":%zu,\"deferred\":%zu,"
		    "\"held\":%zu,\"active\":%zu},\"domains\":%zu,\"top_destinations\":[", st.msgs,
		    st.pending, st.deferred, st.held, st.active, j);
		for (i = 0; i < top; i++) {
			buf_puts(b, i ? ",{\"domain\":" : "{\"domain\":");
			json_str(b, st.dom[i].name);
			buf_printf(b, ",\"recipients\":%zu,\"state\":\"%s\"}", st.dom[i].n,
			    rctl_dom_state(c, &st.dom[i], &alt));
		}
		buf_puts(b, "]}");
	} else {
		buf_printf(b, "%-14s %zu\n", "queued", st.msgs);
		buf_printf(b, "%-14s %zu\n", "  pending", st.pending);
		buf_printf(b, "%-14s %zu\n", "  deferred", st.deferred);
		buf_printf(b, "%-14s %zu\n", "  held", st.held);
		buf_printf(b, "%-14s %zu\n", "  active", st.active);
		if (top > 0)
			buf_printf(b, "\n%-32s %10s  %s\n", "TOP DESTINATIONS", "RECIPIENTS", "STATE");
		for (i = 0; i < top; i++) {
			rctl_text_pad(b, st.dom[i].name, 33);
			buf_printf(b, "%10zu  %s\n", st.dom[i].n, rctl_dom_state(c, &st.dom[i], &alt));
		}
	}
	for (i = 0; i < j; i++)
		free(st.dom[i].name);
	free(st.dom);
	buf_free(&alt);
	return 0;
}
