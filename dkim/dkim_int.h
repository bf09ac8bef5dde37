/*
 * dkim_int.h - (internal to dkim/) the structures the signer's files share.
 */
#ifndef RELAY_DKIM_INT_H
#define RELAY_DKIM_INT_H

#include <stdatomic.h>

#include <openssl/evp.h>

#include "dkim/dkim.h"

#define DKIM_HDR_MAX	(1024 * 1024)	/* header section kept for signing, at most */

/* The relaxed body machine: canonical text goes to sink in pieces. */
struct dkim_body {
	void (*sink)(void *arg, const char *p, size_t n);
	void *sink_arg;
	struct buf pending;          /* canonical text not yet given to sink */
	size_t nempty;               /* empty lines held back */
	size_t linelen;              /* visible bytes of the current line so far */
	bool wsp;                    /* a WSP run not yet written */
	bool cr;                     /* a CR not yet known to start a CRLF */
};

void dkim_body_feed(struct dkim_body *b, const char *p, size_t len);
void dkim_body_end(struct dkim_body *b);
void dkim_body_flush(struct dkim_body *b);

struct dkim_msg {
	bool in_header;
	bool line_start;
	size_t line_off;             /* where the current header line starts in hdr */
	struct buf hdr;              /* the header section as written, without its empty line */
	bool hdr_too_big;            /* it outgrew DKIM_HDR_MAX: cut there, cannot be signed */
	struct dkim_body body;
	EVP_MD_CTX *md;              /* SHA-256 of the canonical body */
	bool md_failed;
};

void dkim_msg_fields(const struct dkim_msg *m, void (*fn)(void *, const char *, size_t), void *arg);
bool dkim_field_is(const char *f, size_t len, const char *name, bool prefix);
/* End the body and give its SHA-256.  0 or -1. */
int dkim_msg_body_hash(struct dkim_msg *m, unsigned char out[32]);

struct dkim_key {
	char *domain;
	char *selector;
	char *path;
	enum dkim_alg alg;
	unsigned bits;
	EVP_PKEY *pkey;
};

struct dkim_keys {
	_Atomic int refs;               /* taken and dropped from any thread (as conf's) */
	struct dkim_key *keys;
	size_t nkeys;
};

#endif
