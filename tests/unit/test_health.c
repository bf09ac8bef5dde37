/*
 * test_health.c - host health (router/router_health.c): the backoff table,
 * which failures mark a host down, the up/down/probe verdicts driven by an
 * injected `now`, a host another node found down (cluster/), and the
 * table's lookup, reset and expiry.
 */
#include "router/router_health.h"
#include "common/util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>

#include "check.h"

#define S 1000ULL
#define M (60 * S)
#define H (60 * M)

static void
test_backoff(void)
{
	static const struct {
		unsigned failures;
		uint64_t min, max, want;
	} rows[] = {
		{ 1, 1 * M, 1 * H, 1 * M },
		{ 2, 1 * M, 1 * H, 2 * M },
		{ 3, 1 * M, 1 * H, 4 * M },
		{ 6, 1 * M, 1 * H, 32 * M },
		{ 7, 1 * M, 1 * H, 1 * H },          /* 64m capped */
		{ 50, 1 * M, 1 * H, 1 * H },         /* no overflow */
		{ 1000, 1 * M, 1 * H, 1 * H },
		{ 0, 1 * M, 1 * H, 1 * M },          /* treated as the first */
		{ 1, 1 * S, 2 * S, 1 * S },
		{ 2, 1 * S, 2 * S, 2 * S },
		{ 3, 1 * S, 2 * S, 2 * S },
		{ 2, 5 * M, 1 * M, 5 * M },          /* max below min: min wins */
	};
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++)
		CHECK_MSG(health_backoff(rows[i].failures, rows[i].min, rows[i].max) == rows[i].want,
		    "row %zu: got %llu", i,
		    (unsigned long long)health_backoff(rows[i].failures, rows[i].min, rows[i].max));
}

static void
test_marks_down(void)
{
	static const struct {
		enum io_error err;
		int code;
		bool want;
	} rows[] = {
		{ IO_ERR_REFUSED, 0, true },
		{ IO_ERR_UNREACH, 0, true },
		{ IO_ERR_CONNECT_TIMEOUT, 0, true },
		{ IO_ERR_RESET, 0, true },
		{ IO_ERR_NONE, 0, true },            /* greeting timeout / EOF */
		{ IO_ERR_OTHER, 0, true },
		{ IO_ERR_NONE, 421, true },          /* 421 greeting */
		{ IO_ERR_TLS, 0, false },            /* alive, just not acceptable */
		{ IO_ERR_NONE, 554, false },         /* answered */
		{ IO_ERR_NONE, 530, false },
	};
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++)
		CHECK_MSG(health_marks_down(rows[i].err, rows[i].code) == rows[i].want, "row %zu", i);
}

/* A sequence of events on one host, each checked at its own `now`. */
static void
test_state_machine(void)
{
	enum op { FAIL, OK, PROBE_OUT, CHECK };
	static const struct {
		enum op op;
		uint64_t now;
		enum health_verdict want;        /* CHECK only */
		enum health_state state;         /* after the op */
		unsigned failures;
		uint64_t until;
	} rows[] = {
		{ CHECK, 0, HEALTH_TRY, HEALTH_UNKNOWN, 0, 0 },
		{ FAIL, 1000, 0, HEALTH_DOWN, 1, 1000 + 1 * M },
		{ CHECK, 1000 + 1 * M - 1, HEALTH_SKIP, HEALTH_DOWN, 1, 1000 + 1 * M },
		{ CHECK, 1000 + 1 * M, HEALTH_PROBE, HEALTH_DOWN, 1, 1000 + 1 * M },
		{ PROBE_OUT, 1000 + 1 * M, 0, HEALTH_DOWN, 1, 1000 + 1 * M },
		/* while the probe is out, everyone else skips the host */
		{ CHECK, 1000 + 2 * M, HEALTH_SKIP, HEALTH_DOWN, 1, 1000 + 1 * M },
		{ FAIL, 2 * M, 0, HEALTH_DOWN, 2, 2 * M + 2 * M },
		{ FAIL, 10 * M, 0, HEALTH_DOWN, 3, 10 * M + 4 * M },
		{ CHECK, 13 * M, HEALTH_SKIP, HEALTH_DOWN, 3, 14 * M },
		{ CHECK, 14 * M, HEALTH_PROBE, HEALTH_DOWN, 3, 14 * M },
		{ OK, 14 * M + 5, 0, HEALTH_UP, 0, 0 },
		{ CHECK, 14 * M + 6, HEALTH_TRY, HEALTH_UP, 0, 0 },
		/* a new streak starts from the minimum again */
		{ FAIL, 20 * M, 0, HEALTH_DOWN, 1, 21 * M },
	};
	struct health_host h;
	size_t i;

	memset(&h, 0, sizeof(h));
	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		switch (rows[i].op) {
		case FAIL:
			health_host_fail(&h, rows[i].now, 1 * M, 1 * H, "connection refused");
			break;
		case OK:
			health_host_ok(&h, rows[i].now);
			break;
		case PROBE_OUT:
			h.probing = true;
			break;
		case CHECK:
			CHECK_MSG(health_host_check(&h, rows[i].now) == rows[i].want, "row %zu: verdict %d",
			    i, (int)health_host_check(&h, rows[i].now));
			break;
		}
		CHECK_MSG(h.state == rows[i].state, "row %zu: state %d", i, (int)h.state);
		CHECK_MSG(h.failures == rows[i].failures, "row %zu: failures %u", i, h.failures);
		CHECK_MSG(h.down_until_ms == rows[i].until, "row %zu: until %llu", i,
		    (unsigned long long)h.down_until_ms);
	}
	/* since_ms is the first failure of the streak, not the last one */
	memset(&h, 0, sizeof(h));
	health_host_fail(&h, 100, 1 * M, 1 * H, "a");
	health_host_fail(&h, 5000, 1 * M, 1 * H, "b");
	CHECK_INT(h.since_ms, 100);
	CHECK_STR(h.last_error, "b");
	CHECK(health_host_check(NULL, 0) == HEALTH_TRY);
}

/* Another node's news: skipped until its end, never shortened, not over a probe. */
static void
test_shared_down(void)
{
	enum op { SHARED, FAIL, PROBE_OUT, OK, CHECK };
	static const struct {
		enum op op;
		uint64_t now, until;            /* SHARED: its end */
		unsigned failures;              /* SHARED: theirs */
		bool changed;                   /* SHARED: what it returned */
		enum health_verdict want;       /* CHECK */
		enum health_state state;        /* after the op */
		uint64_t down_until;
	} rows[] = {
		{ SHARED, 1000, 1000 + 4 * S, 1, true, 0, HEALTH_DOWN, 1000 + 4 * S },
		{ CHECK, 1000 + 4 * S - 1, 0, 0, false, HEALTH_SKIP, HEALTH_DOWN, 1000 + 4 * S },
		/* an earlier end from someone else does not shorten it */
		{ SHARED, 2000, 3 * S, 2, false, 0, HEALTH_DOWN, 1000 + 4 * S },
		/* a later one extends it */
		{ SHARED, 2000, 9 * S, 2, true, 0, HEALTH_DOWN, 9 * S },
		{ CHECK, 9 * S, 0, 0, false, HEALTH_PROBE, HEALTH_DOWN, 9 * S },
		/* news of the past changes nothing */
		{ SHARED, 10 * S, 10 * S, 3, false, 0, HEALTH_DOWN, 9 * S },
		/* our own probe is out: its result decides, not the news */
		{ PROBE_OUT, 10 * S, 0, 0, false, 0, HEALTH_DOWN, 9 * S },
		{ SHARED, 10 * S, 20 * S, 3, false, 0, HEALTH_DOWN, 9 * S },
		{ OK, 11 * S, 0, 0, false, 0, HEALTH_UP, 0 },
		{ SHARED, 12 * S, 20 * S, 3, true, 0, HEALTH_DOWN, 20 * S },
		{ CHECK, 19 * S, 0, 0, false, HEALTH_SKIP, HEALTH_DOWN, 20 * S },
	};
	struct health_host h;
	size_t i;

	memset(&h, 0, sizeof(h));
	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		switch (rows[i].op) {
		case SHARED:
			CHECK_MSG(health_host_shared_down(&h, rows[i].now, rows[i].until, rows[i].failures,
			    2 * S, "421 down") == rows[i].changed, "row %zu", i);
			break;
		case FAIL:
			health_host_fail(&h, rows[i].now, 1 * M, 1 * H, "refused");
			break;
		case PROBE_OUT:
			h.probing = true;
			break;
		case OK:
			health_host_ok(&h, rows[i].now);
			break;
		case CHECK:
			CHECK_MSG(health_host_check(&h, rows[i].now) == rows[i].want, "row %zu", i);
			break;
		}
		CHECK_MSG(h.state == rows[i].state, "row %zu: state %d", i, (int)h.state);
		CHECK_MSG(h.down_until_ms == rows[i].down_until, "row %zu: until %llu", i,
		    (unsigned long long)h.down_until_ms);
	}
	CHECK_STR(h.last_error, "421 down");
	CHECK_INT(h.failures, 3);
	CHECK_INT(h.since_ms, 12 * S);
}

static void
test_addr_key(void)
{
	struct sockaddr_in s4;
	struct sockaddr_in6 s6;
	char out[HEALTH_ADDR_MAX];

	memset(&s4, 0, sizeof(s4));
	s4.sin_family = AF_INET;
	s4.sin_port = htons(2525);
	inet_pton(AF_INET, "127.0.0.2", &s4.sin_addr);
	health_addr_key((struct sockaddr *)&s4, out, sizeof(out));
	CHECK_STR(out, "127.0.0.2:2525");
	memset(&s6, 0, sizeof(s6));
	s6.sin6_family = AF_INET6;
	s6.sin6_port = htons(25);
	inet_pton(AF_INET6, "2001:db8::1", &s6.sin6_addr);
	health_addr_key((struct sockaddr *)&s6, out, sizeof(out));
	CHECK_STR(out, "[2001:db8::1]:25");
}

static void
count_cb(void *arg, const struct health_host *h)
{
	(void)h;
	(*(int *)arg)++;
}

static void
test_table(void)
{
	struct health *t = health_new();
	struct health_host *h;
	char key[64];
	int i, n = 0;

	/* many entries: the table grows and finds each again */
	for (i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "10.0.%d.%d:25", i / 256, i % 256);
		h = health_get(t, key, "mx.example.net");
		health_host_fail(h, 1000, 1 * M, 1 * H, "refused");
	}
	CHECK_INT(health_count(t), 1000);
	for (i = 0; i < 1000; i += 37) {
		snprintf(key, sizeof(key), "10.0.%d.%d:25", i / 256, i % 256);
		CHECK(health_find(t, key) != NULL);
	}
	CHECK(health_find(t, "10.9.9.9:25") == NULL);
	health_foreach(t, count_cb, &n);
	CHECK_INT(n, 1000);
	health_free(t);

	t = health_new();
	h = health_get(t, "127.0.0.2:2525", "mx1.example.net");
	health_host_fail(h, 0, 1 * M, 1 * H, "refused");
	h = health_get(t, "127.0.0.2:25", "mx1.example.net");
	health_host_fail(h, 0, 1 * M, 1 * H, "refused");
	h = health_get(t, "127.0.0.20:25", "mx2.example.net");
	health_host_fail(h, 0, 1 * M, 1 * H, "refused");
	h = health_get(t, "[::1]:25", "v6.example.net");
	health_host_fail(h, 0, 1 * M, 1 * H, "refused");

	static const struct {
		const char *host;
		int rc;
		const char *now_unknown;      /* an entry that must be reset */
		const char *still_down;       /* an entry that must not be */
	} rows[] = {
		{ "127.0.0.2:2525", 0, "127.0.0.2:2525", "127.0.0.2:25" },
		{ "127.0.0.2", 0, "127.0.0.2:25", "127.0.0.20:25" },   /* every port, not .20 */
		{ "MX2.example.net", 0, "127.0.0.20:25", "[::1]:25" }, /* by name, any case */
		{ "::1", 0, "[::1]:25", NULL },
		{ "192.0.2.1", RELAY_ENOENT, NULL, NULL },
		{ "127.0.0", RELAY_ENOENT, NULL, NULL },
	};
	for (i = 0; i < (int)RELAY_ARRAY_LEN(rows); i++) {
		CHECK_MSG(health_reset(t, rows[i].host) == rows[i].rc, "reset row %d", i);
		if (rows[i].now_unknown != NULL) {
			h = health_find(t, rows[i].now_unknown);
			CHECK_MSG(h != NULL && h->state == HEALTH_UNKNOWN && h->failures == 0,
			    "reset row %d: %s", i, rows[i].now_unknown);
			CHECK(health_host_check(h, 1) == HEALTH_TRY);
		}
		if (rows[i].still_down != NULL) {
			h = health_find(t, rows[i].still_down);
			CHECK_MSG(h != NULL && h->state == HEALTH_DOWN, "reset row %d: %s", i,
			    rows[i].still_down);
		}
	}

	/* expiry drops idle up/unknown entries, never down ones */
	h = health_get(t, "127.0.0.9:25", "x");
	health_host_fail(h, 5000, 1 * M, 1 * H, "refused");
	health_expire(t, 10 * H);
	CHECK(health_find(t, "127.0.0.9:25") != NULL);
	CHECK(health_find(t, "127.0.0.2:25") == NULL);
	CHECK_INT(health_count(t), 1);
	health_free(t);
}

static void
test_names(void)
{
	CHECK_STR(health_state_name(HEALTH_UNKNOWN), "unknown");
	CHECK_STR(health_state_name(HEALTH_UP), "up");
	CHECK_STR(health_state_name(HEALTH_DOWN), "down");
}

/* The TLS policy of a host: set, refused, kept over a connection failure,
 * forgotten when an attempt gets through; a recent refusal keeps an entry. */
static void
test_policy(void)
{
	static const struct {
		const char *policy, *refused;
		bool keep;
		uint64_t now;
		const char *want_refused;
		uint64_t want_ms;
	} rows[] = {
		{ "dane", "4.7.5 dnssec-invalid bogus", false, 10 * S, "4.7.5 dnssec-invalid bogus", 10 * S },
		{ "dane", NULL, true, 20 * S, "4.7.5 dnssec-invalid bogus", 10 * S },  /* connect failed */
		{ "dane", "4.7.5 validation-failure x", false, 30 * S, "4.7.5 validation-failure x", 30 * S },
		{ "dane", NULL, false, 40 * S, "", 30 * S },            /* got through */
		{ "opportunistic", NULL, false, 50 * S, "", 30 * S },
	};
	struct health *t = health_new();
	struct health_host *h = health_get(t, "192.0.2.1:25", "mx.example.net");
	size_t i;

	CHECK_STR(h->policy, "");
	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		health_host_policy(h, rows[i].policy, rows[i].refused, rows[i].keep, rows[i].now);
		CHECK_STR(h->policy, rows[i].policy);
		CHECK_STR(h->refused, rows[i].want_refused);
		CHECK_INT(h->refused_ms, rows[i].want_ms);
	}
	/* never attempted, refused at 2 h: kept by a cutoff at 1 h, dropped at 3 h */
	h = health_get(t, "192.0.2.2:25", "mx2.example.net");
	health_host_policy(h, "dane", "4.7.5 dnssec-invalid bogus", false, 2 * H);
	health_expire(t, 1 * H);
	CHECK(health_find(t, "192.0.2.2:25") != NULL);
	CHECK(health_find(t, "192.0.2.1:25") == NULL);
	health_expire(t, 3 * H);
	CHECK(health_find(t, "192.0.2.2:25") == NULL);
	/* hosts reset forgets a refusal too */
	h = health_get(t, "192.0.2.3:25", "mx3.example.net");
	health_host_policy(h, "dane", "4.7.5 tlsa-invalid x", false, 1);
	CHECK_INT(health_reset(t, "mx3.example.net"), 0);
	CHECK_STR(h->refused, "");
	health_free(t);
}

int
main(void)
{
	test_backoff();
	test_marks_down();
	test_state_machine();
	test_shared_down();
	test_addr_key();
	test_table();
	test_names();
	test_policy();
	return check_done();
}
