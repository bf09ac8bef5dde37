/*
 * control_cmds.h - relayctl's command grammar, the one table that relayctl
 * (ctl/relayctl.c: validates the command line, prints usage) and relayd
 * (daemon/control.c, daemon/control_router.c, daemon/control_auth.c:
 * dispatches by id) both read,
 * next to the wire protocol (control_proto.h).  A row is a command pattern
 * (OpenSMTPD's smtpctl): one or two literal words, then between min_pos and
 * max_pos positional arguments (-1: unlimited) mixed with the options the row
 * allows.  --json is allowed everywhere (relayd strips it before dispatch).
 */
#ifndef RELAY_CONTROL_CMDS_H
#define RELAY_CONTROL_CMDS_H

#include <stdbool.h>
#include <stddef.h>

/* What a row runs; the daemon maps ids to its handlers. */
enum control_cmd_id {
	CONTROL_CMD_STATS,
	CONTROL_CMD_RELOAD,
	CONTROL_CMD_QUEUE_LIST,
	CONTROL_CMD_QUEUE_SHOW,
	CONTROL_CMD_QUEUE_FLUSH,
	CONTROL_CMD_QUEUE_HOLD,
	CONTROL_CMD_QUEUE_RELEASE,
	CONTROL_CMD_QUEUE_DELETE,
	CONTROL_CMD_QUEUE_BOUNCE,
	CONTROL_CMD_HOSTS,
	CONTROL_CMD_HOSTS_RESET,
	CONTROL_CMD_ROUTE_SET,
	CONTROL_CMD_ROUTE_CLEAR,
	CONTROL_CMD_ROUTE_LIST,
	CONTROL_CMD_AUDIT,
	CONTROL_CMD_DKIM,
	CONTROL_CMD_AUTH_LIST,
	CONTROL_CMD_AUTH_UNBLOCK,
	CONTROL_CMD_POLICY,
	CONTROL_CMD_N
};

/* Options a row accepts (bits), besides --json. */
#define CONTROL_O_DOMAIN   0x01         /* --domain D */
#define CONTROL_O_ALL      0x02         /* --all */
#define CONTROL_O_HELD     0x04         /* --held */
#define CONTROL_O_LOG      0x08         /* --log FILE (audit; repeatable) */
#define CONTROL_O_SINCE    0x10         /* --since DUR */
#define CONTROL_O_RCPT     0x20         /* --rcpt ADDR */
#define CONTROL_O_CHECK    0x40         /* --check (dkim) */

/* Row flags. */
#define CONTROL_F_TARGET   0x01         /* QID..., --domain or --all: relayctl
                                           wants one at least, relayd exactly one kind */
#define CONTROL_F_LOCAL    0x02         /* relayctl runs it itself (audit) */
#define CONTROL_F_JSONDOC  0x04         /* answers with a document: usage shows [--json] */

/*
 * What relayd waits for before it runs a row (daemon/control.c; the reasons
 * per command are in queue/QUEUE.md, "relayctl"):
 * MESSAGES  every message acknowledged (250) before the request has reached
 *           the scheduler (queue_wait_published()): enough for an answer
 *           from memory, which has every record the moment it is issued;
 * RECORDS   that, and every record and removal issued before the request is
 *           written (queue_wait_acked()): after a mass deferral the queue's
 *           writer may have hundreds of thousands left (seconds).
 */
enum control_wait {
	CONTROL_WAIT_MESSAGES,
	CONTROL_WAIT_RECORDS
};

struct control_cmd {
	const char *word, *sub;         /* sub NULL: a one-word command */
	enum control_cmd_id id;
	int min_pos, max_pos;           /* max_pos -1: unlimited */
	unsigned opts;                  /* CONTROL_O_* */
	unsigned flags;                 /* CONTROL_F_* */
	enum control_wait wait;         /* relayd's wait before it runs the row */
	const char *usage;              /* without "relayctl " and without [--json] */
};

/* An option: its bit (0 for --json) and whether it takes a value. */
struct control_opt {
	const char *name;
	unsigned bit;
	bool takes_value;
};

extern const struct control_cmd control_cmds[];
extern const size_t control_ncmds;

/* The longest row matching the first words of argv ("hosts reset" over
 * "hosts"), with the number of words it took; NULL if none. */
const struct control_cmd *control_cmd_match(int argc, char *const *argv, int *consumed);

/* The option called name if cmd accepts it (--json always), else NULL. */
const struct control_opt *control_cmd_opt(const struct control_cmd *cmd, const char *name);

#endif
