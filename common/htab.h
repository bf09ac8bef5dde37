/*
 * htab.h - the one hash table of relayd: chained, keyed by a string, and
 * intrusive — the node (struct htab_node) lives inside the entry that owns it
 * and the key is the owner's own string, so an insert allocates nothing but,
 * now and then, a bigger bucket array.  The table doubles when it holds as
 * many entries as buckets (chains stay about one entry long) and never
 * shrinks; each node keeps its key's hash, so a lookup compares strings only
 * when the hashes agree and growing rehashes nothing.
 *
 * Keys compare with strcmp and hash with util_hash_str (FNV-1a) unless the
 * table is given other functions (htab_ops_nocase: ASCII case ignored).
 * Iteration order is unspecified: a caller that prints sorts.
 *
 * Ownership: the table owns its bucket array only.  The entries are the
 * caller's: it keeps an entry's key unchanged and alive while the entry is in
 * the table, removes (or stops using the table) before freeing an entry, and
 * calls htab_free() for the buckets.
 */
#ifndef RELAY_HTAB_H
#define RELAY_HTAB_H

#include <stddef.h>
#include <stdint.h>

struct htab_node {
	struct htab_node *next;         /* bucket chain */
	const char *key;                /* the owner's string */
	uint32_t hash;                  /* of key */
};

struct htab_ops {
	uint32_t (*hash)(const char *key);
	int (*cmp)(const char *a, const char *b);       /* 0: equal; equal keys hash alike */
};

/* ASCII case ignored in both hash and compare (domain names). */
extern const struct htab_ops htab_ops_nocase;

struct htab {
	struct htab_node **b;           /* buckets, NULL before the first insert */
	size_t nb;                      /* a power of two, or 0 */
	size_t n;                       /* entries */
	unsigned shift;                 /* 32 - log2(nb): a bucket is the top bits of hash * phi */
	const struct htab_ops *ops;     /* NULL: strcmp and util_hash_str */
};

#define HTAB_INIT { NULL, 0, 0, 0, NULL }

/* The entry of type that holds node n (n not NULL) as member. */
#define HTAB_ENTRY(n, type, member) \
	((type *)(void *)((char *)(n) - offsetof(type, member)))

/* An empty table with ops (NULL: the default).  Allocates nothing. */
void htab_init(struct htab *t, const struct htab_ops *ops);
/* Free the bucket array (not the entries) and leave t empty, ops kept. */
void htab_free(struct htab *t);

/* The node whose key equals key, or NULL. */
struct htab_node *htab_find(const struct htab *t, const char *key);
/* Add n under key (the owner's string, kept by pointer).  The key must not be
 * in the table yet (htab_find first).  The table may grow: never insert while
 * iterating. */
void htab_insert(struct htab *t, struct htab_node *n, const char *key);
/* Take n out of the table; a node that is not in it is a broken invariant (fatal). */
void htab_remove(struct htab *t, struct htab_node *n);
size_t htab_count(const struct htab *t);

/*
 * Iteration, in no particular order.  The node just returned may be removed
 * (or its entry freed) before asking for the next one; no other node may, and
 * nothing may be inserted until the iteration ends.
 */
struct htab_iter {
	const struct htab *t;
	size_t i;                       /* next bucket */
	struct htab_node *next;         /* next node in the current chain */
};

struct htab_node *htab_first(const struct htab *t, struct htab_iter *it);
struct htab_node *htab_next(struct htab_iter *it);

#define HTAB_FOREACH(n, t, it) \
	for ((n) = htab_first((t), (it)); (n) != NULL; (n) = htab_next(it))

#endif
