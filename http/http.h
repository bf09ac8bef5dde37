/*
 * http.h - the http module's one public face: an asynchronous HTTPS client
 * on the one libuv loop (libcurl's multi-socket interface driven by
 * uv_poll and uv_timer: the loop never blocks).  For MTA-STS policies
 * (RFC 8461 3.3: GET) and TLSRPT reports (RFC 8460 3: POST).
 *
 * What a request does (http_start):
 *   - only https:// URLs; the host name is resolved by relayd's own
 *     resolver (dns/, router.dns_servers) and its addresses are handed to
 *     curl (CURLOPT_RESOLVE): curl never resolves a name itself;
 *   - the server certificate is always verified, chain and name (against
 *     rq->ca_file, else the system trust store); TLS 1.2 and up;
 *   - no redirects (a 3xx is an answer like any other), no proxy (the
 *     environment's *_proxy variables are ignored), no cookies, no .netrc;
 *   - the response body is capped at rq->max_size bytes: a longer one
 *     fails the request (HTTP_E_TOO_BIG), it is not cut short;
 *   - rq->timeout_ms bounds the whole request, resolution included.
 * Any HTTP status is a success of the transfer (res->err 0, res->status
 * says what the server answered); res->err says why there was no answer.
 *
 * Ownership: a request copies what it needs from rq (URL, body, headers)
 * at http_start.  The callback gets the response for the duration of the
 * call and may take res->body (buf_steal); the client frees the rest.
 * Callbacks fire exactly once, always from the loop, never from inside
 * http_start(); never after http_cancel() or http_close().  The client
 * borrows the resolver: close the client (http_close) before the resolver.
 */
#ifndef RELAY_HTTP_H
#define RELAY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "common/buf.h"

struct dns_resolver;
struct http_client;
struct http_req;

#define HTTP_DEFAULT_MAX_SIZE   (1024 * 1024)   /* bytes of response body */
#define HTTP_DEFAULT_TIMEOUT_MS 60000
/*
 * Connections a client has open at once, transfers and curl's cache of
 * finished ones together (curl closes an idle one for a new transfer): at
 * most this many transfers run; one more waits in the client (http.c) for
 * one to end, and its timeout (rq->timeout_ms) starts only then.  MTA-STS fetches one policy per domain, so
 * without a cap a burst of new domains had as many connections.
 */
#define HTTP_MAX_CONNS          8
/*
 * Descriptors a client may hold: two per connection, since a connection
 * being made to a name with IPv6 and IPv4 addresses (CURLOPT_RESOLVE lists
 * both) has a socket of each family open at once (curl's happy eyeballs
 * starts the second family's after 200 ms without closing the first); and
 * curl's wake-up socketpair.
 */
#define HTTP_FD_NEED            (2 * HTTP_MAX_CONNS + 2)

enum http_method { HTTP_GET = 0, HTTP_POST };

/* Why a request got no HTTP answer (res->err); all are temporary in nature. */
enum http_error {
	HTTP_OK = 0,
	HTTP_E_RESOLVE,         /* the host name did not resolve (res->error says how) */
	HTTP_E_CONNECT,         /* no connection to any address */
	HTTP_E_TLS,             /* handshake or certificate failure */
	HTTP_E_TIMEOUT,         /* rq->timeout_ms passed */
	HTTP_E_TOO_BIG,         /* the body exceeded rq->max_size */
	HTTP_E_OTHER,           /* protocol error, reset, ... */
};

struct http_request {
	enum http_method method;
	const char *url;            /* "https://host[:port]/path" */
	const char *content_type;   /* POST: the body's Content-Type, or NULL */
	const void *body;           /* POST: the body (copied), body_len bytes */
	size_t body_len;
	const char *const *headers; /* more request header lines ("Name: value"),
	                               NULL-terminated, or NULL */
	size_t max_size;            /* response body cap; 0 = HTTP_DEFAULT_MAX_SIZE */
	unsigned timeout_ms;        /* whole request; 0 = HTTP_DEFAULT_TIMEOUT_MS */
	const char *ca_file;        /* PEM trust anchors; NULL or "" = the system store */
};

struct http_response {
	enum http_error err;        /* HTTP_OK when the server answered */
	char error[256];            /* err != HTTP_OK: why, one line */
	long status;                /* the HTTP status (200, 404, ...), 0 without an answer */
	char content_type[128];     /* the response's Content-Type as sent, or "" */
	struct buf body;            /* the response body (err == HTTP_OK); may be taken */
	char ip[64];                /* the address that answered, or "" */
};

/* The callback: res lives until it returns (see Ownership above). */
typedef void http_cb(void *arg, struct http_response *res);

/*
 * A client on loop that resolves names with dns (borrowed; it must outlive
 * the client).  Calls curl_global_init once per process on first use.
 * NULL with a message in err when libcurl cannot be set up.
 */
struct http_client *http_new(uv_loop_t *loop, struct dns_resolver *dns, struct buf *err);
/*
 * Start a request.  NULL, with a one-line message in err, for a request
 * that cannot be made (not https, malformed URL, POST without a body
 * pointer for body_len > 0, client closing): cb then never fires.
 */
struct http_req *http_start(struct http_client *c, const struct http_request *rq, http_cb *cb,
    void *arg, struct buf *err);
/* Forget a request whose callback has not fired yet: it never will. */
void http_cancel(struct http_req *q);
/* Requests whose callback is still due (tests, relayctl). */
size_t http_pending(const struct http_client *c);
/* Of those, resolved and waiting for one of the HTTP_MAX_CONNS transfers (tests). */
size_t http_waiting(const struct http_client *c);
/* A name for logs: "resolve", "connect", "tls", "timeout", "too-big", "other", "ok". */
const char *http_error_name(enum http_error e);
/*
 * Cancel every request (no callback fires), close the client's handles
 * and free it; done(arg), once everything is closed, from the loop (may be
 * NULL).  Safe from inside a callback of this client.
 */
void http_close(struct http_client *c, void (*done)(void *arg), void *arg);

#endif
