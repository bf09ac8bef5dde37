/*
 * test_deliver_pool.c - deliver/'s connection pool against REAL SMTP peers
 * (Python SinkMXes, mxsink.h, on 127.0.0.x): reuse of an idle connection and
 * its check, keys, idle expiry, a reused connection that dies, the limits
 * per host and overall, fairness under a backlog, and shutdown.  One
 * transaction at a time is test_deliver.c.
 * Each test states the behaviour it proves; each ends by closing its loop.
 */
#include "deliver_fixture.h"

#include <sasl/sasl.h>

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
	struct mxsink s;
	struct attempt a, b;

	fx_init(&fx);
	fx_deliver(&fx)->now = fake_now;
	mxsink_start(&s, "127.0.0.27", NULL);
	attempt_init(&a, &s, BODY("one\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_DONE);
	fake_ms += DELIVER_REUSE_VERIFY_MS;     /* not more: no check */
	attempt_init(&b, &s, BODY("two\r\n"), "carol@example.net", NULL);
	attempt_run(&fx, &b);
	CHECK_INT(b.res.status, DELIVER_DONE);
	CHECK(starts_with(b.rcpts[0].reply, "250 2.0.0 Ok: queued as"));
	mxsink_exec(&s, "sink.wait_for_messages(2, timeout=5)");
	CHECK_STR(mxsink_eval(&s, "sink.messages[1].rcpt_addrs"), "['carol@example.net']");
	CHECK_INT(fx.d->nconnects, 1);
	attempt_fini(&a);
	attempt_fini(&b);
	/* shutdown says QUIT on the idle connection; nothing else was sent */
	fx_fini(&fx);
	mxsink_exec(&s, "sink.wait_for_command('QUIT', timeout=5)");
	CHECK_STR(mxsink_eval(&s, "sink.connections"), "1");
	CHECK_STR(mxsink_eval(&s, "[c.split()[0] for c in sink.sessions[0].commands]"),
	    "['EHLO', 'MAIL', 'RCPT', 'DATA', 'MAIL', 'RCPT', 'DATA', 'QUIT']");
	mxsink_stop(&s);
}

/* A connection idle for longer than DELIVER_REUSE_VERIFY_MS is checked with
 * RSET before the next MAIL; if the check fails (the server drops the
 * connection), the request runs on a fresh connection, not reported as a
 * host failure. */
static void
test_reuse_idle_check(void)
{
	struct fx fx;
	struct mxsink s;
	struct attempt a, b, c;

	fx_init(&fx);
	fx_deliver(&fx)->now = fake_now;
	mxsink_start(&s, "127.0.0.42", NULL);
	attempt_init(&a, &s, BODY("one\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_DONE);
	fake_ms += DELIVER_REUSE_VERIFY_MS + 1;
	attempt_init(&b, &s, BODY("two\r\n"), "carol@example.net", NULL);
	attempt_run(&fx, &b);
	CHECK_INT(b.res.status, DELIVER_DONE);
	CHECK_INT(fx.d->nconnects, 1);
	CHECK_STR(mxsink_eval(&s, "[c.split()[0] for c in sink.sessions[0].commands]"),
	    "['EHLO', 'MAIL', 'RCPT', 'DATA', 'RSET', 'MAIL', 'RCPT', 'DATA']");

	/* Idle again; this time the server drops the connection at the RSET. */
	mxsink_exec(&s, "sink.script(rset='DROP')");
	fake_ms += DELIVER_REUSE_VERIFY_MS + 1;
	attempt_init(&c, &s, BODY("three\r\n"), "dave@example.net", NULL);
	attempt_run(&fx, &c);
	CHECK_INT(c.res.status, DELIVER_DONE);
	CHECK_INT(fx.d->nconnects, 2);
	mxsink_exec(&s, "sink.wait_for_messages(3, timeout=5)");
	CHECK_STR(mxsink_eval(&s, "sink.messages[2].rcpt_addrs"), "['dave@example.net']");
	CHECK_STR(mxsink_eval(&s, "[c.split()[0] for c in sink.sessions[1].commands][:4]"),
	    "['EHLO', 'MAIL', 'RCPT', 'DATA']");
	attempt_fini(&a);
	attempt_fini(&b);
	attempt_fini(&c);
	fx_fini(&fx);
	mxsink_stop(&s);
}

/* A different TLS policy is a different key: no reuse across it. */
static void
test_reuse_key(void)
{
	struct fx fx;
	struct mxsink s;
	struct attempt a, b;

	fx_init(&fx);
	mxsink_start(&s, "127.0.0.28", NULL);
	attempt_init(&a, &s, BODY("one\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &a);
	attempt_init(&b, &s, BODY("two\r\n"), "bob@example.net", NULL);
	b.req.tls = CONF_TLS_OPPORTUNISTIC;
	attempt_run(&fx, &b);
	CHECK_INT(b.res.status, DELIVER_DONE);
	CHECK_STR(mxsink_eval(&s, "sink.connections"), "2");
	attempt_fini(&a);
	attempt_fini(&b);
	fx_fini(&fx);
	mxsink_stop(&s);
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
	struct mxsink s;
	struct attempt a, b, c;

	fx_init(&fx);
	fx.conf->deliver.idle_timeout = 200;
	mxsink_start(&s, "127.0.0.29", NULL);
	attempt_init(&a, &s, BODY("one\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_DONE);
	fx_run(&fx, pred_no_conns, &fx);
	mxsink_exec(&s, "sink.wait_for_command('QUIT', timeout=5)");

	fx.conf->deliver.idle_timeout = 10000;
	attempt_init(&b, &s, BODY("two\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &b);
	CHECK_INT(b.res.status, DELIVER_DONE);
	mxsink_exec(&s, "sink.drop_connections()");
	fx_run(&fx, pred_no_conns, &fx);
	attempt_init(&c, &s, BODY("three\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &c);
	CHECK_INT(c.res.status, DELIVER_DONE);
	CHECK_STR(mxsink_eval(&s, "sink.connections"), "3");
	attempt_fini(&a);
	attempt_fini(&b);
	attempt_fini(&c);
	fx_fini(&fx);
	mxsink_stop(&s);
}

/* A reused connection that dies under the next MAIL: the request runs on a
 * fresh connection, not reported as a host failure. */
static void
test_reuse_dies(void)
{
	struct fx fx;
	struct mxsink s;
	struct attempt a, b;

	fx_init(&fx);
	mxsink_start(&s, "127.0.0.30", NULL);
	mxsink_exec(&s, "sink.script(mail=['250 2.1.0 Ok', 'DROP', '250 2.1.0 Ok'])");
	attempt_init(&a, &s, BODY("one\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_DONE);
	attempt_init(&b, &s, BODY("two\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &b);
	CHECK_INT(b.res.status, DELIVER_DONE);
	CHECK_STR(mxsink_eval(&s, "sink.connections"), "2");
	CHECK_STR(mxsink_eval(&s, "len(sink.messages)"), "2");
	attempt_fini(&a);
	attempt_fini(&b);
	fx_fini(&fx);
	mxsink_stop(&s);
}
/* max_connections_per_host = 1: three requests wait their turn in the FIFO
 * and all go over the one connection. */
static void
test_per_host_limit(void)
{
	struct fx fx;
	struct mxsink s;
	struct attempt a[3];

	fx_init(&fx);
	fx.conf->router.max_connections_per_host = 1;
	mxsink_start(&s, "127.0.0.34", NULL);
	for (int i = 0; i < 3; i++) {
		attempt_init(&a[i], &s, BODY("x\r\n"), "bob@example.net", NULL);
		CHECK_INT(deliver_start(fx_deliver(&fx), &a[i].req, attempt_cb, &a[i]), 0);
	}
	for (int i = 0; i < 3; i++) {
		fx_run(&fx, pred_attempt, &a[i]);
		CHECK_INT(a[i].res.status, DELIVER_DONE);
	}
	CHECK_STR(mxsink_eval(&s, "sink.connections"), "1");
	for (int i = 0; i < 3; i++)
		attempt_fini(&a[i]);
	fx_fini(&fx);
	mxsink_stop(&s);
}

/* max_connections = 1: a request for another host closes the idle one. */
static void
test_global_limit(void)
{
	struct fx fx;
	struct mxsink s1, s2;
	struct attempt a, b;

	fx_init(&fx);
	fx.conf->router.max_connections = 1;
	mxsink_start(&s1, "127.0.0.35", NULL);
	mxsink_start(&s2, "127.0.0.36", NULL);
	attempt_init(&a, &s1, BODY("x\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &a);
	CHECK_INT(a.res.status, DELIVER_DONE);
	attempt_init(&b, &s2, BODY("x\r\n"), "bob@example.net", NULL);
	attempt_run(&fx, &b);
	CHECK_INT(b.res.status, DELIVER_DONE);
	CHECK(fx.d->nconns <= 1);
	mxsink_exec(&s1, "sink.wait_for_command('QUIT', timeout=5)");
	attempt_fini(&a);
	attempt_fini(&b);
	fx_fini(&fx);
	mxsink_stop(&s1);
	mxsink_stop(&s2);
}

static bool
pred_all_done(void *arg)
{
	const struct attempt *a = arg;

	for (size_t i = 0; i < DELIVER_QUITTING_MAX + 8; i++)
		if (!a[i].done)
			return false;
	return true;
}

/*
 * Connections closed to make room keep their socket until their QUIT is
 * written, outside the pool's count: at most DELIVER_QUITTING_MAX at once,
 * the rest close without QUIT.  A full pool of idle connections to one host
 * (router.max_connections of them) all make room, in one dispatch pass, for
 * as many requests to another host: the first sink sees every connection
 * end, and QUIT on DELIVER_QUITTING_MAX of them only; every message to the
 * second host is delivered.  (Without the cap all of them QUIT, and the
 * sockets held at once were twice router.max_connections.)
 */
static void
test_quitting_capped(void)
{
	enum { N = DELIVER_QUITTING_MAX + 8 };
	struct fx fx;
	struct mxsink s1, s2;
	struct attempt *a = xcalloc(N, sizeof(*a)), *b = xcalloc(N, sizeof(*b));

	fx_init(&fx);
	fx.conf->router.max_connections = N;
	fx.conf->router.max_connections_per_host = 0;
	mxsink_start(&s1, "127.0.0.38", NULL);
	mxsink_start(&s2, "127.0.0.39", NULL);
	/* N requests at once, none idle: N connections to the first sink */
	for (int i = 0; i < N; i++) {
		attempt_init(&a[i], &s1, BODY("x\r\n"), "bob@example.net", NULL);
		CHECK_INT(deliver_start(fx_deliver(&fx), &a[i].req, attempt_cb, &a[i]), 0);
	}
	fx_run(&fx, pred_all_done, a);
	CHECK_INT(fx.d->nconns, N);
	CHECK_INT(mxsink_long(&s1, "sink.connections"), N);
	/* N requests for the second sink: each closes an idle one of the first */
	for (int i = 0; i < N; i++) {
		attempt_init(&b[i], &s2, BODY("y\r\n"), "carol@example.net", NULL);
		CHECK_INT(deliver_start(fx.d, &b[i].req, attempt_cb, &b[i]), 0);
	}
	fx_run(&fx, pred_all_done, b);
	for (int i = 0; i < N; i++)
		CHECK_INT(b[i].res.status, DELIVER_DONE);
	CHECK_INT(fx.d->nconns, N);
	mxsink_exec(&s1, "sink._wait(lambda: len(sink.sessions) == %d and "
	    "all(c.closed for c in sink.sessions), 10, 'every connection closed')", N);
	CHECK_INT(mxsink_long(&s1, "sum(any(x.startswith('QUIT') for x in c.commands) "
	    "for c in sink.sessions)"), DELIVER_QUITTING_MAX);
	for (int i = 0; i < N; i++) {
		attempt_fini(&a[i]);
		attempt_fini(&b[i]);
	}
	free(a);
	free(b);
	fx_fini(&fx);
	mxsink_stop(&s1);
	mxsink_stop(&s2);
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
		struct mxsink s1, s2;
		struct backlog b;
		struct backlog_req *r;
		const char *got;

		fx_init(&fx);
		fx.conf->router.max_connections_per_host = 2;
		if (rows[i].max > 0)
			fx.conf->router.max_connections = rows[i].max;
		/* nodelay: without it, Nagle holds back pipelined replies (~40 ms each time) */
		mxsink_start(&s1, "127.0.0.40", "{\"nodelay\": true}");
		mxsink_start(&s2, "127.0.0.41", "{\"nodelay\": true}");
		if (rows[i].max > 0)
			/* The second host's turns cost a new connection each (the first's
			 * idle one closed); the first host's messages go over a warm one.
			 * Under a loaded machine a connection's set-up took as long as ~60 of
			 * those messages (287 of 300 done first, once in CI): the first
			 * sink's messages take 10 ms each until the second host is done, so
			 * the count below measures turns, not the sinks' relative speed. */
			mxsink_exec(&s1, "sink.script(eod=lambda m: time.sleep(0.01) or "
			    "\"250 2.0.0 Ok\")");
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
		got = mxsink_eval(&s1, "len(sink.messages)");
		CHECK_MSG((size_t)atol(got) < n1 / 2, "row %zu: the first sink had %s messages "
		    "when the second host was done", i, got);
		mxsink_exec(&s1, "sink.reset_script()");

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
		mxsink_exec(&s1, "sink.wait_for_messages(%zu, timeout=10)", n1);
		mxsink_exec(&s2, "sink.wait_for_messages(%d, timeout=10)", N2);
		CHECK_STR(mxsink_eval(&s1, "sorted(int(m.rcpt_addrs[0][1:].split('@')[0]) "
		    "for m in sink.messages) == list(range(%zu))", n1), "True");
		CHECK_STR(mxsink_eval(&s2, "sorted(int(m.rcpt_addrs[0][1:].split('@')[0]) "
		    "for m in sink.messages) == list(range(%zu, %zu))", n1, n), "True");
		if (rows[i].max == 0) {
			/* No connection was closed: the sink's count of open ones is exact. */
			CHECK_STR(mxsink_eval(&s1, "sink.connections"), "2");
			CHECK_STR(mxsink_eval(&s1, "sink.max_concurrent"), "2");
			CHECK_STR(mxsink_eval(&s1, "all(l == sorted(l) for l in "
			    "[[int(m.rcpt_addrs[0][1:].split('@')[0]) for m in sink.messages "
			    "if m.conn == c] for c in (1, 2)])"), "True");
		} else
			CHECK_MSG(b.max_nconns <= rows[i].max, "row %zu: %u connections open",
			    i, b.max_nconns);
		for (size_t j = 0; j < n; j++)
			attempt_fini(&r[j].a);
		free(r);
		fx_fini(&fx);
		mxsink_stop(&s1);
		mxsink_stop(&s2);
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
	struct mxsink s;
	struct attempt a, b, c;

	fx_init(&fx);
	fx.conf->router.max_connections_per_host = 1;
	mxsink_start(&s, "127.0.0.37", "{\"hang_greeting\": true}");
	attempt_init(&a, &s, BODY("x\r\n"), "bob@example.net", NULL);
	attempt_init(&b, &s, BODY("x\r\n"), "bob@example.net", NULL);
	attempt_init(&c, &s, BODY("x\r\n"), "bob@example.net", NULL);
	CHECK_INT(deliver_start(fx_deliver(&fx), &a.req, attempt_cb, &a), 0);
	CHECK_INT(deliver_start(fx.d, &b.req, attempt_cb, &b), 0);
	fx_run(&fx, pred_one_conn, &fx);
	mxsink_exec(&s, "sink.wait_for_connections(1, timeout=5)");
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
	mxsink_stop(&s);
}

/*
 * The delivery thread's pool (deliver_new_thread): libsasl's client side is
 * set up on the caller's thread, inside deliver_start() of a request with an
 * auth_user, and given back there when the pool is freed, never on the
 * delivery thread: sasl_client_init/done rebuild and free libsasl's global
 * mechanism list, which submit/ reads on the caller's thread.  (The sink
 * offers no AUTH: the attempt fails, the point is where libsasl was set up.)
 */
static void
test_thread_sasl_on_caller(void)
{
	struct fx fx;
	struct mxsink s;
	struct attempt a;

	CHECK(sasl_global_listmech() == NULL);      /* nobody has set libsasl up yet */
	fx_init(&fx);
	fx.d = deliver_new_thread(&fx.loop, fx.conf);
	mxsink_start(&s, "127.0.0.27", NULL);
	attempt_init(&a, &s, BODY("one\r\n"), "bob@example.net", NULL);
	a.req.auth_user = "carol";
	a.req.auth_password = "secret";
	CHECK_INT(deliver_start(fx.d, &a.req, attempt_cb, &a), 0);
	CHECK_MSG(sasl_global_listmech() != NULL,
	    "libsasl's client side was not set up on the caller's thread");
	fx_run(&fx, pred_attempt, &a);
	CHECK(a.res.status != DELIVER_DONE);
	attempt_fini(&a);
	fx_fini(&fx);
	CHECK_MSG(sasl_global_listmech() == NULL,
	    "libsasl's client side was not given back when the pool was freed");
	mxsink_stop(&s);
}

int
main(void)
{
	deliver_fixture_setup("test_deliver_pool");

	test_reuse();
	test_reuse_idle_check();
	test_reuse_key();
	test_idle_expiry();
	test_reuse_dies();
	test_per_host_limit();
	test_global_limit();
	test_quitting_capped();
	test_backlog_fairness();
	test_shutdown();
	test_thread_sasl_on_caller();

	deliver_fixture_teardown();
	return check_done();
}
