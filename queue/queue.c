/*
 * queue.c - queue STORAGE: the message files under queue_dir, the
 * transactions that write them, state records, the start-up scan, removal
 * and the pool of spare files.  The commit pipeline that makes new messages
 * durable in groups (and the acceptance journal's use) is queue_commit.c;
 * queue/QUEUE.md describes the format, the group commit and what a crash
 * leaves behind.
 *
 * Owns: queue_dir (queue.lock, msg/, corrupt/, journal), the struct queue
 * with its mutex, conds, threads and handles (queue_commit.c runs them),
 * every router_txn until its callback has returned and its publish is done,
 * and the pool of spare files: unnamed ones made ahead of time on libuv's
 * thread pool, and msg/.spare-N, the files of removed messages kept (by
 * name) for reuse.
 *
 * Threads: everything here runs on the loop thread, except
 * queue_refill_work(), which touches only its own request, and the file
 * helpers the commit threads call (queue_file_create(), queue_link()),
 * which touch only their arguments.
 *
 * Must never: make the loop thread wait for a disk sync; let a queue id name
 * appear in msg/ before its content is durable; write into a recycled file
 * before its spare name is durable or while anybody else has it open; call
 * a callback from inside the function that was given it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE              /* syncfs, sync_file_range, renameat2, O_TMPFILE, F_SETLEASE */
#endif

#include "queue/queue_int.h"
#include "common/intern.h"
#include "common/log.h"
#include "common/util.h"

#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The blocks of the messages' session strings (login, client; envelope_share()) the
 * table keeps: one per recent client is enough to share them. */
#define QUEUE_SESSION_SLOTS 256
#define QUEUE_SESSION_PROBE 4

static void queue_refill(struct queue *q);
static enum queue_sync_mode queue_default_mode(void);

/*
 * Small helpers.
 */


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

void
queue_log_errno(const char *qid, const char *op, int e)
{
	struct log_line l;

	log_begin(&l, LOG_ERR, "queue_error");
	log_kv(&l, "qid", qid);
	log_kv(&l, "op", op);
	log_kv(&l, "error", strerror(e));
	log_end(&l);
}

/* A failed system call's errno as the queue reports it: a full disk apart. */
int
queue_errno_err(int e)
{
	return e == ENOSPC || e == EDQUOT ? RELAY_ENOSPC : RELAY_EIO;
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
	if (q->scanner != NULL)
		queue_scanner_made(q->scanner, out);    /* the msg/ walk must not load it */
}

/*
 * Files and transactions, for both halves.
 */

/*
 * A new file for a message that found no spare: unnamed (the commit thread
 * names it before the sync), or msg/.in-<qid> where files must have names.
 * Any thread.
 */
int
queue_file_create(struct queue *q, const char *qid, char iname[QNAME_MAX])
{
	if (!q->named) {
		iname[0] = '\0';
		return openat(q->msgfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	}
	snprintf(iname, QNAME_MAX, QNAME_IN "%s", qid);
	return openat(q->msgfd, iname, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
}

/* Give the unnamed file fd the name msg/<name> (linkat never replaces a file). */
int
queue_link(struct queue *q, int fd, const char *name)
{
	char path[64];

	if (q->link_empty)
		return linkat(fd, "", q->msgfd, name, AT_EMPTY_PATH);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return linkat(AT_FDCWD, path, q->msgfd, name, AT_SYMLINK_FOLLOW);
}

void
queue_txn_free(struct queue_txn *t)
{
	struct queue *q = t->q;

	envelope_free(&t->env);
	buf_free(&t->wbuf);
	free(t->dkim);
	if (t->fd >= 0)
		close(t->fd);
	t->magic = 0;
	free(t);
	q->ntxn--;
	queue_maybe_finish(q);
}

struct queue_msg *
queue_msg_new(const char *qid, size_t nrcpts)
{
	struct queue_msg *m = xcalloc(1, sizeof(*m) + nrcpts * sizeof(m->rcpt[0]));

	snprintf(m->qid, sizeof(m->qid), "%s", qid);
	return m;
}

const char *
queue_msg_path(const struct queue *q, const struct queue_msg *m, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/msg/%s", q->dir, m->qid);

	return n < 0 || (size_t)n >= len ? NULL : buf;
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
		w->s[i].fd = w->named ?
		    openat(w->msgfd, w->s[i].name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600) :
		    openat(w->msgfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
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
		if (w->named == q->named)
			queue_spare_put(q, w->s[i].fd, w->s[i].name, 0);
		else {
			close(w->s[i].fd);
			if (w->named)
				(void)unlinkat(q->msgfd, w->s[i].name, 0);
		}
	}
	free(w);
	queue_refill(q);
	queue_maybe_finish(q);
}

/* Fewer than QUEUE_SPARES_LOW left or coming: make more (one refill at a time). */
static void
queue_refill(struct queue *q)
{
	struct queue_refill *w;
	size_t i;

	if (q->refilling || q->closing || q->nspares + q->recycling >= QUEUE_SPARES_LOW)
		return;
	w = xcalloc(1, sizeof(*w));
	w->req.data = w;
	w->q = q;
	w->msgfd = q->msgfd;
	w->named = q->named;
	w->n = QUEUE_SPARES;
	for (i = 0; w->named && i < w->n; i++)
		snprintf(w->s[i].name, sizeof(w->s[i].name), QNAME_SPARE "%llu",
		    (unsigned long long)q->spare_seq++);
	if (uv_queue_work(q->loop, &w->req, queue_refill_work, queue_refill_done) != 0) {
		free(w);
		return;
	}
	q->refilling = true;
}

/*
 * Into the pool.  If the pool is full: closed and its name removed.  If
 * closing: closed, and a named one stays in msg/ for the next start
 * (queue_clean_leftovers() takes it into that pool).
 */
void
queue_spare_put(struct queue *q, int fd, const char *name, uint64_t size)
{
	struct queue_spare *sp;

	if (q->closing || q->nspares == RELAY_ARRAY_LEN(q->spares)) {
		if (fd >= 0)
			close(fd);
		if (name[0] != '\0' && !q->closing) {
			queue_kept_close(q, name);
			(void)unlinkat(q->msgfd, name, 0);
		}
		return;
	}
	sp = &q->spares[q->nspares++];
	sp->fd = fd;
	sp->size = size;
	memcpy(sp->name, name, QNAME_MAX);
}

/*
 * Give t a spare file (fd, name, old size), the last one put in first (a
 * recycled file's pages are likely still cached); t->fd stays -1 if none is
 * left (the file is then created when first needed: by a flush on the loop,
 * or by the commit thread).
 */
static void
queue_spare_take(struct queue *q, struct queue_txn *t)
{
	struct queue_spare *sp;

	t->job.iname[0] = '\0';
	if (q->nspares > 0) {
		sp = &q->spares[--q->nspares];
		t->fd = sp->fd;
		t->spare_size = sp->size;
		memcpy(t->job.iname, sp->name, QNAME_MAX);
		q->spares_used++;
		if (sp->size > 0)
			q->spares_reused++;
	}
	queue_refill(q);
}

/*
 * Empty the pool.  At close (unlink_named false): no system call but a
 * close(2) per unnamed spare (an empty file the kernel frees); the named
 * ones, recycled messages' files mostly, stay in msg/ for the next start:
 * up to QUEUE_POOL_MAX unlinks on the loop made a stop after a large
 * delivery slow, and the next start would have had to make those inodes
 * again.  Switching to named files (unlink_named true): every spare gone.
 */
static void
queue_spares_drop(struct queue *q, bool unlink_named)
{
	struct queue_spare *sp;

	while (q->nspares > 0) {
		sp = &q->spares[--q->nspares];
		if (sp->fd >= 0)
			close(sp->fd);
		if (unlink_named && sp->name[0] != '\0') {
			queue_kept_close(q, sp->name);
			(void)unlinkat(q->msgfd, sp->name, 0);
		}
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


/* A name in msg/ that is not a message: a spare file, or a new message's before its rename. */
static bool
queue_name_reserved(const char *name)
{
	return strncmp(name, QNAME_SPARE, sizeof(QNAME_SPARE) - 1) == 0 ||
	    strncmp(name, QNAME_IN, sizeof(QNAME_IN) - 1) == 0;
}

static int
queue_cmp_ino(const void *a, const void *b)
{
	ino_t x = *(const ino_t *)a, y = *(const ino_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * A spare file a stop left in msg/ (name: ".spare-N"): into q's pool if it
 * is one — a regular file with no other name (so no queue id names it) and
 * small enough to recycle — and the pool has room.  The next spare names
 * are made after every N seen.  Its content is never read.
 */
static bool
queue_spare_adopt(struct queue *q, const char *name)
{
	struct stat st;
	unsigned long long nr;
	char copy[QNAME_MAX], *end;

	if (strncmp(name, QNAME_SPARE, sizeof(QNAME_SPARE) - 1) != 0 ||
	    strlen(name) >= sizeof(copy))
		return false;
	if (!isdigit((unsigned char)name[sizeof(QNAME_SPARE) - 1]))
		return false;           /* strtoull would take a sign or a space */
	errno = 0;
	nr = strtoull(name + sizeof(QNAME_SPARE) - 1, &end, 10);
	if (errno != 0 || *end != '\0' || end == name + sizeof(QNAME_SPARE) - 1)
		return false;
	if (nr >= q->spare_seq)
		q->spare_seq = nr + 1;
	if (q->nspares == RELAY_ARRAY_LEN(q->spares) ||
	    fstatat(q->msgfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
	    st.st_nlink != 1 || (uint64_t)st.st_size > QUEUE_RECYCLE_MAX)
		return false;
	memset(copy, 0, sizeof(copy));          /* the pool copies QNAME_MAX bytes */
	memcpy(copy, name, strlen(name));
	queue_spare_put(q, -1, copy, (uint64_t)st.st_size);
	return true;
}

/*
 * Remove the leftovers in dirfd (msg/, or an older version's incoming/):
 * every entry of incoming/, and the reserved names of msg/ (spare files,
 * unpublished new files), but the spare files adopt takes into its pool
 * (msg/ only; NULL: none).  One case is not a leftover: a rename or link the
 * crash cut in half (the link(2) fallback, or a file system without a
 * journal that wrote one directory entry and not the other) leaves the
 * inode under a queue id too (msg_inos: from readdir, no stat per file).
 * If its link count says 1, unlinking the leftover name would free the
 * queued message: keep it and say so.
 */
static void
queue_clean_dir(int dirfd, bool reserved_only, const struct queue_dirent *v, size_t n,
    const ino_t *msg_inos, size_t nmsg, struct queue *adopt, size_t *spares)
{
	struct stat st;
	const char *action;
	size_t i;

	for (i = 0; i < n; i++) {
		if (reserved_only && !queue_name_reserved(v[i].name))
			continue;
		action = "removed";
		if (bsearch(&v[i].ino, msg_inos, nmsg, sizeof(*msg_inos), queue_cmp_ino) != NULL &&
		    fstatat(dirfd, v[i].name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    st.st_ino == v[i].ino) {
			if (st.st_nlink < 2) {
				log_event(LOG_ERR, "queue_incomplete", "qid", v[i].name, "action",
				    "kept (also a queued message, link count 1: run fsck)", NULL);
				continue;
			}
			action = "removed (published)";
		} else if (adopt != NULL && queue_spare_adopt(adopt, v[i].name))
			continue;
		if (unlinkat(dirfd, v[i].name, 0) == -1)
			queue_log_errno(v[i].name, "unlink(leftover)", errno);
		else if (strncmp(v[i].name, QNAME_SPARE, sizeof(QNAME_SPARE) - 1) == 0 &&
		    strcmp(action, "removed") == 0)
			(*spares)++;         /* expected after any stop without close: counted */
		else
			log_event(LOG_INFO, "queue_incomplete", "qid", v[i].name, "action", action, NULL);
	}
}

/*
 * At open: remove what transactions that never committed left behind, the
 * spare files of a process that did not close, and an older version's
 * incoming/ directory.
 */
static void
queue_clean_leftovers(struct queue *q, int dirfd)
{
	struct queue_dirent *v, *inc;
	struct log_line l;
	ino_t *inos;
	size_t i, n, ninc, nmsg = 0, spares = 0;
	int incfd;

	if ((v = queue_read_dir(q->msgfd, &n)) == NULL) {
		queue_log_errno(NULL, "readdir(msg/)", errno);
		return;
	}
	inos = xcalloc(n + 1, sizeof(*inos));
	for (i = 0; i < n; i++)
		if (!queue_name_reserved(v[i].name))
			inos[nmsg++] = v[i].ino;
	qsort(inos, nmsg, sizeof(*inos), queue_cmp_ino);
	queue_clean_dir(q->msgfd, true, v, n, inos, nmsg, q, &spares);
	if (q->nspares > 0 && fsync(q->msgfd) == -1) {
		/* A stop by SIGKILL may have left a removal's rename to .spare-N
		 * not yet durable: reused before it is, a crash could bring the
		 * old queue id back naming another message's bytes.  Not durable
		 * now: give them up. */
		queue_log_errno(NULL, "fsync(msg/)", errno);
		while (q->nspares > 0) {
			if (unlinkat(q->msgfd, q->spares[--q->nspares].name, 0) == 0)
				spares++;
		}
	}

	if ((incfd = openat(dirfd, "incoming", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		if ((inc = queue_read_dir(incfd, &ninc)) != NULL) {
			queue_clean_dir(incfd, false, inc, ninc, inos, nmsg, NULL, &spares);
			queue_free_dir(inc, ninc);
		}
		close(incfd);
		(void)unlinkat(dirfd, "incoming", AT_REMOVEDIR);   /* unless something was kept */
	}
	if (spares > 0) {
		log_begin(&l, LOG_INFO, "queue_spares_removed");
		log_kvu(&l, "count", spares);
		log_end(&l);
	}
	free(inos);
	queue_free_dir(v, n);
}

/*
 * Unnamed files (O_TMPFILE) get their name with linkat(2): through
 * /proc/self/fd, or with AT_EMPTY_PATH (which needs CAP_DAC_READ_SEARCH).
 * Where neither works, files are made with names (q->named).
 */
static void
queue_probe_tmpfile(struct queue *q)
{
	static const char name[] = QNAME_IN "probe";
	int fd;

	q->named = true;
	if ((fd = openat(q->msgfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)) == -1)
		return;
	(void)unlinkat(q->msgfd, name, 0);
	if (queue_link(q, fd, name) == -1) {
		q->link_empty = true;
		if (queue_link(q, fd, name) == -1) {
			close(fd);
			return;
		}
	}
	(void)unlinkat(q->msgfd, name, 0);
	close(fd);
	q->named = false;
}

void
queue_set_named_files(struct queue *q, bool named)
{
	if (!named || q->named)
		return;
	q->named = true;
	queue_spares_drop(q, true);
	queue_refill(q);
}

static void
queue_close_fds(struct queue *q)
{
	if (q->msgfd >= 0)
		close(q->msgfd);
	if (q->corruptfd >= 0)
		close(q->corruptfd);
	if (q->lockfd >= 0)
		close(q->lockfd);            /* releases the flock */
	q->msgfd = q->corruptfd = q->lockfd = -1;
}

/*
 * Test hooks, read from the environment: compiled only into builds made with
 * the CMake option RELAY_TEST_HOOKS (contrib/test.sh's); a normal or release
 * build has neither the variables' names nor the sleeps (QUEUE.md).
 */
#ifdef RELAY_TEST_HOOKS
static void
queue_test_hooks(struct queue *q)
{
	const char *v;

	if ((v = getenv("RELAYD_TEST_SYNC_DELAY_MS")) != NULL)
		q->test_sync_delay_ms = (unsigned)strtoul(v, NULL, 10);
	if ((v = getenv("RELAYD_TEST_PUBLISH_DELAY_MS")) != NULL)
		q->test_publish_delay_ms = (unsigned)strtoul(v, NULL, 10);
	if ((v = getenv("RELAYD_TEST_RECORD_DELAY_MS")) != NULL)
		q->test_record_delay_ms = (unsigned)strtoul(v, NULL, 10);
	if ((v = getenv("RELAYD_TEST_IMAGE_MAX")) != NULL)
		queue_image_set_max((size_t)strtoul(v, NULL, 10));   /* 0: every delivery from the file */
}
#else
static void
queue_test_hooks(struct queue *q)
{
}
#endif

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
	q->lasts = queue_lasts_new();
	q->sessions = intern_table_new(QUEUE_SESSION_SLOTS, QUEUE_SESSION_PROBE, INTERN_LOCKED);
	q->lockfd = q->msgfd = q->corruptfd = -1;
	q->jnl.fd = -1;
	for (size_t k = 0; k < QUEUE_KEPT_MAX; k++)
		q->kept[k].fd = -1;     /* before anything may delete a spare (queue_kept_close) */
	q->mode = queue_default_mode();
	queue_list_init(&q->staged);
	queue_list_init(&q->pending);
	queue_list_init(&q->journaled);
	queue_list_init(&q->written);
	queue_list_init(&q->done);
	queue_list_init(&q->staged_ops);
	queue_list_init(&q->ops);

	if (mkdir(dir, 0700) == -1 && errno != EEXIST)
		what = "mkdir";
	else if ((dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		what = "open";
	else if ((q->lockfd = openat(dirfd, "queue.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600)) == -1)
		what = "open queue.lock";
	else if (flock(q->lockfd, LOCK_EX | LOCK_NB) == -1)
		what = errno == EWOULDBLOCK ? "lock (another relayd uses it)" : "flock queue.lock";
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
		queue_lasts_free(q->lasts);
		intern_table_free(q->sessions);
		free(q->dir);
		free(q);
		return RELAY_EIO;
	}
	queue_clean_leftovers(q, dirfd);
	if (queue_journal_open(q, dirfd, err) != 0) {
		close(dirfd);
		queue_close_fds(q);
		queue_lasts_free(q->lasts);
		intern_table_free(q->sessions);
		free(q->dir);
		free(q);
		return RELAY_EIO;
	}
	close(dirfd);
	queue_probe_tmpfile(q);

	if (getrandom(&q->rnd_state, sizeof(q->rnd_state), GRND_NONBLOCK) != sizeof(q->rnd_state))
		q->rnd_state = util_now_ms() ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)q;
	q->rnd_state |= 1;

	queue_test_hooks(q);

	if (uv_mutex_init(&q->mtx) != 0 || uv_cond_init(&q->cond) != 0 ||
	    uv_cond_init(&q->write_cond) != 0 || uv_cond_init(&q->sync_cond) != 0 ||
	    uv_cond_init(&q->reap_cond) != 0)
		fatalx("%s: mutex/cond init failed", __func__);
	if (uv_thread_create(&q->jthread, queue_jnl_main, q) != 0 ||
	    uv_thread_create(&q->writer, queue_writer_main, q) != 0 ||
	    uv_thread_create(&q->thread, queue_thread_main, q) != 0 ||
	    uv_thread_create(&q->reaper, queue_reaper_main, q) != 0)
		fatalx("%s: cannot start the commit threads", __func__);
	if (uv_async_init(loop, &q->async, queue_async_cb) != 0 ||
	    uv_check_init(loop, &q->check) != 0 || uv_idle_init(loop, &q->idle) != 0 ||
	    uv_timer_init(loop, &q->probe_timer) != 0)
		fatalx("%s: handle init failed", __func__);
	q->async.data = q->check.data = q->idle.data = q->probe_timer.data = q;
	uv_unref((uv_handle_t *)&q->probe_timer);   /* never keeps an idle loop alive */
	q->nhandles = 4;
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
	c->spares_reused = q->spares_reused;
}

void
queue_journal_fill(struct queue *q, uint64_t *used, uint64_t *size)
{
	uint64_t head, tail;

	*used = *size = 0;
	if (!q->jnl_was_on)
		return;
	uv_mutex_lock(&q->mtx);
	head = q->jhead;
	tail = q->jtail;
	uv_mutex_unlock(&q->mtx);
	/* Batches run from the tail to the head, wrapping to JOURNAL_DATA. */
	*size = q->jnl.size > JOURNAL_DATA ? q->jnl.size - JOURNAL_DATA : 0;
	if (head >= tail)
		*used = head - tail;
	else
		*used = (q->jnl.size - tail) + (head - JOURNAL_DATA);
	if (*used > *size)
		*used = *size;
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
	uv_cond_destroy(&q->write_cond);
	uv_cond_destroy(&q->sync_cond);
	uv_cond_destroy(&q->reap_cond);
	journal_close(&q->jnl);
	queue_close_fds(q);
	done = q->close_done;
	arg = q->close_arg;
	queue_lasts_free(q->lasts);
	intern_table_free(q->sessions);
	free(q->dir);
	q->magic = 0;
	free(q);
	if (done != NULL)
		done(arg);
}

/*
 * Once closing, the threads gone (the scan's too: it reads msg/), every job
 * completed and every txn ended: close.
 */
void
queue_maybe_finish(struct queue *q)
{
	bool exited;

	if (!q->closing || q->finishing || q->ntxn > 0 || q->inflight > 0 || q->refilling ||
	    q->scanner != NULL)
		return;
	uv_mutex_lock(&q->mtx);
	exited = q->exited && q->reaper_exited;
	uv_mutex_unlock(&q->mtx);
	if (!exited)
		return;
	q->finishing = true;
	uv_thread_join(&q->jthread);         /* all have returned or are returning */
	uv_thread_join(&q->writer);
	uv_thread_join(&q->thread);
	uv_thread_join(&q->reaper);
	queue_spares_drop(q, false);
	uv_close((uv_handle_t *)&q->idle, queue_handle_closed);
	uv_close((uv_handle_t *)&q->check, queue_handle_closed);
	uv_close((uv_handle_t *)&q->async, queue_handle_closed);
	uv_close((uv_handle_t *)&q->probe_timer, queue_handle_closed);
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
	uv_timer_stop(&q->probe_timer);
	queue_held_free(q);                  /* the journal keeps them: the next start replays */
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

/* An envelope a queue file can hold: a sender and recipients (RELAY_EINVAL). */
static int
queue_env_check(const struct envelope *env)
{
	size_t i;

	if (env->nrcpts == 0 || env->sender == NULL)
		return RELAY_EINVAL;
	for (i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].addr == NULL)
			return RELAY_EINVAL;
	return 0;
}

int
queue_txn_begin(struct queue *q, const struct envelope *env, struct queue_txn **out)
{
	struct queue_txn *t;
	int rc;

	if (q->magic != QUEUE_MAGIC)
		fatalx("%s: bad queue", __func__);
	if (q->closing)
		return RELAY_ECLOSED;
	if (env != NULL && (rc = queue_env_check(env)) != 0)
		return rc;

	t = xcalloc(1, sizeof(*t));
	t->magic = TXN_MAGIC;
	t->q = q;
	t->fd = -1;
	t->job.fd = -1;
	queue_qid_next(q, t->job.qid);
	queue_spare_take(q, t);
	q->ntxn++;
	if (env != NULL && (rc = queue_txn_envelope(t, env)) != 0) {
		queue_txn_abort(t);     /* its file would not load: never written */
		return rc;
	}
	*out = t;
	return 0;
}

/*
 * The envelope of a txn begun without one.  Any thread that holds t: it
 * touches t and the queue's session strings (a locked table) only.
 */
int
queue_txn_envelope(struct queue_txn *t, const struct envelope *env)
{
	struct queue *q = t->q;
	char hex[16];
	int rc;

	if (t->magic != TXN_MAGIC || t->cb != NULL || t->wbuf.len != 0)
		fatalx("%s: bad txn", __func__);
	if ((rc = queue_env_check(env)) != 0)
		return rc;
	envelope_share(&t->env, env, q->sessions);   /* the queued message takes it over */
	t->env.size = 0;

	/* header with the body length still unknown, then the envelope lines */
	buf_puts(&t->wbuf, QFILE_MAGIC "0000000000000000 ????????????????\n");
	envelope_encode(&t->env, &t->wbuf);
	buf_puts(&t->wbuf, ".\n");
	t->body_offset = t->wbuf.len;
	if (t->body_offset - QFILE_HDR_LEN > QFILE_ENV_MAX) {
		envelope_free(&t->env);         /* as before the call: still blank */
		buf_free(&t->wbuf);
		t->body_offset = 0;
		return RELAY_EINVAL;
	}
	queue_hex16(hex, t->body_offset);
	memcpy(t->wbuf.data + QFILE_MAGIC_LEN, hex, sizeof(hex));
	return 0;
}

const char *
queue_txn_qid(const struct queue_txn *t)
{
	return t->job.qid;
}

int
queue_txn_error(const struct queue_txn *t)
{
	return t->err;
}

static int
queue_txn_flush(struct queue_txn *t)
{
	int e;

	if (t->err != 0 || t->wbuf.len == 0)
		return t->err;
	if (t->fd == -1 && t->job.iname[0] != '\0' &&
	    (t->fd = openat(t->q->msgfd, t->job.iname, O_RDWR | O_CLOEXEC)) == -1) {
		queue_log_errno(t->job.qid, "open(msg/.spare)", errno);
		t->err = RELAY_EIO;
		return t->err;
	}
	if (t->fd == -1 && (t->fd = queue_file_create(t->q, t->job.qid, t->job.iname)) == -1) {
		e = errno;
		queue_log_errno(t->job.qid, "create(msg/)", e);
		t->err = queue_errno_err(e);
		return t->err;
	}
	if (util_pwrite_full(t->fd, t->wbuf.data, t->wbuf.len, t->written) == -1) {
		e = errno;
		queue_log_errno(t->job.qid, "write", e);
		t->err = queue_errno_err(e);
		return t->err;
	}
	t->written += t->wbuf.len;
	buf_reset(&t->wbuf);
	return 0;
}

int
queue_txn_write(struct queue_txn *t, const void *p, size_t len)
{
	if (t->magic != TXN_MAGIC || t->body_offset == 0)
		fatalx("%s: bad txn or no envelope", __func__);
	if (t->err != 0)
		return t->err;
	if (t->dkim != NULL)
		fatalx("%s: body written after the prefix", __func__);
	if (len > QUEUE_BODY_MAX - t->body_len) {
		queue_log_errno(t->job.qid, "write", EFBIG);   /* more than a queue file holds */
		t->err = RELAY_ENOSPC;
		return t->err;
	}
	buf_append(&t->wbuf, p, len);
	t->body_len += len;
	if (t->wbuf.len >= QUEUE_WBUF_SIZE)
		return queue_txn_flush(t);
	return 0;
}

void
queue_txn_prefix(struct queue_txn *t, const char *fields, const char *ids)
{
	struct queue_record rec;

	if (t->magic != TXN_MAGIC || t->cb != NULL || t->dkim != NULL)
		fatalx("%s: bad txn", __func__);
	memset(&rec, 0, sizeof(rec));
	rec.type = QREC_DKIM;
	rec.rcpt = -1;
	rec.time_ms = util_now_ms();
	rec.status = ids;
	rec.reply = fields;
	envelope_record_encode(&rec, &t->wbuf);     /* after the body: not counted in it */
	t->dkim = queue_dkim_join(fields, ids);
	if (t->err == 0 && t->wbuf.len >= QUEUE_WBUF_SIZE)
		(void)queue_txn_flush(t);
}

void
queue_txn_commit(struct queue_txn *t, queue_commit_cb *cb, void *arg)
{
	struct queue *q = t->q;
	char hex[16];
	ssize_t n;
	int e;

	if (t->magic != TXN_MAGIC || t->cb != NULL || cb == NULL || t->body_offset == 0)
		fatalx("%s: bad txn, no envelope or no callback", __func__);
	t->cb = cb;
	t->arg = arg;
	t->env.size = t->body_len;
	queue_hex16(hex, t->body_len);
	if (t->err == 0 && q->closing)
		t->err = RELAY_ECLOSED;
	if (t->err == 0 && t->written == 0) {
		/*
		 * The header is still in memory: the whole file goes in one
		 * write, by the commit thread (never a write(2) on the loop,
		 * which into a recycled file could wait for a page to be read).
		 */
		memcpy(t->wbuf.data + QFILE_BLEN_OFF, hex, sizeof(hex));
		t->job.write_wbuf = true;
		t->job.len = t->wbuf.len;
	} else if (t->err == 0 && queue_txn_flush(t) == 0) {
		do
			n = pwrite(t->fd, hex, sizeof(hex), QFILE_BLEN_OFF);
		while (n == -1 && errno == EINTR);
		if (n != (ssize_t)sizeof(hex)) {
			e = n == -1 ? errno : EIO;
			queue_log_errno(t->job.qid, "pwrite", e);
			t->err = queue_errno_err(e);
		}
		t->job.len = t->written;
	}
	if (!t->job.write_wbuf)
		buf_free(&t->wbuf);

	t->job.kind = QJOB_COMMIT;
	t->job.size = t->spare_size;         /* longer than len: the thread cuts it */
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
queue_txn_abort(struct queue_txn *t)
{
	if (t->magic != TXN_MAGIC || t->cb != NULL)
		fatalx("%s: bad txn", __func__);
	if (t->err == 0 && t->written == 0 && (t->fd >= 0 || t->job.iname[0] != '\0'))
		queue_spare_put(t->q, t->fd, t->job.iname, t->spare_size);   /* untouched */
	else {
		if (t->fd >= 0)
			close(t->fd);
		if (t->job.iname[0] != '\0') {
			queue_kept_close(t->q, t->job.iname);
			(void)unlinkat(t->q->msgfd, t->job.iname, 0);
		}
	}
	t->fd = -1;
	queue_txn_free(t);
}

/*
 * State records (their text form is in queue_envelope.c).
 */

char *
queue_dkim_join(const char *fields, const char *ids)
{
	size_t f = strlen(fields) + 1, i = strlen(ids) + 1;
	char *b = xmalloc(f + i);

	memcpy(b, fields, f);
	memcpy(b + f, ids, i);
	return b;
}

/*
 * A/D/F end an attempt: attempts counted, the last_* strings replaced (NULL
 * clears).  With the flag QREC_NO_ATTEMPT in value (expiry), attempts is not
 * counted and only the non-NULL fields replace what the last real attempt
 * left.  QREC_WAIT_DEST, QREC_EXPIRED and QREC_DSN_PASSED set the recipient's
 * explicit states (waiting, expired, dsn_passed); nothing is ever inferred
 * from the status text.
 */
static void
queue_msg_apply_in(struct queue_lasts *lasts, struct queue_msg *m, const struct queue_record *rec)
{
	struct queue_rcpt *r = NULL;
	struct queue_last last;
	bool attempt;

	if (envelope_record_check(rec, m->env.nrcpts) == -1)
		fatalx("%s: %s: bad record %c rcpt %d", __func__, m->qid, (char)rec->type, rec->rcpt);
	if (rec->rcpt >= 0)
		r = &m->rcpt[rec->rcpt];
	switch (rec->type) {
	case QREC_ATTEMPT:
	case QREC_DELIVERED:
	case QREC_FAILED:
		attempt = (rec->value & QREC_NO_ATTEMPT) == 0;
		if (attempt) {
			r->attempts++;
			r->last_attempt_ms = rec->time_ms;
		}
		queue_rcpt_last(r, &last);
		queue_rcpt_set_last(lasts, r, attempt || rec->host != NULL ? rec->host : last.host,
		    attempt || rec->ip != NULL ? rec->ip : last.ip,
		    attempt || rec->status != NULL ? rec->status : last.status,
		    attempt || rec->reply != NULL ? rec->reply : last.reply);
		r->waiting = rec->type == QREC_ATTEMPT && (rec->value & QREC_WAIT_DEST) != 0;
		if (rec->type == QREC_DELIVERED) {
			r->state = RCPT_DELIVERED;
			r->dsn_passed = (rec->value & QREC_DSN_PASSED) != 0;
		} else if (rec->type == QREC_FAILED) {
			r->state = RCPT_FAILED;
			r->expired = (rec->value & QREC_EXPIRED) != 0;
		}
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
	case QREC_DKIM:
		free(m->dkim);
		m->dkim = queue_dkim_join(rec->reply, rec->status);
		break;
	}
}

/* Without the queue: the strings get a block of their own. */
void
queue_msg_apply(struct queue_msg *m, const struct queue_record *rec)
{
	queue_msg_apply_in(NULL, m, rec);
}

/* Whether a record's string field leaves the recipient's own as it is:
 * NULL keeps it (QREC_NO_ATTEMPT), else it must be equal. */
static bool
queue_last_keeps(const char *field, const char *own)
{
	return field == NULL || (own != NULL && strcmp(field, own) == 0);
}

bool
queue_record_idle(const struct queue_msg *m, const struct queue_record *rec)
{
	const struct queue_rcpt *r;
	struct queue_last last;

	if (rec->type != QREC_ATTEMPT || (rec->value & QREC_NO_ATTEMPT) == 0 ||
	    envelope_record_check(rec, m->env.nrcpts) == -1 || rec->rcpt < 0)
		return false;
	r = &m->rcpt[rec->rcpt];
	if (r->state != RCPT_PENDING || r->waiting != ((rec->value & QREC_WAIT_DEST) != 0))
		return false;
	queue_rcpt_last(r, &last);
	return queue_last_keeps(rec->host, last.host) && queue_last_keeps(rec->ip, last.ip) &&
	    queue_last_keeps(rec->status, last.status) && queue_last_keeps(rec->reply, last.reply);
}

/*
 * The loop only encodes the line and applies it; the writer thread opens
 * msg/<qid> (O_APPEND) and writes it, in issue order, and the sync thread
 * syncs and closes it (queue_commit.c).
 */
int
queue_record(struct queue *q, struct queue_msg *m, const struct queue_record *rec,
    queue_sync_cb *cb, void *arg)
{
	struct buf line = BUF_INIT;
	struct queue_job *j;

	if (q->magic != QUEUE_MAGIC)
		fatalx("%s: bad queue", __func__);
	if (q->closing)
		return RELAY_ECLOSED;
	if (envelope_record_check(rec, m->env.nrcpts) == -1)
		return RELAY_EINVAL;
	if (m->removed) {
		queue_log_errno(m->qid, "open", ENOENT);
		return RELAY_ENOENT;
	}
	envelope_record_encode(rec, &line);
	j = xcalloc(1, sizeof(*j) + line.len);
	memcpy(j + 1, line.data, line.len);
	j->line = (const char *)(j + 1);
	j->line_len = line.len;
	buf_free(&line);
	j->kind = QJOB_SYNC;
	j->fd = -1;
	j->cb = cb;
	j->arg = arg;
	snprintf(j->qid, sizeof(j->qid), "%s", m->qid);
	queue_msg_apply_in(q->lasts, m, rec);
	queue_stage_op(q, j, true);
	return 0;
}

/*
 * Reading message files (start-up, history).
 */

typedef void queue_rec_fn(void *arg, const struct queue_record *rec);

/*
 * Parse msg/<qid>, opened as name at dirfd (q->msgfd and qid, or AT_FDCWD
 * and the file's path).  With mp, build the message (envelope and replayed
 * records); with fn, hand it every record.  q is used only with mp.  With
 * repair, a torn last record is cut off the file.  0; RELAY_EINVAL if the
 * file is not a valid queue file (why says what); RELAY_ENOENT; RELAY_EIO
 * (logged).
 */
static int
queue_load(struct queue *q, int dirfd, const char *name, const char *qid, bool repair,
    struct queue_msg **mp, queue_rec_fn *fn, void *arg, struct buf *why)
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
	if ((fd = openat(dirfd, name, (repair ? O_RDWR : O_RDONLY) | O_CLOEXEC)) == -1) {
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
	if (util_pread_full(fd, hdr, sizeof(hdr), 0) == -1)
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
	if (blen > QUEUE_BODY_MAX) {
		buf_puts(why, "body larger than a queue file holds");
		goto out;
	}

	/* the envelope lines, ending in a "." line */
	buf_reserve(&env, boff - QFILE_HDR_LEN);
	if (util_pread_full(fd, env.data, boff - QFILE_HDR_LEN, QFILE_HDR_LEN) == -1)
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
	if (util_pread_full(fd, recs.data, rlen, boff + blen) == -1)
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
		m = queue_msg_new(qid, e.nrcpts);
		envelope_share(&m->env, &e, q->sessions);    /* the session's strings shared */
		envelope_free(&e);
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
			queue_msg_apply_in(q->lasts, m, &rec);
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
	struct queue_msg *m;
	struct queue_dirent *v;
	size_t i, n, loaded = 0, corrupt = 0;
	int rc;

	if ((v = queue_read_dir(q->msgfd, &n)) == NULL) {
		queue_log_errno(NULL, "readdir(msg/)", errno);
		return RELAY_EIO;
	}
	for (i = 0; i < n; i++) {
		rc = queue_scan_entry(q, v[i].name, &m);
		if (rc > 0) {
			loaded++;
			cb(arg, m);
		} else if (rc < 0)
			corrupt++;
	}
	queue_free_dir(v, n);
	queue_scan_log(q, loaded, corrupt);
	return 0;
}

/* The one line a finished scan logs (queue_scan() and the scan thread). */
void
queue_scan_log(struct queue *q, size_t loaded, size_t corrupt)
{
	struct log_line l;

	log_begin(&l, LOG_INFO, "queue_scan");
	log_kv(&l, "dir", q->dir);
	log_kvu(&l, "messages", loaded);
	log_kvu(&l, "corrupt", corrupt);
	log_end(&l);
}

/*
 * One name of msg/ in a scan: 1 and *mp a loaded message, 0 nothing (a
 * spare, or a file that went away), -1 the file was corrupt (moved to
 * corrupt/, logged).  Any thread: it touches only the file and the log.
 */
int
queue_scan_entry(struct queue *q, const char *name, struct queue_msg **mp)
{
	struct buf why = BUF_INIT;
	int rc;

	*mp = NULL;
	if (queue_name_reserved(name))
		return 0;            /* a spare file (or a leftover kept at open) */
	if (!queue_qid_valid(name)) {
		queue_quarantine(q, name, "not a queue id");
		return -1;
	}
	rc = queue_load(q, q->msgfd, name, name, true, mp, NULL, NULL, &why);
	if (rc == RELAY_EINVAL)
		queue_quarantine(q, name, buf_cstr(&why));
	buf_free(&why);
	return rc == 0 ? 1 : rc == RELAY_EINVAL ? -1 : 0;
}

/* The records of qid's file, name in dirfd (q NULL: no queue object). */
static int
queue_history_at(struct queue *q, int dirfd, const char *name, const char *qid,
    void (*cb)(void *arg, const struct queue_record *rec), void *arg)
{
	struct buf why = BUF_INIT;
	int rc;

	if (!queue_qid_valid(qid))
		return RELAY_ENOENT;
	rc = queue_load(q, dirfd, name, qid, false, NULL, cb, arg, &why);
	buf_free(&why);
	return rc;
}

int
queue_history(struct queue *q, const char *qid,
    void (*cb)(void *arg, const struct queue_record *rec), void *arg)
{
	return queue_history_at(q, q->msgfd, qid, qid, cb, arg);
}

int
queue_history_file(const char *path, const char *qid,
    void (*cb)(void *arg, const struct queue_record *rec), void *arg)
{
	return queue_history_at(NULL, AT_FDCWD, path, qid, cb, arg);
}

/*
 * msg/<qid> becomes msg/.spare-N, one directory operation (neither freeing
 * an inode nor waiting for a device); from then on nobody can open it by
 * its id.  The writer thread renames it, after the records issued before
 * (queue_commit.c); only when no record or removal is on its way does the
 * loop do it at once (nothing can be ordered before it then: an
 * administrator's delete on a quiet queue).  The sync thread makes that
 * rename durable with its next fsync of msg/, then keeps the file as a
 * spare (its old content is overwritten by the next message, and cut to
 * length at its commit) or deletes it: if the pool is full, the file large,
 * or somebody still has it open.
 */
/*
 * m's file was not there to remove: somebody removed or moved it behind
 * relayd's back.  Its id names no file any more, which is what the removal
 * wanted: logged (as the writer thread logs it when the removal went there),
 * and done.
 */
static int
queue_remove_gone(struct queue_msg *m)
{
	queue_log_errno(m->qid, "remove", ENOENT);
	m->removed = true;
	return 0;
}

int
queue_remove(struct queue *q, struct queue_msg *m)
{
	struct queue_job *j;

	if (q->magic != QUEUE_MAGIC)
		fatalx("%s: bad queue", __func__);
	if (m->removed)
		return RELAY_ENOENT;
	if (!q->closing) {
		j = xcalloc(1, sizeof(*j));
		j->kind = QJOB_RECYCLE;
		j->fd = -1;
		/* the file's size: 64 bits, each is 32 (their sum may pass 4 GiB) */
		j->keep = (uint64_t)m->body_offset + m->body_len <= QUEUE_RECYCLE_MAX &&
		    q->nspares + q->recycling < QUEUE_POOL_MAX;
		snprintf(j->qid, sizeof(j->qid), "%s", m->qid);
		snprintf(j->iname, sizeof(j->iname), QNAME_SPARE "%llu",
		    (unsigned long long)q->spare_seq++);
		if (q->nops > 0 ||
		    renameat2(q->msgfd, m->qid, q->msgfd, j->iname, RENAME_NOREPLACE) == 0) {
			j->renamed = q->nops == 0;
			q->recycling += j->keep;
			m->removed = true;
			queue_stage_op(q, j, !j->renamed);
			return 0;
		}
		free(j);
		if (errno == ENOENT)
			return queue_remove_gone(m);
		/* no RENAME_NOREPLACE here (or a name taken): delete it at once */
	}
	if (unlinkat(q->msgfd, m->qid, 0) == -1) {
		if (errno == ENOENT)
			return queue_remove_gone(m);
		queue_log_errno(m->qid, "unlink", errno);
		return RELAY_EIO;
	}
	m->removed = true;
	return 0;
}

void
queue_msg_free(struct queue_msg *m)
{
	size_t i;

	if (m == NULL)
		return;
	for (i = 0; i < m->env.nrcpts; i++) {
		queue_rcpt_free_last(&m->rcpt[i]);
	}
	queue_msg_drop_image(m);
	envelope_free(&m->env);
	free(m->dkim);
	free(m);
}
