/*
 * http.c - the HTTPS client (http.h): libcurl's multi-socket interface on
 * the libuv loop.  curl tells us which sockets to watch
 * (CURLMOPT_SOCKETFUNCTION: one uv_poll_t each) and when to wake it
 * (CURLMOPT_TIMERFUNCTION: one uv_timer_t); we hand every readiness and
 * every timeout back with curl_multi_socket_action() and collect finished
 * transfers with curl_multi_info_read().  Names are resolved by dns/ first
 * and given to curl as CURLOPT_RESOLVE entries.
 *
 * Owns: the CURLM, every CURL easy handle, the poll handles, the timer,
 * each request's copies (URL, body, headers) and its response.
 * Must never: block (no curl_easy_perform, no curl_multi_wait), let curl
 * resolve a name, follow a redirect, or turn certificate checks off.
 */
#include "http/http.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <curl/curl.h>

#include "common/util.h"
#include "conf/conf.h"
#include "dns/dns.h"

#define HTTP_MAGIC      0x48545450u     /* "HTTP" */
#define HTTP_MAGIC_REQ  0x48524551u     /* "HREQ" */

struct http_sock {
	uv_poll_t poll;
	struct http_client *c;
	curl_socket_t fd;
	LIST_ENTRY(http_sock) entry;
};

struct http_req {
	uint32_t magic;
	struct http_client *c;
	TAILQ_ENTRY(http_req) entry;
	http_cb *cb;
	void *arg;

	enum http_method method;
	char *url;
	char *host;                     /* as in the URL, brackets removed */
	bool literal;                   /* host is an address: nothing to resolve */
	unsigned port;
	char *body;
	size_t body_len;
	struct curl_slist *headers;
	char *ca_file;                  /* or NULL */
	size_t max_size;
	unsigned timeout_ms;
	uint64_t started;               /* uv_now at http_start */

	struct dns_query *dq;           /* resolving, or NULL */
	bool ready;                     /* resolved, waiting in c->ready for a transfer slot */
	uint64_t ready_since;           /* uv_now when it began to wait */
	TAILQ_ENTRY(http_req) ready_entry;
	CURL *easy;                     /* transferring, or NULL */
	struct curl_slist *resolve;
	bool too_big;
	char errbuf[CURL_ERROR_SIZE];
	struct http_response res;
};
TAILQ_HEAD(http_reqq, http_req);

struct http_client {
	uint32_t magic;
	uv_loop_t *loop;
	struct dns_resolver *dns;
	CURLM *multi;
	uv_timer_t timer;
	struct http_reqq reqs;
	size_t nreqs;
	struct http_reqq ready;         /* resolved, waiting for one of the transfers to end */
	size_t nready;                  /* how many */
	unsigned ntransfers;            /* easy handles in the multi: at most HTTP_MAX_CONNS */
	uv_timer_t kick;                /* starts waiting ones from the loop, after a slot frees */
	LIST_HEAD(, http_sock) socks;
	bool closing;
	unsigned nclosing;              /* handles whose close callback is due */
	void (*done)(void *);
	void *done_arg;
};

static void http_check_done(struct http_client *c);
static void http_on_kick(uv_timer_t *t);

/* q's transfer is out of the multi: a waiting one may start (from the loop,
 * never inside a caller's http_cancel or a callback). */
static void
http_transfer_gone(struct http_req *q)
{
	struct http_client *c = q->c;

	curl_multi_remove_handle(c->multi, q->easy);
	curl_easy_cleanup(q->easy);
	q->easy = NULL;
	c->ntransfers--;
	if (!c->closing && !TAILQ_EMPTY(&c->ready))
		uv_timer_start(&c->kick, http_on_kick, 0, 0);
}

/* ------------------------------------------------------------------ */
/* Requests. */

const char *
http_error_name(enum http_error e)
{
	switch (e) {
	case HTTP_OK:
		return "ok";
	case HTTP_E_RESOLVE:
		return "resolve";
	case HTTP_E_CONNECT:
		return "connect";
	case HTTP_E_TLS:
		return "tls";
	case HTTP_E_TIMEOUT:
		return "timeout";
	case HTTP_E_TOO_BIG:
		return "too-big";
	case HTTP_E_OTHER:
		break;
	}
	return "other";
}

static void
http_req_free(struct http_req *q)
{
	if (q->dq != NULL)
		dns_cancel(q->dq);
	if (q->ready) {
		TAILQ_REMOVE(&q->c->ready, q, ready_entry);
		q->c->nready--;
	}
	if (q->easy != NULL)
		http_transfer_gone(q);
	curl_slist_free_all(q->resolve);
	curl_slist_free_all(q->headers);
	buf_free(&q->res.body);
	free(q->url);
	free(q->host);
	free(q->body);
	free(q->ca_file);
	q->magic = 0;
	free(q);
}

/* q is over: out of the list, its callback, then freed. */
static void
http_finish(struct http_req *q)
{
	struct http_client *c = q->c;

	TAILQ_REMOVE(&c->reqs, q, entry);
	c->nreqs--;
	if (q->easy != NULL)
		http_transfer_gone(q);
	q->cb(q->arg, &q->res);
	http_req_free(q);
}

static void
http_fail(struct http_req *q, enum http_error e, const char *why)
{
	q->res.err = e;
	q->res.status = 0;
	buf_reset(&q->res.body);
	snprintf(q->res.error, sizeof(q->res.error), "%s", why);
	http_finish(q);
}

static size_t
http_on_write(char *p, size_t size, size_t n, void *arg)
{
	struct http_req *q = arg;

	if (q->res.body.len + n > q->max_size) {
		q->too_big = true;
		return 0;               /* CURLE_WRITE_ERROR */
	}
	buf_append(&q->res.body, p, n);
	return n;
}

/* One CURLOPT_RESOLVE entry "host:port:addr,addr" from the resolver's answer. */
static struct curl_slist *
http_resolve_list(const struct http_req *q, const struct dns_target *tg)
{
	struct curl_slist *l;
	struct buf b = BUF_INIT;
	char ip[INET6_ADDRSTRLEN];
	size_t i;

	buf_printf(&b, "%s:%u:", q->host, q->port);
	for (i = 0; i < tg->naddrs; i++) {
		const struct sockaddr *sa = (const struct sockaddr *)&tg->addrs[i].ss;

		if (i > 0)
			buf_putc(&b, ',');
		if (sa->sa_family == AF_INET6) {
			inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, ip, sizeof(ip));
			buf_printf(&b, "[%s]", ip);
		} else {
			inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, ip, sizeof(ip));
			buf_puts(&b, ip);
		}
	}
	l = curl_slist_append(NULL, buf_cstr(&b));
	buf_free(&b);
	if (l == NULL)
		fatalx("%s: out of memory", __func__);
	return l;
}

/*
 * The name is resolved (or needs no resolving): hand the transfer to curl,
 * or, with HTTP_MAX_CONNS transfers running, wait in c->ready for one of
 * them to end.  The wait does not count against the request's timeout: it
 * bounds what the server and the network may take, and a transfer left
 * waiting in curl (CURLMOPT_MAX_TOTAL_CONNECTIONS alone) was failed
 * untried once its timeout had passed in the wait ("Failed to resolve
 * host ... with timeout after 0 ms": 12 of 20 MTA-STS fetches held 6 s
 * each).  First come, first served: a request resolved while others wait
 * queues behind them even if a slot is free at that instant (one freed,
 * its 0 ms kick not run yet); only the kick (waited) takes the oldest.
 */
static void
http_transfer(struct http_req *q, bool waited)
{
	struct http_client *c = q->c;
	uint64_t spent = uv_now(c->loop) - q->started;
	long left;
	CURL *e;

	if (spent >= q->timeout_ms) {
		http_fail(q, HTTP_E_TIMEOUT, "timed out while resolving the host name");
		return;
	}
	if (c->ntransfers >= HTTP_MAX_CONNS || (!waited && !TAILQ_EMPTY(&c->ready))) {
		q->ready = true;
		q->ready_since = uv_now(c->loop);
		TAILQ_INSERT_TAIL(&c->ready, q, ready_entry);
		c->nready++;
		if (c->ntransfers < HTTP_MAX_CONNS)
			uv_timer_start(&c->kick, http_on_kick, 0, 0);   /* pending already; harmless */
		return;
	}
	left = (long)(q->timeout_ms - spent);
	if ((e = curl_easy_init()) == NULL) {
		http_fail(q, HTTP_E_OTHER, "curl_easy_init failed");
		return;
	}
	q->easy = e;
	curl_easy_setopt(e, CURLOPT_PRIVATE, q);
	curl_easy_setopt(e, CURLOPT_URL, q->url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_NETRC, (long)CURL_NETRC_IGNORED);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	if (q->ca_file != NULL)
		curl_easy_setopt(e, CURLOPT_CAINFO, q->ca_file);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, left);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, left);
	curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)q->max_size);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_on_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, q);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, q->errbuf);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "relayd");
	if (q->resolve != NULL)
		curl_easy_setopt(e, CURLOPT_RESOLVE, q->resolve);
	if (q->headers != NULL)
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, q->headers);
	if (q->method == HTTP_POST) {
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, q->body != NULL ? q->body : "");
	}
	if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
		curl_easy_cleanup(e);
		q->easy = NULL;
		http_fail(q, HTTP_E_OTHER, "curl_multi_add_handle failed");
		return;
	}
	c->ntransfers++;
	/* curl asks for its timer (CURLMOPT_TIMERFUNCTION): the loop starts it */
}

/* Transfer slots are free: the waiting requests, oldest first, take them. */
static void
http_on_kick(uv_timer_t *t)
{
	struct http_client *c = t->data;
	struct http_req *q;

	while (!c->closing && c->ntransfers < HTTP_MAX_CONNS &&
	    (q = TAILQ_FIRST(&c->ready)) != NULL) {
		TAILQ_REMOVE(&c->ready, q, ready_entry);
		c->nready--;
		q->ready = false;
		q->started += uv_now(c->loop) - q->ready_since;
		http_transfer(q, true);
	}
}

static void
http_on_resolved(void *arg, struct dns_result *res)
{
	struct http_req *q = arg;

	if (q->magic != HTTP_MAGIC_REQ)
		fatalx("%s: answer for a bad request", __func__);
	q->dq = NULL;
	if (res->err != 0 || res->ntargets == 0 || res->targets[0].naddrs == 0) {
		struct buf why = BUF_INIT;

		buf_printf(&why, "cannot resolve %s: %s", q->host,
		    res->reason[0] != '\0' ? res->reason : "no address");
		dns_result_free(res);
		http_fail(q, HTTP_E_RESOLVE, buf_cstr(&why));
		buf_free(&why);
		return;
	}
	if (!q->literal)     /* curl takes an address literal as it is */
		q->resolve = http_resolve_list(q, &res->targets[0]);
	dns_result_free(res);
	http_transfer(q, false);
}

/* Check the URL and fill q's host, port and literal flag; 0 or -1 with err. */
static int
http_parse_url(struct http_req *q, const char *url, struct buf *err)
{
	CURLU *u;
	char *scheme = NULL, *host = NULL, *port = NULL;
	unsigned char a[16];
	size_t n;
	int rc = -1;

	if ((u = curl_url()) == NULL)
		fatalx("%s: out of memory", __func__);
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
		buf_printf(err, "malformed URL '%s'", url);
		goto out;
	}
	if (util_strncasecmp(scheme, "https", 6) != 0) {
		buf_printf(err, "not an https URL: '%s'", url);
		goto out;
	}
	n = strlen(host);
	if (n >= 2 && host[0] == '[' && host[n - 1] == ']')
		q->host = xstrndup(host + 1, n - 2);
	else
		q->host = xstrdup(host);
	q->port = (unsigned)strtoul(port, NULL, 10);
	q->literal = inet_pton(AF_INET, q->host, a) == 1 || inet_pton(AF_INET6, q->host, a) == 1;
	rc = 0;
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return rc;
}

struct http_req *
http_start(struct http_client *c, const struct http_request *rq, http_cb *cb, void *arg,
    struct buf *err)
{
	struct http_req *q;
	size_t i;

	if (c->magic != HTTP_MAGIC)
		fatalx("%s: bad client", __func__);
	if (c->closing) {
		buf_puts(err, "the HTTPS client is closing");
		return NULL;
	}
	if (cb == NULL || rq->url == NULL || (rq->body == NULL && rq->body_len > 0)) {
		buf_puts(err, "bad request");
		return NULL;
	}
	q = xcalloc(1, sizeof(*q));
	q->magic = HTTP_MAGIC_REQ;
	q->c = c;
	if (http_parse_url(q, rq->url, err) != 0) {
		http_req_free(q);
		return NULL;
	}
	q->cb = cb;
	q->arg = arg;
	q->method = rq->method;
	q->url = xstrdup(rq->url);
	if (rq->method == HTTP_POST) {
		q->body = xmalloc(rq->body_len + 1);
		if (rq->body_len > 0)
			memcpy(q->body, rq->body, rq->body_len);
		q->body[rq->body_len] = '\0';
		q->body_len = rq->body_len;
		/* no "Expect: 100-continue" round trip */
		q->headers = curl_slist_append(q->headers, "Expect:");
		if (rq->content_type != NULL) {
			struct buf h = BUF_INIT;

			buf_printf(&h, "Content-Type: %s", rq->content_type);
			q->headers = curl_slist_append(q->headers, buf_cstr(&h));
			buf_free(&h);
		}
	}
	for (i = 0; rq->headers != NULL && rq->headers[i] != NULL; i++)
		q->headers = curl_slist_append(q->headers, rq->headers[i]);
	if (rq->ca_file != NULL && rq->ca_file[0] != '\0')
		q->ca_file = xstrdup(rq->ca_file);
	q->max_size = rq->max_size ? rq->max_size : HTTP_DEFAULT_MAX_SIZE;
	q->timeout_ms = rq->timeout_ms ? rq->timeout_ms : HTTP_DEFAULT_TIMEOUT_MS;
	q->started = uv_now(c->loop);
	TAILQ_INSERT_TAIL(&c->reqs, q, entry);
	c->nreqs++;
	/* even a literal goes through the resolver: the callback is then
	 * always from the loop, never from inside http_start */
	{
		struct conf_hostport hp = { .host = q->host, .port = (uint16_t)q->port };

		q->dq = dns_lookup_hosts(c->dns, &hp, 1, http_on_resolved, q);
	}
	return q;
}

void
http_cancel(struct http_req *q)
{
	struct http_client *c = q->c;

	if (q->magic != HTTP_MAGIC_REQ)
		fatalx("%s: bad request", __func__);
	TAILQ_REMOVE(&c->reqs, q, entry);
	c->nreqs--;
	http_req_free(q);
}

size_t
http_pending(const struct http_client *c)
{
	return c->nreqs;
}

size_t
http_waiting(const struct http_client *c)
{
	return c->nready;
}

/* ------------------------------------------------------------------ */
/* curl on the loop. */

/* Finished transfers: their callbacks. */
static void
http_check_done(struct http_client *c)
{
	struct http_req *q;
	CURLMsg *msg;
	CURLcode rc;
	char *ip = NULL, *ct = NULL;
	int left;

	while (!c->closing && (msg = curl_multi_info_read(c->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		rc = msg->data.result;
		q = NULL;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&q);
		if (q == NULL || q->magic != HTTP_MAGIC_REQ)
			fatalx("%s: transfer of a bad request", __func__);
		if (curl_easy_getinfo(q->easy, CURLINFO_PRIMARY_IP, &ip) == CURLE_OK && ip != NULL)
			snprintf(q->res.ip, sizeof(q->res.ip), "%s", ip);
		if (rc == CURLE_OK) {
			curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &q->res.status);
			if (curl_easy_getinfo(q->easy, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK &&
			    ct != NULL)
				snprintf(q->res.content_type, sizeof(q->res.content_type), "%s", ct);
			q->res.err = HTTP_OK;
			http_finish(q);
			continue;
		}
		switch (rc) {
		case CURLE_OPERATION_TIMEDOUT:
			q->res.err = HTTP_E_TIMEOUT;
			break;
		case CURLE_COULDNT_RESOLVE_HOST:
			q->res.err = HTTP_E_RESOLVE;
			break;
		case CURLE_COULDNT_CONNECT:
			q->res.err = HTTP_E_CONNECT;
			break;
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_CIPHER:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_ISSUER_ERROR:
			q->res.err = HTTP_E_TLS;
			break;
		case CURLE_FILESIZE_EXCEEDED:
			q->res.err = HTTP_E_TOO_BIG;
			break;
		default:
			q->res.err = q->too_big ? HTTP_E_TOO_BIG : HTTP_E_OTHER;
			break;
		}
		if (q->res.err == HTTP_E_TOO_BIG)
			snprintf(q->res.error, sizeof(q->res.error),
			    "response body larger than %zu bytes", q->max_size);
		else
			snprintf(q->res.error, sizeof(q->res.error), "%s",
			    q->errbuf[0] != '\0' ? q->errbuf : curl_easy_strerror(rc));
		q->res.status = 0;
		buf_reset(&q->res.body);
		http_finish(q);
	}
}

static void
http_on_poll(uv_poll_t *h, int status, int events)
{
	struct http_sock *hs = h->data;
	struct http_client *c = hs->c;
	curl_socket_t fd = hs->fd;      /* hs may be closed inside socket_action */
	int flags = 0, running;

	if (status < 0)
		flags = CURL_CSELECT_ERR;
	else {
		if (events & UV_READABLE)
			flags |= CURL_CSELECT_IN;
		if (events & UV_WRITABLE)
			flags |= CURL_CSELECT_OUT;
	}
	curl_multi_socket_action(c->multi, fd, flags, &running);
	http_check_done(c);
}

static void
http_on_timeout(uv_timer_t *t)
{
	struct http_client *c = t->data;
	int running;

	curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	http_check_done(c);
}

static void
http_maybe_done(struct http_client *c)
{
	void (*done)(void *);

	if (!c->closing || c->nclosing > 0)
		return;
	done = c->done;
	if (done != NULL)
		done(c->done_arg);
	c->magic = 0;
	free(c);
}

static void
http_sock_closed(uv_handle_t *h)
{
	struct http_sock *hs = h->data;
	struct http_client *c = hs->c;

	free(hs);
	c->nclosing--;
	http_maybe_done(c);
}

static void
http_sock_close(struct http_sock *hs)
{
	LIST_REMOVE(hs, entry);
	uv_poll_stop(&hs->poll);
	hs->c->nclosing++;
	uv_close((uv_handle_t *)&hs->poll, http_sock_closed);
}

/* CURLMOPT_SOCKETFUNCTION: watch s for what curl wants, or stop. */
static int
http_on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct http_client *c = userp;
	struct http_sock *hs = socketp;
	int events = 0;

	if (what == CURL_POLL_REMOVE) {
		if (hs != NULL) {
			if (!c->closing)
				curl_multi_assign(c->multi, s, NULL);
			http_sock_close(hs);
		}
		return 0;
	}
	if (hs == NULL) {
		hs = xcalloc(1, sizeof(*hs));
		hs->c = c;
		hs->fd = s;
		if (uv_poll_init_socket(c->loop, &hs->poll, s) != 0) {
			free(hs);
			return -1;
		}
		hs->poll.data = hs;
		LIST_INSERT_HEAD(&c->socks, hs, entry);
		curl_multi_assign(c->multi, s, hs);
	}
	if (what & CURL_POLL_IN)
		events |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	if (uv_poll_start(&hs->poll, events, http_on_poll) != 0)
		return -1;
	return 0;
}

/* CURLMOPT_TIMERFUNCTION: wake curl in timeout_ms (-1: never). */
static int
http_on_timer(CURLM *m, long timeout_ms, void *userp)
{
	struct http_client *c = userp;

	if (timeout_ms < 0)
		uv_timer_stop(&c->timer);
	else
		uv_timer_start(&c->timer, http_on_timeout, (uint64_t)timeout_ms, 0);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Life cycle. */

static uv_once_t http_once = UV_ONCE_INIT;
static CURLcode http_global_rc;

static void
http_global_init(void)
{
	http_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct http_client *
http_new(uv_loop_t *loop, struct dns_resolver *dns, struct buf *err)
{
	struct http_client *c;

	uv_once(&http_once, http_global_init);
	if (http_global_rc != CURLE_OK) {
		buf_printf(err, "libcurl: %s", curl_easy_strerror(http_global_rc));
		return NULL;
	}
	c = xcalloc(1, sizeof(*c));
	if ((c->multi = curl_multi_init()) == NULL) {
		buf_puts(err, "libcurl: curl_multi_init failed");
		free(c);
		return NULL;
	}
	c->magic = HTTP_MAGIC;
	c->loop = loop;
	c->dns = dns;
	TAILQ_INIT(&c->reqs);
	TAILQ_INIT(&c->ready);
	LIST_INIT(&c->socks);
	uv_timer_init(loop, &c->timer);
	c->timer.data = c;
	uv_timer_init(loop, &c->kick);
	c->kick.data = c;
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, http_on_socket);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, http_on_timer);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)HTTP_MAX_CONNS);
	curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)HTTP_MAX_CONNS);
	return c;
}

static void
http_timer_closed(uv_handle_t *h)
{
	struct http_client *c = h->data;

	c->nclosing--;
	http_maybe_done(c);
}

void
http_close(struct http_client *c, void (*done)(void *arg), void *arg)
{
	struct http_req *q;

	if (c->magic != HTTP_MAGIC || c->closing)
		fatalx("%s: bad client or closed twice", __func__);
	while ((q = TAILQ_FIRST(&c->reqs)) != NULL)
		http_cancel(q);
	c->closing = true;      /* no curl call from our callbacks from now on */
	c->done = done;
	c->done_arg = arg;
	/* the cleanup closes curl's idle connections: their sockets are removed */
	curl_multi_cleanup(c->multi);
	c->multi = NULL;
	while (!LIST_EMPTY(&c->socks))
		http_sock_close(LIST_FIRST(&c->socks));
	uv_timer_stop(&c->timer);
	c->nclosing++;
	uv_close((uv_handle_t *)&c->timer, http_timer_closed);
	c->nclosing++;
	uv_close((uv_handle_t *)&c->kick, http_timer_closed);
}
