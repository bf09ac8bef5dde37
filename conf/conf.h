/*
 * conf.h - relayd's configuration: a libconfig file parsed into one typed,
 * validated, immutable snapshot.  SIGHUP builds a new snapshot and swaps it in;
 * whoever still holds the old one (a session in progress) keeps it alive with
 * conf_ref()/conf_unref().  Every error names its place as "FILE:LINE: message".
 *
 * All durations are in milliseconds, all sizes in bytes.
 */
#ifndef RELAY_CONF_H
#define RELAY_CONF_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>

#include "common/buf.h"

/* submit.workers: at most this many event-loop threads for the sessions */
#define CONF_SUBMIT_WORKERS_MAX 64

struct conf_listen {
	char *text;                     /* as written: "127.0.0.1:587", "[::1]:465" */
	struct sockaddr_storage addr;   /* parsed */
	socklen_t addrlen;
	bool proxy;                     /* { address = ...; proxy = true; }: PROXY protocol first */
};

/* One network of submit.proxy_trusted: "192.0.2.0/24", "2001:db8::/32", "127.0.0.1". */
struct conf_cidr {
	int family;                     /* AF_INET or AF_INET6 */
	unsigned char addr[16];         /* network order; host bits zero */
	unsigned bits;                  /* prefix length */
};

enum conf_mx_policy {
	CONF_MX_ANY = 0,                /* "any": every exchanger, in preference order */
	CONF_MX_PRIMARY_ONLY,           /* "primary-only": lowest preference value only */
};

enum conf_tls {
	CONF_TLS_NONE = 0,              /* "none" */
	CONF_TLS_OPPORTUNISTIC,         /* "opportunistic" */
	CONF_TLS_REQUIRE,               /* "require" */
	CONF_TLS_VERIFY,                /* "verify" */
};

struct conf_hostport {
	char *host;                     /* name or address literal, no brackets */
	uint16_t port;
};

struct conf_route {
	char *domain;                   /* lower-cased; "*" = every other domain (smarthost) */
	struct conf_hostport *hosts;    /* tried in order */
	size_t nhosts;
	enum conf_mx_policy mx_policy;  /* for DNS-routed domains (nhosts == 0) */
	char *auth_user;                /* optional client AUTH (smarthost); NULL = none */
	char *auth_password;
	bool has_tls;                   /* route overrides deliver.tls */
	enum conf_tls tls;
};

/* submit.senders_ldap: owned senders from an LDAP directory (directory/). */
struct conf_senders_ldap {
	char *uri;                      /* NULL: not configured */
	char *base;                     /* required with uri */
	char *filter;                   /* default "(uid=%u)"; %u login, %d its domain */
	char **attributes;              /* default mail, mailAlternateAddress */
	size_t nattributes;
	char *bind_dn;                  /* NULL: anonymous */
	char *bind_password_file;       /* first line is the password */
	bool starttls;                  /* default false */
	uint64_t timeout;               /* default 10s */
	uint64_t cache_ttl;             /* default 5m; 0 = no cache */
};

/* One dkim.keys entry; file and line say where it was written (for the
 * errors of the key checks, which dkim/ makes). */
struct conf_dkim_key {
	char *domain;                   /* lower-cased, no trailing dot */
	char *selector;
	char *key;                      /* PEM private key file */
	char *file;
	unsigned line;
};

struct conf {
	atomic_int refs;          /* conf_ref/conf_unref: taken from any thread */
	char *path;                     /* the file this was read from */

	char *hostname;                 /* default: gethostname() */
	char *user;                     /* default "relayd": the account after start-up */
	char *queue_dir;                /* default: "/var/spool/relayd" */
	char *control_socket;           /* default: "<queue_dir>/control.sock" */
	char *control_group;            /* NULL: socket mode 0600; else 0660 with this group */
	gid_t control_gid;              /* control_group's gid, looked up by conf_load() */
	char *log_file;                 /* NULL = stderr */
	char *log_level;                /* "debug" | "info" (default) | "notice" | "warning" */
	char *metrics_listen;           /* NULL = off; "addr:port" of the Prometheus endpoint */

	struct {
		struct conf_listen *listen;     /* STARTTLS listeners (587) */
		size_t nlisten;
		struct conf_listen *listen_tls; /* implicit TLS listeners (465) */
		size_t nlisten_tls;
		struct conf_cidr *proxy_trusted;    /* who may send a PROXY header (proxy listeners) */
		size_t nproxy_trusted;
		uint64_t proxy_timeout;         /* default 10s: deadline for the PROXY header */
		char *tls_cert;                 /* PEM file; required if any listener */
		char *tls_key;
		char *tls_ciphers;              /* TLS 1.2 cipher list; NULL = io_tls.c's */
		char *tls_min_version;          /* "TLSv1.2" | "TLSv1.3"; NULL = TLSv1.2 */
		char *sasl_db;                  /* sasldb2 file */
		char *sasl_realm;               /* default: hostname */
		char *sasl_mechanisms;          /* default: "PLAIN LOGIN" */
		char **sasl_options;            /* Cyrus SASL options: key, value, key, value ... */
		size_t nsasl_options;           /* pairs; 0 = none (sasl_db or nothing) */
		uint64_t auth_timeout;          /* default 30s: a SASL step longer than this is a 454 */
		char *senders;                  /* senders map file; NULL = nobody may send */
		bool check_header_from;         /* default false: hold header From: to the map too */
		struct conf_senders_ldap senders_ldap;  /* owned senders from LDAP */
		uint64_t max_message_size;      /* default 25M */
		unsigned max_recipients;        /* default 100 */
		unsigned max_connections;       /* default 1000 */
		unsigned max_connections_per_ip;/* default 50 */
		uint64_t command_timeout;       /* default 5m: deadline for each command line
						 * (RFC 5321 4.5.3.2.7); "idle_timeout" is its old name */
		uint64_t tls_timeout;           /* default 1m: deadline for the TLS handshake */
		uint64_t auth_exchange_timeout; /* default 2m: deadline for the client's turns in AUTH */
		uint64_t data_timeout;          /* default 10m: deadline for DATA, see min_data_rate */
		unsigned min_data_rate;         /* default 500 bytes/s: each byte in DATA earns time */
		unsigned unauthenticated_share; /* default 50 (%): of max_connections before AUTH */
		unsigned max_command_errors;    /* default 20: then 421 */
		unsigned workers;               /* default 0: one event-loop thread per online CPU
						 * for the sessions (1: the main loop only, no
						 * threads); 1..64; read at start-up only */
		unsigned auth_fail_delay_after; /* default 3 failures per IP, then each reply delayed */
		unsigned auth_fail_limit;       /* default 10 failures per IP: then refused */
		uint64_t auth_fail_window;      /* default 15m */
		unsigned auth_login_fail_limit; /* default 10 failures per login (any IP): then blocked; 0 = off */
		uint64_t auth_login_block;      /* default 1m: the first block of a login, doubling */
		uint64_t auth_login_block_max;  /* default 15m: the longest block */
		uint64_t auth_login_known_ttl;  /* default 24h: an address the login succeeded from is exempt */
		unsigned login_max_messages;    /* per login per window; default 500, 0 = unlimited */
		unsigned login_max_recipients;  /* per login per window; default 2000, 0 = unlimited */
		uint64_t login_rate_window;     /* default 1h */
	} submit;

	struct {
		struct conf_hostport *dns_servers;  /* NULL/0 = system resolver */
		size_t ndns_servers;
		uint16_t smtp_port;                 /* default 25 */
		bool dnssec;                        /* default false: trust the resolvers' AD bit (DANE) */
		bool mta_sts;                       /* default true: MTA-STS (RFC 8461) for DNS delivery */
		uint64_t mta_sts_timeout;           /* default 10s: an MTA-STS policy fetch, whole */
		uint64_t *retry_intervals;          /* default 5m,10m,20m,40m,1h; last repeats */
		size_t nretry_intervals;
		uint64_t max_queue_age;             /* default 5d */
		uint64_t delay_warning;             /* default 4h; 0 disables */
		uint64_t host_backoff_min;          /* default 1m */
		uint64_t host_backoff_max;          /* default 1h */
		struct conf_route *routes;
		size_t nroutes;
		unsigned max_connections;           /* default 100, outbound total */
		unsigned max_connections_per_host;  /* default 10 */
		unsigned max_rcpts_per_txn;         /* default 100 */
		uint64_t tlsrpt_interval;           /* default 24h: TLSRPT reports (RFC 8460) sent this often */
	} router;

	struct {
		enum conf_tls tls;                  /* default opportunistic */
		uint64_t connect_timeout;           /* default 30s */
		uint64_t greeting_timeout;          /* default 5m (RFC 5321 4.5.3.2.1) */
		uint64_t command_timeout;           /* default 5m (MAIL, RCPT) */
		uint64_t data_init_timeout;         /* default 2m */
		uint64_t data_block_timeout;        /* default 3m */
		uint64_t data_done_timeout;         /* default 10m */
		uint64_t idle_timeout;              /* default 10s: keep a connection for reuse */
		char *ca_file;                      /* default: system store */
		bool thread;                        /* default false: delivery on its own thread
		                                       (deliver_new_thread); read at start-up only */
	} deliver;

	struct {
		struct conf_dkim_key *keys;         /* two for one domain: two signatures */
		size_t nkeys;
		char **headers;                     /* NULL = dkim/'s default list */
		size_t nheaders;
	} dkim;

	struct {
		char *organization;                 /* TLSRPT "organization-name"; default: hostname */
		char *contact;                      /* TLSRPT "contact-info"; default: postmaster@hostname */
	} tlsrpt;

	struct {                                    /* cluster/: shared state in Redis */
		bool enabled;                       /* the cluster group is present */
		char *redis;                        /* "127.0.0.1:6379" or "[::1]:6379" (numeric) */
		char *password_file;                /* first line: Redis's AUTH password; NULL = none */
		char *node;                         /* this node's name: [A-Za-z0-9._-], at most 64 */
	} cluster;
};

/*
 * Parse and validate path.  On success returns 0 and *out holds a snapshot
 * with one reference.  On failure returns -1 and err holds one or more lines
 * "FILE:LINE: message" (LINE is that of the offending setting, or of the
 * group that lacks a required one).  Files the config references (tls_cert,
 * tls_key, sasl_db, senders) must be readable.
 */
int conf_load(const char *path, struct conf **out, struct buf *err);

/* The built-in defaults, unvalidated (for tests and the quick-start). */
struct conf *conf_new_defaults(void);

struct conf *conf_ref(struct conf *c);
void conf_unref(struct conf *c);

/* The value of Cyrus SASL option key in submit.sasl_options, or NULL. */
const char *conf_sasl_option(const struct conf *c, const char *key);

/* Route for a domain (exact, lower-case compare), else the "*" route, else NULL. */
const struct conf_route *conf_route_find(const struct conf *c, const char *domain);

/* Parse "host:port", "[v6]:port" into a sockaddr (numeric only). 0 or -1. */
int conf_parse_listen(const char *text, struct sockaddr_storage *ss, socklen_t *len);

const char *conf_tls_name(enum conf_tls t);

/* Parse "addr/bits" or a bare address (all bits) into c; host bits must be
 * zero.  0 or -1. */
int conf_parse_cidr(const char *text, struct conf_cidr *c);
/* Whether sa (IPv4, IPv6, or IPv4-mapped IPv6) is in one of the n networks. */
bool conf_cidr_match(const struct conf_cidr *c, size_t n, const struct sockaddr *sa);

/* Free an array of host:port entries and their names. */
void conf_hostports_free(struct conf_hostport *hp, size_t n);

#endif
