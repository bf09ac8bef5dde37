/*
 * io_tls.c - the TLS contexts the I/O layer runs on, and so relayd's TLS
 * policy: which protocol versions, cipher suites, groups and options the
 * submission server offers, and what the outbound client accepts.
 *
 * The server follows Mozilla's "intermediate" profile: TLS 1.2 and 1.3;
 * for TLS 1.2 only ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 (no
 * suite without forward secrecy, no CBC, no finite-field DHE, so no weak-DH
 * findings); groups X25519, P-256, P-384; no compression, no renegotiation.
 * The cipher list and the lowest version can be changed
 * (submit.tls_ciphers, submit.tls_min_version); io_tls_server_policy() is
 * the one place that applies them, and conf checks them with it at load.
 *
 * Session resumption uses the server's in-memory session cache (session
 * ids, and stateful TLS 1.3 tickets), never RFC 5077 tickets: a ticket key
 * would live as long as the process and undo forward secrecy for every
 * resumed session.
 *
 * The client context stays broad (TLS 1.2 and up, OpenSSL's default
 * suites): outbound TLS to MX hosts is opportunistic (RFC 7435), and a
 * stricter list would only push some peers back to plaintext.
 *
 * Never: keep a context or any state here; every function builds or changes
 * the context it is given and returns.
 */
#include "common/io.h"

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

/* Mozilla intermediate (v5.7) without the DHE-RSA suites. */
#define IO_TLS_CIPHERS \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define IO_TLS_GROUPS	"X25519:prime256v1:secp384r1"
#define IO_TLS_SID_CTX	"relayd"

static const struct {
	const char *name;
	int version;
} io_tls_versions[] = {
	{ "TLSv1.2", TLS1_2_VERSION },
	{ "TLSv1.3", TLS1_3_VERSION },
};

static void
io_ssl_errstr(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char text[200] = "unknown error";

	if (e != 0)
		ERR_error_string_n(e, text, sizeof(text));
	ERR_clear_error();
	snprintf(err, errlen, "%s: %s", what, text);
}

int
io_tls_server_policy(SSL_CTX *ctx, const char *ciphers, const char *min_version,
    char *err, size_t errlen)
{
	int version = -1;
	size_t i;

	if (min_version == NULL)
		min_version = io_tls_versions[0].name;
	for (i = 0; i < sizeof(io_tls_versions) / sizeof(io_tls_versions[0]); i++)
		if (strcmp(min_version, io_tls_versions[i].name) == 0)
			version = io_tls_versions[i].version;
	if (version == -1) {
		snprintf(err, errlen, "unknown TLS version '%s' (use TLSv1.2 or TLSv1.3)",
		    min_version);
		return -1;
	}
	if (SSL_CTX_set_min_proto_version(ctx, version) != 1) {
		io_ssl_errstr(err, errlen, min_version);
		return -1;
	}
	if (ciphers == NULL)
		ciphers = IO_TLS_CIPHERS;
	/* Only TLS 1.2 suites; OpenSSL's TLS 1.3 suites are all AEAD with (EC)DHE. */
	if (ciphers[0] == '\0' || SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "bad cipher list '%s' (no cipher suite matches; "
		    "see ciphers(1ssl))", ciphers);
		return -1;
	}
	return 0;
}

int
io_tls_check_policy(const char *ciphers, const char *min_version, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	int rc;

	if (ctx == NULL) {
		io_ssl_errstr(err, errlen, "SSL_CTX_new");
		return -1;
	}
	rc = io_tls_server_policy(ctx, ciphers, min_version, err, errlen);
	SSL_CTX_free(ctx);
	return rc;
}

SSL_CTX *
io_tls_server_ctx(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (ctx == NULL) {
		io_ssl_errstr(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	if (io_tls_server_policy(ctx, NULL, NULL, err, errlen) != 0) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_set1_groups_list(ctx, IO_TLS_GROUPS) != 1) {
		io_ssl_errstr(err, errlen, IO_TLS_GROUPS);
		SSL_CTX_free(ctx);
		return NULL;
	}
	/*
	 * Server order, although Mozilla leaves the choice to the client: every
	 * suite offered is AEAD with forward secrecy, and scanners (testssl.sh)
	 * rate "no cipher order" HIGH.  PRIORITIZE_CHACHA keeps ChaCha20 for the
	 * clients that put it first (phones without AES instructions).
	 */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
	    SSL_OP_PRIORITIZE_CHACHA | SSL_OP_NO_COMPRESSION | SSL_OP_NO_TICKET);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)IO_TLS_SID_CTX,
	    sizeof(IO_TLS_SID_CTX) - 1);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		io_ssl_errstr(err, errlen, cert_file);
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		io_ssl_errstr(err, errlen, key_file);
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		io_ssl_errstr(err, errlen, "key does not match certificate");
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

SSL_CTX *
io_tls_client_ctx(const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (ctx == NULL) {
		io_ssl_errstr(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (ca_file != NULL && *ca_file != '\0') {
		if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
			io_ssl_errstr(err, errlen, ca_file);
			SSL_CTX_free(ctx);
			return NULL;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		io_ssl_errstr(err, errlen, "default verify paths");
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}
