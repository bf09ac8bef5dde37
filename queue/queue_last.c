/*
 * queue_last.c - a recipient's last_* strings (the host, address, status and
 * reply of its last attempt), kept in one block shared by every recipient
 * whose four strings are equal.  In an outage each recipient waiting for a
 * destination carries the same four (the deferral that made it wait): with a
 * million of them, a copy each was 128 bytes of heap per recipient.
 *
 * A block is reference counted, atomically: the scan thread builds messages
 * (queue_load) while the loop records (queue_record), and the two may share
 * a block.  The queue keeps a small table of the blocks made last
 * (QUEUE_LAST_SLOTS, under its own mutex, held for one lookup); a new set of
 * strings is looked up there before a block is made for it.  The table only
 * holds references, so a block lives while a recipient or the table points
 * at it, and messages may outlive their queue.
 *
 * Never: changes a block once made (a recipient whose strings change gets
 * another block); blocks the loop for more than one lookup.
 */
#include "queue/queue_int.h"
#include "common/util.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define QUEUE_LAST_SLOTS 256            /* blocks the table keeps (a power of 2) */
#define QUEUE_LAST_PROBE 4              /* slots looked at per lookup */

/* The strings that are not NULL follow the header, in the order of the
 * queue_rcpt fields, each NUL-terminated; present says which those are. */
struct queue_last {
	atomic_uint refs;
	uint8_t present;                /* bit i: string i is there */
	char s[];
};

struct queue_lasts {
	uv_mutex_t mtx;
	struct queue_last *slot[QUEUE_LAST_SLOTS];
};

struct queue_lasts *
queue_lasts_new(void)
{
	struct queue_lasts *t = xcalloc(1, sizeof(*t));

	if (uv_mutex_init(&t->mtx) != 0)
		fatalx("%s: mutex init failed", __func__);
	return t;
}

static void
queue_last_unref(struct queue_last *b)
{
	if (b != NULL && atomic_fetch_sub(&b->refs, 1) == 1)
		free(b);
}

void
queue_lasts_free(struct queue_lasts *t)
{
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i < QUEUE_LAST_SLOTS; i++)
		queue_last_unref(t->slot[i]);
	uv_mutex_destroy(&t->mtx);
	free(t);
}

/* Does b hold exactly these four (each maybe NULL)? */
static bool
queue_last_equal(const struct queue_last *b, const char *const src[4])
{
	const char *p = b->s;
	size_t i;

	for (i = 0; i < 4; i++) {
		if ((src[i] != NULL) != ((b->present & (1u << i)) != 0))
			return false;
		if (src[i] == NULL)
			continue;
		if (strcmp(p, src[i]) != 0)
			return false;
		p += strlen(p) + 1;
	}
	return true;
}

static struct queue_last *
queue_last_make(const char *const src[4], const size_t len[4], size_t total)
{
	struct queue_last *b = xmalloc(offsetof(struct queue_last, s) + total);
	char *p = b->s;
	size_t i;

	atomic_init(&b->refs, 1);
	b->present = 0;
	for (i = 0; i < 4; i++) {
		if (src[i] == NULL)
			continue;
		b->present |= 1u << i;
		memcpy(p, src[i], len[i]);
		p += len[i];
	}
	return b;
}

/* The block of r's strings (the first that is not NULL starts it), or NULL. */
static struct queue_last *
queue_rcpt_last(const struct queue_rcpt *r)
{
	const char *p = r->last_host != NULL ? r->last_host : r->last_ip != NULL ? r->last_ip :
	    r->last_status != NULL ? r->last_status : r->last_reply;

	return p != NULL ? (struct queue_last *)(void *)(p - offsetof(struct queue_last, s)) : NULL;
}

void
queue_rcpt_free_last(struct queue_rcpt *r)
{
	queue_last_unref(queue_rcpt_last(r));
	r->last_host = r->last_ip = r->last_status = r->last_reply = NULL;
}

/*
 * A block holding these four, with one reference for the caller: an equal
 * one from t if it has it (t NULL: always a new one), else a new one that t
 * keeps in the first empty slot looked at, or in place of the first.
 */
static struct queue_last *
queue_last_get(struct queue_lasts *t, const char *const src[4], const size_t len[4],
    size_t total)
{
	struct queue_last *b, *old;
	uint32_t h = 2166136261u;       /* FNV-1a over the strings, NULL apart from "" */
	size_t i, k, at;

	if (t == NULL)
		return queue_last_make(src, len, total);
	for (i = 0; i < 4; i++) {
		const unsigned char *p = (const unsigned char *)(src[i] != NULL ? src[i] : "");

		for (; *p != '\0'; p++)
			h = (h ^ *p) * 16777619u;
		h = (h ^ (src[i] != NULL ? 0xffu : 0xfeu)) * 16777619u;
	}
	uv_mutex_lock(&t->mtx);
	for (k = 0; k < QUEUE_LAST_PROBE; k++) {
		at = (h + k) & (QUEUE_LAST_SLOTS - 1);
		if ((b = t->slot[at]) != NULL && queue_last_equal(b, src)) {
			atomic_fetch_add(&b->refs, 1);
			uv_mutex_unlock(&t->mtx);
			return b;
		}
	}
	b = queue_last_make(src, len, total);
	atomic_fetch_add(&b->refs, 1);  /* the table's */
	for (k = 0, at = h & (QUEUE_LAST_SLOTS - 1); k < QUEUE_LAST_PROBE; k++)
		if (t->slot[(h + k) & (QUEUE_LAST_SLOTS - 1)] == NULL) {
			at = (h + k) & (QUEUE_LAST_SLOTS - 1);
			break;
		}
	old = t->slot[at];
	t->slot[at] = b;
	uv_mutex_unlock(&t->mtx);
	queue_last_unref(old);
	return b;
}

/*
 * Replace r's four strings with these (each may be NULL, or one of r's own):
 * a block shared through t (NULL: one of its own).
 */
void
queue_rcpt_set_last(struct queue_lasts *t, struct queue_rcpt *r, const char *host,
    const char *ip, const char *status, const char *reply)
{
	const char *src[4] = { host, ip, status, reply };
	char **dst[4] = { &r->last_host, &r->last_ip, &r->last_status, &r->last_reply };
	size_t len[4], total = 0, i;
	struct queue_last *b = NULL;
	char *p;

	for (i = 0; i < 4; i++) {
		len[i] = src[i] != NULL ? strlen(src[i]) + 1 : 0;
		total += len[i];
	}
	if (total > 0)
		b = queue_last_get(t, src, len, total);
	queue_rcpt_free_last(r);        /* after: src may point into it */
	for (i = 0, p = b != NULL ? b->s : NULL; i < 4; i++) {
		*dst[i] = NULL;
		if (src[i] != NULL) {
			*dst[i] = p;
			p += len[i];
		}
	}
}
