/*
 * test_submit_slots.c - the defences against slow clients that are pure:
 * the DATA deadline's credit at min_data_rate (submit_deadline_credit), the
 * unauthenticated share of max_connections, and which unauthenticated
 * session is closed first (the oldest of the busiest address), driven from
 * tables of adds and removals.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/util.h"
#include "submit/submit_int.h"

static void
test_credit(void)
{
	static const struct {
		uint64_t left, nbytes;
		unsigned rate;
		uint64_t cap, want;
	} t[] = {
		{ 1000, 500, 500, 300000, 2000 },       /* 500 octets at 500/s: one second more */
		{ 1000, 1, 500, 300000, 1002 },
		{ 1000, 1, 5000, 300000, 1000 },        /* less than a millisecond earns nothing */
		{ 299000, 5000, 500, 300000, 300000 },  /* never beyond the cap */
		{ 300000, 5000, 500, 300000, 300000 },
		{ 0, 500, 500, 300000, 1000 },
		{ 1000, 1 << 20, 0, 300000, 1000 },     /* rate 0: no credit, one deadline */
		{ 1000, 0, 500, 300000, 1000 },
		{ 10, 262144, 1, 600000, 600000 },      /* big reads at a tiny rate: the cap */
	};
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(t); i++)
		CHECK_MSG(submit_deadline_credit(t[i].left, t[i].nbytes, t[i].rate, t[i].cap) ==
		    t[i].want, "row %zu: got %llu, want %llu", i,
		    (unsigned long long)submit_deadline_credit(t[i].left, t[i].nbytes, t[i].rate,
		    t[i].cap), (unsigned long long)t[i].want);
	CHECK_STR(submit_deadline_phase(SUBMIT_DL_TLS), "tls");
	CHECK_STR(submit_deadline_phase(SUBMIT_DL_COMMAND), "command");
	CHECK_STR(submit_deadline_phase(SUBMIT_DL_AUTH), "auth");
	CHECK_STR(submit_deadline_phase(SUBMIT_DL_AUTH_CHECK), "auth");
	CHECK_STR(submit_deadline_phase(SUBMIT_DL_DATA), "data");
}

static void
test_share(void)
{
	CHECK_INT(submit_slots_unauth_max(1000, 50), 500);
	CHECK_INT(submit_slots_unauth_max(1000, 100), 1000);
	CHECK_INT(submit_slots_unauth_max(3, 50), 1);
	CHECK_INT(submit_slots_unauth_max(1, 1), 1);        /* never 0: nobody could log in */
	CHECK_INT(submit_slots_unauth_max(4000000000u, 100), 4000000000u);
}

/*
 * Rows: add a session (its name, its address), remove one, or ask for the
 * victim (want: its name, "-" for none).  Names are the sessions' ids.
 */
static void
test_victim(void)
{
	enum { ADD, DEL, VICTIM };
	static const struct {
		int op;
		const char *name, *ip;
		size_t count;           /* unauthenticated after the row */
	} t[] = {
		{ VICTIM, "-", NULL, 0 },
		{ ADD, "a1", "192.0.2.1", 1 },
		{ VICTIM, "a1", NULL, 1 },
		{ ADD, "b1", "192.0.2.2", 2 },
		{ VICTIM, "a1", NULL, 2 },              /* one each: the oldest */
		{ ADD, "b2", "192.0.2.2", 3 },
		{ VICTIM, "b1", NULL, 3 },              /* .2 holds more: its oldest, not a1 */
		{ ADD, "b3", "192.0.2.2", 4 },
		{ DEL, "b1", NULL, 3 },                 /* b1 logged in */
		{ VICTIM, "b2", NULL, 3 },
		{ ADD, "c1", "2001:db8::1", 4 },
		{ DEL, "b2", NULL, 3 },
		{ VICTIM, "a1", NULL, 3 },              /* .2 holds one now: a1 is the oldest */
		{ DEL, "a1", NULL, 2 },
		{ VICTIM, "b3", NULL, 2 },
		{ DEL, "b3", NULL, 1 },
		{ DEL, "b3", NULL, 1 },                 /* not listed: nothing */
		{ VICTIM, "c1", NULL, 1 },
		{ DEL, "c1", NULL, 0 },
		{ VICTIM, "-", NULL, 0 },
		{ ADD, "a2", "192.0.2.1", 1 },          /* an address comes back */
		{ VICTIM, "a2", NULL, 1 },
		{ DEL, "a2", NULL, 0 },
	};
	struct submit_session *s[8] = { NULL };
	struct submit_slots *sl = submit_slots_new();
	struct submit_session *v;
	size_t i, k, n = 0;

	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		for (k = 0; k < n; k++)
			if (strcmp(s[k]->id, t[i].name) == 0)
				break;
		switch (t[i].op) {
		case ADD:
			s[n] = xcalloc(1, sizeof(*s[n]));
			snprintf(s[n]->id, sizeof(s[n]->id), "%s", t[i].name);
			snprintf(s[n]->ip, sizeof(s[n]->ip), "%s", t[i].ip);
			submit_slots_add(sl, s[n]);
			n++;
			break;
		case DEL:
			CHECK_MSG(k < n, "row %zu: no session %s", i, t[i].name);
			if (k < n)
				submit_slots_remove(sl, s[k]);
			break;
		case VICTIM:
			v = submit_slots_victim(sl);
			CHECK_MSG(strcmp(v != NULL ? v->id : "-", t[i].name) == 0,
			    "row %zu: victim %s, want %s", i, v != NULL ? v->id : "-", t[i].name);
			break;
		}
		CHECK_MSG(submit_slots_unauth_count(sl) == t[i].count, "row %zu: %zu listed, want %zu",
		    i, submit_slots_unauth_count(sl), t[i].count);
	}
	submit_slots_free(sl);
	for (k = 0; k < n; k++)
		free(s[k]);
}

int
main(void)
{
	test_credit();
	test_share();
	test_victim();
	return check_done();
}
