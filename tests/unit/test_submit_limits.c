/*
 * test_submit_limits.c - the submission server's limits as pure functions of
 * `now`, driven from tables of timed events: connection counts (total, per
 * IP, a PROXY connection's place before its header), AUTH failures per IP
 * (delay after N, refuse at the limit, window end), AUTH failures per tried
 * login (a block that doubles up to a cap, addresses it succeeded from
 * exempt, unblock), messages and recipients per login per window, what another node counted merged in (cluster/), and
 * expiry.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/util.h"
#include "submit/submit_int.h"

static const struct submit_limits_params params = {
	.max_connections = 4,
	.max_connections_per_ip = 2,
	.auth_fail_delay_after = 2,
	.auth_fail_limit = 5,
	.auth_fail_window = 60000,
	.login_max_messages = 3,
	.login_max_recipients = 5,
	.login_rate_window = 3600000,
};

static void
test_connections(void)
{
	enum { OPEN, CLOSE, RESERVE, UNRESERVE };
	static const struct {
		int op;
		const char *ip;
		int want;               /* verdict for OPEN and RESERVE */
		unsigned count_ip, total;
	} t[] = {
		{ OPEN, "192.0.2.1", SUBMIT_CONN_OK, 1, 1 },
		{ OPEN, "192.0.2.1", SUBMIT_CONN_OK, 2, 2 },
		{ OPEN, "192.0.2.1", SUBMIT_CONN_PER_IP, 2, 2 },
		{ OPEN, "2001:db8::1", SUBMIT_CONN_OK, 1, 3 },
		{ CLOSE, "192.0.2.1", 0, 1, 2 },
		{ OPEN, "192.0.2.1", SUBMIT_CONN_OK, 2, 3 },
		{ OPEN, "192.0.2.9", SUBMIT_CONN_OK, 1, 4 },
		{ OPEN, "192.0.2.10", SUBMIT_CONN_TOTAL, 0, 4 },
		{ CLOSE, "2001:db8::1", 0, 0, 3 },
		{ OPEN, "192.0.2.10", SUBMIT_CONN_OK, 1, 4 },
		/* a PROXY connection before its header: the total only */
		{ CLOSE, "192.0.2.10", 0, 0, 3 },
		{ RESERVE, "192.0.2.10", SUBMIT_CONN_OK, 0, 4 },
		{ RESERVE, "192.0.2.10", SUBMIT_CONN_TOTAL, 0, 4 },
		{ OPEN, "192.0.2.11", SUBMIT_CONN_TOTAL, 0, 4 },
		{ UNRESERVE, "192.0.2.10", 0, 0, 3 },    /* its header: the place becomes a slot */
		{ OPEN, "192.0.2.10", SUBMIT_CONN_OK, 1, 4 },
	};
	struct submit_limits *l = submit_limits_new();
	size_t i;

	submit_limits_set_params(l, &params);
	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		if (t[i].op == OPEN)
			CHECK_MSG((int)submit_limits_conn_open(l, t[i].ip) == t[i].want, "row %zu", i);
		else if (t[i].op == RESERVE)
			CHECK_MSG((int)submit_limits_conn_reserve(l) == t[i].want, "row %zu", i);
		else if (t[i].op == UNRESERVE)
			submit_limits_conn_unreserve(l);
		else
			submit_limits_conn_close(l, t[i].ip);
		CHECK_INT(submit_limits_conn_count(l, t[i].ip), t[i].count_ip);
		CHECK_INT(submit_limits_conn_count(l, NULL), t[i].total);
	}
	submit_limits_free(l);
}

static void
test_auth(void)
{
	enum { FAIL, ASK };
	static const struct {
		int op;
		const char *ip;
		uint64_t now;
		uint64_t delay;         /* FAIL: expected delay */
		bool refused;           /* FAIL: limit reached; ASK: !allowed */
	} t[] = {
		{ ASK, "192.0.2.1", 0, 0, false },
		{ FAIL, "192.0.2.1", 1000, 0, false },
		{ FAIL, "192.0.2.1", 2000, 0, false },
		{ FAIL, "192.0.2.1", 3000, 1000, false },      /* 3rd: delayed */
		{ FAIL, "192.0.2.1", 4000, 2000, false },
		{ ASK, "192.0.2.2", 4000, 0, false },          /* other IPs unaffected */
		{ FAIL, "192.0.2.1", 5000, 3000, true },       /* 5th: the limit */
		{ ASK, "192.0.2.1", 5000, 0, true },
		{ ASK, "192.0.2.1", 60999, 0, true },          /* window from the 1st failure */
		{ ASK, "192.0.2.1", 61000, 0, false },         /* window over */
		{ FAIL, "192.0.2.1", 61000, 0, false },        /* counting starts anew */
		{ FAIL, "192.0.2.3", 0, 0, false },
		{ FAIL, "192.0.2.3", 0, 0, false },
		{ FAIL, "192.0.2.3", 0, 1000, false },
		{ FAIL, "192.0.2.3", 0, 2000, false },
	};
	struct submit_limits *l = submit_limits_new();
	struct submit_limits_params p = params;
	bool refused;
	size_t i;
	uint64_t d;

	submit_limits_set_params(l, &params);
	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		if (t[i].op == ASK) {
			CHECK_MSG(submit_limits_auth_allowed(l, t[i].ip, t[i].now) == !t[i].refused, "row %zu", i);
			continue;
		}
		refused = false;
		d = submit_limits_auth_failed(l, t[i].ip, t[i].now, &refused);
		CHECK_MSG(d == t[i].delay, "row %zu: delay %llu want %llu", i,
		    (unsigned long long)d, (unsigned long long)t[i].delay);
		CHECK_MSG(refused == t[i].refused, "row %zu", i);
	}
	submit_limits_free(l);

	/* the delay is capped */
	l = submit_limits_new();
	p.auth_fail_limit = 100;
	p.auth_fail_delay_after = 0;
	submit_limits_set_params(l, &p);
	for (i = 0; i < 20; i++)
		d = submit_limits_auth_failed(l, "192.0.2.1", 0, &refused);
	CHECK_INT(d, SUBMIT_AUTH_DELAY_MAX_MS);
	CHECK(!refused);
	submit_limits_free(l);
}

static void
count_blocks(void *arg, const struct submit_limits_block *b)
{
	unsigned *n = arg;

	n[b->login ? 1 : 0]++;
	if (b->blocked)
		n[2]++;
}

static void
test_auth_login(void)
{
	enum { FAIL, ASK, OK, CLEAR };
	static const struct submit_limits_params lp = {
		.auth_fail_limit = 100,
		.auth_fail_window = 60000,
		.auth_login_fail_limit = 3,
		.auth_login_block = 1000,
		.auth_login_block_max = 4000,
		.auth_login_known_ttl = 10000,
	};
	static const struct {
		int op;
		const char *login, *ip;
		uint64_t now;
		uint64_t want;          /* FAIL: the block started; ASK: blocked; CLEAR: rc == 0 */
	} t[] = {
		{ OK, "alice", "10.0.0.9", 0, 0 },
		{ FAIL, "alice", NULL, 0, 0 },
		{ FAIL, "alice", NULL, 100, 0 },
		{ ASK, "alice", "10.0.0.1", 100, false },
		{ FAIL, "alice", NULL, 200, 1000 },             /* 3rd from any address: 1 s */
		{ ASK, "alice", "10.0.0.1", 200, true },
		{ ASK, "alice", "10.0.0.2", 200, true },
		{ ASK, "alice", "10.0.0.9", 200, false },       /* where alice logged in */
		{ ASK, "bob", "10.0.0.1", 200, false },         /* per login */
		{ FAIL, "alice", NULL, 300, 0 },                /* in the block: not counted */
		{ ASK, "alice", "10.0.0.1", 1199, true },
		{ ASK, "alice", "10.0.0.1", 1200, false },      /* over */
		{ FAIL, "alice", NULL, 1300, 0 },
		{ FAIL, "alice", NULL, 1400, 0 },
		{ FAIL, "alice", NULL, 1500, 2000 },            /* the next block doubles */
		{ FAIL, "alice", NULL, 3500, 0 },
		{ FAIL, "alice", NULL, 3500, 0 },
		{ FAIL, "alice", NULL, 3600, 4000 },
		{ FAIL, "alice", NULL, 7600, 0 },
		{ FAIL, "alice", NULL, 7600, 0 },
		{ FAIL, "alice", NULL, 7600, 4000 },            /* capped at block_max */
		{ ASK, "alice", "10.0.0.9", 10000, true },      /* the known address expired */
		{ OK, "alice", "10.0.0.9", 10000, 0 },
		{ ASK, "alice", "10.0.0.9", 10000, false },
		{ FAIL, "alice", NULL, 71600, 0 },              /* a window after the last block */
		{ FAIL, "alice", NULL, 71600, 0 },
		{ FAIL, "alice", NULL, 71600, 1000 },           /* the streak starts again */
		{ FAIL, "nosuchuser", NULL, 71600, 0 },         /* names that do not exist alike */
		{ FAIL, "nosuchuser", NULL, 71600, 0 },
		{ FAIL, "nosuchuser", NULL, 71600, 1000 },
		{ ASK, "nosuchuser", "10.0.0.9", 71600, true },
		{ CLEAR, "alice", NULL, 71600, true },
		{ ASK, "alice", "10.0.0.1", 71600, false },
		{ CLEAR, "alice", NULL, 71600, false },         /* nothing left to clear */
		{ CLEAR, "carol", NULL, 71600, false },
		{ FAIL, "alice", NULL, 71700, 0 },              /* counting starts anew */
		{ FAIL, "alice", NULL, 71700, 0 },
		{ FAIL, "alice", NULL, 71700, 1000 },
	};
	struct submit_limits *l = submit_limits_new();
	struct submit_limits_params p = lp;
	unsigned n[3] = { 0, 0, 0 };
	uint64_t got, until;
	bool refused;
	size_t i;

	submit_limits_set_params(l, &lp);
	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		switch (t[i].op) {
		case FAIL:
			got = submit_limits_login_failed(l, t[i].login, t[i].now);
			break;
		case ASK:
			got = submit_limits_login_blocked(l, t[i].login, t[i].ip, t[i].now, &until);
			break;
		case OK:
			submit_limits_login_succeeded(l, t[i].login, t[i].ip, t[i].now);
			got = 0;
			break;
		default:
			got = submit_limits_auth_clear(l, t[i].login, true, t[i].now) == 0;
			break;
		}
		CHECK_MSG(got == t[i].want, "row %zu: got %llu want %llu", i,
		    (unsigned long long)got, (unsigned long long)t[i].want);
	}
	/* the list: alice and nosuchuser blocked, one address counting */
	submit_limits_auth_failed(l, "10.0.0.5", 71700, &refused);
	submit_limits_auth_each(l, 71700, count_blocks, n);
	CHECK_INT(n[0], 1);
	CHECK_INT(n[1], 2);
	CHECK_INT(n[2], 2);
	CHECK_INT(submit_limits_auth_clear(l, "10.0.0.5", false, 71700), 0);
	CHECK_INT(submit_limits_auth_clear(l, "10.0.0.5", false, 71700), RELAY_ENOENT);
	CHECK_INT(submit_limits_auth_clear(l, "10.0.0.6", false, 71700), RELAY_ENOENT);
	/* expiry keeps entries while a block, a streak or a known address lasts */
	submit_limits_expire(l, 72700);
	CHECK(submit_limits_entries(l) >= 2);
	submit_limits_expire(l, 72700 + 60000 + 60000);
	CHECK_INT(submit_limits_entries(l), 0);
	submit_limits_free(l);

	/* 0 turns the per-login limit off */
	l = submit_limits_new();
	p.auth_login_fail_limit = 0;
	submit_limits_set_params(l, &p);
	for (i = 0; i < 10; i++)
		CHECK_INT(submit_limits_login_failed(l, "alice", 0), 0);
	CHECK(!submit_limits_login_blocked(l, "alice", "10.0.0.1", 0, &until));
	submit_limits_free(l);
}

static void
test_rates(void)
{
	enum { CHECKR, ADD };
	static const struct {
		int op;
		const char *login;
		uint64_t now;
		unsigned nrcpt;
		int want;
	} t[] = {
		{ CHECKR, "alice", 0, 0, SUBMIT_RATE_OK },
		{ CHECKR, "alice", 0, 5, SUBMIT_RATE_OK },
		{ CHECKR, "alice", 0, 6, SUBMIT_RATE_RECIPIENTS },  /* 6 in one message */
		{ ADD, "alice", 1000, 2, 0 },
		{ CHECKR, "alice", 1000, 3, SUBMIT_RATE_OK },
		{ CHECKR, "alice", 1000, 4, SUBMIT_RATE_RECIPIENTS },
		{ ADD, "alice", 2000, 1, 0 },
		{ ADD, "alice", 3000, 1, 0 },
		{ CHECKR, "alice", 3000, 0, SUBMIT_RATE_MESSAGES }, /* 3 messages */
		{ CHECKR, "bob", 3000, 0, SUBMIT_RATE_OK },         /* per login */
		{ CHECKR, "alice", 3600999, 0, SUBMIT_RATE_MESSAGES },
		{ CHECKR, "alice", 3601000, 0, SUBMIT_RATE_OK },    /* window over */
		{ CHECKR, "alice", 3601000, 5, SUBMIT_RATE_OK },
	};
	struct submit_limits *l = submit_limits_new();
	struct submit_limits_params p = params;
	size_t i;

	submit_limits_set_params(l, &params);
	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		if (t[i].op == ADD)
			submit_limits_login_add(l, t[i].login, t[i].now, t[i].nrcpt);
		else
			CHECK_MSG((int)submit_limits_login_check(l, t[i].login, t[i].now, t[i].nrcpt) ==
			    t[i].want, "row %zu", i);
	}
	submit_limits_free(l);

	/* 0 = unlimited */
	l = submit_limits_new();
	p.login_max_messages = 0;
	p.login_max_recipients = 0;
	submit_limits_set_params(l, &p);
	for (i = 0; i < 100; i++)
		submit_limits_login_add(l, "alice", 0, 100);
	CHECK_INT(submit_limits_login_check(l, "alice", 0, 0), SUBMIT_RATE_OK);
	CHECK_INT(submit_limits_login_check(l, "alice", 0, 1000), SUBMIT_RATE_OK);
	submit_limits_free(l);
}

/* What the cluster counted, merged in: the same functions then decide. */
static void
test_merge(void)
{
	enum { MERGE_LOGIN, MERGE_AUTH, ADD, CHECKR, ALLOWED, FAIL };
	static const struct {
		int op;
		uint64_t now;
		unsigned a, b;          /* MERGE_LOGIN: msgs, rcpts; MERGE_AUTH: fails; ADD, CHECKR: nrcpt */
		uint64_t ttl;
		int want;               /* CHECKR: verdict; ALLOWED: bool; FAIL: refused */
	} t[] = {
		/* alice: 2 messages, 4 recipients elsewhere; 1h window with 10 min left */
		{ MERGE_LOGIN, 5000000, 2, 4, 600000, 0 },
		{ CHECKR, 5000000, 0, 0, 0, SUBMIT_RATE_OK },
		{ CHECKR, 5000000, 1, 0, 0, SUBMIT_RATE_OK },
		{ CHECKR, 5000000, 2, 0, 0, SUBMIT_RATE_RECIPIENTS },   /* 4 + 2 > 5 */
		{ ADD, 5000000, 1, 0, 0, 0 },
		{ CHECKR, 5000000, 0, 0, 0, SUBMIT_RATE_MESSAGES },     /* 3 */
		/* a lower shared count does not lower ours */
		{ MERGE_LOGIN, 5000001, 1, 1, 600000, 0 },
		{ CHECKR, 5000001, 0, 0, 0, SUBMIT_RATE_MESSAGES },
		/* the window ends with the shared one: 10 min after the merge */
		{ CHECKR, 5599999, 0, 0, 0, SUBMIT_RATE_MESSAGES },
		{ CHECKR, 5600000, 0, 0, 0, SUBMIT_RATE_OK },
		/* nothing counted, or a window over: nothing merged */
		{ MERGE_LOGIN, 5600000, 0, 0, 0, 0 },
		{ MERGE_LOGIN, 5600000, 9, 9, 0, 0 },
		{ CHECKR, 5600000, 0, 0, 0, SUBMIT_RATE_OK },
		/* 192.0.2.1: 4 failures elsewhere (limit 5), 30 s of the minute left */
		{ ALLOWED, 2000000, 0, 0, 0, true },
		{ MERGE_AUTH, 2000000, 4, 0, 30000, 0 },
		{ ALLOWED, 2000000, 0, 0, 0, true },
		{ FAIL, 2000000, 0, 0, 0, true },                       /* the 5th: refused */
		{ ALLOWED, 2000001, 0, 0, 0, false },
		{ ALLOWED, 2029999, 0, 0, 0, false },
		{ ALLOWED, 2030000, 0, 0, 0, true },                    /* the shared window ended */
		{ MERGE_AUTH, 2030000, 0, 0, 30000, 0 },
		{ ALLOWED, 2030000, 0, 0, 0, true },
	};
	struct submit_limits *l = submit_limits_new();
	bool refused;
	size_t i;

	submit_limits_set_params(l, &params);
	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		switch (t[i].op) {
		case MERGE_LOGIN:
			submit_limits_login_merge(l, "alice", t[i].now, t[i].a, t[i].b, t[i].ttl);
			break;
		case MERGE_AUTH:
			submit_limits_auth_merge(l, "192.0.2.1", t[i].now, t[i].a, t[i].ttl);
			break;
		case ADD:
			submit_limits_login_add(l, "alice", t[i].now, t[i].a);
			break;
		case CHECKR:
			CHECK_MSG((int)submit_limits_login_check(l, "alice", t[i].now, t[i].a) ==
			    t[i].want, "row %zu", i);
			break;
		case ALLOWED:
			CHECK_MSG(submit_limits_auth_allowed(l, "192.0.2.1", t[i].now) == (bool)t[i].want,
			    "row %zu", i);
			break;
		case FAIL:
			submit_limits_auth_failed(l, "192.0.2.1", t[i].now, &refused);
			CHECK_MSG(refused == (bool)t[i].want, "row %zu", i);
			break;
		}
	}
	submit_limits_free(l);
}

static void
test_expire(void)
{
	struct submit_limits *l = submit_limits_new();
	char ip[32];
	bool refused;
	int i;

	submit_limits_set_params(l, &params);
	for (i = 0; i < 1000; i++) {            /* many IPs: the table grows */
		snprintf(ip, sizeof(ip), "10.0.%d.%d", i / 256, i % 256);
		submit_limits_auth_failed(l, ip, 0, &refused);
	}
	submit_limits_conn_open(l, "10.0.0.1");
	submit_limits_login_add(l, "alice", 0, 1);
	CHECK_INT(submit_limits_entries(l), 1001);
	submit_limits_expire(l, 59999);
	CHECK_INT(submit_limits_entries(l), 1001);
	submit_limits_expire(l, 60000);
	CHECK_INT(submit_limits_entries(l), 2);  /* the open connection, alice */
	CHECK_INT(submit_limits_conn_count(l, "10.0.0.1"), 1);
	submit_limits_expire(l, 3600000);
	CHECK_INT(submit_limits_entries(l), 1);
	submit_limits_conn_close(l, "10.0.0.1");
	submit_limits_expire(l, 3600000);
	CHECK_INT(submit_limits_entries(l), 0);
	submit_limits_free(l);
}

int
main(void)
{
	test_connections();
	test_auth();
	test_auth_login();
	test_rates();
	test_merge();
	test_expire();
	return check_done();
}
