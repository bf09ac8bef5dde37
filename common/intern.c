/*
 * intern.c - shared immutable byte strings and the probed table of the blocks
 * made last (see intern.h for the contract and why counts are atomic).
 *
 * Owns: each table's slot array and, under its lock if it has one, the
 * table's references in it.  A block is owned by its references together.
 * Never: writes a block's bytes after intern_get() returns it; frees a block
 * while the table's lock is held.
 */
#include "common/intern.h"
#include "common/util.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

struct intern_block {
	atomic_uint refs;
	uint32_t len;                   /* of s, without the NUL after it */
	char s[];
};

struct intern_table {
	size_t mask;                    /* nslots - 1 */
	size_t nprobe;
	bool locked;
	uv_mutex_t mtx;                 /* locked: guards slot */
	struct intern_block **slot;     /* a reference each, or NULL */
};

static struct intern_block *
intern_block(const char *s)
{
	return (struct intern_block *)(void *)(s - offsetof(struct intern_block, s));
}

static void
intern_block_unref(struct intern_block *b)
{
	if (b != NULL && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
		free(b);
}

struct intern_table *
intern_table_new(size_t nslots, size_t nprobe, unsigned flags)
{
	struct intern_table *t;

	if (nslots == 0 || (nslots & (nslots - 1)) != 0 || nprobe == 0 || nprobe > nslots)
		fatalx("%s: %zu slots, %zu probes", __func__, nslots, nprobe);
	t = xcalloc(1, sizeof(*t));
	t->mask = nslots - 1;
	t->nprobe = nprobe;
	t->slot = xcalloc(nslots, sizeof(*t->slot));
	t->locked = (flags & INTERN_LOCKED) != 0;
	if (t->locked && uv_mutex_init(&t->mtx) != 0)
		fatalx("%s: mutex init failed", __func__);
	return t;
}

void
intern_table_free(struct intern_table *t)
{
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i <= t->mask; i++)
		intern_block_unref(t->slot[i]);
	if (t->locked)
		uv_mutex_destroy(&t->mtx);
	free(t->slot);
	free(t);
}

static struct intern_block *
intern_block_new(const void *p, size_t len, unsigned refs)
{
	struct intern_block *b;

	if (len >= UINT32_MAX)
		fatalx("%s: %zu bytes", __func__, len);
	b = xmalloc(offsetof(struct intern_block, s) + len + 1);
	atomic_init(&b->refs, refs);
	b->len = (uint32_t)len;
	memcpy(b->s, p, len);
	b->s[len] = '\0';
	return b;
}

const char *
intern_get(struct intern_table *t, const void *p, size_t len)
{
	struct intern_block *b, *old;
	uint32_t h;
	size_t k, at, first;

	if (t == NULL)
		return intern_block_new(p, len, 1)->s;
	h = util_hash_bytes(p, len);
	first = h & t->mask;
	if (t->locked)
		uv_mutex_lock(&t->mtx);
	for (k = 0, at = first; k < t->nprobe; k++, at = (at + 1) & t->mask) {
		b = t->slot[at];
		if (b != NULL && b->len == len && memcmp(b->s, p, len) == 0) {
			atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
			if (t->locked)
				uv_mutex_unlock(&t->mtx);
			return b->s;
		}
	}
	for (k = 0, at = first; k < t->nprobe; k++, at = (at + 1) & t->mask)
		if (t->slot[at] == NULL)
			break;
	if (k == t->nprobe)
		at = first;
	b = intern_block_new(p, len, 2);        /* the caller's and the table's */
	old = t->slot[at];
	t->slot[at] = b;
	if (t->locked)
		uv_mutex_unlock(&t->mtx);
	intern_block_unref(old);
	return b->s;
}

const char *
intern_str(struct intern_table *t, const char *s)
{
	return intern_get(t, s, strlen(s));
}

void
intern_unref(const char *s)
{
	if (s != NULL)
		intern_block_unref(intern_block(s));
}
