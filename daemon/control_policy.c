/*
 * control_policy.c - `relayctl policy DOMAIN`: the outbound TLS policy
 * relayd currently holds for a recipient domain, one section per policy
 * source, in the order of rctl_policy_sections[]: today DANE (the domain's
 * MX hosts with their DNSSEC status, and per MX host the last TLSA answer
 * and its records, as the router keeps them: router/router_dane.h).  Also
 * the policy's part of `relayctl hosts` and `queue show`: which policy
 * applied to a host and why it refused one (router/router_sched_tls.c).
 *
 * Adding a source (MTA-STS, TLSRPT): one section function of type
 * rctl_policy_fn that shows what that source holds for the domain (read
 * through a router.h accessor, as sched_dane()), defined in the source's
 * slot at the end of this file and declared in its slot above the table,
 * and its row in its slot of rctl_policy_sections[] (the order is the
 * output's: DANE, MTA-STS, TLSRPT).  Nothing else here changes, and the
 * slots are apart so that the two additions merge without conflict.
 *
 * Owns: nothing beyond one request.
 * Never: looks anything up; it shows what the router holds.
 */
#include "daemon/control_int.h"
#include "common/util.h"
#include "mtasts/mtasts.h"
#include "tlsrpt/tlsrpt.h"

#include <stdio.h>
#include <string.h>

/*
 * One section.  With c->json it writes only its value (an object, or null
 * when it holds nothing for domain): the caller has written `"key":`.  In
 * text it writes its lines, the first one starting with its name ("dane:"),
 * the others indented; or a single "NAME: nothing held ..." line.  Returns
 * whether it held anything for domain (none holding anything: exit 1).
 */
typedef bool rctl_policy_fn(struct rctl *c, const char *domain);

static rctl_policy_fn rctl_policy_dane;
static rctl_policy_fn rctl_policy_mta_sts;

static rctl_policy_fn rctl_policy_tlsrpt;

static const struct rctl_policy_section {
	const char *key;                /* the JSON key, and the text's heading */
	rctl_policy_fn *show;
} rctl_policy_sections[] = {
	{ "dane", rctl_policy_dane },
	{ "mta_sts", rctl_policy_mta_sts },

	{ "tlsrpt", rctl_policy_tlsrpt },

};

/* ------------------------------------------------------------------ */
/* DANE */

static void
rctl_policy_hex(struct buf *b, const unsigned char *p, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		buf_putc(b, hex[p[i] >> 4]);
		buf_putc(b, hex[p[i] & 0x0f]);
	}
}

static void
rctl_policy_dane_host(struct rctl *c, const struct dane_mx *mx, const struct dane_host *h,
    bool first)
{
	struct buf *b = c->out;
	size_t i;

	if (c->json) {
		buf_puts(b, first ? "{\"host\":" : ",{\"host\":");
		json_str(b, mx->host);
		buf_printf(b, ",\"pref\":%u,\"dnssec\":\"%s\",\"tlsa\":", mx->pref,
		    mx->secure ? "secure" : "insecure");
		json_str(b, h != NULL ? dane_tlsa_seen_name(h->state) : NULL);
		buf_puts(b, ",\"looked_up\":");
		rctl_json_time(c, b, h != NULL ? h->looked_up_ms : 0);
		buf_puts(b, ",\"error\":");
		json_str(b, h != NULL && h->error[0] != '\0' ? h->error : NULL);
		buf_puts(b, ",\"records\":[");
		for (i = 0; h != NULL && i < h->ntlsa; i++) {
			const struct tlsa_rr *rr = &h->tlsa[i];

			buf_printf(b, "%s{\"usage\":%u,\"selector\":%u,\"mtype\":%u,\"data\":\"",
			    i ? "," : "", rr->usage, rr->selector, rr->mtype);
			rctl_policy_hex(b, rr->data, rr->len);
			buf_printf(b, "\",\"usable\":%s}", tlsa_usable(rr) ? "true" : "false");
		}
		buf_puts(b, "]}");
		return;
	}
	buf_printf(b, "  mx %u ", mx->pref);
	rctl_text(b, mx->host);
	buf_printf(b, " dnssec=%s tlsa=%s", mx->secure ? "secure" : "insecure",
	    h != NULL ? dane_tlsa_seen_name(h->state) : "unknown");
	if (h != NULL)
		buf_printf(b, " looked_up=%s", rctl_ctime(c, h->looked_up_ms));
	if (h != NULL && h->error[0] != '\0') {
		buf_puts(b, " error=\"");
		rctl_text(b, h->error);
		buf_putc(b, '"');
	}
	buf_putc(b, '\n');
	for (i = 0; h != NULL && i < h->ntlsa; i++) {
		const struct tlsa_rr *rr = &h->tlsa[i];

		buf_printf(b, "    TLSA %u %u %u ", rr->usage, rr->selector, rr->mtype);
		rctl_policy_hex(b, rr->data, rr->len);
		buf_puts(b, tlsa_usable(rr) ? " usable\n" : " unusable\n");
	}
}

/* The MX hosts of domain as last resolved, each with its last TLSA answer. */
static bool
rctl_policy_dane(struct rctl *c, const char *domain)
{
	const struct dane_seen *t = sched_dane(c->s);
	const struct dane_domain *d = dane_seen_domain(t, domain);
	struct buf *b = c->out;
	size_t i;

	if (d == NULL) {
		buf_puts(b, c->json ? "null" : "dane: nothing held (no MX lookup for it in the last day)\n");
		return false;
	}
	if (c->json) {
		buf_puts(b, "{\"looked_up\":");
		rctl_json_time(c, b, d->looked_up_ms);
		buf_printf(b, ",\"dnssec\":%s,\"implicit_mx\":%s,\"mx\":[",
		    d->dnssec ? "true" : "false", d->implicit ? "true" : "false");
	} else
		buf_printf(b, "dane: MX looked up %s, router.dnssec %s%s\n",
		    rctl_ctime(c, d->looked_up_ms), d->dnssec ? "on" : "off",
		    d->implicit ? ", no MX records (the domain itself)" : "");
	for (i = 0; i < d->nmx; i++)
		rctl_policy_dane_host(c, &d->mx[i], dane_seen_host(t, d->mx[i].host), i == 0);
	if (c->json)
		buf_puts(b, "]}");
	return true;
}

/* ------------------------------------------------------------------ */
/* The policy in relayctl hosts and queue show. */

void
rctl_policy_host(struct rctl *c, const struct health_host *h)
{
	buf_puts(c->out, ",\"policy\":");
	json_str(c->out, h->policy[0] != '\0' ? h->policy : NULL);
	buf_puts(c->out, ",\"refused\":");
	json_str(c->out, h->refused[0] != '\0' ? h->refused : NULL);
	buf_puts(c->out, ",\"refused_at\":");
	rctl_json_time(c, c->out, h->refused[0] != '\0' ? h->refused_ms : 0);
}

void
rctl_policy_hosts(struct rctl *c, const struct health_host *const *v, size_t n)
{
	struct buf *b = c->out;
	bool head = false;
	size_t i;

	for (i = 0; i < n; i++) {
		const struct health_host *h = v[i];

		if (h->policy[0] == '\0')
			continue;
		if (!head)
			buf_printf(b, "\n%-32s %-24s %-12s %s\n", "HOST", "ADDRESS", "TLS POLICY",
			    "REFUSED");
		head = true;
		rctl_text_pad(b, h->name[0] ? h->name : "-", 33);
		rctl_text_pad(b, h->addr, 25);
		rctl_text_pad(b, h->policy, 13);
		rctl_text(b, h->refused[0] != '\0' ? h->refused : NULL);
		buf_putc(b, '\n');
	}
}

struct rctl_policy_notes {
	struct rctl *c;
	size_t n;
};

static void
rctl_policy_note(void *arg, const struct sched_tls_view *v)
{
	struct rctl_policy_notes *pn = arg;
	struct rctl *c = pn->c;
	struct buf *b = c->out;

	if (c->json) {
		buf_puts(b, pn->n ? ",{\"time\":" : "{\"time\":");
		rctl_json_time(c, b, v->time_ms);
		buf_puts(b, ",\"host\":");
		json_str(b, v->host);
		buf_puts(b, ",\"ip\":");
		json_str(b, v->ip);
		buf_puts(b, ",\"policy\":");
		json_str(b, v->policy);
		buf_puts(b, ",\"refused\":");
		json_str(b, v->refused);
		buf_putc(b, '}');
	} else {
		buf_printf(b, "%-12s %s  ", "tls", rctl_ctime(c, v->time_ms));
		rctl_text(b, v->host);
		buf_putc(b, ' ');
		rctl_text(b, v->ip);
		buf_puts(b, " policy=");
		rctl_text(b, v->policy);
		if (v->refused != NULL) {
			buf_puts(b, " refused=\"");
			rctl_text(b, v->refused);
			buf_putc(b, '"');
		}
		buf_putc(b, '\n');
	}
	pn->n++;
}

void
rctl_policy_msg(struct rctl *c, const char *qid)
{
	struct rctl_policy_notes pn = { c, 0 };

	if (c->json)
		buf_puts(c->out, ",\"tls\":[");
	sched_msg_tls(c->s, qid, rctl_policy_note, &pn);
	if (c->json)
		buf_putc(c->out, ']');
}

/* ------------------------------------------------------------------ */

int
rctl_policy(struct rctl *c)
{
	const char *domain = c->pos[0];
	struct buf *b = c->out;
	bool held = false;
	size_t i;

	if (c->json) {
		buf_puts(b, "{\"domain\":");
		json_str(b, domain);
	} else {
		buf_puts(b, "domain ");
		rctl_text(b, domain);
		buf_putc(b, '\n');
	}
	for (i = 0; i < RELAY_ARRAY_LEN(rctl_policy_sections); i++) {
		if (c->json)
			buf_printf(b, ",\"%s\":", rctl_policy_sections[i].key);
		if (rctl_policy_sections[i].show(c, domain))
			held = true;
	}
	if (!held) {
		buf_reset(b);
		buf_printf(b, "nothing held for %s: relayd has not looked up its MX records in the "
		    "last day (mail routed to fixed hosts never is)", domain);
		return RELAY_ENOENT;
	}
	if (c->json)
		buf_puts(b, "}\n");
	return 0;
}

/* ------------------------------------------------------------------ */
/* MTA-STS */

/* The policy held for domain (cached, maybe expired) and its last check. */
static bool
rctl_policy_mta_sts(struct rctl *c, const char *domain)
{
	struct mtasts *m = sched_mtasts(c->s);
	const struct mtasts_policy *p;
	struct mtasts_held h;
	struct buf *b = c->out;
	size_t i;

	if (m == NULL || !mtasts_held(m, domain, &h)) {
		buf_puts(b, c->json ? "null" : "mta-sts: nothing held (no policy cached, no check "
		    "since start-up)\n");
		return false;
	}
	p = h.policy;
	if (c->json) {
		buf_puts(b, "{\"checked\":");
		rctl_json_time(c, b, h.checked_ms);
		buf_puts(b, ",\"failure\":");
		json_str(b, h.failure);
		buf_puts(b, ",\"error\":");
		json_str(b, h.reason[0] != '\0' ? h.reason : NULL);
		buf_puts(b, ",\"policy\":");
		if (p == NULL) {
			buf_puts(b, "null}");
			return true;
		}
		buf_puts(b, "{\"id\":");
		json_str(b, p->id);
		buf_puts(b, ",\"mode\":");
		json_str(b, mtasts_mode_name(p->mode));
		buf_printf(b, ",\"max_age\":%u,\"fetched\":", (unsigned)p->max_age);
		rctl_json_time(c, b, p->fetched_ms);
		buf_puts(b, ",\"expires\":");
		rctl_json_time(c, b, p->expires_ms);
		buf_puts(b, ",\"mx\":[");
		for (i = 0; i < p->nmx; i++) {
			if (i)
				buf_putc(b, ',');
			json_str(b, p->mx[i]);
		}
		buf_puts(b, "]}}");
		return true;
	}
	if (p != NULL) {
		buf_puts(b, "mta-sts: policy id=");
		rctl_text(b, p->id);
		buf_printf(b, " mode=%s max_age=%u fetched=%s", mtasts_mode_name(p->mode),
		    (unsigned)p->max_age, rctl_ctime(c, p->fetched_ms));
		buf_printf(b, " expires=%s\n", rctl_ctime(c, p->expires_ms));
		for (i = 0; i < p->nmx; i++) {
			buf_puts(b, "  mx ");
			rctl_text(b, p->mx[i]);
			buf_putc(b, '\n');
		}
	} else
		buf_puts(b, "mta-sts: no policy\n");
	if (h.checked_ms != 0) {
		buf_printf(b, "  checked %s", rctl_ctime(c, h.checked_ms));
		if (h.failure != NULL)
			buf_printf(b, " failure=%s", h.failure);
		if (h.reason[0] != '\0') {
			buf_puts(b, " note=\"");
			rctl_text(b, h.reason);
			buf_putc(b, '"');
		}
		buf_putc(b, '\n');
	}
	return true;
}

/* ------------------------------------------------------------------ */
/* TLSRPT: its section function (rctl_policy_tlsrpt) goes here. */

/* Where TLS reports for domain go (its last _smtp._tls answer, within the
 * hour) and today's counts (since the last report), by policy type. */
static bool
rctl_policy_tlsrpt(struct rctl *c, const char *domain)
{
	struct tlsrpt *t = sched_tlsrpt(c->s);
	struct tlsrpt_view v;
	struct buf *b = c->out;
	int ty;

	if (t == NULL)
		memset(&v, 0, sizeof(v));
	else
		tlsrpt_view(t, domain, util_now_ms(), &v);
	if (!v.looked_up && !v.counted) {
		buf_puts(b, c->json ? "null" : "tlsrpt: nothing held (no _smtp._tls lookup in the "
		    "last hour, no session counted today)\n");
		return false;
	}
	if (c->json) {
		buf_puts(b, "{\"looked_up\":");
		rctl_json_time(c, b, v.looked_up ? v.looked_up_ms : 0);
		buf_puts(b, ",\"rua\":[");
		if (v.rua != NULL) {
			const char *p = v.rua, *e;

			for (; *p != '\0'; p = *e != '\0' ? e + 1 : e) {
				char *one;

				e = p + strcspn(p, ",");
				one = xstrndup(p, (size_t)(e - p));
				if (p != v.rua)
					buf_putc(b, ',');
				json_str(b, one);
				free(one);
			}
		}
		buf_puts(b, "],\"today\":{");
		for (ty = 0; ty < 3; ty++) {
			buf_printf(b, "%s\"%s\":{\"successful\":%llu,\"failed\":%llu}",
			    ty > 0 ? "," : "", tlsrpt_ptype_name((enum tlsrpt_ptype)ty),
			    (unsigned long long)v.ok[ty], (unsigned long long)v.failed[ty]);
		}
		buf_puts(b, "}}");
		return true;
	}
	buf_puts(b, "tlsrpt: ");
	if (!v.looked_up)
		buf_puts(b, "_smtp._tls not looked up in the last hour\n");
	else if (v.rua == NULL)
		buf_printf(b, "no _smtp._tls record (looked up %s)\n", rctl_ctime(c, v.looked_up_ms));
	else {
		buf_puts(b, "rua ");
		rctl_text(b, v.rua);
		buf_printf(b, " (looked up %s)\n", rctl_ctime(c, v.looked_up_ms));
	}
	for (ty = 0; ty < 3; ty++)
		if (v.ok[ty] + v.failed[ty] > 0)
			buf_printf(b, "  today %s: %llu successful, %llu failed\n",
			    tlsrpt_ptype_name((enum tlsrpt_ptype)ty), (unsigned long long)v.ok[ty],
			    (unsigned long long)v.failed[ty]);
	return true;
}
