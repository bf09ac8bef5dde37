/*
 * submit_shared.c - the submission server's counters shared with the other
 * nodes of a cluster (cluster/, issue #12): a login's messages and
 * recipients in its window (read at MAIL, added at the commit) and an
 * address's failed AUTH attempts (read at AUTH, added at each failure).
 *
 * Each read or addition goes to Redis, which counts atomically; its answer
 * is merged into the local counters (submit_limits.c), and the local
 * decision is then made as without a cluster.  While a session waits for
 * the answer it is in SUBMIT_S_SHARED (input paused) with lookup_pending set,
 * so it is not freed before the callback; cluster_count() answers within
 * CLUSTER_TIMEOUT_MS or says at once that it will not (degraded), and then
 * the local counters alone decide: Redis is never needed for mail to flow.
 * A message's addition is not waited for.  RCPT is checked against the
 * window read at MAIL (merged locally) plus this node's own additions.
 *
 * Owns nothing but the session's wait (shared_cont, shared_kind, shared_rc,
 * shared_args); never logs (cluster/ logs the link's state), never blocks.
 */
#include "submit/submit_int.h"

#include <string.h>

#include "cluster/cluster.h"
#include "common/util.h"

enum { SUBMIT_SHARED_LOGIN, SUBMIT_SHARED_AUTH_READ, SUBMIT_SHARED_AUTH_FAILED };

static const char *const submit_shared_login_fields[] = { "m", "r" };
static const char *const submit_shared_auth_fields[] = { "f" };

void
submit_set_cluster(struct submit *srv, struct cluster *cl)
{
	if (srv->magic != SUBMIT_MAGIC)
		fatalx("%s: bad submit", __func__);
	srv->cluster = cl;
}

static unsigned
submit_shared_uint(long long v)
{
	return v <= 0 ? 0 : v > (long long)UINT32_MAX ? UINT32_MAX : (unsigned)v;
}

/* Redis answered (c), or did not in time (NULL): merge, then go on. */
static void
submit_shared_answered(void *arg, const struct cluster_counts *c)
{
	struct submit_session *s = arg;
	void (*cont)(struct submit_session *) = s->shared_cont;
	struct submit_limits *l = s->srv->limits;
	uint64_t now = util_mono_ms();

	if (s->magic != SUBMIT_SESSION_MAGIC || !s->lookup_pending || cont == NULL)
		fatalx("%s: bad session", __func__);
	s->lookup_pending = false;
	s->shared_cont = NULL;
	submit_lock(s->srv);
	if (c != NULL) {
		switch (s->shared_kind) {
		case SUBMIT_SHARED_LOGIN:
			if (s->login != NULL)
				submit_limits_login_merge(l, s->login, now, submit_shared_uint(c->v[0]),
				    submit_shared_uint(c->v[1]), c->ttl_ms);
			break;
		case SUBMIT_SHARED_AUTH_READ:
			submit_limits_auth_merge(l, s->ip, now, submit_shared_uint(c->v[0]), c->ttl_ms);
			break;
		case SUBMIT_SHARED_AUTH_FAILED:
			/* this failure is counted locally next */
			submit_limits_auth_merge(l, s->ip, now, submit_shared_uint(c->v[0] - 1),
			    c->ttl_ms);
			break;
		}
	}
	submit_unlock(s->srv);
	if (s->io == NULL) {
		submit_session_close(s, NULL);  /* the client left: now it can be freed */
		return;
	}
	if (s->srv->shutting_down) {
		submit_session_shutdown(s);
		return;
	}
	submit_enter_state(s, SUBMIT_S_HELO);
	cont(s);
}

/* Ask; true when the session now waits for submit_shared_answered. */
static bool
submit_shared_ask(struct submit_session *s, int kind, const char *what, const char *name,
    const char *const *fields, const long long *incr, size_t n, uint64_t window,
    void (*cont)(struct submit_session *))
{
	if (s->srv->cluster == NULL || s->lookup_pending || s->io == NULL)
		return false;
	if (s->srv->front != NULL)      /* a shard: the front's link answers, degraded or not */
		submit_worker_count(s, what, name, fields, incr, n, window, submit_shared_answered);
	else if (cluster_count(s->srv->cluster, what, name, fields, incr, n, window,
	    submit_shared_answered, s) != 0)
		return false;           /* degraded: the local counters decide */
	s->lookup_pending = true;
	s->shared_kind = kind;
	s->shared_cont = cont;
	submit_enter_state(s, SUBMIT_S_SHARED);
	return true;
}

/*
 * Whether the login's window is counted at all: not without a login, nor
 * when neither login limit is set (the nodes of a cluster share one
 * configuration of limits, so nobody would read the count).
 */
static bool
submit_shared_login_counted(const struct submit_session *s)
{
	return s->login != NULL && (s->conf->submit.login_max_messages != 0 ||
	    s->conf->submit.login_max_recipients != 0);
}

bool
submit_shared_login_read(struct submit_session *s, void (*cont)(struct submit_session *))
{
	static const long long zero[2] = { 0, 0 };

	if (!submit_shared_login_counted(s))
		return false;
	return submit_shared_ask(s, SUBMIT_SHARED_LOGIN, "login", s->login,
	    submit_shared_login_fields, zero, 2, s->conf->submit.login_rate_window, cont);
}

void
submit_shared_login_add(struct submit_session *s)
{
	long long incr[2] = { 1, (long long)s->env.nrcpts };

	if (s->srv->cluster == NULL || !submit_shared_login_counted(s))
		return;
	if (s->srv->front != NULL) {
		submit_worker_count(s, "login", s->login, submit_shared_login_fields, incr, 2,
		    s->conf->submit.login_rate_window, NULL);
		return;
	}
	(void)cluster_count(s->srv->cluster, "login", s->login, submit_shared_login_fields, incr, 2,
	    s->conf->submit.login_rate_window, NULL, NULL);
}

bool
submit_shared_auth_read(struct submit_session *s, const char *args,
    void (*cont)(struct submit_session *))
{
	static const long long zero[1] = { 0 };

	if (s->conf->submit.auth_fail_limit == 0 && s->conf->submit.auth_fail_delay_after == 0)
		return false;
	buf_reset(&s->shared_args);
	buf_puts(&s->shared_args, args);
	return submit_shared_ask(s, SUBMIT_SHARED_AUTH_READ, "authip", s->ip,
	    submit_shared_auth_fields, zero, 1, s->conf->submit.auth_fail_window, cont);
}

bool
submit_shared_auth_failed(struct submit_session *s, int rc, void (*cont)(struct submit_session *))
{
	static const long long one[1] = { 1 };

	s->shared_rc = rc;
	return submit_shared_ask(s, SUBMIT_SHARED_AUTH_FAILED, "authip", s->ip,
	    submit_shared_auth_fields, one, 1, s->conf->submit.auth_fail_window, cont);
}
