/*
 * util.h - what every module of relayd uses: error codes, checked allocation,
 * fatal errors, and the clock.  Kept deliberately small; anything that is a
 * concept of its own (buffers, logging, I/O) has its own file.
 */
#ifndef RELAY_UTIL_H
#define RELAY_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

/* Functions return 0 or one of these (negative); the caller decides. */
enum {
	RELAY_OK = 0,
	RELAY_EIO = -1,        /* system call failed; errno-derived text logged */
	RELAY_ENOENT = -2,     /* no such queue id, route, host ... */
	RELAY_EINVAL = -3,     /* malformed input */
	RELAY_EEXIST = -4,
	RELAY_ELIMIT = -5,     /* a configured limit was hit */
	RELAY_ETEMP = -6,      /* temporary failure, try again later */
	RELAY_EPERM = -7,
	RELAY_ECLOSED = -8,    /* peer or object went away */
	RELAY_ENOSPC = -9,     /* the file system is full (ENOSPC, EDQUOT): try again later */
};

/* Allocation that fails aborts the process: there is no sane recovery. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* Broken invariant: log loudly and abort.  Use as fatalx("%s: ...", __func__). */
void fatalx(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* Milliseconds since the Unix epoch (wall clock), and a monotonic ms clock. */
uint64_t util_now_ms(void);
uint64_t util_mono_ms(void);

/* RFC 3339 UTC time with milliseconds, "2026-11-22T11:21:31.123Z", into out
 * (at least 32 bytes): the log's timestamps. */
void util_rfc3339(uint64_t ms, char *out, size_t outlen);
/* The same to the second, "2026-11-22T11:21:31Z" (at least 24 bytes): relayctl's. */
void util_rfc3339_sec(uint64_t ms, char *out, size_t outlen);
/* "2026-11-22T11:21:31.123Z", or with an offset like +01:00, to ms since the
 * epoch (digits past milliseconds are dropped).  0, or RELAY_EINVAL for
 * anything else, a date that does not exist, or a time before 1970. */
int util_rfc3339_parse(const char *s, uint64_t *ms);
/* RFC 5322 date ("Sun, 22 Nov 2026 11:21:31 +0000") into out (at least 40 bytes). */
void util_rfc5322_date(uint64_t ms, char *out, size_t outlen);

/* Case-insensitive ASCII compare helpers (locale-independent). */
int util_strcasecmp(const char *a, const char *b);
int util_strncasecmp(const char *a, const char *b, size_t n);

/* Parse "30s", "5m", "4h", "5d", "250ms", "0" into milliseconds. 0 or -1. */
int util_parse_duration(const char *s, uint64_t *ms);
/* Parse "512K", "10M", "1G", "1000" into bytes. 0 or -1. */
int util_parse_size(const char *s, uint64_t *bytes);
/* Format a duration compactly ("5d", "1h30m", "250ms") into out. */
void util_format_duration(uint64_t ms, char *out, size_t outlen);

/* Whole-buffer I/O: retried on EINTR and short counts.  0, or -1 with errno
 * (EIO for a zero-length write, or a read past the end of the file). */
struct buf;
/* The first line of path (a password), at most max bytes, without its newline,
 * into *out (the caller frees it).  0, or -1 with err ("PATH: why\n"). */
int util_read_secret(const char *path, size_t max, char **out, struct buf *err);

int util_pread_full(int fd, void *p, size_t len, uint64_t off);
int util_pwrite_full(int fd, const void *p, size_t len, uint64_t off);
/*
 * Small state files (queue_dir/routes, queue_dir/mta-sts): blocking, so at
 * start-up or on the thread pool only.  util_read_file reads all of path
 * into *out (malloc'd, NUL-terminated, *len bytes): 0, or -1 with errno
 * (ENOENT; EFBIG when it is longer than max).  util_write_file_atomic
 * writes p to tmp_path (0600), fsyncs it, renames it over path and fsyncs
 * path's directory, so that a crash or a power loss leaves the old file or
 * the new one, and after a 0 the new one: 0, or -1 with errno.
 * util_fsync_parent fsyncs the directory holding path: 0, or -1 with errno.
 */
int util_read_file(const char *path, size_t max, char **out, size_t *len);
int util_write_file_atomic(const char *path, const char *tmp_path, const void *p, size_t len);
int util_fsync_parent(const char *path);

/* FNV-1a (32-bit) of len bytes at p: the hash of every table keyed by a name
 * or by bytes (htab, intern).  util_hash_str(s) is util_hash_bytes(s, strlen(s)). */
uint32_t util_hash_bytes(const void *p, size_t len);
uint32_t util_hash_str(const char *s);

#define RELAY_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
