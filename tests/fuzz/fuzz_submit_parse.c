/*
 * fuzz_submit_parse.c - fuzz target: the submission server's tokenizer
 * (submit/submit_parse.c) as a session uses it on one command line: the
 * verb and its arguments, the MAIL FROM / RCPT TO path with its ESMTP
 * parameters, and the parameter values that have their own syntax (NOTIFY,
 * ORCPT, ENVID's xtext); and the same bytes as a From: header value
 * (submit_parse_header_addrs, the sender check of DATA).
 *
 * Input: one command line without its CRLF (a NUL ends it early, as the
 * session refuses such lines).  Seeds: tests/fuzz/corpus/submit_parse/.
 */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/util.h"
#include "submit/submit_int.h"

static void
fuzz_addr_cb(void *arg, const char *addr)
{
	size_t *n = arg;

	*n += strlen(addr);
}

/* The parameter values a session decodes further. */
static void
fuzz_params(const struct submit_path *p)
{
	struct buf out = BUF_INIT;
	unsigned notify;
	size_t i;

	for (i = 0; i < p->nparams; i++) {
		const char *k = p->params[i].key, *v = p->params[i].value;

		if (v == NULL)
			continue;
		buf_reset(&out);
		if (util_strcasecmp(k, "NOTIFY") == 0)
			(void)submit_parse_notify(v, &notify);
		else if (util_strcasecmp(k, "ORCPT") == 0)
			(void)submit_parse_orcpt(v, &out);
		else
			(void)submit_parse_xtext(v, &out);     /* ENVID, and any other */
	}
	buf_free(&out);
}

static void
fuzz_path(const char *args, const char *prefix, bool postmaster)
{
	struct submit_path p;
	char *copy = xstrdup(args);

	memset(&p, 0, sizeof(p));
	buf_init(&p.addr);
	if (submit_parse_path(copy, prefix, postmaster, &p) == 0)
		fuzz_params(&p);
	buf_free(&p.addr);
	free(copy);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *line = xstrndup((const char *)data, size), *verb, *args;
	struct buf box = BUF_INIT;
	size_t n = 0;
	bool utf8;

	(void)submit_parse_header_addrs((const char *)data, strnlen((const char *)data, size),
	    fuzz_addr_cb, &n);
	(void)submit_parse_mailbox(line, strlen(line), &box, &utf8);
	if (submit_parse_command(line, &verb, &args) == 0) {
		/* both prefixes whatever the verb: "MAIL"/"RCPT" are not the point */
		fuzz_path(args, "FROM:", false);
		fuzz_path(args, "TO:", true);
	}
	buf_free(&box);
	free(line);
	return 0;
}
