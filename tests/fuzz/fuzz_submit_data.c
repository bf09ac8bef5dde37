/*
 * fuzz_submit_data.c - fuzz target: the DATA line machine
 * (submit/submit_data.c) as a session drives it: the message text arrives
 * as lines cut the way io_getline() cuts them (at LF, at most
 * SUBMIT_TEXT_LINE_MAX + 1 bytes, a longer line is reported as discarded,
 * a last line without LF is never handed over),
 * through submit_data_line() until the end of data, then
 * submit_data_finish(); the output goes through the write callback.
 *
 * Input: byte 0 picks max_size (small, so that SUBMIT_DATA_TOO_BIG is
 * reached) and whether From: is collected; the rest is the raw DATA stream.
 * Seeds: tests/fuzz/corpus/submit_data/ (real messages, smuggling
 * attempts).
 */
#include "fuzz.h"

#include <string.h>

#include "common/buf.h"
#include "submit/submit_int.h"

/* the longest line (LF included) the io hands over in DATA (submit_session.c) */
#define FUZZ_LINE_MAX (SUBMIT_TEXT_LINE_MAX + 1)

static int
fuzz_write(void *arg, const void *p, size_t len)
{
	uint64_t *total = arg;

	/* touch every byte: ASan checks that the chunk is real memory */
	for (size_t i = 0; i < len; i++)
		*total += ((const unsigned char *)p)[i];
	return len % 9973 == 1 ? -1 : 0;       /* now and then a failing disk */
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct submit_data d;
	uint64_t total = 0, max_size;
	const char *p, *end, *nl;
	size_t len;
	bool collect;

	if (size < 1)
		return 0;
	max_size = (uint64_t)(data[0] & 0x7f) * 64;     /* 0 = no limit */
	collect = (data[0] & 0x80) != 0;
	p = (const char *)data + 1;
	end = (const char *)data + size;

	submit_data_init(&d);
	submit_data_begin(&d, max_size, collect,
	    "Received: from client.test ([127.0.0.1]) by relay.test; Sun, 6 Dec 2026 06:00:00 +0000\r\n",
	    "Date: Sun, 6 Dec 2026 06:00:00 +0000\r\n", "Message-ID: <fuzz@relay.test>\r\n",
	    fuzz_write, &total);
	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			break;          /* the io waits for the rest of the line */
		len = (size_t)(nl - p) + 1;
		if (len > FUZZ_LINE_MAX) {
			/* io discards an over-long line up to its LF */
			submit_data_long_line(&d);
			p += len;
			continue;
		}
		if (submit_data_line(&d, p, len) == 1)
			break;
		p += len;
	}
	submit_data_finish(&d);
	submit_data_free(&d);
	return 0;
}
