/*
 * control.c - the control socket: a Unix stream socket on control_socket
 * that relayctl talks to (protocol: common/control_proto.h).  It belongs to
 * relayd's user, mode 0600, or 0660 with control_group as its group.  Accepts
 * only root, relayd's own uid and members of control_group, checked on
 * accept with SO_PEERCRED and SO_PEERGROUPS (anyone else: an answer saying
 * so, and event=control_denied).  Owns the
 * listening pipe and each client connection (closed with it, so an idle
 * client cannot hold the daemon's stop); every request is answered from
 * in-memory state, or later (struct control_later: dkim --check's DNS
 * lookups, queue show's read of the message file on the libuv thread
 * pool), so no request blocks the loop.  A client's EOF closes its
 * connection and drops a request still to be answered (a client that shuts
 * its writing side before the answer looks like one that has gone; relayctl
 * does not).  At most CONTROL_MAX_CONN connections are open at once; one
 * more is answered "busy" and closed at once (event=control_busy); one whose
 * request has not come within CONTROL_REQUEST_MS is closed
 * (event=control_timeout).  Never unlinks anything at control_socket but a
 * socket.
 */
#include "daemon/relay.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/control_cmds.h"
#include "common/control_proto.h"
#include "common/log.h"
#include "common/util.h"
#include "router/router.h"
#include "sandbox/sandbox.h"

#define CONTROL_MAGIC 0xc0de0001U
#define CONTROL_CONN_MAGIC 0xc0de0002U

/*
 * Client connections open at once.  Each holds a descriptor until it is
 * answered, and a client may connect and send nothing for as long as it
 * likes; so they are capped (as Postfix caps a service's clients), and
 * relayd counts them in the descriptors it needs (control_fd_need(),
 * daemon/DESCRIPTORS.md).  relayctl opens one per command and closes it
 * with the answer: 16 leaves room for scripts running a few side by side.
 */
#define CONTROL_MAX_CONN 16

/*
 * A client has this long from its connection to send its whole request
 * (relayctl sends it at once), or it is closed (event=control_timeout): one
 * that connects and says nothing would otherwise hold its slot for ever,
 * and sixteen of them would shut out every relayctl.  The answer has no
 * deadline: an administrator may page through `queue list` for as long as
 * it takes.  A sweep (control_sweep) looks once a second while a
 * connection waits for its request.
 */
#define CONTROL_REQUEST_MS 10000
#define CONTROL_SWEEP_MS   1000

struct control_conn;

struct control {
	uint32_t magic;
	struct relay *relay;
	uv_pipe_t pipe;
	char *path;
	uid_t owner;                /* relayd's user: the socket's owner */
	gid_t group;                /* control_group's gid, if has_group */
	bool has_group;
	TAILQ_HEAD(, control_conn) conns;   /* open client connections */
	unsigned nconns;                    /* how many: at most CONTROL_MAX_CONN */
	uv_timer_t sweep;                   /* closes clients past CONTROL_REQUEST_MS */
	uint64_t request_ms;                /* CONTROL_REQUEST_MS (a test hook sets it) */
	int nhandles;                       /* pipe and sweep: freed when both are closed */
};

struct control_conn {
	uint32_t magic;
	struct control *ctl;        /* NULL once closing: it may be gone */
	TAILQ_ENTRY(control_conn) entry;
	uv_pipe_t pipe;
	uv_write_t wreq;
	struct buf req;
	struct buf resp;
	bool answered;
	bool waiting;               /* on waiter: messages acknowledged, not yet queued */
	bool waited;                /* the wait is over: answer now */
	struct queue_waiter waiter;
	struct control_later later;  /* a request answering later (dkim --check, queue show) */
	uint64_t since;             /* uv_now() at its accept */
	bool requested;             /* its whole request came: no deadline any more */
	struct ucred cred;          /* the peer, as at its accept */
};

static void
conn_check(const struct control_conn *cc, const char *fn)
{
	if (cc == NULL || cc->magic != CONTROL_CONN_MAGIC)
		fatalx("%s: bad control connection", fn);
}

static void
conn_closed(uv_handle_t *h)
{
	struct control_conn *cc = h->data;

	conn_check(cc, __func__);
	buf_free(&cc->req);
	buf_free(&cc->resp);
	cc->magic = 0;
	free(cc);
}

/* Leave the control's list at once (the control may be freed before our
 * close callback runs), then close; a write in flight is cancelled first. */
static void
conn_close(struct control_conn *cc)
{
	if (cc->waiting && cc->ctl != NULL && cc->ctl->relay->router != NULL)
		router_wait_cancel(cc->ctl->relay->router, &cc->waiter);
	cc->waiting = false;
	control_later_cancel(&cc->later);
	if (cc->ctl != NULL) {
		TAILQ_REMOVE(&cc->ctl->conns, cc, entry);
		cc->ctl->nconns--;
		cc->ctl = NULL;
	}
	if (!uv_is_closing((uv_handle_t *)&cc->pipe))
		uv_close((uv_handle_t *)&cc->pipe, conn_closed);
}

static void
on_conn_written(uv_write_t *w, int status)
{
	struct control_conn *cc = w->data;

	(void)status;
	conn_check(cc, __func__);
	conn_close(cc);
}

static void
conn_answer(struct control_conn *cc, int rc, const char *code, struct buf *body)
{
	uv_buf_t b;

	buf_reset(&cc->resp);
	if (rc == 0)
		buf_puts(&cc->resp, "OK\n");
	else if (rc > 0)
		buf_puts(&cc->resp, "FAIL\n");     /* answered, not all well: exit 1 */
	else {
		/* The body is the one-line message. */
		while (body->len > 0 && body->data[body->len - 1] == '\n')
			buf_truncate(body, body->len - 1);
		buf_printf(&cc->resp, "ERR %s %s\n", code, buf_cstr(body));
		buf_reset(body);
	}
	buf_append(&cc->resp, body->data ? body->data : "", body->len);
	cc->answered = true;
	uv_read_stop((uv_stream_t *)&cc->pipe);
	b = uv_buf_init(cc->resp.data, (unsigned)cc->resp.len);
	cc->wreq.data = cc;
	if (uv_write(&cc->wreq, (uv_stream_t *)&cc->pipe, &b, 1, on_conn_written) != 0)
		conn_close(cc);
}

static void
control_stats(struct relay *r, bool json, struct buf *out)
{
	static const struct { const char *name; size_t off; } counters[] = {
		{ "connections", offsetof(struct relay_stats, connections) },
		{ "accepted", offsetof(struct relay_stats, accepted) },
		{ "rejected", offsetof(struct relay_stats, rejected) },
		{ "delivered", offsetof(struct relay_stats, delivered) },
		{ "deferred", offsetof(struct relay_stats, deferred) },
		{ "bounced", offsetof(struct relay_stats, bounced) },
		{ "expired", offsetof(struct relay_stats, expired) },
		{ "ndr_sent", offsetof(struct relay_stats, ndr_sent) },
		{ "auth_failed", offsetof(struct relay_stats, auth_failed) },
		{ "deleted", offsetof(struct relay_stats, deleted) },
	};
	uint64_t uptime = (util_now_ms() - r->stats.start_ms) / 1000;
	struct buf queue = BUF_INIT;
	char *argv[] = { "stats", NULL };
	size_t i;
	int qrc;

	qrc = control_router(r->router, 1, argv, json, &queue, NULL);
	if (json) {
		buf_printf(out, "{\"uptime_s\":%llu,\"counters\":{", (unsigned long long)uptime);
		for (i = 0; i < RELAY_ARRAY_LEN(counters); i++)
			buf_printf(out, "%s\"%s\":%llu", i ? "," : "", counters[i].name,
			    (unsigned long long)*(const uint64_t *)((const char *)&r->stats + counters[i].off));
		buf_puts(out, "}");
		if (qrc == 0 && queue.len > 0)
			buf_printf(out, ",\"queue\":%s", buf_cstr(&queue));
		buf_puts(out, "}\n");
	} else {
		char up[32];

		util_format_duration(uptime * 1000, up, sizeof(up));
		buf_printf(out, "%-14s %s\n", "uptime", up);
		for (i = 0; i < RELAY_ARRAY_LEN(counters); i++)
			buf_printf(out, "%-14s %llu\n", counters[i].name,
			    (unsigned long long)*(const uint64_t *)((const char *)&r->stats + counters[i].off));
		if (qrc == 0 && queue.len > 0) {
			buf_putc(out, '\n');
			buf_append(out, queue.data, queue.len);
		}
	}
	buf_free(&queue);
}

/* The ERR code of a request's negative RELAY_E* result. */
static const char *
control_err_code(int rc)
{
	if (rc == RELAY_ENOENT)
		return CONTROL_ERR_NOTFOUND;
	if (rc == RELAY_EINVAL)
		return CONTROL_ERR_USAGE;
	return CONTROL_ERR_FAILED;
}

/* A request answering later has its answer. */
static void
conn_later_done(void *arg, int rc, struct buf *out)
{
	struct control_conn *cc = arg;

	conn_check(cc, __func__);
	cc->later.pending = NULL;
	conn_answer(cc, rc, control_err_code(rc), out);
}

/* cmd: argv's row (NULL: none) and consumed its words; argv ends with NULL,
 * --json taken off into json. */
static void
control_dispatch(struct control_conn *cc, const struct control_cmd *cmd, int consumed,
    int argc, char **argv, bool json)
{
	struct relay *r = cc->ctl->relay;
	struct buf out = BUF_INIT;
	int rc = 0;
	const char *code = CONTROL_ERR_FAILED;

	if (argc == 0) {
		rc = RELAY_EINVAL;
		code = CONTROL_ERR_USAGE;
		buf_puts(&out, "empty request");
	} else if (cmd != NULL && cmd->id == CONTROL_CMD_STATS && argc == 1) {
		control_stats(r, json, &out);
	} else if (cmd != NULL && cmd->id == CONTROL_CMD_RELOAD && argc == 1) {
		struct buf err = BUF_INIT;
		if (relay_reload(r, &err) == 0) {
			if (json)
				buf_puts(&out, "{\"reloaded\":true}\n");
			else
				buf_puts(&out, "configuration reloaded\n");
		} else {
			rc = RELAY_EINVAL;
			buf_printf(&out, "configuration rejected, old one kept: %s", buf_cstr(&err));
			/* Keep it one line. */
			for (size_t k = 0; k < out.len; k++)
				if (out.data[k] == '\n')
					out.data[k] = ';';
		}
		buf_free(&err);
	} else if (cmd != NULL && (cmd->id == CONTROL_CMD_AUTH_LIST ||
	    cmd->id == CONTROL_CMD_AUTH_UNBLOCK)) {
		rc = control_auth(r->submit, cmd, argc - consumed, argv + consumed, json, &out);
		code = control_err_code(rc);
	} else {
		cc->later.done = conn_later_done;
		cc->later.arg = cc;
		cc->later.loop = cc->pipe.loop;
		rc = control_router(r->router, argc, argv, json, &out, &cc->later);
		if (rc == CONTROL_LATER) {
			buf_free(&out);
			return;
		}
		code = control_err_code(rc);
	}
	conn_answer(cc, rc, code, &out);
	buf_free(&out);
}

static void conn_resume(void *arg);

static void
conn_try_request(struct control_conn *cc)
{
	char *argv[CONTROL_MAX_ARGS + 1];
	const struct control_cmd *cmd;
	bool json = false;
	int argc = 0, j, k, consumed;
	size_t i = 0;

	/* Complete when it ends in "\0\0" (or is the lone "\0" of an empty request). */
	if (cc->req.len == 0 || cc->req.data[cc->req.len - 1] != '\0')
		return;
	if (!(cc->req.len == 1 || cc->req.data[cc->req.len - 2] == '\0'))
		return;
	cc->requested = true;
	while (i < cc->req.len && cc->req.data[i] != '\0') {
		if (argc == CONTROL_MAX_ARGS) {
			struct buf m = BUF_INIT;
			buf_puts(&m, "too many arguments");
			conn_answer(cc, RELAY_EINVAL, CONTROL_ERR_USAGE, &m);
			buf_free(&m);
			return;
		}
		argv[argc++] = cc->req.data + i;
		i += strlen(cc->req.data + i) + 1;
	}
	argv[argc] = NULL;
	for (k = j = 0; k < argc; k++) {
		if (strcmp(argv[k], "--json") == 0)
			json = true;
		else
			argv[j++] = argv[k];
	}
	argc = j;
	argv[argc] = NULL;
	cmd = control_cmd_match(argc, argv, &consumed);
	/*
	 * A client may have its 250 a moment before the scheduler has the
	 * message (queue/QUEUE.md): answer once those are in, so that relayctl
	 * sees every message a client was told is queued.  The row's wait
	 * (common/control_cmds.c) says whether the records and removals issued
	 * before the request must be written too: only for a command that
	 * reads them from the files or needs the queue quiet (queue show,
	 * queue delete); after a mass deferral the writer has up to a million
	 * to append, seconds of work.  A request that names no row is answered
	 * at once.
	 */
	if (!cc->waited && cmd != NULL && cc->ctl->relay->router != NULL) {
		bool (*wait)(struct router *, struct queue_waiter *) =
		    cmd->wait == CONTROL_WAIT_RECORDS ? router_wait_acked : router_wait_published;

		cc->waiter.cb = conn_resume;
		cc->waiter.arg = cc;
		if (!wait(cc->ctl->relay->router, &cc->waiter)) {
			cc->waiting = true;
			return;
		}
	}
	control_dispatch(cc, cmd, consumed, argc, argv, json);
}

static void
conn_resume(void *arg)
{
	struct control_conn *cc = arg;

	conn_check(cc, __func__);
	cc->waiting = false;
	cc->waited = true;
	if (cc->ctl != NULL && !cc->answered)
		conn_try_request(cc);
}

static void
conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct control_conn *cc = h->data;

	(void)suggested;
	buf_reserve(&cc->req, 4096);
	b->base = cc->req.data + cc->req.len;
	b->len = cc->req.cap - cc->req.len - 1;
}

static void
conn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct control_conn *cc = s->data;

	(void)b;
	conn_check(cc, __func__);
	if (cc->answered || cc->ctl == NULL)
		return;
	if (nread < 0) {
		conn_close(cc);
		return;
	}
	if (cc->waiting || cc->later.pending != NULL)
		return;                  /* the request is whole: anything more is noise */
	cc->req.len += (size_t)nread;
	cc->req.data[cc->req.len] = '\0';
	if (cc->req.len > CONTROL_MAX_REQUEST) {
		struct buf m = BUF_INIT;
		buf_puts(&m, "request too large");
		conn_answer(cc, RELAY_EINVAL, CONTROL_ERR_USAGE, &m);
		buf_free(&m);
		return;
	}
	conn_try_request(cc);
}

/* Is gid among the peer's groups (its gid and supplementary groups at connect)?
 * SO_PEERGROUPS needs neither /proc nor the group database. */
static bool
control_peer_in_group(uv_os_fd_t fd, const struct ucred *cred, gid_t gid)
{
	gid_t small[64], *groups = small;
	socklen_t len = sizeof(small);
	bool found = false;
	size_t i;

	if (cred->gid == gid)
		return true;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) != 0) {
		if (errno != ERANGE)
			return false;
		groups = xcalloc(1, len);       /* len is what it needs */
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) != 0)
			len = 0;
	}
	for (i = 0; !found && i < len / sizeof(gid_t); i++)
		found = groups[i] == gid;
	if (groups != small)
		free(groups);
	return found;
}

/* The peer's credentials into cred (left as they were when they cannot be
 * had); its descriptor, or -1. */
static int
control_peer_cred(uv_pipe_t *p, struct ucred *cred)
{
	socklen_t len = sizeof(*cred);
	uv_os_fd_t fd;

	if (uv_fileno((uv_handle_t *)p, &fd) != 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) != 0)
		return -1;
	return fd;
}

/* An event about a client (control_denied, _busy, _timeout): begun with
 * its uid and pid; the caller adds what else it says and ends it. */
static void
control_log_peer(struct log_line *l, const char *event, const struct ucred *cred)
{
	log_begin(l, LOG_WARNING, event);
	log_kvu(l, "uid", (uint64_t)cred->uid);
	log_kvi(l, "pid", (int64_t)cred->pid);
}

/* Root, relayd's own uid (and the socket's owner), or a control_group member. */
static bool
control_peer_allowed(struct control *c, uv_pipe_t *p, struct ucred *cred)
{
	int fd = control_peer_cred(p, cred);

	if (fd < 0)
		return false;
	if (cred->uid == 0 || cred->uid == geteuid() || cred->uid == c->owner)
		return true;
	return c->has_group && control_peer_in_group(fd, cred, c->group);
}

static void
control_busy_closed(uv_handle_t *h)
{
	free(h);
}

/*
 * One connection over CONTROL_MAX_CONN: accepted only to be told so.  The
 * answer is written without waiting (a few bytes into an empty socket
 * buffer; a client that cannot take them gets nothing) and the descriptor
 * closed before the next connection is accepted, so a flood of clients
 * holds at most one more.
 */
static void
control_refuse_busy(struct control *c, uv_stream_t *server)
{
	static const char msg[] = "ERR " CONTROL_ERR_BUSY " too many control connections "
	    "open: try again\n";
	uv_pipe_t *p = xcalloc(1, sizeof(*p));
	struct ucred cred = { .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
	struct log_line l;
	uv_buf_t b = uv_buf_init((char *)msg, sizeof(msg) - 1);

	uv_pipe_init(server->loop, p, 0);
	if (uv_accept(server, (uv_stream_t *)p) == 0) {
		(void)control_peer_cred(p, &cred);
		(void)uv_try_write((uv_stream_t *)p, &b, 1);
		control_log_peer(&l, "control_busy", &cred);
		log_kvu(&l, "connections", c->nconns);
		log_end(&l);
	}
	uv_close((uv_handle_t *)p, control_busy_closed);
}

/* Clients whose request has not come within c->request_ms are closed. */
static void
control_sweep(uv_timer_t *t)
{
	struct control *c = t->data;
	struct control_conn *cc, *next;
	uint64_t now = uv_now(t->loop);
	bool waiting = false;

	for (cc = TAILQ_FIRST(&c->conns); cc != NULL; cc = next) {
		struct log_line l;

		next = TAILQ_NEXT(cc, entry);
		if (cc->requested)
			continue;
		if (now - cc->since < c->request_ms) {
			waiting = true;
			continue;
		}
		control_log_peer(&l, "control_timeout", &cc->cred);
		log_kvu(&l, "after_ms", now - cc->since);
		log_end(&l);
		conn_close(cc);
	}
	if (!waiting)
		uv_timer_stop(t);
}

static void
on_control_connection(uv_stream_t *server, int status)
{
	struct control *c = server->data;
	struct control_conn *cc;

	if (status != 0)
		return;
	if (c->magic != CONTROL_MAGIC)
		fatalx("%s: bad control", __func__);
	if (c->nconns >= CONTROL_MAX_CONN) {
		control_refuse_busy(c, server);
		return;
	}
	cc = xcalloc(1, sizeof(*cc));
	cc->magic = CONTROL_CONN_MAGIC;
	cc->ctl = c;
	cc->since = uv_now(server->loop);
	cc->cred = (struct ucred){ .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
	TAILQ_INSERT_TAIL(&c->conns, cc, entry);
	c->nconns++;
	uv_pipe_init(server->loop, &cc->pipe, 0);
	cc->pipe.data = cc;
	if (uv_accept(server, (uv_stream_t *)&cc->pipe) != 0) {
		conn_close(cc);
		return;
	}
	if (!control_peer_allowed(c, &cc->pipe, &cc->cred)) {
		struct buf m = BUF_INIT;
		struct log_line l;

		control_log_peer(&l, "control_denied", &cc->cred);
		log_end(&l);
		buf_puts(&m, "permission denied: only root, relayd's user and members of "
		    "control_group may use the control socket");
		conn_answer(cc, RELAY_EPERM, CONTROL_ERR_PERM, &m);
		buf_free(&m);
		return;
	}
	if (uv_read_start((uv_stream_t *)&cc->pipe, conn_alloc, conn_read) != 0) {
		conn_close(cc);
		return;
	}
	if (!uv_is_active((uv_handle_t *)&c->sweep))
		(void)uv_timer_start(&c->sweep, control_sweep, CONTROL_SWEEP_MS, CONTROL_SWEEP_MS);
}

static void
control_closed(uv_handle_t *h)
{
	struct control *c = h->data;

	if (--c->nhandles > 0)
		return;
	free(c->path);
	c->magic = 0;
	free(c);
}

/* Is something already answering on path? */
static bool
control_path_live(const char *path)
{
	struct sockaddr_un sun;
	int fd, rc;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
	close(fd);
	return rc == 0;
}

/*
 * Give the socket to relayd's user (started as root, before the privilege
 * drop) and to control_group with mode 0660, or keep it 0600.  The socket is
 * born 0600 and root's, so nobody else can connect meanwhile.  The user's
 * uid comes from the sandbox, which resolved it before Landlock closed the
 * password database.  0 or -1.
 */
static int
control_set_owner(struct control *c, const struct conf *conf, const struct sandbox *sb,
    struct buf *err)
{
	uid_t uid = (uid_t)-1;
	gid_t gid = (gid_t)-1;
	mode_t mode = 0600;

	c->owner = geteuid();
	if (sandbox_switches(sb))
		uid = c->owner = sandbox_uid(sb);
	if (conf->control_group != NULL) {
		gid = c->group = conf->control_gid;
		c->has_group = true;
		mode = 0660;
	}
	if ((uid != (uid_t)-1 || gid != (gid_t)-1) && chown(c->path, uid, gid) != 0) {
		buf_printf(err, "control_socket %s: cannot give it to %s%s%s: %s\n", c->path,
		    uid != (uid_t)-1 ? conf->user : "", gid != (gid_t)-1 ? ":" : "",
		    gid != (gid_t)-1 ? conf->control_group : "", strerror(errno));
		return -1;
	}
	if (chmod(c->path, mode) != 0) {
		buf_printf(err, "control_socket %s: chmod: %s\n", c->path, strerror(errno));
		return -1;
	}
	return 0;
}

int
control_new(struct relay *r, const char *path, struct control **out, struct buf *err)
{
	struct control *c;
	struct stat st;
	mode_t old;
	int rc;

	if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		buf_printf(err, "control_socket: path too long: %s\n", path);
		return -1;
	}
	if (control_path_live(path)) {
		buf_printf(err, "control_socket %s: another relayd is running\n", path);
		return -1;
	}
	/* A stale socket from a crash is replaced; anything else is not ours. */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			buf_printf(err, "control_socket %s: exists and is not a socket\n", path);
			return -1;
		}
		unlink(path);
	}
	c = xcalloc(1, sizeof(*c));
	c->magic = CONTROL_MAGIC;
	c->relay = r;
	c->path = xstrdup(path);
	TAILQ_INIT(&c->conns);
	uv_pipe_init(r->loop, &c->pipe, 0);
	c->pipe.data = c;
	uv_timer_init(r->loop, &c->sweep);
	c->sweep.data = c;
	uv_unref((uv_handle_t *)&c->sweep);     /* never keeps a stopping loop alive */
	c->nhandles = 2;
	c->request_ms = CONTROL_REQUEST_MS;
#ifdef RELAY_TEST_HOOKS
	/* RELAYD_TEST_CONTROL_REQUEST_MS=N: the request's deadline is N ms
	 * (test_control_limit: clients that say nothing are closed). */
	{
		const char *v = getenv("RELAYD_TEST_CONTROL_REQUEST_MS");

		if (v != NULL && *v != '\0')
			c->request_ms = strtoull(v, NULL, 10);
	}
#endif
	old = umask(0077);              /* the socket is born 0600 */
	rc = uv_pipe_bind(&c->pipe, path);
	umask(old);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&c->pipe, 64, on_control_connection);
	if (rc != 0)
		buf_printf(err, "control_socket %s: %s\n", path, uv_strerror(rc));
	if (rc != 0 || control_set_owner(c, r->conf, r->sandbox, err) != 0) {
		if (rc == 0)
			unlink(path);
		/* c is freed in the close callbacks if the loop runs again. */
		uv_close((uv_handle_t *)&c->pipe, control_closed);
		uv_close((uv_handle_t *)&c->sweep, control_closed);
		return -1;
	}
	*out = c;
	return 0;
}

uint64_t
control_fd_need(void)
{
	return 1 + CONTROL_MAX_CONN + 1;        /* the socket, its clients, one refused */
}

void
control_close(struct control *c)
{
	if (c->magic != CONTROL_MAGIC)
		fatalx("%s: bad control", __func__);
	while (!TAILQ_EMPTY(&c->conns))
		conn_close(TAILQ_FIRST(&c->conns));
	unlink(c->path);
	uv_close((uv_handle_t *)&c->pipe, control_closed);
	uv_close((uv_handle_t *)&c->sweep, control_closed);
}
