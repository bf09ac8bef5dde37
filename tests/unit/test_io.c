/*
 * test_io.c - the I/O layer (common/io.c) over real loopback TCP, in
 * plaintext: line splitting, octets behind a line (io_getbytes), pause and resume, close after drain,
 * backpressure, output before the connect, refusal, idle timeouts, deadlines, nothing
 * after EOF, io_free() from inside every callback, and writes the kernel takes
 * at once or in part (io_fixture.h: a real
 * libuv loop, io_accept() and io_connect()).  TLS is test_io_tls.c.  Each
 * test states the behaviour it proves and ends with uv_loop_close() == 0.
 */
#include "io_fixture.h"

/* ------------------------------------------------------------------ */
/*
 * Line splitting: the client writes each chunk only once the server has seen
 * the previous one arrive (so each lands in its own read), then closes; the
 * server's lines, IO_LINE_LONG marks and EOF are compared with the table.
 */

struct line_case {
	const char *name;
	size_t max_line;            /* 0 = default (1000) */
	const char *chunks[6];
	const char *want;           /* rec: lines with \r \n escaped, '|'-separated */
	size_t want_pending;        /* io_input_pending() at EOF */
};

static const struct line_case line_cases[] = {
	{ "one line in one write", 0, { "HELO a\r\n" }, "HELO a\\r\\n|EOF|", 0 },
	{ "two lines in one write", 0, { "A\r\nB\r\n" }, "A\\r\\n|B\\r\\n|EOF|", 0 },
	{ "a line split across three writes", 0, { "HE", "LO a", "\r\n" }, "HELO a\\r\\n|EOF|", 0 },
	{ "CRLF split between writes", 0, { "HELO a\r", "\nNEXT\r\n" },
	  "HELO a\\r\\n|NEXT\\r\\n|EOF|", 0 },
	{ "bare LF ends a line", 0, { "X\nY\r\n" }, "X\\n|Y\\r\\n|EOF|", 0 },
	{ "empty lines", 0, { "\r\n\r\n" }, "\\r\\n|\\r\\n|EOF|", 0 },
	{ "an unterminated tail stays pending at EOF", 0, { "A\r\nB" }, "A\\r\\n|EOF|", 1 },
	{ "exactly max_line bytes is a line", 16, { "0123456789abcd\r\n" },
	  "0123456789abcd\\r\\n|EOF|", 0 },
	{ "max_line + 1 with its LF in the same read is one LONG", 16,
	  { "0123456789abcde\r\nOK\r\n" }, "<LONG>|OK\\r\\n|EOF|", 0 },
	{ "overlong without LF: one LONG, discarded to its LF, then lines resume", 16,
	  { "0123456789abcdefXYZ", "tail\r\nOK\r\n" }, "<LONG>|OK\\r\\n|EOF|", 0 },
	{ "overlong across many reads is still exactly one LONG", 16,
	  { "0123456789", "abcdefghij", "klmnopqrst", "uv\r", "\nOK\r\n" },
	  "<LONG>|OK\\r\\n|EOF|", 0 },
	{ "two overlong lines, two LONGs", 16,
	  { "0123456789abcdefghij\r\n0123456789abcdefghij", "\r\nOK\r\n" },
	  "<LONG>|<LONG>|OK\\r\\n|EOF|", 0 },
	{ "an overlong line's LF alone in the next read", 16,
	  { "0123456789abcdefghijklmn\r", "\n", "OK\r\n" }, "<LONG>|OK\\r\\n|EOF|", 0 },
	{ "a line ending exactly at the limit after a long one", 8,
	  { "0123456789\r\n", "012345\r\n" }, "<LONG>|012345\\r\\n|EOF|", 0 },
};

struct line_state {
	const struct line_case *lc;
	size_t next;                /* next chunk to write */
	size_t pending_at_eof;
};

static void
line_next_chunk(struct fix *fx)
{
	struct line_state *ls = fx->ctx;
	const char *c;

	if (fx->cli.freed)
		return;
	c = ls->next < RELAY_ARRAY_LEN(ls->lc->chunks) ? ls->lc->chunks[ls->next] : NULL;
	if (c == NULL) {
		peer_close_drain(&fx->cli);
		return;
	}
	ls->next++;
	io_write(fx->cli.io, c, strlen(c));
}

static void
line_srv_event(struct peer *p, enum io_event ev)
{
	struct line_state *ls = p->fx->ctx;

	if (ev == IO_EV_EOF)
		ls->pending_at_eof = io_input_pending(p->io);
	peer_default(p, ev);
	/* The chunk arrived: send the next one (outside this io's callback). */
	if (ev == IO_EV_IN)
		fix_timer(p->fx, 1, line_next_chunk);
}

static void
line_cli_event(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_CONNECTED)
		fix_timer(p->fx, 0, line_next_chunk);
	peer_default(p, ev);
}

static void
line_srv_accept(struct fix *fx)
{
	struct line_state *ls = fx->ctx;

	if (ls->lc->max_line > 0)
		io_set_max_line(fx->srv.io, ls->lc->max_line);
}

static void
test_lines(void)
{
	for (size_t i = 0; i < RELAY_ARRAY_LEN(line_cases); i++) {
		const struct line_case *lc = &line_cases[i];
		struct line_state ls = { lc, 0, 0 };
		struct fix fx;

		fix_init(&fx);
		fx.ctx = &ls;
		fx.on_accept = line_srv_accept;
		fx.srv.on_event = line_srv_event;
		fx.cli.on_event = line_cli_event;
		fix_connect(&fx);
		fix_run(&fx, lc->name);
		CHECK_MSG(strcmp(buf_cstr(&fx.srv.rec), lc->want) == 0, "%s: got \"%s\", want \"%s\"",
		    lc->name, buf_cstr(&fx.srv.rec), lc->want);
		CHECK_MSG(ls.pending_at_eof == lc->want_pending, "%s: %zu bytes pending at EOF, want %zu",
		    lc->name, ls.pending_at_eof, lc->want_pending);
		fix_free(&fx);
	}
}

/* ------------------------------------------------------------------ */
/*
 * Octets behind a line (BDAT, RFC 3030): the line "B<n>" announces n octets
 * that io_getbytes() takes as they are -- LF and CR included, across reads,
 * with the next line right behind them in the same read.
 */

static const struct line_case bytes_cases[] = {
	{ "octets and the next line in one read", 0, { "B5\r\nab\ncdNEXT\r\n" },
	  "B5\\r\\n|ab\\ncd|NEXT\\r\\n|EOF|", 0 },
	{ "octets across reads, a CRLF cut in two", 0, { "B6\r\nab\r", "\ncd", "\r\nB0\r\nX\r\n" },
	  "B6\\r\\n|ab\\r\\ncd|\\r\\n|B0\\r\\n||X\\r\\n|EOF|", 0 },
	{ "two announcements back to back", 0, { "B2\r\n\n\nB1\r\n.", "END\r\n" },
	  "B2\\r\\n|\\n\\n|B1\\r\\n|.|END\\r\\n|EOF|", 0 },
	{ "octets longer than max_line are not a LONG", 8,
	  { "B20\r\n0123456789", "0123456789OK\r\n" },
	  "B20\\r\\n|01234567890123456789|OK\\r\\n|EOF|", 0 },
};

struct bytes_state {
	struct line_state ls;       /* first: line_next_chunk() reads it */
	size_t left;
	struct buf got;
};

static void
bytes_srv_event(struct peer *p, enum io_event ev)
{
	struct bytes_state *bs = p->fx->ctx;
	const char *line;
	size_t len;
	enum io_line r;

	if (ev != IO_EV_IN) {
		peer_default(p, ev);
		return;
	}
	for (;;) {
		if (bs->left > 0) {
			if ((len = io_getbytes(p->io, bs->left, &line)) == 0)
				break;
			buf_append(&bs->got, line, len);
			if ((bs->left -= len) == 0) {
				rec_add(p, bs->got.data, bs->got.len);
				buf_reset(&bs->got);
			}
			continue;
		}
		if ((r = io_getline(p->io, &line, &len)) == IO_LINE_NONE)
			break;
		if (r == IO_LINE_LONG) {
			rec_event(p, "<LONG>");
			continue;
		}
		rec_add(p, line, len);
		if (line[0] == 'B') {
			bs->left = strtoul(line + 1, NULL, 10);
			if (bs->left == 0)
				rec_add(p, "", 0);
		}
	}
	fix_timer(p->fx, 1, line_next_chunk);
}

static void
test_bytes(void)
{
	for (size_t i = 0; i < RELAY_ARRAY_LEN(bytes_cases); i++) {
		const struct line_case *lc = &bytes_cases[i];
		struct bytes_state bs = { { lc, 0, 0 }, 0, BUF_INIT };
		struct fix fx;

		fix_init(&fx);
		fx.ctx = &bs;
		fx.on_accept = line_srv_accept;
		fx.srv.on_event = bytes_srv_event;
		fx.cli.on_event = line_cli_event;
		fix_connect(&fx);
		fix_run(&fx, lc->name);
		CHECK_MSG(strcmp(buf_cstr(&fx.srv.rec), lc->want) == 0, "%s: got \"%s\", want \"%s\"",
		    lc->name, buf_cstr(&fx.srv.rec), lc->want);
		buf_free(&bs.got);
		fix_free(&fx);
	}
}

/* ------------------------------------------------------------------ */
/*
 * Pause/resume: the server takes one line, pauses, and resumes 20 ms later
 * without any new input arriving.  io_resume() must re-deliver IO_EV_IN for
 * what is buffered, nothing may arrive while paused, and the client's EOF
 * (sent right behind the lines) must wait until the buffered lines are taken
 * (the original delivered it while paused, losing B and C).
 */

struct pause_state {
	int in_while_paused;
	int resumes;
};

static void
pause_resume(struct fix *fx)
{
	struct pause_state *ps = fx->ctx;

	if (fx->srv.freed)
		return;
	ps->resumes++;
	fx->srv.paused = false;
	io_resume(fx->srv.io);
}

static void
pause_srv_event(struct peer *p, enum io_event ev)
{
	struct pause_state *ps = p->fx->ctx;

	if (p->paused && ev == IO_EV_IN)
		ps->in_while_paused++;
	peer_default(p, ev);
}

static void
pause_srv_line(struct peer *p, const char *line, size_t len)
{
	p->paused = true;
	io_pause(p->io);
	fix_timer(p->fx, 20, pause_resume);
}

static void
pause_cli_event(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_CONNECTED) {
		io_write(p->io, "A\r\nB\r\nC\r\n", 9);
		peer_close_drain(p);
		return;
	}
	peer_default(p, ev);
}

static void
test_pause_resume(void)
{
	struct pause_state ps = { 0, 0 };
	struct fix fx;

	fix_init(&fx);
	fx.ctx = &ps;
	fx.srv.on_event = pause_srv_event;
	fx.srv.on_line = pause_srv_line;
	fx.cli.on_event = pause_cli_event;
	fix_connect(&fx);
	fix_run(&fx, "pause/resume");
	/* resume re-delivers the buffered lines; EOF comes once the last is taken */
	CHECK_STR(buf_cstr(&fx.srv.rec), "A\\r\\n|B\\r\\n|C\\r\\n|EOF|");
	CHECK_INT(ps.resumes, 2);
	CHECK_INT(ps.in_while_paused, 0);
	fix_free(&fx);
}

/* ------------------------------------------------------------------ */
/*
 * Close after drain: the server queues 4 MiB (far more than the socket takes
 * at once) and calls io_close_after_drain(); the client must receive every
 * byte, in order, then EOF.  The server's callback is never called again.
 */

#define DRAIN_TOTAL (4u << 20)

static void
drain_srv_accept(struct fix *fx)
{
	struct buf b = BUF_INIT;

	bulk_make(&b, DRAIN_TOTAL, 64);
	io_write(fx->srv.io, b.data, b.len);
	buf_free(&b);
	CHECK(io_output_pending(fx->srv.io) > 0);
	peer_close_drain(&fx->srv);
}

static void
test_close_after_drain(void)
{
	struct fix fx;

	fix_init(&fx);
	fx.on_accept = drain_srv_accept;
	fx.cli.record = false;
	fx.cli.on_line = bulk_on_line;
	fix_connect(&fx);
	fix_run(&fx, "close after drain");
	CHECK_INT(fx.cli.bytes, DRAIN_TOTAL);
	CHECK_INT(fx.cli.seq, DRAIN_TOTAL / 64);
	CHECK_INT(fx.cli.badseq, 0);
	CHECK_INT(fx.cli.nev[IO_EV_EOF], 1);
	fix_free(&fx);
}

/* ------------------------------------------------------------------ */
/*
 * Backpressure: the client pipelines 100,000 commands and does not read the
 * replies (paused) for 300 ms.  The server answers every line with 200 bytes
 * (20 MB in all); it must stop reading instead of queueing it all, so its
 * pending output stays bounded.  Then the client reads; every reply arrives.
 */

#define BP_LINES 100000
#define BP_REPLY 200

struct bp_state {
	size_t max_srv_out;
	size_t max_cli_in;
	unsigned waits;
};

static void
bp_srv_line(struct peer *p, const char *line, size_t len)
{
	struct bp_state *bs = p->fx->ctx;
	struct buf b = BUF_INIT;
	size_t pending;

	bulk_line(&b, p->nlines - 1, BP_REPLY);
	io_write(p->io, b.data, b.len);
	buf_free(&b);
	pending = io_output_pending(p->io);
	if (pending > bs->max_srv_out)
		bs->max_srv_out = pending;
	if (p->nlines == BP_LINES)
		peer_close_drain(p);
}

static void
bp_resume(struct fix *fx)
{
	struct bp_state *bs = fx->ctx;

	if (fx->cli.freed)
		return;
	bs->max_cli_in = io_input_pending(fx->cli.io);
	/* On a slow (sanitizer) build the replies may not have arrived yet:
	 * stay paused until some have, so the pause is really exercised. */
	if (bs->max_cli_in == 0 && ++bs->waits < 100) {
		fix_timer(fx, 100, bp_resume);
		return;
	}
	fx->cli.paused = false;
	io_resume(fx->cli.io);
}

static void
bp_cli_event(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_CONNECTED) {
		struct buf b = BUF_INIT;

		for (size_t i = 0; i < BP_LINES; i++)
			buf_puts(&b, "NOOP\r\n");
		io_pause(p->io);
		p->paused = true;
		io_write(p->io, b.data, b.len);
		buf_free(&b);
		fix_timer(p->fx, 300, bp_resume);
		return;
	}
	peer_default(p, ev);
}

static void
test_backpressure(void)
{
	struct bp_state bs = { 0, 0, 0 };
	struct fix fx;

	fix_init(&fx);
	fx.ctx = &bs;
	fx.srv.record = fx.cli.record = false;
	fx.srv.on_line = bp_srv_line;
	fx.cli.on_line = bulk_on_line;
	fx.cli.on_event = bp_cli_event;
	fix_connect(&fx);
	fix_run(&fx, "backpressure");
	CHECK_INT(fx.srv.nlines, BP_LINES);
	CHECK_INT(fx.cli.seq, BP_LINES);
	CHECK_INT(fx.cli.badseq, 0);
	/* 1 MiB cap, overshoot by at most one 64 KiB read's worth of replies */
	CHECK_MSG(bs.max_srv_out < (1u << 20) + (64u << 10) / 6 * BP_REPLY + BP_REPLY,
	    "server queued %zu bytes of output for a peer that does not read", bs.max_srv_out);
	/* the paused client buffered at most its input cap plus one read */
	CHECK_MSG(bs.max_cli_in <= (256u << 10) + (64u << 10),
	    "paused client buffered %zu bytes", bs.max_cli_in);
	CHECK_MSG(bs.max_cli_in > 0, "paused client buffered nothing");
	fix_free(&fx);
}

/* ------------------------------------------------------------------ */
/* Output written before the connect completes goes out once connected. */

static void
test_write_before_connect(void)
{
	struct fix fx;

	fix_init(&fx);
	fix_connect(&fx);
	io_write(fx.cli.io, "EARLY\r\n", 7);
	CHECK_INT(io_output_pending(fx.cli.io), 7);
	peer_close_drain(&fx.cli);      /* and closing waits for it, too */
	fix_run(&fx, "write before connect");
	CHECK_STR(buf_cstr(&fx.srv.rec), "EARLY\\r\\n|EOF|");
	fix_free(&fx);
}

/* ------------------------------------------------------------------ */
/* Connection refused: a port nobody listens on gives IO_ERR_REFUSED. */

static void
test_refused(void)
{
	struct fix fx;

	fix_init(&fx);
	fix_stop_listening(&fx);    /* the fd is closed at once; the port is free */
	fix_connect(&fx);
	fix_run(&fx, "connection refused");
	CHECK_INT(fx.cli.nev[IO_EV_ERROR], 1);
	CHECK_INT(fx.cli.nev[IO_EV_CONNECTED], 0);
	CHECK_INT(fx.cli.err, IO_ERR_REFUSED);
	CHECK_STR(fx.cli.errtext, "connection refused");
	fix_free(&fx);
}

/* ------------------------------------------------------------------ */
/*
 * Idle timeout: the server sets 250 ms; the client sends one line at 30 ms
 * (which restarts the timer) and then nothing.  IO_EV_TIMEOUT comes no sooner
 * than 30 + 250 ms; the server's last reply reaches the client before EOF.
 * The margin is wide so that a loaded machine cannot run the client's 30 ms
 * timer and the server's timeout in one turn, before the line is read.
 */

struct tmo_state {
	uint64_t fired_at;
};

static void
tmo_srv_accept(struct fix *fx)
{
	io_set_timeout(fx->srv.io, 250);
}

static void
tmo_srv_event(struct peer *p, enum io_event ev)
{
	struct tmo_state *ts = p->fx->ctx;

	if (ev == IO_EV_TIMEOUT) {
		uv_update_time(&p->fx->loop);
		ts->fired_at = uv_now(&p->fx->loop) - p->fx->t0;
		rec_event(p, "TIMEOUT");
		io_write(p->io, "421 timeout\r\n", 13);
		peer_close_drain(p);
		return;
	}
	peer_default(p, ev);
}

static void
tmo_send(struct fix *fx)
{
	io_write(fx->cli.io, "NOOP\r\n", 6);
}

static void
tmo_cli_event(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_CONNECTED)
		fix_timer(p->fx, 30, tmo_send);
	peer_default(p, ev);
}

static void
test_idle_timeout(void)
{
	struct tmo_state ts = { 0 };
	struct fix fx;

	fix_init(&fx);
	fx.ctx = &ts;
	fx.on_accept = tmo_srv_accept;
	fx.srv.on_event = tmo_srv_event;
	fx.cli.on_event = tmo_cli_event;
	fix_connect(&fx);
	fix_run(&fx, "idle timeout");
	CHECK_STR(buf_cstr(&fx.srv.rec), "NOOP\\r\\n|TIMEOUT|");
	CHECK_STR(buf_cstr(&fx.cli.rec), "421 timeout\\r\\n|EOF|");
	CHECK_MSG(ts.fired_at >= 275, "timeout fired after %llu ms, want >= 280",
	    (unsigned long long)ts.fired_at);
	fix_free(&fx);
}

/*
 * Deadline: the server sets 120 ms; the client drips one byte every 10 ms
 * and never ends its line.  An idle timer would never fire; the deadline
 * fires once, no sooner than 120 ms and long before the drip would end,
 * and io_deadline_left() counted down meanwhile while bytes kept arriving.
 */

struct dl_state {
	uint64_t fired_at;
	uint64_t left_at_first_in;  /* io_deadline_left() when the first byte came */
	int drips;
};

static void
dl_srv_accept(struct fix *fx)
{
	io_set_deadline(fx->srv.io, 120);
}

static void
dl_srv_event(struct peer *p, enum io_event ev)
{
	struct dl_state *ds = p->fx->ctx;

	if (ev == IO_EV_IN && ds->left_at_first_in == 0)
		ds->left_at_first_in = io_deadline_left(p->io);
	if (ev == IO_EV_TIMEOUT) {
		uv_update_time(&p->fx->loop);
		ds->fired_at = uv_now(&p->fx->loop) - p->fx->t0;
		rec_event(p, "TIMEOUT");
		io_write(p->io, "421 deadline\r\n", 14);
		peer_close_drain(p);
		return;
	}
	peer_default(p, ev);
}

static void
dl_drip(struct fix *fx)
{
	struct dl_state *ds = fx->ctx;

	if (fx->cli.freed || fx->cli.ended || ds->drips >= 200)
		return;
	ds->drips++;
	io_write(fx->cli.io, "N", 1);
	fix_timer(fx, 10, dl_drip);
}

static void
dl_cli_event(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_CONNECTED)
		fix_timer(p->fx, 10, dl_drip);
	peer_default(p, ev);
}

static void
test_deadline(void)
{
	struct dl_state ds = { 0 };
	struct fix fx;

	fix_init(&fx);
	fx.ctx = &ds;
	fx.on_accept = dl_srv_accept;
	fx.srv.on_event = dl_srv_event;
	fx.cli.on_event = dl_cli_event;
	fix_connect(&fx);
	fix_run(&fx, "deadline");
	CHECK_STR(buf_cstr(&fx.srv.rec), "TIMEOUT|");
	CHECK_STR(buf_cstr(&fx.cli.rec), "421 deadline\\r\\n|EOF|");
	CHECK_MSG(ds.fired_at >= 115 && ds.fired_at < 1500,
	    "deadline fired after %llu ms, want 120", (unsigned long long)ds.fired_at);
	/*
	 * Input kept coming: the client drips every 10 ms for up to 2 s, so a
	 * deadline that input pushed back would fire after 2 s (the bound on
	 * fired_at above).  How many drips came before it depends on the
	 * machine's load (3 under two sanitizer suites at once): two show
	 * that input came after the deadline was set.
	 */
	CHECK_MSG(ds.drips >= 2, "only %d drips before the deadline", ds.drips);
	/* <= 120: on a loaded machine the first byte may be read in the loop
	 * turn that set the deadline, before the loop's clock moved */
	CHECK_MSG(ds.left_at_first_in > 0 && ds.left_at_first_in <= 120,
	    "io_deadline_left() said %llu at the first byte", (unsigned long long)ds.left_at_first_in);
	fix_free(&fx);
}

/*
 * No event after EOF: the server keeps its io 100 ms after EOF with a 10 ms
 * idle timeout set; neither TIMEOUT nor anything else may follow the EOF.
 */

static void
after_eof_free(struct fix *fx)
{
	peer_free(&fx->srv);
}

static void
after_eof_srv_event(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_EOF) {
		rec_event(p, "EOF");
		fix_timer(p->fx, 100, after_eof_free);
		return;
	}
	peer_default(p, ev);
}

static void
after_eof_srv_accept(struct fix *fx)
{
	io_set_timeout(fx->srv.io, 10);
}

static void
after_eof_cli_event(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_CONNECTED) {
		io_write(p->io, "QUIT\r\n", 6);
		peer_close_drain(p);
		return;
	}
	peer_default(p, ev);
}

static void
test_nothing_after_eof(void)
{
	struct fix fx;

	fix_init(&fx);
	fx.on_accept = after_eof_srv_accept;
	fx.srv.on_event = after_eof_srv_event;
	fx.cli.on_event = after_eof_cli_event;
	fix_connect(&fx);
	fix_run(&fx, "nothing after EOF");
	CHECK_STR(buf_cstr(&fx.srv.rec), "QUIT\\r\\n|EOF|");
	CHECK_INT(fx.srv.nev[IO_EV_TIMEOUT], 0);
	fix_free(&fx);
}

/* ------------------------------------------------------------------ */
/*
 * io_free() inside a callback: for each event, free the io from within it
 * (with a write in flight, a re-delivery pending, a handshake under way);
 * the callback is never called again, nothing is touched after the free
 * (ASan) and the loop closes.
 */

enum free_where {
	FREE_IN_WITH_WRITE,         /* server: IN, with 8 MiB in flight and a resume kick pending */
	FREE_CONNECTED,             /* client: CONNECTED */
	FREE_TLS_READY,             /* client: TLS_READY */
	FREE_TLS_HANDSHAKE,         /* client: the first bytes of the server's handshake */
	FREE_DRAINED,               /* server: DRAINED after 1 MiB */
	FREE_TIMEOUT,               /* server: TIMEOUT */
	FREE_CONNECTING,            /* client: before the connect completes (not in a callback) */
	FREE_CLOSE_DRAIN_PEER_GONE, /* server: close_after_drain, then the client vanishes */
	FREE_CLOSE_DRAIN_TIMEOUT,   /* server: close_after_drain to a client that does not read */
};

struct free_case {
	const char *name;
	enum free_where where;
};

static const struct free_case free_cases[] = {
	{ "free in IN with a write in flight", FREE_IN_WITH_WRITE },
	{ "free in CONNECTED", FREE_CONNECTED },
	{ "free in TLS_READY", FREE_TLS_READY },
	{ "free mid-handshake (IN never comes)", FREE_TLS_HANDSHAKE },
	{ "free in DRAINED", FREE_DRAINED },
	{ "free in TIMEOUT", FREE_TIMEOUT },
	{ "free while connecting", FREE_CONNECTING },
	{ "close_after_drain, then the peer resets", FREE_CLOSE_DRAIN_PEER_GONE },
	{ "close_after_drain bounded by the idle timeout", FREE_CLOSE_DRAIN_TIMEOUT },
};

static void
free_srv_accept(struct fix *fx)
{
	const struct free_case *fc = fx->ctx;
	struct buf b = BUF_INIT;

	switch (fc->where) {
	case FREE_IN_WITH_WRITE:
		bulk_make(&b, 8u << 20, 64);
		io_write(fx->srv.io, b.data, b.len);
		break;
	case FREE_DRAINED:
		bulk_make(&b, 1u << 20, 64);
		io_write(fx->srv.io, b.data, b.len);
		break;
	case FREE_TLS_READY:
	case FREE_TLS_HANDSHAKE:
		CHECK_INT(io_start_tls_server(fx->srv.io, fx->sctx), 0);
		break;
	case FREE_TIMEOUT:
		io_set_timeout(fx->srv.io, 20);
		break;
	case FREE_CLOSE_DRAIN_TIMEOUT:
		io_set_timeout(fx->srv.io, 30);
		/* FALLTHROUGH */
	case FREE_CLOSE_DRAIN_PEER_GONE:
		/* more than the client reads for now: the drain does not finish */
		bulk_make(&b, 16u << 20, 64);
		io_write(fx->srv.io, b.data, b.len);
		peer_close_drain(&fx->srv);
		break;
	default:
		break;
	}
	buf_free(&b);
}

static void
free_srv_event(struct peer *p, enum io_event ev)
{
	const struct free_case *fc = p->fx->ctx;
	const char *line;
	size_t len;

	if (fc->where == FREE_IN_WITH_WRITE && ev == IO_EV_IN) {
		CHECK_INT(io_getline(p->io, &line, &len), IO_LINE_OK);
		io_pause(p->io);
		io_resume(p->io);           /* "B" is buffered: a re-delivery is scheduled */
		io_write(p->io, "bye\r\n", 5);
		CHECK(io_output_pending(p->io) > 0);
		peer_free(p);
		return;
	}
	if ((fc->where == FREE_DRAINED && ev == IO_EV_DRAINED) ||
	    (fc->where == FREE_TIMEOUT && ev == IO_EV_TIMEOUT)) {
		rec_event(p, ev == IO_EV_DRAINED ? "DRAINED" : "TIMEOUT");
		peer_free(p);
		return;
	}
	peer_default(p, ev);
}

static void
free_cli_gone(struct fix *fx)
{
	peer_free(&fx->cli);
}

static void
free_cli_resume(struct fix *fx)
{
	fx->cli.paused = false;
	io_resume(fx->cli.io);
}

static void
free_cli_event(struct peer *p, enum io_event ev)
{
	const struct free_case *fc = p->fx->ctx;

	switch (fc->where) {
	case FREE_IN_WITH_WRITE:
		if (ev == IO_EV_CONNECTED)
			io_write(p->io, "A\r\nB\r\n", 6);
		break;
	case FREE_CONNECTED:
		if (ev == IO_EV_CONNECTED) {
			io_write(p->io, "never sent\r\n", 12);
			peer_free(p);
			return;
		}
		break;
	case FREE_TLS_READY:
		if (ev == IO_EV_CONNECTED)
			io_start_tls_client(p->io, p->fx->cctx, "localhost", false);
		if (ev == IO_EV_TLS_READY) {
			io_write(p->io, "never sent\r\n", 12);
			peer_free(p);
			return;
		}
		break;
	case FREE_TLS_HANDSHAKE:
		if (ev == IO_EV_CONNECTED) {
			io_start_tls_client(p->io, p->fx->cctx, "localhost", false);
			/* free while the server's reply is on its way */
			fix_timer(p->fx, 0, free_cli_gone);
		}
		break;
	case FREE_CLOSE_DRAIN_PEER_GONE:
		if (ev == IO_EV_CONNECTED) {
			p->paused = true;
			io_pause(p->io);
			fix_timer(p->fx, 50, free_cli_gone);
		}
		break;
	case FREE_CLOSE_DRAIN_TIMEOUT:
		if (ev == IO_EV_CONNECTED) {
			p->paused = true;
			io_pause(p->io);
			fix_timer(p->fx, 300, free_cli_resume);
		}
		break;
	default:
		break;
	}
	peer_default(p, ev);
}

static void
free_listener_timeout(struct fix *fx)
{
	fix_stop_listening(fx);
}

static void
test_free_in_callback(void)
{
	for (size_t i = 0; i < RELAY_ARRAY_LEN(free_cases); i++) {
		const struct free_case *fc = &free_cases[i];
		struct fix fx;

		fix_init(&fx);
		fx.ctx = (void *)fc;
		fx.sctx = server_ctx(&certs[0]);
		fx.cctx = client_ctx(NULL);
		fx.srv.record = fx.cli.record = false;
		fx.on_accept = free_srv_accept;
		fx.srv.on_event = free_srv_event;
		fx.cli.on_event = free_cli_event;
		fix_connect(&fx);
		if (fc->where == FREE_CONNECTING) {
			peer_free(&fx.cli);         /* the connect request is cancelled */
			fix_timer(&fx, 100, free_listener_timeout);
		}
		fix_run(&fx, fc->name);
		switch (fc->where) {
		case FREE_DRAINED:
			/* DRAINED means written to the kernel: the client gets it all */
			CHECK_MSG(fx.cli.bytes == (1u << 20), "%s: client got %zu bytes", fc->name,
			    fx.cli.bytes);
			CHECK_STR(buf_cstr(&fx.srv.rec), "DRAINED|");
			break;
		case FREE_TIMEOUT:
			CHECK_STR(buf_cstr(&fx.srv.rec), "TIMEOUT|");
			CHECK_STR(buf_cstr(&fx.cli.rec), "EOF|");
			break;
		case FREE_CLOSE_DRAIN_TIMEOUT:
			/* the server gave up after 30 ms: the client got EOF, not 16 MiB */
			CHECK_INT(fx.cli.nev[IO_EV_EOF], 1);
			CHECK_MSG(fx.cli.bytes < (16u << 20), "%s: client got all %zu bytes", fc->name,
			    fx.cli.bytes);
			break;
		case FREE_CONNECTING:
		case FREE_CONNECTED:
			CHECK_INT(fx.cli.nev[IO_EV_ERROR], 0);
			CHECK_INT(fx.srv.nev[IO_EV_IN], 0);
			break;
		default:
			break;
		}
		fix_free(&fx);
	}
}

/* ------------------------------------------------------------------ */
/*
 * Peek mode (the PROXY protocol): the client sends a header ("HDR\n") and
 * its first line in one write.  The server, in peek mode with at most 8
 * octets shown, takes the header one octet at a time and then ends peek
 * mode: the line behind the header must arrive whole, as normal input, and
 * no peek may show more than 8 octets or anything taken already.
 */

struct peek_state {
	struct buf hdr;
	size_t max_shown;
	int bad_shown;          /* a peek that did not start with the next octet */
};

static void
peek_srv_accept(struct fix *fx)
{
	io_set_peek(fx->srv.io, 8);
}

static void
peek_srv_event(struct peer *p, enum io_event ev)
{
	struct peek_state *ps = p->fx->ctx;
	static const char want[] = "HDR\nline after\r\n";
	const char *q;
	size_t n;

	if (ev != IO_EV_IN || ps->hdr.len == 4 ||
	    (ps->hdr.len > 0 && ps->hdr.data[ps->hdr.len - 1] == '\n')) {
		peer_default(p, ev);
		return;
	}
	n = io_peek(p->io, &q);
	if (n > ps->max_shown)
		ps->max_shown = n;
	if (n == 0 || memcmp(q, want + ps->hdr.len, n < 8 ? n : 8) != 0)
		ps->bad_shown++;
	if (io_skip(p->io, 1) != 0) {
		rec_event(p, "SKIP-FAILED");
		peer_free(p);
		return;
	}
	buf_putc(&ps->hdr, q[0]);
	if (q[0] == '\n') {
		rec_add(p, ps->hdr.data, ps->hdr.len);
		io_set_peek(p->io, 0);
	}
}

static void
peek_cli_event(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_CONNECTED) {
		io_write(p->io, "HDR\nline after\r\n", 16);
		peer_close_drain(p);
		return;
	}
	peer_default(p, ev);
}

/* ------------------------------------------------------------------ */
/*
 * Writes the kernel takes at once (uv_try_write) and writes it takes in
 * part: whatever the kernel took, each write gets exactly one DRAINED, and
 * only after the loop has gone on (never from inside io_write() or the flush
 * after a callback: the deliver body pump writes its next chunk from DRAINED
 * and must not recurse), and every octet arrives in order.  The server
 * writes the first chunk from the accept (outside any io callback: flushed
 * inside io_write()) and each next one from DRAINED, then closes after the
 * drain.  Prepare and check handles count the loop's passes (each iteration
 * has one of each, around its poll).
 */

struct now_case {
	const char *name;
	size_t chunk;               /* octets per write (64-octet bulk lines) */
	size_t nchunks;
	uint64_t pause_ms;          /* the client does not read for this long at first */
};

static const struct now_case now_cases[] = {
	{ "one small write taken at once: one DRAINED, later", 64, 1, 0 },
	{ "a small write per DRAINED, each taken at once", 640, 200, 0 },
	{ "64 KiB per DRAINED, 16 MiB, to a fast reader", 64u << 10, 256, 0 },
	{ "64 KiB per DRAINED, 16 MiB, to a reader that pauses: whole, in part, not at once",
	  64u << 10, 256, 200 },
	{ "one 8 MiB write: part at once, the rest later, one DRAINED", 8u << 20, 1, 0 },
};

struct now_state {
	const struct now_case *nc;
	uv_prepare_t before_poll;
	uv_check_t after_poll;
	uint64_t passes;            /* prepare and check phases run so far */
	uint64_t wrote_at;          /* passes at the last write */
	size_t sent, drained;
	size_t early;               /* DRAINED before the loop went on from its write */
	bool in_write;              /* inside io_write() */
	size_t inside;              /* DRAINED while inside io_write() */
};

static void
now_before_poll(uv_prepare_t *h)
{
	struct now_state *ns = h->data;

	ns->passes++;
}

static void
now_after_poll(uv_check_t *h)
{
	struct now_state *ns = h->data;

	ns->passes++;
}

static void
now_stop_counting(struct now_state *ns)
{
	if (!uv_is_closing((uv_handle_t *)&ns->before_poll)) {
		uv_close((uv_handle_t *)&ns->before_poll, NULL);
		uv_close((uv_handle_t *)&ns->after_poll, NULL);
	}
}

static void
now_write_chunk(struct peer *p)
{
	struct now_state *ns = p->fx->ctx;
	size_t lines = ns->nc->chunk / 64;
	struct buf b = BUF_INIT;

	for (size_t i = 0; i < lines; i++)
		bulk_line(&b, ns->sent * lines + i, 64);
	ns->sent++;
	ns->wrote_at = ns->passes;
	ns->in_write = true;
	io_write(p->io, b.data, b.len);
	ns->in_write = false;
	buf_free(&b);
}

static void
now_srv_accept(struct fix *fx)
{
	struct now_state *ns = fx->ctx;

	now_write_chunk(&fx->srv);
	/* nothing reported before the write is done */
	CHECK_INT(fx->srv.nev[IO_EV_DRAINED], 0);
	CHECK_INT(io_output_pending(fx->srv.io), ns->nc->chunk);
}

static void
now_srv_event(struct peer *p, enum io_event ev)
{
	struct now_state *ns = p->fx->ctx;

	if (ev != IO_EV_DRAINED) {
		if (ev == IO_EV_ERROR || ev == IO_EV_EOF)
			now_stop_counting(ns);
		peer_default(p, ev);
		return;
	}
	ns->drained++;
	if (ns->in_write)
		ns->inside++;
	if (ns->passes == ns->wrote_at)
		ns->early++;
	if (ns->sent < ns->nc->nchunks) {
		now_write_chunk(p);
		return;
	}
	now_stop_counting(ns);
	peer_close_drain(p);
}

static void
now_cli_event(struct peer *p, enum io_event ev)
{
	struct now_state *ns = p->fx->ctx;

	if (ev == IO_EV_CONNECTED && ns->nc->pause_ms > 0) {
		p->paused = true;
		io_pause(p->io);
		fix_timer(p->fx, ns->nc->pause_ms, free_cli_resume);
	}
	peer_default(p, ev);
}

static void
test_peek(void)
{
	struct peek_state ps = { BUF_INIT, 0, 0 };
	struct fix fx;

	fix_init(&fx);
	fx.ctx = &ps;
	fx.on_accept = peek_srv_accept;
	fx.srv.record = true;
	fx.srv.on_event = peek_srv_event;
	fx.cli.on_event = peek_cli_event;
	fix_connect(&fx);
	fix_run(&fx, "peek");
	CHECK_STR(buf_cstr(&fx.srv.rec), "HDR\\n|line after\\r\\n|EOF|");
	CHECK_INT(ps.max_shown, 8);
	CHECK_INT(ps.bad_shown, 0);
	buf_free(&ps.hdr);
	fix_free(&fx);
}

static void
test_write_at_once(void)
{
	for (size_t i = 0; i < RELAY_ARRAY_LEN(now_cases); i++) {
		const struct now_case *nc = &now_cases[i];
		struct now_state ns;
		struct fix fx;

		memset(&ns, 0, sizeof(ns));
		ns.nc = nc;
		fix_init(&fx);
		fx.ctx = &ns;
		uv_prepare_init(&fx.loop, &ns.before_poll);
		uv_check_init(&fx.loop, &ns.after_poll);
		ns.before_poll.data = ns.after_poll.data = &ns;
		uv_prepare_start(&ns.before_poll, now_before_poll);
		uv_check_start(&ns.after_poll, now_after_poll);
		uv_unref((uv_handle_t *)&ns.before_poll);
		uv_unref((uv_handle_t *)&ns.after_poll);
		fx.srv.record = fx.cli.record = false;
		fx.on_accept = now_srv_accept;
		fx.srv.on_event = now_srv_event;
		fx.cli.on_line = bulk_on_line;
		fx.cli.on_event = now_cli_event;
		fix_connect(&fx);
		fix_run(&fx, nc->name);
		CHECK_MSG(ns.drained == nc->nchunks, "%s: %zu DRAINED for %zu writes", nc->name,
		    ns.drained, nc->nchunks);
		CHECK_MSG(ns.inside == 0, "%s: %zu DRAINED from inside io_write()", nc->name, ns.inside);
		CHECK_MSG(ns.early == 0, "%s: %zu DRAINED before the loop went on from the write",
		    nc->name, ns.early);
		CHECK_INT(fx.cli.bytes, nc->chunk * nc->nchunks);
		CHECK_INT(fx.cli.seq, nc->chunk * nc->nchunks / 64);
		CHECK_INT(fx.cli.badseq, 0);
		CHECK_INT(fx.cli.nev[IO_EV_EOF], 1);
		CHECK_INT(fx.srv.nev[IO_EV_ERROR], 0);
		fix_free(&fx);
	}
}

int
main(void)
{
	io_fixture_setup("test_io");

	test_lines();
	test_bytes();
	test_pause_resume();
	test_close_after_drain();
	test_backpressure();
	test_write_before_connect();
	test_refused();
	test_idle_timeout();
	test_deadline();
	test_nothing_after_eof();
	test_free_in_callback();
	test_peek();
	test_write_at_once();

	io_fixture_teardown();
	return check_done();
}
