/*
 * json.h - the one JSON writer.  Whatever bytes it is given, it emits valid
 * UTF-8 JSON (RFC 8259): '"' and '\' are escaped, every control character
 * (and DEL) is written as \u00XX, and each byte that does not belong to
 * well-formed UTF-8 (common/codec.h) becomes \ufffd.  Output is compact (no
 * white space), the shape relayctl --json documents (README "relayctl").
 *
 *	struct json j;
 *	json_init(&j, out);
 *	json_object_begin(&j);
 *	json_key(&j, "qid"); json_string(&j, qid);
 *	json_key(&j, "held"); json_bool(&j, held);
 *	json_object_end(&j);
 *
 * The writer places the commas; the caller places keys before object values.
 * Callers that build a document by hand append json_str() for each string.
 */
#ifndef RELAY_JSON_H
#define RELAY_JSON_H

#include <stdbool.h>
#include <stdint.h>

struct buf;

/* A JSON string for the NUL-terminated s, or null when s is NULL. */
void json_str(struct buf *b, const char *s);

#define JSON_MAX_DEPTH 32

struct json {
	struct buf *out;          /* not owned */
	unsigned depth;
	bool after_key;           /* the next value follows a key: no comma */
	bool nonempty[JSON_MAX_DEPTH + 1];  /* per level: a value was written */
};

void json_init(struct json *j, struct buf *out);
void json_object_begin(struct json *j);
void json_object_end(struct json *j);
void json_array_begin(struct json *j);
void json_array_end(struct json *j);
void json_key(struct json *j, const char *key);
void json_string(struct json *j, const char *s);     /* NULL: null */
void json_int(struct json *j, int64_t v);
void json_uint(struct json *j, uint64_t v);
void json_bool(struct json *j, bool v);
void json_null(struct json *j);

#endif
