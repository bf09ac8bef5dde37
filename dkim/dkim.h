/*
 * dkim.h - the DKIM signer's one public face (RFC 6376, RFC 8463): the
 * signing keys of the configuration (loaded and checked), a message's
 * canonical form built while it streams (relaxed/relaxed; only the header
 * section is kept, the body goes through SHA-256 as it passes), and the
 * DKIM-Signature header fields made from both.
 *
 * Crypto is OpenSSL 3's EVP: RSA (PKCS#1 v1.5, SHA-256) and Ed25519
 * (PureEdDSA over the SHA-256 of the header data, RFC 8463 section 3).
 *
 * Threads: a struct dkim_keys is immutable once loaded; dkim_sign() may run
 * on any thread (the libuv thread pool) while the loop keeps a reference.
 * dkim_keys_ref()/unref() are for the loop thread only.
 */
#ifndef RELAY_DKIM_H
#define RELAY_DKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "conf/conf.h"

struct dkim_keys;
struct dkim_msg;

enum dkim_alg {
	DKIM_RSA_SHA256,
	DKIM_ED25519_SHA256,
};

/* One key of the configuration, as loaded (read-only for callers). */
struct dkim_key_info {
	const char *domain;         /* lower-case */
	const char *selector;
	const char *path;
	enum dkim_alg alg;
	unsigned bits;              /* RSA modulus bits; 256 for Ed25519 */
};

/*
 * Load and check every key of c->dkim: an unreadable file, a file that is
 * not a PEM private key, a key that is neither RSA nor Ed25519, or an RSA key
 * under 2048 bits is an error "FILE:LINE: dkim.keys[N].key: ..." in err.
 * 0 with *out (one reference; NULL-safe to use when c has no keys), or -1.
 */
int dkim_keys_load(const struct conf *c, struct dkim_keys **out, struct buf *err);
struct dkim_keys *dkim_keys_ref(struct dkim_keys *k);
void dkim_keys_unref(struct dkim_keys *k);
size_t dkim_keys_count(const struct dkim_keys *k);
/* The i-th key (in configuration order). */
void dkim_keys_info(const struct dkim_keys *k, size_t i, struct dkim_key_info *out);
/* True if a key signs for domain (case-insensitive; a trailing dot ignored). */
bool dkim_keys_has(const struct dkim_keys *k, const char *domain);
/* The signing domain for mail from host (relayd's own reports): host itself
 * or the closest parent domain that has a key, or NULL. */
const char *dkim_keys_domain_for_host(const struct dkim_keys *k, const char *host);
/* The DNS TXT record the i-th key's selector needs: "v=DKIM1; k=...; p=..." */
void dkim_keys_txt(const struct dkim_keys *k, size_t i, struct buf *out);
const char *dkim_alg_name(enum dkim_alg a);         /* "rsa-sha256", "ed25519-sha256" */

/*
 * A message in the making.  dkim_msg_write() takes the message exactly as it
 * is queued (CRLF lines, not dot-stuffed, any chunking): the header section
 * is kept (bounded by the message size limit), the body is canonicalised and
 * hashed as it goes.  dkim_msg_free() frees all.
 */
struct dkim_msg *dkim_msg_new(void);
void dkim_msg_write(struct dkim_msg *m, const void *p, size_t len);
void dkim_msg_free(struct dkim_msg *m);
/* The first field called name (case-insensitive), its value unfolded (CRLFs
 * removed) into out.  0, or -1 if the header has none. */
int dkim_msg_field(const struct dkim_msg *m, const char *name, struct buf *out);

/*
 * Sign m (its whole text written) with every key of domain: out gets one
 * "DKIM-Signature: ...\r\n" field per key, folded, in configuration order,
 * and ids the "d=domain;s=selector" pairs, ","-separated.  headers is the
 * NULL-terminated list of field names to sign (a trailing '*' matches a
 * prefix; NULL = the default list); From is always signed and oversigned.
 * t= is now_s.  Ends the body hash: call it once.  Thread-safe for distinct
 * m.  0, or -1 with err (an OpenSSL failure).
 */
int dkim_sign(const struct dkim_keys *k, const char *domain, struct dkim_msg *m,
    const char *const *headers, uint64_t now_s, struct buf *out, struct buf *ids,
    struct buf *err);

/* The default list of header fields to sign. */
extern const char *const dkim_default_headers[];

/* ---- the pieces, for tests ---- */

/* Relaxed header canonicalisation of one field (with its CRLF(s)); appends
 * "name:value\r\n" to out (without the CRLF when crlf is false). */
void dkim_canon_header(const char *field, size_t len, bool crlf, struct buf *out);
/* Relaxed body canonicalisation of a whole body, for tests: out gets the
 * canonical text the hash covers (streamed in pieces of chunk bytes). */
void dkim_canon_body(const char *body, size_t len, size_t chunk, struct buf *out);

#endif
