/*
 * xloop.c - the cross-loop inbox (see xloop.h): a FIFO under a mutex, a
 * uv_async_t to wake its loop, and the drain that runs the owner's callback.
 *
 * Owns nothing but the inbox's lock and queue links; never runs a message on
 * any loop but the owner's, and never sends a wake-up outside the lock.
 */
#include "common/xloop.h"

#include "common/util.h"

static void
xloop_async_cb(uv_async_t *h)
{
	struct xloop_inbox *in = h->data;
	struct xloop_msgq q;
	struct xloop_msg *m;

	STAILQ_INIT(&q);
	uv_mutex_lock(&in->lock);
	STAILQ_CONCAT(&q, &in->q);
	uv_mutex_unlock(&in->lock);
	while ((m = STAILQ_FIRST(&q)) != NULL) {
		STAILQ_REMOVE_HEAD(&q, entry);
		in->cb(in, m);
	}
}

int
xloop_inbox_init(struct xloop_inbox *in, uv_loop_t *loop, xloop_cb *cb, void *data)
{
	int rc;

	STAILQ_INIT(&in->q);
	in->cb = cb;
	in->data = data;
	if ((rc = uv_mutex_init(&in->lock)) != 0)
		return rc;
	if ((rc = uv_async_init(loop, &in->async, xloop_async_cb)) != 0) {
		uv_mutex_destroy(&in->lock);
		return rc;
	}
	in->async.data = in;
	return 0;
}

void
xloop_post(struct xloop_inbox *in, struct xloop_msg *m)
{
	uv_mutex_lock(&in->lock);
	STAILQ_INSERT_TAIL(&in->q, m, entry);
	uv_async_send(&in->async);
	uv_mutex_unlock(&in->lock);
}

void
xloop_inbox_run(struct xloop_inbox *in)
{
	xloop_async_cb(&in->async);
}

void
xloop_inbox_close(struct xloop_inbox *in, uv_close_cb close_cb)
{
	uv_close((uv_handle_t *)&in->async, close_cb);
}

bool
xloop_inbox_empty(struct xloop_inbox *in)
{
	bool empty;

	uv_mutex_lock(&in->lock);
	empty = STAILQ_EMPTY(&in->q);
	uv_mutex_unlock(&in->lock);
	return empty;
}

void
xloop_inbox_destroy(struct xloop_inbox *in)
{
	if (!xloop_inbox_empty(in))
		fatalx("%s: messages left in the inbox", __func__);
	uv_mutex_destroy(&in->lock);
}
