/*
 * submit_proxy.c - the PROXY protocol (HAProxy's proxy-protocol.txt, v1 and
 * v2) on listeners marked { address = ...; proxy = true; }: a load balancer
 * in front of relayd tells, before anything else on the connection, the
 * address the client connected from.  That address then is the client's
 * everywhere (logs, Received:, per-IP limits and slots, AUTH throttling,
 * the queue's client_ip).
 *
 *   v1  "PROXY TCP4|TCP6 src dst sport dport\r\n", or "PROXY UNKNOWN ...\r\n"
 *       (at most 107 octets)
 *   v2  a 16-octet binary header (signature, version/command, family, length)
 *       and an address block: PROXY over TCP4/TCP6, or LOCAL (the proxy's own
 *       connection, a health check); TLVs are skipped
 *
 * LOCAL, UNKNOWN and v2's AF_UNSPEC keep the connection's own addresses, as
 * the spec says.  The header is read before the greeting (587) and before the
 * TLS handshake (465), under submit.proxy_timeout, and not an octet past it:
 * the io's peek mode shows the waiting octets and only the header's are
 * taken, so the client's first octets (a ClientHello in the same segment)
 * stay for TLS or the session.
 *
 * A connection to a proxy listener from outside submit.proxy_trusted, or
 * whose header is missing, garbled, oversized, unsupported or slow, is closed
 * without a word and logged (event=proxy_refused reason=...).
 *
 * From its accept, a trusted connection holds a place in max_connections
 * (submit_session_reserve()), as a process limit counts a connection from
 * its accept (Postfix's smtpd reads the header in the process the
 * connection occupies), and the header's client then takes its slot; the
 * per-IP limit and the unauthenticated share wait for the header, which
 * names whom to count.  Without a place, the connection is closed at once
 * (reason=max_connections): uncounted, each connection a trusted proxy
 * opened held a descriptor for up to proxy_timeout (daemon/DESCRIPTORS.md).
 *
 * Owns nothing but s->proxy_hdr (the header's octets so far).  The parser,
 * submit_proxy_parse(), is pure (tested from tables and fuzzed).
 */
#include "submit/submit_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

#define SUBMIT_PROXY_V1_MAX   107       /* the spec's longest line, CRLF included */
#define SUBMIT_PROXY_V2_HDR   16

static const char submit_proxy_v2sig[12] = "\r\n\r\n\0\r\nQUIT\n";
static const char submit_proxy_v1sig[6] = "PROXY ";

static int
submit_proxy_bad(struct submit_proxy_hdr *h, const char *reason)
{
	h->reason = reason;
	return SUBMIT_PROXY_BAD;
}

/* A v1 port: 1 to 5 digits, no leading zero, at most 65535. */
static int
submit_proxy_v1_port(const char *p, size_t len, uint16_t *port)
{
	unsigned long v = 0;
	size_t i;

	if (len == 0 || len > 5 || (len > 1 && p[0] == '0'))
		return -1;
	for (i = 0; i < len; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (unsigned long)(p[i] - '0');
	}
	if (v > 65535)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

/* An address field of v1 into ss with port. */
static int
submit_proxy_v1_addr(int family, const char *p, size_t len, uint16_t port,
    struct sockaddr_storage *ss)
{
	char text[INET6_ADDRSTRLEN];

	if (len == 0 || len >= sizeof(text))
		return -1;
	memcpy(text, p, len);
	text[len] = '\0';
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		if (inet_pton(AF_INET, text, &sin->sin_addr) != 1)
			return -1;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		if (inet_pton(AF_INET6, text, &sin6->sin6_addr) != 1)
			return -1;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
	}
	return 0;
}

/* v1: p[0..len) starts with "PROXY ". */
static int
submit_proxy_v1(const char *p, size_t len, struct submit_proxy_hdr *h)
{
	const char *f[6];
	size_t flen[6], i, nf, end, start;
	uint16_t sport, dport;
	int family;

	for (end = 0; end < len && p[end] != '\n'; end++) {
		unsigned char ch = (unsigned char)p[end];

		if (ch == '\r' && end + 1 < len && p[end + 1] != '\n')
			return submit_proxy_bad(h, "garbled");
		if (ch != '\r' && (ch < 0x20 || ch > 0x7e))
			return submit_proxy_bad(h, "garbled");
	}
	if (end == len) {
		if (len >= SUBMIT_PROXY_V1_MAX)
			return submit_proxy_bad(h, "oversized");
		return SUBMIT_PROXY_MORE;
	}
	if (end + 1 > SUBMIT_PROXY_V1_MAX)
		return submit_proxy_bad(h, "oversized");
	if (end == 0 || p[end - 1] != '\r')
		return submit_proxy_bad(h, "garbled");
	h->version = 1;
	h->len = end + 1;
	end--;                              /* the line without its CRLF */
	if (end >= 13 && memcmp(p + 6, "UNKNOWN", 7) == 0 && (end == 13 || p[13] == ' ')) {
		h->local = true;            /* the rest of the line is ignored */
		return SUBMIT_PROXY_DONE;
	}
	/* fields separated by single spaces */
	for (nf = 0, start = 0, i = 0; i <= end; i++) {
		if (i < end && p[i] != ' ')
			continue;
		if (nf == 6)
			return submit_proxy_bad(h, "garbled");
		f[nf] = p + start;
		flen[nf++] = i - start;
		start = i + 1;
	}
	if (nf < 2)
		return submit_proxy_bad(h, "garbled");
	if (flen[1] == 4 && memcmp(f[1], "TCP4", 4) == 0)
		family = AF_INET;
	else if (flen[1] == 4 && memcmp(f[1], "TCP6", 4) == 0)
		family = AF_INET6;
	else
		return submit_proxy_bad(h, "unsupported");
	if (nf != 6 ||
	    submit_proxy_v1_port(f[4], flen[4], &sport) != 0 ||
	    submit_proxy_v1_port(f[5], flen[5], &dport) != 0 ||
	    submit_proxy_v1_addr(family, f[2], flen[2], sport, &h->src) != 0 ||
	    submit_proxy_v1_addr(family, f[3], flen[3], dport, &h->dst) != 0)
		return submit_proxy_bad(h, "garbled");
	return SUBMIT_PROXY_DONE;
}

/* v2: p[0..len) starts with the whole 12-octet signature. */
static int
submit_proxy_v2(const unsigned char *p, size_t len, struct submit_proxy_hdr *h)
{
	size_t alen, total;
	unsigned cmd, fam;

	if (len < SUBMIT_PROXY_V2_HDR)
		return SUBMIT_PROXY_MORE;
	if ((p[12] & 0xf0) != 0x20)
		return submit_proxy_bad(h, "garbled");      /* version 2 only */
	cmd = p[12] & 0x0f;
	fam = p[13];
	alen = (size_t)p[14] << 8 | p[15];
	total = SUBMIT_PROXY_V2_HDR + alen;
	if (cmd > 1)
		return submit_proxy_bad(h, "garbled");
	if (total > SUBMIT_PROXY_MAX)
		return submit_proxy_bad(h, "oversized");
	if (cmd == 1 && fam != 0x00 && fam != 0x11 && fam != 0x21)
		return submit_proxy_bad(h, "unsupported");  /* UDP, AF_UNIX, unassigned */
	if (len < total)
		return SUBMIT_PROXY_MORE;
	h->version = 2;
	h->len = total;
	p += SUBMIT_PROXY_V2_HDR;
	if (cmd == 0 || fam == 0x00) {      /* LOCAL, or PROXY over AF_UNSPEC */
		h->local = true;
		return SUBMIT_PROXY_DONE;
	}
	if (fam == 0x11) {                  /* TCP over IPv4 */
		struct sockaddr_in *s = (struct sockaddr_in *)&h->src;
		struct sockaddr_in *d = (struct sockaddr_in *)&h->dst;

		if (alen < 12)
			return submit_proxy_bad(h, "garbled");
		memset(&h->src, 0, sizeof(h->src));
		memset(&h->dst, 0, sizeof(h->dst));
		s->sin_family = d->sin_family = AF_INET;
		memcpy(&s->sin_addr, p, 4);
		memcpy(&d->sin_addr, p + 4, 4);
		memcpy(&s->sin_port, p + 8, 2);
		memcpy(&d->sin_port, p + 10, 2);
		return SUBMIT_PROXY_DONE;
	}
	if (fam == 0x21) {                  /* TCP over IPv6 */
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&h->src;
		struct sockaddr_in6 *d = (struct sockaddr_in6 *)&h->dst;

		if (alen < 36)
			return submit_proxy_bad(h, "garbled");
		memset(&h->src, 0, sizeof(h->src));
		memset(&h->dst, 0, sizeof(h->dst));
		s->sin6_family = d->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, p, 16);
		memcpy(&d->sin6_addr, p + 16, 16);
		memcpy(&s->sin6_port, p + 32, 2);
		memcpy(&d->sin6_port, p + 34, 2);
		return SUBMIT_PROXY_DONE;
	}
	fatalx("%s: family 0x%02x", __func__, fam);        /* checked above */
}

int
submit_proxy_parse(const char *p, size_t len, struct submit_proxy_hdr *h)
{
	size_t n;

	memset(h, 0, sizeof(*h));
	if (len == 0)
		return SUBMIT_PROXY_MORE;
	/* which one it is, as soon as the first octets can tell */
	n = len < sizeof(submit_proxy_v2sig) ? len : sizeof(submit_proxy_v2sig);
	if (memcmp(p, submit_proxy_v2sig, n) == 0)
		return n < sizeof(submit_proxy_v2sig) ? SUBMIT_PROXY_MORE :
		    submit_proxy_v2((const unsigned char *)p, len, h);
	n = len < sizeof(submit_proxy_v1sig) ? len : sizeof(submit_proxy_v1sig);
	if (memcmp(p, submit_proxy_v1sig, n) == 0)
		return n < sizeof(submit_proxy_v1sig) ? SUBMIT_PROXY_MORE :
		    submit_proxy_v1(p, len, h);
	return submit_proxy_bad(h, "missing");
}

/* ---- the session's first phase ---- */

void
submit_proxy_refuse(struct submit_session *s, const char *reason)
{
	struct log_line l;

	log_begin(&l, LOG_NOTICE, "proxy_refused");
	log_kv(&l, "session", s->id);
	log_kv(&l, "client", s->ip);
	log_kv(&l, "listener", s->listener->text);
	log_kv(&l, "reason", reason);
	log_kvu(&l, "age_ms", util_mono_ms() - s->born_ms);
	log_end(&l);
	submit_session_close(s, NULL);
}

/* Text and port of a header address. */
static void
submit_proxy_name(const struct sockaddr_storage *ss, char *ip, size_t iplen, int *port)
{
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

		uv_ip6_name(s6, ip, iplen);
		if (port != NULL)
			*port = ntohs(s6->sin6_port);
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

		uv_ip4_name(s4, ip, iplen);
		if (port != NULL)
			*port = ntohs(s4->sin_port);
	}
}

int
submit_proxy_start(struct submit_session *s)
{
	const struct conf *c = s->conf;

	if (io_peer_addr(s->io)->sa_family == AF_UNSPEC) {
		/* reset before the accept (a load balancer's connect-only health
		 * check): nobody to refuse, nothing to log but the disconnect */
		submit_session_close(s, NULL);
		return -1;
	}
	if (!conf_cidr_match(c->submit.proxy_trusted, c->submit.nproxy_trusted,
	    io_peer_addr(s->io))) {
		submit_proxy_refuse(s, "untrusted");
		return -1;
	}
	/* counted from the accept, as a process limit counts (Postfix's smtpd) */
	if (submit_session_reserve(s) != 0) {
		submit_proxy_refuse(s, "max_connections");
		return -1;
	}
	io_set_peek(s->io, SUBMIT_PROXY_MAX);
	submit_enter_state(s, SUBMIT_S_PROXY);
	return 0;
}

void
submit_proxy_input(struct submit_session *s)
{
	struct submit_proxy_hdr h;
	const char *p;
	size_t n, had = s->proxy_hdr.len;
	int r;

	n = io_peek(s->io, &p);
	if (n > SUBMIT_PROXY_MAX - had)
		n = SUBMIT_PROXY_MAX - had;
	buf_append(&s->proxy_hdr, p, n);
	r = submit_proxy_parse(s->proxy_hdr.data, s->proxy_hdr.len, &h);
	if (r == SUBMIT_PROXY_BAD) {
		submit_proxy_refuse(s, h.reason);
		return;
	}
	/* MORE: every octet so far is the header's; DONE: its first h.len */
	n = r == SUBMIT_PROXY_DONE ? h.len - had : s->proxy_hdr.len - had;
	if (io_skip(s->io, n) != 0) {
		submit_proxy_refuse(s, "error");
		return;
	}
	if (r == SUBMIT_PROXY_MORE)
		return;
	io_set_peek(s->io, 0);
	buf_free(&s->proxy_hdr);
	snprintf(s->proxy_ip, sizeof(s->proxy_ip), "%s", s->ip);
	if (!h.local) {
		submit_proxy_name(&h.src, s->ip, sizeof(s->ip), &s->port);
		submit_proxy_name(&h.dst, s->local_ip, sizeof(s->local_ip), NULL);
	}
	submit_session_begin(s, h.version, h.local);
}
