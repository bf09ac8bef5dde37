/*
 * test_codec.c - the shared codecs from tables: base64 (the RFC 4648
 * section 10 vectors, binary data, and what a strict decoder refuses), the
 * UTF-8 validator (Markus Kuhn's classic cases: boundaries, overlongs,
 * surrogates, > U+10FFFF, truncated and stray bytes), and the JSON writer
 * (escapes, U+FFFD for bad bytes, commas, nesting).
 */
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/codec.h"
#include "common/json.h"
#include "common/util.h"
#include "tests/unit/check.h"

static void
test_base64(void)
{
	static const struct {
		const char *plain;
		size_t len;
		const char *enc;
	} good[] = {
		/* RFC 4648 section 10 */
		{ "", 0, "" },
		{ "f", 1, "Zg==" },
		{ "fo", 2, "Zm8=" },
		{ "foo", 3, "Zm9v" },
		{ "foob", 4, "Zm9vYg==" },
		{ "fooba", 5, "Zm9vYmE=" },
		{ "foobar", 6, "Zm9vYmFy" },
		/* binary: SASL PLAIN's NULs, all bits set, the '+' and '/' digits */
		{ "\0alice\0alicepw", 14, "AGFsaWNlAGFsaWNlcHc=" },
		{ "\0u\0p", 4, "AHUAcA==" },
		{ "\xff\xff\xff", 3, "////" },
		{ "\xfb\xef\xbe", 3, "++++" },
		{ "\0", 1, "AA==" },
		{ "\0\0", 2, "AAA=" },
		{ "alice@relay.test", 16, "YWxpY2VAcmVsYXkudGVzdA==" },
	};
	static const char *const bad[] = {
		"Zg=",          /* length not a multiple of 4 */
		"Zg",
		"Z",
		"Z===",         /* three pads */
		"====",
		"Zg==Zg==",     /* padding in the middle */
		"Zm=v",
		"Zm9!",         /* outside the alphabet */
		"Zm9-",         /* base64url is not base64 */
		" Zm9v",        /* white space: EVP_DecodeBlock would skip it */
		"Zm9v ",
		"Zm 9",
		"Zm9v\r\n",
		"Zm\0v",
	};
	struct buf b = BUF_INIT;
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(good); i++) {
		buf_reset(&b);
		buf_puts(&b, "x");                      /* encode appends */
		codec_base64_encode(&b, good[i].plain, good[i].len);
		CHECK_STR(buf_cstr(&b) + 1, good[i].enc);
		CHECK_INT(codec_base64_decode(good[i].enc, strlen(good[i].enc), &b), 0);
		CHECK_INT(b.len, good[i].len);
		CHECK_MSG(b.len == good[i].len && memcmp(buf_cstr(&b), good[i].plain, b.len) == 0,
		    "decode %s", good[i].enc);
		CHECK_INT(buf_cstr(&b)[b.len], '\0');
	}
	for (i = 0; i < RELAY_ARRAY_LEN(bad); i++) {
		size_t len = strlen(bad[i]);

		if (strcmp(bad[i], "Zm") == 0)          /* "Zm\0v": 4 bytes with a NUL */
			len = 4;
		buf_reset(&b);
		buf_puts(&b, "stale");
		CHECK_MSG(codec_base64_decode(bad[i], len, &b) == RELAY_EINVAL, "accepted \"%s\"", bad[i]);
		CHECK_INT(b.len, 0);
	}
	buf_free(&b);
}

static void
test_utf8(void)
{
	static const struct {
		const char *s;
		size_t len;     /* 0: strlen */
		int valid;
		size_t first;   /* codec_utf8_len of the first byte */
	} t[] = {
		{ "", 0, 1, 0 },
		{ "plain ascii", 0, 1, 1 },
		{ "\x7f", 0, 1, 1 },
		{ "\0", 1, 1, 1 },
		/* first and last of each length */
		{ "\xc2\x80", 0, 1, 2 },                /* U+0080 */
		{ "\xdf\xbf", 0, 1, 2 },                /* U+07FF */
		{ "\xe0\xa0\x80", 0, 1, 3 },            /* U+0800 */
		{ "\xef\xbf\xbf", 0, 1, 3 },            /* U+FFFF */
		{ "\xf0\x90\x80\x80", 0, 1, 4 },        /* U+10000 */
		{ "\xf4\x8f\xbf\xbf", 0, 1, 4 },        /* U+10FFFF */
		{ "\xed\x9f\xbf", 0, 1, 3 },            /* U+D7FF */
		{ "\xee\x80\x80", 0, 1, 3 },            /* U+E000 */
		{ "\xef\xbf\xbd", 0, 1, 3 },            /* U+FFFD */
		{ "gr\xc3\xbc\xc3\x9f dich \xe2\x82\xac \xf0\x9f\x93\xa7", 0, 1, 1 },
		/* overlongs */
		{ "\xc0\xaf", 0, 0, 0 },                /* '/' in 2 */
		{ "\xc1\xbf", 0, 0, 0 },
		{ "\xe0\x80\xaf", 0, 0, 0 },            /* '/' in 3 */
		{ "\xe0\x9f\xbf", 0, 0, 0 },            /* U+07FF in 3 */
		{ "\xf0\x80\x80\xaf", 0, 0, 0 },        /* '/' in 4 */
		{ "\xf0\x8f\xbf\xbf", 0, 0, 0 },        /* U+FFFF in 4 */
		{ "\xc0\x80", 0, 0, 0 },                /* NUL in 2 (modified UTF-8) */
		/* surrogates, alone and paired (CESU-8) */
		{ "\xed\xa0\x80", 0, 0, 0 },            /* U+D800 */
		{ "\xed\xad\xbf", 0, 0, 0 },            /* U+DB7F */
		{ "\xed\xbf\xbf", 0, 0, 0 },            /* U+DFFF */
		{ "\xed\xa0\x80\xed\xb0\x80", 0, 0, 0 },
		/* beyond U+10FFFF; 5- and 6-byte forms */
		{ "\xf4\x90\x80\x80", 0, 0, 0 },        /* U+110000 */
		{ "\xf5\x80\x80\x80", 0, 0, 0 },
		{ "\xf7\xbf\xbf\xbf", 0, 0, 0 },
		{ "\xf8\x88\x80\x80\x80", 0, 0, 0 },
		{ "\xfc\x84\x80\x80\x80\x80", 0, 0, 0 },
		{ "\xfe", 0, 0, 0 },
		{ "\xff", 0, 0, 0 },
		/* stray continuation bytes */
		{ "\x80", 0, 0, 0 },
		{ "\xbf", 0, 0, 0 },
		{ "a\x80\x80", 0, 0, 1 },
		/* truncated sequences: at the end, and followed by ASCII */
		{ "\xc3", 0, 0, 0 },
		{ "\xe2\x82", 0, 0, 0 },
		{ "\xf0\x9f\x93", 0, 0, 0 },
		{ "\xc3" "a", 0, 0, 0 },
		{ "\xe2\x82" "a", 0, 0, 0 },
		{ "\xf0\x9f\x93" "a", 0, 0, 0 },
		{ "ok\xe2\x82\xac" "ok\xe2\x82", 0, 0, 1 },
		/* latin-1 text is not UTF-8 */
		{ "gr\xfc\xdf", 0, 0, 1 },
	};
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		size_t len = t[i].len ? t[i].len : strlen(t[i].s);

		CHECK_MSG(codec_utf8_valid(t[i].s, len) == (t[i].valid != 0), "row %zu", i);
		if (len > 0)
			CHECK_MSG(codec_utf8_len((const unsigned char *)t[i].s, len) == t[i].first,
			    "row %zu: len %zu", i, codec_utf8_len((const unsigned char *)t[i].s, len));
	}
	/* A sequence is never read past n. */
	CHECK_INT(codec_utf8_len((const unsigned char *)"\xe2\x82\xac", 2), 0);
	CHECK_INT(codec_utf8_len((const unsigned char *)"\xe2\x82\xac", 3), 3);
}

static void
test_json_str(void)
{
	static const struct {
		const char *in, *want;
	} t[] = {
		{ NULL, "null" },
		{ "", "\"\"" },
		{ "alice@example.org", "\"alice@example.org\"" },
		{ "say \"hi\" \\o/", "\"say \\\"hi\\\" \\\\o/\"" },
		{ "a\nb\rc\td", "\"a\\u000ab\\u000dc\\u0009d\"" },
		{ "\x01\x1f\x7f", "\"\\u0001\\u001f\\u007f\"" },
		{ "gr\xc3\xbc\xc3\x9f \xf0\x9f\x93\xa7", "\"gr\xc3\xbc\xc3\x9f \xf0\x9f\x93\xa7\"" },
		{ "/</script>", "\"/</script>\"" },
		/* each bad byte is one U+FFFD; what follows is kept */
		{ "gr\xfc\xdf", "\"gr\\ufffd\\ufffd\"" },
		{ "\xff" "a", "\"\\ufffda\"" },
		{ "\xe2\x82" "a", "\"\\ufffd\\ufffda\"" },
		{ "\xc0\xaf", "\"\\ufffd\\ufffd\"" },
		{ "\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"" },
		{ "\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"" },
		{ "ok\xe2\x82", "\"ok\\ufffd\\ufffd\"" },
	};
	struct buf b = BUF_INIT;
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		buf_reset(&b);
		json_str(&b, t[i].in);
		CHECK_STR(buf_cstr(&b), t[i].want);
		CHECK_MSG(codec_utf8_valid(b.data, b.len), "row %zu", i);
	}
	/* Every single byte gives valid UTF-8 with no raw control character. */
	for (i = 1; i < 256; i++) {
		char in[4] = { 'a', (char)i, 'b', '\0' };
		size_t k;

		buf_reset(&b);
		json_str(&b, in);
		CHECK_MSG(codec_utf8_valid(b.data, b.len), "byte %02zx", i);
		for (k = 0; k < b.len; k++)
			if ((unsigned char)b.data[k] < 0x20 || b.data[k] == 0x7f)
				break;
		CHECK_MSG(k == b.len, "byte %02zx copied raw", i);
	}
	buf_free(&b);
}

static void
test_json_writer(void)
{
	struct buf b = BUF_INIT;
	struct json j;

	json_init(&j, &b);
	json_object_begin(&j);
	json_object_end(&j);
	CHECK_STR(buf_cstr(&b), "{}");

	buf_reset(&b);
	json_init(&j, &b);
	json_array_begin(&j);
	json_array_end(&j);
	CHECK_STR(buf_cstr(&b), "[]");

	buf_reset(&b);
	json_init(&j, &b);
	json_array_begin(&j);
	json_object_begin(&j);
	json_key(&j, "domain");
	json_string(&j, "x.test");
	json_key(&j, "hosts");
	json_array_begin(&j);
	json_string(&j, "a:25");
	json_string(&j, "b");
	json_array_end(&j);
	json_key(&j, "empty");
	json_array_begin(&j);
	json_array_end(&j);
	json_key(&j, "tls");
	json_string(&j, NULL);
	json_key(&j, "n");
	json_int(&j, -3);
	json_key(&j, "u");
	json_uint(&j, UINT64_MAX);
	json_key(&j, "t");
	json_bool(&j, true);
	json_key(&j, "f");
	json_bool(&j, false);
	json_key(&j, "z");
	json_null(&j);
	json_key(&j, "o");
	json_object_begin(&j);
	json_key(&j, "k\x01\xff");
	json_int(&j, 0);
	json_object_end(&j);
	json_object_end(&j);
	json_object_begin(&j);
	json_object_end(&j);
	json_int(&j, 7);
	json_array_end(&j);
	CHECK_STR(buf_cstr(&b), "[{\"domain\":\"x.test\",\"hosts\":[\"a:25\",\"b\"],\"empty\":[],"
	    "\"tls\":null,\"n\":-3,\"u\":18446744073709551615,\"t\":true,\"f\":false,\"z\":null,"
	    "\"o\":{\"k\\u0001\\ufffd\":0}},{},7]");
	buf_free(&b);
}

int
main(void)
{
	test_base64();
	test_utf8();
	test_json_str();
	test_json_writer();
	return check_done();
}
