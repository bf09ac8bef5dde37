/*
 * control_cmds.c - the relayctl command table (control_cmds.h) and its
 * matching.  Owns only constant data.  Never runs a command: relayctl and
 * relayd each do what a row's id means on their side.
 */
#include "common/control_cmds.h"

#include <string.h>

/*
 * The wait column (control_cmds.h, reasons in queue/QUEUE.md "relayctl"):
 * what reads the scheduler's memory or changes a message through it waits
 * for the acknowledged messages only; records and removals it issues go to
 * the queue's writer, which does them in issue order, after every record
 * issued before.  `queue show` reads the records from the message's file,
 * and `queue delete` renames the file on the loop, where a failure is
 * answered, only when no record or removal is on its way: both wait for
 * those issued before the request.
 */
const struct control_cmd control_cmds[] = {
	{ "stats", NULL, CONTROL_CMD_STATS, 0, 0, 0, CONTROL_F_JSONDOC, CONTROL_WAIT_MESSAGES,
	  "stats" },
	{ "reload", NULL, CONTROL_CMD_RELOAD, 0, 0, 0, 0, CONTROL_WAIT_MESSAGES,
	  "reload" },
	{ "queue", "list", CONTROL_CMD_QUEUE_LIST, 0, 0, CONTROL_O_DOMAIN | CONTROL_O_HELD,
	  CONTROL_F_JSONDOC, CONTROL_WAIT_MESSAGES, "queue list [--domain D] [--held]" },
	{ "queue", "show", CONTROL_CMD_QUEUE_SHOW, 1, 1, 0, CONTROL_F_JSONDOC, CONTROL_WAIT_RECORDS,
	  "queue show QID" },
	{ "queue", "flush", CONTROL_CMD_QUEUE_FLUSH, 0, -1, CONTROL_O_DOMAIN | CONTROL_O_ALL,
	  CONTROL_F_TARGET, CONTROL_WAIT_MESSAGES, "queue flush QID... | --domain D | --all" },
	{ "queue", "hold", CONTROL_CMD_QUEUE_HOLD, 0, -1, CONTROL_O_DOMAIN, CONTROL_F_TARGET,
	  CONTROL_WAIT_MESSAGES, "queue hold QID... | --domain D" },
	{ "queue", "release", CONTROL_CMD_QUEUE_RELEASE, 0, -1, CONTROL_O_DOMAIN, CONTROL_F_TARGET,
	  CONTROL_WAIT_MESSAGES, "queue release QID... | --domain D" },
	{ "queue", "delete", CONTROL_CMD_QUEUE_DELETE, 0, -1, CONTROL_O_DOMAIN, CONTROL_F_TARGET,
	  CONTROL_WAIT_RECORDS, "queue delete QID... | --domain D" },
	{ "queue", "bounce", CONTROL_CMD_QUEUE_BOUNCE, 1, -1, 0, 0, CONTROL_WAIT_MESSAGES,
	  "queue bounce QID..." },
	{ "hosts", NULL, CONTROL_CMD_HOSTS, 0, 0, 0, CONTROL_F_JSONDOC, CONTROL_WAIT_MESSAGES,
	  "hosts" },
	{ "hosts", "reset", CONTROL_CMD_HOSTS_RESET, 1, 1, 0, 0, CONTROL_WAIT_MESSAGES,
	  "hosts reset HOST" },
	{ "route", "set", CONTROL_CMD_ROUTE_SET, 2, 2, 0, 0, CONTROL_WAIT_MESSAGES,
	  "route set DOMAIN HOST:PORT[,HOST:PORT...]" },
	{ "route", "clear", CONTROL_CMD_ROUTE_CLEAR, 1, 1, 0, 0, CONTROL_WAIT_MESSAGES,
	  "route clear DOMAIN" },
	{ "route", "list", CONTROL_CMD_ROUTE_LIST, 0, 0, 0, CONTROL_F_JSONDOC, CONTROL_WAIT_MESSAGES,
	  "route list" },
	{ "audit", NULL, CONTROL_CMD_AUDIT, 0, -1,
	  CONTROL_O_LOG | CONTROL_O_SINCE | CONTROL_O_DOMAIN | CONTROL_O_RCPT,
	  CONTROL_F_LOCAL | CONTROL_F_JSONDOC, CONTROL_WAIT_MESSAGES,
	  "audit [--log FILE...] [--since DUR] [--domain D] [--rcpt ADDR]" },
	{ "dkim", NULL, CONTROL_CMD_DKIM, 0, 0, CONTROL_O_CHECK, CONTROL_F_JSONDOC,
	  CONTROL_WAIT_MESSAGES, "dkim [--check]" },
	{ "auth", "list", CONTROL_CMD_AUTH_LIST, 0, 0, 0, CONTROL_F_JSONDOC, CONTROL_WAIT_MESSAGES,
	  "auth list" },
	{ "auth", "unblock", CONTROL_CMD_AUTH_UNBLOCK, 1, 1, 0, 0, CONTROL_WAIT_MESSAGES,
	  "auth unblock ADDRESS|LOGIN" },
	{ "policy", NULL, CONTROL_CMD_POLICY, 1, 1, 0, CONTROL_F_JSONDOC, CONTROL_WAIT_MESSAGES,
	  "policy DOMAIN" },
};

const size_t control_ncmds = sizeof(control_cmds) / sizeof(control_cmds[0]);

static const struct control_opt control_opts[] = {
	{ "--json", 0, false },
	{ "--domain", CONTROL_O_DOMAIN, true },
	{ "--all", CONTROL_O_ALL, false },
	{ "--held", CONTROL_O_HELD, false },
	{ "--log", CONTROL_O_LOG, true },
	{ "--since", CONTROL_O_SINCE, true },
	{ "--rcpt", CONTROL_O_RCPT, true },
	{ "--check", CONTROL_O_CHECK, false },
};

const struct control_cmd *
control_cmd_match(int argc, char *const *argv, int *consumed)
{
	const struct control_cmd *best = NULL;
	size_t i;

	*consumed = 0;
	for (i = 0; i < control_ncmds; i++) {
		const struct control_cmd *cmd = &control_cmds[i];
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

const struct control_opt *
control_cmd_opt(const struct control_cmd *cmd, const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(control_opts) / sizeof(control_opts[0]); i++)
		if (strcmp(control_opts[i].name, name) == 0)
			return control_opts[i].bit == 0 || (cmd->opts & control_opts[i].bit) ?
			    &control_opts[i] : NULL;
	return NULL;
}
