/*
 * relayctl.c - the admin's command: parses the command line against the
 * grammar table it shares with relayd (common/control_cmds.h), then either
 * runs the command locally (audit) or sends it over the control socket to
 * relayd and prints the answer.  Exit: 0 ok, 1 error (clear message on stderr), 2 usage.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/control_cmds.h"
#include "common/control_proto.h"
#include "conf/conf.h"
#include "ctl/ctl.h"

#define CTL_DEFAULT_CONF   "/etc/relayd/relayd.conf"
#define CTL_DEFAULT_SOCKET "/var/spool/relayd/control.sock"

/* One usage line of cmd: the table's text, and [--json] where it answers
 * with a document. */
static void
usage_line(FILE *f, const char *prefix, const struct control_cmd *c)
{
	fprintf(f, "%srelayctl %s%s\n", prefix, c->usage,
	    (c->flags & CONTROL_F_JSONDOC) ? " [--json]" : "");
}

static void
usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: relayctl [-c FILE | -s SOCKET] COMMAND ...\n");
	for (i = 0; i < control_ncmds; i++)
		usage_line(f, "  ", &control_cmds[i]);
}

/*
 * No row matches argv: name what is wrong -- an unknown command, or a known
 * one (queue, route) with a missing or unknown subcommand, then that
 * command's usage only.
 */
static void
usage_unknown(int argc, char **argv)
{
	const char *prefix = "usage: ";
	size_t i;
	bool known = false;

	for (i = 0; i < control_ncmds; i++)
		known = known || strcmp(control_cmds[i].word, argv[0]) == 0;
	if (!known) {
		fprintf(stderr, "relayctl: unknown command '%s'\n", argv[0]);
		usage(stderr);
		return;
	}
	if (argc < 2)
		fprintf(stderr, "relayctl: %s needs a subcommand\n", argv[0]);
	else
		fprintf(stderr, "relayctl: unknown %s subcommand '%s'\n", argv[0], argv[1]);
	for (i = 0; i < control_ncmds; i++) {
		if (strcmp(control_cmds[i].word, argv[0]) != 0)
			continue;
		usage_line(stderr, prefix, &control_cmds[i]);
		prefix = "       ";
	}
}

/* Check positional/option counts; 0 ok, -1 usage error (message printed). */
static int
ctl_check_args(const struct control_cmd *c, int argc, char **argv)
{
	int i, npos = 0;
	bool target = false;

	for (i = 0; i < argc; i++) {
		if (strncmp(argv[i], "--", 2) == 0) {
			const struct control_opt *o = control_cmd_opt(c, argv[i]);
			if (o == NULL) {
				fprintf(stderr, "relayctl: unknown option %s\n", argv[i]);
				usage_line(stderr, "usage: ", c);
				return -1;
			}
			if (o->bit == CONTROL_O_DOMAIN || o->bit == CONTROL_O_ALL)
				target = true;
			if (o->takes_value) {
				if (i + 1 >= argc) {
					fprintf(stderr, "relayctl: option %s needs a value\n", argv[i]);
					usage_line(stderr, "usage: ", c);
					return -1;
				}
				i++;
			}
			continue;
		}
		npos++;
	}
	if (npos < c->min_pos || (c->max_pos >= 0 && npos > c->max_pos)) {
		usage_line(stderr, "relayctl: usage: ", c);
		return -1;
	}
	if ((c->flags & CONTROL_F_TARGET) && npos == 0 && !target) {
		usage_line(stderr, "relayctl: usage: ", c);
		return -1;
	}
	return 0;
}

/* Send argv to relayd, print the answer.  Returns an exit code. */
static int
ctl_send(const char *sockpath, int argc, char **argv)
{
	struct sockaddr_un sun;
	struct buf req = BUF_INIT, resp = BUF_INIT;
	char chunk[8192];
	const char *body;
	ssize_t n;
	size_t off = 0;
	int fd, i;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(sockpath) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "relayctl: socket path too long: %s\n", sockpath);
		return CTL_EXIT_ERROR;
	}
	strcpy(sun.sun_path, sockpath);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		int e = errno;
		if (e == ENOENT || e == ECONNREFUSED)
			fprintf(stderr, "relayctl: relayd is not running (nothing answers on %s)\n", sockpath);
		else if (e == EACCES || e == EPERM)
			fprintf(stderr, "relayctl: permission denied on %s (run it as root, as relayd's user or as a member of control_group)\n",
			    sockpath);
		else
			fprintf(stderr, "relayctl: cannot connect to %s: %s\n", sockpath, strerror(e));
		if (fd >= 0)
			close(fd);
		return CTL_EXIT_ERROR;
	}
	for (i = 0; i < argc; i++)
		buf_append(&req, argv[i], strlen(argv[i]) + 1);
	buf_putc(&req, '\0');
	/* A daemon that refuses us may close before reading: still read its answer. */
	signal(SIGPIPE, SIG_IGN);
	while (off < req.len) {
		n = write(fd, req.data + off, req.len - off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		off += (size_t)n;
	}
	buf_free(&req);
	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		buf_append(&resp, chunk, (size_t)n);
	}
	close(fd);

	if (strncmp(buf_cstr(&resp), "OK\n", 3) == 0) {
		body = resp.data + 3;
		fwrite(body, 1, resp.len - 3, stdout);
		buf_free(&resp);
		return CTL_EXIT_OK;
	}
	if (strncmp(buf_cstr(&resp), "FAIL\n", 5) == 0) {
		/* answered, but not all is well (dkim --check) */
		fwrite(resp.data + 5, 1, resp.len - 5, stdout);
		buf_free(&resp);
		return CTL_EXIT_ERROR;
	}
	if (strncmp(buf_cstr(&resp), "ERR ", 4) == 0) {
		const char *msg = strchr(resp.data + 4, ' ');
		const char *nl = strchr(resp.data, '\n');
		int len = nl ? (int)(nl - (msg ? msg + 1 : resp.data + 4)) : (int)resp.len;
		/* The daemon found a usage error (arguments the grammar cannot check). */
		bool usage_err = strncmp(resp.data + 4, CONTROL_ERR_USAGE " ",
		    strlen(CONTROL_ERR_USAGE) + 1) == 0;

		fprintf(stderr, "relayctl: %.*s\n", len, msg ? msg + 1 : resp.data + 4);
		buf_free(&resp);
		return usage_err ? CTL_EXIT_USAGE : CTL_EXIT_ERROR;
	}
	fprintf(stderr, "relayctl: no answer from relayd on %s (did it stop?)\n", sockpath);
	buf_free(&resp);
	return CTL_EXIT_ERROR;
}

int
main(int argc, char **argv)
{
	const char *conf_path = NULL, *sockpath = NULL;
	const struct control_cmd *cmd;
	struct conf *conf = NULL;
	int ch, consumed, rc;

	while ((ch = getopt(argc, argv, "+c:s:h")) != -1) {
		switch (ch) {
		case 'c': conf_path = optarg; break;
		case 's': sockpath = optarg; break;
		case 'h': usage(stdout); return CTL_EXIT_OK;
		default: usage(stderr); return CTL_EXIT_USAGE;
		}
	}
	argc -= optind;
	argv += optind;
	if (argc == 0) {
		usage(stderr);
		return CTL_EXIT_USAGE;
	}
	cmd = control_cmd_match(argc, argv, &consumed);
	if (cmd == NULL) {
		usage_unknown(argc, argv);
		return CTL_EXIT_USAGE;
	}
	if (ctl_check_args(cmd, argc - consumed, argv + consumed) != 0)
		return CTL_EXIT_USAGE;

	if (conf_path != NULL || (sockpath == NULL && access(CTL_DEFAULT_CONF, R_OK) == 0)) {
		struct buf err = BUF_INIT;
		const char *p = conf_path ? conf_path : CTL_DEFAULT_CONF;

		if (conf_load(p, &conf, &err) != 0) {
			fprintf(stderr, "relayctl: %s", buf_cstr(&err));
			buf_free(&err);
			return CTL_EXIT_ERROR;
		}
		buf_free(&err);
		if (sockpath == NULL)
			sockpath = conf->control_socket;
	}
	if (sockpath == NULL)
		sockpath = CTL_DEFAULT_SOCKET;

	if (cmd->flags & CONTROL_F_LOCAL)
		rc = ctl_audit(conf, argc - consumed, argv + consumed);
	else
		rc = ctl_send(sockpath, argc, argv);
	if (conf != NULL)
		conf_unref(conf);
	return rc;
}
