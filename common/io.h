/*
 * io.h - one I/O object for both directions: a TCP stream (libuv) with
 * optional TLS (OpenSSL over memory BIOs), line-oriented input and buffered
 * output.  submit/ and deliver/ never touch SSL* or uv_buf_t themselves.
 *
 * Events go to one callback:
 *   IO_EV_CONNECTED  io_connect() succeeded
 *   IO_EV_IN         input is buffered: call io_getline() until it returns IO_LINE_NONE
 *   IO_EV_TLS_READY  the TLS handshake finished (io_tls_version() etc. valid)
 *   IO_EV_DRAINED    all queued output has been written to the kernel
 *   IO_EV_TIMEOUT    no input within the timeout set by io_set_timeout(), or
 *                    the deadline set by io_set_deadline() passed
 *   IO_EV_EOF        the peer closed the connection
 *   IO_EV_ERROR      connection or TLS error; io_error() says which
 * After EOF, ERROR or TIMEOUT the owner must io_free() (it may write a last
 * reply first on TIMEOUT).  Output written from inside the callback is flushed
 * when the callback returns; output written elsewhere is flushed at once.
 *
 * Ownership: the owner calls io_free(); the io then closes its handles, frees
 * itself in the libuv close callbacks and never calls the callback again.
 */
#ifndef RELAY_IO_H
#define RELAY_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>
#include <openssl/ssl.h>

#include "common/tlsa.h"

struct io;

enum io_event {
	IO_EV_CONNECTED,
	IO_EV_IN,
	IO_EV_TLS_READY,
	IO_EV_DRAINED,
	IO_EV_TIMEOUT,
	IO_EV_EOF,
	IO_EV_ERROR,
};

enum io_line {
	IO_LINE_NONE = 0,   /* no complete line buffered */
	IO_LINE_OK,         /* (line, len): one line including its terminating "\n" */
	IO_LINE_LONG,       /* a line exceeded the maximum; it is discarded up to its "\n"
	                     * ((line, len): its first octets, valid until the next io call) */
};

/* What kind of failure an IO_EV_ERROR was (for the router's host health). */
enum io_error {
	IO_ERR_NONE = 0,
	IO_ERR_REFUSED,     /* connection refused */
	IO_ERR_UNREACH,     /* no route, network unreachable */
	IO_ERR_CONNECT_TIMEOUT,
	IO_ERR_RESET,       /* reset or broken pipe */
	IO_ERR_TLS,         /* handshake or record layer failure */
	IO_ERR_OTHER,
};

typedef void io_cb(struct io *io, enum io_event ev, void *arg);

struct io *io_new(uv_loop_t *loop, io_cb *cb, void *arg);
/* Change the callback argument (e.g. when a pooled connection changes owner). */
void io_set_callback(struct io *io, io_cb *cb, void *arg);

/* Accept a connection from a listening stream; reading starts at once. 0 or -1. */
int io_accept(struct io *io, uv_stream_t *server);
/* Connect to sa (optionally from a source address); IO_EV_CONNECTED or IO_EV_ERROR follows. */
int io_connect(struct io *io, const struct sockaddr *sa, uint64_t timeout_ms);

/*
 * Start TLS.  Any input already buffered (plaintext pipelined behind STARTTLS)
 * is discarded, as RFC 3207 and CVE-2011-0411 demand; pending plaintext output
 * is flushed first.  IO_EV_TLS_READY or IO_EV_ERROR follows.  For a client,
 * servername is sent as SNI and, when verify is true, the peer certificate
 * must chain to the context's trust store and match servername.
 */
int io_start_tls_server(struct io *io, SSL_CTX *ctx);
int io_start_tls_client(struct io *io, SSL_CTX *ctx, const char *servername, bool verify);
/*
 * The same with the check and its enforcement apart: check makes OpenSSL
 * check the chain and servername (the outcome is io_tls_verify_result());
 * verify also fails the handshake when the check fails (MTA-STS testing
 * checks without enforcing).
 */
int io_start_tls_client_check(struct io *io, SSL_CTX *ctx, const char *servername, bool check,
    bool verify);
/*
 * Start TLS as a client authenticated by DANE TLSA records (RFC 7671): SNI
 * and the DANE-TA reference identifier are basedomain (the MX host name);
 * DANE-EE matches skip name checks.  A peer matching no record fails the
 * handshake ("certificate verify failed").  -1 when none of the records can
 * be used.  The records are copied.
 */
int io_start_tls_client_dane(struct io *io, SSL_CTX *ctx, const char *basedomain,
    const struct tlsa_rr *tlsa, size_t ntlsa);

bool io_is_tls(const struct io *io);
const char *io_tls_version(const struct io *io);   /* "TLSv1.3" or NULL */
const char *io_tls_cipher(const struct io *io);    /* "TLS_AES_256_GCM_SHA384" or NULL */
int io_tls_cipher_bits(const struct io *io);
/* Why the last TLS failure happened, for logs ("certificate verify failed: ..."). */
const char *io_tls_error(const struct io *io);
/* The peer certificate's check (an X509_V_* code, X509_V_OK = 0) as it stood when
 * the handshake ended or failed; meaningful when a check was asked for. */
long io_tls_verify_result(const struct io *io);

/* Idle timeout: IO_EV_TIMEOUT if nothing is read for ms (0 = none). Restarts on every read.
 * Replaces a deadline. */
void io_set_timeout(struct io *io, uint64_t ms);
/*
 * Deadline: IO_EV_TIMEOUT ms from now (0 = none), however much is read
 * meanwhile (a client that drips one byte at a time does not move it).
 * Replaces the idle timeout; setting it again moves it.  For an accepted
 * or connected io (nothing while connecting: io_connect() has its own).
 * After io_close_after_drain() the drain is bounded as without a timeout
 * (60 s).
 */
void io_set_deadline(struct io *io, uint64_t ms);
/* Milliseconds until the deadline (0 if none is set or it has passed). */
uint64_t io_deadline_left(const struct io *io);
/* Longest accepted line including CRLF (default 1000). */
void io_set_max_line(struct io *io, size_t max);

/* Take the next line from the input buffer (see enum io_line). The pointer is
 * valid until the next io_* call on this io. */
enum io_line io_getline(struct io *io, const char **line, size_t *len);
/* Take up to max octets of buffered input as they are, line ends or not (BDAT
 * chunk data, RFC 3030).  Returns how many (0: none buffered); *p is valid
 * until the next io_* call on this io.  Call it only after a complete line
 * (never while the rest of an over-long line is being discarded). */
size_t io_getbytes(struct io *io, size_t max, const char **p);
/* Bytes of input buffered but not yet taken. */
size_t io_input_pending(const struct io *io);

/*
 * Peek mode, for a header whose sender may put the peer's first octets right
 * behind it in one segment (the PROXY protocol): while max > 0 nothing is
 * read from the socket.  IO_EV_IN says octets wait there; io_peek() shows up
 * to max of them without taking any, io_skip() takes n of those shown.  On
 * each IO_EV_IN the owner takes at least one octet, or closes, or ends peek
 * mode (io_set_peek(io, 0)): else the event repeats.  Start it right after
 * io_accept(), before any input is read; once ended, input goes on as usual
 * from the first octet not taken (for TLS too).
 */
void io_set_peek(struct io *io, size_t max);
/* In IO_EV_IN of peek mode: the octets waiting (not taken); *p valid until the callback returns. */
size_t io_peek(struct io *io, const char **p);
/* Take n of the octets io_peek() showed.  0, or -1 if the socket failed (the owner closes). */
int io_skip(struct io *io, size_t n);

/* Stop and resume delivering IO_EV_IN (e.g. while a queue commit is pending).
 * Resuming re-delivers IO_EV_IN soon if input is buffered.  An EOF that
 * arrives while paused with input buffered is reported after that input. */
void io_pause(struct io *io);
void io_resume(struct io *io);

void io_write(struct io *io, const void *p, size_t len);
void io_printf(struct io *io, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
size_t io_output_pending(const struct io *io);
void io_flush(struct io *io);

/* Free when all output has been written (e.g. after "221 Bye").  The owner
 * lets go here: the callback is never called again, and a write error or
 * the idle timeout (60 s if none is set) frees the io before it drains. */
void io_close_after_drain(struct io *io);
/*
 * A last word that holds no descriptor: the output written so far (and a
 * TLS close_notify) goes to the kernel as far as it takes it at once, what
 * it does not take is dropped, and the socket is closed before this
 * returns; the io is freed as by io_free().  For a connection whose slot
 * is already gone (a refusal, an eviction): io_close_after_drain() would
 * keep its socket until the output is written (one loop turn; up to the
 * drain timeout when the peer does not read).
 */
void io_close_now(struct io *io);
/* Close now and free; the callback is never called again. */
void io_free(struct io *io);
/*
 * Have closed(arg) called once, when the io has closed its socket and is
 * about to free itself, whoever closed it (io_free(), or the end of a
 * close_after_drain): from a libuv close callback, never from inside an io
 * call.  For an owner that counts the sockets it let go (deliver/'s QUITs).
 */
void io_set_closed_cb(struct io *io, void (*closed)(void *arg), void *arg);

enum io_error io_error(const struct io *io);
const char *io_error_text(const struct io *io);    /* "connection refused", ... */
/* Peer and local address as text ("127.0.0.1", "::1") and port. */
const char *io_peer_ip(const struct io *io);
int io_peer_port(const struct io *io);
const char *io_local_ip(const struct io *io);
const struct sockaddr *io_peer_addr(const struct io *io);

/* TLS contexts (io_tls.c).  NULL on error with err filled.  The server's is
 * Mozilla's "intermediate" profile (TLS 1.2 and up, ECDHE with AES-GCM or
 * ChaCha20 only); the client's takes TLS 1.2 and up with OpenSSL's suites. */
SSL_CTX *io_tls_server_ctx(const char *cert_file, const char *key_file, char *err, size_t errlen);
SSL_CTX *io_tls_client_ctx(const char *ca_file, char *err, size_t errlen);
/* Set a server context's TLS 1.2 cipher list (OpenSSL syntax) and lowest
 * version ("TLSv1.2" or "TLSv1.3"); NULL keeps the default.  0, or -1 with
 * err filled (ctx then half changed: free it). */
int io_tls_server_policy(SSL_CTX *ctx, const char *ciphers, const char *min_version,
    char *err, size_t errlen);
/* Whether io_tls_server_policy() would take these values (on a scratch context). */
int io_tls_check_policy(const char *ciphers, const char *min_version, char *err, size_t errlen);

#endif
