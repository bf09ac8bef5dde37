/*
 * control_router.c - relayctl's requests to the router (control_router()):
 * the handler of each row of the shared command table (common/control_cmds.h),
 * argument parsing, and the output helpers every answer shares (text,
 * times).  The commands themselves are in
 * control_queue.c (queue list / show / flush / hold / release / delete /
 * bounce), control_hosts.c (hosts, hosts reset, route set / clear / list,
 * stats), control_dkim.c (dkim) and control_policy.c (policy).  Every answer is an aligned human table, or a JSON document with a
 * stable shape (README "relayctl") when json is true.
 *
 * Owns: nothing beyond one request; the answer is written into the caller's
 * buffer as it is produced.
 * Never: changes a message except through the scheduler's administration
 * calls (router/router.h); keeps state between requests.
 */
#include "daemon/control_int.h"
#include "common/util.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Output helpers. */

/* Text for a human table: control characters become '?'; NULL becomes "-". */
void
rctl_text(struct buf *b, const char *s)
{
	const char *run;

	if (s == NULL || *s == '\0') {
		buf_putc(b, '-');
		return;
	}
	while (*s != '\0') {
		run = s;
		while ((unsigned char)*s >= 0x20 && *s != 0x7f)
			s++;
		if (s > run)
			buf_append(b, run, (size_t)(s - run));
		if (*s == '\0')
			break;
		buf_putc(b, '?');
		s++;
	}
}

/* Text padded to width (at least one space follows). */
void
rctl_text_pad(struct buf *b, const char *s, size_t width)
{
	size_t start = b->len;

	rctl_text(b, s);
	do
		buf_putc(b, ' ');
	while (b->len - start < width);
}

/* util_rfc3339_sec() through the request's small cache; valid until 3 more calls. */
const char *
rctl_ctime(struct rctl *c, uint64_t ms)
{
	uint64_t sec = ms / 1000 + 1;   /* 0 = empty slot */
	unsigned i;

	for (i = 0; i < RELAY_ARRAY_LEN(c->tc_sec); i++)
		if (c->tc_sec[i] == sec)
			return c->tc_text[i];
	i = c->tc_next++ % RELAY_ARRAY_LEN(c->tc_sec);
	c->tc_sec[i] = sec;
	util_rfc3339_sec(ms, c->tc_text[i], sizeof(c->tc_text[i]));
	return c->tc_text[i];
}

/* A JSON time string, or null for 0. */
void
rctl_json_time(struct rctl *c, struct buf *b, uint64_t ms)
{
	if (ms == 0) {
		buf_puts(b, "null");
		return;
	}
	buf_putc(b, '"');
	buf_puts(b, rctl_ctime(c, ms));
	buf_putc(b, '"');
}

void
rctl_age(uint64_t now, uint64_t then, char *out, size_t outlen)
{
	util_format_duration(now > then ? (now - then) / 1000 * 1000 : 0, out, outlen);
}

/* The domain part of an address ("" when there is none). */
const char *
rctl_domain_of(const char *addr)
{
	const char *at = strrchr(addr, '@');

	return at != NULL ? at + 1 : "";
}

/* ------------------------------------------------------------------ */
/* The command table and the entry point. */

/* The handler of each row of the shared table (common/control_cmds.h) that
 * reaches the router; stats and reload are control.c's, audit relayctl's. */
static int (*const rctl_runs[CONTROL_CMD_N])(struct rctl *c) = {
	[CONTROL_CMD_QUEUE_LIST] = rctl_queue_list,
	[CONTROL_CMD_QUEUE_SHOW] = rctl_queue_show,
	[CONTROL_CMD_QUEUE_FLUSH] = rctl_queue_action,
	[CONTROL_CMD_QUEUE_HOLD] = rctl_queue_action,
	[CONTROL_CMD_QUEUE_RELEASE] = rctl_queue_action,
	[CONTROL_CMD_QUEUE_DELETE] = rctl_queue_action,
	[CONTROL_CMD_QUEUE_BOUNCE] = rctl_queue_action,
	[CONTROL_CMD_HOSTS] = rctl_hosts,
	[CONTROL_CMD_HOSTS_RESET] = rctl_hosts_reset,
	[CONTROL_CMD_ROUTE_SET] = rctl_route_set,
	[CONTROL_CMD_ROUTE_CLEAR] = rctl_route_clear,
	[CONTROL_CMD_ROUTE_LIST] = rctl_route_list,
	[CONTROL_CMD_STATS] = rctl_stats,
	[CONTROL_CMD_DKIM] = rctl_dkim,
	[CONTROL_CMD_POLICY] = rctl_policy,
};

/* Options and positional arguments after the command words; 0 or RELAY_EINVAL. */
static int
rctl_parse(const struct control_cmd *cmd, int argc, char **argv, struct rctl *c)
{
	const struct control_opt *o;
	int i, kinds;

	c->pos = xcalloc((size_t)argc + 1, sizeof(*c->pos));
	for (i = 0; i < argc; i++) {
		if (strncmp(argv[i], "--", 2) != 0) {
			c->pos[c->npos++] = argv[i];
			continue;
		}
		/* --json was taken off by control.c: here it is unknown too */
		if ((o = control_cmd_opt(cmd, argv[i])) == NULL || o->bit == 0)
			return RELAY_EINVAL;
		if (o->bit == CONTROL_O_DOMAIN) {
			if (i + 1 >= argc || c->domain != NULL || argv[i + 1][0] == '\0')
				return RELAY_EINVAL;
			c->domain = argv[++i];
		} else if (o->bit == CONTROL_O_ALL)
			c->all = true;
		else if (o->bit == CONTROL_O_HELD)
			c->held = true;
		else if (o->bit == CONTROL_O_CHECK)
			c->check = true;
		else
			return RELAY_EINVAL;
	}
	if (c->npos < cmd->min_pos || (cmd->max_pos >= 0 && c->npos > cmd->max_pos))
		return RELAY_EINVAL;
	if (cmd->flags & CONTROL_F_TARGET) {
		kinds = (c->npos > 0) + (c->domain != NULL) + c->all;
		if (kinds != 1)
			return RELAY_EINVAL;
	}
	return 0;
}

/* A request's context without its command and arguments. */
void
rctl_begin(struct rctl *c, struct router *r, bool json, struct buf *out)
{
	memset(c, 0, sizeof(*c));
	c->r = r;
	c->s = router_sched(r);
	c->q = router_queue(r);
	c->json = json;
	c->out = out;
	c->now = util_now_ms();
}

int
control_router(struct router *r, int argc, char **argv, bool json, struct buf *out,
    struct control_later *later)
{
	const struct control_cmd *cmd;
	struct rctl c;
	int consumed, rc;

	rctl_begin(&c, r, json, out);
	c.later = later;
	if (argc < 1 || (cmd = control_cmd_match(argc, argv, &consumed)) == NULL ||
	    rctl_runs[cmd->id] == NULL) {
		buf_printf(out, "unknown command: %s", argc > 0 ? argv[0] : "(none)");
		return RELAY_EINVAL;
	}
	if (c.s == NULL || c.q == NULL) {
		buf_puts(out, "the router is not running");
		return RELAY_ECLOSED;
	}
	c.cmd = cmd;
	if (rctl_parse(cmd, argc - consumed, argv + consumed, &c) != 0) {
		free(c.pos);
		buf_printf(out, "usage: relayctl %s", cmd->usage);
		return RELAY_EINVAL;
	}
	rc = rctl_runs[cmd->id](&c);
	free(c.pos);
	return rc;
}

void
control_later_cancel(struct control_later *l)
{
	void *pending;

	if (l != NULL && l->pending != NULL) {
		pending = l->pending;
		l->pending = NULL;
		l->cancel(pending);
	}
}
