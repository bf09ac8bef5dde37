/*
 * bench_queue.c - how fast the durable queue accepts mail: commits N
 * messages of S bytes with C transactions in flight (each commit callback
 * starts the next one), for each group-sync strategy, and prints msgs/s,
 * batches (group syncs), messages per batch, the commit thread's time per
 * batch (writing the files, creating those that found no spare, syncing
 * data, renaming to msg/<qid> + fsync of msg/), p50/p99 commit latency, the
 * loop's time per message, and how many messages began on a spare file.
 *
 * With -k K the bench also plays the delivery side: once more than K
 * messages are queued, each commit removes the oldest one (queue_remove), as
 * a relay in a steady state does; removed files come back as spare files
 * (recycled), so no inode is created or freed.
 *
 * With -N, spare files have names from the start (msg/.spare-N), as where
 * unnamed files (O_TMPFILE + linkat) cannot be made.
 *
 *   bench_queue [-n N] [-c C] [-s SIZE] [-m fdatasync|range|syncfs|auto|all] [-d DIR]
 *               [-r ROUNDS] [-k K] [-N]
 *
 * DIR (default $TMPDIR or /tmp) must be on the disk under test; the bench
 * makes and removes its own queue directories below it.
 */
#include "queue/queue.h"
#include "common/log.h"
#include "common/util.h"

#include <sys/stat.h>
#include <ftw.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct bench {
	uv_loop_t loop;
	struct queue *q;
	size_t total, started, done, failed;
	uint64_t loop_ns;            /* time the loop spent in begin + write + commit */
	char *body;
	size_t size;
	uint64_t *lat_ns;
	struct env_rcpt rcpt;
	struct envelope env;
	size_t keep;                 /* -k: messages kept queued, 0 = all */
	bool named;                  /* -N */
	struct queue_msg **ring;     /* with keep: the queued messages, oldest first */
	size_t rhead, rlen;
	uint64_t remove_ns;          /* time the loop spent in queue_remove */
};

struct inflight {
	struct bench *b;
	uint64_t t0;
};

static void bench_start_one(struct bench *b);

static void
bench_new_msg(void *arg, struct queue_msg *m)
{
	struct bench *b = arg;
	struct queue_msg *old;
	uint64_t t0;

	if (b->keep == 0) {
		queue_msg_free(m);
		return;
	}
	if (b->rlen == b->keep) {
		old = b->ring[b->rhead];
		t0 = uv_hrtime();
		if (queue_remove(b->q, old) != 0)
			fatalx("%s: remove failed", __func__);
		b->remove_ns += uv_hrtime() - t0;
		queue_msg_free(old);
		b->ring[b->rhead] = m;
		b->rhead = (b->rhead + 1) % b->keep;
	} else
		b->ring[(b->rhead + b->rlen++) % b->keep] = m;
}

static void
bench_committed(void *arg, int err, const char *qid)
{
	struct inflight *f = arg;
	struct bench *b = f->b;

	(void)qid;
	if (err != 0)
		b->failed++;
	b->lat_ns[b->done++] = uv_hrtime() - f->t0;
	free(f);
	if (b->started < b->total)
		bench_start_one(b);
}

static void
bench_start_one(struct bench *b)
{
	struct queue_txn *t;
	struct inflight *f;
	uint64_t t0 = uv_hrtime();

	if (queue_txn_begin(b->q, &b->env, &t) != 0)
		fatalx("%s: begin failed", __func__);
	f = xmalloc(sizeof(*f));
	f->b = b;
	f->t0 = uv_hrtime();
	b->started++;
	if (queue_txn_write(t, b->body, b->size) != 0)
		fatalx("%s: write failed", __func__);
	queue_txn_commit(t, bench_committed, f);
	b->loop_ns += uv_hrtime() - t0;
}

static int
bench_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int
bench_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void
bench_closed(void *arg)
{
	(void)arg;
}

static void
bench_run(const char *base, const char *name, enum queue_sync_mode mode, size_t n, size_t c,
    size_t size, size_t keep, bool named)
{
	struct bench b;
	struct buf err = BUF_INIT;
	struct queue_counters cnt;
	char dir[512];
	uint64_t t0, elapsed;
	size_t i;
	double secs;

	memset(&b, 0, sizeof(b));
	b.total = n;
	b.size = size;
	b.body = xmalloc(size);
	for (i = 0; i < size; i++)
		b.body[i] = (i % 78 == 76) ? '\r' : (i % 78 == 77) ? '\n' : (char)('a' + i % 26);
	b.lat_ns = xcalloc(n, sizeof(*b.lat_ns));
	b.rcpt.addr = "bob@example.com";
	b.env.sender = "alice@relay.test";
	b.env.rcpts = &b.rcpt;
	b.env.nrcpts = 1;
	b.env.auth_user = "alice@relay.test";
	b.env.client_ip = "127.0.0.1";
	b.env.client_helo = "bench";
	b.env.arrival_ms = util_now_ms();
	b.keep = keep;
	b.ring = keep > 0 ? xcalloc(keep, sizeof(*b.ring)) : NULL;

	snprintf(dir, sizeof(dir), "%s/relayd-bench-queue-%d-%s", base, (int)getpid(), name);
	uv_loop_init(&b.loop);
	if (queue_open(&b.loop, dir, &b.q, &err) != 0)
		fatalx("queue_open: %s", buf_cstr(&err));
	queue_set_sync_mode(b.q, mode);
	queue_set_named_files(b.q, named);
	uv_run(&b.loop, UV_RUN_DEFAULT);         /* the first spare files are ready */
	queue_set_new_cb(b.q, bench_new_msg, &b);

	t0 = uv_hrtime();
	for (i = 0; i < c && b.started < n; i++)
		bench_start_one(&b);
	uv_run(&b.loop, UV_RUN_DEFAULT);
	elapsed = uv_hrtime() - t0;
	queue_get_counters(b.q, &cnt);
	for (i = 0; i < b.rlen; i++)
		queue_msg_free(b.ring[(b.rhead + i) % b.keep]);
	queue_close(b.q, bench_closed, NULL);
	uv_run(&b.loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&b.loop) != 0)
		fatalx("loop not closed cleanly");

	qsort(b.lat_ns, b.done, sizeof(*b.lat_ns), bench_cmp);
	secs = (double)elapsed / 1e9;
	printf("%-9s n=%zu c=%zu size=%zu: %6.0f msgs/s  batches=%llu (%.1f/batch, create %.2fms "
	    "sync %.2fms publish %.2fms)  p50=%.2fms p99=%.2fms  loop %.3fms/msg  spare %llu late %llu  "
	    "recycled %llu reused %llu unlinked %llu remove %.3fms  failed=%zu\n", name, n, c, size,
	    (double)b.done / secs, (unsigned long long)cnt.batches,
	    cnt.batches ? (double)cnt.commits / (double)cnt.batches : 0.0,
	    cnt.batches ? (double)cnt.create_ns / (double)cnt.batches / 1e6 : 0.0,
	    cnt.batches ? (double)cnt.sync_ns / (double)cnt.batches / 1e6 : 0.0,
	    cnt.batches ? (double)cnt.publish_ns / (double)cnt.batches / 1e6 : 0.0,
	    (double)b.lat_ns[b.done / 2] / 1e6, (double)b.lat_ns[b.done * 99 / 100] / 1e6,
	    (double)b.loop_ns / (double)b.started / 1e6, (unsigned long long)cnt.spares_used,
	    (unsigned long long)cnt.created_late, (unsigned long long)cnt.recycled,
	    (unsigned long long)cnt.spares_reused, (unsigned long long)cnt.unlinked,
	    b.keep > 0 && b.done > b.keep ? (double)b.remove_ns / (double)(b.done - b.keep) / 1e6 : 0.0,
	    b.failed);
	fflush(stdout);
	(void)nftw(dir, bench_rm, 16, FTW_DEPTH | FTW_PHYS);
	free(b.body);
	free(b.lat_ns);
	free(b.ring);
	buf_free(&err);
}

int
main(int argc, char **argv)
{
	static const struct {
		const char *name;
		enum queue_sync_mode mode;
	} modes[] = {
		{ "fdatasync", QUEUE_SYNC_FDATASYNC },
		{ "range", QUEUE_SYNC_RANGE },
		{ "syncfs", QUEUE_SYNC_SYNCFS },
		{ "auto", QUEUE_SYNC_AUTO },
	};
	const char *mode = "all", *base = getenv("TMPDIR");
	size_t n = 20000, c = 16, size = 4096, rounds = 1, keep = 0, i, r;
	int ch, ran = 0;
	bool named = false;

	if (base == NULL || *base == '\0')
		base = "/tmp";
	while ((ch = getopt(argc, argv, "n:c:s:m:d:r:k:N")) != -1) {
		switch (ch) {
		case 'n': n = strtoul(optarg, NULL, 10); break;
		case 'c': c = strtoul(optarg, NULL, 10); break;
		case 's': size = strtoul(optarg, NULL, 10); break;
		case 'm': mode = optarg; break;
		case 'd': base = optarg; break;
		case 'r': rounds = strtoul(optarg, NULL, 10); break;
		case 'k': keep = strtoul(optarg, NULL, 10); break;
		case 'N': named = true; break;
		default:
			fprintf(stderr, "usage: bench_queue [-n N] [-c C] [-s SIZE] "
			    "[-m fdatasync|range|syncfs|auto|all] [-d DIR] [-r ROUNDS] [-k K] [-N]\n");
			return 2;
		}
	}
	if (n == 0 || c == 0) {
		fprintf(stderr, "bench_queue: -n and -c must be positive\n");
		return 2;
	}
	log_set_level(LOG_WARNING);
	for (r = 0; r < rounds; r++) {           /* interleaved: the disk's mood changes */
		for (i = 0; i < RELAY_ARRAY_LEN(modes); i++) {
			if (strcmp(mode, "all") == 0 || strcmp(mode, modes[i].name) == 0) {
				bench_run(base, modes[i].name, modes[i].mode, n, c, size, keep, named);
				ran++;
			}
		}
	}
	if (ran == 0) {
		fprintf(stderr, "bench_queue: unknown mode %s\n", mode);
		return 2;
	}
	return 0;
}
