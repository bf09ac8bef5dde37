/*
 * dkim_sign.c - the DKIM-Signature header field (RFC 6376 section 3.5):
 * v=1; a=; c=relaxed/relaxed; d=; s=; t=; h= (From oversigned); bh=; b=,
 * folded, never l=.  RSA signs the header data with PKCS#1 v1.5 and SHA-256;
 * Ed25519 signs the SHA-256 digest of the header data with PureEdDSA
 * (RFC 8463 section 3), both through EVP_DigestSign.
 *
 * Pure computation on a finished struct dkim_msg: safe on any thread.
 */
#include "dkim/dkim_int.h"

#include <inttypes.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/sha.h>

#include "common/codec.h"
#include "common/util.h"

#define DKIM_FOLD	72

const char *const dkim_default_headers[] = {
	"From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding",
	"In-Reply-To", "References", "List-*", NULL
};

struct dkim_field {
	const char *p;
	size_t len;
	size_t namelen;
};

struct dkim_fields {
	struct dkim_field *v;
	size_t n, cap;
};

static void
dkim_fields_add(void *arg, const char *f, size_t len)
{
	struct dkim_fields *fs = arg;
	size_t i = 0;

	while (i < len && f[i] != ':' && f[i] != ' ' && f[i] != '\t')
		i++;
	if (fs->n == fs->cap) {
		fs->cap = fs->cap ? fs->cap * 2 : 32;
		fs->v = xrealloc(fs->v, fs->cap * sizeof(*fs->v));
	}
	fs->v[fs->n].p = f;
	fs->v[fs->n].len = len;
	fs->v[fs->n].namelen = i;
	fs->n++;
}

static bool
dkim_name_eq(const char *a, size_t alen, const char *b, size_t blen)
{
	return alen == blen && util_strncasecmp(a, b, alen) == 0;
}

/* Add a name to the h= list (lower-case), folding before it when long. */
static void
dkim_h_add(struct buf *h, size_t *col, const char *name, size_t len)
{
	size_t i;

	if (h->len > 0) {
		buf_putc(h, ':');
		(*col)++;
		if (*col + len > DKIM_FOLD) {
			buf_puts(h, "\r\n\t");
			*col = 1;
		}
	}
	for (i = 0; i < len; i++) {
		char c = name[i];

		buf_putc(h, c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c);
	}
	*col += len;
}

/*
 * Every instance of one field name, last first (RFC 6376 section 5.4.2),
 * into data and h; From once more, an instance that does not exist, so that
 * no From can be added later (oversigning).
 */
static void
dkim_select_name(const struct dkim_fields *fs, const char *name, size_t len,
    struct buf *data, struct buf *h, size_t *col)
{
	size_t i;

	for (i = fs->n; i-- > 0;) {
		if (!dkim_name_eq(fs->v[i].p, fs->v[i].namelen, name, len))
			continue;
		dkim_canon_header(fs->v[i].p, fs->v[i].len, true, data);
		dkim_h_add(h, col, name, len);
	}
	if (dkim_name_eq(name, len, "From", 4))
		dkim_h_add(h, col, name, len);
}

/* Whether the name was handled already (the list names it twice, or a
 * pattern matched it). */
static bool
dkim_seen(struct dkim_fields *seen, const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < seen->n; i++)
		if (dkim_name_eq(seen->v[i].p, seen->v[i].len, name, len))
			return true;
	dkim_fields_add(seen, name, len);
	seen->v[seen->n - 1].len = len;
	return false;
}

static void
dkim_select(const struct dkim_fields *fs, const char *const *headers,
    struct buf *data, struct buf *h, size_t *col)
{
	struct dkim_fields seen = { NULL, 0, 0 };
	size_t i, j, len;

	dkim_seen(&seen, "From", 4);
	dkim_select_name(fs, "From", 4, data, h, col);
	for (i = 0; headers[i] != NULL; i++) {
		len = strlen(headers[i]);
		if (len > 0 && headers[i][len - 1] == '*') {
			for (j = 0; j < fs->n; j++) {
				const struct dkim_field *f = &fs->v[j];

				if (f->namelen >= len - 1 &&
				    util_strncasecmp(f->p, headers[i], len - 1) == 0 &&
				    !dkim_seen(&seen, f->p, f->namelen))
					dkim_select_name(fs, f->p, f->namelen, data, h, col);
			}
		} else if (!dkim_seen(&seen, headers[i], len))
			dkim_select_name(fs, headers[i], len, data, h, col);
	}
	free(seen.v);
}

static int
dkim_ossl_err(struct buf *err, const char *what)
{
	unsigned long e = ERR_peek_last_error();

	buf_printf(err, "%s: %s", what, e != 0 ? ERR_reason_error_string(e) : "failed");
	ERR_clear_error();
	return -1;
}

/* Sign data with key into sig (base64).  0 or -1. */
static int
dkim_sign_data(const struct dkim_key *key, const struct buf *data, struct buf *sig,
    struct buf *err)
{
	EVP_MD_CTX *ctx;
	unsigned char digest[SHA256_DIGEST_LENGTH], *out = NULL;
	const unsigned char *tbs = (const unsigned char *)data->data;
	size_t tbslen = data->len, outlen = 0;
	int rc = -1;

	if ((ctx = EVP_MD_CTX_new()) == NULL)
		return dkim_ossl_err(err, "EVP_MD_CTX_new");
	if (key->alg == DKIM_ED25519_SHA256) {
		/* RFC 8463 section 3: Ed25519 signs the SHA-256 hash */
		if (SHA256(tbs, tbslen, digest) == NULL) {
			dkim_ossl_err(err, "SHA256");
			goto out;
		}
		tbs = digest;
		tbslen = sizeof(digest);
		if (EVP_DigestSignInit(ctx, NULL, NULL, NULL, key->pkey) != 1) {
			dkim_ossl_err(err, "EVP_DigestSignInit");
			goto out;
		}
	} else if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key->pkey) != 1) {
		dkim_ossl_err(err, "EVP_DigestSignInit");
		goto out;
	}
	if (EVP_DigestSign(ctx, NULL, &outlen, tbs, tbslen) != 1) {
		dkim_ossl_err(err, "EVP_DigestSign");
		goto out;
	}
	out = xmalloc(outlen);
	if (EVP_DigestSign(ctx, out, &outlen, tbs, tbslen) != 1) {
		dkim_ossl_err(err, "EVP_DigestSign");
		goto out;
	}
	codec_base64_encode(sig, out, outlen);
	rc = 0;
out:
	free(out);
	EVP_MD_CTX_free(ctx);
	return rc;
}

int
dkim_sign(const struct dkim_keys *k, const char *domain, struct dkim_msg *m,
    const char *const *headers, uint64_t now_s, struct buf *out, struct buf *ids,
    struct buf *err)
{
	struct dkim_fields fs = { NULL, 0, 0 };
	struct buf fields = BUF_INIT, h = BUF_INIT, hdr = BUF_INIT, data = BUF_INIT;
	struct buf bh = BUF_INIT, sig = BUF_INIT;
	unsigned char bhash[32];
	size_t i, j, col, hdr_start;
	int rc = -1, nsig = 0;

	if (headers == NULL)
		headers = dkim_default_headers;
	if (m->hdr_too_big) {
		buf_printf(err, "header section larger than %d bytes", DKIM_HDR_MAX);
		return -1;
	}
	if (dkim_msg_body_hash(m, bhash) != 0) {
		buf_puts(err, "body hash failed");
		return -1;
	}
	codec_base64_encode(&bh, bhash, sizeof(bhash));
	dkim_msg_fields(m, dkim_fields_add, &fs);
	col = 4;                                    /* "\th=" */
	dkim_select(&fs, headers, &fields, &h, &col);

	for (i = 0; k != NULL && i < k->nkeys; i++) {
		const struct dkim_key *key = &k->keys[i];

		if (util_strcasecmp(key->domain, domain) != 0)
			continue;
		buf_reset(&hdr);
		buf_printf(&hdr, "DKIM-Signature: v=1; a=%s; c=relaxed/relaxed; d=%s;\r\n"
		    "\ts=%s; t=%" PRIu64 ";\r\n\th=%s;\r\n\tbh=%s;\r\n\tb=",
		    dkim_alg_name(key->alg), key->domain, key->selector, now_s,
		    buf_cstr(&h), buf_cstr(&bh));
		buf_reset(&data);
		buf_append(&data, fields.data, fields.len);
		dkim_canon_header(hdr.data, hdr.len, false, &data);
		buf_reset(&sig);
		if (dkim_sign_data(key, &data, &sig, err) != 0)
			goto out;
		hdr_start = out->len;
		buf_append(out, hdr.data, hdr.len);
		col = 3;                            /* "\tb=" */
		for (j = 0; j < sig.len; j++) {
			if (col >= DKIM_FOLD) {
				buf_puts(out, "\r\n\t");
				col = 1;
			}
			buf_putc(out, sig.data[j]);
			col++;
		}
		buf_puts(out, "\r\n");
		(void)hdr_start;
		if (ids->len > 0)
			buf_putc(ids, ',');
		buf_printf(ids, "d=%s;s=%s", key->domain, key->selector);
		nsig++;
	}
	if (nsig == 0) {
		buf_printf(err, "no key for '%s'", domain);
		goto out;
	}
	rc = 0;
out:
	free(fs.v);
	buf_free(&fields);
	buf_free(&h);
	buf_free(&hdr);
	buf_free(&data);
	buf_free(&bh);
	buf_free(&sig);
	return rc;
}
