/*
 * queue_envelope.c - the text form of queue files: the envelope lines, the
 * state-record lines and the field escaping they share (queue/QUEUE.md).
 *
 * Owns: nothing beyond the struct envelope members it allocates.
 * Must never: touch files or the loop; accept a line it cannot round-trip
 * (decoding is strict: unknown keys, missing or repeated fields fail).
 */
#include "queue/queue.h"
#include "common/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define ENV_MAX_FIELDS 8

/*
 * Fields: " " + text, where NULL is "-", "" is "\e", and space, backslash,
 * control bytes and a leading '-' are escaped ("\s", "\\", "\xHH").  Bytes
 * >= 0x80 (UTF-8) are written as they are.  A field never contains a space
 * or a newline, so a record is one line of space-separated fields.
 */

void
envelope_escape(struct buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p;

	if (s == NULL) {
		buf_puts(b, " -");
		return;
	}
	buf_putc(b, ' ');
	if (*s == '\0') {
		buf_puts(b, "\\e");
		return;
	}
	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p == ' ')
			buf_puts(b, "\\s");
		else if (*p == '\\')
			buf_puts(b, "\\\\");
		else if (*p < 0x20 || *p == 0x7f || (*p == '-' && p == (const unsigned char *)s)) {
			buf_putc(b, '\\');
			buf_putc(b, 'x');
			buf_putc(b, hex[*p >> 4]);
			buf_putc(b, hex[*p & 0x0f]);
		} else
			buf_putc(b, (char)*p);
	}
}

/* Split line (no newline) at single spaces, in place.  Fields are never empty. */
int
envelope_split(char *line, char **argv, int max)
{
	int argc = 0;
	char *p = line;

	for (;;) {
		if (argc == max || *p == '\0' || *p == ' ')
			return -1;
		argv[argc++] = p;
		p = strchr(p, ' ');
		if (p == NULL)
			return argc;
		*p++ = '\0';
	}
}

static int
envelope_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int
envelope_unescape(char *field, char **out)
{
	char *r, *w;
	int hi, lo;

	if (strcmp(field, "-") == 0) {
		*out = NULL;
		return 0;
	}
	if (strcmp(field, "\\e") == 0) {
		field[0] = '\0';
		*out = field;
		return 0;
	}
	for (r = w = field; *r != '\0'; r++) {
		if (*r != '\\') {
			*w++ = *r;
			continue;
		}
		switch (r[1]) {
		case 's':
			*w++ = ' ';
			r++;
			break;
		case '\\':
			*w++ = '\\';
			r++;
			break;
		case 'x':
			if ((hi = envelope_hexval(r[2])) < 0 || (lo = envelope_hexval(r[3])) < 0 ||
			    (hi == 0 && lo == 0))
				return -1;
			*w++ = (char)(hi << 4 | lo);
			r += 3;
			break;
		default:
			return -1;
		}
	}
	*w = '\0';
	*out = field;
	return 0;
}

/*
 * Envelope lines: "key field...", one per line, in this order when written;
 * any order is accepted when read, each key once except "rcpt".
 */

static const struct {
	unsigned bit;
	const char *name;
} envelope_notify_names[] = {
	{ ENV_NOTIFY_NEVER, "NEVER" },
	{ ENV_NOTIFY_SUCCESS, "SUCCESS" },
	{ ENV_NOTIFY_FAILURE, "FAILURE" },
	{ ENV_NOTIFY_DELAY, "DELAY" },
};

static const char *envelope_ret_names[] = { "-", "HDRS", "FULL" };

void
envelope_encode(const struct envelope *env, struct buf *b)
{
	struct buf notify = BUF_INIT;
	size_t i, k;

	buf_printf(b, "arrival %llu\n", (unsigned long long)env->arrival_ms);
	buf_puts(b, "sender");
	envelope_escape(b, env->sender != NULL ? env->sender : "");
	buf_puts(b, "\nenvid");
	envelope_escape(b, env->envid);
	buf_printf(b, "\nret %s\nbody %s\nsmtputf8 %d\nuser", envelope_ret_names[env->ret],
	    env->body_8bit ? "8BITMIME" : "7BIT", env->smtputf8 ? 1 : 0);
	envelope_escape(b, env->auth_user);
	buf_puts(b, "\nclient");
	envelope_escape(b, env->client_ip);
	envelope_escape(b, env->client_helo);
	buf_putc(b, '\n');
	for (i = 0; i < env->nrcpts; i++) {
		buf_reset(&notify);
		for (k = 0; k < RELAY_ARRAY_LEN(envelope_notify_names); k++) {
			if (env->rcpts[i].notify & envelope_notify_names[k].bit) {
				if (notify.len > 0)
					buf_putc(&notify, ',');
				buf_puts(&notify, envelope_notify_names[k].name);
			}
		}
		buf_printf(b, "rcpt %s", notify.len > 0 ? buf_cstr(&notify) : "-");
		envelope_escape(b, env->rcpts[i].addr);
		envelope_escape(b, env->rcpts[i].orcpt);
		buf_putc(b, '\n');
	}
	buf_free(&notify);
}

static int
envelope_parse_u64(const char *s, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	*out = v;
	return 0;
}

static int
envelope_parse_notify(char *s, unsigned *out)
{
	char *tok, *save = NULL;
	size_t k;

	*out = 0;
	if (strcmp(s, "-") == 0)
		return 0;
	for (tok = strtok_r(s, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		for (k = 0; k < RELAY_ARRAY_LEN(envelope_notify_names); k++)
			if (strcmp(tok, envelope_notify_names[k].name) == 0)
				break;
		if (k == RELAY_ARRAY_LEN(envelope_notify_names))
			return -1;
		*out |= envelope_notify_names[k].bit;
	}
	return *out != 0 ? 0 : -1;
}

/* One handler per key; argv[0] is the key, fields are still escaped. */
typedef int envelope_key_fn(struct envelope *env, char **argv);

static int
envelope_key_arrival(struct envelope *env, char **argv)
{
	return envelope_parse_u64(argv[1], &env->arrival_ms);
}

static int
envelope_key_str(char *field, char **dst, int nullable)
{
	char *v;

	if (envelope_unescape(field, &v) == -1 || (v == NULL && !nullable))
		return -1;
	*dst = v != NULL ? xstrdup(v) : NULL;
	return 0;
}

static int
envelope_key_sender(struct envelope *env, char **argv)
{
	return envelope_key_str(argv[1], &env->sender, 0);
}

static int
envelope_key_envid(struct envelope *env, char **argv)
{
	return envelope_key_str(argv[1], &env->envid, 1);
}

static int
envelope_key_ret(struct envelope *env, char **argv)
{
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(envelope_ret_names); i++) {
		if (strcmp(argv[1], envelope_ret_names[i]) == 0) {
			env->ret = (enum env_ret)i;
			return 0;
		}
	}
	return -1;
}

static int
envelope_key_body(struct envelope *env, char **argv)
{
	if (strcmp(argv[1], "7BIT") == 0)
		env->body_8bit = false;
	else if (strcmp(argv[1], "8BITMIME") == 0)
		env->body_8bit = true;
	else
		return -1;
	return 0;
}

static int
envelope_key_smtputf8(struct envelope *env, char **argv)
{
	if (strcmp(argv[1], "0") != 0 && strcmp(argv[1], "1") != 0)
		return -1;
	env->smtputf8 = argv[1][0] == '1';
	return 0;
}

static int
envelope_key_user(struct envelope *env, char **argv)
{
	return envelope_key_str(argv[1], &env->auth_user, 1);
}

static int
envelope_key_client(struct envelope *env, char **argv)
{
	if (envelope_key_str(argv[1], &env->client_ip, 1) == -1)
		return -1;
	return envelope_key_str(argv[2], &env->client_helo, 1);
}

static int
envelope_key_rcpt(struct envelope *env, char **argv)
{
	struct env_rcpt r;

	memset(&r, 0, sizeof(r));
	if (envelope_parse_notify(argv[1], &r.notify) == -1)
		return -1;
	if (envelope_key_str(argv[2], &r.addr, 0) == -1)
		return -1;
	if (envelope_key_str(argv[3], &r.orcpt, 1) == -1) {
		free(r.addr);
		return -1;
	}
	env->rcpts = xrealloc(env->rcpts, (env->nrcpts + 1) * sizeof(*env->rcpts));
	env->rcpts[env->nrcpts++] = r;
	return 0;
}

static const struct {
	const char *key;
	int argc;
	int repeat;
	envelope_key_fn *fn;
} envelope_keys[] = {
	{ "arrival", 2, 0, envelope_key_arrival },
	{ "sender", 2, 0, envelope_key_sender },
	{ "envid", 2, 0, envelope_key_envid },
	{ "ret", 2, 0, envelope_key_ret },
	{ "body", 2, 0, envelope_key_body },
	{ "smtputf8", 2, 0, envelope_key_smtputf8 },
	{ "user", 2, 0, envelope_key_user },
	{ "client", 3, 0, envelope_key_client },
	{ "rcpt", 4, 1, envelope_key_rcpt },
};

/*
 * Parse the envelope lines text[0..len) (each ending in '\n'; modified in
 * place) into env (zeroed first).  0, or -1 with the reason in why; env is
 * then freed.
 */
int
envelope_decode(char *text, size_t len, struct envelope *env, struct buf *why)
{
	char *line, *nl, *end = text + len, *argv[ENV_MAX_FIELDS];
	unsigned seen = 0;
	size_t k, lineno = 0;
	int argc;

	memset(env, 0, sizeof(*env));
	for (line = text; line < end; line = nl + 1) {
		lineno++;
		nl = memchr(line, '\n', (size_t)(end - line));
		if (nl == NULL) {
			buf_printf(why, "envelope line %zu: no newline", lineno);
			goto fail;
		}
		*nl = '\0';
		if (memchr(line, '\0', (size_t)(nl - line)) != NULL) {
			buf_printf(why, "envelope line %zu: NUL byte", lineno);
			goto fail;
		}
		if ((argc = envelope_split(line, argv, ENV_MAX_FIELDS)) == -1) {
			buf_printf(why, "envelope line %zu: bad fields", lineno);
			goto fail;
		}
		for (k = 0; k < RELAY_ARRAY_LEN(envelope_keys); k++)
			if (strcmp(argv[0], envelope_keys[k].key) == 0)
				break;
		if (k == RELAY_ARRAY_LEN(envelope_keys)) {
			buf_printf(why, "envelope line %zu: unknown key", lineno);
			goto fail;
		}
		if (argc != envelope_keys[k].argc ||
		    ((seen & (1u << k)) && !envelope_keys[k].repeat) ||
		    envelope_keys[k].fn(env, argv) == -1) {
			buf_printf(why, "envelope line %zu: bad \"%s\"", lineno, envelope_keys[k].key);
			goto fail;
		}
		seen |= 1u << k;
	}
	for (k = 0; k < RELAY_ARRAY_LEN(envelope_keys); k++) {
		if (!(seen & (1u << k))) {
			buf_printf(why, "envelope: no \"%s\"", envelope_keys[k].key);
			goto fail;
		}
	}
	return 0;
fail:
	envelope_free(env);
	return -1;
}

/*
 * State records: "<type> <rcpt> <time_ms> <host> <ip> <status> <reply> <value>",
 * one line each after the body.
 */

#define ENV_RECORD_FIELDS 8

/* 0 if rec is a known type with an rcpt that fits a message of nrcpts. */
int
envelope_record_check(const struct queue_record *rec, size_t nrcpts)
{
	switch (rec->type) {
	case QREC_ATTEMPT:
	case QREC_DELIVERED:
	case QREC_FAILED:
	case QREC_REPORTED:
		return rec->rcpt >= 0 && (size_t)rec->rcpt < nrcpts ? 0 : -1;
	case QREC_HOLD:
	case QREC_WARNED:
		return rec->rcpt == -1 ? 0 : -1;
	case QREC_DKIM:
		return rec->rcpt == -1 && rec->reply != NULL && rec->status != NULL ? 0 : -1;
	}
	return -1;
}

void
envelope_record_encode(const struct queue_record *rec, struct buf *b)
{
	buf_printf(b, "%c %d %llu", (char)rec->type, rec->rcpt, (unsigned long long)rec->time_ms);
	envelope_escape(b, rec->host);
	envelope_escape(b, rec->ip);
	envelope_escape(b, rec->status);
	envelope_escape(b, rec->reply);
	buf_printf(b, " %d\n", rec->value);
}

static int
envelope_parse_int(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	if (*s == '\0')
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* Parse one record line (no newline; modified in place, rec points into it). */
int
envelope_record_parse(char *line, size_t nrcpts, struct queue_record *rec)
{
	char *argv[ENV_RECORD_FIELDS + 1], *f[4];
	long rcpt, value;
	int i;

	memset(rec, 0, sizeof(*rec));
	if (envelope_split(line, argv, ENV_RECORD_FIELDS + 1) != ENV_RECORD_FIELDS ||
	    strlen(argv[0]) != 1)
		return -1;
	rec->type = (enum queue_rec_type)argv[0][0];
	if (envelope_parse_int(argv[1], -1, 1L << 30, &rcpt) == -1 ||
	    envelope_parse_u64(argv[2], &rec->time_ms) == -1 ||
	    envelope_parse_int(argv[7], -(1L << 30), 1L << 30, &value) == -1)
		return -1;
	for (i = 0; i < 4; i++)
		if (envelope_unescape(argv[3 + i], &f[i]) == -1)
			return -1;
	rec->rcpt = (int)rcpt;
	rec->host = f[0];
	rec->ip = f[1];
	rec->status = f[2];
	rec->reply = f[3];
	rec->value = (int)value;
	return envelope_record_check(rec, nrcpts);
}
