/*
 * fuzz_audit.c - fuzz target: `relayctl audit` (ctl/relayctl_audit*.c) on
 * a log file: the reader (plain, or gzip/xz/... through the decompressor
 * it spawns when the file starts with that format's magic), the log line
 * tokenizer (ts=, quoting, escapes), the correlation of events into NDR
 * records, the totals and the text or JSON output (to /dev/null).
 *
 * Input: byte 0 chooses the output (even: table, odd: --json), the rest is
 * the log file.  Seeds: tests/fuzz/corpus/audit/ (relayd log lines of
 * accepted/attempt/delivered/failed/ndr events, and a small .gz).
 */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>

#include "conf/conf.h"
#include "ctl/ctl.h"

static char fuzz_log_path[512];

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	snprintf(fuzz_log_path, sizeof(fuzz_log_path), "%s/relayd.log", fuzz_tmpdir());
	/* the report goes nowhere; libFuzzer's own output is on stderr */
	if (freopen("/dev/null", "w", stdout) == NULL)
		abort();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *argv[4];
	int argc = 0;

	if (size < 1)
		return 0;
	fuzz_write_file(fuzz_log_path, data + 1, size - 1);
	argv[argc++] = (char *)"--log";
	argv[argc++] = fuzz_log_path;
	if (data[0] & 1)
		argv[argc++] = (char *)"--json";
	argv[argc] = NULL;
	(void)ctl_audit(NULL, argc, argv);
	return 0;
}
