/*
 * fuzz_queue_file.c - fuzz target: the queue-file loader through relayd's
 * start-up path.  Each input is written as queue_dir/msg/<qid> of an
 * otherwise empty queue directory (on tmpfs), then the queue is opened and
 * scanned exactly as the router does at start (queue_open(): lock, leftovers,
 * the journal; queue_scan(): the header, the envelope, the body offsets,
 * every state record replayed onto the message, a torn last record cut off,
 * a bad file moved to corrupt/), the history read as `relayctl queue show`
 * reads it, and the queue closed.
 *
 * Input: the bytes of one queue file (queue/QUEUE.md).  Seeds:
 * tests/fuzz/corpus/queue_file/ (files relayd wrote: fresh, with attempt,
 * delivery, failure, hold, DKIM records, DSN parameters, a torn record).
 */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "common/buf.h"
#include "common/log.h"
#include "queue/queue.h"

#define FUZZ_QID "01M94ZFASB0000WKRRC9"

static uv_loop_t fuzz_loop;
static char fuzz_qdir[512], fuzz_msgdir[600], fuzz_corruptdir[600], fuzz_path[700];

static void
fuzz_new_msg(void *arg, struct queue_msg *m)
{
	struct queue_msg **out = arg;

	*out = m;
}

static void
fuzz_rec(void *arg, const struct queue_record *rec)
{
	(void)arg;
	(void)rec;
}

static void
fuzz_closed(void *arg)
{
	*(int *)arg = 1;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_level(LOG_CRIT);        /* queue_corrupt and friends: expected here */
	snprintf(fuzz_qdir, sizeof(fuzz_qdir), "%s/queue", fuzz_tmpdir());
	snprintf(fuzz_msgdir, sizeof(fuzz_msgdir), "%s/msg", fuzz_qdir);
	snprintf(fuzz_corruptdir, sizeof(fuzz_corruptdir), "%s/corrupt", fuzz_qdir);
	snprintf(fuzz_path, sizeof(fuzz_path), "%s/" FUZZ_QID, fuzz_msgdir);
	if (mkdir(fuzz_qdir, 0700) != 0 || mkdir(fuzz_msgdir, 0700) != 0 ||
	    uv_loop_init(&fuzz_loop) != 0)
		abort();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf err = BUF_INIT;
	struct queue *q;
	struct queue_msg *m = NULL;
	int closed = 0;

	fuzz_clear_dir(fuzz_msgdir);
	fuzz_clear_dir(fuzz_corruptdir);
	fuzz_write_file(fuzz_path, data, size);
	if (queue_open(&fuzz_loop, fuzz_qdir, &q, &err) != 0) {
		fprintf(stderr, "queue_open: %s\n", buf_cstr(&err));
		abort();
	}
	buf_free(&err);
	(void)queue_scan(q, fuzz_new_msg, &m);
	if (m != NULL) {
		(void)queue_history(q, m->qid, fuzz_rec, NULL);
		queue_msg_free(m);
	}
	queue_close(q, fuzz_closed, &closed);
	while (!closed)
		uv_run(&fuzz_loop, UV_RUN_ONCE);
	return 0;
}
