/*
 * tlspolicy.c - the TLS policy for one exchanger (tlspolicy.h): DANE from
 * the validated TLSA records the resolver kept (RFC 7672 2.2, 3.1), then
 * MTA-STS from the domain's policy (RFC 8461 4).
 *
 * Owns: the usable-record copies in a struct tlspolicy.
 * Must never: do I/O or look anything up (dns/ and mtasts/ did), or weaken
 * the configured TLS (DANE and MTA-STS only add requirements, "none" aside).
 */
#include "tlspolicy/tlspolicy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

void
tlspolicy_clear(struct tlspolicy *p)
{
	tlsa_free_all(p->tlsa, p->ntlsa);
	memset(p, 0, sizeof(*p));
	p->policy = DELIVER_POLICY_CONF;
}

void
tlspolicy_for_target(enum conf_tls tls, const struct dns_target *tg, struct tlspolicy *out)
{
	size_t i, n = 0;

	memset(out, 0, sizeof(*out));
	out->policy = DELIVER_POLICY_CONF;
	if (tls == CONF_TLS_NONE)
		return;
	switch (tg->tlsa_state) {
	case DNS_TLSA_NONE:
		return;
	case DNS_TLSA_FAILED:
		out->refuse = true;
		out->source = "dane";
		out->result = "dnssec-invalid";
		snprintf(out->status, sizeof(out->status), "4.7.5");
		snprintf(out->reason, sizeof(out->reason), "%s", tg->tlsa_error[0] != '\0' ?
		    tg->tlsa_error : "TLSA lookup failed");
		return;
	case DNS_TLSA_SECURE:
		break;
	}
	for (i = 0; i < tg->ntlsa; i++)
		if (tlsa_usable(&tg->tlsa[i]))
			n++;
	out->nunusable = tg->ntlsa - n;
	out->source = "dane";
	if (n == 0) {
		out->policy = DELIVER_POLICY_DANE_UNAUTH;
		return;
	}
	out->tlsa = xcalloc(n, sizeof(*out->tlsa));
	for (i = 0; i < tg->ntlsa; i++) {
		if (!tlsa_usable(&tg->tlsa[i]))
			continue;
		out->tlsa[out->ntlsa] = tg->tlsa[i];
		out->tlsa[out->ntlsa].data = xmalloc(tg->tlsa[i].len);
		memcpy(out->tlsa[out->ntlsa].data, tg->tlsa[i].data, tg->tlsa[i].len);
		out->ntlsa++;
	}
	out->policy = DELIVER_POLICY_DANE;
}

const char *
tlspolicy_name(const struct tlspolicy *p)
{
	return deliver_policy_name(p->policy);
}

void
tlspolicy_apply_sts(enum conf_tls tls, const struct mtasts_policy *sts, const char *host,
    struct tlspolicy *p)
{
	bool match;

	if (sts == NULL || sts->mode == MTASTS_MODE_NONE || tls == CONF_TLS_NONE || p->refuse ||
	    p->policy != DELIVER_POLICY_CONF)
		return;
	match = mtasts_mx_match(sts, host);
	p->source = "mta-sts";
	if (sts->mode == MTASTS_MODE_TESTING) {
		p->policy = DELIVER_POLICY_MTA_STS_TESTING;
		if (!match) {
			p->testing = "validation-failure";
			snprintf(p->reason, sizeof(p->reason),
			    "MX host %s matches no mx pattern of the MTA-STS policy (mode testing)",
			    host);
		}
		return;
	}
	if (!match) {
		p->refuse = true;
		p->result = "validation-failure";
		snprintf(p->status, sizeof(p->status), "4.7.5");
		snprintf(p->reason, sizeof(p->reason),
		    "MX host %s matches no mx pattern of the MTA-STS policy", host);
		return;
	}
	p->policy = DELIVER_POLICY_MTA_STS;
}
