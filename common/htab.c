/*
 * htab.c - the string-keyed intrusive hash table (see htab.h).
 *
 * Owns each table's bucket array, never an entry.  A bucket is chosen by
 * Fibonacci hashing (the top bits of hash * 2^32/phi), so every bit of the
 * key's hash counts, not only the low ones.  Must never allocate per entry,
 * nor move an entry: callers hold pointers to them.
 */
#include "common/htab.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define HTAB_MIN_BUCKETS        16u
#define HTAB_MIN_SHIFT          28u     /* 32 - log2(HTAB_MIN_BUCKETS) */
#define HTAB_PHI                0x9e3779b9u

static uint32_t
htab_hash_nocase(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		h = (h ^ c) * 16777619u;
	}
	return h;
}

const struct htab_ops htab_ops_nocase = { htab_hash_nocase, util_strcasecmp };

static inline size_t
htab_bucket(const struct htab *t, uint32_t hash)
{
	return (uint32_t)(hash * HTAB_PHI) >> t->shift;
}

static inline uint32_t
htab_hash(const struct htab *t, const char *key)
{
	return t->ops != NULL ? t->ops->hash(key) : util_hash_str(key);
}

void
htab_init(struct htab *t, const struct htab_ops *ops)
{
	memset(t, 0, sizeof(*t));
	t->ops = ops;
}

void
htab_free(struct htab *t)
{
	free(t->b);
	t->b = NULL;
	t->nb = 0;
	t->n = 0;
	t->shift = 0;
}

struct htab_node *
htab_find(const struct htab *t, const char *key)
{
	struct htab_node *n;
	uint32_t h;

	if (t->n == 0)
		return NULL;
	h = htab_hash(t, key);
	for (n = t->b[htab_bucket(t, h)]; n != NULL; n = n->next) {
		if (n->hash != h)
			continue;
		if (t->ops != NULL ? t->ops->cmp(n->key, key) == 0 : strcmp(n->key, key) == 0)
			return n;
	}
	return NULL;
}

/* Double the buckets (or make the first ones); each node keeps its hash. */
static void
htab_grow(struct htab *t)
{
	size_t nb = t->nb ? t->nb * 2 : HTAB_MIN_BUCKETS, i, k;
	struct htab_node **b, *n, *next;
	struct htab old = *t;

	if (t->nb != 0 && t->shift <= 1)
		fatalx("%s: %zu buckets", __func__, t->nb);
	b = xcalloc(nb, sizeof(*b));
	t->b = b;
	t->nb = nb;
	t->shift = old.nb ? old.shift - 1 : HTAB_MIN_SHIFT;
	for (i = 0; i < old.nb; i++) {
		for (n = old.b[i]; n != NULL; n = next) {
			next = n->next;
			k = htab_bucket(t, n->hash);
			n->next = b[k];
			b[k] = n;
		}
	}
	free(old.b);
}

void
htab_insert(struct htab *t, struct htab_node *n, const char *key)
{
	size_t k;

	if (t->n >= t->nb)
		htab_grow(t);
	n->key = key;
	n->hash = htab_hash(t, key);
	k = htab_bucket(t, n->hash);
	n->next = t->b[k];
	t->b[k] = n;
	t->n++;
}

void
htab_remove(struct htab *t, struct htab_node *n)
{
	struct htab_node **pp;

	if (t->n == 0)
		fatalx("%s: %s: the table is empty", __func__, n->key);
	for (pp = &t->b[htab_bucket(t, n->hash)]; *pp != n; pp = &(*pp)->next)
		if (*pp == NULL)
			fatalx("%s: %s is not in the table", __func__, n->key);
	*pp = n->next;
	n->next = NULL;
	t->n--;
}

size_t
htab_count(const struct htab *t)
{
	return t->n;
}

struct htab_node *
htab_first(const struct htab *t, struct htab_iter *it)
{
	it->t = t;
	it->i = 0;
	it->next = NULL;
	return htab_next(it);
}

struct htab_node *
htab_next(struct htab_iter *it)
{
	struct htab_node *n = it->next;

	while (n == NULL) {
		if (it->i >= it->t->nb)
			return NULL;
		n = it->t->b[it->i++];
	}
	it->next = n->next;
	return n;
}
