/*
 * queue_image.c - a committed message's file image kept in memory after its
 * publish, so that its first delivery attempt sends the body from memory
 * instead of reading the file back (issue #16 step 3).  Only a cache: the
 * file in msg/ is the truth, and everything works without an image.
 *
 * The image is the committing transaction's write buffer, moved here (no
 * copy) when the whole file went out in one write.  Its references are
 * taken and dropped on the loop thread only; a holder that lends the bytes
 * (deliver_req.body, also to the delivery thread) keeps its reference until
 * the request's callback, and the bytes never change after the publish.
 * The bytes of all live images are bounded (queue_image_max): past the
 * bound a new message gets none and is delivered from its file.
 */
#include "queue/queue_int.h"
#include "common/util.h"

#include <stdlib.h>

struct queue_image {
	unsigned refs;
	char *data;                  /* the whole file image: header, envelope, body ... */
	size_t size;                 /* its allocation (what it costs), counted in the bound */
	uint64_t body_offset;
};

static size_t queue_image_bytes;                     /* of all live images (loop) */
static size_t queue_image_limit = QUEUE_IMAGE_MAX;

struct queue_image *
queue_image_take(struct buf *b, uint64_t body_offset, uint64_t body_len)
{
	struct queue_image *im;

	if (b->data == NULL || body_offset + body_len > b->len ||
	    b->cap > queue_image_limit || queue_image_bytes > queue_image_limit - b->cap)
		return NULL;
	im = xmalloc(sizeof(*im));
	im->refs = 1;
	im->size = b->cap;
	im->body_offset = body_offset;
	im->data = buf_steal(b);
	queue_image_bytes += im->size;
	return im;
}

struct queue_image *
queue_image_ref(struct queue_image *im)
{
	if (im != NULL)
		im->refs++;
	return im;
}

void
queue_image_unref(struct queue_image *im)
{
	if (im == NULL || --im->refs > 0)
		return;
	queue_image_bytes -= im->size;
	free(im->data);
	free(im);
}

const char *
queue_image_body(const struct queue_image *im)
{
	return im->data + im->body_offset;
}

void
queue_msg_drop_image(struct queue_msg *m)
{
	queue_image_unref(m->image);
	m->image = NULL;
}

size_t
queue_image_held(void)
{
	return queue_image_bytes;
}

void
queue_image_set_max(size_t max)
{
	queue_image_limit = max;
}
