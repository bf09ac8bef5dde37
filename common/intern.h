/*
 * intern.h - shared immutable byte strings: one reference-counted block per
 * distinct value, found again through a small table of the blocks made last.
 * With a million queued messages waiting on one destination, each carrying
 * the same few strings (its route's key, its last deferral), a copy each was
 * most of their heap; a block they share is one.
 *
 * A block holds len bytes and a NUL after them; they never change once it is
 * made (a holder whose value changes gets another block).  intern_get() gives
 * the caller one reference; intern_unref() drops one; the last frees it.
 *
 * The table is a cache, not a set: nslots slots (a power of 2), and a lookup
 * looks at nprobe of them from the value's hash (util_hash_bytes, so a
 * C string hashes as util_hash_str does).  A value it does not find gets a
 * new block that takes the first empty slot looked at, or else the first
 * one's place (the block there loses the table's reference).  Two holders
 * of one value may therefore have two blocks; they are still equal bytes.
 *
 * The table holds references only: a block lives while anything points at
 * it, and blocks outlive the table that made them.
 *
 * Threads: counts are always atomic, because the last reference may be
 * dropped anywhere (a block outlives its table, and the table is not told),
 * so the count cannot depend on which table made it; an uncontended atomic
 * add costs about what a plain one does next to the allocation it saves.
 * The slots are guarded by a mutex only when the table is made with
 * INTERN_LOCKED (used from more than one thread); a table used by one thread
 * (the loop) takes no lock.  The lock is held for one lookup; a block is
 * freed after it is released.
 *
 * Never: changes a block's bytes; frees a block that is still referenced.
 */
#ifndef RELAY_INTERN_H
#define RELAY_INTERN_H

#include <stddef.h>

#define INTERN_LOCKED   0x1             /* intern_table_new: lookups from several threads */

struct intern_table;

/* A table of nslots (a power of 2, >= nprobe) looking at nprobe slots (>= 1)
 * per lookup; flags 0 or INTERN_LOCKED.  Broken arguments are fatal. */
struct intern_table *intern_table_new(size_t nslots, size_t nprobe, unsigned flags);
/* Drop the table's references (the blocks others hold live on) and free it.
 * No lookup may run at the same time.  NULL is allowed. */
void intern_table_free(struct intern_table *t);

/* A block holding the len bytes at p (a NUL after them), with one reference
 * for the caller: an equal one from t if it has it, else a new one that t
 * keeps too.  t NULL: always a new block of the caller's own. */
const char *intern_get(struct intern_table *t, const void *p, size_t len);
/* intern_get(t, s, strlen(s)). */
const char *intern_str(struct intern_table *t, const char *s);
/* Drop one reference to the block s (from intern_get; NULL: nothing). */
void intern_unref(const char *s);

#endif
