/*
 * log.h - the event log: one line per event,
 *   ts=<RFC 3339> level=<level> event=<name> key=value ...
 * Values that are empty or contain space, quote, backslash, '=' or control
 * characters are double-quoted with \" \\ \n \r \t \xHH escapes.  The format
 * is a contract with admins and tools (see README "Log format").
 *
 * Usage:
 *   struct log_line l;
 *   log_begin(&l, LOG_INFO, "accepted");
 *   log_kv(&l, "qid", qid);
 *   log_kvu(&l, "size", size);
 *   log_end(&l);
 * or for string-only lines: log_event(LOG_INFO, "stopped", "reason", "signal", NULL);
 *
 * The log destination is process-wide (the one thing that is): log_open()
 * points it at a file (appending) or stderr; log_reopen() after rotation.
 * A line is written whole to the old file or to the new one, never lost.
 */
#ifndef RELAY_LOG_H
#define RELAY_LOG_H

#include <stdint.h>
#include "common/buf.h"

enum log_level { LOG_DEBUG, LOG_INFO, LOG_NOTICE, LOG_WARNING, LOG_ERR, LOG_CRIT };

struct log_line {
	struct buf b;
	enum log_level level;
	int active;          /* 0 when the level is filtered out */
};

int  log_open(const char *path);       /* NULL or "" or "-" = stderr; 0 or -1 */
int  log_reopen(void);                 /* reopen the same path (SIGUSR1, after rotation); 0 or -1 */
void log_set_level(enum log_level min);
void log_close(void);

void log_begin(struct log_line *l, enum log_level level, const char *event);
void log_kv(struct log_line *l, const char *key, const char *value);   /* NULL value skipped */
void log_kvn(struct log_line *l, const char *key, const char *value, size_t len);
void log_kvu(struct log_line *l, const char *key, uint64_t value);
void log_kvi(struct log_line *l, const char *key, int64_t value);
void log_kvf(struct log_line *l, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void log_end(struct log_line *l);

/* Convenience: string pairs, terminated by NULL. */
void log_event(enum log_level level, const char *event, ...);

/* Append key=value with the log's quoting rules to any buffer (used by relayctl too). */
void log_quote(struct buf *b, const char *value, size_t len);

const char *log_level_name(enum log_level level);

#endif
