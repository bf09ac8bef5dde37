/*
 * test_queue.c - unit tests of the durable queue (queue/queue.c,
 * queue/queue_envelope.c) on a real libuv loop and a real directory:
 * envelopes and bodies survive a commit and a re-scan field by field, state
 * records replay to the same state, a torn last record is cut off, leftovers
 * of uncommitted transactions and spare files are removed (but not a
 * message's second name), unparseable files go to corrupt/, concurrent
 * commits share a few group syncs (in every sync mode), removed messages'
 * files are reused for new ones (same inode, exact new length, never while
 * somebody reads them, bounded pool), and a message whose commit callback
 * fired survives the SIGKILL of its process, also on a recycled file; DKIM
 * fields and their ids survive a restart; a body beyond QUEUE_BODY_MAX is
 * refused when written and corrupt when a file claims it, and one whose
 * offset and length add up to 4 GiB or more is deleted when removed.
 * A directory's listing (queue_read_dir()) has every name once, sorted,
 * with its inode, and keeps what a walk has not passed when it gives the
 * rest back; a listing that readdir cuts short (EIO) is an error, never a
 * shorter queue.  The scan waits for the writer's backlog of records, and
 * a stop while it waits cancels the wait.
 * Every test ends by checking that the loop closes cleanly.
 * Owns its temporary directories and removes them at the end.
 */
#include "queue/queue.h"
#include "queue/queue_int.h"         /* queue_read_dir(), for the listing */
#include "common/log.h"
#include "common/util.h"
#include "check.h"
#include "fixture.h"

#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * Fixtures.
 */

/*
 * readdir(3) for this program (it takes the place of libc's): the real one,
 * but while readdir_fail is set, the call after readdir_left more entries
 * fails with it (a directory block the disk cannot read: EIO).
 */
static int readdir_fail;
static size_t readdir_left;

/* named as queue_dir.c calls it (this file may see readdir as readdir64) */
struct dirent *test_readdir(DIR *d) __asm__("readdir");

struct dirent *
test_readdir(DIR *d)
{
	static struct dirent *(*real)(DIR *);

	if (real == NULL)
		*(void **)&real = dlsym(RTLD_NEXT, "readdir");
	if (readdir_fail != 0) {
		if (readdir_left == 0) {
			errno = readdir_fail;
			return NULL;
		}
		readdir_left--;
	}
	return real(d);
}

/* A fresh queue directory below the test's temporary directory. */
/* r's last attempt's strings (queue_rcpt_last), by value for the checks. */
static struct queue_last
last_of(const struct queue_rcpt *r)
{
	struct queue_last l;

	queue_rcpt_last(r, &l);
	return l;
}

static const char *
new_qdir(char *out, size_t len)
{
	snprintf(out, len, "%s/q%d", tdir, ndirs++);
	return out;
}

/* Names in qdir/msg/ starting with prefix (not "." and ".."). */
static size_t
count_prefixed(const char *qdir, const char *prefix)
{
	char path[256];
	struct dirent *de;
	size_t n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "%s/msg", qdir);
	if ((d = opendir(path)) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		if (strncmp(de->d_name, prefix, strlen(prefix)) == 0 &&
		    strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static int
file_exists(const char *qdir, const char *sub, const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s/%s", qdir, sub, name);
	return access(path, F_OK) == 0;
}

static void
write_raw(const char *path, const void *p, size_t len, int flags)
{
	int fd = open(path, O_WRONLY | O_CREAT | flags, 0600);

	if (fd == -1 || write(fd, p, len) != (ssize_t)len) {
		perror(path);
		exit(2);
	}
	close(fd);
}

static off_t
file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : -1;
}

static ino_t
file_ino(const char *qdir, const char *qid)
{
	char path[256];
	struct stat st;

	snprintf(path, sizeof(path), "%s/msg/%s", qdir, qid);
	return stat(path, &st) == 0 ? st.st_ino : 0;
}

/* Begin, write body in pieces of chunk bytes, commit; loop not run. */
static void
submit(struct queue *q, const struct envelope *env, const char *body, size_t len, size_t chunk,
    struct commit_res *res)
{
	struct queue_txn *t = NULL;
	size_t off, n;

	CHECK_INT(queue_txn_begin(q, env, &t), 0);
	if (t == NULL)
		exit(2);
	for (off = 0; off < len; off += n) {
		n = len - off < chunk ? len - off : chunk;
		CHECK_INT(queue_txn_write(t, body + off, n), 0);
	}
	queue_txn_commit(t, commit_cb, res);
}

static int
streq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static void
check_env_equal(const struct envelope *got, const struct envelope *want, uint64_t size)
{
	size_t i;

	CHECK(streq(got->sender, want->sender));
	CHECK_INT(got->nrcpts, want->nrcpts);
	for (i = 0; i < got->nrcpts && i < want->nrcpts; i++) {
		CHECK_MSG(streq(got->rcpts[i].addr, want->rcpts[i].addr), "rcpt %zu addr", i);
		CHECK_MSG(streq(got->rcpts[i].orcpt, want->rcpts[i].orcpt), "rcpt %zu orcpt", i);
		CHECK_MSG(got->rcpts[i].notify == want->rcpts[i].notify, "rcpt %zu notify", i);
	}
	CHECK(streq(got->envid, want->envid));
	CHECK_INT(got->ret, want->ret);
	CHECK_INT(got->body_8bit, want->body_8bit);
	CHECK_INT(got->smtputf8, want->smtputf8);
	CHECK(streq(got->auth_user, want->auth_user));
	CHECK(streq(got->client_ip, want->client_ip));
	CHECK(streq(got->client_helo, want->client_helo));
	CHECK_INT(got->arrival_ms, want->arrival_ms);
	CHECK_INT(got->size, size);
}

static void
check_body(const struct queue *q, const struct queue_msg *m, const char *body, size_t len)
{
	char *got = xmalloc(len + 1), path[PATH_MAX];
	int fd = open(queue_msg_path(q, m, path, sizeof(path)), O_RDONLY);

	CHECK(fd >= 0);
	CHECK_INT(m->body_len, len);
	CHECK(pread(fd, got, len, (off_t)m->body_offset) == (ssize_t)len);
	CHECK(memcmp(got, body, len) == 0);
	close(fd);
	free(got);
}

/* Envelopes that exercise every field and every escape. */
static struct env_rcpt rich_rcpts[] = {
	{ "bob@example.com", "rfc822;bob@example.com", ENV_NOTIFY_SUCCESS | ENV_NOTIFY_FAILURE },
	{ "jörg@bücher.example", "utf-8;jörg@bücher.example", ENV_NOTIFY_NEVER },
	{ "\"john doe\"@example.org", NULL, 0 },
	{ "-dash\\back@example.net", "rfc822;a b\tc", ENV_NOTIFY_DELAY | ENV_NOTIFY_FAILURE },
};

static const struct envelope rich_env = {
	.sender = "alice@relay.test",
	.rcpts = rich_rcpts,
	.nrcpts = 4,
	.envid = "ENV ID\\1-",
	.ret = ENV_RET_FULL,
	.body_8bit = true,
	.smtputf8 = true,
	.auth_user = "alice@relay.test",
	.client_ip = "127.0.0.1",
	.client_helo = "client.example",
	.arrival_ms = 1767225600123ULL,
};

static struct env_rcpt ndr_rcpts[] = {
	{ "alice@relay.test", NULL, 0 },
};

static const struct envelope ndr_env = {
	.sender = "",
	.rcpts = ndr_rcpts,
	.nrcpts = 1,
	.ret = ENV_RET_NONE,
	.arrival_ms = 1,
};

static struct env_rcpt hdrs_rcpts[] = {
	{ "-", "-", ENV_NOTIFY_SUCCESS | ENV_NOTIFY_FAILURE | ENV_NOTIFY_DELAY },
	{ "x@y", "", 0 },
};

static const struct envelope hdrs_env = {
	.sender = "-",
	.rcpts = hdrs_rcpts,
	.nrcpts = 2,
	.envid = "",
	.ret = ENV_RET_HDRS,
	.auth_user = "",
	.client_ip = "::1",
	.client_helo = "[IPv6:::1]",
	.arrival_ms = 18446744073709551615ULL,
};

/*
 * Pure parts: queue ids and the field escaping.
 */

static void
test_qid(void)
{
	static const struct {
		uint64_t ms;
		uint32_t seq, rnd;
		const char *want;
	} rows[] = {
		{ 0, 0, 0, "00000000000000000000" },
		{ 1, 1, 1, "00000000010001000001" },
		{ 1767225600123ULL, 31, 32, "01KDVDNA3V000Z000010" },
		{ (1ULL << 50) - 1, (1u << 20) - 1, (1u << 30) - 1, "ZZZZZZZZZZZZZZZZZZZZ" },
	};
	static const struct {
		const char *s;
		int want;
	} valid[] = {
		{ "00000000010001000001", 1 }, { "A", 1 }, { "", 0 }, { "abc", 0 },
		{ "../etc/passwd", 0 }, { "0123456789012345678901234567890", 1 },
		{ "01234567890123456789012345678901", 0 }, { "AB-C", 0 },
	};
	char qid[QID_MAX], prev[QID_MAX];
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		queue_qid_make(qid, rows[i].ms, rows[i].seq, rows[i].rnd);
		CHECK_STR(qid, rows[i].want);
		CHECK(queue_qid_valid(qid));
	}
	for (i = 0; i < RELAY_ARRAY_LEN(valid); i++)
		CHECK_MSG(queue_qid_valid(valid[i].s) == valid[i].want, "%s", valid[i].s);
	/* time order is string order, whatever the random part */
	queue_qid_make(prev, 1767225600123ULL, 7, (1u << 30) - 1);
	queue_qid_make(qid, 1767225600124ULL, 0, 0);
	CHECK(strcmp(prev, qid) < 0);
	queue_qid_make(qid, 1767225600123ULL, 8, 0);
	CHECK(strcmp(prev, qid) < 0);
}

static void
test_escape(void)
{
	static const struct {
		const char *in;
		const char *want;
	} rows[] = {
		{ NULL, " -" },
		{ "", " \\e" },
		{ "plain", " plain" },
		{ "a b", " a\\sb" },
		{ "-", " \\x2d" },
		{ "-x-", " \\x2dx-" },
		{ "back\\slash", " back\\\\slash" },
		{ "250 2.0.0 Ok\r\n250 more", " 250\\s2.0.0\\sOk\\x0d\\x0a250\\smore" },
		{ "tab\there\x7f", " tab\\x09here\\x7f" },
		{ "grüße 日本", " grüße\\s日本" },
	};
	static const char *bad[] = { "\\q", "\\x0", "\\x00", "\\xzz", "a\\" };
	struct buf b = BUF_INIT;
	char *out, tmp[64];
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		buf_reset(&b);
		envelope_escape(&b, rows[i].in);
		CHECK_STR(buf_cstr(&b), rows[i].want);
		CHECK(strchr(buf_cstr(&b) + 1, ' ') == NULL);
		CHECK(strchr(buf_cstr(&b), '\n') == NULL);
		CHECK_INT(envelope_unescape(b.data + 1, &out), 0);
		CHECK(streq(out, rows[i].in));
	}
	for (i = 0; i < RELAY_ARRAY_LEN(bad); i++) {
		snprintf(tmp, sizeof(tmp), "%s", bad[i]);
		CHECK_MSG(envelope_unescape(tmp, &out) == -1, "%s", bad[i]);
	}
	buf_free(&b);
}

static void
test_envelope_decode_rejects(void)
{
	static const struct {
		const char *text;
		const char *why;
	} rows[] = {
		{ "arrival 1\nsender a\nenvid -\nret -\nbody 7BIT\nsmtputf8 0\nuser -\nclient - -\n",
		  "envelope: no \"rcpt\"" },
		{ "arrival 1\nsender a\nsender b\n", "envelope line 3: bad \"sender\"" },
		{ "arrival x\n", "envelope line 1: bad \"arrival\"" },
		{ "colour blue\n", "envelope line 1: unknown key" },
		{ "arrival 1\nsender  a\n", "envelope line 2: bad fields" },
		{ "arrival 1\nsender a", "envelope line 2: no newline" },
		{ "arrival 1\nsender -\n", "envelope line 2: bad \"sender\"" },
		{ "rcpt BOGUS a -\n", "envelope line 1: bad \"rcpt\"" },
		{ "ret PARTIAL\n", "envelope line 1: bad \"ret\"" },
	};
	struct buf why = BUF_INIT, text = BUF_INIT;
	struct envelope env;
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		buf_reset(&why);
		buf_reset(&text);
		buf_puts(&text, rows[i].text);
		CHECK_INT(envelope_decode(text.data, text.len, &env, &why), -1);
		CHECK_STR(buf_cstr(&why), rows[i].why);
		CHECK(env.sender == NULL && env.rcpts == NULL);
	}
	/* and what encode writes, decode reads back */
	buf_reset(&text);
	envelope_encode(&rich_env, &text);
	CHECK_INT(envelope_decode(text.data, text.len, &env, &why), 0);
	check_env_equal(&env, &rich_env, 0);
	envelope_free(&env);
	buf_free(&why);
	buf_free(&text);
}

/*
 * Commit and scan.
 */

/*
 * The images kept for the first delivery attempt stay under their bound:
 * past it a message has none (its file serves), a freed one gives its bytes
 * back, and a borrowed reference outlives the message's own.
 */
static void
test_image_bound(void)
{
	struct commit_res res[4];
	struct sink fresh = { .n = 0 };
	struct queue_image *lent;
	struct queue_msg *m[4];
	char body[1000];
	uv_loop_t loop;
	struct queue *q;
	char dir[128];
	size_t i, one = 0, held0 = queue_image_held();

	memset(body, 'x', sizeof(body));
	memset(res, 0, sizeof(res));
	new_qdir(dir, sizeof(dir));
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	for (i = 0; i < 3; i++) {
		submit(q, &rich_env, body, sizeof(body), sizeof(body), &res[i]);
		uv_run(&loop, UV_RUN_DEFAULT);
		m[i] = sink_find(&fresh, res[i].qid);
		CHECK(m[i] != NULL);
		if (m[i] == NULL)
			exit(1);
		if (i == 0) {                           /* room for two images, not three */
			one = queue_image_held() - held0;
			CHECK(one > sizeof(body));
			queue_image_set_max(held0 + 2 * one + one / 2);
		}
	}
	CHECK(m[0]->image != NULL && m[1]->image != NULL);
	CHECK(m[2]->image == NULL);                     /* over the bound: from its file */
	CHECK_INT(queue_image_held(), held0 + 2 * one);

	lent = queue_image_ref(m[0]->image);            /* a delivery borrows it */
	queue_msg_drop_image(m[0]);
	CHECK(m[0]->image == NULL);
	CHECK_INT(queue_image_held(), held0 + 2 * one);         /* still lent */
	CHECK(memcmp(queue_image_body(lent), body, sizeof(body)) == 0);
	queue_image_unref(lent);
	CHECK_INT(queue_image_held(), held0 + one);             /* room again */
	submit(q, &rich_env, body, sizeof(body), sizeof(body), &res[3]);
	uv_run(&loop, UV_RUN_DEFAULT);
	m[3] = sink_find(&fresh, res[3].qid);
	CHECK(m[3] != NULL && m[3]->image != NULL);

	queue_image_set_max(0);                         /* none at all */
	memset(&res[2], 0, sizeof(res[2]));
	submit(q, &rich_env, body, sizeof(body), sizeof(body), &res[2]);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(sink_find(&fresh, res[2].qid) != NULL && sink_find(&fresh, res[2].qid)->image == NULL);
	queue_image_set_max(QUEUE_IMAGE_MAX);
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&fresh);                              /* frees the messages and their images */
	CHECK_INT(queue_image_held(), held0);
}

static void
test_roundtrip_files(bool named)
{
	/*
	 * Small bodies go to disk in one write by the commit thread: into a
	 * spare file, or, with no spare ready, into a file it creates.  Above
	 * 64 KiB the loop writes (creating the file if need be) and patches the
	 * header with pwrite.  Both with unnamed files and, where those cannot
	 * be made, with named ones (msg/.in-<qid>, msg/.spare-N).
	 */
	static const struct {
		const struct envelope *env;
		size_t len;
		size_t chunk;
		int spares;             /* let the spare files be made first */
	} rows[] = {
		{ &rich_env, 4096, 100, 0 },
		{ &ndr_env, 0, 1, 0 },
		{ &hdrs_env, 300 * 1024 + 7, 8192, 0 },
		{ &rich_env, 65536, 65536, 0 },
		{ &rich_env, 4096, 4096, 1 },
		{ &hdrs_env, 1, 1, 1 },
		{ &ndr_env, 100 * 1024, 1000, 1 },
	};
	struct queue_counters c;
	struct commit_res res[RELAY_ARRAY_LEN(rows)];
	char *bodies[RELAY_ARRAY_LEN(rows)];
	struct sink fresh = { .n = 0 }, scanned = { .n = 0 };
	struct queue_msg *m;
	uv_loop_t loop;
	struct queue *q;
	char dir[128];
	size_t i, k;

	new_qdir(dir, sizeof(dir));
	memset(res, 0, sizeof(res));
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_named_files(q, named);
	queue_set_new_cb(q, sink_add, &fresh);
	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		bodies[i] = xmalloc(rows[i].len + 1);
		for (k = 0; k < rows[i].len; k++)        /* CRLF lines and every byte value */
			bodies[i][k] = (char)(k % 80 == 78 ? '\r' : k % 80 == 79 ? '\n' : (k * 7 + i) & 0xff);
		if (rows[i].spares)
			uv_run(&loop, UV_RUN_DEFAULT);
		submit(q, rows[i].env, bodies[i], rows[i].len, rows[i].chunk, &res[i]);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	queue_get_counters(q, &c);
	CHECK_INT(c.created_late, 2);                   /* rows 0 and 1 */
	CHECK_INT(c.spares_used, 3);                    /* rows 4 to 6 */
	CHECK_INT(fresh.n, RELAY_ARRAY_LEN(rows));
	/* spare files have names only where unnamed files cannot be made */
	CHECK_MSG(named ? count_prefixed(dir, ".spare-") > 0 : count_prefixed(dir, ".") == 0,
	    "named %d", (int)named);
	CHECK_INT(count_prefixed(dir, ".in-"), 0);
	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		CHECK_INT(res[i].called, 1);
		CHECK_INT(res[i].err, 0);
		CHECK(queue_qid_valid(res[i].qid));
		CHECK(file_exists(dir, "msg", res[i].qid));
		m = sink_find(&fresh, res[i].qid);
		CHECK(m != NULL);
		if (m == NULL)
			continue;
		check_env_equal(&m->env, rows[i].env, rows[i].len);
		check_body(q, m, bodies[i], rows[i].len);
		/* one write: the image stays with it, the same bytes as the file */
		CHECK_MSG((m->image != NULL) == (rows[i].len < 65536), "row %zu", i);
		if (m->image != NULL)
			CHECK(memcmp(queue_image_body(m->image), bodies[i], rows[i].len) == 0);
	}
	CHECK(queue_image_held() > 4096 * 2);
	close_queue(&loop, q);
	/* the unnamed spare files are gone; named ones stay for the next start */
	CHECK_INT(count_dir(dir, "msg") - count_prefixed(dir, ".spare-"), RELAY_ARRAY_LEN(rows));
	CHECK_INT(count_prefixed(dir, ".in-"), 0);
	CHECK(!file_exists(dir, "", "incoming"));

	/* a new process would see exactly the same */
	q = open_queue(&loop, dir);
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	CHECK_INT(scanned.n, RELAY_ARRAY_LEN(rows));
	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		m = sink_find(&scanned, res[i].qid);
		CHECK(m != NULL);
		if (m == NULL)
			continue;
		check_env_equal(&m->env, rows[i].env, rows[i].len);
		check_body(q, m, bodies[i], rows[i].len);
		{
			char path[PATH_MAX], want[PATH_MAX];

			snprintf(want, sizeof(want), "%s/msg/%s", dir, res[i].qid);
			CHECK_STR(queue_msg_path(q, m, path, sizeof(path)), want);
		}
		for (k = 0; k < m->env.nrcpts; k++)
			CHECK(m->rcpt[k].state == RCPT_PENDING && m->rcpt[k].attempts == 0);
		CHECK(!m->held && !m->delay_warned);
	}
	/* scan hands them out oldest first */
	for (i = 1; i < scanned.n; i++)
		CHECK(strcmp(scanned.m[i - 1]->qid, scanned.m[i]->qid) < 0);
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&fresh);
	sink_free(&scanned);
	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++)
		free(bodies[i]);
}

static void
test_roundtrip(void)
{
	test_roundtrip_files(false);
	test_roundtrip_files(true);
}

/*
 * A txn reserved without an envelope (submit's session threads keep a few):
 * the qid and spare file are taken at once, the envelope comes later; an
 * envelope refused (RELAY_EINVAL) leaves it blank and usable, and an unused
 * one's abort gives its spare file back to the pool.
 */
static void
test_reserved_files(bool named)
{
	static const struct envelope none = { .sender = "x@y", .nrcpts = 0 };
	struct queue_counters c;
	struct commit_res res;
	struct sink fresh = { .n = 0 };
	struct queue_txn *t = NULL, *u = NULL;
	char dir[128], qid[QID_MAX];
	uv_loop_t loop;
	struct queue *q;

	new_qdir(dir, sizeof(dir));
	memset(&res, 0, sizeof(res));
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_named_files(q, named);
	queue_set_new_cb(q, sink_add, &fresh);
	uv_run(&loop, UV_RUN_DEFAULT);                  /* the spare files are made */
	CHECK_INT(queue_txn_begin(q, NULL, &t), 0);
	CHECK_INT(queue_txn_begin(q, NULL, &u), 0);
	if (t == NULL || u == NULL)
		exit(1);
	snprintf(qid, sizeof(qid), "%s", queue_txn_qid(t));
	CHECK(queue_qid_valid(qid));
	CHECK_INT(queue_txn_envelope(t, &none), RELAY_EINVAL);
	CHECK_INT(queue_txn_envelope(t, &rich_env), 0);
	CHECK_INT(queue_txn_write(t, "reserved\r\n", 10), 0);
	queue_txn_commit(t, commit_cb, &res);
	queue_txn_abort(u);
	uv_run(&loop, UV_RUN_DEFAULT);
	queue_get_counters(q, &c);
	CHECK_INT(res.called, 1);
	CHECK_INT(res.err, 0);
	CHECK(strcmp(res.qid, qid) == 0);               /* the id reserved */
	CHECK_INT(c.spares_used, 2);
	CHECK_INT(c.created_late, 0);
	CHECK_INT(fresh.n, 1);
	if (fresh.n == 1) {
		check_env_equal(&fresh.m[0]->env, &rich_env, 10);
		check_body(q, fresh.m[0], "reserved\r\n", 10);
	}
	close_queue(&loop, q);                          /* returns: no txn left open */
	CHECK_INT(count_prefixed(dir, ".in-"), 0);
	if (named)      /* u's spare is back (a stop keeps named ones); t's is the message */
		CHECK_INT(count_prefixed(dir, ".spare-"), QUEUE_SPARES - 1);
	close_loop(&loop);
	sink_free(&fresh);
}

static void
test_reserved(void)
{
	test_reserved_files(false);
	test_reserved_files(true);
}

/*
 * The strings of the client's session (login, client address, HELO name) are
 * shared between the queued messages that carry the same three: submitted
 * and loaded by the start-up scan (its thread) alike.  The sender is not.
 */
static struct env_rcpt share_rcpts[][1] = {
	{ { "bob@example.com", NULL, 0 } },
	{ { "carol@example.com", "rfc822;carol@example.com", ENV_NOTIFY_FAILURE } },
	{ { "dave@example.com", NULL, 0 } },
	{ { "alice@relay.test", NULL, 0 } },
	{ { "erin@example.com", NULL, 0 } },
	{ { "frank@example.com", NULL, 0 } },
	{ { "grace@example.com", NULL, 0 } },
	{ { "heidi@example.com", NULL, 0 } },
};

static const struct envelope share_env[] = {
	/* 0, 1: one session, two messages; 7: the same session, another sender */
	{ .sender = "alice@relay.test", .rcpts = share_rcpts[0], .nrcpts = 1, .auth_user = "alice",
	  .client_ip = "127.0.0.1", .client_helo = "client.example", .arrival_ms = 1 },
	{ .sender = "alice@relay.test", .rcpts = share_rcpts[1], .nrcpts = 1, .auth_user = "alice",
	  .client_ip = "127.0.0.1", .client_helo = "client.example", .arrival_ms = 2 },
	/* 2: another client address */
	{ .sender = "alice@relay.test", .rcpts = share_rcpts[2], .nrcpts = 1, .auth_user = "alice",
	  .client_ip = "127.0.0.2", .client_helo = "client.example", .arrival_ms = 3 },
	/* 3, 5: internal mail (NULL login and client); 4 and 6: "" where 3 has NULL */
	{ .sender = "", .rcpts = share_rcpts[3], .nrcpts = 1, .arrival_ms = 4 },
	{ .sender = "", .rcpts = share_rcpts[4], .nrcpts = 1, .auth_user = "", .arrival_ms = 5 },
	{ .sender = "", .rcpts = share_rcpts[5], .nrcpts = 1, .arrival_ms = 6 },
	{ .sender = "", .rcpts = share_rcpts[6], .nrcpts = 1, .client_ip = "", .arrival_ms = 7 },
	{ .sender = "bounce+1234@relay.test", .rcpts = share_rcpts[7], .nrcpts = 1, .auth_user = "alice",
	  .client_ip = "127.0.0.1", .client_helo = "client.example", .arrival_ms = 8 },
};

static void
check_shared(struct queue_msg *const m[RELAY_ARRAY_LEN(share_env)], const char *what)
{
	static const size_t same[] = { 1, 7 };      /* m[0]'s session */
	size_t i, k;

	for (i = 0; i < RELAY_ARRAY_LEN(share_env); i++) {
		check_env_equal(&m[i]->env, &share_env[i], 3);
		CHECK_MSG(m[i]->env.packed && m[i]->env.shared, "%s: %zu", what, i);
	}
	/* one session: one block (pointer-equal strings); sender and recipient apart */
	for (k = 0; k < RELAY_ARRAY_LEN(same); k++) {
		i = same[k];
		CHECK_MSG(m[0]->env.auth_user == m[i]->env.auth_user, "%s: %zu", what, i);
		CHECK_MSG(m[0]->env.client_ip == m[i]->env.client_ip, "%s: %zu", what, i);
		CHECK_MSG(m[0]->env.client_helo == m[i]->env.client_helo, "%s: %zu", what, i);
		CHECK_MSG(m[0]->env.sender != m[i]->env.sender, "%s: %zu", what, i);
		CHECK_MSG(m[0]->env.rcpts[0].addr != m[i]->env.rcpts[0].addr, "%s: %zu", what, i);
	}
	/* another client address: a block of its own, though the other two are equal */
	CHECK_MSG(m[2]->env.auth_user != m[0]->env.auth_user, "%s", what);
	CHECK_MSG(m[2]->env.client_helo != m[0]->env.client_helo, "%s", what);
	/* NULL and "" kept apart */
	CHECK_MSG(m[3]->env.auth_user == NULL && m[3]->env.client_ip == NULL &&
	    m[3]->env.client_helo == NULL, "%s", what);
	CHECK_MSG(m[4]->env.auth_user != NULL && m[4]->env.client_ip == NULL, "%s", what);
	CHECK_MSG(m[6]->env.auth_user == NULL && m[6]->env.client_ip != NULL, "%s", what);
	CHECK_MSG(m[4]->env.auth_user != m[6]->env.client_ip, "%s", what);
}

struct share_scan {
	struct sink sink;
	bool done;
};

static void
share_scan_take(void *arg, struct queue_msg *m)
{
	struct share_scan *ss = arg;

	sink_add(&ss->sink, m);
}

static void
share_scan_done(void *arg, size_t loaded, size_t corrupt, uint64_t ms)
{
	struct share_scan *ss = arg;

	(void)ms;
	CHECK_INT(loaded, RELAY_ARRAY_LEN(share_env));
	CHECK_INT(corrupt, 0);
	ss->done = true;
}

static void
test_envelope_shared(void)
{
	struct commit_res res[RELAY_ARRAY_LEN(share_env)];
	struct queue_msg *m[RELAY_ARRAY_LEN(share_env)];
	struct sink fresh = { .n = 0 };
	struct share_scan ss = { .done = false };
	struct queue_scanner *sc;
	struct envelope copy;
	uv_loop_t loop;
	struct queue *q;
	char dir[128];
	size_t i;

	new_qdir(dir, sizeof(dir));
	memset(res, 0, sizeof(res));
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	for (i = 0; i < RELAY_ARRAY_LEN(share_env); i++)
		submit(q, &share_env[i], "abc", 3, 3, &res[i]);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(fresh.n, RELAY_ARRAY_LEN(share_env));
	for (i = 0; i < RELAY_ARRAY_LEN(share_env); i++)
		if ((m[i] = sink_find(&fresh, res[i].qid)) == NULL)
			exit(2);
	check_shared(m, "submitted");
	/* a plain copy (ndr/'s, the tests') is packed whole, apart from it */
	envelope_copy(&copy, &m[0]->env);
	CHECK(copy.packed && !copy.shared);
	check_env_equal(&copy, &share_env[0], 3);
	CHECK(copy.sender != m[0]->env.sender && copy.client_ip != m[0]->env.client_ip);
	envelope_free(&copy);
	close_queue(&loop, q);
	/* the messages outlive their queue and its table: freed one by one */
	for (i = 0; i < fresh.n && fresh.m[i] != m[0]; i++)
		;
	fresh.m[i] = fresh.m[--fresh.n];
	queue_msg_free(m[0]);
	CHECK_STR(m[1]->env.client_helo, "client.example");
	sink_free(&fresh);

	/* loaded at start-up, on the scan's thread */
	q = open_queue(&loop, dir);
	sc = queue_scanner_new(q, share_scan_take, share_scan_done, &ss);
	queue_scanner_run(sc);
	while (!ss.done)
		uv_run(&loop, UV_RUN_ONCE);
	for (i = 0; i < RELAY_ARRAY_LEN(share_env); i++)
		if ((m[i] = sink_find(&ss.sink, res[i].qid)) == NULL)
			exit(2);
	check_shared(m, "loaded");
	queue_scanner_stop(sc);
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&ss.sink);
}

/*
 * The session table is used from two threads at once: the start-up scan
 * loads messages (queue_load() on its thread) while the loop takes new ones
 * (queue_txn_begin()), each a lookup and, for a client it has not seen, a
 * block put in the table (another's evicted).  Every message keeps its own
 * three strings, NULL apart from "", loaded or submitted, freed on the
 * loop whichever thread made its block; under TSan, no race.  Message 0's
 * HELO name is longer than the block built on the stack, and its login
 * holds the bytes the block's first byte takes.
 */
#define SHARE_THREADS_N 200

struct share_threads {
	size_t scanned, fresh, bad;
	bool done;
};

/* Message i's envelope: every other one the same session, the rest each another client. */
static void
share_threads_env(uint64_t i, struct envelope *env, struct env_rcpt *rc, char *ip, size_t iplen)
{
	static char helo[700];

	memset(helo, 'h', sizeof(helo) - 1);
	memset(env, 0, sizeof(*env));
	memset(rc, 0, sizeof(*rc));
	rc->addr = (char *)"bob@example.com";
	env->sender = (char *)"alice@relay.test";
	env->rcpts = rc;
	env->nrcpts = 1;
	env->arrival_ms = i + 1;
	if (i % 4 == 2)
		return;                 /* internal: none of the three */
	snprintf(ip, iplen, i % 2 ? "127.0.0.1" : "10.0.%u.%u", (unsigned)(i / 256), (unsigned)(i % 256));
	env->auth_user = (char *)(i == 0 ? "\x01\x07\x03" : i % 4 == 0 ? "" : "alice");
	env->client_ip = ip;
	env->client_helo = i == 0 ? helo : i % 4 == 0 ? NULL : (char *)"client.example";
}

static bool
share_threads_ok(const struct queue_msg *m)
{
	struct envelope want;
	struct env_rcpt rc;
	char ip[32];

	if (m->env.arrival_ms == 0)
		return false;
	share_threads_env(m->env.arrival_ms - 1, &want, &rc, ip, sizeof(ip));
	return m->env.shared && streq(m->env.auth_user, want.auth_user) &&
	    streq(m->env.client_ip, want.client_ip) && streq(m->env.client_helo, want.client_helo) &&
	    streq(m->env.sender, want.sender);
}

/* A message from the scan (scanned) or a submission (fresh): checked, freed. */
static void
share_threads_got(struct share_threads *st, struct queue_msg *m, bool scanned)
{
	if (scanned)
		st->scanned++;
	else
		st->fresh++;
	st->bad += !share_threads_ok(m);
	queue_msg_free(m);
}

static void
share_threads_take(void *arg, struct queue_msg *m)
{
	share_threads_got(arg, m, true);
}

static void
share_threads_new(void *arg, struct queue_msg *m)
{
	share_threads_got(arg, m, false);
}

static void
share_threads_done(void *arg, size_t loaded, size_t corrupt, uint64_t ms)
{
	struct share_threads *st = arg;

	(void)ms;
	CHECK_INT(loaded, SHARE_THREADS_N);
	CHECK_INT(corrupt, 0);
	st->done = true;
}

static void
test_envelope_shared_threads(void)
{
	struct commit_res res[2 * SHARE_THREADS_N];
	struct share_threads st;
	struct queue_scanner *sc;
	struct envelope env;
	struct env_rcpt rc;
	uv_loop_t loop;
	struct queue *q;
	char dir[128], ip[32];
	size_t i;

	memset(&st, 0, sizeof(st));
	memset(res, 0, sizeof(res));
	new_qdir(dir, sizeof(dir));
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, share_threads_new, &st);
	for (i = 0; i < SHARE_THREADS_N; i++) {
		share_threads_env(i, &env, &rc, ip, sizeof(ip));
		submit(q, &env, "abc", 3, 3, &res[i]);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(st.fresh, SHARE_THREADS_N);
	close_queue(&loop, q);

	/* scanned on its thread while the loop takes more */
	st.fresh = 0;
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, share_threads_new, &st);
	sc = queue_scanner_new(q, share_threads_take, share_threads_done, &st);
	queue_scanner_run(sc);
	for (i = SHARE_THREADS_N; i < 2 * SHARE_THREADS_N; i++) {
		share_threads_env(i, &env, &rc, ip, sizeof(ip));
		submit(q, &env, "abc", 3, 3, &res[i]);
	}
	while (!st.done)
		uv_run(&loop, UV_RUN_ONCE);
	while (st.fresh < SHARE_THREADS_N)       /* the 250 may come before the hand-over */
		uv_run(&loop, UV_RUN_ONCE);
	for (i = 0; i < 2 * SHARE_THREADS_N; i++)
		CHECK_INT(res[i].err, 0);
	CHECK_INT(st.scanned, SHARE_THREADS_N);
	CHECK_INT(st.fresh, SHARE_THREADS_N);
	CHECK_INT(st.bad, 0);
	queue_scanner_stop(sc);
	close_queue(&loop, q);
	close_loop(&loop);
}

/*
 * State records.
 */

struct sync_res {
	int called;
	int err;
};

static void
sync_cb(void *arg, int err)
{
	struct sync_res *s = arg;

	s->called++;
	s->err = err;
}

struct hist {
	struct buf b;
	size_t n;
};

static void
hist_cb(void *arg, const struct queue_record *rec)
{
	struct hist *h = arg;

	h->n++;
	buf_printf(&h->b, "%c %d %llu %s|%s|%s|%s %d\n", (char)rec->type, rec->rcpt,
	    (unsigned long long)rec->time_ms, rec->host ? rec->host : "(null)",
	    rec->ip ? rec->ip : "(null)", rec->status ? rec->status : "(null)",
	    rec->reply ? rec->reply : "(null)", rec->value);
}

static const struct queue_record replay_recs[] = {
	{ QREC_ATTEMPT, 0, 1000, "mx1.example.com", "192.0.2.1", "4.2.1", "451 4.2.1 try later\r\nmore", 0 },
	{ QREC_ATTEMPT, 1, 1001, NULL, NULL, "4.4.1", "connection refused", 0 },
	{ QREC_HOLD, -1, 1002, NULL, NULL, NULL, NULL, 1 },
	{ QREC_ATTEMPT, 0, 2000, "mx2.example.com", "192.0.2.2", "4.3.0", "", 0 },
	{ QREC_DELIVERED, 0, 3000, "mx1.example.com", "192.0.2.1", "2.0.0", "250 2.0.0 Ok: queued as X", 0 },
	{ QREC_FAILED, 1, 4000, "mx3.example.com", "192.0.2.3", "5.1.1", "550 5.1.1 <-x> no such user", 0 },
	{ QREC_REPORTED, 1, 4001, NULL, NULL, NULL, NULL, 0 },
	{ QREC_HOLD, -1, 4002, NULL, NULL, NULL, NULL, 0 },
	{ QREC_WARNED, -1, 4003, NULL, NULL, NULL, NULL, 0 },
	{ QREC_FAILED, 2, 5000, NULL, NULL, "4.4.7", NULL, QREC_NO_ATTEMPT },
};

static const struct {
	enum rcpt_state state;
	unsigned attempts;
	uint64_t last_ms;
	const char *host, *ip, *status, *reply;
	bool reported;
} replay_want[] = {
	{ RCPT_DELIVERED, 3, 3000, "mx1.example.com", "192.0.2.1", "2.0.0", "250 2.0.0 Ok: queued as X", false },
	{ RCPT_FAILED, 2, 4000, "mx3.example.com", "192.0.2.3", "5.1.1", "550 5.1.1 <-x> no such user", true },
	{ RCPT_FAILED, 0, 0, NULL, NULL, "4.4.7", NULL, false },
};

static void
check_replayed(const struct queue_msg *m)
{
	size_t i;

	CHECK_INT(m->env.nrcpts, RELAY_ARRAY_LEN(replay_want));
	for (i = 0; i < m->env.nrcpts && i < RELAY_ARRAY_LEN(replay_want); i++) {
		CHECK_MSG(m->rcpt[i].state == replay_want[i].state, "rcpt %zu state", i);
		CHECK_MSG(m->rcpt[i].attempts == replay_want[i].attempts, "rcpt %zu attempts", i);
		CHECK_MSG(m->rcpt[i].last_attempt_ms == replay_want[i].last_ms, "rcpt %zu last", i);
		CHECK_MSG(streq(last_of(&m->rcpt[i]).host, replay_want[i].host), "rcpt %zu host", i);
		CHECK_MSG(streq(last_of(&m->rcpt[i]).ip, replay_want[i].ip), "rcpt %zu ip", i);
		CHECK_MSG(streq(last_of(&m->rcpt[i]).status, replay_want[i].status), "rcpt %zu status", i);
		CHECK_MSG(streq(last_of(&m->rcpt[i]).reply, replay_want[i].reply), "rcpt %zu reply", i);
		CHECK_MSG(m->rcpt[i].reported == replay_want[i].reported, "rcpt %zu reported", i);
	}
	CHECK(!m->held);
	CHECK(m->delay_warned);
}

static void
test_records(void)
{
	static struct env_rcpt rcpts[] = {
		{ "a@example.com", NULL, 0 }, { "b@example.com", NULL, 0 }, { "c@example.com", NULL, 0 },
	};
	struct envelope env = rich_env;
	struct sync_res sres[RELAY_ARRAY_LEN(replay_recs)];
	struct queue_record bad;
	struct commit_res res = { 0 };
	struct sink fresh = { .n = 0 }, scanned = { .n = 0 };
	struct hist h = { BUF_INIT, 0 }, h2 = { BUF_INIT, 0 };
	struct queue_counters c;
	uv_loop_t loop;
	struct queue *q;
	struct queue_msg *m;
	char dir[128], path[256];
	off_t size;
	size_t i;

	env.rcpts = rcpts;
	env.nrcpts = RELAY_ARRAY_LEN(rcpts);
	new_qdir(dir, sizeof(dir));
	memset(sres, 0, sizeof(sres));
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	submit(q, &env, "body\r\n", 6, 6, &res);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(fresh.n, 1);
	if (fresh.n != 1)
		exit(1);
	m = fresh.m[0];

	/* a held message, mid-way: state applied at once, callback after the sync */
	for (i = 0; i < RELAY_ARRAY_LEN(replay_recs); i++) {
		CHECK_INT(queue_record(q, m, &replay_recs[i], sync_cb, &sres[i]), 0);
		if (i == 2)
			CHECK(m->held);
	}
	CHECK_INT(sres[0].called, 0);
	/* records that do not fit the message are refused and not written */
	bad = replay_recs[0];
	bad.rcpt = 3;
	CHECK_INT(queue_record(q, m, &bad, NULL, NULL), RELAY_EINVAL);
	bad.type = (enum queue_rec_type)'Z';
	bad.rcpt = 0;
	CHECK_INT(queue_record(q, m, &bad, NULL, NULL), RELAY_EINVAL);
	uv_run(&loop, UV_RUN_DEFAULT);
	for (i = 0; i < RELAY_ARRAY_LEN(replay_recs); i++) {
		CHECK_INT(sres[i].called, 1);
		CHECK_INT(sres[i].err, 0);
	}
	queue_get_counters(q, &c);
	CHECK_INT(c.records, RELAY_ARRAY_LEN(replay_recs));
	check_replayed(m);
	CHECK_INT(queue_history(q, m->qid, hist_cb, &h), 0);
	CHECK_INT(h.n, RELAY_ARRAY_LEN(replay_recs));
	CHECK_INT(queue_history(q, "NOSUCHQID", hist_cb, &h2), RELAY_ENOENT);
	CHECK_INT(queue_history(q, "../msg", hist_cb, &h2), RELAY_ENOENT);
	close_queue(&loop, q);

	/* replay from disk gives the same state and the same history */
	q = open_queue(&loop, dir);
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	CHECK_INT(scanned.n, 1);
	if (scanned.n == 1)
		check_replayed(scanned.m[0]);
	CHECK_INT(queue_history(q, m->qid, hist_cb, &h2), 0);
	CHECK_STR(buf_cstr(&h2.b), buf_cstr(&h.b));
	sink_free(&scanned);
	close_queue(&loop, q);

	/* a torn last record (crash in the middle of an append) is ignored and cut off */
	snprintf(path, sizeof(path), "%s/msg/%s", dir, m->qid);
	size = file_size(path);
	write_raw(path, "D 2 9000 mx9 192.0.2.9 2.0.0 250\\sok", 36, O_APPEND);
	q = open_queue(&loop, dir);
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	CHECK_INT(scanned.n, 1);
	if (scanned.n == 1) {
		check_replayed(scanned.m[0]);
		CHECK_INT(file_size(path), size);
		/* the next append starts on a clean line and replays */
		CHECK_INT(queue_record(q, scanned.m[0], &replay_recs[9], sync_cb, &sres[0]), 0);
		uv_run(&loop, UV_RUN_DEFAULT);
		CHECK_INT(sres[0].called, 2);
	}
	sink_free(&scanned);
	close_queue(&loop, q);
	q = open_queue(&loop, dir);
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	CHECK_INT(scanned.n, 1);
	CHECK_INT(count_dir(dir, "corrupt"), 0);
	h2.n = 0;
	CHECK_INT(queue_history(q, m->qid, hist_cb, &h2), 0);
	CHECK_INT(h2.n, RELAY_ARRAY_LEN(replay_recs) + 1);

	/* removal */
	if (scanned.n == 1) {
		CHECK_INT(queue_remove(q, scanned.m[0]), 0);
		CHECK(!file_exists(dir, "msg", m->qid));
		CHECK_INT(queue_remove(q, scanned.m[0]), RELAY_ENOENT);
	}
	sink_free(&scanned);
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&fresh);
	buf_free(&h.b);
	buf_free(&h2.b);
}

/*
 * Crash leftovers.
 */

static void
test_leftovers(void)
{
	struct sink scanned = { .n = 0 };
	struct commit_res res = { 0 };
	struct queue_txn *t = NULL;
	uv_loop_t loop;
	struct queue *q;
	char dir[128], path[256], mpath[256], *big;

	new_qdir(dir, sizeof(dir));
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	/* a transaction that never committed: past the write buffer its file has
	 * content, but no name (nothing for a crash to leave), and abort drops it */
	CHECK_INT(queue_txn_begin(q, &rich_env, &t), 0);
	big = xcalloc(1, 70000);
	CHECK_INT(queue_txn_write(t, big, 70000), 0);
	free(big);
	CHECK_INT(count_dir(dir, "msg"), 0);
	queue_txn_abort(t);
	close_queue(&loop, q);

	/* what a killed process can leave in msg/: a new message's file before
	 * its rename, spare files (one a removed message's, one too large to
	 * recycle, one a directory), and, from an older version, files in
	 * incoming/.  The spare files that can be are kept as spares. */
	snprintf(path, sizeof(path), "%s/msg/.in-00000000000000000000", dir);
	write_raw(path, "RELAYQ 1 ", 9, 0);
	snprintf(path, sizeof(path), "%s/msg/.spare-3", dir);
	write_raw(path, "", 0, 0);
	snprintf(path, sizeof(path), "%s/msg/.spare-4", dir);
	write_raw(path, "RELAYQ 1 0000000000000030 0000000000000000\nrcpt - a@b -\n.\n", 57, 0);
	snprintf(path, sizeof(path), "%s/msg/.spare-5", dir);
	big = xcalloc(1, 300 * 1024);
	write_raw(path, big, 300 * 1024, 0);
	free(big);
	snprintf(path, sizeof(path), "%s/msg/.spare-6", dir);
	CHECK_INT(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/incoming", dir);
	CHECK_INT(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/incoming/00000000000000000001", dir);
	write_raw(path, "RELAYQ 1 ", 9, 0);
	snprintf(path, sizeof(path), "%s/incoming/spare-left", dir);
	write_raw(path, "", 0, 0);

	q = open_queue(&loop, dir);
	CHECK_INT(count_prefixed(dir, ".spare-"), 3);   /* 3 and 4 kept; 6 (not a file) */
	CHECK(!file_exists(dir, "msg", ".spare-5"));
	CHECK_INT(count_dir(dir, "msg"), 3);
	CHECK(!file_exists(dir, "", "incoming"));
	CHECK(log_has("event=queue_incomplete qid=.in-00000000000000000000 action=removed"));
	CHECK(log_has("event=queue_incomplete qid=00000000000000000001 action=removed"));
	CHECK(log_has("event=queue_spares_removed count=1"));  /* .spare-5 */
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	CHECK_INT(scanned.n, 0);
	CHECK_INT(count_dir(dir, "corrupt"), 0);
	snprintf(path, sizeof(path), "%s/msg/.spare-6", dir);
	CHECK_INT(rmdir(path), 0);

	/* a rename or link cut in half (one inode under two names): the
	 * message stays queued, the other name goes */
	submit(q, &rich_env, "x\r\n", 3, 3, &res);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(res.err, 0);
	close_queue(&loop, q);
	snprintf(mpath, sizeof(mpath), "%s/msg/%s", dir, res.qid);
	snprintf(path, sizeof(path), "%s/msg/.spare-77", dir);
	CHECK_INT(link(mpath, path), 0);
	snprintf(path, sizeof(path), "%s/msg/.in-%s", dir, res.qid);
	CHECK_INT(link(mpath, path), 0);
	snprintf(path, sizeof(path), "%s/incoming", dir);
	CHECK_INT(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/incoming/spare-78", dir);
	CHECK_INT(link(mpath, path), 0);
	q = open_queue(&loop, dir);
	CHECK(log_has("event=queue_incomplete qid=.spare-77 action=\"removed (published)\""));
	CHECK(log_has("event=queue_incomplete qid=spare-78 action=\"removed (published)\""));
	CHECK(!file_exists(dir, "msg", ".spare-77"));
	CHECK_INT(count_dir(dir, "msg") - count_prefixed(dir, ".spare-"), 1);
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	CHECK_INT(scanned.n, 1);
	if (scanned.n == 1)
		check_body(q, scanned.m[0], "x\r\n", 3);
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&scanned);
}

/*
 * Recycling: a removed message's file becomes the next message's.
 */

/* Descriptors of this process open on msg/.spare-N files of qdir, deleted
 * ones only if deleted (not the unnamed spares: O_TMPFILE files read
 * "(deleted)" too). */
static int
count_spare_fds(const char *qdir, bool deleted)
{
	char path[300], target[PATH_MAX];
	struct dirent *de;
	DIR *d = opendir("/proc/self/fd");
	ssize_t n;
	int count = 0;

	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
		if ((n = readlink(path, target, sizeof(target) - 1)) <= 0)
			continue;
		target[n] = '\0';
		count += strncmp(target, qdir, strlen(qdir)) == 0 &&
		    strncmp(target + strlen(qdir), "/msg/.spare-", 12) == 0 &&
		    (!deleted || strstr(target, " (deleted)") != NULL);
	}
	closedir(d);
	return count;
}

/*
 * A recycled file's descriptor, opened for its lease check, is kept for the
 * writer (up to QUEUE_KEPT_MAX, the newest): the next message written into
 * it needs no open.  One the loop opened itself (a message past the write
 * buffer) has its kept descriptor closed, so that nothing but the message's
 * own readers holds it when it is removed and recycled again.
 */
enum { KEPT_N = QUEUE_KEPT_MAX + 36 };

struct kept_sink {
	struct queue_msg *m[2 * KEPT_N + 4];
	size_t n;
};

static void
kept_sink_add(void *arg, struct queue_msg *m)
{
	struct kept_sink *s = arg;

	if (s->n == RELAY_ARRAY_LEN(s->m)) {
		queue_msg_free(m);
		return;
	}
	s->m[s->n++] = m;
}

static void
test_recycle_kept(void)
{
	enum { N = KEPT_N };
	static struct commit_res res[2 * N + 4];
	static struct kept_sink fresh;
	struct queue_counters c;
	char dir[128], *body;
	uv_loop_t loop;
	struct queue *q;
	size_t i;

	new_qdir(dir, sizeof(dir));
	memset(res, 0, sizeof(res));
	memset(&fresh, 0, sizeof(fresh));
	body = xmalloc(70000);
	memset(body, 'k', 70000);
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, kept_sink_add, &fresh);
	uv_run(&loop, UV_RUN_DEFAULT);

	/* two messages, a small one and one past the write buffer, removed */
	submit(q, &rich_env, body, 100, 100, &res[0]);
	submit(q, &rich_env, body, 70000, 70000, &res[1]);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(fresh.n, 2);
	if (fresh.n != 2)
		exit(1);
	CHECK_INT(queue_remove(q, fresh.m[0]), 0);
	CHECK_INT(queue_remove(q, fresh.m[1]), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	queue_get_counters(q, &c);
	CHECK_INT(c.recycled, 2);

	/* the large one takes the file removed last (the loop opens it), the
	 * small one the other, through the descriptor kept for it */
	submit(q, &rich_env, body, 70000, 70000, &res[2]);
	submit(q, &rich_env, body, 100, 100, &res[3]);
	uv_run(&loop, UV_RUN_DEFAULT);
	queue_get_counters(q, &c);
	CHECK_INT(c.spares_reused, 2);
	CHECK_INT(c.kept_reused, 1);
	CHECK_INT(fresh.n, 4);
	if (fresh.n != 4)
		exit(1);
	check_body(q, fresh.m[2], body, 70000);
	check_body(q, fresh.m[3], body, 100);
	/* removed again: both recycled (no stale descriptor of ours on either) */
	CHECK_INT(queue_remove(q, fresh.m[2]), 0);
	CHECK_INT(queue_remove(q, fresh.m[3]), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	queue_get_counters(q, &c);
	CHECK_INT(c.recycled, 4);
	CHECK_INT(c.unlinked, 0);

	/* more removed at once than descriptors are kept: the newest are, and
	 * the pool gives those out first */
	for (i = 0; i < N; i++)
		submit(q, &rich_env, body, 100, 100, &res[4 + i]);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(fresh.n, 4 + N);
	if (fresh.n != 4 + N)
		exit(1);
	for (i = 0; i < N; i++)
		CHECK_INT(queue_remove(q, fresh.m[4 + i]), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	queue_get_counters(q, &c);
	CHECK_INT(c.recycled, 4 + N);
	CHECK_INT(c.kept_reused, 1 + 2);                /* the two small ones of the first N */
	for (i = 0; i < N; i++)
		submit(q, &rich_env, body, 200, 200, &res[4 + N + i]);
	uv_run(&loop, UV_RUN_DEFAULT);
	queue_get_counters(q, &c);
	CHECK_INT(c.failures, 0);
	CHECK_INT(c.kept_reused, 3 + QUEUE_KEPT_MAX);
	CHECK_INT(fresh.n, 4 + 2 * N);
	for (i = 4 + N; i < 4 + 2 * N && i < fresh.n; i++)
		check_body(q, fresh.m[i], body, 200);
	/* removed again and stopped with their descriptors kept: the close
	 * closes them (their files stay, for the next start's pool) */
	for (i = 4 + N; i < fresh.n; i++)
		CHECK_INT(queue_remove(q, fresh.m[i]), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(count_spare_fds(dir, false), QUEUE_KEPT_MAX);
	close_queue(&loop, q);
	close_loop(&loop);
	CHECK_INT(count_spare_fds(dir, false), 0);      /* none left open by the close */
	for (i = 0; i < fresh.n; i++)
		queue_msg_free(fresh.m[i]);
	free(body);
}

/*
 * A recycled file deleted while its recycling's descriptor is still kept
 * for the writer (a transaction that took it and was aborted after writing,
 * a switch to named files that empties the pool): the kept descriptor is
 * closed with it, and holds no deleted file's blocks (it did until its slot
 * was taken over).
 */
/* One small message committed, then removed: its file recycled (the
 * queue's nth of each, fresh holding it). */
static void
kept_submit_recycle(uv_loop_t *loop, struct queue *q, struct kept_sink *fresh,
    struct commit_res *res)
{
	struct queue_counters c;
	size_t n = fresh->n + 1;

	submit(q, &rich_env, "hello\r\n", 7, 7, res);
	uv_run(loop, UV_RUN_DEFAULT);
	CHECK_INT(fresh->n, n);
	if (fresh->n != n)
		exit(1);
	CHECK_INT(queue_remove(q, fresh->m[n - 1]), 0);
	uv_run(loop, UV_RUN_DEFAULT);
	queue_get_counters(q, &c);
	CHECK_INT(c.recycled, n);
}

static void
test_recycle_kept_deleted(void)
{
	static struct kept_sink fresh;
	struct commit_res res[2];
	struct queue_txn *t = NULL;
	uv_loop_t loop;
	struct queue *q;
	char dir[128], *big;

	new_qdir(dir, sizeof(dir));
	memset(res, 0, sizeof(res));
	memset(&fresh, 0, sizeof(fresh));
	big = xcalloc(1, 70000);
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, kept_sink_add, &fresh);
	uv_run(&loop, UV_RUN_DEFAULT);

	kept_submit_recycle(&loop, q, &fresh, &res[0]);
	CHECK_INT(count_spare_fds(dir, true), 0);

	/* a transaction takes the recycled file, writes past its buffer (the
	 * loop opens the file) and is aborted: the file is deleted */
	CHECK_INT(queue_txn_begin(q, &rich_env, &t), 0);
	CHECK_INT(queue_txn_write(t, big, 70000), 0);
	queue_txn_abort(t);
	CHECK_INT(count_prefixed(dir, ".spare-"), 0);
	CHECK_INT(count_spare_fds(dir, true), 0);

	/* a recycled file in the pool when the queue turns to named files */
	kept_submit_recycle(&loop, q, &fresh, &res[1]);
	queue_set_named_files(q, true);
	CHECK_INT(count_spare_fds(dir, true), 0);

	close_queue(&loop, q);
	close_loop(&loop);
	CHECK_INT(count_spare_fds(dir, true), 0);
	queue_msg_free(fresh.m[0]);
	queue_msg_free(fresh.m[1]);
	free(big);
}

static void
test_recycle(void)
{
	/* the second four reuse the first four's files, last removed first:
	 * longer (past the write buffer, so the loop writes), shorter, longer, longer */
	static const size_t sizes[] = { 100, 4096, 9000, 20000, 70000, 50, 9001, 5000 };
	struct commit_res res[8];
	struct sink fresh = { .n = 0 }, scanned = { .n = 0 };
	struct queue_counters c;
	struct queue_txn *t = NULL;
	char dir[128], path[256], *body;
	ino_t old_ino[4];
	uv_loop_t loop;
	struct queue *q;
	size_t i;

	new_qdir(dir, sizeof(dir));
	memset(res, 0, sizeof(res));
	body = xmalloc(70008);
	for (i = 0; i < 70008; i++)
		body[i] = (char)('a' + i % 26);
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	uv_run(&loop, UV_RUN_DEFAULT);                  /* the unnamed spares are ready */

	/* four messages of various sizes, delivered and removed */
	for (i = 0; i < 4; i++)
		submit(q, &rich_env, body, sizes[i], sizes[i], &res[i]);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(fresh.n, 4);
	for (i = 0; i < 4 && i < fresh.n; i++) {
		old_ino[i] = file_ino(dir, fresh.m[i]->qid);
		CHECK_INT(queue_remove(q, fresh.m[i]), 0);
		CHECK(!file_exists(dir, "msg", fresh.m[i]->qid));   /* at once: nobody opens it now */
		CHECK_INT(queue_remove(q, fresh.m[i]), RELAY_ENOENT);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	queue_get_counters(q, &c);
	CHECK_INT(c.recycled, 4);
	CHECK_INT(c.unlinked, 0);
	CHECK_INT(count_prefixed(dir, ".spare-"), 4);
	CHECK_INT(count_dir(dir, "msg"), 4);

	/* a transaction that begins on one and is abandoned gives it back as it was */
	CHECK_INT(queue_txn_begin(q, &rich_env, &t), 0);
	CHECK_INT(queue_txn_write(t, body, 10), 0);
	queue_txn_abort(t);
	CHECK_INT(count_prefixed(dir, ".spare-"), 4);

	/* four new messages, longer and shorter than the files they reuse:
	 * same inodes, exact new content and length */
	for (i = 4; i < 8; i++)
		submit(q, &ndr_env, body + i, sizes[i], 1000, &res[i]);
	uv_run(&loop, UV_RUN_DEFAULT);
	queue_get_counters(q, &c);
	CHECK_INT(c.spares_reused, 5);                  /* with the abandoned one */
	/* the writer took the descriptors their recycling kept, not opening them
	 * again: all but the 70000-byte one, which the loop opened (past its
	 * write buffer) and whose kept descriptor the writer closed */
	CHECK_INT(c.kept_reused, 3);
	CHECK_INT(count_prefixed(dir, ".spare-"), 0);
	CHECK_INT(count_prefixed(dir, "."), 0);
	CHECK_INT(fresh.n, 8);
	for (i = 4; i < 8 && i < fresh.n; i++) {
		CHECK_INT(res[i].err, 0);
		snprintf(path, sizeof(path), "%s/msg/%s", dir, res[i].qid);
		CHECK_INT(file_size(path), (off_t)(fresh.m[i]->body_offset + fresh.m[i]->body_len));
		check_body(q, fresh.m[i], body + i, sizes[i]);
		CHECK_INT(file_ino(dir, res[i].qid), old_ino[7 - i]);
	}
	close_queue(&loop, q);
	CHECK_INT(count_dir(dir, "msg"), 4);

	/* and a new process reads exactly those */
	q = open_queue(&loop, dir);
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	CHECK_INT(scanned.n, 4);
	CHECK_INT(count_dir(dir, "corrupt"), 0);
	for (i = 4; i < 8; i++) {
		struct queue_msg *m = sink_find(&scanned, res[i].qid);

		CHECK(m != NULL);
		if (m != NULL) {
			check_env_equal(&m->env, &ndr_env, sizes[i]);
			check_body(q, m, body + i, sizes[i]);
		}
	}
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&fresh);
	sink_free(&scanned);
	free(body);
}

/*
 * A stop after a large delivery: the pool's spare files (removed messages'
 * files) are not deleted at close — up to QUEUE_POOL_MAX unlinks on the
 * loop — but kept in msg/, and the next start takes them into its pool:
 * its first messages reuse those inodes, none is made or deleted, and new
 * spare names do not collide with the kept ones.
 */
static void
test_spares_kept(void)
{
	enum { N = 60 };                 /* struct sink holds 64 */
	static struct commit_res res[N], res2[N];
	static ino_t inos[N];
	struct sink fresh = { .n = 0 }, scanned = { .n = 0 };
	struct queue_counters c;
	char dir[128];
	uv_loop_t loop;
	struct queue *q;
	size_t i, k, same = 0;

	new_qdir(dir, sizeof(dir));
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	for (i = 0; i < N; i++)
		submit(q, &ndr_env, "delivered\r\n", 11, 11, &res[i]);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(fresh.n, N);
	if (fresh.n != N)
		exit(1);
	for (i = 0; i < N; i++) {
		inos[i] = file_ino(dir, fresh.m[i]->qid);
		CHECK_INT(queue_remove(q, fresh.m[i]), 0);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	queue_get_counters(q, &c);
	CHECK_INT(c.recycled, N);
	CHECK_INT(c.unlinked, 0);
	close_queue(&loop, q);
	sink_free(&fresh);
	/* the stop deleted none of them */
	CHECK_INT(count_prefixed(dir, ".spare-"), N);
	CHECK_INT(count_dir(dir, "msg"), N);

	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	CHECK_INT(count_prefixed(dir, ".spare-"), N);
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	CHECK_INT(scanned.n, 0);                        /* spares are not messages */
	CHECK_INT(count_dir(dir, "corrupt"), 0);
	for (i = 0; i < N / 2; i++)
		submit(q, &rich_env, "new\r\n", 5, 5, &res2[i]);
	uv_run(&loop, UV_RUN_DEFAULT);
	queue_get_counters(q, &c);
	CHECK_INT(c.spares_reused, N / 2);
	CHECK_INT(c.created_late, 0);
	CHECK_INT(count_prefixed(dir, ".spare-"), N / 2);
	CHECK_INT(fresh.n, N / 2);
	for (i = 0; i < fresh.n; i++) {
		CHECK_INT(res2[i].err, 0);
		check_body(q, fresh.m[i], "new\r\n", 5);
		for (k = 0; k < N; k++)
			if (file_ino(dir, res2[i].qid) == inos[k]) {
				same++;
				break;
			}
	}
	CHECK_INT(same, N / 2);                         /* kept inodes */
	/* removed again, beside the kept spares: recycled under names of
	 * their own (one taken would make the removal delete the file) */
	for (i = 0; i < fresh.n; i++)
		CHECK_INT(queue_remove(q, fresh.m[i]), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	queue_get_counters(q, &c);
	CHECK_INT(c.recycled, N / 2);
	CHECK_INT(c.unlinked, 0);
	CHECK_INT(count_prefixed(dir, ".spare-"), N);
	close_queue(&loop, q);
	CHECK_INT(count_prefixed(dir, ".spare-"), N);
	close_loop(&loop);
	sink_free(&fresh);
	sink_free(&scanned);
}

#ifdef RELAY_TEST_HOOKS
static void
stop_loop(void *arg)
{
	uv_stop(arg);
}

/*
 * A removed file the pool does not keep (here: larger than
 * QUEUE_RECYCLE_MAX) is deleted by the reaper thread, not by the sync
 * thread before the removal completes: with the reaper held, the removals
 * complete (queue_wait_written(): done; their ids name nothing, the
 * counters say deleted) while their .spare-N files are still there.  The
 * loop stays alive until the reaper has deleted them; a close while it is
 * held lets it delete them all before it exits.
 */
enum { REAP_N = 3, REAP_BIG = (300u << 10) };

/* REAP_N messages of REAP_BIG bytes committed, then removed with the reaper
 * held; returns once the removals are done (queue_wait_written()). */
static void
reap_held(uv_loop_t *loop, struct queue *q, struct sink *fresh, const char *body)
{
	static struct commit_res res[REAP_N];
	struct queue_waiter w = { .cb = stop_loop, .arg = loop };
	size_t i;

	sink_free(fresh);
	for (i = 0; i < REAP_N; i++)
		submit(q, &ndr_env, body, REAP_BIG, 65536, &res[i]);
	uv_run(loop, UV_RUN_DEFAULT);
	CHECK_INT(fresh->n, REAP_N);
	if (fresh->n != REAP_N)
		exit(1);
	queue_test_hold_reaper(q, true);
	for (i = 0; i < REAP_N; i++)
		CHECK_INT(queue_remove(q, fresh->m[i]), 0);
	CHECK(!queue_wait_written(q, &w, 0));
	uv_run(loop, UV_RUN_DEFAULT);                   /* until the removals are done */
	CHECK_INT(queue_ops_unwritten(q), 0);
}

/* Each qdir/msg/ name starting with prefix made an empty directory instead
 * of a file (to_dir: which unlinkat(2) without AT_REMOVEDIR refuses with
 * EISDIR, even to root), or such a directory removed; the count. */
static size_t
swap_prefixed(const char *qdir, const char *prefix, bool to_dir)
{
	char path[512], names[8][NAME_MAX + 1];
	struct dirent *de;
	size_t i, n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "%s/msg", qdir);
	if ((d = opendir(path)) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL && n < 8)
		if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
			memcpy(names[n++], de->d_name, strlen(de->d_name) + 1);
	closedir(d);
	for (i = 0; i < n; i++) {
		if ((size_t)snprintf(path, sizeof(path), "%s/msg/%s", qdir, names[i]) >= sizeof(path))
			abort();
		if (to_dir) {
			CHECK_INT(unlink(path), 0);
			CHECK_INT(mkdir(path, 0700), 0);
		} else
			CHECK_INT(rmdir(path), 0);
	}
	return n;
}

static void
test_reap_after_removal(void)
{
	struct sink fresh = { .n = 0 };
	struct queue_counters c;
	char dir[128], *body;
	uv_loop_t loop;
	struct queue *q;
	size_t i;

	new_qdir(dir, sizeof(dir));
	body = xmalloc(REAP_BIG);
	memset(body, 'x', REAP_BIG);
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);

	/* held: the removals complete, their files wait */
	reap_held(&loop, q, &fresh, body);
	queue_get_counters(q, &c);
	CHECK_INT(c.recycled, 0);
	CHECK_INT(c.unlinked, REAP_N);
	for (i = 0; i < fresh.n; i++)
		CHECK(!file_exists(dir, "msg", fresh.m[i]->qid));
	CHECK_INT(count_prefixed(dir, ".spare-"), REAP_N);   /* not deleted yet: the reaper waits */
	/* let go: the loop runs until they are deleted */
	queue_test_hold_reaper(q, false);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(count_dir(dir, "msg"), 0);

	/* one it cannot delete is logged (queue_error op=unlink), not passed over */
	reap_held(&loop, q, &fresh, body);
	CHECK(!log_has("op=unlink error=\"Is a directory\""));
	CHECK_INT(swap_prefixed(dir, ".spare-", true), REAP_N);
	queue_test_hold_reaper(q, false);
	uv_run(&loop, UV_RUN_DEFAULT);                  /* until the reaper has tried them */
	CHECK(log_has("event=queue_error qid=.spare-"));
	CHECK(log_has("op=unlink error=\"Is a directory\""));
	CHECK_INT(swap_prefixed(dir, ".spare-", false), REAP_N);

	/* held again, then a close: the reaper deletes them before it exits */
	reap_held(&loop, q, &fresh, body);
	CHECK_INT(count_prefixed(dir, ".spare-"), REAP_N);
	close_queue(&loop, q);
	CHECK_INT(count_dir(dir, "msg"), 0);
	close_loop(&loop);
	sink_free(&fresh);
	free(body);
}
#endif

/* A fresh queue directory holding n (at most 64) messages, the queue closed. */
static void
scan_fill(uv_loop_t *loop, char *dir, size_t dirlen, size_t n)
{
	struct sink fresh = { .n = 0 };
	struct commit_res res[64];
	struct queue *q;
	size_t i;

	new_qdir(dir, dirlen);
	memset(res, 0, sizeof(res));
	q = open_queue(loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	for (i = 0; i < n; i++)
		submit(q, &rich_env, "scan me\r\n", 9, 9, &res[i]);
	uv_run(loop, UV_RUN_DEFAULT);
	CHECK_INT(fresh.n, n);
	close_queue(loop, q);
	sink_free(&fresh);
}

/* The end of a scan in a test (first in its callbacks' argument): want loaded, none corrupt. */
struct scan_end {
	size_t want;
	bool done;
};

static void
scan_end_cb(void *arg, size_t loaded, size_t corrupt, uint64_t ms)
{
	struct scan_end *e = arg;

	(void)ms;
	CHECK_INT(loaded, e->want);
	CHECK_INT(corrupt, 0);
	e->done = true;
}

/* Messages the scan hands over per loop iteration, each taking 2 ms. */
struct scan_turns {
	struct scan_end end;
	uv_prepare_t prep;
	size_t now, max, total, iterations;
};

static void
scan_turns_prepare(uv_prepare_t *h)
{
	struct scan_turns *t = h->data;

	t->now = 0;
	t->iterations++;
}

static void
scan_turns_take(void *arg, struct queue_msg *m)
{
	struct scan_turns *t = arg;

	usleep(2000);
	queue_msg_free(m);
	t->total++;
	if (++t->now > t->max)
		t->max = t->now;
}

/*
 * The loop hands scanned messages over for at most QUEUE_SCAN_TURN_MS per
 * iteration (each takes 2 ms here: at most 3 in one), the rest in the next
 * iterations, after their I/O; before, a whole batch of up to
 * QUEUE_SCAN_BATCH in one (106 ms for 119 messages under load).
 */
static void
test_scanner_turn_bounded(void)
{
	struct scan_turns t;
	struct queue_scanner *sc;
	char dir[128];
	uv_loop_t loop;
	struct queue *q;

	memset(&t, 0, sizeof(t));
	uv_loop_init(&loop);
	scan_fill(&loop, dir, sizeof(dir), 20);
	q = open_queue(&loop, dir);
	uv_prepare_init(&loop, &t.prep);
	t.prep.data = &t;
	uv_prepare_start(&t.prep, scan_turns_prepare);
	t.end.want = 20;
	sc = queue_scanner_new(q, scan_turns_take, scan_end_cb, &t);
	queue_scanner_run(sc);
	while (!t.end.done)
		uv_run(&loop, UV_RUN_ONCE);
	CHECK_INT(t.total, 20);
	CHECK(t.max >= 1 && t.max <= 1 + (QUEUE_SCAN_TURN_MS + 1) / 2);
	queue_scanner_stop(sc);
	uv_close((uv_handle_t *)&t.prep, NULL);
	close_queue(&loop, q);
	close_loop(&loop);
}

/* Each message the scan hands over issues 512 records at once. */
struct scan_paced {
	struct scan_end end;
	struct queue *q;
	struct queue_msg *m[64];
	size_t n;
	uint64_t max_behind;            /* records not yet written when a message came: at most */
};

static void
scan_paced_take(void *arg, struct queue_msg *m)
{
	struct scan_paced *p = arg;
	struct queue_record rec;
	uint64_t behind = p->q->ops_total - p->q->ops_done;
	int i;

	if (behind > p->max_behind)
		p->max_behind = behind;
	memset(&rec, 0, sizeof(rec));
	rec.type = QREC_ATTEMPT;
	rec.rcpt = 0;
	rec.status = "4.4.1";
	rec.reply = "451 4.4.1 no answer";
	for (i = 0; i < 512; i++) {
		rec.time_ms = util_now_ms();
		CHECK_INT(queue_record(p->q, m, &rec, NULL, NULL), 0);
	}
	if (p->n < RELAY_ARRAY_LEN(p->m))
		p->m[p->n++] = m;
	else
		queue_msg_free(m);
}

/*
 * After the scan of p (its queue closed): p's messages freed, and of the 64
 * messages in dir, how many have their 512 records in the file.
 */
static size_t
scan_paced_recorded(uv_loop_t *loop, struct scan_paced *p, const char *dir)
{
	struct sink again = { .n = 0 };
	size_t i, with = 0;

	for (i = 0; i < p->n; i++)
		queue_msg_free(p->m[i]);
	p->n = 0;
	p->q = open_queue(loop, dir);
	CHECK_INT(queue_scan(p->q, sink_add, &again), 0);
	CHECK_INT(again.n, 64);
	for (i = 0; i < again.n; i++)
		with += again.m[i]->rcpt[0].attempts == 512;
	close_queue(loop, p->q);
	sink_free(&again);
	return with;
}

/*
 * The scan hands no message over while QUEUE_SCAN_OPS_MAX records or more
 * are not yet written (a restart with its destinations down defers every
 * message it loads): 64 messages issuing 512 records each are 32,768
 * records, far more than the writer appends while the loop hands over;
 * before, they all waited in memory at once.  Every record is in its file
 * at the end.
 */
static void
test_scanner_paced(void)
{
	struct scan_paced p;
	struct queue_scanner *sc;
	char dir[128];
	uv_loop_t loop;

	memset(&p, 0, sizeof(p));
	uv_loop_init(&loop);
	scan_fill(&loop, dir, sizeof(dir), 64);
	p.q = open_queue(&loop, dir);
	p.end.want = 64;
	sc = queue_scanner_new(p.q, scan_paced_take, scan_end_cb, &p);
	queue_scanner_run(sc);
	while (!p.end.done)
		uv_run(&loop, UV_RUN_ONCE);
	CHECK_INT(p.n, 64);
	CHECK_MSG(p.max_behind <= QUEUE_SCAN_OPS_MAX, "%llu records behind",
	    (unsigned long long)p.max_behind);
	queue_scanner_stop(sc);
	close_queue(&loop, p.q);
	CHECK_INT(scan_paced_recorded(&loop, &p, dir), 64);
	close_loop(&loop);
}

/*
 * A listing of msg/ that readdir cuts short (EIO after two entries: "."
 * and ".." at most, or one message) is an error, never a shorter queue:
 * queue_read_dir() gives no list (errno EIO) and queue_scan() fails
 * (RELAY_EIO, logged) rather than load a part of msg/ and report the scan
 * done.  Once readdir works again every message is there.
 */
static void
test_scan_readdir_fails(void)
{
	struct sink got = { .n = 0 };
	struct queue_dirent *v;
	struct queue *q;
	char dir[128];
	uv_loop_t loop;
	size_t n = 99;
	int rc;

	uv_loop_init(&loop);
	scan_fill(&loop, dir, sizeof(dir), 3);
	q = open_queue(&loop, dir);
	readdir_left = 2;
	readdir_fail = EIO;
	errno = 0;
	v = queue_read_dir(q->msgfd, &n);
	CHECK(v == NULL);
	CHECK_INT(errno, EIO);
	CHECK_INT(n, 0);
	if (v != NULL)
		queue_free_dir(v, n);
	readdir_left = 2;
	rc = queue_scan(q, sink_add, &got);
	readdir_fail = 0;
	CHECK_INT(rc, RELAY_EIO);
	CHECK_INT(got.n, 0);
	sink_free(&got);
	CHECK_INT(queue_scan(q, sink_add, &got), 0);
	CHECK_INT(got.n, 3);
	close_queue(&loop, q);
	sink_free(&got);
	close_loop(&loop);
}

#ifdef RELAY_TEST_HOOKS
/*
 * A stop while the scan waits for the writer (no record is ever done: the
 * sync thread is held): the scan has handed over exactly the 16 messages
 * whose 8,192 records fill the backlog, its waiter is cancelled (never run
 * on the freed scanner once the backlog drains), and the queue closes with
 * every record of those 16 in its file.
 */
static void
test_scanner_paced_stop(void)
{
	struct scan_paced p;
	struct sync_hold g;
	struct queue_scanner *sc;
	char dir[128];
	uv_loop_t loop;
	size_t loaded, corrupt;
	bool running;

	memset(&p, 0, sizeof(p));
	memset(&g, 0, sizeof(g));
	if (uv_mutex_init(&g.mu) != 0 || uv_cond_init(&g.cv) != 0)
		exit(2);
	uv_loop_init(&loop);
	scan_fill(&loop, dir, sizeof(dir), 64);
	p.q = open_queue(&loop, dir);
	queue_test_set_sync_fn(p.q, sync_hold_fn, &g);
	sc = queue_scanner_new(p.q, scan_paced_take, scan_end_cb, &p);
	queue_scanner_run(sc);
	while (p.q->waiters == NULL)
		uv_run(&loop, UV_RUN_ONCE);
	CHECK_INT(p.n, QUEUE_SCAN_OPS_MAX / 512);
	/* what relayctl shows meanwhile (sched_scanning()): still scanning */
	queue_scanner_counts(sc, &loaded, &corrupt, &running);
	CHECK(running);
	CHECK_INT(loaded, QUEUE_SCAN_OPS_MAX / 512);
	queue_scanner_stop(sc);
	CHECK(p.q->waiters == NULL);
	sync_hold_open(&g);
	close_queue(&loop, p.q);
	CHECK(!p.end.done);
	CHECK_INT(scan_paced_recorded(&loop, &p, dir), QUEUE_SCAN_OPS_MAX / 512);
	close_loop(&loop);
	uv_mutex_destroy(&g.mu);
	uv_cond_destroy(&g.cv);
}

struct scan_done {
	size_t calls;
};

static void
scan_done_cb(void *arg, size_t loaded, size_t corrupt, uint64_t ms)
{
	struct scan_done *d = arg;

	(void)loaded;
	(void)corrupt;
	(void)ms;
	d->calls++;
}

/*
 * queue_scanner_stop() while the scan thread is busy in a read no flag cuts
 * short (RELAYD_TEST_SCAN_DIR_STALL_MS: the listing of a huge msg/) returns
 * at once: it does not join the thread on the loop (relayd once did, and
 * the loop stood still until the read was over).  The thread ends after it;
 * nothing reaches the callbacks after the stop; the queue's close waits for
 * the thread (which reads msg/), and the messages stay in msg/.
 */
static void
test_scanner_stop_busy(void)
{
	struct sink scanned = { .n = 0 };
	struct scan_done done = { 0 };
	struct queue_scanner *sc;
	char dir[128];
	uv_loop_t loop;
	struct queue *q;

	uv_loop_init(&loop);
	scan_fill(&loop, dir, sizeof(dir), 3);

	q = open_queue(&loop, dir);
	setenv("RELAYD_TEST_SCAN_DIR_STALL_MS", "3000", 1);
	sc = queue_scanner_new(q, sink_add, scan_done_cb, &done);
	unsetenv("RELAYD_TEST_SCAN_DIR_STALL_MS");
	queue_scanner_run(sc);
	queue_scanner_stop(sc);
	/* back before the thread's read is over (it logs when it is) */
	CHECK(!log_has("event=queue_scan_test_stall_over"));
	close_queue(&loop, q);          /* runs until the thread is over and the queue closed */
	CHECK(log_has("event=queue_scan_test_stall_over"));
	CHECK_INT(scanned.n, 0);
	CHECK_INT(done.calls, 0);
	CHECK(!log_has("event=queue_scanned count=3"));

	/* the messages are where they were */
	q = open_queue(&loop, dir);
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	CHECK_INT(scanned.n, 3);
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&scanned);
}
#endif

/* A file somebody still reads (a delivery of a deleted message), or a large
 * one, is deleted, not reused; the pool is bounded. */
static void
test_recycle_refused(void)
{
	static char big[300 * 1024];
	static struct commit_res res[4200];
	struct sink fresh = { .n = 0 };
	struct queue_counters c;
	struct queue_msg *m;
	char dir[128], got[8], path[PATH_MAX];
	uv_loop_t loop;
	struct queue *q;
	size_t i;
	int fd;

	new_qdir(dir, sizeof(dir));
	memset(res, 0, sizeof(res));
	memset(big, 'B', sizeof(big));
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	submit(q, &rich_env, "read me\r\n", 9, 9, &res[0]);
	submit(q, &rich_env, big, sizeof(big), 65536, &res[1]);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(fresh.n, 2);
	if (fresh.n != 2)
		exit(1);
	m = fresh.m[0];
	fd = open(queue_msg_path(q, m, path, sizeof(path)), O_RDONLY);
	CHECK(fd >= 0);
	CHECK_INT(queue_remove(q, m), 0);
	CHECK_INT(queue_remove(q, fresh.m[1]), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	queue_get_counters(q, &c);
	CHECK_INT(c.recycled, 0);
	CHECK_INT(c.unlinked, 2);
	CHECK_INT(count_dir(dir, "msg"), 0);
	/* the reader keeps reading what it opened */
	CHECK(pread(fd, got, 7, (off_t)m->body_offset) == 7);
	CHECK(memcmp(got, "read me", 7) == 0);
	close(fd);
	sink_free(&fresh);

	/* 4,200 removed at once: the pool keeps at most 4,096 spare files */
	queue_set_new_cb(q, NULL, NULL);
	for (i = 0; i < 4200; i++)
		submit(q, &ndr_env, "x\r\n", 3, 3, &res[i]);
	uv_run(&loop, UV_RUN_DEFAULT);
	queue_get_counters(q, &c);
	CHECK_INT(c.commits, 4202);
	for (i = 0; i < 4200; i++) {
		struct queue_msg tmp;

		memset(&tmp, 0, sizeof(tmp));
		snprintf(tmp.qid, sizeof(tmp.qid), "%s", res[i].qid);
		tmp.body_len = 3;
		CHECK_INT(queue_remove(q, &tmp), 0);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	queue_get_counters(q, &c);
	CHECK_INT(c.recycled + c.unlinked, 4202);
	CHECK(c.unlinked > 2);
	CHECK_MSG(count_prefixed(dir, ".spare-") <= 4096, "%zu spares",
	    count_prefixed(dir, ".spare-"));
	CHECK_INT(count_dir(dir, "msg"), count_prefixed(dir, ".spare-"));
	close_queue(&loop, q);
	CHECK_INT(count_dir(dir, "msg"), count_prefixed(dir, ".spare-"));  /* kept */
	/* the next start keeps at most the pool's bound */
	q = open_queue(&loop, dir);
	CHECK_MSG(count_prefixed(dir, ".spare-") <= 4096, "%zu spares",
	    count_prefixed(dir, ".spare-"));
	close_queue(&loop, q);
	close_loop(&loop);
}

/* In s (scanned from dir when q is set): signed has fields and ids, plain neither. */
static void
check_dkim(struct queue *q, struct sink *s, const char *signed_qid, const char *fields,
    const char *ids, const char *plain_qid)
{
	struct queue_msg *m;

	if (q != NULL) {
		CHECK_INT(queue_scan(q, sink_add, s), 0);
		CHECK_INT(s->n, 2);
	}
	m = sink_find(s, signed_qid);
	CHECK_MSG(m != NULL && streq(m->dkim, fields) && streq(queue_msg_dkim_ids(m), ids), "%s", ids);
	CHECK(m != NULL && m->body_len == 18);
	m = sink_find(s, plain_qid);
	CHECK(m != NULL && m->dkim == NULL && queue_msg_dkim_ids(m) == NULL);
}

/*
 * A message's DKIM fields and their ids (one allocation in struct
 * queue_msg) survive a restart as they were stored, a later K record
 * replaces both, and a message without them has neither.
 */
static void
test_dkim_restart(void)
{
	static const char fields[] = "DKIM-Signature: v=1; d=a.test; s=s1; b=xyz\r\n";
	static const char ids[] = "d=a.test;s=s1";
	static const char fields2[] = "DKIM-Signature: v=1; d=b.test; s=s2; b=uvw\r\n";
	static const char ids2[] = "d=b.test;s=s2,d=c.test;s=s3";
	struct sink fresh = { .n = 0 }, scanned = { .n = 0 }, again = { .n = 0 };
	struct commit_res res = { 0 }, res2 = { 0 };
	struct queue_record rec;
	struct queue_txn *t = NULL;
	struct queue_msg *m;
	char dir[128];
	uv_loop_t loop;
	struct queue *q;

	new_qdir(dir, sizeof(dir));
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	CHECK_INT(queue_txn_begin(q, &ndr_env, &t), 0);
	CHECK_INT(queue_txn_write(t, "Subject: x\r\n\r\nhi\r\n", 18), 0);
	queue_txn_prefix(t, fields, ids);
	queue_txn_commit(t, commit_cb, &res);
	submit(q, &ndr_env, "Subject: y\r\n\r\nho\r\n", 18, 18, &res2);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(res.err, 0);
	CHECK_INT(res2.err, 0);
	CHECK_INT(fresh.n, 2);
	check_dkim(NULL, &fresh, res.qid, fields, ids, res2.qid);
	close_queue(&loop, q);

	/* the restart: both as stored */
	q = open_queue(&loop, dir);
	check_dkim(q, &scanned, res.qid, fields, ids, res2.qid);

	/* a later K record replaces both, in memory and after the next restart */
	memset(&rec, 0, sizeof(rec));
	rec.type = QREC_DKIM;
	rec.rcpt = -1;
	rec.time_ms = 5;
	rec.status = ids2;
	rec.reply = fields2;
	m = sink_find(&scanned, res.qid);
	CHECK_INT(queue_record(q, m, &rec, NULL, NULL), 0);
	check_dkim(NULL, &scanned, res.qid, fields2, ids2, res2.qid);
	close_queue(&loop, q);
	q = open_queue(&loop, dir);
	check_dkim(q, &again, res.qid, fields2, ids2, res2.qid);
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&fresh);
	sink_free(&scanned);
	sink_free(&again);
}

/*
 * Queue one small message in dir, then make its file say body_len body
 * bytes and hold them (a sparse file): the header rewritten, the file
 * extended.  Its queue id is in res.
 */
static void
queue_sparse_body(uv_loop_t *loop, const char *dir, uint64_t body_len, struct commit_res *res)
{
	struct sink fresh = { .n = 0 };
	struct queue *q = open_queue(loop, dir);
	char path[256], hex[17];
	uint64_t boff = 0;
	int fd;

	queue_set_new_cb(q, sink_add, &fresh);
	submit(q, &ndr_env, "Subject: y\r\n\r\nho\r\n", 18, 18, res);
	uv_run(loop, UV_RUN_DEFAULT);
	CHECK_INT(res->err, 0);
	CHECK_INT(fresh.n, 1);
	if (fresh.n == 1)
		boff = fresh.m[0]->body_offset;
	close_queue(loop, q);
	sink_free(&fresh);

	snprintf(path, sizeof(path), "%s/msg/%s", dir, res->qid);
	snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)body_len);
	fd = open(path, O_RDWR);
	CHECK(fd >= 0 && pwrite(fd, hex, 16, (off_t)strlen("RELAYQ 1 0000000000000000 ")) == 16);
	CHECK(ftruncate(fd, (off_t)(boff + body_len)) == 0);
	if (fd >= 0)
		close(fd);
}

/*
 * body_offset and body_len are 32 bits in memory: a body of more than
 * QUEUE_BODY_MAX bytes is refused before a byte of the write is taken
 * (RELAY_ENOSPC: the 452 of a full disk), an envelope larger than a file
 * may hold is refused at queue_txn_begin(), and a file whose header says
 * the body is larger (a sparse file of 4 GiB) is corrupt at load, not
 * loaded with its length cut to 32 bits.
 */
static void
test_body_bound(void)
{
	struct sink fresh = { .n = 0 }, scanned = { .n = 0 };
	struct commit_res res = { 0 }, res2 = { 0 };
	struct envelope big = ndr_env;
	struct queue_txn *t = NULL;
	char dir[128], line[256];
	char *sender;
	uv_loop_t loop;
	struct queue *q;

	new_qdir(dir, sizeof(dir));
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);

	/* the write that would pass the bound: refused, and nothing read of it */
	CHECK_INT(queue_txn_begin(q, &ndr_env, &t), 0);
	CHECK_INT(queue_txn_write(t, "0123456789", 10), 0);
	CHECK_INT(queue_txn_write(t, "x", (size_t)QUEUE_BODY_MAX - 9), RELAY_ENOSPC);
	CHECK_INT(queue_txn_error(t), RELAY_ENOSPC);
	snprintf(line, sizeof(line), "event=queue_error qid=%s op=write error=\"File too large\"",
	    queue_txn_qid(t));
	CHECK_MSG(log_has(line), "%s", line);
	queue_txn_commit(t, commit_cb, &res2);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(res2.err, RELAY_ENOSPC);

	/* an envelope the load would reject (QFILE_ENV_MAX) is never written */
	sender = xmalloc((4u << 20) + 2);
	memset(sender, 'a', (4u << 20) + 1);
	sender[(4u << 20) + 1] = '\0';
	big.sender = sender;
	t = NULL;
	CHECK_INT(queue_txn_begin(q, &big, &t), RELAY_EINVAL);
	CHECK(t == NULL);
	if (t != NULL)
		queue_txn_abort(t);
	free(sender);

	close_queue(&loop, q);

	/* its header says 2^32 body bytes, and the (sparse) file has them */
	queue_sparse_body(&loop, dir, 1ULL << 32, &res);

	q = open_queue(&loop, dir);
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	CHECK_INT(scanned.n, 0);
	CHECK(file_exists(dir, "corrupt", res.qid));
	snprintf(line, sizeof(line), "event=queue_corrupt qid=%s reason=\"body larger than a queue file holds\"",
	    res.qid);
	CHECK_MSG(log_has(line), "%s", line);
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&fresh);
	sink_free(&scanned);
}

/*
 * A message loaded from a file whose body offset and length add up to 4 GiB
 * or more (each within its 32 bits: the header says 2^32 - 1 body bytes) is
 * a large file when removed: deleted, not kept as a spare (the sum is not
 * cut to 32 bits, which would make it look small).  The file is sparse.
 */
static void
test_body_bound_remove(void)
{
	struct sink scanned = { .n = 0 };
	struct commit_res res = { 0 };
	struct queue_counters c;
	char dir[128];
	uv_loop_t loop;
	struct queue *q;

	new_qdir(dir, sizeof(dir));
	uv_loop_init(&loop);
	queue_sparse_body(&loop, dir, QUEUE_BODY_MAX, &res);

	q = open_queue(&loop, dir);
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	CHECK_INT(scanned.n, 1);
	if (scanned.n == 1) {
		CHECK(scanned.m[0]->body_len == QUEUE_BODY_MAX);
		CHECK_INT(queue_remove(q, scanned.m[0]), 0);
		uv_run(&loop, UV_RUN_DEFAULT);
		queue_get_counters(q, &c);
		CHECK_MSG(c.recycled == 0 && c.unlinked == 1, "recycled %llu unlinked %llu",
		    (unsigned long long)c.recycled, (unsigned long long)c.unlinked);
		CHECK_INT(count_prefixed(dir, ".spare-"), 0);
	}
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&scanned);
}

static void
test_corrupt(void)
{
	static const struct {
		const char *name;
		const char *text;       /* NULL: a good message cut short */
		const char *reason;     /* as logged */
	} rows[] = {
		{ "0000000000000000000A", "garbage\n", "\"short header\"" },
		{ "0000000000000000000B", "RELAYQ 2 000000000000002e 0000000000000000\n.\n",
		  "\"bad header\"" },
		{ "0000000000000000000C", "RELAYQ 1 000000000000002d 0000000000000000\n.\n",
		  "\"envelope not terminated\"" },
		{ "0000000000000000000D", "RELAYQ 1 0000000000000044 0000000000000000\narrival 1\nsender a\nfoo\n.\n",
		  "\"envelope line 3: unknown key\"" },
		{ "0000000000000000000E", NULL, "\"header offsets beyond the file\"" },
		{ "not-a-qid", "whatever\n", "\"not a queue id\"" },
	};
	struct sink fresh = { .n = 0 }, scanned = { .n = 0 };
	struct commit_res res = { 0 }, res2 = { 0 };
	char dir[128], path[256], body[1000], line[256];
	char *good;
	uv_loop_t loop;
	struct queue *q;
	size_t i, len;
	int fd;

	new_qdir(dir, sizeof(dir));
	memset(body, 'x', sizeof(body));
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	submit(q, &rich_env, body, sizeof(body), sizeof(body), &res);
	submit(q, &ndr_env, body, 10, 10, &res2);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(res.err, 0);
	CHECK_INT(res2.err, 0);
	close_queue(&loop, q);

	/* a good file with a record whose rcpt is out of range, and one cut in its body */
	snprintf(path, sizeof(path), "%s/msg/%s", dir, res.qid);
	len = (size_t)file_size(path);
	good = xmalloc(len);
	fd = open(path, O_RDONLY);
	CHECK(read(fd, good, len) == (ssize_t)len);
	close(fd);
	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		snprintf(path, sizeof(path), "%s/msg/%s", dir, rows[i].name);
		if (rows[i].text != NULL)
			write_raw(path, rows[i].text, strlen(rows[i].text), 0);
		else
			write_raw(path, good, len - 500, 0);
	}
	snprintf(path, sizeof(path), "%s/msg/%s", dir, res2.qid);
	write_raw(path, "A 7 1 - - - - 0\n", 16, O_APPEND);
	free(good);

	q = open_queue(&loop, dir);
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	CHECK_INT(scanned.n, 1);
	CHECK(sink_find(&scanned, res.qid) != NULL);
	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		CHECK_MSG(file_exists(dir, "corrupt", rows[i].name), "%s", rows[i].name);
		CHECK_MSG(!file_exists(dir, "msg", rows[i].name), "%s", rows[i].name);
	}
	CHECK(file_exists(dir, "corrupt", res2.qid));
	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		snprintf(line, sizeof(line), "event=queue_corrupt qid=%s reason=%s ", rows[i].name, rows[i].reason);
		CHECK_MSG(log_has(line), "%s", line);
	}
	snprintf(line, sizeof(line), "event=queue_corrupt qid=%s reason=\"record 1 unparseable\"", res2.qid);
	CHECK(log_has(line));
	CHECK_INT(count_dir(dir, "msg"), 1);
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&fresh);
	sink_free(&scanned);
}

/*
 * Group commit: 32 transactions in flight share a few syncs, in every mode.
 */

static void
test_group_commit(void)
{
	static const enum queue_sync_mode modes[] = {
		QUEUE_SYNC_DEFAULT, QUEUE_SYNC_FDATASYNC, QUEUE_SYNC_RANGE, QUEUE_SYNC_SYNCFS,
		QUEUE_SYNC_AUTO,
	};
	struct commit_res res[32];
	struct sink fresh = { .n = 0 };
	struct queue_counters c;
	char dir[128], body[4096];
	uv_loop_t loop;
	struct queue *q;
	size_t i, k;

	memset(body, 'b', sizeof(body));
	for (k = 0; k < RELAY_ARRAY_LEN(modes); k++) {
		new_qdir(dir, sizeof(dir));
		memset(res, 0, sizeof(res));
		uv_loop_init(&loop);
		q = open_queue(&loop, dir);
		queue_set_sync_mode(q, modes[k]);
		queue_set_new_cb(q, sink_add, &fresh);
		for (i = 0; i < 32; i++)
			submit(q, &rich_env, body, sizeof(body), 1024, &res[i]);
		uv_run(&loop, UV_RUN_DEFAULT);
		queue_get_counters(q, &c);
		CHECK_INT(fresh.n, 32);
		CHECK_INT(c.commits, 32);
		CHECK_INT(c.failures, 0);
		CHECK_MSG(c.batches >= 1 && c.batches <= 2, "mode %d: %llu batches", (int)modes[k],
		    (unsigned long long)c.batches);
		for (i = 0; i < 32; i++) {
			CHECK_INT(res[i].called, 1);
			CHECK_INT(res[i].err, 0);
			CHECK(file_exists(dir, "msg", res[i].qid));
			if (i > 0)       /* ids of one process are strictly increasing */
				CHECK(strcmp(res[i - 1].qid, res[i].qid) < 0);
		}
		close_queue(&loop, q);
		CHECK_INT(count_dir(dir, "incoming"), 0);
		close_loop(&loop);
		sink_free(&fresh);
	}
}

/* Commits during close complete (those in flight) or are refused (later ones). */
static void
test_close(void)
{
	struct commit_res before = { 0 }, after = { 0 };
	struct queue_txn *late = NULL, *refused = NULL;
	struct sink fresh = { .n = 0 };
	struct buf err = BUF_INIT;
	struct queue *q, *q2 = NULL;
	uv_loop_t loop;
	char dir[128];
	int closed = 0;

	new_qdir(dir, sizeof(dir));
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_set_new_cb(q, sink_add, &fresh);
	/* the queue directory is one process's */
	CHECK_INT(queue_open(&loop, dir, &q2, &err), RELAY_EIO);
	CHECK(strstr(buf_cstr(&err), "another relayd") != NULL);

	CHECK_INT(queue_txn_begin(q, &rich_env, &late), 0);
	submit(q, &rich_env, "x\r\n", 3, 3, &before);
	queue_close(q, closed_cb, &closed);
	CHECK_INT(queue_txn_begin(q, &rich_env, &refused), RELAY_ECLOSED);
	queue_txn_commit(late, commit_cb, &after);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(before.called, 1);
	CHECK_INT(before.err, 0);
	CHECK_INT(after.called, 1);
	CHECK_INT(after.err, RELAY_ECLOSED);
	CHECK_INT(closed, 1);
	CHECK_INT(fresh.n, 1);
	CHECK_INT(count_dir(dir, "msg"), 1);
	CHECK_INT(count_dir(dir, "incoming"), 0);
	close_loop(&loop);
	sink_free(&fresh);
	buf_free(&err);
}

/*
 * Durability through process death: a child commits and is SIGKILLed right
 * after its callback fired; the parent finds the message.  The message is
 * written into the file of one the child removed just before (recycled).
 */

static int child_pipe = -1;
static struct queue *child_q;

static void
child_commit_cb(void *arg, int err, const char *qid)
{
	struct queue_counters c;
	char line[64];
	int n;

	(void)arg;
	queue_get_counters(child_q, &c);
	n = snprintf(line, sizeof(line), "%d %s %llu\n", err, qid != NULL ? qid : "-",
	    (unsigned long long)c.spares_reused);
	fixture_report_and_die(child_pipe, line, n);
}

static void
test_sigkill(void)
{
	static const char body[] = "Subject: survive\r\n\r\nkill -9 me\r\n";
	struct sink scanned = { .n = 0 };
	struct queue_msg *m;
	char dir[128], line[64] = { 0 }, qid[QID_MAX] = { 0 };
	uv_loop_t loop;
	struct queue *q;
	unsigned long long reused = 0;
	int fds[2], status = 0, err = -1;
	pid_t pid;

	new_qdir(dir, sizeof(dir));
	if ((pid = fixture_fork(fds)) == 0) {
		struct sink first = { .n = 0 };
		struct commit_res res = { 0 };
		struct queue_txn *t;
		char big[8192];

		close(fds[0]);
		child_pipe = fds[1];
		uv_loop_init(&loop);
		q = child_q = open_queue(&loop, dir);
		queue_set_new_cb(q, sink_add, &first);
		memset(big, 'o', sizeof(big));
		submit(q, &ndr_env, big, sizeof(big), sizeof(big), &res);
		uv_run(&loop, UV_RUN_DEFAULT);
		if (res.err != 0 || first.n != 1 || queue_remove(q, first.m[0]) != 0)
			_exit(4);
		uv_run(&loop, UV_RUN_DEFAULT);          /* its file is a spare now */
		if (queue_txn_begin(q, &rich_env, &t) != 0 || queue_txn_write(t, body, sizeof(body) - 1) != 0)
			_exit(4);
		queue_txn_commit(t, child_commit_cb, NULL);
		uv_run(&loop, UV_RUN_DEFAULT);
		_exit(5);               /* not reached: the callback kills us */
	}
	fixture_read_report(fds, line, sizeof(line));
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	CHECK_INT(sscanf(line, "%d %31s %llu", &err, qid, &reused), 3);
	CHECK_INT(err, 0);
	CHECK_INT(reused, 1);

	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	/* the message, and maybe the spare file it was being written into
	 * (kept as a spare: its content is never read) */
	CHECK_INT(count_dir(dir, "msg") - count_prefixed(dir, ".spare-"), 1);
	CHECK_INT(count_prefixed(dir, "."), count_prefixed(dir, ".spare-"));
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	CHECK_INT(scanned.n, 1);
	CHECK_INT(count_dir(dir, "corrupt"), 0);
	m = sink_find(&scanned, qid);
	CHECK(m != NULL);
	if (m != NULL) {
		check_env_equal(&m->env, &rich_env, sizeof(body) - 1);
		check_body(q, m, body, sizeof(body) - 1);
	}
	close_queue(&loop, q);
	close_loop(&loop);
	sink_free(&scanned);
}

/*
 * queue_read_dir(): every name of a directory once, sorted by name, each
 * with its inode; enough names (of 1 to 60 bytes, made in another order)
 * that both of its mappings grow and the sort merges many runs of uneven
 * length; an empty directory lists nothing.
 */
static void
test_read_dir(void)
{
	struct queue_dirent *v;
	struct stat st;
	char dir[128], name[96];
	size_t i, n, len, from, made = 5003;
	uint32_t x = 12345;
	int dfd, fd;

	new_qdir(dir, sizeof(dir));
	CHECK_INT(mkdir(dir, 0700), 0);
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK(dfd >= 0);
	v = queue_read_dir(dfd, &n);
	CHECK(v != NULL);
	CHECK_INT(n, 0);
	queue_free_dir(v, n);
	for (i = 0; i < made; i++) {
		x = x * 1103515245u + 12345u;
		len = 1 + (x >> 16) % 60;
		/* the number first (distinct names), then filler of the length */
		snprintf(name, sizeof(name), "%zx-%.*s", (i * 7919) % made, (int)len,
		    "zyxwvutsrqponmlkjihgfedcbaZYXWVUTSRQPONMLKJIHGFEDCBA0123456789");
		fd = openat(dfd, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
		CHECK(fd >= 0);
		close(fd);
	}
	v = queue_read_dir(dfd, &n);
	CHECK(v != NULL);
	CHECK_INT(n, made);
	for (i = 0; v != NULL && i < n; i++) {
		if (i > 0)
			CHECK_MSG(strcmp(v[i - 1].name, v[i].name) < 0, "%s before %s",
			    v[i - 1].name, v[i].name);
		CHECK_INT(fstatat(dfd, v[i].name, &st, AT_SYMLINK_NOFOLLOW), 0);
		CHECK(st.st_ino == v[i].ino);
	}
	/* a walk gives back what it passed: the rest is still there, in order */
	for (i = 0; v != NULL && i < n; i += 997) {
		queue_dir_release(v, n, i);
		CHECK_INT(fstatat(dfd, v[i].name, &st, AT_SYMLINK_NOFOLLOW), 0);
	}
	for (from = i -= 997; v != NULL && i < n; i++) {
		CHECK_INT(fstatat(dfd, v[i].name, &st, AT_SYMLINK_NOFOLLOW), 0);
		CHECK(st.st_ino == v[i].ino);
		if (i > from)
			CHECK(strcmp(v[i - 1].name, v[i].name) < 0);
	}
	queue_free_dir(v, n);
	close(dfd);
}

int
main(void)
{
	if (fixture_setup("queue") != 0)
		return 2;
	test_qid();
	test_read_dir();
	test_escape();
	test_envelope_decode_rejects();
	test_sigkill();
	test_roundtrip();
	test_reserved();
	test_envelope_shared();
	test_envelope_shared_threads();
	test_image_bound();
	test_records();
	test_leftovers();
	test_recycle();
	test_recycle_kept();
	test_recycle_kept_deleted();
	test_spares_kept();
	test_recycle_refused();
	test_corrupt();
	test_dkim_restart();
	test_body_bound();
	test_body_bound_remove();
	test_group_commit();
	test_close();
	test_scanner_turn_bounded();
	test_scanner_paced();
	test_scan_readdir_fails();
#ifdef RELAY_TEST_HOOKS
	test_reap_after_removal();
	test_scanner_stop_busy();
	test_scanner_paced_stop();
#endif
	fixture_teardown();
	return check_done();
}
