/*
 * codec.h - the byte codecs every module shares: base64 (RFC 4648 section 4,
 * through OpenSSL's EVP_EncodeBlock/EVP_DecodeBlock) and the UTF-8 validator
 * (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF).  One of
 * each in the tree; the JSON writer (json.h), the NDR writer and SMTP AUTH
 * on both sides use these.
 */
#ifndef RELAY_CODEC_H
#define RELAY_CODEC_H

#include <stdbool.h>
#include <stddef.h>

struct buf;

/* Append the base64 of n bytes of p to out: padded, no line breaks. */
void codec_base64_encode(struct buf *out, const void *p, size_t n);

/*
 * Decode len bytes of base64 text (padded, no white space, the empty string
 * decodes to nothing) into out, which is reset first.  0, or RELAY_EINVAL with
 * out empty for anything else (a bad character, a bad length, misplaced '=').
 */
int codec_base64_decode(const char *in, size_t len, struct buf *out);

/* The length (1-4) of the well-formed UTF-8 sequence at s, which has n > 0
 * bytes left, or 0 if the byte at s does not start one. */
size_t codec_utf8_len(const unsigned char *s, size_t n);

/* Are the n bytes at s well-formed UTF-8? */
bool codec_utf8_valid(const char *s, size_t n);

#endif
