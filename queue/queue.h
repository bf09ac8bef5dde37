/*
 * queue.h - (internal to router/) queue STORAGE: what is on disk and
 * how it survives a crash.  Scheduling (what to try when) lives in
 * router_sched.c and is rebuilt from this at start-up.
 *
 * A message is one file queue_dir/msg/<qid>: envelope, body, then appended
 * state records.  The in-memory struct queue_msg mirrors it; every state
 * change goes through queue_record(), which appends the record durably AND
 * applies it to the struct, so start-up replay and run time share one code
 * path (queue_msg_apply()).  See queue/QUEUE.md for the format.
 */
#ifndef RELAY_ROUTER_QUEUE_H
#define RELAY_ROUTER_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "common/buf.h"
#include "common/envelope.h"

enum rcpt_state {
	RCPT_PENDING = 0,       /* not yet delivered or failed (maybe deferred) */
	RCPT_DELIVERED,
	RCPT_FAILED,            /* failed permanently or expired; awaiting/after NDR */
};

struct queue_rcpt {
	uint8_t state;               /* enum rcpt_state */
	bool reported : 1;           /* a failure/success report was queued for it */
	bool waiting : 1;            /* last deferred waiting for its destination (QREC_WAIT_DEST) */
	bool expired : 1;            /* failed by max_queue_age (QREC_EXPIRED) */
	bool dsn_passed : 1;         /* relayed to a DSN server: no success notice of ours (QREC_DSN_PASSED) */
	unsigned attempts;           /* attempts that ended for this recipient */
	uint64_t last_attempt_ms;
	const char *last;            /* its last attempt's host, address, status and reply: one
	                                block shared by the recipients whose four are equal, never
	                                changed (queue_last.c), read by queue_rcpt_last(); or NULL */
};
/* The state and the flags share the word before attempts: no hole. */
_Static_assert(sizeof(void *) != 8 || sizeof(struct queue_rcpt) <= 24, "struct queue_rcpt grew");

/* A recipient's last attempt, as its four strings (each NULL when absent). */
struct queue_last {
	const char *host;            /* exchanger name of the last attempt */
	const char *ip;
	const char *status;          /* enhanced status "4.4.1", "5.1.1" ... */
	const char *reply;           /* the remote server's reply text, or our own diagnosis */
};

/* r's last attempt's strings into out: they point into r's block, valid
 * until r's strings change (a record) or r is freed. */
void queue_rcpt_last(const struct queue_rcpt *r, struct queue_last *out);

/* Whether r's last attempt left a status (queue_rcpt_last()'s status != NULL),
 * without reading the strings: the block's first byte says which of the
 * four are there, bit i for struct queue_last's i-th field (queue_last.c). */
#define QUEUE_LAST_HAS_STATUS 0x04

static inline bool
queue_rcpt_has_status(const struct queue_rcpt *r)
{
	return r->last != NULL && (*r->last & QUEUE_LAST_HAS_STATUS) != 0;
}

/*
 * The largest body a queue file holds: body_offset and body_len are 32 bits
 * in memory.  queue_txn_write() refuses more (RELAY_ENOSPC), and a file whose
 * header says more is corrupt at load.  The body offset is bounded by the
 * envelope's (QFILE_ENV_MAX, queue_int.h).
 */
#define QUEUE_BODY_MAX UINT32_MAX

struct queue_msg {
	char qid[QID_MAX];
	struct envelope env;         /* env.nrcpts == number of rcpt entries */
	bool held;
	bool delay_warned;           /* the one "delayed" report was queued */
	bool removed;                /* queue_remove() took it (loop only; the queue's) */
	uint32_t body_offset;        /* where the body starts in the file */
	uint32_t body_len;           /* at most QUEUE_BODY_MAX */
	char *dkim;                  /* DKIM-Signature field(s) sent before the body, or NULL;
	                                their ids follow in the same allocation (queue_msg_dkim_ids()) */
	struct queue_image *image;   /* the file image in memory since its publish, or NULL
	                                (queue_image.c; a cache of the file, loop only) */
	struct queue_rcpt rcpt[];    /* env.nrcpts entries, in the same allocation: the count
	                                is fixed when the message is made (queue_msg_new) */
};
/* One per queued message: the flags and the 32-bit body offset share one
 * gap, the file's name is derived (queue_msg_path), a recipient keeps one
 * pointer to its last_* strings and the scheduler finds its own state by
 * qid, so that with one recipient (most messages) it stays within 168
 * bytes, a 176-byte malloc chunk (the struct alone and a separate array took
 * 192 + 64, then 232 in one 240-byte chunk, then 208 in a 224-byte one). */
_Static_assert(sizeof(void *) != 8 || sizeof(struct queue_msg) + sizeof(struct queue_rcpt) <= 168,
    "struct queue_msg grew");

/* Record types appended after the body (one text line each). */
enum queue_rec_type {
	QREC_ATTEMPT = 'A',          /* an attempt for rcpt ended deferred: host ip status reply */
	QREC_DELIVERED = 'D',        /* rcpt delivered: host ip status reply */
	QREC_FAILED = 'F',           /* rcpt failed permanently (or expired): host ip status reply */
	QREC_REPORTED = 'R',         /* a report (NDR/DSN) for rcpt was queued */
	QREC_HOLD = 'H',             /* value 1 = held, 0 = released (rcpt unused) */
	QREC_WARNED = 'W',           /* the delay warning was queued (rcpt unused) */
	QREC_DKIM = 'K',             /* status: the d=/s= pairs, reply: the DKIM-Signature
	                                field(s) to send before the body (rcpt unused) */
};

struct queue_record {
	enum queue_rec_type type;
	int rcpt;                    /* index into env.rcpts, or -1 */
	uint64_t time_ms;
	const char *host;            /* may be NULL */
	const char *ip;
	const char *status;          /* enhanced status code */
	const char *reply;
	int value;
};

struct queue;

/* Called on the loop thread for every message that was just committed; the
 * callee takes ownership of m (the scheduler). */
typedef void queue_new_cb(void *arg, struct queue_msg *m);
typedef void queue_sync_cb(void *arg, int err);

/*
 * Open (create) dir with its subdirectories, remove the leftovers of
 * transactions that never committed, start the commit thread.
 */
int queue_open(uv_loop_t *loop, const char *dir, struct queue **out, struct buf *err);

/*
 * Descriptors the queue may hold beyond the daemon's fixed reserve: the
 * recycled files' descriptors kept for the writer (QUEUE_KEPT_MAX; QUEUE.md
 * "Removing a message") and the files of the records the writer has
 * appended and the sync thread not yet synced (QUEUE_OPS_OPEN_MAX).  relayd
 * counts them in the descriptors it needs.
 */
uint64_t queue_fd_need(void);
/* Where committed messages go (the scheduler); set before the first commit. */
void queue_set_new_cb(struct queue *q, queue_new_cb *cb, void *arg);
/* Load every queued message (start-up); cb(arg, m) takes ownership of each.
 * A file that cannot be parsed is moved to queue_dir/corrupt/ and logged. */
int queue_scan(struct queue *q, queue_new_cb *cb, void *arg);

/*
 * The same scan on a thread of its own (queue_scan.c), for a start-up that
 * must not wait for it.  queue_scanner_new() (loop, before anything is
 * submitted) notes every queue id made from then on, so the walk never
 * loads a message this process queued itself; queue_scanner_run() starts
 * the walk (after the privilege drop: the thread inherits the sandbox).
 * The loaded messages reach cb(arg, m) on the loop, at most
 * QUEUE_SCAN_BATCH per loop iteration, and none after the iteration's
 * handing over has taken QUEUE_SCAN_TURN_MS (checked between messages: one
 * slow cb is not cut short); done(arg, loaded, corrupt, ms) once
 * at the end.  queue_scanner_stop() (loop) tells the thread to stop and
 * returns at once: neither cb nor done is called any more; the thread ends
 * within the read it is doing (one file, or the listing of msg/), then the
 * loop joins it, drops what it loaded but did not hand over (still in
 * msg/) and frees the scanner (also after done).  queue_close() waits for
 * that.  Call it exactly once.
 */
#define QUEUE_SCAN_BATCH 256
#define QUEUE_SCAN_TURN_MS 5
struct queue_scanner;
typedef void queue_scan_done_cb(void *arg, size_t loaded, size_t corrupt, uint64_t ms);
struct queue_scanner *queue_scanner_new(struct queue *q, queue_new_cb *cb,
    queue_scan_done_cb *done, void *arg);
void queue_scanner_run(struct queue_scanner *sc);
/* Messages handed over so far and files found corrupt so far; running: not done yet. */
void queue_scanner_counts(struct queue_scanner *sc, size_t *loaded, size_t *corrupt, bool *running);
void queue_scanner_stop(struct queue_scanner *sc);

/*
 * Submission into the queue.
 *
 * queue_txn_begin() creates an incoming file for a message with envelope env
 * (copied) and assigns its queue id; an envelope whose lines would exceed
 * QFILE_ENV_MAX is refused (RELAY_EINVAL: the start-up scan would not load
 * it).  The body is then streamed with queue_txn_write() as it arrives:
 * CRLF line endings, already dot-unstuffed, headers the relay adds included
 * (Received: first).  queue_txn_commit() makes the message and its envelope
 * durable, sharing the disk sync with other commits in flight (group
 * commit), and calls cb(arg, 0, qid) on the loop thread once the message
 * will survive a crash, or cb(arg, err, NULL) if it could not be queued
 * (RELAY_ENOSPC: the file system is full; RELAY_EIO: another failure).
 * The callback is always called exactly once; the txn is consumed by commit
 * and by abort.
 *
 * With env NULL, queue_txn_begin() only reserves: the queue id, a spare
 * file, a count that holds queue_close() until the txn is committed or
 * aborted; nothing is written.  queue_txn_envelope() then gives it its
 * envelope, on any thread that holds the txn (submit's session threads keep
 * a few reserved ahead of need); RELAY_EINVAL leaves it as it was.  Abort
 * gives an unused one's spare file back.
 */
struct queue_txn;
typedef void queue_commit_cb(void *arg, int err, const char *qid);

int queue_txn_begin(struct queue *q, const struct envelope *env, struct queue_txn **out);
int queue_txn_envelope(struct queue_txn *t, const struct envelope *env);
const char *queue_txn_qid(const struct queue_txn *t);
/* The first write error of t (0, RELAY_EIO, or RELAY_ENOSPC: the disk is full,
 * or the body would pass QUEUE_BODY_MAX). */
int queue_txn_error(const struct queue_txn *t);
int queue_txn_write(struct queue_txn *t, const void *p, size_t len);
void queue_txn_commit(struct queue_txn *t, queue_commit_cb *cb, void *arg);
/*
 * After the last queue_txn_write(), before the commit: header fields (the
 * DKIM signatures, CRLF-terminated) to send before the body on every
 * delivery, and their ids for the logs; stored as a K record right after
 * the body, so the commit (and the journal) carries them with the message.
 */
void queue_txn_prefix(struct queue_txn *t, const char *fields, const char *ids);
void queue_txn_abort(struct queue_txn *t);


/*
 * Apply rec to m and append it to m's file: the writer thread opens the
 * file (O_APPEND) and writes the line, in the order the loop issued the
 * records (and removals), and the record is made durable by the next group
 * sync; cb (may be NULL) fires on the loop thread after that, with 0 or the
 * error of the append or the sync (logged).  Returns at once: RELAY_EINVAL
 * (not written), RELAY_ECLOSED, RELAY_ENOENT (m was removed), else 0.
 * However many are issued at once, at most QUEUE_OPS_OPEN_MAX files are
 * open for records at a time (the writer waits for the sync thread).  Of
 * the callbacks (and commit callbacks) due, the loop runs at most
 * QUEUE_DONE_TURN per iteration; the rest wait for the next one.
 */
#define QUEUE_OPS_OPEN_MAX 256
#define QUEUE_DONE_TURN 1024
#ifdef RELAY_TEST_HOOKS
/* Tests: how many finished jobs wait for the loop. */
size_t queue_test_ndone(struct queue *q);
/*
 * Tests: fn (NULL: none) runs on the sync thread, no lock held, and may
 * block to hold it: with QUEUE_TEST_SYNC_TAKE when jobs wait for it and it
 * is about to take its next group (the commit threads keep passing jobs on
 * meanwhile), with QUEUE_TEST_SYNC_GROUP once it took one, before its sync:
 * the group's new messages, journal probes and other jobs.
 */
enum { QUEUE_TEST_SYNC_TAKE, QUEUE_TEST_SYNC_GROUP };
typedef void queue_test_sync_fn(void *arg, int phase, unsigned commits, unsigned probes,
    unsigned others);
void queue_test_set_sync_fn(struct queue *q, queue_test_sync_fn *fn, void *arg);
/* Tests: the jobs waiting for the sync thread: new messages, journal probes. */
void queue_test_written(struct queue *q, size_t *commits, size_t *probes);
/* Tests: the journal thread's next append fails, as on a disk error (its
 * batch goes to /dev/null, whose fdatasync says EINVAL): the journal goes off. */
void queue_test_fail_journal(struct queue *q);
/* Tests: the reaper thread deletes no removed file while hold is true (a
 * close ends the hold: it deletes them all before it exits). */
void queue_test_hold_reaper(struct queue *q, bool hold);
#endif
int queue_record(struct queue *q, struct queue_msg *m, const struct queue_record *rec,
    queue_sync_cb *cb, void *arg);
/* Apply a record to the in-memory message only (used by replay and by queue_record). */
void queue_msg_apply(struct queue_msg *m, const struct queue_record *rec);
/*
 * Whether rec would change nothing queue_msg_apply() keeps of m (and so
 * nothing a later start reads back): an A record with QREC_NO_ATTEMPT (no
 * attempt counted, no last_attempt_ms) for a pending recipient whose
 * waiting flag it leaves as it is, each of its strings NULL or equal to the
 * recipient's.  Its time is all it would add to the file (the history of
 * `relayctl queue show`).  The caller may then leave it unwritten (QUEUE.md).
 */
bool queue_record_idle(const struct queue_msg *m, const struct queue_record *rec);

/* Remove a message whose every recipient is done (or deleted by the admin):
 * 0 (also when its file was gone already, removed behind relayd's back:
 * logged), RELAY_ENOENT (removed before) or RELAY_EIO.  Its id stops naming a file after
 * every record queue_record() issued for it before: by the writer thread
 * when records or removals are still on their way there (errors are logged),
 * else on the loop at once.  The file itself is kept for a later message
 * (never while somebody still has it open) or deleted, by the commit thread. */
int queue_remove(struct queue *q, struct queue_msg *m);
void queue_msg_free(struct queue_msg *m);
/* The "d=..;s=.." pairs of m's DKIM fields, ","-separated (the K record's
 * status), or NULL: stored right after m->dkim's NUL. */
static inline const char *
queue_msg_dkim_ids(const struct queue_msg *m)
{
	return m->dkim != NULL ? m->dkim + strlen(m->dkim) + 1 : NULL;
}

/* The name of m's file in q, queue_dir/msg/<qid>, written into buf (len
 * bytes): buf, or NULL when it does not fit.  Derived from the queue's
 * directory and the qid, not stored: a million queued messages do not each
 * keep it, nor a pointer to the directory. */
const char *queue_msg_path(const struct queue *q, const struct queue_msg *m, char *buf, size_t len);

/*
 * The image of a message's file kept in memory after its publish
 * (queue_image.c): its body is m->body_len bytes at queue_image_body().
 * Loop thread only; a reference lent to another thread is kept until that
 * thread is done with the bytes.  queue_msg_drop_image() drops the
 * message's own reference (the first attempt is over, or to save memory);
 * the bytes of all live images stay under a bound (QUEUE_IMAGE_MAX),
 * queue_image_held() counts them.
 */
#define QUEUE_IMAGE_MAX  (4u << 20)           /* bytes of file images kept, 4 MiB */

struct queue_image;
struct queue_image *queue_image_ref(struct queue_image *im);   /* NULL stays NULL */
void queue_image_unref(struct queue_image *im);
const char *queue_image_body(const struct queue_image *im);
void queue_msg_drop_image(struct queue_msg *m);
size_t queue_image_held(void);
void queue_image_set_max(size_t max);                          /* tests */

/* Every record of a message (for `relayctl queue show`), as parsed from disk:
 * 0, RELAY_ENOENT (no such file), RELAY_EINVAL (not a valid queue file),
 * RELAY_EIO (logged). */
int queue_history(struct queue *q, const char *qid, void (*cb)(void *arg, const struct queue_record *rec), void *arg);
/* The same from the message's file at path (queue_msg_path()): needs no
 * struct queue, so a thread-pool thread may call it, also while the queue
 * closes or after. */
int queue_history_file(const char *path, const char *qid,
    void (*cb)(void *arg, const struct queue_record *rec), void *arg);

/*
 * A wait for every message acknowledged so far to reach the scheduler: a 250
 * comes from the acceptance journal a moment before the message's msg/ file
 * is published and the scheduler gets it (queue/QUEUE.md); and for every
 * record and removal issued so far to be in the files (they are written by
 * the writer thread).  relayctl waits so that it sees every message a client
 * was told is queued, and every record in a history.  The caller
 * owns w and sets cb and arg; queue_wait_acked() returns true (cb is never
 * called) when nothing is outstanding, else cb(arg) runs later on the loop,
 * unless queue_wait_cancel(q, w) comes first.
 */
struct queue_waiter {
	struct queue_waiter *next;  /* the queue's */
	uint64_t need;               /* the queue's */
	uint64_t need_ops;           /* the queue's */
	void (*cb)(void *arg);
	void *arg;
};
bool queue_wait_acked(struct queue *q, struct queue_waiter *w);
/*
 * The same wait for the acknowledged messages only, not for the records and
 * removals: for an answer from the scheduler's memory (`relayctl stats`),
 * which has every record already; after a mass deferral the writer may have
 * a million of them to append.
 */
bool queue_wait_published(struct queue *q, struct queue_waiter *w);
void queue_wait_cancel(struct queue *q, struct queue_waiter *w);
/*
 * Back-pressure from the writer thread: the records and removals issued
 * and not yet done (written and synced), and a wait until at most left of
 * those issued so far remain (the acknowledged messages do not matter):
 * true at once (cb is never called) if they are that few already, else
 * cb(arg) runs later on the loop, unless queue_wait_cancel(q, w) comes
 * first.  The scheduler holds back the release of a backlog by them.
 */
uint64_t queue_ops_unwritten(const struct queue *q);
bool queue_wait_written(struct queue *q, struct queue_waiter *w, uint64_t left);

/* Stop accepting commits, finish those in flight, join the thread; done(arg) on the loop. */
void queue_close(struct queue *q, void (*done)(void *arg), void *arg);

/*
 * Added by the queue engineer (additive).
 */

/*
 * For QREC_ATTEMPT/DELIVERED/FAILED, value is a set of flags (files written
 * before QREC_WAIT_DEST and QREC_EXPIRED existed hold 0 or 1):
 * QREC_NO_ATTEMPT: no attempt ended (e.g. the recipient expired in the
 * queue): attempts is not counted.
 * QREC_WAIT_DEST (ATTEMPT only): the recipient now waits for its destination
 * to come back (it has no retry timer of its own; at start-up it is due at once).
 * QREC_EXPIRED (FAILED only): it failed because it outlived max_queue_age.
 * These states are never read back from the status text: a remote server
 * may answer "451 4.4.1" or "554 4.4.7" itself.
 */
#define QREC_NO_ATTEMPT 1
#define QREC_WAIT_DEST  2
#define QREC_EXPIRED    4
/* QREC_DSN_PASSED (DELIVERED only): the next hop announced DSN and took the
 * NOTIFY/ORCPT/ENVID/RET parameters, so the success notice is its to send
 * (RFC 3461 5.2.3); relayd sends none.  Without it a delivered recipient
 * whose NOTIFY asks for SUCCESS gets a "relayed" notice (5.2.2). */
#define QREC_DSN_PASSED 8

/* How the commit thread makes a batch durable (see QUEUE.md; the default is
 * the fastest correct one, the others exist for bench_queue). */
enum queue_sync_mode {
	QUEUE_SYNC_DEFAULT = 0,
	QUEUE_SYNC_FDATASYNC,        /* (a) fdatasync each file */
	QUEUE_SYNC_RANGE,            /* (b) sync_file_range(WRITE) all, then fdatasync each */
	QUEUE_SYNC_SYNCFS,           /* (c) one syncfs() for the batch */
	QUEUE_SYNC_AUTO,             /* (b) for small batches, (c) for larger ones */
};
void queue_set_sync_mode(struct queue *q, enum queue_sync_mode mode);

/* Counters of the commit thread (tests, bench, relayctl stats). */
struct queue_counters {
	uint64_t batches;            /* group syncs done */
	uint64_t commits;            /* messages made durable */
	uint64_t records;            /* record syncs done */
	uint64_t coalesced;          /* records not written: their message's removal, next,
	                                made them moot (QUEUE.md) */
	uint64_t failures;           /* jobs that failed */
	uint64_t create_ns;          /* time spent creating files that had no spare */
	uint64_t sync_ns;            /* time spent making data durable */
	uint64_t publish_ns;         /* time spent renaming into msg/ and syncing msg/ */
	uint64_t created_late;       /* files the commit thread had to create (no spare) */
	uint64_t spares_used;        /* transactions that began on a spare file */
	uint64_t recycled;           /* removed messages kept as spare files */
	uint64_t unlinked;           /* removed messages deleted (pool full, too big, or open) */
	uint64_t spares_reused;      /* transactions that began on a recycled file */
	uint64_t kept_reused;        /* of those, written through the descriptor their
	                                recycling kept (no open of their own) */
	uint64_t journaled;          /* messages acknowledged from the journal (before publish) */
	uint64_t journal_full;       /* messages that found no room in the journal */
	uint64_t journal_errors;     /* journal writes, syncs or tail updates that failed, and
	                                journaled messages whose publish failed */
	uint64_t journal_ns;         /* time spent writing and syncing journal batches */
	uint64_t replayed;           /* messages recovered from the journal at start-up */
};
void queue_get_counters(struct queue *q, struct queue_counters *c);
/* The acceptance journal's fill (metrics): *used bytes of the ring between its
 * durable tail and its head, of *size; both 0 when there is no journal. */
void queue_journal_fill(struct queue *q, uint64_t *used, uint64_t *size);

/*
 * Tests only: make spare and late files with names (msg/.spare-N, msg/.in-<qid>)
 * instead of unnamed O_TMPFILE files, as on a file system without O_TMPFILE.
 * Call right after queue_open().
 */
void queue_set_named_files(struct queue *q, bool named);

/* A queue id from its parts: 10 chars of ms, 4 of seq (20 bits), 6 of rnd (30 bits). */
void queue_qid_make(char out[QID_MAX], uint64_t ms, uint32_t seq, uint32_t rnd);
/* 1 if s is a well-formed queue id (1..31 chars of [0-9A-Z]). */
int queue_qid_valid(const char *s);

/*
 * queue_envelope.c: the text form of queue files (QUEUE.md).  A field is
 * written as " " + escaped text ("-" for NULL, "\e" for ""); a line is split
 * into fields in place and each field unescaped in place.
 */
void envelope_escape(struct buf *b, const char *s);
int envelope_split(char *line, char **argv, int max);         /* argc, or -1 */
int envelope_unescape(char *field, char **out);               /* 0 or -1; *out NULL for "-" */
void envelope_encode(const struct envelope *env, struct buf *b);
int envelope_decode(char *text, size_t len, struct envelope *env, struct buf *why);
int envelope_record_check(const struct queue_record *rec, size_t nrcpts);   /* 0 or -1 */
void envelope_record_encode(const struct queue_record *rec, struct buf *b); /* one line */
int envelope_record_parse(char *line, size_t nrcpts, struct queue_record *rec);

#endif
