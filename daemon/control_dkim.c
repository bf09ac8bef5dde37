/*
 * control_dkim.c - `relayctl dkim`: the signing keys in force (domain,
 * selector, algorithm, key file) and the DNS TXT record each selector
 * needs, as a zone-file line (strings of at most 255 bytes) and as one
 * string in the JSON.  Reads the router's keys; never touches a file.
 */
#include "daemon/control_int.h"
#include "dkim/dkim.h"

#define RCTL_TXT_CHUNK 255      /* one <character-string> of a TXT record */

int
rctl_dkim(struct rctl *c)
{
	struct dkim_keys *k = sched_dkim(c->s);
	struct dkim_key_info info;
	struct buf txt = BUF_INIT;
	size_t i, n = dkim_keys_count(k), off;

	if (c->json)
		buf_puts(c->out, "{\"keys\":[");
	else if (n == 0)
		buf_puts(c->out, "no DKIM keys configured: mail is sent unsigned\n");
	for (i = 0; i < n; i++) {
		dkim_keys_info(k, i, &info);
		buf_reset(&txt);
		dkim_keys_txt(k, i, &txt);
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
			buf_putc(c->out, '}');
			continue;
		}
		buf_printf(c->out, "%s %s %s %u %s\n", info.domain, info.selector,
		    dkim_alg_name(info.alg), info.bits, info.path);
		buf_printf(c->out, "    %s._domainkey.%s. IN TXT (", info.selector, info.domain);
		for (off = 0; off < txt.len; off += RCTL_TXT_CHUNK)
			buf_printf(c->out, " \"%.*s\"", (int)(txt.len - off < RCTL_TXT_CHUNK ?
			    txt.len - off : RCTL_TXT_CHUNK), txt.data + off);
		buf_puts(c->out, " )\n");
	}
	if (c->json)
		buf_puts(c->out, "]}\n");
	buf_free(&txt);
	return 0;
}
