/*
 * log.c - writes event lines (see log.h for the format).  Each line is
 * assembled in memory and written with a single write(2) so that lines from
 * one process never interleave.  Owns the log file descriptor.
 */
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Set on the main thread (start, reload), read by every thread that logs
 * (the delivery thread, the queue's threads): atomic. */
static atomic_int log_fd = 2;
static char *log_path;
static atomic_int log_min = LOG_INFO;

static const char *level_names[] = { "debug", "info", "notice", "warning", "err", "crit" };

const char *
log_level_name(enum log_level level)
{
	return level_names[level];
}

int
log_open(const char *path)
{
	int fd;

	if (path == NULL || *path == '\0' || strcmp(path, "-") == 0) {
		if (log_fd > 2)
			close(log_fd);
		log_fd = 2;
		free(log_path);
		log_path = NULL;
		return 0;
	}
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return -1;
	/*
	 * Swap the file under the same descriptor number (dup3 is atomic): a
	 * line written meanwhile, from any thread, lands whole in the old file
	 * or the new one, never in a closed or reused descriptor.
	 */
	if (log_fd > 2) {
		if (dup3(fd, log_fd, O_CLOEXEC) < 0) {
			close(fd);
			return -1;
		}
		close(fd);
	} else
		log_fd = fd;
	if (log_path != path) {
		free(log_path);
		log_path = xstrdup(path);
	}
	return 0;
}

int
log_reopen(void)
{
	char *p;
	int rc, e;

	if (log_path == NULL)
		return 0;
	p = xstrdup(log_path);
	rc = log_open(p);
	e = errno;
	free(p);
	errno = e;              /* the caller reports why */
	return rc;
}

void
log_close(void)
{
	if (log_fd > 2)
		close(log_fd);
	log_fd = 2;
	free(log_path);
	log_path = NULL;
}

void
log_set_level(enum log_level min)
{
	atomic_store_explicit(&log_min, (int)min, memory_order_relaxed);
}

static int
needs_quote(const char *v, size_t len)
{
	size_t i;

	if (len == 0)
		return 1;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c <= ' ' || c == '"' || c == '\\' || c == '=' || c == 0x7f)
			return 1;
	}
	return 0;
}

void
log_quote(struct buf *b, const char *v, size_t len)
{
	size_t i;

	if (!needs_quote(v, len)) {
		buf_append(b, v, len);
		return;
	}
	buf_putc(b, '"');
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)v[i];
		switch (c) {
		case '"':  buf_puts(b, "\\\""); break;
		case '\\': buf_puts(b, "\\\\"); break;
		case '\n': buf_puts(b, "\\n"); break;
		case '\r': buf_puts(b, "\\r"); break;
		case '\t': buf_puts(b, "\\t"); break;
		default:
			if (c < 0x20 || c == 0x7f)
				buf_printf(b, "\\x%02x", c);
			else
				buf_putc(b, (char)c);
		}
	}
	buf_putc(b, '"');
}

void
log_begin(struct log_line *l, enum log_level level, const char *event)
{
	char ts[40];

	buf_init(&l->b);
	l->level = level;
	l->active = (int)level >= atomic_load_explicit(&log_min, memory_order_relaxed);
	if (!l->active)
		return;
	util_rfc3339(util_now_ms(), ts, sizeof(ts));
	buf_printf(&l->b, "ts=%s level=%s event=", ts, level_names[level]);
	log_quote(&l->b, event, strlen(event));
}

void
log_kvn(struct log_line *l, const char *key, const char *value, size_t len)
{
	if (!l->active || value == NULL)
		return;
	buf_putc(&l->b, ' ');
	buf_puts(&l->b, key);
	buf_putc(&l->b, '=');
	log_quote(&l->b, value, len);
}

void
log_kv(struct log_line *l, const char *key, const char *value)
{
	if (value != NULL)
		log_kvn(l, key, value, strlen(value));
}

void
log_kvu(struct log_line *l, const char *key, uint64_t value)
{
	if (l->active)
		buf_printf(&l->b, " %s=%llu", key, (unsigned long long)value);
}

void
log_kvi(struct log_line *l, const char *key, int64_t value)
{
	if (l->active)
		buf_printf(&l->b, " %s=%lld", key, (long long)value);
}

void
log_kvf(struct log_line *l, const char *key, const char *fmt, ...)
{
	struct buf tmp = BUF_INIT;
	va_list ap;

	if (!l->active)
		return;
	va_start(ap, fmt);
	buf_vprintf(&tmp, fmt, ap);
	va_end(ap);
	log_kvn(l, key, buf_cstr(&tmp), tmp.len);
	buf_free(&tmp);
}

void
log_end(struct log_line *l)
{
	if (l->active) {
		const char *p;
		size_t left;

		buf_putc(&l->b, '\n');
		p = l->b.data;
		left = l->b.len;
		while (left > 0) {
			ssize_t n = write(atomic_load_explicit(&log_fd, memory_order_relaxed), p, left);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				break;       /* nowhere to report a failing log */
			}
			p += n;
			left -= (size_t)n;
		}
	}
	buf_free(&l->b);
}

void
log_event(enum log_level level, const char *event, ...)
{
	struct log_line l;
	va_list ap;
	const char *k;

	log_begin(&l, level, event);
	va_start(ap, event);
	while ((k = va_arg(ap, const char *)) != NULL) {
		const char *v = va_arg(ap, const char *);
		log_kv(&l, k, v);
	}
	va_end(ap);
	log_end(&l);
}
