/*
 * queue_last.c - a recipient's last_* strings (the host, address, status and
 * reply of its last attempt), kept in one block shared by every recipient
 * whose four strings are equal.  In an outage each recipient waiting for a
 * destination carries the same four (the deferral that made it wait): with a
 * million of them, a copy each was 128 bytes of heap per recipient.
 *
 * The block is an interned string (common/intern.c): a byte saying which of
 * the four are there, then those, each NUL-terminated, in the order of
 * struct queue_last's fields.  A recipient keeps only a pointer to it
 * (queue_rcpt.last); queue_rcpt_last() reads the four out.  Equal four (NULL apart from "")
 * are equal bytes, so they share a block found in the queue's table of the
 * blocks made last (QUEUE_LAST_SLOTS).  The table is locked and the counts
 * atomic: the scan thread builds messages (queue_load) while the loop
 * records (queue_record), and the two may share a block.  The table holds
 * references only, so messages may outlive their queue.
 *
 * Never: changes a block once made (a recipient whose strings change gets
 * another block); blocks the loop for more than one lookup.
 */
#include "queue/queue_int.h"
#include "common/intern.h"
#include "common/util.h"

#include <stdlib.h>
#include <string.h>

#define QUEUE_LAST_SLOTS 256            /* blocks the table keeps (a power of 2) */
#define QUEUE_LAST_PROBE 4              /* slots looked at per lookup */
#define QUEUE_LAST_STACK 512            /* a block built on the stack up to this size */

struct queue_lasts {
	struct intern_table *t;
};

struct queue_lasts *
queue_lasts_new(void)
{
	struct queue_lasts *l = xcalloc(1, sizeof(*l));

	l->t = intern_table_new(QUEUE_LAST_SLOTS, QUEUE_LAST_PROBE, INTERN_LOCKED);
	return l;
}

void
queue_lasts_free(struct queue_lasts *l)
{
	if (l == NULL)
		return;
	intern_table_free(l->t);
	free(l);
}

void
queue_rcpt_free_last(struct queue_rcpt *r)
{
	if (r->last != NULL)
		intern_unref(r->last);
	r->last = NULL;
}

void
queue_rcpt_last(const struct queue_rcpt *r, struct queue_last *out)
{
	const char **dst[4] = { &out->host, &out->ip, &out->status, &out->reply };
	const char *p = r->last;
	unsigned bits;
	size_t i;

	bits = p != NULL ? (unsigned char)*p++ : 0;
	for (i = 0; i < 4; i++) {
		*dst[i] = NULL;
		if (bits & (1u << i)) {
			*dst[i] = p;
			p += strlen(p) + 1;
		}
	}
}

/*
 * Replace r's four strings with these (each may be NULL, or one of r's own):
 * a block shared through l (NULL: one of its own).
 */
void
queue_rcpt_set_last(struct queue_lasts *l, struct queue_rcpt *r, const char *host,
    const char *ip, const char *status, const char *reply)
{
	const char *src[4] = { host, ip, status, reply };
	char stack[QUEUE_LAST_STACK], *blob = stack, *w;
	size_t len[4], total = 1, i;
	const char *b = NULL;

	for (i = 0; i < 4; i++) {
		len[i] = src[i] != NULL ? strlen(src[i]) + 1 : 0;
		total += len[i];
	}
	if (total > 1) {
		if (total > sizeof(stack))
			blob = xmalloc(total);
		blob[0] = 0;            /* bit i: src[i] is there */
		for (i = 0, w = blob + 1; i < 4; i++)
			if (src[i] != NULL) {
				blob[0] |= (char)(1u << i);
				memcpy(w, src[i], len[i]);
				w += len[i];
			}
		b = intern_get(l != NULL ? l->t : NULL, blob, total);
		if (blob != stack)
			free(blob);
	}
	queue_rcpt_free_last(r);        /* after: src may point into it */
	r->last = b;
}
