/*
 * envelope.c - an envelope's memory: deep copy and free (common/envelope.h).
 */
#include "common/envelope.h"
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

void
envelope_copy(struct envelope *dst, const struct envelope *src)
{
	const char *sender = src->sender != NULL ? src->sender : "";
	size_t i, total;
	char *p;

	/* one block: the rcpts array, then the strings (a million queued
	 * messages each paid a malloc per string before) */
	total = src->nrcpts * sizeof(*dst->rcpts) + envelope_len(sender) + envelope_len(src->envid) +
	    envelope_len(src->auth_user) + envelope_len(src->client_ip) + envelope_len(src->client_helo);
	for (i = 0; i < src->nrcpts; i++)
		total += envelope_len(src->rcpts[i].addr != NULL ? src->rcpts[i].addr : "") +
		    envelope_len(src->rcpts[i].orcpt);
	*dst = *src;
	dst->packed = true;
	dst->rcpts = xmalloc(total);
	p = (char *)dst->rcpts + src->nrcpts * sizeof(*dst->rcpts);
	for (i = 0; i < src->nrcpts; i++) {
		dst->rcpts[i].addr = envelope_put(&p, src->rcpts[i].addr != NULL ? src->rcpts[i].addr : "");
		dst->rcpts[i].orcpt = envelope_put(&p, src->rcpts[i].orcpt);
		dst->rcpts[i].notify = src->rcpts[i].notify;
	}
	dst->sender = envelope_put(&p, sender);
	dst->envid = envelope_put(&p, src->envid);
	dst->auth_user = envelope_put(&p, src->auth_user);
	dst->client_ip = envelope_put(&p, src->client_ip);
	dst->client_helo = envelope_put(&p, src->client_helo);
}
