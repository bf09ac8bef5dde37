/*
 * queue_commit.c - the queue's COMMIT PIPELINE: three threads that make new
 * messages durable in groups, and the loop side that hands work to them and
 * takes it back.  The journal thread writes a batch into the acceptance
 * journal and fdatasyncs it (the 250 goes out then); the writer thread
 * writes and names each message's msg/ file; the sync thread syncs,
 * publishes msg/<qid>, fsyncs msg/ and moves the journal's tail before the
 * router may see the message.  The writer also appends the records and
 * renames away the removed messages the loop issued, in issue order (the
 * loop makes no system call for either); a message's records issued right
 * before its removal are not written, and complete with the removal.
 * A fourth thread, the reaper, deletes the removed files the pool does not
 * keep, after the sync thread made their renames durable (queue_reap()).
 * The descriptor a kept file's recycling opened for its lease check waits
 * for the writer in q->kept (a slot per spare number modulo
 * QUEUE_KEPT_MAX), so that the file's next message is written without
 * another open (queue_kept_put()).
 * Also the start-up replay of the journal, and its restore without a
 * restart after a disk failure switched it off (a probe job, sent by a
 * back-off timer on the loop).
 * queue/QUEUE.md tells the whole story; queue.c owns the files,
 * transactions and records this works on.
 *
 * Threads: the loop thread runs the staging, hand-over and completion code
 * (queue_stage() to queue_async_cb()); queue_jnl_main(),
 * queue_writer_main() and queue_thread_main() touch only the jobs they took
 * from their input list (and the txn buffers those point at, untouched by
 * the loop meanwhile), the directory fds, the journal's side they own (the
 * sync thread the whole journal while it restores it: the journal is off),
 * and, under q->mtx, the lists, flags, counters and kept descriptors (the
 * loop's op counters, ops_total, ops_done and nops, are the loop's alone).
 * They never log or call back, and allocate only to read the journal back
 * in a restore.
 *
 * Must never: make the loop thread wait for a disk sync; acknowledge a
 * message before its journal batch or its msg/ file is durable; let a queue
 * id name appear in msg/ before its content is durable; hand the router a
 * message whose journal record is still live; call a callback from inside
 * the function that was given it (completions always come from the async
 * handle).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE              /* syncfs, sync_file_range, renameat2, O_TMPFILE, F_SETLEASE */
#endif

#include "queue/queue_int.h"
#include "common/log.h"
#include "common/util.h"

#include <sys/stat.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Move the first n jobs (or all, if fewer) of from to the fresh list to. */
static void
queue_list_take(struct queue_list *from, struct queue_list *to, unsigned n)
{
	struct queue_job **pp = &from->head;

	queue_list_init(to);
	while (*pp != NULL && n-- > 0)
		pp = &(*pp)->next;
	if (pp == &from->head)
		return;
	to->head = from->head;
	to->tail = pp;
	from->head = *pp;
	*pp = NULL;
	if (from->head == NULL)
		queue_list_init(from);
}

/*
 * The commit threads, a two-stage pipeline.  The writer takes everything
 * pending as one batch, writes and names the new files, and passes it on;
 * the sync thread takes the new files written so far, or the next records
 * and removals (queue_take_sync()), makes the data durable,
 * publishes new messages into msg/, makes the renames durable with one fsync
 * of msg/, and hands the jobs back to the loop.  While one batch waits for
 * the disk, the next is being written.
 */

static void
queue_job_fail(struct queue_job *j, const char *call, int e)
{
	if (j->err != 0)
		return;
	j->err = queue_errno_err(e);
	j->failed_call = call;
	j->sys_errno = e;
}

/* A job with a file to make durable: a new message's, or one a record was appended to. */
static bool
queue_job_file(const struct queue_job *j)
{
	return j->kind == QJOB_COMMIT || j->kind == QJOB_SYNC;
}



/* Rename msg/<iname> to msg/<qid> (one directory), never replacing an existing file. */
static int
queue_publish(struct queue *q, const char *iname, const char *qid)
{
	if (renameat2(q->msgfd, iname, q->msgfd, qid, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	/* the file system has no RENAME_NOREPLACE: link(2) never replaces either */
	if (linkat(q->msgfd, iname, q->msgfd, qid, 0) == -1)
		return -1;
	(void)unlinkat(q->msgfd, iname, 0);
	return 0;
}

/* The N of a removed file's name, msg/.spare-N; false for any other name. */
static bool
queue_spare_nr(const char *iname, uint64_t *nr)
{
	char *end;

	if (strncmp(iname, QNAME_SPARE, strlen(QNAME_SPARE)) != 0 ||
	    !isdigit((unsigned char)iname[strlen(QNAME_SPARE)]))
		return false;
	errno = 0;
	*nr = strtoull(iname + strlen(QNAME_SPARE), &end, 10);
	return *end == '\0' && errno == 0;
}

/*
 * The descriptors recycled files keep (QUEUE.md "Removing a message"): the
 * recycling (sync thread) opened the file for its lease check; instead of
 * closing it there and having the writer open it again by name when a new
 * message takes the file, it keeps the descriptor here, and the writer
 * takes it.  A slot per .spare-N number modulo QUEUE_KEPT_MAX: removals
 * number their files in turn, so the table holds the newest files (the pool
 * gives out the last one put back first), and a file's slot is taken over
 * by the one removed QUEUE_KEPT_MAX removals after it (its descriptor is
 * closed: the file is opened by name as before).  Under q->mtx; neither
 * call makes a system call (the caller closes what queue_kept_put() returns).
 */
static int
queue_kept_put(struct queue *q, const char *iname, int fd)
{
	struct queue_kept *k;
	uint64_t nr;
	int old;

	if (!queue_spare_nr(iname, &nr))
		return fd;
	k = &q->kept[nr % QUEUE_KEPT_MAX];
	uv_mutex_lock(&q->mtx);
	old = k->fd;
	k->nr = nr;
	k->fd = fd;
	uv_mutex_unlock(&q->mtx);
	return old;
}

/* The descriptor kept for msg/.spare-N (out of the table), or -1. */
static int
queue_kept_take(struct queue *q, const char *iname)
{
	struct queue_kept *k;
	uint64_t nr;
	int fd = -1;

	if (!queue_spare_nr(iname, &nr))
		return -1;
	k = &q->kept[nr % QUEUE_KEPT_MAX];
	uv_mutex_lock(&q->mtx);
	if (k->fd != -1 && k->nr == nr) {
		fd = k->fd;
		k->fd = -1;
	}
	uv_mutex_unlock(&q->mtx);
	return fd;
}

/*
 * The queue's own descriptors, held whatever its transactions: queue.lock,
 * msg/, corrupt/, the journal twice (its superblock writes have their own),
 * the scan's directory walk and the file it reads, the sync thread's open
 * of a removed file before its kept slot takes it.
 */
#define QUEUE_FD_FIXED 8

/*
 * Besides QUEUE_FD_FIXED: the kept descriptors, the records open until
 * their sync, the acknowledged messages waiting for their publish (each
 * holds its file), and the unnamed spare files of the pool (a refill of
 * QUEUE_SPARES starts only under QUEUE_SPARES_LOW).  A transaction's own
 * file is its owner's to count (a session's, a report's).
 */
uint64_t
queue_fd_need(void)
{
	return QUEUE_FD_FIXED + QUEUE_KEPT_MAX + QUEUE_OPS_OPEN_MAX + QUEUE_JNL_BACKLOG +
	    (QUEUE_SPARES_LOW - 1) + QUEUE_SPARES;
}

/*
 * A recycled file about to be deleted by name (an aborted or failed
 * transaction's, the pool's overflow, a switch to named files): its kept
 * descriptor, if any, is closed now, so that the deleted file's blocks are
 * not held until its slot is taken over.  Any thread, without q->mtx.
 */
void
queue_kept_close(struct queue *q, const char *iname)
{
	int fd = queue_kept_take(q, iname);

	if (fd >= 0)
		close(fd);
}

/*
 * Get a commit's file ready for the sync: create it if it had no spare,
 * write it if the loop left that to us, cut a recycled file to the new
 * length, and give an unnamed file its .in-<qid> name now, so that the sync
 * also makes its link count durable (an fsync of msg/ does not write it).
 */
static void
queue_prepare_file(struct queue *q, struct queue_job *j, struct queue_counters *c)
{
	struct queue_txn *t = j->txn;
	ssize_t n;
	size_t off;
	int kfd;

	if (j->iname[0] != '\0' && (kfd = queue_kept_take(q, j->iname)) >= 0) {
		/* a recycled spare whose recycling kept its descriptor */
		if (j->fd == -1) {
			j->fd = kfd;
			c->kept_reused++;
		} else
			close(kfd);          /* the loop opened it (a large message) */
	}
	if (j->fd == -1 && j->iname[0] != '\0') {
		/* a recycled spare, taken by name */
		if ((j->fd = openat(q->msgfd, j->iname, O_RDWR | O_CLOEXEC)) == -1) {
			queue_job_fail(j, "open(msg/.spare)", errno);
			return;
		}
	} else if (j->fd == -1) {
		c->created_late++;
		if ((j->fd = queue_file_create(q, j->qid, j->iname)) == -1) {
			queue_job_fail(j, "create(msg/)", errno);
			return;
		}
	}
	for (off = 0; j->write_wbuf && off < t->wbuf.len; off += (size_t)n) {
		n = pwrite(j->fd, t->wbuf.data + off, t->wbuf.len - off, (off_t)off);
		if (n == -1 && errno == EINTR) {
			n = 0;
			continue;
		}
		if (n <= 0) {
			queue_job_fail(j, "write", n == 0 ? EIO : errno);
			return;
		}
	}
	if (j->size > j->len && ftruncate(j->fd, (off_t)j->len) == -1) {
		queue_job_fail(j, "ftruncate", errno);
		return;
	}
	if (j->iname[0] == '\0') {
		snprintf(j->iname, sizeof(j->iname), QNAME_IN "%s", j->qid);
		if (queue_link(q, j->fd, j->iname) == -1) {
			queue_job_fail(j, "link(msg/)", errno);
			j->iname[0] = '\0';
		}
	}
}

/*
 * True if nobody else has the file open: a write lease is granted only
 * then.  A delivery may still be reading a message the administrator
 * deleted; its file must not be reused under it.  The lease is dropped at
 * once (and its break signal, were anybody to open the spare name meanwhile,
 * is SIGURG, ignored by default, not SIGIO, which would end the process).
 */
static bool
queue_file_unshared(int fd)
{
	if (fcntl(fd, F_SETSIG, SIGURG) == -1 || fcntl(fd, F_SETLEASE, F_WRLCK) == -1)
		return false;
	(void)fcntl(fd, F_SETLEASE, F_UNLCK);
	return true;
}

/* Delete a removed file (msg/.spare-N), on the sync thread or the reaper.
 * ENOENT: gone already; any other failure leaves its blocks in use until
 * the next start deletes it, and is logged (queue_error op=unlink). */
static void
queue_unlink_removed(struct queue *q, const char *iname)
{
	if (unlinkat(q->msgfd, iname, 0) == -1 && errno != ENOENT)
		queue_log_errno(iname, "unlink", errno);
}

/*
 * A removed file the pool does not keep (msg/.spare-N; its rename durable
 * when the removal carried records, QUEUE.md "Removing a message"):
 * to the reaper thread, which deletes it while this thread goes on with the
 * next batch; here, at once, when the reaper's ring is full.  The unlink is
 * no part of the removal's durability (the rename away from the message's id
 * is; a start-up deletes or adopts any .spare-N left), and it is the costly
 * step: it frees the inode and its blocks (with a discard on this VM's file
 * system), 0.1-0.2 ms, where the fsync(msg/) for a whole group is 0.5 ms.
 */
static bool
queue_reap(struct queue *q, const char *iname)
{
	uint64_t nr;
	bool queued = false;

	if (queue_spare_nr(iname, &nr)) {
		uv_mutex_lock(&q->mtx);
		if (q->reap_n < QUEUE_REAP_MAX) {
			q->reap[(q->reap_head + q->reap_n++) % QUEUE_REAP_MAX] = nr;
			queued = true;
			if (q->reap_n == 1)
				uv_cond_signal(&q->reap_cond);
		}
		uv_mutex_unlock(&q->mtx);
	}
	if (!queued)
		queue_unlink_removed(q, iname);
	return queued;
}

/*
 * The reaper thread: deletes the removed files queue_reap() gave it, up to
 * QUEUE_REAP_TAKE per turn of the lock, and exits once the sync thread has
 * and its ring is empty.  It touches only msg/ (by name: .spare-N, a name
 * nothing else uses once given to it) and, under q->mtx, its ring and
 * q->reaped; it wakes the loop when its ring is empty (the loop stays alive
 * until then: queue_update_ref()).
 */
void
queue_reaper_main(void *arg)
{
	struct queue *q = arg;
	uint64_t take[QUEUE_REAP_TAKE];
	char name[QNAME_MAX];
	size_t i, n;

	uv_mutex_lock(&q->mtx);
	for (;;) {
		while (q->reap_n == 0 && !q->exited)
			uv_cond_wait(&q->reap_cond, &q->mtx);
#ifdef RELAY_TEST_HOOKS
		while (q->test_reap_hold && !q->exited)
			uv_cond_wait(&q->reap_cond, &q->mtx);
#endif
		if (q->reap_n == 0)
			break;
		for (n = 0; n < QUEUE_REAP_TAKE && q->reap_n > 0; n++) {
			take[n] = q->reap[q->reap_head];
			q->reap_head = (q->reap_head + 1) % QUEUE_REAP_MAX;
			q->reap_n--;
		}
		uv_mutex_unlock(&q->mtx);
		for (i = 0; i < n; i++) {
			snprintf(name, sizeof(name), QNAME_SPARE "%llu", (unsigned long long)take[i]);
			queue_unlink_removed(q, name);
		}
		uv_mutex_lock(&q->mtx);
		q->reaped += n;
		if (q->reap_n == 0)
			uv_async_send(&q->async);
	}
	q->reaper_exited = true;
	uv_mutex_unlock(&q->mtx);
	uv_async_send(&q->async);
}

/*
 * A removed message, now msg/.spare-N (durable: the batch's fsync of msg/
 * is behind us): keep it as a spare file if the pool has room and nobody
 * has it open, else delete it.
 */
static void
queue_recycle_file(struct queue *q, struct queue_job *j, struct queue_counters *c)
{
	struct stat st;
	int fd = -1;

	if (j->iname[0] == '\0')
		return;                      /* the writer deleted it, or it was gone */
	if (j->keep && j->err == 0 &&
	    (fd = openat(q->msgfd, j->iname, O_RDWR | O_CLOEXEC)) >= 0 &&
	    queue_file_unshared(fd) && fstat(fd, &st) == 0) {
		/* Only the queue opens .spare-N names: nobody can open it now.
		 * Its descriptor is kept for the writer (in its number's slot
		 * of QUEUE_KEPT_MAX; the pool holds thousands): the one it
		 * takes the slot of is closed. */
		if ((fd = queue_kept_put(q, j->iname, fd)) >= 0)
			close(fd);
		j->recycled = true;
		j->size = (uint64_t)st.st_size;
		c->recycled++;
		return;
	}
	if (fd >= 0)
		close(fd);
	j->reaping = queue_reap(q, j->iname);
	c->unlinked++;
}

/*
 * A record (the writer thread): append its line to msg/<qid> with one
 * write(2) (O_APPEND), and hand the descriptor on to the sync thread.  A
 * failed write never leaves a torn record that the next append would run
 * into: what it wrote is cut off (this thread is the only writer).
 */
static void
queue_append_record(struct queue *q, struct queue_job *j)
{
	struct stat st;
	size_t off;
	ssize_t n;
	int e;

	if ((j->fd = openat(q->msgfd, j->qid, O_WRONLY | O_APPEND | O_CLOEXEC)) == -1) {
		e = errno;
		queue_job_fail(j, "open", e);
		if (e == ENOENT)
			j->err = RELAY_ENOENT;
		return;
	}
	for (off = 0; off < j->line_len; off += (size_t)n) {
		if ((n = write(j->fd, j->line + off, j->line_len - off)) == -1 && errno == EINTR) {
			n = 0;
			continue;
		}
		if (n > 0)
			continue;
		e = n == 0 ? EIO : errno;
		if (off > 0 && (fstat(j->fd, &st) == -1 ||
		    ftruncate(j->fd, st.st_size - (off_t)off) == -1))
			e = errno;           /* the torn line stays: the next start cuts it */
		queue_job_fail(j, "append", e);
		j->err = RELAY_EIO;
		close(j->fd);
		j->fd = -1;
		return;
	}
}

/*
 * A removal (the writer thread), after the records issued before it:
 * msg/<qid> becomes msg/.spare-N; where RENAME_NOREPLACE does not work (or
 * the name is taken) it is deleted at once, as the loop did.
 */
static void
queue_remove_file(struct queue *q, struct queue_job *j)
{
	int e;

	if (renameat2(q->msgfd, j->qid, q->msgfd, j->iname, RENAME_NOREPLACE) == 0) {
		j->renamed = true;
		return;
	}
	e = errno;
	j->iname[0] = '\0';                 /* nothing to keep or delete after the sync */
	if (e != ENOENT) {
		if (unlinkat(q->msgfd, j->qid, 0) == 0)
			return;
		e = errno;
	}
	j->err = e == ENOENT ? RELAY_ENOENT : RELAY_EIO;
	j->failed_call = "remove";
	j->sys_errno = e;
}

/*
 * Each record holds a descriptor from the writer's open to the sync
 * thread's close.  A million deferrals at once (every destination down)
 * would hold a million; the writer takes records while fewer than
 * QUEUE_OPS_OPEN_MAX are open, and waits for the sync thread to close some
 * (it signals write_cond).  Removals hold none and follow in order.
 */
static bool
queue_ops_ready(const struct queue *q)
{
	return q->ops.head != NULL && q->ops_open < QUEUE_OPS_OPEN_MAX;
}

/*
 * Under q->mtx: move the next ops, up to the records there is room for, into
 * ops.  A removal takes with it the records of its message issued just
 * before it (taken in the same go): they are not written, and complete when
 * the removal is durable (QUEUE.md, "A record followed by its removal").  A
 * delivered message's D record is one: its file is renamed away right after.
 */
static void
queue_take_ops(struct queue *q, struct queue_list *ops)
{
	struct queue_job *j, *r, **run = NULL;   /* run: where ops' last records of one qid begin */

	while ((j = q->ops.head) != NULL &&
	    (j->kind != QJOB_SYNC || q->ops_open < QUEUE_OPS_OPEN_MAX)) {
		if ((q->ops.head = j->next) == NULL)
			q->ops.tail = &q->ops.head;
		if (j->kind == QJOB_RECYCLE && !j->renamed && run != NULL &&
		    strcmp((*run)->qid, j->qid) == 0) {
			j->recs = *run;
			*run = NULL;
			ops->tail = run;
			for (r = j->recs; r != NULL; r = r->next) {
				r->open_counted = false;
				q->ops_open--;
			}
		}
		if (j->kind == QJOB_SYNC) {
			j->open_counted = true;
			q->ops_open++;
			if (run == NULL || strcmp((*run)->qid, j->qid) != 0)
				run = ops->tail;
		} else
			run = NULL;
		queue_list_append(ops, j);
	}
}

/*
 * A removal that took records with it (queue_take_ops()) failed: they are
 * written after all, back in their place before it (the file is as it was:
 * the rename did not happen), and go on as any record.  One whose message's
 * file is gone fails as it would have (ENOENT at its open).  Returns how
 * many now hold a descriptor (for q->ops_open).
 */
static size_t
queue_write_recs(struct queue *q, struct queue_job **pp, struct queue_job *rm)
{
	struct queue_job *r, *last = NULL;
	size_t n = 0;

	*pp = rm->recs;
	for (r = rm->recs; r != NULL; r = r->next) {
		queue_append_record(q, r);
		r->open_counted = true;
		last = r;
		n++;
	}
	last->next = rm;
	rm->recs = NULL;
	return n;
}

/*
 * Stage one for file ops (the writer thread): records and removals, in issue
 * order.  Returns how many records a failed removal gave back (each now
 * holds a descriptor).
 */
static size_t
queue_write_ops(struct queue *q, struct queue_list *ops)
{
	struct queue_job *j, **pp;
	size_t reopened = 0;

#ifdef RELAY_TEST_HOOKS
	/* RELAYD_TEST_RECORD_DELAY_MS: records reach the file late (not the journal);
	 * records a removal took with it too: the removal is as late */
	for (j = ops->head; j != NULL && q->test_record_delay_ms > 0; j = j->next)
		if (j->kind == QJOB_SYNC || j->recs != NULL) {
			usleep(q->test_record_delay_ms * 1000u);
			break;
		}
#endif
	for (pp = &ops->head; (j = *pp) != NULL; pp = &j->next) {
		if (j->kind == QJOB_SYNC)
			queue_append_record(q, j);
		else if (j->kind == QJOB_RECYCLE && !j->renamed) {
			queue_remove_file(q, j);
			if (j->recs != NULL && j->err != 0)
				reopened += queue_write_recs(q, pp, j);
		}
	}
	return reopened;
}

/* Stage one (the writer thread): every new message's file, ready to sync. */
static void
queue_write_batch(struct queue *q, struct queue_list *batch, struct queue_counters *c)
{
	struct queue_job *j;
	uint64_t t0 = uv_hrtime();

	for (j = batch->head; j != NULL; j = j->next)
		if (j->kind == QJOB_COMMIT && j->err == 0)
			queue_prepare_file(q, j, c);
	c->create_ns += uv_hrtime() - t0;
}

/* Stage two (the sync thread): one group sync, the renames, the recycling. */
static void
queue_sync_batch(struct queue *q, struct queue_list *batch, enum queue_sync_mode mode,
    struct queue_counters *c)
{
	struct queue_job *j;
	uint64_t t0 = uv_hrtime(), t1;
	int e, n = 0, renamed = 0, kept = 0;

#ifdef RELAY_TEST_HOOKS
	if (q->test_publish_delay_ms > 0)
		usleep(q->test_publish_delay_ms * 1000u);   /* RELAYD_TEST_PUBLISH_DELAY_MS */
	if (q->test_sync_delay_ms > 0)
		usleep(q->test_sync_delay_ms * 1000u);      /* RELAYD_TEST_SYNC_DELAY_MS */
#endif

	/* the files to make durable: new messages and appended records */
	for (j = batch->head; j != NULL; j = j->next)
		if (queue_job_file(j) && j->err == 0)
			n++;
	if (mode == QUEUE_SYNC_AUTO)
		/* syncfs() costs the same for 1 file or 100 (and writes others' dirt) */
		mode = n <= QUEUE_AUTO_SMALL ? QUEUE_SYNC_RANGE : QUEUE_SYNC_SYNCFS;
	switch (n > 0 ? mode : QUEUE_SYNC_DEFAULT) {
	case QUEUE_SYNC_DEFAULT:
		break;
	case QUEUE_SYNC_RANGE:
		for (j = batch->head; j != NULL; j = j->next)
			if (queue_job_file(j) && j->err == 0)
				(void)sync_file_range(j->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
		/* FALLTHROUGH */
	case QUEUE_SYNC_FDATASYNC:
		for (j = batch->head; j != NULL; j = j->next)
			if (queue_job_file(j) && j->err == 0 && fdatasync(j->fd) == -1)
				queue_job_fail(j, "fdatasync", errno);
		break;
	case QUEUE_SYNC_SYNCFS:
		if (syncfs(q->msgfd) == -1) {
			e = errno;
			for (j = batch->head; j != NULL; j = j->next)
				if (queue_job_file(j))
					queue_job_fail(j, "syncfs", e);
			break;
		}
		/*
		 * syncfs() reports a writeback error once, to whichever batch
		 * asks first.  Each file's own error (its fd samples it at open)
		 * is checked here: waiting on clean pages costs no I/O.
		 */
		for (j = batch->head; j != NULL; j = j->next)
			if (queue_job_file(j) && j->fd >= 0 &&
			    sync_file_range(j->fd, 0, 0, SYNC_FILE_RANGE_WAIT_AFTER) == -1)
				queue_job_fail(j, "sync_file_range", errno);
		break;
	default:
		fatalx("%s: bad sync mode %d", __func__, (int)mode);
	}
	t1 = uv_hrtime();
	c->sync_ns += t1 - t0;

	for (j = batch->head; j != NULL; j = j->next) {
		if (j->kind == QJOB_RECYCLE) {
			/* with records it took: they are done only once its rename
			 * (or unlink) is durable, kept or not */
			kept += j->keep || (j->recs != NULL && j->err == 0);
			continue;
		}
		if (j->fd >= 0)
			close(j->fd);
		j->fd = -1;
		if (j->kind != QJOB_COMMIT || j->err != 0)
			continue;
		if (queue_publish(q, j->iname, j->qid) == -1)
			queue_job_fail(j, "rename", errno);
		else {
			renamed++;
			j->published = true;
		}
	}
	/* the renames to msg/<qid>, and the loop's renames of removed files to .spare-N */
	if ((renamed > 0 || kept > 0) && fsync(q->msgfd) == -1) {
		e = errno;
		for (j = batch->head; j != NULL; j = j->next) {
			if (j->published) {
				queue_job_fail(j, "fsync(msg/)", e);
				(void)unlinkat(q->msgfd, j->qid, 0);
			} else if (j->kind == QJOB_RECYCLE)
				queue_job_fail(j, "fsync(msg/)", e);    /* not kept */
		}
	}
	for (j = batch->head; j != NULL; j = j->next)
		if (j->kind == QJOB_RECYCLE)
			queue_recycle_file(q, j, c);
	c->publish_ns += uv_hrtime() - t1;
}

/*
 * The journal thread's journal_append().  In a RELAY_TEST_HOOKS build, the
 * one queue_test_fail_journal() asked to fail goes to /dev/null (whose
 * fdatasync says EINVAL) instead of the journal: the real failure path.
 * Only this thread uses jnl.fd while the journal is on.
 */
static int
queue_journal_append(struct queue *q, uint64_t tail, uint64_t tail_seq, uint64_t *end,
    uint64_t *seq, int *sys_errno)
{
#ifdef RELAY_TEST_HOOKS
	int real = q->jnl.fd, rc;
	bool fail;

	uv_mutex_lock(&q->mtx);
	fail = q->test_jnl_fail;
	q->test_jnl_fail = false;
	uv_mutex_unlock(&q->mtx);
	if (fail) {
		q->jnl.fd = open("/dev/null", O_WRONLY | O_CLOEXEC);    /* -1: EBADF, as good */
		rc = journal_append(&q->jnl, tail, tail_seq, 0, end, seq, sys_errno);
		if (q->jnl.fd >= 0)
			close(q->jnl.fd);
		q->jnl.fd = real;
		return rc;
	}
#endif
	return journal_append(&q->jnl, tail, tail_seq, q->test_sync_delay_ms, end, seq, sys_errno);
}

/*
 * Stage zero (the journal thread): the new messages whose whole file is in
 * memory go into one journal batch, one write and one fdatasync; they are
 * acknowledged as soon as that returns.  Messages that do not fit (too
 * large, journal full) are acknowledged after their publish, as before.
 */
static int
queue_journal_batch(struct queue *q, struct queue_list *batch, uint64_t tail,
    uint64_t tail_seq, struct queue_counters *c, int *sys_errno)
{
	struct queue_job *j;
	uint64_t t0 = uv_hrtime(), end, seq;
	size_t n = 0;
	int rc;

	journal_batch_begin(&q->jnl);
	for (j = batch->head; j != NULL; j = j->next) {
		if (j->kind != QJOB_COMMIT || j->err != 0 || !j->write_wbuf ||
		    journal_batch_bytes(&q->jnl) + j->txn->wbuf.len > QUEUE_JNL_BATCH)
			continue;
		journal_batch_add(&q->jnl, j->qid, j->txn->wbuf.data, j->txn->wbuf.len);
		j->in_jnl = true;
		n++;
	}
	if (n == 0)
		return 0;
	rc = queue_journal_append(q, tail, tail_seq, &end, &seq, sys_errno);
	for (j = batch->head; j != NULL; j = j->next) {
		if (!j->in_jnl)
			continue;
		j->in_jnl = false;
		if (rc == 0) {
			j->acked = true;
			j->jend = end;
			j->jseq = seq;
		}
	}
	if (rc == 0)
		c->journaled += n;
	else if (rc == RELAY_ETEMP)
		c->journal_full += n;
	else
		c->journal_errors++;
	c->journal_ns += uv_hrtime() - t0;
	return rc;
}

void
queue_jnl_main(void *arg)
{
	struct queue *q = arg;
	struct queue_list batch;
	struct queue_job *j;
	struct queue_counters c;
	uint64_t tail, tail_seq;
	bool wake, jnl_on;
	int rc, e;

	uv_mutex_lock(&q->mtx);
	for (;;) {
		/* Memory stays bounded: when publishing lags, acknowledgements wait. */
		while ((q->pending.head == NULL || q->jbacklog >= QUEUE_JNL_BACKLOG) && !q->stop)
			uv_cond_wait(&q->cond, &q->mtx);
		if (q->pending.head == NULL)
			break;
		/*
		 * No more than the backlog has room for: each acknowledged
		 * job holds its file's descriptor until its publish, and
		 * relayd counts QUEUE_JNL_BACKLOG of them (daemon/DESCRIPTORS.md).
		 * Taking the whole list once let 511 + every commit pending
		 * be acknowledged.  At a stop, all that is left.
		 */
		queue_list_take(&q->pending, &batch,
		    q->stop ? UINT_MAX : (unsigned)(QUEUE_JNL_BACKLOG - q->jbacklog));
		tail = q->jtail;
		tail_seq = q->jtail_seq;
		jnl_on = q->jnl_on;
		uv_mutex_unlock(&q->mtx);

		memset(&c, 0, sizeof(c));
		rc = e = 0;
		if (jnl_on)
			rc = queue_journal_batch(q, &batch, tail, tail_seq, &c, &e);

		uv_mutex_lock(&q->mtx);
		/*
		 * The loop is woken for acknowledgements, and when this thread
		 * turned the journal off: it logs that and starts the probe's
		 * back-off now, not when a job of this batch (nobody in it got
		 * a 250) comes back after its publish, or never on a disk that
		 * hangs.  Nothing else here is news to the loop.
		 */
		wake = false;
		if (rc == RELAY_EIO && q->jnl_on) {
			/* no more batches until a probe has restored it (QUEUE.md) */
			q->jnl_on = false;
			q->joff_call = "journal append";
			q->joff_errno = e;
			wake = true;
		}
		q->counters.journaled += c.journaled;
		q->counters.journal_full += c.journal_full;
		q->counters.journal_errors += c.journal_errors;
		q->counters.journal_ns += c.journal_ns;
		q->jhead = q->jnl.head;
		for (j = batch.head; j != NULL; j = j->next)
			if (j->acked) {
				j->ack_next = q->acked;
				q->acked = j;
				q->jbacklog++;
				wake = true;
			}
		queue_list_concat(&q->journaled, &batch);
		uv_cond_signal(&q->write_cond);
		if (wake)
			uv_async_send(&q->async);
	}
	q->jnl_exited = true;
	uv_cond_signal(&q->write_cond);
	uv_mutex_unlock(&q->mtx);
}

/*
 * The writer thread: takes what the journal thread passed on, writes and
 * names the files, and the records and removals the loop issued since
 * (appended and renamed in issue order), and passes it all on to the sync
 * thread.  While that
 * one waits for the disk, this one prepares the next batch: the stages
 * overlap.
 */
void
queue_writer_main(void *arg)
{
	struct queue *q = arg;
	struct queue_list batch, ops;
	struct queue_counters c;
	size_t reopened;

	uv_mutex_lock(&q->mtx);
	for (;;) {
		while (q->journaled.head == NULL && !queue_ops_ready(q) &&
		    !(q->jnl_exited && q->ops.head == NULL))
			uv_cond_wait(&q->write_cond, &q->mtx);
		if (q->journaled.head == NULL && q->ops.head == NULL)
			break;
		queue_list_init(&ops);
		if (queue_ops_ready(q))
			queue_take_ops(q, &ops);
		batch = q->journaled;
		queue_list_init(&q->journaled);
		uv_mutex_unlock(&q->mtx);

		memset(&c, 0, sizeof(c));
		reopened = queue_write_ops(q, &ops);
		queue_write_batch(q, &batch, &c);

		uv_mutex_lock(&q->mtx);
		q->ops_open += reopened;
		q->counters.create_ns += c.create_ns;
		q->counters.created_late += c.created_late;
		q->counters.kept_reused += c.kept_reused;
		queue_list_concat(&q->written, &ops);
		queue_list_concat(&q->written, &batch);
		uv_cond_signal(&q->sync_cond);
	}
	q->writer_exited = true;
	uv_cond_signal(&q->sync_cond);
	uv_mutex_unlock(&q->mtx);
}

/*
 * The commit stream: new messages, and the journal's probe, which must come
 * after every message acknowledged from the journal before it (QUEUE.md,
 * "Restore, no restart"): it restores their journal batches into msg/.
 */
static bool
queue_job_in_commits(const struct queue_job *j)
{
	return j->kind == QJOB_COMMIT || j->kind == QJOB_PROBE;
}

/*
 * Under q->mtx, the sync thread: the next group sync from q->written.  New
 * messages go in groups of their own, ahead of the records and removals
 * written before them: a message's publish (the router gets it then) must
 * not wait for the sync of hundreds of delivery records (a backlog's
 * release: 100-250 ms per group of 100-250 records) that have nothing to
 * do with it.  Records and removals follow in issue order; while new
 * messages flow (one came within QUEUE_SYNC_FLOW_NS), at most
 * QUEUE_SYNC_OPS_MAX per group, so that a new message never waits behind a
 * long group either, and all of them otherwise (a group sync costs a few ms
 * however small: a mass deferral of 300,000 records took twice as long in
 * groups of 32).  The two kinds take turns (*commits_last) while both wait,
 * so that neither starves.  *commits_ns: when the last new message was taken.
 * The journal's probe travels with the new messages.
 */
static void
queue_take_sync(struct queue *q, struct queue_list *batch, bool *commits_last,
    uint64_t *commits_ns)
{
	struct queue_list rest;
	struct queue_job *j, *next;
	bool commits = false, ops = false;
	unsigned nops = 0, max = UINT_MAX;
	uint64_t now = uv_hrtime();

	for (j = q->written.head; j != NULL && !(commits && ops); j = j->next) {
		if (queue_job_in_commits(j))
			commits = true;
		else
			ops = true;
	}
	commits = commits && !(ops && *commits_last);
	*commits_last = commits;
	if (commits)
		*commits_ns = now;
	else if (*commits_ns != 0 && now - *commits_ns < QUEUE_SYNC_FLOW_NS)
		max = QUEUE_SYNC_OPS_MAX;
	queue_list_init(batch);
	queue_list_init(&rest);
	for (j = q->written.head; j != NULL; j = next) {
		next = j->next;
		if (commits ? queue_job_in_commits(j) : !queue_job_in_commits(j) && nops++ < max)
			queue_list_append(batch, j);
		else
			queue_list_append(&rest, j);
	}
	q->written = rest;
	if (rest.head == NULL)
		queue_list_init(&q->written);
}

/*
 * After a publish: the journal records of the messages now durable in msg/
 * are no longer needed; the tail moves past them, durably, before the
 * router may see (and deliver, and remove) those messages, so that a replay
 * never brings back a message that is gone.  A journaled message that failed
 * to publish keeps the tail where it is, for good: the next start replays it.
 */
static void
queue_advance_tail(struct queue *q, struct queue_list *batch, struct queue_counters *c)
{
	struct queue_job *j;
	uint64_t fail_seq = UINT64_MAX, end = 0, next = 0;
	const char *call = NULL;
	int e = 0;

	for (j = batch->head; j != NULL; j = j->next) {
		if (!j->acked || j->err == 0)
			continue;
		/* its 250 has gone out: the journal keeps it, its file goes now */
		c->journal_errors++;
		if (call == NULL) {
			call = j->failed_call;
			e = j->sys_errno;
		}
		if (j->iname[0] != '\0') {
			queue_kept_close(q, j->iname);
			(void)unlinkat(q->msgfd, j->iname, 0);
		}
		j->iname[0] = '\0';
	}
	if (!q->jstuck) {
		for (j = batch->head; j != NULL; j = j->next)
			if (j->acked && (j->err != 0 || !j->published) && j->jseq < fail_seq)
				fail_seq = j->jseq;
		for (j = batch->head; j != NULL; j = j->next)
			if (j->acked && j->err == 0 && j->published && j->jseq < fail_seq &&
			    j->jseq + 1 > next) {
				next = j->jseq + 1;
				end = j->jend;
			}
		if (next != 0 && journal_set_tail(&q->jnl, end, next) == -1) {
			c->journal_errors++;
			call = "journal tail";
			e = errno;
			fail_seq = 0;            /* none of them is past the tail */
		} else if (next != 0) {
			uv_mutex_lock(&q->mtx);
			q->jtail = end;
			q->jtail_seq = next;
			uv_mutex_unlock(&q->mtx);
		}
		if (fail_seq != UINT64_MAX) {
			/*
			 * The disk takes no more files (ENOSPC, EIO), or the
			 * tail cannot move: acknowledging from the journal would
			 * accept mail that cannot be queued.  From now on commits
			 * are acknowledged after their publish, so they fail (452
			 * on a full disk, else 451) while the disk does.  The tail
			 * stays where it is until a probe restores the journal
			 * (queue_journal_probe()), or the next start replays
			 * from there.
			 */
			q->jstuck = true;
			uv_mutex_lock(&q->mtx);
			if (q->jnl_on) {
				q->jnl_on = false;
				q->joff_call = call != NULL ? call : "publish";
				q->joff_errno = e;
			}
			/* counted with the switch, so that the loop's log has them */
			q->counters.journal_errors += c->journal_errors;
			c->journal_errors = 0;
			uv_mutex_unlock(&q->mtx);
		}
	} else
		fail_seq = 0;
	/*
	 * What the journal still holds must not reach the router: delivered,
	 * removed or changed, it would come back as new at the replay.  It waits
	 * in msg/ for the journal's restore or the next start (either writes
	 * the same bytes again).
	 */
	for (j = batch->head; j != NULL; j = j->next)
		if (j->acked && j->err == 0 && j->published && j->jseq >= fail_seq)
			j->withheld = true;
}

/*
 * The journal's restore (the sync thread, for a QJOB_PROBE the loop sends
 * while the journal is off, with back-off).  The probe passed through the
 * journal thread after the journal went off, so no append is in progress,
 * and through this thread after every message acknowledged from the
 * journal: each is published (withheld) or failed, and the loop holds it.
 */

struct queue_restore {
	struct queue *q;
	struct queue_job *probe;
};

static int queue_replay_write(struct queue *q, const char *qid, const char *image, size_t len);
static bool queue_replay_valid(const char *qid, const char *image, size_t len);

static int
queue_restore_one(void *arg, const char *qid, const char *image, size_t len)
{
	struct queue_restore *r = arg;

	if (!queue_replay_valid(qid, image, len))
		return 0;                    /* as at start-up (which logs it) */
	if (queue_replay_write(r->q, qid, image, len) == -1) {
		queue_job_fail(r->probe, "restore(msg/)", errno);
		return RELAY_EIO;
	}
	r->probe->len++;
	return 0;
}

/* Does the disk take a file again?  QUEUE_PROBE_BYTES written and synced. */
static int
queue_probe_disk(struct queue *q, struct queue_job *j)
{
	static const char zero[4096];
	char iname[QNAME_MAX];
	uint64_t off;
	int fd, rc = 0;

	if (q->named)
		(void)unlinkat(q->msgfd, QNAME_IN "probe", 0);
	if ((fd = queue_file_create(q, "probe", iname)) == -1) {
		queue_job_fail(j, "probe(create)", errno);
		return -1;
	}
	for (off = 0; off < QUEUE_PROBE_BYTES && rc == 0; off += sizeof(zero))
		if (util_pwrite_full(fd, zero, sizeof(zero), off) == -1) {
			queue_job_fail(j, "probe(write)", errno);
			rc = -1;
		}
	if (rc == 0 && fdatasync(fd) == -1) {
		queue_job_fail(j, "probe(fdatasync)", errno);
		rc = -1;
	}
	close(fd);                           /* an unnamed file is gone with it */
	if (iname[0] != '\0')
		(void)unlinkat(q->msgfd, iname, 0);
	return rc;
}

/*
 * While the journal is off: once the disk takes a file again, write what
 * the journal holds (every message acknowledged from it and not yet handed
 * to the router) into msg/ as a start-up replay does, make that durable,
 * move the tail past it and turn the journal on again.  j->published says
 * it worked; the loop then hands the held messages to the router.
 */
static void
queue_journal_probe(struct queue *q, struct queue_job *j)
{
	struct queue_restore r = { q, j };
	uint64_t head, seq;
	bool on;
	int rc;

	uv_mutex_lock(&q->mtx);
	on = q->jnl_on;
	uv_mutex_unlock(&q->mtx);
	if (on) {
		j->published = true;         /* nothing to restore */
		return;
	}
	if (queue_probe_disk(q, j) == -1)
		return;
	if ((rc = journal_restore(&q->jnl, queue_restore_one, &r, &head, &seq)) != 0) {
		queue_job_fail(j, "restore(journal)", errno);   /* unless fn said more */
		return;
	}
	if (j->len > 0 && fsync(q->msgfd) == -1) {
		queue_job_fail(j, "restore(fsync msg/)", errno);
		return;
	}
#ifdef RELAY_TEST_HOOKS
	/* RELAYD_TEST_PUBLISH_DELAY_MS: the restored files are in msg/, the tail not yet past them */
	if (q->test_publish_delay_ms > 0)
		usleep(q->test_publish_delay_ms * 1000u);
#endif
	if (journal_reopen(&q->jnl, head, seq) == -1) {
		queue_job_fail(j, "restore(journal tail)", errno);
		return;
	}
	q->jstuck = false;
	uv_mutex_lock(&q->mtx);
	q->jtail = q->jhead = head;
	q->jtail_seq = seq;
	q->jnl_on = true;
	q->jerrors_restored = q->counters.journal_errors;  /* an append may fail before the loop hears */
	uv_mutex_unlock(&q->mtx);
	j->published = true;
}

#ifdef RELAY_TEST_HOOKS
/* Under q->mtx, the sync thread: the test's fn, if any, without the lock
 * (queue_test_set_sync_fn()); batch: the group taken, or NULL. */
static void
queue_test_sync_point(struct queue *q, int phase, const struct queue_list *batch)
{
	queue_test_sync_fn *fn = q->test_sync_fn;
	void *arg = q->test_sync_arg;
	const struct queue_job *j;
	unsigned commits = 0, probes = 0, others = 0;

	if (fn == NULL)
		return;
	for (j = batch != NULL ? batch->head : NULL; j != NULL; j = j->next) {
		if (j->kind == QJOB_COMMIT)
			commits++;
		else if (j->kind == QJOB_PROBE)
			probes++;
		else
			others++;
	}
	uv_mutex_unlock(&q->mtx);
	fn(arg, phase, commits, probes, others);
	uv_mutex_lock(&q->mtx);
}
#endif

/*
 * The sync thread: takes every batch the writer finished (one group sync
 * for all of them), publishes, moves the journal's tail, and hands the jobs
 * back to the loop.
 */
void
queue_thread_main(void *arg)
{
	struct queue *q = arg;
	struct queue_list batch;
	struct queue_job *j, *r;
	enum queue_sync_mode mode;
	struct queue_counters c;
	bool commits_last = false;
	uint64_t commits_ns = 0;

	uv_mutex_lock(&q->mtx);
	for (;;) {
		while (q->written.head == NULL && !q->writer_exited)
			uv_cond_wait(&q->sync_cond, &q->mtx);
		if (q->written.head == NULL)
			break;
#ifdef RELAY_TEST_HOOKS
		queue_test_sync_point(q, QUEUE_TEST_SYNC_TAKE, NULL);   /* only we take from written */
#endif
		queue_take_sync(q, &batch, &commits_last, &commits_ns);
#ifdef RELAY_TEST_HOOKS
		queue_test_sync_point(q, QUEUE_TEST_SYNC_GROUP, &batch);
#endif
		mode = q->mode;
		uv_mutex_unlock(&q->mtx);

		memset(&c, 0, sizeof(c));
		queue_sync_batch(q, &batch, mode, &c);
		queue_advance_tail(q, &batch, &c);
		for (j = batch.head; j != NULL; j = j->next)
			if (j->kind == QJOB_PROBE)
				queue_journal_probe(q, j);

		uv_mutex_lock(&q->mtx);
		for (j = batch.head; j != NULL; j = j->next)
			if (j->acked && q->jbacklog-- == QUEUE_JNL_BACKLOG)
				uv_cond_signal(&q->cond);
		for (j = batch.head; j != NULL; j = j->next)
			if (j->open_counted) {
				j->open_counted = false;
				if (q->ops_open-- == QUEUE_OPS_OPEN_MAX)
					uv_cond_signal(&q->write_cond);
			}
		q->counters.journal_errors += c.journal_errors;
		q->counters.batches++;
		q->counters.sync_ns += c.sync_ns;
		q->counters.publish_ns += c.publish_ns;
		q->counters.recycled += c.recycled;
		q->counters.unlinked += c.unlinked;
		for (j = batch.head; j != NULL; j = j->next) {
			if (!queue_job_file(j) && j->kind != QJOB_RECYCLE)
				continue;
			if (j->kind == QJOB_RECYCLE) {
				for (r = j->recs; r != NULL; r = r->next)
					q->counters.coalesced++;
				continue;
			}
			if (j->err != 0)
				q->counters.failures++;
			else if (j->kind == QJOB_COMMIT)
				q->counters.commits++;
			else
				q->counters.records++;
		}
		queue_list_concat(&q->done, &batch);
		uv_async_send(&q->async);
	}
	q->exited = true;
	/* the writer is gone: nobody takes the kept descriptors any more */
	for (struct queue_kept *k = q->kept; k < q->kept + QUEUE_KEPT_MAX; k++)
		if (k->fd != -1) {
			close(k->fd);
			k->fd = -1;
		}
	uv_cond_signal(&q->reap_cond);
	uv_mutex_unlock(&q->mtx);
	uv_async_send(&q->async);
}

/*
 * Loop side of the thread: staging, hand-over, completion.
 */

void
queue_update_ref(struct queue *q)
{
	/* The loop stays alive while the threads have work of ours, not otherwise. */
	if (q->inflight > 0 || q->closing || q->reap_given > q->reap_seen)
		uv_ref((uv_handle_t *)&q->async);
	else
		uv_unref((uv_handle_t *)&q->async);
}

void
queue_idle_cb(uv_idle_t *h)
{
	(void)h;
}

/* End of the loop iteration: everything staged goes to the thread at once. */
void
queue_handoff(struct queue *q)
{
	if (q->staging) {
		uv_idle_stop(&q->idle);
		uv_check_stop(&q->check);
		q->staging = false;
	}
	if (q->staged.head == NULL && q->staged_ops.head == NULL)
		return;
	uv_mutex_lock(&q->mtx);
	if (q->staged.head != NULL) {
		queue_list_concat(&q->pending, &q->staged);
		uv_cond_signal(&q->cond);
	}
	if (q->staged_ops.head != NULL) {
		queue_list_concat(&q->ops, &q->staged_ops);
		uv_cond_signal(&q->write_cond);
	}
	uv_mutex_unlock(&q->mtx);
}

void
queue_check_cb(uv_check_t *h)
{
	struct queue *q = h->data;

	if (q->magic != QUEUE_MAGIC)
		fatalx("%s: bad queue", __func__);
	queue_handoff(q);
}

static void
queue_stage_on(struct queue *q, struct queue_list *l, struct queue_job *j)
{
	queue_list_append(l, j);
	q->inflight++;
	queue_update_ref(q);
	if (!q->staging) {
		q->staging = true;
		uv_idle_start(&q->idle, queue_idle_cb);
		uv_check_start(&q->check, queue_check_cb);
	}
}

void
queue_stage(struct queue *q, struct queue_job *j)
{
	queue_stage_on(q, &q->staged, j);
}

/*
 * A record or a removal: straight to the writer thread (they never wait for
 * the journal), in the order issued.  qid_op: it still opens or renames
 * msg/<qid>, so a removal issued meanwhile must come after it.
 */
void
queue_stage_op(struct queue *q, struct queue_job *j, bool qid_op)
{
	j->op = true;
	j->qid_op = qid_op;
	q->ops_total++;
	q->nops += qid_op;
	queue_stage_on(q, &q->staged_ops, j);
}

/* A job that failed on the loop thread: completed from the async callback too. */
void
queue_post_done(struct queue *q, struct queue_job *j)
{
	q->inflight++;
	queue_update_ref(q);
	uv_mutex_lock(&q->mtx);
	queue_list_append(&q->done, j);
	uv_mutex_unlock(&q->mtx);
	uv_async_send(&q->async);
}



static void queue_ack_done(struct queue *q, struct queue_txn *t);
static void queue_probe_done(struct queue *q, struct queue_job *j);
static void queue_probe_arm(struct queue *q);

/* A committed message, durable in msg/ and out of the journal: to the router. */
static void
queue_txn_publish(struct queue *q, struct queue_txn *t)
{
	struct queue_msg *m;

	m = queue_msg_new(t->job.qid, t->env.nrcpts);
	m->env = t->env;
	memset(&t->env, 0, sizeof(t->env));
	m->body_offset = t->body_offset;
	m->body_len = t->body_len;
	m->dkim = t->dkim;
	t->dkim = NULL;
	/* The whole file went in one write and is durable now: its buffer
	 * stays with the message for the first delivery attempt (no copy).
	 * A held txn's buffer was freed (queue_hold): it has none. */
	if (t->job.write_wbuf && q->new_cb != NULL)
		m->image = queue_image_take(&t->wbuf, m->body_offset, m->body_len);
	if (q->new_cb != NULL)
		q->new_cb(q->new_arg, m);
	else
		queue_msg_free(m);
}

/*
 * Acknowledged from the journal, but not for the router yet (its publish
 * failed, or the tail could not move past it): kept, without its image
 * (the journal has it), until a probe restores the journal.  When closing
 * it is freed: the next start replays it.
 */
static void
queue_hold(struct queue *q, struct queue_txn *t)
{
	if (q->closing) {
		queue_txn_free(t);
		return;
	}
	buf_free(&t->wbuf);
	t->ack_next = NULL;
	if (q->held_tail != NULL)
		q->held_tail->ack_next = t;
	else
		q->held_head = t;
	q->held_tail = t;
	q->nheld++;
}

void
queue_held_free(struct queue *q)
{
	struct queue_txn *t;

	while ((t = q->held_head) != NULL) {
		q->held_head = t->ack_next;
		queue_txn_free(t);
	}
	q->held_tail = NULL;
	q->nheld = 0;
}

static void
queue_complete(struct queue *q, struct queue_job *j)
{
	struct queue_job *r, *next;
	struct queue_txn *t;
	struct log_line l;

	if (j->op) {
		q->ops_done++;
		q->nops -= j->qid_op;
	}
	if (j->kind == QJOB_PROBE) {
		queue_probe_done(q, j);
		free(j);
		return;
	}
	if (j->kind == QJOB_RECYCLE) {
		if (j->err != 0 && j->failed_call != NULL)
			queue_log_errno(j->qid, j->failed_call, j->sys_errno);
		/* the records it took, issued just before it: done now (its
		 * error, if the rename was not made durable, is theirs) */
		for (r = j->recs; r != NULL; r = next) {
			next = r->next;
			q->inflight--;
			r->err = j->err;
			queue_complete(q, r);
		}
		if (j->keep)
			q->recycling--;
		q->reap_given += j->reaping;
		if (j->recycled)
			queue_spare_put(q, -1, j->iname, j->size);
		free(j);
		return;
	}
	if (j->fd >= 0) {
		close(j->fd);
		j->fd = -1;
	}
	if (j->err != 0 && j->failed_call != NULL)
		queue_log_errno(j->qid, j->failed_call, j->sys_errno);

	if (j->kind == QJOB_SYNC) {
		if (j->cb != NULL)
			j->cb(j->arg, j->err);
		free(j);
		return;
	}

	t = j->txn;
	if (t->magic != TXN_MAGIC)
		fatalx("%s: bad txn", __func__);
	if (j->acked)
		queue_ack_done(q, t);
	if (j->acked && (j->err != 0 || j->withheld)) {
		/* Its 250 has gone out: the journal keeps it (its file, if it
		 * had one, was removed by the sync thread) until it is restored. */
		log_begin(&l, LOG_CRIT, j->err != 0 ? "queue_publish_failed" : "queue_publish_held");
		log_kv(&l, "qid", j->qid);
		log_kv(&l, "detail", j->err != 0 ?
		    "accepted message kept in the journal until the disk takes files again" :
		    "accepted message held in msg/ until the journal is restored");
		log_end(&l);
		queue_hold(q, t);
		return;
	}
	if (j->err != 0) {
		if (j->iname[0] != '\0') {
			queue_kept_close(q, j->iname);   /* failed before the writer took it */
			(void)unlinkat(q->msgfd, j->iname, 0);
		}
		t->cb(t->arg, j->err, NULL);
	} else {
		queue_txn_publish(q, t);
		if (!j->acked)
			t->cb(t->arg, 0, j->qid);
	}
	queue_txn_free(t);
}

/* A commit whose journal batch is durable: its callback runs now (the 250). */
static void
queue_ack(struct queue *q, struct queue_txn *t)
{
	if (t->magic != TXN_MAGIC)
		fatalx("%s: bad txn", __func__);
	t->ack_no = ++q->ack_total;
	t->ack_next = NULL;
	t->ack_prev = q->ack_tail;
	if (q->ack_tail != NULL)
		q->ack_tail->ack_next = t;
	else
		q->ack_head = t;
	q->ack_tail = t;
	t->cb(t->arg, 0, t->job.qid);
}

/* Published (or failed for good): no longer outstanding. */
static void
queue_ack_done(struct queue *q, struct queue_txn *t)
{
	if (t->ack_prev != NULL)
		t->ack_prev->ack_next = t->ack_next;
	else
		q->ack_head = t->ack_next;
	if (t->ack_next != NULL)
		t->ack_next->ack_prev = t->ack_prev;
	else
		q->ack_tail = t->ack_prev;
	t->ack_prev = t->ack_next = NULL;
}

static bool
queue_wait(struct queue *q, struct queue_waiter *w, uint64_t need_ops)
{
	if (q->ack_head == NULL && q->ops_done >= need_ops)
		return true;
	w->need = q->ack_total;
	w->need_ops = need_ops;
	w->next = q->waiters;
	q->waiters = w;
	return false;
}

bool
queue_wait_acked(struct queue *q, struct queue_waiter *w)
{
	return queue_wait(q, w, q->ops_total);
}

bool
queue_wait_published(struct queue *q, struct queue_waiter *w)
{
	return queue_wait(q, w, 0);
}

uint64_t
queue_ops_unwritten(const struct queue *q)
{
	return q->ops_total - q->ops_done;
}

bool
queue_wait_written(struct queue *q, struct queue_waiter *w, uint64_t left)
{
	if (q->ops_total - q->ops_done <= left)
		return true;
	w->need = 0;            /* below every ack_no (they count from 1): no message to wait for */
	w->need_ops = q->ops_total - left;
	w->next = q->waiters;
	q->waiters = w;
	return false;
}

void
queue_wait_cancel(struct queue *q, struct queue_waiter *w)
{
	struct queue_waiter **pp;

	for (pp = &q->waiters; *pp != NULL; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			return;
		}
}

/* Every waiter whose acknowledged messages are all published, and whose
 * records and removals are all done, now runs. */
static void
queue_run_waiters(struct queue *q)
{
	struct queue_waiter **pp, *w, *ready = NULL;
	uint64_t oldest = q->ack_head != NULL ? q->ack_head->ack_no : UINT64_MAX;

	for (pp = &q->waiters; (w = *pp) != NULL;) {
		if (w->need < oldest && w->need_ops <= q->ops_done) {
			*pp = w->next;
			w->next = ready;
			ready = w;
		} else
			pp = &w->next;
	}
	while ((w = ready) != NULL) {
		ready = w->next;
		w->cb(w->arg);
	}
}

#ifdef RELAY_TEST_HOOKS
void
queue_test_hold_reaper(struct queue *q, bool hold)
{
	uv_mutex_lock(&q->mtx);
	q->test_reap_hold = hold;
	uv_cond_signal(&q->reap_cond);
	uv_mutex_unlock(&q->mtx);
}

size_t
queue_test_ndone(struct queue *q)
{
	struct queue_job *j;
	size_t n = 0;

	uv_mutex_lock(&q->mtx);
	for (j = q->done.head; j != NULL; j = j->next)
		n++;
	uv_mutex_unlock(&q->mtx);
	return n;
}

void
queue_test_set_sync_fn(struct queue *q, queue_test_sync_fn *fn, void *arg)
{
	uv_mutex_lock(&q->mtx);
	q->test_sync_fn = fn;
	q->test_sync_arg = arg;
	uv_mutex_unlock(&q->mtx);
}

void
queue_test_fail_journal(struct queue *q)
{
	uv_mutex_lock(&q->mtx);
	q->test_jnl_fail = true;
	uv_mutex_unlock(&q->mtx);
}

void
queue_test_written(struct queue *q, size_t *commits, size_t *probes)
{
	struct queue_job *j;

	*commits = *probes = 0;
	uv_mutex_lock(&q->mtx);
	for (j = q->written.head; j != NULL; j = j->next) {
		*commits += j->kind == QJOB_COMMIT;
		*probes += j->kind == QJOB_PROBE;
	}
	uv_mutex_unlock(&q->mtx);
}
#endif

void
queue_async_cb(uv_async_t *h)
{
	struct queue *q = h->data;
	struct queue_list done;
	struct queue_job *j, *next, *acked;
	struct log_line l;
	uint64_t jerrors;
	const char *call;
	unsigned njobs = 0;
	int e;
	bool jnl_on;

	if (q->magic != QUEUE_MAGIC)
		fatalx("%s: bad queue", __func__);
	/*
	 * Callbacks may post more (a commit refused while closing): drain until
	 * empty, but not for ever: while the threads finish groups as fast as
	 * their callbacks run (a stop flushing 100,000 delivery records, each
	 * logging its "delivered" line), the rest waits for the next turn.
	 */
	for (;;) {
		if (njobs >= QUEUE_DONE_TURN) {
			uv_async_send(h);
			break;
		}
		uv_mutex_lock(&q->mtx);
		acked = q->acked;
		q->acked = NULL;
		queue_list_take(&q->done, &done, QUEUE_DONE_TURN - njobs);
		jerrors = q->counters.journal_errors;
		q->reap_seen = q->reaped;
		jnl_on = q->jnl_on;
		call = q->joff_call;
		e = q->joff_errno;
		uv_mutex_unlock(&q->mtx);
		if (q->jnl_was_on && !jnl_on && !q->jnl_off) {
			/* the threads do not log: say it once per outage, from here */
			q->jnl_off = true;
			log_begin(&l, LOG_CRIT, "queue_journal_failed");
			log_kvu(&l, "errors", jerrors - q->jerrors_seen);
			log_kv(&l, "op", call);
			log_kv(&l, "error", strerror(e));
			log_kv(&l, "detail", "journal write or disk failure: messages are acknowledged "
			    "only after their publish until the journal is restored");
			log_end(&l);
			/* it came back and failed again soon: keep backing off */
			if (q->probe_ms == 0 || util_mono_ms() - q->restored_ms > QUEUE_PROBE_MAX_MS)
				q->probe_ms = QUEUE_PROBE_MIN_MS;
			queue_probe_arm(q);
		}
		/* acknowledgements first: a job in done was acked in this round or before */
		for (j = acked; j != NULL; j = next) {
			next = j->ack_next;
			queue_ack(q, j->txn);
		}
		if (acked == NULL && done.head == NULL)
			break;
		for (j = done.head; j != NULL; j = next) {
			next = j->next;
			q->inflight--;
			queue_complete(q, j);
			njobs++;
		}
	}
	queue_run_waiters(q);
	queue_update_ref(q);
	queue_maybe_finish(q);
}


/*
 * The journal's restore, loop side: while it is off, a probe every
 * probe_ms (500 ms, doubling up to 30 s); the sync thread does the work
 * (queue_journal_probe()).
 */

static void
queue_probe_arm(struct queue *q)
{
	if (q->closing || q->probing)
		return;
	uv_timer_start(&q->probe_timer, queue_probe_cb, q->probe_ms, 0);
	q->probe_ms = q->probe_ms * 2 > QUEUE_PROBE_MAX_MS ? QUEUE_PROBE_MAX_MS : q->probe_ms * 2;
}

void
queue_probe_cb(uv_timer_t *h)
{
	struct queue *q = h->data;
	struct queue_job *j;

	if (q->magic != QUEUE_MAGIC)
		fatalx("%s: bad queue", __func__);
	if (q->closing || q->probing || !q->jnl_off)
		return;
	j = xcalloc(1, sizeof(*j));
	j->kind = QJOB_PROBE;
	j->fd = -1;
	q->probing = true;
	queue_stage(q, j);
}

/*
 * A probe is back.  Restored: every message held since the journal went
 * off is durable in msg/ and out of the journal: to the router, oldest
 * first.  Else the next probe, later.
 */
static void
queue_probe_done(struct queue *q, struct queue_job *j)
{
	struct queue_txn *t;
	struct log_line l;
	size_t held = q->nheld;

	q->probing = false;
	if (!j->published) {
		q->probes++;
		queue_log_errno(NULL, j->failed_call != NULL ? j->failed_call : "probe", j->sys_errno);
		queue_probe_arm(q);
		return;
	}
	while ((t = q->held_head) != NULL) {
		q->held_head = t->ack_next;
		if (!q->closing)
			queue_txn_publish(q, t);
		queue_txn_free(t);
	}
	q->held_tail = NULL;
	q->nheld = 0;
	q->jnl_off = false;
	q->restored_ms = util_mono_ms();
	uv_mutex_lock(&q->mtx);
	q->jerrors_seen = q->jerrors_restored;
	uv_mutex_unlock(&q->mtx);
	log_begin(&l, LOG_NOTICE, "queue_journal_restored");
	log_kvu(&l, "messages", held);
	log_kvu(&l, "probes", q->probes + 1);
	log_end(&l);
	q->probes = 0;
}

/*
 * The journal at start-up.
 */

/*
 * Start-up: a message the journal holds was acknowledged, but its msg/
 * file may be missing or incomplete.  It is written again, whole, under
 * .in-<qid>, synced, and renamed over msg/<qid> (the router never saw such
 * a message: no state record can be lost by overwriting it).
 */
static bool
queue_replay_valid(const char *qid, const char *image, size_t len)
{
	return queue_qid_valid(qid) && len >= QFILE_HDR_LEN &&
	    memcmp(image, QFILE_MAGIC, QFILE_MAGIC_LEN) == 0;
}

/* msg/<qid> := image, durable (but for the directory): 0 or -1 (errno).  Any thread. */
static int
queue_replay_write(struct queue *q, const char *qid, const char *image, size_t len)
{
	char iname[QNAME_MAX];
	int fd, e;

	snprintf(iname, sizeof(iname), QNAME_IN "%s", qid);
	fd = openat(q->msgfd, iname, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1 || util_pwrite_full(fd, image, len, 0) == -1 || fdatasync(fd) == -1 ||
	    renameat(q->msgfd, iname, q->msgfd, qid) == -1) {
		e = errno;
		if (fd >= 0) {
			close(fd);
			(void)unlinkat(q->msgfd, iname, 0);
		}
		errno = e;
		return -1;
	}
	close(fd);
	return 0;
}

static int
queue_replay_one(void *arg, const char *qid, const char *image, size_t len)
{
	struct queue *q = arg;

	if (!queue_replay_valid(qid, image, len)) {
		queue_log_errno(qid, "journal record", EINVAL);
		return 0;
	}
	if (queue_replay_write(q, qid, image, len) == -1) {
		queue_log_errno(qid, "replay", errno);
		return RELAY_EIO;
	}
	q->counters.replayed++;
	return 0;
}

/*
 * The journal: open (create) it and replay what it holds.  Without one
 * (it cannot be made) relayd still works, acknowledging after the publish;
 * a journal that holds messages and cannot be replayed stops the start.
 */
int
queue_journal_open(struct queue *q, int dirfd, struct buf *err)
{
	struct buf warn = BUF_INIT;
	struct log_line l;
	int rc;

	if ((rc = journal_open(dirfd, &q->jnl, &warn)) == RELAY_EIO) {
		/* it exists and may hold acknowledged mail: not without it */
		buf_printf(err, "queue %s: %s", q->dir, buf_cstr(&warn));
		buf_free(&warn);
		return RELAY_EIO;
	}
	if (rc != 0) {
		log_begin(&l, LOG_WARNING, "queue_journal_unavailable");
		log_kv(&l, "detail", buf_cstr(&warn));
		log_end(&l);
		buf_free(&warn);
		return 0;
	}
	if (warn.len > 0) {
		log_begin(&l, LOG_ERR, "queue_journal_reset");
		log_kv(&l, "detail", buf_cstr(&warn));
		log_end(&l);
	}
	buf_free(&warn);
	rc = journal_replay(&q->jnl, queue_replay_one, q);
	if (rc == 0) {
		/* Past any number a batch still in the file may carry (a torn one
		 * in the middle leaves whole ones after it): none can match again. */
		q->jnl.seq += q->jnl.size / JOURNAL_ALIGN + 1;
		if (q->counters.replayed > 0 && fsync(q->msgfd) == -1)
			rc = RELAY_EIO;
		else if (journal_set_tail(&q->jnl, q->jnl.head, q->jnl.seq) == -1)
			rc = RELAY_EIO;
	}
	if (rc != 0) {
		buf_printf(err, "queue %s: journal replay failed: %s", q->dir, strerror(errno));
		journal_close(&q->jnl);
		return RELAY_EIO;
	}
	if (q->counters.replayed > 0) {
		log_begin(&l, LOG_NOTICE, "queue_journal_replayed");
		log_kvu(&l, "messages", q->counters.replayed);
		log_end(&l);
	}
	q->jtail = q->jnl.tail;
	q->jhead = q->jnl.head;
	q->jtail_seq = q->jnl.tail_seq;
	q->jnl_on = q->jnl_was_on = true;
	return 0;
}
