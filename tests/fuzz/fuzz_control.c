/*
 * fuzz_control.c - fuzz target: the control protocol (daemon/control.c and
 * the relayctl handlers of daemon/control_*.c) as relayd serves it: a real
 * control socket (control_new()) of a real router (router_new(), a queue
 * on tmpfs holding a few messages, every route pointing at a closed port)
 * on a libuv loop; each input is sent by a client over the Unix socket,
 * the write side is shut unless the input ends as a whole request does
 * ("\0\0", as relayctl sends it: relayd drops a request whose client has
 * gone, and a shut side looks the same, so queue show, which answers after
 * a read on the thread pool, would often go unanswered), and the loop runs
 * until relayd has answered and closed the connection.  The request framing (argv strings, each ending
 * in NUL, then one more NUL), the size and argument limits, the command
 * table, every command's argument parsing and its output are exercised.
 *
 * Input: the bytes a client sends, except that an argument "%0", "%1" or
 * "%2" is replaced by the queue id of one of the queued messages (the
 * fuzzer cannot guess ids; a message deleted or bounced by an input is
 * queued again before the next).  A "reload" request is left out
 * (return -1): it re-reads the configuration through modules this target
 * does not start (fuzz_conf covers the loader).  Seeds:
 * tests/fuzz/corpus/control/ (what relayctl sends for every verb).
 */
#include "fuzz.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/relay.h"
#include "router/router.h"

#define FUZZ_NMSG 3

static uv_loop_t fuzz_loop;
static struct relay fuzz_relay;
static char fuzz_sock[600];
static char fuzz_qids[FUZZ_NMSG][QID_MAX];
static int fuzz_committing;

static void
fuzz_commit_cb(void *arg, int err, const char *qid)
{
	char *slot = arg;

	if (err != 0)
		abort();
	snprintf(slot, QID_MAX, "%s", qid);
	fuzz_committing--;
}

/* Queue message i (as a submission leaves it) into its slot, unless it is there. */
static void
fuzz_queue_msg(struct router *r, int i)
{
	static const char *const rcpt[FUZZ_NMSG] = { "bob@example.net", "carol@example.com",
	    "\"d e\"@example.net" };
	struct env_rcpt rc[2];
	struct envelope env;
	struct queue_txn *t;
	struct buf body = BUF_INIT;

	if (fuzz_qids[i][0] != '\0' && sched_find(router_sched(r), fuzz_qids[i]) != NULL)
		return;
	memset(&env, 0, sizeof(env));
	memset(rc, 0, sizeof(rc));
	rc[0].addr = (char *)rcpt[i];
	rc[1].addr = (char *)"dave@example.org";
	rc[1].orcpt = (char *)"rfc822;dave@example.org";
	rc[1].notify = ENV_NOTIFY_FAILURE | ENV_NOTIFY_DELAY;
	env.sender = (char *)(i == 2 ? "" : "alice@example.org");
	env.rcpts = rc;
	env.nrcpts = i == 1 ? 2 : 1;
	env.auth_user = (char *)"alice";
	env.client_ip = (char *)"127.0.0.1";
	env.client_helo = (char *)"client.test";
	env.arrival_ms = util_now_ms() - (uint64_t)i * 3600000;
	if (router_txn_begin(r, &env, &t) != 0)
		abort();
	buf_printf(&body, "Received: from client.test ([127.0.0.1]) by relay.test\r\n"
	    "From: Alice <alice@example.org>\r\nTo: %s\r\nSubject: message %d\r\n\r\n"
	    "body %d\r\n", rcpt[i], i, i);
	if (queue_txn_write(t, body.data, body.len) != 0)
		abort();
	buf_free(&body);
	fuzz_committing++;
	queue_txn_commit(t, fuzz_commit_cb, fuzz_qids[i]);
	while (fuzz_committing > 0)
		uv_run(&fuzz_loop, UV_RUN_ONCE);
	/* the 250 comes from the journal a moment before the scheduler has it */
	while (sched_find(router_sched(r), fuzz_qids[i]) == NULL)
		uv_run(&fuzz_loop, UV_RUN_ONCE);
}

/* The input with "%0".."%2" arguments replaced by queue ids (caller frees). */
static char *
fuzz_request(const uint8_t *data, size_t size, size_t *outlen)
{
	struct buf out = BUF_INIT;
	size_t i = 0, n;

	while (i < size) {
		n = strnlen((const char *)data + i, size - i);
		if (n == 2 && data[i] == '%' && data[i + 1] >= '0' && data[i + 1] < '0' + FUZZ_NMSG)
			buf_puts(&out, fuzz_qids[data[i + 1] - '0']);
		else
			buf_append(&out, data + i, n);
		i += n;
		if (i < size) {
			buf_putc(&out, '\0');
			i++;
		}
	}
	*outlen = out.len;
	return buf_steal(&out);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct buf err = BUF_INIT, text = BUF_INIT;
	char path[600];
	const char *dir = fuzz_tmpdir();

	(void)argc;
	(void)argv;
	log_set_level(LOG_CRIT);
	snprintf(fuzz_sock, sizeof(fuzz_sock), "%s/control.sock", dir);
	snprintf(path, sizeof(path), "%s/relayd.conf", dir);
	buf_printf(&text,
	    "hostname = \"relay.test\";\n"
	    "queue_dir = \"%s/queue\";\n"
	    "control_socket = \"%s\";\n"
	    "router: {\n"
	    "  dns_servers = [ \"127.0.0.1:9\" ];\n"
	    "  routes = ( { domain = \"*\"; hosts = [ \"127.0.0.1:9\" ]; } );\n"
	    "  retry_intervals = [ \"1h\" ];\n"
	    "  host_backoff = [ \"1h\", \"1h\" ];\n"
	    "};\n", dir, fuzz_sock);
	fuzz_write_file(path, text.data, text.len);
	buf_free(&text);

	if (uv_loop_init(&fuzz_loop) != 0)
		abort();
	memset(&fuzz_relay, 0, sizeof(fuzz_relay));
	fuzz_relay.magic = RELAY_MAGIC;
	fuzz_relay.loop = &fuzz_loop;
	fuzz_relay.stats.start_ms = util_now_ms();
	if (conf_load(path, &fuzz_relay.conf, &err) != 0 ||
	    router_new(&fuzz_loop, fuzz_relay.conf, &fuzz_relay.stats, &fuzz_relay.router, &err) != 0 ||
	    control_new(&fuzz_relay, fuzz_sock, &fuzz_relay.control, &err) != 0) {
		fprintf(stderr, "fuzz_control: %s\n", buf_cstr(&err));
		abort();
	}
	buf_free(&err);
	return 0;
}

/* The command word of a request: its first argument that is not "--json". */
static bool
fuzz_is_reload(const uint8_t *data, size_t size)
{
	size_t i = 0, n;

	while (i < size && data[i] != '\0') {
		n = strnlen((const char *)data + i, size - i);
		if (!(n == 6 && memcmp(data + i, "--json", 6) == 0))
			return n == 6 && memcmp(data + i, "reload", 6) == 0;
		i += n + 1;
	}
	return false;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t insize)
{
	struct sockaddr_un sun;
	struct pollfd pfd;
	char rbuf[65536], *req;
	size_t off = 0, size;
	bool shut;
	uint64_t deadline;
	ssize_t n;
	int fd;

	if (fuzz_is_reload(data, insize))
		return -1;
	for (int i = 0; i < FUZZ_NMSG; i++)
		fuzz_queue_msg(fuzz_relay.router, i);
	req = fuzz_request(data, insize, &size);
	/* a whole request is answered without the EOF; any other needs it */
	shut = !(size >= 1 && req[size - 1] == '\0' && (size == 1 || req[size - 2] == '\0'));
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(fuzz_sock) >= sizeof(sun.sun_path))
		abort();
	memcpy(sun.sun_path, fuzz_sock, strlen(fuzz_sock));
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		perror("fuzz_control: connect");
		abort();
	}
	deadline = util_mono_ms() + 10000;
	for (;;) {
		uv_run(&fuzz_loop, UV_RUN_NOWAIT);
		while (off < size && (n = write(fd, req + off, size - off)) > 0)
			off += (size_t)n;
		if (off == size && shut) {
			shutdown(fd, SHUT_WR);
			shut = false;
		}
		n = read(fd, rbuf, sizeof(rbuf));
		if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR))
			break;          /* relayd answered (or refused) and closed */
		if (n > 0)
			continue;
		if (util_mono_ms() > deadline) {
			fprintf(stderr, "fuzz_control: no answer and no close in 10 s\n");
			abort();
		}
		pfd.fd = fd;
		pfd.events = POLLIN;
		(void)poll(&pfd, 1, 1);
	}
	close(fd);
	free(req);
	/* the connection's close callback, so that nothing is left per input */
	uv_run(&fuzz_loop, UV_RUN_NOWAIT);
	uv_run(&fuzz_loop, UV_RUN_NOWAIT);
	return 0;
}
