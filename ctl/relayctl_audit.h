/*
 * relayctl_audit.h - the internal interface between the parts of
 * `relayctl audit`: the log line tokenizer (relayctl_audit_parse.c), the log
 * files and their rotated copies (relayctl_audit_files.c), the correlation of
 * events into NDR records (relayctl_audit_ndr.c) and the command itself
 * (relayctl_audit.c).  Nothing outside ctl/ uses it; the unit test
 * tests/unit/test_audit.c compiles the .c files in.
 */
#ifndef RELAY_CTL_AUDIT_H
#define RELAY_CTL_AUDIT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "common/buf.h"

/* ------------------------------------------------------------------ */
/* One log line, tokenized (relayctl_audit_parse.c).                  */

struct ctl_audit_field {
	const char *key;        /* NUL-terminated, points into store */
	const char *val;        /* unescaped, NUL-terminated (may hold NULs: see vallen) */
	size_t vallen;
};

struct ctl_audit_line {
	struct buf store;       /* a copy of the line, unescaped in place */
	struct ctl_audit_field *f;
	size_t nf, capf;
	uint64_t ts_ms;         /* ts= as milliseconds since the epoch */
	const char *ts;         /* ts= as logged */
	const char *event;      /* event= */
};

void ctl_audit_line_init(struct ctl_audit_line *l);
void ctl_audit_line_free(struct ctl_audit_line *l);
/*
 * Tokenize `ts=... level=... event=NAME key=value ...` (the format of
 * common/log.c).  0, or RELAY_EINVAL for a malformed line: no leading ts=,
 * an unparsable time, no event=, a token without '=', a bad key, an
 * unterminated quote, an unknown escape, a raw control character.  The
 * fields stay valid until the next parse or ctl_audit_line_free().
 */
int ctl_audit_line_parse(struct ctl_audit_line *l, const char *line, size_t len);
/* The value of the first field named key, or NULL. */
const char *ctl_audit_line_get(const struct ctl_audit_line *l, const char *key);

/* ------------------------------------------------------------------ */
/* Log files (relayctl_audit_files.c).                                */

struct ctl_audit_files {
	char **paths;
	size_t n, cap;
};

void ctl_audit_files_free(struct ctl_audit_files *fl);
/*
 * The log file `log_file` and its rotated copies in the same directory
 * (names starting with its base name followed by a rotation tail such as
 * .1, .2.gz, -20261122, .2026-11-22.gz), oldest first, the live file last.
 * 0, or RELAY_EIO with a message naming the file in err.
 */
int ctl_audit_files_default(struct ctl_audit_files *fl, const char *log_file, struct buf *err);
/*
 * Add one --log argument: a path, or a glob pattern (matches ordered oldest
 * first).  0, or RELAY_ENOENT with a message in err when a pattern matches
 * nothing.
 */
int ctl_audit_files_add(struct ctl_audit_files *fl, const char *arg, struct buf *err);
/* Rotation order of two paths: < 0 when a is older than b. */
int ctl_audit_files_cmp(const char *a, const char *b);

/* A log being read line by line, plain or compressed (through gzip -dc etc.). */
struct ctl_audit_reader {
	const char *path;
	FILE *fp;
	pid_t pid;              /* the decompressor, or -1 */
	const char *prog;       /* its name, for messages */
	char *line;             /* getline(3) buffer */
	size_t linecap;
};

/* 0, or RELAY_EIO with "PATH: reason" in err. */
int ctl_audit_reader_open(struct ctl_audit_reader *r, const char *path, struct buf *err);
/* The next line without its line end: length >= 0; -1 at the end; RELAY_EIO-ish
 * errors are reported by ctl_audit_reader_close(). */
ssize_t ctl_audit_reader_next(struct ctl_audit_reader *r, const char **line);
/* Close; 0, or RELAY_EIO with "PATH: reason" in err (read error, decompressor failed). */
int ctl_audit_reader_close(struct ctl_audit_reader *r, struct buf *err);

/* ------------------------------------------------------------------ */
/* Correlation of events into NDR records (relayctl_audit_ndr.c).     */

/* One NDR as reported; strings are NULL when unknown.  attempts -1 = unknown. */
struct ctl_audit_ndr {
	uint64_t ts_ms;
	const char *time;       /* ts of the ndr line, as logged */
	const char *qid;        /* the original message */
	const char *ndr_qid;    /* the report */
	const char *sender;     /* the original sender (the report's recipient) */
	const char *recipient;
	const char *status;     /* enhanced status code, e.g. 5.1.1 */
	const char *reason;     /* failed | expired | delayed | delivered */
	const char *host;       /* the remote host of the last attempt */
	const char *ip;
	const char *reply;      /* its reply */
	const char *down_since;
	long attempts;
};

/* Called once per ndr line; the record's strings live only during the call. */
typedef void (*ctl_audit_emit_fn)(const struct ctl_audit_ndr *ndr, void *arg);

struct ctl_audit_corr;

struct ctl_audit_corr *ctl_audit_corr_new(ctl_audit_emit_fn emit, void *arg);
/* Feed one parsed line, in log order. */
void ctl_audit_corr_feed(struct ctl_audit_corr *c, const struct ctl_audit_line *l);
/* Forget state not touched since `before` (ms); done by feed every so often
 * with the newest time seen minus CTL_AUDIT_HORIZON_MS. */
void ctl_audit_corr_expire(struct ctl_audit_corr *c, uint64_t before);
/* How many messages and (message, recipient) attempts are tracked. */
size_t ctl_audit_corr_tracked(const struct ctl_audit_corr *c);
void ctl_audit_corr_free(struct ctl_audit_corr *c);

/* Longer than the 5-day retry limit: state older than this can't be reported. */
#define CTL_AUDIT_HORIZON_MS (7ULL * 86400 * 1000)

/* ------------------------------------------------------------------ */
/* Records and their rendering (relayctl_audit.c).                    */

/* Does ndr pass the filters? since_ms 0 = any time; domain/rcpt NULL = any. */
int ctl_audit_match(const struct ctl_audit_ndr *ndr, uint64_t since_ms, const char *domain,
    const char *rcpt);

#endif
