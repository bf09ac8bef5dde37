/*
 * deliver.h - the deliver module's one public face: the outbound SMTP client.
 * The router decides WHERE (one exchanger address at a time, in preference
 * order, skipping hosts known to be down); deliver decides HOW: EHLO/HELO,
 * STARTTLS per policy, AUTH for smarthosts, SIZE/PIPELINING/DSN/8BITMIME/
 * SMTPUTF8, RFC 5321 4.5.3.2 timeouts, connection reuse, concurrency limits.
 */
#ifndef RELAY_DELIVER_H
#define RELAY_DELIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "common/io.h"
#include "conf/conf.h"

struct deliver;

/*
 * Connections that have left the pool and keep their socket until their
 * QUIT is written (closed to make room, idle too long, at shutdown...):
 * usually one loop turn, up to 5 s for a server that does not read.  Past
 * this many at once a connection is closed at once without QUIT (RFC 5321
 * servers take that as the end of the session), so the pool's sockets stay
 * within router.max_connections plus this (daemon/DESCRIPTORS.md).
 */
#define DELIVER_QUITTING_MAX 64

/*
 * What sets a session's TLS requirement besides req->tls (tlspolicy/ decides
 * it per exchanger: DANE, MTA-STS).  DANE, DANE_UNAUTH and MTA_STS make TLS
 * mandatory: no STARTTLS, a refused one, a failed handshake or a peer that
 * matches no record (DANE) or fails the certificate check (MTA-STS) is a
 * HOST_FAIL 4.7.5 (never plaintext), with an RFC 8460 result type in
 * res.tls_result.  MTA_STS_TESTING enforces nothing: the session runs as
 * under CONF, and what MTA_STS would have refused is logged
 * (event=tls_policy_testing) and put into res.tls_result.
 */
enum deliver_policy {
	DELIVER_POLICY_CONF = 0,    /* req->tls as configured or routed */
	DELIVER_POLICY_DANE,        /* usable TLSA records: TLS authenticated by tlsa[] */
	DELIVER_POLICY_DANE_UNAUTH, /* only unusable TLSA records: TLS, not authenticated */
	DELIVER_POLICY_MTA_STS,     /* MTA-STS enforce: TLS, the certificate checked against
	                               the CA store (deliver.ca_file) and req->host */
	DELIVER_POLICY_MTA_STS_TESTING, /* MTA-STS testing: as CONF, failures reported */
};

struct deliver_rcpt {
	const char *addr;
	const char *orcpt;          /* "rfc822;x@y" or NULL; xtext-encoded by deliver when sent */
	unsigned notify;            /* ENV_NOTIFY_* (common/envelope.h) */
	/* filled by deliver when the result status is DELIVER_DONE: */
	int code;                   /* 250, 451, 550, ... */
	char status[16];            /* enhanced status: "2.1.5", or derived from the code */
	char *reply;                /* the server's reply text (malloc'd; freed by deliver_req_clear) */
};

struct deliver_req {
	const char *qid;
	const char *msg_path;       /* queue file; body at body_offset, body_len bytes, CRLF, not dot-stuffed */
	uint64_t body_offset;
	uint64_t body_len;
	const char *body;           /* or NULL: the body in memory (borrowed, unchanged until the
	                               callback; also on the delivery thread): no read of msg_path */
	const char *prefix;         /* header fields sent before the body (DKIM-Signature), or NULL */
	size_t prefix_len;
	const char *sender;         /* "" for <> */
	const char *envid;          /* or NULL */
	int ret;                    /* enum env_ret */
	bool body_8bit;
	bool smtputf8;
	struct deliver_rcpt *rcpts;
	size_t nrcpts;

	const char *host;           /* exchanger name (for SNI, verify, logs) */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	enum conf_tls tls;
	enum deliver_policy policy;
	const struct tlsa_rr *tlsa; /* DELIVER_POLICY_DANE: the usable records (borrowed) */
	size_t ntlsa;
	const char *auth_user;      /* smarthost AUTH, or NULL */
	const char *auth_password;
	const char *helo_name;      /* our hostname */
};

enum deliver_status {
	DELIVER_DONE,       /* the transaction ran: each rcpt has its own code */
	DELIVER_HOST_FAIL,  /* nothing was delivered because of the host: refused, timeout,
	                       reset, 421, TLS failure under require/verify, greeting/EHLO
	                       failure. The router tries the next exchanger. */
	DELIVER_TEMP,       /* the host answered 4xx for the whole message (MAIL, DATA, end of data) */
	DELIVER_PERM,       /* the host answered 5xx for the whole message, or the message
	                       cannot go there (too big for SIZE, 8-bit or SMTPUTF8 not offered) */
};

/*
 * Results in detail (deliver/DELIVER.md has the whole story):
 *  - reply texts are "CODE line1 / line2 ...", the server's words verbatim
 *    (control characters shown as '?'); res.reply is truncated to fit.
 *  - rcpts[] are filled for every recipient whose RCPT was answered, whatever
 *    the status; accepted ones then carry the end-of-data reply.  With no
 *    recipient accepted the status is DONE and each keeps its RCPT reply.
 *  - HOST_FAIL status codes: 4.4.1 connect failed, 4.4.2 timeout or lost
 *    connection, 4.7.4 TLS required but not offered / AUTH without TLS,
 *    4.7.5 TLS handshake or certificate failure, 4.3.2 shutting down; a
 *    421 or bad greeting keeps the server's code and enhanced status.
 *  - STARTTLS offered but refused or failing is a HOST_FAIL (io_err TLS)
 *    under "opportunistic" too: plaintext only when it is not offered.
 *    A refusal keeps the server's code and text, with 4.7.5 (4.7.4 under
 *    require/verify).  AUTH goes through the Cyrus SASL client.
 */
struct deliver_result {
	enum deliver_status status;
	enum io_error io_err;       /* for DELIVER_HOST_FAIL: what kind of failure */
	int code;                   /* the reply code behind a HOST_FAIL/TEMP/PERM, or 0 */
	char status_code[16];       /* enhanced status for HOST_FAIL/TEMP/PERM ("4.4.1") */
	char reply[512];            /* the server's reply or our diagnosis ("connection refused") */
	char ip[64];                /* the address that was tried */
	bool dsn;                   /* the server announced DSN (RFC 3461): NOTIFY, ORCPT,
	                               ENVID and RET went with the message, so the
	                               success notices are its to send (5.2.3) */
	char tls[16];               /* how the session was secured: "none" (plaintext),
	                               "opportunistic", "require", "verify", "dane", "mta-sts";
	                               "" when no session got that far */
	char tls_version[16];       /* "TLSv1.3", or "" */
	char tls_result[32];        /* a TLS policy failure as an RFC 8460 result type
	                               ("starttls-not-supported", "validation-failure",
	                               "tlsa-invalid", "certificate-host-mismatch",
	                               "certificate-expired", "certificate-not-trusted"),
	                               else ""; under MTA_STS_TESTING also when delivered */
};

typedef void deliver_cb(void *arg, struct deliver_req *req, const struct deliver_result *res);

/* A pool running on loop (the caller's thread). */
struct deliver *deliver_new(uv_loop_t *loop, struct conf *conf);
/*
 * The same API, with the pool and its sessions on a thread of their own
 * (the delivery thread, deliver_thread.c): callbacks still run on loop, and
 * the calls below keep their contracts.  Between deliver_start() and its
 * callback the request, and all it points to, belong to deliver: the caller
 * must not change them.
 */
struct deliver *deliver_new_thread(uv_loop_t *loop, struct conf *conf);
void deliver_reload(struct deliver *d, struct conf *conf);
/*
 * Run one delivery attempt of req to req->addr.  req (and what it points to)
 * must stay valid until cb fires; cb fires exactly once, on the loop, unless
 * deliver_start returns non-zero.  Attempts beyond the concurrency limits wait
 * in deliver's own queue.
 */
int deliver_start(struct deliver *d, struct deliver_req *req, deliver_cb *cb, void *arg);
/* Free what deliver filled into req->rcpts[].reply. */
void deliver_req_clear(struct deliver_req *req);
/* Close idle connections, fail waiting requests, done(arg) when all closed. */
void deliver_shutdown(struct deliver *d, void (*done)(void *arg), void *arg);
void deliver_free(struct deliver *d);
/* "conf" (req->tls alone), "dane", "dane-unauth", "mta-sts", "mta-sts-testing":
 * for logs and keys. */
const char *deliver_policy_name(enum deliver_policy p);

#endif
