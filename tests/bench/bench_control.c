/*
 * bench_control.c - fills a queue directory with N messages in the queue's
 * own format, through relaycore's queue API (queue_open, queue_txn_begin,
 * queue_txn_write, queue_txn_commit), for bench_control.py, which then
 * starts relayd on it and times every relayctl command.  Not a test.
 *
 *   bench_control -d QUEUE_DIR [-n 100000] [-r RCPTS] [-D DOMAINS] [-s SIZE] [-c INFLIGHT]
 *
 * Message i goes to RCPTS recipients user<i>-<k>@d<(i+k) % DOMAINS>.bench.test,
 * from alice@example.org, arrived within the last two days (spread evenly,
 * oldest first); bodies are SIZE bytes after a few header lines.
 * Owns: its loop and queue; never touches a queue_dir that relayd is using.
 */
#include "queue/queue.h"
#include "common/log.h"
#include "common/util.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct bench_ctl {
	uv_loop_t loop;
	struct queue *q;
	size_t total, started, done, failed;
	size_t nrcpts, ndomains, size;
	uint64_t now;
	char *body;
};

static void bench_ctl_start(struct bench_ctl *b);

static void
bench_ctl_new_msg(void *arg, struct queue_msg *m)
{
	(void)arg;
	queue_msg_free(m);
}

static void
bench_ctl_committed(void *arg, int err, const char *qid)
{
	struct bench_ctl *b = arg;

	(void)qid;
	if (err != 0)
		b->failed++;
	b->done++;
	if (b->started < b->total)
		bench_ctl_start(b);
}

static void
bench_ctl_start(struct bench_ctl *b)
{
	struct env_rcpt rcpts[16];
	char addrs[16][96];
	struct envelope env;
	struct queue_txn *t;
	struct buf head = BUF_INIT;
	size_t i = b->started++, k;
	char date[64];

	memset(&env, 0, sizeof(env));
	memset(rcpts, 0, sizeof(rcpts));
	for (k = 0; k < b->nrcpts; k++) {
		snprintf(addrs[k], sizeof(addrs[k]), "user%zu-%zu@d%zu.bench.test", i, k,
		    (i + k) % b->ndomains);
		rcpts[k].addr = addrs[k];
	}
	env.sender = "alice@example.org";
	env.rcpts = rcpts;
	env.nrcpts = b->nrcpts;
	env.auth_user = "alice";
	env.client_ip = "127.0.0.1";
	env.client_helo = "bench.client";
	/* Oldest first, spread over the last two days. */
	env.arrival_ms = b->now - (uint64_t)(b->total - i) * (2 * 86400000ULL / b->total);
	env.size = b->size;
	if (queue_txn_begin(b->q, &env, &t) != 0)
		fatalx("%s: queue_txn_begin failed", __func__);
	util_rfc5322_date(env.arrival_ms, date, sizeof(date));
	buf_printf(&head, "Received: from bench.client ([127.0.0.1]) by relay.test; %s\r\n"
	    "From: Alice <alice@example.org>\r\nTo: %s\r\nSubject: bench message %zu\r\n"
	    "Date: %s\r\nMessage-ID: <bench.%zu@example.org>\r\n\r\n", date, addrs[0], i, date, i);
	if (queue_txn_write(t, head.data, head.len) != 0 ||
	    queue_txn_write(t, b->body, b->size) != 0)
		fatalx("%s: queue_txn_write failed", __func__);
	buf_free(&head);
	queue_txn_commit(t, bench_ctl_committed, b);
}

static int
bench_ctl_usage(void)
{
	fprintf(stderr, "usage: bench_control -d QUEUE_DIR [-n N] [-r RCPTS (1..16)] [-D DOMAINS] "
	    "[-s SIZE] [-c INFLIGHT]\n");
	return 2;
}

static void
bench_ctl_closed(void *arg)
{
	(void)arg;
}

int
main(int argc, char **argv)
{
	struct bench_ctl b;
	struct buf err = BUF_INIT;
	const char *dir = NULL;
	size_t inflight = 64, i;
	uint64_t t0;
	int ch;

	memset(&b, 0, sizeof(b));
	b.total = 100000;
	b.nrcpts = 1;
	b.ndomains = 10;
	b.size = 1024;
	while ((ch = getopt(argc, argv, "d:n:r:D:s:c:")) != -1) {
		switch (ch) {
		case 'd': dir = optarg; break;
		case 'n': b.total = strtoul(optarg, NULL, 10); break;
		case 'r': b.nrcpts = strtoul(optarg, NULL, 10); break;
		case 'D': b.ndomains = strtoul(optarg, NULL, 10); break;
		case 's': b.size = strtoul(optarg, NULL, 10); break;
		case 'c': inflight = strtoul(optarg, NULL, 10); break;
		default:
			return bench_ctl_usage();
		}
	}
	if (dir == NULL || b.total == 0 || b.nrcpts == 0 || b.nrcpts > 16 || b.ndomains == 0 ||
	    inflight == 0)
		return bench_ctl_usage();

	b.body = xmalloc(b.size + 1);
	for (i = 0; i < b.size; i++)
		b.body[i] = (i % 72 == 70) ? '\r' : (i % 72 == 71) ? '\n' : (char)('a' + i % 26);
	if (b.size >= 2) {
		b.body[b.size - 2] = '\r';
		b.body[b.size - 1] = '\n';
	}
	b.now = util_now_ms();
	log_set_level(LOG_WARNING);
	uv_loop_init(&b.loop);
	if (queue_open(&b.loop, dir, &b.q, &err) != 0)
		fatalx("queue_open %s: %s", dir, buf_cstr(&err));
	queue_set_new_cb(b.q, bench_ctl_new_msg, NULL);
	t0 = util_mono_ms();
	for (i = 0; i < inflight && b.started < b.total; i++)
		bench_ctl_start(&b);
	uv_run(&b.loop, UV_RUN_DEFAULT);
	queue_close(b.q, bench_ctl_closed, NULL);
	uv_run(&b.loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&b.loop) != 0)
		fatalx("loop not closed cleanly");
	printf("queued %zu messages (%zu recipients each, %zu domains) in %s: %.1fs, %zu failed\n",
	    b.done, b.nrcpts, b.ndomains, dir, (double)(util_mono_ms() - t0) / 1000.0, b.failed);
	free(b.body);
	buf_free(&err);
	return b.failed ? 1 : 0;
}
