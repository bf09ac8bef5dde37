/*
 * control_router.c - relayctl's requests to the router (control_router()):
 * the command table, argument parsing, and the output helpers every answer
 * shares (text and JSON strings, times).  The commands themselves are in
 * control_queue.c (queue list / show / flush / hold / release / delete /
 * bounce) and control_hosts.c (hosts, hosts reset, route set / clear / list,
 * stats).  Every answer is an aligned human table, or a JSON document with a
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

/* A JSON string (or null): control characters escaped, invalid UTF-8 as U+FFFD. */
void
rctl_json_str(struct buf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s, *run;

	if (s == NULL) {
		buf_puts(b, "null");
		return;
	}
	buf_putc(b, '"');
	while (*p != '\0') {
		run = p;
		while (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\')
			p++;
		if (p > run)
			buf_append(b, run, (size_t)(p - run));
		if (*p == '\0')
			break;
		if (*p == '"' || *p == '\\') {
			buf_putc(b, '\\');
			buf_putc(b, (char)*p++);
		} else if (*p < 0x20 || *p == 0x7f) {
			buf_printf(b, "\\u%04x", *p++);
		} else {
			/* A UTF-8 sequence: copied when well-formed. */
			size_t n = *p >= 0xf0 && *p <= 0xf4 ? 4 : *p >= 0xe0 ? 3 : *p >= 0xc2 && *p < 0xe0 ? 2 : 0;
			size_t k;

			for (k = 1; n > 0 && k < n; k++)
				if ((p[k] & 0xc0) != 0x80)
					n = 0;
			if (n == 0) {
				buf_puts(b, "\\ufffd");
				p++;
			} else {
				buf_append(b, p, n);
				p += n;
			}
		}
	}
	buf_putc(b, '"');
}

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

/* "2026-11-22T11:21:31Z" (UTC, to the second) into out (at least 24 bytes). */
void
rctl_time(uint64_t ms, char *out, size_t outlen)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	if (strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0 && outlen > 0)
		out[0] = '\0';
}

/* rctl_time() through the request's small cache; valid until 3 more calls. */
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
	rctl_time(ms, c->tc_text[i], sizeof(c->tc_text[i]));
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

static const struct rctl_cmd rctl_cmds[] = {
	{ "queue", "list", 0, 0, RCTL_O_DOMAIN | RCTL_O_HELD, rctl_queue_list,
	  "queue list [--domain D] [--held]" },
	{ "queue", "show", 1, 1, 0, rctl_queue_show, "queue show QID" },
	{ "queue", "flush", 0, -1, RCTL_O_DOMAIN | RCTL_O_ALL | RCTL_O_TARGET, rctl_queue_action,
	  "queue flush QID... | --domain D | --all" },
	{ "queue", "hold", 0, -1, RCTL_O_DOMAIN | RCTL_O_TARGET, rctl_queue_action,
	  "queue hold QID... | --domain D" },
	{ "queue", "release", 0, -1, RCTL_O_DOMAIN | RCTL_O_TARGET, rctl_queue_action,
	  "queue release QID... | --domain D" },
	{ "queue", "delete", 0, -1, RCTL_O_DOMAIN | RCTL_O_TARGET, rctl_queue_action,
	  "queue delete QID... | --domain D" },
	{ "queue", "bounce", 1, -1, 0, rctl_queue_action, "queue bounce QID..." },
	{ "hosts", NULL, 0, 0, 0, rctl_hosts, "hosts" },
	{ "hosts", "reset", 1, 1, 0, rctl_hosts_reset, "hosts reset HOST" },
	{ "route", "set", 2, 2, 0, rctl_route_set, "route set DOMAIN HOST:PORT[,HOST:PORT...]" },
	{ "route", "clear", 1, 1, 0, rctl_route_clear, "route clear DOMAIN" },
	{ "route", "list", 0, 0, 0, rctl_route_list, "route list" },
	{ "stats", NULL, 0, 0, 0, rctl_stats, "stats" },
};

/* The longest pattern that matches argv ("hosts reset" over "hosts"). */
static const struct rctl_cmd *
rctl_match(int argc, char **argv, int *consumed)
{
	const struct rctl_cmd *best = NULL;
	size_t i;

	*consumed = 0;
	for (i = 0; i < RELAY_ARRAY_LEN(rctl_cmds); i++) {
		const struct rctl_cmd *cmd = &rctl_cmds[i];
		int n = cmd->sub != NULL ? 2 : 1;

		if (argc < n || strcmp(argv[0], cmd->word) != 0)
			continue;
		if (n == 2 && strcmp(argv[1], cmd->sub) != 0)
			continue;
		if (n > *consumed) {
			best = cmd;
			*consumed = n;
		}
	}
	return best;
}

/* Options and positional arguments after the command words; 0 or RELAY_EINVAL. */
static int
rctl_parse(const struct rctl_cmd *cmd, int argc, char **argv, struct rctl *c)
{
	int i, kinds;

	c->pos = xcalloc((size_t)argc + 1, sizeof(*c->pos));
	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--domain") == 0 && (cmd->opts & RCTL_O_DOMAIN)) {
			if (i + 1 >= argc || c->domain != NULL || argv[i + 1][0] == '\0')
				return RELAY_EINVAL;
			c->domain = argv[++i];
		} else if (strcmp(argv[i], "--all") == 0 && (cmd->opts & RCTL_O_ALL))
			c->all = true;
		else if (strcmp(argv[i], "--held") == 0 && (cmd->opts & RCTL_O_HELD))
			c->held = true;
		else if (strncmp(argv[i], "--", 2) == 0)
			return RELAY_EINVAL;
		else
			c->pos[c->npos++] = argv[i];
	}
	if (c->npos < cmd->min_pos || (cmd->max_pos >= 0 && c->npos > cmd->max_pos))
		return RELAY_EINVAL;
	if (cmd->opts & RCTL_O_TARGET) {
		kinds = (c->npos > 0) + (c->domain != NULL) + c->all;
		if (kinds != 1)
			return RELAY_EINVAL;
	}
	return 0;
}

int
control_router(struct router *r, int argc, char **argv, bool json, struct buf *out)
{
	const struct rctl_cmd *cmd;
	struct rctl c;
	int consumed, rc;

	memset(&c, 0, sizeof(c));
	c.r = r;
	c.s = router_sched(r);
	c.q = router_queue(r);
	c.json = json;
	c.out = out;
	c.now = util_now_ms();
	if (argc < 1 || (cmd = rctl_match(argc, argv, &consumed)) == NULL) {
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
	rc = cmd->run(&c);
	free(c.pos);
	return rc;
}
