/*
 * fuzz_journal.c - fuzz target: the acceptance journal's replay through
 * relayd's start-up path.  Each input becomes the live batches of
 * queue_dir/journal (written by the journal's own writer, so that their
 * CRCs hold and replay looks inside), optionally with one byte damaged
 * afterwards (a torn or rotten batch, which replay must refuse whole); then
 * the queue is opened as the router opens it at start (queue_open():
 * journal_open, journal_replay, each record written back as msg/<qid>, the
 * tail moved) and scanned (queue_scan(): every replayed file loaded, a bad
 * one moved to corrupt/), and closed.  The journal file is put back to its
 * pristine state before each input, so every input starts from the same
 * queue.
 *
 * Input:  byte 0: flags; bit 0: damage, then 3 bytes: offset (u16 LE, from
 *         the first batch) and an XOR mask (made non-zero).
 *         Then records, each: a byte whose low 6 bits are the queue id's
 *         length and whose bit 7 starts a new batch, the queue id, the
 *         image's length (u16 LE), the image (a queue file, queue/QUEUE.md).
 * Seeds: tests/fuzz/corpus/journal/ (batches of queue files relayd wrote).
 */
#include "fuzz.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/util.h"
#include "queue/queue.h"
#include "queue/queue_journal.h"

static uv_loop_t fuzz_loop;
static char fuzz_qdir[512], fuzz_msgdir[600], fuzz_corruptdir[600], fuzz_jpath[600];
static char fuzz_pristine[JOURNAL_DATA];
static uint64_t fuzz_dirty_end = JOURNAL_DATA;      /* batches written up to here */

static void
fuzz_new_msg(void *arg, struct queue_msg *m)
{
	(void)arg;
	queue_msg_free(m);
}

static void
fuzz_closed(void *arg)
{
	*(int *)arg = 1;
}

static int
fuzz_open_dir(void)
{
	int fd = open(fuzz_qdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd == -1)
		abort();
	return fd;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct journal j;
	struct buf err = BUF_INIT;
	int dirfd, fd;

	(void)argc;
	(void)argv;
	log_set_level(LOG_CRIT);
	snprintf(fuzz_qdir, sizeof(fuzz_qdir), "%s/queue", fuzz_tmpdir());
	snprintf(fuzz_msgdir, sizeof(fuzz_msgdir), "%s/msg", fuzz_qdir);
	snprintf(fuzz_corruptdir, sizeof(fuzz_corruptdir), "%s/corrupt", fuzz_qdir);
	snprintf(fuzz_jpath, sizeof(fuzz_jpath), "%s/journal", fuzz_qdir);
	if (mkdir(fuzz_qdir, 0700) != 0 || uv_loop_init(&fuzz_loop) != 0)
		abort();
	/* a new journal, as the first start makes it; its superblocks kept */
	dirfd = fuzz_open_dir();
	if (journal_open(dirfd, &j, &err) != 0) {
		fprintf(stderr, "journal_open: %s\n", buf_cstr(&err));
		abort();
	}
	journal_close(&j);
	close(dirfd);
	buf_free(&err);
	if ((fd = open(fuzz_jpath, O_RDONLY | O_CLOEXEC)) == -1 ||
	    util_pread_full(fd, fuzz_pristine, sizeof(fuzz_pristine), 0) == -1)
		abort();
	close(fd);
	return 0;
}

/* Back to the journal of Initialize: its superblocks, no batches. */
static void
fuzz_journal_reset(void)
{
	static const char zero[JOURNAL_ALIGN];
	int fd = open(fuzz_jpath, O_RDWR | O_CLOEXEC);
	uint64_t off;

	if (fd == -1 || util_pwrite_full(fd, fuzz_pristine, sizeof(fuzz_pristine), 0) == -1)
		abort();
	for (off = JOURNAL_DATA; off < fuzz_dirty_end; off += sizeof(zero))
		if (util_pwrite_full(fd, zero, sizeof(zero), off) == -1)
			abort();
	close(fd);
	fuzz_dirty_end = JOURNAL_DATA;
}

/* Append the batch built in j; false when the journal refuses it. */
static bool
fuzz_append(struct journal *j)
{
	uint64_t end, seq;
	int e;

	if (j->nrec == 0)
		return true;
	if (journal_append(j, j->tail, j->tail_seq, 0, &end, &seq, &e) != 0)
		return false;
	if (end > fuzz_dirty_end)
		fuzz_dirty_end = end;
	return true;
}

/* Write the input's batches (a record cut short ends them). */
static void
fuzz_write_batches(const uint8_t *p, const uint8_t *end)
{
	struct journal j;
	struct buf err = BUF_INIT;
	char qid[64];
	size_t qlen, ilen;
	int dirfd = fuzz_open_dir();

	if (journal_open(dirfd, &j, &err) != 0) {
		fprintf(stderr, "journal_open: %s\n", buf_cstr(&err));
		abort();
	}
	buf_free(&err);
	close(dirfd);
	journal_batch_begin(&j);
	while (p < end) {
		qlen = *p & 0x3f;
		if ((*p & 0x80) != 0) {
			if (!fuzz_append(&j))
				break;
			journal_batch_begin(&j);
		}
		p++;
		if ((size_t)(end - p) < qlen + 2)
			break;
		memcpy(qid, p, qlen);
		qid[qlen] = '\0';
		p += qlen;
		ilen = (size_t)p[0] | (size_t)p[1] << 8;
		p += 2;
		if (ilen > (size_t)(end - p))
			ilen = (size_t)(end - p);
		journal_batch_add(&j, qid, p, ilen);
		p += ilen;
	}
	(void)fuzz_append(&j);
	journal_close(&j);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf err = BUF_INIT;
	const uint8_t *p = data, *end = data + size;
	struct queue *q;
	uint16_t off = 0;
	uint8_t mask = 0;
	bool damage;
	int closed = 0, fd;

	if (size < 1)
		return 0;
	damage = (*p++ & 1) != 0;
	if (damage) {
		if (end - p < 3)
			return 0;
		off = (uint16_t)(p[0] | p[1] << 8);
		mask = p[2] | 1;
		p += 3;
	}
	fuzz_journal_reset();
	fuzz_clear_dir(fuzz_msgdir);
	fuzz_clear_dir(fuzz_corruptdir);
	fuzz_write_batches(p, end);
	if (damage) {
		char c;

		if ((fd = open(fuzz_jpath, O_RDWR | O_CLOEXEC)) == -1 ||
		    util_pread_full(fd, &c, 1, JOURNAL_DATA + off) == -1)
			abort();
		c ^= (char)mask;
		if (util_pwrite_full(fd, &c, 1, JOURNAL_DATA + off) == -1)
			abort();
		close(fd);
		if (JOURNAL_DATA + (uint64_t)off + 1 > fuzz_dirty_end)
			fuzz_dirty_end = JOURNAL_DATA + (uint64_t)off + 1;
	}
	if (queue_open(&fuzz_loop, fuzz_qdir, &q, &err) == 0) {
		(void)queue_scan(q, fuzz_new_msg, NULL);
		queue_close(q, fuzz_closed, &closed);
		while (!closed)
			uv_run(&fuzz_loop, UV_RUN_ONCE);
	}
	buf_free(&err);
	return 0;
}
