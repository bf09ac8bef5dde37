/*
 * notify.h - telling the service manager how relayd is, through libsystemd's
 * sd_notify(3): READY=1 once it serves, RELOADING=1 ... READY=1 around a
 * reload, STOPPING=1, a one-line STATUS= kept current, and, when the unit
 * sets WatchdogSec=, WATCHDOG=1 from a timer on the event loop at half the
 * interval (a wedged loop stops the pings, and systemd restarts relayd).
 * Without NOTIFY_SOCKET in the environment every call does nothing and no
 * timer runs.
 */
#ifndef RELAY_NOTIFY_H
#define RELAY_NOTIFY_H

#include <uv.h>

#include "common/buf.h"

struct notify;

/* Writes the current status line (no newline) into out; called on the loop. */
typedef void (*notify_status_fn)(void *arg, struct buf *out);

/* Create the notifier; status(arg) is asked for the STATUS= line once
 * notify_ready() has been called, then every second (sent when it changed). */
struct notify *notify_new(uv_loop_t *loop, notify_status_fn status, void *arg);
/* READY=1 with the status (at start-up, and to end a reload). */
void notify_ready(struct notify *n);
/* RELOADING=1: a reload begins; notify_ready() ends it, whatever its outcome. */
void notify_reloading(struct notify *n);
/* STOPPING=1; the status timer stops, the watchdog goes on until notify_close(). */
void notify_stopping(struct notify *n);
/* Close the timers; n is freed once they are closed.  n may be NULL in every call. */
void notify_close(struct notify *n);

#endif
