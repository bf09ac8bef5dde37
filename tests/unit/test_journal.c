/*
 * test_journal.c - unit tests of the acceptance journal
 * (queue/queue_journal.c) on real ring files (JOURNAL_SIZE each) in a
 * temporary directory, and of its use by the queue (queue/queue.c)
 * at start-up and at commit:
 *   - open makes the file, written in full (no holes, no unwritten extents),
 *     and finds it again; batches appended and never released ("a crash")
 *     replay record by record, in order, byte-exact;
 *   - a moved tail replays nothing; a torn (bad CRC, zeroed sector, bad
 *     header) batch ends the walk; stale batches of an earlier lap, or of
 *     another journal, are never replayed;
 *   - the ring wraps to its start and replay follows it; a full ring
 *     refuses a batch and writes nothing; an empty journal writes at its
 *     tail; after a failed write or sync it takes no more batches;
 *   - running, after such a failure, the restore finds exactly the batches
 *     appended since the tail (never the failed one, even whole on disk)
 *     and journal_reopen() makes the journal take batches again;
 *   - a damaged newer superblock falls back to the older one (a duplicate,
 *     never a loss); a journal with none is kept as journal.bad;
 *   - queue_open() writes journaled messages missing from msg/ back, exact,
 *     and skips records that are not queue files; with the publish delayed
 *     a commit is acknowledged before its msg/ file exists, and a process
 *     killed in that window loses nothing;
 *   - with the sync thread held (queue_test_set_sync_fn()), the restore
 *     probe sent after a failed publish never overtakes a message
 *     acknowledged from the journal before it: each reaches the router
 *     once, at the one restore;
 *   - a failed append (queue_test_fail_journal()) in a batch where nobody got
 *     a 250 makes the loop log queue_journal_failed and start the probe at
 *     once, while the sync thread is held and no job has come back.
 * Records are generated from their name ("r<k>-<len>"), so the replay
 * callback checks each image's bytes without keeping copies.
 * Owns its temporary directory and removes it at the end.
 */
#include "queue/queue_journal.h"
#include "queue/queue.h"
#include "common/log.h"
#include "common/util.h"
#include "check.h"
#include "fixture.h"

#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define JB_HDR   40u                   /* batch header (queue_journal.c) */
#define JR_HDR   (JOURNAL_QID_MAX + 8u) /* record header */
#define MIB      (1u << 20)

/*
 * Fixtures.
 */

/* A fresh directory below the test's temporary one; its fd, its path in out. */
static int
new_dir(char *out, size_t len)
{
	int fd;

	snprintf(out, len, "%s/d%d", tdir, ndirs++);
	if (mkdir(out, 0700) == -1 || (fd = open(out, O_RDONLY | O_DIRECTORY)) == -1) {
		perror(out);
		exit(2);
	}
	return fd;
}

/* A test's directory, no longer needed: a journal is JOURNAL_SIZE. */
static void
drop_dir(int dirfd, const char *path)
{
	close(dirfd);
	rm_rf(path);
}

static off_t
file_size_at(int dirfd, const char *name)
{
	struct stat st;

	return fstatat(dirfd, name, &st, 0) == 0 ? st.st_size : -1;
}

/*
 * Every byte of name in dirfd is written data: no hole, no unwritten
 * (fallocated) or delayed extent.  1 yes, 0 no, -1 the file system cannot
 * tell (no FIEMAP).
 */
static int
file_fully_written(int dirfd, const char *name, uint64_t size)
{
	enum { NEXT = 32 };
	struct fiemap *fm = xcalloc(1, sizeof(*fm) + NEXT * sizeof(struct fiemap_extent));
	uint64_t covered = 0;
	int fd = openat(dirfd, name, O_RDONLY), ok = 1, last = 0;

	while (fd >= 0 && ok == 1 && !last && covered < size) {
		memset(fm, 0, sizeof(*fm));
		fm->fm_start = covered;
		fm->fm_length = size - covered;
		fm->fm_flags = FIEMAP_FLAG_SYNC;
		fm->fm_extent_count = NEXT;
		if (ioctl(fd, FS_IOC_FIEMAP, fm) == -1) {
			ok = -1;
			break;
		}
		if (fm->fm_mapped_extents == 0)
			break;
		for (unsigned i = 0; i < fm->fm_mapped_extents && ok == 1; i++) {
			const struct fiemap_extent *e = &fm->fm_extents[i];

			if (e->fe_logical > covered || (e->fe_flags & (FIEMAP_EXTENT_UNWRITTEN |
			    FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_UNKNOWN)) != 0)
				ok = 0;
			covered = e->fe_logical + e->fe_length;
			last = (e->fe_flags & FIEMAP_EXTENT_LAST) != 0;
		}
	}
	if (fd >= 0)
		close(fd);
	free(fm);
	return ok == 1 && covered < size ? 0 : ok;
}

/* Open dirfd's journal; no warning expected. */
static void
jopen(int dirfd, struct journal *j)
{
	struct buf err = BUF_INIT;

	if (journal_open(dirfd, j, &err) != 0) {
		fprintf(stderr, "journal_open: %s\n", buf_cstr(&err));
		exit(2);
	}
	CHECK_MSG(err.len == 0, "journal_open warned: %s", buf_cstr(&err));
	buf_free(&err);
}

/* Read or write raw bytes of dirfd's journal file (damage, inspection). */
static void
jfile_io(int dirfd, bool wr, void *p, size_t len, uint64_t off)
{
	int fd = openat(dirfd, "journal", O_RDWR);
	ssize_t n;

	if (fd == -1) {
		perror("journal");
		exit(2);
	}
	n = wr ? pwrite(fd, p, len, (off_t)off) : pread(fd, p, len, (off_t)off);
	if (n != (ssize_t)len) {
		perror("journal io");
		exit(2);
	}
	close(fd);
}

static void
flip_byte(int dirfd, uint64_t off)
{
	unsigned char c;

	jfile_io(dirfd, false, &c, 1, off);
	c ^= 0x5a;
	jfile_io(dirfd, true, &c, 1, off);
}

static uint64_t
align4k(uint64_t v)
{
	return (v + JOURNAL_ALIGN - 1) & ~(uint64_t)(JOURNAL_ALIGN - 1);
}

/* A batch of one record of len image bytes takes this much room. */
static uint64_t
batch_room(size_t len)
{
	return align4k(JB_HDR + JR_HDR + ((len + 7u) & ~(size_t)7u));
}

/*
 * Records: the image of record k of length len is a byte stream seeded by
 * k, its name "r<k>-<len>".
 */

static void
image_make(unsigned k, size_t len, char *out)
{
	uint32_t x = 2654435761u * (k + 1);

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		out[i] = (char)(x >> 24);
	}
}

/* What a replay saw: the record numbers in order, and any mismatch. */
struct seen {
	unsigned k[512];
	size_t n;
	int bad;                     /* records whose name or bytes were wrong */
	size_t stop_at;              /* return 7 at this record (0 = never) */
	char *scratch;
	size_t scratch_len;
};

static int
seen_fn(void *arg, const char *qid, const char *image, size_t len)
{
	struct seen *s = arg;
	unsigned k;
	size_t want;
	char tail;

	if (sscanf(qid, "r%u-%zu%c", &k, &want, &tail) != 2 || want != len) {
		s->bad++;
		return 0;
	}
	if (s->scratch_len < len) {
		s->scratch = xrealloc(s->scratch, len);
		s->scratch_len = len;
	}
	image_make(k, len, s->scratch);
	if (len > 0 && memcmp(s->scratch, image, len) != 0)
		s->bad++;
	if (s->n < RELAY_ARRAY_LEN(s->k))
		s->k[s->n] = k;
	s->n++;
	return s->stop_at != 0 && s->n == s->stop_at ? 7 : 0;
}

static void
seen_free(struct seen *s)
{
	free(s->scratch);
	memset(s, 0, sizeof(*s));
}

/* Replay j into s (reset first); the replay's return code. */
static int
replay(struct journal *j, struct seen *s)
{
	char *scratch = s->scratch;
	size_t slen = s->scratch_len;

	memset(s, 0, sizeof(*s));
	s->scratch = scratch;
	s->scratch_len = slen;
	return journal_replay(j, seen_fn, s);
}

/* s saw exactly records first .. first+n-1, in order, all correct. */
static void
check_seen(const struct seen *s, unsigned first, size_t n, int line)
{
	size_t i;

	CHECK_MSG(s->bad == 0, "line %d: %d records with wrong bytes", line, s->bad);
	CHECK_MSG(s->n == n, "line %d: replayed %zu records, want %zu", line, s->n, n);
	for (i = 0; i < s->n && i < n && i < RELAY_ARRAY_LEN(s->k); i++)
		if (s->k[i] != first + i) {
			CHECK_MSG(0, "line %d: record %zu is r%u, want r%zu", line, i, s->k[i], first + i);
			break;
		}
}

/* One batch to append: records first .. first+nrec-1 with these lengths. */
struct bspec {
	unsigned first;
	unsigned nrec;
	size_t len[4];               /* per record; nrec > 4 repeats len[3] */
};

static size_t
bspec_len(const struct bspec *b, unsigned i)
{
	return b->len[i < 4 ? i : 3];
}

/*
 * Append a batch of records [first, first+nrec) of length len each against
 * the tail (tail, tail_seq).  The append's code; on success *end, *seq.
 */
static int
append_recs(struct journal *j, uint64_t tail, uint64_t tail_seq, unsigned first, unsigned nrec,
    size_t len, uint64_t *end, uint64_t *seq)
{
	char qid[JOURNAL_QID_MAX], *img = xmalloc(len + 1);
	int e = 0, rc;

	journal_batch_begin(j);
	for (unsigned i = 0; i < nrec; i++) {
		snprintf(qid, sizeof(qid), "r%u-%zu", first + i, len);
		image_make(first + i, len, img);
		journal_batch_add(j, qid, img, len);
	}
	free(img);
	rc = journal_append(j, tail, tail_seq, 0, end, seq, &e);
	CHECK_MSG(rc != RELAY_EIO, "journal_append: %s", strerror(e));
	return rc;
}

static int
append_spec(struct journal *j, uint64_t tail, uint64_t tail_seq, const struct bspec *b,
    uint64_t *end, uint64_t *seq)
{
	char qid[JOURNAL_QID_MAX], *img;
	int e = 0, rc;

	journal_batch_begin(j);
	for (unsigned i = 0; i < b->nrec; i++) {
		size_t len = bspec_len(b, i);

		img = xmalloc(len + 1);
		snprintf(qid, sizeof(qid), "r%u-%zu", b->first + i, len);
		image_make(b->first + i, len, img);
		journal_batch_add(j, qid, img, len);
		free(img);
	}
	rc = journal_append(j, tail, tail_seq, 0, end, seq, &e);
	CHECK_MSG(rc != RELAY_EIO, "journal_append: %s", strerror(e));
	return rc;
}

/* Record numbers a spec table covers up to (not including) batch n. */
static size_t
specs_nrec(const struct bspec *b, size_t n)
{
	size_t total = 0;

	for (size_t i = 0; i < n; i++)
		total += b[i].nrec;
	return total;
}

/* Batches of several records of odd sizes, 0 and 1 byte included. */
static const struct bspec mixed[] = {
	{ 1, 1, { 100 } },
	{ 2, 3, { 0, 1, 4097 } },
	{ 5, 2, { 7, 65536 } },
	{ 7, 1, { 12345 } },
	{ 8, 20, { 33, 8, 9, 300 } },
	{ 28, 1, { 3 * 4096 - JB_HDR - JR_HDR } },   /* exactly three 4 KiB blocks */
};

/*
 * 1 and 2: open, append, crash, replay; then a moved tail replays nothing.
 */

static void
test_open_append_replay(void)
{
	struct journal j;
	struct seen s = { 0 };
	char dir[128];
	uint64_t id, end[RELAY_ARRAY_LEN(mixed)], seq, head;
	size_t i, n = RELAY_ARRAY_LEN(mixed), nrec = specs_nrec(mixed, n);
	int dirfd = new_dir(dir, sizeof(dir)), written;

	/* a new journal: the full size, empty, its tail at the first batch */
	jopen(dirfd, &j);
	CHECK_INT(file_size_at(dirfd, "journal"), JOURNAL_SIZE);
	CHECK_INT(file_size_at(dirfd, "journal.new"), -1);
	/* written in full, so that a batch's fdatasync never has metadata to write */
	if ((written = file_fully_written(dirfd, "journal", JOURNAL_SIZE)) == -1)
		printf("note: no FIEMAP here, the journal's allocation not checked\n");
	else
		CHECK_MSG(written == 1, "the new journal has holes or unwritten extents");
	CHECK_INT(j.size, JOURNAL_SIZE);
	CHECK_INT(j.tail, JOURNAL_DATA);
	CHECK_INT(j.tail_seq, 1);
	CHECK_INT(j.head, JOURNAL_DATA);
	CHECK_INT(j.seq, 1);
	id = j.id;
	CHECK(id != 0);
	CHECK_INT(replay(&j, &s), 0);
	CHECK_INT(s.n, 0);
	journal_close(&j);

	/* found again, same journal */
	jopen(dirfd, &j);
	CHECK(j.id == id);
	CHECK_INT(j.tail, JOURNAL_DATA);
	CHECK_INT(j.tail_seq, 1);

	head = JOURNAL_DATA;
	for (i = 0; i < n; i++) {
		uint64_t bytes = JB_HDR;

		for (unsigned r = 0; r < mixed[i].nrec; r++)
			bytes += JR_HDR + ((bspec_len(&mixed[i], r) + 7u) & ~(size_t)7u);
		CHECK_INT(append_spec(&j, j.tail, j.tail_seq, &mixed[i], &end[i], &seq), 0);
		CHECK_INT(seq, i + 1);
		CHECK_INT(end[i], align4k(head + bytes));      /* right after the previous one */
		CHECK_INT(j.head, end[i]);
		head = end[i];
	}
	CHECK_INT(end[n - 1] - end[n - 2], 3 * 4096);
	journal_close(&j);                                   /* a crash: the tail never moved */

	jopen(dirfd, &j);
	CHECK_INT(j.tail, JOURNAL_DATA);
	CHECK_INT(j.head, JOURNAL_DATA);
	CHECK_INT(replay(&j, &s), 0);
	check_seen(&s, 1, nrec, __LINE__);
	CHECK_INT(j.head, end[n - 1]);
	CHECK_INT(j.seq, n + 1);

	/* a callback that says stop ends the walk with its code */
	journal_close(&j);
	jopen(dirfd, &j);
	seen_free(&s);
	s.stop_at = 4;
	CHECK_INT(journal_replay(&j, seen_fn, &s), 7);
	CHECK_INT(s.n, 4);
	CHECK_INT(replay(&j, &s), 0);                        /* and may be walked again */
	check_seen(&s, 1, nrec, __LINE__);

	/* 2: the tail moved past everything: nothing to replay */
	CHECK_INT(journal_set_tail(&j, j.head, j.seq), 0);
	journal_close(&j);
	jopen(dirfd, &j);
	CHECK(j.id == id);
	CHECK_INT(j.tail, end[n - 1]);
	CHECK_INT(j.tail_seq, n + 1);
	CHECK_INT(replay(&j, &s), 0);
	CHECK_INT(s.n, 0);
	CHECK_INT(j.head, end[n - 1]);
	CHECK_INT(j.seq, n + 1);

	/* the next batch goes on from there; a crash replays only it */
	CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 500, 2, 1000, &end[0], &seq), 0);
	CHECK_INT(seq, n + 1);
	journal_close(&j);
	jopen(dirfd, &j);
	CHECK_INT(replay(&j, &s), 0);
	check_seen(&s, 500, 2, __LINE__);
	journal_close(&j);
	seen_free(&s);
	drop_dir(dirfd, dir);
}

/*
 * 3: a torn batch ends the walk: what comes before it is replayed, it and
 * everything after it are not.
 */

enum damage { PAYLOAD_BYTE, LAST_SECTOR_ZERO, HEADER_MAGIC, HEADER_LEN, HEADER_NREC };

static void
test_torn(void)
{
	static const struct {
		size_t batch;            /* which of the four (0-based) */
		enum damage how;
		size_t want_batches;     /* replayed: batches 0 .. want-1 */
	} rows[] = {
		{ 3, PAYLOAD_BYTE, 3 },
		{ 1, PAYLOAD_BYTE, 1 },
		{ 3, LAST_SECTOR_ZERO, 3 },    /* the last sector of the write never landed */
		{ 2, LAST_SECTOR_ZERO, 2 },
		{ 0, HEADER_MAGIC, 0 },
		{ 2, HEADER_LEN, 2 },
		{ 1, HEADER_NREC, 1 },
	};
	/* four batches of 3 records, each more than two sectors long */
	static const size_t rlen = 3000;
	struct journal j;
	struct seen s = { 0 };
	char dir[128];
	uint64_t start[4], end[4], seq;
	int dirfd;

	for (size_t r = 0; r < RELAY_ARRAY_LEN(rows); r++) {
		uint64_t at;

		dirfd = new_dir(dir, sizeof(dir));
		jopen(dirfd, &j);
		for (size_t b = 0; b < 4; b++) {
			start[b] = j.head;
			CHECK_INT(append_recs(&j, j.tail, j.tail_seq, (unsigned)(1 + 3 * b), 3, rlen, &end[b],
			    &seq), 0);
		}
		journal_close(&j);

		at = start[rows[r].batch];
		switch (rows[r].how) {
		case PAYLOAD_BYTE:
			flip_byte(dirfd, at + JB_HDR + JR_HDR + 1234);
			break;
		case LAST_SECTOR_ZERO: {
			char zero[512] = { 0 };
			uint64_t blen = JB_HDR + 3 * (JR_HDR + ((rlen + 7) & ~(size_t)7));

			/* the last 512-byte sector the batch touches, from its start */
			jfile_io(dirfd, true, zero, sizeof(zero), at + ((blen - 1) & ~(uint64_t)511));
			break;
		}
		case HEADER_MAGIC:
			flip_byte(dirfd, at);
			break;
		case HEADER_LEN:
			flip_byte(dirfd, at + 24);      /* len: low byte */
			break;
		case HEADER_NREC:
			flip_byte(dirfd, at + 28);      /* nrec */
			break;
		}

		jopen(dirfd, &j);
		CHECK_INT(replay(&j, &s), 0);
		check_seen(&s, 1, 3 * rows[r].want_batches, __LINE__);
		CHECK_MSG(j.head == (rows[r].want_batches > 0 ? end[rows[r].want_batches - 1] : JOURNAL_DATA),
		    "row %zu: head %llu", r, (unsigned long long)j.head);
		CHECK_MSG(j.seq == 1 + rows[r].want_batches, "row %zu: seq %llu", r,
		    (unsigned long long)j.seq);

		/* the next batch takes the torn one's place; a crash replays it after the good ones */
		CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 100, 1, 50, &end[0], &seq), 0);
		CHECK_INT(seq, 1 + rows[r].want_batches);
		journal_close(&j);
		jopen(dirfd, &j);
		CHECK_INT(replay(&j, &s), 0);
		CHECK_MSG(s.n == 3 * rows[r].want_batches + 1 && s.bad == 0 && s.k[s.n - 1] == 100,
		    "row %zu: %zu records after the torn batch's replacement", r, s.n);
		journal_close(&j);
		drop_dir(dirfd, dir);
	}
	seen_free(&s);
}

/*
 * 4: stale batches.  Batches of an earlier pass over the same region are
 * whole and carry the journal's id, but an older sequence number: the walk
 * ends there.  So does a whole batch of another journal.
 */

static void
test_stale(void)
{
	struct journal j, other;
	struct seen s = { 0 };
	char dir[128], dir2[128], *copy;
	uint64_t end, seq, e6 = 0, pos, len;
	int dirfd = new_dir(dir, sizeof(dir)), dirfd2;

	/* six small batches, one block each, all published */
	jopen(dirfd, &j);
	for (unsigned b = 0; b < 6; b++) {
		CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 1 + b, 1, 1000, &end, &seq), 0);
		e6 = end;
	}
	CHECK_INT(e6, JOURNAL_DATA + 6 * 4096);
	/*
	 * The tail goes back to the start of the ring with nothing live (as after
	 * a lap): the next batches overwrite the region of batches 1-4 with two
	 * larger ones, 7 and 8.  Batch 5, whole, lies right after batch 8.
	 */
	CHECK_INT(journal_set_tail(&j, JOURNAL_DATA, j.seq), 0);
	CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 7, 1, 5000, &end, &seq), 0);
	CHECK_INT(end, JOURNAL_DATA + 2 * 4096);
	CHECK_INT(seq, 7);
	CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 8, 1, 5000, &end, &seq), 0);
	CHECK_INT(end, JOURNAL_DATA + 4 * 4096);
	journal_close(&j);

	jopen(dirfd, &j);
	CHECK_INT(replay(&j, &s), 0);
	check_seen(&s, 7, 2, __LINE__);                      /* not 5 and 6 */
	CHECK_INT(j.head, JOURNAL_DATA + 4 * 4096);
	CHECK_INT(j.seq, 9);

	/* the tail past batch 7 only: 8 is replayed, then 5 ends the walk */
	CHECK_INT(journal_set_tail(&j, JOURNAL_DATA + 2 * 4096, 8), 0);
	journal_close(&j);
	jopen(dirfd, &j);
	CHECK_INT(replay(&j, &s), 0);
	check_seen(&s, 8, 1, __LINE__);
	journal_close(&j);

	/*
	 * Another journal's whole batch 2 where this one's batch 2 would be: it
	 * has the right number but not this journal's id.
	 */
	dirfd2 = new_dir(dir2, sizeof(dir2));
	jopen(dirfd2, &other);
	CHECK_INT(append_recs(&other, other.tail, other.tail_seq, 40, 1, 200, &end, &seq), 0);
	pos = other.head;
	CHECK_INT(append_recs(&other, other.tail, other.tail_seq, 41, 1, 200, &end, &seq), 0);
	CHECK_INT(seq, 2);
	len = end - pos;
	journal_close(&other);

	drop_dir(dirfd, dir);
	dirfd = new_dir(dir, sizeof(dir));
	jopen(dirfd, &j);
	CHECK(j.id != other.id);
	CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 1, 1, 200, &end, &seq), 0);
	CHECK_INT(end, pos);
	journal_close(&j);
	copy = xmalloc(len);
	jfile_io(dirfd2, false, copy, len, pos);
	jfile_io(dirfd, true, copy, len, pos);
	free(copy);
	jopen(dirfd, &j);
	CHECK_INT(replay(&j, &s), 0);
	check_seen(&s, 1, 1, __LINE__);
	CHECK_INT(j.seq, 2);
	journal_close(&j);
	seen_free(&s);
	drop_dir(dirfd2, dir2);
	drop_dir(dirfd, dir);
}

/*
 * 5: wrap-around.  1 MiB records, the tail following a few batches behind,
 * for more than a lap: a batch that does not fit before the end goes to the
 * first block, and a crash replays exactly the live batches, across the
 * wrap, in order (the earlier lap's batches around them are stale).
 */

static void
test_wrap(void)
{
	static const size_t rlen = MIB;
	const uint64_t room = batch_room(rlen);
	const unsigned per_lap = (unsigned)((JOURNAL_SIZE - JOURNAL_DATA) / room);
	const unsigned nbatch = per_lap + 2, live = 4;
	uint64_t *ends = xcalloc(nbatch + 1, sizeof(*ends)), seq;
	struct journal j;
	struct seen s = { 0 };
	char dir[128];
	unsigned b, wrapped = 0;
	int dirfd = new_dir(dir, sizeof(dir));

	jopen(dirfd, &j);
	for (b = 1; b <= nbatch; b++) {
		if (b > live)           /* published: batches up to b - live */
			CHECK_INT(journal_set_tail(&j, ends[b - live], b - live + 1), 0);
		CHECK_INT(append_recs(&j, j.tail, j.tail_seq, b, 1, rlen, &ends[b], &seq), 0);
		CHECK_INT(seq, b);
		if (b > 1 && ends[b] == JOURNAL_DATA + room)
			wrapped = b;
	}
	CHECK_INT(wrapped, per_lap + 1);
	/* live: nbatch-live+1 .. nbatch; the wrap must fall inside them */
	CHECK(wrapped > nbatch - live + 1 && wrapped <= nbatch);
	journal_close(&j);

	jopen(dirfd, &j);
	CHECK_INT(j.tail, ends[nbatch - live]);
	CHECK_INT(replay(&j, &s), 0);
	check_seen(&s, nbatch - live + 1, live, __LINE__);
	CHECK_INT(j.head, ends[nbatch]);
	CHECK_INT(j.seq, nbatch + 1);

	/* the tail right before the wrapped batch: replay starts at the first block */
	CHECK_INT(journal_set_tail(&j, ends[wrapped - 1], wrapped), 0);
	journal_close(&j);
	jopen(dirfd, &j);
	CHECK_INT(replay(&j, &s), 0);
	check_seen(&s, wrapped, nbatch - wrapped + 1, __LINE__);
	journal_close(&j);
	free(ends);
	seen_free(&s);
	drop_dir(dirfd, dir);
}

/*
 * 6: a full ring refuses a batch (RELAY_ETEMP) and writes nothing; once the
 * tail moves, there is room again.  And the empty journal's rule: with
 * nothing live the next batch starts at the tail, where replay looks.
 */

static void
test_full(void)
{
	static const size_t rlen = MIB;
	const uint64_t room = batch_room(rlen);
	const unsigned fit = (unsigned)((JOURNAL_SIZE - JOURNAL_DATA) / room);
	uint64_t end = 0, seq = 0, last = 0, rest, head;
	struct journal j;
	struct seen s = { 0 };
	char dir[128];
	unsigned b;
	int dirfd = new_dir(dir, sizeof(dir));

	jopen(dirfd, &j);
	for (b = 1; b <= fit; b++)
		CHECK_INT(append_recs(&j, j.tail, j.tail_seq, b, 1, rlen, &last, &seq), 0);
	/* the next one would go to the first block, over the live batch 1 */
	head = j.head;
	end = seq = 12345;
	CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 900, 1, rlen, &end, &seq), RELAY_ETEMP);
	CHECK_INT(end, 12345);
	CHECK_INT(seq, 12345);
	CHECK_INT(j.head, head);
	CHECK_INT(j.seq, fit + 1);

	/* a batch that fills the ring exactly to its end still fits; then nothing does */
	rest = JOURNAL_SIZE - j.head;
	CHECK(rest > JB_HDR + JR_HDR && rest < room);
	CHECK_INT(append_recs(&j, j.tail, j.tail_seq, fit + 1, 1, rest - JB_HDR - JR_HDR, &last, &seq),
	    0);
	CHECK_INT(last, JOURNAL_SIZE);
	CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 901, 1, 1, &end, &seq), RELAY_ETEMP);
	CHECK_INT(j.seq, fit + 2);
	journal_close(&j);

	/* all of them intact */
	jopen(dirfd, &j);
	CHECK_INT(replay(&j, &s), 0);
	check_seen(&s, 1, fit + 1, __LINE__);
	CHECK_INT(j.head, JOURNAL_SIZE);

	/* batches 1 and 2 published: two 1 MiB batches fit at the start, not a third */
	CHECK_INT(journal_set_tail(&j, JOURNAL_DATA + 2 * room, 3), 0);
	CHECK_INT(append_recs(&j, j.tail, j.tail_seq, fit + 2, 1, rlen, &end, &seq), 0);
	CHECK_INT(end, JOURNAL_DATA + room);
	CHECK_INT(append_recs(&j, j.tail, j.tail_seq, fit + 3, 1, rlen, &end, &seq), 0);
	CHECK_INT(end, JOURNAL_DATA + 2 * room);             /* up to the tail, exactly */
	CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 902, 1, 1, &end, &seq), RELAY_ETEMP);
	journal_close(&j);
	jopen(dirfd, &j);
	CHECK_INT(replay(&j, &s), 0);
	check_seen(&s, 3, fit + 1, __LINE__);                /* 3 .. fit+1, then the two wrapped */
	CHECK_INT(j.head, JOURNAL_DATA + 2 * room);
	journal_close(&j);
	drop_dir(dirfd, dir);

	/*
	 * The live region wrapped (the tail near the end, the head below it): a
	 * batch that fits neither before the end nor between head and tail is
	 * refused, although it would fit between the first block and the tail
	 * (that is where the live wrapped batches are).
	 */
	dirfd = new_dir(dir, sizeof(dir));
	jopen(dirfd, &j);
	for (b = 1; b <= fit; b++)
		CHECK_INT(append_recs(&j, j.tail, j.tail_seq, b, 1, rlen, &last, &seq), 0);
	CHECK_INT(journal_set_tail(&j, JOURNAL_DATA + (fit - 1) * room, fit), 0);
	for (b = fit + 1; b <= 2 * fit - 2; b++)
		CHECK_INT(append_recs(&j, j.tail, j.tail_seq, b, 1, rlen, &last, &seq), 0);
	head = j.head;
	CHECK_INT(head, JOURNAL_DATA + (fit - 2) * room);
	rest = JOURNAL_SIZE - head + 4096;                   /* one block too many for the end */
	CHECK(rest > room && JOURNAL_DATA + rest <= j.tail);
	CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 903, 1, rest - JB_HDR - JR_HDR, &end, &seq),
	    RELAY_ETEMP);
	CHECK_INT(j.head, head);
	journal_close(&j);
	jopen(dirfd, &j);
	CHECK_INT(replay(&j, &s), 0);
	check_seen(&s, fit, fit - 1, __LINE__);
	journal_close(&j);
	drop_dir(dirfd, dir);

	/* a batch larger than the ring never fits; one exactly as large does, when it is empty */
	dirfd = new_dir(dir, sizeof(dir));
	jopen(dirfd, &j);
	CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 904, 1, JOURNAL_SIZE - JOURNAL_DATA - JB_HDR - JR_HDR + 8,
	    &end, &seq), RELAY_ETEMP);
	CHECK_INT(file_size_at(dirfd, "journal"), JOURNAL_SIZE);
	CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 1, 1, JOURNAL_SIZE - JOURNAL_DATA - JB_HDR - JR_HDR,
	    &end, &seq), 0);
	CHECK_INT(end, JOURNAL_SIZE);
	journal_close(&j);
	jopen(dirfd, &j);
	CHECK_INT(replay(&j, &s), 0);
	check_seen(&s, 1, 1, __LINE__);
	journal_close(&j);
	drop_dir(dirfd, dir);

	/*
	 * The empty rule: nothing live (tail_seq == seq) but the tail elsewhere
	 * than the head: the batch goes to the tail, or, where it does not fit
	 * before the end, to the first block; replay finds it either way.
	 */
	{
		static const struct {
			uint64_t tail;
			size_t len;
			uint64_t want_end;
		} rows[] = {
			{ JOURNAL_DATA + MIB, 100, JOURNAL_DATA + MIB + 4096 },
			{ JOURNAL_SIZE - 4096, 5000, JOURNAL_DATA + 2 * 4096 },
			{ JOURNAL_SIZE - 4096, 100, JOURNAL_SIZE },
			{ JOURNAL_SIZE, 100, JOURNAL_DATA + 4096 },
			{ JOURNAL_DATA + 3 * 4096, 100, JOURNAL_DATA + 4 * 4096 },
		};

		dirfd = new_dir(dir, sizeof(dir));
		jopen(dirfd, &j);
		CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 1, 1, 100, &end, &seq), 0);
		CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 2, 1, 100, &end, &seq), 0);
		CHECK_INT(replay(&j, &s), 0);
		for (b = 0; b < RELAY_ARRAY_LEN(rows); b++) {
			CHECK_INT(journal_set_tail(&j, rows[b].tail, j.seq), 0);
			CHECK_MSG(append_recs(&j, j.tail, j.tail_seq, 10 + b, 1, rows[b].len, &end, &seq) == 0 &&
			    end == rows[b].want_end, "row %u: end %llu", b, (unsigned long long)end);
			journal_close(&j);                           /* a crash */
			jopen(dirfd, &j);
			CHECK_INT(replay(&j, &s), 0);
			check_seen(&s, 10 + b, 1, __LINE__);
			CHECK_INT(j.head, rows[b].want_end);
		}
		journal_close(&j);
	}
	seen_free(&s);
	drop_dir(dirfd, dir);
}

/*
 * A failed write or sync leaves the batch perhaps on disk, whole, under the
 * number the next batch would get.  Were the journal to go on, a next batch
 * that no longer fits at the same place would go to the first block under
 * that same number, and replay, finding the failed one first, would stop
 * before it: an acknowledged message lost.  So after a failure the journal
 * takes no more batches until the next start.  The sync fails here on
 * /dev/null (EINVAL); the batch's bytes are then put where it was to go, as
 * if they had reached the disk anyway.
 */

static void
test_failed_sync(void)
{
	struct journal j;
	struct seen s = { 0 };
	char dir[128], qid[JOURNAL_QID_MAX], *img = xmalloc(MIB);
	uint64_t end = 0, seq = 0, at = JOURNAL_SIZE - 2 * 4096;
	int dirfd = new_dir(dir, sizeof(dir)), real, e = 0, rc;

	jopen(dirfd, &j);
	CHECK_INT(journal_set_tail(&j, at, j.seq), 0);       /* empty, its tail near the end */

	journal_batch_begin(&j);
	snprintf(qid, sizeof(qid), "r%u-%zu", 1u, (size_t)1000);
	image_make(1, 1000, img);
	journal_batch_add(&j, qid, img, 1000);
	real = j.fd;
	j.fd = open("/dev/null", O_WRONLY);
	CHECK_INT(journal_append(&j, j.tail, j.tail_seq, 0, &end, &seq, &e), RELAY_EIO);
	CHECK_INT(e, EINVAL);
	close(j.fd);
	j.fd = real;
	CHECK(pwrite(real, j.wbuf.data, j.wbuf.len, (off_t)at) == (ssize_t)j.wbuf.len);

	/* a 1 MiB batch: it does not fit at the failed one's place */
	journal_batch_begin(&j);
	snprintf(qid, sizeof(qid), "r%u-%zu", 2u, (size_t)MIB);
	image_make(2, MIB, img);
	journal_batch_add(&j, qid, img, MIB);
	rc = journal_append(&j, j.tail, j.tail_seq, 0, &end, &seq, &e);
	CHECK_INT(rc, RELAY_EIO);
	journal_batch_begin(&j);
	journal_batch_add(&j, "r3-0", "", 0);
	CHECK_INT(journal_append(&j, j.tail, j.tail_seq, 0, &end, &seq, &e), RELAY_EIO);
	journal_close(&j);

	/* the restart replays the failed batch (its bytes made it: a duplicate, at worst) */
	jopen(dirfd, &j);
	CHECK_INT(replay(&j, &s), 0);
	if (rc == 0)                 /* batch 2 was acknowledged: it must be replayed */
		CHECK_MSG(s.n >= 1 && s.k[s.n - 1] == 2, "the acknowledged batch is lost (%zu records)", s.n);
	else
		check_seen(&s, 1, 1, __LINE__);
	CHECK_INT(journal_set_tail(&j, j.head, j.seq), 0);
	CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 4, 1, 100, &end, &seq), 0);
	journal_close(&j);
	jopen(dirfd, &j);
	CHECK_INT(replay(&j, &s), 0);
	check_seen(&s, 4, 1, __LINE__);
	journal_close(&j);
	free(img);
	seen_free(&s);
	drop_dir(dirfd, dir);
}

/*
 * 6b: the restore while running (the journal off after a failure): the
 * batches appended since the tail, and never a failed one, even whole on
 * disk; a live batch that does not read back fails it and changes
 * nothing; a failed tail update keeps the durable tail; after
 * journal_reopen() appends work again and a restart replays only them.
 */

/* journal_restore() into s (reset first). */
static int
restore(struct journal *j, struct seen *s, uint64_t *head, uint64_t *seq)
{
	char *scratch = s->scratch;
	size_t slen = s->scratch_len;

	memset(s, 0, sizeof(*s));
	s->scratch = scratch;
	s->scratch_len = slen;
	return journal_restore(j, seen_fn, s, head, seq);
}

static void
test_restore(void)
{
	struct journal j;
	struct seen s = { 0 };
	char dir[128], qid[JOURNAL_QID_MAX], img[500];
	uint64_t end = 0, seq = 0, head = 0, nseq = 0, tail, tail_seq, b2;
	int dirfd = new_dir(dir, sizeof(dir)), real, e = 0;

	jopen(dirfd, &j);
	CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 1, 1, 100, &end, &seq), 0);
	b2 = j.head;
	CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 2, 2, 300, &end, &seq), 0);
	CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 4, 1, 5000, &end, &seq), 0);

	/* a failed append, whose batch reached the disk whole at head */
	journal_batch_begin(&j);
	snprintf(qid, sizeof(qid), "r%u-%zu", 5u, sizeof(img));
	image_make(5, sizeof(img), img);
	journal_batch_add(&j, qid, img, sizeof(img));
	real = j.fd;
	j.fd = open("/dev/null", O_WRONLY);
	CHECK_INT(journal_append(&j, j.tail, j.tail_seq, 0, &end, &seq, &e), RELAY_EIO);
	close(j.fd);
	j.fd = real;
	CHECK(pwrite(real, j.wbuf.data, j.wbuf.len, (off_t)align4k(end)) == (ssize_t)j.wbuf.len);

	/* a tail update that fails keeps the durable tail */
	tail = j.tail;
	tail_seq = j.tail_seq;
	real = j.sb_fd;
	j.sb_fd = open("/dev/null", O_WRONLY);              /* fdatasync: EINVAL */
	CHECK_INT(journal_set_tail(&j, end, seq + 1), -1);
	close(j.sb_fd);
	j.sb_fd = real;
	CHECK(j.tail == tail && j.tail_seq == tail_seq);

	/* a live batch that does not read back: no restore, nothing changed */
	flip_byte(dirfd, b2 + JB_HDR + JR_HDR + 10);
	CHECK_INT(restore(&j, &s, &head, &nseq), RELAY_EIO);
	CHECK(j.tail == tail && j.tail_seq == tail_seq);
	flip_byte(dirfd, b2 + JB_HDR + JR_HDR + 10);

	/* the three good batches, not the failed one */
	CHECK_INT(restore(&j, &s, &head, &nseq), 0);
	check_seen(&s, 1, 4, __LINE__);
	CHECK(head == align4k(end) && nseq > seq + 1);
	CHECK_INT(journal_reopen(&j, head, nseq), 0);
	CHECK(j.tail == head && j.tail_seq == nseq);
	CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 6, 1, 200, &end, &seq), 0);
	CHECK(seq == nseq);
	journal_close(&j);

	/* a restart replays what came after the restore, nothing before it */
	jopen(dirfd, &j);
	CHECK_INT(replay(&j, &s), 0);
	check_seen(&s, 6, 1, __LINE__);
	journal_close(&j);
	seen_free(&s);
	drop_dir(dirfd, dir);
}

/*
 * 7: superblocks.  Slot 0 holds generations 0, 2, ...; slot 1 holds 1, 3, ...
 */

#define SB_SLOT 4096u                 /* queue_journal.c JSB_SLOT */
#define SB_TAIL 32u                  /* offset of the tail in a slot */

static void
test_superblock(void)
{
	struct journal j;
	struct seen s = { 0 };
	struct buf err = BUF_INIT;
	struct stat st;
	char dir[128], head0[64], bad0[64];
	uint64_t end_a, end_b, seq, id;
	int dirfd = new_dir(dir, sizeof(dir));

	jopen(dirfd, &j);
	id = j.id;
	CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 1, 1, 700, &end_a, &seq), 0);
	CHECK_INT(append_recs(&j, j.tail, j.tail_seq, 2, 1, 700, &end_b, &seq), 0);
	CHECK_INT(journal_set_tail(&j, end_a, 2), 0);        /* generation 1, slot 1 */
	CHECK_INT(journal_set_tail(&j, end_b, 3), 0);        /* generation 2, slot 0 */
	CHECK_INT(j.sb_gen, 2);
	journal_close(&j);

	/* the older slot damaged: the newer one is used */
	flip_byte(dirfd, SB_SLOT + SB_TAIL);
	jopen(dirfd, &j);
	CHECK_INT(j.tail, end_b);
	CHECK_INT(j.sb_gen, 2);
	journal_close(&j);
	flip_byte(dirfd, SB_SLOT + SB_TAIL);                  /* repaired */

	/* the newer slot damaged (a torn superblock write): the older tail, batch 2 again */
	flip_byte(dirfd, SB_TAIL);
	jopen(dirfd, &j);
	CHECK(j.id == id);
	CHECK_INT(j.sb_gen, 1);
	CHECK_INT(j.tail, end_a);
	CHECK_INT(j.tail_seq, 2);
	CHECK_INT(replay(&j, &s), 0);
	check_seen(&s, 2, 1, __LINE__);
	/* the next superblock goes over the damaged slot, not the good one */
	CHECK_INT(journal_set_tail(&j, j.head, j.seq), 0);
	CHECK_INT(j.sb_gen, 2);
	journal_close(&j);
	jopen(dirfd, &j);
	CHECK_INT(j.sb_gen, 2);
	CHECK_INT(j.tail, end_b);
	CHECK_INT(replay(&j, &s), 0);
	CHECK_INT(s.n, 0);
	journal_close(&j);
	flip_byte(dirfd, SB_TAIL);
	jopen(dirfd, &j);
	CHECK_INT(j.sb_gen, 1);                              /* slot 1 was left alone */
	CHECK_INT(j.tail, end_a);
	journal_close(&j);

	/* both damaged: kept as journal.bad, a new journal made, and err says so */
	flip_byte(dirfd, SB_SLOT + 20);                      /* slot 1's id */
	jfile_io(dirfd, false, bad0, sizeof(bad0), 0);
	CHECK_INT(journal_open(dirfd, &j, &err), 0);
	CHECK_MSG(strstr(buf_cstr(&err), "journal.bad") != NULL, "err: %s", buf_cstr(&err));
	CHECK_INT(file_size_at(dirfd, "journal.bad"), JOURNAL_SIZE);
	CHECK_INT(file_size_at(dirfd, "journal"), JOURNAL_SIZE);
	CHECK(j.id != id);
	CHECK_INT(j.tail, JOURNAL_DATA);
	CHECK_INT(j.tail_seq, 1);
	CHECK_INT(replay(&j, &s), 0);
	CHECK_INT(s.n, 0);
	journal_close(&j);
	{
		int fd = openat(dirfd, "journal.bad", O_RDONLY);

		CHECK(fd >= 0 && pread(fd, head0, sizeof(head0), 0) == (ssize_t)sizeof(head0));
		CHECK(memcmp(head0, bad0, sizeof(head0)) == 0);  /* the old bytes, untouched */
		if (fd >= 0)
			close(fd);
	}
	buf_free(&err);

	/* other unusable files: too short, and a size that is not the superblock's */
	{
		static const off_t sizes[] = { 100, JOURNAL_SIZE / 2 };

		for (size_t i = 0; i < RELAY_ARRAY_LEN(sizes); i++) {
			int fd;

			jopen(dirfd, &j);                            /* a good one first */
			journal_close(&j);
			fd = openat(dirfd, "journal", O_RDWR);
			CHECK(fd >= 0 && ftruncate(fd, sizes[i]) == 0);
			if (fd >= 0)
				close(fd);
			buf_reset(&err);
			CHECK_INT(journal_open(dirfd, &j, &err), 0);
			CHECK_MSG(strstr(buf_cstr(&err), "journal.bad") != NULL, "size %lld: err: %s",
			    (long long)sizes[i], buf_cstr(&err));
			CHECK_INT(file_size_at(dirfd, "journal.bad"), sizes[i]);
			CHECK_INT(file_size_at(dirfd, "journal"), JOURNAL_SIZE);
			CHECK_INT(j.tail_seq, 1);
			journal_close(&j);
		}
	}
	CHECK(fstatat(dirfd, "journal.new", &st, 0) == -1 && errno == ENOENT);
	buf_free(&err);
	seen_free(&s);
	drop_dir(dirfd, dir);
}

/*
 * 8: the queue.  At open, journaled messages missing from msg/ (or there
 * incomplete) are written back exactly; records that are not queue files
 * are skipped.  At commit, the 250 comes from the journal, before the
 * publish.
 */

static struct env_rcpt q_rcpts[] = {
	{ "bob@example.com", "rfc822;bob@example.com", ENV_NOTIFY_FAILURE },
	{ "carol@example.org", NULL, 0 },
};

static const struct envelope q_env = {
	.sender = "alice@relay.test",
	.rcpts = q_rcpts,
	.nrcpts = 2,
	.ret = ENV_RET_HDRS,
	.auth_user = "alice@relay.test",
	.client_ip = "127.0.0.1",
	.client_helo = "client.example",
	.arrival_ms = 1767225600123ULL,
};

/* A queue file as queue_txn_begin() and commit make it (queue/QUEUE.md). */
static void
qfile_image(struct buf *out, const struct envelope *env, const char *body, size_t blen)
{
	struct buf lines = BUF_INIT;

	envelope_encode(env, &lines);
	buf_puts(&lines, ".\n");
	buf_reset(out);
	buf_printf(out, "RELAYQ 1 %016llx %016llx\n", (unsigned long long)(43 + lines.len),
	    (unsigned long long)blen);
	buf_append(out, lines.data, lines.len);
	buf_append(out, body, blen);
	buf_free(&lines);
}

/* msg/<qid> holds exactly these bytes. */
static int
msg_equals(const char *qdir, const char *qid, const struct buf *want)
{
	char path[256], *got;
	struct stat st;
	int fd, ok;

	snprintf(path, sizeof(path), "%s/msg/%s", qdir, qid);
	if ((fd = open(path, O_RDONLY)) == -1 || fstat(fd, &st) == -1) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	got = xmalloc(want->len + 1);
	ok = (size_t)st.st_size == want->len &&
	    pread(fd, got, want->len, 0) == (ssize_t)want->len && memcmp(got, want->data, want->len) == 0;
	free(got);
	close(fd);
	return ok;
}

static void
test_queue_replay(void)
{
	static const char body1[] = "Subject: one\r\n\r\nfrom the journal\r\n";
	static const char body3[] = "Subject: three\r\n\r\nit was cut short in msg/\r\n";
	struct buf img1 = BUF_INIT, img3 = BUF_INIT;
	struct seen s = { 0 };
	static const char garbage[] = "GARBAGE, not a queue file, long enough for a header";
	struct queue_counters c;
	struct sink scanned = { .n = 0 };
	struct journal j;
	struct queue_msg *m;
	struct queue *q;
	uv_loop_t loop;
	char dir[128], path[256], qid1[QID_MAX], qid2[QID_MAX], qid3[QID_MAX];
	uint64_t end, seq;
	int dirfd = new_dir(dir, sizeof(dir)), e = 0, fd;

	queue_qid_make(qid1, 1767225600123ULL, 1, 11);
	queue_qid_make(qid2, 1767225600123ULL, 2, 22);
	queue_qid_make(qid3, 1767225600124ULL, 3, 33);
	qfile_image(&img1, &q_env, body1, sizeof(body1) - 1);
	qfile_image(&img3, &q_env, body3, sizeof(body3) - 1);

	/* what a crash after two 250s from the journal leaves (two batches) */
	jopen(dirfd, &j);
	journal_batch_begin(&j);
	journal_batch_add(&j, qid1, img1.data, img1.len);
	journal_batch_add(&j, qid2, garbage, sizeof(garbage) - 1);
	CHECK_INT(journal_append(&j, j.tail, j.tail_seq, 0, &end, &seq, &e), 0);
	journal_batch_begin(&j);
	journal_batch_add(&j, "../escape", img1.data, img1.len);
	journal_batch_add(&j, qid3, img3.data, img3.len);
	CHECK_INT(journal_append(&j, j.tail, j.tail_seq, 0, &end, &seq, &e), 0);
	journal_close(&j);
	/* message 3's file made it to msg/, but cut short */
	snprintf(path, sizeof(path), "%s/msg", dir);
	CHECK_INT(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/msg/%s", dir, qid3);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	CHECK(fd >= 0 && write(fd, img3.data, 60) == 60);
	if (fd >= 0)
		close(fd);

	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	CHECK(msg_equals(dir, qid1, &img1));
	CHECK(msg_equals(dir, qid3, &img3));
	CHECK(!msg_exists(dir, qid2));
	CHECK(!msg_exists(dir, "../escape"));               /* not dir/escape either */
	queue_get_counters(q, &c);
	CHECK_INT(c.replayed, 2);
	CHECK(log_has("event=queue_journal_replayed"));
	CHECK(log_has(qid2));
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	CHECK_INT(scanned.n, 2);
	if ((m = sink_find(&scanned, qid1)) != NULL) {
		CHECK_STR(m->env.sender, q_env.sender);
		CHECK_INT(m->env.nrcpts, 2);
		CHECK_INT(m->body_len, sizeof(body1) - 1);
	} else
		CHECK_MSG(0, "%s not scanned", qid1);
	CHECK(sink_find(&scanned, qid3) != NULL);
	sink_free(&scanned);
	close_queue(&loop, q);
	close_loop(&loop);

	/* the tail moved past them: the next start replays nothing */
	jopen(dirfd, &j);
	CHECK_INT(replay(&j, &s), 0);
	CHECK_INT(s.n, 0);
	CHECK_INT(j.seq, j.tail_seq);
	journal_close(&j);
	seen_free(&s);
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_get_counters(q, &c);
	CHECK_INT(c.replayed, 0);
	close_queue(&loop, q);
	close_loop(&loop);

	buf_free(&img1);
	buf_free(&img3);
	drop_dir(dirfd, dir);
}

/*
 * The window between the 250 and the publish is opened with the
 * RELAYD_TEST_PUBLISH_DELAY_MS hook: only in a RELAY_TEST_HOOKS build.
 */
#ifdef RELAY_TEST_HOOKS
static void
commit_body(struct queue *q, const char *body, size_t len, queue_commit_cb *cb, void *arg)
{
	struct queue_txn *t = NULL;

	CHECK_INT(queue_txn_begin(q, &q_env, &t), 0);
	if (t == NULL)
		exit(2);
	CHECK_INT(queue_txn_write(t, body, len), 0);
	queue_txn_commit(t, cb, arg);
}

static int kill_pipe = -1;

static void
kill_commit_cb(void *arg, int err, const char *qid)
{
	char line[64];
	int n;

	(void)arg;
	n = snprintf(line, sizeof(line), "%d %s\n", err, qid != NULL ? qid : "-");
	fixture_report_and_die(kill_pipe, line, n);
}

static void
test_queue_ack_before_publish(void)
{
	static const char body[] = "Subject: early\r\n\r\nacknowledged from the journal\r\n";
	struct commit_res res = { 0 };
	struct sink fresh = { .n = 0 }, scanned = { .n = 0 };
	struct queue_counters c;
	struct queue_msg *m;
	struct queue *q;
	uv_loop_t loop;
	char dir[128], line[64] = { 0 }, qid[QID_MAX] = { 0 };
	int dirfd = new_dir(dir, sizeof(dir)), fds[2], status = 0, err = -1;
	pid_t pid;

	/*
	 * The publish waits 600 ms: the callback (the 250) runs once the
	 * journal batch is synced, without msg/<qid>; the file is there when
	 * the message is handed to the router.
	 */
	setenv("RELAYD_TEST_PUBLISH_DELAY_MS", "600", 1);
	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	unsetenv("RELAYD_TEST_PUBLISH_DELAY_MS");
	fresh.qdir = dir;
	res.qdir = dir;
	queue_set_new_cb(q, sink_add, &fresh);
	commit_body(q, body, sizeof(body) - 1, commit_cb, &res);
	while (res.called == 0 && uv_run(&loop, UV_RUN_ONCE) != 0)
		;
	CHECK_INT(res.called, 1);
	CHECK_INT(res.err, 0);
	CHECK_INT(res.present, 0);
	CHECK_INT(fresh.n, 0);
	uv_run(&loop, UV_RUN_DEFAULT);                       /* until the publish */
	CHECK_INT(res.called, 1);
	CHECK_INT(fresh.n, 1);
	CHECK_INT(fresh.present, 1);
	CHECK(msg_exists(dir, res.qid));
	queue_get_counters(q, &c);
	CHECK_INT(c.journaled, 1);
	sink_free(&fresh);
	close_queue(&loop, q);
	close_loop(&loop);
	drop_dir(dirfd, dir);

	/*
	 * And a process killed in that window: the restart finds the message
	 * in the journal and queues it, whole.
	 */
	dirfd = new_dir(dir, sizeof(dir));
	if ((pid = fixture_fork(fds)) == 0) {
		close(fds[0]);
		kill_pipe = fds[1];
		setenv("RELAYD_TEST_PUBLISH_DELAY_MS", "5000", 1);
		uv_loop_init(&loop);
		q = open_queue(&loop, dir);
		commit_body(q, body, sizeof(body) - 1, kill_commit_cb, NULL);
		uv_run(&loop, UV_RUN_DEFAULT);
		_exit(5);               /* not reached: the callback kills us */
	}
	fixture_read_report(fds, line, sizeof(line));
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	CHECK_INT(sscanf(line, "%d %31s", &err, qid), 2);
	CHECK_INT(err, 0);
	CHECK(!msg_exists(dir, qid));                        /* never published */

	uv_loop_init(&loop);
	q = open_queue(&loop, dir);
	queue_get_counters(q, &c);
	CHECK_INT(c.replayed, 1);
	CHECK_INT(queue_scan(q, sink_add, &scanned), 0);
	CHECK_INT(scanned.n, 1);
	if ((m = sink_find(&scanned, qid)) != NULL) {
		char got[sizeof(body)], path[PATH_MAX];
		int fd = open(queue_msg_path(q, m, path, sizeof(path)), O_RDONLY);

		CHECK_INT(m->body_len, sizeof(body) - 1);
		CHECK(fd >= 0 && pread(fd, got, sizeof(body) - 1, (off_t)m->body_offset) ==
		    (ssize_t)(sizeof(body) - 1) && memcmp(got, body, sizeof(body) - 1) == 0);
		if (fd >= 0)
			close(fd);
		CHECK_STR(m->env.rcpts[1].addr, "carol@example.org");
	} else
		CHECK_MSG(0, "%s not found after the restart", qid);
	sink_free(&scanned);
	close_queue(&loop, q);
	close_loop(&loop);
	drop_dir(dirfd, dir);
}

/*
 * Lines of the log after line since containing needle ("": all of them);
 * *first: the number of the first (0 none).  The log is the whole
 * program's: a test counts from the lines there were when it began.
 */
static int
log_count(int since, const char *needle, int *first)
{
	char line[1024];
	FILE *fp;
	int n = 0, no = 0;

	if (first != NULL)
		*first = 0;
	if ((fp = fopen(logpath, "r")) == NULL)
		return 0;
	while (fgets(line, sizeof(line), fp) != NULL) {
		if (++no <= since || strstr(line, needle) == NULL)
			continue;
		if (n++ == 0 && first != NULL)
			*first = no;
	}
	fclose(fp);
	return n;
}

/*
 * A gate for the sync thread (queue_test_set_sync_fn()): takes and groups
 * let through (-1: all), and the groups it took, in order.
 */
struct sync_gate {
	uv_mutex_t mu;
	uv_cond_t cv;
	int takes, groups;
	int ntakes, ngroups;         /* times it came to take a group, groups taken */
	unsigned commits[16], probes[16];
};

static void
sync_gate_fn(void *arg, int phase, unsigned commits, unsigned probes, unsigned others)
{
	struct sync_gate *g = arg;
	int *allow = phase == QUEUE_TEST_SYNC_TAKE ? &g->takes : &g->groups;

	(void)others;
	uv_mutex_lock(&g->mu);
	if (phase == QUEUE_TEST_SYNC_GROUP && g->ngroups < (int)RELAY_ARRAY_LEN(g->commits)) {
		g->commits[g->ngroups] = commits;
		g->probes[g->ngroups] = probes;
	}
	g->ngroups += phase == QUEUE_TEST_SYNC_GROUP;
	g->ntakes += phase == QUEUE_TEST_SYNC_TAKE;
	uv_cond_broadcast(&g->cv);
	while (*allow == 0)
		uv_cond_wait(&g->cv, &g->mu);
	if (*allow > 0)
		(*allow)--;
	uv_mutex_unlock(&g->mu);
}

static void
sync_gate_set(struct sync_gate *g, int takes, int groups)
{
	uv_mutex_lock(&g->mu);
	g->takes = takes;
	g->groups = groups;
	uv_cond_broadcast(&g->cv);
	uv_mutex_unlock(&g->mu);
}

/*
 * A queue in dir, on loop (initialised here), whose sync thread passes the
 * gate g (takes and groups let through, -1: all); new messages to fresh.
 */
static struct queue *
gated_open(struct sync_gate *g, int takes, int groups, uv_loop_t *loop, const char *dir,
    struct sink *fresh)
{
	struct queue *q;

	memset(g, 0, sizeof(*g));
	if (uv_mutex_init(&g->mu) != 0 || uv_cond_init(&g->cv) != 0)
		exit(2);
	g->takes = takes;
	g->groups = groups;
	uv_loop_init(loop);
	q = open_queue(loop, dir);
	queue_set_new_cb(q, sink_add, fresh);
	queue_test_set_sync_fn(q, sync_gate_fn, g);
	return q;
}

static void
gated_close(struct sync_gate *g, uv_loop_t *loop, struct queue *q, struct sink *fresh)
{
	queue_test_set_sync_fn(q, NULL, NULL);
	sink_free(fresh);
	close_queue(loop, q);
	close_loop(loop);
	uv_cond_destroy(&g->cv);
	uv_mutex_destroy(&g->mu);
}

/*
 * Run the loop (without blocking in it: the probe timer is all there is to
 * wake it) until a journal probe waits for the held sync thread, or 20 s
 * went by.  The jobs that wait for it: new messages, probes.
 */
static void
run_until_probe_written(uv_loop_t *loop, struct queue *q, size_t *commits, size_t *probes)
{
	uint64_t until = uv_hrtime() + 20000000000ull;

	for (*probes = 0; *probes == 0 && uv_hrtime() < until;) {
		uv_run(loop, UV_RUN_NOWAIT);
		queue_test_written(q, commits, probes);
		if (*probes == 0)
			uv_sleep(1);
	}
}

/* Commit body into q and run the loop until its 250 (from the journal). */
static void
commit_acked(uv_loop_t *loop, struct queue *q, const char *body, struct commit_res *res)
{
	memset(res, 0, sizeof(*res));
	commit_body(q, body, strlen(body), commit_cb, res);
	while (res->called == 0 && uv_run(loop, UV_RUN_ONCE) != 0)
		;
	CHECK_INT(res->called, 1);
	CHECK_INT(res->err, 0);
	if (res->called != 1 || res->err != 0)
		exit(1);
}

/*
 * The journal's restore probe travels with the new messages through the
 * sync thread (QUEUE.md, "Restore, no restart"): it never overtakes a
 * message acknowledged from the journal before it.  The sync thread is held
 * by a gate.  m1 gets its 250 from the journal and its publish fails (a
 * file is in the way of msg/<qid1>): the journal goes off.  m2 got its 250
 * from the journal before that, and waits for the sync thread, which took
 * a group of new messages last; the probe joins it there.  The probe must
 * come in m2's group (or after it): m2 is published and withheld, the
 * probe restores both messages' batches, and the loop hands both to the
 * router once, at the restore, which counts them (messages=2).  Overtaken
 * (the probe classed with records and removals, before d178ac0), it
 * restored m2's batch before m2's publish: the restore reported one
 * message, m2's publish then found msg/<qid2> taken and failed, and the
 * journal went off again, with m2 not handed to the router.
 */
static void
test_probe_follows_acked_messages(void)
{
	static struct sync_gate g;
	struct commit_res r1, r2;
	struct sink fresh = { .n = 0 };
	struct queue_counters c;
	struct queue *q;
	uv_loop_t loop;
	struct stat st1, st2;
	char dir[128], path[256];
	size_t commits = 0, probes = 0;
	int dirfd = new_dir(dir, sizeof(dir)), fd, i, n, taken, restored, held, failed;
	int base = log_count(0, "", NULL);              /* earlier tests' lines */

	q = gated_open(&g, -1, 0, &loop, dir, &fresh);

	/* m1: acknowledged; its publish will find msg/<qid1> taken */
	commit_acked(&loop, q, "Subject: m1\r\n\r\none\r\n", &r1);
	snprintf(path, sizeof(path), "%s/msg/%s", dir, r1.qid);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	CHECK(fd >= 0);
	if (fd >= 0)
		close(fd);
	/* the sync thread took m1 alone; it takes nothing more for now */
	uv_mutex_lock(&g.mu);
	while (g.ngroups < 1)
		if (uv_cond_timedwait(&g.cv, &g.mu, 20 * 1000000000ull) != 0)
			break;
	CHECK_MSG(g.ngroups >= 1, "the sync thread took no group within 20 s");
	g.takes = 0;
	uv_mutex_unlock(&g.mu);
	CHECK_INT(g.commits[0], 1);

	/* m2: acknowledged from the journal, still on */
	commit_acked(&loop, q, "Subject: m2\r\n\r\none\r\n", &r2);
	queue_get_counters(q, &c);
	CHECK_INT(c.journaled, 2);

	/* m1's group goes on: its publish fails, the journal goes off; the
	 * probe (after 500 ms) reaches the sync thread, where m2 waits */
	sync_gate_set(&g, 0, -1);
	run_until_probe_written(&loop, q, &commits, &probes);
	CHECK_INT(probes, 1);
	CHECK_INT(commits, 1);
	CHECK_INT(log_count(base, "event=queue_journal_failed", NULL), 1);
	CHECK_INT(fresh.n, 0);

	sync_gate_set(&g, -1, -1);
	uv_run(&loop, UV_RUN_DEFAULT);

	/* the probe's group: with m2 or after it */
	uv_mutex_lock(&g.mu);
	n = g.ngroups;
	uv_mutex_unlock(&g.mu);
	for (i = 1, taken = 0; i < n && g.probes[i] == 0; i++)
		taken += (int)g.commits[i];
	CHECK_MSG(i < n && taken + (int)g.commits[i] == 1,
	    "the probe came in group %d of %d, with %u of the 1 message acknowledged before it",
	    i, n, i < n ? taken + g.commits[i] : 0);

	/* each message handed to the router once, at the one restore, which counts both */
	CHECK_INT(fresh.n, 2);
	CHECK(sink_find(&fresh, r1.qid) != NULL);
	CHECK(sink_find(&fresh, r2.qid) != NULL);
	CHECK_INT(log_count(base, "event=queue_journal_restored", &restored), 1);
	CHECK_INT(log_count(base, "event=queue_journal_restored messages=2 probes=1", NULL), 1);
	CHECK_INT(log_count(base, "event=queue_journal_failed", NULL), 1);
	snprintf(path, sizeof(path), "event=queue_publish_held qid=%s", r2.qid);
	CHECK_INT(log_count(base, path, &held), 1);
	CHECK_MSG(held > 0 && held < restored, "m2's publish (log line %d) after the restore (%d)",
	    held, restored);
	snprintf(path, sizeof(path), "event=queue_publish_failed qid=%s", r1.qid);
	CHECK_INT(log_count(base, path, &failed), 1);
	CHECK(failed > 0 && failed < restored);
	CHECK_INT(log_count(base, "event=queue_publish_failed", NULL), 1);

	/* both files restored whole (m1's over the file in its way) */
	snprintf(path, sizeof(path), "%s/msg/%s", dir, r1.qid);
	CHECK(stat(path, &st1) == 0 && st1.st_size > 0);
	snprintf(path, sizeof(path), "%s/msg/%s", dir, r2.qid);
	CHECK(stat(path, &st2) == 0 && st2.st_size == st1.st_size);

	gated_close(&g, &loop, q, &fresh);
	drop_dir(dirfd, dir);
}

/*
 * At most QUEUE_JNL_BACKLOG (512, queue_int.h) acknowledged messages wait
 * for their publish, each holding its file's descriptor, which relayd
 * counts (daemon/DESCRIPTORS.md).  With the sync thread held, nothing is
 * published: 600 commits handed over in one loop turn get 512 answers from
 * the journal, and the other 88 wait.  Once the gate opens every one is
 * answered and published.  Before, the journal thread took every pending
 * commit as one batch whatever the backlog's room: all 600 were answered.
 */
static void
test_acked_bounded_by_backlog(void)
{
	static struct sync_gate g;
	static struct commit_res res[600];
	static const char body[] = "Subject: b\r\n\r\nbody\r\n";
	struct sink fresh = { .n = 0 };
	struct queue *q;
	uv_loop_t loop;
	char dir[128];
	int dirfd = new_dir(dir, sizeof(dir)), i, n = 600, acked;
	uint64_t until;

	memset(res, 0, sizeof(res));
	fresh.qdir = dir;               /* counts the published ones (the sink keeps 64) */
	q = gated_open(&g, 0, 0, &loop, dir, &fresh);
	for (i = 0; i < n; i++)
		commit_body(q, body, strlen(body), commit_cb, &res[i]);
	/* handed over together at the end of this turn; the answers come back */
	until = uv_hrtime() + 20000000000ull;
	do {
		uv_run(&loop, UV_RUN_NOWAIT);
		for (i = acked = 0; i < n; i++)
			acked += res[i].called;
		if (acked < 512)
			uv_sleep(1);
	} while (acked < 512 && uv_hrtime() < until);
	CHECK_INT(acked, 512);
	for (i = 0; i < n; i++)
		CHECK_INT(res[i].err, 0);
	CHECK_INT(fresh.n, 0);

	sync_gate_set(&g, -1, -1);
	uv_run(&loop, UV_RUN_DEFAULT);
	for (i = acked = 0; i < n; i++)
		acked += res[i].called == 1 && res[i].err == 0;
	CHECK_INT(acked, n);
	CHECK_INT(fresh.present, n);

	gated_close(&g, &loop, q, &fresh);
	drop_dir(dirfd, dir);
}

/*
 * A failed journal append turns the journal off on the journal thread, in
 * a batch where no message got a 250 from it: the loop must learn at once
 * (QUEUE.md, "When the disk fails"), log queue_journal_failed and start the
 * restore probe's back-off, not when a job of that batch (or any later one)
 * comes back from the sync thread: on a failing disk that is a publish sync
 * later, or never.  The sync thread is held by a gate where it would take
 * the failed batch's message: nothing completes.  The loop logs the failure
 * then, and the probe (500 ms later) reaches the sync thread while the
 * message still waits there, so both go in one group once it is let go:
 * the message is acknowledged after its publish (a 250 never before a
 * sync), the probe restores an empty journal, and the failure is logged
 * once.  Before the journal thread woke the loop for this, the loop heard of
 * the failure only from the message's completion: no log line, and no
 * probe, while the sync thread was held.
 */
static void
test_append_failure_wakes_loop(void)
{
	static const char body[] = "Subject: m1\r\n\r\none\r\n";
	static struct sync_gate g;
	struct commit_res r1 = { 0 }, r2;
	struct sink fresh = { .n = 0 };
	struct queue_counters c;
	struct queue *q;
	uv_loop_t loop;
	char dir[128];
	size_t commits = 0, probes = 0;
	int dirfd = new_dir(dir, sizeof(dir));
	int base = log_count(0, "", NULL);              /* earlier tests' lines */

	q = gated_open(&g, 0, -1, &loop, dir, &fresh);     /* it takes nothing for now */

	/* the message's batch fails to append; it reaches the held sync thread */
	queue_test_fail_journal(q);
	r1.qdir = dir;
	commit_body(q, body, sizeof(body) - 1, commit_cb, &r1);
	uv_run(&loop, UV_RUN_NOWAIT);                       /* handed to the threads */
	uv_mutex_lock(&g.mu);
	while (g.ntakes < 1)
		if (uv_cond_timedwait(&g.cv, &g.mu, 20 * 1000000000ull) != 0)
			break;
	CHECK_MSG(g.ntakes >= 1, "the sync thread was never about to take a group within 20 s");
	uv_mutex_unlock(&g.mu);
	queue_get_counters(q, &c);
	CHECK_INT(c.journal_errors, 1);
	CHECK_INT(c.journaled, 0);

	/* the journal thread went on only after telling the loop: one turn hears it */
	uv_run(&loop, UV_RUN_NOWAIT);
	CHECK_INT(r1.called, 0);
	CHECK_INT(queue_test_ndone(q), 0);
	CHECK_INT(log_count(base, "event=queue_journal_failed", NULL), 1);
	CHECK_INT(log_count(base, "event=queue_journal_failed errors=1 op=\"journal append\"", NULL), 1);

	/* the probe's timer runs: the probe waits for the sync thread with m1 */
	run_until_probe_written(&loop, q, &commits, &probes);
	CHECK_INT(probes, 1);
	CHECK_INT(commits, 1);
	CHECK_INT(r1.called, 0);

	sync_gate_set(&g, -1, -1);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(g.ngroups >= 1 ? g.commits[0] : 0, 1);
	CHECK_INT(g.ngroups >= 1 ? g.probes[0] : 0, 1);
	CHECK_INT(r1.called, 1);
	CHECK_INT(r1.err, 0);
	CHECK_INT(r1.present, 1);                            /* its 250 after its publish */
	CHECK_INT(fresh.n, 1);
	CHECK_INT(log_count(base, "event=queue_journal_failed", NULL), 1);
	CHECK_INT(log_count(base, "event=queue_journal_restored", NULL), 1);
	CHECK_INT(log_count(base, "event=queue_journal_restored messages=0 probes=1", NULL), 1);

	/* the journal is on again: the next message gets its 250 from it */
	commit_acked(&loop, q, "Subject: m2\r\n\r\ntwo\r\n", &r2);
	uv_run(&loop, UV_RUN_DEFAULT);
	queue_get_counters(q, &c);
	CHECK_INT(c.journaled, 1);
	CHECK_INT(c.journal_errors, 1);
	CHECK_INT(fresh.n, 2);

	gated_close(&g, &loop, q, &fresh);
	drop_dir(dirfd, dir);
}
#endif

int
main(void)
{
	if (fixture_setup("journal") != 0)
		return 2;
	test_open_append_replay();
	test_torn();
	test_stale();
	test_wrap();
	test_full();
	test_failed_sync();
	test_restore();
	test_superblock();
	test_queue_replay();
#ifdef RELAY_TEST_HOOKS
	test_queue_ack_before_publish();
	test_probe_follows_acked_messages();
	test_append_failure_wakes_loop();
	test_acked_bounded_by_backlog();
#endif
	fixture_teardown();
	return check_done();
}
