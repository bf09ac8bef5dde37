/*
 * submit_session.c - one SMTP submission session (RFC 5321, RFC 6409): the
 * command table, the state machine, the transaction (MAIL, RCPT, DATA) and
 * the hand-over of the message to the queue.
 *
 * Commands are rows of {verb, flags, proceed}; the flags (needs EHLO, needs
 * TLS, needs AUTH, needs MAIL/RCPT, may be pipelined ...) are checked from
 * one table before a row's proceed() runs.  submit_enter_state() is the only
 * place that changes the state.  AUTH lives in submit_auth.c, the DATA line
 * machine in submit_data.c, the tokenizer in submit_parse.c.
 *
 * Owns the session: its io, its timer, its envelope and router txn.  The
 * session is freed only when its io is gone, no commit is pending and the
 * timer handle is closed.  It must never answer 250 to DATA before the
 * queue's commit callback said 0, never hold a whole message in memory,
 * and never act on input pipelined behind STARTTLS.
 */
#include "submit/submit_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

/* Command flags. */
#define SUBMIT_F_HELO     0x0001     /* needs EHLO/HELO first */
#define SUBMIT_F_TLS      0x0002     /* needs TLS */
#define SUBMIT_F_NOTLS    0x0004     /* not once TLS is on (STARTTLS) */
#define SUBMIT_F_AUTH     0x0008     /* needs a successful AUTH */
#define SUBMIT_F_NOAUTH   0x0010     /* not once authenticated (AUTH) */
#define SUBMIT_F_NOTXN    0x0020     /* not inside a mail transaction */
#define SUBMIT_F_MAIL     0x0040     /* needs MAIL */
#define SUBMIT_F_RCPT     0x0080     /* needs at least one RCPT */
#define SUBMIT_F_NOARGS   0x0100     /* takes no argument */
#define SUBMIT_F_ARGS     0x0200     /* needs an argument */
#define SUBMIT_F_PIPE     0x0400     /* may be followed by pipelined input (RFC 2920) */
#define SUBMIT_F_LONG     0x0800     /* may exceed the 512-octet command line (AUTH) */
#define SUBMIT_F_NOCHUNKS 0x1000     /* not between BDAT chunks (RFC 3030: BDAT or RSET) */
#define SUBMIT_F_CHUNK    0x2000     /* octets follow the line (BDAT): read even if refused */

struct submit_cmd {
	const char *verb;
	unsigned flags;
	const char *syntax;
	void (*proceed)(struct submit_session *s, char *args);
};

static void submit_cmd_ehlo(struct submit_session *, char *);
static void submit_cmd_helo(struct submit_session *, char *);
static void submit_cmd_starttls(struct submit_session *, char *);
static void submit_cmd_mail(struct submit_session *, char *);
static void submit_cmd_rcpt(struct submit_session *, char *);
static void submit_cmd_data(struct submit_session *, char *);
static void submit_cmd_bdat(struct submit_session *, char *);
static void submit_cmd_rset(struct submit_session *, char *);
static void submit_cmd_noop(struct submit_session *, char *);
static void submit_cmd_quit(struct submit_session *, char *);
static void submit_cmd_vrfy(struct submit_session *, char *);
static void submit_cmd_help(struct submit_session *, char *);

/* What every mail transaction command needs. */
#define SUBMIT_F_USER     (SUBMIT_F_HELO | SUBMIT_F_TLS | SUBMIT_F_AUTH)

static const struct submit_cmd submit_cmds[] = {
	{ "EHLO", SUBMIT_F_ARGS, "EHLO hostname", submit_cmd_ehlo },
	{ "HELO", SUBMIT_F_ARGS, "HELO hostname", submit_cmd_helo },
	{ "STARTTLS", SUBMIT_F_HELO | SUBMIT_F_NOTLS | SUBMIT_F_NOARGS,
	  "STARTTLS", submit_cmd_starttls },
	{ "AUTH", SUBMIT_F_HELO | SUBMIT_F_TLS | SUBMIT_F_NOAUTH | SUBMIT_F_NOTXN | SUBMIT_F_ARGS |
	  SUBMIT_F_LONG, "AUTH mechanism [initial-response]", submit_auth_command },
	{ "MAIL", SUBMIT_F_USER | SUBMIT_F_NOTXN | SUBMIT_F_ARGS | SUBMIT_F_PIPE,
	  "MAIL FROM:<address>", submit_cmd_mail },
	{ "RCPT", SUBMIT_F_USER | SUBMIT_F_MAIL | SUBMIT_F_ARGS | SUBMIT_F_PIPE | SUBMIT_F_NOCHUNKS,
	  "RCPT TO:<address>", submit_cmd_rcpt },
	{ "DATA", SUBMIT_F_USER | SUBMIT_F_MAIL | SUBMIT_F_RCPT | SUBMIT_F_NOARGS | SUBMIT_F_PIPE |
	  SUBMIT_F_NOCHUNKS, "DATA", submit_cmd_data },
	{ "BDAT", SUBMIT_F_USER | SUBMIT_F_MAIL | SUBMIT_F_RCPT | SUBMIT_F_ARGS | SUBMIT_F_PIPE |
	  SUBMIT_F_CHUNK, "BDAT chunk-size [LAST]", submit_cmd_bdat },
	{ "RSET", SUBMIT_F_NOARGS | SUBMIT_F_PIPE, "RSET", submit_cmd_rset },
	{ "NOOP", SUBMIT_F_PIPE, "NOOP", submit_cmd_noop },
	{ "QUIT", SUBMIT_F_NOARGS, "QUIT", submit_cmd_quit },
	{ "VRFY", SUBMIT_F_ARGS | SUBMIT_F_PIPE, "VRFY address", submit_cmd_vrfy },
	{ "HELP", SUBMIT_F_PIPE, "HELP", submit_cmd_help },
};

/* The checks behind the flags, in the order they apply, each with its reply. */
static bool
submit_fails_helo(const struct submit_session *s, const char *args)
{
	return s->state == SUBMIT_S_CONNECTED;
}

static bool
submit_fails_tls(const struct submit_session *s, const char *args)
{
	return !io_is_tls(s->io);
}

static bool
submit_fails_notls(const struct submit_session *s, const char *args)
{
	return io_is_tls(s->io);
}

static bool
submit_fails_auth(const struct submit_session *s, const char *args)
{
	return s->login == NULL;
}

static bool
submit_fails_noauth(const struct submit_session *s, const char *args)
{
	return s->login != NULL;
}

static bool
submit_fails_notxn(const struct submit_session *s, const char *args)
{
	return s->state == SUBMIT_S_MAIL || s->state == SUBMIT_S_RCPT || s->state == SUBMIT_S_CHUNKS;
}

static bool
submit_fails_mail(const struct submit_session *s, const char *args)
{
	return s->state != SUBMIT_S_MAIL && s->state != SUBMIT_S_RCPT && s->state != SUBMIT_S_CHUNKS;
}

static bool
submit_fails_rcpt(const struct submit_session *s, const char *args)
{
	return s->state != SUBMIT_S_RCPT && s->state != SUBMIT_S_CHUNKS;
}

static bool
submit_fails_nochunks(const struct submit_session *s, const char *args)
{
	return s->state == SUBMIT_S_CHUNKS;
}

static bool
submit_fails_noargs(const struct submit_session *s, const char *args)
{
	return *args != '\0';
}

static bool
submit_fails_args(const struct submit_session *s, const char *args)
{
	return *args == '\0';
}

static const struct {
	unsigned flag;
	bool (*fails)(const struct submit_session *s, const char *args);
	const char *reply;          /* NULL: "501 5.5.4 Syntax: <syntax>" */
} submit_checks[] = {
	{ SUBMIT_F_NOARGS, submit_fails_noargs, NULL },
	{ SUBMIT_F_ARGS, submit_fails_args, NULL },
	{ SUBMIT_F_HELO, submit_fails_helo, "503 5.5.1 Error: send HELO/EHLO first" },
	{ SUBMIT_F_NOTLS, submit_fails_notls, "503 5.5.1 Error: TLS already active" },
	{ SUBMIT_F_TLS, submit_fails_tls, "530 5.7.0 Must issue a STARTTLS command first" },
	{ SUBMIT_F_NOAUTH, submit_fails_noauth, "503 5.5.1 Error: already authenticated" },
	{ SUBMIT_F_NOTXN, submit_fails_notxn, "503 5.5.1 Error: MAIL transaction in progress" },
	{ SUBMIT_F_AUTH, submit_fails_auth, "530 5.7.0 Authentication required" },
	{ SUBMIT_F_NOCHUNKS, submit_fails_nochunks,
	  "503 5.5.1 Error: BDAT in progress, send BDAT with LAST or RSET" },
	{ SUBMIT_F_MAIL, submit_fails_mail, "503 5.5.1 Error: need MAIL command" },
	{ SUBMIT_F_RCPT, submit_fails_rcpt, "503 5.5.1 Error: need RCPT command" },
};

/* What each state means for the io. */
enum { SUBMIT_LIM_CMD, SUBMIT_LIM_TEXT };
static const struct {
	const char *name;
	bool input;                 /* lines are taken in this state */
	bool paused;                /* IO_EV_IN is held back */
	int limit;                  /* line limit: command or text */
	enum submit_deadline deadline;  /* how long the client may take (submit_deadline.c) */
} submit_states[] = {
	[SUBMIT_S_TLS_WAIT] = { "tls-wait", false, false, SUBMIT_LIM_CMD, SUBMIT_DL_TLS },
	[SUBMIT_S_CONNECTED] = { "connected", true, false, SUBMIT_LIM_CMD, SUBMIT_DL_COMMAND },
	[SUBMIT_S_HELO] = { "helo", true, false, SUBMIT_LIM_CMD, SUBMIT_DL_COMMAND },
	[SUBMIT_S_AUTH] = { "auth", true, false, SUBMIT_LIM_CMD, SUBMIT_DL_AUTH },
	[SUBMIT_S_AUTH_WAIT] = { "auth-wait", false, true, SUBMIT_LIM_CMD, SUBMIT_DL_AUTH_CHECK },
	[SUBMIT_S_MAIL] = { "mail", true, false, SUBMIT_LIM_CMD, SUBMIT_DL_COMMAND },
	[SUBMIT_S_SENDER] = { "sender", false, true, SUBMIT_LIM_CMD, SUBMIT_DL_NONE },
	[SUBMIT_S_RCPT] = { "rcpt", true, false, SUBMIT_LIM_CMD, SUBMIT_DL_COMMAND },
	[SUBMIT_S_DATA] = { "data", true, false, SUBMIT_LIM_TEXT, SUBMIT_DL_DATA },
	/* each chunk's octets: a deadline of their own, as DATA's (Postfix's BDAT) */
	[SUBMIT_S_BDAT] = { "bdat", true, false, SUBMIT_LIM_TEXT, SUBMIT_DL_DATA },
	[SUBMIT_S_CHUNKS] = { "chunks", true, false, SUBMIT_LIM_CMD, SUBMIT_DL_COMMAND },
	[SUBMIT_S_COMMIT] = { "commit", false, true, SUBMIT_LIM_CMD, SUBMIT_DL_NONE },
	[SUBMIT_S_DELAY] = { "delay", false, true, SUBMIT_LIM_CMD, SUBMIT_DL_NONE },
	/* at most CLUSTER_TIMEOUT_MS: cluster_count's callback always fires by then */
	[SUBMIT_S_SHARED] = { "shared", false, true, SUBMIT_LIM_CMD, SUBMIT_DL_NONE },
	/* the octets come through submit_proxy_input(), not as lines */
	[SUBMIT_S_PROXY] = { "proxy", false, false, SUBMIT_LIM_CMD, SUBMIT_DL_PROXY },
	/* a shard's DATA or first BDAT: the front's queue answers (submit_worker.c) */
	[SUBMIT_S_BEGIN] = { "begin", false, true, SUBMIT_LIM_CMD, SUBMIT_DL_NONE },
	[SUBMIT_S_CLOSED] = { "closed", false, true, SUBMIT_LIM_CMD, SUBMIT_DL_NONE },
};

static void submit_session_release(struct submit_session *s);

/* One refused transaction in the counters (the front's, from a shard). */
static void
submit_session_count_reject(struct submit *srv, const char *reply)
{
	if (srv->front != NULL)
		submit_worker_stat(srv, 0, 0, reply);
	else
		stats_reject(srv->stats, reply);
}

void
submit_enter_state(struct submit_session *s, enum submit_state state)
{
	enum submit_state old = s->state;
	struct log_line l;

	if (old != state) {
		log_begin(&l, LOG_DEBUG, "submit_state");
		log_kv(&l, "session", s->id);
		log_kv(&l, "from", submit_states[old].name);
		log_kv(&l, "to", submit_states[state].name);
		log_end(&l);
	}
	s->state = state;
	if (s->io == NULL)
		return;
	if (s->login != NULL && (s->srv->shared_lock != NULL || s->unauth_listed)) {
		submit_lock(s->srv);
		submit_slots_remove(s->srv->slots, s);  /* it authenticated */
		submit_unlock(s->srv);
	}
	if (submit_states[state].limit == SUBMIT_LIM_TEXT)
		/* 1000 with CRLF, plus a stuffed dot (RFC 5321 4.5.3.1.6) */
		io_set_max_line(s->io, SUBMIT_TEXT_LINE_MAX + 1);
	else
		io_set_max_line(s->io, SUBMIT_AUTH_LINE_MAX + 2);
	submit_deadline_enter(s, submit_states[state].deadline);
	if (submit_states[state].paused && !submit_states[old].paused) {
		io_pause(s->io);
	} else if (!submit_states[state].paused && submit_states[old].paused) {
		/* what waits in the buffer was sent before our reply */
		s->resumed = io_input_pending(s->io) > 0;
		io_resume(s->io);
	}
}

void
submit_session_reply(struct submit_session *s, const char *fmt, ...)
{
	va_list ap;

	if (s->io == NULL)
		return;
	buf_reset(&s->out);
	va_start(ap, fmt);
	buf_vprintf(&s->out, fmt, ap);
	va_end(ap);
	if (s->out.data[0] == '4' || s->out.data[0] == '5')
		s->nerrors++;
	buf_append(&s->out, "\r\n", 2);
	io_write(s->io, s->out.data, s->out.len);
}

/*
 * A refused MAIL, RCPT or DATA: the reply, a log line, the counter.  A reply
 * that quotes what the client sent (an address) carries no raw 8-bit byte to
 * a client that did not ask for SMTPUTF8 (RFC 6531 3.7.4.2): each becomes '?'.
 */
static void submit_session_reject(struct submit_session *s, const char *stage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
submit_session_reject(struct submit_session *s, const char *stage, const char *fmt, ...)
{
	struct log_line l;
	va_list ap;
	size_t i;

	buf_reset(&s->tmp);
	va_start(ap, fmt);
	buf_vprintf(&s->tmp, fmt, ap);
	va_end(ap);
	log_begin(&l, LOG_INFO, "rejected");
	log_kv(&l, "session", s->id);
	log_kv(&l, "stage", stage);
	log_kv(&l, "user", s->login);
	log_kv(&l, "client", s->ip);
	log_kv(&l, "reply", buf_cstr(&s->tmp));
	log_end(&l);
	submit_session_count_reject(s->srv, buf_cstr(&s->tmp));
	for (i = 0; !s->env.smtputf8 && i < s->tmp.len; i++)
		if ((unsigned char)s->tmp.data[i] >= 0x80)
			s->tmp.data[i] = '?';
	submit_session_reply(s, "%s", buf_cstr(&s->tmp));
}

static void
submit_session_rate_limited(struct submit_session *s, const char *what)
{
	struct log_line l;

	log_begin(&l, LOG_NOTICE, "rate_limited");
	log_kv(&l, "session", s->id);
	log_kv(&l, "user", s->login);
	log_kv(&l, "client", s->ip);
	log_kv(&l, "limit", what);
	log_end(&l);
}

static void
submit_session_timer_cb(uv_timer_t *t)
{
	struct submit_session *s = t->data;

	if (s->magic != SUBMIT_SESSION_MAGIC)
		fatalx("%s: bad session", __func__);
	if (s->state == SUBMIT_S_AUTH_WAIT && s->io != NULL) {
		submit_auth_timeout(s);
		return;
	}
	if (s->state != SUBMIT_S_DELAY || s->io == NULL)
		return;
	if (s->delayed_close) {
		submit_session_close(s, buf_cstr(&s->delayed));
		return;
	}
	submit_session_reply(s, "%s", buf_cstr(&s->delayed));
	if (s->io != NULL)
		submit_enter_state(s, SUBMIT_S_HELO);
}

void
submit_session_timer(struct submit_session *s, uint64_t ms)
{
	uv_timer_start(&s->timer, submit_session_timer_cb, ms, 0);
}

void
submit_session_reply_later(struct submit_session *s, uint64_t delay_ms, bool close,
    const char *text)
{
	if (delay_ms == 0) {
		if (close)
			submit_session_close(s, text);
		else
			submit_session_reply(s, "%s", text);
		return;
	}
	buf_reset(&s->delayed);
	buf_puts(&s->delayed, text);
	s->delayed_close = close;
	if (text[0] == '4' || text[0] == '5')
		s->nerrors++;
	submit_enter_state(s, SUBMIT_S_DELAY);
	uv_timer_start(&s->timer, submit_session_timer_cb, delay_ms, 0);
}

/* Forget the mail transaction (RSET, EHLO, after DATA). */
static void
submit_session_reset_txn(struct submit_session *s)
{
	if (s->txn != NULL) {
		if (s->srv->front != NULL)
			submit_worker_txn_abort(s->srv, s->txn);
		else
			queue_txn_abort(s->txn);
		s->txn = NULL;
	}
	submit_dkim_reset(s);
	envelope_free(&s->env);
	directory_owned_unref(s->ldap_owned);
	s->ldap_owned = NULL;
	s->ldap_down = false;
	s->rcpt_cap = 0;
}

static void
submit_session_freed(uv_handle_t *h)
{
	struct submit_session *s = h->data;
	struct submit *srv = s->srv;

	envelope_free(&s->env);
	directory_owned_unref(s->ldap_owned);
	submit_data_free(&s->data);
	buf_free(&s->helo);
	buf_free(&s->auth_user);
	buf_free(&s->delayed);
	if (s->shared_args.data != NULL)
		explicit_bzero(s->shared_args.data, s->shared_args.len);
	buf_free(&s->shared_args);
	buf_free(&s->line);
	buf_free(&s->out);
	buf_free(&s->tmp);
	buf_free(&s->dkim_ids);
	buf_free(&s->path.addr);
	buf_free(&s->proxy_hdr);
	free(s->login);
	conf_unref(s->conf);
	s->magic = 0;
	free(s);
	submit_server_count(srv, -1);
	submit_server_session_gone(srv);
}

/* Free the session once nothing refers to it any more. */
static void
submit_session_release(struct submit_session *s)
{
	if (s->released || s->commit_pending || s->lookup_pending || s->begin_pending ||
	    s->io != NULL)
		return;
	s->released = true;
	submit_session_reset_txn(s);
	submit_auth_reset(s);
	submit_lock(s->srv);            /* another shard's eviction may have uncounted it */
	if (s->counted) {
		submit_limits_conn_close(s->srv->limits, s->ip);
		s->counted = false;
	}
	if (s->reserved) {
		submit_limits_conn_unreserve(s->srv->limits);
		s->reserved = false;
	}
	submit_unlock(s->srv);
	TAILQ_REMOVE(&s->srv->sessions, s, entry);
	uv_timer_stop(&s->timer);
	uv_close((uv_handle_t *)&s->timer, submit_session_freed);
}

void
submit_session_close(struct submit_session *s, const char *reply)
{
	struct io *io = s->io;
	struct log_line l;

	if (io != NULL) {
		s->io = NULL;           /* events from here on are not ours */
		if (s->refusing) {
			s->refusing = false;
			s->srv->nrefusing--;
		}
		if (s->unplaced) {
			s->unplaced = false;
			s->srv->nunplaced--;
		}
		submit_lock(s->srv);
		submit_slots_remove(s->srv->slots, s);
		submit_unlock(s->srv);
		/* a last word that holds no descriptor past this call: the slot
		 * is gone already (a client that reads its replies gets all of
		 * it; one that left them unread held its socket, uncounted, up
		 * to the drain timeout) */
		if (reply != NULL) {
			io_printf(io, "%s\r\n", reply);
			io_close_now(io);
		} else
			io_free(io);
		log_begin(&l, LOG_DEBUG, "disconnect");
		log_kv(&l, "session", s->id);
		log_kv(&l, "client", s->ip);
		log_end(&l);
	}
	if (s->state != SUBMIT_S_CLOSED)
		submit_enter_state(s, SUBMIT_S_CLOSED);
	submit_session_release(s);
}

void
submit_session_shutdown(struct submit_session *s)
{
	char text[512];

	if (s->commit_pending || s->lookup_pending || s->begin_pending)
		return;                 /* the callback answers, then closes */
	if (s->state == SUBMIT_S_PROXY) {
		submit_session_close(s, NULL);  /* not greeted: nobody to tell yet */
		return;
	}
	snprintf(text, sizeof(text), "421 4.3.2 %s Service shutting down, closing connection",
	    s->conf->hostname);
	submit_session_close(s, s->io != NULL ? text : NULL);
}

/* ---- commands ---- */

/* An EHLO/HELO argument: a domain or address literal, printable ASCII. */
static bool
submit_helo_ok(const char *args)
{
	const unsigned char *p;

	if (strlen(args) > 255)
		return false;
	for (p = (const unsigned char *)args; *p != '\0'; p++)
		if (*p <= ' ' || *p >= 127)
			return false;
	return true;
}

static void
submit_session_helo_common(struct submit_session *s, char *args, bool esmtp)
{
	if (!submit_helo_ok(args)) {
		submit_session_reply(s, "501 5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
		return;
	}
	submit_session_reset_txn(s);            /* EHLO implies RSET (RFC 5321 4.1.4) */
	buf_reset(&s->helo);
	buf_puts(&s->helo, args);
	s->esmtp = esmtp;
	submit_enter_state(s, SUBMIT_S_HELO);
}

static void
submit_cmd_ehlo(struct submit_session *s, char *args)
{
	const struct submit *srv = s->srv;
	bool tls = io_is_tls(s->io);

	submit_session_helo_common(s, args, true);
	if (s->state != SUBMIT_S_HELO)
		return;
	submit_session_reply(s, "250-%s", s->conf->hostname);
	submit_session_reply(s, "250-PIPELINING");
	submit_session_reply(s, "250-SIZE %" PRIu64, s->conf->submit.max_message_size);
	submit_session_reply(s, "250-8BITMIME");
	submit_session_reply(s, "250-CHUNKING");
	submit_session_reply(s, "250-ENHANCEDSTATUSCODES");
	if (!tls)
		submit_session_reply(s, "250-STARTTLS");
	if (tls && s->login == NULL && srv->mechs.len > 0)
		submit_session_reply(s, "250-AUTH %s", buf_cstr(&srv->mechs));
	submit_session_reply(s, "250-DSN");
	submit_session_reply(s, "250 SMTPUTF8");
}

static void
submit_cmd_helo(struct submit_session *s, char *args)
{
	submit_session_helo_common(s, args, false);
	if (s->state == SUBMIT_S_HELO)
		submit_session_reply(s, "250 %s", s->conf->hostname);
}

static void
submit_cmd_starttls(struct submit_session *s, char *args)
{
	if (s->srv->tls_ctx == NULL) {
		submit_session_reply(s, "454 4.7.0 TLS not available");
		return;
	}
	submit_session_reply(s, "220 2.0.0 Ready to start TLS");
	/* RFC 3207 4.2: forget everything learnt before TLS */
	submit_session_reset_txn(s);
	submit_auth_reset(s);
	buf_reset(&s->helo);
	s->esmtp = false;
	submit_enter_state(s, SUBMIT_S_TLS_WAIT);
	if (io_start_tls_server(s->io, s->srv->tls_ctx) != 0)
		submit_session_close(s, NULL);
}

/* MAIL parameters into the envelope; on error the reply is given and -1 returned. */
static int
submit_mail_params(struct submit_session *s)
{
	static const char *known[] = { "SIZE", "BODY", "RET", "ENVID", "SMTPUTF8", "AUTH" };
	struct envelope *env = &s->env;
	unsigned seen = 0;
	size_t i, k;

	for (i = 0; i < s->path.nparams; i++) {
		const char *key = s->path.params[i].key, *v = s->path.params[i].value;

		for (k = 0; k < RELAY_ARRAY_LEN(known); k++)
			if (util_strcasecmp(key, known[k]) == 0)
				break;
		if (k == RELAY_ARRAY_LEN(known)) {
			submit_session_reject(s, "mail", "555 5.5.4 Unsupported option: %s", key);
			return -1;
		}
		if (seen & (1u << k)) {
			submit_session_reject(s, "mail", "501 5.5.4 Duplicate parameter: %s", known[k]);
			return -1;
		}
		seen |= 1u << k;
		if ((v == NULL) != (k == 4)) {  /* only SMTPUTF8 has no value */
			submit_session_reject(s, "mail", "501 5.5.4 Bad parameter syntax: %s", known[k]);
			return -1;
		}
		switch (k) {
		case 0: {                       /* SIZE (RFC 1870) */
			uint64_t n = 0;
			const char *p;

			for (p = v; *p >= '0' && *p <= '9' && p - v < 20; p++)
				n = n * 10 + (uint64_t)(*p - '0');
			if (*p != '\0') {
				submit_session_reject(s, "mail", "501 5.5.4 Bad SIZE parameter");
				return -1;
			}
			if (n > s->conf->submit.max_message_size) {
				submit_session_reject(s, "mail",
				    "552 5.3.4 Message size exceeds fixed maximum message size");
				return -1;
			}
			break;
		}
		case 1:                         /* BODY (RFC 6152) */
			if (util_strcasecmp(v, "8BITMIME") == 0)
				env->body_8bit = true;
			else if (util_strcasecmp(v, "7BIT") != 0) {
				submit_session_reject(s, "mail", "501 5.5.4 Unsupported BODY type: %s", v);
				return -1;
			}
			break;
		case 2:                         /* RET (RFC 3461) */
			if (util_strcasecmp(v, "FULL") == 0)
				env->ret = ENV_RET_FULL;
			else if (util_strcasecmp(v, "HDRS") == 0)
				env->ret = ENV_RET_HDRS;
			else {
				submit_session_reject(s, "mail", "501 5.5.4 Bad RET parameter");
				return -1;
			}
			break;
		case 3:                         /* ENVID (RFC 3461) */
			if (strlen(v) > 100 || submit_parse_xtext(v, &s->tmp) != 0) {
				submit_session_reject(s, "mail", "501 5.5.4 Bad ENVID parameter");
				return -1;
			}
			env->envid = xstrdup(buf_cstr(&s->tmp));
			break;
		case 4:                         /* SMTPUTF8 (RFC 6531) */
			env->smtputf8 = true;
			break;
		default:                        /* AUTH=<mailbox> (RFC 4954 5): ignored */
			break;
		}
	}
	return 0;
}

/*
 * MAIL, once it is known who owns the sender: file_owned from the senders
 * map, s->ldap_owned from the directory; unavailable: the directory could
 * not say (451, never 553).
 */
static void
submit_mail_rate(struct submit_session *s)
{
	struct submit *srv = s->srv;
	const char *addr = buf_cstr(&s->path.addr);
	enum submit_rate_verdict v;

	submit_lock(srv);
	v = submit_limits_login_check(srv->limits, s->login, util_mono_ms(), 0);
	submit_unlock(srv);
	if (v != SUBMIT_RATE_OK) {
		submit_session_rate_limited(s, "messages");
		submit_session_reject(s, "mail", "450 4.7.1 Error: message rate limit exceeded "
		    "for user %s, try again later", s->login);
		submit_session_reset_txn(s);
		return;
	}
	s->env.sender = xstrdup(addr);
	s->env.auth_user = xstrdup(s->login);
	s->env.client_ip = xstrdup(s->ip);
	s->env.client_helo = xstrdup(buf_cstr(&s->helo));
	s->env.arrival_ms = util_now_ms();
	submit_enter_state(s, SUBMIT_S_MAIL);
	submit_session_reply(s, "250 2.1.0 Ok");
}

static void
submit_mail_finish(struct submit_session *s, bool file_owned, bool unavailable)
{
	const char *addr = buf_cstr(&s->path.addr);

	if (!file_owned && !directory_owns(s->ldap_owned, addr)) {
		if (unavailable)
			submit_session_reject(s, "mail", "451 4.3.0 <%s>: Sender address "
			    "rejected: the directory is unavailable, try again later", addr);
		else
			submit_session_reject(s, "mail", "553 5.7.1 <%s>: Sender address "
			    "rejected: not owned by user %s", addr, s->login);
		submit_session_reset_txn(s);
		return;
	}
	/* the login's window as the cluster counted it, then the limits decide */
	if (submit_shared_login_read(s, submit_mail_rate))
		return;
	submit_mail_rate(s);
}

void
submit_mail_looked_up(void *arg, enum directory_status st, struct directory_owned *o)
{
	struct submit_session *s = arg;

	if (s->magic != SUBMIT_SESSION_MAGIC || !s->lookup_pending)
		fatalx("%s: bad session", __func__);
	s->lookup_pending = false;
	if (o != NULL)
		s->ldap_owned = directory_owned_ref(o);
	s->ldap_down = st != DIRECTORY_OK;
	if (s->io == NULL) {
		submit_session_release(s);  /* the client left while we waited */
		return;
	}
	if (s->srv->shutting_down) {
		submit_session_shutdown(s);
		return;
	}
	submit_mail_finish(s, s->mail_file_owned, st != DIRECTORY_OK);
	if (s->state == SUBMIT_S_SENDER)
		submit_enter_state(s, SUBMIT_S_HELO);
}

/*
 * Does the directory own the sender?  Asked when the senders map does not
 * grant it, or always with check_header_from (its answer is kept for the
 * header check).  The session waits (io paused; pipelined commands stay
 * queued) unless the cache knows.
 */
static void
submit_mail_owner(struct submit_session *s, bool file_owned)
{
	struct submit *srv = s->srv;
	struct directory_owned *o;

	if (srv->directory == NULL || srv->conf->submit.senders_ldap.uri == NULL ||
	    (file_owned && !s->conf->submit.check_header_from)) {
		submit_mail_finish(s, file_owned, false);
		return;
	}
	if (srv->front != NULL) {
		/* a shard: the front's directory, its cache first */
		s->lookup_pending = true;
		s->mail_file_owned = file_owned;
		submit_enter_state(s, SUBMIT_S_SENDER);
		submit_worker_lookup(s, s->login, false, submit_mail_looked_up);
		return;
	}
	if ((o = directory_cached(srv->directory, s->login)) != NULL) {
		s->ldap_owned = directory_owned_ref(o);
		submit_mail_finish(s, file_owned, false);
		return;
	}
	s->lookup_pending = true;
	s->mail_file_owned = file_owned;
	submit_enter_state(s, SUBMIT_S_SENDER);
	directory_lookup(srv->directory, s->login, submit_mail_looked_up, s);
}

static void
submit_cmd_mail(struct submit_session *s, char *args)
{
	struct submit *srv = s->srv;
	const char *addr;

	if (submit_parse_path(args, "FROM:", false, &s->path) != 0) {
		if (s->path.err == SUBMIT_PARSE_EADDR)
			submit_session_reject(s, "mail", "501 5.1.7 Bad sender address syntax");
		else if (s->path.err == SUBMIT_PARSE_ESYNTAX)
			submit_session_reject(s, "mail", "501 5.5.4 Syntax: MAIL FROM:<address>");
		else
			submit_session_reject(s, "mail", "501 5.5.4 Bad parameter syntax");
		return;
	}
	submit_session_reset_txn(s);
	if (submit_mail_params(s) != 0) {
		submit_session_reset_txn(s);
		return;
	}
	addr = buf_cstr(&s->path.addr);
	if (*addr == '\0') {
		submit_session_reject(s, "mail", "553 5.7.1 <>: Sender address rejected: "
		    "the null sender is for bounces, not for users");
	} else if (s->path.utf8 && !s->env.smtputf8) {
		submit_session_reject(s, "mail", "553 5.6.7 <%s>: SMTPUTF8 is required for "
		    "a non-ASCII address", addr);
	} else {
		submit_mail_owner(s, submit_senders_owns(srv->senders, s->login, addr));
		return;
	}
	submit_session_reset_txn(s);
}

/* RCPT parameters into rcpt; on error the reply is given and -1 returned. */
static int
submit_rcpt_params(struct submit_session *s, struct env_rcpt *rcpt)
{
	bool seen_notify = false;
	size_t i;

	for (i = 0; i < s->path.nparams; i++) {
		const char *key = s->path.params[i].key, *v = s->path.params[i].value;

		if (util_strcasecmp(key, "NOTIFY") == 0 && !seen_notify) {
			seen_notify = true;
			if (v == NULL || submit_parse_notify(v, &rcpt->notify) != 0) {
				submit_session_reject(s, "rcpt", "501 5.5.4 Bad NOTIFY parameter");
				return -1;
			}
		} else if (util_strcasecmp(key, "ORCPT") == 0 && rcpt->orcpt == NULL) {
			if (v == NULL || strlen(v) > 500 || submit_parse_orcpt(v, &s->tmp) != 0) {
				submit_session_reject(s, "rcpt", "501 5.5.4 Bad ORCPT parameter");
				return -1;
			}
			rcpt->orcpt = xstrdup(buf_cstr(&s->tmp));
		} else {
			submit_session_reject(s, "rcpt", "555 5.5.4 Unsupported option: %s", key);
			return -1;
		}
	}
	return 0;
}

static void
submit_cmd_rcpt(struct submit_session *s, char *args)
{
	struct submit *srv = s->srv;
	enum submit_rate_verdict v;
	struct env_rcpt rcpt;
	const char *addr;

	if (submit_parse_path(args, "TO:", true, &s->path) != 0 || s->path.addr.len == 0) {
		if (s->path.err == SUBMIT_PARSE_ESYNTAX)
			submit_session_reject(s, "rcpt", "501 5.5.4 Syntax: RCPT TO:<address>");
		else if (s->path.err == SUBMIT_PARSE_EPARAM || s->path.err == SUBMIT_PARSE_ETOOMANY)
			submit_session_reject(s, "rcpt", "501 5.5.4 Bad parameter syntax");
		else
			submit_session_reject(s, "rcpt", "501 5.1.3 Bad recipient address syntax");
		return;
	}
	addr = buf_cstr(&s->path.addr);
	if (s->path.utf8 && !s->env.smtputf8) {
		submit_session_reject(s, "rcpt", "553 5.6.7 <%s>: SMTPUTF8 is required for "
		    "a non-ASCII address", addr);
		return;
	}
	if (s->env.nrcpts >= s->conf->submit.max_recipients) {
		submit_session_reject(s, "rcpt", "452 4.5.3 Error: too many recipients");
		return;
	}
	submit_lock(srv);
	v = submit_limits_login_check(srv->limits, s->login, util_mono_ms(),
	    (unsigned)s->env.nrcpts + 1);
	submit_unlock(srv);
	if (v != SUBMIT_RATE_OK) {
		submit_session_rate_limited(s, "recipients");
		if (s->env.nrcpts > 0)
			submit_session_reject(s, "rcpt", "452 4.5.3 Error: recipient rate limit "
			    "exceeded for user %s, send the rest later", s->login);
		else
			submit_session_reject(s, "rcpt", "450 4.7.1 Error: recipient rate limit "
			    "exceeded for user %s, try again later", s->login);
		return;
	}
	memset(&rcpt, 0, sizeof(rcpt));
	if (submit_rcpt_params(s, &rcpt) != 0) {
		free(rcpt.orcpt);
		return;
	}
	if (s->env.nrcpts == s->rcpt_cap) {
		s->rcpt_cap = s->rcpt_cap ? s->rcpt_cap * 2 : 4;
		s->env.rcpts = xrealloc(s->env.rcpts, s->rcpt_cap * sizeof(*s->env.rcpts));
	}
	rcpt.addr = xstrdup(addr);
	s->env.rcpts[s->env.nrcpts++] = rcpt;
	submit_enter_state(s, SUBMIT_S_RCPT);
	submit_session_reply(s, "250 2.1.5 Ok");
}

static int
submit_session_write(void *arg, const void *p, size_t len)
{
	struct submit_session *s = arg;

	submit_dkim_write(s, p, len);
	return queue_txn_write(s->txn, p, len);
}

/*
 * The message begins (DATA, or the first BDAT), once the queue said (rc, txn):
 * the Received: field, the DKIM signer.  0, or -1 with the refusal given and
 * the session back in HELO.
 */
static int
submit_session_message_started(struct submit_session *s, int rc, struct queue_txn *txn)
{
	struct submit_received r;
	char date[64], date_hdr[96], msgid[640];
	uint64_t now = util_now_ms();

	s->txn = txn;
	if (rc != 0) {
		log_event(LOG_ERR, "queue_error", "session", s->id, "stage", "begin", NULL);
		s->txn = NULL;
		submit_session_reject(s, "data", "451 4.3.0 Error: queue file write error");
		submit_session_reset_txn(s);
		submit_enter_state(s, SUBMIT_S_HELO);
		return -1;
	}
	memset(&r, 0, sizeof(r));
	r.helo = buf_cstr(&s->helo);
	r.client_ip = s->ip;
	r.hostname = s->conf->hostname;
	r.protocol = submit_data_protocol(s->esmtp, io_is_tls(s->io), s->login != NULL, s->env.smtputf8);
	r.qid = queue_txn_qid(s->txn);
	r.tls_version = io_tls_version(s->io);
	r.tls_cipher = io_tls_cipher(s->io);
	r.tls_bits = io_tls_cipher_bits(s->io);
	r.rcpt = s->env.nrcpts == 1 ? s->env.rcpts[0].addr : NULL;
	r.now_ms = now;
	buf_reset(&s->tmp);
	submit_data_received(&s->tmp, &r);
	util_rfc5322_date(now, date, sizeof(date));
	snprintf(date_hdr, sizeof(date_hdr), "Date: %s\r\n", date);
	snprintf(msgid, sizeof(msgid), "Message-ID: <%s@%s>\r\n", r.qid, s->conf->hostname);
	submit_dkim_begin(s);
	submit_data_begin(&s->data, s->conf->submit.max_message_size,
	    s->conf->submit.check_header_from, buf_cstr(&s->tmp), date_hdr, msgid,
	    submit_session_write, s);
	return 0;
}

/*
 * The queue transaction for the message (DATA, or the first BDAT): 0 begun,
 * -1 refused (as message_started).  On a shard, one of its reserved txns;
 * if none is left, 1: it waits in BEGIN for the front's queue, then
 * submit_session_begun() goes on.
 */
static int
submit_session_message_begin(struct submit_session *s, bool bdat)
{
	struct queue_txn *txn = NULL;
	int rc;

	if (s->srv->front != NULL && (txn = submit_worker_txn_take(s->srv)) != NULL) {
		/* one reserved ahead by the front: no round trip on the way */
		if ((rc = queue_txn_envelope(txn, &s->env)) != 0) {
			submit_worker_txn_abort(s->srv, txn);
			txn = NULL;
		}
		return submit_session_message_started(s, rc, txn);
	}
	if (s->srv->front != NULL) {
		s->begin_bdat = bdat;
		submit_enter_state(s, SUBMIT_S_BEGIN);
		submit_worker_txn_begin(s);
		return 1;
	}
	rc = router_txn_begin(s->srv->router, &s->env, &txn);
	return submit_session_message_started(s, rc, rc == 0 ? txn : NULL);
}

static void
submit_data_begun(struct submit_session *s)
{
	submit_enter_state(s, SUBMIT_S_DATA);
	submit_session_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void
submit_cmd_data(struct submit_session *s, char *args)
{
	if (submit_session_message_begin(s, false) != 0)
		return;
	submit_data_begun(s);
}

struct submit_from_check {
	struct submit_session *s;
	struct buf *bad;            /* the first address not owned */
};

static void
submit_from_cb(void *arg, const char *addr)
{
	struct submit_from_check *c = arg;

	if (c->bad->len == 0 && !submit_senders_owns(c->s->srv->senders, c->s->login, addr) &&
	    !directory_owns(c->s->ldap_owned, addr))
		buf_puts(c->bad, addr);
}

/* check_header_from: 0, or -1 with the refusal given. */
static int
submit_session_check_from(struct submit_session *s)
{
	struct submit_data *d = &s->data;
	struct submit_from_check c = { s, &s->tmp };
	int n;

	if (d->nfrom != 1) {
		submit_session_reject(s, "data", "550 5.7.1 Header From: rejected: "
		    "the message must have exactly one From: field");
		return -1;
	}
	buf_reset(&s->tmp);
	n = submit_parse_header_addrs(d->from.data, d->from.len, submit_from_cb, &c);
	if (n <= 0) {
		submit_session_reject(s, "data", "550 5.7.1 Header From: rejected: no valid address");
		return -1;
	}
	if (s->tmp.len > 0) {
		buf_putc(&s->tmp, '\0');    /* reject() reuses tmp: copy the address out */
		buf_reset(&s->line);
		buf_puts(&s->line, s->tmp.data);
		if (s->ldap_down)       /* the directory might own it: later, never 553 */
			submit_session_reject(s, "data", "451 4.3.0 <%s>: Header From address "
			    "rejected: the directory is unavailable, try again later",
			    buf_cstr(&s->line));
		else
			submit_session_reject(s, "data", "553 5.7.1 <%s>: Header From address "
			    "rejected: not owned by user %s", buf_cstr(&s->line), s->login);
		return -1;
	}
	return 0;
}

/* A message the queue could not write: a full disk is 452 4.3.1 (RFC 3463), else 451 4.3.0. */
static const char *
submit_session_queue_reply(int err)
{
	return err == RELAY_ENOSPC ? "452 4.3.1 Error: insufficient system storage" :
	    "451 4.3.0 Error: queue file write error";
}

/* The end of a message's commit, or of its signing (fail: the 4xx to give). */
static void
submit_session_commit_end(struct submit_session *s, int err, const char *qid,
    const char *fail)
{
	struct submit *srv = s->srv;
	struct log_line l;

	if (s->magic != SUBMIT_SESSION_MAGIC || !s->commit_pending)
		fatalx("%s: bad session", __func__);
	s->commit_pending = false;
	if (err == 0) {
		log_begin(&l, LOG_INFO, "accepted");
		log_kv(&l, "qid", qid);
		log_kv(&l, "from", s->env.sender);
		log_kvu(&l, "nrcpt", s->env.nrcpts);
		log_kvu(&l, "size", s->data.size);
		log_kv(&l, "user", s->login);
		log_kv(&l, "client", s->ip);
		log_kv(&l, "session", s->id);
		log_kv(&l, "dkim", buf_cstr(&s->dkim_ids));
		log_end(&l);
		if (srv->front == NULL)     /* a shard's: on the front's loop, at the commit */
			stats_accepted(srv->stats, (double)(util_mono_ms() - s->eod_ms) / 1000.0,
			    (double)s->data.size);
		submit_lock(srv);
		submit_limits_login_add(srv->limits, s->login, util_mono_ms(), (unsigned)s->env.nrcpts);
		submit_unlock(srv);
		submit_shared_login_add(s);
		submit_session_reply(s, "250 2.0.0 Ok: queued as %s", qid);
	} else {
		if (fail == NULL)
			log_event(LOG_ERR, "queue_error", "session", s->id, "stage", "commit", NULL);
		if (fail == NULL)
			fail = submit_session_queue_reply(err);
		submit_session_count_reject(srv, fail);
		submit_session_reply(s, "%s", fail);
	}
	submit_session_reset_txn(s);
	if (s->io == NULL) {
		submit_session_release(s);  /* the client left while we waited */
		return;
	}
	if (srv->shutting_down) {
		submit_session_shutdown(s);
		return;
	}
	submit_enter_state(s, SUBMIT_S_HELO);
}

void
submit_session_committed(void *arg, int err, const char *qid)
{
	submit_session_commit_end(arg, err, qid, NULL);
}

void
submit_session_commit(struct submit_session *s, struct queue_txn *txn)
{
	if (s->srv->front != NULL)
		submit_worker_txn_commit(s, txn);
	else
		queue_txn_commit(txn, submit_session_committed, s);
}

void
submit_session_sign_failed(struct submit_session *s)
{
	submit_session_commit_end(s, RELAY_EIO, NULL,
	    "451 4.3.0 Error: cannot sign the message, try again later");
}

/* <CRLF>.<CRLF> was read. */
static void
submit_session_data_end(struct submit_session *s)
{
	struct submit_data *d = &s->data;
	struct queue_txn *txn;
	int rc = 0;

	submit_data_finish(d);
	switch (d->err) {
	case SUBMIT_DATA_OK:
		break;
	case SUBMIT_DATA_BARE:
		submit_session_reject(s, "data", "550 5.6.11 Error: bare <LF> or <CR> received: "
		    "bare LF/CR not allowed (SMTP smuggling)");
		rc = -1;
		break;
	case SUBMIT_DATA_TOO_BIG:
		submit_session_reject(s, "data", "552 5.3.4 Error: message file too big");
		rc = -1;
		break;
	case SUBMIT_DATA_LONG_LINE:
		submit_session_reject(s, "data", "554 5.6.0 Error: message text line too long "
		    "(limit %d octets with CRLF)", SUBMIT_TEXT_LINE_MAX);
		rc = -1;
		break;
	case SUBMIT_DATA_HEADER_FROM:
		submit_session_reject(s, "data", "550 5.7.1 Header From: rejected: too long to check");
		rc = -1;
		break;
	case SUBMIT_DATA_NUL:
		submit_session_reject(s, "data", "550 5.6.0 Error: message contains a NUL byte: "
		    "not allowed in SMTP text");
		rc = -1;
		break;
	case SUBMIT_DATA_WRITE:
	default:
		log_event(LOG_ERR, "queue_error", "session", s->id, "stage", "write", NULL);
		submit_session_reject(s, "data", "%s",
		    submit_session_queue_reply(queue_txn_error(s->txn)));
		rc = -1;
		break;
	}
	if (rc == 0 && s->conf->submit.check_header_from)
		rc = submit_session_check_from(s);
	if (rc != 0) {
		submit_session_reset_txn(s);    /* aborts: nothing is queued */
		submit_enter_state(s, SUBMIT_S_HELO);
		return;
	}
	txn = s->txn;
	s->txn = NULL;                      /* consumed by the commit */
	s->commit_pending = true;
	s->eod_ms = util_mono_ms();
	submit_enter_state(s, SUBMIT_S_COMMIT);
	if (submit_dkim_sign(s, txn) == 0)
		submit_session_commit(s, txn);
}

/* ---- BDAT (RFC 3030) ---- */

/* A refused BDAT whose chunk is not read: 421, and the connection closes. */
static void
submit_bdat_close(struct submit_session *s, const char *code, const char *why)
{
	char text[512];

	snprintf(text, sizeof(text), "421 %s %s Error: %s, closing connection", code,
	    s->conf->hostname, why);
	submit_session_close(s, text);
}

/*
 * The octets of a refused BDAT are read and dropped, so that the session
 * stays in step with the client (RFC 3030 2), but only for an authenticated
 * client and a chunk within max_message_size: otherwise anyone could make
 * relayd read any amount.  Then, and when the size cannot be read (nobody can
 * tell where the chunk ends), the connection is closed.
 */
static void submit_bdat_drop_size(struct submit_session *s, uint64_t size);

static void
submit_bdat_drop(struct submit_session *s, const char *args)
{
	uint64_t size;
	bool last;

	if (submit_parse_bdat(args, &size, &last) != 0) {
		submit_bdat_close(s, "4.5.0", "BDAT chunk size unknown");
		return;
	}
	submit_bdat_drop_size(s, size);
}

static void
submit_bdat_drop_size(struct submit_session *s, uint64_t size)
{
	if (s->login == NULL) {
		submit_bdat_close(s, "4.7.0", "BDAT chunk not read before authentication");
		return;
	}
	if (size > s->conf->submit.max_message_size) {
		submit_bdat_close(s, "4.3.4", "BDAT chunk larger than the message size limit");
		return;
	}
	s->chunk_left = size;
	s->chunk_drop = true;
	s->chunk_return = s->state;         /* read in BDAT, with its timeout */
	submit_enter_state(s, SUBMIT_S_BDAT);
}

/* A BDAT refused mid-message: the message is given up (RFC 3030 4.2: the
 * client sends no more chunks of it; those already sent get 503). */
static void
submit_bdat_fail(struct submit_session *s)
{
	submit_session_reset_txn(s);
	submit_enter_state(s, SUBMIT_S_HELO);
}

static void submit_bdat_chunk(struct submit_session *s, uint64_t size, bool last);
static void submit_session_input(struct submit_session *s);

static void
submit_cmd_bdat(struct submit_session *s, char *args)
{
	uint64_t size;
	bool last;
	int rc;

	if (submit_parse_bdat(args, &size, &last) != 0) {
		submit_session_reply(s, "501 5.5.4 Syntax: BDAT chunk-size [LAST]");
		submit_bdat_drop(s, args);          /* closes */
		return;
	}
	if (s->state == SUBMIT_S_RCPT) {
		s->chunk_total = 0;
		s->chunk_size = size;               /* kept for submit_session_begun() */
		s->chunk_last = last;
		if ((rc = submit_session_message_begin(s, true)) != 0) {
			if (rc < 0)
				submit_bdat_drop_size(s, size);
			return;
		}
		submit_data_chunked(&s->data);
	}
	submit_bdat_chunk(s, size, last);
}

/* A BDAT of the message (its txn begun): its octets are read next. */
static void
submit_bdat_chunk(struct submit_session *s, uint64_t size, bool last)
{
	uint64_t max = s->conf->submit.max_message_size;

	if (size > max || s->chunk_total > max - size) {
		/* as DATA's: the message is too big, whatever is still to come */
		submit_session_reject(s, "data", "552 5.3.4 Error: message file too big");
		submit_bdat_fail(s);
		submit_bdat_drop_size(s, size);
		return;
	}
	s->chunk_total += size;
	s->chunk_size = size;
	s->chunk_left = size;
	s->chunk_last = last;
	s->chunk_drop = false;
	submit_enter_state(s, SUBMIT_S_BDAT);
}

void
submit_session_begun(struct submit_session *s, int rc, struct queue_txn *txn)
{
	if (s->magic != SUBMIT_SESSION_MAGIC || !s->begin_pending)
		fatalx("%s: bad session", __func__);
	s->begin_pending = false;
	if (s->io == NULL || s->srv->shutting_down) {
		if (rc == 0)
			submit_worker_txn_abort(s->srv, txn);
		if (s->io == NULL)
			submit_session_release(s);  /* the client left while we waited */
		else
			submit_session_shutdown(s);
		return;
	}
	if (submit_session_message_started(s, rc, rc == 0 ? txn : NULL) != 0) {
		if (s->begin_bdat && s->io != NULL)
			submit_bdat_drop_size(s, s->chunk_size);
	} else if (!s->begin_bdat) {
		submit_data_begun(s);
		return;
	} else {
		submit_data_chunked(&s->data);
		submit_bdat_chunk(s, s->chunk_size, s->chunk_last);
	}
	/* the chunk's octets to take or drop may be none (BDAT 0 LAST): the
	 * io's kick comes only for octets already in */
	if (s->io != NULL && s->state == SUBMIT_S_BDAT)
		submit_session_input(s);
}

/* All octets of an accepted chunk are in. */
static void
submit_bdat_chunk_end(struct submit_session *s)
{
	if (s->chunk_last) {
		submit_data_bytes_last(&s->data);
		submit_session_data_end(s);         /* as DATA's end: checks, commit, reply */
		return;
	}
	if (s->data.err == SUBMIT_DATA_WRITE) {
		log_event(LOG_ERR, "queue_error", "session", s->id, "stage", "write", NULL);
		submit_session_reject(s, "data", "%s",
		    submit_session_queue_reply(queue_txn_error(s->txn)));
		submit_bdat_fail(s);
		return;
	}
	submit_enter_state(s, SUBMIT_S_CHUNKS);
	submit_session_reply(s, "250 2.0.0 Ok: %" PRIu64 " octets received", s->chunk_size);
}

/*
 * Read the current chunk's octets as they are buffered.  Returns 0 when the
 * chunk is complete (and handled), -1 when more input must come first.
 */
static int
submit_bdat_input(struct submit_session *s)
{
	const char *p;
	size_t n;

	while (s->chunk_left > 0) {
		n = io_getbytes(s->io, s->chunk_left < SIZE_MAX ? (size_t)s->chunk_left : SIZE_MAX, &p);
		if (n == 0)
			return -1;
		s->chunk_left -= n;
		if (!s->chunk_drop)
			submit_data_bytes(&s->data, p, n);
	}
	if (s->chunk_drop) {
		s->chunk_drop = false;
		submit_enter_state(s, s->chunk_return);
	} else
		submit_bdat_chunk_end(s);
	return 0;
}

static void
submit_cmd_rset(struct submit_session *s, char *args)
{
	submit_session_reset_txn(s);
	if (s->state == SUBMIT_S_MAIL || s->state == SUBMIT_S_RCPT || s->state == SUBMIT_S_CHUNKS)
		submit_enter_state(s, SUBMIT_S_HELO);
	submit_session_reply(s, "250 2.0.0 Ok");
}

static void
submit_cmd_noop(struct submit_session *s, char *args)
{
	submit_session_reply(s, "250 2.0.0 Ok");
}

static void
submit_cmd_quit(struct submit_session *s, char *args)
{
	submit_session_close(s, "221 2.0.0 Bye");
}

static void
submit_cmd_vrfy(struct submit_session *s, char *args)
{
	submit_session_reply(s, "252 2.0.0 Cannot VRFY user, but will accept message "
	    "and attempt delivery");
}

static void
submit_cmd_help(struct submit_session *s, char *args)
{
	submit_session_reply(s, "214 2.0.0 Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA "
	    "BDAT RSET NOOP QUIT VRFY HELP; see RFC 5321 and RFC 6409");
}

/* A command refused before it ran; a BDAT's octets are read and dropped all the same. */
static void
submit_session_refuse(struct submit_session *s, const struct submit_cmd *cmd, const char *args,
    const char *text)
{
	submit_session_reply(s, "%s", text);
	if ((cmd->flags & SUBMIT_F_CHUNK) && s->io != NULL)
		submit_bdat_drop(s, args);
}

/*
 * A command line refused before the command table: a line that looks like
 * BDAT may have a chunk behind it that nobody can find, so those octets must
 * not run as commands; the connection is closed.
 */
static void
submit_session_unreadable(struct submit_session *s, const char *line, size_t n,
    const char *text)
{
	submit_session_reply(s, "%s", text);
	while (n > 0 && (*line == ' ' || *line == '\t')) {
		line++;
		n--;
	}
	if (s->io != NULL && n >= 4 && util_strncasecmp(line, "BDAT", 4) == 0)
		submit_bdat_close(s, "4.5.0", "BDAT chunk cannot be found");
}

/* One command line (terminator included). */
static void
submit_session_command(struct submit_session *s, const char *line, size_t len)
{
	const struct submit_cmd *cmd = NULL;
	char *verb, *args;
	size_t n = len, i;

	if (n > 0 && line[n - 1] == '\n')
		n--;
	if (n > 0 && line[n - 1] == '\r')
		n--;
	if (memchr(line, '\0', n) != NULL) {
		submit_session_unreadable(s, line, n, "500 5.5.2 Error: NUL character in command");
		return;
	}
	buf_reset(&s->line);
	buf_append(&s->line, line, n);
	if (submit_parse_command(s->line.data, &verb, &args) != 0) {
		submit_session_unreadable(s, line, n, "500 5.5.2 Error: bad syntax");
		return;
	}
	for (i = 0; i < RELAY_ARRAY_LEN(submit_cmds); i++)
		if (util_strcasecmp(verb, submit_cmds[i].verb) == 0) {
			cmd = &submit_cmds[i];
			break;
		}
	if (cmd == NULL) {
		submit_session_reply(s, "500 5.5.2 Error: command not recognized");
		return;
	}
	if (n + 2 > SUBMIT_CMD_LINE_MAX && !(cmd->flags & SUBMIT_F_LONG)) {
		submit_session_refuse(s, cmd, args, "500 5.5.2 Error: line too long");
		return;
	}
	/* Before AUTH, nothing may be pipelined behind EHLO, AUTH ... (Postfix) */
	if (s->barrier && s->login == NULL) {
		submit_session_refuse(s, cmd, args,
		    "503 5.5.0 Error: improper use of SMTP command pipelining");
		return;
	}
	if (!(cmd->flags & SUBMIT_F_PIPE))
		s->barrier = true;
	for (i = 0; i < RELAY_ARRAY_LEN(submit_checks); i++) {
		if (!(cmd->flags & submit_checks[i].flag) || !submit_checks[i].fails(s, args))
			continue;
		if (submit_checks[i].reply != NULL) {
			submit_session_refuse(s, cmd, args, submit_checks[i].reply);
		} else {
			buf_reset(&s->tmp);
			buf_printf(&s->tmp, "501 5.5.4 Syntax: %s", cmd->syntax);
			submit_session_refuse(s, cmd, args, buf_cstr(&s->tmp));
		}
		return;
	}
	cmd->proceed(s, args);
}

static void
submit_session_input(struct submit_session *s)
{
	const char *line;
	size_t len, nlines = 0;
	uint64_t ndata = 0;
	enum io_line r;
	char text[512];

	if (!s->resumed)
		s->barrier = false;     /* a new batch from the client */
	s->resumed = false;
	while (s->io != NULL && submit_states[s->state].input) {
		if (s->state == SUBMIT_S_BDAT) {
			uint64_t left = s->chunk_left;
			int more = submit_bdat_input(s);

			ndata += left - s->chunk_left;      /* earns time (submit_deadline.c) */
			if (more != 0)
				break;
			continue;
		}
		r = io_getline(s->io, &line, &len);
		if (r == IO_LINE_NONE)
			break;
		nlines++;
		if (s->state == SUBMIT_S_DATA) {
			ndata += r == IO_LINE_OK ? len : SUBMIT_TEXT_LINE_MAX;
			if (r == IO_LINE_LONG)
				submit_data_long_line(&s->data);
			else if (submit_data_line(&s->data, line, len) == 1)
				submit_session_data_end(s);
			continue;
		}
		if (r == IO_LINE_LONG) {
			if (s->state == SUBMIT_S_AUTH) {  /* an AUTH response, not a command */
				submit_auth_reset(s);
				submit_enter_state(s, SUBMIT_S_HELO);
				submit_session_reply(s, "500 5.5.2 Error: line too long");
			} else
				submit_session_unreadable(s, line, len,
				    "500 5.5.2 Error: line too long");
		} else if (s->state == SUBMIT_S_AUTH) {
			submit_auth_response(s, line, len);
		} else {
			submit_session_command(s, line, len);
		}
		if (s->io != NULL && s->nerrors > s->conf->submit.max_command_errors) {
			snprintf(text, sizeof(text), "421 4.7.0 %s Error: too many errors",
			    s->conf->hostname);
			submit_session_close(s, text);
		}
	}
	submit_deadline_progress(s, nlines, ndata);
}

static void
submit_session_greet(struct submit_session *s)
{
	if (s->refuse != NULL) {
		submit_session_close(s, s->refuse);     /* it holds no slot */
		return;
	}
	s->greeted = true;
	submit_enter_state(s, SUBMIT_S_CONNECTED);
	submit_session_reply(s, "220 %s ESMTP relayd", s->conf->hostname);
}

static void
submit_session_io(struct io *io, enum io_event ev, void *arg)
{
	struct submit_session *s = arg;
	struct log_line l;
	char text[512];

	if (s->magic != SUBMIT_SESSION_MAGIC)
		fatalx("%s: bad session", __func__);
	if (s->io != io)
		return;
	switch (ev) {
	case IO_EV_IN:
		if (s->state == SUBMIT_S_PROXY)
			submit_proxy_input(s);
		else
			submit_session_input(s);
		break;
	case IO_EV_TLS_READY:
		if (!s->greeted)
			submit_session_greet(s);        /* implicit TLS: greet now */
		else
			submit_enter_state(s, SUBMIT_S_CONNECTED);  /* after STARTTLS */
		break;
	case IO_EV_TIMEOUT:
		if (s->state == SUBMIT_S_PROXY) {
			submit_proxy_refuse(s, "timeout");
			break;
		}
		log_begin(&l, LOG_INFO, "session_timeout");
		log_kv(&l, "session", s->id);
		log_kv(&l, "client", s->ip);
		log_kv(&l, "phase", submit_deadline_phase(s->deadline));
		log_kv(&l, "state", submit_states[s->state].name);
		log_kv(&l, "user", s->login);
		log_kvu(&l, "age_ms", util_mono_ms() - s->born_ms);
		log_end(&l);
		snprintf(text, sizeof(text), "421 4.4.2 %s Error: timeout exceeded", s->conf->hostname);
		submit_session_close(s, s->state == SUBMIT_S_TLS_WAIT ? NULL : text);
		break;
	case IO_EV_ERROR:
		if (s->state == SUBMIT_S_PROXY) {
			submit_proxy_refuse(s, "error");
			break;
		}
		log_event(LOG_DEBUG, "io_error", "session", s->id, "client", s->ip,
		    "error", io_error_text(io), NULL);
		submit_session_close(s, NULL);
		break;
	case IO_EV_EOF:
		if (s->state == SUBMIT_S_PROXY) {
			submit_proxy_refuse(s, s->proxy_hdr.len == 0 ? "missing" : "eof");
			break;
		}
		submit_session_close(s, NULL);
		break;
	case IO_EV_CONNECTED:
	case IO_EV_DRAINED:
		break;
	}
}

void
submit_session_accept(struct submit *srv, struct submit_listener *lst)
{
	struct submit_session *s = xcalloc(1, sizeof(*s));

	s->magic = SUBMIT_SESSION_MAGIC;
	s->srv = srv;
	s->io = io_new(srv->loop, submit_session_io, s);
	if (io_accept(s->io, (uv_stream_t *)&lst->tcp) != 0) {
		io_free(s->io);
		s->magic = 0;
		free(s);
		return;
	}
	s->conf = conf_ref(srv->conf);
	s->listener = lst;
	s->implicit_tls = lst->implicit_tls;
	/* unique across the shards: the front's counter */
	snprintf(s->id, sizeof(s->id), "S%" PRIx64, srv->front == NULL ? ++srv->next_session_id :
	    __atomic_add_fetch(&srv->front->next_session_id, 1, __ATOMIC_RELAXED));
	snprintf(s->ip, sizeof(s->ip), "%s", io_peer_ip(s->io));
	snprintf(s->local_ip, sizeof(s->local_ip), "%s", io_local_ip(s->io));
	s->port = io_peer_port(s->io);
	s->born_ms = util_mono_ms();
	submit_data_init(&s->data);
	uv_timer_init(srv->loop, &s->timer);
	s->timer.data = s;
	TAILQ_INSERT_TAIL(&srv->sessions, s, entry);
	submit_server_count(srv, 1);
	if (srv->front != NULL)
		submit_worker_stat(srv, 1, 0, NULL);
	else
		srv->stats->connections++;

	if (lst->proxy)
		(void)submit_proxy_start(s);    /* then submit_session_begin(), or closed */
	else
		submit_session_begin(s, 0, false);
}

int
submit_session_reserve(struct submit_session *s)
{
	struct submit *srv = s->srv;
	bool evictable;

	/* no eviction here: the header's client may be at its per-IP limit,
	 * or none may come (a load balancer's check) */
	submit_lock(srv);
	s->reserved = submit_limits_conn_reserve(srv->limits) == SUBMIT_CONN_OK;
	evictable = !s->reserved && submit_slots_victim(srv->slots) != NULL;
	submit_unlock(srv);
	if (s->reserved)
		return 0;
	if (!evictable || srv->nunplaced >= SUBMIT_UNPLACED_MAX)
		return -1;
	s->unplaced = true;
	srv->nunplaced++;
	return 0;
}

void
submit_session_begin(struct submit_session *s, int proxy_version, bool proxy_local)
{
	struct submit *srv = s->srv;
	struct submit_session *victim;
	enum submit_conn_verdict v;
	const char *reason = NULL;
	struct log_line l;
	size_t unauth = 0;

	/* one step under the shards' lock: room made, counted, listed (a PROXY
	 * connection's place in max_connections becomes its slot, or is given up) */
	if (s->unplaced) {
		s->unplaced = false;
		srv->nunplaced--;
	}
	submit_lock(srv);
	if (s->reserved) {
		submit_limits_conn_unreserve(srv->limits);
		s->reserved = false;
	}
	victim = submit_slots_make_room(srv, s->ip, &reason, &unauth);
	if (victim != NULL && victim->srv != srv) {
		(void)submit_worker_evict(victim, reason, unauth);  /* its own loop closes it */
		victim = NULL;
	}
	v = submit_limits_conn_open(srv->limits, s->ip);
	if (v == SUBMIT_CONN_OK) {
		s->counted = true;
		submit_slots_add(srv->slots, s);
	}
	submit_unlock(srv);
	if (victim != NULL)
		submit_slots_evict(victim, reason, unauth);
	if (v != SUBMIT_CONN_OK) {
		s->refuse = v == SUBMIT_CONN_TOTAL ?
		    "421 4.7.0 Error: too many connections, try again later" :
		    "421 4.7.0 Error: too many connections from your address, try again later";
		log_begin(&l, LOG_NOTICE, "connection_refused");
		log_kv(&l, "session", s->id);
		log_kv(&l, "client", s->ip);
		log_kv(&l, "reason", v == SUBMIT_CONN_TOTAL ? "max_connections" : "max_connections_per_ip");
		log_end(&l);
	}
	log_begin(&l, LOG_DEBUG, "connect");
	log_kv(&l, "session", s->id);
	log_kv(&l, "client", s->ip);
	log_kvi(&l, "port", s->port);
	log_kv(&l, "listener", s->listener->text);
	if (srv->shard_no > 0)
		log_kvu(&l, "worker", srv->shard_no);
	if (proxy_version > 0) {
		log_kv(&l, "proxy", s->proxy_ip);
		log_kvi(&l, "proxy_version", proxy_version);
		if (proxy_local)
			log_kv(&l, "proxy_command", proxy_version == 1 ? "unknown" : "local");
	}
	log_end(&l);

	submit_enter_state(s, SUBMIT_S_TLS_WAIT);
	if (!s->implicit_tls) {
		submit_session_greet(s);
	} else if ((s->refuse != NULL && srv->nrefusing >= SUBMIT_REFUSING_MAX) ||
	    srv->tls_ctx == NULL || io_start_tls_server(s->io, srv->tls_ctx) != 0) {
		submit_session_close(s, NULL);
	} else if (s->refuse != NULL) {
		s->refusing = true;
		srv->nrefusing++;
	}
}
