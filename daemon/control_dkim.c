/*
 * control_dkim.c - `relayctl dkim`: the signing keys in force (domain,
 * selector, algorithm, key file) and the DNS TXT record each selector
 * needs, as a zone-file line (strings of at most 255 bytes) and as one
 * string in the JSON.  Reads the router's keys; never touches a file.
 * With --check it looks the records up through the router's resolver and
 * says per selector whether what is published matches the key: ok,
 * mismatch (p= differs), missing (NXDOMAIN/NODATA), error (temporary);
 * the answer waits for every lookup (struct rctl_check).
 */
#include "daemon/control_int.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "dkim/dkim.h"
#include "dns/dns.h"

#define RCTL_TXT_CHUNK 255      /* one <character-string> of a TXT record */

/* One selector being checked. */
struct rctl_check_key {
	struct rctl_check *k;
	struct dns_query *q;    /* while looking */
	char *p;                /* the key's p= value */
	const char *verdict;    /* "ok", "mismatch", "missing", "error" */
	char *listing;          /* its text lines, or its JSON object without the '}' */
};

/* relayctl dkim --check: the lookups of one request. */
struct rctl_check {
	struct control_later *later;
	bool json;
	struct rctl_check_key *keys;
	size_t n, left;
};

/* The value of tag in a tag list (RFC 6376 3.2), whitespace dropped, into out. */
static bool
rctl_dkim_tag(const char *rec, const char *tag, struct buf *out)
{
	const char *s = rec, *e, *eq, *a, *b;
	size_t tl = strlen(tag);

	buf_reset(out);
	for (; *s != '\0'; s = *e ? e + 1 : e) {
		if ((e = strchr(s, ';')) == NULL)
			e = s + strlen(s);
		if ((eq = memchr(s, '=', (size_t)(e - s))) == NULL)
			continue;
		for (a = s; a < eq && isspace((unsigned char)*a); a++)
			;
		for (b = eq; b > a && isspace((unsigned char)b[-1]); b--)
			;
		if ((size_t)(b - a) != tl || strncmp(a, tag, tl) != 0)
			continue;
		for (a = eq + 1; a < e; a++)
			if (!isspace((unsigned char)*a))
				buf_putc(out, *a);
		return true;
	}
	return false;
}

static void
rctl_check_free(struct rctl_check *k)
{
	size_t i;

	for (i = 0; i < k->n; i++) {
		dns_cancel(k->keys[i].q);
		free(k->keys[i].p);
		free(k->keys[i].listing);
	}
	free(k->keys);
	free(k);
}

/* control_later's cancel. */
static void
rctl_check_cancel(void *pending)
{
	rctl_check_free(pending);
}

static void
rctl_check_finish(struct rctl_check *k)
{
	struct control_later *later = k->later;
	struct buf out = BUF_INIT;
	size_t i;
	int rc = 0;

	if (k->json)
		buf_puts(&out, "{\"keys\":[");
	else if (k->n == 0)
		buf_puts(&out, "no DKIM keys configured: mail is sent unsigned\n");
	for (i = 0; i < k->n; i++) {
		struct rctl_check_key *ck = &k->keys[i];

		if (strcmp(ck->verdict, "ok") != 0)
			rc = 1;
		if (k->json)
			buf_printf(&out, "%s%s,\"check\":\"%s\"}", i ? "," : "", ck->listing,
			    ck->verdict);
		else
			buf_printf(&out, "%s    check: %s\n", ck->listing, ck->verdict);
	}
	if (k->json)
		buf_puts(&out, "]}\n");
	rctl_check_free(k);
	later->pending = NULL;
	later->done(later->arg, rc, &out);
	buf_free(&out);
}

static void
rctl_check_answer(void *arg, struct dns_result *res)
{
	struct rctl_check_key *ck = arg;
	struct buf p = BUF_INIT;
	size_t i;

	ck->q = NULL;
	if (res->err == RELAY_ETEMP)
		ck->verdict = "error";
	else if (res->err != 0 || res->ntxt == 0)
		ck->verdict = "missing";
	else {
		ck->verdict = "mismatch";
		for (i = 0; i < res->ntxt; i++)
			if (rctl_dkim_tag(res->txt[i], "p", &p) &&
			    strcmp(buf_cstr(&p), ck->p) == 0)
				ck->verdict = "ok";
	}
	buf_free(&p);
	dns_result_free(res);
	if (--ck->k->left == 0)
		rctl_check_finish(ck->k);
}

/* Start the lookups: the answer comes through c->later. */
static int
rctl_dkim_check(struct rctl *c, struct rctl_check *k)
{
	struct dns_resolver *dns = router_dns(c->r);
	struct buf name = BUF_INIT;
	struct dkim_key_info info;
	size_t i;

	if (dns == NULL || c->later == NULL) {
		rctl_check_free(k);
		buf_reset(c->out);
		buf_puts(c->out, "the resolver is not running");
		return RELAY_ECLOSED;
	}
	k->later = c->later;
	k->left = k->n;
	c->later->pending = k;
	c->later->cancel = rctl_check_cancel;
	if (k->n == 0) {
		rctl_check_finish(k);   /* no lookups: answer at once */
		return CONTROL_LATER;
	}
	for (i = 0; i < k->n; i++) {
		dkim_keys_info(sched_dkim(c->s), i, &info);
		buf_reset(&name);
		buf_printf(&name, "%s._domainkey.%s", info.selector, info.domain);
		k->keys[i].q = dns_lookup_txt(dns, buf_cstr(&name), rctl_check_answer, &k->keys[i]);
	}
	buf_free(&name);
	return CONTROL_LATER;
}

int
rctl_dkim(struct rctl *c)
{
	struct dkim_keys *k = sched_dkim(c->s);
	struct dkim_key_info info;
	struct rctl_check *kc = NULL;
	struct buf txt = BUF_INIT, p = BUF_INIT;
	size_t i, n = dkim_keys_count(k), off, start;

	if (c->check) {
		kc = xcalloc(1, sizeof(*kc));
		kc->json = c->json;
		kc->n = n;
		kc->keys = xcalloc(n + 1, sizeof(*kc->keys));
	}
	if (c->json)
		buf_puts(c->out, "{\"keys\":[");
	else if (n == 0)
		buf_puts(c->out, "no DKIM keys configured: mail is sent unsigned\n");
	for (i = 0; i < n; i++) {
		dkim_keys_info(k, i, &info);
		buf_reset(&txt);
		dkim_keys_txt(k, i, &txt);
		start = c->out->len;
		if (c->json) {
			buf_puts(c->out, i ? ",{\"domain\":" : "{\"domain\":");
			json_str(c->out, info.domain);
			buf_puts(c->out, ",\"selector\":");
			json_str(c->out, info.selector);
			buf_printf(c->out, ",\"algorithm\":\"%s\",\"bits\":%u,\"key\":",
			    dkim_alg_name(info.alg), info.bits);
			json_str(c->out, info.path);
			buf_printf(c->out, ",\"record\":\"%s._domainkey.%s\",\"txt\":",
			    info.selector, info.domain);
			json_str(c->out, buf_cstr(&txt));
		} else {
			buf_printf(c->out, "%s %s %s %u %s\n", info.domain, info.selector,
			    dkim_alg_name(info.alg), info.bits, info.path);
			buf_printf(c->out, "    %s._domainkey.%s. IN TXT (", info.selector,
			    info.domain);
			for (off = 0; off < txt.len; off += RCTL_TXT_CHUNK)
				buf_printf(c->out, " \"%.*s\"", (int)(txt.len - off < RCTL_TXT_CHUNK ?
				    txt.len - off : RCTL_TXT_CHUNK), txt.data + off);
			buf_puts(c->out, " )\n");
		}
		if (kc != NULL) {
			/* its listing without the JSON's leading ',' */
			if (c->json && i > 0)
				start++;
			kc->keys[i].k = kc;
			kc->keys[i].listing = xstrndup(c->out->data + start, c->out->len - start);
			rctl_dkim_tag(buf_cstr(&txt), "p", &p);
			kc->keys[i].p = xstrdup(buf_cstr(&p));
		} else if (c->json)
			buf_putc(c->out, '}');
	}
	if (c->json)
		buf_puts(c->out, "]}\n");
	buf_free(&txt);
	buf_free(&p);
	if (kc != NULL)
		return rctl_dkim_check(c, kc);
	return 0;
}
