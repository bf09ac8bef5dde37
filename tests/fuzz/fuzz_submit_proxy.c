/*
 * fuzz_submit_proxy.c - fuzz target: the PROXY protocol header parser
 * (submit/submit_proxy.c) as a session drives it: the octets a proxy sent,
 * seen whole and as every prefix (a header that arrives in pieces).  Checks
 * what the session relies on: a header found is no longer than the input
 * and parses alike on its own; "more" is never the answer once
 * SUBMIT_PROXY_MAX octets are in (the session would read for ever); a
 * refusal always has a reason.
 *
 * Input: the first octets of a connection.  Seeds: tests/fuzz/corpus/submit_proxy/.
 */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "submit/submit_int.h"

static int
fuzz_check(const char *p, size_t len)
{
	struct submit_proxy_hdr h, again;
	int r = submit_proxy_parse(p, len, &h);

	if (r == SUBMIT_PROXY_DONE) {
		if (h.len == 0 || h.len > len || h.len > SUBMIT_PROXY_MAX ||
		    (h.version != 1 && h.version != 2))
			abort();
		if (submit_proxy_parse(p, h.len, &again) != SUBMIT_PROXY_DONE || again.len != h.len)
			abort();
	} else if (r == SUBMIT_PROXY_BAD) {
		if (h.reason == NULL)
			abort();
	} else if (r != SUBMIT_PROXY_MORE || len >= SUBMIT_PROXY_MAX)
		abort();
	return r;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	size_t k;

	if (size > 2 * SUBMIT_PROXY_MAX)
		size = 2 * SUBMIT_PROXY_MAX;
	for (k = 0; k <= size; k++)
		if (fuzz_check(p, k) != SUBMIT_PROXY_MORE)
			break;          /* what the session sees: it stops there */
	(void)fuzz_check(p, size);
	return 0;
}
