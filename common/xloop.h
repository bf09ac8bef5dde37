/*
 * xloop.h - calls posted from one thread to another thread's event loop: an
 * inbox (a mutex-protected FIFO of messages woken by a uv_async_t) that any
 * thread may post to and whose callback runs each message, in the order
 * posted, on the loop that owns the inbox.  The delivery thread
 * (deliver/deliver_thread.c) meets its caller's loop through two of them, one
 * each way; a module that keeps one owner loop and serves other loops does
 * the same: post the request to the owner's inbox, post the answer back to
 * the caller's, so that callbacks always run on the caller's loop.
 *
 * Ownership: the message is the poster's until xloop_post(), then the
 * inbox's callback's (which frees or reuses it).  Embed struct xloop_msg in
 * the message's own struct and get back to it with container_of-style
 * arithmetic (or put it first).  The inbox is the owner loop's: it is
 * initialised, closed and destroyed there; xloop_post() may run anywhere
 * until the owner has closed it (the owner says by its own protocol when
 * nobody posts any more: the delivery thread's DONE, a SHUTDOWN answered).
 *
 * The wake-up is sent under the inbox's lock: a taker that sees the message
 * (under the same lock) may close the async handle and end its loop at once,
 * and a send after the unlock could then reach a closed handle.
 */
#ifndef RELAY_XLOOP_H
#define RELAY_XLOOP_H

#include <stdbool.h>
#include <sys/queue.h>
#include <uv.h>

struct xloop_msg {
	STAILQ_ENTRY(xloop_msg) entry;
};
STAILQ_HEAD(xloop_msgq, xloop_msg);

struct xloop_inbox;
/* Runs on the owner's loop, once per message, in the order posted. */
typedef void xloop_cb(struct xloop_inbox *in, struct xloop_msg *m);

struct xloop_inbox {
	uv_async_t async;           /* on the owner's loop */
	uv_mutex_t lock;
	struct xloop_msgq q;        /* under lock */
	xloop_cb *cb;
	void *data;                 /* the owner's */
};

/* On the owner's thread (or before any other thread can see it): 0 or a libuv error. */
int xloop_inbox_init(struct xloop_inbox *in, uv_loop_t *loop, xloop_cb *cb, void *data);
/* Any thread: queue m and wake the owner's loop. */
void xloop_post(struct xloop_inbox *in, struct xloop_msg *m);
/* The owner's loop: run what is queued now, as a wake-up would (before a
 * close: libuv drops a wake-up still pending when the handle closes). */
void xloop_inbox_run(struct xloop_inbox *in);
/* The owner's loop: close the async handle (close_cb as uv_close's). */
void xloop_inbox_close(struct xloop_inbox *in, uv_close_cb close_cb);
/* Nothing is waiting to be run. */
bool xloop_inbox_empty(struct xloop_inbox *in);
/* After the async handle has closed: free the lock. */
void xloop_inbox_destroy(struct xloop_inbox *in);

#endif
