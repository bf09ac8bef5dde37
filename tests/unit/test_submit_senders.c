/*
 * test_submit_senders.c - the senders map from tables: who owns which
 * address, "@domain" entries, case rules (domain insensitive, local part
 * exact), comments and blank lines, several lines per login, and the
 * "FILE:LINE: message" errors of a bad map.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "submit/submit_int.h"

static const char map_text[] =
    "# who may send as whom\n"
    "\n"
    "alice: alice@example.com, a.smith@example.com\n"
    "alice:\talice@Other.Example   # a second line for alice\n"
    "bob: @example.org\n"
    "   carol :  \"carol c\"@example.net ,carol@[192.0.2.7]\n"
    "dave:\n"
    "alice@relay.test: realm@example.com\n"
    "erin: er#in@example.com\r\n";

static void
test_owns(void)
{
	static const struct {
		const char *login, *addr;
		bool want;
	} t[] = {
		{ "alice", "alice@example.com", true },
		{ "alice", "alice@EXAMPLE.COM", true },         /* domains: any case */
		{ "alice", "Alice@example.com", false },        /* local parts: exact */
		{ "alice", "a.smith@example.com", true },
		{ "alice", "alice@other.example", true },       /* second line */
		{ "alice", "bob@example.org", false },
		{ "alice", "", false },                         /* the null sender */
		{ "bob", "anyone@example.org", true },          /* @domain */
		{ "bob", "x.y@Example.ORG", true },
		{ "bob", "anyone@sub.example.org", false },     /* not subdomains */
		{ "bob", "bob@example.com", false },
		{ "carol", "\"carol c\"@example.net", true },
		{ "carol", "carol@[192.0.2.7]", true },
		{ "carol", "carol@example.net", false },
		{ "dave", "dave@example.com", false },          /* owns nothing */
		{ "Alice", "alice@example.com", false },        /* logins: exact */
		{ "mallory", "alice@example.com", false },
		{ "alice@relay.test", "realm@example.com", true },
		{ "alice", "realm@example.com", false },
		{ "erin", "er#in@example.com", true },          /* '#' inside a word */
	};
	struct submit_senders *m = NULL;
	struct buf err = BUF_INIT;
	size_t i;

	CHECK_INT(submit_senders_parse("map", map_text, strlen(map_text), &m, &err), 0);
	CHECK_STR(buf_cstr(&err), "");
	if (m == NULL)
		return;
	CHECK_INT(submit_senders_count(m), 8);
	for (i = 0; i < RELAY_ARRAY_LEN(t); i++)
		CHECK_MSG(submit_senders_owns(m, t[i].login, t[i].addr) == t[i].want,
		    "row %zu: %s owns %s", i, t[i].login, t[i].addr);
	CHECK(!submit_senders_owns(m, NULL, "alice@example.com"));
	submit_senders_free(m);
	buf_free(&err);
}

static void
test_errors(void)
{
	static const struct {
		const char *text, *err;
	} t[] = {
		{ "alice alice@example.com\n", "map:1: expected \"login: address, ...\"\n" },
		{ "# ok\n: a@b.example\n", "map:2: empty login\n" },
		{ "al ice: a@b.example\n", "map:1: blank in login\n" },
		{ "alice: a@b.example\nbob: not-an-address\n", "map:2: bad address \"not-an-address\"\n" },
		{ "bob: @\n", "map:1: bad address \"@\"\n" },
		{ "bob: @bad..domain\n", "map:1: bad address \"@bad..domain\"\n" },
	};
	struct submit_senders *m;
	struct buf err = BUF_INIT;
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(t); i++) {
		m = NULL;
		buf_reset(&err);
		CHECK_INT(submit_senders_parse("map", t[i].text, strlen(t[i].text), &m, &err), -1);
		CHECK(m == NULL);
		CHECK_STR(buf_cstr(&err), t[i].err);
	}
	buf_free(&err);
}

static void
test_load(void)
{
	char path[] = "/tmp/test_submit_senders.XXXXXX";
	struct submit_senders *m = NULL;
	struct buf err = BUF_INIT;
	int fd = mkstemp(path);

	CHECK(fd >= 0);
	CHECK(write(fd, map_text, strlen(map_text)) == (ssize_t)strlen(map_text));
	close(fd);
	CHECK_INT(submit_senders_load(path, &m, &err), 0);
	CHECK(m != NULL && submit_senders_owns(m, "bob", "x@example.org"));
	submit_senders_free(m);
	unlink(path);

	m = NULL;
	CHECK_INT(submit_senders_load(path, &m, &err), -1);     /* gone */
	CHECK(strstr(buf_cstr(&err), path) != NULL);

	m = NULL;                                               /* no map: nobody */
	CHECK_INT(submit_senders_load(NULL, &m, &err), 0);
	CHECK(m != NULL && !submit_senders_owns(m, "alice", "alice@example.com"));
	submit_senders_free(m);
	buf_free(&err);
}

int
main(void)
{
	test_owns();
	test_errors();
	test_load();
	return check_done();
}
