/*
 * tlspolicy.h - the tlspolicy module's one public face: which TLS a
 * delivery to one exchanger must have beyond deliver.tls, and why an
 * exchanger must not be used at all.  Today DANE (RFC 7672, RFC 7671) from
 * what the resolver found (dns/, router.dnssec); MTA-STS (RFC 8461) is the
 * next source, and DANE wins over it where both exist (RFC 8461 2).  Each
 * refusal carries an RFC 8460 result type, so that TLSRPT can count it.
 *
 * The router asks once per exchanger (tlspolicy_for_target), puts the
 * answer into the deliver request, and deliver/ enforces it.  Pure: no
 * I/O, no clock, no state between calls.
 *
 * Ownership: a struct tlspolicy owns its tlsa[] copies until
 * tlspolicy_clear(); the deliver request borrows them meanwhile.
 */
#ifndef RELAY_TLSPOLICY_H
#define RELAY_TLSPOLICY_H

#include <stdbool.h>
#include <stddef.h>

#include "common/tlsa.h"
#include "conf/conf.h"
#include "deliver/deliver.h"
#include "dns/dns.h"

struct tlspolicy {
	enum deliver_policy policy; /* what deliver enforces besides req->tls */
	struct tlsa_rr *tlsa;       /* DELIVER_POLICY_DANE: the usable records (owned) */
	size_t ntlsa;
	size_t nunusable;           /* validated records left out (PKIX-TA/EE, unknown types) */
	bool refuse;                /* do not connect to this exchanger: status, reason, result */
	char status[16];            /* "4.7.5" */
	char reason[256];
	const char *result;         /* RFC 8460 result type of a refusal, or NULL */
};

/*
 * The policy for exchanger tg when the configured (or routed) TLS is tls:
 *  - TLSA lookup failed (bogus, timeout): refuse, 4.7.5, "dnssec-invalid";
 *  - validated TLSA records, some usable (DANE-TA(2), DANE-EE(3), known
 *    selector and matching type, right digest length): DELIVER_POLICY_DANE
 *    with those records;
 *  - validated TLSA records, none usable: DELIVER_POLICY_DANE_UNAUTH
 *    (TLS mandatory, not authenticated; RFC 7672 2.2);
 *  - anything else, or tls "none" (an explicit choice for that route):
 *    DELIVER_POLICY_CONF, as without DANE.
 * out is overwritten (clear it first if it held records).
 */
void tlspolicy_for_target(enum conf_tls tls, const struct dns_target *tg, struct tlspolicy *out);
/* Free out's records and reset it to DELIVER_POLICY_CONF. */
void tlspolicy_clear(struct tlspolicy *p);
/* A name for logs: "dane", "dane-unauth", "conf". */
const char *tlspolicy_name(const struct tlspolicy *p);

#endif
