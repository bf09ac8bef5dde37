/*
 * submit_auth.c - SMTP AUTH (RFC 4954) through the Cyrus SASL server
 * library: mechanisms from submit.sasl_mechanisms that the installed plugins
 * offer, realm submit.sasl_realm, and the password check either the sasldb
 * file submit.sasl_db or whatever submit.sasl_options configure (saslauthd,
 * an auxprop plugin such as sql or ldapdb).  Every SASL option comes from our
 * SASL_CB_GETOPT callback, so nothing under /etc/sasl2 is needed.  Failed
 * attempts are counted per client IP (submit_limits.c): replies slowed with
 * the session timer, then refused; and per tried login from any address: a
 * blocked login is answered 454 before its password is checked (the same
 * for a name that does not exist), except from an address it recently
 * authenticated from.  A backend that is down (454) is not a failed attempt.
 * With a cluster, the per-IP failures are shared (submit_shared.c): read
 * before AUTH is taken, counted in Redis before a failure is answered.
 *
 * saslauthd cannot tell its LDAP server being down from a wrong password
 * (both are SASL_BADAUTH).  When pwcheck_method names saslauthd and
 * submit.senders_ldap is set (in practice the same directory), a
 * SASL_BADAUTH is not answered at once: the directory is asked about the
 * tried login (directory_lookup_fresh, off the loop; the session stays in
 * SUBMIT_S_AUTH_WAIT with s->lookup_pending, still bounded by
 * submit.auth_timeout since the step was queued).  The directory answering,
 * the login found or not, means the password was wrong: 535 and counted.
 * The directory unavailable is an outage: 454, logged auth_error, not
 * counted.
 * relayctl auth list / unblock read and clear both counters here.
 *
 * sasl_server_start/step may block (saslauthd, LDAP, SQL), so each runs on
 * the libuv thread pool, one at a time per session and at most
 * SUBMIT_AUTH_MAX_RUNNING at once; the session waits in SUBMIT_S_AUTH_WAIT
 * with its input paused.  A step that takes longer than submit.auth_timeout
 * is answered 454 and logged auth_failed reason=timeout, but its thread runs
 * on until libsasl returns (nothing can interrupt it): meanwhile the
 * exchange, its sasl_conn_t and its conf reference stay with the step, and
 * the session may not AUTH again.  A session that closes mid-step lets the
 * exchange go; the step's completion frees it.
 *
 * Owns each exchange (struct submit_auth_ctx: the sasl_conn_t, the callback
 * list libsasl keeps a pointer to, a conf reference for SASL_CB_GETOPT) and
 * libsasl's process-wide server state (init once, done with the last user).
 * It must never log or keep a password, never offer or accept AUTH without
 * TLS, and never block the loop: delays go through
 * submit_session_reply_later(), checks through uv_queue_work().
 */
#include "submit/submit_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/codec.h"
#include "common/log.h"
#include "common/util.h"

/* libsasl stores every callback as int (*)(void); the detour silences -Wcast-function-type. */
#define SUBMIT_SASL_CB(f) ((int (*)(void))(void (*)(void))(f))

/* One AUTH exchange: its sasl_conn_t and the step on the thread pool. */
struct submit_auth_ctx {
	uv_work_t req;
	TAILQ_ENTRY(submit_auth_ctx) entry;     /* in srv->auth_waiting */
	struct submit *srv;
	struct submit_session *s;       /* NULL once the session let go */
	struct conf *conf;              /* a reference: SASL_CB_GETOPT's context */
	sasl_conn_t *sasl;
	sasl_callback_t cbs[3];         /* libsasl keeps a pointer to this */
	bool waiting;                   /* in srv->auth_waiting */
	bool running;                   /* on the thread pool */
	bool timed_out;                 /* answered 454; the step still runs */
	bool start;                     /* sasl_server_start, not _step */
	bool probing;                   /* SASL_BADAUTH: the directory is being asked */
	uint64_t queued;                /* util_mono_ms() when the step was queued */
	bool has_in;                    /* start: an initial response was given */
	char mech[32];                  /* start: the mechanism */
	struct buf in;                  /* the client's decoded response */
	int rc;                         /* what the step returned */
	struct buf out;                 /* and its challenge or success data */
};

/*
 * libsasl's server side is process-wide; so is what its global callbacks
 * read: a conf reference (the plugins read their settings at init).  On a
 * reload the old one is kept until no step runs, as a step's thread may ask.
 */
static struct {
	int refs;
	struct conf *conf;
	struct conf **retired;
	size_t nretired;
	unsigned running;               /* steps on the thread pool, all servers */
} submit_sasl;
/* submit_sasl's conf, retired and running: the shards' loops and the
 * thread pool's steps reach them (submit.workers) */
static pthread_mutex_t submit_sasl_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *
submit_auth_option(const struct conf *c, const char *option)
{
	if (c == NULL)
		return NULL;
	if (strcmp(option, "mech_list") == 0)
		return c->submit.sasl_mechanisms ? c->submit.sasl_mechanisms : "";
	if (c->submit.nsasl_options > 0)        /* exactly what the admin wrote */
		return conf_sasl_option(c, option);
	/* submit.sasl_db, or nothing: the sasldb file */
	if (strcmp(option, "sasldb_path") == 0)
		return c->submit.sasl_db;
	if (strcmp(option, "pwcheck_method") == 0)
		return "auxprop";
	if (strcmp(option, "auxprop_plugin") == 0)
		return "sasldb";
	return NULL;
}

/*
 * SASL_CB_GETOPT: context is an exchange's struct conf, or NULL (global).
 * May run on a thread-pool thread: it only reads an immutable conf.
 */
static int
submit_auth_getopt(void *context, const char *plugin, const char *option,
    const char **result, unsigned *len)
{
	const struct conf *c = context;
	const char *v;

	if (c == NULL) {
		/* kept until no step runs (retired): safe to read after the unlock */
		pthread_mutex_lock(&submit_sasl_lock);
		c = submit_sasl.conf;
		pthread_mutex_unlock(&submit_sasl_lock);
	}

	if ((v = submit_auth_option(c, option)) == NULL)
		return SASL_FAIL;
	*result = v;
	if (len != NULL)
		*len = (unsigned)strlen(v);
	return SASL_OK;
}

static int
submit_auth_log(void *context, int level, const char *message)
{
	if (level >= SASL_LOG_TRACE)    /* SASL_LOG_PASS may carry passwords */
		return SASL_OK;
	log_event(level <= SASL_LOG_ERR ? LOG_WARNING : LOG_DEBUG, "sasl",
	    "message", message, NULL);
	return SASL_OK;
}

static const sasl_callback_t submit_auth_global_cbs[] = {
	{ SASL_CB_GETOPT, SUBMIT_SASL_CB(submit_auth_getopt), NULL },
	{ SASL_CB_LOG, SUBMIT_SASL_CB(submit_auth_log), NULL },
	{ SASL_CB_LIST_END, NULL, NULL },
};

/* Real mutexes for libsasl's shared state: steps run on several threads. */
static void *
submit_auth_mutex_alloc(void)
{
	pthread_mutex_t *m = xmalloc(sizeof(*m));

	pthread_mutex_init(m, NULL);
	return m;
}

static int
submit_auth_mutex_lock(void *m)
{
	return pthread_mutex_lock(m) == 0 ? SASL_OK : SASL_FAIL;
}

static int
submit_auth_mutex_unlock(void *m)
{
	return pthread_mutex_unlock(m) == 0 ? SASL_OK : SASL_FAIL;
}

static void
submit_auth_mutex_free(void *m)
{
	pthread_mutex_destroy(m);
	free(m);
}

/* Drop the global conf references no running step can still read. */
static void
submit_auth_drop_retired(void)
{
	size_t i;

	pthread_mutex_lock(&submit_sasl_lock);
	if (submit_sasl.running > 0) {
		pthread_mutex_unlock(&submit_sasl_lock);
		return;
	}
	for (i = 0; i < submit_sasl.nretired; i++)
		conf_unref(submit_sasl.retired[i]);
	free(submit_sasl.retired);
	submit_sasl.retired = NULL;
	submit_sasl.nretired = 0;
	pthread_mutex_unlock(&submit_sasl_lock);
}

static void
submit_auth_set_global(struct conf *c)
{
	pthread_mutex_lock(&submit_sasl_lock);
	if (submit_sasl.conf != NULL) {
		submit_sasl.retired = xrealloc(submit_sasl.retired,
		    (submit_sasl.nretired + 1) * sizeof(*submit_sasl.retired));
		submit_sasl.retired[submit_sasl.nretired++] = submit_sasl.conf;
	}
	submit_sasl.conf = conf_ref(c);
	pthread_mutex_unlock(&submit_sasl_lock);
	submit_auth_drop_retired();
}

int
submit_auth_init(struct submit *srv, struct buf *err)
{
	int rc;

	if (submit_sasl.refs++ == 0) {
		submit_auth_set_global(srv->conf);
		sasl_set_mutex(submit_auth_mutex_alloc, submit_auth_mutex_lock,
		    submit_auth_mutex_unlock, submit_auth_mutex_free);
		if ((rc = sasl_server_init(submit_auth_global_cbs, "relayd")) != SASL_OK) {
			buf_printf(err, "SASL: cannot initialise: %s\n", sasl_errstring(rc, NULL, NULL));
			submit_sasl.refs--;
			submit_auth_drop_retired();
			conf_unref(submit_sasl.conf);
			submit_sasl.conf = NULL;
			return -1;
		}
	}
	submit_auth_mechs(srv, srv->conf);
	return 0;
}

void
submit_auth_reload(struct submit *srv)
{
	submit_auth_set_global(srv->conf);
	submit_auth_mechs(srv, srv->conf);
}

void
submit_auth_done(void)
{
	if (submit_sasl.refs <= 0 || --submit_sasl.refs > 0)
		return;
	pthread_mutex_lock(&submit_sasl_lock);
	if (submit_sasl.running > 0) {
		pthread_mutex_unlock(&submit_sasl_lock);
		return;         /* abandoned steps are still inside libsasl: leave it be */
	}
	pthread_mutex_unlock(&submit_sasl_lock);
	sasl_server_done();
	submit_auth_drop_retired();
	conf_unref(submit_sasl.conf);
	submit_sasl.conf = NULL;
}

void
submit_auth_mechs(struct submit *srv, const struct conf *c)
{
	const char **avail = sasl_global_listmech();
	const char *p = c->submit.sasl_mechanisms ? c->submit.sasl_mechanisms : "";
	char word[64];
	size_t n, i;

	buf_reset(&srv->mechs);
	while (*p != '\0') {
		n = strcspn(p, " \t,");
		if (n > 0 && n < sizeof(word)) {
			for (i = 0; i < n; i++)
				word[i] = (p[i] >= 'a' && p[i] <= 'z') ? (char)(p[i] - 32) : p[i];
			word[n] = '\0';
			for (i = 0; avail != NULL && avail[i] != NULL; i++)
				if (strcmp(avail[i], word) == 0)
					break;
			if (avail != NULL && avail[i] != NULL) {
				if (srv->mechs.len > 0)
					buf_putc(&srv->mechs, ' ');
				buf_puts(&srv->mechs, word);
			} else {
				log_event(LOG_WARNING, "sasl_mechanism_unavailable", "mech", word, NULL);
			}
		}
		p += n;
		p += strspn(p, " \t,");
	}
}

/* Is mech (upper-case) one of srv->mechs? */
static bool
submit_auth_offered(const struct submit *srv, const char *mech)
{
	const char *p = buf_cstr(&srv->mechs);
	size_t n = strlen(mech);

	while ((p = strstr(p, mech)) != NULL) {
		if ((p == srv->mechs.data || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
			return true;
		p += n;
	}
	return false;
}

static void
submit_auth_ctx_free(struct submit_auth_ctx *ctx)
{
	if (ctx->sasl != NULL)
		sasl_dispose(&ctx->sasl);
	conf_unref(ctx->conf);
	buf_free(&ctx->in);
	buf_free(&ctx->out);
	free(ctx);
}

void
submit_auth_reset(struct submit_session *s)
{
	struct submit_auth_ctx *ctx = s->auth;

	s->auth = NULL;
	if (ctx != NULL) {
		if (ctx->waiting) {
			TAILQ_REMOVE(&ctx->srv->auth_waiting, ctx, entry);
			ctx->waiting = false;
		}
		if (ctx->running)
			ctx->s = NULL;          /* the step's completion frees it */
		else
			submit_auth_ctx_free(ctx);
	}
	s->auth_step = 0;
	s->auth_final = false;
	s->mech[0] = '\0';
	buf_reset(&s->auth_user);
}

/*
 * Remember who the client claims to be, for the auth_failed log line; only
 * the parts of each mechanism's responses that name the user are read.
 */
static void
submit_auth_note_user(struct submit_session *s, const char *p, size_t len)
{
	const char *a, *b;
	size_t n = 0;

	if (s->auth_user.len > 0 || len == 0)
		return;
	if (strcmp(s->mech, "PLAIN") == 0) {            /* authzid NUL authcid NUL passwd */
		if ((a = memchr(p, '\0', len)) == NULL)
			return;
		a++;
		if ((b = memchr(a, '\0', len - (size_t)(a - p))) == NULL)
			return;
		n = (size_t)(b - a);
	} else if (strcmp(s->mech, "LOGIN") == 0) {     /* first response: the user */
		if (s->auth_step != 0)
			return;
		a = p;
		n = len;
	} else if (strcmp(s->mech, "CRAM-MD5") == 0) {  /* "user digest" */
		a = p;
		for (n = len; n > 0 && p[n - 1] != ' '; n--)
			;
		if (n > 0)
			n--;
	} else if (strncmp(s->mech, "SCRAM-", 6) == 0) { /* "n,,n=user,r=..." */
		for (a = p; a + 2 < p + len && !(a[0] == 'n' && a[1] == '=' && (a == p || a[-1] == ','));
		    a++)
			;
		if (a + 2 >= p + len)
			return;
		a += 2;
		while (a + n < p + len && a[n] != ',')
			n++;
	} else {
		return;
	}
	if (n > 255)
		n = 255;
	buf_append(&s->auth_user, a, n);
}

/* The length of user (n octets) without "@realm" when realm is ours:
 * "alice@relay.test" in realm relay.test is the login "alice". */
static size_t
submit_auth_unrealm(const char *realm, const char *user, size_t n)
{
	size_t rl = realm ? strlen(realm) : 0;

	if (rl > 0 && n > rl + 1 && user[n - rl - 1] == '@' &&
	    util_strncasecmp(user + n - rl, realm, rl) == 0)
		n -= rl + 1;
	return n;
}

/* isspace() in the C locale, as Cyrus SASL's canonicaliser uses it. */
static bool
submit_auth_space(char c)
{
	return c == ' ' || (c >= '\t' && c <= '\r');
}

/*
 * The name a login is counted and blocked under: user without "@realm",
 * folded to lower case (so that "Alice" and "alice" are one target), at
 * most 255 octets.  Leading and trailing white space go first, as Cyrus
 * SASL's canonicaliser (lib/canonusr.c) strips them before the password
 * check: " alice\t" is alice, and must not be a fresh counter.
 */
static void
submit_auth_login_key(const char *realm, const char *user, size_t n, struct buf *out)
{
	size_t i;

	while (n > 0 && submit_auth_space(user[0])) {
		user++;
		n--;
	}
	while (n > 0 && submit_auth_space(user[n - 1]))
		n--;
	n = submit_auth_unrealm(realm, user, n);
	if (n > 255)
		n = 255;
	buf_reset(out);
	for (i = 0; i < n; i++)
		buf_putc(out, (user[i] >= 'A' && user[i] <= 'Z') ? (char)(user[i] + 32) : user[i]);
}

/*
 * Is the login the client named blocked for its address?  Then the
 * exchange ends with 454 before any password is checked, and true.
 */
static bool
submit_auth_login_held(struct submit_session *s)
{
	uint64_t now = util_mono_ms(), until;
	char when[32];
	struct log_line l;
	bool blocked;

	if (s->auth_user.len == 0)
		return false;
	submit_auth_login_key(s->conf->submit.sasl_realm, s->auth_user.data, s->auth_user.len,
	    &s->tmp);
	submit_lock(s->srv);
	blocked = submit_limits_login_blocked(s->srv->limits, buf_cstr(&s->tmp), s->ip, now, &until);
	submit_unlock(s->srv);
	if (!blocked)
		return false;
	util_rfc3339(util_now_ms() + (until - now), when, sizeof(when));
	log_begin(&l, LOG_NOTICE, "auth_login_refused");
	log_kv(&l, "user", buf_cstr(&s->tmp));
	log_kv(&l, "client", s->ip);
	log_kv(&l, "session", s->id);
	log_kv(&l, "until", when);
	log_end(&l);
	submit_auth_reset(s);
	submit_enter_state(s, SUBMIT_S_HELO);
	submit_session_reply(s, "454 4.7.0 Temporary authentication failure");
	return true;
}

static void
submit_auth_success(struct submit_session *s)
{
	const char *user = NULL, *realm = s->conf->submit.sasl_realm;
	struct log_line l;
	size_t n;

	if (sasl_getprop(s->auth->sasl, SASL_USERNAME, (const void **)&user) != SASL_OK ||
	    user == NULL) {
		submit_auth_reset(s);
		submit_enter_state(s, SUBMIT_S_HELO);
		submit_session_reply(s, "454 4.7.0 Temporary authentication failure");
		return;
	}
	n = submit_auth_unrealm(realm, user, strlen(user));
	free(s->login);
	s->login = xstrndup(user, n);
	submit_auth_login_key(realm, s->login, n, &s->tmp);
	submit_lock(s->srv);
	submit_limits_login_succeeded(s->srv->limits, buf_cstr(&s->tmp), s->ip, util_mono_ms());
	submit_unlock(s->srv);
	log_begin(&l, LOG_INFO, "authenticated");
	log_kv(&l, "session", s->id);
	log_kv(&l, "user", s->login);
	log_kv(&l, "client", s->ip);
	log_kv(&l, "mech", s->mech);
	log_end(&l);
	submit_auth_reset(s);
	submit_enter_state(s, SUBMIT_S_HELO);
	submit_session_reply(s, "235 2.7.0 Authentication successful");
}

/* The backend could not check (error says why): 454, not a failed attempt. */
static void
submit_auth_unavailable(struct submit_session *s, const char *error)
{
	submit_enter_state(s, SUBMIT_S_HELO);
	log_event(LOG_WARNING, "auth_error", "session", s->id, "client", s->ip,
	    "mech", s->mech, "error", error, NULL);
	submit_auth_reset(s);
	submit_session_reply(s, "454 4.7.0 Temporary authentication failure");
}

/* Fill s->auth_user from SASL when the responses did not name the user. */
static void
submit_auth_tried_user(struct submit_session *s)
{
	const char *user = NULL;

	if (s->auth_user.len == 0 && s->auth != NULL && s->auth->sasl != NULL &&
	    sasl_getprop(s->auth->sasl, SASL_USERNAME, (const void **)&user) == SASL_OK &&
	    user != NULL)
		buf_puts(&s->auth_user, user);
}

/* A failed attempt, counted (the cluster's count merged in already, if any). */
static void
submit_auth_counted(struct submit_session *s, int rc)
{
	struct submit *srv = s->srv;
	struct log_line l;
	uint64_t delay, now = util_mono_ms(), block = 0;
	bool refused = false;
	char when[32];

	submit_enter_state(s, SUBMIT_S_HELO);
	if (s->auth_user.len > 0)
		submit_auth_login_key(s->conf->submit.sasl_realm, s->auth_user.data,
		    s->auth_user.len, &s->tmp);
	submit_lock(srv);
	delay = submit_limits_auth_failed(srv->limits, s->ip, now, &refused);
	if (s->auth_user.len > 0)
		block = submit_limits_login_failed(srv->limits, buf_cstr(&s->tmp), now);
	submit_unlock(srv);
	log_begin(&l, LOG_NOTICE, "auth_failed");
	log_kv(&l, "user", buf_cstr(&s->auth_user));
	log_kv(&l, "client", s->ip);
	log_kv(&l, "mech", s->mech);
	log_kv(&l, "session", s->id);
	log_kv(&l, "reason", sasl_errstring(rc, NULL, NULL));
	log_kvu(&l, "delay_ms", delay);
	log_end(&l);
	if (srv->front != NULL)
		submit_worker_stat(srv, 0, 1, NULL);
	else
		srv->stats->auth_failed++;
	submit_auth_reset(s);
	if (refused)
		log_event(LOG_NOTICE, "auth_blocked", "client", s->ip, "session", s->id, NULL);
	if (block > 0) {
		util_rfc3339(util_now_ms() + block, when, sizeof(when));
		log_begin(&l, LOG_NOTICE, "auth_login_blocked");
		log_kv(&l, "user", buf_cstr(&s->tmp));
		log_kv(&l, "client", s->ip);
		log_kv(&l, "session", s->id);
		log_kvu(&l, "block_s", (block + 999) / 1000);
		log_kv(&l, "until", when);
		log_end(&l);
	}
	submit_session_reply_later(s, delay, false, "535 5.7.8 Error: authentication failed");
}

static void
submit_auth_counted_shared(struct submit_session *s)
{
	submit_auth_counted(s, s->shared_rc);
}

/* What SASL said was not a success: unavailable (454), or a failed attempt. */
static void
submit_auth_failure(struct submit_session *s, int rc)
{
	submit_enter_state(s, SUBMIT_S_HELO);
	if (rc == SASL_TRYAGAIN || rc == SASL_FAIL || rc == SASL_NOMEM || rc == SASL_UNAVAIL) {
		submit_auth_unavailable(s, sasl_errstring(rc, NULL, NULL));
		return;
	}
	submit_auth_tried_user(s);
	if (submit_shared_auth_failed(s, rc, submit_auth_counted_shared))
		return;                 /* counted in Redis first (at most the cluster's timeout) */
	submit_auth_counted(s, rc);
}

/*
 * May a SASL_BADAUTH be an outage?  Yes with saslauthd (pwcheck_method
 * names it, alone or in a list) when the directory can be asked.
 */
static bool
submit_auth_ambiguous(const struct submit_session *s)
{
	const char *p = conf_sasl_option(s->conf, "pwcheck_method");
	size_t n;

	if (s->srv->directory == NULL || s->srv->conf->submit.senders_ldap.uri == NULL)
		return false;
	while (p != NULL && *p != '\0') {
		p += strspn(p, " \t,");
		n = strcspn(p, " \t,");
		if (n == 9 && strncmp(p, "saslauthd", 9) == 0)
			return true;
		p += n;
	}
	return false;
}

/* The directory's answer to the probe: up means a wrong password. */
static void
submit_auth_probed(void *arg, enum directory_status st, struct directory_owned *o)
{
	struct submit_session *s = arg;

	(void)o;
	if (s->magic != SUBMIT_SESSION_MAGIC || !s->lookup_pending)
		fatalx("%s: bad session", __func__);
	s->lookup_pending = false;
	if (s->io == NULL) {
		submit_session_close(s, NULL);  /* the client left: now it can be freed */
		return;
	}
	if (s->srv->shutting_down) {
		submit_session_shutdown(s);
		return;
	}
	if (s->auth == NULL || !s->auth->probing)
		return;                 /* timed out meanwhile: answered already */
	s->auth->probing = false;
	uv_timer_stop(&s->timer);
	if (st == DIRECTORY_OK)
		submit_auth_failure(s, SASL_BADAUTH);
	else
		submit_auth_unavailable(s, "directory unavailable");
}

/*
 * SASL_BADAUTH from saslauthd: ask the directory about the tried login
 * before answering, with what is left of submit.auth_timeout.
 */
static void
submit_auth_probe(struct submit_session *s)
{
	uint64_t now = util_mono_ms(), end = s->auth->queued + s->conf->submit.auth_timeout;
	struct buf login = BUF_INIT;

	submit_auth_tried_user(s);
	if (s->auth_user.len == 0 || s->lookup_pending) {
		submit_auth_failure(s, SASL_BADAUTH);
		return;
	}
	buf_append(&login, s->auth_user.data, submit_auth_unrealm(s->conf->submit.sasl_realm,
	    s->auth_user.data, s->auth_user.len));
	s->auth->probing = true;
	s->lookup_pending = true;
	submit_session_timer(s, end > now ? end - now : 1);
	if (s->srv->front != NULL)
		submit_worker_lookup(s, buf_cstr(&login), true, submit_auth_probed);
	else
		directory_lookup_fresh(s->srv->directory, buf_cstr(&login), submit_auth_probed, s);
	buf_free(&login);
}

/* What sasl_server_start/step said. */
static void
submit_auth_result(struct submit_session *s, int rc, const char *out, unsigned outlen)
{
	switch (rc) {
	case SASL_OK:
		if (outlen == 0) {
			submit_auth_success(s);
			break;
		}
		/* success data (SCRAM's server-final) goes in a 334; RFC 4954 4 */
		s->auth_final = true;
		/* FALLTHROUGH */
	case SASL_CONTINUE:
		buf_reset(&s->tmp);
		codec_base64_encode(&s->tmp, out, outlen);
		if (s->state != SUBMIT_S_AUTH)
			submit_enter_state(s, SUBMIT_S_AUTH);
		submit_session_reply(s, "334 %s", buf_cstr(&s->tmp));
		break;
	case SASL_BADPROT:
		submit_auth_reset(s);
		submit_enter_state(s, SUBMIT_S_HELO);
		submit_session_reply(s, "501 5.5.2 Error: authentication protocol error");
		break;
	case SASL_NOMECH:
		submit_auth_reset(s);
		submit_enter_state(s, SUBMIT_S_HELO);
		submit_session_reply(s, "504 5.5.4 Unrecognized authentication type");
		break;
	case SASL_BADAUTH:
		if (submit_auth_ambiguous(s))
			submit_auth_probe(s);
		else
			submit_auth_failure(s, rc);
		break;
	default:
		submit_auth_failure(s, rc);
		break;
	}
}

/*
 * A new exchange for the session: its sasl_conn_t with the callbacks and the
 * conf it reads.  0, or -1 (nothing is left behind).
 */
static int
submit_auth_conn(struct submit_session *s)
{
	struct submit_auth_ctx *ctx = xcalloc(1, sizeof(*ctx));
	sasl_security_properties_t props;
	sasl_ssf_t ssf = (sasl_ssf_t)io_tls_cipher_bits(s->io);
	char remote[96];

	ctx->srv = s->srv;
	ctx->s = s;
	ctx->conf = conf_ref(s->conf);
	ctx->req.data = ctx;
	ctx->cbs[0] = (sasl_callback_t){ SASL_CB_GETOPT, SUBMIT_SASL_CB(submit_auth_getopt), ctx->conf };
	ctx->cbs[1] = (sasl_callback_t){ SASL_CB_LOG, SUBMIT_SASL_CB(submit_auth_log), NULL };
	ctx->cbs[2] = (sasl_callback_t){ SASL_CB_LIST_END, NULL, NULL };
	snprintf(remote, sizeof(remote), "%s;%d", s->ip, s->port);
	if (sasl_server_new("smtp", s->conf->hostname, s->conf->submit.sasl_realm, NULL, remote,
	    ctx->cbs, 0, &ctx->sasl) != SASL_OK) {
		ctx->sasl = NULL;
		submit_auth_ctx_free(ctx);
		return -1;
	}
	memset(&props, 0, sizeof(props));
	props.min_ssf = 0;
	props.max_ssf = 0;              /* TLS protects the session: no SASL layer */
	props.maxbufsize = 0;
	props.security_flags = SASL_SEC_NOANONYMOUS;
	if (sasl_setprop(ctx->sasl, SASL_SEC_PROPS, &props) != SASL_OK ||
	    sasl_setprop(ctx->sasl, SASL_SSF_EXTERNAL, &ssf) != SASL_OK) {
		submit_auth_ctx_free(ctx);
		return -1;
	}
	s->auth = ctx;
	return 0;
}

/* On a thread-pool thread: the step that may block.  Touches only ctx. */
static void
submit_auth_work(uv_work_t *req)
{
	struct submit_auth_ctx *ctx = req->data;
	const char *out = NULL;
	unsigned outlen = 0;

	if (ctx->start)
		ctx->rc = sasl_server_start(ctx->sasl, ctx->mech, ctx->has_in ?
		    buf_cstr(&ctx->in) : NULL, (unsigned)ctx->in.len, &out, &outlen);
	else
		ctx->rc = sasl_server_step(ctx->sasl, buf_cstr(&ctx->in),
		    (unsigned)ctx->in.len, &out, &outlen);
	buf_reset(&ctx->out);
	if (out != NULL && outlen > 0)
		buf_append(&ctx->out, out, outlen);
}

static void submit_auth_after_work(uv_work_t *req, int status);

static void
submit_auth_stop_closed(uv_handle_t *h)
{
	struct submit *srv = h->data;

	srv->auth_stop_open = false;
	submit_server_session_gone(srv);
}

/* The shutdown's wait for running steps is over: they are left to run. */
static void
submit_auth_stop_expired(uv_timer_t *t)
{
	struct submit *srv = t->data;
	struct log_line l;

	srv->auth_abandoned = srv->auth_running;
	log_begin(&l, LOG_WARNING, "auth_abandoned");
	log_kvu(&l, "steps", srv->auth_running);
	log_end(&l);
	uv_close((uv_handle_t *)&srv->auth_stop, submit_auth_stop_closed);
}

void
submit_auth_shutdown(struct submit *srv)
{
	if (!TAILQ_EMPTY(&srv->auth_waiting))
		fatalx("%s: a step waits for a thread after the sessions closed", __func__);
	if (srv->auth_running == 0 || srv->auth_stop_open)
		return;
	uv_timer_init(srv->loop, &srv->auth_stop);
	srv->auth_stop.data = srv;
	srv->auth_stop_open = true;
	uv_timer_start(&srv->auth_stop, submit_auth_stop_expired, SUBMIT_AUTH_STOP_MS, 0);
}

/* Start waiting steps while there are threads for them. */
static void
submit_auth_run_next(struct submit *srv)
{
	struct submit_auth_ctx *ctx;
	int rc;

	while (srv->auth_running < SUBMIT_AUTH_MAX_RUNNING &&
	    (ctx = TAILQ_FIRST(&srv->auth_waiting)) != NULL) {
		TAILQ_REMOVE(&srv->auth_waiting, ctx, entry);
		ctx->waiting = false;
		/* counted before the step can read the global conf */
		pthread_mutex_lock(&submit_sasl_lock);
		submit_sasl.running++;
		pthread_mutex_unlock(&submit_sasl_lock);
		if ((rc = uv_queue_work(srv->loop, &ctx->req, submit_auth_work,
		    submit_auth_after_work)) != 0) {
			pthread_mutex_lock(&submit_sasl_lock);
			submit_sasl.running--;
			pthread_mutex_unlock(&submit_sasl_lock);
			ctx->rc = SASL_FAIL;    /* answered as a backend failure */
			log_event(LOG_ERR, "auth_error", "session", ctx->s->id, "error",
			    uv_strerror(rc), NULL);
			uv_timer_stop(&ctx->s->timer);
			submit_auth_result(ctx->s, SASL_FAIL, NULL, 0);
			continue;
		}
		ctx->running = true;
		srv->auth_running++;
	}
}

/* Hand the exchange's next step (ctx->in) to the thread pool. */
static void
submit_auth_queue(struct submit_session *s, bool start)
{
	struct submit_auth_ctx *ctx = s->auth;

	ctx->start = start;
	ctx->queued = util_mono_ms();
	submit_enter_state(s, SUBMIT_S_AUTH_WAIT);
	submit_session_timer(s, s->conf->submit.auth_timeout);
	TAILQ_INSERT_TAIL(&s->srv->auth_waiting, ctx, entry);
	ctx->waiting = true;
	submit_auth_run_next(s->srv);
}

static void
submit_auth_after_work(uv_work_t *req, int status)
{
	struct submit_auth_ctx *ctx = req->data;
	struct submit *srv = ctx->srv;
	struct submit_session *s = ctx->s;

	ctx->running = false;
	srv->auth_running--;
	pthread_mutex_lock(&submit_sasl_lock);
	submit_sasl.running--;
	pthread_mutex_unlock(&submit_sasl_lock);
	if (s == NULL || ctx->timed_out) {
		/* answered already, or nobody to answer: the exchange ends here */
		if (s != NULL && s->auth == ctx)
			s->auth = NULL;
		submit_auth_ctx_free(ctx);
	} else {
		if (s->magic != SUBMIT_SESSION_MAGIC || s->auth != ctx)
			fatalx("%s: bad session", __func__);
		uv_timer_stop(&s->timer);
		submit_auth_result(s, status == 0 ? ctx->rc : SASL_FAIL, ctx->out.data,
		    (unsigned)ctx->out.len);
	}
	submit_auth_drop_retired();
	submit_auth_run_next(srv);
	if (srv->auth_running == 0 && srv->auth_stop_open &&
	    !uv_is_closing((uv_handle_t *)&srv->auth_stop))
		uv_close((uv_handle_t *)&srv->auth_stop, submit_auth_stop_closed);
}

void
submit_auth_timeout(struct submit_session *s)
{
	struct submit_auth_ctx *ctx = s->auth;
	struct log_line l;

	if (ctx == NULL)
		fatalx("%s: no exchange", __func__);
	log_begin(&l, LOG_NOTICE, "auth_failed");
	log_kv(&l, "user", buf_cstr(&s->auth_user));
	log_kv(&l, "client", s->ip);
	log_kv(&l, "mech", s->mech);
	log_kv(&l, "session", s->id);
	log_kv(&l, "reason", "timeout");
	log_end(&l);
	if (ctx->running) {
		ctx->timed_out = true;  /* the step keeps ctx until libsasl returns */
		s->auth = ctx;          /* ... and blocks a new AUTH meanwhile */
		s->auth_step = 0;
		s->auth_final = false;
		buf_reset(&s->auth_user);
	} else {
		submit_auth_reset(s);   /* still waiting for a thread: just drop it */
	}
	submit_enter_state(s, SUBMIT_S_HELO);
	submit_session_reply(s, "454 4.7.0 Temporary authentication failure");
}

static void submit_auth_begin(struct submit_session *s, char *args);

static void
submit_auth_resume(struct submit_session *s)
{
	submit_auth_begin(s, s->shared_args.data);
	explicit_bzero(s->shared_args.data, s->shared_args.len);   /* an initial response */
	buf_reset(&s->shared_args);
}

void
submit_auth_command(struct submit_session *s, char *args)
{
	/* the address's failures as the cluster counted them, then the limits decide */
	if (s->auth == NULL && submit_shared_auth_read(s, args, submit_auth_resume))
		return;
	submit_auth_begin(s, args);
}

static void
submit_auth_begin(struct submit_session *s, char *args)
{
	struct submit *srv = s->srv;
	char *init, text[512];
	size_t i, n;
	bool allowed;

	submit_lock(srv);
	allowed = submit_limits_auth_allowed(srv->limits, s->ip, util_mono_ms());
	submit_unlock(srv);
	if (!allowed) {
		log_event(LOG_NOTICE, "auth_refused", "client", s->ip, "session", s->id, NULL);
		snprintf(text, sizeof(text), "421 4.7.0 %s Error: too many failed authentication "
		    "attempts, try again later", s->conf->hostname);
		submit_session_close(s, text);
		return;
	}
	if (s->auth != NULL || s->lookup_pending) {     /* a timed-out step or probe still runs */
		submit_session_reply(s, "454 4.7.0 Temporary authentication failure");
		return;
	}
	n = strcspn(args, " ");
	init = args[n] == ' ' ? args + n + 1 : NULL;
	args[n] = '\0';
	if (init != NULL && (*init == '\0' || strchr(init, ' ') != NULL)) {
		submit_session_reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
		return;
	}
	if (n == 0 || n >= sizeof(s->mech)) {
		submit_session_reply(s, "504 5.5.4 Unrecognized authentication type");
		return;
	}
	for (i = 0; i <= n; i++)
		s->mech[i] = (args[i] >= 'a' && args[i] <= 'z') ? (char)(args[i] - 32) : args[i];
	if (!submit_auth_offered(srv, s->mech)) {
		s->mech[0] = '\0';
		submit_session_reply(s, "504 5.5.4 Unrecognized authentication type");
		return;
	}
	buf_reset(&s->tmp);
	if (init != NULL && strcmp(init, "=") != 0 &&
	    codec_base64_decode(init, strlen(init), &s->tmp) != 0) {
		submit_auth_reset(s);
		submit_session_reply(s, "501 5.5.2 Error: cannot decode the initial response");
		return;
	}
	if (submit_auth_conn(s) != 0) {
		submit_auth_reset(s);
		submit_session_reply(s, "454 4.7.0 Temporary authentication failure");
		return;
	}
	if (init != NULL)
		submit_auth_note_user(s, s->tmp.data ? s->tmp.data : "", s->tmp.len);
	if (init != NULL)
		s->auth_step++;
	buf_reset(&s->auth->in);
	buf_append(&s->auth->in, s->tmp.data ? s->tmp.data : "", s->tmp.len);
	if (submit_auth_login_held(s))
		return;
	s->auth->has_in = init != NULL;
	snprintf(s->auth->mech, sizeof(s->auth->mech), "%s", s->mech);
	submit_auth_queue(s, true);
}

void
submit_auth_response(struct submit_session *s, const char *line, size_t len)
{
	if (len > 0 && line[len - 1] == '\n')
		len--;
	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (len == 1 && line[0] == '*') {               /* RFC 4954 4: cancelled */
		submit_auth_reset(s);
		submit_enter_state(s, SUBMIT_S_HELO);
		submit_session_reply(s, "501 5.7.0 Authentication aborted");
		return;
	}
	if (codec_base64_decode(line, len, &s->tmp) != 0) {
		submit_auth_reset(s);
		submit_enter_state(s, SUBMIT_S_HELO);
		submit_session_reply(s, "501 5.5.2 Error: cannot decode the response");
		return;
	}
	if (s->auth_final) {                            /* after the success data */
		if (s->tmp.len == 0) {
			submit_auth_success(s);
		} else {
			submit_auth_reset(s);
			submit_enter_state(s, SUBMIT_S_HELO);
			submit_session_reply(s, "501 5.5.2 Error: authentication protocol error");
		}
		return;
	}
	submit_auth_note_user(s, buf_cstr(&s->tmp), s->tmp.len);
	s->auth_step++;
	buf_reset(&s->auth->in);
	buf_append(&s->auth->in, s->tmp.data ? s->tmp.data : "", s->tmp.len);
	if (submit_auth_login_held(s))
		return;
	submit_auth_queue(s, false);
}

/* ------------------------------------------------------------------------
 * relayctl auth list / unblock
 */

struct submit_auth_each_ctx {
	void (*cb)(void *arg, const struct submit_auth_block *b);
	void *arg;
	uint64_t mono, wall;
};

static void
submit_auth_each_one(void *arg, const struct submit_limits_block *lb)
{
	struct submit_auth_each_ctx *e = arg;
	struct submit_auth_block b;

	memset(&b, 0, sizeof(b));
	b.kind = lb->login ? "login" : "address";
	b.name = lb->name;
	b.failures = lb->failures;
	b.blocked = lb->blocked;
	b.until = e->wall + (lb->until > e->mono ? lb->until - e->mono : 0);
	b.blocks = lb->blocks;
	e->cb(e->arg, &b);
}

void
submit_auth_blocks(struct submit *srv, void (*cb)(void *arg, const struct submit_auth_block *b),
    void *arg)
{
	struct submit_auth_each_ctx e = { cb, arg, util_mono_ms(), util_now_ms() };

	if (srv->magic != SUBMIT_MAGIC)
		fatalx("%s: bad submit", __func__);
	submit_lock(srv);               /* cb only copies into its reply */
	submit_limits_auth_each(srv->limits, e.mono, submit_auth_each_one, &e);
	submit_unlock(srv);
}

int
submit_auth_unblock(struct submit *srv, const char *name, const char **kind, struct buf *key)
{
	unsigned char addr[sizeof(struct in6_addr)];
	char canon[INET6_ADDRSTRLEN];
	bool login;
	int rc;

	if (srv->magic != SUBMIT_MAGIC)
		fatalx("%s: bad submit", __func__);
	/* an address in its canonical form, as sessions record it */
	if (inet_pton(AF_INET, name, addr) == 1)
		login = inet_ntop(AF_INET, addr, canon, sizeof(canon)) == NULL;
	else if (inet_pton(AF_INET6, name, addr) == 1)
		login = inet_ntop(AF_INET6, addr, canon, sizeof(canon)) == NULL;
	else
		login = true;
	*kind = login ? "login" : "address";
	buf_reset(key);
	if (login)
		submit_auth_login_key(srv->conf->submit.sasl_realm, name, strlen(name), key);
	else
		buf_puts(key, canon);
	submit_lock(srv);
	rc = submit_limits_auth_clear(srv->limits, buf_cstr(key), login, util_mono_ms());
	if (rc == RELAY_ENOENT && !login && strchr(canon, ':') == NULL) {
		buf_reset(key);        /* a v4 client on a v6 listener */
		buf_printf(key, "::ffff:%s", canon);
		rc = submit_limits_auth_clear(srv->limits, buf_cstr(key), login, util_mono_ms());
	}
	submit_unlock(srv);
	if (rc == 0)
		log_event(LOG_NOTICE, "auth_unblocked", login ? "user" : "client", buf_cstr(key),
		    "by", "relayctl", NULL);
	return rc;
}
