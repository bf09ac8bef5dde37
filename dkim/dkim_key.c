/*
 * dkim_key.c - the signing keys: PEM private keys read with OpenSSL and
 * checked (RSA of at least 2048 bits, or Ed25519), held in one immutable,
 * reference-counted set per configuration, and the DNS TXT record each
 * selector needs.
 *
 * Owns struct dkim_keys and the EVP_PKEYs in it.  Never signs, never logs.
 */
#include "dkim/dkim_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/codec.h"
#include "common/util.h"

#define DKIM_RSA_MIN_BITS	2048

static void
dkim_keys_free(struct dkim_keys *k)
{
	size_t i;

	for (i = 0; i < k->nkeys; i++) {
		free(k->keys[i].domain);
		free(k->keys[i].selector);
		free(k->keys[i].path);
		EVP_PKEY_free(k->keys[i].pkey);
	}
	free(k->keys);
	free(k);
}

/* Read one key file; 0, or -1 with the reason (no position) in why. */
static int
dkim_key_read(struct dkim_key *key, struct buf *why)
{
	FILE *fp;
	EVP_PKEY *pk;
	unsigned long e;

	if ((fp = fopen(key->path, "r")) == NULL) {
		buf_printf(why, "cannot read '%s': %s", key->path, strerror(errno));
		return -1;
	}
	ERR_clear_error();
	pk = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
	fclose(fp);
	if (pk == NULL) {
		e = ERR_peek_last_error();
		buf_printf(why, "'%s' is not a PEM private key%s%s", key->path,
		    e != 0 ? ": " : "", e != 0 ? ERR_reason_error_string(e) : "");
		ERR_clear_error();
		return -1;
	}
	switch (EVP_PKEY_get_base_id(pk)) {
	case EVP_PKEY_RSA:
		key->alg = DKIM_RSA_SHA256;
		key->bits = (unsigned)EVP_PKEY_get_bits(pk);
		if (key->bits < DKIM_RSA_MIN_BITS) {
			buf_printf(why, "'%s' is an RSA key of %u bits (at least %d are needed)",
			    key->path, key->bits, DKIM_RSA_MIN_BITS);
			EVP_PKEY_free(pk);
			return -1;
		}
		break;
	case EVP_PKEY_ED25519:
		key->alg = DKIM_ED25519_SHA256;
		key->bits = 256;
		break;
	default:
		buf_printf(why, "'%s' is neither an RSA nor an Ed25519 key", key->path);
		EVP_PKEY_free(pk);
		return -1;
	}
	key->pkey = pk;
	return 0;
}

int
dkim_keys_load(const struct conf *c, struct dkim_keys **out, struct buf *err)
{
	struct dkim_keys *k = xcalloc(1, sizeof(*k));
	struct buf why = BUF_INIT;
	size_t i;
	int bad = 0;

	atomic_init(&k->refs, 1);
	k->keys = xcalloc(c->dkim.nkeys + 1, sizeof(*k->keys));
	for (i = 0; i < c->dkim.nkeys; i++) {
		const struct conf_dkim_key *ck = &c->dkim.keys[i];
		struct dkim_key *key = &k->keys[k->nkeys];

		key->domain = xstrdup(ck->domain);
		key->selector = xstrdup(ck->selector);
		key->path = xstrdup(ck->key);
		k->nkeys++;
		buf_reset(&why);
		if (dkim_key_read(key, &why) != 0) {
			buf_printf(err, "%s:%u: dkim.keys[%zu].key: %s\n", ck->file, ck->line, i,
			    buf_cstr(&why));
			bad = 1;
		}
	}
	buf_free(&why);
	if (bad) {
		dkim_keys_free(k);
		*out = NULL;
		return -1;
	}
	*out = k;
	return 0;
}

struct dkim_keys *
dkim_keys_ref(struct dkim_keys *k)
{
	if (k == NULL)
		return NULL;
	if (atomic_fetch_add(&k->refs, 1) <= 0)
		fatalx("%s: reference to freed keys", __func__);
	return k;
}

void
dkim_keys_unref(struct dkim_keys *k)
{
	int was;

	if (k == NULL)
		return;
	was = atomic_fetch_sub(&k->refs, 1);
	if (was <= 0)
		fatalx("%s: keys released too often", __func__);
	if (was == 1)
		dkim_keys_free(k);
}

size_t
dkim_keys_count(const struct dkim_keys *k)
{
	return k != NULL ? k->nkeys : 0;
}

void
dkim_keys_info(const struct dkim_keys *k, size_t i, struct dkim_key_info *out)
{
	const struct dkim_key *key;

	if (k == NULL || i >= k->nkeys)
		fatalx("%s: no key %zu", __func__, i);
	key = &k->keys[i];
	out->domain = key->domain;
	out->selector = key->selector;
	out->path = key->path;
	out->alg = key->alg;
	out->bits = key->bits;
}

bool
dkim_keys_has(const struct dkim_keys *k, const char *domain)
{
	size_t i, len = strlen(domain);

	if (len > 1 && domain[len - 1] == '.')
		len--;
	for (i = 0; k != NULL && i < k->nkeys; i++)
		if (strlen(k->keys[i].domain) == len &&
		    util_strncasecmp(k->keys[i].domain, domain, len) == 0)
			return true;
	return false;
}

const char *
dkim_keys_domain_for_host(const struct dkim_keys *k, const char *host)
{
	const char *p;

	for (p = host; p != NULL && *p != '\0'; p = strchr(p, '.')) {
		if (*p == '.')
			p++;
		if (strchr(p, '.') == NULL)
			break;              /* never a top-level domain alone */
		if (dkim_keys_has(k, p)) {
			size_t i, len = strlen(p);

			if (len > 1 && p[len - 1] == '.')
				len--;
			for (i = 0; i < k->nkeys; i++)
				if (strlen(k->keys[i].domain) == len &&
				    util_strncasecmp(k->keys[i].domain, p, len) == 0)
					return k->keys[i].domain;
		}
	}
	return NULL;
}

const char *
dkim_alg_name(enum dkim_alg a)
{
	return a == DKIM_ED25519_SHA256 ? "ed25519-sha256" : "rsa-sha256";
}

void
dkim_keys_txt(const struct dkim_keys *k, size_t i, struct buf *out)
{
	const struct dkim_key *key;
	unsigned char raw[32], *der = NULL;
	size_t rawlen = sizeof(raw);
	int n;

	if (k == NULL || i >= k->nkeys)
		fatalx("%s: no key %zu", __func__, i);
	key = &k->keys[i];
	if (key->alg == DKIM_ED25519_SHA256) {
		/* RFC 8463 section 4.2: the raw 32-byte public key */
		if (EVP_PKEY_get_raw_public_key(key->pkey, raw, &rawlen) != 1)
			fatalx("%s: no Ed25519 public key", __func__);
		buf_puts(out, "v=DKIM1; k=ed25519; p=");
		codec_base64_encode(out, raw, rawlen);
		return;
	}
	/* RSA: the SubjectPublicKeyInfo, DER (RFC 6376 section 3.6.1) */
	if ((n = i2d_PUBKEY(key->pkey, &der)) <= 0)
		fatalx("%s: cannot encode the public key", __func__);
	buf_puts(out, "v=DKIM1; k=rsa; p=");
	codec_base64_encode(out, der, (size_t)n);
	OPENSSL_free(der);
}
