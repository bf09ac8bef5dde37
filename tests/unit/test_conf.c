/*
 * test_conf.c - unit tests of conf/: configuration files are written to
 * temporary files, loaded with conf_load(), and the typed values or the exact
 * "FILE:LINE: message" errors are checked against tables.  Also tables for
 * the duration and size parsers in common/util.c that the configuration uses.
 * Owns its temporary directory and files and removes them at the end.
 */
#include "conf/conf.h"
#include "common/util.h"
#include "check.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MIN_MS	60000ULL
#define HOUR_MS	3600000ULL
#define DAY_MS	86400000ULL

static char tdir[64];		/* holds the files configs refer to as @D@ */
static char *conf_paths[128];
static size_t nconf_paths;

static void
write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	if (fp == NULL) {
		perror(path);
		exit(2);
	}
	fputs(text, fp);
	fclose(fp);
}

static void
setup_dir(void)
{
	static const char *files[] = { "cert.pem", "key.pem", "sasldb2", "senders", "ca.pem" };
	char path[128];
	size_t i;

	snprintf(tdir, sizeof(tdir), "/tmp/relayd-test-conf-XXXXXX");
	if (mkdtemp(tdir) == NULL) {
		perror("mkdtemp");
		exit(2);
	}
	for (i = 0; i < RELAY_ARRAY_LEN(files); i++) {
		if (snprintf(path, sizeof(path), "%s/%s", tdir, files[i]) >= (int)sizeof(path))
			exit(2);
		write_file(path, "test\n");
	}
}

static void
cleanup_dir(void)
{
	static const char *files[] = { "cert.pem", "key.pem", "sasldb2", "senders", "ca.pem" };
	char path[128];
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(files); i++) {
		if (snprintf(path, sizeof(path), "%s/%s", tdir, files[i]) < (int)sizeof(path))
			unlink(path);
	}
	rmdir(tdir);
	for (i = 0; i < nconf_paths; i++) {
		unlink(conf_paths[i]);
		free(conf_paths[i]);
	}
}

/* Write text (with "@D@" replaced by the test directory) to a new temp file. */
static const char *
write_conf(const char *text)
{
	struct buf b = BUF_INIT;
	const char *p, *at;
	char *path;
	int fd;

	for (p = text; (at = strstr(p, "@D@")) != NULL; p = at + 3) {
		buf_append(&b, p, (size_t)(at - p));
		buf_puts(&b, tdir);
	}
	buf_puts(&b, p);

	path = xstrdup("/tmp/relayd-conf-XXXXXX");
	if ((fd = mkstemp(path)) == -1) {
		perror("mkstemp");
		exit(2);
	}
	if (write(fd, b.data ? b.data : "", b.len) != (ssize_t)b.len)
		exit(2);
	close(fd);
	buf_free(&b);
	if (nconf_paths == RELAY_ARRAY_LEN(conf_paths))
		exit(2);
	conf_paths[nconf_paths++] = path;
	return path;
}

/* ---- util_parse_duration, util_parse_size ---- */

static void
test_parse_duration(void)
{
	static const struct { const char *in; int rc; uint64_t ms; } t[] = {
		{ "0", 0, 0 },
		{ "0s", 0, 0 },
		{ "250ms", 0, 250 },
		{ "30s", 0, 30000 },
		{ "5m", 0, 5 * MIN_MS },
		{ "4h", 0, 4 * HOUR_MS },
		{ "5d", 0, 5 * DAY_MS },
		{ "1w", 0, 7 * DAY_MS },
		{ "1h30m", 0, 90 * MIN_MS },
		{ "1m30s", 0, 90000 },
		{ "1m5ms", 0, MIN_MS + 5 },
		{ "", -1, 0 },
		{ "5", -1, 0 },
		{ "5x", -1, 0 },
		{ "m", -1, 0 },
		{ "-5s", -1, 0 },
		{ " 5s", -1, 0 },
		{ "5s ", -1, 0 },
		{ "5 s", -1, 0 },
		{ "1.5h", -1, 0 },
		{ "1h30", -1, 0 },
		{ "5M", -1, 0 },
		{ "99999999999999999999s", -1, 0 },
		{ "30000000000000000d", -1, 0 },
	};
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		uint64_t ms = 12345;
		int rc = util_parse_duration(t[i].in, &ms);

		CHECK_MSG(rc == t[i].rc, "util_parse_duration(\"%s\") = %d", t[i].in, rc);
		if (rc == 0 && t[i].rc == 0)
			CHECK_MSG(ms == t[i].ms, "util_parse_duration(\"%s\") = %llu ms, want %llu",
			    t[i].in, (unsigned long long)ms, (unsigned long long)t[i].ms);
	}
}

static void
test_parse_size(void)
{
	static const struct { const char *in; int rc; uint64_t bytes; } t[] = {
		{ "0", 0, 0 },
		{ "1000", 0, 1000 },
		{ "512K", 0, 512 * 1024 },
		{ "512k", 0, 512 * 1024 },
		{ "10M", 0, 10 * 1024 * 1024 },
		{ "10MB", 0, 10 * 1024 * 1024 },
		{ "1G", 0, 1024 * 1024 * 1024 },
		{ "4G", 0, 4ULL * 1024 * 1024 * 1024 },
		{ "", -1, 0 },
		{ "M", -1, 0 },
		{ "10Q", -1, 0 },
		{ "10B", -1, 0 },
		{ "-1", -1, 0 },
		{ " 10", -1, 0 },
		{ "10 M", -1, 0 },
		{ "10MX", -1, 0 },
		{ "99999999999999999999", -1, 0 },
		{ "99999999999999G", -1, 0 },
	};
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		uint64_t bytes = 12345;
		int rc = util_parse_size(t[i].in, &bytes);

		CHECK_MSG(rc == t[i].rc, "util_parse_size(\"%s\") = %d", t[i].in, rc);
		if (rc == 0 && t[i].rc == 0)
			CHECK_MSG(bytes == t[i].bytes, "util_parse_size(\"%s\") = %llu, want %llu",
			    t[i].in, (unsigned long long)bytes, (unsigned long long)t[i].bytes);
	}
}

/* ---- conf_parse_listen, conf_tls_name ---- */

static void
test_parse_listen(void)
{
	static const struct { const char *in; int rc; int family; const char *addr; int port; } t[] = {
		{ "127.0.0.1:587", 0, AF_INET, "127.0.0.1", 587 },
		{ "0.0.0.0:465", 0, AF_INET, "0.0.0.0", 465 },
		{ "[::1]:587", 0, AF_INET6, "::1", 587 },
		{ "[2001:db8::1]:65535", 0, AF_INET6, "2001:db8::1", 65535 },
		{ "127.0.0.1:1", 0, AF_INET, "127.0.0.1", 1 },
		{ "127.0.0.1", -1, 0, NULL, 0 },
		{ "127.0.0.1:", -1, 0, NULL, 0 },
		{ "127.0.0.1:0", -1, 0, NULL, 0 },
		{ "127.0.0.1:65536", -1, 0, NULL, 0 },
		{ "127.0.0.1:58x", -1, 0, NULL, 0 },
		{ "127.0.0.1:+58", -1, 0, NULL, 0 },
		{ "127.0.0.1:587:1", -1, 0, NULL, 0 },
		{ "localhost:587", -1, 0, NULL, 0 },
		{ "256.0.0.1:587", -1, 0, NULL, 0 },
		{ ":587", -1, 0, NULL, 0 },
		{ "::1:587", -1, 0, NULL, 0 },
		{ "[::1]", -1, 0, NULL, 0 },
		{ "[::1]587", -1, 0, NULL, 0 },
		{ "[127.0.0.1]:587", -1, 0, NULL, 0 },
		{ "[]:587", -1, 0, NULL, 0 },
		{ "", -1, 0, NULL, 0 },
	};
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		struct sockaddr_storage ss;
		socklen_t len = 0;
		char got[INET6_ADDRSTRLEN] = "";
		int rc = conf_parse_listen(t[i].in, &ss, &len);

		CHECK_MSG(rc == t[i].rc, "conf_parse_listen(\"%s\") = %d", t[i].in, rc);
		if (rc != 0 || t[i].rc != 0)
			continue;
		CHECK_INT(ss.ss_family, t[i].family);
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

			CHECK_INT(len, sizeof(*sin));
			CHECK_INT(ntohs(sin->sin_port), t[i].port);
			inet_ntop(AF_INET, &sin->sin_addr, got, sizeof(got));
		} else {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

			CHECK_INT(len, sizeof(*sin6));
			CHECK_INT(ntohs(sin6->sin6_port), t[i].port);
			inet_ntop(AF_INET6, &sin6->sin6_addr, got, sizeof(got));
		}
		CHECK_STR(got, t[i].addr);
	}
}

static void
test_tls_name(void)
{
	CHECK_STR(conf_tls_name(CONF_TLS_NONE), "none");
	CHECK_STR(conf_tls_name(CONF_TLS_OPPORTUNISTIC), "opportunistic");
	CHECK_STR(conf_tls_name(CONF_TLS_REQUIRE), "require");
	CHECK_STR(conf_tls_name(CONF_TLS_VERIFY), "verify");
	CHECK_STR(conf_tls_name((enum conf_tls)42), "unknown");
}

/* ---- defaults ---- */

static void
check_defaults(const struct conf *c)
{
	static const uint64_t retry[] = { 5 * MIN_MS, 10 * MIN_MS, 20 * MIN_MS, 40 * MIN_MS, HOUR_MS };
	char host[256] = "";
	size_t i;

	gethostname(host, sizeof(host) - 1);
	CHECK_STR(c->hostname, host[0] ? host : "localhost");
	CHECK_STR(c->user, "relayd");
	CHECK_STR(c->queue_dir, "/var/spool/relayd");
	CHECK_STR(c->control_socket, "/var/spool/relayd/control.sock");
	CHECK(c->control_group == NULL);
	CHECK(c->log_file == NULL);
	CHECK_STR(c->log_level, "info");

	CHECK_INT(c->submit.nlisten, 0);
	CHECK_INT(c->submit.nlisten_tls, 0);
	CHECK(c->submit.tls_cert == NULL);
	CHECK(c->submit.tls_key == NULL);
	CHECK(c->submit.tls_ciphers == NULL);
	CHECK(c->submit.tls_min_version == NULL);
	CHECK(c->submit.sasl_db == NULL);
	CHECK_STR(c->submit.sasl_realm, c->hostname);
	CHECK_STR(c->submit.sasl_mechanisms, "PLAIN LOGIN");
	CHECK(c->submit.senders == NULL);
	CHECK(!c->submit.check_header_from);
	CHECK_INT(c->submit.max_message_size, 25 * 1024 * 1024);
	CHECK_INT(c->submit.max_recipients, 100);
	CHECK_INT(c->submit.max_connections, 1000);
	CHECK_INT(c->submit.max_connections_per_ip, 50);
	CHECK_INT(c->submit.command_timeout, 5 * MIN_MS);
	CHECK_INT(c->submit.tls_timeout, MIN_MS);
	CHECK_INT(c->submit.auth_exchange_timeout, 2 * MIN_MS);
	CHECK_INT(c->submit.data_timeout, 10 * MIN_MS);
	CHECK_INT(c->submit.min_data_rate, 500);
	CHECK_INT(c->submit.unauthenticated_share, 50);
	CHECK_INT(c->submit.max_command_errors, 20);
	CHECK_INT(c->submit.workers, 0);                     /* one per CPU */
	CHECK_INT(c->submit.auth_fail_delay_after, 3);
	CHECK_INT(c->submit.auth_fail_limit, 10);
	CHECK_INT(c->submit.auth_fail_window, 15 * MIN_MS);
	CHECK_INT(c->submit.login_max_messages, 500);
	CHECK_INT(c->submit.login_max_recipients, 2000);
	CHECK_INT(c->submit.login_rate_window, HOUR_MS);

	CHECK_INT(c->router.ndns_servers, 0);
	CHECK_INT(c->router.smtp_port, 25);
	CHECK_INT(c->router.nretry_intervals, RELAY_ARRAY_LEN(retry));
	for (i = 0; i < c->router.nretry_intervals && i < RELAY_ARRAY_LEN(retry); i++)
		CHECK_INT(c->router.retry_intervals[i], retry[i]);
	CHECK_INT(c->router.max_queue_age, 5 * DAY_MS);
	CHECK_INT(c->router.delay_warning, 4 * HOUR_MS);
	CHECK_INT(c->router.host_backoff_min, MIN_MS);
	CHECK_INT(c->router.host_backoff_max, HOUR_MS);
	CHECK_INT(c->router.nroutes, 0);
	CHECK_INT(c->router.max_connections, 100);
	CHECK_INT(c->router.max_connections_per_host, 10);
	CHECK_INT(c->router.max_rcpts_per_txn, 100);

	CHECK_INT(c->deliver.tls, CONF_TLS_OPPORTUNISTIC);
	CHECK_INT(c->deliver.connect_timeout, 30000);
	CHECK_INT(c->deliver.greeting_timeout, 5 * MIN_MS);
	CHECK_INT(c->deliver.command_timeout, 5 * MIN_MS);
	CHECK_INT(c->deliver.data_init_timeout, 2 * MIN_MS);
	CHECK_INT(c->deliver.data_block_timeout, 3 * MIN_MS);
	CHECK_INT(c->deliver.data_done_timeout, 10 * MIN_MS);
	CHECK_INT(c->deliver.idle_timeout, 10000);
	CHECK(c->deliver.ca_file == NULL);
}

static void
test_defaults(void)
{
	struct buf err = BUF_INIT;
	struct conf *c = conf_new_defaults();
	const char *path;

	CHECK_INT(c->refs, 1);
	check_defaults(c);
	conf_unref(c);

	/* An empty file (or comments only) is the defaults. */
	path = write_conf("# nothing\n");
	c = NULL;
	CHECK_INT(conf_load(path, &c, &err), 0);
	CHECK_STR(buf_cstr(&err), "");
	if (c != NULL) {
		check_defaults(c);
		CHECK_STR(c->path, path);
		CHECK_INT(c->refs, 1);
		conf_unref(c);
	}
	buf_free(&err);
}

/* Defaults that follow other keys: control_socket, sasl_realm, route ports. */
static void
test_derived_defaults(void)
{
	struct buf err = BUF_INIT;
	struct conf *c = NULL;
	const char *path = write_conf(
	    "hostname = \"mx.example.org\";\n"
	    "queue_dir = \"/srv/relayd/\";\n"
	    "router = {\n"
	    "  routes = ( { domain = \"a.example\"; hosts = [ \"h1.example\", \"h2.example:2525\" ]; } );\n"
	    "  smtp_port = 26;\n"
	    "};\n");

	CHECK_INT(conf_load(path, &c, &err), 0);
	CHECK_STR(buf_cstr(&err), "");
	if (c == NULL)
		return;
	CHECK_STR(c->control_socket, "/srv/relayd/control.sock");
	CHECK_STR(c->submit.sasl_realm, "mx.example.org");
	CHECK_INT(c->router.nroutes, 1);
	if (c->router.nroutes == 1 && c->router.routes[0].nhosts == 2) {
		CHECK_INT(c->router.routes[0].hosts[0].port, 26);	/* smtp_port, set later in the file */
		CHECK_INT(c->router.routes[0].hosts[1].port, 2525);
		CHECK(!c->router.routes[0].has_tls);
		CHECK_INT(c->router.routes[0].mx_policy, CONF_MX_ANY);
		CHECK(c->router.routes[0].auth_user == NULL);
	}
	conf_unref(c);
	buf_free(&err);
}

/* ---- a full configuration ---- */

static const char full_conf[] =
    "# every key, none at its default\n"
    "hostname = \"relay.example.org\";\n"
    "user = \"_relayd\";\n"
    "queue_dir = \"/var/spool/relayd-test\";\n"
    "control_socket = \"/run/relayd.sock\";\n"
    "control_group = \"root\";\n"
    "log_file = \"/var/log/relayd.log\";\n"
    "log_level = \"debug\";\n"
    "submit = {\n"
    "  listen = [ \"127.0.0.1:587\", \"[::1]:587\" ];\n"
    "  listen_tls = ( \"127.0.0.1:465\" );\n"
    "  tls_cert = \"@D@/cert.pem\";\n"
    "  tls_key = \"@D@/key.pem\";\n"
    "  tls_ciphers = \"ECDHE+AESGCM\";\n"
    "  tls_min_version = \"TLSv1.3\";\n"
    "  sasl_db = \"@D@/sasldb2\";\n"
    "  sasl_realm = \"example.org\";\n"
    "  sasl_mechanisms = \"plain  CRAM-MD5\";\n"
    "  senders = \"@D@/senders\";\n"
    "  check_header_from = true;\n"
    "  max_message_size = \"10M\";\n"
    "  max_recipients = 50;\n"
    "  max_connections = 200L;\n"
    "  max_connections_per_ip = 5;\n"
    "  idle_timeout = \"2m\";\n"
    "  tls_timeout = \"20s\";\n"
    "  auth_exchange_timeout = \"40s\";\n"
    "  data_timeout = \"1h30m\";\n"
    "  min_data_rate = 0;\n"
    "  unauthenticated_share = 100;\n"
    "  max_command_errors = 7;\n"
    "  workers = 3;\n"
    "  auth_fail_delay_after = 0;\n"
    "  auth_fail_limit = 4;\n"
    "  auth_fail_window = \"1h\";\n"
    "  login_max_messages = 0;\n"
    "  login_max_recipients = 300;\n"
    "  login_rate_window = \"1d\";\n"
    "};\n"
    "router = {\n"
    "  dns_servers = [ \"192.0.2.53\", \"[2001:db8::53]:5353\", \"2001:db8::54\" ];\n"
    "  smtp_port = 2525;\n"
    "  retry_intervals = ( \"1m\", \"30m\" );\n"
    "  max_queue_age = \"3d\";\n"
    "  delay_warning = 0;\n"
    "  host_backoff = [ \"30s\", \"2h\" ];\n"
    "  routes = (\n"
    "    { domain = \"Example.NET.\"; mx_policy = \"primary-only\"; },\n"
    "    { domain = \"partner.example\";\n"
    "      hosts = [ \"mx1.partner.example\", \"192.0.2.25:26\", \"[2001:db8::25]:27\", \"[2001:db8::26]\" ];\n"
    "      tls = \"verify\"; },\n"
    "    { domain = \"*\"; hosts = [ \"smarthost.example.org:587\" ];\n"
    "      auth_user = \"relay\"; auth_password = \"s3cret\"; tls = \"require\"; }\n"
    "  );\n"
    "  max_connections = 20;\n"
    "  max_connections_per_host = 2;\n"
    "  max_rcpts_per_txn = 1000;\n"
    "};\n"
    "deliver = {\n"
    "  tls = \"none\";\n"
    "  connect_timeout = \"10s\";\n"
    "  greeting_timeout = \"1m\";\n"
    "  command_timeout = \"2m\";\n"
    "  data_init_timeout = \"3m\";\n"
    "  data_block_timeout = \"4m\";\n"
    "  data_done_timeout = \"5m\";\n"
    "  idle_timeout = \"0\";\n"
    "  ca_file = \"@D@/ca.pem\";\n"
    "};\n";

static void
test_full(void)
{
	struct buf err = BUF_INIT;
	struct conf *c = NULL;
	const struct conf_route *r;
	char want[256];
	const char *path = write_conf(full_conf);

	CHECK_INT(conf_load(path, &c, &err), 0);
	CHECK_STR(buf_cstr(&err), "");
	if (c == NULL)
		return;

	CHECK_STR(c->hostname, "relay.example.org");
	CHECK_STR(c->user, "_relayd");
	CHECK_STR(c->queue_dir, "/var/spool/relayd-test");
	CHECK_STR(c->control_socket, "/run/relayd.sock");
	CHECK_STR(c->control_group, "root");
	CHECK_STR(c->log_file, "/var/log/relayd.log");
	CHECK_STR(c->log_level, "debug");

	CHECK_INT(c->submit.nlisten, 2);
	if (c->submit.nlisten == 2) {
		CHECK_STR(c->submit.listen[0].text, "127.0.0.1:587");
		CHECK_INT(c->submit.listen[0].addr.ss_family, AF_INET);
		CHECK_STR(c->submit.listen[1].text, "[::1]:587");
		CHECK_INT(c->submit.listen[1].addr.ss_family, AF_INET6);
		CHECK_INT(c->submit.listen[1].addrlen, sizeof(struct sockaddr_in6));
	}
	CHECK_INT(c->submit.nlisten_tls, 1);
	if (c->submit.nlisten_tls == 1) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&c->submit.listen_tls[0].addr;

		CHECK_STR(c->submit.listen_tls[0].text, "127.0.0.1:465");
		CHECK_INT(ntohs(sin->sin_port), 465);
	}
	snprintf(want, sizeof(want), "%s/cert.pem", tdir);
	CHECK_STR(c->submit.tls_cert, want);
	snprintf(want, sizeof(want), "%s/key.pem", tdir);
	CHECK_STR(c->submit.tls_key, want);
	CHECK_STR(c->submit.tls_ciphers, "ECDHE+AESGCM");
	CHECK_STR(c->submit.tls_min_version, "TLSv1.3");
	snprintf(want, sizeof(want), "%s/sasldb2", tdir);
	CHECK_STR(c->submit.sasl_db, want);
	CHECK_STR(c->submit.sasl_realm, "example.org");
	CHECK_STR(c->submit.sasl_mechanisms, "PLAIN CRAM-MD5");
	snprintf(want, sizeof(want), "%s/senders", tdir);
	CHECK_STR(c->submit.senders, want);
	CHECK(c->submit.check_header_from);
	CHECK_INT(c->submit.max_message_size, 10 * 1024 * 1024);
	CHECK_INT(c->submit.max_recipients, 50);
	CHECK_INT(c->submit.max_connections, 200);
	CHECK_INT(c->submit.max_connections_per_ip, 5);
	CHECK_INT(c->submit.command_timeout, 2 * MIN_MS);     /* by its old name */
	CHECK_INT(c->submit.tls_timeout, 20000);
	CHECK_INT(c->submit.auth_exchange_timeout, 40000);
	CHECK_INT(c->submit.data_timeout, 90 * MIN_MS);
	CHECK_INT(c->submit.min_data_rate, 0);
	CHECK_INT(c->submit.unauthenticated_share, 100);
	CHECK_INT(c->submit.max_command_errors, 7);
	CHECK_INT(c->submit.workers, 3);
	CHECK_INT(c->submit.auth_fail_delay_after, 0);
	CHECK_INT(c->submit.auth_fail_limit, 4);
	CHECK_INT(c->submit.auth_fail_window, HOUR_MS);
	CHECK_INT(c->submit.login_max_messages, 0);
	CHECK_INT(c->submit.login_max_recipients, 300);
	CHECK_INT(c->submit.login_rate_window, DAY_MS);

	CHECK_INT(c->router.ndns_servers, 3);
	if (c->router.ndns_servers == 3) {
		CHECK_STR(c->router.dns_servers[0].host, "192.0.2.53");
		CHECK_INT(c->router.dns_servers[0].port, 53);
		CHECK_STR(c->router.dns_servers[1].host, "2001:db8::53");
		CHECK_INT(c->router.dns_servers[1].port, 5353);
		CHECK_STR(c->router.dns_servers[2].host, "2001:db8::54");
		CHECK_INT(c->router.dns_servers[2].port, 53);
	}
	CHECK_INT(c->router.smtp_port, 2525);
	CHECK_INT(c->router.nretry_intervals, 2);
	if (c->router.nretry_intervals == 2) {
		CHECK_INT(c->router.retry_intervals[0], MIN_MS);
		CHECK_INT(c->router.retry_intervals[1], 30 * MIN_MS);
	}
	CHECK_INT(c->router.max_queue_age, 3 * DAY_MS);
	CHECK_INT(c->router.delay_warning, 0);
	CHECK_INT(c->router.host_backoff_min, 30000);
	CHECK_INT(c->router.host_backoff_max, 2 * HOUR_MS);
	CHECK_INT(c->router.max_connections, 20);
	CHECK_INT(c->router.max_connections_per_host, 2);
	CHECK_INT(c->router.max_rcpts_per_txn, 1000);

	CHECK_INT(c->router.nroutes, 3);
	if (c->router.nroutes == 3) {
		r = &c->router.routes[0];
		CHECK_STR(r->domain, "example.net");
		CHECK_INT(r->nhosts, 0);
		CHECK_INT(r->mx_policy, CONF_MX_PRIMARY_ONLY);
		CHECK(!r->has_tls);
		CHECK(r->auth_user == NULL && r->auth_password == NULL);

		r = &c->router.routes[1];
		CHECK_STR(r->domain, "partner.example");
		CHECK_INT(r->nhosts, 4);
		if (r->nhosts == 4) {
			CHECK_STR(r->hosts[0].host, "mx1.partner.example");
			CHECK_INT(r->hosts[0].port, 2525);
			CHECK_STR(r->hosts[1].host, "192.0.2.25");
			CHECK_INT(r->hosts[1].port, 26);
			CHECK_STR(r->hosts[2].host, "2001:db8::25");
			CHECK_INT(r->hosts[2].port, 27);
			CHECK_STR(r->hosts[3].host, "2001:db8::26");
			CHECK_INT(r->hosts[3].port, 2525);
		}
		CHECK_INT(r->mx_policy, CONF_MX_ANY);
		CHECK(r->has_tls);
		CHECK_INT(r->tls, CONF_TLS_VERIFY);

		r = &c->router.routes[2];
		CHECK_STR(r->domain, "*");
		CHECK_INT(r->nhosts, 1);
		if (r->nhosts == 1) {
			CHECK_STR(r->hosts[0].host, "smarthost.example.org");
			CHECK_INT(r->hosts[0].port, 587);
		}
		CHECK_STR(r->auth_user, "relay");
		CHECK_STR(r->auth_password, "s3cret");
		CHECK(r->has_tls);
		CHECK_INT(r->tls, CONF_TLS_REQUIRE);

		/* conf_route_find: exact (any case), else "*". */
		CHECK(conf_route_find(c, "example.net") == &c->router.routes[0]);
		CHECK(conf_route_find(c, "EXAMPLE.net") == &c->router.routes[0]);
		CHECK(conf_route_find(c, "example.net.") == &c->router.routes[0]);
		CHECK(conf_route_find(c, "partner.example") == &c->router.routes[1]);
		CHECK(conf_route_find(c, "sub.partner.example") == &c->router.routes[2]);
		CHECK(conf_route_find(c, "example.com") == &c->router.routes[2]);
		CHECK(conf_route_find(c, "") == &c->router.routes[2]);
	}

	CHECK_INT(c->deliver.tls, CONF_TLS_NONE);
	CHECK_INT(c->deliver.connect_timeout, 10000);
	CHECK_INT(c->deliver.greeting_timeout, MIN_MS);
	CHECK_INT(c->deliver.command_timeout, 2 * MIN_MS);
	CHECK_INT(c->deliver.data_init_timeout, 3 * MIN_MS);
	CHECK_INT(c->deliver.data_block_timeout, 4 * MIN_MS);
	CHECK_INT(c->deliver.data_done_timeout, 5 * MIN_MS);
	CHECK_INT(c->deliver.idle_timeout, 0);
	snprintf(want, sizeof(want), "%s/ca.pem", tdir);
	CHECK_STR(c->deliver.ca_file, want);

	/* References: the snapshot lives until the last one goes. */
	CHECK(conf_ref(c) == c);
	CHECK_INT(c->refs, 2);
	conf_unref(c);
	CHECK_INT(c->refs, 1);
	conf_unref(c);
	conf_unref(NULL);
	buf_free(&err);
}

/* submit.sasl_options: kept in order as strings; auth_timeout; the plaintext rule. */
static void
test_sasl_options(void)
{
	struct buf err = BUF_INIT;
	struct conf *c = NULL;
	const char *path = write_conf(
	    "submit = {\n"
	    "  auth_timeout = \"5s\";\n"
	    "  sasl_options = { pwcheck_method = \"saslauthd\"; saslauthd_path = \"/run/mux\";\n"
	    "    sql_port = 5432; };\n"
	    "};\n");

	CHECK_INT(conf_load(path, &c, &err), 0);
	CHECK_STR(buf_cstr(&err), "");
	if (c == NULL)
		return;
	CHECK_INT(c->submit.nsasl_options, 3);
	CHECK_STR(c->submit.sasl_options[0], "pwcheck_method");
	CHECK_STR(conf_sasl_option(c, "pwcheck_method"), "saslauthd");
	CHECK_STR(conf_sasl_option(c, "saslauthd_path"), "/run/mux");
	CHECK_STR(conf_sasl_option(c, "sql_port"), "5432");
	CHECK(conf_sasl_option(c, "sasldb_path") == NULL);
	CHECK_INT(c->submit.auth_timeout, 5000);
	conf_unref(c);
	c = conf_new_defaults();
	CHECK_INT(c->submit.auth_timeout, 30000);
	CHECK_INT(c->submit.nsasl_options, 0);
	CHECK(conf_sasl_option(c, "pwcheck_method") == NULL);
	conf_unref(c);
	/* auxprop may serve any mechanism */
	path = write_conf("submit = { sasl_mechanisms = \"PLAIN SCRAM-SHA-256\";\n"
	    "  sasl_options = { pwcheck_method = \"auxprop\"; auxprop_plugin = \"sql\"; }; };\n");
	CHECK_INT(conf_load(path, &c, &err), 0);
	CHECK_STR(buf_cstr(&err), "");
	conf_unref(c);
	buf_free(&err);
}

static void
test_route_find_none(void)
{
	struct buf err = BUF_INIT;
	struct conf *c = NULL;
	const char *path = write_conf(
	    "router = { routes = ( { domain = \"a.example\"; } ); };\n");

	CHECK_INT(conf_load(path, &c, &err), 0);
	CHECK_STR(buf_cstr(&err), "");
	if (c == NULL)
		return;
	CHECK(conf_route_find(c, "a.example") == &c->router.routes[0]);
	CHECK(conf_route_find(c, "b.example") == NULL);
	CHECK(conf_route_find(c, "a.example.org") == NULL);
	conf_unref(c);
	buf_free(&err);
}

/* ---- errors: each file has exactly the errors listed, "FILE:LINE: msg" ---- */

#define LISTEN_OK "  listen = [ \"127.0.0.1:587\" ];\n"
#define CERTS_OK  "  tls_cert = \"@D@/cert.pem\";\n  tls_key = \"@D@/key.pem\";\n"

static const struct {
	const char *name;
	const char *text;
	const char *want;	/* "LINE: message\n" ..., each prefixed with the file */
} error_tests[] = {
	{ "cluster without redis and node",
	  "cluster = {\n"
	  "};\n",
	  "1: cluster.redis: required in cluster\n"
	  "1: cluster.node: required in cluster\n" },
	{ "cluster bad redis and node",
	  "cluster = {\n"
	  "  redis = \"redis.example.org:6379\";\n"
	  "  node = \"node a\";\n"
	  "};\n",
	  "2: cluster.redis: bad address 'redis.example.org:6379' (a numeric address and port: "
	  "127.0.0.1:6379 or [::1]:6379)\n"
	  "3: cluster.node: bad name 'node a' (at most 64 letters, digits, '.', '_' or '-')\n" },
	{ "cluster redis without port, relative password file",
	  "cluster = {\n"
	  "  redis = \"127.0.0.1\";\n"
	  "  password_file = \"redis.pass\";\n"
	  "  node = \"a\";\n"
	  "};\n",
	  "3: cluster.password_file: must be an absolute path, not 'redis.pass'\n"
	  "2: cluster.redis: bad address '127.0.0.1' (a numeric address and port: "
	  "127.0.0.1:6379 or [::1]:6379)\n" },
	{ "senders_ldap without uri and base",
	  "submit = {\n"
	  "  senders_ldap = { filter = \"(uid=%u)\"; };\n"
	  "};\n",
	  "2: submit.senders_ldap.uri: required in submit.senders_ldap\n"
	  "2: submit.senders_ldap.base: required in submit.senders_ldap\n" },
	{ "senders_ldap bad filter, attributes and password",
	  "submit = {\n"
	  "  senders_ldap = {\n"
	  "    uri = \"ldap://127.0.0.1/\";\n"
	  "    base = \"dc=example,dc=org\";\n"
	  "    filter = \"(uid=%x)\";\n"
	  "    attributes = [ ];\n"
	  "    bind_password_file = \"@D@/senders\";\n"
	  "    cache_ttl = \"soon\";\n"
	  "  };\n"
	  "};\n",
	  "6: submit.senders_ldap.attributes: must not be empty\n"
	  "8: submit.senders_ldap.cache_ttl: bad duration 'soon' (use 30s, 5m, 4h, 5d)\n"
	  "5: submit.senders_ldap.filter: unknown '%x' (use %u, %d or %%)\n"
	  "7: submit.senders_ldap.bind_password_file: needs bind_dn\n" },
	{ "TLS cipher list and version OpenSSL does not take",
	  "submit = {\n"
	  "  tls_ciphers = \"NO-SUCH-CIPHER\";\n"
	  "  tls_min_version = \"TLSv1.1\";\n"
	  "};\n",
	  "2: submit.tls_ciphers: bad cipher list 'NO-SUCH-CIPHER' (no cipher suite matches; "
	  "see ciphers(1ssl))\n"
	  "3: submit.tls_min_version: unknown TLS version 'TLSv1.1' (use TLSv1.2 or TLSv1.3)\n" },
	{ "unknown key at top level",
	  "hostname = \"a.example\";\n"
	  "hostnmae = \"b.example\";\n",
	  "2: unknown key 'hostnmae'\n" },
	{ "unknown key in submit",
	  "submit = {\n"
	  "  max_recipients = 5;\n"
	  "  foo = 1;\n"
	  "};\n",
	  "3: unknown key 'submit.foo'\n" },
	{ "unknown key in router and deliver",
	  "router = { smtp_port = 25; bar = \"x\"; };\n"
	  "deliver = {\n"
	  "  baz = true;\n"
	  "};\n",
	  "1: unknown key 'router.bar'\n"
	  "3: unknown key 'deliver.baz'\n" },
	{ "unknown key in a route",
	  "router = {\n"
	  "  routes = (\n"
	  "    { domain = \"a.example\"; },\n"
	  "    { domain = \"b.example\";\n"
	  "      port = 25; }\n"
	  "  );\n"
	  "};\n",
	  "5: unknown key 'router.routes[1].port'\n" },
	{ "wrong type: string for integer",
	  "submit = {\n"
	  "  max_recipients = \"5\";\n"
	  "};\n",
	  "2: submit.max_recipients: expected an integer\n" },
	{ "wrong type: float for integer",
	  "router = { max_connections = 1.5; };\n",
	  "1: router.max_connections: expected an integer\n" },
	{ "wrong type: integer for string",
	  "\n\nqueue_dir = 5;\n",
	  "3: queue_dir: expected a string\n" },
	{ "wrong type: string for bool",
	  "submit = { check_header_from = \"yes\"; };\n",
	  "1: submit.check_header_from: expected true or false\n" },
	{ "wrong type: scalar for group",
	  "deliver = \"none\";\n",
	  "1: deliver: expected a group { ... }\n" },
	{ "wrong type: string for list",
	  "submit = {\n" CERTS_OK "  listen = \"127.0.0.1:587\";\n};\n",
	  "4: submit.listen: expected a list [ ... ]\n" },
	{ "integer out of range",
	  "submit = { max_recipients = -1; };\n"
	  "router = { max_connections_per_host = 0; };\n",
	  "1: submit.max_recipients: must be between 1 and 4294967295, not -1\n"
	  "2: router.max_connections_per_host: must be between 1 and 4294967295, not 0\n" },
	{ "bad port",
	  "router = { smtp_port = 70000; };\n",
	  "1: router.smtp_port: must be a port between 1 and 65535, not 70000\n" },
	{ "bad duration",
	  "router = {\n"
	  "\n"
	  "  max_queue_age = \"5x\";\n"
	  "};\n",
	  "3: router.max_queue_age: bad duration '5x' (use 30s, 5m, 4h, 5d)\n" },
	{ "duration as a plain integer",
	  "submit = { idle_timeout = 30; };\n",
	  "1: submit.idle_timeout: bad duration 30: write a string with a unit, "
	  "e.g. \"30s\" (use 30s, 5m, 4h, 5d)\n" },
	{ "command_timeout and its old name together",
	  "submit = {\n"
	  "  command_timeout = \"1m\";\n"
	  "  idle_timeout = \"2m\";\n"
	  "};\n",
	  "3: submit.idle_timeout: the old name of submit.command_timeout; "
	  "set only command_timeout\n" },
	{ "max_message_size beyond what the queue holds",
	  "submit = { max_message_size = \"4001M\"; };\n",
	  "1: submit.max_message_size: at most 4000M (the queue holds a message of up to 4 GiB)\n" },
	{ "max_recipients beyond what a queue file's envelope holds",
	  "submit = { max_recipients = 5001; };\n",
	  "1: submit.max_recipients: at most 5000 (a queue file's envelope holds that many at "
	  "their longest)\n" },
	{ "workers: at most 64 threads",
	  "submit = { workers = 65; };\n",
	  "1: submit.workers: 0 (one per CPU) or 1 to 64, not 65\n" },
	{ "unauthenticated_share is a percentage",
	  "submit = { unauthenticated_share = 101; };\n",
	  "1: submit.unauthenticated_share: a percentage of submit.max_connections, 1 to 100\n" },
	{ "zero duration where it must be positive",
	  "deliver = { connect_timeout = \"0\"; };\n",
	  "1: deliver.connect_timeout: must be greater than 0\n" },
	{ "bad size",
	  "submit = {\n"
	  "  max_message_size = \"10Q\";\n"
	  "};\n",
	  "2: submit.max_message_size: bad size '10Q' (use 512K, 10M, 1G or a byte count)\n" },
	{ "negative size",
	  "submit = { max_message_size = -5; };\n",
	  "1: submit.max_message_size: bad size -5: must not be negative\n" },
	{ "missing cert file",
	  "submit = {\n"
	  LISTEN_OK
	  "  tls_cert = \"/nonexistent/relayd/cert.pem\";\n"
	  "  tls_key = \"@D@/key.pem\";\n"
	  "};\n",
	  "3: submit.tls_cert: cannot read '/nonexistent/relayd/cert.pem': No such file or directory\n" },
	{ "unreadable files elsewhere",
	  "submit = { senders = \"/nonexistent/senders\"; sasl_db = \"/tmp\"; };\n"
	  "deliver = {\n  ca_file = \"/nonexistent/ca.pem\";\n};\n",
	  "1: submit.senders: cannot read '/nonexistent/senders': No such file or directory\n"
	  "1: submit.sasl_db: cannot read '/tmp': Is a directory\n"
	  "3: deliver.ca_file: cannot read '/nonexistent/ca.pem': No such file or directory\n" },
	{ "bad listen address",
	  "submit = {\n" CERTS_OK
	  "  listen = [ \"127.0.0.1:587\",\n"
	  "             \"localhost:587\" ];\n"
	  "  listen_tls = [ \"[::1]:0\" ];\n"
	  "};\n",
	  "5: submit.listen[1]: bad listen address 'localhost:587' (use 127.0.0.1:587 or [::1]:587)\n"
	  "6: submit.listen_tls[0]: bad listen address '[::1]:0' (use 127.0.0.1:587 or [::1]:587)\n" },
	{ "listener without cert and key",
	  "hostname = \"a.example\";\n"
	  "submit = {\n"
	  "  listen_tls = [ \"127.0.0.1:465\" ];\n"
	  "};\n",
	  "2: submit.tls_cert: required when submit.listen or submit.listen_tls is set\n"
	  "2: submit.tls_key: required when submit.listen or submit.listen_tls is set\n" },
	{ "same address listed twice",
	  "submit = {\n" CERTS_OK
	  "  listen = [ \"127.0.0.1:587\" ];\n"
	  "  listen_tls = [ \"127.0.0.1:465\", \"127.0.0.1:587\" ];\n"
	  "};\n",
	  "5: submit.listen_tls: '127.0.0.1:587' is also listed in submit.listen\n" },
	{ "host_backoff with 3 elements",
	  "router = {\n"
	  "  host_backoff = [ \"1m\", \"10m\", \"1h\" ];\n"
	  "};\n",
	  "2: router.host_backoff: expected two durations [min, max], got 3\n" },
	{ "host_backoff min > max",
	  "router = { host_backoff = [ \"2h\", \"1h30m\" ]; };\n",
	  "1: router.host_backoff: min 2h is greater than max 1h30m\n" },
	{ "host_backoff bad element",
	  "router = { host_backoff = ( \"1m\", 60 ); };\n",
	  "1: router.host_backoff[1]: bad duration 60: write a string with a unit, "
	  "e.g. \"60s\" (use 30s, 5m, 4h, 5d)\n" },
	{ "retry_intervals empty",
	  "router = { retry_intervals = [ ]; };\n",
	  "1: router.retry_intervals: must not be empty\n" },
	{ "retry_intervals zero and bad",
	  "router = {\n"
	  "  retry_intervals = [ \"5m\",\n"
	  "    \"0\", \"1y\" ];\n"
	  "};\n",
	  "3: router.retry_intervals[1]: must be greater than 0\n"
	  "3: router.retry_intervals[2]: bad duration '1y' (use 30s, 5m, 4h, 5d)\n" },
	{ "deliver.tls = maybe",
	  "deliver = {\n"
	  "  tls = \"maybe\";\n"
	  "};\n",
	  "2: deliver.tls: bad value 'maybe' (use none, opportunistic, require, verify)\n" },
	{ "bad log_level and mx_policy",
	  "log_level = \"error\";\n"
	  "router = { routes = ( { domain = \"a.example\"; mx_policy = \"backup\"; } ); };\n",
	  "1: log_level: bad value 'error' (use debug, info, notice, warning)\n"
	  "2: router.routes[0].mx_policy: bad value 'backup' (use any, primary-only)\n" },
	{ "bad sasl_mechanisms",
	  "submit = { sasl_mechanisms = \"PLAIN, LOGIN\"; };\n",
	  "1: submit.sasl_mechanisms: bad mechanism list 'PLAIN, LOGIN' (use e.g. \"PLAIN LOGIN\")\n" },
	{ "sasl_options with sasl_db, mech_list, a bad value",
	  "submit = {\n"
	  "  sasl_db = \"@D@/sasldb2\";\n"
	  "  sasl_options = {\n"
	  "    pwcheck_method = \"auxprop\";\n"
	  "    mech_list = \"PLAIN\";\n"
	  "    sql_port = true;\n"
	  "  };\n"
	  "};\n",
	  "6: submit.sasl_options.sql_port: expected a string\n"
	  "3: submit.sasl_options: not together with submit.sasl_db (sasl_db means "
	  "sasl_options = { pwcheck_method = \"auxprop\"; auxprop_plugin = \"sasldb\"; "
	  "sasldb_path = ... })\n"
	  "5: submit.sasl_options.mech_list: set the mechanisms with submit.sasl_mechanisms\n" },
	{ "saslauthd cannot check CRAM-MD5 or SCRAM",
	  "submit = {\n"
	  "  sasl_mechanisms = \"PLAIN CRAM-MD5 LOGIN SCRAM-SHA-256\";\n"
	  "  sasl_options = { pwcheck_method = \"saslauthd\"; };\n"
	  "};\n",
	  "2: submit.sasl_mechanisms: CRAM-MD5 cannot work with pwcheck_method \"saslauthd\", "
	  "which checks plaintext passwords only (use PLAIN LOGIN, or pwcheck_method = \"auxprop\")\n"
	  "2: submit.sasl_mechanisms: SCRAM-SHA-256 cannot work with pwcheck_method \"saslauthd\", "
	  "which checks plaintext passwords only (use PLAIN LOGIN, or pwcheck_method = \"auxprop\")\n" },
	{ "auth_timeout zero, sasl_options not a group",
	  "submit = { auth_timeout = 0;\n sasl_options = \"saslauthd\"; };\n",
	  "1: submit.auth_timeout: must be greater than 0\n"
	  "2: submit.sasl_options: expected a group { option = \"value\"; ... }\n" },
	{ "relative queue_dir, empty hostname",
	  "queue_dir = \"spool\";\n"
	  "hostname = \"\";\n",
	  "1: queue_dir: must be an absolute path, not 'spool'\n"
	  "2: hostname: must not be empty\n" },
	{ "empty user",
	  "user = \"\";\n",
	  "1: user: must not be empty\n" },
	{ "user not a string",
	  "\nuser = 0;\n",
	  "2: user: expected a string\n" },
	{ "bad hostname",
	  "hostname = \"mail example\";\n",
	  "1: hostname: bad host name 'mail example'\n" },
	{ "control socket path too long",
	  "queue_dir = \"/var/spool/relayd/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\";\n",
	  "1: control_socket: '/var/spool/relayd/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/control.sock' is longer than 107 bytes\n" },
	{ "control_group: unknown",
	  "control_group = \"no-such-group-relayd\";\n",
	  "1: control_group: no such group 'no-such-group-relayd'\n" },
	{ "control_group empty",
	  "control_group = \"\";\n",
	  "1: control_group: must not be empty\n" },
	{ "bad dns server",
	  "router = { dns_servers = [ \"ns1.example:53\", \"192.0.2.1:0\" ]; };\n",
	  "1: router.dns_servers[0]: bad DNS server 'ns1.example:53' (use 192.0.2.53, 192.0.2.53:53 or [2001:db8::53]:53)\n"
	  "1: router.dns_servers[1]: bad DNS server '192.0.2.1:0' (use 192.0.2.53, 192.0.2.53:53 or [2001:db8::53]:53)\n" },
	{ "route: missing domain, bad hosts",
	  "router = {\n"
	  "  routes = (\n"
	  "    { hosts = [ \"a.example\" ]; },\n"
	  "    { domain = \"b.example\";\n"
	  "      hosts = [ \"b.example:\", \"2001:db8::1\", \"bad host\", \"[2001:db8::1\" ]; }\n"
	  "  );\n"
	  "};\n",
	  "3: router.routes[0]: domain is required\n"
	  "5: router.routes[1].hosts[0]: bad host 'b.example:' (use host, host:port or [2001:db8::1]:port)\n"
	  "5: router.routes[1].hosts[1]: bad host '2001:db8::1' (use host, host:port or [2001:db8::1]:port)\n"
	  "5: router.routes[1].hosts[2]: bad host 'bad host' (use host, host:port or [2001:db8::1]:port)\n"
	  "5: router.routes[1].hosts[3]: bad host '[2001:db8::1' (use host, host:port or [2001:db8::1]:port)\n" },
	{ "route: empty domain, bad domain, route not a group",
	  "router = {\n"
	  "  routes = (\n"
	  "    { domain = \"\"; },\n"
	  "    { domain = \"*.example\"; },\n"
	  "    \"c.example\" );\n"	/* libconfig gives a list's scalar the line of the token after it */
	  "};\n",
	  "3: router.routes[0].domain: must not be empty\n"
	  "4: router.routes[1].domain: bad domain '*.example' (use \"example.org\" or \"*\")\n"
	  "5: router.routes[2]: expected a group { domain = \"...\"; ... }\n" },
	{ "route: auth_user without auth_password",
	  "router = {\n"
	  "  routes = (\n"
	  "    { domain = \"*\"; hosts = [ \"smarthost.example\" ];\n"
	  "      auth_user = \"relay\"; },\n"
	  "    { domain = \"x.example\"; auth_password = \"pw\"; }\n"
	  "  );\n"
	  "};\n",
	  "3: router.routes[0]: auth_user requires auth_password\n"
	  "5: router.routes[1]: auth_password requires auth_user\n" },
	{ "route: duplicate domains",
	  "router = {\n"
	  "  routes = (\n"
	  "    { domain = \"Example.org\"; },\n"
	  "    { domain = \"*\"; },\n"
	  "    { domain = \"example.ORG.\"; }\n"
	  "  );\n"
	  "};\n",
	  "5: router.routes[2].domain: duplicate route for 'example.org'\n" },
	{ "routes as an array of strings",
	  "router = { routes = [ \"a.example\" ]; };\n",
	  "1: router.routes: expected a list of groups ( { domain = \"...\"; ... }, ... )\n" },
	{ "syntax error",
	  "hostname = \"a.example\";\n"
	  "submit = {\n"
	  "  max_recipients = ;\n"
	  "};\n",
	  "3: syntax error: syntax error\n" },
	{ "duplicate key",
	  "log_level = \"info\";\n"
	  "log_level = \"debug\";\n",
	  "2: syntax error: duplicate setting name\n" },
	{ "many errors, all collected",
	  "bogus = 1;\n"
	  "submit = {\n"
	  "  max_recipients = \"many\";\n"
	  "  idle_timeout = \"5 minutes\";\n"
	  "  max_message_size = \"big\";\n"
	  "};\n"
	  "router = {\n"
	  "  host_backoff = [ \"1m\" ];\n"
	  "  routes = ( { domain = \"a.example\"; nope = 1; } );\n"
	  "};\n"
	  "deliver = { tls = \"maybe\"; };\n",
	  "1: unknown key 'bogus'\n"
	  "3: submit.max_recipients: expected an integer\n"
	  "4: submit.idle_timeout: bad duration '5 minutes' (use 30s, 5m, 4h, 5d)\n"
	  "5: submit.max_message_size: bad size 'big' (use 512K, 10M, 1G or a byte count)\n"
	  "8: router.host_backoff: expected two durations [min, max], got 1\n"
	  "9: unknown key 'router.routes[0].nope'\n"
	  "11: deliver.tls: bad value 'maybe' (use none, opportunistic, require, verify)\n" },
};

/* "LINE: msg\n..." -> "PATH:LINE: msg\n..." */
static char *
prefix_lines(const char *path, const char *want)
{
	struct buf b = BUF_INIT;
	const char *p = want, *nl;

	while (*p != '\0') {
		nl = strchr(p, '\n');
		buf_printf(&b, "%s:", path);
		if (nl == NULL) {
			buf_puts(&b, p);
			break;
		}
		buf_append(&b, p, (size_t)(nl - p + 1));
		p = nl + 1;
	}
	return buf_steal(&b);
}

static void
test_errors(void)
{
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(error_tests); i++) {
		struct buf err = BUF_INIT;
		struct conf *c = (struct conf *)&err;	/* must be reset to NULL */
		const char *path = write_conf(error_tests[i].text);
		char *want = prefix_lines(path, error_tests[i].want);
		int rc = conf_load(path, &c, &err);

		CHECK_MSG(rc == -1, "%s: conf_load returned %d", error_tests[i].name, rc);
		CHECK_MSG(c == NULL, "%s: *out not NULL on failure", error_tests[i].name);
		CHECK_MSG(strcmp(buf_cstr(&err), want) == 0, "%s:\n--- got\n%s--- want\n%s",
		    error_tests[i].name, buf_cstr(&err), want);
		if (rc == 0)
			conf_unref(c);
		free(want);
		buf_free(&err);
	}
}

/* A queue_dir too long for queue_dir/msg/<qid> is refused at its line. */
static void
test_queue_dir_too_long(void)
{
	struct buf text = BUF_INIT, err = BUF_INIT;
	struct conf *c = NULL;
	const char *path;
	char *want;
	size_t i;

	buf_puts(&text, "\nqueue_dir = \"/");
	for (i = 0; i < PATH_MAX; i++)
		buf_putc(&text, i % 64 == 63 ? '/' : 'q');
	buf_puts(&text, "\";\ncontrol_socket = \"/run/relayd.sock\";\n");
	path = write_conf(buf_cstr(&text));
	want = prefix_lines(path, "2: queue_dir: longer than 3968 bytes\n");
	CHECK_INT(conf_load(path, &c, &err), -1);
	CHECK_STR(buf_cstr(&err), want);
	CHECK(c == NULL);
	free(want);
	buf_free(&err);
	buf_free(&text);
}

static void
test_missing_file(void)
{
	struct buf err = BUF_INIT;
	struct conf *c = NULL;

	CHECK_INT(conf_load("/nonexistent/relayd.conf", &c, &err), -1);
	CHECK(c == NULL);
	CHECK_STR(buf_cstr(&err), "/nonexistent/relayd.conf:0: cannot read "
	    "'/nonexistent/relayd.conf': No such file or directory\n");
	/* err may be NULL: the caller only wants to know. */
	CHECK_INT(conf_load("/nonexistent/relayd.conf", &c, NULL), -1);
	buf_free(&err);
}

/* submit.senders_ldap: defaults, and every key of a full group. */
static void
test_senders_ldap(void)
{
	struct buf err = BUF_INIT;
	struct conf *c = conf_new_defaults();
	const char *path;

	CHECK(c->submit.senders_ldap.uri == NULL);              /* off by default */
	CHECK_STR(c->submit.senders_ldap.filter, "(uid=%u)");
	CHECK_INT(c->submit.senders_ldap.nattributes, 2);
	CHECK_STR(c->submit.senders_ldap.attributes[0], "mail");
	CHECK_STR(c->submit.senders_ldap.attributes[1], "mailAlternateAddress");
	CHECK_INT(c->submit.senders_ldap.timeout, 10000);
	CHECK_INT(c->submit.senders_ldap.cache_ttl, 5 * MIN_MS);
	CHECK(!c->submit.senders_ldap.starttls);
	conf_unref(c);

	c = NULL;
	path = write_conf(
	    "submit = {\n"
	    "  senders_ldap = {\n"
	    "    uri = \"ldaps://dc1.example.org/ ldaps://dc2.example.org/\";\n"
	    "    base = \"dc=example,dc=org\";\n"
	    "    filter = \"(&(sAMAccountName=%u)(c=%d)(x=100%%))\";\n"
	    "    attributes = [ \"mail\", \"proxyAddresses\", \"otherMailbox\" ];\n"
	    "    bind_dn = \"cn=relayd,dc=example,dc=org\";\n"
	    "    bind_password_file = \"@D@/senders\";\n"
	    "    starttls = true;\n"
	    "    timeout = \"3s\";\n"
	    "    cache_ttl = 0;\n"
	    "  };\n"
	    "};\n");
	CHECK_INT(conf_load(path, &c, &err), 0);
	CHECK_STR(buf_cstr(&err), "");
	if (c != NULL) {
		const struct conf_senders_ldap *l = &c->submit.senders_ldap;

		CHECK_STR(l->uri, "ldaps://dc1.example.org/ ldaps://dc2.example.org/");
		CHECK_STR(l->base, "dc=example,dc=org");
		CHECK_STR(l->filter, "(&(sAMAccountName=%u)(c=%d)(x=100%%))");
		CHECK_INT(l->nattributes, 3);
		if (l->nattributes == 3)
			CHECK_STR(l->attributes[2], "otherMailbox");
		CHECK_STR(l->bind_dn, "cn=relayd,dc=example,dc=org");
		CHECK(l->bind_password_file != NULL && strstr(l->bind_password_file, "/senders") != NULL);
		CHECK(l->starttls);
		CHECK_INT(l->timeout, 3000);
		CHECK_INT(l->cache_ttl, 0);
		conf_unref(c);
	}
	buf_free(&err);
}

/* cluster: off by default; every key of a full group. */
static void
test_cluster(void)
{
	struct buf err = BUF_INIT;
	struct conf *c = conf_new_defaults();
	const char *path;

	CHECK(!c->cluster.enabled);
	CHECK(c->cluster.redis == NULL);
	conf_unref(c);

	c = NULL;
	path = write_conf(
	    "cluster = {\n"
	    "  redis = \"[::1]:6380\";\n"
	    "  password_file = \"@D@/senders\";\n"
	    "  node = \"relay-2.example.org\";\n"
	    "};\n");
	CHECK_INT(conf_load(path, &c, &err), 0);
	CHECK_STR(buf_cstr(&err), "");
	if (c != NULL) {
		CHECK(c->cluster.enabled);
		CHECK_STR(c->cluster.redis, "[::1]:6380");
		CHECK(c->cluster.password_file != NULL &&
		    strstr(c->cluster.password_file, "/senders") != NULL);
		CHECK_STR(c->cluster.node, "relay-2.example.org");
		conf_unref(c);
	}
	buf_free(&err);
}

/* Accepted alternatives: lists as ( ) or [ ], int64 integers, integer 0 durations, byte sizes. */
static void
test_accepted_forms(void)
{
	struct buf err = BUF_INIT;
	struct conf *c = NULL;
	const char *path = write_conf(
	    "submit = {\n"
	    "  max_message_size = 1000000L;\n"
	    "  max_recipients = 7L;\n"
	    "  listen = ( );\n"
	    "};\n"
	    "router = {\n"
	    "  host_backoff = ( 0, \"0\" );\n"
	    "  retry_intervals = [ \"90s\" ];\n"
	    "  delay_warning = \"0\";\n"
	    "  routes = ( );\n"
	    "};\n"
	    "deliver = { idle_timeout = 0; };\n");

	CHECK_INT(conf_load(path, &c, &err), 0);
	CHECK_STR(buf_cstr(&err), "");
	if (c == NULL)
		return;
	CHECK_INT(c->submit.max_message_size, 1000000);
	CHECK_INT(c->submit.max_recipients, 7);
	CHECK_INT(c->submit.nlisten, 0);
	CHECK_INT(c->router.host_backoff_min, 0);
	CHECK_INT(c->router.host_backoff_max, 0);
	CHECK_INT(c->router.nretry_intervals, 1);
	CHECK_INT(c->router.retry_intervals[0], 90000);
	CHECK_INT(c->router.delay_warning, 0);
	CHECK_INT(c->router.nroutes, 0);
	CHECK_INT(c->deliver.idle_timeout, 0);
	conf_unref(c);
	buf_free(&err);
}

/* submit.max_message_size: 4000M, the largest the queue takes, is accepted
 * (4001M is refused: error_tests). */
static void
test_message_size_bound(void)
{
	struct buf err = BUF_INIT;
	struct conf *c = NULL;
	const char *path = write_conf("submit = { max_message_size = \"4000M\"; };\n");

	CHECK_INT(conf_load(path, &c, &err), 0);
	CHECK_STR(buf_cstr(&err), "");
	if (c != NULL)
		CHECK(c->submit.max_message_size == 4000ULL * 1024 * 1024);
	conf_unref(c);
	buf_free(&err);
}

/* contrib/relayd.conf parses; its only complaints are example paths that do not exist here. */
static void
test_contrib_example(void)
{
	static const char suffix[] = "tests/unit/test_conf.c";
	struct buf err = BUF_INIT, path = BUF_INIT;
	struct conf *c = NULL;
	const char *file = __FILE__, *p, *nl;
	size_t flen = strlen(file), nlines = 0;
	int rc;

	if (flen >= sizeof(suffix) - 1 &&
	    strcmp(file + flen - (sizeof(suffix) - 1), suffix) == 0)
		buf_append(&path, file, flen - (sizeof(suffix) - 1));
	buf_puts(&path, "contrib/relayd.conf");
	CHECK_MSG(access(buf_cstr(&path), R_OK) == 0, "cannot find %s", buf_cstr(&path));

	rc = conf_load(buf_cstr(&path), &c, &err);
	if (rc == 0)
		conf_unref(c);
	for (p = buf_cstr(&err); *p != '\0'; p = nl + 1) {
		if ((nl = strchr(p, '\n')) == NULL)
			nl = p + strlen(p) - 1;
		nlines++;
		CHECK_MSG(strncmp(p, buf_cstr(&path), path.len) == 0 &&
		    strstr(p, ": cannot read '/etc/relayd/") != NULL &&
		    strstr(p, ": cannot read '/etc/relayd/") < nl,
		    "unexpected complaint about the example: %.*s", (int)(nl - p), p);
	}
	CHECK(strstr(buf_cstr(&err), "syntax error") == NULL);
	/* Unless this machine has /etc/relayd, the example's files are missing. */
	if (access("/etc/relayd", F_OK) != 0)
		CHECK_INT(nlines, 4);	/* tls_cert, tls_key, sasl_db, senders */
	buf_free(&err);
	buf_free(&path);
}

int
main(void)
{
	setup_dir();
	test_parse_duration();
	test_parse_size();
	test_parse_listen();
	test_tls_name();
	test_defaults();
	test_derived_defaults();
	test_full();
	test_route_find_none();
	test_sasl_options();
	test_errors();
	test_queue_dir_too_long();
	test_missing_file();
	test_accepted_forms();
	test_message_size_bound();
	test_senders_ldap();
	test_cluster();
	test_contrib_example();
	cleanup_dir();
	return check_done();
}
