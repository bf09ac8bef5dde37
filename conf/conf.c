/*
 * conf.c - the configuration: reads a libconfig file into one typed, validated
 * struct conf snapshot, and owns that snapshot's lifetime (conf_ref/unref).
 *
 * Every key users may write is a row of a table below (name, kind, where it
 * goes); the walker visits EVERY setting in the file, so an unknown key, a
 * wrong type or a bad value is always reported, with its file and line.  All
 * errors are collected, one "FILE:LINE: message" line each, before failing.
 *
 * The snapshot owns every string and array in it; conf_unref() frees them
 * when the last reference goes.  This file never logs, never touches a
 * socket, and never keeps state outside the snapshot it is building.
 */
#include "conf/conf.h"
#include "common/io.h"
#include "common/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <libconfig.h>

#define CONF_DEFAULT_QUEUE_DIR	"/var/spool/relayd"
#define CONF_DEFAULT_USER	"relayd"
#define CONF_CONTROL_SOCK_NAME	"control.sock"
#define CONF_QUEUE_DIR_MAX	(PATH_MAX - 128)	/* room for "/msg/.in-<qid>" */
#define CONF_DNS_PORT		53
#define CONF_MAX_NAME		256	/* "router.routes[12].auth_password" */

/* What a key holds, and so how its value is checked and stored. */
enum conf_kind {
	CONF_K_GROUP,		/* a { ... } group of further keys */
	CONF_K_STR,		/* char * */
	CONF_K_PATH,		/* char *, a file that must be readable */
	CONF_K_BOOL,		/* bool */
	CONF_K_UINT,		/* unsigned */
	CONF_K_PORT,		/* uint16_t, 1-65535 */
	CONF_K_SIZE,		/* uint64_t bytes: "10M" or an integer */
	CONF_K_DURATION,	/* uint64_t ms: "30s", or the integer 0 */
	CONF_K_LOG_LEVEL,	/* char *, one of conf_log_levels */
	CONF_K_TLS,		/* enum conf_tls; off2 (if any) marks it set */
	CONF_K_TLS_CIPHERS,	/* char *, a TLS 1.2 cipher list OpenSSL takes */
	CONF_K_TLS_VERSION,	/* char *, a lowest TLS version OpenSSL takes */
	CONF_K_MX_POLICY,	/* enum conf_mx_policy */
	CONF_K_MECHANISMS,	/* char *, space-separated SASL mechanism names */
	CONF_K_LISTEN,		/* struct conf_listen *, count at off2 */
	CONF_K_NAMESERVERS,	/* struct conf_hostport * (numeric), count at off2 */
	CONF_K_HOSTS,		/* struct conf_hostport * (names), count at off2 */
	CONF_K_DURATIONS,	/* uint64_t *, count at off2 */
	CONF_K_BACKOFF,		/* two durations: min at off, max at off2 */
	CONF_K_SASL_OPTIONS,	/* submit.sasl_options: a group of strings, kept as pairs */
	CONF_K_ROUTES,		/* the router.routes list of groups */
	CONF_K_DKIM_KEYS,	/* the dkim.keys list of groups of the keys in sub */
	CONF_K_STRS,		/* char ** (NULL-terminated), a list of non-empty strings, count at off2 */
	CONF_K_CIDRS,		/* struct conf_cidr *, count at off2 */
};

#define CONF_F_POSITIVE	0x01	/* 0 is not a sensible value */
#define CONF_F_NONEMPTY	0x02	/* "" is not a sensible value */
#define CONF_F_ABSOLUTE	0x04	/* a path that must start with '/' */
#define CONF_F_HAS_OFF2	0x08	/* off2 is meaningful for this kind */
#define CONF_F_HOSTNAME	0x10	/* a string that must be a host name */
#define CONF_F_FIELDNAME	0x20	/* CONF_K_STRS: each a header field name */

struct conf_key {
	const char *name;
	enum conf_kind kind;
	size_t off;			/* into struct conf or struct conf_route */
	size_t off2;
	unsigned flags;
	const struct conf_key *sub;	/* CONF_K_GROUP: its keys, NULL-terminated */
};

/* The state of one conf_load(): where errors go and how many there were. */
struct conf_ctx {
	const char *path;
	struct buf *err;
	int nerr;
	struct conf *c;
};

#define C_OFF(f)	offsetof(struct conf, f)
#define R_OFF(f)	offsetof(struct conf_route, f)
#define D_OFF(f)	offsetof(struct conf_dkim_key, f)
#define L_OFF(f)	offsetof(struct conf_listen_group, f)

/* A listen entry written as a group: { address = "..."; proxy = true; }. */
struct conf_listen_group {
	char *address;
	bool proxy;
};

static const struct conf_key conf_listen_keys[] = {
	{ "address", CONF_K_STR, L_OFF(address), 0, CONF_F_NONEMPTY, NULL },
	{ "proxy", CONF_K_BOOL, L_OFF(proxy), 0, 0, NULL },
	{ NULL, 0, 0, 0, 0, NULL }
};

static const struct conf_key conf_senders_ldap_keys[] = {
	{ "uri", CONF_K_STR, C_OFF(submit.senders_ldap.uri), 0, CONF_F_NONEMPTY, NULL },
	{ "base", CONF_K_STR, C_OFF(submit.senders_ldap.base), 0, 0, NULL },
	{ "filter", CONF_K_STR, C_OFF(submit.senders_ldap.filter), 0, CONF_F_NONEMPTY, NULL },
	{ "attributes", CONF_K_STRS, C_OFF(submit.senders_ldap.attributes),
	  C_OFF(submit.senders_ldap.nattributes), 0, NULL },
	{ "bind_dn", CONF_K_STR, C_OFF(submit.senders_ldap.bind_dn), 0, CONF_F_NONEMPTY, NULL },
	{ "bind_password_file", CONF_K_PATH, C_OFF(submit.senders_ldap.bind_password_file), 0, 0, NULL },
	{ "starttls", CONF_K_BOOL, C_OFF(submit.senders_ldap.starttls), 0, 0, NULL },
	{ "timeout", CONF_K_DURATION, C_OFF(submit.senders_ldap.timeout), 0, CONF_F_POSITIVE, NULL },
	{ "cache_ttl", CONF_K_DURATION, C_OFF(submit.senders_ldap.cache_ttl), 0, 0, NULL },
	{ NULL, 0, 0, 0, 0, NULL }
};

static const struct conf_key conf_submit_keys[] = {
	{ "listen", CONF_K_LISTEN, C_OFF(submit.listen), C_OFF(submit.nlisten), 0, NULL },
	{ "listen_tls", CONF_K_LISTEN, C_OFF(submit.listen_tls), C_OFF(submit.nlisten_tls), 0, NULL },
	{ "proxy_trusted", CONF_K_CIDRS, C_OFF(submit.proxy_trusted), C_OFF(submit.nproxy_trusted), 0, NULL },
	{ "proxy_timeout", CONF_K_DURATION, C_OFF(submit.proxy_timeout), 0, CONF_F_POSITIVE, NULL },
	{ "tls_cert", CONF_K_PATH, C_OFF(submit.tls_cert), 0, 0, NULL },
	{ "tls_key", CONF_K_PATH, C_OFF(submit.tls_key), 0, 0, NULL },
	{ "tls_ciphers", CONF_K_TLS_CIPHERS, C_OFF(submit.tls_ciphers), 0, 0, NULL },
	{ "tls_min_version", CONF_K_TLS_VERSION, C_OFF(submit.tls_min_version), 0, 0, NULL },
	{ "sasl_db", CONF_K_PATH, C_OFF(submit.sasl_db), 0, 0, NULL },
	{ "sasl_realm", CONF_K_STR, C_OFF(submit.sasl_realm), 0, CONF_F_NONEMPTY, NULL },
	{ "sasl_mechanisms", CONF_K_MECHANISMS, C_OFF(submit.sasl_mechanisms), 0, 0, NULL },
	{ "sasl_options", CONF_K_SASL_OPTIONS, 0, 0, 0, NULL },
	{ "auth_timeout", CONF_K_DURATION, C_OFF(submit.auth_timeout), 0, CONF_F_POSITIVE, NULL },
	{ "senders", CONF_K_PATH, C_OFF(submit.senders), 0, 0, NULL },
	{ "check_header_from", CONF_K_BOOL, C_OFF(submit.check_header_from), 0, 0, NULL },
	{ "senders_ldap", CONF_K_GROUP, 0, 0, 0, conf_senders_ldap_keys },
	{ "max_message_size", CONF_K_SIZE, C_OFF(submit.max_message_size), 0, CONF_F_POSITIVE, NULL },
	{ "max_recipients", CONF_K_UINT, C_OFF(submit.max_recipients), 0, CONF_F_POSITIVE, NULL },
	{ "max_connections", CONF_K_UINT, C_OFF(submit.max_connections), 0, CONF_F_POSITIVE, NULL },
	{ "max_connections_per_ip", CONF_K_UINT, C_OFF(submit.max_connections_per_ip), 0, CONF_F_POSITIVE, NULL },
	{ "command_timeout", CONF_K_DURATION, C_OFF(submit.command_timeout), 0, CONF_F_POSITIVE, NULL },
	{ "idle_timeout", CONF_K_DURATION, C_OFF(submit.command_timeout), 0, CONF_F_POSITIVE, NULL },
	{ "tls_timeout", CONF_K_DURATION, C_OFF(submit.tls_timeout), 0, CONF_F_POSITIVE, NULL },
	{ "auth_exchange_timeout", CONF_K_DURATION, C_OFF(submit.auth_exchange_timeout), 0,
	  CONF_F_POSITIVE, NULL },
	{ "data_timeout", CONF_K_DURATION, C_OFF(submit.data_timeout), 0, CONF_F_POSITIVE, NULL },
	{ "min_data_rate", CONF_K_UINT, C_OFF(submit.min_data_rate), 0, 0, NULL },
	{ "unauthenticated_share", CONF_K_UINT, C_OFF(submit.unauthenticated_share), 0,
	  CONF_F_POSITIVE, NULL },
	{ "max_command_errors", CONF_K_UINT, C_OFF(submit.max_command_errors), 0, CONF_F_POSITIVE, NULL },
	{ "workers", CONF_K_UINT, C_OFF(submit.workers), 0, 0, NULL },
	{ "auth_fail_delay_after", CONF_K_UINT, C_OFF(submit.auth_fail_delay_after), 0, 0, NULL },
	{ "auth_fail_limit", CONF_K_UINT, C_OFF(submit.auth_fail_limit), 0, CONF_F_POSITIVE, NULL },
	{ "auth_fail_window", CONF_K_DURATION, C_OFF(submit.auth_fail_window), 0, CONF_F_POSITIVE, NULL },
	{ "auth_login_fail_limit", CONF_K_UINT, C_OFF(submit.auth_login_fail_limit), 0, 0, NULL },
	{ "auth_login_block", CONF_K_DURATION, C_OFF(submit.auth_login_block), 0, CONF_F_POSITIVE, NULL },
	{ "auth_login_block_max", CONF_K_DURATION, C_OFF(submit.auth_login_block_max), 0, CONF_F_POSITIVE, NULL },
	{ "auth_login_known_ttl", CONF_K_DURATION, C_OFF(submit.auth_login_known_ttl), 0, 0, NULL },
	{ "login_max_messages", CONF_K_UINT, C_OFF(submit.login_max_messages), 0, 0, NULL },
	{ "login_max_recipients", CONF_K_UINT, C_OFF(submit.login_max_recipients), 0, 0, NULL },
	{ "login_rate_window", CONF_K_DURATION, C_OFF(submit.login_rate_window), 0, CONF_F_POSITIVE, NULL },
	{ NULL, 0, 0, 0, 0, NULL }
};

static const struct conf_key conf_router_keys[] = {
	{ "dns_servers", CONF_K_NAMESERVERS, C_OFF(router.dns_servers), C_OFF(router.ndns_servers), 0, NULL },
	{ "smtp_port", CONF_K_PORT, C_OFF(router.smtp_port), 0, 0, NULL },
	{ "dnssec", CONF_K_BOOL, C_OFF(router.dnssec), 0, 0, NULL },
	{ "mta_sts", CONF_K_BOOL, C_OFF(router.mta_sts), 0, 0, NULL },
	{ "mta_sts_timeout", CONF_K_DURATION, C_OFF(router.mta_sts_timeout), 0, CONF_F_POSITIVE, NULL },
	{ "retry_intervals", CONF_K_DURATIONS, C_OFF(router.retry_intervals), C_OFF(router.nretry_intervals), 0, NULL },
	{ "max_queue_age", CONF_K_DURATION, C_OFF(router.max_queue_age), 0, CONF_F_POSITIVE, NULL },
	{ "delay_warning", CONF_K_DURATION, C_OFF(router.delay_warning), 0, 0, NULL },
	{ "host_backoff", CONF_K_BACKOFF, C_OFF(router.host_backoff_min), C_OFF(router.host_backoff_max), 0, NULL },
	{ "routes", CONF_K_ROUTES, 0, 0, 0, NULL },
	{ "max_connections", CONF_K_UINT, C_OFF(router.max_connections), 0, CONF_F_POSITIVE, NULL },
	{ "max_connections_per_host", CONF_K_UINT, C_OFF(router.max_connections_per_host), 0, CONF_F_POSITIVE, NULL },
	{ "max_rcpts_per_txn", CONF_K_UINT, C_OFF(router.max_rcpts_per_txn), 0, CONF_F_POSITIVE, NULL },
	{ "tlsrpt_interval", CONF_K_DURATION, C_OFF(router.tlsrpt_interval), 0, CONF_F_POSITIVE, NULL },
	{ NULL, 0, 0, 0, 0, NULL }
};

static const struct conf_key conf_deliver_keys[] = {
	{ "tls", CONF_K_TLS, C_OFF(deliver.tls), 0, 0, NULL },
	{ "connect_timeout", CONF_K_DURATION, C_OFF(deliver.connect_timeout), 0, CONF_F_POSITIVE, NULL },
	{ "greeting_timeout", CONF_K_DURATION, C_OFF(deliver.greeting_timeout), 0, CONF_F_POSITIVE, NULL },
	{ "command_timeout", CONF_K_DURATION, C_OFF(deliver.command_timeout), 0, CONF_F_POSITIVE, NULL },
	{ "data_init_timeout", CONF_K_DURATION, C_OFF(deliver.data_init_timeout), 0, CONF_F_POSITIVE, NULL },
	{ "data_block_timeout", CONF_K_DURATION, C_OFF(deliver.data_block_timeout), 0, CONF_F_POSITIVE, NULL },
	{ "data_done_timeout", CONF_K_DURATION, C_OFF(deliver.data_done_timeout), 0, CONF_F_POSITIVE, NULL },
	{ "idle_timeout", CONF_K_DURATION, C_OFF(deliver.idle_timeout), 0, 0, NULL },
	{ "ca_file", CONF_K_PATH, C_OFF(deliver.ca_file), 0, 0, NULL },
	{ "thread", CONF_K_BOOL, C_OFF(deliver.thread), 0, 0, NULL },
	{ NULL, 0, 0, 0, 0, NULL }
};

static const struct conf_key conf_dkim_key_keys[] = {
	{ "domain", CONF_K_STR, D_OFF(domain), 0, CONF_F_NONEMPTY, NULL },
	{ "selector", CONF_K_STR, D_OFF(selector), 0, CONF_F_NONEMPTY, NULL },
	{ "key", CONF_K_PATH, D_OFF(key), 0, 0, NULL },
	{ NULL, 0, 0, 0, 0, NULL }
};

static const struct conf_key conf_dkim_keys[] = {
	{ "keys", CONF_K_DKIM_KEYS, 0, 0, 0, conf_dkim_key_keys },
	{ "headers", CONF_K_STRS, C_OFF(dkim.headers), C_OFF(dkim.nheaders), CONF_F_FIELDNAME, NULL },
	{ NULL, 0, 0, 0, 0, NULL }
};

static const struct conf_key conf_tlsrpt_keys[] = {
	{ "organization", CONF_K_STR, C_OFF(tlsrpt.organization), 0, CONF_F_NONEMPTY, NULL },
	{ "contact", CONF_K_STR, C_OFF(tlsrpt.contact), 0, CONF_F_NONEMPTY, NULL },
	{ NULL, 0, 0, 0, 0, NULL }
};

static const struct conf_key conf_cluster_keys[] = {
	{ "redis", CONF_K_STR, C_OFF(cluster.redis), 0, CONF_F_NONEMPTY, NULL },
	{ "password_file", CONF_K_STR, C_OFF(cluster.password_file), 0,
	  CONF_F_NONEMPTY | CONF_F_ABSOLUTE, NULL },
	{ "node", CONF_K_STR, C_OFF(cluster.node), 0, CONF_F_NONEMPTY, NULL },
	{ NULL, 0, 0, 0, 0, NULL }
};

static const struct conf_key conf_top_keys[] = {
	{ "hostname", CONF_K_STR, C_OFF(hostname), 0, CONF_F_NONEMPTY | CONF_F_HOSTNAME, NULL },
	{ "user", CONF_K_STR, C_OFF(user), 0, CONF_F_NONEMPTY, NULL },
	{ "queue_dir", CONF_K_STR, C_OFF(queue_dir), 0, CONF_F_NONEMPTY | CONF_F_ABSOLUTE, NULL },
	{ "control_socket", CONF_K_STR, C_OFF(control_socket), 0, CONF_F_NONEMPTY, NULL },
	{ "control_group", CONF_K_STR, C_OFF(control_group), 0, CONF_F_NONEMPTY, NULL },
	{ "log_file", CONF_K_STR, C_OFF(log_file), 0, 0, NULL },
	{ "log_level", CONF_K_LOG_LEVEL, C_OFF(log_level), 0, 0, NULL },
	{ "metrics_listen", CONF_K_STR, C_OFF(metrics_listen), 0, CONF_F_NONEMPTY, NULL },
	{ "submit", CONF_K_GROUP, 0, 0, 0, conf_submit_keys },
	{ "router", CONF_K_GROUP, 0, 0, 0, conf_router_keys },
	{ "deliver", CONF_K_GROUP, 0, 0, 0, conf_deliver_keys },
	{ "dkim", CONF_K_GROUP, 0, 0, 0, conf_dkim_keys },
	{ "tlsrpt", CONF_K_GROUP, 0, 0, 0, conf_tlsrpt_keys },
	{ "cluster", CONF_K_GROUP, 0, 0, 0, conf_cluster_keys },
	{ NULL, 0, 0, 0, 0, NULL }
};

static const struct conf_key conf_route_keys[] = {
	{ "domain", CONF_K_STR, R_OFF(domain), 0, CONF_F_NONEMPTY, NULL },
	{ "hosts", CONF_K_HOSTS, R_OFF(hosts), R_OFF(nhosts), 0, NULL },
	{ "mx_policy", CONF_K_MX_POLICY, R_OFF(mx_policy), 0, 0, NULL },
	{ "auth_user", CONF_K_STR, R_OFF(auth_user), 0, CONF_F_NONEMPTY, NULL },
	{ "auth_password", CONF_K_STR, R_OFF(auth_password), 0, CONF_F_NONEMPTY, NULL },
	{ "tls", CONF_K_TLS, R_OFF(tls), R_OFF(has_tls), CONF_F_HAS_OFF2, NULL },
	{ NULL, 0, 0, 0, 0, NULL }
};

static const char *const conf_log_levels[] = { "debug", "info", "notice", "warning" };
static const char *const conf_tls_names[] = { "none", "opportunistic", "require", "verify" };
static const char *const conf_mx_names[] = { "any", "primary-only" };

static void conf_walk_group(struct conf_ctx *, const config_setting_t *,
    const char *, const struct conf_key *, void *);

/* ---- errors ---- */

static void __attribute__((format(printf, 3, 4)))
conf_error(struct conf_ctx *x, const config_setting_t *s, const char *fmt, ...)
{
	const char *file = NULL;
	unsigned line = 0;
	va_list ap;

	if (s != NULL) {
		file = config_setting_source_file(s);
		line = config_setting_source_line(s);
	}
	buf_printf(x->err, "%s:%u: ", file != NULL ? file : x->path, line);
	va_start(ap, fmt);
	buf_vprintf(x->err, fmt, ap);
	va_end(ap);
	buf_putc(x->err, '\n');
	x->nerr++;
}

/* A setting's full name ("router.routes[2].hosts[0]") into out; long ones are cut. */
static void __attribute__((format(printf, 3, 4)))
conf_name(char *out, size_t outlen, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(out, outlen, fmt, ap);
	va_end(ap);
	if (n < 0)
		out[0] = '\0';
}

/* ---- small parsers ---- */

/* "1".."65535", digits only.  0 or -1. */
static int
conf_parse_port(const char *s, uint16_t *port)
{
	unsigned long v = 0;
	size_t i;

	if (s[0] == '\0' || strlen(s) > 5)
		return -1;
	for (i = 0; s[i] != '\0'; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v < 1 || v > 65535)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

/* A DNS name as far as we care: letters, digits, '-', '_', '.'; no empty labels. */
static int
conf_valid_hostname(const char *s)
{
	size_t i, label = 0;

	if (s[0] == '\0' || strlen(s) > 253)
		return 0;
	for (i = 0; s[i] != '\0'; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if (!isalnum(ch) && ch != '-' && ch != '_')
			return 0;
		if (++label > 63)
			return 0;
	}
	return 1;
}

/*
 * "host", "host:port", "[v6]", "[v6]:port" into hp (host without brackets).
 * With numeric, host must be an address literal, and a bare IPv6 address
 * without brackets is accepted too.  A missing port becomes default_port.
 */
static int
conf_parse_hostport(const char *text, bool numeric, uint16_t default_port,
    struct conf_hostport *hp)
{
	struct in6_addr a6;
	struct in_addr a4;
	const char *colon, *port = NULL;
	char *host;
	uint16_t p = default_port;

	if (text[0] == '[') {
		const char *close = strchr(text, ']');

		if (close == NULL)
			return -1;
		if (close[1] == ':')
			port = close + 2;
		else if (close[1] != '\0')
			return -1;
		host = xstrndup(text + 1, (size_t)(close - text - 1));
		if (inet_pton(AF_INET6, host, &a6) != 1)
			goto bad;
	} else if ((colon = strchr(text, ':')) != NULL &&
	    strchr(colon + 1, ':') != NULL) {
		/* Two or more colons: only a bare IPv6 address, and no port. */
		if (!numeric || inet_pton(AF_INET6, text, &a6) != 1)
			return -1;
		host = xstrdup(text);
	} else {
		if (colon != NULL) {
			host = xstrndup(text, (size_t)(colon - text));
			port = colon + 1;
		} else
			host = xstrdup(text);
		if (numeric ? inet_pton(AF_INET, host, &a4) != 1 :
		    !conf_valid_hostname(host))
			goto bad;
	}
	if (port != NULL && conf_parse_port(port, &p) == -1)
		goto bad;
	hp->host = host;
	hp->port = p;
	return 0;
bad:
	free(host);
	return -1;
}

/* ---- getting typed values out of settings ---- */

/* The string value of s, or NULL after reporting a wrong type. */
static const char *
conf_get_string(struct conf_ctx *x, const config_setting_t *s, const char *name)
{
	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		conf_error(x, s, "%s: expected a string", name);
		return NULL;
	}
	return config_setting_get_string(s);
}

/* The integer value of s (int or int64).  0, or -1 after reporting. */
static int
conf_get_integer(struct conf_ctx *x, const config_setting_t *s, const char *name,
    long long *v)
{
	int t = config_setting_type(s);

	if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) {
		conf_error(x, s, "%s: expected an integer", name);
		return -1;
	}
	*v = config_setting_get_int64(s);
	return 0;
}

/* The element count of a list or array, or -1 after reporting. */
static int
conf_get_list(struct conf_ctx *x, const config_setting_t *s, const char *name)
{
	if (!config_setting_is_list(s) && !config_setting_is_array(s)) {
		conf_error(x, s, "%s: expected a list [ ... ]", name);
		return -1;
	}
	return config_setting_length(s);
}

/* A duration in ms: a string with units, or the integer 0. 0 or -1. */
static int
conf_get_duration(struct conf_ctx *x, const config_setting_t *s, const char *name,
    uint64_t *ms)
{
	const char *v;
	int t = config_setting_type(s);

	if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) {
		long long n = config_setting_get_int64(s);

		if (n == 0) {
			*ms = 0;
			return 0;
		}
		conf_error(x, s, "%s: bad duration %lld: write a string with a unit, "
		    "e.g. \"%llds\" (use 30s, 5m, 4h, 5d)", name, n, n);
		return -1;
	}
	if (t != CONFIG_TYPE_STRING) {
		conf_error(x, s, "%s: expected a duration such as \"30s\"", name);
		return -1;
	}
	v = config_setting_get_string(s);
	if (util_parse_duration(v, ms) == -1) {
		conf_error(x, s, "%s: bad duration '%s' (use 30s, 5m, 4h, 5d)", name, v);
		return -1;
	}
	return 0;
}

/* A size in bytes: an integer, or a string such as "10M".  0 or -1. */
static int
conf_get_size(struct conf_ctx *x, const config_setting_t *s, const char *name,
    uint64_t *bytes)
{
	const char *v;
	int t = config_setting_type(s);

	if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) {
		long long n = config_setting_get_int64(s);

		if (n < 0) {
			conf_error(x, s, "%s: bad size %lld: must not be negative", name, n);
			return -1;
		}
		*bytes = (uint64_t)n;
		return 0;
	}
	if (t != CONFIG_TYPE_STRING) {
		conf_error(x, s, "%s: expected a size such as \"10M\" or a byte count", name);
		return -1;
	}
	v = config_setting_get_string(s);
	if (util_parse_size(v, bytes) == -1) {
		conf_error(x, s, "%s: bad size '%s' (use 512K, 10M, 1G or a byte count)",
		    name, v);
		return -1;
	}
	return 0;
}

/* Index of v in names[n], or -1 after reporting the choices. */
static int
conf_get_enum(struct conf_ctx *x, const config_setting_t *s, const char *name,
    const char *const *names, size_t n)
{
	struct buf choices = BUF_INIT;
	const char *v;
	size_t i;

	if ((v = conf_get_string(x, s, name)) == NULL)
		return -1;
	for (i = 0; i < n; i++)
		if (strcmp(v, names[i]) == 0)
			return (int)i;
	for (i = 0; i < n; i++)
		buf_printf(&choices, "%s%s", i ? ", " : "", names[i]);
	conf_error(x, s, "%s: bad value '%s' (use %s)", name, v, buf_cstr(&choices));
	buf_free(&choices);
	return -1;
}

/* Report unless path can be opened for reading as a regular file. */
static void
conf_check_readable(struct conf_ctx *x, const config_setting_t *s, const char *name,
    const char *path)
{
	struct stat st;
	int fd, e = 0;

	fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd == -1)
		e = errno;
	else {
		if (fstat(fd, &st) == -1)
			e = errno;
		else if (S_ISDIR(st.st_mode))
			e = EISDIR;
		close(fd);
	}
	if (e != 0)
		conf_error(x, s, "%s: cannot read '%s': %s", name, path, strerror(e));
}

/* Normalise "plain  login" to "PLAIN LOGIN"; NULL if a name is malformed. */
static char *
conf_normalize_mechanisms(const char *v)
{
	struct buf b = BUF_INIT;
	const char *p = v;

	while (*p != '\0') {
		size_t len = 0;

		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			break;
		if (b.len > 0)
			buf_putc(&b, ' ');
		for (; *p != '\0' && *p != ' ' && *p != '\t'; p++, len++) {
			unsigned char ch = (unsigned char)*p;

			if (!isalnum(ch) && ch != '-' && ch != '_')
				goto bad;
			buf_putc(&b, (char)toupper(ch));
		}
		if (len > 20)	/* RFC 4422 3.1 */
			goto bad;
	}
	if (b.len == 0)
		goto bad;
	return buf_steal(&b);
bad:
	buf_free(&b);
	return NULL;
}

/* ---- storing values ---- */

static void
conf_set_str(void *base, size_t off, const char *v)
{
	char **field = (char **)((char *)base + off);

	free(*field);
	*field = v != NULL ? xstrdup(v) : NULL;
}

void
conf_hostports_free(struct conf_hostport *hp, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(hp[i].host);
	free(hp);
}

static void
conf_free_listen(struct conf_listen *l, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(l[i].text);
	free(l);
}

/*
 * A listen list: each entry "addr:port" (as always), or a group
 * { address = "addr:port"; proxy = true; } for a listener behind a proxy
 * that speaks the PROXY protocol (submit_proxy.c).
 */
static void
conf_set_listen(struct conf_ctx *x, const config_setting_t *s, const char *name,
    void *base, const struct conf_key *k)
{
	struct conf_listen **field = (struct conf_listen **)((char *)base + k->off);
	size_t *count = (size_t *)((char *)base + k->off2);
	struct conf_listen *l;
	size_t nl = 0;
	int i, n;

	if ((n = conf_get_list(x, s, name)) == -1)
		return;
	l = xcalloc((size_t)n, sizeof(*l));
	for (i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		struct conf_listen_group g = { NULL, false };
		char ename[CONF_MAX_NAME];
		const char *v;

		conf_name(ename, sizeof(ename), "%s[%d]", name, i);
		if (config_setting_is_group(e)) {
			conf_walk_group(x, e, ename, conf_listen_keys, &g);
			if ((v = g.address) == NULL &&
			    config_setting_get_member(e, "address") == NULL)
				conf_error(x, e, "%s: address is required", ename);
		} else if ((v = conf_get_string(x, e, ename)) == NULL)
			continue;
		if (v == NULL)
			continue;
		if (conf_parse_listen(v, &l[nl].addr, &l[nl].addrlen) == -1) {
			conf_error(x, e, "%s: bad listen address '%s' "
			    "(use 127.0.0.1:587 or [::1]:587)", ename, v);
			free(g.address);
			continue;
		}
		l[nl].proxy = g.proxy;
		l[nl++].text = xstrdup(v);
		free(g.address);
	}
	conf_free_listen(*field, *count);
	*field = l;
	*count = nl;
}

/* submit.proxy_trusted: a list of networks. */
static void
conf_set_cidrs(struct conf_ctx *x, const config_setting_t *s, const char *name,
    void *base, const struct conf_key *k)
{
	struct conf_cidr **field = (struct conf_cidr **)((char *)base + k->off);
	size_t *count = (size_t *)((char *)base + k->off2);
	struct conf_cidr *c;
	size_t nc = 0;
	int i, n;

	if ((n = conf_get_list(x, s, name)) == -1)
		return;
	c = xcalloc((size_t)n + 1, sizeof(*c));
	for (i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		char ename[CONF_MAX_NAME];
		const char *v;

		conf_name(ename, sizeof(ename), "%s[%d]", name, i);
		if ((v = conf_get_string(x, e, ename)) == NULL)
			continue;
		if (conf_parse_cidr(v, &c[nc]) == -1) {
			conf_error(x, e, "%s: bad network '%s' (use 192.0.2.0/24, "
			    "2001:db8::/32 or one address; no host bits after the prefix)", ename, v);
			continue;
		}
		nc++;
	}
	free(*field);
	*field = c;
	*count = nc;
}

static void
conf_set_hostports(struct conf_ctx *x, const config_setting_t *s, const char *name,
    void *base, const struct conf_key *k)
{
	struct conf_hostport **field = (struct conf_hostport **)((char *)base + k->off);
	size_t *count = (size_t *)((char *)base + k->off2);
	bool numeric = k->kind == CONF_K_NAMESERVERS;
	struct conf_hostport *hp;
	size_t nhp = 0;
	int i, n;

	if ((n = conf_get_list(x, s, name)) == -1)
		return;
	hp = xcalloc((size_t)n, sizeof(*hp));
	for (i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		char ename[CONF_MAX_NAME];
		const char *v;

		conf_name(ename, sizeof(ename), "%s[%d]", name, i);
		if ((v = conf_get_string(x, e, ename)) == NULL)
			continue;
		/* Route hosts get port 0 here; conf_finish() fills in smtp_port. */
		if (conf_parse_hostport(v, numeric, numeric ? CONF_DNS_PORT : 0,
		    &hp[nhp]) == -1) {
			conf_error(x, e, numeric ?
			    "%s: bad DNS server '%s' (use 192.0.2.53, 192.0.2.53:53 or [2001:db8::53]:53)" :
			    "%s: bad host '%s' (use host, host:port or [2001:db8::1]:port)",
			    ename, v);
			continue;
		}
		nhp++;
	}
	conf_hostports_free(*field, *count);
	*field = hp;
	*count = nhp;
}

static void
conf_set_durations(struct conf_ctx *x, const config_setting_t *s, const char *name,
    void *base, const struct conf_key *k)
{
	uint64_t **field = (uint64_t **)((char *)base + k->off);
	size_t *count = (size_t *)((char *)base + k->off2);
	uint64_t *d;
	size_t nd = 0;
	int i, n;

	if ((n = conf_get_list(x, s, name)) == -1)
		return;
	if (n == 0) {
		conf_error(x, s, "%s: must not be empty", name);
		return;
	}
	d = xcalloc((size_t)n, sizeof(*d));
	for (i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		char ename[CONF_MAX_NAME];

		conf_name(ename, sizeof(ename), "%s[%d]", name, i);
		if (conf_get_duration(x, e, ename, &d[nd]) == -1)
			continue;
		if (d[nd] == 0) {
			conf_error(x, e, "%s: must be greater than 0", ename);
			continue;
		}
		nd++;
	}
	free(*field);
	*field = d;
	*count = nd;
}

static void
conf_set_backoff(struct conf_ctx *x, const config_setting_t *s, const char *name,
    void *base, const struct conf_key *k)
{
	uint64_t *min = (uint64_t *)((char *)base + k->off);
	uint64_t *max = (uint64_t *)((char *)base + k->off2);
	uint64_t v[2];
	char ename[CONF_MAX_NAME], a[32], b[32];
	int i, n, bad = 0;

	if ((n = conf_get_list(x, s, name)) == -1)
		return;
	if (n != 2) {
		conf_error(x, s, "%s: expected two durations [min, max], got %d", name, n);
		return;
	}
	for (i = 0; i < 2; i++) {
		conf_name(ename, sizeof(ename), "%s[%d]", name, i);
		if (conf_get_duration(x, config_setting_get_elem(s, (unsigned)i),
		    ename, &v[i]) == -1)
			bad = 1;
	}
	if (bad)
		return;
	if (v[0] > v[1]) {
		util_format_duration(v[0], a, sizeof(a));
		util_format_duration(v[1], b, sizeof(b));
		conf_error(x, s, "%s: min %s is greater than max %s", name, a, b);
		return;
	}
	*min = v[0];
	*max = v[1];
}

/* "example.org." -> "example.org"; "*" stays; anything else is rejected. */
static char *
conf_normalize_domain(const char *v)
{
	char *d;
	size_t i, len;

	if (strcmp(v, "*") == 0)
		return xstrdup(v);
	len = strlen(v);
	if (len > 1 && v[len - 1] == '.')
		len--;
	d = xstrndup(v, len);
	for (i = 0; d[i] != '\0'; i++)
		d[i] = (char)tolower((unsigned char)d[i]);
	if (!conf_valid_hostname(d)) {
		free(d);
		return NULL;
	}
	return d;
}

static void
conf_free_route(struct conf_route *r)
{
	free(r->domain);
	conf_hostports_free(r->hosts, r->nhosts);
	free(r->auth_user);
	free(r->auth_password);
}

static void
conf_set_routes(struct conf_ctx *x, const config_setting_t *s, const char *name)
{
	struct conf *c = x->c;
	int i, n;

	if (!config_setting_is_list(s)) {
		conf_error(x, s, "%s: expected a list of groups ( { domain = \"...\"; ... }, ... )",
		    name);
		return;
	}
	n = config_setting_length(s);
	for (i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		const config_setting_t *ds;
		struct conf_route r;
		char ename[CONF_MAX_NAME], *dom;
		bool has_user, has_password;
		size_t j;

		conf_name(ename, sizeof(ename), "%s[%d]", name, i);
		if (!config_setting_is_group(e)) {
			conf_error(x, e, "%s: expected a group { domain = \"...\"; ... }", ename);
			continue;
		}
		memset(&r, 0, sizeof(r));
		conf_walk_group(x, e, ename, conf_route_keys, &r);

		ds = config_setting_get_member(e, "domain");
		if (ds == NULL)
			conf_error(x, e, "%s: domain is required", ename);
		has_user = config_setting_get_member(e, "auth_user") != NULL;
		has_password = config_setting_get_member(e, "auth_password") != NULL;
		if (has_user != has_password)
			conf_error(x, e, "%s: %s requires %s", ename,
			    has_user ? "auth_user" : "auth_password",
			    has_user ? "auth_password" : "auth_user");
		if (r.domain == NULL) {
			conf_free_route(&r);
			continue;
		}
		if ((dom = conf_normalize_domain(r.domain)) == NULL) {
			conf_error(x, ds, "%s.domain: bad domain '%s' (use \"example.org\" or \"*\")",
			    ename, r.domain);
			conf_free_route(&r);
			continue;
		}
		free(r.domain);
		r.domain = dom;
		for (j = 0; j < c->router.nroutes; j++) {
			if (strcmp(c->router.routes[j].domain, dom) == 0) {
				conf_error(x, ds, "%s.domain: duplicate route for '%s'", ename, dom);
				break;
			}
		}
		if (j < c->router.nroutes) {
			conf_free_route(&r);
			continue;
		}
		c->router.routes = xrealloc(c->router.routes,
		    (c->router.nroutes + 1) * sizeof(*c->router.routes));
		c->router.routes[c->router.nroutes++] = r;
	}
}

/*
 * submit.sasl_options: every member is a Cyrus SASL option (libsasl's own
 * names, not checked here: the plugins define them), its value a string or
 * an integer, handed over as a string.
 */
static void
conf_set_sasl_options(struct conf_ctx *x, const config_setting_t *s, const char *name)
{
	struct conf *c = x->c;
	char ename[CONF_MAX_NAME], num[32];
	const char *v;
	long long n;
	int i, len;

	if (!config_setting_is_group(s)) {
		conf_error(x, s, "%s: expected a group { option = \"value\"; ... }", name);
		return;
	}
	len = config_setting_length(s);
	for (i = 0; i < len; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);

		conf_name(ename, sizeof(ename), "%s.%s", name, config_setting_name(e));
		if (config_setting_type(e) == CONFIG_TYPE_INT ||
		    config_setting_type(e) == CONFIG_TYPE_INT64) {
			if (conf_get_integer(x, e, ename, &n) == -1)
				continue;
			snprintf(num, sizeof(num), "%lld", n);
			v = num;
		} else if ((v = conf_get_string(x, e, ename)) == NULL) {
			continue;
		}
		c->submit.sasl_options = xrealloc(c->submit.sasl_options,
		    (c->submit.nsasl_options + 1) * 2 * sizeof(char *));
		c->submit.sasl_options[c->submit.nsasl_options * 2] = xstrdup(config_setting_name(e));
		c->submit.sasl_options[c->submit.nsasl_options * 2 + 1] = xstrdup(v);
		c->submit.nsasl_options++;
	}
}

static void
conf_free_dkim_key(struct conf_dkim_key *d)
{
	free(d->domain);
	free(d->selector);
	free(d->key);
	free(d->file);
}

static void
conf_set_dkim_keys(struct conf_ctx *x, const config_setting_t *s, const char *name,
    const struct conf_key *k)
{
	struct conf *c = x->c;
	int i, n;

	if (!config_setting_is_list(s)) {
		conf_error(x, s, "%s: expected a list of groups ( { domain = \"...\"; "
		    "selector = \"...\"; key = \"...\"; }, ... )", name);
		return;
	}
	n = config_setting_length(s);
	for (i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		struct conf_dkim_key d;
		char ename[CONF_MAX_NAME], *dom;
		const char *file;
		size_t j;

		conf_name(ename, sizeof(ename), "%s[%d]", name, i);
		if (!config_setting_is_group(e)) {
			conf_error(x, e, "%s: expected a group { domain = \"...\"; ... }", ename);
			continue;
		}
		memset(&d, 0, sizeof(d));
		conf_walk_group(x, e, ename, k->sub, &d);
		if (d.domain == NULL || d.selector == NULL || d.key == NULL) {
			conf_error(x, e, "%s: domain, selector and key are required", ename);
			conf_free_dkim_key(&d);
			continue;
		}
		if ((dom = conf_normalize_domain(d.domain)) == NULL || strcmp(dom, "*") == 0 ||
		    !conf_valid_hostname(d.selector)) {
			conf_error(x, e, "%s: bad domain '%s' or selector '%s'", ename,
			    d.domain, d.selector);
			free(dom);
			conf_free_dkim_key(&d);
			continue;
		}
		free(d.domain);
		d.domain = dom;
		for (j = 0; j < c->dkim.nkeys; j++)
			if (strcmp(c->dkim.keys[j].domain, dom) == 0 &&
			    strcmp(c->dkim.keys[j].selector, d.selector) == 0)
				break;
		if (j < c->dkim.nkeys) {
			conf_error(x, e, "%s: selector '%s' of '%s' is listed twice", ename,
			    d.selector, dom);
			conf_free_dkim_key(&d);
			continue;
		}
		file = config_setting_source_file(e);
		d.file = xstrdup(file != NULL ? file : x->path);
		d.line = config_setting_source_line(e);
		c->dkim.keys = xrealloc(c->dkim.keys, (c->dkim.nkeys + 1) * sizeof(*c->dkim.keys));
		c->dkim.keys[c->dkim.nkeys++] = d;
	}
}

static void
conf_free_strs(char **v, size_t n)
{
	size_t i;

	for (i = 0; v != NULL && i < n; i++)
		free(v[i]);
	free(v);
}

/* A list of non-empty strings ("a", "b") into a NULL-terminated char ** at
 * off, count at off2; with CONF_F_FIELDNAME each must be a header field name. */
static void
conf_set_strs(struct conf_ctx *x, const config_setting_t *s, const char *name,
    void *base, const struct conf_key *k)
{
	char ***vp = (char ***)(void *)((char *)base + k->off);
	size_t *np = (size_t *)(void *)((char *)base + k->off2);
	char **v;
	const char *e;
	int i, n;

	if (conf_get_list(x, s, name) == -1)
		return;
	if ((n = config_setting_length(s)) == 0) {
		conf_error(x, s, "%s: must not be empty", name);
		return;
	}
	v = xcalloc((size_t)n + 1, sizeof(*v));
	for (i = 0; i < n; i++) {
		e = config_setting_get_string_elem(s, (unsigned)i);
		if (e == NULL || e[0] == '\0') {
			conf_error(x, s, "%s[%d]: expected a non-empty string", name, i);
			conf_free_strs(v, (size_t)i);
			return;
		}
		if ((k->flags & CONF_F_FIELDNAME) && strpbrk(e, ": \t") != NULL) {
			conf_error(x, s, "%s[%d]: bad header field name '%s'", name, i, e);
			conf_free_strs(v, (size_t)i);
			return;
		}
		v[i] = xstrdup(e);
	}
	conf_free_strs(*vp, *np);
	*vp = v;
	*np = (size_t)n;
}

/* Check and store one setting s, known as key k, into base. */
static void
conf_set(struct conf_ctx *x, const config_setting_t *s, const char *name,
    const struct conf_key *k, void *base)
{
	char *p = (char *)base + k->off;
	const char *v;
	long long n;
	uint64_t u;
	int e;

	switch (k->kind) {
	case CONF_K_GROUP:
		if (!config_setting_is_group(s)) {
			conf_error(x, s, "%s: expected a group { ... }", name);
			return;
		}
		conf_walk_group(x, s, name, k->sub, base);
		return;
	case CONF_K_STR:
	case CONF_K_PATH:
		if ((v = conf_get_string(x, s, name)) == NULL)
			return;
		if (v[0] == '\0' &&
		    ((k->flags & CONF_F_NONEMPTY) || k->kind == CONF_K_PATH)) {
			conf_error(x, s, "%s: must not be empty", name);
			return;
		}
		if ((k->flags & CONF_F_HOSTNAME) && !conf_valid_hostname(v)) {
			conf_error(x, s, "%s: bad host name '%s'", name, v);
			return;
		}
		if ((k->flags & CONF_F_ABSOLUTE) && v[0] != '/') {
			conf_error(x, s, "%s: must be an absolute path, not '%s'", name, v);
			return;
		}
		if (k->kind == CONF_K_PATH)
			conf_check_readable(x, s, name, v);
		conf_set_str(base, k->off, v);
		return;
	case CONF_K_BOOL:
		if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
			conf_error(x, s, "%s: expected true or false", name);
			return;
		}
		*(bool *)p = config_setting_get_bool(s) != 0;
		return;
	case CONF_K_UINT:
		if (conf_get_integer(x, s, name, &n) == -1)
			return;
		if (n < (k->flags & CONF_F_POSITIVE ? 1 : 0) || n > (long long)UINT_MAX) {
			conf_error(x, s, "%s: must be between %d and %u, not %lld", name,
			    k->flags & CONF_F_POSITIVE ? 1 : 0, UINT_MAX, n);
			return;
		}
		*(unsigned *)p = (unsigned)n;
		return;
	case CONF_K_PORT:
		if (conf_get_integer(x, s, name, &n) == -1)
			return;
		if (n < 1 || n > 65535) {
			conf_error(x, s, "%s: must be a port between 1 and 65535, not %lld",
			    name, n);
			return;
		}
		*(uint16_t *)p = (uint16_t)n;
		return;
	case CONF_K_SIZE:
	case CONF_K_DURATION:
		if ((k->kind == CONF_K_SIZE ? conf_get_size(x, s, name, &u) :
		    conf_get_duration(x, s, name, &u)) == -1)
			return;
		if (u == 0 && (k->flags & CONF_F_POSITIVE)) {
			conf_error(x, s, "%s: must be greater than 0", name);
			return;
		}
		*(uint64_t *)p = u;
		return;
	case CONF_K_LOG_LEVEL:
		e = conf_get_enum(x, s, name, conf_log_levels, RELAY_ARRAY_LEN(conf_log_levels));
		if (e != -1)
			conf_set_str(base, k->off, conf_log_levels[e]);
		return;
	case CONF_K_TLS:
		e = conf_get_enum(x, s, name, conf_tls_names, RELAY_ARRAY_LEN(conf_tls_names));
		if (e == -1)
			return;
		*(enum conf_tls *)p = (enum conf_tls)e;
		if (k->flags & CONF_F_HAS_OFF2)
			*(bool *)((char *)base + k->off2) = true;
		return;
	case CONF_K_TLS_CIPHERS:
	case CONF_K_TLS_VERSION: {
		char e2[300];

		if ((v = conf_get_string(x, s, name)) == NULL)
			return;
		if (io_tls_check_policy(k->kind == CONF_K_TLS_CIPHERS ? v : NULL,
		    k->kind == CONF_K_TLS_VERSION ? v : NULL, e2, sizeof(e2)) != 0) {
			conf_error(x, s, "%s: %s", name, e2);
			return;
		}
		conf_set_str(base, k->off, v);
		return;
	}
	case CONF_K_MX_POLICY:
		e = conf_get_enum(x, s, name, conf_mx_names, RELAY_ARRAY_LEN(conf_mx_names));
		if (e != -1)
			*(enum conf_mx_policy *)p = (enum conf_mx_policy)e;
		return;
	case CONF_K_MECHANISMS: {
		char *m;

		if ((v = conf_get_string(x, s, name)) == NULL)
			return;
		if ((m = conf_normalize_mechanisms(v)) == NULL) {
			conf_error(x, s, "%s: bad mechanism list '%s' (use e.g. \"PLAIN LOGIN\")",
			    name, v);
			return;
		}
		free(*(char **)p);
		*(char **)p = m;
		return;
	}
	case CONF_K_LISTEN:
		conf_set_listen(x, s, name, base, k);
		return;
	case CONF_K_CIDRS:
		conf_set_cidrs(x, s, name, base, k);
		return;
	case CONF_K_NAMESERVERS:
	case CONF_K_HOSTS:
		conf_set_hostports(x, s, name, base, k);
		return;
	case CONF_K_DURATIONS:
		conf_set_durations(x, s, name, base, k);
		return;
	case CONF_K_BACKOFF:
		conf_set_backoff(x, s, name, base, k);
		return;
	case CONF_K_ROUTES:
		conf_set_routes(x, s, name);
		return;
	case CONF_K_DKIM_KEYS:
		conf_set_dkim_keys(x, s, name, k);
		return;
	case CONF_K_SASL_OPTIONS:
		conf_set_sasl_options(x, s, name);
		return;
	case CONF_K_STRS:
		conf_set_strs(x, s, name, base, k);
		return;
	}
	fatalx("%s: key %s has unknown kind %d", __func__, name, (int)k->kind);
}

/* Visit every member of grp: unknown keys are errors, known ones are stored. */
static void
conf_walk_group(struct conf_ctx *x, const config_setting_t *grp, const char *prefix,
    const struct conf_key *keys, void *base)
{
	int i, n = config_setting_length(grp);

	for (i = 0; i < n; i++) {
		const config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
		const char *key = config_setting_name(s);
		const struct conf_key *k;
		char name[CONF_MAX_NAME];

		if (prefix != NULL)
			conf_name(name, sizeof(name), "%s.%s", prefix, key);
		else
			conf_name(name, sizeof(name), "%s", key);
		for (k = keys; k->name != NULL; k++)
			if (strcmp(k->name, key) == 0)
				break;
		if (k->name == NULL) {
			conf_error(x, s, "unknown key '%s%s%s'", prefix != NULL ? prefix : "",
			    prefix != NULL ? "." : "", key);
			continue;
		}
		conf_set(x, s, name, k, base);
	}
}

/* ---- whole-config rules and derived defaults ---- */

static char *
conf_default_hostname(void)
{
	char h[256];

	if (gethostname(h, sizeof(h)) == -1 || h[0] == '\0')
		return xstrdup("localhost");
	h[sizeof(h) - 1] = '\0';
	return xstrdup(h);
}

static char *
conf_default_control_socket(const char *queue_dir)
{
	struct buf b = BUF_INIT;
	size_t len = strlen(queue_dir);

	while (len > 1 && queue_dir[len - 1] == '/')
		len--;
	buf_append(&b, queue_dir, len);
	if (len == 0 || queue_dir[len - 1] != '/')
		buf_putc(&b, '/');
	buf_puts(&b, CONF_CONTROL_SOCK_NAME);
	return buf_steal(&b);
}

static void
conf_check_duplicate_listeners(struct conf_ctx *x, const config_setting_t *root)
{
	const struct conf *c = x->c;
	const struct conf_listen *all[2] = { c->submit.listen, c->submit.listen_tls };
	const size_t nall[2] = { c->submit.nlisten, c->submit.nlisten_tls };
	const char *names[2] = { "submit.listen", "submit.listen_tls" };
	size_t a, i, b, j;

	for (a = 0; a < 2; a++) {
		for (i = 0; i < nall[a]; i++) {
			for (b = 0; b <= a; b++) {
				for (j = 0; j < (b == a ? i : nall[b]); j++) {
					if (all[a][i].addrlen != all[b][j].addrlen ||
					    memcmp(&all[a][i].addr, &all[b][j].addr,
					    all[a][i].addrlen) != 0)
						continue;
					conf_error(x, config_setting_lookup(
					    (config_setting_t *)root, names[a]),
					    "%s: '%s' is also listed in %s", names[a],
					    all[a][i].text, names[b]);
				}
			}
		}
	}
}

/*
 * sasl_db and sasl_options are two ways to say one thing; and a backend that
 * only checks plaintext passwords (saslauthd: pwcheck_method without auxprop)
 * cannot serve the shared-secret mechanisms (CRAM-MD5, DIGEST-MD5, SCRAM-*).
 */
static void
conf_check_sasl(struct conf_ctx *x, const config_setting_t *submit)
{
	const struct conf *c = x->c;
	const config_setting_t *opts, *s;
	const char *pw, *m, *end;
	size_t n;

	if (c->submit.nsasl_options == 0)
		return;
	opts = config_setting_get_member(submit, "sasl_options");
	if (c->submit.sasl_db != NULL)
		conf_error(x, opts, "submit.sasl_options: not together with submit.sasl_db "
		    "(sasl_db means sasl_options = { pwcheck_method = \"auxprop\"; "
		    "auxprop_plugin = \"sasldb\"; sasldb_path = ... })");
	if (conf_sasl_option(c, "mech_list") != NULL)
		conf_error(x, config_setting_get_member(opts, "mech_list"), "submit.sasl_options."
		    "mech_list: set the mechanisms with submit.sasl_mechanisms");
	pw = conf_sasl_option(c, "pwcheck_method");
	if (pw == NULL || strstr(pw, "auxprop") != NULL || c->submit.sasl_mechanisms == NULL)
		return;
	if ((s = config_setting_get_member(submit, "sasl_mechanisms")) == NULL)
		s = opts;
	for (m = c->submit.sasl_mechanisms; *m != '\0'; m = end + strspn(end, " ")) {
		end = m + strcspn(m, " ");
		n = (size_t)(end - m);
		if ((n == 5 && strncmp(m, "PLAIN", 5) == 0) || (n == 5 && strncmp(m, "LOGIN", 5) == 0))
			continue;
		conf_error(x, s, "submit.sasl_mechanisms: %.*s cannot work with pwcheck_method "
		    "\"%s\", which checks plaintext passwords only (use PLAIN LOGIN, or "
		    "pwcheck_method = \"auxprop\")", (int)n, m, pw);
	}
}

/* submit.senders_ldap: uri and base go together; the filter knows only %u %d %%. */
static void
conf_finish_senders_ldap(struct conf_ctx *x, const config_setting_t *root)
{
	struct conf_senders_ldap *l = &x->c->submit.senders_ldap;
	const config_setting_t *g = config_setting_lookup((config_setting_t *)root,
	    "submit.senders_ldap");
	const char *p;

	if (g == NULL)
		return;
	if (l->uri == NULL)
		conf_error(x, g, "submit.senders_ldap.uri: required in submit.senders_ldap");
	if (l->base == NULL)
		conf_error(x, g, "submit.senders_ldap.base: required in submit.senders_ldap");
	for (p = l->filter; (p = strchr(p, '%')) != NULL; p += 2)
		if (p[1] != 'u' && p[1] != 'd' && p[1] != '%') {
			conf_error(x, config_setting_get_member(g, "filter"),
			    "submit.senders_ldap.filter: unknown '%%%c' (use %%u, %%d or %%%%)",
			    p[1] != '\0' ? p[1] : ' ');
			break;
		}
	if (l->bind_password_file != NULL && l->bind_dn == NULL)
		conf_error(x, config_setting_get_member(g, "bind_password_file"),
		    "submit.senders_ldap.bind_password_file: needs bind_dn");
}

/* cluster: redis and node are required; redis a numeric address with its port. */
static void
conf_finish_cluster(struct conf_ctx *x, const config_setting_t *root)
{
	struct conf *c = x->c;
	const config_setting_t *g = config_setting_get_member(root, "cluster");
	struct sockaddr_storage ss;
	socklen_t len;
	size_t i;

	if (g == NULL)
		return;
	c->cluster.enabled = true;
	if (c->cluster.redis == NULL)
		conf_error(x, g, "cluster.redis: required in cluster");
	else if (conf_parse_listen(c->cluster.redis, &ss, &len) == -1)
		conf_error(x, config_setting_get_member(g, "redis"), "cluster.redis: bad address "
		    "'%s' (a numeric address and port: 127.0.0.1:6379 or [::1]:6379)", c->cluster.redis);
	/* read once at the start, as root, before the privilege drop (cluster_new):
	 * a reload as the unprivileged user neither reads nor checks it */
	if (c->cluster.password_file != NULL && geteuid() == 0)
		conf_check_readable(x, config_setting_get_member(g, "password_file"),
		    "cluster.password_file", c->cluster.password_file);
	if (c->cluster.node == NULL) {
		conf_error(x, g, "cluster.node: required in cluster");
		return;
	}
	for (i = 0; c->cluster.node[i] != '\0'; i++)
		if (!isalnum((unsigned char)c->cluster.node[i]) && strchr("._-", c->cluster.node[i]) == NULL)
			break;
	if (c->cluster.node[i] != '\0' || i > 64)
		conf_error(x, config_setting_get_member(g, "node"), "cluster.node: bad name '%s' "
		    "(at most 64 letters, digits, '.', '_' or '-')", c->cluster.node);
}

/* submit: idle_timeout is command_timeout's old name (one of them); a share is a percentage. */
static void
conf_finish_submit_slow(struct conf_ctx *x, const config_setting_t *submit)
{
	const config_setting_t *old, *share, *workers;

	if (submit == NULL)
		return;
	workers = config_setting_get_member(submit, "workers");
	if (workers != NULL && x->c->submit.workers > CONF_SUBMIT_WORKERS_MAX)
		conf_error(x, workers, "submit.workers: 0 (one per CPU) or 1 to %d, not %u",
		    CONF_SUBMIT_WORKERS_MAX, x->c->submit.workers);
	old = config_setting_get_member(submit, "idle_timeout");
	if (old != NULL && config_setting_get_member(submit, "command_timeout") != NULL)
		conf_error(x, old, "submit.idle_timeout: the old name of submit.command_timeout; "
		    "set only command_timeout");
	share = config_setting_get_member(submit, "unauthenticated_share");
	if (share != NULL && x->c->submit.unauthenticated_share > 100)
		conf_error(x, share, "submit.unauthenticated_share: a percentage of "
		    "submit.max_connections, 1 to 100");
}

/* What a queue file holds: a message's length is 32 bits in memory
 * (queue.h, QUEUE_BODY_MAX), and the largest message accepted leaves room
 * below that for the headers relayd adds (Received:, DKIM-Signature:); its
 * envelope lines are at most 4 MiB (QFILE_ENV_MAX, or the queue refuses the
 * message), a recipient's line at most about 720 bytes (from a 512-byte RCPT
 * command, its ORCPT's control bytes escaped). */
#define CONF_MESSAGE_SIZE_MAX   (4000ULL * 1024 * 1024)
#define CONF_RECIPIENTS_MAX     5000

static void
conf_check_queue_bounds(struct conf_ctx *x, const config_setting_t *submit)
{
	const config_setting_t *s;

	if (submit == NULL)
		return;
	s = config_setting_get_member(submit, "max_message_size");
	if (s != NULL && x->c->submit.max_message_size > CONF_MESSAGE_SIZE_MAX)
		conf_error(x, s, "submit.max_message_size: at most 4000M (the queue holds a message "
		    "of up to 4 GiB)");
	s = config_setting_get_member(submit, "max_recipients");
	if (s != NULL && x->c->submit.max_recipients > CONF_RECIPIENTS_MAX)
		conf_error(x, s, "submit.max_recipients: at most %d (a queue file's envelope holds "
		    "that many at their longest)", CONF_RECIPIENTS_MAX);
}

/* A listener marked proxy = true takes connections only from proxy_trusted. */
static void
conf_check_proxy(struct conf_ctx *x, const config_setting_t *submit)
{
	const struct conf *c = x->c;
	size_t i;
	bool any = false;

	for (i = 0; i < c->submit.nlisten; i++)
		any = any || c->submit.listen[i].proxy;
	for (i = 0; i < c->submit.nlisten_tls; i++)
		any = any || c->submit.listen_tls[i].proxy;
	if (any && c->submit.nproxy_trusted == 0)
		conf_error(x, submit, "submit.proxy_trusted: required when a listener has "
		    "proxy = true (the addresses of the proxies)");
}

/* Rules that span keys, and defaults derived from other keys. */
static void
conf_finish(struct conf_ctx *x, const config_setting_t *root)
{
	struct conf *c = x->c;
	const config_setting_t *submit, *s;
	struct sockaddr_un sun;
	size_t i, j;

	submit = config_setting_get_member(root, "submit");
	if (c->submit.nlisten + c->submit.nlisten_tls > 0) {
		if (c->submit.tls_cert == NULL)
			conf_error(x, submit, "submit.tls_cert: required when "
			    "submit.listen or submit.listen_tls is set");
		if (c->submit.tls_key == NULL)
			conf_error(x, submit, "submit.tls_key: required when "
			    "submit.listen or submit.listen_tls is set");
	}
	conf_check_duplicate_listeners(x, root);
	conf_check_proxy(x, submit);
	conf_check_sasl(x, submit);
	conf_finish_submit_slow(x, submit);
	conf_check_queue_bounds(x, submit);
	conf_finish_senders_ldap(x, root);
	conf_finish_cluster(x, root);

	if (c->submit.sasl_realm == NULL)
		c->submit.sasl_realm = xstrdup(c->hostname);
	/* queue_dir/msg/<qid> and the like must fit in a path */
	if (strlen(c->queue_dir) > CONF_QUEUE_DIR_MAX)
		conf_error(x, config_setting_get_member(root, "queue_dir"),
		    "queue_dir: longer than %d bytes", CONF_QUEUE_DIR_MAX);
	else if (c->control_socket == NULL)
		c->control_socket = conf_default_control_socket(c->queue_dir);
	if (c->control_socket != NULL && strlen(c->control_socket) >= sizeof(sun.sun_path)) {
		if ((s = config_setting_get_member(root, "control_socket")) == NULL)
			s = config_setting_get_member(root, "queue_dir");
		conf_error(x, s, "control_socket: '%s' is longer than %zu bytes",
		    c->control_socket, sizeof(sun.sun_path) - 1);
	}
	if (c->control_group != NULL) {
		const struct group *gr = getgrnam(c->control_group);

		if (gr == NULL)
			conf_error(x, config_setting_get_member(root, "control_group"),
			    "control_group: no such group '%s'", c->control_group);
		else
			c->control_gid = gr->gr_gid;
	}

	if (c->metrics_listen != NULL) {
		struct sockaddr_storage ss;
		socklen_t sslen;

		if (conf_parse_listen(c->metrics_listen, &ss, &sslen) == -1)
			conf_error(x, config_setting_get_member(root, "metrics_listen"),
			    "metrics_listen: bad address '%s' (want \"addr:port\" or \"[addr]:port\")",
			    c->metrics_listen);
	}

	for (i = 0; i < c->router.nroutes; i++) {
		struct conf_route *r = &c->router.routes[i];

		for (j = 0; j < r->nhosts; j++)
			if (r->hosts[j].port == 0)
				r->hosts[j].port = c->router.smtp_port;
	}
}

static void
conf_free(struct conf *c)
{
	size_t i;

	free(c->path);
	free(c->hostname);
	free(c->user);
	free(c->queue_dir);
	free(c->control_socket);
	free(c->control_group);
	free(c->log_file);
	free(c->log_level);
	free(c->metrics_listen);

	conf_free_listen(c->submit.listen, c->submit.nlisten);
	conf_free_listen(c->submit.listen_tls, c->submit.nlisten_tls);
	free(c->submit.proxy_trusted);
	free(c->submit.tls_cert);
	free(c->submit.tls_key);
	free(c->submit.tls_ciphers);
	free(c->submit.tls_min_version);
	free(c->submit.sasl_db);
	free(c->submit.sasl_realm);
	free(c->submit.sasl_mechanisms);
	for (i = 0; i < c->submit.nsasl_options * 2; i++)
		free(c->submit.sasl_options[i]);
	free(c->submit.sasl_options);
	free(c->submit.senders);
	free(c->submit.senders_ldap.uri);
	free(c->submit.senders_ldap.base);
	free(c->submit.senders_ldap.filter);
	conf_free_strs(c->submit.senders_ldap.attributes, c->submit.senders_ldap.nattributes);
	free(c->submit.senders_ldap.bind_dn);
	free(c->submit.senders_ldap.bind_password_file);
	free(c->cluster.redis);
	free(c->cluster.password_file);
	free(c->cluster.node);

	conf_hostports_free(c->router.dns_servers, c->router.ndns_servers);
	free(c->router.retry_intervals);
	for (i = 0; i < c->router.nroutes; i++)
		conf_free_route(&c->router.routes[i]);
	free(c->router.routes);

	free(c->deliver.ca_file);
	for (i = 0; i < c->dkim.nkeys; i++)
		conf_free_dkim_key(&c->dkim.keys[i]);
	free(c->dkim.keys);
	conf_free_strs(c->dkim.headers, c->dkim.nheaders);
	free(c->tlsrpt.organization);
	free(c->tlsrpt.contact);
	free(c);
}

/* ---- the interface ---- */

const char *
conf_sasl_option(const struct conf *c, const char *key)
{
	size_t i;

	for (i = 0; i < c->submit.nsasl_options; i++)
		if (strcmp(c->submit.sasl_options[2 * i], key) == 0)
			return c->submit.sasl_options[2 * i + 1];
	return NULL;
}

struct conf *
conf_new_defaults(void)
{
	static const uint64_t retry[] = {
		5 * 60000, 10 * 60000, 20 * 60000, 40 * 60000, 60 * 60000,
	};
	struct conf *c = xcalloc(1, sizeof(*c));

	c->refs = 1;
	c->hostname = conf_default_hostname();
	c->user = xstrdup(CONF_DEFAULT_USER);
	c->queue_dir = xstrdup(CONF_DEFAULT_QUEUE_DIR);
	c->control_socket = conf_default_control_socket(c->queue_dir);
	c->log_file = NULL;
	c->log_level = xstrdup("info");

	c->submit.sasl_realm = xstrdup(c->hostname);
	c->submit.sasl_mechanisms = xstrdup("PLAIN LOGIN");
	c->submit.check_header_from = false;
	c->submit.senders_ldap.filter = xstrdup("(uid=%u)");
	c->submit.senders_ldap.attributes = xcalloc(2, sizeof(char *));
	c->submit.senders_ldap.attributes[0] = xstrdup("mail");
	c->submit.senders_ldap.attributes[1] = xstrdup("mailAlternateAddress");
	c->submit.senders_ldap.nattributes = 2;
	c->submit.senders_ldap.timeout = 10000;
	c->submit.senders_ldap.cache_ttl = 5 * 60000;
	c->submit.max_message_size = 25 * 1024 * 1024;
	c->submit.max_recipients = 100;
	c->submit.max_connections = 1000;
	c->submit.max_connections_per_ip = 50;
	c->submit.command_timeout = 5 * 60000;
	c->submit.tls_timeout = 60000;
	c->submit.proxy_timeout = 10000;
	c->submit.auth_exchange_timeout = 2 * 60000;
	c->submit.data_timeout = 10 * 60000;
	c->submit.min_data_rate = 500;
	c->submit.unauthenticated_share = 50;
	c->submit.max_command_errors = 20;
	c->submit.auth_timeout = 30000;
	c->submit.auth_fail_delay_after = 3;
	c->submit.auth_fail_limit = 10;
	c->submit.auth_fail_window = 15 * 60000;
	c->submit.auth_login_fail_limit = 10;
	c->submit.auth_login_block = 60000;
	c->submit.auth_login_block_max = 15 * 60000;
	c->submit.auth_login_known_ttl = 24 * 3600000ULL;
	c->submit.login_max_messages = 500;
	c->submit.login_max_recipients = 2000;
	c->submit.login_rate_window = 60 * 60000;

	c->router.smtp_port = 25;
	c->router.mta_sts = true;
	c->router.mta_sts_timeout = 10000;
	c->router.retry_intervals = xmalloc(sizeof(retry));
	memcpy(c->router.retry_intervals, retry, sizeof(retry));
	c->router.nretry_intervals = RELAY_ARRAY_LEN(retry);
	c->router.max_queue_age = 5 * 86400000ULL;
	c->router.delay_warning = 4 * 3600000ULL;
	c->router.host_backoff_min = 60000;
	c->router.host_backoff_max = 3600000;
	c->router.max_connections = 100;
	c->router.max_connections_per_host = 10;
	c->router.max_rcpts_per_txn = 100;
	c->router.tlsrpt_interval = 86400000ULL;

	c->deliver.tls = CONF_TLS_OPPORTUNISTIC;
	c->deliver.connect_timeout = 30000;
	c->deliver.greeting_timeout = 5 * 60000;
	c->deliver.command_timeout = 5 * 60000;
	c->deliver.data_init_timeout = 2 * 60000;
	c->deliver.data_block_timeout = 3 * 60000;
	c->deliver.data_done_timeout = 10 * 60000;
	c->deliver.idle_timeout = 10000;
	return c;
}

int
conf_load(const char *path, struct conf **out, struct buf *err)
{
	struct buf discard = BUF_INIT;
	struct conf_ctx x;
	config_t cf;
	FILE *fp;
	int e;

	*out = NULL;
	memset(&x, 0, sizeof(x));
	x.path = path;
	x.err = err != NULL ? err : &discard;

	/* libconfig reports only "file I/O error"; say why ourselves. */
	if ((fp = fopen(path, "r")) == NULL) {
		e = errno;
		conf_error(&x, NULL, "cannot read '%s': %s", path, strerror(e));
		buf_free(&discard);
		return -1;
	}
	fclose(fp);

	config_init(&cf);
	if (config_read_file(&cf, path) != CONFIG_TRUE) {
		const char *file = config_error_file(&cf);

		buf_printf(x.err, "%s:%d: syntax error: %s\n", file != NULL ? file : path,
		    config_error_line(&cf), config_error_text(&cf));
		config_destroy(&cf);
		buf_free(&discard);
		return -1;
	}

	x.c = conf_new_defaults();
	x.c->path = xstrdup(path);
	/* Derived defaults are filled in by conf_finish() unless set. */
	free(x.c->control_socket);
	x.c->control_socket = NULL;
	free(x.c->submit.sasl_realm);
	x.c->submit.sasl_realm = NULL;

	conf_walk_group(&x, config_root_setting(&cf), NULL, conf_top_keys, x.c);
	conf_finish(&x, config_root_setting(&cf));
	config_destroy(&cf);
	buf_free(&discard);

	if (x.nerr > 0) {
		conf_free(x.c);
		return -1;
	}
	*out = x.c;
	return 0;
}

struct conf *
conf_ref(struct conf *c)
{
	if (atomic_fetch_add(&c->refs, 1) <= 0)
		fatalx("%s: reference to a freed configuration", __func__);
	return c;
}

void
conf_unref(struct conf *c)
{
	int was;

	if (c == NULL)
		return;
	was = atomic_fetch_sub(&c->refs, 1);
	if (was <= 0)
		fatalx("%s: configuration released too often", __func__);
	if (was == 1)
		conf_free(c);
}

const struct conf_route *
conf_route_find(const struct conf *c, const char *domain)
{
	const struct conf_route *star = NULL;
	size_t i, len = strlen(domain);

	/* A trailing dot names the same domain. */
	if (len > 1 && domain[len - 1] == '.')
		len--;
	for (i = 0; i < c->router.nroutes; i++) {
		const struct conf_route *r = &c->router.routes[i];

		if (strcmp(r->domain, "*") == 0)
			star = r;
		else if (strlen(r->domain) == len &&
		    util_strncasecmp(r->domain, domain, len) == 0)
			return r;
	}
	return star;
}

int
conf_parse_listen(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[INET6_ADDRSTRLEN];
	const char *colon, *port;
	uint16_t p;
	size_t hlen;

	memset(ss, 0, sizeof(*ss));
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		if (close == NULL || close[1] != ':')
			return -1;
		hlen = (size_t)(close - text - 1);
		port = close + 2;
		if (hlen == 0 || hlen >= sizeof(host))
			return -1;
		memcpy(host, text + 1, hlen);
		host[hlen] = '\0';
		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1 ||
		    conf_parse_port(port, &p) == -1)
			return -1;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(p);
		*len = sizeof(*sin6);
		return 0;
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		if ((colon = strchr(text, ':')) == NULL)
			return -1;
		hlen = (size_t)(colon - text);
		port = colon + 1;
		if (hlen == 0 || hlen >= sizeof(host))
			return -1;
		memcpy(host, text, hlen);
		host[hlen] = '\0';
		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1 ||
		    conf_parse_port(port, &p) == -1)
			return -1;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(p);
		*len = sizeof(*sin);
		return 0;
	}
}

const char *
conf_tls_name(enum conf_tls t)
{
	if ((size_t)t < RELAY_ARRAY_LEN(conf_tls_names))
		return conf_tls_names[t];
	return "unknown";
}

int
conf_parse_cidr(const char *text, struct conf_cidr *c)
{
	char host[INET6_ADDRSTRLEN];
	const char *slash = strchr(text, '/');
	size_t hlen = slash != NULL ? (size_t)(slash - text) : strlen(text);
	unsigned max, i;
	char *end;
	long bits;

	memset(c, 0, sizeof(*c));
	if (hlen == 0 || hlen >= sizeof(host))
		return -1;
	memcpy(host, text, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET, host, c->addr) == 1) {
		c->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, host, c->addr) == 1) {
		c->family = AF_INET6;
		max = 128;
	} else
		return -1;
	c->bits = max;
	if (slash != NULL) {
		if (!isdigit((unsigned char)slash[1]))
			return -1;
		bits = strtol(slash + 1, &end, 10);
		if (*end != '\0' || bits < 0 || bits > (long)max)
			return -1;
		c->bits = (unsigned)bits;
	}
	for (i = c->bits; i < max; i++)
		if (c->addr[i / 8] & (0x80 >> (i % 8)))
			return -1;      /* host bits set: a typo more often than not */
	return 0;
}

bool
conf_cidr_match(const struct conf_cidr *c, size_t n, const struct sockaddr *sa)
{
	static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	const unsigned char *a;
	int family = sa->sa_family;
	size_t i;
	unsigned b;

	if (family == AF_INET)
		a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
	else if (family == AF_INET6) {
		a = (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (memcmp(a, mapped, sizeof(mapped)) == 0) {
			a += sizeof(mapped);
			family = AF_INET;
		}
	} else
		return false;
	for (i = 0; i < n; i++) {
		if (c[i].family != family)
			continue;
		for (b = 0; b < c[i].bits; b++)
			if ((a[b / 8] ^ c[i].addr[b / 8]) & (0x80 >> (b % 8)))
				break;
		if (b == c[i].bits)
			return true;
	}
	return false;
}
