/*
 * test_io_tls.c - the I/O layer's TLS (common/io.c) over real loopback TCP:
 * STARTTLS on both sides, bulk data both ways, certificate verification,
 * the last line before close_notify, and a stale OpenSSL error queue
 * (io_fixture.h: a real libuv loop, real TLS with self-signed certificates).
 * Each test states the behaviour it proves and ends with uv_loop_close() == 0.
 */
#include "io_fixture.h"

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

int
main(void)
{
	io_fixture_setup("test_io_tls");

	test_starttls();
	test_tls_bulk();
	test_verify();
	test_tls_last_line_then_close_notify();
	test_tls_stale_error_queue();

	io_fixture_teardown();
	return check_done();
}
