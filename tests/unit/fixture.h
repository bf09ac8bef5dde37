/*
 * fixture.h - fixtures shared by the queue's unit tests (test_queue.c,
 * test_journal.c): a temporary directory with the test's log in it,
 * removed at the end; a look into that log; a sink that collects the
 * messages the queue hands out; a commit's outcome; opening and closing a
 * queue on a real libuv loop, and checking that the loop closes cleanly;
 * holding the queue's sync thread (test hooks);
 * a child process that reports through a pipe and dies by SIGKILL.
 * Not a test (CMake builds only test_*.c); include it once, after check.h.
 * Everything here is static: each test program gets its own copy.
 */
#ifndef RELAY_FIXTURE_H
#define RELAY_FIXTURE_H

#include "queue/queue.h"
#include "common/log.h"
#include "common/util.h"
#include "check.h"

#include <sys/stat.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tdir[64];                  /* the test's temporary directory */
static char logpath[128];              /* tdir/log, where log_*() writes */
static int ndirs __attribute__((unused));                    /* directories made below tdir so far */

static inline int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static inline void
rm_rf(const char *path)
{
	(void)nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/*
 * Make tdir ($TMPDIR or /tmp, "relayd-test-<name>-XXXXXX") and log to
 * tdir/log.  0, or 2 (the test program's exit code) on failure.
 */
static inline int
fixture_setup(const char *name)
{
	const char *base = getenv("TMPDIR");

	snprintf(tdir, sizeof(tdir), "%s/relayd-test-%s-XXXXXX", base != NULL && *base ? base : "/tmp",
	    name);
	if (mkdtemp(tdir) == NULL) {
		perror("mkdtemp");
		return 2;
	}
	snprintf(logpath, sizeof(logpath), "%s/log", tdir);
	if (log_open(logpath) != 0)
		return 2;
	return 0;
}

/* Stop logging and remove tdir with everything in it. */
static inline void
fixture_teardown(void)
{
	log_close();
	rm_rf(tdir);
}

/* The log file has a line containing needle. */
static inline int
log_has(const char *needle)
{
	char line[1024];
	FILE *fp;
	int found = 0;

	if ((fp = fopen(logpath, "r")) == NULL)
		return 0;
	while (!found && fgets(line, sizeof(line), fp) != NULL)
		found = strstr(line, needle) != NULL;
	fclose(fp);
	return found;
}

/* qdir/msg/<qid> exists. */
/* Entries in qdir/sub (not "." and ".."); 0 when it cannot be read. */
static inline size_t
count_dir(const char *qdir, const char *sub)
{
	char path[256];
	struct dirent *de;
	size_t n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "%s/%s", qdir, sub);
	if ((d = opendir(path)) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static inline int
msg_exists(const char *qdir, const char *qid)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/msg/%s", qdir, qid);
	return access(path, F_OK) == 0;
}

/*
 * Collects the messages the queue hands out (scan or new commits); owns
 * them until sink_free().  With qdir set, counts those whose msg/<qid>
 * existed when they were handed out.
 */
struct sink {
	struct queue_msg *m[64];
	size_t n;
	const char *qdir;
	int present;                 /* msg/<qid> existed when the message was handed out */
};

static inline void
sink_add(void *arg, struct queue_msg *m)
{
	struct sink *s = arg;

	if (s->qdir != NULL && msg_exists(s->qdir, m->qid))
		s->present++;
	if (s->n == RELAY_ARRAY_LEN(s->m)) {
		queue_msg_free(m);
		return;
	}
	s->m[s->n++] = m;
}

static inline void
sink_free(struct sink *s)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		queue_msg_free(s->m[i]);
	s->n = 0;
}

static inline struct queue_msg *
sink_find(struct sink *s, const char *qid)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		if (strcmp(s->m[i]->qid, qid) == 0)
			return s->m[i];
	return NULL;
}

/*
 * One commit's outcome (commit_cb's arg); with qdir set, also whether
 * msg/<qid> existed when the callback ran.
 */
struct commit_res {
	int called;
	int err;
	int present;
	char qid[QID_MAX];
	const char *qdir;
};

static inline void
commit_cb(void *arg, int err, const char *qid)
{
	struct commit_res *c = arg;

	c->called++;
	c->err = err;
	snprintf(c->qid, sizeof(c->qid), "%s", qid != NULL ? qid : "");
	c->present = qid != NULL && c->qdir != NULL && msg_exists(c->qdir, qid);
}

static inline void
closed_cb(void *arg)
{
	(*(int *)arg)++;
}

/* queue_open() or exit(2). */
static inline struct queue *
open_queue(uv_loop_t *loop, const char *dir)
{
	struct buf err = BUF_INIT;
	struct queue *q = NULL;

	if (queue_open(loop, dir, &q, &err) != 0) {
		fprintf(stderr, "queue_open: %s\n", buf_cstr(&err));
		exit(2);
	}
	buf_free(&err);
	return q;
}

/* Close q and run the loop until its close callback has fired. */
static inline void
close_queue(uv_loop_t *loop, struct queue *q)
{
	int closed = 0;

	queue_close(q, closed_cb, &closed);
	uv_run(loop, UV_RUN_DEFAULT);
	CHECK_INT(closed, 1);
}

/* Run the loop dry and check that it closes cleanly. */
static inline void
close_loop(uv_loop_t *loop)
{
	uv_run(loop, UV_RUN_DEFAULT);
	CHECK_INT(uv_loop_close(loop), 0);
}

#ifdef RELAY_TEST_HOOKS
/* The queue's sync thread held where it takes its next group until open
 * (tests' gate): queue_test_set_sync_fn(q, sync_hold_fn, &g), with g's
 * mutex and condition initialised; sync_hold_open(&g) lets it go. */
struct sync_hold {
	uv_mutex_t mu;
	uv_cond_t cv;
	bool open;
};

static inline void
sync_hold_fn(void *arg, int phase, unsigned commits, unsigned probes, unsigned others)
{
	struct sync_hold *g = arg;

	(void)commits;
	(void)probes;
	(void)others;
	if (phase != QUEUE_TEST_SYNC_TAKE)
		return;
	uv_mutex_lock(&g->mu);
	while (!g->open)
		uv_cond_wait(&g->cv, &g->mu);
	uv_mutex_unlock(&g->mu);
}

static inline void
sync_hold_open(struct sync_hold *g)
{
	uv_mutex_lock(&g->mu);
	g->open = true;
	uv_cond_broadcast(&g->cv);
	uv_mutex_unlock(&g->mu);
}
#endif


/*
 * A child that dies by SIGKILL and reports through a pipe first.
 * fixture_fork() makes the pipe fds and forks (stdio flushed first):
 * the child's 0, the parent's pid; exit(2) on failure.
 */
static inline pid_t
fixture_fork(int fds[2])
{
	pid_t pid;

	if (pipe(fds) == -1)
		exit(2);
	fflush(NULL);
	if ((pid = fork()) == -1)
		exit(2);
	return pid;
}

/* In the child: write n bytes of line to fd (or _exit(3)), then SIGKILL itself. */
static inline void
fixture_report_and_die(int fd, const char *line, int n)
{
	if (write(fd, line, (size_t)n) != n)
		_exit(3);
	kill(getpid(), SIGKILL);
}

/* In the parent: read the child's report, to EOF, into buf (NUL-terminated); close the pipe. */
static inline void
fixture_read_report(int fds[2], char *buf, size_t size)
{
	size_t off = 0;
	ssize_t n;

	close(fds[1]);
	while ((n = read(fds[0], buf + off, size - 1 - off)) > 0)
		off += (size_t)n;
	buf[off] = '\0';
	close(fds[0]);
}

#endif
