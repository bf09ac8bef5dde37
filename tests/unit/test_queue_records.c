/*
 * test_queue_records.c - a recipient's explicit states in the queue file:
 * "waiting for its destination" (QREC_WAIT_DEST), "expired"
 * (QREC_EXPIRED) and "the next hop took DSN on" (QREC_DSN_PASSED) are written by queue_record() into a real queue, read back
 * by a new queue_open() + queue_scan() (a restart), and decide when the
 * recipient is due again (sched_rcpt_due) -- never the status text, which a
 * remote server may have chosen ("451 4.4.1", "554 4.4.7").  Records written
 * by a relayd from before these flags (value 0 or 1 only) still load, and
 * mean what they say.
 */
#include "fixture.h"
#include "router/router_sched.h"
#include "queue/queue_int.h"          /* queue_rcpt_set_last(), for the packing */

#include <dirent.h>
#include <stdbool.h>

#define M (60 * 1000ULL)
#define T0 1767225700000ULL

/* r's last attempt's strings (queue_rcpt_last), by value for the checks. */
static struct queue_last
last_of(const struct queue_rcpt *r)
{
	struct queue_last l;

	queue_rcpt_last(r, &l);
	return l;
}

/* Field k of l, in struct queue_last's order. */
static const char *
last_field(const struct queue_last *l, size_t k)
{
	return k == 0 ? l->host : k == 1 ? l->ip : k == 2 ? l->status : l->reply;
}

static const uint64_t iv[] = { 1 * M, 10 * M };

static struct env_rcpt one_rcpt[] = {
	{ .addr = "bob@example.net" },
};
static const struct envelope one_env = {
	.sender = "alice@example.org", .rcpts = one_rcpt, .nrcpts = 1,
	.arrival_ms = T0 - M,
};

/* Commit one message with env into dir; its queue id into qid. */
static void
commit_one(uv_loop_t *loop, struct queue *q, char *qid)
{
	static const char body[] = "Subject: x\r\n\r\nbody\r\n";
	struct commit_res res;
	struct queue_txn *t = NULL;

	memset(&res, 0, sizeof(res));
	CHECK_INT(queue_txn_begin(q, &one_env, &t), 0);
	if (t == NULL)
		exit(2);
	CHECK_INT(queue_txn_write(t, body, sizeof(body) - 1), 0);
	queue_txn_commit(t, commit_cb, &res);
	uv_run(loop, UV_RUN_DEFAULT);
	CHECK_INT(res.called, 1);
	CHECK_INT(res.err, 0);
	snprintf(qid, QID_MAX, "%s", res.qid);
}

/* Open dir again (a restart) and scan it: the one message, or NULL. */
static struct queue_msg *
reload(uv_loop_t *loop, const char *dir, struct sink *scanned)
{
	struct queue *q = open_queue(loop, dir);

	CHECK_INT(queue_scan(q, sink_add, scanned), 0);
	close_queue(loop, q);
	CHECK_INT(scanned->n, 1);
	return scanned->n == 1 ? scanned->m[0] : NULL;
}

/* Files moved to dir/corrupt/ by a scan. */
static int
count_corrupt(const char *dir)
{
	char path[256];
	struct dirent *de;
	int n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "%s/corrupt", dir);
	if ((d = opendir(path)) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

struct rec_row {
	char type;
	const char *status;
	const char *reply;
	int value;
};

static void
test_states_survive_a_restart(void)
{
	static const struct {
		const char *name;
		struct rec_row recs[3];
		enum rcpt_state state;
		bool waiting, expired;
		unsigned attempts;
		uint64_t due;                   /* sched_rcpt_due with iv, rnd 0 */
		bool dsn_passed;                /* the next hop took DSN on (QREC_DSN_PASSED) */
	} rows[] = {
		{ "a remote's own 451 4.4.1: its retry timer",
		    { { 'A', "4.4.1", "451 4.4.1 no answer from next hop", 0 } },
		    RCPT_PENDING, false, false, 1, T0 + 1 * M, false },
		{ "a destination wait after a connection: due at once",
		    { { 'A', "4.4.1", "connection refused", QREC_WAIT_DEST } },
		    RCPT_PENDING, true, false, 1, 0, false },
		{ "a destination wait without a connection: due at once",
		    { { 'A', "4.2.0", "451 4.2.0 busy", 0 },
		      { 'A', "4.4.1", "host down", QREC_NO_ATTEMPT | QREC_WAIT_DEST } },
		    RCPT_PENDING, true, false, 1, 0, false },
		{ "a wait, then a remote deferral: its retry timer",
		    { { 'A', "4.4.1", "connection refused", QREC_WAIT_DEST },
		      { 'A', "4.4.1", "451 4.4.1 try later", 0 } },
		    RCPT_PENDING, false, false, 2, T0 + 10 * M, false },
		{ "expired in the queue",
		    { { 'F', "4.4.7", "no delivery attempt succeeded within 5d",
		        QREC_NO_ATTEMPT | QREC_EXPIRED } },
		    RCPT_FAILED, false, true, 0, UINT64_MAX, false },
		{ "a remote's own 554 4.4.7 is a failure, not an expiry",
		    { { 'F', "4.4.7", "554 4.4.7 message too old", 0 } },
		    RCPT_FAILED, false, false, 1, UINT64_MAX, false },
		{ "relayed to a DSN server: its success notice, not ours",
		    { { 'D', "2.0.0", "250 2.0.0 ok", QREC_DSN_PASSED } },
		    RCPT_DELIVERED, false, false, 1, UINT64_MAX, true },
		{ "relayed to a server without DSN: ours",
		    { { 'D', "2.0.0", "250 2.0.0 ok", 0 } },
		    RCPT_DELIVERED, false, false, 1, UINT64_MAX, false },
	};
	char dir[128], qid[QID_MAX];
	uv_loop_t loop;
	size_t i, k, n;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		struct sink scanned = { .n = 0 };
		struct queue_msg *m;
		struct queue *q;

		uv_loop_init(&loop);
		snprintf(dir, sizeof(dir), "%s/q%d", tdir, ndirs++);
		q = open_queue(&loop, dir);
		{
			struct sink fresh = { .n = 0 };

			queue_set_new_cb(q, sink_add, &fresh);
			commit_one(&loop, q, qid);
			m = sink_find(&fresh, qid);
			CHECK_MSG(m != NULL, "%s", rows[i].name);
			for (n = 0; n < RELAY_ARRAY_LEN(rows[i].recs) && rows[i].recs[n].type != 0; n++)
				;
			for (k = 0; m != NULL && k < n; k++) {
				struct queue_record rec;

				memset(&rec, 0, sizeof(rec));
				rec.type = (enum queue_rec_type)rows[i].recs[k].type;
				rec.rcpt = 0;
				rec.time_ms = T0 - (n - 1 - k) * 10;    /* the last one at T0 */
				rec.host = "mx.example.net";
				rec.ip = "192.0.2.1";
				rec.status = rows[i].recs[k].status;
				rec.reply = rows[i].recs[k].reply;
				rec.value = rows[i].recs[k].value;
				CHECK_INT(queue_record(q, m, &rec, NULL, NULL), 0);
			}
			uv_run(&loop, UV_RUN_DEFAULT);
			close_queue(&loop, q);
			sink_free(&fresh);
		}
		if ((m = reload(&loop, dir, &scanned)) != NULL) {
			const struct queue_rcpt *qr = &m->rcpt[0];

			CHECK_MSG(qr->state == rows[i].state, "%s", rows[i].name);
			CHECK_MSG(qr->waiting == rows[i].waiting, "%s: waiting", rows[i].name);
			CHECK_MSG(qr->expired == rows[i].expired, "%s: expired", rows[i].name);
			CHECK_MSG(qr->dsn_passed == rows[i].dsn_passed, "%s: dsn_passed", rows[i].name);
			CHECK_MSG(qr->attempts == rows[i].attempts, "%s: attempts %u", rows[i].name,
			    qr->attempts);
			CHECK_MSG(sched_rcpt_due(qr, iv, 2, 0) == rows[i].due, "%s: due %llu",
			    rows[i].name, (unsigned long long)sched_rcpt_due(qr, iv, 2, 0));
		}
		sink_free(&scanned);
		close_loop(&loop);
	}
}

/*
 * A queue file as a relayd from before the flags wrote it: an "A" with
 * 4.4.1 (a destination wait or a remote's reply: it did not say) and an
 * "F" with 4.4.7 and value 1 (its expiry).  They load; the first is an
 * ordinary deferral, due on its retry timer; the second an ordinary failure.
 */
static void
test_old_records_load(void)
{
	static const char old_lines[] =
	    "A 0 1767225700000 mx1.example.com 192.0.2.1 4.4.1 connection\\srefused 0\n"
	    "F 1 1767225800000 - - 4.4.7 no\\sdelivery\\sattempt\\ssucceeded\\swithin\\s5d 1\n";
	static struct env_rcpt two[] = {
		{ .addr = "bob@example.net" }, { .addr = "carol@example.org" },
	};
	struct envelope env = one_env;
	struct sink fresh = { .n = 0 }, scanned = { .n = 0 };
	struct commit_res res;
	struct queue_txn *t = NULL;
	struct queue_msg *m;
	struct queue *q;
	uv_loop_t loop;
	char dir[128], path[256];
	int fd;

	env.rcpts = two;
	env.nrcpts = 2;
	uv_loop_init(&loop);
	snprintf(dir, sizeof(dir), "%s/q%d", tdir, ndirs++);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	memset(&res, 0, sizeof(res));
	CHECK_INT(queue_txn_begin(q, &env, &t), 0);
	if (t == NULL)
		exit(2);
	CHECK_INT(queue_txn_write(t, "Subject: old\r\n\r\nx\r\n", 19), 0);
	queue_txn_commit(t, commit_cb, &res);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(res.err, 0);
	close_queue(&loop, q);
	sink_free(&fresh);

	snprintf(path, sizeof(path), "%s/msg/%s", dir, res.qid);
	fd = open(path, O_WRONLY | O_APPEND);
	CHECK(fd >= 0);
	if (fd >= 0) {
		CHECK_INT(write(fd, old_lines, sizeof(old_lines) - 1), (long long)sizeof(old_lines) - 1);
		close(fd);
	}
	if ((m = reload(&loop, dir, &scanned)) != NULL) {
		CHECK(m->rcpt[0].state == RCPT_PENDING);
		CHECK(!m->rcpt[0].waiting);
		CHECK_INT(m->rcpt[0].attempts, 1);
		CHECK_STR(last_of(&m->rcpt[0]).status, "4.4.1");
		CHECK(sched_rcpt_due(&m->rcpt[0], iv, 2, 0) == 1767225700000ULL + 1 * M);
		CHECK(m->rcpt[1].state == RCPT_FAILED);
		CHECK(!m->rcpt[1].expired);
		CHECK_INT(m->rcpt[1].attempts, 0);
	}
	CHECK_INT(count_corrupt(dir), 0);
	sink_free(&scanned);
	close_loop(&loop);
}

/* A record with these strings for m's only recipient. */
static void
record_last(struct queue *q, struct queue_msg *m, int value, const char *host,
    const char *status, const char *reply)
{
	struct queue_record rec;

	memset(&rec, 0, sizeof(rec));
	rec.type = QREC_ATTEMPT;
	rec.rcpt = 0;
	rec.time_ms = T0;
	rec.host = host;
	rec.ip = host != NULL ? "192.0.2.1" : NULL;
	rec.status = status;
	rec.reply = reply;
	rec.value = value;
	CHECK_INT(queue_record(q, m, &rec, NULL, NULL), 0);
}

/*
 * Recipients whose last_* strings are equal (every recipient waiting for a
 * down destination) share one copy of them, as recorded and as read back by
 * a restart's scan; a recipient whose strings change gets its own again and
 * leaves the others' alone; the copies outlive the queue (ASan: no leak, no
 * use after free).
 */
static void
test_last_strings_shared(void)
{
	static const char down[] = "all exchangers of example.net are down";
	struct sink fresh = { .n = 0 }, scanned = { .n = 0 };
	struct queue_msg *m[3];
	struct queue *q;
	uv_loop_t loop;
	char dir[128], qid[3][QID_MAX];
	size_t i;

	uv_loop_init(&loop);
	snprintf(dir, sizeof(dir), "%s/q%d", tdir, ndirs++);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	for (i = 0; i < 3; i++) {
		commit_one(&loop, q, qid[i]);
		m[i] = sink_find(&fresh, qid[i]);
		CHECK(m[i] != NULL);
		if (m[i] == NULL)
			exit(2);
	}
	record_last(q, m[0], QREC_WAIT_DEST, "mx.example.net", "4.4.1", down);
	record_last(q, m[1], QREC_WAIT_DEST, "mx.example.net", "4.4.1", down);
	record_last(q, m[2], 0, "mx.example.net", "4.4.1", "451 4.4.1 try later");
	CHECK(m[0]->rcpt[0].last == m[1]->rcpt[0].last);
	CHECK(m[0]->rcpt[0].last != m[2]->rcpt[0].last);
	CHECK_STR(last_of(&m[1]->rcpt[0]).reply, down);
	CHECK_STR(last_of(&m[2]->rcpt[0]).reply, "451 4.4.1 try later");

	/* m[0] moves on: m[1] keeps its strings */
	record_last(q, m[0], 0, "mx2.example.net", "4.2.0", "451 4.2.0 busy");
	CHECK_STR(last_of(&m[0]->rcpt[0]).host, "mx2.example.net");
	CHECK_STR(last_of(&m[0]->rcpt[0]).reply, "451 4.2.0 busy");
	CHECK_STR(last_of(&m[1]->rcpt[0]).host, "mx.example.net");
	CHECK_STR(last_of(&m[1]->rcpt[0]).ip, "192.0.2.1");
	CHECK_STR(last_of(&m[1]->rcpt[0]).status, "4.4.1");
	CHECK_STR(last_of(&m[1]->rcpt[0]).reply, down);
	/* an expiry keeps the host of the last attempt (QREC_NO_ATTEMPT, NULL host) */
	record_last(q, m[1], QREC_NO_ATTEMPT, NULL, "4.4.7", "expired");
	CHECK_STR(last_of(&m[1]->rcpt[0]).host, "mx.example.net");
	CHECK_STR(last_of(&m[1]->rcpt[0]).ip, "192.0.2.1");
	CHECK_STR(last_of(&m[1]->rcpt[0]).reply, "expired");
	record_last(q, m[2], 0, "mx.example.net", "4.4.1", down);
	record_last(q, m[1], QREC_WAIT_DEST, "mx.example.net", "4.4.1", down);
	uv_run(&loop, UV_RUN_DEFAULT);
	close_queue(&loop, q);

	/* m[1] and m[2] now end with the same record; m[0] with its own */
	CHECK(m[1]->rcpt[0].last == m[2]->rcpt[0].last);
	sink_free(&fresh);              /* after the queue is gone */

	q = open_queue(&loop, dir);
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	close_queue(&loop, q);
	CHECK_INT(scanned.n, 3);
	for (i = 0; i < 3; i++)
		if ((m[i] = sink_find(&scanned, qid[i])) == NULL)
			exit(2);
	CHECK(m[1]->rcpt[0].last == m[2]->rcpt[0].last);
	CHECK(m[0]->rcpt[0].last != m[1]->rcpt[0].last);
	CHECK_STR(last_of(&m[0]->rcpt[0]).reply, "451 4.2.0 busy");
	CHECK_STR(last_of(&m[2]->rcpt[0]).reply, down);
	CHECK_INT(m[1]->rcpt[0].attempts, 2);
	CHECK(m[1]->rcpt[0].waiting);
	sink_free(&scanned);
	close_loop(&loop);
}

/*
 * The four strings packed into one block: NULL and "" stay apart, strings
 * beyond the packing's stack buffer (512 bytes) take the heap path, bytes
 * that could pass for the block's "present" byte are only bytes, a
 * recipient may be set from its own strings, and equal sets share a block
 * with or without the table in the way (NULL table: a block of its own).
 */
static void
test_last_strings_packing(void)
{
	static char big[3000], big2[700];
	const char *rows[][4] = {
		{ NULL, NULL, NULL, NULL },
		{ "", NULL, NULL, NULL },
		{ NULL, "", NULL, "" },
		{ "", "", "", "" },
		{ "mx", NULL, "4.4.1", NULL },
		{ NULL, "192.0.2.1", NULL, "x" },
		{ "\x01", "\x03a", "\xff\xfe", "\x0f" },
		{ "mx", "192.0.2.1", "4.4.1", big },
		{ big2, NULL, big2, "" },
	};
	struct queue_lasts *l = queue_lasts_new();
	struct queue_rcpt a, b, c;
	size_t i, k;

	memset(big, 'r', sizeof(big) - 1);
	memset(big2, 'h', sizeof(big2) - 1);
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const char *const *w = rows[i];

		memset(&a, 0, sizeof(a));
		memset(&b, 0, sizeof(b));
		memset(&c, 0, sizeof(c));
		queue_rcpt_set_last(l, &a, w[0], w[1], w[2], w[3]);
		queue_rcpt_set_last(l, &b, w[0], w[1], w[2], w[3]);
		queue_rcpt_set_last(NULL, &c, w[0], w[1], w[2], w[3]);
		for (k = 0; k < 3; k++) {
			const struct queue_rcpt *r = k == 0 ? &a : k == 1 ? &b : &c;
			struct queue_last lr = last_of(r);
			const char *got[4] = { lr.host, lr.ip, lr.status, lr.reply };
			size_t j;

			for (j = 0; j < 4; j++) {
				CHECK_MSG((got[j] == NULL) == (w[j] == NULL),
				    "row %zu field %zu: NULL is %s", i, j, got[j] == NULL ? "got" : "lost");
				if (got[j] != NULL && w[j] != NULL)
					CHECK_MSG(strcmp(got[j], w[j]) == 0, "row %zu field %zu differs", i, j);
			}
		}
		if (w[0] != NULL || w[1] != NULL || w[2] != NULL || w[3] != NULL) {
			CHECK_MSG(a.last == b.last, "row %zu: equal strings not shared", i);
			CHECK_MSG(c.last != a.last, "row %zu: no table, yet shared", i);
		}
		/* from its own strings: they stay valid through the swap */
		{
			struct queue_last lb = last_of(&b);

			queue_rcpt_set_last(l, &b, lb.host, lb.ip, lb.status, lb.reply);
		}
		for (k = 0; k < 4; k++) {
			struct queue_last lb = last_of(&b);
			const char *got = k == 0 ? lb.host : k == 1 ? lb.ip : k == 2 ? lb.status : lb.reply;

			CHECK_MSG((got == NULL) == (w[k] == NULL) && (got == NULL || strcmp(got, w[k]) == 0),
			    "row %zu field %zu: changed by setting it from itself", i, k);
		}
		queue_rcpt_free_last(&a);
		queue_rcpt_free_last(&c);
		if (i % 2 == 0)
			queue_rcpt_free_last(&b);
		else {                  /* b outlives the table (freed below) */
			queue_lasts_free(l);
			CHECK(last_of(&b).status == NULL || strcmp(last_of(&b).status, w[2]) == 0);
			queue_rcpt_free_last(&b);
			l = queue_lasts_new();
		}
	}
	queue_lasts_free(l);
}

/*
 * queue_record_idle(): a record for a pending recipient is idle exactly
 * when applying it changes nothing queue_msg_apply() keeps (state, attempts,
 * last attempt's time, flags, the four strings), checked row by row against
 * the apply itself: only a no-attempt deferral that leaves the waiting flag
 * and every string as they are.  From each row's state, as the file would
 * give it.
 */
static void
test_record_idle(void)
{
	static const char down[] = "all exchangers of example.net are down";
	enum { WAITING, OWN_TIMER, NEVER_TRIED, DELIVERED };
	static const struct {
		int from;
		enum queue_rec_type type;
		int value;
		const char *host, *status, *reply;
		bool want;
	} rows[] = {
		/* a restart's recipient, found waiting again */
		{ WAITING, QREC_ATTEMPT, QREC_NO_ATTEMPT | QREC_WAIT_DEST, NULL, "4.4.1", down, true },
		{ WAITING, QREC_ATTEMPT, QREC_NO_ATTEMPT | QREC_WAIT_DEST, "mx.example.net", "4.4.1",
		    down, true },
		{ WAITING, QREC_ATTEMPT, QREC_NO_ATTEMPT | QREC_WAIT_DEST, NULL, NULL, NULL, true },
		/* something changes: not idle */
		{ WAITING, QREC_ATTEMPT, QREC_WAIT_DEST, "mx.example.net", "4.4.1", down, false },
		{ WAITING, QREC_ATTEMPT, QREC_NO_ATTEMPT | QREC_WAIT_DEST, "mx2.example.net", "4.4.1",
		    down, false },
		{ WAITING, QREC_ATTEMPT, QREC_NO_ATTEMPT | QREC_WAIT_DEST, NULL, "4.4.2", down, false },
		{ WAITING, QREC_ATTEMPT, QREC_NO_ATTEMPT | QREC_WAIT_DEST, NULL, "4.4.1",
		    "all exchangers of route:smart.example are down", false },
		{ WAITING, QREC_ATTEMPT, QREC_NO_ATTEMPT, NULL, "4.4.1", down, false },
		{ WAITING, QREC_FAILED, QREC_NO_ATTEMPT | QREC_EXPIRED, NULL, "4.4.7", "expired", false },
		{ WAITING, QREC_FAILED, QREC_NO_ATTEMPT, NULL, "4.4.1", down, false },
		{ WAITING, QREC_DELIVERED, QREC_NO_ATTEMPT, NULL, "4.4.1", down, false },
		{ WAITING, QREC_REPORTED, 0, NULL, NULL, NULL, false },
		/* on its own timer: a no-attempt deferral that says what it said */
		{ OWN_TIMER, QREC_ATTEMPT, QREC_NO_ATTEMPT, NULL, "4.7.5", "tls refused", true },
		{ OWN_TIMER, QREC_ATTEMPT, QREC_NO_ATTEMPT | QREC_WAIT_DEST, NULL, "4.7.5", "tls refused",
		    false },
		{ OWN_TIMER, QREC_ATTEMPT, 0, "mx.example.net", "4.7.5", "tls refused", false },
		/* the first wait of a recipient never tried */
		{ NEVER_TRIED, QREC_ATTEMPT, QREC_NO_ATTEMPT | QREC_WAIT_DEST, NULL, "4.4.1", down, false },
		{ NEVER_TRIED, QREC_ATTEMPT, QREC_NO_ATTEMPT, NULL, NULL, NULL, true },
		/* not pending any more: never idle (the scheduler makes no such
		 * record; it would change nothing either) */
		{ DELIVERED, QREC_ATTEMPT, QREC_NO_ATTEMPT, NULL, NULL, NULL, false },
	};
	struct sink fresh = { .n = 0 };
	struct queue_record rec;
	struct queue_msg *m;
	struct queue *q;
	uv_loop_t loop;
	char dir[128], qid[QID_MAX];
	size_t i;

	uv_loop_init(&loop);
	snprintf(dir, sizeof(dir), "%s/q%d", tdir, ndirs++);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	commit_one(&loop, q, qid);
	if ((m = sink_find(&fresh, qid)) == NULL)
		exit(2);
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct queue_rcpt before;
		struct queue_last lb, la;
		char *was[4];
		bool idle, same;
		size_t k;

		/* the row's state, in memory only (queue_msg_apply: no file) */
		queue_rcpt_free_last(&m->rcpt[0]);
		memset(&m->rcpt[0], 0, sizeof(m->rcpt[0]));
		memset(&rec, 0, sizeof(rec));
		rec.type = QREC_ATTEMPT;
		rec.time_ms = T0;
		rec.host = "mx.example.net";
		rec.ip = "192.0.2.1";
		rec.status = "4.4.1";
		rec.reply = down;
		rec.value = QREC_WAIT_DEST;
		if (rows[i].from == OWN_TIMER) {
			rec.status = "4.7.5";
			rec.reply = "tls refused";
			rec.value = 0;
		} else if (rows[i].from == DELIVERED) {
			rec.type = QREC_DELIVERED;
			rec.status = "2.0.0";
			rec.reply = "250 ok";
			rec.value = 0;
		}
		if (rows[i].from != NEVER_TRIED)
			queue_msg_apply(m, &rec);
		before = m->rcpt[0];
		queue_rcpt_last(&before, &lb);

		memset(&rec, 0, sizeof(rec));
		rec.type = rows[i].type;
		rec.rcpt = 0;
		rec.time_ms = T0 + M;
		rec.host = rows[i].host;
		rec.status = rows[i].status;
		rec.reply = rows[i].reply;
		rec.value = rows[i].value;
		idle = queue_record_idle(m, &rec);
		CHECK_MSG(idle == rows[i].want, "row %zu: idle %d, want %d", i, idle, rows[i].want);

		/* the apply agrees: nothing changes exactly when it is idle (the
		 * strings copied first: the apply may free their block) */
		for (k = 0; k < 4; k++)
			was[k] = last_field(&lb, k) != NULL ? xstrdup(last_field(&lb, k)) : NULL;
		queue_msg_apply(m, &rec);
		queue_rcpt_last(&m->rcpt[0], &la);
		same = m->rcpt[0].state == before.state && m->rcpt[0].attempts == before.attempts &&
		    m->rcpt[0].last_attempt_ms == before.last_attempt_ms &&
		    m->rcpt[0].waiting == before.waiting && m->rcpt[0].expired == before.expired &&
		    m->rcpt[0].reported == before.reported && m->rcpt[0].dsn_passed == before.dsn_passed;
		for (k = 0; k < 4; k++) {
			const char *now = last_field(&la, k);

			if ((now == NULL) != (was[k] == NULL) || (now != NULL && strcmp(now, was[k]) != 0))
				same = false;
			free(was[k]);
		}
		CHECK_MSG(same == idle || (!idle && rows[i].from == DELIVERED),
		    "row %zu: apply changes %s, idle says %d", i, same ? "nothing" : "something", idle);
	}
	/* a recipient index outside the message: never idle */
	rec.type = QREC_ATTEMPT;
	rec.rcpt = 1;
	rec.value = QREC_NO_ATTEMPT | QREC_WAIT_DEST;
	CHECK(!queue_record_idle(m, &rec));
	close_queue(&loop, q);
	sink_free(&fresh);
	close_loop(&loop);
}

int
main(void)
{
	int rc;

	if ((rc = fixture_setup("records")) != 0)
		return rc;
	test_states_survive_a_restart();
	test_old_records_load();
	test_last_strings_shared();
	test_last_strings_packing();
	test_record_idle();
	fixture_teardown();
	return check_done();
}
