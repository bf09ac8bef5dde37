/*
 * submit_slots.c - the sessions that hold a slot but have not authenticated
 * yet.  A submission server has no business with a client that does not
 * log in, so such sessions may fill at most unauthenticated_share percent of
 * max_connections, and when a new connection would find no slot (all
 * max_connections taken, or the unauthenticated ones at their share) one of
 * them is closed to make room, never an authenticated one (as postscreen
 * and OpenSMTPD keep pre-authentication sessions apart).
 *
 * Which one: the oldest session of the client address that holds the most
 * unauthenticated sessions; between addresses that hold as many, the oldest.
 * A flood from a few addresses (slow clients, or clients that reconnect as
 * soon as they are closed) so makes room out of its own sessions, and a
 * user from a new address, who holds one, goes last: plain "oldest first"
 * would close that user once enough reconnects had come after it.
 *
 * Owns the per-address entries (a common/htab table keyed by IP, each with
 * its sessions in age order); the sessions are submit_session.c's and are
 * only linked here (s->unauth_entry).  Never frees or closes a session
 * itself except through submit_session_close() in submit_slots_evict(), on
 * the session's own loop.  With submit.workers the shards share one table
 * under the front's lock (submit_lock()): make_room picks the victim and
 * frees its slot and count there; the victim's loop closes it (posted to it
 * when it is another shard's, submit_worker.c).
 */
#include "submit/submit_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/htab.h"
#include "common/log.h"
#include "common/util.h"

struct submit_slots_ip {
	struct htab_node node;
	struct submit_session_list sessions;    /* oldest first, via unauth_entry */
	size_t n;
	char key[];
};

struct submit_slots {
	struct htab ips;            /* struct submit_slots_ip by client address */
	size_t n;                   /* unauthenticated sessions in all */
	uint64_t next_seq;
};

struct submit_slots *
submit_slots_new(void)
{
	struct submit_slots *sl = xcalloc(1, sizeof(*sl));

	htab_init(&sl->ips, NULL);
	return sl;
}

void
submit_slots_free(struct submit_slots *sl)
{
	struct htab_iter it;
	struct htab_node *n;

	if (sl == NULL)
		return;
	HTAB_FOREACH(n, &sl->ips, &it)
		free(HTAB_ENTRY(n, struct submit_slots_ip, node));
	htab_free(&sl->ips);
	free(sl);
}

unsigned
submit_slots_unauth_max(unsigned max_connections, unsigned share)
{
	uint64_t n = (uint64_t)max_connections * share / 100;

	return n > 0 ? (unsigned)n : 1;
}

void
submit_slots_add(struct submit_slots *sl, struct submit_session *s)
{
	struct submit_slots_ip *e;
	struct htab_node *n;
	size_t len;

	if (s->unauth_listed)
		fatalx("%s: session %s listed twice", __func__, s->id);
	if ((n = htab_find(&sl->ips, s->ip)) != NULL) {
		e = HTAB_ENTRY(n, struct submit_slots_ip, node);
	} else {
		len = strlen(s->ip);
		e = xcalloc(1, sizeof(*e) + len + 1);
		memcpy(e->key, s->ip, len + 1);
		TAILQ_INIT(&e->sessions);
		htab_insert(&sl->ips, &e->node, e->key);
	}
	TAILQ_INSERT_TAIL(&e->sessions, s, unauth_entry);
	e->n++;
	sl->n++;
	s->unauth_ip = e;
	s->unauth_seq = ++sl->next_seq;
	s->unauth_listed = true;
}

void
submit_slots_remove(struct submit_slots *sl, struct submit_session *s)
{
	struct submit_slots_ip *e = s->unauth_ip;

	if (!s->unauth_listed)
		return;
	if (e == NULL || e->n == 0 || sl->n == 0)
		fatalx("%s: session %s badly listed", __func__, s->id);
	TAILQ_REMOVE(&e->sessions, s, unauth_entry);
	s->unauth_listed = false;
	s->unauth_ip = NULL;
	sl->n--;
	if (--e->n == 0) {
		htab_remove(&sl->ips, &e->node);
		free(e);
	}
}

size_t
submit_slots_unauth_count(const struct submit_slots *sl)
{
	return sl->n;
}

struct submit_session *
submit_slots_victim(const struct submit_slots *sl)
{
	const struct submit_slots_ip *best = NULL, *e;
	struct htab_iter it;
	struct htab_node *n;

	HTAB_FOREACH(n, &sl->ips, &it) {
		e = HTAB_ENTRY(n, struct submit_slots_ip, node);
		if (best == NULL || e->n > best->n || (e->n == best->n &&
		    TAILQ_FIRST(&e->sessions)->unauth_seq < TAILQ_FIRST(&best->sessions)->unauth_seq))
			best = e;
	}
	return best != NULL ? TAILQ_FIRST(&best->sessions) : NULL;
}

struct submit_session *
submit_slots_make_room(struct submit *srv, const char *ip, const char **reason, size_t *unauth)
{
	const struct conf *c = srv->conf;
	struct submit_session *v;
	unsigned total = submit_limits_conn_count(srv->limits, NULL);

	if (c->submit.max_connections_per_ip > 0 &&
	    submit_limits_conn_count(srv->limits, ip) >= c->submit.max_connections_per_ip)
		return NULL;
	if (c->submit.max_connections > 0 && total >= c->submit.max_connections)
		*reason = "max_connections";
	else if (srv->slots->n >= submit_slots_unauth_max(c->submit.max_connections,
	    c->submit.unauthenticated_share))
		*reason = "unauthenticated_share";
	else
		return NULL;
	if ((v = submit_slots_victim(srv->slots)) == NULL)
		return NULL;            /* all authenticated: the newcomer is refused */
	/* another shard's victim keeps its socket until its loop runs the
	 * eviction: at most SUBMIT_EVICTING_MAX of them on their way */
	if (v->srv != srv && srv->front != NULL && srv->front->nevicting >= SUBMIT_EVICTING_MAX)
		return NULL;
	*unauth = srv->slots->n;
	/* its slot is free at once, whichever loop closes it */
	submit_slots_remove(srv->slots, v);
	if (v->counted) {
		submit_limits_conn_close(srv->limits, v->ip);
		v->counted = false;
	}
	return v;
}

void
submit_slots_evict(struct submit_session *v, const char *reason, size_t unauth)
{
	char text[512];
	struct log_line l;

	if (v->io == NULL)
		return;                 /* closed meanwhile */
	log_begin(&l, LOG_NOTICE, "session_evicted");
	log_kv(&l, "session", v->id);
	log_kv(&l, "client", v->ip);
	log_kv(&l, "reason", reason);
	log_kvu(&l, "age_ms", util_mono_ms() - v->born_ms);
	log_kvu(&l, "unauthenticated", unauth);
	log_end(&l);
	snprintf(text, sizeof(text), "421 4.7.0 %s Error: too many connections, "
	    "try again later", v->conf->hostname);
	/* mid-handshake nothing can be said in plaintext; its slot is gone,
	 * so its socket goes before this returns */
	submit_session_close(v, v->deadline == SUBMIT_DL_TLS ? NULL : text);
}
