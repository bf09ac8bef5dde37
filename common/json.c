/*
 * json.c - the JSON writer (json.h): the string escaper every JSON answer
 * goes through, and the comma bookkeeping of the structured API.
 *
 * Owns: nothing; appends to the caller's buffer.
 * Never: copies a byte that would make the output invalid UTF-8 or invalid
 * JSON, whatever the input (config text, a remote server's reply, a header).
 */
#include "common/json.h"
#include "common/buf.h"
#include "common/codec.h"
#include "common/util.h"

#include <inttypes.h>
#include <string.h>

void
json_str(struct buf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s, *run;
	size_t n, l;

	if (s == NULL) {
		buf_puts(b, "null");
		return;
	}
	n = strlen(s);
	buf_putc(b, '"');
	while (n > 0) {
		run = p;
		while (n > 0 && *p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\') {
			p++;
			n--;
		}
		if (p > run)
			buf_append(b, run, (size_t)(p - run));
		if (n == 0)
			break;
		if (*p == '"' || *p == '\\') {
			buf_putc(b, '\\');
			buf_putc(b, (char)*p);
			l = 1;
		} else if (*p < 0x20 || *p == 0x7f) {
			buf_printf(b, "\\u%04x", *p);
			l = 1;
		} else if ((l = codec_utf8_len(p, n)) == 0) {
			buf_puts(b, "\\ufffd");
			l = 1;
		} else
			buf_append(b, p, l);
		p += l;
		n -= l;
	}
	buf_putc(b, '"');
}

void
json_init(struct json *j, struct buf *out)
{
	memset(j, 0, sizeof(*j));
	j->out = out;
}

/* Before any value: the comma that separates it from the one before. */
static void
json_value(struct json *j)
{
	if (j->after_key)
		j->after_key = false;
	else if (j->nonempty[j->depth])
		buf_putc(j->out, ',');
	j->nonempty[j->depth] = true;
}

static void
json_open(struct json *j, char c)
{
	json_value(j);
	if (j->depth == JSON_MAX_DEPTH)
		fatalx("%s: nested deeper than %d", __func__, JSON_MAX_DEPTH);
	buf_putc(j->out, c);
	j->nonempty[++j->depth] = false;
}

static void
json_close(struct json *j, char c)
{
	if (j->depth == 0 || j->after_key)
		fatalx("%s: '%c' without its opening", __func__, c);
	j->depth--;
	buf_putc(j->out, c);
}

void
json_object_begin(struct json *j)
{
	json_open(j, '{');
}

void
json_object_end(struct json *j)
{
	json_close(j, '}');
}

void
json_array_begin(struct json *j)
{
	json_open(j, '[');
}

void
json_array_end(struct json *j)
{
	json_close(j, ']');
}

void
json_key(struct json *j, const char *key)
{
	json_value(j);
	json_str(j->out, key);
	buf_putc(j->out, ':');
	j->after_key = true;
}

void
json_string(struct json *j, const char *s)
{
	json_value(j);
	json_str(j->out, s);
}

void
json_int(struct json *j, int64_t v)
{
	json_value(j);
	buf_printf(j->out, "%" PRId64, v);
}

void
json_uint(struct json *j, uint64_t v)
{
	json_value(j);
	buf_printf(j->out, "%" PRIu64, v);
}

void
json_bool(struct json *j, bool v)
{
	json_value(j);
	buf_puts(j->out, v ? "true" : "false");
}

void
json_null(struct json *j)
{
	json_value(j);
	buf_puts(j->out, "null");
}
