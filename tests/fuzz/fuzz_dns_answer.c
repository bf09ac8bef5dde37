/*
 * fuzz_dns_answer.c - fuzz target: the resolver's answer parsers
 * (dns/dns_answer.c) on a raw DNS message as c-ares hands it over: the
 * answer section walk (names, compression pointers, CNAME, MX, A, AAAA,
 * TTLs), the CNAME chain from the name asked for, the negative-answer TTL
 * from the authority section's SOA, and the TXT records (DKIM keys) joined
 * per record.
 *
 * Input: one DNS message (header, question, sections).  Seeds:
 * tests/fuzz/corpus/dns_answer/ (MX, TXT, A, AAAA, CNAME chains,
 * NXDOMAIN with SOA, compressed names).
 */
#include "fuzz.h"

#include <limits.h>
#include <stdlib.h>

#include "dns/dns_int.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dns_answer an;
	const char *end;
	unsigned links;
	char **txt;
	size_t ntxt, i;

	if (size > INT_MAX)
		return 0;
	if (dns_parse_answer(data, (int)size, &an) == 0) {
		end = dns_chain_end(&an, "example.net", &links);
		(void)end;
		dns_answer_free(&an);
	}
	(void)dns_neg_ttl(data, (int)size);
	if (dns_parse_txt(data, (int)size, &txt, &ntxt) == 0) {
		for (i = 0; i < ntxt; i++)
			free(txt[i]);
		free(txt);
	}
	return 0;
}
