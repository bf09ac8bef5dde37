/*
 * queue_journal.h - (internal to router/) the acceptance JOURNAL: a
 * preallocated ring file, queue_dir/journal, into which new messages are
 * written in batches, one fdatasync per batch, so that relayd can say 250
 * before each message has its own file in msg/.  A message's record is live
 * from its batch's sync until its msg/<qid> file is published and durable;
 * then the journal's tail (kept in a superblock) moves past it.  At start-up
 * the live batches are replayed into msg/.  queue/QUEUE.md has the format
 * and the crash story.
 *
 * Threads: journal_open() and journal_replay() run before the commit
 * threads start; journal_append() belongs to the journal thread and
 * journal_set_tail() to the sync thread afterwards; journal_restore() and
 * journal_reopen() run on the sync thread while the journal is off (the
 * journal thread appends nothing then).  The struct is not locked: the
 * queue passes the durable tail, and the journal's being on, between them
 * under its mutex.
 */
#ifndef RELAY_ROUTER_JOURNAL_H
#define RELAY_ROUTER_JOURNAL_H

#include "common/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JOURNAL_SIZE     (8u << 20)    /* the ring file's size */
#define JOURNAL_DATA     8192u         /* batches start here (two superblocks before,
                                          each in its own 4 KiB block) */
#define JOURNAL_ALIGN    4096u         /* every batch starts on such a boundary */
#define JOURNAL_QID_MAX  32u           /* == QID_MAX */

struct journal {
	int fd;                      /* batches and replay (journal thread) */
	int sb_fd;                   /* superblocks (sync thread): its own open file, so
	                                that neither thread's fdatasync takes the other's
	                                writeback error */
	uint64_t id;                 /* random, made with the file: batches carry it */
	uint64_t size;
	uint64_t sb_gen;             /* superblock generation (slot = gen & 1) */
	/* where the next batch goes, and its number (journal thread) */
	uint64_t head;
	uint64_t seq;
	/* the oldest live batch, as the superblock says (sync thread) */
	uint64_t tail;
	uint64_t tail_seq;
	struct buf wbuf;             /* the batch being built (journal thread) */
	uint32_t nrec;
};

/* Open queue_dir/journal (dirfd), creating it if missing (or moving it to
 * journal.bad, with a warning in err, if neither superblock is valid); read
 * its superblock.  0; RELAY_EIO with err set if it exists and cannot be
 * opened (the start must not go on without its messages); RELAY_ETEMP with
 * err set if a new one cannot be made (relayd can run without). */
int journal_open(int dirfd, struct journal *j, struct buf *err);
void journal_close(struct journal *j);

/*
 * Call fn for every record of every live batch, oldest first; a torn or
 * stale batch ends the walk.  Afterwards head/seq follow the last good batch
 * (the caller makes the records durable elsewhere, then journal_set_tail()s
 * to head).  fn returns 0, or non-zero to stop (returned).
 */
typedef int journal_replay_fn(void *arg, const char *qid, const char *image, size_t len);
int journal_replay(struct journal *j, journal_replay_fn *fn, void *arg);

/*
 * Running, with the journal off after a failure (a failed append, a message
 * that could not be published, a tail that could not move) and no append
 * in progress: call fn for every record of the batches appended since the
 * durable tail, oldest first -- every batch journal_append() returned 0
 * for, never a failed one.  0 if each was read back whole and fn returned
 * 0 for each, with *head and *seq for journal_reopen(); else RELAY_EIO
 * (errno set) or fn's return.  Nothing changes in j.
 */
int journal_restore(struct journal *j, journal_replay_fn *fn, void *arg, uint64_t *head,
    uint64_t *seq);
/*
 * After journal_restore() and once the caller made its records durable
 * elsewhere: the journal is empty (the tail moves to head, durably) and
 * journal_append() works again, with numbers from seq.  0 or -1 (errno).
 */
int journal_reopen(struct journal *j, uint64_t head, uint64_t seq);

/* Build a batch: begin, add records, then append (one pwrite, one fdatasync). */
void journal_batch_begin(struct journal *j);
void journal_batch_add(struct journal *j, const char *qid, const void *image, size_t len);
size_t journal_batch_bytes(const struct journal *j);

/*
 * Write the batch at head (or, if it does not fit before the end, at the
 * start of the ring) unless that would reach the durable tail (tail,
 * tail_seq: the caller's copy): then RELAY_ETEMP and nothing is written.
 * With delay_ms > 0 (tests; only in a RELAY_TEST_HOOKS build) it sleeps
 * that long before the sync.  On
 * success *end and *seq say where the batch ends and its number, and head
 * moves past it.  RELAY_EIO with errno-like *sys_errno on a failed write or
 * sync: the batch may be on disk (replay would find it: a duplicate at
 * worst), and every later append fails too, until the next start or
 * journal_reopen() (a batch written elsewhere under the same number would
 * never be replayed).
 */
int journal_append(struct journal *j, uint64_t tail, uint64_t tail_seq, unsigned delay_ms,
    uint64_t *end, uint64_t *seq, int *sys_errno);

/* Make "everything before (off, seq) is published" durable: the superblock
 * slot after the current one, then fdatasync.  0 or -1 (errno; the tail in
 * j stays the durable one). */
int journal_set_tail(struct journal *j, uint64_t off, uint64_t seq);

#endif
