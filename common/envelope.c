/*
 * envelope.c - an envelope's memory: deep copy and free (common/envelope.h).
 *
 * A packed envelope is one allocation at rcpts: the rcpts array, then the
 * recipients' strings and envid, then (unless shared) sender, auth_user,
 * client_ip and client_helo.  A shared one keeps those four in an interned
 * block (common/intern.c) instead: a byte saying which of auth_user,
 * client_ip and client_helo are there (bits 0-2; sender always is), then
 * sender and those, each NUL-terminated, in that order.  The messages of one
 * session carry the same four, so with a million of them queued each no
 * longer pays ~30-50 bytes for its own copy.  sender - 1 is the block.
 *
 * Never: changes a block's bytes (an envelope's strings are not replaced).
 */
#include "common/envelope.h"
#include "common/intern.h"
#include "common/util.h"

#include <stdlib.h>
#include <string.h>

void
envelope_free(struct envelope *env)
{
	size_t i;

	if (env == NULL)
		return;
	if (env->packed) {
		if (env->shared)
			intern_unref(env->sender - 1);
		free(env->rcpts);
		memset(env, 0, sizeof(*env));
		return;
	}
	free(env->sender);
	for (i = 0; i < env->nrcpts; i++) {
		free(env->rcpts[i].addr);
		free(env->rcpts[i].orcpt);
	}
	free(env->rcpts);
	free(env->envid);
	free(env->auth_user);
	free(env->client_ip);
	free(env->client_helo);
	memset(env, 0, sizeof(*env));
}

/* The bytes s takes in the block (0 for NULL). */
static size_t
envelope_len(const char *s)
{
	return s != NULL ? strlen(s) + 1 : 0;
}

/* Copy s to *p in the block and move *p on; NULL stays NULL. */
static char *
envelope_put(char **p, const char *s)
{
	size_t n = envelope_len(s);
	char *d = *p;

	if (s == NULL)
		return NULL;
	memcpy(d, s, n);
	*p += n;
	return d;
}

#define ENV_SHARE_STACK 512             /* a shared block built on the stack up to this size */

/*
 * The block of src's four origin strings (see the header comment), from t;
 * NULL sender taken as "".  Points dst's four into it.
 */
static void
envelope_share_origin(struct envelope *dst, const struct envelope *src, struct intern_table *t)
{
	const char *sender = src->sender != NULL ? src->sender : "";
	const char *opt[3] = { src->auth_user, src->client_ip, src->client_helo };
	char **to[3] = { &dst->auth_user, &dst->client_ip, &dst->client_helo };
	char stack[ENV_SHARE_STACK], *blob = stack, *w;
	size_t len[3], slen = strlen(sender) + 1, total, i;
	const char *b;

	total = 1 + slen;
	for (i = 0; i < 3; i++)
		total += len[i] = envelope_len(opt[i]);
	if (total > sizeof(stack))
		blob = xmalloc(total);
	blob[0] = 0;
	memcpy(blob + 1, sender, slen);
	for (i = 0, w = blob + 1 + slen; i < 3; i++)
		if (opt[i] != NULL) {
			blob[0] |= (char)(1u << i);
			memcpy(w, opt[i], len[i]);
			w += len[i];
		}
	b = intern_get(t, blob, total);
	if (blob != stack)
		free(blob);
	dst->sender = (char *)(uintptr_t)(b + 1);       /* const: blocks are never written */
	w = dst->sender + slen;
	for (i = 0; i < 3; i++) {
		*to[i] = NULL;
		if (opt[i] != NULL) {
			*to[i] = w;
			w += len[i];
		}
	}
}

/* The packed copy; with share, the four origin strings shared through t. */
static void
envelope_pack(struct envelope *dst, const struct envelope *src, bool share, struct intern_table *t)
{
	const char *sender = src->sender != NULL ? src->sender : "";
	size_t i, total;
	char *p;

	/* one block: the rcpts array, then the strings (a million queued
	 * messages each paid a malloc per string before) */
	total = src->nrcpts * sizeof(*dst->rcpts) + envelope_len(src->envid);
	if (!share)
		total += envelope_len(sender) + envelope_len(src->auth_user) +
		    envelope_len(src->client_ip) + envelope_len(src->client_helo);
	for (i = 0; i < src->nrcpts; i++)
		total += envelope_len(src->rcpts[i].addr != NULL ? src->rcpts[i].addr : "") +
		    envelope_len(src->rcpts[i].orcpt);
	*dst = *src;
	dst->packed = true;
	dst->shared = share;
	dst->rcpts = xmalloc(total);
	p = (char *)dst->rcpts + src->nrcpts * sizeof(*dst->rcpts);
	for (i = 0; i < src->nrcpts; i++) {
		dst->rcpts[i].addr = envelope_put(&p, src->rcpts[i].addr != NULL ? src->rcpts[i].addr : "");
		dst->rcpts[i].orcpt = envelope_put(&p, src->rcpts[i].orcpt);
		dst->rcpts[i].notify = src->rcpts[i].notify;
	}
	dst->envid = envelope_put(&p, src->envid);
	if (share) {
		envelope_share_origin(dst, src, t);
		return;
	}
	dst->sender = envelope_put(&p, sender);
	dst->auth_user = envelope_put(&p, src->auth_user);
	dst->client_ip = envelope_put(&p, src->client_ip);
	dst->client_helo = envelope_put(&p, src->client_helo);
}

void
envelope_copy(struct envelope *dst, const struct envelope *src)
{
	envelope_pack(dst, src, false, NULL);
}

void
envelope_share(struct envelope *dst, const struct envelope *src, struct intern_table *t)
{
	envelope_pack(dst, src, true, t);
}
