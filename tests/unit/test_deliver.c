/*
 * test_deliver.c - the outbound SMTP client against a REAL SMTP peer: a real
 * libuv loop drives deliver_start() to a Python SinkMX (tests/harness/
 * smtpsink.py, run through sink_cli.py as a child process) on 127.0.0.x,
 * over real TCP and real TLS (a certificate made with the openssl CLI).
 * Each test states the behaviour it proves; each ends by closing its loop.
 *
 * The harness is found through RELAY_SOURCE_DIR, else relative to __FILE__.
 * RELAY_TEST_DEBUG=1 shows deliver's debug log on stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <uv.h>

#include "common/log.h"
#include "common/util.h"
#include "conf/conf.h"
#include "deliver/deliver.h"
#include "deliver/deliver_int.h"
#include "router/router.h"
#include "check.h"

static char tmpdir[64];
static char cert_file[128], key_file[128];
static char harness[1024];

/* ------------------------------------------------------------------ */
/* The sink: a SinkMX in a child process, spoken to over pipes. */

struct sink {
	pid_t pid;
	FILE *to;
	FILE *from;
	int port;
	char host[32];
	char answer[1 << 20];
};

static void
sink_start(struct sink *s, const char *host, const char *json)
{
	int in[2], out[2];
	char line[256];

	memset(s, 0, sizeof(*s));
	snprintf(s->host, sizeof(s->host), "%s", host);
	if (pipe(in) != 0 || pipe(out) != 0)
		fatalx("%s: pipe: %s", __func__, strerror(errno));
	s->pid = fork();
	if (s->pid < 0)
		fatalx("%s: fork: %s", __func__, strerror(errno));
	if (s->pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[0]);
		close(in[1]);
		close(out[0]);
		close(out[1]);
		execlp("python3", "python3", harness, host, json != NULL ? json : "{}", (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	s->to = fdopen(in[1], "w");
	s->from = fdopen(out[0], "r");
	if (fgets(line, sizeof(line), s->from) == NULL || sscanf(line, "READY %d", &s->port) != 1)
		fatalx("%s: sink on %s did not start (%s)", __func__, host, line);
}

/* One request, one answer line (without "OK "); "ERR ..." on failure. */
static const char *
sink_req(struct sink *s, const char *verb, const char *fmt, va_list ap)
{
	size_t n;

	fprintf(s->to, "%s ", verb);
	vfprintf(s->to, fmt, ap);
	fputc('\n', s->to);
	fflush(s->to);
	if (fgets(s->answer, sizeof(s->answer), s->from) == NULL)
		fatalx("%s: sink on %s went away", __func__, s->host);
	n = strlen(s->answer);
	if (n > 0 && s->answer[n - 1] == '\n')
		s->answer[--n] = '\0';
	if (strncmp(s->answer, "OK", 2) == 0)
		return s->answer[2] == ' ' ? s->answer + 3 : s->answer + 2;
	fprintf(stderr, "sink %s: %s\n", s->host, s->answer);
	return s->answer;
}

static const char *
sink_eval(struct sink *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *
sink_eval(struct sink *s, const char *fmt, ...)
{
	va_list ap;
	const char *r;

	va_start(ap, fmt);
	r = sink_req(s, "eval", fmt, ap);
	va_end(ap);
	return r;
}

static void
sink_exec(struct sink *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void
sink_exec(struct sink *s, const char *fmt, ...)
{
	va_list ap;
	const char *r;

	va_start(ap, fmt);
	r = sink_req(s, "exec", fmt, ap);
	va_end(ap);
	CHECK_MSG(r[0] == '\0', "sink exec failed: %s", r);
}

static void
sink_stop(struct sink *s)
{
	int st;

	fputs("quit\n", s->to);
	fflush(s->to);
	if (fgets(s->answer, sizeof(s->answer), s->from) == NULL)
		fprintf(stderr, "sink %s: no answer to quit\n", s->host);
	fclose(s->to);
	fclose(s->from);
	waitpid(s->pid, &st, 0);
}

/* ------------------------------------------------------------------ */
/* The fixture: a loop, a configuration, a deliver. */

struct fx {
	uv_loop_t loop;
	uv_timer_t guard;
	struct conf *conf;
	struct deliver *d;
	int shut;
};

static void
fx_init(struct fx *fx)
{
	memset(fx, 0, sizeof(*fx));
	uv_loop_init(&fx->loop);
	uv_timer_init(&fx->loop, &fx->guard);
	fx->conf = conf_new_defaults();
	free(fx->conf->hostname);
	fx->conf->hostname = xstrdup("relay.test");
	fx->conf->deliver.connect_timeout = 5000;
	fx->conf->deliver.greeting_timeout = 10000;
	fx->conf->deliver.command_timeout = 10000;
	fx->conf->deliver.data_init_timeout = 10000;
	fx->conf->deliver.data_block_timeout = 10000;
	fx->conf->deliver.data_done_timeout = 10000;
	fx->conf->deliver.idle_timeout = 10000;
	fx->conf->deliver.ca_file = xstrdup(cert_file);
}

static struct deliver *
fx_deliver(struct fx *fx)
{
	if (fx->d == NULL)
		fx->d = deliver_new(&fx->loop, fx->conf);
	return fx->d;
}

static void
fx_guard_cb(uv_timer_t *t)
{
}

/* Run the loop until pred(arg) holds; false after 20 s (a broken test, not a timing check). */
static bool
fx_run(struct fx *fx, bool (*pred)(void *), void *arg)
{
	uint64_t deadline = util_mono_ms() + 20000;
	bool ok = true;

	uv_timer_start(&fx->guard, fx_guard_cb, 50, 50);
	while (!pred(arg)) {
		if (util_mono_ms() > deadline) {
			ok = false;
			break;
		}
		uv_run(&fx->loop, UV_RUN_ONCE);
	}
	uv_timer_stop(&fx->guard);
	CHECK_MSG(ok, "the loop did not reach the expected state");
	return ok;
}

static void
fx_shutdown_done(void *arg)
{
	*(int *)arg = 1;
}

static bool
pred_flag(void *arg)
{
	return *(int *)arg != 0;
}

static void
fx_fini(struct fx *fx)
{
	if (fx->d != NULL) {
		deliver_shutdown(fx->d, fx_shutdown_done, &fx->shut);
		fx_run(fx, pred_flag, &fx->shut);
		deliver_free(fx->d);
	}
	conf_unref(fx->conf);
	uv_close((uv_handle_t *)&fx->guard, NULL);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	CHECK_INT(uv_loop_close(&fx->loop), 0);
}

/* ------------------------------------------------------------------ */
/* One delivery attempt */

struct attempt {
	struct deliver_req req;
	struct deliver_rcpt rcpts[8];
	struct deliver_result res;
	int done;
	char path[256];
};

static int attempt_seq;

static void
attempt_cb(void *arg, struct deliver_req *req, const struct deliver_result *res)
{
	struct attempt *a = arg;

	CHECK_MSG(a->done == 0, "callback fired twice");
	CHECK(req == &a->req);
	a->res = *res;
	a->done = 1;
}

/* A queue file: some envelope bytes, then the body at body_offset. */
static void
attempt_init(struct attempt *a, const struct sink *s, const char *body, size_t bodylen,
    const char *rcpt, ...)
{
	static const char env[] = "ENVELOPE sender=alice@relay.test\n";
	struct sockaddr_in *sin = (struct sockaddr_in *)&a->req.addr;
	va_list ap;
	int fd;

	memset(a, 0, sizeof(*a));
	snprintf(a->path, sizeof(a->path), "%s/msg%d", tmpdir, ++attempt_seq);
	fd = open(a->path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, env, sizeof(env) - 1) != (ssize_t)(sizeof(env) - 1) ||
	    write(fd, body, bodylen) != (ssize_t)bodylen || close(fd) != 0)
		fatalx("%s: %s: %s", __func__, a->path, strerror(errno));
	a->req.qid = "TESTQID";
	a->req.msg_path = a->path;
	a->req.body_offset = sizeof(env) - 1;
	a->req.body_len = bodylen;
	a->req.sender = "alice@relay.test";
	a->req.ret = ENV_RET_NONE;
	a->req.rcpts = a->rcpts;
	va_start(ap, rcpt);
	for (const char *r = rcpt; r != NULL && a->req.nrcpts < 8; r = va_arg(ap, const char *))
		a->rcpts[a->req.nrcpts++].addr = r;
	va_end(ap);
	a->req.host = "mx.test";
	sin->sin_family = AF_INET;
	sin->sin_port = htons((uint16_t)s->port);
	inet_pton(AF_INET, s->host, &sin->sin_addr);
	a->req.addrlen = sizeof(*sin);
	a->req.tls = CONF_TLS_NONE;
	a->req.helo_name = "relay.test";
}

static bool
pred_attempt(void *arg)
{
	return ((struct attempt *)arg)->done != 0;
}

static void
attempt_run(struct fx *fx, struct attempt *a)
{
	CHECK_INT(deliver_start(fx_deliver(fx), &a->req, attempt_cb, a), 0);
	fx_run(fx, pred_attempt, a);
}

static void
attempt_fini(struct attempt *a)
{
	deliver_req_clear(&a->req);
	unlink(a->path);
}

#define BODY(s) (s), (sizeof(s) - 1)

static bool
starts_with(const char *s, const char *prefix)
{
	return s != NULL && strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ------------------------------------------------------------------ */
/* Tests */

/* A plain delivery: the message arrives as it was queued; results per rcpt. */
static void
test_plain(void)
{
	struct fx fx;
	struct sink s;
	struct attempt a;

	fx_init(&fx);
	sink_start(&s, "127.0.0.11", NULL);
	attempt_init(&a, &s, BODY("Subject: plain\r\n\r\nhello\r\n"), "bob@example.net",
	    "carol@example.net", NULL);
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_DONE);
	CHECK_STR(a.res.ip, "127.0.0.11");
	CHECK_INT(a.rcpts[0].code, 250);
	CHECK_INT(a.rcpts[1].code, 250);
	CHECK_STR(a.rcpts[0].status, "2.0.0");
	CHECK(starts_with(a.rcpts[0].reply, "250 2.0.0 Ok: queued as"));
	CHECK_INT(a.res.code, 250);
	sink_exec(&s, "sink.wait_for_messages(1, timeout=5)");
	CHECK_STR(sink_eval(&s, "sink.messages[0].data"), "Subject: plain\\r\\n\\r\\nhello\\r\\n");
	CHECK_STR(sink_eval(&s, "sink.messages[0].mail_from"), "alice@relay.test");
	CHECK_STR(sink_eval(&s, "sink.messages[0].rcpt_addrs"),
	    "['bob@example.net', 'carol@example.net']");
	CHECK_STR(sink_eval(&s, "sink.messages[0].tls"), "False");
	CHECK_STR(sink_eval(&s, "sink.messages[0].helo"), "relay.test");
	/* SIZE announced by the sink: the size is declared */
	CHECK_STR(sink_eval(&s, "sink.messages[0].mail_params.get('SIZE')"), "25");
	attempt_fini(&a);
	fx_fini(&fx);
	sink_stop(&s);
}

/* Opportunistic STARTTLS: offered -> used, EHLO again after the handshake. */
static void
test_starttls_opportunistic(void)
{
	struct fx fx;
	struct sink s;
	struct attempt a;
	char json[512];

	fx_init(&fx);
	snprintf(json, sizeof(json), "{\"starttls\": [\"%s\", \"%s\"]}", cert_file, key_file);
	sink_start(&s, "127.0.0.12", json);
	attempt_init(&a, &s, BODY("Subject: tls\r\n\r\nsecret\r\n"), "bob@example.net", NULL);
	a.req.tls = CONF_TLS_OPPORTUNISTIC;
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_DONE);
	CHECK_INT(a.rcpts[0].code, 250);
	sink_exec(&s, "sink.wait_for_messages(1, timeout=5)");
	CHECK_STR(sink_eval(&s, "sink.messages[0].tls"), "True");
	CHECK_STR(sink_eval(&s, "[c.split()[0] for c in sink.sessions[0].commands][:3]"),
	    "['EHLO', 'STARTTLS', 'EHLO']");
	attempt_fini(&a);
	fx_fini(&fx);
	sink_stop(&s);
}

/* Opportunistic: no STARTTLS offered -> plaintext. */
static void
test_opportunistic_plaintext(void)
{
	struct fx fx;
	struct sink s;
	struct attempt a;

	fx_init(&fx);
	sink_start(&s, "127.0.0.13", NULL);
	attempt_init(&a, &s, BODY("x\r\n"), "bob@example.net", NULL);
	a.req.tls = CONF_TLS_OPPORTUNISTIC;
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_DONE);
	sink_exec(&s, "sink.wait_for_messages(1, timeout=5)");
	CHECK_STR(sink_eval(&s, "sink.messages[0].tls"), "False");
	attempt_fini(&a);
	fx_fini(&fx);
	sink_stop(&s);
}

/* require + no STARTTLS offered -> HOST_FAIL 4.7.4, and no MAIL was sent. */
static void
test_require_not_offered(void)
{
	struct fx fx;
	struct sink s;
	struct attempt a;

	fx_init(&fx);
	sink_start(&s, "127.0.0.14", NULL);
	attempt_init(&a, &s, BODY("x\r\n"), "bob@example.net", NULL);
	a.req.tls = CONF_TLS_REQUIRE;
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_HOST_FAIL);
	CHECK_STR(a.res.status_code, "4.7.4");
	CHECK_INT(a.res.io_err, IO_ERR_TLS);
	CHECK_STR(a.res.reply, "TLS required but not offered");
	CHECK_STR(sink_eval(&s, "[c for _, c in sink.commands if c.startswith('MAIL')]"), "[]");
	attempt_fini(&a);
	fx_fini(&fx);
	sink_stop(&s);
}

/* verify: the certificate chains to ca_file and names the exchanger -> TLS;
 * a name it does not carry -> HOST_FAIL 4.7.5. */
static void
test_verify(void)
{
	struct fx fx;
	struct sink s;
	struct attempt a, b;
	char json[512];

	fx_init(&fx);
	snprintf(json, sizeof(json), "{\"starttls\": [\"%s\", \"%s\"]}", cert_file, key_file);
	sink_start(&s, "127.0.0.15", json);
	attempt_init(&a, &s, BODY("x\r\n"), "bob@example.net", NULL);
	a.req.tls = CONF_TLS_VERIFY;
	a.req.host = "mx.test";
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_DONE);
	sink_exec(&s, "sink.wait_for_messages(1, timeout=5)");
	CHECK_STR(sink_eval(&s, "sink.messages[0].tls"), "True");

	attempt_init(&b, &s, BODY("x\r\n"), "bob@example.net", NULL);
	b.req.tls = CONF_TLS_VERIFY;
	b.req.host = "wrong.example";
	attempt_run(&fx, &b);
	CHECK_INT(b.res.status, DELIVER_HOST_FAIL);
	CHECK_STR(b.res.status_code, "4.7.5");
	CHECK_INT(b.res.io_err, IO_ERR_TLS);
	CHECK_MSG(strstr(b.res.reply, "TLS handshake failed") != NULL, "reply: %s", b.res.reply);
	CHECK_STR(sink_eval(&s, "len(sink.messages)"), "1");
	attempt_fini(&a);
	attempt_fini(&b);
	fx_fini(&fx);
	sink_stop(&s);
}

/* Opportunistic, STARTTLS offered but the handshake fails: HOST_FAIL 4.7.5
 * (the router tries the next exchanger), and the next attempt to the same
 * address tries TLS again: no plaintext fallback, nothing sent in clear. */
static void
test_opportunistic_handshake_fails(void)
{
	struct fx fx;
	struct sink s;
	struct attempt a, b;
	char json[512];

	fx_init(&fx);
	snprintf(json, sizeof(json), "{\"starttls\": [\"%s\", \"%s\"]}", cert_file, key_file);
	sink_start(&s, "127.0.0.16", json);
	/* The sink speaks at most TLS 1.1; the client needs 1.2. */
	sink_exec(&s, "sink._tls_ctx.maximum_version = ssl.TLSVersion.TLSv1_1");
	attempt_init(&a, &s, BODY("x\r\n"), "bob@example.net", NULL);
	a.req.tls = CONF_TLS_OPPORTUNISTIC;
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_HOST_FAIL);
	CHECK_INT(a.res.io_err, IO_ERR_TLS);
	CHECK_STR(a.res.status_code, "4.7.5");
	CHECK_MSG(strstr(a.res.reply, "TLS handshake failed") != NULL, "reply: %s", a.res.reply);

	attempt_init(&b, &s, BODY("x\r\n"), "bob@example.net", NULL);
	b.req.tls = CONF_TLS_OPPORTUNISTIC;
	attempt_run(&fx, &b);
	CHECK_INT(b.res.status, DELIVER_HOST_FAIL);
	CHECK_INT(b.res.io_err, IO_ERR_TLS);
	CHECK_STR(b.res.status_code, "4.7.5");
	CHECK_STR(sink_eval(&s, "sink.connections"), "2");
	CHECK_STR(sink_eval(&s, "[c for _, c in sink.commands]"),
	    "['EHLO relay.test', 'STARTTLS', 'EHLO relay.test', 'STARTTLS']");
	CHECK_STR(sink_eval(&s, "len(sink.transactions)"), "0");
	attempt_fini(&a);
	attempt_fini(&b);
	fx_fini(&fx);
	sink_stop(&s);
}

/* STARTTLS offered, then answered with an error: HOST_FAIL under every
 * policy, with the server's code and words (io_err TLS: the host is not
 * down, the router tries the next exchanger); never MAIL in plaintext. */
static void
test_starttls_refused(void)
{
	static const struct {
		enum conf_tls tls;
		const char *status;
	} rows[] = {
		{ CONF_TLS_OPPORTUNISTIC, "4.7.5" },
		{ CONF_TLS_REQUIRE, "4.7.4" },
		{ CONF_TLS_VERIFY, "4.7.4" },
	};
	char json[512];

	snprintf(json, sizeof(json), "{\"starttls\": [\"%s\", \"%s\"]}", cert_file, key_file);
	for (size_t i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		struct fx fx;
		struct sink s;
		struct attempt a;

		fx_init(&fx);
		sink_start(&s, "127.0.0.38", json);
		sink_exec(&s, "sink.script(starttls='454 4.7.0 TLS not available now')");
		attempt_init(&a, &s, BODY("x\r\n"), "bob@example.net", NULL);
		a.req.tls = rows[i].tls;
		attempt_run(&fx, &a);
		CHECK_MSG(a.res.status == DELIVER_HOST_FAIL, "row %zu: status %d", i,
		    (int)a.res.status);
		CHECK_INT(a.res.io_err, IO_ERR_TLS);
		CHECK_STR(a.res.status_code, rows[i].status);
		CHECK_INT(a.res.code, 454);
		CHECK_STR(a.res.reply, "454 4.7.0 TLS not available now");
		CHECK_STR(sink_eval(&s, "[c for _, c in sink.commands if c.startswith('MAIL')]"), "[]");
		CHECK_STR(sink_eval(&s, "len(sink.transactions)"), "0");
		attempt_fini(&a);
		fx_fini(&fx);
		sink_stop(&s);
	}
}

/* Mixed RCPT replies, with and without PIPELINING: each rcpt gets its own. */
static void
test_mixed_rcpts(void)
{
	static const char *jsons[] = {
		NULL,
		"{\"ehlo_features\": [\"SIZE 1000000\", \"8BITMIME\", \"ENHANCEDSTATUSCODES\"]}",
	};

	for (size_t i = 0; i < RELAY_ARRAY_LEN(jsons); i++) {
		struct fx fx;
		struct sink s;
		struct attempt a;

		fx_init(&fx);
		sink_start(&s, "127.0.0.17", jsons[i]);
		sink_exec(&s, "sink.script(rcpt={'bad@example.net': '550 5.1.1 no such user', "
		    "'later@example.net': '450 4.2.1 mailbox busy'})");
		attempt_init(&a, &s, BODY("Subject: mixed\r\n\r\nx\r\n"), "good@example.net",
		    "bad@example.net", "later@example.net", NULL);
		attempt_run(&fx, &a);
		CHECK_INT(a.res.status, DELIVER_DONE);
		CHECK_INT(a.rcpts[0].code, 250);
		CHECK_INT(a.rcpts[1].code, 550);
		CHECK_INT(a.rcpts[2].code, 450);
		CHECK_STR(a.rcpts[1].status, "5.1.1");
		CHECK_STR(a.rcpts[2].status, "4.2.1");
		CHECK_STR(a.rcpts[1].reply, "550 5.1.1 no such user");
		CHECK_STR(a.rcpts[2].reply, "450 4.2.1 mailbox busy");
		sink_exec(&s, "sink.wait_for_messages(1, timeout=5)");
		CHECK_STR(sink_eval(&s, "sink.messages[0].rcpt_addrs"), "['good@example.net']");
		CHECK_STR(sink_eval(&s, "'PIPELINING' in sink.ehlo_features"), i == 0 ? "True" : "False");
		attempt_fini(&a);
		fx_fini(&fx);
		sink_stop(&s);
	}
}

/* No recipient accepted: DONE with each RCPT reply, no DATA, RSET sent. */
static void
test_all_rcpts_refused(void)
{
	static const char *jsons[] = {
		NULL,
		"{\"ehlo_features\": [\"ENHANCEDSTATUSCODES\"]}",
	};

	for (size_t i = 0; i < RELAY_ARRAY_LEN(jsons); i++) {
		struct fx fx;
		struct sink s;
		struct attempt a;

		fx_init(&fx);
		sink_start(&s, "127.0.0.18", jsons[i]);
		sink_exec(&s, "sink.script(rcpt={'*': '550 5.1.1 nobody here'})");
		attempt_init(&a, &s, BODY("x\r\n"), "a@example.net", "b@example.net", NULL);
		attempt_run(&fx, &a);
		CHECK_INT(a.res.status, DELIVER_DONE);
		CHECK_INT(a.rcpts[0].code, 550);
		CHECK_INT(a.rcpts[1].code, 550);
		CHECK_STR(a.rcpts[1].reply, "550 5.1.1 nobody here");
		sink_exec(&s, "sink.wait_for_command('RSET', timeout=5)");
		CHECK_STR(sink_eval(&s, "len(sink.transactions)"), "0");
		if (i == 1)     /* without PIPELINING, DATA is never sent */
			CHECK_STR(sink_eval(&s, "[c for _, c in sink.commands if c == 'DATA']"), "[]");
		attempt_fini(&a);
		fx_fini(&fx);
		sink_stop(&s);
	}
}

/* 4xx / 5xx at the end of data: TEMP / PERM with the server's reply. */
static void
test_eod_failures(void)
{
	static const struct {
		const char *eod;
		enum deliver_status status;
		int code;
		const char *st;
	} rows[] = {
		{ "451 4.3.0 try later", DELIVER_TEMP, 451, "4.3.0" },
		{ "554 5.6.0 content rejected", DELIVER_PERM, 554, "5.6.0" },
		{ "552 message too big", DELIVER_PERM, 552, "5.0.0" },
	};

	for (size_t i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		struct fx fx;
		struct sink s;
		struct attempt a;

		fx_init(&fx);
		sink_start(&s, "127.0.0.19", NULL);
		sink_exec(&s, "sink.script(eod='%s')", rows[i].eod);
		attempt_init(&a, &s, BODY("x\r\n"), "bob@example.net", NULL);
		attempt_run(&fx, &a);
		CHECK_INT(a.res.status, rows[i].status);
		CHECK_INT(a.res.code, rows[i].code);
		CHECK_STR(a.res.status_code, rows[i].st);
		CHECK_STR(a.res.reply, rows[i].eod);
		CHECK_INT(a.rcpts[0].code, rows[i].code);
		attempt_fini(&a);
		fx_fini(&fx);
		sink_stop(&s);
	}
}

/* 4xx / 5xx to MAIL and to DATA: TEMP / PERM for the whole message. */
static void
test_mail_data_failures(void)
{
	static const struct {
		const char *json;
		const char *script;
		enum deliver_status status;
		int code;
	} rows[] = {
		{ NULL, "mail='451 4.3.2 not now'", DELIVER_TEMP, 451 },
		{ NULL, "mail='553 5.7.1 sender refused'", DELIVER_PERM, 553 },
		{ NULL, "data='452 4.3.1 no room'", DELIVER_TEMP, 452 },
		{ "{\"ehlo_features\": []}", "data='554 5.5.0 no data'", DELIVER_PERM, 554 },
		{ "{\"ehlo_features\": []}", "mail='451 4.3.2 not now'", DELIVER_TEMP, 451 },
	};

	for (size_t i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		struct fx fx;
		struct sink s;
		struct attempt a, b;

		fx_init(&fx);
		sink_start(&s, "127.0.0.20", rows[i].json);
		sink_exec(&s, "sink.script(%s)", rows[i].script);
		attempt_init(&a, &s, BODY("x\r\n"), "bob@example.net", NULL);
		attempt_run(&fx, &a);
		CHECK_MSG(a.res.status == rows[i].status, "row %zu: status %d", i, (int)a.res.status);
		CHECK_INT(a.res.code, rows[i].code);
		/* the connection stays usable: the next transaction on it succeeds */
		sink_exec(&s, "sink.reset_script()");
		attempt_init(&b, &s, BODY("y\r\n"), "bob@example.net", NULL);
		attempt_run(&fx, &b);
		CHECK_INT(b.res.status, DELIVER_DONE);
		CHECK_STR(sink_eval(&s, "sink.connections"), "1");
		attempt_fini(&a);
		attempt_fini(&b);
		fx_fini(&fx);
		sink_stop(&s);
	}
}

/* Nothing listening -> HOST_FAIL with IO_ERR_REFUSED. */
static void
test_refused(void)
{
	struct fx fx;
	struct sink s;
	struct attempt a;

	fx_init(&fx);
	sink_start(&s, "127.0.0.21", NULL);
	sink_exec(&s, "sink.down()");
	attempt_init(&a, &s, BODY("x\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_HOST_FAIL);
	CHECK_INT(a.res.io_err, IO_ERR_REFUSED);
	CHECK_STR(a.res.status_code, "4.4.1");
	CHECK_STR(a.res.ip, "127.0.0.21");
	attempt_fini(&a);
	fx_fini(&fx);
	sink_stop(&s);
}

/* Greeting 421, greeting 554, greeting never comes, malformed greeting. */
static void
test_greeting_failures(void)
{
	static const struct {
		const char *json;
		const char *script;
		int code;
		const char *status;
		const char *reply_has;
	} rows[] = {
		{ NULL, "greeting='421 4.3.2 go away'", 421, "4.3.2", "421 4.3.2 go away" },
		{ NULL, "greeting='554 no service here'", 554, "5.0.0", "554 no service here" },
		{ "{\"hang_greeting\": true}", "", 0, "4.4.2", "timeout" },
		{ NULL, "greeting='hello there'", 0, "4.5.0", "malformed reply" },
	};

	for (size_t i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		struct fx fx;
		struct sink s;
		struct attempt a;

		fx_init(&fx);
		fx.conf->deliver.greeting_timeout = 300;
		sink_start(&s, "127.0.0.22", rows[i].json);
		sink_exec(&s, "sink.script(%s)", rows[i].script);
		attempt_init(&a, &s, BODY("x\r\n"), "bob@example.net", NULL);
		attempt_run(&fx, &a);
		CHECK_INT(a.res.status, DELIVER_HOST_FAIL);
		CHECK_INT(a.res.code, rows[i].code);
		CHECK_STR(a.res.status_code, rows[i].status);
		CHECK_MSG(strstr(a.res.reply, rows[i].reply_has) != NULL, "row %zu: reply %s", i,
		    a.res.reply);
		attempt_fini(&a);
		fx_fini(&fx);
		sink_stop(&s);
	}
}

/* Checks before MAIL: SIZE, 8BITMIME, SMTPUTF8 -> PERM, and no MAIL sent. */
static void
test_refused_before_mail(void)
{
	static const struct {
		const char *json;
		size_t len;
		bool eightbit, utf8;
		const char *status;
	} rows[] = {
		{ "{\"ehlo_features\": [\"SIZE 100\", \"8BITMIME\"]}", 200, false, false, "5.3.4" },
		{ "{\"ehlo_features\": [\"SIZE 100\"]}", 50, true, false, "5.6.3" },
		{ "{\"ehlo_features\": [\"8BITMIME\"]}", 50, true, true, "5.6.7" },
	};
	char body[256];

	memset(body, 'a', sizeof(body));
	for (size_t i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		struct fx fx;
		struct sink s;
		struct attempt a;

		fx_init(&fx);
		sink_start(&s, "127.0.0.23", rows[i].json);
		attempt_init(&a, &s, body, rows[i].len, "bob@example.net", NULL);
		a.req.body_8bit = rows[i].eightbit;
		a.req.smtputf8 = rows[i].utf8;
		attempt_run(&fx, &a);
		CHECK_INT(a.res.status, DELIVER_PERM);
		CHECK_STR(a.res.status_code, rows[i].status);
		CHECK(a.res.reply[0] != '\0');
		CHECK_STR(sink_eval(&s, "[c for _, c in sink.commands if c.startswith('MAIL')]"), "[]");
		attempt_fini(&a);
		fx_fini(&fx);
		sink_stop(&s);
	}
}

/* 8-bit and SMTPUTF8 go with their parameters when announced. */
static void
test_8bit_announced(void)
{
	struct fx fx;
	struct sink s;
	struct attempt a;

	fx_init(&fx);
	sink_start(&s, "127.0.0.24", NULL);
	attempt_init(&a, &s, BODY("Subject: caf\xc3\xa9\r\n\r\n\xc3\xa9t\xc3\xa9\r\n"),
	    "bob@example.net", NULL);
	a.req.body_8bit = true;
	a.req.smtputf8 = true;
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_DONE);
	sink_exec(&s, "sink.wait_for_messages(1, timeout=5)");
	CHECK_STR(sink_eval(&s, "sink.messages[0].mail_params.get('BODY')"), "8BITMIME");
	CHECK_STR(sink_eval(&s, "sink.messages[0].mail_params.get('SMTPUTF8')"), "True");
	attempt_fini(&a);
	fx_fini(&fx);
	sink_stop(&s);
}

/* DSN parameters go to a server that announces DSN, and only to it. */
static void
test_dsn_params(void)
{
	static const char *jsons[] = { NULL, "{\"ehlo_features\": [\"PIPELINING\", \"SIZE 1000\"]}" };

	for (size_t i = 0; i < RELAY_ARRAY_LEN(jsons); i++) {
		struct fx fx;
		struct sink s;
		struct attempt a;

		fx_init(&fx);
		sink_start(&s, "127.0.0.25", jsons[i]);
		attempt_init(&a, &s, BODY("x\r\n"), "bob@example.net", "carol@example.net", NULL);
		a.req.envid = "env+1 x";
		a.req.ret = ENV_RET_HDRS;
		a.rcpts[0].notify = ENV_NOTIFY_SUCCESS | ENV_NOTIFY_FAILURE;
		a.rcpts[0].orcpt = "rfc822;Bob+tag@example.net";
		a.rcpts[1].notify = ENV_NOTIFY_NEVER;
		attempt_run(&fx, &a);
		CHECK_INT(a.res.status, DELIVER_DONE);
		sink_exec(&s, "sink.wait_for_messages(1, timeout=5)");
		if (i == 0) {
			CHECK_STR(sink_eval(&s, "sink.messages[0].mail_params.get('RET')"), "HDRS");
			CHECK_STR(sink_eval(&s, "sink.messages[0].mail_params.get('ENVID')"), "env+2B1+20x");
			CHECK_STR(sink_eval(&s, "sink.messages[0].rcpts[0][1]"),
			    "{'NOTIFY': 'SUCCESS,FAILURE', 'ORCPT': 'rfc822;Bob+2Btag@example.net'}");
			CHECK_STR(sink_eval(&s, "sink.messages[0].rcpts[1][1]"), "{'NOTIFY': 'NEVER'}");
		} else {
			CHECK_STR(sink_eval(&s, "sorted(sink.messages[0].mail_params)"), "['SIZE']");
			CHECK_STR(sink_eval(&s, "sink.messages[0].rcpts[0][1]"), "{}");
			CHECK_STR(sink_eval(&s, "sink.messages[0].rcpts[1][1]"), "{}");
		}
		attempt_fini(&a);
		fx_fini(&fx);
		sink_stop(&s);
	}
}

/* Lines opening with '.' arrive intact, across many 64 KiB chunks. */
static void
test_dot_stuffing(void)
{
	struct fx fx;
	struct sink s;
	struct attempt a;
	struct buf body = BUF_INIT;
	char expr[512];

	buf_puts(&body, ".leading dot\r\n..two dots\r\n.\r\nmiddle . dot\r\n");
	for (int i = 0; i < 6000; i++)
		buf_printf(&body, "%sline %05d of a long body with enough text to span chunks\r\n",
		    i % 7 == 0 ? "." : "", i);
	buf_puts(&body, ".\r\n");     /* a lone dot line, last */

	fx_init(&fx);
	sink_start(&s, "127.0.0.26", NULL);
	attempt_init(&a, &s, body.data, body.len, "bob@example.net", NULL);
	CHECK(a.req.body_len > 3 * DELIVER_CHUNK);
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_DONE);
	sink_exec(&s, "sink.wait_for_messages(1, timeout=5)");
	snprintf(expr, sizeof(expr), "sink.messages[0].data == open('%s', 'rb').read()[%" PRIu64 ":]",
	    a.path, a.req.body_offset);
	CHECK_STR(sink_eval(&s, "%s", expr), "True");
	CHECK_STR(sink_eval(&s, "sink.messages[0].data[:29]"), ".leading dot\\r\\n..two dots\\r\\n.\\r\\n");
	attempt_fini(&a);
	fx_fini(&fx);
	sink_stop(&s);
	buf_free(&body);
}

/* The pool's clock in the reuse tests: idle time passes only when a test says so. */
static uint64_t fake_ms = 1000000;

static uint64_t
fake_now(void)
{
	return fake_ms;
}

/* Two deliveries to the same key share one connection: the second MAIL
 * follows the first transaction directly, with no RSET between. */
static void
test_reuse(void)
{
	struct fx fx;
	struct sink s;
	struct attempt a, b;

	fx_init(&fx);
	fx_deliver(&fx)->now = fake_now;
	sink_start(&s, "127.0.0.27", NULL);
	attempt_init(&a, &s, BODY("one\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_DONE);
	fake_ms += DELIVER_REUSE_VERIFY_MS;     /* not more: no check */
	attempt_init(&b, &s, BODY("two\r\n"), "carol@example.net", NULL);
	attempt_run(&fx, &b);
	CHECK_INT(b.res.status, DELIVER_DONE);
	CHECK(starts_with(b.rcpts[0].reply, "250 2.0.0 Ok: queued as"));
	sink_exec(&s, "sink.wait_for_messages(2, timeout=5)");
	CHECK_STR(sink_eval(&s, "sink.messages[1].rcpt_addrs"), "['carol@example.net']");
	CHECK_INT(fx.d->nconnects, 1);
	attempt_fini(&a);
	attempt_fini(&b);
	/* shutdown says QUIT on the idle connection; nothing else was sent */
	fx_fini(&fx);
	sink_exec(&s, "sink.wait_for_command('QUIT', timeout=5)");
	CHECK_STR(sink_eval(&s, "sink.connections"), "1");
	CHECK_STR(sink_eval(&s, "[c.split()[0] for c in sink.sessions[0].commands]"),
	    "['EHLO', 'MAIL', 'RCPT', 'DATA', 'MAIL', 'RCPT', 'DATA', 'QUIT']");
	sink_stop(&s);
}

/* A connection idle for longer than DELIVER_REUSE_VERIFY_MS is checked with
 * RSET before the next MAIL; if the check fails (the server drops the
 * connection), the request runs on a fresh connection, not reported as a
 * host failure. */
static void
test_reuse_idle_check(void)
{
	struct fx fx;
	struct sink s;
	struct attempt a, b, c;

	fx_init(&fx);
	fx_deliver(&fx)->now = fake_now;
	sink_start(&s, "127.0.0.42", NULL);
	attempt_init(&a, &s, BODY("one\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_DONE);
	fake_ms += DELIVER_REUSE_VERIFY_MS + 1;
	attempt_init(&b, &s, BODY("two\r\n"), "carol@example.net", NULL);
	attempt_run(&fx, &b);
	CHECK_INT(b.res.status, DELIVER_DONE);
	CHECK_INT(fx.d->nconnects, 1);
	CHECK_STR(sink_eval(&s, "[c.split()[0] for c in sink.sessions[0].commands]"),
	    "['EHLO', 'MAIL', 'RCPT', 'DATA', 'RSET', 'MAIL', 'RCPT', 'DATA']");

	/* Idle again; this time the server drops the connection at the RSET. */
	sink_exec(&s, "sink.script(rset='DROP')");
	fake_ms += DELIVER_REUSE_VERIFY_MS + 1;
	attempt_init(&c, &s, BODY("three\r\n"), "dave@example.net", NULL);
	attempt_run(&fx, &c);
	CHECK_INT(c.res.status, DELIVER_DONE);
	CHECK_INT(fx.d->nconnects, 2);
	sink_exec(&s, "sink.wait_for_messages(3, timeout=5)");
	CHECK_STR(sink_eval(&s, "sink.messages[2].rcpt_addrs"), "['dave@example.net']");
	CHECK_STR(sink_eval(&s, "[c.split()[0] for c in sink.sessions[1].commands][:4]"),
	    "['EHLO', 'MAIL', 'RCPT', 'DATA']");
	attempt_fini(&a);
	attempt_fini(&b);
	attempt_fini(&c);
	fx_fini(&fx);
	sink_stop(&s);
}

/* A different TLS policy is a different key: no reuse across it. */
static void
test_reuse_key(void)
{
	struct fx fx;
	struct sink s;
	struct attempt a, b;

	fx_init(&fx);
	sink_start(&s, "127.0.0.28", NULL);
	attempt_init(&a, &s, BODY("one\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &a);
	attempt_init(&b, &s, BODY("two\r\n"), "bob@example.net", NULL);
	b.req.tls = CONF_TLS_OPPORTUNISTIC;
	attempt_run(&fx, &b);
	CHECK_INT(b.res.status, DELIVER_DONE);
	CHECK_STR(sink_eval(&s, "sink.connections"), "2");
	attempt_fini(&a);
	attempt_fini(&b);
	fx_fini(&fx);
	sink_stop(&s);
}

static bool
pred_no_conns(void *arg)
{
	return ((struct fx *)arg)->d->nconns == 0;
}

/* An idle connection QUITs when deliver.idle_timeout expires; one the
 * server closes is dropped; either way the next delivery connects anew. */
static void
test_idle_expiry(void)
{
	struct fx fx;
	struct sink s;
	struct attempt a, b, c;

	fx_init(&fx);
	fx.conf->deliver.idle_timeout = 200;
	sink_start(&s, "127.0.0.29", NULL);
	attempt_init(&a, &s, BODY("one\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_DONE);
	fx_run(&fx, pred_no_conns, &fx);
	sink_exec(&s, "sink.wait_for_command('QUIT', timeout=5)");

	fx.conf->deliver.idle_timeout = 10000;
	attempt_init(&b, &s, BODY("two\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &b);
	CHECK_INT(b.res.status, DELIVER_DONE);
	sink_exec(&s, "sink.drop_connections()");
	fx_run(&fx, pred_no_conns, &fx);
	attempt_init(&c, &s, BODY("three\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &c);
	CHECK_INT(c.res.status, DELIVER_DONE);
	CHECK_STR(sink_eval(&s, "sink.connections"), "3");
	attempt_fini(&a);
	attempt_fini(&b);
	attempt_fini(&c);
	fx_fini(&fx);
	sink_stop(&s);
}

/* A reused connection that dies under the next MAIL: the request runs on a
 * fresh connection, not reported as a host failure. */
static void
test_reuse_dies(void)
{
	struct fx fx;
	struct sink s;
	struct attempt a, b;

	fx_init(&fx);
	sink_start(&s, "127.0.0.30", NULL);
	sink_exec(&s, "sink.script(mail=['250 2.1.0 Ok', 'DROP', '250 2.1.0 Ok'])");
	attempt_init(&a, &s, BODY("one\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_DONE);
	attempt_init(&b, &s, BODY("two\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &b);
	CHECK_INT(b.res.status, DELIVER_DONE);
	CHECK_STR(sink_eval(&s, "sink.connections"), "2");
	CHECK_STR(sink_eval(&s, "len(sink.messages)"), "2");
	attempt_fini(&a);
	attempt_fini(&b);
	fx_fini(&fx);
	sink_stop(&s);
}

/* The connection is lost after the body, before the final reply: HOST_FAIL. */
static void
test_lost_in_data(void)
{
	struct fx fx;
	struct sink s;
	struct attempt a;

	fx_init(&fx);
	sink_start(&s, "127.0.0.31", NULL);
	sink_exec(&s, "sink.script(eod='DROP')");
	attempt_init(&a, &s, BODY("x\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_HOST_FAIL);
	CHECK_INT(a.res.io_err, IO_ERR_RESET);
	CHECK_MSG(strstr(a.res.reply, "DOT") != NULL, "reply: %s", a.res.reply);
	attempt_fini(&a);
	fx_fini(&fx);
	sink_stop(&s);
}

/* 5xx to EHLO: HELO instead, plain SMTP (no ESMTP parameters). */
static void
test_helo_fallback(void)
{
	struct fx fx;
	struct sink s;
	struct attempt a;

	fx_init(&fx);
	sink_start(&s, "127.0.0.32", NULL);
	sink_exec(&s, "sink.script(ehlo='502 5.5.2 no EHLO here')");
	attempt_init(&a, &s, BODY("x\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_DONE);
	sink_exec(&s, "sink.wait_for_messages(1, timeout=5)");
	CHECK_STR(sink_eval(&s, "sink.sessions[0].esmtp"), "False");
	CHECK_STR(sink_eval(&s, "sink.messages[0].mail_params"), "{}");
	attempt_fini(&a);
	fx_fini(&fx);
	sink_stop(&s);
}

/* AUTH over TLS through the SASL client: the mechanism is negotiated from the
 * server's list (mechanisms that take no password are never tried); refused
 * or no usable mechanism -> TEMP; never without TLS. */
static void
test_auth(void)
{
	static const struct {
		const char *script;
		enum conf_tls tls;
		const char *password;
		enum deliver_status status;
		int code;               /* res.code unless DONE */
		const char *status_code; /* res.status_code unless DONE */
		const char *mechs;      /* AUTH commands the sink saw: their mechanisms */
	} rows[] = {
		{ "", CONF_TLS_OPPORTUNISTIC, "secret", DELIVER_DONE, 0, NULL, "['PLAIN']" },
		{ "ehlo=['250-sink\\n250-STARTTLS\\n250 AUTH LOGIN', '250-sink\\n250 AUTH LOGIN']",
		  CONF_TLS_REQUIRE, "secret", DELIVER_DONE, 0, NULL, "['LOGIN']" },
		{ "ehlo=['250-sink\\n250-STARTTLS\\n250 X', "
		  "'250-sink\\n250-AUTH GSSAPI ANONYMOUS\\n250 AUTH=LOGIN']",
		  CONF_TLS_REQUIRE, "secret", DELIVER_DONE, 0, NULL, "['LOGIN']" },
		{ "ehlo=['250-sink\\n250-STARTTLS\\n250 X', '250-sink\\n250 AUTH GSSAPI EXTERNAL']",
		  CONF_TLS_REQUIRE, "secret", DELIVER_TEMP, 0, "4.7.0", "[]" },
		{ "ehlo=['250-sink\\n250-STARTTLS\\n250 X', '250-sink\\n250 X']",
		  CONF_TLS_REQUIRE, "secret", DELIVER_TEMP, 0, "4.7.0", "[]" },
		{ "", CONF_TLS_OPPORTUNISTIC, "wrong", DELIVER_TEMP, 535, "5.7.8", "['PLAIN']" },
		{ "", CONF_TLS_NONE, "secret", DELIVER_HOST_FAIL, 0, "4.7.4", "[]" },
	};
	char json[512];

	snprintf(json, sizeof(json), "{\"starttls\": [\"%s\", \"%s\"], \"auth\": {\"carol\": "
	    "\"secret\"}, \"auth_required\": true}", cert_file, key_file);
	for (size_t i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		struct fx fx;
		struct sink s;
		struct attempt a;

		fx_init(&fx);
		sink_start(&s, "127.0.0.33", json);
		if (rows[i].script[0] != '\0')
			sink_exec(&s, "sink.script(%s)", rows[i].script);
		attempt_init(&a, &s, BODY("x\r\n"), "bob@example.net", NULL);
		a.req.tls = rows[i].tls;
		a.req.auth_user = "carol";
		a.req.auth_password = rows[i].password;
		attempt_run(&fx, &a);
		CHECK_MSG(a.res.status == rows[i].status, "row %zu: status %d reply %s", i,
		    (int)a.res.status, a.res.reply);
		CHECK_STR(sink_eval(&s, "[c.split()[1].upper() for _, c in sink.commands "
		    "if c.upper().startswith('AUTH ')]"), rows[i].mechs);
		if (rows[i].status == DELIVER_DONE) {
			sink_exec(&s, "sink.wait_for_messages(1, timeout=5)");
			CHECK_STR(sink_eval(&s, "sink.messages[0].auth_user"), "carol");
			CHECK_STR(sink_eval(&s, "sink.messages[0].tls"), "True");
			CHECK_STR(sink_eval(&s, "sink.auth_attempts"), "[('carol', True)]");
		} else {
			CHECK_MSG(a.res.code == rows[i].code, "row %zu: code %d", i, a.res.code);
			CHECK_STR(a.res.status_code, rows[i].status_code);
			CHECK_STR(sink_eval(&s, "len(sink.transactions)"), "0");
			CHECK_STR(sink_eval(&s, "sink.auth_attempts"),
			    rows[i].code == 535 ? "[('carol', False)]" : "[]");
		}
		if (rows[i].code == 535)
			CHECK_STR(a.res.reply, "535 5.7.8 Error: authentication failed");
		attempt_fini(&a);
		fx_fini(&fx);
		sink_stop(&s);
	}
}

/* PIPELINING offered: MAIL, every RCPT and DATA leave before the MAIL reply
 * (RFC 2920; the sink holds that reply back and looks at what has arrived);
 * not offered: nothing follows MAIL until its reply. */
static void
test_pipelining(void)
{
	static const struct {
		const char *json;
		bool pipelined;
	} rows[] = {
		{ NULL, true },
		{ "{\"ehlo_features\": [\"SIZE 1000000\", \"8BITMIME\", \"ENHANCEDSTATUSCODES\"]}",
		  false },
	};

	for (size_t i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		struct fx fx;
		struct sink s;
		struct attempt a;
		const char *w;

		fx_init(&fx);
		sink_start(&s, "127.0.0.39", rows[i].json);
		sink_exec(&s, "sink.script(mail=lambda a: time.sleep(0.3) or '250 2.1.0 sender ok')");
		attempt_init(&a, &s, BODY("Subject: p\r\n\r\nx\r\n"), "bob@example.net",
		    "carol@example.net", NULL);
		attempt_run(&fx, &a);
		CHECK_INT(a.res.status, DELIVER_DONE);
		CHECK_INT(a.rcpts[0].code, 250);
		CHECK_INT(a.rcpts[1].code, 250);
		sink_exec(&s, "sink.wait_for_messages(1, timeout=5)");
		/* what had arrived, unread, when the MAIL reply went out */
		w = sink_eval(&s, "[p for _, r, p in sink.pending if r == '250 2.1.0 sender ok'][0]");
		if (rows[i].pipelined) {
			CHECK_MSG(strstr(w, "RCPT TO:<bob@example.net>") != NULL &&
			    strstr(w, "RCPT TO:<carol@example.net>") != NULL &&
			    strstr(w, "DATA\\r\\n") != NULL, "row %zu: waiting at the MAIL reply: %s",
			    i, w);
		} else {
			CHECK_MSG(w[0] == '\0', "row %zu: waiting at the MAIL reply: %s", i, w);
			CHECK_STR(sink_eval(&s, "[d for _, d in sink.reads if b'MAIL' in d]"),
			    "[b'MAIL FROM:<alice@relay.test> SIZE=17\\r\\n']");
		}
		attempt_fini(&a);
		fx_fini(&fx);
		sink_stop(&s);
	}
}

/* max_connections_per_host = 1: three requests wait their turn in the FIFO
 * and all go over the one connection. */
static void
test_per_host_limit(void)
{
	struct fx fx;
	struct sink s;
	struct attempt a[3];

	fx_init(&fx);
	fx.conf->router.max_connections_per_host = 1;
	sink_start(&s, "127.0.0.34", NULL);
	for (int i = 0; i < 3; i++) {
		attempt_init(&a[i], &s, BODY("x\r\n"), "bob@example.net", NULL);
		CHECK_INT(deliver_start(fx_deliver(&fx), &a[i].req, attempt_cb, &a[i]), 0);
	}
	for (int i = 0; i < 3; i++) {
		fx_run(&fx, pred_attempt, &a[i]);
		CHECK_INT(a[i].res.status, DELIVER_DONE);
	}
	CHECK_STR(sink_eval(&s, "sink.connections"), "1");
	for (int i = 0; i < 3; i++)
		attempt_fini(&a[i]);
	fx_fini(&fx);
	sink_stop(&s);
}

/* max_connections = 1: a request for another host closes the idle one. */
static void
test_global_limit(void)
{
	struct fx fx;
	struct sink s1, s2;
	struct attempt a, b;

	fx_init(&fx);
	fx.conf->router.max_connections = 1;
	sink_start(&s1, "127.0.0.35", NULL);
	sink_start(&s2, "127.0.0.36", NULL);
	attempt_init(&a, &s1, BODY("x\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_DONE);
	attempt_init(&b, &s2, BODY("x\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &b);
	CHECK_INT(b.res.status, DELIVER_DONE);
	CHECK(fx.d->nconns <= 1);
	sink_exec(&s1, "sink.wait_for_command('QUIT', timeout=5)");
	attempt_fini(&a);
	attempt_fini(&b);
	fx_fini(&fx);
	sink_stop(&s1);
	sink_stop(&s2);
}

/* The backlog test: many requests for one host, then a few for another. */
struct backlog {
	struct fx *fx;
	size_t done[2];             /* callbacks so far, per host */
	size_t target;              /* pred_backlog_target: done[0] + done[1] reaches it */
	size_t n2;                  /* requests for the second host */
	unsigned max_nconns;        /* the most connections the pool had open (sampled) */
};

struct backlog_req {
	struct attempt a;
	struct backlog *b;
	int host;                   /* 0: the first sink, 1: the second */
	char rcpt[48];
};

static void
backlog_sample(struct backlog *b)
{
	if (b->fx->d->nconns > b->max_nconns)
		b->max_nconns = b->fx->d->nconns;
}

static void
backlog_cb(void *arg, struct deliver_req *req, const struct deliver_result *res)
{
	struct backlog_req *r = arg;

	attempt_cb(&r->a, req, res);
	r->b->done[r->host]++;
	backlog_sample(r->b);
}

static bool
pred_backlog_second(void *arg)
{
	struct backlog *b = arg;

	backlog_sample(b);
	return b->done[1] == b->n2;
}

static bool
pred_backlog_target(void *arg)
{
	struct backlog *b = arg;

	backlog_sample(b);
	return b->done[0] + b->done[1] >= b->target;
}

/*
 * A backlog for one host neither starves another host nor breaks the limits:
 * n1 requests for a first host (max_connections_per_host = 2), then a few for
 * a second, all queued at once.  Every message reaches its own sink; the
 * second host's are all delivered while most of the first host's still wait;
 * the first sink never has more than 2 connections open at once, and each
 * connection carries its messages in queue order.  With max_connections = 2
 * as well, the first host holds every slot: the second host gets its turns by
 * closing an idle connection of the first, and the pool never opens more.
 */
static void
test_backlog_fairness(void)
{
	static const struct {
		size_t n1;
		unsigned max;           /* router.max_connections; 0: the default */
	} rows[] = {
		{ 2000, 0 },
		{ 300, 2 },
	};
	enum { N2 = 5 };

	for (size_t i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		size_t n1 = rows[i].n1, n = n1 + N2, bad = 0;
		struct fx fx;
		struct sink s1, s2;
		struct backlog b;
		struct backlog_req *r;
		const char *got;

		fx_init(&fx);
		fx.conf->router.max_connections_per_host = 2;
		if (rows[i].max > 0)
			fx.conf->router.max_connections = rows[i].max;
		/* nodelay: without it, Nagle holds back pipelined replies (~40 ms each time) */
		sink_start(&s1, "127.0.0.40", "{\"nodelay\": true}");
		sink_start(&s2, "127.0.0.41", "{\"nodelay\": true}");
		memset(&b, 0, sizeof(b));
		b.fx = &fx;
		b.n2 = N2;
		r = xcalloc(n, sizeof(*r));
		for (size_t j = 0; j < n; j++) {
			r[j].b = &b;
			r[j].host = j < n1 ? 0 : 1;
			snprintf(r[j].rcpt, sizeof(r[j].rcpt), "u%zu@example.net", j);
			attempt_init(&r[j].a, r[j].host == 0 ? &s1 : &s2, BODY("x\r\n"), r[j].rcpt,
			    NULL);
			CHECK_INT(deliver_start(fx_deliver(&fx), &r[j].a.req, backlog_cb, &r[j]), 0);
		}

		/* The second host is done while the first host's backlog has far to go. */
		fx_run(&fx, pred_backlog_second, &b);
		CHECK_MSG(b.done[0] < n1 / 2, "row %zu: %zu of the first host's %zu done before "
		    "the second host's %d", i, b.done[0], n1, N2);
		got = sink_eval(&s1, "len(sink.messages)");
		CHECK_MSG((size_t)atol(got) < n1 / 2, "row %zu: the first sink had %s messages "
		    "when the second host was done", i, got);

		/* Then the rest, each step of 100 with its own guard. */
		while (b.done[0] + b.done[1] < n) {
			b.target = b.done[0] + b.done[1] + 100 < n ? b.done[0] + b.done[1] + 100 : n;
			if (!fx_run(&fx, pred_backlog_target, &b))
				break;
		}
		for (size_t j = 0; j < n; j++)
			if (r[j].a.done != 1 || r[j].a.res.status != DELIVER_DONE ||
			    r[j].a.rcpts[0].code != 250)
				bad++;
		CHECK_MSG(bad == 0, "row %zu: %zu of %zu requests not delivered", i, bad, n);
		sink_exec(&s1, "sink.wait_for_messages(%zu, timeout=10)", n1);
		sink_exec(&s2, "sink.wait_for_messages(%d, timeout=10)", N2);
		CHECK_STR(sink_eval(&s1, "sorted(int(m.rcpt_addrs[0][1:].split('@')[0]) "
		    "for m in sink.messages) == list(range(%zu))", n1), "True");
		CHECK_STR(sink_eval(&s2, "sorted(int(m.rcpt_addrs[0][1:].split('@')[0]) "
		    "for m in sink.messages) == list(range(%zu, %zu))", n1, n), "True");
		if (rows[i].max == 0) {
			/* No connection was closed: the sink's count of open ones is exact. */
			CHECK_STR(sink_eval(&s1, "sink.connections"), "2");
			CHECK_STR(sink_eval(&s1, "sink.max_concurrent"), "2");
			CHECK_STR(sink_eval(&s1, "all(l == sorted(l) for l in "
			    "[[int(m.rcpt_addrs[0][1:].split('@')[0]) for m in sink.messages "
			    "if m.conn == c] for c in (1, 2)])"), "True");
		} else
			CHECK_MSG(b.max_nconns <= rows[i].max, "row %zu: %u connections open",
			    i, b.max_nconns);
		for (size_t j = 0; j < n; j++)
			attempt_fini(&r[j].a);
		free(r);
		fx_fini(&fx);
		sink_stop(&s1);
		sink_stop(&s2);
	}
}

static bool
pred_one_conn(void *arg)
{
	return ((struct fx *)arg)->d->nconns == 1;
}

/* Shutdown: a request in progress and one waiting both get HOST_FAIL
 * "shutting down"; deliver_start is refused afterwards. */
static void
test_shutdown(void)
{
	struct fx fx;
	struct sink s;
	struct attempt a, b, c;

	fx_init(&fx);
	fx.conf->router.max_connections_per_host = 1;
	sink_start(&s, "127.0.0.37", "{\"hang_greeting\": true}");
	attempt_init(&a, &s, BODY("x\r\n"), "bob@example.net", NULL);
	attempt_init(&b, &s, BODY("x\r\n"), "bob@example.net", NULL);
	attempt_init(&c, &s, BODY("x\r\n"), "bob@example.net", NULL);
	CHECK_INT(deliver_start(fx_deliver(&fx), &a.req, attempt_cb, &a), 0);
	CHECK_INT(deliver_start(fx.d, &b.req, attempt_cb, &b), 0);
	fx_run(&fx, pred_one_conn, &fx);
	sink_exec(&s, "sink.wait_for_connections(1, timeout=5)");
	deliver_shutdown(fx.d, fx_shutdown_done, &fx.shut);
	CHECK_INT(deliver_start(fx.d, &c.req, attempt_cb, &c), RELAY_ECLOSED);
	CHECK_INT(a.done, 0);       /* never inside deliver_shutdown() */
	fx_run(&fx, pred_flag, &fx.shut);
	CHECK_INT(a.done, 1);
	CHECK_INT(b.done, 1);
	CHECK_INT(a.res.status, DELIVER_HOST_FAIL);
	CHECK_INT(b.res.status, DELIVER_HOST_FAIL);
	CHECK_STR(b.res.reply, "shutting down");
	CHECK_STR(a.res.reply, "shutting down");
	deliver_free(fx.d);
	fx.d = NULL;
	attempt_fini(&a);
	attempt_fini(&b);
	attempt_fini(&c);
	fx_fini(&fx);
	sink_stop(&s);
}

/* ------------------------------------------------------------------ */

static void
make_cert(void)
{
	char cmd[1024];

	snprintf(cert_file, sizeof(cert_file), "%s/cert.pem", tmpdir);
	snprintf(key_file, sizeof(key_file), "%s/key.pem", tmpdir);
	snprintf(cmd, sizeof(cmd), "openssl req -x509 -newkey rsa:2048 -nodes -days 2 "
	    "-keyout %s -out %s -subj /CN=mx.test -addext subjectAltName=DNS:mx.test "
	    ">/dev/null 2>&1", key_file, cert_file);
	if (system(cmd) != 0)
		fatalx("%s: openssl req failed", __func__);
}

static void
find_harness(void)
{
	const char *src = getenv("RELAY_SOURCE_DIR");

	if (src != NULL && *src != '\0')
		snprintf(harness, sizeof(harness), "%s/tests/harness/sink_cli.py", src);
	else {
		/* __FILE__ is .../tests/unit/test_deliver.c */
		char here[900];
		char *slash;

		snprintf(here, sizeof(here), "%s", __FILE__);
		slash = strrchr(here, '/');
		if (slash != NULL)
			*slash = '\0';
		snprintf(harness, sizeof(harness), "%s/../harness/sink_cli.py",
		    slash != NULL ? here : ".");
	}
	if (access(harness, R_OK) != 0)
		fatalx("%s: %s: %s (set RELAY_SOURCE_DIR)", __func__, harness, strerror(errno));
}

int
main(void)
{
	char cmd[128];

	signal(SIGPIPE, SIG_IGN);
	log_open(NULL);
	log_set_level(getenv("RELAY_TEST_DEBUG") != NULL ? LOG_DEBUG : LOG_CRIT);
	find_harness();
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_deliver.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		fatalx("mkdtemp: %s", strerror(errno));
	make_cert();

	test_plain();
	test_starttls_opportunistic();
	test_opportunistic_plaintext();
	test_require_not_offered();
	test_verify();
	test_opportunistic_handshake_fails();
	test_starttls_refused();
	test_mixed_rcpts();
	test_pipelining();
	test_all_rcpts_refused();
	test_eod_failures();
	test_mail_data_failures();
	test_refused();
	test_greeting_failures();
	test_refused_before_mail();
	test_8bit_announced();
	test_dsn_params();
	test_dot_stuffing();
	test_reuse();
	test_reuse_idle_check();
	test_reuse_key();
	test_idle_expiry();
	test_reuse_dies();
	test_lost_in_data();
	test_helo_fallback();
	test_auth();
	test_per_host_limit();
	test_global_limit();
	test_backlog_fairness();
	test_shutdown();

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return check_done();
}
