/*
 * router_shared.c - host health shared with the other nodes of a cluster
 * (cluster/, issue #12).  What this node learns goes out: a host marked down
 * (with its backoff end), a host that answers again, a destination whose
 * outage ended.  What the others learn comes in: a host down is skipped
 * here too, without a connection; a destination's recovery releases the
 * backlog waiting here, paced by this node's own ramp (SCHEDULING.md).
 *
 * The node that found a host down probes it when its backoff ends; the
 * others take the news with one backoff more, so that one probe goes out
 * for the cluster while that node lives, and they probe themselves only if
 * it does not (its next failure pushes their end again, its success
 * releases them).  Without a cluster (s->cluster NULL) every function here
 * does nothing.  Owns nothing; never connects; logs what came from others.
 */
#include "router/router_sched_int.h"

#include <stdio.h>
#include <string.h>

#include "cluster/cluster.h"
#include "common/log.h"
#include "common/util.h"

void
sched_shared_host_down(struct sched *s, const struct health_host *h)
{
	if (s->cluster != NULL)
		cluster_host_down(s->cluster, h->addr, h->failures, h->down_until_ms, h->backoff_ms,
		    h->last_error);
}

void
sched_shared_host_up(struct sched *s, const struct health_host *h)
{
	if (s->cluster != NULL)
		cluster_host_up(s->cluster, h->addr);
}

void
sched_shared_dest_up(struct sched *s, const struct sched_dest *d)
{
	if (s->cluster != NULL)
		cluster_dest_up(s->cluster, d->name);
}

/* Another node marked a host down: skip it here until one backoff after its end. */
static void
sched_shared_on_host_down(void *arg, const struct cluster_host_news *n)
{
	struct sched *s = arg;
	struct health_host *h;
	struct log_line l;
	char when[32];

	if (s->magic != SCHED_MAGIC)
		fatalx("%s: bad scheduler", __func__);
	if (s->stopping)
		return;
	h = health_get(s->health, n->addr, NULL);
	if (!health_host_shared_down(h, sched_now(s), n->until_ms + n->backoff_ms, n->failures,
	    n->backoff_ms, n->why))
		return;
	util_rfc3339(h->down_until_ms, when, sizeof(when));
	log_begin(&l, LOG_NOTICE, "cluster_host_down");
	log_kv(&l, "addr", n->addr);
	log_kv(&l, "node", n->node);
	log_kvu(&l, "failures", n->failures);
	log_kv(&l, "until", when);
	log_kv(&l, "error", n->why);
	log_end(&l);
}

/* Another node reached a host that was down. */
static void
sched_shared_on_host_up(void *arg, const char *node, const char *addr)
{
	struct sched *s = arg;
	struct health_host *h;

	if (s->magic != SCHED_MAGIC)
		fatalx("%s: bad scheduler", __func__);
	if (s->stopping || (h = health_find(s->health, addr)) == NULL || h->state != HEALTH_DOWN ||
	    h->probing)
		return;
	health_host_ok(h, sched_now(s));
	log_event(LOG_INFO, "cluster_host_up", "addr", addr, "node", node, NULL);
}

/* Another node ended a destination's outage: release what waits here. */
static void
sched_shared_on_dest_up(void *arg, const char *node, const char *dest)
{
	struct sched *s = arg;

	if (s->magic != SCHED_MAGIC)
		fatalx("%s: bad scheduler", __func__);
	if (s->stopping)
		return;
	if (sched_dest_release(s, dest))
		log_event(LOG_NOTICE, "cluster_destination_up", "dest", dest, "node", node, NULL);
}

void
sched_set_cluster(struct sched *s, struct cluster *cl)
{
	struct cluster_health_ops ops = {
		sched_shared_on_host_down, sched_shared_on_host_up, sched_shared_on_dest_up, s,
	};

	s->cluster = cl;
	if (cl != NULL)
		cluster_set_health(cl, &ops);
}
