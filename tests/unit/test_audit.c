/*
 * test_audit.c - `relayctl audit`'s parts: the log line tokenizer (quotes,
 * escapes, '=' inside values, truncated and malformed lines, and the round
 * trip through common/log.c's quoting), RFC 3339 times, the order of rotated
 * log files, the correlation of events into NDR records (and that its state
 * stays bounded), and the filters.  The ctl/ sources are not in relaycore,
 * so they are compiled in here.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/util.h"
#include "ctl/relayctl_audit.h"
#include "tests/unit/check.h"

#include "ctl/relayctl_audit_parse.c"
#include "ctl/relayctl_audit_files.c"
#include "ctl/relayctl_audit_ndr.c"
#include "ctl/relayctl_audit.c"

#define TS "ts=2026-11-22T11:21:31.123Z level=info "

static void
test_parse(void)
{
	static const struct {
		const char *line;
		int rc;
		const char *key, *want;     /* key's value (when rc == 0) */
		size_t wantlen;             /* 0 = strlen(want) */
	} rows[] = {
		{ TS "event=delivered qid=0A1B", 0, "qid", "0A1B", 0 },
		{ TS "event=delivered qid=0A1B", 0, "event", "delivered", 0 },
		{ TS "event=delivered qid=0A1B", 0, "level", "info", 0 },
		{ TS "event=x reply=\"250 2.0.0 Ok queued\" n=1", 0, "reply", "250 2.0.0 Ok queued", 0 },
		{ TS "event=x reply=\"250 2.0.0 Ok queued\" n=1", 0, "n", "1", 0 },
		{ TS "event=x v=\"say \\\"hi\\\"\"", 0, "v", "say \"hi\"", 0 },
		{ TS "event=x v=\"back\\\\slash\"", 0, "v", "back\\slash", 0 },
		{ TS "event=x v=\"a\\r\\nb\\tc\"", 0, "v", "a\r\nb\tc", 0 },
		{ TS "event=x v=\"bell\\x07\"", 0, "v", "bell\a", 0 },
		{ TS "event=x v=\"nul\\x00here\"", 0, "v", "nul\0here", 8 },
		{ TS "event=x v=\"k=v a=b\" w=2", 0, "v", "k=v a=b", 0 },
		{ TS "event=x v=\"k=v a=b\" w=2", 0, "w", "2", 0 },
		{ TS "event=x v=a=b", 0, "v", "a=b", 0 },          /* tolerated: unambiguous */
		{ TS "event=x v=\"\"", 0, "v", "", 0 },
		{ TS "event=x   v=1   ", 0, "v", "1", 0 },          /* extra spaces */
		{ TS "event=x v=1 v=2", 0, "v", "1", 0 },           /* the first wins */
		{ TS "event=x v=\"\\\\\"", 0, "v", "\\", 0 },
		{ TS "event=x unknown_key.a-b=7", 0, "unknown_key.a-b", "7", 0 },
		{ "ts=2026-11-22T11:21:31Z event=x", 0, "event", "x", 0 },
		/* truncated lines */
		{ TS "event=x reply=\"550 user unkn", RELAY_EINVAL, NULL, NULL, 0 },
		{ TS "event=x reply=\"550\\", RELAY_EINVAL, NULL, NULL, 0 },
		{ TS "event=x reply=\"550\\x0", RELAY_EINVAL, NULL, NULL, 0 },
		{ TS "event=x reply=", RELAY_EINVAL, NULL, NULL, 0 },
		{ TS "event=x rep", RELAY_EINVAL, NULL, NULL, 0 },
		{ "ts=2026-11-22T11:2", RELAY_EINVAL, NULL, NULL, 0 },
		/* malformed */
		{ "", RELAY_EINVAL, NULL, NULL, 0 },
		{ "relayd: starting", RELAY_EINVAL, NULL, NULL, 0 },
		{ "level=info ts=2026-11-22T11:21:31.123Z event=x", RELAY_EINVAL, NULL, NULL, 0 },
		{ "ts=yesterday level=info event=x", RELAY_EINVAL, NULL, NULL, 0 },
		{ TS "qid=1", RELAY_EINVAL, NULL, NULL, 0 },          /* no event */
		{ TS "event=", RELAY_EINVAL, NULL, NULL, 0 },
		{ TS "event=x =v", RELAY_EINVAL, NULL, NULL, 0 },
		{ TS "event=x k\"=v", RELAY_EINVAL, NULL, NULL, 0 },
		{ TS "event=x v=\"a\"b", RELAY_EINVAL, NULL, NULL, 0 },
		{ TS "event=x v=\"a\\qb\"", RELAY_EINVAL, NULL, NULL, 0 },
		{ TS "event=x v=\"a\\xzzb\"", RELAY_EINVAL, NULL, NULL, 0 },
		{ TS "event=x v=\"a\tb\"", RELAY_EINVAL, NULL, NULL, 0 },
		{ TS "event=x v=a\tb", RELAY_EINVAL, NULL, NULL, 0 },
	};
	struct ctl_audit_line l;
	size_t i;

	ctl_audit_line_init(&l);
	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		int rc = ctl_audit_line_parse(&l, rows[i].line, strlen(rows[i].line));
		size_t k, wl = rows[i].wantlen ? rows[i].wantlen : (rows[i].want ? strlen(rows[i].want) : 0);
		const struct ctl_audit_field *f = NULL;

		CHECK_MSG(rc == rows[i].rc, "row %zu: rc %d for [%s]", i, rc, rows[i].line);
		if (rc != 0 || rows[i].rc != 0)
			continue;
		for (k = 0; k < l.nf && f == NULL; k++)
			if (strcmp(l.f[k].key, rows[i].key) == 0)
				f = &l.f[k];
		CHECK_MSG(f != NULL && f->vallen == wl && memcmp(f->val, rows[i].want, wl) == 0,
		    "row %zu: %s=[%s] len %zu, want [%s]", i, rows[i].key, f ? f->val : "(none)",
		    f ? f->vallen : 0, rows[i].want);
		CHECK_STR(ctl_audit_line_get(&l, rows[i].key), rows[i].want);
	}
	/* The parsed time and the line's ts as logged. */
	CHECK_INT(ctl_audit_line_parse(&l, TS "event=x", strlen(TS "event=x")), 0);
	CHECK(l.ts_ms == 1795346491123ULL);
	CHECK_STR(l.ts, "2026-11-22T11:21:31.123Z");
	CHECK_STR(l.event, "x");
	ctl_audit_line_free(&l);
}

/* What common/log.c writes, this reads back byte for byte. */
static void
test_roundtrip(void)
{
	static const char *const values[] = {
		"plain", "", "two words", "say \"hi\"", "back\\slash", "a=b", "=", "\"", "\\",
		"line\r\nnext", "tab\there", "bell\a", "550 5.1.1 <bob@x>: user unknown",
		"ends with backslash\\", "\\x41 is not an escape here", "caf\xc3\xa9",
	};
	struct ctl_audit_line l;
	struct buf line = BUF_INIT, all = BUF_INIT;
	size_t i;
	int c;

	for (c = 1; c < 256; c++)
		buf_putc(&all, (char)c);
	ctl_audit_line_init(&l);
	for (i = 0; i <= RELAY_ARRAY_LEN(values); i++) {
		const char *v = i < RELAY_ARRAY_LEN(values) ? values[i] : all.data;
		size_t vl = strlen(v);

		buf_reset(&line);
		buf_puts(&line, TS "event=roundtrip v=");
		log_quote(&line, v, vl);
		buf_puts(&line, " after=1");
		CHECK_MSG(ctl_audit_line_parse(&l, line.data, line.len) == 0, "value %zu: %s", i, line.data);
		CHECK_MSG(l.nf == 5 && strcmp(l.f[3].key, "v") == 0 && l.f[3].vallen == vl &&
		    memcmp(l.f[3].val, v, vl) == 0, "value %zu: %s", i, line.data);
		CHECK_STR(ctl_audit_line_get(&l, "after"), "1");
	}
	/* Lines of any length. */
	buf_reset(&line);
	buf_puts(&line, TS "event=long reply=\"");
	for (i = 0; i < 200000; i++)
		buf_putc(&line, (char)('a' + i % 26));
	buf_puts(&line, "\" host=mx");
	CHECK_INT(ctl_audit_line_parse(&l, line.data, line.len), 0);
	CHECK(ctl_audit_line_get(&l, "reply") != NULL && strlen(ctl_audit_line_get(&l, "reply")) == 200000);
	CHECK_STR(ctl_audit_line_get(&l, "host"), "mx");
	ctl_audit_line_free(&l);
	buf_free(&line);
	buf_free(&all);
}

static void
test_time(void)
{
	static const struct { const char *in; int rc; uint64_t want; } rows[] = {
		{ "1970-01-01T00:00:00Z", 0, 0 },
		{ "1970-01-01T00:00:00.001Z", 0, 1 },
		{ "2026-11-22T11:21:31.123Z", 0, 1795346491123ULL },
		{ "2026-11-22T11:21:31Z", 0, 1795346491000ULL },
		{ "2026-11-22t11:21:31.1z", 0, 1795346491100ULL },
		{ "2026-11-22T11:21:31.123456Z", 0, 1795346491123ULL },
		{ "2026-11-22T12:21:31.123+01:00", 0, 1795346491123ULL },
		{ "2026-11-22T10:21:31-01:00", 0, 1795346491000ULL },
		{ "2000-03-01T00:00:00Z", 0, 951868800000ULL },
		{ "2024-02-29T23:59:59Z", 0, 1709251199000ULL },
		{ "2026-02-29T00:00:00Z", RELAY_EINVAL, 0 },
		{ "2026-13-01T00:00:00Z", RELAY_EINVAL, 0 },
		{ "2026-11-22T24:00:00Z", RELAY_EINVAL, 0 },
		{ "2026-11-22T11:21:31", RELAY_EINVAL, 0 },
		{ "2026-11-22T11:21:31.Z", RELAY_EINVAL, 0 },
		{ "2026-11-22T11:21:31Zjunk", RELAY_EINVAL, 0 },
		{ "2026-11-22 11:21:31Z", RELAY_EINVAL, 0 },
		{ "26-11-22T11:21:31Z", RELAY_EINVAL, 0 },
		{ "", RELAY_EINVAL, 0 },
	};
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		uint64_t ms = 42;
		int rc = util_rfc3339_parse(rows[i].in, &ms);

		CHECK_MSG(rc == rows[i].rc, "%s: rc %d", rows[i].in, rc);
		if (rc == 0 && rows[i].rc == 0)
			CHECK_MSG(ms == rows[i].want, "%s: %llu, want %llu", rows[i].in,
			    (unsigned long long)ms, (unsigned long long)rows[i].want);
	}
}

/* Rotated copies, oldest first: rows are in the wanted order. */
static void
test_files_order(void)
{
	static const char *const ordered[] = {
		"/var/log/relayd.log-20261120",
		"/var/log/relayd.log-20261121.gz",
		"/var/log/relayd.log.2026-11-22",
		"/var/log/relayd.log.10.gz",
		"/var/log/relayd.log.2.gz",
		"/var/log/relayd.log.1",
		"/var/log/relayd.log",
	};
	size_t i, j;

	for (i = 0; i < RELAY_ARRAY_LEN(ordered); i++)
		for (j = 0; j < RELAY_ARRAY_LEN(ordered); j++) {
			int c = ctl_audit_files_cmp(ordered[i], ordered[j]);
			CHECK_MSG(i < j ? c < 0 : i > j ? c > 0 : c == 0, "%s vs %s: %d", ordered[i],
			    ordered[j], c);
		}
}

static void
test_files_default(void)
{
	static const char *const create[] = {
		"relayd.log", "relayd.log.1", "relayd.log.2.gz", "relayd.log.10.gz",
		"relayd.log-20261121", "relayd.log.lock", "relayd.logother", "relayd.log.gz",
		"other.log", "other.log.1",
	};
	static const char *const want[] = {
		"relayd.log-20261121", "relayd.log.10.gz", "relayd.log.2.gz", "relayd.log.1", "relayd.log",
	};
	char dir[] = "/tmp/test-audit-XXXXXX";
	struct ctl_audit_files fl;
	struct buf path = BUF_INIT, err = BUF_INIT;
	size_t i;

	CHECK(mkdtemp(dir) != NULL);
	for (i = 0; i < RELAY_ARRAY_LEN(create); i++) {
		buf_reset(&path);
		buf_printf(&path, "%s/%s", dir, create[i]);
		close(open(path.data, O_WRONLY | O_CREAT, 0600));
	}
	buf_reset(&path);
	buf_printf(&path, "%s/relayd.log.3", dir);        /* a directory: not a log */
	mkdir(path.data, 0700);

	memset(&fl, 0, sizeof(fl));
	buf_reset(&path);
	buf_printf(&path, "%s/relayd.log", dir);
	CHECK_INT(ctl_audit_files_default(&fl, path.data, &err), 0);
	CHECK_INT(fl.n, RELAY_ARRAY_LEN(want));
	for (i = 0; i < fl.n && i < RELAY_ARRAY_LEN(want); i++) {
		buf_reset(&path);
		buf_printf(&path, "%s/%s", dir, want[i]);
		CHECK_STR(fl.paths[i], path.data);
	}
	ctl_audit_files_free(&fl);

	/* A glob given to --log: the same order. */
	buf_reset(&path);
	buf_printf(&path, "%s/relayd.log.*", dir);
	CHECK_INT(ctl_audit_files_add(&fl, path.data, &err), 0);
	CHECK(fl.n >= 4);
	for (i = 1; i < fl.n; i++)
		CHECK_MSG(ctl_audit_files_cmp(fl.paths[i - 1], fl.paths[i]) < 0, "%s before %s",
		    fl.paths[i - 1], fl.paths[i]);
	ctl_audit_files_free(&fl);
	buf_reset(&path);
	buf_printf(&path, "%s/nothing*", dir);
	CHECK_INT(ctl_audit_files_add(&fl, path.data, &err), RELAY_ENOENT);
	CHECK(strstr(buf_cstr(&err), "nothing*") != NULL);
	ctl_audit_files_free(&fl);

	for (i = 0; i < RELAY_ARRAY_LEN(create); i++) {
		buf_reset(&path);
		buf_printf(&path, "%s/%s", dir, create[i]);
		unlink(path.data);
	}
	buf_reset(&path);
	buf_printf(&path, "%s/relayd.log.3", dir);
	rmdir(path.data);
	rmdir(dir);
	buf_free(&path);
	buf_free(&err);
}

/* The records a correlation emitted, flattened for comparison. */
struct got {
	char rec[8][512];
	int n;
};

static void
got_emit(const struct ctl_audit_ndr *r, void *arg)
{
	struct got *g = arg;

	if (g->n >= 8)
		return;
	snprintf(g->rec[g->n++], sizeof(g->rec[0]),
	    "qid=%s ndr=%s from=%s rcpt=%s status=%s reason=%s host=%s ip=%s reply=%s attempts=%ld down=%s",
	    r->qid ? r->qid : "-", r->ndr_qid ? r->ndr_qid : "-", r->sender ? r->sender : "-",
	    r->recipient ? r->recipient : "-", r->status ? r->status : "-", r->reason ? r->reason : "-",
	    r->host ? r->host : "-", r->ip ? r->ip : "-", r->reply ? r->reply : "-", r->attempts,
	    r->down_since ? r->down_since : "-");
}

#define T(s) "ts=2026-11-22T10:00:" s ".000Z level=info "

static void
test_corr(void)
{
	static const struct {
		const char *name;
		const char *lines[8];
		const char *want[3];
		size_t tracked;             /* state left after the lines */
	} rows[] = {
		{ "host and reply come from the bounce when the ndr lacks them",
		  { T("00") "event=accepted qid=Q1 from=alice@relay.test nrcpt=1 size=10 user=alice client=127.0.0.1",
		    T("01") "event=bounced qid=Q1 rcpt=bob@example.net host=mx1.example.net ip=192.0.2.1 status=5.1.1 reply=\"550 5.1.1 no such user\"",
		    T("02") "event=ndr qid=Q1 ndr_qid=N1 to=alice@relay.test reason=failed rcpt=bob@example.net status=5.1.1 attempts=1" },
		  { "qid=Q1 ndr=N1 from=alice@relay.test rcpt=bob@example.net status=5.1.1 reason=failed host=mx1.example.net ip=192.0.2.1 reply=550 5.1.1 no such user attempts=1 down=-" },
		  0 },
		{ "the ndr line's own host and reply win",
		  { T("01") "event=bounced qid=Q1 rcpt=bob@example.net host=old ip=192.0.2.1 status=5.1.1 reply=\"550 old\"",
		    T("02") "event=ndr qid=Q1 ndr_qid=N1 to=a@b reason=failed rcpt=bob@example.net status=5.1.2 attempts=2 host=new reply=\"550 new\"" },
		  { "qid=Q1 ndr=N1 from=a@b rcpt=bob@example.net status=5.1.2 reason=failed host=new ip=192.0.2.1 reply=550 new attempts=2 down=-" },
		  0 },
		{ "sender from the accepted line when the ndr has no to=",
		  { T("00") "event=accepted qid=Q2 from=carol@relay.test nrcpt=2",
		    T("03") "event=ndr qid=Q2 ndr_qid=N2 reason=failed rcpt=x@y.org status=5.0.0" },
		  { "qid=Q2 ndr=N2 from=carol@relay.test rcpt=x@y.org status=5.0.0 reason=failed host=- ip=- reply=- attempts=-1 down=-" },
		  1 },
		{ "the last attempt wins; expiry keeps its host; attempts are counted",
		  { T("00") "event=deferred qid=Q3 rcpt=d@slow.example host=mx1.slow.example ip=192.0.2.10 status=4.4.1 reply=\"421 busy\"",
		    T("10") "event=deferred qid=Q3 rcpt=d@slow.example host=mx2.slow.example ip=192.0.2.11 status=4.2.0 reply=\"451 try later\"",
		    T("20") "event=expired qid=Q3 rcpt=d@slow.example status=4.4.7",
		    T("21") "event=ndr qid=Q3 ndr_qid=N3 to=s@relay.test reason=expired rcpt=d@slow.example down_since=2026-11-20T00:00:00.000Z" },
		  { "qid=Q3 ndr=N3 from=s@relay.test rcpt=d@slow.example status=4.4.7 reason=expired host=mx2.slow.example ip=192.0.2.11 reply=451 try later attempts=2 down=2026-11-20T00:00:00.000Z" },
		  0 },
		{ "a later attempt without a host does not keep the old host",
		  { T("00") "event=deferred qid=Q4 rcpt=e@x.org host=mx.x.org ip=192.0.2.1 status=4.4.1 reply=\"421 x\"",
		    T("01") "event=deferred qid=Q4 rcpt=e@x.org status=4.4.3 reply=\"DNS: SERVFAIL\"",
		    T("02") "event=ndr qid=Q4 ndr_qid=N4 to=s@r reason=delayed rcpt=e@x.org" },
		  { "qid=Q4 ndr=N4 from=s@r rcpt=e@x.org status=4.4.3 reason=delayed host=- ip=- reply=DNS: SERVFAIL attempts=2 down=-" },
		  1 },
		{ "a delay warning keeps the state; the failure still finds the host; then all is forgotten",
		  { T("00") "event=accepted qid=Q5 from=f@relay.test nrcpt=2",
		    T("01") "event=deferred qid=Q5 rcpt=G@Example.ORG host=mx.example.org status=4.2.2 reply=\"452 mailbox full\"",
		    T("02") "event=ndr qid=Q5 ndr_qid=N5a reason=delayed rcpt=g@example.org",
		    T("03") "event=delivered qid=Q5 rcpt=h@example.org host=mx.example.org",
		    T("04") "event=bounced qid=Q5 rcpt=g@example.org host=mx.example.org status=5.2.2 reply=\"552 mailbox full\"",
		    T("05") "event=ndr qid=Q5 ndr_qid=N5b reason=failed rcpt=g@example.org" },
		  { "qid=Q5 ndr=N5a from=f@relay.test rcpt=g@example.org status=4.2.2 reason=delayed host=mx.example.org ip=- reply=452 mailbox full attempts=1 down=-",
		    "qid=Q5 ndr=N5b from=f@relay.test rcpt=g@example.org status=5.2.2 reason=failed host=mx.example.org ip=- reply=552 mailbox full attempts=2 down=-" },
		  0 },
		{ "other messages' attempts and unknown events do not leak in",
		  { T("00") "event=bounced qid=QA rcpt=i@x.org host=mxa status=5.1.1 reply=\"550 a\"",
		    T("01") "event=session_start client=127.0.0.1",
		    T("02") "event=bounced qid=QB rcpt=j@x.org host=mxb status=5.7.1 reply=\"550 b\" future_key=1",
		    T("03") "event=ndr qid=QB ndr_qid=NB to=k@r reason=failed rcpt=j@x.org" },
		  { "qid=QB ndr=NB from=k@r rcpt=j@x.org status=5.7.1 reason=failed host=mxb ip=- reply=550 b attempts=1 down=-" },
		  1 },
	};
	struct ctl_audit_line l;
	size_t i, k;

	ctl_audit_line_init(&l);
	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		struct got g;
		struct ctl_audit_corr *c;
		int nwant = 0;

		memset(&g, 0, sizeof(g));
		c = ctl_audit_corr_new(got_emit, &g);
		for (k = 0; k < RELAY_ARRAY_LEN(rows[i].lines) && rows[i].lines[k] != NULL; k++) {
			CHECK_MSG(ctl_audit_line_parse(&l, rows[i].lines[k], strlen(rows[i].lines[k])) == 0,
			    "%s: line %zu", rows[i].name, k);
			ctl_audit_corr_feed(c, &l);
		}
		for (k = 0; k < RELAY_ARRAY_LEN(rows[i].want) && rows[i].want[k] != NULL; k++) {
			nwant++;
			if ((int)k < g.n)
				CHECK_MSG(strcmp(g.rec[k], rows[i].want[k]) == 0, "%s:\n  got  %s\n  want %s",
				    rows[i].name, g.rec[k], rows[i].want[k]);
		}
		CHECK_MSG(g.n == nwant, "%s: %d records, want %d", rows[i].name, g.n, nwant);
		CHECK_MSG(ctl_audit_corr_tracked(c) == rows[i].tracked, "%s: %zu tracked, want %zu",
		    rows[i].name, ctl_audit_corr_tracked(c), rows[i].tracked);
		ctl_audit_corr_free(c);
	}
	ctl_audit_line_free(&l);
}

/* State a log never finishes is swept once the log's time is past the horizon. */
static void
test_corr_bounded(void)
{
	static const char acc[] = "ts=2026-11-01T00:00:00.000Z level=info event=accepted qid=OLD from=a@b nrcpt=1";
	static const char att[] = "ts=2026-11-01T00:00:01.000Z level=info event=deferred qid=OLD rcpt=c@d host=h";
	static const char other[] = "ts=2026-11-09T00:00:00.000Z level=info event=stats sessions=0";
	static const char ndr[] = "ts=2026-11-09T00:00:01.000Z level=info event=ndr qid=OLD ndr_qid=N reason=failed rcpt=c@d";
	struct ctl_audit_line l;
	struct ctl_audit_corr *c;
	struct got g;
	size_t i;

	memset(&g, 0, sizeof(g));
	c = ctl_audit_corr_new(got_emit, &g);
	ctl_audit_line_init(&l);
	CHECK_INT(ctl_audit_line_parse(&l, acc, strlen(acc)), 0);
	ctl_audit_corr_feed(c, &l);
	CHECK_INT(ctl_audit_line_parse(&l, att, strlen(att)), 0);
	ctl_audit_corr_feed(c, &l);
	CHECK_INT(ctl_audit_corr_tracked(c), 2);
	CHECK_INT(ctl_audit_line_parse(&l, other, strlen(other)), 0);
	for (i = 0; i < CORR_SWEEP_LINES; i++)
		ctl_audit_corr_feed(c, &l);
	CHECK_INT(ctl_audit_corr_tracked(c), 0);
	CHECK_INT(ctl_audit_line_parse(&l, ndr, strlen(ndr)), 0);
	ctl_audit_corr_feed(c, &l);
	CHECK_INT(g.n, 1);
	CHECK_STR(g.rec[0], "qid=OLD ndr=N from=- rcpt=c@d status=- reason=failed host=- ip=- reply=- attempts=-1 down=-");

	/* Explicit expiry spares what was touched since. */
	CHECK_INT(ctl_audit_line_parse(&l, acc, strlen(acc)), 0);
	ctl_audit_corr_feed(c, &l);
	CHECK_INT(ctl_audit_corr_tracked(c), 1);
	ctl_audit_corr_expire(c, l.ts_ms);
	CHECK_INT(ctl_audit_corr_tracked(c), 1);
	ctl_audit_corr_expire(c, l.ts_ms + 1);
	CHECK_INT(ctl_audit_corr_tracked(c), 0);
	ctl_audit_line_free(&l);
	ctl_audit_corr_free(c);
}

static void
test_match(void)
{
	static const struct {
		const char *rcpt;
		uint64_t ts, since;
		const char *domain, *addr;
		int want;
	} rows[] = {
		{ "bob@example.net", 1000, 0, NULL, NULL, 1 },
		{ "bob@example.net", 1000, 1000, NULL, NULL, 1 },
		{ "bob@example.net", 999, 1000, NULL, NULL, 0 },
		{ "bob@Example.NET", 1000, 0, "example.net", NULL, 1 },
		{ "bob@example.net", 1000, 0, "EXAMPLE.net", NULL, 1 },
		{ "bob@example.net", 1000, 0, "@example.net", NULL, 1 },
		{ "bob@sub.example.net", 1000, 0, "example.net", NULL, 0 },
		{ "bob@example.net", 1000, 0, "example.ne", NULL, 0 },
		{ "<bob@example.net>", 1000, 0, "example.net", NULL, 1 },
		{ "bob@example.net", 1000, 0, NULL, "BOB@example.net", 1 },
		{ "bob@example.net", 1000, 0, NULL, "<bob@example.net>", 1 },
		{ "bob@example.net", 1000, 0, NULL, "bo@example.net", 0 },
		{ "bob@example.net", 1000, 0, NULL, "bob@example.net.", 0 },
		{ "bob@example.net", 1000, 0, "example.net", "bob@example.net", 1 },
		{ "bob@example.net", 1000, 0, "example.org", "bob@example.net", 0 },
		{ "postmaster", 1000, 0, "example.net", NULL, 0 },
	};
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		struct ctl_audit_ndr n;

		memset(&n, 0, sizeof(n));
		n.recipient = rows[i].rcpt;
		n.ts_ms = rows[i].ts;
		CHECK_MSG(ctl_audit_match(&n, rows[i].since, rows[i].domain, rows[i].addr) == rows[i].want,
		    "row %zu: %s", i, rows[i].rcpt);
	}
}

int
main(void)
{
	test_parse();
	test_roundtrip();
	test_time();
	test_files_order();
	test_files_default();
	test_corr();
	test_corr_bounded();
	test_match();
	return check_done();
}
