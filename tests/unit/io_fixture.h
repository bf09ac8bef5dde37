/*
 * io_fixture.h - the fixture of the I/O layer's unit tests (test_io.c: lines,
 * flow control, errors and lifetime; test_io_tls.c: TLS): self-signed
 * certificates (EC and RSA) made with the OpenSSL API in a temporary
 * directory, and one real libuv loop with a uv_tcp_t listener on
 * 127.0.0.1:0, io_accept() on the server side and io_connect() on the
 * client side, each peer recording its events.  Not a test (CMake builds
 * only test_*.c); include it once.  Everything here is static: each test
 * program gets its own copy.
 */
#ifndef RELAY_IO_FIXTURE_H
#define RELAY_IO_FIXTURE_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <uv.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/buf.h"
#include "common/io.h"
#include "common/util.h"
#include "check.h"

#if defined(__SANITIZE_THREAD__)
#define WATCHDOG_MS 60000       /* TSan runs this code 5-15 times slower */
#else
#define WATCHDOG_MS 15000
#endif

static char tmpdir[64];

/* ------------------------------------------------------------------ */
/* A self-signed certificate for CN=localhost (SAN DNS:localhost). */

struct cert {
	const char *alg;            /* "RSA" or "EC" */
	char cert_file[128], key_file[128];
};

static struct cert certs[] __attribute__((unused)) = { { .alg = "EC" }, { .alg = "RSA" } };

static inline X509_EXTENSION *
cert_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX ctx;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	return X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
}

static inline void
cert_make(struct cert *c)
{
	EVP_PKEY *pkey;
	X509 *x;
	X509_NAME *name;
	X509_EXTENSION *ext;
	FILE *f;

	if (strcmp(c->alg, "RSA") == 0)
		pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	else
		pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (pkey == NULL)
		fatalx("%s: %s keygen failed", __func__, c->alg);
	x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, pkey);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(x, name);
	ext = cert_ext(x, NID_subject_alt_name, "DNS:localhost");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	ext = cert_ext(x, NID_basic_constraints, "critical,CA:TRUE");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	if (X509_sign(x, pkey, EVP_sha256()) == 0)
		fatalx("%s: X509_sign failed", __func__);

	snprintf(c->cert_file, sizeof(c->cert_file), "%s/%s-cert.pem", tmpdir, c->alg);
	snprintf(c->key_file, sizeof(c->key_file), "%s/%s-key.pem", tmpdir, c->alg);
	if ((f = fopen(c->cert_file, "w")) == NULL || PEM_write_X509(f, x) != 1)
		fatalx("%s: cannot write %s", __func__, c->cert_file);
	fclose(f);
	if ((f = fopen(c->key_file, "w")) == NULL ||
	    PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) != 1)
		fatalx("%s: cannot write %s", __func__, c->key_file);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(pkey);
}

static inline SSL_CTX *
server_ctx(const struct cert *c)
{
	char err[256] = "";
	SSL_CTX *ctx = io_tls_server_ctx(c->cert_file, c->key_file, err, sizeof(err));

	if (ctx == NULL)
		fatalx("%s: %s", __func__, err);
	return ctx;
}

static inline SSL_CTX *
client_ctx(const char *ca_file)
{
	char err[256] = "";
	SSL_CTX *ctx = io_tls_client_ctx(ca_file, err, sizeof(err));

	if (ctx == NULL)
		fatalx("%s: %s", __func__, err);
	return ctx;
}

/* ------------------------------------------------------------------ */
/* The fixture: one loop, one listener, a server peer and a client peer. */

struct fix;

struct peer {
	struct fix *fx;
	const char *name;
	struct io *io;
	bool freed;                 /* io_free()d or handed to io_close_after_drain() */
	bool paused;                /* the test paused it: stop taking lines */
	bool ended;                 /* EOF or ERROR seen */
	int nev[IO_EV_ERROR + 1];
	int after_free;             /* callbacks after we let go: must stay 0 */
	int after_end;              /* events after EOF/ERROR: must stay 0 */
	struct buf rec;             /* lines (escaped) and events, '|'-separated */
	bool record;                /* record every line in rec */
	size_t nlines, nlong, bytes;
	size_t seq, badseq;         /* numbered bulk lines: next expected, mismatches */
	enum io_error err;
	char errtext[256];
	/* behaviour: NULL = the default (take lines; free on EOF/ERROR/TIMEOUT) */
	void (*on_event)(struct peer *p, enum io_event ev);
	void (*on_line)(struct peer *p, const char *line, size_t len);
};

struct fix {
	uv_loop_t loop;
	uv_tcp_t listener;
	bool listening;
	struct sockaddr_in addr;
	struct peer srv, cli;
	uv_timer_t watchdog, timer;
	bool watchdog_fired;
	void (*on_accept)(struct fix *fx);
	void (*on_timer)(struct fix *fx);
	SSL_CTX *sctx, *cctx;
	void *ctx;                  /* per-test state */
	uint64_t t0;
};

static inline void peer_cb(struct io *io, enum io_event ev, void *arg);

static inline void
rec_add(struct peer *p, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\r')
			buf_puts(&p->rec, "\\r");
		else if (s[i] == '\n')
			buf_puts(&p->rec, "\\n");
		else
			buf_putc(&p->rec, s[i]);
	}
	buf_putc(&p->rec, '|');
}

static inline void
rec_event(struct peer *p, const char *what)
{
	rec_add(p, what, strlen(what));
}

static inline void
peer_free(struct peer *p)
{
	if (p->io != NULL && !p->freed) {
		p->freed = true;
		io_free(p->io);
	}
}

static inline void
peer_close_drain(struct peer *p)
{
	if (p->io != NULL && !p->freed) {
		p->freed = true;
		io_close_after_drain(p->io);
	}
}

/* A bulk line: "%08zu" sequence number, filler, CRLF; len bytes in all. */
static inline void
bulk_line(struct buf *b, size_t seq, size_t len)
{
	size_t start = b->len;

	buf_printf(b, "%08zu", seq);
	while (b->len - start < len - 2)
		buf_putc(b, (char)('a' + (seq + b->len - start) % 26));
	buf_puts(b, "\r\n");
}

static inline void
bulk_make(struct buf *b, size_t total, size_t len)
{
	for (size_t i = 0; i < total / len; i++)
		bulk_line(b, i, len);
}

static inline void
bulk_check(struct peer *p, const char *line, size_t len)
{
	struct buf want = BUF_INIT;

	bulk_line(&want, p->seq, len);
	if (want.len != len || memcmp(want.data, line, len) != 0)
		p->badseq++;
	p->seq++;
	buf_free(&want);
}

/* on_line for a peer that receives bulk lines: each is checked. */
static inline void
bulk_on_line(struct peer *p, const char *line, size_t len)
{
	bulk_check(p, line, len);
}

static inline void
peer_take_lines(struct peer *p)
{
	const char *line;
	size_t len;
	enum io_line r;

	while (!p->freed && !p->paused) {
		r = io_getline(p->io, &line, &len);
		if (r == IO_LINE_NONE)
			break;
		if (r == IO_LINE_LONG) {
			p->nlong++;
			rec_event(p, "<LONG>");
			continue;
		}
		p->nlines++;
		p->bytes += len;
		if (p->record)
			rec_add(p, line, len);
		if (p->on_line != NULL)
			p->on_line(p, line, len);
	}
}

static inline void
peer_default(struct peer *p, enum io_event ev)
{
	switch (ev) {
	case IO_EV_IN:
		peer_take_lines(p);
		break;
	case IO_EV_TLS_READY:
		rec_event(p, "TLS");
		break;
	case IO_EV_EOF:
		rec_event(p, "EOF");
		peer_free(p);
		break;
	case IO_EV_ERROR:
		rec_event(p, "ERROR");
		peer_free(p);
		break;
	case IO_EV_TIMEOUT:
		rec_event(p, "TIMEOUT");
		peer_free(p);
		break;
	case IO_EV_CONNECTED:
	case IO_EV_DRAINED:
		break;
	}
}

static inline void
peer_cb(struct io *io, enum io_event ev, void *arg)
{
	struct peer *p = arg;

	if (p->freed) {
		p->after_free++;
		fprintf(stderr, "%s: event %d after io_free\n", p->name, (int)ev);
		return;
	}
	if (io != p->io)
		fatalx("%s: %s: wrong io", __func__, p->name);
	if (p->ended) {
		p->after_end++;
		fprintf(stderr, "%s: event %d after EOF/ERROR\n", p->name, (int)ev);
	}
	p->nev[ev]++;
	if (ev == IO_EV_EOF || ev == IO_EV_ERROR)
		p->ended = true;
	if (ev == IO_EV_ERROR) {
		p->err = io_error(io);
		snprintf(p->errtext, sizeof(p->errtext), "%s", io_error_text(io));
	}
	if (p->on_event != NULL)
		p->on_event(p, ev);
	else
		peer_default(p, ev);
}

static inline void
on_watchdog(uv_timer_t *t)
{
	struct fix *fx = t->data;

	fx->watchdog_fired = true;
	fprintf(stderr, "watchdog: the test did not finish in %d ms\n", WATCHDOG_MS);
	uv_stop(&fx->loop);
}

static inline void
on_fix_timer(uv_timer_t *t)
{
	struct fix *fx = t->data;

	if (fx->on_timer != NULL)
		fx->on_timer(fx);
}

static inline void
fix_stop_listening(struct fix *fx)
{
	if (fx->listening) {
		fx->listening = false;
		uv_close((uv_handle_t *)&fx->listener, NULL);
	}
}

static inline void
on_connection(uv_stream_t *server, int status)
{
	struct fix *fx = server->data;

	if (status != 0 || fx->srv.io != NULL)
		return;
	fx->srv.io = io_new(&fx->loop, peer_cb, &fx->srv);
	CHECK_INT(io_accept(fx->srv.io, server), 0);
	CHECK_STR(io_peer_ip(fx->srv.io), "127.0.0.1");
	fix_stop_listening(fx);
	if (fx->on_accept != NULL)
		fx->on_accept(fx);
}

static inline void
fix_init(struct fix *fx)
{
	struct sockaddr_in sin;
	int len = sizeof(fx->addr);

	memset(fx, 0, sizeof(*fx));
	if (uv_loop_init(&fx->loop) != 0)
		fatalx("%s: uv_loop_init", __func__);
	uv_tcp_init(&fx->loop, &fx->listener);
	fx->listener.data = fx;
	uv_ip4_addr("127.0.0.1", 0, &sin);
	if (uv_tcp_bind(&fx->listener, (const struct sockaddr *)&sin, 0) != 0 ||
	    uv_listen((uv_stream_t *)&fx->listener, 8, on_connection) != 0 ||
	    uv_tcp_getsockname(&fx->listener, (struct sockaddr *)&fx->addr, &len) != 0)
		fatalx("%s: cannot listen on 127.0.0.1", __func__);
	fx->listening = true;
	uv_timer_init(&fx->loop, &fx->watchdog);
	uv_timer_init(&fx->loop, &fx->timer);
	fx->watchdog.data = fx->timer.data = fx;
	uv_timer_start(&fx->watchdog, on_watchdog, WATCHDOG_MS, 0);
	uv_unref((uv_handle_t *)&fx->watchdog);     /* it never keeps the loop alive */
	fx->srv.fx = fx->cli.fx = fx;
	fx->srv.name = "server";
	fx->cli.name = "client";
	fx->srv.record = fx->cli.record = true;
	fx->cli.io = io_new(&fx->loop, peer_cb, &fx->cli);
	fx->t0 = uv_now(&fx->loop);
}

static inline void
fix_connect(struct fix *fx)
{
	CHECK_INT(io_connect(fx->cli.io, (const struct sockaddr *)&fx->addr, 5000), 0);
}

static inline void
fix_timer(struct fix *fx, uint64_t ms, void (*fn)(struct fix *))
{
	fx->on_timer = fn;
	uv_timer_start(&fx->timer, on_fix_timer, ms, 0);
}

/* Run until every handle is closed; the loop must then close cleanly. */
static inline void
fix_run(struct fix *fx, const char *test)
{
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	CHECK_MSG(!fx->watchdog_fired, "%s: watchdog fired", test);
	CHECK_MSG(fx->srv.io == NULL || fx->srv.freed, "%s: server io never freed", test);
	CHECK_MSG(fx->cli.freed, "%s: client io never freed", test);
	CHECK_MSG(fx->srv.after_free == 0 && fx->cli.after_free == 0,
	    "%s: callback after io_free (server %d, client %d)", test,
	    fx->srv.after_free, fx->cli.after_free);
	CHECK_MSG(fx->srv.after_end == 0 && fx->cli.after_end == 0,
	    "%s: event after EOF/ERROR (server %d, client %d)", test,
	    fx->srv.after_end, fx->cli.after_end);
	/* Whatever is left (after a failure) is closed so the loop can end. */
	peer_free(&fx->srv);
	peer_free(&fx->cli);
	fix_stop_listening(fx);
	uv_close((uv_handle_t *)&fx->watchdog, NULL);
	uv_close((uv_handle_t *)&fx->timer, NULL);
	if (fx->watchdog_fired) {
		/* An io that ignores io_free() would keep the loop alive: do not hang. */
		for (int i = 0; i < 10; i++)
			uv_run(&fx->loop, UV_RUN_NOWAIT);
	} else
		uv_run(&fx->loop, UV_RUN_DEFAULT);
	CHECK_MSG(uv_loop_close(&fx->loop) == 0, "%s: loop did not close cleanly", test);
	if (fx->sctx != NULL)
		SSL_CTX_free(fx->sctx);
	if (fx->cctx != NULL)
		SSL_CTX_free(fx->cctx);
}

/* After the test's checks. */
static inline void
fix_free(struct fix *fx)
{
	buf_free(&fx->srv.rec);
	buf_free(&fx->cli.rec);
}

/* ------------------------------------------------------------------ */
/* The program's set-up: the temporary directory and the certificates. */

static inline void
io_fixture_setup(const char *name)
{
	signal(SIGPIPE, SIG_IGN);       /* as relayd does: a reset peer is an EPIPE */
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/%s.XXXXXX", name);
	if (mkdtemp(tmpdir) == NULL)
		fatalx("mkdtemp: %s", strerror(errno));
	for (size_t i = 0; i < RELAY_ARRAY_LEN(certs); i++)
		cert_make(&certs[i]);
}

static inline void
io_fixture_teardown(void)
{
	for (size_t i = 0; i < RELAY_ARRAY_LEN(certs); i++) {
		unlink(certs[i].cert_file);
		unlink(certs[i].key_file);
	}
	rmdir(tmpdir);
}

#endif
