/*
 * test_queue_ops.c - records and removals are written by the queue's
 * writer thread, not the loop (queue/QUEUE.md, "Records and removals"):
 * on a real libuv loop and a real directory, records issued from the loop
 * land in the file in the order issued, each one's callback after its sync;
 * a removal issued right after its message's records renames the file
 * without writing them and calls them back once the rename is durable
 * (other records are written as before, and a removal that fails writes
 * them after all); a record on a removed message is refused and writes nothing;
 * relayctl's wait (queue_wait_acked) ends only once they are all in the
 * files; closing the queue with records and a removal still staged writes
 * them all; and a SIGKILL before the writer got them leaves the message as
 * it was, queued; and a new message committed behind hundreds of records
 * reaches the router before they are all synced.  Owns its temporary
 * directory.
 */
#include "fixture.h"

#include <dirent.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/wait.h>

#define NRECS 40

static struct env_rcpt two_rcpts[] = {
	{ .addr = "bob@example.net" }, { .addr = "carol@example.org" },
};
static const struct envelope two_env = {
	.sender = "alice@example.org", .rcpts = two_rcpts, .nrcpts = 2,
	.arrival_ms = 1767225600000ULL,
};

/* The order record callbacks ran in (their index), and their errors. */
struct order {
	int idx[NRECS + 8];
	int err[NRECS + 8];
	int n;
};

struct order_arg {
	struct order *o;
	int i;
};

static void
order_cb(void *arg, int err)
{
	struct order_arg *a = arg;

	a->o->idx[a->o->n] = a->i;
	a->o->err[a->o->n++] = err;
}

/* The i-th test record: a deferral of rcpt i % 2 at time 1000 + i. */
static void
rec_make(struct queue_record *rec, int i)
{
	memset(rec, 0, sizeof(*rec));
	rec->type = QREC_ATTEMPT;
	rec->rcpt = i % 2;
	rec->time_ms = 1000 + (uint64_t)i;
	rec->host = "mx.example.net";
	rec->ip = "192.0.2.7";
	rec->status = "4.2.1";
	rec->reply = "451 try later";
}

/* Commit one message into q (loop run); the message the queue hands out. */
static struct queue_msg *
commit_one(uv_loop_t *loop, struct queue *q, struct sink *fresh)
{
	struct commit_res res;
	struct queue_txn *t = NULL;
	size_t before = fresh->n;

	memset(&res, 0, sizeof(res));
	CHECK_INT(queue_txn_begin(q, &two_env, &t), 0);
	if (t == NULL)
		exit(2);
	CHECK_INT(queue_txn_write(t, "Subject: ops\r\n\r\nbody\r\n", 22), 0);
	queue_txn_commit(t, commit_cb, &res);
	uv_run(loop, UV_RUN_DEFAULT);
	CHECK_INT(res.err, 0);
	CHECK_INT(fresh->n, before + 1);
	if (fresh->n != before + 1)
		exit(1);
	return fresh->m[before];
}

/* The whole content of qdir/msg/<name> (malloc'd, NUL-terminated), or NULL. */
static char *
slurp(const char *qdir, const char *name, size_t *len)
{
	char path[512];
	struct stat st;
	char *p;
	int fd;

	snprintf(path, sizeof(path), "%s/msg/%s", qdir, name);
	if ((fd = open(path, O_RDONLY)) == -1)
		return NULL;
	if (fstat(fd, &st) == -1 || (p = malloc((size_t)st.st_size + 1)) == NULL) {
		close(fd);
		return NULL;
	}
	if (util_pread_full(fd, p, (size_t)st.st_size, 0) == -1) {
		free(p);
		close(fd);
		return NULL;
	}
	close(fd);
	p[st.st_size] = '\0';
	*len = (size_t)st.st_size;
	return p;
}

/* The one name in qdir/msg/ starting with prefix, into out; how many there are. */
static size_t
find_prefixed(const char *qdir, const char *prefix, char *out, size_t len)
{
	char path[256];
	struct dirent *de;
	size_t n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "%s/msg", qdir);
	if ((d = opendir(path)) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		if (strncmp(de->d_name, prefix, strlen(prefix)) == 0 && de->d_name[0] != '\0' &&
		    strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
			snprintf(out, len, "%.63s", de->d_name);
			n++;
		}
	closedir(d);
	return n;
}

struct hist_times {
	uint64_t t[NRECS + 8];
	int n;
};

static void
hist_time(void *arg, const struct queue_record *rec)
{
	struct hist_times *h = arg;

	if (h->n < (int)RELAY_ARRAY_LEN(h->t))
		h->t[h->n] = rec->time_ms;
	h->n++;
}

static void
waited_cb(void *arg)
{
	(*(int *)arg)++;
}

/*
 * Records issued from the loop, in several iterations and many in one, land
 * in issue order; relayctl's wait ends only once they are in the file.
 */
static void
test_records_in_order(void)
{
	static struct order_arg args[NRECS];
	struct sink fresh = { .n = 0 };
	struct order o;
	struct queue_record rec;
	struct queue_waiter w;
	struct hist_times h;
	struct queue_counters c;
	uv_loop_t loop;
	struct queue *q;
	struct queue_msg *m;
	char dir[128];
	int i, waited = 0;

	memset(&o, 0, sizeof(o));
	snprintf(dir, sizeof(dir), "%s/q%d", tdir, ndirs++);
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	m = commit_one(&loop, q, &fresh);

	for (i = 0; i < NRECS; i++) {
		args[i].o = &o;
		args[i].i = i;
		rec_make(&rec, i);
		CHECK_INT(queue_record(q, m, &rec, order_cb, &args[i]), 0);
		if (i == 0) {
			/* applied at once; relayctl must wait for the file */
			CHECK_INT(m->rcpt[0].attempts, 1);
			memset(&w, 0, sizeof(w));
			w.cb = waited_cb;
			w.arg = &waited;
			CHECK(!queue_wait_acked(q, &w));
		}
		if (i % 10 == 9)
			uv_run(&loop, UV_RUN_NOWAIT);        /* some iterations in between */
	}
	CHECK_INT(m->rcpt[0].attempts, NRECS / 2);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(waited, 1);
	CHECK_INT(o.n, NRECS);
	for (i = 0; i < o.n; i++) {
		CHECK_MSG(o.idx[i] == i, "callback %d was record %d", i, o.idx[i]);
		CHECK_INT(o.err[i], 0);
	}
	queue_get_counters(q, &c);
	CHECK_INT(c.records, NRECS);
	memset(&h, 0, sizeof(h));
	CHECK_INT(queue_history(q, m->qid, hist_time, &h), 0);
	CHECK_INT(h.n, NRECS);
	for (i = 0; i < h.n && i < NRECS; i++)
		CHECK_MSG(h.t[i] == 1000 + (uint64_t)i, "history %d: time %llu", i,
		    (unsigned long long)h.t[i]);
	/* nothing outstanding now: relayctl does not wait */
	CHECK(queue_wait_acked(q, &w));
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&fresh);
}

/*
 * A removal right after records of its message (a delivery's D record, then
 * the remove): the id still names the file when queue_remove() returns (the
 * rename waits behind the records), the records are not written (the file
 * renamed to .spare-N holds the message alone: the removal says more), and
 * their callbacks run, in order, only once the rename is durable (the sync
 * thread held: the file is renamed, no callback yet).  A record on the
 * removed message is refused; a second removal too.
 */
static void
test_remove_coalesces_records(void)
{
	static struct order_arg args[NRECS];
	struct sink fresh = { .n = 0 }, scanned = { .n = 0 };
	struct order o;
	struct queue_record rec;
	struct queue_counters c;
	uv_loop_t loop;
	struct queue *q;
	struct queue_msg *m;
	char dir[128], qid[QID_MAX], spare[64], needle[128], *got;
	size_t len = 0;
	int i;
#ifdef RELAY_TEST_HOOKS
	struct sync_hold g;

	memset(&g, 0, sizeof(g));
	CHECK_INT(uv_mutex_init(&g.mu), 0);
	CHECK_INT(uv_cond_init(&g.cv), 0);
#endif
	memset(&o, 0, sizeof(o));
	snprintf(dir, sizeof(dir), "%s/q%d", tdir, ndirs++);
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	m = commit_one(&loop, q, &fresh);
	snprintf(qid, sizeof(qid), "%s", m->qid);
#ifdef RELAY_TEST_HOOKS
	queue_test_set_sync_fn(q, sync_hold_fn, &g);
#endif

	for (i = 0; i < NRECS; i++) {
		args[i].o = &o;
		args[i].i = i;
		rec_make(&rec, i);
		CHECK_INT(queue_record(q, m, &rec, order_cb, &args[i]), 0);
	}
	CHECK_INT(queue_remove(q, m), 0);
	/* nothing is handed over before the loop's check phase: the loop did not rename */
	CHECK(msg_exists(dir, qid));
	CHECK_INT(queue_remove(q, m), RELAY_ENOENT);
	rec_make(&rec, NRECS);
	CHECK_INT(queue_record(q, m, &rec, order_cb, &args[0]), RELAY_ENOENT);
	snprintf(needle, sizeof(needle), "event=queue_error qid=%s op=open", qid);
	CHECK(log_has(needle));
#ifdef RELAY_TEST_HOOKS
	/* the writer renames; the sync thread, held, has not made it durable */
	for (i = 0; i < 5000 && msg_exists(dir, qid); i++) {
		uv_run(&loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	CHECK(!msg_exists(dir, qid));
	uv_run(&loop, UV_RUN_NOWAIT);
	CHECK_INT(o.n, 0);
	sync_hold_open(&g);
#endif
	uv_run(&loop, UV_RUN_DEFAULT);

	CHECK(!msg_exists(dir, qid));
	CHECK_INT(o.n, NRECS);                       /* not the refused one */
	for (i = 0; i < o.n; i++) {
		CHECK_MSG(o.idx[i] == i, "callback %d was record %d", i, o.idx[i]);
		CHECK_INT(o.err[i], 0);
	}
	queue_get_counters(q, &c);
	CHECK_INT(c.records, 0);
	CHECK_INT(c.coalesced, NRECS);
	CHECK_INT(c.recycled, 1);
	CHECK_INT(c.unlinked, 0);
	CHECK_INT(c.failures, 0);
	/* the recycled file: the message alone, no record appended */
	CHECK_INT(find_prefixed(dir, ".spare-", spare, sizeof(spare)), 1);
	if ((got = slurp(dir, spare, &len)) == NULL)
		CHECK_MSG(0, "cannot read %s", spare);
	else {
		CHECK_INT(len, m->body_offset + m->body_len);
		free(got);
	}
	close_queue(&loop, q);
#ifdef RELAY_TEST_HOOKS
	uv_cond_destroy(&g.cv);
	uv_mutex_destroy(&g.mu);
#endif

	/* a restart finds nothing queued and nothing corrupt */
	q = open_queue(&loop, dir);
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	CHECK_INT(scanned.n, 0);
	CHECK_INT(count_dir(dir, "corrupt"), 0);
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&fresh);
}

/*
 * Only the records of the removed message issued right before its removal
 * are left out: one of its records with another message's after it, and
 * that other message's record, are written as before.  Issued: 0 (m), 1
 * (m2), 2 and 3 (m), m's removal; m's spare file ends with record 0 alone,
 * m2's file with record 1; the callbacks run in issue order.
 */
static void
test_record_then_other_written(void)
{
	static struct order_arg args[4];
	struct sink fresh = { .n = 0 };
	struct buf want = BUF_INIT;
	struct order o;
	struct queue_record rec;
	struct queue_counters c;
	uv_loop_t loop;
	struct queue *q;
	struct queue_msg *m, *m2, *who[4];
	char dir[128], spare[64], *got;
	size_t len = 0, size;
	int i;

	memset(&o, 0, sizeof(o));
	snprintf(dir, sizeof(dir), "%s/q%d", tdir, ndirs++);
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	m = commit_one(&loop, q, &fresh);
	m2 = commit_one(&loop, q, &fresh);
	who[0] = m;
	who[1] = m2;
	who[2] = who[3] = m;
	for (i = 0; i < 4; i++) {
		args[i].o = &o;
		args[i].i = i;
		rec_make(&rec, i);
		CHECK_INT(queue_record(q, who[i], &rec, order_cb, &args[i]), 0);
	}
	size = m->body_offset + m->body_len;
	CHECK_INT(queue_remove(q, m), 0);
	uv_run(&loop, UV_RUN_DEFAULT);

	CHECK_INT(o.n, 4);
	for (i = 0; i < o.n; i++) {
		CHECK_MSG(o.idx[i] == i, "callback %d was record %d", i, o.idx[i]);
		CHECK_INT(o.err[i], 0);
	}
	queue_get_counters(q, &c);
	CHECK_INT(c.records, 2);
	CHECK_INT(c.coalesced, 2);
	CHECK_INT(c.failures, 0);
	CHECK_INT(find_prefixed(dir, ".spare-", spare, sizeof(spare)), 1);
	rec_make(&rec, 0);
	envelope_record_encode(&rec, &want);
	if ((got = slurp(dir, spare, &len)) == NULL)
		CHECK_MSG(0, "cannot read %s", spare);
	else {
		CHECK_INT(len, size + want.len);
		if (len == size + want.len)
			CHECK_STR(got + size, buf_cstr(&want));
		free(got);
	}
	buf_reset(&want);
	rec_make(&rec, 1);
	envelope_record_encode(&rec, &want);
	if ((got = slurp(dir, m2->qid, &len)) == NULL)
		CHECK_MSG(0, "cannot read %s", m2->qid);
	else {
		CHECK(len > want.len);
		if (len > want.len)
			CHECK_STR(got + len - want.len, buf_cstr(&want));
		free(got);
	}
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&fresh);
	buf_free(&want);
}

/*
 * A removal that fails (msg/<qid> append-only, FS_APPEND_FL: no rename, no
 * unlink, but appends work) after a record of its message: the record is
 * written after all, synced and called back without error; the removal's
 * failure is logged; the message stays queued with the record (a restart
 * finds it, its recipient delivered: not lost, not delivered again).
 * Skipped where the attribute cannot be set (not root, tmpfs).
 */
static void
test_remove_fails_record_written(void)
{
	struct sink fresh = { .n = 0 }, scanned = { .n = 0 };
	struct order o;
	struct order_arg a = { &o, 0 };
	struct queue_record rec;
	struct queue_counters c;
	uv_loop_t loop;
	struct queue *q;
	struct queue_msg *m, *got;
	char dir[128], qid[QID_MAX], path[256], needle[128];
	int fd, flags = 0;

	memset(&o, 0, sizeof(o));
	snprintf(dir, sizeof(dir), "%s/q%d", tdir, ndirs++);
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	m = commit_one(&loop, q, &fresh);
	snprintf(qid, sizeof(qid), "%s", m->qid);
	snprintf(path, sizeof(path), "%s/msg/%s", dir, qid);
	if ((fd = open(path, O_RDONLY)) == -1 || ioctl(fd, FS_IOC_GETFLAGS, &flags) == -1 ||
	    (flags |= FS_APPEND_FL, ioctl(fd, FS_IOC_SETFLAGS, &flags) == -1)) {
		fprintf(stderr, "test_remove_fails_record_written: skipped (no append-only "
		    "attribute here: %s)\n", strerror(errno));
		if (fd >= 0)
			close(fd);
		close_queue(&loop, q);
		close_loop(&loop);
		sink_free(&fresh);
		return;
	}

	rec_make(&rec, 0);
	rec.type = QREC_DELIVERED;
	rec.rcpt = 0;
	CHECK_INT(queue_record(q, m, &rec, order_cb, &a), 0);
	rec.rcpt = 1;
	CHECK_INT(queue_record(q, m, &rec, order_cb, &a), 0);
	CHECK_INT(queue_remove(q, m), 0);
	uv_run(&loop, UV_RUN_DEFAULT);

	CHECK_INT(o.n, 2);
	CHECK_INT(o.err[0], 0);
	CHECK_INT(o.err[1], 0);
	snprintf(needle, sizeof(needle), "event=queue_error qid=%s op=remove", qid);
	CHECK(log_has(needle));
	CHECK(msg_exists(dir, qid));
	queue_get_counters(q, &c);
	CHECK_INT(c.records, 2);
	CHECK_INT(c.coalesced, 0);
	flags &= ~FS_APPEND_FL;
	CHECK_INT(ioctl(fd, FS_IOC_SETFLAGS, &flags), 0);
	close(fd);
	close_queue(&loop, q);

	/* a restart finds it, both recipients delivered: nothing to send again */
	q = open_queue(&loop, dir);
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	CHECK_INT(scanned.n, 1);
	if ((got = sink_find(&scanned, qid)) == NULL)
		CHECK_MSG(0, "%s not scanned", qid);
	else {
		CHECK_INT(got->rcpt[0].state, RCPT_DELIVERED);
		CHECK_INT(got->rcpt[1].state, RCPT_DELIVERED);
	}
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&scanned);
	sink_free(&fresh);
}

/*
 * An administrator's hold, then delete, while the message's last delivery
 * record is still on its way: all of it reaches the file before the rename,
 * nothing fails, and the queue is empty after a restart.  With nothing on
 * its way, a removal renames at once (relayctl delete on a quiet queue).
 */
static void
test_delete_with_pending_record(void)
{
	struct sink fresh = { .n = 0 }, scanned = { .n = 0 };
	struct order o;
	struct order_arg a[2] = { { &o, 0 }, { &o, 1 } };
	struct queue_record rec;
	struct queue_counters c;
	uv_loop_t loop;
	struct queue *q;
	struct queue_msg *m, *m2;
	char dir[128], qid[QID_MAX];

	memset(&o, 0, sizeof(o));
	snprintf(dir, sizeof(dir), "%s/q%d", tdir, ndirs++);
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	m = commit_one(&loop, q, &fresh);
	m2 = commit_one(&loop, q, &fresh);
	snprintf(qid, sizeof(qid), "%s", m->qid);

	rec_make(&rec, 0);
	rec.type = QREC_DELIVERED;
	CHECK_INT(queue_record(q, m, &rec, order_cb, &a[0]), 0);
	memset(&rec, 0, sizeof(rec));
	rec.type = QREC_HOLD;
	rec.rcpt = -1;
	rec.time_ms = 2000;
	rec.value = 1;
	CHECK_INT(queue_record(q, m, &rec, order_cb, &a[1]), 0);
	CHECK(m->held);
	CHECK_INT(queue_remove(q, m), 0);
	CHECK(msg_exists(dir, qid));                 /* behind the records */
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(!msg_exists(dir, qid));
	CHECK_INT(o.n, 2);
	CHECK_INT(o.err[0], 0);
	CHECK_INT(o.err[1], 0);

	/* nothing on its way now: the id is gone when queue_remove() returns */
	CHECK_INT(queue_remove(q, m2), 0);
	CHECK(!msg_exists(dir, m2->qid));
	uv_run(&loop, UV_RUN_DEFAULT);
	queue_get_counters(q, &c);
	CHECK_INT(c.failures, 0);
	CHECK_INT(c.recycled, 2);
	close_queue(&loop, q);

	q = open_queue(&loop, dir);
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	CHECK_INT(scanned.n, 0);
	CHECK_INT(count_dir(dir, "corrupt"), 0);
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&fresh);
}

/*
 * Closing with records and a removal still staged (the loop has not even
 * handed them over): the close writes and syncs them all, runs their
 * callbacks, and leaves a consistent queue: the recorded message with its
 * records, the removed one gone, no leftover names.
 */
static void
test_close_with_pending_ops(void)
{
	static struct order_arg args[NRECS];
	struct sink fresh = { .n = 0 }, scanned = { .n = 0 };
	struct order o;
	struct queue_record rec;
	struct hist_times h;
	uv_loop_t loop;
	struct queue *q;
	struct queue_msg *keep, *gone;
	char dir[128], kqid[QID_MAX], gqid[QID_MAX];
	int i;

	memset(&o, 0, sizeof(o));
	snprintf(dir, sizeof(dir), "%s/q%d", tdir, ndirs++);
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	keep = commit_one(&loop, q, &fresh);
	gone = commit_one(&loop, q, &fresh);
	snprintf(kqid, sizeof(kqid), "%s", keep->qid);
	snprintf(gqid, sizeof(gqid), "%s", gone->qid);

	rec_make(&rec, 0);
	CHECK_INT(queue_record(q, gone, &rec, NULL, NULL), 0);
	CHECK_INT(queue_remove(q, gone), 0);
	for (i = 0; i < NRECS; i++) {
		args[i].o = &o;
		args[i].i = i;
		rec_make(&rec, i);
		CHECK_INT(queue_record(q, keep, &rec, order_cb, &args[i]), 0);
	}
	close_queue(&loop, q);
	CHECK_INT(o.n, NRECS);
	for (i = 0; i < o.n; i++)
		CHECK_INT(o.err[i], 0);
	CHECK(!msg_exists(dir, gqid));
	{
		/* no .in- name left; the removed one's file may stay as a spare */
		char path[256];
		struct dirent *de;
		DIR *d;

		snprintf(path, sizeof(path), "%s/msg", dir);
		CHECK((d = opendir(path)) != NULL);
		while (d != NULL && (de = readdir(d)) != NULL)
			CHECK_MSG(strcmp(de->d_name, kqid) == 0 || strcmp(de->d_name, ".") == 0 ||
			    strcmp(de->d_name, "..") == 0 || strncmp(de->d_name, ".spare-", 7) == 0,
			    "%s", de->d_name);
		if (d != NULL)
			closedir(d);
	}

	q = open_queue(&loop, dir);
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	CHECK_INT(scanned.n, 1);
	if (scanned.n == 1) {
		CHECK_STR(scanned.m[0]->qid, kqid);
		CHECK_INT(scanned.m[0]->rcpt[0].attempts, NRECS / 2);
		CHECK_INT(scanned.m[0]->rcpt[1].attempts, NRECS / 2);
	}
	memset(&h, 0, sizeof(h));
	CHECK_INT(queue_history(q, kqid, hist_time, &h), 0);
	CHECK_INT(h.n, NRECS);
	CHECK(!log_has("event=queue_incomplete"));
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&fresh);
	sink_free(&scanned);
}

/*
 * A SIGKILL after the loop issued a record and a removal but before the
 * writer thread got them: the message is as it was on disk (its record
 * not there, its file under its id), so it is queued and tried again at
 * the next start -- the window an unsynced record always had.
 */
static void
test_kill_before_the_writer(void)
{
	struct sink fresh = { .n = 0 }, scanned = { .n = 0 };
	struct queue_record rec;
	struct hist_times h;
	uv_loop_t loop;
	struct queue *q;
	char dir[128], qid[QID_MAX], report[64];
	int fds[2], status;
	pid_t pid;

	snprintf(dir, sizeof(dir), "%s/q%d", tdir, ndirs++);
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	snprintf(qid, sizeof(qid), "%s", commit_one(&loop, q, &fresh)->qid);
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&fresh);

	if ((pid = fixture_fork(fds)) == 0) {
		struct sink mine = { .n = 0 };
		uv_loop_t l2;
		struct queue *q2;

		close(fds[0]);
		uv_loop_init(&l2);
		q2 = open_queue(&l2, dir);
		if (queue_scan(q2, sink_add, &mine) != 0 || mine.n != 1)
			_exit(4);
		rec_make(&rec, 0);
		rec.type = QREC_DELIVERED;
		if (queue_record(q2, mine.m[0], &rec, NULL, NULL) != 0 ||
		    queue_remove(q2, mine.m[0]) != 0)
			_exit(5);
		/* the loop never reached its check phase: nothing handed over */
		fixture_report_and_die(fds[1], "issued\n", 7);
		_exit(6);
	}
	fixture_read_report(fds, report, sizeof(report));
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	CHECK_STR(report, "issued\n");

	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	CHECK_INT(scanned.n, 1);
	if (scanned.n == 1) {
		CHECK_STR(scanned.m[0]->qid, qid);
		CHECK(scanned.m[0]->rcpt[0].state == RCPT_PENDING);
	}
	memset(&h, 0, sizeof(h));
	CHECK_INT(queue_history(q, qid, hist_time, &h), 0);
	CHECK_INT(h.n, 0);
	CHECK_INT(count_dir(dir, "corrupt"), 0);
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&scanned);
}

#define NMANY 600

struct many {
	int done, failed;
};

static void
many_cb(void *arg, int err)
{
	struct many *mn = arg;

	mn->done++;
	mn->failed += err != 0;
}

struct many_msgs {
	struct queue_msg *m[NMANY];
	size_t n;
};

static void
many_add(void *arg, struct queue_msg *m)
{
	struct many_msgs *mm = arg;

	if (mm->n == NMANY) {
		queue_msg_free(m);
		return;
	}
	mm->m[mm->n++] = m;
}

static int
open_fds(void)
{
	struct dirent *de;
	DIR *d;
	int n = 0;

	if ((d = opendir("/proc/self/fd")) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

/*
 * A record holds a descriptor from the writer's open to the sync thread's
 * close.  Records on NMANY messages issued at once (every destination found
 * down in one go) must not hold NMANY descriptors: under a descriptor limit
 * with room for QUEUE_OPS_OPEN_MAX of them and a margin, every record is
 * still written (before the bound, the writer opened them all and the
 * rest failed with EMFILE).
 */
static void
test_many_records_bounded_descriptors(void)
{
	static struct many_msgs mm;
	struct commit_res res;
	struct queue_txn *t;
	struct queue_record rec;
	struct queue_counters c;
	struct rlimit old, lim;
	struct many mn = { 0, 0 };
	uv_loop_t loop;
	struct queue *q;
	char dir[128];
	int i, nfd;

	snprintf(dir, sizeof(dir), "%s/q%d", tdir, ndirs++);
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, many_add, &mm);
	for (i = 0; i < NMANY; i++) {
		memset(&res, 0, sizeof(res));
		t = NULL;
		CHECK_INT(queue_txn_begin(q, &two_env, &t), 0);
		if (t == NULL)
			exit(2);
		CHECK_INT(queue_txn_write(t, "Subject: many\r\n\r\nbody\r\n", 23), 0);
		queue_txn_commit(t, commit_cb, &res);
		uv_run(&loop, UV_RUN_DEFAULT);
		CHECK_INT(res.err, 0);
	}
	CHECK_INT(mm.n, NMANY);
	if (mm.n != NMANY)
		exit(1);

	nfd = open_fds();
	CHECK(nfd > 0);
	CHECK_INT(getrlimit(RLIMIT_NOFILE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)nfd + QUEUE_OPS_OPEN_MAX + 64;
	CHECK(lim.rlim_cur < (rlim_t)nfd + NMANY);      /* the test means something */
	CHECK_INT(setrlimit(RLIMIT_NOFILE, &lim), 0);
	for (i = 0; i < NMANY; i++) {
		rec_make(&rec, i);
		CHECK_INT(queue_record(q, mm.m[i], &rec, many_cb, &mn), 0);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(setrlimit(RLIMIT_NOFILE, &old), 0);
	CHECK_INT(mn.done, NMANY);
	CHECK_INT(mn.failed, 0);
	queue_get_counters(q, &c);
	CHECK_INT(c.records, NMANY);
	CHECK_INT(c.failures, 0);
	close_queue(&loop, q);
	close_loop(&loop);
	for (i = 0; i < NMANY; i++)
		queue_msg_free(mm.m[i]);
	mm.n = 0;
}

#ifdef RELAY_TEST_HOOKS
/* How many records were done when the new message reached the router. */
struct overtake {
	struct many *mn;
	struct sink fresh;
	int seen;
};

static void
overtake_add(void *arg, struct queue_msg *m)
{
	struct overtake *ov = arg;

	ov->seen = ov->mn->done;
	sink_add(&ov->fresh, m);
}

/*
 * A new message is synced and published in a group of its own, ahead of
 * the records and removals written before it, which go at most
 * QUEUE_SYNC_OPS_MAX per group: its publish (the router gets it then) does
 * not wait for the sync of hundreds of delivery records, as it did when the
 * sync thread took everything written as one group (a backlog's release
 * delayed other mail by 100-400 ms).  Every group sleeps 100 ms
 * (RELAYD_TEST_PUBLISH_DELAY_MS), so the 256 records take 8 groups; the new
 * message, committed in the same loop iteration, reaches the router with
 * records still outstanding (before: only after all of them).
 */
static void
test_new_message_overtakes_records(void)
{
	struct commit_res res;
	struct queue_txn *t = NULL;
	struct queue_record rec;
	struct overtake ov;
	struct many mn = { 0, 0 };
	uv_loop_t loop;
	struct queue *q;
	struct queue_msg *m;
	char dir[128];
	int i;

	memset(&ov, 0, sizeof(ov));
	memset(&res, 0, sizeof(res));
	ov.mn = &mn;
	ov.seen = -1;
	snprintf(dir, sizeof(dir), "%s/q%d", tdir, ndirs++);
	setenv("RELAYD_TEST_PUBLISH_DELAY_MS", "100", 1);
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	unsetenv("RELAYD_TEST_PUBLISH_DELAY_MS");
	queue_set_new_cb(q, sink_add, &ov.fresh);
	m = commit_one(&loop, q, &ov.fresh);
	queue_set_new_cb(q, overtake_add, &ov);

	for (i = 0; i < QUEUE_OPS_OPEN_MAX; i++) {
		rec_make(&rec, i);
		CHECK_INT(queue_record(q, m, &rec, many_cb, &mn), 0);
	}
	CHECK_INT(queue_txn_begin(q, &two_env, &t), 0);
	if (t == NULL)
		exit(2);
	CHECK_INT(queue_txn_write(t, "Subject: ahead\r\n\r\nbody\r\n", 24), 0);
	queue_txn_commit(t, commit_cb, &res);
	uv_run(&loop, UV_RUN_DEFAULT);

	CHECK_INT(res.err, 0);
	CHECK_INT(ov.fresh.n, 2);
	CHECK_INT(mn.done, QUEUE_OPS_OPEN_MAX);
	CHECK_INT(mn.failed, 0);
	CHECK_MSG(ov.seen >= 0 && ov.seen < QUEUE_OPS_OPEN_MAX,
	    "the new message reached the router after %d of %d records", ov.seen,
	    QUEUE_OPS_OPEN_MAX);
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&ov.fresh);
}

/* Callbacks per loop iteration: a prepare handle starts each iteration. */
struct turns {
	uv_prepare_t prep;
	int done, now, max;
	int next;                    /* the index the next callback must carry */
	int bad;                     /* callbacks out of order or with an error */
};

struct turn_rec {
	struct turns *tu;
	int i;
};

static void
turns_prepare(uv_prepare_t *h)
{
	struct turns *tu = h->data;

	tu->now = 0;
}

static void
turns_cb(void *arg, int err)
{
	struct turn_rec *tr = arg;
	struct turns *tu = tr->tu;

	tu->bad += err != 0 || tr->i != tu->next;
	tu->next = tr->i + 1;
	tu->done++;
	if (++tu->now > tu->max)
		tu->max = tu->now;
}

/*
 * 3,000 records finish while the loop is not running (the test waits for
 * the threads): the loop then runs at most QUEUE_DONE_TURN of their
 * callbacks per iteration, the rest in the next ones (before: all 3,000 in
 * one).
 */
static void
test_done_jobs_bounded_per_turn(void)
{
	struct commit_res res;
	struct queue_record rec;
	static struct turn_rec recs[3000];
	struct turns tu;
	struct sink fresh;
	uv_loop_t loop;
	struct queue *q;
	struct queue_msg *m;
	char dir[128];
	int i, n = 3000;

	memset(&tu, 0, sizeof(tu));
	memset(&res, 0, sizeof(res));
	memset(&fresh, 0, sizeof(fresh));
	snprintf(dir, sizeof(dir), "%s/q%d", tdir, ndirs++);
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	m = commit_one(&loop, q, &fresh);
	uv_prepare_init(&loop, &tu.prep);
	tu.prep.data = &tu;
	uv_prepare_start(&tu.prep, turns_prepare);
	uv_unref((uv_handle_t *)&tu.prep);

	for (i = 0; i < n; i++) {
		recs[i].tu = &tu;
		recs[i].i = i;
		rec_make(&rec, i);
		CHECK_INT(queue_record(q, m, &rec, turns_cb, &recs[i]), 0);
	}
	/* the loop hands records to the writer at the end of its iteration */
	uv_run(&loop, UV_RUN_NOWAIT);
	for (i = 0; i < 20000 && queue_test_ndone(q) < (size_t)n; i++)
		uv_sleep(1);
	CHECK_INT((int)queue_test_ndone(q), n);
	uv_run(&loop, UV_RUN_DEFAULT);

	CHECK_INT(tu.done, n);
	CHECK_INT(tu.bad, 0);                    /* in issue order, none failed */
	/* the callbacks came in one large group: the bound had work to do */
	CHECK_INT(tu.max, QUEUE_DONE_TURN);
	uv_close((uv_handle_t *)&tu.prep, NULL);
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&fresh);
}
#endif

int
main(void)
{
	int rc;

	if ((rc = fixture_setup("queue-ops")) != 0)
		return rc;
	test_records_in_order();
	test_remove_coalesces_records();
	test_record_then_other_written();
	test_remove_fails_record_written();
	test_delete_with_pending_record();
	test_close_with_pending_ops();
	test_kill_before_the_writer();
	test_many_records_bounded_descriptors();
#ifdef RELAY_TEST_HOOKS
	test_new_message_overtakes_records();
	test_done_jobs_bounded_per_turn();
#endif
	fixture_teardown();
	return check_done();
}
