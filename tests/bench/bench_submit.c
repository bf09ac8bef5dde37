/*
 * bench_submit.c - load generator for the submission benchmark: C client
 * threads, each holding one STARTTLS + AUTH PLAIN session to relayd and
 * submitting messages back to back (MAIL, RCPT, DATA pipelined).  Prints
 * messages/s and the p50/p99 time from the end of DATA to the 250 reply.
 * It is a benchmark, never a test: tests/bench/submit_bench.py drives it.
 *
 *   bench_submit HOST PORT USER PASSWORD FROM RCPT MESSAGES SESSIONS SIZE
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

struct bench {
	const char *host, *user, *password, *from, *rcpt;
	int port, sessions;
	long messages, size;
	SSL_CTX *ctx;
	pthread_mutex_t lock;
	long next;              /* next message number to claim */
	double *lat;            /* seconds, one per message */
	long failures;
};

struct conn {
	int fd;
	SSL *ssl;
	char in[16384];
	size_t inlen;
};

static double
now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
c_write(struct conn *c, const char *p, size_t n)
{
	while (n > 0) {
		int w = c->ssl ? SSL_write(c->ssl, p, (int)n) : (int)write(c->fd, p, n);
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Read one whole (possibly multi-line) reply; return its code or -1. */
static int
c_reply(struct conn *c)
{
	for (;;) {
		char *lf;
		while ((lf = memchr(c->in, '\n', c->inlen)) != NULL) {
			size_t linelen = (size_t)(lf - c->in) + 1;
			int code = atoi(c->in);
			int last = linelen > 3 && c->in[3] != '-';
			memmove(c->in, c->in + linelen, c->inlen - linelen);
			c->inlen -= linelen;
			if (last)
				return code;
		}
		if (c->inlen == sizeof(c->in))
			return -1;
		int r = c->ssl ? SSL_read(c->ssl, c->in + c->inlen, (int)(sizeof(c->in) - c->inlen))
		    : (int)read(c->fd, c->in + c->inlen, sizeof(c->in) - c->inlen);
		if (r <= 0)
			return -1;
		c->inlen += (size_t)r;
	}
}

static int
c_cmd(struct conn *c, const char *line, int want)
{
	if (c_write(c, line, strlen(line)) != 0)
		return -1;
	return c_reply(c) == want ? 0 : -1;
}

static int
session_open(struct bench *b, struct conn *c)
{
	struct sockaddr_in sin;
	unsigned char raw[512], enc[1024];
	char line[1200];
	int one = 1, n;

	memset(c, 0, sizeof(*c));
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)b->port);
	inet_pton(AF_INET, b->host, &sin.sin_addr);
	if (connect(c->fd, (struct sockaddr *)&sin, sizeof(sin)) != 0)
		return -1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (c_reply(c) != 220 || c_cmd(c, "EHLO bench.test\r\n", 250) != 0 ||
	    c_cmd(c, "STARTTLS\r\n", 220) != 0)
		return -1;
	c->ssl = SSL_new(b->ctx);
	SSL_set_fd(c->ssl, c->fd);
	if (SSL_connect(c->ssl) != 1)
		return -1;
	if (c_cmd(c, "EHLO bench.test\r\n", 250) != 0)
		return -1;
	n = snprintf((char *)raw, sizeof(raw), "%c%s%c%s", 0, b->user, 0, b->password);
	EVP_EncodeBlock(enc, raw, n);
	snprintf(line, sizeof(line), "AUTH PLAIN %s\r\n", enc);
	return c_cmd(c, line, 235);
}

static void *
worker(void *arg)
{
	struct bench *b = arg;
	struct conn c;
	char *msg, head[1024];
	size_t hl, i;

	if (session_open(b, &c) != 0) {
		fprintf(stderr, "bench_submit: session setup failed\n");
		pthread_mutex_lock(&b->lock);
		b->failures++;
		pthread_mutex_unlock(&b->lock);
		return NULL;
	}
	/* A message of about b->size bytes: headers, then 76-character lines. */
	msg = malloc((size_t)b->size + 2048);
	hl = (size_t)snprintf(msg, 2048, "From: <%s>\r\nTo: <%s>\r\nSubject: bench\r\n"
	    "Date: Sun, 22 Nov 2026 11:00:00 +0000\r\nMessage-ID: <b@bench.test>\r\n\r\n",
	    b->from, b->rcpt);
	for (i = hl; i + 78 <= (size_t)b->size; i += 78) {
		memset(msg + i, 'x', 76);
		msg[i + 76] = '\r';
		msg[i + 77] = '\n';
	}
	memcpy(msg + i, ".\r\n", 4);
	i += 3;
	snprintf(head, sizeof(head), "MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n", b->from, b->rcpt);

	for (;;) {
		long k;
		double t0;

		pthread_mutex_lock(&b->lock);
		k = b->next < b->messages ? b->next++ : -1;
		pthread_mutex_unlock(&b->lock);
		if (k < 0)
			break;
		if (c_write(&c, head, strlen(head)) != 0 || c_reply(&c) != 250 ||
		    c_reply(&c) != 250 || c_reply(&c) != 354)
			goto fail;
		if (c_write(&c, msg, i - 3) != 0)
			goto fail;
		t0 = now_s();
		if (c_write(&c, ".\r\n", 3) != 0 || c_reply(&c) != 250)
			goto fail;
		b->lat[k] = now_s() - t0;
	}
	c_cmd(&c, "QUIT\r\n", 221);
	SSL_free(c.ssl);
	close(c.fd);
	free(msg);
	return NULL;
fail:
	fprintf(stderr, "bench_submit: transaction failed\n");
	pthread_mutex_lock(&b->lock);
	b->failures++;
	pthread_mutex_unlock(&b->lock);
	free(msg);
	return NULL;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
	struct bench b;
	pthread_t *th;
	double t0, t1;
	long i, done = 0;
	int s;

	if (argc != 10) {
		fprintf(stderr, "usage: bench_submit HOST PORT USER PASSWORD FROM RCPT MESSAGES SESSIONS SIZE\n");
		return 2;
	}
	memset(&b, 0, sizeof(b));
	b.host = argv[1];
	b.port = atoi(argv[2]);
	b.user = argv[3];
	b.password = argv[4];
	b.from = argv[5];
	b.rcpt = argv[6];
	b.messages = atol(argv[7]);
	b.sessions = atoi(argv[8]);
	b.size = atol(argv[9]);
	b.lat = calloc((size_t)b.messages, sizeof(double));
	pthread_mutex_init(&b.lock, NULL);
	b.ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_verify(b.ctx, SSL_VERIFY_NONE, NULL);

	th = calloc((size_t)b.sessions, sizeof(*th));
	t0 = now_s();
	for (s = 0; s < b.sessions; s++)
		pthread_create(&th[s], NULL, worker, &b);
	for (s = 0; s < b.sessions; s++)
		pthread_join(th[s], NULL);
	t1 = now_s();

	for (i = 0; i < b.messages; i++)
		if (b.lat[i] > 0)
			b.lat[done++] = b.lat[i];
	qsort(b.lat, (size_t)done, sizeof(double), cmp_double);
	printf("messages=%ld sessions=%d size=%ld failures=%ld\n", done, b.sessions, b.size, b.failures);
	printf("elapsed_s=%.3f msgs_per_s=%.0f\n", t1 - t0, done / (t1 - t0));
	if (done > 0)
		printf("eod_to_250_ms p50=%.2f p99=%.2f max=%.2f\n", b.lat[done / 2] * 1e3,
		    b.lat[(long)(done * 0.99)] * 1e3, b.lat[done - 1] * 1e3);
	return b.failures ? 1 : 0;
}
