/*
 * metrics_http.c - the HTTP side of the metrics endpoint: libmicrohttpd in
 * its external-event-loop mode, driven by the relay's libuv loop.  MHD's
 * epoll descriptor sits on a uv_poll; MHD_get_timeout() sets a uv_timer;
 * both call MHD_run(), which never blocks in this mode.  MHD parses the
 * requests and bounds them: METRICS_MAX_CONN connections, METRICS_MEM
 * bytes of request per connection (a larger one is refused by MHD with a
 * 431/413 and closed), METRICS_IDLE_S seconds of silence.  Only GET
 * /metrics is answered with a scrape; other paths get 404, other methods
 * 405.  Owns the MHD daemon and its two handles; never writes anything
 * but its answers.
 */
#include "metrics/metrics.h"

#include <microhttpd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "conf/conf.h"

#define METRICS_MAGIC     0x4d455452u     /* "METR" */
#define METRICS_MAX_CONN  8u
#define METRICS_MEM       (16u * 1024u)
#define METRICS_IDLE_S    10u
#define METRICS_CTYPE     "text/plain; version=0.0.4; charset=utf-8"

struct metrics {
	uint32_t magic;
	struct metrics_source src;
	struct MHD_Daemon *d;
	uv_poll_t poll;                 /* MHD's epoll descriptor */
	uv_timer_t timer;               /* MHD_get_timeout() */
	int nclosing;                   /* handles whose close callback is due */
	struct buf body;                /* the last scrape, reused */
	struct buf log;                 /* MHD's last complaint (start-up errors) */
};

static void metrics_run(struct metrics *m);

/* Its socket, MHD's epoll, the connections, and one over the limit that MHD
 * accepts only to close it. */
uint64_t
metrics_fd_need(const struct conf *c)
{
	return c->metrics_listen == NULL ? 0 : 2 + METRICS_MAX_CONN + 1;
}

static void
metrics_mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct metrics *m = cls;

	buf_reset(&m->log);
	buf_vprintf(&m->log, fmt, ap);
	while (m->log.len > 0 && m->log.data[m->log.len - 1] == '\n')
		buf_truncate(&m->log, m->log.len - 1);
}

static enum MHD_Result
metrics_answer(struct MHD_Connection *conn, unsigned status, const char *body, size_t len,
    const char *ctype)
{
	struct MHD_Response *resp;
	enum MHD_Result rc;

	resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET");
	rc = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return rc;
}

/* MHD's access handler: the first call (headers read) answers at once. */
static enum MHD_Result
metrics_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
    const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	static const char nf[] = "not found: try /metrics\n";
	static const char na[] = "method not allowed: GET only\n";
	struct metrics *m = cls;
	struct metrics_snapshot snap;

	if (m->magic != METRICS_MAGIC)
		fatalx("%s: bad metrics", __func__);
	if (*con_cls != NULL) {         /* answered already; drop any body */
		*upload_size = 0;
		return MHD_YES;
	}
	*con_cls = m;
	if (strcmp(url, "/metrics") != 0)
		return metrics_answer(conn, MHD_HTTP_NOT_FOUND, nf, sizeof(nf) - 1, "text/plain");
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0)
		return metrics_answer(conn, MHD_HTTP_METHOD_NOT_ALLOWED, na, sizeof(na) - 1,
		    "text/plain");
	metrics_collect(&m->src, util_now_ms(), &snap);
	buf_reset(&m->body);
	metrics_format(&snap, &m->body);
	return metrics_answer(conn, MHD_HTTP_OK, m->body.data, m->body.len, METRICS_CTYPE);
}

static void
metrics_poll_cb(uv_poll_t *h, int status, int events)
{
	metrics_run(h->data);
}

static void
metrics_timer_cb(uv_timer_t *h)
{
	metrics_run(h->data);
}

static unsigned
metrics_nconn(struct metrics *m)
{
	const union MHD_DaemonInfo *i = MHD_get_daemon_info(m->d,
	    MHD_DAEMON_INFO_CURRENT_CONNECTIONS);

	return i != NULL ? i->num_connections : 0;
}

/* Let MHD do what is ready, then wake it when it next wants to (timeouts). */
static void
metrics_run(struct metrics *m)
{
	MHD_UNSIGNED_LONG_LONG to;
	unsigned before;

	if (m->magic != METRICS_MAGIC)
		fatalx("%s: bad metrics", __func__);
	/* At the connection limit MHD takes its listening socket out of its
	 * epoll set and puts it back at the start of a run: a run that closed
	 * connections is followed by another, or a client queued in the
	 * backlog would wait for an unrelated event. */
	before = metrics_nconn(m);
	MHD_run(m->d);
	if (metrics_nconn(m) < before)
		MHD_run(m->d);
	if (MHD_get_timeout(m->d, &to) == MHD_YES)
		uv_timer_start(&m->timer, metrics_timer_cb, (uint64_t)to, 0);
	else
		uv_timer_stop(&m->timer);
}

static void
metrics_free(struct metrics *m)
{
	if (m->d != NULL)
		MHD_stop_daemon(m->d);
	buf_free(&m->body);
	buf_free(&m->log);
	m->magic = 0;
	free(m);
}

int
metrics_new(uv_loop_t *loop, const char *listen, const struct metrics_source *src,
    struct metrics **out, struct buf *err)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	const union MHD_DaemonInfo *info;
	struct metrics *m;
	unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;

	*out = NULL;
	if (conf_parse_listen(listen, &ss, &sslen) == -1) {
		buf_printf(err, "metrics_listen: bad address '%s'\n", listen);
		return -1;
	}
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	m = xcalloc(1, sizeof(*m));
	m->magic = METRICS_MAGIC;
	m->src = *src;
	buf_init(&m->body);
	buf_init(&m->log);
	m->d = MHD_start_daemon(flags, 0, NULL, NULL, metrics_request, m,
	    MHD_OPTION_EXTERNAL_LOGGER, metrics_mhd_log, m,
	    /* no LISTENING_ADDRESS_REUSE: that is SO_REUSEPORT, and a second
	     * relayd on the same address would start and take half the scrapes;
	     * MHD's default (SO_REUSEADDR) still allows a quick restart */
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_MAX_CONN,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)METRICS_MEM,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_IDLE_S,
	    MHD_OPTION_END);
	if (m->d == NULL ||
	    (info = MHD_get_daemon_info(m->d, MHD_DAEMON_INFO_EPOLL_FD)) == NULL) {
		buf_printf(err, "metrics_listen: cannot listen on %s: %s\n", listen,
		    m->log.len > 0 ? buf_cstr(&m->log) : "libmicrohttpd failed");
		metrics_free(m);
		return -1;
	}
	if (uv_poll_init(loop, &m->poll, info->epoll_fd) != 0) {
		buf_printf(err, "metrics_listen: cannot poll MHD's descriptor\n");
		metrics_free(m);
		return -1;
	}
	uv_timer_init(loop, &m->timer);
	m->poll.data = m->timer.data = m;
	uv_poll_start(&m->poll, UV_READABLE, metrics_poll_cb);
	metrics_run(m);
	*out = m;
	return 0;
}

static void
metrics_closed(uv_handle_t *h)
{
	struct metrics *m = h->data;

	if (--m->nclosing == 0)
		metrics_free(m);        /* MHD closes its sockets; nothing polls them now */
}

void
metrics_close(struct metrics *m)
{
	if (m == NULL)
		return;
	if (m->magic != METRICS_MAGIC)
		fatalx("%s: bad metrics", __func__);
	m->nclosing = 2;
	uv_close((uv_handle_t *)&m->poll, metrics_closed);
	uv_close((uv_handle_t *)&m->timer, metrics_closed);
}
