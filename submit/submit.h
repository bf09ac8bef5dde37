/*
 * submit.h - the submit module's one public face: the SMTP submission server
 * (RFC 6409) on submit.listen (STARTTLS, 587) and submit.listen_tls (implicit
 * TLS, 465), with Cyrus SASL AUTH over TLS only, the senders map, and
 * streaming of DATA into the router's queue.
 */
#ifndef RELAY_SUBMIT_H
#define RELAY_SUBMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"
#include "common/stats.h"
#include "conf/conf.h"
#include "router/router.h"

struct submit;

/*
 * Bind every listener, load the TLS certificate, initialise SASL and read the
 * senders map.  Returns 0, or -1 with a message in err (nothing left bound).
 */
int submit_new(uv_loop_t *loop, struct conf *conf, struct router *router,
    struct relay_stats *stats, struct submit **out, struct buf *err);
/*
 * Start the session threads (submit.workers > 1; nothing with one loop):
 * after the sandbox, as capabilities are each thread's own.  Connections
 * wait in the listeners' backlog until then.
 */
void submit_start(struct submit *s);
/*
 * A new configuration snapshot (SIGHUP): re-read the certificate, key and the
 * senders map; new sessions use the new snapshot, sessions in progress keep
 * theirs.  Listener addresses are not changed at run time (logged if they
 * differ).  Returns 0, or -1 with err filled and the old state kept.
 */
int submit_reload(struct submit *s, struct conf *conf, struct buf *err);
/* One AUTH failure counter, as relayctl auth list shows it. */
struct submit_auth_block {
	const char *kind;               /* "address" or "login" */
	const char *name;               /* the client address, or the login (lower case) */
	unsigned failures;              /* failed AUTHs in the current window */
	bool blocked;                   /* refused until `until` */
	uint64_t until;                 /* wall-clock ms: the block's end, else the window's */
	unsigned blocks;                /* (login) blocks in a row, each twice as long */
};
/* cb(arg, b) for every client address and login with failures or a block;
 * b is valid during the call only. */
void submit_auth_blocks(struct submit *s, void (*cb)(void *arg, const struct submit_auth_block *b),
    void *arg);
/*
 * Clear the failures and the block of a client address (name is an IP
 * address) or of a login; logs auth_unblocked.  *kind says which, key gets
 * the name as the counters hold it (a login in lower case).  0, or
 * RELAY_ENOENT when it had neither.
 */
int submit_auth_unblock(struct submit *s, const char *name, const char **kind, struct buf *key);

/*
 * How many threads libuv's pool needs for c (UV_THREADPOOL_SIZE, set before
 * the pool starts): its default 4, plus room for each further session
 * loop's password checks (submit.workers).
 */
unsigned submit_threadpool_size(const struct conf *c);
/*
 * Descriptors the server holds for c whatever its sessions: each listener's
 * socket and its spare for the accept pause, and with listen_tls the
 * connections refused by the limits whose 421 waits for the handshake
 * (SUBMIT_REFUSING_MAX); with submit.workers above 1, each shard's
 * listening sockets, their spares, its refused ones and its loop's own
 * (daemon/relay.c adds them to what RLIMIT_NOFILE must allow).
 */
uint64_t submit_fd_need(const struct conf *c);

/* Sessions open now (the metrics' gauge). */
size_t submit_nsessions(const struct submit *s);

/* Stop listening, close sessions (421 to each), done(arg) once every handle is
 * closed and the password checks still running have returned, or were waited
 * for SUBMIT_AUTH_STOP_MS (2 s) and abandoned. */
void submit_shutdown(struct submit *s, void (*done)(void *arg), void *arg);
/* After the shutdown: how many password checks were abandoned, still blocked
 * in their backend (the loop cannot end while they run: see relayd_main.c). */
unsigned submit_abandoned(const struct submit *s);
void submit_free(struct submit *s);
/* Share the login windows and failed-AUTH counters through cl (cluster/;
 * NULL: local only).  cl must outlive the server's sessions. */
struct cluster;
void submit_set_cluster(struct submit *s, struct cluster *cl);

#endif
