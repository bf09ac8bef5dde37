/*
 * test_mtasts.c - the pieces of MTA-STS that need no network, from tables:
 * the "_mta-sts" TXT record (mtasts_parse_txt, RFC 8461 3.1), the policy
 * body (mtasts_parse_policy, 3.2), MX host matching (mtasts_mx_match, 4.1)
 * and what a policy makes of one exchanger, DANE first
 * (tlspolicy_apply_sts).  The fetch, the cache and enforcement end to end
 * are tests/integration/test_mta_sts.py.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "mtasts/mtasts.h"
#include "tlspolicy/tlspolicy.h"

static void
test_txt(void)
{
	static const struct {
		const char *txt;
		const char *id;         /* NULL: refused */
	} rows[] = {
		{ "v=STSv1; id=20160831085700Z;", "20160831085700Z" },
		{ "v=STSv1;id=abc", "abc" },
		{ "v=STSv1 ; id=abc ; ", "abc" },
		{ "v=STSv1; id=abc; ext=1", "abc" },
		{ "v=STSv1; ext=1; id=X9", "X9" },
		{ "v=STSv1; id=first; id=second", "first" },
		{ "v=STSv1; id=12345678901234567890123456789012", "12345678901234567890123456789012" },
		{ "v=STSv1; id=123456789012345678901234567890123", NULL },   /* 33 characters */
		{ "v=STSv1; id=", NULL },
		{ "v=STSv1; id=a-b", NULL },
		{ "v=STSv1", NULL },
		{ "v=STSv1;", NULL },
		{ "v=stsv1; id=abc", NULL },            /* %s"v=STSv1": case matters */
		{ "id=abc; v=STSv1", NULL },
		{ "v=STSv2; id=abc", NULL },
		{ "v=STSv1 id=abc", NULL },
		{ "v=STSv1; junk", NULL },
		{ "", NULL },
	};
	char id[MTASTS_ID_MAX + 1];
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		int rc = mtasts_parse_txt(rows[i].txt, id);

		if (rows[i].id == NULL)
			CHECK_MSG(rc != 0, "'%s' accepted", rows[i].txt);
		else {
			CHECK_MSG(rc == 0, "'%s' refused", rows[i].txt);
			if (rc == 0)
				CHECK_STR(id, rows[i].id);
		}
	}
}

/* Which TXT records count at all (the rest are discarded before "exactly one"). */
static void
test_txt_is_sts(void)
{
	CHECK(mtasts_txt_is_sts("v=STSv1; id=abc"));
	CHECK(mtasts_txt_is_sts("v=STSv1;id=abc"));
	CHECK(mtasts_txt_is_sts("v=STSv1 \t; id=abc"));
	CHECK(mtasts_txt_is_sts("v=STSv1;"));                  /* counts, then fails to parse */
	CHECK(!mtasts_txt_is_sts("v=STSv1"));
	CHECK(!mtasts_txt_is_sts("v=STSv1 "));
	CHECK(!mtasts_txt_is_sts("v=STSv1 id=abc"));
	CHECK(!mtasts_txt_is_sts("v=STSv10; id=abc"));
	CHECK(!mtasts_txt_is_sts("v=stsv1; id=abc"));
	CHECK(!mtasts_txt_is_sts("x v=STSv1; id=abc"));
	CHECK(!mtasts_txt_is_sts(""));
}

static void
test_policy(void)
{
	static const struct {
		const char *text;
		int rc;
		enum mtasts_mode mode;
		unsigned max_age;
		const char *mx;         /* patterns joined by ',' */
		const char *err;        /* part of the message on refusal */
	} rows[] = {
		{ "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\n"
		  "mx: backupmx.example.com\nmax_age: 604800\n", 0, MTASTS_MODE_ENFORCE, 604800,
		  "mail.example.com,*.example.net,backupmx.example.com", NULL },
		{ "version: STSv1\r\nmode: testing\r\nmx: MX.Example.COM.\r\nmax_age: 86400\r\n", 0,
		  MTASTS_MODE_TESTING, 86400, "mx.example.com", NULL },
		{ "version: STSv1\nmode: none\nmax_age: 0", 0, MTASTS_MODE_NONE, 0, "", NULL },
		{ "version:STSv1\nmode:enforce\nmx:a.example\nmax_age:31557601\nextension: x\n", 0,
		  MTASTS_MODE_ENFORCE, MTASTS_MAX_AGE, "a.example", NULL },
		{ "  version : STSv1  \n\nmode: enforce\nmx: a.example\nmax_age: 60\n", 0,
		  MTASTS_MODE_ENFORCE, 60, "a.example", NULL },
		{ "version: STSv1\nmode: enforce\nmode: none\nmx: a.example\nmax_age: 60\n", 0,
		  MTASTS_MODE_ENFORCE, 60, "a.example", NULL },
		{ "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 60\n", RELAY_EINVAL, 0, 0,
		  NULL, "STSv1" },
		{ "mode: enforce\nmx: a.example\nmax_age: 60\n", RELAY_EINVAL, 0, 0, NULL, "version" },
		{ "version: STSv1\nmx: a.example\nmax_age: 60\n", RELAY_EINVAL, 0, 0, NULL, "mode" },
		{ "version: STSv1\nmode: enforce\nmx: a.example\n", RELAY_EINVAL, 0, 0, NULL, "max_age" },
		{ "version: STSv1\nmode: enforce\nmax_age: 60\n", RELAY_EINVAL, 0, 0, NULL, "no mx" },
		{ "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 60\n", RELAY_EINVAL, 0, 0,
		  NULL, "mode" },
		{ "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n", RELAY_EINVAL, 0, 0,
		  NULL, "max_age" },
		{ "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n", RELAY_EINVAL,
		  0, 0, NULL, "max_age" },
		{ "version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 60\n", RELAY_EINVAL, 0, 0,
		  NULL, "bad mx" },
		{ "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 60\n", RELAY_EINVAL, 0, 0,
		  NULL, "bad mx" },
		{ "version: STSv1\nmode: enforce\nmx: a example\nmax_age: 60\n", RELAY_EINVAL, 0, 0,
		  NULL, "bad mx" },
		{ "<html>version: STSv1</html>\n", RELAY_EINVAL, 0, 0, NULL, "missing version" },
		{ "<html>\n", RELAY_EINVAL, 0, 0, NULL, "line 1" },
		{ "", RELAY_EINVAL, 0, 0, NULL, "missing" },
	};
	size_t i, k;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		struct mtasts_policy p;
		struct buf err = BUF_INIT, mx = BUF_INIT;
		int rc = mtasts_parse_policy(rows[i].text, strlen(rows[i].text), &p, &err);

		CHECK_MSG(rc == rows[i].rc, "row %zu: rc %d (%s)", i, rc, buf_cstr(&err));
		if (rc == 0 && rows[i].rc == 0) {
			CHECK_INT(p.mode, rows[i].mode);
			CHECK_INT(p.max_age, rows[i].max_age);
			for (k = 0; k < p.nmx; k++)
				buf_printf(&mx, "%s%s", k ? "," : "", p.mx[k]);
			CHECK_STR(buf_cstr(&mx), rows[i].mx);
		} else if (rows[i].err != NULL)
			CHECK_MSG(strstr(buf_cstr(&err), rows[i].err) != NULL, "row %zu: '%s'", i,
			    buf_cstr(&err));
		mtasts_policy_release(&p);
		CHECK(p.mx == NULL && p.nmx == 0);
		buf_free(&err);
		buf_free(&mx);
	}
	/* a NUL inside is refused, not cut short */
	{
		struct mtasts_policy p;
		struct buf err = BUF_INIT;
		static const char t[] = "version: STSv1\nmode: enforce\nmx: a.example\0\nmax_age: 60\n";

		CHECK(mtasts_parse_policy(t, sizeof(t) - 1, &p, &err) == RELAY_EINVAL);
		buf_free(&err);
	}
}

static void
test_match(void)
{
	static const struct {
		const char *host;
		bool want;
	} rows[] = {
		{ "mail.example.com", true },
		{ "MAIL.example.COM.", true },
		{ "mx1.example.net", true },            /* *.example.net */
		{ "example.net", false },
		{ "a.b.example.net", false },           /* one label only */
		{ ".example.net", false },
		{ "xexample.net", false },
		{ "backupmx.example.com", true },
		{ "mail.example.com.evil", false },
		{ "ail.example.com", false },
		{ "", false },
	};
	struct mtasts_policy p;
	struct buf err = BUF_INIT;
	static const char pol[] = "version: STSv1\nmode: enforce\nmx: mail.example.com\n"
	    "mx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n";
	size_t i;

	CHECK(mtasts_parse_policy(pol, strlen(pol), &p, &err) == 0);
	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++)
		CHECK_MSG(mtasts_mx_match(&p, rows[i].host) == rows[i].want, "%s", rows[i].host);
	mtasts_policy_release(&p);
	buf_free(&err);
}

static void
test_apply(void)
{
	static const struct {
		const char *name;
		enum conf_tls tls;
		enum dns_tlsa_state tlsa;   /* DANE before MTA-STS */
		const char *mode;           /* NULL: no policy */
		const char *host;
		enum deliver_policy want;
		bool refuse;
		const char *testing;
		const char *source;
	} rows[] = {
		{ "no policy", CONF_TLS_OPPORTUNISTIC, DNS_TLSA_NONE, NULL, "mx1.example.net",
		  DELIVER_POLICY_CONF, false, NULL, NULL },
		{ "enforce, match", CONF_TLS_OPPORTUNISTIC, DNS_TLSA_NONE, "enforce", "mx1.example.net",
		  DELIVER_POLICY_MTA_STS, false, NULL, "mta-sts" },
		{ "enforce, no match", CONF_TLS_OPPORTUNISTIC, DNS_TLSA_NONE, "enforce",
		  "mx.other.test", DELIVER_POLICY_CONF, true, NULL, "mta-sts" },
		{ "enforce under verify", CONF_TLS_VERIFY, DNS_TLSA_NONE, "enforce", "mx1.example.net",
		  DELIVER_POLICY_MTA_STS, false, NULL, "mta-sts" },
		{ "testing, match", CONF_TLS_OPPORTUNISTIC, DNS_TLSA_NONE, "testing",
		  "mx1.example.net", DELIVER_POLICY_MTA_STS_TESTING, false, NULL, "mta-sts" },
		{ "testing, no match", CONF_TLS_OPPORTUNISTIC, DNS_TLSA_NONE, "testing",
		  "mx.other.test", DELIVER_POLICY_MTA_STS_TESTING, false, "validation-failure",
		  "mta-sts" },
		{ "none", CONF_TLS_OPPORTUNISTIC, DNS_TLSA_NONE, "none", "mx.other.test",
		  DELIVER_POLICY_CONF, false, NULL, NULL },
		{ "route tls none", CONF_TLS_NONE, DNS_TLSA_NONE, "enforce", "mx.other.test",
		  DELIVER_POLICY_CONF, false, NULL, NULL },
		{ "DANE wins", CONF_TLS_OPPORTUNISTIC, DNS_TLSA_SECURE, "enforce", "mx.other.test",
		  DELIVER_POLICY_DANE, false, NULL, "dane" },
		{ "DANE's refusal stands", CONF_TLS_OPPORTUNISTIC, DNS_TLSA_FAILED, "enforce",
		  "mx1.example.net", DELIVER_POLICY_CONF, true, NULL, "dane" },
	};
	static unsigned char digest[32];
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		struct mtasts_policy p;
		struct buf err = BUF_INIT, text = BUF_INIT;
		struct tlsa_rr rr = { .usage = 3, .selector = 1, .mtype = 1, .data = digest,
		    .len = sizeof(digest) };
		struct dns_target tg;
		struct tlspolicy pol;

		memset(&tg, 0, sizeof(tg));
		tg.host = (char *)rows[i].host;
		tg.tlsa_state = rows[i].tlsa;
		if (rows[i].tlsa == DNS_TLSA_SECURE) {
			tg.tlsa = &rr;
			tg.ntlsa = 1;
		}
		if (rows[i].mode != NULL) {
			buf_printf(&text, "version: STSv1\nmode: %s\nmx: *.example.net\nmax_age: 60\n",
			    rows[i].mode);
			CHECK(mtasts_parse_policy(text.data, text.len, &p, &err) == 0);
		}
		tlspolicy_for_target(rows[i].tls, &tg, &pol);
		tlspolicy_apply_sts(rows[i].tls, rows[i].mode != NULL ? &p : NULL, rows[i].host, &pol);
		CHECK_MSG(pol.policy == rows[i].want, "%s: policy %s", rows[i].name,
		    tlspolicy_name(&pol));
		CHECK_MSG(pol.refuse == rows[i].refuse, "%s: refuse %d", rows[i].name, pol.refuse);
		if (pol.refuse)
			CHECK_STR(pol.status, "4.7.5");
		CHECK_MSG((pol.testing == NULL) == (rows[i].testing == NULL) &&
		    (pol.testing == NULL || strcmp(pol.testing, rows[i].testing) == 0),
		    "%s: testing %s", rows[i].name, pol.testing ? pol.testing : "(null)");
		CHECK_MSG((pol.source == NULL) == (rows[i].source == NULL) &&
		    (pol.source == NULL || strcmp(pol.source, rows[i].source) == 0),
		    "%s: source %s", rows[i].name, pol.source ? pol.source : "(null)");
		tlspolicy_clear(&pol);
		if (rows[i].mode != NULL)
			mtasts_policy_release(&p);
		buf_free(&err);
		buf_free(&text);
	}
}

static uint64_t
test_clock(void *arg)
{
	return *(uint64_t *)arg;
}

/*
 * The domain table does not grow for ever: a domain with nothing in force
 * and no check for a day is dropped at the sweep, one whose policy still
 * holds is kept (its cache line would otherwise be lost).
 */
static void
test_sweep(void)
{
	char dir[] = "/tmp/test-mtasts-XXXXXX";
	uint64_t now = 1000ULL * 86400 * 365 * 50;
	struct buf path = BUF_INIT, text = BUF_INIT;
	struct mtasts_held h;
	struct conf *c;
	struct mtasts *m;
	uv_loop_t loop;
	FILE *f;

	CHECK(mkdtemp(dir) != NULL);
	buf_printf(&path, "%s/mta-sts", dir);
	buf_printf(&text, "old.test abc %llu %llu enforce 60 mx.old.test\n"
	    "live.test abc %llu %llu enforce 86400 mx.live.test\n",
	    (unsigned long long)(now - 86400000ULL * 3), (unsigned long long)(now - 86400000ULL * 3 + 60000),
	    (unsigned long long)(now - 1000), (unsigned long long)(now + 86399000ULL));
	CHECK((f = fopen(buf_cstr(&path), "w")) != NULL);
	fputs(buf_cstr(&text), f);
	fclose(f);
	uv_loop_init(&loop);
	c = conf_new_defaults();
	free(c->queue_dir);
	c->queue_dir = xstrdup(dir);
	m = mtasts_new(&loop, c, NULL, NULL);
	mtasts_set_clock(m, test_clock, &now);
	CHECK(mtasts_held(m, "old.test", &h));
	CHECK(mtasts_held(m, "live.test", &h));
	mtasts_sweep(m);
	CHECK_MSG(!mtasts_held(m, "old.test", &h), "an expired, unchecked domain is kept");
	CHECK(mtasts_held(m, "live.test", &h) && h.policy != NULL);
	mtasts_close(m, NULL, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(uv_loop_close(&loop) == 0);
	conf_unref(c);
	unlink(buf_cstr(&path));
	rmdir(dir);
	buf_free(&path);
	buf_free(&text);
}

int
main(void)
{
	test_txt();
	test_txt_is_sts();
	test_policy();
	test_match();
	test_apply();
	test_sweep();
	return check_done();
}
