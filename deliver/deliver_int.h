/*
 * deliver_int.h - (internal to deliver/) what the files of the deliver module
 * share, and what its unit tests reach: the SMTP protocol helpers
 * (deliver_proto.c: reply parser, EHLO capabilities, xtext, dot-stuffing,
 * MAIL/RCPT formatting, base64), one connection's state machine
 * (deliver_session.c) and the pool that owns connections and waiting requests
 * (deliver.c), and the SASL client for smarthost AUTH (deliver_auth.c).
 * Nothing outside deliver/ and tests/unit/test_deliver*.c may include this
 * header.
 *
 * Ownership: struct deliver owns every struct deliver_conn, every waiting
 * struct deliver_txn, and the keys and hosts that group them (freed when
 * nothing refers to them).  A connection owns its io and, while busy, the one
 * transaction it runs; a transaction borrows the caller's deliver_req.
 */
#ifndef RELAY_DELIVER_INT_H
#define RELAY_DELIVER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "common/buf.h"
#include "common/htab.h"
#include "deliver/deliver.h"

/* ------------------------------------------------------------------ */
/* Replies (RFC 5321 4.2): one parser for every reply the client reads. */

#define DELIVER_REPLY_MAX_TEXT  (64 * 1024)    /* text kept per reply; the rest is dropped */
#define DELIVER_MAX_LINE        2048           /* longest reply line we accept */

enum deliver_reply_rc {
	DELIVER_REPLY_BAD = -1,     /* malformed: not "DDD[ -]text", code outside 200-599, mixed codes */
	DELIVER_REPLY_MORE = 0,     /* a continuation line ("250-..."): feed the next line */
	DELIVER_REPLY_DONE = 1,     /* the last line ("250 ..." or "250") arrived */
};

struct deliver_reply {
	int code;                   /* 0 until the first line */
	int nlines;
	bool done;
	struct buf lines;           /* each line's text after "DDD-"/"DDD ", '\n'-terminated */
};

void deliver_reply_init(struct deliver_reply *r);
void deliver_reply_reset(struct deliver_reply *r);
void deliver_reply_free(struct deliver_reply *r);
/* Feed one line (with or without its CRLF). After DONE or BAD, reset before reuse. */
enum deliver_reply_rc deliver_reply_feed(struct deliver_reply *r, const char *line, size_t len);
/*
 * The reply as one line of text: "CODE first-line-text / second-line-text ...",
 * the server's words verbatim except that control characters become '?'.
 */
void deliver_reply_format(const struct deliver_reply *r, struct buf *out);
/* The enhanced status (RFC 3463) that opens the first line when its class
 * matches the code ("5.1.1"), else derived from the code ("4.0.0"). */
void deliver_reply_status(const struct deliver_reply *r, char *out, size_t outlen);
/* Same from a code and a text: the parser behind deliver_reply_status(). */
void deliver_status_from_text(int code, const char *text, char *out, size_t outlen);

/* ------------------------------------------------------------------ */
/* EHLO capabilities (RFC 5321 4.1.1.1 and the extensions we use). */

#define DELIVER_AUTH_MECHS_MAX  256            /* the AUTH keyword's mechanism list, kept */

struct deliver_caps {
	bool esmtp;                 /* the session was opened with EHLO (else HELO) */
	bool starttls;
	bool pipelining;
	bool eightbitmime;
	bool smtputf8;
	bool dsn;
	bool enhancedstatuscodes;
	bool size;                  /* SIZE announced */
	uint64_t size_max;          /* its limit; 0 = no fixed limit */
	char auth_mechs[DELIVER_AUTH_MECHS_MAX]; /* AUTH mechanisms offered, upper-cased,
	                            space-separated ("" = no AUTH); a word that does
	                            not fit is left out */
};

/* Fill caps from a 250 reply to EHLO (lines after the first are keywords). */
void deliver_caps_parse(struct deliver_caps *c, const struct deliver_reply *r);

/* ------------------------------------------------------------------ */
/* Encodings. */

/* Append s xtext-encoded (RFC 3461 4): '+', '=', controls, space, 8-bit -> "+HH". */
void deliver_xtext(struct buf *out, const char *s);

/*
 * Dot-stuffing (RFC 5321 4.5.2) as a stream: feed the body in chunks of any
 * size; a '.' that opens a line is doubled, a bare LF becomes CRLF.
 * deliver_dot_end() closes the body: CRLF if the last line lacks one, then ".\r\n".
 */
struct deliver_dot {
	bool bol;                   /* the next byte opens a line */
	bool cr;                    /* the last byte was '\r' */
};

void deliver_dot_init(struct deliver_dot *s);
void deliver_dot_feed(struct deliver_dot *s, const char *p, size_t n, struct buf *out);
void deliver_dot_end(struct deliver_dot *s, struct buf *out);

/*
 * The MAIL and RCPT command lines (with CRLF) for req under caps: SIZE= when
 * SIZE is announced, BODY=8BITMIME and SMTPUTF8 when asked for and announced,
 * RET/ENVID/NOTIFY/ORCPT only when DSN is announced.
 */
void deliver_fmt_mail(struct buf *out, const struct deliver_req *req, const struct deliver_caps *caps);
void deliver_fmt_rcpt(struct buf *out, const struct deliver_rcpt *rcpt, const struct deliver_caps *caps);

/*
 * Why the message cannot go to a server with caps, before any MAIL: fills
 * status/text and returns true (SIZE exceeded 5.3.4, 8-bit without 8BITMIME
 * 5.6.3, SMTPUTF8 not offered 5.6.7); false when it may be sent.
 */
bool deliver_check_caps(const struct deliver_req *req, const struct deliver_caps *caps,
    char *status, size_t statuslen, char *text, size_t textlen);

/* ------------------------------------------------------------------ */
/* The pool (deliver.c) and connections (deliver_session.c). */

#define DELIVER_MAGIC_CONN      0x444c7643u     /* "DLvC" */
#define DELIVER_KEY_MAX         512
#define DELIVER_CHUNK           (64 * 1024)     /* body bytes read and written at a time */
/*
 * A connection reused after more than this long idle (ms, on d->now) is
 * checked with RSET before the next MAIL; one reused sooner sends MAIL at
 * once (no RSET follows a completed transaction).  Postfix's smtp(8) probes
 * a cached session the same way; 1 s covers back-to-back messages while a
 * server's idle timeout (minutes) is far longer.
 */
#define DELIVER_REUSE_VERIFY_MS 1000

/* One request: waiting in its key's FIFO, or running on a connection. */
struct deliver_txn {
	TAILQ_ENTRY(deliver_txn) entry;     /* in key->waiting while it waits */
	struct deliver *d;
	struct deliver_req *req;
	deliver_cb *cb;
	void *arg;
	struct deliver_key *key;    /* its connection key (holds a reference until the callback) */
	bool no_reuse;              /* a reused connection died under it: open a new one */
};
TAILQ_HEAD(deliver_txnq, deliver_txn);

struct deliver_session;         /* the per-connection protocol state (deliver_session.c) */
struct deliver_conn;
TAILQ_HEAD(deliver_connq, deliver_conn);

/* One exchanger address: what router.max_connections_per_host counts. */
struct deliver_host {
	struct htab_node node;      /* in d->hosts, by ip */
	unsigned nkeys;             /* keys with this address: it lives as long as they do */
	unsigned nconns;            /* open connections to it, idle ones included */
	struct deliver_connq idle;  /* its idle connections, oldest first */
	char ip[64];                /* the address as text */
};

/*
 * One connection key: the requests that may share a connection (address,
 * port, TLS policy, auth user, the exchanger name under "verify").  It holds
 * their FIFO and its connections; it lives while a request (waiting or
 * running), a connection or the dispatcher refers to it.
 */
struct deliver_key {
	struct htab_node node;      /* in d->keys, by name */
	TAILQ_ENTRY(deliver_key) ready_entry; /* in d->ready (or a dispatch pass's turn list) */
	bool queued;                /* ready_entry is on a list: it has waiting requests */
	unsigned refs;              /* requests + connections + the dispatcher at work on it */
	struct deliver_host *host;
	struct deliver_txnq waiting; /* requests waiting for a connection, FIFO */
	size_t nwaiting;
	struct deliver_connq conns; /* its connections, busy and idle */
	struct deliver_connq idle;  /* the idle ones, oldest first */
	uint64_t pass;              /* the dispatch pass the fields below belong to */
	unsigned finishing;         /* connections whose RSET is out, not yet counted on */
	struct deliver_txn *cursor; /* the next request to look at in this pass, or NULL */
	char name[];
};
TAILQ_HEAD(deliver_keyq, deliver_key);

struct deliver_conn {
	uint32_t magic;
	TAILQ_ENTRY(deliver_conn) entry;    /* in d->conns */
	TAILQ_ENTRY(deliver_conn) key_entry; /* in key->conns */
	TAILQ_ENTRY(deliver_conn) idle_entry; /* in d->idle while idle */
	TAILQ_ENTRY(deliver_conn) key_idle_entry; /* in key->idle while idle */
	TAILQ_ENTRY(deliver_conn) host_idle_entry; /* in key->host->idle while idle */
	struct deliver *d;
	struct deliver_key *key;    /* holds a reference */
	bool idle;
	bool finishing;             /* RSET after a transaction that did not complete: idle soon */
	uint64_t idle_since;        /* monotonic ms */
	unsigned ntxn;              /* transactions run on this connection */
	struct deliver_session *s;
};

struct deliver {
	uv_loop_t *loop;
	struct conf *conf;
	SSL_CTX *tls_ctx;           /* client context, or NULL if it could not be made */
	char *tls_ctx_ca;           /* ca_file the context was made with (NULL: system) */
	struct htab keys;           /* struct deliver_key by name */
	struct htab hosts;          /* struct deliver_host by address */
	struct deliver_keyq ready;  /* keys with waiting requests, in turn order */
	size_t nwaiting;            /* requests waiting, all keys */
	uint64_t pass;              /* dispatch passes run */
	struct deliver_connq conns;
	struct deliver_connq idle;  /* oldest first */
	bool sasl_client;           /* holds a reference on libsasl's client side (deliver_auth.c) */
	bool sasl_by_caller;        /* the delivery thread's pool: the caller's thread takes that
	                            reference (deliver_auth_caller_init), the pool never does */
	unsigned nconns;
	unsigned nquitting;         /* connections gone from the pool, their QUIT not yet out:
	                               at most DELIVER_QUITTING_MAX (deliver_pool_quit_begin) */
	uv_timer_t kick;            /* runs the dispatcher outside of callbacks */
	bool kick_closed;
	bool shutting_down;
	void (*shutdown_done)(void *);
	void *shutdown_arg;
	uint64_t (*now)(void);      /* monotonic ms clock; injectable */
	uint64_t nconnects;         /* connections opened since start (tests, stats) */
	struct deliver_thread *thread; /* deliver_new_thread(): this is the caller's front,
	                            the pool runs on the delivery thread; else NULL */
};

/* deliver.c: deliver_start()'s checks and connection key (name, and ip as text). */
int deliver_req_key(const struct deliver_req *req, char *name, size_t namelen, char *ip,
    size_t iplen);

/* deliver_thread.c: what a front's deliver_start/reload/shutdown/free pass on,
 * from the caller's loop, to the delivery thread (deliver_thread.c's header). */
struct deliver_thread;
int deliver_thread_start(struct deliver_thread *dt, struct deliver_req *req, deliver_cb *cb,
    void *arg);
void deliver_thread_reload(struct deliver_thread *dt, struct conf *conf);
void deliver_thread_shutdown(struct deliver_thread *dt, void (*done)(void *arg), void *arg);
void deliver_thread_free(struct deliver_thread *dt);

/* deliver.c: called by sessions. */
void deliver_pool_finish(struct deliver *d, struct deliver_txn *t, const struct deliver_result *res);
void deliver_pool_retry(struct deliver *d, struct deliver_txn *t);
void deliver_pool_idle(struct deliver *d, struct deliver_conn *c);
void deliver_pool_gone(struct deliver *d, struct deliver_conn *c);
/*
 * A session about to QUIT on io, which outlives its connection until the
 * QUIT is out: true, counting io until its socket is closed, while fewer
 * than DELIVER_QUITTING_MAX are; false (the caller closes io at once) when
 * that many already wait.
 */
bool deliver_pool_quit_begin(struct deliver *d, struct io *io);

/* deliver_session.c: called by the pool. */
/* Open a connection for t: fills c->s; t's result comes via deliver_pool_finish(). */
void deliver_session_open(struct deliver_conn *c, struct deliver_txn *t);
/* Run t on the idle connection c: MAIL at once, or RSET first if c has been
 * idle for more than DELIVER_REUSE_VERIFY_MS (a failed RSET sends t back to
 * the pool, which runs it on a new connection). */
void deliver_session_reuse(struct deliver_conn *c, struct deliver_txn *t);
/* Close c now: QUIT if it is idle; a transaction in progress is not reported. */
void deliver_session_close(struct deliver_conn *c);
/* Shutting down: abort the transaction on c unless its final reply is awaited. 
 * Returns true if c was aborted (and is gone). */
bool deliver_session_abort(struct deliver_conn *c);
/* The state's name, for logs and tests. */
const char *deliver_session_state(const struct deliver_conn *c);

/* ------------------------------------------------------------------ */
/* Client AUTH (RFC 4954) through the Cyrus SASL client (deliver_auth.c). */

struct deliver_auth;            /* one AUTH exchange: a sasl_conn_t and the credentials */

/*
 * A SASL client for one AUTH exchange with server (the exchanger's name),
 * as user with password, over a TLS layer of ssf bits.  The first call of a
 * pool takes its reference on libsasl's process-wide client side
 * (sasl_client_init); deliver_auth_release() gives it back.  NULL, with err
 * filled, if libsasl cannot be initialised or the connection not made.
 * The credentials are copied; deliver_auth_free() wipes them.
 */
struct deliver_auth *deliver_auth_new(struct deliver *d, const char *server, const char *user,
    const char *password, unsigned ssf, char *err, size_t errlen);
/*
 * Negotiate a mechanism among the server's (space-separated, from EHLO) and
 * append the AUTH command, with its initial response if the mechanism has
 * one, CRLF-terminated, to out.  0, or -1 with err filled (no usable
 * mechanism, SASL failure).  out then holds credentials: wipe it after use.
 */
int deliver_auth_start(struct deliver_auth *a, const char *server_mechs, struct buf *out,
    char *err, size_t errlen);
/* Answer a 334 challenge (its base64 text, len bytes): append the base64
 * response line with CRLF to out.  0, or -1 with err filled. */
int deliver_auth_step(struct deliver_auth *a, const char *challenge, size_t len, struct buf *out,
    char *err, size_t errlen);
/* The mechanism chosen by deliver_auth_start() ("" before). */
const char *deliver_auth_mech(const struct deliver_auth *a);
/* Dispose of the sasl_conn_t and wipe the credentials; NULL is a no-op. */
void deliver_auth_free(struct deliver_auth *a);
/* deliver_free(): give back d's reference on libsasl's client side. */
void deliver_auth_release(struct deliver *d);
/*
 * deliver_thread.c, on the caller's thread, before it hands over a request
 * with an auth_user: take d's (the thread's pool's) reference on libsasl's
 * client side there.  sasl_client_init/done rebuild and free libsasl's
 * global state (the mechanism list submit/ reads): never from the delivery
 * thread.  0, or -1 with err filled (logged).
 */
int deliver_auth_caller_init(struct deliver *d, char *err, size_t errlen);

#endif
