/*
 * fuzz_conf.c - fuzz target: the configuration loader (conf/conf.c,
 * conf_load()) as relayd and `relayd -n` run it: the input is written to a
 * file, loaded (libconfig's parser, then every key's type, range, duration,
 * size, address, route and cross-check), and the snapshot released.
 *
 * Input: a relayd.conf.  "@include" is left out (return -1: not kept in the
 * corpus): an include names any file, /dev/zero too, and what it reads is
 * the administrator's, not the parser's, business.  Seeds:
 * tests/fuzz/corpus/conf/ (the shipped example, the test harness's
 * configuration, routes, DKIM keys, LDAP senders).
 */
#include "fuzz.h"

#include <stdio.h>
#include <string.h>

#include "common/buf.h"
#include "conf/conf.h"

static char fuzz_conf_path[512];

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	snprintf(fuzz_conf_path, sizeof(fuzz_conf_path), "%s/relayd.conf", fuzz_tmpdir());
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf err = BUF_INIT;
	struct conf *c = NULL;

	if (memmem(data, size, "@include", 8) != NULL)
		return -1;
	fuzz_write_file(fuzz_conf_path, data, size);
	if (conf_load(fuzz_conf_path, &c, &err) == 0) {
		(void)conf_route_find(c, "example.net");
		conf_unref(c);
	}
	buf_free(&err);
	return 0;
}
