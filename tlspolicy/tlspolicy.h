/*
 * tlspolicy.h - the tlspolicy module's one public face: which TLS a
 * delivery to one exchanger must have beyond deliver.tls, and why an
 * exchanger must not be used at all: DANE (RFC 7672, RFC 7671) from what
 * the resolver found (dns/, router.dnssec), then MTA-STS (RFC 8461) from
 * the recipient domain's policy (mtasts/); DANE wins over MTA-STS where
 * both apply (RFC 8461 2).  Each refusal carries an RFC 8460 result type,
 * so that TLSRPT can count it.
 *
 * The router asks once per exchanger (tlspolicy_for_target, then
 * tlspolicy_apply_sts), puts the answer into the deliver request, and
 * deliver/ enforces it.  Pure: no I/O, no clock, no state between calls.
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
#include "mtasts/mtasts.h"

struct tlspolicy {
	enum deliver_policy policy; /* what deliver enforces besides req->tls */
	struct tlsa_rr *tlsa;       /* DELIVER_POLICY_DANE: the usable records (owned) */
	size_t ntlsa;
	size_t nunusable;           /* validated records left out (PKIX-TA/EE, unknown types) */
	bool refuse;                /* do not connect to this exchanger: status, reason, result */
	char status[16];            /* "4.7.5" */
	char reason[256];
	const char *result;         /* RFC 8460 result type of a refusal, or NULL */
	const char *source;         /* whose refusal or requirement: "dane", "mta-sts", or NULL */
	const char *testing;        /* MTA-STS testing: the RFC 8460 result type enforce would
	                               have refused this exchanger with (reason says why), or NULL */
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
/*
 * MTA-STS (RFC 8461 4) for the exchanger named host, on top of what
 * tlspolicy_for_target decided; sts is the recipient domain's policy, or
 * NULL.  Nothing changes when there is no policy, its mode is none, tls is
 * "none" (an explicit choice for that route) or DANE already decided
 * (a refusal, or a policy other than DELIVER_POLICY_CONF: DANE wins).
 *  - enforce, host matches an mx pattern: DELIVER_POLICY_MTA_STS (TLS,
 *    the certificate checked against host through the CA store);
 *  - enforce, no pattern matches: refuse, 4.7.5, "validation-failure";
 *  - testing: DELIVER_POLICY_MTA_STS_TESTING (delivered as without it, a
 *    failed certificate check reported); no pattern matches: testing set.
 */
void tlspolicy_apply_sts(enum conf_tls tls, const struct mtasts_policy *sts, const char *host,
    struct tlspolicy *p);
/* Free out's records and reset it to DELIVER_POLICY_CONF. */
void tlspolicy_clear(struct tlspolicy *p);
/* A name for logs: "dane", "dane-unauth", "mta-sts", "mta-sts-testing", "conf". */
const char *tlspolicy_name(const struct tlspolicy *p);

#endif
