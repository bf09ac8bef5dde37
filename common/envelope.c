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

static char *
envelope_strdup(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

void
envelope_copy(struct envelope *dst, const struct envelope *src)
{
	size_t i;

	*dst = *src;
	dst->sender = xstrdup(src->sender != NULL ? src->sender : "");
	dst->rcpts = xcalloc(src->nrcpts, sizeof(*dst->rcpts));
	for (i = 0; i < src->nrcpts; i++) {
		dst->rcpts[i].addr = xstrdup(src->rcpts[i].addr != NULL ? src->rcpts[i].addr : "");
		dst->rcpts[i].orcpt = envelope_strdup(src->rcpts[i].orcpt);
		dst->rcpts[i].notify = src->rcpts[i].notify;
	}
	dst->envid = envelope_strdup(src->envid);
	dst->auth_user = envelope_strdup(src->auth_user);
	dst->client_ip = envelope_strdup(src->client_ip);
	dst->client_helo = envelope_strdup(src->client_helo);
}
