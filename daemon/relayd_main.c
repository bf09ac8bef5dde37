/*
 * relayd_main.c - the relayd command: parse arguments, check a configuration
 * (-n) or run the relay in the foreground on one libuv loop until SIGTERM.
 * Exit codes: 0 clean stop or config OK, 1 configuration or start-up error,
 * 2 usage error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "common/buf.h"
#include "common/log.h"
#include "conf/conf.h"
#include "daemon/relay.h"
#include "dkim/dkim.h"
#include "sandbox/sandbox.h"

#define RELAYD_DEFAULT_CONF "/etc/relayd/relayd.conf"
#define RELAYD_VERSION "0.1.0"

static void
usage(FILE *f)
{
	fprintf(f, "usage: relayd [-n] [-c FILE]\n"
	    "  -c FILE  configuration file (default " RELAYD_DEFAULT_CONF ")\n"
	    "  -n       check the configuration and exit (0 = valid)\n"
	    "  -V       print the version\n");
}

static void
relayd_count_handle(uv_handle_t *h, void *arg)
{
	(void)h;
	(*(int *)arg)++;
}

/* Handles still in the loop (closed ones are gone once their callback ran). */
static int
relayd_handles(uv_loop_t *loop)
{
	int n = 0;

	uv_walk(loop, relayd_count_handle, &n);
	return n;
}

int
main(int argc, char **argv)
{
	const char *path = RELAYD_DEFAULT_CONF;
	bool check = false;
	struct relay relay;
	struct buf err = BUF_INIT;
	uv_loop_t loop;
	int ch, rc;

	while ((ch = getopt(argc, argv, "c:nVh")) != -1) {
		switch (ch) {
		case 'c': path = optarg; break;
		case 'n': check = true; break;
		case 'V': printf("relayd %s\n", RELAYD_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}

	if (check) {
		struct buf warn = BUF_INIT;
		struct conf *c = NULL;

		struct dkim_keys *dk = NULL;

		if (conf_load(path, &c, &err) != 0 ||
		    dkim_keys_load(c, &dk, &err) != 0 ||
		    sandbox_check_conf(c, &warn, &err) != 0) {
			dkim_keys_unref(dk);
			conf_unref(c);
			fputs(buf_cstr(&err), stderr);
			if (err.len > 0 && err.data[err.len - 1] != '\n')
				fputc('\n', stderr);
			buf_free(&err);
			return 1;
		}
		fputs(buf_cstr(&warn), stderr);
		buf_free(&warn);
		printf("%s: configuration OK\n", path);
		dkim_keys_unref(dk);
		conf_unref(c);
		return 0;
	}

	if ((rc = uv_loop_init(&loop)) != 0) {
		fprintf(stderr, "relayd: cannot create the event loop: %s\n", uv_strerror(rc));
		return 1;
	}
	if (relay_start(&relay, &loop, path, &err) != 0) {
		fputs(buf_cstr(&err), stderr);
		if (err.len > 0 && err.data[err.len - 1] != '\n')
			fputc('\n', stderr);
		log_event(LOG_CRIT, "start_failed", "config", path, "error", buf_cstr(&err), NULL);
		buf_free(&err);
		/* Unwind whatever started, so every handle closes and nothing leaks. */
		relay_stop(&relay, "start_failed");
		uv_run(&loop, UV_RUN_DEFAULT);
		relay_free(&relay);
		uv_loop_close(&loop);
		log_close();
		return 1;
	}
	while (uv_run(&loop, UV_RUN_ONCE) != 0)
		if (relay_abandoned(&relay) > 0)
			break;
	if (relay_abandoned(&relay) > 0) {
		/*
		 * Every module is down and the queue closed, but a password check
		 * is stuck in its backend (event auth_abandoned): its thread-pool
		 * job keeps the loop alive, and libuv's exit handler would join
		 * that thread forever.  Let the last close callbacks run, then
		 * leave without the loop and without exit handlers.  Nothing is
		 * freed: the stuck thread may still call back into its session's
		 * SASL context and the configuration when the backend answers.
		 */
		for (int i = 0; i < 100 && relayd_handles(&loop) > 0; i++)
			uv_run(&loop, UV_RUN_NOWAIT);
		rc = relayd_handles(&loop);
		log_event(LOG_NOTICE, "stopped", "clean", rc == 0 ? "yes" : "no", NULL);
		log_close();
		fflush(NULL);
		_exit(0);
	}
	relay_free(&relay);
	rc = uv_loop_close(&loop);
	log_event(LOG_NOTICE, "stopped", "clean", rc == 0 ? "yes" : "no", NULL);
	log_close();
	return 0;
}
