/*
 * buf.h - the one byte buffer type: binary-safe, growable, always
 * NUL-terminated (Postfix's VSTRING, Redis's sds).  A zeroed struct buf is an
 * empty buffer; buf_free() releases its storage.
 */
#ifndef RELAY_BUF_H
#define RELAY_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char *data;     /* NUL-terminated; NULL only while cap == 0 */
	size_t len;
	size_t cap;
};

#define BUF_INIT { NULL, 0, 0 }

void buf_init(struct buf *b);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);                     /* len = 0, keeps storage */
void buf_reserve(struct buf *b, size_t extra);     /* room for extra more bytes */
void buf_append(struct buf *b, const void *p, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_putc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap);
void buf_consume(struct buf *b, size_t n);         /* drop n bytes from the front */
void buf_truncate(struct buf *b, size_t len);
const char *buf_cstr(const struct buf *b);         /* "" for an empty buffer */
char *buf_steal(struct buf *b);                    /* caller frees; b is reset */

#endif
