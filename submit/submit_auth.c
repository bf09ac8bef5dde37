/*
 * submit_auth.c - SMTP AUTH (RFC 4954) through the Cyrus SASL server
 * library: mechanisms from submit.sasl_mechanisms that the installed plugins
 * offer, users in the sasldb file submit.sasl_db, realm submit.sasl_realm.
 * Every SASL option comes from our SASL_CB_GETOPT callback (sasldb_path,
 * pwcheck_method=auxprop, auxprop_plugin=sasldb, mech_list), so nothing under
 * /etc/sasl2 is needed.  Failed attempts are counted per client IP
 * (submit_limits.c): replies slowed with the session timer, then refused.
 *
 * Owns the session's sasl_conn_t (one per AUTH exchange) and libsasl's
 * process-wide server state (init once, done with the last user).  It must
 * never log or keep a password, never offer or accept AUTH without TLS, and
 * never sleep: delays go through submit_session_reply_later().
 */
#include "submit/submit_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/codec.h"
#include "common/log.h"
#include "common/util.h"

/* libsasl stores every callback as int (*)(void); the detour silences -Wcast-function-type. */
#define SUBMIT_SASL_CB(f) ((int (*)(void))(void (*)(void))(f))

/* libsasl's server side is process-wide; so is what its global callbacks read. */
static struct {
	int refs;
	char *sasldb_path;
	char *mech_list;
} submit_sasl;

static const char *
submit_auth_option(const char *sasldb, const char *mechs, const char *option)
{
	if (strcmp(option, "sasldb_path") == 0)
		return sasldb;
	if (strcmp(option, "pwcheck_method") == 0)
		return "auxprop";
	if (strcmp(option, "auxprop_plugin") == 0)
		return "sasldb";
	if (strcmp(option, "mech_list") == 0)
		return mechs;
	return NULL;
}

/* SASL_CB_GETOPT: context is a session's struct conf, or NULL (global). */
static int
submit_auth_getopt(void *context, const char *plugin, const char *option,
    const char **result, unsigned *len)
{
	const struct conf *c = context;
	const char *v;

	if (c != NULL)
		v = submit_auth_option(c->submit.sasl_db, c->submit.sasl_mechanisms, option);
	else
		v = submit_auth_option(submit_sasl.sasldb_path, submit_sasl.mech_list, option);
	if (v == NULL)
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

static void
submit_auth_set_global(const struct conf *c)
{
	free(submit_sasl.sasldb_path);
	free(submit_sasl.mech_list);
	submit_sasl.sasldb_path = c->submit.sasl_db ? xstrdup(c->submit.sasl_db) : NULL;
	submit_sasl.mech_list = xstrdup(c->submit.sasl_mechanisms ? c->submit.sasl_mechanisms : "");
}

int
submit_auth_init(struct submit *srv, struct buf *err)
{
	int rc;

	if (submit_sasl.refs++ == 0) {
		submit_auth_set_global(srv->conf);
		if ((rc = sasl_server_init(submit_auth_global_cbs, "relayd")) != SASL_OK) {
			buf_printf(err, "SASL: cannot initialise: %s\n", sasl_errstring(rc, NULL, NULL));
			submit_sasl.refs--;
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
	sasl_server_done();
	free(submit_sasl.sasldb_path);
	free(submit_sasl.mech_list);
	submit_sasl.sasldb_path = submit_sasl.mech_list = NULL;
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

void
submit_auth_reset(struct submit_session *s)
{
	if (s->sasl != NULL)
		sasl_dispose(&s->sasl);
	s->sasl = NULL;
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

static void
submit_auth_success(struct submit_session *s)
{
	const char *user = NULL, *realm = s->conf->submit.sasl_realm;
	size_t n, rl;
	struct log_line l;

	if (sasl_getprop(s->sasl, SASL_USERNAME, (const void **)&user) != SASL_OK || user == NULL) {
		submit_auth_reset(s);
		submit_enter_state(s, SUBMIT_S_HELO);
		submit_session_reply(s, "454 4.7.0 Temporary authentication failure");
		return;
	}
	/* "alice@relay.test" in realm relay.test is the login "alice" */
	n = strlen(user);
	rl = realm ? strlen(realm) : 0;
	if (rl > 0 && n > rl + 1 && user[n - rl - 1] == '@' &&
	    util_strcasecmp(user + n - rl, realm) == 0)
		n -= rl + 1;
	free(s->login);
	s->login = xstrndup(user, n);
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

static void
submit_auth_failure(struct submit_session *s, int rc)
{
	struct submit *srv = s->srv;
	const char *user = NULL;
	struct log_line l;
	uint64_t delay;
	bool refused = false;

	submit_enter_state(s, SUBMIT_S_HELO);
	if (rc == SASL_TRYAGAIN || rc == SASL_FAIL || rc == SASL_NOMEM || rc == SASL_UNAVAIL) {
		log_event(LOG_WARNING, "auth_error", "session", s->id, "client", s->ip,
		    "mech", s->mech, "error", sasl_errstring(rc, NULL, NULL), NULL);
		submit_auth_reset(s);
		submit_session_reply(s, "454 4.7.0 Temporary authentication failure");
		return;
	}
	if (s->auth_user.len == 0 && s->sasl != NULL &&
	    sasl_getprop(s->sasl, SASL_USERNAME, (const void **)&user) == SASL_OK && user != NULL)
		buf_puts(&s->auth_user, user);
	delay = submit_limits_auth_failed(srv->limits, s->ip, util_mono_ms(), &refused);
	log_begin(&l, LOG_NOTICE, "auth_failed");
	log_kv(&l, "user", buf_cstr(&s->auth_user));
	log_kv(&l, "client", s->ip);
	log_kv(&l, "mech", s->mech);
	log_kv(&l, "session", s->id);
	log_kv(&l, "reason", sasl_errstring(rc, NULL, NULL));
	log_kvu(&l, "delay_ms", delay);
	log_end(&l);
	srv->stats->auth_failed++;
	submit_auth_reset(s);
	if (refused)
		log_event(LOG_NOTICE, "auth_blocked", "client", s->ip, "session", s->id, NULL);
	submit_session_reply_later(s, delay, false, "535 5.7.8 Error: authentication failed");
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
	default:
		submit_auth_failure(s, rc);
		break;
	}
}

static int
submit_auth_conn(struct submit_session *s)
{
	sasl_security_properties_t props;
	sasl_ssf_t ssf = (sasl_ssf_t)io_tls_cipher_bits(s->io);
	char remote[96];

	s->sasl_cbs[0] = (sasl_callback_t){ SASL_CB_GETOPT, SUBMIT_SASL_CB(submit_auth_getopt), s->conf };
	s->sasl_cbs[1] = (sasl_callback_t){ SASL_CB_LOG, SUBMIT_SASL_CB(submit_auth_log), NULL };
	s->sasl_cbs[2] = (sasl_callback_t){ SASL_CB_LIST_END, NULL, NULL };
	snprintf(remote, sizeof(remote), "%s;%d", s->ip, s->port);
	if (sasl_server_new("smtp", s->conf->hostname, s->conf->submit.sasl_realm, NULL, remote,
	    s->sasl_cbs, 0, &s->sasl) != SASL_OK) {
		s->sasl = NULL;
		return -1;
	}
	memset(&props, 0, sizeof(props));
	props.min_ssf = 0;
	props.max_ssf = 0;              /* TLS protects the session: no SASL layer */
	props.maxbufsize = 0;
	props.security_flags = SASL_SEC_NOANONYMOUS;
	if (sasl_setprop(s->sasl, SASL_SEC_PROPS, &props) != SASL_OK ||
	    sasl_setprop(s->sasl, SASL_SSF_EXTERNAL, &ssf) != SASL_OK) {
		sasl_dispose(&s->sasl);
		s->sasl = NULL;
		return -1;
	}
	return 0;
}

void
submit_auth_command(struct submit_session *s, char *args)
{
	struct submit *srv = s->srv;
	char *init, text[512];
	const char *out = NULL;
	unsigned outlen = 0;
	size_t i, n;
	int rc;

	if (!submit_limits_auth_allowed(srv->limits, s->ip, util_mono_ms())) {
		log_event(LOG_NOTICE, "auth_refused", "client", s->ip, "session", s->id, NULL);
		snprintf(text, sizeof(text), "421 4.7.0 %s Error: too many failed authentication "
		    "attempts, try again later", s->conf->hostname);
		submit_session_close(s, text);
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
	rc = sasl_server_start(s->sasl, s->mech, init != NULL ? buf_cstr(&s->tmp) : NULL,
	    (unsigned)s->tmp.len, &out, &outlen);
	submit_auth_result(s, rc, out, outlen);
}

void
submit_auth_response(struct submit_session *s, const char *line, size_t len)
{
	const char *out = NULL;
	unsigned outlen = 0;
	int rc;

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
	rc = sasl_server_step(s->sasl, buf_cstr(&s->tmp), (unsigned)s->tmp.len, &out, &outlen);
	submit_auth_result(s, rc, out, outlen);
}
