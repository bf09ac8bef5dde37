/*
 * bench_sink.c - a fast SMTP sink for the benchmarks (like Postfix's
 * smtp-sink): one thread, one libuv loop, every message accepted and thrown
 * away, so the destination MX costs the relay under test little CPU.  It is
 * a benchmark tool, never a test: tests/bench/submit_bench.py drives it.
 *
 *   bench_sink ADDR PORT
 *
 * Speaks just enough ESMTP for relayd's client: a 220 greeting; EHLO (no
 * STARTTLS, so deliver.tls=opportunistic sends in plaintext) and HELO;
 * MAIL and RCPT 250; DATA 354, then the data is scanned for <CRLF>.<CRLF>
 * by a state machine that runs across reads and keeps none of it, and
 * answered 250; RSET and NOOP 250; QUIT 221 and close; anything else 502.
 * Pipelined commands are answered together: the replies to everything in a
 * read go out in one write.
 *
 * Stdout: "ready" once listening; "count=N" (messages so far) every 50 ms
 * while it changes; "messages=N connections=M" on SIGTERM or SIGINT, after
 * which it closes every handle and exits 0.
 *
 * Memory is bounded per connection: one read buffer, one reply buffer being
 * filled and one being written, one command line.  When the reply buffer is
 * full (a client that pipelines without reading) the sink stops reading and
 * goes on with the rest of the read buffer once the write is done.
 *
 * Ownership: the loop owns the listener, the signal handles and the timer;
 * each connection owns its handle and buffers and is freed in the handle's
 * close callback.
 */
#include <ctype.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#define SINK_CONN_MAGIC 0x53494e4bu  /* "SINK" */
#define SINK_READ_MAX   65536        /* one read */
#define SINK_OUT_MAX    4096         /* replies gathered before one write */
#define SINK_REPLY_MAX  256          /* longest single reply (EHLO) */
#define SINK_LINE_MAX   1024         /* a command line (RFC 5321: 512) */
#define SINK_TICK_MS    50           /* running count period */

struct sink {
	uv_loop_t *loop;
	uv_tcp_t listener;
	uv_signal_t sigterm, sigint;
	uv_timer_t tick;
	long messages, connections;
	long printed;                /* count last written to stdout */
};

/* Where the end-of-data scanner is in the data of one message. */
enum sink_data_state {
	SINK_DATA_MID,               /* inside a line */
	SINK_DATA_CR,                /* after CR */
	SINK_DATA_BOL,               /* at the start of a line */
	SINK_DATA_DOT,               /* after a dot at the start of a line */
	SINK_DATA_DOT_CR,            /* after "." CR at the start of a line */
};

struct sink_conn {
	unsigned magic;
	uv_tcp_t tcp;
	struct sink *sink;
	bool in_data;                /* reading message data, not commands */
	enum sink_data_state dstate;
	bool mail;                   /* MAIL given in this transaction */
	long rcpts;                  /* RCPTs given in this transaction */
	bool quit;                   /* QUIT answered: close once it is written */
	bool closing;
	bool reading;
	bool line_long;              /* the current command line overflowed */
	size_t linelen;
	char line[SINK_LINE_MAX];
	size_t rpos, rlen;           /* unprocessed input: rbuf[rpos..rlen) */
	char rbuf[SINK_READ_MAX];
	size_t outlen;               /* replies gathered, not yet written */
	char out[SINK_OUT_MAX];
	bool writing;                /* wbuf is in flight */
	uv_write_t wreq;
	char wbuf[SINK_OUT_MAX];
};

static void sink_conn_process(struct sink_conn *c);
static void sink_conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void sink_conn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);

static const char sink_ehlo_reply[] =
	"250-bench-sink\r\n"
	"250-PIPELINING\r\n"
	"250-8BITMIME\r\n"
	"250-SIZE\r\n"
	"250-ENHANCEDSTATUSCODES\r\n"
	"250-DSN\r\n"
	"250 SMTPUTF8\r\n";

/* ------------------------------------------------------------------ */
/* Connections */

static void
sink_conn_reply(struct sink_conn *c, const char *s)
{
	size_t n = strlen(s);

	if (n > SINK_OUT_MAX - c->outlen) {
		fprintf(stderr, "%s: reply buffer overflow\n", __func__);
		abort();
	}
	memcpy(c->out + c->outlen, s, n);
	c->outlen += n;
}

static void
sink_conn_closed(uv_handle_t *h)
{
	struct sink_conn *c = h->data;

	c->magic = 0;
	free(c);
}

static void
sink_conn_close(struct sink_conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	uv_close((uv_handle_t *)&c->tcp, sink_conn_closed);
}

static void sink_conn_flush(struct sink_conn *c);

static void
sink_conn_written(uv_write_t *req, int status)
{
	struct sink_conn *c = req->data;

	c->writing = false;
	if (c->closing)
		return;
	if (status < 0) {
		sink_conn_close(c);
		return;
	}
	/* Input left over when the reply buffer filled up goes on now. */
	sink_conn_process(c);
	sink_conn_flush(c);
}

/*
 * Send the gathered replies unless a write is in flight (its callback sends
 * them); after the last write of a QUIT, close.  Reads resume once every
 * byte read has been processed.
 */
static void
sink_conn_flush(struct sink_conn *c)
{
	uv_buf_t b;

	if (c->closing || c->writing)
		return;
	if (c->outlen > 0) {
		memcpy(c->wbuf, c->out, c->outlen);
		b = uv_buf_init(c->wbuf, (unsigned)c->outlen);
		c->outlen = 0;
		c->writing = true;
		if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, sink_conn_written) != 0) {
			c->writing = false;
			sink_conn_close(c);
		}
		return;
	}
	if (c->quit) {
		sink_conn_close(c);
		return;
	}
	if (c->rpos == c->rlen && !c->reading) {
		c->reading = true;
		c->rpos = c->rlen = 0;
		uv_read_start((uv_stream_t *)&c->tcp, sink_conn_alloc, sink_conn_read);
	}
}

/* ------------------------------------------------------------------ */
/* Commands: a table of verbs */

static void
sink_cmd_ehlo(struct sink_conn *c, const char *arg)
{
	c->mail = false;
	c->rcpts = 0;
	sink_conn_reply(c, sink_ehlo_reply);
}

static void
sink_cmd_helo(struct sink_conn *c, const char *arg)
{
	c->mail = false;
	c->rcpts = 0;
	sink_conn_reply(c, "250 bench-sink\r\n");
}

static void
sink_cmd_mail(struct sink_conn *c, const char *arg)
{
	c->mail = true;
	c->rcpts = 0;
	sink_conn_reply(c, "250 2.1.0 Ok\r\n");
}

static void
sink_cmd_rcpt(struct sink_conn *c, const char *arg)
{
	if (!c->mail) {
		sink_conn_reply(c, "503 5.5.1 Error: need MAIL command\r\n");
		return;
	}
	c->rcpts++;
	sink_conn_reply(c, "250 2.1.5 Ok\r\n");
}

static void
sink_cmd_data(struct sink_conn *c, const char *arg)
{
	if (c->rcpts == 0) {
		sink_conn_reply(c, "503 5.5.1 Error: need RCPT command\r\n");
		return;
	}
	c->in_data = true;
	c->dstate = SINK_DATA_BOL;
	sink_conn_reply(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
}

static void
sink_cmd_rset(struct sink_conn *c, const char *arg)
{
	c->mail = false;
	c->rcpts = 0;
	sink_conn_reply(c, "250 2.0.0 Ok\r\n");
}

static void
sink_cmd_noop(struct sink_conn *c, const char *arg)
{
	sink_conn_reply(c, "250 2.0.0 Ok\r\n");
}

static void
sink_cmd_quit(struct sink_conn *c, const char *arg)
{
	c->quit = true;
	sink_conn_reply(c, "221 2.0.0 Bye\r\n");
}

static const struct sink_cmd {
	const char *verb;
	void (*proceed)(struct sink_conn *, const char *arg);
} sink_cmds[] = {
	{ "EHLO", sink_cmd_ehlo },
	{ "HELO", sink_cmd_helo },
	{ "MAIL", sink_cmd_mail },
	{ "RCPT", sink_cmd_rcpt },
	{ "DATA", sink_cmd_data },
	{ "RSET", sink_cmd_rset },
	{ "NOOP", sink_cmd_noop },
	{ "QUIT", sink_cmd_quit },
};

/* One command line, CRLF (or LF) removed, NUL-terminated. */
static void
sink_conn_command(struct sink_conn *c, const char *line, size_t len)
{
	size_t i, vlen = 0;

	while (vlen < len && isalpha((unsigned char)line[vlen]))
		vlen++;
	if (vlen < len && line[vlen] != ' ')
		vlen = 0;
	for (i = 0; vlen == 4 && i < sizeof(sink_cmds) / sizeof(sink_cmds[0]); i++) {
		if (strncasecmp(line, sink_cmds[i].verb, 4) == 0) {
			sink_cmds[i].proceed(c, line + vlen + (vlen < len));
			return;
		}
	}
	sink_conn_reply(c, "502 5.5.2 Error: command not recognized\r\n");
}

/*
 * Scan message data in p[0..n) for <CRLF>.<CRLF>; the DATA command's CRLF
 * counts as the first one.  Returns the bytes consumed: all of them, or up to
 * and including the final LF, where the message is counted and answered.
 */
static size_t
sink_conn_data(struct sink_conn *c, const char *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		char ch = p[i];

		switch (c->dstate) {
		case SINK_DATA_MID: {
			const char *cr = memchr(p + i, '\r', n - i);

			if (cr == NULL)
				return n;
			i = (size_t)(cr - p) + 1;
			c->dstate = SINK_DATA_CR;
			continue;
		}
		case SINK_DATA_CR:
			c->dstate = ch == '\n' ? SINK_DATA_BOL : ch == '\r' ? SINK_DATA_CR : SINK_DATA_MID;
			break;
		case SINK_DATA_BOL:
			c->dstate = ch == '.' ? SINK_DATA_DOT : ch == '\r' ? SINK_DATA_CR : SINK_DATA_MID;
			break;
		case SINK_DATA_DOT:
			c->dstate = ch == '\r' ? SINK_DATA_DOT_CR : SINK_DATA_MID;
			break;
		case SINK_DATA_DOT_CR:
			if (ch == '\n') {
				c->in_data = false;
				c->mail = false;
				c->rcpts = 0;
				c->sink->messages++;
				sink_conn_reply(c, "250 2.0.0 Ok\r\n");
				return i + 1;
			}
			c->dstate = ch == '\r' ? SINK_DATA_CR : SINK_DATA_MID;
			break;
		}
		i++;
	}
	return n;
}

/* Command bytes in p[0..n): gathered into line; returns the bytes consumed. */
static size_t
sink_conn_line(struct sink_conn *c, const char *p, size_t n)
{
	const char *lf = memchr(p, '\n', n);
	size_t take = lf != NULL ? (size_t)(lf - p) : n;

	if (!c->line_long) {
		if (take > sizeof(c->line) - 1 - c->linelen)
			c->line_long = true;
		else {
			memcpy(c->line + c->linelen, p, take);
			c->linelen += take;
		}
	}
	if (lf == NULL)
		return n;
	if (c->line_long)
		sink_conn_reply(c, "500 5.5.2 Error: line too long\r\n");
	else {
		if (c->linelen > 0 && c->line[c->linelen - 1] == '\r')
			c->linelen--;
		c->line[c->linelen] = '\0';
		sink_conn_command(c, c->line, c->linelen);
	}
	c->linelen = 0;
	c->line_long = false;
	return take + 1;
}

/*
 * Work through rbuf[rpos..rlen) while the reply buffer has room for one
 * more reply; stop reading when it has not, or after QUIT.
 */
static void
sink_conn_process(struct sink_conn *c)
{
	while (c->rpos < c->rlen && !c->quit && SINK_OUT_MAX - c->outlen >= SINK_REPLY_MAX) {
		const char *p = c->rbuf + c->rpos;
		size_t n = c->rlen - c->rpos;

		c->rpos += c->in_data ? sink_conn_data(c, p, n) : sink_conn_line(c, p, n);
	}
	if ((c->rpos < c->rlen || c->quit) && c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
}

static void
sink_conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct sink_conn *c = h->data;

	/* Reads run only when every byte read before has been processed. */
	*b = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void
sink_conn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct sink_conn *c = s->data;

	if (c->magic != SINK_CONN_MAGIC) {
		fprintf(stderr, "%s: bad connection\n", __func__);
		abort();
	}
	if (nread < 0) {
		sink_conn_close(c);
		return;
	}
	c->rpos = 0;
	c->rlen = (size_t)nread;
	sink_conn_process(c);
	sink_conn_flush(c);
}

static void
sink_accept(uv_stream_t *server, int status)
{
	struct sink *sk = server->data;
	struct sink_conn *c;

	if (status < 0)
		return;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		abort();
	c->magic = SINK_CONN_MAGIC;
	c->sink = sk;
	uv_tcp_init(sk->loop, &c->tcp);
	c->tcp.data = c;
	c->wreq.data = c;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
		sink_conn_close(c);
		return;
	}
	sk->connections++;
	uv_tcp_nodelay(&c->tcp, 1);
	sink_conn_reply(c, "220 bench-sink ESMTP\r\n");
	c->reading = true;
	uv_read_start((uv_stream_t *)&c->tcp, sink_conn_alloc, sink_conn_read);
	sink_conn_flush(c);
}

/* ------------------------------------------------------------------ */
/* The sink */

static void
sink_tick(uv_timer_t *t)
{
	struct sink *sk = t->data;

	if (sk->messages != sk->printed) {
		sk->printed = sk->messages;
		printf("count=%ld\n", sk->printed);
		fflush(stdout);
	}
}

static void
sink_close_walk(uv_handle_t *h, void *arg)
{
	if (uv_is_closing(h))
		return;
	if (h->type == UV_TCP && h->data != arg) {
		sink_conn_close(h->data);
		return;
	}
	uv_close(h, NULL);
}

static void
sink_signal(uv_signal_t *sig, int signum)
{
	struct sink *sk = sig->data;

	uv_walk(sk->loop, sink_close_walk, sk);
}

int
main(int argc, char **argv)
{
	struct sink sk;
	struct sockaddr_storage ss;
	int err;

	if (argc != 3) {
		fprintf(stderr, "usage: bench_sink ADDR PORT\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	memset(&sk, 0, sizeof(sk));
	sk.loop = uv_default_loop();
	if (uv_ip4_addr(argv[1], atoi(argv[2]), (struct sockaddr_in *)&ss) != 0 &&
	    uv_ip6_addr(argv[1], atoi(argv[2]), (struct sockaddr_in6 *)&ss) != 0) {
		fprintf(stderr, "bench_sink: bad address %s\n", argv[1]);
		return 2;
	}
	uv_tcp_init(sk.loop, &sk.listener);
	sk.listener.data = &sk;
	if ((err = uv_tcp_bind(&sk.listener, (struct sockaddr *)&ss, 0)) != 0 ||
	    (err = uv_listen((uv_stream_t *)&sk.listener, 512, sink_accept)) != 0) {
		fprintf(stderr, "bench_sink: listen on %s:%s: %s\n", argv[1], argv[2], uv_strerror(err));
		return 1;
	}
	uv_signal_init(sk.loop, &sk.sigterm);
	uv_signal_init(sk.loop, &sk.sigint);
	sk.sigterm.data = sk.sigint.data = &sk;
	uv_signal_start(&sk.sigterm, sink_signal, SIGTERM);
	uv_signal_start(&sk.sigint, sink_signal, SIGINT);
	uv_timer_init(sk.loop, &sk.tick);
	sk.tick.data = &sk;
	uv_timer_start(&sk.tick, sink_tick, SINK_TICK_MS, SINK_TICK_MS);

	printf("ready\n");
	fflush(stdout);
	uv_run(sk.loop, UV_RUN_DEFAULT);

	printf("messages=%ld connections=%ld\n", sk.messages, sk.connections);
	fflush(stdout);
	if (uv_loop_close(sk.loop) != 0) {
		fprintf(stderr, "bench_sink: loop not closed cleanly\n");
		return 1;
	}
	return 0;
}
