/*
 * relay.h - the daemon: one struct relay owns the loop, the current
 * configuration snapshot, the statistics and every module (submit, router,
 * control).  No global state: everything hangs off this struct.
 */
#ifndef RELAY_RELAY_H
#define RELAY_RELAY_H

#include <stdbool.h>
#include <uv.h>

#include "common/buf.h"
#include "common/stats.h"
#include "conf/conf.h"

struct submit;
struct router;
struct control;
struct notify;
struct sandbox;
struct cluster;
struct metrics;

#define RELAY_MAGIC 0x7e1a7d00U

struct relay {
	uint32_t magic;
	uv_loop_t *loop;
	char *conf_path;
	struct conf *conf;           /* current snapshot (one reference held) */
	struct conf *conf_start;     /* the one started with: what listeners and links use (a reference) */
	struct relay_stats stats;
	struct router *router;
	struct submit *submit;
	struct control *control;
	struct notify *notify;       /* the service manager (notify/notify.h) */
	struct sandbox *sandbox;     /* the user switch and the sandbox (sandbox/) */
	struct metrics *metrics;     /* the Prometheus endpoint (metrics/), or NULL */
	struct cluster *cluster;     /* shared state in Redis (cluster/), or NULL */
	uv_signal_t sig_term, sig_int, sig_hup, sig_usr1;
	bool stopping;
	bool down;                   /* every module has shut down */
	int pending_shutdown;        /* modules still shutting down */
};

/* Load the config, open the log, start every module, then drop root and enter
 * the sandbox (sandbox/sandbox.h says in which order).  0, or -1 with err filled;
 * after a failure, relay_stop() and running the loop unwind what was started. */
int relay_start(struct relay *r, uv_loop_t *loop, const char *conf_path, struct buf *err);
/* Re-read the configuration and apply what can change at run time.  On a
 * config that fails to validate the old one stays; 0 or -1 with err filled. */
int relay_reload(struct relay *r, struct buf *err);
/* Begin a graceful stop; the loop ends once every handle is closed. */
void relay_stop(struct relay *r, const char *why);
/* After the stop: the password checks left blocked in their backend (the
 * loop cannot end while they run; relayd_main.c exits without them). */
unsigned relay_abandoned(const struct relay *r);
/* After the loop has ended. */
void relay_free(struct relay *r);

/* relay_status.c: the STATUS= line for the service manager (a notify_status_fn;
 * arg is the struct relay). */
void relay_status(void *arg, struct buf *out);

/* control.c */
int control_new(struct relay *r, const char *path, struct control **out, struct buf *err);
void control_close(struct control *c);
/* Descriptors the control socket may hold at once: itself and its clients. */
uint64_t control_fd_need(void);

/*
 * A request that answers later (relayctl dkim --check waits for DNS, queue
 * show reads the message file on the loop's thread pool): control_router()
 * returns CONTROL_LATER and calls done(arg, rc, out) once, from the loop
 * (or at once when there is nothing to look up): rc 0 (all well), 1
 * (answered, but not all well: relayctl exits 1), or a negative RELAY_E*
 * with the one-line message in out; out the body.  later == NULL refuses
 * such requests; control_later_cancel() stops one (done never fires).
 */
#define CONTROL_LATER 1
struct control_later {
	void (*done)(void *arg, int rc, struct buf *out);
	void *arg;
	uv_loop_t *loop;                /* the caller's */
	void *pending;                  /* while pending: the request's state */
	void (*cancel)(void *pending);  /* frees pending, or disowns it until its work ends */
};
void control_later_cancel(struct control_later *l);

/*
 * control_queue.c: relayctl's requests to the router.  argv[0] is the command
 * ("queue", "hosts", "route", "stats", ...); the answer goes to out as an
 * aligned human table, or as a JSON document when json is true.  Returns 0,
 * CONTROL_LATER (see above), or a negative RELAY_E* with a one-line message
 * in out (plain text).
 */
int control_router(struct router *r, int argc, char **argv, bool json, struct buf *out,
    struct control_later *later);

/*
 * control_auth.c: `auth list` and `auth unblock` (cmd is their row; argv the
 * arguments after the two words).  0, or a negative RELAY_E* with a one-line
 * message in out (RELAY_ENOENT: nothing to unblock).
 */
struct control_cmd;
int control_auth(struct submit *s, const struct control_cmd *cmd, int argc, char **argv,
    bool json, struct buf *out);

#endif
