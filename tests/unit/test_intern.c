/*
 * test_intern.c - shared immutable byte strings (common/intern.c): equal
 * values share one block (bytes and length, a NUL after them, embedded NULs
 * and "" included); no table means a block of one's own; values whose hashes
 * fall on one slot still share within the probe window; a new value evicts
 * the first slot's block when every probed slot is taken, and the evicted
 * block lives on while held; blocks outlive the table; two threads interning
 * and dropping the same values through a locked table (the TSan build checks
 * the lock and the atomic counts; ASan's leak check that each block is freed
 * once its last reference goes).
 */
#include "common/intern.h"
#include "common/util.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "check.h"

#define SLOTS   256
#define PROBE   4

/* n names "<prefix><k>" whose hashes fall on one slot of SLOTS, in out[]. */
static void
colliding(const char *prefix, char out[][32], size_t n)
{
	uint32_t want = 0;
	size_t got = 0;
	unsigned k;

	for (k = 0; k < 1000000 && got < n; k++) {
		snprintf(out[got], sizeof(out[got]), "%s%u", prefix, k);
		if (got == 0)
			want = util_hash_str(out[0]) & (SLOTS - 1);
		if ((util_hash_str(out[got]) & (SLOTS - 1)) == want)
			got++;
	}
	if (got < n) {
		fprintf(stderr, "no %zu colliding names\n", n);
		exit(2);
	}
}

/* Equal bytes share a block; the block holds them and a NUL after them. */
static void
test_sharing(void)
{
	static const struct {
		const char *p;
		size_t len;
	} rows[] = {
		{ "example.net", 11 },
		{ "route:*", 7 },
		{ "", 0 },
		{ "a\0b", 3 },          /* embedded NUL: not "a" */
		{ "a", 1 },
		{ "a\0", 2 },           /* not "a" either */
		{ "\x03mx\0" "4.4.1\0", 10 },
	};
	struct intern_table *t = intern_table_new(SLOTS, PROBE, 0);
	const char *first[sizeof(rows) / sizeof(rows[0])], *again, *own;
	size_t i, j;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		first[i] = intern_get(t, rows[i].p, rows[i].len);
		CHECK_MSG(memcmp(first[i], rows[i].p, rows[i].len) == 0, "row %zu bytes", i);
		CHECK_MSG(first[i][rows[i].len] == '\0', "row %zu NUL", i);
		CHECK_MSG(first[i] != rows[i].p, "row %zu is a copy", i);
	}
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		again = intern_get(t, rows[i].p, rows[i].len);
		CHECK_MSG(again == first[i], "row %zu shared", i);
		for (j = 0; j < i; j++)
			CHECK_MSG(first[j] != first[i], "rows %zu and %zu apart", j, i);
		/* no table: a block of one's own, with the same bytes */
		own = intern_get(NULL, rows[i].p, rows[i].len);
		CHECK_MSG(own != first[i] && memcmp(own, rows[i].p, rows[i].len) == 0 &&
		    own[rows[i].len] == '\0', "row %zu own", i);
		intern_unref(own);
		intern_unref(again);
	}
	again = intern_str(t, "example.net");
	CHECK(again == first[0]);
	intern_unref(again);
	intern_unref(NULL);             /* nothing */
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		intern_unref(first[i]);
	/* the table's references keep them: still shared */
	again = intern_str(t, "route:*");
	CHECK_STR(again, "route:*");
	intern_unref(again);
	intern_table_free(t);
}

/*
 * Values whose hashes fall on one slot share within the probe window, in any
 * order of lookups; a new one when all PROBE slots are taken replaces the
 * first slot's, whose holders keep it (a lookup then makes another).
 */
static void
test_collisions_and_eviction(void)
{
	char n[PROBE + 1][32];
	const char *b[PROBE + 1], *again, *b0again;
	struct intern_table *t = intern_table_new(SLOTS, PROBE, 0);
	size_t i, round;

	colliding("c", n, PROBE + 1);
	for (i = 0; i < PROBE; i++)
		b[i] = intern_str(t, n[i]);
	for (round = 0; round < 2; round++)     /* round-robin, as a queue resolves them */
		for (i = 0; i < PROBE; i++) {
			again = intern_str(t, n[i]);
			CHECK_MSG(again == b[i], "collider %zu shared (round %zu)", i, round);
			intern_unref(again);
		}
	for (i = 1; i < PROBE; i++)
		CHECK(b[i] != b[0]);

	/* all PROBE slots taken: the new one goes in place of the first (b[0]) */
	b[PROBE] = intern_str(t, n[PROBE]);
	again = intern_str(t, n[PROBE]);
	CHECK(again == b[PROBE]);
	intern_unref(again);
	for (i = 1; i < PROBE; i++) {
		again = intern_str(t, n[i]);
		CHECK_MSG(again == b[i], "collider %zu kept", i);
		intern_unref(again);
	}
	b0again = intern_str(t, n[0]);          /* evicted: a new block, b[0] unchanged */
	CHECK(b0again != b[0]);
	CHECK_STR(b0again, n[0]);
	CHECK_STR(b[0], n[0]);
	again = intern_str(t, n[0]);            /* the table keeps the new one */
	CHECK(again == b0again);
	intern_unref(again);
	/* it took the first slot back from n[PROBE], which is made again */
	again = intern_str(t, n[PROBE]);
	CHECK(again != b[PROBE]);
	CHECK_STR(again, n[PROBE]);
	intern_unref(again);
	intern_unref(b0again);
	for (i = 0; i <= PROBE; i++)
		intern_unref(b[i]);
	intern_table_free(t);
}

/* The table holds references only: blocks live on after it (ASan: no use
 * after free, no leak once their holders drop them). */
static void
test_outlive_table(void)
{
	struct intern_table *t = intern_table_new(SLOTS, PROBE, INTERN_LOCKED);
	const char *a = intern_str(t, "mx.example.net");
	const char *b = intern_str(t, "mx.example.net");

	CHECK(a == b);
	intern_table_free(t);
	CHECK_STR(a, "mx.example.net");
	intern_unref(a);
	CHECK_STR(b, "mx.example.net");
	intern_unref(b);
	intern_table_free(NULL);
}

/*
 * Two threads intern and drop the same values through one locked table
 * (colliders, so that they also evict each other's blocks), each keeping a
 * few references for a while; every value read back is its own.
 */
#define STRESS_NAMES    (PROBE + 3)
#define STRESS_KEEP     8
#define STRESS_ROUNDS   200000

struct stress {
	struct intern_table *t;
	char (*names)[32];
	unsigned seed;
	unsigned bad;
};

static void
stress_run(void *arg)
{
	struct stress *s = arg;
	const char *keep[STRESS_KEEP] = { NULL };
	size_t kept[STRESS_KEEP] = { 0 }, i, k;
	unsigned x = s->seed;

	for (i = 0; i < STRESS_ROUNDS; i++) {
		x = x * 1103515245u + 12345u;
		k = (x >> 16) % STRESS_KEEP;
		if (keep[k] != NULL && strcmp(keep[k], s->names[kept[k]]) != 0)
			s->bad++;
		intern_unref(keep[k]);
		kept[k] = (x >> 8) % STRESS_NAMES;
		keep[k] = intern_str(s->t, s->names[kept[k]]);
		if (strcmp(keep[k], s->names[kept[k]]) != 0)
			s->bad++;
	}
	for (k = 0; k < STRESS_KEEP; k++)
		intern_unref(keep[k]);
}

static void
test_two_threads(void)
{
	char names[STRESS_NAMES][32];
	struct stress s[2];
	uv_thread_t tid[2];
	size_t i;

	colliding("s", names, STRESS_NAMES);
	for (i = 0; i < 2; i++) {
		s[i].names = names;
		s[i].seed = (unsigned)i + 1;
		s[i].bad = 0;
	}
	s[0].t = s[1].t = intern_table_new(SLOTS, PROBE, INTERN_LOCKED);
	for (i = 0; i < 2; i++)
		CHECK(uv_thread_create(&tid[i], stress_run, &s[i]) == 0);
	for (i = 0; i < 2; i++)
		uv_thread_join(&tid[i]);
	CHECK_INT(s[0].bad, 0);
	CHECK_INT(s[1].bad, 0);
	intern_table_free(s[0].t);
}

int
main(void)
{
	test_sharing();
	test_collisions_and_eviction();
	test_outlive_table();
	test_two_threads();
	return check_done();
}
