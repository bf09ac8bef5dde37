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
/* stats: the queue by state and by destination domain, from the scheduler's
 * tallies (sched_stats: O(domains), never a walk over the recipients). */

static int
rctl_dom_cmp(const void *a, const void *b)
{
	const struct sched_stats_dom *x = a, *y = b;

	if (x->rcpts != y->rcpts)
		return x->rcpts > y->rcpts ? -1 : 1;
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
rctl_dom_state(struct rctl *c, const struct sched_stats_dom *d, struct buf *alt)
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

#ifndef NDEBUG
/*
 * Debug builds (the test suite): the tallies must equal a walk over every
 * pending recipient, as stats was computed before it had them.  A
 * difference is a broken invariant: the process stops, naming it.
 */
struct rctl_walk {
	struct rctl *c;
	struct sched_stats st;
	struct htab doms;               /* struct rctl_walk_dom by name, case ignored */
};

struct rctl_walk_dom {
	struct htab_node node;
	const char *name;               /* borrowed from the message */
	size_t n;
	const char *dest;               /* the last destination seen for it, or NULL */
	size_t ndests;                  /* recipients in jobs, by distinct destinations seen */
	bool mixed;                     /* more than one destination seen */
};

static void
rctl_walk_msg(void *arg, const struct queue_msg *m)
{
	struct rctl_walk *w = arg;
	struct rctl_rstate rs;
	struct rctl_walk_dom *d;
	struct htab_node *n;
	const char *dom;
	size_t i;

	w->st.messages++;
	for (i = 0; i < m->env.nrcpts; i++) {
		if (m->rcpt[i].state != RCPT_PENDING)
			continue;
		rctl_rcpt_state(w->c, m, i, &rs);
		if (strcmp(rs.name, "held") == 0)
			w->st.held++;
		else if (strcmp(rs.name, "deferred") == 0)
			w->st.deferred++;
		else if (strcmp(rs.name, "active") == 0)
			w->st.active++;
		else
			w->st.pending++;
		dom = rctl_domain_of(m->env.rcpts[i].addr);
		if ((n = htab_find(&w->doms, dom)) != NULL)
			d = HTAB_ENTRY(n, struct rctl_walk_dom, node);
		else {
			d = xcalloc(1, sizeof(*d));
			d->name = dom;
			htab_insert(&w->doms, &d->node, d->name);
		}
		d->n++;
		if (rs.dest != NULL) {
			if (d->dest != NULL && strcmp(d->dest, rs.dest) != 0)
				d->mixed = true;
			d->dest = rs.dest;
		}
	}
}

static void
rctl_stats_check(struct rctl *c, const struct sched_stats *st)
{
	struct rctl_walk w;
	struct htab_iter it;
	struct htab_node *n;
	size_t i, ndoms = 0;

	memset(&w, 0, sizeof(w));
	w.c = c;
	htab_init(&w.doms, &htab_ops_nocase);
	sched_foreach(c->s, rctl_walk_msg, &w);
	if (w.st.messages != st->messages || w.st.pending != st->pending ||
	    w.st.deferred != st->deferred || w.st.held != st->held || w.st.active != st->active)
		fatalx("%s: tallies %zu msgs %zu/%zu/%zu/%zu, walk %zu msgs %zu/%zu/%zu/%zu "
		    "(pending/deferred/held/active)", __func__, st->messages, st->pending,
		    st->deferred, st->held, st->active, w.st.messages, w.st.pending, w.st.deferred,
		    w.st.held, w.st.active);
	for (i = 0; i < st->ndoms; i++) {
		struct rctl_walk_dom *d;

		if ((n = htab_find(&w.doms, st->doms[i].name)) == NULL)
			fatalx("%s: domain %s tallied, not in the queue", __func__, st->doms[i].name);
		d = HTAB_ENTRY(n, struct rctl_walk_dom, node);
		if (d->n != st->doms[i].rcpts)
			fatalx("%s: domain %s: tallies %zu recipients, walk %zu", __func__,
			    st->doms[i].name, st->doms[i].rcpts, d->n);
		if (!d->mixed && ((d->dest == NULL) != (st->doms[i].dest == NULL) ||
		    (d->dest != NULL && strcmp(d->dest, st->doms[i].dest) != 0)))
			fatalx("%s: domain %s: tallies destination %s, walk %s", __func__,
			    st->doms[i].name, st->doms[i].dest != NULL ? st->doms[i].dest : "-",
			    d->dest != NULL ? d->dest : "-");
	}
	HTAB_FOREACH(n, &w.doms, &it) {
		ndoms++;
		free(HTAB_ENTRY(n, struct rctl_walk_dom, node));
	}
	htab_free(&w.doms);
	if (ndoms != st->ndoms)
		fatalx("%s: tallies %zu domains, walk %zu", __func__, st->ndoms, ndoms);
}
#endif

int
rctl_stats(struct rctl *c)
{
	struct sched_stats st;
	struct buf *b = c->out, alt = BUF_INIT;
	size_t i, j, top, loaded, corrupt;

	sched_stats(c->s, c->now, &st);
#ifndef NDEBUG
	rctl_stats_check(c, &st);
#endif
	j = st.ndoms;
	if (j > 1)
		qsort(st.doms, j, sizeof(*st.doms), rctl_dom_cmp);
	top = j < RCTL_TOP_DESTS ? j : RCTL_TOP_DESTS;
	if (c->json) {
		buf_printf(b, "{\"messages\":%zu,\"recipients\":{\"pending\":%zu,\"deferred\":%zu,"
		    "\"held\":%zu,\"active\":%zu},\"domains\":%zu,\"top_destinations\":[", st.messages,
		    st.pending, st.deferred, st.held, st.active, j);
		for (i = 0; i < top; i++) {
			buf_puts(b, i ? ",{\"domain\":" : "{\"domain\":");
			json_str(b, st.doms[i].name);
			buf_printf(b, ",\"recipients\":%zu,\"state\":\"%s\"}", st.doms[i].rcpts,
			    rctl_dom_state(c, &st.doms[i], &alt));
		}
		buf_putc(b, ']');
		if (sched_scanning(c->s, &loaded, &corrupt))
			buf_printf(b, ",\"scanning\":{\"loaded\":%zu,\"corrupt\":%zu}", loaded, corrupt);
		buf_putc(b, '}');
	} else {
		buf_printf(b, "%-14s %zu\n", "queued", st.messages);
		buf_printf(b, "%-14s %zu\n", "  pending", st.pending);
		buf_printf(b, "%-14s %zu\n", "  deferred", st.deferred);
		buf_printf(b, "%-14s %zu\n", "  held", st.held);
		buf_printf(b, "%-14s %zu\n", "  active", st.active);
		if (sched_scanning(c->s, &loaded, &corrupt))
			rctl_scanning(c);       /* the figures are of what is loaded so far */
		if (top > 0)
			buf_printf(b, "\n%-32s %10s  %s\n", "TOP DESTINATIONS", "RECIPIENTS", "STATE");
		for (i = 0; i < top; i++) {
			rctl_text_pad(b, st.doms[i].name, 33);
			buf_printf(b, "%10zu  %s\n", st.doms[i].rcpts, rctl_dom_state(c, &st.doms[i], &alt));
		}
	}
	sched_stats_free(&st);
	buf_free(&alt);
	return 0;
}
