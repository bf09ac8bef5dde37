/*
 * queue_int.h - (internal to the queue's files) the
 * queue's shared structures: the queue itself, transactions, the jobs the
 * commit threads work on, spare files; and the calls between the storage
 * half (queue.c: files, transactions, records, scan, spare files,
 * open/close) and the commit half (queue_commit.c: the three commit
 * threads, the journal's use, hand-over to and from the loop).
 */
#ifndef RELAY_ROUTER_QUEUE_INT_H
#define RELAY_ROUTER_QUEUE_INT_H

#include "queue/queue.h"
#include "queue/queue_journal.h"

#include <stdbool.h>
#include <stdint.h>

#define QUEUE_MAGIC      0x51554555u
#define TXN_MAGIC        0x54584e31u
#define QFILE_MAGIC      "RELAYQ 1 "          /* magic and format version */
#define QFILE_MAGIC_LEN  9
#define QFILE_BLEN_OFF   26                   /* where the body length sits */
#define QFILE_HDR_LEN    43                   /* magic, 16 hex, ' ', 16 hex, '\n' */
#define QFILE_ENV_MAX    (4u << 20)           /* sanity bound on the envelope lines */
#define QUEUE_WBUF_SIZE  65536                /* body bytes buffered before write(2) */
#define QUEUE_SPARES     32                   /* unnamed spare files made per refill */
#define QUEUE_SPARES_LOW 16                   /* refill when fewer are left */
#define QUEUE_POOL_MAX   4096                 /* spare files kept (made or recycled) */
#define QUEUE_RECYCLE_MAX (256u << 10)        /* larger removed files are deleted */
#define QUEUE_REAP_MAX   4096                 /* removed files waiting for the reaper's unlink */
#define QUEUE_REAP_TAKE  64                   /* unlinked by the reaper per turn of its lock */
#define QUEUE_KEPT_MAX   256                  /* recycled files whose descriptor is kept for
                                                 the writer (a slot per spare number modulo this) */
#define QUEUE_AUTO_SMALL 4                    /* batches up to this sync file by file */
#define QUEUE_SYNC_OPS_MAX 32                 /* records and removals per group sync, */
#define QUEUE_SYNC_FLOW_NS 1000000000ULL      /* while new messages came this recently */
#define QUEUE_JNL_BATCH  (4u << 20)           /* journal batch: at most this many bytes */
#define QUEUE_JNL_BACKLOG 512                 /* acknowledged, not yet published: at most */
#define QUEUE_PROBE_MIN_MS 500                /* journal off: first probe after this long, */
#define QUEUE_PROBE_MAX_MS 30000              /* doubling up to this */
#define QUEUE_PROBE_BYTES (64u << 10)         /* a probe writes and syncs this much */

/*
 * Names in msg/ that are not messages: they start with '.', which a queue id
 * never does.  Every such name found at start-up is a leftover (deleted), but
 * spare files, which the start takes into its pool (QUEUE.md).
 */
#define QNAME_SPARE      ".spare-"            /* a spare file (a recycled message's) */
#define QNAME_IN         ".in-"               /* a new message's file, before its rename */
#define QNAME_MAX        (QID_MAX + 8)        /* ".in-" + a queue id, ".spare-" + a number */

enum queue_job_kind { QJOB_COMMIT, QJOB_SYNC, QJOB_RECYCLE, QJOB_PROBE };

/*
 * One unit of work for the commit threads: a message to publish, a record
 * to append and sync, a removed message to rename to .spare-N (unless the
 * loop did) and keep as a spare file or delete, or, while the journal is
 * off, a probe: does the disk take files again? then restore the journal
 * (QUEUE.md).  Records and removals (file ops) go from the loop straight to
 * the writer thread, in the order the loop issued them.
 */
struct queue_job {
	struct queue_job *next;
	enum queue_job_kind kind;
	int fd;                      /* COMMIT, SYNC: closed by the thread after the sync;
	                                COMMIT: -1 = the thread creates the file;
	                                SYNC: opened (O_APPEND) by the writer thread.
	                                RECYCLE: the kept file, opened by the thread */
	int err;                     /* 0 or RELAY_E* */
	const char *failed_call;     /* with err, set by the thread: what failed */
	int sys_errno;
	bool published;              /* renamed to msg/<qid> by the thread;
	                                PROBE: the journal is restored and on again */
	bool write_wbuf;             /* COMMIT: the thread writes txn->wbuf (the whole file) */
	bool keep;                   /* RECYCLE: the pool has room for it */
	bool renamed;                /* RECYCLE: msg/<qid> is msg/.spare-N now (by the loop, or
	                                by the writer thread) */
	bool op;                     /* SYNC, RECYCLE: a file op (q->ops, counted in ops_total) */
	bool open_counted;           /* SYNC: taken by the writer, counted in q->ops_open */
	bool qid_op;                 /* a file op that still opens or renames msg/<qid> when
	                                staged: counted in q->nops until it completes */
	bool recycled;               /* RECYCLE: checked by the thread: it goes into the pool */
	bool reaping;                /* RECYCLE: not kept, given to the reaper to delete */
	bool withheld;               /* COMMIT, acked: published, but the journal's tail could
	                                not move past it: not for the router before a restart */
	bool in_jnl;                 /* COMMIT: its record is in the journal batch being written */
	bool acked;                  /* COMMIT: journaled and synced: its callback may run now */
	uint64_t jend, jseq;         /* with acked: its journal batch's end and number */
	struct queue_job *ack_next;  /* on q->acked */
	uint64_t size;               /* COMMIT: the spare's old size; RECYCLE: the kept file's */
	uint64_t len;                /* COMMIT: the file's length (cut to it if the spare was longer);
	                                PROBE: journaled messages it wrote into msg/ */
	struct queue_job *recs;      /* RECYCLE: the records of its qid issued just before it,
	                                not written: the removal, once durable, says more
	                                (coalesced by the writer: queue_take_ops()); they
	                                complete with it */
	struct queue_txn *txn;      /* QJOB_COMMIT: the txn this job is embedded in */
	queue_sync_cb *cb;           /* QJOB_SYNC: may be NULL */
	const char *line;            /* QJOB_SYNC: the record to append (allocated with the job) */
	size_t line_len;
	void *arg;
	char qid[QID_MAX];
	char iname[QNAME_MAX];       /* COMMIT: its name in msg/ before the rename ("" = none
	                                yet: the thread links it as .in-<qid>); RECYCLE: .spare-N */
};

struct queue_list {
	struct queue_job *head;
	struct queue_job **tail;
};

struct queue_txn {
	uint32_t magic;
	struct queue *q;
	int fd;                      /* a spare file, or -1 (none yet); to the job at commit */
	uint64_t spare_size;         /* what the spare file held before (a recycled message) */
	int err;                     /* first write error, sticky */
	struct envelope env;
	uint64_t body_offset;
	uint64_t body_len;
	uint64_t written;            /* bytes already write(2)n to the file */
	char *dkim;                  /* queue_txn_prefix(): for the new queue_msg (queue_dkim_join()) */
	struct buf wbuf;             /* header, envelope and body not yet written */
	queue_commit_cb *cb;
	void *arg;
	uint64_t ack_no;             /* acknowledged from the journal: its number (loop) */
	struct queue_txn *ack_prev, *ack_next;   /* on q->ack_head while not yet published;
	                                            then on q->held_head if held (ack_next) */
	struct queue_job job;
};

/*
 * Spare files: creating an inode is the costliest step of a transaction
 * (QUEUE.md), so it is avoided: a removed message's file is kept for the
 * next one (msg/.spare-N), and when those run short unnamed files (O_TMPFILE)
 * are made ahead of time on libuv's thread pool.  begin only takes one (no
 * system call); the commit thread gives an unnamed one its .in-<qid> name
 * and renames it to msg/<qid>, in the same directory.
 */
struct queue_spare {
	int fd;                      /* -1 for a recycled file: opened by name when used
	                                (by the writer: unless q->kept has its descriptor) */
	uint64_t size;               /* bytes in it (a recycled message's), cut at commit */
	char name[QNAME_MAX];        /* msg/.spare-<n>, or "" for an unnamed file */
};

struct queue_refill {
	uv_work_t req;
	struct queue *q;
	int msgfd;
	bool named;                  /* make msg/.spare-<n> instead of unnamed files */
	size_t n;
	struct queue_spare s[QUEUE_SPARES];
};

struct queue {
	uint32_t magic;
	uv_loop_t *loop;
	char *dir;
	int lockfd, msgfd, corruptfd;
	bool named;                  /* no O_TMPFILE + linkat here: files have names */
	unsigned test_sync_delay_ms; /* RELAY_TEST_HOOKS: each group sync waits this long first */
	unsigned test_publish_delay_ms; /* RELAY_TEST_HOOKS: each publish waits this long first */
	unsigned test_record_delay_ms; /* RELAY_TEST_HOOKS: the writer waits this long before records */
#ifdef RELAY_TEST_HOOKS
	queue_test_sync_fn *test_sync_fn; /* under mtx: queue_test_set_sync_fn() */
	void *test_sync_arg;
	bool test_jnl_fail;          /* under mtx: queue_test_fail_journal() */
	bool test_reap_hold;         /* under mtx: queue_test_hold_reaper() */
#endif
	bool jnl_was_on;             /* the journal was in use at start (loop) */
	bool jnl_on;                 /* the journal is in use (else: 250 after the publish);
	                                cleared under mtx by the journal thread when an append
	                                fails, by the sync thread when a journaled message
	                                fails to publish or the tail cannot move; set again
	                                by the sync thread when a probe restores it */
	struct journal jnl;          /* head side: journal thread; tail side: sync thread */
	bool link_empty;             /* linkat(AT_EMPTY_PATH), not /proc/self/fd */
	queue_new_cb *new_cb;
	void *new_arg;
	struct queue_lasts *lasts;   /* recipients' last_* strings, shared (queue_last.c) */
	struct intern_table *sessions; /* messages' login and client: envelope_share()'s
	                                  blocks, locked (the scan thread and the loop) */

	/* Loop thread only. */
	struct queue_scanner *scanner; /* the msg/ walk on its thread, while it runs */
	uint64_t qid_ms;
	uint32_t qid_seq;
	uint64_t rnd_state;
	struct queue_list staged;    /* handed to the thread once per loop iteration */
	struct queue_list staged_ops; /* records and removals, the same way, to the writer */
	size_t nops;                 /* file ops staged that still name msg/<qid>, not completed */
	uint64_t ops_total;          /* file ops staged so far */
	uint64_t ops_done;           /* file ops completed so far (they complete in order) */
	bool staging;
	uv_idle_t idle;              /* keeps the poll from blocking while staging */
	uv_check_t check;            /* hands the staged jobs over */
	uv_async_t async;            /* the thread says: jobs done (or: exited) */
	size_t inflight;             /* jobs created and not yet completed */
	struct queue_txn *ack_head, *ack_tail;   /* acknowledged, not yet published: oldest first */
	uint64_t ack_total;          /* acknowledgements so far */
	struct queue_waiter *waiters;            /* queue_wait_acked() */
	bool jnl_off;                /* the loop saw the journal off (logged), not yet restored */
	bool probing;                /* a QJOB_PROBE is in the pipeline */
	unsigned probe_ms;           /* the next probe's delay (back-off) */
	unsigned probes;             /* failed probes in this outage */
	uint64_t restored_ms;        /* when the journal was last restored (mono) */
	uint64_t jerrors_seen;       /* journal_errors when it was last restored (loop) */
	uint64_t jerrors_restored;   /* the same, set under mtx by the probe that restored it
	                                (an append failing before the loop hears is not in it) */
	uv_timer_t probe_timer;      /* the next probe (unreferenced) */
	struct queue_txn *held_head, *held_tail; /* acknowledged from the journal, not
	                                            published or withheld: for the router
	                                            once the journal is restored (on ack_next) */
	size_t nheld;
	size_t ntxn;                 /* txns begun and not yet freed */
	struct queue_spare spares[QUEUE_POOL_MAX];
	size_t nspares;
	size_t recycling;            /* removed files on their way into the pool */
	uint64_t reap_given;         /* removed files the loop knows went to the reaper */
	uint64_t reap_seen;          /* of those, deleted (q->reaped when the loop last looked) */
	uint64_t spare_seq;
	uint64_t spares_used;
	uint64_t spares_reused;
	bool refilling;              /* a queue_refill is on the thread pool */
	bool closing;
	bool finishing;
	int nhandles;
	void (*close_done)(void *arg);
	void *close_arg;

	/* Shared with the commit threads, under mtx. */
	uv_mutex_t mtx;
	uv_cond_t cond;
	uv_cond_t write_cond;        /* the journal thread says: a batch is journaled (or: exited) */
	uv_cond_t sync_cond;         /* the writer says: a batch is written (or: exited) */
	uv_cond_t reap_cond;         /* the sync thread says: files to delete (or: exited) */
	uv_thread_t jthread, writer, thread;  /* journal, write + name, sync + publish */
	uv_thread_t reaper;          /* deletes the removed files the pool does not keep */
	uint64_t reap[QUEUE_REAP_MAX];   /* their .spare-N numbers (a ring: sync -> reaper) */
	size_t reap_head, reap_n;
	uint64_t reaped;             /* files the reaper deleted */
	struct queue_kept {          /* sync thread (recycling) -> writer: the descriptor the
	                                recycling opened, so that the writer need not open
	                                the file again (nor the recycling close it) */
		uint64_t nr;         /* msg/.spare-<nr>, in slot nr % QUEUE_KEPT_MAX */
		int fd;              /* -1: a free slot */
	} kept[QUEUE_KEPT_MAX];
	struct queue_list pending;   /* loop -> journal thread */
	struct queue_list journaled; /* journal thread -> writer */
	struct queue_list ops;       /* loop -> writer: records and removals, in issue order */
	size_t ops_open;             /* records the writer took whose descriptor the sync thread has not closed */
	struct queue_list written;   /* writer -> sync thread */
	struct queue_list done;      /* sync thread -> loop */
	struct queue_job *acked;     /* journal thread -> loop, through ack_next (LIFO) */
	uint64_t jtail, jtail_seq;   /* the journal's durable tail (sync thread -> journal thread) */
	uint64_t jhead;              /* where its next batch goes (journal thread -> loop, for
	                                queue_journal_fill) */
	bool jstuck;                 /* a journaled message failed to publish: the tail stays
	                                (sync thread only) until a probe restores the journal */
	const char *joff_call;       /* what turned the journal off (its first failure) */
	int joff_errno;
	size_t jbacklog;             /* acknowledged jobs the sync thread has not finished */
	bool stop;
	bool jnl_exited;
	bool writer_exited;
	bool exited;                 /* the sync thread (it exits last of the three) */
	bool reaper_exited;          /* the reaper (after the sync thread, its ring empty) */
	enum queue_sync_mode mode;
	struct queue_counters counters;
};


static inline void
queue_list_init(struct queue_list *l)
{
	l->head = NULL;
	l->tail = &l->head;
}

static inline void
queue_list_append(struct queue_list *l, struct queue_job *j)
{
	j->next = NULL;
	*l->tail = j;
	l->tail = &j->next;
}

static inline void
queue_list_concat(struct queue_list *dst, struct queue_list *src)
{
	if (src->head == NULL)
		return;
	*dst->tail = src->head;
	dst->tail = src->tail;
	queue_list_init(src);
}

/* queue.c, for queue_commit.c */
void queue_log_errno(const char *qid, const char *op, int e);
/* A message's DKIM fields and their ids in one allocation (struct queue_msg's dkim). */
char *queue_dkim_join(const char *fields, const char *ids);
int queue_errno_err(int e);
int queue_file_create(struct queue *q, const char *qid, char iname[QNAME_MAX]);
int queue_link(struct queue *q, int fd, const char *name);
void queue_maybe_finish(struct queue *q);
void queue_spare_put(struct queue *q, int fd, const char *name, uint64_t size);
void queue_txn_free(struct queue_txn *t);
/* A message of nrcpts recipients (rcpt[] zeroed; env not set). */
struct queue_msg *queue_msg_new(const char *qid, size_t nrcpts);

/* queue_last.c: a recipient's last_* strings, one block shared by the
 * recipients whose four are equal (looked up in lasts; NULL: not shared). */
struct queue_lasts;
struct queue_lasts *queue_lasts_new(void);
void queue_lasts_free(struct queue_lasts *lasts);
void queue_rcpt_set_last(struct queue_lasts *lasts, struct queue_rcpt *r, const char *host,
    const char *ip, const char *status, const char *reply);
void queue_rcpt_free_last(struct queue_rcpt *r);

/* queue_image.c: the txn's whole-file buffer b becomes an image (b is
 * emptied), or NULL (over the bound): b is left as it was. */
struct queue_image *queue_image_take(struct buf *b, uint64_t body_offset, uint64_t body_len);

/* queue_commit.c, for queue.c */
void queue_probe_cb(uv_timer_t *h);
void queue_held_free(struct queue *q);
void queue_jnl_main(void *arg);
void queue_writer_main(void *arg);
void queue_thread_main(void *arg);
void queue_reaper_main(void *arg);
void queue_update_ref(struct queue *q);
void queue_handoff(struct queue *q);
void queue_idle_cb(uv_idle_t *h);
void queue_check_cb(uv_check_t *h);
void queue_async_cb(uv_async_t *h);
void queue_stage(struct queue *q, struct queue_job *j);
void queue_stage_op(struct queue *q, struct queue_job *j, bool qid_op);
void queue_post_done(struct queue *q, struct queue_job *j);
void queue_kept_close(struct queue *q, const char *iname);
int queue_journal_open(struct queue *q, int dirfd, struct buf *err);

/* The names of a directory, sorted by name (queue_dir.c); any thread. */
struct queue_dirent {
	char *name;
	ino_t ino;
};
struct queue_dirent *queue_read_dir(int dirfd, size_t *count);
void queue_free_dir(struct queue_dirent *v, size_t n);
/* Done with v[0..done) of a list of n: their memory goes back (names too). */
void queue_dir_release(struct queue_dirent *v, size_t n, size_t done);
/* The scan, name by name (queue.c), and its thread (queue_scan.c). */
#define QUEUE_SCAN_OPS_MAX 8192      /* records and removals not yet written: beyond, the
                                        scan hands no message over until they are */
int queue_scan_entry(struct queue *q, const char *name, struct queue_msg **mp);
void queue_scan_log(struct queue *q, size_t loaded, size_t corrupt);
void queue_scanner_made(struct queue_scanner *sc, const char *qid);

#endif
