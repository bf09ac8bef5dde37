/*
 * tlsa.c - DANE TLSA records (tlsa.h): which ones an SMTP client may use,
 * and copies of record arrays.
 *
 * Owns: nothing beyond the copies it returns.
 * Must never: decide a session's TLS policy (tlspolicy/ does) or touch SSL.
 */
#include "common/tlsa.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

bool
tlsa_usable(const struct tlsa_rr *rr)
{
	if (rr->usage != TLSA_USAGE_DANE_TA && rr->usage != TLSA_USAGE_DANE_EE)
		return false;
	if (rr->selector > 1 || rr->len == 0)
		return false;
	switch (rr->mtype) {
	case 0:
		return true;
	case 1:
		return rr->len == 32;
	case 2:
		return rr->len == 64;
	default:
		return false;
	}
}

struct tlsa_rr *
tlsa_copy_all(const struct tlsa_rr *src, size_t n)
{
	struct tlsa_rr *out;
	size_t i;

	if (n == 0)
		return NULL;
	out = xcalloc(n, sizeof(*out));
	for (i = 0; i < n; i++) {
		out[i] = src[i];
		out[i].data = xmalloc(src[i].len ? src[i].len : 1);
		memcpy(out[i].data, src[i].data, src[i].len);
	}
	return out;
}

void
tlsa_free_all(struct tlsa_rr *rr, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(rr[i].data);
	free(rr);
}

void
tlsa_digest(const struct tlsa_rr *rr, size_t n, char out[TLSA_DIGEST_LEN])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char md[EVP_MAX_MD_SIZE], hdr[5];
	unsigned mdlen = 0, i;
	size_t k;

	if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		fatalx("%s: SHA-256 unavailable", __func__);
	for (k = 0; k < n; k++) {
		hdr[0] = rr[k].usage;
		hdr[1] = rr[k].selector;
		hdr[2] = rr[k].mtype;
		hdr[3] = (unsigned char)(rr[k].len >> 8);
		hdr[4] = (unsigned char)rr[k].len;
		EVP_DigestUpdate(ctx, hdr, sizeof(hdr));
		EVP_DigestUpdate(ctx, rr[k].data, rr[k].len);
	}
	if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 32)
		fatalx("%s: SHA-256 failed", __func__);
	EVP_MD_CTX_free(ctx);
	for (i = 0; i < mdlen; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}
