/*
 * deliver_session.c - one outbound SMTP connection: the client state machine
 * (RFC 5321, 3207 STARTTLS, 4954 AUTH, 2920 PIPELINING, 1870 SIZE, 6152
 * 8BITMIME, 6531 SMTPUTF8, 3461 DSN) that runs transactions for the pool.
 *
 * Shape: a table of states {name, timeout, enter, reply}; deliver_enter_state()
 * is the only place the state changes (and traces old -> new); each complete
 * reply goes to the current state's reply handler.
 *
 *   CONNECT -> GREETING -> EHLO (-> HELO on 5xx) -> [STARTTLS -> TLS -> EHLO2]
 *           -> [AUTH] -> MAIL -> RCPT... -> DATA -> BODY -> DOT -> IDLE
 *   (a transaction that did not end with 2xx to the final dot: ... -> RSET -> IDLE)
 *   IDLE -> MAIL (reuse)   IDLE -> RSET -> MAIL (reuse after more than
 *   DELIVER_REUSE_VERIFY_MS idle)   IDLE -> QUIT (idle timeout)
 *
 * Owns: the io, the reply parser, the body file descriptor while in BODY, the
 * SASL client (struct deliver_auth) while in AUTH and, while busy, one
 * struct deliver_txn (borrowed caller's deliver_req).  The
 * pool owns struct deliver_conn; a session frees itself, after the pool has
 * forgotten its conn, once no call on its stack still uses it (s->depth).
 *
 * Decisions worth knowing (see also deliver.h):
 *  - Reply text is "CODE line1 / line2 ...", the server's words verbatim
 *    (control characters become '?').
 *  - STARTTLS under "opportunistic": used whenever offered; plaintext only
 *    when the server does not offer it.  Offered but answered with an error
 *    -> HOST_FAIL (io_err TLS, 4.7.5, the server's code and words); the
 *    handshake fails -> HOST_FAIL (io_err TLS, 4.7.5).  Either way the
 *    router tries the next exchanger: mail never goes in clear to a server
 *    that offered TLS.
 *  - Under require/verify: not offered or refused -> HOST_FAIL 4.7.4;
 *    handshake or certificate failure -> HOST_FAIL 4.7.5.
 *  - Under a DANE policy (req->policy, RFC 7672): TLS is mandatory whatever
 *    req->tls says; not offered, refused, a failed handshake or a peer
 *    matching no TLSA record -> HOST_FAIL 4.7.5 with an RFC 8460 result
 *    type in res.tls_result; the router tries the next exchanger.
 *  - AUTH goes through the Cyrus SASL client (deliver_auth.c), which picks
 *    the mechanism from the server's list; it is sent only over TLS; without
 *    TLS -> HOST_FAIL 4.7.4 (credentials are never sent in clear).  A refused
 *    AUTH -> DELIVER_TEMP, server reply; no usable mechanism -> TEMP 4.7.0.
 *  - Per-recipient results (rcpts[].code/status/reply) are filled for every
 *    RCPT answered, whatever the overall status; accepted recipients get the
 *    end-of-data reply.
 *  - No RSET after a transaction that ended with 2xx to the final dot: the
 *    server is ready for the next MAIL at once (RFC 5321 4.1.4), so a request
 *    that reuses the connection soon sends MAIL directly.  A connection idle
 *    for more than DELIVER_REUSE_VERIFY_MS is checked with RSET before its
 *    MAIL (Postfix's smtp_rset_timeout probe).  Any other end of a
 *    transaction that sent MAIL (refused MAIL, DATA or dot, no recipient
 *    accepted) is followed by RSET at once.
 *  - A reused connection that dies (EOF, reset, 421), or refuses or times
 *    out on the RSET that checks it, before answering the transaction's
 *    first command is not the host's fault: the request goes back to the
 *    pool and runs on a fresh connection.
 *  - The body is read with pread() in 64 KiB chunks, one chunk per "drained"
 *    event: memory stays bounded; queue files are local and freshly written.
 *    A request that carries the body in memory (req->body: the message's
 *    image, kept after its publish) is sent from there in the same chunks,
 *    with no open/pread/close.
 *
 * Never: touch SSL* or uv_buf_t; send AUTH without TLS; call a request's
 * callback twice; send the final "." after a short read of the queue file.
 */
#include "deliver/deliver_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/x509_vfy.h>

#include "common/log.h"
#include "common/util.h"

enum deliver_state {
	DS_CONNECT,
	DS_GREETING,
	DS_EHLO,
	DS_HELO,
	DS_STARTTLS,
	DS_TLS,
	DS_EHLO2,
	DS_AUTH,
	DS_MAIL,
	DS_RCPT,
	DS_DATA,
	DS_BODY,
	DS_DOT,
	DS_RSET,
	DS_IDLE,
	DS_QUIT,
	DS_NSTATES
};

/* Which configured timeout guards a state (RFC 5321 4.5.3.2). */
enum deliver_tmo {
	TMO_NONE,
	TMO_GREETING,
	TMO_COMMAND,
	TMO_DATA_INIT,
	TMO_DATA_BLOCK,
	TMO_DATA_DONE,
	TMO_IDLE,
};

#define DELIVER_QUIT_TIMEOUT_MS 5000     /* a QUIT that cannot be written is given up */

/* Handler results: go on reading replies, stop reading (TLS started), or the session is gone. */
enum { DS_OK = 0, DS_STOP = 1, DS_GONE = -1 };

struct deliver_session {
	struct deliver_conn *c;     /* NULL once the pool has forgotten it */
	struct deliver *d;
	struct io *io;
	enum deliver_state state;
	struct deliver_caps caps;
	struct deliver_reply reply;
	char ip[64];
	char host[256];             /* exchanger name of the first request (SNI, verify) */
	enum conf_tls tls_policy;
	enum deliver_policy policy; /* DANE and friends: TLS mandatory (deliver.h) */
	bool tls_verify;
	char helo[256];
	struct deliver_auth *auth;  /* the SASL client while in AUTH, else NULL */

	struct deliver_txn *t;      /* the transaction in progress, or NULL */
	bool reused;                /* t runs on a connection that served before */
	bool replied;               /* t has had at least one reply */
	bool pipelined;
	bool mail_sent;
	bool mail_failed;
	size_t rcpt_next;           /* index of the next RCPT reply expected */
	size_t naccepted;
	bool decided;               /* res holds t's outcome; later failures keep it */
	struct deliver_result res;

	int fd;                     /* queue file while in BODY (not from req->body), else -1 */
	bool in_body;               /* sending the body (from fd or req->body) */
	uint64_t body_sent;
	char *chunk;
	struct buf out;
	struct deliver_dot dot;

	unsigned depth;             /* calls on the stack that use this session */
	bool zombie;                /* closed: free when depth drops to 0 */
};

struct deliver_row {
	enum deliver_state state;
	const char *name;
	enum deliver_tmo tmo;
	int (*enter)(struct deliver_session *);
	int (*reply)(struct deliver_session *, const struct deliver_reply *);
};

static int ds_ehlo_enter(struct deliver_session *);
static int ds_helo_enter(struct deliver_session *);
static int ds_starttls_enter(struct deliver_session *);
static int ds_tls_enter(struct deliver_session *);
static int ds_auth_enter(struct deliver_session *);
static int ds_mail_enter(struct deliver_session *);
static int ds_rcpt_enter(struct deliver_session *);
static int ds_data_enter(struct deliver_session *);
static int ds_body_enter(struct deliver_session *);
static int ds_rset_enter(struct deliver_session *);
static int ds_idle_enter(struct deliver_session *);
static int ds_quit_enter(struct deliver_session *);

static int ds_greeting_reply(struct deliver_session *, const struct deliver_reply *);
static int ds_ehlo_reply(struct deliver_session *, const struct deliver_reply *);
static int ds_helo_reply(struct deliver_session *, const struct deliver_reply *);
static int ds_starttls_reply(struct deliver_session *, const struct deliver_reply *);
static int ds_auth_reply(struct deliver_session *, const struct deliver_reply *);
static int ds_mail_reply(struct deliver_session *, const struct deliver_reply *);
static int ds_rcpt_reply(struct deliver_session *, const struct deliver_reply *);
static int ds_data_reply(struct deliver_session *, const struct deliver_reply *);
static int ds_body_reply(struct deliver_session *, const struct deliver_reply *);
static int ds_dot_reply(struct deliver_session *, const struct deliver_reply *);
static int ds_rset_reply(struct deliver_session *, const struct deliver_reply *);
static int ds_idle_reply(struct deliver_session *, const struct deliver_reply *);

static const struct deliver_row deliver_rows[DS_NSTATES] = {
	{ DS_CONNECT,  "CONNECT",  TMO_NONE,       NULL,              NULL },
	{ DS_GREETING, "GREETING", TMO_GREETING,   NULL,              ds_greeting_reply },
	{ DS_EHLO,     "EHLO",     TMO_COMMAND,    ds_ehlo_enter,     ds_ehlo_reply },
	{ DS_HELO,     "HELO",     TMO_COMMAND,    ds_helo_enter,     ds_helo_reply },
	{ DS_STARTTLS, "STARTTLS", TMO_COMMAND,    ds_starttls_enter, ds_starttls_reply },
	{ DS_TLS,      "TLS",      TMO_COMMAND,    ds_tls_enter,      NULL },
	{ DS_EHLO2,    "EHLO2",    TMO_COMMAND,    ds_ehlo_enter,     ds_ehlo_reply },
	{ DS_AUTH,     "AUTH",     TMO_COMMAND,    ds_auth_enter,     ds_auth_reply },
	{ DS_MAIL,     "MAIL",     TMO_COMMAND,    ds_mail_enter,     ds_mail_reply },
	{ DS_RCPT,     "RCPT",     TMO_COMMAND,    ds_rcpt_enter,     ds_rcpt_reply },
	{ DS_DATA,     "DATA",     TMO_DATA_INIT,  ds_data_enter,     ds_data_reply },
	{ DS_BODY,     "BODY",     TMO_DATA_BLOCK, ds_body_enter,     ds_body_reply },
	{ DS_DOT,      "DOT",      TMO_DATA_DONE,  NULL,              ds_dot_reply },
	{ DS_RSET,     "RSET",     TMO_COMMAND,    ds_rset_enter,     ds_rset_reply },
	{ DS_IDLE,     "IDLE",     TMO_IDLE,       ds_idle_enter,     ds_idle_reply },
	{ DS_QUIT,     "QUIT",     TMO_NONE,       ds_quit_enter,     NULL },
};

static void deliver_session_cb(struct io *io, enum io_event ev, void *arg);

/* ------------------------------------------------------------------ */
/* Life cycle */

static uint64_t
ds_timeout(const struct deliver_session *s, enum deliver_tmo tmo)
{
	const struct conf *conf = s->d->conf;

	switch (tmo) {
	case TMO_NONE:          return 0;
	case TMO_GREETING:      return conf->deliver.greeting_timeout;
	case TMO_COMMAND:       return conf->deliver.command_timeout;
	case TMO_DATA_INIT:     return conf->deliver.data_init_timeout;
	case TMO_DATA_BLOCK:    return conf->deliver.data_block_timeout;
	case TMO_DATA_DONE:     return conf->deliver.data_done_timeout;
	case TMO_IDLE:          return conf->deliver.idle_timeout;
	}
	fatalx("%s: bad timeout kind %d", __func__, (int)tmo);
}

static const char *
ds_qid(const struct deliver_session *s)
{
	return s->t != NULL && s->t->req->qid != NULL ? s->t->req->qid : NULL;
}

/* The only place the state changes. */
static int
deliver_enter_state(struct deliver_session *s, enum deliver_state next)
{
	const struct deliver_row *row = &deliver_rows[next];
	struct log_line l;
	uint64_t tmo;

	if (row->state != next)
		fatalx("%s: state table out of order at %d", __func__, (int)next);
	log_begin(&l, LOG_DEBUG, "deliver_state");
	log_kv(&l, "qid", ds_qid(s));
	log_kv(&l, "ip", s->ip);
	log_kv(&l, "from", deliver_rows[s->state].name);
	log_kv(&l, "to", row->name);
	log_end(&l);
	s->state = next;
	tmo = ds_timeout(s, row->tmo);
	if (s->io != NULL && row->tmo != TMO_NONE)
		io_set_timeout(s->io, tmo);
	if (row->enter == NULL)
		return DS_OK;
	if (row->enter(s) == DS_GONE || s->zombie)
		return DS_GONE;
	return DS_OK;
}

static void
ds_free(struct deliver_session *s)
{
	if (s->fd >= 0)
		close(s->fd);
	deliver_auth_free(s->auth);
	free(s->chunk);
	buf_free(&s->out);
	deliver_reply_free(&s->reply);
	free(s);
}

static void
ds_unwind(struct deliver_session *s)
{
	if (s->depth == 0)
		fatalx("%s: unbalanced depth", __func__);
	if (--s->depth == 0 && s->zombie)
		ds_free(s);
}

/* Events of an io that is only flushing its QUIT, between io_write() and
 * io_close_after_drain() (after which the io emits none and frees itself on
 * a failure): a failure frees it at once. */
static void
ds_closing_cb(struct io *io, enum io_event ev, void *arg)
{
	if (ev == IO_EV_EOF || ev == IO_EV_ERROR || ev == IO_EV_TIMEOUT)
		io_free(io);
}

/* Close the connection (QUIT first when polite) and leave the pool. */
static int
ds_close(struct deliver_session *s, bool quit)
{
	struct deliver_conn *c = s->c;

	if (s->zombie)
		return DS_GONE;
	s->zombie = true;
	if (s->fd >= 0) {
		close(s->fd);
		s->fd = -1;
	}
	s->in_body = false;
	deliver_auth_free(s->auth);     /* credentials wiped now, not later */
	s->auth = NULL;
	if (s->io != NULL) {
		/* Past DELIVER_QUITTING_MAX waiting for theirs: no QUIT, the socket goes now. */
		if (quit && !deliver_pool_quit_begin(s->d, s->io))
			quit = false;
		if (quit) {
			/* The io lives on until QUIT is out; it must not call us meanwhile. */
			io_set_callback(s->io, ds_closing_cb, NULL);
			io_set_timeout(s->io, DELIVER_QUIT_TIMEOUT_MS);
			io_write(s->io, "QUIT\r\n", 6);
			io_close_after_drain(s->io);
		} else
			io_free(s->io);
		s->io = NULL;
	}
	if (c != NULL) {
		c->s = NULL;
		s->c = NULL;
		deliver_pool_gone(s->d, c);
	}
	if (s->depth == 0)
		ds_free(s);
	return DS_GONE;
}

/* ------------------------------------------------------------------ */
/* Results */

static void
ds_result_text(struct deliver_result *res, const char *text)
{
	snprintf(res->reply, sizeof(res->reply), "%s", text != NULL ? text : "");
}

/* Record t's outcome (the first decision stands). */
static void
ds_decide(struct deliver_session *s, enum deliver_status st, enum io_error ioe,
    int code, const char *status, const char *text)
{
	if (s->decided)
		return;
	s->decided = true;
	s->res.status = st;
	s->res.io_err = ioe;
	s->res.code = code;
	snprintf(s->res.status_code, sizeof(s->res.status_code), "%s", status);
	ds_result_text(&s->res, text);
}

static void
ds_decide_reply(struct deliver_session *s, enum deliver_status st, const struct deliver_reply *r)
{
	struct buf text = BUF_INIT;
	char status[16];

	deliver_reply_format(r, &text);
	deliver_reply_status(r, status, sizeof(status));
	ds_decide(s, st, IO_ERR_NONE, r->code, status, buf_cstr(&text));
	buf_free(&text);
}

/* How this session is secured, for the result ("none" before/without TLS). */
static const char *
ds_tls_how(const struct deliver_session *s)
{
	if (s->io == NULL || !io_is_tls(s->io))
		return "none";
	switch (s->policy) {
	case DELIVER_POLICY_DANE:
		return "dane";
	case DELIVER_POLICY_DANE_UNAUTH:
		return s->tls_verify ? "verify" : "require";
	case DELIVER_POLICY_MTA_STS:
		return "mta-sts";
	case DELIVER_POLICY_CONF:
	case DELIVER_POLICY_MTA_STS_TESTING:
		break;
	}
	return conf_tls_name(s->tls_policy);
}

/* Whether the session's policy makes TLS mandatory (deliver.h). */
static bool
ds_mandatory(const struct deliver_session *s)
{
	return s->policy == DELIVER_POLICY_DANE || s->policy == DELIVER_POLICY_DANE_UNAUTH ||
	    s->policy == DELIVER_POLICY_MTA_STS;
}

/* The policy's name in texts: "DANE", "MTA-STS". */
static const char *
ds_policy_label(const struct deliver_session *s)
{
	return s->policy == DELIVER_POLICY_MTA_STS || s->policy == DELIVER_POLICY_MTA_STS_TESTING ?
	    "MTA-STS" : "DANE";
}

/* A certificate check's outcome as an RFC 8460 result type (MTA-STS: RFC 8460 4.3.2). */
static const char *
ds_verify_result_type(long v)
{
	switch (v) {
	case X509_V_ERR_HOSTNAME_MISMATCH:
		return "certificate-host-mismatch";
	case X509_V_ERR_CERT_HAS_EXPIRED:
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return "certificate-expired";
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_CERT_UNTRUSTED:
		return "certificate-not-trusted";
	}
	return "validation-failure";
}

/*
 * MTA-STS testing (RFC 8461 5): what enforce would have refused, logged and
 * kept in the result for reporting; the session goes on.
 */
static void
ds_report_testing(struct deliver_session *s, const char *result, const char *text)
{
	log_event(LOG_NOTICE, "tls_policy_testing", "qid", ds_qid(s), "ip", s->ip, "host", s->host,
	    "policy", "mta-sts", "result", result, "error", text, NULL);
	if (!s->decided)
		snprintf(s->res.tls_result, sizeof(s->res.tls_result), "%s", result);
}

/* Hand t's outcome to the pool (which calls the request's callback). */
static void
ds_report(struct deliver_session *s)
{
	struct deliver_txn *t = s->t;
	struct log_line l;

	if (t == NULL)
		return;
	if (!s->decided)
		fatalx("%s: no outcome decided", __func__);
	snprintf(s->res.ip, sizeof(s->res.ip), "%s", s->ip);
	s->res.dsn = s->caps.dsn;
	if (s->io != NULL && s->state > DS_GREETING) {
		snprintf(s->res.tls, sizeof(s->res.tls), "%s", ds_tls_how(s));
		snprintf(s->res.tls_version, sizeof(s->res.tls_version), "%s",
		    io_is_tls(s->io) ? io_tls_version(s->io) : "");
	}
	log_begin(&l, LOG_DEBUG, "deliver_attempt");
	log_kv(&l, "qid", ds_qid(s));
	log_kv(&l, "host", t->req->host);
	log_kv(&l, "ip", s->ip);
	log_kvi(&l, "status", (int64_t)s->res.status);
	log_kvi(&l, "code", s->res.code);
	log_kv(&l, "reply", s->res.reply);
	log_end(&l);
	s->t = NULL;
	deliver_pool_finish(s->d, t, &s->res);
}

/*
 * The connection is lost or unusable: report t (its decided outcome, else
 * HOST_FAIL with what happened) and close.  retryable: a reused connection
 * that failed before t's first reply sends t back to the pool instead.
 */
static int
ds_fail(struct deliver_session *s, bool retryable, enum io_error ioe, int code,
    const char *status, const char *text)
{
	if (s->t != NULL) {
		if (retryable && s->reused && !s->replied && !s->decided) {
			struct deliver_txn *t = s->t;

			s->t = NULL;
			t->no_reuse = true;
			deliver_pool_retry(s->d, t);
		} else {
			ds_decide(s, DELIVER_HOST_FAIL, ioe, code, status, text);
			ds_report(s);
		}
	}
	return ds_close(s, false);
}

static int
ds_fail_with_reply(struct deliver_session *s, const struct deliver_reply *r, const char *status,
    bool retryable)
{
	struct buf text = BUF_INIT;
	char st[16];
	int rc;

	deliver_reply_format(r, &text);
	deliver_reply_status(r, st, sizeof(st));
	rc = ds_fail(s, retryable || r->code == 421, IO_ERR_NONE, r->code,
	    status != NULL ? status : st, buf_cstr(&text));
	buf_free(&text);
	return rc;
}

static int
ds_fail_reply(struct deliver_session *s, const struct deliver_reply *r, const char *status)
{
	return ds_fail_with_reply(s, r, status, false);
}

/* A reused connection refused the RSET that checks it: t runs on a fresh one. */
static int
ds_fail_retry_reply(struct deliver_session *s, const struct deliver_reply *r)
{
	return ds_fail_with_reply(s, r, NULL, true);
}

/* A refused STARTTLS: HOST_FAIL with the server's code and words, io_err TLS
 * (the host answered; it is not down), and our enhanced status. */
static int
ds_fail_tls_reply(struct deliver_session *s, const struct deliver_reply *r, const char *status)
{
	struct buf text = BUF_INIT;
	int rc;

	deliver_reply_format(r, &text);
	rc = ds_fail(s, false, IO_ERR_TLS, r->code, status, buf_cstr(&text));
	buf_free(&text);
	return rc;
}

/*
 * After t's outcome is reported: idle at once when the transaction completed
 * (2xx to the final dot: the server is ready for the next MAIL), else RSET
 * first if a MAIL was sent.
 */
static int
ds_next_txn(struct deliver_session *s, bool completed)
{
	bool rset = s->mail_sent && !completed;

	if (rset && s->c != NULL)
		s->c->finishing = true;     /* before the callback: a new request waits for us */
	ds_report(s);
	if (s->d->shutting_down)
		return ds_close(s, true);
	return deliver_enter_state(s, rset ? DS_RSET : DS_IDLE);
}

/* Fill rcpt i from a reply. */
static void
ds_rcpt_set(struct deliver_rcpt *rc, const struct deliver_reply *r)
{
	struct buf text = BUF_INIT;

	deliver_reply_format(r, &text);
	rc->code = r->code;
	deliver_reply_status(r, rc->status, sizeof(rc->status));
	free(rc->reply);
	rc->reply = buf_steal(&text);
}

/* ------------------------------------------------------------------ */
/* Connection set-up */

static int
ds_greeting_reply(struct deliver_session *s, const struct deliver_reply *r)
{
	if (r->code / 100 != 2)
		return ds_fail_reply(s, r, NULL);
	return deliver_enter_state(s, DS_EHLO);
}

static int
ds_ehlo_enter(struct deliver_session *s)
{
	io_printf(s->io, "EHLO %s\r\n", s->helo);
	return DS_OK;
}

static int
ds_helo_enter(struct deliver_session *s)
{
	io_printf(s->io, "HELO %s\r\n", s->helo);
	return DS_OK;
}

/*
 * A TLS policy (DANE) could not be met: HOST_FAIL 4.7.5 with io_err TLS (the
 * host answered: not down) and the RFC 8460 result type, logged.
 */
static int
ds_fail_policy(struct deliver_session *s, int code, const char *result, const char *text)
{
	log_event(LOG_NOTICE, "deliver_tls_failed", "qid", ds_qid(s), "ip", s->ip, "host", s->host,
	    "policy", deliver_policy_name(s->policy), "result", result, "error", text, NULL);
	if (!s->decided)
		snprintf(s->res.tls_result, sizeof(s->res.tls_result), "%s", result);
	return ds_fail(s, false, IO_ERR_TLS, code, "4.7.5", text);
}

/* EHLO done (first or after TLS): TLS, then AUTH, then the transaction. */
static int
ds_after_hello(struct deliver_session *s)
{
	enum conf_tls pol = s->tls_policy;
	bool mandatory = pol == CONF_TLS_REQUIRE || pol == CONF_TLS_VERIFY;

	if (!io_is_tls(s->io) && ds_mandatory(s)) {
		/* DANE (RFC 7672 2.2), MTA-STS enforce (RFC 8461 4.2): TLS or not
		 * this exchanger, whatever req->tls says */
		char text[128];

		if (s->caps.starttls && s->d->tls_ctx != NULL)
			return deliver_enter_state(s, DS_STARTTLS);
		snprintf(text, sizeof(text), "TLS required by %s but %s", ds_policy_label(s),
		    s->caps.starttls ? "no TLS client context" : "STARTTLS not offered");
		return ds_fail_policy(s, 0, s->caps.starttls ? "validation-failure" :
		    "starttls-not-supported", text);
	}
	if (!io_is_tls(s->io) && s->policy == DELIVER_POLICY_MTA_STS_TESTING && !s->caps.starttls)
		ds_report_testing(s, "starttls-not-supported",
		    "TLS required by MTA-STS (mode testing) but STARTTLS not offered");
	if (!io_is_tls(s->io) && pol != CONF_TLS_NONE) {
		if (s->caps.starttls && s->d->tls_ctx != NULL)
			return deliver_enter_state(s, DS_STARTTLS);
		if (mandatory)
			return ds_fail(s, false, IO_ERR_TLS, 0, "4.7.4",
			    s->d->tls_ctx == NULL ? "TLS required but no TLS client context" :
			    "TLS required but not offered");
		if (s->caps.starttls)       /* opportunistic: offered, so TLS or nothing */
			return ds_fail(s, false, IO_ERR_TLS, 0, "4.7.5",
			    "STARTTLS offered but no TLS client context");
		/* opportunistic and not offered: plaintext */
	}
	if (s->t != NULL && s->t->req->auth_user != NULL) {
		if (!io_is_tls(s->io))
			return ds_fail(s, false, IO_ERR_TLS, 0, "4.7.4",
			    "AUTH configured but TLS not available: credentials not sent");
		return deliver_enter_state(s, DS_AUTH);
	}
	return deliver_enter_state(s, DS_MAIL);
}

static int
ds_ehlo_reply(struct deliver_session *s, const struct deliver_reply *r)
{
	if (r->code == 250) {
		deliver_caps_parse(&s->caps, r);
		return ds_after_hello(s);
	}
	if (r->code / 100 == 5 && s->state == DS_EHLO)
		return deliver_enter_state(s, DS_HELO);
	return ds_fail_reply(s, r, NULL);
}

static int
ds_helo_reply(struct deliver_session *s, const struct deliver_reply *r)
{
	if (r->code != 250)
		return ds_fail_reply(s, r, NULL);
	memset(&s->caps, 0, sizeof(s->caps));
	return ds_after_hello(s);
}

static int
ds_starttls_enter(struct deliver_session *s)
{
	io_write(s->io, "STARTTLS\r\n", 10);
	return DS_OK;
}

static int
ds_starttls_reply(struct deliver_session *s, const struct deliver_reply *r)
{
	if (r->code == 220) {
		if (deliver_enter_state(s, DS_TLS) == DS_GONE)
			return DS_GONE;
		return DS_STOP;     /* the io dropped any input behind the 220 */
	}
	if (r->code == 421)
		return ds_fail_reply(s, r, NULL);
	/* Refused after offering it: never plaintext (opportunistic included). */
	if (ds_mandatory(s)) {
		struct buf text = BUF_INIT;
		int rc;

		deliver_reply_format(r, &text);
		rc = ds_fail_policy(s, r->code, "starttls-not-supported", buf_cstr(&text));
		buf_free(&text);
		return rc;
	}
	log_event(LOG_NOTICE, "deliver_tls_failed", "qid", ds_qid(s), "ip", s->ip, "host", s->host,
	    "policy", conf_tls_name(s->tls_policy), "error", "STARTTLS refused", NULL);
	return ds_fail_tls_reply(s, r,
	    s->tls_policy == CONF_TLS_OPPORTUNISTIC ? "4.7.5" : "4.7.4");
}

static int
ds_tls_enter(struct deliver_session *s)
{
	const char *name = s->host[0] != '\0' ? s->host : NULL;
	const struct deliver_req *req = s->t != NULL ? s->t->req : NULL;

	if (s->policy == DELIVER_POLICY_DANE) {
		/* TLS starts on the connection's first transaction: its records */
		if (req == NULL || io_start_tls_client_dane(s->io, s->d->tls_ctx, name, req->tlsa,
		    req->ntlsa) != 0)
			return ds_fail_policy(s, 0, "tlsa-invalid",
			    "cannot start DANE TLS: no usable TLSA record");
		return DS_OK;
	}
	/* MTA-STS testing: the certificate is checked, and the check reported only */
	if (io_start_tls_client_check(s->io, s->d->tls_ctx, name,
	    s->tls_verify || s->policy == DELIVER_POLICY_MTA_STS_TESTING, s->tls_verify) != 0)
		return ds_fail(s, false, IO_ERR_TLS, 0, "4.7.5", "cannot start TLS");
	return DS_OK;
}

static int
ds_tls_ready(struct deliver_session *s)
{
	struct log_line l;

	log_begin(&l, LOG_INFO, "deliver_tls");
	log_kv(&l, "qid", ds_qid(s));
	log_kv(&l, "host", s->host);
	log_kv(&l, "ip", s->ip);
	log_kv(&l, "version", io_tls_version(s->io));
	log_kv(&l, "cipher", io_tls_cipher(s->io));
	log_kv(&l, "verified", s->policy == DELIVER_POLICY_DANE ? "dane" :
	    s->tls_verify ? "yes" : "no");
	log_kv(&l, "tls", ds_tls_how(s));
	log_end(&l);
	if (s->policy == DELIVER_POLICY_MTA_STS_TESTING && io_tls_verify_result(s->io) != X509_V_OK) {
		char text[320];

		snprintf(text, sizeof(text), "certificate verify failed: %s",
		    X509_verify_cert_error_string(io_tls_verify_result(s->io)));
		ds_report_testing(s, ds_verify_result_type(io_tls_verify_result(s->io)), text);
	}
	return deliver_enter_state(s, DS_EHLO2);
}

/* The handshake failed (error or the peer closed during it). */
static int
ds_tls_failed(struct deliver_session *s)
{
	char text[320];
	const char *why = io_tls_error(s->io);

	snprintf(text, sizeof(text), "TLS handshake failed: %s",
	    why != NULL ? why : io_error_text(s->io));
	if (ds_mandatory(s))
		return ds_fail_policy(s, 0, s->policy == DELIVER_POLICY_MTA_STS ?
		    ds_verify_result_type(io_tls_verify_result(s->io)) : "validation-failure", text);
	log_event(LOG_NOTICE, "deliver_tls_failed", "qid", ds_qid(s), "ip", s->ip, "host", s->host,
	    "policy", conf_tls_name(s->tls_policy), "error", text, NULL);
	return ds_fail(s, false, IO_ERR_TLS, 0, "4.7.5", text);
}

/* s->out held AUTH data: wipe it (the io has its own copy until written). */
static void
ds_wipe_out(struct deliver_session *s)
{
	if (s->out.len > 0)
		explicit_bzero(s->out.data, s->out.len);
	buf_reset(&s->out);
}

/* AUTH cannot be done (no mechanism, SASL failure): the mail waits for the admin. */
static int
ds_auth_impossible(struct deliver_session *s, const char *text, bool quit)
{
	ds_decide(s, DELIVER_TEMP, IO_ERR_NONE, 0, "4.7.0", text);
	ds_report(s);
	return ds_close(s, quit);
}

static int
ds_auth_enter(struct deliver_session *s)
{
	const struct deliver_req *req = s->t->req;
	char err[400];
	int rc;

	if (s->caps.auth_mechs[0] == '\0')
		return ds_auth_impossible(s, "AUTH configured but the exchanger offers no AUTH", true);
	deliver_auth_free(s->auth);
	s->auth = deliver_auth_new(s->d, s->host[0] != '\0' ? s->host : s->ip, req->auth_user,
	    req->auth_password, (unsigned)io_tls_cipher_bits(s->io), err, sizeof(err));
	if (s->auth == NULL)
		return ds_auth_impossible(s, err, true);
	buf_reset(&s->out);
	rc = deliver_auth_start(s->auth, s->caps.auth_mechs, &s->out, err, sizeof(err));
	if (rc == 0)
		io_write(s->io, s->out.data, s->out.len);
	ds_wipe_out(s);
	if (rc != 0)
		return ds_auth_impossible(s, err, true);
	log_event(LOG_DEBUG, "deliver_auth_start", "qid", ds_qid(s), "ip", s->ip,
	    "mech", deliver_auth_mech(s->auth), NULL);
	return DS_OK;
}

/* The text of a 334 reply's (first) line: the base64 challenge. */
static void
ds_auth_challenge(const struct deliver_reply *r, const char **p, size_t *len)
{
	const char *text = buf_cstr(&r->lines);

	*p = text;
	*len = strcspn(text, "\n");
	while (*len > 0 && (*p)[*len - 1] == ' ')
		(*len)--;
}

static int
ds_auth_reply(struct deliver_session *s, const struct deliver_reply *r)
{
	struct log_line l;
	const char *ch;
	size_t chlen;
	char err[400];
	int rc;

	if (r->code == 235) {
		log_begin(&l, LOG_INFO, "deliver_auth");
		log_kv(&l, "qid", ds_qid(s));
		log_kv(&l, "host", s->host);
		log_kv(&l, "ip", s->ip);
		log_kv(&l, "mech", deliver_auth_mech(s->auth));
		log_kv(&l, "user", s->t->req->auth_user);
		log_end(&l);
		deliver_auth_free(s->auth);
		s->auth = NULL;
		return deliver_enter_state(s, DS_MAIL);
	}
	if (r->code == 421)
		return ds_fail_reply(s, r, NULL);
	if (r->code == 334) {
		ds_auth_challenge(r, &ch, &chlen);
		buf_reset(&s->out);
		rc = deliver_auth_step(s->auth, ch, chlen, &s->out, err, sizeof(err));
		if (rc == 0)
			io_write(s->io, s->out.data, s->out.len);
		ds_wipe_out(s);
		if (rc != 0)    /* mid-exchange: just drop the line */
			return ds_auth_impossible(s, err, false);
		io_set_timeout(s->io, ds_timeout(s, TMO_COMMAND));
		return DS_OK;
	}
	/* Refused: the mail waits for the admin (a wrong password is not the host's fault). */
	ds_decide_reply(s, DELIVER_TEMP, r);
	ds_report(s);
	return ds_close(s, true);
}

/* ------------------------------------------------------------------ */
/* The transaction */

static void
ds_txn_reset(struct deliver_session *s)
{
	struct deliver_req *req = s->t->req;

	deliver_req_clear(req);
	for (size_t i = 0; i < req->nrcpts; i++) {
		req->rcpts[i].code = 0;
		req->rcpts[i].status[0] = '\0';
	}
	s->pipelined = false;
	s->mail_sent = false;
	s->mail_failed = false;
	s->rcpt_next = 0;
	s->naccepted = 0;
	s->decided = false;
	memset(&s->res, 0, sizeof(s->res));
	s->body_sent = 0;
}

static int
ds_mail_enter(struct deliver_session *s)
{
	const struct deliver_req *req = s->t->req;
	char status[16], text[256];

	ds_txn_reset(s);
	if (deliver_check_caps(req, &s->caps, status, sizeof(status), text, sizeof(text))) {
		ds_decide(s, DELIVER_PERM, IO_ERR_NONE, 0, status, text);
		return ds_next_txn(s, false);
	}
	buf_reset(&s->out);
	deliver_fmt_mail(&s->out, req, &s->caps);
	if (s->caps.pipelining) {
		/* RFC 2920: MAIL, every RCPT and DATA in one write; replies in order. */
		for (size_t i = 0; i < req->nrcpts; i++)
			deliver_fmt_rcpt(&s->out, &req->rcpts[i], &s->caps);
		buf_puts(&s->out, "DATA\r\n");
		s->pipelined = true;
	}
	s->mail_sent = true;
	io_write(s->io, s->out.data, s->out.len);
	buf_reset(&s->out);
	return DS_OK;
}

static int
ds_mail_reply(struct deliver_session *s, const struct deliver_reply *r)
{
	if (r->code == 421)
		return ds_fail_reply(s, r, NULL);
	if (r->code / 100 != 2) {
		s->mail_failed = true;
		ds_decide_reply(s, r->code / 100 == 4 ? DELIVER_TEMP : DELIVER_PERM, r);
		if (!s->pipelined)
			return ds_next_txn(s, false);
	}
	/* Pipelined: the RCPT and DATA replies follow whatever happened. */
	return deliver_enter_state(s, DS_RCPT);
}

static int
ds_rcpt_enter(struct deliver_session *s)
{
	if (!s->pipelined) {
		buf_reset(&s->out);
		deliver_fmt_rcpt(&s->out, &s->t->req->rcpts[s->rcpt_next], &s->caps);
		io_write(s->io, s->out.data, s->out.len);
		buf_reset(&s->out);
	}
	return DS_OK;
}

static int
ds_rcpt_reply(struct deliver_session *s, const struct deliver_reply *r)
{
	struct deliver_req *req = s->t->req;

	if (r->code == 421)
		return ds_fail_reply(s, r, NULL);
	if (!s->mail_failed) {
		ds_rcpt_set(&req->rcpts[s->rcpt_next], r);
		if (r->code / 100 == 2)
			s->naccepted++;
	}
	s->rcpt_next++;
	if (s->rcpt_next < req->nrcpts)
		return deliver_enter_state(s, DS_RCPT);
	if (s->pipelined || (s->naccepted > 0 && !s->mail_failed))
		return deliver_enter_state(s, DS_DATA);
	/* Nobody accepted: each recipient keeps its own reply; no DATA. */
	ds_decide(s, DELIVER_DONE, IO_ERR_NONE, 0, "", "no recipient accepted");
	return ds_next_txn(s, false);
}

static int
ds_data_enter(struct deliver_session *s)
{
	if (!s->pipelined)
		io_write(s->io, "DATA\r\n", 6);
	return DS_OK;
}

static int
ds_data_reply(struct deliver_session *s, const struct deliver_reply *r)
{
	bool nothing = s->mail_failed || s->naccepted == 0;

	if (r->code == 421)
		return ds_fail_reply(s, r, NULL);
	if (nothing) {
		/* Pipelined DATA after a refused MAIL or all RCPTs refused. */
		if (!s->decided)
			ds_decide(s, DELIVER_DONE, IO_ERR_NONE, 0, "", "no recipient accepted");
		if (r->code == 354) {
			/* A broken server opened DATA anyway: send an empty body, ignore the reply. */
			io_write(s->io, ".\r\n", 3);
			return deliver_enter_state(s, DS_DOT);
		}
		return ds_next_txn(s, false);
	}
	if (r->code != 354) {
		ds_decide_reply(s, r->code / 100 == 5 ? DELIVER_PERM : DELIVER_TEMP, r);
		return ds_next_txn(s, false);
	}
	return deliver_enter_state(s, DS_BODY);
}

/* Send s->out, which holds the body's last octets if any, with the final dot. */
static int
ds_body_end(struct deliver_session *s)
{
	deliver_dot_end(&s->dot, &s->out);
	io_write(s->io, s->out.data, s->out.len);
	buf_reset(&s->out);
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->in_body = false;
	free(s->chunk);
	s->chunk = NULL;
	return deliver_enter_state(s, DS_DOT);
}

/* Read and send the next chunk of the body, or its end. */
static int
ds_body_pump(struct deliver_session *s)
{
	const struct deliver_req *req = s->t->req;
	uint64_t left = req->body_len - s->body_sent;
	const char *p;
	ssize_t n;

	if (!s->in_body)
		return DS_OK;
	io_set_timeout(s->io, ds_timeout(s, TMO_DATA_BLOCK));
	if (left == 0) {
		buf_reset(&s->out);
		return ds_body_end(s);
	}
	if (req->body != NULL) {
		p = req->body + s->body_sent;
		n = (ssize_t)(left < DELIVER_CHUNK ? left : DELIVER_CHUNK);
	} else {
		if (s->chunk == NULL)
			s->chunk = xmalloc(DELIVER_CHUNK);
		p = s->chunk;
		do {
			n = pread(s->fd, s->chunk, left < DELIVER_CHUNK ? (size_t)left : DELIVER_CHUNK,
			    (off_t)(req->body_offset + s->body_sent));
		} while (n < 0 && errno == EINTR);
	}
	if (n <= 0) {
		char text[320];

		snprintf(text, sizeof(text), "queue file %s: %s", req->msg_path,
		    n < 0 ? strerror(errno) : "shorter than its body length");
		log_event(LOG_ERR, "deliver_body_error", "qid", ds_qid(s), "error", text, NULL);
		/* Never send the final dot: dropping the connection aborts DATA. */
		ds_decide(s, DELIVER_TEMP, IO_ERR_NONE, 0, "4.3.0", text);
		ds_report(s);
		return ds_close(s, false);
	}
	s->body_sent += (uint64_t)n;
	buf_reset(&s->out);
	if (s->body_sent == (uint64_t)n && req->prefix_len > 0)   /* the first chunk */
		deliver_dot_feed(&s->dot, req->prefix, req->prefix_len, &s->out);
	deliver_dot_feed(&s->dot, p, (size_t)n, &s->out);
	/* The whole body read: the final dot goes in the same write as its end. */
	if (s->body_sent == req->body_len)
		return ds_body_end(s);
	io_write(s->io, s->out.data, s->out.len);
	buf_reset(&s->out);
	return DS_OK;
}

static int
ds_body_enter(struct deliver_session *s)
{
	const struct deliver_req *req = s->t->req;

	if (req->body == NULL)
		s->fd = open(req->msg_path, O_RDONLY | O_CLOEXEC);
	if (req->body == NULL && s->fd < 0) {
		char text[320];

		snprintf(text, sizeof(text), "queue file %s: %s", req->msg_path, strerror(errno));
		log_event(LOG_ERR, "deliver_body_error", "qid", ds_qid(s), "error", text, NULL);
		ds_decide(s, DELIVER_TEMP, IO_ERR_NONE, 0, "4.3.0", text);
		ds_report(s);
		return ds_close(s, false);
	}
	deliver_dot_init(&s->dot);
	s->body_sent = 0;
	s->in_body = true;
	return ds_body_pump(s);
}

/* A reply while we are still sending the body: the server gave up on it. */
static int
ds_body_reply(struct deliver_session *s, const struct deliver_reply *r)
{
	if (r->code / 100 == 4 && r->code != 421)
		ds_decide_reply(s, DELIVER_TEMP, r);
	else if (r->code / 100 == 5)
		ds_decide_reply(s, DELIVER_PERM, r);
	return ds_fail_reply(s, r, NULL);
}

static int
ds_dot_reply(struct deliver_session *s, const struct deliver_reply *r)
{
	struct deliver_req *req = s->t->req;
	enum deliver_status st;

	if (r->code == 421)
		return ds_fail_reply(s, r, NULL);
	if (s->decided)         /* the empty body after a broken 354 */
		return ds_next_txn(s, false);
	st = r->code / 100 == 2 ? DELIVER_DONE : r->code / 100 == 4 ? DELIVER_TEMP : DELIVER_PERM;
	for (size_t i = 0; i < req->nrcpts; i++)
		if (req->rcpts[i].code / 100 == 2)
			ds_rcpt_set(&req->rcpts[i], r);
	ds_decide_reply(s, st, r);
	return ds_next_txn(s, st == DELIVER_DONE);
}

static int
ds_rset_enter(struct deliver_session *s)
{
	io_write(s->io, "RSET\r\n", 6);
	return DS_OK;
}

static int
ds_rset_reply(struct deliver_session *s, const struct deliver_reply *r)
{
	if (s->t != NULL) {
		/* The check of a connection idle for a while, before t's MAIL. */
		if (r->code / 100 == 2)
			return deliver_enter_state(s, DS_MAIL);
		return ds_fail_retry_reply(s, r);
	}
	/* The reset after a transaction that did not complete. */
	if (r->code / 100 != 2)
		return ds_close(s, r->code != 421);
	return deliver_enter_state(s, DS_IDLE);
}

static int
ds_idle_enter(struct deliver_session *s)
{
	s->reused = false;
	s->mail_sent = false;
	if (s->c == NULL)
		fatalx("%s: idle session without a connection", __func__);
	deliver_pool_idle(s->d, s->c);
	return s->zombie ? DS_GONE : DS_OK;
}

/* Something arrived on an idle connection ("421 idle timeout"): drop it. */
static int
ds_idle_reply(struct deliver_session *s, const struct deliver_reply *r)
{
	return ds_close(s, false);
}

static int
ds_quit_enter(struct deliver_session *s)
{
	return ds_close(s, true);
}

/* ------------------------------------------------------------------ */
/* Input and events */

static int
ds_got_reply(struct deliver_session *s)
{
	const struct deliver_row *row = &deliver_rows[s->state];

	int rc;

	if (row->reply == NULL)
		return ds_fail(s, false, IO_ERR_OTHER, 0, "4.5.0", "unexpected reply from the exchanger");
	rc = row->reply(s, &s->reply);
	/* After the handler: a reused connection's first reply may still send t back. */
	if (rc != DS_GONE && !s->zombie && s->t != NULL)
		s->replied = true;
	return rc;
}

static void
ds_input(struct deliver_session *s)
{
	const char *line;
	size_t len;
	enum io_line lr;
	int rc;

	while (!s->zombie && (lr = io_getline(s->io, &line, &len)) != IO_LINE_NONE) {
		if (lr == IO_LINE_LONG) {
			ds_fail(s, false, IO_ERR_OTHER, 0, "4.5.0", "reply line too long");
			return;
		}
		switch (deliver_reply_feed(&s->reply, line, len)) {
		case DELIVER_REPLY_MORE:
			continue;
		case DELIVER_REPLY_BAD: {
			char text[200];

			snprintf(text, sizeof(text), "malformed reply: %.*s",
			    (int)(len > 100 ? 100 : len), line);
			for (char *p = text; *p != '\0'; p++)
				if ((unsigned char)*p < 0x20)
					*p = '?';
			ds_fail(s, false, IO_ERR_OTHER, 0, "4.5.0", text);
			return;
		}
		case DELIVER_REPLY_DONE:
			break;
		}
		rc = ds_got_reply(s);
		if (rc == DS_GONE || s->zombie)
			return;
		deliver_reply_reset(&s->reply);
		if (rc == DS_STOP)
			return;
	}
}

static int
ds_timed_out(struct deliver_session *s)
{
	char text[160], dur[32];

	if (s->state == DS_IDLE)
		return ds_close(s, true);
	util_format_duration(ds_timeout(s, deliver_rows[s->state].tmo), dur, sizeof(dur));
	snprintf(text, sizeof(text), "timeout after %s in state %s", dur,
	    deliver_rows[s->state].name);
	if (s->state == DS_TLS && ds_mandatory(s))
		return ds_fail_policy(s, 0, "validation-failure", text);
	if (s->state == DS_TLS)
		return ds_fail(s, false, IO_ERR_TLS, 0, "4.7.5", text);
	/* The RSET that checks a reused connection timed out: t runs on a fresh one. */
	return ds_fail(s, s->state == DS_RSET, IO_ERR_OTHER, 0, "4.4.2", text);
}

static int
ds_lost(struct deliver_session *s, enum io_event ev)
{
	enum io_error e = ev == IO_EV_EOF ? IO_ERR_RESET : io_error(s->io);
	char text[320];

	if (s->state == DS_TLS)
		return ds_tls_failed(s);
	if (s->state == DS_IDLE || s->state == DS_QUIT)
		return ds_close(s, false);
	if (s->state == DS_CONNECT) {
		snprintf(text, sizeof(text), "%s", io_error_text(s->io));
		return ds_fail(s, false, e, 0, "4.4.1", text);
	}
	snprintf(text, sizeof(text), "%s in state %s",
	    ev == IO_EV_EOF ? "connection closed by the exchanger" : io_error_text(s->io),
	    deliver_rows[s->state].name);
	return ds_fail(s, true, e == IO_ERR_NONE ? IO_ERR_OTHER : e, 0, "4.4.2", text);
}

static void
deliver_session_cb(struct io *io, enum io_event ev, void *arg)
{
	struct deliver_session *s = arg;

	if (s->zombie || s->io != io)
		return;
	s->depth++;
	switch (ev) {
	case IO_EV_CONNECTED:
		deliver_enter_state(s, DS_GREETING);
		break;
	case IO_EV_IN:
		ds_input(s);
		break;
	case IO_EV_TLS_READY:
		ds_tls_ready(s);
		break;
	case IO_EV_DRAINED:
		if (s->state == DS_BODY)
			ds_body_pump(s);
		break;
	case IO_EV_TIMEOUT:
		ds_timed_out(s);
		break;
	case IO_EV_EOF:
	case IO_EV_ERROR:
		ds_lost(s, ev);
		break;
	}
	ds_unwind(s);
}

/* ------------------------------------------------------------------ */
/* The pool's entry points */

/* The exchanger's address as text, for logs and results. */
static void
ds_addr_text(const struct deliver_req *req, char *ip, size_t iplen)
{
	ip[0] = '\0';
	if (req->addr.ss_family == AF_INET6)
		uv_ip6_name((const struct sockaddr_in6 *)&req->addr, ip, iplen);
	else
		uv_ip4_name((const struct sockaddr_in *)&req->addr, ip, iplen);
}

void
deliver_session_open(struct deliver_conn *c, struct deliver_txn *t)
{
	struct deliver_session *s = xcalloc(1, sizeof(*s));
	const struct deliver_req *req = t->req;

	s->c = c;
	s->d = c->d;
	s->fd = -1;
	s->t = t;
	s->state = DS_CONNECT;
	deliver_reply_init(&s->reply);
	buf_init(&s->out);
	ds_addr_text(req, s->ip, sizeof(s->ip));
	snprintf(s->host, sizeof(s->host), "%s", req->host != NULL ? req->host : "");
	snprintf(s->helo, sizeof(s->helo), "%s", req->helo_name != NULL ? req->helo_name :
	    s->d->conf->hostname != NULL ? s->d->conf->hostname : "localhost");
	s->tls_policy = req->tls;
	s->policy = req->policy;
	/* DANE never weakens the configured TLS: an unusable-only TLSA set keeps
	 * tls=verify's certificate check (DANE's own records replace it). */
	s->tls_verify = (req->tls == CONF_TLS_VERIFY && req->policy != DELIVER_POLICY_DANE) ||
	    req->policy == DELIVER_POLICY_MTA_STS;
	c->s = s;

	s->depth++;
	s->io = io_new(s->d->loop, deliver_session_cb, s);
	io_set_max_line(s->io, DELIVER_MAX_LINE);
	if (io_connect(s->io, (const struct sockaddr *)&req->addr,
	    s->d->conf->deliver.connect_timeout) != 0)
		ds_fail(s, false, io_error(s->io), 0, "4.4.1", io_error_text(s->io));
	ds_unwind(s);
}

void
deliver_session_reuse(struct deliver_conn *c, struct deliver_txn *t)
{
	struct deliver_session *s = c->s;
	uint64_t now = c->d->now();
	bool check;

	if (s == NULL || s->state != DS_IDLE || s->t != NULL)
		fatalx("%s: connection is not idle", __func__);
	/* Idle for a while: RSET first to see that it still works (Postfix's probe). */
	check = now > c->idle_since && now - c->idle_since > DELIVER_REUSE_VERIFY_MS;
	s->depth++;
	s->t = t;
	s->reused = true;
	s->replied = false;
	s->decided = false;         /* the last transaction's outcome is not t's */
	deliver_enter_state(s, check ? DS_RSET : DS_MAIL);
	ds_unwind(s);
}

void
deliver_session_close(struct deliver_conn *c)
{
	struct deliver_session *s = c->s;

	if (s == NULL)
		fatalx("%s: connection without a session", __func__);
	s->depth++;
	ds_close(s, s->state == DS_IDLE);
	ds_unwind(s);
}

bool
deliver_session_abort(struct deliver_conn *c)
{
	struct deliver_session *s = c->s;

	if (s == NULL)
		fatalx("%s: connection without a session", __func__);
	if (s->state == DS_DOT)
		return false;       /* the final reply is awaited: let it come */
	s->depth++;
	if (s->t != NULL) {
		ds_decide(s, DELIVER_HOST_FAIL, IO_ERR_OTHER, 0, "4.3.2", "shutting down");
		ds_report(s);
	}
	/* QUIT only where it cannot be taken for data or a SASL response */
	ds_close(s, s->state == DS_IDLE || s->state == DS_RSET);
	ds_unwind(s);
	return true;
}

const char *
deliver_session_state(const struct deliver_conn *c)
{
	return c->s != NULL ? deliver_rows[c->s->state].name : "CLOSED";
}
