/*
 * envelope.c - an envelope's memory: deep copy and free (common/envelope.h).
 *
 * A packed envelope is one allocation at rcpts: the rcpts array, then the
 * recipients' strings, sender and envid, then (unless shared) auth_user,
 * client_ip and client_helo.  A shared one keeps those three, the strings of
 * the client's session, in an interned block (common/intern.c) instead: a
 * byte saying which of them are there (bits 0-2), then those, each
 * NUL-terminated, in that order; none there (internal mail): no block.  The
 * messages of a session carry the same three, so with a million of them
 * queued each no longer pays ~30 bytes for its own copy.  The sender stays
 * in the allocation: it may differ from one message of a session to the
 * next (VERP), and then a block of its own would cost more than it saves.
 * The first of the three that is there, less one byte, is the block.
 *
 * Never: changes a block's bytes (an envelope's strings are not replaced).
 */
#include "common/envelope.h"
#include "common/intern.h"
#include "common/util.h"

#include <stdlib.h>
#include <string.h>

/* Drop env's reference to its session block (if it has one). */
static void
envelope_unshare(struct envelope *env)
{
	const char *p = env->auth_user != NULL ? env->auth_user : env->client_ip != NULL ?
	    env->client_ip : env->client_helo;

	if (p != NULL)
		intern_unref(p - 1);
}

void
envelope_free(struct envelope *env)
{
	size_t i;

	if (env == NULL)
		return;
	if (env->packed) {
		if (env->shared)
			envelope_unshare(env);
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

#define ENV_SHARE_STACK 512             /* a session block built on the stack up to this size */

/*
 * The block of src's session strings (see the header comment), from t;
 * points dst's three into it.
 */
static void
envelope_share_session(struct envelope *dst, const struct envelope *src, struct intern_table *t)
{
	const char *from[3] = { src->auth_user, src->client_ip, src->client_helo };
	char **to[3] = { &dst->auth_user, &dst->client_ip, &dst->client_helo };
	char stack[ENV_SHARE_STACK], *blob = stack, *w;
	size_t len[3], total = 1, i;
	const char *b;

	for (i = 0; i < 3; i++) {
		*to[i] = NULL;
		total += len[i] = envelope_len(from[i]);
	}
	if (total == 1)
		return;
	if (total > sizeof(stack))
		blob = xmalloc(total);
	blob[0] = 0;
	for (i = 0, w = blob + 1; i < 3; i++)
		if (from[i] != NULL) {
			blob[0] |= (char)(1u << i);
			memcpy(w, from[i], len[i]);
			w += len[i];
		}
	b = intern_get(t, blob, total);
	if (blob != stack)
		free(blob);
	w = (char *)(uintptr_t)(b + 1);                 /* const: blocks are never written */
	for (i = 0; i < 3; i++)
		if (from[i] != NULL) {
			*to[i] = w;
			w += len[i];
		}
}

/* The packed copy; with share, the session's strings shared through t. */
static void
envelope_pack(struct envelope *dst, const struct envelope *src, bool share, struct intern_table *t)
{
	const char *sender = src->sender != NULL ? src->sender : "";
	size_t i, total;
	char *p;

	/* one block: the rcpts array, then the strings (a million queued
	 * messages each paid a malloc per string before) */
	total = src->nrcpts * sizeof(*dst->rcpts) + envelope_len(sender) + envelope_len(src->envid);
	if (!share)
		total += envelope_len(src->auth_user) + envelope_len(src->client_ip) +
		    envelope_len(src->client_helo);
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
	dst->sender = envelope_put(&p, sender);
	dst->envid = envelope_put(&p, src->envid);
	if (share) {
		envelope_share_session(dst, src, t);
		return;
	}
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
