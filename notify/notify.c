/*
 * notify.c - the service manager's notification protocol (sd_notify through
 * libsystemd) and the watchdog's keep-alive.  Owns two timers on the loop:
 * the watchdog (half of WATCHDOG_USEC, only when the manager asked for it)
 * and the status refresh (every NOTIFY_STATUS_MS, sending only a changed
 * line).  Never blocks on anything but the datagram send to the manager's
 * socket, and never starts a timer when NOTIFY_SOCKET is unset.
 */
#include "notify/notify.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <systemd/sd-daemon.h>

#include "common/log.h"
#include "common/util.h"

#define NOTIFY_MAGIC 0x5d0071f1U
#define NOTIFY_STATUS_MS 1000

struct notify {
	uint32_t magic;
	bool active;                    /* NOTIFY_SOCKET is set */
	bool stopping;
	bool warned;                    /* a failed send was logged (once) */
	int open_timers;                /* freed when the last one has closed */
	notify_status_fn status;
	void *arg;
	uint64_t watchdog_ms;           /* ping interval; 0 = no watchdog */
	uv_timer_t watchdog;
	uv_timer_t refresh;
	struct buf last;                /* the STATUS= line last sent */
};

static void
notify_send(struct notify *n, const char *state)
{
	int rc = sd_notify(0, state);

	if (rc < 0 && !n->warned) {
		n->warned = true;
		struct log_line l;

		log_begin(&l, LOG_WARNING, "notify_failed");
		log_kvf(&l, "error", "%s", strerror(-rc));
		log_end(&l);
	}
}

/* "<prefix>STATUS=<line>" if prefix is set or the line changed. */
static void
notify_status(struct notify *n, const char *prefix)
{
	struct buf line = BUF_INIT, msg = BUF_INIT;

	n->status(n->arg, &line);
	if (prefix != NULL || strcmp(buf_cstr(&line), buf_cstr(&n->last)) != 0) {
		buf_printf(&msg, "%sSTATUS=%s", prefix ? prefix : "", buf_cstr(&line));
		notify_send(n, buf_cstr(&msg));
		buf_reset(&n->last);
		buf_append(&n->last, line.data ? line.data : "", line.len);
	}
	buf_free(&line);
	buf_free(&msg);
}

static void
on_watchdog(uv_timer_t *t)
{
	struct notify *n = t->data;

	if (n->magic != NOTIFY_MAGIC)
		fatalx("%s: bad notify", __func__);
	notify_send(n, "WATCHDOG=1");
}

static void
on_refresh(uv_timer_t *t)
{
	struct notify *n = t->data;

	if (n->magic != NOTIFY_MAGIC)
		fatalx("%s: bad notify", __func__);
	notify_status(n, NULL);
}

struct notify *
notify_new(uv_loop_t *loop, notify_status_fn status, void *arg)
{
	struct notify *n = xcalloc(1, sizeof(*n));
	uint64_t usec = 0;

	n->magic = NOTIFY_MAGIC;
	n->status = status;
	n->arg = arg;
	buf_init(&n->last);
	n->active = getenv("NOTIFY_SOCKET") != NULL;
	if (!n->active)
		return n;
	/* > 0 when WATCHDOG_USEC is set and WATCHDOG_PID, if set, is ours. */
	if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
		n->watchdog_ms = usec / 2000 > 0 ? usec / 2000 : 1;
	uv_timer_init(loop, &n->watchdog);
	uv_timer_init(loop, &n->refresh);
	n->watchdog.data = n->refresh.data = n;
	n->open_timers = 2;
	return n;
}

void
notify_ready(struct notify *n)
{
	if (n == NULL || !n->active || n->stopping)
		return;
	notify_status(n, "READY=1\n");
	if (!uv_is_active((uv_handle_t *)&n->refresh))
		uv_timer_start(&n->refresh, on_refresh, NOTIFY_STATUS_MS, NOTIFY_STATUS_MS);
	if (n->watchdog_ms > 0 && !uv_is_active((uv_handle_t *)&n->watchdog)) {
		notify_send(n, "WATCHDOG=1");
		uv_timer_start(&n->watchdog, on_watchdog, n->watchdog_ms, n->watchdog_ms);
	}
}

void
notify_reloading(struct notify *n)
{
	if (n == NULL || !n->active || n->stopping)
		return;
	notify_send(n, "RELOADING=1\nSTATUS=reloading the configuration");
}

void
notify_stopping(struct notify *n)
{
	if (n == NULL || !n->active || n->stopping)
		return;
	n->stopping = true;
	uv_timer_stop(&n->refresh);
	notify_send(n, "STOPPING=1\nSTATUS=stopping: finishing the queue's commits");
}

static void
notify_free(struct notify *n)
{
	buf_free(&n->last);
	n->magic = 0;
	free(n);
}

static void
on_timer_closed(uv_handle_t *h)
{
	struct notify *n = h->data;

	if (--n->open_timers == 0)
		notify_free(n);
}

void
notify_close(struct notify *n)
{
	if (n == NULL)
		return;
	if (n->magic != NOTIFY_MAGIC)
		fatalx("%s: bad notify", __func__);
	if (!n->active) {
		notify_free(n);
		return;
	}
	uv_close((uv_handle_t *)&n->watchdog, on_timer_closed);
	uv_close((uv_handle_t *)&n->refresh, on_timer_closed);
}
