/*
 * router_queue.c - queue STORAGE: the message files under queue_dir, the
 * transactions that write them, and the commit thread that makes them
 * durable in groups.  router/QUEUE.md describes the format, the group
 * commit and what a crash leaves behind.
 *
 * Owns: queue_dir (queue.lock, incoming/, msg/, corrupt/), the commit thread
 * with its mutex, cond and the uv_async_t/uv_check_t/uv_idle_t that talk to
 * it, every router_txn until its callback has returned, the file
 * descriptors of jobs in flight (the thread closes them after the sync), and
 * the spare incoming files (made on libuv's thread pool).
 *
 * Threads: everything here runs on the loop thread except
 * queue_thread_main() and queue_sync_batch(), which touch only the jobs they
 * took from q->pending, the directory fds and, under q->mtx, the lists and
 * counters, and queue_refill_work(), which touches only its own request.
 * Neither logs, allocates or calls back.
 *
 * Must never: make the loop thread wait for a disk sync; let a file appear
 * in msg/ before its content is durable; call a commit callback before the
 * rename into msg/ is durable; call a callback from inside the function that
 * was given it (completions always come from the async handle).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE              /* syncfs, sync_file_range, renameat2 */
#endif

#include "router/router_queue.h"
#include "common/log.h"
#include "common/util.h"

#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QUEUE_MAGIC      0x51554555u
#define TXN_MAGIC        0x54584e31u
#define QFILE_MAGIC      "RELAYQ 1 "          /* magic and format version */
#define QFILE_MAGIC_LEN  9
#define QFILE_BLEN_OFF   26                   /* where the body length sits */
#define QFILE_HDR_LEN    43                   /* magic, 16 hex, ' ', 16 hex, '\n' */
#define QFILE_ENV_MAX    (4u << 20)           /* sanity bound on the envelope lines */
#define QUEUE_WBUF_SIZE  65536                /* body bytes buffered before write(2) */
#define QUEUE_SPARES     32                   /* spare incoming files made per refill */
#define QUEUE_AUTO_SMALL 4                    /* batches up to this sync file by file */

enum queue_job_kind { QJOB_COMMIT, QJOB_SYNC };

/* One unit of work for the commit thread: a message to publish or a file to sync. */
struct queue_job {
	struct queue_job *next;
	enum queue_job_kind kind;
	int fd;                      /* closed by the thread after the sync; -1: it creates
	                                the file and writes txn->wbuf first */
	int err;                     /* 0 or RELAY_E* */
	const char *failed_call;     /* with err, set by the thread: what failed */
	int sys_errno;
	bool published;              /* renamed into msg/ by the thread */
	struct router_txn *txn;      /* QJOB_COMMIT: the txn this job is embedded in */
	queue_sync_cb *cb;           /* QJOB_SYNC: may be NULL */
	void *arg;
	char qid[QID_MAX];
	char iname[QID_MAX];         /* QJOB_COMMIT: its name in incoming/ (a spare's, or qid) */
};

struct queue_list {
	struct queue_job *head;
	struct queue_job **tail;
};

struct router_txn {
	uint32_t magic;
	struct queue *q;
	int fd;                      /* incoming/<qid> or -1 (none yet); to the job at commit */
	int err;                     /* first write error, sticky */
	struct envelope env;
	uint64_t body_offset;
	uint64_t body_len;
	uint64_t written;            /* bytes already write(2)n to the file */
	struct buf wbuf;             /* header, envelope and body not yet written */
	router_commit_cb *cb;
	void *arg;
	struct queue_job job;
};

/*
 * Spare files: creating an inode is the costliest step of a transaction
 * (QUEUE.md), so it is done ahead of time on libuv's thread pool; begin
 * only takes one (no system call), and the commit thread renames it
 * straight to msg/<qid>.
 */
struct queue_spare {
	int fd;
	char name[QID_MAX];          /* incoming/spare-<n> */
};

struct queue_refill {
	uv_work_t req;
	struct queue *q;
	size_t n;
	struct queue_spare s[QUEUE_SPARES];
};

struct queue {
	uint32_t magic;
	uv_loop_t *loop;
	char *dir;
	int lockfd, msgfd, incfd, corruptfd;
	queue_new_cb *new_cb;
	void *new_arg;

	/* Loop thread only. */
	uint64_t qid_ms;
	uint32_t qid_seq;
	uint64_t rnd_state;
	struct queue_list staged;    /* handed to the thread once per loop iteration */
	bool staging;
	uv_idle_t idle;              /* keeps the poll from blocking while staging */
	uv_check_t check;            /* hands the staged jobs over */
	uv_async_t async;            /* the thread says: jobs done (or: exited) */
	size_t inflight;             /* jobs created and not yet completed */
	size_t ntxn;                 /* txns begun and not yet freed */
	struct queue_spare spares[2 * QUEUE_SPARES];
	size_t nspares;
	uint64_t spare_seq;
	uint64_t spares_used;
	bool refilling;              /* a queue_refill is on the thread pool */
	bool closing;
	bool finishing;
	int nhandles;
	void (*close_done)(void *arg);
	void *close_arg;

	/* Shared with the commit thread, under mtx. */
	uv_mutex_t mtx;
	uv_cond_t cond;
	uv_thread_t thread;
	struct queue_list pending;
	struct queue_list done;
	bool stop;
	bool exited;
	enum queue_sync_mode mode;
	struct queue_counters counters;
};

static void queue_maybe_finish(struct queue *q);
static enum queue_sync_mode queue_default_mode(void);

/*
 * Small helpers.
 */

static void
queue_list_init(struct queue_list *l)
{
	l->head = NULL;
	l->tail = &l->head;
}

static void
queue_list_append(struct queue_list *l, struct queue_job *j)
{
	j->next = NULL;
	*l->tail = j;
	l->tail = &j->next;
}

static void
queue_list_concat(struct queue_list *dst, struct queue_list *src)
{
	if (src->head == NULL)
		return;
	*dst->tail = src->head;
	dst->tail = src->tail;
	queue_list_init(src);
}

static int
queue_write_full(int fd, const char *p, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(fd, p, len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int
queue_pread_full(int fd, char *p, size_t len, uint64_t off)
{
	ssize_t n;

	while (len > 0) {
		n = pread(fd, p, len, (off_t)off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;       /* file shrank under us */
			return -1;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static void
queue_hex16(char out[16], uint64_t v)
{
	static const char hex[] = "0123456789abcdef";
	int i;

	for (i = 15; i >= 0; i--) {
		out[i] = hex[v & 15];
		v >>= 4;
	}
}

static int
queue_parse_hex16(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 16; i++) {
		v <<= 4;
		if (s[i] >= '0' && s[i] <= '9')
			v |= (uint64_t)(s[i] - '0');
		else if (s[i] >= 'a' && s[i] <= 'f')
			v |= (uint64_t)(s[i] - 'a' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

static void
queue_log_errno(const char *qid, const char *op, int e)
{
	struct log_line l;

	log_begin(&l, LOG_ERR, "queue_error");
	log_kv(&l, "qid", qid);
	log_kv(&l, "op", op);
	log_kv(&l, "error", strerror(e));
	log_end(&l);
}

/*
 * Queue ids: 10 base32 digits of the ms clock, 4 of a per-process sequence
 * (strictly increasing within the process), 6 of random bits (another
 * process, or this one after a restart with the clock set back).  The
 * alphabet is in ASCII order, so ids sort by time.
 */

static const char queue_b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

void
queue_qid_make(char out[QID_MAX], uint64_t ms, uint32_t seq, uint32_t rnd)
{
	int i;

	for (i = 9; i >= 0; i--, ms >>= 5)
		out[i] = queue_b32[ms & 31];
	for (i = 13; i >= 10; i--, seq >>= 5)
		out[i] = queue_b32[seq & 31];
	for (i = 19; i >= 14; i--, rnd >>= 5)
		out[i] = queue_b32[rnd & 31];
	out[20] = '\0';
}

int
queue_qid_valid(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++)
		if (i >= QID_MAX - 1 || !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z')))
			return 0;
	return i > 0;
}

static uint32_t
queue_random(struct queue *q)
{
	/* xorshift64*, seeded from getrandom() at open */
	q->rnd_state ^= q->rnd_state >> 12;
	q->rnd_state ^= q->rnd_state << 25;
	q->rnd_state ^= q->rnd_state >> 27;
	return (uint32_t)((q->rnd_state * 0x2545F4914F6CDD1DULL) >> 32);
}

static void
queue_qid_next(struct queue *q, char out[QID_MAX])
{
	uint64_t now = util_now_ms();

	if (now > q->qid_ms) {
		q->qid_ms = now;
		q->qid_seq = 0;
	} else if (++q->qid_seq >= (1u << 20)) {
		q->qid_ms++;
		q->qid_seq = 0;
	}
	queue_qid_make(out, q->qid_ms, q->qid_seq, queue_random(q));
}

/*
 * The commit thread.  It takes everything pending as one batch, makes the
 * data durable, publishes new messages into msg/, makes the renames durable
 * with one fsync of msg/, and hands the batch back to the loop.
 */

static void
queue_job_fail(struct queue_job *j, const char *call, int e)
{
	if (j->err != 0)
		return;
	j->err = RELAY_EIO;
	j->failed_call = call;
	j->sys_errno = e;
}

/* Create incoming/<name> (no spare was left); any thread. */
static int
queue_incoming_create(struct queue *q, const char *name)
{
	return openat(q->incfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
}

/* Move incoming/<iname> to msg/<qid>, never replacing an existing file. */
static int
queue_publish(struct queue *q, const char *iname, const char *qid)
{
	if (renameat2(q->incfd, iname, q->msgfd, qid, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	/* the file system has no RENAME_NOREPLACE: link(2) never replaces either */
	if (linkat(q->incfd, iname, q->msgfd, qid, 0) == -1)
		return -1;
	(void)unlinkat(q->incfd, iname, 0);
	return 0;
}

static void
queue_sync_batch(struct queue *q, struct queue_list *batch, enum queue_sync_mode mode,
    struct queue_counters *c)
{
	struct queue_job *j;
	uint64_t t0 = uv_hrtime(), t1;
	int e, n = 0, renamed = 0;

	/* messages that found no spare file: create and write them now */
	for (j = batch->head; j != NULL; j = j->next) {
		if (j->kind != QJOB_COMMIT || j->err != 0 || j->fd != -1)
			continue;
		c->created_late++;
		if ((j->fd = queue_incoming_create(q, j->iname)) == -1)
			queue_job_fail(j, "create(incoming/)", errno);
		else if (queue_write_full(j->fd, j->txn->wbuf.data, j->txn->wbuf.len) == -1)
			queue_job_fail(j, "write", errno);
	}
	t1 = uv_hrtime();
	c->create_ns += t1 - t0;
	t0 = t1;
	if (mode == QUEUE_SYNC_AUTO) {
		/* syncfs() costs the same for 1 file or 100 (and writes others' dirt) */
		for (j = batch->head; j != NULL; j = j->next)
			n++;
		mode = n <= QUEUE_AUTO_SMALL ? QUEUE_SYNC_RANGE : QUEUE_SYNC_SYNCFS;
	}
	switch (mode) {
	case QUEUE_SYNC_RANGE:
		for (j = batch->head; j != NULL; j = j->next)
			if (j->err == 0)
				(void)sync_file_range(j->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
		/* FALLTHROUGH */
	case QUEUE_SYNC_FDATASYNC:
		for (j = batch->head; j != NULL; j = j->next)
			if (j->err == 0 && fdatasync(j->fd) == -1)
				queue_job_fail(j, "fdatasync", errno);
		break;
	case QUEUE_SYNC_SYNCFS:
		if (syncfs(q->msgfd) == -1) {
			e = errno;
			for (j = batch->head; j != NULL; j = j->next)
				queue_job_fail(j, "syncfs", e);
			break;
		}
		/*
		 * syncfs() reports a writeback error once, to whichever batch
		 * asks first.  Each file's own error (its fd samples it at open)
		 * is checked here: waiting on clean pages costs no I/O.
		 */
		for (j = batch->head; j != NULL; j = j->next)
			if (j->fd >= 0 && sync_file_range(j->fd, 0, 0, SYNC_FILE_RANGE_WAIT_AFTER) == -1)
				queue_job_fail(j, "sync_file_range", errno);
		break;
	default:
		fatalx("%s: bad sync mode %d", __func__, (int)mode);
	}
	t1 = uv_hrtime();
	c->sync_ns += t1 - t0;

	for (j = batch->head; j != NULL; j = j->next) {
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
	if (renamed > 0 && fsync(q->msgfd) == -1) {
		e = errno;
		for (j = batch->head; j != NULL; j = j->next) {
			if (j->published) {
				queue_job_fail(j, "fsync(msg/)", e);
				(void)unlinkat(q->msgfd, j->qid, 0);
			}
		}
	}
	c->publish_ns += uv_hrtime() - t1;
}

static void
queue_thread_main(void *arg)
{
	struct queue *q = arg;
	struct queue_list batch;
	struct queue_job *j;
	enum queue_sync_mode mode;
	struct queue_counters c;

	uv_mutex_lock(&q->mtx);
	for (;;) {
		while (q->pending.head == NULL && !q->stop)
			uv_cond_wait(&q->cond, &q->mtx);
		if (q->pending.head == NULL)
			break;
		batch = q->pending;
		queue_list_init(&q->pending);
		mode = q->mode;
		uv_mutex_unlock(&q->mtx);

		memset(&c, 0, sizeof(c));
		queue_sync_batch(q, &batch, mode, &c);

		uv_mutex_lock(&q->mtx);
		q->counters.batches++;
		q->counters.create_ns += c.create_ns;
		q->counters.sync_ns += c.sync_ns;
		q->counters.publish_ns += c.publish_ns;
		q->counters.created_late += c.created_late;
		for (j = batch.head; j != NULL; j = j->next) {
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
	uv_mutex_unlock(&q->mtx);
	uv_async_send(&q->async);
}

/*
 * Loop side of the thread: staging, hand-over, completion.
 */

static void
queue_update_ref(struct queue *q)
{
	/* The loop stays alive while the thread has work of ours, not otherwise. */
	if (q->inflight > 0 || q->closing)
		uv_ref((uv_handle_t *)&q->async);
	else
		uv_unref((uv_handle_t *)&q->async);
}

static void
queue_idle_cb(uv_idle_t *h)
{
	(void)h;
}

/* End of the loop iteration: everything staged goes to the thread at once. */
static void
queue_handoff(struct queue *q)
{
	if (q->staging) {
		uv_idle_stop(&q->idle);
		uv_check_stop(&q->check);
		q->staging = false;
	}
	if (q->staged.head == NULL)
		return;
	uv_mutex_lock(&q->mtx);
	queue_list_concat(&q->pending, &q->staged);
	uv_cond_signal(&q->cond);
	uv_mutex_unlock(&q->mtx);
}

static void
queue_check_cb(uv_check_t *h)
{
	struct queue *q = h->data;

	if (q->magic != QUEUE_MAGIC)
		fatalx("%s: bad queue", __func__);
	queue_handoff(q);
}

static void
queue_stage(struct queue *q, struct queue_job *j)
{
	queue_list_append(&q->staged, j);
	q->inflight++;
	queue_update_ref(q);
	if (!q->staging) {
		q->staging = true;
		uv_idle_start(&q->idle, queue_idle_cb);
		uv_check_start(&q->check, queue_check_cb);
	}
}

/* A job that failed on the loop thread: completed from the async callback too. */
static void
queue_post_done(struct queue *q, struct queue_job *j)
{
	q->inflight++;
	queue_update_ref(q);
	uv_mutex_lock(&q->mtx);
	queue_list_append(&q->done, j);
	uv_mutex_unlock(&q->mtx);
	uv_async_send(&q->async);
}

static void
queue_txn_free(struct router_txn *t)
{
	struct queue *q = t->q;

	envelope_free(&t->env);
	buf_free(&t->wbuf);
	if (t->fd >= 0)
		close(t->fd);
	t->magic = 0;
	free(t);
	q->ntxn--;
	queue_maybe_finish(q);
}

static struct queue_msg *
queue_msg_new(struct queue *q, const char *qid)
{
	struct queue_msg *m = xcalloc(1, sizeof(*m));
	struct buf path = BUF_INIT;

	snprintf(m->qid, sizeof(m->qid), "%s", qid);
	buf_printf(&path, "%s/msg/%s", q->dir, qid);
	m->path = buf_steal(&path);
	return m;
}

static void
queue_complete(struct queue *q, struct queue_job *j)
{
	struct router_txn *t;
	struct queue_msg *m;

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
	if (j->err != 0) {
		(void)unlinkat(q->incfd, j->iname, 0);
		t->cb(t->arg, j->err, NULL);
	} else {
		m = queue_msg_new(q, j->qid);
		m->env = t->env;
		memset(&t->env, 0, sizeof(t->env));
		m->rcpt = xcalloc(m->env.nrcpts, sizeof(*m->rcpt));
		m->body_offset = t->body_offset;
		m->body_len = t->body_len;
		if (q->new_cb != NULL)
			q->new_cb(q->new_arg, m);
		else
			queue_msg_free(m);
		t->cb(t->arg, 0, j->qid);
	}
	queue_txn_free(t);
}

static void
queue_async_cb(uv_async_t *h)
{
	struct queue *q = h->data;
	struct queue_list done;
	struct queue_job *j, *next;

	if (q->magic != QUEUE_MAGIC)
		fatalx("%s: bad queue", __func__);
	/* callbacks may post more (a commit refused while closing): drain until empty */
	for (;;) {
		uv_mutex_lock(&q->mtx);
		done = q->done;
		queue_list_init(&q->done);
		uv_mutex_unlock(&q->mtx);
		if (done.head == NULL)
			break;
		for (j = done.head; j != NULL; j = next) {
			next = j->next;
			q->inflight--;
			queue_complete(q, j);
		}
	}
	queue_update_ref(q);
	queue_maybe_finish(q);
}

/*
 * Spare files.
 */

static void
queue_refill_work(uv_work_t *req)
{
	struct queue_refill *w = req->data;
	size_t i;

	for (i = 0; i < w->n; i++)
		w->s[i].fd = openat(w->q->incfd, w->s[i].name,
		    O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
}

static void
queue_refill_done(uv_work_t *req, int status)
{
	struct queue_refill *w = req->data;
	struct queue *q = w->q;
	size_t i;

	q->refilling = false;
	for (i = 0; i < w->n; i++) {
		if (status != 0 || w->s[i].fd == -1)
			continue;
		if (q->closing || q->nspares == RELAY_ARRAY_LEN(q->spares)) {
			close(w->s[i].fd);
			(void)unlinkat(q->incfd, w->s[i].name, 0);
		} else
			q->spares[q->nspares++] = w->s[i];
	}
	free(w);
	queue_maybe_finish(q);
}

/* Below half a refill left: make more (one refill at a time). */
static void
queue_refill(struct queue *q)
{
	struct queue_refill *w;
	size_t i;

	if (q->refilling || q->closing || q->nspares >= QUEUE_SPARES / 2)
		return;
	w = xcalloc(1, sizeof(*w));
	w->req.data = w;
	w->q = q;
	w->n = QUEUE_SPARES;
	for (i = 0; i < w->n; i++)
		snprintf(w->s[i].name, sizeof(w->s[i].name), "spare-%llu",
		    (unsigned long long)q->spare_seq++);
	if (uv_queue_work(q->loop, &w->req, queue_refill_work, queue_refill_done) != 0) {
		free(w);
		return;
	}
	q->refilling = true;
}

/*
 * A spare file's descriptor, its incoming/ name copied to name; -1 if none
 * is left (the file is then created when first needed: by a flush on the
 * loop, or by the commit thread).
 */
static int
queue_spare_take(struct queue *q, char name[QID_MAX])
{
	struct queue_spare *sp;
	int fd = -1;

	if (q->nspares > 0) {
		sp = &q->spares[--q->nspares];
		memcpy(name, sp->name, QID_MAX);
		fd = sp->fd;
		q->spares_used++;
	}
	queue_refill(q);
	return fd;
}

static void
queue_spares_free(struct queue *q)
{
	while (q->nspares > 0) {
		q->nspares--;
		close(q->spares[q->nspares].fd);
		(void)unlinkat(q->incfd, q->spares[q->nspares].name, 0);
	}
}

/*
 * Opening and closing.
 */

static int
queue_open_subdir(int dirfd, const char *name, int *fd)
{
	if (mkdirat(dirfd, name, 0700) == -1 && errno != EEXIST)
		return -1;
	*fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return *fd == -1 ? -1 : 0;
}

static int
queue_cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
queue_free_names(char **names, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* Names in dirfd other than "." and "..", sorted (ids sort by time). */
static char **
queue_list_dir(int dirfd, size_t *count)
{
	DIR *d;
	struct dirent *de;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int fd;

	*count = 0;
	if ((fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return NULL;
	if ((d = fdopendir(fd)) == NULL) {
		close(fd);
		return NULL;
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			names = xrealloc(names, cap * sizeof(*names));
		}
		names[n++] = xstrdup(de->d_name);
	}
	closedir(d);
	if (n > 0)
		qsort(names, n, sizeof(*names), queue_cmp_names);
	*count = n;
	return names != NULL ? names : xcalloc(1, sizeof(*names));
}

static int
queue_cmp_ino(const void *a, const void *b)
{
	ino_t x = *(const ino_t *)a, y = *(const ino_t *)b;

	return x < y ? -1 : x > y;
}

/* The sorted inode numbers of msg/ (from readdir: no stat per file). */
static ino_t *
queue_msg_inodes(struct queue *q, size_t *count)
{
	struct dirent *de;
	ino_t *v = NULL;
	size_t n = 0, cap = 0;
	DIR *d;
	int fd;

	*count = 0;
	if ((fd = openat(q->msgfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return NULL;
	if ((d = fdopendir(fd)) == NULL) {
		close(fd);
		return NULL;
	}
	while ((de = readdir(d)) != NULL) {
		if (n == cap) {
			cap = cap ? cap * 2 : 256;
			v = xrealloc(v, cap * sizeof(*v));
		}
		v[n++] = de->d_ino;
	}
	closedir(d);
	qsort(v, n, sizeof(*v), queue_cmp_ino);
	*count = n;
	return v;
}

/*
 * Remove what transactions that never committed left in incoming/ (and
 * spare files).  One case is not a leftover: a publish the crash cut in
 * half (the link(2) fallback, or a file system without a journal that wrote
 * one directory and not the other) leaves the inode in msg/ too.  If its
 * link count says 1, unlinking the incoming/ name would free the queued
 * message: keep it and say so.
 */
static void
queue_clean_incoming(struct queue *q)
{
	struct stat st;
	const char *action;
	char **names;
	ino_t *inos = NULL;
	size_t i, n, ninos = 0;

	if ((names = queue_list_dir(q->incfd, &n)) == NULL) {
		queue_log_errno(NULL, "opendir(incoming/)", errno);
		return;
	}
	if (n > 0)
		inos = queue_msg_inodes(q, &ninos);
	for (i = 0; i < n; i++) {
		action = "removed";
		if (fstatat(q->incfd, names[i], &st, AT_SYMLINK_NOFOLLOW) == 0 && inos != NULL &&
		    bsearch(&st.st_ino, inos, ninos, sizeof(*inos), queue_cmp_ino) != NULL) {
			if (st.st_nlink < 2) {
				log_event(LOG_ERR, "queue_incomplete", "qid", names[i], "action",
				    "kept (also in msg/ with link count 1: run fsck)", NULL);
				continue;
			}
			action = "removed (published)";
		}
		if (unlinkat(q->incfd, names[i], 0) == -1)
			queue_log_errno(names[i], "unlink(incoming/)", errno);
		else
			log_event(LOG_INFO, "queue_incomplete", "qid", names[i], "action", action, NULL);
	}
	free(inos);
	queue_free_names(names, n);
}

static void
queue_close_fds(struct queue *q)
{
	if (q->msgfd >= 0)
		close(q->msgfd);
	if (q->incfd >= 0)
		close(q->incfd);
	if (q->corruptfd >= 0)
		close(q->corruptfd);
	if (q->lockfd >= 0)
		close(q->lockfd);            /* releases the flock */
	q->msgfd = q->incfd = q->corruptfd = q->lockfd = -1;
}

int
queue_open(uv_loop_t *loop, const char *dir, struct queue **out, struct buf *err)
{
	struct queue *q;
	const char *what = NULL;
	int dirfd = -1, e;

	q = xcalloc(1, sizeof(*q));
	q->magic = QUEUE_MAGIC;
	q->loop = loop;
	q->dir = xstrdup(dir);
	q->lockfd = q->msgfd = q->incfd = q->corruptfd = -1;
	q->mode = queue_default_mode();
	queue_list_init(&q->staged);
	queue_list_init(&q->pending);
	queue_list_init(&q->done);

	if (mkdir(dir, 0700) == -1 && errno != EEXIST)
		what = "mkdir";
	else if ((dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		what = "open";
	else if ((q->lockfd = openat(dirfd, "queue.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600)) == -1)
		what = "open queue.lock";
	else if (flock(q->lockfd, LOCK_EX | LOCK_NB) == -1)
		what = errno == EWOULDBLOCK ? "lock (another relayd uses it)" : "flock queue.lock";
	else if (queue_open_subdir(dirfd, "incoming", &q->incfd) == -1)
		what = "incoming/";
	else if (queue_open_subdir(dirfd, "msg", &q->msgfd) == -1)
		what = "msg/";
	else if (queue_open_subdir(dirfd, "corrupt", &q->corruptfd) == -1)
		what = "corrupt/";
	else if (fsync(dirfd) == -1)         /* the subdirectories themselves are durable */
		what = "fsync";
	if (what != NULL) {
		e = errno;
		buf_printf(err, "queue %s: %s: %s", dir, what, strerror(e));
		if (dirfd >= 0)
			close(dirfd);
		queue_close_fds(q);
		free(q->dir);
		free(q);
		return RELAY_EIO;
	}
	close(dirfd);

	if (getrandom(&q->rnd_state, sizeof(q->rnd_state), GRND_NONBLOCK) != sizeof(q->rnd_state))
		q->rnd_state = util_now_ms() ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)q;
	q->rnd_state |= 1;
	queue_clean_incoming(q);

	if (uv_mutex_init(&q->mtx) != 0 || uv_cond_init(&q->cond) != 0)
		fatalx("%s: mutex/cond init failed", __func__);
	if (uv_thread_create(&q->thread, queue_thread_main, q) != 0)
		fatalx("%s: cannot start the commit thread", __func__);
	if (uv_async_init(loop, &q->async, queue_async_cb) != 0 ||
	    uv_check_init(loop, &q->check) != 0 || uv_idle_init(loop, &q->idle) != 0)
		fatalx("%s: handle init failed", __func__);
	q->async.data = q->check.data = q->idle.data = q;
	q->nhandles = 3;
	queue_update_ref(q);
	queue_refill(q);
	*out = q;
	return 0;
}

void
queue_set_new_cb(struct queue *q, queue_new_cb *cb, void *arg)
{
	q->new_cb = cb;
	q->new_arg = arg;
}

/*
 * syncfs() for batches where it pays, but only where it reports writeback
 * errors (Linux 5.8 and later); else sync_file_range() + fdatasync() per
 * file.  QUEUE.md has the measurements.
 */
static enum queue_sync_mode
queue_default_mode(void)
{
	struct utsname u;
	int major = 0, minor = 0;

	if (uname(&u) == 0 && sscanf(u.release, "%d.%d", &major, &minor) == 2 &&
	    (major > 5 || (major == 5 && minor >= 8)))
		return QUEUE_SYNC_AUTO;
	return QUEUE_SYNC_RANGE;
}

void
queue_set_sync_mode(struct queue *q, enum queue_sync_mode mode)
{
	if (mode == QUEUE_SYNC_DEFAULT)
		mode = queue_default_mode();
	uv_mutex_lock(&q->mtx);
	q->mode = mode;
	uv_mutex_unlock(&q->mtx);
}

void
queue_get_counters(struct queue *q, struct queue_counters *c)
{
	uv_mutex_lock(&q->mtx);
	*c = q->counters;
	uv_mutex_unlock(&q->mtx);
	c->spares_used = q->spares_used;
}

static void
queue_handle_closed(uv_handle_t *h)
{
	struct queue *q = h->data;
	void (*done)(void *);
	void *arg;

	if (--q->nhandles > 0)
		return;
	uv_mutex_destroy(&q->mtx);
	uv_cond_destroy(&q->cond);
	queue_close_fds(q);
	done = q->close_done;
	arg = q->close_arg;
	free(q->dir);
	q->magic = 0;
	free(q);
	if (done != NULL)
		done(arg);
}

/* Once closing, the thread gone, every job completed and every txn ended: close. */
static void
queue_maybe_finish(struct queue *q)
{
	bool exited;

	if (!q->closing || q->finishing || q->ntxn > 0 || q->inflight > 0 || q->refilling)
		return;
	uv_mutex_lock(&q->mtx);
	exited = q->exited;
	uv_mutex_unlock(&q->mtx);
	if (!exited)
		return;
	q->finishing = true;
	uv_thread_join(&q->thread);          /* it has returned or is returning */
	queue_spares_free(q);
	uv_close((uv_handle_t *)&q->idle, queue_handle_closed);
	uv_close((uv_handle_t *)&q->check, queue_handle_closed);
	uv_close((uv_handle_t *)&q->async, queue_handle_closed);
}

/*
 * Commits and record syncs in flight are finished (their callbacks run);
 * later commits fail with RELAY_ECLOSED.  q is freed, then done(arg) is
 * called, once every txn begun has been committed or aborted.
 */
void
queue_close(struct queue *q, void (*done)(void *arg), void *arg)
{
	if (q->magic != QUEUE_MAGIC || q->closing)
		fatalx("%s: bad or closing queue", __func__);
	q->closing = true;
	q->close_done = done;
	q->close_arg = arg;
	queue_handoff(q);
	uv_mutex_lock(&q->mtx);
	q->stop = true;
	uv_cond_signal(&q->cond);
	uv_mutex_unlock(&q->mtx);
	queue_update_ref(q);
}

/*
 * Transactions.
 */

int
queue_txn_begin(struct queue *q, const struct envelope *env, struct router_txn **out)
{
	struct router_txn *t;
	char hex[16];
	size_t i;

	if (q->magic != QUEUE_MAGIC)
		fatalx("%s: bad queue", __func__);
	if (q->closing)
		return RELAY_ECLOSED;
	if (env->nrcpts == 0 || env->sender == NULL)
		return RELAY_EINVAL;
	for (i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].addr == NULL)
			return RELAY_EINVAL;

	t = xcalloc(1, sizeof(*t));
	t->magic = TXN_MAGIC;
	t->q = q;
	t->fd = -1;
	t->job.fd = -1;
	queue_qid_next(q, t->job.qid);
	if ((t->fd = queue_spare_take(q, t->job.iname)) == -1)
		memcpy(t->job.iname, t->job.qid, QID_MAX);
	envelope_copy(&t->env, env);
	t->env.size = 0;

	/* header with the body length still unknown, then the envelope lines */
	buf_puts(&t->wbuf, QFILE_MAGIC "0000000000000000 ????????????????\n");
	envelope_encode(&t->env, &t->wbuf);
	buf_puts(&t->wbuf, ".\n");
	t->body_offset = t->wbuf.len;
	queue_hex16(hex, t->body_offset);
	memcpy(t->wbuf.data + QFILE_MAGIC_LEN, hex, sizeof(hex));
	q->ntxn++;
	*out = t;
	return 0;
}

const char *
router_txn_qid(const struct router_txn *t)
{
	return t->job.qid;
}

static int
queue_txn_flush(struct router_txn *t)
{
	if (t->err != 0 || t->wbuf.len == 0)
		return t->err;
	if (t->fd == -1 && (t->fd = queue_incoming_create(t->q, t->job.iname)) == -1) {
		queue_log_errno(t->job.qid, "create(incoming/)", errno);
		t->err = RELAY_EIO;
		return t->err;
	}
	if (queue_write_full(t->fd, t->wbuf.data, t->wbuf.len) == -1) {
		queue_log_errno(t->job.qid, "write", errno);
		t->err = RELAY_EIO;
		return t->err;
	}
	t->written += t->wbuf.len;
	buf_reset(&t->wbuf);
	return 0;
}

int
router_txn_write(struct router_txn *t, const void *p, size_t len)
{
	if (t->magic != TXN_MAGIC)
		fatalx("%s: bad txn", __func__);
	if (t->err != 0)
		return t->err;
	buf_append(&t->wbuf, p, len);
	t->body_len += len;
	if (t->wbuf.len >= QUEUE_WBUF_SIZE)
		return queue_txn_flush(t);
	return 0;
}

void
router_txn_commit(struct router_txn *t, router_commit_cb *cb, void *arg)
{
	struct queue *q = t->q;
	char hex[16];
	ssize_t n;

	if (t->magic != TXN_MAGIC || t->cb != NULL || cb == NULL)
		fatalx("%s: bad txn or no callback", __func__);
	t->cb = cb;
	t->arg = arg;
	t->env.size = t->body_len;
	queue_hex16(hex, t->body_len);
	if (t->err == 0 && q->closing)
		t->err = RELAY_ECLOSED;
	if (t->err == 0 && t->written == 0) {
		/*
		 * The header is still in memory: the whole file goes in one
		 * write, by the commit thread if there is no file yet.
		 */
		memcpy(t->wbuf.data + QFILE_BLEN_OFF, hex, sizeof(hex));
		if (t->fd >= 0)
			(void)queue_txn_flush(t);
	} else if (t->err == 0 && queue_txn_flush(t) == 0) {
		do
			n = pwrite(t->fd, hex, sizeof(hex), QFILE_BLEN_OFF);
		while (n == -1 && errno == EINTR);
		if (n != (ssize_t)sizeof(hex)) {
			queue_log_errno(t->job.qid, "pwrite", n == -1 ? errno : EIO);
			t->err = RELAY_EIO;
		}
	}
	if (t->fd >= 0)
		buf_free(&t->wbuf);

	t->job.kind = QJOB_COMMIT;
	t->job.txn = t;
	t->job.fd = t->fd;                   /* the thread syncs and closes it */
	t->fd = -1;
	t->job.err = t->err;
	if (t->job.err != 0)
		queue_post_done(q, &t->job);
	else
		queue_stage(q, &t->job);
}

void
router_txn_abort(struct router_txn *t)
{
	if (t->magic != TXN_MAGIC || t->cb != NULL)
		fatalx("%s: bad txn", __func__);
	if (t->fd >= 0) {
		close(t->fd);
		t->fd = -1;
	}
	(void)unlinkat(t->q->incfd, t->job.iname, 0);
	queue_txn_free(t);
}

/*
 * State records (their text form is in router_envelope.c).
 */

static void
queue_set_str(char **dst, const char *src)
{
	free(*dst);
	*dst = src != NULL ? xstrdup(src) : NULL;
}

/*
 * A/D/F end an attempt: attempts counted, the last_* fields replaced (NULL
 * clears).  With value QREC_NO_ATTEMPT (expiry), attempts is not counted and
 * only the non-NULL fields replace what the last real attempt left.
 */
void
queue_msg_apply(struct queue_msg *m, const struct queue_record *rec)
{
	struct queue_rcpt *r = NULL;
	bool attempt;

	if (envelope_record_check(rec, m->env.nrcpts) == -1)
		fatalx("%s: %s: bad record %c rcpt %d", __func__, m->qid, (char)rec->type, rec->rcpt);
	if (rec->rcpt >= 0)
		r = &m->rcpt[rec->rcpt];
	switch (rec->type) {
	case QREC_ATTEMPT:
	case QREC_DELIVERED:
	case QREC_FAILED:
		attempt = rec->value != QREC_NO_ATTEMPT;
		if (attempt) {
			r->attempts++;
			r->last_attempt_ms = rec->time_ms;
		}
		if (attempt || rec->host != NULL)
			queue_set_str(&r->last_host, rec->host);
		if (attempt || rec->ip != NULL)
			queue_set_str(&r->last_ip, rec->ip);
		if (attempt || rec->status != NULL)
			queue_set_str(&r->last_status, rec->status);
		if (attempt || rec->reply != NULL)
			queue_set_str(&r->last_reply, rec->reply);
		if (rec->type == QREC_DELIVERED)
			r->state = RCPT_DELIVERED;
		else if (rec->type == QREC_FAILED)
			r->state = RCPT_FAILED;
		break;
	case QREC_REPORTED:
		r->reported = true;
		break;
	case QREC_HOLD:
		m->held = rec->value != 0;
		break;
	case QREC_WARNED:
		m->delay_warned = true;
		break;
	}
}

int
queue_record(struct queue *q, struct queue_msg *m, const struct queue_record *rec,
    queue_sync_cb *cb, void *arg)
{
	struct buf line = BUF_INIT;
	struct queue_job *j;
	struct stat st;
	int fd, e;

	if (q->magic != QUEUE_MAGIC)
		fatalx("%s: bad queue", __func__);
	if (q->closing)
		return RELAY_ECLOSED;
	if (envelope_record_check(rec, m->env.nrcpts) == -1)
		return RELAY_EINVAL;
	if ((fd = openat(q->msgfd, m->qid, O_WRONLY | O_APPEND | O_CLOEXEC)) == -1) {
		e = errno;
		queue_log_errno(m->qid, "open", e);
		return e == ENOENT ? RELAY_ENOENT : RELAY_EIO;
	}
	if (fstat(fd, &st) == -1) {
		queue_log_errno(m->qid, "fstat", errno);
		close(fd);
		return RELAY_EIO;
	}
	envelope_record_encode(rec, &line);
	if (queue_write_full(fd, line.data, line.len) == -1) {
		/* never leave a torn record that the next append would run into */
		queue_log_errno(m->qid, "append", errno);
		if (ftruncate(fd, st.st_size) == -1)
			queue_log_errno(m->qid, "ftruncate", errno);
		close(fd);
		buf_free(&line);
		return RELAY_EIO;
	}
	buf_free(&line);
	queue_msg_apply(m, rec);

	j = xcalloc(1, sizeof(*j));
	j->kind = QJOB_SYNC;
	j->fd = fd;
	j->cb = cb;
	j->arg = arg;
	snprintf(j->qid, sizeof(j->qid), "%s", m->qid);
	queue_stage(q, j);
	return 0;
}

/*
 * Reading message files (start-up, history).
 */

typedef void queue_rec_fn(void *arg, const struct queue_record *rec);

/*
 * Parse msg/<qid>.  With mp, build the message (envelope and replayed
 * records); with fn, hand it every record.  With repair, a torn last record
 * is cut off the file.  0; RELAY_EINVAL if the file is not a valid queue
 * file (why says what); RELAY_ENOENT; RELAY_EIO (logged).
 */
static int
queue_load(struct queue *q, const char *qid, bool repair, struct queue_msg **mp,
    queue_rec_fn *fn, void *arg, struct buf *why)
{
	struct buf env = BUF_INIT, recs = BUF_INIT;
	struct envelope e;
	struct queue_msg *m = NULL;
	struct queue_record rec;
	struct stat st;
	char hdr[QFILE_HDR_LEN], *line, *nl, *end;
	uint64_t boff, blen, rlen, torn;
	size_t lineno = 0;
	int fd, rc = RELAY_EINVAL;

	memset(&e, 0, sizeof(e));
	if ((fd = openat(q->msgfd, qid, (repair ? O_RDWR : O_RDONLY) | O_CLOEXEC)) == -1) {
		if (errno == ENOENT)
			return RELAY_ENOENT;
		queue_log_errno(qid, "open", errno);
		return RELAY_EIO;
	}
	if (fstat(fd, &st) == -1)
		goto ioerr;
	if (!S_ISREG(st.st_mode)) {
		buf_puts(why, "not a regular file");
		goto out;
	}
	if ((uint64_t)st.st_size < QFILE_HDR_LEN) {
		buf_puts(why, "short header");
		goto out;
	}
	if (queue_pread_full(fd, hdr, sizeof(hdr), 0) == -1)
		goto ioerr;
	if (memcmp(hdr, QFILE_MAGIC, QFILE_MAGIC_LEN) != 0 ||
	    queue_parse_hex16(hdr + QFILE_MAGIC_LEN, &boff) == -1 || hdr[QFILE_BLEN_OFF - 1] != ' ' ||
	    queue_parse_hex16(hdr + QFILE_BLEN_OFF, &blen) == -1 || hdr[QFILE_HDR_LEN - 1] != '\n') {
		buf_puts(why, "bad header");
		goto out;
	}
	if (boff < QFILE_HDR_LEN + 2 || boff - QFILE_HDR_LEN > QFILE_ENV_MAX ||
	    boff > (uint64_t)st.st_size || blen > (uint64_t)st.st_size - boff) {
		buf_puts(why, "header offsets beyond the file");
		goto out;
	}

	/* the envelope lines, ending in a "." line */
	buf_reserve(&env, boff - QFILE_HDR_LEN);
	if (queue_pread_full(fd, env.data, boff - QFILE_HDR_LEN, QFILE_HDR_LEN) == -1)
		goto ioerr;
	env.len = boff - QFILE_HDR_LEN;
	env.data[env.len] = '\0';
	if (env.len < 3 || memcmp(env.data + env.len - 3, "\n.\n", 3) != 0) {
		buf_puts(why, "envelope not terminated");
		goto out;
	}
	if (envelope_decode(env.data, env.len - 2, &e, why) == -1)
		goto out;
	if (e.nrcpts == 0) {
		buf_puts(why, "envelope without recipients");
		goto out;
	}
	e.size = blen;

	/* the records after the body; a last one without newline is torn */
	rlen = (uint64_t)st.st_size - boff - blen;
	buf_reserve(&recs, rlen);
	if (queue_pread_full(fd, recs.data, rlen, boff + blen) == -1)
		goto ioerr;
	recs.len = rlen;
	recs.data[recs.len] = '\0';
	end = memrchr(recs.data, '\n', recs.len);
	torn = end == NULL ? rlen : (uint64_t)(recs.data + recs.len - end - 1);
	if (torn > 0 && repair) {
		if (ftruncate(fd, st.st_size - (off_t)torn) == -1 || fdatasync(fd) == -1)
			goto ioerr;
		log_event(LOG_WARNING, "queue_repair", "qid", qid, "action", "torn record removed", NULL);
	}
	recs.len -= torn;

	if (mp != NULL) {
		m = queue_msg_new(q, qid);
		m->env = e;
		memset(&e, 0, sizeof(e));
		m->rcpt = xcalloc(m->env.nrcpts, sizeof(*m->rcpt));
		m->body_offset = boff;
		m->body_len = blen;
	}
	for (line = recs.data, end = recs.data + recs.len; line < end; line = nl + 1) {
		lineno++;
		nl = memchr(line, '\n', (size_t)(end - line));
		*nl = '\0';
		if (memchr(line, '\0', (size_t)(nl - line)) != NULL ||
		    envelope_record_parse(line, m != NULL ? m->env.nrcpts : e.nrcpts, &rec) == -1) {
			buf_printf(why, "record %zu unparseable", lineno);
			goto out;
		}
		if (m != NULL)
			queue_msg_apply(m, &rec);
		if (fn != NULL)
			fn(arg, &rec);
	}
	if (mp != NULL) {
		*mp = m;
		m = NULL;
	}
	rc = 0;
	goto out;
ioerr:
	queue_log_errno(qid, "read", errno);
	rc = RELAY_EIO;
out:
	if (m != NULL)
		queue_msg_free(m);
	envelope_free(&e);
	buf_free(&env);
	buf_free(&recs);
	close(fd);
	return rc;
}

/* Move msg/<name> out of the way into corrupt/ (never over another file). */
static void
queue_quarantine(struct queue *q, const char *name, const char *why)
{
	struct log_line l;
	struct buf dst = BUF_INIT;
	int rc;

	buf_puts(&dst, name);
	rc = renameat2(q->msgfd, name, q->corruptfd, dst.data, RENAME_NOREPLACE);
	if (rc == -1 && errno == EEXIST) {
		buf_printf(&dst, ".%llu", (unsigned long long)util_now_ms());
		rc = renameat2(q->msgfd, name, q->corruptfd, dst.data, RENAME_NOREPLACE);
	}
	if (rc == -1 && (errno == EINVAL || errno == ENOSYS))
		rc = renameat(q->msgfd, name, q->corruptfd, dst.data);
	log_begin(&l, LOG_ERR, "queue_corrupt");
	log_kv(&l, "qid", name);
	log_kv(&l, "reason", why);
	log_kv(&l, "moved_to", rc == 0 ? "corrupt/" : NULL);
	log_kv(&l, "error", rc == 0 ? NULL : strerror(errno));
	log_end(&l);
	buf_free(&dst);
}

int
queue_scan(struct queue *q, queue_new_cb *cb, void *arg)
{
	struct buf why = BUF_INIT;
	struct queue_msg *m;
	struct log_line l;
	char **names;
	size_t i, n, loaded = 0, corrupt = 0;
	int rc;

	if ((names = queue_list_dir(q->msgfd, &n)) == NULL) {
		queue_log_errno(NULL, "opendir(msg/)", errno);
		return RELAY_EIO;
	}
	for (i = 0; i < n; i++) {
		buf_reset(&why);
		if (!queue_qid_valid(names[i])) {
			queue_quarantine(q, names[i], "not a queue id");
			corrupt++;
			continue;
		}
		rc = queue_load(q, names[i], true, &m, NULL, NULL, &why);
		if (rc == 0) {
			loaded++;
			cb(arg, m);
		} else if (rc == RELAY_EINVAL) {
			queue_quarantine(q, names[i], buf_cstr(&why));
			corrupt++;
		}
	}
	queue_free_names(names, n);
	buf_free(&why);
	log_begin(&l, LOG_INFO, "queue_scan");
	log_kv(&l, "dir", q->dir);
	log_kvu(&l, "messages", loaded);
	log_kvu(&l, "corrupt", corrupt);
	log_end(&l);
	return 0;
}

int
queue_history(struct queue *q, const char *qid,
    void (*cb)(void *arg, const struct queue_record *rec), void *arg)
{
	struct buf why = BUF_INIT;
	int rc;

	if (!queue_qid_valid(qid))
		return RELAY_ENOENT;
	rc = queue_load(q, qid, false, NULL, cb, arg, &why);
	buf_free(&why);
	return rc;
}

int
queue_remove(struct queue *q, struct queue_msg *m)
{
	if (unlinkat(q->msgfd, m->qid, 0) == -1) {
		if (errno == ENOENT)
			return RELAY_ENOENT;
		queue_log_errno(m->qid, "unlink", errno);
		return RELAY_EIO;
	}
	return 0;
}

void
queue_msg_free(struct queue_msg *m)
{
	size_t i;

	if (m == NULL)
		return;
	for (i = 0; m->rcpt != NULL && i < m->env.nrcpts; i++) {
		free(m->rcpt[i].last_host);
		free(m->rcpt[i].last_ip);
		free(m->rcpt[i].last_status);
		free(m->rcpt[i].last_reply);
	}
	free(m->rcpt);
	envelope_free(&m->env);
	free(m->path);
	free(m);
}
