/*
 * router_sched_tlsrpt.c - what the scheduler tells tlsrpt/ (RFC 8460): for
 * each attempt with a recipient domain's exchanger, the policy that applied
 * (DANE's TLSA records, or none) and whether the TLS session succeeded or
 * which result type it failed with.
 *
 * Counted: a session that ran (a success if TLS was negotiated; without a
 * policy, a plaintext session counts as starttls-not-supported; under
 * MTA-STS testing, what enforce would have refused counts as that failure),
 * a HOST_FAIL that deliver/ gave an RFC 8460 result type, and an exchanger
 * tlspolicy/ refused before connecting.  The policy: DANE's (tlsa, the
 * exchanger's TLSA records) or MTA-STS's (sts, the policy's lines and mx
 * patterns); a domain whose MTA-STS policy could not be fetched counts its
 * sessions as sts failures of that kind (sts-policy-fetch-error ...).  Not counted: routes with their
 * own hosts (smarthosts are not the domain's exchangers), tls = none (our
 * own choice), and attempts that never got to TLS (refused connections).
 *
 * Owns: nothing.  Never: changes what is delivered or how.
 */
#include "router/router_sched_int.h"
#include "tlsrpt/tlsrpt.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/util.h"

/* The MTA-STS policy as its lines (policy-string) and its mx patterns,
 * '\n'-joined (mx-host). */
static char **
sched_sts_strings(const struct mtasts_policy *p, size_t *n, struct buf *mx)
{
	char **v = xcalloc(p->nmx + 4, sizeof(*v));
	struct buf b = BUF_INIT;
	size_t i, k = 0;

	buf_puts(&b, "version: STSv1");
	v[k++] = buf_steal(&b);
	buf_printf(&b, "mode: %s", mtasts_mode_name(p->mode));
	v[k++] = buf_steal(&b);
	for (i = 0; i < p->nmx; i++) {
		buf_printf(&b, "mx: %s", p->mx[i]);
		v[k++] = buf_steal(&b);
		buf_printf(mx, "%s%s", i > 0 ? "\n" : "", p->mx[i]);
	}
	buf_printf(&b, "max_age: %u", p->max_age);
	v[k++] = buf_steal(&b);
	*n = k;
	return v;
}

/* TLSA records in presentation form, "3 1 1 ABCD...", for policy-string. */
static char **
sched_tlsa_strings(const struct dns_target *tg)
{
	static const char hex[] = "0123456789ABCDEF";
	char **v = xcalloc(tg->ntlsa + 1, sizeof(*v));
	struct buf b = BUF_INIT;
	size_t i, k;

	for (i = 0; i < tg->ntlsa; i++) {
		const struct tlsa_rr *rr = &tg->tlsa[i];

		buf_printf(&b, "%u %u %u ", rr->usage, rr->selector, rr->mtype);
		for (k = 0; k < rr->len; k++) {
			buf_putc(&b, hex[rr->data[k] >> 4]);
			buf_putc(&b, hex[rr->data[k] & 0x0f]);
		}
		v[i] = buf_steal(&b);
	}
	return v;
}

void
sched_tlsrpt_session(struct sched *s, struct sched_job *job, const struct dns_target *tg,
    const struct deliver_result *res, const char *ip)
{
	struct tlsrpt_session ev;
	struct buf mx = BUF_INIT;
	char **strings = NULL;
	size_t i, nstrings = 0;
	bool sts;

	if (s->tlsrpt == NULL || job->route->r.nhosts > 0 || job->route->r.tls == CONF_TLS_NONE)
		return;
	memset(&ev, 0, sizeof(ev));
	ev.domain = job->route->r.dest;
	ev.receiving_mx = tg->host;
	ev.receiving_ip = ip != NULL && ip[0] != '\0' ? ip : NULL;
	sts = job->at->tlspol.source != NULL ? strcmp(job->at->tlspol.source, "mta-sts") == 0 :
	    job->at->has_sts && job->at->sts.mode != MTASTS_MODE_NONE;
	if (sts && job->at->has_sts) {
		ev.type = TLSRPT_STS;
		strings = sched_sts_strings(&job->at->sts, &nstrings, &mx);
		ev.mx_host = buf_cstr(&mx);
	} else if (job->at->tlspol.refuse || job->at->tlspol.policy != DELIVER_POLICY_CONF) {
		ev.type = TLSRPT_TLSA;
		ev.mx_host = tg->host;
		strings = sched_tlsa_strings(tg);
		nstrings = tg->ntlsa;
	} else if (job->at->sts_failure[0] != '\0') {
		/* the domain announces MTA-STS, but its policy could not be had:
		 * that failure stands for every session */
		ev.type = TLSRPT_STS;
		ev.result = job->at->sts_failure;
	}
	ev.strings = (const char *const *)strings;
	ev.nstrings = nstrings;
	if (res != NULL && res->status == DELIVER_HOST_FAIL && res->tls_result[0] == '\0')
		goto out;       /* no TLS session: a connection refused, a timeout ... */
	if (ev.result == NULL) {
		if (res == NULL)
			ev.result = job->at->tlspol.result;
		else if (res->tls_result[0] != '\0')
			ev.result = res->tls_result;    /* (testing: what enforce would refuse) */
		else if (job->at->tlspol.testing != NULL)
			ev.result = job->at->tlspol.testing;
		else if (res->tls[0] == '\0' || strcmp(res->tls, "none") == 0)
			ev.result = "starttls-not-supported";
	}
	if (ev.result != NULL && ev.result[0] == '\0')
		ev.result = "validation-failure";
	tlsrpt_session(s->tlsrpt, &ev, sched_now(s));
out:
	for (i = 0; strings != NULL && i < nstrings; i++)
		free(strings[i]);
	free(strings);
	buf_free(&mx);
}

struct tlsrpt *
sched_tlsrpt(struct sched *s)
{
	return s->tlsrpt;
}
