/*
 * test_io.c - the I/O layer (common/io.c) over real loopback TCP: a real
 * libuv loop, a uv_tcp_t listener on 127.0.0.1:0, io_accept() on the server
 * side and io_connect() on the client side, real TLS with a self-signed
 * certificate made here with the OpenSSL API.  Each test states the behaviour
 * it proves and ends with uv_loop_close() == 0.
 */
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

#define WATCHDOG_MS 15000

static char tmpdir[64];

/* ------------------------------------------------------------------ */
/* A self-signed certificate for CN=localhost (SAN DNS:localhost). */

struct cert {
	const char *alg;            /* "RSA" or "EC" */
	char cert_file[128], key_file[128];
};

static struct cert certs[] = { { .alg = "EC" }, { .alg = "RSA" } };

static X509_EXTENSION *
cert_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX ctx;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	return X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
}

static void
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

static SSL_CTX *
server_ctx(const struct cert *c)
{
	char err[256] = "";
	SSL_CTX *ctx = io_tls_server_ctx(c->cert_file, c->key_file, err, sizeof(err));

	if (ctx == NULL)
		fatalx("%s: %s", __func__, err);
	return ctx;
}

static SSL_CTX *
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

static void peer_cb(struct io *io, enum io_event ev, void *arg);

static void
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

static void
rec_event(struct peer *p, const char *what)
{
	rec_add(p, what, strlen(what));
}

static void
peer_free(struct peer *p)
{
	if (p->io != NULL && !p->freed) {
		p->freed = true;
		io_free(p->io);
	}
}

static void
peer_close_drain(struct peer *p)
{
	if (p->io != NULL && !p->freed) {
		p->freed = true;
		io_close_after_drain(p->io);
	}
}

/* A bulk line: "%08zu" sequence number, filler, CRLF; len bytes in all. */
static void
bulk_line(struct buf *b, size_t seq, size_t len)
{
	size_t start = b->len;

	buf_printf(b, "%08zu", seq);
	while (b->len - start < len - 2)
		buf_putc(b, (char)('a' + (seq + b->len - start) % 26));
	buf_puts(b, "\r\n");
}

static void
bulk_make(struct buf *b, size_t total, size_t len)
{
	for (size_t i = 0; i < total / len; i++)
		bulk_line(b, i, len);
}

static void
bulk_check(struct peer *p, const char *line, size_t len)
{
	struct buf want = BUF_INIT;

	bulk_line(&want, p->seq, len);
	if (want.len != len || memcmp(want.data, line, len) != 0)
		p->badseq++;
	p->seq++;
	buf_free(&want);
}

static void
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

static void
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

static void
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

static void
on_watchdog(uv_timer_t *t)
{
	struct fix *fx = t->data;

	fx->watchdog_fired = true;
	fprintf(stderr, "watchdog: the test did not finish in %d ms\n", WATCHDOG_MS);
	uv_stop(&fx->loop);
}

static void
on_fix_timer(uv_timer_t *t)
{
	struct fix *fx = t->data;

	if (fx->on_timer != NULL)
		fx->on_timer(fx);
}

static void
fix_stop_listening(struct fix *fx)
{
	if (fx->listening) {
		fx->listening = false;
		uv_close((uv_handle_t *)&fx->listener, NULL);
	}
}

static void
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

static void
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

static void
fix_connect(struct fix *fx)
{
	CHECK_INT(io_connect(fx->cli.io, (const struct sockaddr *)&fx->addr, 5000), 0);
}

static void
fix_timer(struct fix *fx, uint64_t ms, void (*fn)(struct fix *))
{
	fx->on_timer = fn;
	uv_timer_start(&fx->timer, on_fix_timer, ms, 0);
}

/* Run until every handle is closed; the loop must then close cleanly. */
static void
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
static void
fix_free(struct fix *fx)
{
	buf_free(&fx->srv.rec);
	buf_free(&fx->cli.rec);
}

/* ------------------------------------------------------------------ */
/*
 * Line splitting: the client writes each chunk only once the server has seen
 * the previous one arrive (so each lands in its own read), then closes; the
 * server's lines, IO_LINE_LONG marks and EOF are compared with the table.
 */

struct line_case {
	const char *name;
	size_t max_line;            /* 0 = default (1000) */
	const char *chunks[6];
	const char *want;           /* rec: lines with \r \n escaped, '|'-separated */
	size_t want_pending;        /* io_input_pending() at EOF */
};

static const struct line_case line_cases[] = {
	{ "one line in one write", 0, { "HELO a\r\n" }, "HELO a\\r\\n|EOF|", 0 },
	{ "two lines in one write", 0, { "A\r\nB\r\n" }, "A\\r\\n|B\\r\\n|EOF|", 0 },
	{ "a line split across three writes", 0, { "HE", "LO a", "\r\n" }, "HELO a\\r\\n|EOF|", 0 },
	{ "CRLF split between writes", 0, { "HELO a\r", "\nNEXT\r\n" },
	  "HELO a\\r\\n|NEXT\\r\\n|EOF|", 0 },
	{ "bare LF ends a line", 0, { "X\nY\r\n" }, "X\\n|Y\\r\\n|EOF|", 0 },
	{ "empty lines", 0, { "\r\n\r\n" }, "\\r\\n|\\r\\n|EOF|", 0 },
	{ "an unterminated tail stays pending at EOF", 0, { "A\r\nB" }, "A\\r\\n|EOF|", 1 },
	{ "exactly max_line bytes is a line", 16, { "0123456789abcd\r\n" },
	  "0123456789abcd\\r\\n|EOF|", 0 },
	{ "max_line + 1 with its LF in the same read is one LONG", 16,
	  { "0123456789abcde\r\nOK\r\n" }, "<LONG>|OK\\r\\n|EOF|", 0 },
	{ "overlong without LF: one LONG, discarded to its LF, then lines resume", 16,
	  { "0123456789abcdefXYZ", "tail\r\nOK\r\n" }, "<LONG>|OK\\r\\n|EOF|", 0 },
	{ "overlong across many reads is still exactly one LONG", 16,
	  { "0123456789", "abcdefghij", "klmnopqrst", "uv\r", "\nOK\r\n" },
	  "<LONG>|OK\\r\\n|EOF|", 0 },
	{ "two overlong lines, two LONGs", 16,
	  { "0123456789abcdefghij\r\n0123456789abcdefghij", "\r\nOK\r\n" },
	  "<LONG>|<LONG>|OK\\r\\n|EOF|", 0 },
	{ "an overlong line's LF alone in the next read", 16,
	  { "0123456789abcdefghijklmn\r", "\n", "OK\r\n" }, "<LONG>|OK\\r\\n|EOF|", 0 },
	{ "a line ending exactly at the limit after a long one", 8,
	  { "0123456789\r\n", "012345\r\n" }, "<LONG>|012345\\r\\n|EOF|", 0 },
};

struct line_state {
	const struct line_case *lc;
	size_t next;                /* next chunk to write */
	size_t pending_at_eof;
};

static void
line_next_chunk(struct fix *fx)
{
	struct line_state *ls = fx->ctx;
	const char *c;

	if (fx->cli.freed)
		return;
	c = ls->next < RELAY_ARRAY_LEN(ls->lc->chunks) ? ls->lc->chunks[ls->next] : NULL;
	if (c == NULL) {
		peer_close_drain(&fx->cli);
		return;
	}
	ls->next++;
	io_write(fx->cli.io, c, strlen(c));
}

static void
line_srv_event(struct peer *p, enum io_event ev)
{
	struct line_state *ls = p->fx->ctx;

	if (ev == IO_EV_EOF)
		ls->pending_at_eof = io_input_pending(p->io);
	peer_default(p, ev);
	/* The chunk arrived: send the next one (outside this io's callback). */
	if (ev == IO_EV_IN)
		fix_timer(p->fx, 1, line_next_chunk);
}

static void
line_cli_event(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_CONNECTED)
		fix_timer(p->fx, 0, line_next_chunk);
	peer_default(p, ev);
}

static void
line_srv_accept(struct fix *fx)
{
	struct line_state *ls = fx->ctx;

	if (ls->lc->max_line > 0)
		io_set_max_line(fx->srv.io, ls->lc->max_line);
}

static void
test_lines(void)
{
	for (size_t i = 0; i < RELAY_ARRAY_LEN(line_cases); i++) {
		const struct line_case *lc = &line_cases[i];
		struct line_state ls = { lc, 0, 0 };
		struct fix fx;

		fix_init(&fx);
		fx.ctx = &ls;
		fx.on_accept = line_srv_accept;
		fx.srv.on_event = line_srv_event;
		fx.cli.on_event = line_cli_event;
		fix_connect(&fx);
		fix_run(&fx, lc->name);
		CHECK_MSG(strcmp(buf_cstr(&fx.srv.rec), lc->want) == 0, "%s: got \"%s\", want \"%s\"",
		    lc->name, buf_cstr(&fx.srv.rec), lc->want);
		CHECK_MSG(ls.pending_at_eof == lc->want_pending, "%s: %zu bytes pending at EOF, want %zu",
		    lc->name, ls.pending_at_eof, lc->want_pending);
		fix_free(&fx);
	}
}

/* ------------------------------------------------------------------ */
/*
 * Pause/resume: the server takes one line, pauses, and resumes 20 ms later
 * without any new input arriving.  io_resume() must re-deliver IO_EV_IN for
 * what is buffered, nothing may arrive while paused, and the client's EOF
 * (sent right behind the lines) must wait until the buffered lines are taken
 * (the original delivered it while paused, losing B and C).
 */

struct pause_state {
	int in_while_paused;
	int resumes;
};

static void
pause_resume(struct fix *fx)
{
	struct pause_state *ps = fx->ctx;

	if (fx->srv.freed)
		return;
	ps->resumes++;
	fx->srv.paused = false;
	io_resume(fx->srv.io);
}

static void
pause_srv_event(struct peer *p, enum io_event ev)
{
	struct pause_state *ps = p->fx->ctx;

	if (p->paused && ev == IO_EV_IN)
		ps->in_while_paused++;
	peer_default(p, ev);
}

static void
pause_srv_line(struct peer *p, const char *line, size_t len)
{
	p->paused = true;
	io_pause(p->io);
	fix_timer(p->fx, 20, pause_resume);
}

static void
pause_cli_event(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_CONNECTED) {
		io_write(p->io, "A\r\nB\r\nC\r\n", 9);
		peer_close_drain(p);
		return;
	}
	peer_default(p, ev);
}

static void
test_pause_resume(void)
{
	struct pause_state ps = { 0, 0 };
	struct fix fx;

	fix_init(&fx);
	fx.ctx = &ps;
	fx.srv.on_event = pause_srv_event;
	fx.srv.on_line = pause_srv_line;
	fx.cli.on_event = pause_cli_event;
	fix_connect(&fx);
	fix_run(&fx, "pause/resume");
	/* resume re-delivers the buffered lines; EOF comes once the last is taken */
	CHECK_STR(buf_cstr(&fx.srv.rec), "A\\r\\n|B\\r\\n|C\\r\\n|EOF|");
	CHECK_INT(ps.resumes, 2);
	CHECK_INT(ps.in_while_paused, 0);
	fix_free(&fx);
}

/* ------------------------------------------------------------------ */
/*
 * Close after drain: the server queues 4 MiB (far more than the socket takes
 * at once) and calls io_close_after_drain(); the client must receive every
 * byte, in order, then EOF.  The server's callback is never called again.
 */

#define DRAIN_TOTAL (4u << 20)

static void
drain_srv_accept(struct fix *fx)
{
	struct buf b = BUF_INIT;

	bulk_make(&b, DRAIN_TOTAL, 64);
	io_write(fx->srv.io, b.data, b.len);
	buf_free(&b);
	CHECK(io_output_pending(fx->srv.io) > 0);
	peer_close_drain(&fx->srv);
}

static void
bulk_on_line(struct peer *p, const char *line, size_t len)
{
	bulk_check(p, line, len);
}

static void
test_close_after_drain(void)
{
	struct fix fx;

	fix_init(&fx);
	fx.on_accept = drain_srv_accept;
	fx.cli.record = false;
	fx.cli.on_line = bulk_on_line;
	fix_connect(&fx);
	fix_run(&fx, "close after drain");
	CHECK_INT(fx.cli.bytes, DRAIN_TOTAL);
	CHECK_INT(fx.cli.seq, DRAIN_TOTAL / 64);
	CHECK_INT(fx.cli.badseq, 0);
	CHECK_INT(fx.cli.nev[IO_EV_EOF], 1);
	fix_free(&fx);
}

/* ------------------------------------------------------------------ */
/*
 * Backpressure: the client pipelines 100,000 commands and does not read the
 * replies (paused) for 300 ms.  The server answers every line with 200 bytes
 * (20 MB in all); it must stop reading instead of queueing it all, so its
 * pending output stays bounded.  Then the client reads; every reply arrives.
 */

#define BP_LINES 100000
#define BP_REPLY 200

struct bp_state {
	size_t max_srv_out;
	size_t max_cli_in;
	unsigned waits;
};

static void
bp_srv_line(struct peer *p, const char *line, size_t len)
{
	struct bp_state *bs = p->fx->ctx;
	struct buf b = BUF_INIT;
	size_t pending;

	bulk_line(&b, p->nlines - 1, BP_REPLY);
	io_write(p->io, b.data, b.len);
	buf_free(&b);
	pending = io_output_pending(p->io);
	if (pending > bs->max_srv_out)
		bs->max_srv_out = pending;
	if (p->nlines == BP_LINES)
		peer_close_drain(p);
}

static void
bp_resume(struct fix *fx)
{
	struct bp_state *bs = fx->ctx;

	if (fx->cli.freed)
		return;
	bs->max_cli_in = io_input_pending(fx->cli.io);
	/* On a slow (sanitizer) build the replies may not have arrived yet:
	 * stay paused until some have, so the pause is really exercised. */
	if (bs->max_cli_in == 0 && ++bs->waits < 100) {
		fix_timer(fx, 100, bp_resume);
		return;
	}
	fx->cli.paused = false;
	io_resume(fx->cli.io);
}

static void
bp_cli_event(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_CONNECTED) {
		struct buf b = BUF_INIT;

		for (size_t i = 0; i < BP_LINES; i++)
			buf_puts(&b, "NOOP\r\n");
		io_pause(p->io);
		p->paused = true;
		io_write(p->io, b.data, b.len);
		buf_free(&b);
		fix_timer(p->fx, 300, bp_resume);
		return;
	}
	peer_default(p, ev);
}

static void
test_backpressure(void)
{
	struct bp_state bs = { 0, 0, 0 };
	struct fix fx;

	fix_init(&fx);
	fx.ctx = &bs;
	fx.srv.record = fx.cli.record = false;
	fx.srv.on_line = bp_srv_line;
	fx.cli.on_line = bulk_on_line;
	fx.cli.on_event = bp_cli_event;
	fix_connect(&fx);
	fix_run(&fx, "backpressure");
	CHECK_INT(fx.srv.nlines, BP_LINES);
	CHECK_INT(fx.cli.seq, BP_LINES);
	CHECK_INT(fx.cli.badseq, 0);
	/* 1 MiB cap, overshoot by at most one 64 KiB read's worth of replies */
	CHECK_MSG(bs.max_srv_out < (1u << 20) + (64u << 10) / 6 * BP_REPLY + BP_REPLY,
	    "server queued %zu bytes of output for a peer that does not read", bs.max_srv_out);
	/* the paused client buffered at most its input cap plus one read */
	CHECK_MSG(bs.max_cli_in <= (256u << 10) + (64u << 10),
	    "paused client buffered %zu bytes", bs.max_cli_in);
	CHECK_MSG(bs.max_cli_in > 0, "paused client buffered nothing");
	fix_free(&fx);
}

/* ------------------------------------------------------------------ */
/*
 * STARTTLS: the client sends "STARTTLS\r\nINJECT\r\n" in one write; the
 * server answers "220 go\r\n" with "250 INJECTED\r\n" pipelined behind it and
 * starts TLS.  Neither side may see the other's pipelined plaintext as a line
 * once TLS is on (CVE-2011-0411); the TLS conversation then works.
 */

static void
stls_srv_line(struct peer *p, const char *line, size_t len)
{
	if (len == 10 && memcmp(line, "STARTTLS\r\n", 10) == 0) {
		io_write(p->io, "220 go\r\n250 INJECTED\r\n", 22);
		CHECK_INT(io_start_tls_server(p->io, p->fx->sctx), 0);
		CHECK_INT(io_input_pending(p->io), 0);
	} else if (len == 10 && memcmp(line, "EHLO tls\r\n", 10) == 0) {
		CHECK(io_is_tls(p->io));
		io_write(p->io, "250 ok\r\n", 8);
	}
}

static void
stls_cli_line(struct peer *p, const char *line, size_t len)
{
	if (len == 8 && memcmp(line, "220 go\r\n", 8) == 0) {
		CHECK_INT(io_start_tls_client(p->io, p->fx->cctx, "localhost", false), 0);
		CHECK_INT(io_input_pending(p->io), 0);
	} else if (len == 8 && memcmp(line, "250 ok\r\n", 8) == 0) {
		peer_close_drain(p);
	}
}

static void
stls_cli_event(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_CONNECTED)
		io_write(p->io, "STARTTLS\r\nINJECT\r\n", 18);
	else if (ev == IO_EV_TLS_READY) {
		CHECK(io_is_tls(p->io));
		CHECK(io_tls_version(p->io) != NULL);
		CHECK(io_tls_cipher(p->io) != NULL);
		CHECK(io_tls_cipher_bits(p->io) >= 128);
		io_write(p->io, "EHLO tls\r\n", 10);
	}
	peer_default(p, ev);
}

static void
test_starttls(void)
{
	for (size_t i = 0; i < RELAY_ARRAY_LEN(certs); i++) {
		struct fix fx;
		char name[64];

		snprintf(name, sizeof(name), "STARTTLS (%s)", certs[i].alg);
		fix_init(&fx);
		fx.sctx = server_ctx(&certs[i]);
		fx.cctx = client_ctx(NULL);
		fx.srv.on_line = stls_srv_line;
		fx.cli.on_line = stls_cli_line;
		fx.cli.on_event = stls_cli_event;
		fix_connect(&fx);
		fix_run(&fx, name);
		CHECK_STR(buf_cstr(&fx.srv.rec), "STARTTLS\\r\\n|TLS|EHLO tls\\r\\n|EOF|");
		CHECK_STR(buf_cstr(&fx.cli.rec), "220 go\\r\\n|TLS|250 ok\\r\\n|");
		fix_free(&fx);
	}
}

/* ------------------------------------------------------------------ */
/*
 * TLS bulk: implicit TLS, then each side sends 1 MiB of numbered lines (the
 * server as 16,384 io_write()s coalesced in one callback, the client as one
 * io_write()); each side checks every line arrived intact and in order.
 */

#define TLS_BULK (1u << 20)

static void
tlsbulk_srv_accept(struct fix *fx)
{
	CHECK_INT(io_start_tls_server(fx->srv.io, fx->sctx), 0);
}

static void
tlsbulk_srv_event(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_TLS_READY) {
		struct buf b = BUF_INIT;

		for (size_t i = 0; i < TLS_BULK / 64; i++) {
			buf_reset(&b);
			bulk_line(&b, i, 64);
			io_write(p->io, b.data, b.len);
		}
		buf_free(&b);
	}
	peer_default(p, ev);
}

static void
tlsbulk_cli_line(struct peer *p, const char *line, size_t len)
{
	bulk_check(p, line, len);
	if (p->seq == TLS_BULK / 64)
		peer_close_drain(p);
}

static void
tlsbulk_cli_event(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_CONNECTED)
		CHECK_INT(io_start_tls_client(p->io, p->fx->cctx, "localhost", false), 0);
	else if (ev == IO_EV_TLS_READY) {
		struct buf b = BUF_INIT;

		bulk_make(&b, TLS_BULK, 64);
		io_write(p->io, b.data, b.len);
		buf_free(&b);
	}
	peer_default(p, ev);
}

static void
test_tls_bulk(void)
{
	struct fix fx;

	fix_init(&fx);
	fx.sctx = server_ctx(&certs[0]);
	fx.cctx = client_ctx(NULL);
	fx.srv.record = fx.cli.record = false;
	fx.on_accept = tlsbulk_srv_accept;
	fx.srv.on_event = tlsbulk_srv_event;
	fx.srv.on_line = bulk_on_line;
	fx.cli.on_event = tlsbulk_cli_event;
	fx.cli.on_line = tlsbulk_cli_line;
	fix_connect(&fx);
	fix_run(&fx, "TLS 1 MiB both ways");
	CHECK_INT(fx.srv.seq, TLS_BULK / 64);
	CHECK_INT(fx.srv.badseq, 0);
	CHECK_INT(fx.cli.seq, TLS_BULK / 64);
	CHECK_INT(fx.cli.badseq, 0);
	CHECK_INT(fx.srv.nev[IO_EV_EOF], 1);        /* the client's close_notify */
	CHECK_INT(fx.srv.nev[IO_EV_TLS_READY], 1);
	CHECK_INT(fx.cli.nev[IO_EV_TLS_READY], 1);
	fix_free(&fx);
}

/* ------------------------------------------------------------------ */
/*
 * Verification: implicit TLS against the self-signed certificate.  Trusting
 * only the system store must fail with IO_ERR_TLS and "certificate verify
 * failed"; trusting the certificate itself passes for "localhost" and fails
 * for another name.
 */

struct verify_case {
	const char *name;
	bool trust_cert;            /* ca_file = the certificate, else system store */
	const char *servername;
	bool verify;
	bool want_ok;
	const char *want_text;      /* substring of io_tls_error() */
	bool stale_error;           /* leave an unrelated error on OpenSSL's queue first */
};

static const struct verify_case verify_cases[] = {
	{ "self-signed vs system store", false, "localhost", true, false, "certificate verify failed", false },
	{ "self-signed vs system store, verify off", false, "localhost", false, true, NULL, false },
	{ "trusted, name matches", true, "localhost", true, true, NULL, false },
	{ "trusted, name differs", true, "mx.example.org", true, false, "certificate verify failed", false },
	/* e.g. X509_STORE loading a duplicate CA leaves this behind; SSL_get_error()
	 * must not mistake it for a failure of the handshake's WANT_READ */
	{ "a stale error on the thread's OpenSSL queue", true, "localhost", true, true, NULL, true },
};

static void
verify_cli_event(struct peer *p, enum io_event ev)
{
	const struct verify_case *vc = p->fx->ctx;

	if (ev == IO_EV_CONNECTED) {
		if (vc->stale_error)
			ERR_raise(ERR_LIB_X509, X509_R_CERT_ALREADY_IN_HASH_TABLE);
		CHECK_INT(io_start_tls_client(p->io, p->fx->cctx, vc->servername, vc->verify), 0);
	} else if (ev == IO_EV_TLS_READY)
		peer_close_drain(p);
	else if (ev == IO_EV_ERROR) {
		const char *t = io_tls_error(p->io);

		CHECK_INT(io_error(p->io), IO_ERR_TLS);
		CHECK_MSG(t != NULL && vc->want_text != NULL && strstr(t, vc->want_text) != NULL,
		    "%s: io_tls_error() = \"%s\", want \"%s\"", vc->name, t ? t : "(null)",
		    vc->want_text ? vc->want_text : "(none)");
	}
	peer_default(p, ev);
}

static void
verify_srv_accept(struct fix *fx)
{
	const struct verify_case *vc = fx->ctx;

	if (vc->stale_error)
		ERR_raise(ERR_LIB_X509, X509_R_CERT_ALREADY_IN_HASH_TABLE);
	tlsbulk_srv_accept(fx);
}

static void
test_verify(void)
{
	for (size_t i = 0; i < RELAY_ARRAY_LEN(verify_cases); i++) {
		const struct verify_case *vc = &verify_cases[i];
		struct fix fx;

		fix_init(&fx);
		fx.ctx = (void *)vc;
		fx.sctx = server_ctx(&certs[0]);
		fx.cctx = client_ctx(vc->trust_cert ? certs[0].cert_file : NULL);
		fx.on_accept = verify_srv_accept;
		fx.cli.on_event = verify_cli_event;
		fix_connect(&fx);
		fix_run(&fx, vc->name);
		CHECK_MSG(fx.cli.nev[IO_EV_TLS_READY] == (vc->want_ok ? 1 : 0), "%s: TLS_READY %d",
		    vc->name, fx.cli.nev[IO_EV_TLS_READY]);
		CHECK_MSG(fx.cli.nev[IO_EV_ERROR] == (vc->want_ok ? 0 : 1), "%s: ERROR %d (%s)",
		    vc->name, fx.cli.nev[IO_EV_ERROR], fx.cli.errtext);
		/* the server saw the handshake fail or the connection end, nothing else */
		CHECK_MSG(fx.srv.nev[IO_EV_IN] == 0, "%s: server got input", vc->name);
		CHECK_MSG(fx.srv.nev[IO_EV_TLS_READY] == (vc->want_ok ? 1 : 0), "%s: server TLS_READY %d",
		    vc->name, fx.srv.nev[IO_EV_TLS_READY]);
		ERR_clear_error();
		fix_free(&fx);
	}
}

/* ------------------------------------------------------------------ */
/*
 * TLS close_notify right behind the last line: the client writes "QUIT" and
 * closes in the same callback, so the record and the close_notify arrive
 * together; the server must get the line before EOF.
 */

static void
tlsquit_cli_event(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_CONNECTED)
		CHECK_INT(io_start_tls_client(p->io, p->fx->cctx, "localhost", false), 0);
	else if (ev == IO_EV_TLS_READY) {
		io_write(p->io, "QUIT\r\n", 6);
		peer_close_drain(p);
		return;
	}
	peer_default(p, ev);
}

static void
test_tls_last_line_then_close_notify(void)
{
	struct fix fx;

	fix_init(&fx);
	fx.sctx = server_ctx(&certs[0]);
	fx.cctx = client_ctx(NULL);
	fx.on_accept = tlsbulk_srv_accept;
	fx.cli.on_event = tlsquit_cli_event;
	fix_connect(&fx);
	fix_run(&fx, "TLS: last line, then close_notify");
	CHECK_STR(buf_cstr(&fx.srv.rec), "TLS|QUIT\\r\\n|EOF|");
	fix_free(&fx);
}

/* ------------------------------------------------------------------ */
/*
 * A stale error on the thread's OpenSSL queue (left by unrelated code, e.g.
 * loading a CA twice) before every post-handshake read and write: a TLS
 * PING/PONG must still work; SSL_get_error() would otherwise see the stale
 * entry and turn a WANT_READ into a fatal error.
 */

static void
stale_error(void)
{
	ERR_raise(ERR_LIB_X509, X509_R_CERT_ALREADY_IN_HASH_TABLE);
}

static void
stale_srv_line(struct peer *p, const char *line, size_t len)
{
	stale_error();
	io_write(p->io, "PONG\r\n", 6);
	stale_error();
}

static void
stale_cli_line(struct peer *p, const char *line, size_t len)
{
	stale_error();
	peer_close_drain(p);
	stale_error();
}

static void
stale_cli_event(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_CONNECTED)
		CHECK_INT(io_start_tls_client(p->io, p->fx->cctx, "localhost", false), 0);
	else if (ev == IO_EV_TLS_READY) {
		stale_error();
		io_write(p->io, "PING\r\n", 6);
		stale_error();
	}
	peer_default(p, ev);
}

static void
test_tls_stale_error_queue(void)
{
	struct fix fx;

	fix_init(&fx);
	fx.sctx = server_ctx(&certs[0]);
	fx.cctx = client_ctx(NULL);
	fx.on_accept = tlsbulk_srv_accept;
	fx.srv.on_line = stale_srv_line;
	fx.cli.on_line = stale_cli_line;
	fx.cli.on_event = stale_cli_event;
	fix_connect(&fx);
	fix_run(&fx, "TLS with a stale OpenSSL error queue");
	CHECK_STR(buf_cstr(&fx.srv.rec), "TLS|PING\\r\\n|EOF|");
	CHECK_STR(buf_cstr(&fx.cli.rec), "TLS|PONG\\r\\n|");
	ERR_clear_error();
	fix_free(&fx);
}

/* ------------------------------------------------------------------ */
/* Output written before the connect completes goes out once connected. */

static void
test_write_before_connect(void)
{
	struct fix fx;

	fix_init(&fx);
	fix_connect(&fx);
	io_write(fx.cli.io, "EARLY\r\n", 7);
	CHECK_INT(io_output_pending(fx.cli.io), 7);
	peer_close_drain(&fx.cli);      /* and closing waits for it, too */
	fix_run(&fx, "write before connect");
	CHECK_STR(buf_cstr(&fx.srv.rec), "EARLY\\r\\n|EOF|");
	fix_free(&fx);
}

/* ------------------------------------------------------------------ */
/* Connection refused: a port nobody listens on gives IO_ERR_REFUSED. */

static void
test_refused(void)
{
	struct fix fx;

	fix_init(&fx);
	fix_stop_listening(&fx);    /* the fd is closed at once; the port is free */
	fix_connect(&fx);
	fix_run(&fx, "connection refused");
	CHECK_INT(fx.cli.nev[IO_EV_ERROR], 1);
	CHECK_INT(fx.cli.nev[IO_EV_CONNECTED], 0);
	CHECK_INT(fx.cli.err, IO_ERR_REFUSED);
	CHECK_STR(fx.cli.errtext, "connection refused");
	fix_free(&fx);
}

/* ------------------------------------------------------------------ */
/*
 * Idle timeout: the server sets 60 ms; the client sends one line at 30 ms
 * (which restarts the timer) and then nothing.  IO_EV_TIMEOUT comes no sooner
 * than 30 + 60 ms; the server's last reply reaches the client before EOF.
 */

struct tmo_state {
	uint64_t fired_at;
};

static void
tmo_srv_accept(struct fix *fx)
{
	io_set_timeout(fx->srv.io, 60);
}

static void
tmo_srv_event(struct peer *p, enum io_event ev)
{
	struct tmo_state *ts = p->fx->ctx;

	if (ev == IO_EV_TIMEOUT) {
		uv_update_time(&p->fx->loop);
		ts->fired_at = uv_now(&p->fx->loop) - p->fx->t0;
		rec_event(p, "TIMEOUT");
		io_write(p->io, "421 timeout\r\n", 13);
		peer_close_drain(p);
		return;
	}
	peer_default(p, ev);
}

static void
tmo_send(struct fix *fx)
{
	io_write(fx->cli.io, "NOOP\r\n", 6);
}

static void
tmo_cli_event(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_CONNECTED)
		fix_timer(p->fx, 30, tmo_send);
	peer_default(p, ev);
}

static void
test_idle_timeout(void)
{
	struct tmo_state ts = { 0 };
	struct fix fx;

	fix_init(&fx);
	fx.ctx = &ts;
	fx.on_accept = tmo_srv_accept;
	fx.srv.on_event = tmo_srv_event;
	fx.cli.on_event = tmo_cli_event;
	fix_connect(&fx);
	fix_run(&fx, "idle timeout");
	CHECK_STR(buf_cstr(&fx.srv.rec), "NOOP\\r\\n|TIMEOUT|");
	CHECK_STR(buf_cstr(&fx.cli.rec), "421 timeout\\r\\n|EOF|");
	CHECK_MSG(ts.fired_at >= 85, "timeout fired after %llu ms, want >= 90",
	    (unsigned long long)ts.fired_at);
	fix_free(&fx);
}

/*
 * No event after EOF: the server keeps its io 100 ms after EOF with a 10 ms
 * idle timeout set; neither TIMEOUT nor anything else may follow the EOF.
 */

static void
after_eof_free(struct fix *fx)
{
	peer_free(&fx->srv);
}

static void
after_eof_srv_event(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_EOF) {
		rec_event(p, "EOF");
		fix_timer(p->fx, 100, after_eof_free);
		return;
	}
	peer_default(p, ev);
}

static void
after_eof_srv_accept(struct fix *fx)
{
	io_set_timeout(fx->srv.io, 10);
}

static void
after_eof_cli_event(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_CONNECTED) {
		io_write(p->io, "QUIT\r\n", 6);
		peer_close_drain(p);
		return;
	}
	peer_default(p, ev);
}

static void
test_nothing_after_eof(void)
{
	struct fix fx;

	fix_init(&fx);
	fx.on_accept = after_eof_srv_accept;
	fx.srv.on_event = after_eof_srv_event;
	fx.cli.on_event = after_eof_cli_event;
	fix_connect(&fx);
	fix_run(&fx, "nothing after EOF");
	CHECK_STR(buf_cstr(&fx.srv.rec), "QUIT\\r\\n|EOF|");
	CHECK_INT(fx.srv.nev[IO_EV_TIMEOUT], 0);
	fix_free(&fx);
}

/* ------------------------------------------------------------------ */
/*
 * io_free() inside a callback: for each event, free the io from within it
 * (with a write in flight, a re-delivery pending, a handshake under way);
 * the callback is never called again, nothing is touched after the free
 * (ASan) and the loop closes.
 */

enum free_where {
	FREE_IN_WITH_WRITE,         /* server: IN, with 8 MiB in flight and a resume kick pending */
	FREE_CONNECTED,             /* client: CONNECTED */
	FREE_TLS_READY,             /* client: TLS_READY */
	FREE_TLS_HANDSHAKE,         /* client: the first bytes of the server's handshake */
	FREE_DRAINED,               /* server: DRAINED after 1 MiB */
	FREE_TIMEOUT,               /* server: TIMEOUT */
	FREE_CONNECTING,            /* client: before the connect completes (not in a callback) */
	FREE_CLOSE_DRAIN_PEER_GONE, /* server: close_after_drain, then the client vanishes */
	FREE_CLOSE_DRAIN_TIMEOUT,   /* server: close_after_drain to a client that does not read */
};

struct free_case {
	const char *name;
	enum free_where where;
};

static const struct free_case free_cases[] = {
	{ "free in IN with a write in flight", FREE_IN_WITH_WRITE },
	{ "free in CONNECTED", FREE_CONNECTED },
	{ "free in TLS_READY", FREE_TLS_READY },
	{ "free mid-handshake (IN never comes)", FREE_TLS_HANDSHAKE },
	{ "free in DRAINED", FREE_DRAINED },
	{ "free in TIMEOUT", FREE_TIMEOUT },
	{ "free while connecting", FREE_CONNECTING },
	{ "close_after_drain, then the peer resets", FREE_CLOSE_DRAIN_PEER_GONE },
	{ "close_after_drain bounded by the idle timeout", FREE_CLOSE_DRAIN_TIMEOUT },
};

static void
free_srv_accept(struct fix *fx)
{
	const struct free_case *fc = fx->ctx;
	struct buf b = BUF_INIT;

	switch (fc->where) {
	case FREE_IN_WITH_WRITE:
		bulk_make(&b, 8u << 20, 64);
		io_write(fx->srv.io, b.data, b.len);
		break;
	case FREE_DRAINED:
		bulk_make(&b, 1u << 20, 64);
		io_write(fx->srv.io, b.data, b.len);
		break;
	case FREE_TLS_READY:
	case FREE_TLS_HANDSHAKE:
		CHECK_INT(io_start_tls_server(fx->srv.io, fx->sctx), 0);
		break;
	case FREE_TIMEOUT:
		io_set_timeout(fx->srv.io, 20);
		break;
	case FREE_CLOSE_DRAIN_TIMEOUT:
		io_set_timeout(fx->srv.io, 30);
		/* FALLTHROUGH */
	case FREE_CLOSE_DRAIN_PEER_GONE:
		/* more than the client reads for now: the drain does not finish */
		bulk_make(&b, 16u << 20, 64);
		io_write(fx->srv.io, b.data, b.len);
		peer_close_drain(&fx->srv);
		break;
	default:
		break;
	}
	buf_free(&b);
}

static void
free_srv_event(struct peer *p, enum io_event ev)
{
	const struct free_case *fc = p->fx->ctx;
	const char *line;
	size_t len;

	if (fc->where == FREE_IN_WITH_WRITE && ev == IO_EV_IN) {
		CHECK_INT(io_getline(p->io, &line, &len), IO_LINE_OK);
		io_pause(p->io);
		io_resume(p->io);           /* "B" is buffered: a re-delivery is scheduled */
		io_write(p->io, "bye\r\n", 5);
		CHECK(io_output_pending(p->io) > 0);
		peer_free(p);
		return;
	}
	if ((fc->where == FREE_DRAINED && ev == IO_EV_DRAINED) ||
	    (fc->where == FREE_TIMEOUT && ev == IO_EV_TIMEOUT)) {
		rec_event(p, ev == IO_EV_DRAINED ? "DRAINED" : "TIMEOUT");
		peer_free(p);
		return;
	}
	peer_default(p, ev);
}

static void
free_cli_gone(struct fix *fx)
{
	peer_free(&fx->cli);
}

static void
free_cli_resume(struct fix *fx)
{
	fx->cli.paused = false;
	io_resume(fx->cli.io);
}

static void
free_cli_event(struct peer *p, enum io_event ev)
{
	const struct free_case *fc = p->fx->ctx;

	switch (fc->where) {
	case FREE_IN_WITH_WRITE:
		if (ev == IO_EV_CONNECTED)
			io_write(p->io, "A\r\nB\r\n", 6);
		break;
	case FREE_CONNECTED:
		if (ev == IO_EV_CONNECTED) {
			io_write(p->io, "never sent\r\n", 12);
			peer_free(p);
			return;
		}
		break;
	case FREE_TLS_READY:
		if (ev == IO_EV_CONNECTED)
			io_start_tls_client(p->io, p->fx->cctx, "localhost", false);
		if (ev == IO_EV_TLS_READY) {
			io_write(p->io, "never sent\r\n", 12);
			peer_free(p);
			return;
		}
		break;
	case FREE_TLS_HANDSHAKE:
		if (ev == IO_EV_CONNECTED) {
			io_start_tls_client(p->io, p->fx->cctx, "localhost", false);
			/* free while the server's reply is on its way */
			fix_timer(p->fx, 0, free_cli_gone);
		}
		break;
	case FREE_CLOSE_DRAIN_PEER_GONE:
		if (ev == IO_EV_CONNECTED) {
			p->paused = true;
			io_pause(p->io);
			fix_timer(p->fx, 50, free_cli_gone);
		}
		break;
	case FREE_CLOSE_DRAIN_TIMEOUT:
		if (ev == IO_EV_CONNECTED) {
			p->paused = true;
			io_pause(p->io);
			fix_timer(p->fx, 300, free_cli_resume);
		}
		break;
	default:
		break;
	}
	peer_default(p, ev);
}

static void
free_listener_timeout(struct fix *fx)
{
	fix_stop_listening(fx);
}

static void
test_free_in_callback(void)
{
	for (size_t i = 0; i < RELAY_ARRAY_LEN(free_cases); i++) {
		const struct free_case *fc = &free_cases[i];
		struct fix fx;

		fix_init(&fx);
		fx.ctx = (void *)fc;
		fx.sctx = server_ctx(&certs[0]);
		fx.cctx = client_ctx(NULL);
		fx.srv.record = fx.cli.record = false;
		fx.on_accept = free_srv_accept;
		fx.srv.on_event = free_srv_event;
		fx.cli.on_event = free_cli_event;
		fix_connect(&fx);
		if (fc->where == FREE_CONNECTING) {
			peer_free(&fx.cli);         /* the connect request is cancelled */
			fix_timer(&fx, 100, free_listener_timeout);
		}
		fix_run(&fx, fc->name);
		switch (fc->where) {
		case FREE_DRAINED:
			/* DRAINED means written to the kernel: the client gets it all */
			CHECK_MSG(fx.cli.bytes == (1u << 20), "%s: client got %zu bytes", fc->name,
			    fx.cli.bytes);
			CHECK_STR(buf_cstr(&fx.srv.rec), "DRAINED|");
			break;
		case FREE_TIMEOUT:
			CHECK_STR(buf_cstr(&fx.srv.rec), "TIMEOUT|");
			CHECK_STR(buf_cstr(&fx.cli.rec), "EOF|");
			break;
		case FREE_CLOSE_DRAIN_TIMEOUT:
			/* the server gave up after 30 ms: the client got EOF, not 16 MiB */
			CHECK_INT(fx.cli.nev[IO_EV_EOF], 1);
			CHECK_MSG(fx.cli.bytes < (16u << 20), "%s: client got all %zu bytes", fc->name,
			    fx.cli.bytes);
			break;
		case FREE_CONNECTING:
		case FREE_CONNECTED:
			CHECK_INT(fx.cli.nev[IO_EV_ERROR], 0);
			CHECK_INT(fx.srv.nev[IO_EV_IN], 0);
			break;
		default:
			break;
		}
		fix_free(&fx);
	}
}

/* ------------------------------------------------------------------ */

static void
tmpdir_remove(void)
{
	for (size_t i = 0; i < RELAY_ARRAY_LEN(certs); i++) {
		unlink(certs[i].cert_file);
		unlink(certs[i].key_file);
	}
	rmdir(tmpdir);
}

int
main(void)
{
	signal(SIGPIPE, SIG_IGN);       /* as relayd does: a reset peer is an EPIPE */
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_io.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		fatalx("mkdtemp: %s", strerror(errno));
	for (size_t i = 0; i < RELAY_ARRAY_LEN(certs); i++)
		cert_make(&certs[i]);

	test_lines();
	test_pause_resume();
	test_close_after_drain();
	test_backpressure();
	test_starttls();
	test_tls_bulk();
	test_verify();
	test_tls_last_line_then_close_notify();
	test_tls_stale_error_queue();
	test_write_before_connect();
	test_refused();
	test_idle_timeout();
	test_nothing_after_eof();
	test_free_in_callback();

	tmpdir_remove();
	return check_done();
}
