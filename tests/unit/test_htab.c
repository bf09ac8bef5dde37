/*
 * test_htab.c - the hash table (common/htab.c): insert, find, remove and
 * iterate from tables of operations; growth over many entries; removal
 * during iteration; every key in one bucket chain (a forced-collision hash);
 * the case-insensitive ops.
 */
#include "common/htab.h"
#include "common/util.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

struct item {
	int v;
	struct htab_node node;          /* not first: HTAB_ENTRY must subtract */
	char key[32];
};

static struct item *
item_find(const struct htab *t, const char *key)
{
	struct htab_node *n = htab_find(t, key);

	return n != NULL ? HTAB_ENTRY(n, struct item, node) : NULL;
}

static uint32_t
hash_const(const char *key)
{
	(void)key;
	return 42;
}

static const struct htab_ops ops_collide = { hash_const, strcmp };

/* ---- operations from a table ---- */

enum op { INS, DEL, FIND, MISS, COUNT };

struct step {
	enum op op;
	const char *key;
	int v;                          /* INS: value; FIND: wanted value; COUNT: wanted count */
};

static const struct step steps[] = {
	{ COUNT, NULL, 0 },
	{ MISS, "a", 0 },               /* empty table, no buckets yet */
	{ INS, "a", 1 },
	{ INS, "b", 2 },
	{ INS, "", 3 },                 /* the empty string is a key like any */
	{ FIND, "a", 1 },
	{ FIND, "b", 2 },
	{ FIND, "", 3 },
	{ MISS, "c", 0 },
	{ MISS, "A", 0 },               /* case counts by default */
	{ MISS, "ab", 0 },
	{ COUNT, NULL, 3 },
	{ DEL, "a", 0 },
	{ MISS, "a", 0 },
	{ FIND, "b", 2 },
	{ COUNT, NULL, 2 },
	{ INS, "a", 4 },                /* back, with another entry */
	{ FIND, "a", 4 },
	{ DEL, "", 0 },
	{ DEL, "b", 0 },
	{ DEL, "a", 0 },
	{ COUNT, NULL, 0 },
	{ MISS, "b", 0 },
};

static void
run_steps(const struct htab_ops *ops, const char *name)
{
	struct item items[RELAY_ARRAY_LEN(steps)];
	struct htab t;
	struct item *it;
	size_t i;

	htab_init(&t, ops);
	memset(items, 0, sizeof(items));
	for (i = 0; i < RELAY_ARRAY_LEN(steps); i++) {
		const struct step *s = &steps[i];

		switch (s->op) {
		case INS:
			snprintf(items[i].key, sizeof(items[i].key), "%s", s->key);
			items[i].v = s->v;
			htab_insert(&t, &items[i].node, items[i].key);
			break;
		case DEL:
			it = item_find(&t, s->key);
			CHECK_MSG(it != NULL, "%s step %zu: del %s", name, i, s->key);
			if (it != NULL)
				htab_remove(&t, &it->node);
			break;
		case FIND:
			it = item_find(&t, s->key);
			CHECK_MSG(it != NULL && it->v == s->v, "%s step %zu: find %s", name, i, s->key);
			break;
		case MISS:
			CHECK_MSG(item_find(&t, s->key) == NULL, "%s step %zu: miss %s", name, i, s->key);
			break;
		case COUNT:
			CHECK_MSG(htab_count(&t) == (size_t)s->v, "%s step %zu: count %zu", name, i,
			    htab_count(&t));
			break;
		}
	}
	htab_free(&t);
}

/* ---- many entries: growth, iteration, removal while iterating ---- */

static void
test_many(const struct htab_ops *ops, size_t n, const char *name)
{
	struct item *items = xcalloc(n, sizeof(*items));
	unsigned char *seen = xcalloc(n, 1);
	struct htab t = HTAB_INIT;
	struct htab_iter iter;
	struct htab_node *nd;
	size_t i, count, bad;

	t.ops = ops;
	for (i = 0; i < n; i++) {
		snprintf(items[i].key, sizeof(items[i].key), "q%zu.example", i);
		items[i].v = (int)i;
		htab_insert(&t, &items[i].node, items[i].key);
	}
	CHECK_MSG(htab_count(&t) == n, "%s: count", name);
	CHECK_MSG(t.nb >= n && (t.nb & (t.nb - 1)) == 0, "%s: %zu buckets for %zu", name, t.nb, n);

	/* each entry found again, by a copy of its key */
	for (i = bad = 0; i < n; i++) {
		char k[32];
		struct item *it;

		snprintf(k, sizeof(k), "q%zu.example", i);
		it = item_find(&t, k);
		if (it != &items[i])
			bad++;
	}
	CHECK_MSG(bad == 0, "%s: %zu entries not found after growth", name, bad);
	CHECK(item_find(&t, "q.example") == NULL);

	/* iteration visits each once */
	count = bad = 0;
	HTAB_FOREACH(nd, &t, &iter) {
		struct item *it = HTAB_ENTRY(nd, struct item, node);

		if (seen[it->v]++)
			bad++;
		count++;
	}
	CHECK_MSG(count == n && bad == 0, "%s: iterated %zu, %zu twice", name, count, bad);

	/* remove every odd one while iterating (and scribble on it, as a free would) */
	count = 0;
	HTAB_FOREACH(nd, &t, &iter) {
		struct item *it = HTAB_ENTRY(nd, struct item, node);

		count++;
		if (it->v % 2 == 1) {
			htab_remove(&t, nd);
			memset(nd, 0xa5, sizeof(*nd));
		}
	}
	CHECK_MSG(count == n, "%s: iteration with removal saw %zu", name, count);
	CHECK_MSG(htab_count(&t) == n - n / 2, "%s: %zu left", name, htab_count(&t));
	for (i = bad = 0; i < n; i++) {
		char k[32];

		snprintf(k, sizeof(k), "q%zu.example", i);
		if ((item_find(&t, k) != NULL) != (i % 2 == 0))
			bad++;
	}
	CHECK_MSG(bad == 0, "%s: %zu wrong after removal", name, bad);

	/* remove the rest during one iteration: empty, and usable again */
	HTAB_FOREACH(nd, &t, &iter)
		htab_remove(&t, nd);
	CHECK_INT(htab_count(&t), 0);
	HTAB_FOREACH(nd, &t, &iter)
		CHECK(0);
	htab_insert(&t, &items[0].node, items[0].key);
	CHECK(item_find(&t, "q0.example") == &items[0]);
	htab_free(&t);
	CHECK(t.b == NULL && t.n == 0 && t.ops == ops);
	CHECK(item_find(&t, "q0.example") == NULL);
	HTAB_FOREACH(nd, &t, &iter)
		CHECK(0);
	free(seen);
	free(items);
}

/* ---- case-insensitive keys ---- */

static void
test_nocase(void)
{
	static const struct {
		const char *stored, *asked;
		bool found;
	} rows[] = {
		{ "example.com", "example.com", true },
		{ "example.com", "EXAMPLE.COM", true },
		{ "Example.Org", "example.ORG", true },
		{ "example.net", "example.ne", false },
		{ "example.net", "example.net.", false },
		{ "a\xc4", "A\xc4", true },                     /* only ASCII folds */
		{ "a\xc4", "a\xe4", false },
	};
	struct item it;
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		struct htab t;

		htab_init(&t, &htab_ops_nocase);
		snprintf(it.key, sizeof(it.key), "%s", rows[i].stored);
		htab_insert(&t, &it.node, it.key);
		CHECK_MSG((item_find(&t, rows[i].asked) == &it) == rows[i].found, "nocase row %zu", i);
		htab_free(&t);
	}
}

int
main(void)
{
	run_steps(NULL, "default");
	run_steps(&ops_collide, "collide");
	test_many(NULL, 1, "default 1");
	test_many(NULL, 17, "default 17");
	test_many(NULL, 100000, "default 100000");
	test_many(&ops_collide, 300, "collide 300");
	test_many(&htab_ops_nocase, 5000, "nocase 5000");
	test_nocase();
	return check_done();
}
