/*
 * test_directory.c - the directory module's pure parts from tables: the
 * search filter with the login escaped per RFC 4515 (no filter injection),
 * attribute values turned into owned addresses (Active Directory's "smtp:"
 * prefix stripped, non-SMTP proxyAddresses ignored), and who owns what.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/util.h"
#include "directory/directory.h"

static void
test_filter(void)
{
	static const struct {
		const char *tmpl, *login, *want;
	} t[] = {
		{ "(uid=%u)", "alice", "(uid=alice)" },
		{ "(uid=%u)", "*", "(uid=\\2a)" },              /* "*" matches nobody */
		{ "(uid=%u)", "a)(uid=*", "(uid=a\\29\\28uid=\\2a)" },
		{ "(uid=%u)", "back\\slash", "(uid=back\\5cslash)" },
		{ "(uid=%u)", "*()\\", "(uid=\\2a\\28\\29\\5c)" },
		{ "(&(uid=%u)(dc=%d))", "bob@example.org", "(&(uid=bob@example.org)(dc=example.org))" },
		{ "(&(uid=%u)(dc=%d))", "bob", "(&(uid=bob)(dc=))" },
		{ "(&(uid=%u)(dc=%d))", "x@y@e*x", "(&(uid=x@y@e\\2ax)(dc=e\\2ax))" },
		{ "(sAMAccountName=%u)", "Ann", "(sAMAccountName=Ann)" },
		{ "(cn=100%%)", "x", "(cn=100%)" },
		{ "(uid=%u)", "\xc3\xa9l\xc3\xa8ve", "(uid=\xc3\xa9l\xc3\xa8ve)" },  /* UTF-8 as is */
	};
	struct buf out = BUF_INIT;
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		CHECK_INT(directory_filter(&out, t[i].tmpl, t[i].login), 0);
		CHECK_STR(buf_cstr(&out), t[i].want);
	}
	CHECK_INT(directory_filter(&out, "(uid=%x)", "a"), -1);
	CHECK_INT(directory_filter(&out, "(uid=%", "a"), -1);
	buf_reset(&out);
	directory_escape(&out, "plain.login-1");
	CHECK_STR(buf_cstr(&out), "plain.login-1");
	buf_free(&out);
}

static void
test_value(void)
{
	static const struct {
		const char *in, *want;          /* want NULL: not an address */
	} t[] = {
		{ "alice@example.com", "alice@example.com" },
		{ "  alice@example.com\t", "alice@example.com" },
		{ "@example.org", "@example.org" },
		{ "smtp:alias@example.com", "alias@example.com" },      /* AD secondary */
		{ "SMTP:primary@example.com", "primary@example.com" },  /* AD primary */
		{ "sMtP:x@example.com", "x@example.com" },
		{ "X500:/o=Org/ou=Exchange/cn=alice", NULL },
		{ "SIP:alice@example.com", NULL },
		{ "no-at-sign", NULL },
		{ "alice@", NULL },
		{ "", NULL },
		{ "smtp:", NULL },
		{ "a b@example.com", NULL },
	};
	struct buf out = BUF_INIT;
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		int rc = directory_value(&out, t[i].in, strlen(t[i].in));

		if (t[i].want == NULL) {
			CHECK_MSG(rc == -1, "row %zu: %s", i, t[i].in);
		} else {
			CHECK_MSG(rc == 0, "row %zu: %s", i, t[i].in);
			CHECK_STR(buf_cstr(&out), t[i].want);
		}
	}
	buf_free(&out);
}

static void
test_owns(void)
{
	static char a0[] = "alice@example.com", a1[] = "@example.org";
	char *addrs[] = { a0, a1 };
	struct directory_owned o = { 1, addrs, 2 }, none = { 1, NULL, 0 };
	static const struct {
		const char *addr;
		bool want;
	} t[] = {
		{ "alice@example.com", true },
		{ "alice@EXAMPLE.com", true },          /* domains: any case */
		{ "Alice@example.com", false },         /* local parts: exact */
		{ "bob@example.com", false },
		{ "anyone@example.org", true },         /* "@domain" */
		{ "anyone@Example.Org", true },
		{ "x@sub.example.org", false },         /* not subdomains */
		{ "", false },
		{ "noat", false },
	};
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(t); i++)
		CHECK_MSG(directory_owns(&o, t[i].addr) == t[i].want, "row %zu: %s", i, t[i].addr);
	CHECK(!directory_owns(&none, "alice@example.com"));
	CHECK(!directory_owns(NULL, "alice@example.com"));
}

int
main(void)
{
	test_filter();
	test_value();
	test_owns();
	return check_done();
}
