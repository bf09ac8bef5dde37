/*
 * router.h - the router module's one public face: the durable queue that
 * submit/ writes into, the scheduler that decides what to try when, the
 * routing that decides where (routes, MX, host health), and the NDRs that
 * re-enter the queue.  Data flows one way: submit -> queue -> scheduler ->
 * router -> deliver -> results back to the scheduler.
 */
#ifndef RELAY_ROUTER_H
#define RELAY_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"
#include "common/stats.h"
#include "conf/conf.h"

/* DSN (RFC 3461) NOTIFY flags; 0 means "not given" (= FAILURE,DELAY). */
#define ENV_NOTIFY_NEVER    0x01
#define ENV_NOTIFY_SUCCESS  0x02
#define ENV_NOTIFY_FAILURE  0x04
#define ENV_NOTIFY_DELAY    0x08

enum env_ret { ENV_RET_NONE = 0, ENV_RET_HDRS, ENV_RET_FULL };

#define QID_MAX 32               /* a queue id is at most 31 characters [0-9A-Z] */

struct env_rcpt {
	char *addr;                  /* as given in RCPT TO, without <> */
	char *orcpt;                 /* ORCPT value ("rfc822;x@y", xtext-decoded) or NULL */
	unsigned notify;             /* ENV_NOTIFY_* bits */
};

struct envelope {
	char *sender;                /* "" for the null sender <> */
	struct env_rcpt *rcpts;
	size_t nrcpts;
	char *envid;                 /* ENVID (xtext-decoded) or NULL */
	enum env_ret ret;
	bool body_8bit;              /* BODY=8BITMIME */
	bool smtputf8;               /* SMTPUTF8 */
	char *auth_user;             /* authenticated login; NULL for internal mail (NDRs) */
	char *client_ip;             /* NULL for internal mail */
	char *client_helo;
	uint64_t arrival_ms;         /* wall clock at MAIL FROM */
	uint64_t size;               /* body size in bytes once known */
};

void envelope_free(struct envelope *env);          /* frees members, not env itself */
void envelope_copy(struct envelope *dst, const struct envelope *src);

struct router;

/*
 * Create the router: open (create) queue_dir, recover the queue from disk,
 * start the commit thread and the scheduler.  stats must outlive the router.
 * 0, or -1 with a message in err.
 */
int router_new(uv_loop_t *loop, struct conf *conf, struct relay_stats *stats,
    struct router **out, struct buf *err);
/* A new configuration snapshot (SIGHUP).  The router takes its own reference. */
void router_reload(struct router *r, struct conf *conf);
/* Stop scheduling, wait for commits in flight, close handles; done(arg) when all closed. */
void router_shutdown(struct router *r, void (*done)(void *arg), void *arg);
void router_free(struct router *r);

/*
 * Submission into the queue.
 *
 * router_txn_begin() creates an incoming file for a message with envelope env
 * (copied) and assigns its queue id.  The body is then streamed with
 * router_txn_write() as it arrives: CRLF line endings, already dot-unstuffed,
 * headers the relay adds included (Received: first).  router_txn_commit()
 * makes the message and its envelope durable, sharing the disk sync with
 * other commits in flight (group commit), and calls cb(arg, 0, qid) on the
 * loop thread once the message will survive a crash, or cb(arg, err, NULL) if
 * it could not be queued.  The callback is always called exactly once; the
 * txn is consumed by commit and by abort.
 */
struct router_txn;
typedef void router_commit_cb(void *arg, int err, const char *qid);

int router_txn_begin(struct router *r, const struct envelope *env, struct router_txn **out);
const char *router_txn_qid(const struct router_txn *t);
int router_txn_write(struct router_txn *t, const void *p, size_t len);
void router_txn_commit(struct router_txn *t, router_commit_cb *cb, void *arg);
void router_txn_abort(struct router_txn *t);

/*
 * Control requests from relayctl (daemon/control.c).  argv[0] is the command
 * ("queue", "hosts", "route", "stats", ...); the answer goes to out as an
 * aligned human table, or as a JSON document when json is true.  Returns 0,
 * or a negative RELAY_E* with a one-line message in out (plain text).
 */
int router_control(struct router *r, int argc, char **argv, bool json, struct buf *out);

/*
 * A wait for every message acknowledged so far to reach the scheduler: a 250
 * comes from the acceptance journal a moment before the message's msg/ file
 * is published and the scheduler gets it (router/QUEUE.md).  relayctl waits
 * so that it sees every message a client was told is queued.  The caller
 * owns w and sets cb and arg; router_wait_acked() returns true (cb is never
 * called) when nothing is outstanding, else cb(arg) runs later on the loop,
 * unless router_wait_cancel(r, w) comes first.
 */
struct router_waiter {
	struct router_waiter *next;  /* the queue's */
	uint64_t need;               /* the queue's */
	void (*cb)(void *arg);
	void *arg;
};
bool router_wait_acked(struct router *r, struct router_waiter *w);
void router_wait_cancel(struct router *r, struct router_waiter *w);

#endif
