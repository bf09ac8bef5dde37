/*
 * control_int.h - (internal to daemon/control_*.c) one relayctl request to
 * the router, parsed, and what the command files share: the output helpers
 * (control_router.c; JSON strings go through common/json.h) and each
 * command's run function (control_queue.c, control_hosts.c).
 */
#ifndef RELAY_DAEMON_CONTROL_INT_H
#define RELAY_DAEMON_CONTROL_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/control_cmds.h"
#include "common/json.h"
#include "daemon/relay.h"
#include "queue/queue.h"
#include "router/router.h"

#define RCTL_HEAD_MAX      (64 * 1024)  /* header block read by `queue show` */
#define RCTL_FIELD_MAX     998          /* a header value shown (RFC 5322 line limit) */
#define RCTL_TOP_DESTS     10           /* top destinations in stats */

/* One request, parsed. */
struct rctl {
	const struct control_cmd *cmd;  /* the command's row (common/control_cmds.h) */
	struct router *r;
	struct sched *s;
	struct queue *q;
	bool json;
	struct buf *out;
	char **pos;                     /* positional arguments */
	int npos;
	const char *domain;             /* --domain */
	bool all;                       /* --all */
	bool held;                      /* --held */
	bool check;                     /* --check */
	struct control_later *later;    /* NULL: no answering later */
	uint64_t now;
	/* The last times formatted: a listing repeats the same few seconds. */
	uint64_t tc_sec[4];
	char tc_text[4][24];
	unsigned tc_next;
};

/* control_router.c: a request's context (router, scheduler, queue, output,
 * now) without its command and arguments: for an answer made later. */
void rctl_begin(struct rctl *c, struct router *r, bool json, struct buf *out);

/* control_router.c: output helpers. */
void rctl_age(uint64_t now, uint64_t then, char *out, size_t outlen);
const char *rctl_ctime(struct rctl *c, uint64_t ms);
const char *rctl_domain_of(const char *addr);
void rctl_json_time(struct rctl *c, struct buf *b, uint64_t ms);
void rctl_text(struct buf *b, const char *s);
void rctl_text_pad(struct buf *b, const char *s, size_t width);

/* control_queue.c: a recipient's state as relayctl names it. */
struct rctl_rstate {
	const char *name;
	uint64_t until;                 /* 0: none */
	const char *dest;               /* the destination it waits for, or NULL */
};

void rctl_rcpt_state(const struct rctl *c, const struct queue_msg *m, size_t i,
    struct rctl_rstate *out);

/* The commands (control_queue.c, control_hosts.c). */
int rctl_queue_list(struct rctl *c);
/* While the start-up scan runs: "-- scanning the queue: N messages loaded so far, M corrupt". */
void rctl_scanning(struct rctl *c);
int rctl_queue_show(struct rctl *c);
int rctl_queue_action(struct rctl *c);
int rctl_hosts(struct rctl *c);
int rctl_hosts_reset(struct rctl *c);
int rctl_route_set(struct rctl *c);
int rctl_route_clear(struct rctl *c);
int rctl_route_list(struct rctl *c);
int rctl_stats(struct rctl *c);
int rctl_dkim(struct rctl *c);
int rctl_policy(struct rctl *c);
/* control_policy.c: the TLS policy in other listings.  JSON: a host's keys
 * ,"policy","refused","refused_at"; a message's ,"tls":[..].  Text: the
 * hosts' TLS POLICY table (those with a policy), a message's tls lines. */
void rctl_policy_host(struct rctl *c, const struct health_host *h);
void rctl_policy_hosts(struct rctl *c, const struct health_host *const *v, size_t n);
void rctl_policy_msg(struct rctl *c, const char *qid);

#endif
