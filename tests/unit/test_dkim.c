/*
 * test_dkim.c - the DKIM signer's pieces from tables: relaxed header and
 * body canonicalisation (RFC 6376 section 3.4.6's example and the edge
 * cases: empty body, trailing empty lines, WSP runs, no final CRLF, bare CR),
 * the same body in every chunking, the header section/body split of a
 * streamed message, and the key checks of dkim_keys_load() on real PEM
 * files (RSA 2048, RSA 1024, Ed25519, P-256, not PEM, missing).  dkimpy
 * verifies real signatures in tests/integration/test_dkim.py.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "common/buf.h"
#include "common/codec.h"
#include "common/util.h"
#include "conf/conf.h"
#include "dkim/dkim.h"
#include "tests/unit/check.h"

static void
test_canon_header(void)
{
	static const struct {
		const char *in;
		const char *want;
	} rows[] = {
		/* RFC 6376 section 3.4.6 */
		{ "A: X\r\n", "a:X\r\n" },
		{ "B : Y\t\r\n\tZ  \r\n", "b:Y Z\r\n" },
		{ "Subject:   many    spaces \t here\t \r\n", "subject:many spaces here\r\n" },
		{ "SUBJECT:x\r\n", "subject:x\r\n" },
		{ "To: a@x,\r\n  b@y,\r\n\tc@z\r\n", "to:a@x, b@y, c@z\r\n" },
		{ "X-Empty:\r\n", "x-empty:\r\n" },
		{ "X-Empty:   \r\n", "x-empty:\r\n" },
		{ "Subject: caf\xc3\xa9  \xe2\x98\x83\r\n", "subject:caf\xc3\xa9 \xe2\x98\x83\r\n" },
	};
	struct buf b = BUF_INIT;
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		buf_reset(&b);
		dkim_canon_header(rows[i].in, strlen(rows[i].in), true, &b);
		CHECK_STR(buf_cstr(&b), rows[i].want);
	}
	buf_free(&b);
}

static void
test_canon_body(void)
{
	static const struct {
		const char *in;
		const char *want;
	} rows[] = {
		/* RFC 6376 section 3.4.6 */
		{ " C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n" },
		/* empty body: relaxed hashes the empty string (section 3.4.4) */
		{ "", "" },
		{ "\r\n", "" },
		{ "\r\n\r\n\r\n", "" },
		{ "  \r\n\t\r\n", "" },
		/* trailing empty lines go, inner ones stay */
		{ "a\r\n\r\n\r\nb\r\n\r\n", "a\r\n\r\n\r\nb\r\n" },
		{ "\r\n\r\na\r\n", "\r\n\r\na\r\n" },
		/* WSP runs and line ends */
		{ "a  \t b\t\r\n", "a b\r\n" },
		{ "\t lead\r\n", " lead\r\n" },
		/* no final CRLF: one is added */
		{ "abc", "abc\r\n" },
		{ "abc  ", "abc\r\n" },
		{ "a\r\nb", "a\r\nb\r\n" },
		/* a bare CR is text */
		{ "a\rb\r\n", "a\rb\r\n" },
		/* 8-bit */
		{ "gr\xc3\xbc\xc3\x9f  dich\r\n", "gr\xc3\xbc\xc3\x9f dich\r\n" },
	};
	static const size_t chunks[] = { 1, 2, 3, 7, 4096 };
	struct buf b = BUF_INIT;
	size_t i, c;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		for (c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
			buf_reset(&b);
			dkim_canon_body(rows[i].in, strlen(rows[i].in), chunks[c], &b);
			CHECK_MSG(b.len == strlen(rows[i].want) &&
			    memcmp(b.data, rows[i].want, b.len) == 0,
			    "row %zu chunk %zu: got \"%s\"", i, chunks[c], buf_cstr(&b));
		}
	}
	buf_free(&b);
}

/* A streamed message: header fields found, the body hash that of the
 * in every chunking. */
static void
test_msg_split(void)
{
	static const char msg[] =
	    "Received: from x\r\n\tby y; today\r\n"
	    "From: Alice\r\n <alice@example.org>\r\n"
	    "Subject: hi\r\n"
	    "\r\n"
	    " C \r\nD \t E\r\n\r\n\r\n";
	struct dkim_msg *m;
	struct buf v = BUF_INIT;
	size_t i;

	for (i = 1; i <= 9; i += 4) {
		struct dkim_keys *k = NULL;
		struct buf out = BUF_INIT, ids = BUF_INIT, err = BUF_INIT;
		size_t off;

		m = dkim_msg_new();
		for (off = 0; off < sizeof(msg) - 1; off += i)
			dkim_msg_write(m, msg + off, sizeof(msg) - 1 - off < i ? sizeof(msg) - 1 - off : i);
		buf_reset(&v);
		CHECK_INT(dkim_msg_field(m, "from", &v), 0);
		CHECK_STR(buf_cstr(&v), " Alice <alice@example.org>");
		buf_reset(&v);
		CHECK_INT(dkim_msg_field(m, "Subject", &v), 0);
		CHECK_STR(buf_cstr(&v), " hi");
		CHECK_INT(dkim_msg_field(m, "To", &v), -1);
		/* no keys: dkim_sign says so, and the body was still hashed */
		CHECK_INT(dkim_sign(k, "example.org", m, NULL, 1, &out, &ids, &err), -1);
		CHECK(out.len == 0);
		dkim_msg_free(m);
		buf_free(&out);
		buf_free(&ids);
		buf_free(&err);
	}
	buf_free(&v);
}

/* ---- keys ---- */

static char tmpdir[] = "/tmp/test_dkim.XXXXXX";

static char *
write_key(const char *name, EVP_PKEY *pk)
{
	char *path;
	FILE *fp;

	if (asprintf(&path, "%s/%s", tmpdir, name) < 0)
		abort();
	fp = fopen(path, "w");
	CHECK(fp != NULL);
	if (pk != NULL)
		CHECK(PEM_write_PrivateKey(fp, pk, NULL, NULL, 0, NULL, NULL) == 1);
	else
		fputs("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n", fp);
	fclose(fp);
	EVP_PKEY_free(pk);
	return path;
}

static struct conf *
conf_with_key(const char *domain, const char *sel, const char *path)
{
	struct conf *c = conf_new_defaults();

	c->dkim.keys = xcalloc(1, sizeof(*c->dkim.keys));
	c->dkim.keys[0].domain = xstrdup(domain);
	c->dkim.keys[0].selector = xstrdup(sel);
	c->dkim.keys[0].key = xstrdup(path);
	c->dkim.keys[0].file = xstrdup("/etc/relayd.conf");
	c->dkim.keys[0].line = 42;
	c->dkim.nkeys = 1;
	return c;
}

static void
test_keys(void)
{
	static const struct {
		const char *name;
		const char *gen;        /* EVP_PKEY_Q_keygen type, or NULL = not PEM */
		size_t bits;
		const char *err;        /* NULL = loads */
		const char *txt;        /* prefix of the TXT record */
	} rows[] = {
		{ "rsa2048.pem", "RSA", 2048, NULL, "v=DKIM1; k=rsa; p=MIIBIjAN" },
		{ "rsa1024.pem", "RSA", 1024, "/etc/relayd.conf:42: dkim.keys[0].key: '", NULL },
		{ "ed25519.pem", "ED25519", 0, NULL, "v=DKIM1; k=ed25519; p=" },
		{ "p256.pem", "EC", 0, "is neither an RSA nor an Ed25519 key", NULL },
		{ "garbage.pem", NULL, 0, "is not a PEM private key", NULL },
		{ "missing.pem", "missing", 0, "cannot read", NULL },
	};
	size_t i;

	if (mkdtemp(tmpdir) == NULL)
		abort();
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct buf err = BUF_INIT, txt = BUF_INIT;
		struct dkim_keys *k = NULL;
		struct dkim_key_info info;
		struct conf *c;
		EVP_PKEY *pk = NULL;
		char *path;
		int rc;

		if (rows[i].gen != NULL && strcmp(rows[i].gen, "RSA") == 0)
			pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", rows[i].bits);
		else if (rows[i].gen != NULL && strcmp(rows[i].gen, "EC") == 0)
			pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
		else if (rows[i].gen != NULL && strcmp(rows[i].gen, "ED25519") == 0)
			pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
		if (rows[i].gen != NULL && strcmp(rows[i].gen, "missing") == 0) {
			if (asprintf(&path, "%s/%s", tmpdir, rows[i].name) < 0)
				abort();
		} else
			path = write_key(rows[i].name, pk);
		c = conf_with_key("Example.ORG", "s1", path);
		rc = dkim_keys_load(c, &k, &err);
		if (rows[i].err == NULL) {
			CHECK_MSG(rc == 0, "%s: %s", rows[i].name, buf_cstr(&err));
			if (rc == 0) {
				CHECK_INT(dkim_keys_count(k), 1);
				dkim_keys_info(k, 0, &info);
				CHECK(dkim_keys_has(k, "example.org"));
				CHECK(dkim_keys_has(k, "EXAMPLE.org."));
				CHECK(!dkim_keys_has(k, "example.com"));
				dkim_keys_txt(k, 0, &txt);
				CHECK_MSG(strncmp(buf_cstr(&txt), rows[i].txt, strlen(rows[i].txt)) == 0,
				    "%s: %s", rows[i].name, buf_cstr(&txt));
				if (info.alg == DKIM_ED25519_SHA256)
					/* 32 raw bytes: 44 base64 characters */
					CHECK_INT(txt.len, strlen("v=DKIM1; k=ed25519; p=") + 44);
			}
		} else {
			CHECK_INT(rc, -1);
			CHECK(k == NULL);
			CHECK_MSG(strstr(buf_cstr(&err), rows[i].err) != NULL, "%s: %s",
			    rows[i].name, buf_cstr(&err));
			CHECK_MSG(strncmp(buf_cstr(&err), "/etc/relayd.conf:42: ", 21) == 0, "%s",
			    buf_cstr(&err));
		}
		dkim_keys_unref(k);
		conf_unref(c);
		unlink(path);
		free(path);
		buf_free(&err);
		buf_free(&txt);
	}
	rmdir(tmpdir);
}

/* A signature the signer made verifies with the public key (the real
 * verifier is dkimpy in the integration test): RSA over the data, Ed25519
 * over its SHA-256 (RFC 8463). */
static void
test_sign_shape(void)
{
	static const char msg[] =
	    "From: alice@example.org\r\nTo: bob@example.com\r\nSubject: x\r\n"
	    "List-Id: <l.example.org>\r\nList-Unsubscribe: <mailto:u@example.org>\r\n\r\nbody\r\n";
	static const char *const algs[] = { "ED25519", "RSA" };
	size_t i;

	if (mkdtemp(strcpy(tmpdir, "/tmp/test_dkim.XXXXXX")) == NULL)
		abort();
	for (i = 0; i < 2; i++) {
		EVP_PKEY *pk = i == 0 ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519") :
		    EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
		char *path = write_key("k.pem", pk);
		struct conf *c = conf_with_key("example.org", "sel", path);
		struct buf err = BUF_INIT, out = BUF_INIT, ids = BUF_INIT;
		struct dkim_keys *k = NULL;
		struct dkim_msg *m = dkim_msg_new();

		CHECK_INT(dkim_keys_load(c, &k, &err), 0);
		dkim_msg_write(m, msg, sizeof(msg) - 1);
		CHECK_INT(dkim_sign(k, "example.org", m, NULL, 1700000000, &out, &ids, &err), 0);
		CHECK_MSG(strncmp(buf_cstr(&out), "DKIM-Signature: v=1; a=", 23) == 0, "%s", algs[i]);
		CHECK(strstr(buf_cstr(&out), i == 0 ? "a=ed25519-sha256;" : "a=rsa-sha256;") != NULL);
		CHECK(strstr(buf_cstr(&out), "h=from:from:to:subject:list-id:list-unsubscribe;") != NULL);
		CHECK(strstr(buf_cstr(&out), "t=1700000000;") != NULL);
		CHECK(strstr(buf_cstr(&out), "l=") == NULL);
		/* bh of "body\r\n" */
		CHECK(strstr(buf_cstr(&out), "bh=Ck5SoRNWUpSR4X0COv7R5ub2pUTtl6xz4dTFz++ji4M=;") != NULL);
		CHECK_STR(buf_cstr(&ids), "d=example.org;s=sel");
		CHECK(out.len > 2 && memcmp(out.data + out.len - 2, "\r\n", 2) == 0);
		dkim_msg_free(m);
		dkim_keys_unref(k);
		conf_unref(c);
		unlink(path);
		free(path);
		buf_free(&err);
		buf_free(&out);
		buf_free(&ids);
	}
	rmdir(tmpdir);
}

/* A header section over 1 MiB is not held: the From is still found, but
 * signing fails (the caller answers 451, never an unsigned 250). */
static void
test_huge_header(void)
{
	struct dkim_msg *m = dkim_msg_new();
	struct buf v = BUF_INIT, out = BUF_INIT, ids = BUF_INIT, err = BUF_INIT;
	char line[1000];
	size_t i;

	dkim_msg_write(m, "From: a@example.org\r\n", 21);
	memset(line, 'x', sizeof(line));
	memcpy(line, "X-Pad: ", 7);
	line[sizeof(line) - 2] = '\r';
	line[sizeof(line) - 1] = '\n';
	for (i = 0; i < 2000; i++)
		dkim_msg_write(m, line, sizeof(line));
	dkim_msg_write(m, "\r\nbody\r\n", 8);
	CHECK_INT(dkim_msg_field(m, "From", &v), 0);
	CHECK_STR(buf_cstr(&v), " a@example.org");
	CHECK_INT(dkim_sign(NULL, "example.org", m, NULL, 1, &out, &ids, &err), -1);
	CHECK(strstr(buf_cstr(&err), "header section larger") != NULL);
	dkim_msg_free(m);
	buf_free(&v);
	buf_free(&out);
	buf_free(&ids);
	buf_free(&err);
}

int
main(void)
{
	test_huge_header();
	test_canon_header();
	test_canon_body();
	test_msg_split();
	test_keys();
	test_sign_shape();
	return check_done();
}
