/*
 * sandbox.h - what relayd gives up after start-up: root (the switch to the
 * configured `user`), the filesystem outside the paths it uses (Landlock),
 * and the system calls it never makes (seccomp, a deny-list).
 *
 * The daemon's order (daemon/relay.c):
 *   sandbox_new()          resolve `user`, prepare the queue directory
 *   log_open()
 *   sandbox_restrict_fs()  no_new_privs + Landlock, while only one thread exists
 *   sandbox_as_user(true)  open the queue with the user's file-system ids, so
 *   router_new()             every file it makes is the user's
 *   sandbox_as_user(false)
 *   control_new(), submit_new(), metrics_new()   (root binds the listeners,
 *                          reads the key)
 *   sandbox_drop()         setgroups/setgid/setuid for good, then seccomp
 * Started by a non-root user there is nothing to drop: the same calls only
 * restrict.  Files are the sandbox's business only through these calls.
 */
#ifndef RELAY_SANDBOX_H
#define RELAY_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "common/buf.h"
#include "conf/conf.h"

struct sandbox;

/*
 * Resolve c->user and, started as root, check it (it must exist and not be
 * uid 0), create the queue directory (0700, owned by the user) or check an
 * existing one (not world-writable, not another user's; a root-owned queue of
 * an older version is handed to the user).  Started as another user, a
 * different `user` is a warning (event=user_ignored).  0, or -1 with err.
 */
int sandbox_new(const struct conf *c, struct sandbox **out, struct buf *err);
void sandbox_free(struct sandbox *sb);

/* True when started as root and going to switch to the user. */
bool sandbox_switches(const struct sandbox *sb);

/* The uid relayd runs as after the drop (resolved once, by sandbox_new, so
 * that nothing later needs the password database behind Landlock). */
uid_t sandbox_uid(const struct sandbox *sb);

/*
 * Set no_new_privs and, where the kernel has Landlock (ABI 2+), restrict the
 * filesystem to the paths c names plus the system files the libraries read.
 * Must run before any thread exists (Landlock binds the calling thread and
 * its future children).  Without Landlock it logs event=sandbox
 * landlock=unavailable once and returns 0.  0, or -1 with err.
 */
int sandbox_restrict_fs(struct sandbox *sb, const struct conf *c, struct buf *err);

/* Started as root: switch this thread's file-system ids (setfsuid) to the user
 * (on) or back (off); threads started meanwhile keep the user's. */
void sandbox_as_user(struct sandbox *sb, bool on);

/*
 * Give up root for good (setgroups, setgid, setuid; regaining uid 0 must
 * then fail, or the process aborts), then load the seccomp filter on every
 * thread.  Logs event=sandbox with what is in force.  0, or -1 with err.
 */
int sandbox_drop(struct sandbox *sb, struct buf *err);

/*
 * On SIGHUP: the paths Landlock allowed are those of the start; a new
 * configuration that names another file (certificate, key, sasldb,
 * senders, CA file, log file, queue, control socket) needs a restart.
 * 0, or -1 with err naming the key.
 */
int sandbox_reload_check(const struct sandbox *sb, const struct conf *c, struct buf *err);

/*
 * relayd -n: check `user` as a start would (an error when run as root and
 * the user is missing or uid 0) and warn, one line each into warn, about
 * the files the user will not be able to read after the switch.  0 or -1.
 */
int sandbox_check_conf(const struct conf *c, struct buf *warn, struct buf *err);

/* ---- the pieces, for tests ---- */

/* May an account (uid, gid, groups) open a file with stat st for want
 * (R_OK, W_OK, X_OK, or'ed)?  Permission bits only, as the kernel's DAC. */
bool sandbox_may_access(const struct stat *st, uid_t uid, gid_t gid,
    const gid_t *groups, size_t ngroups, int want);

/* Load the seccomp deny-list on every thread of the process.  0 or -1. */
int sandbox_seccomp_install(struct buf *err);

enum sandbox_fs {
	SANDBOX_FS_READ,        /* read files and list directories beneath */
	SANDBOX_FS_APPEND,      /* a log directory: create and write files */
	SANDBOX_FS_SOCKET,      /* a socket's directory: create and remove it */
	SANDBOX_FS_ALL,         /* everything, the queue */
};

struct sandbox_rule {
	const char *path;       /* a file or directory; one that is missing is skipped */
	enum sandbox_fs access;
};

/* Landlock ABI version, or 0 where the kernel has none (or it is disabled). */
int sandbox_landlock_abi(void);

/*
 * Restrict the calling thread (and the threads it makes later) to rules.
 * 0 applied; 1 not applied because the kernel lacks Landlock ABI 2 (err
 * says why); -1 failed (err).  no_new_privs must be set first.
 */
int sandbox_landlock_apply(const struct sandbox_rule *rules, size_t n, struct buf *err);

#endif
