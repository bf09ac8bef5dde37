/*
 * submit_int.h - (internal to submit/) what the files of the submission
 * server share.  Nothing outside submit/ includes this, except the unit tests
 * of the pure parts (tokenizer, senders map, DATA line machine, limits).
 *
 *   submit_server.c   listeners, accept, connection limits, TLS context, reload
 *   submit_session.c  the command table and the session state machine
 *   submit_auth.c     AUTH through Cyrus SASL
 *   submit_parse.c    the one tokenizer: commands, paths, ESMTP params, xtext
 *   submit_senders.c  the senders map: which login owns which address
 *   submit_data.c     DATA and BDAT: dot-unstuffing, smuggling checks, header insertion
 *   submit_limits.c   per-IP connection counts and AUTH failures, per-login
 *                     AUTH failures and rates
 *   submit_deadline.c how long a client may take: TLS, each command, AUTH, DATA
 *   submit_slots.c    the sessions not yet authenticated: their share, who goes first
 *   submit_proxy.c    the PROXY protocol header on listeners behind a load balancer
 *   submit_worker.c   submit.workers: the sessions' threads (shards) and what they post
 *
 * Ownership: struct submit owns the listeners, the sessions, the TLS context,
 * the senders map and the limits (a shard holds references to the front's
 * TLS context, senders map and DKIM keys, and uses the front's limits, slots,
 * directory and cluster: submit_worker.c).  A session owns its io, its SASL
 * connection and its transaction (envelope + router txn); it lives until its
 * io is gone AND no queue begin or commit, directory lookup or cluster count
 * is pending AND its timer handle is closed.
 */
#ifndef RELAY_SUBMIT_INT_H
#define RELAY_SUBMIT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <uv.h>

#include <sasl/sasl.h>

#include "common/buf.h"
#include "cluster/cluster.h"
#include "common/io.h"
#include "dkim/dkim.h"
#include "directory/directory.h"
#include "router/router.h"
#include "submit/submit.h"

/* RFC 5321 4.5.3.1: command line 512, text line 1000, both with CRLF. */
#define SUBMIT_CMD_LINE_MAX   512
#define SUBMIT_TEXT_LINE_MAX  1000
/* RFC 4954 4: an AUTH line or response may be up to 12288 octets. */
#define SUBMIT_AUTH_LINE_MAX  12288
#define SUBMIT_PARAMS_MAX     16

/* ------------------------------------------------------------------------
 * submit_parse.c - the tokenizer.  Works in place on a NUL-terminated line
 * that the caller owns; results point into it.
 */

struct submit_param {
	const char *key;            /* "SIZE" (as sent) */
	const char *value;          /* "1234", or NULL for a keyword without '=' */
};

enum submit_parse_err {
	SUBMIT_PARSE_OK = 0,
	SUBMIT_PARSE_ESYNTAX,       /* "FROM:"/"TO:" missing, or junk */
	SUBMIT_PARSE_EADDR,         /* the path or address is malformed */
	SUBMIT_PARSE_EPARAM,        /* a malformed ESMTP parameter */
	SUBMIT_PARSE_ETOOMANY,      /* more than SUBMIT_PARAMS_MAX parameters */
};

struct submit_path {
	struct buf addr;            /* canonical address ("" for <>); caller frees */
	bool utf8;                  /* the address holds non-ASCII octets */
	struct submit_param params[SUBMIT_PARAMS_MAX];
	size_t nparams;
	enum submit_parse_err err;
};

/*
 * Split a command line (CRLF already removed) into verb and arguments, in
 * place: *verb is NUL-terminated, *args points at the rest ("" if none) with
 * trailing blanks removed.  0, or RELAY_EINVAL for an empty line.
 */
int submit_parse_command(char *line, char **verb, char **args);
/*
 * Parse "FROM:<path> params" (prefix "FROM:") or "TO:<path> params" into p.
 * Source routes are dropped, quoted local parts canonicalised.  allow_bare
 * lets RCPT name <postmaster> without a domain.  0, or RELAY_EINVAL with
 * p->err saying why.
 */
int submit_parse_path(char *args, const char *prefix, bool allow_postmaster, struct submit_path *p);
/* Canonical form of a mailbox (local@domain, quotes only where needed). 0 or RELAY_EINVAL. */
int submit_parse_mailbox(const char *s, size_t len, struct buf *out, bool *utf8);
/* RFC 3461 xtext ("+2B" escapes) into out. 0 or RELAY_EINVAL. */
int submit_parse_xtext(const char *in, struct buf *out);
/* NOTIFY=NEVER | SUCCESS,FAILURE,DELAY into ENV_NOTIFY_* bits. 0 or RELAY_EINVAL. */
int submit_parse_notify(const char *v, unsigned *out);
/* ORCPT=addr-type;xtext into "addr-type;decoded". 0 or RELAY_EINVAL. */
int submit_parse_orcpt(const char *v, struct buf *out);
/*
 * BDAT arguments (RFC 3030 2): "chunk-size [LAST]", chunk-size 1*DIGIT, LAST
 * in any case.  0, or RELAY_EINVAL (then the chunk's length is unknown).
 */
int submit_parse_bdat(const char *args, uint64_t *size, bool *last);
/*
 * The mailboxes of a header field value (RFC 5322 address-list, unfolded):
 * display names, comments and groups skipped, each address canonicalised and
 * handed to cb.  Returns the number of addresses, or RELAY_EINVAL.
 */
int submit_parse_header_addrs(const char *v, size_t len,
    void (*cb)(void *arg, const char *addr), void *arg);

/* ------------------------------------------------------------------------
 * submit_senders.c - the senders map "login: address, address, @domain".
 */
struct submit_senders;

/* Parse text (name is used in errors as "NAME:LINE: message"). 0 or -1 with err. */
int submit_senders_parse(const char *name, const char *text, size_t len,
    struct submit_senders **out, struct buf *err);
/* Read and parse a file.  path NULL gives an empty map (nobody may send). */
int submit_senders_load(const char *path, struct submit_senders **out, struct buf *err);
/* Drop one reference (the map is immutable once loaded; shards share it). */
void submit_senders_free(struct submit_senders *m);
struct submit_senders *submit_senders_ref(struct submit_senders *m);
/* Does login own addr (canonical form)?  Domains compare case-insensitively. */
bool submit_senders_owns(const struct submit_senders *m, const char *login, const char *addr);
size_t submit_senders_count(const struct submit_senders *m);

/* ------------------------------------------------------------------------
 * submit_limits.c - counters that are pure functions of `now`.
 */
struct submit_limits_params {
	unsigned max_connections;
	unsigned max_connections_per_ip;
	unsigned auth_fail_delay_after;
	unsigned auth_fail_limit;
	uint64_t auth_fail_window;
	unsigned auth_login_fail_limit; /* 0 = no per-login limit */
	uint64_t auth_login_block;      /* the first block; each next one doubles */
	uint64_t auth_login_block_max;
	uint64_t auth_login_known_ttl;  /* 0 = no address is exempt */
	unsigned login_max_messages;    /* 0 = unlimited */
	unsigned login_max_recipients;  /* 0 = unlimited */
	uint64_t login_rate_window;
};

enum submit_conn_verdict {
	SUBMIT_CONN_OK = 0,
	SUBMIT_CONN_TOTAL,          /* max_connections reached */
	SUBMIT_CONN_PER_IP,         /* max_connections_per_ip reached */
};

enum submit_rate_verdict {
	SUBMIT_RATE_OK = 0,
	SUBMIT_RATE_MESSAGES,       /* login_max_messages reached in the window */
	SUBMIT_RATE_RECIPIENTS,     /* login_max_recipients reached in the window */
};

/* The longest a failed AUTH reply is held back. */
#define SUBMIT_AUTH_DELAY_STEP_MS  1000
#define SUBMIT_AUTH_DELAY_MAX_MS   5000

struct submit_limits;

struct submit_limits *submit_limits_new(void);
void submit_limits_free(struct submit_limits *l);
void submit_limits_set_params(struct submit_limits *l, const struct submit_limits_params *p);
void submit_limits_params_from_conf(struct submit_limits_params *p, const struct conf *c);

/* A connection from ip: counted if OK; every OK needs one conn_close(). */
enum submit_conn_verdict submit_limits_conn_open(struct submit_limits *l, const char *ip);
void submit_limits_conn_close(struct submit_limits *l, const char *ip);
/*
 * A connection whose client address is not known yet (a PROXY listener's,
 * from its accept until its header): counted in max_connections only, if OK;
 * every OK needs one conn_unreserve() (before its conn_open(), once the
 * address is known, or at its close).
 */
enum submit_conn_verdict submit_limits_conn_reserve(struct submit_limits *l);
void submit_limits_conn_unreserve(struct submit_limits *l);
unsigned submit_limits_conn_count(const struct submit_limits *l, const char *ip);

/* May ip try AUTH now?  false once auth_fail_limit failures fell in the window. */
bool submit_limits_auth_allowed(struct submit_limits *l, const char *ip, uint64_t now);
/*
 * Count one failed AUTH from ip.  Returns how long to hold back the reply
 * (0 until auth_fail_delay_after failures); *refused is set when this failure
 * reached auth_fail_limit.
 */
uint64_t submit_limits_auth_failed(struct submit_limits *l, const char *ip, uint64_t now, bool *refused);

/* The addresses remembered per login as exempt from its block. */
#define SUBMIT_LIMITS_KNOWN 8

/*
 * Is the tried login (folded to lower case) blocked for a client at ip?  Not
 * if ip is one it authenticated from within auth_login_known_ttl.  *until
 * is set to the block's end when it is.
 */
bool submit_limits_login_blocked(struct submit_limits *l, const char *login, const char *ip,
    uint64_t now, uint64_t *until);
/*
 * Count one failed AUTH against the tried login, from any address.  Returns
 * the length of the block this failure started (auth_login_fail_limit
 * reached within auth_fail_window; auth_login_block, doubled for each block
 * before it in the streak, at most auth_login_block_max), else 0.
 */
uint64_t submit_limits_login_failed(struct submit_limits *l, const char *login, uint64_t now);
/* login authenticated from ip: that address is exempt from its blocks for a while. */
void submit_limits_login_succeeded(struct submit_limits *l, const char *login, const char *ip,
    uint64_t now);

/* One AUTH failure counter, for relayctl auth list. */
struct submit_limits_block {
	bool login;                 /* a tried login; else a client address */
	const char *name;
	unsigned failures;          /* in the current window */
	bool blocked;
	uint64_t until;             /* the block's end, or the window's end */
	unsigned blocks;            /* (login) blocks in this streak */
};
/* cb for every address and login with failures in their window or a block. */
void submit_limits_auth_each(struct submit_limits *l, uint64_t now,
    void (*cb)(void *arg, const struct submit_limits_block *b), void *arg);
/* Forget an address's or a login's failures and block: 0, or RELAY_ENOENT if it had none. */
int submit_limits_auth_clear(struct submit_limits *l, const char *name, bool login, uint64_t now);

/* May login start a message (nrcpt == 0) or add recipient number nrcpt (1-based in its txn)? */
enum submit_rate_verdict submit_limits_login_check(struct submit_limits *l, const char *login,
    uint64_t now, unsigned nrcpt);
/* A message from login with nrcpt recipients was accepted. */
void submit_limits_login_add(struct submit_limits *l, const char *login, uint64_t now, unsigned nrcpt);

/*
 * What the cluster counted (cluster/): raise login's window to msgs and
 * rcpts, ip's failed AUTH attempts to fails, when higher; ttl is the time
 * left in the shared window (a new local window ends with it).  Nothing
 * when the shared counts are 0 or their window is over.
 */
void submit_limits_login_merge(struct submit_limits *l, const char *login, uint64_t now,
    unsigned msgs, unsigned rcpts, uint64_t ttl);
void submit_limits_auth_merge(struct submit_limits *l, const char *ip, uint64_t now, unsigned fails,
    uint64_t ttl);

/* Forget entries whose windows ended and that hold no connection. */
void submit_limits_expire(struct submit_limits *l, uint64_t now);
size_t submit_limits_entries(const struct submit_limits *l);

/* ------------------------------------------------------------------------
 * submit_data.c - the DATA line machine.  Lines go in as io_getline() gave
 * them (terminator included); the message goes out, dot-unstuffed, with CRLF
 * endings and the relay's headers, through write() in chunks.
 */
enum submit_data_err {
	SUBMIT_DATA_OK = 0,
	SUBMIT_DATA_BARE,           /* bare LF or bare CR (SMTP smuggling) */
	SUBMIT_DATA_TOO_BIG,        /* over max_size */
	SUBMIT_DATA_LONG_LINE,      /* a text line over SUBMIT_TEXT_LINE_MAX */
	SUBMIT_DATA_WRITE,          /* write() failed */
	SUBMIT_DATA_HEADER_FROM,    /* more than one From: or one too long to check */
	SUBMIT_DATA_NUL,            /* a NUL byte: not text (RFC 5321 2.3.8, RFC 6152) */
};

typedef int submit_data_write_fn(void *arg, const void *p, size_t len);

#define SUBMIT_DATA_CHUNK     (32 * 1024)
#define SUBMIT_DATA_FROM_MAX  4096

struct submit_data {
	/* set by submit_data_begin() */
	uint64_t max_size;
	bool collect_from;
	submit_data_write_fn *write;
	void *write_arg;
	struct buf hdr_date;        /* "Date: ...\r\n", added if the message has none */
	struct buf hdr_msgid;       /* "Message-ID: <...>\r\n", likewise */

	/* state */
	bool in_header;             /* still in the header section */
	bool prev_crlf;             /* the previous line ended with CRLF */
	bool in_from;               /* the field being read is From: */
	bool saw_date, saw_msgid;
	unsigned nfrom;
	enum submit_data_err err;   /* the first error; the rest is then discarded */
	uint64_t size;              /* message octets received (unstuffed) */
	struct buf out;             /* staged output, flushed at SUBMIT_DATA_CHUNK */
	struct buf from;            /* unfolded From: value */

	/* BDAT (RFC 3030): octets in any pieces, assembled into lines here */
	bool chunked;               /* no dot-stuffing, no end-of-data line */
	bool skipping;              /* dropping the rest of an over-long line */
	struct buf part;            /* a line not yet complete (at most a text line) */
};

void submit_data_init(struct submit_data *d);
void submit_data_free(struct submit_data *d);
/*
 * Start a message: received is the Received: field (CRLF-terminated) that
 * goes first; date and msgid the lines to add when the client left them out.
 */
void submit_data_begin(struct submit_data *d, uint64_t max_size, bool collect_from,
    const char *received, const char *date, const char *msgid,
    submit_data_write_fn *write, void *arg);
/* One input line with its terminator.  Returns 1 at the end of data, else 0. */
int submit_data_line(struct submit_data *d, const char *line, size_t len);
/* Message text must hold no NUL, 8BITMIME or not (only BINARYMIME may, and it
 * is not offered): sets SUBMIT_DATA_NUL if p[0..len) does.  For DATA and BDAT. */
void submit_data_check_text(struct submit_data *d, const char *p, size_t len);
/* The io discarded an over-long line (up to its LF). */
void submit_data_long_line(struct submit_data *d);
/*
 * BDAT: after submit_data_begin(), the message comes as octets in pieces cut
 * anywhere (RFC 3030): no dot-stuffing and no end-of-data line.  The pieces
 * are assembled into lines that go through submit_data_line()'s checks, so
 * what DATA refuses (bare LF or CR, long lines, size) BDAT refuses too.
 */
void submit_data_chunked(struct submit_data *d);
void submit_data_bytes(struct submit_data *d, const char *p, size_t len);
/* BDAT LAST: a last line without CRLF gets one (as DATA's end implies).
 * Then submit_data_finish() as for DATA. */
void submit_data_bytes_last(struct submit_data *d);
/* After the end of data: add missing headers if the header never ended, flush. */
void submit_data_finish(struct submit_data *d);

struct submit_received {
	const char *helo;           /* as the client gave it */
	const char *client_ip;
	const char *client_host;    /* reverse DNS name, or NULL */
	const char *hostname;       /* ours */
	const char *protocol;       /* "ESMTPSA" ... */
	const char *qid;
	const char *tls_version;    /* NULL without TLS */
	const char *tls_cipher;
	int tls_bits;
	const char *rcpt;           /* the one recipient, or NULL */
	uint64_t now_ms;
};
/* The Received: field (RFC 5321 4.4), folded, CRLF-terminated, into out. */
void submit_data_received(struct buf *out, const struct submit_received *r);
/* RFC 3848 protocol name for with: ESMTP, ESMTPS, ESMTPA, ESMTPSA (UTF8 variants). */
const char *submit_data_protocol(bool esmtp, bool tls, bool auth, bool utf8);

/* ------------------------------------------------------------------------
 * submit_deadline.c - deadlines, not idle timers: bytes that trickle in never
 * move one (Postfix's smtpd_per_request_deadline and smtpd_min_data_rate).
 * Each state of the session runs under one of these (submit_session.c's
 * state table); submit_enter_state() and the input loop tell this file.
 */
enum submit_deadline {
	SUBMIT_DL_NONE = 0,         /* the server's turn (input paused): none */
	SUBMIT_DL_TLS,              /* the TLS handshake: tls_timeout */
	SUBMIT_DL_COMMAND,          /* each command line: command_timeout */
	SUBMIT_DL_AUTH,             /* the client's turns of one AUTH exchange, together */
	SUBMIT_DL_AUTH_CHECK,       /* a SASL step runs: the exchange's time is kept */
	SUBMIT_DL_DATA,             /* DATA: data_timeout, earning time at min_data_rate */
	SUBMIT_DL_PROXY,            /* the PROXY protocol header: proxy_timeout */
};

struct submit_session;

/* Pure: the time left after nbytes more of DATA: left + nbytes / rate per
 * second, never more than cap (rate 0: left unchanged). */
uint64_t submit_deadline_credit(uint64_t left_ms, uint64_t nbytes, unsigned rate, uint64_t cap_ms);
/* "tls", "command", "auth", "data", "proxy" (for session_timeout's phase=). */
const char *submit_deadline_phase(enum submit_deadline d);
/* The session entered a state that runs under d (from submit_enter_state(), io set). */
void submit_deadline_enter(struct submit_session *s, enum submit_deadline d);
/* The input loop took nlines complete lines, ndata octets of them in DATA. */
void submit_deadline_progress(struct submit_session *s, size_t nlines, uint64_t ndata);

/* ------------------------------------------------------------------------
 * submit_slots.c - the sessions that have not authenticated yet, oldest
 * first and by client address: at most unauthenticated_share percent of
 * max_connections, and the first to be closed when slots run short.
 */
struct submit_slots;
struct submit_slots_ip;

struct submit_slots *submit_slots_new(void);
void submit_slots_free(struct submit_slots *sl);
/* Pure: how many sessions may be unauthenticated at once (at least 1). */
unsigned submit_slots_unauth_max(unsigned max_connections, unsigned share);
/* A session that got a slot and has not authenticated: listed. */
void submit_slots_add(struct submit_slots *sl, struct submit_session *s);
/* It authenticated or is closing; nothing if it is not listed. */
void submit_slots_remove(struct submit_slots *sl, struct submit_session *s);
size_t submit_slots_unauth_count(const struct submit_slots *sl);
/* The session to close first: the oldest of the address that holds the most
 * unauthenticated sessions (ties: the oldest); NULL if none is listed. */
struct submit_session *submit_slots_victim(const struct submit_slots *sl);
/*
 * A connection from ip is coming (under submit_lock()): if it would find
 * every slot taken, or the unauthenticated sessions at their share, the
 * victim, unlisted and uncounted already so that the newcomer finds a slot;
 * *reason and *unauth are for submit_slots_evict(), which its own loop runs.
 * NULL when nobody need go, or when ip is at its own per-IP limit: that
 * connection is refused anyway.  (A PROXY listener's connection makes room
 * only once its header names the client: submit_session_reserve().)
 */
struct submit_session *submit_slots_make_room(struct submit *srv, const char *ip,
    const char **reason, size_t *unauth);
/* Close v, chosen by make_room (on v's loop): 421 4.7.0 and session_evicted. */
void submit_slots_evict(struct submit_session *v, const char *reason, size_t unauth);

/* ------------------------------------------------------------------------
 * submit_proxy.c - the PROXY protocol (v1, v2) on listeners marked proxy.
 */
#define SUBMIT_PROXY_MAX      1024      /* the longest header taken (v2 with TLVs) */

enum submit_proxy_result {
	SUBMIT_PROXY_MORE = 0,      /* all of it can be a header's start: read on */
	SUBMIT_PROXY_DONE,          /* the first h->len octets are the header */
	SUBMIT_PROXY_BAD,           /* not a header we take: h->reason */
};

struct submit_proxy_hdr {
	size_t len;                 /* DONE: the header's length */
	int version;                /* DONE: 1 or 2 */
	bool local;                 /* DONE: LOCAL, UNKNOWN or AF_UNSPEC: keep the
				     * connection's own addresses */
	struct sockaddr_storage src, dst;   /* DONE and !local: the client, and where it connected */
	const char *reason;         /* BAD: "missing", "garbled", "oversized", "unsupported" */
};

/* Pure: the start of a connection's octets, p[0..len), as a PROXY header
 * (a static string in h->reason; h filled afresh each call). */
int submit_proxy_parse(const char *p, size_t len, struct submit_proxy_hdr *h);

struct submit_session;
/* A session accepted on a proxy listener: refuse it unless its peer is in
 * proxy_trusted (-1, closed), else read the header first (0). */
int submit_proxy_start(struct submit_session *s);
/* IO_EV_IN in SUBMIT_S_PROXY: take what the header holds; once it is whole,
 * the session goes on with its addresses (submit_session_begin()). */
void submit_proxy_input(struct submit_session *s);
/* Log event=proxy_refused with reason and close the session. */
void submit_proxy_refuse(struct submit_session *s, const char *reason);

/* ------------------------------------------------------------------------
 * The server and its sessions (submit_server.c, submit_session.c, submit_auth.c).
 */
#define SUBMIT_MAGIC          0x5355424du   /* "SUBM" */
#define SUBMIT_SESSION_MAGIC  0x53455353u   /* "SESS" */
#define SUBMIT_LISTENER_MAGIC 0x4c495354u   /* "LIST" */

struct submit_session;
TAILQ_HEAD(submit_session_list, submit_session);
struct submit_auth_ctx;
TAILQ_HEAD(submit_auth_list, submit_auth_ctx);

/*
 * At most this many SASL steps of one loop (the main loop, or each shard)
 * run on the libuv thread pool at once (its default is 4 threads, which the
 * queue and the router share; relayd adds this many for each shard beyond
 * the first, submit_threadpool_size()); the rest wait their turn in
 * srv->auth_waiting.
 */
#define SUBMIT_AUTH_MAX_RUNNING 2

struct submit_listener {
	uint32_t magic;
	uv_tcp_t tcp;
	bool implicit_tls;
	bool proxy;                 /* a PROXY header comes first (submit_proxy.c) */
	char *text;
	struct submit *srv;
	/* An accept pause (EMFILE, ENFILE, ENOBUFS, ENOMEM; submit_server.c):
	 * tcp is closed, spare_fd (a dup of the socket) keeps it listening and
	 * resume reopens it after pause_ms (100 doubling to 1000). */
	int spare_fd;
	uv_timer_t resume;
	bool resume_open;           /* resume is initialised (counts in nlisteners_open) */
	bool tcp_open;
	unsigned pause_ms;          /* 0: no pause since the last accepted connection */
	unsigned long nfailed;      /* failed accepts since then */
};

struct submit {
	uint32_t magic;
	uv_loop_t *loop;
	struct conf *conf;              /* current snapshot (one reference) */
	struct conf *listen_conf;       /* the one the listeners opened with (one reference) */
	struct router *router;
	struct relay_stats *stats;
	SSL_CTX *tls_ctx;
	struct submit_senders *senders;
	struct directory *directory;    /* submit.senders_ldap, or NULL */
	struct cluster *cluster;        /* shared counters (cluster/), or NULL */
	struct dkim_keys *dkim;         /* the signing keys of conf (one reference) */
	struct submit_limits *limits;
	struct submit_slots *slots;     /* the unauthenticated sessions */
	struct buf mechs;               /* "PLAIN LOGIN": configured AND available */
	struct submit_auth_list auth_waiting;   /* SASL steps waiting for a thread */
	unsigned auth_running;          /* SASL steps on the thread pool (timed out ones too) */
	uv_timer_t auth_stop;           /* shutdown: how long running steps are waited for */
	bool auth_stop_open;
	unsigned auth_abandoned;        /* steps still running when that wait ended */
	struct submit_listener *listeners;
	size_t nlisteners;
	size_t nlisteners_open;         /* not yet closed (shutdown) */
	struct submit_session_list sessions;
	size_t nsessions;
	unsigned nrefusing;             /* refused, their 421 waiting for the handshake */
	unsigned nunplaced;             /* PROXY connections waiting for their header with no
					 * place (SUBMIT_UNPLACED_MAX; this loop's only) */
	unsigned nevicting;             /* the front: evictions posted to a shard, not yet run
					 * there (under shared_lock; SUBMIT_EVICTING_MAX) */
	uint64_t next_session_id;
	uv_timer_t sweep;               /* expires old limit entries */
	bool sweep_open;
	bool shutting_down;
	void (*shutdown_done)(void *arg);
	void *shutdown_arg;

	/*
	 * submit.workers > 1 (submit_worker.c): the front (the main loop's
	 * struct submit, which submit.h hands out) owns no listener and no
	 * session; each shard is a struct submit of its own on a thread's loop,
	 * with front set.  A shard's router and stats are NULL (the queue, the
	 * directory, the cluster and the counters are reached through
	 * submit_worker.c's posted calls); its limits and slots are the
	 * front's, under shared_lock; its directory and cluster are the front's
	 * pointers, only compared with NULL and passed back to the front.
	 */
	struct submit *front;           /* a shard: its front; NULL on the front or alone */
	struct submit_workers *workers; /* the front with shards, else NULL */
	struct submit_worker *worker;   /* a shard: its thread and inbox */
	unsigned shard_no;              /* a shard: 1..submit.workers (logs); else 0 */
	bool stop_requested;            /* the front: submit_shutdown() was called (atomic:
					 * the shards read it before their STOP comes) */
	uv_mutex_t *shared_lock;        /* limits and slots when shards share them, else NULL */
};

/* limits and slots: shared by the shards under the front's lock (short,
 * pure in-memory calls; never held across I/O or a callback) */
static inline void
submit_lock(struct submit *srv)
{
	if (srv->shared_lock != NULL)
		uv_mutex_lock(srv->shared_lock);
}

static inline void
submit_unlock(struct submit *srv)
{
	if (srv->shared_lock != NULL)
		uv_mutex_unlock(srv->shared_lock);
}

/*
 * The session's states.  submit_enter_state() is the only place that changes
 * s->state; it also sets what each state implies for the io (line limit,
 * timeout, paused or not) from one table.
 */
enum submit_state {
	SUBMIT_S_TLS_WAIT = 0,      /* TLS handshake (implicit TLS, or after STARTTLS) */
	SUBMIT_S_CONNECTED,         /* greeted; no EHLO/HELO yet */
	SUBMIT_S_HELO,              /* EHLO/HELO given; no transaction */
	SUBMIT_S_AUTH,              /* SASL exchange: lines are AUTH responses */
	SUBMIT_S_AUTH_WAIT,         /* a SASL step runs on the thread pool */
	SUBMIT_S_MAIL,              /* MAIL accepted */
	SUBMIT_S_SENDER,            /* MAIL waits for the directory (senders_ldap) */
	SUBMIT_S_RCPT,              /* at least one RCPT accepted */
	SUBMIT_S_DATA,              /* reading the message text */
	SUBMIT_S_BDAT,              /* reading the octets of a BDAT chunk (or dropping them) */
	SUBMIT_S_CHUNKS,            /* between the BDAT chunks of a message */
	SUBMIT_S_COMMIT,            /* waiting for the queue to make it durable */
	SUBMIT_S_DELAY,             /* a failed-AUTH reply is held back */
	SUBMIT_S_SHARED,            /* waits for the cluster's counters (submit_shared.c) */
	SUBMIT_S_PROXY,             /* reading the PROXY protocol header */
	SUBMIT_S_BEGIN,             /* a shard: waits for the main loop's queue txn (workers) */
	SUBMIT_S_CLOSED,            /* io gone or closing */
};

struct submit_session {
	uint32_t magic;
	TAILQ_ENTRY(submit_session) entry;
	struct submit *srv;
	struct conf *conf;              /* the snapshot at connect time (a reference) */
	struct io *io;                  /* NULL once closed */
	uv_timer_t timer;               /* holds back a failed-AUTH reply */
	char id[20];                    /* for logs */
	enum submit_state state;
	bool implicit_tls;
	bool greeted;                   /* the 220 greeting was sent */
	bool counted;                   /* holds a slot in the connection limits */
	bool reserved;                  /* SUBMIT_S_PROXY: holds one in max_connections only */
	bool esmtp;                     /* EHLO (not HELO) */
	bool commit_pending;            /* queue_txn_commit's callback has not run */
	bool begin_pending;             /* a shard: the posted txn begin has not been answered */
	bool begin_bdat;                /* that begin was BDAT's (chunk_size, chunk_last kept) */
	uint64_t eod_ms;                /* end of DATA/BDAT LAST (mono): the 250's latency */
	bool lookup_pending;            /* directory_lookup's (or cluster_count's) callback has not run */
	bool mail_file_owned;           /* while it runs: the senders map owns the sender */
	bool released;
	bool barrier;                   /* a non-pipelinable command ended the batch */
	bool resumed;                   /* the next IO_EV_IN continues an old batch */
	const char *refuse;             /* instead of the greeting (limits): 421 text */
	bool refusing;                  /* refuse, on implicit TLS: counted in srv->nrefusing */
	bool unplaced;                  /* SUBMIT_S_PROXY with no place: counted in srv->nunplaced */
	struct submit_listener *listener;   /* accepted on (lives as long as srv) */
	char ip[64];                    /* the client: the PROXY header's source, else the peer */
	int port;
	char local_ip[64];
	char proxy_ip[64];              /* the proxy's address (peer), "" without one */
	struct buf proxy_hdr;           /* SUBMIT_S_PROXY: the header's octets so far */
	struct buf helo;
	char *login;                    /* authenticated login, or NULL */
	unsigned nerrors;

	/* AUTH (submit_auth.c) */
	struct submit_auth_ctx *auth;   /* the SASL exchange, NULL outside one */
	char mech[32];
	unsigned auth_step;             /* client responses so far in this exchange */
	bool auth_final;                /* SASL said OK with data: waiting for the empty response */
	struct buf auth_user;           /* the name tried, for logs; never a password */
	struct buf delayed;             /* a held-back reply */
	bool delayed_close;

	/* a wait for the cluster's counters (submit_shared.c) */
	void (*shared_cont)(struct submit_session *s);  /* what runs after it */
	int shared_kind;
	int shared_rc;                  /* a failed AUTH: what SASL said */
	struct buf shared_args;         /* AUTH: the command's arguments */

	/* the transaction */
	struct envelope env;
	struct directory_owned *ldap_owned; /* what the directory said at MAIL, or NULL */
	bool ldap_down;                 /* the directory could not say at MAIL */
	size_t rcpt_cap;
	struct queue_txn *txn;
	struct submit_data data;
	struct dkim_msg *dkim_msg;      /* the message as the signer sees it (submit_dkim.c) */
	struct dkim_keys *dkim_keys;
	struct buf dkim_ids;            /* for the accepted event: "d=..;s=..,..." or "none" */
	/* BDAT (RFC 3030): the chunk being read, and the message's octets so far */
	uint64_t chunk_size;
	uint64_t chunk_left;            /* octets of the chunk still to read */
	uint64_t chunk_total;           /* octets of this message's chunks, this one included */
	bool chunk_last;                /* BDAT ... LAST */
	bool chunk_drop;                /* the BDAT was refused: its octets are read and dropped */
	enum submit_state chunk_return; /* the state to go back to after a dropped chunk */

	/* deadlines (submit_deadline.c) and slots (submit_slots.c) */
	enum submit_deadline deadline;  /* the one the io runs under */
	uint64_t auth_left;             /* ms left of the AUTH exchange while a step runs */
	uint64_t born_ms;               /* accepted (monotonic), for logs */
	bool unauth_listed;             /* in srv->slots */
	uint64_t unauth_seq;            /* its age order there */
	struct submit_slots_ip *unauth_ip;
	TAILQ_ENTRY(submit_session) unauth_entry;

	/* scratch, reused for every command */
	struct buf line;                /* the command being handled (args point into it) */
	struct buf out;                 /* the reply being formatted */
	struct buf tmp;
	struct submit_path path;
};

/* submit_dkim.c: signing at acceptance */
void submit_dkim_begin(struct submit_session *s);      /* DATA: before the first write */
void submit_dkim_write(struct submit_session *s, const void *p, size_t len);
void submit_dkim_reset(struct submit_session *s);
/* 0: nothing to sign, commit now; 1: the signatures are being made on the
 * thread pool, then submit_session_commit() or submit_session_sign_failed()
 * follows (the work owns txn meanwhile). */
int submit_dkim_sign(struct submit_session *s, struct queue_txn *txn);
/* submit_session.c: the end of a signed (or unsigned) message */
void submit_session_commit(struct submit_session *s, struct queue_txn *txn);
void submit_session_sign_failed(struct submit_session *s);

/* submit_session.c */
/* A shard's txn begin was answered (rc 0: txn is the session's). */
void submit_session_begun(struct submit_session *s, int rc, struct queue_txn *txn);
/* queue_txn_commit's callback (arg: the session). */
void submit_session_committed(void *arg, int err, const char *qid);
/* The directory's answer to MAIL's lookup (arg: the session). */
void submit_mail_looked_up(void *arg, enum directory_status st, struct directory_owned *o);
void submit_session_accept(struct submit *srv, struct submit_listener *l);
/* The client's addresses are known (the peer's, or a PROXY header's, version
 * 1 or 2, local: its LOCAL/UNKNOWN): limits, event=connect, then the greeting
 * or the TLS handshake. */
void submit_session_begin(struct submit_session *s, int proxy_version, bool proxy_local);
/*
 * A connection on a PROXY listener, from a trusted peer: its place in
 * max_connections from the accept, before its header names the client.
 * With none left but an unauthenticated session that could be evicted, it
 * waits for its header without one (SUBMIT_UNPLACED_MAX), and
 * submit_session_begin() evicts for the header's client, as for any
 * newcomer; 0, or -1 when it is refused.  submit_session_begin() turns a
 * place into the client's slot; the close gives it up.
 */
int submit_session_reserve(struct submit_session *s);
/* 421 to the session and close it (shutdown). */
void submit_session_shutdown(struct submit_session *s);
void submit_enter_state(struct submit_session *s, enum submit_state state);
/* One reply line (CRLF added); 4xx/5xx count toward max_command_errors. */
void submit_session_reply(struct submit_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Hold a reply back for delay_ms (io paused), then send it (and close if close). */
void submit_session_reply_later(struct submit_session *s, uint64_t delay_ms, bool close,
    const char *text);
/* Start the session timer: in SUBMIT_S_AUTH_WAIT it calls submit_auth_timeout(). */
void submit_session_timer(struct submit_session *s, uint64_t ms);
/*
 * Send reply (NULL: none) and close; the session is freed once nothing is
 * pending.  The session gives its slot up here, so its socket goes too:
 * the reply goes as far as the kernel takes it at once (io_close_now():
 * all of it, unless the client left earlier replies unread) and the
 * socket is closed before this returns.  So refusals and evictions hold no
 * descriptor past the call (SUBMIT_ACCEPTING in submit_fd_need()), and a
 * session ended with a last word (221, a 421 at a timeout) holds none
 * past its slot: each once waited for its reply to drain, up to the drain
 * timeout for a client that read nothing.
 */
void submit_session_close(struct submit_session *s, const char *reply);

/* submit_server.c */
#define SUBMIT_BACKLOG    511
/*
 * Connections refused by the limits (connection_refused) on an implicit-TLS
 * listener whose 421 waits for the TLS handshake, up to submit.tls_timeout:
 * at most this many at once per session thread; one more is closed at once,
 * without a word, as an eviction mid-handshake is.  They are no session's
 * slot, so they are counted apart in the descriptors relayd needs
 * (submit_fd_need(), daemon/DESCRIPTORS.md): uncapped, a client over
 * max_connections_per_ip held one descriptor per connection it opened and
 * never finished a handshake on.
 */
#define SUBMIT_REFUSING_MAX 16
/*
 * Connections on a PROXY listener that found every place in max_connections
 * taken while an unauthenticated session could still be evicted: they wait
 * for their header without a place, so that the eviction is decided by the
 * header's client as for any newcomer (a client at its per-IP limit, or a
 * connection that never sends a header, evicts nobody), at most this many
 * per session thread; one more is closed at once.
 */
#define SUBMIT_UNPLACED_MAX 16
/*
 * A connection a session thread is accepting, until the limits decide: one
 * descriptor more than the slots, per session thread, for the length of
 * the accept's callback.  Refused, it is answered and closed in that call
 * (submit_session_close()); taking an evicted session's slot, that
 * session is closed in it too when it is the same thread's.  Until these
 * closed at once, each waited for its 421 to be written (the next loop
 * turn; an evicted client that left its replies unread, up to the drain
 * timeout), and an accept burst could take up to the listen backlog of
 * them per listener.
 */
#define SUBMIT_ACCEPTING 1
/*
 * Evictions that another session thread's accept chose (submit.workers
 * above 1): the victim keeps its socket, with no slot, until its own loop
 * runs the eviction (submit_worker.c).  At most this many are on their way
 * at once, across the threads; beyond it no session of another thread is
 * evicted, and a newcomer that finds no slot is refused.
 */
#define SUBMIT_EVICTING_MAX 16
/* A session was freed: a shutdown may be complete. */
void submit_server_session_gone(struct submit *srv);
/* One listener of srv on cl's address: bound here (fd -1) or on fd (a bound,
 * listening socket it takes over); logs listening if log.  0 or -1 with err. */
int submit_server_listen(struct submit *srv, const struct conf_listen *cl, bool implicit_tls,
    int fd, bool log, struct buf *err);
/* A shard's part of submit_shutdown(), on its loop: done(arg) when it is over. */
void submit_shutdown_shard(struct submit *shard, void (*done)(void *arg), void *arg);
/* Free a shard whose loop has ended (what it owns, not the front's). */
void submit_server_free_shard(struct submit *shard);
/* Sessions of srv, open now (any thread may read a shard's). */
static inline void
submit_server_count(struct submit *srv, int delta)
{
	if (delta > 0)
		__atomic_add_fetch(&srv->nsessions, (size_t)delta, __ATOMIC_RELAXED);
	else
		__atomic_sub_fetch(&srv->nsessions, (size_t)-delta, __ATOMIC_RELAXED);
}

/* submit_auth.c: the SASL half of a session */
int submit_auth_init(struct submit *srv, struct buf *err);
void submit_auth_reload(struct submit *srv);
void submit_auth_done(void);
/* Set srv->mechs to the configured mechanisms the installed plugins offer. */
void submit_auth_mechs(struct submit *srv, const struct conf *c);
/* The AUTH command (args: "MECH [initial-response]"). */
void submit_auth_command(struct submit_session *s, char *args);
/* A line in SUBMIT_S_AUTH (terminator included). */
void submit_auth_response(struct submit_session *s, const char *line, size_t len);
/* Forget any SASL exchange (STARTTLS, close); one whose step still runs is
 * let go and freed when the step returns. */
void submit_auth_reset(struct submit_session *s);
/* submit.auth_timeout passed in SUBMIT_S_AUTH_WAIT (the session timer). */
void submit_auth_timeout(struct submit_session *s);
/*
 * Shutdown, once the sessions are closed: wait for the SASL steps still on
 * the thread pool at most SUBMIT_AUTH_STOP_MS (a backend that never answers
 * must not hold the stop), then abandon them (event auth_abandoned).
 * srv->auth_stop_open is true while it waits; submit_server_session_gone()
 * is called when the wait ends.
 */
#define SUBMIT_AUTH_STOP_MS 2000
void submit_auth_shutdown(struct submit *srv);

/*
 * submit_shared.c: the counters shared through the cluster.  Each *_read /
 * auth_failed returns true when the session now waits in SUBMIT_S_SHARED
 * (at most CLUSTER_TIMEOUT_MS): cont(s) then runs in SUBMIT_S_HELO with the
 * shared counts merged into srv->limits (or without them, when Redis did
 * not answer in time); unless the client left or the server stops meanwhile.
 * false: no cluster, degraded, or nothing to ask: go on at once.
 */
bool submit_shared_login_read(struct submit_session *s, void (*cont)(struct submit_session *));
/* An accepted message of s->login: added in Redis, not waited for. */
void submit_shared_login_add(struct submit_session *s);
/* AUTH: args are kept in s->shared_args for cont. */
bool submit_shared_auth_read(struct submit_session *s, const char *args,
    void (*cont)(struct submit_session *));
/* A failed AUTH (rc kept in s->shared_rc for cont) is counted in Redis first. */
bool submit_shared_auth_failed(struct submit_session *s, int rc,
    void (*cont)(struct submit_session *));

/* ------------------------------------------------------------------------
 * submit_worker.c - the shards (submit.workers > 1): threads, inboxes, and the
 * calls a shard's session posts to the front's loop.  Each answer runs on the
 * session's loop; the session keeps a pending flag until it comes.
 */
struct submit_workers;
struct submit_worker;
/* The front: n shards, each with its own loop and listeners (SO_REUSEPORT);
 * nothing runs until submit_workers_start().  0, or -1 with err, nothing bound. */
int submit_workers_new(struct submit *front, unsigned n, struct buf *err);
void submit_workers_start(struct submit *front);
/* The front's new conf, senders, DKIM keys, TLS context and mechanisms to every shard. */
void submit_workers_reload(struct submit *front);
/* STOP to every shard; submit_workers_busy() is false once all have stopped. */
void submit_workers_shutdown(struct submit *front);
bool submit_workers_busy(const struct submit *front);
size_t submit_workers_nsessions(const struct submit *front);
size_t submit_workers_count(const struct submit *front);
unsigned submit_workers_abandoned(const struct submit *front);
void submit_workers_free(struct submit *front);

/*
 * A shard's reserved queue txns (queue_txn_begin without an envelope, made
 * on the front ahead of need): SUBMIT_TXN_POOL at most, asked again when
 * fewer than SUBMIT_TXN_LOW are left.  Each may hold a spare file's
 * descriptor (counted in submit_fd_need()).
 */
#define SUBMIT_TXN_POOL 4
#define SUBMIT_TXN_LOW  2
/* A reserved txn from shard's pool (the caller's; queue_txn_envelope() next), or NULL. */
struct queue_txn *submit_worker_txn_take(struct submit *shard);
/* then submit_session_begun() */
void submit_worker_txn_begin(struct submit_session *s);
/* then submit_session_committed(); the accepted counters are the front's */
void submit_worker_txn_commit(struct submit_session *s, struct queue_txn *txn);
void submit_worker_txn_abort(struct submit *shard, struct queue_txn *txn);
/* the directory (directory_cached, then _lookup; fresh: _lookup_fresh): cb(s, ...) */
void submit_worker_lookup(struct submit_session *s, const char *login, bool fresh, directory_cb *cb);
/* cluster_count() on the front; cb(s, counts or NULL), or cb NULL: nothing answered */
void submit_worker_count(struct submit_session *s, const char *what, const char *name,
    const char *const *fields, const long long *incr, size_t n, uint64_t window,
    cluster_count_cb cb);
/* counters of the front's struct relay_stats (reject: a refusal's reply, or NULL) */
void submit_worker_stat(struct submit *shard, unsigned connections, unsigned auth_failed,
    const char *reject);
/* Under the front's lock: post v's eviction to its shard; false if that shard has stopped. */
bool submit_worker_evict(struct submit_session *v, const char *reason, size_t unauth);

#endif
