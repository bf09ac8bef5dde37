/*
 * queue_journal.c - the acceptance journal's format: superblocks, batches,
 * records, the CRC that tells a whole batch from a torn one, and the replay
 * walk.  queue.c decides what goes in and when the tail moves.
 *
 * Owns: the journal file descriptor and the batch buffer.
 *
 * Must never: write a batch over the durable tail (a live record); accept a
 * batch whose CRC, journal id or sequence number is not the one expected
 * next (a torn write, or a stale batch of an earlier lap of the ring).
 *
 * Layout (host byte order: the file never leaves this machine):
 *   0, 4096   two superblock slots, written alternately, each in its own
 *             4 KiB block (a torn write leaves the other): magic "RELAYJ01",
 *             crc32c, journal id, generation, tail offset, tail sequence
 *             number, file size.
 *   8192 ...  batches, each starting on a 4 KiB boundary: a 40-byte header
 *             (magic "RJB1", crc32c of all that follows it, journal id,
 *             sequence number, payload length, record count), then records:
 *             queue id (32 bytes, NUL padded), image length (u32), u32 0,
 *             the image (the exact bytes of msg/<qid>), padded to 8.
 * A batch that does not fit before the end of the file goes to offset 8192;
 * replay looks for batch N+1 right after batch N, then at 8192.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "queue/queue_journal.h"
#include "common/util.h"

#include <sys/random.h>
#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define JSB_MAGIC        "RELAYJ01"
#define JSB_SLOT         4096u
#define JSB_LEN          56u
#define JB_MAGIC         0x31424a52u          /* "RJB1" */
#define JB_HDR           40u
#define JR_HDR           (JOURNAL_QID_MAX + 8u)
#define JOURNAL_ZERO_CHUNK (1u << 20)
/*
 * head after a failed batch write or sync: that batch may be on disk, whole,
 * under the number the next batch would get, and replay finds it first; a
 * next batch placed elsewhere (at 4096, when it does not fit where the failed
 * one went) would never be found.  So no more batches until the next start.
 */
#define JOURNAL_FAILED   UINT64_MAX

struct jsb {
	char magic[8];
	uint32_t crc;                /* of id .. size */
	uint32_t zero;
	uint64_t id;
	uint64_t gen;
	uint64_t tail;
	uint64_t tail_seq;
	uint64_t size;
};

struct jbh {
	uint32_t magic;
	uint32_t crc;                /* of id .. the end of the payload */
	uint64_t id;
	uint64_t seq;
	uint32_t len;
	uint32_t nrec;
	uint64_t zero;
};

_Static_assert(sizeof(struct jsb) == JSB_LEN, "superblock layout");
_Static_assert(sizeof(struct jbh) == JB_HDR, "batch header layout");

/*
 * CRC-32C (Castagnoli): the SSE4.2 instruction where the CPU has it, else
 * a table.
 */

static uint32_t journal_crc_table[256];

static void
journal_crc_init(void)
{
	uint32_t c;

	for (uint32_t i = 0; i < 256; i++) {
		c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		journal_crc_table[i] = c;
	}
}

static uint32_t
journal_crc_soft(uint32_t crc, const unsigned char *p, size_t n)
{
	while (n-- > 0)
		crc = journal_crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t
journal_crc_hw(uint32_t crc, const unsigned char *p, size_t n)
{
	uint64_t c = crc, w;

	for (; n >= 8; n -= 8, p += 8) {
		memcpy(&w, p, 8);
		c = __builtin_ia32_crc32di(c, w);
	}
	crc = (uint32_t)c;
	while (n-- > 0)
		crc = __builtin_ia32_crc32qi(crc, *p++);
	return crc;
}
#endif

static uint32_t
journal_crc(const void *p, size_t n)
{
	static int hw = -1;

	if (hw == -1) {
		journal_crc_init();
#if defined(__x86_64__)
		__builtin_cpu_init();
		hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#else
		hw = 0;
#endif
	}
#if defined(__x86_64__)
	if (hw == 1)
		return ~journal_crc_hw(~0u, p, n);
#endif
	return ~journal_crc_soft(~0u, p, n);
}

/* Called once, before any thread: the table and the CPU check are set up. */
static void
journal_crc_setup(void)
{
	(void)journal_crc("", 0);
}

static uint64_t
journal_align(uint64_t v)
{
	return (v + JOURNAL_ALIGN - 1) & ~(uint64_t)(JOURNAL_ALIGN - 1);
}

/*
 * Superblocks.
 */

static void
journal_sb_fill(const struct journal *j, uint64_t gen, struct jsb *sb)
{
	memset(sb, 0, sizeof(*sb));
	memcpy(sb->magic, JSB_MAGIC, sizeof(sb->magic));
	sb->id = j->id;
	sb->gen = gen;
	sb->tail = j->tail;
	sb->tail_seq = j->tail_seq;
	sb->size = j->size;
	sb->crc = journal_crc(&sb->id, JSB_LEN - 16);
}

static bool
journal_sb_valid(const struct jsb *sb, uint64_t size)
{
	return memcmp(sb->magic, JSB_MAGIC, sizeof(sb->magic)) == 0 &&
	    sb->crc == journal_crc(&sb->id, JSB_LEN - 16) && sb->size == size &&
	    sb->tail >= JOURNAL_DATA && sb->tail <= size && sb->tail % JOURNAL_ALIGN == 0 &&
	    sb->tail_seq > 0;
}

/* The newer valid slot, or -1 if neither is valid. */
static int
journal_sb_read(struct journal *j, uint64_t size)
{
	struct jsb sb[2];
	int best = -1;

	for (int i = 0; i < 2; i++) {
		if (util_pread_full(j->fd, &sb[i], sizeof(sb[i]), (uint64_t)i * JSB_SLOT) == -1 ||
		    !journal_sb_valid(&sb[i], size)) {
			memset(&sb[i], 0, sizeof(sb[i]));
			continue;
		}
		if (best == -1 || sb[i].gen > sb[best].gen)
			best = i;
	}
	if (best == -1)
		return -1;
	j->id = sb[best].id;
	j->sb_gen = sb[best].gen;
	j->tail = sb[best].tail;
	j->tail_seq = sb[best].tail_seq;
	j->size = size;
	return 0;
}

int
journal_set_tail(struct journal *j, uint64_t off, uint64_t seq)
{
	struct jsb sb;
	uint64_t gen = j->sb_gen + 1, old = j->tail, old_seq = j->tail_seq;
	int e;

	j->tail = off;
	j->tail_seq = seq;
	journal_sb_fill(j, gen, &sb);
	if (util_pwrite_full(j->sb_fd, &sb, sizeof(sb), (gen & 1) * JSB_SLOT) == -1 ||
	    fdatasync(j->sb_fd) == -1) {
		/* the durable tail is still the old one: a restore walks from there */
		e = errno;
		j->tail = old;
		j->tail_seq = old_seq;
		errno = e;
		return -1;
	}
	j->sb_gen = gen;
	return 0;
}

/*
 * A new, empty journal: made under a temporary name, written in full with
 * zeros (not only allocated: the first write into an unwritten extent
 * changes metadata that fdatasync need not write on every file system),
 * with a first superblock, then renamed into place.
 */
static int
journal_create(int dirfd, struct journal *j, struct buf *err)
{
	struct jsb sb;
	const char *what = NULL;
	char *zero;
	uint64_t off;
	int fd;

	(void)unlinkat(dirfd, "journal.new", 0);
	if ((fd = openat(dirfd, "journal.new", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) == -1) {
		buf_printf(err, "journal: create: %s", strerror(errno));
		return RELAY_ETEMP;
	}
	if (getrandom(&j->id, sizeof(j->id), GRND_NONBLOCK) != sizeof(j->id))
		j->id = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
	j->size = JOURNAL_SIZE;
	j->sb_gen = 0;
	j->tail = JOURNAL_DATA;
	j->tail_seq = 1;
	journal_sb_fill(j, 0, &sb);
	zero = xcalloc(1, JOURNAL_ZERO_CHUNK);
	for (off = 0; off < j->size && what == NULL; off += JOURNAL_ZERO_CHUNK)
		if (util_pwrite_full(fd, zero, JOURNAL_ZERO_CHUNK, off) == -1)
			what = "write";
	free(zero);
	if (what != NULL)
		;
	else if (util_pwrite_full(fd, &sb, sizeof(sb), 0) == -1)
		what = "write";
	else if (fsync(fd) == -1)
		what = "fsync";
	else if (renameat(dirfd, "journal.new", dirfd, "journal") == -1)
		what = "rename";
	else if (fsync(dirfd) == -1)
		what = "fsync(queue_dir)";
	if (what != NULL) {
		buf_printf(err, "journal: %s: %s", what, strerror(errno));
		close(fd);
		(void)unlinkat(dirfd, "journal.new", 0);
		return RELAY_ETEMP;
	}
	j->fd = fd;
	return 0;
}

int
journal_open(int dirfd, struct journal *j, struct buf *err)
{
	struct stat st;
	int fd;

	journal_crc_setup();
	memset(j, 0, sizeof(*j));
	buf_init(&j->wbuf);
	j->fd = j->sb_fd = -1;
	fd = openat(dirfd, "journal", O_RDWR | O_CLOEXEC);
	if (fd == -1 && errno != ENOENT) {
		buf_printf(err, "journal: open: %s", strerror(errno));
		return RELAY_EIO;
	}
	if (fd >= 0) {
		j->fd = fd;
		if (fstat(fd, &st) == -1 || st.st_size < (off_t)(JOURNAL_DATA + JOURNAL_ALIGN) ||
		    journal_sb_read(j, (uint64_t)st.st_size) == -1) {
			/* never ours, or both superblocks unreadable: keep it for a human */
			close(fd);
			j->fd = -1;
			if (renameat(dirfd, "journal", dirfd, "journal.bad") == -1) {
				buf_printf(err, "journal: unusable, and rename to journal.bad: %s",
				    strerror(errno));
				return RELAY_ETEMP;
			}
			buf_printf(err, "journal: no valid superblock; kept as journal.bad");
			/* err carries a warning; a new journal is made below */
		}
	}
	if (j->fd == -1 && journal_create(dirfd, j, err) != 0)
		return RELAY_ETEMP;
	if ((j->sb_fd = openat(dirfd, "journal", O_RDWR | O_CLOEXEC)) == -1) {
		buf_printf(err, "journal: open: %s", strerror(errno));
		journal_close(j);
		return RELAY_EIO;
	}
	j->head = j->tail;
	j->seq = j->tail_seq;
	return 0;
}

void
journal_close(struct journal *j)
{
	if (j->fd >= 0)
		close(j->fd);
	if (j->sb_fd >= 0)
		close(j->sb_fd);
	j->fd = j->sb_fd = -1;
	buf_free(&j->wbuf);
}

/*
 * Replay.
 */

/* The batch with number seq at off, whole and ours: its header, else false. */
static bool
journal_read_batch(struct journal *j, uint64_t off, uint64_t seq, struct jbh *h, char **payload)
{
	char *p;

	if (off + JB_HDR > j->size || util_pread_full(j->fd, h, sizeof(*h), off) == -1)
		return false;
	if (h->magic != JB_MAGIC || h->id != j->id || h->seq != seq ||
	    off + JB_HDR + h->len > j->size)
		return false;
	p = xmalloc(JB_HDR + (size_t)h->len);
	memcpy(p, h, JB_HDR);
	if (util_pread_full(j->fd, p + JB_HDR, h->len, off + JB_HDR) == -1 ||
	    journal_crc(p + 8, JB_HDR - 8 + (size_t)h->len) != h->crc) {
		free(p);
		return false;
	}
	*payload = p;
	return true;
}

/*
 * Walk the live batches from the durable tail, at most up to number limit:
 * fn for each record.  *head and *next: where the walk ended and the number
 * the next batch would have.
 */
static int
journal_walk(struct journal *j, uint64_t limit, journal_replay_fn *fn, void *arg,
    uint64_t *head, uint64_t *next)
{
	struct jbh h;
	char *batch, qid[JOURNAL_QID_MAX + 1];
	uint64_t off = j->tail, seq = j->tail_seq, at;
	uint32_t ilen;
	size_t pos, end;
	int rc = 0;

	while (seq < limit) {
		at = off;
		if (!journal_read_batch(j, at, seq, &h, &batch)) {
			at = JOURNAL_DATA;           /* it may have wrapped */
			if (!journal_read_batch(j, at, seq, &h, &batch))
				break;
		}
		end = JB_HDR + h.len;
		pos = JB_HDR;
		for (uint32_t i = 0; i < h.nrec && rc == 0 && pos + JR_HDR <= end; i++) {
			memcpy(qid, batch + pos, JOURNAL_QID_MAX);
			qid[JOURNAL_QID_MAX] = '\0';
			memcpy(&ilen, batch + pos + JOURNAL_QID_MAX, sizeof(ilen));
			pos += JR_HDR;
			if (ilen > end - pos)
				break;               /* cannot happen with a good CRC */
			rc = fn(arg, qid, batch + pos, ilen);
			pos += (ilen + 7u) & ~7u;
		}
		free(batch);
		if (rc != 0)
			return rc;
		off = journal_align(at + end);
		seq++;
	}
	*head = off;
	*next = seq;
	return 0;
}

int
journal_replay(struct journal *j, journal_replay_fn *fn, void *arg)
{
	return journal_walk(j, UINT64_MAX, fn, arg, &j->head, &j->seq);
}

int
journal_restore(struct journal *j, journal_replay_fn *fn, void *arg, uint64_t *head,
    uint64_t *seq)
{
	uint64_t next;
	int rc;

	/* j->seq: the number the next good append gets (a failed one keeps it) */
	if ((rc = journal_walk(j, j->seq, fn, arg, head, &next)) != 0)
		return rc;
	if (next != j->seq) {
		errno = EIO;                 /* a synced batch does not read back whole */
		return RELAY_EIO;
	}
	/* as after a start-up replay: past any number a batch in the file may carry
	 * (the failed one, written whole under j->seq, say) */
	*seq = j->seq + j->size / JOURNAL_ALIGN + 1;
	return 0;
}

int
journal_reopen(struct journal *j, uint64_t head, uint64_t seq)
{
	if (journal_set_tail(j, head, seq) == -1)
		return -1;
	j->head = head;
	j->seq = seq;
	return 0;
}

/*
 * Appending.
 */

void
journal_batch_begin(struct journal *j)
{
	struct jbh h;

	memset(&h, 0, sizeof(h));
	buf_reset(&j->wbuf);
	buf_append(&j->wbuf, &h, sizeof(h));
	j->nrec = 0;
}

void
journal_batch_add(struct journal *j, const char *qid, const void *image, size_t len)
{
	char rh[JR_HDR];
	uint32_t ilen = (uint32_t)len;
	static const char zero[8];

	memset(rh, 0, sizeof(rh));
	snprintf(rh, JOURNAL_QID_MAX, "%s", qid);
	memcpy(rh + JOURNAL_QID_MAX, &ilen, sizeof(ilen));
	buf_append(&j->wbuf, rh, sizeof(rh));
	buf_append(&j->wbuf, image, len);
	buf_append(&j->wbuf, zero, ((len + 7u) & ~(size_t)7u) - len);
	j->nrec++;
}

size_t
journal_batch_bytes(const struct journal *j)
{
	return j->wbuf.len;
}

/* Room for len bytes at off, not reaching the live region [tail, head)? */
static bool
journal_room(const struct journal *j, uint64_t off, uint64_t len, uint64_t tail, uint64_t tail_seq)
{
	if (off + len > j->size)
		return false;
	if (tail_seq == j->seq)
		return true;                 /* nothing live */
	if (tail < j->head)              /* live region not wrapped: free after head and before tail */
		return off >= j->head || off + len <= tail;
	return off >= j->head && off + len <= tail;
}

int
journal_append(struct journal *j, uint64_t tail, uint64_t tail_seq, unsigned delay_ms,
    uint64_t *end, uint64_t *seq, int *sys_errno)
{
	struct jbh h;
	uint64_t off = j->head, len = j->wbuf.len;

	if (j->head == JOURNAL_FAILED) {
		*sys_errno = EIO;
		return RELAY_EIO;
	}
	if (off + len > j->size)
		off = JOURNAL_DATA;
	if (tail_seq == j->seq && off != tail) {
		/* Empty: the next batch must start where replay looks first. */
		off = tail;
		if (off + len > j->size)
			off = JOURNAL_DATA;
	}
	if (!journal_room(j, off, len, tail, tail_seq))
		return RELAY_ETEMP;

	memset(&h, 0, sizeof(h));
	h.magic = JB_MAGIC;
	h.id = j->id;
	h.seq = j->seq;
	h.len = (uint32_t)(len - JB_HDR);
	h.nrec = j->nrec;
	memcpy(j->wbuf.data, &h, sizeof(h));
	h.crc = journal_crc(j->wbuf.data + 8, len - 8);
	memcpy(j->wbuf.data + 4, &h.crc, sizeof(h.crc));

	if (util_pwrite_full(j->fd, j->wbuf.data, len, off) == -1) {
		*sys_errno = errno;
		j->head = JOURNAL_FAILED;
		return RELAY_EIO;
	}
#ifdef RELAY_TEST_HOOKS
	if (delay_ms > 0)
		usleep(delay_ms * 1000u);   /* RELAYD_TEST_SYNC_DELAY_MS */
#endif
	if (fdatasync(j->fd) == -1) {
		*sys_errno = errno;
		j->head = JOURNAL_FAILED;
		return RELAY_EIO;
	}
	*seq = j->seq++;
	j->head = *end = journal_align(off + len);
	return 0;
}
