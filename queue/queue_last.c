/*
 * queue_last.c - a recipient's last_* strings (the host, address, status and
 * reply of its last attempt), kept in one block shared by every recipient
 * whose four strings are equal.  In an outage each recipient waiting for a
 * destination carries the same four (the deferral that made it wait): with a
 * million of them, a copy each was 128 bytes of heap per recipient.
 *
 * The block is an interned string (common/intern.c): a byte saying which of
 * the four are there, then those, each NUL-terminated, in the order of the
 * queue_rcpt fields, which point into it.  Equal four (NULL apart from "")
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
	/* the first string that is there starts right after the present byte */
	const char *p = r->last_host != NULL ? r->last_host : r->last_ip != NULL ? r->last_ip :
	    r->last_status != NULL ? r->last_status : r->last_reply;

	if (p != NULL)
		intern_unref(p - 1);
	r->last_host = r->last_ip = r->last_status = r->last_reply = NULL;
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
	const char **dst[4] = { &r->last_host, &r->last_ip, &r->last_status, &r->last_reply };
	char stack[QUEUE_LAST_STACK], *blob = stack, *w;
	size_t len[4], total = 1, i;
	const char *b = NULL, *p;

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
	for (i = 0, p = b != NULL ? b + 1 : NULL; i < 4; i++) {
		*dst[i] = NULL;
		if (src[i] != NULL) {
			*dst[i] = p;
			p += len[i];
		}
	}
}
