/*
 * deliver_fixture.h - the fixture of deliver/'s unit tests (test_deliver.c:
 * one SMTP transaction; test_deliver_pool.c: the connection pool): a real
 * libuv loop with a configuration and a deliver, one delivery attempt of a
 * queue file written to the test's temporary directory, aimed at a real SMTP
 * sink (mxsink.h) on 127.0.0.x, and a self-signed certificate for the TLS
 * tests.  Not a test (CMake builds only test_*.c); include it after check.h.
 * Everything here is static: each test program gets its own copy.
 *
 * RELAY_TEST_DEBUG=1 shows deliver's debug log on stderr.
 */
#ifndef RELAY_DELIVER_FIXTURE_H
#define RELAY_DELIVER_FIXTURE_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
#include "mxsink.h"

static char tmpdir[64];
static char cert_file[128], key_file[128];

/* ------------------------------------------------------------------ */
/* The fixture: a loop, a configuration, a deliver. */

struct fx {
	uv_loop_t loop;
	uv_timer_t guard;
	struct conf *conf;
	struct deliver *d;
	int shut;
};

static inline void
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

static inline struct deliver *
fx_deliver(struct fx *fx)
{
	if (fx->d == NULL)
		fx->d = deliver_new(&fx->loop, fx->conf);
	return fx->d;
}

static inline void
fx_guard_cb(uv_timer_t *t)
{
}

/* Run the loop until pred(arg) holds; false after 20 s (a broken test, not a timing check). */
static inline bool
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

static inline void
fx_shutdown_done(void *arg)
{
	*(int *)arg = 1;
}

static inline bool
pred_flag(void *arg)
{
	return *(int *)arg != 0;
}

static inline void
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

static inline void
attempt_cb(void *arg, struct deliver_req *req, const struct deliver_result *res)
{
	struct attempt *a = arg;

	CHECK_MSG(a->done == 0, "callback fired twice");
	CHECK(req == &a->req);
	a->res = *res;
	a->done = 1;
}

/* A queue file: some envelope bytes, then the body at body_offset. */
static inline void
attempt_init(struct attempt *a, const struct mxsink *s, const char *body, size_t bodylen,
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

static inline bool
pred_attempt(void *arg)
{
	return ((struct attempt *)arg)->done != 0;
}

static inline void
attempt_run(struct fx *fx, struct attempt *a)
{
	CHECK_INT(deliver_start(fx_deliver(fx), &a->req, attempt_cb, a), 0);
	fx_run(fx, pred_attempt, a);
}

static inline void
attempt_fini(struct attempt *a)
{
	deliver_req_clear(&a->req);
	unlink(a->path);
}

#define BODY(s) (s), (sizeof(s) - 1)

static inline bool
starts_with(const char *s, const char *prefix)
{
	return s != NULL && strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ------------------------------------------------------------------ */
/* A self-signed certificate for mx.test, and the program's set-up. */

static inline void
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

/* Start a test program: logging, the temporary directory, the certificate. */
static inline void
deliver_fixture_setup(const char *name)
{
	signal(SIGPIPE, SIG_IGN);
	log_open(NULL);
	log_set_level(getenv("RELAY_TEST_DEBUG") != NULL ? LOG_DEBUG : LOG_CRIT);
	mxsink_find_harness();
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/%s.XXXXXX", name);
	if (mkdtemp(tmpdir) == NULL)
		fatalx("mkdtemp: %s", strerror(errno));
	make_cert();
}

static inline void
deliver_fixture_teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
}

#endif
