/*
 * fuzz_deliver_reply.c - fuzz target: the outbound client's reply parser
 * and EHLO capability parser (deliver/deliver_proto.c) as a delivery
 * session uses them: lines (cut at LF, as io_getline() cuts them, at most
 * DELIVER_MAX_LINE) fed to deliver_reply_feed() until a reply is complete,
 * then the reply formatted for the log and the NDR, its enhanced status
 * read, and, for a 2xx reply, parsed as an EHLO answer; then the next reply.
 *
 * Input: the bytes a remote server sends.  Seeds:
 * tests/fuzz/corpus/deliver_reply/ (greetings, EHLO answers of Postfix,
 * Exim, Exchange, Gmail, multi-line errors).
 */
#include "fuzz.h"

#include <string.h>

#include "common/buf.h"
#include "deliver/deliver_int.h"

static void
fuzz_reply_done(struct deliver_reply *r)
{
	struct deliver_caps caps;
	struct buf out = BUF_INIT;
	char status[16];

	deliver_reply_format(r, &out);
	deliver_reply_status(r, status, sizeof(status));
	if (r->code / 100 == 2) {
		memset(&caps, 0, sizeof(caps));
		caps.esmtp = true;
		deliver_caps_parse(&caps, r);
	}
	buf_free(&out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct deliver_reply r;
	const char *p = (const char *)data, *end = p + size, *nl;
	size_t len;

	deliver_reply_init(&r);
	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			break;          /* the io waits for the rest of the line */
		len = (size_t)(nl - p) + 1;
		if (len > DELIVER_MAX_LINE) {
			p += len;       /* the session gives up on such a server */
			break;
		}
		switch (deliver_reply_feed(&r, p, len)) {
		case DELIVER_REPLY_MORE:
			break;
		case DELIVER_REPLY_DONE:
			fuzz_reply_done(&r);
			deliver_reply_reset(&r);
			break;
		case DELIVER_REPLY_BAD:
			deliver_reply_reset(&r);
			break;
		}
		p += len;
	}
	deliver_reply_free(&r);
	return 0;
}
