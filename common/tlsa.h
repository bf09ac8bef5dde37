/*
 * tlsa.h - one DANE TLSA record (RFC 6698 2.1, RFC 7671, RFC 7672): the
 * type the resolver (dns/) fills, the TLS policy (tlspolicy/) sorts and the
 * I/O layer (io_start_tls_client_dane) hands to OpenSSL.
 *
 * Ownership: whoever holds the array owns each record's data (dns_result_free
 * and tlsa_free_all free them); a borrowed array is never freed.
 */
#ifndef RELAY_TLSA_H
#define RELAY_TLSA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TLSA_USAGE_PKIX_TA  0   /* unusable for SMTP (RFC 7672 3.1.3) */
#define TLSA_USAGE_PKIX_EE  1   /* unusable for SMTP (RFC 7672 3.1.3) */
#define TLSA_USAGE_DANE_TA  2
#define TLSA_USAGE_DANE_EE  3

struct tlsa_rr {
	uint8_t usage;          /* certificate usage */
	uint8_t selector;       /* 0 full certificate, 1 SubjectPublicKeyInfo */
	uint8_t mtype;          /* matching type: 0 exact, 1 SHA2-256, 2 SHA2-512 */
	unsigned char *data;    /* certificate association data */
	size_t len;
};

/*
 * Whether an SMTP client may use rr (RFC 7672 3.1, RFC 7671 5): usage
 * DANE-TA(2) or DANE-EE(3), a known selector and matching type, and data of
 * the digest's length (any non-empty length for "exact").
 */
bool tlsa_usable(const struct tlsa_rr *rr);
/* Deep copies of n records (NULL for n == 0), freed with tlsa_free_all(). */
struct tlsa_rr *tlsa_copy_all(const struct tlsa_rr *src, size_t n);
void tlsa_free_all(struct tlsa_rr *rr, size_t n);
/*
 * A fingerprint of n records, in order: SHA-256 over each one's fields and
 * data, as 64 hex digits and a NUL in out (deliver's connection key, so that
 * a connection authenticated by one TLSA set never serves another).
 */
#define TLSA_DIGEST_LEN 65
void tlsa_digest(const struct tlsa_rr *rr, size_t n, char out[TLSA_DIGEST_LEN]);

#endif
