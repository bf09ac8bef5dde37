/*
 * fuzz_senders.c - fuzz target: the senders map (submit/submit_senders.c),
 * "login: address, address, @domain" per line, as submit.senders is read
 * at start and at reload (submit_senders_parse()), then asked whether a
 * login owns an address, as MAIL FROM and the From: check ask.
 *
 * Input: the map's text.  Seeds: tests/fuzz/corpus/senders/.
 */
#include "fuzz.h"

#include "common/buf.h"
#include "submit/submit_int.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const logins[] = { "alice", "bob", "Alice", "", "a" };
	static const char *const addrs[] = { "alice@example.org", "bob@Example.ORG",
	    "x@alice.test", "postmaster", "", "\"a b\"@example.org", "@example.org" };
	struct submit_senders *m = NULL;
	struct buf err = BUF_INIT;
	size_t i, j;

	if (submit_senders_parse("fuzz", (const char *)data, size, &m, &err) == 0) {
		(void)submit_senders_count(m);
		for (i = 0; i < sizeof(logins) / sizeof(logins[0]); i++)
			for (j = 0; j < sizeof(addrs) / sizeof(addrs[0]); j++)
				(void)submit_senders_owns(m, logins[i], addrs[j]);
		submit_senders_free(m);
	}
	buf_free(&err);
	return 0;
}
