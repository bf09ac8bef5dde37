/*
 * test_http.c - the HTTPS client (http/) against a real HTTPS server:
 * tests/harness/https_cli.py runs the harness's HTTPSServer, DNSServer and
 * test CA (relay.py's TestCA) on 127.0.0.1.  Names are resolved by
 * relayd's resolver through that DNS server (a name it does not know fails
 * as HTTP_E_RESOLVE: curl never asked anyone else).
 *
 * Table rows: method, URL, limits, trust anchors, and what the callback
 * must see (error kind, status, body).  Then: a request cancelled before
 * it finished never calls back, and neither does one pending at
 * http_close(); a callback may start another request; requests beyond
 * HTTP_MAX_CONNS transfers wait and run when one ends, oldest first, and one cancelled
 * or closed while waiting never calls back; the loop closes cleanly
 * (uv_loop_close() == 0) at the end.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include "check.h"
#include "common/util.h"
#include "conf/conf.h"
#include "dns/dns.h"
#include "http/http.h"

static pid_t cli_pid;
static int cli_in = -1;
static FILE *cli_out;
static unsigned dns_port, https_port;
static char ca_file[512], reply[65536], tmpdir[64];
static int never;                  /* calls of on_never: must stay 0 */

static void
cli_start(void)
{
	char path[4096], line[1024], *slash;
	int in[2], out[2];

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_http.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		fatalx("mkdtemp: %s", strerror(errno));
	snprintf(path, sizeof(path), "%s", __FILE__);
	if ((slash = strrchr(path, '/')) != NULL)
		*slash = '\0';
	else
		snprintf(path, sizeof(path), ".");
	snprintf(path + strlen(path), sizeof(path) - strlen(path), "/../harness/https_cli.py");
	if (pipe(in) == -1 || pipe(out) == -1)
		fatalx("pipe: %s", strerror(errno));
	if ((cli_pid = fork()) == -1)
		fatalx("fork: %s", strerror(errno));
	if (cli_pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[0]);
		close(in[1]);
		close(out[0]);
		close(out[1]);
		setenv("PYTHONDONTWRITEBYTECODE", "1", 1);
		execlp("python3", "python3", path, tmpdir, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	cli_in = in[1];
	cli_out = fdopen(out[0], "r");
	if (fgets(line, sizeof(line), cli_out) == NULL ||
	    sscanf(line, "READY %u %u %511s", &dns_port, &https_port, ca_file) != 3)
		fatalx("https_cli.py did not start (%s)", path);
}

static const char *
cli_cmd(const char *json)
{
	size_t n = strlen(json);

	if (write(cli_in, json, n) != (ssize_t)n || write(cli_in, "\n", 1) != 1)
		fatalx("https_cli.py: write: %s", strerror(errno));
	if (fgets(reply, sizeof(reply), cli_out) == NULL)
		fatalx("https_cli.py: no reply to %s", json);
	reply[strcspn(reply, "\n")] = '\0';
	if (strncmp(reply, "OK", 2) != 0)
		fatalx("https_cli.py: %s -> %s", json, reply);
	return reply;
}

static void
cli_stop(void)
{
	char cmd[128];
	int st;

	cli_cmd("[\"quit\"]");
	close(cli_in);
	fclose(cli_out);
	waitpid(cli_pid, &st, 0);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* ---- the client on a loop ---- */

struct got {
	int calls;
	enum http_error err;
	long status;
	char ctype[128];
	char error[256];
	char ip[64];
	char *body;
};

static void
on_done(void *arg, struct http_response *res)
{
	struct got *g = arg;

	g->calls++;
	g->err = res->err;
	g->status = res->status;
	snprintf(g->ctype, sizeof(g->ctype), "%s", res->content_type);
	snprintf(g->error, sizeof(g->error), "%s", res->error);
	snprintf(g->ip, sizeof(g->ip), "%s", res->ip);
	free(g->body);
	g->body = buf_steal(&res->body);        /* the callback may take the body */
}

static void
on_never(void *arg, struct http_response *res)
{
	int *n = arg;

	(*n)++;
}

static struct conf *
test_conf(void)
{
	struct conf *c = conf_new_defaults();

	c->router.dns_servers = xcalloc(1, sizeof(*c->router.dns_servers));
	c->router.dns_servers[0].host = xstrdup("127.0.0.1");
	c->router.dns_servers[0].port = (uint16_t)dns_port;
	c->router.ndns_servers = 1;
	return c;
}

static void
url(char *out, size_t n, const char *host, unsigned port, const char *path)
{
	snprintf(out, n, "https://%s:%u%s", host, port, path);
}

static void
test_table(uv_loop_t *loop, struct http_client *hc)
{
	static const struct {
		const char *name;
		enum http_method method;
		const char *host;
		bool closed_port;       /* a port nobody listens on */
		const char *path;
		size_t max_size;
		unsigned timeout_ms;
		bool system_ca;         /* trust only the system store */
		enum http_error want_err;
		long want_status;
		const char *want_body;  /* NULL: not checked */
	} rows[] = {
		{ "GET 200", HTTP_GET, "www.example.test", false, "/ok", 0, 5000, false,
		  HTTP_OK, 200, "hello\n" },
		{ "GET 404", HTTP_GET, "www.example.test", false, "/nothing", 0, 5000, false,
		  HTTP_OK, 404, NULL },
		{ "redirect not followed", HTTP_GET, "www.example.test", false, "/redirect", 0, 5000,
		  false, HTTP_OK, 301, "" },
		{ "under the cap", HTTP_GET, "www.example.test", false, "/big", 5000, 5000, false,
		  HTTP_OK, 200, NULL },
		{ "over the cap (Content-Length)", HTTP_GET, "www.example.test", false, "/big", 4999,
		  5000, false, HTTP_E_TOO_BIG, 0, "" },
		{ "over the cap (no length)", HTTP_GET, "www.example.test", false, "/big-nolen", 1000,
		  5000, false, HTTP_E_TOO_BIG, 0, "" },
		{ "slow server", HTTP_GET, "www.example.test", false, "/slow", 0, 700, false,
		  HTTP_E_TIMEOUT, 0, "" },
		{ "untrusted (system store)", HTTP_GET, "www.example.test", false, "/ok", 0, 5000, true,
		  HTTP_E_TLS, 0, "" },
		{ "name not in the certificate", HTTP_GET, "wrong.example.test", false, "/ok", 0, 5000,
		  false, HTTP_E_TLS, 0, "" },
		{ "name not in DNS", HTTP_GET, "nothing.example.test", false, "/ok", 0, 5000, false,
		  HTTP_E_RESOLVE, 0, "" },
		{ "nobody listening", HTTP_GET, "www.example.test", true, "/ok", 0, 5000, false,
		  HTTP_E_CONNECT, 0, "" },
		{ "POST", HTTP_POST, "www.example.test", false, "/post", 0, 5000, false,
		  HTTP_OK, 200, "accepted\n" },
	};
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		struct http_request rq;
		struct buf err = BUF_INIT;
		struct got g;
		char u[256];
		struct http_req *q;

		memset(&g, 0, sizeof(g));
		memset(&rq, 0, sizeof(rq));
		url(u, sizeof(u), rows[i].host, rows[i].closed_port ? 1 : https_port, rows[i].path);
		rq.method = rows[i].method;
		rq.url = u;
		rq.max_size = rows[i].max_size;
		rq.timeout_ms = rows[i].timeout_ms;
		rq.ca_file = rows[i].system_ca ? NULL : ca_file;
		if (rq.method == HTTP_POST) {
			rq.body = "report\0body";
			rq.body_len = 11;
			rq.content_type = "application/tlsrpt+gzip";
		}
		q = http_start(hc, &rq, on_done, &g, &err);
		CHECK_MSG(q != NULL, "%s: %s", rows[i].name, buf_cstr(&err));
		CHECK_MSG(g.calls == 0, "%s: called back inside http_start", rows[i].name);
		while (g.calls == 0 && uv_run(loop, UV_RUN_ONCE) != 0)
			;
		CHECK_MSG(g.calls == 1, "%s: %d calls", rows[i].name, g.calls);
		CHECK_MSG(g.err == rows[i].want_err, "%s: err %s (%s), want %s", rows[i].name,
		    http_error_name(g.err), g.error, http_error_name(rows[i].want_err));
		CHECK_MSG(g.status == rows[i].want_status, "%s: status %ld", rows[i].name, g.status);
		if (rows[i].want_body != NULL)
			CHECK_MSG(g.body != NULL && strcmp(g.body != NULL ? g.body : "",
			    rows[i].want_body) == 0, "%s: body '%s'", rows[i].name,
			    g.body != NULL ? g.body : "(null)");
		if (rows[i].want_err == HTTP_OK) {
			CHECK_STR(g.ip, "127.0.0.1");
			CHECK_MSG(rows[i].want_status != 200 || strcmp(g.ctype, "text/plain") == 0,
			    "%s: content type '%s'", rows[i].name, g.ctype);
		} else
			CHECK_MSG(g.error[0] != '\0', "%s: no error text", rows[i].name);
		CHECK_INT(http_pending(hc), 0);
		free(g.body);
		buf_free(&err);
	}
	/* what the server saw of the POST: method, type and the body with its NUL */
	cli_cmd("[\"requests\"]");
	CHECK_MSG(strstr(reply, "[\"POST\", \"www.example.test\", \"/post\", "
	    "\"application/tlsrpt+gzip\", \"report\\u0000body\"]") != NULL, "requests: %s", reply);
}

static void
test_refused(struct http_client *hc)
{
	static const char *bad[] = {
		"http://www.example.test/ok", "ftp://www.example.test/", "not a url", "https://",
	};
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(bad); i++) {
		struct http_request rq = { .method = HTTP_GET, .url = bad[i] };
		struct buf err = BUF_INIT;
		int calls = 0;

		CHECK_MSG(http_start(hc, &rq, on_never, &calls, &err) == NULL, "%s accepted", bad[i]);
		CHECK_MSG(err.len > 0, "%s: no reason", bad[i]);
		CHECK_INT(calls, 0);
		buf_free(&err);
	}
}

/* A callback that starts the next request from inside itself. */
struct chain {
	struct http_client *hc;
	char url[256];
	int calls;
	long status[2];
};

static void
on_chain(void *arg, struct http_response *res)
{
	struct chain *ch = arg;
	struct http_request rq = { .method = HTTP_GET, .url = ch->url, .ca_file = ca_file };
	struct buf err = BUF_INIT;

	ch->status[ch->calls++] = res->status;
	if (ch->calls == 1)
		CHECK(http_start(ch->hc, &rq, on_chain, ch, &err) != NULL);
	buf_free(&err);
}

static void
test_lifetime(uv_loop_t *loop, struct http_client *hc)
{
	struct http_request rq;
	struct http_req *q1, *q2;
	struct buf err = BUF_INIT;
	struct chain ch;
	struct got g;
	char u[256];

	memset(&ch, 0, sizeof(ch));
	ch.hc = hc;
	url(ch.url, sizeof(ch.url), "www.example.test", https_port, "/ok");
	memset(&rq, 0, sizeof(rq));
	rq.url = ch.url;
	rq.ca_file = ca_file;
	CHECK(http_start(hc, &rq, on_chain, &ch, &err) != NULL);
	while (ch.calls < 2 && uv_run(loop, UV_RUN_ONCE) != 0)
		;
	CHECK_INT(ch.calls, 2);
	CHECK_INT(ch.status[0], 200);
	CHECK_INT(ch.status[1], 200);

	/* cancelled while resolving, and while transferring (the slow one) */
	q1 = http_start(hc, &rq, on_never, &never, &err);
	CHECK(q1 != NULL);
	http_cancel(q1);
	url(u, sizeof(u), "www.example.test", https_port, "/slow");
	rq.url = u;
	q2 = http_start(hc, &rq, on_never, &never, &err);
	CHECK(q2 != NULL);
	/* a fast one alongside: when it is done, the slow one is in transfer */
	memset(&g, 0, sizeof(g));
	rq.url = ch.url;
	CHECK(http_start(hc, &rq, on_done, &g, &err) != NULL);
	while (g.calls == 0 && uv_run(loop, UV_RUN_ONCE) != 0)
		;
	CHECK_INT(g.status, 200);
	CHECK_INT(http_pending(hc), 1);
	http_cancel(q2);
	CHECK_INT(http_pending(hc), 0);
	free(g.body);

	/* pending at close: never called back */
	rq.url = u;
	CHECK(http_start(hc, &rq, on_never, &never, &err) != NULL);
	uv_run(loop, UV_RUN_NOWAIT);
	CHECK_INT(never, 0);
	buf_free(&err);
}

/*
 * More requests than HTTP_MAX_CONNS transfers: the ones beyond wait in the
 * client and run when a transfer ends, whole; a waiting one cancelled never
 * calls back, nor does one still waiting at http_close() (main).
 */
static void
test_waiting(uv_loop_t *loop, struct http_client *hc)
{
	struct http_request rq;
	struct http_req *slow[HTTP_MAX_CONNS], *cancelled;
	struct buf err = BUF_INIT;
	struct got gs[HTTP_MAX_CONNS], g[2];
	char slow_url[256], ok_url[256];
	size_t i, before = http_pending(hc);   /* test_lifetime's, left for the close */

	url(slow_url, sizeof(slow_url), "www.example.test", https_port, "/slow");
	url(ok_url, sizeof(ok_url), "www.example.test", https_port, "/ok");
	memset(&rq, 0, sizeof(rq));
	rq.ca_file = ca_file;
	rq.url = slow_url;
	memset(gs, 0, sizeof(gs));
	for (i = 0; i < HTTP_MAX_CONNS; i++) {
		slow[i] = http_start(hc, &rq, on_done, &gs[i], &err);
		CHECK(slow[i] != NULL);
	}
	memset(g, 0, sizeof(g));
	rq.url = ok_url;
	CHECK(http_start(hc, &rq, on_done, &g[0], &err) != NULL);
	cancelled = http_start(hc, &rq, on_never, &never, &err);
	CHECK(cancelled != NULL);
	CHECK(http_start(hc, &rq, on_done, &g[1], &err) != NULL);
	/* the names resolve meanwhile: 8 transfers run, the others wait (which
	 * ones depends on the answers' order; the outcome below does not) */
	for (i = 0; i < 50; i++) {
		uv_run(loop, UV_RUN_NOWAIT);
		uv_sleep(2);
	}
	http_cancel(cancelled);
	/* the slow ones end (cancelled here, running or waiting): the waiting
	 * fast ones get their transfers */
	for (i = 0; i < HTTP_MAX_CONNS; i++)
		if (gs[i].calls == 0)
			http_cancel(slow[i]);
	while ((g[0].calls == 0 || g[1].calls == 0) && uv_run(loop, UV_RUN_ONCE) != 0)
		;
	CHECK_INT(g[0].calls, 1);
	CHECK_INT(g[0].status, 200);
	CHECK_INT(g[1].calls, 1);
	CHECK_INT(g[1].status, 200);
	for (i = 0; i < HTTP_MAX_CONNS; i++)
		free(gs[i].body);
	free(g[0].body);
	free(g[1].body);
	CHECK_INT(http_pending(hc), before);

	/* still waiting at close (main): never called back */
	rq.url = slow_url;
	for (i = 0; i < HTTP_MAX_CONNS + 2; i++)
		CHECK(http_start(hc, &rq, on_never, &never, &err) != NULL);
	for (i = 0; i < 50; i++) {
		uv_run(loop, UV_RUN_NOWAIT);
		uv_sleep(2);
	}
	CHECK_INT(never, 0);
	buf_free(&err);
}

/*
 * First come, first served: a request whose name resolves in the instant
 * after a transfer ended, before the 0 ms kick that starts the oldest
 * waiting one, does not take that slot: it queues behind.  An address
 * literal's answer comes from the resolver's own 0 ms timer, started
 * here before the transfer ends, so it runs first in that instant.
 */
static void
test_waiting_order(uv_loop_t *loop, struct http_client *hc)
{
	struct http_request rq;
	struct http_req *slow[HTTP_MAX_CONNS];
	struct buf err = BUF_INIT;
	struct got gs[HTTP_MAX_CONNS], first, late;
	char slow_url[256], ok_url[256], literal_url[256];
	size_t i, before = http_pending(hc);

	url(slow_url, sizeof(slow_url), "www.example.test", https_port, "/slow");
	url(ok_url, sizeof(ok_url), "www.example.test", https_port, "/ok");
	url(literal_url, sizeof(literal_url), "127.0.0.1", https_port, "/ok");
	memset(&rq, 0, sizeof(rq));
	rq.ca_file = ca_file;
	memset(gs, 0, sizeof(gs));
	memset(&first, 0, sizeof(first));
	memset(&late, 0, sizeof(late));
	rq.url = slow_url;
	for (i = 0; i < HTTP_MAX_CONNS; i++)
		CHECK((slow[i] = http_start(hc, &rq, on_done, &gs[i], &err)) != NULL);
	rq.url = ok_url;
	CHECK(http_start(hc, &rq, on_done, &first, &err) != NULL);
	/* the slow ones hold every transfer; the first waits */
	while (http_waiting(hc) == 0 && uv_run(loop, UV_RUN_ONCE) != 0)
		;
	CHECK_INT(http_waiting(hc), 1);
	rq.url = literal_url;
	CHECK(http_start(hc, &rq, on_done, &late, &err) != NULL);
	http_cancel(slow[0]);           /* a slot frees; the late one resolves first */
	while (first.calls == 0 && late.calls == 0 && uv_run(loop, UV_RUN_ONCE) != 0)
		;
	CHECK_INT(first.calls, 1);
	CHECK_INT(first.status, 200);
	CHECK_INT(late.calls, 0);
	/* the late one runs once a transfer ends (the first's did) */
	while (late.calls == 0 && uv_run(loop, UV_RUN_ONCE) != 0)
		;
	CHECK_INT(late.calls, 1);
	for (i = 1; i < HTTP_MAX_CONNS; i++)
		if (gs[i].calls == 0)
			http_cancel(slow[i]);
	for (i = 0; i < HTTP_MAX_CONNS; i++)
		free(gs[i].body);
	free(first.body);
	free(late.body);
	CHECK_INT(http_pending(hc), before);
	CHECK_INT(http_waiting(hc), 0);
	buf_free(&err);
}

static void
on_closed(void *arg)
{
	(*(int *)arg)++;
}

int
main(void)
{
	uv_loop_t loop;
	struct conf *c;
	struct dns_resolver *r;
	struct http_client *hc;
	struct buf err = BUF_INIT;
	int closed = 0;

	signal(SIGPIPE, SIG_IGN);
	cli_start();
	uv_loop_init(&loop);
	c = test_conf();
	if ((r = dns_new(&loop, c, &err)) == NULL)
		fatalx("dns_new: %s", buf_cstr(&err));
	dns_set_timeout(r, 500, 2);
	if ((hc = http_new(&loop, r, &err)) == NULL)
		fatalx("http_new: %s", buf_cstr(&err));

	test_table(&loop, hc);
	test_refused(hc);
	test_waiting_order(&loop, hc);
	test_lifetime(&loop, hc);
	test_waiting(&loop, hc);

	http_close(hc, on_closed, &closed);
	CHECK_INT(closed, 0);           /* done fires from the loop */
	dns_close(r, NULL, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(closed, 1);
	CHECK_INT(never, 0);
	CHECK_INT(uv_loop_close(&loop), 0);
	conf_unref(c);
	buf_free(&err);
	cli_stop();
	return check_done();
}
