/*
 * test_sched.c - the scheduler's pure parts (router/router_sched.c) and the
 * routing table (router/router_route.c): retry delays with injected
 * randomness, when a recipient read back from disk is due, the ramp after an
 * outage, reply classes, lifetimes, route parsing, precedence and the
 * persistence of run-time routes.
 */
#include "router/router_sched.h"
#include "router/router_route.h"
#include "queue/queue_int.h"
#include "common/util.h"

#include <stdlib.h>
#include <unistd.h>

#include "check.h"

#define S 1000ULL
#define M (60 * S)
#define H (60 * M)
#define D (24 * H)

static void
test_retry_delay(void)
{
	static const uint64_t dflt[] = { 5 * M, 10 * M, 20 * M, 40 * M, 1 * H };
	static const uint64_t one[] = { 1 * H };
	static const struct {
		const uint64_t *iv;
		size_t n;
		unsigned attempts;
		uint32_t rnd;
		uint64_t want;
	} rows[] = {
		{ dflt, 5, 1, 0, 5 * M },
		{ dflt, 5, 2, 0, 10 * M },
		{ dflt, 5, 5, 0, 1 * H },
		{ dflt, 5, 6, 0, 1 * H },            /* the last interval repeats */
		{ dflt, 5, 500, 0, 1 * H },
		{ dflt, 5, 0, 0, 5 * M },            /* no attempt counted yet: the first */
		{ dflt, 5, 1, 7, 5 * M + 7 },        /* jitter ... */
		{ dflt, 5, 1, 30 * S, 5 * M + 30 * S },
		{ dflt, 5, 1, 30 * S + 1, 5 * M },   /* ... below a tenth: wraps */
		{ one, 1, 3, 0, 1 * H },
		{ one, 1, 3, 6 * M, 1 * H + 6 * M },
		{ NULL, 0, 1, 0, 5 * M },            /* no table: 5 minutes */
	};
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		uint64_t got = sched_retry_delay(rows[i].iv, rows[i].n, rows[i].attempts, rows[i].rnd);

		CHECK_MSG(got == rows[i].want, "row %zu: got %llu want %llu", i,
		    (unsigned long long)got, (unsigned long long)rows[i].want);
	}
	/* jitter stays within a tenth for every rnd */
	for (i = 0; i < 100000; i += 997) {
		uint64_t got = sched_retry_delay(dflt, 5, 2, (uint32_t)(i * 2654435761u));

		CHECK(got >= 10 * M && got <= 11 * M);
	}
}

static void
test_rcpt_due(void)
{
	static const uint64_t iv[] = { 1 * M, 10 * M };
	static const struct {
		enum rcpt_state state;
		unsigned attempts;
		uint64_t last;
		const char *status;
		uint64_t want;
		bool waiting;                   /* recorded with QREC_WAIT_DEST */
	} rows[] = {
		{ RCPT_PENDING, 0, 0, NULL, 0, false },                     /* never tried: now */
		{ RCPT_PENDING, 1, 1000, "4.2.0", 1000 + 1 * M, false },     /* remote 4xx: its interval */
		{ RCPT_PENDING, 2, 1000, "4.7.1", 1000 + 10 * M, false },
		{ RCPT_PENDING, 9, 1000, "4.4.3", 1000 + 10 * M, false },    /* DNS: repeats the last */
		{ RCPT_PENDING, 3, 1000, "4.4.1", 0, true },          /* waited on its destination */
		{ RCPT_PENDING, 0, 5000, "4.4.1", 0, true },
		{ RCPT_PENDING, 3, 1000, "4.4.1", 1000 + 10 * M, false },    /* a remote's own 451 4.4.1 */
		{ RCPT_DELIVERED, 1, 1000, "2.0.0", UINT64_MAX, false },
		{ RCPT_FAILED, 1, 1000, "5.1.1", UINT64_MAX, false },
	};
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		struct queue_rcpt qr;

		memset(&qr, 0, sizeof(qr));
		qr.state = rows[i].state;
		qr.attempts = rows[i].attempts;
		qr.last_attempt_ms = rows[i].last;
		queue_rcpt_set_last(NULL, &qr, NULL, NULL, rows[i].status, NULL);
		qr.waiting = rows[i].waiting;
		CHECK_MSG(sched_rcpt_due(&qr, iv, 2, 0) == rows[i].want, "row %zu", i);
		queue_rcpt_free_last(&qr);
	}
}

static void
test_ramp(void)
{
	/* after an outage: 2, 4, 8 ... then no limit of the scheduler's own */
	unsigned w = SCHED_RAMP_START, steps = 0;

	CHECK_INT(sched_ramp_grow(1), 2);
	CHECK_INT(sched_ramp_grow(2), 4);
	CHECK_INT(sched_ramp_grow(64), 128);
	CHECK_INT(sched_ramp_grow(128), 0);
	CHECK_INT(sched_ramp_grow(0), 0);
	/* jobs in flight: the window while ramping, else what deliver could connect */
	CHECK_INT(sched_dest_cap(1000, 0), 1000);
	CHECK_INT(sched_dest_cap(1000, 8), 8);
	CHECK_INT(sched_dest_cap(10, 0), SCHED_RAMP_MAX);
	CHECK_INT(sched_dest_cap(10, 64), 64);
	CHECK_INT(sched_dest_cap(300, 400), 300);
	while (w != 0 && steps < 100) {
		w = sched_ramp_grow(w);
		steps++;
	}
	CHECK_INT(steps, 7);                    /* 2 -> 4 ... -> 128 -> unlimited */
}

static void
test_outcome(void)
{
	static const struct {
		int code;
		enum sched_outcome want;
	} rows[] = {
		{ 250, SCHED_DELIVERED }, { 251, SCHED_DELIVERED },
		{ 450, SCHED_DEFERRED }, { 451, SCHED_DEFERRED }, { 421, SCHED_DEFERRED },
		{ 550, SCHED_FAILED }, { 554, SCHED_FAILED }, { 552, SCHED_FAILED },
		{ 0, SCHED_DEFERRED }, { 354, SCHED_DEFERRED }, { 999, SCHED_DEFERRED },
	};
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++)
		CHECK_MSG(sched_code_outcome(rows[i].code) == rows[i].want, "code %d", rows[i].code);
}

static void
test_lifetime(void)
{
	struct conf *c = conf_new_defaults();

	CHECK(sched_expire_at(1000, c) == 1000 + 5 * D);
	CHECK(sched_warn_at(1000, c) == 1000 + 4 * H);
	c->router.delay_warning = 0;
	CHECK(sched_warn_at(1000, c) == UINT64_MAX);
	c->router.delay_warning = 6 * D;            /* after expiry: never */
	CHECK(sched_warn_at(1000, c) == UINT64_MAX);
	c->router.max_queue_age = 3 * S;
	CHECK(sched_expire_at(1000, c) == 4000);
	conf_unref(c);
}

static void
test_parse_hosts(void)
{
	static const struct {
		const char *text;
		int rc;
		size_t n;
		const char *h0;
		unsigned p0;
		const char *h1;
		unsigned p1;
	} rows[] = {
		{ "127.0.0.5:2525", 0, 1, "127.0.0.5", 2525, NULL, 0 },
		{ "mx1.Example.NET,mx2.example.net:26", 0, 2, "mx1.example.net", 25, "mx2.example.net", 26 },
		{ "a.test b.test:1", 0, 2, "a.test", 25, "b.test", 1 },
		{ "[::1]:2525,127.0.0.1", 0, 2, "::1", 2525, "127.0.0.1", 25 },
		{ "[::1]", 0, 1, "::1", 25, NULL, 0 },
		{ ",,x.test,,", 0, 1, "x.test", 25, NULL, 0 },
		{ "", RELAY_EINVAL, 0, NULL, 0, NULL, 0 },
		{ "x.test:0", RELAY_EINVAL, 0, NULL, 0, NULL, 0 },
		{ "x.test:65536", RELAY_EINVAL, 0, NULL, 0, NULL, 0 },
		{ "x.test:2a", RELAY_EINVAL, 0, NULL, 0, NULL, 0 },
		{ "x.test:", RELAY_EINVAL, 0, NULL, 0, NULL, 0 },
		{ "::1:25", RELAY_EINVAL, 0, NULL, 0, NULL, 0 },
		{ "[::1:25", RELAY_EINVAL, 0, NULL, 0, NULL, 0 },
		{ "bad/host:25", RELAY_EINVAL, 0, NULL, 0, NULL, 0 },
	};
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		struct conf_hostport *h = NULL;
		struct buf err = BUF_INIT;
		size_t n = 0;
		int rc = route_parse_hosts(rows[i].text, 25, &h, &n, &err);

		CHECK_MSG(rc == rows[i].rc, "row %zu (%s): rc %d %s", i, rows[i].text, rc, buf_cstr(&err));
		CHECK_MSG(n == rows[i].n, "row %zu: n %zu", i, n);
		if (rc == 0 && n >= 1) {
			CHECK_STR(h[0].host, rows[i].h0);
			CHECK_INT(h[0].port, rows[i].p0);
		}
		if (rc == 0 && n >= 2) {
			CHECK_STR(h[1].host, rows[i].h1);
			CHECK_INT(h[1].port, rows[i].p1);
		}
		if (rc != 0)
			CHECK(err.len > 0);
		route_hosts_free(h, n);
		buf_free(&err);
	}
}

static void
conf_add_route(struct conf *c, const char *domain, const char *hosts, enum conf_mx_policy pol,
    const char *user)
{
	struct conf_route *r;
	struct buf err = BUF_INIT;

	c->router.routes = xrealloc(c->router.routes, (c->router.nroutes + 1) * sizeof(*r));
	r = &c->router.routes[c->router.nroutes++];
	memset(r, 0, sizeof(*r));
	r->domain = xstrdup(domain);
	if (hosts != NULL && route_parse_hosts(hosts, 25, &r->hosts, &r->nhosts, &err) != 0)
		fatalx("bad test hosts");
	r->mx_policy = pol;
	if (user != NULL) {
		r->auth_user = xstrdup(user);
		r->auth_password = xstrdup("secret");
	}
	buf_free(&err);
}

static void
test_resolve(void)
{
	char dir[] = "/tmp/test_sched.XXXXXX";
	struct conf *c = conf_new_defaults();
	struct route_table *t;
	struct buf err = BUF_INIT, path = BUF_INIT, out = BUF_INIT;
	uv_loop_t loop;
	struct route r;
	size_t i;

	CHECK(mkdtemp(dir) != NULL);
	uv_loop_init(&loop);
	conf_add_route(c, "x.test", "127.0.0.5:2525", CONF_MX_ANY, NULL);
	conf_add_route(c, "p.test", NULL, CONF_MX_PRIMARY_ONLY, NULL);
	conf_add_route(c, "*", "smart.test:587", CONF_MX_ANY, "relayuser");

	t = route_table_new(&loop, dir, &err);
	CHECK(t != NULL);

	static const struct {
		const char *set_domain, *set_hosts;  /* a run-time route set before the row */
		const char *clear;                   /* or cleared */
		const char *domain;
		const char *dest;
		const char *host0;
		unsigned port0;
		bool runtime;
		enum conf_mx_policy pol;
		const char *auth;
	} rows[] = {
		/* configured routes: exact beats "*"; policy-only routes keep DNS */
		{ NULL, NULL, NULL, "x.test", "route:x.test", "127.0.0.5", 2525, false, CONF_MX_ANY, NULL },
		{ NULL, NULL, NULL, "X.Test.", "route:x.test", "127.0.0.5", 2525, false, CONF_MX_ANY, NULL },
		{ NULL, NULL, NULL, "p.test", "p.test", NULL, 0, false, CONF_MX_PRIMARY_ONLY, NULL },
		{ NULL, NULL, NULL, "other.example", "route:*", "smart.test", 587, false, CONF_MX_ANY, "relayuser" },
		/* a run-time route for the exact domain beats the configured one */
		{ "x.test", "127.0.0.7:26", NULL, "x.test", "route:x.test", "127.0.0.7", 26, true, CONF_MX_ANY, NULL },
		/* a run-time "*" beats the configured "*", not an exact configured route */
		{ "*", "127.0.0.8", NULL, "other.example", "route:*", "127.0.0.8", 25, true, CONF_MX_ANY, NULL },
		{ NULL, NULL, NULL, "p.test", "p.test", NULL, 0, false, CONF_MX_PRIMARY_ONLY, NULL },
		/* cleared: back to the configuration */
		{ NULL, NULL, "x.test", "x.test", "route:x.test", "127.0.0.5", 2525, false, CONF_MX_ANY, NULL },
		{ NULL, NULL, "*", "other.example", "route:*", "smart.test", 587, false, CONF_MX_ANY, "relayuser" },
	};
	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		if (rows[i].set_domain != NULL)
			CHECK(route_set(t, rows[i].set_domain, rows[i].set_hosts, 25, &err) == 0);
		if (rows[i].clear != NULL)
			CHECK(route_clear(t, rows[i].clear) == 0);
		route_resolve(t, c, rows[i].domain, &r);
		CHECK_STR(r.dest, rows[i].dest);
		if (rows[i].host0 != NULL) {
			CHECK_MSG(r.nhosts > 0, "row %zu", i);
			if (r.nhosts > 0) {
				CHECK_STR(r.hosts[0].host, rows[i].host0);
				CHECK_INT(r.hosts[0].port, rows[i].port0);
			}
		} else
			CHECK_INT(r.nhosts, 0);
		CHECK_MSG(r.runtime == rows[i].runtime, "row %zu", i);
		CHECK_MSG(r.mx_policy == rows[i].pol, "row %zu", i);
		if (rows[i].auth != NULL)
			CHECK(r.auth_user != NULL && strcmp(r.auth_user, rows[i].auth) == 0 &&
			    strcmp(r.auth_password, "secret") == 0);
		else
			CHECK(r.auth_user == NULL);
		route_release(&r);
		uv_run(&loop, UV_RUN_DEFAULT);      /* let the file writes finish */
	}
	/* route_equal: what decides whether a queued job must be re-routed */
	{
		struct route a1, a2, b1;

		route_resolve(t, c, "x.test", &a1);
		route_resolve(t, c, "X.TEST", &a2);
		route_resolve(t, c, "other.example", &b1);
		CHECK(route_equal(&a1, &a2));
		CHECK(!route_equal(&a1, &b1));
		/* one destination key for both (a waiting job keeps its route: one
		 * per queued message in an outage); each route still releases its own */
		CHECK(a1.dest == a2.dest);
		CHECK_STR(b1.dest, "route:*");
		CHECK(a1.dest != b1.dest);
		CHECK(route_set(t, "x.test", "127.0.0.5:2525", 25, &err) == 0);
		route_release(&a2);
		route_resolve(t, c, "x.test", &a2);     /* same host, but now a run-time route */
		CHECK(!route_equal(&a1, &a2));
		CHECK(route_clear(t, "x.test") == 0);
		route_release(&a1);
		route_release(&a2);
		route_release(&b1);
		uv_run(&loop, UV_RUN_DEFAULT);
	}
	/* destinations whose hashes fall on one slot of the table's 256 still
	 * share their keys, resolved in turn (as a round-robin queue does) */
	{
		char n1[32], n2[32];
		struct route r1, r2, r3, r4;
		unsigned a, b;
		bool found = false;

		for (a = 0; a < 1000 && !found; a++)
			for (b = a + 1; b < 1000 && !found; b++) {
				snprintf(n1, sizeof(n1), "c%u.test", a);
				snprintf(n2, sizeof(n2), "c%u.test", b);
				found = (util_hash_str(n1) & 255) == (util_hash_str(n2) & 255);
			}
		CHECK(found);
		conf_add_route(c, n1, NULL, CONF_MX_PRIMARY_ONLY, NULL);   /* keys are the domains */
		conf_add_route(c, n2, NULL, CONF_MX_PRIMARY_ONLY, NULL);
		route_resolve(t, c, n1, &r1);
		route_resolve(t, c, n2, &r2);
		route_resolve(t, c, n1, &r3);
		route_resolve(t, c, n2, &r4);
		CHECK_STR(r1.dest, n1);
		CHECK_STR(r2.dest, n2);
		CHECK(r1.dest == r3.dest);
		CHECK(r2.dest == r4.dest);
		route_release(&r1);
		route_release(&r2);
		route_release(&r3);
		route_release(&r4);
	}
	CHECK(route_clear(t, "nothing.test") == RELAY_ENOENT);
	CHECK(route_set(t, "bad domain", "h", 25, &err) == RELAY_EINVAL);
	CHECK(route_set(t, "ok.test", "", 25, &err) == RELAY_EINVAL);

	/* persisted: a new table on the same directory sees the run-time routes */
	CHECK(route_set(t, "keep.test", "127.0.0.9:2600,[::1]:2601", 25, &err) == 0);
	CHECK(route_set(t, "keep2.test", "a.test", 25, &err) == 0);    /* written after the first */
	uv_run(&loop, UV_RUN_DEFAULT);
	route_list(t, c, false, &out);
	CHECK(strstr(buf_cstr(&out), "keep.test") != NULL);
	CHECK(strstr(buf_cstr(&out), "127.0.0.9:2600,[::1]:2601") != NULL);
	CHECK(strstr(buf_cstr(&out), "smart.test:587") != NULL);
	buf_reset(&out);
	route_list(t, c, true, &out);
	CHECK(strstr(buf_cstr(&out), "{\"domain\":\"keep.test\",\"hosts\":[\"127.0.0.9:2600\",\"[::1]:2601\"],\"source\":\"runtime\"") != NULL);
	route_table_free(t);

	t = route_table_new(&loop, dir, &err);
	CHECK(t != NULL);
	route_resolve(t, c, "keep.test", &r);
	CHECK(r.runtime && r.nhosts == 2);
	if (r.nhosts == 2) {
		CHECK_STR(r.hosts[1].host, "::1");
		CHECK_INT(r.hosts[1].port, 2601);
	}
	route_release(&r);
	route_resolve(t, c, "keep2.test", &r);
	CHECK(r.runtime && r.nhosts == 1);
	route_table_free(t);
	/* a route outlives the table whose key it shares */
	CHECK_STR(r.dest, "route:keep2.test");
	route_release(&r);

	/* a malformed file is refused with its line */
	buf_printf(&path, "%s/routes", dir);
	{
		FILE *f = fopen(buf_cstr(&path), "w");

		fputs("# comment\nok.test 127.0.0.1\nbroken.test\n", f);
		fclose(f);
	}
	buf_reset(&err);
	CHECK(route_table_new(&loop, dir, &err) == NULL);
	CHECK(strstr(buf_cstr(&err), ":3:") != NULL);
	unlink(buf_cstr(&path));
	buf_reset(&path);
	buf_printf(&path, "%s/routes.tmp", dir);
	unlink(buf_cstr(&path));
	rmdir(dir);

	CHECK(uv_loop_close(&loop) == 0);
	conf_unref(c);
	buf_free(&err);
	buf_free(&path);
	buf_free(&out);
}

/* route_fold_domain: the one folding of a domain (a trailing dot dropped, ASCII
 * lower case), written only when it fits; and the destination key route_resolve
 * makes of it for a domain without hosts (as before the folding had a name). */
static void
test_fold_domain(void)
{
	static const struct {
		const char *in, *out;
	} rows[] = {
		{ "", "" },
		{ ".", "." },                   /* the root: its one dot stays */
		{ "..", "." },
		{ "a.", "a" },
		{ "a..", "a." },                /* one dot only */
		{ "Example.COM.", "example.com" },
		{ "[127.0.0.1]", "[127.0.0.1]" },
		{ "\xc3\x89t\xc3\xa9.Test", "\xc3\x89t\xc3\xa9.test" },  /* bytes over 127 kept */
	};
	struct conf *c = conf_new_defaults();       /* no routes: every domain by DNS */
	char out[16];
	struct route r;
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		memset(out, 'x', sizeof(out));
		CHECK_INT(route_fold_domain(rows[i].in, out, sizeof(out)), strlen(rows[i].out));
		CHECK_STR(out, rows[i].out);
		CHECK_INT(route_fold_domain(rows[i].in, NULL, 0), strlen(rows[i].out));
		route_resolve(NULL, c, rows[i].in, &r);
		CHECK_STR(r.dest, rows[i].out);
		route_release(&r);
	}
	/* cap: the length with its NUL must fit, or nothing is written */
	memset(out, 'x', sizeof(out));
	CHECK_INT(route_fold_domain("ABC.", out, 4), 3);
	CHECK(memcmp(out, "abc", 4) == 0);
	memset(out, 'x', sizeof(out));
	CHECK_INT(route_fold_domain("ABCD.", out, 4), 4);
	CHECK(out[0] == 'x' && out[4] == 'x');
	conf_unref(c);
}

int
main(void)
{
	test_retry_delay();
	test_rcpt_due();
	test_ramp();
	test_outcome();
	test_lifetime();
	test_parse_hosts();
	test_resolve();
	test_fold_domain();
	return check_done();
}
