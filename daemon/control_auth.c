/*
 * control_auth.c - relayctl's requests about the AUTH throttle:
 * `auth list` (every client address and login with failed AUTHs in their
 * window or a block, as an aligned table or JSON) and `auth unblock
 * ADDRESS|LOGIN` (forget one's failures and block, so that an office
 * behind one NAT need not wait out a lockout).
 *
 * Owns: nothing beyond one request; the answer is written into the caller's
 * buffer.  Never: changes the counters except through submit_auth_unblock().
 */
#include "daemon/relay.h"

#include <stdio.h>
#include <string.h>

#include "common/control_cmds.h"
#include "common/json.h"
#include "common/util.h"
#include "daemon/control_int.h"
#include "submit/submit.h"

struct control_auth_list {
	struct buf *out;
	bool json;
	size_t n;
};

static void
control_auth_row(void *arg, const struct submit_auth_block *b)
{
	struct control_auth_list *c = arg;
	char until[32];

	util_rfc3339_sec(b->until, until, sizeof(until));
	if (c->json) {
		buf_puts(c->out, c->n > 0 ? ",{\"kind\":" : "{\"kind\":");
		json_str(c->out, b->kind);
		buf_puts(c->out, ",\"name\":");
		json_str(c->out, b->name);
		buf_printf(c->out, ",\"failures\":%u,\"blocked\":%s,\"until\":\"%s\"", b->failures,
		    b->blocked ? "true" : "false", until);
		if (strcmp(b->kind, "login") == 0)
			buf_printf(c->out, ",\"blocks\":%u", b->blocks);
		buf_putc(c->out, '}');
	} else {
		if (c->n == 0)
			buf_printf(c->out, "%-8s %-40s %8s  %-8s %s\n", "KIND", "NAME", "FAILURES",
			    "STATE", "UNTIL");
		buf_printf(c->out, "%-8s ", b->kind);
		rctl_text_pad(c->out, b->name, 40);
		buf_printf(c->out, "%8u  %-8s %s\n", b->failures, b->blocked ? "blocked" : "counting",
		    until);
	}
	c->n++;
}

static int
control_auth_list(struct submit *s, bool json, struct buf *out)
{
	struct control_auth_list c = { out, json, 0 };

	if (json)
		buf_puts(out, "{\"entries\":[");
	submit_auth_blocks(s, control_auth_row, &c);
	if (json)
		buf_puts(out, "]}\n");
	else if (c.n == 0)
		buf_puts(out, "no failed AUTH in any window: nothing is blocked\n");
	return 0;
}

static int
control_auth_unblock(struct submit *s, const char *name, bool json, struct buf *out)
{
	const char *kind = "login";
	struct buf key = BUF_INIT;

	if (submit_auth_unblock(s, name, &kind, &key) != 0) {
		buf_puts(out, "not blocked: ");
		rctl_text(out, name);
		buf_printf(out, " (no %s with failed AUTHs in relayctl auth list)", kind);
		buf_free(&key);
		return RELAY_ENOENT;
	}
	if (json) {
		buf_puts(out, "{\"unblocked\":");
		json_str(out, buf_cstr(&key));
		buf_puts(out, ",\"kind\":");
		json_str(out, kind);
		buf_puts(out, "}\n");
	} else {
		buf_printf(out, "%s ", kind);
		rctl_text(out, buf_cstr(&key));
		buf_puts(out, " unblocked: its failed AUTHs are forgotten\n");
	}
	buf_free(&key);
	return 0;
}

int
control_auth(struct submit *s, const struct control_cmd *cmd, int argc, char **argv, bool json,
    struct buf *out)
{
	int i;

	for (i = 0; i < argc; i++)
		if (strncmp(argv[i], "--", 2) == 0)
			break;
	if (i < argc || argc < cmd->min_pos || argc > cmd->max_pos ||
	    (argc > 0 && argv[0][0] == '\0')) {
		buf_printf(out, "usage: relayctl %s", cmd->usage);
		return RELAY_EINVAL;
	}
	if (s == NULL) {
		buf_puts(out, "the submission server is not running");
		return RELAY_ECLOSED;
	}
	if (cmd->id == CONTROL_CMD_AUTH_LIST)
		return control_auth_list(s, json, out);
	return control_auth_unblock(s, argv[0], json, out);
}
