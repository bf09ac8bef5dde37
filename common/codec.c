/*
 * codec.c - base64 (OpenSSL's EVP block coder, with the strictness RFC 4648
 * asks of a decoder added around it) and the UTF-8 validator.
 *
 * Owns: nothing; pure functions over caller buffers.
 * Never: accepts what RFC 4648 or RFC 3629 rejects (EVP_DecodeBlock alone
 * skips leading and trailing white space and counts '=' as zero bits).
 */
#include "common/codec.h"
#include "common/buf.h"
#include "common/util.h"

#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>

void
codec_base64_encode(struct buf *out, const void *p, size_t n)
{
	size_t need = 4 * ((n + 2) / 3) + 1;
	int got;

	if (n > INT32_MAX / 2)
		fatalx("%s: %zu bytes is too much to encode", __func__, n);
	buf_reserve(out, need);
	got = EVP_EncodeBlock((unsigned char *)out->data + out->len, p, (int)n);
	if (got < 0 || (size_t)got >= need)
		fatalx("%s: EVP_EncodeBlock returned %d", __func__, got);
	out->len += (size_t)got;
	out->data[out->len] = '\0';
}

/* Is c in the RFC 4648 base64 alphabet (not counting '=')? */
static bool
codec_base64_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	    c == '+' || c == '/';
}

int
codec_base64_decode(const char *in, size_t len, struct buf *out)
{
	size_t i, pad = 0;
	int got;

	buf_reset(out);
	if (len % 4 != 0 || len > INT32_MAX / 2)
		return RELAY_EINVAL;
	/* EVP_DecodeBlock trims white space and decodes '=' anywhere as zero
	 * bits: check the alphabet, and that '=' only ends the text. */
	if (len > 0 && in[len - 1] == '=')
		pad = len > 1 && in[len - 2] == '=' ? 2 : 1;
	for (i = 0; i < len - pad; i++)
		if (!codec_base64_char((unsigned char)in[i]))
			return RELAY_EINVAL;
	if (len == 0)
		return 0;
	buf_reserve(out, len / 4 * 3 + 1);
	got = EVP_DecodeBlock((unsigned char *)out->data, (const unsigned char *)in, (int)len);
	if (got < 0 || (size_t)got != len / 4 * 3) {
		buf_reset(out);
		return RELAY_EINVAL;
	}
	/* The block coder returns whole groups of 3: the padding is not data. */
	out->len = (size_t)got - pad;
	out->data[out->len] = '\0';
	return 0;
}

size_t
codec_utf8_len(const unsigned char *s, size_t n)
{
	size_t need, i;
	unsigned c = s[0];

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		need = 2;
	else if (c >= 0xe0 && c <= 0xef)
		need = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		need = 4;
	else
		return 0;                       /* continuation, overlong lead, > U+10FFFF */
	if (n < need)
		return 0;
	for (i = 1; i < need; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xf0 && s[1] < 0x90) ||
	    (c == 0xf4 && s[1] >= 0x90) || (c == 0xed && s[1] >= 0xa0))
		return 0;                       /* overlong, > U+10FFFF, surrogate */
	return need;
}

bool
codec_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t l;

	while (n > 0) {
		if ((l = codec_utf8_len(p, n)) == 0)
			return false;
		p += l;
		n -= l;
	}
	return true;
}
