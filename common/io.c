/*
 * io.c - the I/O layer: one object per TCP connection, wrapping a uv_tcp_t
 * and, once TLS starts, an OpenSSL SSL over a pair of memory BIOs.  It owns
 * the socket, the timers, the SSL object and both byte buffers:
 *
 *   network -> on_read -> [rbio -> SSL_read] -> in  -> io_getline() -> owner
 *   owner -> io_write() -> out -> [SSL_write -> wbio] -> wire -> uv_write
 *
 * At most one write is in flight; output written meanwhile accumulates in
 * `wire` and goes out with the next write, so pipelined replies coalesce.
 * A write is first tried at once (uv_try_write); what the kernel does not
 * take goes to uv_write.  A write the kernel took whole still counts as in
 * flight until its completion runs from the `wdone` idle handle once the
 * loop goes on (its next idle phase; uv_write's callback would run at its
 * next pending phase): so DRAINED is never emitted from inside io_write()
 * or io_flush(), and libuv does not re-arm the socket's watcher (an
 * epoll_ctl) after each write.
 * Every TLS result goes through io_tls_status(), the one SSL_get_error switch.
 * Memory of an idle connection: TLS input is decrypted into the shared scratch
 * buffer and appended to `in`, which so grows by what arrived, not by a
 * record's room; once everything is sent the output buffers are freed
 * (OpenSSL's own record buffers go with SSL_MODE_RELEASE_BUFFERS).
 *
 * After io_close_after_drain() the owner has let go: no event reaches it any
 * more, and a failure or the drain timer frees the io by itself; an owner
 * that must know when the socket is gone asks for io_set_closed_cb()'s call,
 * made once, from the last handle's close callback.
 * io_close_now() gives the kernel what it takes at once and closes the
 * socket before it returns: a last word that holds no descriptor.
 *
 * Never: call the owner's callback after io_free() or io_close_after_drain(),
 * or after EOF/ERROR; free memory before every libuv handle's close callback
 * has run; or keep plaintext input across the start of TLS.
 */
#include "common/io.h"
#include "common/buf.h"
#include "common/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#define IO_MAGIC        0x10c0ffeeU
#define IO_READ_CHUNK   (64 * 1024)
#define IO_INPUT_CAP    (256 * 1024)   /* stop reading while this much input waits */
#define IO_OUTPUT_CAP   (1024 * 1024)  /* stop reading while this much output waits */
#define IO_DRAIN_TIMEOUT_MS 60000      /* close_after_drain bound when no timeout is set */
#define IO_SSL_CHUNK    (1 << 30)      /* SSL_read/SSL_write take an int */

enum io_tls_state { TLS_OFF, TLS_HANDSHAKE, TLS_ON };

struct io {
	uint32_t magic;
	uv_loop_t *loop;
	uv_tcp_t tcp;
	uv_timer_t timer;           /* connect timeout, then idle timeout or deadline */
	uv_timer_t kick;            /* re-delivers buffered input after io_resume() */
	uv_idle_t wdone;            /* completes a write the kernel took at once */
	uv_connect_t creq;
	uv_write_t wreq;
	int open_handles;

	io_cb *cb;
	void *arg;

	struct buf in;              /* plaintext input; consumed from in_off */
	size_t in_off;
	struct buf out;             /* plaintext output not yet encrypted/queued */
	struct buf wire;            /* bytes ready for the socket */
	struct buf sending;         /* bytes of the write in flight */

	SSL *ssl;
	BIO *rbio, *wbio;
	enum io_tls_state tls;
	long verify_result;         /* the peer certificate's check, kept at the handshake's end */

	uint64_t timeout_ms;
	uint64_t deadline;          /* loop time of the deadline, 0 = none (not moved by reads) */
	size_t max_line;
	unsigned in_cb;             /* nesting depth of owner callbacks */
	bool paused;
	bool reading;
	bool writing;
	bool discarding;            /* dropping the rest of an overlong line */
	bool eof;                   /* the peer closed; EOF reported once input is taken */
	bool failed;                /* EOF/ERROR reported: no more events */
	bool closing;
	bool close_after_drain;     /* the owner let go: no events, free when drained */
	bool connecting;
	void (*closed_cb)(void *);  /* io_set_closed_cb(): told when the handles are closed */
	void *closed_arg;
	size_t peek_max;            /* peek mode (io_set_peek): show this much, read nothing */

	enum io_error err;
	char errtext[256];
	char peer_ip[INET6_ADDRSTRLEN];
	char local_ip[INET6_ADDRSTRLEN];
	int peer_port;
	struct sockaddr_storage peer;
};

/* One read buffer for every connection of a thread's loop: a loop runs one
 * callback at a time (the delivery thread has its own loop, and buffer). */
static _Thread_local char io_scratch[IO_READ_CHUNK];

static void io_start_reading(struct io *io);
static void io_fail(struct io *io, enum io_error err, const char *text);
static void io_eof(struct io *io);
static void io_send(struct io *io);
static void io_tls_pump(struct io *io);

static void
io_check(const struct io *io, const char *fn)
{
	if (io == NULL || io->magic != IO_MAGIC)
		fatalx("%s: bad io object", fn);
}

/*
 * The one place the owner's callback is called.  Nothing after io_free(); after
 * io_close_after_drain() a failure or timeout frees the io instead; after
 * EOF/ERROR nothing more.
 */
static void
io_emit(struct io *io, enum io_event ev)
{
	if (io->closing)
		return;
	if (io->close_after_drain) {
		if (ev == IO_EV_ERROR || ev == IO_EV_TIMEOUT)
			io_free(io);
		return;
	}
	if (io->failed && ev != IO_EV_EOF && ev != IO_EV_ERROR)
		return;
	io->in_cb++;
	io->cb(io, ev, io->arg);
	io->in_cb--;
	if (!io->closing && io->in_cb == 0)
		io_flush(io);
}

struct io *
io_new(uv_loop_t *loop, io_cb *cb, void *arg)
{
	struct io *io = xcalloc(1, sizeof(*io));

	io->magic = IO_MAGIC;
	io->loop = loop;
	io->cb = cb;
	io->arg = arg;
	io->max_line = 1000;
	uv_tcp_init(loop, &io->tcp);
	uv_timer_init(loop, &io->timer);
	uv_timer_init(loop, &io->kick);
	uv_idle_init(loop, &io->wdone);
	io->tcp.data = io->timer.data = io->kick.data = io->wdone.data = io;
	io->open_handles = 4;
	return io;
}

void
io_set_callback(struct io *io, io_cb *cb, void *arg)
{
	io_check(io, __func__);
	io->cb = cb;
	io->arg = arg;
}

static void
io_fill_addresses(struct io *io)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	if (uv_tcp_getpeername(&io->tcp, (struct sockaddr *)&io->peer, &len) == 0) {
		if (io->peer.ss_family == AF_INET6) {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&io->peer;
			uv_ip6_name(s6, io->peer_ip, sizeof(io->peer_ip));
			io->peer_port = ntohs(s6->sin6_port);
		} else {
			struct sockaddr_in *s4 = (struct sockaddr_in *)&io->peer;
			uv_ip4_name(s4, io->peer_ip, sizeof(io->peer_ip));
			io->peer_port = ntohs(s4->sin_port);
		}
	}
	len = sizeof(ss);
	if (uv_tcp_getsockname(&io->tcp, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET6)
			uv_ip6_name((struct sockaddr_in6 *)&ss, io->local_ip, sizeof(io->local_ip));
		else
			uv_ip4_name((struct sockaddr_in *)&ss, io->local_ip, sizeof(io->local_ip));
	}
}

int
io_accept(struct io *io, uv_stream_t *server)
{
	io_check(io, __func__);
	if (uv_accept(server, (uv_stream_t *)&io->tcp) != 0)
		return -1;
	uv_tcp_nodelay(&io->tcp, 1);
	io_fill_addresses(io);
	io_start_reading(io);
	return 0;
}

static enum io_error
io_map_uv_error(int status)
{
	switch (status) {
	case UV_ECONNREFUSED: return IO_ERR_REFUSED;
	case UV_ETIMEDOUT: return IO_ERR_CONNECT_TIMEOUT;
	case UV_ENETUNREACH:
	case UV_EHOSTUNREACH:
	case UV_EADDRNOTAVAIL: return IO_ERR_UNREACH;
	case UV_ECONNRESET:
	case UV_EPIPE:
	case UV_ECONNABORTED: return IO_ERR_RESET;
	default: return IO_ERR_OTHER;
	}
}

static void
on_connect(uv_connect_t *req, int status)
{
	struct io *io = req->data;

	io->connecting = false;
	/* Closed (cancelled), or the connect timeout already reported an error. */
	if (io->closing || io->failed)
		return;
	uv_timer_stop(&io->timer);
	if (status != 0) {
		io_fail(io, io_map_uv_error(status), uv_strerror(status));
		return;
	}
	uv_tcp_nodelay(&io->tcp, 1);
	io_fill_addresses(io);
	io_start_reading(io);
	/* Output written while connecting goes first. */
	io_send(io);
	if (io->closing)
		return;
	if (io->close_after_drain) {
		if (!io->writing)
			io_free(io);
		return;
	}
	io_emit(io, IO_EV_CONNECTED);
}

static void
on_connect_timeout(uv_timer_t *t)
{
	struct io *io = t->data;

	if (io->connecting)
		io_fail(io, IO_ERR_CONNECT_TIMEOUT, "connection timed out");
}

int
io_connect(struct io *io, const struct sockaddr *sa, uint64_t timeout_ms)
{
	int rc;

	io_check(io, __func__);
	memcpy(&io->peer, sa, sa->sa_family == AF_INET6 ?
	    sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
	if (sa->sa_family == AF_INET6) {
		uv_ip6_name((const struct sockaddr_in6 *)sa, io->peer_ip, sizeof(io->peer_ip));
		io->peer_port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	} else {
		uv_ip4_name((const struct sockaddr_in *)sa, io->peer_ip, sizeof(io->peer_ip));
		io->peer_port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
	}
	io->creq.data = io;
	rc = uv_tcp_connect(&io->creq, &io->tcp, sa, on_connect);
	if (rc != 0) {
		io->err = io_map_uv_error(rc);
		snprintf(io->errtext, sizeof(io->errtext), "%s", uv_strerror(rc));
		return -1;
	}
	io->connecting = true;
	if (timeout_ms > 0) {
		io->timer.data = io;
		uv_timer_start(&io->timer, on_connect_timeout, timeout_ms, 0);
	}
	return 0;
}

/* ---- input ---- */

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct io *io = h->data;

	(void)suggested;
	/* peek mode: no buffer, so libuv reads nothing and says UV_ENOBUFS */
	b->base = io->peek_max > 0 ? NULL : io_scratch;
	b->len = io->peek_max > 0 ? 0 : sizeof(io_scratch);
}

static void
on_idle_timeout(uv_timer_t *t)
{
	struct io *io = t->data;

	/* io_emit() drops it after EOF/ERROR and frees a draining io. */
	io_emit(io, IO_EV_TIMEOUT);
}

/* (Re)arm the idle timer; while draining it bounds the drain (default 60 s). */
static void
io_restart_timer(struct io *io)
{
	uint64_t ms = io->timeout_ms;

	if (io->closing || io->connecting)
		return;
	if (io->deadline != 0 && !io->close_after_drain)
		return;                 /* a deadline stays where it was set */
	if (io->close_after_drain && ms == 0)
		ms = IO_DRAIN_TIMEOUT_MS;
	if (ms > 0)
		uv_timer_start(&io->timer, on_idle_timeout, ms, 0);
}

static size_t
io_in_avail(const struct io *io)
{
	return io->in.len - io->in_off;
}

static void
io_stop_reading(struct io *io)
{
	if (io->reading) {
		uv_read_stop((uv_stream_t *)&io->tcp);
		io->reading = false;
	}
}

/* Backpressure: read only while neither buffered input nor output is too big. */
static void
io_update_reading(struct io *io)
{
	bool want = !io->closing && !io->failed && !io->eof && !io->connecting &&
	    io_in_avail(io) < IO_INPUT_CAP &&
	    io->wire.len + io->sending.len < IO_OUTPUT_CAP;

	if (want && !io->reading)
		io_start_reading(io);
	else if (!want)
		io_stop_reading(io);
}

/*
 * Tell the owner about buffered input, then about a pending EOF: EOF waits
 * while the owner is paused with input still buffered (io_resume() brings
 * both), so nothing sent before the peer closed is lost.
 */
static void
io_dispatch_input(struct io *io)
{
	if (io->closing || io->failed || io->close_after_drain)
		return;
	if (!io->paused && io_in_avail(io) > 0) {
		io_emit(io, IO_EV_IN);
		if (io->closing || io->failed || io->close_after_drain)
			return;
	}
	if (io->eof) {
		if (io->paused && io_in_avail(io) > 0)
			return;
		io->failed = true;
		uv_timer_stop(&io->timer);
		io_emit(io, IO_EV_EOF);
		return;
	}
	io_update_reading(io);
}

/* The peer closed its side (FIN, or TLS close_notify). */
static void
io_eof(struct io *io)
{
	if (io->closing || io->failed || io->eof)
		return;
	io->eof = true;
	io_stop_reading(io);
	/* While draining, keep writing: the drain timer bounds it. */
	io_dispatch_input(io);
}

/*
 * Peek mode: octets wait on the socket.  Copy up to peek_max of them into
 * `in` without taking them, tell the owner, and forget the copy: the owner
 * takes what it needs with io_skip().  A peer that closed or failed is
 * reported as in normal reading.
 */
static void
io_peek_input(struct io *io)
{
	uv_os_fd_t fd;
	ssize_t n;

	if (io->close_after_drain || uv_fileno((uv_handle_t *)&io->tcp, &fd) != 0)
		return;
	if (io->paused) {
		io_stop_reading(io);    /* else the waiting octets wake the loop for ever */
		return;
	}
	buf_reset(&io->in);
	io->in_off = 0;
	buf_reserve(&io->in, io->peek_max);
	do
		n = recv(fd, io->in.data, io->peek_max, MSG_PEEK | MSG_DONTWAIT);
	while (n == -1 && errno == EINTR);
	if (n == 0) {
		io_eof(io);
		return;
	}
	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			io_fail(io, io_map_uv_error(uv_translate_sys_error(errno)), strerror(errno));
		return;
	}
	io->in.len = (size_t)n;
	io->in.data[n] = '\0';
	io_emit(io, IO_EV_IN);
	buf_reset(&io->in);
	io->in_off = 0;
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct io *io = s->data;

	if (io->closing || io->failed || io->eof)
		return;
	if (nread == 0)
		return;
	if (nread == UV_ENOBUFS && io->peek_max > 0) {
		io_peek_input(io);
		return;
	}
	if (nread < 0) {
		if (nread == UV_EOF)
			io_eof(io);
		else
			io_fail(io, io_map_uv_error((int)nread), uv_strerror((int)nread));
		return;
	}
	/* Draining: the owner is gone; input is read (so closing does not
	 * reset the connection) and dropped, and does not extend the drain. */
	if (io->close_after_drain)
		return;
	io_restart_timer(io);
	if (io->tls == TLS_OFF)
		buf_append(&io->in, b->base, (size_t)nread);
	else {
		if (BIO_write(io->rbio, b->base, (int)nread) != (int)nread)
			fatalx("%s: BIO_write failed", __func__);
		io_tls_pump(io);
		if (io->closing || io->failed || io->eof)
			return;
	}
	io_dispatch_input(io);
}

static void
io_start_reading(struct io *io)
{
	if (io->reading || io->closing)
		return;
	if (uv_read_start((uv_stream_t *)&io->tcp, on_alloc, on_read) == 0)
		io->reading = true;
	io_restart_timer(io);
}

enum io_line
io_getline(struct io *io, const char **line, size_t *len)
{
	char *start, *lf;
	size_t avail;

	io_check(io, __func__);
	/* Compact once the consumed prefix dominates, keeping io_getline O(n). */
	if (io->in_off > 0 && io->in_off >= io->in.len / 2) {
		buf_consume(&io->in, io->in_off);
		io->in_off = 0;
	}
	for (;;) {
		avail = io_in_avail(io);
		if (avail == 0)
			return IO_LINE_NONE;
		start = io->in.data + io->in_off;
		lf = memchr(start, '\n', avail);
		if (io->discarding) {
			if (lf == NULL) {
				io->in_off = io->in.len;
				return IO_LINE_NONE;
			}
			io->in_off += (size_t)(lf - start) + 1;
			io->discarding = false;
			continue;
		}
		if (lf == NULL) {
			if (avail >= io->max_line) {
				io->in_off = io->in.len;
				io->discarding = true;
				*line = start;
				*len = avail;
				return IO_LINE_LONG;
			}
			return IO_LINE_NONE;
		}
		if ((size_t)(lf - start) + 1 > io->max_line) {
			io->in_off += (size_t)(lf - start) + 1;
			*line = start;
			*len = (size_t)(lf - start) + 1;
			return IO_LINE_LONG;
		}
		*line = start;
		*len = (size_t)(lf - start) + 1;
		io->in_off += *len;
		return IO_LINE_OK;
	}
}

size_t
io_getbytes(struct io *io, size_t max, const char **p)
{
	size_t n;

	io_check(io, __func__);
	if (io->discarding)
		fatalx("%s: inside a discarded line", __func__);
	if (io->in_off > 0 && io->in_off >= io->in.len / 2) {
		buf_consume(&io->in, io->in_off);
		io->in_off = 0;
	}
	n = io_in_avail(io);
	if (n > max)
		n = max;
	*p = io->in.data + io->in_off;
	io->in_off += n;
	return n;
}

size_t
io_input_pending(const struct io *io)
{
	return io_in_avail(io);
}

void
io_set_peek(struct io *io, size_t max)
{
	io_check(io, __func__);
	if (max > 0 && (io_in_avail(io) > 0 || io->tls != TLS_OFF))
		fatalx("%s: input was read already", __func__);
	io->peek_max = max;
}

size_t
io_peek(struct io *io, const char **p)
{
	io_check(io, __func__);
	if (io->peek_max == 0)
		fatalx("%s: not in peek mode", __func__);
	*p = io->in.data;
	return io->in.len;
}

int
io_skip(struct io *io, size_t n)
{
	uv_os_fd_t fd;
	char tmp[256];
	ssize_t got;

	io_check(io, __func__);
	if (io->peek_max == 0 || n > io->in.len)
		fatalx("%s: %zu octets were not shown", __func__, n);
	if (uv_fileno((uv_handle_t *)&io->tcp, &fd) != 0)
		return -1;
	while (n > 0) {
		/* they are in the socket's buffer: the read cannot block */
		got = recv(fd, tmp, n < sizeof(tmp) ? n : sizeof(tmp), MSG_DONTWAIT);
		if (got == -1 && errno == EINTR)
			continue;
		if (got <= 0)
			return -1;
		n -= (size_t)got;
	}
	return 0;
}

void
io_set_timeout(struct io *io, uint64_t ms)
{
	io_check(io, __func__);
	io->timeout_ms = ms;
	io->deadline = 0;
	if (ms == 0) {
		if (!io->connecting)
			uv_timer_stop(&io->timer);
	} else
		io_restart_timer(io);
}

void
io_set_deadline(struct io *io, uint64_t ms)
{
	io_check(io, __func__);
	io->timeout_ms = 0;
	io->deadline = 0;
	if (io->closing || io->connecting)
		return;
	if (ms == 0) {
		uv_timer_stop(&io->timer);
		return;
	}
	io->deadline = uv_now(io->loop) + ms;
	if (!io->close_after_drain)
		uv_timer_start(&io->timer, on_idle_timeout, ms, 0);
}

uint64_t
io_deadline_left(const struct io *io)
{
	uint64_t now;

	io_check(io, __func__);
	if (io->deadline == 0)
		return 0;
	now = uv_now(io->loop);
	return io->deadline > now ? io->deadline - now : 0;
}

void
io_set_max_line(struct io *io, size_t max)
{
	io_check(io, __func__);
	io->max_line = max;
}

static void
on_kick(uv_timer_t *t)
{
	struct io *io = t->data;

	io_dispatch_input(io);
}

void
io_pause(struct io *io)
{
	io_check(io, __func__);
	io->paused = true;
}

void
io_resume(struct io *io)
{
	io_check(io, __func__);
	if (!io->paused)
		return;
	io->paused = false;
	if (io->closing || io->failed || io->close_after_drain)
		return;
	if (io_in_avail(io) > 0 || io->eof)
		uv_timer_start(&io->kick, on_kick, 0, 0);
	io_update_reading(io);
}

/* ---- TLS ---- */

/*
 * The one SSL_get_error switch.  Returns 1 when the operation completed, 0
 * when it wants more input (or output space, which memory BIOs always have),
 * -1 when TLS is over: a fatal error (io failed, owner told) or the peer's
 * close_notify (EOF, reported once the input before it has been taken).
 * Every SSL_* I/O call is preceded by ERR_clear_error(): SSL_get_error()
 * reads the thread's error queue, and a stale entry would turn WANT_READ
 * into a failure.
 */
static int
io_tls_status(struct io *io, int ret, const char *what)
{
	unsigned long e;
	char text[200];

	if (ret > 0)
		return 1;
	switch (SSL_get_error(io->ssl, ret)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return 0;
	case SSL_ERROR_ZERO_RETURN:
		/* close_notify: the peer ended TLS; treat as EOF. */
		io_eof(io);
		return -1;
	case SSL_ERROR_SYSCALL:
	case SSL_ERROR_SSL:
	default:
		e = ERR_get_error();
		if (e != 0)
			ERR_error_string_n(e, text, sizeof(text));
		else
			snprintf(text, sizeof(text), "unexpected end of stream");
		if (io->tls == TLS_HANDSHAKE)
			io->verify_result = SSL_get_verify_result(io->ssl);
		if (io->tls == TLS_HANDSHAKE && (SSL_get_verify_mode(io->ssl) & SSL_VERIFY_PEER) &&
		    SSL_get_verify_result(io->ssl) != X509_V_OK)
			snprintf(text, sizeof(text), "certificate verify failed: %s",
			    X509_verify_cert_error_string(SSL_get_verify_result(io->ssl)));
		ERR_clear_error();
		{
			char msg[256];
			snprintf(msg, sizeof(msg), "TLS %s: %s", what, text);
			io_fail(io, IO_ERR_TLS, msg);
		}
		return -1;
	}
}

/* Move whatever OpenSSL wrote into the wbio onto the wire. */
static void
io_tls_drain_wbio(struct io *io)
{
	char tmp[16384];
	int n;

	while ((n = BIO_read(io->wbio, tmp, sizeof(tmp))) > 0)
		buf_append(&io->wire, tmp, (size_t)n);
	io_send(io);
}

/* Feed ciphertext through the handshake, then decrypt application data into in. */
static void
io_tls_pump(struct io *io)
{
	int r;

	if (io->tls == TLS_HANDSHAKE) {
		ERR_clear_error();
		r = SSL_do_handshake(io->ssl);
		io_tls_drain_wbio(io);
		r = io_tls_status(io, r, "handshake");
		if (r <= 0)
			return;
		io->verify_result = SSL_get_verify_result(io->ssl);
		io->tls = TLS_ON;
		io_emit(io, IO_EV_TLS_READY);
		if (io->closing || io->failed)
			return;
		/* Plaintext written while the handshake ran goes out now. */
		io_flush(io);
	}
	for (;;) {
		/*
		 * Through the shared scratch buffer (its ciphertext is in the rbio
		 * by now), so that `in` grows by what arrived, not by a record's
		 * room: an idle session's input buffer stays a few dozen octets.
		 */
		ERR_clear_error();
		r = SSL_read(io->ssl, io_scratch, (int)sizeof(io_scratch));
		if (r > 0) {
			buf_append(&io->in, io_scratch, (size_t)r);
			continue;
		}
		io_tls_drain_wbio(io);          /* alerts, session tickets, key updates */
		if (io_tls_status(io, r, "read") <= 0)
			return;
	}
}

static int
io_tls_setup(struct io *io, SSL_CTX *ctx)
{
	if (io->tls != TLS_OFF || io->closing || io->failed || io->eof)
		return -1;
	/* Pending plaintext (the "220 Ready to start TLS" reply) goes out first. */
	io_flush(io);
	/* Anything pipelined behind STARTTLS is discarded (CVE-2011-0411). */
	buf_reset(&io->in);
	io->in_off = 0;
	io->discarding = false;
	io->ssl = SSL_new(ctx);
	if (io->ssl == NULL)
		return -1;
	io->rbio = BIO_new(BIO_s_mem());
	io->wbio = BIO_new(BIO_s_mem());
	BIO_set_mem_eof_return(io->rbio, -1);
	SSL_set_bio(io->ssl, io->rbio, io->wbio);
	/* A write retried after WANT_* may come from a moved (reallocated) out. */
	SSL_set_mode(io->ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	io->tls = TLS_HANDSHAKE;
	return 0;
}

int
io_start_tls_server(struct io *io, SSL_CTX *ctx)
{
	io_check(io, __func__);
	if (io_tls_setup(io, ctx) != 0)
		return -1;
	SSL_set_accept_state(io->ssl);
	return 0;
}

int
io_start_tls_client(struct io *io, SSL_CTX *ctx, const char *servername, bool verify)
{
	return io_start_tls_client_check(io, ctx, servername, verify, verify);
}

int
io_start_tls_client_check(struct io *io, SSL_CTX *ctx, const char *servername, bool check,
    bool verify)
{
	io_check(io, __func__);
	if (io_tls_setup(io, ctx) != 0)
		return -1;
	SSL_set_connect_state(io->ssl);
	if (servername != NULL && *servername != '\0') {
		SSL_set_tlsext_host_name(io->ssl, servername);
		if (check || verify) {
			SSL_set_hostflags(io->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
			if (SSL_set1_host(io->ssl, servername) != 1)
				return -1;
		}
	}
	SSL_set_verify(io->ssl, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	/* Send the ClientHello now. */
	io_tls_pump(io);
	return 0;
}

/*
 * DANE (RFC 7671, RFC 7672) through OpenSSL's DANE API: the peer must match
 * one of the usable records; DANE-EE(3) skips name checks, DANE-TA(2) needs
 * the name to match basedomain (the MX host).  The context's trust store is
 * not used (no PKIX usages are passed).
 */
int
io_start_tls_client_dane(struct io *io, SSL_CTX *ctx, const char *basedomain,
    const struct tlsa_rr *tlsa, size_t ntlsa)
{
	size_t i, usable = 0;

	io_check(io, __func__);
	if (basedomain == NULL || *basedomain == '\0' || ntlsa == 0)
		return -1;
	/* once per context; later calls find it enabled */
	if (SSL_CTX_dane_enable(ctx) <= 0)
		return -1;
	if (io_tls_setup(io, ctx) != 0)
		return -1;
	SSL_set_connect_state(io->ssl);
	SSL_set_tlsext_host_name(io->ssl, basedomain);
	if (SSL_dane_enable(io->ssl, basedomain) <= 0)
		return -1;
	SSL_dane_set_flags(io->ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
	SSL_set_hostflags(io->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	for (i = 0; i < ntlsa; i++)
		if (SSL_dane_tlsa_add(io->ssl, tlsa[i].usage, tlsa[i].selector, tlsa[i].mtype,
		    tlsa[i].data, tlsa[i].len) > 0)
			usable++;
	ERR_clear_error();      /* a malformed record leaves its reason queued */
	if (usable == 0)
		return -1;
	SSL_set_verify(io->ssl, SSL_VERIFY_PEER, NULL);
	io_tls_pump(io);
	return 0;
}

bool
io_is_tls(const struct io *io)
{
	return io->tls == TLS_ON;
}

const char *
io_tls_version(const struct io *io)
{
	return io->tls == TLS_ON ? SSL_get_version(io->ssl) : NULL;
}

const char *
io_tls_cipher(const struct io *io)
{
	return io->tls == TLS_ON ? SSL_get_cipher_name(io->ssl) : NULL;
}

int
io_tls_cipher_bits(const struct io *io)
{
	int alg = 0;

	if (io->tls != TLS_ON)
		return 0;
	return SSL_get_cipher_bits(io->ssl, &alg);
}

long
io_tls_verify_result(const struct io *io)
{
	return io->verify_result;
}

const char *
io_tls_error(const struct io *io)
{
	return io->err == IO_ERR_TLS ? io->errtext : NULL;
}

/* ---- output ---- */

/* The write in flight is over (status 0: all of `sending` is in the kernel). */
static void
io_write_done(struct io *io, int status)
{
	io->writing = false;
	buf_reset(&io->sending);
	if (io->closing)
		return;
	if (status != 0) {
		io_fail(io, io_map_uv_error(status), uv_strerror(status));   /* frees a draining io */
		return;
	}
	if (io->wire.len > 0) {
		io_send(io);
		if (!io->closing)
			io_update_reading(io);
		return;
	}
	/* All sent: an idle connection holds no output buffers (like
	 * SSL_MODE_RELEASE_BUFFERS); the next reply allocates again. */
	buf_free(&io->sending);
	buf_free(&io->wire);
	if (io->out.len == 0)
		buf_free(&io->out);
	if (io->close_after_drain) {
		io_free(io);
		return;
	}
	io_update_reading(io);
	if (io->out.len == 0)
		io_emit(io, IO_EV_DRAINED);
}

static void
on_write(uv_write_t *req, int status)
{
	io_write_done(req->data, status);
}

/* A write the kernel took whole, once the loop has gone on. */
static void
on_write_now(uv_idle_t *h)
{
	struct io *io = h->data;

	uv_idle_stop(&io->wdone);
	io_write_done(io, 0);
}

static void
io_send(struct io *io)
{
	struct buf tmp;
	uv_buf_t b;
	int rc;

	if (io->writing || io->wire.len == 0 || io->closing || io->connecting)
		return;
	/* Swap: wire becomes the in-flight buffer, which stays put until the
	 * write is done. */
	tmp = io->sending;
	io->sending = io->wire;
	io->wire = tmp;
	buf_reset(&io->wire);
	b = uv_buf_init(io->sending.data, (unsigned)io->sending.len);
	/* Errors and EAGAIN are left to uv_write, which reports them later. */
	rc = uv_try_write((uv_stream_t *)&io->tcp, &b, 1);
	if (rc >= 0 && (size_t)rc == b.len) {
		io->writing = true;
		uv_idle_start(&io->wdone, on_write_now);
		return;
	}
	if (rc > 0) {
		b.base += rc;
		b.len -= (unsigned)rc;
	}
	io->wreq.data = io;
	rc = uv_write(&io->wreq, (uv_stream_t *)&io->tcp, &b, 1, on_write);
	if (rc != 0) {
		buf_reset(&io->sending);
		io_fail(io, io_map_uv_error(rc), uv_strerror(rc));
		return;
	}
	io->writing = true;
}

void
io_write(struct io *io, const void *p, size_t len)
{
	io_check(io, __func__);
	if (io->closing || io->failed)
		return;
	buf_append(&io->out, p, len);
	if (io->in_cb == 0)
		io_flush(io);
}

void
io_printf(struct io *io, const char *fmt, ...)
{
	va_list ap;

	io_check(io, __func__);
	if (io->closing || io->failed)
		return;
	va_start(ap, fmt);
	buf_vprintf(&io->out, fmt, ap);
	va_end(ap);
	if (io->in_cb == 0)
		io_flush(io);
}

size_t
io_output_pending(const struct io *io)
{
	return io->out.len + io->wire.len + io->sending.len;
}

void
io_flush(struct io *io)
{
	size_t off = 0, n;
	int r = 1;

	io_check(io, __func__);
	if (io->closing)
		return;
	if (io->out.len > 0 && io->tls == TLS_OFF) {
		buf_append(&io->wire, io->out.data, io->out.len);
		buf_reset(&io->out);
	} else if (io->out.len > 0 && io->tls == TLS_ON) {
		/* Memory BIOs take everything: SSL_write completes unless TLS failed. */
		while (off < io->out.len) {
			n = io->out.len - off;
			ERR_clear_error();
			r = SSL_write(io->ssl, io->out.data + off, (int)(n > IO_SSL_CHUNK ? IO_SSL_CHUNK : n));
			if (r <= 0)
				break;
			off += (size_t)r;
		}
		buf_consume(&io->out, off);
		io_tls_drain_wbio(io);
		if (r <= 0 && io_tls_status(io, r, "write") < 0)
			return;
	}
	/* Also what waited in wire (written while connecting). During the
	 * handshake out waits: it is encrypted once the handshake completes. */
	io_send(io);
}

/* ---- errors and closing ---- */

/* Report a failure once; a draining io is freed instead (io_emit). */
static void
io_fail(struct io *io, enum io_error err, const char *text)
{
	if (io->failed || io->closing)
		return;
	io->failed = true;
	io->err = err;
	snprintf(io->errtext, sizeof(io->errtext), "%s", text);
	io_stop_reading(io);
	uv_timer_stop(&io->timer);
	io_emit(io, IO_EV_ERROR);
}

enum io_error
io_error(const struct io *io)
{
	return io->err;
}

const char *
io_error_text(const struct io *io)
{
	if (io->errtext[0] != '\0')
		return io->errtext;
	switch (io->err) {
	case IO_ERR_NONE: return "no error";
	case IO_ERR_REFUSED: return "connection refused";
	case IO_ERR_UNREACH: return "network unreachable";
	case IO_ERR_CONNECT_TIMEOUT: return "connection timed out";
	case IO_ERR_RESET: return "connection reset";
	case IO_ERR_TLS: return "TLS failure";
	default: return "I/O error";
	}
}

const char *
io_peer_ip(const struct io *io)
{
	return io->peer_ip;
}

int
io_peer_port(const struct io *io)
{
	return io->peer_port;
}

const char *
io_local_ip(const struct io *io)
{
	return io->local_ip;
}

const struct sockaddr *
io_peer_addr(const struct io *io)
{
	return (const struct sockaddr *)&io->peer;
}

static void
on_handle_closed(uv_handle_t *h)
{
	struct io *io = h->data;

	if (--io->open_handles > 0)
		return;
	if (io->ssl != NULL)
		SSL_free(io->ssl);      /* frees both BIOs */
	buf_free(&io->in);
	buf_free(&io->out);
	buf_free(&io->wire);
	buf_free(&io->sending);
	if (io->closed_cb != NULL)
		io->closed_cb(io->closed_arg);
	io->magic = 0;
	free(io);
}

void
io_set_closed_cb(struct io *io, void (*closed)(void *arg), void *arg)
{
	io_check(io, __func__);
	io->closed_cb = closed;
	io->closed_arg = arg;
}

void
io_close_after_drain(struct io *io)
{
	io_check(io, __func__);
	if (io->closing)
		return;
	/* Nothing can go out after a failure, nor plaintext mid-handshake. */
	if (io->failed || io->tls == TLS_HANDSHAKE) {
		io_free(io);
		return;
	}
	/* From here the owner is gone: failures free the io (io_emit). */
	io->close_after_drain = true;
	io->paused = true;
	uv_timer_stop(&io->kick);
	buf_reset(&io->in);
	io->in_off = 0;
	io_flush(io);
	if (io->closing)
		return;
	if (io->tls == TLS_ON) {
		ERR_clear_error();
		SSL_shutdown(io->ssl);          /* queue our close_notify */
		ERR_clear_error();
		io_tls_drain_wbio(io);
		if (io->closing)
			return;
	}
	if (!io->connecting && !io->writing && io->wire.len == 0) {
		io_free(io);
		return;
	}
	/* io_write_done (or on_connect) frees when the last byte is out. */
	io_restart_timer(io);
}

void
io_close_now(struct io *io)
{
	uv_buf_t b;

	io_check(io, __func__);
	if (io->closing)
		return;
	/* Nothing can go out after a failure, nor plaintext mid-handshake. */
	if (!io->failed && !io->connecting && io->tls != TLS_HANDSHAKE) {
		/* the owner is gone: a failure from here frees the io (io_emit) */
		io->close_after_drain = true;
		io->paused = true;
		uv_timer_stop(&io->kick);
		io_flush(io);
		if (!io->closing && io->tls == TLS_ON) {
			ERR_clear_error();
			SSL_shutdown(io->ssl);      /* our close_notify */
			ERR_clear_error();
			io_tls_drain_wbio(io);
		}
		if (io->closing)
			return;
		/* Behind a write the kernel took whole (its completion not run
		 * yet), the rest can go at once; behind a uv_write still under
		 * way libuv says EAGAIN, and it is dropped. */
		if (io->wire.len > 0) {
			b = uv_buf_init(io->wire.data, (unsigned)io->wire.len);
			(void)uv_try_write((uv_stream_t *)&io->tcp, &b, 1);
		}
	}
	io_free(io);
}

void
io_free(struct io *io)
{
	io_check(io, __func__);
	if (io->closing)
		return;
	io->closing = true;
	uv_close((uv_handle_t *)&io->tcp, on_handle_closed);
	uv_close((uv_handle_t *)&io->timer, on_handle_closed);
	uv_close((uv_handle_t *)&io->kick, on_handle_closed);
	uv_close((uv_handle_t *)&io->wdone, on_handle_closed);
}
