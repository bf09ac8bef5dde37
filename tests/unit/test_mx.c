/*
 * test_mx.c - the router's MX resolver (router/router_mx.c) against a real
 * DNS server: tests/harness/dns_cli.py runs the harness's DNSServer on
 * 127.0.0.1 and takes zone changes on its stdin.  Each case runs its own
 * libuv loop and resolver and ends with uv_loop_close() == 0.
 *
 * Table rows: a zone, a domain, the randomness, and the expected result
 * written as "PREF HOST ADDR, ADDR; PREF HOST ADDR" (or the status and a
 * piece of the reason on failure), plus query-log entries that must not
 * appear (no address lookups after a null MX, none for dropped exchangers).
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include "check.h"
#include "common/util.h"
#include "conf/conf.h"
#include "router/router_mx.h"

#define LISTEN_SELF  "127.0.0.9:587"    /* our listen address: an MX on it is us */
#define HOSTNAME     "Relay.Test."       /* our name (case and dot do not matter) */
#define DNS_TIMEOUT  400                 /* ms per try; 2 tries: a drop fails in ~1.2 s */

/* ---- the DNS server process ---- */

static pid_t dns_pid;
static int dns_in = -1;
static FILE *dns_out;
static unsigned dns_port;
static char dns_reply[65536];

static void
dns_start(void)
{
	char path[4096], line[256], *slash;
	int in[2], out[2];

	snprintf(path, sizeof(path), "%s", __FILE__);
	/* tests/unit/test_mx.c -> tests/harness/dns_cli.py */
	if ((slash = strrchr(path, '/')) != NULL)
		*slash = '\0';
	else
		snprintf(path, sizeof(path), ".");
	snprintf(path + strlen(path), sizeof(path) - strlen(path), "/../harness/dns_cli.py");
	if (pipe(in) == -1 || pipe(out) == -1)
		fatalx("pipe: %s", strerror(errno));
	if ((dns_pid = fork()) == -1)
		fatalx("fork: %s", strerror(errno));
	if (dns_pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[0]);
		close(in[1]);
		close(out[0]);
		close(out[1]);
		setenv("PYTHONDONTWRITEBYTECODE", "1", 1);
		execlp("python3", "python3", path, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	dns_in = in[1];
	dns_out = fdopen(out[0], "r");
	if (fgets(line, sizeof(line), dns_out) == NULL || sscanf(line, "READY %u", &dns_port) != 1)
		fatalx("dns_cli.py did not start (%s)", path);
}

/* Send one JSON command; returns the reply line ("OK ..."), fatal on ERR. */
static const char *
dns_cmd(const char *json)
{
	size_t n = strlen(json);

	if (write(dns_in, json, n) != (ssize_t)n || write(dns_in, "\n", 1) != 1)
		fatalx("dns_cli.py: write: %s", strerror(errno));
	if (fgets(dns_reply, sizeof(dns_reply), dns_out) == NULL)
		fatalx("dns_cli.py: no reply to %s", json);
	dns_reply[strcspn(dns_reply, "\n")] = '\0';
	if (strncmp(dns_reply, "OK", 2) != 0)
		fatalx("dns_cli.py: %s -> %s", json, dns_reply);
	return dns_reply;
}

static void
dns_stop(void)
{
	int st;

	dns_cmd("[\"quit\"]");
	close(dns_in);
	fclose(dns_out);
	waitpid(dns_pid, &st, 0);
}

/* ---- resolver fixture ---- */

static struct conf *
test_conf(const char *hostname)
{
	struct conf *c = conf_new_defaults();

	free(c->hostname);
	c->hostname = xstrdup(hostname);
	c->router.dns_servers = xcalloc(1, sizeof(*c->router.dns_servers));
	c->router.dns_servers[0].host = xstrdup("127.0.0.1");
	c->router.dns_servers[0].port = (uint16_t)dns_port;
	c->router.ndns_servers = 1;
	c->submit.listen = xcalloc(1, sizeof(*c->submit.listen));
	c->submit.listen[0].text = xstrdup(LISTEN_SELF);
	if (conf_parse_listen(LISTEN_SELF, &c->submit.listen[0].addr,
	    &c->submit.listen[0].addrlen) != 0)
		fatalx("conf_parse_listen failed");
	c->submit.nlisten = 1;
	return c;
}

struct fixture {
	uv_loop_t loop;
	struct conf *conf;
	struct mx_resolver *r;
	int calls;
	struct mx_result *res;
	bool closed;
};

static void
fx_cb(void *arg, struct mx_result *res)
{
	struct fixture *fx = arg;

	fx->calls++;
	mx_result_free(fx->res);
	fx->res = res;
}

static void
fx_closed(void *arg)
{
	((struct fixture *)arg)->closed = true;
}

static void
fx_open(struct fixture *fx)
{
	struct buf err = BUF_INIT;

	memset(fx, 0, sizeof(*fx));
	uv_loop_init(&fx->loop);
	fx->conf = test_conf(HOSTNAME);
	fx->r = mx_new(&fx->loop, fx->conf, &err);
	if (fx->r == NULL)
		fatalx("mx_new: %s", buf_cstr(&err));
	CHECK_INT(mx_set_timeout(fx->r, DNS_TIMEOUT, 2), 0);
	buf_free(&err);
}

/* Run the loop until n callbacks have fired. */
static void
fx_wait(struct fixture *fx, int n)
{
	while (fx->calls < n)
		uv_run(&fx->loop, UV_RUN_ONCE);
}

/* Close the resolver, drain the loop, and check that it closes cleanly. */
static void
fx_close(struct fixture *fx)
{
	mx_close(fx->r, fx_closed, fx);
	while (!fx->closed)
		uv_run(&fx->loop, UV_RUN_ONCE);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	CHECK_INT(uv_loop_close(&fx->loop), 0);
	mx_result_free(fx->res);
	fx->res = NULL;
	conf_unref(fx->conf);
}

/* "10 mx1.a.test 127.0.0.2:25, [::1]:25; 20 ..." */
static void
fmt_result(const struct mx_result *res, struct buf *b)
{
	char ip[INET6_ADDRSTRLEN];
	size_t i, j;

	buf_reset(b);
	for (i = 0; i < res->ntargets; i++) {
		const struct mx_target *t = &res->targets[i];

		buf_printf(b, "%s%u %s ", i ? "; " : "", t->pref, t->host);
		for (j = 0; j < t->naddrs; j++) {
			const struct sockaddr_storage *ss = &t->addrs[j].ss;

			if (ss->ss_family == AF_INET6) {
				const struct sockaddr_in6 *s6 = (const void *)ss;

				inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
				buf_printf(b, "%s[%s]:%u", j ? ", " : "", ip, ntohs(s6->sin6_port));
				CHECK_INT(t->addrs[j].len, sizeof(struct sockaddr_in6));
			} else {
				const struct sockaddr_in *s4 = (const void *)ss;

				inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
				buf_printf(b, "%s%s:%u", j ? ", " : "", ip, ntohs(s4->sin_port));
				CHECK_INT(t->addrs[j].len, sizeof(struct sockaddr_in));
			}
		}
	}
}

/* Injected randomness: always the first or always the last choice. */
static uint32_t
rnd_first(void *arg, uint32_t n)
{
	(void)arg;
	(void)n;
	return 0;
}

static uint32_t
rnd_last(void *arg, uint32_t n)
{
	(void)arg;
	return n - 1;
}

/* ---- the table ---- */

enum rnd { RND_DEFAULT, RND_FIRST, RND_LAST };

struct mx_case {
	const char *name;
	const char *zone[8];        /* dns_cli.py commands */
	const char *domain;
	enum rnd rnd;
	int err;                    /* 0, RELAY_ETEMP, RELAY_EINVAL */
	const char *status;         /* on failure */
	const char *want;           /* targets on success; a piece of the reason on failure */
	bool implicit;
	const char *absent[3];      /* must not appear in the query log */
};

static const struct mx_case cases[] = {
	{ "preference order, whatever the answer order", {
	    "[\"set_mx\", \"pref.test\", [[20, \"mx2.pref.test\"], [10, \"mx1.pref.test\"],"
	    " [30, \"mx3.pref.test\"]]]",
	    "[\"set_a\", \"mx1.pref.test\", [\"127.0.0.11\"]]",
	    "[\"set_a\", \"mx2.pref.test\", [\"127.0.0.12\", \"127.0.0.13\"]]",
	    "[\"set_a\", \"mx3.pref.test\", [\"127.0.0.14\"]]" },
	  "pref.test", RND_FIRST, 0, NULL,
	  "10 mx1.pref.test 127.0.0.11:25; 20 mx2.pref.test 127.0.0.12:25, 127.0.0.13:25; "
	  "30 mx3.pref.test 127.0.0.14:25", false, { NULL } },
	{ "equal preferences shuffled: randomness picks the first", {
	    "[\"set_mx\", \"eq.test\", [[10, \"a.eq.test\"], [10, \"b.eq.test\"], [5, \"z.eq.test\"]]]",
	    "[\"set_a\", \"a.eq.test\", [\"127.0.0.21\"]]",
	    "[\"set_a\", \"b.eq.test\", [\"127.0.0.22\"]]",
	    "[\"set_a\", \"z.eq.test\", [\"127.0.0.20\"]]" },
	  "eq.test", RND_FIRST, 0, NULL,
	  "5 z.eq.test 127.0.0.20:25; 10 b.eq.test 127.0.0.22:25; 10 a.eq.test 127.0.0.21:25",
	  false, { NULL } },
	{ "equal preferences shuffled: randomness picks the last", {
	    "[\"set_mx\", \"eq.test\", [[10, \"a.eq.test\"], [10, \"b.eq.test\"], [5, \"z.eq.test\"]]]",
	    "[\"set_a\", \"a.eq.test\", [\"127.0.0.21\"]]",
	    "[\"set_a\", \"b.eq.test\", [\"127.0.0.22\"]]",
	    "[\"set_a\", \"z.eq.test\", [\"127.0.0.20\"]]" },
	  "eq.test", RND_LAST, 0, NULL,
	  "5 z.eq.test 127.0.0.20:25; 10 a.eq.test 127.0.0.21:25; 10 b.eq.test 127.0.0.22:25",
	  false, { NULL } },
	{ "per exchanger: IPv6 addresses first, then IPv4", {
	    "[\"set_mx\", \"v6.test\", [[10, \"mx.v6.test\"]]]",
	    "[\"set_a\", \"mx.v6.test\", [\"127.0.0.30\"]]",
	    "[\"set_aaaa\", \"mx.v6.test\", [\"::1\"]]" },
	  "V6.Test.", RND_FIRST, 0, NULL, "10 mx.v6.test [::1]:25, 127.0.0.30:25", false, { NULL } },
	{ "no MX records: the domain's own address is the implicit MX", {
	    "[\"set_a\", \"implicit.test\", [\"127.0.0.31\"]]" },
	  "implicit.test", RND_FIRST, 0, NULL, "0 implicit.test 127.0.0.31:25", true, { NULL } },
	{ "NXDOMAIN is permanent", { "[\"set_nxdomain\", \"gone.test\"]" },
	  "gone.test", RND_FIRST, RELAY_EINVAL, "5.1.2",
	  "domain gone.test does not exist (NXDOMAIN)", false, { "\"A\"]", "\"AAAA\"]" } },
	{ "SERVFAIL is temporary", { "[\"set_servfail\", \"broken.test\"]" },
	  "broken.test", RND_FIRST, RELAY_ETEMP, "4.4.3", "SERVFAIL", false, { NULL } },
	{ "a server that never answers is a temporary failure", { "[\"set_drop\", \"silent.test\"]" },
	  "silent.test", RND_FIRST, RELAY_ETEMP, "4.4.3", "timed out", false, { NULL } },
	{ "null MX fails at once, without address lookups", {
	    "[\"set_null_mx\", \"nullmx.test\"]",
	    "[\"set_a\", \"nullmx.test\", [\"127.0.0.32\"]]" },
	  "nullmx.test", RND_FIRST, RELAY_EINVAL, "5.1.10", "does not accept mail", false,
	  { "\"A\"]", "\"AAAA\"]" } },
	{ "an exchanger that is a CNAME chain is followed", {
	    "[\"set_mx\", \"cn.test\", [[10, \"alias.cn.test\"]]]",
	    "[\"set_cname\", \"alias.cn.test\", \"alias2.cn.test\"]",
	    "[\"set_cname\", \"alias2.cn.test\", \"real.cn.test\"]",
	    "[\"set_a\", \"real.cn.test\", [\"127.0.0.33\"]]" },
	  "cn.test", RND_FIRST, 0, NULL, "10 alias.cn.test 127.0.0.33:25", false, { NULL } },
	{ "an unresolvable exchanger is skipped", {
	    "[\"set_mx\", \"skip.test\", [[10, \"nohost.skip.test\"], [20, \"ok.skip.test\"]]]",
	    "[\"set_a\", \"ok.skip.test\", [\"127.0.0.34\"]]" },
	  "skip.test", RND_FIRST, 0, NULL, "20 ok.skip.test 127.0.0.34:25", false, { NULL } },
	{ "no exchanger resolves, one temporarily: 4.4.3", {
	    "[\"set_mx\", \"tmp.test\", [[10, \"nohost.tmp.test\"], [20, \"sf.tmp.test\"]]]",
	    "[\"set_servfail\", \"sf.tmp.test\"]" },
	  "tmp.test", RND_FIRST, RELAY_ETEMP, "4.4.3", "temporary", false, { NULL } },
	{ "no exchanger resolves at all: 5.1.2", {
	    "[\"set_mx\", \"none.test\", [[10, \"nohost.none.test\"], [20, \"nohost2.none.test\"]]]" },
	  "none.test", RND_FIRST, RELAY_EINVAL, "5.1.2", "no usable exchanger", false, { NULL } },
	{ "our hostname among the exchangers: it and worse ones dropped", {
	    "[\"set_mx\", \"self.test\", [[10, \"mx1.self.test\"], [20, \"relay.test\"],"
	    " [30, \"mx3.self.test\"], [20, \"mx2.self.test\"]]]",
	    "[\"set_a\", \"mx1.self.test\", [\"127.0.0.41\"]]",
	    "[\"set_a\", \"mx2.self.test\", [\"127.0.0.42\"]]",
	    "[\"set_a\", \"mx3.self.test\", [\"127.0.0.43\"]]" },
	  "self.test", RND_FIRST, 0, NULL, "10 mx1.self.test 127.0.0.41:25", false,
	  { "mx3.self.test", "mx2.self.test", "\"relay.test\"" } },
	{ "our hostname as the best MX: loops back", {
	    "[\"set_mx\", \"best.test\", [[5, \"RELAY.test\"], [10, \"mx1.best.test\"]]]",
	    "[\"set_a\", \"mx1.best.test\", [\"127.0.0.44\"]]" },
	  "best.test", RND_FIRST, RELAY_EINVAL, "5.4.6", "mail for best.test loops back to myself",
	  false, { "mx1.best.test" } },
	{ "our hostname as the only MX: loops back", {
	    "[\"set_mx\", \"only.test\", [[10, \"relay.test.\"]]]",
	    "[\"set_a\", \"relay.test\", [\"127.0.0.45\"]]" },
	  "only.test", RND_FIRST, RELAY_EINVAL, "5.4.6", "loops back to myself", false,
	  { "\"A\"]" } },
	{ "an exchanger on our listen address is us", {
	    "[\"set_mx\", \"addr.test\", [[10, \"mx1.addr.test\"], [20, \"mx2.addr.test\"],"
	    " [30, \"mx3.addr.test\"]]]",
	    "[\"set_a\", \"mx1.addr.test\", [\"127.0.0.46\"]]",
	    "[\"set_a\", \"mx2.addr.test\", [\"127.0.0.47\", \"127.0.0.9\"]]",
	    "[\"set_a\", \"mx3.addr.test\", [\"127.0.0.48\"]]" },
	  "addr.test", RND_FIRST, 0, NULL, "10 mx1.addr.test 127.0.0.46:25", false, { NULL } },
	{ "the implicit MX on our listen address: loops back", {
	    "[\"set_a\", \"me.test\", [\"127.0.0.9\"]]" },
	  "me.test", RND_FIRST, RELAY_EINVAL, "5.4.6", "loops back", true, { NULL } },
	{ "mail for our own hostname without MX: loops back", {
	    "[\"set_a\", \"relay.test\", [\"127.0.0.49\"]]" },
	  "relay.test", RND_FIRST, RELAY_EINVAL, "5.4.6", "loops back", true, { "\"A\"]" } },
	{ "an address literal is the address itself", { NULL },
	  "[127.0.0.50]", RND_FIRST, 0, NULL, "0 127.0.0.50 127.0.0.50:25", true,
	  { "\"MX\"]", "\"A\"]" } },
	{ "an IPv6 address literal", { NULL },
	  "[IPv6:::1]", RND_FIRST, 0, NULL, "0 ::1 [::1]:25", true, { "\"MX\"]" } },
	{ "a bad address literal", { NULL },
	  "[300.1.2.3]", RND_FIRST, RELAY_EINVAL, "5.1.2", "bad address literal", false,
	  { "\"MX\"]" } },
};

static void
run_case(const struct mx_case *tc)
{
	struct fixture fx;
	struct buf got = BUF_INIT;
	size_t i;

	dns_cmd("[\"reset\"]");
	for (i = 0; i < RELAY_ARRAY_LEN(tc->zone) && tc->zone[i] != NULL; i++)
		dns_cmd(tc->zone[i]);
	fx_open(&fx);
	if (tc->rnd == RND_FIRST)
		mx_set_random(fx.r, rnd_first, NULL);
	else if (tc->rnd == RND_LAST)
		mx_set_random(fx.r, rnd_last, NULL);

	mx_lookup(fx.r, tc->domain, 25, fx_cb, &fx);
	CHECK_MSG(fx.calls == 0, "%s: callback fired inside mx_lookup", tc->name);
	fx_wait(&fx, 1);
	CHECK_INT(fx.calls, 1);
	CHECK_INT(mx_pending(fx.r), 0);

	CHECK_MSG(fx.res->err == tc->err, "%s: err %d, want %d (%s %s)", tc->name, fx.res->err,
	    tc->err, fx.res->status, fx.res->reason);
	if (tc->err == 0) {
		fmt_result(fx.res, &got);
		CHECK_MSG(strcmp(buf_cstr(&got), tc->want) == 0, "%s:\n  got  \"%s\"\n  want \"%s\"",
		    tc->name, buf_cstr(&got), tc->want);
		CHECK_MSG(fx.res->implicit == tc->implicit, "%s: implicit %d", tc->name,
		    fx.res->implicit);
	} else {
		CHECK_MSG(strcmp(fx.res->status, tc->status) == 0, "%s: status %s, want %s", tc->name,
		    fx.res->status, tc->status);
		CHECK_MSG(strstr(fx.res->reason, tc->want) != NULL, "%s: reason \"%s\" lacks \"%s\"",
		    tc->name, fx.res->reason, tc->want);
		CHECK_MSG(fx.res->ntargets == 0 && fx.res->targets == NULL, "%s: targets on failure",
		    tc->name);
	}
	dns_cmd("[\"queries\"]");
	for (i = 0; i < RELAY_ARRAY_LEN(tc->absent) && tc->absent[i] != NULL; i++)
		CHECK_MSG(strstr(dns_reply, tc->absent[i]) == NULL, "%s: %s in the query log: %s",
		    tc->name, tc->absent[i], dns_reply);
	fx_close(&fx);
	buf_free(&got);
}

/* ---- routes: hosts resolved in the given order ---- */

static void
test_lookup_hosts(void)
{
	struct conf_hostport hosts[] = {
		{ "smart.route.test", 2525 },
		{ "missing.route.test", 25 },
		{ "127.0.0.61", 26 },
		{ "127.0.0.9", 27 },            /* our own address is fine for a route */
		{ "::1", 28 },
	};
	struct conf_hostport bad[] = {
		{ "missing.route.test", 25 },
		{ "sf.route.test", 25 },
	};
	struct fixture fx;
	struct buf got = BUF_INIT;

	dns_cmd("[\"reset\"]");
	dns_cmd("[\"set_a\", \"smart.route.test\", [\"127.0.0.60\"]]");
	dns_cmd("[\"set_servfail\", \"sf.route.test\"]");
	fx_open(&fx);

	mx_lookup_hosts(fx.r, hosts, RELAY_ARRAY_LEN(hosts), fx_cb, &fx);
	fx_wait(&fx, 1);
	CHECK_INT(fx.res->err, 0);
	fmt_result(fx.res, &got);
	CHECK_STR(buf_cstr(&got), "0 smart.route.test 127.0.0.60:2525; 2 127.0.0.61 127.0.0.61:26; "
	    "3 127.0.0.9 127.0.0.9:27; 4 ::1 [::1]:28");
	CHECK(!fx.res->implicit);
	dns_cmd("[\"count\", \"127.0.0.61\"]");
	CHECK_STR(dns_reply, "OK 0");       /* literals are not looked up */

	/* nothing resolves: temporary, even when the names do not exist */
	mx_lookup_hosts(fx.r, bad, 1, fx_cb, &fx);
	fx_wait(&fx, 2);
	CHECK_INT(fx.res->err, RELAY_ETEMP);
	CHECK_STR(fx.res->status, "4.4.3");
	mx_lookup_hosts(fx.r, bad, 2, fx_cb, &fx);
	fx_wait(&fx, 3);
	CHECK_INT(fx.res->err, RELAY_ETEMP);
	CHECK(strstr(fx.res->reason, "temporary DNS failure") != NULL);
	fx_close(&fx);
	buf_free(&got);
}

/* ---- cancel, close, reload ---- */

static void
test_cancel(void)
{
	struct fixture fx;
	struct mx_query *q1, *q2;

	dns_cmd("[\"reset\"]");
	dns_cmd("[\"set_drop\", \"slow.test\"]");
	dns_cmd("[\"set_a\", \"fast.test\", [\"127.0.0.70\"]]");
	fx_open(&fx);

	/* cancelled while its DNS query is in flight */
	q1 = mx_lookup(fx.r, "slow.test", 25, fx_cb, &fx);
	/* cancelled when its result is ready but not handed out yet */
	q2 = mx_lookup(fx.r, "[127.0.0.71]", 25, fx_cb, &fx);
	CHECK_INT(mx_pending(fx.r), 2);
	mx_cancel(q2);
	mx_cancel(q1);
	CHECK_INT(mx_pending(fx.r), 0);

	/* a later lookup still works; the cancelled ones never call back */
	mx_lookup(fx.r, "fast.test", 25, fx_cb, &fx);
	fx_wait(&fx, 1);
	CHECK_INT(fx.res->err, 0);
	CHECK_STR(fx.res->targets[0].host, "fast.test");
	/* let the dropped query time out inside c-ares: still no callback */
	dns_cmd("[\"count\", \"slow.test\", \"MX\"]");
	CHECK(strcmp(dns_reply, "OK 0") != 0);
	{
		uint64_t until = util_mono_ms() + 3 * DNS_TIMEOUT + 500;

		while (util_mono_ms() < until)
			uv_run(&fx.loop, UV_RUN_NOWAIT), usleep(20000);
	}
	CHECK_INT(fx.calls, 1);
	fx_close(&fx);
}

static void
test_close_pending(void)
{
	struct fixture fx;

	dns_cmd("[\"reset\"]");
	dns_cmd("[\"set_drop\", \"slow.test\"]");
	fx_open(&fx);
	mx_lookup(fx.r, "slow.test", 25, fx_cb, &fx);
	/* get the query onto the wire */
	while (strcmp(dns_cmd("[\"count\", \"slow.test\", \"MX\"]"), "OK 0") == 0)
		uv_run(&fx.loop, UV_RUN_NOWAIT);
	/* and one whose result is ready but not handed out yet */
	mx_lookup(fx.r, "[127.0.0.72]", 25, fx_cb, &fx);
	CHECK_INT(mx_pending(fx.r), 2);
	fx_close(&fx);          /* checks uv_loop_close() == 0 */
	CHECK_INT(fx.calls, 0);
	CHECK(fx.closed);
}

static void
test_reload(void)
{
	struct fixture fx;
	struct conf *c2;
	struct buf err = BUF_INIT;

	dns_cmd("[\"reset\"]");
	dns_cmd("[\"set_mx\", \"rl.test\", [[10, \"mx1.rl.test\"], [20, \"mx2.rl.test\"]]]");
	dns_cmd("[\"set_a\", \"mx1.rl.test\", [\"127.0.0.81\"]]");
	dns_cmd("[\"set_a\", \"mx2.rl.test\", [\"127.0.0.82\"]]");
	dns_cmd("[\"set_drop\", \"slow.test\"]");
	fx_open(&fx);
	mx_set_random(fx.r, rnd_first, NULL);

	/* a query in flight on the old channel when the configuration changes */
	mx_lookup(fx.r, "slow.test", 25, fx_cb, &fx);
	c2 = test_conf("mx2.rl.test");
	CHECK_INT(mx_reload(fx.r, c2, &err), 0);
	mx_lookup(fx.r, "rl.test", 25, fx_cb, &fx);
	fx_wait(&fx, 1);
	CHECK_INT(fx.res->err, 0);      /* we are mx2 now: only mx1 is left */
	CHECK_INT(fx.res->ntargets, 1);
	CHECK_STR(fx.res->targets[0].host, "mx1.rl.test");
	fx_wait(&fx, 2);                /* the old channel's query still completes */
	CHECK_INT(fx.res->err, RELAY_ETEMP);
	CHECK_STR(fx.res->status, "4.4.3");

	/* a bad configuration leaves the resolver as it was */
	free(c2->router.dns_servers[0].host);
	c2->router.dns_servers[0].host = xstrdup("dns.example");
	CHECK_INT(mx_reload(fx.r, c2, &err), RELAY_EINVAL);
	CHECK(strstr(buf_cstr(&err), "dns.example") != NULL);
	mx_lookup(fx.r, "rl.test", 25, fx_cb, &fx);
	fx_wait(&fx, 3);
	CHECK_INT(fx.res->ntargets, 1);

	conf_unref(c2);
	buf_free(&err);
	fx_close(&fx);
}

/* A DNS server that is not there (nothing listens): temporary, not permanent. */
static void
test_no_server(void)
{
	struct fixture fx;
	struct buf err = BUF_INIT;
	struct conf *c;

	fx_open(&fx);
	c = test_conf(HOSTNAME);
	c->router.dns_servers[0].host = (free(c->router.dns_servers[0].host), xstrdup("127.0.0.1"));
	c->router.dns_servers[0].port = 1;      /* nothing listens on port 1 */
	CHECK_INT(mx_reload(fx.r, c, &err), 0);
	mx_lookup(fx.r, "any.test", 25, fx_cb, &fx);
	fx_wait(&fx, 1);
	CHECK_INT(fx.res->err, RELAY_ETEMP);
	CHECK_STR(fx.res->status, "4.4.3");
	conf_unref(c);
	buf_free(&err);
	fx_close(&fx);
}

int
main(void)
{
	size_t i;

	signal(SIGPIPE, SIG_IGN);
	dns_start();
	for (i = 0; i < RELAY_ARRAY_LEN(cases); i++)
		run_case(&cases[i]);
	test_lookup_hosts();
	test_cancel();
	test_close_pending();
	test_reload();
	test_no_server();
	dns_stop();
	return check_done();
}
