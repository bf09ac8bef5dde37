/*
 * router_sched_tls.c - (scheduler) what the outbound TLS policy did with
 * each exchanger address: the policy that applied ("dane", "dane-unauth",
 * or deliver.tls's value when no published policy did) and, when it refused
 * the address, why ("4.7.5 dnssec-invalid ...": a bogus TLSA answer before
 * any connection; "4.7.5 validation-failure ...": a handshake or a DANE
 * mismatch; a missing or refused STARTTLS).  Kept in the address's health
 * entry (relayctl hosts) and in a few notes per message (relayctl queue
 * show), both in memory only.
 *
 * Owns: the messages' notes (struct sched_tls_note), freed with the message.
 * Never: decides anything; tlspolicy/ and deliver/ did.
 */
#include "router/router_sched_int.h"
#include "common/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The policy's name: tlspolicy/'s when it set one, else deliver.tls's value.
 * (A refusal before connecting is DANE's, a failed TLSA lookup, or
 * MTA-STS's, an MX matching no mx pattern.) */
static const char *
sched_tls_policy_name(const struct sched_job *job)
{
	if (job->at->tlspol.refuse)
		return job->at->tlspol.source != NULL ? job->at->tlspol.source : "dane";
	if (job->at->tlspol.policy != DELIVER_POLICY_CONF)
		return tlspolicy_name(&job->at->tlspol);
	return conf_tls_name(job->route->r.tls);
}

/* Note for sm: host/ip under policy, refused (NULL: not refused). */
static void
sched_tls_note(struct sched_msg *sm, const char *host, const char *ip, const char *policy,
    const char *refused, bool keep_refused, uint64_t now)
{
	struct sched_tls_note *n = NULL;
	size_t i;

	for (i = 0; i < sm->ntls; i++)
		if (strcmp(sm->tls[i].ip, ip) == 0 && util_strcasecmp(sm->tls[i].host, host) == 0)
			n = &sm->tls[i];
	if (n == NULL) {
		if (sm->ntls == SCHED_TLS_NOTES) {
			free(sm->tls[0].host);
			free(sm->tls[0].refused);
			memmove(&sm->tls[0], &sm->tls[1], (SCHED_TLS_NOTES - 1) * sizeof(*sm->tls));
			sm->ntls--;
		} else      /* grown one at a time: most messages see one or two hosts */
			sm->tls = xrealloc(sm->tls, (sm->ntls + 1) * sizeof(*sm->tls));
		n = &sm->tls[sm->ntls++];
		memset(n, 0, sizeof(*n));
		n->host = xstrdup(host);
		snprintf(n->ip, sizeof(n->ip), "%s", ip);
	}
	snprintf(n->policy, sizeof(n->policy), "%s", policy);
	n->time_ms = now;
	if (keep_refused)
		return;
	free(n->refused);
	n->refused = refused != NULL ? xstrdup(refused) : NULL;
}

void
sched_tls_refused(struct sched *s, struct sched_job *job, const struct dns_target *tg)
{
	const char *policy = sched_tls_policy_name(job);
	char why[640], key[HEALTH_ADDR_MAX], ip[64];
	uint64_t now = sched_now(s);
	size_t i;

	snprintf(why, sizeof(why), "%s %s %s", job->at->tlspol.status,
	    job->at->tlspol.result != NULL ? job->at->tlspol.result : "-", job->at->tlspol.reason);
	for (i = 0; i < tg->naddrs; i++) {
		health_addr_key((const struct sockaddr *)&tg->addrs[i].ss, key, sizeof(key));
		health_host_policy(health_get(s->health, key, tg->host), policy, why, false, now);
		sched_addr_ip(&tg->addrs[i], ip, sizeof(ip));
		sched_tls_note(job->sm, tg->host, ip, policy, why, false, now);
	}
}

void
sched_tls_attempt(struct sched *s, struct sched_job *job, struct health_host *h,
    const char *host, const char *ip, const struct deliver_result *res)
{
	const char *policy = sched_tls_policy_name(job);
	bool refused = res->status == DELIVER_HOST_FAIL && res->io_err == IO_ERR_TLS;
	bool keep = !refused && res->tls[0] == '\0';    /* it never got as far as TLS */
	uint64_t now = sched_now(s);
	char why[640];

	snprintf(why, sizeof(why), "%s%s%s %s", res->status_code[0] ? res->status_code : "4.7.5",
	    res->tls_result[0] ? " " : "", res->tls_result, res->reply);
	health_host_policy(h, policy, refused ? why : NULL, keep, now);
	sched_tls_note(job->sm, host, ip, policy, refused ? why : NULL, keep, now);
}

void
sched_tls_notes_free(struct sched_msg *sm)
{
	size_t i;

	for (i = 0; i < sm->ntls; i++) {
		free(sm->tls[i].host);
		free(sm->tls[i].refused);
	}
	free(sm->tls);
	sm->tls = NULL;
	sm->ntls = 0;
}

void
sched_msg_tls(struct sched *s, const char *qid,
    void (*cb)(void *arg, const struct sched_tls_view *v), void *arg)
{
	struct sched_msg *sm = sched_msg_lookup(s, qid);
	struct sched_tls_view v;
	size_t i;

	for (i = 0; sm != NULL && i < sm->ntls; i++) {
		v.host = sm->tls[i].host;
		v.ip = sm->tls[i].ip;
		v.policy = sm->tls[i].policy;
		v.refused = sm->tls[i].refused;
		v.time_ms = sm->tls[i].time_ms;
		cb(arg, &v);
	}
}
