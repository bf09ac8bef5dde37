/*
 * test_mx.c - the router's MX resolver (dns/dns*.c) against a real
 * DNS server: tests/harness/dns_cli.py runs the harness's DNSServer on
 * 127.0.0.1 and takes zone changes on its stdin.  Each case runs its own
 * libuv loop and resolver and ends with uv_loop_close() == 0.
 *
 * Table rows: a zone, a domain, the randomness, and the expected result
 * written as "PREF HOST ADDR, ADDR; PREF HOST ADDR" (or the status and a
 * piece of the reason on failure), plus query-log entries that must not
 * appear (no address lookups after a null MX, none for dropped exchangers).
 *
 * Sharing and caching are proved from the server's query log: N lookups of
 * one domain in flight together cost one MX query; cancelling one of them
 * leaves the others be; a result is reused within its TTL (the clock is
 * injected) and not after; a temporary failure is reused for a few seconds
 * only; dns_cache_clear() and dns_reload() forget everything.
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
#include "dns/dns.h"

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

/* How many queries for name (and type) the server has seen. */
static int
dns_count(const char *name, const char *type)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "[\"count\", \"%s\", \"%s\"]", name, type);
	return atoi(dns_cmd(cmd) + 3);
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
	struct dns_resolver *r;
	int calls;
	struct dns_result *res;
	bool closed;
};

static void
fx_cb(void *arg, struct dns_result *res)
{
	struct fixture *fx = arg;

	fx->calls++;
	dns_result_free(fx->res);
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
	fx->r = dns_new(&fx->loop, fx->conf, &err);
	if (fx->r == NULL)
		fatalx("dns_new: %s", buf_cstr(&err));
	CHECK_INT(dns_set_timeout(fx->r, DNS_TIMEOUT, 2), 0);
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
	dns_close(fx->r, fx_closed, fx);
	while (!fx->closed)
		uv_run(&fx->loop, UV_RUN_ONCE);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	CHECK_INT(uv_loop_close(&fx->loop), 0);
	dns_result_free(fx->res);
	fx->res = NULL;
	conf_unref(fx->conf);
}

/* "10 mx1.a.test 127.0.0.2:25, [::1]:25; 20 ..." */
static void
fmt_result(const struct dns_result *res, struct buf *b)
{
	char ip[INET6_ADDRSTRLEN];
	size_t i, j;

	buf_reset(b);
	for (i = 0; i < res->ntargets; i++) {
		const struct dns_target *t = &res->targets[i];

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

struct dns_case {
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

static const struct dns_case cases[] = {
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
run_case(const struct dns_case *tc)
{
	struct fixture fx;
	struct buf got = BUF_INIT;
	size_t i;

	dns_cmd("[\"reset\"]");
	for (i = 0; i < RELAY_ARRAY_LEN(tc->zone) && tc->zone[i] != NULL; i++)
		dns_cmd(tc->zone[i]);
	fx_open(&fx);
	if (tc->rnd == RND_FIRST)
		dns_set_random(fx.r, rnd_first, NULL);
	else if (tc->rnd == RND_LAST)
		dns_set_random(fx.r, rnd_last, NULL);

	dns_lookup(fx.r, tc->domain, 25, fx_cb, &fx);
	CHECK_MSG(fx.calls == 0, "%s: callback fired inside dns_lookup", tc->name);
	fx_wait(&fx, 1);
	CHECK_INT(fx.calls, 1);
	CHECK_INT(dns_pending(fx.r), 0);

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

	dns_lookup_hosts(fx.r, hosts, RELAY_ARRAY_LEN(hosts), fx_cb, &fx);
	fx_wait(&fx, 1);
	CHECK_INT(fx.res->err, 0);
	fmt_result(fx.res, &got);
	CHECK_STR(buf_cstr(&got), "0 smart.route.test 127.0.0.60:2525; 2 127.0.0.61 127.0.0.61:26; "
	    "3 127.0.0.9 127.0.0.9:27; 4 ::1 [::1]:28");
	CHECK(!fx.res->implicit);
	dns_cmd("[\"count\", \"127.0.0.61\"]");
	CHECK_STR(dns_reply, "OK 0");       /* literals are not looked up */

	/* nothing resolves: temporary, even when the names do not exist */
	dns_lookup_hosts(fx.r, bad, 1, fx_cb, &fx);
	fx_wait(&fx, 2);
	CHECK_INT(fx.res->err, RELAY_ETEMP);
	CHECK_STR(fx.res->status, "4.4.3");
	dns_lookup_hosts(fx.r, bad, 2, fx_cb, &fx);
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
	struct dns_query *q1, *q2;

	dns_cmd("[\"reset\"]");
	dns_cmd("[\"set_drop\", \"slow.test\"]");
	dns_cmd("[\"set_a\", \"fast.test\", [\"127.0.0.70\"]]");
	fx_open(&fx);

	/* cancelled while its DNS query is in flight */
	q1 = dns_lookup(fx.r, "slow.test", 25, fx_cb, &fx);
	/* cancelled when its result is ready but not handed out yet */
	q2 = dns_lookup(fx.r, "[127.0.0.71]", 25, fx_cb, &fx);
	CHECK_INT(dns_pending(fx.r), 2);
	dns_cancel(q2);
	dns_cancel(q1);
	CHECK_INT(dns_pending(fx.r), 0);

	/* a later lookup still works; the cancelled ones never call back */
	dns_lookup(fx.r, "fast.test", 25, fx_cb, &fx);
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
	dns_lookup(fx.r, "slow.test", 25, fx_cb, &fx);
	/* get the query onto the wire */
	while (strcmp(dns_cmd("[\"count\", \"slow.test\", \"MX\"]"), "OK 0") == 0)
		uv_run(&fx.loop, UV_RUN_NOWAIT);
	/* and one whose result is ready but not handed out yet */
	dns_lookup(fx.r, "[127.0.0.72]", 25, fx_cb, &fx);
	CHECK_INT(dns_pending(fx.r), 2);
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
	dns_set_random(fx.r, rnd_first, NULL);

	/* a query in flight on the old channel when the configuration changes */
	dns_lookup(fx.r, "slow.test", 25, fx_cb, &fx);
	c2 = test_conf("mx2.rl.test");
	CHECK_INT(dns_reload(fx.r, c2, &err), 0);
	dns_lookup(fx.r, "rl.test", 25, fx_cb, &fx);
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
	CHECK_INT(dns_reload(fx.r, c2, &err), RELAY_EINVAL);
	CHECK(strstr(buf_cstr(&err), "dns.example") != NULL);
	dns_lookup(fx.r, "rl.test", 25, fx_cb, &fx);
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
	CHECK_INT(dns_reload(fx.r, c, &err), 0);
	dns_lookup(fx.r, "any.test", 25, fx_cb, &fx);
	fx_wait(&fx, 1);
	CHECK_INT(fx.res->err, RELAY_ETEMP);
	CHECK_STR(fx.res->status, "4.4.3");
	conf_unref(c);
	buf_free(&err);
	fx_close(&fx);
}

/* ---- sharing and caching ---- */

/* One caller among several: its own callback count and result. */
struct waiter {
	struct fixture *fx;
	int calls;
	struct dns_result *res;
	struct dns_query *q;
};

static void
wt_cb(void *arg, struct dns_result *res)
{
	struct waiter *w = arg;

	w->calls++;
	w->fx->calls++;
	dns_result_free(w->res);
	w->res = res;
}

static void
wt_free(struct waiter *w, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		dns_result_free(w[i].res);
		w[i].res = NULL;
	}
}

/* The injected clock of the cache. */
static uint64_t clk_ms = 1000000;

static uint64_t
clk_now(void *arg)
{
	(void)arg;
	return clk_ms;
}

/* Alternating randomness: 0, 1, 0, 1 ... */
static uint32_t
rnd_alternate(void *arg, uint32_t n)
{
	unsigned *k = arg;
	uint32_t v = (*k)++ % 2;

	return v < n ? v : 0;
}

/* Look up domain once more, wait for it; true when it cost no MX query. */
static bool
lookup_cached(struct fixture *fx, const char *domain, struct buf *got)
{
	int before = dns_count(domain, "MX"), calls = fx->calls;

	dns_lookup(fx->r, domain, 25, fx_cb, fx);
	fx_wait(fx, calls + 1);
	if (fx->res->err == 0)
		fmt_result(fx->res, got);
	else {
		buf_reset(got);
		buf_printf(got, "%s", fx->res->status);
	}
	return dns_count(domain, "MX") == before;
}

#define NWAIT 20

/* N lookups of one domain in flight together: one MX query, one A, one AAAA. */
static void
test_coalesce(void)
{
	struct waiter w[NWAIT];
	struct fixture fx;
	struct dns_stats st;
	struct buf got = BUF_INIT;
	size_t i;

	dns_cmd("[\"reset\"]");
	dns_cmd("[\"set_mx\", \"co.test\", [[10, \"mx.co.test\"]]]");       /* TTL 0: no cache */
	dns_cmd("[\"set_a\", \"mx.co.test\", [\"127.0.0.90\"]]");
	fx_open(&fx);
	memset(w, 0, sizeof(w));
	for (i = 0; i < NWAIT; i++) {
		w[i].fx = &fx;
		w[i].q = dns_lookup(fx.r, i % 2 ? "CO.test." : "co.test", 25, wt_cb, &w[i]);
	}
	/* the same domain on another port is another resolution */
	dns_lookup(fx.r, "co.test", 2525, fx_cb, &fx);
	CHECK_INT(dns_pending(fx.r), NWAIT + 1);
	CHECK_INT(fx.calls, 0);
	fx_wait(&fx, NWAIT + 1);
	CHECK_INT(dns_pending(fx.r), 0);

	for (i = 0; i < NWAIT; i++) {
		CHECK_INT(w[i].calls, 1);
		CHECK_INT(w[i].res->err, 0);
		fmt_result(w[i].res, &got);
		CHECK_STR(buf_cstr(&got), "10 mx.co.test 127.0.0.90:25");
		CHECK(i == 0 || w[i].res != w[i - 1].res);          /* a result of its own */
		CHECK(i == 0 || w[i].res->targets != w[i - 1].res->targets);
	}
	fmt_result(fx.res, &got);
	CHECK_STR(buf_cstr(&got), "10 mx.co.test 127.0.0.90:2525");
	CHECK_INT(dns_count("co.test", "MX"), 2);               /* port 25 once, port 2525 once */
	CHECK_INT(dns_count("mx.co.test", "A"), 2);
	CHECK_INT(dns_count("mx.co.test", "AAAA"), 2);
	dns_get_stats(fx.r, &st);
	CHECK_INT(st.lookups, NWAIT + 1);
	CHECK_INT(st.fetches, 2);
	CHECK_INT(st.joined, NWAIT - 1);
	CHECK_INT(st.cache_hits, 0);
	CHECK_INT(st.cached, 0);                /* TTL 0 is not kept */

	/* done: the next lookup asks again (nothing in flight, nothing kept) */
	CHECK(!lookup_cached(&fx, "co.test", &got));

	/* a route's hosts are shared the same way */
	{
		struct conf_hostport hosts[] = { { "mx.co.test", 26 }, { "127.0.0.91", 27 } };
		int a = dns_count("mx.co.test", "A");

		for (i = 0; i < 3; i++)
			w[i].q = dns_lookup_hosts(fx.r, hosts, 2, wt_cb, &w[i]);
		fx_wait(&fx, fx.calls + 3);
		for (i = 0; i < 3; i++) {
			fmt_result(w[i].res, &got);
			CHECK_STR(buf_cstr(&got), "0 mx.co.test 127.0.0.90:26; 1 127.0.0.91 127.0.0.91:27");
		}
		CHECK_INT(dns_count("mx.co.test", "A"), a + 1);
	}
	wt_free(w, NWAIT);
	fx_close(&fx);
	buf_free(&got);
}

/* Equal preferences are shuffled for each caller, not once for all of them. */
static void
test_coalesce_shuffle(void)
{
	struct waiter w[4];
	struct fixture fx;
	struct buf got = BUF_INIT;
	unsigned k = 0;
	size_t i;

	dns_cmd("[\"reset\"]");
	dns_cmd("[\"set_mx\", \"sh.test\", [[10, \"a.sh.test\"], [10, \"b.sh.test\"]]]");
	dns_cmd("[\"set_a\", \"a.sh.test\", [\"127.0.0.92\"]]");
	dns_cmd("[\"set_a\", \"b.sh.test\", [\"127.0.0.93\"]]");
	fx_open(&fx);
	dns_set_random(fx.r, rnd_alternate, &k);
	memset(w, 0, sizeof(w));
	for (i = 0; i < 4; i++) {
		w[i].fx = &fx;
		dns_lookup(fx.r, "sh.test", 25, wt_cb, &w[i]);
	}
	fx_wait(&fx, 4);
	CHECK_INT(dns_count("sh.test", "MX"), 1);
	for (i = 0; i < 4; i++) {
		fmt_result(w[i].res, &got);
		/* the randomness alternates: swapped, kept, swapped, kept (in hand-out order) */
		CHECK_STR(buf_cstr(&got), i % 2 == 0 ?
		    "10 b.sh.test 127.0.0.93:25; 10 a.sh.test 127.0.0.92:25" :
		    "10 a.sh.test 127.0.0.92:25; 10 b.sh.test 127.0.0.93:25");
	}
	wt_free(w, 4);
	fx_close(&fx);
	buf_free(&got);
}

/* Cancelling one waiter leaves the others their answer; cancelling all abandons it. */
static void
test_coalesce_cancel(void)
{
	struct waiter w[3];
	struct fixture fx;
	struct dns_stats st;
	size_t i;

	dns_cmd("[\"reset\"]");
	dns_cmd("[\"set_mx\", \"cc.test\", [[10, \"mx.cc.test\"]]]");
	dns_cmd("[\"set_a\", \"mx.cc.test\", [\"127.0.0.94\"]]");
	fx_open(&fx);
	memset(w, 0, sizeof(w));
	for (i = 0; i < 3; i++) {
		w[i].fx = &fx;
		w[i].q = dns_lookup(fx.r, "cc.test", 25, wt_cb, &w[i]);
	}
	/* the first one (the one that started the resolution) goes, while it is on the wire */
	while (dns_count("cc.test", "MX") == 0)
		uv_run(&fx.loop, UV_RUN_NOWAIT);
	dns_cancel(w[0].q);
	CHECK_INT(dns_pending(fx.r), 2);
	fx_wait(&fx, 2);
	CHECK_INT(w[0].calls, 0);
	CHECK_INT(w[1].calls, 1);
	CHECK_INT(w[2].calls, 1);
	CHECK_INT(w[1].res->err, 0);
	CHECK_STR(w[2].res->targets[0].host, "mx.cc.test");
	CHECK_INT(dns_count("cc.test", "MX"), 1);

	/* every waiter cancelled: nobody is called, and a new lookup starts afresh */
	for (i = 0; i < 3; i++)
		w[i].q = dns_lookup(fx.r, "cc.test", 25, wt_cb, &w[i]);
	for (i = 0; i < 3; i++)
		dns_cancel(w[i].q);
	CHECK_INT(dns_pending(fx.r), 0);
	dns_lookup(fx.r, "cc.test", 25, fx_cb, &fx);
	fx_wait(&fx, 3);
	CHECK_INT(fx.res->err, 0);
	{
		uint64_t until = util_mono_ms() + 300;      /* the abandoned answers arrive */

		while (util_mono_ms() < until)
			uv_run(&fx.loop, UV_RUN_NOWAIT), usleep(10000);
	}
	CHECK_INT(w[0].calls + w[1].calls + w[2].calls, 2);
	dns_get_stats(fx.r, &st);
	CHECK_INT(st.fetches, 3);
	wt_free(w, 3);
	fx_close(&fx);
}

/* A result is kept for min(every TTL it rests on, 60 s). */
static void
test_cache_ttl(void)
{
	static const struct {
		const char *name;
		unsigned dns_ttl, a_ttl;     /* A and AAAA */
		uint64_t later_ms;          /* the second lookup, after the first */
		bool hit;
	} rows[] = {
		{ "within the TTL", 30, 30, 29000, true },
		{ "past the TTL", 30, 30, 30000, false },
		{ "the least TTL counts (address)", 300, 10, 9999, true },
		{ "the least TTL counts (address), past it", 300, 10, 10000, false },
		{ "the least TTL counts (MX)", 5, 300, 6000, false },
		{ "never longer than 60 s", 3600, 3600, 59000, true },
		{ "never longer than 60 s, past it", 3600, 3600, 60000, false },
		{ "TTL 0 is not kept", 0, 0, 0, false },
	};
	struct fixture fx;
	struct dns_stats st;
	struct buf got = BUF_INIT, first = BUF_INIT;
	char cmd[256];
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		dns_cmd("[\"reset\"]");
		snprintf(cmd, sizeof(cmd), "[\"set_mx\", \"ttl.test\", [[10, \"mx.ttl.test\"]], %u]",
		    rows[i].dns_ttl);
		dns_cmd(cmd);
		snprintf(cmd, sizeof(cmd), "[\"set_a\", \"mx.ttl.test\", [\"127.0.0.95\"], %u]",
		    rows[i].a_ttl);
		dns_cmd(cmd);
		snprintf(cmd, sizeof(cmd), "[\"set_aaaa\", \"mx.ttl.test\", [\"::1\"], %u]",
		    rows[i].a_ttl);
		dns_cmd(cmd);
		fx_open(&fx);
		dns_set_clock(fx.r, clk_now, NULL);
		CHECK_MSG(!lookup_cached(&fx, "ttl.test", &first), "%s: first lookup", rows[i].name);
		clk_ms += rows[i].later_ms;
		CHECK_MSG(lookup_cached(&fx, "ttl.test", &got) == rows[i].hit, "%s: hit %d",
		    rows[i].name, !rows[i].hit);
		CHECK_MSG(strcmp(buf_cstr(&got), buf_cstr(&first)) == 0, "%s: \"%s\" then \"%s\"",
		    rows[i].name, buf_cstr(&first), buf_cstr(&got));
		dns_get_stats(fx.r, &st);
		CHECK_INT(st.cache_hits, rows[i].hit ? 1 : 0);
		fx_close(&fx);
	}
	buf_free(&got);
	buf_free(&first);
}

/* A temporary failure is kept for 5 s: no storm of queries, and not for long. */
static void
test_cache_temp_failure(void)
{
	struct fixture fx;
	struct buf got = BUF_INIT;
	int n;

	dns_cmd("[\"reset\"]");
	dns_cmd("[\"set_servfail\", \"tf.test\"]");
	fx_open(&fx);
	dns_set_clock(fx.r, clk_now, NULL);
	CHECK(!lookup_cached(&fx, "tf.test", &got));
	CHECK_STR(buf_cstr(&got), "4.4.3");
	n = dns_count("tf.test", "MX");
	CHECK(n >= 1);

	/* fixed meanwhile, but within 5 s the failure is what we know */
	dns_cmd("[\"set_mx\", \"tf.test\", [[10, \"mx.tf.test\"]], 300]");
	dns_cmd("[\"set_a\", \"mx.tf.test\", [\"127.0.0.96\"], 300]");
	dns_cmd("[\"set_aaaa\", \"mx.tf.test\", [\"::1\"], 300]");
	clk_ms += 4999;
	CHECK(lookup_cached(&fx, "tf.test", &got));
	CHECK_STR(buf_cstr(&got), "4.4.3");
	CHECK(strstr(fx.res->reason, "SERVFAIL") != NULL ||
	    strstr(fx.res->reason, "no DNS server answered") != NULL);
	CHECK_INT(dns_count("tf.test", "MX"), n);

	/* 5 s later it is asked again */
	clk_ms += 1;
	CHECK(!lookup_cached(&fx, "tf.test", &got));
	CHECK_STR(buf_cstr(&got), "10 mx.tf.test [::1]:25, 127.0.0.96:25");
	fx_close(&fx);
	buf_free(&got);
}

/* Negative answers follow their own TTL: a null MX per its record, NXDOMAIN per the SOA. */
static void
test_cache_negative(void)
{
	struct fixture fx;
	struct buf got = BUF_INIT;

	dns_cmd("[\"reset\"]");
	dns_cmd("[\"set_null_mx\", \"nm.test\", 30]");
	/* dns_cli.py's SOA (TTL and minimum) is 0: NXDOMAIN must not be kept */
	dns_cmd("[\"set_nxdomain\", \"nx.test\"]");
	fx_open(&fx);
	dns_set_clock(fx.r, clk_now, NULL);
	CHECK(!lookup_cached(&fx, "nm.test", &got));
	CHECK_STR(buf_cstr(&got), "5.1.10");
	clk_ms += 29000;
	CHECK(lookup_cached(&fx, "nm.test", &got));
	CHECK_STR(buf_cstr(&got), "5.1.10");
	CHECK_INT(fx.res->err, RELAY_EINVAL);
	clk_ms += 1000;
	CHECK(!lookup_cached(&fx, "nm.test", &got));

	CHECK(!lookup_cached(&fx, "nx.test", &got));
	CHECK_STR(buf_cstr(&got), "5.1.2");
	CHECK(!lookup_cached(&fx, "nx.test", &got));
	CHECK_STR(buf_cstr(&got), "5.1.2");
	fx_close(&fx);
	buf_free(&got);
}

/* dns_cache_clear() (relayctl queue flush) and dns_reload() (SIGHUP) forget the cache. */
static void
test_cache_forget(void)
{
	struct fixture fx;
	struct buf got = BUF_INIT, err = BUF_INIT;
	struct dns_stats st;
	struct conf *c2;

	dns_cmd("[\"reset\"]");
	dns_cmd("[\"set_mx\", \"fg.test\", [[10, \"mx.fg.test\"]], 60]");
	dns_cmd("[\"set_a\", \"mx.fg.test\", [\"127.0.0.97\"], 60]");
	dns_cmd("[\"set_aaaa\", \"mx.fg.test\", [\"::1\"], 60]");
	fx_open(&fx);
	dns_set_clock(fx.r, clk_now, NULL);
	CHECK(!lookup_cached(&fx, "fg.test", &got));
	CHECK(lookup_cached(&fx, "fg.test", &got));
	dns_get_stats(fx.r, &st);
	CHECK_INT(st.cached, 1);
	dns_cache_clear(fx.r);
	dns_get_stats(fx.r, &st);
	CHECK_INT(st.cached, 0);
	CHECK(!lookup_cached(&fx, "fg.test", &got));
	CHECK(lookup_cached(&fx, "fg.test", &got));

	/* after a reload we are mx.fg.test ourselves: the old answer must not be used */
	c2 = test_conf("mx.fg.test");
	CHECK_INT(dns_reload(fx.r, c2, &err), 0);
	CHECK(!lookup_cached(&fx, "fg.test", &got));
	CHECK_STR(buf_cstr(&got), "5.4.6");
	conf_unref(c2);
	fx_close(&fx);
	buf_free(&got);
	buf_free(&err);
}

/*
 * Many different domains at once: every one is resolved.  The loopback
 * server's socket buffer overflows under such a burst and drops part of it,
 * so this also proves that c-ares' retransmissions run on the channel timer
 * that is rearmed once per loop turn (not after every request).
 */
static void
test_many_domains(void)
{
	enum { N = 200 };
	struct waiter *w = xcalloc(N, sizeof(*w));
	struct fixture fx;
	char name[64];
	size_t i;

	dns_cmd("[\"reset\"]");
	dns_cmd("[\"set_a\", \"mx.many.test\", [\"127.0.0.98\"]]");
	for (i = 0; i < N; i++) {
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "[\"set_mx\", \"d%zu.many.test\", [[10, \"mx.many.test\"]]]",
		    i);
		dns_cmd(cmd);
	}
	fx_open(&fx);
	CHECK_INT(dns_set_timeout(fx.r, 500, 5), 0);        /* lost packets are retried */
	for (i = 0; i < N; i++) {
		w[i].fx = &fx;
		snprintf(name, sizeof(name), "d%zu.many.test", i);
		dns_lookup(fx.r, name, 25, wt_cb, &w[i]);
	}
	fx_wait(&fx, N);
	for (i = 0; i < N; i++) {
		CHECK_INT(w[i].calls, 1);
		CHECK_MSG(w[i].res->err == 0 && w[i].res->ntargets == 1, "d%zu: %s", i,
		    w[i].res->reason);
	}
	wt_free(w, N);
	free(w);
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
	test_coalesce();
	test_coalesce_shuffle();
	test_coalesce_cancel();
	test_cache_ttl();
	test_cache_temp_failure();
	test_cache_negative();
	test_cache_forget();
	test_many_domains();
	dns_stop();
	return check_done();
}
